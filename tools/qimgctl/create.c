// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl create: make an empty qcow2 image the way `qemu-img create -f
 * qcow2` does, so either tool can open what the other made.
 *
 * Layout: cluster 0 holds the header, then the refcount table, the
 * refcount blocks and the L1 table follow in that order; every one of
 * those clusters has refcount 1 and nothing else is allocated.  For the
 * usual sizes that is qemu's layout exactly (table at cluster 1, block at
 * cluster 2, L1 at cluster 3).
 *
 * All options are validated, and the backing file looked at, before the
 * output file is touched, so a failed create never clobbers a file.
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

#include "image_io.h"
#include "prealloc.h"
#include "qimg_journal_fmt.h"

struct create_opts {
	const char *file;
	uint64_t size;
	bool has_size;
	u64 cluster_size;
	u32 refcount_bits;
	bool lazy;
	bool has_lazy;
	int version;		/* 2 or 3 */
	const char *compat_str;	/* as given, for the "Formatting" line */
	bool ext_l2;
	u8 compression;
	const char *backing;
	const char *backing_fmt;
	const char *prealloc;
	enum qimgctl_prealloc prealloc_mode;
	bool unsafe;
	bool quiet, progress;
	/* journal=on: the qimg journal extension asking for one (offset 0) */
	bool journal;
	bool has_journal_size;
	uint64_t journal_size;
	/* Made for convert (no -u to suggest). */
	bool for_convert;
	/* The backing chain, open (unlocked, as qemu-img) until we are done. */
	struct qimgctl_node *chain;
};

static int parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

/* One "key=value" of -o; @val may be NULL for a bare key. */
static int apply_opt(struct create_opts *o, char *key, char *val)
{
	uint64_t v;
	bool b;

	if (!val) {
		qimgctl_err("%s: Invalid parameter '%s' (expected key=value)",
			    o->file, key);
		return -EINVAL;
	}
	if (!strcmp(key, "size")) {
		if (qimgctl_parse_size(val, &o->size)) {
			qimgctl_err("%s: Invalid image size '%s'", o->file, val);
			return -EINVAL;
		}
		o->has_size = true;
	} else if (!strcmp(key, "cluster_size")) {
		if (qimgctl_parse_size(val, &v) || !qimgctl_is_pow2(v) ||
		    v < (1U << QIMG_MIN_CLUSTER_BITS) ||
		    v > (1U << QIMG_MAX_CLUSTER_BITS)) {
			qimgctl_err("%s: Cluster size must be a power of two between 512 and 2048k",
				    o->file);
			return -EINVAL;
		}
		o->cluster_size = v;
	} else if (!strcmp(key, "refcount_bits")) {
		char *end;

		errno = 0;
		v = strtoull(val, &end, 10);
		if (errno || *end || end == val || !qimgctl_is_pow2(v) || v > 64) {
			qimgctl_err("%s: Refcount width must be a power of two and may not exceed 64 bits",
				    o->file);
			return -EINVAL;
		}
		o->refcount_bits = (u32)v;
	} else if (!strcmp(key, "lazy_refcounts")) {
		if (parse_bool(val, &b)) {
			qimgctl_err("%s: Parameter 'lazy_refcounts' expects 'on' or 'off'",
				    o->file);
			return -EINVAL;
		}
		o->lazy = b;
		o->has_lazy = true;
	} else if (!strcmp(key, "extended_l2")) {
		if (parse_bool(val, &b)) {
			qimgctl_err("%s: Parameter 'extended_l2' expects 'on' or 'off'",
				    o->file);
			return -EINVAL;
		}
		o->ext_l2 = b;
	} else if (!strcmp(key, "journal")) {
		if (parse_bool(val, &b)) {
			qimgctl_err("%s: Parameter 'journal' expects 'on' or 'off'",
				    o->file);
			return -EINVAL;
		}
		o->journal = b;
	} else if (!strcmp(key, "journal_size")) {
		if (qimgctl_parse_size(val, &o->journal_size)) {
			qimgctl_err("%s: Invalid journal_size '%s'", o->file,
				    val);
			return -EINVAL;
		}
		o->has_journal_size = true;
	} else if (!strcmp(key, "compat")) {
		if (!strcmp(val, "0.10") || !strcmp(val, "v2")) {
			o->version = 2;
		} else if (!strcmp(val, "1.1") || !strcmp(val, "v3")) {
			o->version = 3;
		} else {
			qimgctl_err("%s: Parameter 'compat' does not accept value '%s' (use 0.10, v2, 1.1 or v3)",
				    o->file, val);
			return -EINVAL;
		}
		o->compat_str = val;
	} else if (!strcmp(key, "compression_type")) {
		if (!strcmp(val, "zlib")) {
			o->compression = QIMG_COMPRESSION_ZLIB;
		} else if (!strcmp(val, "zstd")) {
			o->compression = QIMG_COMPRESSION_ZSTD;
		} else {
			qimgctl_err("%s: Parameter 'compression_type' does not accept value '%s'",
				    o->file, val);
			return -EINVAL;
		}
	} else if (!strcmp(key, "preallocation")) {
		if (!strcmp(val, "off")) {
			o->prealloc_mode = QIMGCTL_PREALLOC_OFF;
		} else if (!strcmp(val, "metadata")) {
			o->prealloc_mode = QIMGCTL_PREALLOC_METADATA;
		} else if (!strcmp(val, "falloc")) {
			o->prealloc_mode = QIMGCTL_PREALLOC_FALLOC;
		} else if (!strcmp(val, "full")) {
			o->prealloc_mode = QIMGCTL_PREALLOC_FULL;
		} else {
			qimgctl_err("%s: Parameter 'preallocation' does not accept value '%s' (off, metadata, falloc or full)",
				    o->file, val);
			return -EINVAL;
		}
		o->prealloc = val;
	} else if (!strcmp(key, "backing_file")) {
		o->backing = val;
	} else if (!strcmp(key, "backing_fmt")) {
		o->backing_fmt = val;
	} else {
		qimgctl_err("%s: Invalid parameter '%s'", o->file, key);
		return -EINVAL;
	}
	return 0;
}

static int apply_opt_cb(void *ctx, char *key, char *val)
{
	return apply_opt(ctx, key, val);
}

static int apply_opt_string(struct create_opts *o, char *s)
{
	return qimgctl_opts_each(s, apply_opt_cb, o);
}

/* The element of @chain that is the file @st describes, if any. */
static const struct qimgctl_node *chain_has(const struct qimgctl_node *chain,
					    const struct stat *st)
{
	for (; chain; chain = chain->backing)
		if (chain->dev == st->st_dev && chain->ino == st->st_ino)
			return chain;
	return NULL;
}

/*
 * Refuse to make @o->file an image of its own backing chain: creating it
 * would destroy a file the new image reads from.  Files are compared by
 * device and inode, so other names (hard or symbolic links) for the same
 * file count too.  @st: the output file as it is now (or NULL).
 */
static int self_backing(const struct create_opts *o, const struct stat *st,
			const char *backing_path)
{
	const struct qimgctl_node *n;
	struct stat bst;

	if (!strcmp(backing_path, o->file)) {
		n = NULL;
	} else if (!st) {
		return 0;
	} else if (o->chain) {
		n = chain_has(o->chain, st);
		if (!n)
			return 0;
	} else if (stat(backing_path, &bst) == 0 &&
		   bst.st_dev == st->st_dev && bst.st_ino == st->st_ino) {
		n = NULL;	/* -u: only the named backing file is known */
	} else {
		return 0;
	}
	if (!n || n == o->chain)
		qimgctl_err("%s: Trying to create an image with the same file as its backing file '%s'",
			    o->file, o->backing);
	else
		qimgctl_err("%s: Trying to create an image that is in its own backing chain (as '%s')",
			    o->file, n->path);
	return -ELOOP;
}

/*
 * Open the backing chain (it must exist unless -u) and take the virtual
 * size of its top.  Like qemu-img: the whole chain, without locks (force
 * share, no I/O), so an image in use can get an overlay.
 */
static int open_backing(struct create_opts *o, uint64_t *size)
{
	struct stat st;
	char *path;
	int ret;

	path = qimgctl_path_combine(o->file, o->backing);
	if (!path) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	if (!o->unsafe) {
		ret = qimgctl_chain_open(&o->chain, path, o->backing_fmt,
					 QIMGCTL_OPEN_META | QIMGCTL_OPEN_SHARE |
					 QIMGCTL_CHAIN_HEADERS);
		if (ret)
			goto out;
		/*
		 * qemu-img cannot open a journal-dirty image of the chain
		 * (unless -u, which does not open it).
		 */
		ret = qimgctl_chain_refuse_dirty(o->chain,
						 o->for_convert ? "" :
						 ", or create with -u",
						 "%s: Could not open backing image '%s'",
						 o->file, o->backing);
		if (ret)
			goto out;
		if (size)
			*size = o->chain->length;
	}
	ret = self_backing(o, stat(o->file, &st) == 0 ? &st : NULL, path);
out:
	free(path);
	return ret;
}

static int validate(struct create_opts *o)
{
	u64 l1;

	if (o->version == 2) {
		if (o->refcount_bits != 16) {
			qimgctl_err("%s: Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)",
				    o->file);
			return -EINVAL;
		}
		if (o->lazy) {
			qimgctl_err("%s: Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
				    o->file);
			return -EINVAL;
		}
		if (o->ext_l2) {
			qimgctl_err("%s: Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
				    o->file);
			return -EINVAL;
		}
		if (o->compression != QIMG_COMPRESSION_ZLIB) {
			qimgctl_err("%s: Compression type other than zlib requires compatibility level 1.1 or above (use compat=1.1 or greater)",
				    o->file);
			return -EINVAL;
		}
		if (o->journal) {
			qimgctl_err("%s: A qimg journal is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
				    o->file);
			return -EINVAL;
		}
	}
	if (o->has_journal_size && !o->journal) {
		qimgctl_err("%s: Parameter 'journal_size' needs journal=on",
			    o->file);
		return -EINVAL;
	}
	if (o->journal) {
		struct qimg_err err = { "" };

		if (!o->has_journal_size)
			o->journal_size = QIMG_JRNL_DEFAULT_SIZE;
		if (qimg_jrnl_size_check(o->journal_size,
					 (u32)qimgctl_log2(o->cluster_size),
					 &err)) {
			qimgctl_err("%s: Invalid journal_size: %s", o->file,
				    err.msg);
			return -EINVAL;
		}
	}
	if (o->ext_l2 && o->cluster_size < 16384) {
		qimgctl_err("%s: Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
			    o->file);
		return -EINVAL;
	}
	if (o->backing && o->prealloc_mode != QIMGCTL_PREALLOC_OFF &&
	    !o->ext_l2) {
		qimgctl_err("%s: Backing file and preallocation can only be used at the same time if extended_l2 is on",
			    o->file);
		return -EINVAL;
	}
	if (o->backing_fmt && !o->backing) {
		qimgctl_err("%s: Backing format specified without a backing file",
			    o->file);
		return -EINVAL;
	}
	if (o->backing) {
		if (!o->backing[0]) {
			qimgctl_err("%s: Empty backing file name", o->file);
			return -EINVAL;
		}
		if (strlen(o->backing) > QIMG_MAX_BACKING_NAME) {
			qimgctl_err("%s: Backing file name too long", o->file);
			return -EINVAL;
		}
		if (!o->backing_fmt) {
			qimgctl_err("%s: Backing file specified without backing format (use -F qcow2 or -F raw)",
				    o->file);
			return -EINVAL;
		}
		if (strcmp(o->backing_fmt, "qcow2") &&
		    strcmp(o->backing_fmt, "raw")) {
			qimgctl_err("%s: Backing format '%s' is not supported (only qcow2 and raw)",
				    o->file, o->backing_fmt);
			return -EINVAL;
		}
		/* With an explicit size the backing file is still checked. */
		if (open_backing(o, o->has_size ? NULL : &o->size))
			return -EINVAL;
		if (!o->unsafe)
			o->has_size = true;
	}
	if (!o->has_size) {
		qimgctl_err("%s: Image creation needs a size parameter", o->file);
		return -EINVAL;
	}
	if (o->size % 512) {
		qimgctl_err("%s: Image size must be a multiple of 512 bytes",
			    o->file);
		return -EINVAL;
	}
	if (o->size > QIMG_MAX_VIRTUAL_SIZE) {
		qimgctl_err("%s: Image size is too large (the maximum is %llu bytes)",
			    o->file, (unsigned long long)QIMG_MAX_VIRTUAL_SIZE);
		return -EFBIG;
	}
	l1 = qimg_l1_entries_for((u32)qimgctl_log2(o->cluster_size), o->ext_l2,
				 o->size);
	if (l1 * 8 > QIMG_MAX_L1_BYTES) {
		qimgctl_err("%s: The image size is too large for file format 'qcow2' (try using a larger cluster size)",
			    o->file);
		return -EFBIG;
	}
	return 0;
}

static void print_formatting(const struct create_opts *o)
{
	printf("Formatting '%s', fmt=qcow2 cluster_size=%" PRIu64
	       " extended_l2=%s", o->file, (uint64_t)o->cluster_size,
	       o->ext_l2 ? "on" : "off");
	if (o->prealloc)
		printf(" preallocation=%s", o->prealloc);
	printf(" compression_type=%s size=%" PRIu64,
	       o->compression == QIMG_COMPRESSION_ZSTD ? "zstd" : "zlib",
	       (uint64_t)o->size);
	if (o->backing)
		printf(" backing_file=%s", o->backing);
	if (o->backing_fmt)
		printf(" backing_fmt=%s", o->backing_fmt);
	if (o->compat_str)
		printf(" compat=%s", o->compat_str);
	printf(" lazy_refcounts=%s refcount_bits=%u",
	       o->lazy ? "on" : "off", o->refcount_bits);
	if (o->journal)
		printf(" journal=on journal_size=%" PRIu64,
		       (uint64_t)o->journal_size);
	printf("\n");
}

/* Fill the header fields for a new empty image (no offsets yet). */
static int fill_header(const struct create_opts *o, struct qimg_header *h)
{
	struct qimg_err err = { "" };
	int ret;

	memset(h, 0, sizeof(*h));
	h->version = (u32)o->version;
	h->cluster_bits = (u32)qimgctl_log2(o->cluster_size);
	h->size = o->size;
	h->refcount_order = (u32)qimgctl_log2(o->refcount_bits);
	h->header_length = o->version >= 3 ? QIMG_V3_HEADER_LEN_COMP :
					     QIMG_V2_HEADER_LEN;
	h->compression_type = o->compression;
	if (o->ext_l2)
		h->incompatible_features |= QIMG_INCOMPAT_EXTL2;
	if (o->compression != QIMG_COMPRESSION_ZLIB)
		h->incompatible_features |= QIMG_INCOMPAT_COMPRESSION;
	if (o->lazy)
		h->compatible_features |= QIMG_COMPAT_LAZY_REFCOUNTS;
	/* Asked for, not allocated: attach allocates the area. */
	if (o->journal) {
		h->has_journal_ext = true;
		h->journal_offset = 0;
		h->journal_size = o->journal_size;
	}
	if (o->backing) {
		snprintf(h->backing_file, sizeof(h->backing_file), "%s",
			 o->backing);
		h->backing_file_size = (u32)strlen(o->backing);
		snprintf(h->backing_fmt, sizeof(h->backing_fmt), "%s",
			 o->backing_fmt);
	}
	ret = qimg_geom_init(h, &err);
	if (ret) {
		qimgctl_err("%s: %s", o->file, err.msg[0] ? err.msg :
			    "invalid image parameters");
		return ret;
	}
	h->l1_size = (u32)qimg_l1_entries_for(h->cluster_bits, o->ext_l2,
					      o->size);
	return 0;
}

static int create(int argc, char **argv, bool for_convert)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct create_opts o = {
		.cluster_size = 65536,
		.refcount_bits = 16,
		.version = 3,
		.for_convert = for_convert,
	};
	char **optstr = calloc((size_t)argc + 1, sizeof(char *));
	char **copies = calloc((size_t)argc + 1, sizeof(char *));
	struct qimg_header h;
	u64 cs, l1_bytes, l1_cl, rt_cl, rb_cl, total, need_rb, need_rt, i;
	u64 rt_off, rb_off, l1_off, end;
	u8 *hdr = NULL, *rt = NULL, *rb = NULL;
	int nopt = 0, c, ret = -EINVAL, fd = -1;
	const char *fmt = "qcow2";

	if (!optstr || !copies) {
		qimgctl_err("out of memory");
		free(optstr);
		free(copies);
		return 1;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, ":hqpf:o:b:F:u", lopts,
				NULL)) != -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'o':
			optstr[nopt++] = optarg;
			break;
		case 'b':
			o.backing = optarg;
			break;
		case 'F':
			o.backing_fmt = optarg;
			break;
		case 'u':
			o.unsafe = true;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'p':
			o.progress = true;	/* qimgctl's own (full prealloc) */
			break;
		case 'h':
			qimgctl_usage(stdout, "create");
			ret = 0;
			goto out;
		default:
			qimgctl_opt_err("create", c, argv);
			goto out;
		}
	}
	if (optind >= argc) {
		qimgctl_usage_err("create", "no FILE given");
		goto out;
	}
	if (argc - optind > 2) {
		qimgctl_usage_err("create", "unexpected argument '%s'",
				  argv[optind + 2]);
		goto out;
	}
	o.file = argv[optind];
	if (strcmp(fmt, "qcow2")) {
		qimgctl_err("%s: Unknown or unsupported format '%s' (only qcow2)",
			    o.file, fmt);
		goto out;
	}
	for (c = 0; c < nopt; c++) {
		/*
		 * -o values are split in place and the option values point
		 * into them, so work on copies that live until we return.
		 */
		copies[c] = strdup(optstr[c]);
		if (!copies[c]) {
			qimgctl_err("out of memory");
			goto out;
		}
		if (apply_opt_string(&o, copies[c]))
			goto out;
	}
	if (optind + 1 < argc) {
		if (qimgctl_parse_size(argv[optind + 1], &o.size)) {
			qimgctl_err("%s: Invalid image size specified: '%s' (use a number of bytes with an optional k, M, G, T, P or E suffix)",
				    o.file, argv[optind + 1]);
			goto out;
		}
		o.has_size = true;
	}
	if (validate(&o) || fill_header(&o, &h))
		goto out;

	/*
	 * Size the refcount structures so they cover themselves, the header
	 * and the L1 table: iterate until the counts stop changing.
	 */
	cs = h.geom.cluster_size;
	l1_bytes = (u64)h.l1_size * 8;
	l1_cl = (l1_bytes + cs - 1) / cs;
	rt_cl = 1;
	rb_cl = 1;
	for (;;) {
		total = 1 + rt_cl + rb_cl + l1_cl;
		need_rb = (total + h.geom.rb_entries - 1) / h.geom.rb_entries;
		need_rt = (need_rb * 8 + cs - 1) / cs;
		if (need_rb <= rb_cl && need_rt <= rt_cl)
			break;
		rb_cl = need_rb > rb_cl ? need_rb : rb_cl;
		rt_cl = need_rt > rt_cl ? need_rt : rt_cl;
	}
	rt_off = cs;
	rb_off = rt_off + rt_cl * cs;
	l1_off = rb_off + rb_cl * cs;
	h.refcount_table_offset = rt_off;
	h.refcount_table_clusters = (u32)rt_cl;
	h.l1_table_offset = h.l1_size ? l1_off : 0;

	hdr = malloc(cs);
	rt = calloc(rt_cl, cs);
	rb = calloc(rb_cl, cs);
	if (!hdr || !rt || !rb) {
		qimgctl_err("%s: out of memory", o.file);
		ret = -ENOMEM;
		goto out;
	}
	/*
	 * The backing file name goes right after the header extensions, so
	 * encode once without it to learn where they end.
	 */
	if (o.backing) {
		struct qimg_header tmp = h;

		tmp.backing_file[0] = '\0';
		tmp.backing_file_size = 0;
		ret = qimg_header_encode(&tmp, hdr, cs);
		if (ret < 0)
			goto enc_fail;
		if ((u64)ret + h.backing_file_size > cs) {
			ret = -ENOSPC;
			goto enc_fail;
		}
		h.backing_file_offset = (u64)ret;
	}
	ret = qimg_header_encode(&h, hdr, cs);
	if (ret < 0)
		goto enc_fail;

	for (i = 0; i < rb_cl; i++)
		put_unaligned_be64(rb_off + i * cs, rt + i * 8);
	total = 1 + rt_cl + rb_cl + l1_cl;
	for (i = 0; i < total; i++) {
		ret = qimg_refcount_set(rb + (i / h.geom.rb_entries) * cs,
					h.refcount_order,
					i % h.geom.rb_entries, 1);
		if (ret) {
			qimgctl_err("%s: cannot set a refcount: %s", o.file,
				    strerror(-ret));
			goto out;
		}
	}

	/*
	 * As QEMU does: open without truncating, lock, make sure nobody else
	 * uses the file, and only then empty it.
	 */
	fd = open(o.file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		qimgctl_err("%s: Could not create '%s': %s", o.file, o.file,
			    strerror(errno));
		goto out;
	}
	ret = qimgctl_lock_open_file(fd, o.file, QIMGCTL_OPEN_WRITE);
	if (ret)
		goto out;
	if (o.backing) {
		struct stat st;
		char *bpath = qimgctl_path_combine(o.file, o.backing);

		if (!bpath) {
			qimgctl_err("out of memory");
			ret = -ENOMEM;
			goto out;
		}
		/* Again on what we opened, in case the name moved since. */
		ret = fstat(fd, &st) < 0 ? -errno : self_backing(&o, &st, bpath);
		free(bpath);
		if (ret) {
			if (ret != -ELOOP)
				qimgctl_err("%s: %s", o.file, strerror(-ret));
			goto out;
		}
	}
	if (!o.quiet)
		print_formatting(&o);
	if (ftruncate(fd, 0) < 0) {
		ret = -errno;
		qimgctl_err("%s: Could not empty the file: %s", o.file,
			    strerror(errno));
		goto out;
	}
	if (o.prealloc_mode != QIMGCTL_PREALLOC_OFF) {
		ret = qimgctl_prealloc_create(fd, o.file, &h, o.prealloc_mode,
					      o.progress && !o.quiet);
		goto out;
	}
	ret = qimgctl_pwrite(fd, hdr, cs, 0);
	if (!ret)
		ret = qimgctl_pwrite(fd, rt, rt_cl * cs, rt_off);
	if (!ret)
		ret = qimgctl_pwrite(fd, rb, rb_cl * cs, rb_off);
	/* The L1 table is all zeroes: extending the file writes it. */
	end = h.l1_size ? l1_off + l1_bytes : l1_off;
	if (!ret && ftruncate(fd, (off_t)end) < 0)
		ret = -errno;
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (ret) {
		qimgctl_err("%s: write failed: %s", o.file, strerror(-ret));
		goto out;
	}
	ret = 0;
	goto out;
enc_fail:
	qimgctl_err("%s: cannot encode the header: %s", o.file,
		    ret == -ENOSPC ? "backing file name does not fit in the first cluster" :
		    strerror(-ret));
out:
	if (fd >= 0 && close(fd) < 0 && !ret) {
		qimgctl_err("%s: close: %s", o.file, strerror(errno));
		ret = -EIO;
	}
	qimgctl_chain_close(o.chain);
	free(hdr);
	free(rt);
	free(rb);
	for (c = 0; c < nopt; c++)
		free(copies[c]);
	free(copies);
	free(optstr);
	return ret ? 1 : 0;
}

int qimgctl_cmd_create(int argc, char **argv)
{
	return create(argc, argv, false);
}

int qimgctl_create_for_convert(int argc, char **argv)
{
	return create(argc, argv, true);
}
