/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg mapping: guest offset -> host cluster lookups, guest reads through
 * the backing chain, and the write side (allocation, copy-on-write,
 * zero clusters).
 */
#ifndef QIMG_MAP_H
#define QIMG_MAP_H

#include "qimg.h"
#include "qimg_meta.h"

int qimg_map_lookup(struct qimg_image *img, u64 guest,
		    struct qimg_l2_entry *e);

/*
 * Extended L2: the subclusters [first, last] a range of @len > 0 bytes at
 * @coff inside a cluster touches, as a bitmap.
 */
static inline u32 qimg_sc_mask(const struct qimg_geom *g, u64 coff, u64 len)
{
	return (u32)GENMASK((coff + len - 1) >> g->subcluster_bits,
			    coff >> g->subcluster_bits);
}

/*
 * Are the bytes [@coff, @coff + @len) of the normal cluster @e all in
 * allocated subclusters, so that they live at the host cluster?  Always
 * true for standard L2 entries.
 */
static inline bool qimg_sc_allocated(const struct qimg_geom *g,
				     const struct qimg_l2_entry *e, u64 coff,
				     u64 len)
{
	u32 m;

	if (!g->ext_l2)
		return true;
	m = qimg_sc_mask(g, coff, len);
	return (e->alloc_bitmap & m) == m;
}

int qimg_read_guest(struct qimg_image *img, u64 off, struct iov_iter *it);
int qimg_map_write(struct qimg_device *dev, u64 guest, struct iov_iter *it);
/* qimg_alloc_begin(): the cluster is ours already; a rider's write */
#define QIMG_ALLOC_OURS		1
#define QIMG_ALLOC_RIDE		2
int qimg_alloc_begin(struct qimg_device *dev, u64 guest, size_t len,
		     struct qimg_alloc *a, bool ride);
struct qimg_alloc *qimg_alloc_data_done(struct qimg_alloc *a);
bool qimg_alloc_data_only(struct qimg_device *dev, const struct qimg_alloc *a);
int qimg_alloc_fill(struct qimg_device *dev, const struct qimg_alloc *a,
		    struct iov_iter *it, struct qimg_buf *b);
int qimg_alloc_write(struct qimg_device *dev, struct qimg_alloc *a,
		     struct iov_iter *it);
int qimg_alloc_link(struct qimg_handle *h, struct qimg_alloc *a, int ret);
int qimg_alloc_finish(struct qimg_device *dev, struct qimg_alloc *a, int ret);
int qimg_map_zero_cluster(struct qimg_device *dev, u64 cstart, bool unmap);
int qimg_map_zero_subclusters(struct qimg_device *dev, u64 guest, u64 len);
void qimg_inflight_wait(struct qimg_device *dev, u64 cluster);
int qimg_map_grow_l1(struct qimg_device *dev, u32 entries);
int qimg_map_zero_new(struct qimg_device *dev, u64 from, u64 to);
void qimg_map_note_flush(struct qimg_device *dev);

#endif /* QIMG_MAP_H */
