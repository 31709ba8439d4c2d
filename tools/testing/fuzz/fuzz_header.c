// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the qimg format core.
 *
 * Input layout: the first cluster of an image (or part of it), followed by
 * a 4-byte big-endian value x; the image file is taken to be
 * (input size - 4) + x * 4096 bytes long, so fuzzed headers can point at
 * tables far past the bytes we hold, as real headers do.
 *
 * Checked properties, beyond "no crash, no sanitizer report":
 *  - every refusal comes with a message;
 *  - a header that decodes re-encodes (qimg_header_encode) into bytes
 *    that decode again to the same fields;
 *  - table entries taken from the input decode without crashing, and the
 *    canonical ones re-encode to the same raw value;
 *  - refcount get/set agree for every entry width;
 *  - the same bytes taken as a QED image: a header that decodes has a
 *    consistent geometry, its backing name (when it lies in the input)
 *    decodes, and table entries and runs taken from the input decode
 *    within the table and the file.
 */
#include <stdlib.h>

#include "qimg_fmt.h"
#include "qimg_qed.h"

int LLVMFuzzerTestOneInput(const u8 *data, size_t size);

#define QF_CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: check failed: %s\n",	\
				__FILE__, __LINE__, #cond);		\
			abort();					\
		}							\
	} while (0)

static u8 qf_enc[65536];

static void qf_same_header(const struct qimg_header *a,
			   const struct qimg_header *b)
{
	QF_CHECK(a->version == b->version);
	QF_CHECK(a->cluster_bits == b->cluster_bits);
	QF_CHECK(a->size == b->size);
	QF_CHECK(a->crypt_method == b->crypt_method);
	QF_CHECK(a->l1_size == b->l1_size);
	QF_CHECK(a->l1_table_offset == b->l1_table_offset);
	QF_CHECK(a->refcount_table_offset == b->refcount_table_offset);
	QF_CHECK(a->refcount_table_clusters == b->refcount_table_clusters);
	QF_CHECK(a->nb_snapshots == b->nb_snapshots);
	QF_CHECK(a->nb_snapshots == 0 ||
		 a->snapshots_offset == b->snapshots_offset);
	QF_CHECK(a->incompatible_features == b->incompatible_features);
	QF_CHECK(a->compatible_features == b->compatible_features);
	QF_CHECK(a->autoclear_features == b->autoclear_features);
	QF_CHECK(a->refcount_order == b->refcount_order);
	QF_CHECK(a->compression_type == b->compression_type);
	QF_CHECK(!strcmp(a->backing_file, b->backing_file));
	QF_CHECK(!strcmp(a->backing_fmt, b->backing_fmt));
	QF_CHECK(a->has_data_file == b->has_data_file);
	QF_CHECK(!strcmp(a->data_file, b->data_file));
	QF_CHECK(a->has_bitmaps_ext == b->has_bitmaps_ext);
	QF_CHECK(a->nb_bitmaps == b->nb_bitmaps);
	QF_CHECK(a->bitmap_directory_size == b->bitmap_directory_size);
	QF_CHECK(a->bitmap_directory_offset == b->bitmap_directory_offset);
	QF_CHECK(a->has_journal_ext == b->has_journal_ext);
	QF_CHECK(a->journal_offset == b->journal_offset);
	QF_CHECK(a->journal_size == b->journal_size);
	QF_CHECK(b->nb_unknown_exts == 0);
	QF_CHECK(!memcmp(&a->geom, &b->geom, sizeof(a->geom)));
}

static void qf_roundtrip(const struct qimg_header *h, u64 file_size)
{
	static struct qimg_header h2;
	struct qimg_err err = { "" };
	u64 cs = 1ULL << h->cluster_bits;
	int n, ret;

	/* At most 64 KiB of it: clearing 2 MiB per run would be slow. */
	if (cs > sizeof(qf_enc))
		cs = sizeof(qf_enc);
	n = qimg_header_encode(h, qf_enc, cs);
	if (n == -ENOSPC)
		return;		/* our feature table did not fit; legal */
	QF_CHECK(n > 0 && (u64)n <= cs);
	/* The backing name may have moved further into the cluster. */
	if (file_size < cs)
		file_size = cs;
	ret = qimg_header_decode(qf_enc, cs, file_size, &h2, &err);
	if (ret) {
		fprintf(stderr, "re-decode failed: %d %s\n", ret, err.msg);
		abort();
	}
	qf_same_header(h, &h2);
}

static u64 qf_u64(const u8 *data, size_t size, size_t at)
{
	u8 b[8] = { 0 };
	size_t i;

	for (i = 0; i < 8 && size; i++)
		b[i] = data[(at + i) % size];
	return get_unaligned_be64(b);
}

static void qf_entries(const struct qimg_header *h, const u8 *data,
		       size_t size, u64 file_size)
{
	const struct qimg_geom *g = &h->geom;
	struct qimg_err err;
	size_t i;

	for (i = 0; i + 16 <= size && i < 4096; i += 16) {
		u64 raw = qf_u64(data, size, i);
		u64 raw2 = qf_u64(data, size, i + 8);
		struct qimg_l2_entry e;
		u64 off;
		bool b;
		u32 sc;

		err.msg[0] = '\0';
		if (qimg_l1_decode(g, raw, file_size, &off, &b, &err))
			QF_CHECK(err.msg[0]);
		else if (off)
			QF_CHECK(qimg_l1_encode(off, b) == raw);
		if (!qimg_l2_decode(g, h->version, raw, raw2, file_size, &e,
				    &err)) {
			for (sc = 0; sc <= QIMG_SUBCLUSTERS; sc++)
				(void)qimg_subcluster_type(&e, sc);
			if (e.type == QIMG_CLUSTER_COMPRESSED)
				QF_CHECK(qimg_l2_encode_compressed(g,
						e.host_offset,
						e.compressed_len) == raw);
			if (e.type == QIMG_CLUSTER_NORMAL && e.host_offset)
				QF_CHECK(qimg_l2_encode_normal(e.host_offset,
							       e.copied) ==
					 raw);
		}
		if (!qimg_reftable_decode(g, raw, file_size, &off, &err))
			QF_CHECK(off == 0 || off == raw);
		(void)qimg_bitmap_table_decode(g, raw, file_size, &off, &b,
					       &err);
	}

	/* Snapshot and bitmap entries from a few places in the input. */
	for (i = 0; i < size && i < 2048; i += 8 * 37) {
		static struct qimg_snapshot sn;
		static struct qimg_bitmap bm;
		size_t len = size - i < 8192 ? size - i : 8192;
		u8 *copy = malloc(len);

		if (!copy)
			return;
		memcpy(copy, data + i, len);
		if (!qimg_snapshot_decode(g, copy, len, file_size, &sn, &err))
			/* The last entry of a table may lack its padding. */
			QF_CHECK(sn.entry_len < len + 8 && !(sn.entry_len & 7));
		if (!qimg_bitmap_decode(g, copy, len, file_size, &bm, &err))
			QF_CHECK(bm.entry_len <= len && !(bm.entry_len & 7));
		free(copy);
	}
}

static void qf_refcounts(const u8 *data, size_t size)
{
	u8 block[64];
	u32 order;
	u64 idx, val, max;

	if (size < 16)
		return;
	for (order = 0; order <= QIMG_MAX_REFCOUNT_ORDER; order++) {
		memcpy(block, data, size < sizeof(block) ? size :
		       sizeof(block));
		idx = data[0] % ((sizeof(block) * 8) >> order);
		max = order == 6 ? ~0ULL : (1ULL << (1U << order)) - 1;
		val = qf_u64(data, size, 1);
		if (qimg_refcount_set(block, order, idx, val)) {
			QF_CHECK(val > max);
			continue;
		}
		QF_CHECK(qimg_refcount_get(block, order, idx) == val);
	}
}

static void qf_qed(const u8 *buf, size_t len, u64 file_size)
{
	static char name[QIMG_QED_MAX_BACKING_NAME + 1];
	struct qimg_err err = { "" };
	struct qimg_qed_l2_entry e;
	struct qimg_qed_header h;
	u64 raw, off, first;
	size_t i;
	u32 run, idx;
	int ret;

	ret = qimg_qed_header_decode(buf, len, file_size, &h, &err);
	if (ret) {
		QF_CHECK(ret < 0 && err.msg[0]);
		return;
	}
	QF_CHECK(qimg_qed_probe(buf, len) || len < 4);
	QF_CHECK(h.table_entries * 8ULL == h.table_bytes);
	QF_CHECK((1ULL << (h.cluster_bits + h.table_bits)) ==
		 qimg_qed_l2_span(&h));
	/* QEMU's view of the file: whole sectors, then whole clusters. */
	QF_CHECK(h.file_size <= file_size + 511 &&
		 !(h.file_size & (h.cluster_size - 1)));
	QF_CHECK(qimg_qed_table_ok(&h, h.l1_table_offset));
	QF_CHECK(h.l1_table_offset + h.table_bytes <= h.file_size);
	if (h.image_size)
		QF_CHECK(qimg_qed_l1_index(&h, h.image_size - 1) <
			 h.table_entries);
	if (h.has_backing &&
	    (u64)h.backing_filename_offset + h.backing_filename_size <= len)
		QF_CHECK(!qimg_qed_backing_name(&h,
						buf + h.backing_filename_offset,
						name, sizeof(name), &err));
	for (i = 0; i + 8 <= len && i < 4096; i += 8) {
		raw = get_unaligned_le64(buf + i);
		if (!qimg_qed_l1_decode(&h, raw, &off, &err) && off)
			QF_CHECK(off + h.table_bytes <= h.file_size);
		if (!qimg_qed_l2_decode(&h, raw, &e, &err) &&
		    e.type == QIMG_QED_CL_DATA)
			QF_CHECK(e.host_offset + h.cluster_size <= h.file_size);
	}
	/* The input itself as an L2 table, when it is one table long. */
	if (len >= h.table_bytes) {
		idx = len > 8 ? buf[8] % h.table_entries : 0;
		run = qimg_qed_l2_run(&h, buf, idx, h.table_entries, &first);
		QF_CHECK(run >= 1 && idx + run <= h.table_entries);
	}
}

int LLVMFuzzerTestOneInput(const u8 *data, size_t size)
{
	static struct qimg_header h, fallback;
	struct qimg_err err = { "" };
	u64 file_size, x;
	size_t len;
	u8 *buf;
	int ret;

	if (size < 4)
		return 0;
	len = size - 4;
	x = get_unaligned_be32(data + len);
	file_size = len + x * 4096;
	/* An exact-size heap copy so ASan catches any overread. */
	buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, len);

	(void)qimg_header_peek_cluster_size(buf, len, &err);
	err.msg[0] = '\0';
	ret = qimg_header_decode(buf, len, file_size, &h, &err);
	if (ret) {
		QF_CHECK(ret < 0 && err.msg[0]);
	} else {
		const char *ro_why, *rw_why;
		char name[48];
		u32 bit;

		QF_CHECK(h.ext_end <= len);
		QF_CHECK(h.geom.l1_size <= h.l1_size);
		/* Whatever blocks a read-only attach blocks writing too. */
		ro_why = qimg_unsupported_feature(&h, false);
		rw_why = qimg_unsupported_feature(&h, true);
		QF_CHECK(!ro_why || rw_why);
		for (bit = 0; bit < 64; bit += 9)
			(void)qimg_feature_name(buf, len, &h,
						(u8)(bit % 3), (u8)bit, name,
						sizeof(name));
		qf_roundtrip(&h, file_size);
		qf_entries(&h, buf, len, file_size);
	}

	/* Entry decoders also get a fixed geometry, whatever the header. */
	memset(&fallback, 0, sizeof(fallback));
	fallback.version = 3;
	fallback.cluster_bits = 9 + (len ? buf[len - 1] % 13 : 7);
	fallback.refcount_order = 4;
	fallback.size = 1ULL << 30;
	if (len > 1 && (buf[len - 2] & 1) && fallback.cluster_bits >= 14)
		fallback.incompatible_features |= QIMG_INCOMPAT_EXTL2;
	if (len > 1 && (buf[len - 2] & 2))
		fallback.incompatible_features |= QIMG_INCOMPAT_DATA_FILE;
	if (!qimg_geom_init(&fallback, NULL))
		qf_entries(&fallback, buf, len, file_size);
	qf_refcounts(buf, len);
	qf_qed(buf, len, file_size);
	free(buf);
	return 0;
}
