// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl amend: change the compatibility level, the lazy_refcounts
 * feature, the refcount width and the virtual size of a detached qcow2
 * image, as `qemu-img amend -o` does (size as `resize`, shrinking
 * included).
 *
 * compat=1.1 from 0.10 rewrites the header as version 3.  compat=0.10
 * from 1.1 first turns every zero cluster into what version 2 can say
 * (unallocated when there is no backing file, else a cluster of zeroes),
 * flushes (image_rw.h: data, refcounts, L2, L1), and only then rewrites
 * the header as version 2, so an interruption leaves a valid v3 image.
 * refcount_bits builds new refcount structures after the end of the file
 * and switches the header to them (qimgw_set_refcount_order()).
 */
#include <errno.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_rw.h"

struct amend_opts {
	const char *file;
	int version;		/* 0: unchanged */
	int refcount_order;	/* -1: unchanged */
	int lazy;		/* -1: unchanged */
	bool has_size;
	uint64_t size;
};

static int parse_onoff(const char *key, const char *v, int *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
		*out = 1;
		return 0;
	}
	if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
		*out = 0;
		return 0;
	}
	qimgctl_err("Parameter '%s' expects 'on' or 'off'", key);
	return -EINVAL;
}

/* Options qemu accepts only when creating an image. */
static bool create_only(const char *key)
{
	static const char *const keys[] = {
		"cluster_size", "preallocation", "extended_l2",
		"compression_type", "encrypt.format", "encryption", NULL,
	};
	int i;

	for (i = 0; keys[i]; i++)
		if (!strcmp(key, keys[i]))
			return true;
	return false;
}

static int apply(struct amend_opts *o, const char *key, const char *val)
{
	if (create_only(key)) {
		qimgctl_err("Invalid parameter '%s' (this option is only supported for image creation)",
			    key);
		return -EINVAL;
	}
	if (!val) {
		qimgctl_err("Invalid parameter '%s' (expected key=value)", key);
		return -EINVAL;
	}
	if (!strcmp(key, "compat")) {
		if (!strcmp(val, "0.10") || !strcmp(val, "v2")) {
			o->version = 2;
		} else if (!strcmp(val, "1.1") || !strcmp(val, "v3")) {
			o->version = 3;
		} else {
			qimgctl_err("Invalid compatibility level: '%s'", val);
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "lazy_refcounts"))
		return parse_onoff(key, val, &o->lazy);
	if (!strcmp(key, "refcount_bits")) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(val, &end, 10);
		if (errno || *end || end == val || !v || (v & (v - 1)) ||
		    v > 64) {
			qimgctl_err("Refcount width must be a power of two and may not exceed 64 bits");
			return -EINVAL;
		}
		for (o->refcount_order = 0; (1UL << o->refcount_order) < v;
		     o->refcount_order++)
			;
		return 0;
	}
	if (!strcmp(key, "size")) {
		if (qimgctl_parse_size(val, &o->size)) {
			qimgctl_err("Parameter 'size' expects a size");
			return -EINVAL;
		}
		o->has_size = true;
		return 0;
	}
	/* As qemu: the backing file is rebase's business. */
	if (!strcmp(key, "backing_file") || !strcmp(key, "backing_fmt")) {
		qimgctl_err("%s: Cannot amend the backing file (use 'qimgctl rebase' instead)",
			    o->file);
		return -ENOTSUP;
	}
	if (!strcmp(key, "data_file") || !strcmp(key, "data_file_raw")) {
		qimgctl_err("%s: %s can only be set for images that use an external data file",
			    o->file, !strcmp(key, "data_file") ?
			    "data-file" : "data-file-raw");
		return -EINVAL;
	}
	qimgctl_err("Invalid parameter '%s'", key);
	return -EINVAL;
}

static int apply_cb(void *ctx, char *key, char *val)
{
	return apply(ctx, key, val);
}

static int downgrade_ok(const struct qimgw *w)
{
	const struct qimg_header *h = w->h;
	const char *why = NULL;

	if (h->refcount_order != 4)
		why = "compat=0.10 requires refcount_bits=16";
	else if (h->incompatible_features & QIMG_INCOMPAT_EXTL2)
		why = "Cannot downgrade an image with extended L2 entries";
	else if (h->compression_type != QIMG_COMPRESSION_ZLIB)
		why = "Cannot downgrade an image with a compression type other than zlib";
	else if (h->has_bitmaps_ext)
		why = "Cannot downgrade an image with bitmaps";
	else if (h->nb_snapshots)
		why = "Internal snapshots prevent downgrade of image";
	if (why)
		qimgctl_err("%s: %s", w->img.path, why);
	return why ? -EOPNOTSUPP : 0;
}

static int amend(struct amend_opts *o)
{
	struct qimg_header nh;
	struct qimgw w;
	bool lazy, cur_lazy;
	int version, ret;

	ret = qimgw_open(&w, o->file);
	if (ret)
		return ret;
	/* qemu-img opens the backing chain too, and fails as it fails. */
	ret = qimgctl_backing_chain_usable(o->file, false);
	if (ret) {
		qimgw_close(&w, false);
		return ret;
	}
	nh = *w.h;
	version = o->version ? o->version : (int)w.h->version;
	cur_lazy = w.h->compatible_features & QIMG_COMPAT_LAZY_REFCOUNTS;
	lazy = o->lazy >= 0 ? o->lazy : cur_lazy;
	/* As qemu: only a change is checked; a downgrade drops the bit. */
	if (lazy && !cur_lazy && version < 3) {
		qimgctl_err("%s: Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
			    o->file);
		ret = -EINVAL;
		goto out;
	}
	if (o->refcount_order >= 0 && o->refcount_order != 4 && version < 3) {
		qimgctl_err("%s: Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)",
			    o->file);
		ret = -EINVAL;
		goto out;
	}
	/* An upgrade first: a new refcount width needs a v3 header. */
	if (version > (int)w.h->version) {
		nh.version = 3;
		nh.header_length = QIMG_V3_HEADER_LEN_COMP;
		if (lazy)
			nh.compatible_features |= QIMG_COMPAT_LAZY_REFCOUNTS;
		ret = qimgw_rewrite_header(&w, &nh);
		if (ret)
			goto out;
	}
	if (o->refcount_order >= 0) {
		ret = qimgw_set_refcount_order(&w, (u32)o->refcount_order);
		if (ret)
			goto out;
	}
	/* As qemu: the size after these, before a downgrade. */
	if (o->has_size && o->size != w.h->size) {
		ret = qimgctl_resize_writer(&w, o->file, o->size);
		if (ret)
			goto out;
	}
	nh = *w.h;
	if (version < (int)w.h->version) {
		ret = downgrade_ok(&w);
		if (!ret)
			ret = qimgw_expand_zeros(&w,
						 w.h->backing_file[0] != '\0');
		if (ret)
			goto out;
		nh.version = 2;
		nh.header_length = QIMG_V2_HEADER_LEN;
		nh.incompatible_features = 0;
		nh.compatible_features = 0;
		nh.autoclear_features = 0;
	} else if (lazy) {
		nh.compatible_features |= QIMG_COMPAT_LAZY_REFCOUNTS;
	} else {
		nh.compatible_features &= ~QIMG_COMPAT_LAZY_REFCOUNTS;
	}
	if (nh.version != w.h->version ||
	    nh.compatible_features != w.h->compatible_features)
		ret = qimgw_rewrite_header(&w, &nh);
out:
	ret = ret ? ret : qimgw_flush(&w);
	qimgw_close(&w, false);
	return ret;
}

int qimgctl_cmd_amend(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct amend_opts o = { .lazy = -1, .refcount_order = -1 };
	char *opts[32];
	int nopts = 0, c, i, ret = 0;
	const char *fmt = NULL;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hpqf:o:", lopts, NULL)) != -1) {
		switch (c) {
		case 'p':
		case 'q':
			break;	/* nothing is printed on success anyway */
		case 'f':
			fmt = optarg;
			break;
		case 'o':
			if (nopts == (int)(sizeof(opts) / sizeof(opts[0]))) {
				qimgctl_usage_err("amend", "too many -o options");
				return 1;
			}
			opts[nopts++] = optarg;
			break;
		case 'h':
			qimgctl_usage(stdout, "amend");
			return 0;
		default:
			qimgctl_opt_err("amend", c, argv);
			return 1;
		}
	}
	if (qimgctl_one_file("amend", argc, argv))
		return 1;
	o.file = argv[optind];
	if (!nopts) {
		qimgctl_err("Must specify options (-o)");
		return 1;
	}
	if (fmt && qimgctl_want_qcow2(fmt))
		return 1;
	for (i = 0; i < nopts && !ret; i++) {
		char *copy = strdup(opts[i]);

		if (!copy) {
			qimgctl_err("out of memory");
			return 1;
		}
		ret = qimgctl_opts_each(copy, apply_cb, &o);
		free(copy);
	}
	if (!ret)
		ret = amend(&o);
	return ret ? 1 : 0;
}
