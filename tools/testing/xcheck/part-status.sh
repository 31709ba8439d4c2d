# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part "status": the error paths of the block-status lookups
# (qimgctl_map_status() for qcow2, qimgctl_qed_status() for QED) that a
# damaged image reaches, through map (human and JSON), convert and compare:
# qimgctl exits as qemu-img does, with one line on stderr that names the
# image and says what is wrong.  Sourced by run; uses its helpers.  Cases
# status/...
#
# The lookups' other failures (an offset outside the disk, a length of 0,
# a QED image opened for its header only) are refused with a message too,
# but no image gets there: every caller stays inside the disk.

# st_edit IMG qcow2-l1|qcow2-l2|qed-l1|qed-l2 INDEX VALUE: set a table
# entry (the first L2 table's, for -l2), VALUE "+N" adds N to the entry.
st_edit() {
	python3 - "$@" <<'PY'
import struct, sys
path, what, idx, val = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
qcow2 = what.startswith('qcow2')
fmt = '>Q' if qcow2 else '<Q'
with open(path, 'r+b') as f:
    h = f.read(104)
    if qcow2:
        l1 = struct.unpack_from('>Q', h, 40)[0]
        ext = struct.unpack_from('>Q', h, 72)[0] & 16
        esize = 16 if ext else 8
        mask = 0x00fffffffffffe00
    else:
        l1 = struct.unpack_from('<Q', h, 40)[0]
        esize, mask = 8, 0xffffffffffffffff
    table = l1
    if what.endswith('l2'):
        f.seek(l1)
        table = struct.unpack(fmt, f.read(8))[0] & mask
    else:
        esize = 8
    f.seek(table + esize * idx)
    old = struct.unpack(fmt, f.read(8))[0]
    new = old + int(val[1:], 0) if val.startswith('+') else int(val, 0)
    f.seek(table + esize * idx)
    f.write(struct.pack(fmt, new))
PY
}

# st_case NAME WORD IMG FMT [CMD...]: map, map-json, convert and compare
# (or the CMDs of those) of IMG.
st_case() {
	local name=status/$1 word=$2 img=$3 fmt=$4 c qrc
	shift 4
	[ $# -eq 0 ] && set -- map map-json convert compare
	for c in "$@"; do
		want "$name/$c" || continue
		N_CMP=$((N_CMP + 1))
		cp "$img" st/q.img
		local -a qa xa
		case $c in
		map) qa=(map -f "$fmt" st/q.img) xa=(map "$img") ;;
		map-json)
			qa=(map -f "$fmt" --output=json st/q.img)
			xa=(map --output=json "$img")
			;;
		convert)
			rm -f st/q.raw st/x.raw
			qa=(convert -f "$fmt" -O raw st/q.img st/q.raw)
			xa=(convert -O raw "$img" st/x.raw)
			;;
		compare)
			qa=(compare -f "$fmt" -F "$fmt" st/q.img st/q.img)
			xa=(compare "$img" "$img")
			;;
		esac
		qemu-img "${qa[@]}" >out/st.qout 2>out/st.qerr </dev/null
		qrc=$?
		qx out/st.xout out/st.xerr "${xa[@]}"
		if [ "$qrc" -ge 128 ]; then
			t_skip "$name/$c" "qemu-img died (status $qrc): no reference"
		elif crashed "$QX_RC" out/st.xerr; then
			t_fail "$name/$c: qimgctl crashed (status $QX_RC)"
			show out/st.xerr 8
		elif [ "$QX_RC" -ne "$qrc" ]; then
			t_fail "$name/$c: exit status $QX_RC, qemu-img $qrc"
			show out/st.qerr 2
			show out/st.xerr 2
		elif [ "$qrc" -eq 0 ]; then
			t_fail "$name/$c: qemu-img does not fail: not an error path"
		elif [ "$(grep -c . out/st.xerr)" -ne 1 ] ||
			! grep -qF "$img: " out/st.xerr ||
			! grep -qF -- "$word" out/st.xerr; then
			t_fail "$name/$c: not one line naming $img and saying '$word'"
			show out/st.xerr 3
		else
			t_pass "$name/$c"
		fi
	done
}

part_status() {
	want status/ || return 0
	mkdir -p st
	rm -f st/*.img
	if ! { qemu-img create -q -f qcow2 st/base.img 4M &&
		qemu-io -f qcow2 -c "write -P 0x21 0 128k" -c "write -P 0x22 2M 64k" \
			st/base.img &&
		qemu-img create -q -f qcow2 -o extended_l2=on st/ext.img 4M &&
		qemu-io -f qcow2 -c "write -P 0x23 0 128k" st/ext.img &&
		qemu-img create -q -f qed st/qbase.img 4M &&
		qemu-io -f qed -c "write -P 0x24 0 128k" -c "write -P 0x25 2M 64k" \
			st/qbase.img; } >out/st.log 2>&1; then
		t_fail "status: could not make the images"
		show out/st.log 3
		return
	fi
	# qcow2: the L1 entry (qimg_l1_decode), the L2 entry
	# (qimg_l2_decode), an extended L2 entry with subclusters allocated
	# in an unallocated cluster, an L1 table too small for the disk.
	cp st/base.img st/l1.img && st_edit st/l1.img qcow2-l1 0 +0x200
	st_case qcow2-l1-unaligned "L1 entry 0" st/l1.img qcow2
	cp st/base.img st/l2.img && st_edit st/l2.img qcow2-l2 0 +0x200
	st_case qcow2-l2-unaligned "L2 entry 0 of the table" st/l2.img qcow2
	cp st/ext.img st/sub.img
	python3 - st/sub.img <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    h = f.read(104)
    f.seek(struct.unpack_from('>Q', h, 40)[0])
    l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2 + 16 * 2)
    f.write(struct.pack('>QQ', 0, 1))
PY
	st_case qcow2-subcluster-without-cluster "L2 entry 2 of the table" \
		st/sub.img qcow2
	cp st/base.img st/l1small.img
	printf '\0\0\0\0' | dd of=st/l1small.img bs=1 seek=36 conv=notrunc \
		2>/dev/null
	st_case qcow2-l1-too-small "L1 table too small" st/l1small.img qcow2
	# QED: the L1 entry, the L2 entry (both unaligned).
	cp st/qbase.img st/ql1.img && st_edit st/ql1.img qed-l1 0 +0x200
	# (qimgctl compare takes no QED images.)
	st_case qed-l1-unaligned "L1 entry 0" st/ql1.img qed map map-json convert
	cp st/qbase.img st/ql2.img && st_edit st/ql2.img qed-l2 0 +0x200
	st_case qed-l2-unaligned "entry 0 of the L2 table" st/ql2.img qed \
		map map-json convert
	N_IMAGES=$((N_IMAGES + 9))
	rm -rf st
}
