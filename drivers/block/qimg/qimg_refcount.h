/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg refcounts: reading and allocating, deferred decrements.  All with
 * dev->meta_lock held; changes go through the caller's metadata handle.
 */
#ifndef QIMG_REFCOUNT_H
#define QIMG_REFCOUNT_H

#include "qimg.h"
#include "qimg_meta.h"

extern const struct qimg_meta_ops qimg_refcount_meta_ops;

int qimg_refcount_get_host(struct qimg_device *dev, u64 host, u64 *val);
int qimg_alloc_clusters(struct qimg_handle *h, u64 *host);
int qimg_alloc_data(struct qimg_handle *h, u64 *host);
void qimg_alloc_linked(struct qimg_device *dev, u64 host);
int qimg_find_free_run(struct qimg_device *dev, u64 n, u64 *host);
int qimg_make_free_run(struct qimg_device *dev, u64 n);
int qimg_take_clusters(struct qimg_handle *h, u64 host, u64 len);
int qimg_release_clusters(struct qimg_handle *h, u64 host, u64 len);
void qimg_defer_free(struct qimg_handle *h, u64 host, u64 len);
int qimg_apply_frees(struct qimg_device *dev);
void qimg_drop_frees(struct qimg_device *dev);

#endif /* QIMG_REFCOUNT_H */
