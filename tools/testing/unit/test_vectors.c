// SPDX-License-Identifier: GPL-2.0
/*
 * Table-driven tests: every vector of qimg_vectors.h is one test case that
 * checks the exact errno (and, for headers, part of the message).  Good
 * headers are also re-encoded and decoded again, which must give back the
 * same fields.
 */
#include <stdlib.h>

#include "qimg_tests.h"
#include "qimg_vectors.h"

static u8 qt_buf[QV_BUF_LEN];
static u8 qt_buf2[QV_BUF_LEN];

/* @got is the policy's answer; @want a substring of it, or NULL. */
static void qt_expect_refusal(const char *what, const char *got,
			      const char *want)
{
	if (!want && got)
		fail_msg("%s: refused (\"%s\"), expected to be served", what,
			 got);
	if (want && (!got || !strstr(got, want)))
		fail_msg("%s: got \"%s\", expected \"%s\"", what,
			 got ? got : "(served)", want);
}

/* A refusal explains itself, with @want in it when the vector says so. */
static void qt_expect_msg(const struct qimg_err *err, const char *want)
{
	assert_true(err->msg[0] != '\0');
	if (want && !strstr(err->msg, want))
		fail_msg("message '%s' lacks '%s'", err->msg, want);
}

/* The geometry all entry vectors are decoded against. */
static void qt_base_geom(struct qimg_header *h, bool ext_l2, bool data_file)
{
	memset(h, 0, sizeof(*h));
	h->version = 3;
	h->cluster_bits = 16;
	h->size = 1ULL << 30;
	h->refcount_order = 4;
	if (ext_l2)
		h->incompatible_features |= QIMG_INCOMPAT_EXTL2;
	if (data_file)
		h->incompatible_features |= QIMG_INCOMPAT_DATA_FILE;
	assert_int_equal(qimg_geom_init(h, NULL), 0);
}

static void qt_expect_same_header(const struct qimg_header *a,
				  const struct qimg_header *b)
{
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->cluster_bits, b->cluster_bits);
	assert_true(a->size == b->size);
	assert_int_equal(a->l1_size, b->l1_size);
	assert_true(a->l1_table_offset == b->l1_table_offset);
	assert_true(a->refcount_table_offset == b->refcount_table_offset);
	assert_int_equal(a->refcount_table_clusters,
			 b->refcount_table_clusters);
	assert_int_equal(a->nb_snapshots, b->nb_snapshots);
	assert_true(a->snapshots_offset == b->snapshots_offset);
	assert_true(a->incompatible_features == b->incompatible_features);
	assert_true(a->compatible_features == b->compatible_features);
	assert_true(a->autoclear_features == b->autoclear_features);
	assert_int_equal(a->refcount_order, b->refcount_order);
	assert_int_equal(a->compression_type, b->compression_type);
	assert_string_equal(a->backing_file, b->backing_file);
	assert_string_equal(a->backing_fmt, b->backing_fmt);
	assert_int_equal(a->has_data_file, b->has_data_file);
	assert_string_equal(a->data_file, b->data_file);
	assert_int_equal(a->has_bitmaps_ext, b->has_bitmaps_ext);
	assert_int_equal(a->nb_bitmaps, b->nb_bitmaps);
	assert_true(a->bitmap_directory_size == b->bitmap_directory_size);
	assert_true(a->bitmap_directory_offset == b->bitmap_directory_offset);
	assert_int_equal(a->has_journal_ext, b->has_journal_ext);
	assert_true(a->journal_offset == b->journal_offset);
	assert_true(a->journal_size == b->journal_size);
	assert_memory_equal(&a->geom, &b->geom, sizeof(a->geom));
}

static void qt_header_vec(void **state)
{
	const struct qimg_hdr_vec *v = *state;
	struct qimg_header *h = calloc(1, sizeof(*h));
	struct qimg_header *h2 = calloc(1, sizeof(*h2));
	struct qimg_err err = { "" };
	u32 len = qimg_vec_build(v, qt_buf);
	int ret, n;

	assert_non_null(h);
	assert_non_null(h2);
	ret = qimg_header_decode(qt_buf, len, qimg_vec_file_size(v), h, &err);
	if (ret != v->expect)
		fail_msg("%s: got %d (%s), expected %d", v->name, ret,
			 err.msg, v->expect);
	if (ret) {
		/* Every refusal explains itself. */
		assert_true(err.msg[0] != '\0');
		if (v->msg && !strstr(err.msg, v->msg))
			fail_msg("message '%s' lacks '%s'", err.msg, v->msg);
		/* And so does it with no error struct, without crashing. */
		assert_int_equal(qimg_header_decode(qt_buf, len,
						    qimg_vec_file_size(v),
						    h, NULL), ret);
		goto out;
	}
	if (v->backing)
		assert_string_equal(h->backing_file, v->backing);
	if (v->backing_fmt)
		assert_string_equal(h->backing_fmt, v->backing_fmt);
	if (v->ext_end)
		assert_int_equal(h->ext_end, v->ext_end);
	qt_expect_refusal("read-only", qimg_unsupported_feature(h, false),
			  v->refuse_ro);
	qt_expect_refusal("read-write", qimg_unsupported_feature(h, true),
			  v->refuse_rw);

	/* encode(decode(x)) decodes to the same fields. */
	n = qimg_header_encode(h, qt_buf2, sizeof(qt_buf2));
	if (n < 0)
		fail_msg("encode failed: %d", n);
	assert_true(n <= (int)sizeof(qt_buf2));
	ret = qimg_header_decode(qt_buf2, sizeof(qt_buf2),
				 qimg_vec_file_size(v), h2, &err);
	if (ret)
		fail_msg("re-decode failed: %d (%s)", ret, err.msg);
	qt_expect_same_header(h, h2);
out:
	free(h);
	free(h2);
}

static void qt_unsup_vec(void **state)
{
	const struct qimg_unsup_vec *v = *state;
	struct qimg_header *h = calloc(1, sizeof(*h));
	const char *ro, *rw;

	assert_non_null(h);
	qimg_unsup_vec_header(v, h);
	ro = qimg_unsupported_feature(h, false);
	rw = qimg_unsupported_feature(h, true);
	free(h);
	qt_expect_refusal(v->writable ? "read-write" : "read-only",
			  v->writable ? rw : ro, v->refuse);
	/* Whatever is refused read-only is refused read-write, as itself. */
	if (ro && (!rw || strcmp(ro, rw)))
		fail_msg("read-only refuses \"%s\", read-write \"%s\"", ro,
			 rw ? rw : "(served)");
}

static void qt_l1_vec(void **state)
{
	const struct qimg_l1_vec *v = *state;
	struct qimg_header h;
	struct qimg_err err = { "" };
	u64 off = 1;
	bool copied = true;
	int ret;

	qt_base_geom(&h, false, false);
	ret = qimg_l1_decode(&h.geom, v->raw, QV_FILE_SIZE, &off, &copied,
			     &err);
	if (ret != v->expect)
		fail_msg("got %d (%s), expected %d", ret, err.msg, v->expect);
	if (ret) {
		qt_expect_msg(&err, v->msg);
		return;
	}
	assert_true(off == v->l2_offset);
	assert_int_equal(copied, v->copied);
	/* Canonical entries encode back to themselves. */
	if (v->l2_offset || !v->raw)
		assert_true(qimg_l1_encode(off, copied) == v->raw);
}

static void qt_l2_vec(void **state)
{
	const struct qimg_l2_vec *v = *state;
	struct qimg_header h;
	struct qimg_l2_entry e;
	struct qimg_err err = { "" };
	int ret;

	qt_base_geom(&h, v->ext_l2, v->data_file);
	ret = qimg_l2_decode(&h.geom, v->version, v->raw, v->bitmap,
			     QV_FILE_SIZE, &e, &err);
	if (ret != v->expect)
		fail_msg("got %d (%s), expected %d", ret, err.msg, v->expect);
	if (ret) {
		assert_true(err.msg[0] != '\0');
		return;
	}
	assert_int_equal(e.type, v->type);
	assert_true(e.host_offset == v->host_offset);
	if (e.type == QIMG_CLUSTER_COMPRESSED) {
		assert_true(e.compressed_len == v->compressed_len);
		/* Re-encoding gives the same descriptor. */
		assert_true(qimg_l2_encode_compressed(&h.geom, e.host_offset,
						      e.compressed_len) ==
			    v->raw);
	}
	if (e.type == QIMG_CLUSTER_UNALLOCATED ||
	    e.type == QIMG_CLUSTER_ZERO_PLAIN)
		assert_false(e.copied);
}

static void qt_refcount_vec(void **state)
{
	const struct qimg_refcount_vec *v = *state;
	u8 block[64];
	size_t i;
	int ret;

	memset(block, 0, sizeof(block));
	ret = qimg_refcount_set(block, v->order, v->index, v->value);
	assert_int_equal(ret, v->expect);
	if (ret) {
		for (i = 0; i < sizeof(block); i++)
			assert_int_equal(block[i], 0);
		return;
	}
	assert_int_equal(block[v->byte], v->byte_val);
	assert_true(qimg_refcount_get(block, v->order, v->index) == v->value);
	/* Neighbours are untouched. */
	if (v->index)
		assert_true(qimg_refcount_get(block, v->order,
					      v->index - 1) == 0);
	assert_true(qimg_refcount_get(block, v->order, v->index + 1) == 0);
}

static void qt_reftable_vec(void **state)
{
	const struct qimg_reftable_vec *v = *state;
	struct qimg_header h;
	struct qimg_err err = { "" };
	u64 off = 1;
	int ret;

	qt_base_geom(&h, false, false);
	ret = qimg_reftable_decode(&h.geom, v->raw, QV_FILE_SIZE, &off, &err);
	if (ret != v->expect)
		fail_msg("got %d (%s), expected %d", ret, err.msg, v->expect);
	if (!ret) {
		assert_true(off == v->rb_offset);
	} else {
		assert_true(off == 0);
		qt_expect_msg(&err, v->msg);
	}
}

static void qt_bme_vec(void **state)
{
	const struct qimg_bme_vec *v = *state;
	struct qimg_header h;
	struct qimg_err err = { "" };
	u64 off = 1;
	bool ones = true;
	int ret;

	qt_base_geom(&h, false, false);
	ret = qimg_bitmap_table_decode(&h.geom, v->raw, QV_FILE_SIZE, &off,
				       &ones, &err);
	if (ret != v->expect)
		fail_msg("got %d (%s), expected %d", ret, err.msg, v->expect);
	if (!ret) {
		assert_true(off == v->offset);
		assert_int_equal(ones, v->all_ones);
	} else {
		qt_expect_msg(&err, v->msg);
	}
}

static void qt_snapshot_vec(void **state)
{
	const struct qimg_raw_vec *v = *state;
	struct qimg_header h;
	struct qimg_snapshot s;
	struct qimg_err err = { "" };
	u8 *copy = malloc(v->len ? v->len : 1);
	int ret;

	/* A private heap copy of exactly @len bytes: ASan sees overreads. */
	assert_non_null(copy);
	memcpy(copy, v->bytes, v->len);
	qt_base_geom(&h, false, false);
	ret = qimg_snapshot_decode(&h.geom, copy, v->len, QV_FILE_SIZE, &s,
				   &err);
	free(copy);
	if (ret != v->expect)
		fail_msg("got %d (%s), expected %d", ret, err.msg, v->expect);
	if (ret) {
		qt_expect_msg(&err, v->msg);
		return;
	}
	assert_int_equal(s.entry_len, v->entry_len);
	assert_string_equal(s.id_str, v->label);
}

static void qt_bitmap_vec(void **state)
{
	const struct qimg_raw_vec *v = *state;
	struct qimg_header h;
	struct qimg_bitmap *b = malloc(sizeof(*b));
	struct qimg_err err = { "" };
	u8 *copy = malloc(v->len ? v->len : 1);
	int ret;

	assert_non_null(copy);
	assert_non_null(b);
	memcpy(copy, v->bytes, v->len);
	qt_base_geom(&h, false, false);
	ret = qimg_bitmap_decode(&h.geom, copy, v->len, QV_FILE_SIZE, b, &err);
	free(copy);
	if (ret != v->expect) {
		free(b);
		fail_msg("got %d (%s), expected %d", ret, err.msg, v->expect);
	}
	if (!ret) {
		assert_int_equal(b->entry_len, v->entry_len);
		assert_string_equal(b->name, v->label);
	}
	free(b);
	if (ret)
		qt_expect_msg(&err, v->msg);
}

#define QT_TABLE(group, tbl, fn) \
	qimg_test_run_table(group, tbl, ARRAY_SIZE(tbl), sizeof(tbl[0]), \
			    offsetof(__typeof__(tbl[0]), name), fn)

int qimg_test_run_vectors(void)
{
	int failed = 0;

	failed += QT_TABLE("header vectors", qimg_hdr_vecs, qt_header_vec);
	failed += QT_TABLE("unsupported features", qimg_unsup_vecs,
			   qt_unsup_vec);
	failed += QT_TABLE("L1 entries", qimg_l1_vecs, qt_l1_vec);
	failed += QT_TABLE("L2 entries", qimg_l2_vecs, qt_l2_vec);
	failed += QT_TABLE("refcount entries", qimg_refcount_vecs,
			   qt_refcount_vec);
	failed += QT_TABLE("refcount table entries", qimg_reftable_vecs,
			   qt_reftable_vec);
	failed += QT_TABLE("bitmap table entries", qimg_bme_vecs, qt_bme_vec);
	failed += QT_TABLE("snapshot entries", qimg_snapshot_vecs,
			   qt_snapshot_vec);
	failed += QT_TABLE("bitmap directory entries", qimg_bitmap_vecs,
			   qt_bitmap_vec);
	return failed;
}
