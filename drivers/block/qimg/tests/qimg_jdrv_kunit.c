// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_jdrv: the driver side of the metadata journal
 * (qimg_journal.c, Documentation/block/qimg-format.rst section 5.1) on
 * images attached as real disks (the set-up of qimg_dev_kunit.h): attach
 * with the journal, commits on flush read back from the file with the
 * format core's scan, crash states (a copy of the file taken while
 * attached) replayed at attach, checkpoints and the ring's wrap with a
 * small journal, revokes, an attach without the journal of an image that
 * has one, a failed journal write, and crashes that leak nothing: a
 * discard's free in the transaction of its unlinking (with the freed
 * cluster kept from reuse until that is durable), a reservation not
 * yet linked when a commit ran, and an attach or detach cut short while
 * the header names the journal area (the area's references are changed
 * in journal transactions, so it is never leaked).
 */
#include <linux/bio.h>
#include <linux/delay.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/vmalloc.h>
#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_journal.h"
#include "qimg_refcount.h"
#include "qimg_map.h"
#include "qimg_dev_kunit.h"

#define QIMG_T_COPY_PATH	"/qimg-kunit-crash.img"

static struct qimg_device *qimg_t_qdev(struct qimg_t_dev *d)
{
	return d->bdev->bd_disk->private_data;
}

static u64 qimg_t_pread64(struct kunit *test, struct file *f, loff_t pos)
{
	__be64 v;

	qimg_t_pread(test, f, &v, 8, pos);
	return be64_to_cpu(v);
}

/* qimg_t_make_image(): one 16-bit refcount block at cluster 2. */
static u16 qimg_t_disk_refcount16(struct kunit *test, struct file *f, u64 host)
{
	__be16 v;

	qimg_t_pread(test, f, &v, 2, 2 * QIMG_T_CS + 2 * (host >> QIMG_T_CB));
	return be16_to_cpu(v);
}

/*
 * Attach; with the journal on, commits happen on flush only (an hour's
 * interval), so the counts of transactions below are exact.
 */
static void qimg_t_up_flags(struct kunit *test, struct qimg_t_dev *d,
			    u32 flags, u64 jsize)
{
	struct qimg_device *dev;

	d->index = qimg_t_attach_flags(test, d->file, flags, jsize);
	KUNIT_ASSERT_GE_MSG(test, d->index, 0, "qimg_attach: %d", d->index);
	d->bdev = qimg_t_open_bdev(test, d->index);
	dev = qimg_t_qdev(d);
	if (dev->journal)
		WRITE_ONCE(dev->journal->interval_ms, 3600 * 1000);
}

/* Detach when the final write-back is known to fail. */
static void qimg_t_down_failed(struct kunit *test, struct qimg_t_dev *d)
{
	blkdev_put(d->bdev, FMODE_READ | FMODE_WRITE);
	d->bdev = NULL;
	KUNIT_EXPECT_EQ(test, qimg_detach(d->index), -EIO);
	d->index = -1;
}

/* The journal extension of the image in @f: offset and size, false if none. */
static bool qimg_t_jext(struct kunit *test, struct file *f, u64 *off,
			u64 *size)
{
	u8 *buf = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u32 pos = QIMG_V3_HEADER_LEN_COMP;

	KUNIT_ASSERT_NOT_NULL(test, buf);
	qimg_t_pread(test, f, buf, 4096, 0);
	KUNIT_ASSERT_EQ(test, get_unaligned_be32(buf + 100),
			(u32)QIMG_V3_HEADER_LEN_COMP);
	while (pos + 8 <= 4096) {
		u32 type = get_unaligned_be32(buf + pos);
		u32 len = get_unaligned_be32(buf + pos + 4);

		if (type == QIMG_EXT_END)
			break;
		if (type == QIMG_EXT_JOURNAL) {
			KUNIT_ASSERT_EQ(test, len, 16u);
			*off = get_unaligned_be64(buf + pos + 8);
			*size = get_unaligned_be64(buf + pos + 16);
			return true;
		}
		pos += 8 + ALIGN(len, 8);
	}
	*off = 0;
	*size = 0;
	return false;
}

static u64 qimg_t_incompat(struct kunit *test, struct file *f)
{
	return qimg_t_pread64(test, f, QIMG_HDR_INCOMPAT_OFFSET);
}

static u64 qimg_t_autoclear(struct kunit *test, struct file *f)
{
	return qimg_t_pread64(test, f, QIMG_HDR_AUTOCLEAR_OFFSET);
}

/* Every cluster of [off, off + size) has refcount @want on disk. */
static void qimg_t_expect_area_refcount(struct kunit *test, struct file *f,
					u64 off, u64 size, u16 want)
{
	u64 c;

	for (c = off; c < off + size; c += QIMG_T_CS)
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_disk_refcount16(test, f, c),
				    want, "journal cluster at %llu", c);
}

/* Clusters with a nonzero refcount on disk (the one refcount block). */
static u64 qimg_t_disk_used(struct kunit *test, struct file *f)
{
	__be16 *rb = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u64 i, n = 0;

	KUNIT_ASSERT_NOT_NULL(test, rb);
	qimg_t_pread(test, f, rb, QIMG_T_CS, 2 * QIMG_T_CS);
	for (i = 0; i < QIMG_T_CS / 2; i++)
		n += rb[i] != 0;
	kunit_kfree(test, rb);
	return n;
}

/* Every cluster of the attached journal's area has refcount 1 in memory. */
static void qimg_t_expect_area_taken(struct kunit *test,
				     struct qimg_device *dev)
{
	u64 off = dev->top.h->journal_offset, c, v;

	KUNIT_ASSERT_NOT_NULL(test, dev->journal);
	mutex_lock(&dev->meta_lock);
	for (c = off; c < off + dev->top.h->journal_size; c += QIMG_T_CS) {
		KUNIT_EXPECT_EQ(test, qimg_refcount_get_host(dev, c, &v), 0);
		KUNIT_EXPECT_EQ_MSG(test, v, 1ULL, "journal cluster at %llu", c);
	}
	mutex_unlock(&dev->meta_lock);
}

/*
 * The image was detached cleanly: plain qcow2, journal bits clear, the
 * extension (if any) names no area, and the old area's clusters are free.
 */
static void qimg_t_expect_journal_gone(struct kunit *test, struct file *f,
				       u64 old_area, u64 old_size)
{
	u64 off, size;

	KUNIT_EXPECT_EQ(test, qimg_t_incompat(test, f) &
			QIMG_INCOMPAT_JOURNAL_DIRTY, 0ULL);
	KUNIT_EXPECT_EQ(test, qimg_t_autoclear(test, f) &
			QIMG_AUTOCLEAR_JOURNAL_VALID, 0ULL);
	if (qimg_t_jext(test, f, &off, &size)) {
		KUNIT_EXPECT_EQ(test, off, 0ULL);
		KUNIT_EXPECT_EQ(test, size, old_size);
	}
	if (old_area)
		qimg_t_expect_area_refcount(test, f, old_area, old_size, 0);
}

/* ------------------------------------------------------------------------ */
/* The on-disk journal, read back with the format core                      */

struct qimg_t_jfile {
	struct file *f;
	u64 area;
};

static int qimg_t_jfread(void *ctx, u64 pos, void *buf, u32 len)
{
	struct qimg_t_jfile *jf = ctx;
	loff_t p = jf->area + pos;

	return kernel_read(jf->f, buf, len, &p) == len ? 0 : -EIO;
}

static int qimg_t_jfwrite(void *ctx, u64 host, const void *buf, u32 len)
{
	return -EROFS;	/* the scan never writes */
}

/* Scan the journal of the image in @f; the scan's result in *s. */
static void qimg_t_jscan(struct kunit *test, struct file *f,
			 struct qimg_jrnl_scan *s)
{
	struct qimg_t_jfile jf = { .f = f };
	struct qimg_jrnl_io io = { qimg_t_jfread, qimg_t_jfwrite, &jf };
	struct qimg_err err = { "" };
	struct qimg_jrnl_geom g = { .cluster_bits = QIMG_T_CB };
	struct qimg_jrnl_hdr h;
	void *chunk, *work;

	KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, f, &g.area_offset,
					    &g.area_size));
	KUNIT_ASSERT_NE(test, g.area_offset, 0ULL);
	jf.area = g.area_offset;
	g.file_size = i_size_read(file_inode(f));
	chunk = kunit_kmalloc(test, QIMG_JRNL_HDR_CHUNK, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, chunk);
	KUNIT_ASSERT_EQ_MSG(test, qimg_jrnl_hdr_read(&g, &io, chunk, &h, &err),
			    0, "%s", err.msg);
	work = kunit_kmalloc(test, qimg_jrnl_work_size(&h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, work);
	KUNIT_ASSERT_EQ_MSG(test, qimg_jrnl_scan(&g, &io, &h, work, s, &err),
			    0, "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* Crash states                                                             */

/*
 * Copy the image file as it is now, while attached and quiet: what the
 * disk would hold if the machine lost power at this moment (every write
 * that a sync made durable is in it, and maybe more).
 */
/*
 * Copy @src to a new file at @path, holes included as zeros: the file or
 * an ERR_PTR.  No KUnit assertion: also called from a commit's hook.
 */
static struct file *qimg_t_copy_file(struct file *src, const char *path)
{
	const size_t chunk = 1 << 20;
	u64 size = i_size_read(file_inode(src)), pos;
	struct file *dst;
	void *buf;

	dst = filp_open(path, O_RDWR | O_CREAT | O_TRUNC | O_LARGEFILE, 0600);
	if (IS_ERR(dst))
		return dst;
	buf = kvmalloc(chunk, GFP_KERNEL);
	if (!buf) {
		fput(dst);
		return ERR_PTR(-ENOMEM);
	}
	for (pos = 0; pos < size; pos += chunk) {
		size_t n = min_t(u64, chunk, size - pos);
		loff_t r = pos, w = pos;

		if (kernel_read(src, buf, n, &r) != n ||
		    kernel_write(dst, buf, n, &w) != n) {
			kvfree(buf);
			fput(dst);
			return ERR_PTR(-EIO);
		}
	}
	kvfree(buf);
	return dst;
}

static struct file *qimg_t_crash_copy(struct kunit *test, struct file *src)
{
	struct file *dst = qimg_t_copy_file(src, QIMG_T_COPY_PATH);

	KUNIT_ASSERT_FALSE_MSG(test, IS_ERR(dst), "copy to %s: %ld",
			       QIMG_T_COPY_PATH, PTR_ERR(dst));
	return dst;
}

/* Give the copy's memory back (tmpfs) and close it. */
static void qimg_t_crash_drop(struct file *f)
{
	vfs_truncate(&f->f_path, 0);
	fput(f);
}

/* Guest cluster @i gets a 4 KiB pattern seeded by @i, at its start. */
static void qimg_t_write_cluster(struct kunit *test, struct qimg_t_dev *d,
				 u64 i, u8 *w)
{
	qimg_t_fill(w, 4096, (u8)(i * 13 + 1));
	KUNIT_ASSERT_EQ_MSG(test, qimg_t_io(d->bdev, REQ_OP_WRITE,
					    i * QIMG_T_CS, w, 4096), 0,
			    "write of guest cluster %llu", i);
}

static void qimg_t_expect_cluster(struct kunit *test, struct qimg_t_dev *d,
				  u64 i, u8 *w, u8 *r)
{
	qimg_t_fill(w, 4096, (u8)(i * 13 + 1));
	memset(r, 0x5a, 4096);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, i * QIMG_T_CS,
					r, 4096), 0);
	KUNIT_EXPECT_EQ_MSG(test, memcmp(r, w, 4096), 0,
			    "guest cluster %llu", i);
}

static void qimg_t_expect_zero_cluster(struct kunit *test,
				       struct qimg_t_dev *d, u64 i, u8 *r)
{
	memset(r, 0x5a, 4096);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, i * QIMG_T_CS,
					r, 4096), 0);
	KUNIT_EXPECT_PTR_EQ_MSG(test, memchr_inv(r, 0, 4096), NULL,
				"guest cluster %llu", i);
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                    */

/*
 * Attach with the journal: the header says dirty + valid, the extension
 * names an area of clusters with refcount 1.  Allocating writes and one
 * flush: one committed transaction in the file, two barriers, nothing
 * written in place (the L1 table on disk is still empty).  A flush with
 * nothing new: one barrier, no commit.
 */
static void qimg_jdrv_commit_on_flush(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_jrnl_scan s;
	struct qimg_device *dev;
	struct qimg_journal *j;
	u64 area, size, commits, barriers, flushes, blocks, i;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	dev = qimg_t_qdev(d);
	j = dev->journal;
	KUNIT_ASSERT_NOT_NULL(test, j);

	KUNIT_EXPECT_NE(test, qimg_t_incompat(test, d->file) &
			QIMG_INCOMPAT_JOURNAL_DIRTY, 0ULL);
	KUNIT_EXPECT_NE(test, qimg_t_autoclear(test, d->file) &
			QIMG_AUTOCLEAR_JOURNAL_VALID, 0ULL);
	KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, d->file, &area, &size));
	KUNIT_EXPECT_NE(test, area, 0ULL);
	KUNIT_EXPECT_EQ(test, area % QIMG_T_CS, 0ULL);
	KUNIT_EXPECT_EQ(test, size, QIMG_JRNL_DEFAULT_SIZE);
	KUNIT_EXPECT_EQ(test, j->geom.area_offset, area);
	KUNIT_EXPECT_EQ(test, j->geom.area_size, size);
	/*
	 * Referenced by the journal's first transaction, not yet on disk: a
	 * crash before that commit leaves the area free, not leaked.
	 */
	qimg_t_expect_area_refcount(test, d->file, area, size, 0);
	qimg_t_expect_area_taken(test, dev);
	/* The file covers the area already (a crash copy must attach). */
	KUNIT_EXPECT_GE(test, (u64)i_size_read(file_inode(d->file)),
			area + size);
	/* The clusters around it are not the area's. */
	KUNIT_EXPECT_TRUE(test, qimg_journal_owns(dev, area));
	KUNIT_EXPECT_TRUE(test, qimg_journal_owns(dev, area + size - 1));
	KUNIT_EXPECT_FALSE(test, qimg_journal_owns(dev, area + size));
	KUNIT_EXPECT_FALSE(test, qimg_journal_owns(dev, area - 1));

	commits = atomic64_read(&j->st_commits);
	barriers = atomic64_read(&j->st_barriers);
	flushes = atomic64_read(&j->st_flushes);
	blocks = atomic64_read(&j->st_blocks);
	for (i = 0; i < 4; i++)
		qimg_t_write_cluster(test, d, i * 200, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_flushes), flushes + 1);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_commits), commits + 1);
	KUNIT_EXPECT_LE(test, atomic64_read(&j->st_barriers), barriers + 2);
	KUNIT_EXPECT_GT(test, atomic64_read(&j->st_blocks), blocks + 2);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_checkpoints), 0);

	qimg_t_jscan(test, d->file, &s);
	KUNIT_EXPECT_GE(test, s.ntx, 1ULL);
	KUNIT_EXPECT_FALSE(test, s.torn);
	/* L1 entry, L2 table chunks, refcount block chunk at least. */
	KUNIT_EXPECT_GE(test, s.nwrites, 3ULL);
	KUNIT_EXPECT_EQ(test, s.last_seq, j->committed_seq);
	/* Nothing in place yet: the tables on disk are the old ones. */
	KUNIT_EXPECT_EQ(test, qimg_t_pread64(test, d->file, 3 * QIMG_T_CS),
			0ULL);

	/* Nothing changed since: one sync, no journal block. */
	commits = atomic64_read(&j->st_commits);
	barriers = atomic64_read(&j->st_barriers);
	blocks = atomic64_read(&j->st_blocks);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_commits), commits);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_barriers), barriers + 1);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_blocks), blocks);

	qimg_t_down(test, d);
	qimg_t_expect_journal_gone(test, d->file, area, size);
	/* Detach checkpointed: the L1 table in place names the L2 table. */
	KUNIT_EXPECT_NE(test, qimg_t_pread64(test, d->file, 3 * QIMG_T_CS),
			0ULL);
}

/*
 * Crash after a flush: a copy of the file taken while attached.  Attached,
 * the copy's journal is replayed and reads show what was written before
 * the flush; detached, the copy is plain qcow2 without the journal area.
 */
static void qimg_jdrv_crash_replay(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_t_dev c = { .index = -1 };
	struct qimg_device *dev;
	u64 area, size, i;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	for (i = 0; i < 6; i++) {
		qimg_t_write_cluster(test, d, i * 150 + 1, w);
		if (i % 2)
			KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	}
	KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, d->file, &area, &size));
	c.file = qimg_t_crash_copy(test, d->file);
	qimg_t_down(test, d);

	/* The crash state needs the replay: dirty, tables not in place. */
	KUNIT_EXPECT_NE(test, qimg_t_incompat(test, c.file) &
			QIMG_INCOMPAT_JOURNAL_DIRTY, 0ULL);
	KUNIT_EXPECT_EQ(test, qimg_t_pread64(test, c.file, 3 * QIMG_T_CS),
			0ULL);
	c.index = qimg_t_attach_flags(test, c.file, 0, 0);
	if (c.index < 0) {
		qimg_t_crash_drop(c.file);
		KUNIT_ASSERT_FAILURE(test, "attach of the crash copy: %d",
				     c.index);
	}
	c.bdev = qimg_t_open_bdev(test, c.index);
	dev = qimg_t_qdev(&c);
	KUNIT_EXPECT_EQ(test, dev->jrnl_replayed, 3ULL);
	/* The image asks for its journal: it is on again. */
	KUNIT_EXPECT_NOT_NULL(test, dev->journal);
	for (i = 0; i < 6; i++)
		qimg_t_expect_cluster(test, &c, i * 150 + 1, w, r);
	qimg_t_expect_zero_cluster(test, &c, 0, r);
	blkdev_put(c.bdev, FMODE_READ | FMODE_WRITE);
	KUNIT_EXPECT_EQ(test, qimg_detach(c.index), 0);
	qimg_t_expect_journal_gone(test, c.file, area, size);
	/* In place now: read without the journal. */
	KUNIT_EXPECT_NE(test, qimg_t_pread64(test, c.file, 3 * QIMG_T_CS),
			0ULL);
	c.index = qimg_t_attach_flags(test, c.file, QIMG_ATTACH_NO_JOURNAL, 0);
	if (c.index >= 0) {
		c.bdev = qimg_t_open_bdev(test, c.index);
		KUNIT_EXPECT_NULL(test, qimg_t_qdev(&c)->journal);
		KUNIT_EXPECT_EQ(test, qimg_t_qdev(&c)->jrnl_replayed, 0ULL);
		for (i = 0; i < 6; i++)
			qimg_t_expect_cluster(test, &c, i * 150 + 1, w, r);
		blkdev_put(c.bdev, FMODE_READ | FMODE_WRITE);
		KUNIT_EXPECT_EQ(test, qimg_detach(c.index), 0);
	} else {
		KUNIT_FAIL(test, "attach without the journal: %d", c.index);
	}
	qimg_t_crash_drop(c.file);
}

/*
 * A journal of 16 clusters (256 blocks, transactions of at most 63): many
 * flushes with allocations fill it, so commits checkpoint and the ring
 * wraps.  A crash copy at the end replays from a tail inside the ring;
 * the original, detached, has every mapping in place.
 */
static void qimg_jdrv_checkpoint_wrap(struct kunit *test)
{
	const u64 n = 160;
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_t_dev c = { .index = -1 };
	struct qimg_device *dev;
	struct qimg_journal *j;
	u32 head, prev_head;
	bool wrapped = false;
	u64 area, size, i;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 16 * QIMG_T_CS);
	dev = qimg_t_qdev(d);
	j = dev->journal;
	KUNIT_ASSERT_NOT_NULL(test, j);
	KUNIT_EXPECT_EQ(test, j->geom.area_size, 16 * QIMG_T_CS);
	KUNIT_EXPECT_EQ(test, j->hdr.nblocks, 256u);
	prev_head = READ_ONCE(j->head);
	/* 37 is prime to the 1024 clusters: all different, all L2 chunks. */
	for (i = 0; i < n; i++) {
		qimg_t_write_cluster(test, d, (i * 37) % 1024, w);
		KUNIT_ASSERT_EQ_MSG(test, qimg_t_flush(d->bdev), 0,
				    "flush %llu", i);
		head = READ_ONCE(j->head);
		if (head < prev_head)
			wrapped = true;
		prev_head = head;
	}
	KUNIT_EXPECT_TRUE(test, wrapped);
	KUNIT_EXPECT_GE(test, atomic64_read(&j->st_commits), (s64)n);
	KUNIT_EXPECT_GT(test, atomic64_read(&j->st_checkpoints), 0);
	kunit_info(test, "%lld commits, %lld checkpoints, %lld barriers, %lld blocks\n",
		   atomic64_read(&j->st_commits),
		   atomic64_read(&j->st_checkpoints),
		   atomic64_read(&j->st_barriers),
		   atomic64_read(&j->st_blocks));
	/* A quiet moment for the copy: no checkpoint half done. */
	flush_work(&j->ckpt_work);
	KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, d->file, &area, &size));
	c.file = qimg_t_crash_copy(test, d->file);
	qimg_t_down(test, d);
	qimg_t_expect_journal_gone(test, d->file, area, size);

	/* The original, without the journal: the tables in place. */
	qimg_t_up_flags(test, d, QIMG_ATTACH_NO_JOURNAL, 0);
	KUNIT_EXPECT_NULL(test, qimg_t_qdev(d)->journal);
	for (i = 0; i < n; i++)
		qimg_t_expect_cluster(test, d, (i * 37) % 1024, w, r);
	qimg_t_expect_zero_cluster(test, d, (n * 37) % 1024, r);
	qimg_t_down(test, d);

	/* The crash copy: replayed from wherever the tail was. */
	c.index = qimg_t_attach_flags(test, c.file, QIMG_ATTACH_NO_JOURNAL, 0);
	if (c.index < 0) {
		qimg_t_crash_drop(c.file);
		KUNIT_ASSERT_FAILURE(test, "attach of the crash copy: %d",
				     c.index);
	}
	c.bdev = qimg_t_open_bdev(test, c.index);
	kunit_info(test, "crash copy: %llu transaction(s) replayed\n",
		   qimg_t_qdev(&c)->jrnl_replayed);
	for (i = 0; i < n; i++)
		qimg_t_expect_cluster(test, &c, (i * 37) % 1024, w, r);
	blkdev_put(c.bdev, FMODE_READ | FMODE_WRITE);
	KUNIT_EXPECT_EQ(test, qimg_detach(c.index), 0);
	qimg_t_expect_journal_gone(test, c.file, area, size);
	qimg_t_crash_drop(c.file);
}

/*
 * Revokes.  No path of the driver frees a cluster that the journal
 * logged since the last checkpoint: a discard never frees an L2 table,
 * the L2 table replaced by copy-on-write is a snapshot's (its refcount
 * only drops), and growing the refcount table checkpoints everything
 * before the old table is freed (so no record targets it any more).  So
 * this case calls qimg_journal_revoke() itself, as freeing the L2 table
 * would: a range no record targets adds nothing, the L2 table adds a
 * revoke to the next commit; in a crash copy whose L2 table cluster was
 * reused (zeroed), the replay must leave it alone; a write after the
 * revoke logs the table again, and that later record is replayed.
 */
static void qimg_jdrv_revoke(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *z = kunit_kzalloc(test, QIMG_T_CS, GFP_KERNEL);
	struct qimg_t_dev c = { .index = -1 };
	struct qimg_jrnl_scan s;
	struct qimg_device *dev;
	struct qimg_journal *j;
	u64 l2, data, nrev;
	loff_t pos;
	int pass;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	KUNIT_ASSERT_NOT_NULL(test, z);
	for (pass = 0; pass < 2; pass++) {
		qimg_t_make_image(test, d->file);
		qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
		dev = qimg_t_qdev(d);
		j = dev->journal;
		KUNIT_ASSERT_NOT_NULL(test, j);
		qimg_t_write_cluster(test, d, 0, w);
		KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
		l2 = be64_to_cpu(READ_ONCE(dev->top.l1[0])) &
		     QIMG_L1E_OFFSET_MASK;
		KUNIT_ASSERT_NE(test, l2, 0ULL);

		mutex_lock(&dev->meta_lock);
		KUNIT_EXPECT_FALSE(test, j->running);
		/* Guest data: never logged, so no revoke. */
		data = l2 + QIMG_T_CS;
		qimg_journal_revoke(dev, data, QIMG_T_CS);
		KUNIT_EXPECT_TRUE(test, list_empty(&j->revokes));
		KUNIT_EXPECT_FALSE(test, j->running);
		qimg_journal_revoke(dev, l2, QIMG_T_CS);
		KUNIT_EXPECT_FALSE(test, list_empty(&j->revokes));
		KUNIT_EXPECT_TRUE(test, j->running);
		mutex_unlock(&dev->meta_lock);
		KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
		qimg_t_jscan(test, d->file, &s);
		KUNIT_EXPECT_EQ(test, s.ntx, 2ULL);
		KUNIT_EXPECT_EQ(test, s.nrevokes, 1ULL);
		nrev = s.nwrites;
		if (pass) {
			/* Logged again after the revoke: replayed. */
			qimg_t_write_cluster(test, d, 1, w);
			KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
			qimg_t_jscan(test, d->file, &s);
			KUNIT_EXPECT_EQ(test, s.ntx, 3ULL);
			KUNIT_EXPECT_GT(test, s.nwrites, nrev);
		}
		c.file = qimg_t_crash_copy(test, d->file);
		/* The original's table was revoked while still in use. */
		qimg_t_down(test, d);

		/* The L2 table's cluster, reused since: zeros. */
		pos = l2;
		KUNIT_ASSERT_EQ(test, kernel_write(c.file, z, QIMG_T_CS, &pos),
				(ssize_t)QIMG_T_CS);
		c.index = qimg_t_attach_flags(test, c.file,
					      QIMG_ATTACH_NO_JOURNAL, 0);
		if (c.index < 0) {
			qimg_t_crash_drop(c.file);
			KUNIT_ASSERT_FAILURE(test, "attach of the crash copy: %d",
					     c.index);
		}
		c.bdev = qimg_t_open_bdev(test, c.index);
		KUNIT_EXPECT_EQ(test, qimg_t_qdev(&c)->jrnl_replayed,
				pass ? 3ULL : 2ULL);
		if (pass) {
			/* The later record holds the whole chunk again. */
			qimg_t_expect_cluster(test, &c, 0, w, r);
			qimg_t_expect_cluster(test, &c, 1, w, r);
		} else {
			/* The revoked record was not replayed. */
			qimg_t_expect_zero_cluster(test, &c, 0, r);
		}
		blkdev_put(c.bdev, FMODE_READ | FMODE_WRITE);
		KUNIT_EXPECT_EQ(test, qimg_detach(c.index), 0);
		qimg_t_crash_drop(c.file);
	}
	qimg_t_make_image(test, d->file);
}

/*
 * Attach without the journal an image whose journal area exists (a crash
 * copy: dirty and valid): the journal is replayed, then checkpointed and
 * the area freed; the extension names nothing, the data is there.
 */
static void qimg_jdrv_attach_no_journal(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_t_dev c = { .index = -1 };
	u64 area, size, i;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	for (i = 0; i < 3; i++)
		qimg_t_write_cluster(test, d, 10 + i, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, d->file, &area, &size));
	c.file = qimg_t_crash_copy(test, d->file);
	qimg_t_down(test, d);

	/* Taken in the committed transaction: the replay references it. */
	qimg_t_expect_area_refcount(test, c.file, area, size, 0);
	KUNIT_EXPECT_NE(test, qimg_t_autoclear(test, c.file) &
			QIMG_AUTOCLEAR_JOURNAL_VALID, 0ULL);
	c.index = qimg_t_attach_flags(test, c.file, QIMG_ATTACH_NO_JOURNAL, 0);
	if (c.index < 0) {
		qimg_t_crash_drop(c.file);
		KUNIT_ASSERT_FAILURE(test, "attach of the crash copy: %d",
				     c.index);
	}
	c.bdev = qimg_t_open_bdev(test, c.index);
	KUNIT_EXPECT_NULL(test, qimg_t_qdev(&c)->journal);
	KUNIT_EXPECT_EQ(test, qimg_t_qdev(&c)->jrnl_replayed, 1ULL);
	/* Gone already while attached, not only at detach. */
	qimg_t_expect_journal_gone(test, c.file, area, size);
	for (i = 0; i < 3; i++)
		qimg_t_expect_cluster(test, &c, 10 + i, w, r);
	/* Writes go the ordered way now, and the area can be reused. */
	qimg_t_write_cluster(test, &c, 20, w);
	KUNIT_EXPECT_EQ(test, qimg_t_flush(c.bdev), 0);
	blkdev_put(c.bdev, FMODE_READ | FMODE_WRITE);
	KUNIT_EXPECT_EQ(test, qimg_detach(c.index), 0);
	KUNIT_EXPECT_NE(test, qimg_t_pread64(test, c.file, 3 * QIMG_T_CS),
			0ULL);
	qimg_t_crash_drop(c.file);
}

/*
 * A journal write fails (the records, or the commit block): that flush
 * fails, the device turns read-only, no later flush succeeds and the
 * detach reports the failure.  The next attach replays what was committed
 * before; the failed transaction's write is not there.
 */
static void qimg_jdrv_write_fails(struct kunit *test)
{
	static const char * const fail[] = { "journal commit",
					     "journal records" };
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_device *dev;
	unsigned int k;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	for (k = 0; k < ARRAY_SIZE(fail); k++) {
		qimg_t_make_image(test, d->file);
		qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
		dev = qimg_t_qdev(d);
		qimg_t_write_cluster(test, d, 3, w);
		KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
		qimg_t_write_cluster(test, d, 700, w);
		WRITE_ONCE(qimg_journal_fail_next, fail[k]);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_flush(d->bdev), -EIO,
				    "%s write fails", fail[k]);
		KUNIT_EXPECT_PTR_EQ(test, READ_ONCE(qimg_journal_fail_next),
				    NULL);
		WRITE_ONCE(qimg_journal_fail_next, NULL);
		KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
		KUNIT_EXPECT_TRUE(test, test_bit(QIMG_STATE_WB_FAILED,
						 &dev->state));
		KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), -EIO);
		KUNIT_EXPECT_NE(test, qimg_t_io(d->bdev, REQ_OP_WRITE,
						5 * QIMG_T_CS, w, 4096), 0);
		KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), -EIO);
		qimg_t_down_failed(test, d);
		/* The journal stays for the next attach to replay. */
		KUNIT_EXPECT_NE(test, qimg_t_incompat(test, d->file) &
				QIMG_INCOMPAT_JOURNAL_DIRTY, 0ULL);

		qimg_t_up_flags(test, d, QIMG_ATTACH_NO_JOURNAL, 0);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_qdev(d)->jrnl_replayed, 1ULL,
				    "%s write failed", fail[k]);
		qimg_t_expect_cluster(test, d, 3, w, r);
		qimg_t_expect_zero_cluster(test, d, 700, r);
		qimg_t_down(test, d);
		qimg_t_expect_journal_gone(test, d->file, 0,
					   QIMG_JRNL_DEFAULT_SIZE);
	}
	qimg_t_make_image(test, d->file);
}

/*
 * After a failed journal commit, reads show what the last successful
 * flush made durable: the mapping committed in the journal, not the older
 * tables in place (nothing is in place before a checkpoint).  Once right
 * after the flush, once after the commit work's clean-up ran.
 */
static void qimg_jdrv_reads_after_failed_commit(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_device *dev;
	int settle;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	for (settle = 0; settle < 2; settle++) {
		qimg_t_make_image(test, d->file);
		qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
		qimg_t_write_cluster(test, d, 3, w);
		KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
		dev = qimg_t_qdev(d);
		if (settle)
			flush_delayed_work(&dev->journal->commit_work);
		qimg_t_write_cluster(test, d, 700, w);
		WRITE_ONCE(qimg_journal_fail_next, "journal commit");
		KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), -EIO);
		WRITE_ONCE(qimg_journal_fail_next, NULL);
		/* Flushed before the failure: still readable while attached. */
		qimg_t_expect_cluster(test, d, 3, w, r);
		qimg_t_down_failed(test, d);
	}
	qimg_t_make_image(test, d->file);
}

/* The host cluster guest cluster @i maps to (0 if none). */
static u64 qimg_t_host_of(struct kunit *test, struct qimg_device *dev, u64 i)
{
	struct qimg_l2_entry e;

	KUNIT_ASSERT_EQ(test, qimg_map_lookup(&dev->top, i * QIMG_T_CS, &e), 0);
	return e.type == QIMG_CLUSTER_NORMAL ? e.host_offset : 0;
}

/* Attach crash copy @c (replaying its journal), detach it: 0 or errno. */
static int qimg_t_crash_cycle(struct kunit *test, struct qimg_t_dev *c)
{
	c->index = qimg_t_attach_flags(test, c->file, 0, 0);
	if (c->index < 0)
		return c->index;
	c->bdev = qimg_t_open_bdev(test, c->index);
	blkdev_put(c->bdev, FMODE_READ | FMODE_WRITE);
	c->bdev = NULL;
	return qimg_detach(c->index);
}

/*
 * A discard with the journal: the cluster's refcount drops in the same
 * transaction as its L2 entry, so a crash right after the flush leaks
 * nothing (the refcount on disk, after replay, is 0).  Until that flush
 * the freed cluster is not handed out again; after it, it is.
 */
static void qimg_jdrv_discard_no_leak(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_t_dev c = { .index = -1 };
	struct qimg_device *dev;
	u64 freed, other, again;
	int ret;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	dev = qimg_t_qdev(d);
	qimg_t_write_cluster(test, d, 1, w);
	qimg_t_write_cluster(test, d, 2, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	freed = qimg_t_host_of(test, dev, 1);
	KUNIT_ASSERT_NE(test, freed, 0ULL);

	KUNIT_ASSERT_EQ(test, qimg_map_zero_cluster(dev, QIMG_T_CS, true), 0);
	KUNIT_EXPECT_EQ(test, qimg_t_host_of(test, dev, 1), 0ULL);
	/* Not durable yet: a new allocation must not take it. */
	qimg_t_write_cluster(test, d, 3, w);
	other = qimg_t_host_of(test, dev, 3);
	KUNIT_EXPECT_NE(test, other, freed);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	c.file = qimg_t_crash_copy(test, d->file);
	/* Durable now: the next allocation may reuse it. */
	qimg_t_write_cluster(test, d, 4, w);
	again = qimg_t_host_of(test, dev, 4);
	KUNIT_EXPECT_EQ(test, again, freed);
	qimg_t_down(test, d);

	ret = qimg_t_crash_cycle(test, &c);
	if (ret) {
		qimg_t_crash_drop(c.file);
		KUNIT_ASSERT_FAILURE(test, "crash copy attach/detach: %d", ret);
	}
	/* Replayed and in place: no reference, no refcount. */
	KUNIT_EXPECT_EQ(test, qimg_t_disk_refcount16(test, c.file, freed), 0);
	KUNIT_EXPECT_EQ(test, qimg_t_disk_refcount16(test, c.file, other), 1);
	qimg_t_crash_drop(c.file);
}

/*
 * A commit while an allocating write holds its reservation (refcount 1,
 * L2 entry not set): a crash copy taken then must show the cluster free,
 * not leaked; once linked and flushed it is counted.
 */
static void qimg_jdrv_reservation_no_leak(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_t_dev c = { .index = -1 };
	struct qimg_t_dev c2 = { .index = -1 };
	struct qimg_device *dev;
	struct qimg_alloc a;
	int ret;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	dev = qimg_t_qdev(d);
	qimg_t_write_cluster(test, d, 0, w);	/* the L2 table exists */
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);

	KUNIT_ASSERT_EQ(test, qimg_alloc_begin(dev, 5 * QIMG_T_CS,
					       QIMG_T_CS, &a, false), 0);
	KUNIT_ASSERT_EQ(test, a.err, 0);
	/* Another write joins the transaction; the flush commits it. */
	qimg_t_write_cluster(test, d, 6, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	/* One copy path: check each crash state before taking the next. */
	c.file = qimg_t_crash_copy(test, d->file);
	ret = qimg_t_crash_cycle(test, &c);
	if (!ret)
		KUNIT_EXPECT_EQ(test, qimg_t_disk_refcount16(test, c.file,
							     a.host), 0);
	qimg_t_crash_drop(c.file);
	KUNIT_EXPECT_EQ(test, qimg_alloc_finish(dev, &a, 0), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	c2.file = qimg_t_crash_copy(test, d->file);
	qimg_t_down(test, d);
	KUNIT_EXPECT_EQ(test, ret, 0);
	ret = qimg_t_crash_cycle(test, &c2);
	KUNIT_EXPECT_EQ(test, ret, 0);
	if (!ret)
		KUNIT_EXPECT_EQ(test, qimg_t_disk_refcount16(test, c2.file,
							     a.host), 1);
	qimg_t_crash_drop(c2.file);
}

/* Write 4 KiB of pattern @seed at @host, as an allocating write's data. */
static void qimg_t_host_write(struct kunit *test, struct qimg_device *dev,
			      u64 host, u8 *w, u8 seed)
{
	struct kvec kv = { .iov_base = w, .iov_len = 4096 };
	struct iov_iter it;

	qimg_t_fill(w, 4096, seed);
	iov_iter_kvec(&it, ITER_SOURCE, &kv, 1, 4096);
	KUNIT_ASSERT_EQ(test, qimg_write_iter_at(&dev->top, host, &it), 0);
}

/*
 * Riders: a second write into a fresh cluster whose allocation is in
 * flight joins it (QIMG_ALLOC_RIDE, the same host cluster) instead of
 * waiting for the link; the link comes with the last data write of the
 * group, whichever it is; both writes read back, the rest of the cluster
 * reads zeros, also after a detach and re-attach.  An allocation that
 * may not take riders (the synchronous path) is not joinable.
 */
static void qimg_jdrv_alloc_riders(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	struct qimg_alloc *l = kunit_kzalloc(test, 3 * sizeof(*l), GFP_KERNEL);
	struct qimg_alloc *rd = l + 1, *s = l + 2;
	u64 g = 5 * QIMG_T_CS;
	struct qimg_device *dev;
	struct qimg_handle h;
	int ret;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	KUNIT_ASSERT_NOT_NULL(test, l);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	dev = qimg_t_qdev(d);

	KUNIT_ASSERT_EQ(test, qimg_alloc_begin(dev, g, 4096, l, true), 0);
	if (!l->joinable) {
		/* A second writer would wait for this allocation: end it. */
		KUNIT_FAIL(test, "a fresh cluster's allocation takes no riders");
		qimg_alloc_finish(dev, l, 0);
		return;
	}
	KUNIT_ASSERT_EQ(test, qimg_alloc_begin(dev, g + 8192, 4096, rd, true),
			QIMG_ALLOC_RIDE);
	KUNIT_EXPECT_EQ(test, rd->host, l->host);
	KUNIT_EXPECT_PTR_EQ(test, rd->leader, l);
	KUNIT_EXPECT_EQ(test, atomic64_read(&dev->alloc_riders), 1LL);
	qimg_t_host_write(test, dev, l->host, w, 1);
	qimg_t_host_write(test, dev, rd->host + 8192, w, 2);

	/* The leader's data first: the rider's is pending, no link yet. */
	mutex_lock(&dev->meta_lock);
	KUNIT_EXPECT_PTR_EQ(test, qimg_alloc_data_done(l), NULL);
	KUNIT_EXPECT_PTR_EQ(test, qimg_alloc_data_done(rd), l);
	KUNIT_EXPECT_FALSE(test, l->joinable);
	qimg_meta_start(dev, &h, QIMG_CREDITS_LINK);
	ret = qimg_meta_stop(&h, qimg_alloc_link(&h, l, 0));
	mutex_unlock(&dev->meta_lock);
	wake_up_all(&dev->inflight_wq);
	KUNIT_EXPECT_EQ(test, ret, 0);

	/* The synchronous path's allocations take no riders. */
	KUNIT_ASSERT_EQ(test, qimg_alloc_begin(dev, 7 * QIMG_T_CS, 4096, s,
					       false), 0);
	KUNIT_EXPECT_FALSE(test, s->joinable);
	KUNIT_EXPECT_EQ(test, qimg_alloc_finish(dev, s, 0), 0);

	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_down(test, d);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, g, r, QIMG_T_CS),
			0);
	qimg_t_fill(w, 4096, 1);
	KUNIT_EXPECT_EQ(test, memcmp(r, w, 4096), 0);
	KUNIT_EXPECT_PTR_EQ(test, memchr_inv(r + 4096, 0, 4096), NULL);
	qimg_t_fill(w, 4096, 2);
	KUNIT_EXPECT_EQ(test, memcmp(r + 8192, w, 4096), 0);
	KUNIT_EXPECT_PTR_EQ(test, memchr_inv(r + 12288, 0, QIMG_T_CS - 12288),
			    NULL);
}

/*
 * A detach cut short after its checkpoint (the header write that clears
 * the journal bits fails, or the one that points the extension at
 * nothing): the area's clusters are free on disk already, so nothing
 * leaks.  The next attach sees a named but free area, does not use it,
 * makes a journal in clusters it references, and keeps the data; after
 * its clean detach only the image's own clusters are in use (header,
 * refcount table and block, L1, the L2 table and the data cluster).
 */
static void qimg_jdrv_detach_cut_no_leak(struct kunit *test)
{
	static const char * const cut[] = { "journal bits",
					    "journal extension" };
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u64 area, size, narea, nsize;
	unsigned int k;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	for (k = 0; k < ARRAY_SIZE(cut); k++) {
		qimg_t_make_image(test, d->file);
		qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
		qimg_t_write_cluster(test, d, 3, w);
		KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
		KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, d->file, &area, &size));
		WRITE_ONCE(qimg_journal_fail_next, cut[k]);
		qimg_t_down_failed(test, d);
		KUNIT_EXPECT_PTR_EQ_MSG(test, READ_ONCE(qimg_journal_fail_next),
					NULL, "%s not written at detach", cut[k]);
		WRITE_ONCE(qimg_journal_fail_next, NULL);
		qimg_t_expect_area_refcount(test, d->file, area, size, 0);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_disk_used(test, d->file), 6ULL,
				    "%s failed", cut[k]);

		qimg_t_up_flags(test, d, 0, 0);
		qimg_t_expect_area_taken(test, qimg_t_qdev(d));
		qimg_t_expect_cluster(test, d, 3, w, r);
		KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, d->file, &narea,
						    &nsize));
		qimg_t_down(test, d);
		qimg_t_expect_journal_gone(test, d->file, narea, nsize);
		qimg_t_expect_area_refcount(test, d->file, area, size, 0);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_disk_used(test, d->file), 6ULL,
				    "%s failed, then a clean detach", cut[k]);
	}
	qimg_t_make_image(test, d->file);
}

/*
 * An attach with a new journal cut short: before the extension names the
 * area, after it does (the journal bits fail), and a crash right after a
 * successful attach, before any commit.  The area is referenced only by
 * the journal's first transaction, so none of them leaks it; the crash
 * copy attaches with a new journal and detaches to the plain image.
 */
static void qimg_jdrv_attach_cut_no_leak(struct kunit *test)
{
	static const char * const cut[] = { "journal extension",
					    "journal bits" };
	struct qimg_t_dev *d = test->priv;
	struct qimg_t_dev c = { .index = -1 };
	unsigned int k;
	int ret;

	for (k = 0; k < ARRAY_SIZE(cut); k++) {
		qimg_t_make_image(test, d->file);
		WRITE_ONCE(qimg_journal_fail_next, cut[k]);
		ret = qimg_t_attach_flags(test, d->file, QIMG_ATTACH_JOURNAL, 0);
		WRITE_ONCE(qimg_journal_fail_next, NULL);
		KUNIT_EXPECT_EQ_MSG(test, ret, -EIO, "%s fails", cut[k]);
		if (ret >= 0)
			KUNIT_EXPECT_EQ(test, qimg_detach(ret), 0);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_disk_used(test, d->file), 4ULL,
				    "%s failed", cut[k]);
		/* The next attach works. */
		qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
		qimg_t_expect_area_taken(test, qimg_t_qdev(d));
		qimg_t_down(test, d);
		KUNIT_EXPECT_EQ(test, qimg_t_disk_used(test, d->file), 4ULL);
	}

	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	c.file = qimg_t_crash_copy(test, d->file);
	qimg_t_down(test, d);
	KUNIT_EXPECT_EQ(test, qimg_t_disk_used(test, c.file), 4ULL);
	KUNIT_EXPECT_NE(test, qimg_t_autoclear(test, c.file) &
			QIMG_AUTOCLEAR_JOURNAL_VALID, 0ULL);
	ret = qimg_t_crash_cycle(test, &c);
	KUNIT_EXPECT_EQ(test, ret, 0);
	KUNIT_EXPECT_EQ(test, qimg_t_disk_used(test, c.file), 4ULL);
	qimg_t_expect_journal_gone(test, c.file, 0, QIMG_JRNL_DEFAULT_SIZE);
	qimg_t_crash_drop(c.file);
	qimg_t_make_image(test, d->file);
}

/* Clusters in use on disk, over every refcount block the table names. */
static u64 qimg_t_disk_used_all(struct kunit *test, struct file *f)
{
	__be16 *rb = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u64 rt = qimg_t_pread64(test, f, 48), t, i, n = 0;
	u32 rtc;

	KUNIT_ASSERT_NOT_NULL(test, rb);
	qimg_t_pread(test, f, &rtc, 4, 56);
	for (t = 0; t < be32_to_cpu((__force __be32)rtc) * QIMG_T_CS / 8; t++) {
		u64 off = qimg_t_pread64(test, f, rt + 8 * t);

		if (!off)
			continue;
		qimg_t_pread(test, f, rb, QIMG_T_CS, off);
		for (i = 0; i < QIMG_T_CS / 2; i++)
			n += rb[i] != 0;
	}
	kunit_kfree(test, rb);
	return n;
}

/* Every 50th cluster free: no run of 64 where the one block exists. */
static u64 qimg_t_fragment(struct kunit *test, struct file *f, __be16 *rb)
{
	loff_t pos = 2 * QIMG_T_CS;
	u64 i;

	for (i = 0; i < QIMG_T_CS / 2; i++)
		rb[i] = cpu_to_be16(i < 4 || i % 50 ? 1 : 0);
	KUNIT_ASSERT_EQ(test, kernel_write(f, rb, QIMG_T_CS, &pos),
			(ssize_t)QIMG_T_CS);
	return qimg_t_disk_used_all(test, f);
}

/*
 * No run of free clusters where refcount blocks exist (every cluster the
 * one block covers but every 50th has refcount 1): a new refcount block
 * is made past the end, and the area is a free run it covers, referenced
 * only in the journal's first transaction as usual.  So an attach cut
 * short before the extension names the area leaks nothing but leaves
 * that refcount block (in use, named by the table); the journal works;
 * a clean detach frees the area.
 */
static void qimg_jdrv_area_fallback(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	__be16 *rb = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u64 area, size, i, used;
	int ret;

	KUNIT_ASSERT_NOT_NULL(test, rb);
	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	used = qimg_t_fragment(test, d->file, rb);
	WRITE_ONCE(qimg_journal_fail_next, "journal extension");
	ret = qimg_t_attach_flags(test, d->file, QIMG_ATTACH_JOURNAL, 0);
	WRITE_ONCE(qimg_journal_fail_next, NULL);
	KUNIT_EXPECT_EQ(test, ret, -EIO);
	if (ret >= 0)
		KUNIT_EXPECT_EQ(test, qimg_detach(ret), 0);
	KUNIT_EXPECT_EQ(test, qimg_t_disk_used_all(test, d->file), used + 1);

	qimg_t_make_image(test, d->file);
	used = qimg_t_fragment(test, d->file, rb);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	qimg_t_expect_area_taken(test, qimg_t_qdev(d));
	KUNIT_ASSERT_TRUE(test, qimg_t_jext(test, d->file, &area, &size));
	KUNIT_EXPECT_GE(test, area, (u64)QIMG_T_CS / 2 * QIMG_T_CS);
	qimg_t_write_cluster(test, d, 3, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_expect_cluster(test, d, 3, w, r);
	qimg_t_down(test, d);
	qimg_t_expect_journal_gone(test, d->file, 0, size);
	qimg_t_up_flags(test, d, QIMG_ATTACH_NO_JOURNAL, 0);
	qimg_t_expect_cluster(test, d, 3, w, r);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get_host(qimg_t_qdev(d), area, &i), 0);
	KUNIT_EXPECT_EQ(test, i, 0ULL);
	qimg_t_down(test, d);
	/* The new block, guest cluster 3, and the L2 table for it. */
	KUNIT_EXPECT_EQ(test, qimg_t_disk_used_all(test, d->file), used + 3);
	qimg_t_make_image(test, d->file);
}

static struct completion qimg_t_commit_held, qimg_t_commit_go;

/* The journal write hook: hold the first commit until the test says go. */
static void qimg_t_hold_commit(struct qimg_device *dev)
{
	WRITE_ONCE(qimg_journal_write_hook, NULL);
	complete(&qimg_t_commit_held);
	wait_for_completion(&qimg_t_commit_go);
}

static void qimg_t_flush_done(struct bio *bio)
{
	complete(bio->bi_private);
}

static struct bio *qimg_t_flush_async(struct qimg_t_dev *d,
				      struct completion *done)
{
	struct bio *bio = bio_alloc(d->bdev, 0, REQ_OP_WRITE | REQ_PREFLUSH,
				    GFP_KERNEL);

	bio->bi_private = done;
	bio->bi_end_io = qimg_t_flush_done;
	submit_bio(bio);
	return bio;
}

/*
 * A guest flush that comes while an interval commit is under way, with
 * nothing new to seal, is covered by that commit's two syncs: both start
 * after the flush came.  One commit, one guest flush, two device
 * barriers (not a third sync for the flush).
 */
static void qimg_jdrv_flush_during_commit(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	DECLARE_COMPLETION_ONSTACK(f1);
	struct qimg_journal *j;
	struct bio *b1;
	s64 barriers, flushes, commits;
	int i;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	j = qimg_t_qdev(d)->journal;
	qimg_t_write_cluster(test, d, 3, w);
	init_completion(&qimg_t_commit_held);
	init_completion(&qimg_t_commit_go);
	barriers = atomic64_read(&j->st_barriers);
	flushes = atomic64_read(&j->st_flushes);
	commits = atomic64_read(&j->st_commits);
	WRITE_ONCE(qimg_journal_write_hook, qimg_t_hold_commit);
	/* The interval expires now. */
	mod_delayed_work(j->wq, &j->commit_work, 0);
	if (!wait_for_completion_timeout(&qimg_t_commit_held, 30 * HZ)) {
		WRITE_ONCE(qimg_journal_write_hook, NULL);
		complete_all(&qimg_t_commit_go);
		KUNIT_FAIL(test, "the interval commit did not start");
	}
	b1 = qimg_t_flush_async(d, &f1);
	for (i = 0; i < 250 && atomic64_read(&j->st_flushes) < flushes + 1; i++)
		msleep(20);
	KUNIT_EXPECT_EQ_MSG(test, atomic64_read(&j->st_flushes), flushes + 1,
			    "the flush did not come during the commit");
	complete_all(&qimg_t_commit_go);
	KUNIT_EXPECT_NE(test, wait_for_completion_timeout(&f1, 30 * HZ), 0UL);
	KUNIT_EXPECT_EQ(test, b1->bi_status, BLK_STS_OK);
	bio_put(b1);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_commits) - commits, 1);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_barriers) - barriers, 2);
	qimg_t_down(test, d);
}

/*
 * One barrier per commit (section 5.1, "Commit protocol"): once a sync has
 * made the grown file size durable, allocating writes into fresh clusters
 * (holes the guest saw zeros in) and a flush cost one device barrier, and
 * a crash copy replays that commit, also with the data of one of them
 * lost (its hole reads as zeros, as before the write).  A discard alone
 * needs no ordering either.  A write into a freed and reused cluster
 * (old contents on disk) is ordered again: two barriers.
 */
static void qimg_jdrv_single_sync(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_t_dev c = { .index = -1 };
	struct qimg_device *dev;
	struct qimg_journal *j;
	s64 barriers, single, commits;
	u64 freed, lost, i;
	loff_t pos;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	dev = qimg_t_qdev(d);
	j = dev->journal;
	KUNIT_ASSERT_NOT_NULL(test, j);
	qimg_t_write_cluster(test, d, 1, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_EXPECT_EQ(test, (u64)atomic64_read(&j->synced_size),
			(u64)i_size_read(file_inode(d->file)));

	barriers = atomic64_read(&j->st_barriers);
	single = atomic64_read(&j->st_single_sync);
	commits = atomic64_read(&j->st_commits);
	for (i = 2; i < 5; i++)
		qimg_t_write_cluster(test, d, i, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_commits) - commits, 1);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_single_sync) - single, 1);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_barriers) - barriers, 1);
	c.file = qimg_t_crash_copy(test, d->file);
	/* The data of guest cluster 3 never reached the disk. */
	lost = qimg_t_host_of(test, dev, 3);
	KUNIT_ASSERT_NE(test, lost, 0ULL);
	memset(r, 0, 4096);
	pos = lost;
	KUNIT_ASSERT_EQ(test, kernel_write(c.file, r, 4096, &pos), 4096);

	/* A discard: no data to order. */
	freed = qimg_t_host_of(test, dev, 1);
	barriers = atomic64_read(&j->st_barriers);
	single = atomic64_read(&j->st_single_sync);
	KUNIT_ASSERT_EQ(test, qimg_map_zero_cluster(dev, QIMG_T_CS, true), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_single_sync) - single, 1);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_barriers) - barriers, 1);
	/* Reused: its old data is on disk, so the new data goes first. */
	barriers = atomic64_read(&j->st_barriers);
	single = atomic64_read(&j->st_single_sync);
	qimg_t_write_cluster(test, d, 6, w);
	KUNIT_EXPECT_EQ(test, qimg_t_host_of(test, dev, 6), freed);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_single_sync), single);
	KUNIT_EXPECT_EQ(test, atomic64_read(&j->st_barriers) - barriers, 2);
	qimg_t_down(test, d);

	c.index = qimg_t_attach_flags(test, c.file, 0, 0);
	if (c.index < 0) {
		qimg_t_crash_drop(c.file);
		KUNIT_ASSERT_FAILURE(test, "attach of the crash copy: %d",
				     c.index);
	}
	c.bdev = qimg_t_open_bdev(test, c.index);
	KUNIT_EXPECT_GE(test, qimg_t_qdev(&c)->jrnl_replayed, 1ULL);
	qimg_t_expect_cluster(test, &c, 1, w, r);
	qimg_t_expect_cluster(test, &c, 2, w, r);
	qimg_t_expect_zero_cluster(test, &c, 3, r);
	qimg_t_expect_cluster(test, &c, 4, w, r);
	blkdev_put(c.bdev, FMODE_READ | FMODE_WRITE);
	KUNIT_EXPECT_EQ(test, qimg_detach(c.index), 0);
	qimg_t_crash_drop(c.file);
}

/*
 * Crash copies taken by a commit hook: before each journal transaction is
 * written (once @want, if set, says the state is the one of interest), up
 * to QIMG_T_HOOK_COPIES of them; hk.n counts every call that qualified.
 */
#define QIMG_T_HOOK_COPIES	4
static struct {
	struct file *src;
	struct file *copy[QIMG_T_HOOK_COPIES];
	bool (*want)(struct qimg_device *dev);
	unsigned int n;
} qimg_t_hk;

static void qimg_t_copy_hook(struct qimg_device *dev)
{
	char path[32];

	if (qimg_t_hk.want && !qimg_t_hk.want(dev))
		return;
	if (qimg_t_hk.n < QIMG_T_HOOK_COPIES) {
		snprintf(path, sizeof(path), "/qimg-kunit-hook%u.img",
			 qimg_t_hk.n);
		qimg_t_hk.copy[qimg_t_hk.n] = qimg_t_copy_file(qimg_t_hk.src,
							       path);
	}
	qimg_t_hk.n++;
}

/* Take copies of @src from the next commit on. */
static void qimg_t_hook_arm(struct file *src,
			    bool (*want)(struct qimg_device *dev))
{
	memset(&qimg_t_hk, 0, sizeof(qimg_t_hk));
	qimg_t_hk.src = src;
	qimg_t_hk.want = want;
	WRITE_ONCE(qimg_journal_write_hook, qimg_t_copy_hook);
}

/*
 * Attach a crash copy, check its size and data, detach (which puts the
 * replayed state in place) and count the clusters in use: a leak shows.
 */
static void qimg_t_grow_check(struct kunit *test, struct file *f, u64 size,
			      u64 last, u64 used, u64 replayed, u8 *w, u8 *r)
{
	struct qimg_t_dev c = { .index = -1, .file = f };

	KUNIT_ASSERT_FALSE_MSG(test, IS_ERR_OR_NULL(f), "crash copy: %ld",
			       PTR_ERR(f));
	KUNIT_EXPECT_NE(test, qimg_t_incompat(test, f) &
			QIMG_INCOMPAT_JOURNAL_DIRTY, 0ULL);
	/* The header in place is the old one: the journal carries it. */
	KUNIT_EXPECT_EQ(test, qimg_t_pread64(test, f, 24), QIMG_T_VSIZE);
	c.index = qimg_t_attach_flags(test, f, 0, 0);
	if (c.index < 0) {
		qimg_t_crash_drop(f);
		KUNIT_ASSERT_FAILURE(test, "attach of the crash copy: %d",
				     c.index);
	}
	c.bdev = qimg_t_open_bdev(test, c.index);
	KUNIT_EXPECT_EQ(test, qimg_t_qdev(&c)->jrnl_replayed, replayed);
	KUNIT_EXPECT_EQ(test, bdev_nr_bytes(c.bdev), size);
	qimg_t_expect_cluster(test, &c, 1, w, r);
	if (last)
		qimg_t_expect_cluster(test, &c, last, w, r);
	blkdev_put(c.bdev, FMODE_READ | FMODE_WRITE);
	KUNIT_EXPECT_EQ(test, qimg_detach(c.index), 0);
	KUNIT_EXPECT_EQ(test, qimg_t_pread64(test, f, 24), size);
	KUNIT_EXPECT_EQ_MSG(test, qimg_t_disk_used(test, f), used,
			    "clusters in use, size %llu", size);
	qimg_t_crash_drop(f);
}

/*
 * An online grow with the journal is atomic and leaks nothing: the L1
 * table's move (new clusters referenced, header fields, old table
 * freed) is one transaction, the size another; a crash before either
 * commit finds the state before it, after the last one the new size and
 * data written past the old end.  The header in place changes only at a
 * checkpoint; attach re-reads it after the replay.
 */
static void qimg_jdrv_grow_crash(struct kunit *test)
{
	const u64 size = 5ULL << 40, last = (size >> QIMG_T_CB) - 1;
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct file *end;
	int ret;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 0);
	qimg_t_write_cluster(test, d, 1, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_hook_arm(d->file, NULL);
	ret = qimg_resize(d->index, size);
	WRITE_ONCE(qimg_journal_write_hook, NULL);
	KUNIT_EXPECT_EQ(test, ret, 0);
	KUNIT_EXPECT_EQ(test, qimg_t_hk.n, 2u);
	qimg_t_write_cluster(test, d, last, w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	end = qimg_t_copy_file(d->file, "/qimg-kunit-grow2.img");
	qimg_t_down(test, d);

	/*
	 * Before the move (checkpointed, nothing to replay): header,
	 * reftable, refblock, L1, L2, data.
	 */
	qimg_t_grow_check(test, qimg_t_hk.copy[0], QIMG_T_VSIZE, 0, 6, 0,
			  w, r);
	/* Moved, old size: two L1 clusters, the old one free. */
	qimg_t_grow_check(test, qimg_t_hk.copy[1], QIMG_T_VSIZE, 0, 7, 1,
			  w, r);
	/* Grown and written at the new end: a second L2 and data cluster. */
	qimg_t_grow_check(test, end, size, last, 9, 3, w, r);
}

/*
 * Crash copy @n (@f, taken by a hook: maybe an ERR_PTR) attached, which
 * replays its journal, and detached, which puts the result in place.
 */
static void qimg_t_crash_replay(struct kunit *test, struct file *f,
				unsigned int n)
{
	struct qimg_t_dev c = { .index = -1, .file = f };
	int ret;

	KUNIT_ASSERT_FALSE_MSG(test, IS_ERR_OR_NULL(f), "crash copy %u: %ld",
			       n, PTR_ERR(f));
	ret = qimg_t_crash_cycle(test, &c);
	if (ret) {
		qimg_t_crash_drop(f);
		KUNIT_ASSERT_FAILURE(test, "crash copy %u: attach/detach: %d",
				     n, ret);
	}
}

/* Guest clusters of the split case: 8 in each L2 chunk (128 entries). */
static u64 qimg_t_split_cluster(unsigned int k)
{
	return (k % 8) * 128 + k / 8;
}

/*
 * A crash copy, replayed and put in place: every cluster an L2 entry
 * names has a refcount (a leak is allowed, a missing count is not).
 */
static void qimg_t_split_check(struct kunit *test, struct file *f,
			       unsigned int n)
{
	u64 l1, l2, ent, host;
	unsigned int i, bad = 0;

	qimg_t_crash_replay(test, f, n);
	l1 = qimg_t_pread64(test, f, 40);
	l2 = qimg_t_pread64(test, f, l1) & QIMG_L1E_OFFSET_MASK;
	for (i = 0; l2 && i < QIMG_T_VSIZE >> QIMG_T_CB; i++) {
		ent = qimg_t_pread64(test, f, l2 + 8 * i);
		host = ent & QIMG_L2E_OFFSET_MASK;
		if (host && !qimg_t_disk_refcount16(test, f, host) && !bad++)
			KUNIT_FAIL(test, "crash copy %u: cluster %u maps %llu, refcount 0",
				   n, i, host);
	}
	KUNIT_EXPECT_EQ_MSG(test, bad, 0u, "crash copy %u", n);
	qimg_t_crash_drop(f);
}

/*
 * A running transaction too big for one journal transaction (the 64 KiB
 * journal holds 3 blocks per transaction) is committed as several.  When
 * it frees clusters (discards over 8 L2 chunks), the refcount blocks go
 * first: a crash between two of its commits must not find a cluster
 * freed whose L2 entry still names it -- the next allocation would hand
 * it out twice.  Crash copies at the first commits' writes.
 */
static void qimg_jdrv_split_free(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u64 *host = kunit_kcalloc(test, 64, sizeof(*host), GFP_KERNEL);
	struct qimg_device *dev;
	unsigned int k, n, left = 0;
	int ret = 0;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, host);
	qimg_t_make_image(test, d->file);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, QIMG_T_CS);
	dev = qimg_t_qdev(d);
	KUNIT_ASSERT_EQ(test, dev->journal->max_tx, 3u);
	for (k = 0; k < 64; k++)
		qimg_t_write_cluster(test, d, qimg_t_split_cluster(k), w);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	for (k = 0; k < 64; k++)
		host[k] = qimg_t_host_of(test, dev, qimg_t_split_cluster(k));

	qimg_t_hook_arm(d->file, NULL);
	for (k = 0; !ret && k < 64; k++)
		ret = qimg_map_zero_cluster(dev, qimg_t_split_cluster(k) *
					    QIMG_T_CS, true);
	if (!ret)
		ret = qimg_t_flush(d->bdev);
	WRITE_ONCE(qimg_journal_write_hook, NULL);
	KUNIT_EXPECT_EQ(test, ret, 0);
	KUNIT_EXPECT_GE(test, qimg_t_hk.n, 2u);
	qimg_t_down(test, d);
	/* All of it committed and in place: every freed cluster is free. */
	for (k = 0; k < 64; k++)
		if (qimg_t_disk_refcount16(test, d->file, host[k]))
			left++;
	KUNIT_EXPECT_EQ_MSG(test, left, 0u, "discarded clusters still counted");
	for (n = 0; n < min_t(unsigned int, qimg_t_hk.n,
			      QIMG_T_HOOK_COPIES); n++)
		qimg_t_split_check(test, qimg_t_hk.copy[n], n);
}

/* Copies only once the refcount table moved (in memory). */
static bool qimg_t_rt_moved(struct qimg_device *dev)
{
	return dev->top.h->refcount_table_offset != QIMG_T_SMALL_CS;
}

/* The refcount of cluster @c on disk (qimg_t_make_small(): 64 bits). */
static u64 qimg_t_small_refcount(struct kunit *test, struct file *f, u64 c)
{
	u64 rt = qimg_t_pread64(test, f, 48);
	u64 rb = qimg_t_pread64(test, f, rt + 8 * (c / 64));

	return rb ? qimg_t_pread64(test, f, rb + 8 * (c % 64)) : 0;
}

/*
 * A crash copy, replayed and put in place: the old table (cluster 1) is
 * counted exactly while the header names it, and a table the header names
 * is counted.
 */
static void qimg_t_rt_check(struct kunit *test, struct file *f,
			    unsigned int n)
{
	u64 rt;

	qimg_t_crash_replay(test, f, n);
	rt = qimg_t_pread64(test, f, 48);
	KUNIT_EXPECT_EQ_MSG(test, qimg_t_small_refcount(test, f, 1),
			    rt == QIMG_T_SMALL_CS ? 1ULL : 0ULL,
			    "crash copy %u: refcount of the old table, the header names %llu",
			    n, rt);
	KUNIT_EXPECT_EQ_MSG(test, qimg_t_small_refcount(test, f,
							rt / QIMG_T_SMALL_CS),
			    1ULL, "crash copy %u: refcount of the table at %llu",
			    n, rt);
	qimg_t_crash_drop(f);
}

/*
 * The refcount table moves with the journal on: one transaction holds
 * the new refcount blocks, the header's new table fields (a record) and
 * the old table's free.  A crash before its commit finds the old table,
 * counted; after it the new one, and the old one free -- never the new
 * table named with the old one still counted (a leak), as when the header
 * was switched in place before the free was committed.
 */
static void qimg_jdrv_reftable_crash(struct kunit *test)
{
	const u64 vsize = 4ULL << 20;
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	unsigned int n;
	u64 off;
	int ret = 0;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_small(test, d->file, vsize);
	qimg_t_up_flags(test, d, QIMG_ATTACH_JOURNAL, 64 * 1024);
	qimg_t_hook_arm(d->file, qimg_t_rt_moved);
	for (off = 0; !ret && off < 3 * vsize / 4 &&
	     READ_ONCE(qimg_t_hk.n) < 2; off += 4096) {
		qimg_t_fill(w, 4096, off >> 12);
		ret = qimg_t_io(d->bdev, REQ_OP_WRITE, off, w, 4096);
		if (!ret && !(off & 0xffff))
			ret = qimg_t_flush(d->bdev);
	}
	if (!ret)
		ret = qimg_t_flush(d->bdev);
	WRITE_ONCE(qimg_journal_write_hook, NULL);
	KUNIT_EXPECT_EQ(test, ret, 0);
	KUNIT_EXPECT_GE(test, qimg_t_hk.n, 2u);
	qimg_t_down(test, d);
	KUNIT_EXPECT_NE(test, qimg_t_pread64(test, d->file, 48),
			(u64)QIMG_T_SMALL_CS);
	for (n = 0; n < min_t(unsigned int, qimg_t_hk.n, 2); n++)
		qimg_t_rt_check(test, qimg_t_hk.copy[n], n);
	qimg_t_make_image(test, d->file);
}

static struct kunit_case qimg_jdrv_cases[] = {
	KUNIT_CASE(qimg_jdrv_commit_on_flush),
	KUNIT_CASE(qimg_jdrv_crash_replay),
	KUNIT_CASE(qimg_jdrv_checkpoint_wrap),
	KUNIT_CASE(qimg_jdrv_revoke),
	KUNIT_CASE(qimg_jdrv_attach_no_journal),
	KUNIT_CASE(qimg_jdrv_write_fails),
	KUNIT_CASE(qimg_jdrv_reads_after_failed_commit),
	KUNIT_CASE(qimg_jdrv_discard_no_leak),
	KUNIT_CASE(qimg_jdrv_reservation_no_leak),
	KUNIT_CASE(qimg_jdrv_alloc_riders),
	KUNIT_CASE(qimg_jdrv_detach_cut_no_leak),
	KUNIT_CASE(qimg_jdrv_attach_cut_no_leak),
	KUNIT_CASE(qimg_jdrv_flush_during_commit),
	KUNIT_CASE(qimg_jdrv_single_sync),
	KUNIT_CASE(qimg_jdrv_area_fallback),
	KUNIT_CASE(qimg_jdrv_grow_crash),
	KUNIT_CASE(qimg_jdrv_split_free),
	KUNIT_CASE(qimg_jdrv_reftable_crash),
	{}
};

static struct kunit_suite qimg_jdrv_suite = {
	.name = "qimg_jdrv",
	.init = qimg_t_dev_init,
	.exit = qimg_t_dev_exit,
	.test_cases = qimg_jdrv_cases,
};

kunit_test_suite(qimg_jdrv_suite);
