# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# The kernel-log lines that fail a guest run, in one place: sourced by
# qimg-vm (the whole log of a guest, a guest that ends in a power cut
# too), tests/e2e.sh (the lines each case added) and crash/guest.sh (the
# log before the cut).  Reports, not banners: a debug kernel prints
# "lockdep", "KASAN" and "kmemleak" at boot when they are merely enabled.
# The message formats are those of linux 6.1 (and unchanged in 6.12):
#   Oops / BUG: ... / kernel BUG at FILE:LINE! / invalid opcode: 0000 [#1]
#   general protection fault / WARNING: CPU: ... / Kernel panic - not syncing
#   KASAN: / UBSAN: / kmemleak reports (unreferenced object)
#   lockdep: possible circular|recursive locking, inconsistent lock state,
#     suspicious RCU usage, DEBUG_LOCKS_WARN_ON
#   hung tasks: INFO: task NAME:PID blocked for more than N seconds.
#   soft lockups: watchdog: BUG: soft lockup - CPU#N stuck for Ns!
#   hard lockups: Watchdog detected hard LOCKUP on cpu N
#   RCU stalls: rcu: INFO: rcu_sched self-detected stall on CPU,
#     rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:,
#     rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: {,
#     INFO: rcu_tasks detected stalls on tasks:
# tools/testing/selftest/run feeds a fake log with each of these through
# qimg-vm and klog_scan.

QIMG_KLOG_BAD='Oops|BUG:|kernel BUG at|invalid opcode:|general protection|WARNING:|Kernel panic|KASAN:|UBSAN:|kmemleak: .*suspected|unreferenced object|possible (circular|recursive) locking|inconsistent lock state|suspicious RCU usage|DEBUG_LOCKS_WARN_ON|INFO: task .* blocked|blocked for more than [0-9]+ seconds|soft lockup|hard LOCKUP|self-detected stall|detected (expedited )?stalls on'
# Harmless lines that match the above.
QIMG_KLOG_IGNORE='kmemleak: Kernel memory leak detector initialized|kmemleak: Automatic memory scanning thread|kmemleak: Not scanning|^kmemleak-report: *$'

# klog_scan FILE [EXTRA_IGNORE_ERE]: print the bad lines of FILE as
# "LINE:TEXT"; status 0 when there are some, 1 when the log is clean.
klog_scan() {
	local ign=$QIMG_KLOG_IGNORE l found=1
	[ -n "${2:-}" ] && ign="$ign|$2"
	# A here-string, not a process substitution: the guest has no /dev/fd.
	while IFS= read -r l; do
		[ -n "$l" ] || continue
		[[ ${l#*:} =~ $ign ]] && continue
		printf '%s\n' "$l"
		found=0
	done <<<"$(grep -nE -- "$QIMG_KLOG_BAD" "$1")"
	return $found
}
