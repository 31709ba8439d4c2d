/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The qcow2 writer shared by the qimgctl commands that change images
 * (convert, resize, amend), and the guest-data reader they copy from.
 *
 * Writer model: the image is opened read-write (QEMU's write locks), its
 * L1 table, refcount table and the L2 tables and refcount blocks it
 * touches are held in memory, new clusters are always taken at the end of
 * the file, and qimgw_flush() makes everything durable in an order where
 * an interruption at any point leaves a consistent image, at worst with
 * leaked clusters:
 *
 *   1. guest data (written straight to its new clusters)        fsync
 *   2. refcount blocks, then the refcount table (new place or   fsync
 *      in place; a moved table is then named by the header)     fsync
 *   3. L2 tables                                                 fsync
 *   4. the L1 table (in place, or in new clusters)               fsync
 *   5. the header's fixed fields (L1 place and size, size)       fsync
 *   6. references dropped in steps 3-5 (old L1 / refcount table, fsync
 *      replaced clusters) get their refcounts lowered
 *
 * Refcounts are raised before anything points at a cluster and lowered only
 * after nothing does, so a crash never leaves a reference to a cluster
 * whose refcount is too low.
 */
#ifndef QIMGCTL_IMAGE_RW_H
#define QIMGCTL_IMAGE_RW_H

#include "image_io.h"

struct qimgw {
	struct qimgctl_image img;
	const struct qimg_geom *g;
	struct qimg_header *h;
	u64 cs;			/* cluster size */
	u64 end;		/* next cluster handed out (file end) */

	u64 *l1;		/* CPU-endian */
	u32 l1_size;
	u64 l1_off;
	bool l1_dirty;
	u64 l1_old_off;		/* replaced L1 table, freed after flush */
	u32 l1_old_size;
	u8 **l2;		/* per L1 entry: the table, or NULL */
	bool *l2_dirty;

	u64 *rt;		/* CPU-endian refcount table */
	u64 rt_entries;
	u64 rt_off;
	u32 rt_clusters;
	bool rt_dirty;
	u64 rt_old_off;		/* replaced refcount table */
	u32 rt_old_clusters;
	u8 **rb;		/* per refcount table entry: the block or NULL */
	bool *rb_dirty;

	bool hdr_dirty;
	u64 cbyte;		/* where the next compressed cluster may go */
	/*
	 * The persistent bitmaps are loaded and marked in use on disk
	 * (qimgctl_bitmaps_begin()): guest data may be written, the caller
	 * marks what it wrote (qimgctl_bitmaps_dirty()).
	 */
	bool bitmaps_tracked;
	/*
	 * Writes may go into an image with internal snapshots: an L2 table
	 * shared with one is copied for the active L1 table first, a shared
	 * data cluster (no COPIED flag) is written elsewhere (resize).
	 */
	bool snapshots_ok;

	/* References to drop once the tables naming them are durable. */
	u64 *drop;
	size_t nb_drop, drop_cap;
};

/*
 * Open @path (a qcow2 image, no external data file, not encrypted, not
 * corrupt, no qimg journal) for writing.  Prints the reason and returns
 * -errno on failure.
 */
int qimgw_open(struct qimgw *w, const char *path);
/* Flush (if @flush) and release everything; returns the flush result. */
int qimgw_close(struct qimgw *w, bool flush);

/* Make all changes durable in the order described above. */
int qimgw_flush(struct qimgw *w);

/* Take @n new clusters at the end of the file, refcount 1 each. */
int qimgw_alloc(struct qimgw *w, u64 n, u64 *off);
/* Add @delta (+1 or -1) to the refcount of the cluster at @off. */
int qimgw_ref_add(struct qimgw *w, u64 off, int delta);

/* The refcount of the cluster at @off (0 past the refcount table). */
int qimgw_ref_get(struct qimgw *w, u64 off, u64 *val);

/*
 * The L1 table gets at least @n entries (moved to new clusters when it
 * does not fit its own; the header names it at the next flush).
 */
int qimgw_l1_grow(struct qimgw *w, u32 n);

/*
 * Flush, then make the header name @nb snapshots in the table at @off
 * (one 12-byte write inside the first sector, then fsync).
 */
int qimgw_set_snapshots(struct qimgw *w, u32 nb, u64 off);

/*
 * Guest cluster @guest (cluster aligned, below the virtual size) gets the
 * cluster-sized @buf as its data.  In place when the cluster is already
 * ours alone (COPIED), else in a new cluster (a shared or compressed one
 * loses this reference after the flush).
 */
int qimgw_write_cluster(struct qimgw *w, u64 guest, const void *buf);
/*
 * The same for the subclusters in @mask only (extended L2; the others keep
 * their state).  @buf holds what the guest sees in the whole cluster: the
 * cluster is written whole, so allocated subclusters outside @mask are
 * rewritten from it in place, or copied from it into the new cluster when
 * the old one is shared (only with w->snapshots_ok; refused otherwise).
 * Without extended L2 the whole cluster is written.
 */
int qimgw_write_subclusters(struct qimgw *w, u64 guest, const void *buf,
			    u32 mask);
/* The same, as @clen bytes of compressed data (< cluster size). */
int qimgw_write_compressed(struct qimgw *w, u64 guest, const void *cbuf,
			   u64 clen);
/* Guest cluster @guest reads as zeroes (v3 zero flag, v2 written zeroes). */
int qimgw_write_zero(struct qimgw *w, u64 guest);
/*
 * Guest cluster @guest becomes unallocated (it reads from the backing
 * file, or as zeroes without one); its cluster is freed after the flush.
 * Nothing is made for a cluster that is unallocated already.
 */
int qimgw_discard(struct qimgw *w, u64 guest);

/*
 * Change the virtual size to @size (a multiple of 512): the L1 table is
 * grown (in place when its last cluster has room, else moved to new
 * clusters) when needed.  Shrinking discards every cluster past the new
 * end, as qemu does (callers ask for --shrink first).
 */
int qimgw_resize(struct qimgw *w, u64 size);

struct qimgr;

/*
 * Grow the virtual size to @size (more than now) as qemu's truncate does,
 * then flush.  @n is the image's own element of a backing chain opened
 * for reading and @r a reader of it (@n NULL: no backing file).  When the
 * backing file is longer than the old size, the new space must not show
 * its data: every (sub)cluster from the old size (rounded up to a
 * subcluster) to the new end becomes a zero one, and the cluster holding
 * the old end (only its subcluster holding it, with extended L2) is
 * written with the guest's data below the old end and zeroes from it on.
 * A version 2 image (no zero flag) and a compressed cluster to be zeroed
 * in part fail as in qemu ("Failed to zero out new clusters"), after the
 * L1 table was grown as qemu grows it first, the size unchanged.
 */
int qimgw_grow(struct qimgw *w, u64 size, struct qimgr *r,
	       struct qimgctl_node *n);

/*
 * After a flush: cut the file after the last cluster with a non-zero
 * refcount, as qemu does after shrinking.
 */
int qimgw_trim(struct qimgw *w);

/*
 * Flush, then write the header @nh (its version, features, extensions;
 * the table fields are the writer's) over the first cluster.  Refuses
 * headers with extensions the format core does not know.
 */
int qimgw_rewrite_header(struct qimgw *w, const struct qimg_header *nh);

/*
 * Change the refcount width to 2^@order bits (v3 images): new refcount
 * blocks and table are written after the end of the file, then the header
 * switches to them in one sector write; the old ones become free clusters.
 * Refuses (-ERANGE) when a refcount does not fit the new width.
 */
int qimgw_set_refcount_order(struct qimgw *w, u32 order);

/*
 * For a downgrade to compat 0.10: every zero cluster of the active L1 table
 * becomes unallocated (without a backing file) or a cluster of zeroes;
 * then flush.
 */
int qimgw_expand_zeros(struct qimgw *w, bool has_backing);

/*
 * Whether qimgw_make_empty() can empty @w's image: 0, or one line naming
 * the image and an error (every image qimgw_open() accepts can be, so far).
 */
int qimgw_can_empty(struct qimgw *w);

/*
 * Make every guest cluster of @w's image unallocated, so that it reads
 * through to its backing file (what qemu does to the top image after a
 * commit).  Two ways, as qemu:
 *
 * - v3 images whose L1 table fits with the header, one refcount table
 *   cluster and one refcount block in what that block counts: the file is
 *   rebuilt as a fresh image (header cluster kept, refcount table in
 *   cluster 1, its one block in cluster 2, an all-zero L1 table from
 *   cluster 3 on) and cut after it.  The image carries the DIRTY
 *   (lazy refcounts) bit while its refcounts are rewritten, each step
 *   synced: an interruption leaves an image that reads as empty and whose
 *   refcounts `check -r all` (or QEMU when it opens the image) rebuilds.
 * - otherwise (also with internal snapshots or persistent bitmaps) every
 *   L2 entry is cleared and its cluster loses this reference through the
 *   writer's flush order (one flush per L1 entry): never inconsistent, at
 *   worst leaks.  Every L1 entry without the COPIED flag (no table, or one
 *   shared with a snapshot) gets a new table first, in the first free
 *   cluster (clusters freed by an earlier L1 entry are used again), as
 *   qemu's discard allocates them; snapshots keep their clusters.
 *
 * Flushes first.  Afterwards the writer's cached tables are stale: only
 * qimgw_close() (without flush) may follow.
 */
int qimgw_make_empty(struct qimgw *w);

/* ------------------------------------------------------------------------ */
/* Reading guest data through a backing chain                               */

/*
 * Compress one cluster the way qemu's qcow2 does (zlib raw deflate with a
 * 4 KiB window, or a zstd frame).  Returns the compressed length, or 0 when
 * it would not be smaller than the cluster (qemu then writes it plain).
 */
size_t qimgw_compress(u8 type, const void *src, size_t len, void *dst);

struct qimgr {
	struct qimgctl_node *top;
	/* The last decompressed cluster of each node (by node index). */
	struct qimgr_cache {
		struct qimgctl_node *n;
		u64 raw;	/* L2 entry it came from, 0 = none */
		u8 *buf;
		u8 *cbuf;
	} cache[QIMGCTL_MAX_CHAIN];
	int nb_cache;
};

/*
 * A reader of the chain from @top down; its elements may be qcow2 images,
 * QED images (opened with QIMGCTL_CHAIN_QED) and raw files.
 */
int qimgr_init(struct qimgr *r, struct qimgctl_node *top);
void qimgr_fini(struct qimgr *r);

/*
 * How guest bytes from @off on read in @n, looking through backing files
 * unless @top_only: *len (at most @max) bytes are known to read as zeroes
 * (*zero) or may hold data; *alloc says whether @n itself (not its
 * backing files) allocates them.
 */
int qimgr_status(struct qimgr *r, struct qimgctl_node *n, u64 off, u64 max,
		 bool top_only, u64 *len, bool *zero, bool *alloc);

/* Read @len guest bytes at @off of @n (past its end: zeroes). */
int qimgr_read(struct qimgr *r, struct qimgctl_node *n, u64 off, void *buf,
	       u64 len);

/* ------------------------------------------------------------------------ */
/* Copying persistent bitmaps (bitmap.c, for convert --bitmaps)             */

/*
 * Whether the bitmaps of the qcow2 v3 image @src can be copied, before
 * anything is created: an in-use (inconsistent) bitmap is refused, one
 * line on stderr and -EBUSY, unless @skip_broken.
 */
int qimgctl_bitmaps_check_copy(struct qimgctl_image *src, bool skip_broken);

/*
 * Give the qcow2 v3 image of @w, of the same virtual size as @src, a copy
 * of every persistent bitmap of @src (name, granularity, enabled or not,
 * the bits), in @src's order, with the order of steps of `bitmap`; with
 * @skip_broken, in-use bitmaps are left out with a warning.
 */
int qimgctl_bitmaps_copy(struct qimgw *w, struct qimgctl_image *src,
			 bool skip_broken);

/*
 * Resize the qcow2 image @file open in @w to @size, as `qemu-img resize`
 * (the caller checked --shrink) and `qemu-img amend -o size=` do (resize.c).
 */
int qimgctl_resize_writer(struct qimgw *w, const char *file, u64 size);

/*
 * Changing an image with persistent bitmaps the way qemu changes one it
 * has open (bitmap.c, for resize and rebase): _begin() refuses in-use
 * bitmaps (with @refuse_in_use, as qemu's resize; else they are left as
 * they are, as qemu's writes leave them) and ones that would grow past
 * qemu's limits at @size (the size
 * the image will have), loads the bits and marks every bitmap in use on
 * disk; _dirty() marks guest bytes [@off, @off + @len) written in every
 * enabled bitmap, as qemu's writes do; _end(), once the changes are
 * durable, stores the bitmaps for the image's size then (grown bits
 * clean, bits past a shrunk end dropped), no longer in use.  *@state is
 * NULL without bitmaps; _end() frees it, _free() frees it after a
 * failure (the bitmaps stay in use: inconsistent, as qemu leaves them).
 */
int qimgctl_bitmaps_begin(struct qimgw *w, u64 size, bool refuse_in_use,
			  void **state);
void qimgctl_bitmaps_dirty(void *state, u64 off, u64 len);
int qimgctl_bitmaps_end(struct qimgw *w, void *state);
void qimgctl_bitmaps_free(void *state);

#endif /* QIMGCTL_IMAGE_RW_H */
