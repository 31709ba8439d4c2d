// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the journal format core (qimg_journal_fmt.c): the
 * header choice and the scan, revoke and replay passes over a fuzzed
 * journal area.
 *
 * Input layout: one flags byte, then the journal area (truncated to whole
 * 512-byte units, at least 4 of them, at most 64 KiB).  Flag bit 0 makes
 * the harness recompute every checksum first (header copies, block and
 * transaction checksums, record data checksums), so mutated fields reach
 * the validation behind the checksums instead of only ending the log.
 *
 * Checked properties, beyond "no crash, no sanitizer report":
 *  - every refusal comes with a message;
 *  - replay writes only 8-byte aligned ranges inside the image file and
 *    outside the journal, never more records than the scan counted, and
 *    nothing at all unless the scan accepted the log;
 *  - a second replay writes the same records and leaves the same image.
 *
 * With QIMG_JFUZZ_SEEDS=DIR in the environment, LLVMFuzzerInitialize()
 * first writes every vector of qimg_jrnl_vectors.h there as a seed input.
 */
#include <stdlib.h>

#include "qimg_journal_fmt.h"
#include "qimg_jrnl_vectors.h"

int LLVMFuzzerTestOneInput(const u8 *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define QF_CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: check failed: %s\n",	\
				__FILE__, __LINE__, #cond);		\
			abort();					\
		}							\
	} while (0)

#define QF_MAX_AREA	65536U

static u8 qf_area[QF_MAX_AREA];
static u8 qf_img[QJV_FILE_SIZE];
static u8 qf_img2[QJV_FILE_SIZE];

struct qf_ctx {
	u32 size;
	u8 *img;
	u64 writes;
};

static int qf_read(void *ctx, u64 pos, void *buf, u32 len)
{
	struct qf_ctx *c = ctx;

	QF_CHECK(pos % 512 == 0 && len % 512 == 0);
	QF_CHECK(pos + len <= c->size);
	memcpy(buf, qf_area + pos, len);
	return 0;
}

static int qf_write(void *ctx, u64 host, const void *buf, u32 len)
{
	struct qf_ctx *c = ctx;

	QF_CHECK(len && len % 8 == 0 && host % 8 == 0);
	QF_CHECK(host + len <= QJV_FILE_SIZE);
	QF_CHECK(host + len <= QJV_AREA_OFF || host >= QJV_AREA_OFF + c->size);
	memcpy(c->img + host, buf, len);
	c->writes++;
	return 0;
}

static void qf_crc_at(u8 *blk, u32 bs, u32 off)
{
	memset(blk + off, 0, 4);
	put_unaligned_be32(qimg_crc32c(0, blk, bs), blk + off);
}

/* Make every checksum in the area right, in the order a writer would. */
static void qf_fix(u32 size)
{
	u32 bits = get_unaligned_be32(qf_area + 12), bs, n, i, r, off;

	if (bits < QIMG_JRNL_MIN_BLOCK_BITS || bits > QJV_CLUSTER_BITS ||
	    (2U << bits) > size)
		bits = QIMG_JRNL_MIN_BLOCK_BITS;
	bs = 1U << bits;
	n = size >> bits;
	qf_crc_at(qf_area, bs, 44);
	qf_crc_at(qf_area + bs, bs, 44);
	for (i = QIMG_JRNL_RING_START; i < n; i++) {
		u8 *b = qf_area + ((size_t)i << bits);
		u32 magic = get_unaligned_be32(b);
		u32 count = get_unaligned_be32(b + 16);

		if (magic == QIMG_JRNL_DESC_MAGIC) {
			off = 32;
			for (r = 0; r < count && off + 24 <= bs; r++) {
				u8 *rp = b + off;
				u32 len = get_unaligned_be32(rp + 4);
				u32 doff = get_unaligned_be32(rp + 16);
				u64 at = ((u64)(i + 1) << bits) + doff;

				if (get_unaligned_be16(rp) != QIMG_JRNL_REC_WRITE) {
					off += 16;
					continue;
				}
				if (len <= bs && at + len <= size)
					put_unaligned_be32(qimg_crc32c(0, qf_area + at,
								       len),
							   rp + 20);
				off += 24;
			}
			qf_crc_at(b, bs, 4);
		} else if (magic == QIMG_JRNL_COMMIT_MAGIC) {
			if (count && count <= i - QIMG_JRNL_RING_START)
				put_unaligned_be32(qimg_crc32c(0, b - ((size_t)count << bits),
							       (size_t)count << bits),
						   b + 24);
			qf_crc_at(b, bs, 4);
		}
	}
}

/* Header, scan, revoke, replay into @img; returns the scan's verdict. */
static int qf_recover(u32 size, u8 *img, u64 *writes, u64 *ntx)
{
	struct qimg_jrnl_geom g = {
		QJV_CLUSTER_BITS, QJV_AREA_OFF, size, QJV_FILE_SIZE
	};
	struct qf_ctx c = { size, img, 0 };
	struct qimg_jrnl_io io = { qf_read, qf_write, &c };
	struct qimg_err err = { "" };
	struct qimg_jrnl_revoke *rv;
	struct qimg_jrnl_scan s;
	struct qimg_jrnl_hdr h;
	u8 chunk[QIMG_JRNL_HDR_CHUNK];
	u64 written = 0;
	void *work;
	int ret;

	*writes = 0;
	*ntx = 0;
	ret = qimg_jrnl_hdr_read(&g, &io, chunk, &h, &err);
	if (ret) {
		QF_CHECK(ret == -EUCLEAN && err.msg[0]);
		return ret;
	}
	QF_CHECK(h.nblocks == size >> h.block_bits);
	work = malloc(qimg_jrnl_work_size(&h));
	QF_CHECK(work);
	ret = qimg_jrnl_scan(&g, &io, &h, work, &s, &err);
	if (ret) {
		QF_CHECK(ret == -EUCLEAN && err.msg[0]);
		QF_CHECK(c.writes == 0);
		free(work);
		return ret;
	}
	QF_CHECK(s.used_blocks <= h.nblocks - QIMG_JRNL_RING_START);
	QF_CHECK(s.last_seq == h.synced_seq + s.ntx);
	rv = calloc(s.nrevokes + 1, sizeof(*rv));
	QF_CHECK(rv);
	ret = qimg_jrnl_revokes(&g, &io, &s, work, rv, &err);
	QF_CHECK(ret == 0);
	ret = qimg_jrnl_replay(&g, &io, &s, work, rv, &written, &err);
	QF_CHECK(ret == 0);
	QF_CHECK(written == c.writes && written <= s.nwrites);
	free(rv);
	free(work);
	*writes = written;
	*ntx = s.ntx;
	return 0;
}

int LLVMFuzzerTestOneInput(const u8 *data, size_t size)
{
	u64 w1, w2, n1, n2;
	u32 len;
	int r1, r2;

	if (size < 1)
		return 0;
	len = (size - 1) & ~511U;
	if (len > QF_MAX_AREA)
		len = QF_MAX_AREA;
	if (len < QIMG_JRNL_MIN_BLOCKS * 512)
		return 0;
	memcpy(qf_area, data + 1, len);
	if (data[0] & 1)
		qf_fix(len);
	memset(qf_img, 0, sizeof(qf_img));
	r1 = qf_recover(len, qf_img, &w1, &n1);
	if (r1 || !w1)
		return 0;
	/* Idempotent: again over the replayed image, and from scratch. */
	memcpy(qf_img2, qf_img, sizeof(qf_img));
	r2 = qf_recover(len, qf_img2, &w2, &n2);
	QF_CHECK(r2 == 0 && w2 == w1 && n2 == n1);
	QF_CHECK(!memcmp(qf_img, qf_img2, sizeof(qf_img)));
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("QIMG_JFUZZ_SEEDS");
	char path[4096];
	size_t i;
	int fix;

	if (!dir)
		return 0;
	for (i = 0; i < ARRAY_SIZE(qimg_jrnl_vecs); i++) {
		const struct qimg_jrnl_vec *v = &qimg_jrnl_vecs[i];
		u64 sz = qjv_area_size(v);
		FILE *f;

		if (sz > QF_MAX_AREA || qjv_build(v, qf_area))
			continue;
		for (fix = 0; fix < 2; fix++) {
			u8 flags = fix;

			snprintf(path, sizeof(path), "%s/vec%03zu-%d", dir, i, fix);
			f = fopen(path, "wb");
			if (!f)
				continue;
			if (fwrite(&flags, 1, 1, f) != 1 ||
			    fwrite(qf_area, 1, sz, f) != sz)
				fprintf(stderr, "fuzz_journal: cannot write %s\n", path);
			fclose(f);
		}
	}
	return 0;
}
