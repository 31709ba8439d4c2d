// SPDX-License-Identifier: GPL-2.0
/*
 * qimg control layer, the top: the module's init and exit, the control
 * device /dev/qimg-control and its ioctls (argument copying and checking;
 * the work is done by the device layer, qimg_dev.h).
 *
 * Compatibility: each struct carries its size.  copy_struct_from_user()
 * takes any size from the first version's on, so an older qimgctl works
 * with a newer module (missing fields read as zero) and a newer one with
 * an older module as long as it leaves the fields we do not know zero
 * (else -E2BIG).  The command numbers encode a struct size too; they are
 * matched without it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "qimg_dev.h"

static bool qimg_zero(const void *p, size_t len)
{
	return !memchr_inv(p, 0, len);
}

/* Copy a versioned struct of the size its first field announces. */
static int qimg_copy_in(void *dst, size_t ksize, size_t min,
			const void __user *uarg, u32 *usize)
{
	if (get_user(*usize, (const u32 __user *)uarg))
		return -EFAULT;
	if (*usize < min || *usize > PAGE_SIZE)
		return -EINVAL;
	return copy_struct_from_user(dst, ksize, uarg, *usize);
}

struct qimg_report_ctx {
	struct qimg_attach __user *ua;
};

/* Hand the device number to the caller before the disk goes live. */
static int qimg_report_index(void *arg, int index)
{
	struct qimg_report_ctx *ctx = arg;
	u32 idx = index;

	return put_user(idx, &ctx->ua->index) ? -EFAULT : 0;
}

static long qimg_ioctl_attach(void __user *uarg)
{
	struct qimg_report_ctx ctx;
	struct qimg_attach a;
	u32 usize;
	int ret;

	ret = qimg_copy_in(&a, sizeof(a), QIMG_ATTACH_SIZE_VER0, uarg, &usize);
	if (ret)
		return ret;
	if (a.flags & ~QIMG_ATTACH_FLAGS_ALL ||
	    a.__pad || !qimg_zero(a.__reserved, sizeof(a.__reserved)) ||
	    a.nr_backing > QIMG_MAX_BACKING || (a.nr_backing && !a.backing) ||
	    a.l2_cache_size > QIMG_MAX_CACHE_BYTES ||
	    a.refcount_cache_size > QIMG_MAX_CACHE_BYTES ||
	    (a.flags & QIMG_ATTACH_JOURNAL && a.flags & QIMG_ATTACH_NO_JOURNAL) ||
	    (a.journal_size && !(a.flags & QIMG_ATTACH_JOURNAL)) ||
	    a.journal_size > QIMG_MAX_JOURNAL_BYTES)
		return -EINVAL;
	ctx.ua = uarg;
	ret = qimg_attach(&a, qimg_report_index, &ctx);
	return ret < 0 ? ret : 0;
}

static long qimg_ioctl_detach(void __user *uarg)
{
	struct qimg_detach d;
	u32 usize;
	int ret;

	ret = qimg_copy_in(&d, sizeof(d), QIMG_DETACH_SIZE_VER0, uarg, &usize);
	if (ret)
		return ret;
	if (d.flags || d.__pad ||
	    !qimg_zero(d.__reserved, sizeof(d.__reserved)))
		return -EINVAL;
	if (d.index > INT_MAX)
		return -ENXIO;
	return qimg_detach(d.index);
}

static long qimg_ioctl_get_info(void __user *uarg)
{
	struct qimg_info *info;
	u32 usize;
	long ret;

	info = kzalloc(sizeof(*info), GFP_KERNEL);
	if (!info)
		return -ENOMEM;
	ret = qimg_copy_in(info, sizeof(*info), QIMG_INFO_SIZE_VER0, uarg,
			   &usize);
	if (ret)
		goto out;
	/* Only the head is input; the paths are output. */
	ret = -EINVAL;
	if (info->query > QIMG_QUERY_NEXT ||
	    !qimg_zero(info->__reserved, sizeof(info->__reserved)))
		goto out;
	ret = -ENXIO;
	if (info->index > INT_MAX)
		goto out;
	ret = qimg_get_info(info);
	info->size = min_t(u32, usize, sizeof(*info));
	if (!ret && copy_to_user(uarg, info, info->size))
		ret = -EFAULT;
out:
	kfree(info);
	return ret;
}

static long qimg_ioctl_resize(void __user *uarg)
{
	struct qimg_resize r;
	u32 usize;
	int ret;

	ret = qimg_copy_in(&r, sizeof(r), QIMG_RESIZE_SIZE_VER0, uarg, &usize);
	if (ret)
		return ret;
	if (r.flags || r.__pad ||
	    !qimg_zero(r.__reserved, sizeof(r.__reserved)))
		return -EINVAL;
	if (r.index > INT_MAX)
		return -ENXIO;
	return qimg_resize(r.index, r.new_size);
}

/* A command without its size bits. */
#define QIMG_IOC_NOSIZE(cmd)	((cmd) & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT))

static long qimg_ctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;

	BUILD_BUG_ON(sizeof(struct qimg_attach) != QIMG_ATTACH_SIZE_VER0);
	BUILD_BUG_ON(sizeof(struct qimg_detach) != QIMG_DETACH_SIZE_VER0);
	BUILD_BUG_ON(sizeof(struct qimg_info) != QIMG_INFO_SIZE_VER0);
	BUILD_BUG_ON(sizeof(struct qimg_info) != 128 + 2 * QIMG_PATH_LEN);
	BUILD_BUG_ON(sizeof(struct qimg_resize) != QIMG_RESIZE_SIZE_VER0);
	BUILD_BUG_ON(sizeof(struct qimg_backing_fd) != 8);
	BUILD_BUG_ON(offsetof(struct qimg_attach, index) != 40);

	switch (QIMG_IOC_NOSIZE(cmd)) {
	case QIMG_IOC_NOSIZE(QIMG_CTL_ATTACH):
	case QIMG_IOC_NOSIZE(QIMG_CTL_DETACH):
	case QIMG_IOC_NOSIZE(QIMG_CTL_GET_INFO):
	case QIMG_IOC_NOSIZE(QIMG_CTL_RESIZE):
		break;
	default:
		return -ENOTTY;
	}
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	switch (QIMG_IOC_NOSIZE(cmd)) {
	case QIMG_IOC_NOSIZE(QIMG_CTL_ATTACH):
		return qimg_ioctl_attach(uarg);
	case QIMG_IOC_NOSIZE(QIMG_CTL_DETACH):
		return qimg_ioctl_detach(uarg);
	case QIMG_IOC_NOSIZE(QIMG_CTL_RESIZE):
		return qimg_ioctl_resize(uarg);
	default:
		return qimg_ioctl_get_info(uarg);
	}
}

static const struct file_operations qimg_ctl_fops = {
	.owner = THIS_MODULE,
	.open = nonseekable_open,
	.unlocked_ioctl = qimg_ctl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice qimg_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = QIMG_CONTROL_NAME,
	.fops = &qimg_ctl_fops,
	.mode = 0600,
};

static int __init qimg_init(void)
{
	int ret = qimg_dev_init();

	if (ret)
		return ret;
	ret = misc_register(&qimg_misc);
	if (ret) {
		qimg_dev_exit();
		return ret;
	}
	pr_info("qcow2 block driver loaded (control: /dev/%s)\n",
		QIMG_CONTROL_NAME);
	return 0;
}

static void __exit qimg_exit(void)
{
	misc_deregister(&qimg_misc);
	qimg_dev_exit();
}

module_init(qimg_init);
module_exit(qimg_exit);
MODULE_DESCRIPTION("qcow2 image block device");
MODULE_LICENSE("GPL");
