// SPDX-License-Identifier: GPL-2.0
/*
 * qimg metadata overlap check: no host write may land in metadata.
 *
 * The bar is QEMU's overlap-check at its default "cached" level: the
 * header cluster, the active L1 table, the refcount table, the snapshot
 * table and the bitmap directory (fixed ranges, from the header), plus
 * every cluster the in-memory active L1 table names as an L2 table, every
 * cluster the refcount table names as a refcount block, and the snapshots'
 * L1 tables (not their L2 tables: those need disk reads).
 *
 * The fixed ranges are a handful of comparisons (qimg_ol_fixed_hit() in
 * the format core).  The named clusters live in an xarray indexed by host
 * cluster number, whose value is the set of QIMG_OL_* kinds found there;
 * it is built at a read-write attach and kept up to date, under
 * dev->meta_lock, wherever the driver changes an L1 or refcount table
 * entry.  A check is one xa_load() per host cluster touched (RCU, no
 * lock), so a write through an existing COPIED entry stays O(log n) in
 * the number of metadata clusters, with memory proportional to it, not
 * to the size of the file.
 *
 * Newly allocated clusters are also refused while a cache holds a dirty
 * entry for them (qimg_cache_has_dirty()): write-back would land there.
 *
 * An overlap marks the image corrupt (read-only from then on) and fails
 * the request with -EUCLEAN before anything is written.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/xarray.h>

#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_overlap.h"

/*
 * The fixed ranges are read without a lock; only the refcount table and
 * the L1 table move or grow (qimg_overlap_move()).  A range's offset is
 * published before its (larger) length and read after it, so a reader
 * never pairs the old offset with the new length.
 */
static void qimg_overlap_fixed_read(struct qimg_overlap *ol,
				    struct qimg_ol_fixed *f)
{
	unsigned int i;

	for (i = 0; i < QIMG_OL_NR_FIXED; i++) {
		f->len[i] = READ_ONCE(ol->fixed.len[i]);
		smp_rmb();	/* pairs with qimg_overlap_move() */
		f->off[i] = READ_ONCE(ol->fixed.off[i]);
	}
}

static u32 qimg_overlap_kinds(struct qimg_overlap *ol, u64 idx)
{
	void *v = xa_load(&ol->clusters, idx);

	return xa_is_value(v) ? (u32)xa_to_value(v) : 0;
}

/**
 * qimg_overlap_add() - note a metadata cluster
 * @dev: the device
 * @off: host offset of the cluster
 * @kind: the QIMG_OL_* kind found there (added to those already noted)
 *
 * Nothing to do on a device without the check (read-only attach).
 *
 * Context: process context, may sleep (xarray allocation, GFP_NOIO).
 * dev->meta_lock held, or at attach (qimg_overlap_init()) before anything
 * is written.
 * Return: 0 or -ENOMEM (the cluster then goes unchecked).
 */
int qimg_overlap_add(struct qimg_device *dev, u64 off, u32 kind)
{
	struct qimg_overlap *ol = &dev->ol;
	u64 idx = off >> dev->top.g->cluster_bits;
	u32 kinds;

	if (!ol->ready)
		return 0;
	kinds = qimg_overlap_kinds(ol, idx);
	if ((kinds & kind) == kind)
		return 0;
	return xa_err(xa_store(&ol->clusters, idx,
			       xa_mk_value(kinds | kind), GFP_NOIO));
}

/**
 * qimg_overlap_drop_l2() - an L2 table is no longer active
 * @dev: the device
 * @off: host offset of the L2 table
 * @l1i: the L1 entry that named it and changed
 *
 * Another L1 entry may still name it (a corrupt image): keep it then.
 * Rare (copy of a shared L2 table), so a scan is fine.
 *
 * Context: process context, may sleep (xarray, GFP_NOIO); dev->meta_lock
 * held (qimg_l2_for_write()).
 */
void qimg_overlap_drop_l2(struct qimg_device *dev, u64 off, u32 l1i)
{
	struct qimg_overlap *ol = &dev->ol;
	struct qimg_image *img = &dev->top;
	u64 idx = off >> img->g->cluster_bits;
	u32 i, kinds;

	lockdep_assert_held(&dev->meta_lock);
	if (!ol->ready)
		return;
	for (i = 0; i < img->l1_entries; i++) {
		if (i != l1i && (be64_to_cpu(READ_ONCE(img->l1[i])) &
				 QIMG_L1E_OFFSET_MASK) == off)
			return;
	}
	kinds = qimg_overlap_kinds(ol, idx) & ~QIMG_OL_ACTIVE_L2;
	if (kinds)
		xa_store(&ol->clusters, idx, xa_mk_value(kinds), GFP_NOIO);
	else
		xa_erase(&ol->clusters, idx);
}

/**
 * qimg_overlap_move() - a fixed metadata range moved or grew
 * @dev: the device
 * @kind: QIMG_OL_REFCOUNT_TABLE or QIMG_OL_ACTIVE_L1
 * @off: its new host offset
 * @len: its new length in bytes, not smaller than before
 *
 * Published for lockless checks: the offset before the (larger) length,
 * see qimg_overlap_fixed_read().
 *
 * Context: dev->meta_lock held (the refcount table grows, the L1 table
 * grows), does not sleep.
 */
void qimg_overlap_move(struct qimg_device *dev, u32 kind, u64 off, u64 len)
{
	struct qimg_ol_fixed *f = &dev->ol.fixed;
	unsigned int i = ilog2(kind);

	lockdep_assert_held(&dev->meta_lock);
	if (WARN_ON_ONCE(i >= QIMG_OL_NR_FIXED))
		return;
	WRITE_ONCE(f->off[i], off);
	smp_wmb();	/* pairs with qimg_overlap_fixed_read() */
	WRITE_ONCE(f->len[i], len);
}

/**
 * qimg_overlap_hit() - which metadata does a host range overlap?
 * @dev: the device
 * @off: start of the range
 * @len: its length
 * @ign: QIMG_OL_* kinds not to report (the structure being written)
 *
 * Context: any context, no lock (RCU lookups in the xarray, the fixed
 * ranges read in publication order); data writes call it without
 * dev->meta_lock.
 * Return: the QIMG_OL_* kinds found (of one cluster or fixed range), 0 for
 * none or on a device without the check (read-only attach).
 */
u32 qimg_overlap_hit(struct qimg_device *dev, u64 off, u64 len, u32 ign)
{
	struct qimg_overlap *ol = &dev->ol;
	struct qimg_ol_fixed f;
	u32 bits = dev->top.g ? dev->top.g->cluster_bits : 0;
	unsigned long idx, last;
	u32 hit;
	void *v;

	if (!ol->ready || !len)
		return 0;
	qimg_overlap_fixed_read(ol, &f);
	hit = qimg_ol_fixed_hit(&f, off, len, ign);
	if (hit)
		return hit;
	idx = off >> bits;
	last = (off + len - 1) >> bits;
	if (idx == last)
		return qimg_overlap_kinds(ol, idx) & ~ign;
	xa_for_each_range(&ol->clusters, idx, v, idx, last) {
		hit = xa_to_value(v) & ~ign;
		if (hit)
			return hit;
	}
	return 0;
}

/**
 * qimg_overlap_check() - refuse a write that would land in metadata
 * @dev: the device
 * @off: start of the range to be written
 * @len: its length
 * @ign: QIMG_OL_* kinds excepted (the structure being written itself)
 * @what: names the write for the message
 *
 * An overlap marks the image corrupt (qimg_mark_corrupt()).
 *
 * Context: process context; dev->meta_lock may or may not be held (data
 * writes, attach and metadata changes all check).  Sleeps only when it
 * reports an overlap.
 * Return: 0, or -EUCLEAN on an overlap.
 */
int qimg_overlap_check(struct qimg_device *dev, u64 off, u64 len, u32 ign,
		       const char *what)
{
	u32 hit = qimg_overlap_hit(dev, off, len, ign);

	if (likely(!hit))
		return 0;
	qimg_mark_corrupt(dev, "overlap: %s at 0x%llx+%llu would overwrite the %s",
			  what, off, len, qimg_ol_name(hit));
	return -EUCLEAN;
}

/**
 * qimg_overlap_check_new() - check a cluster just taken from free space
 * @dev: the device
 * @off: its host offset
 * @ign: QIMG_OL_* kinds excepted (what it is to become)
 * @what: what it is to become, for the message
 *
 * As qimg_overlap_check() for the cluster; besides, no cache may hold a
 * dirty entry for it (write-back would land there).
 *
 * Context: process context; dev->meta_lock held (allocation), so the
 * caches' dirty state is stable.  Sleeps only when it reports an overlap.
 * Return: 0, or -EUCLEAN on an overlap.
 */
int qimg_overlap_check_new(struct qimg_device *dev, u64 off, u32 ign,
			   const char *what)
{
	u64 cs = dev->top.g->cluster_size;
	const char *cache = NULL;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	ret = qimg_overlap_check(dev, off, cs, ign, what);
	if (ret || !dev->ol.ready)
		return ret;
	if (!(ign & QIMG_OL_ACTIVE_L2) && qimg_cache_has_dirty(&dev->top.l2, off))
		cache = "L2";
	else if (!(ign & QIMG_OL_REFCOUNT_BLOCK) &&
		 qimg_cache_has_dirty(&dev->rc, off))
		cache = "refcount";
	if (!cache)
		return 0;
	qimg_mark_corrupt(dev, "overlap: %s at 0x%llx is dirty in the %s cache",
			  what, off, cache);
	return -EUCLEAN;
}

/* Bytes of the snapshot table, walking its variable-length entries. */
static int qimg_overlap_snapshots(struct qimg_device *dev, u64 *table_len)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_header *h = img->h;
	u64 fsize = qimg_image_end(img), pos = h->snapshots_offset;
	u64 cs = img->g->cluster_size;
	struct qimg_disk_snapshot d;
	struct qimg_err err = { "" };
	struct qimg_snapshot *s;
	void *buf = NULL;
	u32 i;
	u64 o;
	int ret = 0;

	s = kmalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	for (i = 0; i < h->nb_snapshots; i++) {
		size_t len;

		ret = qimg_kread(img->file, &d, sizeof(d), pos);
		if (ret)
			break;
		len = sizeof(d) + min_t(u32, be32_to_cpu(d.extra_data_size),
					QIMG_MAX_SNAPSHOT_EXTRA) +
		      be16_to_cpu(d.id_str_size) + be16_to_cpu(d.name_size);
		buf = kmalloc(len, GFP_KERNEL);
		if (!buf) {
			ret = -ENOMEM;
			break;
		}
		ret = qimg_kread(img->file, buf, len, pos);
		if (!ret && (qimg_snapshot_decode(img->g, buf, len, fsize, s,
						  &err) || !s->entry_len)) {
			pr_err("%s: snapshot %u: %s\n",
			       img->path ? img->path : "?", i,
			       err.msg[0] ? err.msg : "bad entry");
			ret = -EUCLEAN;
		}
		kfree(buf);
		if (ret)
			break;
		for (o = 0; o < (u64)s->l1_size * 8; o += cs) {
			ret = qimg_overlap_add(dev, s->l1_table_offset + o,
					       QIMG_OL_INACTIVE_L1);
			if (ret)
				break;
		}
		if (ret)
			break;
		pos += s->entry_len;
	}
	kfree(s);
	*table_len = pos - h->snapshots_offset;
	return ret;
}

/**
 * qimg_overlap_init() - build the overlap index at a read-write attach
 * @dev: the device, not yet visible to anybody
 *
 * After the L1 and refcount tables are in memory and before anything is
 * written: notes every active L2 table, every refcount block and the
 * snapshots' L1 tables (reading the snapshot table), then the fixed
 * ranges from the header.  Also on failure, qimg_overlap_destroy() is due.
 *
 * Context: process context, may sleep (reads, allocation); attach, no
 * lock held.
 * Return: 0, -ENOMEM, -EUCLEAN (a bad snapshot entry) or a read's errno.
 */
int qimg_overlap_init(struct qimg_device *dev)
{
	struct qimg_overlap *ol = &dev->ol;
	struct qimg_image *img = &dev->top;
	u64 i, off, snap_len = 0;
	int ret = 0;

	xa_init(&ol->clusters);
	ol->ready = true;
	for (i = 0; !ret && i < img->l1_entries; i++) {
		off = be64_to_cpu(img->l1[i]) & QIMG_L1E_OFFSET_MASK;
		if (off)
			ret = qimg_overlap_add(dev, off, QIMG_OL_ACTIVE_L2);
	}
	for (i = 0; !ret && i < dev->reftable_entries; i++) {
		off = be64_to_cpu(dev->reftable[i]) & QIMG_L1E_OFFSET_MASK;
		if (off)
			ret = qimg_overlap_add(dev, off,
					       QIMG_OL_REFCOUNT_BLOCK);
	}
	if (!ret && img->h->nb_snapshots)
		ret = qimg_overlap_snapshots(dev, &snap_len);
	qimg_ol_fixed_init(&ol->fixed, img->h, snap_len);
	return ret;
}

/**
 * qimg_overlap_destroy() - free the overlap index
 * @dev: the device; fine if qimg_overlap_init() never ran
 *
 * Context: process context; teardown, the device has no user left.
 */
void qimg_overlap_destroy(struct qimg_device *dev)
{
	if (dev->ol.ready)
		xa_destroy(&dev->ol.clusters);
	dev->ol.ready = false;
}
