// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_dev: the whole driver, through the block layer.  Each
 * case writes a fresh qcow2 image to a tmpfs file, attaches it as a real
 * blk-mq disk with qimg_attach(), and does I/O on it with submit_bio_wait()
 * (reads of holes, allocating writes, partial-cluster writes that need
 * COW, flush), then detaches and checks what reached the file.  Under
 * KASAN and lockdep this exercises the request path the way a filesystem
 * would, without a VM.
 *
 * Built only with CONFIG_QIMG_KUNIT_DRIVER (tests/Kbuild links the driver
 * sources in); the test thread is a kthread, so the image is handed to
 * qimg_attach() through a descriptor in the kernel threads' file table.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/kthread.h>
#include <linux/sched/task.h>
#include <linux/qimg.h>
#include "qimg_kunit.h"
#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_refcount.h"
#include "qimg_map.h"
#include "qimg_rq.h"
#include "qimg_dev.h"
#include "qimg_dev_kunit.h"

/* A fresh image reads as zeros everywhere, including its last sector. */
static void qimg_dev_read_holes(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *buf = kunit_kmalloc(test, 2 * QIMG_T_CS, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, buf);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	memset(buf, 0xa5, 2 * QIMG_T_CS);
	KUNIT_EXPECT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, 0, buf,
					2 * QIMG_T_CS), 0);
	KUNIT_EXPECT_PTR_EQ(test, memchr_inv(buf, 0, 2 * QIMG_T_CS), NULL);
	KUNIT_EXPECT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ,
					QIMG_T_VSIZE - 4096, buf, 4096), 0);
	KUNIT_EXPECT_PTR_EQ(test, memchr_inv(buf, 0, 4096), NULL);
	/* Past the end: the block layer refuses, the driver never sees it. */
	KUNIT_EXPECT_NE(test, qimg_t_io(d->bdev, REQ_OP_READ, QIMG_T_VSIZE,
					buf, 4096), 0);
}

/*
 * Allocating writes: a whole cluster, then 4 KiB in the middle of another
 * (the rest of that cluster must read as zeros: COW from nothing), then a
 * rewrite in place; flush, detach, re-attach, and everything is still there.
 */
static void qimg_dev_write_read(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	const u64 c5 = 5ULL * QIMG_T_CS, mid = 9ULL * QIMG_T_CS + 12288;
	struct qimg_header *h;
	struct qimg_err err = { };
	loff_t pos = 0;
	u64 l1e;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);

	qimg_t_fill(w, QIMG_T_CS, 1);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, c5, w,
					QIMG_T_CS), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, c5, r,
					QIMG_T_CS), 0);
	KUNIT_EXPECT_EQ(test, memcmp(w, r, QIMG_T_CS), 0);

	qimg_t_fill(w, 4096, 2);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, mid, w, 4096),
			0);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ,
					9ULL * QIMG_T_CS, r, QIMG_T_CS), 0);
	KUNIT_EXPECT_PTR_EQ(test, memchr_inv(r, 0, 12288), NULL);
	KUNIT_EXPECT_EQ(test, memcmp(r + 12288, w, 4096), 0);
	KUNIT_EXPECT_PTR_EQ(test, memchr_inv(r + 16384, 0,
					     QIMG_T_CS - 16384), NULL);

	/* Overwrite part of the first cluster in place. */
	qimg_t_fill(w, 1024, 3);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, c5 + 512, w,
					1024), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_down(test, d);

	/* The file now maps guest cluster 5 through an L2 table. */
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, h);
	KUNIT_ASSERT_EQ(test, kernel_read(d->file, r, QIMG_T_CS, &pos),
			(ssize_t)QIMG_T_CS);
	{
		u64 fsize = i_size_read(file_inode(d->file));
		int dret = qimg_header_decode(r, QIMG_T_CS, fsize, h, &err);

		KUNIT_ASSERT_EQ_MSG(test, dret, 0, "image after detach: %s",
				    err.msg);
	}
	KUNIT_EXPECT_EQ(test, h->incompatible_features &
			QIMG_INCOMPAT_DIRTY, 0ULL);
	pos = h->l1_table_offset;
	KUNIT_ASSERT_EQ(test, kernel_read(d->file, &l1e, 8, &pos), 8L);
	KUNIT_EXPECT_NE(test, be64_to_cpu((__force __be64)l1e) &
			QIMG_L1E_OFFSET_MASK, 0ULL);

	/* Re-attach: the data survived. */
	qimg_t_up(test, d);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, c5, r,
					QIMG_T_CS), 0);
	qimg_t_fill(w, QIMG_T_CS, 1);
	qimg_t_fill(w + 512, 1024, 3);
	KUNIT_EXPECT_EQ(test, memcmp(w, r, QIMG_T_CS), 0);
}

/* Many allocating writes in flight at once, to different clusters. */
#define QIMG_T_NR_BIOS	32

struct qimg_t_batch {
	atomic_t left;
	atomic_t errors;
	struct completion done;
};

static void qimg_t_end_io(struct bio *bio)
{
	struct qimg_t_batch *b = bio->bi_private;

	if (bio->bi_status)
		atomic_inc(&b->errors);
	bio_put(bio);
	if (atomic_dec_and_test(&b->left))
		complete(&b->done);
}

static void qimg_dev_parallel_writes(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	struct qimg_t_batch b;
	struct bio *bio;
	u8 *w, *r;
	int i;

	w = kunit_kmalloc(test, QIMG_T_NR_BIOS * PAGE_SIZE, GFP_KERNEL);
	r = kunit_kmalloc(test, PAGE_SIZE, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);

	atomic_set(&b.left, QIMG_T_NR_BIOS);
	atomic_set(&b.errors, 0);
	init_completion(&b.done);
	for (i = 0; i < QIMG_T_NR_BIOS; i++) {
		u8 *p = w + i * PAGE_SIZE;

		qimg_t_fill(p, PAGE_SIZE, i);
		bio = bio_alloc(d->bdev, 1, REQ_OP_WRITE, GFP_KERNEL);
		/* Every third one shares a cluster with the previous one. */
		bio->bi_iter.bi_sector = ((u64)(i - i / 3) * QIMG_T_CS +
					  (i % 3) * PAGE_SIZE) >> SECTOR_SHIFT;
		KUNIT_ASSERT_EQ(test, bio_add_page(bio, virt_to_page(p),
						   PAGE_SIZE, 0), PAGE_SIZE);
		bio->bi_private = &b;
		bio->bi_end_io = qimg_t_end_io;
		submit_bio(bio);
	}
	wait_for_completion(&b.done);
	KUNIT_EXPECT_EQ(test, atomic_read(&b.errors), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);

	for (i = 0; i < QIMG_T_NR_BIOS; i++) {
		u64 at = (u64)(i - i / 3) * QIMG_T_CS + (i % 3) * PAGE_SIZE;

		KUNIT_ASSERT_EQ(test,
				qimg_t_io(d->bdev, REQ_OP_READ, at, r, PAGE_SIZE),
				0);
		KUNIT_EXPECT_EQ_MSG(test, memcmp(r, w + i * PAGE_SIZE,
						 PAGE_SIZE), 0, "bio %d", i);
	}
}

/* A read-only attach refuses writes and leaves the file untouched. */
static void qimg_dev_read_only(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	struct qimg_attach a = { .size = sizeof(a),
				 .flags = QIMG_ATTACH_READ_ONLY };
	u8 *buf = kunit_kzalloc(test, PAGE_SIZE, GFP_KERNEL);
	struct device *dev;
	dev_t devt;
	int fd;

	KUNIT_ASSERT_NOT_NULL(test, buf);
	qimg_t_make_image(test, d->file);
	fd = get_unused_fd_flags(O_CLOEXEC);
	KUNIT_ASSERT_GE(test, fd, 0);
	fd_install(fd, get_file(d->file));
	a.fd = fd;
	d->index = qimg_attach(&a, NULL, NULL);
	close_fd(fd);
	KUNIT_ASSERT_GE(test, d->index, 0);

	snprintf(buf, 16, "qimg%d", d->index);
	dev = class_find_device_by_name(&block_class, buf);
	KUNIT_ASSERT_NOT_NULL(test, dev);
	devt = dev->devt;
	put_device(dev);
	d->bdev = blkdev_get_by_dev(devt, FMODE_READ, NULL);
	KUNIT_ASSERT_FALSE(test, IS_ERR(d->bdev));
	KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
	KUNIT_EXPECT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, 0, buf,
					PAGE_SIZE), 0);
	/*
	 * The block layer only warns about writes to a read-only disk (old
	 * LVM tools do it); refusing them is the driver's job.
	 */
	memset(buf, 0x5a, PAGE_SIZE);
	KUNIT_EXPECT_NE(test, qimg_t_io(d->bdev, REQ_OP_WRITE, 0, buf,
					PAGE_SIZE), 0);
	blkdev_put(d->bdev, FMODE_READ);
	d->bdev = NULL;
	KUNIT_EXPECT_EQ(test, i_size_read(file_inode(d->file)),
			(loff_t)(4 * QIMG_T_CS));
}

/*
 * Damaged images are refused at attach time, with the error of the format
 * core, and leave nothing behind (a second attach of a good image works).
 */
static void qimg_dev_attach_corrupt(struct kunit *test)
{
	static const struct { unsigned int off, width; u64 val; int err; }
	damage[] = {
		{ 0, 4, 0x514649fa, -EINVAL },		/* magic */
		{ 40, 8, 3 * QIMG_T_CS + 512, -EUCLEAN },	/* L1 offset */
		{ 40, 8, 100ULL * QIMG_T_CS, -EUCLEAN },	/* L1 past EOF */
		{ 56, 4, 0, -EUCLEAN },			/* no reftable */
		{ 72, 8, 1ULL << 20, -EOPNOTSUPP },	/* unknown feature */
	};
	struct qimg_t_dev *d = test->priv;
	loff_t pos;
	__be64 v64;
	__be32 v32;
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(damage); i++) {
		qimg_t_make_image(test, d->file);
		pos = damage[i].off;
		if (damage[i].width == 8) {
			v64 = cpu_to_be64(damage[i].val);
			kernel_write(d->file, &v64, 8, &pos);
		} else {
			v32 = cpu_to_be32((u32)damage[i].val);
			kernel_write(d->file, &v32, 4, &pos);
		}
		ret = qimg_t_attach(test, d->file);
		if (ret >= 0)
			qimg_detach(ret);
		KUNIT_EXPECT_EQ_MSG(test, ret, damage[i].err, "damage %u", i);
	}
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
}

static void qimg_t_flush_end(struct bio *bio)
{
	complete(bio->bi_private);
}

/*
 * A discard may release a cluster while I/O that looked it up earlier is
 * still in flight; its refcount must not drop (so it cannot be handed to
 * another guest cluster) until that I/O is done.  The test plays the
 * in-flight I/O with qimg_io_enter(): the flush that applies the free
 * must wait for it, then free the cluster.
 */
static void qimg_dev_discard_waits_for_io(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	const u64 c7 = 7ULL * QIMG_T_CS;
	DECLARE_COMPLETION_ONSTACK(flushed);
	struct qimg_device *dev;
	struct qimg_l2_entry e;
	struct bio *bio;
	u64 rc = 0;
	int epoch;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	dev = d->bdev->bd_disk->private_data;

	qimg_t_fill(w, QIMG_T_CS, 4);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, c7, w,
					QIMG_T_CS), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	KUNIT_ASSERT_EQ(test, qimg_map_lookup(&dev->top, c7, &e), 0);
	KUNIT_ASSERT_EQ(test, e.type, QIMG_CLUSTER_NORMAL);

	epoch = qimg_io_enter(dev);
	bio = bio_alloc(d->bdev, 0, REQ_OP_DISCARD, GFP_KERNEL);
	bio->bi_iter.bi_sector = c7 >> SECTOR_SHIFT;
	bio->bi_iter.bi_size = QIMG_T_CS;
	KUNIT_ASSERT_EQ(test, submit_bio_wait(bio), 0);
	bio_put(bio);
	bio = bio_alloc(d->bdev, 0, REQ_OP_WRITE | REQ_PREFLUSH, GFP_KERNEL);
	bio->bi_private = &flushed;
	bio->bi_end_io = qimg_t_flush_end;
	submit_bio(bio);
	KUNIT_EXPECT_EQ(test, wait_for_completion_timeout(&flushed,
							  HZ / 5), 0UL);
	qimg_io_exit(dev, epoch);
	KUNIT_ASSERT_NE(test, wait_for_completion_timeout(&flushed, 30 * HZ),
			0UL);
	KUNIT_EXPECT_EQ(test, bio->bi_status, BLK_STS_OK);
	bio_put(bio);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get_host(dev, e.host_offset, &rc),
			0);
	KUNIT_EXPECT_EQ(test, rc, 0ULL);
}

/*
 * The I/O-section contract behind deferred frees, raced: readers enter,
 * load the current object, dawdle, check it was not freed, and exit; the
 * writer swaps the object, drains, and only then marks the old one freed
 * (as qimg_apply_frees() drops a refcount).  A reader must never see its
 * object freed, however enter() interleaves with the drains.
 */
struct qimg_t_race {
	struct qimg_device *dev;
	atomic_t obj_freed[2];
	int cur;			/* READ_ONCE: the live object */
	atomic_t violations;
	atomic_t sections;
	bool stop;
};

static int qimg_t_race_reader(void *arg)
{
	struct qimg_t_race *r = arg;
	unsigned int n = 0;

	while (!READ_ONCE(r->stop)) {
		int idx = qimg_io_enter(r->dev);
		int o = READ_ONCE(r->cur);

		if (++n % 3)
			ndelay(200 * (n % 7));
		else
			cond_resched();
		if (atomic_read(&r->obj_freed[o]))
			atomic_inc(&r->violations);
		qimg_io_exit(r->dev, idx);
		atomic_inc(&r->sections);
	}
	return 0;
}

static void qimg_dev_io_drain_race(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	struct task_struct *t[4];
	struct qimg_t_race *r;
	unsigned long end;
	int i, swaps = 0;

	r = kunit_kzalloc(test, sizeof(*r), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	r->dev = d->bdev->bd_disk->private_data;
	for (i = 0; i < ARRAY_SIZE(t); i++) {
		t[i] = kthread_run(qimg_t_race_reader, r, "qimg_race%d", i);
		KUNIT_ASSERT_FALSE(test, IS_ERR(t[i]));
		get_task_struct(t[i]);
	}
	end = jiffies + 2 * HZ;
	while (time_before(jiffies, end)) {
		int old = r->cur;

		mutex_lock(&r->dev->meta_lock);
		atomic_set(&r->obj_freed[!old], 0);
		WRITE_ONCE(r->cur, !old);
		qimg_io_drain(r->dev);
		atomic_set(&r->obj_freed[old], 1);
		mutex_unlock(&r->dev->meta_lock);
		swaps++;
		cond_resched();
	}
	WRITE_ONCE(r->stop, true);
	for (i = 0; i < ARRAY_SIZE(t); i++) {
		kthread_stop(t[i]);
		put_task_struct(t[i]);
	}
	kunit_info(test, "%d drains, %d read sections\n", swaps,
		   atomic_read(&r->sections));
	KUNIT_EXPECT_GT(test, swaps, 10);
	KUNIT_EXPECT_EQ(test, atomic_read(&r->violations), 0);
}

/*
 * Overlap check: refcount table entry 0 cleared, so the refcount block
 * the next allocation creates would cover and land in cluster 0.  Guest
 * cluster 0 is written first, so that the write to cluster 1 needs one
 * data cluster only.  The write fails, the device turns read-only, and
 * the header is unchanged but for the corrupt bit.
 */
static void qimg_dev_overlap_reftable0(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kzalloc(test, 4096, GFP_KERNEL);
	u8 *before = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u8 *after = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, before);
	KUNIT_ASSERT_NOT_NULL(test, after);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	memset(w, 0x5a, 4096);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, 0, w, 4096), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_down(test, d);
	qimg_t_pwrite64(d->file, QIMG_T_CS, 0);
	qimg_t_pread(test, d->file, before, QIMG_T_CS, 0);
	qimg_t_up(test, d);
	KUNIT_EXPECT_NE(test, qimg_t_io(d->bdev, REQ_OP_WRITE, QIMG_T_CS, w,
					4096), 0);
	KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
	qimg_t_flush(d->bdev);
	qimg_t_down(test, d);
	qimg_t_pread(test, d->file, after, QIMG_T_CS, 0);
	KUNIT_EXPECT_EQ(test, memcmp(before, after, 72), 0);
	KUNIT_EXPECT_EQ(test, memcmp(before + 80, after + 80, QIMG_T_CS - 80),
			0);
	KUNIT_EXPECT_EQ(test, after[79] & 2, 2);	/* corrupt bit */
	qimg_t_make_image(test, d->file);
}

/*
 * Overlap check: guest cluster 0's L2 entry (COPIED, normal or
 * zero-allocated) pointing at the refcount table, the refcount block or
 * the L1 table.  A write there fails and leaves that cluster unchanged.
 */
static void qimg_dev_overlap_entry(struct kunit *test)
{
	static const u64 targets[] = { 1, 2, 3 };	/* clusters */
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u8 *before = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u8 *after = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	unsigned int i, zero;
	__be64 l1e;
	u64 l2, tgt;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, before);
	KUNIT_ASSERT_NOT_NULL(test, after);
	for (zero = 0; zero < 2; zero++) {
		for (i = 0; i < ARRAY_SIZE(targets); i++) {
			tgt = targets[i] * QIMG_T_CS;
			qimg_t_make_image(test, d->file);
			qimg_t_up(test, d);
			qimg_t_fill(w, QIMG_T_CS, 7);
			KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE,
							0, w, QIMG_T_CS), 0);
			KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
			qimg_t_down(test, d);

			qimg_t_pread(test, d->file, &l1e, 8, 3 * QIMG_T_CS);
			l2 = be64_to_cpu(l1e) & QIMG_L1E_OFFSET_MASK;
			KUNIT_ASSERT_NE(test, l2, 0ULL);
			qimg_t_pwrite64(d->file, l2, QIMG_OFLAG_COPIED | tgt |
					(zero ? QIMG_OFLAG_ZERO : 0));
			qimg_t_pread(test, d->file, before, QIMG_T_CS, tgt);
			qimg_t_up(test, d);
			/* A whole cluster (fast path) and a partial one. */
			KUNIT_EXPECT_NE_MSG(test, qimg_t_io(d->bdev,
							    REQ_OP_WRITE, 0, w,
							    QIMG_T_CS), 0,
					    "zero %u, cluster %llu", zero,
					    targets[i]);
			KUNIT_EXPECT_NE(test, qimg_t_io(d->bdev, REQ_OP_WRITE,
							8192, w, 4096), 0);
			KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
			qimg_t_down(test, d);
			qimg_t_pread(test, d->file, after, QIMG_T_CS, tgt);
			KUNIT_EXPECT_EQ_MSG(test, memcmp(before, after,
							 QIMG_T_CS), 0,
					    "zero %u, cluster %llu changed",
					    zero, targets[i]);
		}
	}
	qimg_t_make_image(test, d->file);
}

/*
 * Requests over several clusters: written and read back in one request
 * while the clusters lie back to back in the file and after guest
 * clusters 1 and 3 swapped host clusters (not contiguous any more).  Then
 * cluster 1's entry names the L1 table: a write over clusters 0-1 fails
 * and leaves the table unchanged.  (UML's file system has no direct I/O,
 * so this runs the synchronous path; the e2e case "io: requests over
 * several clusters" runs the same steps through the one-kiocb fast path.)
 */
static void qimg_dev_multi_cluster(struct kunit *test)
{
	const unsigned int len = 4 * QIMG_T_CS;
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, len, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, len, GFP_KERNEL);
	u8 *before = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u64 l2, c1, c3, pass;
	__be64 e;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	KUNIT_ASSERT_NOT_NULL(test, before);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	for (pass = 0; pass < 2; pass++) {
		qimg_t_fill(w, len, (u8)(pass + 3));
		KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, 0, w,
						len), 0);
		memset(r, 0x5a, len);
		KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, 0, r,
						len), 0);
		KUNIT_EXPECT_EQ_MSG(test, memcmp(r, w, len), 0, "pass %llu",
				    pass);
	}
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_down(test, d);

	/* Swap the host clusters of guest clusters 1 and 3. */
	qimg_t_pread(test, d->file, &e, 8, 3 * QIMG_T_CS);
	l2 = be64_to_cpu(e) & QIMG_L1E_OFFSET_MASK;
	KUNIT_ASSERT_NE(test, l2, 0ULL);
	qimg_t_pread(test, d->file, &e, 8, l2 + 8);
	c1 = be64_to_cpu(e);
	qimg_t_pread(test, d->file, &e, 8, l2 + 24);
	c3 = be64_to_cpu(e);
	KUNIT_EXPECT_EQ(test, c3 & QIMG_L2E_OFFSET_MASK,
			(c1 & QIMG_L2E_OFFSET_MASK) + 2 * QIMG_T_CS);
	qimg_t_pwrite64(d->file, l2 + 8, c3);
	qimg_t_pwrite64(d->file, l2 + 24, c1);
	qimg_t_up(test, d);
	qimg_t_fill(w, len, 3 + 1);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, 0, r, len), 0);
	KUNIT_EXPECT_EQ(test, memcmp(r, w, QIMG_T_CS), 0);
	KUNIT_EXPECT_EQ(test, memcmp(r + QIMG_T_CS, w + 3 * QIMG_T_CS,
				     QIMG_T_CS), 0);
	KUNIT_EXPECT_EQ(test, memcmp(r + 3 * QIMG_T_CS, w + QIMG_T_CS,
				     QIMG_T_CS), 0);
	qimg_t_fill(w, len, 9);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, 0, w, len), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, 0, r, len), 0);
	KUNIT_EXPECT_EQ(test, memcmp(r, w, len), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_down(test, d);

	/* Guest cluster 1 names the L1 table (host cluster 3). */
	qimg_t_pwrite64(d->file, l2 + 8, QIMG_OFLAG_COPIED | 3 * QIMG_T_CS);
	qimg_t_pread(test, d->file, before, QIMG_T_CS, 3 * QIMG_T_CS);
	qimg_t_up(test, d);
	KUNIT_EXPECT_NE(test, qimg_t_io(d->bdev, REQ_OP_WRITE, 0, w,
					2 * QIMG_T_CS), 0);
	KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
	qimg_t_down(test, d);
	qimg_t_pread(test, d->file, r, QIMG_T_CS, 3 * QIMG_T_CS);
	KUNIT_EXPECT_EQ(test, memcmp(before, r, QIMG_T_CS), 0);
	qimg_t_make_image(test, d->file);
}

/* Does block device qimgN exist? */
static bool qimg_t_disk_exists(int index)
{
	struct device *d;
	char name[16];

	snprintf(name, sizeof(name), "qimg%d", index);
	d = class_find_device_by_name(&block_class, name);
	put_device(d);
	return d;
}

/*
 * An autoclear device whose last opener closes it while the attach is
 * still running (udev probing the new disk inside device_add_disk())
 * stays: tearing it down then would free it under the attach.  Once the
 * attach is done, the last close detaches it.
 */
static void qimg_dev_autoclear_attaching(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	struct qimg_device *dev;
	int i;

	qimg_t_make_image(test, d->file);
	d->index = qimg_t_attach_flags(test, d->file, QIMG_ATTACH_AUTOCLEAR, 0);
	KUNIT_ASSERT_GE(test, d->index, 0);
	d->bdev = qimg_t_open_bdev(test, d->index);
	dev = d->bdev->bd_disk->private_data;
	/* As in the attach's last steps. */
	WRITE_ONCE(dev->attaching, true);
	blkdev_put(d->bdev, FMODE_READ | FMODE_WRITE);
	d->bdev = NULL;
	for (i = 0; i < 25 && qimg_t_disk_exists(d->index); i++)
		msleep(20);
	if (!qimg_t_disk_exists(d->index)) {
		d->index = -1;
		KUNIT_FAIL(test, "detached while still attaching");
		return;
	}
	WRITE_ONCE(dev->attaching, false);
	d->bdev = qimg_t_open_bdev(test, d->index);
	blkdev_put(d->bdev, FMODE_READ | FMODE_WRITE);
	d->bdev = NULL;
	for (i = 0; i < 250 && qimg_t_disk_exists(d->index); i++)
		msleep(20);
	KUNIT_EXPECT_FALSE_MSG(test, qimg_t_disk_exists(d->index),
			       "not detached at the last close");
	if (!qimg_t_disk_exists(d->index))
		d->index = -1;
}

/*
 * A request's data as an iterator over its bio's bvec array: one bvec
 * spanning two pages (bio_add_page() merges physically contiguous pages)
 * is one segment, not two.  With two, advancing to the end of the data
 * reads the length of an entry past the array (KASAN: out of bounds), as
 * a 128 KiB readahead of contiguous pages did in the guest.  A bio partly
 * done starts inside its first bvec.
 */
static void qimg_dev_bio_iter_multipage(struct kunit *test)
{
	struct bio_vec *bv = kunit_kmalloc_array(test, 1, sizeof(*bv),
						 GFP_KERNEL);
	struct page *pg = alloc_pages(GFP_KERNEL, 1);
	struct iov_iter it;
	struct bio bio;

	KUNIT_ASSERT_NOT_NULL(test, bv);
	KUNIT_ASSERT_NOT_NULL(test, pg);
	bio_init(&bio, NULL, bv, 1, REQ_OP_READ);
	KUNIT_ASSERT_EQ(test, bio_add_page(&bio, pg, 2 * PAGE_SIZE, 0),
			2 * PAGE_SIZE);
	qimg_bio_iter(&it, &bio, false);
	KUNIT_EXPECT_EQ(test, it.nr_segs, 1UL);
	KUNIT_EXPECT_EQ(test, iov_iter_count(&it), 2 * PAGE_SIZE);
	iov_iter_advance(&it, 2 * PAGE_SIZE);
	KUNIT_EXPECT_EQ(test, iov_iter_count(&it), 0UL);

	bio_advance(&bio, PAGE_SIZE);
	qimg_bio_iter(&it, &bio, false);
	KUNIT_EXPECT_EQ(test, it.nr_segs, 1UL);
	KUNIT_EXPECT_EQ(test, it.iov_offset, PAGE_SIZE);
	KUNIT_EXPECT_EQ(test, iov_iter_count(&it), PAGE_SIZE);
	iov_iter_advance(&it, PAGE_SIZE);
	KUNIT_EXPECT_EQ(test, iov_iter_count(&it), 0UL);
	bio_uninit(&bio);
	__free_pages(pg, 1);
}

static struct kunit_case qimg_dev_cases[] = {
	KUNIT_CASE(qimg_dev_attach_corrupt),
	KUNIT_CASE(qimg_dev_read_holes),
	KUNIT_CASE(qimg_dev_write_read),
	KUNIT_CASE(qimg_dev_parallel_writes),
	KUNIT_CASE(qimg_dev_read_only),
	KUNIT_CASE(qimg_dev_discard_waits_for_io),
	KUNIT_CASE(qimg_dev_io_drain_race),
	KUNIT_CASE(qimg_dev_overlap_reftable0),
	KUNIT_CASE(qimg_dev_overlap_entry),
	KUNIT_CASE(qimg_dev_multi_cluster),
	KUNIT_CASE(qimg_dev_autoclear_attaching),
	KUNIT_CASE(qimg_dev_bio_iter_multipage),
	{}
};

static struct kunit_suite qimg_dev_suite = {
	.name = "qimg_dev",
	.init = qimg_t_dev_init,
	.exit = qimg_t_dev_exit,
	.test_cases = qimg_dev_cases,
};

kunit_test_suite(qimg_dev_suite);
