/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg overlap checks: every host range the driver writes is checked
 * against the image's metadata first (QEMU's overlap-check, "cached"
 * level).  Part of the refcount layer: allocation and frees keep the map
 * of metadata clusters current.
 */
#ifndef QIMG_OVERLAP_H
#define QIMG_OVERLAP_H

#include "qimg.h"

int qimg_overlap_init(struct qimg_device *dev);
void qimg_overlap_destroy(struct qimg_device *dev);
int qimg_overlap_add(struct qimg_device *dev, u64 off, u32 kind);
void qimg_overlap_drop_l2(struct qimg_device *dev, u64 off, u32 l1i);
void qimg_overlap_move(struct qimg_device *dev, u32 kind, u64 off, u64 len);
u32 qimg_overlap_hit(struct qimg_device *dev, u64 off, u64 len, u32 ign);
int qimg_overlap_check(struct qimg_device *dev, u64 off, u64 len, u32 ign,
		       const char *what);
int qimg_overlap_check_new(struct qimg_device *dev, u64 off, u32 ign,
			   const char *what);

#endif /* QIMG_OVERLAP_H */
