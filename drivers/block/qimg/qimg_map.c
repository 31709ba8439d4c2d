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
 * takes dev->meta_lock to reserve a host cluster and record the allocation
 * as in flight, drops the lock for the data I/O and takes it again to point
 * the L2 entry at the new cluster (qimg_map_write_alloc).  A second writer
 * of the same cluster waits for the first to finish, then finds the
 * cluster allocated: concurrent writes never allocate twice.
 *
 * Copy-on-write source: the current guest view of the cluster, read
 * through the normal read path, so backing files, zero clusters,
 * compressed clusters and clusters shared with internal snapshots are all
 * handled the same way.
 *
 * Fresh clusters: a cluster taken from host space that nothing has
 * written since the attach (past the old end of the file and past every
 * allocation) reads as zeros already, once the file covers it; the file
 * grows a megabyte at a time (a sparse truncate) for that.  When the guest
 * sees zeros there too (no backing data), a partial write then writes
 * only its own bytes: no copy-on-write buffer.  Such a write, or one of a
 * whole cluster, is submitted by qimg_rq.c as an asynchronous direct
 * kiocb whose completion links the entry.  A freed and reused cluster is
 * never fresh: hole punching may have failed, and it is not tracked.
 *
 * Reuse of freed clusters: data I/O to a host cluster found by a lookup
 * runs without any lock, so a discard of the same guest cluster may point
 * the entry elsewhere and queue the old host cluster for freeing while
 * that I/O is still in flight.  If the cluster were freed and allocated to
 * another guest cluster before the I/O landed, a stale write would corrupt
 * its new owner.  Such I/O is therefore an SRCU read section
 * (qimg_io_enter/exit) and the frees wait for every I/O that started
 * before the entries changed (qimg_io_drain, from qimg_apply_frees).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ratelimit.h>
#include <linux/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/wait.h>

#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_overlap.h"
#include "qimg_refcount.h"
#include "qimg_map.h"

static int qimg_map_corrupt(struct qimg_image *img, const char *what,
			    const struct qimg_err *err)
{
	if (img == &img->dev->top)
		qimg_mark_corrupt(img->dev, "%s: %s", what, err->msg);
	else
		qimg_dev_err_ratelimited(img->dev, "backing image %s: %s: %s\n",
					 img->path ? img->path : "?", what,
					 err->msg);
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
		unsigned int seq;

		/* The two words change together (qimg_meta_set_l2()). */
		do {
			seq = read_seqcount_begin(&img->l2x_seq);
			raw = be64_to_cpu(READ_ONCE(tab[idx * 2]));
			bitmap = be64_to_cpu(READ_ONCE(tab[idx * 2 + 1]));
		} while (read_seqcount_retry(&img->l2x_seq, seq));
	} else {
		raw = be64_to_cpu(READ_ONCE(tab[idx]));
	}
	if (qimg_l2_decode(g, img->h->version, raw, bitmap,
			   qimg_image_end(img), e, &err))
		return qimg_map_corrupt(img, "L2 entry", &err);
	return 0;
}

/**
 * qimg_map_lookup() - decode the L2 entry of a guest offset
 * @img: the image (the top one or a backing file)
 * @guest: guest offset
 * @e: receives the decoded entry (QIMG_CLUSTER_UNALLOCATED when no L2
 *     table covers @guest)
 *
 * Lockless: the L1 entry is read with READ_ONCE and the L2 table comes
 * from the cache.  Bad entries are corruption: of the top image, it is
 * marked corrupt; of a backing file, reported.
 *
 * Context: process context, may sleep (L2 table read on a cache miss);
 * dev->meta_lock may or may not be held.  Without it the entry may change
 * at once: I/O to the top image's host cluster found here must be inside
 * a qimg_io_enter() section begun before the lookup.
 * Return: 0, -EUCLEAN (corrupt entry), -ENOMEM or a read's errno.
 */
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
 * The L2 table covering @guest, ready to be modified through @h
 * (QIMG_CREDITS_L2_WRITE): allocated if the L1 entry is empty, copied if
 * it is shared with a snapshot (no COPIED flag).
 */
static int qimg_l2_for_write(struct qimg_handle *h, u64 guest,
			     struct qimg_centry **out)
{
	struct qimg_device *dev = h->dev;
	struct qimg_image *img = &dev->top;
	u64 l1i = qimg_l1_index(img->g, guest);
	struct qimg_centry *old, *t;
	u64 l2_off, new_off = 0;
	bool copied;
	int ret;

	if (l1i >= img->l1_entries)
		return -EIO;
	ret = qimg_l1_get(img, l1i, &l2_off, &copied);
	if (ret)
		return ret;
	if (l2_off && copied) {
		/* What we change there is written back there. */
		ret = qimg_overlap_check(dev, l2_off, img->g->cluster_size,
					 QIMG_OL_ACTIVE_L2, "L2 table");
		if (ret)
			return ret;
		ret = qimg_cache_get(&img->l2, l2_off, false, &t);
		if (ret)
			return ret;
		ret = qimg_meta_get_write_access(h, &img->l2, t);
		if (ret) {
			qimg_cache_put(&img->l2, t);
			return ret;
		}
		*out = t;
		return 0;
	}

	old = NULL;
	if (l2_off) {
		/* Shared with a snapshot: the old table stays theirs. */
		ret = qimg_cache_get(&img->l2, l2_off, false, &old);
		if (ret)
			return ret;
	}
	ret = qimg_alloc_clusters(h, &new_off);
	/* The whole new table is dirty before anything can point at it. */
	if (!ret)
		ret = qimg_meta_new_table(h, &img->l2, new_off, old, &t);
	if (old)
		qimg_cache_put(&img->l2, old);
	if (ret) {
		/* Allocated, nothing in it: give it back (a crash leaks it). */
		if (new_off)
			qimg_defer_free(h, new_off, img->g->cluster_size);
		return ret;
	}
	/*
	 * Only a handle that can no longer change anything fails here; the
	 * new table stays dirty at new_off, so the cluster is left allocated
	 * (leaked), never handed out again under it.
	 */
	ret = qimg_meta_set_l1(h, l1i, qimg_l1_encode(new_off, true));
	if (ret) {
		qimg_cache_put(&img->l2, t);
		return ret;
	}
	if (l2_off)
		qimg_defer_free(h, l2_off, img->g->cluster_size);
	/* Failing (no memory) only leaves the new table unchecked. */
	qimg_overlap_add(dev, new_off, QIMG_OL_ACTIVE_L2);
	if (l2_off)
		qimg_overlap_drop_l2(dev, l2_off, l1i);
	*out = t;
	return 0;
}

/*
 * The allocation in flight of the guest cluster at @cluster, or NULL.  A
 * record leaves the list only under dev->meta_lock (qimg_alloc_link()),
 * so the result stays valid while the caller holds that lock.
 */
static struct qimg_alloc *qimg_inflight_find(struct qimg_device *dev,
					     u64 cluster)
{
	struct qimg_inflight *f;
	struct qimg_alloc *a = NULL;

	spin_lock(&dev->inflight_lock);
	list_for_each_entry(f, &dev->inflight, node) {
		if (f->cluster == cluster) {
			a = container_of(f, struct qimg_alloc, fl);
			break;
		}
	}
	spin_unlock(&dev->inflight_lock);
	return a;
}

static bool qimg_inflight_busy(struct qimg_device *dev, u64 cluster)
{
	return qimg_inflight_find(dev, cluster);
}

/* Does the guest currently see only zeros in this cluster? */
static bool qimg_cow_src_zero(struct qimg_image *img,
			      const struct qimg_l2_entry *e)
{
	switch (e->type) {
	case QIMG_CLUSTER_ZERO_PLAIN:
	case QIMG_CLUSTER_ZERO_ALLOC:
		return true;
	case QIMG_CLUSTER_UNALLOCATED:
		return !img->backing;
	default:
		return false;
	}
}

/*
 * Extended L2: does the guest see only zeros in the subclusters @mask of
 * @e (zero subclusters, or unallocated ones without a backing file)?
 */
static bool qimg_sc_view_zero(struct qimg_image *img,
			      const struct qimg_l2_entry *e, u32 mask)
{
	/* Only a normal entry has allocation bits. */
	if (e->type == QIMG_CLUSTER_COMPRESSED || (e->alloc_bitmap & mask))
		return false;
	return (e->zero_bitmap & mask) == mask || !img->backing;
}

/*
 * Extended L2: the part [*from, *to) of the cluster a write of a->len
 * bytes at @coff writes, its data and the copy-on-write around it.  The
 * subclusters it touches become allocated; their bytes outside the data
 * come from what the guest sees there now.  A cluster that is shared or
 * compressed is copied whole (its allocated subclusters stay allocated in
 * the copy).  In the entry's own cluster, a touched subcluster that is
 * allocated already keeps its bytes: in-place writers may be writing
 * them now.  A fresh cluster reads as zeros, so zeros need no writing.
 */
static void qimg_sc_cow_range(struct qimg_image *img,
			      const struct qimg_alloc *a, u64 coff, u64 *from,
			      u64 *to)
{
	const struct qimg_geom *g = img->g;
	const struct qimg_l2_entry *e = &a->e;
	u64 scs = 1ULL << g->subcluster_bits;
	u64 end = coff + a->len;
	u32 head = BIT(coff >> g->subcluster_bits);
	u32 tail = BIT((end - 1) >> g->subcluster_bits);

	if (!a->reuse && (e->type == QIMG_CLUSTER_NORMAL ||
			  e->type == QIMG_CLUSTER_COMPRESSED)) {
		*from = 0;
		*to = g->cluster_size;
		return;
	}
	*from = round_down(coff, scs);
	*to = round_up(end, scs);
	if ((a->reuse && (e->alloc_bitmap & head)) ||
	    (a->fresh && qimg_sc_view_zero(img, e, head)))
		*from = coff;
	if ((a->reuse && (e->alloc_bitmap & tail)) ||
	    (a->fresh && qimg_sc_view_zero(img, e, tail)))
		*to = end;
}

/* Host space made ready ahead of the allocations that will use it. */
#define QIMG_PREALLOC_BYTES	SZ_1M

/*
 * Where never-written host space starts (dev->meta_lock held).  Known
 * first at the first allocation: until then nothing has been written past
 * the end of the file, and every later write goes to an allocated
 * cluster, below alloc_end.  Growing the file ahead moves i_size only.
 */
static u64 qimg_hole_start(struct qimg_image *img)
{
	u64 cs = img->g->cluster_size;

	if (!img->hole_start)
		img->hole_start = max_t(u64, cs,
					round_up(qimg_image_end(img), cs));
	return max_t(u64, img->hole_start, atomic64_read(&img->alloc_end));
}

/*
 * Flush-heavy writers.  A guest that fsync()s small allocating writes
 * (a database, a VM's file system journal) makes every sync of ours pay
 * the host file system's metadata commit too, when each write fills a
 * hole of the file: the blocks it allocated must become durable with it.
 * For such writers the space ahead of the allocations is written with
 * zeros instead, a step at a time: the file system commits once per step,
 * and the syncs in between are a device flush, as for overwrites.  Zeros
 * read as what the space held (a hole), so the space stays fresh, and
 * nothing of ours is written past alloc_end, so the zeros overwrite
 * nothing.  The cost is writing each step twice, which is why writers
 * that allocate a step or more between flushes keep the holes: measured
 * at each flush (qimg_map_note_flush()), forgotten a second after the
 * last one.  With dev->meta_lock held.
 */
static void qimg_prezero(struct qimg_image *img, u64 host, u64 step)
{
	struct qimg_device *dev = img->dev;
	u64 cs = img->g->cluster_size;
	u64 from, end;
	int ret;

	if (!READ_ONCE(dev->prezero) || img->no_prezero ||
	    !READ_ONCE(img->prezero_wanted) ||
	    time_after(jiffies, READ_ONCE(img->flush_jiffies) + HZ) ||
	    host + cs + step / 2 <= img->zeroed_end)
		return;
	from = max_t(u64, img->zeroed_end, atomic64_read(&img->alloc_end));
	end = round_up(host + cs + step / 2, step);
	if (end <= from)
		return;
	ret = qimg_file_zero(img, from, end - from);
	if (ret) {
		/* Holes then; the data write will tell about a bad disk. */
		img->no_prezero = true;
		qimg_dev_info(dev, "writing zeros ahead failed (%d), not tried again\n",
			      ret);
		return;
	}
	img->zeroed_end = end;
	atomic64_add(end - from, &dev->prezero_bytes);
}

/**
 * qimg_map_note_flush() - a flush of the device begins
 * @dev: the device
 *
 * Tells the allocator how much host space the writes since the previous
 * flush allocated, which decides whether it writes zeros ahead (see
 * "Flush-heavy writers" above).
 *
 * Context: any context, no lock (the statistics are a heuristic: racing
 * flushes may each see part of the allocations).
 */
void qimg_map_note_flush(struct qimg_device *dev)
{
	struct qimg_image *img = &dev->top;
	u64 end = atomic64_read(&img->alloc_end);
	u64 last = READ_ONCE(img->flush_alloc_end);
	u64 step = max_t(u64, img->g->cluster_size, QIMG_PREALLOC_BYTES);

	if (end > last)
		WRITE_ONCE(img->prezero_wanted, end - last < step);
	WRITE_ONCE(img->flush_alloc_end, end);
	WRITE_ONCE(img->flush_jiffies, jiffies);
}

/*
 * The cluster at @host was never written: make sure it lies inside the
 * file, so that it reads as zeros around whatever we write into it, by
 * growing the file (sparse) ahead, a megabyte at a time, so that
 * appending allocations rarely pay for it.  Holes, not fallocate()'s
 * unwritten extents: measured under TCG, ext4 splitting a big unwritten
 * extent for every 4k write costs more than allocating blocks in a hole.
 * The truncate never shrinks the file: @host is the newest allocation
 * (host >= alloc_end before it), so nothing we write lies past @end.
 * With dev->meta_lock held; false: write the whole cluster.
 */
static bool qimg_fresh_ready(struct qimg_image *img, u64 host)
{
	u64 cs = img->g->cluster_size;
	u64 step = max_t(u64, cs, QIMG_PREALLOC_BYTES);
	u64 size, end;
	int ret;

	qimg_prezero(img, host, step);
	size = i_size_read(file_inode(img->file));
	/*
	 * Grown while half a step is still ahead, so that a sync (any
	 * commit's) usually makes the new size durable before allocations
	 * reach it: the journal orders the data of a fresh cluster only
	 * past the durable size.
	 */
	if (host + cs + step / 2 <= size)
		return true;
	if (img->no_prealloc)
		return host + cs <= size;
	end = round_up(host + cs + step / 2, step);
	ret = qimg_file_extend(img->file, end);
	if (ret)
		img->no_prealloc = true;	/* not allowed here: never again */
	return host + cs <= i_size_read(file_inode(img->file));
}

/* Fresh extended-L2 clusters up to this size are written whole. */
#define QIMG_PAD_MAX	SZ_64K

/*
 * The part [a->from, a->to) of the cluster that an allocating write of
 * a->len bytes writes: the guest's data alone when that is all the new
 * cluster needs (a whole cluster, or a fresh one, reading as zeros, where
 * the guest sees zeros now), else the whole cluster, the data plus the
 * copy-on-write of head and tail; with extended L2 entries, the touched
 * subclusters (qimg_sc_cow_range()).
 *
 * Extended L2 entries in a fresh cluster of at most QIMG_PAD_MAX: the
 * whole cluster, with zeros in the subclusters left unallocated
 * (a->pad).  The file system then allocates the cluster's blocks in one
 * write, and the later writes into its other subclusters overwrite
 * blocks in place instead of each allocating some: measured under TCG
 * with 4k random writes into an overlay of 64k clusters, 1.55x the
 * IOPS of writing the touched subclusters alone.  Not where zeros were
 * written ahead (qimg_prezero()): the blocks are there already.  With
 * dev->meta_lock held.
 */
static void qimg_alloc_range(struct qimg_image *img, struct qimg_alloc *a)
{
	const struct qimg_geom *g = img->g;
	u64 coff = qimg_cluster_offset(g, a->guest);
	u64 from = coff, to = coff + a->len;

	if (g->ext_l2) {
		qimg_sc_cow_range(img, a, coff, &from, &to);
		if (a->fresh && !a->reuse && g->cluster_size <= QIMG_PAD_MAX &&
		    a->host + g->cluster_size > img->zeroed_end &&
		    (from || to != g->cluster_size)) {
			a->pad = true;
			from = 0;
			to = g->cluster_size;
		}
	} else if (a->len != g->cluster_size &&
		   !(a->fresh && qimg_cow_src_zero(img, &a->e))) {
		from = 0;
		to = g->cluster_size;
	}
	a->from = from;
	a->to = to;
}

/**
 * qimg_inflight_wait() - wait until no allocation of a cluster is in flight
 * @dev: the device
 * @cluster: guest offset of the cluster
 *
 * Drops dev->meta_lock while waiting, so whatever the caller looked up
 * before must be looked up again.
 *
 * Context: process context, may sleep; called and returns with
 * dev->meta_lock held; takes dev->inflight_lock.
 */
void qimg_inflight_wait(struct qimg_device *dev, u64 cluster)
{
	lockdep_assert_held(&dev->meta_lock);
	while (qimg_inflight_busy(dev, cluster)) {
		mutex_unlock(&dev->meta_lock);
		wait_event(dev->inflight_wq,
			   !qimg_inflight_busy(dev, cluster));
		mutex_lock(&dev->meta_lock);
	}
}

/* Riders one allocation in flight takes at most; more writers wait. */
#define QIMG_RIDERS_MAX	64

/*
 * Join the allocation in flight of @a's cluster as a rider, if it takes
 * riders: @a's data then goes to the reserved cluster, and the link waits
 * for it.  The leader's cluster is fresh and the guest sees zeros in all
 * of it, so any part of it is written with the guest's data alone.
 * dev->meta_lock held; takes dev->inflight_lock.
 */
static bool qimg_alloc_join(struct qimg_device *dev, struct qimg_alloc *a)
{
	struct qimg_alloc *l = qimg_inflight_find(dev, a->fl.cluster);

	if (!l || !l->joinable || l->nr_riders >= QIMG_RIDERS_MAX)
		return false;
	a->leader = l;
	a->host = l->host;
	l->pending++;
	l->nr_riders++;
	list_add_tail(&a->ride, &l->riders);
	atomic64_inc(&dev->alloc_riders);
	return true;
}

/**
 * qimg_alloc_begin() - step 1 of an allocating or copy-on-write write
 * @dev: the device
 * @guest: guest offset of the write
 * @len: bytes the guest writes there, inside the cluster
 * @a: the allocation, filled in here
 * @ride: the caller ends the write through qimg_alloc_data_done(), so it
 *	may ride on an allocation of the same cluster in flight, and others
 *	may ride on its own
 *
 * The allocating / copy-on-write path has three steps:
 *
 *  1. qimg_alloc_begin(), under dev->meta_lock: look again, get the L2
 *     table (allocating it if needed), reserve the host cluster, record
 *     the allocation in flight;
 *  2. without the lock: write the data and the copy-on-write parts, here
 *     (qimg_alloc_write()) or as an asynchronous kiocb (qimg_rq.c);
 *  3. qimg_alloc_finish() or qimg_alloc_link(), under the lock: point the
 *     L2 entry at the cluster (or give the cluster back on error) and drop
 *     the in-flight record.
 *
 * The entry reaches the disk only after a sync that follows step 2, so the
 * order data -> L2 -> L1 of the crash model holds.
 *
 * With extended L2 entries, a write into the entry's own cluster that
 * touches subclusters not allocated yet takes the same steps without a
 * new cluster (a->reuse): step 3 sets their bits in the bitmap.
 *
 * A write into a fresh cluster whose allocation is in flight (one that
 * reads as zeros, where the guest sees zeros) does not wait for the link
 * when @ride allows: it writes its data into the reserved cluster too (a
 * rider), and the link of the cluster waits until every rider's data is
 * written (qimg_alloc_data_done()).  Sequential small writes into new
 * clusters then go out at the guest's queue depth.
 *
 * Context: process context, may sleep; takes dev->meta_lock (the caller
 * must not hold it) and dev->inflight_lock, and may wait for another
 * allocation of the same cluster (qimg_inflight_wait()).
 * Return: 0 with @a reserved (finish it even when a->err is set: then no
 * data may be written), QIMG_ALLOC_OURS when the cluster turned out to be
 * allocated and ours meanwhile (write to a->host, then qimg_io_exit(dev,
 * a->epoch)), QIMG_ALLOC_RIDE (only with @ride) when @a rides on the
 * allocation in flight (write to a->host, then qimg_alloc_data_done()),
 * or a negative errno (nothing to undo).
 */
int qimg_alloc_begin(struct qimg_device *dev, u64 guest, size_t len,
		     struct qimg_alloc *a, bool ride)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	u64 cstart = guest & ~(g->cluster_size - 1);
	struct qimg_handle h;
	int ret;

	memset(a, 0, sizeof(*a));
	a->guest = guest;
	a->len = len;
	a->fl.cluster = cstart;
	a->pending = 1;
	INIT_LIST_HEAD(&a->riders);
	mutex_lock(&dev->meta_lock);
	if (ride && qimg_alloc_join(dev, a)) {
		mutex_unlock(&dev->meta_lock);
		return QIMG_ALLOC_RIDE;
	}
	qimg_inflight_wait(dev, cstart);
	ret = qimg_map_lookup(img, guest, &a->e);
	if (ret)
		goto unlock;
	if (a->e.type == QIMG_CLUSTER_NORMAL && a->e.copied &&
	    qimg_sc_allocated(g, &a->e, guest - cstart, len)) {
		/* Someone allocated it while we waited. */
		ret = qimg_overlap_check(dev, a->e.host_offset,
					 img->g->cluster_size, 0,
					 "guest data write");
		if (ret)
			goto unlock;
		a->epoch = qimg_io_enter(dev);
		a->host = a->e.host_offset;
		mutex_unlock(&dev->meta_lock);
		return QIMG_ALLOC_OURS;
	}

	/* Zero-allocated, or (extended L2) partly allocated: ours alone. */
	a->reuse = (a->e.type == QIMG_CLUSTER_ZERO_ALLOC ||
		    a->e.type == QIMG_CLUSTER_NORMAL) && a->e.copied;
	if (a->reuse) {
		/*
		 * Before any metadata changes: a refused request must leave
		 * nothing behind (its L2 table copy would be written back).
		 */
		ret = qimg_overlap_check(dev, a->e.host_offset,
					 img->g->cluster_size, 0,
					 g->ext_l2 ? "guest data write (new subclusters)" :
					 "guest data write (zero-allocated cluster)");
		if (ret)
			goto unlock;
	}

	ret = qimg_meta_start(dev, &h, QIMG_CREDITS_ALLOC_WRITE);
	if (!ret)
		ret = qimg_l2_for_write(&h, guest, &a->t);
	if (!ret) {
		if (a->reuse) {
			a->host = a->e.host_offset;	/* ours alone: reuse */
		} else {
			u64 hole = qimg_hole_start(img);

			ret = qimg_alloc_data(&h, &a->host);
			a->fresh = !ret && a->host >= hole &&
				   qimg_fresh_ready(img, a->host);
		}
		if (ret)
			qimg_cache_put(&img->l2, a->t);
	}
	/* A failed write-back leaves the metadata dirty: no data I/O then. */
	a->err = qimg_meta_stop(&h, 0);
	if (ret)
		goto unlock;
	qimg_alloc_range(img, a);
	a->joinable = ride && !a->err && !a->reuse && a->fresh && !g->ext_l2 &&
		      qimg_cow_src_zero(img, &a->e) &&
		      qimg_alloc_data_only(dev, a);
	spin_lock(&dev->inflight_lock);
	list_add(&a->fl.node, &dev->inflight);
	spin_unlock(&dev->inflight_lock);
	mutex_unlock(&dev->meta_lock);
	return 0;
unlock:
	mutex_unlock(&dev->meta_lock);
	return ret;
}

/**
 * qimg_alloc_data_only() - is the guest's data all the new cluster needs?
 * @dev: the device
 * @a: an allocation begun by qimg_alloc_begin()
 *
 * True for a whole cluster, or for a fresh cluster (reads as zeros) where
 * the guest sees zeros now, or (extended L2) for data that covers the
 * subclusters it touches: no copy-on-write around the data, which can go
 * straight to a->host plus its offset in the cluster, like any data
 * write.
 *
 * Context: any context, no lock, does not sleep.
 * Return: true if no copy-on-write is needed.
 */
bool qimg_alloc_data_only(struct qimg_device *dev, const struct qimg_alloc *a)
{
	u64 coff = qimg_cluster_offset(dev->top.g, a->guest);

	return a->from == coff && a->to == coff + a->len;
}

/**
 * qimg_alloc_fill() - gather what an allocating write puts in its cluster
 * @dev: the device
 * @a: an allocation begun by qimg_alloc_begin(), not data-only
 * @it: the guest's data (a->len bytes); consumed
 * @b: the buffer, allocated here: a->to - a->from bytes
 *
 * [a->from, a->to) of the new cluster, to be written at a->host + a->from:
 * the guest's data and, around it, what the guest sees there now, read
 * through the normal read path (zeros, the backing file, the old cluster)
 * into @b, whose pages direct I/O can use (an image file opened for
 * direct I/O would otherwise fill its page cache with the copy).  A head
 * and a tail come in one read when the data between them is smaller
 * than they are: a request costs more than the bytes.  Runs without
 * dev->meta_lock; nothing points at the new cluster yet, so readers
 * still see the old mapping.
 *
 * Context: process context, may sleep; no lock of ours held.
 * Return: 0, or a negative errno (then @b holds nothing).
 */
int qimg_alloc_fill(struct qimg_device *dev, const struct qimg_alloc *a,
		    struct iov_iter *it, struct qimg_buf *b)
{
	struct qimg_image *img = &dev->top;
	u64 coff = qimg_cluster_offset(img->g, a->guest);
	u64 cstart = a->guest - coff;
	u64 from = a->from, to = a->to, end = coff + a->len;
	u64 head, tail;
	struct iov_iter dst;
	int ret;

	ret = qimg_buf_alloc(b, a->to - a->from);
	if (ret)
		return ret;
	if (a->pad) {
		/* Zeros around what the subclusters need: see qimg_alloc_range(). */
		qimg_sc_cow_range(img, a, coff, &from, &to);
		memset(b->data, 0, from);
		memset((char *)b->data + to, 0, b->len - to);
	}
	head = coff - from;
	tail = to - end;
	if (head && tail && a->len <= head + tail) {
		qimg_buf_iter(b, &dst, ITER_DEST, from - a->from, to - from);
		ret = qimg_read_guest(img, cstart + from, &dst);
	} else {
		if (head) {
			qimg_buf_iter(b, &dst, ITER_DEST, from - a->from, head);
			ret = qimg_read_guest(img, cstart + from, &dst);
		}
		if (!ret && tail) {
			qimg_buf_iter(b, &dst, ITER_DEST, end - a->from, tail);
			ret = qimg_read_guest(img, cstart + end, &dst);
		}
	}
	if (!ret && copy_from_iter((char *)b->data + (coff - a->from), a->len,
				   it) != a->len)
		ret = -EFAULT;
	if (ret)
		qimg_buf_free(b);
	return ret;
}

/**
 * qimg_alloc_write() - step 2 of an allocating write, synchronously
 * @dev: the device
 * @a: an allocation begun by qimg_alloc_begin()
 * @it: the guest's data, inside the cluster
 *
 * Writes the data and, around it, what the guest sees there now
 * (qimg_alloc_fill()), directly when the image uses direct I/O.  Nothing
 * points at a->host yet, so readers still see the old mapping.
 *
 * Context: process context, may sleep; dev->meta_lock not held (the
 * copy-on-write reads run as ordinary guest reads).
 * Return: a->err if the reservation failed, else 0 or the write's errno.
 */
int qimg_alloc_write(struct qimg_device *dev, struct qimg_alloc *a,
		     struct iov_iter *it)
{
	struct qimg_image *img = &dev->top;
	struct iov_iter src;
	struct qimg_buf b;
	int ret;

	if (a->err)
		return a->err;
	if (qimg_alloc_data_only(dev, a))
		return qimg_write_iter_at(img, a->host + a->from, it);
	ret = qimg_alloc_fill(dev, a, it, &b);
	if (ret)
		return ret;
	qimg_buf_iter(&b, &src, ITER_SOURCE, 0, b.len);
	ret = qimg_write_iter_at(img, a->host + a->from, &src);
	qimg_buf_free(&b);
	return ret;
}

/**
 * qimg_alloc_link() - step 3 of an allocating write
 * @h: a handle with QIMG_CREDITS_LINK for this allocation
 * @a: the allocation
 * @ret: the data write's result
 *
 * Points the L2 entry at the written cluster and queues the replaced
 * entry's shared cluster for freeing, or (on an error, unless the cluster
 * was the entry's own) gives the cluster back.  Either way @a is done:
 * its L2 table reference and its in-flight record are dropped.  Wake
 * dev->inflight_wq after unlocking.
 * Context: dev->meta_lock held; may sleep (queueing a free allocates);
 * takes dev->inflight_lock.
 * Return: 0, or why the entry could not be set (the request fails).
 */
int qimg_alloc_link(struct qimg_handle *h, struct qimg_alloc *a, int ret)
{
	struct qimg_device *dev = h->dev;
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	struct qimg_l2_entry *e = &a->e;
	u64 bitmap = 0;
	bool hole;

	lockdep_assert_held(&dev->meta_lock);
	if (!a->reuse)
		qimg_alloc_linked(dev, a->host);
	/*
	 * A fresh cluster the guest saw zeros in needs no ordering of its
	 * data before the commit (qimg_journal_data_linked()).
	 */
	hole = !a->reuse && a->fresh && qimg_cow_src_zero(img, e);
	if (g->ext_l2) {
		/* The touched subclusters become allocated, no longer zero. */
		u32 touched = qimg_sc_mask(g, qimg_cluster_offset(g, a->guest),
					   a->len);
		u32 alloc = e->type == QIMG_CLUSTER_COMPRESSED ? U32_MAX :
			    e->alloc_bitmap | touched;
		u32 zero = e->type == QIMG_CLUSTER_COMPRESSED ? 0 :
			   e->zero_bitmap & ~touched;

		bitmap = ((u64)zero << 32) | alloc;
		hole = !a->reuse && a->fresh &&
		       qimg_sc_view_zero(img, e, touched);
	}
	if (!ret)
		ret = qimg_meta_link_l2(h, a->t, qimg_l2_index(g, a->guest),
					qimg_l2_encode_normal(a->host, true),
					bitmap, a->host, hole);
	if (!ret) {
		/* The replaced cluster was shared: drop our reference. */
		if (e->type == QIMG_CLUSTER_COMPRESSED)
			qimg_defer_free(h, e->host_offset, e->compressed_len);
		else if ((e->type == QIMG_CLUSTER_NORMAL ||
			  e->type == QIMG_CLUSTER_ZERO_ALLOC) && !e->copied)
			qimg_defer_free(h, e->host_offset, g->cluster_size);
	} else if (!a->reuse) {
		/* Nothing points at it: give it back (a crash leaks it). */
		qimg_defer_free(h, a->host, g->cluster_size);
	}
	qimg_cache_put(&img->l2, a->t);
	spin_lock(&dev->inflight_lock);
	list_del(&a->fl.node);
	spin_unlock(&dev->inflight_lock);
	return ret;
}

/**
 * qimg_alloc_data_done() - one data write of an allocation group is done
 * @a: an allocation begun with @ride by qimg_alloc_begin() (0 returned,
 *	the leader) or a rider on one (QIMG_ALLOC_RIDE returned)
 *
 * The cluster is linked once the data of its leader and of every rider is
 * written, so that no rider's data can land in a cluster given back, and
 * no write of the group ends before the guest can read it back.
 *
 * Context: dev->meta_lock held.
 * Return: the leader when @a was the last data write of its group: link it
 * now (qimg_alloc_link()), then end the leader and its riders
 * (leader->riders); else NULL.
 */
struct qimg_alloc *qimg_alloc_data_done(struct qimg_alloc *a)
{
	struct qimg_alloc *l = a->leader ? a->leader : a;

	if (WARN_ON_ONCE(!l->pending) || --l->pending)
		return NULL;
	l->joinable = false;
	return l;
}

/**
 * qimg_alloc_finish() - step 3 of an allocating write on its own
 * @dev: the device
 * @a: an allocation begun by qimg_alloc_begin()
 * @ret: the data write's result
 *
 * qimg_alloc_link() in a handle of its own, then wakes the writers
 * waiting for the cluster (dev->inflight_wq).
 *
 * Context: process context, may sleep (the handle may write back); takes
 * dev->meta_lock, which the caller must not hold.
 * Return: the request's result: @ret, else why the entry could not be
 * linked, else the handle's (write-back's) error.
 */
int qimg_alloc_finish(struct qimg_device *dev, struct qimg_alloc *a, int ret)
{
	struct qimg_handle h;

	mutex_lock(&dev->meta_lock);
	qimg_meta_start(dev, &h, QIMG_CREDITS_LINK);	/* its error: below */
	ret = qimg_meta_stop(&h, qimg_alloc_link(&h, a, ret));
	mutex_unlock(&dev->meta_lock);
	wake_up_all(&dev->inflight_wq);
	return ret;
}

static int qimg_map_write_alloc(struct qimg_device *dev, u64 guest,
				struct iov_iter *it)
{
	struct qimg_image *img = &dev->top;
	u64 cstart = guest & ~(img->g->cluster_size - 1);
	u64 coff = guest - cstart;
	struct qimg_alloc a;
	int ret;

	ret = qimg_alloc_begin(dev, guest, iov_iter_count(it), &a, false);
	if (ret < 0)
		return ret;
	if (ret > 0) {
		ret = qimg_write_iter_at(img, a.host + coff, it);
		qimg_io_exit(dev, a.epoch);
		return ret;
	}
	return qimg_alloc_finish(dev, &a, qimg_alloc_write(dev, &a, it));
}

/*
 * The entry of the cluster at @cstart once no allocation of it is in
 * flight: returns with dev->meta_lock held, whatever the result.
 */
static int qimg_lock_entry(struct qimg_device *dev, u64 cstart,
			   struct qimg_l2_entry *e)
{
	mutex_lock(&dev->meta_lock);
	qimg_inflight_wait(dev, cstart);
	return qimg_map_lookup(&dev->top, cstart, e);
}

/*
 * Start a handle on @h and set the L2 entry of the cluster at @cstart to
 * @val and @bitmap; the caller stops the handle.  dev->meta_lock held.
 */
static int qimg_set_entry(struct qimg_device *dev, struct qimg_handle *h,
			  u64 cstart, u64 val, u64 bitmap)
{
	struct qimg_image *img = &dev->top;
	struct qimg_centry *t;
	int ret;

	ret = qimg_meta_start(dev, h, QIMG_CREDITS_L2_WRITE);
	if (!ret)
		ret = qimg_l2_for_write(h, cstart, &t);
	if (!ret) {
		ret = qimg_meta_set_l2(h, t, qimg_l2_index(img->g, cstart),
				       val, bitmap);
		qimg_cache_put(&img->l2, t);
	}
	return ret;
}

/**
 * qimg_map_zero_cluster() - discard or write zeroes of a whole cluster
 * @dev: the device
 * @cstart: guest offset of the cluster
 * @unmap: the host cluster may be released
 *
 * Changes the cluster's L2 entry.  With no backing file and @unmap the
 * entry is cleared (unallocated reads as zeros, v2 and v3); otherwise v3
 * uses the zero flag, keeping the host cluster (ZERO_ALLOC) only when it
 * is ours alone and unmapping is not allowed.  v2 with a backing file has
 * no way to hide the backing data.  A released cluster goes through the
 * deferred-free path, so its refcount drops only once the entry no longer
 * pointing at it is durable.
 *
 * Context: process context, may sleep; takes dev->meta_lock (the caller
 * must not hold it) and waits for an allocation of the cluster in flight.
 * Return: 0; -EOPNOTSUPP for v2 with a backing file (the caller writes
 * zeros for write zeroes, or does nothing for discard); or a negative
 * errno.
 */
int qimg_map_zero_cluster(struct qimg_device *dev, u64 cstart, bool unmap)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	bool v3 = img->h->version >= 3;
	struct qimg_l2_entry e;
	bool keep = false;
	struct qimg_handle h;
	u64 val, bitmap = 0;
	int ret;

	ret = qimg_lock_entry(dev, cstart, &e);
	if (ret)
		goto unlock;
	if (g->ext_l2) {
		/*
		 * No zero flag: all subclusters zero, the host cluster kept
		 * (unallocated subclusters) when it is ours and must stay.
		 */
		if (e.type == QIMG_CLUSTER_UNALLOCATED &&
		    (e.zero_bitmap == U32_MAX || !img->backing))
			goto unlock;	/* reads as zeros already */
		keep = !unmap && e.type == QIMG_CLUSTER_NORMAL && e.copied;
		if (!img->backing && unmap) {
			val = 0;
		} else {
			val = keep ? qimg_l2_encode_normal(e.host_offset, true) : 0;
			bitmap = (u64)U32_MAX << 32;
		}
	} else if (!img->backing && unmap) {
		if (e.type == QIMG_CLUSTER_UNALLOCATED)
			goto unlock;
		val = 0;
	} else if (v3) {
		if (e.type == QIMG_CLUSTER_ZERO_PLAIN ||
		    (e.type == QIMG_CLUSTER_ZERO_ALLOC && !unmap))
			goto unlock;
		keep = !unmap && e.type == QIMG_CLUSTER_NORMAL && e.copied;
		val = qimg_l2_encode_zero(keep ? e.host_offset : 0, keep);
	} else {
		if (!img->backing && e.type == QIMG_CLUSTER_UNALLOCATED)
			goto unlock;	/* reads as zeros already */
		ret = -EOPNOTSUPP;
		goto unlock;
	}

	ret = qimg_set_entry(dev, &h, cstart, val, bitmap);
	if (!ret) {
		if (e.type == QIMG_CLUSTER_COMPRESSED)
			qimg_defer_free(&h, e.host_offset, e.compressed_len);
		else if (!keep && (e.type == QIMG_CLUSTER_NORMAL ||
				   e.type == QIMG_CLUSTER_ZERO_ALLOC))
			qimg_defer_free(&h, e.host_offset, g->cluster_size);
	}
	ret = qimg_meta_stop(&h, ret);
unlock:
	mutex_unlock(&dev->meta_lock);
	return ret;
}

/**
 * qimg_map_zero_subclusters() - write zeroes of whole subclusters
 * @dev: the device, an image with extended L2 entries
 * @guest: guest offset, a multiple of the subcluster size
 * @len: bytes, a multiple of the subcluster size, inside one cluster
 *
 * The subclusters become zero ones in the cluster's bitmap (their
 * allocation bits cleared), as QEMU's write zeroes does: a cluster that
 * is ours keeps its host cluster, an unallocated one hides the backing
 * file there without getting one.  Nothing is freed.
 *
 * Context: process context, may sleep; takes dev->meta_lock (the caller
 * must not hold it) and waits for an allocation of the cluster in flight.
 * Return: 0; -EOPNOTSUPP for a compressed cluster or one shared with a
 * snapshot (the caller writes zeros as data); or a negative errno.
 */
int qimg_map_zero_subclusters(struct qimg_device *dev, u64 guest, u64 len)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	u64 cstart = guest & ~(g->cluster_size - 1);
	u32 mask = qimg_sc_mask(g, guest - cstart, len);
	struct qimg_l2_entry e;
	struct qimg_handle h;
	u64 val = 0;
	int ret;

	ret = qimg_lock_entry(dev, cstart, &e);
	if (ret)
		goto unlock;
	switch (e.type) {
	case QIMG_CLUSTER_UNALLOCATED:
		if ((e.zero_bitmap & mask) == mask || !img->backing)
			goto unlock;	/* reads as zeros already */
		break;
	case QIMG_CLUSTER_NORMAL:
		if (e.copied) {
			val = qimg_l2_encode_normal(e.host_offset, true);
			break;
		}
		fallthrough;
	default:
		ret = -EOPNOTSUPP;
		goto unlock;
	}
	ret = qimg_set_entry(dev, &h, cstart, val,
			     (u64)(e.zero_bitmap | mask) << 32 |
			     (e.alloc_bitmap & ~mask));
	ret = qimg_meta_stop(&h, ret);
unlock:
	mutex_unlock(&dev->meta_lock);
	return ret;
}

/**
 * qimg_map_write() - write guest data inside one cluster
 * @dev: the device
 * @guest: guest offset
 * @it: the data, iov_iter_count(@it) bytes, not crossing a cluster end
 *
 * A cluster that is allocated and ours alone (COPIED) is written in place
 * without a device lock, inside a qimg_io_enter() section; anything else
 * goes through the allocating path (qimg_alloc_begin() ...).
 *
 * Context: process context, may sleep; no lock held (dev->meta_lock is
 * taken for an allocation).
 * Return: 0 or a negative errno (-EUCLEAN for corruption or an overlap).
 */
int qimg_map_write(struct qimg_device *dev, u64 guest, struct iov_iter *it)
{
	struct qimg_image *img = &dev->top;
	struct qimg_l2_entry e;
	int epoch = qimg_io_enter(dev);
	int ret;

	ret = qimg_map_lookup(img, guest, &e);
	if (!ret && e.type == QIMG_CLUSTER_NORMAL && e.copied &&
	    qimg_sc_allocated(img->g, &e, qimg_cluster_offset(img->g, guest),
			      iov_iter_count(it))) {
		/* One xa_load() and a few compares: see qimg_overlap.c. */
		ret = qimg_overlap_check(dev, e.host_offset,
					 img->g->cluster_size, 0,
					 "guest data write");
		if (!ret)
			ret = qimg_write_iter_at(img, e.host_offset +
						 qimg_cluster_offset(img->g,
								     guest),
						 it);
		qimg_io_exit(dev, epoch);
		return ret;
	}
	qimg_io_exit(dev, epoch);
	if (ret)
		return ret;
	return qimg_map_write_alloc(dev, guest, it);
}

static int qimg_read_compressed(struct qimg_image *img,
				const struct qimg_l2_entry *e, u64 coff,
				struct iov_iter *it)
{
	size_t n = iov_iter_count(it);
	void *buf;
	int ret;

	buf = kvmalloc(img->g->cluster_size, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	ret = qimg_decompress(img, e, buf);
	if (!ret && copy_to_iter((char *)buf + coff, n, it) != n)
		ret = -EFAULT;
	kvfree(buf);
	return ret;
}

/* Does the cluster after @e continue it on the host?  (merge reads) */
static bool qimg_contiguous(struct qimg_image *img, u64 guest,
			    const struct qimg_l2_entry *e, u64 *host_next)
{
	struct qimg_l2_entry n;

	if (qimg_map_lookup(img, guest, &n))
		return false;
	return n.type == QIMG_CLUSTER_NORMAL && n.host_offset == *host_next;
}

/*
 * Read one piece of @len bytes at @off of image @img, all of one kind,
 * from @it; the caller truncated nothing: we work on a copy.
 */
static int qimg_read_piece(struct qimg_image *img, u64 off, size_t len,
			   struct iov_iter *it,
			   int (*fn)(struct qimg_image *img, u64 off,
				     struct iov_iter *sub, void *arg),
			   void *arg)
{
	struct iov_iter sub = *it;
	int ret;

	iov_iter_truncate(&sub, len);
	ret = fn(img, off, &sub, arg);
	if (ret)
		return ret;
	iov_iter_advance(it, len);
	return 0;
}

static int qimg_piece_backing(struct qimg_image *img, u64 off,
			      struct iov_iter *sub, void *arg)
{
	if (img->backing)
		return qimg_read_guest(img->backing, off, sub);
	iov_iter_zero(iov_iter_count(sub), sub);
	return 0;
}

static int qimg_piece_zero(struct qimg_image *img, u64 off,
			   struct iov_iter *sub, void *arg)
{
	iov_iter_zero(iov_iter_count(sub), sub);
	return 0;
}

static int qimg_piece_host(struct qimg_image *img, u64 host,
			   struct iov_iter *sub, void *arg)
{
	return qimg_read_iter_at(img, host, sub);
}

static int qimg_piece_compressed(struct qimg_image *img, u64 coff,
				 struct iov_iter *sub, void *arg)
{
	return qimg_read_compressed(img, arg, coff, sub);
}

static int qimg_read_guest_chain(struct qimg_image *img, u64 off,
				 struct iov_iter *it)
{
	const struct qimg_geom *g = img->g;
	struct qimg_l2_entry e;
	int ret;

	while (iov_iter_count(it)) {
		size_t count = iov_iter_count(it);
		u64 len, coff, host;

		if (off >= img->virtual_size) {
			iov_iter_zero(count, it);
			return 0;
		}
		len = min_t(u64, count, img->virtual_size - off);
		if (img->raw) {
			ret = qimg_read_piece(img, off, len, it,
					      qimg_piece_host, NULL);
			if (ret)
				return ret;
			off += len;
			continue;
		}
		coff = qimg_cluster_offset(g, off);
		ret = qimg_map_lookup(img, off, &e);
		if (ret)
			return ret;
		if (g->ext_l2) {
			u64 scs = 1ULL << g->subcluster_bits;
			unsigned int sc = coff >> g->subcluster_bits;

			len = min(len, scs - (off & (scs - 1)));
			switch (qimg_subcluster_type(&e, sc)) {
			case QIMG_SUBCLUSTER_UNALLOCATED:
				e.type = QIMG_CLUSTER_UNALLOCATED;
				break;
			case QIMG_SUBCLUSTER_ZERO:
				e.type = QIMG_CLUSTER_ZERO_PLAIN;
				break;
			case QIMG_SUBCLUSTER_NORMAL:
				e.type = QIMG_CLUSTER_NORMAL;
				break;
			case QIMG_SUBCLUSTER_COMPRESSED:
				e.type = QIMG_CLUSTER_COMPRESSED;
				break;
			}
		} else {
			len = min(len, g->cluster_size - coff);
		}

		switch (e.type) {
		case QIMG_CLUSTER_UNALLOCATED:
			ret = qimg_read_piece(img, off, len, it,
					      qimg_piece_backing, NULL);
			break;
		case QIMG_CLUSTER_ZERO_PLAIN:
		case QIMG_CLUSTER_ZERO_ALLOC:
			ret = qimg_read_piece(img, off, len, it,
					      qimg_piece_zero, NULL);
			break;
		case QIMG_CLUSTER_COMPRESSED:
			ret = qimg_read_piece(img, coff, len, it,
					      qimg_piece_compressed, &e);
			break;
		case QIMG_CLUSTER_NORMAL:
			host = e.host_offset + coff;
			/* Merge following clusters that are contiguous. */
			if (!g->ext_l2) {
				u64 next = e.host_offset + g->cluster_size;
				u64 goff = off - coff + g->cluster_size;

				while (len < count &&
				       goff < img->virtual_size &&
				       qimg_contiguous(img, goff, &e, &next)) {
					u64 more = min_t(u64, g->cluster_size,
							 count - len);

					more = min(more,
						   img->virtual_size - goff);
					len += more;
					next += g->cluster_size;
					goff += g->cluster_size;
				}
			}
			ret = qimg_read_piece(img, host, len, it,
					      qimg_piece_host, NULL);
			break;
		default:
			ret = -EIO;
		}
		if (ret)
			return ret;
		off += len;
	}
	return 0;
}

/**
 * qimg_read_guest() - read what the guest sees
 * @img: the image (the top one, or a backing file for the chain below)
 * @off: guest offset
 * @it: destination, iov_iter_count(@it) bytes; zeros past the image's end
 *
 * Follows the backing chain for unallocated clusters.  Clusters of the
 * top image can be freed and reused while we read them (a concurrent
 * discard): the read is one qimg_io_enter() section, see qimg_io_drain().
 * Backing images are never written.
 *
 * Context: process context, may sleep; no lock held (also called from
 * the copy-on-write of qimg_alloc_write(), without dev->meta_lock).
 * Return: 0 or a negative errno.
 */
int qimg_read_guest(struct qimg_image *img, u64 off, struct iov_iter *it)
{
	struct qimg_device *dev = img->dev;
	int epoch, ret;

	if (img != &dev->top)
		return qimg_read_guest_chain(img, off, it);
	epoch = qimg_io_enter(dev);
	ret = qimg_read_guest_chain(img, off, it);
	qimg_io_exit(dev, epoch);
	return ret;
}

/**
 * qimg_map_grow_l1() - make the top image's L1 table hold @entries entries
 * @dev: the device, attached read-write
 * @entries: entries the new virtual size needs
 *
 * In place when the table's clusters hold @entries already, else in a
 * new run of free clusters (the old ones go through the deferred-free
 * path once the header names the new table); the metadata layer writes it
 * in the crash model's order (qimg_meta_switch_l1()).
 *
 * Context: dev->meta_lock held, may sleep; no lockless lookup of the top
 * image may run (the caller froze the queue).
 * Return: 0, -EFBIG (past the format's L1 limit), -ENOSPC, -ENOMEM or
 * another negative errno.
 */
int qimg_map_grow_l1(struct qimg_device *dev, u32 entries)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	u64 old_off = img->h->l1_table_offset;
	u64 old_len = round_up((u64)img->l1_entries * 8, g->cluster_size);
	u64 new_len = round_up((u64)entries * 8, g->cluster_size);
	u64 off = old_off, credits;
	bool move = new_len > old_len;
	struct qimg_handle h;
	__be64 *table;
	int ret, i;

	lockdep_assert_held(&dev->meta_lock);
	if (entries <= img->l1_entries)
		return 0;
	if ((u64)entries * 8 > QIMG_MAX_L1_BYTES)
		return -EFBIG;
	table = kvcalloc(entries, sizeof(__be64), GFP_KERNEL);
	if (!table)
		return -ENOMEM;
	if (move) {
		u64 n = new_len >> g->cluster_bits;

		ret = qimg_find_free_run(dev, n, &off);
		/* None where refcount blocks exist: make some past the end. */
		for (i = 0; ret == -ENOSPC && i < 3; i++) {
			ret = qimg_make_free_run(dev, n);
			if (!ret)
				ret = qimg_find_free_run(dev, n, &off);
		}
		if (!ret)
			ret = qimg_overlap_check(dev, off, new_len, 0,
						 "new L1 table");
		if (ret)
			goto out;
	}
	/* The run's refcount blocks (and one more), the L1 table, the header. */
	credits = min_t(u64, (new_len >> (g->cluster_bits + g->rb_bits)) + 4,
			UINT_MAX / 2);
	ret = qimg_meta_start(dev, &h, (unsigned int)credits);
	/*
	 * With the journal: checkpointed first, so that this transaction
	 * holds the new clusters' references, the switch and the old
	 * table's free, and nothing else.
	 */
	if (!ret && dev->journal)
		ret = qimg_meta_writeback(dev);
	if (!ret && move)
		ret = qimg_take_clusters(&h, off, new_len);
	if (!ret)
		ret = qimg_meta_switch_l1(&h, table, off, entries);
	if (!ret) {
		table = NULL;
		qimg_overlap_move(dev, QIMG_OL_ACTIVE_L1, off,
				  (u64)entries * 8);
		if (move && old_len)
			qimg_defer_free(&h, old_off, old_len);
		qimg_dev_info(dev, "L1 table grown to %u entries at %llu\n",
			      entries, off);
	}
	ret = qimg_meta_stop(&h, ret);
out:
	kvfree(table);
	return ret;
}

/**
 * qimg_map_zero_new() - make grown space read zeros over a longer backing file
 * @dev: the device, attached read-write, a version 3 image with a backing
 *       file
 * @from: the old virtual size (a multiple of 512)
 * @to: the end of what the backing file would show (at most the new size)
 *
 * The rule of qemu's truncate: the cluster holding @from is written with
 * zeros from @from on (copy-on-write keeps what is before), every later
 * cluster up to @to becomes a zero cluster.  The range is past the virtual
 * size the block layer knows, so no request reaches it meanwhile.
 *
 * Context: process context, may sleep; no lock held (dev->meta_lock is
 * taken per cluster).
 * Return: 0, -EINTR (a fatal signal), -EOPNOTSUPP (a version 2 image) or
 * another negative errno.
 */
int qimg_map_zero_new(struct qimg_device *dev, u64 from, u64 to)
{
	u64 cs = dev->top.g->cluster_size;
	u64 c = round_up(from, cs);
	int ret = 0;

	if (from < c && from < to) {
		size_t len = (size_t)(min(c, to) - from);
		struct kvec kv;
		struct iov_iter it;
		void *buf = kvzalloc(len, GFP_KERNEL);

		if (!buf)
			return -ENOMEM;
		kv.iov_base = buf;
		kv.iov_len = len;
		iov_iter_kvec(&it, ITER_SOURCE, &kv, 1, len);
		ret = qimg_map_write(dev, from, &it);
		kvfree(buf);
	}
	for (; !ret && c < to; c += cs) {
		if (fatal_signal_pending(current))
			return -EINTR;
		ret = qimg_map_zero_cluster(dev, c, false);
		cond_resched();
	}
	return ret;
}
