// SPDX-License-Identifier: GPL-2.0
/*
 * qimg metadata layer: every change to an L1/L2 entry, a refcount, the
 * refcount table or the header goes through qimg_meta_*(), between
 * qimg_meta_begin() and qimg_meta_end() with dev->meta_lock held; this
 * file writes the changes back in dependency order and owns the failure
 * state (one function records why and turns the device read-only).
 *
 * Crash model without a journal: a reference (L2 entry, L1 entry, refcount
 * table entry) reaches the disk only after what it points to, including the
 * refcount that accounts for it, is durable.  A crash can therefore leak
 * clusters (refcount higher than the references: qemu-img check -r leaks)
 * but never leave a reference to an unaccounted or unwritten cluster.
 * Refcount decrements (a shared cluster replaced by copy-on-write) are
 * applied only after the references replacing it are durable, and written
 * after a sync: a crash in between leaks the cluster, nothing worse.  The
 * refcount layer applies them from the post-sync hook it registered
 * (struct qimg_meta_ops), so this layer never calls up into it.
 * An allocating write reserves its cluster (refcount) in one group, writes
 * the data without dev->meta_lock and records the L2 entry in a second
 * group, so a write-back in between can only make the reservation durable
 * (a leak).  Discard and write zeroes release clusters through the same
 * deferred decrements.  Growing the refcount table writes the new table
 * and its refcount blocks and syncs them before the header points at them.
 */
#include <linux/blkdev.h>
#include <linux/ratelimit.h>
#include <linux/slab.h>

#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"

/*
 * The one failure path.  @bit says why writing must stop:
 * QIMG_STATE_CORRUPT, metadata was found inconsistent (acknowledged
 * writes are still written back, see qimg_flush()); QIMG_STATE_WB_FAILED,
 * metadata could not be written (nothing more will be).  The device turns
 * read-only and the reason is logged once per reason.  Returns true when
 * this call set @bit on a device attached read-write.
 */
static bool qimg_meta_fail(struct qimg_device *dev, int bit, const char *why,
			   int err)
{
	if (test_and_set_bit(bit, &dev->state))
		return false;
	WRITE_ONCE(dev->read_only, true);
	if (dev->disk)
		set_disk_ro(dev->disk, true);
	qimg_dev_err(dev, "%s (error %d); device is now read-only, detach and check the image\n",
		     why, err);
	return dev->writable;
}

void qimg_mark_corrupt(struct qimg_device *dev, const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	pr_err_ratelimited("qimg%d: corrupt metadata: %pV\n", dev->index, &vaf);
	va_end(args);

	if (!qimg_meta_fail(dev, QIMG_STATE_CORRUPT, "corrupt metadata",
			    -EUCLEAN) || dev->top.h->version < 3)
		return;
	/* Tell every later user, as QEMU does; best effort. */
	if (qimg_meta_header_write(dev, QIMG_HDR_INCOMPAT_OFFSET,
				   dev->top.h->incompatible_features |
				   QIMG_INCOMPAT_CORRUPT))
		qimg_dev_err(dev, "could not set the corrupt bit\n");
}

void qimg_meta_begin(struct qimg_device *dev)
{
	lockdep_assert_held(&dev->meta_lock);
	dev->meta_depth++;
}

void qimg_meta_record_l1(struct qimg_device *dev, u32 idx, u64 val)
{
	struct qimg_image *img = &dev->top;

	lockdep_assert_held(&dev->meta_lock);
	/* Nothing can be written any more: keep the disk's view. */
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return;
	WRITE_ONCE(img->l1[idx], cpu_to_be64(val));
	if (img->l1_dirty_lo >= img->l1_dirty_hi) {
		img->l1_dirty_lo = idx;
		img->l1_dirty_hi = idx + 1;
	} else {
		img->l1_dirty_lo = min(img->l1_dirty_lo, idx);
		img->l1_dirty_hi = max(img->l1_dirty_hi, idx + 1);
	}
}

void qimg_meta_record_l2(struct qimg_device *dev, struct qimg_centry *e,
			 u64 idx, u64 val)
{
	__be64 *t = e->data;

	lockdep_assert_held(&dev->meta_lock);
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return;
	WRITE_ONCE(t[idx], cpu_to_be64(val));
	qimg_cache_mark_dirty(&dev->top.l2, e);
}

int qimg_meta_record_refcount(struct qimg_device *dev, struct qimg_centry *e,
			      u64 idx, u64 val)
{
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	ret = qimg_refcount_set(e->data, dev->top.g->refcount_order, idx, val);
	if (ret)
		return ret;
	qimg_cache_mark_dirty(&dev->rc, e);
	return 0;
}

void qimg_meta_record_reftable(struct qimg_device *dev, u64 idx, u64 val)
{
	lockdep_assert_held(&dev->meta_lock);
	WRITE_ONCE(dev->reftable[idx], cpu_to_be64(val));
	if (dev->rt_dirty_lo >= dev->rt_dirty_hi) {
		dev->rt_dirty_lo = idx;
		dev->rt_dirty_hi = idx + 1;
	} else {
		dev->rt_dirty_lo = min(dev->rt_dirty_lo, idx);
		dev->rt_dirty_hi = max(dev->rt_dirty_hi, idx + 1);
	}
}

int qimg_meta_end(struct qimg_device *dev)
{
	int ret = 0;

	lockdep_assert_held(&dev->meta_lock);
	if (WARN_ON_ONCE(!dev->meta_depth))
		return -EIO;
	if (--dev->meta_depth)
		return 0;
	/* A mutation whose metadata can never be written has failed. */
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return -EIO;
	/* Dirty entries cannot be evicted: write back when they crowd out. */
	if ((dev->top.l2.nr > dev->top.l2.max && dev->top.l2.nr_dirty) ||
	    (dev->rc.nr > dev->rc.max && dev->rc.nr_dirty))
		ret = qimg_meta_writeback(dev);
	return ret;
}

/*
 * A metadata write or sync failed.  What reached the disk is unknown: a
 * failed write-back may have dropped pages that our entries now call
 * clean, and the next fsync reports success because this one consumed the
 * error.  Writing on could put references on disk to clusters whose
 * refcounts never got there, so stop writing for good, as jbd2 aborts its
 * journal: the device turns read-only and every later write-back fails.
 * The image stays as the last successful sync left it (at worst leaks).
 */
static int qimg_meta_abort(struct qimg_device *dev, int err, const char *what)
{
	char why[64];

	snprintf(why, sizeof(why), "metadata write-back failed (%s)", what);
	qimg_meta_fail(dev, QIMG_STATE_WB_FAILED, why, err);
	return err;
}

static int qimg_meta_sync(struct qimg_device *dev)
{
	int ret = vfs_fsync(dev->top.file, 0);

	return ret ? qimg_meta_abort(dev, ret, "fsync") : 0;
}

/* Write back one cache; a failure ends all writing (qimg_meta_abort). */
static int qimg_meta_wb_cache(struct qimg_device *dev, struct qimg_cache *c)
{
	int ret = qimg_cache_writeback(c);

	return ret < 0 ? qimg_meta_abort(dev, ret, c->name) : ret;
}

static int qimg_meta_kwrite(struct qimg_device *dev, const void *buf,
			    size_t len, u64 pos, const char *what)
{
	int ret = qimg_kwrite(dev->top.file, buf, len, pos);

	return ret ? qimg_meta_abort(dev, ret, what) : 0;
}

/*
 * After write-back failed for good, make the tables in memory show what
 * the disk holds.  A dirty L2 entry may point at a cluster whose data went
 * to the page cache (copy-on-write is buffered) and was lost with the
 * failed sync: reads through it would return whatever that host cluster
 * held before, data that was never written to this guest offset.  The
 * disk's tables date from the last successful sync, and so does the data
 * they point at.  Copied per entry, so lockless readers see either value.
 */
static void qimg_meta_revert(struct qimg_device *dev)
{
	struct qimg_image *img = &dev->top;
	struct qimg_cache *c = &img->l2;
	u32 lo = img->l1_dirty_lo, hi = img->l1_dirty_hi;
	struct qimg_centry *e, *tmp;
	size_t i, len = c->entry_size;
	bool stale = false;
	LIST_HEAD(todo);
	__be64 *buf;

	if (lo >= hi && !c->nr_dirty)
		return;
	if (lo < hi)
		len = max_t(size_t, len, (size_t)(hi - lo) * 8);
	buf = kvmalloc(len, GFP_KERNEL);
	if (lo < hi) {
		if (buf && !qimg_kread(img->file, buf, (size_t)(hi - lo) * 8,
				       img->h->l1_table_offset + (u64)lo * 8)) {
			for (i = 0; i < hi - lo; i++)
				WRITE_ONCE(img->l1[lo + i], buf[i]);
		} else {
			stale = true;
		}
		img->l1_dirty_lo = 0;
		img->l1_dirty_hi = 0;
	}
	spin_lock(&c->lock);
	list_splice_init(&c->dirty, &todo);
	spin_unlock(&c->lock);
	list_for_each_entry_safe(e, tmp, &todo, dnode) {
		__be64 *t = e->data;

		if (buf && !qimg_kread(img->file, buf, c->entry_size,
				       e->offset)) {
			for (i = 0; i < c->entry_size / 8; i++)
				WRITE_ONCE(t[i], buf[i]);
		} else {
			stale = true;
		}
		spin_lock(&c->lock);
		list_del_init(&e->dnode);
		e->dirty = false;
		c->nr_dirty--;
		spin_unlock(&c->lock);
	}
	kvfree(buf);
	if (stale)
		pr_err("qimg%d: could not reread the mapping from disk; reads of recently written clusters may return stale data\n",
		       dev->index);
}

/*
 * Write back all dirty metadata in dependency order; see the crash model at
 * the top of this file.  The final fsync is the caller's (flush) business.
 */
static int qimg_meta_writeback_locked(struct qimg_device *dev)
{
	struct qimg_image *img = &dev->top;
	bool pending = false;	/* something written but not yet synced */
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	/* Dirty metadata that can no longer be written: never a success. */
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return qimg_meta_abort(dev, -EIO, "after an earlier failure");
	/* Turned read-only by corruption: acknowledged writes still go. */
	if (!dev->writable)
		return 0;

	ret = qimg_meta_wb_cache(dev, &dev->rc);
	if (ret < 0)
		return ret;
	pending = ret > 0;

	if (dev->rt_dirty_lo < dev->rt_dirty_hi) {
		u64 lo = dev->rt_dirty_lo, hi = dev->rt_dirty_hi;

		if (pending) {
			ret = qimg_meta_sync(dev);
			if (ret)
				return ret;
		}
		ret = qimg_meta_kwrite(dev, &dev->reftable[lo], (hi - lo) * 8,
				       img->h->refcount_table_offset + lo * 8,
				       "refcount table");
		if (ret)
			return ret;
		dev->rt_dirty_lo = 0;
		dev->rt_dirty_hi = 0;
		pending = true;
	}

	/*
	 * New data clusters were written before their L2 entries were set,
	 * but only this sync makes them durable ahead of the entries.
	 */
	if (img->l2.nr_dirty || img->l1_dirty_lo < img->l1_dirty_hi) {
		ret = qimg_meta_sync(dev);
		if (ret)
			return ret;
		pending = false;
	}
	ret = qimg_meta_wb_cache(dev, &img->l2);
	if (ret < 0)
		return ret;
	pending = ret > 0;

	if (img->l1_dirty_lo < img->l1_dirty_hi) {
		u32 lo = img->l1_dirty_lo, hi = img->l1_dirty_hi;

		if (pending) {
			ret = qimg_meta_sync(dev);
			if (ret)
				return ret;
		}
		ret = qimg_meta_kwrite(dev, &img->l1[lo], (size_t)(hi - lo) * 8,
				       img->h->l1_table_offset + (u64)lo * 8,
				       "L1 table");
		if (ret)
			return ret;
		img->l1_dirty_lo = 0;
		img->l1_dirty_hi = 0;
		pending = true;
	}

	if (dev->meta_ops && dev->meta_ops->post_sync_pending(dev)) {
		if (pending) {
			ret = qimg_meta_sync(dev);
			if (ret)
				return ret;
		}
		ret = dev->meta_ops->post_sync(dev);
		if (ret)
			return ret;
		ret = qimg_meta_wb_cache(dev, &dev->rc);
		if (ret < 0)
			return ret;
	}
	qimg_cache_trim(&dev->rc);
	qimg_cache_trim(&img->l2);
	return 0;
}

int qimg_meta_writeback(struct qimg_device *dev)
{
	int ret = qimg_meta_writeback_locked(dev);

	if (ret && test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		qimg_meta_revert(dev);
	return ret;
}

/* The caller's own fsync of the image failed (dev->meta_lock held). */
int qimg_meta_sync_failed(struct qimg_device *dev, int err)
{
	lockdep_assert_held(&dev->meta_lock);
	qimg_meta_abort(dev, err, "fsync");
	qimg_meta_revert(dev);
	return err;
}

/* Patch one big-endian 64-bit header field in place and make it durable. */
int qimg_meta_header_write(struct qimg_device *dev, u32 off, u64 val)
{
	__be64 v = cpu_to_be64(val);
	int ret;

	ret = qimg_meta_kwrite(dev, &v, sizeof(v), off, "header");
	if (ret)
		return ret;
	return qimg_meta_sync(dev);
}
