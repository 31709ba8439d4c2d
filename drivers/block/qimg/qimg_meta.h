/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg metadata layer.  Every change to an L1/L2 entry, a refcount, the
 * refcount table or the header goes through these, between begin and end,
 * with dev->meta_lock held.  A group is what the journal will commit
 * atomically; today end() only enforces the cache limits, writing back in
 * dependency order when dirty entries crowd a cache.
 */
#ifndef QIMG_META_H
#define QIMG_META_H

#include "qimg.h"

/*
 * Hooks of the layers above, called by the write-back with dev->meta_lock
 * held: after everything dirty is durable, work that had to wait for it
 * (the refcount layer's deferred frees) runs; it may dirty refcount
 * blocks, which are written back right after.
 */
struct qimg_meta_ops {
	bool (*post_sync_pending)(struct qimg_device *dev);
	int (*post_sync)(struct qimg_device *dev);
};

void qimg_mark_corrupt(struct qimg_device *dev, const char *fmt, ...)
	__printf(2, 3);
void qimg_meta_begin(struct qimg_device *dev);
void qimg_meta_record_l1(struct qimg_device *dev, u32 idx, u64 val);
void qimg_meta_record_l2(struct qimg_device *dev, struct qimg_centry *e,
			 u64 idx, u64 val);
int qimg_meta_record_refcount(struct qimg_device *dev, struct qimg_centry *e,
			      u64 idx, u64 val);
void qimg_meta_record_reftable(struct qimg_device *dev, u64 idx, u64 val);
int qimg_meta_end(struct qimg_device *dev);
int qimg_meta_writeback(struct qimg_device *dev);
int qimg_meta_sync_failed(struct qimg_device *dev, int err);
int qimg_meta_header_write(struct qimg_device *dev, u32 off, u64 val);

#endif /* QIMG_META_H */
