/* SPDX-License-Identifier: GPL-2.0 */
/*
 * create -o preallocation=metadata|falloc|full (see prealloc.c).
 */
#ifndef QIMGCTL_PREALLOC_H
#define QIMGCTL_PREALLOC_H

#include "qimgctl.h"

enum qimgctl_prealloc {
	QIMGCTL_PREALLOC_OFF,
	QIMGCTL_PREALLOC_METADATA,
	QIMGCTL_PREALLOC_FALLOC,
	QIMGCTL_PREALLOC_FULL,
};

/*
 * Write a new image into the empty, locked @fd of @path, laid out as
 * qemu-img create -o preallocation=@mode lays it out.  @h: the new image's
 * header (version, geometry, features, backing file; size and l1_size set);
 * the table offsets are filled in here.  Prints the reason and returns a
 * negative errno on failure (-EOPNOTSUPP: a layout this cannot plan).
 * @progress: a meter on stderr while full zero-fills (a terminal only).
 */
int qimgctl_prealloc_create(int fd, const char *path, struct qimg_header *h,
			    enum qimgctl_prealloc mode, bool progress);

#endif /* QIMGCTL_PREALLOC_H */
