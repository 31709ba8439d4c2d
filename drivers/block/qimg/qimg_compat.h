/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every difference between the kernel versions qimg builds against lives
 * here and nowhere else.  Built and checked against 6.1 (Debian 12) and
 * 6.12 (bookworm-backports); versions in between are handled by the same
 * version tests but were not compiled.
 *
 *  6.5:  block_device_operations open/release take (gendisk, blk_mode_t)
 *  6.9:  blk_mq_alloc_disk() takes a struct queue_limits
 *  6.11: write cache / FUA are queue_limits features, the old setters are
 *        gone
 *  6.3:  srcu_down_read() / srcu_up_read(): SRCU read sections that
 *        may end in another context (before: __srcu_read_lock/unlock)
 *  6.6:  kiocb_start_write() / kiocb_end_write() for asynchronous writes
 *  6.12: <asm/unaligned.h> moved to <linux/unaligned.h>
 */
#ifndef QIMG_COMPAT_H
#define QIMG_COMPAT_H

#include <linux/version.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/fs.h>
#include <linux/srcu.h>

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

/* Queue geometry qimg asks for, applied the way each version wants it. */
struct qimg_qlimits {
	unsigned int logical_block_size;
	unsigned int physical_block_size;
	unsigned int io_opt;
	unsigned int max_hw_sectors;
	unsigned int max_discard_sectors;	/* 0: no discard */
	unsigned int max_write_zeroes_sectors;	/* 0: no write zeroes */
	unsigned int discard_granularity;
};

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
static inline struct gendisk *
qimg_compat_alloc_disk(struct blk_mq_tag_set *set,
		       const struct qimg_qlimits *ql, void *queuedata)
{
	struct queue_limits lim = {
		.logical_block_size = ql->logical_block_size,
		.physical_block_size = ql->physical_block_size,
		.io_opt = ql->io_opt,
		.max_hw_sectors = ql->max_hw_sectors,
		.max_hw_discard_sectors = ql->max_discard_sectors,
		.max_write_zeroes_sectors = ql->max_write_zeroes_sectors,
		.discard_granularity = ql->discard_granularity,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
		.features = BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA,
#endif
	};
	struct gendisk *disk = blk_mq_alloc_disk(set, &lim, queuedata);

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 11, 0)
	if (!IS_ERR(disk))
		blk_queue_write_cache(disk->queue, true, true);
#endif
	return disk;
}
#else
static inline struct gendisk *
qimg_compat_alloc_disk(struct blk_mq_tag_set *set,
		       const struct qimg_qlimits *ql, void *queuedata)
{
	struct gendisk *disk = blk_mq_alloc_disk(set, queuedata);
	struct request_queue *q;

	if (IS_ERR(disk))
		return disk;
	q = disk->queue;
	blk_queue_logical_block_size(q, ql->logical_block_size);
	blk_queue_physical_block_size(q, ql->physical_block_size);
	blk_queue_io_opt(q, ql->io_opt);
	blk_queue_max_hw_sectors(q, ql->max_hw_sectors);
	blk_queue_max_discard_sectors(q, ql->max_discard_sectors);
	blk_queue_max_write_zeroes_sectors(q, ql->max_write_zeroes_sectors);
	q->limits.discard_granularity = ql->discard_granularity;
	blk_queue_write_cache(q, true, true);
	return disk;
}
#endif

/*
 * Open / release hooks.  The driver implements qimg_bdev_open(disk) and
 * qimg_bdev_release(disk); these adapt them to the prototypes of the day.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define QIMG_DEFINE_BDEV_OPS(open_fn, release_fn)			\
static int open_fn##_compat(struct gendisk *disk, blk_mode_t mode)	\
{									\
	return open_fn(disk);						\
}									\
static void release_fn##_compat(struct gendisk *disk)			\
{									\
	release_fn(disk);						\
}
#else
#define QIMG_DEFINE_BDEV_OPS(open_fn, release_fn)			\
static int open_fn##_compat(struct block_device *bdev, fmode_t mode)	\
{									\
	return open_fn(bdev->bd_disk);					\
}									\
static void release_fn##_compat(struct gendisk *disk, fmode_t mode)	\
{									\
	release_fn(disk);						\
}
#endif

/*
 * Freeze protection of an asynchronous write to a regular file: taken at
 * submission, handed over to the completion (any context), as aio does.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
static inline void qimg_compat_kiocb_start_write(struct kiocb *iocb)
{
	if (S_ISREG(file_inode(iocb->ki_filp)->i_mode))
		kiocb_start_write(iocb);
}

static inline void qimg_compat_kiocb_end_write(struct kiocb *iocb)
{
	if (S_ISREG(file_inode(iocb->ki_filp)->i_mode))
		kiocb_end_write(iocb);
}
#else
static inline void qimg_compat_kiocb_start_write(struct kiocb *iocb)
{
	struct inode *inode = file_inode(iocb->ki_filp);

	if (!S_ISREG(inode->i_mode))
		return;
	sb_start_write(inode->i_sb);
	/* Released for lockdep here; the completion acquires it back. */
	__sb_writers_release(inode->i_sb, SB_FREEZE_WRITE);
}

static inline void qimg_compat_kiocb_end_write(struct kiocb *iocb)
{
	struct inode *inode = file_inode(iocb->ki_filp);

	if (!S_ISREG(inode->i_mode))
		return;
	__sb_writers_acquired(inode->i_sb, SB_FREEZE_WRITE);
	sb_end_write(inode->i_sb);
}
#endif

/* An SRCU read section whose end may run in another context. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
#define qimg_compat_srcu_down_read(ssp)		srcu_down_read(ssp)
#define qimg_compat_srcu_up_read(ssp, idx)	srcu_up_read(ssp, idx)
#else
#define qimg_compat_srcu_down_read(ssp)		__srcu_read_lock(ssp)
#define qimg_compat_srcu_up_read(ssp, idx)	__srcu_read_unlock(ssp, idx)
#endif

#endif /* QIMG_COMPAT_H */
