/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test vectors for the qimg format core, shared by the cmocka suite
 * (tools/testing/unit) and, later, KUnit.  Data only, plus one builder that
 * turns a header vector into image bytes; nothing here depends on a test
 * framework or on libc beyond what qimg_fmt.h provides.
 *
 * A header vector starts from a known-good base image (a first cluster and
 * a file size) and applies big-endian patches and strings to it, so every
 * bad case differs from a good one in exactly the field it is about.
 */
#ifndef QIMG_VECTORS_H
#define QIMG_VECTORS_H

#include "qimg_fmt.h"

/* Every base image: 64 KiB clusters, 1 GiB virtual size. */
#define QV_CLUSTER		0x10000ULL
#define QV_RT_OFF		0x10000ULL	/* refcount table, 1 cluster */
#define QV_RB_OFF		0x20000ULL	/* its one refcount block */
#define QV_L1_OFF		0x30000ULL	/* L1 table, 2 entries */
#define QV_FILE_SIZE		0x40000ULL
#define QV_BUF_LEN		0x10000U

enum qimg_vec_base {
	QV_BASE_V3,		/* header_length 112, no extensions */
	QV_BASE_V2,		/* 72-byte header, no extensions */
};

struct qimg_vec_patch {
	u16 off;
	u8 width;		/* 1, 2, 4 or 8; 0 ends the list */
	u64 val;
};

struct qimg_vec_str {
	u16 off;
	const char *s;		/* copied without its NUL; NULL: unused */
	u16 len;		/* 0: strlen(s) */
};

struct qimg_hdr_vec {
	const char *name;
	enum qimg_vec_base base;
	struct qimg_vec_patch p[14];
	struct qimg_vec_str str[2];
	u64 file_size;		/* 0: QV_FILE_SIZE */
	u32 len;		/* bytes handed to the decoder; 0: QV_BUF_LEN */
	int expect;		/* 0 or a negative errno */
	const char *msg;	/* substring of the error message, or NULL */
	/* Checked on success when set. */
	const char *backing;
	const char *backing_fmt;
	u32 ext_end;
	/*
	 * On success, what qimg_unsupported_feature() says of the decoded
	 * header read-only and read-write: a substring of the name, or NULL
	 * when the driver serves it.
	 */
	const char *refuse_ro;
	const char *refuse_rw;
};

/* Patch helpers: header fields by offset (see struct qimg_disk_header). */
#define QP(o, w, v)		{ .off = (o), .width = (w), .val = (v) }
#define QP_MAGIC(v)		QP(0, 4, v)
#define QP_VERSION(v)		QP(4, 4, v)
#define QP_BFO(v)		QP(8, 8, v)
#define QP_BFS(v)		QP(16, 4, v)
#define QP_CB(v)		QP(20, 4, v)
#define QP_SIZE(v)		QP(24, 8, v)
#define QP_CRYPT(v)		QP(32, 4, v)
#define QP_L1_SIZE(v)		QP(36, 4, v)
#define QP_L1_OFF(v)		QP(40, 8, v)
#define QP_RT_OFF(v)		QP(48, 8, v)
#define QP_RT_CLUSTERS(v)	QP(56, 4, v)
#define QP_NB_SNAP(v)		QP(60, 4, v)
#define QP_SNAP_OFF(v)		QP(64, 8, v)
#define QP_INCOMPAT(v)		QP(72, 8, v)
#define QP_COMPAT(v)		QP(80, 8, v)
#define QP_AUTOCLEAR(v)		QP(88, 8, v)
#define QP_RC_ORDER(v)		QP(96, 4, v)
#define QP_HDR_LEN(v)		QP(100, 4, v)
#define QP_COMP(v)		QP(104, 1, v)
/* An extension header (type, length) at byte @o. */
#define QP_EXT_TYPE(o, t)	QP(o, 4, t)
#define QP_EXT_LEN(o, l)	QP((o) + 4, 4, l)

#define QV_EUCLEAN		(-EUCLEAN)

static const struct qimg_hdr_vec qimg_hdr_vecs[] = {
	/* ---- good headers ---- */
	{ .name = "v3 base", .expect = 0, .ext_end = 120 },
	{ .name = "v2 base", .base = QV_BASE_V2, .expect = 0, .ext_end = 80 },
	{ .name = "v3 header_length 104 (no compression_type)",
	  .p = { QP_HDR_LEN(104) }, .expect = 0, .ext_end = 112 },
	{ .name = "v3 header_length 120 (unknown additional field)",
	  .p = { QP_HDR_LEN(120) }, .expect = 0, .ext_end = 128 },
	{ .name = "cluster_bits 9",
	  .p = { QP_CB(9), QP_SIZE(1 << 20), QP_L1_SIZE(32) }, .expect = 0 },
	{ .name = "cluster_bits 21",
	  .p = { QP_CB(21), QP_RT_OFF(0x200000), QP_L1_OFF(0x400000),
		 QP_L1_SIZE(1) },
	  .file_size = 0x600000, .expect = 0 },
	{ .name = "zero virtual size, empty L1",
	  .p = { QP_SIZE(0), QP_L1_SIZE(0), QP_L1_OFF(0) }, .expect = 0 },
	{ .name = "dirty, corrupt and lazy refcounts are known",
	  .p = { QP_INCOMPAT(3), QP_COMPAT(1) }, .expect = 0,
	  .refuse_rw = "dirty bit" },
	{ .name = "unknown compatible and autoclear bits are ignored",
	  .p = { QP_COMPAT(1ULL << 40), QP_AUTOCLEAR(1ULL << 50) },
	  .expect = 0 },
	{ .name = "refcount_order 0", .p = { QP_RC_ORDER(0) }, .expect = 0 },
	{ .name = "refcount_order 6", .p = { QP_RC_ORDER(6) }, .expect = 0 },
	{ .name = "extended L2 with 64 KiB clusters",
	  .p = { QP_INCOMPAT(QIMG_INCOMPAT_EXTL2), QP_L1_SIZE(4) },
	  .expect = 0 },
	{ .name = "zstd compression type",
	  .p = { QP_INCOMPAT(QIMG_INCOMPAT_COMPRESSION), QP_COMP(1) },
	  .expect = 0, .refuse_ro = "zstd", .refuse_rw = "zstd" },
	{ .name = "backing file name after the end mark",
	  .p = { QP_BFO(0x200), QP_BFS(7) },
	  .str = { { 0x200, "a.qcow2" } },
	  .expect = 0, .backing = "a.qcow2" },
	{ .name = "backing format extension",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BACKING_FORMAT), QP_EXT_LEN(112, 5),
		 QP_BFO(0x200), QP_BFS(7) },
	  .str = { { 120, "qcow2" }, { 0x200, "b.qcow2" } },
	  .expect = 0, .backing = "b.qcow2", .backing_fmt = "qcow2",
	  .ext_end = 136 },
	{ .name = "v2 with backing format extension",
	  .base = QV_BASE_V2,
	  .p = { QP_EXT_TYPE(72, QIMG_EXT_BACKING_FORMAT), QP_EXT_LEN(72, 3),
		 QP_BFO(0x100), QP_BFS(4) },
	  .str = { { 80, "raw" }, { 0x100, "base" } },
	  .expect = 0, .backing = "base", .backing_fmt = "raw",
	  .ext_end = 96 },
	{ .name = "extensions end exactly at the backing file name",
	  .p = { QP_EXT_TYPE(112, 0x12345678), QP_EXT_LEN(112, 8),
		 QP_BFO(128), QP_BFS(3) },
	  .str = { { 128, "xyz" } },
	  .expect = 0, .backing = "xyz", .ext_end = 128 },
	{ .name = "unknown extension is recorded",
	  .p = { QP_EXT_TYPE(112, 0xdeadbeef), QP_EXT_LEN(112, 3) },
	  .expect = 0, .ext_end = 136 },
	{ .name = "bitmaps extension",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 1), QP(128, 8, 32), QP(136, 8, 0x30000),
		 QP_AUTOCLEAR(QIMG_AUTOCLEAR_BITMAPS) },
	  .expect = 0, .ext_end = 152 },
	{ .name = "external data file",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_DATA_FILE), QP_EXT_LEN(112, 6),
		 QP_INCOMPAT(QIMG_INCOMPAT_DATA_FILE),
		 QP_AUTOCLEAR(QIMG_AUTOCLEAR_DATA_RAW) },
	  .str = { { 120, "d.data" } },
	  .expect = 0, .ext_end = 136,
	  .refuse_ro = "external data file",
	  .refuse_rw = "external data file" },
	{ .name = "journal extension",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0x40000), QP(128, 8, 0x20000),
		 QP_INCOMPAT(QIMG_INCOMPAT_JOURNAL_DIRTY) },
	  .file_size = 0x60000, .expect = 0, .ext_end = 144,
	  .refuse_ro = "journal", .refuse_rw = "journal" },
	/* Offset 0: a journal asked for, no area; served like any image. */
	{ .name = "journal request (offset 0)",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0), QP(128, 8, 0x400000) },
	  .expect = 0, .ext_end = 144 },
	{ .name = "journal request of 1 GiB, larger than the file",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0), QP(128, 8, 1ULL << 30) },
	  .expect = 0, .ext_end = 144 },

	/* ---- magic, version, lengths ---- */
	{ .name = "bad magic", .p = { QP_MAGIC(0x514649fa) },
	  .expect = -EINVAL, .msg = "magic" },
	{ .name = "version 1", .p = { QP_VERSION(1) },
	  .expect = -EOPNOTSUPP, .msg = "version 1" },
	{ .name = "version 4", .p = { QP_VERSION(4) },
	  .expect = -EOPNOTSUPP, .msg = "version 4" },
	{ .name = "buffer shorter than 72 bytes", .len = 71,
	  .expect = -EINVAL },
	{ .name = "v3 header truncated by the buffer", .len = 100,
	  .expect = QV_EUCLEAN, .msg = "truncated" },
	{ .name = "header_length 96", .p = { QP_HDR_LEN(96) },
	  .expect = QV_EUCLEAN, .msg = "header_length" },
	{ .name = "header_length not a multiple of 8",
	  .p = { QP_HDR_LEN(108) }, .expect = QV_EUCLEAN },
	{ .name = "header_length larger than a cluster",
	  .p = { QP_CB(9), QP_SIZE(1 << 20), QP_L1_SIZE(32),
		 QP_HDR_LEN(1024) },
	  .expect = QV_EUCLEAN },

	/* ---- geometry ---- */
	{ .name = "cluster_bits 8", .p = { QP_CB(8) }, .expect = QV_EUCLEAN },
	{ .name = "cluster_bits 22", .p = { QP_CB(22) },
	  .expect = -EOPNOTSUPP },
	{ .name = "cluster_bits 0xffffffff", .p = { QP_CB(0xffffffff) },
	  .expect = -EOPNOTSUPP },
	{ .name = "refcount_order 7", .p = { QP_RC_ORDER(7) },
	  .expect = QV_EUCLEAN, .msg = "refcount_order" },
	{ .name = "extended L2 with 8 KiB clusters",
	  .p = { QP_INCOMPAT(QIMG_INCOMPAT_EXTL2), QP_CB(13),
		 QP_SIZE(1 << 20) },
	  .expect = QV_EUCLEAN, .msg = "16 KiB" },
	{ .name = "virtual size above 2^61", .p = { QP_SIZE((1ULL << 61) + 1) },
	  .expect = -EFBIG },
	{ .name = "virtual size needs an L1 over 32 MiB",
	  .p = { QP_CB(9), QP_SIZE(1ULL << 40) }, .expect = -EFBIG },
	{ .name = "virtual size of all ones", .p = { QP_SIZE(~0ULL) },
	  .expect = -EFBIG },

	/* ---- features ---- */
	{ .name = "unknown incompatible bit without a name",
	  .p = { QP_INCOMPAT(1ULL << 9) }, .expect = -EOPNOTSUPP,
	  .msg = "unsupported incompatible feature bit 9" },
	{ .name = "unknown incompatible bit named by the feature table",
	  .p = { QP_INCOMPAT(1ULL << 9),
		 QP_EXT_TYPE(112, QIMG_EXT_FEATURE_TABLE), QP_EXT_LEN(112, 96),
		 QP(120, 1, 0), QP(121, 1, 8), QP(168, 1, 0), QP(169, 1, 9) },
	  .str = { { 122, "other" }, { 170, "time travel" } },
	  .expect = -EOPNOTSUPP, .msg = "unsupported feature: time travel" },
	{ .name = "two unknown incompatible bits",
	  .p = { QP_INCOMPAT((1ULL << 9) | (1ULL << 63)) },
	  .expect = -EOPNOTSUPP, .msg = "bit 9, incompatible feature bit 63" },
	{ .name = "AES encryption", .p = { QP_CRYPT(1) },
	  .expect = -EOPNOTSUPP, .msg = "encrypted images are not supported" },
	{ .name = "LUKS encryption", .p = { QP_CRYPT(2) },
	  .expect = -EOPNOTSUPP, .msg = "encrypted images are not supported" },
	{ .name = "compression type without its feature bit",
	  .p = { QP_COMP(1) }, .expect = QV_EUCLEAN },
	{ .name = "compression feature bit with zlib",
	  .p = { QP_INCOMPAT(QIMG_INCOMPAT_COMPRESSION) },
	  .expect = QV_EUCLEAN },
	{ .name = "unknown compression type",
	  .p = { QP_INCOMPAT(QIMG_INCOMPAT_COMPRESSION), QP_COMP(7) },
	  .expect = -EOPNOTSUPP },
	{ .name = "compression type ignored when header_length is 104",
	  .p = { QP_HDR_LEN(104), QP_COMP(1) }, .expect = 0 },
	{ .name = "raw external data without a data file",
	  .p = { QP_AUTOCLEAR(QIMG_AUTOCLEAR_DATA_RAW) },
	  .expect = QV_EUCLEAN },
	{ .name = "data file name without the data file bit",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_DATA_FILE), QP_EXT_LEN(112, 6) },
	  .str = { { 120, "d.data" } }, .expect = QV_EUCLEAN },
	{ .name = "journal dirty without a journal",
	  .p = { QP_INCOMPAT(QIMG_INCOMPAT_JOURNAL_DIRTY) },
	  .expect = QV_EUCLEAN, .msg = "journal" },
	{ .name = "journal dirty with a journal request only",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0), QP(128, 8, 0x20000),
		 QP_INCOMPAT(QIMG_INCOMPAT_JOURNAL_DIRTY) },
	  .expect = QV_EUCLEAN, .msg = "no journal area" },
	{ .name = "journal request of zero bytes",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0), QP(128, 8, 0) },
	  .expect = QV_EUCLEAN, .msg = "multiple of the cluster" },
	{ .name = "journal request not a multiple of the cluster",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0), QP(128, 8, 0x11000) },
	  .expect = QV_EUCLEAN, .msg = "multiple of the cluster" },
	{ .name = "journal request over 1 GiB",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0), QP(128, 8, (1ULL << 30) + QV_CLUSTER) },
	  .expect = -EFBIG },

	/* ---- tables ---- */
	{ .name = "L1 table smaller than the virtual size needs",
	  .p = { QP_L1_SIZE(1) }, .expect = QV_EUCLEAN, .msg = "too small" },
	{ .name = "L1 table over 32 MiB", .p = { QP_L1_SIZE(0x400001) },
	  .expect = -EFBIG },
	{ .name = "L1 offset not cluster aligned",
	  .p = { QP_L1_OFF(QV_L1_OFF + 512) }, .expect = QV_EUCLEAN,
	  .msg = "aligned" },
	{ .name = "L1 table in the header cluster", .p = { QP_L1_OFF(0) },
	  .expect = QV_EUCLEAN, .msg = "header" },
	{ .name = "L1 table past the end of the file",
	  .p = { QP_L1_OFF(0x40000) }, .expect = QV_EUCLEAN },
	{ .name = "L1 offset near 2^64 does not wrap",
	  .p = { QP_L1_OFF(0xffffffffffff0000ULL) }, .expect = QV_EUCLEAN },
	{ .name = "L1 table overlaps the refcount table",
	  .p = { QP_L1_OFF(QV_RT_OFF) }, .expect = QV_EUCLEAN,
	  .msg = "overlaps" },
	{ .name = "no refcount table", .p = { QP_RT_CLUSTERS(0) },
	  .expect = QV_EUCLEAN },
	{ .name = "refcount table over 8 MiB", .p = { QP_RT_CLUSTERS(129) },
	  .expect = -EFBIG },
	{ .name = "refcount table offset not aligned",
	  .p = { QP_RT_OFF(QV_RT_OFF + 8) }, .expect = QV_EUCLEAN },
	{ .name = "refcount table in the header cluster",
	  .p = { QP_RT_OFF(0) }, .expect = QV_EUCLEAN,
	  .msg = "refcount table at 0x0 overlaps the image header" },
	{ .name = "refcount table past the end of the file",
	  .p = { QP_RT_CLUSTERS(4) }, .expect = QV_EUCLEAN,
	  .msg = "refcount table at 0x10000 (262144 bytes) extends past the end of the file (262144 bytes)" },
	{ .name = "too many snapshots", .p = { QP_NB_SNAP(65537),
	  QP_SNAP_OFF(0x20000) }, .expect = -EFBIG },
	{ .name = "snapshot table not aligned",
	  .p = { QP_NB_SNAP(1), QP_SNAP_OFF(0x20008) }, .expect = QV_EUCLEAN,
	  .msg = "snapshot table offset 0x20008 is not cluster aligned" },
	{ .name = "snapshot table past the end of the file",
	  .p = { QP_NB_SNAP(2000), QP_SNAP_OFF(0x30000) },
	  .expect = QV_EUCLEAN },
	{ .name = "snapshot table inside the file",
	  .p = { QP_NB_SNAP(2), QP_SNAP_OFF(0x20000) }, .expect = 0 },

	/* ---- backing file name ---- */
	{ .name = "backing file name of 1024 bytes",
	  .p = { QP_BFO(0x200), QP_BFS(1024) }, .expect = QV_EUCLEAN,
	  .msg = "too long" },
	{ .name = "backing file name past the cluster",
	  .p = { QP_BFO(0xfffc), QP_BFS(8) }, .expect = QV_EUCLEAN },
	{ .name = "backing file offset past the cluster",
	  .p = { QP_BFO(0x10000000000ULL), QP_BFS(1) },
	  .expect = QV_EUCLEAN },
	{ .name = "backing file name inside the header",
	  .p = { QP_BFO(64), QP_BFS(8) }, .expect = QV_EUCLEAN },
	{ .name = "backing file name past the data read",
	  .p = { QP_BFO(0x200), QP_BFS(8) }, .len = 0x204,
	  .expect = QV_EUCLEAN },
	{ .name = "backing file name with a NUL byte",
	  .p = { QP_BFO(0x200), QP_BFS(3) }, .str = { { 0x200, "a\0b", 3 } },
	  .expect = QV_EUCLEAN, .msg = "NUL" },

	/* ---- header extensions ---- */
	{ .name = "extension longer than the cluster",
	  .p = { QP_EXT_TYPE(112, 0x1234), QP_EXT_LEN(112, 0x10000) },
	  .expect = QV_EUCLEAN, .msg = "too long" },
	{ .name = "extension length 0xffffffff",
	  .p = { QP_EXT_TYPE(112, 0x1234), QP_EXT_LEN(112, 0xffffffff) },
	  .expect = QV_EUCLEAN },
	{ .name = "extension runs into the backing file name",
	  .p = { QP_EXT_TYPE(112, 0x1234), QP_EXT_LEN(112, 64),
		 QP_BFO(128), QP_BFS(3) },
	  .str = { { 128, "xyz" } }, .expect = QV_EUCLEAN },
	{ .name = "extension area not terminated in the data read",
	  .p = { QP_EXT_TYPE(112, 0x1234), QP_EXT_LEN(112, 0) }, .len = 124,
	  .expect = QV_EUCLEAN },
	{ .name = "duplicate backing format",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BACKING_FORMAT), QP_EXT_LEN(112, 3),
		 QP_EXT_TYPE(128, QIMG_EXT_BACKING_FORMAT),
		 QP_EXT_LEN(128, 3) },
	  .str = { { 120, "raw" }, { 136, "raw" } },
	  .expect = QV_EUCLEAN, .msg = "more than once" },
	{ .name = "backing format of 32 bytes",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BACKING_FORMAT),
		 QP_EXT_LEN(112, 32) },
	  .str = { { 120, "0123456789abcdef0123456789abcdef" } },
	  .expect = QV_EUCLEAN },
	{ .name = "crypto extension in a plain image",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_CRYPTO), QP_EXT_LEN(112, 16) },
	  .expect = QV_EUCLEAN },
	{ .name = "bitmaps extension with no bitmaps",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 0), QP(128, 8, 32), QP(136, 8, 0x30000) },
	  .expect = QV_EUCLEAN },
	{ .name = "bitmaps extension with 65536 bitmaps",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 65536), QP(128, 8, 32), QP(136, 8, 0x30000) },
	  .expect = -EFBIG },
	{ .name = "bitmaps extension reserved field set",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 1), QP(124, 4, 1), QP(128, 8, 32),
		 QP(136, 8, 0x30000) },
	  .expect = QV_EUCLEAN },
	{ .name = "bitmap directory over 64 MiB",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 1), QP(128, 8, (64ULL << 20) + 8),
		 QP(136, 8, 0x30000) },
	  .expect = -EFBIG },
	{ .name = "bitmap directory too small for its bitmaps",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 2), QP(128, 8, 24), QP(136, 8, 0x30000) },
	  .expect = QV_EUCLEAN },
	{ .name = "bitmap directory not aligned",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 1), QP(128, 8, 32), QP(136, 8, 0x30008) },
	  .expect = QV_EUCLEAN },
	{ .name = "bitmap directory past the end of the file",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 24),
		 QP(120, 4, 1), QP(128, 8, 0x20000), QP(136, 8, 0x30000) },
	  .expect = QV_EUCLEAN },
	{ .name = "bitmaps extension of 16 bytes",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_BITMAPS), QP_EXT_LEN(112, 16),
		 QP(120, 4, 1), QP(128, 8, 32) },
	  .expect = QV_EUCLEAN },
	{ .name = "journal extension of 8 bytes",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 8),
		 QP(120, 8, 0x40000) },
	  .file_size = 0x60000, .expect = QV_EUCLEAN },
	{ .name = "journal size not a multiple of the cluster",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0x40000), QP(128, 8, 0x1000) },
	  .file_size = 0x60000, .expect = QV_EUCLEAN },
	{ .name = "journal of zero bytes",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0x40000), QP(128, 8, 0) },
	  .file_size = 0x60000, .expect = QV_EUCLEAN },
	{ .name = "journal over 1 GiB",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0x40000), QP(128, 8, (1ULL << 30) + QV_CLUSTER) },
	  .file_size = 1ULL << 32, .expect = -EFBIG },
	{ .name = "journal overlaps the L1 table",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0x30000), QP(128, 8, 0x20000) },
	  .file_size = 0x60000, .expect = QV_EUCLEAN, .msg = "L1" },
	{ .name = "bitmaps extension in a v2 image", .base = QV_BASE_V2,
	  .p = { QP_EXT_TYPE(72, QIMG_EXT_BITMAPS), QP_EXT_LEN(72, 24),
		 QP(80, 4, 1), QP(88, 8, 32), QP(96, 8, 0x30000) },
	  .expect = QV_EUCLEAN, .msg = "version 2" },
	{ .name = "duplicate journal extension",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0x40000), QP(128, 8, 0x10000),
		 QP_EXT_TYPE(136, QIMG_EXT_JOURNAL), QP_EXT_LEN(136, 16),
		 QP(144, 8, 0x50000), QP(152, 8, 0x10000) },
	  .file_size = 0x60000, .expect = QV_EUCLEAN,
	  .msg = "more than once" },
	{ .name = "duplicate feature table",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_FEATURE_TABLE),
		 QP_EXT_TYPE(120, QIMG_EXT_FEATURE_TABLE) },
	  .expect = QV_EUCLEAN, .msg = "more than once" },
	{ .name = "journal past the end of the file",
	  .p = { QP_EXT_TYPE(112, QIMG_EXT_JOURNAL), QP_EXT_LEN(112, 16),
		 QP(120, 8, 0x40000), QP(128, 8, 0x20000) },
	  .expect = QV_EUCLEAN },
};

/*
 * Build the image bytes for @v into @buf (at least QV_BUF_LEN bytes).
 * Returns the number of bytes to hand to the decoder.
 */
static inline u32 qimg_vec_build(const struct qimg_hdr_vec *v, u8 *buf)
{
	size_t i;

	memset(buf, 0, QV_BUF_LEN);
	put_unaligned_be32(QIMG_MAGIC, buf + 0);
	put_unaligned_be32(v->base == QV_BASE_V2 ? 2 : 3, buf + 4);
	put_unaligned_be32(16, buf + 20);
	put_unaligned_be64(1ULL << 30, buf + 24);
	put_unaligned_be32(2, buf + 36);
	put_unaligned_be64(QV_L1_OFF, buf + 40);
	put_unaligned_be64(QV_RT_OFF, buf + 48);
	put_unaligned_be32(1, buf + 56);
	if (v->base == QV_BASE_V3) {
		put_unaligned_be32(4, buf + 96);
		put_unaligned_be32(QIMG_V3_HEADER_LEN_COMP, buf + 100);
	}
	for (i = 0; i < ARRAY_SIZE(v->p) && v->p[i].width; i++) {
		u8 *p = buf + v->p[i].off;

		switch (v->p[i].width) {
		case 1:
			*p = (u8)v->p[i].val;
			break;
		case 2:
			put_unaligned_be16((u16)v->p[i].val, p);
			break;
		case 4:
			put_unaligned_be32((u32)v->p[i].val, p);
			break;
		default:
			put_unaligned_be64(v->p[i].val, p);
			break;
		}
	}
	for (i = 0; i < ARRAY_SIZE(v->str); i++)
		if (v->str[i].s)
			memcpy(buf + v->str[i].off, v->str[i].s,
			       v->str[i].len ? v->str[i].len :
			       strlen(v->str[i].s));
	return v->len ? v->len : QV_BUF_LEN;
}

static inline u64 qimg_vec_file_size(const struct qimg_hdr_vec *v)
{
	return v->file_size ? v->file_size : QV_FILE_SIZE;
}

/* ---- the driver's refusal policy (qimg_unsupported_feature) ---------- */

/*
 * A header is the base geometry (v3, 64 KiB clusters, 1 GiB) with these
 * fields set; the header vectors above check the same policy on headers
 * that went through the decoder.  These also cover what decode refuses
 * before the policy sees it, since the policy must stand on its own.
 */
struct qimg_unsup_vec {
	const char *name;
	u32 version;		/* 0: 3 */
	u64 incompat;
	u32 crypt_method;
	bool crypto_ext;
	bool data_file_ext;
	u8 compression_type;
	bool writable;
	const char *refuse;	/* substring of the name; NULL: served */
};

static const struct qimg_unsup_vec qimg_unsup_vecs[] = {
	{ .name = "plain image, read-only" },
	{ .name = "plain image, read-write", .writable = true },
	{ .name = "v2 image, read-write", .version = 2, .writable = true },
	{ .name = "dirty bit, read-only", .incompat = QIMG_INCOMPAT_DIRTY },
	{ .name = "dirty bit, read-write", .incompat = QIMG_INCOMPAT_DIRTY,
	  .writable = true, .refuse = "dirty bit" },
	{ .name = "corrupt bit is the caller's",
	  .incompat = QIMG_INCOMPAT_CORRUPT, .writable = true },
	{ .name = "extended L2, read-only", .incompat = QIMG_INCOMPAT_EXTL2 },
	{ .name = "extended L2, read-write", .incompat = QIMG_INCOMPAT_EXTL2,
	  .writable = true },
	{ .name = "extended L2 with the dirty bit, read-write",
	  .incompat = QIMG_INCOMPAT_EXTL2 | QIMG_INCOMPAT_DIRTY,
	  .writable = true, .refuse = "dirty bit" },
	{ .name = "zlib with the compression bit, read-write",
	  .incompat = QIMG_INCOMPAT_COMPRESSION, .writable = true },
	{ .name = "zstd, read-only", .incompat = QIMG_INCOMPAT_COMPRESSION,
	  .compression_type = QIMG_COMPRESSION_ZSTD, .refuse = "zstd" },
	{ .name = "zstd with extended L2, read-write",
	  .incompat = QIMG_INCOMPAT_COMPRESSION | QIMG_INCOMPAT_EXTL2,
	  .compression_type = QIMG_COMPRESSION_ZSTD, .writable = true,
	  .refuse = "zstd" },
	{ .name = "unknown compression type",
	  .incompat = QIMG_INCOMPAT_COMPRESSION, .compression_type = 7,
	  .refuse = "other than zlib" },
	{ .name = "compression type without its bit is not compression",
	  .compression_type = QIMG_COMPRESSION_ZSTD },
	{ .name = "dirty journal, read-only",
	  .incompat = QIMG_INCOMPAT_JOURNAL_DIRTY, .refuse = "journal" },
	{ .name = "dirty journal is named before zstd",
	  .incompat = QIMG_INCOMPAT_JOURNAL_DIRTY |
		      QIMG_INCOMPAT_COMPRESSION,
	  .compression_type = QIMG_COMPRESSION_ZSTD, .refuse = "journal" },
	{ .name = "encryption, read-only", .crypt_method = 1,
	  .refuse = "encryption" },
	{ .name = "LUKS encryption (method 2)", .crypt_method = 2,
	  .writable = true, .refuse = "encryption" },
	{ .name = "crypto extension alone", .crypto_ext = true,
	  .refuse = "encryption" },
	{ .name = "encryption is named before the dirty journal",
	  .crypt_method = 1, .incompat = QIMG_INCOMPAT_JOURNAL_DIRTY,
	  .refuse = "encryption" },
	{ .name = "external data file bit, read-only",
	  .incompat = QIMG_INCOMPAT_DATA_FILE,
	  .refuse = "external data file" },
	{ .name = "external data file name alone", .data_file_ext = true,
	  .writable = true, .refuse = "external data file" },
	{ .name = "external data file is named before encryption",
	  .incompat = QIMG_INCOMPAT_DATA_FILE, .crypt_method = 1,
	  .refuse = "external data file" },
	{ .name = "unknown incompatible bit", .incompat = 1ULL << 9,
	  .refuse = "unknown incompatible" },
	{ .name = "unknown bit is named before everything",
	  .incompat = (1ULL << 63) | QIMG_INCOMPAT_DATA_FILE,
	  .crypt_method = 1, .writable = true,
	  .refuse = "unknown incompatible" },
};

/* The header @v describes (geometry of the base image, not validated). */
static inline void qimg_unsup_vec_header(const struct qimg_unsup_vec *v,
					 struct qimg_header *h)
{
	memset(h, 0, sizeof(*h));
	h->version = v->version ? v->version : 3;
	h->cluster_bits = 16;
	h->size = 1ULL << 30;
	h->refcount_order = 4;
	h->incompatible_features = v->incompat;
	h->crypt_method = v->crypt_method;
	h->has_crypto_ext = v->crypto_ext;
	h->has_data_file = v->data_file_ext;
	h->compression_type = v->compression_type;
}

/* ---- table entries, against the geometry of the base image ---------- */

struct qimg_l1_vec {
	const char *name;
	u64 raw;
	int expect;
	u64 l2_offset;
	bool copied;
	const char *msg;	/* substring of the error message, or NULL */
};

static const struct qimg_l1_vec qimg_l1_vecs[] = {
	{ .name = "L1 unallocated", .raw = 0, .expect = 0, .l2_offset = 0,
	  .copied = false },
	{ .name = "L1 allocated", .raw = 0x20000, .expect = 0,
	  .l2_offset = 0x20000, .copied = false },
	{ .name = "L1 allocated + copied",
	  .raw = QIMG_OFLAG_COPIED | 0x30000, .expect = 0,
	  .l2_offset = 0x30000, .copied = true },
	{ .name = "L1 reserved low bit", .raw = 0x20001, .expect = -EUCLEAN },
	{ .name = "L1 reserved bit 56", .raw = (1ULL << 56) | 0x20000,
	  .expect = -EUCLEAN },
	{ .name = "L1 compressed flag is reserved",
	  .raw = QIMG_OFLAG_COMPRESSED | 0x20000, .expect = -EUCLEAN },
	{ .name = "L1 not cluster aligned", .raw = 0x20200,
	  .expect = -EUCLEAN,
	  .msg = "L2 table offset 0x20200 is not cluster aligned" },
	{ .name = "L1 unallocated with COPIED", .raw = QIMG_OFLAG_COPIED,
	  .expect = 0, .l2_offset = 0, .copied = false },
	{ .name = "L1 past end of file", .raw = 0x40000, .expect = -EUCLEAN,
	  .msg = "L2 table at 0x40000 (65536 bytes) extends past the end of the file (262144 bytes)" },
	{ .name = "L1 max offset", .raw = 0x00ffffffffff0000ULL,
	  .expect = -EUCLEAN },
};

struct qimg_l2_vec {
	const char *name;
	bool ext_l2;
	bool data_file;
	u32 version;
	u64 raw;
	u64 bitmap;
	int expect;
	enum qimg_cluster_type type;
	u64 host_offset;
	u64 compressed_len;
};

#define QV_C(nb, off)	(QIMG_OFLAG_COMPRESSED | ((u64)(nb) << 54) | (off))

static const struct qimg_l2_vec qimg_l2_vecs[] = {
	{ .name = "L2 unallocated", .ext_l2 = false, .data_file = false,
	  .version = 3, .raw = 0, .bitmap = 0, .expect = 0,
	  .type = QIMG_CLUSTER_UNALLOCATED },
	{ .name = "L2 normal", .ext_l2 = false, .data_file = false,
	  .version = 3, .raw = 0x20000, .bitmap = 0, .expect = 0,
	  .type = QIMG_CLUSTER_NORMAL, .host_offset = 0x20000 },
	{ .name = "L2 normal copied", .ext_l2 = false, .data_file = false,
	  .version = 3, .raw = QIMG_OFLAG_COPIED | 0x30000, .bitmap = 0,
	  .expect = 0, .type = QIMG_CLUSTER_NORMAL, .host_offset = 0x30000 },
	{ .name = "L2 zero plain", .ext_l2 = false, .data_file = false,
	  .version = 3, .raw = 1, .bitmap = 0, .expect = 0,
	  .type = QIMG_CLUSTER_ZERO_PLAIN },
	{ .name = "L2 zero alloc", .ext_l2 = false, .data_file = false,
	  .version = 3, .raw = 0x20001, .bitmap = 0, .expect = 0,
	  .type = QIMG_CLUSTER_ZERO_ALLOC, .host_offset = 0x20000 },
	/* A write reuses it in place: range-checked like a normal one. */
	{ .name = "L2 zero alloc past EOF is corrupt", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = 0x100001, .bitmap = 0,
	  .expect = -EUCLEAN },
	{ .name = "L2 zero alloc, unaligned", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = 0x20201, .bitmap = 0,
	  .expect = -EUCLEAN },
	{ .name = "L2 zero flag in v2 is reserved", .ext_l2 = false,
	  .data_file = false, .version = 2, .raw = 0x20001, .bitmap = 0,
	  .expect = -EUCLEAN },
	{ .name = "L2 reserved bit 1", .ext_l2 = false, .data_file = false,
	  .version = 3, .raw = 0x20002, .bitmap = 0, .expect = -EUCLEAN },
	{ .name = "L2 reserved bit 56", .ext_l2 = false, .data_file = false,
	  .version = 3, .raw = (1ULL << 56) | 0x20000, .bitmap = 0,
	  .expect = -EUCLEAN },
	{ .name = "L2 not cluster aligned", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = 0x20200, .bitmap = 0,
	  .expect = -EUCLEAN },
	{ .name = "L2 data past end of file", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = 0x40000, .bitmap = 0,
	  .expect = -EUCLEAN },
	{ .name = "L2 unallocated with data file", .ext_l2 = false,
	  .data_file = true, .version = 3, .raw = 0, .bitmap = 0,
	  .expect = 0, .type = QIMG_CLUSTER_UNALLOCATED },
	{ .name = "L2 copied offset 0 without data file", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = QIMG_OFLAG_COPIED,
	  .bitmap = 0, .expect = 0, .type = QIMG_CLUSTER_UNALLOCATED },
	{ .name = "L2 copied offset 0 with data file", .ext_l2 = false,
	  .data_file = true, .version = 3, .raw = QIMG_OFLAG_COPIED,
	  .bitmap = 0, .expect = 0, .type = QIMG_CLUSTER_NORMAL,
	  .host_offset = 0 },
	/* 64 KiB clusters: x = 54, sectors counted beyond the first. */
	{ .name = "L2 compressed one sector", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = QV_C(0, 0x20000),
	  .bitmap = 0, .expect = 0, .type = QIMG_CLUSTER_COMPRESSED,
	  .host_offset = 0x20000, .compressed_len = 512 },
	{ .name = "L2 compressed unaligned start", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = QV_C(3, 0x20123),
	  .bitmap = 0, .expect = 0, .type = QIMG_CLUSTER_COMPRESSED,
	  .host_offset = 0x20123, .compressed_len = 4 * 512 - 0x123 },
	{ .name = "L2 compressed may end past EOF", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = QV_C(255, 0x3ff00),
	  .bitmap = 0, .expect = 0, .type = QIMG_CLUSTER_COMPRESSED,
	  .host_offset = 0x3ff00, .compressed_len = 256 * 512 - 0x100 },
	{ .name = "L2 compressed starting past EOF", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = QV_C(0, 0x40000),
	  .bitmap = 0, .expect = -EUCLEAN },
	{ .name = "L2 compressed in the header", .ext_l2 = false,
	  .data_file = false, .version = 3, .raw = QV_C(0, 0x100),
	  .bitmap = 0, .expect = -EUCLEAN },
	{ .name = "L2 compressed with COPIED", .ext_l2 = false,
	  .data_file = false, .version = 3,
	  .raw = QIMG_OFLAG_COPIED | QV_C(0, 0x20000), .bitmap = 0,
	  .expect = -EUCLEAN },
	{ .name = "L2 compressed with data file", .ext_l2 = false,
	  .data_file = true, .version = 3, .raw = QV_C(0, 0x20000),
	  .bitmap = 0, .expect = -EUCLEAN },
	{ .name = "L2 ext unallocated", .ext_l2 = true, .data_file = false,
	  .version = 3, .raw = 0, .bitmap = 0, .expect = 0,
	  .type = QIMG_CLUSTER_UNALLOCATED },
	{ .name = "L2 ext all zero", .ext_l2 = true, .data_file = false,
	  .version = 3, .raw = 0, .bitmap = 0xffffffff00000000ULL,
	  .expect = 0, .type = QIMG_CLUSTER_UNALLOCATED },
	{ .name = "L2 ext partly allocated", .ext_l2 = true,
	  .data_file = false, .version = 3, .raw = 0x20000,
	  .bitmap = 0x0000000f, .expect = 0, .type = QIMG_CLUSTER_NORMAL,
	  .host_offset = 0x20000 },
	{ .name = "L2 ext allocated and zero subclusters", .ext_l2 = true,
	  .data_file = false, .version = 3, .raw = 0x20000,
	  .bitmap = 0x000000f0000000f0ULL, .expect = -EUCLEAN },
	{ .name = "L2 ext allocated subclusters without offset",
	  .ext_l2 = true, .data_file = false, .version = 3, .raw = 0,
	  .bitmap = 1, .expect = -EUCLEAN },
	{ .name = "L2 ext zero flag is reserved", .ext_l2 = true,
	  .data_file = false, .version = 3, .raw = 0x20001, .bitmap = 1,
	  .expect = -EUCLEAN },
	{ .name = "L2 ext compressed with bitmap", .ext_l2 = true,
	  .data_file = false, .version = 3, .raw = QV_C(0, 0x20000),
	  .bitmap = 1, .expect = -EUCLEAN },
	{ .name = "L2 ext reserved cluster past EOF", .ext_l2 = true,
	  .data_file = false, .version = 3, .raw = 0x80000, .bitmap = 0,
	  .expect = 0, .type = QIMG_CLUSTER_NORMAL, .host_offset = 0x80000 },
	{ .name = "L2 ext allocated past EOF", .ext_l2 = true,
	  .data_file = false, .version = 3, .raw = 0x80000, .bitmap = 1,
	  .expect = -EUCLEAN },
};

struct qimg_refcount_vec {
	const char *name;
	u32 order;
	u64 index;
	u64 value;
	int expect;
	u32 byte;		/* byte of the block that must change */
	u8 byte_val;		/* its value, block starting all zero */
};

static const struct qimg_refcount_vec qimg_refcount_vecs[] = {
	{ .name = "refcount order 0 entry 3", .order = 0, .index = 3,
	  .value = 1, .expect = 0, .byte = 0, .byte_val = 0x08 },
	{ .name = "refcount order 0 entry 9", .order = 0, .index = 9,
	  .value = 1, .expect = 0, .byte = 1, .byte_val = 0x02 },
	{ .name = "refcount order 0 value 2", .order = 0, .index = 0,
	  .value = 2, .expect = -ERANGE },
	{ .name = "refcount order 1 entry 1", .order = 1, .index = 1,
	  .value = 3, .expect = 0, .byte = 0, .byte_val = 0x0c },
	{ .name = "refcount order 2 entry 1", .order = 2, .index = 1,
	  .value = 0xa, .expect = 0, .byte = 0, .byte_val = 0xa0 },
	{ .name = "refcount order 2 entry 2", .order = 2, .index = 2,
	  .value = 0xf, .expect = 0, .byte = 1, .byte_val = 0x0f },
	{ .name = "refcount order 2 value 16", .order = 2, .index = 0,
	  .value = 16, .expect = -ERANGE },
	{ .name = "refcount order 3 entry 5", .order = 3, .index = 5,
	  .value = 0xab, .expect = 0, .byte = 5, .byte_val = 0xab },
	{ .name = "refcount order 4 entry 1", .order = 4, .index = 1,
	  .value = 0x1234, .expect = 0, .byte = 2, .byte_val = 0x12 },
	{ .name = "refcount order 4 entry 1 low byte", .order = 4,
	  .index = 1, .value = 0x1234, .expect = 0, .byte = 3,
	  .byte_val = 0x34 },
	{ .name = "refcount order 4 value 65536", .order = 4, .index = 1,
	  .value = 0x10000, .expect = -ERANGE },
	{ .name = "refcount order 5 entry 1", .order = 5, .index = 1,
	  .value = 0x01020304, .expect = 0, .byte = 4, .byte_val = 0x01 },
	{ .name = "refcount order 6 entry 1", .order = 6, .index = 1,
	  .value = 0x0102030405060708ULL, .expect = 0, .byte = 15,
	  .byte_val = 0x08 },
	{ .name = "refcount order 6 max", .order = 6, .index = 0,
	  .value = ~0ULL, .expect = 0, .byte = 0, .byte_val = 0xff },
	{ .name = "refcount order 7", .order = 7, .index = 0, .value = 1,
	  .expect = -EINVAL },
};

struct qimg_reftable_vec {
	const char *name;
	u64 raw;
	int expect;
	u64 rb_offset;
	const char *msg;	/* substring of the error message, or NULL */
};

static const struct qimg_reftable_vec qimg_reftable_vecs[] = {
	{ .name = "reftable unallocated", .raw = 0, .expect = 0,
	  .rb_offset = 0 },
	{ .name = "reftable block", .raw = 0x20000, .expect = 0,
	  .rb_offset = 0x20000 },
	{ .name = "reftable reserved bit", .raw = 0x20001,
	  .expect = -EUCLEAN },
	{ .name = "reftable not aligned", .raw = 0x20200, .expect = -EUCLEAN,
	  .msg = "refcount block offset 0x20200 is not cluster aligned" },
	{ .name = "reftable past EOF", .raw = 0x40000, .expect = -EUCLEAN,
	  .msg = "refcount block at 0x40000 (65536 bytes) extends past the end of the file (262144 bytes)" },
	{ .name = "reftable high bits are offset bits", .raw = 1ULL << 63,
	  .expect = -EUCLEAN },
	{ .name = "reftable in the header", .raw = 0x200, .expect = -EUCLEAN },
};

struct qimg_bme_vec {
	const char *name;
	u64 raw;
	int expect;
	u64 offset;
	bool all_ones;
	const char *msg;	/* substring of the error message, or NULL */
};

static const struct qimg_bme_vec qimg_bme_vecs[] = {
	{ .name = "bitmap entry all zeros", .raw = 0, .expect = 0,
	  .offset = 0, .all_ones = false },
	{ .name = "bitmap entry all ones", .raw = 1, .expect = 0,
	  .offset = 0, .all_ones = true },
	{ .name = "bitmap entry data", .raw = 0x20000, .expect = 0,
	  .offset = 0x20000, .all_ones = false },
	{ .name = "bitmap entry data + all ones", .raw = 0x20001,
	  .expect = -EUCLEAN },
	{ .name = "bitmap entry reserved bit 1", .raw = 0x20002,
	  .expect = -EUCLEAN },
	{ .name = "bitmap entry reserved bit 56", .raw = 1ULL << 56,
	  .expect = -EUCLEAN },
	{ .name = "bitmap entry unaligned", .raw = 0x20200,
	  .expect = -EUCLEAN,
	  .msg = "bitmap data offset 0x20200 is not cluster aligned" },
	{ .name = "bitmap entry past EOF", .raw = 0x40000,
	  .expect = -EUCLEAN,
	  .msg = "bitmap data at 0x40000 (65536 bytes) extends past the end of the file (262144 bytes)" },
};

/*
 * Snapshot and bitmap directory entries as raw bytes (big-endian), decoded
 * against the base geometry (64 KiB clusters, 1 GiB, file 0x40000).
 */
struct qimg_raw_vec {
	const char *name;
	const u8 *bytes;
	u32 len;
	int expect;
	u32 entry_len;		/* checked on success */
	const char *label;	/* id (snapshot) or name (bitmap) */
	const char *msg;	/* substring of the error message, or NULL */
};

static const u8 qv_snap_v3[] = {
	0, 0, 0, 0, 0, 3, 0, 0,		/* l1_table_offset 0x30000 */
	0, 0, 0, 2,			/* l1_size */
	0, 1, 0, 5,			/* id 1 byte, name 5 bytes */
	0, 0, 0, 1, 0, 0, 0, 2,		/* date */
	0, 0, 0, 0, 0, 0, 0, 3,		/* vm clock */
	0, 0, 0, 0,			/* vm_state_size */
	0, 0, 0, 16,			/* extra data */
	0, 0, 0, 0, 0, 0, 0x10, 0,	/* vm_state_size_large 4096 */
	0, 0, 0, 0, 0x40, 0, 0, 0,	/* disk size 1 GiB */
	'1', 's', 'n', 'a', 'p', '1',
	0, 0,				/* padding to 64 */
};

static const u8 qv_snap_bad_l1[] = {
	0, 0, 0, 0, 0, 3, 0, 8,		/* unaligned */
	0, 0, 0, 2, 0, 1, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_snap_long_name[] = {
	0, 0, 0, 0, 0, 3, 0, 0,
	0, 0, 0, 2, 0, 1, 0xff, 0xff,	/* name of 65535 bytes */
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_snap_big_extra[] = {
	0, 0, 0, 0, 0, 3, 0, 0,
	0, 0, 0, 2, 0, 1, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_snap_big_l1[] = {
	0, 0, 0, 0, 0, 3, 0, 0,
	0, 0x40, 0, 1, 0, 1, 0, 0,	/* 4 Mi + 1 entries */
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_snap_l1_in_header[] = {
	0, 0, 0, 0, 0, 0, 0, 0,		/* L1 at 0 ... */
	0, 0, 0, 2, 0, 1, 0, 0,		/* ... with 2 entries */
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_snap_l1_past_eof[] = {
	0, 0, 0, 0, 0, 3, 0xff, 0,	/* 0x3ff00: aligned to 256 only */
	0, 0, 0, 2, 0, 1, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_snap_l1_eof[] = {
	0, 0, 0, 0, 0, 4, 0, 0,		/* 0x40000: the end of the file */
	0, 0, 0, 2, 0, 1, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_snap_no_l1[] = {
	0, 0, 0, 0, 0, 0, 0, 0,		/* no L1 table at all */
	0, 0, 0, 0, 0, 1, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	'x', 0, 0, 0, 0, 0, 0, 0,
};

static const u8 qv_bm_good[] = {
	0, 0, 0, 0, 0, 3, 0, 0,		/* table at 0x30000 */
	0, 0, 0, 1,			/* 1 entry */
	0, 0, 0, 2,			/* auto */
	1, 16,				/* dirty, 64 KiB granularity */
	0, 3,				/* name 3 bytes */
	0, 0, 0, 0,			/* no extra data */
	'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_bad_pad[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 16, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 1,
};

static const u8 qv_bm_bad_type[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 2, 16, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_bad_flags[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8, 1, 16, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_gran8[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 8, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_gran64[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 64, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_no_name[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 16, 0, 0,
	0, 0, 0, 0,
};

/* 512-byte granularity on 1 GiB: 256 KiB of bitmap, 4 table entries. */
static const u8 qv_bm_small_table[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 9, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

/* The same, in use: its size may be stale. */
static const u8 qv_bm_small_in_use[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 1, 9, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_table_unaligned[] = {
	0, 0, 0, 0, 0, 3, 0, 8, 0, 0, 0, 1, 0, 0, 0, 2, 1, 16, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_table_empty[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 16, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_extra_huge[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 16, 0, 3,
	0xff, 0xff, 0xff, 0xf8, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_extra[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 6, 1, 16, 0, 3,
	0, 0, 0, 4, 1, 2, 3, 4, 'b', 'm', '0', 0,
};

/* Name of 1024 bytes (all NUL: the size check comes first). */
static const u8 qv_bm_long_name[24 + 1024] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 16, 4, 0,
	0, 0, 0, 0,
};

static const u8 qv_bm_table_huge[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 8, 0, 0, 1, 0, 0, 0, 2, 1, 16, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

static const u8 qv_bm_table_past_eof[] = {
	0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0x20, 1, 0, 0, 0, 2, 1, 16, 0, 3,
	0, 0, 0, 0, 'b', 'm', '0', 0, 0, 0, 0, 0,
};

#define QV_RAW(b)	.bytes = (b), .len = sizeof(b)

static const struct qimg_raw_vec qimg_snapshot_vecs[] = {
	{ .name = "snapshot v3 entry", QV_RAW(qv_snap_v3), .expect = 0,
	  .entry_len = 64, .label = "1" },
	{ .name = "snapshot entry truncated", .bytes = qv_snap_v3, .len = 39,
	  .expect = -EUCLEAN },
	{ .name = "snapshot entry cut before padding", .bytes = qv_snap_v3,
	  .len = 60, .expect = -EUCLEAN },
	{ .name = "snapshot L1 unaligned", QV_RAW(qv_snap_bad_l1),
	  .expect = -EUCLEAN,
	  .msg = "snapshot 'x' L1 table offset 0x30008 is not cluster aligned" },
	{ .name = "snapshot name past the table", QV_RAW(qv_snap_long_name),
	  .expect = -EUCLEAN },
	{ .name = "snapshot extra data over 1 KiB",
	  QV_RAW(qv_snap_big_extra), .expect = -EFBIG },
	{ .name = "snapshot L1 in the header", QV_RAW(qv_snap_l1_in_header),
	  .expect = -EUCLEAN,
	  .msg = "snapshot 'x' L1 table at 0x0 overlaps the image header" },
	{ .name = "snapshot L1 unaligned near EOF",
	  QV_RAW(qv_snap_l1_past_eof), .expect = -EUCLEAN },
	{ .name = "snapshot L1 past EOF", QV_RAW(qv_snap_l1_eof),
	  .expect = -EUCLEAN,
	  .msg = "snapshot 'x' L1 table at 0x40000 (16 bytes) extends past the end of the file (262144 bytes)" },
	{ .name = "snapshot without L1 table", QV_RAW(qv_snap_no_l1),
	  .expect = 0, .entry_len = 48, .label = "x" },
	{ .name = "snapshot L1 over 32 MiB", QV_RAW(qv_snap_big_l1),
	  .expect = -EFBIG },
};

static const struct qimg_raw_vec qimg_bitmap_vecs[] = {
	{ .name = "bitmap entry", QV_RAW(qv_bm_good), .expect = 0,
	  .entry_len = 32, .label = "bm0" },
	{ .name = "bitmap entry with extra data", QV_RAW(qv_bm_extra),
	  .expect = 0, .entry_len = 32, .label = "bm0" },
	{ .name = "bitmap entry truncated", .bytes = qv_bm_good, .len = 23,
	  .expect = -EUCLEAN },
	{ .name = "bitmap entry cut before padding", .bytes = qv_bm_good,
	  .len = 28, .expect = -EUCLEAN },
	{ .name = "bitmap padding not zero", QV_RAW(qv_bm_bad_pad),
	  .expect = -EUCLEAN },
	{ .name = "bitmap type 2", QV_RAW(qv_bm_bad_type),
	  .expect = -EUCLEAN },
	{ .name = "bitmap reserved flag", QV_RAW(qv_bm_bad_flags),
	  .expect = -EUCLEAN },
	{ .name = "bitmap granularity 2^8", QV_RAW(qv_bm_gran8),
	  .expect = -ERANGE },
	{ .name = "bitmap granularity 2^64", QV_RAW(qv_bm_gran64),
	  .expect = -EUCLEAN },
	{ .name = "bitmap without a name", QV_RAW(qv_bm_no_name),
	  .expect = -EUCLEAN },
	{ .name = "bitmap table too small", QV_RAW(qv_bm_small_table),
	  .expect = -EUCLEAN },
	{ .name = "bitmap table too small but in use",
	  QV_RAW(qv_bm_small_in_use), .expect = 0, .entry_len = 32,
	  .label = "bm0" },
	{ .name = "bitmap table unaligned", QV_RAW(qv_bm_table_unaligned),
	  .expect = -EUCLEAN,
	  .msg = "bitmap 'bm0' table offset 0x30008 is not cluster aligned" },
	{ .name = "bitmap name of 1024 bytes", QV_RAW(qv_bm_long_name),
	  .expect = -EFBIG },
	{ .name = "bitmap table over 2^27 entries", QV_RAW(qv_bm_table_huge),
	  .expect = -EFBIG },
	{ .name = "bitmap table past EOF", QV_RAW(qv_bm_table_past_eof),
	  .expect = -EUCLEAN,
	  .msg = "bitmap 'bm0' table at 0x30000 (65544 bytes) extends past the end of the file (262144 bytes)" },
	{ .name = "bitmap table empty", QV_RAW(qv_bm_table_empty),
	  .expect = -EUCLEAN },
	{ .name = "bitmap extra data size near 2^32",
	  QV_RAW(qv_bm_extra_huge), .expect = -EUCLEAN },
};

#endif /* QIMG_VECTORS_H */
