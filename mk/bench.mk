# SPDX-License-Identifier: GPL-2.0
#
# make bench: fio in one QEMU guest, qimg against loop (raw file, direct I/O)
# and qemu-nbd on the same disk; prints a table of ratios and writes
# build/bench/result.json.  Timing, not a test: not part of `make check`.
#
# BENCH_KVER picks the guest kernel (default: the one `make module` builds
# for); BENCH_ARGS goes to tools/testing/bench/run (e.g. --quick,
# --runtime 5, --rounds 1).  The optimized qimgctl is used, never the
# sanitized one.

BENCH_KVER ?= $(KVER)
BENCH_ARGS ?=

.PHONY: bench
bench: $(B)/qimgctl
	$(MAKE) --no-print-directory modules-all KVERS=$(BENCH_KVER)
	QIMG_BUILD=$(B) $(TOP)/tools/testing/bench/run --kernel $(BENCH_KVER) \
		$(BENCH_ARGS)
