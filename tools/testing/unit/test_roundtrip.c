// SPDX-License-Identifier: GPL-2.0
/*
 * Property tests of the format core: encoders and decoders agree over whole
 * ranges of parameters, geometry follows the spec's formulas, and garbage
 * never crashes the header decoder.
 */
#include <stdlib.h>

#include "qimg_tests.h"

/* Small deterministic PRNG so failures reproduce. */
static u64 qt_rng = 0x9e3779b97f4a7c15ULL;

static u64 qt_rand(void)
{
	qt_rng ^= qt_rng << 13;
	qt_rng ^= qt_rng >> 7;
	qt_rng ^= qt_rng << 17;
	return qt_rng;
}

static void qt_geom(struct qimg_header *h, u32 cb, u32 order, bool ext_l2,
		    u64 size)
{
	memset(h, 0, sizeof(*h));
	h->version = 3;
	h->cluster_bits = cb;
	h->refcount_order = order;
	h->size = size;
	if (ext_l2)
		h->incompatible_features = QIMG_INCOMPAT_EXTL2;
	assert_int_equal(qimg_geom_init(h, NULL), 0);
}

static void test_geometry(void **state)
{
	struct qimg_header *h = malloc(sizeof(*h));
	u32 cb, order;

	assert_non_null(h);
	for (cb = QIMG_MIN_CLUSTER_BITS; cb <= QIMG_MAX_CLUSTER_BITS; cb++) {
		for (order = 0; order <= QIMG_MAX_REFCOUNT_ORDER; order++) {
			struct qimg_geom *g = &h->geom;

			qt_geom(h, cb, order, false, 1ULL << 30);
			assert_true(g->cluster_size == 1ULL << cb);
			assert_true(g->l2_entries == (1ULL << cb) / 8);
			/* refcount_block_entries = cluster_size * 8 / bits */
			assert_true(g->rb_entries ==
				    (1ULL << cb) * 8 / (1U << order));
			assert_true(g->refcount_max ==
				    (order == 6 ? ~0ULL :
				     (1ULL << (1U << order)) - 1));
			assert_int_equal(g->csize_shift, 62 - (cb - 8));
			assert_true(g->l1_size ==
				    qimg_l1_entries_for(cb, false, 1ULL << 30));
			if (cb >= 14) {
				qt_geom(h, cb, order, true, 1ULL << 30);
				assert_true(g->l2_entries == (1ULL << cb) / 16);
				assert_int_equal(g->subcluster_bits, cb - 5);
			}
		}
	}
	/* Address helpers follow the spec's formulas. */
	qt_geom(h, 16, 4, false, 1ULL << 40);
	assert_true(qimg_l1_index(&h->geom, 0x12345678901ULL) ==
		    0x12345678901ULL / 65536 / 8192);
	assert_true(qimg_l2_index(&h->geom, 0x12345678901ULL) ==
		    (0x12345678901ULL / 65536) % 8192);
	assert_true(qimg_reftable_index(&h->geom, 0x12345678901ULL) ==
		    0x12345678901ULL / 65536 / 32768);
	assert_true(qimg_refblock_index(&h->geom, 0x12345678901ULL) ==
		    (0x12345678901ULL / 65536) % 32768);
	free(h);
}

static void test_l1_entries_for(void **state)
{
	/* 64 KiB clusters map 512 MiB per L2 table (256 MiB extended). */
	assert_true(qimg_l1_entries_for(16, false, 0) == 0);
	assert_true(qimg_l1_entries_for(16, false, 1) == 1);
	assert_true(qimg_l1_entries_for(16, false, 512ULL << 20) == 1);
	assert_true(qimg_l1_entries_for(16, false, (512ULL << 20) + 1) == 2);
	assert_true(qimg_l1_entries_for(16, true, 512ULL << 20) == 2);
	assert_true(qimg_l1_entries_for(9, false, 1ULL << 30) == 32768);
	assert_true(qimg_l1_entries_for(21, false, ~0ULL) ==
		    (~0ULL >> 39) + 1);
	assert_true(qimg_l1_entries_for(8, false, 1) == 0);
}

static void test_compressed_roundtrip(void **state)
{
	struct qimg_header h;
	u32 cb, i;

	for (cb = QIMG_MIN_CLUSTER_BITS; cb <= QIMG_MAX_CLUSTER_BITS; cb++) {
		qt_geom(&h, cb, 4, false, 1ULL << 30);
		for (i = 0; i < 2000; i++) {
			u64 off = (qt_rand() & ((1ULL << 48) - 1)) |
				  (1ULL << cb);
			u64 len = 1 + qt_rand() % (1ULL << cb);
			u64 raw = qimg_l2_encode_compressed(&h.geom, off, len);
			struct qimg_l2_entry e;
			struct qimg_err err;
			int ret;

			assert_true(raw != 0);
			ret = qimg_l2_decode(&h.geom, 3, raw, 0, 1ULL << 56,
					     &e, &err);
			if (ret)
				fail_msg("cb %u off %#llx len %llu: %s", cb,
					 off, len, err.msg);
			assert_int_equal(e.type, QIMG_CLUSTER_COMPRESSED);
			assert_true(e.host_offset == off);
			/* An upper bound, less than one sector too big. */
			assert_true(e.compressed_len >= len);
			assert_true(e.compressed_len - len < 512);
		}
		/* Longer than the size field can say: refused. */
		assert_true(qimg_l2_encode_compressed(&h.geom, 1ULL << cb,
						      ((h.geom.csize_mask + 1)
						       << 9) + 1) == 0);
		assert_true(qimg_l2_encode_compressed(&h.geom, 1ULL << 56,
						      512) == 0);
	}
}

static void test_refcount_roundtrip(void **state)
{
	u8 block[4096], shadow_val[256];
	u32 order, i;

	for (order = 0; order <= QIMG_MAX_REFCOUNT_ORDER; order++) {
		u64 n = sizeof(block) * 8 >> order;
		u64 max = order == 6 ? ~0ULL : (1ULL << (1U << order)) - 1;
		u64 vals[256];

		memset(block, 0, sizeof(block));
		memset(shadow_val, 0, sizeof(shadow_val));
		/* Set 256 spread entries, then read all of them back. */
		for (i = 0; i < 256; i++) {
			vals[i] = qt_rand() & max;
			assert_int_equal(qimg_refcount_set(block, order,
							   i * (n / 256),
							   vals[i]), 0);
		}
		for (i = 0; i < 256; i++)
			assert_true(qimg_refcount_get(block, order,
						      i * (n / 256)) ==
				    vals[i]);
		if (order < 6)
			assert_int_equal(qimg_refcount_set(block, order, 0,
							   max + 1),
					 -ERANGE);
	}
}

static void test_subcluster_types(void **state)
{
	struct qimg_header h;
	struct qimg_l2_entry e;
	struct qimg_err err;

	qt_geom(&h, 16, 4, true, 1ULL << 30);
	assert_int_equal(qimg_l2_decode(&h.geom, 3, 0x20000,
					0x0000000200000005ULL, 1ULL << 20,
					&e, &err), 0);
	assert_int_equal(qimg_subcluster_type(&e, 0), QIMG_SUBCLUSTER_NORMAL);
	assert_int_equal(qimg_subcluster_type(&e, 1), QIMG_SUBCLUSTER_ZERO);
	assert_int_equal(qimg_subcluster_type(&e, 2), QIMG_SUBCLUSTER_NORMAL);
	assert_int_equal(qimg_subcluster_type(&e, 3),
			 QIMG_SUBCLUSTER_UNALLOCATED);
	assert_int_equal(qimg_subcluster_type(&e, 31),
			 QIMG_SUBCLUSTER_UNALLOCATED);
	assert_int_equal(qimg_subcluster_type(&e, 32),
			 QIMG_SUBCLUSTER_UNALLOCATED);

	qt_geom(&h, 16, 4, false, 1ULL << 30);
	assert_int_equal(qimg_l2_decode(&h.geom, 3, 0x20000, 0, 1ULL << 20,
					&e, &err), 0);
	assert_int_equal(qimg_subcluster_type(&e, 7), QIMG_SUBCLUSTER_NORMAL);
	assert_int_equal(qimg_l2_decode(&h.geom, 3, 1, 0, 1ULL << 20, &e,
					&err), 0);
	assert_int_equal(qimg_subcluster_type(&e, 7), QIMG_SUBCLUSTER_ZERO);
	assert_int_equal(qimg_l2_decode(&h.geom, 3, 0, 0, 1ULL << 20, &e,
					&err), 0);
	assert_int_equal(qimg_subcluster_type(&e, 7),
			 QIMG_SUBCLUSTER_UNALLOCATED);
	assert_true(qimg_l2_encode_zero(0x20000, true) ==
		    (QIMG_OFLAG_COPIED | 0x20001));
	assert_true(qimg_l2_encode_normal(0x20000, false) == 0x20000);
}

static void test_peek(void **state)
{
	u8 buf[72];
	struct qimg_err err;

	memset(buf, 0, sizeof(buf));
	put_unaligned_be32(QIMG_MAGIC, buf);
	put_unaligned_be32(3, buf + 4);
	put_unaligned_be32(16, buf + 20);
	assert_true(qimg_header_peek_cluster_size(buf, 72, &err) == 65536);
	assert_true(qimg_header_peek_cluster_size(buf, 71, &err) == -EINVAL);
	put_unaligned_be32(22, buf + 20);
	assert_true(qimg_header_peek_cluster_size(buf, 72, &err) ==
		    -EOPNOTSUPP);
	put_unaligned_be32(8, buf + 20);
	assert_true(qimg_header_peek_cluster_size(buf, 72, &err) == -EUCLEAN);
	put_unaligned_be32(5, buf + 4);
	assert_true(qimg_header_peek_cluster_size(buf, 72, &err) ==
		    -EOPNOTSUPP);
	buf[0] = 0;
	assert_true(qimg_header_peek_cluster_size(buf, 72, NULL) == -EINVAL);
}

/* A header a creator would produce: 64 KiB clusters unless told. */
static void qt_new_header(struct qimg_header *h, u32 cb)
{
	u64 cs = 1ULL << cb;

	memset(h, 0, sizeof(*h));
	h->version = 3;
	h->cluster_bits = cb;
	h->size = 1ULL << 30;
	h->refcount_order = 4;
	h->refcount_table_offset = cs;
	h->refcount_table_clusters = 1;
	h->l1_table_offset = 3 * cs;
	assert_int_equal(qimg_geom_init(h, NULL), 0);
	h->l1_size = h->geom.l1_size;
}

static void test_encode_features(void **state)
{
	static u8 buf[65536];
	struct qimg_header *h = calloc(1, sizeof(*h));
	struct qimg_header *d = calloc(1, sizeof(*d));
	char name[48];
	struct qimg_err err = { "" };
	int n;

	assert_non_null(h);
	assert_non_null(d);
	qt_new_header(h, 16);
	strcpy(h->backing_file, "/some/base.qcow2");
	strcpy(h->backing_fmt, "qcow2");
	h->has_journal_ext = true;
	h->journal_offset = 0x40000;
	h->journal_size = 0x10000;
	n = qimg_header_encode(h, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(get_unaligned_be32(buf + 100), 112);
	/* The backing name follows the end mark. */
	assert_memory_equal(buf + get_unaligned_be64(buf + 8),
			    "/some/base.qcow2", 16);
	assert_int_equal(get_unaligned_be32(buf + 16), 16);
	assert_int_equal(qimg_header_decode(buf, sizeof(buf), 0x50000, d,
					    &err), 0);
	assert_true(d->backing_file_offset == (u64)n - 16);
	assert_int_equal(d->ext_end, d->backing_file_offset);
	assert_int_equal(qimg_feature_name(buf, sizeof(buf), d,
					   QIMG_FEAT_INCOMPAT, 32, name,
					   sizeof(name)), 0);
	assert_string_equal(name, "journal dirty");
	assert_int_equal(qimg_feature_name(buf, sizeof(buf), d,
					   QIMG_FEAT_AUTOCLEAR, 33, name,
					   sizeof(name)), 0);
	assert_string_equal(name, "metadata checksums");
	assert_int_equal(qimg_feature_name(buf, sizeof(buf), d,
					   QIMG_FEAT_AUTOCLEAR, 32, name, 5),
			 0);
	assert_string_equal(name, "jour");
	assert_int_equal(qimg_feature_name(buf, sizeof(buf), d,
					   QIMG_FEAT_COMPAT, 9, name,
					   sizeof(name)), -ENOENT);
	assert_string_equal(qimg_known_feature_name(QIMG_FEAT_INCOMPAT, 4),
			    "extended L2 entries");
	assert_null(qimg_known_feature_name(QIMG_FEAT_INCOMPAT, 5));

	/* A requested backing offset after the end mark is kept. */
	h->backing_file_offset = 0x800;
	n = qimg_header_encode(h, buf, sizeof(buf));
	assert_int_equal(n, 0x800 + 16);
	assert_true(get_unaligned_be64(buf + 8) == 0x800);
	/* One inside the extensions is moved after them. */
	h->backing_file_offset = 120;
	n = qimg_header_encode(h, buf, sizeof(buf));
	assert_true(get_unaligned_be64(buf + 8) > 120);
	/* Too small a buffer. */
	assert_int_equal(qimg_header_encode(h, buf, 100), -ENOSPC);
	free(h);
	free(d);
}

static void test_encode_small_cluster(void **state)
{
	u8 buf[512];
	struct qimg_header *h = calloc(1, sizeof(*h));
	struct qimg_header *d = calloc(1, sizeof(*d));
	struct qimg_err err = { "" };
	char name[48];
	int n;

	assert_non_null(h);
	assert_non_null(d);
	qt_new_header(h, 9);
	/* The full table (11 entries) cannot fit in 512 bytes. */
	n = qimg_header_encode(h, buf, sizeof(buf));
	assert_true(n > 0 && n <= 512);
	assert_int_equal(qimg_header_decode(buf, sizeof(buf), 1 << 20, d,
					    &err), 0);
	assert_int_equal(qimg_feature_name(buf, sizeof(buf), d,
					   QIMG_FEAT_INCOMPAT, 32, name,
					   sizeof(name)), 0);
	assert_int_equal(qimg_feature_name(buf, sizeof(buf), d,
					   QIMG_FEAT_INCOMPAT, 0, name,
					   sizeof(name)), -ENOENT);
	/* A long backing name leaves no room for any table. */
	memset(h->backing_file, 'x', 300);
	n = qimg_header_encode(h, buf, sizeof(buf));
	assert_true(n > 0 && n <= 512);
	assert_int_equal(qimg_header_decode(buf, sizeof(buf), 1 << 20, d,
					    &err), 0);
	assert_int_equal(strlen(d->backing_file), 300);
	/* Over the cluster: refused. */
	memset(h->backing_file, 'x', 450);
	assert_int_equal(qimg_header_encode(h, buf, sizeof(buf)), -ENOSPC);
	/* v2 cannot carry v3 features. */
	h->backing_file[0] = '\0';
	h->version = 2;
	h->compatible_features = QIMG_COMPAT_LAZY_REFCOUNTS;
	assert_int_equal(qimg_header_encode(h, buf, sizeof(buf)), -EINVAL);
	h->compatible_features = 0;
	h->refcount_order = 5;
	assert_int_equal(qimg_header_encode(h, buf, sizeof(buf)), -EINVAL);
	h->refcount_order = 4;
	n = qimg_header_encode(h, buf, sizeof(buf));
	assert_int_equal(n, 80);
	free(h);
	free(d);
}

static void test_unknown_exts(void **state)
{
	static u8 buf[4096];
	struct qimg_header *h = calloc(1, sizeof(*h));
	struct qimg_err err = { "" };
	char name[48];
	u32 i, off;

	assert_non_null(h);
	qt_new_header(h, 12);
	assert_true(qimg_header_encode(h, buf, sizeof(buf)) > 0);
	/* Replace the extensions with 16 unknown ones (4 data bytes each). */
	memset(buf + 112, 0, sizeof(buf) - 112);
	for (i = 0, off = 112; i < QIMG_MAX_UNKNOWN_EXTS; i++, off += 16) {
		put_unaligned_be32(0x1000 + i, buf + off);
		put_unaligned_be32(4, buf + off + 4);
	}
	assert_int_equal(qimg_header_decode(buf, sizeof(buf), 1 << 20, h,
					    &err), 0);
	assert_int_equal(h->nb_unknown_exts, QIMG_MAX_UNKNOWN_EXTS);
	assert_int_equal(h->unknown_exts[3].type, 0x1003);
	assert_int_equal(h->unknown_exts[3].len, 4);
	assert_int_equal(h->unknown_exts[3].offset, 112 + 3 * 16 + 8);
	assert_int_equal(h->ext_end, off + 8);
	/* One more is refused rather than silently dropped. */
	put_unaligned_be32(0x2000, buf + off);
	assert_int_equal(qimg_header_decode(buf, sizeof(buf), 1 << 20, h,
					    &err), -EFBIG);

	/* Feature names from the image are made printable. */
	memset(buf + 112, 0, sizeof(buf) - 112);
	put_unaligned_be32(QIMG_EXT_FEATURE_TABLE, buf + 112);
	put_unaligned_be32(48, buf + 116);
	buf[120] = QIMG_FEAT_INCOMPAT;
	buf[121] = 40;
	memcpy(buf + 122, "bad\n\x1b[0mname", 12);
	put_unaligned_be64(1ULL << 40, buf + 72);
	assert_int_equal(qimg_header_decode(buf, sizeof(buf), 1 << 20, h,
					    &err), -EOPNOTSUPP);
	assert_string_equal(err.msg, "unsupported feature: bad??[0mname");
	/* A full-length name (no NUL) is cut at 46 characters. */
	memset(buf + 122, 'n', 46);
	assert_int_equal(qimg_feature_name(buf, sizeof(buf), h,
					   QIMG_FEAT_INCOMPAT, 40, name,
					   sizeof(name)), 0);
	assert_int_equal(strlen(name), 46);
	free(h);
}

/*
 * Garbage with a valid magic and version: the decoder must never crash,
 * and must either accept or explain.  ASan/UBSan watch the reads.
 */
static void test_garbage_headers(void **state)
{
	u32 i, j;

	for (i = 0; i < 20000; i++) {
		u32 len = 72 + (u32)(qt_rand() % 1200);
		u8 *buf = malloc(len);
		struct qimg_header *h = malloc(sizeof(*h));
		struct qimg_err err = { "" };
		int ret;

		assert_non_null(buf);
		assert_non_null(h);
		for (j = 0; j < len; j++)
			buf[j] = (u8)qt_rand();
		put_unaligned_be32(QIMG_MAGIC, buf);
		put_unaligned_be32(2 + (i & 1), buf + 4);
		/* Mostly plausible geometry so the deep paths run. */
		if ((i % 4) && len >= 112) {
			put_unaligned_be32(9 + (u32)(qt_rand() % 3), buf + 20);
			put_unaligned_be32(104 + 8 * (u32)(qt_rand() % 3),
					   buf + 100);
			put_unaligned_be64(0, buf + 72);
			put_unaligned_be32(0, buf + 32);
		}
		ret = qimg_header_decode(buf, len, qt_rand() % (1ULL << 40),
					 h, &err);
		if (ret)
			assert_true(err.msg[0] != '\0');
		free(buf);
		free(h);
	}
}

int qimg_test_run_roundtrip(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_geometry),
		cmocka_unit_test(test_l1_entries_for),
		cmocka_unit_test(test_compressed_roundtrip),
		cmocka_unit_test(test_refcount_roundtrip),
		cmocka_unit_test(test_subcluster_types),
		cmocka_unit_test(test_peek),
		cmocka_unit_test(test_encode_features),
		cmocka_unit_test(test_encode_small_cluster),
		cmocka_unit_test(test_unknown_exts),
		cmocka_unit_test(test_garbage_headers),
	};

	return cmocka_run_group_tests_name("properties", tests, NULL, NULL);
}
