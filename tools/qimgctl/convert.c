// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl convert: copy the guest contents of a raw, qcow2 or QED image
 * (read through its backing chain) into a new qcow2 or raw image, as
 * `qemu-img convert` does.
 *
 * The output is made with `create`'s code (so -o takes create's options)
 * and filled through the shared writer (image_rw.h) one output cluster at
 * a time.  Zeroes are not written: a raw output keeps holes, a qcow2
 * output leaves those clusters unallocated.  With -B the output gets that
 * backing file and, like qemu-img, only what the source's top image
 * allocates is copied (the new backing file is taken to hold what the
 * source's backing chain holds); zeroes there become zero clusters.
 *
 * With --bitmaps (qcow2 v3 to qcow2 v3) the persistent dirty bitmaps of
 * the source's top image are copied after the data, as qemu-img does:
 * each one gets the same name, granularity, enabled state and bits.
 * Like qemu-img, an in-use (inconsistent) bitmap of the source is refused
 * before anything is created (--skip-broken-bitmaps leaves it out, with a
 * warning), a source without bitmap support (raw, QED, qcow2 v2) too, and
 * an output without it (raw, qcow2 v2) once it has been created, before
 * the data is copied.
 *
 * The source is only ever read (and locked for reading), so an interrupted
 * convert leaves it untouched; the output is consistent after each flush
 * of the writer and complete when convert exits 0.
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

/* Flush the writer every so many bytes of guest data (bounds a crash's loss). */
#define CONVERT_FLUSH_EVERY	(1ULL << 30)
/* Raw output is copied in chunks of this size. */
#define CONVERT_RAW_CHUNK	(1ULL << 20)
#define RAW_BLOCK		4096

struct convert {
	const char *src, *dst;
	const char *src_fmt;
	const char *out_fmt;
	const char *backing, *backing_fmt;
	char *opts[64];
	int nopts;
	bool compress, progress, quiet, share;
	bool bitmaps, skip_broken;

	struct qimgctl_node *chain;
	struct qimgr rd;
	struct qimgw w;
	int raw_fd;
	u64 size;
	u64 chunk;
	u8 *buf, *cbuf;
	u8 ctype;

	struct qimgctl_progress prog;
};

static bool all_zero(const u8 *p, u64 len)
{
	u64 i;

	for (i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * What [off, off + len) of the source is: 0 reads as zeroes (or, with -B,
 * is not allocated in the top image), 1 needs copying.  *skip: bytes from
 * @off known to be the same, possibly past @len.
 */
static int classify(struct convert *c, u64 off, u64 len, u64 *skip)
{
	u64 pos = 0, l;
	bool zero, alloc;
	int ret;

	*skip = 0;
	while (pos < len) {
		ret = qimgr_status(&c->rd, c->chain, off + pos,
				   c->size - off - pos, c->backing != NULL, &l,
				   &zero, &alloc);
		if (ret)
			return ret;
		if (c->backing ? alloc : !zero)
			return 1;
		if (!pos)
			*skip = l;
		pos += l;
	}
	return 0;
}

/* Raw output: the non-zero runs of 4 KiB blocks (qemu-img's -S 4k). */
static int write_raw(struct convert *c, u64 off, u64 len)
{
	u64 pos = 0, start, n;
	int ret;

	while (pos < len) {
		n = len - pos < RAW_BLOCK ? len - pos : RAW_BLOCK;
		if (all_zero(c->buf + pos, n)) {
			pos += n;
			continue;
		}
		start = pos;
		while (pos < len) {
			n = len - pos < RAW_BLOCK ? len - pos : RAW_BLOCK;
			if (all_zero(c->buf + pos, n))
				break;
			pos += n;
		}
		ret = qimgctl_pwrite(c->raw_fd, c->buf + start, pos - start,
				     off + start);
		if (ret) {
			qimgctl_err("%s: write: %s", c->dst, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/*
 * Extended L2: the subclusters that qemu-img's zero detection (4 KiB
 * blocks) would write, the ones overlapping a non-zero block.
 */
static u32 subcluster_mask(const struct convert *c, const u8 *p)
{
	u64 cs = c->w.cs, sc = cs / QIMG_SUBCLUSTERS, b;
	u32 mask = 0;

	for (b = 0; b < cs; b += RAW_BLOCK) {
		u64 n = cs - b < RAW_BLOCK ? cs - b : RAW_BLOCK, i;

		if (all_zero(p + b, n))
			continue;
		for (i = b / sc; i <= (b + n - 1) / sc; i++)
			mask |= 1U << i;
	}
	return mask;
}

/* Cluster @off of a qcow2 output, its data at @p. */
static int write_one(struct convert *c, u64 off, const u8 *p, bool zero)
{
	size_t clen;

	if (zero)
		return c->backing ? qimgw_write_zero(&c->w, off) : 0;
	if (c->compress) {
		clen = qimgw_compress(c->ctype, p, c->w.cs, c->cbuf);
		if (clen)
			return qimgw_write_compressed(&c->w, off, c->cbuf,
						      clen);
	}
	if (c->w.g->ext_l2 && !c->backing)
		return qimgw_write_subclusters(&c->w, off, p,
					       subcluster_mask(c, p));
	return qimgw_write_cluster(&c->w, off, p);
}

/*
 * Copy one unit at @off (@len bytes, the last one may be short): a
 * cluster, or for clusters under 4 KiB the 4 KiB qemu-img's zero detection
 * looks at, whose clusters are written together unless compressed.
 */
static int copy_unit(struct convert *c, u64 off, u64 len)
{
	u64 k, skip, cs;
	bool zero;
	int ret;

	ret = qimgr_read(&c->rd, c->chain, off, c->buf, len);
	if (ret)
		return ret;
	memset(c->buf + len, 0, c->chunk - len);
	if (c->raw_fd >= 0)
		return write_raw(c, off, len);
	cs = c->w.cs;
	if (cs == c->chunk)
		return write_one(c, off, c->buf, all_zero(c->buf, cs));
	zero = all_zero(c->buf, c->chunk);
	for (k = 0; k < len; k += cs) {
		ret = classify(c, off + k, len - k < cs ? len - k : cs, &skip);
		if (ret < 0)
			return ret;
		if (!ret)
			continue;
		ret = write_one(c, off + k, c->buf + k,
				c->compress ? all_zero(c->buf + k, cs) : zero);
		if (ret)
			return ret;
	}
	return 0;
}

static int copy_all(struct convert *c)
{
	u64 off = 0, skip, len, since_flush = 0;
	int ret;

	qimgctl_progress_start(&c->prog, c->progress && !c->quiet &&
			       isatty(STDERR_FILENO), c->size);
	while (off < c->size) {
		len = c->size - off < c->chunk ? c->size - off : c->chunk;
		ret = classify(c, off, len, &skip);
		if (ret < 0)
			return ret;
		if (!ret) {
			/* Whole units known to need nothing. */
			skip -= skip % c->chunk;
			off += skip > c->chunk ? skip : c->chunk;
			if (off > c->size)
				off = c->size;
			qimgctl_progress_update(&c->prog, off, false);
			continue;
		}
		ret = copy_unit(c, off, len);
		if (ret)
			return ret;
		off += len;
		since_flush += len;
		if (c->raw_fd < 0 && since_flush >= CONVERT_FLUSH_EVERY) {
			ret = qimgw_flush(&c->w);
			if (ret)
				return ret;
			since_flush = 0;
		}
		qimgctl_progress_update(&c->prog, off, false);
	}
	qimgctl_progress_update(&c->prog, c->size, true);
	return 0;
}

/* Make the qcow2 output with create's code: same options, same checks. */
static int create_qcow2(struct convert *c)
{
	char *argv[64 * 2 + 16], size[32];
	int argc = 0, i;

	argv[argc++] = "create";
	argv[argc++] = "-q";
	for (i = 0; i < c->nopts; i++) {
		argv[argc++] = "-o";
		argv[argc++] = c->opts[i];
	}
	if (c->backing) {
		argv[argc++] = "-b";
		argv[argc++] = (char *)c->backing;
		argv[argc++] = "-F";
		argv[argc++] = (char *)c->backing_fmt;
	}
	argv[argc++] = "--";
	argv[argc++] = (char *)c->dst;
	snprintf(size, sizeof(size), "%" PRIu64, (uint64_t)c->size);
	argv[argc++] = size;
	argv[argc] = NULL;
	return qimgctl_create_for_convert(argc, argv) ? -EINVAL : 0;
}

static int open_raw_out(struct convert *c)
{
	int ret;

	c->raw_fd = open(c->dst, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (c->raw_fd < 0) {
		ret = -errno;
		qimgctl_err("%s: Could not create '%s': %s", c->dst, c->dst,
			    strerror(errno));
		return ret;
	}
	ret = qimgctl_lock_open_file(c->raw_fd, c->dst, QIMGCTL_OPEN_WRITE);
	if (ret)
		return ret;
	if (ftruncate(c->raw_fd, 0) < 0 ||
	    ftruncate(c->raw_fd, (off_t)c->size) < 0) {
		ret = -errno;
		qimgctl_err("%s: Could not resize the file: %s", c->dst,
			    strerror(errno));
		return ret;
	}
	/*
	 * qemu allocates the first block of a new raw file (so that its
	 * alignment can be probed): the same map as qemu-img's output.
	 */
	if (c->size) {
		static const u8 zero[RAW_BLOCK];
		u64 n = c->size < RAW_BLOCK ? 512 : RAW_BLOCK;

		ret = qimgctl_pwrite(c->raw_fd, zero, n < c->size ? n : c->size,
				     0);
		if (ret) {
			qimgctl_err("%s: write: %s", c->dst, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/* The output must not be a file the source reads from. */
static int dst_in_chain(struct convert *c)
{
	const struct qimgctl_node *n;
	struct stat st;

	if (stat(c->dst, &st) < 0)
		return 0;
	for (n = c->chain; n; n = n->backing) {
		if (n->dev == st.st_dev && n->ino == st.st_ino) {
			qimgctl_err("%s: the output file is %s '%s'", c->dst,
				    n == c->chain ? "the source image" :
				    "in the source's backing chain", n->path);
			return -ELOOP;
		}
	}
	return 0;
}

/*
 * --bitmaps: the source's top image must be able to hold bitmaps (qcow2
 * v3) and have none in use, as qemu-img checks before creating anything.
 */
static int check_src_bitmaps(struct convert *c)
{
	struct qimgctl_node *n = c->chain;

	if (n->raw || n->qed || n->img.h.version < 3) {
		qimgctl_err("Source lacks bitmap support");
		return -EOPNOTSUPP;
	}
	return qimgctl_bitmaps_check_copy(&n->img, c->skip_broken);
}

/* An output format that cannot hold bitmaps (qemu-img's words). */
static int no_bitmaps_out(const char *fmt)
{
	qimgctl_err("Format driver '%s' does not support bitmaps", fmt);
	return -EOPNOTSUPP;
}

static int run(struct convert *c)
{
	unsigned int flags = c->share ? QIMGCTL_OPEN_SHARE : 0;
	struct stat st;
	int ret;

	if (stat(c->src, &st) < 0) {
		qimgctl_err("Could not open '%s': %s", c->src, strerror(errno));
		return -errno;
	}
	ret = qimgctl_chain_open(&c->chain, c->src,
				 c->src_fmt ? c->src_fmt : "",
				 flags | QIMGCTL_CHAIN_QED);
	if (ret)
		return ret;
	ret = qimgr_init(&c->rd, c->chain);
	if (!ret)
		ret = dst_in_chain(c);
	if (!ret && c->bitmaps)
		ret = check_src_bitmaps(c);
	if (ret)
		return ret;
	c->size = c->chain->length;
	if (c->raw_fd == -2) {
		c->raw_fd = -1;
		ret = open_raw_out(c);
		c->chunk = CONVERT_RAW_CHUNK;
		if (!ret && c->bitmaps)
			ret = no_bitmaps_out("raw");
	} else {
		ret = create_qcow2(c);
		if (!ret)
			ret = qimgw_open(&c->w, c->dst);
		if (!ret) {
			c->chunk = c->w.cs < RAW_BLOCK ? RAW_BLOCK : c->w.cs;
			c->ctype = c->w.h->compression_type;
			if (c->bitmaps && c->w.h->version < 3)
				ret = no_bitmaps_out("qcow2");
		}
	}
	if (ret)
		return ret;
	c->buf = malloc(c->chunk);
	c->cbuf = malloc(c->chunk);
	if (!c->buf || !c->cbuf) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	ret = copy_all(c);
	if (ret)
		return ret;
	if (c->raw_fd >= 0) {
		if (fsync(c->raw_fd) < 0) {
			qimgctl_err("%s: fsync: %s", c->dst, strerror(errno));
			return -errno;
		}
		return 0;
	}
	if (c->bitmaps) {
		ret = qimgctl_bitmaps_copy(&c->w, &c->chain->img,
					   c->skip_broken);
		if (ret)
			return ret;
	}
	return qimgw_close(&c->w, true);
}

int qimgctl_cmd_convert(int argc, char **argv)
{
	enum { O_BITMAPS = 0x100, O_SKIP_BROKEN };
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "bitmaps", no_argument, NULL, O_BITMAPS },
		{ "skip-broken-bitmaps", no_argument, NULL, O_SKIP_BROKEN },
		{ NULL, 0, NULL, 0 },
	};
	struct convert c = { .out_fmt = "raw", .raw_fd = -1 };
	int ch, ret = -EINVAL;

	c.w.img.fd = -1;
	optind = 1;
	while ((ch = getopt_long(argc, argv, ":hpqcf:O:o:B:F:U", lopts,
				 NULL)) != -1) {
		switch (ch) {
		case 'p':
			c.progress = true;
			break;
		case 'q':
			c.quiet = true;
			break;
		case 'c':
			c.compress = true;
			break;
		case 'f':
			c.src_fmt = optarg;
			break;
		case 'O':
			c.out_fmt = optarg;
			break;
		case 'o':
			if (c.nopts == (int)(sizeof(c.opts) / sizeof(c.opts[0]))) {
				qimgctl_usage_err("convert", "too many -o options");
				return 1;
			}
			c.opts[c.nopts++] = optarg;
			break;
		case 'B':
			c.backing = optarg;
			break;
		case 'F':
			c.backing_fmt = optarg;
			break;
		case 'U':
			c.share = true;
			break;
		case O_BITMAPS:
			c.bitmaps = true;
			break;
		case O_SKIP_BROKEN:
			c.skip_broken = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "convert");
			return 0;
		default:
			qimgctl_opt_err("convert", ch, argv);
			return 1;
		}
	}
	if (argc - optind < 2) {
		qimgctl_usage_err("convert", "SRC and DST needed");
		return 1;
	}
	if (argc - optind > 2) {
		qimgctl_usage_err("convert", "unexpected argument '%s' (one SRC only)",
				  argv[optind + 2]);
		return 1;
	}
	c.src = argv[optind];
	c.dst = argv[optind + 1];
	if (c.skip_broken && !c.bitmaps) {
		qimgctl_err("Use of --skip-broken-bitmaps requires --bitmaps");
		return 1;
	}
	if (c.src_fmt && strcmp(c.src_fmt, "qcow2") &&
	    strcmp(c.src_fmt, "qed") && strcmp(c.src_fmt, "raw")) {
		qimgctl_err("Unknown or unsupported format '%s' (only qcow2, qed and raw)",
			    c.src_fmt);
		return 1;
	}
	if (!strcmp(c.out_fmt, "raw")) {
		if (c.compress) {
			qimgctl_err("Compression not supported for this file format");
			return 1;
		}
		if (c.backing) {
			qimgctl_err("%s: Backing file not supported for file format 'raw'",
				    c.dst);
			return 1;
		}
		if (c.nopts) {
			qimgctl_err("%s: Invalid parameter '%s' (raw output takes no options)",
				    c.dst, c.opts[0]);
			return 1;
		}
		c.raw_fd = -2;	/* open it once the source is open */
	} else if (strcmp(c.out_fmt, "qcow2")) {
		qimgctl_err("Unknown or unsupported output format '%s' (qcow2 or raw)",
			    c.out_fmt);
		return 1;
	}
	if (c.backing && !c.backing_fmt) {
		qimgctl_err("Use of backing file requires explicit backing format");
		return 1;
	}
	if (c.backing_fmt && !c.backing) {
		qimgctl_err("-F needs a backing file (-B)");
		return 1;
	}
	ret = run(&c);
	if (c.w.img.fd >= 0)
		qimgw_close(&c.w, false);
	if (c.raw_fd >= 0 && close(c.raw_fd) < 0 && !ret) {
		qimgctl_err("%s: close: %s", c.dst, strerror(errno));
		ret = -EIO;
	}
	qimgr_fini(&c.rd);
	qimgctl_chain_close(c.chain);
	free(c.buf);
	free(c.cbuf);
	return ret ? 1 : 0;
}
