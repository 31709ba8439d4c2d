/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg format core, QED part: the QEMU Enhanced Disk format's header and
 * L1/L2 tables, decoded and validated, and the rules that map a guest
 * offset to what backs it.
 *
 * Like qimg_fmt.c this does no I/O and no allocation: callers read the
 * header and tables and hand the bytes in, so the same code serves the
 * kernel (attaching QED images, later), qimgctl and the tests.
 *
 * QED in short (all fields little-endian):
 *  - a header of 64 bytes at offset 0, in the first header_size clusters,
 *    which may also hold the backing file name;
 *  - one L1 table of table_size clusters, always present, whose entries are
 *    the byte offsets of L2 tables (0: no L2 table);
 *  - L2 tables of table_size clusters too, whose entries are the byte
 *    offsets of data clusters, 0 for "not allocated here: read the backing
 *    file, or zeroes without one" and 1 for "reads as zeroes".
 *
 * The validity rules are QEMU's (block/qed.c, block/qed.h), including
 * their edges, because qimgctl must accept and refuse exactly what
 * qemu-img does:
 *  - a cluster offset is valid when it is cluster aligned, past the header
 *    clusters and below the file size rounded down to whole clusters
 *    (after rounding it up to whole 512-byte sectors, as QEMU's block
 *    layer sees files);
 *  - a table offset is valid when its first and its last cluster are both
 *    valid and the last lies strictly after the first, so a table of one
 *    cluster never is (QEMU creates such images but cannot open them);
 *  - the largest image size is computed in 64-bit arithmetic that wraps
 *    (so the largest geometries allow no image at all).
 */
#ifndef QIMG_QED_H
#define QIMG_QED_H

#include "qimg_fmt.h"

#define QIMG_QED_MAGIC			0x00444551U	/* "QED\0" as le32 */
#define QIMG_QED_HEADER_LEN		64

/* Feature bits (the "features" field: unknown ones make an image unusable). */
#define QIMG_QED_F_BACKING_FILE		BIT_ULL(0)
#define QIMG_QED_F_NEED_CHECK		BIT_ULL(1)
#define QIMG_QED_F_BACKING_RAW		BIT_ULL(2)	/* do not probe: raw */
#define QIMG_QED_FEATURES_KNOWN		(QIMG_QED_F_BACKING_FILE | \
					 QIMG_QED_F_NEED_CHECK | \
					 QIMG_QED_F_BACKING_RAW)
/* No compat or autoclear feature is defined; unknown ones are harmless. */
#define QIMG_QED_COMPAT_KNOWN		0ULL
#define QIMG_QED_AUTOCLEAR_KNOWN	0ULL

#define QIMG_QED_MIN_CLUSTER		4096U
#define QIMG_QED_MAX_CLUSTER		(64U << 20)
#define QIMG_QED_MIN_TABLE		1U	/* in clusters */
#define QIMG_QED_MAX_TABLE		16U
/* Longest backing file name QEMU reads (its buffer holds 4096 bytes). */
#define QIMG_QED_MAX_BACKING_NAME	4095U

/* L2 entry values with a meaning of their own. */
#define QIMG_QED_UNALLOC		0ULL
#define QIMG_QED_ZERO			1ULL

/* Byte offset of the features field, for rewriting just that field. */
#define QIMG_QED_OFF_FEATURES		16

/* The on-disk header. */
struct qimg_qed_disk_header {
	__le32 magic;
	__le32 cluster_size;
	__le32 table_size;		/* L1 and L2 tables, in clusters */
	__le32 header_size;		/* in clusters */
	__le64 features;
	__le64 compat_features;
	__le64 autoclear_features;
	__le64 l1_table_offset;		/* bytes */
	__le64 image_size;		/* guest bytes */
	__le32 backing_filename_offset;	/* bytes from the start of the file */
	__le32 backing_filename_size;	/* bytes, not NUL-terminated */
} __packed;

/* A decoded and validated header, with the geometry derived from it. */
struct qimg_qed_header {
	u32 cluster_size;
	u32 table_size;
	u32 header_size;
	u64 features;
	u64 compat_features;
	u64 autoclear_features;
	u64 l1_table_offset;
	u64 image_size;
	u32 backing_filename_offset;
	u32 backing_filename_size;

	/* Derived */
	u32 cluster_bits;
	u32 table_entries;	/* entries of every (L1 or L2) table */
	u32 table_bits;		/* log2(table_entries) */
	u32 table_bytes;	/* cluster_size * table_size */
	u64 header_bytes;	/* header_size * cluster_size */
	u64 file_size;		/* the file's size as QEMU sees it (above) */
	bool has_backing;	/* QIMG_QED_F_BACKING_FILE */
	bool backing_raw;	/* the backing file is raw, not probed */
	bool need_check;	/* QIMG_QED_F_NEED_CHECK: not closed cleanly */
};

/* Does @buf (@len bytes from offset 0) start with the QED magic? */
bool qimg_qed_probe(const void *buf, size_t len);

/*
 * Decode and validate the header in @buf (@len bytes from offset 0 of the
 * image file; missing bytes up to QIMG_QED_HEADER_LEN read as zeroes, as
 * QEMU reads a short file) of an image file of @file_size bytes.  Checks
 * in QEMU's order, with QEMU's words in @err:
 *   -EINVAL     not QED, or a field QEMU refuses (cluster, table, image or
 *               header size, L1 table offset, backing file name location);
 *   -EOPNOTSUPP an unknown bit in features.
 * The backing file name, when there is one, is not in @buf necessarily:
 * read @h->backing_filename_size bytes at @h->backing_filename_offset and
 * check them with qimg_qed_backing_name().
 */
int qimg_qed_header_decode(const void *buf, size_t len, u64 file_size,
			   struct qimg_qed_header *h, struct qimg_err *err);

/*
 * Copy the backing file name read from the image (@raw, exactly
 * @h->backing_filename_size bytes) into @out (@outlen bytes) with a NUL;
 * like QEMU, an embedded NUL ends the name.  -EINVAL if it does not fit.
 */
int qimg_qed_backing_name(const struct qimg_qed_header *h, const void *raw,
			  char *out, size_t outlen, struct qimg_err *err);

/* QEMU's largest image size for a geometry (64-bit, wrapping). */
u64 qimg_qed_max_image_size(u32 cluster_size, u32 table_size);

/* QEMU's cluster offset and table offset validity (see the top comment). */
bool qimg_qed_cluster_ok(const struct qimg_qed_header *h, u64 offset);
bool qimg_qed_table_ok(const struct qimg_qed_header *h, u64 offset);

/* Indexes of guest offset @pos (< image_size) in the L1 and L2 tables. */
static inline u32 qimg_qed_l1_index(const struct qimg_qed_header *h, u64 pos)
{
	return (u32)(pos >> (h->cluster_bits + h->table_bits));
}

static inline u32 qimg_qed_l2_index(const struct qimg_qed_header *h, u64 pos)
{
	return (u32)(pos >> h->cluster_bits) & (h->table_entries - 1);
}

/* Guest bytes one L2 table maps. */
static inline u64 qimg_qed_l2_span(const struct qimg_qed_header *h)
{
	return 1ULL << (h->cluster_bits + h->table_bits);
}

/* Raw entry @idx of a table (@table: table_bytes bytes as read). */
static inline u64 qimg_qed_table_get(const void *table, u32 idx)
{
	return get_unaligned_le64((const u8 *)table + (size_t)idx * 8);
}

static inline void qimg_qed_table_set(void *table, u32 idx, u64 val)
{
	put_unaligned_le64(val, (u8 *)table + (size_t)idx * 8);
}

/*
 * Decode an L1 entry: @l2_offset becomes the L2 table's offset, or 0 when
 * the entry is empty (the whole range reads from the backing file).
 * -EUCLEAN (with @err) when the offset is not a valid table offset; 1, the
 * zero marker of L2 entries, is one of those.
 */
int qimg_qed_l1_decode(const struct qimg_qed_header *h, u64 raw,
		       u64 *l2_offset, struct qimg_err *err);

/* What an L2 entry says about a guest cluster. */
enum qimg_qed_cluster {
	QIMG_QED_CL_UNALLOC,	/* the backing file's data (or zeroes) */
	QIMG_QED_CL_ZERO,	/* reads as zeroes, whatever is below */
	QIMG_QED_CL_DATA,	/* data in the image file at host_offset */
};

struct qimg_qed_l2_entry {
	enum qimg_qed_cluster type;
	u64 host_offset;	/* QIMG_QED_CL_DATA only */
};

/* Decode an L2 entry; -EUCLEAN when a data offset is not a valid one. */
int qimg_qed_l2_decode(const struct qimg_qed_header *h, u64 raw,
		       struct qimg_qed_l2_entry *e, struct qimg_err *err);

/*
 * QEMU's run of like entries in an L2 table (@table as read), as its
 * cluster lookup forms them: from entry @idx, at most @max entries (and not
 * past the table) that are all unallocated, all zero, or data clusters
 * following each other in the file.  Returns the number of entries (>= 1
 * when @max >= 1 and @idx is in the table, else 0); @first is the first
 * entry's raw value.  Only the first entry of a data run is validated by
 * the caller (qimg_qed_l2_decode()), as QEMU does.
 */
u32 qimg_qed_l2_run(const struct qimg_qed_header *h, const void *table,
		    u32 idx, u32 max, u64 *first);

#endif /* QIMG_QED_H */
