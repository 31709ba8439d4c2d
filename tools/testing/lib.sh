# shellcheck shell=bash
# Helpers shared by the test suites.  Every suite reports each case as one
# TAP-style line, "ok - NAME" or "not ok - NAME: why", on stdout; run-all
# counts those lines, so a case that is not printed was not run.

T_PASSED=0
T_FAILED=0

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
	echo "# $T_PASSED passed, $T_FAILED failed"
	[ "$T_FAILED" -eq 0 ]
}
