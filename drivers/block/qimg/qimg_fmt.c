// SPDX-License-Identifier: GPL-2.0
/*
 * qimg format core: decode, validate and encode qcow2 v2/v3 metadata.
 *
 * Everything here is a pure function over buffers owned by the caller: no
 * allocation, no I/O, no locking.  The same file is compiled into the
 * kernel module and, through tools/include/qimg_shim.h, into qimgctl, the
 * unit tests and the fuzzer, so every check is exercised in userspace with
 * sanitizers before the kernel trusts it.
 *
 * All values read from the image are untrusted.  Each check below either
 * bounds a value before it is used in arithmetic, or uses qimg_add_ok() so
 * that no sum of on-disk values can wrap.
 */
#include "qimg_fmt.h"

/*
 * Say why in @err (if given) and return @ret: the one way the format core
 * modules (this file, qimg_qed.c, qimg_journal_fmt.c) report bad input.
 */
int qimg_fail(struct qimg_err *err, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return ret;
}

/* Sizes are part of the on-disk format; a compiler padding them is a bug. */
static inline void qimg_fmt_build_checks(void)
{
	BUILD_BUG_ON(sizeof(struct qimg_disk_header) != 112);
	BUILD_BUG_ON(sizeof(struct qimg_disk_ext_hdr) != 8);
	BUILD_BUG_ON(sizeof(struct qimg_disk_feature) != 48);
	BUILD_BUG_ON(sizeof(struct qimg_disk_bitmaps_ext) != 24);
	BUILD_BUG_ON(sizeof(struct qimg_disk_bitmap_dir_entry) != 24);
	BUILD_BUG_ON(sizeof(struct qimg_disk_snapshot) != 40);
	BUILD_BUG_ON(sizeof(struct qimg_disk_snapshot_extra) != 24);
	BUILD_BUG_ON(sizeof(struct qimg_disk_journal_ext) != 16);
	BUILD_BUG_ON(QIMG_HDR_INCOMPAT_OFFSET !=
		     offsetof(struct qimg_disk_header, incompatible_features));
	BUILD_BUG_ON(QIMG_HDR_AUTOCLEAR_OFFSET !=
		     offsetof(struct qimg_disk_header, autoclear_features));
	BUILD_BUG_ON(QIMG_V3_HEADER_LEN !=
		     offsetof(struct qimg_disk_header, compression_type));
}

static inline u64 qimg_round_up8(u64 v)
{
	return (v + 7) & ~7ULL;
}

/* ------------------------------------------------------------------------ */
/* Feature names                                                            */

struct qimg_known_feature {
	u8 type;
	u8 bit;
	bool qimg_only;		/* not in QEMU's own table */
	const char *name;
};

static const struct qimg_known_feature qimg_known_features[] = {
	{ QIMG_FEAT_INCOMPAT, QIMG_INCOMPAT_DIRTY_BIT, false, "dirty bit" },
	{ QIMG_FEAT_INCOMPAT, QIMG_INCOMPAT_CORRUPT_BIT, false, "corrupt bit" },
	{ QIMG_FEAT_INCOMPAT, QIMG_INCOMPAT_DATA_FILE_BIT, false,
	  "external data file" },
	{ QIMG_FEAT_INCOMPAT, QIMG_INCOMPAT_COMPRESSION_BIT, false,
	  "compression type" },
	{ QIMG_FEAT_INCOMPAT, QIMG_INCOMPAT_EXTL2_BIT, false,
	  "extended L2 entries" },
	{ QIMG_FEAT_INCOMPAT, QIMG_INCOMPAT_JOURNAL_DIRTY_BIT, true,
	  "journal dirty" },
	{ QIMG_FEAT_COMPAT, QIMG_COMPAT_LAZY_REFCOUNTS_BIT, false,
	  "lazy refcounts" },
	{ QIMG_FEAT_AUTOCLEAR, QIMG_AUTOCLEAR_BITMAPS_BIT, false, "bitmaps" },
	{ QIMG_FEAT_AUTOCLEAR, QIMG_AUTOCLEAR_DATA_RAW_BIT, false,
	  "raw external data" },
	{ QIMG_FEAT_AUTOCLEAR, QIMG_AUTOCLEAR_JOURNAL_VALID_BIT, true,
	  "journal valid" },
	{ QIMG_FEAT_AUTOCLEAR, QIMG_AUTOCLEAR_CHECKSUMS_BIT, true,
	  "metadata checksums" },
};

const char *qimg_known_feature_name(u8 type, u8 bit)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(qimg_known_features); i++)
		if (qimg_known_features[i].type == type &&
		    qimg_known_features[i].bit == bit)
			return qimg_known_features[i].name;
	return NULL;
}

const char *qimg_unsupported_feature(const struct qimg_header *h,
				     bool writable)
{
	u64 incompat = h->incompatible_features;

	/* Decode refuses these already; a header built elsewhere may not. */
	if (incompat & ~QIMG_INCOMPAT_KNOWN)
		return "unknown incompatible feature";
	if (incompat & QIMG_INCOMPAT_DATA_FILE || h->has_data_file)
		return "external data file";
	if (h->crypt_method || h->has_crypto_ext)
		return "encryption";
	/* Unreplayed transactions: the metadata on disk is not current. */
	if (incompat & QIMG_INCOMPAT_JOURNAL_DIRTY)
		return "dirty metadata journal (replay: attach read-write or qimgctl check -r)";
	if (incompat & QIMG_INCOMPAT_COMPRESSION &&
	    h->compression_type != QIMG_COMPRESSION_ZLIB)
		return h->compression_type == QIMG_COMPRESSION_ZSTD ?
		       "zstd compression" : "compression type other than zlib";
	if (!writable)
		return NULL;
	/* Lazy refcounts after a crash: refcounts must be rebuilt first. */
	if (incompat & QIMG_INCOMPAT_DIRTY)
		return "writing an image with the dirty bit set";
	return NULL;
}

/*
 * End of the header extension area: extensions may not run into the
 * backing file name (QEMU stops there too) nor past the first cluster, and
 * we can only look at the @len bytes we were given.
 */
static u64 qimg_ext_limit(const struct qimg_header *h, size_t len,
			  bool *by_len)
{
	u64 limit = (u64)1 << h->cluster_bits;

	if (h->backing_file_offset && h->backing_file_offset < limit)
		limit = h->backing_file_offset;
	*by_len = false;
	if (len < limit) {
		limit = len;
		*by_len = true;
	}
	return limit;
}

int qimg_feature_name(const void *buf, size_t len, const struct qimg_header *h,
		      u8 type, u8 bit, char *name, size_t name_len)
{
	const u8 *p = buf;
	u64 off, limit;
	bool by_len;

	if (!buf || !h || !name || !name_len)
		return -EINVAL;
	name[0] = '\0';
	if (h->version < 3 || h->cluster_bits < QIMG_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QIMG_MAX_CLUSTER_BITS)
		return -ENOENT;
	limit = qimg_ext_limit(h, len, &by_len);

	/* A lenient walk: any malformation just ends the search. */
	for (off = h->header_length; off + 8 <= limit;) {
		u32 type_ext = get_unaligned_be32(p + off);
		u32 elen = get_unaligned_be32(p + off + 4);
		u64 i, n;

		if (type_ext == QIMG_EXT_END || elen > limit - off - 8)
			break;
		if (type_ext != QIMG_EXT_FEATURE_TABLE) {
			off += 8 + qimg_round_up8(elen);
			continue;
		}
		n = elen / sizeof(struct qimg_disk_feature);
		for (i = 0; i < n; i++) {
			const struct qimg_disk_feature *f = (const void *)
				(p + off + 8 + i * sizeof(*f));
			size_t j, k;

			if (f->type != type || f->bit != bit)
				continue;
			/* Names are untrusted: keep them printable. */
			for (j = 0, k = 0; j < sizeof(f->name) && f->name[j] &&
			     k + 1 < name_len; j++, k++) {
				char c = f->name[j];

				name[k] = (c >= 0x20 && c < 0x7f) ? c : '?';
			}
			name[k] = '\0';
			return 0;
		}
		break;
	}
	return -ENOENT;
}

/* ------------------------------------------------------------------------ */
/* Geometry                                                                 */

/* Below 512 bytes no image can exist; above 2 MiB QEMU could write one. */
static int qimg_check_cluster_bits(u32 cb, struct qimg_err *err)
{
	if (cb < QIMG_MIN_CLUSTER_BITS)
		return qimg_fail(err, -EUCLEAN,
				 "cluster_bits %u is below the minimum of %u",
				 cb, QIMG_MIN_CLUSTER_BITS);
	if (cb > QIMG_MAX_CLUSTER_BITS)
		return qimg_fail(err, -EOPNOTSUPP,
				 "cluster size 2^%u is not supported (max 2 MiB)",
				 cb);
	return 0;
}

u64 qimg_l1_entries_for(u32 cluster_bits, bool ext_l2, u64 virtual_size)
{
	u32 shift;

	if (cluster_bits < QIMG_MIN_CLUSTER_BITS ||
	    cluster_bits > QIMG_MAX_CLUSTER_BITS)
		return 0;
	/* Bytes mapped by one L2 table: cluster size * entries per table. */
	shift = cluster_bits + cluster_bits - (ext_l2 ? 4 : 3);
	return (virtual_size >> shift) +
	       ((virtual_size & ((1ULL << shift) - 1)) ? 1 : 0);
}

int qimg_geom_init(struct qimg_header *h, struct qimg_err *err)
{
	struct qimg_geom *g = &h->geom;
	u32 cb = h->cluster_bits;
	u64 l1;
	int ret;

	memset(g, 0, sizeof(*g));
	ret = qimg_check_cluster_bits(cb, err);
	if (ret)
		return ret;
	if (h->refcount_order > QIMG_MAX_REFCOUNT_ORDER)
		return qimg_fail(err, -EUCLEAN,
				 "refcount_order %u is above the maximum of %u",
				 h->refcount_order, QIMG_MAX_REFCOUNT_ORDER);
	g->ext_l2 = !!(h->incompatible_features & QIMG_INCOMPAT_EXTL2);
	/* Subclusters must stay at least 512 bytes: 32 of them per cluster. */
	if (g->ext_l2 && cb < 14)
		return qimg_fail(err, -EUCLEAN,
				 "extended L2 entries need clusters of at least 16 KiB (cluster_bits %u)",
				 cb);
	if (h->size > QIMG_MAX_VIRTUAL_SIZE)
		return qimg_fail(err, -EFBIG,
				 "virtual size %llu is above the maximum of %llu",
				 h->size, QIMG_MAX_VIRTUAL_SIZE);
	l1 = qimg_l1_entries_for(cb, g->ext_l2, h->size);
	if (l1 > QIMG_MAX_L1_BYTES / 8)
		return qimg_fail(err, -EFBIG,
				 "virtual size %llu needs an L1 table larger than %llu bytes with %u-byte clusters",
				 h->size, QIMG_MAX_L1_BYTES, 1U << cb);

	g->cluster_bits = cb;
	g->cluster_size = 1ULL << cb;
	g->l2_entry_shift = g->ext_l2 ? 4 : 3;
	g->l2_bits = cb - g->l2_entry_shift;
	g->l2_entries = 1ULL << g->l2_bits;
	g->subcluster_bits = g->ext_l2 ? cb - 5 : cb;
	g->refcount_order = h->refcount_order;
	g->rb_bits = cb + 3 - h->refcount_order;
	g->rb_entries = 1ULL << g->rb_bits;
	g->refcount_max = h->refcount_order == 6 ? ~0ULL :
			  (1ULL << (1U << h->refcount_order)) - 1;
	/* Compressed descriptor: offset in bits 0..x-1, x = 62 - (cb - 8). */
	g->csize_shift = 62 - (cb - 8);
	g->csize_mask = (1ULL << (cb - 8)) - 1;
	g->coffset_mask = (1ULL << g->csize_shift) - 1;
	g->virtual_size = h->size;
	g->l1_size = (u32)l1;
	g->data_file = !!(h->incompatible_features & QIMG_INCOMPAT_DATA_FILE);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Header                                                                   */

s64 qimg_header_peek_cluster_size(const void *buf, size_t len,
				  struct qimg_err *err)
{
	const struct qimg_disk_header *d = buf;
	u32 version, cb;
	int ret;

	if (!buf || len < QIMG_V2_HEADER_LEN)
		return qimg_fail(err, -EINVAL,
				 "too short for a qcow2 header (%zu bytes)", len);
	if (be32_to_cpu(d->magic) != QIMG_MAGIC)
		return qimg_fail(err, -EINVAL, "not a qcow2 image (bad magic)");
	version = be32_to_cpu(d->version);
	if (version != 2 && version != 3)
		return qimg_fail(err, -EOPNOTSUPP,
				 "unsupported qcow2 version %u", version);
	cb = be32_to_cpu(d->cluster_bits);
	ret = qimg_check_cluster_bits(cb, err);
	if (ret)
		return ret;
	return (s64)1 << cb;
}

/*
 * Every reference to metadata (a table in the header, an L2 table or
 * refcount block named by an entry, a snapshot's L1 table, bitmap data)
 * must point at [offset, offset + bytes) cluster aligned, clear of the
 * header cluster and inside the file; offset 0 is refused, so callers let
 * "unallocated" through before asking.  The printf-style @fmt names what
 * is referenced; it is only formatted when the check fails.  Offsets are
 * printed as 0x%llx: with %#llx the kernel writes 0 as "0x0" and libc as
 * "0", and dmesg and qimgctl should say the same thing.
 */
static __printf(6, 7) int qimg_check_ref(struct qimg_err *err, u64 csize,
					 u64 offset, u64 bytes,
					 u64 file_size, const char *fmt, ...)
{
	bool unaligned = offset & (csize - 1);
	bool in_header = offset < csize;
	char what[96];
	va_list ap;
	u64 end;

	if (!unaligned && !in_header && qimg_add_ok(offset, bytes, &end) &&
	    end <= file_size)
		return 0;
	if (!err)
		return -EUCLEAN;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (unaligned)
		return qimg_fail(err, -EUCLEAN,
				 "%s offset 0x%llx is not cluster aligned",
				 what, offset);
	if (in_header)
		return qimg_fail(err, -EUCLEAN,
				 "%s at 0x%llx overlaps the image header",
				 what, offset);
	return qimg_fail(err, -EUCLEAN,
			 "%s at 0x%llx (%llu bytes) extends past the end of the file (%llu bytes)",
			 what, offset, bytes, file_size);
}

static int qimg_check_incompat(const void *buf, size_t len,
			       const struct qimg_header *h,
			       struct qimg_err *err)
{
	u64 unknown = h->incompatible_features & ~QIMG_INCOMPAT_KNOWN;
	char name[48];
	size_t pos = 0;
	u32 bit;

	if (!unknown)
		return 0;
	if (!err)
		return -EOPNOTSUPP;
	for (bit = 0; bit < 64; bit++) {
		int n;

		if (!(unknown & (1ULL << bit)))
			continue;
		if (pos >= sizeof(err->msg))
			break;
		if (qimg_feature_name(buf, len, h, QIMG_FEAT_INCOMPAT, bit,
				      name, sizeof(name)) == 0 && name[0])
			n = snprintf(err->msg + pos, sizeof(err->msg) - pos,
				     "%s%s", pos ? ", " :
				     "unsupported feature: ", name);
		else
			n = snprintf(err->msg + pos, sizeof(err->msg) - pos,
				     "%sincompatible feature bit %u", pos ? ", " :
				     "unsupported ", bit);
		if (n < 0)
			break;
		pos += n;
	}
	return -EOPNOTSUPP;
}

/* Copy an untrusted, not NUL-terminated string; NUL bytes are corruption. */
static int qimg_copy_name(char *dst, size_t dst_len, const u8 *src, u64 n,
			  const char *what, struct qimg_err *err)
{
	if (n >= dst_len)
		return qimg_fail(err, -EUCLEAN, "%s is too long (%llu bytes)",
				 what, n);
	if (memchr(src, 0, n))
		return qimg_fail(err, -EUCLEAN, "%s contains a NUL byte", what);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

static int qimg_decode_exts(const u8 *p, size_t len, u64 file_size,
			    struct qimg_header *h, struct qimg_err *err)
{
	u64 csize = 1ULL << h->cluster_bits;
	bool seen_fmt = false, seen_ft = false;
	u64 off, limit;
	bool by_len;
	int ret;

	limit = qimg_ext_limit(h, len, &by_len);
	off = h->header_length;
	for (;;) {
		u32 type, elen;
		const u8 *data;
		u64 next;

		if (off == limit && !by_len) {
			/* The area ends exactly here: no end mark needed. */
			h->ext_end = (u32)off;
			return 0;
		}
		if (limit - off < 8)
			return qimg_fail(err, -EUCLEAN,
					 "header extension at %#llx runs past the end of the %s",
					 off, by_len ? "data read" :
					 "header extension area");
		type = get_unaligned_be32(p + off);
		elen = get_unaligned_be32(p + off + 4);
		if (type == QIMG_EXT_END) {
			h->ext_end = (u32)(off + 8);
			return 0;
		}
		if (elen > limit - off - 8)
			return qimg_fail(err, -EUCLEAN,
					 "header extension %#x at %#llx is too long (%u bytes)",
					 type, off, elen);
		data = p + off + 8;
		/* Padding may be cut off at the end of the area. */
		next = off + 8 + qimg_round_up8(elen);
		if (next > limit)
			next = limit;

		switch (type) {
		case QIMG_EXT_BACKING_FORMAT:
			if (seen_fmt)
				goto dup;
			seen_fmt = true;
			ret = qimg_copy_name(h->backing_fmt,
					     sizeof(h->backing_fmt), data, elen,
					     "backing format name", err);
			if (ret)
				return ret;
			break;
		case QIMG_EXT_FEATURE_TABLE:
			if (seen_ft)
				goto dup;
			seen_ft = true;
			break;
		case QIMG_EXT_BITMAPS: {
			const struct qimg_disk_bitmaps_ext *b =
				(const void *)data;
			u64 min_dir;

			if (h->has_bitmaps_ext)
				goto dup;
			if (elen != sizeof(*b))
				return qimg_fail(err, -EUCLEAN,
						 "bitmaps extension has length %u, expected %zu",
						 elen, sizeof(*b));
			h->has_bitmaps_ext = true;
			h->nb_bitmaps = be32_to_cpu(b->nb_bitmaps);
			h->bitmap_directory_size =
				be64_to_cpu(b->bitmap_directory_size);
			h->bitmap_directory_offset =
				be64_to_cpu(b->bitmap_directory_offset);
			if (h->nb_bitmaps == 0)
				return qimg_fail(err, -EUCLEAN,
						 "bitmaps extension lists no bitmaps");
			if (h->nb_bitmaps > QIMG_MAX_BITMAPS)
				return qimg_fail(err, -EFBIG,
						 "too many bitmaps (%u, max %u)",
						 h->nb_bitmaps, QIMG_MAX_BITMAPS);
			if (be32_to_cpu(b->reserved))
				return qimg_fail(err, -EUCLEAN,
						 "bitmaps extension reserved field is not zero");
			if (h->bitmap_directory_size > QIMG_MAX_BITMAP_DIR_SIZE)
				return qimg_fail(err, -EFBIG,
						 "bitmap directory too large (%llu bytes)",
						 h->bitmap_directory_size);
			min_dir = (u64)h->nb_bitmaps *
				  sizeof(struct qimg_disk_bitmap_dir_entry);
			if (h->bitmap_directory_size < min_dir)
				return qimg_fail(err, -EUCLEAN,
						 "bitmap directory (%llu bytes) too small for %u bitmaps",
						 h->bitmap_directory_size,
						 h->nb_bitmaps);
			ret = qimg_check_ref(err, csize,
					     h->bitmap_directory_offset,
					     h->bitmap_directory_size,
					     file_size, "bitmap directory");
			if (ret)
				return ret;
			break;
		}
		case QIMG_EXT_CRYPTO: {
			u64 cend;

			/*
			 * Only LUKS images have it (and only decoding with
			 * QIMG_DECODE_ENCRYPTED gets this far with one).
			 */
			if (h->crypt_method != QIMG_CRYPT_LUKS)
				return qimg_fail(err, -EUCLEAN,
						 "crypto header extension in an %s image",
						 h->crypt_method ? "AES-encrypted" :
						 "unencrypted");
			if (h->has_crypto_ext)
				goto dup;
			if (elen != 16)
				return qimg_fail(err, -EUCLEAN,
						 "crypto header extension has length %u, expected 16",
						 elen);
			h->has_crypto_ext = true;
			h->crypto_offset = get_unaligned_be64(data);
			h->crypto_length = get_unaligned_be64(data + 8);
			if (!qimg_add_ok(h->crypto_offset, h->crypto_length,
					 &cend) || cend > file_size)
				return qimg_fail(err, -EUCLEAN,
						 "crypto header at %#llx (%llu bytes) is outside the file",
						 h->crypto_offset,
						 h->crypto_length);
			break;
		}
		case QIMG_EXT_DATA_FILE:
			if (h->has_data_file)
				goto dup;
			h->has_data_file = true;
			ret = qimg_copy_name(h->data_file,
					     sizeof(h->data_file), data, elen,
					     "external data file name", err);
			if (ret)
				return ret;
			break;
		case QIMG_EXT_JOURNAL: {
			const struct qimg_disk_journal_ext *j =
				(const void *)data;

			if (h->has_journal_ext)
				goto dup;
			if (elen != sizeof(*j))
				return qimg_fail(err, -EUCLEAN,
						 "journal extension has length %u, expected %zu",
						 elen, sizeof(*j));
			h->has_journal_ext = true;
			h->journal_offset = be64_to_cpu(j->offset);
			h->journal_size = be64_to_cpu(j->size);
			if (!h->journal_size ||
			    (h->journal_size & (csize - 1)))
				return qimg_fail(err, -EUCLEAN,
						 "journal size %llu is not a non-zero multiple of the cluster size",
						 h->journal_size);
			if (h->journal_size > QIMG_MAX_JOURNAL_BYTES)
				return qimg_fail(err, -EFBIG,
						 "journal too large (%llu bytes)",
						 h->journal_size);
			/*
			 * Offset 0: the image asks for a journal of this
			 * size while attached, no area is allocated.
			 */
			if (!h->journal_offset)
				break;
			ret = qimg_check_ref(err, csize, h->journal_offset,
					     h->journal_size, file_size,
					     "journal");
			if (ret)
				return ret;
			break;
		}
		default:
			if (h->nb_unknown_exts >= QIMG_MAX_UNKNOWN_EXTS)
				return qimg_fail(err, -EFBIG,
						 "more than %u unknown header extensions",
						 QIMG_MAX_UNKNOWN_EXTS);
			h->unknown_exts[h->nb_unknown_exts].type = type;
			h->unknown_exts[h->nb_unknown_exts].len = elen;
			h->unknown_exts[h->nb_unknown_exts].offset =
				(u32)(off + 8);
			h->nb_unknown_exts++;
			break;
		}
		off = next;
	}
dup:
	return qimg_fail(err, -EUCLEAN,
			 "header extension %#x appears more than once",
			 get_unaligned_be32(p + off));
}

static int qimg_decode_backing(const u8 *p, size_t len, u64 file_size,
			       struct qimg_header *h, struct qimg_err *err)
{
	u64 csize = 1ULL << h->cluster_bits;
	u64 off = h->backing_file_offset;
	u32 n = h->backing_file_size;

	if (!off)
		return 0;
	if (n > QIMG_MAX_BACKING_NAME)
		return qimg_fail(err, -EUCLEAN,
				 "backing file name too long (%u bytes)", n);
	if (off < h->header_length || off > csize || n > csize - off)
		return qimg_fail(err, -EUCLEAN,
				 "backing file name (%#llx, %u bytes) is outside the header cluster",
				 off, n);
	if (off + n > len || off + n > file_size)
		return qimg_fail(err, -EUCLEAN,
				 "backing file name (%#llx, %u bytes) is past the end of the %s",
				 off, n, off + n > len ? "data read" : "file");
	return qimg_copy_name(h->backing_file, sizeof(h->backing_file),
			      p + off, n, "backing file name", err);
}

static int qimg_decode_tables(u64 file_size, struct qimg_header *h,
			      struct qimg_err *err)
{
	u64 csize = 1ULL << h->cluster_bits;
	u64 l1_bytes, rt_bytes;
	int ret;

	if (h->l1_size > QIMG_MAX_L1_BYTES / 8)
		return qimg_fail(err, -EFBIG,
				 "L1 table too large (%u entries)", h->l1_size);
	if (h->l1_size < h->geom.l1_size)
		return qimg_fail(err, -EUCLEAN,
				 "L1 table too small (%u entries, %u needed for %llu bytes)",
				 h->l1_size, h->geom.l1_size, h->size);
	l1_bytes = (u64)h->l1_size * 8;
	if (h->l1_size) {
		ret = qimg_check_ref(err, csize, h->l1_table_offset,
				     l1_bytes, file_size, "L1 table");
		if (ret)
			return ret;
	}

	if (!h->refcount_table_clusters)
		return qimg_fail(err, -EUCLEAN, "image has no refcount table");
	if (h->refcount_table_clusters > QIMG_MAX_REFTABLE_BYTES / csize)
		return qimg_fail(err, -EFBIG,
				 "refcount table too large (%u clusters)",
				 h->refcount_table_clusters);
	rt_bytes = (u64)h->refcount_table_clusters * csize;
	ret = qimg_check_ref(err, csize, h->refcount_table_offset, rt_bytes,
			     file_size, "refcount table");
	if (ret)
		return ret;
	if (qimg_ranges_overlap(h->l1_table_offset, l1_bytes,
				h->refcount_table_offset, rt_bytes))
		return qimg_fail(err, -EUCLEAN,
				 "L1 table (%#llx) overlaps the refcount table (%#llx)",
				 h->l1_table_offset, h->refcount_table_offset);

	if (h->nb_snapshots > QIMG_MAX_SNAPSHOTS)
		return qimg_fail(err, -EFBIG, "too many snapshots (%u)",
				 h->nb_snapshots);
	if (h->nb_snapshots) {
		ret = qimg_check_ref(err, csize, h->snapshots_offset,
				     (u64)h->nb_snapshots *
				     sizeof(struct qimg_disk_snapshot),
				     file_size, "snapshot table");
		if (ret)
			return ret;
	}

	if (h->has_journal_ext && h->journal_offset) {
		if (qimg_ranges_overlap(h->journal_offset, h->journal_size,
					h->l1_table_offset, l1_bytes))
			return qimg_fail(err, -EUCLEAN,
					 "journal overlaps the L1 table");
		if (qimg_ranges_overlap(h->journal_offset, h->journal_size,
					h->refcount_table_offset, rt_bytes))
			return qimg_fail(err, -EUCLEAN,
					 "journal overlaps the refcount table");
	}
	return 0;
}

int qimg_header_decode(const void *buf, size_t len, u64 file_size,
		       struct qimg_header *h, struct qimg_err *err)
{
	return qimg_header_decode_flags(buf, len, file_size, 0, h, err);
}

int qimg_header_decode_flags(const void *buf, size_t len, u64 file_size,
			     unsigned int flags, struct qimg_header *h,
			     struct qimg_err *err)
{
	struct qimg_disk_header d;
	const u8 *p = buf;
	u64 csize;
	int ret;

	qimg_fmt_build_checks();
	if (!h)
		return -EINVAL;
	memset(h, 0, sizeof(*h));
	if (!buf || len < QIMG_V2_HEADER_LEN || file_size < QIMG_V2_HEADER_LEN)
		return qimg_fail(err, -EINVAL,
				 "too short for a qcow2 header (%zu bytes)", len);
	/* A zero-padded private copy: v2 fields past byte 72 read as 0. */
	memset(&d, 0, sizeof(d));
	memcpy(&d, buf, len < sizeof(d) ? len : sizeof(d));

	if (be32_to_cpu(d.magic) != QIMG_MAGIC)
		return qimg_fail(err, -EINVAL, "not a qcow2 image (bad magic)");
	h->version = be32_to_cpu(d.version);
	if (h->version != 2 && h->version != 3)
		return qimg_fail(err, -EOPNOTSUPP,
				 "unsupported qcow2 version %u", h->version);
	h->backing_file_offset = be64_to_cpu(d.backing_file_offset);
	h->backing_file_size = be32_to_cpu(d.backing_file_size);
	h->cluster_bits = be32_to_cpu(d.cluster_bits);
	h->size = be64_to_cpu(d.size);
	h->crypt_method = be32_to_cpu(d.crypt_method);
	h->l1_size = be32_to_cpu(d.l1_size);
	h->l1_table_offset = be64_to_cpu(d.l1_table_offset);
	h->refcount_table_offset = be64_to_cpu(d.refcount_table_offset);
	h->refcount_table_clusters = be32_to_cpu(d.refcount_table_clusters);
	h->nb_snapshots = be32_to_cpu(d.nb_snapshots);
	h->snapshots_offset = be64_to_cpu(d.snapshots_offset);
	if (h->version == 2) {
		h->header_length = QIMG_V2_HEADER_LEN;
		h->refcount_order = 4;
	} else {
		if (len < QIMG_V3_HEADER_LEN)
			return qimg_fail(err, -EUCLEAN,
					 "header truncated (%u bytes needed, %zu available)",
					 QIMG_V3_HEADER_LEN, len);
		h->incompatible_features = be64_to_cpu(d.incompatible_features);
		h->compatible_features = be64_to_cpu(d.compatible_features);
		h->autoclear_features = be64_to_cpu(d.autoclear_features);
		h->refcount_order = be32_to_cpu(d.refcount_order);
		h->header_length = be32_to_cpu(d.header_length);
		if (h->header_length < QIMG_V3_HEADER_LEN ||
		    (h->header_length & 7))
			return qimg_fail(err, -EUCLEAN,
					 "invalid header_length %u (v3 needs >= %u, a multiple of 8)",
					 h->header_length, QIMG_V3_HEADER_LEN);
		if (h->header_length > QIMG_V3_HEADER_LEN)
			h->compression_type = d.compression_type;
	}

	ret = qimg_check_cluster_bits(h->cluster_bits, err);
	if (ret)
		return ret;
	csize = 1ULL << h->cluster_bits;
	if (h->header_length > csize)
		return qimg_fail(err, -EUCLEAN,
				 "header_length %u is larger than a cluster",
				 h->header_length);
	if (h->header_length > len || h->header_length > file_size)
		return qimg_fail(err, -EUCLEAN,
				 "header truncated (%u bytes needed, %zu available)",
				 h->header_length, len);

	ret = qimg_check_incompat(buf, len, h, err);
	if (ret)
		return ret;
	if (h->crypt_method > QIMG_CRYPT_LUKS)
		return qimg_fail(err, -EOPNOTSUPP,
				 "unknown encryption method %u", h->crypt_method);
	if (h->crypt_method && !(flags & QIMG_DECODE_ENCRYPTED))
		return qimg_fail(err, -EOPNOTSUPP,
				 "encrypted images are not supported");

	if (h->compression_type > QIMG_COMPRESSION_ZSTD)
		return qimg_fail(err, -EOPNOTSUPP,
				 "unknown compression type %u",
				 h->compression_type);
	if (!!h->compression_type !=
	    !!(h->incompatible_features & QIMG_INCOMPAT_COMPRESSION))
		return qimg_fail(err, -EUCLEAN,
				 "compression type %u does not match the compression type feature bit",
				 h->compression_type);

	ret = qimg_geom_init(h, err);
	if (ret)
		return ret;

	ret = qimg_decode_backing(p, len, file_size, h, err);
	if (ret)
		return ret;
	ret = qimg_decode_exts(p, len, file_size, h, err);
	if (ret)
		return ret;

	if (h->crypt_method == QIMG_CRYPT_LUKS && !h->has_crypto_ext)
		return qimg_fail(err, -EUCLEAN,
				 "LUKS encryption without a crypto header extension");
	if (h->has_data_file &&
	    !(h->incompatible_features & QIMG_INCOMPAT_DATA_FILE))
		return qimg_fail(err, -EUCLEAN,
				 "external data file name without the external data file feature");
	if ((h->autoclear_features & QIMG_AUTOCLEAR_DATA_RAW) &&
	    !(h->incompatible_features & QIMG_INCOMPAT_DATA_FILE))
		return qimg_fail(err, -EUCLEAN,
				 "raw external data bit set without an external data file");
	/* Both need autoclear bits, which version 2 does not have. */
	if (h->version < 3 && (h->has_bitmaps_ext || h->has_journal_ext))
		return qimg_fail(err, -EUCLEAN,
				 "%s extension in a version 2 image",
				 h->has_bitmaps_ext ? "bitmaps" : "journal");
	if ((h->incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY) &&
	    !h->has_journal_ext)
		return qimg_fail(err, -EUCLEAN,
				 "journal dirty bit set but the image has no journal");
	if ((h->incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY) &&
	    !h->journal_offset)
		return qimg_fail(err, -EUCLEAN,
				 "journal dirty bit set but no journal area is allocated");

	return qimg_decode_tables(file_size, h, err);
}

/* ------------------------------------------------------------------------ */
/* Header encoding                                                          */

static void qimg_put_ext(u8 *p, u64 *pos, u32 type, const void *data,
			 u32 elen)
{
	put_unaligned_be32(type, p + *pos);
	put_unaligned_be32(elen, p + *pos + 4);
	memcpy(p + *pos + 8, data, elen);
	*pos += 8 + qimg_round_up8(elen);
}

static u32 qimg_feature_count(bool qimg_only)
{
	size_t i;
	u32 n = 0;

	for (i = 0; i < ARRAY_SIZE(qimg_known_features); i++)
		if (!qimg_only || qimg_known_features[i].qimg_only)
			n++;
	return n;
}

int qimg_header_encode(const struct qimg_header *h, void *buf, size_t len)
{
	struct qimg_disk_header *d = buf;
	u8 *p = buf;
	u64 limit, pos, need, bfo = 0, ft_len;
	size_t fmt_len = 0, df_len = 0, bf_len = 0, i;
	bool ft_qimg_only = false;

	if (!h || !buf)
		return -EINVAL;
	if (h->version != 2 && h->version != 3)
		return -EINVAL;
	if (h->cluster_bits < QIMG_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QIMG_MAX_CLUSTER_BITS ||
	    h->refcount_order > QIMG_MAX_REFCOUNT_ORDER)
		return -EINVAL;
	if (h->version == 2 &&
	    (h->incompatible_features || h->compatible_features ||
	     h->autoclear_features || h->refcount_order != 4 ||
	     h->compression_type || h->has_data_file ||
	     h->has_bitmaps_ext || h->has_journal_ext))
		return -EINVAL;

	/* Everything lives in the first cluster. */
	limit = 1ULL << h->cluster_bits;
	if (len < limit)
		limit = len;
	pos = h->version == 3 ? QIMG_V3_HEADER_LEN_COMP : QIMG_V2_HEADER_LEN;
	if (len < pos)
		return -ENOSPC;

	fmt_len = strnlen(h->backing_fmt, sizeof(h->backing_fmt));
	if (fmt_len >= sizeof(h->backing_fmt))
		return -EINVAL;
	if (h->has_data_file) {
		df_len = strnlen(h->data_file, sizeof(h->data_file));
		if (df_len >= sizeof(h->data_file))
			return -EINVAL;
	}
	bf_len = strnlen(h->backing_file, sizeof(h->backing_file));
	if (bf_len >= sizeof(h->backing_file))
		return -EINVAL;

	/* Size of everything but the feature table, to see what fits. */
	need = pos + 8;
	if (fmt_len)
		need += 8 + qimg_round_up8(fmt_len);
	if (h->has_data_file)
		need += 8 + qimg_round_up8(df_len);
	if (h->has_bitmaps_ext)
		need += 8 + sizeof(struct qimg_disk_bitmaps_ext);
	if (h->has_journal_ext)
		need += 8 + sizeof(struct qimg_disk_journal_ext);
	need += bf_len;
	if (need > limit)
		return -ENOSPC;
	ft_len = 0;
	if (h->version == 3) {
		ft_len = (u64)qimg_feature_count(false) *
			 sizeof(struct qimg_disk_feature);
		if (need + 8 + ft_len > limit) {
			ft_qimg_only = true;
			ft_len = (u64)qimg_feature_count(true) *
				 sizeof(struct qimg_disk_feature);
			if (need + 8 + ft_len > limit)
				ft_len = 0;
		}
	}

	memset(buf, 0, len);
	d->magic = cpu_to_be32(QIMG_MAGIC);
	d->version = cpu_to_be32(h->version);
	d->cluster_bits = cpu_to_be32(h->cluster_bits);
	d->size = cpu_to_be64(h->size);
	d->crypt_method = cpu_to_be32(h->crypt_method);
	d->l1_size = cpu_to_be32(h->l1_size);
	d->l1_table_offset = cpu_to_be64(h->l1_table_offset);
	d->refcount_table_offset = cpu_to_be64(h->refcount_table_offset);
	d->refcount_table_clusters = cpu_to_be32(h->refcount_table_clusters);
	d->nb_snapshots = cpu_to_be32(h->nb_snapshots);
	d->snapshots_offset = cpu_to_be64(h->snapshots_offset);
	if (h->version == 3) {
		d->incompatible_features =
			cpu_to_be64(h->incompatible_features);
		d->compatible_features = cpu_to_be64(h->compatible_features);
		d->autoclear_features = cpu_to_be64(h->autoclear_features);
		d->refcount_order = cpu_to_be32(h->refcount_order);
		d->header_length = cpu_to_be32(QIMG_V3_HEADER_LEN_COMP);
		d->compression_type = h->compression_type;
	}

	if (fmt_len)
		qimg_put_ext(p, &pos, QIMG_EXT_BACKING_FORMAT, h->backing_fmt,
			     (u32)fmt_len);
	if (h->has_data_file)
		qimg_put_ext(p, &pos, QIMG_EXT_DATA_FILE, h->data_file,
			     (u32)df_len);
	if (h->has_bitmaps_ext) {
		struct qimg_disk_bitmaps_ext b = {
			.nb_bitmaps = cpu_to_be32(h->nb_bitmaps),
			.bitmap_directory_size =
				cpu_to_be64(h->bitmap_directory_size),
			.bitmap_directory_offset =
				cpu_to_be64(h->bitmap_directory_offset),
		};

		qimg_put_ext(p, &pos, QIMG_EXT_BITMAPS, &b, sizeof(b));
	}
	if (h->has_journal_ext) {
		struct qimg_disk_journal_ext j = {
			.offset = cpu_to_be64(h->journal_offset),
			.size = cpu_to_be64(h->journal_size),
		};

		qimg_put_ext(p, &pos, QIMG_EXT_JOURNAL, &j, sizeof(j));
	}
	if (ft_len) {
		u64 fpos = pos + 8;

		put_unaligned_be32(QIMG_EXT_FEATURE_TABLE, p + pos);
		put_unaligned_be32((u32)ft_len, p + pos + 4);
		for (i = 0; i < ARRAY_SIZE(qimg_known_features); i++) {
			const struct qimg_known_feature *k =
				&qimg_known_features[i];
			struct qimg_disk_feature *f = (void *)(p + fpos);

			if (ft_qimg_only && !k->qimg_only)
				continue;
			f->type = k->type;
			f->bit = k->bit;
			/* The buffer was zeroed: names stay NUL-padded. */
			memcpy(f->name, k->name, strlen(k->name));
			fpos += sizeof(*f);
		}
		pos = fpos;
	}
	/* End mark: eight zero bytes, already there. */
	pos += 8;

	if (bf_len) {
		bfo = h->backing_file_offset;
		if (bfo < pos || bfo > limit || bf_len > limit - bfo)
			bfo = pos;
		memcpy(p + bfo, h->backing_file, bf_len);
		d->backing_file_offset = cpu_to_be64(bfo);
		d->backing_file_size = cpu_to_be32((u32)bf_len);
		if (bfo + bf_len > pos)
			pos = bfo + bf_len;
	}
	return (int)pos;
}

/* ------------------------------------------------------------------------ */
/* L1 / L2 entries                                                          */

int qimg_l1_decode(const struct qimg_geom *g, u64 raw, u64 file_size,
		   u64 *l2_offset, bool *copied, struct qimg_err *err)
{
	u64 off = raw & QIMG_L1E_OFFSET_MASK;
	int ret;

	*l2_offset = 0;
	*copied = false;
	if (raw & QIMG_L1E_RESERVED_MASK)
		return qimg_fail(err, -EUCLEAN,
				 "L1 entry %#llx has reserved bits set", raw);
	if (off) {
		ret = qimg_check_ref(err, g->cluster_size, off,
				     g->cluster_size, file_size, "L2 table");
		if (ret)
			return ret;
	}
	*l2_offset = off;
	*copied = off && (raw & QIMG_OFLAG_COPIED);
	return 0;
}

u64 qimg_l1_encode(u64 l2_offset, bool copied)
{
	return (l2_offset & QIMG_L1E_OFFSET_MASK) |
	       (copied ? QIMG_OFLAG_COPIED : 0);
}

static int qimg_l2_decode_compressed(const struct qimg_geom *g, u64 raw,
				     u64 bitmap, u64 file_size,
				     struct qimg_l2_entry *e,
				     struct qimg_err *err)
{
	u64 off = raw & g->coffset_mask;
	u64 nb = ((raw >> g->csize_shift) & g->csize_mask) + 1;

	if (raw & QIMG_OFLAG_COPIED)
		return qimg_fail(err, -EUCLEAN,
				 "compressed L2 entry %#llx has the COPIED flag",
				 raw);
	if (off > QIMG_MAX_HOST_OFFSET)
		return qimg_fail(err, -EUCLEAN,
				 "compressed cluster offset %#llx is beyond 2^56",
				 off);
	if (g->ext_l2 && bitmap)
		return qimg_fail(err, -EUCLEAN,
				 "compressed extended L2 entry has a non-zero bitmap %#llx",
				 bitmap);
	if (g->data_file)
		return qimg_fail(err, -EUCLEAN,
				 "compressed cluster in an image with an external data file");
	if (off < g->cluster_size || off >= file_size)
		return qimg_fail(err, -EUCLEAN,
				 "compressed cluster at %#llx is outside the file (%llu bytes)",
				 off, file_size);
	e->type = QIMG_CLUSTER_COMPRESSED;
	e->host_offset = off;
	/* Sectors counted from the one holding the first byte. */
	e->compressed_len = nb * QIMG_COMPRESSED_SECTOR_SIZE -
			    (off & (QIMG_COMPRESSED_SECTOR_SIZE - 1));
	return 0;
}

int qimg_l2_decode(const struct qimg_geom *g, u32 version, u64 raw,
		   u64 bitmap, u64 file_size, struct qimg_l2_entry *e,
		   struct qimg_err *err)
{
	u64 off = raw & QIMG_L2E_OFFSET_MASK;
	bool copied = !!(raw & QIMG_OFLAG_COPIED);
	u64 reserved = QIMG_L2E_STD_RESERVED_MASK;
	u32 alloc = 0, zero = 0;

	memset(e, 0, sizeof(*e));
	if (raw & QIMG_OFLAG_COMPRESSED)
		return qimg_l2_decode_compressed(g, raw, bitmap, file_size, e,
						 err);

	/* The zero flag exists only in v3 without extended L2. */
	if (version < 3 || g->ext_l2)
		reserved |= QIMG_OFLAG_ZERO;
	if (raw & reserved)
		return qimg_fail(err, -EUCLEAN,
				 "L2 entry %#llx has reserved bits set", raw);
	if (off & (g->cluster_size - 1))
		return qimg_fail(err, -EUCLEAN,
				 "cluster offset %#llx is not cluster aligned",
				 off);
	if (g->ext_l2) {
		alloc = (u32)bitmap;
		zero = (u32)(bitmap >> 32);
		if (alloc & zero)
			return qimg_fail(err, -EUCLEAN,
					 "subclusters %#x are both allocated and zero",
					 alloc & zero);
	}

	e->ext_l2 = g->ext_l2;
	e->copied = copied;
	e->alloc_bitmap = alloc;
	e->zero_bitmap = zero;
	if (!off && !(copied && g->data_file)) {
		if (alloc)
			return qimg_fail(err, -EUCLEAN,
					 "unallocated cluster has allocated subclusters %#x",
					 alloc);
		e->copied = false;
		e->type = (raw & QIMG_OFLAG_ZERO) ? QIMG_CLUSTER_ZERO_PLAIN :
			  QIMG_CLUSTER_UNALLOCATED;
		return 0;
	}
	if (!g->data_file && off < g->cluster_size)
		return qimg_fail(err, -EUCLEAN,
				 "data cluster at %#llx overlaps the image header",
				 off);
	e->host_offset = off;
	e->type = (raw & QIMG_OFLAG_ZERO) ? QIMG_CLUSTER_ZERO_ALLOC :
		  QIMG_CLUSTER_NORMAL;
	/*
	 * Data is written before the L2 entry points at it, so at least its
	 * first allocated byte exists.  An extended entry with no allocated
	 * subcluster only reserves the cluster.  A zero-allocated cluster
	 * is held to the same bound: a write reuses it in place, so an
	 * offset past the end of the file is as corrupt as a normal one.
	 */
	if ((!g->ext_l2 || alloc) && off >= file_size)
		return qimg_fail(err, -EUCLEAN,
				 "data cluster at %#llx is past the end of the file (%llu bytes)",
				 off, file_size);
	return 0;
}

u64 qimg_l2_encode_normal(u64 host_offset, bool copied)
{
	return (host_offset & QIMG_L2E_OFFSET_MASK) |
	       (copied ? QIMG_OFLAG_COPIED : 0);
}

u64 qimg_l2_encode_zero(u64 host_offset, bool copied)
{
	return qimg_l2_encode_normal(host_offset, copied) | QIMG_OFLAG_ZERO;
}

u64 qimg_l2_encode_compressed(const struct qimg_geom *g, u64 host_offset,
			      u64 compressed_len)
{
	u64 last, nb;

	if (!compressed_len || host_offset > g->coffset_mask ||
	    host_offset > QIMG_MAX_HOST_OFFSET ||
	    !qimg_add_ok(host_offset, compressed_len - 1, &last))
		return 0;
	/* Additional sectors beyond the one holding the first byte. */
	nb = (last >> 9) - (host_offset >> 9);
	if (nb > g->csize_mask)
		return 0;
	return QIMG_OFLAG_COMPRESSED | (nb << g->csize_shift) | host_offset;
}

enum qimg_subcluster_type qimg_subcluster_type(const struct qimg_l2_entry *e,
					       unsigned int sc)
{
	switch (e->type) {
	case QIMG_CLUSTER_COMPRESSED:
		return QIMG_SUBCLUSTER_COMPRESSED;
	case QIMG_CLUSTER_ZERO_PLAIN:
	case QIMG_CLUSTER_ZERO_ALLOC:
		return QIMG_SUBCLUSTER_ZERO;
	default:
		break;
	}
	if (!e->ext_l2)
		/* A standard entry: the whole cluster is alike. */
		return e->type == QIMG_CLUSTER_NORMAL ?
		       QIMG_SUBCLUSTER_NORMAL : QIMG_SUBCLUSTER_UNALLOCATED;
	if (sc >= QIMG_SUBCLUSTERS)
		return QIMG_SUBCLUSTER_UNALLOCATED;
	/* Decode refuses entries with a bit set in both bitmaps. */
	if (e->zero_bitmap & (1U << sc))
		return QIMG_SUBCLUSTER_ZERO;
	if (e->alloc_bitmap & (1U << sc))
		return QIMG_SUBCLUSTER_NORMAL;
	return QIMG_SUBCLUSTER_UNALLOCATED;
}

/* ------------------------------------------------------------------------ */
/* Refcounts                                                                */

u64 qimg_refcount_get(const void *block, u32 order, u64 index)
{
	const u8 *p = block;

	switch (order) {
	case 0:
	case 1:
	case 2: {
		/* Sub-byte entries: entry 0 in the least significant bits. */
		u32 per_byte = 8U >> order;
		u32 shift = (u32)(index & (per_byte - 1)) << order;

		return (p[index / per_byte] >> shift) &
		       ((1U << (1U << order)) - 1);
	}
	case 3:
		return p[index];
	case 4:
		return get_unaligned_be16(p + index * 2);
	case 5:
		return get_unaligned_be32(p + index * 4);
	case 6:
		return get_unaligned_be64(p + index * 8);
	default:
		return 0;
	}
}

int qimg_refcount_set(void *block, u32 order, u64 index, u64 value)
{
	u8 *p = block;

	if (order > QIMG_MAX_REFCOUNT_ORDER)
		return -EINVAL;
	if (order < 6 && value >> (1U << order))
		return -ERANGE;
	switch (order) {
	case 0:
	case 1:
	case 2: {
		u32 per_byte = 8U >> order;
		u32 shift = (u32)(index & (per_byte - 1)) << order;
		u8 mask = (u8)(((1U << (1U << order)) - 1) << shift);

		p[index / per_byte] = (p[index / per_byte] & ~mask) |
				      (u8)(value << shift);
		break;
	}
	case 3:
		p[index] = (u8)value;
		break;
	case 4:
		put_unaligned_be16((u16)value, p + index * 2);
		break;
	case 5:
		put_unaligned_be32((u32)value, p + index * 4);
		break;
	default:
		put_unaligned_be64(value, p + index * 8);
		break;
	}
	return 0;
}

int qimg_reftable_decode(const struct qimg_geom *g, u64 raw, u64 file_size,
			 u64 *rb_offset, struct qimg_err *err)
{
	u64 off = raw & QIMG_REFT_OFFSET_MASK;
	int ret;

	*rb_offset = 0;
	if (raw & QIMG_REFT_RESERVED_MASK)
		return qimg_fail(err, -EUCLEAN,
				 "refcount table entry %#llx has reserved bits set",
				 raw);
	if (!off)
		return 0;
	ret = qimg_check_ref(err, g->cluster_size, off, g->cluster_size,
			     file_size, "refcount block");
	if (ret)
		return ret;
	*rb_offset = off;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Snapshots and bitmaps                                                    */

/* Copy an untrusted string, truncated to fit; unprintables become '?'. */
static void qimg_copy_label(char *dst, size_t dst_len, const u8 *src,
			    size_t n)
{
	size_t i;

	if (n >= dst_len)
		n = dst_len - 1;
	for (i = 0; i < n; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] :
			 '?';
	dst[n] = '\0';
}

int qimg_snapshot_decode(const struct qimg_geom *g, const void *buf,
			 size_t len, u64 file_size, struct qimg_snapshot *s,
			 struct qimg_err *err)
{
	const struct qimg_disk_snapshot *d = buf;
	const u8 *p = buf;
	u32 extra, id_len, name_len;
	u64 total;

	memset(s, 0, sizeof(*s));
	if (!buf || len < sizeof(*d))
		return qimg_fail(err, -EUCLEAN,
				 "snapshot table entry truncated (%zu bytes)",
				 len);
	extra = be32_to_cpu(d->extra_data_size);
	id_len = be16_to_cpu(d->id_str_size);
	name_len = be16_to_cpu(d->name_size);
	if (extra > QIMG_MAX_SNAPSHOT_EXTRA)
		return qimg_fail(err, -EFBIG,
				 "snapshot has too much extra data (%u bytes)",
				 extra);
	/*
	 * Bounded above: at most 40 + 1024 + 2 * 65535.  The padding to 8
	 * bytes only separates entries: QEMU does not write it after the last
	 * one, so a table may end at the unpadded length, at end of file.
	 */
	total = (u64)sizeof(*d) + extra + id_len + name_len;
	if (total > len)
		return qimg_fail(err, -EUCLEAN,
				 "snapshot table entry (%llu bytes) runs past the end of the table",
				 total);

	s->l1_table_offset = be64_to_cpu(d->l1_table_offset);
	s->l1_size = be32_to_cpu(d->l1_size);
	s->date_sec = be32_to_cpu(d->date_sec);
	s->date_nsec = be32_to_cpu(d->date_nsec);
	s->vm_clock_nsec = be64_to_cpu(d->vm_clock_nsec);
	s->vm_state_size = be32_to_cpu(d->vm_state_size);
	s->extra_data_size = extra;
	s->icount = ~0ULL;
	s->entry_len = (u32)qimg_round_up8(total);
	if (extra >= 8)
		s->vm_state_size = get_unaligned_be64(p + sizeof(*d));
	if (extra >= 16) {
		s->disk_size = get_unaligned_be64(p + sizeof(*d) + 8);
		s->has_disk_size = true;
	}
	if (extra >= 24)
		s->icount = get_unaligned_be64(p + sizeof(*d) + 16);
	qimg_copy_label(s->id_str, sizeof(s->id_str), p + sizeof(*d) + extra,
			id_len);
	qimg_copy_label(s->name, sizeof(s->name),
			p + sizeof(*d) + extra + id_len, name_len);

	if (s->l1_size > QIMG_MAX_L1_BYTES / 8)
		return qimg_fail(err, -EFBIG,
				 "snapshot '%s' L1 table too large (%u entries)",
				 s->id_str, s->l1_size);
	if (!s->l1_size)
		return 0;
	return qimg_check_ref(err, g->cluster_size, s->l1_table_offset,
			      (u64)s->l1_size * 8, file_size,
			      "snapshot '%s' L1 table", s->id_str);
}

int qimg_bitmap_decode(const struct qimg_geom *g, const void *buf, size_t len,
		       u64 file_size, struct qimg_bitmap *b,
		       struct qimg_err *err)
{
	const struct qimg_disk_bitmap_dir_entry *d = buf;
	const u8 *p = buf;
	u64 total, bits, bytes, need, i;
	u32 name_len;
	int ret;

	memset(b, 0, sizeof(*b));
	if (!buf || len < sizeof(*d))
		return qimg_fail(err, -EUCLEAN,
				 "bitmap directory entry truncated (%zu bytes)",
				 len);
	b->bitmap_table_offset = be64_to_cpu(d->bitmap_table_offset);
	b->bitmap_table_size = be32_to_cpu(d->bitmap_table_size);
	b->flags = be32_to_cpu(d->flags);
	b->type = d->type;
	b->granularity_bits = d->granularity_bits;
	b->extra_data_size = be32_to_cpu(d->extra_data_size);
	name_len = be16_to_cpu(d->name_size);

	total = qimg_round_up8((u64)sizeof(*d) + b->extra_data_size +
			       name_len);
	if (total > len)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap directory entry (%llu bytes) runs past the end of the directory",
				 total);
	b->entry_len = (u32)total;
	if (!name_len)
		return qimg_fail(err, -EUCLEAN, "bitmap has an empty name");
	if (name_len > QIMG_MAX_BITMAP_NAME)
		return qimg_fail(err, -EFBIG,
				 "bitmap name too long (%u bytes)", name_len);
	qimg_copy_label(b->name, sizeof(b->name),
			p + sizeof(*d) + b->extra_data_size, name_len);
	for (i = sizeof(*d) + b->extra_data_size + name_len; i < total; i++)
		if (p[i])
			return qimg_fail(err, -EUCLEAN,
					 "bitmap '%s' entry padding is not zero",
					 b->name);
	if (b->flags & QIMG_BITMAP_RESERVED_FLAGS)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap '%s' has reserved flags %#x", b->name,
				 b->flags & QIMG_BITMAP_RESERVED_FLAGS);
	if (b->type != QIMG_BITMAP_TYPE_DIRTY)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap '%s' has reserved type %u", b->name,
				 b->type);
	if (b->granularity_bits > 63)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap '%s' granularity_bits %u is invalid",
				 b->name, b->granularity_bits);
	if (b->granularity_bits < QIMG_BITMAP_MIN_GRAN_BITS ||
	    b->granularity_bits > QIMG_BITMAP_MAX_GRAN_BITS)
		return qimg_fail(err, -ERANGE,
				 "bitmap '%s' granularity 2^%u is not supported (2^%u..2^%u)",
				 b->name, b->granularity_bits,
				 QIMG_BITMAP_MIN_GRAN_BITS,
				 QIMG_BITMAP_MAX_GRAN_BITS);
	if (!b->bitmap_table_size)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap '%s' has an empty bitmap table", b->name);
	if (b->bitmap_table_size > QIMG_BITMAP_MAX_TABLE_SIZE)
		return qimg_fail(err, -EFBIG,
				 "bitmap '%s' table too large (%u entries)",
				 b->name, b->bitmap_table_size);
	ret = qimg_check_ref(err, g->cluster_size, b->bitmap_table_offset,
			     (u64)b->bitmap_table_size * 8, file_size,
			     "bitmap '%s' table", b->name);
	if (ret)
		return ret;

	/*
	 * One bit per granule; the table needs one entry per cluster of
	 * bitmap data.  A bitmap still in use may be stale, so only a
	 * consistent one must cover the whole disk.
	 */
	bits = (g->virtual_size >> b->granularity_bits) +
	       ((g->virtual_size & ((1ULL << b->granularity_bits) - 1)) ?
		1 : 0);
	bytes = (bits + 7) / 8;
	need = (bytes + g->cluster_size - 1) >> g->cluster_bits;
	if (!(b->flags & QIMG_BITMAP_IN_USE) && b->bitmap_table_size < need)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap '%s' table has %u entries, %llu needed",
				 b->name, b->bitmap_table_size, need);
	return 0;
}

int qimg_bitmap_table_decode(const struct qimg_geom *g, u64 raw,
			     u64 file_size, u64 *data_offset, bool *all_ones,
			     struct qimg_err *err)
{
	u64 off = raw & QIMG_BME_OFFSET_MASK;
	int ret;

	*data_offset = 0;
	*all_ones = false;
	if (raw & QIMG_BME_RESERVED_MASK)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap table entry %#llx has reserved bits set",
				 raw);
	if (!off) {
		*all_ones = !!(raw & QIMG_BME_ALL_ONES);
		return 0;
	}
	if (raw & QIMG_BME_ALL_ONES)
		return qimg_fail(err, -EUCLEAN,
				 "bitmap table entry %#llx has both an offset and the all-ones bit",
				 raw);
	ret = qimg_check_ref(err, g->cluster_size, off, g->cluster_size,
			     file_size, "bitmap data");
	if (ret)
		return ret;
	*data_offset = off;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Metadata overlap check                                                   */

void qimg_ol_fixed_init(struct qimg_ol_fixed *f, const struct qimg_header *h,
			u64 snap_table_len)
{
	u64 cs = h->geom.cluster_size;

	memset(f, 0, sizeof(*f));
	f->len[0] = cs;				/* header cluster */
	f->off[1] = h->l1_table_offset;
	f->len[1] = (u64)h->l1_size * 8;
	f->off[2] = h->refcount_table_offset;
	f->len[2] = (u64)h->refcount_table_clusters * cs;
	if (h->nb_snapshots) {
		f->off[3] = h->snapshots_offset;
		f->len[3] = snap_table_len ? snap_table_len :
			    (u64)h->nb_snapshots *
			    sizeof(struct qimg_disk_snapshot);
	}
	if (h->has_bitmaps_ext && h->nb_bitmaps) {
		f->off[4] = h->bitmap_directory_offset;
		f->len[4] = h->bitmap_directory_size;
	}
}

u32 qimg_ol_fixed_hit(const struct qimg_ol_fixed *f, u64 off, u64 len,
		      u32 ign)
{
	int i;

	for (i = 0; i < QIMG_OL_NR_FIXED; i++) {
		if (!(ign & BIT(i)) &&
		    qimg_ranges_overlap(off, len, f->off[i], f->len[i]))
			return BIT(i);
	}
	return 0;
}

const char *qimg_ol_name(u32 kinds)
{
	static const char *const names[] = {
		"image header", "active L1 table", "refcount table",
		"snapshot table", "bitmap directory", "active L2 table",
		"refcount block", "inactive L1 table",
	};
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(names); i++) {
		if (kinds & BIT(i))
			return names[i];
	}
	return "metadata";
}
