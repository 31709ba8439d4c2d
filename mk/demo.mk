# SPDX-License-Identifier: GPL-2.0
#
# make demo: build qimgctl and qimg.ko, boot a throw-away QEMU guest on
# $(KVER) and run tools/testing/vm/demo.sh in it (create an image, attach
# it, mkfs.ext4 + mount + copy files, detach, qemu-img check).  The exit
# status is the demo's: a failing step fails `make demo`.
#
# DEMO_KVER picks the guest kernel (default: the one `make module` builds
# for); DEMO_ARGS is passed to qimg-vm (e.g. --verbose).

DEMO_KVER ?= $(KVER)
DEMO_ARGS ?=

demo: $(B)/qimgctl
	@if [ ! -f /boot/vmlinuz-$(DEMO_KVER) ]; then \
		echo "demo: no /boot/vmlinuz-$(DEMO_KVER) to boot (make deps)" >&2; \
		exit 1; \
	fi
	$(MAKE) --no-print-directory module KVER=$(DEMO_KVER) \
		KDIR=/lib/modules/$(DEMO_KVER)/build
	QIMGCTL=$(B)/qimgctl $(TOP)/tools/testing/vm/qimg-vm run \
		--kernel $(DEMO_KVER) --module $(TOP)/drivers/block/qimg/qimg.ko \
		--scratch-size 2G $(DEMO_ARGS) -- $(TOP)/tools/testing/vm/demo.sh
