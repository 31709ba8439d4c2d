// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of decoding encrypted images for description only
 * (qimg_header_decode_flags with QIMG_DECODE_ENCRYPTED): AES and LUKS are
 * accepted, the LUKS crypto header extension is decoded and checked, and
 * the plain decoder still refuses both.
 */
#include <errno.h>
#include <string.h>

#include "qimg_tests.h"
#include "qimg_vectors.h"

#define QC_FILE		0x50000ULL
#define QC_HDR		0x40000ULL
#define QC_EXT(o, l)	QP_EXT_TYPE(112, QIMG_EXT_CRYPTO), QP_EXT_LEN(112, 16), \
			QP(120, 8, o), QP(128, 8, l)

struct qc_vec {
	const char *name;
	struct qimg_hdr_vec v;
	u64 crypto_offset;	/* checked on success */
	u64 crypto_length;
};

static const struct qc_vec qc_vecs[] = {
	{ "AES is described", { .p = { QP_CRYPT(1) }, .file_size = QC_FILE,
	  .refuse_ro = "encryption" }, 0, 0 },
	{ "AES in a v2 image", { .base = QV_BASE_V2, .p = { QP_CRYPT(1) },
	  .file_size = QC_FILE, .refuse_ro = "encryption" }, 0, 0 },
	{ "LUKS with its crypto header", { .p = { QP_CRYPT(2),
	  QC_EXT(QC_HDR, 0x1000) }, .file_size = QC_FILE,
	  .refuse_ro = "encryption" }, QC_HDR, 0x1000 },
	{ "LUKS header reaching the end of the file", { .p = { QP_CRYPT(2),
	  QC_EXT(QC_HDR, 0x10000) }, .file_size = QC_FILE,
	  .refuse_ro = "encryption" }, QC_HDR, 0x10000 },
	{ "LUKS without a crypto header extension", { .p = { QP_CRYPT(2) },
	  .file_size = QC_FILE, .expect = QV_EUCLEAN,
	  .msg = "without a crypto header" }, 0, 0 },
	{ "crypto extension of 8 bytes", { .p = { QP_CRYPT(2),
	  QP_EXT_TYPE(112, QIMG_EXT_CRYPTO), QP_EXT_LEN(112, 8) },
	  .file_size = QC_FILE, .expect = QV_EUCLEAN, .msg = "length 8" }, 0, 0 },
	{ "LUKS header past the end of the file", { .p = { QP_CRYPT(2),
	  QC_EXT(QC_HDR, 0x10001) }, .file_size = QC_FILE,
	  .expect = QV_EUCLEAN, .msg = "outside the file" }, 0, 0 },
	{ "LUKS header offset + length overflows", { .p = { QP_CRYPT(2),
	  QC_EXT(~0ULL - 10, 100) }, .file_size = QC_FILE,
	  .expect = QV_EUCLEAN, .msg = "outside the file" }, 0, 0 },
	{ "crypto extension with AES", { .p = { QP_CRYPT(1),
	  QC_EXT(QC_HDR, 0x1000) }, .file_size = QC_FILE,
	  .expect = QV_EUCLEAN, .msg = "AES" }, 0, 0 },
	{ "crypto extension twice", { .p = { QP_CRYPT(2),
	  QC_EXT(QC_HDR, 0x1000), QP_EXT_TYPE(136, QIMG_EXT_CRYPTO),
	  QP_EXT_LEN(136, 16), QP(144, 8, QC_HDR), QP(152, 8, 0x1000) },
	  .file_size = QC_FILE, .expect = QV_EUCLEAN }, 0, 0 },
	{ "unknown encryption method 3", { .p = { QP_CRYPT(3) },
	  .file_size = QC_FILE, .expect = -EOPNOTSUPP,
	  .msg = "unknown encryption method 3" }, 0, 0 },
};

static u8 qc_buf[QV_BUF_LEN];

static void qc_test(void **state)
{
	const struct qc_vec *c = *state;
	struct qimg_err err = { "" };
	struct qimg_header h;
	u32 len = qimg_vec_build(&c->v, qc_buf);
	int ret;

	ret = qimg_header_decode_flags(qc_buf, len, c->v.file_size,
				       QIMG_DECODE_ENCRYPTED, &h, &err);
	assert_int_equal(ret, c->v.expect);
	if (c->v.msg)
		assert_non_null(strstr(err.msg, c->v.msg));
	if (ret)
		return;
	assert_non_null(strstr(qimg_unsupported_feature(&h, false),
			       c->v.refuse_ro));
	assert_int_equal(h.crypto_offset, c->crypto_offset);
	assert_int_equal(h.crypto_length, c->crypto_length);
	/* Without the flag the same header is refused, as before. */
	ret = qimg_header_decode(qc_buf, len, c->v.file_size, &h, &err);
	assert_int_equal(ret, -EOPNOTSUPP);
	assert_non_null(strstr(err.msg, "encrypted images are not supported"));
}

int qimg_test_run_crypt(void)
{
	return qimg_test_run_table("encrypted headers", qc_vecs,
				   ARRAY_SIZE(qc_vecs), sizeof(qc_vecs[0]),
				   offsetof(struct qc_vec, name), qc_test);
}
