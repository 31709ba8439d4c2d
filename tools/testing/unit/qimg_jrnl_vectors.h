/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test vectors for the qimg journal format core (qimg_journal_fmt.[ch]),
 * shared by the cmocka suite (test_journal.c) and, later, KUnit.  Data
 * only, plus the builder that turns a vector into journal-area bytes with
 * the writer's own encoders; nothing here depends on a test framework or
 * on libc beyond what qimg_journal_fmt.h provides.
 *
 * A vector describes the two header copies and a list of transactions,
 * each written where it says (so stale transactions of earlier passes
 * around the ring are simply listed first and overwritten by later ones),
 * then byte patches: "fix" recomputes the patched block's checksum, so a
 * patch without it is a torn or damaged block and one with it is a block
 * written with a bad field.  The expectations cover the header choice, the
 * scan, and the image after replay (which the runner also replays twice).
 */
#ifndef QIMG_JRNL_VECTORS_H
#define QIMG_JRNL_VECTORS_H

#include "qimg_journal_fmt.h"

#define QJV_CLUSTER_BITS	16
#define QJV_AREA_OFF		0x80000ULL
#define QJV_FILE_SIZE		0x100000ULL
#define QJV_BITS		9	/* 512-byte journal blocks ... */
#define QJV_NBLOCKS		16	/* ... 16 of them, unless a vector says */
#define QJV_MAX_TX		3	/* desc + data + commit */
#define QJV_MAX_AREA		(16U << 12)

/* Targets used below: L2-table-like clusters in the image. */
#define QJV_A			0x10000ULL
#define QJV_B			0x20000ULL
#define QJV_C			0x30000ULL

struct qjv_rec {
	u8 type;		/* QIMG_JRNL_REC_*; 0 ends the list */
	u32 len;
	u64 target;
	u8 fill;		/* write data: @len bytes of this value */
};

struct qjv_tx {
	u64 seq;		/* 0 ends the list */
	u32 start;		/* 0: where the previous one said */
	u32 next;		/* 0: qimg_jrnl_next_start(QJV_MAX_TX) */
	u8 per_desc;		/* records per descriptor; 0: all in one */
	struct qjv_rec r[6];
};

struct qjv_hcopy {
	u64 gen;		/* 0: the copy is absent (zero block) */
	u64 synced;
	u32 tail;
};

struct qjv_patch {
	u32 blk;
	u16 off;
	u8 width;		/* 1, 2, 4 or 8; 0 ends the list */
	u8 fix;			/* recompute the block's checksum */
	u64 val;
};

struct qjv_img {
	u64 off;
	u32 len;		/* 0 ends the list */
	u8 byte;
};

struct qimg_jrnl_vec {
	const char *name;
	u32 bits;		/* 0: QJV_BITS */
	u32 nblocks;		/* 0: QJV_NBLOCKS */
	struct qjv_hcopy h[2];
	struct qjv_tx tx[6];
	struct qjv_patch p[4];
	/* qimg_jrnl_hdr_read() */
	int hdr_ret;
	const char *hdr_msg;
	int copy;
	/* qimg_jrnl_scan() */
	int scan_ret;
	const char *msg;
	u64 ntx;
	u64 last_seq;
	bool torn;
	u64 nrevokes;
	/* qimg_jrnl_replay() */
	u64 written;
	struct qjv_img img[6];	/* bytes of the image after replay */
};

#define QJ_HDRS(s, t)		{ { 1, (s), (t) }, { 1, (s), (t) } }
#define QJ_W(t, l, f)		{ QIMG_JRNL_REC_WRITE, (l), (t), (f) }
#define QJ_R(t, l)		{ QIMG_JRNL_REC_REVOKE, (l), (t), 0 }
/* A one-record transaction: 3 blocks. */
#define QJ_TX1(s, at, t, f)	{ .seq = (s), .start = (at), .r = { QJ_W(t, 8, f) } }
#define QJ_P(b, o, w, v)	{ (b), (o), (w), 0, (v) }
#define QJ_PF(b, o, w, v)	{ (b), (o), (w), 1, (v) }
/* Offsets in a descriptor block: its first record, then the block header. */
#define QJ_R0_TYPE		32
#define QJ_R0_FLAGS		34
#define QJ_R0_LEN		36
#define QJ_R0_TARGET		40
#define QJ_R0_DOFF		48
#define QJ_B_COUNT		16
#define QJ_B_BLOCKS		20
#define QJ_B_TXCRC		24
#define QJ_B_RESV		28

/* One good transaction at block 2, for the hostile-field vectors. */
#define QJ_ONE			.h = QJ_HDRS(0, 2), \
				.tx = { QJ_TX1(1, 2, QJV_A, 0x11) }
/* A field of T1's descriptor (block 2) written wrong. */
#define QJ_BAD_DESC(n, o, w, v, m) \
	{ .name = n, QJ_ONE, .p = { QJ_PF(2, o, w, v) }, \
	  .scan_ret = -EUCLEAN, .msg = m }
/* A field of T1's commit block (block 4) written wrong. */
#define QJ_BAD_COMMIT(n, o, w, v, m) \
	{ .name = n, QJ_ONE, .p = { QJ_PF(4, o, w, v) }, \
	  .scan_ret = -EUCLEAN, .msg = m }
/* A field of header copy 0 written wrong, copy 1 absent. */
#define QJ_BAD_HDR(n, o, w, v, m) \
	{ .name = n, .h = { { 1, 0, 2 }, { 0 } }, .p = { QJ_PF(0, o, w, v) }, \
	  .hdr_ret = -EUCLEAN, .hdr_msg = m }

static const struct qimg_jrnl_vec qimg_jrnl_vecs[] = {
	/* ---- round trips ---------------------------------------------- */
	{ .name = "one transaction", QJ_ONE,
	  .ntx = 1, .last_seq = 1, .written = 1,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_A + 8, 8, 0 } } },
	{ .name = "empty journal", .h = QJ_HDRS(0, 2),
	  .ntx = 0, .last_seq = 0 },
	{ .name = "three transactions, several descriptors each",
	  .h = QJ_HDRS(0, 2),
	  .tx = {
		{ .seq = 1, .start = 2, .per_desc = 1,
		  .r = { QJ_W(QJV_A, 16, 0x11), QJ_W(QJV_B, 64, 0x12) } },
		{ .seq = 2, .per_desc = 2,
		  .r = { QJ_W(QJV_A + 8, 8, 0x21), QJ_W(QJV_C, 504, 0x22),
			 QJ_W(QJV_C + 504, 8, 0x23) } },
		{ .seq = 3, .r = { QJ_W(QJV_B + 32, 32, 0x31),
				   QJ_W(QJV_B + 512, 512, 0x32) } } },
	  .nblocks = 32,
	  .ntx = 3, .last_seq = 3, .written = 7,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_A + 8, 8, 0x21 },
		   { QJV_B, 32, 0x12 }, { QJV_B + 32, 32, 0x31 },
		   { QJV_C, 504, 0x22 }, { QJV_B + 512, 512, 0x32 } } },
	{ .name = "later transaction wins", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_A, 0x22),
		  QJ_TX1(3, 0, QJV_A + 8, 0x33) },
	  .ntx = 3, .last_seq = 3, .written = 3,
	  .img = { { QJV_A, 8, 0x22 }, { QJV_A + 8, 8, 0x33 } } },
	{ .name = "stale blocks of an earlier pass end the log",
	  .h = QJ_HDRS(5, 2),
	  .tx = { QJ_TX1(3, 5, QJV_B, 0x33), QJ_TX1(6, 2, QJV_A, 0x66) },
	  .ntx = 1, .last_seq = 6, .written = 1,
	  .img = { { QJV_A, 8, 0x66 }, { QJV_B, 8, 0 } } },
	{ .name = "synced transactions are not replayed", .h = QJ_HDRS(1, 5),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .ntx = 1, .last_seq = 2, .written = 1,
	  .img = { { QJV_A, 8, 0 }, { QJV_B, 8, 0x22 } } },
	/* ---- the ring wraps ------------------------------------------- */
	{ .name = "wrapped ring", .h = QJ_HDRS(10, 11),
	  .tx = { QJ_TX1(9, 8, QJV_C, 0x99),
		  QJ_TX1(11, 11, QJV_A, 0x11),	/* 11-13, next 2 */
		  QJ_TX1(12, 0, QJV_A, 0x22),	/* 2-4 */
		  QJ_TX1(13, 0, QJV_B, 0x33) },	/* 5-7, then stale 8 */
	  .ntx = 3, .last_seq = 13, .written = 3,
	  .img = { { QJV_A, 8, 0x22 }, { QJV_B, 8, 0x33 }, { QJV_C, 8, 0 } } },
	{ .name = "wrapped ring, transaction ends on the last block",
	  .h = QJ_HDRS(20, 13),
	  .tx = { QJ_TX1(21, 13, QJV_A, 0x11),	/* 13-15 */
		  QJ_TX1(22, 0, QJV_B, 0x22) },	/* 2-4 */
	  .ntx = 2, .last_seq = 22, .written = 2,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0x22 } } },
	{ .name = "early jump to the ring start",
	  .h = QJ_HDRS(0, 5),
	  .tx = { { .seq = 1, .start = 5, .next = 2,
		    .r = { QJ_W(QJV_A, 8, 0x11) } },
		  QJ_TX1(2, 0, QJV_B, 0x22) },
	  .ntx = 2, .last_seq = 2, .written = 2,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0x22 } } },
	/* ---- revokes -------------------------------------------------- */
	{ .name = "revoke then reuse", .h = QJ_HDRS(0, 2),
	  .tx = { { .seq = 1, .start = 2,
		    .r = { QJ_W(QJV_A, 8, 0x11), QJ_W(QJV_B, 8, 0x12) } },
		  { .seq = 2, .r = { QJ_R(QJV_A, 0x10000),
				     QJ_W(QJV_C, 8, 0x21) } },
		  QJ_TX1(3, 0, QJV_A + 8, 0x33) },
	  .ntx = 3, .last_seq = 3, .nrevokes = 1, .written = 3,
	  .img = { { QJV_A, 8, 0 }, { QJV_A + 8, 8, 0x33 },
		   { QJV_B, 8, 0x12 }, { QJV_C, 8, 0x21 } } },
	{ .name = "revoke covers only earlier transactions",
	  .h = QJ_HDRS(0, 2),
	  .tx = { { .seq = 1, .start = 2,
		    .r = { QJ_R(QJV_A, 0x10000), QJ_W(QJV_A, 8, 0x11) } } },
	  .ntx = 1, .last_seq = 1, .nrevokes = 1, .written = 1,
	  .img = { { QJV_A, 8, 0x11 } } },
	{ .name = "multi-cluster revoke", .h = QJ_HDRS(0, 2),
	  .tx = { { .seq = 1, .start = 2,
		    .r = { QJ_W(QJV_A, 8, 0x11), QJ_W(QJV_B + 8, 8, 0x12),
			   QJ_W(QJV_C, 8, 0x13) } },
		  { .seq = 2, .r = { QJ_R(QJV_A, 0x20000) } } },
	  .ntx = 2, .last_seq = 2, .nrevokes = 1, .written = 1,
	  .img = { { QJV_A, 8, 0 }, { QJV_B + 8, 8, 0 },
		   { QJV_C, 8, 0x13 } } },
	/* ---- 64-bit sequence numbers ------------------------------------ */
	{ .name = "sequence numbers above 2^32", .h = QJ_HDRS(0xfffffffeULL, 2),
	  .tx = { QJ_TX1(0xffffffffULL, 2, QJV_A, 0x11),
		  QJ_TX1(0x100000000ULL, 0, QJV_B, 0x22),
		  QJ_TX1(0x100000001ULL, 0, QJV_C, 0x33) },
	  .ntx = 3, .last_seq = 0x100000001ULL, .written = 3,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0x22 },
		   { QJV_C, 8, 0x33 } } },
	{ .name = "sequence number cut to 32 bits ends the log",
	  .h = QJ_HDRS(0xffffffffULL, 2),
	  .tx = { QJ_TX1(0x100000000ULL, 2, QJV_A, 0x11),
		  QJ_TX1(1, 0, QJV_B, 0x22) },
	  .ntx = 1, .last_seq = 0x100000000ULL, .written = 1,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0 } } },
	/* ---- the end of the log ---------------------------------------- */
	{ .name = "torn last block: missing commit", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .p = { QJ_P(7, 0, 4, 0) },
	  .ntx = 1, .last_seq = 1, .torn = true, .written = 1,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0 } } },
	{ .name = "torn last block: commit checksum", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .p = { QJ_P(7, 100, 1, 0xff) },
	  .ntx = 1, .last_seq = 1, .torn = true, .written = 1,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0 } } },
	{ .name = "torn last block: data", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .p = { QJ_P(6, 0, 1, 0x00) },
	  .ntx = 1, .last_seq = 1, .torn = true, .written = 1,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0 } } },
	{ .name = "torn last block: descriptor", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .p = { QJ_P(5, 200, 1, 0x01) },
	  .ntx = 1, .last_seq = 1, .torn = true, .written = 1,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0 } } },
	{ .name = "torn last block: transaction checksum", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .p = { QJ_PF(7, QJ_B_TXCRC, 4, 0x12345678) },
	  .ntx = 1, .last_seq = 1, .torn = true, .written = 1,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0 } } },
	/* ---- damage in the middle --------------------------------------- */
	{ .name = "bad data checksum in the middle", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22),
		  QJ_TX1(3, 0, QJV_C, 0x33) },
	  .p = { QJ_P(6, 0, 1, 0x00) },
	  .scan_ret = -EUCLEAN, .msg = "transaction 3 follows" },
	{ .name = "bad descriptor checksum in the middle", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22),
		  QJ_TX1(3, 0, QJV_C, 0x33) },
	  .p = { QJ_P(5, 200, 1, 0x01) },
	  .scan_ret = -EUCLEAN, .msg = "transaction 3 follows" },
	{ .name = "bad commit checksum in the middle", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22),
		  QJ_TX1(3, 0, QJV_C, 0x33) },
	  .p = { QJ_P(7, 100, 1, 0xff) },
	  .scan_ret = -EUCLEAN, .msg = "transaction 3 follows" },
	{ .name = "missing commit in the middle", .h = QJ_HDRS(0, 2),
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22),
		  QJ_TX1(3, 0, QJV_C, 0x33) },
	  .p = { QJ_P(7, 0, 4, 0) },
	  .scan_ret = -EUCLEAN, .msg = "transaction 3 follows" },
	/* ---- header copies ---------------------------------------------- */
	{ .name = "header: copy 1 has the higher generation",
	  .h = { { 1, 0, 2 }, { 2, 1, 5 } },
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .copy = 1, .ntx = 1, .last_seq = 2, .written = 1,
	  .img = { { QJV_A, 8, 0 }, { QJV_B, 8, 0x22 } } },
	{ .name = "header: copy 0 has the higher generation",
	  .h = { { 3, 0, 2 }, { 2, 1, 5 } },
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .copy = 0, .ntx = 2, .last_seq = 2, .written = 2,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0x22 } } },
	{ .name = "header: newer copy torn, older used",
	  .h = { { 1, 0, 2 }, { 2, 1, 5 } },
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11), QJ_TX1(2, 0, QJV_B, 0x22) },
	  .p = { QJ_P(1, 300, 1, 0x01) },
	  .copy = 0, .ntx = 2, .last_seq = 2, .written = 2,
	  .img = { { QJV_A, 8, 0x11 }, { QJV_B, 8, 0x22 } } },
	{ .name = "header: copy 0 lost, copy 1 found by block size",
	  .bits = 12, .h = { { 0 }, { 4, 0, 2 } },
	  .tx = { QJ_TX1(1, 2, QJV_A, 0x11) },
	  .copy = 1, .ntx = 1, .last_seq = 1, .written = 1,
	  .img = { { QJV_A, 8, 0x11 } } },
	{ .name = "header: no valid copy", .h = { { 0 }, { 0 } },
	  .hdr_ret = -EUCLEAN, .hdr_msg = "no valid journal header" },
	{ .name = "header: same generation, different contents",
	  .h = { { 2, 0, 2 }, { 2, 1, 5 } },
	  .hdr_ret = -EUCLEAN, .hdr_msg = "differ" },
	QJ_BAD_HDR("header: bad magic", 0, 8, 0x71696d676a726e6dULL,
		   "bad magic"),
	QJ_BAD_HDR("header: version 2", 8, 4, 2, "version 2"),
	QJ_BAD_HDR("header: block_bits 8", 12, 4, 8, "block_bits 8"),
	QJ_BAD_HDR("header: blocks larger than a cluster", 12, 4, 17,
		   "block_bits 17"),
	QJ_BAD_HDR("header: size differs from the extension", 16, 8, 16384,
		   "extension says"),
	QJ_BAD_HDR("header: size not whole blocks", 16, 8, 8000,
		   "not a multiple"),
	QJ_BAD_HDR("header: tail inside the header blocks", 40, 4, 1,
		   "tail block 1"),
	QJ_BAD_HDR("header: tail past the ring", 40, 4, 16, "tail block 16"),
	QJ_BAD_HDR("header: synced_seq too large", 32, 8, 1ULL << 62,
		   "too large"),
	QJ_BAD_HDR("header: reserved bytes", 48, 1, 1, "reserved"),
	QJ_BAD_HDR("header: reserved bytes at the block end", 511, 1, 1,
		   "reserved"),
	/* ---- hostile descriptor fields ---------------------------------- */
	QJ_BAD_DESC("descriptor: record type 7", QJ_R0_TYPE, 2, 7, "type 7"),
	QJ_BAD_DESC("descriptor: padding record inside the count",
		    QJ_R0_TYPE, 2, 0, "type 0"),
	QJ_BAD_DESC("descriptor: record flags", QJ_R0_FLAGS, 2, 1,
		    "unknown flags"),
	QJ_BAD_DESC("descriptor: length not a multiple of 8", QJ_R0_LEN, 4,
		    12, "not 8-byte aligned"),
	QJ_BAD_DESC("descriptor: length above a block", QJ_R0_LEN, 4, 1024,
		    "longer than a block"),
	QJ_BAD_DESC("descriptor: zero length", QJ_R0_LEN, 4, 0,
		    "0 bytes"),
	QJ_BAD_DESC("descriptor: unaligned target", QJ_R0_TARGET, 8,
		    QJV_A + 4, "not 8-byte aligned"),
	QJ_BAD_DESC("descriptor: target past the image end", QJ_R0_TARGET, 8,
		    QJV_FILE_SIZE, "past the end"),
	QJ_BAD_DESC("descriptor: target wraps around 2^64", QJ_R0_TARGET, 8,
		    0xfffffffffffffff8ULL, "past the end"),
	QJ_BAD_DESC("descriptor: target inside the journal", QJ_R0_TARGET, 8,
		    QJV_AREA_OFF + 0x100, "inside the journal"),
	QJ_BAD_DESC("descriptor: unaligned data offset", QJ_R0_DOFF, 4, 4,
		    "data offset 4"),
	QJ_BAD_DESC("descriptor: data crossing a block", QJ_R0_DOFF, 4, 508,
		    "data offset 508"),
	QJ_BAD_DESC("descriptor: data offset near 2^32", QJ_R0_DOFF, 4,
		    0xfffffff8U, "data offset"),
	{ .name = "descriptor: data offset past 2^32 - 512, no data blocks",
	  QJ_ONE,
	  .p = { QJ_PF(2, QJ_R0_DOFF, 4, 0xfffffff0U),
		 QJ_PF(2, QJ_B_BLOCKS, 4, 0) },
	  .scan_ret = -EUCLEAN, .msg = "0 data blocks, its records use 8388608" },
	QJ_BAD_DESC("descriptor: record count too large", QJ_B_COUNT, 4, 100,
		    "record 1 has type 0"),
	QJ_BAD_DESC("descriptor: record count 2^32-1", QJ_B_COUNT, 4,
		    0xffffffffU, "record 1 has type 0"),
	QJ_BAD_DESC("descriptor: record past the count", QJ_B_COUNT, 4, 0,
		    "not zero"),
	QJ_BAD_DESC("descriptor: data block count", QJ_B_BLOCKS, 4, 2,
		    "its records use 1"),
	QJ_BAD_DESC("descriptor: huge data block count", QJ_B_BLOCKS, 4,
		    0xffffffffU, "its records use 1"),
	QJ_BAD_DESC("descriptor: transaction checksum field", QJ_B_TXCRC, 4, 1,
		    "reserved"),
	QJ_BAD_DESC("descriptor: reserved field", QJ_B_RESV, 4, 1, "reserved"),
	QJ_BAD_DESC("descriptor: commit magic, no descriptor", 0, 4,
		    QIMG_JRNL_COMMIT_MAGIC, "without a descriptor"),
	{ .name = "descriptor: write crossing a cluster", .h = QJ_HDRS(0, 2),
	  .tx = { { .seq = 1, .start = 2,
		    .r = { QJ_W(QJV_B - 8, 16, 0x11) } } },
	  .scan_ret = -EUCLEAN, .msg = "cross a cluster boundary" },
	{ .name = "descriptor: revoke not whole clusters", .h = QJ_HDRS(0, 2),
	  .tx = { { .seq = 1, .start = 2, .r = { QJ_R(QJV_A, 0x10000) } } },
	  .p = { QJ_PF(2, QJ_R0_TARGET, 8, QJV_A + 0x200) },
	  .scan_ret = -EUCLEAN, .msg = "not whole clusters" },
	{ .name = "descriptor: revoke of part of a cluster",
	  .h = QJ_HDRS(0, 2),
	  .tx = { { .seq = 1, .start = 2, .r = { QJ_R(QJV_A, 0x200) } } },
	  .scan_ret = -EUCLEAN, .msg = "not whole clusters" },
	{ .name = "descriptor: revoke wrapping around 2^64",
	  .h = QJ_HDRS(0, 2),
	  .tx = { { .seq = 1, .start = 2,
		    .r = { QJ_R(0xffffffffffff0000ULL, 0x20000) } } },
	  .scan_ret = -EUCLEAN, .msg = "not whole clusters" },
	{ .name = "descriptor: transaction runs past the ring end",
	  .h = QJ_HDRS(0, 14),
	  .tx = { QJ_TX1(1, 14, QJV_A, 0x11) },
	  .scan_ret = -EUCLEAN, .msg = "past the ring end" },
	/* ---- hostile commit fields -------------------------------------- */
	QJ_BAD_COMMIT("commit: block count", QJ_B_COUNT, 4, 3, "counts 3"),
	QJ_BAD_COMMIT("commit: next start elsewhere", QJ_B_BLOCKS, 4, 9,
		      "next start 9"),
	QJ_BAD_COMMIT("commit: next start past the ring", QJ_B_BLOCKS, 4, 16,
		      "next start 16"),
	QJ_BAD_COMMIT("commit: reserved field", QJ_B_RESV, 4, 1, "reserved"),
	QJ_BAD_COMMIT("commit: bytes after the header", 100, 1, 1,
		      "reserved"),
	{ .name = "commit: next start past the ring end at the last block",
	  .h = QJ_HDRS(20, 13),
	  .tx = { { .seq = 21, .start = 13, .next = 16,
		    .r = { QJ_W(QJV_A, 8, 0x11) } } },
	  .scan_ret = -EUCLEAN, .msg = "next start 16" },
};

static inline u32 qjv_bits(const struct qimg_jrnl_vec *v)
{
	return v->bits ? v->bits : QJV_BITS;
}

static inline u32 qjv_nblocks(const struct qimg_jrnl_vec *v)
{
	return v->nblocks ? v->nblocks : QJV_NBLOCKS;
}

static inline u64 qjv_area_size(const struct qimg_jrnl_vec *v)
{
	return (u64)qjv_nblocks(v) << qjv_bits(v);
}

static inline void qjv_geom(const struct qimg_jrnl_vec *v,
			    struct qimg_jrnl_geom *g)
{
	g->cluster_bits = QJV_CLUSTER_BITS;
	g->area_offset = QJV_AREA_OFF;
	g->area_size = qjv_area_size(v);
	g->file_size = QJV_FILE_SIZE;
}

static inline void qjv_fix(u8 *blk, u32 bs, u32 idx)
{
	u32 off = idx < QIMG_JRNL_RING_START ? 44 : 4, crc;

	memset(blk + off, 0, 4);
	crc = qimg_crc32c(0, blk, bs);
	put_unaligned_be32(crc, blk + off);
}

/*
 * Write vector @v into @area (qjv_area_size(v) bytes, at most
 * QJV_MAX_AREA).  Returns 0, or a negative errno if the vector itself is
 * malformed (a bug in the table, not in the code under test).
 */
static inline int qjv_build(const struct qimg_jrnl_vec *v, u8 *area)
{
	u32 bits = qjv_bits(v), bs = 1U << bits, nblocks = qjv_nblocks(v);
	struct qimg_jrnl_hdr h;
	struct qimg_jrnl_rec recs[6];
	/* Static: 3 KiB is too much for a kernel stack (KUnit). */
	static u8 fill[6][512];
	u32 pos = QIMG_JRNL_RING_START, i, j, k;
	int ret;

	memset(area, 0, qjv_area_size(v));
	for (i = 0; i < 2; i++) {
		if (!v->h[i].gen)
			continue;
		ret = qimg_jrnl_hdr_init(&h, bits, qjv_area_size(v),
					 QJV_CLUSTER_BITS, v->h[i].synced,
					 NULL);
		if (ret)
			return ret;
		h.generation = v->h[i].gen;
		h.tail_block = v->h[i].tail;
		ret = qimg_jrnl_hdr_encode(area + ((size_t)i << bits), &h, NULL);
		if (ret)
			return ret;
	}
	ret = qimg_jrnl_hdr_init(&h, bits, qjv_area_size(v), QJV_CLUSTER_BITS,
				 0, NULL);
	if (ret)
		return ret;
	for (i = 0; i < ARRAY_SIZE(v->tx) && v->tx[i].seq; i++) {
		const struct qjv_tx *t = &v->tx[i];
		u32 n = 0, per, start, before = 0, crc = 0, next;

		for (j = 0; j < ARRAY_SIZE(t->r) && t->r[j].type; j++) {
			if (t->r[j].type == QIMG_JRNL_REC_WRITE) {
				if (t->r[j].len > sizeof(fill[j]))
					return -EINVAL;
				memset(fill[j], t->r[j].fill, t->r[j].len);
			}
			recs[j].type = t->r[j].type;
			recs[j].len = t->r[j].len;
			recs[j].target = t->r[j].target;
			recs[j].data = fill[j];
			n++;
		}
		if (t->start)
			pos = t->start;
		start = pos;
		per = t->per_desc ? t->per_desc : n;
		for (j = 0; j < n; j += per) {
			u32 cnt = n - j < per ? n - j : per, room;
			u8 *d = area + ((size_t)pos << bits);

			if (pos + 1 >= nblocks)
				return -ENOSPC;
			room = nblocks - pos - 1;
			ret = qimg_jrnl_desc_encode(d, d + bs, room, bits,
						    t->seq, recs + j, cnt,
						    NULL);
			if (ret < 0)
				return ret;
			for (k = 0; k <= (u32)ret; k++)
				crc = qimg_crc32c(crc, d + ((size_t)k << bits),
						  bs);
			before += 1 + ret;
			pos += 1 + ret;
		}
		next = t->next ? t->next :
			qimg_jrnl_next_start(&h, pos, QJV_MAX_TX);
		/* A commit past the ring end is simply not written. */
		if (pos < nblocks)
			qimg_jrnl_commit_encode(area + ((size_t)pos << bits),
						bits, t->seq, before, next,
						crc);
		(void)start;
		pos = next;
	}
	for (i = 0; i < ARRAY_SIZE(v->p) && v->p[i].width; i++) {
		const struct qjv_patch *p = &v->p[i];
		u8 *blk = area + ((size_t)p->blk << bits);

		if (p->blk >= nblocks || p->off + p->width > bs)
			return -EINVAL;
		switch (p->width) {
		case 1:
			blk[p->off] = p->val;
			break;
		case 2:
			put_unaligned_be16(p->val, blk + p->off);
			break;
		case 4:
			put_unaligned_be32(p->val, blk + p->off);
			break;
		case 8:
			put_unaligned_be64(p->val, blk + p->off);
			break;
		default:
			return -EINVAL;
		}
		if (p->fix)
			qjv_fix(blk, bs, p->blk);
	}
	return 0;
}

/*
 * qimg_jrnl_size_check(): journal sizes an image may ask for (create -o
 * journal_size, attach --journal-size), per cluster size.
 */
struct qjv_size {
	u32 cluster_bits;
	u64 size;
	int ret;
	const char *msg;	/* substring of the message, or NULL */
};

static const struct qjv_size qimg_jrnl_size_vecs[] = {
	{ 16, QIMG_JRNL_DEFAULT_SIZE, 0, NULL },
	{ 16, 1ULL << 16, 0, NULL },		/* one cluster: 16 blocks */
	{ 16, 3ULL << 16, 0, NULL },
	{ 16, 0, -EINVAL, "below the minimum" },
	{ 16, 1ULL << 12, -EINVAL, "multiple of the cluster" },
	{ 16, (1ULL << 16) + 512, -EINVAL, "multiple of the cluster" },
	{ 16, QIMG_MAX_JOURNAL_BYTES, 0, NULL },
	{ 16, QIMG_MAX_JOURNAL_BYTES + (1ULL << 16), -EFBIG, "maximum" },
	{ 12, 8ULL << 12, 0, NULL },		/* the smallest: 8 blocks */
	{ 12, 7ULL << 12, -EINVAL, "8 journal blocks of 4096" },
	{ 12, 4ULL << 12, -EINVAL, "8 journal blocks of 4096" },
	{ 9, 8ULL << 9, 0, NULL },		/* block = cluster = 512 */
	{ 9, 7ULL << 9, -EINVAL, "8 journal blocks of 512" },
	{ 21, 1ULL << 21, 0, NULL },		/* 2 MiB clusters */
	{ 21, 1ULL << 20, -EINVAL, "multiple of the cluster" },
	{ 8, 1ULL << 12, -EINVAL, "cluster_bits" },
};

#endif /* QIMG_JRNL_VECTORS_H */
