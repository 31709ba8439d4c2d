// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit: the table cache on its own (qimg_cache.c over qimg_file.c), on a
 * tmpfs file standing in for an image: misses read the file once, hits do
 * not, clean entries are evicted least recently used first, dirty and
 * referenced entries never, write-back writes exactly the dirty entries
 * and makes them evictable again, a fresh entry starts zeroed.
 */
#include <kunit/test.h>
#include <linux/fs.h>
#include <linux/slab.h>

#include "qimg_file.h"
#include "qimg_cache.h"

#define QIMG_TC_CB	12
#define QIMG_TC_CS	BIT(QIMG_TC_CB)
#define QIMG_TC_N	16		/* clusters in the file */
#define QIMG_TC_MAX	4		/* cache entries */
#define QIMG_TC_PATH	"/qimg-kunit-cache.img"

struct qimg_tc {
	struct qimg_geom g;
	struct qimg_image img;
	struct qimg_cache c;
	struct file *file;
};

/* Cluster i of the file is filled with byte i + 1. */
static int qimg_tc_init(struct kunit *test)
{
	struct qimg_tc *t = kunit_kzalloc(test, sizeof(*t), GFP_KERNEL);
	u8 *buf = kunit_kmalloc(test, QIMG_TC_CS, GFP_KERNEL);
	loff_t pos = 0;
	int i;

	if (!t || !buf)
		return -ENOMEM;
	t->file = filp_open(QIMG_TC_PATH, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (IS_ERR(t->file))
		return PTR_ERR(t->file);
	for (i = 0; i < QIMG_TC_N; i++) {
		memset(buf, i + 1, QIMG_TC_CS);
		if (kernel_write(t->file, buf, QIMG_TC_CS, &pos) != QIMG_TC_CS)
			return -EIO;
	}
	t->g.cluster_bits = QIMG_TC_CB;
	t->g.cluster_size = QIMG_TC_CS;
	t->img.g = &t->g;
	t->img.file = t->file;
	if (qimg_cache_init(&t->c, &t->img, "test", QIMG_TC_MAX * QIMG_TC_CS))
		return -ENOMEM;
	test->priv = t;
	return 0;
}

static void qimg_tc_exit(struct kunit *test)
{
	struct qimg_tc *t = test->priv;

	if (!t)
		return;
	qimg_cache_destroy(&t->c);
	filp_close(t->file, NULL);
}

static struct qimg_centry *qimg_tc_get(struct kunit *test, int i, bool fresh)
{
	struct qimg_tc *t = test->priv;
	struct qimg_centry *e = NULL;

	KUNIT_ASSERT_EQ(test, qimg_cache_get(&t->c, (u64)i * QIMG_TC_CS,
					     fresh, &e), 0);
	return e;
}

static bool qimg_tc_filled(const struct qimg_centry *e, u8 v)
{
	return !memchr_inv(e->data, v, QIMG_TC_CS);
}

static void qimg_tc_miss_then_hit(struct kunit *test)
{
	struct qimg_tc *t = test->priv;
	struct qimg_centry *e;

	e = qimg_tc_get(test, 5, false);
	KUNIT_EXPECT_TRUE(test, qimg_tc_filled(e, 6));
	qimg_cache_put(&t->c, e);
	e = qimg_tc_get(test, 5, false);
	qimg_cache_put(&t->c, e);
	KUNIT_EXPECT_EQ(test, atomic64_read(&t->c.misses), 1LL);
	KUNIT_EXPECT_EQ(test, atomic64_read(&t->c.hits), 1LL);
}

static void qimg_tc_lru_eviction(struct kunit *test)
{
	struct qimg_tc *t = test->priv;
	int i;

	for (i = 0; i < QIMG_TC_MAX + 2; i++)
		qimg_cache_put(&t->c, qimg_tc_get(test, i, false));
	KUNIT_EXPECT_LE(test, t->c.nr, (unsigned int)QIMG_TC_MAX);
	/* Touch 2, then load two more: 2 stays, 3 (older) goes. */
	qimg_cache_put(&t->c, qimg_tc_get(test, 2, false));
	qimg_cache_put(&t->c, qimg_tc_get(test, 8, false));
	qimg_cache_put(&t->c, qimg_tc_get(test, 9, false));
	atomic64_set(&t->c.misses, 0);
	qimg_cache_put(&t->c, qimg_tc_get(test, 2, false));
	KUNIT_EXPECT_EQ(test, atomic64_read(&t->c.misses), 0LL);
	qimg_cache_put(&t->c, qimg_tc_get(test, 3, false));
	KUNIT_EXPECT_EQ(test, atomic64_read(&t->c.misses), 1LL);
}

static void qimg_tc_dirty_and_referenced_stay(struct kunit *test)
{
	struct qimg_tc *t = test->priv;
	struct qimg_centry *held, *e;
	int i;

	held = qimg_tc_get(test, 15, false);
	for (i = 0; i < QIMG_TC_MAX; i++) {
		e = qimg_tc_get(test, i, false);
		memset(e->data, 0xd0 + i, QIMG_TC_CS);
		qimg_cache_mark_dirty(&t->c, e);
		qimg_cache_put(&t->c, e);
	}
	for (i = 8; i < 12; i++)
		qimg_cache_put(&t->c, qimg_tc_get(test, i, false));
	/* Over the limit, but nothing dirty or held was dropped. */
	KUNIT_EXPECT_EQ(test, t->c.nr_dirty, (unsigned int)QIMG_TC_MAX);
	atomic64_set(&t->c.misses, 0);
	for (i = 0; i < QIMG_TC_MAX; i++) {
		e = qimg_tc_get(test, i, false);
		KUNIT_EXPECT_TRUE(test, qimg_tc_filled(e, 0xd0 + i));
		qimg_cache_put(&t->c, e);
	}
	KUNIT_EXPECT_EQ(test, atomic64_read(&t->c.misses), 0LL);
	KUNIT_EXPECT_TRUE(test, qimg_tc_filled(held, 16));
	qimg_cache_put(&t->c, held);

	/* Write-back writes them, makes them clean and evictable. */
	KUNIT_EXPECT_EQ(test, qimg_cache_writeback(&t->c), QIMG_TC_MAX);
	KUNIT_EXPECT_EQ(test, t->c.nr_dirty, 0U);
	KUNIT_EXPECT_EQ(test, qimg_cache_writeback(&t->c), 0);
	qimg_cache_trim(&t->c);
	KUNIT_EXPECT_LE(test, t->c.nr, (unsigned int)QIMG_TC_MAX);
	for (i = 0; i < QIMG_TC_MAX; i++) {
		u8 *buf = kunit_kmalloc(test, QIMG_TC_CS, GFP_KERNEL);

		KUNIT_ASSERT_NOT_NULL(test, buf);
		KUNIT_ASSERT_EQ(test, qimg_kread(t->file, buf, QIMG_TC_CS,
						 (u64)i * QIMG_TC_CS), 0);
		KUNIT_EXPECT_TRUE(test, !memchr_inv(buf, 0xd0 + i, QIMG_TC_CS));
	}
}

static void qimg_tc_fresh_is_zero(struct kunit *test)
{
	struct qimg_tc *t = test->priv;
	struct qimg_centry *e;

	/* A fresh table over a cached one is zeroed too. */
	qimg_cache_put(&t->c, qimg_tc_get(test, 7, false));
	e = qimg_tc_get(test, 7, true);
	KUNIT_EXPECT_TRUE(test, qimg_tc_filled(e, 0));
	qimg_cache_put(&t->c, e);
	e = qimg_tc_get(test, 12, true);
	KUNIT_EXPECT_TRUE(test, qimg_tc_filled(e, 0));
	qimg_cache_put(&t->c, e);
}

static struct kunit_case qimg_cache_cases[] = {
	KUNIT_CASE(qimg_tc_miss_then_hit),
	KUNIT_CASE(qimg_tc_lru_eviction),
	KUNIT_CASE(qimg_tc_dirty_and_referenced_stay),
	KUNIT_CASE(qimg_tc_fresh_is_zero),
	{}
};

static struct kunit_suite qimg_cache_suite = {
	.name = "qimg_cache",
	.init = qimg_tc_init,
	.exit = qimg_tc_exit,
	.test_cases = qimg_cache_cases,
};

kunit_test_suite(qimg_cache_suite);
