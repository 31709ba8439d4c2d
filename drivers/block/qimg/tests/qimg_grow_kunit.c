// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_grow: online grow of an attached device (qimg_resize(),
 * the RESIZE ioctl) on the image of qimg_dev_kunit.h attached as a real
 * disk: the L1 table grown inside its cluster and moved to new clusters
 * (the old one freed once the header names the new one), the header's
 * fields on disk, data on both sides of the old end, a failed write of
 * the new table or of the header switch (nothing changes on disk, the
 * device turns read-only, the next attach finds the old image intact),
 * and the refusals (shrink, unaligned, too big, read-only, no device).
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include "qimg_meta.h"
#include "qimg_dev_kunit.h"

#define QIMG_T_TIB	BIT_ULL(40)

static u64 qimg_t_rd(struct kunit *test, struct file *f, loff_t pos, int len)
{
	u8 b[8];

	qimg_t_pread(test, f, b, len, pos);
	return len == 4 ? get_unaligned_be32(b) : get_unaligned_be64(b);
}

/* qimg_t_make_image(): one 16-bit refcount block at cluster 2. */
static u16 qimg_t_refcount(struct kunit *test, struct file *f, u64 host)
{
	__be16 v;

	qimg_t_pread(test, f, &v, 2, 2 * QIMG_T_CS + 2 * (host >> QIMG_T_CB));
	return be16_to_cpu(v);
}

/* The sum of the refcounts in that block: clusters in use. */
static u64 qimg_t_refcount_sum(struct kunit *test, struct file *f)
{
	__be16 *b = kunit_kmalloc(test, QIMG_T_CS, GFP_KERNEL);
	u64 sum = 0;
	unsigned int i;

	KUNIT_ASSERT_NOT_NULL(test, b);
	qimg_t_pread(test, f, b, QIMG_T_CS, 2 * QIMG_T_CS);
	for (i = 0; i < QIMG_T_CS / 2; i++)
		sum += be16_to_cpu(b[i]);
	kunit_kfree(test, b);
	return sum;
}

static void qimg_t_put(struct kunit *test, struct qimg_t_dev *d, u64 off,
		       u8 *w, u8 seed)
{
	qimg_t_fill(w, 4096, seed);
	KUNIT_ASSERT_EQ_MSG(test, qimg_t_io(d->bdev, REQ_OP_WRITE, off, w,
					    4096), 0, "write at %llu", off);
}

static void qimg_t_expect(struct kunit *test, struct qimg_t_dev *d, u64 off,
			  u8 *w, u8 *r, int seed)
{
	if (seed < 0)
		memset(w, 0, 4096);
	else
		qimg_t_fill(w, 4096, (u8)seed);
	memset(r, 0x5a, 4096);
	KUNIT_ASSERT_EQ(test, qimg_t_io(d->bdev, REQ_OP_READ, off, r, 4096),
			0);
	KUNIT_EXPECT_EQ_MSG(test, memcmp(r, w, 4096), 0, "at %llu", off);
}

/* Attach again after a detach: the size is @size now. */
static void qimg_t_reattach(struct kunit *test, struct qimg_t_dev *d,
			    u64 size)
{
	d->index = qimg_t_attach(test, d->file);
	KUNIT_ASSERT_GE_MSG(test, d->index, 0, "qimg_attach: %d", d->index);
	d->bdev = qimg_t_open_bdev(test, d->index);
	KUNIT_EXPECT_EQ(test, bdev_nr_bytes(d->bdev), size);
}

/*
 * 64 MiB to 1 GiB: two L1 entries, still inside the table's cluster.  The
 * header says so on disk, the table stays where it was, the new space
 * reads zeros and takes writes, and all of it is there after a re-attach.
 */
static void qimg_grow_in_place(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	qimg_t_put(test, d, 0, w, 1);
	KUNIT_EXPECT_EQ(test, qimg_resize(d->index, QIMG_T_VSIZE), 0);
	KUNIT_EXPECT_EQ(test, qimg_resize(d->index, SZ_1G), 0);
	KUNIT_EXPECT_EQ(test, bdev_nr_bytes(d->bdev), (u64)SZ_1G);
	KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 24, 8), (u64)SZ_1G);
	KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 36, 4), 2ULL);
	KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 40, 8), 3 * QIMG_T_CS);
	qimg_t_expect(test, d, SZ_512M + 8192, w, r, -1);
	qimg_t_put(test, d, SZ_1G - 4096, w, 2);
	qimg_t_expect(test, d, SZ_1G - 4096, w, r, 2);
	qimg_t_expect(test, d, 0, w, r, 1);
	qimg_t_down(test, d);

	qimg_t_reattach(test, d, SZ_1G);
	qimg_t_expect(test, d, 0, w, r, 1);
	qimg_t_expect(test, d, SZ_1G - 4096, w, r, 2);
	KUNIT_EXPECT_EQ(test, qimg_t_refcount(test, d->file, 3 * QIMG_T_CS),
			1);
	qimg_t_down(test, d);
}

/*
 * 64 MiB to 5 TiB: 10240 entries, two clusters: the table moves.  The
 * new clusters are referenced before the header names them, the old one
 * is freed (nothing leaks), and the data on both sides of the old end is
 * there after a re-attach.  With and without the journal.
 */
static void qimg_grow_moves(struct kunit *test)
{
	static const u32 flags[] = { QIMG_ATTACH_NO_JOURNAL,
				     QIMG_ATTACH_JOURNAL };
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u64 size = 5 * QIMG_T_TIB, off;
	unsigned int k;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	for (k = 0; k < ARRAY_SIZE(flags); k++) {
		qimg_t_make_image(test, d->file);
		d->index = qimg_t_attach_flags(test, d->file, flags[k], 0);
		KUNIT_ASSERT_GE(test, d->index, 0);
		d->bdev = qimg_t_open_bdev(test, d->index);
		qimg_t_put(test, d, 0, w, 3);
		KUNIT_ASSERT_EQ(test, qimg_resize(d->index, size), 0);
		KUNIT_EXPECT_EQ(test, bdev_nr_bytes(d->bdev), size);
		if (flags[k] == QIMG_ATTACH_NO_JOURNAL) {
			/* Without the journal the header is in place now. */
			KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 36, 4),
					10240ULL);
			KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 24, 8),
					size);
		}
		qimg_t_expect(test, d, 4 * QIMG_T_TIB, w, r, -1);
		qimg_t_put(test, d, size - 4096, w, 4);
		qimg_t_put(test, d, 4 * QIMG_T_TIB + 65536, w, 5);
		KUNIT_EXPECT_EQ(test, qimg_t_flush(d->bdev), 0);
		qimg_t_expect(test, d, 0, w, r, 3);
		qimg_t_expect(test, d, size - 4096, w, r, 4);
		qimg_t_down(test, d);
		/*
		 * With the journal, the header and the refcounts in place
		 * change at a checkpoint, which may come after the resize
		 * returned; the detach checkpoints everything.
		 */
		off = qimg_t_rd(test, d->file, 40, 8);
		KUNIT_EXPECT_NE(test, off, 3 * QIMG_T_CS);
		KUNIT_EXPECT_EQ(test, off % QIMG_T_CS, 0ULL);
		KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 36, 4), 10240ULL);
		KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 24, 8), size);
		KUNIT_EXPECT_EQ(test, qimg_t_refcount(test, d->file, off), 1);
		KUNIT_EXPECT_EQ(test, qimg_t_refcount(test, d->file,
						      off + QIMG_T_CS), 1);
		/*
		 * Nothing leaked (the old table's cluster may hold new data
		 * by now): header, refcount table and block, two L1
		 * clusters, three L2 tables, three data clusters.
		 */
		KUNIT_EXPECT_EQ_MSG(test, qimg_t_refcount_sum(test, d->file),
				    11ULL, "flags %#x", flags[k]);

		qimg_t_reattach(test, d, size);
		qimg_t_expect(test, d, 0, w, r, 3);
		qimg_t_expect(test, d, size - 4096, w, r, 4);
		qimg_t_expect(test, d, 4 * QIMG_T_TIB + 65536, w, r, 5);
		qimg_t_down(test, d);
	}
	qimg_t_make_image(test, d->file);
}

/*
 * The new table's write or the header switch fails: the resize fails with
 * -EIO, the size stays, the device turns read-only, the header on disk
 * still names the old table, and the next attach finds the data.
 */
static void qimg_grow_switch_fails(struct kunit *test)
{
	static const char * const fail[] = { "new L1 table",
					     "header (L1 table switch)" };
	struct qimg_t_dev *d = test->priv;
	u8 *w = kunit_kmalloc(test, 4096, GFP_KERNEL);
	u8 *r = kunit_kmalloc(test, 4096, GFP_KERNEL);
	unsigned int k;

	KUNIT_ASSERT_NOT_NULL(test, w);
	KUNIT_ASSERT_NOT_NULL(test, r);
	for (k = 0; k < ARRAY_SIZE(fail); k++) {
		qimg_t_make_image(test, d->file);
		qimg_t_up(test, d);
		qimg_t_put(test, d, 0, w, 6);
		KUNIT_ASSERT_EQ(test, qimg_t_flush(d->bdev), 0);
		WRITE_ONCE(qimg_meta_fail_next, fail[k]);
		KUNIT_EXPECT_EQ_MSG(test, qimg_resize(d->index, 5 * QIMG_T_TIB),
				    -EIO, "%s fails", fail[k]);
		KUNIT_EXPECT_PTR_EQ(test, READ_ONCE(qimg_meta_fail_next), NULL);
		WRITE_ONCE(qimg_meta_fail_next, NULL);
		KUNIT_EXPECT_EQ(test, bdev_nr_bytes(d->bdev), QIMG_T_VSIZE);
		KUNIT_EXPECT_TRUE(test, bdev_read_only(d->bdev));
		KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 24, 8),
				QIMG_T_VSIZE);
		KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 36, 4), 1ULL);
		KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 40, 8),
				3 * QIMG_T_CS);
		KUNIT_EXPECT_EQ(test, qimg_resize(d->index, SZ_1G), -EROFS);
		qimg_t_expect(test, d, 0, w, r, 6);
		blkdev_put(d->bdev, FMODE_READ | FMODE_WRITE);
		d->bdev = NULL;
		KUNIT_EXPECT_EQ(test, qimg_detach(d->index), -EIO);
		d->index = -1;

		qimg_t_up(test, d);
		qimg_t_expect(test, d, 0, w, r, 6);
		qimg_t_down(test, d);
	}
	qimg_t_make_image(test, d->file);
}

/* Shrink, unaligned, too big, no such device, read-only: refused. */
static void qimg_grow_refused(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;
	int ro;

	qimg_t_make_image(test, d->file);
	qimg_t_up(test, d);
	KUNIT_EXPECT_EQ(test, qimg_resize(d->index, QIMG_T_VSIZE / 2), -EINVAL);
	KUNIT_EXPECT_EQ(test, qimg_resize(d->index, QIMG_T_VSIZE + 1000),
			-EINVAL);
	KUNIT_EXPECT_EQ(test, qimg_resize(d->index, QIMG_MAX_VIRTUAL_SIZE * 2),
			-EFBIG);
	KUNIT_EXPECT_EQ(test, qimg_resize(d->index + 100, SZ_1G), -ENXIO);
	KUNIT_EXPECT_EQ(test, bdev_nr_bytes(d->bdev), QIMG_T_VSIZE);
	KUNIT_EXPECT_EQ(test, qimg_t_rd(test, d->file, 24, 8), QIMG_T_VSIZE);
	qimg_t_down(test, d);

	ro = qimg_t_attach_flags(test, d->file, QIMG_ATTACH_READ_ONLY, 0);
	KUNIT_ASSERT_GE(test, ro, 0);
	KUNIT_EXPECT_EQ(test, qimg_resize(ro, SZ_1G), -EROFS);
	KUNIT_EXPECT_EQ(test, qimg_detach(ro), 0);
}

static struct kunit_case qimg_grow_cases[] = {
	KUNIT_CASE(qimg_grow_in_place),
	KUNIT_CASE(qimg_grow_moves),
	KUNIT_CASE(qimg_grow_switch_fails),
	KUNIT_CASE(qimg_grow_refused),
	{}
};

static struct kunit_suite qimg_grow_suite = {
	.name = "qimg_grow",
	.init = qimg_t_dev_init,
	.exit = qimg_t_dev_exit,
	.test_cases = qimg_grow_cases,
};

kunit_test_suite(qimg_grow_suite);
