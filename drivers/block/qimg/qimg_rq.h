/* SPDX-License-Identifier: GPL-2.0 */
/* qimg block requests: blk-mq operations and flush. */
#ifndef QIMG_RQ_H
#define QIMG_RQ_H

#include "qimg.h"

extern const struct blk_mq_ops qimg_mq_ops;
void qimg_link_work(struct work_struct *work);
int qimg_flush(struct qimg_device *dev);
int qimg_drain_alloc(struct qimg_device *dev, unsigned int nr);
void qimg_drain_free(struct qimg_device *dev);
void qimg_bio_iter(struct iov_iter *it, struct bio *bio, bool write);

#endif /* QIMG_RQ_H */
