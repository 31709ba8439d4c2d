// SPDX-License-Identifier: GPL-2.0
/*
 * qimg metadata caches: L2 tables and refcount blocks, one cache of each
 * kind per image, and the metadata mutation / write-back interface.
 *
 * Memory: a table is one cluster.  Cluster sizes up to 64 KiB (qcow2's
 * default and everything smaller) come from a kmem_cache dedicated to that
 * size, created on first use and shared by every device using the size;
 * if such an allocation fails (high-order pages under fragmentation), or
 * the clusters are bigger, the table comes from kvmalloc.  Each entry
 * remembers which, so both can coexist in one cache.
 *
 * Lookups (the read path) take only cache->lock, a spinlock held for the
 * hash lookup and an LRU move.  A miss takes cache->load_mutex, so a table
 * is read from disk at most once and a stale copy can never overtake a
 * newer one.  Dirty entries are never evicted: write-back is done by the
 * metadata code under dev->meta_lock, in dependency order (refcount blocks,
 * refcount table, L2 tables, L1 table, with an fsync between stages that
 * have something to write), after which clean entries beyond the limit go.
 *
 * Crash model without a journal: a reference (L2 entry, L1 entry, refcount
 * table entry) reaches the disk only after what it points to, including the
 * refcount that accounts for it, is durable.  A crash can therefore leak
 * clusters (refcount higher than the references: qemu-img check -r leaks)
 * but never leave a reference to an unaccounted or unwritten cluster.
 * Refcount decrements (a shared cluster replaced by copy-on-write) are
 * applied only after the references replacing it are durable, and written
 * after a sync: a crash in between leaks the cluster, nothing worse.
 * An allocating write reserves its cluster (refcount) in one group, writes
 * the data without dev->meta_lock and records the L2 entry in a second
 * group, so a write-back in between can only make the reservation durable
 * (a leak).  Discard and write zeroes release clusters through the same
 * deferred decrements.  Growing the refcount table writes the new table
 * and its refcount blocks and syncs them before the header points at them.
 */
#include <linux/hash.h>
#include <linux/mm.h>
#include <linux/slab.h>

#include "qimg.h"

#define QIMG_SLAB_MAX_BITS	16

static struct kmem_cache *qimg_slabs[QIMG_SLAB_MAX_BITS + 1];
static DEFINE_MUTEX(qimg_slab_mutex);

void qimg_slabs_exit(void)
{
	int i;

	for (i = 0; i <= QIMG_SLAB_MAX_BITS; i++) {
		kmem_cache_destroy(qimg_slabs[i]);
		qimg_slabs[i] = NULL;
	}
}

static struct kmem_cache *qimg_slab_for(u32 bits)
{
	static const char * const names[QIMG_SLAB_MAX_BITS + 1] = {
		[9] = "qimg_table_512", [10] = "qimg_table_1k",
		[11] = "qimg_table_2k", [12] = "qimg_table_4k",
		[13] = "qimg_table_8k", [14] = "qimg_table_16k",
		[15] = "qimg_table_32k", [16] = "qimg_table_64k",
	};
	struct kmem_cache *s;

	if (bits < QIMG_MIN_CLUSTER_BITS || bits > QIMG_SLAB_MAX_BITS)
		return NULL;
	mutex_lock(&qimg_slab_mutex);
	s = qimg_slabs[bits];
	if (!s) {
		s = kmem_cache_create(names[bits], 1U << bits, 1U << 9, 0,
				      NULL);
		qimg_slabs[bits] = s;
	}
	mutex_unlock(&qimg_slab_mutex);
	return s;
}

int qimg_cache_init(struct qimg_cache *c, struct qimg_image *img,
		    const char *name, u64 bytes)
{
	u64 n;
	unsigned int i;

	c->name = name;
	c->img = img;
	spin_lock_init(&c->lock);
	mutex_init(&c->load_mutex);
	INIT_LIST_HEAD(&c->lru);
	INIT_LIST_HEAD(&c->dirty);
	c->entry_size = img->g->cluster_size;
	if (bytes > QIMG_MAX_CACHE_BYTES)
		bytes = QIMG_MAX_CACHE_BYTES;
	n = div64_u64(bytes, c->entry_size);
	if (n < QIMG_MIN_CACHE_ENTRIES)
		n = QIMG_MIN_CACHE_ENTRIES;
	c->max = n;
	c->bucket_bits = clamp_t(unsigned int, ilog2(n) + 1, 4, 16);
	c->buckets = kvcalloc(1U << c->bucket_bits, sizeof(*c->buckets),
			      GFP_KERNEL);
	if (!c->buckets)
		return -ENOMEM;
	for (i = 0; i < (1U << c->bucket_bits); i++)
		INIT_HLIST_HEAD(&c->buckets[i]);
	c->slab = qimg_slab_for(img->g->cluster_bits);
	atomic64_set(&c->hits, 0);
	atomic64_set(&c->misses, 0);
	return 0;
}

u64 qimg_cache_bytes(const struct qimg_cache *c)
{
	return (u64)c->max * c->entry_size;
}

static void qimg_centry_free(struct qimg_cache *c, struct qimg_centry *e)
{
	if (e->from_slab)
		kmem_cache_free(c->slab, e->data);
	else
		kvfree(e->data);
	kfree(e);
}

static struct qimg_centry *qimg_centry_alloc(struct qimg_cache *c)
{
	struct qimg_centry *e = kzalloc(sizeof(*e), GFP_KERNEL);

	if (!e)
		return NULL;
	if (c->slab) {
		e->data = kmem_cache_alloc(c->slab, GFP_KERNEL | __GFP_NOWARN);
		e->from_slab = e->data;
	}
	if (!e->data)
		e->data = kvmalloc(c->entry_size, GFP_KERNEL);
	if (!e->data) {
		kfree(e);
		return NULL;
	}
	return e;
}

void qimg_cache_destroy(struct qimg_cache *c)
{
	struct qimg_centry *e, *tmp;

	if (!c->buckets)
		return;
	list_for_each_entry_safe(e, tmp, &c->lru, lru) {
		WARN_ON_ONCE(e->ref);
		hlist_del(&e->hnode);
		list_del(&e->lru);
		qimg_centry_free(c, e);
	}
	kvfree(c->buckets);
	c->buckets = NULL;
}

static struct hlist_head *qimg_bucket(struct qimg_cache *c, u64 offset)
{
	return &c->buckets[hash_64(offset, c->bucket_bits)];
}

/* Called with c->lock held; takes a reference on a hit. */
static struct qimg_centry *qimg_cache_find(struct qimg_cache *c, u64 offset)
{
	struct qimg_centry *e;

	hlist_for_each_entry(e, qimg_bucket(c, offset), hnode) {
		if (e->offset == offset) {
			e->ref++;
			list_move(&e->lru, &c->lru);
			return e;
		}
	}
	return NULL;
}

/* Evict clean, unused entries from the cold end while over the limit. */
/*
 * Does the cache hold a dirty entry for @offset (to be written there)?
 * A peek: no reference taken, LRU untouched, never loads.
 */
bool qimg_cache_has_dirty(struct qimg_cache *c, u64 offset)
{
	struct qimg_centry *e;
	bool dirty = false;

	if (!c->buckets)
		return false;
	spin_lock(&c->lock);
	hlist_for_each_entry(e, qimg_bucket(c, offset), hnode) {
		if (e->offset == offset) {
			dirty = e->dirty;
			break;
		}
	}
	spin_unlock(&c->lock);
	return dirty;
}

static void qimg_cache_trim_locked(struct qimg_cache *c,
				   struct list_head *victims)
{
	struct qimg_centry *e, *tmp;

	list_for_each_entry_safe_reverse(e, tmp, &c->lru, lru) {
		if (c->nr <= c->max)
			break;
		if (e->ref || e->dirty)
			continue;
		hlist_del(&e->hnode);
		list_move(&e->lru, victims);
		c->nr--;
	}
}

static void qimg_cache_trim(struct qimg_cache *c)
{
	struct qimg_centry *e, *tmp;
	LIST_HEAD(victims);

	spin_lock(&c->lock);
	qimg_cache_trim_locked(c, &victims);
	spin_unlock(&c->lock);
	list_for_each_entry_safe(e, tmp, &victims, lru)
		qimg_centry_free(c, e);
}

/*
 * Get the table at host @offset, reading it unless @fresh (a newly
 * allocated table, which starts zeroed).  The caller validated @offset.
 */
int qimg_cache_get(struct qimg_cache *c, u64 offset, bool fresh,
		   struct qimg_centry **out)
{
	struct qimg_centry *e, *v, *tmp;
	LIST_HEAD(victims);
	int ret;

	spin_lock(&c->lock);
	e = qimg_cache_find(c, offset);
	spin_unlock(&c->lock);
	if (e)
		goto hit;

	mutex_lock(&c->load_mutex);
	spin_lock(&c->lock);
	e = qimg_cache_find(c, offset);
	spin_unlock(&c->lock);
	if (e) {
		mutex_unlock(&c->load_mutex);
		goto hit;
	}
	e = qimg_centry_alloc(c);
	if (!e) {
		mutex_unlock(&c->load_mutex);
		return -ENOMEM;
	}
	e->offset = offset;
	if (fresh) {
		memset(e->data, 0, c->entry_size);
	} else {
		ret = qimg_kread(c->img->file, e->data, c->entry_size, offset);
		if (ret) {
			mutex_unlock(&c->load_mutex);
			qimg_centry_free(c, e);
			return ret;
		}
	}
	e->ref = 1;
	INIT_LIST_HEAD(&e->dnode);
	spin_lock(&c->lock);
	hlist_add_head(&e->hnode, qimg_bucket(c, offset));
	list_add(&e->lru, &c->lru);
	c->nr++;
	qimg_cache_trim_locked(c, &victims);
	spin_unlock(&c->lock);
	mutex_unlock(&c->load_mutex);
	list_for_each_entry_safe(v, tmp, &victims, lru)
		qimg_centry_free(c, v);
	atomic64_inc(&c->misses);
	*out = e;
	return 0;
hit:
	if (fresh)
		memset(e->data, 0, c->entry_size);
	atomic64_inc(&c->hits);
	*out = e;
	return 0;
}

void qimg_cache_put(struct qimg_cache *c, struct qimg_centry *e)
{
	spin_lock(&c->lock);
	e->ref--;
	spin_unlock(&c->lock);
}

static void qimg_cache_mark_dirty(struct qimg_cache *c, struct qimg_centry *e)
{
	spin_lock(&c->lock);
	if (!e->dirty) {
		e->dirty = true;
		list_add_tail(&e->dnode, &c->dirty);
		c->nr_dirty++;
	}
	spin_unlock(&c->lock);
}

/*
 * Write every dirty entry of @c (dev->meta_lock held, so nobody dirties
 * more meanwhile; dirty entries cannot be evicted).  Returns how many were
 * written or a negative errno; entries that failed stay dirty.
 */
static int qimg_cache_writeback(struct qimg_cache *c)
{
	struct qimg_centry *e, *tmp;
	LIST_HEAD(todo);
	int n = 0, ret;

	spin_lock(&c->lock);
	list_splice_init(&c->dirty, &todo);
	spin_unlock(&c->lock);
	list_for_each_entry_safe(e, tmp, &todo, dnode) {
		ret = qimg_kwrite(c->img->file, e->data, c->entry_size,
				  e->offset);
		if (ret) {
			spin_lock(&c->lock);
			list_splice(&todo, &c->dirty);
			spin_unlock(&c->lock);
			return ret;
		}
		spin_lock(&c->lock);
		list_del_init(&e->dnode);
		e->dirty = false;
		c->nr_dirty--;
		spin_unlock(&c->lock);
		n++;
	}
	return n;
}

/* ------------------------------------------------------------------------ */
/* Metadata mutations                                                        */

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
	set_bit(QIMG_STATE_WB_FAILED, &dev->state);
	if (!READ_ONCE(dev->read_only)) {
		pr_err("qimg%d: metadata write-back failed (%s, error %d); device is now read-only, detach and check the image\n",
		       dev->index, what, err);
		WRITE_ONCE(dev->read_only, true);
		if (dev->disk)
			set_disk_ro(dev->disk, true);
	}
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
	if (dev->read_only)
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

	if (!list_empty(&dev->pending_frees)) {
		if (pending) {
			ret = qimg_meta_sync(dev);
			if (ret)
				return ret;
		}
		ret = qimg_apply_frees(dev);
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
