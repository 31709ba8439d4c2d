// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suite qimg_journal: the journal format core (qimg_journal_fmt.c)
 * run over the vectors the cmocka suite uses (tools/testing/unit/
 * qimg_jrnl_vectors.h, shared as qimg_fmt_kunit.c shares qimg_vectors.h):
 * header choice, scan, revoke and replay into an image buffer, replay
 * again (the same image) and once more after a replay that failed half
 * way; then the journal size rules.  Buffers are allocated at their exact
 * length so KASAN reports any access past what the passes were given.
 */
#include "qimg_kunit.h"
#include "qimg_journal_fmt.h"
#include "qimg_jrnl_vectors.h"

struct qimg_t_jmem {
	struct kunit *test;
	u8 *area;
	u64 area_size;
	u8 *img;
	u64 img_size;
	long fail_write_after;	/* -1: never */
	u64 writes;
};

static int qimg_t_jread(void *ctx, u64 pos, void *buf, u32 len)
{
	struct qimg_t_jmem *m = ctx;

	KUNIT_EXPECT_LE(m->test, pos + len, m->area_size);
	KUNIT_EXPECT_EQ(m->test, pos % 512, 0);
	KUNIT_EXPECT_EQ(m->test, len % 512, 0);
	if (pos + len > m->area_size)
		return -EIO;
	memcpy(buf, m->area + pos, len);
	return 0;
}

static int qimg_t_jwrite(void *ctx, u64 host, const void *buf, u32 len)
{
	struct qimg_t_jmem *m = ctx;

	KUNIT_EXPECT_LE(m->test, host + len, m->img_size);
	if (host + len > m->img_size)
		return -EIO;
	if (m->fail_write_after >= 0 && (long)m->writes >= m->fail_write_after)
		return -ENOSPC;
	memcpy(m->img + host, buf, len);
	m->writes++;
	return 0;
}

static void qimg_t_jmem_init(struct kunit *test, struct qimg_t_jmem *m,
			     u8 *area, u64 area_size)
{
	memset(m, 0, sizeof(*m));
	m->test = test;
	m->area = area;
	m->area_size = area_size;
	m->img_size = QJV_FILE_SIZE;
	m->img = kunit_kzalloc(test, m->img_size, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, m->img);
	m->fail_write_after = -1;
}

/* Header, scan, revoke, replay: what a caller does at attach. */
static int qimg_t_jrecover(struct kunit *test,
			   const struct qimg_jrnl_geom *g,
			   struct qimg_t_jmem *m, struct qimg_jrnl_scan *s,
			   u64 *written, struct qimg_err *err)
{
	struct qimg_jrnl_io io = { qimg_t_jread, qimg_t_jwrite, m };
	struct qimg_jrnl_revoke *rv;
	struct qimg_jrnl_hdr h;
	u8 *chunk, *work;
	int ret;

	*written = 0;
	chunk = kunit_kmalloc(test, QIMG_JRNL_HDR_CHUNK, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, chunk);
	ret = qimg_jrnl_hdr_read(g, &io, chunk, &h, err);
	if (ret)
		return ret;
	work = kunit_kmalloc(test, qimg_jrnl_work_size(&h), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, work);
	ret = qimg_jrnl_scan(g, &io, &h, work, s, err);
	if (ret)
		return ret;
	rv = kunit_kcalloc(test, s->nrevokes + 1, sizeof(*rv), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, rv);
	ret = qimg_jrnl_revokes(g, &io, s, work, rv, err);
	if (ret)
		return ret;
	return qimg_jrnl_replay(g, &io, s, work, rv, written, err);
}

static void qimg_t_jvec_desc(const struct qimg_jrnl_vec *v, char *desc)
{
	strscpy(desc, v->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(qimg_t_jvec, qimg_jrnl_vecs, qimg_t_jvec_desc);

static void qimg_journal_vectors(struct kunit *test)
{
	const struct qimg_jrnl_vec *v = test->param_value;
	struct qimg_jrnl_io io;
	struct qimg_jrnl_geom g;
	struct qimg_jrnl_scan s;
	struct qimg_jrnl_hdr h;
	struct qimg_err err = { };
	struct qimg_t_jmem m, m2;
	u64 area_size = qjv_area_size(v), written, w2;
	u8 *area, *chunk, *first;
	int ret, i;

	KUNIT_ASSERT_LE(test, area_size, (u64)QJV_MAX_AREA);
	area = kunit_kzalloc(test, area_size, GFP_KERNEL);
	chunk = kunit_kmalloc(test, QIMG_JRNL_HDR_CHUNK, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, area);
	KUNIT_ASSERT_NOT_NULL(test, chunk);
	KUNIT_ASSERT_EQ(test, qjv_build(v, area), 0);
	qjv_geom(v, &g);
	qimg_t_jmem_init(test, &m, area, area_size);
	io = (struct qimg_jrnl_io){ qimg_t_jread, qimg_t_jwrite, &m };

	ret = qimg_jrnl_hdr_read(&g, &io, chunk, &h, &err);
	if (v->hdr_ret) {
		KUNIT_EXPECT_EQ(test, ret, v->hdr_ret);
		KUNIT_EXPECT_NOT_NULL_MSG(test, strstr(err.msg, v->hdr_msg),
					  "\"%s\" not in \"%s\"", v->hdr_msg,
					  err.msg);
		return;
	}
	KUNIT_ASSERT_EQ_MSG(test, ret, 0, "header: %s", err.msg);
	KUNIT_EXPECT_EQ(test, h.copy, v->copy);

	ret = qimg_t_jrecover(test, &g, &m, &s, &written, &err);
	if (v->scan_ret) {
		KUNIT_EXPECT_EQ_MSG(test, ret, v->scan_ret, "%s", err.msg);
		KUNIT_EXPECT_NOT_NULL_MSG(test, strstr(err.msg, v->msg),
					  "\"%s\" not in \"%s\"", v->msg,
					  err.msg);
		/* A refused journal writes nothing. */
		KUNIT_EXPECT_EQ(test, m.writes, 0);
		return;
	}
	KUNIT_ASSERT_EQ_MSG(test, ret, 0, "recovery: %s", err.msg);
	KUNIT_EXPECT_EQ(test, s.ntx, v->ntx);
	KUNIT_EXPECT_EQ(test, s.first_seq, h.synced_seq + 1);
	KUNIT_EXPECT_EQ(test, s.last_seq, v->last_seq);
	KUNIT_EXPECT_EQ(test, s.next_seq, v->last_seq + 2);
	KUNIT_EXPECT_EQ(test, s.torn, v->torn);
	KUNIT_EXPECT_EQ(test, s.nrevokes, v->nrevokes);
	KUNIT_EXPECT_EQ(test, written, v->written);
	for (i = 0; i < ARRAY_SIZE(v->img) && v->img[i].len; i++) {
		u32 j;

		for (j = 0; j < v->img[i].len; j++)
			KUNIT_EXPECT_EQ_MSG(test, m.img[v->img[i].off + j],
					    v->img[i].byte, "image byte %llu",
					    v->img[i].off + j);
	}

	/* Replay twice: the same image. */
	first = kunit_kmalloc(test, m.img_size, GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, first);
	memcpy(first, m.img, m.img_size);
	KUNIT_ASSERT_EQ(test, qimg_t_jrecover(test, &g, &m, &s, &w2, &err), 0);
	KUNIT_EXPECT_EQ(test, w2, written);
	KUNIT_EXPECT_EQ(test, memcmp(first, m.img, m.img_size), 0);

	/* A replay that fails half way, then a whole one: the same image. */
	if (written >= 2) {
		qimg_t_jmem_init(test, &m2, area, area_size);
		m2.fail_write_after = written / 2;
		ret = qimg_t_jrecover(test, &g, &m2, &s, &w2, &err);
		KUNIT_EXPECT_EQ(test, ret, -ENOSPC);
		m2.fail_write_after = -1;
		KUNIT_ASSERT_EQ(test,
				qimg_t_jrecover(test, &g, &m2, &s, &w2, &err),
				0);
		KUNIT_EXPECT_EQ(test, memcmp(first, m2.img, m2.img_size), 0);
	}
}

static void qimg_t_jsize_desc(const struct qjv_size *v, char *desc)
{
	snprintf(desc, KUNIT_PARAM_DESC_SIZE, "%llu bytes, cluster_bits %u",
		 v->size, v->cluster_bits);
}

KUNIT_ARRAY_PARAM(qimg_t_jsize, qimg_jrnl_size_vecs, qimg_t_jsize_desc);

/* The size rules create, attach and the driver share. */
static void qimg_journal_size(struct kunit *test)
{
	const struct qjv_size *v = test->param_value;
	struct qimg_err err = { };

	KUNIT_EXPECT_EQ_MSG(test, qimg_jrnl_size_check(v->size,
						       v->cluster_bits, &err),
			    v->ret, "%s", err.msg);
	if (v->msg)
		KUNIT_EXPECT_NOT_NULL_MSG(test, strstr(err.msg, v->msg),
					  "\"%s\" not in \"%s\"", v->msg,
					  err.msg);
}

static void qimg_journal_crc32c(struct kunit *test)
{
	KUNIT_EXPECT_EQ(test, qimg_crc32c(0, "123456789", 9), 0xe3069283);
	KUNIT_EXPECT_EQ(test,
			qimg_crc32c(qimg_crc32c(0, "1234", 4), "56789", 5),
			0xe3069283);
}

static struct kunit_case qimg_journal_cases[] = {
	KUNIT_CASE_PARAM(qimg_journal_vectors, qimg_t_jvec_gen_params),
	KUNIT_CASE_PARAM(qimg_journal_size, qimg_t_jsize_gen_params),
	KUNIT_CASE(qimg_journal_crc32c),
	{}
};

static struct kunit_suite qimg_journal_suite = {
	.name = "qimg_journal",
	.test_cases = qimg_journal_cases,
};

kunit_test_suite(qimg_journal_suite);
