// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl compare: do two images (qcow2 or raw, through their backing
 * chains) show the guest the same bytes?  Output, exit codes and the
 * offsets named follow qemu-img compare: the walk goes over the block
 * status of both chains, ranges that read as zeroes in both are not read,
 * ranges allocated on one side only are checked for zeroes, and a mismatch
 * is reported at the first 512-byte sector that differs.
 *
 * Exit: 0 identical, 1 different, 2 an image could not be opened, 3 block
 * status failed (corrupt tables), 4 a read failed; 1 for a bad command line.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest.h"

#define CMP_BUF		(2u << 20)	/* qemu-img's I/O chunk */
#define SECTOR		512u

struct cmp_side {
	const char *name;
	struct qimgctl_node *top;
	u64 size;
};

/*
 * qemu-img's simple progress meter, in single precision as there: a line
 * "    (P/100%)\r" when the percentage moved by more than 2 points, is 0 or
 * reached 100; a newline at the end.
 */
struct cmp_progress {
	bool on;
	float current;
	float last;
};

static void progress_print(struct cmp_progress *p, float delta)
{
	float cur;

	if (!p->on)
		return;
	cur = p->current + delta / 100 * 100;
	if (cur > 100)
		cur = 100;
	p->current = cur;
	if (cur > p->last + 2.0f || cur < p->last - 2.0f || cur == 0 ||
	    cur == 100) {
		p->last = cur;
		printf("    (%3.2f/100%%)\r", (double)cur);
		fflush(stdout);
	}
}

/* The first 512-byte sector of @buf that is not all zero, or -1. */
static s64 first_nonzero(const u8 *buf, u64 len)
{
	u64 i, j;

	for (i = 0; i < len; i += SECTOR) {
		u64 end = i + SECTOR < len ? i + SECTOR : len;

		for (j = i; j < end; j++)
			if (buf[j])
				return (s64)i;
	}
	return -1;
}

/* The first 512-byte sector where @a and @b differ, or -1. */
static s64 first_diff(const u8 *a, const u8 *b, u64 len)
{
	u64 i, n;

	for (i = 0; i < len; i += SECTOR) {
		n = len - i < SECTOR ? len - i : SECTOR;
		if (memcmp(a + i, b + i, n))
			return (s64)i;
	}
	return -1;
}

static int read_side(struct cmp_side *s, u64 off, u8 *buf, u64 len)
{
	/* The reader said what failed, naming the image, in one line. */
	if (qimgctl_guest_read(s->top, off, buf, len))
		return 4;
	return 0;
}

static int check_zero(struct cmp_side *s, u64 off, u64 len, u8 *buf,
		      bool quiet)
{
	s64 idx;
	int ret;

	ret = read_side(s, off, buf, len);
	if (ret)
		return ret;
	idx = first_nonzero(buf, len);
	if (idx >= 0) {
		if (!quiet)
			printf("Content mismatch at offset %" PRIu64 "!\n",
			       (uint64_t)(off + (u64)idx));
		return 1;
	}
	return 0;
}

static int side_status(struct cmp_side *s, u64 off, u64 *pnum)
{
	int st = qimgctl_chain_status(s->top, off, s->size - off, pnum);

	/* Corrupt tables: already said in one line naming the image. */
	if (st < 0)
		return -1;
	return st;
}

static int compare(struct cmp_side *a, struct cmp_side *b, bool strict,
		   bool quiet, struct cmp_progress *prog)
{
	u64 common = a->size < b->size ? a->size : b->size;
	u64 base = a->size > b->size ? a->size : b->size;
	u64 off = 0, p1, p2, chunk;
	u8 *buf1, *buf2;
	int st1, st2, ret = 0;
	s64 idx;

	progress_print(prog, 0);
	if (strict && a->size != b->size) {
		if (!quiet)
			printf("Strict mode: Image size mismatch!\n");
		return 1;
	}
	buf1 = malloc(CMP_BUF);
	buf2 = malloc(CMP_BUF);
	if (!buf1 || !buf2) {
		qimgctl_err("out of memory");
		ret = 2;
		goto out;
	}
	while (off < common) {
		st1 = side_status(a, off, &p1);
		if (st1 < 0) {
			ret = 3;
			goto out;
		}
		st2 = side_status(b, off, &p2);
		if (st2 < 0) {
			ret = 3;
			goto out;
		}
		chunk = p1 < p2 ? p1 : p2;
		if (strict && st1 != st2) {
			if (!quiet)
				printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n",
				       (uint64_t)off);
			ret = 1;
			goto out;
		}
		if ((st1 & QIMGCTL_BS_ZERO) && (st2 & QIMGCTL_BS_ZERO)) {
			/* Zeroes on both sides: nothing to read. */
		} else if ((st1 & QIMGCTL_BS_ALLOCATED) ==
			   (st2 & QIMGCTL_BS_ALLOCATED)) {
			if (st1 & QIMGCTL_BS_ALLOCATED) {
				if (chunk > CMP_BUF)
					chunk = CMP_BUF;
				ret = read_side(a, off, buf1, chunk);
				if (!ret)
					ret = read_side(b, off, buf2, chunk);
				if (ret)
					goto out;
				idx = first_diff(buf1, buf2, chunk);
				if (idx >= 0) {
					if (!quiet)
						printf("Content mismatch at offset %" PRIu64 "!\n",
						       (uint64_t)(off + (u64)idx));
					ret = 1;
					goto out;
				}
			}
		} else {
			if (chunk > CMP_BUF)
				chunk = CMP_BUF;
			ret = check_zero(st1 & QIMGCTL_BS_ALLOCATED ? a : b,
					 off, chunk, buf1, quiet);
			if (ret)
				goto out;
		}
		off += chunk;
		progress_print(prog, (float)chunk / base * 100);
	}
	if (a->size != b->size) {
		struct cmp_side *over = a->size > b->size ? a : b;

		if (!quiet)
			printf("Warning: Image size mismatch!\n");
		while (off < base) {
			st1 = side_status(over, off, &chunk);
			if (st1 < 0) {
				ret = 3;
				goto out;
			}
			if ((st1 & QIMGCTL_BS_ALLOCATED) &&
			    !(st1 & QIMGCTL_BS_ZERO)) {
				if (chunk > CMP_BUF)
					chunk = CMP_BUF;
				ret = check_zero(over, off, chunk, buf1, quiet);
				if (ret)
					goto out;
			}
			off += chunk;
			progress_print(prog, (float)chunk / base * 100);
		}
	}
	if (!quiet)
		printf("Images are identical.\n");
	ret = 0;
out:
	free(buf1);
	free(buf2);
	return ret;
}

/* -f/-F: qcow2, raw, or NULL to probe. */
static int open_side(struct cmp_side *s, const char *path, const char *fmt,
		     unsigned int flags)
{
	int fd;

	s->name = path;
	/* Name the file the user gave when it cannot be opened at all. */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		qimgctl_err("Could not open '%s': %s", path, strerror(errno));
		return -1;
	}
	close(fd);
	if (qimgctl_chain_open(&s->top, path, fmt ? fmt : "", flags))
		return -1;
	if (!s->top->raw && s->top->img.h.crypt_method) {
		qimgctl_err("%s: encrypted images are not supported by compare",
			    path);
		return -1;
	}
	s->size = s->top->length;
	return 0;
}

int qimgctl_cmd_compare(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "a-format", required_argument, NULL, 'f' },
		{ "b-format", required_argument, NULL, 'F' },
		{ "strict", no_argument, NULL, 's' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "progress", no_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmp_side a = { 0 }, b = { 0 };
	struct cmp_progress prog = { 0 };
	const char *fmt[2] = { NULL, NULL };
	unsigned int flags = 0;
	bool strict = false, quiet = false;
	int c, i, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hf:F:sUpq", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
		case 'F':
			i = c == 'F';
			if (strcmp(optarg, "qcow2") && strcmp(optarg, "raw")) {
				qimgctl_err("only the qcow2 and raw formats are supported, not '%s'",
					    optarg);
				return 2;
			}
			fmt[i] = optarg;
			break;
		case 's':
			strict = true;
			break;
		case 'U':
			flags |= QIMGCTL_OPEN_SHARE;
			break;
		case 'p':
			prog.on = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "compare");
			return 0;
		default:
			qimgctl_opt_err("compare", c, argv);
			return 1;
		}
	}
	if (quiet)
		prog.on = false;
	if (argc - optind != 2) {
		qimgctl_usage_err("compare", "expecting two image file names");
		return 1;
	}
	if (open_side(&a, argv[optind], fmt[0], flags) ||
	    open_side(&b, argv[optind + 1], fmt[1], flags))
		ret = 2;
	else
		ret = compare(&a, &b, strict, quiet, &prog);
	/* The meter's end, whatever happened (qemu-img starts it first). */
	if (prog.on)
		putchar('\n');
	fflush(stdout);
	qimgctl_chain_close(a.top);
	qimgctl_chain_close(b.top);
	return ret;
}
