// SPDX-License-Identifier: GPL-2.0
/*
 * qimg I/O: blk-mq operations, the per-request work item, and I/O on the
 * image files through the VFS.
 *
 * queue_rq only hands the request to the device's unbound workqueue: the
 * work may sleep (cache misses, allocation, file I/O) and runs under
 * memalloc_noio_save() so that memory reclaim never recurses into us.
 * A request that falls in one allocated cluster (for writes: one that is
 * ours alone) and is aligned for direct I/O is submitted as an
 * asynchronous IOCB_DIRECT kiocb and ended by its completion, like loop.
 * So is an allocating write whose data is all the new cluster needs (see
 * qimg_map.c): the cluster is reserved first, and the completion queues
 * the linking of its L2 entry on dev->link_wq, which ends the request.
 * Everything else uses synchronous kiocbs on the image file: IOCB_DIRECT
 * when the device asked for it, the file supports it (FMODE_CAN_ODIRECT)
 * and the piece is aligned for the underlying device; buffered otherwise.
 * Metadata I/O is always buffered (kernel_read/kernel_write) and made
 * durable by the ordered write-back in qimg_cache.c.
 */
#include <linux/bio.h>
#include <linux/blk-mq.h>
#include <linux/mm.h>
#include <linux/ratelimit.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/zlib.h>

#include "qimg.h"

int qimg_kread(struct file *file, void *buf, size_t len, u64 pos)
{
	loff_t p = pos;
	char *b = buf;

	while (len) {
		ssize_t n = kernel_read(file, b, len, &p);

		if (n < 0)
			return n;
		if (n == 0) {		/* past EOF reads as zeros */
			memset(b, 0, len);
			return 0;
		}
		b += n;
		len -= n;
	}
	return 0;
}

int qimg_kwrite(struct file *file, const void *buf, size_t len, u64 pos)
{
	loff_t p = pos;
	const char *b = buf;

	while (len) {
		ssize_t n = kernel_write(file, b, len, &p);

		if (n < 0)
			return n;
		if (n == 0)
			return -EIO;
		b += n;
		len -= n;
	}
	return 0;
}

static bool qimg_dio_ok(struct qimg_image *img, u64 pos, struct iov_iter *it)
{
	unsigned long mask = img->dio_align - 1;

	return img->dio && iov_iter_is_bvec(it) &&
	       !((pos | iov_iter_count(it) | iov_iter_alignment(it)) & mask);
}

int qimg_read_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it)
{
	struct kiocb kiocb;
	ssize_t n;

	while (iov_iter_count(it)) {
		init_sync_kiocb(&kiocb, img->file);
		kiocb.ki_pos = pos;
		if (qimg_dio_ok(img, pos, it))
			kiocb.ki_flags |= IOCB_DIRECT;
		n = vfs_iocb_iter_read(img->file, &kiocb, it);
		if (n == -EINVAL && (kiocb.ki_flags & IOCB_DIRECT)) {
			/* The file system wants other alignment: go buffered. */
			img->dio = false;
			pr_info("qimg%d: %s: direct I/O refused, using buffered I/O\n",
				img->dev->index, img->path ? img->path : "?");
			continue;
		}
		if (n < 0)
			return n;
		if (n == 0) {
			iov_iter_zero(iov_iter_count(it), it);
			break;
		}
		pos += n;
	}
	return 0;
}

int qimg_write_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it)
{
	struct kiocb kiocb;
	ssize_t n;

	while (iov_iter_count(it)) {
		init_sync_kiocb(&kiocb, img->file);
		kiocb.ki_pos = pos;
		if (qimg_dio_ok(img, pos, it))
			kiocb.ki_flags |= IOCB_DIRECT;
		file_start_write(img->file);
		n = vfs_iocb_iter_write(img->file, &kiocb, it);
		file_end_write(img->file);
		if (n == -EINVAL && (kiocb.ki_flags & IOCB_DIRECT)) {
			img->dio = false;
			pr_info("qimg%d: %s: direct I/O refused, using buffered I/O\n",
				img->dev->index, img->path ? img->path : "?");
			continue;
		}
		if (n < 0)
			return n;
		if (n == 0)
			return -EIO;
		pos += n;
	}
	return 0;
}

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

static int qimg_read_compressed(struct qimg_image *img,
				const struct qimg_l2_entry *e, u64 coff,
				struct iov_iter *it)
{
	size_t n = iov_iter_count(it);
	void *buf;
	int ret;

	buf = kvmalloc(img->g->cluster_size, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	ret = qimg_decompress(img, e, buf);
	if (!ret && copy_to_iter((char *)buf + coff, n, it) != n)
		ret = -EFAULT;
	kvfree(buf);
	return ret;
}

/* Does the cluster after @e continue it on the host?  (merge reads) */
static bool qimg_contiguous(struct qimg_image *img, u64 guest,
			    const struct qimg_l2_entry *e, u64 *host_next)
{
	struct qimg_l2_entry n;

	if (qimg_map_lookup(img, guest, &n))
		return false;
	return n.type == QIMG_CLUSTER_NORMAL && n.host_offset == *host_next;
}

/*
 * Read one piece of @len bytes at @off of image @img, all of one kind,
 * from @it; the caller truncated nothing: we work on a copy.
 */
static int qimg_read_piece(struct qimg_image *img, u64 off, size_t len,
			   struct iov_iter *it,
			   int (*fn)(struct qimg_image *img, u64 off,
				     struct iov_iter *sub, void *arg),
			   void *arg)
{
	struct iov_iter sub = *it;
	int ret;

	iov_iter_truncate(&sub, len);
	ret = fn(img, off, &sub, arg);
	if (ret)
		return ret;
	iov_iter_advance(it, len);
	return 0;
}

static int qimg_piece_backing(struct qimg_image *img, u64 off,
			      struct iov_iter *sub, void *arg)
{
	if (img->backing)
		return qimg_read_guest(img->backing, off, sub);
	iov_iter_zero(iov_iter_count(sub), sub);
	return 0;
}

static int qimg_piece_zero(struct qimg_image *img, u64 off,
			   struct iov_iter *sub, void *arg)
{
	iov_iter_zero(iov_iter_count(sub), sub);
	return 0;
}

static int qimg_piece_host(struct qimg_image *img, u64 host,
			   struct iov_iter *sub, void *arg)
{
	return qimg_read_iter_at(img, host, sub);
}

static int qimg_piece_compressed(struct qimg_image *img, u64 coff,
				 struct iov_iter *sub, void *arg)
{
	return qimg_read_compressed(img, arg, coff, sub);
}

static int qimg_read_guest_chain(struct qimg_image *img, u64 off,
				 struct iov_iter *it)
{
	const struct qimg_geom *g = img->g;
	struct qimg_l2_entry e;
	int ret;

	while (iov_iter_count(it)) {
		size_t count = iov_iter_count(it);
		u64 len, coff, host;

		if (off >= img->virtual_size) {
			iov_iter_zero(count, it);
			return 0;
		}
		len = min_t(u64, count, img->virtual_size - off);
		if (img->raw) {
			ret = qimg_read_piece(img, off, len, it,
					      qimg_piece_host, NULL);
			if (ret)
				return ret;
			off += len;
			continue;
		}
		coff = qimg_cluster_offset(g, off);
		ret = qimg_map_lookup(img, off, &e);
		if (ret)
			return ret;
		if (g->ext_l2) {
			u64 scs = 1ULL << g->subcluster_bits;
			unsigned int sc = coff >> g->subcluster_bits;

			len = min(len, scs - (off & (scs - 1)));
			switch (qimg_subcluster_type(&e, sc)) {
			case QIMG_SUBCLUSTER_UNALLOCATED:
				e.type = QIMG_CLUSTER_UNALLOCATED;
				break;
			case QIMG_SUBCLUSTER_ZERO:
				e.type = QIMG_CLUSTER_ZERO_PLAIN;
				break;
			case QIMG_SUBCLUSTER_NORMAL:
				e.type = QIMG_CLUSTER_NORMAL;
				break;
			case QIMG_SUBCLUSTER_COMPRESSED:
				e.type = QIMG_CLUSTER_COMPRESSED;
				break;
			}
		} else {
			len = min(len, g->cluster_size - coff);
		}

		switch (e.type) {
		case QIMG_CLUSTER_UNALLOCATED:
			ret = qimg_read_piece(img, off, len, it,
					      qimg_piece_backing, NULL);
			break;
		case QIMG_CLUSTER_ZERO_PLAIN:
		case QIMG_CLUSTER_ZERO_ALLOC:
			ret = qimg_read_piece(img, off, len, it,
					      qimg_piece_zero, NULL);
			break;
		case QIMG_CLUSTER_COMPRESSED:
			ret = qimg_read_piece(img, coff, len, it,
					      qimg_piece_compressed, &e);
			break;
		case QIMG_CLUSTER_NORMAL:
			host = e.host_offset + coff;
			/* Merge following clusters that are contiguous. */
			if (!g->ext_l2) {
				u64 next = e.host_offset + g->cluster_size;
				u64 goff = off - coff + g->cluster_size;

				while (len < count &&
				       goff < img->virtual_size &&
				       qimg_contiguous(img, goff, &e, &next)) {
					u64 more = min_t(u64, g->cluster_size,
							 count - len);

					more = min(more,
						   img->virtual_size - goff);
					len += more;
					next += g->cluster_size;
					goff += g->cluster_size;
				}
			}
			ret = qimg_read_piece(img, host, len, it,
					      qimg_piece_host, NULL);
			break;
		default:
			ret = -EIO;
		}
		if (ret)
			return ret;
		off += len;
	}
	return 0;
}

/*
 * Read iov_iter_count(@it) bytes of what the guest sees at @off in @img.
 * Clusters of the top image can be freed and reused while we read them
 * (a concurrent discard): counted, see qimg_io_drain().  Backing images
 * are never written.
 */
int qimg_read_guest(struct qimg_image *img, u64 off, struct iov_iter *it)
{
	struct qimg_device *dev = img->dev;
	int epoch, ret;

	if (img != &dev->top)
		return qimg_read_guest_chain(img, off, it);
	epoch = qimg_io_enter(dev);
	ret = qimg_read_guest_chain(img, off, it);
	qimg_io_exit(dev, epoch);
	return ret;
}

int qimg_read_guest_buf(struct qimg_image *img, u64 off, void *buf,
			size_t len)
{
	struct kvec kv = { .iov_base = buf, .iov_len = len };
	struct iov_iter it;

	iov_iter_kvec(&it, ITER_DEST, &kv, 1, len);
	return qimg_read_guest(img, off, &it);
}

int qimg_flush(struct qimg_device *dev)
{
	int ret = 0;

	/* Metadata that can no longer be written: no flush may succeed. */
	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return -EIO;
	if (dev->read_only)
		return 0;
	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_writeback(dev);
	mutex_unlock(&dev->meta_lock);
	if (ret)
		return ret;
	ret = vfs_fsync(dev->top.file, 0);
	if (ret) {
		/* The error is reported once: later fsyncs would succeed. */
		mutex_lock(&dev->meta_lock);
		qimg_meta_sync_failed(dev, ret);
		mutex_unlock(&dev->meta_lock);
	}
	return ret;
}

static int qimg_do_write(struct qimg_device *dev, u64 off, struct iov_iter *it)
{
	const struct qimg_geom *g = dev->top.g;
	int ret;

	while (iov_iter_count(it)) {
		size_t len = min_t(u64, iov_iter_count(it),
				   g->cluster_size - qimg_cluster_offset(g, off));
		struct iov_iter sub = *it;

		iov_iter_truncate(&sub, len);
		ret = qimg_map_write(dev, off, &sub);
		if (ret)
			return ret;
		iov_iter_advance(it, len);
		off += len;
	}
	return 0;
}

/* Write @len bytes of zeros at @off as ordinary data. */
static int qimg_write_zero_data(struct qimg_device *dev, u64 off, u64 len)
{
	struct kvec kv;
	struct iov_iter it;
	void *z;
	int ret;

	z = kvzalloc(len, GFP_KERNEL);
	if (!z)
		return -ENOMEM;
	kv.iov_base = z;
	kv.iov_len = len;
	iov_iter_kvec(&it, ITER_SOURCE, &kv, 1, len);
	ret = qimg_map_write(dev, off, &it);
	kvfree(z);
	return ret;
}

/*
 * REQ_OP_DISCARD and REQ_OP_WRITE_ZEROES.  Whole clusters change their L2
 * entry (qimg_map_zero_cluster); partial clusters get zeros written into
 * their data for write zeroes, and are left alone by discard, which is
 * advisory (writing zeros there could even allocate).
 */
static int qimg_do_zero(struct qimg_device *dev, u64 off, u64 len,
			bool discard, bool unmap)
{
	const struct qimg_geom *g = dev->top.g;
	int ret = 0;

	while (len && !ret) {
		u64 n = min(len, g->cluster_size - qimg_cluster_offset(g, off));

		if (n == g->cluster_size) {
			ret = qimg_map_zero_cluster(dev, off, unmap);
			if (ret == -EOPNOTSUPP)
				ret = discard ? 0 :
				      qimg_write_zero_data(dev, off, n);
		} else if (!discard) {
			ret = qimg_write_zero_data(dev, off, n);
		}
		off += n;
		len -= n;
	}
	return ret;
}

static void qimg_rq_done(struct qimg_device *dev, struct qimg_cmd *cmd,
			 int ret)
{
	struct request *rq = cmd->rq;

	if (ret)
		pr_err_ratelimited("qimg%d: %s at sector %llu failed: %d\n",
				   dev->index,
				   req_op(rq) == REQ_OP_READ ? "read" :
				   req_op(rq) == REQ_OP_WRITE ? "write" :
				   req_op(rq) == REQ_OP_FLUSH ? "flush" :
				   req_op(rq) == REQ_OP_DISCARD ? "discard" :
				   "write zeroes",
				   (unsigned long long)blk_rq_pos(rq), ret);
	kfree(cmd->bvec);
	cmd->bvec = NULL;
	blk_mq_end_request(rq, errno_to_blk_status(ret));
}

/* An asynchronous direct kiocb of @len bytes at @host, ended by @done. */
static void qimg_aio_prep(struct qimg_cmd *cmd, struct qimg_image *img,
			  u64 host, size_t len,
			  void (*done)(struct kiocb *iocb, long res))
{
	struct kiocb *iocb = &cmd->iocb;

	init_sync_kiocb(iocb, img->file);
	iocb->ki_pos = host;
	iocb->ki_flags |= IOCB_DIRECT;
	iocb->ki_complete = done;
	cmd->len = len;
}

/* Completion of an asynchronous direct I/O; any context. */
static void qimg_aio_complete(struct kiocb *iocb, long res)
{
	struct qimg_cmd *cmd = container_of(iocb, struct qimg_cmd, iocb);
	int ret = 0;

	struct qimg_device *dev = cmd->rq->q->queuedata;

	if (res < 0)
		ret = res;
	else if (res != cmd->len)
		ret = -EIO;	/* the range was checked to be in the file */
	qimg_io_exit(dev, cmd->io_epoch);
	qimg_rq_done(dev, cmd, ret);
}

/*
 * The fast path: a read of an allocated cluster, or a write of one that is
 * ours alone (COPIED), inside one cluster and aligned for direct I/O, goes
 * to the image file as an asynchronous kiocb, as loop does, so a worker
 * does not sit waiting for each request.  Returns 0 when the request was
 * handed over (its completion ends it), -EAGAIN for the synchronous path.
 */
static int qimg_submit_aio(struct qimg_device *dev, struct qimg_cmd *cmd,
			   u64 pos, bool write)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	size_t len = iov_iter_count(&cmd->iter);
	u64 coff = qimg_cluster_offset(g, pos);
	struct kiocb *iocb = &cmd->iocb;
	struct qimg_l2_entry e;
	ssize_t ret;
	u64 host;

	if (g->ext_l2 || coff + len > g->cluster_size)
		return -EAGAIN;
	cmd->io_epoch = qimg_io_enter(dev);
	if (qimg_map_lookup(img, pos, &e) || e.type != QIMG_CLUSTER_NORMAL ||
	    (write && (!e.copied ||
		       qimg_overlap_hit(dev, e.host_offset, g->cluster_size, 0))))
		goto sync;	/* an overlap: the sync path refuses it */
	host = e.host_offset + coff;
	if (!qimg_dio_ok(img, host, &cmd->iter) ||
	    host + len > i_size_read(file_inode(img->file)))
		goto sync;

	qimg_aio_prep(cmd, img, host, len, qimg_aio_complete);
	if (write)
		ret = img->file->f_op->write_iter(iocb, &cmd->iter);
	else
		ret = img->file->f_op->read_iter(iocb, &cmd->iter);
	if (ret == -EIOCBQUEUED)
		return 0;
	if (ret == -EINVAL && iov_iter_count(&cmd->iter) == len)
		goto sync;	/* refused up front: let the sync path say */
	qimg_aio_complete(iocb, ret);
	return 0;
sync:
	qimg_io_exit(dev, cmd->io_epoch);
	return -EAGAIN;
}

/*
 * Completion of an allocating write's data; any context.  The first
 * completion to find the list empty queues the work; the work takes the
 * whole list, so a re-queue while it runs picks up what came in late.
 */
static void qimg_alloc_aio_complete(struct kiocb *iocb, long res)
{
	struct qimg_cmd *cmd = container_of(iocb, struct qimg_cmd, iocb);
	struct qimg_device *dev = cmd->rq->q->queuedata;

	cmd->res = res;
	if (llist_add(&cmd->link_node, &dev->link_list))
		queue_work(dev->link_wq, &dev->link_work);
}

/*
 * Link the L2 entries of the allocating writes whose data is written:
 * one dev->meta_lock section and one metadata group for all of them,
 * then end their requests.
 */
void qimg_link_work(struct work_struct *work)
{
	struct qimg_device *dev = container_of(work, struct qimg_device,
					       link_work);
	struct llist_node *list = llist_reverse_order(llist_del_all(&dev->link_list));
	struct qimg_cmd *cmd, *tmp;
	unsigned int noio;
	int err;

	if (!list)
		return;
	noio = memalloc_noio_save();
	mutex_lock(&dev->meta_lock);
	qimg_meta_begin(dev);
	llist_for_each_entry(cmd, list, link_node) {
		if (cmd->res >= 0 && cmd->res != cmd->len)
			cmd->res = -EIO;
		qimg_alloc_link(dev, &cmd->alloc, min_t(long, cmd->res, 0));
	}
	err = qimg_meta_end(dev);
	mutex_unlock(&dev->meta_lock);
	wake_up_all(&dev->inflight_wq);
	memalloc_noio_restore(noio);
	llist_for_each_entry_safe(cmd, tmp, list, link_node)
		qimg_rq_done(dev, cmd, cmd->res < 0 ? cmd->res : err);
}

/*
 * A write inside one cluster that needs a new one.  When the guest's data
 * is all the new cluster needs (a cluster never written before, whose
 * old content reads as zeros, or a whole cluster), the data goes out as
 * an asynchronous direct kiocb, and its completion links the L2 entry
 * from dev->link_wq: the worker does not wait for the write, and neither
 * does the next allocating write, as it would behind ext4's inode lock
 * with a synchronous one.  Returns -EIOCBQUEUED when handed over, 1
 * (nothing done) for the general path, or the request's result.
 */
static int qimg_submit_alloc_aio(struct qimg_device *dev,
				 struct qimg_cmd *cmd, u64 pos)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	struct qimg_alloc *a = &cmd->alloc;
	size_t len = iov_iter_count(&cmd->iter);
	u64 coff = qimg_cluster_offset(g, pos);
	struct kiocb *iocb = &cmd->iocb;
	ssize_t ret;
	u64 host;

	/* Host clusters are aligned: the offset in one says it all. */
	if (g->ext_l2 || coff + len > g->cluster_size ||
	    !qimg_dio_ok(img, coff, &cmd->iter))
		return 1;
	ret = qimg_alloc_begin(dev, pos, a);
	if (ret < 0)
		return ret;
	if (ret > 0) {
		ret = qimg_write_iter_at(img, a->host + coff, &cmd->iter);
		qimg_io_exit(dev, a->epoch);
		return ret;
	}
	host = a->host + coff;
	if (a->err || !qimg_alloc_data_only(dev, a, len) ||
	    host + len > i_size_read(file_inode(img->file)))
		goto sync;

	qimg_aio_prep(cmd, img, host, len, qimg_alloc_aio_complete);
	ret = img->file->f_op->write_iter(iocb, &cmd->iter);
	if (ret == -EIOCBQUEUED)
		return ret;
	if (ret == -EINVAL && iov_iter_count(&cmd->iter) == len)
		goto sync;	/* refused up front: let the sync path say */
	qimg_alloc_aio_complete(iocb, ret);
	return -EIOCBQUEUED;
sync:
	return qimg_alloc_finish(dev, a, qimg_alloc_write(dev, a, &cmd->iter));
}

/* Returns -EIOCBQUEUED when the request completes asynchronously. */
static int qimg_handle_rq(struct qimg_device *dev, struct qimg_cmd *cmd)
{
	struct request *rq = cmd->rq;
	struct req_iterator rq_iter;
	struct bio_vec tmp;
	u64 pos = (u64)blk_rq_pos(rq) << SECTOR_SHIFT;
	bool write = req_op(rq) == REQ_OP_WRITE;
	struct bio *bio = rq->bio;
	int ret;

	switch (req_op(rq)) {
	case REQ_OP_FLUSH:
		return qimg_flush(dev);
	case REQ_OP_READ:
		break;
	case REQ_OP_DISCARD:
	case REQ_OP_WRITE_ZEROES:
		if (dev->read_only)
			return -EROFS;
		if (pos >= dev->top.virtual_size)
			return 0;
		ret = qimg_do_zero(dev, pos,
				   min_t(u64, blk_rq_bytes(rq),
					 dev->top.virtual_size - pos),
				   req_op(rq) == REQ_OP_DISCARD,
				   req_op(rq) == REQ_OP_DISCARD ||
				   !(rq->cmd_flags & REQ_NOUNMAP));
		if (!ret && (rq->cmd_flags & REQ_FUA))
			ret = qimg_flush(dev);
		return ret;
	case REQ_OP_WRITE:
		if (dev->read_only)
			return -EROFS;
		break;
	default:
		return -EOPNOTSUPP;
	}

	if (rq->bio != rq->biotail) {
		unsigned int nr = 0, i = 0;

		rq_for_each_bvec(tmp, rq, rq_iter)
			nr++;
		cmd->bvec = kmalloc_array(nr, sizeof(*cmd->bvec), GFP_NOIO);
		if (!cmd->bvec)
			return -ENOMEM;
		rq_for_each_bvec(tmp, rq, rq_iter)
			cmd->bvec[i++] = tmp;
		iov_iter_bvec(&cmd->iter, write ? ITER_SOURCE : ITER_DEST,
			      cmd->bvec, nr, blk_rq_bytes(rq));
	} else {
		struct bio_vec *bvec = __bvec_iter_bvec(bio->bi_io_vec,
							bio->bi_iter);

		iov_iter_bvec(&cmd->iter, write ? ITER_SOURCE : ITER_DEST, bvec,
			      bio_segments(bio), blk_rq_bytes(rq));
		cmd->iter.iov_offset = bio->bi_iter.bi_bvec_done;
	}

	if (!(rq->cmd_flags & REQ_FUA)) {
		if (!qimg_submit_aio(dev, cmd, pos, write))
			return -EIOCBQUEUED;
		if (write) {
			ret = qimg_submit_alloc_aio(dev, cmd, pos);
			if (ret <= 0)
				return ret;
		}
	}
	if (write) {
		ret = qimg_do_write(dev, pos, &cmd->iter);
		if (!ret && (rq->cmd_flags & REQ_FUA))
			ret = qimg_flush(dev);
	} else {
		ret = qimg_read_guest(&dev->top, pos, &cmd->iter);
	}
	return ret;
}

static void qimg_cmd_work(struct work_struct *work)
{
	struct qimg_cmd *cmd = container_of(work, struct qimg_cmd, work);
	struct qimg_device *dev = cmd->rq->q->queuedata;
	unsigned int noio;
	int ret;

	noio = memalloc_noio_save();
	ret = qimg_handle_rq(dev, cmd);
	memalloc_noio_restore(noio);
	if (ret != -EIOCBQUEUED)
		qimg_rq_done(dev, cmd, ret);
}

static blk_status_t qimg_queue_rq(struct blk_mq_hw_ctx *hctx,
				  const struct blk_mq_queue_data *bd)
{
	struct request *rq = bd->rq;
	struct qimg_cmd *cmd = blk_mq_rq_to_pdu(rq);
	struct qimg_device *dev = rq->q->queuedata;

	blk_mq_start_request(rq);
	queue_work(dev->wq, &cmd->work);
	return BLK_STS_OK;
}

static int qimg_init_request(struct blk_mq_tag_set *set, struct request *rq,
			     unsigned int hctx_idx, unsigned int numa_node)
{
	struct qimg_cmd *cmd = blk_mq_rq_to_pdu(rq);

	INIT_WORK(&cmd->work, qimg_cmd_work);
	cmd->rq = rq;
	cmd->bvec = NULL;
	return 0;
}

const struct blk_mq_ops qimg_mq_ops = {
	.queue_rq = qimg_queue_rq,
	.init_request = qimg_init_request,
};
