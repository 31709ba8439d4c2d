// SPDX-License-Identifier: GPL-2.0
/*
 * qimg sysfs: /sys/block/qimgN/qimg/, read-only attributes describing the
 * image and its caches (like loop's loop/ directory), and below it
 * journal/, the metadata journal's settings and counters.
 *
 * An attribute group makes one directory level only, so qimg/ is a small
 * kobject of our own, a child of the gendisk's device: its unnamed group
 * fills qimg/ and its group named "journal" makes qimg/journal/.  The
 * kobject is allocated apart from the device and holds no reference to
 * it; qimg_sysfs_del() removes the files before the gendisk goes away,
 * and sysfs waits for the readers and writers running in them, so none
 * reaches the device afterwards.  Whoever still holds the kobject then
 * (an open file does not) only frees the little allocation.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/device.h>
#include <linux/kobject.h>
#include <linux/slab.h>
#include <linux/sysfs.h>

#include "qimg_cache.h"
#include "qimg_journal.h"
#include "qimg_dev.h"

/* The qimg/ directory of one device. */
struct qimg_sysfs {
	struct kobject kobj;
	struct qimg_device *dev;	/* valid while the files exist */
};

static struct qimg_device *qimg_from_kobj(struct kobject *kobj)
{
	return container_of(kobj, struct qimg_sysfs, kobj)->dev;
}

static ssize_t image_show(struct kobject *kobj, struct kobj_attribute *attr,
			  char *buf)
{
	struct qimg_device *dev = qimg_from_kobj(kobj);

	return sysfs_emit(buf, "%s\n", dev->top.path ? dev->top.path : "");
}

static ssize_t backing_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *buf)
{
	struct qimg_device *dev = qimg_from_kobj(kobj);
	struct qimg_image *img;
	int n = 0;

	for (img = dev->top.backing; img; img = img->backing)
		n += sysfs_emit_at(buf, n, "%s %s\n",
				   img->raw ? "raw" : "qcow2",
				   img->path ? img->path : "?");
	return n;
}

/* A read-only file @file holding one number; @sym names the C objects. */
#define QIMG_ATTR_U64(sym, file, expr)					\
static ssize_t sym##_show(struct kobject *kobj,				\
			  struct kobj_attribute *attr, char *buf)	\
{									\
	struct qimg_device *dev = qimg_from_kobj(kobj);			\
									\
	return sysfs_emit(buf, "%llu\n", (unsigned long long)(expr));	\
}									\
static struct kobj_attribute sym##_attr = __ATTR(file, 0444, sym##_show, NULL)

QIMG_ATTR_U64(virtual_size, virtual_size, dev->top.virtual_size);
QIMG_ATTR_U64(cluster_size, cluster_size, dev->top.g->cluster_size);
QIMG_ATTR_U64(read_only, read_only, dev->read_only);
QIMG_ATTR_U64(direct_io, direct_io, dev->top.dio);
QIMG_ATTR_U64(corrupt, corrupt, test_bit(QIMG_STATE_CORRUPT, &dev->state));
QIMG_ATTR_U64(l2_cache_size, l2_cache_size, qimg_cache_bytes(&dev->top.l2));
QIMG_ATTR_U64(l2_cache_hits, l2_cache_hits,
	      atomic64_read(&dev->top.l2.hits));
QIMG_ATTR_U64(l2_cache_misses, l2_cache_misses,
	      atomic64_read(&dev->top.l2.misses));
QIMG_ATTR_U64(refcount_cache_size, refcount_cache_size,
	      dev->reftable ? qimg_cache_bytes(&dev->rc) : 0);
QIMG_ATTR_U64(refcount_cache_hits, refcount_cache_hits,
	      dev->reftable ? atomic64_read(&dev->rc.hits) : 0);
QIMG_ATTR_U64(refcount_cache_misses, refcount_cache_misses,
	      dev->reftable ? atomic64_read(&dev->rc.misses) : 0);

QIMG_ATTR_U64(prezero_bytes, prezero_bytes,
	      atomic64_read(&dev->prezero_bytes));
QIMG_ATTR_U64(alloc_riders, alloc_riders, atomic64_read(&dev->alloc_riders));

/* Writing zeros ahead of flush-heavy allocating writers (qimg_map.c). */
static ssize_t prezero_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(qimg_from_kobj(kobj)->prezero));
}

static ssize_t prezero_store(struct kobject *kobj, struct kobj_attribute *attr,
			     const char *buf, size_t len)
{
	bool v;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = kstrtobool(buf, &v);
	if (ret)
		return ret;
	WRITE_ONCE(qimg_from_kobj(kobj)->prezero, v);
	return len;
}

static struct kobj_attribute prezero_attr = __ATTR_RW(prezero);
static struct kobj_attribute image_attr = __ATTR_RO(image);
static struct kobj_attribute backing_attr = __ATTR_RO(backing);

static struct attribute *qimg_attrs[] = {
	&image_attr.attr,
	&backing_attr.attr,
	&virtual_size_attr.attr,
	&cluster_size_attr.attr,
	&read_only_attr.attr,
	&direct_io_attr.attr,
	&corrupt_attr.attr,
	&l2_cache_size_attr.attr,
	&l2_cache_hits_attr.attr,
	&l2_cache_misses_attr.attr,
	&refcount_cache_size_attr.attr,
	&refcount_cache_hits_attr.attr,
	&refcount_cache_misses_attr.attr,
	&prezero_attr.attr,
	&prezero_bytes_attr.attr,
	&alloc_riders_attr.attr,
	NULL,
};

static const struct attribute_group qimg_attr_group = {
	.attrs = qimg_attrs,
};

/*
 * qimg/journal/: every file is there with the journal off too, reading 0
 * (enabled tells the two cases apart).  dev->journal is set before the
 * files appear and cleared only after they are gone, so it does not
 * change under a reader.
 */
#define QIMG_JATTR(name, expr)						\
	QIMG_ATTR_U64(journal_##name, name, ({				\
		struct qimg_journal *j = dev->journal;			\
		j ? (u64)(expr) : 0; }))

QIMG_ATTR_U64(journal_enabled, enabled, !!dev->journal);
QIMG_ATTR_U64(journal_replayed, replayed, dev->jrnl_replayed);
QIMG_JATTR(size, j->geom.area_size);
QIMG_JATTR(commits, atomic64_read(&j->st_commits));
QIMG_JATTR(single_sync_commits, atomic64_read(&j->st_single_sync));
QIMG_JATTR(blocks_written, atomic64_read(&j->st_blocks));
QIMG_JATTR(device_flushes, atomic64_read(&j->st_barriers));
QIMG_JATTR(guest_flushes, atomic64_read(&j->st_flushes));
QIMG_JATTR(checkpoints, atomic64_read(&j->st_checkpoints));

/* The ring's blocks, and those a checkpoint would give back. */
QIMG_JATTR(blocks, j->hdr.nblocks - QIMG_JRNL_RING_START);
QIMG_JATTR(fill, qimg_journal_fill(j));

static ssize_t journal_commit_interval_ms_show(struct kobject *kobj,
					       struct kobj_attribute *attr,
					       char *buf)
{
	struct qimg_device *dev = qimg_from_kobj(kobj);

	return sysfs_emit(buf, "%u\n", dev->journal ?
			  READ_ONCE(dev->journal->interval_ms) : 0);
}

static ssize_t journal_commit_interval_ms_store(struct kobject *kobj,
						struct kobj_attribute *attr,
						const char *buf, size_t len)
{
	struct qimg_device *dev = qimg_from_kobj(kobj);
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

static struct kobj_attribute journal_commit_interval_ms_attr =
	__ATTR(commit_interval_ms, 0644, journal_commit_interval_ms_show,
	       journal_commit_interval_ms_store);

static struct attribute *qimg_journal_attrs[] = {
	&journal_enabled_attr.attr,
	&journal_size_attr.attr,
	&journal_blocks_attr.attr,
	&journal_commit_interval_ms_attr.attr,
	&journal_commits_attr.attr,
	&journal_single_sync_commits_attr.attr,
	&journal_blocks_written_attr.attr,
	&journal_device_flushes_attr.attr,
	&journal_guest_flushes_attr.attr,
	&journal_checkpoints_attr.attr,
	&journal_replayed_attr.attr,
	&journal_fill_attr.attr,
	NULL,
};

static const struct attribute_group qimg_journal_group = {
	.name = "journal",
	.attrs = qimg_journal_attrs,
};

static const struct attribute_group *qimg_sysfs_groups[] = {
	&qimg_attr_group,
	&qimg_journal_group,
	NULL,
};

static void qimg_sysfs_release(struct kobject *kobj)
{
	kfree(container_of(kobj, struct qimg_sysfs, kobj));
}

static const struct kobj_type qimg_sysfs_ktype = {
	.release = qimg_sysfs_release,
	.sysfs_ops = &kobj_sysfs_ops,
	.default_groups = qimg_sysfs_groups,
};

/**
 * qimg_sysfs_add() - create /sys/block/qimgN/qimg/ and its journal/
 * @dev: a device whose gendisk was just added
 *
 * Description: the files read @dev, its images and its journal; all of
 * them must stay valid until qimg_sysfs_del().  The directory belongs to
 * the disk, whose own "add" uevent came before it: a "change" uevent of
 * the disk follows, once it is there (as loop sends one once configured).
 *
 * Context: process context, sleeps.
 * Return: 0, -ENOMEM, or what kobject_add() refused with.
 */
int qimg_sysfs_add(struct qimg_device *dev)
{
	struct qimg_sysfs *s;
	int ret;

	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	s->dev = dev;
	ret = kobject_init_and_add(&s->kobj, &qimg_sysfs_ktype,
				   &disk_to_dev(dev->disk)->kobj, "qimg");
	if (ret) {
		/* Initialised all the same: the release frees it. */
		kobject_put(&s->kobj);
		return ret;
	}
	dev->sysfs = s;
	/*
	 * The disk's "add" uevent went out before this directory existed:
	 * a "change" one tells udev rules that read it that it is there.
	 */
	kobject_uevent(&disk_to_dev(dev->disk)->kobj, KOBJ_CHANGE);
	return 0;
}

/**
 * qimg_sysfs_del() - remove /sys/block/qimgN/qimg/
 * @dev: the device; nothing to do when qimg_sysfs_add() did not succeed
 *
 * Description: on return the files are gone and no reader or writer is
 * left inside one of them (sysfs drains them on removal), so @dev may be
 * freed.  Call it before del_gendisk(): the directory hangs below the
 * disk's.
 *
 * Context: process context, sleeps; no lock a sysfs file of ours takes
 * may be held (none today).
 */
void qimg_sysfs_del(struct qimg_device *dev)
{
	struct qimg_sysfs *s = dev->sysfs;

	if (!s)
		return;
	dev->sysfs = NULL;
	kobject_del(&s->kobj);
	kobject_put(&s->kobj);
}
