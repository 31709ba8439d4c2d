/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg driver internals: the types every layer shares.  Each layer
 * declares its functions in its own header, bottom up:
 *
 *   qimg_fmt.h       on-disk format core, no I/O (shared with userspace)
 *   qimg_qed.h       the QED format core, no I/O (shared with userspace)
 *   qimg_journal_fmt.h  the metadata journal's format core and recovery
 *                    passes, no I/O (shared with userspace)
 *   qimg_file.h      backing-file I/O, decompression, SRCU I/O sections
 *   qimg_cache.h     L2 / refcount-block cache
 *   qimg_meta.h      metadata transactions (handles), ordered write-back,
 *                    failure state
 *   qimg_journal.h   the metadata journal: commit, checkpoint, replay at
 *                    attach (same layer as qimg_meta.h)
 *   qimg_refcount.h  refcounts, allocation, deferred frees
 *   qimg_map.h       guest -> host mapping, allocation, COW, guest reads
 *   qimg_rq.h        blk-mq requests, flush
 *   qimg_dev.h       attach / detach / info, the gendisk, sysfs
 *   (qimg_ioctl.c)   control device and module init, on top
 *
 * A file includes only its own layer's header and those below.  A lower
 * layer reaches up only through a callback it was given
 * (struct qimg_meta_ops, the attach report callback).
 *
 * Lock order, the one table (outermost first; a lock may be taken while
 * holding only those above it):
 *   qimg_ctl_mutex          device idr, reservation and publication of a
 *                           device; never held across image-file I/O
 *   dev->open_mutex         open count, the detaching and resizing flags
 *   dev->meta_lock          metadata changes, allocation, write-back (held
 *                           across metadata I/O, never by the read path or
 *                           by writes to clusters already owned)
 *   journal->io_mutex       journal I/O: commit and checkpoint; the
 *                           workqueue's commit holds it, not meta_lock,
 *                           across its I/O; never takes meta_lock
 *   journal->lock           (spinlock) sealed/done counters, error
 *   cache->load_mutex       one miss at a time per cache
 *   qimg_slab_mutex         creation of the shared table slabs
 *   cache->lock (spinlock)  hash, LRU and dirty list of one cache
 *   dev->inflight_lock      (spinlock) the in-flight allocation list
 * Not locks, but ordered the same way: dev->io_srcu read sections are
 * entered with none of the above held or with meta_lock not held
 * (qimg_io_drain() waits for them under meta_lock, and no section takes
 * meta_lock); dev->inflight_wq is waited on with meta_lock dropped;
 * dev->corrupt_work takes meta_lock, so it is flushed (qimg_meta_quiesce)
 * with none of our locks held.  Metadata handles (qimg_meta.h) live
 * inside meta_lock sections and never span an unlock.
 * No lock of ours is held across del_gendisk() or add_disk().
 */
#ifndef QIMG_H
#define QIMG_H

#include <linux/types.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/llist.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/blk-mq.h>
#include <linux/uio.h>
#include <linux/sizes.h>
#include <linux/srcu.h>
#include <linux/xarray.h>
#include <linux/rbtree.h>
#include <linux/seqlock.h>

#include <linux/qimg.h>

#include "qimg_fmt.h"
#include "qimg_compat.h"

#define QIMG_DEFAULT_L2_CACHE		SZ_1M	/* bytes */
#define QIMG_DEFAULT_RC_CACHE		SZ_256K
#define QIMG_MIN_CACHE_ENTRIES		4
#define QIMG_MAX_CACHE_BYTES		((u64)SZ_1G)
#define QIMG_MINORS			16

#define QIMG_STATE_CORRUPT		0	/* corruption found, now read-only */
#define QIMG_STATE_WB_FAILED		1	/* metadata write-back failed: read-only */

struct qimg_image;
struct qimg_meta_ops;
struct qimg_journal;
struct qimg_sysfs;

/*
 * A cluster allocation whose data I/O runs without dev->meta_lock: the
 * host cluster is reserved (refcount 1) but no L2 entry points at it yet.
 * Other writers of the same guest cluster wait for it to be linked.
 */
struct qimg_inflight {
	struct list_head node;
	u64 cluster;			/* guest offset of the cluster */
};

/*
 * A kernel buffer that direct I/O can use (qimg_buf_alloc()): its pages
 * as a bvec array.
 */
struct qimg_buf {
	void *data;
	struct bio_vec *bv;
	unsigned int nr;	/* entries of bv */
	size_t len;
};

/*
 * One allocating write between its reservation (qimg_alloc_begin) and the
 * linking of its L2 entry (qimg_alloc_finish); the data I/O in between
 * runs without dev->meta_lock, synchronously or as a kiocb.
 */
struct qimg_alloc {
	struct qimg_inflight fl;
	struct qimg_l2_entry e;		/* the entry being replaced */
	struct qimg_centry *t;		/* its L2 table, referenced */
	u64 guest;
	u32 len;			/* bytes the guest writes at guest */
	u32 from, to;			/* the part of the cluster written */
	u64 host;			/* the reserved cluster */
	int err;			/* the reservation's write-back failed */
	int epoch;			/* qimg_alloc_begin() returned 1 */
	bool reuse;			/* host was the entry's own cluster */
	bool fresh;			/* host never written: reads zeros */
	bool pad;			/* zeros around [from, to) of ext L2 */
	/*
	 * Riders (qimg_alloc_begin() with @ride): other writes into a fresh
	 * cluster whose allocation is in flight write their data there too
	 * instead of waiting for the link, and the link waits for them.
	 * Under dev->meta_lock.
	 */
	bool joinable;			/* leader: riders may join */
	unsigned int pending;		/* leader: data writes not done */
	unsigned int nr_riders;		/* leader: riders joined */
	struct qimg_alloc *leader;	/* rider: the allocation it rides */
	struct list_head riders;	/* leader: its riders, by ride */
	struct list_head ride;		/* rider: on leader->riders */
};

/* One cached L2 table or refcount block. */
struct qimg_centry {
	struct hlist_node hnode;
	struct list_head lru;
	struct list_head dnode;	/* on cache->dirty while dirty */
	u64 offset;		/* host offset of the cluster it caches */
	void *data;		/* cluster_size bytes, on-disk format */
	u64 tid;		/* transaction it last joined (meta_lock) */
	u64 jmask;		/* journal: chunks changed, not yet sealed */
	u64 jseq;		/* journal: last transaction that logged it */
	int ref;		/* users; protected by cache->lock */
	bool dirty;		/* differs from disk; never evicted */
	bool from_slab;
};

struct qimg_cache {
	const char *name;
	struct qimg_image *img;
	spinlock_t lock;		/* buckets, lru, dirty, nr, refs */
	struct mutex load_mutex;	/* one miss at a time */
	struct hlist_head *buckets;
	unsigned int bucket_bits;
	struct list_head lru;	/* most recently used first */
	struct list_head dirty;
	unsigned int nr;
	unsigned int max;
	unsigned int nr_dirty;
	size_t entry_size;
	struct kmem_cache *slab;	/* NULL: kvmalloc */
	atomic64_t hits;
	atomic64_t misses;
};

/*
 * Metadata overlap check of the top image (qimg_overlap.c); only on a
 * read-write attach (ready).
 */
struct qimg_overlap {
	struct qimg_ol_fixed fixed;	/* read locklessly */
	struct xarray clusters;		/* host cluster -> QIMG_OL_* kinds */
	bool ready;
};

/* An image of the chain: the attached one or one of its backing files. */
struct qimg_image {
	struct qimg_device *dev;
	struct file *file;
	char *path;			/* for sysfs / GET_INFO, may be NULL */
	bool raw;
	bool dio;			/* data I/O uses IOCB_DIRECT */
	unsigned int dio_align;		/* alignment O_DIRECT needs */
	u64 virtual_size;
	struct qimg_header *h;		/* qcow2 only */
	const struct qimg_geom *g;	/* &h->geom */
	__be64 *l1;			/* whole L1 table, on-disk format */
	u32 l1_entries;
	u32 l1_dirty_lo, l1_dirty_hi;	/* dirty entry range [lo, hi) */
	struct qimg_cache l2;
	/*
	 * Extended L2 entries are two words (entry, subcluster bitmap):
	 * changed under dev->meta_lock inside a write section, read
	 * locklessly in a retry loop (qimg_map.c).
	 */
	seqcount_t l2x_seq;
	atomic64_t alloc_end;		/* end of allocated host space */
	/*
	 * Top image, under dev->meta_lock: host space at or past
	 * max(hole_start, alloc_end) was never written since the attach and
	 * reads as zeros (0: not known yet).  no_prealloc: growing the file
	 * ahead failed once; not tried again.
	 */
	u64 hole_start;
	bool no_prealloc;
	/*
	 * Top image, writing zeros ahead (qimg_map.c, "Flush-heavy
	 * writers"): zeroed_end under dev->meta_lock; the flush statistics
	 * are read and written without a lock (a heuristic only).
	 */
	u64 zeroed_end;			/* written with zeros up to here */
	bool no_prezero;		/* zeroing failed once: not again */
	bool prezero_wanted;		/* the last flushes allocated little */
	u64 flush_alloc_end;		/* alloc_end at the last flush */
	unsigned long flush_jiffies;	/* when that was */
	struct qimg_image *backing;
};

struct qimg_device {
	int index;
	u32 flags;			/* QIMG_ATTACH_* as given */
	bool writable;			/* attached read-write */
	bool read_only;			/* refuses writes (now) */
	bool attaching;			/* reserved, not yet published */
	unsigned long state;		/* QIMG_STATE_* bits */
	unsigned int nr_backing;
	u64 l2_bytes;			/* cache sizes asked for */
	u64 rc_bytes;
	bool prezero;			/* zeros ahead allowed (sysfs) */
	atomic64_t prezero_bytes;	/* zeros written ahead */
	atomic64_t alloc_riders;	/* writes that rode an allocation */
	struct qimg_image top;

	/* Refcount structures of the top image (the only one written). */
	struct qimg_cache rc;
	__be64 *reftable;
	u64 reftable_entries;
	u64 rt_dirty_lo, rt_dirty_hi;
	u64 free_hint;			/* cluster index to start searching */
	struct qimg_overlap ol;		/* metadata a write must not hit */
	struct list_head pending_frees;	/* struct qimg_pending_free */
	/* Frees whose replacing references are durable (or sealed). */
	struct list_head ready_frees;
	/*
	 * With the journal: clusters freed in a transaction not yet durable
	 * (struct qimg_quar, by start in quar_tree and by transaction in
	 * quar_list), never handed out before it is; and data clusters
	 * reserved by allocating writes whose L2 entry is not set yet (by
	 * cluster index), which a commit logs as still free.
	 */
	struct rb_root quar_tree;
	struct list_head quar_list;
	struct xarray unlinked;
	struct qimg_journal *journal;	/* NULL: ordered write-back */
	u64 jrnl_replayed;		/* transactions replayed at attach */
	const struct qimg_meta_ops *meta_ops;	/* hooks of the layers above */
	struct mutex meta_lock;		/* metadata mutation, allocation */
	/* The running transaction (qimg_meta.h), under meta_lock. */
	u64 meta_tid;
	unsigned int meta_depth;	/* open handles */
	unsigned int meta_reserved;	/* credits of the open handles */
	bool meta_wb_running;		/* inside qimg_meta_writeback() */
	struct work_struct corrupt_work;	/* sets the corrupt bit */
	spinlock_t inflight_lock;	/* inflight list */
	struct list_head inflight;	/* struct qimg_inflight */
	wait_queue_head_t inflight_wq;	/* an inflight entry went away */

	/*
	 * Data I/O aimed at a host cluster found by a lookup of the top
	 * image is an SRCU read section (qimg_io_enter/exit), so that a
	 * freed cluster's refcount drops only after every such I/O that may
	 * still target it has finished (qimg_io_drain): a write racing with
	 * a discard must never land in the cluster's next owner.
	 */
	struct srcu_struct io_srcu;
	bool io_srcu_ready;		/* init_srcu_struct() done */

	struct gendisk *disk;
	struct qimg_sysfs *sysfs;	/* qimg/ below the disk, or NULL */
	struct blk_mq_tag_set tag_set;
	struct workqueue_struct *wq;
	/*
	 * Links the L2 entries of asynchronous allocating writes whose data
	 * is written (link_list), all of them in one dev->meta_lock section.
	 * Not on dev->wq: its workers may all be waiting for such a link
	 * (qimg_inflight_wait), and linking never waits for a request.
	 */
	struct workqueue_struct *link_wq;
	struct work_struct link_work;
	struct llist_head link_list;	/* struct qimg_cmd, by link_node */
	/*
	 * Fast-path requests, one list per hardware queue, each drained by
	 * one work item on dev->wq (see qimg_drain_work()); write_slow
	 * counts recent writes that missed the fast path.
	 */
	struct qimg_drain *drain;
	unsigned int nr_drain;
	atomic_t write_slow;

	struct mutex open_mutex;	/* open_count, detaching, resizing */
	int open_count;
	bool detaching;
	bool resizing;			/* a resize runs: no detach */
	bool autoclear_missed;		/* the last close came during it */
	struct work_struct autoclear_work;
	struct list_head node;
};

/* A hardware queue's fast-path requests, submitted by one work item. */
struct qimg_drain {
	struct work_struct work;
	struct llist_head list;		/* struct qimg_cmd, by drain_node */
	struct qimg_device *dev;
};

/*
 * A host range whose refcount drops by one once the references that
 * replaced it are durable (see the crash model in qimg_cache.c).
 */
struct qimg_pending_free {
	struct list_head node;
	u64 host;
	u64 len;
};

/*
 * Clusters [start, end) (host bytes) freed by transaction @tid while the
 * journal is on; reusable once that transaction is durable and no data
 * I/O that looked them up is in flight (qimg_refcount.c).
 */
struct qimg_quar {
	struct rb_node rb;
	struct list_head node;
	u64 start;
	u64 end;
	u64 tid;
};

/* Per-request context (blk-mq PDU). */
struct qimg_cmd {
	struct work_struct work;
	struct request *rq;
	struct iov_iter iter;	/* the request's data */
	struct bio_vec *bvec;	/* kmalloc'ed bvec array of a multi-bio rq */
	struct qimg_buf cow;	/* an allocating write's whole new data */
	struct kiocb iocb;	/* asynchronous direct I/O */
	struct cgroup_subsys_state *blkcg_css;	/* the submitter's, or NULL */
	struct cgroup_subsys_state *memcg_css;	/* referenced, or NULL */
	size_t len;		/* bytes submitted asynchronously */
	int io_epoch;		/* qimg_io_enter() of the asynchronous I/O */
	long res;		/* result of an asynchronous allocating write */
	struct llist_node link_node;	/* on dev->link_list */
	struct llist_node drain_node;	/* on a struct qimg_drain's list */
	bool no_fast;		/* its drain found no fast path */
	struct qimg_alloc alloc;
};

/**
 * qimg_atomic64_max() - raise @a to @val unless it is larger already
 * @a: the counter
 * @val: the new value
 *
 * Context: any context, lockless.
 */
static inline void qimg_atomic64_max(atomic64_t *a, s64 val)
{
	s64 cur = atomic64_read(a);

	while (cur < val && !atomic64_try_cmpxchg(a, &cur, val))
		;
}

#endif /* QIMG_H */
