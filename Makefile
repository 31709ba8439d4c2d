# SPDX-License-Identifier: GPL-2.0
#
# qimg top-level Makefile.
#   make            userspace tools + kernel module
#   make check      install missing packages, build, run every test suite
#   make module     qimg.ko against KDIR (Debian headers by default)
#   make fuzz       run the parser fuzzer for longer (FUZZ_SECONDS)
#   make demo       boot a guest, attach an image, mkfs + mount it

SHELL := /bin/bash
TOP := $(CURDIR)
B := $(TOP)/build

# Kernels whose headers are installed, not the running one: builds happen
# on machines whose own kernel cannot load modules.  The default is
# Debian 12's 6.1 LTS; `modules-all` builds for every installed kernel.
KVERS := $(shell for d in /lib/modules/*/build; do [ -d "$$d" ] && \
	basename "$$(dirname "$$d")"; done 2>/dev/null | sort -V)
KVER ?= $(firstword $(filter 6.1.%,$(KVERS)) $(lastword $(KVERS)))
KDIR ?= /lib/modules/$(KVER)/build

CC ?= gcc
CLANG ?= clang
# -Werror for every module build started from here (see drivers/block/qimg/Kbuild).
export QIMG_WERROR := y
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2
INC := -I$(TOP)/tools/include -I$(TOP)/drivers/block/qimg \
	-I$(TOP)/include/uapi -I$(TOP)/tools/qimgctl
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(WARN) $(INC)
CFLAGS ?= -O2
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
LIBS := $(shell pkg-config --libs json-c 2>/dev/null || echo -ljson-c) -lz -lzstd -lm
JSONC_CFLAGS := $(shell pkg-config --cflags json-c 2>/dev/null)

# The project's one version number lives in dkms.conf (see mk/install.mk).
QIMG_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$$/\1/p' $(TOP)/dkms.conf)
QIMGCTL_DEFS := -DQIMGCTL_VERSION='"$(QIMG_VERSION)"'

FMT_SRC := drivers/block/qimg/qimg_fmt.c drivers/block/qimg/qimg_journal_fmt.c
FMT_SRC += drivers/block/qimg/qimg_qed.c
QIMGCTL_SRC := $(wildcard tools/qimgctl/*.c) $(FMT_SRC)
QIMGCTL_HDR := $(wildcard tools/qimgctl/*.h) drivers/block/qimg/qimg_fmt.h drivers/block/qimg/qimg_journal_fmt.h dkms.conf \
	tools/include/qimg_shim.h $(wildcard include/uapi/linux/*.h)
QIMGCTL_HDR += drivers/block/qimg/qimg_qed.h
UNIT_SRC := $(wildcard tools/testing/unit/*.c)
UNIT_HDR := $(wildcard tools/testing/unit/*.h)

FUZZ_SECONDS ?= 600
export QIMG_FUZZ_SECONDS ?= 60
# Guest time is the scarce resource in make check (TCG): two power cuts
# (a sysrq-b reset, then QEMU killed from the host) and 50 crash states
# each of two journaled images replayed from the write log (see
# tools/testing/crash/run): kind js, a 128 KiB journal whose transactions
# are committed in parts, under an inner ext4 that discards, and kind
# jgrow, an image grown online (L1 table and refcount table moved) while
# the file workload runs (the power cuts cover j64); `make crash-soak`
# runs the long version (j64, and grow without the journal).
export QIMG_CRASH_ITERS ?= 2
export QIMG_CRASH_REPLAY_POINTS ?= 50
export QIMG_CRASH_REPLAY_KIND ?= js jgrow

.PHONY: all tools module modules-all kunit debug-kernel check-debug deps check check-build fuzz kunit demo clean crash-soak check-full

all: tools module

tools: $(B)/qimgctl

$(B)/qimgctl: $(QIMGCTL_SRC) $(QIMGCTL_HDR)
	@mkdir -p $(B)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) $(JSONC_CFLAGS) $(QIMGCTL_DEFS) -o $@ $(QIMGCTL_SRC) $(LIBS)

# Everything the tests run is built with ASan + UBSan.
$(B)/san/qimgctl: $(QIMGCTL_SRC) $(QIMGCTL_HDR)
	@mkdir -p $(B)/san
	$(CC) $(BASE_CFLAGS) -O1 $(SAN) $(JSONC_CFLAGS) $(QIMGCTL_DEFS) -o $@ $(QIMGCTL_SRC) $(LIBS)

# xcheck's lock holder: qimgctl's lock module alone, held until stdin closes.
$(B)/san/qimg-lockhold: tools/testing/xcheck/lockhold.c tools/qimgctl/lock.c $(QIMGCTL_HDR)
	@mkdir -p $(B)/san
	$(CC) $(BASE_CFLAGS) -O1 $(SAN) -o $@ tools/testing/xcheck/lockhold.c tools/qimgctl/lock.c

$(B)/san/test_fmt: $(UNIT_SRC) $(UNIT_HDR) $(FMT_SRC) $(QIMGCTL_HDR)
	@mkdir -p $(B)/san
	$(CC) $(BASE_CFLAGS) -O1 $(SAN) -o $@ $(UNIT_SRC) $(FMT_SRC) -lcmocka

$(B)/fuzz/fuzz_header: tools/testing/fuzz/fuzz_header.c $(FMT_SRC) $(QIMGCTL_HDR)
	@mkdir -p $(B)/fuzz
	$(CLANG) -std=c11 -D_GNU_SOURCE -g -O1 $(INC) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-o $@ tools/testing/fuzz/fuzz_header.c $(FMT_SRC)

$(B)/fuzz/fuzz_journal: tools/testing/fuzz/fuzz_journal.c tools/testing/unit/qimg_jrnl_vectors.h $(FMT_SRC) $(QIMGCTL_HDR)
	@mkdir -p $(B)/fuzz
	$(CLANG) -std=c11 -D_GNU_SOURCE -g -O1 $(INC) -I$(TOP)/tools/testing/unit \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-o $@ tools/testing/fuzz/fuzz_journal.c $(FMT_SRC)

module:
	$(MAKE) -C $(KDIR) M=$(TOP) modules

# `make build/qimgctl` and friends, relative to the top directory.
build/%: $(B)/% ;

# One out-of-tree build per installed kernel, each in its own copy of the
# module sources (kbuild writes objects next to them).
KMOD_SRC := Kbuild $(filter-out %.mod.c,$(wildcard drivers/block/qimg/*.[ch])) drivers/block/qimg/Kbuild $(wildcard include/uapi/linux/*.h)
modules-all:
	@set -e; for v in $(KVERS); do \
		d=$(B)/kmod/$$v; mkdir -p $$d; \
		rsync -a --relative $(KMOD_SRC) $$d/; \
		echo "  MODULE  $$v"; \
		$(MAKE) -s -C /lib/modules/$$v/build M=$$d modules; \
	done

deps:
	@bash tools/testing/install-deps.sh

check-build: $(B)/qimgctl $(B)/san/qimgctl $(B)/san/qimg-lockhold $(B)/san/test_fmt $(B)/fuzz/fuzz_header modules-all
check-build: $(B)/fuzz/fuzz_journal

SUITES := tools/testing/selftest/run \
	tools/testing/unit/run \
	tools/testing/lint/run \
	tools/testing/fuzz/run \
	tools/testing/fuzz/run-journal \
	tools/testing/xcheck/run \
	tools/testing/vm/run-tests \
	tools/testing/vm/run-tests-debug \
	tools/testing/kunit/run \
	$(wildcard tools/testing/crash/run) \
	$(wildcard tools/testing/dkms/run)

check: deps
	@$(MAKE) --no-print-directory check-build
	@QIMGCTL=$(B)/san/qimgctl QIMG_BUILD=$(B) KVER=$(KVER) KDIR=$(KDIR) \
		QIMG_PREBUILD=tools/testing/prebuild tools/testing/run-all $(SUITES)

# The guest suite's smoke subset (and its fault-injection cases) on the
# KASAN/lockdep/kmemleak debug kernel alone; `check` runs it too.  The
# first run builds that kernel (slim config, ~1/3 of a defconfig build) and
# caches it; QIMG_DEBUG_E2E_FILTER='' runs every case.
check-debug: deps
	@$(MAKE) --no-print-directory check-build
	@QIMGCTL=$(B)/san/qimgctl QIMG_BUILD=$(B) \
		tools/testing/run-all tools/testing/vm/run-tests-debug

# What make check leaves out for time: the whole guest matrix on every
# kernel (QIMG_E2E_FULL=1 cases included) and every case on the debug kernel.
check-full: deps
	@$(MAKE) --no-print-directory check-build
	@QIMGCTL=$(B)/san/qimgctl QIMG_BUILD=$(B) QIMG_E2E_FULL=1 QIMG_E2E_SMOKE=. \
		QIMG_DEBUG_E2E_FILTER= tools/testing/run-all \
		tools/testing/vm/run-tests tools/testing/vm/run-tests-debug

# The power-cut suite at length: every kind several times (sysrq-b and
# QEMU kills in turn), and the dm-log-writes replay of the journaled kind
# and of the online grow without the journal at 1000 crash points each
# (every FLUSH/FUA entry of a somewhat longer workload, the rest at
# random; two hours or more under TCG).
crash-soak: deps
	@$(MAKE) --no-print-directory check-build
	@QIMGCTL=$(B)/san/qimgctl QIMG_BUILD=$(B) QIMG_CRASH_ITERS=$${QIMG_SOAK_ITERS:-12} \
		QIMG_CRASH_REPLAY_POINTS=$${QIMG_SOAK_POINTS:-1000} QIMG_CRASH_REPLAY_KIND='j64 grow' \
		QIMG_CRASH_REPLAY_GENS=$${QIMG_SOAK_GENS:-14} QIMG_CRASH_REPLAY_OPS=$${QIMG_SOAK_OPS:-60} \
		tools/testing/run-all tools/testing/crash/run

# KUnit on UML with KASAN + lockdep, in the cached linux-source-6.1 tree.
kunit:
	@tools/testing/kunit/run

# x86_64 guest kernel with KASAN, lockdep, kmemleak, fault injection (cached).
debug-kernel:
	@tools/testing/kernel/build-debug-kernel

fuzz: $(B)/fuzz/fuzz_header
	QIMG_FUZZ_SECONDS=$(FUZZ_SECONDS) QIMG_BUILD=$(B) tools/testing/fuzz/run

clean:
	rm -rf $(B)
	-$(MAKE) -C $(KDIR) M=$(TOP) clean 2>/dev/null

# Fragments owned by sub-areas (install/DKMS, KUnit, demo, bench).
include $(sort $(wildcard mk/*.mk))
