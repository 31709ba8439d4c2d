// SPDX-License-Identifier: GPL-2.0
/*
 * qimg: serve a qcow2 image file as a block device.
 *
 * This file, the device layer: attach / detach / GET_INFO, the image
 * header set-up at attach (autoclear bits, bitmaps in use), the gendisk
 * and its lifetime.
 *
 * Locking: the lock-order table is in qimg.h.
 *
 * Lifetime: each attached device holds a module reference, so the module
 * cannot be unloaded while devices exist (detach them first).  A device is
 * freed by detach (ioctl) or, with autoclear, by a work item queued on the
 * last close; both remove it from the idr under qimg_ctl_mutex first, so
 * exactly one of them tears it down.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/file.h>
#include <linux/idr.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/ratelimit.h>
#include <linux/slab.h>

#include "qimg_file.h"
#include "qimg_cache.h"
#include "qimg_meta.h"
#include "qimg_journal.h"
#include "qimg_overlap.h"
#include "qimg_refcount.h"
#include "qimg_map.h"
#include "qimg_rq.h"
#include "qimg_dev.h"

/* Serialises attach/detach/info and guards qimg_idr. */
DEFINE_MUTEX(qimg_ctl_mutex);
static DEFINE_IDR(qimg_idr);
static int qimg_major;
static struct workqueue_struct *qimg_ctl_wq;

/* ------------------------------------------------------------------------ */
/* Images                                                                    */

static void qimg_image_release(struct qimg_image *img)
{
	if (img->h)
		qimg_cache_destroy(&img->l2);
	kvfree(img->l1);
	kfree(img->h);
	kfree(img->path);
	if (img->file)
		fput(img->file);
	memset(img, 0, sizeof(*img));
}

/*
 * The file's path, for messages and GET_INFO: NULL when it has none that
 * fits (messages then say "?"), ERR_PTR(-ENOMEM) without memory.
 */
static char *qimg_file_path(struct file *file)
{
	char *buf = kmalloc(PATH_MAX, GFP_KERNEL), *p, *ret = NULL;

	if (!buf)
		return ERR_PTR(-ENOMEM);
	p = file_path(file, buf, PATH_MAX);
	if (!IS_ERR(p)) {
		ret = kstrdup(p, GFP_KERNEL);
		if (!ret)
			ret = ERR_PTR(-ENOMEM);
	}
	kfree(buf);
	return ret;
}

/* Refuse what this driver cannot serve correctly, by name. */
static int qimg_check_features(struct qimg_image *img, bool writable)
{
	struct qimg_header *h = img->h;
	const char *path = img->path ? img->path : "?";
	u64 jd = h->incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY;
	const char *what;

	/* The top image's dirty journal is replayed on a read-write attach. */
	if (writable && img == &img->dev->top)
		h->incompatible_features &= ~jd;
	what = qimg_unsupported_feature(h, writable);
	h->incompatible_features |= jd;

	if (what) {
		/* Say so when a read-only attach would have worked. */
		pr_err("%s: unsupported: %s%s\n", path, what,
		       qimg_unsupported_feature(h, false) ? "" :
		       " (attach read-only)");
		return -EOPNOTSUPP;
	}
	if (writable && h->incompatible_features & QIMG_INCOMPAT_CORRUPT) {
		pr_err("%s: image is marked corrupt (attach read-only)\n",
		       path);
		return -EUCLEAN;
	}
	return 0;
}

static int qimg_image_open(struct qimg_device *dev, struct qimg_image *img,
			   struct file *file, u32 fmt, u64 cache_bytes,
			   bool writable)
{
	struct qimg_err err = { "" };
	struct inode *inode = file_inode(file);
	u64 size = i_size_read(inode);
	void *buf = NULL;
	size_t len;
	s64 csize;
	int ret;

	img->dev = dev;
	img->file = file;
	seqcount_init(&img->l2x_seq);
	img->path = qimg_file_path(file);
	if (IS_ERR(img->path)) {
		img->path = NULL;
		return -ENOMEM;
	}
	img->dio_align = SECTOR_SIZE;
	if (inode->i_sb->s_bdev)
		img->dio_align = bdev_logical_block_size(inode->i_sb->s_bdev);
	if (dev->flags & QIMG_ATTACH_DIRECT_IO) {
		img->dio = file->f_mode & FMODE_CAN_ODIRECT;
		if (!img->dio)
			pr_info("%s: no direct I/O on this file, using buffered I/O\n",
				img->path ? img->path : "?");
	}
	if (!(file->f_mode & FMODE_READ) ||
	    (writable && !(file->f_mode & FMODE_WRITE)))
		return -EBADF;
	if (!S_ISREG(inode->i_mode) && !S_ISBLK(inode->i_mode))
		return -EINVAL;
	/*
	 * Tables are rewritten in place: an append-only file cannot hold a
	 * writable image, and a descriptor opened with O_APPEND says the
	 * caller meant something else (our own I/O never appends).
	 */
	if (writable && (IS_APPEND(inode) || (file->f_flags & O_APPEND))) {
		pr_err("%s: %s; the image must be opened for writing in place\n",
		       img->path ? img->path : "?",
		       IS_APPEND(inode) ? "the file is append-only" :
		       "the descriptor was opened with O_APPEND");
		return -EINVAL;
	}

	if (fmt == QIMG_FMT_RAW) {
		img->raw = true;
		img->virtual_size = size;
		return 0;
	}
	if (fmt != QIMG_FMT_QCOW2)
		return -EINVAL;
	if (size < QIMG_V2_HEADER_LEN) {
		pr_err("%s: not a qcow2 image (too short)\n", img->path);
		return -EINVAL;
	}
	buf = kzalloc(512, GFP_KERNEL);
	img->h = kzalloc(sizeof(*img->h), GFP_KERNEL);
	if (!buf || !img->h) {
		ret = -ENOMEM;
		goto out;
	}
	ret = qimg_kread(file, buf, 512, 0);
	if (ret)
		goto out;
	csize = qimg_header_peek_cluster_size(buf, 512, &err);
	if (csize < 0) {
		ret = csize;
		goto bad;
	}
	kfree(buf);
	len = min_t(u64, csize, size);
	buf = kvmalloc(len, GFP_KERNEL);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	ret = qimg_kread(file, buf, len, 0);
	if (ret)
		goto out;
	ret = qimg_header_decode(buf, len, size, img->h, &err);
	if (ret)
		goto bad;
	img->g = &img->h->geom;
	img->virtual_size = img->g->virtual_size;
	ret = qimg_check_features(img, writable);
	if (ret)
		goto out;
	if (writable && img == &dev->top &&
	    img->h->incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY) {
		/* Before anything is read through the tables. */
		ret = qimg_journal_replay(dev);
		if (ret)
			goto out;
		/*
		 * A transaction may carry the header's size and L1 fields
		 * (an online grow): decode what the replay left.
		 */
		ret = qimg_kread(file, buf, len, 0);
		if (ret)
			goto out;
		ret = qimg_header_decode(buf, len, size, img->h, &err);
		if (ret)
			goto bad;
		img->virtual_size = img->g->virtual_size;
		ret = qimg_check_features(img, writable);
		if (ret)
			goto out;
	}

	img->l1_entries = img->h->l1_size;
	if (img->l1_entries < img->g->l1_size) {
		snprintf(err.msg, sizeof(err.msg),
			 "L1 table too small for the virtual size");
		ret = -EUCLEAN;
		goto bad;
	}
	if (img->l1_entries) {
		img->l1 = kvmalloc_array(img->l1_entries, sizeof(__be64),
					 GFP_KERNEL);
		if (!img->l1) {
			ret = -ENOMEM;
			goto out;
		}
		ret = qimg_kread(file, img->l1, (size_t)img->l1_entries * 8,
				 img->h->l1_table_offset);
		if (ret)
			goto out;
	}
	ret = qimg_cache_init(&img->l2, img, "l2", cache_bytes);
out:
	kvfree(buf);
	return ret;
bad:
	pr_err("%s: %s\n", img->path ? img->path : "?", err.msg);
	goto out;
}

static int qimg_load_reftable(struct qimg_device *dev)
{
	struct qimg_image *img = &dev->top;
	u64 bytes = (u64)img->h->refcount_table_clusters *
		    img->g->cluster_size;
	int ret;

	dev->reftable_entries = bytes / 8;
	dev->reftable = kvmalloc(bytes ? bytes : 8, GFP_KERNEL);
	if (!dev->reftable)
		return -ENOMEM;
	ret = qimg_kread(img->file, dev->reftable, bytes,
			 img->h->refcount_table_offset);
	if (ret)
		return ret;
	return qimg_cache_init(&dev->rc, img, "refcount", dev->rc_bytes);
}

/*
 * Persistent bitmaps are not updated by our writes.  Do what QEMU does when
 * it opens such an image read-write: flag every bitmap in use in the
 * bitmap directory (durably, before the first write) and keep the bitmaps
 * autoclear bit, so QEMU later treats them as inconsistent, not as leaked
 * clusters; qemu-img check stays clean.
 */
static int qimg_bitmaps_mark_in_use(struct qimg_device *dev)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_header *h = img->h;
	u64 size = h->bitmap_directory_size, pos = 0;
	u64 fsize = i_size_read(file_inode(img->file));
	struct qimg_err err = { "" };
	struct qimg_disk_bitmap_dir_entry *de;
	struct qimg_bitmap b;
	bool changed = false;
	u8 *dir;
	u32 i;
	int ret;

	if (!size || size > QIMG_MAX_BITMAP_DIR_SIZE)
		return -EUCLEAN;
	dir = kvmalloc(size, GFP_KERNEL);
	if (!dir)
		return -ENOMEM;
	ret = qimg_kread(img->file, dir, size, h->bitmap_directory_offset);
	for (i = 0; !ret && i < h->nb_bitmaps; i++) {
		if (qimg_bitmap_decode(img->g, dir + pos, size - pos, fsize, &b,
				       &err)) {
			pr_err("%s: bitmap directory entry %u: %s\n",
			       img->path ? img->path : "?", i, err.msg);
			ret = -EUCLEAN;
			break;
		}
		de = (struct qimg_disk_bitmap_dir_entry *)(dir + pos);
		if (!(b.flags & QIMG_BITMAP_IN_USE)) {
			de->flags = cpu_to_be32(b.flags | QIMG_BITMAP_IN_USE);
			changed = true;
		}
		pos += b.entry_len;
	}
	if (!ret && changed)
		ret = qimg_overlap_check(dev, h->bitmap_directory_offset, size,
					 QIMG_OL_BITMAP_DIR,
					 "bitmap directory");
	if (!ret && changed) {
		struct qimg_handle th;

		mutex_lock(&dev->meta_lock);
		ret = qimg_meta_start(dev, &th, 1);
		if (!ret)
			ret = qimg_meta_write_struct(&th, dir, size,
						     h->bitmap_directory_offset,
						     "bitmap directory");
		ret = qimg_meta_stop(&th, ret);
		mutex_unlock(&dev->meta_lock);
	}
	if (!ret && changed) {
		pr_info("%s: %u persistent bitmap(s) marked in use (not updated by qimg)\n",
			img->path ? img->path : "?", h->nb_bitmaps);
	}
	kvfree(dir);
	return ret;
}

/*
 * Autoclear bits name structures we do not keep up to date (bitmaps, qimg
 * journal, checksums): before the first write, clear them, as any writer
 * that does not know them must -- except the bitmaps bit once every bitmap
 * is flagged in use, which is how QEMU itself keeps them.
 */
static int qimg_writable_autoclear(struct qimg_device *dev)
{
	struct qimg_header *h = dev->top.h;
	struct qimg_handle th;
	u64 keep = 0;
	int ret;

	if (h->version < 3 || !h->autoclear_features)
		return 0;
	if ((h->autoclear_features & QIMG_AUTOCLEAR_BITMAPS) &&
	    h->has_bitmaps_ext && h->nb_bitmaps) {
		ret = qimg_bitmaps_mark_in_use(dev);
		if (ret) {
			pr_err("%s: cannot mark the persistent bitmaps in use (%d); attach read-only or remove them\n",
			       dev->top.path ? dev->top.path : "?", ret);
			return ret;
		}
		keep = QIMG_AUTOCLEAR_BITMAPS;
	}
	if (dev->journal)
		keep |= QIMG_AUTOCLEAR_JOURNAL_VALID;
	if (h->autoclear_features == keep)
		return 0;
	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_start(dev, &th, 1);
	if (!ret)
		ret = qimg_meta_set_header(&th, QIMG_HDR_AUTOCLEAR_OFFSET, keep);
	ret = qimg_meta_stop(&th, ret);
	mutex_unlock(&dev->meta_lock);
	if (ret)
		return ret;
	h->autoclear_features = keep;
	return 0;
}

/*
 * End the handle of a journal-area change, write everything back and sync,
 * so the area's refcounts are on disk before anything names (or stops
 * naming) it.  Drops dev->meta_lock.
 */
static int qimg_journal_area_done(struct qimg_device *dev,
				  struct qimg_handle *h, int ret)
{
	ret = qimg_meta_stop(h, ret);
	if (!ret)
		ret = qimg_meta_writeback(dev);
	mutex_unlock(&dev->meta_lock);
	if (!ret)
		ret = vfs_fsync(dev->top.file, 1);
	return ret;
}

/* Handle credits for a refcount change over a run of @len bytes. */
static unsigned int qimg_run_credits(struct qimg_device *dev, u64 len)
{
	const struct qimg_geom *g = dev->top.g;

	return (unsigned int)min_t(u64, (len >> (g->cluster_bits + g->rb_bits)) + 2,
				   UINT_MAX / 2);
}

/* Give the journal area back (after the header stopped naming it). */
static int qimg_journal_area_free(struct qimg_device *dev, u64 off, u64 len)
{
	struct qimg_handle h;
	int ret;

	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_start(dev, &h, 1);
	if (!ret)
		qimg_defer_free(&h, off, len);
	ret = qimg_journal_area_done(dev, &h, ret);
	return ret;
}

/*
 * Detach, or an attach without the journal.  The area's references go
 * into the journal's last transaction, which qimg_journal_stop() commits
 * and checkpoints before the header stops naming the area; its space
 * goes back to the host file system after that.  A crash anywhere in
 * between leaves a journal that still owns its area, or a named area
 * that is already free (released: qimg_journal_area_state()), never a
 * leaked one.
 */
static int qimg_journal_off(struct qimg_device *dev)
{
	u64 off = dev->top.h->journal_offset, len = dev->top.h->journal_size;
	struct qimg_handle h;
	int ret;

	if (!dev->journal)
		return 0;
	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_start(dev, &h, qimg_run_credits(dev, len));
	if (!ret)
		ret = qimg_release_clusters(&h, off, len);
	ret = qimg_meta_stop(&h, ret);
	mutex_unlock(&dev->meta_lock);
	if (!ret)
		ret = qimg_journal_stop(dev, &off, &len);
	if (!ret && off)
		qimg_file_punch(dev->top.file, off, len);
	return ret;
}

/*
 * The clusters of the journal area the header names: 0 when all are
 * referenced (the journal owns them), 1 when all are free (a detach cut
 * short had released them, or an attach cut short had not yet taken
 * them), -EUCLEAN for a mix, or another errno.
 */
static int qimg_journal_area_state(struct qimg_device *dev, u64 off, u64 size)
{
	u64 cs = dev->top.g->cluster_size, c, v, used = 0;
	int ret = 0;

	mutex_lock(&dev->meta_lock);
	for (c = off; !ret && c < off + size; c += cs) {
		ret = qimg_refcount_get_host(dev, c, &v);
		used += v != 0;
	}
	mutex_unlock(&dev->meta_lock);
	if (ret)
		return ret;
	if (!used)
		return 1;
	if (used == size / cs)
		return 0;
	qimg_dev_err(dev, "journal area at %llu is partly free (%llu of %llu clusters in use); repair the image with qimgctl check -r all\n",
		     off, used, size / cs);
	return -EUCLEAN;
}

/* Fragments of free space skipped before a journal area is given up. */
#define QIMG_JRNL_AREA_TRIES	4096

/* A contiguous run of clusters for a new journal area. */
static int qimg_journal_area_alloc(struct qimg_device *dev, u64 size,
				   u64 *out)
{
	u64 cs = dev->top.g->cluster_size, start = 0, host = 0, got = 0;
	u64 n = size >> dev->top.g->cluster_bits;
	struct qimg_handle h;
	int tries = 0, ret;

	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_start(dev, &h, (unsigned int)(2 * n + 8));
	while (!ret && got < n) {
		ret = qimg_alloc_clusters(&h, &host);
		if (ret)
			break;
		if (got && host != start + got * cs) {
			/*
			 * Not contiguous: give the run back, start again
			 * further on (what is given back is free only after
			 * the write-back, so the allocator moves forward).
			 */
			qimg_defer_free(&h, start, got * cs);
			got = 0;
			if (++tries > QIMG_JRNL_AREA_TRIES) {
				qimg_defer_free(&h, host, cs);
				ret = -ENOSPC;
				break;
			}
		}
		if (!got)
			start = host;
		got++;
	}
	ret = qimg_journal_area_done(dev, &h, ret);
	if (ret)
		qimg_dev_err(dev, "cannot allocate a journal of %llu bytes (%d)\n",
			     size, ret);
	*out = start;
	return ret;
}

/*
 * Attach: the journal on or off, as asked (QIMG_ATTACH_JOURNAL /
 * _NO_JOURNAL) or as the image asks (its journal extension).  A valid area
 * of the right size is reused; an area of another size, or one that a
 * writer without journal support may have touched (journal valid clear),
 * is not trusted and replaced.
 */
static int qimg_journal_on(struct qimg_device *dev, const struct qimg_attach *a)
{
	struct qimg_header *h = dev->top.h;
	u64 cs = dev->top.g->cluster_size, size, off, i;
	bool valid = h->has_journal_ext && h->journal_offset &&
		     (h->autoclear_features & QIMG_AUTOCLEAR_JOURNAL_VALID);
	bool want = a->flags & QIMG_ATTACH_JOURNAL ||
		    (!(a->flags & QIMG_ATTACH_NO_JOURNAL) && h->has_journal_ext);
	bool taken = true;
	struct qimg_handle th;
	int ret;

	if (h->version < 3) {
		if (a->flags & QIMG_ATTACH_JOURNAL) {
			qimg_dev_err(dev, "the journal needs a version 3 image (compat=1.1)\n");
			return -EOPNOTSUPP;
		}
		return 0;
	}
	size = a->journal_size ? a->journal_size :
	       h->has_journal_ext && h->journal_size ? h->journal_size :
	       max_t(u64, QIMG_JRNL_DEFAULT_SIZE, cs);
	size = round_up(size, cs);
	if (valid) {
		ret = qimg_journal_area_state(dev, h->journal_offset,
					      h->journal_size);
		if (ret < 0)
			return ret;
		if (ret) {
			qimg_dev_info(dev, "the journal area at %llu is free (a detach or attach was cut short): not used\n",
				      h->journal_offset);
			valid = false;
		}
	}
	if (valid && (!want || size != h->journal_size)) {
		ret = qimg_journal_start(dev, h->journal_offset,
					 h->journal_size, false);
		if (!ret)
			ret = qimg_journal_off(dev);
		if (ret)
			return ret;
		valid = false;
	}
	if (!want)
		return 0;
	if (valid) {
		off = h->journal_offset;
	} else {
		struct qimg_err err = { "" };

		ret = qimg_jrnl_size_check(size, h->cluster_bits, &err);
		if (ret) {
			qimg_dev_err(dev, "%s\n", err.msg);
			return ret;
		}
		/*
		 * Free clusters, referenced only in the journal's first
		 * transaction: a crash before that is durable leaves them
		 * free, with the header naming a free area.  The file covers
		 * the whole area before the header names it (the sync in
		 * qimg_journal_start() makes the size durable): an area past
		 * the end of the file is refused after a crash.  Written
		 * with zeros rather than left as holes: otherwise each sync
		 * of the ring's first pass would also make the host file
		 * system commit the blocks the journal's writes allocated.
		 */
		mutex_lock(&dev->meta_lock);
		ret = qimg_find_free_run(dev, size >> dev->top.g->cluster_bits,
					 &off);
		/*
		 * None where refcount blocks exist: make them past the end
		 * (a full table grows first, hence a few rounds).
		 */
		for (i = 0; ret == -ENOSPC && i < 3; i++) {
			ret = qimg_make_free_run(dev, size >>
						 dev->top.g->cluster_bits);
			if (!ret)
				ret = qimg_find_free_run(dev, size >>
							 dev->top.g->cluster_bits,
							 &off);
		}
		if (!ret) {
			taken = false;
			ret = qimg_file_zero(&dev->top, off, size);
		}
		mutex_unlock(&dev->meta_lock);
		if (ret == -ENOSPC && taken) {
			/*
			 * Still none (the host offsets run out): allocate it
			 * the ordered way, synced before the header names it.
			 */
			ret = qimg_journal_area_alloc(dev, size, &off);
			if (ret)
				return ret;
			mutex_lock(&dev->meta_lock);
			ret = qimg_file_zero(&dev->top, off, size);
			mutex_unlock(&dev->meta_lock);
			if (ret)
				qimg_journal_area_free(dev, off, size);
		}
		if (ret) {
			qimg_dev_err(dev, "cannot write zeros over the journal area (%d)\n",
				     ret);
			return ret;
		}
	}
	for (i = 0; i < size; i += cs)
		qimg_overlap_add(dev, off + i, QIMG_OL_HEADER);
	ret = qimg_journal_start(dev, off, size, !valid);
	if (ret)
		return ret;
	if (!taken) {
		mutex_lock(&dev->meta_lock);
		ret = qimg_meta_start(dev, &th, qimg_run_credits(dev, size));
		if (!ret)
			ret = qimg_take_clusters(&th, off, size);
		ret = qimg_meta_stop(&th, ret);
		mutex_unlock(&dev->meta_lock);
		if (ret) {
			qimg_dev_err(dev, "cannot reference the journal area (%d)\n",
				     ret);
			return ret;
		}
	}
	qimg_dev_info(dev, "metadata journal on: %llu bytes at %llu%s\n", size,
		      off, valid ? "" : " (new)");
	return 0;
}

static void qimg_device_free(struct qimg_device *dev)
{
	struct qimg_image *img = dev->top.backing, *next;

	qimg_meta_quiesce(dev);		/* the corrupt bit, if pending */
	while (img) {
		next = img->backing;
		qimg_image_release(img);
		kfree(img);
		img = next;
	}
	qimg_journal_destroy(dev->journal);
	dev->journal = NULL;
	qimg_drop_frees(dev);
	qimg_overlap_destroy(dev);
	if (dev->top.h && dev->reftable)
		qimg_cache_destroy(&dev->rc);
	kvfree(dev->reftable);
	qimg_image_release(&dev->top);
	if (dev->io_srcu_ready)
		cleanup_srcu_struct(&dev->io_srcu);
	kfree(dev);
}

/* Is this inode in use by another device in a way that conflicts? */
static bool qimg_inode_busy(struct inode *inode, bool writable, bool top)
{
	struct qimg_device *dev;
	struct qimg_image *img;
	int id;

	lockdep_assert_held(&qimg_ctl_mutex);
	idr_for_each_entry(&qimg_idr, dev, id) {
		for (img = &dev->top; img; img = img->backing) {
			bool other_rw = img == &dev->top && !dev->read_only;

			if (file_inode(img->file) != inode)
				continue;
			if (writable || other_rw)
				return true;
		}
	}
	return false;
}

/* ------------------------------------------------------------------------ */
/* Block device                                                              */

static int qimg_bdev_open(struct gendisk *disk)
{
	struct qimg_device *dev = disk->private_data;
	int ret = 0;

	mutex_lock(&dev->open_mutex);
	if (dev->detaching)
		ret = -ENXIO;
	else
		dev->open_count++;
	mutex_unlock(&dev->open_mutex);
	return ret;
}

static void qimg_bdev_release(struct gendisk *disk)
{
	struct qimg_device *dev = disk->private_data;

	mutex_lock(&dev->open_mutex);
	if (!--dev->open_count && (dev->flags & QIMG_ATTACH_AUTOCLEAR) &&
	    !dev->detaching)
		queue_work(qimg_ctl_wq, &dev->autoclear_work);
	mutex_unlock(&dev->open_mutex);
}

QIMG_DEFINE_BDEV_OPS(qimg_bdev_open, qimg_bdev_release)

static const struct block_device_operations qimg_fops = {
	.owner = THIS_MODULE,
	.open = qimg_bdev_open_compat,
	.release = qimg_bdev_release_compat,
};

/*
 * Tear down a device already removed from the idr.  The device goes away
 * whatever the final flush says (after a failed write-back nothing more
 * can be written anyway, see qimg_meta_abort()); its result is returned so
 * that detach can report it.
 */
static int qimg_destroy(struct qimg_device *dev, bool from_work)
{
	int ret;

	if (!from_work)
		cancel_work_sync(&dev->autoclear_work);
	qimg_sysfs_del(dev);
	del_gendisk(dev->disk);
	qimg_meta_quiesce(dev);
	ret = qimg_journal_off(dev);
	if (!ret)
		ret = qimg_flush(dev);
	if (ret) {
		qimg_dev_err(dev, "final write-back failed (%d); recent writes may be lost, check the image\n",
			     ret);
		ret = -EIO;
	}
	destroy_workqueue(dev->wq);
	destroy_workqueue(dev->link_wq);
	qimg_drain_free(dev);
	blk_mq_free_tag_set(&dev->tag_set);
	put_disk(dev->disk);
	qimg_dev_info(dev, "detached\n");
	qimg_device_free(dev);
	module_put(THIS_MODULE);
	return ret;
}

static void qimg_autoclear_work(struct work_struct *work)
{
	struct qimg_device *dev = container_of(work, struct qimg_device,
					       autoclear_work);

	mutex_lock(&qimg_ctl_mutex);
	/*
	 * Still attaching: a close from inside device_add_disk() (udev's
	 * probe) is not the user's last close, and the attach still uses
	 * the device.
	 */
	if (idr_find(&qimg_idr, dev->index) != dev || dev->attaching) {
		mutex_unlock(&qimg_ctl_mutex);
		return;
	}
	mutex_lock(&dev->open_mutex);
	if (dev->open_count || dev->detaching || dev->resizing) {
		/* A resize queues this work again when it ends. */
		if (!dev->open_count && dev->resizing)
			dev->autoclear_missed = true;
		mutex_unlock(&dev->open_mutex);
		mutex_unlock(&qimg_ctl_mutex);
		return;
	}
	dev->detaching = true;
	mutex_unlock(&dev->open_mutex);
	idr_remove(&qimg_idr, dev->index);
	mutex_unlock(&qimg_ctl_mutex);
	qimg_destroy(dev, true);
}

/**
 * qimg_detach() - detach a device
 * @index: the device number
 *
 * Refused while the device is open, being resized or still attaching.
 * Otherwise the
 * device leaves the idr, then is torn down without any lock of ours:
 * the gendisk is deleted, the final flush writes back and syncs, and the
 * device goes away whatever that flush says.
 *
 * Context: process context, sleeps; no lock of ours held.  Takes
 * qimg_ctl_mutex and dev->open_mutex (not across the teardown), then
 * dev->meta_lock for the final flush.
 * Return: 0, -ENXIO (no such device), -EBUSY (open, or attaching), or
 * -EIO when the final write-back failed (the device is gone all the same).
 */
int qimg_detach(int index)
{
	struct qimg_device *dev;

	mutex_lock(&qimg_ctl_mutex);
	dev = idr_find(&qimg_idr, index);
	if (!dev || dev->attaching) {
		mutex_unlock(&qimg_ctl_mutex);
		return dev ? -EBUSY : -ENXIO;
	}
	mutex_lock(&dev->open_mutex);
	if (dev->open_count || dev->resizing) {
		mutex_unlock(&dev->open_mutex);
		mutex_unlock(&qimg_ctl_mutex);
		return -EBUSY;
	}
	dev->detaching = true;
	mutex_unlock(&dev->open_mutex);
	idr_remove(&qimg_idr, index);
	mutex_unlock(&qimg_ctl_mutex);
	return qimg_destroy(dev, false);
}

static int qimg_add_disk(struct qimg_device *dev)
{
	const struct qimg_geom *g = dev->top.g;
	struct qimg_qlimits ql = {
		.logical_block_size = SECTOR_SIZE,
		/* Sub-cluster writes cost a copy-on-write: say so. */
		.physical_block_size = clamp_t(u64, g->cluster_size, 4096,
					       65536),
		.io_opt = min_t(u64, g->cluster_size, 1U << 21),
		.max_hw_sectors = 2048,
	};
	/* Discard and write zeroes: whole clusters become zero clusters. */
	if (!dev->read_only) {
		ql.max_discard_sectors = UINT_MAX >> SECTOR_SHIFT;
		ql.max_write_zeroes_sectors = UINT_MAX >> SECTOR_SHIFT;
		ql.discard_granularity = min_t(u64, g->cluster_size, SZ_1G);
	}
	struct gendisk *disk;
	int ret;

	dev->tag_set.ops = &qimg_mq_ops;
	dev->tag_set.nr_hw_queues = dev->nr_drain;	/* one drain each */
	dev->tag_set.queue_depth = 128;
	dev->tag_set.numa_node = NUMA_NO_NODE;
	dev->tag_set.cmd_size = sizeof(struct qimg_cmd);
	dev->tag_set.flags = BLK_MQ_F_SHOULD_MERGE;
	dev->tag_set.driver_data = dev;
	ret = blk_mq_alloc_tag_set(&dev->tag_set);
	if (ret)
		return ret;
	disk = qimg_compat_alloc_disk(&dev->tag_set, &ql, dev);
	if (IS_ERR(disk)) {
		blk_mq_free_tag_set(&dev->tag_set);
		return PTR_ERR(disk);
	}
	dev->disk = disk;
	disk->major = qimg_major;
	disk->first_minor = dev->index * QIMG_MINORS;
	disk->minors = QIMG_MINORS;
	disk->fops = &qimg_fops;
	disk->private_data = dev;
	snprintf(disk->disk_name, sizeof(disk->disk_name), "qimg%d",
		 dev->index);
	if (!(dev->flags & QIMG_ATTACH_PARTSCAN))
		disk->flags |= GENHD_FL_NO_PART;
	set_capacity(disk, dev->top.virtual_size >> SECTOR_SHIFT);
	set_disk_ro(disk, dev->read_only);
	ret = device_add_disk(NULL, disk, NULL);
	/*
	 * device_add_disk() ignores a failed dev_set_name() (its copy of the
	 * name is an allocation), and device_add() then refuses the nameless
	 * device with -EINVAL.  Our major and minors are valid by
	 * construction: a device without a name is out of memory.
	 */
	if (ret == -EINVAL && !dev_name(disk_to_dev(disk)))
		ret = -ENOMEM;
	if (ret)
		goto fail;
	ret = qimg_sysfs_add(dev);
	if (ret) {
		/*
		 * The disk is live already: refuse new opens, remove it as
		 * detach would, and wait out an autoclear its last close
		 * may have queued.
		 */
		mutex_lock(&dev->open_mutex);
		dev->detaching = true;
		mutex_unlock(&dev->open_mutex);
		del_gendisk(disk);
		cancel_work_sync(&dev->autoclear_work);
		goto fail;
	}
	return 0;

fail:
	put_disk(disk);
	dev->disk = NULL;
	blk_mq_free_tag_set(&dev->tag_set);
	return ret;
}

static int qimg_attach_backing(struct qimg_device *dev,
			       const struct qimg_attach *a)
{
	struct qimg_backing_fd __user *ufds = u64_to_user_ptr(a->backing);
	struct qimg_image *prev = &dev->top, *img;
	struct qimg_backing_fd bfd;
	struct file *file;
	unsigned int i;
	int ret;

	for (i = 0; i < a->nr_backing; i++) {
		if (prev->raw || !prev->h->backing_file[0]) {
			pr_err("%s has no backing file, but more backing images were passed\n",
			       prev->path ? prev->path : "?");
			return -EINVAL;
		}
		if (copy_from_user(&bfd, &ufds[i], sizeof(bfd)))
			return -EFAULT;
		file = fget(bfd.fd);
		if (!file)
			return -EBADF;
		img = kzalloc(sizeof(*img), GFP_KERNEL);
		if (!img) {
			fput(file);
			return -ENOMEM;
		}
		prev->backing = img;
		ret = qimg_image_open(dev, img, file, bfd.format,
				      QIMG_DEFAULT_L2_CACHE / 4, false);
		if (ret)
			return ret;
		dev->nr_backing++;
		prev = img;
	}
	if (!prev->raw && prev->h->backing_file[0]) {
		pr_err("%s: backing file \"%s\" was not passed\n",
		       prev->path ? prev->path : "?", prev->h->backing_file);
		return -EINVAL;
	}
	return 0;
}

/*
 * Does another device use an image of @dev's chain in a way that
 * conflicts, or is the top image in its own backing chain?  With
 * qimg_ctl_mutex held.
 */
static int qimg_chain_busy(struct qimg_device *dev, bool writable)
{
	struct inode *top = file_inode(dev->top.file);
	struct qimg_image *img;

	lockdep_assert_held(&qimg_ctl_mutex);
	for (img = dev->top.backing; img; img = img->backing) {
		if (file_inode(img->file) == top) {
			pr_err("%s is its own backing file\n",
			       dev->top.path ? dev->top.path : "?");
			return -ELOOP;
		}
		if (qimg_inode_busy(file_inode(img->file), false, false)) {
			pr_err("backing file %s is attached read-write\n",
			       img->path ? img->path : "?");
			return -EBUSY;
		}
	}
	if (qimg_inode_busy(top, writable, true)) {
		pr_err("%s is already attached%s\n",
		       dev->top.path ? dev->top.path : "?",
		       writable ? "" : " read-write");
		return -EBUSY;
	}
	return 0;
}

static struct qimg_device *qimg_device_alloc(const struct qimg_attach *a)
{
	struct qimg_device *dev = kzalloc(sizeof(*dev), GFP_KERNEL);

	if (!dev)
		return NULL;
	if (init_srcu_struct(&dev->io_srcu)) {
		kfree(dev);
		return NULL;
	}
	dev->io_srcu_ready = true;
	dev->index = -1;
	dev->flags = a->flags;
	dev->writable = !(a->flags & QIMG_ATTACH_READ_ONLY);
	dev->read_only = !dev->writable;
	dev->l2_bytes = a->l2_cache_size ? a->l2_cache_size :
			QIMG_DEFAULT_L2_CACHE;
	dev->rc_bytes = a->refcount_cache_size ? a->refcount_cache_size :
			QIMG_DEFAULT_RC_CACHE;
	dev->prezero = true;
	mutex_init(&dev->meta_lock);
	mutex_init(&dev->open_mutex);
	INIT_LIST_HEAD(&dev->pending_frees);
	INIT_LIST_HEAD(&dev->ready_frees);
	dev->quar_tree = RB_ROOT;
	INIT_LIST_HEAD(&dev->quar_list);
	xa_init(&dev->unlinked);
	spin_lock_init(&dev->inflight_lock);
	INIT_LIST_HEAD(&dev->inflight);
	init_waitqueue_head(&dev->inflight_wq);
	INIT_WORK(&dev->link_work, qimg_link_work);
	init_llist_head(&dev->link_list);
	INIT_WORK(&dev->autoclear_work, qimg_autoclear_work);
	qimg_meta_init(dev);
	return dev;
}

static int qimg_alloc_wqs(struct qimg_device *dev)
{
	dev->wq = alloc_workqueue("qimg%d", WQ_UNBOUND | WQ_MEM_RECLAIM, 0,
				  dev->index);
	dev->link_wq = alloc_workqueue("qimg%d_link",
				       WQ_UNBOUND | WQ_MEM_RECLAIM, 0,
				       dev->index);
	if (dev->wq && dev->link_wq &&
	    !qimg_drain_alloc(dev, num_online_cpus()))
		return 0;
	if (dev->wq)
		destroy_workqueue(dev->wq);
	if (dev->link_wq)
		destroy_workqueue(dev->link_wq);
	dev->wq = NULL;
	dev->link_wq = NULL;
	return -ENOMEM;
}

/**
 * qimg_attach() - attach an image as a new device
 * @a: the request: descriptor of the image in the caller's file table,
 *     flags, backing chain, cache sizes (validated by the caller)
 * @report: told the device number before the disk goes live (NULL: not
 *          told); an error from it undoes the attach
 * @arg: passed to @report
 *
 * Attach in three steps, so that qimg_ctl_mutex is never held across
 * image-file I/O (a slow attach over NFS or FUSE must not stall every
 * control operation):
 *
 *  1. open and validate the chain, without the mutex;
 *  2. under the mutex: refuse conflicting uses, reserve the device number
 *     (the device is in the idr but marked attaching: detach and GET_INFO
 *     do not see it, later attaches do);
 *  3. without the mutex: the writable set-up (reftable, overlap index,
 *     header writes under dev->meta_lock), @report (the ioctl hands the
 *     number to the caller; an error undoes everything while the device is
 *     still private), the gendisk; then, under the mutex again, the device
 *     is published.
 *
 * Context: process context, sleeps; no lock of ours held (@report is
 * called without any).  Takes qimg_ctl_mutex (briefly, twice) and
 * dev->meta_lock; add_disk() runs with neither held.
 * Return: the device number or a negative errno.
 */
int qimg_attach(const struct qimg_attach *a, qimg_attach_report_t report,
		void *arg)
{
	struct qimg_device *dev;
	struct file *file;
	int ret;

	file = fget(a->fd);
	if (!file)
		return -EBADF;
	dev = qimg_device_alloc(a);
	if (!dev) {
		fput(file);
		return -ENOMEM;
	}

	ret = qimg_image_open(dev, &dev->top, file, QIMG_FMT_QCOW2,
			      dev->l2_bytes, dev->writable);
	if (ret)
		goto fail;
	ret = qimg_attach_backing(dev, a);
	if (ret)
		goto fail;

	mutex_lock(&qimg_ctl_mutex);
	ret = qimg_chain_busy(dev, dev->writable);
	if (!ret) {
		dev->attaching = true;
		ret = idr_alloc(&qimg_idr, dev, 0, MINORMASK / QIMG_MINORS,
				GFP_KERNEL);
	}
	mutex_unlock(&qimg_ctl_mutex);
	if (ret < 0)
		goto fail;
	dev->index = ret;

	if (dev->writable) {
		dev->meta_ops = &qimg_refcount_meta_ops;
		ret = qimg_load_reftable(dev);
		if (!ret)
			ret = qimg_overlap_init(dev);
		if (ret)
			goto fail_idr;
		ret = qimg_journal_on(dev, a);
		if (ret)
			goto fail_idr;
		ret = qimg_writable_autoclear(dev);
		if (ret)
			goto fail_idr;
	}
	ret = qimg_alloc_wqs(dev);
	if (ret)
		goto fail_idr;
	if (report) {
		ret = report(arg, dev->index);
		if (ret)
			goto fail_wq;
	}
	__module_get(THIS_MODULE);
	ret = qimg_add_disk(dev);
	if (ret) {
		module_put(THIS_MODULE);
		goto fail_wq;
	}
	qimg_dev_info(dev, "attached %s (%llu bytes, cluster %llu%s%s%s)\n",
		      dev->top.path ? dev->top.path : "?",
		      dev->top.virtual_size, dev->top.g->cluster_size,
		      dev->read_only ? ", read-only" : "",
		      dev->top.dio ? ", direct I/O" : "",
		      dev->nr_backing ? ", with backing chain" : "");
	mutex_lock(&qimg_ctl_mutex);
	dev->attaching = false;
	mutex_unlock(&qimg_ctl_mutex);
	return dev->index;

fail_wq:
	destroy_workqueue(dev->wq);
	destroy_workqueue(dev->link_wq);
	qimg_drain_free(dev);
fail_idr:
	mutex_lock(&qimg_ctl_mutex);
	idr_remove(&qimg_idr, dev->index);
	mutex_unlock(&qimg_ctl_mutex);
fail:
	qimg_device_free(dev);
	return ret;
}

static void qimg_copy_path(char *dst, const char *src)
{
	strscpy(dst, src ? src : "", QIMG_PATH_LEN);
}

/**
 * qimg_get_info() - describe an attached device (GET_INFO)
 * @info: in: index and query (QIMG_QUERY_NEXT: the first device at or
 *        after index); out: everything else, index included
 *
 * Devices still attaching are skipped.
 *
 * Context: process context, sleeps; takes qimg_ctl_mutex, no other lock
 * of ours held.
 * Return: 0 or -ENXIO (no such device).
 */
int qimg_get_info(struct qimg_info *info)
{
	struct qimg_device *dev;
	struct qimg_image *top;
	struct inode *inode;
	int id = info->index;

	mutex_lock(&qimg_ctl_mutex);
	if (info->query == QIMG_QUERY_NEXT) {
		while ((dev = idr_get_next(&qimg_idr, &id)) && dev->attaching)
			id++;
	} else {
		dev = idr_find(&qimg_idr, id);
	}
	if (!dev || dev->attaching) {
		mutex_unlock(&qimg_ctl_mutex);
		return -ENXIO;
	}
	top = &dev->top;
	inode = file_inode(top->file);
	info->index = dev->index;
	info->flags = 0;
	if (dev->read_only)
		info->flags |= QIMG_INFO_READ_ONLY;
	if (dev->flags & QIMG_ATTACH_PARTSCAN)
		info->flags |= QIMG_INFO_PARTSCAN;
	if (dev->flags & QIMG_ATTACH_AUTOCLEAR)
		info->flags |= QIMG_INFO_AUTOCLEAR;
	if (top->dio)
		info->flags |= QIMG_INFO_DIRECT_IO;
	if (test_bit(QIMG_STATE_CORRUPT, &dev->state))
		info->flags |= QIMG_INFO_CORRUPT;
	if (dev->journal)
		info->flags |= QIMG_INFO_JOURNAL;
	info->virtual_size = top->virtual_size;
	info->cluster_size = top->g->cluster_size;
	info->ino = inode->i_ino;
	info->dev = new_encode_dev(inode->i_sb->s_dev);
	info->nr_backing = dev->nr_backing;
	info->l2_cache_size = qimg_cache_bytes(&top->l2);
	info->l2_hits = atomic64_read(&top->l2.hits);
	info->l2_misses = atomic64_read(&top->l2.misses);
	if (dev->reftable) {
		info->refcount_cache_size = qimg_cache_bytes(&dev->rc);
		info->refcount_hits = atomic64_read(&dev->rc.hits);
		info->refcount_misses = atomic64_read(&dev->rc.misses);
	}
	qimg_copy_path(info->path, top->path);
	qimg_copy_path(info->backing_path,
		       top->backing ? top->backing->path : NULL);
	mutex_unlock(&qimg_ctl_mutex);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Online grow                                                               */

/*
 * Grow @dev to @size bytes: the L1 table first (with the queue frozen, as
 * lookups read it without a lock), then the new space is made to read
 * zeros where a longer backing file would show through, everything is
 * flushed, and only then the header's size changes (in place, synced) and
 * the block layer learns the new capacity.  A crash at any point leaves
 * either the old size (with at most a bigger L1 table, leaked clusters or
 * zero clusters past the end, all valid qcow2) or the new one.
 */
static int qimg_grow(struct qimg_device *dev, u64 size)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	u64 old = img->virtual_size, entries, blen = 0;
	struct qimg_handle h;
	int ret;

	BUILD_BUG_ON(offsetof(struct qimg_disk_header, size) !=
		     QIMG_HDR_SIZE_OFFSET);
	if (size == old)
		return 0;
	if (size < old) {
		qimg_dev_err(dev, "cannot shrink an attached device (%llu to %llu bytes); detach it and use qimgctl resize --shrink\n",
			     old, size);
		return -EINVAL;
	}
	if (size % SECTOR_SIZE) {
		qimg_dev_err(dev, "new size %llu is not a multiple of 512\n",
			     size);
		return -EINVAL;
	}
	if (!dev->writable || READ_ONCE(dev->read_only))
		return -EROFS;
	if (img->raw || g->data_file ||
	    (img->h->has_bitmaps_ext && img->h->nb_bitmaps)) {
		qimg_dev_err(dev, "cannot grow an image with %s while attached\n",
			     img->raw ? "no qcow2 metadata" :
			     g->data_file ? "an external data file" :
			     "persistent bitmaps");
		return -EOPNOTSUPP;
	}
	entries = qimg_l1_entries_for(g->cluster_bits, g->ext_l2, size);
	if (size > QIMG_MAX_VIRTUAL_SIZE || entries > QIMG_MAX_L1_BYTES / 8) {
		qimg_dev_err(dev, "new size %llu is past the format's limits\n",
			     size);
		return -EFBIG;
	}
	if (img->backing)
		blen = min(img->backing->virtual_size, size);
	if (blen > old && img->h->version < 3) {
		qimg_dev_err(dev, "a version 2 image cannot hide its longer backing file in new space (no zero clusters)\n");
		return -EOPNOTSUPP;
	}

	if (entries > img->l1_entries) {
		blk_mq_freeze_queue(dev->disk->queue);
		mutex_lock(&dev->meta_lock);
		ret = qimg_map_grow_l1(dev, (u32)entries);
		mutex_unlock(&dev->meta_lock);
		blk_mq_unfreeze_queue(dev->disk->queue);
		if (ret)
			goto fail;
	}
	if (blen > old) {
		ret = qimg_map_zero_new(dev, old, blen);
		if (ret)
			goto fail;
	}
	ret = qimg_flush(dev);
	if (ret)
		goto fail;
	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_start(dev, &h, 1);
	if (!ret)
		ret = qimg_meta_set_size(&h, size);
	ret = qimg_meta_stop(&h, ret);
	if (!ret) {
		img->h->geom.virtual_size = size;
		img->h->geom.l1_size = (u32)entries;
		WRITE_ONCE(img->virtual_size, size);
	}
	mutex_unlock(&dev->meta_lock);
	/* With the journal, the size is durable with this commit. */
	if (!ret)
		ret = qimg_flush(dev);
	if (ret)
		goto fail;
	set_capacity_and_notify(dev->disk, size >> SECTOR_SHIFT);
	qimg_dev_info(dev, "grown from %llu to %llu bytes\n", old, size);
	return 0;
fail:
	qimg_dev_err(dev, "growing from %llu to %llu bytes failed (%d)\n",
		     old, size, ret);
	return ret;
}

/**
 * qimg_resize() - grow an attached device (RESIZE)
 * @index: the device number
 * @size: the new virtual size in bytes
 *
 * A detach meanwhile gets -EBUSY, and so does a second resize of the same
 * device; an autoclear detach due meanwhile waits for the end.
 *
 * Context: process context, sleeps; no lock of ours held.  Takes
 * qimg_ctl_mutex and dev->open_mutex (not across the resize), then
 * dev->meta_lock.
 * Return: 0, -ENXIO (no such device), -EBUSY, or qimg_grow()'s errno
 * (-EINVAL for a smaller size, -EROFS, -EOPNOTSUPP, -EFBIG, ...).
 */
int qimg_resize(int index, u64 size)
{
	struct qimg_device *dev;
	int ret = 0;

	mutex_lock(&qimg_ctl_mutex);
	dev = idr_find(&qimg_idr, index);
	if (!dev || dev->attaching) {
		mutex_unlock(&qimg_ctl_mutex);
		return dev ? -EBUSY : -ENXIO;
	}
	mutex_lock(&dev->open_mutex);
	if (dev->detaching)
		ret = -ENXIO;
	else if (dev->resizing)
		ret = -EBUSY;
	if (!ret)
		dev->resizing = true;
	mutex_unlock(&dev->open_mutex);
	mutex_unlock(&qimg_ctl_mutex);
	if (ret)
		return ret;

	ret = qimg_grow(dev, size);

	mutex_lock(&dev->open_mutex);
	dev->resizing = false;
	if (dev->autoclear_missed && !dev->open_count && !dev->detaching)
		queue_work(qimg_ctl_wq, &dev->autoclear_work);
	dev->autoclear_missed = false;
	mutex_unlock(&dev->open_mutex);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Set-up of the device layer (module init, from qimg_ioctl.c)               */

/**
 * qimg_dev_init() - set up the device layer
 *
 * Description: the control workqueue (autoclear detaches) and the block
 * major.
 *
 * Context: module init, process context, may sleep.
 * Return: 0, -ENOMEM or register_blkdev()'s error.
 */
int qimg_dev_init(void)
{
	int ret;

	qimg_ctl_wq = alloc_workqueue("qimg_ctl", WQ_UNBOUND, 0);
	if (!qimg_ctl_wq)
		return -ENOMEM;
	ret = register_blkdev(0, "qimg");
	if (ret < 0) {
		destroy_workqueue(qimg_ctl_wq);
		return ret;
	}
	qimg_major = ret;
	return 0;
}

/**
 * qimg_dev_exit() - tear down the device layer
 *
 * Description: undoes qimg_dev_init() and destroys the shared table
 * slabs.  Devices hold module references: none can be left here.
 *
 * Context: module exit, or a failed module init after qimg_dev_init();
 * process context, may sleep.
 */
void qimg_dev_exit(void)
{
	destroy_workqueue(qimg_ctl_wq);
	unregister_blkdev(qimg_major, "qimg");
	idr_destroy(&qimg_idr);
	qimg_slabs_exit();
}
