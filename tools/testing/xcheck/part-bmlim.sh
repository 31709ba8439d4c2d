# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part "bmlim": the limits qemu-img 7.2 puts on persistent bitmaps
# (block/qcow2-bitmap.c and qemu-img's own -g parsing), against qemu-img.
# Sourced by run; uses its helpers (want, qx, show, crashed, t_pass/t_fail/
# t_skip, N_IMAGES, N_CMP).  Cases bmlim/...
#
#   bmlim/add/...: bitmap --add beyond a limit, on twin images: qimgctl's
#     exit status, stdout and (prefix and node name aside) stderr are
#     qemu-img's, one line, and both images are alike afterwards (qemu-img
#     info).  The granularity (512 B to 2 GiB, -g's low 32 bits; 0 is the
#     default), the name (1 to 1023 bytes, none twice), a v2 image, the
#     bitmap data (512 MiB at most: a 2 TiB disk at 512 B granularity is
#     the most there is; the 2^27-entry table limit is never the one that
#     bites, 512 B clusters already allow 64 GiB), the order of the checks.
#   bmlim/many/...: 65535 bitmaps (the most qemu takes) and a directory
#     of 64034 entries of 1 KiB names (qemu's 1 KiB per bitmap total, with
#     fewer than 65535), made by hand (bmhack.py): --add refused in
#     qemu's words.  qemu-img needs minutes to load so many bitmaps, so it
#     runs here only with XCHECK_SLOW=1 (else the words it printed when
#     this was written are the reference, and the comparison is a skip).
#   bmlim/open/...: images with bitmaps beyond the limits, made by hand:
#     info and check fail (status 1) as qemu-img fails to open them, one
#     line, the same reason where qimgctl can know it.

# shellcheck disable=SC2154 # here: set by run, which sources this file
BL_HACK=$here/bmhack.py

# bl_norm FILE: the text of a message, as comparable: no program name,
# qemu's node name and the image's name both "IMG", "Could not open"
# gone (qimgctl says the image's name instead), one line.
bl_norm() {
	sed -E -e 's/^(qemu-img|qimgctl): //' \
		-e "s/^Could not open 'bl\/[a-z0-9]+\.qcow2': //" \
		-e 's/^bl\/[a-z0-9]+\.qcow2: //' \
		-e "s/'(#block[0-9]+|bl\/[a-z0-9]+\.qcow2)'/'IMG'/g" "$1" |
		tr '\n' ' ' | sed 's/ *$//'
}

# bl_info IMG: qemu-img info's view of IMG, with no name or disk size.
bl_info() {
	qemu-img info --output=json "$1" 2>&1 |
		grep -vE '"(filename|actual-size|dirty-flag)"'
}

# bl_same NAME ARGS...: qemu-img bitmap ARGS on bl/q.qcow2 and qimgctl
# bitmap ARGS on bl/x.qcow2 (IMG in ARGS stands for the image).
bl_same() {
	local name=bmlim/add/$1 qrc a
	shift
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	local -a qa=() xa=()
	for a in "$@"; do
		qa+=("${a/#IMG/bl/q.qcow2}")
		xa+=("${a/#IMG/bl/x.qcow2}")
	done
	qemu-img bitmap "${qa[@]}" >out/bl.qout 2>out/bl.qerr </dev/null
	qrc=$?
	qx out/bl.xout out/bl.xerr bitmap "${xa[@]}"
	if [ "$qrc" -ge 128 ]; then
		t_fail "$name: qemu-img died (status $qrc): no reference"
		show out/bl.qerr 3
	elif crashed "$QX_RC" out/bl.xerr; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/bl.xerr 8
	elif [ "$qrc" -ne "$QX_RC" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/bl.xerr 2
	elif ! cmp -s out/bl.qout out/bl.xout; then
		t_fail "$name: stdout differs from qemu-img's"
	elif [ "$qrc" -ne 0 ] && [ "$(grep -c . out/bl.xerr)" -ne 1 ]; then
		t_fail "$name: $(grep -c . out/bl.xerr) lines on stderr, expected one"
		show out/bl.xerr 4
	elif [ "$(bl_norm out/bl.qerr)" != "$(bl_norm out/bl.xerr)" ]; then
		# (qemu-img splits one message over two lines: the words count.)
		t_fail "$name: stderr is not qemu-img's"
		bl_norm out/bl.qerr | cut -c1-160 | sed 's/^/#   qemu-img: /'
		bl_norm out/bl.xerr | cut -c1-160 | sed 's/^/#   qimgctl:  /'
	elif [ "$(bl_info bl/q.qcow2)" != "$(bl_info bl/x.qcow2)" ]; then
		t_fail "$name: the images differ afterwards (qemu-img info)"
		diff <(bl_info bl/q.qcow2) <(bl_info bl/x.qcow2) | show /dev/stdin 6
	else
		t_pass "$name"
	fi
}

# bl_twins SIZE [CREATE-OPTS]: fresh bl/q.qcow2 and bl/x.qcow2.
bl_twins() {
	rm -f bl/q.qcow2 bl/x.qcow2
	qemu-img create -q -f qcow2 ${2:+-o "$2"} bl/q.qcow2 "$1" \
		>out/bl.log 2>&1 && cp bl/q.qcow2 bl/x.qcow2 && N_IMAGES=$((N_IMAGES + 2))
}

bl_add() {
	local n1023 n1024
	want bmlim/add/ || return 0
	n1023=$(printf 'n%.0s' {1..1023})
	n1024=${n1023}n
	bl_twins 16M || { t_fail "bmlim/add: could not make the images"; return; }
	bl_same gran-0-default --add -g 0 IMG g0
	bl_same gran-512 --add -g 512 IMG g512
	bl_same gran-2G --add -g 2G IMG g2G
	bl_same gran-256 --add -g 256 IMG g256
	bl_same gran-3000 --add -g 3000 IMG g3000
	bl_same gran-1.5k --add -g 1.5k IMG g1.5k
	bl_same gran-4G --add -g 4G IMG g4G
	bl_same gran-4G-plus-512 --add -g 4294967808 IMG g4G512
	bl_same gran-1T --add -g 1T IMG g1T
	bl_same gran-int64-max --add -g 9223372036854775807 IMG gmax
	bl_same gran-2^63 --add -g 9223372036854775808 IMG g63
	bl_same gran-16E --add -g 16E IMG g16E
	bl_same gran-digits --add -g 99999999999999999999999 IMG gd
	bl_same gran-abc --add -g abc IMG gabc
	bl_same gran-negative --add -g -1 IMG gneg
	bl_same gran-fraction --add -g 1.5 IMG gfrac
	bl_same gran-with-remove --remove -g 64k IMG g0
	bl_same gran-with-merge --merge g0 -g 64k IMG g512
	bl_same src-fmt-alone --add -F qcow2 IMG f
	bl_same name-empty --add IMG ''
	bl_same name-empty-bad-gran --add -g 3000 IMG ''
	bl_same name-1023 --add IMG "$n1023"
	bl_same name-1024 --add IMG "$n1024"
	bl_same name-1024-bad-gran --add -g 3000 IMG "$n1024"
	bl_same name-exists --add IMG g512
	bl_same name-exists-bad-gran --add -g 3000 IMG g512
	bl_same add-twice --add --add IMG twice
	bl_same add-then-long --add IMG ok2 --add IMG "$n1024"
	# v2: refused before the name's length counts.
	bl_twins 16M compat=0.10 || { t_fail "bmlim/add: could not make the v2 images"; return; }
	bl_same v2 --add IMG v
	bl_same v2-name-1024 --add IMG "$n1024"
	bl_same v2-bad-gran --add -g 3000 IMG v
	# The bitmap data: ceil(size / granularity / 8) bytes, 512 MiB at most.
	bl_twins 2T || { t_fail "bmlim/add: could not make the 2T images"; return; }
	bl_same data-512M --add -g 512 IMG edge
	bl_same data-256M --add -g 1k IMG half
	bl_same data-default --add IMG dflt
	bl_twins 2199023256064 || { t_fail "bmlim/add: could not make the 2T+512 images"; return; }
	bl_same data-512M-plus-1 --add -g 512 IMG over
	bl_same data-512M-plus-1-1k --add -g 1k IMG fits
	bl_twins 4T cluster_size=4k || { t_fail "bmlim/add: could not make the 4T images"; return; }
	bl_same data-1G-4k-clusters --add -g 512 IMG over
	bl_same data-default-4k-clusters --add IMG dflt
	bl_same data-long-name-too-big --add -g 512 IMG "$n1024"
}

# bl_refuse NAME RC PATTERN ARGS...: qimgctl ARGS exits RC with one line on
# stderr saying PATTERN (a fixed string).
bl_refuse() {
	local name=$1 want_rc=$2 pat=$3
	shift 3
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	qx out/bl.xout out/bl.xerr "$@"
	if crashed "$QX_RC" out/bl.xerr; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/bl.xerr 8
	elif [ "$QX_RC" -ne "$want_rc" ]; then
		t_fail "$name: exit status $QX_RC, expected $want_rc"
		show out/bl.xerr 3
	elif [ "$(grep -c . out/bl.xerr)" -ne 1 ]; then
		t_fail "$name: $(grep -c . out/bl.xerr) lines on stderr, expected one"
		show out/bl.xerr 3
	elif ! grep -qF -- "$pat" out/bl.xerr; then
		t_fail "$name: stderr does not say '$pat'"
		show out/bl.xerr 3
	else
		t_pass "$name"
	fi
}

# bl_slow NAME RC PATTERN ARGS...: qemu-img ARGS (on a copy, with
# XCHECK_SLOW=1) exits RC and says PATTERN.
bl_slow() {
	local name=$1 want_rc=$2 pat=$3 rc
	shift 3
	want "$name" || return 0
	if [ "${XCHECK_SLOW:-0}" != 1 ]; then
		t_skip "$name" "qemu-img takes minutes on so many bitmaps (XCHECK_SLOW=1 runs it)"
		return
	fi
	N_CMP=$((N_CMP + 1))
	qemu-img "$@" >out/bl.qout 2>out/bl.qerr </dev/null
	rc=$?
	if [ "$rc" -ne "$want_rc" ] || ! grep -qF -- "$pat" out/bl.qerr; then
		t_fail "$name: qemu-img exits $rc, expected $want_rc saying '$pat'"
		show out/bl.qerr 3
	else
		t_pass "$name"
	fi
}

bl_many() {
	local n1018 pre=bmlim/many
	want "$pre/" || return 0
	n1018=$(printf 'n%.0s' {1..1018})
	rm -f bl/m.qcow2 bl/d.qcow2
	# 65535 bitmaps (entry 0 cloned: they share its bitmap table).
	if ! { qemu-img create -q -f qcow2 bl/m.qcow2 1M &&
		qemu-img bitmap --add bl/m.qcow2 b &&
		python3 "$BL_HACK" bl/m.qcow2 clone=65535; } >out/bl.log 2>&1; then
		t_fail "$pre: could not make the image of 65535 bitmaps"
		show out/bl.log 3
		return
	fi
	# 64034 entries of 1048 bytes: 67107632 of qemu's 67107840; one
	# more long name is too much, a short one would fit.
	if ! { qemu-img create -q -f qcow2 bl/d.qcow2 1M &&
		qemu-img bitmap --add bl/d.qcow2 "$n1018" &&
		python3 "$BL_HACK" bl/d.qcow2 clone=64034; } >out/bl.log 2>&1; then
		t_fail "$pre: could not make the image of a 64 MiB directory"
		show out/bl.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 2))
	cp bl/m.qcow2 bl/m2.qcow2
	bl_refuse "$pre/count-add" 1 \
		"Operation add on bitmap more failed: Can't make bitmap 'more' persistent in 'bl/m.qcow2': Maximum number of persistent bitmaps is already reached" \
		bitmap --add bl/m.qcow2 more
	bl_refuse "$pre/dir-add" 1 \
		"Can't make bitmap '${n1018}xxxxx' persistent in 'bl/d.qcow2': Not enough space in the bitmap directory" \
		bitmap --add bl/d.qcow2 "${n1018}xxxxx"
	want "$pre/count-info" && {
		N_CMP=$((N_CMP + 1))
		qx out/bl.xout out/bl.xerr info --json bl/m.qcow2
		if [ "$QX_RC" -eq 0 ] &&
			[ "$(grep -c '"granularity"' out/bl.xout)" -eq 65535 ]; then
			t_pass "$pre/count-info"
		else
			t_fail "$pre/count-info: exit status $QX_RC, $(grep -c '"granularity"' out/bl.xout) bitmaps listed, expected 0 and 65535"
			show out/bl.xerr 3
		fi
	}
	bl_slow "$pre/count-add-qemu" 1 \
		"Maximum number of persistent bitmaps is already reached" \
		bitmap --add bl/m2.qcow2 more
	rm -f bl/m.qcow2 bl/m2.qcow2 bl/d.qcow2
}

# bl_open NAME EXACT EDIT...: an image of two bitmaps (1 GiB: b1 of 64 KiB
# granularity has a table of one entry, b2 of 512 B one of four), edited by
# bmhack.py;
# info and check (human and JSON) of qimgctl exit 1 as qemu-img's do, with
# one line naming the image; with EXACT=1 the reason in qemu's words.
bl_open() {
	local name=bmlim/open/$1 exact=$2 cmd qrc
	shift 2
	want "$name/" || return 0
	rm -f bl/o.qcow2
	if ! { qemu-img create -q -f qcow2 bl/o.qcow2 1G &&
		qemu-img bitmap --add bl/o.qcow2 b1 &&
		qemu-img bitmap --add -g 512 bl/o.qcow2 b2 &&
		python3 "$BL_HACK" bl/o.qcow2 "$@"; } >out/bl.log 2>&1; then
		t_fail "$name: could not make the image"
		show out/bl.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 1))
	for cmd in info check check-json; do
		N_CMP=$((N_CMP + 1))
		if [ "$cmd" = check-json ]; then
			qemu-img check --output=json bl/o.qcow2 >out/bl.qout \
				2>out/bl.qerr </dev/null
			qrc=$?
			qx out/bl.xout out/bl.xerr check --json bl/o.qcow2
		else
			qemu-img "$cmd" bl/o.qcow2 >out/bl.qout 2>out/bl.qerr \
				</dev/null
			qrc=$?
			qx out/bl.xout out/bl.xerr "$cmd" bl/o.qcow2
		fi
		if [ "$qrc" -ge 128 ]; then
			t_fail "$name/$cmd: qemu-img died (status $qrc): no reference"
		elif crashed "$QX_RC" out/bl.xerr; then
			t_fail "$name/$cmd: qimgctl crashed (status $QX_RC)"
			show out/bl.xerr 8
		elif [ "$qrc" -ne "$QX_RC" ]; then
			t_fail "$name/$cmd: exit status $QX_RC, qemu-img $qrc"
			show out/bl.xerr 2
		elif [ "$qrc" -ne 0 ] && { [ "$(grep -c . out/bl.xerr)" -ne 1 ] ||
			! grep -q "bl/o.qcow2" out/bl.xerr; }; then
			t_fail "$name/$cmd: not one line naming the image"
			show out/bl.xerr 3
		elif [ "$exact" = 1 ] &&
			[ "$(bl_norm out/bl.qerr)" != "$(bl_norm out/bl.xerr)" ]; then
			t_fail "$name/$cmd: not qemu-img's words"
			show out/bl.qerr 1
			show out/bl.xerr 1
		else
			t_pass "$name/$cmd"
		fi
	done
}

part_bmlim() {
	want bmlim/add/ bmlim/many/ bmlim/open/ || return 0
	mkdir -p bl
	bl_add
	bl_many
	bl_open nb-over-max 0 nb=65536
	bl_open nb-too-few 0 nb=3
	bl_open nb-too-many 1 nb=1
	bl_open dirsize-over-max 0 dirsize=67107848
	bl_open table-too-big 1 0.table=1048577
	bl_open table-too-small 1 1.table=1
	bl_open table-wrong-size 1 0.table=2
	bl_open table-zero 1 1.table=0
	bl_open gran-32 1 0.gran=32
	bl_open gran-8 1 1.gran=8
	bl_open flags-reserved 1 0.flags=4
	bl_open type-2 1 1.type=2
	bl_open in-use-wrong-size 1 0.flags=1 0.table=2
	bl_open in-use-too-big 1 0.flags=1 0.table=1048577
	rm -rf bl
}
