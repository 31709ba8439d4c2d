# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part (sourced by run): the read-side commands qimgctl shares with
# qemu-img -- compare, measure, map --start-offset/--max-length, info on
# encrypted images, create -o preallocation -- each compared with what
# qemu-img 7.2 prints and exits with for the same images.  Uses run's
# helpers (want, qx, t_pass, t_fail, show, err_case, N_CMP, N_IMAGES).

# ia_images: the images the cases below compare (made by qemu-img/qemu-io).
ia_images() {
	local -a w=(-c "write -P 1 0 64k" -c "write -P 2 1M 3k")
	mkdir -p ia && cd ia || return 1
	{
		qemu-img create -q -f qcow2 a.qcow2 16M &&
		qemu-io -f qcow2 "${w[@]}" -c "write -z 2M 64k" a.qcow2 &&
		qemu-img create -q -f qcow2 b.qcow2 20M &&
		qemu-io -f qcow2 "${w[@]}" b.qcow2 &&
		qemu-img create -q -f qcow2 bx.qcow2 20M &&
		qemu-io -f qcow2 "${w[@]}" -c "write -P 3 18M 4k" bx.qcow2 &&
		qemu-img convert -O raw a.qcow2 a.raw &&
		qemu-img convert -c -O qcow2 a.qcow2 ac.qcow2 &&
		qemu-img convert -c -O qcow2 -o compression_type=zstd a.qcow2 az.qcow2 &&
		qemu-img convert -O qcow2 -o cluster_size=4k a.qcow2 a4.qcow2 &&
		qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 ov.qcow2 &&
		qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 ov2.qcow2 &&
		qemu-io -f qcow2 -c "write -P 3 1M 512" ov2.qcow2 &&
		qemu-img create -q -f qcow2 -b a.raw -F raw ovr.qcow2 18M &&
		qemu-img create -q -f qcow2 -o extended_l2=on c.qcow2 16M &&
		qemu-io -f qcow2 "${w[@]}" -c "write -z 2M 64k" c.qcow2 &&
		qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k x1.qcow2 16M &&
		qemu-io -f qcow2 -c "write -P 1 4k 4k" -c "write -P 1 12k 8k" \
			-c "write -z 64k 4k" x1.qcow2 &&
		qemu-img bitmap --add -g 512 x1.qcow2 bmA &&
		qemu-img bitmap --add -g 2M x1.qcow2 a_longer_bitmap_name &&
		qemu-img create -q -f qcow2 short.qcow2 8M &&
		qemu-io -f qcow2 "${w[@]}" short.qcow2 &&
		qemu-img create -q -f qcow2 -b short.qcow2 -F qcow2 ovs.qcow2 16M &&
		qemu-img create -q -f qcow2 -b short.qcow2 -F qcow2 ovs2.qcow2 16M &&
		qemu-io -f qcow2 -c "write -P 0 10M 64k" ovs2.qcow2 &&
		qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M &&
		qemu-io -f qcow2 "${w[@]}" -c "write -P 0 2M 64k" v2.qcow2 &&
		qemu-img create -q -f qcow2 -o cluster_size=512 s512.qcow2 16M &&
		qemu-io -f qcow2 "${w[@]}" -c "write -z 2M 64k" s512.qcow2 &&
		qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 16M &&
		qemu-img create -q -f qcow2 e.qcow2 16M &&
		qemu-img create -q -f qcow2 -o data_file=df.raw,data_file_raw=on dfi.qcow2 16M &&
		qemu-io -f qcow2 "${w[@]}" dfi.qcow2 &&
		truncate -s 16777000 odd.raw &&
		qemu-io -f raw "${w[@]}" odd.raw
	} >../out/ia.log 2>&1
	local rc=$?
	cd .. || return 1
	return $rc
}

IA_FILES="a.qcow2 b.qcow2 bx.qcow2 a.raw ac.qcow2 az.qcow2 a4.qcow2 ov.qcow2
ov2.qcow2 ovr.qcow2 c.qcow2 x1.qcow2 short.qcow2 ovs.qcow2 ovs2.qcow2 v2.qcow2
s512.qcow2 pm.qcow2 e.qcow2 dfi.qcow2 odd.raw"

# ia_same NAME ARGS...: qimgctl ARGS and qemu-img ARGS, run in ia/, must
# print the same stdout and exit with the same status (stderr: one line
# each when failing).
ia_same() {
	local name=$1 qrc
	shift
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	(cd ia && qemu-img "$@" >../out/q.out 2>../out/q.err)
	qrc=$?
	(cd ia && qx ../out/x.out ../out/x.err "$@"; exit "$QX_RC")
	QX_RC=$?
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$qrc" -ne "$QX_RC" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/q.out 2
		show out/x.out 2
		show out/x.err 2
	elif ! cmp -s out/q.out out/x.out; then
		t_fail "$name: output differs from qemu-img's"
		diff out/q.out out/x.out | show /dev/stdin 6
	elif [ "$qrc" -ne 0 ] && [ -s out/q.err ] &&
		[ "$(grep -c . out/x.err)" -ne 1 ]; then
		t_fail "$name: $(grep -c . out/x.err) lines on stderr, expected one"
		show out/x.err 4
	else
		t_pass "$name"
	fi
}

ia_compare() {
	local x y s i=0
	# Every image against qcow2 a and against one partner of a rotating
	# kind (raw, overlay, extended L2, shorter, empty), plain and strict,
	# in alternating directions.
	local -a files partners
	# shellcheck disable=SC2206
	files=($IA_FILES)
	partners=(a.raw ov.qcow2 c.qcow2 short.qcow2 e.qcow2)
	for x in "${files[@]}"; do
		for y in a.qcow2 "${partners[i % 5]}"; do
			i=$((i + 1))
			s=""
			[ $((i % 3)) = 0 ] && s=-s
			if [ $((i % 2)) = 0 ]; then
				ia_same "imga/compare/$x-$y$s" compare $s "$x" "$y"
			else
				ia_same "imga/compare/$y-$x$s" compare $s "$y" "$x"
			fi
		done
	done
	ia_same imga/compare/q-identical compare -q a.qcow2 a.raw
	ia_same imga/compare/q-differ compare -q a.qcow2 bx.qcow2
	ia_same imga/compare/formats compare -f qcow2 -F raw a.qcow2 a.raw
	ia_same imga/compare/raw-as-raw compare -f raw -F raw a.qcow2 a.qcow2
	ia_same imga/compare/strict-size compare -s a.qcow2 b.qcow2
	ia_same imga/compare/options-after compare a.qcow2 b.qcow2 -s
	ia_same imga/compare/missing compare a.qcow2 nope.qcow2
	ia_same imga/compare/one-file compare a.qcow2
	ia_same imga/compare/three-files compare a.qcow2 a.qcow2 a.qcow2
	ia_same imga/compare/not-qcow2 compare -f qcow2 a.qcow2 a.raw
	# An L2 entry pointing into the middle of a cluster: status 3.
	if want imga/compare/corrupt imga/measure/corrupt; then
		cp ia/a.qcow2 ia/bad.qcow2 && python3 - ia/bad.qcow2 <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    d = f.read(512)
    l1 = struct.unpack('>Q', d[40:48])[0]
    f.seek(l1)
    l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2)
    e = struct.unpack('>Q', f.read(8))[0]
    f.seek(l2)
    f.write(struct.pack('>Q', e + 512))
PY
		ia_same imga/compare/corrupt compare bad.qcow2 a.qcow2
		ia_same imga/measure/corrupt measure -O qcow2 bad.qcow2
	fi
	# -p: qemu-img's meter, byte for byte (also when it stops early).
	ia_same imga/compare/progress-identical compare -p a.qcow2 a.raw
	ia_same imga/compare/progress-differ compare -p a.qcow2 bx.qcow2
	ia_same imga/compare/progress-sizes compare -p e.qcow2 b.qcow2
	ia_same imga/compare/progress-strict compare -p -s a.qcow2 ov.qcow2
	ia_same imga/compare/progress-missing compare -p a.qcow2 nope.qcow2
}

ia_measure() {
	local f o O out i=0
	local -a srcs=(a.qcow2 a.raw ac.qcow2 ov2.qcow2 ovr.qcow2 x1.qcow2
		ovs2.qcow2 pm.qcow2 odd.raw "--size 1G" "--size 1000"
		"--size 100T")
	# Every option set with four sources (rotating through the list).
	for o in "" cluster_size=512 cluster_size=4k,refcount_bits=1 \
		cluster_size=2M,refcount_bits=64 extended_l2=on \
		extended_l2=on,cluster_size=16k compat=0.10 preallocation=full \
		preallocation=metadata backing_file=x,backing_fmt=raw \
		refcount_bits=8,cluster_size=128k; do
		for f in "${srcs[i % 12]}" "${srcs[(i + 3) % 12]}" \
			"${srcs[(i + 6) % 12]}" "${srcs[(i + 9) % 12]}"; do
			out=human
			[ $((i % 2)) = 0 ] && out=json
			i=$((i + 1))
			# shellcheck disable=SC2086
			ia_same "imga/measure/${o:-default}/${f// /}" measure -O qcow2 \
				${o:+-o "$o"} --output=$out $f
		done
		i=$((i + 1))
	done
	for f in a.qcow2 odd.raw "--size 1000" "--size 1G"; do
		for O in "" "-O raw"; do
			# shellcheck disable=SC2086
			ia_same "imga/measure/raw${O// /}/${f// /}" measure $O \
				--output=json $f
		done
	done
	ia_same imga/measure/both measure -O qcow2 --size 1G a.qcow2
	ia_same imga/measure/neither measure -O qcow2
	ia_same imga/measure/two-files measure -O qcow2 a.qcow2 a.raw
	ia_same imga/measure/bad-output measure --output=xml --size 1G
	ia_same imga/measure/bad-cluster measure -O qcow2 -o cluster_size=3k --size 1G
	ia_same imga/measure/bad-refcount measure -O qcow2 -o refcount_bits=3 --size 1G
	ia_same imga/measure/v2-refcount measure -O qcow2 -o compat=0.10,refcount_bits=8 --size 1G
	ia_same imga/measure/l2-small measure -O qcow2 -o extended_l2=on,cluster_size=4k --size 1G
	ia_same imga/measure/bad-prealloc measure -O qcow2 -o preallocation=bogus --size 1G
	ia_same imga/measure/bad-option measure -O qcow2 -o bogus=1 --size 1G
	ia_same imga/measure/too-large measure -O qcow2 --size 7E
	ia_same imga/measure/missing measure -O qcow2 nope.qcow2
}

ia_map_range() {
	local f r o i=0 n
	local -a ranges=("--start-offset=1M" "--start-offset=1000 --max-length=70000"
		"--start-offset=16M" "--start-offset=20M" "--max-length=0"
		"--start-offset=1k --max-length=1.5k" "--max-length=100M"
		"--start-offset=8388607 --max-length=3"
		"--start-offset=15M --max-length=2M"
		"--start-offset=4100 --max-length=1" "--start-offset=3M --max-length=0")
	# Every range on three of the images (rotating), JSON and human.
	for r in "${ranges[@]}"; do
		for f in ov2.qcow2 ovs.qcow2 x1.qcow2 pm.qcow2 c.qcow2 ovr.qcow2 \
			s512.qcow2; do
			i=$((i + 1))
			[ $((i % 7 % 3)) = 0 ] || continue
			for o in json human; do
				n="imga/map-range/$f${r// /}-$o"
				# shellcheck disable=SC2086
				ia_same "$n" map $r --output=$o "$f"
			done
		done
	done
	ia_same imga/map-range/negative map --start-offset=-1 a.qcow2
	ia_same imga/map-range/garbage map --max-length=abc a.qcow2
	ia_same imga/map-range/suffix-after-file map a.qcow2 --start-offset=1.5M --output=json
}

# Encrypted images (qemu-img makes them with a secret; iter-time kept
# short).  QEMU times its PBKDF iterations in thread CPU time; on a busy
# machine that measurement can fail ("Unable to get accurate CPU usage"),
# so that one failure is retried (up to 8 times, a second apart: on a
# loaded 2-core CI machine three tries were seen to fail in a row).
ia_enc_images() {
	local try
	for try in 1 2 3 4 5 6 7 8; do
		[ "$try" = 1 ] || sleep 1
		ia_enc_images_once && return 0
		grep -q 'Unable to get accurate CPU usage' out/ia-enc.log || return 1
		echo "# imga/info-enc: qemu-img's PBKDF timing failed (try $try), again"
	done
	return 1
}

ia_enc_images_once() {
	local k=encrypt.key-secret=s0
	local -a sec=(--object "secret,id=s0,data=xcheck")
	(
		cd ia || exit 1
		rm -f luks.qcow2 luks2.qcow2 luks3.qcow2 aes.qcow2 aes2.qcow2 onluks.qcow2
		qemu-img create -q -f qcow2 "${sec[@]}" \
			-o encrypt.format=luks,$k,encrypt.iter-time=10 luks.qcow2 16M &&
		qemu-img create -q -f qcow2 "${sec[@]}" \
			-o encrypt.format=luks,$k,encrypt.iter-time=10,encrypt.cipher-alg=twofish-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha512 \
			-b a.qcow2 -F qcow2 luks2.qcow2 &&
		qemu-img create -q -f qcow2 "${sec[@]}" \
			-o encrypt.format=luks,$k,encrypt.iter-time=10,encrypt.cipher-alg=serpent-256,encrypt.cipher-mode=xts,cluster_size=4k \
			luks3.qcow2 1M &&
		qemu-io "${sec[@]}" --image-opts -c "write -P 7 0 64k" \
			driver=qcow2,file.filename=luks.qcow2,$k &&
		qemu-img bitmap "${sec[@]}" --image-opts --add \
			driver=qcow2,file.filename=luks.qcow2,$k b0 &&
		qemu-img create -q -f qcow2 "${sec[@]}" \
			-o encrypt.format=aes,$k aes.qcow2 16M &&
		qemu-img create -q -f qcow2 "${sec[@]}" \
			-o compat=0.10,encrypt.format=aes,$k aes2.qcow2 16M &&
		qemu-img create -q -f qcow2 -b luks.qcow2 -F qcow2 onluks.qcow2
	) >out/ia-enc.log 2>&1
}

ia_info_enc() {
	local f o c
	if ! ia_enc_images; then
		t_fail "imga/info-enc: could not make the encrypted images"
		show out/ia-enc.log 4
		return
	fi
	N_IMAGES=$((N_IMAGES + 6))
	for f in luks.qcow2 luks2.qcow2 luks3.qcow2 aes.qcow2 aes2.qcow2; do
		for o in json human; do
			ia_same "imga/info-enc/$f-$o" info --output=$o "$f"
		done
		# Without the key qemu-img can only describe them.
		for c in check "check --output=json" map "map --output=json" \
			"measure -O qcow2"; do
			# shellcheck disable=SC2086
			ia_same "imga/info-enc/$f-${c// /}-refused" $c "$f"
		done
		ia_same "imga/info-enc/$f-compare-refused" compare "$f" a.qcow2
	done
	ia_same imga/info-enc/backing-chain info --backing-chain \
		--output=json onluks.qcow2
	ia_same imga/info-enc/backing-chain-human info --backing-chain \
		onluks.qcow2
	ERR_WORD=encrypted err_case info-enc-attach-refused nz attach -r \
		ia/luks.qcow2
}

# ia_prealloc_case NAME OPTS SIZE [CREATE-ARGS...]: qimgctl create and
# qemu-img create with the same options must give images with the same
# size, map and info (but the file name and the blocks the file system
# spends), and qemu-img check must find qimgctl's clean.
ia_prealloc_case() {
	local name="imga/prealloc/$1" o=$2 sz=$3 qc
	shift 3
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	N_IMAGES=$((N_IMAGES + 2))
	rm -f ia/pq.qcow2 ia/px.qcow2
	# $sz stays unquoted: empty means no size (taken from -b).
	# shellcheck disable=SC2086
	(cd ia && qemu-img create -q -f qcow2 -o "$o" "$@" pq.qcow2 $sz) \
		>out/pq.err 2>&1
	# shellcheck disable=SC2086
	(cd ia && qx ../out/px.out ../out/px.err create -q -o "$o" "$@" \
		px.qcow2 $sz; exit "$QX_RC")
	QX_RC=$?
	if crashed "$QX_RC" out/px.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/px.err 8
		return
	fi
	if [ ! -s ia/pq.qcow2 ] || [ "$QX_RC" -ne 0 ]; then
		t_fail "$name: qimgctl status $QX_RC, qemu-img made $(stat -c %s ia/pq.qcow2 2>/dev/null || echo nothing)"
		show out/px.err 2
		show out/pq.err 2
		return
	fi
	qc=$(qemu-img check ia/px.qcow2 2>&1)
	if [ "$qc" = "${qc#No errors were found}" ]; then
		t_fail "$name: qemu-img check: $(echo "$qc" | head -n 1)"
	elif [ "$(stat -c %s ia/pq.qcow2)" != "$(stat -c %s ia/px.qcow2)" ]; then
		t_fail "$name: file size $(stat -c %s ia/px.qcow2), qemu-img's $(stat -c %s ia/pq.qcow2)"
	elif ! cmp -s <(cd ia && qemu-img map --output=json pq.qcow2) \
		<(cd ia && qemu-img map --output=json px.qcow2); then
		t_fail "$name: qemu-img map differs from the qemu-img-made twin's"
	elif ! cmp -s <(cd ia && qemu-img info --output=json pq.qcow2 |
		grep -v '"filename"\|"actual-size"') \
		<(cd ia && qemu-img info --output=json px.qcow2 |
		grep -v '"filename"\|"actual-size"'); then
		t_fail "$name: qemu-img info differs from the qemu-img-made twin's"
	elif ! (cd ia && qemu-img compare -q pq.qcow2 px.qcow2); then
		t_fail "$name: qemu-img compare finds the contents different"
	else
		t_pass "$name"
	fi
}

ia_prealloc() {
	local m o sz i=0
	local -a sizes=(0 512 1000448 16M 9M)
	for m in metadata falloc full; do
		for o in "" cluster_size=4k cluster_size=512 cluster_size=2M \
			refcount_bits=1 refcount_bits=64,cluster_size=16k \
			compat=0.10 extended_l2=on cluster_size=512,refcount_bits=8 \
			cluster_size=1k,refcount_bits=64; do
			# Two sizes per option set, rotating; full writes every
			# byte, so it gets the small ones.
			for sz in "${sizes[i % 5]}" "${sizes[(i + 2) % 5]}"; do
				ia_prealloc_case "$m${o:+-$o}-$sz" \
					"preallocation=$m${o:+,$o}" "$sz"
			done
			i=$((i + 1))
		done
	done
	# Growing the refcount table several times over.
	ia_prealloc_case metadata-c512-r16-24M preallocation=metadata,cluster_size=512 24M
	# A backing file needs extended L2 entries (the subclusters stay
	# unallocated, so the backing file shows through).
	ia_prealloc_case metadata-backing-l2 preallocation=metadata,extended_l2=on \
		"" -b a.qcow2 -F qcow2
	ia_prealloc_case falloc-backing-l2 preallocation=falloc,extended_l2=on \
		"" -b a.qcow2 -F qcow2
	ia_same imga/prealloc/backing-without-l2 create -q -f qcow2 -o preallocation=metadata \
		-b a.qcow2 -F qcow2 pbad.qcow2
	ia_same imga/prealloc/bad-mode create -q -f qcow2 -o preallocation=bogus pbad.qcow2 1M
	# The "Formatting ..." line names the mode as qemu-img's does.
	ia_same imga/prealloc/formatting-line create -f qcow2 -o preallocation=metadata \
		pfmt.qcow2 1M
	rm -f ia/pfmt.qcow2
	rm -f ia/pq.qcow2 ia/px.qcow2
}

# --help of the new commands, as run's part 6 checks the others.
ia_help() {
	local c
	for c in compare measure; do
		want "imga/cli/$c-help" || continue
		N_CMP=$((N_CMP + 1))
		qx out/h.out out/h.err "$c" --help
		if [ "$QX_RC" -ne 0 ] || [ -s out/h.err ] ||
			! head -n 1 out/h.out | grep -q "^usage: qimgctl $c "; then
			t_fail "imga/cli/$c-help: status $QX_RC, $(head -n 1 out/h.out out/h.err | tr '\n' ' ' | cut -c1-120)"
		else
			t_pass "imga/cli/$c-help"
		fi
	done
}

part_imga() {
	want imga/compare/ imga/measure/ imga/map-range/ imga/info-enc/ \
		imga/prealloc/ imga/check-r/ imga/cli/ errors/info-enc || return 0
	ia_help
	if ! ia_images; then
		t_fail "imga: could not make the images"
		show out/ia.log 6
		return
	fi
	N_IMAGES=$((N_IMAGES + 21))
	ia_compare
	ia_measure
	ia_map_range
	ia_info_enc
	ia_prealloc
	ia_check_repair
}

# ia_leak IMG L2-INDEX COUNT: forget COUNT L2 entries of the first L2 table
# from L2-INDEX on, leaving their clusters referenced by nothing (leaks).
ia_leak() {
	python3 - "$@" <<'PY'
import struct, sys
path, idx, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'r+b') as f:
    d = f.read(512)
    l1 = struct.unpack('>Q', d[40:48])[0]
    f.seek(l1)
    l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2 + 8 * idx)
    f.write(b'\0' * 8 * n)
PY
}

# ia_repair_case NAME MODE QEMU-IMG-CREATE-ARGS -- QEMU-IO-WRITES -- LEAK-ARGS:
# the same leaky image repaired by qemu-img check -r MODE and by qimgctl
# check -r MODE: same status and output, same bytes, and the same space
# given back to the file system (the same holes).
ia_repair_case() {
	local name="imga/check-r/$1" mode=$2 qrc
	shift 2
	local -a cr=() io=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do cr+=("$1"); shift; done
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do io+=(-c "$1"); shift; done
	shift
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	N_IMAGES=$((N_IMAGES + 1))
	rm -f ia/lk.qcow2 ia/lkq.qcow2 ia/lkx.qcow2
	# cr: create options, the size last.
	if ! { qemu-img create -q -f qcow2 "${cr[@]:0:${#cr[@]}-1}" \
		ia/lk.qcow2 "${cr[${#cr[@]}-1]}" &&
		qemu-io -f qcow2 "${io[@]}" ia/lk.qcow2 >/dev/null &&
		ia_leak ia/lk.qcow2 "$@" &&
		cp --sparse=never ia/lk.qcow2 ia/lkq.qcow2 &&
		cp --sparse=never ia/lk.qcow2 ia/lkx.qcow2; } >out/lk.log 2>&1; then
		t_fail "$name: could not make the image"
		show out/lk.log 3
		return
	fi
	(cd ia && qemu-img check -r "$mode" lkq.qcow2 >../out/q.out 2>/dev/null)
	qrc=$?
	(cd ia && qx ../out/x.out ../out/x.err check -r "$mode" lkx.qcow2; exit "$QX_RC")
	QX_RC=$?
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$qrc" -ne "$QX_RC" ] || ! cmp -s out/q.out out/x.out; then
		t_fail "$name: status $QX_RC (qemu-img $qrc) or output differs"
		diff out/q.out out/x.out | show /dev/stdin 4
	elif ! cmp -s ia/lkq.qcow2 ia/lkx.qcow2; then
		t_fail "$name: the repaired images differ"
	elif ! cmp -s <(ia_extents ia/lkq.qcow2) <(ia_extents ia/lkx.qcow2); then
		t_fail "$name: different space given back (holes) than qemu-img"
		diff <(ia_extents ia/lkq.qcow2) <(ia_extents ia/lkx.qcow2) |
			show /dev/stdin 4
	else
		t_pass "$name"
	fi
	rm -f ia/lk.qcow2 ia/lkq.qcow2 ia/lkx.qcow2
}

# The data extents of a file (SEEK_DATA / SEEK_HOLE), one per line.
ia_extents() {
	python3 - "$1" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, off = os.fstat(fd).st_size, 0
print(size)
while off < size:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    print(d, h)
    off = h
PY
}

ia_check_repair() {
	local m
	for m in leaks all; do
		ia_repair_case "middle-$m" "$m" -o cluster_size=64k 16M -- \
			"write -P 1 0 1M" "write -P 2 4M 1M" -- 0 16
		# The leaked clusters are the last ones: the file keeps its size.
		ia_repair_case "tail-$m" "$m" -o cluster_size=64k 16M -- \
			"write -P 1 0 1M" "write -P 2 4M 1M" -- 64 16
		ia_repair_case "c4k-scattered-$m" "$m" -o cluster_size=4k 16M -- \
			"write -P 1 0 256k" "write -P 3 1M 64k" -- 3 40
	done
}
