// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl bitmap: persistent dirty bitmaps of a detached qcow2 image, as
 * `qemu-img bitmap --add|--remove|--clear|--enable|--disable|--merge`
 * changes them, and --export, which prints a bitmap's dirty extents (what
 * an incremental backup copies) as JSON.
 *
 * The image's bitmaps live in the bitmaps header extension (how many,
 * where the directory is), the bitmap directory (one entry per bitmap:
 * name, flags, granularity, where its bitmap table is) and the bitmap
 * tables (per cluster of bitmap data: its offset, 0 for all zeroes, 1 for
 * all ones).  Bit i of the data is byte i / 8, bit i % 8 (LSB first), and
 * covers guest bytes [i, i + 1) * granularity.
 *
 * The actions run in the order given, in memory; then, as in qemu, what
 * they left is stored in an order where an interruption leaks clusters at
 * worst and never changes what a bitmap says:
 *   1. the data clusters and bitmap table of every bitmap whose bits
 *      changed go to new clusters, and a new directory too   (flush)
 *   2. the header (its bitmaps extension, the autoclear bit) names the
 *      new directory, in one header write                   (fsync)
 *   3. the old directory, and the tables and data clusters of removed or
 *      changed bitmaps, are freed                            (flush)
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_rw.h"

#define BM_DEFAULT_GRAN		65536ULL

/*
 * qemu 7.2's limits on a bitmap it adds: the bitmap data (one bit per
 * granule of the virtual disk) within 512 MiB and within what a bitmap
 * table of 2^27 entries covers; the directory within 1 KiB per bitmap of
 * the 65535 bitmaps it allows.
 */
#define BM_MAX_PHYS_SIZE	0x20000000ULL
#define BM_QEMU_MAX_DIR_SIZE	(1024ULL * QIMG_MAX_BITMAPS)

struct bm {
	char *name;
	u32 flags;
	u8 type;
	u8 gran_bits;
	u8 *extra;
	u32 extra_len;
	u64 table_off;		/* on disk, 0 for a new bitmap */
	u32 table_size;
	u64 *table;		/* raw CPU-endian entries read, or NULL */
	u8 *bits;		/* the data, table_size clusters; NULL: not read */
	bool changed;		/* bits to be written anew */
	bool keep;		/* in use: left as it is (qimgctl_bitmaps_begin) */
};

struct bmdir {
	struct bm *v;
	u32 n;
	u64 off, size;		/* the directory read */
	/* Clusters to free once the new directory is in the header. */
	u64 *drop;
	size_t nb_drop, cap;
};

static int oom(const char *path)
{
	qimgctl_err("%s: out of memory", path);
	return -ENOMEM;
}

static void bm_free(struct bm *b)
{
	free(b->name);
	free(b->extra);
	free(b->table);
	free(b->bits);
}

static void dir_free(struct bmdir *d)
{
	u32 i;

	for (i = 0; i < d->n; i++)
		bm_free(&d->v[i]);
	free(d->v);
	free(d->drop);
	memset(d, 0, sizeof(*d));
}

static int drop_add(struct bmdir *d, const char *path, u64 off)
{
	if (d->nb_drop == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		u64 *p = realloc(d->drop, cap * sizeof(*p));

		if (!p)
			return oom(path);
		d->drop = p;
		d->cap = cap;
	}
	d->drop[d->nb_drop++] = off;
	return 0;
}

/* Entries of the bitmap table of a bitmap of @gran_bits on @img. */
static u64 table_entries(const struct qimgctl_image *img, u8 gran_bits)
{
	u64 nbits = (img->h.size + (1ULL << gran_bits) - 1) >> gran_bits;
	u64 bytes = (nbits + 7) / 8;

	return (bytes + img->h.geom.cluster_size - 1) >>
	       img->h.geom.cluster_bits;
}

static int dir_load(struct qimgctl_image *img, struct bmdir *d)
{
	const struct qimg_header *h = &img->h;
	struct qimg_err err = { "" };
	struct qimg_bitmap b;
	u64 pos = 0;
	u8 *buf;
	u32 i;
	int ret;

	memset(d, 0, sizeof(*d));
	if (!h->has_bitmaps_ext || !h->nb_bitmaps)
		return 0;
	d->off = h->bitmap_directory_offset;
	d->size = h->bitmap_directory_size;
	buf = malloc(d->size ? d->size : 1);
	d->v = calloc(h->nb_bitmaps, sizeof(*d->v));
	if (!buf || !d->v) {
		free(buf);
		return oom(img->path);
	}
	ret = qimgctl_pread(img->fd, buf, d->size, d->off);
	if (ret) {
		qimgctl_err("%s: reading the bitmap directory: %s", img->path,
			    strerror(-ret));
		goto out;
	}
	for (i = 0; i < h->nb_bitmaps; i++) {
		struct bm *e = &d->v[i];

		ret = pos < d->size ?
		      qimg_bitmap_decode(&h->geom, buf + pos, d->size - pos,
					 img->file_size, &b, &err) :
		      qimg_fail(&err, -EUCLEAN, "directory too short");
		if (ret || !b.entry_len) {
			qimgctl_err("%s: bitmap %u: %s", img->path, i + 1,
				    err.msg[0] ? err.msg : "bad entry");
			ret = -EUCLEAN;
			goto out;
		}
		e->name = strdup(b.name);
		e->extra = malloc(b.extra_data_size ? b.extra_data_size : 1);
		if (!e->name || !e->extra) {
			ret = oom(img->path);
			goto out;
		}
		memcpy(e->extra, buf + pos + sizeof(struct qimg_disk_bitmap_dir_entry),
		       b.extra_data_size);
		e->extra_len = b.extra_data_size;
		e->flags = b.flags;
		e->type = b.type;
		e->gran_bits = b.granularity_bits;
		e->table_off = b.bitmap_table_offset;
		e->table_size = b.bitmap_table_size;
		d->n++;
		pos += b.entry_len;
	}
out:
	free(buf);
	return ret;
}

static int bm_read_table(struct qimgctl_image *img, struct bm *b)
{
	u32 i;
	int ret;

	if (b->table || !b->table_off)
		return 0;
	b->table = calloc(b->table_size ? b->table_size : 1, sizeof(u64));
	if (!b->table)
		return oom(img->path);
	ret = qimgctl_pread(img->fd, b->table, (size_t)b->table_size * 8,
			    b->table_off);
	if (ret) {
		qimgctl_err("%s: reading the table of bitmap '%s': %s",
			    img->path, b->name, strerror(-ret));
		return ret;
	}
	for (i = 0; i < b->table_size; i++)
		b->table[i] = be64_to_cpu(b->table[i]);
	return 0;
}

/* Read the data of @b (checked against the directory's word on it). */
static int bm_load_bits(struct qimgctl_image *img, struct bm *b,
			const char *op, const char *target)
{
	const struct qimg_geom *g = &img->h.geom;
	struct qimg_err err = { "" };
	u64 data, n;
	bool ones;
	u32 i;
	int ret;

	if (b->bits)
		return 0;
	if (b->flags & QIMG_BITMAP_IN_USE) {
		qimgctl_err("Operation %s on bitmap %s failed: Bitmap '%s' is inconsistent and cannot be used",
			    op, target, b->name);
		return -EBUSY;
	}
	n = table_entries(img, b->gran_bits);
	if (b->table_off && b->table_size != n) {
		qimgctl_err("%s: bitmap '%s' has %u table entries, %" PRIu64 " expected",
			    img->path, b->name, b->table_size, (uint64_t)n);
		return -EUCLEAN;
	}
	b->bits = calloc(1, n ? n << g->cluster_bits : 1);
	if (!b->bits)
		return oom(img->path);
	ret = bm_read_table(img, b);
	if (ret || !b->table_off)
		return ret;
	for (i = 0; i < b->table_size; i++) {
		ret = qimg_bitmap_table_decode(g, b->table[i], img->file_size,
					       &data, &ones, &err);
		if (ret) {
			qimgctl_err("%s: bitmap '%s': %s", img->path, b->name,
				    err.msg);
			return -EUCLEAN;
		}
		if (ones)
			memset(b->bits + ((u64)i << g->cluster_bits), 0xff,
			       g->cluster_size);
		else if (data)
			ret = qimgctl_pread(img->fd,
					    b->bits + ((u64)i << g->cluster_bits),
					    g->cluster_size, data);
		if (ret) {
			qimgctl_err("%s: reading bitmap '%s': %s", img->path,
				    b->name, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static bool bit_get(const u8 *bits, u64 i)
{
	return bits[i / 8] & (1U << (i % 8));
}

/* Set the bits of @b covering guest bytes [off, off + len). */
static void bits_set_range(struct bm *b, u64 off, u64 len, u64 size)
{
	u64 i, first, last;

	if (!len || off >= size)
		return;
	if (len > size - off)
		len = size - off;
	first = off >> b->gran_bits;
	last = (off + len - 1) >> b->gran_bits;
	for (i = first; i <= last; i++)
		b->bits[i / 8] |= 1U << (i % 8);
}

/*
 * Call @fn for every dirty extent of @b (guest bytes, merged, clipped to
 * @size).
 */
static void bits_each(const struct bm *b, u64 size,
		      void (*fn)(void *ctx, u64 off, u64 len), void *ctx)
{
	u64 nbits = (size + (1ULL << b->gran_bits) - 1) >> b->gran_bits;
	u64 i = 0, j, off, end;

	while (i < nbits) {
		if (!b->bits[i / 8] && !(i % 8)) {
			i += 8;
			continue;
		}
		if (!bit_get(b->bits, i)) {
			i++;
			continue;
		}
		for (j = i; j < nbits && bit_get(b->bits, j); j++)
			;
		off = i << b->gran_bits;
		end = j << b->gran_bits;
		if (end > size)
			end = size;
		fn(ctx, off, end - off);
		i = j;
	}
}

static struct bm *find(struct bmdir *d, const char *name)
{
	u32 i;

	for (i = 0; i < d->n; i++)
		if (!strcmp(d->v[i].name, name))
			return &d->v[i];
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Storing                                                                  */

static int bm_store(struct qimgw *w, struct bm *b)
{
	u64 n = table_entries(&w->img, b->gran_bits), i, off, *tb;
	const u8 *chunk;
	size_t k;
	int ret = 0;

	tb = calloc(n ? n : 1, sizeof(*tb));
	if (!tb)
		return oom(w->img.path);
	/* The bits past the end of the image are written as zeroes. */
	if (n) {
		u64 nbits = (w->h->size + (1ULL << b->gran_bits) - 1) >>
			    b->gran_bits;
		u64 total = n * w->cs * 8;

		for (i = nbits; i < total && i % 8; i++)
			b->bits[i / 8] &= ~(1U << (i % 8));
		memset(b->bits + (nbits + 7) / 8, 0,
		       n * w->cs - (nbits + 7) / 8);
	}
	for (i = 0; i < n && !ret; i++) {
		chunk = b->bits + i * w->cs;
		for (k = 0; k < w->cs && !chunk[k]; k++)
			;
		if (k == w->cs)
			continue;
		ret = qimgw_alloc(w, 1, &off);
		if (!ret)
			ret = qimgctl_pwrite(w->img.fd, chunk, w->cs, off);
		tb[i] = cpu_to_be64(off);
	}
	if (!ret)
		ret = qimgw_alloc(w, (n * 8 + w->cs - 1) / w->cs, &off);
	if (!ret)
		ret = qimgctl_pwrite(w->img.fd, tb, n * 8, off);
	free(tb);
	if (ret) {
		qimgctl_err("%s: writing bitmap '%s': %s", w->img.path,
			    b->name, strerror(-ret));
		return ret;
	}
	b->table_off = off;
	b->table_size = (u32)n;
	return 0;
}

/* The clusters the on-disk table of @b and its data occupy, to free. */
static int bm_drop_old(struct qimgw *w, struct bmdir *d, struct bm *b)
{
	struct qimg_err err = { "" };
	u64 data, o;
	bool ones;
	u32 i;
	int ret;

	if (!b->table_off)
		return 0;
	ret = bm_read_table(&w->img, b);
	for (i = 0; !ret && i < b->table_size; i++) {
		if (qimg_bitmap_table_decode(w->g, b->table[i], w->img.file_size,
					     &data, &ones, &err)) {
			qimgctl_err("%s: bitmap '%s': %s", w->img.path,
				    b->name, err.msg);
			return -EUCLEAN;
		}
		if (data)
			ret = drop_add(d, w->img.path, data);
	}
	for (o = 0; !ret && o < (u64)b->table_size * 8; o += w->cs)
		ret = drop_add(d, w->img.path, b->table_off + o);
	return ret;
}

static int dir_store(struct qimgw *w, struct bmdir *d)
{
	struct qimg_disk_bitmap_dir_entry de;
	struct qimg_header nh = *w->h;
	u64 size = 0, pos = 0, off = 0, o;
	size_t nl;
	u8 *buf;
	u32 i;
	int ret = 0;

	for (i = 0; i < d->n; i++) {
		struct bm *b = &d->v[i];

		if (b->changed) {
			ret = bm_store(w, b);
			if (ret)
				return ret;
		}
		size += (sizeof(de) + b->extra_len + strlen(b->name) + 7) &
			~7ULL;
	}
	if (size > BM_QEMU_MAX_DIR_SIZE) {
		qimgctl_err("%s: the bitmap directory would exceed %llu bytes",
			    w->img.path,
			    (unsigned long long)BM_QEMU_MAX_DIR_SIZE);
		return -EFBIG;
	}
	if (size) {
		buf = calloc(1, size);
		if (!buf)
			return oom(w->img.path);
		for (i = 0; i < d->n; i++) {
			struct bm *b = &d->v[i];

			nl = strlen(b->name);
			memset(&de, 0, sizeof(de));
			de.bitmap_table_offset = cpu_to_be64(b->table_off);
			de.bitmap_table_size = cpu_to_be32(b->table_size);
			de.flags = cpu_to_be32(b->flags);
			de.type = b->type;
			de.granularity_bits = b->gran_bits;
			de.name_size = cpu_to_be16((u16)nl);
			de.extra_data_size = cpu_to_be32(b->extra_len);
			memcpy(buf + pos, &de, sizeof(de));
			memcpy(buf + pos + sizeof(de), b->extra, b->extra_len);
			memcpy(buf + pos + sizeof(de) + b->extra_len, b->name,
			       nl);
			pos += (sizeof(de) + b->extra_len + nl + 7) & ~7ULL;
		}
		ret = qimgw_alloc(w, (size + w->cs - 1) / w->cs, &off);
		if (!ret)
			ret = qimgctl_pwrite(w->img.fd, buf, size, off);
		free(buf);
		if (ret) {
			qimgctl_err("%s: writing the bitmap directory: %s",
				    w->img.path, strerror(-ret));
			return ret;
		}
	}
	nh.has_bitmaps_ext = d->n > 0;
	nh.nb_bitmaps = d->n;
	nh.bitmap_directory_size = size;
	nh.bitmap_directory_offset = off;
	if (d->n)
		nh.autoclear_features |= QIMG_AUTOCLEAR_BITMAPS;
	else
		nh.autoclear_features &= ~QIMG_AUTOCLEAR_BITMAPS;
	/* Flushes first: the new structures are durable before it. */
	ret = qimgw_rewrite_header(w, &nh);
	if (ret)
		return ret;
	for (o = d->off & ~(w->cs - 1); d->size && o < d->off + d->size;
	     o += w->cs) {
		ret = drop_add(d, w->img.path, o);
		if (ret)
			return ret;
	}
	for (i = 0; i < d->nb_drop && !ret; i++)
		ret = qimgw_ref_add(w, d->drop[i], -1);
	return ret ? ret : qimgw_flush(w);
}

/* ------------------------------------------------------------------------ */
/*
 * A new, empty, changed bitmap @name of granularity 2^@gran_bits at the
 * end of @d (flags for the caller to set); *@out points at it.
 */
static int bm_append(struct qimgw *w, struct bmdir *d, const char *name,
		     u8 gran_bits, struct bm **out)
{
	struct bm *v, *b;

	v = realloc(d->v, (d->n + 1) * sizeof(*v));
	if (!v)
		return oom(w->img.path);
	d->v = v;
	b = &d->v[d->n];
	memset(b, 0, sizeof(*b));
	b->name = strdup(name);
	b->extra = malloc(1);
	b->bits = calloc(1, table_entries(&w->img, gran_bits) * w->cs + 1);
	if (!b->name || !b->extra || !b->bits) {
		bm_free(b);
		return oom(w->img.path);
	}
	b->type = QIMG_BITMAP_TYPE_DIRTY;
	b->gran_bits = gran_bits;
	b->changed = true;
	d->n++;
	*out = b;
	return 0;
}

/* Actions                                                                  */

enum bm_op { OP_ADD, OP_REMOVE, OP_CLEAR, OP_ENABLE, OP_DISABLE, OP_MERGE };

static const char *const op_names[] = {
	"add", "remove", "clear", "enable", "disable", "merge",
};

struct bm_args {
	enum bm_op ops[16];
	const char *merge_src[16];
	int nops;
	bool has_gran;		/* -g with a value other than 0 */
	u32 gran;		/* its low 32 bits, as qemu-img passes it on */
	const char *src_file, *src_fmt, *fmt;
	const char *file, *name;
};

static int op_fail(enum bm_op op, const char *name, const char *why)
{
	qimgctl_err("Operation %s on bitmap %s failed: %s", op_names[op], name,
		    why);
	return -EINVAL;
}

static int not_found(enum bm_op op, const char *name, const char *which)
{
	qimgctl_err("Operation %s on bitmap %s failed: Dirty bitmap '%s' not found",
		    op_names[op], name, which);
	return -ENOENT;
}

/* A refusal of qemu's "can this bitmap be stored" step, as it words it. */
static int add_refused(const struct qimgw *w, const char *name,
		       const char *why, int err)
{
	qimgctl_err("Operation add on bitmap %s failed: Can't make bitmap '%s' persistent in '%s': %s",
		    name, name, w->img.path, why);
	return err;
}

/* Directory bytes of an entry for a bitmap named @name. */
static u64 dir_entry_bytes(const char *name, u32 extra)
{
	return (sizeof(struct qimg_disk_bitmap_dir_entry) + extra +
		strlen(name) + 7) & ~7ULL;
}

/*
 * The checks of qemu-img 7.2 before it adds a persistent bitmap, in its
 * order and with its words: the name, the granularity, a bitmap of the
 * same name, a v2 image, the size of the bitmap data, the name's length,
 * the number of bitmaps and the size of the directory.
 */
static int do_add(struct qimgw *w, struct bmdir *d, const struct bm_args *a)
{
	u64 gran = a->gran, bytes, dir = 0;
	struct bm *b;
	u32 i;
	int ret;

	if (!a->name[0])
		return op_fail(OP_ADD, a->name, "Bitmap name cannot be empty");
	if (a->has_gran && (gran < 512 || !qimgctl_is_pow2(gran)))
		return op_fail(OP_ADD, a->name,
			       "Granularity must be power of 2 and at least 512");
	/* qemu's default: the cluster size, within 4 KiB and 64 KiB. */
	if (!a->has_gran)
		gran = w->cs < 4096 ? 4096 :
		       w->cs > BM_DEFAULT_GRAN ? BM_DEFAULT_GRAN : w->cs;
	if (find(d, a->name)) {
		qimgctl_err("Operation add on bitmap %s failed: Bitmap already exists: %s",
			    a->name, a->name);
		return -EEXIST;
	}
	if (w->h->version < 3)
		return add_refused(w, a->name,
				   "Cannot store dirty bitmaps in qcow2 v2 files",
				   -EINVAL);
	bytes = ((w->h->size + gran - 1) / gran + 7) / 8;
	if (bytes > BM_MAX_PHYS_SIZE ||
	    bytes > (u64)QIMG_BITMAP_MAX_TABLE_SIZE * w->cs)
		return add_refused(w, a->name,
				   "Too much space will be occupied by the bitmap. Use larger granularity",
				   -EFBIG);
	if (strlen(a->name) > QIMG_MAX_BITMAP_NAME)
		return add_refused(w, a->name,
				   "Name length exceeds maximum (1023 characters)",
				   -EINVAL);
	if (d->n + 1 > QIMG_MAX_BITMAPS)
		return add_refused(w, a->name,
				   "Maximum number of persistent bitmaps is already reached",
				   -EFBIG);
	for (i = 0; i < d->n; i++)
		dir += dir_entry_bytes(d->v[i].name, 0);
	if (dir + dir_entry_bytes(a->name, 0) > BM_QEMU_MAX_DIR_SIZE)
		return add_refused(w, a->name,
				   "Not enough space in the bitmap directory",
				   -EFBIG);
	ret = bm_append(w, d, a->name, (u8)qimgctl_log2(gran), &b);
	if (ret)
		return ret;
	b->flags = QIMG_BITMAP_AUTO;
	return 0;
}

/* The bitmap @src of the image @a->src_file (opened read-only). */
static int load_other(const struct bm_args *a, const char *src, u64 size,
		      struct bm *out)
{
	struct qimgctl_image img;
	struct bmdir d;
	struct bm *b;
	int ret;

	if (a->src_fmt && qimgctl_want_qcow2(a->src_fmt))
		return -EINVAL;
	ret = qimgctl_image_open(&img, a->src_file, 0);
	if (ret)
		return ret;
	ret = dir_load(&img, &d);
	if (ret)
		goto out;
	b = find(&d, src);
	if (!b) {
		ret = not_found(OP_MERGE, a->name, src);
		goto out;
	}
	if (img.h.size != size) {
		qimgctl_err("Operation merge on bitmap %s failed: Bitmaps are of different sizes (destination size is %" PRIu64 ", source size is %" PRIu64 ") and can't be merged",
			    a->name, (uint64_t)size, (uint64_t)img.h.size);
		ret = -EINVAL;
		goto out;
	}
	ret = bm_load_bits(&img, b, "merge", a->name);
	if (!ret) {
		*out = *b;
		memset(b, 0, sizeof(*b));
	}
out:
	dir_free(&d);
	qimgctl_image_close(&img);
	return ret;
}

static void merge_cb(void *ctx, u64 off, u64 len)
{
	void **p = ctx;

	bits_set_range(p[0], off, len, *(u64 *)p[1]);
}

static int do_merge(struct qimgw *w, struct bmdir *d, const struct bm_args *a,
		    const char *src)
{
	struct bm *dst = find(d, a->name), *s, other = { 0 };
	u64 size = w->h->size;
	void *ctx[2];
	int ret;

	if (!dst)
		return not_found(OP_MERGE, a->name, a->name);
	if (a->src_file) {
		ret = load_other(a, src, size, &other);
		if (ret)
			return ret;
		s = &other;
	} else {
		s = find(d, src);
		if (!s)
			return not_found(OP_MERGE, a->name, src);
		ret = bm_load_bits(&w->img, s, "merge", a->name);
		if (ret)
			return ret;
	}
	ret = bm_load_bits(&w->img, dst, "merge", a->name);
	if (!ret) {
		ctx[0] = dst;
		ctx[1] = &size;
		bits_each(s, size, merge_cb, ctx);
		dst->changed = true;
	}
	bm_free(&other);
	return ret;
}

static int do_op(struct qimgw *w, struct bmdir *d, const struct bm_args *a,
		 int i)
{
	enum bm_op op = a->ops[i];
	struct bm *b;
	int ret;

	if (op == OP_ADD)
		return do_add(w, d, a);
	if (op == OP_MERGE)
		return do_merge(w, d, a, a->merge_src[i]);
	b = find(d, a->name);
	if (!b)
		return not_found(op, a->name, a->name);
	switch (op) {
	case OP_REMOVE:
		ret = bm_drop_old(w, d, b);
		if (ret)
			return ret;
		bm_free(b);
		memmove(b, b + 1, (d->n - (b - d->v) - 1) * sizeof(*b));
		d->n--;
		return 0;
	case OP_CLEAR:
		ret = bm_load_bits(&w->img, b, "clear", a->name);
		if (ret)
			return ret;
		memset(b->bits, 0, (size_t)table_entries(&w->img, b->gran_bits)
		       * w->cs);
		b->changed = true;
		return 0;
	case OP_ENABLE:
	case OP_DISABLE:
		if (b->flags & QIMG_BITMAP_IN_USE)
			return bm_load_bits(&w->img, b, op_names[op], a->name);
		if (op == OP_ENABLE)
			b->flags |= QIMG_BITMAP_AUTO;
		else
			b->flags &= ~QIMG_BITMAP_AUTO;
		return 0;
	default:
		return -EINVAL;
	}
}

static int bitmap_change(const struct bm_args *a)
{
	struct bmdir d;
	struct qimgw w;
	u32 i;
	int ret, k, done = 0;

	ret = qimgw_open(&w, a->file);
	if (ret)
		return ret;
	ret = dir_load(&w.img, &d);
	for (k = 0; !ret && k < a->nops; k++) {
		ret = do_op(&w, &d, a, k);
		done += !ret;
	}
	/* As qemu-img: what the actions before a failed one did stays. */
	if (done) {
		int r = 0;

		/* A changed bitmap gets new clusters: free its old ones. */
		for (i = 0; i < d.n && !r; i++)
			if (d.v[i].changed)
				r = bm_drop_old(&w, &d, &d.v[i]);
		if (!r)
			r = dir_store(&w, &d);
		if (r && !ret)
			ret = r;
	}
	dir_free(&d);
	qimgw_close(&w, false);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* --export                                                                 */

static void export_cb(void *ctx, u64 off, u64 len)
{
	int *n = ctx;

	printf("%s{ \"offset\": %" PRIu64 ", \"length\": %" PRIu64 " }",
	       *n ? ",\n" : "", (uint64_t)off, (uint64_t)len);
	(*n)++;
}

static int bitmap_export(const char *file, const char *name, bool share)
{
	struct qimgctl_image img;
	struct bmdir d;
	struct bm *b;
	int ret, n = 0;

	ret = qimgctl_image_open(&img, file, share ? QIMGCTL_OPEN_SHARE : 0);
	if (ret)
		return ret;
	ret = dir_load(&img, &d);
	if (ret)
		goto out;
	b = find(&d, name);
	if (!b) {
		ret = not_found(OP_MERGE, name, name);
		goto out;
	}
	ret = bm_load_bits(&img, b, "export", name);
	if (ret)
		goto out;
	printf("[");
	bits_each(b, img.h.size, export_cb, &n);
	printf("]\n");
out:
	dir_free(&d);
	qimgctl_image_close(&img);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* convert --bitmaps                                                        */

/*
 * The directory of @src as qemu loads it: none when the autoclear bit
 * says a program without bitmap support changed the image.
 */
static int src_dir_load(struct qimgctl_image *src, struct bmdir *d)
{
	if (!(src->h.autoclear_features & QIMG_AUTOCLEAR_BITMAPS)) {
		memset(d, 0, sizeof(*d));
		return 0;
	}
	return dir_load(src, d);
}

int qimgctl_bitmaps_check_copy(struct qimgctl_image *src, bool skip_broken)
{
	struct bmdir d;
	u32 i;
	int ret;

	ret = src_dir_load(src, &d);
	for (i = 0; !ret && !skip_broken && i < d.n; i++) {
		if (d.v[i].flags & QIMG_BITMAP_IN_USE) {
			qimgctl_err("Cannot copy inconsistent bitmap '%s' (try --skip-broken-bitmaps, or remove it with 'bitmap --remove')",
				    d.v[i].name);
			ret = -EBUSY;
		}
	}
	dir_free(&d);
	return ret;
}

/* A new bitmap of @w like @from (of an image of the same size). */
static int copy_one(struct qimgw *w, struct bmdir *d, const struct bm *from)
{
	u64 nbits = (w->h->size + (1ULL << from->gran_bits) - 1) >>
		    from->gran_bits;
	struct bm *b;
	int ret;

	ret = bm_append(w, d, from->name, from->gran_bits, &b);
	if (ret)
		return ret;
	memcpy(b->bits, from->bits, (nbits + 7) / 8);
	/* As qemu stores a bitmap it made: enabled or not, nothing else. */
	b->flags = from->flags & QIMG_BITMAP_AUTO;
	return 0;
}

int qimgctl_bitmaps_copy(struct qimgw *w, struct qimgctl_image *src,
			 bool skip_broken)
{
	struct bmdir s, d = { 0 };
	u32 i;
	int ret;

	if (src->h.size != w->h->size) {
		qimgctl_err("%s: cannot copy bitmaps between images of different sizes",
			    w->img.path);
		return -EINVAL;
	}
	ret = src_dir_load(src, &s);
	for (i = 0; !ret && i < s.n; i++) {
		struct bm *b = &s.v[i];

		if (b->flags & QIMG_BITMAP_IN_USE) {
			if (!skip_broken) {
				qimgctl_err("Cannot copy inconsistent bitmap '%s'",
					    b->name);
				ret = -EBUSY;
				break;
			}
			qimgctl_err("warning: Skipping inconsistent bitmap '%s'",
				    b->name);
			continue;
		}
		ret = bm_load_bits(src, b, "merge", b->name);
		if (!ret)
			ret = copy_one(w, &d, b);
		/* The source's bits are not needed any more. */
		free(b->bits);
		b->bits = NULL;
	}
	if (!ret && d.n)
		ret = dir_store(w, &d);
	dir_free(&s);
	dir_free(&d);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Changing an image with bitmaps (resize.c, rebase.c)                     */

/* qemu's limits on a stored bitmap: table entries, and data bytes. */
#define BM_MAX_TABLE_SIZE	0x8000000ULL

int qimgctl_bitmaps_begin(struct qimgw *w, u64 size, bool refuse_in_use,
			  void **state)
{
	struct qimg_header *h = w->h;
	struct bmdir *d;
	u64 n, nbits;
	u32 i;
	int ret;

	*state = NULL;
	/* Without the autoclear bit the extension is stale: no bitmaps. */
	if (!h->has_bitmaps_ext || !h->nb_bitmaps ||
	    !(h->autoclear_features & QIMG_AUTOCLEAR_BITMAPS))
		return 0;
	d = calloc(1, sizeof(*d));
	if (!d)
		return oom(w->img.path);
	ret = dir_load(&w->img, d);
	for (i = 0; !ret && i < d->n; i++) {
		struct bm *b = &d->v[i];

		if ((b->flags & QIMG_BITMAP_IN_USE) && !refuse_in_use) {
			b->keep = true;	/* inconsistent: qemu leaves it so */
			continue;
		}
		if (b->flags & QIMG_BITMAP_IN_USE) {
			qimgctl_err("%s: Bitmap '%s' is inconsistent and cannot be used (remove it with 'qimgctl bitmap --remove %s %s')",
				    w->img.path, b->name, w->img.path, b->name);
			ret = -EBUSY;
			break;
		}
		/*
		 * qemu resizes first and then fails to store such a bitmap,
		 * leaving it in use; refused here before anything changes.
		 */
		nbits = (size + (1ULL << b->gran_bits) - 1) >> b->gran_bits;
		n = ((nbits + 7) / 8 + w->cs - 1) / w->cs;
		if (n > BM_MAX_TABLE_SIZE || n * w->cs > BM_MAX_PHYS_SIZE) {
			qimgctl_err("%s: Bitmap '%s' would be too big for the new size (use a larger granularity)",
				    w->img.path, b->name);
			ret = -EFBIG;
			break;
		}
		ret = bm_load_bits(&w->img, b, "resize", b->name);
	}
	/*
	 * While the size changes, every bitmap is marked in use on disk, as
	 * qemu does while it has the image open: an interruption leaves
	 * inconsistent bitmaps (to remove), never tables that do not fit
	 * the size, which make QEMU refuse the whole image.
	 */
	for (i = 0; !ret && i < d->n; i++)
		d->v[i].flags |= QIMG_BITMAP_IN_USE;
	if (!ret)
		ret = dir_store(w, d);
	if (ret) {
		dir_free(d);
		free(d);
		return ret;
	}
	/* The directory now on disk is the one the next store replaces. */
	d->off = h->bitmap_directory_offset;
	d->size = h->bitmap_directory_size;
	d->nb_drop = 0;
	w->bitmaps_tracked = true;
	*state = d;
	return 0;
}

void qimgctl_bitmaps_dirty(void *state, u64 off, u64 len)
{
	struct bmdir *d = state;
	u32 i;

	for (i = 0; d && i < d->n; i++)
		if ((d->v[i].flags & QIMG_BITMAP_AUTO) && !d->v[i].keep)
			bits_set_range(&d->v[i], off, len, ~0ULL);
}

int qimgctl_bitmaps_end(struct qimgw *w, void *state)
{
	struct bmdir *d = state;
	u64 old, n;
	u8 *bits;
	u32 i;
	int ret = 0;

	if (!d)
		return 0;
	for (i = 0; !ret && i < d->n; i++) {
		struct bm *b = &d->v[i];

		if (b->keep)
			continue;
		/* Bits for the new size; the grown part is clean. */
		old = (u64)b->table_size * w->cs;
		n = table_entries(&w->img, b->gran_bits) * w->cs;
		bits = realloc(b->bits, n ? n : 1);
		if (!bits) {
			ret = oom(w->img.path);
			break;
		}
		if (n > old)
			memset(bits + old, 0, n - old);
		b->bits = bits;
		ret = bm_drop_old(w, d, b);
		b->flags &= ~QIMG_BITMAP_IN_USE;
		b->changed = true;
	}
	if (!ret)
		ret = dir_store(w, d);
	w->bitmaps_tracked = false;
	qimgctl_bitmaps_free(d);
	return ret;
}

void qimgctl_bitmaps_free(void *state)
{
	struct bmdir *d = state;

	if (d) {
		dir_free(d);
		free(d);
	}
}

/* ------------------------------------------------------------------------ */

int qimgctl_cmd_bitmap(int argc, char **argv)
{
	enum { O_ADD = 0x100, O_REMOVE, O_CLEAR, O_ENABLE, O_DISABLE, O_MERGE,
	       O_EXPORT };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "add", no_argument, NULL, O_ADD },
		{ "remove", no_argument, NULL, O_REMOVE },
		{ "clear", no_argument, NULL, O_CLEAR },
		{ "enable", no_argument, NULL, O_ENABLE },
		{ "disable", no_argument, NULL, O_DISABLE },
		{ "merge", required_argument, NULL, O_MERGE },
		{ "export", required_argument, NULL, O_EXPORT },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	struct bm_args a = { .nops = 0 };
	const char *export = NULL;
	bool share = false, add = false, merge = false;
	uint64_t gran;
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hqUg:b:F:f:", lopts,
				NULL)) != -1) {
		switch (c) {
		case O_ADD:
		case O_REMOVE:
		case O_CLEAR:
		case O_ENABLE:
		case O_DISABLE:
		case O_MERGE:
			if (a.nops == (int)(sizeof(a.ops) / sizeof(a.ops[0]))) {
				qimgctl_usage_err("bitmap", "too many actions");
				return 1;
			}
			a.merge_src[a.nops] = c == O_MERGE ? optarg : NULL;
			a.ops[a.nops++] = (enum bm_op)(c - O_ADD);
			break;
		case O_EXPORT:
			export = optarg;
			break;
		case 'g':
			/*
			 * As qemu-img: any size up to INT64_MAX is taken here;
			 * 0 means the default and only the low 32 bits go on
			 * to the checks of --add.
			 */
			ret = qimgctl_parse_size(optarg, &gran);
			if (ret == -ERANGE || (!ret && gran > INT64_MAX)) {
				qimgctl_err("Invalid granularity specified. Must be between 0 and 9223372036854775807.");
				return 1;
			}
			if (ret) {
				qimgctl_err("Invalid granularity specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
				return 1;
			}
			a.has_gran = gran != 0;
			a.gran = (u32)gran;
			break;
		case 'b':
			a.src_file = optarg;
			break;
		case 'F':
			a.src_fmt = optarg;
			break;
		case 'f':
			a.fmt = optarg;
			break;
		case 'q':
			break;
		case 'U':
			share = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "bitmap");
			return 0;
		default:
			qimgctl_opt_err("bitmap", c, argv);
			return 1;
		}
	}
	if (export && a.nops) {
		qimgctl_usage_err("bitmap", "--export does not go with the other actions");
		return 1;
	}
	if (!export && !a.nops) {
		qimgctl_err("Need at least one of --add, --remove, --clear, --enable, --disable, --merge or --export");
		return 1;
	}
	if (export) {
		/* --export NAME FILE */
		if (qimgctl_one_file("bitmap", argc, argv))
			return 1;
		if (a.fmt && qimgctl_want_qcow2(a.fmt))
			return 1;
		return bitmap_export(argv[optind], export, share) ? 1 : 0;
	}
	/* qemu-img's checks of the command line, in its order. */
	for (c = 0; c < a.nops; c++) {
		add |= a.ops[c] == OP_ADD;
		merge |= a.ops[c] == OP_MERGE;
	}
	if (a.has_gran && !add) {
		qimgctl_err("granularity only supported with --add");
		return 1;
	}
	if (a.src_fmt && !a.src_file) {
		qimgctl_err("-F only supported with -b");
		return 1;
	}
	if (a.src_file && !merge) {
		qimgctl_err("Merge bitmap source file only supported with --merge");
		return 1;
	}
	if (optind + 2 != argc) {
		qimgctl_err("Expecting filename and bitmap name");
		return 1;
	}
	if (a.fmt && qimgctl_want_qcow2(a.fmt))
		return 1;
	if (share) {
		qimgctl_err("%s: -U/--force-share is only for --export",
			    argv[optind]);
		return 1;
	}
	a.file = argv[optind];
	a.name = argv[optind + 1];
	ret = bitmap_change(&a);
	return ret ? 1 : 0;
}
