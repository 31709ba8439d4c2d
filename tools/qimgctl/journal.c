// SPDX-License-Identifier: GPL-2.0
/*
 * The metadata journal as qimgctl reads it offline: one scan of the ring
 * (the shared passes of qimg_journal_fmt.c) for check's report, info's
 * "journal" entry and the refusal of qimgctl_image_open().
 */
#include <errno.h>
#include <stdlib.h>

#include "qimgctl.h"
#include "qimg_journal_fmt.h"

struct jscan_ctx {
	int fd;
	u64 area;
};

static int jscan_read(void *ctx, u64 pos, void *buf, u32 len)
{
	struct jscan_ctx *j = ctx;

	return qimgctl_pread(j->fd, buf, len, j->area + pos);
}

int qimgctl_jrnl_scan(int fd, const struct qimg_header *h, u64 file_size,
		      struct qimg_jrnl_scan *s, struct qimg_err *err)
{
	struct jscan_ctx j = { fd, h->journal_offset };
	struct qimg_jrnl_geom jg = {
		.cluster_bits = h->geom.cluster_bits,
		.area_offset = h->journal_offset,
		.area_size = h->journal_size,
		.file_size = file_size,
	};
	struct qimg_jrnl_io io = { jscan_read, NULL, &j };
	struct qimg_jrnl_hdr jh;
	u8 chunk[QIMG_JRNL_HDR_CHUNK];
	void *work;
	int ret;

	ret = qimg_jrnl_hdr_read(&jg, &io, chunk, &jh, err);
	if (ret)
		return ret;
	work = malloc(qimg_jrnl_work_size(&jh));
	if (!work)
		return -ENOMEM;
	ret = qimg_jrnl_scan(&jg, &io, &jh, work, s, err);
	free(work);
	return ret;
}

/*
 * The refusal of qimgctl_image_open(): the tables of a journal-dirty image
 * are stale until its committed transactions are replayed.
 */
int qimgctl_jrnl_refuse(const struct qimgctl_image *img)
{
	struct qimg_err err = { "" };
	struct qimg_jrnl_scan s;

	if (img->h.journal_offset &&
	    !qimgctl_jrnl_scan(img->fd, &img->h, img->file_size, &s, &err))
		qimgctl_err("%s: the metadata journal holds %llu committed transaction%s that %s not checkpointed; run 'qimgctl check -r all %s' (or attach it) to replay them",
			    img->path, s.ntx, s.ntx == 1 ? "" : "s",
			    s.ntx == 1 ? "is" : "are", img->path);
	else
		qimgctl_err("%s: the metadata journal is dirty (its tables are stale); run 'qimgctl check -r all %s' (or attach it) to replay it",
			    img->path, img->path);
	return -EUCLEAN;
}
