/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg metadata journal, the driver side (Documentation/block/qimg-format.rst
 * section 5.1): part of the metadata layer.  qimg_meta.c records what each
 * handle changes (chunks of cached tables, L1 and refcount-table entries,
 * revokes); this file seals the running transaction into journal blocks,
 * commits it (from its workqueue, or inline when the metadata layer needs
 * everything durable), checkpoints by replaying the committed transactions
 * in place with the format core's passes, and replays a dirty journal at
 * attach.
 *
 * Locks: dev->meta_lock, then j->io_mutex (journal I/O: commit and
 * checkpoint).  Sealing copies the changed bytes into the commit buffer
 * under meta_lock, so the commit I/O of the workqueue runs with meta_lock
 * dropped while new changes go into the next transaction; nothing that
 * holds io_mutex takes meta_lock.
 */
#ifndef QIMG_JOURNAL_H
#define QIMG_JOURNAL_H

#include "qimg.h"
#include "qimg_journal_fmt.h"

#define QIMG_JOURNAL_DEFAULT_INTERVAL	5000	/* ms */
/*
 * Header bytes a transaction may carry: size .. nb_snapshots (the L1 and
 * refcount table fields; nb_snapshots only to make the length a multiple
 * of 8, always its current value).
 */
#define QIMG_JRNL_HDR_REC_OFF		24
#define QIMG_JRNL_HDR_REC_LEN		40

struct qimg_jrevoke {
	struct list_head node;
	u64 host;
	u64 len;
};

struct qimg_journal {
	struct qimg_device *dev;
	struct qimg_jrnl_geom geom;
	u32 block_bits;
	u32 max_tx;			/* blocks of one transaction */
	u32 chunk_shift;		/* log2 of a table chunk's bytes */

	/* Ring state, under io_mutex. */
	struct mutex io_mutex;
	struct qimg_jrnl_hdr hdr;	/* last header written */
	u32 head;			/* where the next transaction starts */
	u64 next_seq;
	u64 ntx;			/* committed, not checkpointed */
	u64 ckpt_seq;			/* everything up to here is in place */
	void *buf;			/* max_tx blocks: the transaction */
	void *work;			/* checkpoint scratch */

	/* The running transaction, under dev->meta_lock. */
	bool running;			/* it holds changes */
	u64 running_bytes;		/* estimate of its record bytes */
	/*
	 * It links a data cluster whose data must be durable before its
	 * commit block can be (see qimg_journal_data_linked()).
	 */
	bool order_data;
	struct xarray l1_set;		/* L1 indices changed */
	struct xarray rt_set;		/* refcount-table indices changed */
	/*
	 * Refcounts that went down: refcount entry (its bit position in the
	 * file >> refcount_order) -> its value before the transaction, for
	 * a transaction committed as several (qimg_jtx_drops()).
	 */
	struct xarray drops;
	struct list_head revokes;	/* struct qimg_jrevoke */
	/*
	 * The header's size, L1 or refcount table fields (bytes
	 * QIMG_JRNL_HDR_REC_OFF.. of the image) changed: one write record
	 * of them, the last but for qimg_jtx_drops()' blocks, encoded when
	 * the change is made.
	 */
	bool hdr_changed;
	u8 hdr_rec[QIMG_JRNL_HDR_REC_LEN];
	struct xarray targets;		/* clusters journaled since checkpoint */
	bool targets_lost;		/* a target could not be recorded */
	u64 committed_seq;		/* last seq whose commit is durable */
	u64 durable_tid;		/* last dev->meta_tid committed */
	u64 cleaned_seq;		/* ckpt_seq of the last clean pass */

	/* Commit requests (group commit). */
	spinlock_t lock;		/* sealed, done, err */
	u64 sealed;			/* transactions sealed */
	u64 done;			/* of which committed (or failed) */
	int err;
	wait_queue_head_t wait;
	struct workqueue_struct *wq;
	struct delayed_work commit_work;
	struct work_struct ckpt_work;
	unsigned int interval_ms;

	/* Statistics, for sysfs. */
	atomic64_t st_commits;
	atomic64_t st_blocks;
	atomic64_t st_barriers;
	atomic64_t st_flushes;
	atomic64_t st_checkpoints;
	atomic64_t st_single_sync;	/* commits with one barrier */
	u64 st_replayed;		/* transactions replayed at attach */
	/* Device syncs started, and the last started one that completed. */
	atomic64_t sync_started;
	atomic64_t sync_done;
	/* The image file is this large at least after a crash. */
	atomic64_t synced_size;
};

/**
 * qimg_journal_fill() - ring blocks a checkpoint would give back
 * @j: the journal
 *
 * The ring is blocks QIMG_JRNL_RING_START.. of the area.  With the head
 * wrapped, the unused blocks at the ring's end count too (no transaction
 * can go there before the tail passes them).  0 <= fill <= ring blocks.
 *
 * Context: any; a snapshot unless j->io_mutex is held.
 * Return: the number of ring blocks in use.
 */
static inline u32 qimg_journal_fill(const struct qimg_journal *j)
{
	u32 head = READ_ONCE(j->head), tail = READ_ONCE(j->hdr.tail_block);

	if (!READ_ONCE(j->ntx))
		return 0;
	return head >= tail ? head - tail :
	       j->hdr.nblocks - tail + head - QIMG_JRNL_RING_START;
}

static inline struct qimg_journal *qimg_journal_of(struct qimg_device *dev)
{
	return dev->journal;
}

int qimg_journal_replay(struct qimg_device *dev);
int qimg_journal_start(struct qimg_device *dev, u64 off, u64 size, bool fresh);
int qimg_journal_stop(struct qimg_device *dev, u64 *area, u64 *size);
void qimg_journal_destroy(struct qimg_journal *j);
int qimg_journal_flush(struct qimg_device *dev);
int qimg_journal_commit(struct qimg_device *dev, bool unlock);
int qimg_journal_sync_all(struct qimg_device *dev);
void qimg_journal_kick(struct qimg_device *dev);
void qimg_journal_table_changed(struct qimg_device *dev,
				struct qimg_centry *e, u64 off, u64 len);
void qimg_journal_entry_changed(struct qimg_device *dev, bool l1, u64 idx);
void qimg_journal_header_changed(struct qimg_device *dev);
int qimg_journal_refcount_dropped(struct qimg_device *dev, u64 rb_off,
				  u64 idx, u64 old);
void qimg_journal_revoke(struct qimg_device *dev, u64 host, u64 len);
void qimg_journal_data_linked(struct qimg_device *dev, u64 host, bool hole);
bool qimg_journal_owns(struct qimg_device *dev, u64 off);
u64 qimg_journal_durable_tid(struct qimg_device *dev);

#if IS_ENABLED(CONFIG_QIMG_KUNIT_DRIVER)
/*
 * KUnit only: the next journal write whose name starts with this string
 * fails with -EIO: "journal records" (a commit's descriptor and data
 * blocks), "journal commit" (its commit block), "journal bits" (the
 * header's feature bits), "journal extension" (the header extension),
 * "journal backing name" (the header's pointer to the moved name).
 */
extern const char *qimg_journal_fail_next;
/* KUnit only: called by every commit before it writes its records. */
extern void (*qimg_journal_write_hook)(struct qimg_device *dev);
#endif

#endif /* QIMG_JOURNAL_H */
