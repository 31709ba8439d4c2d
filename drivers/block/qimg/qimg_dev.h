/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg devices: attach, detach, GET_INFO, resize, the gendisk and its sysfs
 * attributes.  Called by the control layer (qimg_ioctl.c).
 */
#ifndef QIMG_DEV_H
#define QIMG_DEV_H

#include "qimg.h"

extern struct mutex qimg_ctl_mutex;

/*
 * Told the device number before the disk goes live (@arg is the caller's,
 * passed through); an error undoes the attach.
 */
typedef int (*qimg_attach_report_t)(void *arg, int index);
int qimg_attach(const struct qimg_attach *a, qimg_attach_report_t report,
		void *arg);
int qimg_detach(int index);
int qimg_get_info(struct qimg_info *info);
int qimg_resize(int index, u64 size);
int qimg_dev_init(void);
void qimg_dev_exit(void);

/* qimg_sysfs.c: /sys/block/qimgN/qimg/, after add_disk, before del_gendisk */
int qimg_sysfs_add(struct qimg_device *dev);
void qimg_sysfs_del(struct qimg_device *dev);

#endif /* QIMG_DEV_H */
