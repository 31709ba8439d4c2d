# SPDX-License-Identifier: GPL-2.0
#
# Installing qimg on a real host (included by the top-level Makefile).
#
#   make install         qimgctl, qimgctl(8) and its bash completion under
#                        $(DESTDIR)$(PREFIX)  (PREFIX=/usr/local)
#   make uninstall       removes what `install` put there
#   make dkms-src        the module sources, as DKMS wants them, in
#                        $(DESTDIR)$(DKMS_SOURCETREE)/qimg-$(QIMG_VERSION)
#   make dkms-install    dkms-src, then dkms add + build + install for
#                        DKMS_KERNELS (default: the running kernel); the
#                        module is rebuilt for later kernels automatically
#   make dkms-remove     dkms remove for all kernels, and the sources
#
# DKMS_TREE and DKMS_SOURCETREE move dkms's state and sources elsewhere
# (tools/testing/dkms/run uses that); DKMS_FLAGS is passed to every dkms
# call.

.PHONY: install uninstall dkms-src dkms-install dkms-remove qimg-version

# The project's one version number lives in dkms.conf.
QIMG_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$$/\1/p' $(TOP)/dkms.conf)
ifeq ($(QIMG_VERSION),)
$(error cannot read PACKAGE_VERSION from $(TOP)/dkms.conf)
endif

PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
INSTALL ?= install

qimg-version:
	@echo $(QIMG_VERSION)

install: $(B)/qimgctl
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(BASHCOMPDIR)
	$(INSTALL) -m 0755 $(B)/qimgctl $(DESTDIR)$(SBINDIR)/qimgctl
	$(INSTALL) -m 0644 $(TOP)/Documentation/man/qimgctl.8 \
		$(DESTDIR)$(MANDIR)/man8/qimgctl.8
	$(INSTALL) -m 0644 $(TOP)/tools/completion/qimgctl \
		$(DESTDIR)$(BASHCOMPDIR)/qimgctl

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/qimgctl $(DESTDIR)$(MANDIR)/man8/qimgctl.8 \
		$(DESTDIR)$(BASHCOMPDIR)/qimgctl

# --- DKMS -------------------------------------------------------------------

DKMS ?= dkms
DKMS_SOURCETREE ?= /usr/src
DKMS_TREE ?=
DKMS_FLAGS ?=
DKMS_KERNELS ?= $(shell uname -r)
DKMS_SRC := $(DESTDIR)$(DKMS_SOURCETREE)/qimg-$(QIMG_VERSION)

# Only what kbuild needs for the module: no objects, no kbuild leftovers.
DKMS_FILES := Kbuild dkms.conf drivers/block/qimg/Kbuild \
	$(filter-out %.mod.c,$(sort $(wildcard $(addprefix drivers/block/qimg/,*.c *.h)))) \
	include/uapi/linux/qimg.h

dkms_cmd = $(DKMS) $(if $(filter-out /usr/src,$(DKMS_SOURCETREE)),--sourcetree $(DKMS_SOURCETREE)) \
	$(if $(DKMS_TREE),--dkmstree $(DKMS_TREE)) $(DKMS_FLAGS)

dkms-src:
	@rm -rf $(DKMS_SRC)
	@set -e; cd $(TOP); for f in $(DKMS_FILES); do \
		$(INSTALL) -D -m 0644 $$f $(DKMS_SRC)/$$f; \
	done
	@echo "  DKMS-SRC $(DKMS_SRC) ($(words $(DKMS_FILES)) files)"

dkms-install:
	@if [ -n "$(DESTDIR)" ]; then \
		echo "dkms-install registers the module on this machine;" \
			"with DESTDIR use 'make dkms-src' and run dkms on the target" >&2; \
		exit 1; \
	fi
	@command -v $(DKMS) >/dev/null || { \
		echo "dkms not found: apt-get install dkms" >&2; exit 1; }
	@for k in $(DKMS_KERNELS); do \
		[ -e /lib/modules/$$k/build/Makefile ] && continue; \
		echo "no kernel headers for $$k in /lib/modules/$$k/build:" \
			"apt-get install linux-headers-$$k" >&2; \
		exit 1; \
	done
	@# Re-running picks up changed sources: drop the old registration.
	@if $(dkms_cmd) status -m qimg -v $(QIMG_VERSION) 2>/dev/null | grep -q .; then \
		echo "  DKMS     remove qimg/$(QIMG_VERSION) (re-install)"; \
		$(dkms_cmd) remove -m qimg -v $(QIMG_VERSION) --all >/dev/null; \
	fi
	@$(MAKE) --no-print-directory dkms-src
	$(if $(DKMS_TREE),@mkdir -p $(DKMS_TREE))
	$(dkms_cmd) add -m qimg -v $(QIMG_VERSION)
	@set -e; for k in $(DKMS_KERNELS); do \
		echo "$(dkms_cmd) build -m qimg -v $(QIMG_VERSION) -k $$k"; \
		$(dkms_cmd) build -m qimg -v $(QIMG_VERSION) -k $$k; \
		echo "$(dkms_cmd) install -m qimg -v $(QIMG_VERSION) -k $$k"; \
		$(dkms_cmd) install -m qimg -v $(QIMG_VERSION) -k $$k; \
	done
	@echo "qimg $(QIMG_VERSION) installed with DKMS for: $(DKMS_KERNELS)"
	@echo "load it with: modprobe qimg"

dkms-remove:
	@if $(dkms_cmd) status -m qimg -v $(QIMG_VERSION) 2>/dev/null | grep -q .; then \
		echo "$(dkms_cmd) remove -m qimg -v $(QIMG_VERSION) --all"; \
		$(dkms_cmd) remove -m qimg -v $(QIMG_VERSION) --all; \
	else \
		echo "qimg/$(QIMG_VERSION) is not registered with dkms"; \
	fi
	rm -rf $(DKMS_SRC)
