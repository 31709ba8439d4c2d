# SPDX-License-Identifier: GPL-2.0
#
# make bench: fio in one QEMU guest, qimg (journal off and on) against loop
# (raw file, direct I/O), qemu-nbd and fio on the raw file, all on the same
# scratch disk; writes build/bench/result.{json,md} and PNG plots (gnuplot).
# Timing, not a test: not part of `make check`.  Under TCG only the ratios
# mean anything.
#
# BENCH_KVER picks the guest kernel (default: the one `make module` builds
# for); BENCH_ARGS goes to tools/testing/bench/run (e.g. --quick,
# --runtime 5, --rounds 1, --publish to copy result.md to
# Documentation/block/qimg-bench.md); QIMG_BENCH_* variables in the
# environment size it (see tools/testing/bench/run).  The optimized qimgctl is used, never the
# sanitized one.

BENCH_KVER ?= $(KVER)
BENCH_ARGS ?=

.PHONY: bench
bench: $(B)/qimgctl
	$(MAKE) --no-print-directory modules-all KVERS=$(BENCH_KVER)
	QIMG_BUILD=$(B) $(TOP)/tools/testing/bench/run --kernel $(BENCH_KVER) \
		$(BENCH_ARGS)
