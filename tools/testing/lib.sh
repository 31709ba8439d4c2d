# shellcheck shell=bash
# Helpers shared by the test suites.  Every suite reports each case as one
# TAP-style line, "ok - NAME", "not ok - NAME: why" or, for a case that did
# not run, "ok - NAME # SKIP why", on stdout; run-all counts those lines
# (a skip as skipped, never as passed), so a case that is not printed was
# not run.

T_PASSED=0
T_FAILED=0
T_SKIPPED=0

# QIMG_T_PREFIX tags case names when a suite runs more than once (e.g. on
# two kernels).
t_pass() {
	echo "ok - ${QIMG_T_PREFIX:-}$*"
	T_PASSED=$((T_PASSED + 1))
}

t_fail() {
	echo "not ok - ${QIMG_T_PREFIX:-}$*"
	T_FAILED=$((T_FAILED + 1))
}

# t_skip NAME WHY...: the case did not run (a missing tool, a feature the
# driver refuses by design).  TAP's SKIP directive: counted apart.
t_skip() {
	local name=$1
	shift
	echo "ok - ${QIMG_T_PREFIX:-}$name # SKIP ${*:-no reason given}"
	T_SKIPPED=$((T_SKIPPED + 1))
}

# t_check NAME CMD...: run CMD, pass if it exits 0; its output is shown
# only on failure, indented, so logs stay readable.
t_check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		t_pass "$name"
	else
		t_fail "$name"
		printf '%s\n' "$out" | tail -n 30 | sed 's/^/#   /'
	fi
}

# Exit status for the end of a suite.
t_done() {
	echo "# $T_PASSED passed, $T_FAILED failed, $T_SKIPPED skipped"
	[ "$T_FAILED" -eq 0 ]
}
