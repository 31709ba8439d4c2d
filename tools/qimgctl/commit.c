// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl commit: write what a qcow2 image holds over its backing file
 * into that backing file (or into BASE further down the chain with -b),
 * as `qemu-img commit` does, then empty the image (not with -d or -b).
 *
 * What is copied, as qemu's commit job copies it: the image is cut into
 * chunks of the job's granularity (the base's cluster size, kept between
 * 4 KiB and 64 KiB; 64 KiB for a raw base).  A chunk any image above the
 * base allocates (data or zeroes) is written into the base as the top
 * image shows it to the guest; a run of such chunks that reads as zeroes
 * and covers whole base clusters becomes zero clusters (qcow2 v3), written
 * zeroes (v2) or a hole (raw) instead.  Compressed clusters are read and
 * written plain.  An image in between that ends early counts the zeroes
 * the top reads past its end as its own, as qemu does.  A base smaller
 * than the image is grown first (over a longer backing file of its own,
 * with zero clusters, so that file does not show through).  With -b the
 * images between the image and BASE are left as they are (their contents
 * are in BASE now; like qemu-img, -b implies -d).
 *
 * Write order, safe against an interruption at any point:
 *   1. the base is grown (it only gains zeroes at its end);
 *   2. the data goes into the base through the writer (image_rw.h: data,
 *      refcounts, L2, L1, header, each step synced) or, for a raw base,
 *      with pwrite and fallocate, then fsync;
 *   3. only then is the image emptied (qimgw_make_empty()): each cluster
 *      it loses is already in the base, so whatever an interruption
 *      leaves of it, the guest sees the same disk through it.
 * An interrupted commit can simply be run again.  The persistent bitmaps
 * of a qcow2 base are marked in use on disk before step 1 and stored,
 * with the written clusters dirty in the enabled ones, after step 2: an
 * interruption leaves them inconsistent, as QEMU would.  The reader sees
 * the base as it was: a cluster is read before it is written, and tables
 * copied away from a snapshot keep their contents (the snapshot still
 * references them).
 *
 * Locks: the image and the base are locked for writing and the images
 * between them for reading, as QEMU locks them (lock.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image_rw.h"
#include "lock.h"

/* qemu's commit (mirror) job: a run of chunks is at most its buffer. */
#define COMMIT_RUN_MAX		(16ULL << 20)
/* Data is copied at most this much at a time. */
#define COMMIT_IO_MAX		(1ULL << 20)
/* Flush the writer every so many bytes (bounds a crash's loss). */
#define COMMIT_FLUSH_EVERY	(1ULL << 30)
/* Chunks of a base cluster tracked one by one (2 MiB / 4 KiB). */
#define COMMIT_MAX_UNITS	512

struct commit {
	const char *file, *base_name, *fmt, *cache;
	bool quiet, progress, keep;
	uint64_t rate;		/* bytes per second, 0 = no limit */

	struct qimgctl_node *chain, *base;
	struct qimgr rd;
	bool rd_ok;
	struct qimgw top_w, base_w;
	void *base_bms;		/* the base's bitmaps (qimgctl_bitmaps_*) */
	int raw_fd;		/* a raw base, else -1 */
	u64 size;		/* of the image */
	u64 gran;		/* the job's granularity */
	u64 bcs;		/* the base's cluster size (0: raw) */
	u8 *buf;
	u64 since_flush;

	/* The base cluster being assembled (qcow2 base). */
	bool pending;
	u64 pend_off;
	u64 pend_units[COMMIT_MAX_UNITS / 64];

	/* -r */
	double t0;
	u64 copied;
	struct qimgctl_progress prog;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* -r: sleep until @c->copied bytes fit the rate. */
static void rate_wait(struct commit *c)
{
	double due, t;
	struct timespec ts;

	if (!c->rate)
		return;
	due = c->t0 + (double)c->copied / (double)c->rate;
	t = now();
	if (due <= t)
		return;
	ts.tv_sec = (time_t)(due - t);
	ts.tv_nsec = (long)((due - t - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

/*
 * Whether [@off, @off + *len) is allocated in an image above the base
 * (data or zeroes): *len (at most @max) bytes from @off share the answer.
 */
static int alloc_above(struct commit *c, u64 off, u64 max, bool *alloc,
		       u64 *len)
{
	struct qimgctl_node *n;
	struct qimgctl_extent ext;
	int ret;

	*alloc = false;
	*len = max;
	for (n = c->chain; n && n != c->base; n = n->backing) {
		/*
		 * An image in between that ends early shows zeroes there:
		 * they count as its own, as in qemu (the top is never short).
		 */
		if (off >= n->length) {
			*alloc = true;
			return 0;
		}
		ret = qimgctl_node_status(n, off, *len, &ext);
		if (ret)
			return ret;
		if (ext.len < *len)
			*len = ext.len;
		if (ext.status != QIMGCTL_ST_UNALLOC) {
			*alloc = true;
			return 0;
		}
	}
	return 0;
}

static int chunk_dirty(struct commit *c, u64 off, bool *dirty)
{
	u64 end = off + c->gran < c->size ? off + c->gran : c->size, len;
	int ret;

	*dirty = false;
	while (off < end && !*dirty) {
		ret = alloc_above(c, off, end - off, dirty, &len);
		if (ret)
			return ret;
		off += len;
	}
	return 0;
}

/*
 * The extent of @n at @off (at most @max bytes), grown over the extents
 * after it of the same kind, as qemu's block status reports one run: the
 * same status, and for clusters with a host location a contiguous one;
 * a compressed cluster is a run of its own.  @off is below @n's end, and
 * the run ends there at the latest.
 */
static int node_run(struct qimgctl_node *n, u64 off, u64 max,
		    struct qimgctl_extent *ext)
{
	struct qimgctl_extent nx;
	int ret;

	if (max > n->length - off)
		max = n->length - off;
	ret = qimgctl_node_status(n, off, max, ext);
	while (!ret && !ext->compressed && ext->len < max) {
		ret = qimgctl_node_status(n, off + ext->len, max - ext->len,
					  &nx);
		if (ret || nx.status != ext->status || nx.compressed ||
		    nx.has_offset != ext->has_offset ||
		    (nx.has_offset &&
		     nx.host_offset != ext->host_offset + ext->len))
			break;
		ext->len += nx.len;
	}
	return ret;
}

/*
 * How the top image reads from @off on, as qemu's block status through
 * the whole chain says it: *len (at most @max) bytes all read as zeroes
 * (*zero) or may hold data, from the first image that allocates them.
 */
static int view_status(struct commit *c, u64 off, u64 max, bool *zero,
		       u64 *len)
{
	struct qimgctl_node *n;
	struct qimgctl_extent ext;
	int ret;

	*zero = true;
	*len = max;
	for (n = c->chain; n; n = n->backing) {
		/* Past the end of a backing file: zeroes. */
		if (off >= n->length)
			return 0;
		ret = node_run(n, off, *len, &ext);
		if (ret)
			return ret;
		*len = ext.len;
		if (ext.status != QIMGCTL_ST_UNALLOC) {
			*zero = ext.status == QIMGCTL_ST_ZERO;
			return 0;
		}
	}
	return 0;
}

/* Guest bytes of the base cluster at @off that the job does not write. */
static int read_base(struct commit *c, u64 off, u8 *p, u64 len)
{
	return qimgr_read(&c->rd, c->base, off, p, len);
}

/* Write the pending base cluster: copied chunks as the top shows them. */
static int flush_pending(struct commit *c)
{
	u64 cs = c->bcs, unit = c->gran < cs ? c->gran : cs, u, off, n;
	u64 sc = cs / QIMG_SUBCLUSTERS;
	u32 mask = 0;
	bool cov;
	int ret = 0;

	if (!c->pending)
		return 0;
	c->pending = false;
	for (u = 0; u * unit < cs && !ret; u++) {
		off = c->pend_off + u * unit;
		n = unit;
		cov = c->pend_units[u / 64] & (1ULL << (u % 64));
		if (cov && off < c->size) {
			if (n > c->size - off)
				n = c->size - off;
			ret = qimgr_read(&c->rd, c->chain, off,
					 c->buf + u * unit, n);
			if (!ret && n < unit)
				ret = read_base(c, off + n,
						c->buf + u * unit + n,
						unit - n);
			if (c->base_w.g->ext_l2) {
				u64 i;

				for (i = (u * unit) / sc;
				     i <= (u * unit + unit - 1) / sc; i++)
					mask |= 1U << i;
			}
		} else {
			ret = read_base(c, off, c->buf + u * unit, n);
		}
	}
	memset(c->pend_units, 0, sizeof(c->pend_units));
	if (ret)
		return ret;
	c->since_flush += cs;
	qimgctl_bitmaps_dirty(c->base_bms, c->pend_off, cs);
	if (c->base_w.g->ext_l2)
		return qimgw_write_subclusters(&c->base_w, c->pend_off, c->buf,
					       mask);
	return qimgw_write_cluster(&c->base_w, c->pend_off, c->buf);
}

/* Copy [off, off + len) into the base as the top image reads. */
static int do_copy(struct commit *c, u64 off, u64 len)
{
	u64 end = off + len, n, bc, unit, u;
	int ret;

	c->copied += len;
	if (c->raw_fd >= 0) {
		for (; off < end; off += n) {
			n = end - off < COMMIT_IO_MAX ? end - off :
			    COMMIT_IO_MAX;
			ret = qimgr_read(&c->rd, c->chain, off, c->buf, n);
			if (ret)
				return ret;
			ret = qimgctl_pwrite(c->raw_fd, c->buf, n, off);
			if (ret) {
				qimgctl_err("%s: write: %s", c->base->path,
					    strerror(-ret));
				return ret;
			}
		}
		return 0;
	}
	unit = c->gran < c->bcs ? c->gran : c->bcs;
	for (; off < end; off += n) {
		bc = off & ~(c->bcs - 1);
		n = bc + c->bcs - off;
		if (n > end - off)
			n = end - off;
		if (c->pending && c->pend_off != bc) {
			ret = flush_pending(c);
			if (ret)
				return ret;
		}
		c->pending = true;
		c->pend_off = bc;
		for (u = (off - bc) / unit;
		     u < (off - bc + n + unit - 1) / unit; u++)
			c->pend_units[u / 64] |= 1ULL << (u % 64);
	}
	return 0;
}

/* [off, off + len) reads as zeroes: whole base clusters (or a raw range). */
static int do_zero(struct commit *c, u64 off, u64 len)
{
	u64 end = off + len;
	bool discard;
	int ret;

	if (c->raw_fd >= 0) {
		if (!fallocate(c->raw_fd, FALLOC_FL_PUNCH_HOLE |
			       FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
			return 0;
		memset(c->buf, 0, COMMIT_IO_MAX);
		for (; off < end; off += COMMIT_IO_MAX) {
			u64 n = end - off < COMMIT_IO_MAX ? end - off :
				COMMIT_IO_MAX;

			ret = qimgctl_pwrite(c->raw_fd, c->buf, n, off);
			if (ret) {
				qimgctl_err("%s: write: %s", c->base->path,
					    strerror(-ret));
				return ret;
			}
		}
		return 0;
	}
	/*
	 * v2 has no zero clusters: without a backing file an unallocated
	 * cluster reads as zeroes (qemu discards), else zeroes are written.
	 */
	discard = c->base_w.h->version < 3 && !c->base->backing;
	ret = flush_pending(c);
	for (; !ret && off < end; off += c->bcs) {
		ret = discard ? qimgw_discard(&c->base_w, off) :
			qimgw_write_zero(&c->base_w, off);
		qimgctl_bitmaps_dirty(c->base_bms, off, c->bcs);
		c->since_flush += c->bcs;
	}
	return ret;
}

/* One run of chunks to copy, split by what the top reads there. */
static int do_run(struct commit *c, u64 off, u64 end)
{
	u64 len, io;
	bool zero;
	int ret;

	while (off < end) {
		ret = view_status(c, off, end - off, &zero, &len);
		if (ret)
			return ret;
		io = zero ? len : (len < COMMIT_IO_MAX ? len : COMMIT_IO_MAX);
		io -= io % c->gran;
		if (io < c->gran)
			zero = false;
		if (io < c->gran)
			io = c->gran;
		/* Zeroes only over whole base clusters, as qemu. */
		if (zero && c->bcs && ((off | io) & (c->bcs - 1)))
			zero = false;
		if (io > end - off)
			io = end - off;
		ret = zero ? do_zero(c, off, io) : do_copy(c, off, io);
		if (ret)
			return ret;
		off += io;
		rate_wait(c);
		qimgctl_progress_update(&c->prog, off, false);
	}
	return 0;
}

static int copy_all(struct commit *c)
{
	u64 off = 0, len, end, next;
	bool alloc, dirty;
	int ret;

	c->t0 = now();
	qimgctl_progress_start(&c->prog, c->progress && !c->quiet &&
			       isatty(STDERR_FILENO), c->size);
	while (off < c->size) {
		ret = alloc_above(c, off, c->size - off, &alloc, &len);
		if (ret)
			return ret;
		if (!alloc) {
			next = (off + len) & ~(c->gran - 1);
			if (next > off) {
				off = next;
				qimgctl_progress_update(&c->prog, off, false);
				continue;
			}
		}
		ret = chunk_dirty(c, off, &dirty);
		if (ret)
			return ret;
		if (!dirty) {
			off += c->gran;
			continue;
		}
		for (end = off + c->gran; end < c->size &&
		     end - off < COMMIT_RUN_MAX; end += c->gran) {
			ret = chunk_dirty(c, end, &dirty);
			if (ret)
				return ret;
			if (!dirty)
				break;
		}
		if (end > c->size)
			end = c->size;
		ret = do_run(c, off, end);
		if (ret)
			return ret;
		off = end;
		if (c->raw_fd < 0 && c->since_flush >= COMMIT_FLUSH_EVERY) {
			ret = flush_pending(c);
			if (!ret)
				ret = qimgw_flush(&c->base_w);
			if (ret)
				return ret;
			c->since_flush = 0;
		}
	}
	if (c->raw_fd < 0)
		ret = flush_pending(c);
	qimgctl_progress_update(&c->prog, c->size, true);
	return ret;
}

/* qemu's bdrv_find_backing_image(): by the name, or by the file. */
static struct qimgctl_node *find_base(struct commit *c)
{
	char want[PATH_MAX], have[PATH_MAX], *p;
	struct qimgctl_node *n;
	bool same;

	for (n = c->chain; n && n->backing; n = n->backing) {
		if (!n->raw && !strcmp(c->base_name, n->img.h.backing_file))
			return n->backing;
		p = qimgctl_path_combine(n->path, c->base_name);
		if (!p)
			continue;
		same = realpath(p, want) && realpath(n->backing->path, have) &&
		       !strcmp(want, have);
		free(p);
		if (same)
			return n->backing;
	}
	return NULL;
}

/* Lock and open the base for writing, grown to the image's size. */
static int open_base(struct commit *c)
{
	struct qimgctl_node *b = c->base;
	struct stat st;
	int ret;

	if (!b->raw) {
		ret = qimgw_open(&c->base_w, b->path);
		if (ret)
			return ret;
		/*
		 * As qemu's commit job writes through the base: clusters and
		 * tables shared with its internal snapshots are copied, its
		 * enabled bitmaps mark what is written (and follow a growth,
		 * which refuses in-use ones as qemu's truncate does).
		 */
		if (c->base_w.h->nb_snapshots && c->base_w.h->version < 3 &&
		    c->size > c->base_w.h->size) {
			qimgctl_err("%s: Can't resize a v2 image which has snapshots",
				    b->path);
			return -ENOTSUP;
		}
		c->base_w.snapshots_ok = true;
		ret = qimgctl_bitmaps_begin(&c->base_w,
					    c->size > c->base_w.h->size ?
					    c->size : c->base_w.h->size,
					    c->size > c->base_w.h->size,
					    &c->base_bms);
		if (ret)
			return ret;
		c->bcs = c->base_w.cs;
		c->gran = c->bcs < 4096 ? 4096 : c->bcs > 65536 ? 65536 :
			  c->bcs;
		/*
		 * Grown as qemu's commit job truncates it: new space reads
		 * as zeroes also where its backing file is longer.
		 */
		if (c->size > c->base_w.h->size)
			ret = qimgw_grow(&c->base_w, c->size, &c->rd, c->base);
		return ret;
	}
	c->gran = 65536;
	c->raw_fd = open(b->path, O_RDWR | O_CLOEXEC);
	if (c->raw_fd < 0) {
		ret = -errno;
		qimgctl_err("Could not open '%s': %s", b->path, strerror(errno));
		return ret;
	}
	ret = qimgctl_lock_open_file(c->raw_fd, b->path, QIMGCTL_OPEN_WRITE);
	if (ret)
		return ret;
	if (fstat(c->raw_fd, &st) < 0) {
		ret = -errno;
		qimgctl_err("%s: %s", b->path, strerror(errno));
		return ret;
	}
	if (c->size > b->length && (u64)st.st_size < c->size &&
	    (ftruncate(c->raw_fd, (off_t)c->size) < 0 ||
	     fsync(c->raw_fd) < 0)) {
		ret = -errno;
		qimgctl_err("%s: Could not resize the file: %s", b->path,
			    strerror(errno));
		return ret;
	}
	return 0;
}

static int run(struct commit *c)
{
	struct qimgctl_node *n;
	struct stat st;
	int ret;

	if (stat(c->file, &st) < 0) {
		ret = -errno;
		qimgctl_err("Could not open '%s': %s", c->file, strerror(errno));
		return ret;
	}
	/*
	 * Every file is opened twice: by the reader, sharing everything,
	 * and by the writer (or the lock below) with QEMU's locks.  Both
	 * are our own, so they must not lock each other out.
	 */
	ret = qimgctl_chain_open(&c->chain, c->file, NULL, QIMGCTL_OPEN_SHARE);
	if (ret)
		return ret;
	/* The image, write-locked (qemu-img opens it read-write, -d or not). */
	ret = qimgw_open(&c->top_w, c->file);
	if (ret)
		return ret;
	if (c->base_name) {
		c->base = find_base(c);
		if (!c->base) {
			qimgctl_err("Did not find '%s' in the backing chain of '%s'",
				    c->base_name, c->file);
			return -ENOENT;
		}
	} else {
		c->base = c->chain->backing;
		if (!c->base) {
			qimgctl_err("Image does not have a backing file");
			return -ENOENT;
		}
	}
	ret = qimgr_init(&c->rd, c->chain);
	c->rd_ok = !ret;
	if (ret)
		return ret;
	/* The images in between are read: nobody may write them meanwhile. */
	for (n = c->chain->backing; n != c->base; n = n->backing) {
		ret = qimgctl_lock_image(qimgctl_node_fd(n), n->path,
					 QIMGCTL_LOCK_READ, false);
		if (ret)
			return ret;
	}
	if (!c->keep) {
		ret = qimgw_can_empty(&c->top_w);
		if (ret)
			return ret;
	}
	c->size = c->chain->length;
	ret = open_base(c);
	if (ret)
		return ret;
	c->buf = malloc(c->bcs > COMMIT_IO_MAX ? c->bcs : COMMIT_IO_MAX);
	if (!c->buf) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	ret = copy_all(c);
	if (ret)
		return ret;
	/* The base is durable before the image loses anything. */
	if (c->raw_fd >= 0) {
		if (fsync(c->raw_fd) < 0) {
			ret = -errno;
			qimgctl_err("%s: fsync: %s", c->base->path,
				    strerror(errno));
			return ret;
		}
	} else {
		/* The copied data durable, then the bitmaps that mark it. */
		ret = qimgw_flush(&c->base_w);
		if (!ret)
			ret = qimgctl_bitmaps_end(&c->base_w, c->base_bms);
		c->base_bms = NULL;
		if (!ret)
			ret = qimgw_close(&c->base_w, true);
		if (ret)
			return ret;
	}
	if (!c->keep)
		ret = qimgw_make_empty(&c->top_w);
	return ret;
}

static bool cache_mode_ok(const char *m)
{
	static const char *const modes[] = {
		"none", "off", "writeback", "writethrough", "directsync",
		"unsafe",
	};
	size_t i;

	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(m, modes[i]))
			return true;
	return false;
}

int qimgctl_cmd_commit(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct commit c = { .raw_fd = -1 };
	const char *rate = NULL;
	int ch, ret;

	c.top_w.img.fd = -1;
	c.base_w.img.fd = -1;
	optind = 1;
	while ((ch = getopt_long(argc, argv, ":hqpdf:t:b:r:", lopts,
				 NULL)) != -1) {
		switch (ch) {
		case 'q':
			c.quiet = true;
			break;
		case 'p':
			c.progress = true;
			break;
		case 'd':
			c.keep = true;
			break;
		case 'f':
			c.fmt = optarg;
			break;
		case 't':
			c.cache = optarg;
			break;
		case 'b':
			c.base_name = optarg;
			c.keep = true;	/* -b implies -d, as in qemu-img */
			break;
		case 'r':
			rate = optarg;
			break;
		case 'h':
			qimgctl_usage(stdout, "commit");
			return 0;
		default:
			qimgctl_opt_err("commit", ch, argv);
			return 1;
		}
	}
	if (qimgctl_one_file("commit", argc, argv))
		return 1;
	c.file = argv[optind];
	if (c.fmt && qimgctl_want_qcow2(c.fmt))
		return 1;
	if (c.cache && !cache_mode_ok(c.cache)) {
		qimgctl_err("Invalid cache option: %s", c.cache);
		return 1;
	}
	if (rate && qimgctl_parse_size(rate, &c.rate)) {
		qimgctl_err("Invalid rate limit specified (k, M, G, T, P or E suffixes allowed): %s",
			    rate);
		return 1;
	}
	ret = run(&c);
	if (c.raw_fd >= 0 && close(c.raw_fd) < 0 && !ret) {
		qimgctl_err("%s: close: %s", c.base->path, strerror(errno));
		ret = -EIO;
	}
	/* After a failure the bitmaps stay in use, as qemu leaves them. */
	qimgctl_bitmaps_free(c.base_bms);
	if (c.base_w.img.fd >= 0)
		qimgw_close(&c.base_w, false);
	if (c.top_w.img.fd >= 0)
		qimgw_close(&c.top_w, false);
	if (c.rd_ok)
		qimgr_fini(&c.rd);
	qimgctl_chain_close(c.chain);
	free(c.buf);
	if (ret)
		return 1;
	if (!c.quiet)
		printf("Image committed.\n");
	return 0;
}
