# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part "cvbm": convert --bitmaps and QED sources of convert, against
# qemu-img 7.2.  Sourced by run; uses its helpers (want, qx, show, jcmp,
# crashed, t_pass/t_fail, N_IMAGES, N_CMP) and part-imgw.sh's (cv_case,
# cv_map, CV_FMT).
#
#   convert/bitmaps: qemu-made qcow2 v3 sources with enabled, disabled and
#     empty bitmaps of several granularities (bits set by qemu-io writes
#     and qemu-img bitmap --merge), converted by both tools with
#     --bitmaps and various output options: DST identical to SRC (qemu-img
#     compare), clean (qemu-img check), qemu-img info equal to qemu-img
#     convert's twin (bitmap names, granularities, flags), and every
#     bitmap's bits as QEMU reads them (qemu-nbd exports the bitmap,
#     qemu-img map reads it) the same as in SRC; qimgctl's --export of its
#     DST the same as of qemu-img's twin; qemu-img convert --bitmaps of
#     qimgctl's DST gives the twin's info again.
#   crash/convert-bitmaps: convert --bitmaps stopped at its writes and
#     fsyncs (part-imgw.sh's cr_case): qemu-img check clean or leaks only.
#   convert/bitmaps errors: what qemu-img refuses (raw, QED or v2 source,
#     raw or v2 output, an in-use bitmap, --skip-broken-bitmaps alone),
#     refused with its exit status, one line on stderr, and DST made or
#     not as qemu-img makes it.
#   convert/qed: qemu-made QED images (no backing file, raw, qcow2 and QED
#     backing files, 4k clusters, a size that is not a multiple of the
#     cluster size, zero clusters, discards, need-check set) through
#     cv_case, and probed without -f.

# cb_inuse IMG: mark the first bitmap of the directory in use (as a QEMU
# that died while the bitmap was loaded leaves it).
cb_inuse() {
	python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    hdr = f.read(4096)
    pos = struct.unpack_from('>I', hdr, 100)[0]
    while True:
        kind, length = struct.unpack_from('>II', hdr, pos)
        if kind == 0:
            sys.exit('no bitmaps extension')
        if kind == 0x23852875:
            dir_off = struct.unpack_from('>Q', hdr, pos + 24)[0]
            break
        pos += 8 + ((length + 7) & ~7)
    f.seek(dir_off + 12)
    flags = struct.unpack('>I', f.read(4))[0]
    f.seek(dir_off + 12)
    f.write(struct.pack('>I', flags | 1))
PY
}

# cb_qview IMG NAME: the dirty extents of bitmap NAME of IMG as QEMU reads
# them, one "offset length" line each (qemu-nbd exports the bitmap; in
# qemu-img map of x-dirty-bitmap, "data": false is a dirty extent).
# Fails when QEMU could not read it.
cb_qview() {
	local sock=$PWD/out/cb.sock i rc pid
	rm -f "$sock"
	timeout 60 qemu-nbd -r -f qcow2 -k "$sock" -B "$2" "$1" \
		>out/nbd.log 2>&1 </dev/null &
	pid=$!
	for ((i = 0; i < 100; i++)); do
		[ -S "$sock" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	qemu-img map --output=json --image-opts \
		"driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2" \
		>out/nbd.map 2>>out/nbd.log
	rc=$?
	wait "$pid" 2>/dev/null
	[ "$rc" -eq 0 ] || return 1
	sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"data": false.*/\1 \2/p' \
		out/nbd.map |
		awk '$1 == s + l { l += $2; next }
			{ if (NR > 1) print s, l; s = $1; l = $2 }
			END { if (NR) print s, l }'
}

# cb_xview IMG NAME: the same from qimgctl bitmap --export.
cb_xview() {
	"$QIMGCTL" bitmap --export "$2" "$1" 2>>out/nbd.log |
		sed -n 's/.*"offset": \([0-9]*\), "length": \([0-9]*\).*/\1 \2/p'
	return "${PIPESTATUS[0]}"
}

# cb_info IMG: qemu-img info --output=json of IMG into out/FILE.
cb_info() {
	qemu-img info -f qcow2 --output=json "$1" >"out/$2" 2>&1
}

# The sources: cb-NAME.img, bitmaps named in CB_BMS[NAME].
declare -A CB_BMS
cb_sources() {
	CB_BMS=()
	# Enabled b1 (default granularity) and b3 (4k), disabled b2 (128k,
	# disabled before the second round of writes), empty b4.
	qemu-img create -q -f qcow2 cb-two.img 32M &&
		qemu-img bitmap --add cb-two.img b1 &&
		qemu-img bitmap --add -g 128k cb-two.img b2 &&
		qemu-img bitmap --add -g 4k cb-two.img b3 &&
		qemu_io_pattern cb-two.img 65536 32M >/dev/null &&
		qemu-img bitmap --disable cb-two.img b2 &&
		qemu-io -f qcow2 -c "write -P 0x31 20M 8k" \
			-c "write -P 0x32 31M 1000" cb-two.img >/dev/null &&
		qemu-img bitmap --add --disable cb-two.img b4 &&
		CB_BMS[two]="b1 b2 b3 b4"
	# 4k clusters, 512 B granularity: the data of one bitmap spans
	# several clusters of a 512 B-cluster DST; one merged from two.
	qemu-img create -q -f qcow2 -o cluster_size=4k cb-g512.img 32M &&
		qemu-img bitmap --add -g 512 cb-g512.img fine &&
		qemu-io -f qcow2 -c "write -P 0x41 512 512" \
			-c "write -P 0x42 3M 1M" -c "write -P 0x43 17M 5000" \
			-c "write -z 30M 64k" cb-g512.img >/dev/null &&
		qemu-img bitmap --add -g 2M cb-g512.img coarse &&
		qemu-io -f qcow2 -c "write -P 0x44 9M 4k" cb-g512.img \
			>/dev/null &&
		qemu-img bitmap --add -g 64k --disable cb-g512.img merged &&
		qemu-img bitmap --merge fine --merge coarse cb-g512.img merged &&
		CB_BMS[g512]="fine coarse merged"
	# An overlay: only its own bitmaps count, not those of its backing
	# file (which has one of the same name and one more).
	qemu-img create -q -f qcow2 cb-base.qcow2 32M &&
		qemu-img bitmap --add cb-base.qcow2 top &&
		qemu-img bitmap --add cb-base.qcow2 base-only &&
		qemu-io -f qcow2 -c "write -P 0x51 0 2M" cb-base.qcow2 \
			>/dev/null &&
		qemu-img create -q -f qcow2 -b cb-base.qcow2 -F qcow2 \
			cb-over.img &&
		qemu-img bitmap --add -g 16k cb-over.img top &&
		qemu-io -f qcow2 -c "write -P 0x52 1M 16k" \
			-c "write -P 0x53 12M 3k" cb-over.img >/dev/null &&
		CB_BMS[over]="top"
	# An in-use bitmap (first) beside good ones.
	qemu-img create -q -f qcow2 cb-inuse.img 32M &&
		qemu-img bitmap --add cb-inuse.img broken &&
		qemu-img bitmap --add -g 32k cb-inuse.img good &&
		qemu-io -f qcow2 -c "write -P 0x61 4M 100k" cb-inuse.img \
			>/dev/null &&
		cb_inuse cb-inuse.img && CB_BMS[inuse]="good"
	N_IMAGES=$((N_IMAGES + 5))
}

# cb_bits ID SRC DST TWIN NAMES: every bitmap's bits in DST as QEMU reads
# them are SRC's; qimgctl's export of DST is that of qemu-img's TWIN.
cb_bits() {
	local id=$1 src=$2 x=$3 q=$4 b
	shift 4
	N_CMP=$((N_CMP + 1))
	for b in "$@"; do
		if ! cb_qview "$src" "$b" >out/cb.s ||
			! cb_qview "$x" "$b" >out/cb.x; then
			t_fail "$id: bits: QEMU cannot read bitmap '$b'"
			show out/nbd.log 3
			return
		fi
		if ! cmp -s out/cb.s out/cb.x; then
			t_fail "$id: bits: bitmap '$b' differs from SRC's (as QEMU reads it)"
			diff out/cb.s out/cb.x | show /dev/stdin 6
			return
		fi
		if ! cb_xview "$q" "$b" >out/cb.q || ! cb_xview "$x" "$b" >out/cb.x; then
			t_fail "$id: bits: qimgctl bitmap --export '$b' fails"
			show out/nbd.log 3
			return
		fi
		if ! cmp -s out/cb.q out/cb.x; then
			t_fail "$id: bits: --export of bitmap '$b' differs from qemu-img's twin"
			diff out/cb.q out/cb.x | show /dev/stdin 6
			return
		fi
	done
	t_pass "$id: bits"
}

# cb_case SRC VARIANT WARN ARGS...: convert --bitmaps ARGS cb-SRC.img by both
# tools; WARN: the bitmap qimgctl must warn about skipping, or -.
cb_case() {
	local src=$1 id="convert/bitmaps/$1/$2" warn=$3 x q r lines
	shift 3
	want "$id: convert" "$id: compare" "$id: check" "$id: info" \
		"$id: bits" "$id: requeue" || return 0
	if [ -z "${CB_BMS[$src]+set}" ]; then
		t_fail "$id: convert: could not make the source"
		return
	fi
	x=cbx-$N_IMAGES.img
	q=cbq-$N_IMAGES.img
	r=cbr-$N_IMAGES.img
	N_IMAGES=$((N_IMAGES + 3))
	rm -f "$x" "$q" "$r"

	N_CMP=$((N_CMP + 1))
	qx out/c.out out/c.err convert -f qcow2 --bitmaps "$@" "cb-$src.img" "$x"
	lines=$(grep -c . out/c.err)
	if crashed "$QX_RC" out/c.err; then
		t_fail "$id: convert: qimgctl crashed (status $QX_RC)"
		show out/c.err 8
		return
	fi
	if ! qemu-img convert -f qcow2 --bitmaps "$@" "cb-$src.img" "$q" \
		>out/q.out 2>&1; then
		t_fail "$id: convert: qemu-img convert fails"
		show out/q.out 3
		return
	fi
	if [ "$QX_RC" -ne 0 ] || [ -s out/c.out ]; then
		t_fail "$id: convert: exit status $QX_RC (qemu-img 0) or output"
		show out/c.err 3
		return
	elif [ "$warn" = - ] && [ "$lines" -ne 0 ]; then
		t_fail "$id: convert: unexpected messages"
		show out/c.err 3
		return
	elif [ "$warn" != - ] && { [ "$lines" -ne 1 ] ||
		! grep -q "warning: Skipping inconsistent bitmap '$warn'" out/c.err; }; then
		t_fail "$id: convert: no warning about skipping '$warn'"
		show out/c.err 3
		return
	fi
	t_pass "$id: convert"

	N_CMP=$((N_CMP + 1))
	if qemu-img compare -f qcow2 -F qcow2 "cb-$src.img" "$x" >out/cmp 2>&1; then
		t_pass "$id: compare"
	else
		t_fail "$id: compare: DST differs from SRC"
		show out/cmp 3
	fi
	N_CMP=$((N_CMP + 1))
	if qemu-img check -f qcow2 "$x" >out/chk 2>&1; then
		t_pass "$id: check"
	else
		t_fail "$id: check: qemu-img check not clean"
		show out/chk 6
	fi
	N_CMP=$((N_CMP + 1))
	cb_info "$q" q.json
	cb_info "$x" x.json
	if jcmp twin out/q.json out/x.json; then
		t_pass "$id: info"
	else
		t_fail "$id: info: qemu-img info (bitmaps) differs from qemu-img convert's image"
		show out/diff 8
	fi
	# shellcheck disable=SC2086 # a list of names
	cb_bits "$id" "cb-$src.img" "$x" "$q" ${CB_BMS[$src]}

	# QEMU copies qimgctl's DST (same options) into the twin's image.
	N_CMP=$((N_CMP + 1))
	if ! qemu-img convert -f qcow2 --bitmaps "$@" "$x" "$r" \
		>out/r.out 2>&1; then
		t_fail "$id: requeue: qemu-img convert --bitmaps of qimgctl's DST fails"
		show out/r.out 3
	else
		cb_info "$r" r.json
		if jcmp twin out/q.json out/r.json; then
			t_pass "$id: requeue"
		else
			t_fail "$id: requeue: bitmaps lost or changed by qemu-img convert of qimgctl's DST"
			show out/diff 8
		fi
	fi
	rm -f "$x" "$q" "$r"
}

# cx_err NAME SRC ARGS...: qemu-img convert ARGS SRC DST fails; qimgctl
# fails with the same status, one line naming CB_WORD, and leaves DST made
# (or not) as qemu-img leaves it.
cx_err() {
	local name=$1 src=$2 qrc qhas xhas lines
	shift 2
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	rm -f cbe-q.img cbe-x.img
	qemu-img convert "$@" "$src" cbe-q.img >out/q.out 2>&1 </dev/null
	qrc=$?
	qhas=no
	[ -e cbe-q.img ] && qhas=yes
	qx out/e.out out/e.err convert "$@" "$src" cbe-x.img
	xhas=no
	[ -e cbe-x.img ] && xhas=yes
	lines=$(grep -c . out/e.err)
	if crashed "$QX_RC" out/e.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/e.err 8
	elif [ "$qrc" -eq 0 ]; then
		t_fail "$name: qemu-img convert succeeds"
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/q.out 2
		show out/e.err 2
	elif [ "$lines" -ne 1 ]; then
		t_fail "$name: $lines lines on stderr, expected one"
		show out/e.err 4
	elif ! grep -qF -- "$CB_WORD" out/e.err; then
		t_fail "$name: stderr does not say '$CB_WORD'"
		show out/e.err 2
	elif [ "$qhas" != "$xhas" ]; then
		t_fail "$name: DST made: qimgctl $xhas, qemu-img $qhas"
	else
		t_pass "$name"
	fi
	rm -f cbe-q.img cbe-x.img
}

# The cases of this part, one line each (no argument has a space):
#   CB_CASES: cb_case's SRC VARIANT WARN ARGS...
#   CB_ERRS: NAME|WORD|SRC ARGS... (cx_err under convert/bitmaps/errors/)
#   QE_CASES: cv_case's SRC VARIANT ARGS...
#   QE_ERRS: as CB_ERRS, under convert/qed/errors/
CB_CASES=(
	"two qcow2 - -O qcow2"
	"two c512 - -O qcow2 -o cluster_size=512"
	"two c2m-zlib - -O qcow2 -c -o cluster_size=2M"
	"g512 c512 - -O qcow2 -o cluster_size=512"
	"g512 extl2 - -O qcow2 -o extended_l2=on,refcount_bits=1"
	"over qcow2 - -O qcow2"
	"over B - -O qcow2 -B cb-base.qcow2 -F qcow2"
	"inuse skip broken -O qcow2 --skip-broken-bitmaps"
)
CB_ERRS=(
	"raw-output|does not support bitmaps|cb-two.img --bitmaps -f qcow2 -O raw"
	"v2-output|does not support bitmaps|cb-two.img --bitmaps -f qcow2 -O qcow2 -o compat=0.10"
	"v2-output-no-bitmaps|does not support bitmaps|cbe-v3.qcow2 --bitmaps -O qcow2 -o compat=0.10"
	"raw-source|Source lacks bitmap support|cbe.raw --bitmaps -f raw -O qcow2"
	"qed-source|Source lacks bitmap support|cbe.qed --bitmaps -O qcow2"
	"v2-source|Source lacks bitmap support|cbe-v2.qcow2 --bitmaps -f qcow2 -O qcow2"
	"in-use|Cannot copy inconsistent bitmap 'broken'|cb-inuse.img --bitmaps -f qcow2 -O qcow2"
	"skip-alone|requires --bitmaps|cb-two.img --skip-broken-bitmaps -f qcow2 -O qcow2"
)
QE_CASES=(
	"qed-plain qcow2 -O qcow2" "qed-plain raw -O raw"
	"qed-raw qcow2 -O qcow2" "qed-raw raw -O raw"
	"qed-q qcow2 -O qcow2" "qed-q raw -O raw"
	"qed-c4k qcow2 -O qcow2" "qed-c4k raw -O raw"
	"qed-qed qcow2 -O qcow2" "qed-qed raw -O raw"
	"qed-nc qcow2 -O qcow2"
	"qed-c4k-t2 qcow2 -O qcow2" "qed-c4k-t2 raw -O raw"
	"qed-plain c512-zlib -O qcow2 -c -o cluster_size=512"
	"qed-raw B -O qcow2 -B bk-raw.raw -F raw"
	"qed-q B-v2 -O qcow2 -o compat=0.10 -B bk-q.qcow2 -F qcow2"
)
QE_ERRS=(
	"missing-backing|no-such-backing|qee-lost.qed -O qcow2"
	"qcow2-as-qed|qee.qcow2|qee.qcow2 -f qed -O qcow2"
	"c4k-t1|QED table offset is invalid|qee-t1.qed -O qcow2"
	"c4k-t1-f-qed|QED table offset is invalid|qee-t1.qed -f qed -O raw"
)

# cb_names bitmaps|qed: every case name of that half (for want).
cb_names() {
	local l n a
	if [ "$1" = bitmaps ]; then
		for l in "${CB_CASES[@]}"; do
			read -ra a <<<"$l"
			for n in convert compare check info bits requeue; do
				echo "convert/bitmaps/${a[0]}/${a[1]}: $n"
			done
		done
		for l in "${CB_ERRS[@]}"; do
			echo "convert/bitmaps/errors/${l%%|*}"
		done
		echo crash/convert-bitmaps
	else
		for l in "${QE_CASES[@]}"; do
			read -ra a <<<"$l"
			for n in convert compare check "twin info" "twin map" \
				"read back"; do
				echo "convert/${a[0]}/${a[1]}: $n"
			done
		done
		for l in "${QE_ERRS[@]}"; do
			echo "convert/qed/errors/${l%%|*}"
		done
		echo convert/qed/probe
	fi
}

# cb_want bitmaps|qed: the filter selects a case of that half.
cb_want() {
	local -a names
	[ -z "$FILTER" ] && return 0
	mapfile -t names < <(cb_names "$1")
	want "${names[@]}"
}

# cb_errs PREFIX LINE...: cx_err for each NAME|WORD|SRC ARGS line.
cb_errs() {
	local prefix=$1 l name rest
	local -a a
	shift
	for l in "$@"; do
		name=${l%%|*}
		rest=${l#*|}
		CB_WORD=${rest%%|*}
		read -ra a <<<"${rest#*|}"
		cx_err "$prefix/$name" "${a[@]}"
	done
}

cb_errors() {
	qemu-img create -q -f qcow2 -o compat=0.10 cbe-v2.qcow2 4M
	qemu-img create -q -f qcow2 cbe-v3.qcow2 4M
	qemu-img create -q -f raw cbe.raw 4M
	qemu-img create -q -f qed cbe.qed 4M
	N_IMAGES=$((N_IMAGES + 4))
	cb_errs convert/bitmaps/errors "${CB_ERRS[@]}"
	rm -f cbe-v2.qcow2 cbe-v3.qcow2 cbe.raw cbe.qed
}

# ---------------------------------------------------------------------------
# QED sources

# qe_sources: cv-qed-NAME.img, CV_FMT[qed-NAME]=qed (for cv_case).
# shellcheck disable=SC2034 # CV_FMT is read by cv_case (part-imgw.sh)
qe_sources() {
	# No backing file: data, zero clusters, a discard, the last sector.
	qemu-img create -q -f qed cv-qed-plain.img 32M &&
		qemu-io -f qed -c "write -P 0x81 0 4k" \
			-c "write -P 0x82 1000 3000" -c "write -P 0x83 5M 320k" \
			-c "write -z 6M 1M" -c "discard 5248k 64k" \
			-c "write -P 0x84 32764k 4k" cv-qed-plain.img \
			>/dev/null && CV_FMT["qed-plain"]=qed
	# A raw backing file shorter than the image (QED's raw flag); zero
	# clusters over its data.
	qemu-img create -q -f qed -b bk-raw.raw -F raw cv-qed-raw.img 12M &&
		qemu-io -f qed -c "write -P 0x85 64k 4k" -c "write -z 0 64k" \
			-c "write -z 3M 128k" -c "write -P 0x86 9M 64k" \
			cv-qed-raw.img >/dev/null && CV_FMT["qed-raw"]=qed
	# A qcow2 backing file (probed, QED names no format for it).
	qemu-img create -q -f qed -b bk-q.qcow2 -F qcow2 cv-qed-q.img &&
		qemu-io -f qed -c "write -P 0x87 100k 8k" \
			-c "write -z 7M 64k" -c "write -P 0x88 2M 4k" \
			cv-qed-q.img >/dev/null && CV_FMT["qed-q"]=qed
	# 4k clusters, a size that is not a multiple of the cluster size.
	qemu-img create -q -f qed -o cluster_size=4096 \
		cv-qed-c4k.img $((20 * 1048576 + 1536)) &&
		qemu-io -f qed -c "write -P 0x89 0 6k" \
			-c "write -P 0x8a 10M 100k" -c "write -z 10M 4k" \
			-c "write -P 0x8b 20M 1536" cv-qed-c4k.img >/dev/null &&
		CV_FMT["qed-c4k"]=qed
	# A QED backing file of a QED image.
	cp cv-qed-plain.img cv-qed-base.qed &&
		qemu-img create -q -f qed -b cv-qed-base.qed -F qed cv-qed-qed.img &&
		qemu-io -f qed -c "write -P 0x8c 5M 64k" -c "write -z 0 4k" \
			cv-qed-qed.img >/dev/null && CV_FMT["qed-qed"]=qed
	# The smallest geometry QEMU opens: 4k clusters, tables of two
	# clusters (an L2 table maps 4 MiB); writes across L2 tables.
	qemu-img create -q -f qed -o cluster_size=4096,table_size=2 \
		cv-qed-c4k-t2.img 24M &&
		qemu-io -f qed -c "write -P 0x91 0 4k" \
			-c "write -P 0x92 $((4 * 1048576 - 6144)) 12k" \
			-c "write -z 8M 8k" -c "write -P 0x93 12M 4M" \
			-c "discard 13M 4k" cv-qed-c4k-t2.img >/dev/null &&
		CV_FMT["qed-c4k-t2"]=qed
	# Need-check set (a qemu-io that died after its writes): opened
	# read-only, as convert opens it, it reads as it is.
	qemu-img create -q -f qed cv-qed-nc.img 16M &&
		{ qemu-io -f qed -c "write -P 0x8d 0 64k" \
			-c "write -P 0x8e 8M 128k" -c abort cv-qed-nc.img \
			>/dev/null 2>&1; true; } &&
		[ $(($(od -An -tu8 -j16 -N8 cv-qed-nc.img) & 2)) -ne 0 ] &&
		CV_FMT["qed-nc"]=qed
	N_IMAGES=$((N_IMAGES + 8))
}

# qe_probe: without -f, a QED source is told apart from qcow2 and raw.
qe_probe() {
	local id=convert/qed/probe
	want "$id" || return 0
	N_CMP=$((N_CMP + 1))
	rm -f qep-x.img
	qx out/c.out out/c.err convert -O qcow2 cv-qed-raw.img qep-x.img
	if crashed "$QX_RC" out/c.err; then
		t_fail "$id: qimgctl crashed (status $QX_RC)"
		show out/c.err 8
	elif [ "$QX_RC" -ne 0 ] || [ -s out/c.err ]; then
		t_fail "$id: exit status $QX_RC"
		show out/c.err 3
	elif ! qemu-img compare -f qed -F qcow2 cv-qed-raw.img qep-x.img \
		>out/cmp 2>&1; then
		t_fail "$id: DST differs from SRC"
		show out/cmp 3
	else
		t_pass "$id"
	fi
	rm -f qep-x.img
}

qe_errors() {
	cp cv-qed-q.img qee-lost.qed
	qemu-img rebase -u -f qed -b no-such-backing.qcow2 -F qcow2 qee-lost.qed
	qemu-img create -q -f qcow2 qee.qcow2 4M
	qemu-img create -q -f qed -o cluster_size=4096,table_size=1 qee-t1.qed 1M
	N_IMAGES=$((N_IMAGES + 3))
	cb_errs convert/qed/errors "${QE_ERRS[@]}"
	rm -f qee-lost.qed qee.qcow2 qee-t1.qed
}

part_cvbm() {
	local l
	local -a a
	if cb_want bitmaps; then
		if ! cb_sources >out/cb.log 2>&1; then
			show out/cb.log 4
		fi
		for l in "${CB_CASES[@]}"; do
			read -ra a <<<"$l"
			cb_case "${a[@]}"
		done
		cb_errors
		# Stopped at any write or fsync, bitmaps included: clean.
		rm -f cbcr.img
		cr_case convert-bitmaps new cbcr.img convert --bitmaps -f qcow2 \
			-O qcow2 -o cluster_size=512 cb-g512.img cbcr.img
		rm -f cb-*.img cb-base.qcow2
	fi
	if cb_want qed; then
		if ! qe_sources >out/qe.log 2>&1; then
			show out/qe.log 4
		fi
		for l in "${QE_CASES[@]}"; do
			read -ra a <<<"$l"
			cv_case "${a[@]}"
		done
		qe_probe
		qe_errors
		rm -f cv-qed-*.img cv-qed-base.qed
	fi
}
