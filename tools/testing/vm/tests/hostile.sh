# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Hostile images attached in the kernel (sourced by e2e.sh, which gives
# $W, $FILTER, $KBAD, $REPO and lib.sh): one case "hostile: NAME" per image
# of the corpus tools/testing/vm/hostile/mkhostile.py writes (--list names
# them all).  tools/testing/vm/hostile/exercise.py --batch generates each,
# attaches it through the control ioctl, read-only and read-write, reads
# and writes it and checks that no data landed on metadata, and that the
# kernel log it added has no report ($KBAD).  One process for the lot:
# under TCG a Python start costs more than most images.
#
# A hang: no progress for $QIMG_HOSTILE_TIMEOUT seconds (default 120)
# fails the image being exercised, and every one after it, without
# waiting (the stuck task cannot be killed); the blocked tasks' stacks go
# to the kernel log (sysrq w).
#
# Env: QIMG_HOSTILE_RW_ONLY=1 skips the read-only attach (the debug
# kernel's time budget).

hostile_run() {
	local dir=$REPO/tools/testing/vm/hostile hw=$W/hostile
	local to=${QIMG_HOSTILE_TIMEOUT:-120} names=() n list log pid
	local size last t0 line name why cur='' hung=''
	local opts=()

	list=$(python3 "$dir/mkhostile.py" --list | cut -f1)
	if [ -z "$list" ]; then
		t_fail "hostile: mkhostile.py --list printed nothing"
		return
	fi
	while read -r n; do
		if [ -z "$FILTER" ] || [[ "hostile: $n" =~ $FILTER ]]; then
			names+=("$n")
		fi
	done <<<"$list"
	[ ${#names[@]} -gt 0 ] || return 0
	[ "${QIMG_HOSTILE_RW_ONLY:-0}" = 1 ] && opts=(--rw-only)
	rm -rf "$hw"
	mkdir -p "$hw"
	log=$hw/log
	t0=$SECONDS
	# In the background, its output to a file: a task stuck in the
	# kernel cannot be killed, and would hold a pipe open.
	QIMG_HOSTILE_KBAD=$KBAD python3 "$dir/exercise.py" --batch "$hw" \
		"${names[@]}" "${opts[@]}" >"$log" 2>&1 &
	pid=$!
	last=$SECONDS
	size=0
	while kill -0 "$pid" 2>/dev/null; do
		n=$(stat -c %s "$log")
		if [ "$n" != "$size" ]; then
			size=$n
			last=$SECONDS
		elif [ $((SECONDS - last)) -ge "$to" ]; then
			hung=1
			echo w >/proc/sysrq-trigger 2>/dev/null
			break
		fi
		sleep 0.2
	done
	[ -n "$hung" ] || wait "$pid"
	local detail=()
	declare -A done_names=()
	while IFS= read -r line; do
		case $line in
		"START "*)
			cur=${line#START }
			detail=()
			;;
		"PASS "*)
			name=${line#PASS }
			name=${name%%:*}
			done_names[$name]=1
			t_pass "hostile: $name"
			echo "#   ${line#PASS "$name": }"
			cur=
			;;
		"FAIL "*)
			name=${line#FAIL }
			name=${name%%:*}
			why=${line#FAIL "$name": }
			done_names[$name]=1
			t_fail "hostile: $name: $why"
			printf '%s\n' "${detail[@]}" | tail -n 40 | sed 's/^/#   /'
			cur=
			;;
		*) detail+=("$line") ;;
		esac
	done <"$log"
	for n in "${names[@]}"; do
		[ -n "${done_names[$n]:-}" ] && continue
		if [ -n "$hung" ] && [ "$n" = "$cur" ]; then
			t_fail "hostile: $n: no progress for $to s (hang?)"
			printf '%s\n' "${detail[@]}" | tail -n 40 | sed 's/^/#   /'
			dmesg | tail -n 60 | sed 's/^/#   dmesg: /'
		elif [ -n "$hung" ]; then
			t_fail "hostile: $n: not run: $cur hung"
		else
			t_fail "hostile: $n: exercise.py ended before it (see the lines above)"
			tail -n 20 "$log" | sed 's/^/#   /'
		fi
	done
	echo "# hostile: ${#names[@]} images in $((SECONDS - t0)) s"
	[ -n "$hung" ] || rm -rf "$hw"
	"$QIMGCTL" detach -a >/dev/null 2>&1
}
hostile_run
