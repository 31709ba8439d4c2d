// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_overlap: the overlap check's fixed ranges (header,
 * active L1 table, refcount table, snapshot table, bitmap directory) and
 * the "does this host range overlap them" decision, from the vectors the
 * cmocka suite uses too (tools/testing/unit/qimg_ol_vectors.h).  The
 * per-cluster index of L2 tables and refcount blocks is exercised through
 * the whole driver in qimg_dev (qimg_dev_overlap_*).
 */
#include "qimg_kunit.h"
#include "qimg_ol_vectors.h"

static void qimg_t_ol_desc(const struct qimg_ol_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_ol, qimg_ol_vecs, qimg_t_ol_desc);

static void qimg_overlap_fixed_vectors(struct kunit *test)
{
	const struct qimg_ol_vec *v = test->param_value;
	struct qimg_header *h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	struct qimg_ol_fixed f;

	KUNIT_ASSERT_NOT_NULL(test, h);
	qimg_ol_vec_header(h, v->bitmaps);
	qimg_ol_fixed_init(&f, h, QOL_SNAP_LEN);
	KUNIT_EXPECT_EQ(test, qimg_ol_fixed_hit(&f, v->off, v->len, v->ign),
			v->hit);
}

/* Every single-cluster probe of the layout hits exactly what lives there. */
static void qimg_overlap_fixed_sweep(struct kunit *test)
{
	struct qimg_header *h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	struct qimg_ol_fixed f;
	u64 c;

	KUNIT_ASSERT_NOT_NULL(test, h);
	qimg_ol_vec_header(h, true);
	qimg_ol_fixed_init(&f, h, QOL_SNAP_LEN);
	for (c = 0; c < 16; c++) {
		u64 off = c * QOL_CS;
		u32 want = 0;

		if (off == 0)
			want = QIMG_OL_HEADER;
		else if (off == QOL_RT)
			want = QIMG_OL_REFCOUNT_TABLE;
		else if (off == QOL_L1)
			want = QIMG_OL_ACTIVE_L1;
		else if (off == QOL_SNAP)
			want = QIMG_OL_SNAPSHOT_TABLE;
		else if (off == QOL_BMDIR)
			want = QIMG_OL_BITMAP_DIR;
		KUNIT_EXPECT_EQ_MSG(test, qimg_ol_fixed_hit(&f, off, QOL_CS, 0),
				    want, "cluster %llu", c);
	}
	KUNIT_EXPECT_STREQ(test, qimg_ol_name(QIMG_OL_REFCOUNT_BLOCK),
			   "refcount block");
}

static struct kunit_case qimg_overlap_cases[] = {
	KUNIT_CASE_PARAM(qimg_overlap_fixed_vectors, qimg_t_ol_gen_params),
	KUNIT_CASE(qimg_overlap_fixed_sweep),
	{}
};

static struct kunit_suite qimg_overlap_suite = {
	.name = "qimg_overlap",
	.test_cases = qimg_overlap_cases,
};

kunit_test_suite(qimg_overlap_suite);
