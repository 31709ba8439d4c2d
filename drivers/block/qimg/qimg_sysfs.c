// SPDX-License-Identifier: GPL-2.0
/*
 * qimg sysfs: /sys/block/qimgN/qimg/, read-only attributes describing the
 * image and its caches (like loop's loop/ directory).  The group belongs to
 * the gendisk, so it disappears in del_gendisk() before the device is
 * freed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blkdev.h>
#include <linux/device.h>
#include <linux/sysfs.h>

#include "qimg_cache.h"
#include "qimg_journal.h"
#include "qimg_dev.h"

static struct qimg_device *qimg_from_dev(struct device *d)
{
	return dev_to_disk(d)->private_data;
}

static ssize_t image_show(struct device *d, struct device_attribute *attr,
			  char *buf)
{
	struct qimg_device *dev = qimg_from_dev(d);

	return sysfs_emit(buf, "%s\n", dev->top.path ? dev->top.path : "");
}

static ssize_t backing_show(struct device *d, struct device_attribute *attr,
			    char *buf)
{
	struct qimg_device *dev = qimg_from_dev(d);
	struct qimg_image *img;
	int n = 0;

	for (img = dev->top.backing; img; img = img->backing)
		n += sysfs_emit_at(buf, n, "%s %s\n",
				   img->raw ? "raw" : "qcow2",
				   img->path ? img->path : "?");
	return n;
}

#define QIMG_ATTR_U64(name, expr)					\
static ssize_t name##_show(struct device *d,				\
			   struct device_attribute *attr, char *buf)	\
{									\
	struct qimg_device *dev = qimg_from_dev(d);			\
									\
	return sysfs_emit(buf, "%llu\n", (unsigned long long)(expr));	\
}									\
static DEVICE_ATTR_RO(name)

QIMG_ATTR_U64(virtual_size, dev->top.virtual_size);
QIMG_ATTR_U64(cluster_size, dev->top.g->cluster_size);
QIMG_ATTR_U64(read_only, dev->read_only);
QIMG_ATTR_U64(direct_io, dev->top.dio);
QIMG_ATTR_U64(corrupt, test_bit(QIMG_STATE_CORRUPT, &dev->state));
QIMG_ATTR_U64(l2_cache_size, qimg_cache_bytes(&dev->top.l2));
QIMG_ATTR_U64(l2_cache_hits, atomic64_read(&dev->top.l2.hits));
QIMG_ATTR_U64(l2_cache_misses, atomic64_read(&dev->top.l2.misses));
QIMG_ATTR_U64(refcount_cache_size,
	      dev->reftable ? qimg_cache_bytes(&dev->rc) : 0);
QIMG_ATTR_U64(refcount_cache_hits,
	      dev->reftable ? atomic64_read(&dev->rc.hits) : 0);
QIMG_ATTR_U64(refcount_cache_misses,
	      dev->reftable ? atomic64_read(&dev->rc.misses) : 0);

/*
 * The journal's attributes (journal_*): 0 with the journal off.  The
 * journal goes away only after del_gendisk() removed these files.
 */
#define QIMG_JATTR(name, expr)						\
	QIMG_ATTR_U64(journal_##name, ({				\
		struct qimg_journal *j = dev->journal;			\
		j ? (u64)(expr) : 0; }))

QIMG_ATTR_U64(journal, !!dev->journal);
QIMG_ATTR_U64(journal_replayed, dev->jrnl_replayed);
QIMG_JATTR(size, j->geom.area_size);
QIMG_JATTR(commits, atomic64_read(&j->st_commits));
QIMG_JATTR(blocks_written, atomic64_read(&j->st_blocks));
QIMG_JATTR(device_flushes, atomic64_read(&j->st_barriers));
QIMG_JATTR(guest_flushes, atomic64_read(&j->st_flushes));
QIMG_JATTR(checkpoints, atomic64_read(&j->st_checkpoints));
QIMG_JATTR(fill, j->ntx ? (j->head >= j->hdr.tail_block ?
			   j->head - j->hdr.tail_block :
			   j->hdr.nblocks - j->hdr.tail_block + j->head) : 0);

static ssize_t journal_commit_interval_ms_show(struct device *d,
					       struct device_attribute *attr,
					       char *buf)
{
	struct qimg_device *dev = qimg_from_dev(d);

	return sysfs_emit(buf, "%u\n", dev->journal ?
			  READ_ONCE(dev->journal->interval_ms) : 0);
}

static ssize_t journal_commit_interval_ms_store(struct device *d,
						struct device_attribute *attr,
						const char *buf, size_t len)
{
	struct qimg_device *dev = qimg_from_dev(d);
	unsigned int v;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = kstrtouint(buf, 0, &v);
	if (ret)
		return ret;
	if (!v || v > 3600 * 1000)
		return -EINVAL;
	if (!dev->journal)
		return -ENODEV;
	WRITE_ONCE(dev->journal->interval_ms, v);
	return len;
}
static DEVICE_ATTR_RW(journal_commit_interval_ms);

static DEVICE_ATTR_RO(image);
static DEVICE_ATTR_RO(backing);

static struct attribute *qimg_attrs[] = {
	&dev_attr_image.attr,
	&dev_attr_backing.attr,
	&dev_attr_journal.attr,
	&dev_attr_journal_replayed.attr,
	&dev_attr_journal_size.attr,
	&dev_attr_journal_commits.attr,
	&dev_attr_journal_blocks_written.attr,
	&dev_attr_journal_device_flushes.attr,
	&dev_attr_journal_guest_flushes.attr,
	&dev_attr_journal_checkpoints.attr,
	&dev_attr_journal_fill.attr,
	&dev_attr_journal_commit_interval_ms.attr,
	&dev_attr_virtual_size.attr,
	&dev_attr_cluster_size.attr,
	&dev_attr_read_only.attr,
	&dev_attr_direct_io.attr,
	&dev_attr_corrupt.attr,
	&dev_attr_l2_cache_size.attr,
	&dev_attr_l2_cache_hits.attr,
	&dev_attr_l2_cache_misses.attr,
	&dev_attr_refcount_cache_size.attr,
	&dev_attr_refcount_cache_hits.attr,
	&dev_attr_refcount_cache_misses.attr,
	NULL,
};

static const struct attribute_group qimg_attr_group = {
	.name = "qimg",
	.attrs = qimg_attrs,
};

const struct attribute_group *qimg_disk_groups[] = {
	&qimg_attr_group,
	NULL,
};
