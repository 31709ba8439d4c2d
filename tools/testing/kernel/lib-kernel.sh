# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# Shared by tools/testing/kunit/run and tools/testing/kernel/build-debug-kernel:
# find (and on a fresh machine, unpack) the linux-source-6.1 tree the project
# builds its test kernels from.  The tree lives in the user's cache, never in the
# repository, because it is 1.4 GB and must survive `make clean`.

QIMG_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/qimg
QIMG_KSRC_TARBALL=${QIMG_KSRC_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
QIMG_KSRC=$QIMG_CACHE/linux-source-6.1
QIMG_KSRC_STAMP=$QIMG_CACHE/.unpacked-6.1

qimg_klog() {
	echo "# $*" >&2
}

# Print the path of a complete, unpacked 6.1 tree on stdout; unpack it first
# if needed.  The stamp is only written after tar succeeded, and the tree is
# unpacked into a temporary directory that is renamed into place, so an
# interrupted run never leaves a half tree that looks finished.  A lock
# serialises concurrent callers; the one that waits finds the stamp.
qimg_kernel_tree() {
	local tmp

	if [ -e "$QIMG_KSRC_STAMP" ] && [ -f "$QIMG_KSRC/Makefile" ]; then
		echo "$QIMG_KSRC"
		return 0
	fi
	mkdir -p "$QIMG_CACHE" || return 1
	(
		flock -w 1800 9 || {
			qimg_klog "timed out waiting for $QIMG_CACHE/.unpack.lock"
			exit 1
		}
		if [ -e "$QIMG_KSRC_STAMP" ] && [ -f "$QIMG_KSRC/Makefile" ]; then
			exit 0
		fi
		if [ ! -r "$QIMG_KSRC_TARBALL" ]; then
			qimg_klog "$QIMG_KSRC_TARBALL missing: apt-get install linux-source-6.1"
			exit 1
		fi
		qimg_klog "unpacking $QIMG_KSRC_TARBALL into $QIMG_CACHE (once)"
		tmp=$(mktemp -d "$QIMG_CACHE/.unpack.XXXXXX") || exit 1
		if ! tar -xJf "$QIMG_KSRC_TARBALL" -C "$tmp" ||
		   [ ! -f "$tmp/linux-source-6.1/Makefile" ]; then
			qimg_klog "unpacking $QIMG_KSRC_TARBALL failed"
			rm -rf "$tmp"
			exit 1
		fi
		rm -rf "$QIMG_KSRC"
		mv "$tmp/linux-source-6.1" "$QIMG_KSRC" && rmdir "$tmp" &&
			touch "$QIMG_KSRC_STAMP"
	) 9>"$QIMG_CACHE/.unpack.lock" || return 1
	echo "$QIMG_KSRC"
}

# "6.1.192": the exact version of the tree, part of every cache key.
qimg_kernel_version() {
	make -s -C "$1" kernelversion 2>/dev/null
}
