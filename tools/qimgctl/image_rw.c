// SPDX-License-Identifier: GPL-2.0
/*
 * The qcow2 writer (see image_rw.h for the model and the write order) and
 * the guest-data reader used to copy images.
 *
 * Nothing read from the image is trusted: table entries go through the
 * format core's decoders, bounded by the end of the file, before the
 * writer follows or replaces them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "image_rw.h"

/* Fixed header fields the writer changes (byte offsets in the header). */
#define HDR_SIZE_OFF		24
#define HDR_L1_SIZE_OFF		36
#define HDR_L1_OFF		40
#define HDR_RT_OFF		48
#define HDR_RT_CLUSTERS_OFF	56
#define HDR_NB_SNAP_OFF		60
#define HDR_SNAP_OFF		64

static int w_err(struct qimgw *w, int ret, const char *what)
{
	qimgctl_err("%s: %s: %s", w->img.path, what, strerror(-ret));
	return ret;
}

static int w_pwrite(struct qimgw *w, const void *buf, size_t len, u64 off,
		    const char *what)
{
	int ret = qimgctl_pwrite(w->img.fd, buf, len, off);

	return ret ? w_err(w, ret, what) : 0;
}

static int w_sync(struct qimgw *w)
{
	if (fsync(w->img.fd) < 0)
		return w_err(w, -errno, "fsync");
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Refcounts                                                                */

static int rt_grow(struct qimgw *w, u64 need);

/* A cluster at the end of the file, its refcount not yet raised. */
static u64 take_raw(struct qimgw *w, u64 n)
{
	u64 off = w->end;

	w->end += n * w->cs;
	return off;
}

static int ref_set(struct qimgw *w, u64 cl, u64 val);

/* Refcount block @idx, read or (when @create) made; NULL if none. */
static int rb_get(struct qimgw *w, u64 idx, bool create, u8 **blk)
{
	struct qimg_err err = { "" };
	u64 off;
	int ret;

	*blk = NULL;
	if (idx >= w->rt_entries) {
		if (!create)
			return 0;
		ret = rt_grow(w, idx + 1);
		if (ret)
			return ret;
	}
	if (w->rb[idx]) {
		*blk = w->rb[idx];
		return 0;
	}
	if (!w->rt[idx] && !create)
		return 0;
	w->rb[idx] = calloc(1, w->cs);
	if (!w->rb[idx])
		return w_err(w, -ENOMEM, "refcount block");
	if (w->rt[idx]) {
		ret = qimg_reftable_decode(w->g, w->rt[idx], w->end, &off,
					   &err);
		if (ret) {
			qimgctl_err("%s: refcount table entry %" PRIu64 ": %s",
				    w->img.path, (uint64_t)idx, err.msg);
			return -EUCLEAN;
		}
		ret = qimgctl_pread(w->img.fd, w->rb[idx], w->cs, off);
		if (ret)
			return w_err(w, ret, "reading a refcount block");
		*blk = w->rb[idx];
		return 0;
	}
	/* A new block, in a new cluster, counted wherever that lands. */
	off = take_raw(w, 1);
	w->rt[idx] = off;
	w->rt_dirty = true;
	w->rb_dirty[idx] = true;
	ret = ref_set(w, off >> w->g->cluster_bits, 1);
	if (ret)
		return ret;
	*blk = w->rb[idx];
	return 0;
}

static int ref_get(struct qimgw *w, u64 cl, u64 *val)
{
	u8 *blk;
	int ret = rb_get(w, cl >> w->g->rb_bits, false, &blk);

	*val = 0;
	if (ret)
		return ret;
	if (blk)
		*val = qimg_refcount_get(blk, w->g->refcount_order,
					 cl & (w->g->rb_entries - 1));
	return 0;
}

static int ref_set(struct qimgw *w, u64 cl, u64 val)
{
	u64 idx = cl >> w->g->rb_bits;
	u8 *blk;
	int ret = rb_get(w, idx, true, &blk);

	if (ret)
		return ret;
	/* rb_get() may have grown the table; idx is still valid. */
	ret = qimg_refcount_set(blk, w->g->refcount_order,
				cl & (w->g->rb_entries - 1), val);
	if (ret)
		return w_err(w, ret, "setting a refcount");
	w->rb_dirty[idx] = true;
	return 0;
}

int qimgw_ref_add(struct qimgw *w, u64 off, int delta)
{
	u64 cl = off >> w->g->cluster_bits, val;
	int ret = ref_get(w, cl, &val);

	if (ret)
		return ret;
	if ((delta < 0 && !val) || (delta > 0 && val >= w->g->refcount_max)) {
		qimgctl_err("%s: refcount of cluster %#" PRIx64 " would %s",
			    w->img.path, (uint64_t)off,
			    delta < 0 ? "drop below zero" : "overflow");
		return -ERANGE;
	}
	return ref_set(w, cl, delta < 0 ? val - 1 : val + 1);
}

int qimgw_ref_get(struct qimgw *w, u64 off, u64 *val)
{
	return ref_get(w, off >> w->g->cluster_bits, val);
}

int qimgw_alloc(struct qimgw *w, u64 n, u64 *off)
{
	u64 i;
	int ret;

	*off = take_raw(w, n);
	for (i = 0; i < n; i++) {
		ret = ref_set(w, (*off >> w->g->cluster_bits) + i, 1);
		if (ret)
			return ret;
	}
	return 0;
}

/* Forget a reference once the tables that held it are durable. */
static int drop_later(struct qimgw *w, u64 off)
{
	if (w->nb_drop == w->drop_cap) {
		size_t cap = w->drop_cap ? w->drop_cap * 2 : 64;
		u64 *d = realloc(w->drop, cap * sizeof(*d));

		if (!d)
			return w_err(w, -ENOMEM, "freeing clusters");
		w->drop = d;
		w->drop_cap = cap;
	}
	w->drop[w->nb_drop++] = off;
	return 0;
}

/* Free @n clusters at @off: now if the disk never saw them, else later. */
static int free_table(struct qimgw *w, u64 off, u64 n, bool on_disk)
{
	u64 i;
	int ret;

	for (i = 0; i < n; i++) {
		ret = on_disk ? drop_later(w, off + i * w->cs) :
				qimgw_ref_add(w, off + i * w->cs, -1);
		if (ret)
			return ret;
	}
	return 0;
}

/* Install new refcount table arrays (NULL: none), freeing the old ones. */
static void rt_replace(struct qimgw *w, u64 *rt, u8 **rb, bool *dirty,
		       u64 entries)
{
	free(w->rt);
	free(w->rb);
	free(w->rb_dirty);
	w->rt = rt;
	w->rb = rb;
	w->rb_dirty = dirty;
	w->rt_entries = entries;
}

/*
 * The refcount table must have at least @need entries: move it to new
 * clusters at the end, big enough to also cover itself and the refcount
 * blocks that counting it may create.
 */
static int rt_grow(struct qimgw *w, u64 need)
{
	u64 per_cl = w->cs / 8, cover = w->cs << w->g->rb_bits;
	u64 ncl = w->rt_clusters, entries, off, i, *nrt;
	u8 **nrb;
	bool *nd;
	int ret;

	for (;;) {
		ncl = ncl < 1 ? 1 : ncl * 2;
		entries = ncl * per_cl;
		/* Leave room for the table and a few blocks after it. */
		if (entries >= need &&
		    entries > (w->end + (ncl + 8) * w->cs) / cover + 2)
			break;
		if (ncl * w->cs > QIMG_MAX_REFTABLE_BYTES) {
			qimgctl_err("%s: the refcount table would exceed %llu bytes",
				    w->img.path,
				    (unsigned long long)QIMG_MAX_REFTABLE_BYTES);
			return -EFBIG;
		}
	}
	nrt = calloc(entries, sizeof(*nrt));
	nrb = calloc(entries, sizeof(*nrb));
	nd = calloc(entries, sizeof(*nd));
	if (!nrt || !nrb || !nd) {
		free(nrt);
		free(nrb);
		free(nd);
		return w_err(w, -ENOMEM, "refcount table");
	}
	memcpy(nrt, w->rt, w->rt_entries * sizeof(*nrt));
	memcpy(nrb, w->rb, w->rt_entries * sizeof(*nrb));
	memcpy(nd, w->rb_dirty, w->rt_entries * sizeof(*nd));
	rt_replace(w, nrt, nrb, nd, entries);
	off = take_raw(w, ncl);
	/* The header still names the table read at open: free it later. */
	if (!w->rt_old_off) {
		w->rt_old_off = w->rt_off;
		w->rt_old_clusters = w->rt_clusters;
	} else {
		ret = free_table(w, w->rt_off, w->rt_clusters, false);
		if (ret)
			return ret;
	}
	w->rt_off = off;
	w->rt_clusters = (u32)ncl;
	w->rt_dirty = true;
	for (i = 0; i < ncl; i++) {
		ret = ref_set(w, (off >> w->g->cluster_bits) + i, 1);
		if (ret)
			return ret;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Open, flush, close                                                       */

static int load_reftable(struct qimgw *w)
{
	const struct qimg_geom *g = w->g;
	struct qimg_err err = { "" };
	u64 bytes, i, j, rb_off, last = 0;
	u8 *blk;
	int ret;

	bytes = (u64)w->h->refcount_table_clusters << g->cluster_bits;
	if (!bytes || bytes > QIMG_MAX_REFTABLE_BYTES) {
		qimgctl_err("%s: refcount table size %" PRIu64 " is not supported",
			    w->img.path, (uint64_t)bytes);
		return -EUCLEAN;
	}
	w->rt_off = w->h->refcount_table_offset;
	w->rt_clusters = w->h->refcount_table_clusters;
	w->rt_entries = bytes / 8;
	w->rt = calloc(w->rt_entries, sizeof(*w->rt));
	w->rb = calloc(w->rt_entries, sizeof(*w->rb));
	w->rb_dirty = calloc(w->rt_entries, sizeof(*w->rb_dirty));
	if (!w->rt || !w->rb || !w->rb_dirty)
		return w_err(w, -ENOMEM, "refcount table");
	ret = qimgctl_pread(w->img.fd, w->rt, bytes, w->rt_off);
	if (ret)
		return w_err(w, ret, "reading the refcount table");
	for (i = 0; i < w->rt_entries; i++) {
		w->rt[i] = be64_to_cpu(w->rt[i]);
		ret = qimg_reftable_decode(g, w->rt[i], w->end, &rb_off, &err);
		if (ret) {
			qimgctl_err("%s: refcount table entry %" PRIu64 ": %s",
				    w->img.path, (uint64_t)i, err.msg);
			return -EUCLEAN;
		}
		w->rt[i] = rb_off;
		if (rb_off)
			last = i + 1;
	}
	/*
	 * Never hand out a cluster the refcounts say is in use, even past
	 * the end of the file.
	 */
	if (last) {
		ret = rb_get(w, last - 1, false, &blk);
		if (ret)
			return ret;
		for (j = g->rb_entries; j > 0; j--) {
			u64 cl = ((last - 1) << g->rb_bits) + j - 1;

			if (qimg_refcount_get(blk, g->refcount_order, j - 1)) {
				if ((cl + 1) * w->cs > w->end)
					w->end = (cl + 1) * w->cs;
				break;
			}
		}
	}
	return 0;
}

int qimgw_open(struct qimgw *w, const char *path)
{
	const struct qimg_header *h;
	const char *why = NULL;
	u64 bytes;
	u32 i;
	int ret;

	memset(w, 0, sizeof(*w));
	w->img.fd = -1;
	ret = qimgctl_image_open(&w->img, path, QIMGCTL_OPEN_WRITE);
	if (ret)
		return ret;
	w->h = &w->img.h;
	w->g = &w->img.h.geom;
	w->cs = w->g->cluster_size;
	h = w->h;
	if (h->crypt_method)
		why = "encrypted images";
	else if (h->incompatible_features & QIMG_INCOMPAT_DATA_FILE)
		why = "images with an external data file";
	else if (h->incompatible_features & QIMG_INCOMPAT_CORRUPT)
		why = "images marked corrupt (run qimgctl check -r all)";
	else if (h->incompatible_features & QIMG_INCOMPAT_DIRTY)
		why = "images with dirty lazy refcounts (run qimgctl check -r all)";
	/* A journal asked for (offset 0) is only a wish: kept as it is. */
	else if ((h->has_journal_ext && h->journal_offset) ||
		 (h->incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY))
		why = "images with a qimg journal (run qimgctl check -r all)";
	if (why) {
		qimgctl_err("%s: writing %s is not supported", path, why);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	w->end = (w->img.file_size + w->cs - 1) & ~(w->cs - 1);
	ret = load_reftable(w);
	if (ret)
		goto fail;
	w->l1_size = h->l1_size;
	w->l1_off = h->l1_table_offset;
	if (w->l1_size < w->g->l1_size) {
		qimgctl_err("%s: L1 table is too small (%u entries, %u needed)",
			    path, w->l1_size, w->g->l1_size);
		ret = -EUCLEAN;
		goto fail;
	}
	bytes = (u64)w->l1_size * 8;
	if (bytes > QIMG_MAX_L1_BYTES) {
		qimgctl_err("%s: L1 table is too large (%u entries)", path,
			    w->l1_size);
		ret = -EFBIG;
		goto fail;
	}
	w->l1 = calloc(w->l1_size + 1, sizeof(*w->l1));
	w->l2 = calloc(w->l1_size + 1, sizeof(*w->l2));
	w->l2_dirty = calloc(w->l1_size + 1, sizeof(*w->l2_dirty));
	if (!w->l1 || !w->l2 || !w->l2_dirty) {
		ret = w_err(w, -ENOMEM, "L1 table");
		goto fail;
	}
	if (bytes) {
		ret = qimgctl_pread(w->img.fd, w->l1, bytes, w->l1_off);
		if (ret) {
			w_err(w, ret, "reading the L1 table");
			goto fail;
		}
	}
	for (i = 0; i < w->l1_size; i++)
		w->l1[i] = be64_to_cpu(w->l1[i]);
	/* Autoclear bits name things this writer does not keep up to date. */
	if (w->h->autoclear_features & ~QIMG_AUTOCLEAR_BITMAPS) {
		w->h->autoclear_features &= QIMG_AUTOCLEAR_BITMAPS;
		put_unaligned_be64(w->h->autoclear_features,
				   (u8 *)w->img.hdr_buf +
				   QIMG_HDR_AUTOCLEAR_OFFSET);
		ret = w_pwrite(w, w->img.hdr_buf, QIMG_V3_HEADER_LEN, 0,
			       "writing the header");
		if (!ret)
			ret = w_sync(w);
		if (ret)
			goto fail;
	}
	return 0;
fail:
	qimgw_close(w, false);
	return ret;
}

static int write_rbs(struct qimgw *w)
{
	u64 i;
	int ret;

	for (i = 0; i < w->rt_entries; i++) {
		if (!w->rb_dirty[i])
			continue;
		ret = w_pwrite(w, w->rb[i], w->cs, w->rt[i],
			       "writing a refcount block");
		if (ret)
			return ret;
		w->rb_dirty[i] = false;
	}
	return 0;
}

/* The header names the refcount table, and also the L1 table if @all. */
static int write_header(struct qimgw *w, bool all)
{
	u8 *b = w->img.hdr_buf;
	int ret;

	if (all) {
		put_unaligned_be64(w->h->size, b + HDR_SIZE_OFF);
		put_unaligned_be32(w->l1_size, b + HDR_L1_SIZE_OFF);
		put_unaligned_be64(w->l1_off, b + HDR_L1_OFF);
	}
	put_unaligned_be64(w->rt_off, b + HDR_RT_OFF);
	put_unaligned_be32(w->rt_clusters, b + HDR_RT_CLUSTERS_OFF);
	/* One sector: the fields change together or not at all. */
	ret = w_pwrite(w, b, w->img.hdr_len < 512 ? w->img.hdr_len : 512, 0,
		       "writing the header");
	return ret ? ret : w_sync(w);
}

/* Big-endian copy of @n table entries, written at @off. */
static int write_table(struct qimgw *w, const u64 *t, u64 n, u64 off,
		       const char *what)
{
	u64 *be = calloc(n ? n : 1, sizeof(*be)), i;
	int ret;

	if (!be)
		return w_err(w, -ENOMEM, what);
	for (i = 0; i < n; i++)
		be[i] = cpu_to_be64(t[i]);
	ret = w_pwrite(w, be, n * 8, off, what);
	free(be);
	return ret;
}

/*
 * Everything is on disk: forget the cached tables (they are read again
 * when needed), so memory stays bounded by what one flush interval
 * touches.
 */
static void drop_caches(struct qimgw *w)
{
	u64 i;

	for (i = 0; i < w->l1_size; i++) {
		if (w->l2_dirty[i])
			continue;
		free(w->l2[i]);
		w->l2[i] = NULL;
	}
	for (i = 0; i < w->rt_entries; i++) {
		if (w->rb_dirty[i])
			continue;
		free(w->rb[i]);
		w->rb[i] = NULL;
	}
}

int qimgw_flush(struct qimgw *w)
{
	bool rt_moved = w->rt_old_off != 0;
	bool l1_moved = w->l1_old_off != 0;
	size_t i;
	u32 l1i;
	int ret;

	/* 1: data; 2: refcounts (blocks before the table naming them). */
	ret = w_sync(w);
	if (!ret)
		ret = write_rbs(w);
	if (!ret)
		ret = w_sync(w);
	if (!ret && w->rt_dirty) {
		u64 pad = (u64)w->rt_clusters * (w->cs / 8);

		ret = write_table(w, w->rt, pad, w->rt_off,
				  "writing the refcount table");
		if (!ret)
			ret = w_sync(w);
		if (!ret && rt_moved)
			ret = write_header(w, false);
		if (!ret)
			w->rt_dirty = false;
	}
	/* 3: L2 tables, 4: L1 table, 5: header. */
	for (l1i = 0; !ret && l1i < w->l1_size; l1i++) {
		if (!w->l2_dirty[l1i])
			continue;
		ret = w_pwrite(w, w->l2[l1i], w->cs,
			       w->l1[l1i] & QIMG_L1E_OFFSET_MASK,
			       "writing an L2 table");
		w->l2_dirty[l1i] = false;
	}
	if (!ret)
		ret = w_sync(w);
	if (!ret && w->l1_dirty) {
		ret = write_table(w, w->l1, w->l1_size, w->l1_off,
				  "writing the L1 table");
		if (!ret)
			ret = w_sync(w);
		if (!ret)
			w->l1_dirty = false;
	}
	if (!ret && (w->hdr_dirty || l1_moved || rt_moved)) {
		ret = write_header(w, true);
		if (!ret)
			w->hdr_dirty = false;
	}
	if (ret)
		return ret;
	/* 6: nothing durable names these any more. */
	if (rt_moved) {
		ret = free_table(w, w->rt_old_off, w->rt_old_clusters, false);
		w->rt_old_off = 0;
	}
	if (!ret && l1_moved) {
		ret = free_table(w, w->l1_old_off,
				 ((u64)w->l1_old_size * 8 + w->cs - 1) /
				 w->cs, false);
		w->l1_old_off = 0;
	}
	for (i = 0; !ret && i < w->nb_drop; i++)
		ret = qimgw_ref_add(w, w->drop[i], -1);
	w->nb_drop = 0;
	if (!ret)
		ret = write_rbs(w);
	if (!ret)
		ret = w_sync(w);
	if (!ret)
		drop_caches(w);
	return ret;
}

int qimgw_close(struct qimgw *w, bool flush)
{
	int ret = 0;
	u64 i;

	if (flush && w->img.fd >= 0)
		ret = qimgw_flush(w);
	if (w->l2)
		for (i = 0; i < w->l1_size; i++)
			free(w->l2[i]);
	if (w->rb)
		for (i = 0; i < w->rt_entries; i++)
			free(w->rb[i]);
	free(w->l1);
	free(w->l2);
	free(w->l2_dirty);
	rt_replace(w, NULL, NULL, NULL, 0);
	free(w->drop);
	qimgctl_image_close(&w->img);
	memset(w, 0, sizeof(*w));
	w->img.fd = -1;
	return ret;
}

/* ------------------------------------------------------------------------ */
/* L2 entries and guest data                                                */

static int refuse_shared(struct qimgw *w)
{
	if (w->h->nb_snapshots && !w->snapshots_ok) {
		qimgctl_err("%s: writing guest data of an image with internal snapshots is not supported",
			    w->img.path);
		return -EOPNOTSUPP;
	}
	if (w->h->has_bitmaps_ext && w->h->nb_bitmaps && !w->bitmaps_tracked) {
		qimgctl_err("%s: writing guest data of an image with persistent bitmaps is not supported",
			    w->img.path);
		return -EOPNOTSUPP;
	}
	return 0;
}

/* L1 entry @l1i names the (cached, dirty) L2 table now at @off. */
static void l1_point(struct qimgw *w, u32 l1i, u64 off)
{
	w->l1[l1i] = qimg_l1_encode(off, true);
	w->l1_dirty = true;
	w->l2_dirty[l1i] = true;
}

/* The L2 table of L1 entry @l1i, made when @create and absent. */
static int l2_get(struct qimgw *w, u32 l1i, bool create, u8 **tbl)
{
	struct qimg_err err = { "" };
	u64 off;
	bool copied;
	int ret;

	*tbl = w->l2[l1i];
	if (*tbl)
		return 0;
	ret = qimg_l1_decode(w->g, w->l1[l1i], w->end, &off, &copied, &err);
	if (ret) {
		qimgctl_err("%s: L1 entry %u: %s", w->img.path, l1i, err.msg);
		return -EUCLEAN;
	}
	if (!off && !create)
		return 0;
	if (off && !copied && create && !w->snapshots_ok) {
		qimgctl_err("%s: L2 table at %#" PRIx64 " is shared; writing it is not supported",
			    w->img.path, (uint64_t)off);
		return -EOPNOTSUPP;
	}
	w->l2[l1i] = calloc(1, w->cs);
	if (!w->l2[l1i])
		return w_err(w, -ENOMEM, "L2 table");
	if (off) {
		ret = qimgctl_pread(w->img.fd, w->l2[l1i], w->cs, off);
		if (ret)
			return w_err(w, ret, "reading an L2 table");
		/*
		 * Shared with a snapshot: the active L1 table gets a copy.
		 * Its entries name the same clusters, which qemu counts once
		 * per L1 table already; the old table loses one reference
		 * once the copy is durable.
		 */
		if (!copied && create) {
			u64 noff;

			ret = qimgw_alloc(w, 1, &noff);
			if (!ret)
				ret = drop_later(w, off);
			if (ret)
				return ret;
			l1_point(w, l1i, noff);
		}
	} else {
		ret = qimgw_alloc(w, 1, &off);
		if (ret)
			return ret;
		l1_point(w, l1i, off);
	}
	*tbl = w->l2[l1i];
	return 0;
}

/* Decode the entry of guest cluster @guest in @tbl. */
static int l2_entry(struct qimgw *w, const u8 *tbl, u64 guest,
		    struct qimg_l2_entry *e)
{
	const struct qimg_geom *g = w->g;
	struct qimg_err err = { "" };
	const u8 *p = tbl + (qimg_l2_index(g, guest) << g->l2_entry_shift);
	int ret;

	ret = qimg_l2_decode(g, w->h->version, get_unaligned_be64(p),
			     g->ext_l2 ? get_unaligned_be64(p + 8) : 0, w->end,
			     e, &err);
	if (ret) {
		qimgctl_err("%s: L2 entry of guest offset %#" PRIx64 ": %s",
			    w->img.path, (uint64_t)guest, err.msg);
		return -EUCLEAN;
	}
	return 0;
}

/* Let go of what entry @e references, once the new entry is durable. */
static int drop_entry(struct qimgw *w, const struct qimg_l2_entry *e)
{
	u64 off, end;
	int ret;

	switch (e->type) {
	case QIMG_CLUSTER_NORMAL:
	case QIMG_CLUSTER_ZERO_ALLOC:
		return drop_later(w, e->host_offset);
	case QIMG_CLUSTER_COMPRESSED:
		off = e->host_offset & ~(w->cs - 1);
		end = e->host_offset + e->compressed_len;
		for (; off < end; off += w->cs) {
			ret = drop_later(w, off);
			if (ret)
				return ret;
		}
		return 0;
	default:
		return 0;
	}
}

/* Replace the entry of @guest with @raw / @bitmap, dropping the old one. */
static int l2_set(struct qimgw *w, u64 guest, u64 raw, u64 bitmap)
{
	const struct qimg_geom *g = w->g;
	u32 l1i = (u32)qimg_l1_index(g, guest);
	struct qimg_l2_entry old;
	u8 *tbl, *p;
	int ret;

	ret = l2_get(w, l1i, true, &tbl);
	if (!ret)
		ret = l2_entry(w, tbl, guest, &old);
	if (ret)
		return ret;
	p = tbl + (qimg_l2_index(g, guest) << g->l2_entry_shift);
	put_unaligned_be64(raw, p);
	if (g->ext_l2)
		put_unaligned_be64(bitmap, p + 8);
	w->l2_dirty[l1i] = true;
	/* An in-place rewrite keeps its cluster. */
	if ((old.type == QIMG_CLUSTER_NORMAL ||
	     old.type == QIMG_CLUSTER_ZERO_ALLOC) &&
	    (raw & QIMG_L2E_OFFSET_MASK) == old.host_offset &&
	    !(raw & QIMG_OFLAG_COMPRESSED))
		return 0;
	return drop_entry(w, &old);
}

static int check_guest(struct qimgw *w, u64 guest)
{
	if ((guest & (w->cs - 1)) || guest >= w->h->size) {
		qimgctl_err("%s: guest offset %#" PRIx64 " is not a cluster of the image",
			    w->img.path, (uint64_t)guest);
		return -EINVAL;
	}
	return refuse_shared(w);
}

int qimgw_write_subclusters(struct qimgw *w, u64 guest, const void *buf,
			    u32 mask)
{
	u32 l1i = (u32)qimg_l1_index(w->g, guest);
	struct qimg_l2_entry e;
	u64 host, bitmap = 0;
	bool in_place;
	u8 *tbl;
	int ret;

	ret = check_guest(w, guest);
	if (!ret)
		ret = l2_get(w, l1i, true, &tbl);
	if (!ret)
		ret = l2_entry(w, tbl, guest, &e);
	if (ret)
		return ret;
	if (!w->g->ext_l2)
		mask = ~0U;
	in_place = (e.type == QIMG_CLUSTER_NORMAL ||
		    e.type == QIMG_CLUSTER_ZERO_ALLOC) && e.copied;
	if (w->g->ext_l2) {
		/*
		 * A shared cluster is copied whole: @buf holds what the guest
		 * sees in all of it (the callers' contract), and the copy's
		 * subclusters keep their states.
		 */
		bool copy = !in_place && e.type == QIMG_CLUSTER_NORMAL &&
			    w->snapshots_ok;

		if (!in_place && !copy && mask != ~0U &&
		    (e.type == QIMG_CLUSTER_NORMAL ||
		     e.type == QIMG_CLUSTER_COMPRESSED)) {
			qimgctl_err("%s: a partial write of a shared or compressed cluster is not supported",
				    w->img.path);
			return -EOPNOTSUPP;
		}
		/* Subclusters not written keep their state. */
		bitmap = (u64)((in_place || copy ? e.alloc_bitmap : 0) | mask) |
			 ((u64)(e.zero_bitmap & ~mask) << 32);
	}
	if (in_place) {
		host = e.host_offset;
	} else {
		ret = qimgw_alloc(w, 1, &host);
		if (ret)
			return ret;
	}
	ret = w_pwrite(w, buf, w->cs, host, "writing guest data");
	if (ret)
		return ret;
	return l2_set(w, guest, qimg_l2_encode_normal(host, true), bitmap);
}

int qimgw_write_cluster(struct qimgw *w, u64 guest, const void *buf)
{
	return qimgw_write_subclusters(w, guest, buf, ~0U);
}

int qimgw_write_zero(struct qimgw *w, u64 guest)
{
	int ret = check_guest(w, guest);
	void *zero;

	if (ret)
		return ret;
	if (w->h->version >= 3)
		return l2_set(w, guest, w->g->ext_l2 ? 0 :
			      qimg_l2_encode_zero(0, false),
			      w->g->ext_l2 ? 0xffffffffULL << 32 : 0);
	zero = calloc(1, w->cs);
	if (!zero)
		return w_err(w, -ENOMEM, "zero cluster");
	ret = qimgw_write_cluster(w, guest, zero);
	free(zero);
	return ret;
}

int qimgw_discard(struct qimgw *w, u64 guest)
{
	u32 l1i = (u32)qimg_l1_index(w->g, guest);
	struct qimg_l2_entry e;
	const u8 *p;
	u8 *tbl;
	int ret = check_guest(w, guest);

	if (!ret)
		ret = l2_get(w, l1i, false, &tbl);
	if (ret || !tbl)
		return ret;
	p = tbl + (qimg_l2_index(w->g, guest) << w->g->l2_entry_shift);
	if (!get_unaligned_be64(p) &&
	    (!w->g->ext_l2 || !get_unaligned_be64(p + 8)))
		return 0;
	ret = l2_entry(w, tbl, guest, &e);
	return ret ? ret : l2_set(w, guest, 0, 0);
}

int qimgw_write_compressed(struct qimgw *w, u64 guest, const void *cbuf,
			   u64 clen)
{
	u64 host, raw, val, in_cl;
	int ret = check_guest(w, guest);

	if (ret)
		return ret;
	if (!clen || clen >= w->cs)
		return w_err(w, -EINVAL, "compressed cluster size");
	/*
	 * Pack after the previous compressed cluster when it fits in the
	 * same host cluster and its refcount can take one more, as qemu.
	 */
	host = w->cbyte;
	in_cl = host & (w->cs - 1);
	if (host && in_cl && in_cl + clen <= w->cs) {
		ret = ref_get(w, host >> w->g->cluster_bits, &val);
		if (ret)
			return ret;
		if (val && val < w->g->refcount_max)
			ret = qimgw_ref_add(w, host, 1);
		else
			host = 0;
	} else {
		host = 0;
	}
	if (!ret && !host)
		ret = qimgw_alloc(w, 1, &host);
	if (ret)
		return ret;
	raw = qimg_l2_encode_compressed(w->g, host, clen);
	if (!raw)
		return w_err(w, -ERANGE, "encoding a compressed cluster");
	ret = w_pwrite(w, cbuf, clen, host, "writing compressed data");
	if (ret)
		return ret;
	w->cbyte = host + clen;
	return l2_set(w, guest, raw, 0);
}

/* ------------------------------------------------------------------------ */
/* Resize                                                                   */

/*
 * The L2 table at @off of L1 entry @l1i (read into w->l2[l1i]) is shared
 * with an internal snapshot: the active L1 table gets a copy of its own
 * without the entries from guest offset @from on (the caller dropped
 * their references: qemu counts a data cluster once per L1 table that
 * reaches it, through a shared L2 table too).  The old table loses the
 * active L1 table's reference once the copy is durable.
 */
static int l2_unshare(struct qimgw *w, u32 l1i, u64 off, u64 from)
{
	const struct qimg_geom *g = w->g;
	u64 base = (u64)l1i << (g->cluster_bits + g->l2_bits);
	u64 span = w->cs << g->l2_bits, guest, noff;
	u8 *tbl;
	int ret;

	tbl = malloc(w->cs);
	if (!tbl)
		return w_err(w, -ENOMEM, "L2 table");
	memcpy(tbl, w->l2[l1i], w->cs);
	for (guest = base > from ? base : from; guest < base + span;
	     guest += w->cs)
		memset(tbl + (qimg_l2_index(g, guest) << g->l2_entry_shift), 0,
		       (size_t)1 << g->l2_entry_shift);
	ret = qimgw_alloc(w, 1, &noff);
	if (!ret)
		ret = drop_later(w, off);
	if (ret) {
		free(tbl);
		return ret;
	}
	free(w->l2[l1i]);
	w->l2[l1i] = tbl;
	l1_point(w, l1i, noff);
	return 0;
}

/*
 * Shrink as qemu does: every cluster from @size on (rounded up to a
 * cluster) is discarded, the L2 tables past the new end are dropped and
 * their L1 entries cleared; the L1 table keeps its size.  A table shared
 * with an internal snapshot is never written: one past the new end only
 * loses the active L1 table's reference, the one holding the new end is
 * copied (l2_unshare()).
 */
static int shrink_tables(struct qimgw *w, u64 size, u32 new_l1)
{
	const struct qimg_geom *g = w->g;
	u64 from = (size + w->cs - 1) & ~(w->cs - 1);
	u64 span = w->cs << g->l2_bits, base, guest, off, rc;
	struct qimg_l2_entry e;
	u32 l1i;
	u8 *tbl;
	int ret;

	for (l1i = (u32)(from / span); l1i < w->l1_size; l1i++) {
		off = w->l1[l1i] & QIMG_L1E_OFFSET_MASK;
		if (!off)
			continue;
		ret = qimgw_ref_get(w, off, &rc);
		if (!ret)
			ret = l2_get(w, l1i, false, &tbl);
		if (ret)
			return ret;
		base = (u64)l1i * span;
		for (guest = base > from ? base : from;
		     !ret && guest < base + span; guest += w->cs) {
			ret = l2_entry(w, tbl, guest, &e);
			if (!ret)
				ret = drop_entry(w, &e);
			if (rc <= 1)
				memset(tbl + (qimg_l2_index(g, guest) <<
					      g->l2_entry_shift),
				       0, (size_t)1 << g->l2_entry_shift);
		}
		if (ret)
			return ret;
		if (l1i < new_l1) {
			if (rc > 1) {
				ret = l2_unshare(w, l1i, off, from);
				if (ret)
					return ret;
			} else {
				w->l2_dirty[l1i] = true;
			}
			continue;
		}
		ret = drop_later(w, off);
		if (ret)
			return ret;
		w->l1[l1i] = 0;
		w->l1_dirty = true;
		free(w->l2[l1i]);
		w->l2[l1i] = NULL;
		w->l2_dirty[l1i] = false;
	}
	return 0;
}

/* A bigger L1 table: in place if the clusters after it are free. */
static int l1_grow(struct qimgw *w, u32 n)
{
	u64 old_cl = ((u64)w->l1_size * 8 + w->cs - 1) / w->cs;
	u64 new_cl = ((u64)n * 8 + w->cs - 1) / w->cs, off, *l1;
	u8 **l2;
	bool *d;
	int ret;

	if ((u64)n * 8 > QIMG_MAX_L1_BYTES) {
		qimgctl_err("%s: the L1 table would exceed %llu bytes (use a larger cluster size)",
			    w->img.path,
			    (unsigned long long)QIMG_MAX_L1_BYTES);
		return -EFBIG;
	}
	l1 = realloc(w->l1, ((size_t)n + 1) * sizeof(*l1));
	if (l1)
		w->l1 = l1;
	l2 = realloc(w->l2, ((size_t)n + 1) * sizeof(*l2));
	if (l2)
		w->l2 = l2;
	d = realloc(w->l2_dirty, ((size_t)n + 1) * sizeof(*d));
	if (d)
		w->l2_dirty = d;
	if (!l1 || !l2 || !d)
		return w_err(w, -ENOMEM, "L1 table");
	memset(w->l1 + w->l1_size, 0, (n - w->l1_size) * sizeof(*l1));
	memset(w->l2 + w->l1_size, 0, (n - w->l1_size) * sizeof(*l2));
	memset(w->l2_dirty + w->l1_size, 0, (n - w->l1_size) * sizeof(*d));
	if (new_cl > old_cl || !w->l1_off) {
		/*
		 * qemu moves a growing L1 table to new clusters; the old one
		 * stays valid until the header names the new one.
		 */
		ret = qimgw_alloc(w, new_cl, &off);
		if (ret)
			return ret;
		if (w->l1_off && old_cl) {
			if (!w->l1_old_off) {
				w->l1_old_off = w->l1_off;
				w->l1_old_size = w->l1_size;
			} else {
				ret = free_table(w, w->l1_off, old_cl, false);
				if (ret)
					return ret;
			}
		}
		w->l1_off = off;
	}
	w->l1_size = n;
	w->l1_dirty = true;
	w->hdr_dirty = true;
	return 0;
}

/* Refcount blocks that count nothing but themselves go, as in qemu. */
static int drop_empty_rbs(struct qimgw *w)
{
	u64 idx, j, own;
	bool used;
	u8 *blk;
	int ret;

	for (idx = 0; idx < w->rt_entries; idx++) {
		ret = rb_get(w, idx, false, &blk);
		if (ret)
			return ret;
		if (!blk)
			continue;
		own = w->rt[idx] >> w->g->cluster_bits;
		used = false;
		for (j = 0; j < w->g->rb_entries && !used; j++)
			used = ((idx << w->g->rb_bits) + j != own) &&
			       qimg_refcount_get(blk, w->g->refcount_order, j);
		if (used)
			continue;
		if (own >> w->g->rb_bits != idx) {
			ret = drop_later(w, w->rt[idx]);
			if (ret)
				return ret;
		}
		free(w->rb[idx]);
		w->rb[idx] = NULL;
		w->rb_dirty[idx] = false;
		w->rt[idx] = 0;
		w->rt_dirty = true;
	}
	return qimgw_flush(w);
}

int qimgw_trim(struct qimgw *w)
{
	u64 idx, j, end = 0;
	struct stat st;
	u8 *blk;
	int ret;

	ret = drop_empty_rbs(w);
	if (ret)
		return ret;
	for (idx = w->rt_entries; idx > 0 && !end; idx--) {
		ret = rb_get(w, idx - 1, false, &blk);
		if (ret)
			return ret;
		for (j = blk ? w->g->rb_entries : 0; j > 0; j--) {
			if (qimg_refcount_get(blk, w->g->refcount_order,
					      j - 1)) {
				end = (((idx - 1) << w->g->rb_bits) + j) *
				      w->cs;
				break;
			}
		}
	}
	if (fstat(w->img.fd, &st) < 0)
		return w_err(w, -errno, "fstat");
	if (end && end < (u64)st.st_size &&
	    ftruncate(w->img.fd, (off_t)end) < 0)
		return w_err(w, -errno, "truncating the file");
	if (end && end < w->end)
		w->end = end;
	return 0;
}

int qimgw_l1_grow(struct qimgw *w, u32 n)
{
	return n > w->l1_size ? l1_grow(w, n) : 0;
}

int qimgw_set_snapshots(struct qimgw *w, u32 nb, u64 off)
{
	u8 *b = w->img.hdr_buf;
	int ret = qimgw_flush(w);

	if (ret)
		return ret;
	put_unaligned_be32(nb, b + HDR_NB_SNAP_OFF);
	put_unaligned_be64(off, b + HDR_SNAP_OFF);
	/* Both fields in one write, inside the first sector. */
	ret = w_pwrite(w, b + HDR_NB_SNAP_OFF, 12, HDR_NB_SNAP_OFF,
		       "writing the header");
	if (!ret)
		ret = w_sync(w);
	if (ret)
		return ret;
	w->h->nb_snapshots = nb;
	w->h->snapshots_offset = off;
	return 0;
}

int qimgw_resize(struct qimgw *w, u64 size)
{
	u32 n = (u32)qimg_l1_entries_for(w->g->cluster_bits, w->g->ext_l2,
					 size);
	int ret;

	if (size % 512)
		return w_err(w, -EINVAL, "the new size must be a multiple of 512");
	if (size > QIMG_MAX_VIRTUAL_SIZE)
		return w_err(w, -EFBIG, "the new size is too large");
	if (size < w->h->size) {
		/* Internal snapshots are fine (shrink_tables()); bitmaps not. */
		ret = w->h->has_bitmaps_ext && w->h->nb_bitmaps &&
		      !w->bitmaps_tracked ? refuse_shared(w) : 0;
		if (!ret)
			ret = shrink_tables(w, size, n);
		if (ret)
			return ret;
	} else if (n > w->l1_size) {
		ret = l1_grow(w, n);
		if (ret)
			return ret;
	}
	w->h->size = size;
	w->hdr_dirty = true;
	return 0;
}

/*
 * Extended L2: the subclusters of guest cluster @guest in @mask read as
 * zeroes; the entry keeps its host cluster (and its other subclusters).
 * A compressed cluster cannot be zeroed in part (qemu cannot either).
 */
static int zero_subclusters(struct qimgw *w, u64 guest, u32 mask)
{
	u32 l1i = (u32)qimg_l1_index(w->g, guest);
	struct qimg_l2_entry e;
	u64 raw, bitmap;
	const u8 *p;
	u8 *tbl;
	int ret;

	ret = check_guest(w, guest);
	if (!ret)
		ret = l2_get(w, l1i, true, &tbl);
	if (!ret)
		ret = l2_entry(w, tbl, guest, &e);
	if (ret)
		return ret;
	if (e.type == QIMG_CLUSTER_COMPRESSED) {
		qimgctl_err("%s: a compressed cluster cannot be zeroed in part",
			    w->img.path);
		return -EOPNOTSUPP;
	}
	p = tbl + (qimg_l2_index(w->g, guest) << w->g->l2_entry_shift);
	raw = get_unaligned_be64(p);
	bitmap = get_unaligned_be64(p + 8);
	bitmap = (bitmap & ~(u64)mask) | ((u64)mask << 32);
	return l2_set(w, guest, raw, bitmap);
}

/* The image's guest cluster at @guest is stored compressed. */
static int is_compressed(struct qimgw *w, u64 guest, bool *comp)
{
	u32 l1i = (u32)qimg_l1_index(w->g, guest);
	struct qimg_l2_entry e;
	u8 *tbl;
	int ret;

	*comp = false;
	ret = l2_get(w, l1i, false, &tbl);
	if (ret || !tbl)
		return ret;
	ret = l2_entry(w, tbl, guest, &e);
	if (!ret)
		*comp = e.type == QIMG_CLUSTER_COMPRESSED;
	return ret;
}

/*
 * The plan of qimgw_grow(): zeroes from @zstart (the old size rounded up
 * to a subcluster) to the new end, and the bytes in between written.
 */
struct grow_plan {
	u64 old, size, cs, sc;
	u64 cstart;		/* the cluster holding the old end */
	u64 zstart;		/* first byte made a zero (sub)cluster */
	bool head;		/* [old, zstart) is written */
	bool zero;		/* [zstart, size) is not empty */
};

/* The cluster holding the old end gets its guest data, zeroes after it. */
static int grow_head(struct qimgw *w, const struct grow_plan *gp,
		     const u8 *buf, bool comp)
{
	u32 sub = (u32)((gp->old - gp->cstart) / gp->sc);

	/*
	 * Extended L2: only the subcluster holding the old end is written,
	 * unless the cluster is compressed: then all of it (qemu's
	 * copy-on-write of a compressed cluster takes the whole cluster).
	 */
	if (!w->g->ext_l2 || comp)
		return qimgw_write_cluster(w, gp->cstart, buf);
	return qimgw_write_subclusters(w, gp->cstart, buf, 1U << sub);
}

/* Zero (sub)clusters over [zstart, size), in the order qemu makes them. */
static int grow_zero(struct qimgw *w, const struct grow_plan *gp)
{
	u64 o = gp->zstart, c0 = o & ~(gp->cs - 1), end;
	u32 a, b, mask;
	int ret;

	if (o > c0) {
		/* Extended L2: the rest of the cluster holding the old end. */
		end = c0 + gp->cs < gp->size ? c0 + gp->cs : gp->size;
		a = (u32)((o - c0) / gp->sc);
		b = (u32)((end - 1 - c0) / gp->sc);
		mask = (b == 31 ? ~0U : (1U << (b + 1)) - 1) & ~((1U << a) - 1);
		ret = zero_subclusters(w, c0, mask);
		if (ret)
			return ret;
		o = c0 + gp->cs;
	}
	for (; o < gp->size; o += gp->cs) {
		ret = qimgw_write_zero(w, o);
		if (ret)
			return ret;
	}
	return 0;
}

int qimgw_grow(struct qimgw *w, u64 size, struct qimgr *r,
	       struct qimgctl_node *n)
{
	struct grow_plan gp = { .old = w->h->size, .size = size, .cs = w->cs };
	u32 l1n = (u32)qimg_l1_entries_for(w->g->cluster_bits, w->g->ext_l2,
					   size);
	bool comp = false;
	u8 *buf = NULL;
	int ret;

	if (size <= gp.old || !n || !n->backing ||
	    n->backing->length <= gp.old) {
		ret = qimgw_resize(w, size);
		return ret ? ret : qimgw_flush(w);
	}
	gp.sc = w->g->ext_l2 ? gp.cs >> 5 : gp.cs;
	gp.cstart = gp.old & ~(gp.cs - 1);
	gp.zstart = (gp.old + gp.sc - 1) & ~(gp.sc - 1);
	gp.head = gp.zstart > gp.old;
	gp.zero = gp.zstart < size;
	if (w->h->nb_snapshots && !w->snapshots_ok) {
		qimgctl_err("%s: growing an image with internal snapshots over a longer backing file is not supported by this command",
			    w->img.path);
		return -EOPNOTSUPP;
	}
	ret = refuse_shared(w);
	if (!ret && w->g->ext_l2 && (gp.old & (gp.cs - 1)))
		ret = is_compressed(w, gp.cstart, &comp);
	if (ret)
		return ret;
	/*
	 * qemu grows the L1 table first; then version 2 (no zero flag) or a
	 * compressed cluster to zero in part make it fail, the grown table
	 * kept and the size not changed.
	 */
	if (gp.zero && (w->h->version < 3 ||
			(comp && (gp.zstart & (gp.cs - 1))))) {
		if (l1n > w->l1_size) {
			ret = qimgw_l1_grow(w, l1n);
			if (!ret)
				ret = qimgw_flush(w);
			if (ret)
				return ret;
		}
		qimgctl_err("%s: Failed to zero out new clusters: Operation not supported (%s)",
			    w->img.path, comp ?
			    "the cluster holding the old end is compressed" :
			    "a version 2 image has no zero clusters, and the backing file is longer");
		return -EOPNOTSUPP;
	}
	/* What the guest sees of the head cluster, read before any change. */
	if (gp.head) {
		buf = calloc(1, gp.cs);
		if (!buf)
			return w_err(w, -ENOMEM, "growing");
		ret = qimgr_read(r, n, gp.cstart, buf, gp.old - gp.cstart);
	}
	if (!ret)
		ret = qimgw_resize(w, size);
	if (!ret && gp.zero)
		ret = grow_zero(w, &gp);
	if (!ret && gp.head)
		ret = grow_head(w, &gp, buf, comp);
	free(buf);
	return ret ? ret : qimgw_flush(w);
}

/* ------------------------------------------------------------------------ */
/* Header rewrite and compat downgrade                                      */

int qimgw_rewrite_header(struct qimgw *w, const struct qimg_header *nh)
{
	u8 *buf;
	int ret;

	if (w->h->nb_unknown_exts) {
		qimgctl_err("%s: the header has extensions qimgctl does not know; not rewriting it",
			    w->img.path);
		return -EOPNOTSUPP;
	}
	ret = qimgw_flush(w);
	if (ret)
		return ret;
	buf = malloc(w->cs);
	if (!buf)
		return w_err(w, -ENOMEM, "header");
	ret = qimg_header_encode(nh, buf, w->cs);
	if (ret < 0) {
		free(buf);
		return w_err(w, ret, "encoding the header");
	}
	/* The tables' places and sizes are the writer's. */
	put_unaligned_be64(w->h->size, buf + HDR_SIZE_OFF);
	put_unaligned_be32(w->l1_size, buf + HDR_L1_SIZE_OFF);
	put_unaligned_be64(w->l1_off, buf + HDR_L1_OFF);
	put_unaligned_be64(w->rt_off, buf + HDR_RT_OFF);
	put_unaligned_be32(w->rt_clusters, buf + HDR_RT_CLUSTERS_OFF);
	ret = w_pwrite(w, buf, w->cs, 0, "writing the header");
	if (!ret)
		ret = w_sync(w);
	if (!ret) {
		memcpy(w->img.hdr_buf, buf, w->img.hdr_len);
		*w->h = *nh;
	}
	free(buf);
	return ret;
}

int qimgw_expand_zeros(struct qimgw *w, bool has_backing)
{
	const struct qimg_geom *g = w->g;
	struct qimg_l2_entry e;
	u64 guest, idx;
	void *zero = NULL;
	u32 l1i;
	u8 *tbl;
	int ret = 0;

	for (l1i = 0; !ret && l1i < w->l1_size; l1i++) {
		ret = l2_get(w, l1i, false, &tbl);
		if (ret || !tbl)
			continue;
		for (idx = 0; !ret && idx < g->l2_entries; idx++) {
			guest = (((u64)l1i << g->l2_bits) + idx) << g->cluster_bits;
			if (guest >= w->h->size)
				break;
			ret = l2_entry(w, tbl, guest, &e);
			if (ret)
				break;
			if (e.type == QIMG_CLUSTER_ZERO_PLAIN && !has_backing) {
				/* Unallocated reads as zeroes too. */
				ret = l2_set(w, guest, 0, 0);
				continue;
			}
			if (e.type != QIMG_CLUSTER_ZERO_PLAIN &&
			    e.type != QIMG_CLUSTER_ZERO_ALLOC)
				continue;
			if (!zero) {
				zero = calloc(1, w->cs);
				if (!zero) {
					ret = w_err(w, -ENOMEM, "zero cluster");
					break;
				}
			}
			ret = qimgw_write_cluster(w, guest, zero);
		}
	}
	free(zero);
	return ret ? ret : qimgw_flush(w);
}

/* ------------------------------------------------------------------------ */
/* Emptying an image (after a commit)                                      */

int qimgw_can_empty(struct qimgw *w)
{
	(void)w;
	return 0;
}

/* The incompatible-feature word of the header, written and synced. */
static int write_incompat(struct qimgw *w, u64 bits)
{
	u8 *b = w->img.hdr_buf;
	int ret;

	put_unaligned_be64(bits, b + QIMG_HDR_INCOMPAT_OFFSET);
	ret = w_pwrite(w, b + QIMG_HDR_INCOMPAT_OFFSET, 8,
		       QIMG_HDR_INCOMPAT_OFFSET, "writing the header");
	return ret ? ret : w_sync(w);
}

/* Zeroes over @len bytes of the file at @off. */
static int write_zeroes(struct qimgw *w, u64 off, u64 len, const char *what)
{
	u8 *zero = calloc(1, w->cs);
	u64 n;
	int ret = 0;

	if (!zero)
		return w_err(w, -ENOMEM, what);
	for (; !ret && len; off += n, len -= n) {
		n = len < w->cs ? len : w->cs;
		ret = w_pwrite(w, zero, n, off, what);
	}
	free(zero);
	return ret;
}

/* The fresh layout: header, refcount table, one block, the L1 table. */
static int empty_rebuild(struct qimgw *w, u64 l1_cl)
{
	u64 incompat = w->h->incompatible_features, i;
	u64 used = 3 + l1_cl;
	u8 *b = w->img.hdr_buf, *blk, rt0[8];
	int ret;

	/* 1. Refcounts may be wrong from here on: say so. */
	ret = write_incompat(w, incompat | QIMG_INCOMPAT_DIRTY);
	/* 2. Nothing is mapped any more: the guest sees the backing file. */
	if (!ret && w->l1_size)
		ret = write_zeroes(w, w->l1_off, (u64)w->l1_size * 8,
				   "clearing the L1 table");
	if (!ret)
		ret = w_sync(w);
	/* 3. Clusters 1 .. used-1 become the new tables, all zero. */
	if (!ret)
		ret = write_zeroes(w, w->cs, (used - 1) * w->cs,
				   "clearing the new tables");
	if (!ret)
		ret = w_sync(w);
	if (ret)
		return ret;
	/* 4. The header names them (one sector write). */
	w->l1_off = 3 * w->cs;
	w->rt_off = w->cs;
	w->rt_clusters = 1;
	put_unaligned_be32(w->l1_size, b + HDR_L1_SIZE_OFF);
	put_unaligned_be64(w->l1_off, b + HDR_L1_OFF);
	put_unaligned_be64(w->rt_off, b + HDR_RT_OFF);
	put_unaligned_be32(w->rt_clusters, b + HDR_RT_CLUSTERS_OFF);
	ret = w_pwrite(w, b + HDR_L1_SIZE_OFF,
		       HDR_RT_CLUSTERS_OFF + 4 - HDR_L1_SIZE_OFF,
		       HDR_L1_SIZE_OFF, "writing the header");
	if (!ret)
		ret = w_sync(w);
	if (ret)
		return ret;
	/* 5. The one refcount block counts the clusters in use. */
	blk = calloc(1, w->cs);
	if (!blk)
		return w_err(w, -ENOMEM, "refcount block");
	for (i = 0; !ret && i < used; i++)
		ret = qimg_refcount_set(blk, w->g->refcount_order, i, 1);
	if (ret) {
		free(blk);
		return w_err(w, ret, "setting a refcount");
	}
	ret = w_pwrite(w, blk, w->cs, 2 * w->cs, "writing a refcount block");
	free(blk);
	put_unaligned_be64(2 * w->cs, rt0);
	if (!ret)
		ret = w_sync(w);
	if (!ret)
		ret = w_pwrite(w, rt0, 8, w->cs, "writing the refcount table");
	if (!ret)
		ret = w_sync(w);
	/* 6. Nothing lives past the tables. */
	if (!ret && ftruncate(w->img.fd, (off_t)(used * w->cs)) < 0)
		ret = w_err(w, -errno, "truncating the file");
	if (!ret)
		ret = w_sync(w);
	/* 7. The refcounts are right again. */
	if (!ret)
		ret = write_incompat(w, incompat);
	if (!ret)
		w->end = used * w->cs;
	return ret;
}

/*
 * After the flush freed them: give the clusters that held guest data back
 * to the filesystem, as qemu's discard does (errors do not matter).
 */
static void punch_freed(struct qimgw *w, const u64 *list, size_t n)
{
	u64 val;
	size_t i;

	for (i = 0; i < n; i++)
		if (!qimgw_ref_get(w, list[i], &val) && !val)
			(void)fallocate(w->img.fd, FALLOC_FL_PUNCH_HOLE |
					FALLOC_FL_KEEP_SIZE,
					(off_t)(list[i] & ~(w->cs - 1)),
					(off_t)w->cs);
}

/*
 * Discarding every cluster (what qemu falls back to): qemu frees each
 * cluster as it goes and allocates the first free cluster of the file
 * from a cursor that a free below it moves back.  The same here, with
 * the frees made durable (one flush per L1 entry) before a cluster is
 * used again.
 */
struct empty_state {
	u64 *freed;		/* every cluster that lost a reference */
	size_t nb, cap;
	u64 cursor;		/* first cluster the next allocation tries */
};

/* One cluster for a new L2 table: the first free one from the cursor. */
static int empty_alloc(struct qimgw *w, struct empty_state *st, u64 *off)
{
	u64 cl, val;
	int ret;

	for (cl = st->cursor; cl < (w->end >> w->g->cluster_bits); cl++) {
		ret = ref_get(w, cl, &val);
		if (ret)
			return ret;
		if (!val) {
			st->cursor = cl + 1;
			*off = cl << w->g->cluster_bits;
			return ref_set(w, cl, 1);
		}
	}
	ret = qimgw_alloc(w, 1, off);
	st->cursor = (*off >> w->g->cluster_bits) + 1;
	return ret;
}

/*
 * The L2 table of L1 entry @l1i, as a table of its own: an entry without
 * the COPIED flag (a table shared with a snapshot, or none at all) gets a
 * new cluster holding a copy (or zeroes), and the old table loses this
 * reference after the flush.  qemu's discard does the same, so an emptied
 * image has a table for every L1 entry.
 */
static int l2_own(struct qimgw *w, struct empty_state *st, u32 l1i, u8 **tbl)
{
	struct qimg_err err = { "" };
	u64 off, new_off;
	bool copied;
	int ret;

	ret = qimg_l1_decode(w->g, w->l1[l1i], w->end, &off, &copied, &err);
	if (ret) {
		qimgctl_err("%s: L1 entry %u: %s", w->img.path, l1i, err.msg);
		return -EUCLEAN;
	}
	ret = l2_get(w, l1i, false, tbl);
	if (ret || (off && copied))
		return ret;
	if (!*tbl) {
		w->l2[l1i] = calloc(1, w->cs);
		if (!w->l2[l1i])
			return w_err(w, -ENOMEM, "L2 table");
		*tbl = w->l2[l1i];
	}
	ret = empty_alloc(w, st, &new_off);
	if (!ret && off)
		ret = drop_later(w, off);
	if (!ret)
		l1_point(w, l1i, new_off);
	return ret;
}

/*
 * Make the pending frees durable; remember them for the punching and move
 * the cursor back to the lowest cluster they freed.
 */
static int empty_flush(struct qimgw *w, struct empty_state *st)
{
	size_t nb = w->nb_drop, i;
	u64 *f, val;
	int ret;

	if (st->nb + nb > st->cap) {
		st->cap = (st->nb + nb) * 2;
		f = realloc(st->freed, st->cap * sizeof(*f));
		if (!f)
			return w_err(w, -ENOMEM, "freeing clusters");
		st->freed = f;
	}
	if (nb)
		memcpy(st->freed + st->nb, w->drop, nb * sizeof(*f));
	ret = qimgw_flush(w);
	for (i = st->nb; !ret && i < st->nb + nb; i++) {
		ret = qimgw_ref_get(w, st->freed[i], &val);
		if (!ret && !val &&
		    (st->freed[i] >> w->g->cluster_bits) < st->cursor)
			st->cursor = st->freed[i] >> w->g->cluster_bits;
	}
	st->nb += nb;
	return ret;
}

/*
 * Clear every L2 entry (to unallocated, also on v3: the guest reads the
 * backing file); the clusters lose this reference (a snapshot's stay).
 */
static int empty_discard(struct qimgw *w)
{
	const struct qimg_geom *g = w->g;
	struct empty_state st = { NULL, 0, 0, 0 };
	struct qimg_l2_entry e;
	u64 guest, idx;
	u32 l1i;
	u8 *tbl, *p;
	int ret = 0;

	for (l1i = 0; !ret && l1i < w->l1_size; l1i++) {
		if (((u64)l1i << (g->l2_bits + g->cluster_bits)) >= w->h->size)
			break;
		ret = l2_own(w, &st, l1i, &tbl);
		for (idx = 0; !ret && idx < g->l2_entries; idx++) {
			guest = (((u64)l1i << g->l2_bits) + idx) <<
				g->cluster_bits;
			if (guest >= w->h->size)
				break;
			ret = l2_entry(w, tbl, guest, &e);
			if (ret)
				break;
			p = tbl + (idx << g->l2_entry_shift);
			if (!get_unaligned_be64(p) &&
			    (!g->ext_l2 || !get_unaligned_be64(p + 8)))
				continue;
			memset(p, 0, (size_t)1 << g->l2_entry_shift);
			w->l2_dirty[l1i] = true;
			ret = drop_entry(w, &e);
		}
		if (!ret)
			ret = empty_flush(w, &st);
	}
	if (!ret) {
		punch_freed(w, st.freed, st.nb);
		ret = w_sync(w);
	}
	free(st.freed);
	return ret;
}

int qimgw_make_empty(struct qimgw *w)
{
	u64 l1_cl = ((u64)w->l1_size * 8 + w->cs - 1) / w->cs;
	int ret = qimgw_can_empty(w);

	if (!ret)
		ret = qimgw_flush(w);
	if (ret)
		return ret;
	if (w->h->version >= 3 && !w->h->nb_snapshots &&
	    !(w->h->has_bitmaps_ext && w->h->nb_bitmaps) &&
	    3 + l1_cl <= w->g->rb_entries)
		return empty_rebuild(w, l1_cl);
	return empty_discard(w);
}

/* ------------------------------------------------------------------------ */
/* Refcount width                                                           */

/* Largest number of clusters whose refcounts we hold at once (2 GiB). */
#define REORDER_MAX_CLUSTERS	(1ULL << 28)

/* Build the new refcount structures at @base; returns them in @tbl/@blk. */
static int reorder_build(struct qimgw *w, const u64 *refs, u64 n_cl,
			 u32 order, u64 base, u64 rt_cl, u64 rb_cl, u64 *tbl,
			 u8 *blk)
{
	u64 per = 1ULL << (w->g->cluster_bits + 3 - order), i, v;
	u64 first_new = base >> w->g->cluster_bits;
	int ret;

	for (i = 0; i < rb_cl; i++)
		tbl[i] = base + (rt_cl + i) * w->cs;
	for (i = 0; i < first_new + rt_cl + rb_cl; i++) {
		v = i < n_cl ? refs[i] : 0;
		if (i >= first_new)
			v = 1;
		if (!v)
			continue;
		ret = qimg_refcount_set(blk + (i / per) * w->cs, order,
					i % per, v);
		if (ret)
			return w_err(w, ret, "setting a refcount");
	}
	return 0;
}

int qimgw_set_refcount_order(struct qimgw *w, u32 order)
{
	u64 n_cl, i, max, per, rt_cl = 1, rb_cl = 1, need_rb, need_rt;
	u64 base, total, *refs = NULL, *tbl = NULL;
	u8 *blk = NULL, *b = w->img.hdr_buf;
	struct qimg_err err = { "" };
	int ret;

	if (order == w->h->refcount_order)
		return 0;
	ret = qimgw_flush(w);
	if (ret)
		return ret;
	n_cl = w->end >> w->g->cluster_bits;
	if (n_cl > REORDER_MAX_CLUSTERS)
		return w_err(w, -EFBIG, "too many clusters to change the refcount width");
	refs = calloc(n_cl ? n_cl : 1, sizeof(*refs));
	if (!refs)
		return w_err(w, -ENOMEM, "refcounts");
	for (i = 0; i < n_cl; i++) {
		ret = ref_get(w, i, &refs[i]);
		if (ret)
			goto out;
	}
	/* The old structures are garbage once the header names the new. */
	for (i = 0; i < w->rt_clusters; i++)
		if ((w->rt_off >> w->g->cluster_bits) + i < n_cl)
			refs[(w->rt_off >> w->g->cluster_bits) + i] = 0;
	for (i = 0; i < w->rt_entries; i++)
		if (w->rt[i] && (w->rt[i] >> w->g->cluster_bits) < n_cl)
			refs[w->rt[i] >> w->g->cluster_bits] = 0;
	max = order == 6 ? ~0ULL : (1ULL << (1U << order)) - 1;
	for (i = 0; i < n_cl; i++) {
		if (refs[i] > max) {
			qimgctl_err("%s: Cannot decrease refcount entry width to %u bits: Cluster at offset %#" PRIx64 " has a refcount of %" PRIu64,
				    w->img.path, 1U << order,
				    (uint64_t)(i << w->g->cluster_bits),
				    (uint64_t)refs[i]);
			ret = -ERANGE;
			goto out;
		}
	}
	per = 1ULL << (w->g->cluster_bits + 3 - order);
	base = w->end;
	for (;;) {
		total = (base >> w->g->cluster_bits) + rt_cl + rb_cl;
		need_rb = (total + per - 1) / per;
		need_rt = (need_rb * 8 + w->cs - 1) / w->cs;
		if (need_rb <= rb_cl && need_rt <= rt_cl)
			break;
		rb_cl = need_rb > rb_cl ? need_rb : rb_cl;
		rt_cl = need_rt > rt_cl ? need_rt : rt_cl;
	}
	if (rt_cl * w->cs > QIMG_MAX_REFTABLE_BYTES) {
		ret = w_err(w, -EFBIG, "the new refcount table is too large");
		goto out;
	}
	tbl = calloc(rt_cl * w->cs / 8, sizeof(*tbl));
	blk = calloc(rb_cl, w->cs);
	if (!tbl || !blk) {
		ret = w_err(w, -ENOMEM, "refcount blocks");
		goto out;
	}
	ret = reorder_build(w, refs, n_cl, order, base, rt_cl, rb_cl, tbl,
			    blk);
	if (ret)
		goto out;
	/* New blocks, new table, then the header switches to them. */
	ret = w_pwrite(w, blk, rb_cl * w->cs, base + rt_cl * w->cs,
		       "writing refcount blocks");
	if (!ret)
		ret = write_table(w, tbl, rt_cl * w->cs / 8, base,
				  "writing the refcount table");
	if (!ret)
		ret = w_sync(w);
	if (ret)
		goto out;
	put_unaligned_be32(order, b + 96);
	w->rt_off = base;
	w->rt_clusters = (u32)rt_cl;
	ret = write_header(w, false);
	if (ret)
		goto out;
	/* Reload the writer's view from what is now on disk. */
	for (i = 0; i < w->rt_entries; i++)
		free(w->rb[i]);
	rt_replace(w, NULL, NULL, NULL, 0);
	w->h->refcount_order = order;
	w->h->refcount_table_offset = base;
	w->h->refcount_table_clusters = (u32)rt_cl;
	ret = qimg_geom_init(w->h, &err);
	if (ret) {
		qimgctl_err("%s: %s", w->img.path, err.msg);
		goto out;
	}
	w->end = base + (rt_cl + rb_cl) * w->cs;
	w->cbyte = 0;
	ret = load_reftable(w);
out:
	free(refs);
	free(tbl);
	free(blk);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Compression                                                              */

size_t qimgw_compress(u8 type, const void *src, size_t len, void *dst)
{
	size_t out;

	if (type == QIMG_COMPRESSION_ZSTD) {
		out = ZSTD_compress(dst, len - 1, src, len,
				    ZSTD_CLEVEL_DEFAULT);
		return ZSTD_isError(out) ? 0 : out;
	} else {
		z_stream z;
		int ret;

		memset(&z, 0, sizeof(z));
		/* Raw deflate, 4 KiB window: what qemu's inflate expects. */
		if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return 0;
		z.next_in = (Bytef *)src;
		z.avail_in = (uInt)len;
		z.next_out = dst;
		z.avail_out = (uInt)(len - 1);
		ret = deflate(&z, Z_FINISH);
		out = ret == Z_STREAM_END ? len - 1 - z.avail_out : 0;
		deflateEnd(&z);
		return out;
	}
}

/* Decompress @clen bytes into exactly @len; qemu ignores what follows. */
static int decompress(u8 type, const void *src, size_t clen, void *dst,
		      size_t len)
{
	if (type == QIMG_COMPRESSION_ZSTD) {
		ZSTD_DCtx *d = ZSTD_createDCtx();
		ZSTD_inBuffer in = { src, clen, 0 };
		ZSTD_outBuffer o = { dst, len, 0 };
		size_t r = 1;

		if (!d)
			return -ENOMEM;
		while (o.pos < o.size && in.pos < in.size) {
			r = ZSTD_decompressStream(d, &o, &in);
			if (ZSTD_isError(r) || !r)
				break;
		}
		ZSTD_freeDCtx(d);
		return !ZSTD_isError(r) && o.pos == o.size ? 0 : -EIO;
	} else {
		z_stream z;
		int ret;

		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, -12) != Z_OK)
			return -ENOMEM;
		z.next_in = (Bytef *)src;
		z.avail_in = (uInt)clen;
		z.next_out = dst;
		z.avail_out = (uInt)len;
		ret = inflate(&z, Z_FINISH);
		inflateEnd(&z);
		if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && !z.avail_out)
			return 0;
		return -EIO;
	}
}

/* ------------------------------------------------------------------------ */
/* Reading guest data                                                       */

int qimgr_init(struct qimgr *r, struct qimgctl_node *top)
{
	struct qimgctl_node *n;
	int i = 0;

	memset(r, 0, sizeof(*r));
	r->top = top;
	for (n = top; n && i < QIMGCTL_MAX_CHAIN; n = n->backing, i++) {
		r->cache[i].n = n;
		/* Raw files and QED images have no compressed clusters. */
		if (n->raw || n->qed)
			continue;
		if (n->img.h.crypt_method) {
			qimgctl_err("%s: reading encrypted images is not supported",
				    n->path);
			return -EOPNOTSUPP;
		}
		if (n->map.data_path) {
			qimgctl_err("%s: reading images with an external data file is not supported",
				    n->path);
			return -EOPNOTSUPP;
		}
		r->cache[i].buf = malloc(n->img.h.geom.cluster_size);
		r->cache[i].cbuf = malloc(n->img.h.geom.cluster_size * 2);
		if (!r->cache[i].buf || !r->cache[i].cbuf) {
			qimgctl_err("out of memory");
			return -ENOMEM;
		}
	}
	r->nb_cache = i;
	return 0;
}

void qimgr_fini(struct qimgr *r)
{
	int i;

	for (i = 0; i < r->nb_cache; i++) {
		free(r->cache[i].buf);
		free(r->cache[i].cbuf);
	}
	memset(r, 0, sizeof(*r));
}

static struct qimgr_cache *cache_of(struct qimgr *r, struct qimgctl_node *n)
{
	int i;

	for (i = 0; i < r->nb_cache; i++)
		if (r->cache[i].n == n)
			return &r->cache[i];
	return NULL;
}

int qimgr_status(struct qimgr *r, struct qimgctl_node *n, u64 off, u64 max,
		 bool top_only, u64 *len, bool *zero, bool *alloc)
{
	struct qimgctl_extent ext;
	bool ba;
	int ret;

	*alloc = true;
	if (off >= n->length) {
		*len = max;
		*zero = true;
		*alloc = false;
		return 0;
	}
	ret = qimgctl_node_status(n, off, max, &ext);
	if (ret)
		return ret;
	*len = ext.len;
	switch (ext.status) {
	case QIMGCTL_ST_DATA:
		*zero = false;
		return 0;
	case QIMGCTL_ST_ZERO:
		*zero = true;
		return 0;
	default:
		*alloc = false;
		if (!n->backing || top_only) {
			*zero = !n->backing;
			return 0;
		}
		return qimgr_status(r, n->backing, off, ext.len, false, len,
				    zero, &ba);
	}
}

/* One compressed cluster of @n, decompressed (cached). */
static int read_compressed(struct qimgr *r, struct qimgctl_node *n, u64 raw,
			   const u8 **data)
{
	const struct qimg_geom *g = &n->img.h.geom;
	struct qimgr_cache *c = cache_of(r, n);
	u64 off, nb, clen;
	int ret;

	if (!c)
		return -EINVAL;
	if (c->raw == raw) {
		*data = c->buf;
		return 0;
	}
	off = raw & g->coffset_mask;
	nb = ((raw >> g->csize_shift) & g->csize_mask) + 1;
	clen = nb * QIMG_COMPRESSED_SECTOR_SIZE - (off & 511);
	if (clen > g->cluster_size * 2)
		clen = g->cluster_size * 2;
	/* The last sector may run past the end of the file. */
	if (off >= n->img.file_size)
		return -EUCLEAN;
	if (clen > n->img.file_size - off)
		clen = n->img.file_size - off;
	ret = qimgctl_pread(n->img.fd, c->cbuf, clen, off);
	if (ret)
		return ret;
	c->raw = 0;
	ret = decompress(n->img.h.compression_type, c->cbuf, clen, c->buf,
			 g->cluster_size);
	if (ret) {
		qimgctl_err("%s: cannot decompress the cluster at %#" PRIx64,
			    n->path, (uint64_t)off);
		return -EUCLEAN;
	}
	c->raw = raw;
	*data = c->buf;
	return 0;
}

int qimgr_read(struct qimgr *r, struct qimgctl_node *n, u64 off, void *buf,
	       u64 len)
{
	u8 *p = buf;
	int ret;

	while (len) {
		struct qimgctl_extent ext;
		u64 chunk;

		if (!n || off >= n->length) {
			memset(p, 0, len);
			return 0;
		}
		chunk = n->length - off < len ? n->length - off : len;
		if (n->raw) {
			ret = qimgctl_pread(n->raw_fd, p, chunk, off);
			if (ret) {
				qimgctl_err("%s: read: %s", n->path,
					    strerror(-ret));
				return ret;
			}
			goto next;
		}
		if (n->qed)
			ret = qimgctl_qed_status(n->qed, off, chunk, &ext);
		else
			ret = qimgctl_map_status(&n->map, off, chunk, &ext);
		if (ret)
			return ret;
		chunk = ext.len;
		if (ext.status == QIMGCTL_ST_ZERO) {
			memset(p, 0, chunk);
		} else if (ext.status == QIMGCTL_ST_UNALLOC) {
			ret = qimgr_read(r, n->backing, off, p, chunk);
			if (ret)
				return ret;
		} else if (ext.compressed) {
			const struct qimg_geom *g = &n->img.h.geom;
			u64 l2_off, raw, bm, cs = g->cluster_size;
			const u8 *data;

			l2_off = n->map.l1[qimg_l1_index(g, off)] &
				 QIMG_L1E_OFFSET_MASK;
			ret = qimgctl_l2_raw(&n->map, l2_off,
					     qimg_l2_index(g, off), &raw, &bm);
			if (!ret)
				ret = read_compressed(r, n, raw, &data);
			if (ret)
				return ret;
			memcpy(p, data + (off & (cs - 1)), chunk);
		} else {
			ret = qimgctl_pread(qimgctl_node_fd(n), p, chunk,
					    ext.host_offset);
			if (ret) {
				qimgctl_err("%s: read: %s", n->path,
					    strerror(-ret));
				return ret;
			}
		}
next:
		p += chunk;
		off += chunk;
		len -= chunk;
	}
	return 0;
}
