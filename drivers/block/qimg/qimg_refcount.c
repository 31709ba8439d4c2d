// SPDX-License-Identifier: GPL-2.0
/*
 * qimg refcounts: reading a cluster's refcount and allocating clusters.
 *
 * Everything here runs with dev->meta_lock held (allocation is serialised
 * per device).  Free clusters are found by scanning refcount blocks for a
 * zero entry, starting at dev->free_hint and moving towards the end of the
 * file; clusters past the end of the file are free by definition once
 * their refcount block exists.  A missing refcount block is created in the
 * first free cluster it would cover, so it describes itself (as QEMU
 * does).  When the refcount table is full, qimg_grow_reftable() moves it
 * to a bigger one at the end of the covered space.
 *
 * Decrements (a shared cluster replaced by copy-on-write, a discarded
 * one) depend on the journal.  Without it they are deferred:
 * qimg_defer_free() queues them and the write-back applies them only after
 * the new references are durable, so a crash in between merely leaks.
 * With the journal they are made at once, in the transaction that drops
 * the reference, so a crash leaks nothing; a cluster that became free is
 * quarantined instead (struct qimg_quar): the allocator skips it until
 * that transaction is durable and no data I/O that looked it up is in
 * flight, and a revoke in the same transaction keeps any replay of older
 * records out of it.  Likewise a data cluster reserved by an allocating
 * write is tracked (dev->unlinked) until its L2 entry is set, so that a
 * commit in between logs it as free (qimg_jtx_unlinked()).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ratelimit.h>
#include <linux/slab.h>

#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_overlap.h"
#include "qimg_journal.h"
#include "qimg_refcount.h"

static int qimg_rt_lookup(struct qimg_device *dev, u64 rt_idx, u64 *rb_off)
{
	struct qimg_image *img = &dev->top;
	struct qimg_err err = { "" };
	u64 raw;
	int ret;

	if (rt_idx >= dev->reftable_entries) {
		*rb_off = 0;
		return 0;
	}
	raw = be64_to_cpu(READ_ONCE(dev->reftable[rt_idx]));
	ret = qimg_reftable_decode(img->g, raw, qimg_image_end(img), rb_off,
				   &err);
	if (ret) {
		qimg_mark_corrupt(dev, "refcount table entry %llu: %s",
				  rt_idx, err.msg);
		return -EUCLEAN;
	}
	/* A refcount block written back must not land in other metadata. */
	if (*rb_off)
		return qimg_overlap_check(dev, *rb_off, img->g->cluster_size,
					  QIMG_OL_REFCOUNT_BLOCK,
					  "refcount block");
	return 0;
}

/**
 * qimg_refcount_get_host() - read the refcount of a host cluster
 * @dev: the device (its top image, attached read-write)
 * @host: a host offset in the cluster
 * @val: receives the refcount; 0 when no refcount block covers @host
 *
 * A corrupt refcount table entry marks the image corrupt.
 *
 * Context: process context, may sleep (refcount block read).
 * dev->meta_lock should be held: the refcount table may otherwise be
 * replaced (and freed) by qimg_grow_reftable() meanwhile.  Its one caller,
 * a KUnit test, reads with the device idle.
 * Return: 0, -EUCLEAN (corrupt metadata, or an overlap), or the cache's
 * errno.
 */
int qimg_refcount_get_host(struct qimg_device *dev, u64 host, u64 *val)
{
	const struct qimg_geom *g = dev->top.g;
	struct qimg_centry *e;
	u64 rb_off;
	int ret;

	ret = qimg_rt_lookup(dev, qimg_reftable_index(g, host), &rb_off);
	if (ret)
		return ret;
	if (!rb_off) {
		*val = 0;
		return 0;
	}
	ret = qimg_cache_get(&dev->rc, rb_off, false, &e);
	if (ret)
		return ret;
	*val = qimg_refcount_get(e->data, g->refcount_order,
				 qimg_refblock_index(g, host));
	qimg_cache_put(&dev->rc, e);
	return 0;
}

static void qimg_note_alloc(struct qimg_image *img, u64 host)
{
	qimg_atomic64_max(&img->alloc_end, host + img->g->cluster_size);
}

/*
 * The refcount table covers no free cluster any more: replace it by one
 * twice as big.  Every cluster the old table covers is in use, so the new
 * structures go right after the covered space C0: first the refcount
 * blocks for the new entries (they describe themselves and the new table,
 * as QEMU lays them out), then the new table.  The metadata layer writes
 * them in the crash model's order (qimg_meta_switch_reftable()); the old
 * table's clusters are freed through the deferred-free path (a crash
 * before that leaks them, nothing worse).  With the journal, everything
 * is checkpointed first, so that one transaction holds the new blocks,
 * the switch and the old table's free, and a crash leaks nothing.  In a
 * handle of its own.
 */
static int qimg_grow_reftable(struct qimg_device *dev)
{
	struct qimg_image *img = &dev->top;
	struct qimg_header *h = img->h;
	const struct qimg_geom *g = img->g;
	u64 cs = g->cluster_size;
	u64 old_entries = dev->reftable_entries;
	u64 old_off = h->refcount_table_offset;
	u64 old_clusters = h->refcount_table_clusters;
	u64 c0 = old_entries << g->rb_bits;	/* first uncovered cluster */
	u64 new_clusters, new_entries, nrb, j, table_off;
	struct qimg_handle th;
	struct qimg_centry *e;
	__be64 *nt;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	new_clusters = max_t(u64, 2 * old_clusters, 1);
	new_entries = new_clusters * cs / 8;
	/* Refcount blocks needed to cover themselves and the new table. */
	nrb = 1;
	while (nrb * g->rb_entries < nrb + new_clusters)
		nrb++;
	if (new_clusters * cs > QIMG_MAX_REFTABLE_BYTES ||
	    new_entries < old_entries + nrb ||
	    ((c0 + nrb + new_clusters) << g->cluster_bits) >
	    QIMG_MAX_HOST_OFFSET) {
		qimg_dev_err_ratelimited(dev, "refcount table cannot grow past %llu clusters\n",
					 old_clusters);
		return -ENOSPC;
	}
	table_off = (c0 + nrb) << g->cluster_bits;
	/* All of it is past every cluster in use: nothing may live there. */
	ret = qimg_overlap_check(dev, c0 << g->cluster_bits,
				 (nrb + new_clusters) * cs, 0,
				 "new refcount table and blocks");
	if (ret)
		return ret;
	nt = kvzalloc(new_clusters * cs, GFP_KERNEL);
	if (!nt)
		return -ENOMEM;

	ret = qimg_meta_start(dev, &th, nrb + 2);
	if (!ret && dev->journal)
		ret = qimg_meta_writeback(dev);
	/* New refcount blocks, accounting for themselves and the table. */
	for (j = 0; !ret && j < nrb; j++) {
		u64 rb_off = (c0 + j) << g->cluster_bits;
		u64 k, first = j * g->rb_entries;

		ret = qimg_meta_new_table(&th, &dev->rc, rb_off, NULL, &e);
		if (ret)
			break;
		for (k = first; !ret && k < nrb + new_clusters &&
		     k < first + g->rb_entries; k++)
			ret = qimg_meta_set_refcount(&th, e, k - first, 1);
		qimg_cache_put(&dev->rc, e);
		nt[old_entries + j] = cpu_to_be64(rb_off);
		if (!ret)
			ret = qimg_overlap_add(dev, rb_off,
					       QIMG_OL_REFCOUNT_BLOCK);
	}
	if (!ret) {
		atomic64_set(&img->alloc_end,
			     max_t(u64, atomic64_read(&img->alloc_end),
				   table_off + new_clusters * cs));
		ret = qimg_meta_switch_reftable(&th, nt, table_off,
						new_clusters);
	}
	if (!ret) {
		qimg_overlap_move(dev, QIMG_OL_REFCOUNT_TABLE, table_off,
				  new_clusters * cs);
		dev->free_hint = c0 + nrb + new_clusters;
		qimg_defer_free(&th, old_off, old_clusters * cs);
		qimg_dev_info(dev, "refcount table grown to %llu clusters at %llu\n",
			      new_clusters, table_off);
	} else {
		kvfree(nt);
	}
	return qimg_meta_stop(&th, ret);
}

/* The quarantined run holding host offset @off, or NULL. */
static struct qimg_quar *qimg_quar_find(struct qimg_device *dev, u64 off)
{
	struct rb_node *n = dev->quar_tree.rb_node;

	while (n) {
		struct qimg_quar *q = rb_entry(n, struct qimg_quar, rb);

		if (off < q->start)
			n = n->rb_left;
		else if (off >= q->end)
			n = n->rb_right;
		else
			return q;
	}
	return NULL;
}

/*
 * Quarantine clusters [start, end) freed by the running transaction.
 * Runs never overlap (a cluster is freed once before it is reused), so
 * the tree is ordered by start alone.  Return: 0 or -ENOMEM.
 */
static int qimg_quar_add(struct qimg_device *dev, u64 start, u64 end)
{
	struct rb_node **p = &dev->quar_tree.rb_node, *parent = NULL;
	struct qimg_quar *q;

	if (start >= end)
		return 0;
	if (!list_empty(&dev->quar_list)) {
		q = list_last_entry(&dev->quar_list, struct qimg_quar, node);
		if (q->tid == dev->meta_tid && q->end == start) {
			q->end = end;
			return 0;
		}
	}
	q = kmalloc(sizeof(*q), GFP_KERNEL);
	if (!q)
		return -ENOMEM;
	q->start = start;
	q->end = end;
	q->tid = dev->meta_tid;
	while (*p) {
		struct qimg_quar *o = rb_entry(*p, struct qimg_quar, rb);

		parent = *p;
		p = start < o->start ? &(*p)->rb_left : &(*p)->rb_right;
	}
	rb_link_node(&q->rb, parent, p);
	rb_insert_color(&q->rb, &dev->quar_tree);
	list_add_tail(&q->node, &dev->quar_list);
	return 0;
}

static bool qimg_quar_ready(struct qimg_device *dev)
{
	struct qimg_quar *q = list_first_entry_or_null(&dev->quar_list,
						       struct qimg_quar, node);

	return q && q->tid <= qimg_journal_durable_tid(dev);
}

/*
 * Runs whose freeing transaction is durable become allocatable again,
 * once no data I/O that looked them up is in flight; their space goes
 * back to the host file system.
 */
static void qimg_quar_release(struct qimg_device *dev)
{
	const struct qimg_geom *g = dev->top.g;
	u64 durable = qimg_journal_durable_tid(dev);
	struct qimg_quar *q, *tmp;

	if (!qimg_quar_ready(dev))
		return;
	qimg_io_drain(dev);
	list_for_each_entry_safe(q, tmp, &dev->quar_list, node) {
		if (q->tid > durable)
			break;
		rb_erase(&q->rb, &dev->quar_tree);
		list_del(&q->node);
		if ((q->start >> g->cluster_bits) < dev->free_hint)
			dev->free_hint = q->start >> g->cluster_bits;
		qimg_file_punch(dev->top.file, q->start, q->end - q->start);
		kfree(q);
	}
}

/**
 * qimg_alloc_data() - reserve the data cluster of an allocating write
 * @h: the handle (QIMG_CREDITS_ALLOC_CLUSTER)
 * @host: receives the cluster's host offset
 *
 * qimg_alloc_clusters(); with the journal, the cluster is also recorded
 * as not linked until qimg_alloc_linked() (without memory for that, a
 * crash between the two may leak it, as without the journal).
 *
 * Context: dev->meta_lock held; may sleep.
 * Return: as qimg_alloc_clusters().
 */
int qimg_alloc_data(struct qimg_handle *h, u64 *host)
{
	struct qimg_device *dev = h->dev;
	int ret = qimg_alloc_clusters(h, host);

	if (!ret && dev->journal)
		xa_store(&dev->unlinked, *host >> dev->top.g->cluster_bits,
			 xa_mk_value(1), GFP_KERNEL);
	return ret;
}

/**
 * qimg_alloc_linked() - the reserved data cluster's fate is decided
 * @dev: the device
 * @host: what qimg_alloc_data() returned
 *
 * Called when the L2 entry is set, or before the cluster is given back.
 * Context: dev->meta_lock held.
 */
void qimg_alloc_linked(struct qimg_device *dev, u64 host)
{
	lockdep_assert_held(&dev->meta_lock);
	xa_erase(&dev->unlinked, host >> dev->top.g->cluster_bits);
}

static bool qimg_next_unlinked(struct qimg_device *dev, u64 *host)
{
	u32 bits = dev->top.g->cluster_bits;
	unsigned long idx = *host >> bits;

	if (!xa_find(&dev->unlinked, &idx, ULONG_MAX, XA_PRESENT))
		return false;
	*host = (u64)idx << bits;
	return true;
}

/**
 * qimg_alloc_clusters() - allocate one cluster with refcount 1
 * @h: the handle (QIMG_CREDITS_ALLOC_CLUSTER)
 * @host: receives the cluster's host offset
 *
 * Scans the refcount blocks from dev->free_hint; a missing refcount block
 * is made in the first free cluster it covers, and a full refcount table
 * grows (qimg_grow_reftable(), in a handle of its own, which writes back
 * and syncs).  A zero refcount on metadata is corruption, never handed
 * out (qimg_overlap_check_new()).
 *
 * Context: dev->meta_lock held; may sleep (refcount block reads, table
 * growth).
 * Return: 0, -ENOSPC, -EUCLEAN (corrupt refcounts), the handle's error
 * or another errno.
 */
int qimg_alloc_clusters(struct qimg_handle *h, u64 *host)
{
	struct qimg_device *dev = h->dev;
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	struct qimg_centry *e;
	struct qimg_quar *q;
	u64 c, off, rt_idx, rb_off, i;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	for (;;) {
		c = dev->free_hint;
		off = c << g->cluster_bits;
		if (off > QIMG_MAX_HOST_OFFSET - g->cluster_size)
			return -ENOSPC;
		rt_idx = qimg_reftable_index(g, off);
		if (rt_idx >= dev->reftable_entries) {
			ret = qimg_grow_reftable(dev);
			if (ret)
				return ret;
			continue;
		}
		ret = qimg_rt_lookup(dev, rt_idx, &rb_off);
		if (ret)
			return ret;
		if (!rb_off) {
			/* New refcount block in the first cluster it covers. */
			ret = qimg_overlap_check_new(dev, off, 0,
						     "new refcount block");
			if (ret)
				return ret;
			ret = qimg_meta_new_table(h, &dev->rc, off, NULL, &e);
			if (ret)
				return ret;
			i = qimg_refblock_index(g, off);
			ret = qimg_meta_set_refcount(h, e, i, 1);
			qimg_cache_put(&dev->rc, e);
			if (!ret)
				ret = qimg_meta_set_reftable(h, rt_idx, off);
			if (ret)
				return ret;
			/* Failing (no memory) only leaves it unchecked. */
			qimg_overlap_add(dev, off, QIMG_OL_REFCOUNT_BLOCK);
			qimg_note_alloc(img, off);
			dev->free_hint = c + 1;
			continue;
		}
		ret = qimg_cache_get(&dev->rc, rb_off, false, &e);
		if (ret)
			return ret;
		for (i = qimg_refblock_index(g, off); i < g->rb_entries; i++) {
			if (!qimg_refcount_get(e->data, g->refcount_order, i))
				break;
		}
		if (i == g->rb_entries) {
			qimg_cache_put(&dev->rc, e);
			dev->free_hint = (rt_idx + 1) << g->rb_bits;
			continue;
		}
		off = (rt_idx << (g->rb_bits + g->cluster_bits)) +
		      (i << g->cluster_bits);
		q = qimg_quar_find(dev, off);
		if (q) {
			/* Freed by a transaction not yet durable. */
			qimg_cache_put(&dev->rc, e);
			dev->free_hint = q->end >> g->cluster_bits;
			continue;
		}
		/*
		 * A refcount of zero on metadata means the refcounts are
		 * corrupt; handing the cluster out would overwrite it.
		 */
		ret = qimg_overlap_check_new(dev, off, 0, "free cluster");
		if (!ret)
			ret = qimg_meta_set_refcount(h, e, i, 1);
		qimg_cache_put(&dev->rc, e);
		if (ret)
			return ret;
		qimg_note_alloc(img, off);
		dev->free_hint = (off >> g->cluster_bits) + 1;
		*host = off;
		return 0;
	}
}

/**
 * qimg_find_free_run() - find free clusters for a journal area, taking none
 * @dev: the device
 * @n: how many contiguous clusters
 * @host: receives the host offset of the first
 *
 * First fit from dev->free_hint, among clusters whose refcount blocks
 * exist: refcount 0, not quarantined, no metadata there.  Nothing changes:
 * the caller names the run (the journal header) before
 * qimg_take_clusters() references it, so that a crash in between leaves
 * the run free instead of leaked.
 *
 * Context: dev->meta_lock held; may sleep (refcount block reads).
 * Return: 0, -ENOSPC (no such run where refcount blocks exist),
 * -EUCLEAN (metadata with refcount 0) or the cache's errno.
 */
int qimg_find_free_run(struct qimg_device *dev, u64 n, u64 *host)
{
	const struct qimg_geom *g = dev->top.g;
	u64 c = dev->free_hint, start = 0, run = 0, rb_off, rt_idx, off;
	struct qimg_centry *e = NULL;
	int ret = -ENOSPC;

	lockdep_assert_held(&dev->meta_lock);
	for (; n; c++) {
		off = c << g->cluster_bits;
		rt_idx = c >> g->rb_bits;
		if (rt_idx >= dev->reftable_entries ||
		    off > QIMG_MAX_HOST_OFFSET - g->cluster_size)
			break;
		if (!e || !(c & (g->rb_entries - 1))) {
			if (e)
				qimg_cache_put(&dev->rc, e);
			e = NULL;
			ret = qimg_rt_lookup(dev, rt_idx, &rb_off);
			if (ret)
				return ret;
			if (!rb_off) {
				/* Skip the block: it would have to be made. */
				run = 0;
				c = ((rt_idx + 1) << g->rb_bits) - 1;
				ret = -ENOSPC;
				continue;
			}
			ret = qimg_cache_get(&dev->rc, rb_off, false, &e);
			if (ret)
				return ret;
			ret = -ENOSPC;
		}
		if (qimg_refcount_get(e->data, g->refcount_order,
				      c & (g->rb_entries - 1)) ||
		    qimg_quar_find(dev, off)) {
			run = 0;
			continue;
		}
		ret = qimg_overlap_check_new(dev, off, 0, "free cluster");
		if (ret)
			break;
		ret = -ENOSPC;
		if (!run++)
			start = off;
		if (run == n) {
			*host = start;
			ret = 0;
			break;
		}
	}
	if (e)
		qimg_cache_put(&dev->rc, e);
	return ret;
}

/**
 * qimg_make_free_run() - refcount blocks for a free run past the end
 * @dev: the device, without the journal (yet)
 * @n: clusters the run needs
 *
 * For qimg_find_free_run() when no run of @n free clusters exists where
 * refcount blocks exist.  New refcount blocks go right after the space
 * the last named block covers, describing themselves and covering @n
 * free clusters after them; a full refcount table grows instead
 * (qimg_grow_reftable()), which may leave enough free space on its own.
 * Written back and synced here, each block before the table entry that
 * names it: a crash in between leaves a block nothing names past the
 * covered space, which is free, not leaked.  The run itself stays free.
 *
 * Context: dev->meta_lock held; may sleep (write-back, syncs).
 * Return: 0 (call qimg_find_free_run() again), -ENOSPC or another errno.
 */
int qimg_make_free_run(struct qimg_device *dev, u64 n)
{
	const struct qimg_geom *g = dev->top.g;
	u64 rt0, c0, nrb = 1, j, k, rb_off;
	struct qimg_handle h;
	struct qimg_centry *e;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	for (rt0 = dev->reftable_entries; rt0; rt0--)
		if (be64_to_cpu(dev->reftable[rt0 - 1]))
			break;
	while (nrb * g->rb_entries < nrb + n)
		nrb++;
	c0 = rt0 << g->rb_bits;
	if ((c0 + nrb + n) << g->cluster_bits > QIMG_MAX_HOST_OFFSET)
		return -ENOSPC;
	if (rt0 + nrb > dev->reftable_entries)
		return qimg_grow_reftable(dev);
	/* Past every cluster in use: nothing may live there. */
	ret = qimg_overlap_check(dev, c0 << g->cluster_bits,
				 (nrb + n) << g->cluster_bits, 0,
				 "new refcount blocks");
	if (ret)
		return ret;
	ret = qimg_meta_start(dev, &h, nrb + 2);
	for (j = 0; !ret && j < nrb; j++) {
		rb_off = (c0 + j) << g->cluster_bits;
		ret = qimg_meta_new_table(&h, &dev->rc, rb_off, NULL, &e);
		if (ret)
			break;
		for (k = j * g->rb_entries; !ret && k < nrb &&
		     k < (j + 1) * g->rb_entries; k++)
			ret = qimg_meta_set_refcount(&h, e, k - j * g->rb_entries,
						     1);
		qimg_cache_put(&dev->rc, e);
		if (!ret)
			ret = qimg_meta_set_reftable(&h, rt0 + j, rb_off);
		if (!ret) {
			qimg_overlap_add(dev, rb_off, QIMG_OL_REFCOUNT_BLOCK);
			qimg_note_alloc(&dev->top, rb_off);
		}
	}
	ret = qimg_meta_stop(&h, ret);
	if (!ret)
		ret = qimg_meta_writeback(dev);
	if (!ret)
		ret = vfs_fsync(dev->top.file, 1);
	if (!ret)
		qimg_dev_info(dev, "%llu refcount block(s) made at %llu for a free run of %llu clusters\n",
			      nrb, c0 << g->cluster_bits, n);
	return ret;
}

/**
 * qimg_take_clusters() - reference a run that qimg_find_free_run() found
 * @h: the handle (one credit per refcount block the run spans, plus one)
 * @host: the run's first cluster
 * @len: its length, whole clusters
 *
 * Every cluster goes from refcount 0 to 1, in @h's transaction.
 *
 * Context: dev->meta_lock held; may sleep.
 * Return: 0, -EUCLEAN (a cluster without a refcount block, or in use) or
 * another errno.
 */
int qimg_take_clusters(struct qimg_handle *h, u64 host, u64 len)
{
	struct qimg_device *dev = h->dev;
	const struct qimg_geom *g = dev->top.g;
	struct qimg_centry *e;
	u64 c, rb_off, idx;
	int ret = 0;

	lockdep_assert_held(&dev->meta_lock);
	for (c = host; !ret && c < host + len; c += g->cluster_size) {
		ret = qimg_rt_lookup(dev, qimg_reftable_index(g, c), &rb_off);
		if (ret)
			break;
		if (!rb_off) {
			qimg_mark_corrupt(dev, "cluster %llu has no refcount block", c);
			return -EUCLEAN;
		}
		ret = qimg_cache_get(&dev->rc, rb_off, false, &e);
		if (ret)
			break;
		idx = qimg_refblock_index(g, c);
		if (qimg_refcount_get(e->data, g->refcount_order, idx)) {
			qimg_cache_put(&dev->rc, e);
			qimg_mark_corrupt(dev, "cluster %llu is no longer free", c);
			return -EUCLEAN;
		}
		ret = qimg_meta_set_refcount(h, e, idx, 1);
		qimg_cache_put(&dev->rc, e);
		if (!ret)
			qimg_note_alloc(&dev->top, c);
	}
	if (!ret && (host >> g->cluster_bits) <= dev->free_hint &&
	    ((host + len) >> g->cluster_bits) > dev->free_hint)
		dev->free_hint = (host + len) >> g->cluster_bits;
	return ret;
}

static int qimg_refcount_dec(struct qimg_handle *h, u64 host, bool *freed);

/**
 * qimg_release_clusters() - drop the reference of a run nothing else reaches
 * @h: the handle (credits as qimg_take_clusters())
 * @host: the run's first cluster (the journal area being removed)
 * @len: its length, whole clusters
 *
 * One reference less for every cluster, in @h's transaction, without the
 * quarantine, revoke and hole punch of a free: the run is the journal's
 * own area, which no data I/O reaches and which stays readable until the
 * header stops naming it (nothing allocates meanwhile: no request runs).
 * The caller punches it after that.
 *
 * Context: dev->meta_lock held; may sleep; no request runs.
 * Return: 0, -EUCLEAN (a refcount that was 0) or another errno.
 */
int qimg_release_clusters(struct qimg_handle *h, u64 host, u64 len)
{
	const struct qimg_geom *g = h->dev->top.g;
	bool freed;
	u64 c;
	int ret = 0;

	lockdep_assert_held(&h->dev->meta_lock);
	for (c = host; !ret && c < host + len; c += g->cluster_size)
		ret = qimg_refcount_dec(h, c, &freed);
	if (!ret && (host >> g->cluster_bits) < h->dev->free_hint)
		h->dev->free_hint = host >> g->cluster_bits;
	return ret;
}

static int qimg_free_now(struct qimg_handle *h, u64 host, u64 len);

/**
 * qimg_defer_free() - drop one reference to every cluster of a host range
 * @h: the handle whose changes replace the references (no credit: the
 *     decrements are made in a handle of their own)
 * @host: start of the range
 * @len: its length (a compressed cluster's bytes, or whole clusters)
 *
 * Without the journal, queued on dev->pending_frees: qimg_apply_frees()
 * applies it after the next write-back made the replacing references
 * durable, and without memory to queue it the range leaks, harmlessly.
 * With the journal, the decrements join @h's transaction at once and the
 * clusters that became free are quarantined until it is durable.
 *
 * Context: dev->meta_lock held; may sleep (GFP_KERNEL allocation).
 */
void qimg_defer_free(struct qimg_handle *h, u64 host, u64 len)
{
	struct qimg_device *dev = h->dev;
	struct qimg_pending_free *p;

	lockdep_assert_held(&dev->meta_lock);
	if (!len)
		return;
	if (dev->journal) {
		struct qimg_handle fh;
		u64 n = (len >> dev->top.g->cluster_bits) + 2;

		/* In the same transaction; see the top of this file. */
		if (!qimg_meta_start(dev, &fh, (unsigned int)min_t(u64, n, UINT_MAX / 2)))
			qimg_free_now(&fh, host, len);
		qimg_meta_stop(&fh, 0);
		return;
	}
	/* Whole clusters following the previous ones: one range. */
	if (!list_empty(&dev->pending_frees) &&
	    !((host | len) & (dev->top.g->cluster_size - 1))) {
		p = list_last_entry(&dev->pending_frees,
				    struct qimg_pending_free, node);
		if (!((p->host | p->len) & (dev->top.g->cluster_size - 1)) &&
		    p->host + p->len == host) {
			p->len += len;
			return;
		}
	}
	p = kmalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return;		/* the cluster leaks; harmless */
	p->host = host;
	p->len = len;
	list_add_tail(&p->node, &dev->pending_frees);
}

static int qimg_refcount_dec(struct qimg_handle *h, u64 host, bool *freed)
{
	struct qimg_device *dev = h->dev;
	const struct qimg_geom *g = dev->top.g;
	struct qimg_centry *e;
	u64 rb_off, idx, val;
	int ret;

	ret = qimg_rt_lookup(dev, qimg_reftable_index(g, host), &rb_off);
	if (ret)
		return ret;
	if (!rb_off) {
		qimg_mark_corrupt(dev, "freeing cluster %llu without a refcount block",
				  host);
		return -EUCLEAN;
	}
	ret = qimg_cache_get(&dev->rc, rb_off, false, &e);
	if (ret)
		return ret;
	idx = qimg_refblock_index(g, host);
	val = qimg_refcount_get(e->data, g->refcount_order, idx);
	if (!val) {
		qimg_cache_put(&dev->rc, e);
		qimg_mark_corrupt(dev, "freeing cluster %llu with refcount 0",
				  host);
		return -EUCLEAN;
	}
	ret = qimg_meta_set_refcount(h, e, idx, val - 1);
	qimg_cache_put(&dev->rc, e);
	*freed = !ret && val == 1;
	return ret;
}

/* Undo a decrement to 0 (the cluster leaks instead of being freed). */
static void qimg_refcount_undo(struct qimg_handle *h, u64 host)
{
	struct qimg_device *dev = h->dev;
	const struct qimg_geom *g = dev->top.g;
	struct qimg_centry *e;
	u64 rb_off;

	if (qimg_rt_lookup(dev, qimg_reftable_index(g, host), &rb_off) ||
	    !rb_off || qimg_cache_get(&dev->rc, rb_off, false, &e))
		return;
	qimg_meta_set_refcount(h, e, qimg_refblock_index(g, host), 1);
	qimg_cache_put(&dev->rc, e);
}

/*
 * With the journal: clusters [start, end) reached refcount 0 in @h's
 * transaction.  A revoke there keeps replays of older records out of
 * them, and the quarantine keeps them from being handed out before that
 * transaction is durable.  Without memory for the quarantine they keep
 * their reference (a leak, as qemu-img check reports and repairs).
 */
static void qimg_freed_run(struct qimg_handle *h, u64 start, u64 end)
{
	struct qimg_device *dev = h->dev;
	u64 c;

	if (start >= end)
		return;
	if (!qimg_quar_add(dev, start, end)) {
		qimg_journal_revoke(dev, start, end - start);
		return;
	}
	for (c = start; c < end; c += dev->top.g->cluster_size)
		qimg_refcount_undo(h, c);
}

/*
 * With the journal: drop one reference to every cluster of the range now,
 * in @h's transaction (the one that dropped the reference itself).
 */
static int qimg_free_now(struct qimg_handle *h, u64 host, u64 len)
{
	const struct qimg_geom *g = h->dev->top.g;
	u64 c = host & ~(g->cluster_size - 1);
	u64 run = c;	/* start of the run of freed clusters */
	bool freed;
	int ret;

	for (; c < host + len; c += g->cluster_size) {
		ret = qimg_refcount_dec(h, c, &freed);
		if (!ret && freed)
			continue;
		qimg_freed_run(h, run, c);
		run = c + g->cluster_size;
		if (ret)
			return ret;
	}
	qimg_freed_run(h, run, c);
	return 0;
}

/*
 * Give the space of clusters that just became free back to the host file
 * system (as QEMU passes discards down).  Nothing durable points at them
 * any more, so a crash can only show zeros where old data was unused;
 * failure (no hole punching here) changes nothing.
 */
static void qimg_punch(struct qimg_device *dev, u64 off, u64 len)
{
	if (!len)
		return;
	/* No journal replay may write old metadata into them again. */
	qimg_journal_revoke(dev, off, len);
	qimg_file_punch(dev->top.file, off, len);
}

/*
 * Credits for applying the queued decrements: at most one refcount block
 * per cluster (a compressed range may straddle two clusters).
 */
static unsigned int qimg_frees_credits(struct qimg_device *dev)
{
	const struct qimg_geom *g = dev->top.g;
	struct qimg_pending_free *p;
	u64 n = 0;

	list_for_each_entry(p, &dev->ready_frees, node)
		n += (p->len >> g->cluster_bits) + 2;
	return min_t(u64, n, UINT_MAX / 2);
}

/**
 * qimg_apply_frees() - apply the deferred refcount decrements
 * @dev: the device
 *
 * The references that replaced the queued ranges are durable by now.
 * First waits for every data I/O that may still target them
 * (qimg_io_drain()), then drops one reference per cluster, in a handle of
 * its own, and punches the clusters that became free out of the file.  The
 * refcount blocks it dirties are written back by the caller right after.
 * On an error the range being applied is dropped (what is left of it
 * leaks) and the later ones stay queued.  With the journal, it first
 * gives back the quarantined clusters whose freeing transaction is
 * durable (the journal's post-commit step).
 *
 * Context: process context, may sleep; dev->meta_lock held.  The post-sync
 * hook (qimg_refcount_meta_ops), called from qimg_meta_writeback().
 * Return: 0 or a negative errno (-EUCLEAN for a refcount that was 0 or
 * had no refcount block).
 */
int qimg_apply_frees(struct qimg_device *dev)
{
	const struct qimg_geom *g = dev->top.g;
	struct qimg_pending_free *p, *tmp;
	struct qimg_handle h;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	qimg_quar_release(dev);
	if (list_empty(&dev->ready_frees))
		return 0;
	/* No I/O that looked up the old entries may still be in flight. */
	qimg_io_drain(dev);
	ret = qimg_meta_start(dev, &h, qimg_frees_credits(dev));
	if (ret)
		return qimg_meta_stop(&h, ret);
	list_for_each_entry_safe(p, tmp, &dev->ready_frees, node) {
		u64 c = p->host & ~(g->cluster_size - 1);
		u64 end = p->host + p->len;
		u64 run = c;	/* start of the run of freed clusters */
		bool freed;

		/* Queued before the journal started: its way now. */
		if (dev->journal)
			ret = qimg_free_now(&h, p->host, p->len);
		for (; !dev->journal && !ret && c < end; c += g->cluster_size) {
			ret = qimg_refcount_dec(&h, c, &freed);
			if (ret || !freed) {
				qimg_punch(dev, run, c - run);
				run = c + g->cluster_size;
			} else if ((c >> g->cluster_bits) < dev->free_hint) {
				dev->free_hint = c >> g->cluster_bits;
			}
		}
		if (!dev->journal && !ret)
			qimg_punch(dev, run, c - run);
		list_del(&p->node);
		kfree(p);
		if (ret)
			break;
	}
	return qimg_meta_stop(&h, ret);
}

/**
 * qimg_drop_frees() - forget the deferred refcount decrements
 * @dev: the device
 *
 * At teardown, for decrements never applied (a failed write-back): the
 * clusters leak, which qemu-img check -r repairs.
 *
 * Context: process context; the device has no user left (no lock).
 */
void qimg_drop_frees(struct qimg_device *dev)
{
	struct qimg_pending_free *p, *tmp;

	struct qimg_quar *q, *qt;

	list_splice_tail_init(&dev->pending_frees, &dev->ready_frees);
	list_for_each_entry_safe(p, tmp, &dev->ready_frees, node) {
		list_del(&p->node);
		kfree(p);
	}
	list_for_each_entry_safe(q, qt, &dev->quar_list, node) {
		list_del(&q->node);
		kfree(q);
	}
	dev->quar_tree = RB_ROOT;
	xa_destroy(&dev->unlinked);
}

static bool qimg_frees_pending(struct qimg_device *dev)
{
	return !list_empty(&dev->ready_frees) || qimg_quar_ready(dev);
}

/*
 * Deferred frees run, and quarantined clusters come back, once what
 * replaced the freed clusters is durable.
 */
const struct qimg_meta_ops qimg_refcount_meta_ops = {
	.post_sync_pending = qimg_frees_pending,
	.post_sync = qimg_apply_frees,
	.next_unlinked = qimg_next_unlinked,
};
