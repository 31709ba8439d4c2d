/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg metadata journal, format core: on-disk structures, encoders for the
 * writer and the recovery passes (scan, revoke, replay) shared by the
 * kernel module, qimgctl, KUnit and the userspace tests, as fs/jbd2's
 * recovery code serves both ext4 and e2fsck.
 *
 * No I/O of its own and no allocation: the caller hands in a block reader
 * (journal area) and a writer (replay targets, image file), and buffers
 * sized by the functions below.  Everything read through the reader is
 * untrusted.  Documentation/block/qimg-format.rst section 5.1 is the
 * specification; the comments here only point at it.
 */
#ifndef QIMG_JOURNAL_FMT_H
#define QIMG_JOURNAL_FMT_H

#include "qimg_fmt.h"

/* ------------------------------------------------------------------------ */
/* Constants                                                                */

#define QIMG_JRNL_MAGIC			0x71696d676a726e6cULL	/* "qimgjrnl" */
#define QIMG_JRNL_VERSION		1
#define QIMG_JRNL_DESC_MAGIC		0x716a6473U	/* "qjds" */
#define QIMG_JRNL_COMMIT_MAGIC		0x716a636dU	/* "qjcm" */

#define QIMG_JRNL_MIN_BLOCK_BITS	9
#define QIMG_JRNL_DEFAULT_BLOCK_BITS	12
/* Blocks 0 and 1 hold the header copies; the ring starts at block 2. */
#define QIMG_JRNL_RING_START		2
/* Two header blocks and room for one descriptor + commit transaction. */
#define QIMG_JRNL_MIN_BLOCKS		4
/*
 * What a writer makes (create, attach): room in the ring for transactions
 * of a descriptor, data and a commit block, and for a next one while the
 * checkpoint has not moved the tail yet.
 */
#define QIMG_JRNL_MIN_WRITE_BLOCKS	8
/* Sequence numbers stay far from wrapping (2^62 commits). */
#define QIMG_JRNL_MAX_SEQ		BIT_ULL(62)
/* Bytes of a header copy the reader needs at a time (it streams the rest). */
#define QIMG_JRNL_HDR_CHUNK		512

#define QIMG_JRNL_REC_PAD		0
#define QIMG_JRNL_REC_WRITE		1
#define QIMG_JRNL_REC_REVOKE		2

/* ------------------------------------------------------------------------ */
/* On-disk structures (big-endian; sizes checked in qimg_journal_fmt.c)    */

/* Blocks 0 and 1; the rest of the block is zero. */
struct qimg_disk_jrnl_header {
	__be64 magic;
	__be32 version;
	__be32 block_bits;
	__be64 size;
	__be64 generation;
	__be64 synced_seq;
	__be32 tail_block;
	__be32 crc;
} __packed;

/* Common 32-byte head of descriptor and commit blocks. */
struct qimg_disk_jrnl_block {
	__be32 magic;
	__be32 crc;
	__be64 seq;
	__be32 count;		/* desc: records; commit: blocks before it */
	__be32 blocks;		/* desc: data blocks; commit: next start */
	__be32 tx_crc;		/* commit: CRC-32C of the transaction */
	__be32 reserved;
} __packed;

struct qimg_disk_jrnl_write {
	__be16 type;
	__be16 flags;
	__be32 len;
	__be64 target;
	__be32 data_off;
	__be32 data_crc;
} __packed;

struct qimg_disk_jrnl_revoke {
	__be16 type;
	__be16 flags;
	__be32 len;
	__be64 target;
} __packed;

/* ------------------------------------------------------------------------ */
/* CRC-32C                                                                  */

/*
 * CRC-32C (Castagnoli) with the usual pre- and post-inversion, chainable
 * like zlib's crc32(): start with 0, pass the previous result to continue.
 * qimg_crc32c(0, "123456789", 9) == 0xe3069283.  A table implementation
 * of our own, so the module needs no libcrc32c and userspace no library.
 */
u32 qimg_crc32c(u32 crc, const void *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* Decoded structures                                                       */

/*
 * Where the journal lives and what replay may touch, from the validated
 * qcow2 header (journal extension) and the image file.
 */
struct qimg_jrnl_geom {
	u32 cluster_bits;
	u64 area_offset;	/* host offset of the journal area */
	u64 area_size;		/* its size in bytes */
	u64 file_size;		/* write targets must lie below this */
};

struct qimg_jrnl_hdr {
	u32 block_bits;
	u64 size;
	u64 generation;
	u64 synced_seq;
	u32 tail_block;
	u32 nblocks;		/* size >> block_bits */
	int copy;		/* 0 or 1: the copy it was read from */
};

/*
 * Callbacks.  read: @len bytes at byte @pos of the journal area (@pos and
 * @len are multiples of 512, inside the area).  write: @len bytes to host
 * offset @host of the image (replay only).  Both return 0 or a negative
 * errno, which the passes return unchanged.
 */
struct qimg_jrnl_io {
	int (*read)(void *ctx, u64 pos, void *buf, u32 len);
	int (*write)(void *ctx, u64 host, const void *buf, u32 len);
	void *ctx;
};

/* Result of the scan pass. */
struct qimg_jrnl_scan {
	struct qimg_jrnl_hdr hdr;
	u64 ntx;		/* complete transactions to replay */
	u64 first_seq;		/* synced_seq + 1 */
	u64 last_seq;		/* of the last complete one; synced_seq if none */
	u64 nwrites;		/* write records in them */
	u64 nrevokes;		/* revoke records: size of the revoke table */
	u64 used_blocks;	/* ring blocks they occupy, gaps included */
	u32 end_block;		/* where the scan stopped */
	/*
	 * A partial transaction follows the last complete one (torn write
	 * or missing commit): not an error, but worth reporting.
	 */
	bool torn;
	/*
	 * The sequence number the next transaction must use once the
	 * journal is replayed and checkpointed: last_seq + 2, so a torn
	 * transaction's number is never reused.
	 */
	u64 next_seq;
};

/* One entry of the revoke table built by the revoke pass. */
struct qimg_jrnl_revoke {
	u64 off;
	u64 len;
	u64 seq;		/* of the transaction that revoked it */
	u64 reach;		/* max(off + len) of this and earlier entries */
};

/* A record for the descriptor encoder. */
struct qimg_jrnl_rec {
	u16 type;		/* QIMG_JRNL_REC_WRITE or _REVOKE */
	u32 len;
	u64 target;
	const void *data;	/* write: @len bytes */
};

/* ------------------------------------------------------------------------ */
/* Encoders (the writer: create, commit, checkpoint)                        */

/* Journal size of an image that asks for a journal without a size. */
#define QIMG_JRNL_DEFAULT_SIZE		(4ULL << 20)

/*
 * Journal block size for an image with @cluster_bits: 4 KiB, or the
 * cluster when clusters are smaller.
 */
static inline u32 qimg_jrnl_block_bits(u32 cluster_bits)
{
	return cluster_bits < QIMG_JRNL_DEFAULT_BLOCK_BITS ?
	       cluster_bits : QIMG_JRNL_DEFAULT_BLOCK_BITS;
}

/*
 * Is @size a journal size an image with @cluster_bits may ask for (the
 * journal extension, QIMG_ATTACH_JOURNAL)?  A multiple of the cluster
 * size, at least QIMG_JRNL_MIN_BLOCKS blocks of qimg_jrnl_block_bits(),
 * at most QIMG_MAX_JOURNAL_BYTES.  0, -EINVAL or -EFBIG with a message.
 */
int qimg_jrnl_size_check(u64 size, u32 cluster_bits, struct qimg_err *err);

/* Whole header block (1 << h->block_bits bytes) with its checksum. */
int qimg_jrnl_hdr_encode(void *blk, const struct qimg_jrnl_hdr *h,
			 struct qimg_err *err);

/*
 * A fresh journal's header for an area of @size bytes: generation 1,
 * synced_seq @seq (0 for a new journal), tail at the ring start.
 */
int qimg_jrnl_hdr_init(struct qimg_jrnl_hdr *h, u32 block_bits, u64 size,
		       u32 cluster_bits, u64 seq, struct qimg_err *err);

/*
 * Data blocks and on-disk bytes needed by @n records in one descriptor
 * (each write's data inside one data block, packed in order).  Returns the
 * number of data blocks, or -ENOSPC when the records do not fit in one
 * descriptor block, -EINVAL for a malformed record.
 */
int qimg_jrnl_desc_blocks(u32 block_bits, const struct qimg_jrnl_rec *r,
			  u32 n, struct qimg_err *err);

/*
 * Encode descriptor block @desc and its data blocks into @data (room for
 * @data_blocks blocks, as qimg_jrnl_desc_blocks() computed), for
 * transaction @seq.  Returns the number of data blocks used, or an error.
 */
int qimg_jrnl_desc_encode(void *desc, void *data, u32 data_blocks,
			  u32 block_bits, u64 seq,
			  const struct qimg_jrnl_rec *r, u32 n,
			  struct qimg_err *err);

/*
 * Commit block of transaction @seq, which has @before descriptor and data
 * blocks whose chained CRC-32C (qimg_crc32c over each in order) is
 * @tx_crc; the next transaction starts at ring block @next_start.
 */
void qimg_jrnl_commit_encode(void *blk, u32 block_bits, u64 seq, u32 before,
			     u32 next_start, u32 tx_crc);

/*
 * Where the transaction after one whose commit block is @commit_block
 * starts, for a writer whose transactions never exceed @max_tx_blocks
 * blocks: right after it, or the ring start when one more would not fit
 * before the end.
 */
u32 qimg_jrnl_next_start(const struct qimg_jrnl_hdr *h, u32 commit_block,
			 u32 max_tx_blocks);

/* ------------------------------------------------------------------------ */
/* Recovery passes                                                          */

/*
 * Pick the header copy: each copy valid on its own (magic, version,
 * geometry, checksum), then the higher generation.  @chunk is a buffer of
 * QIMG_JRNL_HDR_CHUNK bytes.  -EUCLEAN when neither copy is valid or the
 * two disagree on the geometry.
 */
int qimg_jrnl_hdr_read(const struct qimg_jrnl_geom *g,
		       const struct qimg_jrnl_io *io, void *chunk,
		       struct qimg_jrnl_hdr *h, struct qimg_err *err);

/* Bytes of the @work buffer the passes need: two journal blocks. */
static inline size_t qimg_jrnl_work_size(const struct qimg_jrnl_hdr *h)
{
	return (size_t)2 << h->block_bits;
}

/*
 * Scan pass: from the header's tail, the complete transactions with
 * consecutive sequence numbers.  The end of the log (a block that is not
 * the expected descriptor, a torn or missing commit) is not an error;
 * damage followed by a valid later transaction is -EUCLEAN, and so is any
 * block whose checksum is right but whose fields are not.
 */
int qimg_jrnl_scan(const struct qimg_jrnl_geom *g,
		   const struct qimg_jrnl_io *io,
		   const struct qimg_jrnl_hdr *h, void *work,
		   struct qimg_jrnl_scan *s, struct qimg_err *err);

/*
 * Revoke pass: fill @rv (room for s->nrevokes entries) with the revoke
 * records of the scanned transactions, sorted by offset.
 */
int qimg_jrnl_revokes(const struct qimg_jrnl_geom *g,
		      const struct qimg_jrnl_io *io,
		      const struct qimg_jrnl_scan *s, void *work,
		      struct qimg_jrnl_revoke *rv, struct qimg_err *err);

/*
 * True when a write of transaction @seq to [@off, @off + @len) is revoked
 * by a later transaction in the sorted table @rv of @n entries.
 */
bool qimg_jrnl_revoked(const struct qimg_jrnl_revoke *rv, u64 n, u64 off,
		       u64 len, u64 seq);

/*
 * Replay pass: every write record of the scanned transactions, in order,
 * that no later revoke covers, through io->write.  Writes absolute bytes,
 * so running it again gives the same image.  @written (may be NULL)
 * receives the number of records written.
 */
int qimg_jrnl_replay(const struct qimg_jrnl_geom *g,
		     const struct qimg_jrnl_io *io,
		     const struct qimg_jrnl_scan *s, void *work,
		     const struct qimg_jrnl_revoke *rv, u64 *written,
		     struct qimg_err *err);

#endif /* QIMG_JOURNAL_FMT_H */
