/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg metadata layer: transactions with handles, in the manner of jbd2.
 *
 * Every change to image metadata (L1 and L2 entries, refcounts, the
 * refcount table, header fields, the bitmap directory) is made through a
 * handle, with dev->meta_lock held:
 *
 *	struct qimg_handle h;
 *
 *	ret = qimg_meta_start(dev, &h, credits);
 *	if (!ret)
 *		ret = qimg_meta_get_write_access(&h, cache, table);
 *	if (!ret)
 *		ret = qimg_meta_set_l2(&h, table, idx, val, 0);
 *	ret = qimg_meta_stop(&h, ret);
 *
 * qimg_meta_stop() is due also when qimg_meta_start() failed (no metadata
 * can be written any more: the handle then refuses every change).  The
 * setters get write access themselves when the caller did not.
 *
 * A handle belongs to the running transaction, which collects the changes
 * of every handle until it is written back (without a journal: the ordered
 * write-back of qimg_meta.c, see the crash model there; the journal will
 * commit the same transactions).  @credits bound the metadata blocks the
 * handle may add to the transaction: each table (L2 table, refcount block)
 * joining it costs one, the L1 table, the refcount table and the header
 * one each per handle.  Going past them is a bug in the caller: the
 * change is refused with -EIO and a warning.  Handles nest (a nested one
 * has its own credits); write-back runs only when the outermost stops,
 * never from inside a write-back.
 */
#ifndef QIMG_META_H
#define QIMG_META_H

#include "qimg.h"

/*
 * Credits of the handles the layers above start, worst cases:
 * making an L2 table writable: allocating its cluster (its refcount
 * block, or a new refcount block and the refcount table), the new table,
 * the L1 table; an allocating write adds its data cluster's refcount
 * block (or a new one; the refcount table is charged once per handle).
 */
#define QIMG_CREDITS_ALLOC_CLUSTER	2
#define QIMG_CREDITS_L2_WRITE		(QIMG_CREDITS_ALLOC_CLUSTER + 2)
#define QIMG_CREDITS_ALLOC_WRITE	(QIMG_CREDITS_L2_WRITE + \
					 QIMG_CREDITS_ALLOC_CLUSTER)
#define QIMG_CREDITS_LINK		1	/* one L2 entry set */

struct qimg_handle {
	struct qimg_device *dev;
	unsigned int credits;		/* blocks it may still add */
	unsigned int reserved;		/* given at start */
	unsigned int touched;		/* QIMG_H_* charged already */
	int err;			/* first error; qimg_meta_stop() returns it */
};

/*
 * Hooks of the layers above, called by the write-back with dev->meta_lock
 * held: after everything dirty is durable, work that had to wait for it
 * (the refcount layer's deferred frees) runs in a handle of its own; it
 * may dirty refcount blocks, which are written back right after.
 */
struct qimg_meta_ops {
	bool (*post_sync_pending)(struct qimg_device *dev);
	int (*post_sync)(struct qimg_device *dev);
	/*
	 * The journal's seal: the first data cluster at or after *@host
	 * that an allocating write reserved and has not linked yet.
	 */
	bool (*next_unlinked)(struct qimg_device *dev, u64 *host);
};

void qimg_meta_init(struct qimg_device *dev);
void qimg_meta_quiesce(struct qimg_device *dev);
void qimg_mark_corrupt(struct qimg_device *dev, const char *fmt, ...)
	__printf(2, 3);

int qimg_meta_start(struct qimg_device *dev, struct qimg_handle *h,
		    unsigned int credits);
int qimg_meta_stop(struct qimg_handle *h, int err);
int qimg_meta_get_write_access(struct qimg_handle *h, struct qimg_cache *c,
			       struct qimg_centry *e);
int qimg_meta_new_table(struct qimg_handle *h, struct qimg_cache *c,
			u64 offset, const struct qimg_centry *src,
			struct qimg_centry **out);
int qimg_meta_set_l2(struct qimg_handle *h, struct qimg_centry *e, u64 idx,
		     u64 val, u64 bitmap);
int qimg_meta_link_l2(struct qimg_handle *h, struct qimg_centry *e, u64 idx,
		      u64 val, u64 bitmap, u64 host, bool hole);
int qimg_meta_set_refcount(struct qimg_handle *h, struct qimg_centry *e,
			   u64 idx, u64 val);
int qimg_meta_set_l1(struct qimg_handle *h, u32 idx, u64 val);
int qimg_meta_set_reftable(struct qimg_handle *h, u64 idx, u64 val);
int qimg_meta_set_header(struct qimg_handle *h, u32 off, u64 val);
int qimg_meta_write_struct(struct qimg_handle *h, const void *buf,
			   size_t len, u64 off, const char *what);
int qimg_meta_switch_reftable(struct qimg_handle *h, __be64 *table,
			      u64 table_off, u32 clusters);
int qimg_meta_switch_l1(struct qimg_handle *h, __be64 *table, u64 table_off,
			u32 entries);
int qimg_meta_set_size(struct qimg_handle *h, u64 size);

int qimg_meta_writeback(struct qimg_device *dev);

#if IS_ENABLED(CONFIG_QIMG_KUNIT_DRIVER)
/*
 * KUnit only: the next metadata write whose name (a cache's name, or the
 * structure named in messages) starts with this string fails with -EIO.
 */
extern const char *qimg_meta_fail_next;
#endif
int qimg_meta_sync_failed(struct qimg_device *dev, int err);

#endif /* QIMG_META_H */
