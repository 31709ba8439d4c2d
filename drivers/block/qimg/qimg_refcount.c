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
 * does).  Growing the refcount table is not implemented: when it is full
 * allocation fails with -ENOSPC and a message.
 *
 * Decrements (a shared cluster replaced by copy-on-write) are deferred:
 * qimg_defer_free() queues them and the write-back applies them only after
 * the new references are durable, so a crash in between merely leaks.
 */
#include <linux/ratelimit.h>
#include <linux/slab.h>

#include "qimg.h"

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
	return 0;
}

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
	u64 end = host + img->g->cluster_size;
	u64 cur = atomic64_read(&img->alloc_end);

	while (cur < end) {
		u64 old = atomic64_cmpxchg(&img->alloc_end, cur, end);

		if (old == cur)
			break;
		cur = old;
	}
}

/*
 * A refcount of zero on the header, the L1 table or the refcount table
 * means the refcounts are corrupt; handing such a cluster out would
 * overwrite metadata, so refuse (QEMU's overlap check, in its cheap form).
 */
static bool qimg_overlaps_fixed_metadata(struct qimg_device *dev, u64 off)
{
	const struct qimg_header *h = dev->top.h;
	u64 cs = dev->top.g->cluster_size;

	return off < cs ||
	       qimg_ranges_overlap(off, cs, h->l1_table_offset,
				   (u64)h->l1_size * 8) ||
	       qimg_ranges_overlap(off, cs, h->refcount_table_offset,
				   (u64)h->refcount_table_clusters * cs);
}

/* Allocate one cluster with refcount 1; *host receives its offset. */
int qimg_alloc_clusters(struct qimg_device *dev, u64 *host)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	struct qimg_centry *e;
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
			pr_err_ratelimited("qimg%d: refcount table full (%llu entries); growing it is not implemented\n",
					   dev->index, dev->reftable_entries);
			return -ENOSPC;
		}
		ret = qimg_rt_lookup(dev, rt_idx, &rb_off);
		if (ret)
			return ret;
		if (!rb_off) {
			/* New refcount block in the first cluster it covers. */
			ret = qimg_cache_get(&dev->rc, off, true, &e);
			if (ret)
				return ret;
			i = qimg_refblock_index(g, off);
			ret = qimg_meta_record_refcount(dev, e, i, 1);
			qimg_cache_put(&dev->rc, e);
			if (ret)
				return ret;
			qimg_meta_record_reftable(dev, rt_idx, off);
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
		ret = qimg_meta_record_refcount(dev, e, i, 1);
		qimg_cache_put(&dev->rc, e);
		if (ret)
			return ret;
		qimg_note_alloc(img, off);
		dev->free_hint = (off >> g->cluster_bits) + 1;
		if (qimg_overlaps_fixed_metadata(dev, off)) {
			qimg_mark_corrupt(dev, "free cluster %llu overlaps the header/L1/reftable",
					  off);
			return -EUCLEAN;
		}
		*host = off;
		return 0;
	}
}

/* Queue a refcount decrement of every cluster of [host, host + len). */
void qimg_defer_free(struct qimg_device *dev, u64 host, u64 len)
{
	struct qimg_pending_free *p;

	lockdep_assert_held(&dev->meta_lock);
	if (!len)
		return;
	p = kmalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return;		/* the cluster leaks; harmless */
	p->host = host;
	p->len = len;
	list_add_tail(&p->node, &dev->pending_frees);
}

static int qimg_refcount_dec(struct qimg_device *dev, u64 host)
{
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
	ret = qimg_meta_record_refcount(dev, e, idx, val - 1);
	qimg_cache_put(&dev->rc, e);
	if (!ret && val == 1 && (host >> g->cluster_bits) < dev->free_hint)
		dev->free_hint = host >> g->cluster_bits;
	return ret;
}

/* Apply the queued decrements (their replacements are durable by now). */
int qimg_apply_frees(struct qimg_device *dev)
{
	const struct qimg_geom *g = dev->top.g;
	struct qimg_pending_free *p, *tmp;
	int ret = 0;

	lockdep_assert_held(&dev->meta_lock);
	qimg_meta_begin(dev);
	list_for_each_entry_safe(p, tmp, &dev->pending_frees, node) {
		u64 c = p->host & ~(g->cluster_size - 1);
		u64 end = p->host + p->len;

		for (; !ret && c < end; c += g->cluster_size)
			ret = qimg_refcount_dec(dev, c);
		list_del(&p->node);
		kfree(p);
		if (ret)
			break;
	}
	dev->meta_depth--;	/* no nested write-back from here */
	return ret;
}

void qimg_drop_frees(struct qimg_device *dev)
{
	struct qimg_pending_free *p, *tmp;

	list_for_each_entry_safe(p, tmp, &dev->pending_frees, node) {
		list_del(&p->node);
		kfree(p);
	}
}
