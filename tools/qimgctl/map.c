// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl map: how each guest byte range of an image is stored, walking the
 * backing chain, printed like `qemu-img map` so the two can be diffed.
 *
 * The per-offset status follows the qemu block layer's rules: a range
 * that is neither data nor zero in one image is looked up in its backing
 * file (depth + 1); past the end of the backing file, or with no backing
 * file, it reads as zeroes and is reported at the current depth as not
 * present.  Adjacent ranges are merged exactly when qemu-img merges them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_io.h"

struct map_entry {
	u64 start;
	u64 length;
	u64 offset;
	int depth;
	bool present;
	bool zero;
	bool data;
	bool has_offset;
	const char *filename;	/* file holding the data, when has_offset */
};

/* Status of a raw file from its holes, as qemu's file driver sees them. */
static int raw_status(struct qimgctl_node *n, u64 off, u64 max,
		      struct qimgctl_extent *ext)
{
	off_t data, hole;

	memset(ext, 0, sizeof(*ext));
	ext->has_offset = true;
	ext->host_offset = off;
	ext->len = max;
	data = lseek(n->raw_fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		/* ENXIO: a hole up to the end; other errors: assume data. */
		ext->status = errno == ENXIO ? QIMGCTL_ST_ZERO : QIMGCTL_ST_DATA;
		return 0;
	}
	if ((u64)data > off) {
		ext->status = QIMGCTL_ST_ZERO;
		if ((u64)data - off < max)
			ext->len = (u64)data - off;
		return 0;
	}
	hole = lseek(n->raw_fd, (off_t)off, SEEK_HOLE);
	ext->status = QIMGCTL_ST_DATA;
	if (hole > data && (u64)hole - off < max)
		ext->len = (u64)hole - off;
	return 0;
}

static int node_status(struct qimgctl_node *n, u64 off, u64 max,
		       struct qimgctl_extent *ext)
{
	if (max > n->length - off)
		max = n->length - off;
	if (n->raw)
		return raw_status(n, off, max, ext);
	if (n->qed)
		return qimgctl_qed_status(n->qed, off, max, ext);
	return qimgctl_map_status(&n->map, off, max, ext);
}

/*
 * The image file's view of a data extent, asked only of images qemu takes
 * for metadata-preallocated: host bytes in a hole of the file, or past its
 * end, read as zeroes, so qemu reports them as zero (still data, with an
 * offset).  The extent is cut where the file changes between data and
 * hole; a hole reaching the end of the file covers the whole extent.
 * Errors only mean "no extra information", as in qemu.
 */
static void file_status(struct qimgctl_node *n, struct map_entry *e)
{
	u64 host = e->offset, fsize, bytes, pnum;
	off_t data, hole;
	bool zero = false;
	struct stat st;
	int fd = n->img.fd;

	if (n->map.data_path) {
		if (n->data_fd < 0)
			n->data_fd = open(n->map.data_path,
					  O_RDONLY | O_CLOEXEC);
		fd = n->data_fd;
	}
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < 0)
		return;
	fsize = (u64)st.st_size;
	if (host >= fsize) {
		e->zero = true;
		return;
	}
	bytes = e->length;
	if (bytes > fsize - host)
		bytes = fsize - host;
	pnum = bytes;
	data = lseek(fd, (off_t)host, SEEK_DATA);
	if (data < 0) {
		/* ENXIO: a hole up to the end; other errors: assume data. */
		zero = errno == ENXIO;
	} else if ((u64)data > host) {
		zero = true;
		if ((u64)data - host < pnum)
			pnum = (u64)data - host;
	} else if ((u64)data == host) {
		hole = lseek(fd, (off_t)host, SEEK_HOLE);
		if (hole > data && (u64)hole - host < pnum)
			pnum = (u64)hole - host;
	}
	if (host + pnum == fsize && (!pnum || zero)) {
		e->zero = true;
		return;
	}
	e->length = pnum;
	e->zero = zero;
}

static int block_status(struct qimgctl_node *top, u64 off, u64 max,
			struct map_entry *e)
{
	struct qimgctl_node *n = top;
	struct qimgctl_extent ext;
	int depth = 0, ret;

	for (;;) {
		ret = node_status(n, off, max, &ext);
		if (ret)
			return ret;
		max = ext.len;
		if (ext.status != QIMGCTL_ST_UNALLOC) {
			e->present = true;
			e->zero = ext.status == QIMGCTL_ST_ZERO;
			e->data = ext.status == QIMGCTL_ST_DATA;
			break;
		}
		if (!n->backing || off >= n->backing->length) {
			/* Nothing below: reads as zeroes, but not present. */
			e->present = false;
			e->zero = true;
			e->data = false;
			break;
		}
		n = n->backing;
		depth++;
	}
	e->start = off;
	e->length = max;
	e->depth = depth;
	e->has_offset = ext.has_offset;
	e->offset = ext.host_offset;
	if (!n->raw && !n->qed && e->data && e->has_offset) {
		if (!n->prealloc_known) {
			n->prealloc = qimgctl_meta_prealloc(&n->img);
			n->prealloc_known = true;
		}
		if (n->prealloc)
			file_status(n, e);
	}
	if (!ext.has_offset)
		e->filename = NULL;
	else if (!n->raw && !n->qed && n->map.data_path)
		e->filename = n->map.data_path;
	else
		e->filename = n->path;
	return 0;
}

static bool mergeable(const struct map_entry *a, const struct map_entry *b)
{
	if (!a->length)
		return false;
	if (a->zero != b->zero || a->data != b->data ||
	    a->depth != b->depth || a->present != b->present ||
	    !a->filename != !b->filename || a->has_offset != b->has_offset)
		return false;
	if (a->filename && strcmp(a->filename, b->filename))
		return false;
	if (a->has_offset && a->offset + a->length != b->offset)
		return false;
	return true;
}

static int dump(bool json, const struct map_entry *e, struct map_entry *next)
{
	if (!json) {
		if (e->data && !e->has_offset) {
			qimgctl_err("File contains external, encrypted or compressed clusters.");
			return -EOPNOTSUPP;
		}
		if (e->data && !e->zero)
			printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
			       (uint64_t)e->start, (uint64_t)e->length,
			       (uint64_t)(e->has_offset ? e->offset : 0),
			       e->filename ? e->filename : "");
		/*
		 * The human format does not tell zero from unallocated, so
		 * treat them alike and let them coalesce.
		 */
		if (next && (!next->data || next->zero)) {
			next->data = false;
			next->zero = true;
		}
		return 0;
	}
	printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
	       ", \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
	       (uint64_t)e->start, (uint64_t)e->length, e->depth,
	       e->present ? "true" : "false", e->zero ? "true" : "false",
	       e->data ? "true" : "false");
	if (e->has_offset)
		printf(", \"offset\": %" PRIu64, (uint64_t)e->offset);
	putchar('}');
	if (next)
		puts(",");
	return 0;
}

int qimgctl_cmd_map(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'O' },
		{ "format", required_argument, NULL, 'f' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "start-offset", required_argument, NULL, 'S' },
		{ "max-length", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct map_entry curr = { 0 }, next;
	unsigned int flags = QIMGCTL_CHAIN_QED;
	struct qimgctl_node *top;
	bool json = false, has_max = false;
	uint64_t start = 0, max_len = 0;
	u64 size, off;
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hf:U", lopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'U':
			flags |= QIMGCTL_OPEN_SHARE;
			break;
		case 'O':
			if (!strcmp(optarg, "json")) {
				json = true;
			} else if (!strcmp(optarg, "human")) {
				json = false;
			} else {
				qimgctl_err("--output must be used with human or json as argument.");
				return 1;
			}
			break;
		case 'f':
			if (qimgctl_want_format(optarg, &flags))
				return 1;
			break;
		case 'S':
		case 'L':
			/* qemu-img takes offsets up to INT64_MAX. */
			if (qimgctl_parse_size(optarg, c == 'S' ? &start :
					       &max_len) ||
			    (c == 'S' ? start : max_len) > INT64_MAX) {
				qimgctl_err("Invalid %s specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
					    c == 'S' ? "start offset" :
					    "max length");
				return 1;
			}
			if (c == 'L')
				has_max = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "map");
			return 0;
		default:
			qimgctl_opt_err("map", c, argv);
			return 1;
		}
	}
	if (qimgctl_one_file("map", argc, argv))
		return 1;
	ret = qimgctl_chain_open(&top, argv[optind], NULL, flags);
	if (ret)
		return 1;

	size = top->length;
	/* --max-length bounds the range; past the end nothing is mapped. */
	if (has_max && start + max_len < size)
		size = start + max_len;
	if (json)
		putchar('[');
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to",
		       "File");
	/* Entries are built up until the next one cannot be merged. */
	curr.start = start;
	curr.length = 0;
	while (curr.start + curr.length < size) {
		off = curr.start + curr.length;
		ret = block_status(top, off, size - off, &next);
		if (ret)
			goto out;
		if (curr.length > 0) {
			if (mergeable(&curr, &next)) {
				curr.length += next.length;
				continue;
			}
			ret = dump(json, &curr, &next);
			if (ret)
				goto out;
		}
		curr = next;
	}
	ret = dump(json, &curr, NULL);
	if (json)
		puts("]");
out:
	fflush(stdout);
	qimgctl_chain_close(top);
	return ret ? 1 : 0;
}

/* node_status() for the other commands (see image_io.h). */
int qimgctl_node_status(struct qimgctl_node *n, u64 off, u64 max,
			struct qimgctl_extent *ext)
{
	return node_status(n, off, max, ext);
}
