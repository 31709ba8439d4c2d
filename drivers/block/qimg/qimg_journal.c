// SPDX-License-Identifier: GPL-2.0
/*
 * qimg metadata journal, the driver side: see qimg_journal.h for the
 * structure and Documentation/block/qimg-format.rst section 5.1 for the
 * format and protocols.
 *
 * What a transaction holds.  Every cached table (L2 table, refcount block)
 * is split into 64 chunks; a setter marks the chunk it changed
 * (qimg_journal_table_changed()), and L1 and refcount-table entries are
 * logged one by one.  Sealing copies the marked bytes into the commit
 * buffer as write records, in a fixed order: revokes, refcount blocks,
 * refcount-table entries, L2 tables, L1 entries, the header.  A running
 * transaction too large for one journal transaction is committed as
 * several, in that order, which is the order of the journal-less
 * write-back (qimg_meta.c), so splitting never exposes a reference to
 * something not yet counted; refcounts that went down show their old
 * values until a last record after everything else (qimg_jtx_drops()),
 * so no cluster is free before its references are gone either: any
 * prefix is consistent on disk, at worst a leak.
 *
 * Commit: the records' blocks are written, the image file is synced (the
 * guest data of allocating writes is durable with them: ordered data),
 * then the commit block is written and synced: two barriers per commit,
 * however many tables it touches.  When every data cluster the
 * transaction links was a hole that needs no such order
 * (qimg_journal_data_linked()), records and commit block are written
 * together and synced once.  Tables stay pinned in the caches (dirty)
 * until a checkpoint has written them in place.
 *
 * Checkpoint: the committed transactions are replayed in place from the
 * journal itself with the format core's passes (the same code that
 * replays after a crash), the file is synced, and the alternate header
 * copy moves the tail; no table in memory is needed, so it never writes
 * changes of a transaction not yet committed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/random.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_journal.h"

/* ------------------------------------------------------------------------ */
/* I/O callbacks of the format core                                         */

static int qimg_jio_read(void *ctx, u64 pos, void *buf, u32 len)
{
	struct qimg_device *dev = ctx;
	u64 area = dev->top.h->journal_offset;

	return qimg_kread(dev->top.file, buf, len, area + pos);
}

static int qimg_jio_write(void *ctx, u64 host, const void *buf, u32 len)
{
	struct qimg_device *dev = ctx;

	return qimg_kwrite(dev->top.file, buf, len, host);
}

static int qimg_jsync(struct qimg_device *dev)
{
	struct qimg_journal *j = dev->journal;
	s64 seq, size;
	int ret;

	if (!j)
		return vfs_fsync(dev->top.file, 1);
	atomic64_inc(&j->st_barriers);
	seq = atomic64_inc_return(&j->sync_started);
	/* Whatever size the file has now is durable once the sync is. */
	size = i_size_read(file_inode(dev->top.file));
	ret = vfs_fsync(dev->top.file, 1);
	if (ret)
		return ret;
	qimg_atomic64_max(&j->synced_size, size);
	/* The latest started sync that completed (they may overlap). */
	qimg_atomic64_max(&j->sync_done, seq);
	return 0;
}

static void qimg_jgeom(struct qimg_device *dev, struct qimg_jrnl_geom *g)
{
	const struct qimg_header *h = dev->top.h;

	g->cluster_bits = h->cluster_bits;
	g->area_offset = h->journal_offset;
	g->area_size = h->journal_size;
	g->file_size = max_t(u64, i_size_read(file_inode(dev->top.file)),
			     atomic64_read(&dev->top.alloc_end));
}

/* Write header copy @h->copy (block 0 or 1) and sync. */
static int qimg_jhdr_write(struct qimg_device *dev, struct qimg_jrnl_hdr *h)
{
	struct qimg_err err = { "" };
	size_t bs = (size_t)1 << h->block_bits;
	void *blk = kzalloc(bs, GFP_KERNEL);
	int ret;

	if (!blk)
		return -ENOMEM;
	ret = qimg_jrnl_hdr_encode(blk, h, &err);
	if (!ret)
		ret = qimg_kwrite(dev->top.file, blk, bs,
				  dev->top.h->journal_offset + (u64)h->copy * bs);
	kfree(blk);
	if (!ret)
		ret = qimg_jsync(dev);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Header fields and the journal extension                                  */

/* Find the data of the journal extension in the header cluster: its
 * offset, or 0 when the image has none; *end gets the end mark's offset.
 */
static int qimg_jext_locate(struct qimg_device *dev, u32 *pos, u32 *end)
{
	const struct qimg_header *h = dev->top.h;
	u32 len = min_t(u64, h->geom.cluster_size, PAGE_SIZE * 16);
	u32 off = h->header_length;
	u8 *buf;
	int ret;

	*pos = 0;
	*end = 0;
	if (h->version < 3)
		return -EOPNOTSUPP;
	buf = kvmalloc(len, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	ret = qimg_kread(dev->top.file, buf, len, 0);
	while (!ret) {
		struct qimg_disk_ext_hdr *e = (void *)(buf + off);
		u32 type, elen;

		if (off + sizeof(*e) > len) {
			ret = -EUCLEAN;
			break;
		}
		type = be32_to_cpu(e->type);
		elen = be32_to_cpu(e->len);
		if (type == QIMG_EXT_END) {
			*end = off;
			break;
		}
		if (type == QIMG_EXT_JOURNAL && elen == 16)
			*pos = off + sizeof(*e);
		off += sizeof(*e) + ALIGN(elen, 8);
	}
	kvfree(buf);
	return ret;
}

#if IS_ENABLED(CONFIG_QIMG_KUNIT_DRIVER)
const char *qimg_journal_fail_next;
void (*qimg_journal_write_hook)(struct qimg_device *dev);

/* KUnit builds only: let a test hold a commit in its journal write. */
static void qimg_journal_hook(struct qimg_device *dev)
{
	void (*fn)(struct qimg_device *dev) = READ_ONCE(qimg_journal_write_hook);

	if (fn)
		fn(dev);
}

/* KUnit builds only: does the test want this journal write to fail? */
static bool qimg_journal_injected(const char *what)
{
	const char *w = READ_ONCE(qimg_journal_fail_next);

	if (!w || strncmp(what, w, strlen(w)))
		return false;
	WRITE_ONCE(qimg_journal_fail_next, NULL);
	return true;
}
#else
static inline bool qimg_journal_injected(const char *what)
{
	return false;
}

static inline void qimg_journal_hook(struct qimg_device *dev)
{
}
#endif

/*
 * Make room for @need bytes of header extensions ending at @min_end: move
 * the backing file name (which qemu-img puts right after the end mark)
 * to the first 8-byte boundary past both @min_end and its old place, in
 * steps that are each safe to be cut short: the copy, synced; the
 * header's pointer to it (8 bytes), synced.  The old bytes are then free
 * for the extension.  -ENOSPC when the first cluster has no room left.
 */
static int qimg_jext_move_backing(struct qimg_device *dev, u32 min_end)
{
	struct qimg_header *h = dev->top.h;
	u64 old = h->backing_file_offset, to;
	u32 len = h->backing_file_size;
	__be64 v;
	void *buf;
	int ret;

	to = ALIGN(max_t(u64, old + len, min_end), 8);
	if (!len || to + len > h->geom.cluster_size) {
		qimg_dev_err(dev, "no room in the header for the journal extension; recreate the image with qimgctl create -o journal=on\n");
		return -ENOSPC;
	}
	buf = kmalloc(len, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	ret = qimg_kread(dev->top.file, buf, len, old);
	if (!ret)
		ret = qimg_kwrite(dev->top.file, buf, len, to);
	kfree(buf);
	if (!ret)
		ret = vfs_fsync(dev->top.file, 1);
	v = cpu_to_be64(to);
	if (!ret)
		ret = qimg_journal_injected("journal backing name") ? -EIO :
		      qimg_kwrite(dev->top.file, &v, 8,
				  offsetof(struct qimg_disk_header,
					   backing_file_offset));
	if (!ret)
		ret = vfs_fsync(dev->top.file, 1);
	if (ret)
		return ret;
	h->backing_file_offset = to;
	return 0;
}

/*
 * Point the journal extension at @off (0: none allocated, the image only
 * asks for one of @size bytes), adding the extension before the end mark
 * when the image has none and there is room, then sync.
 */
static int qimg_jext_write(struct qimg_device *dev, u64 off, u64 size)
{
	struct qimg_header *h = dev->top.h;
	struct {
		struct qimg_disk_ext_hdr eh;
		struct qimg_disk_journal_ext je;
		struct qimg_disk_ext_hdr end;
	} __packed x;
	u32 pos, end;
	int ret;

	BUILD_BUG_ON(sizeof(x) != 8 + 16 + 8);
	ret = qimg_jext_locate(dev, &pos, &end);
	if (ret)
		return ret;
	memset(&x, 0, sizeof(x));
	x.eh.type = cpu_to_be32(QIMG_EXT_JOURNAL);
	x.eh.len = cpu_to_be32(16);
	x.je.offset = cpu_to_be64(off);
	x.je.size = cpu_to_be64(size);
	if (qimg_journal_injected("journal extension")) {
		ret = -EIO;
	} else if (pos) {
		ret = qimg_kwrite(dev->top.file, &x.je, sizeof(x.je), pos);
	} else {
		u64 limit = h->geom.cluster_size;

		if (end && h->backing_file_offset > end &&
		    h->backing_file_offset < end + sizeof(x)) {
			ret = qimg_jext_move_backing(dev, end + sizeof(x));
			if (ret)
				return ret;
		}
		if (h->backing_file_offset && h->backing_file_offset > end)
			limit = min(limit, h->backing_file_offset);
		if (!end || end + sizeof(x) > limit) {
			qimg_dev_err(dev, "no room in the header for the journal extension; recreate the image with qimgctl create -o journal=on\n");
			return -ENOSPC;
		}
		ret = qimg_kwrite(dev->top.file, &x, sizeof(x), end);
	}
	if (!ret)
		ret = vfs_fsync(dev->top.file, 1);
	if (!ret) {
		h->has_journal_ext = true;
		h->journal_offset = off;
		h->journal_size = size;
	}
	return ret;
}

/* Set or clear the journal's feature bits in place, then sync. */
static int qimg_jbits_write(struct qimg_device *dev, bool on)
{
	struct qimg_header *h = dev->top.h;
	u64 inc = h->incompatible_features & ~QIMG_INCOMPAT_JOURNAL_DIRTY;
	u64 ac = h->autoclear_features & ~QIMG_AUTOCLEAR_JOURNAL_VALID;
	__be64 v;
	int ret;

	if (on) {
		inc |= QIMG_INCOMPAT_JOURNAL_DIRTY;
		ac |= QIMG_AUTOCLEAR_JOURNAL_VALID;
	}
	/* Valid before dirty when turning on, dirty off first otherwise. */
	v = cpu_to_be64(on ? ac : inc);
	if (qimg_journal_injected("journal bits"))
		ret = -EIO;
	else
		ret = qimg_kwrite(dev->top.file, &v, 8,
				  on ? QIMG_HDR_AUTOCLEAR_OFFSET :
				  QIMG_HDR_INCOMPAT_OFFSET);
	if (!ret) {
		v = cpu_to_be64(on ? inc : ac);
		ret = qimg_kwrite(dev->top.file, &v, 8,
				  on ? QIMG_HDR_INCOMPAT_OFFSET :
				  QIMG_HDR_AUTOCLEAR_OFFSET);
	}
	if (!ret)
		ret = vfs_fsync(dev->top.file, 1);
	if (!ret) {
		h->incompatible_features = inc;
		h->autoclear_features = ac;
	}
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Replay at attach                                                         */

/**
 * qimg_journal_replay() - replay a dirty journal before the tables load
 * @dev: the device being attached read-write; dev->top's header decoded,
 *       nothing else loaded
 *
 * Scan, revoke and replay passes of the format core, through the image
 * file; then sync, the alternate header copy with synced_seq one past the
 * last transaction replayed, sync, and *journal dirty* cleared.  Nothing
 * is written when the scan fails.
 *
 * Context: process context, may sleep; no lock held (the device is not
 * live yet).
 * Return: 0 or a negative errno (-EUCLEAN for a damaged journal, with a
 * message).
 */
int qimg_journal_replay(struct qimg_device *dev)
{
	struct qimg_header *h = dev->top.h;
	struct qimg_jrnl_io io = { qimg_jio_read, qimg_jio_write, dev };
	struct qimg_err err = { "" };
	struct qimg_jrnl_revoke *rv = NULL;
	struct qimg_jrnl_geom g;
	struct qimg_jrnl_scan s;
	struct qimg_jrnl_hdr jh, nh;
	void *chunk, *work = NULL;
	u64 written = 0;
	int ret;

	if (!h->has_journal_ext || !h->journal_offset ||
	    !(h->autoclear_features & QIMG_AUTOCLEAR_JOURNAL_VALID)) {
		qimg_dev_err(dev, "journal dirty, but no valid journal to replay (the image was written by a program that does not know the journal)\n");
		return -EUCLEAN;
	}
	qimg_jgeom(dev, &g);
	chunk = kmalloc(QIMG_JRNL_HDR_CHUNK, GFP_KERNEL);
	if (!chunk)
		return -ENOMEM;
	ret = qimg_jrnl_hdr_read(&g, &io, chunk, &jh, &err);
	kfree(chunk);
	if (ret)
		goto bad;
	work = kvmalloc(qimg_jrnl_work_size(&jh), GFP_KERNEL);
	if (!work)
		return -ENOMEM;
	ret = qimg_jrnl_scan(&g, &io, &jh, work, &s, &err);
	if (ret)
		goto bad;
	if (s.nrevokes) {
		rv = kvmalloc_array(s.nrevokes, sizeof(*rv), GFP_KERNEL);
		ret = rv ? qimg_jrnl_revokes(&g, &io, &s, work, rv, &err) :
			   -ENOMEM;
		if (ret)
			goto bad;
	}
	ret = qimg_jrnl_replay(&g, &io, &s, work, rv, &written, &err);
	if (ret)
		goto bad;
	ret = vfs_fsync(dev->top.file, 1);
	if (ret)
		goto out;
	nh = jh;
	nh.copy = !jh.copy;
	nh.generation++;
	nh.synced_seq = s.next_seq - 1;
	nh.tail_block = s.end_block;
	ret = qimg_jhdr_write(dev, &nh);
	if (!ret) {
		__be64 v = cpu_to_be64(h->incompatible_features &
				       ~QIMG_INCOMPAT_JOURNAL_DIRTY);

		ret = qimg_kwrite(dev->top.file, &v, 8,
				  QIMG_HDR_INCOMPAT_OFFSET);
		if (!ret)
			ret = vfs_fsync(dev->top.file, 1);
		if (!ret)
			h->incompatible_features &= ~QIMG_INCOMPAT_JOURNAL_DIRTY;
	}
	if (!ret) {
		dev->jrnl_replayed = s.ntx;
		qimg_dev_info(dev, "journal replayed: %llu transaction(s), sequence %llu to %llu, %llu record(s) written%s\n",
			      s.ntx, s.first_seq, s.last_seq, written,
			      s.torn ? "; an incomplete last transaction was discarded" : "");
	}
	goto out;
bad:
	qimg_dev_err(dev, "cannot replay the journal: %s (%d); nothing was written\n",
		     err.msg, ret);
out:
	kvfree(rv);
	kvfree(work);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* The running transaction                                                  */

/**
 * qimg_journal_table_changed() - bytes of a cached table changed
 * @dev: the device
 * @e: the table (L2 table or refcount block)
 * @off: first byte changed, within the table
 * @len: bytes changed (the whole table for a new one)
 *
 * Context: dev->meta_lock held, does not sleep.
 */
void qimg_journal_table_changed(struct qimg_device *dev,
				struct qimg_centry *e, u64 off, u64 len)
{
	struct qimg_journal *j = dev->journal;
	u64 first, last, mask, added;

	lockdep_assert_held(&dev->meta_lock);
	if (!j || !len)
		return;
	first = off >> j->chunk_shift;
	last = (off + len - 1) >> j->chunk_shift;
	mask = last >= 63 ? ~0ULL << first : GENMASK_ULL(last, first);
	added = mask & ~e->jmask;
	e->jmask |= mask;
	j->running = true;
	j->running_bytes += (u64)hweight64(added) << j->chunk_shift;
}

/**
 * qimg_journal_entry_changed() - an L1 or refcount-table entry changed
 * @dev: the device
 * @l1: true for the L1 table, false for the refcount table
 * @idx: the entry
 *
 * Without memory to remember it, the whole next commit goes inline
 * through a checkpoint of everything (qimg_journal_sync_all()).
 * Context: dev->meta_lock held; may sleep (allocation).
 */
void qimg_journal_entry_changed(struct qimg_device *dev, bool l1, u64 idx)
{
	struct qimg_journal *j = dev->journal;

	lockdep_assert_held(&dev->meta_lock);
	if (!j)
		return;
	j->running = true;
	j->running_bytes += 8;
	if (xa_err(xa_store(l1 ? &j->l1_set : &j->rt_set, idx,
			    xa_mk_value(1), GFP_KERNEL)))
		j->targets_lost = true;	/* sealing logs the whole table */
}

/**
 * qimg_journal_header_changed() - the header's size, L1 or refcount table
 *                                 fields changed
 * @dev: the device, with the journal on
 *
 * dev->top.h holds the new values; the running transaction gets one write
 * record of header bytes 24-63 (size, crypt_method, l1_size,
 * l1_table_offset, refcount_table_offset, refcount_table_clusters and
 * nb_snapshots, encoded now, sealed after the tables), so that they
 * change on disk together with everything else the transaction holds:
 * the refcounts of a new table and the free of the old one.  The header
 * in place changes at the checkpoint, and attach re-reads it after a
 * replay.
 *
 * Context: dev->meta_lock held, does not sleep.
 */
void qimg_journal_header_changed(struct qimg_device *dev)
{
	struct qimg_journal *j = dev->journal;
	const struct qimg_header *h = dev->top.h;
	struct {
		__be64 size;
		__be32 crypt_method;
		__be32 l1_size;
		__be64 l1_table_offset;
		__be64 refcount_table_offset;
		__be32 refcount_table_clusters;
		__be32 nb_snapshots;
	} rec;

	lockdep_assert_held(&dev->meta_lock);
	BUILD_BUG_ON(sizeof(rec) != QIMG_JRNL_HDR_REC_LEN);
	BUILD_BUG_ON(QIMG_JRNL_HDR_REC_LEN & 7);
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, size) !=
		     QIMG_JRNL_HDR_REC_OFF);
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, crypt_method) !=
		     QIMG_JRNL_HDR_REC_OFF + offsetof(typeof(rec), crypt_method));
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, l1_size) !=
		     QIMG_JRNL_HDR_REC_OFF + offsetof(typeof(rec), l1_size));
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, l1_table_offset) !=
		     QIMG_JRNL_HDR_REC_OFF +
		     offsetof(typeof(rec), l1_table_offset));
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, refcount_table_offset) !=
		     QIMG_JRNL_HDR_REC_OFF +
		     offsetof(typeof(rec), refcount_table_offset));
	BUILD_BUG_ON(offsetof(struct qimg_disk_header,
			      refcount_table_clusters) !=
		     QIMG_JRNL_HDR_REC_OFF +
		     offsetof(typeof(rec), refcount_table_clusters));
	BUILD_BUG_ON(offsetof(struct qimg_disk_header, nb_snapshots) !=
		     QIMG_JRNL_HDR_REC_OFF + offsetof(typeof(rec), nb_snapshots));
	BUILD_BUG_ON(offsetofend(struct qimg_disk_header, nb_snapshots) !=
		     QIMG_JRNL_HDR_REC_OFF + QIMG_JRNL_HDR_REC_LEN);
	if (!j)
		return;
	rec.size = cpu_to_be64(h->size);
	rec.crypt_method = cpu_to_be32(h->crypt_method);
	rec.l1_size = cpu_to_be32(h->l1_size);
	rec.l1_table_offset = cpu_to_be64(h->l1_table_offset);
	rec.refcount_table_offset = cpu_to_be64(h->refcount_table_offset);
	rec.refcount_table_clusters = cpu_to_be32(h->refcount_table_clusters);
	rec.nb_snapshots = cpu_to_be32(h->nb_snapshots);
	memcpy(j->hdr_rec, &rec, sizeof(rec));
	if (!j->hdr_changed)
		j->running_bytes += QIMG_JRNL_HDR_REC_LEN;
	j->hdr_changed = true;
	j->running = true;
}

/**
 * qimg_journal_refcount_dropped() - a refcount is about to go down
 * @dev: the device
 * @rb_off: the refcount block's offset
 * @idx: the entry's index in the block
 * @old: its value now, before the change
 *
 * The first drop of an entry in the running transaction keeps its value
 * from before: if the transaction is committed as several journal
 * transactions, the first ones log that value and only the last one the
 * new (lower) value, after the references it no longer counts are gone
 * (qimg_jtx_drops()).
 *
 * Context: dev->meta_lock held, may sleep (GFP_NOIO allocation).
 * Return: 0, or -ENOMEM / -EOVERFLOW: the drop cannot be tracked, and the
 * caller must not make it (the cluster keeps its count: a leak at worst).
 */
int qimg_journal_refcount_dropped(struct qimg_device *dev, u64 rb_off,
				  u64 idx, u64 old)
{
	struct qimg_journal *j = dev->journal;
	u32 order = dev->top.g->refcount_order;
	int ret;

	lockdep_assert_held(&dev->meta_lock);
	if (!j)
		return 0;
	if (old > LONG_MAX)
		return -EOVERFLOW;
	ret = xa_insert(&j->drops, ((rb_off << 3) >> order) + idx,
			xa_mk_value(old), GFP_NOIO);
	return ret == -EBUSY ? 0 : ret;	/* the first value counts */
}

/**
 * qimg_journal_revoke() - a host range was freed
 * @dev: the device
 * @host: its start (cluster aligned)
 * @len: its length (whole clusters)
 *
 * When a record since the last checkpoint targets it, a revoke joins the
 * running transaction, so that no replay writes old metadata over what
 * the range holds next.
 * Context: dev->meta_lock held; may sleep (allocation).
 */
void qimg_journal_revoke(struct qimg_device *dev, u64 host, u64 len)
{
	struct qimg_journal *j = dev->journal;
	u32 bits = dev->top.g->cluster_bits;
	struct qimg_jrevoke *r;
	u64 c;

	lockdep_assert_held(&dev->meta_lock);
	if (!j || !len)
		return;
	if (!j->targets_lost) {
		for (c = host >> bits; c < (host + len) >> bits; c++)
			if (xa_load(&j->targets, c))
				break;
		if (c >= (host + len) >> bits)
			return;
	}
	r = kmalloc(sizeof(*r), GFP_KERNEL);
	if (!r) {
		/* Without the revoke, the next commit must be a checkpoint. */
		j->targets_lost = true;
		return;
	}
	r->host = host;
	r->len = len;
	list_add_tail(&r->node, &j->revokes);
	j->running = true;
	j->running_bytes += 16;
}

/**
 * qimg_journal_data_linked() - the running transaction links a data cluster
 * @dev: the device
 * @host: host offset of the cluster, whose data write has completed
 * @hole: before that write the cluster was a hole of the file that
 *        nothing had written, and the guest saw zeros there
 *
 * Decides how the commit orders the cluster's data (section 5.1,
 * "Commit protocol").  In general the data must be durable before the
 * commit block: a commit that reached the disk without it would show the
 * cluster's old contents (stale data of a freed cluster, or zeros where
 * the guest saw backing data), so the commit syncs its records and the
 * data first, then writes and syncs the commit block.  A hole needs no
 * such order when the file's size covering it is durable already: after
 * a crash a hole the data never reached reads as zeros, which is what the
 * guest saw there before a write it was never told is durable (the host
 * filesystem never shows a block's stale contents).  A transaction whose
 * links are all such holes is written with its commit block in one go
 * and synced once.
 *
 * Context: dev->meta_lock held.
 */
void qimg_journal_data_linked(struct qimg_device *dev, u64 host, bool hole)
{
	struct qimg_journal *j = dev->journal;

	lockdep_assert_held(&dev->meta_lock);
	if (!j)
		return;
	if (!hole || host + dev->top.g->cluster_size >
		     (u64)atomic64_read(&j->synced_size))
		j->order_data = true;
}

/**
 * qimg_journal_durable_tid() - the last transaction made durable
 * @dev: the device
 *
 * Without the journal every transaction the caller can see is durable
 * once its write-back returned (U64_MAX).
 *
 * Context: dev->meta_lock held.
 * Return: the dev->meta_tid of the last transaction committed.
 */
u64 qimg_journal_durable_tid(struct qimg_device *dev)
{
	lockdep_assert_held(&dev->meta_lock);
	return dev->journal ? READ_ONCE(dev->journal->durable_tid) : U64_MAX;
}

/**
 * qimg_journal_owns() - is @off inside the journal area?
 * @dev: the device
 * @off: a host offset
 *
 * Context: any.
 * Return: true when the journal area holds @off.
 */
bool qimg_journal_owns(struct qimg_device *dev, u64 off)
{
	const struct qimg_header *h = dev->top.h;

	return dev->journal && off >= h->journal_offset &&
	       off - h->journal_offset < h->journal_size;
}

/* ------------------------------------------------------------------------ */
/* Sealing and commit                                                       */

/* A refcount block chunk whose sealed copy left a reservation out. */
struct qimg_jfix {
	struct qimg_centry *e;		/* the refcount block (dirty, pinned) */
	u32 chunk;			/* its chunk to log again */
	u32 rec;			/* the record given a private copy */
	void *copy;			/* that copy, owned here, or NULL */
};

struct qimg_jtx {
	struct qimg_jrnl_rec *r;
	u32 n, cap;
	struct qimg_jfix *fix;
	u32 nfix, capfix;
	u32 rb_lo, rb_hi;	/* the refcount blocks' records */
	void **copies;		/* record data patched by qimg_jtx_drops() */
	u32 ncopies, capcopies;
};

static int qimg_jtx_add(struct qimg_jtx *t, u16 type, u64 target,
			const void *data, u32 len)
{
	if (t->n == t->cap) {
		u32 cap = t->cap ? t->cap * 2 : 64;
		struct qimg_jrnl_rec *r = kvmalloc_array(cap, sizeof(*r),
							 GFP_KERNEL);

		if (!r)
			return -ENOMEM;
		if (t->n)
			memcpy(r, t->r, t->n * sizeof(*r));
		kvfree(t->r);
		t->r = r;
		t->cap = cap;
	}
	t->r[t->n++] = (struct qimg_jrnl_rec) {
		.type = type, .len = len, .target = target, .data = data,
	};
	return 0;
}

/* Records of the marked chunks of one cache's tables, block sized. */
static int qimg_jtx_cache(struct qimg_journal *j, struct qimg_jtx *t,
			  struct qimg_cache *c, bool all)
{
	u32 bs = 1U << j->block_bits, cs = 1U << j->chunk_shift;
	struct qimg_centry *e;
	int ret = 0;

	list_for_each_entry(e, &c->dirty, dnode) {
		u64 m = all ? ~0ULL : e->jmask;
		u32 i, o;

		for (i = 0; !ret && i < 64 && m; i++) {
			if (!(m & BIT_ULL(i)))
				continue;
			for (o = 0; !ret && o < cs; o += bs)
				ret = qimg_jtx_add(t, QIMG_JRNL_REC_WRITE,
						   e->offset + (u64)i * cs + o,
						   (u8 *)e->data + i * cs + o,
						   min(bs, cs - o));
		}
		if (ret)
			return ret;
	}
	return 0;
}

static int qimg_jtx_entries(struct qimg_jtx *t, struct xarray *xa,
			    __be64 *table, u64 n, u64 table_off, bool all)
{
	unsigned long idx;
	void *v;
	int ret;

	if (all) {
		u64 i;

		for (i = 0; i < n; i += 512) {
			ret = qimg_jtx_add(t, QIMG_JRNL_REC_WRITE,
					   table_off + i * 8, &table[i],
					   min_t(u64, n - i, 512) * 8);
			if (ret)
				return ret;
		}
		return 0;
	}
	xa_for_each(xa, idx, v) {
		if (idx >= n)
			continue;
		ret = qimg_jtx_add(t, QIMG_JRNL_REC_WRITE, table_off + idx * 8,
				   &table[idx], 8);
		if (ret)
			return ret;
	}
	return 0;
}

/* Gather the running transaction's records, in the safe order. */
static int qimg_jtx_gather(struct qimg_device *dev, struct qimg_jtx *t)
{
	struct qimg_journal *j = dev->journal;
	struct qimg_image *img = &dev->top;
	struct qimg_jrevoke *r;
	bool all = j->targets_lost;
	int ret = 0;

	list_for_each_entry(r, &j->revokes, node) {
		ret = qimg_jtx_add(t, QIMG_JRNL_REC_REVOKE, r->host, NULL,
				   r->len);
		if (ret)
			return ret;
	}
	t->rb_lo = t->n;
	ret = qimg_jtx_cache(j, t, &dev->rc, all);
	t->rb_hi = t->n;
	if (!ret)
		ret = qimg_jtx_entries(t, &j->rt_set, dev->reftable,
				       dev->reftable_entries,
				       img->h->refcount_table_offset, all);
	if (!ret)
		ret = qimg_jtx_cache(j, t, &img->l2, all);
	if (!ret)
		ret = qimg_jtx_entries(t, &j->l1_set, img->l1, img->l1_entries,
				       img->h->l1_table_offset, all);
	/* Last: split over several commits, the header never goes first. */
	if (!ret && j->hdr_changed)
		ret = qimg_jtx_add(t, QIMG_JRNL_REC_WRITE, QIMG_JRNL_HDR_REC_OFF,
				   j->hdr_rec, QIMG_JRNL_HDR_REC_LEN);
	return ret;
}

static struct qimg_centry *qimg_jdirty_rb(struct qimg_device *dev, u64 off)
{
	struct qimg_centry *e;

	list_for_each_entry(e, &dev->rc.dirty, dnode)
		if (e->offset == off)
			return e;
	return NULL;
}

/*
 * An allocating write reserves its data cluster (refcount 1) before the
 * data I/O and sets the L2 entry after it, in two handles: a commit in
 * between must not make the reservation durable without the link, or a
 * crash would leave the cluster counted and unreferenced (a leak).  So
 * the sealed records give such a cluster its refcount from before the
 * reservation, 0, in a private copy of the record's block, and the chunk
 * stays marked: the next transaction logs the 1 with the link.
 */
static int qimg_jtx_unlinked(struct qimg_device *dev, struct qimg_jtx *t)
{
	struct qimg_journal *j = dev->journal;
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	struct qimg_err err = { "" };
	u64 host = 0;
	int ret;

	if (!dev->meta_ops || !dev->meta_ops->next_unlinked)
		return 0;
	for (; dev->meta_ops->next_unlinked(dev, &host);
	     host += g->cluster_size) {
		u64 rt_idx = qimg_reftable_index(g, host), rb_off, bit, pos;
		struct qimg_centry *e;
		struct qimg_jfix *f;
		u32 i, k;

		if (rt_idx >= dev->reftable_entries ||
		    qimg_reftable_decode(g, be64_to_cpu(READ_ONCE(dev->reftable[rt_idx])),
					 qimg_image_end(img), &rb_off, &err) ||
		    !rb_off)
			continue;
		bit = qimg_refblock_index(g, host) << g->refcount_order;
		pos = rb_off + (bit >> 3);
		for (i = 0; i < t->n; i++)
			if (t->r[i].type == QIMG_JRNL_REC_WRITE &&
			    t->r[i].target <= pos &&
			    pos - t->r[i].target < t->r[i].len)
				break;
		if (i == t->n)
			continue;	/* not in this transaction's blocks */
		e = qimg_jdirty_rb(dev, rb_off);
		if (!e)
			continue;
		for (k = 0; k < t->nfix && t->fix[k].rec != i; k++)
			;
		if (t->nfix == t->capfix) {
			u32 cap = t->capfix ? 2 * t->capfix : 16;
			struct qimg_jfix *nf = krealloc_array(t->fix, cap,
							      sizeof(*nf),
							      GFP_KERNEL);

			if (!nf)
				return -ENOMEM;
			t->fix = nf;
			t->capfix = cap;
		}
		f = &t->fix[t->nfix];
		*f = (struct qimg_jfix) {
			.e = e, .rec = i,
			.chunk = (u32)((pos - rb_off) >> j->chunk_shift),
		};
		if (k == t->nfix) {
			/* First reservation in this record: copy it. */
			f->copy = kmemdup(t->r[i].data, t->r[i].len,
					  GFP_KERNEL);
			if (!f->copy)
				return -ENOMEM;
			t->r[i].data = f->copy;
		}
		t->nfix++;
		ret = qimg_refcount_set((void *)t->r[i].data, g->refcount_order,
					(bit - (t->r[i].target - rb_off) * 8) >>
					g->refcount_order, 0);
		if (ret)
			return ret;
	}
	return 0;
}

/* After the seal: the left-out reservations' chunks wait for the next. */
static void qimg_jtx_refix(struct qimg_device *dev, struct qimg_jtx *t)
{
	struct qimg_journal *j = dev->journal;
	u32 i;

	for (i = 0; i < t->nfix; i++) {
		t->fix[i].e->jmask |= BIT_ULL(t->fix[i].chunk);
		j->running = true;
		j->running_bytes += 1ULL << j->chunk_shift;
	}
}

static void qimg_jtx_free(struct qimg_jtx *t)
{
	u32 i;

	for (i = 0; i < t->nfix; i++)
		kfree(t->fix[i].copy);
	kfree(t->fix);
	for (i = 0; i < t->ncopies; i++)
		kfree(t->copies[i]);
	kfree(t->copies);
	kvfree(t->r);
}

/* Ring room for a transaction of @blocks blocks at the head? */
static bool qimg_jfits(struct qimg_journal *j, u32 blocks)
{
	u32 tail = j->hdr.tail_block;

	if (!j->ntx)
		return true;
	if (j->head > tail)
		return true;	/* head + max_tx <= nblocks always holds */
	return j->head < tail && j->head + blocks <= tail;
}

static int qimg_journal_checkpoint_locked(struct qimg_device *dev);

/*
 * Encode records [*first, n) into the commit buffer as one journal
 * transaction, as many as fit; returns its block count before the commit
 * block, and the first record left in *first.
 */
static int qimg_jtx_encode(struct qimg_journal *j, struct qimg_jtx *t,
			   u32 *first, u64 seq, u32 *crc)
{
	u32 bs = 1U << j->block_bits, used = 0, i = *first;
	struct qimg_err err = { "" };
	u8 *buf = j->buf;

	*crc = 0;
	while (i < t->n) {
		u32 k = 0;
		int nd = 0, next;

		/* Grow the group while its descriptor and data fit. */
		while (i + k < t->n) {
			next = qimg_jrnl_desc_blocks(j->block_bits, &t->r[i],
						     k + 1, &err);
			if (next < 0 || used + 1 + next + 1 > j->max_tx)
				break;
			nd = next;
			k++;
		}
		if (!k)
			break;
		next = qimg_jrnl_desc_encode(buf + (size_t)used * bs,
					     buf + (size_t)(used + 1) * bs, nd,
					     j->block_bits, seq, &t->r[i], k,
					     &err);
		if (next < 0) {
			pr_err("journal: %s\n", err.msg);
			return next;
		}
		*crc = qimg_crc32c(*crc, buf + (size_t)used * bs,
				   (size_t)(1 + next) * bs);
		used += 1 + next;
		i += k;
	}
	if (i == *first)
		return -EIO;	/* one record bigger than a transaction */
	*first = i;
	return used;
}

/*
 * A running transaction that does not fit one journal transaction is
 * committed as several, and a crash may come between them: their records
 * go in the order of the write-back without a journal (refcount blocks
 * first, so that nothing is referenced before it is counted), and every
 * prefix must be consistent.  Refcounts that went down in it break that
 * order -- a cluster would be free before the L2 entry naming it is
 * gone.  So the refcount blocks' records hold max(old, new) for them (in
 * private copies), and the blocks holding such an entry are logged once
 * more, with the new values, after every other record: a prefix leaks at
 * worst, the whole transaction is exact.  One that fits is atomic anyway.
 */
static int qimg_jtx_drops(struct qimg_device *dev, struct qimg_jtx *t)
{
	struct qimg_journal *j = dev->journal;
	u32 order = dev->top.g->refcount_order, first = 0, i, hi = t->rb_hi;
	u32 crc;
	int used;

	if (xa_empty(&j->drops) || t->rb_lo == hi)
		return 0;
	used = qimg_jtx_encode(j, t, &first, j->next_seq, &crc);
	if (used < 0 || first == t->n)
		return 0;	/* fits (or fails the same way in the commit) */
	for (i = t->rb_lo; i < hi; i++) {
		u64 target = t->r[i].target, len = t->r[i].len;
		unsigned long lo = (target << 3) >> order, key;
		unsigned long last = (((target + len) << 3) >> order) - 1;
		const void *orig = t->r[i].data;
		void *copy = NULL, *v;
		int ret;

		if (t->r[i].type != QIMG_JRNL_REC_WRITE)
			continue;
		xa_for_each_range(&j->drops, key, v, lo, last) {
			u64 old = xa_to_value(v), idx = key - lo;

			if (qimg_refcount_get(orig, order, idx) >= old)
				continue;
			if (!copy) {
				if (t->ncopies == t->capcopies) {
					u32 cap = t->capcopies ?
						  2 * t->capcopies : 16;
					void **nc = krealloc_array(t->copies,
								   cap,
								   sizeof(*nc),
								   GFP_NOIO);

					if (!nc)
						return -ENOMEM;
					t->copies = nc;
					t->capcopies = cap;
				}
				copy = kmemdup(orig, len, GFP_NOIO);
				if (!copy)
					return -ENOMEM;
				t->copies[t->ncopies++] = copy;
			}
			ret = qimg_refcount_set(copy, order, idx, old);
			if (ret)
				return ret;
		}
		if (!copy)
			continue;
		t->r[i].data = copy;
		ret = qimg_jtx_add(t, QIMG_JRNL_REC_WRITE, target, orig,
				   (u32)len);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Write the encoded transaction (@used blocks) and its commit block.
 * @ordered: the records and the data they link are synced before the
 * commit block is written (two barriers); else all of it is written at
 * once and synced once: the commit checksum covers every block, so a
 * commit block that reached the disk without its records is torn, and
 * replay ends the log there.
 */
static int qimg_jtx_write(struct qimg_device *dev, u32 used, u64 seq, u32 crc,
			  bool ordered)
{
	struct qimg_journal *j = dev->journal;
	u32 bs = 1U << j->block_bits, next;
	u64 base = dev->top.h->journal_offset;
	u8 *commit = (u8 *)j->buf + (size_t)used * bs;
	bool cut;
	int ret;

	next = qimg_jrnl_next_start(&j->hdr, j->head + used, j->max_tx);
	qimg_jrnl_commit_encode(commit, j->block_bits, seq, used, next, crc);
	qimg_journal_hook(dev);
	ret = qimg_journal_injected("journal records") ? -EIO : 0;
	if (!ret && !ordered) {
		/* A failure injected here writes the records alone. */
		cut = qimg_journal_injected("journal commit");
		ret = qimg_kwrite(dev->top.file, j->buf,
				  (size_t)(used + !cut) * bs,
				  base + ((u64)j->head << j->block_bits));
		if (!ret && cut)
			ret = -EIO;
		if (!ret)
			atomic64_inc(&j->st_single_sync);
	} else if (!ret) {
		ret = qimg_kwrite(dev->top.file, j->buf, (size_t)used * bs,
				  base + ((u64)j->head << j->block_bits));
		if (!ret)
			ret = qimg_jsync(dev);
		if (!ret)
			ret = qimg_journal_injected("journal commit") ? -EIO :
			      qimg_kwrite(dev->top.file, commit, bs,
					  base + ((u64)(j->head + used) <<
						  j->block_bits));
	}
	if (!ret)
		ret = qimg_jsync(dev);
	if (ret)
		return ret;
	j->head = next;
	j->ntx++;
	j->next_seq = seq + 1;
	j->committed_seq = seq;
	atomic64_inc(&j->st_commits);
	atomic64_add(used + 1, &j->st_blocks);
	return 0;
}

/* After sealing: the running transaction starts empty. */
static void qimg_jtx_reset(struct qimg_device *dev, struct qimg_jtx *t,
			   u64 last_seq)
{
	struct qimg_journal *j = dev->journal;
	u32 bits = dev->top.g->cluster_bits;
	struct qimg_jrevoke *r, *tmp;
	struct qimg_centry *e;
	u32 i;

	for (i = 0; i < t->n; i++)
		if (t->r[i].type == QIMG_JRNL_REC_WRITE &&
		    xa_err(xa_store(&j->targets, t->r[i].target >> bits,
				    xa_mk_value(1), GFP_KERNEL)))
			j->targets_lost = true;
	list_for_each_entry(e, &dev->rc.dirty, dnode)
		if (e->jmask || j->targets_lost) {
			e->jmask = 0;
			e->jseq = last_seq;
		}
	list_for_each_entry(e, &dev->top.l2.dirty, dnode)
		if (e->jmask || j->targets_lost) {
			e->jmask = 0;
			e->jseq = last_seq;
		}
	xa_destroy(&j->l1_set);
	xa_destroy(&j->rt_set);
	xa_destroy(&j->drops);
	j->hdr_changed = false;
	list_for_each_entry_safe(r, tmp, &j->revokes, node) {
		list_del(&r->node);
		kfree(r);
	}
	j->running = false;
	j->running_bytes = 0;
	j->order_data = false;
	/* The unlinking of these is in the sealed transaction. */
	list_splice_tail_init(&dev->pending_frees, &dev->ready_frees);
	dev->meta_tid++;
}

static void qimg_jfail(struct qimg_device *dev, int err)
{
	struct qimg_journal *j = dev->journal;

	spin_lock(&j->lock);
	if (!j->err)
		j->err = err;
	spin_unlock(&j->lock);
	qimg_meta_sync_failed(dev, err);
}

/**
 * qimg_journal_commit() - commit the running transaction
 * @dev: the device, with the journal on
 * @unlock: drop dev->meta_lock once the last journal transaction is
 *          sealed, and do its I/O without it (the workqueue's commit)
 *
 * Context: process context, may sleep; dev->meta_lock held, and released
 * on return when @unlock.  Takes j->io_mutex.
 * Return: 0 or a negative errno (a failure ends all writing).
 */
int qimg_journal_commit(struct qimg_device *dev, bool unlock)
{
	struct qimg_journal *j = dev->journal;
	struct qimg_jtx t = { };
	u64 tid = dev->meta_tid;	/* the transaction being sealed */
	bool locked = true, ordered;
	u32 first = 0;
	u64 gen;
	int ret = 0;

	lockdep_assert_held(&dev->meta_lock);
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state)) {
		ret = -EIO;
		goto out_unlock;
	}
	if (!j->running) {
		ret = j->err;
		goto out_unlock;
	}
	mutex_lock(&j->io_mutex);
	ret = qimg_jtx_gather(dev, &t);
	if (!ret)
		ret = qimg_jtx_unlinked(dev, &t);
	if (!ret)
		ret = qimg_jtx_drops(dev, &t);
	if (ret)
		goto out;
	spin_lock(&j->lock);
	gen = ++j->sealed;
	spin_unlock(&j->lock);
	ordered = j->order_data;	/* reset with the running transaction */
	while (first < t.n) {
		u64 seq = j->next_seq;
		u32 crc;
		int used = qimg_jtx_encode(j, &t, &first, seq, &crc);

		if (used < 0) {
			ret = used;
			break;
		}
		if (!qimg_jfits(j, used + 1)) {
			ret = qimg_journal_checkpoint_locked(dev);
			if (ret)
				break;
		}
		if (first == t.n) {
			qimg_jtx_reset(dev, &t, seq);
			qimg_jtx_refix(dev, &t);
			if (unlock) {
				mutex_unlock(&dev->meta_lock);
				locked = false;
			}
		}
		ret = qimg_jtx_write(dev, used, seq, crc, ordered);
		if (ret)
			break;
	}
	if (!ret && first < t.n)
		ret = -EIO;
	if (!ret && !t.n)
		qimg_jtx_reset(dev, &t, j->committed_seq);	/* nothing to log */
	if (!ret)
		WRITE_ONCE(j->durable_tid, tid);
	spin_lock(&j->lock);
	if (j->done < gen)
		j->done = gen;
	spin_unlock(&j->lock);
	wake_up_all(&j->wait);
out:
	mutex_unlock(&j->io_mutex);
	qimg_jtx_free(&t);
	if (ret) {
		if (!locked)
			mutex_lock(&dev->meta_lock);
		qimg_jfail(dev, ret);
		wake_up_all(&j->wait);
		if (unlock)
			mutex_unlock(&dev->meta_lock);
		return ret;
	}
	if (unlock && locked)
		mutex_unlock(&dev->meta_lock);
	return 0;
out_unlock:
	if (unlock)
		mutex_unlock(&dev->meta_lock);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Checkpoint                                                               */

/* Replay the committed transactions in place and move the tail. */
static int qimg_journal_checkpoint_locked(struct qimg_device *dev)
{
	struct qimg_journal *j = dev->journal;
	struct qimg_jrnl_io io = { qimg_jio_read, qimg_jio_write, dev };
	struct qimg_err err = { "" };
	struct qimg_jrnl_revoke *rv = NULL;
	struct qimg_jrnl_geom g;
	struct qimg_jrnl_scan s;
	struct qimg_jrnl_hdr nh;
	int ret;

	lockdep_assert_held(&j->io_mutex);
	if (!j->ntx)
		return 0;
	qimg_jgeom(dev, &g);
	ret = qimg_jrnl_scan(&g, &io, &j->hdr, j->work, &s, &err);
	if (!ret && s.ntx != j->ntx) {
		snprintf(err.msg, sizeof(err.msg),
			 "found %llu of the %llu transactions committed",
			 s.ntx, j->ntx);
		ret = -EUCLEAN;
	}
	if (!ret && s.nrevokes) {
		rv = kvmalloc_array(s.nrevokes, sizeof(*rv), GFP_KERNEL);
		ret = rv ? qimg_jrnl_revokes(&g, &io, &s, j->work, rv, &err) :
			   -ENOMEM;
	}
	if (!ret)
		ret = qimg_jrnl_replay(&g, &io, &s, j->work, rv, NULL, &err);
	kvfree(rv);
	if (ret) {
		qimg_dev_err(dev, "journal checkpoint failed: %s (%d)\n",
			     err.msg[0] ? err.msg : "I/O error", ret);
		return ret;
	}
	ret = qimg_jsync(dev);
	if (ret)
		return ret;
	nh = j->hdr;
	nh.copy = !j->hdr.copy;
	nh.generation++;
	nh.synced_seq = s.last_seq;
	nh.tail_block = j->head;
	ret = qimg_jhdr_write(dev, &nh);
	if (ret)
		return ret;
	j->hdr = nh;
	j->ntx = 0;
	WRITE_ONCE(j->ckpt_seq, s.last_seq);
	atomic64_inc(&j->st_checkpoints);
	return 0;
}

/* Tables whose last logged change is in place are clean again. */
static bool qimg_jclean_done(struct qimg_centry *e, void *arg)
{
	u64 ckpt = *(u64 *)arg;

	return !e->jmask && e->jseq <= ckpt;
}

static void qimg_journal_clean(struct qimg_device *dev)
{
	struct qimg_journal *j = dev->journal;
	u64 ckpt = READ_ONCE(j->ckpt_seq);

	lockdep_assert_held(&dev->meta_lock);
	if (j->cleaned_seq == ckpt)
		return;
	qimg_cache_clean(&dev->rc, qimg_jclean_done, &ckpt);
	qimg_cache_clean(&dev->top.l2, qimg_jclean_done, &ckpt);
	/* Ordered write-back never runs with the journal on. */
	dev->top.l1_dirty_lo = 0;
	dev->top.l1_dirty_hi = 0;
	dev->rt_dirty_lo = 0;
	dev->rt_dirty_hi = 0;
	if (!j->ntx && !j->running) {
		xa_destroy(&j->targets);
		j->targets_lost = false;
	}
	j->cleaned_seq = ckpt;
	qimg_cache_trim(&dev->rc);
	qimg_cache_trim(&dev->top.l2);
}

/* Apply frees whose unlinking is committed; they join the running one. */
static int qimg_journal_post_commit(struct qimg_device *dev)
{
	lockdep_assert_held(&dev->meta_lock);
	if (dev->meta_ops && dev->meta_ops->post_sync_pending(dev))
		return dev->meta_ops->post_sync(dev);
	return 0;
}

/**
 * qimg_journal_sync_all() - everything in memory committed and in place
 * @dev: the device, with the journal on
 *
 * What the journal-less write-back promises (qimg_meta_writeback()):
 * commit, apply the frees that commit made safe and commit them too,
 * checkpoint, and mark the tables clean, so that caches can shrink and
 * structures written in place (the refcount table's move) see the tables
 * on disk.
 *
 * Context: process context, may sleep; dev->meta_lock held.
 * Return: 0 or a negative errno (a failure ends all writing).
 */
int qimg_journal_sync_all(struct qimg_device *dev)
{
	struct qimg_journal *j = dev->journal;
	int i, ret = 0;

	lockdep_assert_held(&dev->meta_lock);
	for (i = 0; i < 3 && !ret; i++) {
		ret = qimg_journal_commit(dev, false);
		if (!ret)
			ret = qimg_journal_post_commit(dev);
		if (!j->running)
			break;
	}
	if (!ret && j->running)
		ret = qimg_journal_commit(dev, false);
	if (ret)
		return ret;
	mutex_lock(&j->io_mutex);
	ret = qimg_journal_checkpoint_locked(dev);
	mutex_unlock(&j->io_mutex);
	if (ret) {
		qimg_jfail(dev, ret);
		return ret;
	}
	qimg_journal_clean(dev);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Workqueue: interval commits and background checkpoints                   */

static void qimg_journal_commit_work(struct work_struct *work)
{
	struct qimg_journal *j = container_of(to_delayed_work(work),
					      struct qimg_journal,
					      commit_work);
	struct qimg_device *dev = j->dev;
	unsigned int old = qimg_writer_begin();
	int ret;

	mutex_lock(&dev->meta_lock);
	ret = qimg_journal_commit(dev, true);
	if (!ret) {
		mutex_lock(&dev->meta_lock);
		ret = qimg_journal_post_commit(dev);
		qimg_journal_clean(dev);
		if (j->running)
			qimg_journal_kick(dev);
		mutex_unlock(&dev->meta_lock);
	}
	/* Past half the ring: move the tail in the background. */
	if (!ret && qimg_journal_fill(j) >
	    (j->hdr.nblocks - QIMG_JRNL_RING_START) / 2)
		queue_work(j->wq, &j->ckpt_work);
	qimg_writer_end(old);
}

static void qimg_journal_ckpt_work(struct work_struct *work)
{
	struct qimg_journal *j = container_of(work, struct qimg_journal,
					      ckpt_work);
	struct qimg_device *dev = j->dev;
	unsigned int old = qimg_writer_begin();
	int ret;

	mutex_lock(&j->io_mutex);
	ret = qimg_journal_checkpoint_locked(dev);
	mutex_unlock(&j->io_mutex);
	mutex_lock(&dev->meta_lock);
	if (ret)
		qimg_jfail(dev, ret);
	else
		qimg_journal_clean(dev);
	mutex_unlock(&dev->meta_lock);
	qimg_writer_end(old);
}

/**
 * qimg_journal_kick() - the running transaction changed
 * @dev: the device
 *
 * Arms the interval commit; past the size threshold, commits at once.
 * Context: dev->meta_lock held, does not sleep.
 */
void qimg_journal_kick(struct qimg_device *dev)
{
	struct qimg_journal *j = dev->journal;

	if (!j || !j->running)
		return;
	if (j->running_bytes > ((u64)j->max_tx << j->block_bits) / 2)
		mod_delayed_work(j->wq, &j->commit_work, 0);
	else
		queue_delayed_work(j->wq, &j->commit_work,
				   msecs_to_jiffies(READ_ONCE(j->interval_ms)));
}

/**
 * qimg_journal_flush() - REQ_OP_FLUSH (and FUA) with the journal on
 * @dev: the device
 *
 * Waits for a commit of everything changed so far (concurrent flushes
 * share one: group commit).  With no metadata changed since the last
 * commit, one sync makes the guest's data durable and no journal block
 * is written; none when a sync that started after the flush came (a
 * commit under way) has completed meanwhile.
 *
 * Context: process context, may sleep; dev->meta_lock not held.
 * Return: 0 or a negative errno.
 */
int qimg_journal_flush(struct qimg_device *dev)
{
	struct qimg_journal *j = dev->journal;
	bool running;
	u64 target;
	s64 synced;
	int ret;

	atomic64_inc(&j->st_flushes);
	/* A sync started after this point covers the guest's data. */
	synced = atomic64_read(&j->sync_started);
	mutex_lock(&dev->meta_lock);
	running = j->running;
	spin_lock(&j->lock);
	target = j->sealed + running;
	spin_unlock(&j->lock);
	if (running)
		mod_delayed_work(j->wq, &j->commit_work, 0);
	mutex_unlock(&dev->meta_lock);
	wait_event(j->wait, READ_ONCE(j->done) >= target ||
		   READ_ONCE(j->err));
	if (READ_ONCE(j->err) || test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return -EIO;
	/*
	 * The commit waited for synced the data too; so did any sync that
	 * started after the flush came (a commit already under way when
	 * nothing new was left to seal).
	 */
	if (running || atomic64_read(&j->sync_done) > synced)
		return 0;
	ret = qimg_jsync(dev);
	if (ret) {
		mutex_lock(&dev->meta_lock);
		qimg_meta_sync_failed(dev, ret);
		mutex_unlock(&dev->meta_lock);
	}
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Attach and detach                                                        */

/**
 * qimg_journal_start() - turn the journal on over an allocated area
 * @dev: the device, attached read-write, tables loaded
 * @off: host offset of the area (clusters with refcount 1, or the area
 *       the image's extension already names)
 * @size: its size in bytes
 * @fresh: the area was just allocated: write a new journal header
 *
 * Writes both header copies of a fresh journal (a random first sequence
 * number, so that blocks of an older journal at the same place never
 * continue it), points the extension at the area and sets *journal
 * valid*, then *journal dirty*, each synced before the first commit.
 *
 * Context: process context, may sleep; no lock held (before the disk is
 * live).
 * Return: 0 or a negative errno.
 */
int qimg_journal_start(struct qimg_device *dev, u64 off, u64 size, bool fresh)
{
	const struct qimg_geom *g = dev->top.g;
	struct qimg_err err = { "" };
	struct qimg_journal *j;
	u32 bits = min_t(u32, QIMG_JRNL_DEFAULT_BLOCK_BITS, g->cluster_bits);
	int ret;

	j = kzalloc(sizeof(*j), GFP_KERNEL);
	if (!j)
		return -ENOMEM;
	j->dev = dev;
	mutex_init(&j->io_mutex);
	spin_lock_init(&j->lock);
	init_waitqueue_head(&j->wait);
	xa_init(&j->l1_set);
	xa_init(&j->rt_set);
	xa_init(&j->drops);
	xa_init(&j->targets);
	INIT_LIST_HEAD(&j->revokes);
	INIT_DELAYED_WORK(&j->commit_work, qimg_journal_commit_work);
	INIT_WORK(&j->ckpt_work, qimg_journal_ckpt_work);
	j->interval_ms = QIMG_JOURNAL_DEFAULT_INTERVAL;
	j->chunk_shift = g->cluster_bits - 6;
	dev->top.h->journal_offset = off;
	dev->top.h->journal_size = size;
	if (fresh) {
		ret = qimg_jrnl_hdr_init(&j->hdr, bits, size, g->cluster_bits,
					 get_random_u32() & 0xffffff, &err);
	} else {
		struct qimg_jrnl_io io = { qimg_jio_read, qimg_jio_write, dev };
		void *chunk = kmalloc(QIMG_JRNL_HDR_CHUNK, GFP_KERNEL);

		qimg_jgeom(dev, &j->geom);
		ret = chunk ? qimg_jrnl_hdr_read(&j->geom, &io, chunk, &j->hdr,
						 &err) : -ENOMEM;
		kfree(chunk);
	}
	if (ret) {
		qimg_dev_err(dev, "journal: %s (%d)\n",
			     err.msg[0] ? err.msg : "cannot set up", ret);
		goto fail;
	}
	j->block_bits = j->hdr.block_bits;
	/*
	 * A quarter of the ring per transaction, at least a descriptor, a
	 * data block and the commit block, at most the ring.
	 */
	j->max_tx = clamp_t(u32, (j->hdr.nblocks - QIMG_JRNL_RING_START) / 4, 3,
			    j->hdr.nblocks - QIMG_JRNL_RING_START);
	if (j->hdr.nblocks - QIMG_JRNL_RING_START < 3) {
		qimg_dev_err(dev, "journal of %u blocks is too small to write to\n",
			     j->hdr.nblocks);
		ret = -EINVAL;
		goto fail;
	}
	j->head = j->hdr.tail_block;
	j->next_seq = j->hdr.synced_seq + 1;
	j->committed_seq = j->hdr.synced_seq;
	j->ckpt_seq = j->hdr.synced_seq;
	j->cleaned_seq = j->ckpt_seq;
	ret = -ENOMEM;
	j->buf = kvmalloc((size_t)j->max_tx << j->block_bits, GFP_KERNEL);
	j->work = kvmalloc(qimg_jrnl_work_size(&j->hdr), GFP_KERNEL);
	j->wq = alloc_workqueue("qimg%d-jrnl", WQ_MEM_RECLAIM | WQ_UNBOUND, 1,
				dev->index);
	if (!j->buf || !j->work || !j->wq)
		goto fail;
	if (fresh) {
		/* Header copies first: the extension names a valid journal. */
		j->hdr.copy = 1;
		ret = qimg_jhdr_write(dev, &j->hdr);
		j->hdr.copy = 0;
		if (!ret)
			ret = qimg_jhdr_write(dev, &j->hdr);
		if (!ret)
			ret = qimg_jext_write(dev, off, size);
		if (ret)
			goto fail;
	}
	qimg_jgeom(dev, &j->geom);
	if (j->head + j->max_tx > j->hdr.nblocks) {
		/*
		 * A tail that our writer would not have left (another writer's
		 * transaction sizes): the ring is empty, move it to the start.
		 */
		j->hdr.copy = !j->hdr.copy;
		j->hdr.generation++;
		j->hdr.tail_block = QIMG_JRNL_RING_START;
		ret = qimg_jhdr_write(dev, &j->hdr);
		if (ret)
			goto fail;
		j->head = QIMG_JRNL_RING_START;
	}
	ret = qimg_jbits_write(dev, true);
	if (ret)
		goto fail;
	dev->journal = j;
	return 0;
fail:
	if (j->wq)
		destroy_workqueue(j->wq);
	kvfree(j->buf);
	kvfree(j->work);
	kfree(j);
	return ret;
}

/**
 * qimg_journal_stop() - checkpoint everything and turn the journal off
 * @dev: the device, journal on
 * @area: out, the journal area now unused (to be freed by the caller)
 * @size: out, its size
 *
 * Commits and checkpoints until nothing is left, clears *journal dirty*
 * and *journal valid* and points the extension at nothing (keeping the
 * size, so the next attach makes a journal again), so that the image is
 * plain qcow2.  Later metadata goes through the ordered write-back.
 *
 * Context: process context, may sleep; no lock held; no request runs.
 * Return: 0 or a negative errno (the journal then stays, dirty: the next
 * attach replays it).
 */
int qimg_journal_stop(struct qimg_device *dev, u64 *area, u64 *size)
{
	struct qimg_journal *j = dev->journal;
	int ret;

	cancel_delayed_work_sync(&j->commit_work);
	flush_work(&j->ckpt_work);
	mutex_lock(&dev->meta_lock);
	ret = qimg_journal_sync_all(dev);
	mutex_unlock(&dev->meta_lock);
	cancel_delayed_work_sync(&j->commit_work);
	flush_work(&j->ckpt_work);
	if (!ret)
		ret = qimg_jbits_write(dev, false);
	if (!ret)
		ret = qimg_jext_write(dev, 0, dev->top.h->journal_size);
	*area = j->geom.area_offset;
	*size = j->geom.area_size;
	if (ret)
		return ret;
	qimg_dev_info(dev, "journal checkpointed and removed (%llu commits, %llu checkpoints)\n",
		      (u64)atomic64_read(&j->st_commits),
		      (u64)atomic64_read(&j->st_checkpoints));
	mutex_lock(&dev->meta_lock);
	dev->journal = NULL;
	mutex_unlock(&dev->meta_lock);
	qimg_journal_destroy(j);
	return 0;
}

/**
 * qimg_journal_destroy() - free a journal's memory
 * @j: the journal, no longer reachable from its device, or NULL
 *
 * Context: process context, may sleep; nothing uses @j any more.
 */
void qimg_journal_destroy(struct qimg_journal *j)
{
	struct qimg_jrevoke *r, *tmp;

	if (!j)
		return;
	cancel_delayed_work_sync(&j->commit_work);
	cancel_work_sync(&j->ckpt_work);
	destroy_workqueue(j->wq);
	list_for_each_entry_safe(r, tmp, &j->revokes, node)
		kfree(r);
	xa_destroy(&j->l1_set);
	xa_destroy(&j->rt_set);
	xa_destroy(&j->drops);
	xa_destroy(&j->targets);
	kvfree(j->buf);
	kvfree(j->work);
	kfree(j);
}
