// SPDX-License-Identifier: GPL-2.0
/*
 * qimg format core, QED part: decode and validate QED headers and table
 * entries (see qimg_qed.h for the format and for whose rules these are).
 *
 * Pure functions over caller-owned buffers, compiled into the kernel
 * module and, through tools/include/qimg_shim.h, into qimgctl, the unit
 * tests and the fuzzer.  Every value read from the image is untrusted: each
 * is bounded before it takes part in arithmetic, or the arithmetic is done
 * so that it cannot wrap (the one deliberate exception, QEMU's largest
 * image size, is unsigned and wraps the way QEMU's does).
 */
#include "qimg_qed.h"

static inline void qimg_qed_build_checks(void)
{
	BUILD_BUG_ON(sizeof(struct qimg_qed_disk_header) != QIMG_QED_HEADER_LEN);
	BUILD_BUG_ON(offsetof(struct qimg_qed_disk_header, features) !=
		     QIMG_QED_OFF_FEATURES);
}

/* log2 of a power of two. */
static u32 qimg_qed_log2(u64 v)
{
	u32 n = 0;

	while (v > 1) {
		v >>= 1;
		n++;
	}
	return n;
}

static bool qimg_qed_pow2(u64 v)
{
	return v && !(v & (v - 1));
}

bool qimg_qed_probe(const void *buf, size_t len)
{
	return len >= 4 && get_unaligned_le32(buf) == QIMG_QED_MAGIC;
}

u64 qimg_qed_max_image_size(u32 cluster_size, u32 table_size)
{
	/* As QEMU computes it: 32-bit table bytes, then 64-bit products. */
	u64 entries = (u32)(table_size * cluster_size) / 8;

	return entries * cluster_size * entries;
}

bool qimg_qed_cluster_ok(const struct qimg_qed_header *h, u64 offset)
{
	if (offset & (h->cluster_size - 1))
		return false;
	return offset >= h->header_bytes && offset < h->file_size;
}

bool qimg_qed_table_ok(const struct qimg_qed_header *h, u64 offset)
{
	u64 last = offset + (u64)(h->table_size - 1) * h->cluster_size;

	/* QEMU's test: also false for one-cluster tables (last == offset). */
	if (last <= offset)
		return false;
	return qimg_qed_cluster_ok(h, offset) && qimg_qed_cluster_ok(h, last);
}

int qimg_qed_header_decode(const void *buf, size_t len, u64 file_size,
			   struct qimg_qed_header *h, struct qimg_err *err)
{
	u8 raw[QIMG_QED_HEADER_LEN];
	const struct qimg_qed_disk_header *d =
		(const struct qimg_qed_disk_header *)raw;
	u64 unknown;

	qimg_qed_build_checks();
	memset(h, 0, sizeof(*h));
	memset(raw, 0, sizeof(raw));
	memcpy(raw, buf, len < sizeof(raw) ? len : sizeof(raw));

	if (le32_to_cpu(d->magic) != QIMG_QED_MAGIC)
		return qimg_fail(err, -EINVAL, "Image not in QED format");
	h->cluster_size = le32_to_cpu(d->cluster_size);
	h->table_size = le32_to_cpu(d->table_size);
	h->header_size = le32_to_cpu(d->header_size);
	h->features = le64_to_cpu(d->features);
	h->compat_features = le64_to_cpu(d->compat_features);
	h->autoclear_features = le64_to_cpu(d->autoclear_features);
	h->l1_table_offset = le64_to_cpu(d->l1_table_offset);
	h->image_size = le64_to_cpu(d->image_size);
	h->backing_filename_offset = le32_to_cpu(d->backing_filename_offset);
	h->backing_filename_size = le32_to_cpu(d->backing_filename_size);

	unknown = h->features & ~QIMG_QED_FEATURES_KNOWN;
	if (unknown)
		return qimg_fail(err, -EOPNOTSUPP,
				     "Unsupported QED features: %llx", unknown);
	if (h->cluster_size < QIMG_QED_MIN_CLUSTER ||
	    h->cluster_size > QIMG_QED_MAX_CLUSTER ||
	    !qimg_qed_pow2(h->cluster_size))
		return qimg_fail(err, -EINVAL, "QED cluster size is invalid");
	h->cluster_bits = qimg_qed_log2(h->cluster_size);
	/*
	 * QEMU sees the file in whole 512-byte sectors (a partial last one
	 * counts), then takes the whole clusters of that.
	 */
	if (file_size <= U64_MAX - 511)
		file_size = (file_size + 511) & ~511ULL;
	h->file_size = file_size & ~((u64)h->cluster_size - 1);
	if (h->table_size < QIMG_QED_MIN_TABLE ||
	    h->table_size > QIMG_QED_MAX_TABLE ||
	    !qimg_qed_pow2(h->table_size))
		return qimg_fail(err, -EINVAL, "QED table size is invalid");
	if ((h->image_size & 511) ||
	    h->image_size > qimg_qed_max_image_size(h->cluster_size,
						    h->table_size))
		return qimg_fail(err, -EINVAL, "QED image size is invalid");
	/* Needed by the offset checks; a 64-bit product, it cannot wrap. */
	h->header_bytes = (u64)h->header_size * h->cluster_size;
	if (!qimg_qed_table_ok(h, h->l1_table_offset))
		return qimg_fail(err, -EINVAL, "QED table offset is invalid");
	if (h->header_size > U32_MAX / h->cluster_size)
		return qimg_fail(err, -EINVAL, "QED header size is too large");

	/* Both are powers of two; their product is at most 1 GiB. */
	h->table_bytes = h->cluster_size * h->table_size;
	h->table_entries = h->table_bytes / 8;
	h->table_bits = qimg_qed_log2(h->table_entries);
	h->need_check = h->features & QIMG_QED_F_NEED_CHECK;
	h->has_backing = h->features & QIMG_QED_F_BACKING_FILE;
	if (h->has_backing) {
		if ((u64)h->backing_filename_offset + h->backing_filename_size >
		    h->header_bytes)
			return qimg_fail(err, -EINVAL,
					     "QED backing filename offset is invalid");
		if (h->backing_filename_size > QIMG_QED_MAX_BACKING_NAME)
			return qimg_fail(err, -EINVAL,
					     "Failed to read backing filename");
		h->backing_raw = h->features & QIMG_QED_F_BACKING_RAW;
	}
	return 0;
}

int qimg_qed_backing_name(const struct qimg_qed_header *h, const void *raw,
			  char *out, size_t outlen, struct qimg_err *err)
{
	size_t n = h->backing_filename_size;

	if (!outlen || n >= outlen)
		return qimg_fail(err, -EINVAL,
				     "Failed to read backing filename");
	memcpy(out, raw, n);
	out[n] = '\0';
	return 0;
}

int qimg_qed_l1_decode(const struct qimg_qed_header *h, u64 raw,
		       u64 *l2_offset, struct qimg_err *err)
{
	*l2_offset = 0;
	if (raw == QIMG_QED_UNALLOC)
		return 0;
	if (!qimg_qed_table_ok(h, raw))
		return qimg_fail(err, -EUCLEAN,
				     "invalid L2 table offset 0x%llx", raw);
	*l2_offset = raw;
	return 0;
}

int qimg_qed_l2_decode(const struct qimg_qed_header *h, u64 raw,
		       struct qimg_qed_l2_entry *e, struct qimg_err *err)
{
	e->host_offset = 0;
	if (raw == QIMG_QED_UNALLOC) {
		e->type = QIMG_QED_CL_UNALLOC;
		return 0;
	}
	if (raw == QIMG_QED_ZERO) {
		e->type = QIMG_QED_CL_ZERO;
		return 0;
	}
	e->type = QIMG_QED_CL_DATA;
	if (!qimg_qed_cluster_ok(h, raw))
		return qimg_fail(err, -EUCLEAN,
				     "invalid data cluster offset 0x%llx", raw);
	e->host_offset = raw;
	return 0;
}

u32 qimg_qed_l2_run(const struct qimg_qed_header *h, const void *table,
		    u32 idx, u32 max, u64 *first)
{
	u32 end, i;
	u64 last, v;

	*first = 0;
	if (idx >= h->table_entries || !max)
		return 0;
	end = max < h->table_entries - idx ? idx + max : h->table_entries;
	last = qimg_qed_table_get(table, idx);
	*first = last;
	for (i = idx + 1; i < end; i++) {
		v = qimg_qed_table_get(table, i);
		if (last == QIMG_QED_UNALLOC || last == QIMG_QED_ZERO) {
			if (v != last)
				break;
		} else {
			if (v != last + h->cluster_size)
				break;
			last = v;
		}
	}
	return i - idx;
}
