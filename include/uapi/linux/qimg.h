/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * qimg: qcow2 images as block devices.  Control interface of
 * /dev/qimg-control, shared by the kernel module and qimgctl.
 *
 * Every argument structure starts with a __u32 size that the caller sets
 * to sizeof() of the structure it was built against; the kernel refuses a
 * size it does not know and any flag or __reserved field it does not
 * understand (-EINVAL), so fields can be added later without ambiguity.
 * All fields are fixed width, user pointers travel as __u64 and padding is
 * explicit, so 32-bit callers on 64-bit kernels use the same layout.
 * All commands need CAP_SYS_ADMIN.
 */
#ifndef _UAPI_LINUX_QIMG_H
#define _UAPI_LINUX_QIMG_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define QIMG_CONTROL_NAME	"qimg-control"

/* Longest backing chain an attach may pass (top image not counted). */
#define QIMG_MAX_BACKING	16

/* Image formats of the backing chain entries. */
#define QIMG_FMT_RAW		0
#define QIMG_FMT_QCOW2		1

/* struct qimg_attach.flags */
#define QIMG_ATTACH_READ_ONLY	(1U << 0)	/* device is read-only */
#define QIMG_ATTACH_PARTSCAN	(1U << 1)	/* scan for partitions */
#define QIMG_ATTACH_AUTOCLEAR	(1U << 2)	/* detach on last close */
#define QIMG_ATTACH_DIRECT_IO	(1U << 3)	/* O_DIRECT data I/O if possible */
/*
 * Metadata journal (Documentation/block/qimg-format.rst 5.1): JOURNAL
 * keeps one for as long as the device is attached (created if the image
 * has none), NO_JOURNAL writes metadata back in order without one.
 * Neither: the image's own choice (a journal extension, made by
 * `qimgctl create -o journal=on`, asks for one).  Both: -EINVAL.
 */
#define QIMG_ATTACH_JOURNAL	(1U << 4)
#define QIMG_ATTACH_NO_JOURNAL	(1U << 5)
#define QIMG_ATTACH_FLAGS_ALL	0x3fU

/* One image of the backing chain, nearest to the top first. */
struct qimg_backing_fd {
	__s32 fd;		/* opened read-only is enough */
	__u32 format;		/* QIMG_FMT_* */
};

struct qimg_attach {
	__u32 size;		/* sizeof(struct qimg_attach) */
	__u32 flags;		/* QIMG_ATTACH_* */
	__s32 fd;		/* the image; O_RDWR unless READ_ONLY */
	__u32 nr_backing;	/* entries at backing, <= QIMG_MAX_BACKING */
	__u64 backing;		/* user pointer to struct qimg_backing_fd[] */
	__u64 l2_cache_size;	/* bytes of L2 tables to cache, 0: default */
	__u64 refcount_cache_size; /* bytes of refcount blocks, 0: default */
	__u32 index;		/* out: N of /dev/qimgN */
	__u32 __pad;		/* must be zero */
	__u64 journal_size;	/* bytes of a journal made by this attach, 0: default */
	__u64 __reserved[3];	/* must be zero */
};

/* struct qimg_info.flags (out) */
#define QIMG_INFO_READ_ONLY	(1U << 0)
#define QIMG_INFO_PARTSCAN	(1U << 1)
#define QIMG_INFO_AUTOCLEAR	(1U << 2)
#define QIMG_INFO_DIRECT_IO	(1U << 3)	/* data I/O uses O_DIRECT */
#define QIMG_INFO_CORRUPT	(1U << 4)	/* corruption found while running */
#define QIMG_INFO_JOURNAL	(1U << 5)	/* metadata goes through the journal */

/* struct qimg_info.query (in) */
#define QIMG_QUERY_EXACT	0	/* the device numbered index */
#define QIMG_QUERY_NEXT		1	/* the first device numbered >= index */

#define QIMG_PATH_LEN		1024

struct qimg_info {
	__u32 size;		/* sizeof(struct qimg_info) */
	__u32 query;		/* in: QIMG_QUERY_* */
	__u32 index;		/* in: device number; out: the one described */
	__u32 flags;		/* out: QIMG_INFO_* */
	__u64 virtual_size;	/* bytes */
	__u64 cluster_size;
	__u64 ino;		/* inode number of the image file */
	__u32 dev;		/* its st_dev, new_encode_dev() format */
	__u32 nr_backing;
	__u64 l2_cache_size;	/* bytes */
	__u64 refcount_cache_size;
	__u64 l2_hits;
	__u64 l2_misses;
	__u64 refcount_hits;
	__u64 refcount_misses;
	__u64 __reserved[4];	/* must be zero on input */
	char path[QIMG_PATH_LEN];	/* image path, NUL-terminated */
	char backing_path[QIMG_PATH_LEN]; /* first backing image, or "" */
};

struct qimg_detach {
	__u32 size;		/* sizeof(struct qimg_detach) */
	__u32 index;
	__u32 flags;		/* none defined yet, must be zero */
	__u32 __pad;
	__u64 __reserved[2];	/* must be zero */
};

/*
 * Grow an attached device to new_size bytes (a multiple of 512, not
 * below the current size; the same size is a no-op).  The new space
 * reads as zeros, also where a backing file is longer than the old size.
 * Refused with -EROFS on a read-only device, -EOPNOTSUPP for images the
 * driver cannot grow in place (persistent bitmaps, an external data file,
 * a version 2 image over a longer backing file), -EFBIG past the format's
 * limits, -EBUSY while another resize of the device runs.
 */
struct qimg_resize {
	__u32 size;		/* sizeof(struct qimg_resize) */
	__u32 index;		/* the device */
	__u32 flags;		/* none defined yet, must be zero */
	__u32 __pad;
	__u64 new_size;		/* bytes */
	__u64 __reserved[2];	/* must be zero */
};

/*
 * Every struct starts with its size as the caller knows it: the module
 * accepts any size from the first version's on (a newer, bigger struct's
 * extra bytes must be zero, an older one's missing fields read as zero),
 * and matches the commands below whatever size they encode.
 */
#define QIMG_ATTACH_SIZE_VER0	80
#define QIMG_DETACH_SIZE_VER0	32
#define QIMG_INFO_SIZE_VER0	2176
#define QIMG_RESIZE_SIZE_VER0	40

#define QIMG_IOC_MAGIC		0xd5
#define QIMG_CTL_ATTACH		_IOWR(QIMG_IOC_MAGIC, 0x00, struct qimg_attach)
#define QIMG_CTL_DETACH		_IOW(QIMG_IOC_MAGIC, 0x01, struct qimg_detach)
#define QIMG_CTL_GET_INFO	_IOWR(QIMG_IOC_MAGIC, 0x02, struct qimg_info)
#define QIMG_CTL_RESIZE		_IOW(QIMG_IOC_MAGIC, 0x03, struct qimg_resize)

#endif /* _UAPI_LINUX_QIMG_H */
