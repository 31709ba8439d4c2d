/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg driver internals.
 *
 * Lock order (outermost first); see qimg_main.c for the details:
 *   qimg_ctl_mutex          global: device idr, attach/detach/info
 *   dev->open_mutex         open count, autoclear
 *   dev->meta_lock          every metadata mutation, allocation, write-back
 *   cache->load_mutex       one cache miss at a time per cache
 *   cache->lock (spinlock)  hash + LRU of one cache; never held across I/O
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
#include <linux/xarray.h>

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
 * One allocating write between its reservation (qimg_alloc_begin) and the
 * linking of its L2 entry (qimg_alloc_finish); the data I/O in between
 * runs without dev->meta_lock, synchronously or as a kiocb.
 */
struct qimg_alloc {
	struct qimg_inflight fl;
	struct qimg_l2_entry e;		/* the entry being replaced */
	struct qimg_centry *t;		/* its L2 table, referenced */
	u64 guest;
	u64 host;			/* the reserved cluster */
	int err;			/* the reservation's write-back failed */
	int epoch;			/* qimg_alloc_begin() returned 1 */
	bool reuse;			/* host was the entry's own cluster */
	bool fresh;			/* host never written: reads zeros */
};

/* One cached L2 table or refcount block. */
struct qimg_centry {
	struct hlist_node hnode;
	struct list_head lru;
	struct list_head dnode;	/* on cache->dirty while dirty */
	u64 offset;		/* host offset of the cluster it caches */
	void *data;		/* cluster_size bytes, on-disk format */
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
	atomic64_t alloc_end;		/* end of allocated host space */
	/*
	 * Top image, under dev->meta_lock: host space at or past
	 * max(hole_start, alloc_end) was never written since the attach and
	 * reads as zeros (0: not known yet).  no_prealloc: growing the file
	 * ahead failed once; not tried again.
	 */
	u64 hole_start;
	bool no_prealloc;
	struct qimg_image *backing;
};

struct qimg_device {
	int index;
	u32 flags;			/* QIMG_ATTACH_* as given */
	bool read_only;
	unsigned long state;		/* QIMG_STATE_* bits */
	unsigned int nr_backing;
	u64 l2_bytes;			/* cache sizes asked for */
	u64 rc_bytes;
	struct qimg_image top;

	/* Refcount structures of the top image (the only one written). */
	struct qimg_cache rc;
	__be64 *reftable;
	u64 reftable_entries;
	u64 rt_dirty_lo, rt_dirty_hi;
	u64 free_hint;			/* cluster index to start searching */
	struct qimg_overlap ol;		/* metadata a write must not hit */
	struct list_head pending_frees;	/* struct qimg_pending_free */
	struct mutex meta_lock;		/* metadata mutation, allocation */
	unsigned int meta_depth;	/* open qimg_meta_begin groups */
	spinlock_t inflight_lock;	/* inflight list */
	struct list_head inflight;	/* struct qimg_inflight */
	wait_queue_head_t inflight_wq;	/* an inflight entry went away */

	/*
	 * Data I/O aimed at a host cluster found by a lookup of the top
	 * image, counted per epoch (qimg_io_enter/exit), so that a freed
	 * cluster's refcount drops only after every such I/O that may still
	 * target it has finished (qimg_io_drain): a write racing with a
	 * discard must never land in the cluster's next owner.
	 */
	atomic_t io_count[2];
	unsigned int io_epoch;		/* written under meta_lock */
	wait_queue_head_t io_wq;	/* an epoch's count reached zero */

	struct gendisk *disk;
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

	struct mutex open_mutex;	/* open_count, detaching */
	int open_count;
	bool detaching;
	struct work_struct autoclear_work;
	struct list_head node;
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

/* Per-request context (blk-mq PDU). */
struct qimg_cmd {
	struct work_struct work;
	struct request *rq;
	struct iov_iter iter;	/* the request's data */
	struct bio_vec *bvec;	/* kmalloc'ed bvec array of a multi-bio rq */
	struct kiocb iocb;	/* asynchronous direct I/O */
	size_t len;		/* bytes submitted asynchronously */
	int io_epoch;		/* qimg_io_enter() of the asynchronous I/O */
	long res;		/* result of an asynchronous allocating write */
	struct llist_node link_node;	/* on dev->link_list */
	struct qimg_alloc alloc;
};

/* qimg_main.c */
extern struct mutex qimg_ctl_mutex;
int qimg_attach(const struct qimg_attach *a);
int qimg_detach(int index);
int qimg_get_info(struct qimg_info *info);
void qimg_mark_corrupt(struct qimg_device *dev, const char *fmt, ...)
	__printf(2, 3);

/* qimg_ioctl.c */
long qimg_ctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg);

/* qimg_io.c */
extern const struct blk_mq_ops qimg_mq_ops;
void qimg_link_work(struct work_struct *work);
int qimg_kread(struct file *file, void *buf, size_t len, u64 pos);
int qimg_kwrite(struct file *file, const void *buf, size_t len, u64 pos);
int qimg_read_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it);
int qimg_write_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it);
int qimg_read_guest(struct qimg_image *img, u64 off, struct iov_iter *it);
int qimg_read_guest_buf(struct qimg_image *img, u64 off, void *buf,
			size_t len);
int qimg_decompress(struct qimg_image *img, const struct qimg_l2_entry *e,
		    void *out);
int qimg_flush(struct qimg_device *dev);

/* qimg_map.c */
int qimg_map_lookup(struct qimg_image *img, u64 guest,
		    struct qimg_l2_entry *e);
int qimg_map_write(struct qimg_device *dev, u64 guest, struct iov_iter *it);
int qimg_alloc_begin(struct qimg_device *dev, u64 guest, struct qimg_alloc *a);
bool qimg_alloc_data_only(struct qimg_device *dev, const struct qimg_alloc *a,
			  size_t len);
int qimg_alloc_write(struct qimg_device *dev, struct qimg_alloc *a,
		     struct iov_iter *it);
void qimg_alloc_link(struct qimg_device *dev, struct qimg_alloc *a, int ret);
int qimg_alloc_finish(struct qimg_device *dev, struct qimg_alloc *a, int ret);
int qimg_map_zero_cluster(struct qimg_device *dev, u64 cstart, bool unmap);
u64 qimg_image_end(struct qimg_image *img);
void qimg_inflight_wait(struct qimg_device *dev, u64 cluster);
int qimg_io_enter(struct qimg_device *dev);
void qimg_io_exit(struct qimg_device *dev, int epoch);
void qimg_io_drain(struct qimg_device *dev);

/* qimg_cache.c */
void qimg_slabs_exit(void);
int qimg_cache_init(struct qimg_cache *c, struct qimg_image *img,
		    const char *name, u64 bytes);
void qimg_cache_destroy(struct qimg_cache *c);
int qimg_cache_get(struct qimg_cache *c, u64 offset, bool fresh,
		   struct qimg_centry **out);
void qimg_cache_put(struct qimg_cache *c, struct qimg_centry *e);
u64 qimg_cache_bytes(const struct qimg_cache *c);
bool qimg_cache_has_dirty(struct qimg_cache *c, u64 offset);

/*
 * Metadata mutations.  Every change to an L1/L2 entry, a refcount, the
 * refcount table or the header goes through these, between begin and end,
 * with dev->meta_lock held.  A group is what a future journal would commit
 * atomically; today end() only enforces the cache limits, writing back in
 * dependency order when dirty entries crowd a cache.
 */
void qimg_meta_begin(struct qimg_device *dev);
void qimg_meta_record_l1(struct qimg_device *dev, u32 idx, u64 val);
void qimg_meta_record_l2(struct qimg_device *dev, struct qimg_centry *e,
			 u64 idx, u64 val);
int qimg_meta_record_refcount(struct qimg_device *dev, struct qimg_centry *e,
			      u64 idx, u64 val);
void qimg_meta_record_reftable(struct qimg_device *dev, u64 idx, u64 val);
int qimg_meta_end(struct qimg_device *dev);
int qimg_meta_writeback(struct qimg_device *dev);
int qimg_meta_sync_failed(struct qimg_device *dev, int err);
int qimg_meta_header_write(struct qimg_device *dev, u32 off, u64 val);

/* qimg_refcount.c */
int qimg_refcount_get_host(struct qimg_device *dev, u64 host, u64 *val);
int qimg_alloc_clusters(struct qimg_device *dev, u64 *host);
void qimg_defer_free(struct qimg_device *dev, u64 host, u64 len);
int qimg_apply_frees(struct qimg_device *dev);
void qimg_drop_frees(struct qimg_device *dev);

/* qimg_overlap.c */
int qimg_overlap_init(struct qimg_device *dev);
void qimg_overlap_destroy(struct qimg_device *dev);
int qimg_overlap_add(struct qimg_device *dev, u64 off, u32 kind);
void qimg_overlap_drop_l2(struct qimg_device *dev, u64 off, u32 l1i);
void qimg_overlap_set_reftable(struct qimg_device *dev, u64 off, u64 len);
u32 qimg_overlap_hit(struct qimg_device *dev, u64 off, u64 len, u32 ign);
int qimg_overlap_check(struct qimg_device *dev, u64 off, u64 len, u32 ign,
		       const char *what);
int qimg_overlap_check_new(struct qimg_device *dev, u64 off, u32 ign,
			   const char *what);

/* qimg_sysfs.c */
extern const struct attribute_group *qimg_disk_groups[];

#endif /* QIMG_H */
