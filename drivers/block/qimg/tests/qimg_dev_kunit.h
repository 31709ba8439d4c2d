/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Set-up shared by the KUnit suites that drive the whole qimg driver
 * (qimg_dev, qimg_meta): a qcow2 image on tmpfs, attached as a real
 * blk-mq disk, and bio I/O on it.  Built only with
 * CONFIG_QIMG_KUNIT_DRIVER.
 */
#ifndef QIMG_DEV_KUNIT_H
#define QIMG_DEV_KUNIT_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/qimg.h>
#include "qimg_kunit.h"
#include "qimg_dev.h"

#define QIMG_T_CB	16
#define QIMG_T_CS	BIT(QIMG_T_CB)
#define QIMG_T_VSIZE	(64ULL << 20)	/* one L2 table maps 512 MiB */
#define QIMG_T_PATH	"/qimg-kunit.img"

struct qimg_t_dev {
	struct file *file;
	int index;
	struct block_device *bdev;
};

/*
 * The image qemu-img create would make: header, refcount table, one
 * refcount block (covering clusters 0..3, all in use), an empty L1 table.
 */
static inline void qimg_t_make_image(struct kunit *test, struct file *f)
{
	u8 *buf = kunit_kzalloc(test, 4 * QIMG_T_CS, GFP_KERNEL);
	loff_t pos = 0;
	int i;

	KUNIT_ASSERT_NOT_NULL(test, buf);
	put_unaligned_be32(QIMG_MAGIC, buf + 0);
	put_unaligned_be32(3, buf + 4);
	put_unaligned_be32(QIMG_T_CB, buf + 20);
	put_unaligned_be64(QIMG_T_VSIZE, buf + 24);
	put_unaligned_be32(1, buf + 36);			/* l1_size */
	put_unaligned_be64(3 * QIMG_T_CS, buf + 40);		/* L1 */
	put_unaligned_be64(1 * QIMG_T_CS, buf + 48);		/* reftable */
	put_unaligned_be32(1, buf + 56);
	put_unaligned_be32(4, buf + 96);			/* 16-bit */
	put_unaligned_be32(QIMG_V3_HEADER_LEN_COMP, buf + 100);
	put_unaligned_be64(2 * QIMG_T_CS, buf + QIMG_T_CS);	/* -> block */
	for (i = 0; i < 4; i++)
		put_unaligned_be16(1, buf + 2 * QIMG_T_CS + 2 * i);
	KUNIT_ASSERT_EQ(test, kernel_write(f, buf, 4 * QIMG_T_CS, &pos),
			(ssize_t)(4 * QIMG_T_CS));
}

/* Attach @f with @flags (and @jsize for a new journal): index or errno. */
static inline int qimg_t_attach_flags(struct kunit *test, struct file *f,
				      u32 flags, u64 jsize)
{
	struct qimg_attach a = { .size = sizeof(a), .flags = flags,
				 .journal_size = jsize };
	int fd, ret;

	fd = get_unused_fd_flags(O_CLOEXEC);
	KUNIT_ASSERT_GE(test, fd, 0);
	fd_install(fd, get_file(f));
	a.fd = fd;
	ret = qimg_attach(&a, NULL, NULL);
	close_fd(fd);
	return ret;
}

static inline int qimg_t_attach(struct kunit *test, struct file *f)
{
	return qimg_t_attach_flags(test, f, 0, 0);
}

static inline struct block_device *qimg_t_open_bdev(struct kunit *test, int index)
{
	struct block_device *bdev;
	struct device *d;
	char name[16];
	dev_t devt;

	snprintf(name, sizeof(name), "qimg%d", index);
	d = class_find_device_by_name(&block_class, name);
	KUNIT_ASSERT_NOT_NULL_MSG(test, d, "no block device %s", name);
	devt = d->devt;
	put_device(d);
	bdev = blkdev_get_by_dev(devt, FMODE_READ | FMODE_WRITE, NULL);
	KUNIT_ASSERT_FALSE_MSG(test, IS_ERR(bdev), "open %s: %ld", name,
			       PTR_ERR(bdev));
	return bdev;
}

static inline int qimg_t_io(struct block_device *bdev, blk_opf_t op,
			    u64 off, void *buf, unsigned int len)
{
	struct bio *bio;
	unsigned int done, n;
	int ret;

	bio = bio_alloc(bdev, DIV_ROUND_UP(len, PAGE_SIZE) + 1, op,
			GFP_KERNEL);
	bio->bi_iter.bi_sector = off >> SECTOR_SHIFT;
	for (done = 0; done < len; done += n) {
		n = min_t(unsigned int, len - done,
			  PAGE_SIZE - offset_in_page(buf + done));
		if (bio_add_page(bio, virt_to_page(buf + done), n,
				 offset_in_page(buf + done)) != n) {
			bio_put(bio);
			return -EIO;
		}
	}
	ret = submit_bio_wait(bio);
	bio_put(bio);
	return ret;
}

static inline int qimg_t_flush(struct block_device *bdev)
{
	struct bio *bio = bio_alloc(bdev, 0, REQ_OP_WRITE | REQ_PREFLUSH,
				    GFP_KERNEL);
	int ret = submit_bio_wait(bio);

	bio_put(bio);
	return ret;
}

static inline int qimg_t_dev_init(struct kunit *test)
{
	struct qimg_t_dev *d = kunit_kzalloc(test, sizeof(*d), GFP_KERNEL);

	if (!d)
		return -ENOMEM;
	d->index = -1;
	d->file = filp_open(QIMG_T_PATH, O_RDWR | O_CREAT | O_TRUNC |
			    O_LARGEFILE, 0600);
	if (IS_ERR(d->file)) {
		kunit_err(test, "cannot create %s: %ld", QIMG_T_PATH,
			  PTR_ERR(d->file));
		return PTR_ERR(d->file);
	}
	test->priv = d;
	return 0;
}

static inline void qimg_t_dev_exit(struct kunit *test)
{
	struct qimg_t_dev *d = test->priv;

	if (!d)
		return;
	if (d->bdev)
		blkdev_put(d->bdev, FMODE_READ | FMODE_WRITE);
	if (d->index >= 0)
		KUNIT_EXPECT_EQ(test, qimg_detach(d->index), 0);
	fput(d->file);
}

static inline void qimg_t_up(struct kunit *test, struct qimg_t_dev *d)
{
	d->index = qimg_t_attach(test, d->file);
	KUNIT_ASSERT_GE_MSG(test, d->index, 0, "qimg_attach: %d", d->index);
	d->bdev = qimg_t_open_bdev(test, d->index);
	KUNIT_EXPECT_EQ(test, bdev_nr_bytes(d->bdev), QIMG_T_VSIZE);
}

static inline void qimg_t_down(struct kunit *test, struct qimg_t_dev *d)
{
	blkdev_put(d->bdev, FMODE_READ | FMODE_WRITE);
	d->bdev = NULL;
	KUNIT_ASSERT_EQ(test, qimg_detach(d->index), 0);
	d->index = -1;
}

static inline void qimg_t_fill(u8 *buf, unsigned int len, u8 seed)
{
	unsigned int i;

	for (i = 0; i < len; i++)
		buf[i] = seed + i * 7 + (i >> 9);
}

static inline void qimg_t_pread(struct kunit *test, struct file *f,
				void *buf, size_t len, loff_t pos)
{
	KUNIT_ASSERT_EQ(test, kernel_read(f, buf, len, &pos), (ssize_t)len);
}

static inline void qimg_t_pwrite64(struct file *f, loff_t pos, u64 val)
{
	__be64 v = cpu_to_be64(val);

	kernel_write(f, &v, 8, &pos);
}

#define QIMG_T_SMALL_CB		9
#define QIMG_T_SMALL_CS		BIT(QIMG_T_SMALL_CB)

/*
 * 512-byte clusters and 64-bit refcounts: a refcount block covers 64
 * clusters and the one-cluster refcount table 4096 (2 MiB), so a few MiB
 * of writes grow the table.  Header, refcount table, refcount block, then
 * the L1 table.
 */
static inline void qimg_t_make_small(struct kunit *test, struct file *f,
				     u64 vsize)
{
	u64 cs = QIMG_T_SMALL_CS;
	u64 l1_entries = vsize / (cs * (cs / 8));
	u64 n = 3 + DIV_ROUND_UP(l1_entries * 8, cs), i;
	u8 *buf = kunit_kzalloc(test, n * cs, GFP_KERNEL);
	loff_t pos = 0;

	KUNIT_ASSERT_NOT_NULL(test, buf);
	KUNIT_ASSERT_EQ(test, vfs_truncate(&f->f_path, 0), 0);
	put_unaligned_be32(QIMG_MAGIC, buf + 0);
	put_unaligned_be32(3, buf + 4);
	put_unaligned_be32(QIMG_T_SMALL_CB, buf + 20);
	put_unaligned_be64(vsize, buf + 24);
	put_unaligned_be32(l1_entries, buf + 36);
	put_unaligned_be64(3 * cs, buf + 40);
	put_unaligned_be64(1 * cs, buf + 48);
	put_unaligned_be32(1, buf + 56);
	put_unaligned_be32(6, buf + 96);
	put_unaligned_be32(QIMG_V3_HEADER_LEN_COMP, buf + 100);
	put_unaligned_be64(2 * cs, buf + cs);
	for (i = 0; i < n; i++)
		put_unaligned_be64(1, buf + 2 * cs + 8 * i);
	KUNIT_ASSERT_EQ(test, kernel_write(f, buf, n * cs, &pos),
			(ssize_t)(n * cs));
}

#endif /* QIMG_DEV_KUNIT_H */
