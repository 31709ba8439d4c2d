// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of the journal format core (qimg_journal_fmt.[ch]): the
 * vectors of qimg_jrnl_vectors.h through header choice, scan, revoke and
 * replay (each replayed twice, and once more after a replay that failed
 * half way), a writer driving the ring through many passes with
 * checkpoints, and the encoders' and helpers' own contracts.
 */
#include <stdlib.h>

#include "qimg_tests.h"
#include "qimg_journal_fmt.h"
#include "qimg_jrnl_vectors.h"

struct qjt_mem {
	u8 *area;
	u64 area_size;
	u8 *img;
	u64 img_size;
	long fail_write_after;	/* -1: never */
	long fail_read_at;	/* block index, -1: never */
	u32 bits;
	u64 writes;
};

static int qjt_read(void *ctx, u64 pos, void *buf, u32 len)
{
	struct qjt_mem *m = ctx;

	assert_true(pos + len <= m->area_size);
	assert_int_equal(pos % 512, 0);
	assert_int_equal(len % 512, 0);
	if (m->fail_read_at >= 0 && (long)(pos >> m->bits) == m->fail_read_at)
		return -EIO;
	memcpy(buf, m->area + pos, len);
	return 0;
}

static int qjt_write(void *ctx, u64 host, const void *buf, u32 len)
{
	struct qjt_mem *m = ctx;

	assert_true(host + len <= m->img_size);
	if (m->fail_write_after >= 0 && (long)m->writes >= m->fail_write_after)
		return -ENOSPC;
	memcpy(m->img + host, buf, len);
	m->writes++;
	return 0;
}

static void qjt_mem_init(struct qjt_mem *m, u8 *area, u64 area_size,
			 u32 bits)
{
	memset(m, 0, sizeof(*m));
	m->area = area;
	m->area_size = area_size;
	m->img_size = QJV_FILE_SIZE;
	m->img = calloc(1, m->img_size);
	assert_non_null(m->img);
	m->fail_write_after = -1;
	m->fail_read_at = -1;
	m->bits = bits;
}

/*
 * Header, scan, revoke, replay: the recovery a caller does.  Returns the
 * first error; *@s and *@written describe what happened.
 */
static int qjt_recover(const struct qimg_jrnl_geom *g, struct qjt_mem *m,
		       struct qimg_jrnl_scan *s, u64 *written,
		       struct qimg_err *err)
{
	struct qimg_jrnl_io io = { qjt_read, qjt_write, m };
	struct qimg_jrnl_revoke *rv;
	struct qimg_jrnl_hdr h;
	u8 chunk[QIMG_JRNL_HDR_CHUNK];
	void *work;
	int ret;

	*written = 0;
	ret = qimg_jrnl_hdr_read(g, &io, chunk, &h, err);
	if (ret)
		return ret;
	work = malloc(qimg_jrnl_work_size(&h));
	assert_non_null(work);
	ret = qimg_jrnl_scan(g, &io, &h, work, s, err);
	if (!ret) {
		rv = calloc(s->nrevokes + 1, sizeof(*rv));
		assert_non_null(rv);
		ret = qimg_jrnl_revokes(g, &io, s, work, rv, err);
		if (!ret)
			ret = qimg_jrnl_replay(g, &io, s, work, rv, written,
					       err);
		free(rv);
	}
	free(work);
	return ret;
}

static void qjt_vector(void **state)
{
	const struct qimg_jrnl_vec *v = *state;
	struct qimg_jrnl_io io;
	struct qimg_jrnl_geom g;
	struct qimg_jrnl_scan s;
	struct qimg_jrnl_hdr h;
	struct qimg_err err = { "" };
	struct qjt_mem m, m2;
	u8 chunk[QIMG_JRNL_HDR_CHUNK];
	u8 *area, *first;
	u64 written, w2;
	int ret, i;

	area = calloc(1, QJV_MAX_AREA);
	assert_non_null(area);
	assert_true(qjv_area_size(v) <= QJV_MAX_AREA);
	assert_int_equal(qjv_build(v, area), 0);
	qjv_geom(v, &g);
	qjt_mem_init(&m, area, qjv_area_size(v), qjv_bits(v));
	io = (struct qimg_jrnl_io){ qjt_read, qjt_write, &m };

	ret = qimg_jrnl_hdr_read(&g, &io, chunk, &h, &err);
	if (v->hdr_ret) {
		assert_int_equal(ret, v->hdr_ret);
		assert_non_null(strstr(err.msg, v->hdr_msg));
		goto out;
	}
	if (ret)
		fail_msg("header: %d %s", ret, err.msg);
	assert_int_equal(h.copy, v->copy);

	ret = qjt_recover(&g, &m, &s, &written, &err);
	if (v->scan_ret) {
		if (ret != v->scan_ret || !strstr(err.msg, v->msg))
			fail_msg("scan: %d \"%s\", want %d \"%s\"", ret,
				 err.msg, v->scan_ret, v->msg);
		/* A refused journal writes nothing. */
		assert_int_equal(m.writes, 0);
		goto out;
	}
	if (ret)
		fail_msg("recovery: %d %s", ret, err.msg);
	assert_int_equal(s.ntx, v->ntx);
	assert_int_equal(s.first_seq, h.synced_seq + 1);
	assert_int_equal(s.last_seq, v->last_seq);
	assert_int_equal(s.next_seq, v->last_seq + 2);
	assert_int_equal(s.torn, v->torn);
	assert_int_equal(s.nrevokes, v->nrevokes);
	assert_int_equal(written, v->written);
	for (i = 0; i < (int)ARRAY_SIZE(v->img) && v->img[i].len; i++) {
		u32 j;

		for (j = 0; j < v->img[i].len; j++)
			if (m.img[v->img[i].off + j] != v->img[i].byte)
				fail_msg("image byte %llu is 0x%02x, want 0x%02x",
					 v->img[i].off + j,
					 m.img[v->img[i].off + j],
					 v->img[i].byte);
	}

	/* Replay twice: the same image. */
	first = malloc(m.img_size);
	assert_non_null(first);
	memcpy(first, m.img, m.img_size);
	assert_int_equal(qjt_recover(&g, &m, &s, &w2, &err), 0);
	assert_int_equal(w2, written);
	assert_memory_equal(first, m.img, m.img_size);

	/* A replay that fails half way, then a whole one: the same image. */
	if (written >= 2) {
		qjt_mem_init(&m2, area, qjv_area_size(v), qjv_bits(v));
		m2.fail_write_after = written / 2;
		ret = qjt_recover(&g, &m2, &s, &w2, &err);
		assert_int_equal(ret, -ENOSPC);
		assert_non_null(strstr(err.msg, "failed"));
		m2.fail_write_after = -1;
		assert_int_equal(qjt_recover(&g, &m2, &s, &w2, &err), 0);
		assert_memory_equal(first, m2.img, m2.img_size);
		free(m2.img);
	}
	free(first);
out:
	free(m.img);
	free(area);
}

/* ------------------------------------------------------------------------ */
/* A writer going round the ring                                            */

/*
 * Commits transactions of one or two 8-byte records, checkpointing every
 * third one into the alternate header copy, for 40 passes around a
 * 16-block ring, and checks after every commit that recovery finds
 * exactly the transactions since the last checkpoint and replays the
 * newest value of every target.
 */
static void qjt_writer_ring(void **state)
{
	enum { BITS = 9, BS = 512, NB = 16 };
	struct qimg_jrnl_hdr h, cur;
	struct qimg_jrnl_geom g = {
		QJV_CLUSTER_BITS, QJV_AREA_OFF, (u64)NB * BS, QJV_FILE_SIZE
	};
	u8 *area = calloc(NB, BS);
	u8 want[4][8];
	bool since[4] = { false };
	struct qjt_mem m;
	struct qimg_jrnl_scan s;
	struct qimg_err err;
	u64 seq, written, gen = 1, synced = 0x1fffffff0ULL;
	u32 pos = QIMG_JRNL_RING_START;
	int i;

	assert_non_null(area);
	assert_int_equal(qimg_jrnl_hdr_init(&h, BITS, (u64)NB * BS,
					    QJV_CLUSTER_BITS, synced, &err), 0);
	assert_int_equal(qimg_jrnl_hdr_encode(area, &h, &err), 0);
	assert_int_equal(qimg_jrnl_hdr_encode(area + BS, &h, &err), 0);
	cur = h;
	memset(want, 0, sizeof(want));
	qjt_mem_init(&m, area, (u64)NB * BS, BITS);
	for (seq = synced + 1; seq < synced + 1 + 40 * NB / 3; seq++) {
		struct qimg_jrnl_rec r[2];
		u8 d[2][8];
		u32 n = 1 + (seq & 1), crc, next;
		int nd;

		for (i = 0; i < (int)n; i++) {
			memset(d[i], (u8)(seq * 2 + i), 8);
			r[i].type = QIMG_JRNL_REC_WRITE;
			r[i].len = 8;
			r[i].target = QJV_A + 0x10000ULL * ((seq + i) % 4);
			r[i].data = d[i];
		}
		nd = qimg_jrnl_desc_encode(area + (size_t)pos * BS,
					   area + (size_t)(pos + 1) * BS,
					   NB - pos - 1, BITS, seq, r, n, &err);
		assert_int_equal(nd, 1);
		crc = qimg_crc32c(0, area + (size_t)pos * BS, 2 * BS);
		next = qimg_jrnl_next_start(&cur, pos + 2, 3);
		qimg_jrnl_commit_encode(area + (size_t)(pos + 2) * BS, BITS,
					seq, 2, next, crc);
		for (i = 0; i < (int)n; i++) {
			memcpy(want[(seq + i) % 4], d[i], 8);
			since[(seq + i) % 4] = true;
		}
		pos = next;

		/* Recovery sees everything since the checkpoint. */
		memset(m.img, 0, m.img_size);
		assert_int_equal(qjt_recover(&g, &m, &s, &written, &err), 0);
		assert_int_equal(s.ntx, seq - cur.synced_seq);
		assert_int_equal(s.last_seq, seq);
		assert_false(s.torn);
		assert_int_equal(s.end_block, pos);

		if (seq % 3 == 0) {
			/* Checkpoint: tables in place, then a header copy. */
			memset(since, 0, sizeof(since));
			cur.generation = ++gen;
			cur.synced_seq = seq;
			cur.tail_block = pos;
			assert_int_equal(qimg_jrnl_hdr_encode(area + (gen & 1) * BS,
							      &cur, &err), 0);
		} else {
			/* The newest value of each target was replayed. */
			for (i = 0; i < 4; i++) {
				u64 off = QJV_A + 0x10000ULL * i;
				u8 z[8] = { 0 };

				if (memcmp(m.img + off, since[i] ? want[i] : z, 8))
					fail_msg("target %d wrong after seq %llu",
						 i, seq);
			}
		}
	}
	free(m.img);
	free(area);
}

/* ------------------------------------------------------------------------ */
/* Contracts of the helpers                                                 */

static void qjt_crc32c(void **state)
{
	assert_int_equal(qimg_crc32c(0, "123456789", 9), 0xe3069283);
	assert_int_equal(qimg_crc32c(qimg_crc32c(0, "1234", 4), "56789", 5),
			 0xe3069283);
	assert_int_equal(qimg_crc32c(0, "", 0), 0);
}

static void qjt_encoders(void **state)
{
	struct qimg_jrnl_rec r[40];
	struct qimg_jrnl_hdr h;
	struct qimg_err err;
	u8 d[512], blk[512], data[2 * 512];
	int i;

	memset(d, 0x5a, sizeof(d));
	for (i = 0; i < 40; i++)
		r[i] = (struct qimg_jrnl_rec){ QIMG_JRNL_REC_REVOKE, 0x10000,
					      0x10000ULL * (i + 1), NULL };
	/* 30 revokes fill a 512-byte descriptor; 31 do not fit. */
	assert_int_equal(qimg_jrnl_desc_blocks(9, r, 30, &err), 0);
	assert_int_equal(qimg_jrnl_desc_blocks(9, r, 31, &err), -ENOSPC);
	assert_non_null(strstr(err.msg, "do not fit"));
	/* Data never crosses a block: 504 + 16 bytes need two blocks. */
	r[0] = (struct qimg_jrnl_rec){ QIMG_JRNL_REC_WRITE, 504, 0x10000, d };
	r[1] = (struct qimg_jrnl_rec){ QIMG_JRNL_REC_WRITE, 16, 0x20000, d };
	assert_int_equal(qimg_jrnl_desc_blocks(9, r, 2, &err), 2);
	assert_int_equal(qimg_jrnl_desc_encode(blk, data, 1, 9, 1, r, 2, &err),
			 -ENOSPC);
	assert_int_equal(qimg_jrnl_desc_encode(blk, data, 2, 9, 1, r, 2, &err),
			 2);
	assert_int_equal(get_unaligned_be32(blk + 24 + 48), 512);
	r[0].len = 12;
	assert_int_equal(qimg_jrnl_desc_blocks(9, r, 1, &err), -EINVAL);
	r[0].len = 8;
	r[0].type = 9;
	assert_int_equal(qimg_jrnl_desc_blocks(9, r, 1, &err), -EINVAL);
	r[0] = (struct qimg_jrnl_rec){ QIMG_JRNL_REC_WRITE, 8, 0x10000, NULL };
	assert_int_equal(qimg_jrnl_desc_blocks(9, r, 1, &err), -EINVAL);

	assert_int_equal(qimg_jrnl_hdr_init(&h, 8, 8192, 16, 0, &err), -EINVAL);
	assert_int_equal(qimg_jrnl_hdr_init(&h, 17, 1 << 20, 16, 0, &err),
			 -EINVAL);
	assert_int_equal(qimg_jrnl_hdr_init(&h, 9, 1024, 16, 0, &err), -EINVAL);
	assert_int_equal(qimg_jrnl_hdr_init(&h, 16, 2ULL << 30, 16, 0, &err),
			 -EFBIG);
	assert_int_equal(qimg_jrnl_hdr_init(&h, 9, 8192, 16, 1ULL << 62, &err),
			 -EINVAL);
	assert_int_equal(qimg_jrnl_hdr_init(&h, 9, 8192, 16, 7, &err), 0);
	assert_int_equal(h.nblocks, 16);
	assert_int_equal(h.tail_block, 2);
	h.tail_block = 16;
	assert_int_equal(qimg_jrnl_hdr_encode(blk, &h, &err), -EINVAL);

	/* Next start: right after the commit while a transaction fits. */
	h.tail_block = 2;
	assert_int_equal(qimg_jrnl_next_start(&h, 4, 3), 5);
	assert_int_equal(qimg_jrnl_next_start(&h, 12, 3), 13);
	assert_int_equal(qimg_jrnl_next_start(&h, 13, 3), 2);
	assert_int_equal(qimg_jrnl_next_start(&h, 15, 1), 2);
}

static void qjt_revoked(void **state)
{
	struct qimg_jrnl_revoke rv[] = {
		{ 0x10000, 0x30000, 5, 0x40000 },
		{ 0x20000, 0x10000, 2, 0x40000 },
		{ 0x80000, 0x10000, 9, 0x90000 },
	};

	assert_false(qimg_jrnl_revoked(rv, 3, 0x0, 8, 1));
	assert_true(qimg_jrnl_revoked(rv, 3, 0x10000, 8, 4));
	assert_false(qimg_jrnl_revoked(rv, 3, 0x10000, 8, 5));
	assert_true(qimg_jrnl_revoked(rv, 3, 0x3fff8, 8, 4));
	assert_true(qimg_jrnl_revoked(rv, 3, 0x20000, 8, 1));
	assert_false(qimg_jrnl_revoked(rv, 3, 0x40000, 8, 1));
	assert_true(qimg_jrnl_revoked(rv, 3, 0x80000, 8, 8));
	assert_false(qimg_jrnl_revoked(rv, 3, 0x90000, 8, 1));
	assert_false(qimg_jrnl_revoked(NULL, 0, 0x10000, 8, 1));
}

/* Read errors are the caller's errno, never a crash or a silent end. */
static void qjt_read_error(void **state)
{
	const struct qimg_jrnl_vec *v = &qimg_jrnl_vecs[2];	/* three tx */
	struct qimg_jrnl_geom g;
	struct qimg_jrnl_scan s;
	struct qimg_err err;
	struct qjt_mem m;
	u8 *area = calloc(1, QJV_MAX_AREA);
	u64 written;
	long blk;

	assert_non_null(area);
	assert_int_equal(qjv_build(v, area), 0);
	qjv_geom(v, &g);
	for (blk = 0; blk < 17; blk++) {
		qjt_mem_init(&m, area, qjv_area_size(v), qjv_bits(v));
		m.fail_read_at = blk;
		assert_int_equal(qjt_recover(&g, &m, &s, &written, &err), -EIO);
		assert_true(err.msg[0] != 0);
		assert_int_equal(m.writes, 0);
		free(m.img);
	}
	free(area);
}

/* A descriptor whose count overruns a block full of records. */
static void qjt_overrun(void **state)
{
	struct qimg_jrnl_rec r[30];
	struct qimg_jrnl_geom g = { 16, QJV_AREA_OFF, 8192, QJV_FILE_SIZE };
	struct qimg_jrnl_hdr h;
	struct qimg_jrnl_scan s;
	struct qimg_err err;
	struct qjt_mem m;
	u8 *area = calloc(16, 512);
	u64 written;
	int i;

	assert_non_null(area);
	for (i = 0; i < 30; i++)
		r[i] = (struct qimg_jrnl_rec){ QIMG_JRNL_REC_REVOKE, 0x10000,
					      0x10000ULL * (i + 1), NULL };
	assert_int_equal(qimg_jrnl_hdr_init(&h, 9, 8192, 16, 0, &err), 0);
	assert_int_equal(qimg_jrnl_hdr_encode(area, &h, &err), 0);
	assert_int_equal(qimg_jrnl_desc_encode(area + 1024, area + 1536, 13, 9,
					       1, r, 30, &err), 0);
	put_unaligned_be32(31, area + 1024 + 16);
	qjv_fix(area + 1024, 512, 2);
	qjt_mem_init(&m, area, 8192, 9);
	assert_int_equal(qjt_recover(&g, &m, &s, &written, &err), -EUCLEAN);
	assert_non_null(strstr(err.msg, "overrun the block"));
	free(m.img);
	free(area);
}

static void qjt_size_check(void **state)
{
	struct qimg_err err;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(qimg_jrnl_size_vecs); i++) {
		const struct qjv_size *v = &qimg_jrnl_size_vecs[i];

		err.msg[0] = 0;
		assert_int_equal(qimg_jrnl_size_check(v->size, v->cluster_bits,
						      &err), v->ret);
		if (v->msg && !strstr(err.msg, v->msg))
			fail_msg("size %llu, cluster_bits %u: \"%s\" lacks \"%s\"",
				 v->size, v->cluster_bits, err.msg, v->msg);
	}
	assert_int_equal(qimg_jrnl_block_bits(9), 9);
	assert_int_equal(qimg_jrnl_block_bits(12), 12);
	assert_int_equal(qimg_jrnl_block_bits(16), 12);
}

static const struct CMUnitTest qjt_misc[] = {
	cmocka_unit_test(qjt_size_check),
	cmocka_unit_test(qjt_crc32c),
	cmocka_unit_test(qjt_encoders),
	cmocka_unit_test(qjt_revoked),
	cmocka_unit_test(qjt_read_error),
	cmocka_unit_test(qjt_overrun),
	cmocka_unit_test(qjt_writer_ring),
};

int qimg_test_run_journal(void)
{
	int failed;

	failed = qimg_test_run_table("journal vectors", qimg_jrnl_vecs,
				     ARRAY_SIZE(qimg_jrnl_vecs),
				     sizeof(qimg_jrnl_vecs[0]),
				     offsetof(struct qimg_jrnl_vec, name),
				     qjt_vector);
	failed += cmocka_run_group_tests_name("journal", qjt_misc, NULL, NULL);
	return failed;
}
