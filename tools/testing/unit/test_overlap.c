// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of the overlap check's pure part: the fixed ranges taken
 * from a header and the "does [off, off + len) overlap any of them"
 * decision (qimg_ol_fixed_init / qimg_ol_fixed_hit / qimg_ol_name).
 */
#include <string.h>

#include "qimg_tests.h"
#include "qimg_ol_vectors.h"

static void test_ol_vector(void **state)
{
	const struct qimg_ol_vec *v = *state;
	struct qimg_header h;
	struct qimg_ol_fixed f;

	qimg_ol_vec_header(&h, v->bitmaps);
	qimg_ol_fixed_init(&f, &h, QOL_SNAP_LEN);
	assert_int_equal(qimg_ol_fixed_hit(&f, v->off, v->len, v->ign),
			 v->hit);
}

static void test_ol_init(void **state)
{
	struct qimg_header h;
	struct qimg_ol_fixed f;

	(void)state;
	qimg_ol_vec_header(&h, true);
	/* Unknown snapshot table length: nb_snapshots fixed-size entries. */
	qimg_ol_fixed_init(&f, &h, 0);
	assert_int_equal(f.len[3], sizeof(struct qimg_disk_snapshot));
	assert_int_equal(f.len[0], QOL_CS);
	assert_int_equal(f.off[0], 0);
	assert_int_equal(f.len[1], 16);
	assert_int_equal(f.len[2], QOL_CS);
	assert_int_equal(f.len[4], QOL_BMDIR_LEN);
	/* No snapshots: no snapshot table, whatever the offset says. */
	h.nb_snapshots = 0;
	qimg_ol_fixed_init(&f, &h, QOL_SNAP_LEN);
	assert_int_equal(f.len[3], 0);
	assert_int_equal(qimg_ol_fixed_hit(&f, QOL_SNAP, 1, 0), 0);
}

static void test_ol_names(void **state)
{
	(void)state;
	assert_string_equal(qimg_ol_name(QIMG_OL_HEADER), "image header");
	assert_string_equal(qimg_ol_name(QIMG_OL_ACTIVE_L2), "active L2 table");
	assert_string_equal(qimg_ol_name(QIMG_OL_REFCOUNT_BLOCK |
					 QIMG_OL_ACTIVE_L2),
			    "active L2 table");
	assert_string_equal(qimg_ol_name(QIMG_OL_INACTIVE_L1),
			    "inactive L1 table");
	assert_string_equal(qimg_ol_name(0), "metadata");
}

int qimg_test_run_overlap(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ol_init),
		cmocka_unit_test(test_ol_names),
	};
	int failed;

	failed = qimg_test_run_table("overlap vectors", qimg_ol_vecs,
				     ARRAY_SIZE(qimg_ol_vecs),
				     sizeof(qimg_ol_vecs[0]),
				     offsetof(struct qimg_ol_vec, name),
				     test_ol_vector);
	return failed + cmocka_run_group_tests_name("overlap", tests, NULL,
						    NULL);
}
