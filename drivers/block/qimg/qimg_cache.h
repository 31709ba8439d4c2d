/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg table cache: slab-backed L2 tables and refcount blocks, LRU, dirty
 * entries pinned until written back.  Locking: cache->lock (a spinlock)
 * around the hash and lists; cache->load_mutex serialises misses.
 * Marking dirty and writing back happen under dev->meta_lock (callers in
 * qimg_meta.c).
 */
#ifndef QIMG_CACHE_H
#define QIMG_CACHE_H

#include "qimg.h"

void qimg_slabs_exit(void);
int qimg_cache_init(struct qimg_cache *c, struct qimg_image *img,
		    const char *name, u64 bytes);
void qimg_cache_destroy(struct qimg_cache *c);
int qimg_cache_get(struct qimg_cache *c, u64 offset, bool fresh,
		   struct qimg_centry **out);
void qimg_cache_put(struct qimg_cache *c, struct qimg_centry *e);
u64 qimg_cache_bytes(const struct qimg_cache *c);
bool qimg_cache_has_dirty(struct qimg_cache *c, u64 offset);
void qimg_cache_mark_dirty(struct qimg_cache *c, struct qimg_centry *e);
int qimg_cache_writeback(struct qimg_cache *c);
void qimg_cache_trim(struct qimg_cache *c);
void qimg_cache_clean(struct qimg_cache *c,
		      bool (*done)(struct qimg_centry *e, void *arg), void *arg);

#endif /* QIMG_CACHE_H */
