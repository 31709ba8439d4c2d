// SPDX-License-Identifier: GPL-2.0
/*
 * The QED part of the format core (qimg_qed.c), table-driven like
 * test_vectors.c: header vectors (a good base header with little-endian
 * patches, each bad case differing from a good one in the field it is
 * about), table entry vectors, and QEMU's run and size rules.
 */
#include <stdlib.h>

#include "qimg_tests.h"
#include "qimg_qed.h"

/* Base image: 64 KiB clusters, 4-cluster tables, L1 at 64 KiB, 1 GiB. */
#define QQ_CLUSTER	0x10000ULL
#define QQ_L1_OFF	0x10000ULL
#define QQ_FILE_SIZE	0x50000ULL	/* header + L1 + one cluster */
#define QQ_BUF_LEN	0x1000U

struct qq_patch {
	u16 off;
	u8 width;		/* 4 or 8; 0 ends the list */
	u64 val;
};

struct qq_hdr_vec {
	const char *name;
	struct qq_patch p[6];
	const char *str;	/* copied at offset 64 (a backing name) */
	u8 str_len;		/* 0: strlen(str) */
	u64 file_size;		/* 0: QQ_FILE_SIZE */
	u32 len;		/* bytes handed in; 0: QQ_BUF_LEN */
	int expect;
	const char *msg;	/* substring of the message, or NULL */
	/* On success */
	const char *backing;
	bool need_check;
	bool backing_raw;
};

#define P4(o, v) { .off = (o), .width = 4, .val = (v) }
#define P8(o, v) { .off = (o), .width = 8, .val = (v) }
#define FEAT(v) P8(16, v)
#define BACKING(off, size) P4(56, off), P4(60, size)

static const struct qq_hdr_vec qq_hdr_vecs[] = {
	{ .name = "qed/good" },
	{ .name = "qed/good-unaligned-file-size", .file_size = 0x5ffffULL },
	{ .name = "qed/good-need-check", .p = { FEAT(2) },
	  .need_check = true },
	{ .name = "qed/good-backing", .p = { FEAT(1), BACKING(64, 5) },
	  .str = "b.qed", .backing = "b.qed" },
	{ .name = "qed/good-backing-raw", .p = { FEAT(5), BACKING(64, 5) },
	  .str = "r.raw", .backing = "r.raw", .backing_raw = true },
	{ .name = "qed/good-backing-nul-ends-name",
	  .p = { FEAT(1), BACKING(64, 8) }, .str = "ab\0cdefg", .str_len = 8,
	  .backing = "ab" },
	{ .name = "qed/good-backing-bits-ignored-without-feature",
	  .p = { BACKING(0xfffffff0, 0xffff) } },
	{ .name = "qed/good-unknown-compat-autoclear",
	  .p = { P8(24, 0xff), P8(32, 0xff00) } },
	{ .name = "qed/good-cluster-4k", .p = { P4(4, 4096), P8(40, 4096) } },
	{ .name = "qed/good-table-16", .p = { P4(8, 16) },
	  .file_size = 0x120000ULL },
	{ .name = "qed/good-max-size", .p = { P8(48, 1ULL << 46) } },
	{ .name = "qed/good-image-size-0", .p = { P8(48, 0) } },
	{ .name = "qed/bad-magic", .p = { P4(0, 0x00444552) },
	  .expect = -EINVAL, .msg = "Image not in QED format" },
	{ .name = "qed/bad-short-2-bytes", .len = 2, .expect = -EINVAL,
	  .msg = "Image not in QED format" },
	{ .name = "qed/bad-short-3-bytes", .len = 3, .expect = -EINVAL,
	  .msg = "QED cluster size is invalid" },
	{ .name = "qed/bad-feature", .p = { FEAT(8) }, .expect = -EOPNOTSUPP,
	  .msg = "Unsupported QED features: 8" },
	{ .name = "qed/bad-feature-high", .p = { FEAT(BIT_ULL(63) | 1) },
	  .expect = -EOPNOTSUPP, .msg = "8000000000000000" },
	{ .name = "qed/bad-cluster-2k", .p = { P4(4, 2048) },
	  .expect = -EINVAL, .msg = "QED cluster size is invalid" },
	{ .name = "qed/bad-cluster-128M", .p = { P4(4, 128U << 20) },
	  .expect = -EINVAL, .msg = "QED cluster size is invalid" },
	{ .name = "qed/bad-cluster-not-pow2", .p = { P4(4, 3 * 4096) },
	  .expect = -EINVAL, .msg = "QED cluster size is invalid" },
	{ .name = "qed/bad-cluster-0", .p = { P4(4, 0) },
	  .expect = -EINVAL, .msg = "QED cluster size is invalid" },
	{ .name = "qed/bad-table-0", .p = { P4(8, 0) },
	  .expect = -EINVAL, .msg = "QED table size is invalid" },
	{ .name = "qed/bad-table-3", .p = { P4(8, 3) },
	  .expect = -EINVAL, .msg = "QED table size is invalid" },
	{ .name = "qed/bad-table-32", .p = { P4(8, 32) },
	  .expect = -EINVAL, .msg = "QED table size is invalid" },
	/* QEMU makes these (table_size=1) but cannot open them. */
	{ .name = "qed/bad-table-1", .p = { P4(8, 1) },
	  .expect = -EINVAL, .msg = "QED table offset is invalid" },
	{ .name = "qed/bad-image-size-unaligned", .p = { P8(48, 1000) },
	  .expect = -EINVAL, .msg = "QED image size is invalid" },
	{ .name = "qed/bad-image-size-too-big",
	  .p = { P8(48, (1ULL << 46) + 512) },
	  .expect = -EINVAL, .msg = "QED image size is invalid" },
	/* 2^27 entries * 64 MiB * 2^27 wraps to 0 in QEMU's arithmetic. */
	{ .name = "qed/bad-image-size-wrapped-max",
	  .p = { P4(4, 64U << 20), P4(8, 16), P8(48, 512) },
	  .expect = -EINVAL, .msg = "QED image size is invalid" },
	{ .name = "qed/bad-l1-unaligned", .p = { P8(40, QQ_L1_OFF + 512) },
	  .expect = -EINVAL, .msg = "QED table offset is invalid" },
	{ .name = "qed/bad-l1-in-header", .p = { P8(40, 0) },
	  .expect = -EINVAL, .msg = "QED table offset is invalid" },
	{ .name = "qed/bad-l1-past-eof", .p = { P8(40, 0x20000) },
	  .expect = -EINVAL, .msg = "QED table offset is invalid" },
	{ .name = "qed/bad-l1-truncated-file", .file_size = 0x4fe00ULL,
	  .expect = -EINVAL, .msg = "QED table offset is invalid" },
	/* A partial last sector counts as a whole one, as in QEMU. */
	{ .name = "qed/good-file-ends-in-last-sector",
	  .file_size = 0x4fe01ULL },
	{ .name = "qed/bad-l1-wraps", .p = { P8(40, 0xffffffffffff0000ULL) },
	  .file_size = ~0ULL, .expect = -EINVAL,
	  .msg = "QED table offset is invalid" },
	{ .name = "qed/bad-l1-header-size-2", .p = { P4(12, 2) },
	  .expect = -EINVAL, .msg = "QED table offset is invalid" },
	{ .name = "qed/bad-header-size-too-large",
	  .p = { P4(12, 0x10000), P8(40, 1ULL << 32) },
	  .file_size = 1ULL << 33, .expect = -EINVAL,
	  .msg = "QED header size is too large" },
	{ .name = "qed/bad-backing-past-header",
	  .p = { FEAT(1), BACKING(0xfff0, 0x11) }, .expect = -EINVAL,
	  .msg = "QED backing filename offset is invalid" },
	{ .name = "qed/bad-backing-offset-wraps-32",
	  .p = { FEAT(1), BACKING(0xffffffff, 2) }, .expect = -EINVAL,
	  .msg = "QED backing filename offset is invalid" },
	{ .name = "qed/bad-backing-name-too-long",
	  .p = { FEAT(1), BACKING(64, 4096) }, .expect = -EINVAL,
	  .msg = "Failed to read backing filename" },
};

static u8 qq_buf[QQ_BUF_LEN];

static void qq_patch(u8 *b, const struct qq_patch *p);

static void qq_base(u8 *b)
{
	static const struct qq_patch base[] = {
		P4(0, QIMG_QED_MAGIC), P4(4, QQ_CLUSTER), P4(8, 4),
		P4(12, 1), P8(40, QQ_L1_OFF), P8(48, 1ULL << 30),
	};
	size_t i;

	memset(b, 0, QQ_BUF_LEN);
	for (i = 0; i < ARRAY_SIZE(base); i++)
		qq_patch(b, &base[i]);
}

static void qq_patch(u8 *b, const struct qq_patch *p)
{
	u8 tmp[8];

	put_unaligned_le64(p->val, tmp);
	memcpy(b + p->off, tmp, p->width);
}

static void test_qed_header(void **state)
{
	const struct qq_hdr_vec *v = *state;
	struct qimg_err err = { "" };
	struct qimg_qed_header h;
	char name[QIMG_QED_MAX_BACKING_NAME + 1];
	size_t i;
	int ret;

	qq_base(qq_buf);
	for (i = 0; i < ARRAY_SIZE(v->p) && v->p[i].width; i++)
		qq_patch(qq_buf, &v->p[i]);
	if (v->str)
		memcpy(qq_buf + 64, v->str,
		       v->str_len ? v->str_len : strlen(v->str));
	ret = qimg_qed_header_decode(qq_buf, v->len ? v->len : QQ_BUF_LEN,
				     v->file_size ? v->file_size : QQ_FILE_SIZE,
				     &h, &err);
	if (ret != v->expect)
		fail_msg("%s: got %d (%s), expected %d", v->name, ret,
			 err.msg, v->expect);
	if (ret) {
		assert_true(err.msg[0] != '\0');
		if (v->msg && !strstr(err.msg, v->msg))
			fail_msg("message '%s' lacks '%s'", err.msg, v->msg);
		return;
	}
	assert_true(qimg_qed_probe(qq_buf, QQ_BUF_LEN));
	assert_int_equal(h.table_entries, h.table_bytes / 8);
	assert_int_equal(1U << h.cluster_bits, h.cluster_size);
	assert_int_equal(1U << h.table_bits, h.table_entries);
	assert_true(h.file_size % h.cluster_size == 0);
	assert_true(h.header_bytes == (u64)h.header_size * h.cluster_size);
	assert_int_equal(h.need_check, v->need_check);
	assert_int_equal(h.backing_raw, v->backing_raw);
	assert_int_equal(h.has_backing, v->backing != NULL);
	if (v->backing) {
		assert_int_equal(qimg_qed_backing_name(&h, qq_buf +
						       h.backing_filename_offset,
						       name, sizeof(name), &err),
				 0);
		assert_string_equal(name, v->backing);
		assert_int_equal(qimg_qed_backing_name(&h, qq_buf, name,
						       h.backing_filename_size,
						       &err), -EINVAL);
	}
}

/* Entry vectors, decoded against the good base header. */
struct qq_ent_vec {
	const char *name;
	bool l1;		/* an L1 entry, else an L2 entry */
	u64 raw;
	int expect;
	enum qimg_qed_cluster type;	/* L2 entries */
	u64 offset;		/* decoded L2 table or data offset */
};

static const struct qq_ent_vec qq_ent_vecs[] = {
	{ "qed/l1-empty", true, 0, 0, 0, 0 },
	{ "qed/l1-good", true, 0x10000, 0, 0, 0x10000 },
	{ "qed/l1-zero-marker", true, 1, -EUCLEAN, 0, 0 },
	{ "qed/l1-unaligned", true, 0x10008, -EUCLEAN, 0, 0 },
	{ "qed/l1-last-cluster-past-eof", true, 0x20000, -EUCLEAN, 0, 0 },
	{ "qed/l1-wraps", true, 0xfffffffffffe0000ULL, -EUCLEAN, 0, 0 },
	{ "qed/l2-unalloc", false, 0, 0, QIMG_QED_CL_UNALLOC, 0 },
	{ "qed/l2-zero", false, 1, 0, QIMG_QED_CL_ZERO, 0 },
	{ "qed/l2-data", false, 0x40000, 0, QIMG_QED_CL_DATA, 0x40000 },
	{ "qed/l2-data-first-after-header", false, 0x10000, 0,
	  QIMG_QED_CL_DATA, 0x10000 },
	{ "qed/l2-at-eof", false, 0x60000, -EUCLEAN, QIMG_QED_CL_DATA, 0 },
	{ "qed/l2-in-partial-last-cluster", false, 0x50000, -EUCLEAN,
	  QIMG_QED_CL_DATA, 0 },
	{ "qed/l2-unaligned", false, 0x40200, -EUCLEAN, QIMG_QED_CL_DATA, 0 },
	{ "qed/l2-two", false, 2, -EUCLEAN, QIMG_QED_CL_DATA, 0 },
	{ "qed/l2-in-header", false, 0x8000, -EUCLEAN, QIMG_QED_CL_DATA, 0 },
	{ "qed/l2-huge", false, ~0ULL << 16, -EUCLEAN, QIMG_QED_CL_DATA, 0 },
};

static void qq_good_header(struct qimg_qed_header *h, u64 file_size)
{
	qq_base(qq_buf);
	assert_int_equal(qimg_qed_header_decode(qq_buf, QQ_BUF_LEN, file_size,
						h, NULL), 0);
}

static void test_qed_entry(void **state)
{
	const struct qq_ent_vec *v = *state;
	struct qimg_err err = { "" };
	struct qimg_qed_l2_entry e;
	struct qimg_qed_header h;
	u64 off = 0xdead;
	int ret;

	/* The partial-cluster case has a file that ends inside 0x50000. */
	qq_good_header(&h, QQ_FILE_SIZE + 0x8000);
	if (v->l1) {
		ret = qimg_qed_l1_decode(&h, v->raw, &off, &err);
	} else {
		ret = qimg_qed_l2_decode(&h, v->raw, &e, &err);
		off = e.host_offset;
		assert_int_equal(e.type, v->type);
	}
	if (ret != v->expect)
		fail_msg("%s: got %d (%s), expected %d", v->name, ret,
			 err.msg, v->expect);
	if (ret)
		assert_true(err.msg[0] != '\0');
	assert_true(off == (ret ? 0 : v->offset));
}

/* QEMU's runs of like entries, and the guest-offset indexes. */
static void test_qed_runs(void **state)
{
	static const u64 t[] = { 0, 0, 0, 1, 1, 0x20000, 0x30000, 0x50000,
				 0x60000, 0x60000 };
	struct qimg_qed_header h;
	u8 *table;
	u64 first;
	size_t i;

	(void)state;
	qq_good_header(&h, QQ_FILE_SIZE);
	table = calloc(1, h.table_bytes);
	assert_non_null(table);
	for (i = 0; i < ARRAY_SIZE(t); i++)
		qimg_qed_table_set(table, (u32)i, t[i]);
	assert_int_equal(qimg_qed_l2_run(&h, table, 0, 100, &first), 3);
	assert_true(first == 0);
	assert_int_equal(qimg_qed_l2_run(&h, table, 1, 1, &first), 1);
	assert_int_equal(qimg_qed_l2_run(&h, table, 3, 100, &first), 2);
	assert_true(first == 1);
	assert_int_equal(qimg_qed_l2_run(&h, table, 5, 100, &first), 2);
	assert_true(first == 0x20000);
	assert_int_equal(qimg_qed_l2_run(&h, table, 7, 100, &first), 2);
	/* The same offset twice is not a run. */
	assert_int_equal(qimg_qed_l2_run(&h, table, 8, 100, &first), 1);
	/* The tail of the table is one unallocated run up to its end. */
	assert_int_equal(qimg_qed_l2_run(&h, table, 10, ~0U, &first),
			 h.table_entries - 10);
	assert_int_equal(qimg_qed_l2_run(&h, table, h.table_entries, 1,
					 &first), 0);
	assert_int_equal(qimg_qed_l2_run(&h, table, 0, 0, &first), 0);
	free(table);

	/* 64 KiB clusters, 32768 entries: one L2 table maps 2 GiB. */
	assert_true(qimg_qed_l2_span(&h) == 1ULL << 31);
	assert_int_equal(qimg_qed_l1_index(&h, (1ULL << 31) - 1), 0);
	assert_int_equal(qimg_qed_l1_index(&h, 3ULL << 31), 3);
	assert_int_equal(qimg_qed_l2_index(&h, 0x10000 * 5 + 7), 5);
	assert_int_equal(qimg_qed_l2_index(&h, (1ULL << 31) + 0x10000), 1);
	assert_true(qimg_qed_max_image_size(65536, 4) == 1ULL << 46);
	assert_true(qimg_qed_max_image_size(4096, 1) == 1ULL << 30);
	assert_true(qimg_qed_max_image_size(64U << 20, 16) == 0);
	assert_false(qimg_qed_probe("QED", 3));
	assert_true(qimg_qed_probe("QED\0", 4));
	assert_false(qimg_qed_probe("QFI\xfb", 4));
}

#define QQ_TABLE(group, tbl, fn) \
	qimg_test_run_table(group, tbl, ARRAY_SIZE(tbl), sizeof(tbl[0]), \
			    offsetof(__typeof__(tbl[0]), name), fn)

int qimg_test_run_qed(void)
{
	const struct CMUnitTest props[] = {
		cmocka_unit_test(test_qed_runs),
	};
	int failed = 0;

	failed += QQ_TABLE("qed-headers", qq_hdr_vecs, test_qed_header);
	failed += QQ_TABLE("qed-entries", qq_ent_vecs, test_qed_entry);
	failed += cmocka_run_group_tests_name("qed-properties", props, NULL,
					      NULL);
	return failed;
}
