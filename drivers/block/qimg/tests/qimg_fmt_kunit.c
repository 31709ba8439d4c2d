// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_fmt: decoding and validating the image header, the
 * first thing the driver does with bytes nobody vouched for.  Every row of
 * the table is one change to a known-good image (a field, the buffer
 * length, the file size) and the errno qimg_header_decode() must return;
 * the buffers are allocated at their exact length so KASAN reports any read
 * past what the caller handed in.
 */
#include <linux/random.h>
#include "qimg_kunit.h"
#include "qimg_vectors.h"

#define QIMG_T_CB	16
#define QIMG_T_CS	BIT(QIMG_T_CB)
/* The known-good image: header | refcount table | refcount block | L1 */
#define QIMG_T_RT	(1ULL * QIMG_T_CS)
#define QIMG_T_L1	(3ULL * QIMG_T_CS)
#define QIMG_T_L1_SIZE	8
#define QIMG_T_FILE	(4ULL * QIMG_T_CS)
#define QIMG_T_VSIZE	BIT_ULL(30)

/* Byte offsets of the header fields (qcow2 spec, "Header"). */
enum {
	QH_MAGIC = 0, QH_VERSION = 4, QH_BACKING_OFF = 8, QH_BACKING_LEN = 16,
	QH_CLUSTER_BITS = 20, QH_SIZE = 24, QH_CRYPT = 32, QH_L1_SIZE = 36,
	QH_L1_OFF = 40, QH_RT_OFF = 48, QH_RT_CLUSTERS = 56, QH_NB_SNAP = 60,
	QH_SNAP_OFF = 64, QH_INCOMPAT = 72, QH_COMPAT = 80, QH_AUTOCLEAR = 88,
	QH_REFCOUNT_ORDER = 96, QH_HEADER_LEN = 100, QH_COMPRESSION = 104,
	QH_EXTS = 112,
};

static void qimg_t_put(u8 *p, unsigned int off, unsigned int width, u64 v)
{
	switch (width) {
	case 1:
		p[off] = v;
		break;
	case 4:
		put_unaligned_be32(v, p + off);
		break;
	case 8:
		put_unaligned_be64(v, p + off);
		break;
	}
}

/* The first cluster of a fresh 1 GiB v3 image with 64 KiB clusters. */
static void qimg_t_good_header(u8 *p)
{
	memset(p, 0, QIMG_T_CS);
	qimg_t_put(p, QH_MAGIC, 4, QIMG_MAGIC);
	qimg_t_put(p, QH_VERSION, 4, 3);
	qimg_t_put(p, QH_CLUSTER_BITS, 4, QIMG_T_CB);
	qimg_t_put(p, QH_SIZE, 8, QIMG_T_VSIZE);
	qimg_t_put(p, QH_L1_SIZE, 4, QIMG_T_L1_SIZE);
	qimg_t_put(p, QH_L1_OFF, 8, QIMG_T_L1);
	qimg_t_put(p, QH_RT_OFF, 8, QIMG_T_RT);
	qimg_t_put(p, QH_RT_CLUSTERS, 4, 1);
	qimg_t_put(p, QH_REFCOUNT_ORDER, 4, 4);
	qimg_t_put(p, QH_HEADER_LEN, 4, QIMG_V3_HEADER_LEN_COMP);
	/* Bytes 112..119 are zero: the end-of-extensions mark. */
}

struct qimg_t_field {
	unsigned int off;
	unsigned int width;	/* 0 ends the list */
	u64 val;
};

struct qimg_t_hdr_case {
	const char *name;
	struct qimg_t_field set[4];
	int err;
	u64 file_size;		/* 0: QIMG_T_FILE */
	size_t len;		/* 0: one cluster */
	const char *msg;	/* must appear in the error message */
	/* Raw bytes written at @at (extensions, names). */
	unsigned int at;
	unsigned int raw_len;
	const u8 *raw;
};

#define F(o, w, v)	{ .off = (o), .width = (w), .val = (v) }
#define RAW(a, s)	.at = (a), .raw_len = sizeof(s) - 1, .raw = (const u8 *)(s)

static const struct qimg_t_hdr_case qimg_t_hdr_cases[] = {
	{ "good v3" },
	{ "good v2", { F(QH_VERSION, 4, 2), F(QH_INCOMPAT, 8, 0),
		       F(QH_REFCOUNT_ORDER, 4, 0), F(QH_HEADER_LEN, 4, 0) } },
	{ "dirty bit is not an error", { F(QH_INCOMPAT, 8,
					   QIMG_INCOMPAT_DIRTY) } },
	{ "corrupt bit is for the caller", { F(QH_INCOMPAT, 8,
					       QIMG_INCOMPAT_CORRUPT) } },
	{ "lazy refcounts", { F(QH_COMPAT, 8, QIMG_COMPAT_LAZY_REFCOUNTS) } },
	{ "zstd compression", { F(QH_INCOMPAT, 8, QIMG_INCOMPAT_COMPRESSION),
				F(QH_COMPRESSION, 1, QIMG_COMPRESSION_ZSTD) } },
	{ "extended L2", { F(QH_INCOMPAT, 8, QIMG_INCOMPAT_EXTL2) } },
	{ "header_length 104, no compression byte",
	  { F(QH_HEADER_LEN, 4, 104), F(QH_COMPRESSION, 1, 0) } },
	{ "refcount_order 0", { F(QH_REFCOUNT_ORDER, 4, 0) } },
	{ "refcount_order 6", { F(QH_REFCOUNT_ORDER, 4, 6) } },
	{ "backing file", { F(QH_BACKING_OFF, 8, 512), F(QH_BACKING_LEN, 4, 8) },
	  0, 0, 0, NULL, RAW(512, "base.img") },
	{ "unknown extension is kept", {}, 0, 0, 0, NULL,
	  RAW(QH_EXTS, "\x12\x34\x56\x78\0\0\0\x08qimgtest") },

	{ "bad magic", { F(QH_MAGIC, 4, 0x514649fa) }, -EINVAL },
	{ "shorter than a v2 header", {}, -EINVAL, 0, 71 },
	{ "version 1", { F(QH_VERSION, 4, 1) }, -EOPNOTSUPP },
	{ "version 4", { F(QH_VERSION, 4, 4) }, -EOPNOTSUPP },
	{ "cluster_bits 8", { F(QH_CLUSTER_BITS, 4, 8) }, -EUCLEAN },
	{ "cluster_bits 22", { F(QH_CLUSTER_BITS, 4, 22) }, -EOPNOTSUPP },
	{ "cluster_bits 2^32-1", { F(QH_CLUSTER_BITS, 4, 0xffffffff) },
	  -EOPNOTSUPP },
	{ "encrypted", { F(QH_CRYPT, 4, 1) }, -EOPNOTSUPP, 0, 0, "encrypt" },
	{ "header_length 96", { F(QH_HEADER_LEN, 4, 96) }, -EUCLEAN },
	{ "header_length not a multiple of 8", { F(QH_HEADER_LEN, 4, 108) },
	  -EUCLEAN },
	{ "header_length beyond the buffer", { F(QH_HEADER_LEN, 4, 4096) },
	  -EUCLEAN, 0, 1024 },
	{ "header_length beyond a cluster", { F(QH_HEADER_LEN, 4, 0x20000) },
	  -EUCLEAN },
	{ "refcount_order 7", { F(QH_REFCOUNT_ORDER, 4, 7) }, -EUCLEAN },
	{ "unknown incompatible bit 5", { F(QH_INCOMPAT, 8, 1ULL << 5) },
	  -EOPNOTSUPP, 0, 0, "5" },
	{ "unknown incompatible bit named by the image",
	  { F(QH_INCOMPAT, 8, 1ULL << 40) }, -EOPNOTSUPP, 0, 0, "frobnicate",
	  RAW(QH_EXTS, "\x68\x03\xf8\x57\0\0\0\x30\0\050frobnicate") },
	{ "compression type without its bit", { F(QH_COMPRESSION, 1, 1) },
	  -EUCLEAN },
	{ "unknown compression type", { F(QH_INCOMPAT, 8,
					  QIMG_INCOMPAT_COMPRESSION),
					F(QH_COMPRESSION, 1, 2) }, -EOPNOTSUPP },
	{ "journal dirty without a journal",
	  { F(QH_INCOMPAT, 8, QIMG_INCOMPAT_JOURNAL_DIRTY) }, -EUCLEAN },
	{ "virtual size above 2 EiB", { F(QH_SIZE, 8, (1ULL << 61) + 1) },
	  -EFBIG },
	{ "virtual size 2^64-1", { F(QH_SIZE, 8, U64_MAX) }, -EFBIG },
	{ "L1 table too small", { F(QH_L1_SIZE, 4, 1) }, -EUCLEAN },
	{ "L1 table above 32 MiB", { F(QH_L1_SIZE, 4, 0x400001) }, -EFBIG },
	{ "L1 table not aligned", { F(QH_L1_OFF, 8, QIMG_T_L1 + 512) },
	  -EUCLEAN },
	{ "L1 table on the header", { F(QH_L1_OFF, 8, 0) }, -EUCLEAN },
	{ "L1 table past the end", { F(QH_L1_OFF, 8, 100ULL * QIMG_T_CS) },
	  -EUCLEAN },
	{ "L1 table offset wraps", { F(QH_L1_OFF, 8, U64_MAX & ~0xffffULL) },
	  -EUCLEAN },
	{ "L1 table on the refcount table", { F(QH_L1_OFF, 8, QIMG_T_RT) },
	  -EUCLEAN },
	{ "file shorter than its tables", {}, -EUCLEAN, 2ULL * QIMG_T_CS },
	{ "no refcount table", { F(QH_RT_CLUSTERS, 4, 0) }, -EUCLEAN },
	{ "refcount table above 8 MiB", { F(QH_RT_CLUSTERS, 4, 129) },
	  -EFBIG },
	{ "refcount table not aligned", { F(QH_RT_OFF, 8, QIMG_T_RT + 8) },
	  -EUCLEAN },
	{ "too many snapshots", { F(QH_NB_SNAP, 4, 65537),
				  F(QH_SNAP_OFF, 8, 2ULL * QIMG_T_CS) },
	  -EFBIG },
	{ "snapshot table on the header", { F(QH_NB_SNAP, 4, 1) }, -EUCLEAN },
	{ "backing file name too long", { F(QH_BACKING_OFF, 8, 512),
					  F(QH_BACKING_LEN, 4, 1024) },
	  -EUCLEAN },
	{ "backing file name past the cluster",
	  { F(QH_BACKING_OFF, 8, QIMG_T_CS - 4), F(QH_BACKING_LEN, 4, 8) },
	  -EUCLEAN },
	{ "backing file name past the buffer",
	  { F(QH_BACKING_OFF, 8, 512), F(QH_BACKING_LEN, 4, 8) }, -EUCLEAN,
	  0, 516 },
	{ "extension longer than the cluster", {}, -EUCLEAN, 0, 0, NULL,
	  RAW(QH_EXTS, "\x12\x34\x56\x78\xff\xff\0\0") },
	{ "extensions without an end mark", {}, -EUCLEAN, 0, 120, NULL,
	  RAW(QH_EXTS, "\x12\x34\x56\x78\0\0\0\0") },
};

#undef F
#undef RAW

static void qimg_t_hdr_desc(const struct qimg_t_hdr_case *c, char *desc)
{
	strscpy(desc, c->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_hdr, qimg_t_hdr_cases, qimg_t_hdr_desc);

static void qimg_fmt_header_table(struct kunit *test)
{
	const struct qimg_t_hdr_case *c = test->param_value;
	size_t len = c->len ? c->len : QIMG_T_CS;
	u64 file_size = c->file_size ? c->file_size : QIMG_T_FILE;
	struct qimg_err err = { };
	struct qimg_header *h;
	const struct qimg_t_field *f;
	u8 *img, *buf;
	int ret;

	img = kunit_kzalloc(test, QIMG_T_CS, GFP_KERNEL);
	buf = kunit_kmalloc(test, len, GFP_KERNEL);	/* exact length */
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, img);
	KUNIT_ASSERT_NOT_NULL(test, buf);
	KUNIT_ASSERT_NOT_NULL(test, h);

	qimg_t_good_header(img);
	for (f = c->set; f < c->set + ARRAY_SIZE(c->set) && f->width; f++)
		qimg_t_put(img, f->off, f->width, f->val);
	if (c->raw)
		memcpy(img + c->at, c->raw, c->raw_len);
	memcpy(buf, img, len);

	ret = qimg_header_decode(buf, len, file_size, h, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, c->err, "message: %s", err.msg);
	if (ret) {
		KUNIT_EXPECT_NE(test, err.msg[0], '\0');
		if (c->msg)
			KUNIT_EXPECT_NOT_NULL_MSG(test, strstr(err.msg, c->msg),
						  "\"%s\" not in \"%s\"",
						  c->msg, err.msg);
		return;
	}
	/* Whatever was accepted must have a usable geometry. */
	KUNIT_EXPECT_EQ(test, h->cluster_bits, (u32)QIMG_T_CB);
	KUNIT_EXPECT_EQ(test, h->geom.cluster_size, (u64)QIMG_T_CS);
	KUNIT_EXPECT_EQ(test, h->size, QIMG_T_VSIZE);
	KUNIT_EXPECT_GE(test, h->l1_size, h->geom.l1_size);
	KUNIT_EXPECT_EQ(test, h->l1_table_offset, QIMG_T_L1);
	KUNIT_EXPECT_EQ(test, h->refcount_table_offset, QIMG_T_RT);
	if (h->version == 2) {
		KUNIT_EXPECT_EQ(test, h->header_length, 72U);
		KUNIT_EXPECT_EQ(test, h->refcount_order, 4U);
	}
	if (c->raw && c->at == 512)
		KUNIT_EXPECT_STREQ(test, h->backing_file, "base.img");
}

static void qimg_fmt_good_fields(struct kunit *test)
{
	struct qimg_err err = { };
	struct qimg_header *h;
	u8 *img;

	img = kunit_kzalloc(test, QIMG_T_CS, GFP_KERNEL);
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, img);
	KUNIT_ASSERT_NOT_NULL(test, h);
	qimg_t_good_header(img);
	memcpy(img + QH_EXTS, "\x12\x34\x56\x78\0\0\0\x08qimgtest", 16);
	KUNIT_ASSERT_EQ_MSG(test, qimg_header_decode(img, QIMG_T_CS,
						     QIMG_T_FILE, h, &err),
			    0, "%s", err.msg);
	KUNIT_EXPECT_EQ(test, h->version, 3U);
	KUNIT_EXPECT_EQ(test, h->header_length, 112U);
	KUNIT_EXPECT_EQ(test, h->refcount_order, 4U);
	KUNIT_EXPECT_EQ(test, h->geom.l1_size, 2U);	/* 1 GiB / 512 MiB */
	KUNIT_EXPECT_EQ(test, h->geom.refcount_max, 0xffffULL);
	KUNIT_EXPECT_EQ(test, h->nb_unknown_exts, 1U);
	KUNIT_EXPECT_EQ(test, h->unknown_exts[0].type, 0x12345678U);
	KUNIT_EXPECT_EQ(test, h->unknown_exts[0].len, 8U);
	KUNIT_EXPECT_EQ(test, h->unknown_exts[0].offset, QH_EXTS + 8U);
	KUNIT_EXPECT_EQ(test, h->ext_end, QH_EXTS + 24U);
	KUNIT_EXPECT_FALSE(test, h->has_journal_ext);
	KUNIT_EXPECT_STREQ(test, h->backing_file, "");

	KUNIT_EXPECT_EQ(test, qimg_header_peek_cluster_size(img, 72, &err),
			(s64)QIMG_T_CS);
}

/*
 * Every length from 0 to past the extensions, with the buffer allocated at
 * exactly that length: decode may refuse, but must never read beyond it.
 */
static void qimg_fmt_every_length(struct kunit *test)
{
	struct qimg_err err = { };
	struct qimg_header *h;
	u8 *img, *buf;
	size_t len;
	int ret;

	img = kunit_kzalloc(test, QIMG_T_CS, GFP_KERNEL);
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, img);
	KUNIT_ASSERT_NOT_NULL(test, h);
	qimg_t_good_header(img);
	qimg_t_put(img, QH_BACKING_OFF, 8, 160);
	qimg_t_put(img, QH_BACKING_LEN, 4, 8);
	memcpy(img + QH_EXTS, "\x12\x34\x56\x78\0\0\0\x08qimgtest", 16);
	memcpy(img + 160, "base.img", 8);

	for (len = 1; len <= 200; len++) {
		buf = kmalloc(len, GFP_KERNEL);
		KUNIT_ASSERT_NOT_NULL(test, buf);
		memcpy(buf, img, len);
		ret = qimg_header_decode(buf, len, QIMG_T_FILE, h, &err);
		kfree(buf);
		/* Only a buffer holding the backing file name can pass. */
		KUNIT_EXPECT_EQ_MSG(test, ret == 0, len >= 168,
				    "len %zu: %d %s", len, ret, err.msg);
		if (len < 72)
			KUNIT_EXPECT_EQ(test, ret, -EINVAL);
	}
}

/* Random damage to a good header: any errno is fine, a crash is not. */
static void qimg_fmt_random_damage(struct kunit *test)
{
	struct qimg_err err = { };
	struct qimg_header *h;
	struct rnd_state rnd;
	u8 *img, *buf;
	unsigned int i, j, len;
	u64 file_size;
	int ret, accepted = 0;

	img = kunit_kzalloc(test, QIMG_T_CS, GFP_KERNEL);
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, img);
	KUNIT_ASSERT_NOT_NULL(test, h);
	prandom_seed_state(&rnd, 0x71696d67);	/* fixed: reproducible */

	for (i = 0; i < 3000; i++) {
		qimg_t_good_header(img);
		for (j = 0; j < 1 + prandom_u32_state(&rnd) % 4; j++)
			img[prandom_u32_state(&rnd) % 128] ^=
				1U << (prandom_u32_state(&rnd) % 8);
		len = 72 + prandom_u32_state(&rnd) % 512;
		file_size = prandom_u32_state(&rnd) % 2 ? QIMG_T_FILE :
			    prandom_u32_state(&rnd);
		buf = kmalloc(len, GFP_KERNEL);
		KUNIT_ASSERT_NOT_NULL(test, buf);
		memcpy(buf, img, len);
		ret = qimg_header_decode(buf, len, file_size, h, &err);
		kfree(buf);
		if (ret) {
			KUNIT_EXPECT_LT(test, ret, 0);
			KUNIT_EXPECT_NE(test, err.msg[0], '\0');
			continue;
		}
		accepted++;
		/* Accepted: the geometry must be self-consistent. */
		KUNIT_EXPECT_GE(test, h->cluster_bits, 9U);
		KUNIT_EXPECT_LE(test, h->cluster_bits, 21U);
		KUNIT_EXPECT_LE(test, h->refcount_order, 6U);
		KUNIT_EXPECT_GE(test, h->l1_size, h->geom.l1_size);
		if (h->l1_size)
			KUNIT_EXPECT_LE(test, h->l1_table_offset +
					8ULL * h->l1_size, file_size);
	}
	kunit_info(test, "%d of 3000 damaged headers accepted", accepted);
}

/* Header encode -> decode keeps every field the driver relies on. */
static void qimg_fmt_encode_roundtrip(struct kunit *test)
{
	struct qimg_err err = { };
	struct qimg_header *h, *h2;
	u8 *img;
	int n;

	img = kunit_kzalloc(test, QIMG_T_CS, GFP_KERNEL);
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	h2 = kunit_kzalloc(test, sizeof(*h2), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, img);
	KUNIT_ASSERT_NOT_NULL(test, h);
	KUNIT_ASSERT_NOT_NULL(test, h2);

	h->version = 3;
	h->cluster_bits = QIMG_T_CB;
	h->size = QIMG_T_VSIZE;
	h->l1_size = QIMG_T_L1_SIZE;
	h->l1_table_offset = QIMG_T_L1;
	h->refcount_table_offset = QIMG_T_RT;
	h->refcount_table_clusters = 1;
	h->refcount_order = 4;
	h->header_length = QIMG_V3_HEADER_LEN_COMP;
	h->incompatible_features = QIMG_INCOMPAT_DIRTY;
	h->compatible_features = QIMG_COMPAT_LAZY_REFCOUNTS;
	strscpy(h->backing_file, "base.qcow2", sizeof(h->backing_file));
	h->backing_file_size = strlen(h->backing_file);
	strscpy(h->backing_fmt, "qcow2", sizeof(h->backing_fmt));
	KUNIT_ASSERT_EQ(test, qimg_geom_init(h, &err), 0);

	n = qimg_header_encode(h, img, QIMG_T_CS);
	KUNIT_ASSERT_GT(test, n, 0);
	KUNIT_ASSERT_EQ_MSG(test, qimg_header_decode(img, n, QIMG_T_FILE, h2,
						     &err), 0, "%s", err.msg);
	KUNIT_EXPECT_EQ(test, h2->version, h->version);
	KUNIT_EXPECT_EQ(test, h2->size, h->size);
	KUNIT_EXPECT_EQ(test, h2->l1_size, h->l1_size);
	KUNIT_EXPECT_EQ(test, h2->l1_table_offset, h->l1_table_offset);
	KUNIT_EXPECT_EQ(test, h2->refcount_table_offset,
			h->refcount_table_offset);
	KUNIT_EXPECT_EQ(test, h2->incompatible_features,
			h->incompatible_features);
	KUNIT_EXPECT_EQ(test, h2->compatible_features, h->compatible_features);
	KUNIT_EXPECT_STREQ(test, h2->backing_file, "base.qcow2");
	KUNIT_EXPECT_STREQ(test, h2->backing_fmt, "qcow2");
	/* Too small a buffer is refused, not overrun. */
	KUNIT_EXPECT_EQ(test, qimg_header_encode(h, img, 100), -ENOSPC);
}

/* ---- the vectors shared with the userspace tests (qimg_vectors.h) ------- */

/* @got is the refusal policy's answer; @want a substring of it, or NULL. */
static void qimg_t_expect_refusal(struct kunit *test, const char *mode,
				  const char *got, const char *want)
{
	if (!want)
		KUNIT_EXPECT_NULL_MSG(test, got, "%s: refused (%s)", mode, got);
	else if (!got)
		KUNIT_FAIL(test, "%s: served, expected \"%s\"", mode, want);
	else
		KUNIT_EXPECT_NOT_NULL_MSG(test, strstr(got, want),
					  "%s: \"%s\" not in \"%s\"", mode,
					  want, got);
}

/* A refusal explains itself, with @want in it when the vector says so. */
static void qimg_t_expect_msg(struct kunit *test, const struct qimg_err *err,
			      const char *want)
{
	KUNIT_EXPECT_NE(test, err->msg[0], '\0');
	if (want)
		KUNIT_EXPECT_NOT_NULL_MSG(test, strstr(err->msg, want),
					  "\"%s\" not in \"%s\"", want,
					  err->msg);
}

static void qimg_t_hdr_vec_desc(const struct qimg_hdr_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_hdr_vec, qimg_hdr_vecs, qimg_t_hdr_vec_desc);

static void qimg_fmt_header_vectors(struct kunit *test)
{
	const struct qimg_hdr_vec *v = test->param_value;
	struct qimg_err err = { };
	struct qimg_header *h, *h2;
	u8 *img, *buf;
	u32 len;
	int ret, n;

	img = kunit_kzalloc(test, QV_BUF_LEN, GFP_KERNEL);
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	h2 = kunit_kzalloc(test, sizeof(*h2), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, img);
	KUNIT_ASSERT_NOT_NULL(test, h);
	KUNIT_ASSERT_NOT_NULL(test, h2);
	len = qimg_vec_build(v, img);
	KUNIT_ASSERT_LE(test, len, QV_BUF_LEN);
	/* The decoder gets exactly @len bytes, so KASAN sees overreads. */
	buf = kunit_kmalloc(test, len ? len : 1, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, buf);
	memcpy(buf, img, len);

	ret = qimg_header_decode(buf, len, qimg_vec_file_size(v), h, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, v->expect, "message: %s", err.msg);
	if (ret) {
		KUNIT_EXPECT_NE(test, err.msg[0], '\0');
		if (v->msg)
			KUNIT_EXPECT_NOT_NULL_MSG(test, strstr(err.msg, v->msg),
						  "\"%s\" not in \"%s\"",
						  v->msg, err.msg);
		/* No error struct: same verdict, no crash. */
		u64 fsize = qimg_vec_file_size(v);

		KUNIT_EXPECT_EQ(test,
				qimg_header_decode(buf, len, fsize, h, NULL),
				ret);
		return;
	}
	if (v->backing)
		KUNIT_EXPECT_STREQ(test, h->backing_file, v->backing);
	if (v->backing_fmt)
		KUNIT_EXPECT_STREQ(test, h->backing_fmt, v->backing_fmt);
	if (v->ext_end)
		KUNIT_EXPECT_EQ(test, h->ext_end, v->ext_end);
	qimg_t_expect_refusal(test, "read-only",
			      qimg_unsupported_feature(h, false), v->refuse_ro);
	qimg_t_expect_refusal(test, "read-write",
			      qimg_unsupported_feature(h, true), v->refuse_rw);

	/* encode(decode(x)) decodes to the same fields. */
	n = qimg_header_encode(h, img, QV_BUF_LEN);
	KUNIT_ASSERT_GT(test, n, 0);
	ret = qimg_header_decode(img, QV_BUF_LEN, qimg_vec_file_size(v), h2,
				 &err);
	KUNIT_ASSERT_EQ_MSG(test, ret, 0, "re-decode: %s", err.msg);
	KUNIT_EXPECT_EQ(test, h2->version, h->version);
	KUNIT_EXPECT_EQ(test, h2->size, h->size);
	KUNIT_EXPECT_EQ(test, h2->l1_size, h->l1_size);
	KUNIT_EXPECT_EQ(test, h2->l1_table_offset, h->l1_table_offset);
	KUNIT_EXPECT_EQ(test, h2->refcount_table_offset,
			h->refcount_table_offset);
	KUNIT_EXPECT_EQ(test, h2->incompatible_features,
			h->incompatible_features);
	KUNIT_EXPECT_EQ(test, h2->autoclear_features, h->autoclear_features);
	KUNIT_EXPECT_STREQ(test, h2->backing_file, h->backing_file);
	KUNIT_EXPECT_EQ(test, memcmp(&h2->geom, &h->geom, sizeof(h->geom)), 0);
}

static void qimg_t_raw_vec_desc(const struct qimg_raw_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_snap_vec, qimg_snapshot_vecs, qimg_t_raw_vec_desc);
KUNIT_ARRAY_PARAM(qimg_t_bm_vec, qimg_bitmap_vecs, qimg_t_raw_vec_desc);

/* A private copy of exactly the vector's length, for KASAN. */
static u8 *qimg_t_raw_copy(struct kunit *test, const struct qimg_raw_vec *v)
{
	u8 *p = kunit_kmalloc(test, v->len ? v->len : 1, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, p);
	memcpy(p, v->bytes, v->len);
	return p;
}

static void qimg_fmt_snapshot_vectors(struct kunit *test)
{
	const struct qimg_raw_vec *v = test->param_value;
	struct qimg_err err = { };
	struct qimg_snapshot *s;
	struct qimg_geom g;
	int ret;

	s = kunit_kzalloc(test, sizeof(*s), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, s);
	qimg_t_geom(test, &g, 16, false, 4);
	ret = qimg_snapshot_decode(&g, qimg_t_raw_copy(test, v), v->len,
				   QV_FILE_SIZE, s, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, v->expect, "message: %s", err.msg);
	if (ret) {
		qimg_t_expect_msg(test, &err, v->msg);
		return;
	}
	KUNIT_EXPECT_EQ(test, s->entry_len, v->entry_len);
	KUNIT_EXPECT_STREQ(test, s->id_str, v->label);
}

static void qimg_fmt_bitmap_vectors(struct kunit *test)
{
	const struct qimg_raw_vec *v = test->param_value;
	struct qimg_err err = { };
	struct qimg_bitmap *b;
	struct qimg_geom g;
	int ret;

	b = kunit_kzalloc(test, sizeof(*b), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, b);
	qimg_t_geom(test, &g, 16, false, 4);
	ret = qimg_bitmap_decode(&g, qimg_t_raw_copy(test, v), v->len,
				 QV_FILE_SIZE, b, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, v->expect, "message: %s", err.msg);
	if (ret) {
		qimg_t_expect_msg(test, &err, v->msg);
		return;
	}
	KUNIT_EXPECT_EQ(test, b->entry_len, v->entry_len);
	KUNIT_EXPECT_STREQ(test, b->name, v->label);
}

static void qimg_t_bme_vec_desc(const struct qimg_bme_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_bme_vec, qimg_bme_vecs, qimg_t_bme_vec_desc);

static void qimg_fmt_bitmap_table_vectors(struct kunit *test)
{
	const struct qimg_bme_vec *v = test->param_value;
	struct qimg_err err = { };
	struct qimg_geom g;
	u64 off = 1;
	bool ones = true;
	int ret;

	qimg_t_geom(test, &g, 16, false, 4);
	ret = qimg_bitmap_table_decode(&g, v->raw, QV_FILE_SIZE, &off, &ones,
				       &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, v->expect, "message: %s", err.msg);
	if (ret) {
		qimg_t_expect_msg(test, &err, v->msg);
		return;
	}
	KUNIT_EXPECT_EQ(test, off, v->offset);
	KUNIT_EXPECT_EQ(test, ones, v->all_ones);
}

static void qimg_t_unsup_vec_desc(const struct qimg_unsup_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_unsup_vec, qimg_unsup_vecs, qimg_t_unsup_vec_desc);

/* The refusal policy the driver applies at attach, and qimgctl explains. */
static void qimg_fmt_unsupported_vectors(struct kunit *test)
{
	const struct qimg_unsup_vec *v = test->param_value;
	struct qimg_header *h;
	const char *ro, *rw;

	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, h);
	qimg_unsup_vec_header(v, h);
	ro = qimg_unsupported_feature(h, false);
	rw = qimg_unsupported_feature(h, true);
	qimg_t_expect_refusal(test, v->writable ? "read-write" : "read-only",
			      v->writable ? rw : ro, v->refuse);
	/* Whatever is refused read-only is refused read-write, as itself. */
	if (ro)
		KUNIT_EXPECT_PTR_EQ(test, rw, ro);
}

static struct kunit_case qimg_fmt_cases[] = {
	KUNIT_CASE_PARAM(qimg_fmt_header_vectors, qimg_t_hdr_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_fmt_header_table, qimg_t_hdr_gen_params),
	KUNIT_CASE_PARAM(qimg_fmt_snapshot_vectors,
			 qimg_t_snap_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_fmt_bitmap_vectors, qimg_t_bm_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_fmt_bitmap_table_vectors,
			 qimg_t_bme_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_fmt_unsupported_vectors,
			 qimg_t_unsup_vec_gen_params),
	KUNIT_CASE(qimg_fmt_good_fields),
	KUNIT_CASE(qimg_fmt_every_length),
	KUNIT_CASE(qimg_fmt_random_damage),
	KUNIT_CASE(qimg_fmt_encode_roundtrip),
	{}
};

static struct kunit_suite qimg_fmt_suite = {
	.name = "qimg_fmt",
	.test_cases = qimg_fmt_cases,
};

kunit_test_suite(qimg_fmt_suite);
