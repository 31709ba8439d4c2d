// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_refcount: refcount block entries of every width qcow2
 * allows (refcount_order 0..6, 1 to 64 bits).  The widths below a byte
 * pack LSB first and the others are big-endian; a mistake there silently
 * corrupts every neighbour of the entry being written, so each case checks
 * the exact bytes as well as the round trip.
 */
#include "qimg_kunit.h"
#include "qimg_vectors.h"

/* One 512-byte block: the smallest cluster, and 4096 1-bit entries. */
#define QIMG_T_RB_BYTES		512

static const u32 qimg_t_orders[] = { 0, 1, 2, 3, 4, 5, 6 };

static void qimg_t_order_desc(const u32 *order, char *desc)
{
	snprintf(desc, KUNIT_PARAM_DESC_SIZE, "order %u (%u-bit)", *order,
		 1U << *order);
}

KUNIT_ARRAY_PARAM(qimg_t_order, qimg_t_orders, qimg_t_order_desc);

static u64 qimg_t_max(u32 order)
{
	return order == 6 ? U64_MAX : (1ULL << (1U << order)) - 1;
}

static u64 qimg_t_entries(u32 order)
{
	return (u64)QIMG_T_RB_BYTES * 8 >> order;
}

/* A value for @index that differs from its neighbours and fits. */
static u64 qimg_t_pattern(u32 order, u64 index)
{
	u64 v = (index + 1) * 0x9e3779b97f4a7c15ULL;

	return v & qimg_t_max(order);
}

/* Fill every entry in a scrambled order, then read them all back. */
static void qimg_refcount_roundtrip(struct kunit *test)
{
	const u32 order = *(const u32 *)test->param_value;
	const u64 n = qimg_t_entries(order);
	u8 *rb;
	u64 i, idx;

	rb = kunit_kzalloc(test, QIMG_T_RB_BYTES, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, rb);

	/* 37 is odd, so i * 37 mod n (n a power of two) visits all. */
	for (i = 0; i < n; i++) {
		idx = (i * 37) & (n - 1);
		KUNIT_ASSERT_EQ(test, qimg_refcount_set(rb, order, idx,
							qimg_t_pattern(order,
								       idx)),
				0);
	}
	for (i = 0; i < n; i++)
		KUNIT_EXPECT_EQ_MSG(test, qimg_refcount_get(rb, order, i),
				    qimg_t_pattern(order, i), "entry %llu", i);

	/* Clearing one entry must leave both neighbours alone. */
	idx = n / 2;
	KUNIT_ASSERT_EQ(test, qimg_refcount_set(rb, order, idx, 0), 0);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, order, idx), 0ULL);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, order, idx - 1),
			qimg_t_pattern(order, idx - 1));
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, order, idx + 1),
			qimg_t_pattern(order, idx + 1));
}

/* The largest value fits, one more does not and changes nothing. */
static void qimg_refcount_range(struct kunit *test)
{
	const u32 order = *(const u32 *)test->param_value;
	const u64 max = qimg_t_max(order);
	const u64 last = qimg_t_entries(order) - 1;
	u8 *rb, *copy;

	rb = kunit_kzalloc(test, QIMG_T_RB_BYTES, GFP_KERNEL);
	copy = kunit_kzalloc(test, QIMG_T_RB_BYTES, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, rb);
	KUNIT_ASSERT_NOT_NULL(test, copy);

	KUNIT_EXPECT_EQ(test, qimg_refcount_set(rb, order, 0, max), 0);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, order, 0), max);
	/* The last entry of the block: catches an off-by-one past the end,
	 * which KASAN reports since the block is exactly this long.
	 */
	KUNIT_EXPECT_EQ(test, qimg_refcount_set(rb, order, last, max), 0);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, order, last), max);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, order, 1), 0ULL);

	if (order == 6)
		return;	/* every u64 fits in a 64-bit entry */
	memcpy(copy, rb, QIMG_T_RB_BYTES);
	KUNIT_EXPECT_EQ(test, qimg_refcount_set(rb, order, 1, max + 1),
			-ERANGE);
	KUNIT_EXPECT_EQ(test, qimg_refcount_set(rb, order, 1, U64_MAX),
			-ERANGE);
	KUNIT_EXPECT_EQ(test, memcmp(copy, rb, QIMG_T_RB_BYTES), 0);
}

/*
 * The exact on-disk bytes: entry 1 set to its maximum, everything else 0.
 * Sub-byte entries fill each byte from its least significant bit (qcow2
 * spec, "refcount_order"); wider ones are big-endian.
 */
static void qimg_refcount_layout(struct kunit *test)
{
	const u32 order = *(const u32 *)test->param_value;
	const u32 bits = 1U << order;
	u8 *rb, want[16] = { 0 };
	u32 b;

	rb = kunit_kzalloc(test, QIMG_T_RB_BYTES, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, rb);
	KUNIT_ASSERT_EQ(test, qimg_refcount_set(rb, order, 1,
						qimg_t_max(order)), 0);
	/* Entry 1 covers bits [bits, 2 * bits) of the block. */
	for (b = bits; b < 2 * bits; b++)
		want[b / 8] |= 1U << (b % 8);
	KUNIT_EXPECT_EQ(test, memcmp(rb, want, sizeof(want)), 0);
	KUNIT_EXPECT_PTR_EQ(test, memchr_inv(rb + 16, 0,
					     QIMG_T_RB_BYTES - 16), NULL);

	if (bits < 8)
		return;
	/* Byte order of a multi-byte value: most significant first. */
	memset(rb, 0, QIMG_T_RB_BYTES);
	KUNIT_ASSERT_EQ(test, qimg_refcount_set(rb, order, 0,
						0x0102030405060708ULL &
						qimg_t_max(order)), 0);
	for (b = 0; b < bits / 8; b++)
		KUNIT_EXPECT_EQ_MSG(test, rb[b], (u8)(8 - bits / 8 + 1 + b),
				    "byte %u", b);
	/* And reading decodes a hand-written big-endian value. */
	memset(rb, 0, QIMG_T_RB_BYTES);
	rb[bits / 8 * 2 - 1] = 0x2a;
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, order, 1), 0x2aULL);
}

static void qimg_refcount_sub_byte_read(struct kunit *test)
{
	u8 *rb = kunit_kzalloc(test, QIMG_T_RB_BYTES, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, rb);
	rb[0] = 0xa5;	/* 1010 0101 */
	/* order 0: bit i of byte 0 is entry i */
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 0, 0), 1ULL);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 0, 1), 0ULL);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 0, 7), 1ULL);
	/* order 1: 2-bit entries 01 01 10 10 from the low end */
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 1, 0), 1ULL);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 1, 1), 1ULL);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 1, 2), 2ULL);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 1, 3), 2ULL);
	/* order 2: low nibble first */
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 2, 0), 5ULL);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, 2, 1), 0xaULL);
}

/* ---- the vectors shared with the userspace tests (qimg_vectors.h) ------- */

static void qimg_t_rc_vec_desc(const struct qimg_refcount_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_rc_vec, qimg_refcount_vecs, qimg_t_rc_vec_desc);

static void qimg_refcount_vectors(struct kunit *test)
{
	const struct qimg_refcount_vec *v = test->param_value;
	u8 *rb;
	int ret;

	/* 64 bytes, as the userspace test: entry 1 of order 6 is the end. */
	rb = kunit_kzalloc(test, 64, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, rb);
	ret = qimg_refcount_set(rb, v->order, v->index, v->value);
	KUNIT_EXPECT_EQ(test, ret, v->expect);
	if (ret) {
		KUNIT_EXPECT_PTR_EQ(test, memchr_inv(rb, 0, 64), NULL);
		return;
	}
	KUNIT_EXPECT_EQ(test, rb[v->byte], v->byte_val);
	KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, v->order, v->index),
			v->value);
	if (v->index)
		KUNIT_EXPECT_EQ(test, qimg_refcount_get(rb, v->order,
							v->index - 1), 0ULL);
}

static void qimg_t_rt_vec_desc(const struct qimg_reftable_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_rt_vec, qimg_reftable_vecs, qimg_t_rt_vec_desc);

static void qimg_reftable_vectors(struct kunit *test)
{
	const struct qimg_reftable_vec *v = test->param_value;
	struct qimg_err err = { };
	struct qimg_geom g;
	u64 off = 1;
	int ret;

	qimg_t_geom(test, &g, 16, false, 4);
	ret = qimg_reftable_decode(&g, v->raw, QV_FILE_SIZE, &off, &err);
	KUNIT_EXPECT_EQ_MSG(test, ret, v->expect, "message: %s", err.msg);
	if (!ret)
		KUNIT_EXPECT_EQ(test, off, v->rb_offset);
	else
		KUNIT_EXPECT_NE(test, err.msg[0], '\0');
}

static struct kunit_case qimg_refcount_cases[] = {
	KUNIT_CASE_PARAM(qimg_refcount_vectors, qimg_t_rc_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_reftable_vectors, qimg_t_rt_vec_gen_params),
	KUNIT_CASE_PARAM(qimg_refcount_roundtrip, qimg_t_order_gen_params),
	KUNIT_CASE_PARAM(qimg_refcount_range, qimg_t_order_gen_params),
	KUNIT_CASE_PARAM(qimg_refcount_layout, qimg_t_order_gen_params),
	KUNIT_CASE(qimg_refcount_sub_byte_read),
	{}
};

static struct kunit_suite qimg_refcount_suite = {
	.name = "qimg_refcount",
	.test_cases = qimg_refcount_cases,
};

kunit_test_suite(qimg_refcount_suite);

MODULE_DESCRIPTION("KUnit tests for the qimg qcow2 format core");
MODULE_LICENSE("GPL");
