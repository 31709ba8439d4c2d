// SPDX-License-Identifier: GPL-2.0
/*
 * qimg metadata layer: every change to an L1/L2 entry, a refcount, the
 * refcount table, a header field or the bitmap directory is made through
 * a handle of the running transaction (qimg_meta_start() ...
 * qimg_meta_stop(), see qimg_meta.h) with dev->meta_lock held; this file
 * writes the transactions back in dependency order and owns the failure
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
 * and its refcount blocks and syncs them before the header points at them
 * (qimg_meta_switch_reftable()).  Header fields and the bitmap directory
 * are written in place and synced at once: they are roots, nothing
 * written later depends on them being ordered after it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blkdev.h>
#include <linux/ratelimit.h>
#include <linux/slab.h>

#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_journal.h"

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

/*
 * Set the corrupt bit in the header, as QEMU does, so that every later
 * user learns of it; best effort.  A work item, because corruption is
 * found by readers too, which run without dev->meta_lock and must not
 * wait for it.
 */
static void qimg_meta_corrupt_work(struct work_struct *work)
{
	struct qimg_device *dev = container_of(work, struct qimg_device,
					       corrupt_work);
	unsigned int pflags = qimg_writer_begin();
	struct qimg_handle h;
	int ret;

	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_start(dev, &h, 1);
	if (!ret)
		ret = qimg_meta_set_header(&h, QIMG_HDR_INCOMPAT_OFFSET,
					   dev->top.h->incompatible_features |
					   QIMG_INCOMPAT_CORRUPT);
	ret = qimg_meta_stop(&h, ret);
	if (!ret)
		dev->top.h->incompatible_features |= QIMG_INCOMPAT_CORRUPT;
	mutex_unlock(&dev->meta_lock);
	qimg_writer_end(pflags);
	if (ret)
		qimg_dev_err(dev, "could not set the corrupt bit (error %d)\n",
			     ret);
}

/**
 * qimg_meta_init() - set up a device's metadata layer
 * @dev: the device, not yet visible to anybody
 *
 * The first transaction and the work item that sets the corrupt bit.
 *
 * Context: attach (qimg_device_alloc()), before the device is set up; no
 * lock needed.
 */
void qimg_meta_init(struct qimg_device *dev)
{
	dev->meta_tid = 1;
	INIT_WORK(&dev->corrupt_work, qimg_meta_corrupt_work);
}

/**
 * qimg_meta_quiesce() - wait for pending metadata work of a device
 * @dev: the device
 *
 * Waits for the work item that sets the corrupt bit in the header.  Due
 * before the final flush and before the image files are released.
 *
 * Context: process context, sleeps; dev->meta_lock not held (the work
 * item takes it).
 */
void qimg_meta_quiesce(struct qimg_device *dev)
{
	flush_work(&dev->corrupt_work);
}

/**
 * qimg_mark_corrupt() - report corrupt metadata; the device turns read-only
 * @dev: the device
 * @fmt: printf format of what is wrong (no newline)
 *
 * Logs the message (rate limited).  The first report turns the device and
 * its disk read-only (writes already acknowledged are still written back,
 * see qimg_flush()) and, for a v3 image attached read-write, schedules
 * setting the corrupt bit in the header, as QEMU does, from a work item:
 * readers find corruption too, without dev->meta_lock, and must not wait
 * for it.
 *
 * Context: process context, may sleep (the first report changes the
 * disk's read-only state); dev->meta_lock may or may not be held.
 */
void qimg_mark_corrupt(struct qimg_device *dev, const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	qimg_dev_err_ratelimited(dev, "corrupt metadata: %pV\n", &vaf);
	va_end(args);

	if (qimg_meta_fail(dev, QIMG_STATE_CORRUPT, "corrupt metadata",
			   -EUCLEAN) && dev->top.h->version >= 3)
		schedule_work(&dev->corrupt_work);
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */

/* What a handle was charged for already (struct qimg_handle.touched). */
#define QIMG_H_L1		BIT(0)
#define QIMG_H_REFTABLE		BIT(1)
#define QIMG_H_HEADER		BIT(2)

/**
 * qimg_meta_start() - start a handle in the running transaction
 * @dev: the device
 * @h: the handle, on the caller's stack
 * @credits: metadata blocks the handle may add to the transaction
 *
 * Context: dev->meta_lock held, does not sleep.  Always pair with
 * qimg_meta_stop(), also when this fails.
 * Return: 0, or -EIO when no metadata can be written any more (the
 * handle then refuses every change).
 */
int qimg_meta_start(struct qimg_device *dev, struct qimg_handle *h,
		    unsigned int credits)
{
	lockdep_assert_held(&dev->meta_lock);
	*h = (struct qimg_handle) {
		.dev = dev,
		.credits = credits,
		.reserved = credits,
	};
	dev->meta_depth++;
	dev->meta_reserved += credits;
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		h->err = -EIO;
	return h->err;
}

/* Can @h still change metadata?  0 or the error that stops it. */
static int qimg_h_check(struct qimg_handle *h)
{
	if (!h->err && test_bit(QIMG_STATE_WB_FAILED, &h->dev->state))
		h->err = -EIO;	/* nothing will be written: keep the disk's view */
	return h->err;
}

static int qimg_h_charge(struct qimg_handle *h, const char *what)
{
	if (WARN_ON_ONCE(!h->credits)) {
		qimg_dev_err(h->dev, "metadata handle out of credits (%u) at %s\n",
			     h->reserved, what);
		h->err = -EIO;
		return h->err;
	}
	h->credits--;
	return 0;
}

/* Charge once per handle for one of the QIMG_H_* structures. */
static int qimg_h_touch(struct qimg_handle *h, unsigned int bit,
			const char *what)
{
	int ret = qimg_h_check(h);

	if (ret || (h->touched & bit))
		return ret;
	ret = qimg_h_charge(h, what);
	if (!ret)
		h->touched |= bit;
	return ret;
}

/**
 * qimg_meta_stop() - end a handle
 * @h: a handle begun by qimg_meta_start()
 * @err: the caller's own result
 *
 * Changes made through @h stay in the running transaction whatever @err
 * says: callers order their steps so that each leaves the metadata
 * consistent (at worst a leak).  The outermost handle writes back when
 * dirty tables crowd a cache (they cannot be evicted), unless it runs
 * inside a write-back.
 *
 * Context: dev->meta_lock held; may sleep (the outermost handle may write
 * back).
 * Return: @err if set, else the handle's error, else -EIO once write-back
 * has failed for good (for the outermost handle), else the write-back's
 * result.  -EIO also for a handle stopped twice.
 */
int qimg_meta_stop(struct qimg_handle *h, int err)
{
	struct qimg_device *dev = h->dev;
	int ret = err ? err : h->err;

	lockdep_assert_held(&dev->meta_lock);
	if (WARN_ON_ONCE(!dev->meta_depth))
		return -EIO;
	dev->meta_reserved -= h->reserved;
	if (--dev->meta_depth || dev->meta_wb_running)
		return ret;
	/* A mutation whose metadata can never be written has failed. */
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return ret ? ret : -EIO;
	if ((dev->top.l2.nr > dev->top.l2.max && dev->top.l2.nr_dirty) ||
	    (dev->rc.nr > dev->rc.max && dev->rc.nr_dirty)) {
		int wb = qimg_meta_writeback(dev);

		if (!ret)
			ret = wb;
	}
	qimg_journal_kick(dev);
	return ret;
}

/**
 * qimg_meta_get_write_access() - declare that @h will change a cached table
 * @h: the handle
 * @c: the cache holding @e (L2 tables or refcount blocks)
 * @e: a referenced entry of @c
 *
 * The table joins the running transaction, at the cost of one credit the
 * first time.  (With the journal, this is where a table being committed
 * would be copied first.)
 *
 * Context: dev->meta_lock held, does not sleep.
 * Return: 0 or the handle's error.
 */
int qimg_meta_get_write_access(struct qimg_handle *h, struct qimg_cache *c,
			       struct qimg_centry *e)
{
	struct qimg_device *dev = h->dev;
	int ret = qimg_h_check(h);

	lockdep_assert_held(&dev->meta_lock);
	if (ret || e->tid == dev->meta_tid)
		return ret;
	ret = qimg_h_charge(h, c->name);
	if (!ret)
		e->tid = dev->meta_tid;
	return ret;
}

/**
 * qimg_meta_new_table() - a table in a newly allocated cluster
 * @h: the handle
 * @c: the cache the table goes into
 * @offset: its host offset (allocated and checked by the caller)
 * @src: a table to copy (an L2 table shared with a snapshot), or NULL for
 *       an empty one
 * @out: the new entry, referenced (qimg_cache_put() it)
 *
 * The whole table is dirty: it is written before anything that points at
 * it (see the crash model).
 *
 * Context: dev->meta_lock held; may sleep (allocation; takes the cache's
 * load_mutex and lock).
 * Return: 0 or a negative errno (nothing changed).
 */
int qimg_meta_new_table(struct qimg_handle *h, struct qimg_cache *c,
			u64 offset, const struct qimg_centry *src,
			struct qimg_centry **out)
{
	struct qimg_centry *e;
	int ret = qimg_h_check(h);

	lockdep_assert_held(&h->dev->meta_lock);
	if (ret)
		return ret;
	ret = qimg_h_charge(h, c->name);
	if (ret)
		return ret;
	ret = qimg_cache_get(c, offset, true, &e);
	if (ret) {
		h->credits++;	/* nothing joined */
		return ret;
	}
	if (src)
		memcpy(e->data, src->data, c->entry_size);
	e->tid = h->dev->meta_tid;
	qimg_cache_mark_dirty(c, e);
	qimg_journal_table_changed(h->dev, e, 0, c->entry_size);
	*out = e;
	return 0;
}

static int qimg_meta_put_l2(struct qimg_handle *h, struct qimg_centry *e,
			    u64 idx, u64 val, u64 bitmap)
{
	struct qimg_image *img = &h->dev->top;
	__be64 *t = e->data;
	int ret;

	if (WARN_ON_ONCE(bitmap && !img->g->ext_l2))
		return -EIO;	/* a caller's bug: change nothing */
	ret = qimg_meta_get_write_access(h, &img->l2, e);
	if (ret)
		return ret;
	if (img->g->ext_l2) {
		/* Both words at once for the lockless readers (qimg_map.c). */
		preempt_disable();
		write_seqcount_begin(&img->l2x_seq);
		WRITE_ONCE(t[idx * 2], cpu_to_be64(val));
		WRITE_ONCE(t[idx * 2 + 1], cpu_to_be64(bitmap));
		write_seqcount_end(&img->l2x_seq);
		preempt_enable();
		qimg_cache_mark_dirty(&img->l2, e);
		qimg_journal_table_changed(h->dev, e, idx * 16, 16);
		return 0;
	}
	WRITE_ONCE(t[idx], cpu_to_be64(val));
	qimg_cache_mark_dirty(&img->l2, e);
	qimg_journal_table_changed(h->dev, e, idx * 8, 8);
	return 0;
}

/**
 * qimg_meta_set_l2() - set entry @idx of the L2 table @e to @val (CPU order)
 * @h: the handle, which got write access to @e
 * @e: the table
 * @idx: entry index
 * @val: the raw entry (see qimg_l2_encode_*())
 * @bitmap: the subcluster bitmap of an extended L2 entry (allocated
 *          subclusters in the low word, zero ones in the high word); 0
 *          for standard entries
 *
 * Lockless readers see the old or the new entry, never a mix (an
 * extended entry's two words change inside a seqcount write section).  An
 * entry that names a host cluster is taken to make data visible: with the
 * journal, its data is ordered before the commit (see
 * qimg_meta_link_l2() for the exception).
 * Context: dev->meta_lock held, does not sleep (takes the L2 cache's
 * lock).
 * Return: 0 or the handle's error (then nothing changed).
 */
int qimg_meta_set_l2(struct qimg_handle *h, struct qimg_centry *e, u64 idx,
		     u64 val, u64 bitmap)
{
	int ret = qimg_meta_put_l2(h, e, idx, val, bitmap);

	if (!ret && (val & QIMG_L2E_OFFSET_MASK))
		qimg_journal_data_linked(h->dev, val & QIMG_L2E_OFFSET_MASK,
					 false);
	return ret;
}

/**
 * qimg_meta_link_l2() - point entry @idx of @e at a newly written cluster
 * @h: the handle, which got write access to @e
 * @e: the table
 * @idx: entry index
 * @val: the raw entry, naming the cluster at @host
 * @bitmap: its subcluster bitmap (extended L2), else 0
 * @host: the cluster, whose data write has completed
 * @hole: @host was a hole of the file nothing had written, and the guest
 *        saw zeros there: no need to order the data before the commit
 *        (qimg_journal_data_linked() decides)
 *
 * Context: dev->meta_lock held, does not sleep.
 * Return: 0 or the handle's error (then nothing changed).
 */
int qimg_meta_link_l2(struct qimg_handle *h, struct qimg_centry *e, u64 idx,
		      u64 val, u64 bitmap, u64 host, bool hole)
{
	int ret = qimg_meta_put_l2(h, e, idx, val, bitmap);

	if (!ret)
		qimg_journal_data_linked(h->dev, host, hole);
	return ret;
}

/**
 * qimg_meta_set_refcount() - set refcount @idx of refcount block @e
 * @h: the handle, which got write access to @e
 * @e: the refcount block
 * @idx: entry index in the block
 * @val: the new refcount
 *
 * With the journal, a refcount that goes down is noted first
 * (qimg_journal_refcount_dropped()), for a transaction committed in parts.
 *
 * Context: dev->meta_lock held, may sleep (the note's allocation; takes
 * the refcount cache's lock).
 * Return: 0, -ERANGE if @val does not fit the image's refcount width,
 * -ENOMEM or -EOVERFLOW if a drop cannot be noted, or the handle's error.
 */
int qimg_meta_set_refcount(struct qimg_handle *h, struct qimg_centry *e,
			   u64 idx, u64 val)
{
	struct qimg_device *dev = h->dev;
	u32 order = dev->top.g->refcount_order;
	int ret = qimg_meta_get_write_access(h, &dev->rc, e);
	u64 old;

	if (ret)
		return ret;
	old = qimg_refcount_get(e->data, order, idx);
	if (val < old && dev->journal) {
		/* Before the change: without the note it is not made. */
		ret = qimg_journal_refcount_dropped(dev, e->offset, idx, old);
		if (ret)
			return ret;
	}
	ret = qimg_refcount_set(e->data, order, idx, val);
	if (ret)
		return ret;
	qimg_cache_mark_dirty(&dev->rc, e);
	qimg_journal_table_changed(dev, e,
				   (idx << dev->top.g->refcount_order) >> 3,
				   max(1U, (1U << dev->top.g->refcount_order) >> 3));
	return 0;
}

static void qimg_range_add(u64 *lo, u64 *hi, u64 idx)
{
	if (*lo >= *hi) {
		*lo = idx;
		*hi = idx + 1;
	} else {
		*lo = min(*lo, idx);
		*hi = max(*hi, idx + 1);
	}
}

/**
 * qimg_meta_set_l1() - set L1 entry @idx of the top image to @val
 * @h: the handle (charged once for the L1 table)
 * @idx: entry index, below l1_entries
 * @val: the raw entry (qimg_l1_encode())
 *
 * Context: dev->meta_lock held, does not sleep.
 * Return: 0 or the handle's error (then nothing changed).
 */
int qimg_meta_set_l1(struct qimg_handle *h, u32 idx, u64 val)
{
	struct qimg_image *img = &h->dev->top;
	int ret = qimg_h_touch(h, QIMG_H_L1, "L1 table");
	u64 lo = img->l1_dirty_lo, hi = img->l1_dirty_hi;

	lockdep_assert_held(&h->dev->meta_lock);
	if (ret)
		return ret;
	WRITE_ONCE(img->l1[idx], cpu_to_be64(val));
	qimg_range_add(&lo, &hi, idx);
	img->l1_dirty_lo = lo;
	img->l1_dirty_hi = hi;
	qimg_journal_entry_changed(h->dev, true, idx);
	return 0;
}

/**
 * qimg_meta_set_reftable() - set refcount-table entry @idx to @val
 * @h: the handle (charged once for the refcount table)
 * @idx: entry index, below dev->reftable_entries
 * @val: host offset of the refcount block
 *
 * Context: dev->meta_lock held, does not sleep.
 * Return: 0 or the handle's error (then nothing changed).
 */
int qimg_meta_set_reftable(struct qimg_handle *h, u64 idx, u64 val)
{
	struct qimg_device *dev = h->dev;
	int ret = qimg_h_touch(h, QIMG_H_REFTABLE, "refcount table");

	lockdep_assert_held(&dev->meta_lock);
	if (ret)
		return ret;
	WRITE_ONCE(dev->reftable[idx], cpu_to_be64(val));
	qimg_range_add(&dev->rt_dirty_lo, &dev->rt_dirty_hi, idx);
	qimg_journal_entry_changed(dev, false, idx);
	return 0;
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

#if IS_ENABLED(CONFIG_QIMG_KUNIT_DRIVER)
const char *qimg_meta_fail_next;

/* KUnit builds only: does the test want this metadata write to fail? */
static bool qimg_meta_injected(const char *what)
{
	const char *w = READ_ONCE(qimg_meta_fail_next);

	if (!w || strncmp(what, w, strlen(w)))
		return false;
	WRITE_ONCE(qimg_meta_fail_next, NULL);
	return true;
}
#else
static inline bool qimg_meta_injected(const char *what)
{
	return false;
}
#endif

/*
 * fdatasync: the host file system commits what reading the file back
 * needs (block map, size), not a new mtime, which is no part of the
 * image; a full fsync made nearly every sync of ours a journal commit of
 * the host's, overwrites included.
 */
static int qimg_meta_sync(struct qimg_device *dev)
{
	int ret = vfs_fsync(dev->top.file, 1);

	return ret ? qimg_meta_abort(dev, ret, "fsync") : 0;
}

/* Write back one cache; a failure ends all writing (qimg_meta_abort). */
static int qimg_meta_wb_cache(struct qimg_device *dev, struct qimg_cache *c)
{
	int ret = c->nr_dirty && qimg_meta_injected(c->name) ? -EIO :
		  qimg_cache_writeback(c);

	return ret < 0 ? qimg_meta_abort(dev, ret, c->name) : ret;
}

static int qimg_meta_kwrite(struct qimg_device *dev, const void *buf,
			    size_t len, u64 pos, const char *what)
{
	int ret = qimg_meta_injected(what) ? -EIO :
		  qimg_kwrite(dev->top.file, buf, len, pos);

	return ret ? qimg_meta_abort(dev, ret, what) : 0;
}

/*
 * After write-back failed for good, make the tables in memory show what
 * the disk holds.  A dirty L2 entry may point at a cluster whose data went
 * to the page cache (an image without direct I/O) or to the disk's write
 * cache and was lost with the failed sync: reads through it would return
 * whatever that host cluster held before, data that was never written to
 * this guest offset.  The disk's tables date from the last successful
 * sync, and so does the data they point at.  Copied per entry, so
 * lockless readers see either value.
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

	/*
	 * With the journal the disk's tables are older than the committed
	 * transactions, which the next attach replays: rereading them would
	 * hide data whose flush succeeded.  Memory keeps the newest state.
	 */
	if (dev->journal)
		return;
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
		qimg_dev_err(dev, "could not reread the mapping from disk; reads of recently written clusters may return stale data\n");
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

	/* The references replacing these are written (synced below). */
	list_splice_tail_init(&dev->pending_frees, &dev->ready_frees);
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

/**
 * qimg_meta_writeback() - write back the running transaction
 * @dev: the device
 *
 * Without the journal, this is the commit: everything dirty goes to disk
 * in dependency order (the final fsync is the caller's).  Run with no
 * handle open, it also ends the transaction; inside a handle (growing
 * the refcount table) the transaction goes on.  The post-sync hook of
 * the layer above (deferred frees) runs from here.  A failed write or
 * sync ends all writing (qimg_meta_abort()): the device turns read-only
 * and the L1 and L2 tables in memory are reread from the disk.
 *
 * Context: dev->meta_lock held, may sleep (file writes, syncs); never from
 * inside a write-back.
 * Return: 0 or a negative errno: -EIO after an earlier failure of
 * write-back or from inside one, or the error of a write, a sync or the
 * post-sync hook.
 */
int qimg_meta_writeback(struct qimg_device *dev)
{
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	if (WARN_ON_ONCE(dev->meta_wb_running))
		return -EIO;
	dev->meta_wb_running = true;
	if (dev->journal) {
		/* Committed, checkpointed, clean: the same promise. */
		ret = qimg_journal_sync_all(dev);
		dev->meta_wb_running = false;
		return ret;
	}
	if (!dev->meta_depth)
		dev->meta_tid++;
	ret = qimg_meta_writeback_locked(dev);
	dev->meta_wb_running = false;

	if (ret && test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		qimg_meta_revert(dev);
	return ret;
}

/**
 * qimg_meta_sync_failed() - the caller's own fsync of the image failed
 * @dev: the device
 * @err: the fsync's error
 *
 * What reached the disk is unknown: writing stops for good (the device
 * turns read-only, every later write-back fails) and the L1 and L2 tables
 * in memory are reread from the disk.
 *
 * Context: process context, may sleep; dev->meta_lock held.
 * Return: @err.
 */
int qimg_meta_sync_failed(struct qimg_device *dev, int err)
{
	lockdep_assert_held(&dev->meta_lock);
	qimg_meta_abort(dev, err, "fsync");
	qimg_meta_revert(dev);
	return err;
}

/**
 * qimg_meta_set_header() - change one big-endian 64-bit header field
 * @h: the handle (charged once for the header)
 * @off: byte offset of the field (QIMG_HDR_*_OFFSET)
 * @val: its new value
 *
 * Written in place and synced before this returns.
 * Context: dev->meta_lock held, may sleep (write and sync).
 * Return: 0 or a negative errno (a failed write ends all writing).
 */
int qimg_meta_set_header(struct qimg_handle *h, u32 off, u64 val)
{
	struct qimg_device *dev = h->dev;
	__be64 v = cpu_to_be64(val);
	int ret = qimg_h_touch(h, QIMG_H_HEADER, "header");

	lockdep_assert_held(&dev->meta_lock);
	if (!ret)
		ret = qimg_meta_kwrite(dev, &v, sizeof(v), off, "header");
	if (!ret)
		ret = qimg_meta_sync(dev);
	return ret;
}

/**
 * qimg_meta_write_struct() - rewrite an uncached metadata structure
 * @h: the handle (one credit)
 * @buf: the new contents
 * @len: their length
 * @off: host offset (checked against the overlap rules by the caller)
 * @what: the structure's name, for messages
 *
 * For the bitmap directory: written in place and synced before this
 * returns.
 * Context: dev->meta_lock held, may sleep (write and sync).
 * Return: 0 or a negative errno (a failed write ends all writing).
 */
int qimg_meta_write_struct(struct qimg_handle *h, const void *buf,
			   size_t len, u64 off, const char *what)
{
	struct qimg_device *dev = h->dev;
	int ret = qimg_h_check(h);

	lockdep_assert_held(&dev->meta_lock);
	if (!ret)
		ret = qimg_h_charge(h, what);
	if (!ret)
		ret = qimg_meta_kwrite(dev, buf, len, off, what);
	if (!ret)
		ret = qimg_meta_sync(dev);
	return ret;
}

/* Header offsets of refcount_table_offset (u64) and _clusters (u32). */
#define QIMG_HDR_RT_OFFSET	48

/**
 * qimg_meta_switch_reftable() - move the refcount table to a new place
 * @h: the handle (charged for the refcount table and the header)
 * @table: the new table, @clusters clusters, kvmalloc'ed; its entries past
 *         the current table's point at refcount blocks already made
 *         through @h (qimg_meta_new_table()).  Taken over on success.
 * @table_off: where it goes (allocated by the caller: nothing may live
 *             there)
 * @clusters: its size in clusters
 *
 * Without the journal, in the crash model's order: everything dirty
 * written back, the new table (with the current entries copied in now)
 * written and synced, then the header's offset and size switched in one
 * sector write and synced.  With the journal, the caller checkpointed
 * before it made the new refcount blocks (memory and disk agree); the new
 * table is written in place and synced (nothing names its clusters yet),
 * and the header fields become a record of the running transaction
 * (qimg_journal_header_changed()), which also holds the new blocks and
 * the old table's free: the commit switches all of it at once.  A failed
 * write or sync ends all writing (the header may or may not have moved).
 *
 * Context: dev->meta_lock held, may sleep (write-back, writes, syncs).
 * Return: 0 or a negative errno (@table then stays the caller's).
 */
int qimg_meta_switch_reftable(struct qimg_handle *h, __be64 *table,
			      u64 table_off, u32 clusters)
{
	struct qimg_device *dev = h->dev;
	struct qimg_header *hdr = dev->top.h;
	u64 bytes = (u64)clusters << dev->top.g->cluster_bits;
	struct {
		__be64 off;
		__be32 clusters;
	} __packed rt;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	BUILD_BUG_ON(sizeof(rt) != 12);
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, refcount_table_offset) !=
		     QIMG_HDR_RT_OFFSET);
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, refcount_table_clusters) !=
		     QIMG_HDR_RT_OFFSET + 8);
	if (WARN_ON_ONCE(bytes / 8 < dev->reftable_entries))
		return -EIO;
	ret = qimg_h_touch(h, QIMG_H_REFTABLE, "refcount table");
	if (!ret)
		ret = qimg_h_touch(h, QIMG_H_HEADER, "header");
	if (!ret && !dev->journal)
		ret = qimg_meta_writeback(dev);
	if (ret)
		return ret;
	memcpy(table, dev->reftable, dev->reftable_entries * 8);
	ret = qimg_meta_kwrite(dev, table, bytes, table_off,
			       "new refcount table");
	if (!ret)
		ret = qimg_meta_sync(dev);
	if (!ret && !dev->journal) {
		rt.off = cpu_to_be64(table_off);
		rt.clusters = cpu_to_be32(clusters);
		ret = qimg_meta_kwrite(dev, &rt, sizeof(rt),
				       QIMG_HDR_RT_OFFSET,
				       "header (refcount table switch)");
		if (!ret)
			ret = qimg_meta_sync(dev);
	}
	if (ret)
		return ret;
	kvfree(dev->reftable);
	dev->reftable = table;
	dev->reftable_entries = bytes / 8;
	dev->rt_dirty_lo = 0;
	dev->rt_dirty_hi = 0;
	hdr->refcount_table_offset = table_off;
	hdr->refcount_table_clusters = clusters;
	qimg_journal_header_changed(dev);
	return 0;
}

/* Header offset of l1_size (u32), followed by l1_table_offset (u64). */
#define QIMG_HDR_L1_SIZE	36

/**
 * qimg_meta_switch_l1() - give the top image a bigger L1 table
 * @h: the handle (charged for the L1 table and the header)
 * @table: the new table, @entries entries, zeroed, kvmalloc'ed; taken over
 *         on success
 * @table_off: where it goes: clusters the caller referenced through @h
 *             (nothing else may live there), or the current table's own
 *             place when its clusters hold @entries
 * @entries: its size in entries, more than the current table's
 *
 * The new table, with the current entries copied in now, is written and
 * synced first (in place, the old entries are rewritten with their own
 * values); what names it then:
 * without the journal, in the crash model's order as for the refcount
 * table: everything dirty is written back before the table, and
 * l1_size and l1_table_offset switch afterwards in one 12-byte write
 * inside the header's first sector, synced.  A crash before the switch
 * leaves the old table in use (new clusters leak); after it, the new one.
 * With the journal, the header fields become a record of the running
 * transaction (qimg_journal_header_changed()), which the caller started
 * after a checkpoint (disk and memory agree, so the table written is the
 * committed one) and which also holds the new clusters' references and
 * the old table's free: the commit switches all of it at once, nothing
 * leaks.  The virtual size is the caller's: it may grow only after this.
 *
 * Context: dev->meta_lock held, may sleep (write-back, writes, syncs).  No
 * lockless lookup of the top image may run (the caller froze the queue):
 * the table in memory is replaced.
 * Return: 0 or a negative errno (@table then stays the caller's; a failed
 * write or sync ends all writing).
 */
int qimg_meta_switch_l1(struct qimg_handle *h, __be64 *table, u64 table_off,
			u32 entries)
{
	struct qimg_device *dev = h->dev;
	struct qimg_image *img = &dev->top;
	struct {
		__be32 size;
		__be64 off;
	} __packed l1;
	__be64 *old = img->l1;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	BUILD_BUG_ON(sizeof(l1) != 12);
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, l1_size) !=
		     QIMG_HDR_L1_SIZE);
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, l1_table_offset) !=
		     QIMG_HDR_L1_SIZE + 4);
	if (WARN_ON_ONCE(entries <= img->l1_entries))
		return -EIO;
	ret = qimg_h_touch(h, QIMG_H_L1, "L1 table");
	if (!ret)
		ret = qimg_h_touch(h, QIMG_H_HEADER, "header");
	if (!ret && !dev->journal)
		ret = qimg_meta_writeback(dev);
	if (ret)
		return ret;
	if (img->l1_entries)
		memcpy(table, old, (size_t)img->l1_entries * 8);
	ret = qimg_meta_kwrite(dev, table, (size_t)entries * 8, table_off,
			       "new L1 table");
	if (!ret)
		ret = qimg_meta_sync(dev);
	if (!ret && !dev->journal) {
		l1.size = cpu_to_be32(entries);
		l1.off = cpu_to_be64(table_off);
		ret = qimg_meta_kwrite(dev, &l1, sizeof(l1), QIMG_HDR_L1_SIZE,
				       "header (L1 table switch)");
		if (!ret)
			ret = qimg_meta_sync(dev);
	}
	if (ret)
		return ret;
	img->l1 = table;
	img->l1_entries = entries;
	img->l1_dirty_lo = 0;
	img->l1_dirty_hi = 0;
	img->h->l1_size = entries;
	img->h->l1_table_offset = table_off;
	qimg_journal_header_changed(dev);
	kvfree(old);
	return 0;
}

/**
 * qimg_meta_set_size() - change the top image's virtual size in the header
 * @h: the handle (charged for the header)
 * @size: the new size; the L1 table covers it already
 *
 * Without the journal written in place and synced; with it, a record of
 * the running transaction (qimg_journal_header_changed()), durable with
 * its commit.  dev->top.h follows at once.
 *
 * Context: dev->meta_lock held, may sleep (write and sync).
 * Return: 0 or a negative errno (a failed write ends all writing).
 */
int qimg_meta_set_size(struct qimg_handle *h, u64 size)
{
	struct qimg_device *dev = h->dev;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	if (!dev->journal)
		ret = qimg_meta_set_header(h, QIMG_HDR_SIZE_OFFSET, size);
	else
		ret = qimg_h_touch(h, QIMG_H_HEADER, "header");
	if (ret)
		return ret;
	dev->top.h->size = size;
	qimg_journal_header_changed(dev);
	return 0;
}
