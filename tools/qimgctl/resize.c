// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl resize: change the virtual size of a detached qcow2 image (or
 * the size of a raw file), as `qemu-img resize` does; an attached one
 * (named by its device or its file) grows through the driver.
 *
 * qcow2: growing extends the L1 table when the new size needs more entries
 * (in place when its last cluster has room, else in new clusters: the old
 * table stays valid until the header names the new one); new space reads
 * as zeroes, also over a backing file longer than the old size (zero
 * clusters hide it, see qimgw_grow(); qemu refuses that for version 2
 * images, and so do we).  Shrinking needs
 * --shrink and then, like qemu, discards everything past the new end and
 * cuts the file after the last cluster still in use; internal snapshots
 * keep what they reach (shrink_tables() in image_rw.c).  Persistent
 * bitmaps follow the size (bitmap.c).  The header's size is written last
 * (see image_rw.h for the order).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_rw.h"
#include "lock.h"

/* "[+|-]SIZE" against the current size @cur. */
static int new_size(const char *file, const char *arg, u64 cur, u64 *out)
{
	int rel = 0;
	uint64_t v;

	if (*arg == '+' || *arg == '-')
		rel = *arg++ == '+' ? 1 : -1;
	if (qimgctl_parse_size(arg, &v)) {
		qimgctl_err("%s: Invalid image size specified: '%s' (use a number of bytes with an optional k, M, G, T, P or E suffix)",
			    file, arg);
		return -EINVAL;
	}
	if (rel > 0 && v > UINT64_MAX - cur) {
		qimgctl_err("%s: the new size is too large", file);
		return -EFBIG;
	}
	*out = rel > 0 ? cur + v : rel < 0 ? cur - v : v;
	if ((rel < 0 && v >= cur) || !*out) {
		qimgctl_err("%s: New image size must be positive", file);
		return -EINVAL;
	}
	return 0;
}

static int shrink_ok(const char *file, bool shrink, u64 cur, u64 size)
{
	if (size >= cur || shrink)
		return 0;
	qimgctl_err("%s: Use the --shrink option to perform a shrink operation (it deletes all data past the new end)",
		    file);
	return -EINVAL;
}

static int resize_raw(const char *file, const char *arg, bool shrink)
{
	struct stat st;
	u64 size;
	int fd, ret;

	fd = open(file, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		qimgctl_err("Could not open '%s': %s", file, strerror(errno));
		return ret;
	}
	ret = qimgctl_lock_open_file(fd, file, QIMGCTL_OPEN_WRITE);
	if (!ret && fstat(fd, &st) < 0) {
		ret = -errno;
		qimgctl_err("%s: %s", file, strerror(errno));
	}
	if (!ret)
		ret = new_size(file, arg, (u64)st.st_size, &size);
	if (!ret)
		ret = shrink_ok(file, shrink, (u64)st.st_size, size);
	if (!ret && size > INT64_MAX) {
		qimgctl_err("%s: the new size is too large", file);
		ret = -EFBIG;
	}
	if (!ret && (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0)) {
		ret = -errno;
		qimgctl_err("%s: Could not resize the file: %s", file,
			    strerror(errno));
	}
	close(fd);
	return ret;
}

/*
 * The backing chain below @file, opened for reading as qemu-img opens it
 * (backing files read-only, locked for reading: nobody may write them
 * meanwhile), and a reader of it.  The image itself is opened sharing
 * everything: the writer holds its locks.
 */
static int open_chain(const char *file, struct qimgctl_node **chain,
		      struct qimgr *r, bool *r_ok)
{
	struct qimgctl_node *n;
	int ret;

	*r_ok = false;
	ret = qimgctl_chain_open(chain, file, NULL, QIMGCTL_OPEN_SHARE |
				 QIMGCTL_CHAIN_QED | QIMGCTL_CHAIN_ONLY_QCOW2);
	if (ret)
		return ret;
	for (n = (*chain)->backing; n; n = n->backing) {
		ret = qimgctl_lock_image(qimgctl_node_fd(n), n->path,
					 QIMGCTL_LOCK_READ, false);
		if (ret)
			return ret;
	}
	ret = qimgr_init(r, *chain);
	*r_ok = !ret;
	return ret;
}

int qimgctl_resize_writer(struct qimgw *w, const char *file, u64 size)
{
	struct qimgctl_node *chain = NULL;
	u64 cur = w->h->size;
	void *bms = NULL;
	bool r_ok = false;
	struct qimgr r;
	int ret = 0;

	if (size % 512) {
		qimgctl_err("%s: The new size must be a multiple of 512", file);
		return -EINVAL;
	}
	/* A v2 snapshot has no size of its own: qemu refuses any resize. */
	if (w->h->nb_snapshots && w->h->version < 3 && size != cur) {
		qimgctl_err("%s: Can't resize a v2 image which has snapshots",
			    file);
		return -ENOTSUP;
	}
	/* qemu-img opens the backing chain too (a missing file fails). */
	ret = open_chain(file, &chain, &r, &r_ok);
	/* Bitmaps follow the size (marked in use on disk meanwhile). */
	if (!ret && size != cur)
		ret = qimgctl_bitmaps_begin(w, size, true, &bms);
	/* The zero clusters over a longer backing file are the image's. */
	w->snapshots_ok = true;
	if (!ret && size > cur)
		ret = qimgw_grow(w, size, &r, chain);
	else if (!ret)
		ret = qimgw_resize(w, size);
	if (!ret)
		ret = qimgw_flush(w);
	if (!ret && bms) {
		ret = qimgctl_bitmaps_end(w, bms);
		bms = NULL;
	}
	if (!ret && size < cur)
		ret = qimgw_trim(w);
	w->snapshots_ok = false;
	qimgctl_bitmaps_free(bms);
	if (r_ok)
		qimgr_fini(&r);
	qimgctl_chain_close(chain);
	return ret;
}

static int resize_qcow2(const char *file, const char *arg, bool shrink)
{
	struct qimgw w;
	u64 size, cur;
	int ret;

	ret = qimgw_open(&w, file);
	if (ret)
		return ret;
	cur = w.h->size;
	ret = new_size(file, arg, cur, &size);
	if (!ret)
		ret = shrink_ok(file, shrink, cur, size);
	if (!ret)
		ret = qimgctl_resize_writer(&w, file, size);
	qimgw_close(&w, false);
	return ret;
}

/*
 * An attached device, or the image file of one: grown through the driver
 * (never shrunk).  Return: 0 done, 1 failed (after a message), -1 not
 * attached (the offline resize applies).
 */
static int resize_attached(const char *file, const char *fmt,
			   const char *arg)
{
	uint64_t cur;
	uint32_t index;
	bool ro;
	u64 size;
	int ret;

	ret = qimgctl_attached(file, &index, &cur, &ro);
	if (ret <= 0)
		return ret ? 1 : -1;
	if (fmt && strcmp(fmt, "qcow2")) {
		qimgctl_err("%s: attached as /dev/qimg%u, a qcow2 image: -f %s does not apply",
			    file, index, fmt);
		return 1;
	}
	if (new_size(file, arg, (u64)cur, &size))
		return 1;
	if (size < cur) {
		qimgctl_err("%s: attached as /dev/qimg%u: an attached image cannot shrink; detach it first, then resize --shrink",
			    file, index);
		return 1;
	}
	if (size % 512) {
		qimgctl_err("%s: The new size must be a multiple of 512", file);
		return 1;
	}
	if (ro) {
		qimgctl_err("%s: /dev/qimg%u is attached read-only", file,
			    index);
		return 1;
	}
	return qimgctl_resize_index(index, size) ? 1 : 0;
}

int qimgctl_cmd_resize(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "shrink", no_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *file, *size = NULL;
	bool shrink = false, quiet = false, raw;
	enum qimgctl_fmt probed;
	int c, fd, ret;

	/* "-1G" is a size, not an option: take it before getopt sees it. */
	if (argc >= 3 && argv[argc - 1][0] == '-' &&
	    ((argv[argc - 1][1] >= '0' && argv[argc - 1][1] <= '9') ||
	     argv[argc - 1][1] == '.'))
		size = argv[--argc];
	optind = 1;
	while ((c = getopt_long(argc, argv, ":hqf:", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'S':
			shrink = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "resize");
			return 0;
		default:
			qimgctl_opt_err("resize", c, argv);
			return 1;
		}
	}
	if (argc - optind < (size ? 1 : 2)) {
		qimgctl_usage_err("resize", "FILE and SIZE needed");
		return 1;
	}
	if (argc - optind > (size ? 1 : 2)) {
		qimgctl_usage_err("resize", "unexpected argument '%s'",
				  argv[argc - 1]);
		return 1;
	}
	file = argv[optind];
	if (!size)
		size = argv[optind + 1];
	ret = resize_attached(file, fmt, size);
	if (ret >= 0) {
		if (!ret && !quiet)
			printf("Image resized.\n");
		return ret;
	}
	if (fmt && strcmp(fmt, "qcow2") && strcmp(fmt, "raw")) {
		qimgctl_err("%s: Unknown or unsupported format '%s' (only qcow2 and raw)",
			    file, fmt);
		return 1;
	}
	if (fmt) {
		raw = !strcmp(fmt, "raw");
	} else {
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			qimgctl_err("Could not open '%s': %s", file,
				    strerror(errno));
			return 1;
		}
		ret = qimgctl_probe_format(fd, &probed);
		close(fd);
		if (ret) {
			qimgctl_err("%s: %s", file, strerror(-ret));
			return 1;
		}
		if (probed == QIMGCTL_FMT_QED) {
			qimgctl_err("%s: a QED image: resize handles qcow2 and raw images only",
				    file);
			return 1;
		}
		raw = probed == QIMGCTL_FMT_RAW;
	}
	ret = raw ? resize_raw(file, size, shrink) :
		    resize_qcow2(file, size, shrink);
	if (ret)
		return 1;
	if (!quiet)
		printf("Image resized.\n");
	return 0;
}
