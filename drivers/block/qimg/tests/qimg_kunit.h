/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the qimg KUnit suites (the *_kunit.c files beside this
 * header), linked into one object with ../qimg_fmt.c by the Kbuild here.
 */
#ifndef QIMG_KUNIT_H
#define QIMG_KUNIT_H

#include <kunit/test.h>
#include <linux/slab.h>
#include "qimg_fmt.h"

/*
 * Geometry of a 1 GiB v3 image with 2^@cluster_bits clusters, built through
 * qimg_geom_init() as the driver does, so the tests use the same derived
 * masks and shifts as production code.
 */
static inline void qimg_t_geom(struct kunit *test, struct qimg_geom *g,
			       u32 cluster_bits, bool ext_l2, u32 order)
{
	struct qimg_header *h;
	struct qimg_err err = { };

	h = kunit_kzalloc(test, sizeof(*h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, h);
	h->version = 3;
	h->cluster_bits = cluster_bits;
	h->size = 1ULL << 30;
	h->refcount_order = order;
	h->header_length = QIMG_V3_HEADER_LEN_COMP;
	h->incompatible_features = ext_l2 ? QIMG_INCOMPAT_EXTL2 : 0;
	h->l1_size = qimg_l1_entries_for(cluster_bits, ext_l2, h->size);
	KUNIT_ASSERT_EQ_MSG(test, qimg_geom_init(h, &err), 0, "%s", err.msg);
	*g = h->geom;
}

#endif /* QIMG_KUNIT_H */
