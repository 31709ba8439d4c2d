#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the qimg test guest (busybox sh, runs as PID 1 from the initramfs
# that qimg-vm builds).  It turns the host's root, shared read-only over 9p,
# into a root we can chroot into, runs the command qimg-vm put into the
# per-run initramfs segment, reports its exit status and the kernel log on
# the console with marker lines the host parses, then powers off.
#
# Per-run settings come from /qimg-run.conf (shell variables):
#   QV_MODE     run | shell
#   QV_SHARE    host directory exported read-write with mount_tag "share",
#               mounted at the same path inside the guest
#   QV_TMPFS    directories that get a fresh tmpfs (/tmp /run /mnt /var/tmp)
# /qimg-keep.list: host directories under those (one per line) that the run
# needs, e.g. a repository cloned under /tmp: bound back at the same path.
#   QV_MODULE   path (host view) of a .ko to insmod, or empty
#   QV_MODULE_REQUIRED  1: failing to load it is fatal
#   QV_SCRATCH  1: /dev/vda is the scratch disk, mkfs.ext4 + mount it;
#               2: /dev/vda is a reused scratch disk (e.g. after a power
#               cut), e2fsck -fy + mount it; the command gets e2fsck's
#               status in QIMG_SCRATCH_FSCK, its output in
#               /run/qimg-vm/scratch-fsck.log
#   QV_CMD      path of the command script inside this initramfs

export PATH=/bin:/sbin
R=/newroot

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

# The markers are matched at the start of a line by the host.
fail() {
	echo "QIMG-VM-SETUP-FAILED: $*"
	dmesg | tail -n 40
	echo "QIMG-VM-EXIT=125"
	sync
	poweroff -f
	sleep 10
}

. /qimg-run.conf || fail "no /qimg-run.conf"

# Errors are fine here: a self-built kernel may have these built in, and a
# missing piece shows up below as a mount that fails with a clear message.
for m in virtio_pci virtio_blk virtio-rng 9pnet_virtio 9p overlay ext4 \
	crc32c_generic crc32c-intel loop; do
	modprobe -q "$m" 2>/dev/null
done

mkdir -p /hostroot /ovl $R
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose \
	hostroot /hostroot || fail "cannot mount the host root over 9p"

# A writable overlay over the read-only host root lets us create mount
# points that do not exist on the host (/scratch, a share under /tmp).
QV_OVERLAY=0
mount -t tmpfs -o mode=755 tmpfs /ovl &&
	mkdir -p /ovl/upper /ovl/work &&
	mount -t overlay -o lowerdir=/hostroot,upperdir=/ovl/upper,workdir=/ovl/work \
		overlay $R 2>/dev/null && QV_OVERLAY=1
if [ $QV_OVERLAY = 0 ]; then
	echo "qimg-vm: overlay root unavailable, using the read-only 9p root"
	mount --bind /hostroot $R || fail "cannot bind the host root"
fi

mount -t proc proc $R/proc || fail "mount proc"
mount -t sysfs sysfs $R/sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs $R/dev || fail "mount devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm 2>/dev/null
mount -t devpts devpts $R/dev/pts 2>/dev/null
mount -t tmpfs tmpfs $R/dev/shm 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
# A host directory under one of the tmpfs dirs that the run needs is set
# aside first (a bind of the host's view of it, writable through the
# overlay just like any other path outside the share) and bound back at
# the same path once the tmpfs is there.
QV_TMPFS=${QV_TMPFS:-/tmp /run /mnt /var/tmp}
nkeep=0
if [ -f /qimg-keep.list ]; then
	while IFS= read -r p; do
		[ -n "$p" ] || continue
		[ -d "$R$p" ] || fail "host directory $p is not visible in the guest"
		nkeep=$((nkeep + 1))
		mkdir -p /keep/$nkeep
		mount --bind "$R$p" /keep/$nkeep || fail "cannot set $p aside"
		printf '%s\n' "$p" >/keep/$nkeep.path
	done </qimg-keep.list
fi
for d in $QV_TMPFS; do
	mount -t tmpfs -o mode=1777 tmpfs $R$d || fail "tmpfs on $d"
done
chmod 755 $R/run $R/mnt
mkdir -p $R/run/lock $R/run/qimg-vm
i=1
while [ $i -le $nkeep ]; do
	p=$(cat /keep/$i.path)
	mkdir -p "$R$p" && mount --bind /keep/$i "$R$p" ||
		fail "cannot bind $p back over the tmpfs"
	i=$((i + 1))
done

if [ -n "$QV_SHARE" ]; then
	mkdir -p "$R$QV_SHARE" 2>/dev/null
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 \
		share "$R$QV_SHARE" || fail "cannot mount the share at $QV_SHARE"
fi

QIMG_SCRATCH=
QIMG_SCRATCH_FSCK=
if [ "$QV_SCRATCH" = 1 ] || [ "$QV_SCRATCH" = 2 ]; then
	QIMG_SCRATCH=/scratch
	[ $QV_OVERLAY = 1 ] || QIMG_SCRATCH=/mnt/scratch
	mkdir -p "$R$QIMG_SCRATCH"
	[ -b /dev/vda ] || fail "no scratch disk /dev/vda"
	if [ "$QV_SCRATCH" = 2 ]; then
		# A reused disk may come from a guest that was cut off: the
		# check (and its verdict) is part of what the command tests.
		chroot $R e2fsck -fy /dev/vda >$R/run/qimg-vm/scratch-fsck.log 2>&1
		QIMG_SCRATCH_FSCK=$?
	else
		chroot $R mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 \
			/dev/vda || fail "mkfs.ext4 of the scratch disk"
	fi
	mount -t ext4 /dev/vda "$R$QIMG_SCRATCH" || fail "mount the scratch disk"
	chmod 1777 "$R$QIMG_SCRATCH"
fi

QIMG_VM_MODULE_LOADED=0
if [ -n "$QV_MODULE" ]; then
	# Load what the module depends on from the shipped modules first.
	for dep in $(modinfo -F depends "$R$QV_MODULE" 2>/dev/null | tr , ' '); do
		modprobe -q "$dep" 2>/dev/null
	done
	if insmod "$R$QV_MODULE"; then
		QIMG_VM_MODULE_LOADED=1
		echo "qimg-vm: loaded $QV_MODULE"
	elif [ "$QV_MODULE_REQUIRED" = 1 ]; then
		fail "insmod $QV_MODULE failed"
	else
		echo "qimg-vm: could not load $QV_MODULE, going on without it"
	fi
fi

cp "$QV_CMD" $R/run/qimg-vm/cmd.sh || fail "cannot copy the command script"
GUEST_ENV="HOME=/tmp PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LANG=C.UTF-8 QIMG_VM=1 QIMG_SCRATCH=$QIMG_SCRATCH
QIMG_VM_MODULE_LOADED=$QIMG_VM_MODULE_LOADED"
[ -n "$QIMG_SCRATCH_FSCK" ] && GUEST_ENV="$GUEST_ENV QIMG_SCRATCH_FSCK=$QIMG_SCRATCH_FSCK"

read -r up _ </proc/uptime
echo "QIMG-VM-READY uptime=$up"

if [ "$QV_MODE" = shell ]; then
	# ttyS0, not /dev/console: a shell needs a controlling terminal for
	# job control and ^C.
	env -i $GUEST_ENV TERM=${TERM:-linux} setsid -c chroot $R /bin/bash \
		--rcfile /run/qimg-vm/cmd.sh -i </dev/ttyS0 >/dev/ttyS0 2>&1
	rc=$?
else
	env -i $GUEST_ENV TERM=dumb chroot $R /bin/bash /run/qimg-vm/cmd.sh \
		</dev/null
	rc=$?
fi
echo "QIMG-VM-EXIT=$rc"

# kmemleak only reports after a scan; the report goes into the log dump.
KML=$R/sys/kernel/debug/kmemleak
if [ "$QV_MODE" != shell ]; then
	if [ -w $KML ]; then
		echo scan >$KML 2>/dev/null
		echo scan >$KML 2>/dev/null
	fi
	echo "QIMG-VM-DMESG-BEGIN"
	dmesg
	[ -r $KML ] && sed 's/^/kmemleak-report: /' $KML
	echo "QIMG-VM-DMESG-END"
fi

[ -n "$QIMG_SCRATCH" ] && umount "$R$QIMG_SCRATCH" 2>/dev/null
[ -n "$QV_SHARE" ] && umount "$R$QV_SHARE" 2>/dev/null
sync
poweroff -f
sleep 10
