// SPDX-License-Identifier: GPL-2.0
/*
 * qimg mapping: guest offset -> L1 -> L2 -> host cluster, and the write
 * side: cluster allocation, copy-on-write and L2 table allocation.
 *
 * Lookups take no device-wide lock: the L1 table is read with READ_ONCE
 * and L2 entries come from the cache (its spinlock only covers the hash
 * lookup).  A write to a cluster that is already allocated with refcount
 * one (COPIED) goes straight to the host file, also without a device lock.
 * Everything else -- unallocated, zero, compressed or shared clusters --
 * takes dev->meta_lock, looks the cluster up again (another writer may
 * have allocated it meanwhile, so concurrent writes never allocate twice),
 * writes the data to its new home and only then points the L2 entry at it.
 *
 * Copy-on-write source: the current guest view of the cluster, read
 * through the normal read path, so backing files, zero clusters,
 * compressed clusters and clusters shared with internal snapshots are all
 * handled the same way.
 */
#include <linux/ratelimit.h>
#include <linux/mm.h>

#include "qimg.h"

u64 qimg_image_end(struct qimg_image *img)
{
	u64 isize = i_size_read(file_inode(img->file));
	u64 alloc = atomic64_read(&img->alloc_end);

	return max(isize, alloc);
}

static int qimg_map_corrupt(struct qimg_image *img, const char *what,
			    const struct qimg_err *err)
{
	if (img == &img->dev->top)
		qimg_mark_corrupt(img->dev, "%s: %s", what, err->msg);
	else
		pr_err_ratelimited("qimg%d: backing image %s: %s: %s\n",
				   img->dev->index,
				   img->path ? img->path : "?", what, err->msg);
	return -EUCLEAN;
}

static int qimg_l1_get(struct qimg_image *img, u64 l1i, u64 *l2_off,
		       bool *copied)
{
	struct qimg_err err = { "" };
	u64 raw;

	if (l1i >= img->l1_entries) {
		*l2_off = 0;
		*copied = false;
		return 0;
	}
	raw = be64_to_cpu(READ_ONCE(img->l1[l1i]));
	if (qimg_l1_decode(img->g, raw, qimg_image_end(img), l2_off, copied,
			   &err))
		return qimg_map_corrupt(img, "L1 entry", &err);
	return 0;
}

static int qimg_l2_entry_get(struct qimg_image *img, struct qimg_centry *t,
			     u64 guest, struct qimg_l2_entry *e)
{
	const struct qimg_geom *g = img->g;
	struct qimg_err err = { "" };
	const __be64 *tab = t->data;
	u64 idx = qimg_l2_index(g, guest);
	u64 raw, bitmap = 0;

	if (g->ext_l2) {
		raw = be64_to_cpu(READ_ONCE(tab[idx * 2]));
		bitmap = be64_to_cpu(READ_ONCE(tab[idx * 2 + 1]));
	} else {
		raw = be64_to_cpu(READ_ONCE(tab[idx]));
	}
	if (qimg_l2_decode(g, img->h->version, raw, bitmap,
			   qimg_image_end(img), e, &err))
		return qimg_map_corrupt(img, "L2 entry", &err);
	return 0;
}

int qimg_map_lookup(struct qimg_image *img, u64 guest,
		    struct qimg_l2_entry *e)
{
	struct qimg_centry *t;
	u64 l2_off;
	bool copied;
	int ret;

	memset(e, 0, sizeof(*e));
	e->type = QIMG_CLUSTER_UNALLOCATED;
	ret = qimg_l1_get(img, qimg_l1_index(img->g, guest), &l2_off, &copied);
	if (ret || !l2_off)
		return ret;
	ret = qimg_cache_get(&img->l2, l2_off, false, &t);
	if (ret)
		return ret;
	ret = qimg_l2_entry_get(img, t, guest, e);
	qimg_cache_put(&img->l2, t);
	return ret;
}

/*
 * The L2 table covering @guest, ready to be modified: allocated if the L1
 * entry is empty, copied if it is shared with a snapshot (no COPIED flag).
 */
static int qimg_l2_for_write(struct qimg_device *dev, u64 guest,
			     struct qimg_centry **out)
{
	struct qimg_image *img = &dev->top;
	u64 l1i = qimg_l1_index(img->g, guest);
	struct qimg_centry *old, *t;
	u64 l2_off, new_off;
	bool copied;
	int ret;

	if (l1i >= img->l1_entries)
		return -EIO;
	ret = qimg_l1_get(img, l1i, &l2_off, &copied);
	if (ret)
		return ret;
	if (l2_off && copied)
		return qimg_cache_get(&img->l2, l2_off, false, out);

	ret = qimg_alloc_clusters(dev, &new_off);
	if (ret)
		return ret;
	ret = qimg_cache_get(&img->l2, new_off, true, &t);
	if (ret)
		return ret;
	if (l2_off) {
		/* Shared with a snapshot: the old table stays theirs. */
		ret = qimg_cache_get(&img->l2, l2_off, false, &old);
		if (ret) {
			qimg_cache_put(&img->l2, t);
			return ret;
		}
		memcpy(t->data, old->data, img->g->cluster_size);
		qimg_cache_put(&img->l2, old);
		qimg_defer_free(dev, l2_off, img->g->cluster_size);
	}
	/* Mark the whole new table dirty before anything can point at it. */
	qimg_meta_record_l2(dev, t, 0, be64_to_cpu(((__be64 *)t->data)[0]));
	qimg_meta_record_l1(dev, l1i, qimg_l1_encode(new_off, true));
	*out = t;
	return 0;
}

/* Allocating / copy-on-write path; dev->meta_lock held. */
static int qimg_map_write_locked(struct qimg_device *dev, u64 guest,
				 struct iov_iter *it)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	u64 cstart = guest & ~(g->cluster_size - 1);
	u64 coff = guest - cstart;
	size_t len = iov_iter_count(it);
	struct qimg_l2_entry e;
	struct qimg_centry *t;
	void *buf = NULL;
	u64 host;
	int ret;

	ret = qimg_map_lookup(img, guest, &e);
	if (ret)
		return ret;
	if (e.type == QIMG_CLUSTER_NORMAL && e.copied)
		return qimg_write_iter_at(img, e.host_offset + coff, it);

	if (len != g->cluster_size) {
		buf = kvmalloc(g->cluster_size, GFP_KERNEL);
		if (!buf)
			return -ENOMEM;
		/* The untouched parts: whatever the guest sees there now. */
		ret = qimg_read_guest_buf(img, cstart, buf, g->cluster_size);
		if (ret)
			goto out;
		if (copy_from_iter((char *)buf + coff, len, it) != len) {
			ret = -EFAULT;
			goto out;
		}
	}

	qimg_meta_begin(dev);
	ret = qimg_l2_for_write(dev, guest, &t);
	if (ret)
		goto end;
	if (e.type == QIMG_CLUSTER_ZERO_ALLOC && e.copied)
		host = e.host_offset;	/* ours alone: reuse it */
	else
		ret = qimg_alloc_clusters(dev, &host);
	if (!ret) {
		if (buf)
			ret = qimg_kwrite(img->file, buf, g->cluster_size, host);
		else
			ret = qimg_write_iter_at(img, host, it);
	}
	/* Data first; the entry pointing at it reaches disk after a sync. */
	if (!ret) {
		qimg_meta_record_l2(dev, t, qimg_l2_index(g, guest),
				    qimg_l2_encode_normal(host, true));
		/* The replaced cluster was shared: drop our reference. */
		if (e.type == QIMG_CLUSTER_COMPRESSED)
			qimg_defer_free(dev, e.host_offset, e.compressed_len);
		else if ((e.type == QIMG_CLUSTER_NORMAL ||
			  e.type == QIMG_CLUSTER_ZERO_ALLOC) && !e.copied)
			qimg_defer_free(dev, e.host_offset, g->cluster_size);
	}
	qimg_cache_put(&img->l2, t);
end:
	if (ret)
		qimg_meta_end(dev);
	else
		ret = qimg_meta_end(dev);
out:
	kvfree(buf);
	return ret;
}

/* Write iov_iter_count(@it) bytes at @guest, all inside one cluster. */
int qimg_map_write(struct qimg_device *dev, u64 guest, struct iov_iter *it)
{
	struct qimg_image *img = &dev->top;
	struct qimg_l2_entry e;
	int ret;

	ret = qimg_map_lookup(img, guest, &e);
	if (ret)
		return ret;
	if (e.type == QIMG_CLUSTER_NORMAL && e.copied)
		return qimg_write_iter_at(img, e.host_offset +
					  qimg_cluster_offset(img->g, guest),
					  it);
	mutex_lock(&dev->meta_lock);
	ret = qimg_map_write_locked(dev, guest, it);
	mutex_unlock(&dev->meta_lock);
	return ret;
}
