# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# xcheck part "qed": QED images (sourced by run, which provides want,
# t_pass, t_fail, qx, crashed, show, N_IMAGES, N_CMP, hold_start/hold_stop).
#
# qemu-img 7.2 makes the images (qemu-img create -f qed, qemu-io -f qed
# writes, zero writes and discards) and is the oracle: for every image,
# `qimgctl info|map|check` in human and JSON output must print exactly
# what qemu-img prints (byte for byte) and exit as it does; where qemu-img
# fails, qimgctl fails with the same status and one line on stderr.  Then
# damaged images (truncated, bad magic, bad header fields, bad L1/L2
# entries, duplicate clusters, leaked clusters, need-check set), and
# repairs: `check -r` must print what qemu-img's repair prints and leave
# the same bytes on disk.  A qemu-img that hangs or dies leaves no
# reference: such a case is a skip, never a pass.

# qed_py FILE OP ARGS...: patch a QED image (little-endian fields).
#   set32|set64 OFFSET VALUE     a header field
#   l1 INDEX VALUE               an L1 entry
#   l2 L1INDEX INDEX VALUE       an entry of the L2 table L1INDEX names
#   l2get L1INDEX INDEX          print an L2 entry
qed_py() {
	python3 - "$@" <<'EOF'
import struct, sys
path, op = sys.argv[1], sys.argv[2]
a = [int(x, 0) for x in sys.argv[3:]]
with open(path, 'r+b') as f:
    h = f.read(64)
    cs, l1 = struct.unpack_from('<I', h, 4)[0], struct.unpack_from('<Q', h, 40)[0]
    if op == 'set32':
        f.seek(a[0]); f.write(struct.pack('<I', a[1]))
    elif op == 'set64':
        f.seek(a[0]); f.write(struct.pack('<Q', a[1]))
    elif op == 'l1':
        f.seek(l1 + 8 * a[0]); f.write(struct.pack('<Q', a[1]))
    else:
        f.seek(l1 + 8 * a[0]); l2 = struct.unpack('<Q', f.read(8))[0]
        f.seek(l2 + 8 * a[1])
        if op == 'l2':
            f.write(struct.pack('<Q', a[2]))
        else:
            print(struct.unpack('<Q', f.read(8))[0])
EOF
}

# qed_cmp NAME IMG ARGS...: `qemu-img ARGS IMG` and `qimgctl ARGS IMG`
# print the same bytes on stdout and exit alike; a failing qimgctl says
# why in one line.
qed_cmp() {
	local name=$1 img=$2 qrc xrc lines
	shift 2
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	timeout 10 qemu-img "$@" "$img" >out/q.out 2>out/q.err </dev/null
	qrc=$?
	qx out/x.out out/x.err "$@" "$img"
	xrc=$QX_RC
	lines=$(grep -c . out/x.err)
	if crashed "$xrc" out/x.err; then
		t_fail "$name: qimgctl crashed (status $xrc)"
		show out/x.err 8
	elif [ "$qrc" -eq 124 ] || [ "$qrc" -ge 128 ]; then
		# No reference: a qemu-img that hung or died proves nothing.
		t_skip "$name" "qemu-img $([ "$qrc" -eq 124 ] && echo "did not finish in 10 s" || echo "died (status $qrc)"); qimgctl exits $xrc"
	elif [ "$qrc" -ne "$xrc" ]; then
		t_fail "$name: exit status $xrc, qemu-img $qrc"
		show out/q.err 2
		show out/x.err 2
	elif ! cmp -s out/q.out out/x.out; then
		t_fail "$name: output differs from qemu-img's"
		diff out/q.out out/x.out | show /dev/stdin 10
	elif [ "$xrc" -ne 0 ] && [ "$lines" -ne 1 ] &&
		! { [ "$1" = check ] && [ "$xrc" -ne 1 ]; }; then
		t_fail "$name: $lines lines on stderr, expected one"
		show out/x.err 4
	else
		t_pass "$name"
	fi
}

# qed_all ID IMG [OPTS...]: info, map and check, human and JSON.
qed_all() {
	local id=$1 img=$2 o
	shift 2
	for o in "" --output=json; do
		qed_cmp "$id: info $o" "$img" info "$@" $o
		qed_cmp "$id: map $o" "$img" map "$@" $o
		qed_cmp "$id: check $o" "$img" check "$@" $o
	done
}

# qed_repair ID IMG MODE: check -r MODE (human, then JSON, each on a fresh
# copy) prints and exits as qemu-img's, and leaves the same bytes.
qed_repair() {
	local id=$1 img=$2 mode=$3 o name qrc
	for o in "" --output=json; do
		name="$id: check -r $mode $o"
		want "$name" || continue
		N_CMP=$((N_CMP + 1))
		rm -rf out/rq out/rx
		mkdir -p out/rq out/rx
		cp "$img" out/rq/i.qed
		cp "$img" out/rx/i.qed
		(cd out/rq && qemu-img check -r "$mode" $o i.qed \
			>../q.out 2>../q.err)
		qrc=$?
		(cd out/rx && "$QIMGCTL" check -r "$mode" $o i.qed \
			>../x.out 2>../x.err)
		QX_RC=$?
		if crashed "$QX_RC" out/x.err; then
			t_fail "$name: qimgctl crashed (status $QX_RC)"
			show out/x.err 8
		elif [ "$qrc" -ge 128 ]; then
			t_skip "$name" "qemu-img died (status $qrc): no reference"
		elif [ "$qrc" -ne "$QX_RC" ]; then
			t_fail "$name: exit status $QX_RC, qemu-img $qrc"
			show out/x.err 2
		elif ! cmp -s out/q.out out/x.out; then
			t_fail "$name: output differs from qemu-img's"
			diff out/q.out out/x.out | show /dev/stdin 10
		elif ! cmp -s out/rq/i.qed out/rx/i.qed; then
			t_fail "$name: the repaired image differs from qemu-img's repair"
		else
			t_pass "$name"
		fi
	done
}

# qed_build IMG CS TS SIZE BACKING: a written image (BACKING: none, raw,
# qed: bk-raw.raw or qb.qed), with data, zero writes (aligned ones become
# zero clusters), a discard, data past the backing file's end, the last
# sector.
qed_build() {
	local img=$1 cs=$2 ts=$3 size=$4 back=$5 sz
	local -a b=()
	case $back in
	raw) b=(-b bk-raw.raw -F raw) ;;
	qed) b=(-b qb.qed -F qed) ;;
	esac
	sz=$(bytes "$size")
	qemu-img create -q -f qed -o "cluster_size=$cs,table_size=$ts" \
		"${b[@]}" "$img" "$size" || return 1
	qemu-io -f qed -c "write -P 0xa1 0 4k" -c "write -P 0xa2 1000 3000" \
		-c "write -P 0xa3 $(($(bytes "$cs") * 5 + 512)) 1536" \
		-c "write -P 0xa4 5M 320k" -c "write -z 6M 1M" \
		-c "write -z 6M 1000" -c "discard 5M 64k" \
		-c "write -P 0xa5 9M 8k" \
		-c "write -P 0xa6 $((sz - 4096)) 4096" "$img" >/dev/null
}

# qed_mutants BASE N: N mutants of BASE (mutK.qed), each compared with
# qed_all.
qed_mutants() {
	local base=$1 n=$2 k
	python3 - "$base" "$n" <<'EOF' || return
import random, struct, sys
base, n = sys.argv[1], int(sys.argv[2])
src = open(base, 'rb').read()
cs, l1 = struct.unpack_from('<I', src, 4)[0], struct.unpack_from('<Q', src, 40)[0]
l2 = struct.unpack_from('<Q', src, l1)[0]
rnd = random.Random(20101209)
for k in range(n):
    d = bytearray(src)
    for _ in range(rnd.randint(1, 4)):
        where = rnd.choice(('hdr', 'l1', 'l2', 'any'))
        if where == 'hdr':
            off = rnd.randrange(64)
        elif where == 'l1':
            off = l1 + rnd.randrange(64)
        elif where == 'l2':
            off = l2 + rnd.randrange(256)
        else:
            off = rnd.randrange(len(d))
        d[off] = rnd.randrange(256)
    if rnd.random() < 0.25:
        d = d[:rnd.randrange(len(d))]
    open('mut%d.qed' % k, 'wb').write(d)
EOF
	for ((k = 0; k < n; k++)); do
		N_IMAGES=$((N_IMAGES + 1))
		qed_all "qed/mutant-$k" "mut$k.qed" -f qed
	done
}

part_qed() {
	local cs ts size back i id img
	local -a CS=(4k 64k 1M) TS=(2 4 16) SIZES=(64M 1G 24M)
	local -a BACKS=(none raw qed)
	# Nothing to set up when the filter names no QED case.
	[ -n "$FILTER" ] && [[ $FILTER != *qed* ]] && return 0

	# The QED backing file of the "qed" overlays.
	if ! qemu-img create -q -f qed -b bk-raw.raw -F raw qb.qed 12M ||
		! qemu-io -f qed -c "write -P 0x5a 1M 128k" -c "write -z 2M 64k" \
			qb.qed >/dev/null; then
		t_fail "qed: could not make the QED backing file"
		return
	fi

	# Written images: every cluster size with every table size, the
	# backing kinds and sizes rotating.
	for i in 0 1 2 3 4 5 6 7 8; do
		cs=${CS[i / 3]} ts=${TS[i % 3]}
		size=${SIZES[(i + i / 3) % 3]} back=${BACKS[(i + 2 * (i / 3)) % 3]}
		id="qed/c$cs-t$ts-$size-$back"
		img=q$i.qed
		want "$id:" || continue
		N_IMAGES=$((N_IMAGES + 1))
		if ! qed_build "$img" "$cs" "$ts" "$size" "$back" \
			>out/setup.log 2>&1; then
			t_fail "$id: setup failed"
			show out/setup.log 3
			continue
		fi
		qed_all "$id" "$img"
		[ "$back" != none ] && qed_cmp "$id: info --backing-chain" \
			"$img" info --backing-chain --output=json
		qed_cmp "$id: info -f qed" "$img" info -f qed
		rm -f "$img"
	done

	# Empty images, the default geometry, a table of one cluster (QEMU
	# makes it and refuses to open it).
	N_IMAGES=$((N_IMAGES + 3))
	qemu-img create -q -f qed e1.qed 100M
	qed_all qed/empty-default e1.qed
	qemu-img create -q -f qed -o cluster_size=4k,table_size=16 e2.qed 1G
	qed_all qed/empty-c4k-t16 e2.qed
	qemu-img create -q -f qed -o table_size=1 e3.qed 16M
	qed_all qed/t1-refused e3.qed
	# The smallest geometry qemu-img makes: 4k clusters, tables of one
	# cluster (qemu-img makes it, and no QEMU opens it: "QED table
	# offset is invalid"), empty and as big as such tables map (512 *
	# 512 * 4k = 1G).  The smallest QEMU opens, tables of two clusters
	# (4 MiB per L2 table), written across L2 tables.
	N_IMAGES=$((N_IMAGES + 3))
	qemu-img create -q -f qed -o cluster_size=4096,table_size=1 e4.qed 1M
	qed_all qed/c4k-t1-refused e4.qed
	qed_cmp "qed/c4k-t1-refused: info -f qed" e4.qed info -f qed
	qemu-img create -q -f qed -o cluster_size=4096,table_size=1 e5.qed 1G
	qed_all qed/c4k-t1-1G-refused e5.qed
	if qemu-img create -q -f qed -o cluster_size=4096,table_size=2 \
		m2.qed 24M >out/setup.log 2>&1 &&
		qemu-io -f qed -c "write -P 0xb1 0 4k" \
			-c "write -P 0xb2 $((4 * 1048576 - 6144)) 12k" \
			-c "write -z 8M 8k" -c "write -P 0xb3 12M 4M" \
			-c "discard 13M 4k" -c "write -P 0xb4 $((24 * 1048576 - 512)) 512" \
			m2.qed >>out/setup.log 2>&1; then
		qed_all qed/c4k-t2-written m2.qed
	else
		t_fail "qed/c4k-t2-written: setup failed"
		show out/setup.log 3
	fi
	rm -f e4.qed e5.qed m2.qed

	# Chains: qed <- qed <- raw, qcow2 <- qed, qed <- qcow2.
	N_IMAGES=$((N_IMAGES + 3))
	qemu-img create -q -f qed -b qb.qed -F qed ch1.qed 16M &&
		qemu-io -f qed -c "write -P 0x61 1536k 64k" ch1.qed >/dev/null
	qed_all qed/chain-qed-qed-raw ch1.qed
	qed_cmp "qed/chain-qed-qed-raw: info --backing-chain" ch1.qed \
		info --backing-chain
	qed_cmp "qed/chain-qed-qed-raw: info --backing-chain json" ch1.qed \
		info --backing-chain --output=json
	qemu-img create -q -f qcow2 -b qb.qed -F qed ch2.qcow2 16M &&
		qemu-io -f qcow2 -c "write -P 0x62 1M 4k" ch2.qcow2 >/dev/null
	qed_cmp "qed/chain-qcow2-qed: map" ch2.qcow2 map --output=json
	qed_cmp "qed/chain-qcow2-qed: info --backing-chain" ch2.qcow2 \
		info --backing-chain --output=json
	qemu-img create -q -f qed -b bk-q.qcow2 -F qcow2 ch3.qed 8M &&
		qemu-io -f qed -c "write -P 0x63 3M 64k" ch3.qed >/dev/null
	qed_all qed/chain-qed-qcow2 ch3.qed
	qed_cmp "qed/chain-qed-qcow2: info --backing-chain" ch3.qed \
		info --backing-chain --output=json

	# Backing names: relative to a subdirectory, absolute, missing; a
	# size that is no multiple of the cluster size; size 0.
	N_IMAGES=$((N_IMAGES + 5))
	mkdir -p sub
	qemu-img create -q -f qed -b ../bk-raw.raw -F raw sub/rel.qed 9M &&
		qemu-io -f qed -c "write -P 0x64 4M 8k" sub/rel.qed >/dev/null
	qed_all qed/backing-relative-subdir sub/rel.qed
	qemu-img create -q -f qed -b "$PWD/qb.qed" -F qed abs.qed 16M
	qed_all qed/backing-absolute abs.qed
	qemu-img create -q -f qed -u -b missing.raw -F raw miss.qed 8M
	qed_all qed/backing-missing miss.qed
	qemu-img create -q -f qed odd.qed 1000k &&
		qemu-io -f qed -c "write -P 0x65 960k 40k" odd.qed >/dev/null
	qed_all qed/size-1000k odd.qed
	qemu-img create -q -f qed zero.qed 0
	qed_all qed/size-0 zero.qed
	# An image that is its own backing file: qemu-img loops forever on
	# it, qimgctl must refuse it in one line.
	qemu-img create -q -f qed -u -b lq.qed -F qed loop.qed 8M
	qed_py loop.qed set32 60 0
	printf 'loop.qed' | dd of=loop.qed bs=1 seek=64 conv=notrunc \
		2>/dev/null
	qed_py loop.qed set32 60 8
	local c
	for c in map "info --backing-chain" check; do
		# shellcheck disable=SC2086
		ERR_WORD=loop err_case "qed-backing-loop-${c%% *}" 1 $c loop.qed
	done

	# 4k clusters in a file of more than 4095 clusters: qemu numbers
	# clusters with the wrong divisor there, and counts leaks that are
	# not; qimgctl reports what qemu-img reports.
	N_IMAGES=$((N_IMAGES + 1))
	qemu-img create -q -f qed -o cluster_size=4k big4k.qed 64M &&
		qemu-io -f qed -c "write -P 0x71 0 20M" big4k.qed >/dev/null
	qed_cmp "qed/c4k-20M-written: check" big4k.qed check
	qed_cmp "qed/c4k-20M-written: check json" big4k.qed check \
		--output=json
	qed_cmp "qed/c4k-20M-written: map" big4k.qed map --output=json
	rm -f big4k.qed

	# A crash (qemu-io abort) leaves need-check set; clusters appended
	# after the last one are leaks.  The abort is the point (status 134,
	# SIGABRT); in a group whose stderr is redirected, so bash's
	# "Aborted" notice stays out of the log.  Only an image that really
	# has need-check set makes the cases.
	N_IMAGES=$((N_IMAGES + 2))
	qemu-img create -q -f qed nc.qed 64M
	local arc
	{ qemu-io -f qed -c "write -P 0x81 0 64k" -c "write -P 0x82 8M 128k" \
		-c abort nc.qed; } >/dev/null 2>&1
	arc=$?
	if [ "$arc" -ne 134 ] ||
		[ $(($(od -An -tu8 -j16 -N8 nc.qed) & 2)) -eq 0 ]; then
		t_fail "qed/need-check-crash: qemu-io -c abort exited $arc, need-check $(($(od -An -tu8 -j16 -N8 nc.qed) & 2 ? 1 : 0)) (expected 134 and set)"
	fi
	qed_all qed/need-check-crash nc.qed
	qed_repair qed/need-check-crash nc.qed leaks
	cp nc.qed lk.qed
	truncate -s +192k lk.qed
	qed_all qed/leaked-clusters lk.qed
	qed_cmp "qed/leaked-clusters: check -q" lk.qed check -q
	qed_repair qed/leaked-clusters lk.qed all

	# Damaged tables: L2 entries unaligned, past EOF, twice the same
	# cluster, the zero marker in L1, an L1 entry past EOF.
	N_IMAGES=$((N_IMAGES + 4))
	qemu-img create -q -f qed dm.qed 64M
	qemu-io -f qed -c "write -P 0x91 0 64k" -c "write -P 0x92 1M 64k" \
		-c "write -z 2M 64k" dm.qed >/dev/null
	cp dm.qed d1.qed
	qed_py d1.qed l2 0 3 "$(($(qed_py dm.qed l2get 0 0) + 1))"
	qed_all qed/l2-unaligned d1.qed
	qed_repair qed/l2-unaligned d1.qed all
	cp dm.qed d2.qed
	qed_py d2.qed l2 0 4 "$(qed_py dm.qed l2get 0 0)"
	qed_py d2.qed l2 0 5 0x7fff0000
	qed_all qed/l2-duplicate-and-past-eof d2.qed
	qed_cmp "qed/l2-duplicate-and-past-eof: check -q" d2.qed check -q
	qed_repair qed/l2-duplicate-and-past-eof d2.qed all
	cp dm.qed d3.qed
	qed_py d3.qed l1 0 1
	qed_all qed/l1-zero-marker d3.qed
	qed_repair qed/l1-zero-marker d3.qed leaks
	cp dm.qed d4.qed
	qed_py d4.qed l1 1 0x7fff0000
	qed_all qed/l1-past-image-end d4.qed

	# Truncated images: inside the data, inside the L1 table, the
	# header alone, three bytes ("QED" is still probed as QED).
	N_IMAGES=$((N_IMAGES + 4))
	cp dm.qed t1.qed
	truncate -s -100k t1.qed
	qed_all qed/truncated-data t1.qed
	# Ending inside a sector: QEMU rounds the file up to whole sectors
	# before it takes its whole clusters.
	N_IMAGES=$((N_IMAGES + 1))
	cp dm.qed t5.qed
	truncate -s -65000 t5.qed
	qed_all qed/truncated-mid-sector t5.qed
	cp dm.qed t6.qed
	truncate -s -65537 t6.qed
	qed_all qed/truncated-sector-short-of-cluster t6.qed
	cp dm.qed t2.qed
	truncate -s 100k t2.qed
	qed_all qed/truncated-l1 t2.qed
	head -c 64 dm.qed >t3.qed
	qed_all qed/truncated-header t3.qed
	head -c 3 dm.qed >t4.qed
	qed_all qed/truncated-3-bytes t4.qed

	# Bad header fields.
	local f spec
	for spec in "magic set32 0 0x00444552" "cluster-3k set32 4 3072" \
		"cluster-128M set32 4 0x8000000" "table-3 set32 8 3" \
		"table-32 set32 8 32" "header-size-2 set32 12 2" \
		"feature-8 set64 16 8" "need-check set64 16 2" \
		"compat-autoclear set64 24 0xff" "l1-unaligned set64 40 0x10200" \
		"l1-past-eof set64 40 0x7fff0000" "size-unaligned set64 48 1000" \
		"size-too-big set64 48 0x4000000000200" \
		"backing-no-name set64 16 1" \
		"backing-past-header set32 56 0xfff0"; do
		read -r f spec <<<"$spec"
		N_IMAGES=$((N_IMAGES + 1))
		cp dm.qed "h-$f.qed"
		# shellcheck disable=SC2086
		qed_py "h-$f.qed" $spec
		[ "$f" = backing-past-header ] && {
			qed_py "h-$f.qed" set64 16 1
			qed_py "h-$f.qed" set32 60 0x20
		}
		# Without the magic qemu-img sees a raw image, which qimgctl
		# does not describe: only check (no checks for raw) and -f qed.
		if [ "$f" = magic ]; then
			qed_cmp "qed/header-$f: check" "h-$f.qed" check
			qed_cmp "qed/header-$f: map -f qed" "h-$f.qed" map -f qed
		else
			qed_all "qed/header-$f" "h-$f.qed"
		fi
		qed_cmp "qed/header-$f: info -f qed" "h-$f.qed" info -f qed
	done
	cp dm.qed ac.qed
	qed_py ac.qed set64 32 0x30
	qed_repair qed/autoclear-bits ac.qed leaks

	# Mutants: seeded random bytes of the header, the L1 and L2 tables or
	# anywhere, sometimes a truncation; qimgctl must agree with qemu-img
	# on every one, repairs included (a qemu-img that does not finish in
	# 10 s, as on a backing loop, only leaves "no crash" to check).
	qed_mutants dm.qed 40
	qed_repair qed/mutant-3 mut3.qed all
	qed_repair qed/mutant-7 mut7.qed all

	# -f names the wrong format: both refuse.
	qed_cmp "qed/f-qcow2-on-qed: info" dm.qed info -f qcow2
	qed_cmp "qed/f-qcow2-on-qed: map" dm.qed map -f qcow2
	qed_cmp "qed/f-qcow2-on-qed: check" dm.qed check -f qcow2
	qed_cmp "qed/f-qed-on-qcow2: info" bk-q.qcow2 info -f qed
	qed_cmp "qed/f-qed-on-qcow2: map" bk-q.qcow2 map -f qed
	qed_cmp "qed/f-qed-on-qcow2: check" bk-q.qcow2 check -f qed
	qed_cmp "qed/f-qed-on-raw: info" bk-raw.raw info -f qed
	qed_cmp "qed/f-qed: check" dm.qed check -f qed

	# In use by qemu-io: refused like qemu-img, -U reads it.
	if want "qed/locked:" && hold_start qemu-io -f qed dm.qed; then
		qed_cmp "qed/locked: check" dm.qed check
		qed_cmp "qed/locked: map" dm.qed map --output=json
		qed_cmp "qed/locked: check -U" dm.qed check -U
		qed_cmp "qed/locked: map -U" dm.qed map -U --output=json
		qed_cmp "qed/locked: info" dm.qed info
		qed_cmp "qed/locked: info -U" dm.qed info -U --output=json
		qed_cmp "qed/locked: check -r leaks" dm.qed check -r leaks
		hold_stop
	fi
	rm -rf ./*.qed ch2.qcow2 sub
}
