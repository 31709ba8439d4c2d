// SPDX-License-Identifier: GPL-2.0
/*
 * qimg backing-file layer: every read and write of an image file, the
 * decompression of compressed clusters, the SRCU sections that protect
 * data I/O against the reuse of freed clusters, and the context of the
 * threads that write image files.  Nothing here knows about requests,
 * tables or refcounts; everything above uses these helpers.
 */
/* The message helpers below print their own "qimgN: path: " prefix. */
#define pr_fmt(fmt) fmt

#include <linux/fs.h>
#include <linux/ioprio.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <linux/uio.h>
#include <linux/vmalloc.h>
#include <linux/zlib.h>

#include <linux/falloc.h>

#include "qimg_file.h"

/**
 * qimg_dev_err() - log an error about a device and its image
 * @dev: the device
 * @fmt: printf format of the message, ending in a newline
 *
 * Prints "qimgN: IMAGE: message" at KERN_ERR.  Not rate limited: see
 * qimg_dev_err_ratelimited() for errors a guest can trigger repeatedly.
 *
 * Context: any context, no lock needed.
 */
void qimg_dev_err(const struct qimg_device *dev, const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	if (dev->index < 0)	/* attaching: no number yet */
		pr_err("qimg: %s: %pV", dev->top.path ? dev->top.path : "?",
		       &vaf);
	else
		pr_err("qimg%d: %s: %pV", dev->index,
		       dev->top.path ? dev->top.path : "?", &vaf);
	va_end(args);
}

/**
 * qimg_dev_info() - log information about a device
 * @dev: the device
 * @fmt: printf format of the message, ending in a newline
 *
 * Prints "qimgN: message" at KERN_INFO (the message names the image if
 * needed), or "qimg: IMAGE: message" while the device has no number yet
 * (the journal replay of an attach).
 *
 * Context: any context, no lock needed.
 */
void qimg_dev_info(const struct qimg_device *dev, const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	if (dev->index < 0)	/* attaching: the image names the device */
		pr_info("qimg: %s: %pV", dev->top.path ? dev->top.path : "?",
			&vaf);
	else
		pr_info("qimg%d: %pV", dev->index, &vaf);
	va_end(args);
}

/**
 * qimg_image_end() - end of the host space an image may use
 * @img: the image
 *
 * The larger of the file's size and the end of the clusters allocated
 * since the attach (alloc_end runs ahead of i_size until the data is
 * written).  Offsets in metadata are checked against it.
 *
 * Context: any context, no lock (both values are read atomically; the
 * result may be outdated at once unless dev->meta_lock serialises
 * allocation against the caller).
 * Return: the end offset in bytes.
 */
u64 qimg_image_end(struct qimg_image *img)
{
	u64 isize = i_size_read(file_inode(img->file));
	u64 alloc = atomic64_read(&img->alloc_end);

	return max(isize, alloc);
}

/**
 * qimg_kiocb_init() - set up a kiocb on an image file
 * @iocb: the kiocb to fill (everything else zeroed)
 * @file: the image file
 * @pos: file offset
 * @flags: the IOCB_* flags we chose
 * @ioprio: I/O priority
 *
 * Every kiocb on an image file is set up here, with flags we chose: none
 * of the descriptor's open flags (O_APPEND, O_DIRECT, O_DSYNC, O_NOATIME
 * via f_iocb_flags / iocb_flags()) may reach our I/O, as loop learned.
 *
 * Context: any context.
 */
void qimg_kiocb_init(struct kiocb *iocb, struct file *file, u64 pos,
		     int flags, u16 ioprio)
{
	*iocb = (struct kiocb) {
		.ki_filp = file,
		.ki_pos = pos,
		.ki_flags = flags,
		.ki_ioprio = ioprio,
	};
}

/* Buffered I/O of a kernel buffer at @pos; writes are complete or fail. */
static int qimg_kio(struct file *file, void *buf, size_t len, u64 pos,
		    bool write)
{
	struct kvec kv = { .iov_base = buf, .iov_len = len };
	struct iov_iter it;
	struct kiocb kiocb;
	ssize_t n;

	iov_iter_kvec(&it, write ? ITER_SOURCE : ITER_DEST, &kv, 1, len);
	while (iov_iter_count(&it)) {
		qimg_kiocb_init(&kiocb, file, pos, write ? IOCB_WRITE : 0,
				IOPRIO_DEFAULT);
		if (write) {
			file_start_write(file);
			n = vfs_iocb_iter_write(file, &kiocb, &it);
			file_end_write(file);
		} else {
			n = vfs_iocb_iter_read(file, &kiocb, &it);
		}
		if (n < 0)
			return n;
		if (n == 0) {
			if (write)
				return -EIO;
			iov_iter_zero(iov_iter_count(&it), &it);
			break;		/* past EOF reads as zeros */
		}
		pos += n;
	}
	return 0;
}

/**
 * qimg_kread() - read a kernel buffer from an image file
 * @file: the image file
 * @buf: destination
 * @len: bytes to read
 * @pos: file offset
 *
 * Buffered; what lies past the end of the file reads as zeros.
 *
 * Context: process context, may sleep; no lock of ours needed (held
 * across it: dev->meta_lock for metadata, cache->load_mutex for tables).
 * Return: 0 or a negative errno.
 */
int qimg_kread(struct file *file, void *buf, size_t len, u64 pos)
{
	return qimg_kio(file, buf, len, pos, false);
}

/**
 * qimg_kwrite() - write a kernel buffer to an image file
 * @file: the image file
 * @buf: source
 * @len: bytes to write
 * @pos: file offset
 *
 * Buffered, under the file system's freeze protection; complete or failed
 * (a short write that makes no progress is -EIO).  Not synced.
 *
 * Context: process context, may sleep; no lock of ours needed (metadata
 * writers hold dev->meta_lock across it).
 * Return: 0 or a negative errno.
 */
int qimg_kwrite(struct file *file, const void *buf, size_t len, u64 pos)
{
	return qimg_kio(file, (void *)buf, len, pos, true);
}

/**
 * qimg_file_extend() - grow an image file to @end bytes (sparse)
 * @file: the image file
 * @end: the new size; never below the current one (then nothing happens)
 *
 * Context: process context, may sleep; the caller serialises size changes
 * (dev->meta_lock held, qimg_fresh_ready()).
 * Return: 0 or a negative errno (e.g. a file system that refuses).
 */
int qimg_file_extend(struct file *file, u64 end)
{
	if (end <= i_size_read(file_inode(file)))
		return 0;
	return vfs_truncate(&file->f_path, end);
}

/**
 * qimg_file_punch() - give [@off, @off + @len) of @file back to its file system
 * @file: the image file
 * @off: start of the range
 * @len: its length
 *
 * The range then reads as zeros; the file keeps its size.
 * Context: process context, may sleep; called with dev->meta_lock held
 * (qimg_apply_frees()).
 * Return: 0 or a negative errno (-EOPNOTSUPP where holes cannot be punched).
 */
int qimg_file_punch(struct file *file, u64 off, u64 len)
{
	if (!len)
		return 0;
	return vfs_fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			     off, len);
}

/**
 * qimg_dio_ok() - may this I/O go to the image file as direct I/O?
 * @img: the image
 * @pos: file offset (or any offset with the same alignment)
 * @it: the data, which must be a bvec iterator
 *
 * Context: any context, no lock (img->dio only ever turns false).
 * Return: true if the image uses direct I/O and @pos, the length and
 * every segment of @it are aligned to img->dio_align.
 */
bool qimg_dio_ok(struct qimg_image *img, u64 pos, struct iov_iter *it)
{
	unsigned long mask = img->dio_align - 1;

	return img->dio && iov_iter_is_bvec(it) &&
	       !((pos | iov_iter_count(it) | iov_iter_alignment(it)) & mask);
}

static void qimg_dio_refused(struct qimg_image *img)
{
	/* The file system wants other alignment: go buffered. */
	img->dio = false;
	pr_info("qimg%d: %s: direct I/O refused, using buffered I/O\n",
		img->dev->index, img->path ? img->path : "?");
}

/*
 * Synchronous data I/O at @pos: direct when it can be, buffered else.
 *
 * A direct read first writes back and waits on the file's page cache
 * (filemap_write_and_wait_range()), and that reports, once, a write-back
 * error recorded earlier on the file (AS_EIO), whatever range the read
 * covers: a write of some other process, or the outer file system's own
 * metadata buffers of the file.  The data this read asks for was never at
 * fault, so such a read is tried once more; the error is not lost to us,
 * since the file's errseq still fails our next fsync.  A read that fails
 * twice fails.
 */
static int qimg_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it,
			bool write)
{
	bool retried = false;
	struct kiocb kiocb;
	ssize_t n;
	int flags;

	while (iov_iter_count(it)) {
		flags = write ? IOCB_WRITE : 0;
		if (qimg_dio_ok(img, pos, it))
			flags |= IOCB_DIRECT;
		qimg_kiocb_init(&kiocb, img->file, pos, flags,
				get_current_ioprio());
		if (write) {
			file_start_write(img->file);
			n = vfs_iocb_iter_write(img->file, &kiocb, it);
			file_end_write(img->file);
		} else {
			n = vfs_iocb_iter_read(img->file, &kiocb, it);
		}
		if (n == -EINVAL && (flags & IOCB_DIRECT)) {
			qimg_dio_refused(img);
			continue;
		}
		if (n == -EIO && !write && (flags & IOCB_DIRECT) && !retried) {
			retried = true;
			continue;
		}
		if (n < 0)
			return n;
		if (n == 0) {
			if (write)
				return -EIO;
			iov_iter_zero(iov_iter_count(it), it);
			break;
		}
		pos += n;
	}
	return 0;
}

/* Zeros a single write of qimg_file_zero() carries at most. */
#define QIMG_ZERO_PAGES		256

/**
 * qimg_file_zero() - write zeros to [@pos, @pos + @len) of an image file
 * @img: the image (the top one)
 * @pos: file offset
 * @len: bytes to write
 *
 * Written from the zero page, directly when the image uses direct I/O:
 * unlike a hole or fallocate()'s unwritten extents, the file system
 * allocates and initialises the blocks now, so later overwrites and the
 * fdatasync() after them leave it no metadata to commit.  The file grows
 * when the range ends past its size.
 *
 * Context: process context, may sleep; the caller makes sure that no
 * other I/O targets the range (qimg_map.c: space past every allocation,
 * with dev->meta_lock held).
 * Return: 0 or a negative errno.
 */
int qimg_file_zero(struct qimg_image *img, u64 pos, u64 len)
{
	unsigned int i, n = min_t(u64, DIV_ROUND_UP(len, PAGE_SIZE),
				  QIMG_ZERO_PAGES);
	struct bio_vec *bv;
	struct iov_iter it;
	int ret = 0;

	if (!len)
		return 0;
	bv = kmalloc_array(n, sizeof(*bv), GFP_KERNEL);
	if (!bv)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		bv[i] = (struct bio_vec) {
			.bv_page = ZERO_PAGE(0),
			.bv_len = PAGE_SIZE,
		};
	while (!ret && len) {
		u64 chunk = min_t(u64, len, (u64)n * PAGE_SIZE);

		iov_iter_bvec(&it, ITER_SOURCE, bv,
			      DIV_ROUND_UP(chunk, PAGE_SIZE), chunk);
		ret = qimg_iter_at(img, pos, &it, true);
		pos += chunk;
		len -= chunk;
	}
	kfree(bv);
	return ret;
}

/**
 * qimg_read_iter_at() - synchronous data read from an image file
 * @img: the image
 * @pos: file offset
 * @it: destination, filled completely
 *
 * Direct I/O when qimg_dio_ok() allows it, buffered else; a file system
 * that refuses direct I/O (-EINVAL) turns the image to buffered I/O for
 * good.  What lies past the end of the file reads as zeros.  A direct
 * read that fails with -EIO is tried once more (see qimg_iter_at()).
 *
 * Context: process context, may sleep; no lock of ours held.  For the top
 * image, inside a qimg_io_enter() section when @pos came from a lookup.
 * Return: 0 or a negative errno.
 */
int qimg_read_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it)
{
	return qimg_iter_at(img, pos, it, false);
}

/**
 * qimg_write_iter_at() - synchronous data write to an image file
 * @img: the image (the top one)
 * @pos: file offset
 * @it: source, written completely
 *
 * Direct I/O when qimg_dio_ok() allows it, buffered else (see
 * qimg_read_iter_at()); under the file system's freeze protection.
 *
 * Context: process context, may sleep; no lock of ours held.  Inside a
 * qimg_io_enter() section when @pos came from a lookup; a reserved,
 * not yet linked cluster needs none.
 * Return: 0 or a negative errno (-EIO when no progress is made).
 */
int qimg_write_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it)
{
	return qimg_iter_at(img, pos, it, true);
}

/**
 * qimg_buf_alloc() - a kernel buffer for direct I/O
 * @b: the buffer, filled in here
 * @len: its size in bytes
 *
 * kvmalloc() memory, described page by page in b->bv so that an ITER_BVEC
 * iterator (qimg_buf_iter()) can carry it to direct I/O.  Below a page it
 * is a kmalloc() object, aligned to its power-of-two size class, which
 * covers the 512-byte alignment of small clusters; qimg_dio_ok() decides.
 *
 * Context: process context, may sleep.
 * Return: 0, or -ENOMEM (then @b holds nothing to free).
 */
int qimg_buf_alloc(struct qimg_buf *b, size_t len)
{
	size_t off = 0;
	unsigned int i;

	memset(b, 0, sizeof(*b));
	b->data = kvmalloc(len, GFP_KERNEL);
	if (!b->data)
		return -ENOMEM;
	b->nr = DIV_ROUND_UP(offset_in_page(b->data) + len, PAGE_SIZE);
	b->bv = kmalloc_array(b->nr, sizeof(*b->bv), GFP_KERNEL);
	if (!b->bv) {
		kvfree(b->data);
		b->data = NULL;
		return -ENOMEM;
	}
	for (i = 0; i < b->nr; i++) {
		char *p = (char *)b->data + off;
		size_t n = min_t(size_t, len - off,
				 PAGE_SIZE - offset_in_page(p));

		b->bv[i] = (struct bio_vec) {
			.bv_page = is_vmalloc_addr(p) ? vmalloc_to_page(p) :
				   virt_to_page(p),
			.bv_offset = offset_in_page(p),
			.bv_len = n,
		};
		off += n;
	}
	b->len = len;
	return 0;
}

/**
 * qimg_buf_iter() - an iterator over part of a qimg_buf
 * @b: the buffer
 * @it: the iterator, set up here
 * @dir: ITER_SOURCE (the buffer is written out) or ITER_DEST
 * @off: where in the buffer the iterator starts
 * @len: bytes it covers (@off + @len inside the buffer)
 *
 * Context: any context.
 */
void qimg_buf_iter(const struct qimg_buf *b, struct iov_iter *it,
		   unsigned int dir, size_t off, size_t len)
{
	iov_iter_bvec(it, dir, b->bv, b->nr, b->len);
	iov_iter_advance(it, off);
	iov_iter_truncate(it, len);
}

/**
 * qimg_buf_free() - free a qimg_buf (nothing when it holds nothing)
 * @b: the buffer, empty afterwards
 *
 * Context: process context; any context when @b is empty.
 */
void qimg_buf_free(struct qimg_buf *b)
{
	kfree(b->bv);
	kvfree(b->data);
	memset(b, 0, sizeof(*b));
}

/**
 * qimg_decompress() - read and inflate a compressed cluster
 * @img: the image holding the cluster
 * @e: its decoded L2 entry (QIMG_CLUSTER_COMPRESSED)
 * @out: a buffer of one cluster, filled completely on success
 *
 * Raw deflate with a 4 KiB window, as QEMU writes it.  The entry's size
 * is an upper bound: the input is cut at the end of the image (the last
 * cluster may be short) and at two clusters.
 *
 * Context: process context, may sleep (allocation, file read); no lock
 * of ours held.
 * Return: 0, -EOPNOTSUPP (compression type other than zlib), -EUCLEAN
 * (offset past the image's end, or data that does not inflate to a whole
 * cluster), -ENOMEM or the read's errno.
 */
int qimg_decompress(struct qimg_image *img, const struct qimg_l2_entry *e,
		    void *out)
{
	u64 end = qimg_image_end(img);
	u64 len = e->compressed_len;
	struct z_stream_s strm = { };
	void *in;
	int ret, zret;

	if (img->h->compression_type != QIMG_COMPRESSION_ZLIB)
		return -EOPNOTSUPP;
	if (e->host_offset >= end)
		return -EUCLEAN;
	/* The size field is an upper bound; the last cluster may be short. */
	len = min(len, end - e->host_offset);
	len = min_t(u64, len, 2 * img->g->cluster_size);
	in = kvmalloc(len, GFP_KERNEL);
	strm.workspace = kvmalloc(zlib_inflate_workspacesize(), GFP_KERNEL);
	if (!in || !strm.workspace) {
		ret = -ENOMEM;
		goto out;
	}
	ret = qimg_kread(img->file, in, len, e->host_offset);
	if (ret)
		goto out;
	/* Raw deflate, no zlib header, 4 KiB window: what QEMU writes. */
	if (zlib_inflateInit2(&strm, -12) != Z_OK) {
		ret = -EIO;
		goto out;
	}
	strm.next_in = in;
	strm.avail_in = len;
	strm.next_out = out;
	strm.avail_out = img->g->cluster_size;
	zret = zlib_inflate(&strm, Z_FINISH);
	zlib_inflateEnd(&strm);
	/* Success means the whole cluster came out, as QEMU decides it. */
	if ((zret == Z_STREAM_END || zret == Z_BUF_ERROR) && !strm.avail_out) {
		ret = 0;
	} else {
		pr_err_ratelimited("qimg%d: compressed cluster at %llu does not decompress (%d)\n",
				   img->dev->index, e->host_offset, zret);
		ret = -EUCLEAN;
	}
out:
	kvfree(strm.workspace);
	kvfree(in);
	return ret;
}

/**
 * qimg_io_enter() - begin the SRCU section of a data I/O
 * @dev: the device
 *
 * Data I/O aimed at a host cluster of the top image found by a lookup is
 * an SRCU read section of dev->io_srcu, from before the lookup until the
 * I/O has completed; the completion may run in another context (a kiocb's
 * ki_complete), which srcu_down_read() allows.  qimg_io_drain() is the
 * grace period: once it returns, no I/O that may have seen a mapping
 * changed before the call is still in flight.  SRCU gives that guarantee
 * for any interleaving, including a reader preempted between choosing its
 * counter and incrementing it, which a hand-made pair of epoch counters
 * does not.
 *
 * Context: process context, does not sleep.  May be entered with
 * dev->meta_lock held (qimg_alloc_begin()), but the section must never
 * take or wait for dev->meta_lock: qimg_io_drain() waits for sections
 * while holding it.
 * Return: the index to pass to qimg_io_exit().
 */
int qimg_io_enter(struct qimg_device *dev)
{
	int idx = qimg_compat_srcu_down_read(&dev->io_srcu);

	/* For sparse: the section ends in qimg_io_exit(), maybe elsewhere. */
	__release(&dev->io_srcu);
	return idx;
}

/**
 * qimg_io_exit() - end a section begun by qimg_io_enter()
 * @dev: the device
 * @idx: what qimg_io_enter() returned
 *
 * Context: any context (also a kiocb completion), does not sleep; not
 * necessarily the task that entered.
 */
void qimg_io_exit(struct qimg_device *dev, int idx)
{
	__acquire(&dev->io_srcu);
	qimg_compat_srcu_up_read(&dev->io_srcu, idx);
}

/**
 * qimg_io_drain() - wait for the data I/O that may use old mappings
 * @dev: the device
 *
 * Waits for every section (qimg_io_enter()) begun before this call, so
 * for every I/O that may have looked up a mapping changed before it.
 * Counted I/O never takes dev->meta_lock, so it cannot wait for us.
 *
 * Context: process context, sleeps; dev->meta_lock held.
 */
void qimg_io_drain(struct qimg_device *dev)
{
	lockdep_assert_held(&dev->meta_lock);
	synchronize_srcu_expedited(&dev->io_srcu);
}

/**
 * qimg_writer_begin() - enter the context of an image-file writer
 *
 * Description: a worker that writes image files on behalf of requests
 * (loop's lessons): PF_MEMALLOC_NOIO so that reclaim never recurses into
 * the device, and PF_LOCAL_THROTTLE so that balance_dirty_pages() on the
 * image's file system throttles us only for our own dirty pages, not for
 * those of a file system mounted on /dev/qimgN, whose writeback needs us.
 *
 * Context: process context; changes only the current task's flags.  Taken
 * around work that writes image files, also under dev->meta_lock.
 * Return: the previous state of those flags, for qimg_writer_end().
 */
unsigned int qimg_writer_begin(void)
{
	unsigned int old = current->flags &
			   (PF_LOCAL_THROTTLE | PF_MEMALLOC_NOIO);

	current->flags |= PF_LOCAL_THROTTLE | PF_MEMALLOC_NOIO;
	return old;
}

/**
 * qimg_writer_end() - leave the context entered by qimg_writer_begin()
 * @old: what qimg_writer_begin() returned
 *
 * Context: process context, the same task as qimg_writer_begin().
 */
void qimg_writer_end(unsigned int old)
{
	current->flags = (current->flags &
			  ~(PF_LOCAL_THROTTLE | PF_MEMALLOC_NOIO)) | old;
}

