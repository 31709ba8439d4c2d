// SPDX-License-Identifier: GPL-2.0
/*
 * qimg table cache: L2 tables and refcount blocks, one cache of each kind
 * per image.
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
 * newer one.  Dirty entries are never evicted: the metadata layer
 * (qimg_meta.c) writes them back, in dependency order, after which clean
 * entries beyond the limit go.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/hash.h>
#include <linux/mm.h>
#include <linux/slab.h>

#include "qimg_file.h"
#include "qimg_cache.h"

#define QIMG_SLAB_MAX_BITS	16

static struct kmem_cache *qimg_slabs[QIMG_SLAB_MAX_BITS + 1];
static DEFINE_MUTEX(qimg_slab_mutex);

/**
 * qimg_slabs_exit() - destroy the shared table slabs
 *
 * Description: destroys every kmem_cache qimg_slab_for() created (one
 * per cluster size up to 64 KiB, shared by all devices) and forgets it.
 *
 * Context: module exit (qimg_dev_exit()), process context, may sleep; no
 * cache may still hold a table from these slabs (every device is gone),
 * and no qimg_cache_init() may run concurrently.
 */
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

/**
 * qimg_cache_init() - set up an empty table cache
 * @c: the cache (L2 tables of @img, or the device's refcount blocks)
 * @img: the image whose file the tables are read from and written to
 * @name: the cache's name in messages and fault injection ("l2", ...)
 * @bytes: memory asked for; clamped to QIMG_MAX_CACHE_BYTES and to at
 *         least QIMG_MIN_CACHE_ENTRIES tables
 *
 * Entries are one cluster of @img each; their memory comes from the slab
 * of that cluster size when there is one (created now if needed, under
 * qimg_slab_mutex), else from kvmalloc.
 *
 * Context: process context, may sleep; takes qimg_slab_mutex.  Attach (or
 * a KUnit test) with the cache not yet visible to anybody.
 * Return: 0 or -ENOMEM.
 */
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

/**
 * qimg_cache_bytes() - the memory limit of a cache
 * @c: an initialised cache
 *
 * Context: any context, no lock (the limit is fixed at qimg_cache_init()).
 * Return: the most bytes of tables @c keeps while they are clean.
 */
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

/**
 * qimg_cache_destroy() - free every table of a cache
 * @c: the cache; one whose set-up failed or never ran (zeroed) is fine
 *
 * Dirty entries are dropped too: the caller wrote back what it wanted to
 * keep.  An entry still referenced is a bug (warned about once).
 *
 * Context: process context, may sleep; no user of @c left (detach or a
 * failed attach).
 */
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

/**
 * qimg_cache_has_dirty() - is the table at @offset cached dirty?
 * @c: the cache
 * @offset: a host offset
 *
 * A peek: no reference taken, LRU untouched, never loads.  A dirty entry
 * will be written to @offset, so the cluster must not be handed out.
 *
 * Context: takes and releases @c->lock, does not sleep.  The answer holds
 * only while dev->meta_lock is held (entries turn dirty and clean under
 * it); the caller, qimg_overlap_check_new(), holds it.
 * Return: true if @c holds a dirty entry for @offset.
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

/*
 * Evict clean, unused entries from the cold end while over the limit
 * (c->lock held; the victims are freed by the caller, unlocked).
 */
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

/**
 * qimg_cache_trim() - evict clean tables beyond the limit
 * @c: the cache
 *
 * Frees clean, unreferenced entries from the cold end of the LRU until at
 * most qimg_cache_bytes() are left (dirty or referenced ones stay).
 *
 * Context: process context, may sleep (freeing); takes @c->lock.  Called
 * after write-back (dev->meta_lock held) and by KUnit tests.
 */
void qimg_cache_trim(struct qimg_cache *c)
{
	struct qimg_centry *e, *tmp;
	LIST_HEAD(victims);

	spin_lock(&c->lock);
	qimg_cache_trim_locked(c, &victims);
	spin_unlock(&c->lock);
	list_for_each_entry_safe(e, tmp, &victims, lru)
		qimg_centry_free(c, e);
}

/**
 * qimg_cache_get() - get the table at a host offset, referenced
 * @c: the cache
 * @offset: host offset of the table, validated by the caller (aligned,
 *          inside the file or newly allocated)
 * @fresh: a newly allocated table: not read, the entry is zeroed (also on
 *         a hit)
 * @out: receives the entry; release it with qimg_cache_put()
 *
 * A hit takes only @c->lock.  A miss takes @c->load_mutex, so a table is
 * read from disk at most once and a stale copy never overtakes a newer
 * one; clean entries over the limit are evicted.
 *
 * Context: process context, may sleep (allocation, file read); takes
 * @c->load_mutex on a miss and @c->lock.  Called with or without
 * dev->meta_lock (readers do not hold it); a caller passing @fresh holds it.
 * Return: 0, -ENOMEM, or the read's errno.
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

/**
 * qimg_cache_put() - drop a reference taken by qimg_cache_get()
 * @c: the cache
 * @e: the entry
 *
 * Context: takes @c->lock, does not sleep.
 */
void qimg_cache_put(struct qimg_cache *c, struct qimg_centry *e)
{
	spin_lock(&c->lock);
	e->ref--;
	spin_unlock(&c->lock);
}

/**
 * qimg_cache_mark_dirty() - note that an entry differs from the disk
 * @c: the cache
 * @e: a referenced entry of @c
 *
 * A dirty entry is never evicted until qimg_cache_writeback() wrote it.
 *
 * Context: takes @c->lock, does not sleep.  Called by the metadata layer
 * (qimg_meta.c) with dev->meta_lock held, so that write-back sees every
 * change; KUnit cache tests call it without a device.
 */
void qimg_cache_mark_dirty(struct qimg_cache *c, struct qimg_centry *e)
{
	spin_lock(&c->lock);
	if (!e->dirty) {
		e->dirty = true;
		list_add_tail(&e->dnode, &c->dirty);
		c->nr_dirty++;
	}
	spin_unlock(&c->lock);
}

/**
 * qimg_cache_writeback() - write every dirty entry of a cache
 * @c: the cache
 *
 * Dirty entries cannot be evicted, and nobody dirties more meanwhile
 * (dev->meta_lock).  Stops at the first failed write: that entry and the
 * ones not yet written stay dirty.  No sync: ordering is the caller's
 * (qimg_meta.c).
 *
 * Context: process context, may sleep (file writes); takes @c->lock.
 * Called by the metadata layer with dev->meta_lock held; KUnit cache tests
 * call it without a device.
 * Return: the number of entries written, or a negative errno.
 */
int qimg_cache_writeback(struct qimg_cache *c)
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

/**
 * qimg_cache_clean() - mark dirty entries clean that are written elsewhere
 * @c: the cache
 * @done: says whether an entry's contents are on disk (the journal's
 *        checkpoint wrote them in place)
 * @arg: passed to @done
 *
 * Context: dev->meta_lock held (nobody dirties entries meanwhile); takes
 * @c->lock.
 */
void qimg_cache_clean(struct qimg_cache *c,
		      bool (*done)(struct qimg_centry *e, void *arg), void *arg)
{
	struct qimg_centry *e, *tmp;

	spin_lock(&c->lock);
	list_for_each_entry_safe(e, tmp, &c->dirty, dnode) {
		if (!done(e, arg))
			continue;
		list_del_init(&e->dnode);
		e->dirty = false;
		c->nr_dirty--;
	}
	spin_unlock(&c->lock);
}
