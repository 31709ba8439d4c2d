// SPDX-License-Identifier: GPL-2.0
/*
 * qimg block requests: blk-mq operations, the per-request work item,
 * asynchronous kiocb submission and completion, flush, discard and
 * write zeroes.
 *
 * queue_rq only hands the request to the device's unbound workqueue: the
 * work may sleep (cache misses, allocation, file I/O) and runs as a
 * backing-file writer (qimg_writer_begin(): no reclaim recursion into us,
 * local dirty throttling), in the submitter's blkcg and memcg.  Reads and
 * writes likely to take the fast path below go on a per-hardware-queue
 * list that one work item submits in a batch (qimg_drain_work()); the
 * rest, and what the fast path refuses, get a work item each.
 * A request over allocated clusters (for writes: ours alone) that lie
 * back to back in the image file, aligned for direct I/O, is submitted as
 * one asynchronous IOCB_DIRECT kiocb and ended by its completion, like
 * loop.
 * So is an allocating write whose data is all the new cluster needs (see
 * qimg_map.c): the cluster is reserved first, and the completion queues
 * the linking of its L2 entry on dev->link_wq, which ends the request.
 * Everything else goes through the mapping layer's synchronous paths.
 * Handing off is reported as -EIOCBQUEUED, as loop does.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bio.h>
#include <linux/blk-cgroup.h>
#include <linux/cgroup.h>
#include <linux/ioprio.h>
#include <linux/kthread.h>
#include <linux/memcontrol.h>
#include <linux/blk-mq.h>
#include <linux/mm.h>
#include <linux/ratelimit.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/zlib.h>

#include "qimg_file.h"
#include "qimg_meta.h"
#include "qimg_journal.h"
#include "qimg_overlap.h"
#include "qimg_map.h"
#include "qimg_rq.h"

/**
 * qimg_flush() - make every acknowledged write durable
 * @dev: the device
 *
 * For REQ_OP_FLUSH and detach: writes back the metadata, then syncs the
 * image file.  Also after corruption was found (the device refuses new
 * writes then), the metadata of writes already acknowledged is written
 * back: it describes clusters that were allocated and written correctly,
 * and dropping it would lose them.  Only a failed write-back
 * (QIMG_STATE_WB_FAILED) makes that impossible, and then every flush
 * fails: none may report success while acknowledged data is not durable.
 * A failed fsync ends all writing (qimg_meta_sync_failed()): its error is
 * reported once, later fsyncs would succeed.
 *
 * Context: process context, may sleep; takes dev->meta_lock, which the
 * caller must not hold (request workers, detach).
 * Return: 0 (also on a read-only attach), or -EIO or the write-back's or
 * fsync's error.
 */
int qimg_flush(struct qimg_device *dev)
{
	int ret = 0;

	if (test_bit(QIMG_STATE_WB_FAILED, &dev->state))
		return -EIO;
	if (!dev->writable)
		return 0;
	qimg_map_note_flush(dev);
	if (dev->journal)
		return qimg_journal_flush(dev);
	mutex_lock(&dev->meta_lock);
	ret = qimg_meta_writeback(dev);
	mutex_unlock(&dev->meta_lock);
	if (ret)
		return ret;
	ret = vfs_fsync(dev->top.file, 1);	/* fdatasync: qimg_meta_sync() */
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
 * Write zeroes inside one cluster.  With extended L2 entries, the whole
 * subclusters in the range become zero subclusters (no data written, no
 * cluster allocated for them); the rest, and every part of a standard
 * cluster, gets zeros written as data.
 */
static int qimg_zero_part(struct qimg_device *dev, u64 off, u64 len)
{
	const struct qimg_geom *g = dev->top.g;
	u64 scs = 1ULL << g->subcluster_bits;
	u64 from = round_up(off, scs), to = round_down(off + len, scs);
	int ret;

	if (!g->ext_l2 || from >= to)
		return qimg_write_zero_data(dev, off, len);
	ret = qimg_map_zero_subclusters(dev, from, to - from);
	if (ret == -EOPNOTSUPP)
		return qimg_write_zero_data(dev, off, len);
	if (!ret && from > off)
		ret = qimg_write_zero_data(dev, off, from - off);
	if (!ret && off + len > to)
		ret = qimg_write_zero_data(dev, to, off + len - to);
	return ret;
}

/*
 * REQ_OP_DISCARD and REQ_OP_WRITE_ZEROES.  Whole clusters change their L2
 * entry (qimg_map_zero_cluster); partial clusters get zeros for write
 * zeroes (qimg_zero_part()), and are left alone by discard, which is
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
			ret = qimg_zero_part(dev, off, n);
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

	if (ret && req_op(rq) == REQ_OP_FLUSH)
		qimg_dev_err_ratelimited(dev, "flush failed: %d\n", ret);
	else if (ret)
		qimg_dev_err_ratelimited(dev, "%s at sector %llu failed: %d\n",
					 req_op(rq) == REQ_OP_READ ? "read" :
					 req_op(rq) == REQ_OP_WRITE ? "write" :
					 req_op(rq) == REQ_OP_DISCARD ?
					 "discard" : "write zeroes",
					 (unsigned long long)blk_rq_pos(rq),
					 ret);
	kfree(cmd->bvec);
	cmd->bvec = NULL;
	qimg_buf_free(&cmd->cow);
	blk_mq_end_request(rq, errno_to_blk_status(ret));
}

/* Not handed off: the request takes the synchronous path (a worker). */
#define QIMG_RQ_SYNC	1

/*
 * Submit an asynchronous direct kiocb of @len bytes at @host, ended by
 * @done, with the request's I/O priority.  A write holds freeze
 * protection of the image's file system until it completes (taken here,
 * dropped by qimg_aio_end()).  Returns -EIOCBQUEUED when handed off, like
 * ->read_iter / ->write_iter.
 */
static ssize_t qimg_aio_submit(struct qimg_cmd *cmd, struct qimg_image *img,
			       u64 host, size_t len, bool write,
			       void (*done)(struct kiocb *iocb, long res))
{
	struct kiocb *iocb = &cmd->iocb;

	qimg_kiocb_init(iocb, img->file, host,
			IOCB_DIRECT | (write ? IOCB_WRITE : 0),
			req_get_ioprio(cmd->rq));
	iocb->ki_complete = done;
	cmd->len = len;
	if (!write)
		return img->file->f_op->read_iter(iocb, &cmd->iter);
	qimg_compat_kiocb_start_write(iocb);
	return img->file->f_op->write_iter(iocb, &cmd->iter);
}

/* First thing in every completion of qimg_aio_submit()'s kiocbs. */
static void qimg_aio_end(struct kiocb *iocb)
{
	if (iocb->ki_flags & IOCB_WRITE)
		qimg_compat_kiocb_end_write(iocb);
}

/* Completion of an asynchronous direct I/O; any context. */
static void qimg_aio_complete(struct kiocb *iocb, long res)
{
	struct qimg_cmd *cmd = container_of(iocb, struct qimg_cmd, iocb);
	struct qimg_device *dev = cmd->rq->q->queuedata;
	int ret = 0;

	qimg_aio_end(iocb);
	if (res < 0)
		ret = res;
	else if (res != cmd->len)
		ret = -EIO;	/* the range was checked to be in the file */
	qimg_io_exit(dev, cmd->io_epoch);
	qimg_rq_done(dev, cmd, ret);
}

/*
 * Submit with qimg_aio_submit() and see it ended: -EIOCBQUEUED when the
 * kiocb was handed over or ended by @done here (its result then is the
 * request's), QIMG_RQ_SYNC when it was refused up front with the
 * iterator untouched: -EINVAL (the file will not take this direct I/O),
 * or -EIO for a read that may have met a write-back error recorded on the
 * file, not a failure of its own (see qimg_read_iter_at()).  The sync
 * path then says.
 */
static int qimg_aio_try(struct qimg_cmd *cmd, struct qimg_image *img,
			u64 host, size_t len, bool write,
			void (*done)(struct kiocb *iocb, long res))
{
	ssize_t ret = qimg_aio_submit(cmd, img, host, len, write, done);

	if (ret == -EIOCBQUEUED)
		return ret;
	if ((ret == -EINVAL || (ret == -EIO && !write)) &&
	    iov_iter_count(&cmd->iter) == len) {
		qimg_aio_end(&cmd->iocb);
		return QIMG_RQ_SYNC;
	}
	done(&cmd->iocb, ret);
	return -EIOCBQUEUED;
}

/* Clusters one fast-path request may span (a 1 MiB request at 4k clusters). */
#define QIMG_AIO_MAX_CLUSTERS	256

/*
 * The fast path: a read of allocated clusters, or a write of clusters
 * that are ours alone (COPIED), that lie back to back in the image file
 * (as a sequentially written image has them) and are aligned for direct
 * I/O, goes to the image file as one asynchronous kiocb, as loop does, so
 * a worker does not sit waiting for each request.  Returns -EIOCBQUEUED
 * when the request was handed over (its completion ends it), QIMG_RQ_SYNC
 * for the synchronous path.
 */
static int qimg_submit_aio(struct qimg_device *dev, struct qimg_cmd *cmd,
			   u64 pos, bool write)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	size_t len = iov_iter_count(&cmd->iter);
	u64 coff = qimg_cluster_offset(g, pos);
	struct qimg_l2_entry e;
	u64 host = 0, off;

	if (coff + len > (u64)QIMG_AIO_MAX_CLUSTERS * g->cluster_size)
		return QIMG_RQ_SYNC;
	cmd->io_epoch = qimg_io_enter(dev);
	for (off = pos; off < pos + len;
	     off = (off | (g->cluster_size - 1)) + 1) {
		u64 next = (off | (g->cluster_size - 1)) + 1;

		if (qimg_map_lookup(img, off, &e) ||
		    e.type != QIMG_CLUSTER_NORMAL ||
		    !qimg_sc_allocated(g, &e, qimg_cluster_offset(g, off),
				       min(next, pos + len) - off) ||
		    (write && (!e.copied ||
			       qimg_overlap_hit(dev, e.host_offset,
						g->cluster_size, 0))))
			goto sync;	/* an overlap: the sync path refuses it */
		if (off == pos)
			host = e.host_offset + coff;
		else if (e.host_offset != host + (off - pos))
			goto sync;	/* not contiguous in the file */
	}
	if (!qimg_dio_ok(img, host, &cmd->iter) ||
	    host + len > i_size_read(file_inode(img->file)))
		goto sync;

	if (qimg_aio_try(cmd, img, host, len, write, qimg_aio_complete) ==
	    -EIOCBQUEUED)
		return -EIOCBQUEUED;
sync:
	qimg_io_exit(dev, cmd->io_epoch);
	return QIMG_RQ_SYNC;
}

/* Hand an allocating write whose data is done to dev->link_work. */
static void qimg_alloc_queue_link(struct qimg_device *dev,
				  struct qimg_cmd *cmd)
{
	if (llist_add(&cmd->link_node, &dev->link_list))
		queue_work(dev->link_wq, &dev->link_work);
}

/*
 * Completion of an allocating write's data; any context.  The first
 * completion to find the list empty queues the work; the work takes the
 * whole list, so a re-queue while it runs picks up what came in late.
 */
static void qimg_alloc_aio_complete(struct kiocb *iocb, long res)
{
	struct qimg_cmd *cmd = container_of(iocb, struct qimg_cmd, iocb);

	qimg_aio_end(iocb);
	cmd->res = res;
	qimg_alloc_queue_link(cmd->rq->q->queuedata, cmd);
}

/* End a linked allocation group: its riders, then the leader. */
static void qimg_alloc_group_end(struct qimg_device *dev, struct qimg_cmd *lc,
				 int err)
{
	struct qimg_alloc *r, *tmp;

	list_for_each_entry_safe(r, tmp, &lc->alloc.riders, ride) {
		struct qimg_cmd *rc = container_of(r, struct qimg_cmd, alloc);

		/* The leader's failure gave the cluster back: data lost. */
		if (rc->res >= 0 && lc->res < 0)
			rc->res = lc->res;
		qimg_rq_done(dev, rc, rc->res < 0 ? rc->res : err);
	}
	qimg_rq_done(dev, lc, lc->res < 0 ? lc->res : err);
}

/**
 * qimg_link_work() - link the L2 entries of asynchronous allocating writes
 * @work: dev->link_work
 *
 * For the writes whose data is written (dev->link_list): one
 * dev->meta_lock section and one handle for all of them.  Each cluster is
 * linked (qimg_alloc_link()) once the data of its leader and riders is
 * all written (qimg_alloc_data_done()), then their requests end; a write
 * whose group still waits for data stays on its leader.  On
 * dev->link_wq, not dev->wq, whose workers may all be waiting for such a
 * link (qimg_inflight_wait()).
 *
 * Context: process context (workqueue), may sleep; takes dev->meta_lock,
 * and runs as an image-file writer (qimg_writer_begin()) since the handle
 * may write back.
 */
void qimg_link_work(struct work_struct *work)
{
	struct qimg_device *dev = container_of(work, struct qimg_device,
					       link_work);
	struct llist_node *list = llist_reverse_order(llist_del_all(&dev->link_list));
	struct qimg_cmd *cmd, *lc;
	struct qimg_alloc *l, *ltmp;
	struct qimg_handle h;
	unsigned int pflags, n = 0;
	LIST_HEAD(done);
	int ret, err;

	if (!list)
		return;
	pflags = qimg_writer_begin();	/* write-back may run from here */
	mutex_lock(&dev->meta_lock);
	llist_for_each_entry(cmd, list, link_node)
		n++;
	qimg_meta_start(dev, &h, n * QIMG_CREDITS_LINK);  /* error: per cmd */
	llist_for_each_entry(cmd, list, link_node) {
		if (cmd->res >= 0 && cmd->res != cmd->len)
			cmd->res = -EIO;
		l = qimg_alloc_data_done(&cmd->alloc);
		if (!l)
			continue;
		lc = container_of(l, struct qimg_cmd, alloc);
		ret = qimg_alloc_link(&h, l, min_t(long, lc->res, 0));
		if (ret && lc->res >= 0)
			lc->res = ret;
		list_add_tail(&l->ride, &done);
	}
	err = qimg_meta_stop(&h, 0);
	mutex_unlock(&dev->meta_lock);
	wake_up_all(&dev->inflight_wq);
	qimg_writer_end(pflags);
	list_for_each_entry_safe(l, ltmp, &done, ride) {
		lc = container_of(l, struct qimg_cmd, alloc);
		qimg_alloc_group_end(dev, lc, err);
	}
}

/*
 * A write inside one cluster that needs a new one (or, with extended L2
 * entries, new subclusters of its own).  The new part of the cluster goes
 * out as one asynchronous direct kiocb: the guest's data when that is all
 * it needs (a cluster never written before, whose old content reads as
 * zeros, or a whole cluster), else a buffer holding the data and the
 * copy-on-write around it (qimg_alloc_fill(), whose reads this worker
 * waits for).  The completion links the L2 entry from dev->link_wq: the
 * worker does not wait for the write, and neither does the next
 * allocating write, as it would behind ext4's inode lock with a
 * synchronous one.  A write into a fresh cluster whose allocation is in
 * flight rides on it (QIMG_ALLOC_RIDE): its data goes to the reserved
 * cluster the same way, and it ends with the link.  Returns -EIOCBQUEUED
 * when handed over, QIMG_RQ_SYNC (nothing done) for the general path, or
 * the request's result.
 */
static int qimg_submit_alloc_aio(struct qimg_device *dev,
				 struct qimg_cmd *cmd, u64 pos)
{
	struct qimg_image *img = &dev->top;
	const struct qimg_geom *g = img->g;
	struct qimg_alloc *a = &cmd->alloc;
	size_t len = iov_iter_count(&cmd->iter);
	u64 coff = qimg_cluster_offset(g, pos);
	ssize_t ret;
	u64 host;

	/* Host clusters are aligned: the offset in one says it all. */
	if (coff + len > g->cluster_size ||
	    !qimg_dio_ok(img, coff, &cmd->iter))
		return QIMG_RQ_SYNC;
	ret = qimg_alloc_begin(dev, pos, len, a, true);
	if (ret < 0)
		return ret;
	host = a->host + coff;
	if (ret == QIMG_ALLOC_OURS) {
		cmd->io_epoch = a->epoch;
		if (host + len <= i_size_read(file_inode(img->file)) &&
		    qimg_aio_try(cmd, img, host, len, true,
				 qimg_aio_complete) == -EIOCBQUEUED)
			return -EIOCBQUEUED;
		ret = qimg_write_iter_at(img, host, &cmd->iter);
		qimg_io_exit(dev, a->epoch);
		return ret;
	}
	if (ret == 0 && a->err)
		return qimg_alloc_finish(dev, a, a->err);
	if (ret == 0 && !qimg_alloc_data_only(dev, a)) {
		/* Copy-on-write: the whole new part from a buffer of ours. */
		ret = qimg_alloc_fill(dev, a, &cmd->iter, &cmd->cow);
		if (ret)
			return qimg_alloc_finish(dev, a, ret);
		qimg_buf_iter(&cmd->cow, &cmd->iter, ITER_SOURCE, 0,
			      cmd->cow.len);
		host = a->host + a->from;
		len = cmd->cow.len;
	}
	cmd->len = len;
	if (host + len > i_size_read(file_inode(img->file)) ||
	    !qimg_dio_ok(img, host, &cmd->iter))
		goto sync;

	if (qimg_aio_try(cmd, img, host, len, true, qimg_alloc_aio_complete) ==
	    -EIOCBQUEUED)
		return -EIOCBQUEUED;
sync:
	/* Riders may have joined: the link work ends the group. */
	ret = qimg_write_iter_at(img, host, &cmd->iter);
	cmd->res = ret ? ret : len;
	qimg_alloc_queue_link(dev, cmd);
	return -EIOCBQUEUED;
}

/*
 * Writes that miss the fast path (allocating ones, copy-on-write) gain
 * nothing from a drain and would pay a second hand-off there: while most
 * recent writes missed it, writes go to a worker of their own at once.
 * dev->write_slow moves by one per write between 0 and QIMG_SLOW_MAX; an
 * update lost to a race only delays the switch.
 */
#define QIMG_SLOW_MAX	64

static void qimg_note_write(struct qimg_device *dev, bool slow)
{
	int v = atomic_read(&dev->write_slow);

	if (slow ? v < QIMG_SLOW_MAX : v > 0)
		atomic_set(&dev->write_slow, v + (slow ? 1 : -1));
}

/**
 * qimg_bio_iter() - an iov_iter over a bio's own bvec array
 * @it: the iterator, set up here
 * @bio: a bio of a read or write, not a discard
 * @write: the bio writes (the iterator is a source)
 *
 * The entries of the array are multi-page bvecs: their number, not the
 * single-page segments bio_segments() counts, bounds the iterator, or an
 * advance to the end of the data reads past the array.  The first entry
 * may be partly done (bi_bvec_done): the iterator starts inside it.
 *
 * Context: any context.
 */
void qimg_bio_iter(struct iov_iter *it, struct bio *bio, bool write)
{
	struct bvec_iter bi;
	struct bio_vec bv;
	unsigned int nr = 0;

	bio_for_each_bvec(bv, bio, bi)
		nr++;
	iov_iter_bvec(it, write ? ITER_SOURCE : ITER_DEST,
		      __bvec_iter_bvec(bio->bi_io_vec, bio->bi_iter), nr,
		      bio->bi_iter.bi_size);
	it->iov_offset = bio->bi_iter.bi_bvec_done;
}

/* The data of a single-bio request: the bio's own bvec array. */
static void qimg_cmd_iter_bio(struct qimg_cmd *cmd, bool write)
{
	qimg_bio_iter(&cmd->iter, cmd->rq->bio, write);
}

/* Returns -EIOCBQUEUED when the request completes asynchronously. */
static int qimg_handle_rq(struct qimg_device *dev, struct qimg_cmd *cmd)
{
	struct request *rq = cmd->rq;
	struct req_iterator rq_iter;
	struct bio_vec tmp;
	u64 pos = (u64)blk_rq_pos(rq) << SECTOR_SHIFT;
	bool write = req_op(rq) == REQ_OP_WRITE;
	bool no_fast = cmd->no_fast;
	int ret;

	cmd->no_fast = false;
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
		qimg_cmd_iter_bio(cmd, write);
	}

	if (!(rq->cmd_flags & REQ_FUA)) {
		ret = no_fast ? QIMG_RQ_SYNC :
				qimg_submit_aio(dev, cmd, pos, write);
		if (write && !no_fast)
			qimg_note_write(dev, ret == QIMG_RQ_SYNC);
		if (ret != QIMG_RQ_SYNC)
			return ret;
		if (write) {
			ret = qimg_submit_alloc_aio(dev, cmd, pos);
			if (ret != QIMG_RQ_SYNC)
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

/*
 * The submitter's cgroups, taken in queue_rq from the request's first bio
 * as loop does: the worker issues the image-file I/O charged to them (the
 * blkcg for I/O control, the memcg for the page cache it dirties).
 */
static void qimg_cmd_cgroups(struct qimg_cmd *cmd)
{
	cmd->blkcg_css = NULL;
	cmd->memcg_css = NULL;
#ifdef CONFIG_BLK_CGROUP
	if (cmd->rq->bio)
		cmd->blkcg_css = bio_blkcg_css(cmd->rq->bio);
#ifdef CONFIG_MEMCG
	if (cmd->blkcg_css)
		cmd->memcg_css = cgroup_get_e_css(cmd->blkcg_css->cgroup,
						  &memory_cgrp_subsys);
#endif
#endif
}

/* Run as the submitter's cgroups; returns what qimg_cmd_cg_end() needs. */
static struct mem_cgroup *qimg_cmd_cg_begin(struct qimg_cmd *cmd)
{
	struct mem_cgroup *old = NULL;

	if (cmd->blkcg_css)
		kthread_associate_blkcg(cmd->blkcg_css);
#ifdef CONFIG_MEMCG
	if (cmd->memcg_css)
		old = set_active_memcg(mem_cgroup_from_css(cmd->memcg_css));
#endif
	return old;
}

/*
 * @memcg_css, @blkcg_css: copies taken before the request could end;
 * @put: drop the memcg reference (false: a worker takes the request on).
 */
static void qimg_cmd_cg_end(struct cgroup_subsys_state *blkcg_css,
			    struct cgroup_subsys_state *memcg_css,
			    struct mem_cgroup *old, bool put)
{
#ifdef CONFIG_MEMCG
	if (memcg_css) {
		set_active_memcg(old);
		if (put)
			css_put(memcg_css);
	}
#endif
	if (blkcg_css)
		kthread_associate_blkcg(NULL);
}

static void qimg_cmd_work(struct work_struct *work)
{
	struct qimg_cmd *cmd = container_of(work, struct qimg_cmd, work);
	struct qimg_device *dev = cmd->rq->q->queuedata;
	struct cgroup_subsys_state *memcg_css = cmd->memcg_css;
	struct cgroup_subsys_state *blkcg_css = cmd->blkcg_css;
	struct mem_cgroup *old_memcg;
	unsigned int pflags;
	int ret;

	pflags = qimg_writer_begin();
	old_memcg = qimg_cmd_cg_begin(cmd);
	/* Once handed off, cmd may complete (and be reused) at any time. */
	ret = qimg_handle_rq(dev, cmd);
	qimg_cmd_cg_end(blkcg_css, memcg_css, old_memcg, true);
	qimg_writer_end(pflags);
	if (ret != -EIOCBQUEUED)
		qimg_rq_done(dev, cmd, ret);
}

/*
 * Try the fast path for a request taken from a drain; false: it needs a
 * worker of its own.  Only single-bio reads and writes without FUA come
 * here (qimg_drain_ok()), so the bio's own bvec array is the data.
 */
static bool qimg_drain_one(struct qimg_device *dev, struct qimg_cmd *cmd)
{
	struct request *rq = cmd->rq;
	struct cgroup_subsys_state *memcg_css = cmd->memcg_css;
	struct cgroup_subsys_state *blkcg_css = cmd->blkcg_css;
	bool write = req_op(rq) == REQ_OP_WRITE;
	struct mem_cgroup *old;
	int ret;

	if (write && READ_ONCE(dev->read_only))
		return false;		/* the worker says -EROFS */
	qimg_cmd_iter_bio(cmd, write);
	old = qimg_cmd_cg_begin(cmd);
	/* Once handed off, cmd may complete (and be reused) at any time. */
	ret = qimg_submit_aio(dev, cmd, (u64)blk_rq_pos(rq) << SECTOR_SHIFT,
			      write);
	if (write)
		qimg_note_write(dev, ret == QIMG_RQ_SYNC);
	/* A worker taking the request on needs the memcg reference. */
	qimg_cmd_cg_end(blkcg_css, memcg_css, old, ret != QIMG_RQ_SYNC);
	return ret != QIMG_RQ_SYNC;
}

/**
 * qimg_drain_work() - submit a hardware queue's fast-path requests
 * @work: a struct qimg_drain's work
 *
 * One worker submits every request queued on the drain since it last
 * ran, each as an asynchronous kiocb when qimg_submit_aio() takes it, as
 * loop's worker does: one wake-up for many requests instead of one each.
 * A request the fast path refuses goes on to a worker of its own
 * (qimg_cmd_work()), so a slow one does not hold up the rest; a cache
 * miss of the lookup is still waited for here.
 *
 * Context: process context (dev->wq), may sleep; no lock held.  Runs as
 * an image-file writer (qimg_writer_begin()).
 */
static void qimg_drain_work(struct work_struct *work)
{
	struct qimg_drain *d = container_of(work, struct qimg_drain, work);
	struct llist_node *list = llist_reverse_order(llist_del_all(&d->list));
	struct qimg_device *dev = d->dev;
	struct qimg_cmd *cmd, *tmp;
	unsigned int pflags;

	pflags = qimg_writer_begin();
	llist_for_each_entry_safe(cmd, tmp, list, drain_node) {
		if (qimg_drain_one(dev, cmd))
			continue;
		cmd->no_fast = true;
		queue_work(dev->wq, &cmd->work);
	}
	qimg_writer_end(pflags);
}

/**
 * qimg_drain_alloc() - set up the drains of a device's hardware queues
 * @dev: the device, before its tag set exists
 * @nr: number of hardware queues
 *
 * Context: process context, may sleep.
 * Return: 0 or -ENOMEM.
 */
int qimg_drain_alloc(struct qimg_device *dev, unsigned int nr)
{
	unsigned int i;

	dev->drain = kcalloc(nr, sizeof(*dev->drain), GFP_KERNEL);
	if (!dev->drain)
		return -ENOMEM;
	for (i = 0; i < nr; i++) {
		INIT_WORK(&dev->drain[i].work, qimg_drain_work);
		init_llist_head(&dev->drain[i].list);
		dev->drain[i].dev = dev;
	}
	dev->nr_drain = nr;
	return 0;
}

/**
 * qimg_drain_free() - free the drains
 * @dev: the device, its workqueue destroyed (so no drain runs)
 *
 * Context: process context.
 */
void qimg_drain_free(struct qimg_device *dev)
{
	kfree(dev->drain);
	dev->drain = NULL;
	dev->nr_drain = 0;
}

/* A request the fast path may take: a read, or a write while they fit. */
static bool qimg_drain_ok(struct qimg_device *dev, struct request *rq)
{
	if (!rq->bio || rq->bio != rq->biotail || (rq->cmd_flags & REQ_FUA))
		return false;
	if (req_op(rq) == REQ_OP_READ)
		return true;
	return req_op(rq) == REQ_OP_WRITE &&
	       atomic_read(&dev->write_slow) < QIMG_SLOW_MAX / 2;
}

static blk_status_t qimg_queue_rq(struct blk_mq_hw_ctx *hctx,
				  const struct blk_mq_queue_data *bd)
{
	struct request *rq = bd->rq;
	struct qimg_cmd *cmd = blk_mq_rq_to_pdu(rq);
	struct qimg_device *dev = rq->q->queuedata;

	blk_mq_start_request(rq);
	qimg_cmd_cgroups(cmd);
	if (hctx->queue_num < dev->nr_drain && qimg_drain_ok(dev, rq)) {
		struct qimg_drain *d = &dev->drain[hctx->queue_num];

		if (llist_add(&cmd->drain_node, &d->list))
			queue_work(dev->wq, &d->work);
		return BLK_STS_OK;
	}
	queue_work(dev->wq, &cmd->work);
	return BLK_STS_OK;
}

static int qimg_init_request(struct blk_mq_tag_set *set, struct request *rq,
			     unsigned int hctx_idx, unsigned int numa_node)
{
	struct qimg_cmd *cmd = blk_mq_rq_to_pdu(rq);

	INIT_WORK(&cmd->work, qimg_cmd_work);
	cmd->rq = rq;
	cmd->no_fast = false;
	cmd->bvec = NULL;
	return 0;
}

const struct blk_mq_ops qimg_mq_ops = {
	.queue_rq = qimg_queue_rq,
	.init_request = qimg_init_request,
};
