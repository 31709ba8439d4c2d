// SPDX-License-Identifier: GPL-2.0
/*
 * qimg control device ioctls: argument copying and checking.  The work is
 * done in qimg_main.c.
 */
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "qimg.h"

static bool qimg_zero(const void *p, size_t len)
{
	return !memchr_inv(p, 0, len);
}

static long qimg_ioctl_attach(void __user *uarg)
{
	struct qimg_attach a;
	int ret;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.size != sizeof(a) || a.flags & ~QIMG_ATTACH_FLAGS_ALL ||
	    a.__pad || !qimg_zero(a.__reserved, sizeof(a.__reserved)) ||
	    a.nr_backing > QIMG_MAX_BACKING || (a.nr_backing && !a.backing) ||
	    a.l2_cache_size > QIMG_MAX_CACHE_BYTES ||
	    a.refcount_cache_size > QIMG_MAX_CACHE_BYTES)
		return -EINVAL;
	ret = qimg_attach(&a);
	if (ret < 0)
		return ret;
	a.index = ret;
	if (copy_to_user(uarg, &a, sizeof(a))) {
		/* The caller cannot learn the index: undo. */
		qimg_detach(a.index);
		return -EFAULT;
	}
	return 0;
}

static long qimg_ioctl_detach(void __user *uarg)
{
	struct qimg_detach d;

	if (copy_from_user(&d, uarg, sizeof(d)))
		return -EFAULT;
	if (d.size != sizeof(d) || d.flags || d.__pad ||
	    !qimg_zero(d.__reserved, sizeof(d.__reserved)))
		return -EINVAL;
	if (d.index > INT_MAX)
		return -ENXIO;
	return qimg_detach(d.index);
}

static long qimg_ioctl_get_info(void __user *uarg)
{
	struct qimg_info *info;
	long ret;

	info = kzalloc(sizeof(*info), GFP_KERNEL);
	if (!info)
		return -ENOMEM;
	ret = -EFAULT;
	if (copy_from_user(info, uarg, offsetof(struct qimg_info, path)))
		goto out;
	ret = -EINVAL;
	if (info->size != sizeof(*info) || info->query > QIMG_QUERY_NEXT ||
	    !qimg_zero(info->__reserved, sizeof(info->__reserved)))
		goto out;
	ret = -ENXIO;
	if (info->index > INT_MAX)
		goto out;
	ret = qimg_get_info(info);
	if (!ret && copy_to_user(uarg, info, sizeof(*info)))
		ret = -EFAULT;
out:
	kfree(info);
	return ret;
}

long qimg_ctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;

	BUILD_BUG_ON(sizeof(struct qimg_attach) != 80);
	BUILD_BUG_ON(sizeof(struct qimg_detach) != 32);
	BUILD_BUG_ON(sizeof(struct qimg_info) != 128 + 2 * QIMG_PATH_LEN);
	BUILD_BUG_ON(sizeof(struct qimg_backing_fd) != 8);

	switch (cmd) {
	case QIMG_CTL_ATTACH:
	case QIMG_CTL_DETACH:
	case QIMG_CTL_GET_INFO:
		break;
	default:
		return -ENOTTY;
	}
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	switch (cmd) {
	case QIMG_CTL_ATTACH:
		return qimg_ioctl_attach(uarg);
	case QIMG_CTL_DETACH:
		return qimg_ioctl_detach(uarg);
	default:
		return qimg_ioctl_get_info(uarg);
	}
}
