// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl check: verify (and optionally repair) the refcounts of a qcow2
 * image, with the semantics and the verdicts of `qemu-img check`.
 *
 * The check rebuilds, in memory, how many times every host cluster is
 * referenced by the image's metadata (header, L1/L2 tables of the active
 * image and of every snapshot, the data clusters they point at, the refcount
 * table and blocks, the snapshot table, the bitmap directory/tables/data and
 * the qimg journal area), then compares that with the refcounts stored on
 * disk:
 *   on-disk < computed: a cluster in use could be handed out again, which
 *                       would corrupt data -> counted as a corruption;
 *   on-disk > computed: the cluster is merely wasted -> counted as a leak.
 * The COPIED flag of L1 and L2 entries must be set exactly when the
 * referenced cluster has refcount 1; a mismatch is a corruption, because
 * writers trust the flag to decide whether to copy on write.
 *
 * Everything read from the image is hostile: every table entry goes through
 * the format core's decoders, every offset is bounded by the file size, and
 * the in-memory refcount array is sized by the file size, never by values
 * read from the image.
 *
 * Repair writes in an order where being interrupted never leaves the image
 * worse than it was: first refcounts that are too low are raised (an
 * over-counted cluster is only a leak), fsync; then COPIED flags are fixed,
 * fsync; only then are leaked refcounts lowered, fsync.  Refcounts are never
 * lowered when part of the metadata could not be walked, because a cluster
 * that looks leaked might be referenced from what was not seen.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "image_io.h"
#include "qimg_journal_fmt.h"

#define CK_FIX_LEAKS	1
#define CK_FIX_ERRORS	2

/* Tables we read whole are bounded; these match or exceed QEMU's limits. */
#define CK_MAX_SNAPSHOT_TABLE	(64ULL << 20)
/* More clusters than this and the in-memory refcounts would be absurd. */
#define CK_MAX_CLUSTERS		(1ULL << 31)

#define CK_NO_BLOCK		~0ULL

struct ck_result {
	s64 corruptions;
	s64 leaks;
	s64 check_errors;
	s64 corruptions_fixed;
	s64 leaks_fixed;
	u64 area_freed;		/* released journal area clusters freed */
	u64 image_end_offset;
	u64 total_clusters;
	u64 allocated_clusters;
	u64 fragmented_clusters;
	u64 compressed_clusters;
};

/* State of one pass over the image. */
struct ck {
	struct qimgctl_image *img;
	struct qimgctl_progress *prog;	/* -p: L1 entries, then clusters */
	const struct qimg_header *h;
	const struct qimg_geom *g;
	int fd;
	int fix;
	struct ck_result *res;
	/* A journal area released just now: its clusters are not leaks. */
	u64 area_start, area_end;	/* clusters */

	u64 file_size;
	/* Bound handed to the decoders: QEMU tolerates a reference that
	 * reaches less than one cluster past EOF (a partly written last
	 * cluster), the exact rule is applied in ck_inc().
	 */
	u64 bound;

	/* Computed refcounts, one per host cluster. */
	u32 *refs;
	u64 nb_refs;	/* allocated length of refs[] */
	u64 nb_clusters;	/* clusters to compare */
	u64 refmax;	/* largest refcount an entry can hold */

	/* The refcount table as decoded from disk. */
	u64 rt_entries;
	u64 *rb_off;	/* 0: no refcount block */
	u8 *rb_bad;	/* entry unusable: refcounts unknown */
	bool any_bad_rb;

	/* One cached refcount block, written back on eviction. */
	void *rb_buf;
	u64 rb_idx;
	bool rb_dirty;

	void *l2_buf;
	u64 next_contig;	/* fragmentation statistics */
	bool incomplete;	/* some metadata was not walked */
	bool wrote;		/* something was written since the last sync */
	bool copied_deferred;	/* a COPIED flag waits for lowered refcounts */
	bool fix_copied;	/* repair COPIED flags */
	u64 rb_alloc_failed;	/* refcount block we could not create */
};

/*
 * Where the per-cluster findings go: stderr, as qemu-img check prints them,
 * or nowhere while a read-write attach repairs a dirty image (QEMU repairs
 * silently when it opens one; the attach prints one summary line).
 */
static FILE *ck_null;
static bool ck_quiet;

static FILE *ck_log(void)
{
	if (!ck_quiet)
		return stderr;
	if (!ck_null)
		ck_null = fopen("/dev/null", "w");
	return ck_null ? ck_null : stderr;
}

static void ck_corrupt(struct ck *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ck_corrupt(struct ck *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(ck_log(), fmt, ap);
	va_end(ap);
	fputc('\n', ck_log());
	c->res->corruptions++;
}

/* A failure that prevents the check from completing (I/O, memory). */
static void ck_check_error(struct ck *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ck_check_error(struct ck *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(ck_log(), fmt, ap);
	va_end(ap);
	fputc('\n', ck_log());
	c->res->check_errors++;
	c->incomplete = true;
}

static int ck_read(struct ck *c, void *buf, size_t len, u64 off,
		   const char *what)
{
	int ret = qimgctl_pread(c->fd, buf, len, off);

	if (ret)
		ck_check_error(c, "ERROR reading %s at 0x%llx: %s", what,
			       off, strerror(-ret));
	return ret;
}

static int ck_write(struct ck *c, const void *buf, size_t len, u64 off,
		    const char *what)
{
	int ret = qimgctl_pwrite(c->fd, buf, len, off);

	if (ret)
		ck_check_error(c, "ERROR writing %s at 0x%llx: %s", what,
			       off, strerror(-ret));
	else
		c->wrote = true;
	return ret;
}

static int ck_sync(struct ck *c)
{
	if (!c->wrote)
		return 0;
	c->wrote = false;
	if (fdatasync(c->fd) < 0) {
		int ret = -errno;

		ck_check_error(c, "ERROR syncing the image: %s", strerror(errno));
		return ret;
	}
	return 0;
}

/* Make refs[] cover cluster @cl (only the repair path allocates past it). */
static int ck_grow_refs(struct ck *c, u64 cl)
{
	u64 n = cl + 1;
	u32 *p;

	if (n <= c->nb_refs)
		return 0;
	if (n > CK_MAX_CLUSTERS)
		return -EFBIG;
	p = realloc(c->refs, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + c->nb_refs, 0, (n - c->nb_refs) * sizeof(*p));
	c->refs = p;
	c->nb_refs = n;
	return 0;
}

/*
 * Count one reference to every cluster of [off, off + size).  Like QEMU,
 * a range ending one cluster or more past EOF is a corruption and is not
 * counted (there is nothing there to protect).
 */
static void ck_inc(struct ck *c, u64 off, u64 size)
{
	u64 end, first, last, i;

	if (!size)
		return;
	if (!qimg_add_ok(off, size, &end) ||
	    (end > c->file_size && end - c->file_size >= c->g->cluster_size)) {
		ck_corrupt(c, "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%llx size 0x%llx",
			   off, size);
		return;
	}
	first = off >> c->g->cluster_bits;
	last = (end - 1) >> c->g->cluster_bits;
	/* refs[] has one cluster of slack past EOF, see ck_run(). */
	for (i = first; i <= last && i < c->nb_refs; i++) {
		if (c->refs[i] >= c->refmax) {
			ck_corrupt(c, "ERROR: overflow cluster offset=0x%llx",
				   i << c->g->cluster_bits);
			continue;
		}
		c->refs[i]++;
		if (i >= c->nb_clusters)
			c->nb_clusters = i + 1;
	}
}

/* Is a cluster-sized range at @off entirely countable? */
static bool ck_cluster_ok(struct ck *c, u64 off)
{
	return off && !qimg_cluster_offset(c->g, off) && off < c->bound;
}

/* ------------------------------------------------------------------------ */
/* L1 / L2 tables                                                           */

static void ck_frag(struct ck *c, u64 host, bool frag)
{
	if (!frag)
		return;
	c->res->allocated_clusters++;
	if (c->next_contig && host != c->next_contig)
		c->res->fragmented_clusters++;
	c->next_contig = host + c->g->cluster_size;
}

/* Clusters covered by the compressed descriptor @raw (QEMU's rule). */
static void ck_compressed_range(struct ck *c, u64 raw, u64 *off,
				u64 *len)
{
	u64 sectors = ((raw >> c->g->csize_shift) & c->g->csize_mask) + 1;

	*off = raw & c->g->coffset_mask;
	*len = sectors * QIMG_COMPRESSED_SECTOR_SIZE -
	       (*off & (QIMG_COMPRESSED_SECTOR_SIZE - 1));
}

static void ck_l2_entry(struct ck *c, u64 l2_off, u64 idx,
			u64 raw, u64 bitmap, bool frag)
{
	const struct qimg_geom *g = c->g;
	bool data_file = c->h->has_data_file;
	struct qimg_err err = { "" };
	struct qimg_l2_entry e;
	u64 off, len;
	int ret;

	ret = qimg_l2_decode(g, c->h->version, raw, bitmap, c->bound, &e, &err);
	if (ret) {
		off = raw & QIMG_L2E_OFFSET_MASK;
		/* Past EOF: ck_inc() below counts it, once, as QEMU does. */
		if (!(raw & QIMG_OFLAG_COMPRESSED) && !data_file &&
		    !qimg_cluster_offset(g, off) && off >= c->file_size)
			fprintf(ck_log(), "ERROR L2 table 0x%llx entry %llu (0x%016llx): %s\n",
				l2_off, idx, raw, err.msg);
		else
			ck_corrupt(c, "ERROR L2 table 0x%llx entry %llu (0x%016llx): %s",
				   l2_off, idx, raw, err.msg);
		/*
		 * Count what the entry names anyway, as QEMU does: a
		 * cluster wrong only in its flags (or offset by a few
		 * sectors) still holds this entry's data, and counting a
		 * reference too many can never lead repair to free a
		 * cluster in use.  ck_inc() refuses ranges past EOF.
		 */
		if (data_file)
			return;
		if (raw & QIMG_OFLAG_COMPRESSED) {
			ck_compressed_range(c, raw, &off, &len);
			if (off)
				ck_inc(c, off, len);
		} else {
			off = raw & QIMG_L2E_OFFSET_MASK;
			if (off) {
				ck_frag(c, off, frag);
				ck_inc(c, off, g->cluster_size);
			}
		}
		return;
	}
	switch (e.type) {
	case QIMG_CLUSTER_COMPRESSED:
		if (raw & QIMG_OFLAG_COPIED)
			ck_corrupt(c, "ERROR: coffset=0x%llx: copied flag must never be set for compressed clusters",
				   e.host_offset);
		if (data_file) {
			ck_corrupt(c, "ERROR compressed cluster %llu with data file, entry=0x%llx",
				   idx, raw);
			break;
		}
		ck_compressed_range(c, raw, &off, &len);
		ck_inc(c, off, len);
		if (frag) {
			/* Compressed clusters count as fragmented, as in
			 * QEMU: reading neighbours re-reads shared sectors.
			 */
			c->res->allocated_clusters++;
			c->res->compressed_clusters++;
			c->res->fragmented_clusters++;
		}
		break;
	case QIMG_CLUSTER_ZERO_ALLOC:
	case QIMG_CLUSTER_NORMAL:
		ck_frag(c, e.host_offset, frag);
		if (!data_file)
			ck_inc(c, e.host_offset, g->cluster_size);
		break;
	case QIMG_CLUSTER_ZERO_PLAIN:
	case QIMG_CLUSTER_UNALLOCATED:
		break;
	}
}

static void ck_walk_l2(struct ck *c, u64 l2_off, bool frag)
{
	const struct qimg_geom *g = c->g;
	const unsigned char *p = c->l2_buf;
	u64 i, raw, bitmap;

	/* Like QEMU, contiguity is judged within one L2 table. */
	c->next_contig = 0;
	if (ck_read(c, c->l2_buf, g->cluster_size, l2_off, "L2 table"))
		return;
	for (i = 0; i < g->l2_entries; i++) {
		const unsigned char *ent = p + (i << g->l2_entry_shift);

		raw = get_unaligned_be64(ent);
		bitmap = g->ext_l2 ? get_unaligned_be64(ent + 8) : 0;
		if (!raw && !bitmap)
			continue;
		ck_l2_entry(c, l2_off, i, raw, bitmap, frag);
	}
}

static int ck_read_l1(struct ck *c, u64 l1_off, u32 l1_size,
		      u64 **out)
{
	u64 bytes = (u64)l1_size * 8;
	u64 *l1;

	*out = NULL;
	if (!l1_size)
		return 0;
	if (bytes > QIMG_MAX_L1_BYTES) {
		ck_check_error(c, "ERROR L1 table at 0x%llx has %u entries, more than supported",
			       l1_off, l1_size);
		return -EFBIG;
	}
	l1 = malloc(bytes);
	if (!l1) {
		ck_check_error(c, "ERROR out of memory for an L1 table");
		return -ENOMEM;
	}
	if (ck_read(c, l1, bytes, l1_off, "L1 table")) {
		free(l1);
		return -EIO;
	}
	*out = l1;
	return 0;
}

static void ck_walk_l1(struct ck *c, u64 l1_off, u32 l1_size,
		       bool frag)
{
	struct qimg_err err = { "" };
	u64 *l1, i, raw, l2_off;
	bool copied;

	ck_inc(c, l1_off, (u64)l1_size * 8);
	if (ck_read_l1(c, l1_off, l1_size, &l1) || !l1)
		return;
	for (i = 0; i < l1_size; i++) {
		if (frag && c->prog)	/* the active table */
			qimgctl_progress_update(c->prog, i, false);
		raw = be64_to_cpu(l1[i]);
		if (!raw)
			continue;
		if (qimg_l1_decode(c->g, raw, c->bound, &l2_off, &copied,
				   &err)) {
			ck_corrupt(c, "ERROR L1 table 0x%llx entry %llu (0x%016llx): %s",
				   l1_off, i, raw, err.msg);
			/*
			 * Count the cluster it names (see ck_l2_entry()), but
			 * only walk a table that is really there.
			 */
			l2_off = raw & QIMG_L1E_OFFSET_MASK;
			if (l2_off && !ck_cluster_ok(c, l2_off)) {
				ck_inc(c, l2_off, c->g->cluster_size);
				continue;
			}
		}
		if (!l2_off)
			continue;
		ck_inc(c, l2_off, c->g->cluster_size);
		ck_walk_l2(c, l2_off, frag);
	}
	free(l1);
}

/* ------------------------------------------------------------------------ */
/* Snapshots, bitmaps, journal                                              */

static void ck_walk_snapshots(struct ck *c)
{
	const struct qimg_header *h = c->h;
	struct qimg_err err = { "" };
	struct qimg_snapshot sn;
	u64 len, pos = 0;
	unsigned char *buf;
	u32 i;

	if (!h->nb_snapshots)
		return;
	if (h->snapshots_offset >= c->file_size) {
		ck_check_error(c, "ERROR snapshot table at 0x%llx is past the end of the file",
			       h->snapshots_offset);
		return;
	}
	len = c->file_size - h->snapshots_offset;
	if (len > CK_MAX_SNAPSHOT_TABLE)
		len = CK_MAX_SNAPSHOT_TABLE;
	buf = malloc(len);
	if (!buf) {
		ck_check_error(c, "ERROR out of memory for the snapshot table");
		return;
	}
	if (ck_read(c, buf, len, h->snapshots_offset, "snapshot table"))
		goto out;
	for (i = 0; i < h->nb_snapshots; i++) {
		if (qimg_snapshot_decode(c->g, buf + pos, len - pos, c->bound,
					 &sn, &err)) {
			ck_check_error(c, "ERROR snapshot %u of %u: %s",
				       i + 1, h->nb_snapshots, err.msg);
			goto out;
		}
		if (!sn.entry_len || sn.entry_len > len - pos + 7) {
			ck_check_error(c, "ERROR snapshot %u: bad entry length",
				       i + 1);
			goto out;
		}
		/* The last entry may end unpadded at end of file. */
		pos += sn.entry_len > len - pos ? len - pos : sn.entry_len;
		ck_walk_l1(c, sn.l1_table_offset, sn.l1_size, false);
	}
	ck_inc(c, h->snapshots_offset, pos);
out:
	free(buf);
}

static void ck_walk_bitmap_table(struct ck *c, const struct qimg_bitmap *b)
{
	struct qimg_err err = { "" };
	u64 bytes = (u64)b->bitmap_table_size * 8;
	u64 *t, i, raw, data;
	bool ones;

	ck_inc(c, b->bitmap_table_offset, bytes);
	if (!bytes)
		return;
	if (bytes > c->file_size) {
		/* Already reported by ck_inc(); nothing to read. */
		return;
	}
	t = malloc(bytes);
	if (!t) {
		ck_check_error(c, "ERROR out of memory for bitmap '%s'",
			       b->name);
		return;
	}
	if (!ck_read(c, t, bytes, b->bitmap_table_offset, "bitmap table")) {
		for (i = 0; i < b->bitmap_table_size; i++) {
			raw = be64_to_cpu(t[i]);
			if (!raw)
				continue;
			if (qimg_bitmap_table_decode(c->g, raw, c->bound,
						     &data, &ones, &err)) {
				ck_corrupt(c, "ERROR bitmap '%s' table entry %llu (0x%016llx): %s",
					   b->name, i, raw, err.msg);
				data = raw & QIMG_BME_OFFSET_MASK;
				if (!ck_cluster_ok(c, data))
					continue;
			}
			if (data)
				ck_inc(c, data, c->g->cluster_size);
		}
	}
	free(t);
}

static void ck_walk_bitmaps(struct ck *c)
{
	const struct qimg_header *h = c->h;
	struct qimg_err err = { "" };
	struct qimg_bitmap *b;
	u64 len = h->bitmap_directory_size, pos = 0;
	unsigned char *dir;
	u32 i;

	if (!h->has_bitmaps_ext || !h->nb_bitmaps)
		return;
	ck_inc(c, h->bitmap_directory_offset, len);
	if (!len || len > QIMG_MAX_BITMAP_DIR_SIZE ||
	    len > c->file_size) {
		ck_check_error(c, "ERROR bitmap directory size %llu is out of range",
			       len);
		return;
	}
	dir = malloc(len);
	b = malloc(sizeof(*b));
	if (!dir || !b) {
		ck_check_error(c, "ERROR out of memory for the bitmap directory");
		goto out;
	}
	if (ck_read(c, dir, len, h->bitmap_directory_offset,
		    "bitmap directory"))
		goto out;
	for (i = 0; i < h->nb_bitmaps; i++) {
		if (pos >= len ||
		    qimg_bitmap_decode(c->g, dir + pos, len - pos, c->bound, b,
				       &err)) {
			ck_check_error(c, "ERROR bitmap %u of %u: %s",
				       i + 1, h->nb_bitmaps,
				       pos >= len ? "directory too short" :
				       err.msg);
			goto out;
		}
		if (!b->entry_len || b->entry_len > len - pos) {
			ck_check_error(c, "ERROR bitmap %u: bad entry length",
				       i + 1);
			goto out;
		}
		pos += b->entry_len;
		ck_walk_bitmap_table(c, b);
	}
out:
	free(b);
	free(dir);
}

/* ------------------------------------------------------------------------ */
/* Refcount table and blocks                                                */

/*
 * Refcount table entry @i names a block past the end of the file.  Reading
 * it would give zeroes, so the block is treated as absent, which is what
 * clearing the entry makes true on disk: a repair that cannot lose anything.
 * Clusters it should cover get a new block if they are in use.
 */
static int ck_reftable_outside(struct ck *c, u64 i, const char *why)
{
	bool fix = c->fix & CK_FIX_ERRORS;
	u64 zero = 0;
	int ret;

	fprintf(ck_log(), "%s refcount block %llu is outside image (%s)\n",
		fix ? "Repairing" : "ERROR", i, why);
	if (!fix) {
		c->res->corruptions++;
		return 0;
	}
	ret = ck_write(c, &zero, sizeof(zero),
		       c->h->refcount_table_offset + i * 8,
		       "refcount table entry");
	if (ret)
		return ret;
	c->res->corruptions_fixed++;
	return ck_sync(c);
}

static int ck_get(struct ck *c, u64 cl, u64 *val);

static int ck_load_reftable(struct ck *c)
{
	const struct qimg_header *h = c->h;
	struct qimg_err err = { "" };
	u64 bytes, i, raw, off;
	u64 *t;
	int ret;

	bytes = (u64)h->refcount_table_clusters << c->g->cluster_bits;
	if (!bytes || bytes > QIMG_MAX_REFTABLE_BYTES) {
		ck_check_error(c, "ERROR refcount table of %u clusters is not supported",
			       h->refcount_table_clusters);
		return -EFBIG;
	}
	c->rt_entries = bytes / 8;
	t = malloc(bytes);
	c->rb_off = calloc(c->rt_entries, sizeof(*c->rb_off));
	c->rb_bad = calloc(c->rt_entries, 1);
	if (!t || !c->rb_off || !c->rb_bad) {
		free(t);
		ck_check_error(c, "ERROR out of memory for the refcount table");
		return -ENOMEM;
	}
	if (ck_read(c, t, bytes, h->refcount_table_offset,
		    "refcount table")) {
		free(t);
		return -EIO;
	}
	for (i = 0; i < c->rt_entries; i++) {
		raw = be64_to_cpu(t[i]);
		if (!raw)
			continue;
		if (qimg_reftable_decode(c->g, raw, c->bound, &off, &err)) {
			off = raw & QIMG_REFT_OFFSET_MASK;
			if ((raw & QIMG_REFT_RESERVED_MASK) ||
			    qimg_cluster_offset(c->g, off)) {
				ck_corrupt(c, "ERROR refcount block %llu is not cluster aligned; refcount table entry corrupted (%s)",
					   i, err.msg);
				c->rb_bad[i] = 1;
				c->any_bad_rb = true;
				continue;
			}
			ret = ck_reftable_outside(c, i, err.msg);
			if (ret) {
				free(t);
				return ret;
			}
			continue;
		}
		c->rb_off[i] = off;
	}
	/*
	 * qemu repairs such an entry differently: it grows the file to hold
	 * the block and keeps it, and the block's own cluster then shows up
	 * with refcount 0 but one reference, a second corruption it fixes.
	 * Report the repair the same way so the two tools' counts agree.
	 */
	for (i = 0; (c->fix & CK_FIX_ERRORS) && i < c->rt_entries; i++) {
		u64 val;

		raw = be64_to_cpu(t[i]);
		if (!raw || c->rb_off[i] || c->rb_bad[i])
			continue;
		off = raw & QIMG_REFT_OFFSET_MASK;
		ret = ck_get(c, off >> c->g->cluster_bits, &val);
		if (ret < 0) {
			free(t);
			return ret;
		}
		if (!ret && !val)
			c->res->corruptions_fixed++;
	}
	free(t);
	return 0;
}

/* Count the refcount table and blocks themselves. */
static void ck_walk_refblocks(struct ck *c)
{
	u64 i, cl;

	ck_inc(c, c->h->refcount_table_offset,
	       (u64)c->h->refcount_table_clusters << c->g->cluster_bits);
	for (i = 0; i < c->rt_entries; i++) {
		if (!c->rb_off[i])
			continue;
		ck_inc(c, c->rb_off[i], c->g->cluster_size);
		cl = c->rb_off[i] >> c->g->cluster_bits;
		if (cl < c->nb_refs && c->refs[cl] != 1)
			ck_corrupt(c, "ERROR refcount block %llu refcount=%u",
				   i, c->refs[cl]);
	}
}

static int ck_rb_flush(struct ck *c)
{
	int ret;

	if (!c->rb_dirty)
		return 0;
	ret = ck_write(c, c->rb_buf, c->g->cluster_size, c->rb_off[c->rb_idx],
		       "refcount block");
	if (!ret)
		c->rb_dirty = false;
	return ret;
}

/* Make refcount block @idx the cached one; 1 if it does not exist. */
static int ck_rb_load(struct ck *c, u64 idx)
{
	int ret;

	if (c->rb_idx == idx)
		return 0;
	ret = ck_rb_flush(c);
	if (ret)
		return ret;
	c->rb_idx = CK_NO_BLOCK;
	if (idx >= c->rt_entries || !c->rb_off[idx] || c->rb_bad[idx])
		return 1;
	ret = ck_read(c, c->rb_buf, c->g->cluster_size, c->rb_off[idx],
		      "refcount block");
	if (ret)
		return ret;
	c->rb_idx = idx;
	return 0;
}

/*
 * On-disk refcount of cluster @cl.  Returns 0 with *val set, 1 if it cannot
 * be known (its refcount table entry is corrupt), or a negative errno.
 */
static int ck_get(struct ck *c, u64 cl, u64 *val)
{
	u64 idx = cl >> c->g->rb_bits;
	int ret;

	*val = 0;
	if (idx < c->rt_entries && c->rb_bad[idx])
		return 1;
	ret = ck_rb_load(c, idx);
	if (ret < 0)
		return ret;
	if (ret == 1)
		return 0;	/* no refcount block: refcount 0 */
	*val = qimg_refcount_get(c->rb_buf, c->g->refcount_order,
				 cl & (c->g->rb_entries - 1));
	return 0;
}

/*
 * Is every cluster of the journal area free on disk (refcount 0, known)?
 * A read error is reported by the walk that follows.
 */
static bool ck_jrnl_area_free(struct ck *c)
{
	u64 cl = c->h->journal_offset >> c->g->cluster_bits;
	u64 end = cl + (c->h->journal_size >> c->g->cluster_bits);
	u64 val;

	if (c->h->journal_offset & (c->g->cluster_size - 1) ||
	    !c->h->journal_size)
		return false;
	for (; cl < end; cl++) {
		if (ck_get(c, cl, &val) || val)
			return false;
	}
	return true;
}

/* First cluster past everything the file and the metadata use. */
static u64 ck_end_cluster(struct ck *c)
{
	struct stat st;
	u64 n = c->nb_clusters;

	if (!fstat(c->fd, &st) && (u64)st.st_size > c->file_size)
		c->file_size = (u64)st.st_size;
	if (qimg_size_to_clusters(c->g, c->file_size) > n)
		n = qimg_size_to_clusters(c->g, c->file_size);
	return n;
}

/*
 * Refcount block @idx does not exist: create it in a new cluster at the end
 * of the file.  The new block is written (with its own refcount, wherever
 * that lives) and synced before the refcount table points at it, so an
 * interruption leaves at most a leaked cluster.
 */
static int ck_alloc_refblock(struct ck *c, u64 idx)
{
	const struct qimg_geom *g = c->g;
	u64 cl, own, off, be;
	int ret;

	if (idx >= c->rt_entries) {
		fprintf(ck_log(), "ERROR refcount table too small for refcount block %llu; growing it is not supported, not repaired\n",
			idx);
		return -ENOSPC;
	}
	ret = ck_rb_flush(c);
	if (ret)
		return ret;
	c->rb_idx = CK_NO_BLOCK;
	cl = ck_end_cluster(c);
	own = cl >> g->rb_bits;
	if (own != idx &&
	    (own >= c->rt_entries || !c->rb_off[own] || c->rb_bad[own])) {
		fprintf(ck_log(), "ERROR no refcount block covers a new refcount block at cluster %llu, not repaired\n",
			cl);
		return -ENOSPC;
	}
	ret = ck_grow_refs(c, cl);
	if (ret) {
		ck_check_error(c, "ERROR cannot allocate a refcount block: %s",
			       strerror(-ret));
		return ret;
	}
	off = cl << g->cluster_bits;
	memset(c->rb_buf, 0, g->cluster_size);
	if (own == idx)
		qimg_refcount_set(c->rb_buf, g->refcount_order,
				  cl & (g->rb_entries - 1), 1);
	ret = ck_write(c, c->rb_buf, g->cluster_size, off, "refcount block");
	if (ret)
		return ret;
	if (own != idx) {
		ret = ck_rb_load(c, own);
		if (ret)
			return ret < 0 ? ret : -EIO;
		qimg_refcount_set(c->rb_buf, g->refcount_order,
				  cl & (g->rb_entries - 1), 1);
		c->rb_dirty = true;
		ret = ck_rb_flush(c);
		if (ret)
			return ret;
	}
	ret = ck_sync(c);
	if (ret)
		return ret;
	be = cpu_to_be64(off);
	ret = ck_write(c, &be, sizeof(be),
		       c->h->refcount_table_offset + idx * 8,
		       "refcount table entry");
	if (ret)
		return ret;
	ret = ck_sync(c);
	if (ret)
		return ret;
	c->rb_off[idx] = off;
	c->refs[cl] = 1;
	if (cl >= c->nb_clusters)
		c->nb_clusters = cl + 1;
	c->rb_idx = CK_NO_BLOCK;
	fprintf(ck_log(), "Allocated refcount block %llu at 0x%llx\n",
		idx, off);
	return 0;
}

static int ck_set(struct ck *c, u64 cl, u64 val)
{
	u64 idx = cl >> c->g->rb_bits;
	int ret;

	if (idx < c->rt_entries && c->rb_bad[idx])
		return -EUCLEAN;
	ret = ck_rb_load(c, idx);
	if (ret < 0)
		return ret;
	if (ret == 1) {
		/* Said once per block why it cannot be created. */
		if (idx == c->rb_alloc_failed)
			return -ENOSPC;
		ret = ck_alloc_refblock(c, idx);
		if (ret) {
			c->rb_alloc_failed = idx;
			return ret;
		}
		ret = ck_rb_load(c, idx);
		if (ret)
			return ret < 0 ? ret : -EIO;
	}
	ret = qimg_refcount_set(c->rb_buf, c->g->refcount_order,
				cl & (c->g->rb_entries - 1), val);
	if (ret)
		return ret;
	c->rb_dirty = true;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Comparison and repair                                                    */

enum ck_pass {
	CK_REPORT,	/* count and print every mismatch */
	CK_RAISE,	/* fix refcounts that are too low */
	CK_LOWER,	/* fix refcounts that are too high */
};

static bool ck_can_raise(struct ck *c)
{
	return c->fix & CK_FIX_ERRORS;
}

static bool ck_can_lower(struct ck *c)
{
	return (c->fix & CK_FIX_LEAKS) && !c->incomplete && !c->any_bad_rb;
}

/*
 * Clusters whose refcount a repair lowered to 0, as runs: like qemu-img,
 * their space goes back to the file system (holes punched; the file keeps
 * its size), once the refcounts saying they are free are on disk.
 */
struct ck_freed {
	u64 (*run)[2];		/* first cluster, count */
	size_t n, cap;
};

static int ck_freed_add(struct ck_freed *f, u64 cl)
{
	void *p;

	if (f->n && f->run[f->n - 1][0] + f->run[f->n - 1][1] == cl) {
		f->run[f->n - 1][1]++;
		return 0;
	}
	if (f->n == f->cap) {
		p = realloc(f->run, (f->cap ? f->cap * 2 : 16) * sizeof(*f->run));
		if (!p)
			return -ENOMEM;
		f->run = p;
		f->cap = f->cap ? f->cap * 2 : 16;
	}
	f->run[f->n][0] = cl;
	f->run[f->n][1] = 1;
	f->n++;
	return 0;
}

static void ck_freed_punch(struct ck *c, struct ck_freed *f)
{
	u64 off, len;
	size_t i;

	for (i = 0; i < f->n; i++) {
		off = f->run[i][0] << c->g->cluster_bits;
		len = f->run[i][1] << c->g->cluster_bits;
		if (off >= c->file_size)
			continue;
		if (len > c->file_size - off)
			len = c->file_size - off;
		/* Failing only keeps the space allocated, as in qemu. */
		if (fallocate(c->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) < 0)
			break;
	}
	free(f->run);
	f->run = NULL;
	f->n = f->cap = 0;
}

static int ck_compare(struct ck *c, enum ck_pass pass)
{
	struct ck_freed freed = { 0 };
	u64 i, on, comp, highest = 0;
	bool seen = false;
	int ret;

	for (i = 0; i < c->nb_clusters; i++) {
		if (pass == CK_REPORT && c->prog && !(i & 1023))
			qimgctl_progress_update(c->prog, c->h->l1_size + i,
						false);
		ret = ck_get(c, i, &on);
		if (ret < 0)
			return ret;
		comp = i < c->nb_refs ? c->refs[i] : 0;
		if (on || comp) {
			highest = i;
			seen = true;
		}
		/* Refcount block unusable: reported already. */
		if (ret == 1)
			continue;
		if (on == comp)
			continue;
		if (pass == CK_REPORT) {
			bool fixable = on < comp ? ck_can_raise(c) :
				       ck_can_lower(c);

			/* Freed below and said once, not cluster by cluster. */
			if (fixable && !comp && i >= c->area_start &&
			    i < c->area_end)
				continue;

			fprintf(ck_log(), "%s cluster %llu refcount=%llu reference=%llu\n",
				fixable ? "Repairing" :
				on < comp ? "ERROR" : "Leaked", i, on, comp);
			if (fixable)
				continue;
			if (on < comp)
				c->res->corruptions++;
			else
				c->res->leaks++;
			continue;
		}
		if ((pass == CK_RAISE) != (on < comp))
			continue;
		if ((pass == CK_RAISE && !ck_can_raise(c)) ||
		    (pass == CK_LOWER && !ck_can_lower(c)))
			continue;
		ret = ck_set(c, i, comp);
		if (ret == -EIO || ret == -ENOMEM) {
			free(freed.run);
			return ret;
		}
		if (!ret && !comp && ck_freed_add(&freed, i)) {
			free(freed.run);
			return -ENOMEM;
		}
		if (ret) {
			fprintf(ck_log(), "ERROR cluster %llu: refcount not repaired: %s\n",
				i, strerror(-ret));
			if (pass == CK_RAISE)
				c->res->corruptions++;
			else
				c->res->leaks++;
		} else if (pass == CK_RAISE) {
			c->res->corruptions_fixed++;
		} else if (!comp && i >= c->area_start && i < c->area_end) {
			c->res->area_freed++;
		} else {
			c->res->leaks_fixed++;
		}
	}
	if (pass == CK_REPORT)
		c->res->image_end_offset =
			seen ? (highest + 1) << c->g->cluster_bits : 0;
	ret = ck_rb_flush(c);
	if (!ret)
		ret = ck_sync(c);
	if (!ret)
		ck_freed_punch(c, &freed);
	free(freed.run);
	return ret;
}

/*
 * COPIED must be set exactly when the refcount is 1.  The refcount that
 * counts is the one the image will have once repair is done: a leaked
 * refcount about to be lowered to 1 already calls for the flag.  Clearing a
 * flag is always safe (it only costs a copy on write), setting one is safe
 * only when the on-disk refcount is already 1, so a flag that must be set on
 * a cluster whose leak is not fixed yet waits for the pass after lowering.
 *
 * Returns 1 when @raw's flag must change (with *write saying whether that
 * write may happen now), 0 when it is right, or a negative errno.
 */
static int ck_copied_want(struct ck *c, u64 host, bool flag, bool final,
			  u64 *rc, bool *write)
{
	u64 cl = host >> c->g->cluster_bits, target;
	int ret;

	ret = ck_get(c, cl, rc);
	if (ret)
		return ret < 0 ? ret : 0;	/* unknown: leave alone */
	target = *rc;
	if (!final && ck_can_lower(c) && cl < c->nb_refs &&
	    target > c->refs[cl])
		target = c->refs[cl];
	if ((target == 1) == flag)
		return 0;
	*write = c->fix_copied && (target != 1 || *rc == 1);
	if (!*write && c->fix_copied)
		c->copied_deferred = true;
	*rc = target;
	return 1;
}

static int ck_copied_fix(struct ck *c, const char *what, bool final,
			 bool write)
{
	if (final)
		return 0;
	fprintf(ck_log(), "%s OFLAG_COPIED %s\n",
		c->fix_copied ? "Repairing" : "ERROR", what);
	if (c->fix_copied)
		c->res->corruptions_fixed++;
	else
		c->res->corruptions++;
	return 0;
}

static int ck_copied_l2(struct ck *c, u64 l2_off, bool final)
{
	const struct qimg_geom *g = c->g;
	unsigned char *p = c->l2_buf;
	struct qimg_err err = { "" };
	struct qimg_l2_entry e;
	u64 i, raw, bitmap, rc, be;
	char what[96];
	bool write = false;
	int ret;

	if (ck_read(c, p, g->cluster_size, l2_off, "L2 table"))
		return -EIO;
	for (i = 0; i < g->l2_entries; i++) {
		unsigned char *ent = p + (i << g->l2_entry_shift);

		raw = get_unaligned_be64(ent);
		bitmap = g->ext_l2 ? get_unaligned_be64(ent + 8) : 0;
		if (!raw)
			continue;
		if (qimg_l2_decode(g, c->h->version, raw, bitmap, c->bound, &e,
				   &err)) {
			/*
			 * Already reported as corrupt; like QEMU, still hold
			 * a standard entry's flag against the refcount of
			 * the cluster it names.
			 */
			if (raw & QIMG_OFLAG_COMPRESSED ||
			    !(raw & QIMG_L2E_OFFSET_MASK))
				continue;
			e.type = QIMG_CLUSTER_NORMAL;
			e.host_offset = raw & QIMG_L2E_OFFSET_MASK;
		}
		if (e.type != QIMG_CLUSTER_NORMAL &&
		    e.type != QIMG_CLUSTER_ZERO_ALLOC)
			continue;
		/* With an external data file every data cluster is owned
		 * by exactly one entry: the flag must always be set.
		 */
		if (c->h->has_data_file) {
			rc = 1;
			ret = !(raw & QIMG_OFLAG_COPIED);
			write = c->fix_copied;
		} else {
			ret = ck_copied_want(c, e.host_offset,
					     raw & QIMG_OFLAG_COPIED, final,
					     &rc, &write);
		}
		if (ret <= 0) {
			if (ret < 0)
				return ret;
			continue;
		}
		snprintf(what, sizeof(what),
			 "data cluster: l2_entry=%llx refcount=%llu", raw, rc);
		ck_copied_fix(c, what, final, write);
		if (!write)
			continue;
		raw = rc == 1 ? raw | QIMG_OFLAG_COPIED :
				raw & ~QIMG_OFLAG_COPIED;
		be = cpu_to_be64(raw);
		ret = ck_write(c, &be, sizeof(be),
			       l2_off + (i << g->l2_entry_shift), "L2 entry");
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Check (and fix) the COPIED flags of the active L1 and L2 tables.  With
 * @final, only fix what an earlier pass deferred, silently: it was already
 * reported and counted.
 */
static int ck_copied(struct ck *c, bool final)
{
	const struct qimg_header *h = c->h;
	struct qimg_err err = { "" };
	u64 *l1, i, raw, l2_off, rc, be;
	char what[96];
	bool copied, write = false;
	int ret;

	ret = ck_read_l1(c, h->l1_table_offset, h->l1_size, &l1);
	if (ret || !l1)
		return ret;
	for (i = 0; i < h->l1_size; i++) {
		raw = be64_to_cpu(l1[i]);
		if (!raw)
			continue;
		if (qimg_l1_decode(c->g, raw, c->bound, &l2_off, &copied,
				   &err) || !l2_off)
			continue;
		ret = ck_copied_want(c, l2_off, copied, final, &rc, &write);
		if (ret < 0)
			goto out;
		if (ret) {
			snprintf(what, sizeof(what),
				 "L2 cluster: l1_index=%llu l1_entry=%llx refcount=%llu",
				 i, raw, rc);
			ck_copied_fix(c, what, final, write);
		}
		if (ret && write) {
			be = cpu_to_be64(qimg_l1_encode(l2_off, rc == 1));
			ret = ck_write(c, &be, sizeof(be),
				       h->l1_table_offset + i * 8, "L1 entry");
			if (ret)
				goto out;
		}
		ret = ck_copied_l2(c, l2_off, final);
		if (ret)
			goto out;
	}
	ret = ck_sync(c);
out:
	free(l1);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* The metadata journal: reported, and with -r replayed and released        */

static int ck_jrnl_read(void *ctx, u64 pos, void *buf, u32 len)
{
	struct ck *c = ctx;

	return qimgctl_pread(c->fd, buf, len, c->h->journal_offset + pos);
}

/*
 * A journal marked dirty: say what replay would find (the shared scan of
 * qimg_journal_fmt.c), or count a damaged journal as a corruption.
 */
static void ck_journal(struct ck *c)
{
	struct qimg_err err = { "" };
	struct qimg_jrnl_scan s;
	int ret;

	ret = qimgctl_jrnl_scan(c->fd, c->h, c->file_size, &s, &err);
	if (ret == -EUCLEAN) {
		ck_corrupt(c, "ERROR metadata journal: %s", err.msg);
		return;
	}
	if (ret == -ENOMEM) {
		ck_check_error(c, "ERROR out of memory for the metadata journal");
		return;
	}
	if (ret) {
		ck_check_error(c, "ERROR reading the metadata journal: %s",
			       strerror(-ret));
		return;
	}
	if (s.ntx)
		qimgctl_err("%s: the metadata journal holds %llu committed transaction%s (sequence %llu to %llu) not yet written in place%s; 'qimgctl check -r all' (or attaching the image) replays them",
			    c->img->path, s.ntx, s.ntx == 1 ? "" : "s",
			    s.first_seq, s.last_seq,
			    s.torn ? ", then a torn one that replay discards" : "");
	else
		qimgctl_err("%s: the metadata journal is marked dirty but holds no committed transaction%s",
			    c->img->path,
			    s.torn ? " (a torn one that replay discards)" : "");
}

static int ck_jrnl_write(void *ctx, u64 host, const void *buf, u32 len)
{
	struct ck *c = ctx;

	return ck_write(c, buf, len, host, "replayed journal record");
}

/*
 * Where the data of the journal extension starts in the header cluster
 * @img->hdr_buf, or 0.  The decoder accepted the framing already; this
 * walks it again with the same bounds.
 */
static u64 ck_jrnl_ext_pos(const struct qimgctl_image *img)
{
	const u8 *p = img->hdr_buf;
	u64 off = img->h.header_length, end = img->hdr_len, len;

	if (img->h.backing_file_offset && img->h.backing_file_offset < end)
		end = img->h.backing_file_offset;
	while (off + 8 <= end) {
		u32 type = get_unaligned_be32(p + off);

		len = get_unaligned_be32(p + off + 4);
		if (type == QIMG_EXT_END)
			break;
		if (type == QIMG_EXT_JOURNAL)
			return len == 16 && off + 24 <= end ? off + 8 : 0;
		off += 8 + ((len + 7) & ~7ULL);
	}
	return 0;
}

/* Rewrite one 8-byte word of the header cluster, on disk and in memory. */
static int ck_hdr_word(struct ck *c, u64 pos, u64 val, const char *what)
{
	u64 be = cpu_to_be64(val);
	int ret;

	ret = ck_write(c, &be, sizeof(be), pos, what);
	if (ret)
		return ret;
	memcpy((u8 *)c->img->hdr_buf + pos, &be, sizeof(be));
	return ck_sync(c);
}

/*
 * Replay a dirty journal offline with the shared passes (section 5.1):
 * every accepted write record through ck_jrnl_write(), fsync, the
 * alternate header copy (next generation, synced_seq one past the last
 * accepted transaction, tail where the scan ended), fsync, then clear
 * journal dirty, fsync.  A journal the scan rejects is not touched at all.
 */
static int ck_jrnl_replay(struct ck *c)
{
	struct qimgctl_image *img = c->img;
	struct qimg_jrnl_geom jg = {
		.cluster_bits = c->g->cluster_bits,
		.area_offset = img->h.journal_offset,
		.area_size = img->h.journal_size,
		.file_size = c->file_size,
	};
	struct qimg_jrnl_io io = { ck_jrnl_read, ck_jrnl_write, c };
	struct qimg_err err = { "" };
	struct qimg_jrnl_revoke *rv = NULL;
	struct qimg_jrnl_scan s;
	struct qimg_jrnl_hdr jh, nh;
	u8 chunk[QIMG_JRNL_HDR_CHUNK];
	u64 written = 0;
	void *work = NULL;
	int ret;

	ret = qimg_jrnl_hdr_read(&jg, &io, chunk, &jh, &err);
	if (!ret) {
		work = malloc(qimg_jrnl_work_size(&jh));
		if (!work) {
			ret = -ENOMEM;
			goto out;
		}
		ret = qimg_jrnl_scan(&jg, &io, &jh, work, &s, &err);
	}
	if (!ret) {
		rv = calloc(s.nrevokes ? s.nrevokes : 1, sizeof(*rv));
		ret = rv ? qimg_jrnl_revokes(&jg, &io, &s, work, rv, &err) :
			   -ENOMEM;
	}
	if (ret == -EUCLEAN) {
		qimgctl_err("%s: the metadata journal is damaged (%s): not replayed, nothing written",
			    img->path, err.msg);
		goto out;
	}
	if (ret)
		goto out;
	ret = qimg_jrnl_replay(&jg, &io, &s, work, rv, &written, &err);
	if (!ret)
		ret = ck_sync(c);
	if (ret)
		goto out;
	nh = jh;
	nh.generation = jh.generation + 1;
	nh.synced_seq = s.next_seq - 1;
	nh.tail_block = s.end_block;
	ret = qimg_jrnl_hdr_encode(work, &nh, &err);
	if (ret)
		goto out;
	ret = ck_write(c, work, 1U << nh.block_bits,
		       jg.area_offset + ((u64)!jh.copy << nh.block_bits),
		       "journal header");
	if (!ret)
		ret = ck_sync(c);
	if (!ret)
		ret = ck_hdr_word(c, QIMG_HDR_INCOMPAT_OFFSET,
				  img->h.incompatible_features &
				  ~QIMG_INCOMPAT_JOURNAL_DIRTY,
				  "header feature bits");
	if (ret)
		goto out;
	img->h.incompatible_features &= ~QIMG_INCOMPAT_JOURNAL_DIRTY;
	fprintf(stderr, "Replayed %llu transaction%s of the metadata journal",
		s.ntx, s.ntx == 1 ? "" : "s");
	if (s.ntx)
		fprintf(stderr, " (sequence %llu to %llu, %llu write%s)",
			s.first_seq, s.last_seq, written,
			written == 1 ? "" : "s");
	fprintf(stderr, "%s\n",
		s.torn ? "; a torn one after them was discarded" : "");
out:
	if (ret && ret != -EUCLEAN && !err.msg[0])
		qimgctl_err("%s: replaying the metadata journal failed: %s",
			    img->path, strerror(-ret));
	else if (ret && ret != -EUCLEAN)
		qimgctl_err("%s: replaying the metadata journal failed: %s",
			    img->path, err.msg);
	free(rv);
	free(work);
	return ret;
}

/*
 * `check -r` on an image with an allocated journal area, which only a
 * crash leaves behind (an attached image is locked): replay it when it is
 * dirty, then give it up the way a clean detach does.  Journal valid is
 * cleared first, then the extension goes back to offset 0 (the size
 * stays: the image still asks for a journal), each step synced; the
 * area's clusters, no longer referenced, are then freed by the repair
 * that follows (said once, not counted as leaks).  An interruption between steps leaves an image
 * that the next `check -r` takes up where this one stopped.
 */
static int ck_jrnl_release(struct qimgctl_image *img)
{
	struct ck_result res = { 0 };
	struct ck c = {
		.img = img, .h = &img->h, .g = &img->h.geom, .fd = img->fd,
		.res = &res, .file_size = img->file_size,
	};
	u64 pos = ck_jrnl_ext_pos(img), off = img->h.journal_offset;
	int ret;

	if (!pos) {
		qimgctl_err("%s: cannot find the journal extension in the header",
			    img->path);
		return -EUCLEAN;
	}
	if (img->h.incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY) {
		ret = ck_jrnl_replay(&c);
		if (ret)
			return ret;
	}
	if (img->h.autoclear_features & QIMG_AUTOCLEAR_JOURNAL_VALID) {
		ret = ck_hdr_word(&c, QIMG_HDR_AUTOCLEAR_OFFSET,
				  img->h.autoclear_features &
				  ~QIMG_AUTOCLEAR_JOURNAL_VALID,
				  "header feature bits");
		if (ret)
			return ret;
		img->h.autoclear_features &= ~QIMG_AUTOCLEAR_JOURNAL_VALID;
	}
	ret = ck_hdr_word(&c, pos, 0, "journal extension");
	if (ret)
		return ret;
	img->h.journal_offset = 0;
	fprintf(stderr, "Released the metadata journal area (%llu bytes at 0x%llx); the image still asks for a journal of that size\n",
		img->h.journal_size, off);
	return 0;
}

/* Clear the dirty and corrupt bits once the image is known consistent. */
static int ck_mark_clean(struct ck *c)
{
	u64 incompat = c->h->incompatible_features, be;
	int ret;

	if (!(incompat & (QIMG_INCOMPAT_DIRTY | QIMG_INCOMPAT_CORRUPT)))
		return 0;
	ret = ck_sync(c);
	if (ret)
		return ret;
	incompat &= ~(QIMG_INCOMPAT_DIRTY | QIMG_INCOMPAT_CORRUPT);
	be = cpu_to_be64(incompat);
	ret = ck_write(c, &be, sizeof(be), QIMG_HDR_INCOMPAT_OFFSET,
		       "header feature bits");
	if (ret)
		return ret;
	return ck_sync(c);
}

/*
 * One full check (and repair, per @fix) of an open image.  Returns 0 when
 * the check ran to the end (its findings are in @res), or a negative errno
 * when it could not complete.
 */
static int ck_run(struct qimgctl_image *img, int fix, u64 area, u64 area_len,
		  struct ck_result *res, struct qimgctl_progress *prog)
{
	struct ck c = {
		.img = img, .prog = prog,
		.h = &img->h, .g = &img->h.geom, .fd = img->fd,
		.fix = fix, .res = res, .rb_idx = CK_NO_BLOCK,
		.rb_alloc_failed = CK_NO_BLOCK,
		.area_start = area >> img->h.geom.cluster_bits,
		.area_end = (area + area_len) >> img->h.geom.cluster_bits,
	};
	const struct qimg_geom *g = c.g;
	u64 nb;
	int ret = 0;

	memset(res, 0, sizeof(*res));
	c.file_size = img->file_size;
	c.bound = c.file_size + g->cluster_size - 1;
	c.refmax = g->refcount_max < UINT32_MAX ? g->refcount_max :
						  UINT32_MAX;
	res->total_clusters = qimg_size_to_clusters(g, img->h.size);

	nb = qimg_size_to_clusters(g, c.file_size);
	if (nb + 1 > CK_MAX_CLUSTERS) {
		ck_check_error(&c, "ERROR image file too large to check (%llu clusters)",
			       nb);
		return -EFBIG;
	}
	c.nb_clusters = nb;
	if (prog)
		qimgctl_progress_start(prog, prog->show,
				       (u64)img->h.l1_size + nb);
	/* One cluster of slack: a reference may end inside the cluster
	 * after EOF (see ck_inc()).
	 */
	c.nb_refs = nb + 1;
	c.refs = calloc(c.nb_refs, sizeof(*c.refs));
	c.rb_buf = malloc(g->cluster_size);
	c.l2_buf = malloc(g->cluster_size);
	if (!c.refs || !c.rb_buf || !c.l2_buf) {
		ck_check_error(&c, "ERROR out of memory (%llu clusters)",
			       nb);
		ret = -ENOMEM;
		goto out;
	}

	/* Only when the journal could not be replayed (see ck_jrnl_release). */
	if (img->h.incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY && fix) {
		qimgctl_err("%s: the metadata journal was not replayed: nothing is repaired",
			    img->path);
		fix = 0;
		c.fix = 0;
	}
	if (img->h.has_journal_ext &&
	    img->h.incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY)
		ck_journal(&c);

	ret = ck_load_reftable(&c);
	if (ret)
		goto out;

	/* Build the in-memory refcounts. */
	ck_inc(&c, 0, g->cluster_size);
	ck_walk_l1(&c, img->h.l1_table_offset, img->h.l1_size, true);
	ck_walk_snapshots(&c);
	ck_walk_bitmaps(&c);
	/*
	 * The journal area is in use while journal valid vouches for it;
	 * without that bit it is stale (a QEMU wrote the image) and its
	 * clusters count as leaks.  Offset 0: no area, nothing to count.
	 * An area whose clusters are all free is not in use either: the
	 * driver changes the area's refcounts in journal transactions, and
	 * an attach or detach cut short leaves it named but free.
	 */
	if (img->h.has_journal_ext && img->h.journal_offset &&
	    (img->h.autoclear_features & QIMG_AUTOCLEAR_JOURNAL_VALID ||
	     img->h.incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY) &&
	    !ck_jrnl_area_free(&c))
		ck_inc(&c, img->h.journal_offset, img->h.journal_size);
	ck_walk_refblocks(&c);
	/* Without the whole picture, a verdict on each cluster is a guess. */
	if (c.res->check_errors)
		goto out;

	ret = ck_compare(&c, CK_REPORT);
	if (!ret && ck_can_raise(&c))
		ret = ck_compare(&c, CK_RAISE);
	/*
	 * Like qemu-img, `-r leaks` also fixes COPIED flags, but only when
	 * nothing else is wrong: a flag is then the only inconsistency and
	 * cannot be a symptom of refcounts that need fixing first.
	 */
	c.fix_copied = (fix & CK_FIX_ERRORS) ||
		       ((fix & CK_FIX_LEAKS) && !res->corruptions &&
			!res->check_errors && !res->leaks);
	if (!ret)
		ret = ck_copied(&c, false);
	if (!ret && ck_can_lower(&c))
		ret = ck_compare(&c, CK_LOWER);
	if (!ret && c.copied_deferred)
		ret = ck_copied(&c, true);
	if (!ret && c.fix && !res->corruptions && !res->check_errors)
		ret = ck_mark_clean(&c);
out:
	if (ret && !res->check_errors)
		res->check_errors++;
	free(c.refs);
	free(c.rb_buf);
	free(c.l2_buf);
	free(c.rb_off);
	free(c.rb_bad);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */

static void ck_print_human(const struct ck_result *r)
{
	if (!r->corruptions && !r->leaks && !r->check_errors) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%lld errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
			       r->corruptions);
		if (r->leaks)
			printf("\n%lld leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
			       r->leaks);
		if (r->check_errors)
			printf("\n%lld internal errors have occurred during the check.\n",
			       r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
		       r->allocated_clusters, r->total_clusters,
		       r->allocated_clusters * 100.0 / r->total_clusters,
		       r->fragmented_clusters * 100.0 / r->allocated_clusters,
		       r->compressed_clusters * 100.0 / r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %llu\n", r->image_end_offset);
}

static void ck_json_add(struct json_object *o, const char *key, s64 v,
			bool always)
{
	if (v || always)
		json_object_object_add(o, key, json_object_new_int64(v));
}

/* Same keys as qemu-img's ImageCheck; optional ones only when non-zero. */
static int ck_print_json(const struct ck_result *r, const char *path)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return -ENOMEM;
	ck_json_add(o, "image-end-offset", (s64)r->image_end_offset, false);
	ck_json_add(o, "total-clusters", (s64)r->total_clusters, false);
	ck_json_add(o, "corruptions", r->corruptions, false);
	ck_json_add(o, "check-errors", r->check_errors, true);
	ck_json_add(o, "leaks", r->leaks, false);
	ck_json_add(o, "corruptions-fixed", r->corruptions_fixed, false);
	ck_json_add(o, "leaks-fixed", r->leaks_fixed, false);
	ck_json_add(o, "allocated-clusters", (s64)r->allocated_clusters,
		    false);
	ck_json_add(o, "fragmented-clusters", (s64)r->fragmented_clusters,
		    false);
	ck_json_add(o, "compressed-clusters", (s64)r->compressed_clusters,
		    false);
	json_object_object_add(o, "filename", json_object_new_string(path));
	json_object_object_add(o, "format", json_object_new_string("qcow2"));
	printf("%s\n", json_object_to_json_string_ext(o,
		JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
		JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return 0;
}

static int ck_exit_code(const struct ck_result *r)
{
	if (r->check_errors)
		return QIMGCTL_CHECK_INCOMPLETE;
	if (r->corruptions)
		return QIMGCTL_CHECK_CORRUPT;
	if (r->leaks)
		return QIMGCTL_CHECK_LEAKS;
	return QIMGCTL_CHECK_CLEAN;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                             */

/*
 * Does @path start with the qcow2 magic?  Decides 63 versus 1: 1 yes,
 * 0 no (with @why saying how not), 2 it is a QED image, -1 cannot tell
 * (open/read error, left to the image opener to report).
 */
static int ck_has_magic(const char *path, const char **why)
{
	enum qimgctl_fmt fmt;
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || qimgctl_probe_format(fd, &fmt)) {
		close(fd);
		return -1;
	}
	close(fd);
	/* QEMU probes zero-padded bytes: "QED" alone is QED too. */
	if (fmt == QIMGCTL_FMT_QED && st.st_size > 0)
		return 2;
	if (st.st_size < 4) {
		*why = "file too short";
		return 0;
	}
	*why = "bad magic";
	return fmt == QIMGCTL_FMT_QCOW2;
}

static u64 ck_range_end(u64 off, u64 len)
{
	u64 end;

	return qimg_add_ok(off, len, &end) ? end : UINT64_MAX;
}

/*
 * Open @path for checking.  Like qimgctl_image_open(), except that an L1
 * or refcount table reaching past the end of the file does not stop it:
 * qemu opens such an image (it reads zeroes there) and its check reports
 * the tables as corruptions, and so does ck_run() (see ck_inc()).  Only
 * those two ranges are let past the file size; everything else the header
 * names is still held to the real one, by decoding a second time with the
 * bound raised just to cover them.
 */
static int ck_open(struct qimgctl_image *img, const char *path,
		   unsigned int flags)
{
	struct qimg_err err = { "" }, err2 = { "" };
	struct qimg_header lax;
	u64 bound, end;
	int ret;

	ret = qimgctl_image_load(img, path, flags);
	if (ret)
		return ret;
	ret = qimg_header_decode(img->hdr_buf, img->hdr_len, img->file_size,
				 &img->h, &err);
	if (!ret) {
		ret = qimgctl_bitmaps_qemu_ok(img);
		if (ret)
			qimgctl_image_close(img);
		return ret;
	}
	if (ret == -EOPNOTSUPP ||
	    qimg_header_decode(img->hdr_buf, img->hdr_len, (u64)INT64_MAX, &lax,
			       &err2))
		goto bad;
	bound = img->file_size;
	end = ck_range_end(lax.l1_table_offset, (u64)lax.l1_size * 8);
	if (end > bound)
		bound = end;
	end = ck_range_end(lax.refcount_table_offset,
			   (u64)lax.refcount_table_clusters << lax.cluster_bits);
	if (end > bound)
		bound = end;
	if (bound == img->file_size || bound > (u64)INT64_MAX ||
	    qimg_header_decode(img->hdr_buf, img->hdr_len, bound, &img->h,
			       &err2))
		goto bad;
	return 0;
bad:
	/*
	 * qemu-img check cannot open an encrypted image without its key
	 * either, and says so as a failed open (1), not as "no checks".
	 */
	if (ret == -EOPNOTSUPP && img->hdr_len >= 36 &&
	    get_unaligned_be32((const u8 *)img->hdr_buf + 32) - 1 < 2) {
		qimgctl_err("%s: encrypted image: opening it needs its key, which qimgctl does not take",
			    path);
		qimgctl_image_close(img);
		return -ENOKEY;
	}
	qimgctl_err("%s: %s", path, err.msg);
	qimgctl_image_close(img);
	return ret;
}

int qimgctl_cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repair", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "format", required_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qimgctl_progress prog = { 0 };
	bool progress = false;
	struct ck_result res, fixed;
	struct qimgctl_image img;
	u64 area = 0;
	bool json = false, quiet = false, share = false;
	const char *path, *why = "";
	int fix = 0, opt, ret, qed = -1;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":r:f:qpUh", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			progress = true;	/* qimgctl's own: qemu-img has none */
			break;
		case 'r':
			if (!strcmp(optarg, "leaks")) {
				fix = CK_FIX_LEAKS;
			} else if (!strcmp(optarg, "all")) {
				fix = CK_FIX_LEAKS | CK_FIX_ERRORS;
			} else {
				qimgctl_err("check: --repair must be 'leaks' or 'all', not '%s'",
					    optarg);
				return QIMGCTL_CHECK_INCOMPLETE;
			}
			break;
		case 'j':
			json = true;
			break;
		case 'o':
			if (!strcmp(optarg, "json")) {
				json = true;
			} else if (!strcmp(optarg, "human")) {
				json = false;
			} else {
				qimgctl_err("check: --output must be 'json' or 'human', not '%s'",
					    optarg);
				return QIMGCTL_CHECK_INCOMPLETE;
			}
			break;
		case 'f':
			if (!strcmp(optarg, "qed")) {
				qed = 1;
			} else if (strcmp(optarg, "qcow2")) {
				qimgctl_err("check: format '%s' is not supported, only qcow2 and qed",
					    optarg);
				return QIMGCTL_CHECK_UNSUPPORTED;
			} else {
				qed = 0;
			}
			break;
		case 'q':
			quiet = true;
			break;
		case 'U':
			share = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "check");
			return 0;
		default:
			qimgctl_opt_err("check", opt, argv);
			return QIMGCTL_CHECK_INCOMPLETE;
		}
	}
	if (qimgctl_one_file("check", argc, argv))
		return QIMGCTL_CHECK_INCOMPLETE;
	path = argv[optind];
	if (share && fix) {
		qimgctl_err("%s: --force-share (-U) can only be used without --repair (-r)",
			    path);
		return QIMGCTL_CHECK_INCOMPLETE;
	}

	/* QED, named with -f qed or probed: see qed.c. */
	if (qed == 1 || (qed < 0 && ck_has_magic(path, &why) == 2))
		return qimgctl_qed_check(path, fix != 0, json, quiet, share);
	/*
	 * Not qcow2 at all: qemu-img's "format does not support checks"
	 * case, said here in one line instead of the opener's.
	 */
	if (ck_has_magic(path, &why) == 0) {
		qimgctl_err("%s: not a qcow2 image (%s), so it cannot be checked",
			    path, why);
		return QIMGCTL_CHECK_UNSUPPORTED;
	}
	ret = ck_open(&img, path, fix ? QIMGCTL_OPEN_WRITE :
			   share ? QIMGCTL_OPEN_SHARE : 0);
	if (ret) {
		/*
		 * The opener said why in one line.  A feature we cannot
		 * handle is "does not support checks" too; a qcow2 image we
		 * failed to read is a check that did not complete.
		 */
		if (ret == -EOPNOTSUPP)
			return QIMGCTL_CHECK_UNSUPPORTED;
		return QIMGCTL_CHECK_INCOMPLETE;
	}
	/*
	 * qemu-img check opens the backing chain too: a backing file it
	 * cannot open is a check that did not start.  An image with a dirty
	 * journal of its own is checked (and replayed) without it: qemu
	 * cannot open that one anyway, and the replay needs no backing file.
	 * The chain is opened from the backing file the header names: the
	 * image itself, which may be damaged, is checked as it is.
	 */
	if (img.h.backing_file[0] &&
	    !(img.h.incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY) &&
	    qimgctl_backing_usable(path, img.h.backing_file,
				   img.h.backing_fmt, share)) {
		qimgctl_image_close(&img);
		return QIMGCTL_CHECK_INCOMPLETE;
	}
	if (img.h.incompatible_features & QIMG_INCOMPAT_DIRTY)
		qimgctl_err("%s: image is dirty (lazy refcounts): all refcounts are checked against the rebuilt ones",
			    path);
	/* A damaged journal stays as it is: the check below reports it. */
	if (fix && img.h.has_journal_ext && img.h.journal_offset) {
		area = img.h.journal_offset;
		ret = ck_jrnl_release(&img);
		if (ret && ret != -EUCLEAN) {
			qimgctl_image_close(&img);
			return QIMGCTL_CHECK_INCOMPLETE;
		}
		if (ret) {
			area = 0;
		} else {
			/*
			 * A replayed transaction may have changed the
			 * header's size and L1 fields (an online grow):
			 * check what is on disk now.
			 */
			qimgctl_image_close(&img);
			ret = ck_open(&img, path, QIMGCTL_OPEN_WRITE);
			if (ret)
				return QIMGCTL_CHECK_INCOMPLETE;
		}
	}

	/* -p: a meter on stderr, on a terminal only. */
	prog.show = progress && !quiet && isatty(STDERR_FILENO);
	ret = ck_run(&img, fix, area, area ? img.h.journal_size : 0, &res,
		     &prog);
	qimgctl_progress_update(&prog, prog.total, true);
	fixed = res;
	if (!ret && fixed.area_freed)
		fprintf(stderr, "Freed the %llu clusters of the released journal area\n",
			fixed.area_freed);
	if (!ret && fix && (res.corruptions_fixed || res.leaks_fixed ||
			    res.area_freed)) {
		/* Like qemu-img: report what the repaired image looks like. */
		if (!json && !quiet && (res.corruptions_fixed ||
					res.leaks_fixed))
			printf("The following inconsistencies were found and repaired:\n\n    %lld leaked clusters\n    %lld corruptions\n\nDouble checking the fixed image now...\n",
			       fixed.leaks_fixed, fixed.corruptions_fixed);
		qimgctl_image_close(&img);
		ret = ck_open(&img, path, 0);
		if (ret)
			return QIMGCTL_CHECK_INCOMPLETE;
		ret = ck_run(&img, 0, 0, 0, &res, NULL);
		res.leaks_fixed = fixed.leaks_fixed;
		res.corruptions_fixed = fixed.corruptions_fixed;
	}
	qimgctl_image_close(&img);
	if (ret)
		qimgctl_err("%s: check failed: %s", path, strerror(-ret));
	if (json) {
		if (ck_print_json(&res, path))
			return QIMGCTL_CHECK_INCOMPLETE;
	} else if (!quiet) {
		ck_print_human(&res);
	}
	return ck_exit_code(&res);
}

/**
 * qimgctl_repair_dirty() - rebuild the refcounts of an image left dirty
 * @path: the image (not open anywhere in this process: it is opened for
 *        writing and locked here)
 *
 * An image with lazy refcounts whose writer stopped without writing its
 * refcounts back carries the dirty bit; QEMU repairs such an image when it
 * opens it for writing, and so does a read-write attach: leaks and wrong
 * refcounts are fixed as by check -r all, the dirty bit is cleared, and
 * a second check must find the image clean.  A dirty journal is the
 * kernel's to replay: such an image is left alone.
 *
 * Return: 0 (repaired, or nothing to do), or 1 with a message printed.
 */
int qimgctl_repair_dirty(const char *path)
{
	struct ck_result res, after;
	struct qimgctl_image img;
	u64 incompat;
	int ret;

	if (ck_open(&img, path, QIMGCTL_OPEN_WRITE))
		return 1;
	incompat = img.h.incompatible_features;
	if (!(incompat & QIMG_INCOMPAT_DIRTY) ||
	    (incompat & QIMG_INCOMPAT_JOURNAL_DIRTY)) {
		qimgctl_image_close(&img);
		return 0;
	}
	ck_quiet = true;
	ret = ck_run(&img, CK_FIX_LEAKS | CK_FIX_ERRORS, 0, 0, &res, NULL);
	ck_quiet = false;
	qimgctl_image_close(&img);
	if (ret) {
		qimgctl_err("%s: rebuilding the refcounts of the dirty image failed: %s",
			    path, strerror(-ret));
		return 1;
	}
	if (ck_open(&img, path, 0))
		return 1;
	incompat = img.h.incompatible_features;
	ret = ck_run(&img, 0, 0, 0, &after, NULL);
	qimgctl_image_close(&img);
	if (ret || after.corruptions || after.leaks || after.check_errors ||
	    (incompat & QIMG_INCOMPAT_DIRTY)) {
		qimgctl_err("%s: the dirty image is not clean after its refcounts were rebuilt (%lld errors, %lld leaks): run 'qimgctl check' on it",
			    path, after.corruptions, after.leaks);
		return 1;
	}
	fprintf(stderr, "qimgctl: %s: the image was left dirty (lazy refcounts); its refcounts were rebuilt (%lld leaked clusters and %lld errors repaired)\n",
		path, res.leaks_fixed, res.corruptions_fixed);
	return 0;
}
