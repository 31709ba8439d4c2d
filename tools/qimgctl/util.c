// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers shared by the qimgctl subcommands: messages, sizes, image I/O.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lock.h"
#include "qimgctl.h"
#include "qimg_qed.h"

void qimgctl_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", qimgctl_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int qimgctl_want_qcow2(const char *fmt)
{
	if (!strcmp(fmt, "qcow2"))
		return 0;
	qimgctl_err("only the qcow2 format is supported, not '%s'", fmt);
	return -1;
}

int qimgctl_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "bkmgtpe";
	const char *u;
	char *end;
	long double v;
	int shift = 0;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtold(s, &end);
	if (errno || end == s || !(v >= 0))
		return -EINVAL;
	if (*end) {
		u = strchr(units, *end >= 'A' && *end <= 'Z' ? *end + 32 : *end);
		if (!u || !*u || end[1])
			return -EINVAL;
		shift = (int)(u - units) * 10;
	}
	v = ldexpl(v, shift);
	if (v >= 18446744073709551616.0L)
		return -ERANGE;
	/* A fraction only makes sense with a unit, as in qemu-img. */
	if (!shift && v != (uint64_t)v)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

int qimgctl_pread(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			memset(p, 0, len);
			return 0;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int qimgctl_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int qimgctl_lock_open_file(int fd, const char *path, unsigned int flags)
{
	enum qimgctl_lock_mode mode = QIMGCTL_LOCK_READ;

	if (flags & QIMGCTL_OPEN_WRITE)
		mode = QIMGCTL_LOCK_WRITE;
	else if (flags & QIMGCTL_OPEN_META)
		mode = QIMGCTL_LOCK_META;
	return qimgctl_lock_image(fd, path, mode,
				  flags & QIMGCTL_OPEN_SHARE);
}

int qimgctl_image_load(struct qimgctl_image *img, const char *path,
		       unsigned int flags)
{
	bool writable = flags & QIMGCTL_OPEN_WRITE;
	struct qimg_err err = { "" };
	unsigned char first[512];
	struct stat st;
	s64 csize;
	int ret;

	memset(img, 0, sizeof(*img));
	img->path = path;
	img->writable = writable;
	img->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (img->fd < 0) {
		ret = -errno;
		qimgctl_err("%s: %s", path, strerror(errno));
		return ret;
	}
	/* Like QEMU: lock before reading anything. */
	ret = qimgctl_lock_open_file(img->fd, path, flags);
	if (ret)
		goto fail;
	if (fstat(img->fd, &st) < 0) {
		ret = -errno;
		qimgctl_err("%s: %s", path, strerror(errno));
		goto fail;
	}
	img->file_size = (uint64_t)st.st_size;
	if (img->file_size < QIMG_V2_HEADER_LEN) {
		qimgctl_err("%s: not a qcow2 image (file too short)", path);
		ret = -EINVAL;
		goto fail;
	}
	ret = qimgctl_pread(img->fd, first, sizeof(first), 0);
	if (ret) {
		qimgctl_err("%s: read: %s", path, strerror(-ret));
		goto fail;
	}
	csize = qimg_header_peek_cluster_size(first, sizeof(first), &err);
	if (csize < 0) {
		ret = (int)csize;
		if (qimg_qed_probe(first, sizeof(first)))
			qimgctl_err("%s: a QED image, not qcow2 (only info, check and map read QED)",
				    path);
		else
			qimgctl_err("%s: %s", path, err.msg);
		goto fail;
	}
	img->hdr_len = (size_t)csize;
	if (img->hdr_len > img->file_size)
		img->hdr_len = (size_t)img->file_size;
	img->hdr_buf = malloc((size_t)csize);
	if (!img->hdr_buf) {
		ret = -ENOMEM;
		qimgctl_err("%s: out of memory", path);
		goto fail;
	}
	ret = qimgctl_pread(img->fd, img->hdr_buf, img->hdr_len, 0);
	if (ret) {
		qimgctl_err("%s: read: %s", path, strerror(-ret));
		goto fail;
	}
	return 0;
fail:
	qimgctl_image_close(img);
	return ret;
}

/* qemu 7.2's limits on the bitmaps it loads (block/qcow2-bitmap.c). */
#define QEMU_BM_MAX_DIR_SIZE	(1024ULL * QIMG_MAX_BITMAPS)
#define QEMU_BM_MAX_PHYS_SIZE	0x20000000ULL
#define QEMU_BM_RESERVED_FLAGS	(~3U)

/*
 * The table of the consistent bitmap @e (CPU-endian fields): entries qemu
 * reads as valid, as many as the virtual disk needs.  "" or why not.
 */
static const char *bm_table_why(const struct qimgctl_image *img,
				const struct qimg_disk_bitmap_dir_entry *e)
{
	u64 cs = img->h.geom.cluster_size, gran, bytes, need, v, off;
	u32 n = e->bitmap_table_size, i;
	u64 *t;
	const char *why = "";

	gran = 1ULL << e->granularity_bits;
	bytes = ((img->h.size + gran - 1) / gran + 7) / 8;
	need = (bytes + cs - 1) / cs;
	t = malloc((size_t)n * 8);
	if (!t)
		return "out of memory";
	if (qimgctl_pread(img->fd, t, (size_t)n * 8, e->bitmap_table_offset)) {
		why = "table";
		goto out;
	}
	for (i = 0; i < n; i++) {
		v = be64_to_cpu(t[i]);
		off = v & QIMG_BME_OFFSET_MASK;
		if ((v & QIMG_BME_RESERVED_MASK) ||
		    (off && ((v & QIMG_BME_ALL_ONES) || off % cs))) {
			why = "table";
			goto out;
		}
	}
	if (need != n)
		why = "data";
out:
	free(t);
	return why;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/*
 * What qemu 7.2 checks of the bitmap directory when it opens an image
 * (every open: info, check and the rest fail as one): the directory holds
 * as many well-formed entries as the header says and nothing else, every
 * entry within qemu's constraints, every consistent bitmap's table valid
 * and of the size the virtual disk needs, no name twice.  0, or -EUCLEAN
 * after one line in qemu's words.
 */
int qimgctl_bitmaps_qemu_ok(const struct qimgctl_image *img)
{
	const struct qimg_header *h = &img->h;
	struct qimg_disk_bitmap_dir_entry e;
	u64 size = h->bitmap_directory_size, pos = 0, len, phys, cs;
	char (*names)[QIMG_MAX_BITMAP_NAME + 1] = NULL;
	const char *why = NULL, *tw;
	u32 n = 0, i;
	u8 *dir;
	int ret = 0;

	if (!h->has_bitmaps_ext || !h->nb_bitmaps ||
	    !(h->autoclear_features & QIMG_AUTOCLEAR_BITMAPS))
		return 0;
	if (size > QEMU_BM_MAX_DIR_SIZE) {
		qimgctl_err("%s: bitmaps_ext: bitmap directory size (%llu) exceeds the maximum supported size (%llu)",
			    img->path, (unsigned long long)size,
			    (unsigned long long)QEMU_BM_MAX_DIR_SIZE);
		return -EUCLEAN;
	}
	cs = h->geom.cluster_size;
	dir = malloc(size ? size : 1);
	names = calloc(h->nb_bitmaps, sizeof(*names));
	if (!dir || !names) {
		qimgctl_err("%s: out of memory", img->path);
		ret = -ENOMEM;
		goto out;
	}
	if (qimgctl_pread(img->fd, dir, size, h->bitmap_directory_offset)) {
		why = "Failed to read bitmap directory";
		goto bad;
	}
	while (pos < size) {
		if (size - pos < sizeof(e)) {
			why = "Broken bitmap directory";
			goto bad;
		}
		if (++n > h->nb_bitmaps) {
			why = "More bitmaps found than specified in header extension";
			goto bad;
		}
		memcpy(&e, dir + pos, sizeof(e));
		e.bitmap_table_offset = be64_to_cpu(e.bitmap_table_offset);
		e.bitmap_table_size = be32_to_cpu(e.bitmap_table_size);
		e.flags = be32_to_cpu(e.flags);
		e.name_size = be16_to_cpu(e.name_size);
		e.extra_data_size = be32_to_cpu(e.extra_data_size);
		len = (sizeof(e) + (u64)e.extra_data_size + e.name_size + 7) &
		      ~7ULL;
		if (len > size - pos) {
			why = "Broken bitmap directory";
			goto bad;
		}
		if (e.extra_data_size) {
			why = "Bitmap extra data is not supported";
			goto bad;
		}
		memcpy(names[n - 1], dir + pos + sizeof(e),
		       e.name_size > QIMG_MAX_BITMAP_NAME ?
		       QIMG_MAX_BITMAP_NAME : e.name_size);
		phys = (u64)e.bitmap_table_size * cs;
		if (!e.bitmap_table_size || !e.bitmap_table_offset ||
		    e.bitmap_table_offset % cs ||
		    e.bitmap_table_size > QIMG_BITMAP_MAX_TABLE_SIZE ||
		    e.granularity_bits > QIMG_BITMAP_MAX_GRAN_BITS ||
		    e.granularity_bits < QIMG_BITMAP_MIN_GRAN_BITS ||
		    (e.flags & QEMU_BM_RESERVED_FLAGS) ||
		    e.name_size > QIMG_MAX_BITMAP_NAME ||
		    e.type != QIMG_BITMAP_TYPE_DIRTY ||
		    phys > QEMU_BM_MAX_PHYS_SIZE ||
		    (!(e.flags & QIMG_BITMAP_IN_USE) &&
		     h->size > (phys * 8) << e.granularity_bits)) {
			qimgctl_err("%s: Bitmap '%s' doesn't satisfy the constraints",
				    img->path, names[n - 1]);
			ret = -EUCLEAN;
			goto out;
		}
		tw = e.flags & QIMG_BITMAP_IN_USE ? "" : bm_table_why(img, &e);
		if (*tw) {
			qimgctl_err(!strcmp(tw, "table") ?
				    "%s: Could not read bitmap_table table from image for bitmap '%s': Invalid argument" :
				    !strcmp(tw, "data") ?
				    "%s: Could not read bitmap '%s' from image: Invalid argument" :
				    "%s: bitmap '%s': out of memory",
				    img->path, names[n - 1]);
			ret = -EUCLEAN;
			goto out;
		}
		pos += len;
	}
	if (n != h->nb_bitmaps) {
		why = "Less bitmaps found than specified in header extension";
		goto bad;
	}
	/* A name twice: qemu fails to create the second bitmap. */
	qsort(names, n, sizeof(*names), name_cmp);
	for (i = 1; i < n; i++) {
		if (!strcmp(names[i - 1], names[i])) {
			qimgctl_err("%s: Bitmap already exists: %s", img->path,
				    names[i]);
			ret = -EUCLEAN;
			goto out;
		}
	}
bad:
	if (why) {
		qimgctl_err("%s: %s", img->path, why);
		ret = -EUCLEAN;
	}
out:
	free(names);
	free(dir);
	return ret;
}

int qimgctl_image_open(struct qimgctl_image *img, const char *path,
		       unsigned int flags)
{
	struct qimg_err err = { "" };
	int ret;

	ret = qimgctl_image_load(img, path, flags);
	if (ret)
		return ret;
	/*
	 * Describing an image needs no key, as in qemu (info opens without
	 * I/O): only header-only opens let encrypted images through.
	 */
	ret = qimg_header_decode_flags(img->hdr_buf, img->hdr_len,
				       img->file_size,
				       flags & QIMGCTL_OPEN_META ?
				       QIMG_DECODE_ENCRYPTED : 0,
				       &img->h, &err);
	if (ret) {
		qimgctl_err("%s: %s", path, err.msg);
		qimgctl_image_close(img);
		return ret;
	}
	ret = qimgctl_bitmaps_qemu_ok(img);
	if (ret) {
		qimgctl_image_close(img);
		return ret;
	}
	if (img->h.incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY &&
	    !(flags & (QIMGCTL_OPEN_META | QIMGCTL_OPEN_JOURNAL_OK))) {
		ret = qimgctl_jrnl_refuse(img);
		qimgctl_image_close(img);
	}
	return ret;
}

void qimgctl_image_close(struct qimgctl_image *img)
{
	if (img->fd >= 0)
		close(img->fd);
	img->fd = -1;
	free(img->hdr_buf);
	img->hdr_buf = NULL;
}

/* Split "a=1,b=2" in place; ",," stands for a literal comma, as in qemu. */
int qimgctl_opts_each(char *s, int (*fn)(void *ctx, char *key, char *val),
		      void *ctx)
{
	char *key, *val, *r, *w;
	int ret;

	while (*s) {
		key = s;
		val = NULL;
		for (r = w = s; *r; r++) {
			if (*r == ',') {
				if (r[1] == ',' && val) {
					*w++ = ',';
					r++;
					continue;
				}
				break;
			}
			if (*r == '=' && !val) {
				*w++ = '\0';
				val = w;
				continue;
			}
			*w++ = *r;
		}
		s = *r ? r + 1 : r;
		*w = '\0';
		if (!*key)
			continue;
		ret = fn(ctx, key, val);
		if (ret)
			return ret;
	}
	return 0;
}

static double progress_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void qimgctl_progress_start(struct qimgctl_progress *p, bool show,
			    uint64_t total)
{
	p->show = show;
	p->total = total;
	p->start = progress_now();
	p->last_print = 0;
	qimgctl_progress_update(p, 0, false);
}

void qimgctl_progress_update(struct qimgctl_progress *p, uint64_t done,
			     bool last)
{
	double t = progress_now(), el = t - p->start, pct, rate;

	if (!p->show || (!last && t - p->last_print < 0.2))
		return;
	p->last_print = t;
	pct = p->total ? (double)done * 100.0 / (double)p->total : 100.0;
	rate = el > 0 ? (double)done / el : 0;
	fprintf(stderr, "    (%.2f/100%%)", pct);
	if (el > 0.5 && rate > 0) {
		double left = (double)(p->total - done) / rate;

		fprintf(stderr, "  %.1f MiB/s  ETA %02d:%02d",
			rate / 1048576.0, (int)left / 60, (int)left % 60);
	}
	fprintf(stderr, "\033[K%s", last ? "\n" : "\r");
}
