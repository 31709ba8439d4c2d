/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg format core: qcow2 v2/v3 on-disk structures, decoding, validation and
 * encoding.
 *
 * This file and qimg_fmt.c are shared verbatim by the kernel module, the
 * qimgctl tool, KUnit and the userspace tests.  They do no I/O and no
 * allocation: every function works on buffers the caller owns, so the same
 * code can be exercised by a fuzzer in userspace and trusted in the kernel.
 *
 * Conventions:
 *  - struct qimg_disk_* are the on-disk layouts (big-endian, packed, sizes
 *    checked with BUILD_BUG_ON in qimg_fmt.c).  They are converted once, into
 *    the CPU-endian structures below, and never used past that boundary.
 *  - Functions return 0 or a negative errno.  Corrupt metadata is -EUCLEAN,
 *    a feature we do not implement is -EOPNOTSUPP, a value that is legal but
 *    out of the range we accept is -EFBIG/-ERANGE, a wrong magic is -EINVAL.
 *    Where a struct qimg_err is passed, it receives a one-line explanation
 *    meant for a human (dmesg or stderr); it may be NULL.
 */
#ifndef QIMG_FMT_H
#define QIMG_FMT_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/errno.h>
#include <linux/kernel.h>
#include <linux/string.h>
#include <linux/build_bug.h>
#include <linux/bits.h>
#include <linux/stdarg.h>
#include <linux/version.h>
#include <asm/byteorder.h>
/* The unaligned access helpers moved from asm/ to linux/ in 6.12. */
#if KERNEL_VERSION(6, 12, 0) <= LINUX_VERSION_CODE
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif
#else
#include "qimg_shim.h"
#endif

/* ------------------------------------------------------------------------ */
/* Constants of the qcow2 format                                            */

#define QIMG_MAGIC			0x514649fbU	/* "QFI\xfb" */
#define QIMG_V2_HEADER_LEN		72
#define QIMG_V3_HEADER_LEN		104	/* without compression_type */
#define QIMG_V3_HEADER_LEN_COMP		112	/* with compression_type + pad */

#define QIMG_MIN_CLUSTER_BITS		9
#define QIMG_MAX_CLUSTER_BITS		21
#define QIMG_MAX_REFCOUNT_ORDER		6

/*
 * Limits we enforce on values read from disk so that no arithmetic on them
 * can overflow and no table we would have to hold in memory is absurd.
 * They match or exceed what QEMU itself accepts.
 */
#define QIMG_MAX_L1_BYTES		(32ULL << 20)	/* 32 MiB */
#define QIMG_MAX_REFTABLE_BYTES		(8ULL << 20)	/* 8 MiB */
#define QIMG_MAX_SNAPSHOTS		65536
#define QIMG_MAX_BACKING_NAME		1023
#define QIMG_MAX_VIRTUAL_SIZE		BIT_ULL(61)	/* 2 EiB */
/* QEMU refuses snapshot entries with more extra data than this. */
#define QIMG_MAX_SNAPSHOT_EXTRA		1024
/* Largest qimg journal we accept (it is preallocated in the image). */
#define QIMG_MAX_JOURNAL_BYTES		BIT_ULL(30)	/* 1 GiB */
/* Host offsets are 56 bits wide in every table entry. */
#define QIMG_MAX_HOST_OFFSET		(BIT_ULL(56) - 1)

/* Incompatible feature bits */
#define QIMG_INCOMPAT_DIRTY_BIT		0
#define QIMG_INCOMPAT_CORRUPT_BIT	1
#define QIMG_INCOMPAT_DATA_FILE_BIT	2
#define QIMG_INCOMPAT_COMPRESSION_BIT	3
#define QIMG_INCOMPAT_EXTL2_BIT		4
/* qimg extension: the metadata journal holds unreplayed transactions. */
#define QIMG_INCOMPAT_JOURNAL_DIRTY_BIT	32

#define QIMG_INCOMPAT_DIRTY		BIT_ULL(QIMG_INCOMPAT_DIRTY_BIT)
#define QIMG_INCOMPAT_CORRUPT		BIT_ULL(QIMG_INCOMPAT_CORRUPT_BIT)
#define QIMG_INCOMPAT_DATA_FILE		BIT_ULL(QIMG_INCOMPAT_DATA_FILE_BIT)
#define QIMG_INCOMPAT_COMPRESSION	BIT_ULL(QIMG_INCOMPAT_COMPRESSION_BIT)
#define QIMG_INCOMPAT_EXTL2		BIT_ULL(QIMG_INCOMPAT_EXTL2_BIT)
#define QIMG_INCOMPAT_JOURNAL_DIRTY	BIT_ULL(QIMG_INCOMPAT_JOURNAL_DIRTY_BIT)

/* Compatible feature bits */
#define QIMG_COMPAT_LAZY_REFCOUNTS_BIT	0
#define QIMG_COMPAT_LAZY_REFCOUNTS	BIT_ULL(QIMG_COMPAT_LAZY_REFCOUNTS_BIT)

/* Autoclear feature bits */
#define QIMG_AUTOCLEAR_BITMAPS_BIT	0
#define QIMG_AUTOCLEAR_DATA_RAW_BIT	1
/* qimg extensions, cleared by any writer that does not know them */
#define QIMG_AUTOCLEAR_JOURNAL_VALID_BIT 32
#define QIMG_AUTOCLEAR_CHECKSUMS_BIT	33

#define QIMG_AUTOCLEAR_BITMAPS		BIT_ULL(QIMG_AUTOCLEAR_BITMAPS_BIT)
#define QIMG_AUTOCLEAR_DATA_RAW		BIT_ULL(QIMG_AUTOCLEAR_DATA_RAW_BIT)
#define QIMG_AUTOCLEAR_JOURNAL_VALID	BIT_ULL(QIMG_AUTOCLEAR_JOURNAL_VALID_BIT)
#define QIMG_AUTOCLEAR_CHECKSUMS	BIT_ULL(QIMG_AUTOCLEAR_CHECKSUMS_BIT)

/* Incompatible bits this core can decode (the driver may accept fewer). */
#define QIMG_INCOMPAT_KNOWN	(QIMG_INCOMPAT_DIRTY | QIMG_INCOMPAT_CORRUPT | \
				 QIMG_INCOMPAT_DATA_FILE | \
				 QIMG_INCOMPAT_COMPRESSION | QIMG_INCOMPAT_EXTL2 | \
				 QIMG_INCOMPAT_JOURNAL_DIRTY)

/* Header extension types */
#define QIMG_EXT_END			0x00000000U
#define QIMG_EXT_BACKING_FORMAT		0xe2792acaU
#define QIMG_EXT_FEATURE_TABLE		0x6803f857U
#define QIMG_EXT_BITMAPS		0x23852875U
#define QIMG_EXT_CRYPTO			0x0537be77U
#define QIMG_EXT_DATA_FILE		0x44415441U
/* qimg extension: location of the metadata journal ("qjrn") */
#define QIMG_EXT_JOURNAL		0x716a726eU

/* Encryption methods (header crypt_method) */
#define QIMG_CRYPT_NONE			0
#define QIMG_CRYPT_AES			1
#define QIMG_CRYPT_LUKS			2

/* Compression types (header byte 104) */
#define QIMG_COMPRESSION_ZLIB		0
#define QIMG_COMPRESSION_ZSTD		1

/* Feature-name table entry types */
#define QIMG_FEAT_INCOMPAT		0
#define QIMG_FEAT_COMPAT		1
#define QIMG_FEAT_AUTOCLEAR		2

/* Table entry bits */
#define QIMG_OFLAG_COPIED		BIT_ULL(63)
#define QIMG_OFLAG_COMPRESSED		BIT_ULL(62)
#define QIMG_OFLAG_ZERO			BIT_ULL(0)
#define QIMG_L1E_OFFSET_MASK		0x00fffffffffffe00ULL
#define QIMG_L2E_OFFSET_MASK		0x00fffffffffffe00ULL
#define QIMG_REFT_OFFSET_MASK		0xfffffffffffffe00ULL
#define QIMG_L1E_RESERVED_MASK		0x7f000000000001ffULL
#define QIMG_L2E_STD_RESERVED_MASK	0x3f000000000001feULL
#define QIMG_REFT_RESERVED_MASK		0x00000000000001ffULL

/* Compressed clusters count their length in 512-byte sectors. */
#define QIMG_COMPRESSED_SECTOR_SIZE	512

/* Extended L2 entries: 32 subclusters per cluster. */
#define QIMG_SUBCLUSTERS		32

/* Bitmaps */
#define QIMG_BITMAP_IN_USE		BIT(0)
#define QIMG_BITMAP_AUTO		BIT(1)
#define QIMG_BITMAP_EXTRA_DATA_COMPAT	BIT(2)
#define QIMG_BITMAP_RESERVED_FLAGS	(~7U)
#define QIMG_MAX_BITMAPS		65535
#define QIMG_MAX_BITMAP_NAME		1023
#define QIMG_MAX_BITMAP_DIR_SIZE	(64ULL << 20)
#define QIMG_BITMAP_TYPE_DIRTY		1
#define QIMG_BITMAP_MIN_GRAN_BITS	9
#define QIMG_BITMAP_MAX_GRAN_BITS	31
#define QIMG_BME_OFFSET_MASK		0x00fffffffffffe00ULL
#define QIMG_BME_ALL_ONES		1ULL	/* with offset 0 */
#define QIMG_BME_RESERVED_MASK		0xff000000000001feULL
/* Entries in one bitmap table, the limit QEMU enforces too. */
#define QIMG_BITMAP_MAX_TABLE_SIZE	0x8000000U

/* ------------------------------------------------------------------------ */
/* On-disk layouts (big-endian)                                             */

struct qimg_disk_header {
	__be32 magic;
	__be32 version;
	__be64 backing_file_offset;
	__be32 backing_file_size;
	__be32 cluster_bits;
	__be64 size;
	__be32 crypt_method;
	__be32 l1_size;
	__be64 l1_table_offset;
	__be64 refcount_table_offset;
	__be32 refcount_table_clusters;
	__be32 nb_snapshots;
	__be64 snapshots_offset;
	/* version 3 from here on */
	__be64 incompatible_features;
	__be64 compatible_features;
	__be64 autoclear_features;
	__be32 refcount_order;
	__be32 header_length;
	/* present when header_length >= 105 */
	__u8 compression_type;
	__u8 padding[7];
} __packed;

struct qimg_disk_ext_hdr {
	__be32 type;
	__be32 len;
} __packed;

struct qimg_disk_feature {
	__u8 type;
	__u8 bit;
	char name[46];
} __packed;

struct qimg_disk_bitmaps_ext {
	__be32 nb_bitmaps;
	__be32 reserved;
	__be64 bitmap_directory_size;
	__be64 bitmap_directory_offset;
} __packed;

struct qimg_disk_bitmap_dir_entry {
	__be64 bitmap_table_offset;
	__be32 bitmap_table_size;
	__be32 flags;
	__u8 type;
	__u8 granularity_bits;
	__be16 name_size;
	__be32 extra_data_size;
	/* extra data, then name, then padding to a multiple of 8 */
} __packed;

struct qimg_disk_snapshot {
	__be64 l1_table_offset;
	__be32 l1_size;
	__be16 id_str_size;
	__be16 name_size;
	__be32 date_sec;
	__be32 date_nsec;
	__be64 vm_clock_nsec;
	__be32 vm_state_size;
	__be32 extra_data_size;
	/* extra data, id string, name, padding to a multiple of 8 */
} __packed;

/*
 * Data of the qimg journal header extension (QIMG_EXT_JOURNAL), exactly 16
 * bytes: where the preallocated journal area lives in the image file.
 *   offset: cluster aligned and past the header cluster; or 0: no area
 *           is allocated, the image only asks for a journal of @size
 *           bytes while attached (no feature bit goes with that)
 *   size:   a non-zero multiple of the cluster size, at most
 *           QIMG_MAX_JOURNAL_BYTES; [offset, offset + size) lies inside
 *           the file and overlaps neither the L1 nor the refcount table.
 * The journal's own format is defined by qimg_journal_fmt.[ch], not here.
 */
struct qimg_disk_journal_ext {
	__be64 offset;
	__be64 size;
} __packed;

struct qimg_disk_snapshot_extra {
	__be64 vm_state_size_large;
	__be64 disk_size;
	__be64 icount;
} __packed;

/* ------------------------------------------------------------------------ */
/* Decoded (CPU-endian) structures                                          */

struct qimg_err {
	char msg[160];
};

__printf(3, 4) int qimg_fail(struct qimg_err *err, int ret,
			     const char *fmt, ...);

/*
 * Geometry derived from a validated header; everything the hot path needs
 * to turn a guest offset into table indexes, precomputed once.
 */
struct qimg_geom {
	u32 cluster_bits;
	u64 cluster_size;
	u32 l2_entry_shift;	/* 3 (8-byte entries) or 4 (extended L2) */
	u32 l2_bits;		/* log2 of entries per L2 table */
	u64 l2_entries;
	bool ext_l2;
	u32 subcluster_bits;	/* cluster_bits - 5 with extended L2 */
	u32 refcount_order;
	u32 rb_bits;		/* log2 of entries per refcount block */
	u64 rb_entries;
	u64 refcount_max;	/* (1 << refcount_bits) - 1 */
	u32 csize_shift;	/* compressed descriptor: size field shift */
	u64 csize_mask;		/* compressed descriptor: size field mask */
	u64 coffset_mask;	/* compressed descriptor: offset mask */
	u64 virtual_size;
	u32 l1_size;		/* entries actually needed for virtual_size */
	/*
	 * External data file (incompatible bit 2): an L2 entry with offset 0
	 * and COPIED set maps host offset 0, and host offsets index the data
	 * file, so qimg_l2_decode() callers pass the data file's size.
	 */
	bool data_file;
};

/* An extension we do not interpret, kept so a header rewrite preserves it. */
struct qimg_unknown_ext {
	u32 type;
	u32 len;
	u32 offset;		/* of its data, from the start of the image */
};

#define QIMG_MAX_UNKNOWN_EXTS	16

struct qimg_header {
	u32 version;
	u64 backing_file_offset;
	u32 backing_file_size;
	u32 cluster_bits;
	u64 size;
	u32 crypt_method;
	u32 l1_size;
	u64 l1_table_offset;
	u64 refcount_table_offset;
	u32 refcount_table_clusters;
	u32 nb_snapshots;
	u64 snapshots_offset;
	u64 incompatible_features;
	u64 compatible_features;
	u64 autoclear_features;
	u32 refcount_order;
	u32 header_length;
	u8 compression_type;

	/* Header extensions */
	char backing_fmt[32];		/* "" when absent */
	char backing_file[QIMG_MAX_BACKING_NAME + 1];
	bool has_bitmaps_ext;
	u32 nb_bitmaps;
	u64 bitmap_directory_size;
	u64 bitmap_directory_offset;
	bool has_data_file;
	char data_file[QIMG_MAX_BACKING_NAME + 1];
	bool has_crypto_ext;
	u64 crypto_offset;		/* LUKS header, QIMG_CRYPT_LUKS only */
	u64 crypto_length;
	bool has_journal_ext;
	u64 journal_offset;		/* qimg journal extension */
	u64 journal_size;
	u32 ext_end;			/* byte after the end-of-extensions mark */
	u32 nb_unknown_exts;
	struct qimg_unknown_ext unknown_exts[QIMG_MAX_UNKNOWN_EXTS];

	struct qimg_geom geom;
};

/* Classification of one L2 entry (one cluster of guest data). */
enum qimg_cluster_type {
	QIMG_CLUSTER_UNALLOCATED,	/* read from backing file or zeros */
	QIMG_CLUSTER_ZERO_PLAIN,	/* reads as zero, no host cluster */
	QIMG_CLUSTER_ZERO_ALLOC,	/* reads as zero, host cluster kept */
	QIMG_CLUSTER_NORMAL,		/* data at host_offset */
	QIMG_CLUSTER_COMPRESSED,	/* compressed at host_offset */
};

/* Classification of one subcluster with extended L2 entries. */
enum qimg_subcluster_type {
	QIMG_SUBCLUSTER_UNALLOCATED,
	QIMG_SUBCLUSTER_ZERO,		/* reads as zero */
	QIMG_SUBCLUSTER_NORMAL,
	QIMG_SUBCLUSTER_COMPRESSED,
};

struct qimg_l2_entry {
	enum qimg_cluster_type type;
	u64 host_offset;	/* cluster-aligned, or byte offset if compressed */
	u64 compressed_len;	/* upper bound in bytes, compressed only */
	bool copied;		/* refcount is exactly one (COPIED flag) */
	u32 alloc_bitmap;	/* extended L2 only */
	u32 zero_bitmap;	/* extended L2 only */
	bool ext_l2;		/* decoded from an extended L2 entry */
};

struct qimg_snapshot {
	u64 l1_table_offset;
	u32 l1_size;
	u32 date_sec;
	u32 date_nsec;
	u64 vm_clock_nsec;
	u64 vm_state_size;
	u64 disk_size;		/* virtual size at snapshot time */
	bool has_disk_size;
	u64 icount;		/* -1ULL when absent */
	u32 extra_data_size;
	char id_str[64];
	char name[256];
	u32 entry_len;		/* bytes this entry occupies on disk */
};

struct qimg_bitmap {
	u64 bitmap_table_offset;
	u32 bitmap_table_size;
	u32 flags;
	u8 type;
	u8 granularity_bits;
	u32 extra_data_size;
	char name[QIMG_MAX_BITMAP_NAME + 1];
	u32 entry_len;
};

/* ------------------------------------------------------------------------ */
/* Header                                                                   */

/*
 * Peek at the first bytes of a file: returns the cluster size (>= 512) if
 * this looks like a qcow2 image whose header can be decoded once the
 * whole first cluster is read, -EINVAL if the magic is wrong, another
 * negative errno if the fixed fields are unusable.  @len >= 72.
 */
s64 qimg_header_peek_cluster_size(const void *buf, size_t len,
				  struct qimg_err *err);

/*
 * Decode and validate the header and its extensions from the first cluster
 * of the image (@len may be shorter than a cluster when the file is).
 * @file_size bounds every offset.  Unknown incompatible features are
 * refused with -EOPNOTSUPP, named from the feature-name table.  A set
 * corrupt bit is not an error here; callers decide (read-only).
 */
int qimg_header_decode(const void *buf, size_t len, u64 file_size,
		       struct qimg_header *h, struct qimg_err *err);

/*
 * qimg_header_decode() with @flags: QIMG_DECODE_ENCRYPTED accepts AES and
 * LUKS encrypted images (for describing them; nothing here decrypts), and
 * decodes a LUKS image's crypto header extension into h->crypto_offset
 * and h->crypto_length.  An unknown encryption method is still refused.
 */
#define QIMG_DECODE_ENCRYPTED	0x1
int qimg_header_decode_flags(const void *buf, size_t len, u64 file_size,
			     unsigned int flags, struct qimg_header *h,
			     struct qimg_err *err);

/*
 * Look up the name of a feature bit in the image's feature-name table,
 * written into @name (NUL-terminated, at most 47 bytes).  Returns 0 if
 * found, -ENOENT otherwise.
 */
int qimg_feature_name(const void *buf, size_t len, const struct qimg_header *h,
		      u8 type, u8 bit, char *name, size_t name_len);

/* Fill h->geom from the fixed header fields; used by decode and create. */
int qimg_geom_init(struct qimg_header *h, struct qimg_err *err);

/*
 * Encode a header (fixed part, then extensions: backing format, data file,
 * bitmaps, journal, the feature-name table, the end mark, then the backing
 * file name at h->backing_file_offset) into @buf of @len bytes, which is
 * zeroed first.  Unknown extensions are not written (callers that rewrite
 * an existing header only patch fixed fields).  Returns the number of bytes
 * used or a negative errno (-ENOSPC if it does not fit).
 *
 * Version 3 headers are written with header_length 112 (compression_type
 * present).  h->backing_file_offset is honoured when it lies after the end
 * mark; when it is 0 or would overlap the extensions the name is placed
 * right after the end mark instead, and the encoded header says so
 * (h->backing_file_size is ignored: the length of h->backing_file is used).
 * The feature-name table names every bit qimg knows; when a small cluster
 * leaves no room for all of them only the qimg-specific ones are written,
 * and if even those do not fit, none.
 */
int qimg_header_encode(const struct qimg_header *h, void *buf, size_t len);

/* Byte offset and size of the incompatible-feature field, for in-place
 * dirty/corrupt bit updates.
 */
#define QIMG_HDR_SIZE_OFFSET		24
#define QIMG_HDR_INCOMPAT_OFFSET	72
#define QIMG_HDR_AUTOCLEAR_OFFSET	88

/* ------------------------------------------------------------------------ */
/* Address arithmetic                                                       */

static inline u64 qimg_l1_index(const struct qimg_geom *g, u64 guest)
{
	return guest >> (g->l2_bits + g->cluster_bits);
}

static inline u64 qimg_l2_index(const struct qimg_geom *g, u64 guest)
{
	return (guest >> g->cluster_bits) & (g->l2_entries - 1);
}

static inline u64 qimg_cluster_offset(const struct qimg_geom *g, u64 off)
{
	return off & (g->cluster_size - 1);
}

static inline u64 qimg_size_to_clusters(const struct qimg_geom *g, u64 size)
{
	return (size + g->cluster_size - 1) >> g->cluster_bits;
}

/* Entries in the L1 table needed to map @virtual_size bytes. */
u64 qimg_l1_entries_for(u32 cluster_bits, bool ext_l2, u64 virtual_size);

/* ------------------------------------------------------------------------ */
/* L1 / L2 entries                                                          */

/*
 * Decode an L1 entry.  *l2_offset is 0 for an unallocated L2 table.  Returns
 * -EUCLEAN (with a message) if reserved bits are set, the offset is not
 * cluster aligned, or it points past @file_size.
 */
int qimg_l1_decode(const struct qimg_geom *g, u64 raw, u64 file_size,
		   u64 *l2_offset, bool *copied, struct qimg_err *err);
u64 qimg_l1_encode(u64 l2_offset, bool copied);

/*
 * Decode one L2 entry.  @raw is the first 64 bits, @bitmap the second for
 * extended L2 (ignored otherwise).  @version matters: v2 has no zero flag.
 * A normal cluster must start inside @file_size (the data file's size for
 * images with an external data file); a compressed one must start inside
 * it, but its last sector may run past the end of the file (QEMU does not
 * pad the file), so readers clamp compressed reads to the file size.
 */
int qimg_l2_decode(const struct qimg_geom *g, u32 version, u64 raw,
		   u64 bitmap, u64 file_size, struct qimg_l2_entry *e,
		   struct qimg_err *err);
u64 qimg_l2_encode_normal(u64 host_offset, bool copied);
u64 qimg_l2_encode_zero(u64 host_offset, bool copied);	/* v3 only */
/* Returns 0 (an invalid compressed entry) if the range does not fit. */
u64 qimg_l2_encode_compressed(const struct qimg_geom *g, u64 host_offset,
			      u64 compressed_len);

/* Subcluster @sc (0..31) of an extended L2 entry. */
enum qimg_subcluster_type qimg_subcluster_type(const struct qimg_l2_entry *e,
					       unsigned int sc);

/* ------------------------------------------------------------------------ */
/* Refcounts                                                                */

/* Read / write entry @index of a refcount block with 2^order-bit entries. */
u64 qimg_refcount_get(const void *block, u32 order, u64 index);
/* -ERANGE if @value does not fit in the entry width. */
int qimg_refcount_set(void *block, u32 order, u64 index, u64 value);

/* Decode a refcount table entry; *rb_offset is 0 when unallocated. */
int qimg_reftable_decode(const struct qimg_geom *g, u64 raw, u64 file_size,
			 u64 *rb_offset, struct qimg_err *err);

/* Which refcount table slot and which entry of that block cover @host. */
static inline u64 qimg_reftable_index(const struct qimg_geom *g, u64 host)
{
	return host >> (g->cluster_bits + g->rb_bits);
}

static inline u64 qimg_refblock_index(const struct qimg_geom *g, u64 host)
{
	return (host >> g->cluster_bits) & (g->rb_entries - 1);
}

/* ------------------------------------------------------------------------ */
/* Snapshots and bitmaps                                                    */

/*
 * Decode one snapshot table entry at the start of @buf.  s->entry_len tells
 * where the next one starts.  Checks the L1 table of the snapshot for
 * alignment and range.
 */
int qimg_snapshot_decode(const struct qimg_geom *g, const void *buf,
			 size_t len, u64 file_size, struct qimg_snapshot *s,
			 struct qimg_err *err);

/* Decode one bitmap directory entry at the start of @buf. */
int qimg_bitmap_decode(const struct qimg_geom *g, const void *buf, size_t len,
		       u64 file_size, struct qimg_bitmap *b,
		       struct qimg_err *err);

/* Decode a bitmap table entry; *data_offset 0 means all zeroes or all ones
 * (*all_ones tells which).
 */
int qimg_bitmap_table_decode(const struct qimg_geom *g, u64 raw,
			     u64 file_size, u64 *data_offset, bool *all_ones,
			     struct qimg_err *err);

/* ------------------------------------------------------------------------ */
/* Misc                                                                     */

/* Human-readable name of a known incompatible/compatible/autoclear bit. */
const char *qimg_known_feature_name(u8 type, u8 bit);

/*
 * The one statement of what the driver refuses to serve, shared so that
 * qimgctl explains an -EOPNOTSUPP from attach with the reason the kernel
 * acted on.  Returns NULL if the device can serve @h (read-write when
 * @writable), else a short name of the first feature it cannot serve,
 * such as "external data file".  A name returned only when @writable means
 * that a read-only attach would work.  The corrupt bit is not a feature:
 * callers refuse it for writing with -EUCLEAN themselves.
 */
const char *qimg_unsupported_feature(const struct qimg_header *h,
				     bool writable);

/* Does [a, a+alen) overlap [b, b+blen)?  Safe against overflow. */
static inline bool qimg_ranges_overlap(u64 a, u64 alen, u64 b, u64 blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

/* a + b, or -EOVERFLOW-style failure reported as false. */
static inline bool qimg_add_ok(u64 a, u64 b, u64 *res)
{
	*res = a + b;
	return *res >= a;
}

/* ------------------------------------------------------------------------ */
/* Metadata overlap check (QEMU's overlap-check, "cached" level)            */

/*
 * Kinds of metadata a host write must not touch.  The first five are
 * fixed ranges named by the header; the last three are clusters named by
 * in-memory tables (the active L1 table, the refcount table, the snapshot
 * table), which the driver keeps in a per-cluster index.
 */
#define QIMG_OL_HEADER		BIT(0)
#define QIMG_OL_ACTIVE_L1	BIT(1)
#define QIMG_OL_REFCOUNT_TABLE	BIT(2)
#define QIMG_OL_SNAPSHOT_TABLE	BIT(3)
#define QIMG_OL_BITMAP_DIR	BIT(4)
#define QIMG_OL_ACTIVE_L2	BIT(5)
#define QIMG_OL_REFCOUNT_BLOCK	BIT(6)
#define QIMG_OL_INACTIVE_L1	BIT(7)
#define QIMG_OL_NR_FIXED	5

/* The fixed ranges: index i describes kind BIT(i); len 0 is absent. */
struct qimg_ol_fixed {
	u64 off[QIMG_OL_NR_FIXED];
	u64 len[QIMG_OL_NR_FIXED];
};

/*
 * Fill @f from @h.  @snap_table_len: bytes the snapshot table occupies
 * (its entries have variable length, so the caller walks them; 0 when
 * unknown: then nb_snapshots fixed-size entries, a lower bound).
 */
void qimg_ol_fixed_init(struct qimg_ol_fixed *f, const struct qimg_header *h,
			u64 snap_table_len);

/*
 * Does [off, off + len) overlap a fixed range whose kind is not in @ign?
 * Returns the kind of the first one (lowest bit), or 0.
 */
u32 qimg_ol_fixed_hit(const struct qimg_ol_fixed *f, u64 off, u64 len,
		      u32 ign);

/* Name of the lowest kind in @kinds, for messages ("L1 table", ...). */
const char *qimg_ol_name(u32 kinds);

#endif /* QIMG_FMT_H */
