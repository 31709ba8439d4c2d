// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_meta: the metadata layer's handles (credits, refusal
 * after a failed write-back, nesting) and the order and failure handling
 * of its write-back, including growing the refcount table, on images
 * attached as real disks (the set-up of qimg_dev_kunit.h).
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_dev_kunit.h"

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

static u16 qimg_t_disk_refcount16(struct kunit *test, struct file *f, u64 host)
{
	__be16 v;

	/* qimg_t_make_image(): one refcount block at cluster 2. */
	qimg_t_pread(test, f, &v, 2, 2 * QIMG_T_CS + 2 * (host >> QIMG_T_CB));
	return be16_to_cpu(v);
}

/* Detach when the final write-back is known to fail. */
static void qimg_t_down_failed(struct kunit *test, struct qimg_t_dev *d)
{
	blkdev_put(d->bdev, FMODE_READ | FMODE_WRITE);
	d->bdev = NULL;
	KUNIT_EXPECT_EQ(test, qimg_detach(d->index), -EIO);
	d->index = -1;
	WRITE_ONCE(qimg_meta_fail_next, NULL);
}

/* Credits: charged once per table per transaction, returned at stop. */
static void qimg_meta_credits(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kzalloc(test, 4096, GFP_KERNEL);
	struct qimg_handle h, h2;
	struct qimg_device *dev;
	struct qimg_centry *e;
	u64 l1e;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	dev = qimg_t_qdev(d);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, 0, w, 4096), 0);
	KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);

	mutex_lock(&dev->meta_lock);
	l1e = be64_to_cpu(dev->top.l1[0]);
	KUNIT_ASSERT_EQ(test, qimg_cache_get(&dev->top.l2,
					     l1e & QIMG_L1E_OFFSET_MASK, false,
					     &e), 0);
	KUNIT_EXPECT_EQ(test, qimg_meta_start(dev, &h, 3), 0);
	KUNIT_EXPECT_EQ(test, dev->meta_reserved, 3u);
	KUNIT_EXPECT_EQ(test, qimg_meta_get_write_access(&h, &dev->top.l2, e),
			0);
	KUNIT_EXPECT_EQ(test, h.credits, 2u);
	KUNIT_EXPECT_EQ(test, qimg_meta_get_write_access(&h, &dev->top.l2, e),
			0);
	KUNIT_EXPECT_EQ(test, h.credits, 2u);	/* joined already */
	KUNIT_EXPECT_EQ(test, qimg_meta_set_l1(&h, 0, l1e), 0);
	KUNIT_EXPECT_EQ(test, qimg_meta_set_l1(&h, 0, l1e), 0);
	KUNIT_EXPECT_EQ(test, h.credits, 1u);
	/* A nested handle: its own credits, no write-back when it stops. */
	KUNIT_EXPECT_EQ(test, qimg_meta_start(dev, &h2, 1), 0);
	KUNIT_EXPECT_EQ(test, qimg_meta_set_l1(&h2, 0, l1e), 0);
	KUNIT_EXPECT_EQ(test, h2.credits, 0u);
	KUNIT_EXPECT_EQ(test, qimg_meta_stop(&h2, 0), 0);
	KUNIT_EXPECT_EQ(test, dev->meta_depth, 1u);
	KUNIT_EXPECT_EQ(test, qimg_meta_stop(&h, 0), 0);
	KUNIT_EXPECT_EQ(test, dev->meta_depth, 0u);
	KUNIT_EXPECT_EQ(test, dev->meta_reserved, 0u);
	qimg_cache_put(&dev->top.l2, e);
	mutex_unlock(&dev->meta_lock);
	qimg_t_down(test, d);
}

/* Once write-back failed, a handle refuses every change. */
static void qimg_meta_refused_after_failure(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	struct qimg_device *dev;
	struct qimg_handle h;

	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	dev = qimg_t_qdev(d);
	mutex_lock(&dev->meta_lock);
	set_bit(QIMG_STATE_WB_FAILED, &dev->state);
	KUNIT_EXPECT_EQ(test, qimg_meta_start(dev, &h, 1), -EIO);
	KUNIT_EXPECT_EQ(test, qimg_meta_set_l1(&h, 0, QIMG_T_CS * 9), -EIO);
	KUNIT_EXPECT_EQ(test, be64_to_cpu(dev->top.l1[0]), 0ULL);
	KUNIT_EXPECT_EQ(test, dev->top.l1_dirty_hi, 0u);
	KUNIT_EXPECT_EQ(test, qimg_meta_stop(&h, 0), -EIO);
	KUNIT_EXPECT_EQ(test, dev->meta_depth, 0u);
	mutex_unlock(&dev->meta_lock);
	KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), -EIO);
	qimg_t_down_failed(test, d);
}

/*
 * Write-back order: refcount blocks, then L2 tables, then L1.  One
 * allocating write, then the write of one cache fails: what comes before
 * it is on disk, what comes after it is not, the flush fails, and reads
 * show the disk's mapping again.
 */
static void qimg_meta_writeback_order(struct kunit *test)
{
	static const char * const fail[] = { "refcount", "l2" };
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_device *dev;
	unsigned int i;
	u64 l2;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	for (i = 0; i < ARRAY_SIZE(fail); i++) {
		qimg_t_make_image(test, d->file);
		qimg_t_up(test, d);
		dev = qimg_t_qdev(d);
		qimg_t_fill(w, 4096, 3);
		KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, 0, w,
						4096), 0);
		l2 = be64_to_cpu(READ_ONCE(dev->top.l1[0])) &
		     QIMG_L1E_OFFSET_MASK;
		KUNIT_ASSERT_NE(test, l2, 0ULL);
		WRITE_ONCE(qimg_meta_fail_next, fail[i]);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_flush(d->bdev), -EIO,
				    "%s write fails", fail[i]);
		KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
		/* The disk's mapping is back: nothing at guest 0. */
		memset(r, 0xa5, 4096);
		KUNIT_EXPECT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, 0, r,
						4096), 0);
		KUNIT_EXPECT_PTR_EQ(test, memchr_inv(r, 0, 4096), NULL);
		/* After the failure: nothing more was written. */
		KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), -EIO);
		qimg_t_down_failed(test, d);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_disk_refcount16(test, d->file,
								 l2),
				    i ? 1 : 0, "%s write failed", fail[i]);
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_pread64(test, d->file,
							 3 * QIMG_T_CS), 0ULL,
				    "%s write failed: L1 written", fail[i]);
	}
	qimg_t_make_image(test, d->file);
}

/*
 * The refcount table grows, and the header write that switches to the new
 * table fails: that is a failed metadata write like any other, so the
 * device stops writing for good and no later flush (nor the detach)
 * reports success; the header still names the old table.
 */
static void qimg_meta_reftable_switch_fails(struct kunit *test)
{
	const u64 vsize = 4ULL << 20;
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	struct qimg_device *dev;
	u64 off;
	int ret = 0;

	KUNIT_ASSERT_NOT_NULL(test, w);
	qimg_t_make_small(test, d->file, vsize);
	d->index = qimg_t_attach(test, d->file);
	KUNIT_ASSERT_GE_MSG(test, d->index, 0, "qimg_attach: %d", d->index);
	d->bdev = qimg_t_open_bdev(test, d->index);
	dev = qimg_t_qdev(d);
	WRITE_ONCE(qimg_meta_fail_next, "header (refcount table switch)");
	for (off = 0; !ret && off < vsize; off += 4096) {
		qimg_t_fill(w, 4096, off >> 12);
		ret = qimg_t_io(d->bdev, REQ_OP_WRITE, off, w, 4096);
	}
	KUNIT_EXPECT_NE_MSG(test, ret, 0, "no write failed");
	KUNIT_EXPECT_PTR_EQ(test, READ_ONCE(qimg_meta_fail_next), NULL);
	kunit_info(test, "write at %llu failed (%d)\n", off - 4096, ret);
	KUNIT_EXPECT_TRUE(test, test_bit(QIMG_STATE_WB_FAILED, &dev->state));
	KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
	KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), -EIO);
	qimg_t_down_failed(test, d);
	KUNIT_EXPECT_EQ(test, qimg_t_pread64(test, d->file, 48),
			(u64)QIMG_T_SMALL_CS);
	qimg_t_make_image(test, d->file);
}

/* Growing the refcount table works (the same writes, nothing fails). */
static void qimg_meta_reftable_grows(struct kunit *test)
{
	const u64 vsize = 4ULL << 20;
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u64 off;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_small(test, d->file, vsize);
	d->index = qimg_t_attach(test, d->file);
	KUNIT_ASSERT_GE_MSG(test, d->index, 0, "qimg_attach: %d", d->index);
	d->bdev = qimg_t_open_bdev(test, d->index);
	for (off = 0; off < 3 * vsize / 4; off += 4096) {
		qimg_t_fill(w, 4096, off >> 12);
		KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_WRITE, off, w,
						4096), 0);
	}
	KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), 0);
	qimg_t_down(test, d);
	KUNIT_EXPECT_NE(test, qimg_t_pread64(test, d->file, 48),
			(u64)QIMG_T_SMALL_CS);
	d->index = qimg_t_attach(test, d->file);
	KUNIT_ASSERT_GE_MSG(test, d->index, 0, "qimg_attach: %d", d->index);
	d->bdev = qimg_t_open_bdev(test, d->index);
	for (off = 0; off < 3 * vsize / 4; off += 4096 * 37) {
		qimg_t_fill(w, 4096, off >> 12);
		KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, off, r,
						4096), 0);
		KUNIT_EXPECT_EQ_MSG(test, memcmp(r, w, 4096), 0, "at %llu",
				    off);
	}
	qimg_t_down(test, d);
	qimg_t_make_image(test, d->file);
}

static struct kunit_case qimg_meta_cases[] = {
	KUNIT_CASE(qimg_meta_credits),
	KUNIT_CASE(qimg_meta_refused_after_failure),
	KUNIT_CASE(qimg_meta_writeback_order),
	KUNIT_CASE(qimg_meta_reftable_grows),
	KUNIT_CASE(qimg_meta_reftable_switch_fails),
	{}
};

static struct kunit_suite qimg_meta_suite = {
	.name = "qimg_meta",
	.init = qimg_t_dev_init,
	.exit = qimg_t_dev_exit,
	.test_cases = qimg_meta_cases,
};

kunit_test_suite(qimg_meta_suite);
