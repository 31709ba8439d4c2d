// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl measure: how large a new image would get, as qemu-img measure
 * computes it.  "fully allocated" is every piece of metadata a fully
 * preallocated image of that size needs (header, L1, L2, refcount table
 * and blocks, found as a fixed point) plus the data; "required" keeps the
 * same metadata but only the clusters the source has data in (every
 * cluster touched by data, as qemu counts them), or nothing for --size.
 * For a qcow2 v3 source and target, the space its persistent bitmaps need
 * is reported too.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "guest.h"

struct measure_opts {
	bool qcow2;		/* -O qcow2 (default raw) */
	u64 cluster_size;
	u32 refcount_bits;
	int version;
	bool ext_l2;
	bool full;		/* preallocation=falloc|full */
	bool backing;
};

static u64 div_up(u64 a, u64 b)
{
	return (a + b - 1) / b;
}

static u64 round_up(u64 a, u64 b)
{
	return div_up(a, b) * b;
}

static int on_off(const char *key, const char *val, bool *out)
{
	if (!strcmp(val, "on") || !strcmp(val, "yes") || !strcmp(val, "true")) {
		*out = true;
	} else if (!strcmp(val, "off") || !strcmp(val, "no") ||
		   !strcmp(val, "false")) {
		*out = false;
	} else {
		qimgctl_err("Parameter '%s' expects 'on' or 'off'", key);
		return -1;
	}
	return 0;
}

/* One -o key=value for a qcow2 target; keys that do not change sizes pass. */
static int qcow2_opt(struct measure_opts *o, const char *key, const char *val,
		     const char **rb_str)
{
	static const char *const ignored[] = {
		"size", "backing_fmt", "lazy_refcounts", "compression_type",
		"data_file", "data_file_raw", "encrypt.format", "encryption",
		NULL,
	};
	uint64_t v;
	bool b;
	int i;

	if (!strcmp(key, "cluster_size")) {
		if (qimgctl_parse_size(val, &v) || !qimgctl_is_pow2(v) || v < 512 ||
		    v > (2u << 20)) {
			qimgctl_err("Cluster size must be a power of two between 512 and 2048k");
			return -1;
		}
		o->cluster_size = v;
	} else if (!strcmp(key, "refcount_bits")) {
		*rb_str = val;
	} else if (!strcmp(key, "compat")) {
		if (!strcmp(val, "0.10") || !strcmp(val, "v2")) {
			o->version = 2;
		} else if (!strcmp(val, "1.1") || !strcmp(val, "v3")) {
			o->version = 3;
		} else {
			qimgctl_err("Invalid compatibility level: '%s'", val);
			return -1;
		}
	} else if (!strcmp(key, "extended_l2")) {
		if (on_off(key, val, &b))
			return -1;
		o->ext_l2 = b;
	} else if (!strcmp(key, "preallocation")) {
		if (!strcmp(val, "falloc") || !strcmp(val, "full")) {
			o->full = true;
		} else if (!strcmp(val, "off") || !strcmp(val, "metadata")) {
			o->full = false;
		} else {
			qimgctl_err("invalid parameter value: %s", val);
			return -1;
		}
	} else if (!strcmp(key, "backing_file")) {
		o->backing = true;
	} else {
		for (i = 0; ignored[i]; i++)
			if (!strcmp(key, ignored[i]))
				break;
		if (!ignored[i]) {
			qimgctl_err("Invalid parameter '%s'", key);
			return -1;
		}
		if (!strncmp(key, "encrypt", 7) &&
		    (strcmp(key, "encryption") ? strcmp(val, "luks") == 0 ||
		     strcmp(val, "aes") == 0 : on_off(key, val, &b) == 0 && b)) {
			qimgctl_err("measuring encrypted images is not supported");
			return -1;
		}
	}
	return 0;
}

/* Split the -o string in place (",," is a literal comma). */
struct measure_parse {
	struct measure_opts *o;
	const char *rb_str;
};

static int measure_opt(void *ctx, char *key, char *val)
{
	struct measure_parse *p = ctx;

	if (!p->o->qcow2) {
		/* The raw format only knows its size and preallocation. */
		if (strcmp(key, "size") && strcmp(key, "preallocation")) {
			qimgctl_err("Invalid parameter '%s'", key);
			return -1;
		}
		return 0;
	}
	if (!val) {
		qimgctl_err("Invalid parameter '%s'", key);
		return -1;
	}
	return qcow2_opt(p->o, key, val, &p->rb_str) ? -1 : 0;
}

static int parse_opts(struct measure_opts *o, char *s)
{
	struct measure_parse p = { .o = o };
	const char *rb_str;
	uint64_t v;
	char *end;

	if (qimgctl_opts_each(s, measure_opt, &p))
		return -1;
	rb_str = p.rb_str;
	if (!o->qcow2)
		return 0;
	if (rb_str) {
		errno = 0;
		v = strtoull(rb_str, &end, 10);
		if (errno || *end || end == rb_str || !qimgctl_is_pow2(v) || v > 64) {
			qimgctl_err("Refcount width must be a power of two and may not exceed 64 bits");
			return -1;
		}
		if (o->version < 3 && v != 16) {
			qimgctl_err("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
			return -1;
		}
		o->refcount_bits = (u32)v;
	}
	if (o->ext_l2 && o->cluster_size < 16384) {
		qimgctl_err("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
		return -1;
	}
	return 0;
}

/*
 * Refcount table and block clusters for @clusters host clusters, counting
 * the refcount metadata itself: iterate to the fixed point.
 */
static u64 refcount_meta(u64 clusters, u64 cs, u32 order)
{
	u64 per_table = cs / 8, per_block = cs * 8 >> order;
	u64 table = 0, blocks = 0, n = 0, last;

	do {
		last = n;
		blocks = div_up(clusters + table + blocks, per_block);
		table = div_up(blocks, per_table);
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cs;
}

static u64 fully_allocated(u64 size, u64 cs, u32 order, bool ext_l2)
{
	u64 data = round_up(size, cs), meta = cs, l2e = ext_l2 ? 16 : 8;
	u64 nl2e, nl1e;

	nl2e = round_up(data / cs, cs / l2e);
	meta += nl2e * l2e;
	nl1e = round_up(nl2e * l2e / cs, cs / 8);
	meta += nl1e * 8;
	meta += refcount_meta((meta + data) / cs, cs, order);
	return meta + data;
}

struct bitmaps_acc {
	u64 vsize, cs, total, dir_bytes;
};

static int bitmap_size(void *ctx, const struct qimg_bitmap *b)
{
	struct bitmaps_acc *a = ctx;
	u64 bits = div_up(a->vsize, 1ULL << b->granularity_bits);
	u64 clusters = div_up(div_up(bits, 8), a->cs);

	a->total += clusters * a->cs + round_up(clusters * 8, a->cs);
	/* A directory entry of the new image: no extra data. */
	a->dir_bytes += round_up(24 + strlen(b->name), 8);
	return 0;
}

/* Space the persistent bitmaps of @img would take in a new image. */
static int bitmaps_size(struct qimgctl_image *img, u64 vsize, u64 cs, u64 *out)
{
	const struct qimg_header *h = &img->h;
	struct bitmaps_acc a = { .vsize = vsize, .cs = cs };
	int ret;

	*out = 0;
	if (!h->has_bitmaps_ext || !h->nb_bitmaps ||
	    !(h->autoclear_features & QIMG_AUTOCLEAR_BITMAPS))
		return 0;
	ret = qimgctl_bitmaps_each(img, bitmap_size, &a);
	if (!ret)
		*out = a.total + round_up(a.dir_bytes, cs);
	return ret;
}

/* Data clusters of the source, counted as qemu counts them. */
static int source_required(struct qimgctl_node *top, u64 cs, u64 *req)
{
	u64 ssize = top->length, off, pnum = 0;
	int st;

	*req = 0;
	for (off = 0; off < ssize; off += pnum) {
		st = qimgctl_chain_status(top, off, ssize - off, &pnum);
		/* Corrupt tables: said already, in one line naming the image. */
		if (st < 0)
			return -1;
		if (st & QIMGCTL_BS_ZERO)
			continue;
		if ((st & (QIMGCTL_BS_DATA | QIMGCTL_BS_ALLOCATED)) ==
		    (QIMGCTL_BS_DATA | QIMGCTL_BS_ALLOCATED)) {
			pnum = round_up(off + pnum, cs) - off;
			*req += off % cs + pnum;
		}
	}
	return 0;
}

int qimgctl_cmd_measure(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "output", required_argument, NULL, 'j' },
		{ "size", required_argument, NULL, 'S' },
		{ "format", required_argument, NULL, 'f' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct measure_opts o = {
		.cluster_size = 65536, .refcount_bits = 16, .version = 3,
	};
	const char *fmt = NULL, *out_fmt = "raw", *size_str = NULL;
	char *optstr = NULL;
	struct qimgctl_node *top = NULL;
	unsigned int flags = 0;
	bool json = false, has_bitmaps = false;
	u64 vsize = 0, req = 0, full, bitmaps = 0, l2_tables;
	uint64_t size = 0;
	int c, ret = 1;
	size_t n;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hf:O:o:U", lopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (strcmp(optarg, "qcow2") && strcmp(optarg, "raw")) {
				qimgctl_err("only the qcow2 and raw formats are supported, not '%s'",
					    optarg);
				goto out;
			}
			fmt = optarg;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'o':
			/* Several -o add up, as in qemu-img. */
			n = optstr ? strlen(optstr) + 1 : 0;
			{
				char *s = realloc(optstr, n + strlen(optarg) + 1);

				if (!s) {
					qimgctl_err("out of memory");
					goto out;
				}
				if (n)
					s[n - 1] = ',';
				strcpy(s + n, optarg);
				optstr = s;
			}
			break;
		case 'S':
			if (qimgctl_parse_size(optarg, &size) ||
			    size > INT64_MAX) {
				qimgctl_err("Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
				goto out;
			}
			size_str = optarg;
			break;
		case 'j':
			if (!strcmp(optarg, "json")) {
				json = true;
			} else if (!strcmp(optarg, "human")) {
				json = false;
			} else {
				qimgctl_err("--output must be used with human or json as argument.");
				goto out;
			}
			break;
		case 'U':
			flags |= QIMGCTL_OPEN_SHARE;
			break;
		case 'h':
			qimgctl_usage(stdout, "measure");
			ret = 0;
			goto out;
		default:
			qimgctl_opt_err("measure", c, argv);
			goto out;
		}
	}
	if (argc - optind > 1) {
		qimgctl_err("At most one filename argument is allowed.");
		goto out;
	}
	if (size_str && optind < argc) {
		qimgctl_err("--size N cannot be used together with a filename.");
		goto out;
	}
	if (!size_str && optind >= argc) {
		qimgctl_err("Either --size N or one filename must be specified.");
		goto out;
	}
	if (!strcmp(out_fmt, "qcow2")) {
		o.qcow2 = true;
	} else if (strcmp(out_fmt, "raw")) {
		qimgctl_err("Block driver '%s' does not support size measurement (qimgctl measures qcow2 and raw)",
			    out_fmt);
		goto out;
	}
	if (optstr && parse_opts(&o, optstr))
		goto out;
	if (o.qcow2) {
		vsize = round_up(size, o.cluster_size);
		l2_tables = div_up(vsize / o.cluster_size,
				   o.cluster_size / (o.ext_l2 ? 16 : 8));
		if (l2_tables * 8 > QIMG_MAX_L1_BYTES) {
			qimgctl_err("The image size is too large (try using a larger cluster size)");
			goto out;
		}
	}
	if (optind < argc) {
		int fd = open(argv[optind], O_RDONLY | O_CLOEXEC);

		if (fd < 0) {
			qimgctl_err("Could not open '%s': %s", argv[optind],
				    strerror(errno));
			goto out;
		}
		close(fd);
		if (qimgctl_chain_open(&top, argv[optind], fmt ? fmt : "",
				       flags))
			goto out;
		if (!top->raw && top->img.h.crypt_method) {
			qimgctl_err("%s: measuring encrypted images is not supported",
				    argv[optind]);
			goto out;
		}
	}
	if (!o.qcow2) {
		req = top ? top->length : round_up(size, 512);
		full = req;
		goto print;
	}
	if (top) {
		vsize = round_up(top->length, o.cluster_size);
		if (o.backing)
			req = vsize;
		else if (source_required(top, o.cluster_size, &req))
			goto out;
	}
	if (o.full)
		req = vsize;
	full = fully_allocated(vsize, o.cluster_size, qimgctl_log2(o.refcount_bits),
			       o.ext_l2);
	req = full - vsize + req;
	has_bitmaps = o.version >= 3 && top && !top->raw &&
		      top->img.h.version >= 3;
	if (has_bitmaps && bitmaps_size(&top->img, top->length,
					o.cluster_size, &bitmaps))
		goto out;
print:
	if (json) {
		struct json_object *obj = json_object_new_object();

		if (has_bitmaps)
			json_object_object_add(obj, "bitmaps",
					       json_object_new_int64((int64_t)bitmaps));
		json_object_object_add(obj, "required",
				       json_object_new_int64((int64_t)req));
		json_object_object_add(obj, "fully-allocated",
				       json_object_new_int64((int64_t)full));
		qimgctl_json_print(stdout, obj);
		json_object_put(obj);
	} else {
		printf("required size: %" PRIu64 "\n", (uint64_t)req);
		printf("fully allocated size: %" PRIu64 "\n", (uint64_t)full);
		if (has_bitmaps)
			printf("bitmaps size: %" PRIu64 "\n", (uint64_t)bitmaps);
	}
	ret = 0;
out:
	fflush(stdout);
	qimgctl_chain_close(top);
	free(optstr);
	return ret;
}
