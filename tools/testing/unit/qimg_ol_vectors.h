/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Vectors for the overlap check's fixed ranges (qimg_ol_fixed_init() and
 * qimg_ol_fixed_hit()), shared by the cmocka suite and KUnit.  One header
 * layout, 64 KiB clusters:
 *   0x00000 header, 0x10000 refcount table (1 cluster), 0x30000 L1 table
 *   (2 entries: 16 bytes), 0x80000 snapshot table (72 bytes as walked),
 *   0x90000 bitmap directory (40 bytes).
 */
#ifndef QIMG_OL_VECTORS_H
#define QIMG_OL_VECTORS_H

#include "qimg_fmt.h"

#define QOL_CS		0x10000ULL
#define QOL_RT		0x10000ULL
#define QOL_L1		0x30000ULL
#define QOL_SNAP	0x80000ULL
#define QOL_SNAP_LEN	72ULL
#define QOL_BMDIR	0x90000ULL
#define QOL_BMDIR_LEN	40ULL

static inline void qimg_ol_vec_header(struct qimg_header *h, bool bitmaps)
{
	memset(h, 0, sizeof(*h));
	h->version = 3;
	h->cluster_bits = 16;
	h->geom.cluster_bits = 16;
	h->geom.cluster_size = QOL_CS;
	h->l1_size = 2;
	h->l1_table_offset = QOL_L1;
	h->refcount_table_offset = QOL_RT;
	h->refcount_table_clusters = 1;
	h->nb_snapshots = 1;
	h->snapshots_offset = QOL_SNAP;
	h->has_bitmaps_ext = bitmaps;
	h->nb_bitmaps = bitmaps ? 1 : 0;
	h->bitmap_directory_offset = QOL_BMDIR;
	h->bitmap_directory_size = QOL_BMDIR_LEN;
}

struct qimg_ol_vec {
	const char *name;
	bool bitmaps;		/* header has a bitmap directory */
	u64 off;
	u64 len;
	u32 ign;
	u32 hit;		/* expected kind, 0: no overlap */
};

static const struct qimg_ol_vec qimg_ol_vecs[] = {
	{ "header, first sector", true, 0, 512, 0, QIMG_OL_HEADER },
	{ "header, last byte of its cluster", true, QOL_CS - 1, 1, 0,
	  QIMG_OL_HEADER },
	{ "header ignored: next kind wins", true, 0, 2 * QOL_CS,
	  QIMG_OL_HEADER, QIMG_OL_REFCOUNT_TABLE },
	{ "refcount table, whole cluster", true, QOL_RT, QOL_CS, 0,
	  QIMG_OL_REFCOUNT_TABLE },
	{ "refcount block cluster: not a fixed range", true, 0x20000, QOL_CS,
	  0, 0 },
	{ "L1 table", true, QOL_L1, QOL_CS, 0, QIMG_OL_ACTIVE_L1 },
	{ "L1 table, its last entry", true, QOL_L1 + 8, 8, 0,
	  QIMG_OL_ACTIVE_L1 },
	{ "just past the L1 table (exact range)", true, QOL_L1 + 16, 512, 0,
	  0 },
	{ "L1 table ignored", true, QOL_L1, QOL_CS, QIMG_OL_ACTIVE_L1, 0 },
	{ "range spanning into the L1 table", true, 0x20000, 0x10001, 0,
	  QIMG_OL_ACTIVE_L1 },
	{ "range ending just before the L1 table", true, 0x20000, 0x10000, 0,
	  0 },
	{ "snapshot table, last byte", true, QOL_SNAP + QOL_SNAP_LEN - 1, 1,
	  0, QIMG_OL_SNAPSHOT_TABLE },
	{ "past the snapshot table", true, QOL_SNAP + QOL_SNAP_LEN, 4096, 0,
	  0 },
	{ "bitmap directory", true, QOL_BMDIR, QOL_CS, 0,
	  QIMG_OL_BITMAP_DIR },
	{ "bitmap directory ignored (rewriting itself)", true, QOL_BMDIR,
	  QOL_BMDIR_LEN, QIMG_OL_BITMAP_DIR, 0 },
	{ "no bitmaps extension: no directory", false, QOL_BMDIR, QOL_CS, 0,
	  0 },
	{ "data cluster far away", true, 0x100000, QOL_CS, 0, 0 },
	{ "empty range", true, 0, 0, 0, 0 },
	{ "range wrapping past 2^64", true, ~0ULL - 10, 100, 0, 0 },
};

#endif /* QIMG_OL_VECTORS_H */
