// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_l2: L1 and L2 table entries, the hot path of every
 * guest I/O.  Each table row is a raw on-disk entry and what it must decode
 * to (or the errno a corrupt one must be refused with); expectations come
 * from the qcow2 specification, not from the encoder, so an encoder and
 * decoder that agree on a wrong layout still fail here.
 */
#include "qimg_kunit.h"
#include "qimg_vectors.h"

#define QIMG_T_CB	16			/* 64 KiB clusters */
#define QIMG_T_CS	BIT_ULL(QIMG_T_CB)
#define QIMG_T_FILE	(64 * QIMG_T_CS)	/* image file size */
/* Compressed descriptors with 64 KiB clusters: x = 62 - (16 - 8) = 54. */
#define QIMG_T_CSHIFT	54

/* ---- geometry ----------------------------------------------------------- */

struct qimg_t_geom_case {
	u32 cluster_bits;
	bool ext_l2;
	u32 order;
	u64 l2_entries;
	u64 rb_entries;
	u32 csize_shift;
};

static const struct qimg_t_geom_case qimg_t_geom_cases[] = {
	{  9, false, 4,    64,   256, 61 },
	{ 12, false, 0,   512, 32768, 58 },
	{ 16, false, 4,  8192, 32768, 54 },
	{ 16, true,  4,  4096, 32768, 54 },
	{ 16, false, 6,  8192,  8192, 54 },
	{ 21, false, 4, 262144, 1ULL << 20, 49 },
	{ 21, true,  3, 131072, 1ULL << 21, 49 },
};

static void qimg_t_geom_desc(const struct qimg_t_geom_case *c, char *desc)
{
	snprintf(desc, KUNIT_PARAM_DESC_SIZE, "cluster_bits %u%s order %u",
		 c->cluster_bits, c->ext_l2 ? " extl2" : "", c->order);
}

KUNIT_ARRAY_PARAM(qimg_t_geom, qimg_t_geom_cases, qimg_t_geom_desc);

static void qimg_l2_geometry(struct kunit *test)
{
	const struct qimg_t_geom_case *c = test->param_value;
	struct qimg_geom g;
	u64 guest;

	qimg_t_geom(test, &g, c->cluster_bits, c->ext_l2, c->order);
	KUNIT_EXPECT_EQ(test, g.cluster_size, 1ULL << c->cluster_bits);
	KUNIT_EXPECT_EQ(test, g.l2_entries, c->l2_entries);
	KUNIT_EXPECT_EQ(test, 1ULL << g.l2_bits, c->l2_entries);
	KUNIT_EXPECT_EQ(test, g.l2_entry_shift, c->ext_l2 ? 4U : 3U);
	KUNIT_EXPECT_EQ(test, g.rb_entries, c->rb_entries);
	KUNIT_EXPECT_EQ(test, g.csize_shift, c->csize_shift);
	KUNIT_EXPECT_EQ(test, g.ext_l2, c->ext_l2);
	if (c->ext_l2)
		KUNIT_EXPECT_EQ(test, g.subcluster_bits, c->cluster_bits - 5);

	/* The last byte of the image maps to the last L1 slot in use. */
	guest = (1ULL << 30) - 1;
	KUNIT_EXPECT_EQ(test, qimg_l1_index(&g, guest) + 1, (u64)g.l1_size);
	KUNIT_EXPECT_EQ(test, qimg_l2_index(&g, guest),
			(guest >> c->cluster_bits) % c->l2_entries);
	KUNIT_EXPECT_EQ(test, qimg_l1_entries_for(c->cluster_bits, c->ext_l2,
						  1ULL << 30),
			(u64)g.l1_size);
}

/* ---- L1 entries ---------------------------------------------------------- */

struct qimg_t_l1_case {
	const char *name;
	u64 raw;
	int err;
	u64 l2_offset;
	bool copied;
};

static const struct qimg_t_l1_case qimg_t_l1_cases[] = {
	{ "unallocated", 0, 0, 0, false },
	{ "allocated, copied", QIMG_OFLAG_COPIED | 3 * QIMG_T_CS, 0,
	  3 * QIMG_T_CS, true },
	{ "allocated, shared", 5 * QIMG_T_CS, 0, 5 * QIMG_T_CS, false },
	{ "last cluster of the file", QIMG_T_FILE - QIMG_T_CS, 0,
	  QIMG_T_FILE - QIMG_T_CS, false },
	{ "not cluster aligned", 3 * QIMG_T_CS + 512, -EUCLEAN },
	{ "reserved bit 0", 3 * QIMG_T_CS | 1, -EUCLEAN },
	{ "reserved bit 62", 3 * QIMG_T_CS | (1ULL << 62), -EUCLEAN },
	{ "reserved bit 56", 3 * QIMG_T_CS | (1ULL << 56), -EUCLEAN },
	{ "past the end of the file", 1000 * QIMG_T_CS, -EUCLEAN },
	{ "largest offset", QIMG_L1E_OFFSET_MASK & ~(QIMG_T_CS - 1),
	  -EUCLEAN },
};

static void qimg_t_l1_desc(const struct qimg_t_l1_case *c, char *desc)
{
	strscpy(desc, c->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_l1, qimg_t_l1_cases, qimg_t_l1_desc);

static void qimg_l1_decode_table(struct kunit *test)
{
	const struct qimg_t_l1_case *c = test->param_value;
	struct qimg_err err = { };
	struct qimg_geom g;
	u64 l2 = 0xdead;
	bool copied = false;
	int ret;

	qimg_t_geom(test, &g, QIMG_T_CB, false, 4);
	ret = qimg_l1_decode(&g, c->raw, QIMG_T_FILE, &l2, &copied, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, c->err, "%s", err.msg);
	if (c->err) {
		/* Refusals must say why: this text ends up in dmesg. */
		KUNIT_EXPECT_NE(test, err.msg[0], '\0');
		return;
	}
	KUNIT_EXPECT_EQ(test, l2, c->l2_offset);
	KUNIT_EXPECT_EQ(test, copied, c->copied);
	/* Encoding what was decoded gives the same raw entry back. */
	KUNIT_EXPECT_EQ(test, qimg_l1_encode(l2, copied), c->raw);
}

/* ---- standard L2 entries ------------------------------------------------- */

struct qimg_t_l2_case {
	const char *name;
	bool ext_l2;
	u64 raw;
	u64 bitmap;
	int err;
	enum qimg_cluster_type type;
	u64 host;
	u64 clen;		/* compressed only */
	bool copied;
	/* extended L2: expected type of subclusters 0, 1 and 31 */
	enum qimg_subcluster_type sc[3];
};

#define C(n)	((n) * QIMG_T_CS)
#define CMP(sectors, off) \
	(QIMG_OFLAG_COMPRESSED | ((u64)(sectors) << QIMG_T_CSHIFT) | (off))

static const struct qimg_t_l2_case qimg_t_l2_cases[] = {
	{ "unallocated", false, 0, 0, 0, QIMG_CLUSTER_UNALLOCATED },
	{ "normal, copied", false, QIMG_OFLAG_COPIED | C(7), 0, 0,
	  QIMG_CLUSTER_NORMAL, C(7), 0, true },
	{ "normal, shared", false, C(7), 0, 0, QIMG_CLUSTER_NORMAL, C(7) },
	{ "zero, no host cluster", false, QIMG_OFLAG_ZERO, 0, 0,
	  QIMG_CLUSTER_ZERO_PLAIN },
	{ "zero, host cluster kept", false,
	  QIMG_OFLAG_COPIED | QIMG_OFLAG_ZERO | C(9), 0, 0,
	  QIMG_CLUSTER_ZERO_ALLOC, C(9), 0, true },
	/* Reused in place by a write: range-checked like a normal one. */
	{ "zero, host cluster kept, past the end of the file", false,
	  QIMG_OFLAG_COPIED | QIMG_OFLAG_ZERO | C(64), 0, -EUCLEAN },
	{ "zero, host cluster kept, not cluster aligned", false,
	  QIMG_OFLAG_COPIED | QIMG_OFLAG_ZERO | (C(9) + 512), 0, -EUCLEAN },
	{ "not cluster aligned", false, C(7) + 4096, 0, -EUCLEAN },
	{ "reserved bit 1", false, C(7) | 2, 0, -EUCLEAN },
	{ "reserved bit 61", false, C(7) | (1ULL << 61), 0, -EUCLEAN },
	{ "past the end of the file", false, C(64), 0, -EUCLEAN },
	/* x = 54: offset in bits 0..53, extra 512-byte sectors in 54..61 */
	{ "compressed, 1 sector, aligned", false, CMP(0, C(10)), 0, 0,
	  QIMG_CLUSTER_COMPRESSED, C(10), 512 },
	{ "compressed, 4 sectors", false, CMP(3, C(10)), 0, 0,
	  QIMG_CLUSTER_COMPRESSED, C(10), 2048 },
	/* The length runs to the end of the last sector counted. */
	{ "compressed, unaligned start", false, CMP(1, C(10) + 100), 0, 0,
	  QIMG_CLUSTER_COMPRESSED, C(10) + 100, 1024 - 100 },
	{ "compressed, past the end of the file", false,
	  CMP(0, C(100)), 0, -EUCLEAN },
	/* Spec: bit 63 is 0 for compressed clusters (they always need COW). */
	{ "compressed with COPIED set", false,
	  QIMG_OFLAG_COPIED | CMP(0, C(10)), 0, -EUCLEAN },

	/* Extended L2: bitmap bits 0..31 allocated, 32..63 reads-as-zero. */
	{ "extl2: unallocated", true, 0, 0, 0, QIMG_CLUSTER_UNALLOCATED, 0, 0,
	  false, { QIMG_SUBCLUSTER_UNALLOCATED, QIMG_SUBCLUSTER_UNALLOCATED,
		   QIMG_SUBCLUSTER_UNALLOCATED } },
	{ "extl2: first subcluster allocated", true,
	  QIMG_OFLAG_COPIED | C(7), 1, 0, QIMG_CLUSTER_NORMAL, C(7), 0, true,
	  { QIMG_SUBCLUSTER_NORMAL, QIMG_SUBCLUSTER_UNALLOCATED,
	    QIMG_SUBCLUSTER_UNALLOCATED } },
	{ "extl2: all allocated", true, QIMG_OFLAG_COPIED | C(7),
	  0xffffffffULL, 0, QIMG_CLUSTER_NORMAL, C(7), 0, true,
	  { QIMG_SUBCLUSTER_NORMAL, QIMG_SUBCLUSTER_NORMAL,
	    QIMG_SUBCLUSTER_NORMAL } },
	{ "extl2: mixed zero and allocated", true, QIMG_OFLAG_COPIED | C(7),
	  (1ULL << 33) | (1ULL << 63) | 1, 0, QIMG_CLUSTER_NORMAL, C(7), 0,
	  true, { QIMG_SUBCLUSTER_NORMAL, QIMG_SUBCLUSTER_ZERO,
		  QIMG_SUBCLUSTER_ZERO } },
	{ "extl2: zero without host cluster", true, 0, 0xffffffffULL << 32, 0,
	  QIMG_CLUSTER_UNALLOCATED, 0, 0, false,
	  { QIMG_SUBCLUSTER_ZERO, QIMG_SUBCLUSTER_ZERO,
	    QIMG_SUBCLUSTER_ZERO } },
	/* A subcluster cannot be both allocated and zero. */
	{ "extl2: allocated and zero at once", true, C(7),
	  (1ULL << 32) | 1, -EUCLEAN },
	/* Allocation bits with no host cluster point at nothing. */
	{ "extl2: allocated without host cluster", true, 0, 1, -EUCLEAN },
	{ "extl2: past the end of the file", true, C(64), 1, -EUCLEAN },
};

#undef C
#undef CMP

static void qimg_t_l2_desc(const struct qimg_t_l2_case *c, char *desc)
{
	strscpy(desc, c->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_l2, qimg_t_l2_cases, qimg_t_l2_desc);

static void qimg_l2_decode_table(struct kunit *test)
{
	const struct qimg_t_l2_case *c = test->param_value;
	struct qimg_err err = { };
	struct qimg_l2_entry e;
	struct qimg_geom g;
	int ret;

	qimg_t_geom(test, &g, QIMG_T_CB, c->ext_l2, 4);
	memset(&e, 0xa5, sizeof(e));
	ret = qimg_l2_decode(&g, 3, c->raw, c->bitmap, QIMG_T_FILE, &e, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, c->err, "%s", err.msg);
	if (c->err) {
		KUNIT_EXPECT_NE(test, err.msg[0], '\0');
		return;
	}
	KUNIT_EXPECT_EQ(test, e.type, c->type);
	if (c->type != QIMG_CLUSTER_UNALLOCATED &&
	    c->type != QIMG_CLUSTER_ZERO_PLAIN)
		KUNIT_EXPECT_EQ(test, e.host_offset, c->host);
	if (c->type == QIMG_CLUSTER_COMPRESSED)
		KUNIT_EXPECT_EQ(test, e.compressed_len, c->clen);
	else
		KUNIT_EXPECT_EQ(test, e.copied, c->copied);
	if (!c->ext_l2)
		return;
	KUNIT_EXPECT_EQ(test, e.alloc_bitmap, (u32)c->bitmap);
	KUNIT_EXPECT_EQ(test, e.zero_bitmap, (u32)(c->bitmap >> 32));
	KUNIT_EXPECT_EQ(test, qimg_subcluster_type(&e, 0), c->sc[0]);
	KUNIT_EXPECT_EQ(test, qimg_subcluster_type(&e, 1), c->sc[1]);
	KUNIT_EXPECT_EQ(test, qimg_subcluster_type(&e, 31), c->sc[2]);
}

/* ---- encoders: what they write must decode to what they were given ------ */

static void qimg_l2_encode_roundtrip(struct kunit *test)
{
	struct qimg_err err = { };
	struct qimg_l2_entry e;
	struct qimg_geom g;
	u64 raw;

	qimg_t_geom(test, &g, QIMG_T_CB, false, 4);

	raw = qimg_l2_encode_normal(QIMG_T_CS * 3, true);
	KUNIT_EXPECT_EQ(test, raw, QIMG_OFLAG_COPIED | QIMG_T_CS * 3);
	KUNIT_ASSERT_EQ(test, qimg_l2_decode(&g, 3, raw, 0, QIMG_T_FILE, &e,
					     &err), 0);
	KUNIT_EXPECT_EQ(test, e.type, QIMG_CLUSTER_NORMAL);

	raw = qimg_l2_encode_zero(QIMG_T_CS * 3, false);
	KUNIT_EXPECT_EQ(test, raw, QIMG_OFLAG_ZERO | QIMG_T_CS * 3);
	raw = qimg_l2_encode_zero(0, false);
	KUNIT_EXPECT_EQ(test, raw, QIMG_OFLAG_ZERO);
}

/* Every offset/length a compressed write can produce survives encoding. */
static void qimg_l2_compressed_roundtrip(struct kunit *test)
{
	static const u64 offs[] = { 0, 1, 100, 511, 512, 4095, 65535 };
	static const u64 lens[] = { 1, 100, 511, 512, 513, 4096, 65536 };
	struct qimg_err err = { };
	struct qimg_l2_entry e;
	struct qimg_geom g;
	unsigned int i, j;
	u64 host, raw;

	qimg_t_geom(test, &g, QIMG_T_CB, false, 4);
	for (i = 0; i < ARRAY_SIZE(offs); i++) {
		for (j = 0; j < ARRAY_SIZE(lens); j++) {
			host = 10 * QIMG_T_CS + offs[i];
			raw = qimg_l2_encode_compressed(&g, host, lens[j]);
			KUNIT_EXPECT_EQ(test,
					qimg_l2_decode(&g, 3, raw, 0, QIMG_T_FILE,
						       &e, &err),
					0);
			KUNIT_EXPECT_EQ(test, e.type, QIMG_CLUSTER_COMPRESSED);
			KUNIT_EXPECT_EQ(test, e.host_offset, host);
			/* Covers the data and ends on a sector boundary. */
			KUNIT_EXPECT_GE(test, e.compressed_len, lens[j]);
			KUNIT_EXPECT_LT(test, e.compressed_len, lens[j] + 512);
			KUNIT_EXPECT_EQ(test, (host + e.compressed_len) % 512,
					0ULL);
		}
	}
}

/* ---- the vectors shared with the userspace tests (qimg_vectors.h) ------- */

static void qimg_t_l1_vec_desc(const struct qimg_l1_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_l1_vec, qimg_l1_vecs, qimg_t_l1_vec_desc);

static void qimg_l1_vectors(struct kunit *test)
{
	const struct qimg_l1_vec *v = test->param_value;
	struct qimg_err err = { };
	struct qimg_geom g;
	u64 off = 1;
	bool copied = true;
	int ret;

	qimg_t_geom(test, &g, 16, false, 4);
	ret = qimg_l1_decode(&g, v->raw, QV_FILE_SIZE, &off, &copied, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, v->expect, "message: %s", err.msg);
	if (ret) {
		KUNIT_EXPECT_NE(test, err.msg[0], '\0');
		return;
	}
	KUNIT_EXPECT_EQ(test, off, v->l2_offset);
	KUNIT_EXPECT_EQ(test, copied, v->copied);
}

static void qimg_t_l2_vec_desc(const struct qimg_l2_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_l2_vec, qimg_l2_vecs, qimg_t_l2_vec_desc);

static void qimg_l2_vectors(struct kunit *test)
{
	const struct qimg_l2_vec *v = test->param_value;
	struct qimg_err err = { };
	struct qimg_header *h;
	struct qimg_l2_entry e;
	int ret;

	/* Same geometry as qimg_t_geom(), plus the external data file bit. */
	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, h);
	h->version = 3;
	h->cluster_bits = 16;
	h->size = 1ULL << 30;
	h->refcount_order = 4;
	if (v->ext_l2)
		h->incompatible_features |= QIMG_INCOMPAT_EXTL2;
	if (v->data_file)
		h->incompatible_features |= QIMG_INCOMPAT_DATA_FILE;
	KUNIT_ASSERT_EQ(test, qimg_geom_init(h, NULL), 0);

	ret = qimg_l2_decode(&h->geom, v->version, v->raw, v->bitmap,
			     QV_FILE_SIZE, &e, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, v->expect, "message: %s", err.msg);
	if (ret) {
		KUNIT_EXPECT_NE(test, err.msg[0], '\0');
		return;
	}
	KUNIT_EXPECT_EQ(test, e.type, v->type);
	KUNIT_EXPECT_EQ(test, e.host_offset, v->host_offset);
	if (e.type == QIMG_CLUSTER_COMPRESSED) {
		u64 enc = qimg_l2_encode_compressed(&h->geom, e.host_offset,
						    e.compressed_len);

		KUNIT_EXPECT_EQ(test, e.compressed_len, v->compressed_len);
		KUNIT_EXPECT_EQ(test, enc, v->raw);
	}
}

static struct kunit_case qimg_l2_cases[] = {
	KUNIT_CASE_PARAM(qimg_l1_vectors, qimg_t_l1_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_l2_vectors, qimg_t_l2_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_l2_geometry, qimg_t_geom_gen_params),
	KUNIT_CASE_PARAM(qimg_l1_decode_table, qimg_t_l1_gen_params),
	KUNIT_CASE_PARAM(qimg_l2_decode_table, qimg_t_l2_gen_params),
	KUNIT_CASE(qimg_l2_encode_roundtrip),
	KUNIT_CASE(qimg_l2_compressed_roundtrip),
	{}
};

static struct kunit_suite qimg_l2_suite = {
	.name = "qimg_l2",
	.test_cases = qimg_l2_cases,
};

kunit_test_suite(qimg_l2_suite);
