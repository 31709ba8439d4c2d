// SPDX-License-Identifier: GPL-2.0
/*
 * qimg-crashrec: write verifiable records to a block device until the power
 * is cut, and afterwards check that everything made durable survived.
 *
 *   qimg-crashrec fill   [-o OFF] DEV SEED
 *   qimg-crashrec write  [-t THREADS] [-b] [-n GENS] [-o OFF] DEV SEED LOG
 *   qimg-crashrec verify [-B BACKING_SEED] [-v] [-o OFF] DEV SEED LOG
 *   qimg-crashrec replay -l DMLOG | replay [-s SEED] [-f FROM[:OFF]] DMLOG DEST N
 *   qimg-crashrec fswrite [-n OPS] DIR SEED LOG
 *   qimg-crashrec fsverify DIR SEED LOG
 *
 * The device (from byte OFF on, a multiple of 4 KiB: the rest may hold a
 * filesystem) is seen as 4 KiB blocks.  Generation g (1, 2, ...) writes a
 * pseudo-random set of runs of blocks, derived from (SEED, g) alone, so the
 * verifier can recompute every generation's block set without any record
 * on disk.  Every block written is "stamped": a header naming the block,
 * the generation and the seed, then bytes derived from the three, so a
 * block's content proves which write put it there (a misdirected or torn
 * write cannot pass as a good one).
 *
 * After a generation's writes complete, it is made durable (fsync of the
 * device, or each write was RWF_DSYNC, i.e. FUA / flush), and only then
 * "durable g" is appended to LOG and LOG is fsynced.  So after a crash,
 * with G the last durable generation in LOG:
 *   - a block whose last writer up to G is g must hold g's stamp, unless
 *     generation G+1 (possibly in flight at the cut) also wrote it, in which
 *     case G+1's stamp is fine too, or a mix of the two, sector by sector
 *     (a write in flight may be torn at any sector);
 *   - a block never written must still hold the initial content: zeroes, or
 *     the stamp of generation 0 with BACKING_SEED ("fill" wrote it into the
 *     backing file of an overlay).
 * Generation G+2 cannot have started: it waits for "durable G+1" to be
 * durable in LOG.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define CR_BLOCK	4096u
#define CR_SECTOR	512u	/* what a write may tear at: a sector */
#define CR_MAGIC	0x48535243474d4951ULL	/* "QIMGCRSH" little-endian */
#define CR_MAX_RUNS	24
#define CR_MAX_RUN_LEN	8
#define CR_MAX_THREADS	16
#define CR_MAX_REPORT	20

struct cr_hdr {
	uint64_t magic;
	uint64_t block;
	uint64_t gen;
	uint64_t seed;
};

struct cr_run {
	uint64_t start;
	uint32_t len;
};

struct cr_gen {
	uint64_t gen;
	unsigned int nruns;
	struct cr_run runs[CR_MAX_RUNS];
	bool dsync;	/* every write RWF_DSYNC instead of an fsync after */
};

static const char *cr_prog = "qimg-crashrec";
/* write, verify: where block 0 is on the device (-o). */
static uint64_t cr_off;

static void cr_die(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void cr_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cr_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static uint64_t cr_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* A small deterministic PRNG (splitmix64 stream). */
static uint64_t cr_next(uint64_t *state)
{
	*state += 0x9e3779b97f4a7c15ULL;
	return cr_mix(*state);
}

static void cr_stamp(void *buf, uint64_t seed, uint64_t block, uint64_t gen)
{
	struct cr_hdr h = { CR_MAGIC, block, gen, seed };
	uint64_t st = cr_mix(seed ^ cr_mix(block ^ cr_mix(gen + 1)));
	uint64_t *w = buf;
	size_t i;

	memcpy(buf, &h, sizeof(h));
	for (i = sizeof(h) / 8; i < CR_BLOCK / 8; i++)
		w[i] = cr_next(&st);
}

/*
 * The block set of one generation: half the runs in a hot area at the
 * start (so blocks get rewritten across generations: overwrites of
 * allocated clusters), half anywhere (new allocations, L2 tables).
 */
static void cr_plan(struct cr_gen *g, uint64_t seed, uint64_t gen,
		    uint64_t nblocks)
{
	uint64_t st = cr_mix(seed ^ cr_mix(0x51ed270b ^ gen));
	uint64_t hot = nblocks / 16 ? nblocks / 16 : 1;
	unsigned int i;

	g->gen = gen;
	g->nruns = 1 + cr_next(&st) % CR_MAX_RUNS;
	g->dsync = cr_next(&st) % 4 == 0;
	for (i = 0; i < g->nruns; i++) {
		uint64_t area = cr_next(&st) % 2 ? hot : nblocks;
		uint64_t start = cr_next(&st) % area;
		uint64_t len = 1 + cr_next(&st) % CR_MAX_RUN_LEN;

		if (start + len > nblocks)
			len = nblocks - start;
		g->runs[i].start = start;
		g->runs[i].len = (uint32_t)len;
	}
}

static uint64_t cr_parse_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		cr_die("bad %s '%s'", what, s);
	return v;
}

static uint64_t cr_nblocks(int fd, const char *path)
{
	struct stat st;
	uint64_t bytes;

	if (fstat(fd, &st) < 0)
		cr_die("stat %s: %s", path, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &bytes) < 0)
			cr_die("BLKGETSIZE64 %s: %s", path, strerror(errno));
	} else {
		bytes = (uint64_t)st.st_size;
	}
	if (cr_off > bytes || bytes - cr_off < CR_BLOCK * 16)
		cr_die("%s: too small (%" PRIu64 " bytes from %" PRIu64 ")",
		       path, bytes, cr_off);
	return (bytes - cr_off) / CR_BLOCK;
}

static void *cr_alloc(size_t len)
{
	void *p;

	if (posix_memalign(&p, CR_BLOCK, len))
		cr_die("out of memory");
	return p;
}

/* --- fill ------------------------------------------------------------- */

static int cr_fill(int argc, char **argv)
{
	const size_t chunk = 256;
	uint64_t seed, n, b;
	unsigned char *buf;
	int fd;

	int opt;

	while ((opt = getopt(argc, argv, "o:")) != -1) {
		if (opt != 'o')
			cr_die("usage: fill [-o OFF] DEV SEED");
		cr_off = cr_parse_u64(optarg, "offset");
		if (cr_off % CR_BLOCK)
			cr_die("-o takes a multiple of %u", CR_BLOCK);
	}
	argc -= optind - 1;
	argv += optind - 1;
	if (argc != 3)
		cr_die("usage: fill [-o OFF] DEV SEED");
	seed = cr_parse_u64(argv[2], "seed");
	fd = open(argv[1], O_WRONLY);
	if (fd < 0)
		cr_die("open %s: %s", argv[1], strerror(errno));
	n = cr_nblocks(fd, argv[1]);
	buf = cr_alloc(chunk * CR_BLOCK);
	for (b = 0; b < n; b += chunk) {
		size_t i, cnt = n - b < chunk ? n - b : chunk;

		for (i = 0; i < cnt; i++)
			cr_stamp(buf + i * CR_BLOCK, seed, b + i, 0);
		if (pwrite(fd, buf, cnt * CR_BLOCK,
			   (off_t)(cr_off + b * CR_BLOCK)) !=
		    (ssize_t)(cnt * CR_BLOCK))
			cr_die("write %s: %s", argv[1], strerror(errno));
	}
	if (fsync(fd) < 0 || close(fd) < 0)
		cr_die("fsync %s: %s", argv[1], strerror(errno));
	free(buf);
	return 0;
}

/* --- write ------------------------------------------------------------ */

struct cr_worker {
	pthread_t tid;
	int fd;
	unsigned int index, nthreads;
	uint64_t seed;
	const struct cr_gen *g;
	unsigned char *buf;
	int err;
};

static void *cr_worker_fn(void *arg)
{
	struct cr_worker *w = arg;
	const struct cr_gen *g = w->g;
	unsigned int r, i;

	w->err = 0;
	for (r = w->index; r < g->nruns; r += w->nthreads) {
		const struct cr_run *run = &g->runs[r];
		size_t len = (size_t)run->len * CR_BLOCK;
		struct iovec iov = { w->buf, len };
		ssize_t ret;

		for (i = 0; i < run->len; i++)
			cr_stamp(w->buf + (size_t)i * CR_BLOCK, w->seed,
				 run->start + i, g->gen);
		ret = pwritev2(w->fd, &iov, 1,
			       (off_t)(cr_off + run->start * CR_BLOCK),
			       g->dsync ? RWF_DSYNC : 0);
		if (ret != (ssize_t)len) {
			w->err = ret < 0 ? errno : EIO;
			break;
		}
	}
	return NULL;
}

static void cr_log(int fd, const char *path, uint64_t gen)
{
	char line[64];
	int len = snprintf(line, sizeof(line), "durable %" PRIu64 "\n", gen);

	if (write(fd, line, (size_t)len) != len)
		cr_die("write %s: %s", path, strerror(errno));
	if (fsync(fd) < 0)
		cr_die("fsync %s: %s", path, strerror(errno));
}

static int cr_write(int argc, char **argv)
{
	struct cr_worker w[CR_MAX_THREADS];
	unsigned int nthreads = 4, t;
	uint64_t seed, nblocks, gens = 0, gen;
	bool buffered = false;
	int fd, logfd, opt;
	struct cr_gen g;

	while ((opt = getopt(argc, argv, "t:bn:o:")) != -1) {
		switch (opt) {
		case 'o':
			cr_off = cr_parse_u64(optarg, "offset");
			if (cr_off % CR_BLOCK)
				cr_die("-o takes a multiple of %u", CR_BLOCK);
			break;
		case 't':
			nthreads = (unsigned int)cr_parse_u64(optarg, "threads");
			if (!nthreads || nthreads > CR_MAX_THREADS)
				cr_die("-t takes 1..%d", CR_MAX_THREADS);
			break;
		case 'b':
			buffered = true;
			break;
		case 'n':
			gens = cr_parse_u64(optarg, "generations");
			break;
		default:
			cr_die("usage: write [-t THREADS] [-b] [-n GENS] [-o OFF] DEV SEED LOG");
		}
	}
	if (argc - optind != 3)
		cr_die("usage: write [-t THREADS] [-b] [-n GENS] [-o OFF] DEV SEED LOG");
	seed = cr_parse_u64(argv[optind + 1], "seed");
	fd = open(argv[optind], O_WRONLY | (buffered ? 0 : O_DIRECT));
	if (fd < 0)
		cr_die("open %s: %s", argv[optind], strerror(errno));
	nblocks = cr_nblocks(fd, argv[optind]);
	logfd = open(argv[optind + 2], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
		     0644);
	if (logfd < 0)
		cr_die("open %s: %s", argv[optind + 2], strerror(errno));
	for (t = 0; t < nthreads; t++) {
		w[t].fd = fd;
		w[t].index = t;
		w[t].nthreads = nthreads;
		w[t].seed = seed;
		w[t].g = &g;
		w[t].buf = cr_alloc((size_t)CR_MAX_RUN_LEN * CR_BLOCK);
	}
	for (gen = 1; !gens || gen <= gens; gen++) {
		cr_plan(&g, seed, gen, nblocks);
		for (t = 0; t < nthreads; t++)
			if (pthread_create(&w[t].tid, NULL, cr_worker_fn, &w[t]))
				cr_die("pthread_create failed");
		for (t = 0; t < nthreads; t++)
			pthread_join(w[t].tid, NULL);
		for (t = 0; t < nthreads; t++)
			if (w[t].err)
				cr_die("generation %" PRIu64 ": write: %s", gen,
				       strerror(w[t].err));
		/* RWF_DSYNC writes are durable when they complete. */
		if (!g.dsync && fsync(fd) < 0)
			cr_die("generation %" PRIu64 ": fsync: %s", gen,
			       strerror(errno));
		cr_log(logfd, argv[optind + 2], gen);
	}
	close(logfd);
	close(fd);
	for (t = 0; t < nthreads; t++)
		free(w[t].buf);
	return 0;
}

/* --- verify ----------------------------------------------------------- */

/* The last "durable N" of LOG; lines must count 1, 2, 3, ... */
static uint64_t cr_read_log(const char *path)
{
	char line[128];
	uint64_t last = 0, v;
	FILE *f = fopen(path, "r");

	if (!f)
		cr_die("open %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);

		/* A torn last line was never acknowledged: ignore it. */
		if (!len || line[len - 1] != '\n')
			break;
		if (sscanf(line, "durable %" SCNu64, &v) != 1)
			cr_die("%s: bad line '%.*s'", path, (int)len - 1, line);
		if (v != last + 1)
			cr_die("%s: generation %" PRIu64 " after %" PRIu64,
			       path, v, last);
		last = v;
	}
	fclose(f);
	return last;
}

static void cr_stamp(void *buf, uint64_t seed, uint64_t block, uint64_t gen);

/*
 * Does BLK hold, sector by sector, the content of A, B or C (B and C may
 * be NULL)?  A write in flight at a cut may have reached the media in part:
 * a block device only promises that each sector is written whole, and
 * the layers below (the inner filesystem's 1 KiB blocks, the image's
 * host filesystem) may split one 4 KiB block over several writes.
 */
static bool cr_sectors_of(const unsigned char *blk, const unsigned char *a,
			  const unsigned char *b, const unsigned char *c)
{
	size_t s;

	for (s = 0; s < CR_BLOCK; s += CR_SECTOR)
		if (memcmp(blk + s, a + s, CR_SECTOR) &&
		    (!b || memcmp(blk + s, b + s, CR_SECTOR)) &&
		    (!c || memcmp(blk + s, c + s, CR_SECTOR)))
			return false;
	return true;
}

/* What a bad block holds, to tell a lost, a misdirected and a torn write. */
static void cr_describe(const unsigned char *blk, char *out, size_t outlen)
{
	unsigned char good[CR_BLOCK] __attribute__((aligned(8)));
	struct cr_hdr h;
	size_t i;

	memcpy(&h, blk, sizeof(h));
	for (i = 0; i < CR_BLOCK && !blk[i]; i++)
		;
	if (i == CR_BLOCK)
		snprintf(out, outlen, "zeroes");
	else if (h.magic == CR_MAGIC) {
		cr_stamp(good, h.seed, h.block, h.gen);
		snprintf(out, outlen,
			 "%s record of block %" PRIu64 " gen %" PRIu64
			 " seed %" PRIu64,
			 memcmp(good, blk, CR_BLOCK) ? "a TORN" : "the",
			 h.block, h.gen, h.seed);
	}
	else
		snprintf(out, outlen, "garbage (first bytes %016" PRIx64 ")",
			 h.magic);
}

static int cr_verify(int argc, char **argv)
{
	uint64_t seed, bseed = 0, nblocks, durable, b, g, i;
	uint64_t *last;
	bool *pending, have_backing = false, verbose = false;
	uint64_t n_init = 0, n_durable = 0, n_new = 0, n_old = 0, n_torn = 0;
	uint64_t bad = 0;
	unsigned char *buf, *exp, *newer;
	const size_t chunk = 256;
	struct cr_gen plan;
	int fd, opt;

	while ((opt = getopt(argc, argv, "B:vo:")) != -1) {
		switch (opt) {
		case 'o':
			cr_off = cr_parse_u64(optarg, "offset");
			if (cr_off % CR_BLOCK)
				cr_die("-o takes a multiple of %u", CR_BLOCK);
			break;
		case 'B':
			bseed = cr_parse_u64(optarg, "backing seed");
			have_backing = true;
			break;
		case 'v':
			verbose = true;
			break;
		default:
			cr_die("usage: verify [-B BACKING_SEED] [-v] [-o OFF] DEV SEED LOG");
		}
	}
	if (argc - optind != 3)
		cr_die("usage: verify [-B BACKING_SEED] [-v] [-o OFF] DEV SEED LOG");
	seed = cr_parse_u64(argv[optind + 1], "seed");
	durable = cr_read_log(argv[optind + 2]);
	fd = open(argv[optind], O_RDONLY);
	if (fd < 0)
		cr_die("open %s: %s", argv[optind], strerror(errno));
	nblocks = cr_nblocks(fd, argv[optind]);
	last = calloc(nblocks, sizeof(*last));
	pending = calloc(nblocks, sizeof(*pending));
	if (!last || !pending)
		cr_die("out of memory");
	for (g = 1; g <= durable + 1; g++) {
		cr_plan(&plan, seed, g, nblocks);
		for (i = 0; i < plan.nruns; i++)
			for (b = plan.runs[i].start;
			     b < plan.runs[i].start + plan.runs[i].len; b++) {
				if (g <= durable)
					last[b] = g;
				else
					pending[b] = true;
			}
	}

	buf = cr_alloc(chunk * CR_BLOCK);
	exp = cr_alloc(CR_BLOCK);
	newer = cr_alloc(CR_BLOCK);
	for (b = 0; b < nblocks; b += chunk) {
		size_t cnt = nblocks - b < chunk ? nblocks - b : chunk;
		ssize_t ret = pread(fd, buf, cnt * CR_BLOCK,
				    (off_t)(cr_off + b * CR_BLOCK));

		if (ret != (ssize_t)(cnt * CR_BLOCK))
			cr_die("read %s at block %" PRIu64 ": %s", argv[optind],
			       b, ret < 0 ? strerror(errno) : "short read");
		for (i = 0; i < cnt; i++) {
			const unsigned char *blk = buf + i * CR_BLOCK;
			uint64_t bl = b + i;
			char what[160], want[40];

			if (last[bl])
				cr_stamp(exp, seed, bl, last[bl]);
			else if (have_backing)
				cr_stamp(exp, bseed, bl, 0);
			else
				memset(exp, 0, CR_BLOCK);
			if (!memcmp(blk, exp, CR_BLOCK)) {
				if (pending[bl])
					n_old++;
				else if (last[bl])
					n_durable++;
				else
					n_init++;
				continue;
			}
			if (pending[bl]) {
				cr_stamp(newer, seed, bl, durable + 1);
				if (!memcmp(blk, newer, CR_BLOCK)) {
					n_new++;
					continue;
				}
				if (cr_sectors_of(blk, exp, newer, NULL)) {
					n_torn++;
					continue;
				}
			}
			bad++;
			if (bad > CR_MAX_REPORT)
				continue;
			cr_describe(blk, what, sizeof(what));
			if (last[bl])
				snprintf(want, sizeof(want), "gen %" PRIu64,
					 last[bl]);
			else
				snprintf(want, sizeof(want), "%s",
					 have_backing ? "the backing record" :
					 "zeroes");
			printf("BAD block %" PRIu64 " (offset %" PRIu64
			       "): want %s%s, found %s\n", bl, bl * CR_BLOCK,
			       want, pending[bl] ? " or the in-flight gen" : "",
			       what);
		}
	}
	printf("%s: durable generation %" PRIu64 "; blocks: %" PRIu64
	       " durable intact, %" PRIu64 " initial intact, in-flight %"
	       PRIu64 " new / %" PRIu64 " old / %" PRIu64
	       " part new, %" PRIu64 " BAD\n", argv[optind], durable,
	       n_durable, n_init, n_new, n_old, n_torn, bad);
	if (verbose)
		printf("seed %" PRIu64 ", %" PRIu64 " blocks\n", seed, nblocks);
	free(buf);
	free(exp);
	free(newer);
	free(last);
	free(pending);
	close(fd);
	return bad ? 1 : 0;
}

/* --- replay ----------------------------------------------------------- */

/*
 * A dm-log-writes log (drivers/md/dm-log-writes.c): a super block at byte
 * 0, then per entry one sector of header followed by the data written, in
 * the order the writes completed.  A FLUSH entry means every write logged
 * before it was durable; a FUA write is durable on its own.
 */
#define LW_MAGIC	0x6a736677736872ULL
#define LW_FLUSH	(1u << 0)
#define LW_FUA		(1u << 1)
#define LW_DISCARD	(1u << 2)
#define LW_MARK		(1u << 3)
#define LW_MAX_DATA	(64u << 20)

struct lw_super {
	uint64_t magic, version, nr_entries;
	uint32_t sectorsize;
} __attribute__((packed));

struct lw_entry {
	uint64_t sector, nr_sectors, flags, data_len;
};

/*
 * replay -l LOG: list the entries that matter, with the byte offset of
 * each in LOG ("I flush OFF", "I fua OFF", "I mark TEXT") and the count.
 *
 * replay [-s SEED] [-f FROM[:OFF]] LOG DEST N: write entries FROM..N
 * (FROM: 0, or the entry at byte OFF of LOG; DEST already holds what came
 * before it) to DEST, so a replica is brought forward point by point.
 * Without -s every entry is written: the disk after a power cut just
 * after entry N with every write reaching the media in order.  With SEED,
 * a volatile write cache: entries before the last FLUSH at or before N
 * are written (the flush made them durable), the ones from it on only
 * at random, but FUA ones always (durable when they completed).  Discards
 * are never applied: the old data is one of the contents a discarded
 * range may show.  Prints "kept K of M; next N+1 OFF": of the M entries
 * left to chance, K written; the entry after N and its byte offset, for
 * the next -f.
 */
static void lw_header(int lfd, uint64_t i, uint64_t off, uint32_t ss,
		      struct lw_entry *e, unsigned char *hdr)
{
	if (pread(lfd, hdr, 512, (off_t)off) != 512)
		cr_die("entry %" PRIu64 ": short log", i);
	memcpy(e, hdr, sizeof(*e));
	if (e->nr_sectors > LW_MAX_DATA / ss)
		cr_die("entry %" PRIu64 ": %" PRIu64 " sectors", i,
		       e->nr_sectors);
}

static uint64_t lw_len(const struct lw_entry *e, uint32_t ss)
{
	return (e->flags & (LW_DISCARD | LW_MARK)) ? 0 : e->nr_sectors * ss;
}

static int cr_replay(int argc, char **argv)
{
	uint64_t n = 0, seed = 0, st, i, off, from = 0, from_off = 0;
	uint64_t last_flush = 0, kept = 0, maybe = 0;
	bool list = false, subset = false;
	unsigned char hdr[512];
	struct lw_super sb;
	struct lw_entry e;
	unsigned char *data = NULL;
	int lfd, dfd = -1, opt;
	uint32_t ss;
	char *colon;

	while ((opt = getopt(argc, argv, "ls:f:")) != -1) {
		switch (opt) {
		case 'l':
			list = true;
			break;
		case 's':
			seed = cr_parse_u64(optarg, "seed");
			subset = true;
			break;
		case 'f':
			colon = strchr(optarg, ':');
			if (colon) {
				*colon = 0;
				from_off = cr_parse_u64(colon + 1, "offset");
			}
			from = cr_parse_u64(optarg, "entry");
			break;
		default:
			cr_die("usage: replay -l LOG | replay [-s SEED] [-f FROM[:OFF]] LOG DEST N");
		}
	}
	if (argc - optind != (list ? 1 : 3))
		cr_die("usage: replay -l LOG | replay [-s SEED] [-f FROM[:OFF]] LOG DEST N");
	lfd = open(argv[optind], O_RDONLY);
	if (lfd < 0)
		cr_die("open %s: %s", argv[optind], strerror(errno));
	if (pread(lfd, &sb, sizeof(sb), 0) != (ssize_t)sizeof(sb))
		cr_die("%s: cannot read the super block", argv[optind]);
	ss = sb.sectorsize;
	if (sb.magic != LW_MAGIC || sb.version != 1 || ss < 512 ||
	    ss > 65536 || (ss & (ss - 1)))
		cr_die("%s: not a dm-log-writes log", argv[optind]);
	if (list) {
		off = ss;
		for (i = 0; i < sb.nr_entries; i++) {
			lw_header(lfd, i, off, ss, &e, hdr);
			if (e.flags & LW_MARK)
				printf("%" PRIu64 " mark %.*s\n", i,
				       (int)(e.data_len < 480 ? e.data_len : 480),
				       (const char *)hdr + sizeof(e));
			else if (e.flags & LW_FLUSH)
				printf("%" PRIu64 " flush %" PRIu64 "\n", i, off);
			else if (e.flags & LW_FUA)
				printf("%" PRIu64 " fua %" PRIu64 "\n", i, off);
			off += ss + lw_len(&e, ss);
		}
		printf("entries %" PRIu64 "\n", sb.nr_entries);
		close(lfd);
		return 0;
	}
	n = cr_parse_u64(argv[optind + 2], "entry");
	if (n >= sb.nr_entries || from > n + 1)
		cr_die("entries %" PRIu64 "..%" PRIu64 ": the log has %" PRIu64,
		       from, n, sb.nr_entries);
	dfd = open(argv[optind + 1], O_WRONLY);
	if (dfd < 0)
		cr_die("open %s: %s", argv[optind + 1], strerror(errno));
	/* The byte offset of entry FROM, unless given. */
	off = ss;
	if (from_off) {
		off = from_off;
	} else {
		for (i = 0; i < from; i++) {
			lw_header(lfd, i, off, ss, &e, hdr);
			off += ss + lw_len(&e, ss);
		}
	}
	/* The last flush in FROM..N: what is durable for sure ends there. */
	if (subset) {
		uint64_t o = off;

		last_flush = from;
		for (i = from; i <= n; i++) {
			lw_header(lfd, i, o, ss, &e, hdr);
			if (e.flags & LW_FLUSH)
				last_flush = i;
			o += ss + lw_len(&e, ss);
		}
	}
	st = cr_mix(seed);
	data = cr_alloc(LW_MAX_DATA);
	for (i = from; i <= n; i++) {
		uint64_t len;
		bool apply = true;

		lw_header(lfd, i, off, ss, &e, hdr);
		len = lw_len(&e, ss);
		if (subset && i >= last_flush && !(e.flags & LW_FUA) && len) {
			maybe++;
			apply = cr_next(&st) % 2;
			kept += apply;
		}
		if (apply && len) {
			if (pread(lfd, data, len, (off_t)(off + ss)) !=
			    (ssize_t)len)
				cr_die("entry %" PRIu64 ": short data", i);
			if (pwrite(dfd, data, len, (off_t)(e.sector * ss)) !=
			    (ssize_t)len)
				cr_die("write %s: %s", argv[optind + 1],
				       strerror(errno));
		}
		off += ss + len;
	}
	if (fsync(dfd) < 0 || close(dfd) < 0)
		cr_die("fsync %s: %s", argv[optind + 1], strerror(errno));
	printf("kept %" PRIu64 " of %" PRIu64 "; next %" PRIu64 " %" PRIu64 "\n",
	       kept, maybe, n + 1, off);
	free(data);
	close(lfd);
	return 0;
}

/* --- fswrite / fsverify: a file workload on a mounted filesystem ------- */

/*
 * Operation k (1, 2, ...) of the file workload is planned from (SEED, k)
 * and the state the operations before it left, so the verifier rebuilds
 * the expected directory from the seed alone, like the block generations
 * above.  Files are the slots f00..f11 of DIR; a file's content is given
 * per 4 KiB block by a content id (the operation that wrote the block),
 * each block stamped like a device block, so a block proves which write
 * put it there.  Every operation ends durable (fsync of the file and/or
 * the directory) before "durable k" is appended to LOG and LOG is
 * fsynced, so after a crash, with K the last durable operation in LOG,
 * DIR must hold exactly the state after K, but for what operation K+1
 * (in flight at the cut) touched:
 *   create     the file absent, or any prefix of it, sectors new or zeroes;
 *   replace    (write tmp, fsync, rename over the file, fsync the dir) the
 *              old file or the whole new one, never a mix;
 *   overwrite  (pwrite, fsync) each sector old or new, the size between;
 *   rename     the source alone, or the target holding the source's data;
 *   delete     the old file or none.
 * Only f00..f11, tmp and lost+found may exist.
 */
#define FS_SLOTS	12
#define FS_MAX_BLOCKS	24
#define FS_SALT		0x46535752ULL

enum fs_kind { FS_CREATE, FS_REPLACE, FS_OVERWRITE, FS_RENAME, FS_DELETE };
static const char *const fs_kind_name[] = {
	"create", "replace", "overwrite", "rename", "delete"
};

struct fs_file {
	bool exists;
	uint32_t size;
	uint64_t cid[FS_MAX_BLOCKS];
};

struct fs_op {
	enum fs_kind kind;
	unsigned int s, t;	/* slot, rename target */
	uint32_t a, nb;		/* overwrite: first block, blocks */
	uint32_t size;		/* create, replace: the new size */
};

static uint32_t fs_nblocks(uint32_t size)
{
	return (size + CR_BLOCK - 1) / CR_BLOCK;
}

static void fs_plan(struct fs_op *op, const struct fs_file *f, uint64_t seed,
		    uint64_t k)
{
	uint64_t st = cr_mix(seed ^ FS_SALT ^ cr_mix(k));
	const struct fs_file *s;
	uint32_t r;

	memset(op, 0, sizeof(*op));
	op->s = (unsigned int)(cr_next(&st) % FS_SLOTS);
	s = &f[op->s];
	/* Sizes: whole blocks or a partial last one, 0 included. */
	op->size = (uint32_t)(cr_next(&st) % (FS_MAX_BLOCKS * CR_BLOCK + 1));
	if (cr_next(&st) % 2)
		op->size &= ~(CR_BLOCK - 1);
	if (!s->exists) {
		op->kind = FS_CREATE;
		return;
	}
	r = (uint32_t)(cr_next(&st) % 8);
	if (r < 2) {
		op->kind = FS_REPLACE;
	} else if (r < 5) {
		op->kind = FS_OVERWRITE;
		/*
		 * From any block to just past the end, but not past a
		 * partial last block: that would leave its tail (zeroes
		 * in the file) inside the file, which the model does not
		 * know.
		 */
		op->a = (uint32_t)(cr_next(&st) % (fs_nblocks(s->size) +
						   !(s->size % CR_BLOCK)));
		if (op->a >= FS_MAX_BLOCKS)
			op->a = FS_MAX_BLOCKS - 1;
		op->nb = 1 + (uint32_t)(cr_next(&st) % 4);
		if (op->a + op->nb > FS_MAX_BLOCKS)
			op->nb = FS_MAX_BLOCKS - op->a;
	} else if (r < 7) {
		op->kind = FS_RENAME;
		op->t = (op->s + 1 + (unsigned int)(cr_next(&st) %
						    (FS_SLOTS - 1))) % FS_SLOTS;
	} else {
		op->kind = FS_DELETE;
	}
}

static void fs_apply(struct fs_file *f, const struct fs_op *op, uint64_t k)
{
	struct fs_file *s = &f[op->s];
	uint32_t b, end;

	switch (op->kind) {
	case FS_CREATE:
	case FS_REPLACE:
		s->exists = true;
		s->size = op->size;
		for (b = 0; b < FS_MAX_BLOCKS; b++)
			s->cid[b] = b < fs_nblocks(op->size) ? k : 0;
		break;
	case FS_OVERWRITE:
		for (b = op->a; b < op->a + op->nb; b++)
			s->cid[b] = k;
		end = (op->a + op->nb) * CR_BLOCK;
		if (end > s->size)
			s->size = end;
		break;
	case FS_RENAME:
		f[op->t] = *s;
		memset(s, 0, sizeof(*s));
		break;
	case FS_DELETE:
		memset(s, 0, sizeof(*s));
		break;
	}
}

/* Block b of a file in state f, as a read shows it (zeroes past the end). */
static void fs_block(unsigned char *buf, const struct fs_file *f, uint64_t seed,
		     uint32_t b)
{
	uint32_t len;

	memset(buf, 0, CR_BLOCK);
	if (!f->exists || b >= fs_nblocks(f->size) || !f->cid[b])
		return;
	cr_stamp(buf, seed ^ FS_SALT, b, f->cid[b]);
	len = f->size - b * CR_BLOCK;
	if (len < CR_BLOCK)
		memset(buf + len, 0, CR_BLOCK - len);
}

static void fs_name(char *name, size_t len, unsigned int slot)
{
	snprintf(name, len, "f%02u", slot);
}

static void fs_write_file(int fd, const struct fs_file *f, uint64_t seed,
			  uint32_t from, uint32_t nb, const char *what)
{
	unsigned char *buf = cr_alloc(CR_BLOCK);
	uint32_t b;

	for (b = from; b < from + nb && b < fs_nblocks(f->size); b++) {
		uint32_t len = f->size - b * CR_BLOCK;

		if (len > CR_BLOCK)
			len = CR_BLOCK;
		fs_block(buf, f, seed, b);
		if (pwrite(fd, buf, len, (off_t)b * CR_BLOCK) != (ssize_t)len)
			cr_die("write %s: %s", what, strerror(errno));
	}
	free(buf);
}

static int cr_fswrite(int argc, char **argv)
{
	struct fs_file f[FS_SLOTS];
	uint64_t seed, ops = 0, k;
	char src[16], dst[16];
	int dfd, logfd, fd, opt;
	struct fs_op op;

	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt != 'n')
			cr_die("usage: fswrite [-n OPS] DIR SEED LOG");
		ops = cr_parse_u64(optarg, "operations");
	}
	if (argc - optind != 3)
		cr_die("usage: fswrite [-n OPS] DIR SEED LOG");
	seed = cr_parse_u64(argv[optind + 1], "seed");
	dfd = open(argv[optind], O_RDONLY | O_DIRECTORY);
	if (dfd < 0)
		cr_die("open %s: %s", argv[optind], strerror(errno));
	logfd = open(argv[optind + 2], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
		     0644);
	if (logfd < 0)
		cr_die("open %s: %s", argv[optind + 2], strerror(errno));
	memset(f, 0, sizeof(f));
	for (k = 1; !ops || k <= ops; k++) {
		fs_plan(&op, f, seed, k);
		fs_apply(f, &op, k);
		fs_name(src, sizeof(src), op.s);
		fs_name(dst, sizeof(dst), op.t);
		switch (op.kind) {
		case FS_CREATE:
		case FS_REPLACE:
			fd = openat(dfd, op.kind == FS_CREATE ? src : "tmp",
				    O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (fd < 0)
				cr_die("op %" PRIu64 ": create: %s", k,
				       strerror(errno));
			fs_write_file(fd, &f[op.s], seed, 0, FS_MAX_BLOCKS, src);
			if (fsync(fd) < 0 || close(fd) < 0)
				cr_die("op %" PRIu64 ": fsync: %s", k,
				       strerror(errno));
			if (op.kind == FS_REPLACE &&
			    renameat(dfd, "tmp", dfd, src) < 0)
				cr_die("op %" PRIu64 ": rename: %s", k,
				       strerror(errno));
			break;
		case FS_OVERWRITE:
			fd = openat(dfd, src, O_WRONLY);
			if (fd < 0)
				cr_die("op %" PRIu64 ": open %s: %s", k, src,
				       strerror(errno));
			fs_write_file(fd, &f[op.s], seed, op.a, op.nb, src);
			if (fsync(fd) < 0 || close(fd) < 0)
				cr_die("op %" PRIu64 ": fsync: %s", k,
				       strerror(errno));
			break;
		case FS_RENAME:
			if (renameat(dfd, src, dfd, dst) < 0)
				cr_die("op %" PRIu64 ": rename: %s", k,
				       strerror(errno));
			break;
		case FS_DELETE:
			if (unlinkat(dfd, src, 0) < 0)
				cr_die("op %" PRIu64 ": unlink: %s", k,
				       strerror(errno));
			break;
		}
		if (op.kind != FS_OVERWRITE && fsync(dfd) < 0)
			cr_die("op %" PRIu64 ": fsync of the directory: %s", k,
			       strerror(errno));
		cr_log(logfd, argv[optind + 2], k);
	}
	close(logfd);
	close(dfd);
	return 0;
}

/* Block I of open file FD (zeroes past its end). */
static void fs_read_block(int fd, const char *name, unsigned char *buf,
			  uint32_t i)
{
	ssize_t ret = pread(fd, buf, CR_BLOCK, (off_t)i * CR_BLOCK);

	if (ret < 0)
		cr_die("read %s: %s", name, strerror(errno));
	memset(buf + ret, 0, CR_BLOCK - (size_t)ret);
}

/* Does open file FD of SIZE bytes hold exactly state F? */
static bool fs_exact(int fd, const char *name, off_t size,
		     const struct fs_file *f, uint64_t seed,
		     unsigned char *got, unsigned char *want)
{
	uint32_t i;

	if (!f->exists || size != (off_t)f->size)
		return false;
	for (i = 0; i < fs_nblocks(f->size); i++) {
		fs_read_block(fd, name, got, i);
		fs_block(want, f, seed, i);
		if (memcmp(got, want, CR_BLOCK))
			return false;
	}
	return true;
}

/*
 * Does the file NAME hold state A or state B (NULL: A only)?  With MIX
 * (an overwrite or a create in flight), per sector A's or B's content
 * (see cr_sectors_of()), zeroes where A had no data, the size anywhere
 * from A's to B's.  An
 * absent file matches an absent state.  What was found in WHY.
 */
static bool fs_match(int dfd, const char *name, const struct fs_file *a,
		     const struct fs_file *b, bool mix, uint64_t seed,
		     char *why, size_t whylen)
{
	unsigned char *got = cr_alloc(CR_BLOCK), *want = cr_alloc(CR_BLOCK);
	unsigned char *want2 = cr_alloc(CR_BLOCK), *zero = calloc(1, CR_BLOCK);
	uint32_t lo, hi, i;
	struct stat st;
	bool ok = false;
	int fd;

	if (!zero)
		cr_die("out of memory");
	fd = openat(dfd, name, O_RDONLY);
	if (fd < 0) {
		if (errno != ENOENT)
			cr_die("open %s: %s", name, strerror(errno));
		ok = !a->exists || (b && !b->exists);
		snprintf(why, whylen, "absent");
		goto out;
	}
	if (fstat(fd, &st) < 0)
		cr_die("stat %s: %s", name, strerror(errno));
	snprintf(why, whylen, "size %lld, content of neither state",
		 (long long)st.st_size);
	if (!mix) {
			ok = fs_exact(fd, name, st.st_size, a, seed, got, want) ||
		     (b && fs_exact(fd, name, st.st_size, b, seed, got, want));
		goto out_close;
	}
	lo = a->exists ? a->size : 0;
	hi = b->size;
	if (st.st_size < (off_t)lo || st.st_size > (off_t)hi) {
		snprintf(why, whylen, "size %lld outside %u..%u",
			 (long long)st.st_size, lo, hi);
		goto out_close;
	}
	for (i = 0; i < fs_nblocks((uint32_t)st.st_size); i++) {
		/* What lies past the end of the file reads as zeroes. */
		size_t in = (uint64_t)st.st_size - (uint64_t)i * CR_BLOCK;

		if (in > CR_BLOCK)
			in = CR_BLOCK;
		fs_read_block(fd, name, got, i);
		fs_block(want, a, seed, i);
		memset(want + in, 0, CR_BLOCK - in);
		fs_block(want2, b, seed, i);
		memset(want2 + in, 0, CR_BLOCK - in);
		/* Each sector old or new, or zeroes where A had no data. */
		if (!cr_sectors_of(got, want, want2,
				   i >= fs_nblocks(lo) ? zero : NULL)) {
			char d[160];

			cr_describe(got, d, sizeof(d));
			snprintf(why, whylen, "size %lld, block %u: %s",
				 (long long)st.st_size, i, d);
			goto out_close;
		}
	}
	ok = true;
out_close:
	close(fd);
out:
	free(got);
	free(want);
	free(want2);
	free(zero);
	return ok;
}

static void fs_describe_state(char *out, size_t len, const struct fs_file *f)
{
	if (!f->exists)
		snprintf(out, len, "absent");
	else
		snprintf(out, len, "size %u", f->size);
}

static int cr_fsverify(int argc, char **argv)
{
	struct fs_file f[FS_SLOTS], g[FS_SLOTS];
	uint64_t seed, durable, k;
	unsigned int i, bad = 0, nfiles = 0;
	struct fs_op op;
	struct dirent *de;
	DIR *d;
	int dfd;

	if (argc != 4)
		cr_die("usage: fsverify DIR SEED LOG");
	seed = cr_parse_u64(argv[2], "seed");
	durable = cr_read_log(argv[3]);
	memset(f, 0, sizeof(f));
	for (k = 1; k <= durable; k++) {
		fs_plan(&op, f, seed, k);
		fs_apply(f, &op, k);
	}
	/* g: the state after the operation that may have been in flight. */
	memcpy(g, f, sizeof(g));
	fs_plan(&op, f, seed, durable + 1);
	fs_apply(g, &op, durable + 1);

	dfd = open(argv[1], O_RDONLY | O_DIRECTORY);
	if (dfd < 0)
		cr_die("open %s: %s", argv[1], strerror(errno));
	d = fdopendir(dup(dfd));
	if (!d)
		cr_die("opendir %s: %s", argv[1], strerror(errno));
	while ((de = readdir(d))) {
		unsigned int slot;
		char c;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, "lost+found") ||
		    !strcmp(de->d_name, "tmp"))
			continue;
		if (sscanf(de->d_name, "f%2u%c", &slot, &c) == 1 &&
		    slot < FS_SLOTS && strlen(de->d_name) == 3) {
			nfiles++;
			continue;
		}
		printf("BAD: unexpected name '%s'\n", de->d_name);
		bad++;
	}
	closedir(d);
	for (i = 0; i < FS_SLOTS; i++) {
		bool touched = i == op.s || (op.kind == FS_RENAME && i == op.t);
		char name[16], why[200], want[40], want2[40];
		bool ok;

		fs_name(name, sizeof(name), i);
		if (!touched) {
			ok = fs_match(dfd, name, &f[i], NULL, false, seed, why,
				      sizeof(why));
		} else if (op.kind == FS_RENAME) {
			/* Both names together: before or after, atomically. */
			char wt[200];
			bool before, after;

			if (i != op.s)
				continue;
			fs_name(name, sizeof(name), op.t);
			before = fs_match(dfd, name, &f[op.t], NULL, false,
					  seed, wt, sizeof(wt));
			after = fs_match(dfd, name, &g[op.t], NULL, false,
					 seed, wt, sizeof(wt));
			fs_name(name, sizeof(name), op.s);
			before = before && fs_match(dfd, name, &f[op.s], NULL,
						    false, seed, why,
						    sizeof(why));
			after = after && fs_match(dfd, name, &g[op.s], NULL,
						  false, seed, why,
						  sizeof(why));
			ok = before || after;
			if (!ok)
				snprintf(name, sizeof(name), "f%02u->f%02u",
					 op.s, op.t);
		} else {
			ok = fs_match(dfd, name, &f[i], &g[i],
				      op.kind == FS_OVERWRITE ||
				      op.kind == FS_CREATE, seed, why,
				      sizeof(why));
		}
		if (ok)
			continue;
		bad++;
		fs_describe_state(want, sizeof(want), &f[i]);
		fs_describe_state(want2, sizeof(want2), &g[i]);
		printf("BAD %s: want %s%s%s%s%s, found %s\n", name, want,
		       touched ? " or (in-flight " : "",
		       touched ? fs_kind_name[op.kind] : "",
		       touched ? ") " : "", touched ? want2 : "", why);
	}
	close(dfd);
	printf("%s: durable operation %" PRIu64 ", in flight: %s; %u files, %u BAD\n",
	       argv[1], durable, fs_kind_name[op.kind], nfiles, bad);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		cr_die("usage: fill|write|verify ...");
	if (!strcmp(argv[1], "fill"))
		return cr_fill(argc - 1, argv + 1);
	if (!strcmp(argv[1], "write"))
		return cr_write(argc - 1, argv + 1);
	if (!strcmp(argv[1], "verify"))
		return cr_verify(argc - 1, argv + 1);
	if (!strcmp(argv[1], "replay"))
		return cr_replay(argc - 1, argv + 1);
	if (!strcmp(argv[1], "fswrite"))
		return cr_fswrite(argc - 1, argv + 1);
	if (!strcmp(argv[1], "fsverify"))
		return cr_fsverify(argc - 1, argv + 1);
	cr_die("unknown mode '%s'", argv[1]);
}
