// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl info: describe a qcow2 image with the same fields, JSON key names
 * and key order as `qemu-img info`, so scripts written for one work with
 * the other and the two can be diffed in tests.
 *
 * The key order is not alphabetical or the schema order: it is the order
 * in which qemu-img 7.2 happens to print them, reproduced literally.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "crypto.h"
#include "image_io.h"
#include "qimg_journal_fmt.h"

/* Bound on one snapshot table entry: fixed part, extra data, two names. */
#define INFO_MAX_SNAP_EXTRA	0x100000U

static struct json_object *jstr(const char *s)
{
	return json_object_new_string(s);
}

static struct json_object *jbool(u64 bits)
{
	return json_object_new_boolean(bits != 0);
}

static struct json_object *ju64(u64 v)
{
	return v > INT64_MAX ? json_object_new_uint64(v) :
			       json_object_new_int64((int64_t)v);
}

static int read_snapshots(struct qimgctl_image *img, struct json_object *arr)
{
	const struct qimg_header *h = &img->h;
	struct qimg_err err = { "" };
	struct qimg_disk_snapshot d;
	struct qimg_snapshot s;
	u64 off = h->snapshots_offset, len;
	u8 *buf;
	u32 i;
	int ret;

	for (i = 0; i < h->nb_snapshots; i++) {
		struct json_object *o;

		ret = qimgctl_pread(img->fd, &d, sizeof(d), off);
		if (ret) {
			qimgctl_err("%s: reading snapshot %u: %s", img->path,
				    i, strerror(-ret));
			return ret;
		}
		if (be32_to_cpu(d.extra_data_size) > INFO_MAX_SNAP_EXTRA) {
			qimgctl_err("%s: snapshot %u: extra data too large (%u bytes)",
				    img->path, i, be32_to_cpu(d.extra_data_size));
			return -EUCLEAN;
		}
		len = sizeof(d) + be32_to_cpu(d.extra_data_size) +
		      be16_to_cpu(d.id_str_size) + be16_to_cpu(d.name_size);
		/* The last entry may lack its padding (QEMU omits it). */
		if (off >= img->file_size || len > img->file_size - off) {
			qimgctl_err("%s: snapshot %u extends past the end of the file",
				    img->path, i);
			return -EUCLEAN;
		}
		buf = malloc(len);
		if (!buf) {
			qimgctl_err("%s: out of memory", img->path);
			return -ENOMEM;
		}
		ret = qimgctl_pread(img->fd, buf, len, off);
		if (ret) {
			qimgctl_err("%s: reading snapshot %u: %s", img->path,
				    i, strerror(-ret));
			free(buf);
			return ret;
		}
		ret = qimg_snapshot_decode(&h->geom, buf, len, img->file_size,
					   &s, &err);
		free(buf);
		if (ret) {
			qimgctl_err("%s: snapshot %u: %s", img->path, i,
				    err.msg);
			return ret;
		}
		if (!s.entry_len || s.entry_len > len + 7) {
			qimgctl_err("%s: snapshot %u: bad entry length",
				    img->path, i);
			return -EUCLEAN;
		}
		off += s.entry_len;

		o = json_object_new_object();
		if (s.icount != (u64)-1)
			json_object_object_add(o, "icount", ju64(s.icount));
		json_object_object_add(o, "vm-clock-nsec",
				       ju64(s.vm_clock_nsec % 1000000000ULL));
		json_object_object_add(o, "name", jstr(s.name));
		json_object_object_add(o, "date-sec", ju64(s.date_sec));
		json_object_object_add(o, "date-nsec", ju64(s.date_nsec));
		json_object_object_add(o, "vm-clock-sec",
				       ju64(s.vm_clock_nsec / 1000000000ULL));
		json_object_object_add(o, "id", jstr(s.id_str));
		json_object_object_add(o, "vm-state-size",
				       ju64(s.vm_state_size));
		json_object_array_add(arr, o);
	}
	return 0;
}

static int info_bitmap(void *ctx, const struct qimg_bitmap *b)
{
	struct json_object *arr = ctx, *o, *flags;

	o = json_object_new_object();
	flags = json_object_new_array();
	if (b->flags & QIMG_BITMAP_IN_USE)
		json_object_array_add(flags, jstr("in-use"));
	if (b->flags & QIMG_BITMAP_AUTO)
		json_object_array_add(flags, jstr("auto"));
	json_object_object_add(o, "flags", flags);
	json_object_object_add(o, "name", jstr(b->name));
	json_object_object_add(o, "granularity",
			       ju64(1ULL << (b->granularity_bits & 63)));
	json_object_array_add(arr, o);
	return 0;
}

static int read_bitmaps(struct qimgctl_image *img, struct json_object *arr)
{
	return qimgctl_bitmaps_each(img, info_bitmap, arr);
}

/*
 * The metadata journal of an image with an allocated journal area (an
 * image that only asks for one shows nothing, as with qemu-img): its size,
 * whether journal valid vouches for it and, when it is dirty, what the
 * shared scan finds to replay.
 */
static struct json_object *journal_info(struct qimgctl_image *img)
{
	const struct qimg_header *h = &img->h;
	bool dirty = h->incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY;
	struct qimg_err err = { "" };
	struct json_object *j;
	struct qimg_jrnl_scan s;
	int ret;

	j = json_object_new_object();
	json_object_object_add(j, "size", ju64(h->journal_size));
	json_object_object_add(j, "valid", jbool(h->autoclear_features &
						 QIMG_AUTOCLEAR_JOURNAL_VALID));
	json_object_object_add(j, "dirty", jbool(dirty));
	if (!dirty)
		return j;
	ret = qimgctl_jrnl_scan(img->fd, h, img->file_size, &s, &err);
	if (ret) {
		json_object_object_add(j, "error",
				       jstr(ret == -EUCLEAN ? err.msg :
					    strerror(-ret)));
		return j;
	}
	json_object_object_add(j, "transactions", ju64(s.ntx));
	json_object_object_add(j, "first-sequence", ju64(s.first_seq));
	json_object_object_add(j, "last-sequence", ju64(s.last_seq));
	json_object_object_add(j, "torn", jbool(s.torn));
	return j;
}

static struct json_object *format_specific(struct qimgctl_image *img,
					   int *err)
{
	const struct qimg_header *h = &img->h;
	struct json_object *fs, *data, *bm;

	data = json_object_new_object();
	json_object_object_add(data, "compat",
			       jstr(h->version >= 3 ? "1.1" : "0.10"));
	json_object_object_add(data, "compression-type",
			       jstr(h->compression_type == QIMG_COMPRESSION_ZSTD ?
				    "zstd" : "zlib"));
	if (h->version >= 3) {
		json_object_object_add(data, "lazy-refcounts",
				       jbool(h->compatible_features &
					     QIMG_COMPAT_LAZY_REFCOUNTS));
		if (h->has_bitmaps_ext && h->nb_bitmaps) {
			bm = json_object_new_array();
			json_object_object_add(data, "bitmaps", bm);
			*err = read_bitmaps(img, bm);
			if (*err)
				goto fail;
		}
	}
	json_object_object_add(data, "refcount-bits",
			       ju64(1ULL << h->refcount_order));
	if (h->crypt_method) {
		struct json_object *enc = qimgctl_crypto_info(img, err);

		if (!enc)
			goto fail;
		json_object_object_add(data, "encrypt", enc);
	}
	if (h->version >= 3) {
		if (h->has_data_file) {
			json_object_object_add(data, "data-file",
					       jstr(h->data_file));
		}
		if (h->incompatible_features & QIMG_INCOMPAT_DATA_FILE) {
			json_object_object_add(data, "data-file-raw",
					       jbool(h->autoclear_features &
						     QIMG_AUTOCLEAR_DATA_RAW));
		}
		json_object_object_add(data, "corrupt",
				       jbool(h->incompatible_features &
					     QIMG_INCOMPAT_CORRUPT));
		json_object_object_add(data, "extended-l2",
				       jbool(h->geom.ext_l2));
		if (h->has_journal_ext && h->journal_offset)
			json_object_object_add(data, "journal",
					       journal_info(img));
	}
	fs = json_object_new_object();
	json_object_object_add(fs, "type", jstr("qcow2"));
	json_object_object_add(fs, "data", data);
	return fs;
fail:
	json_object_put(data);
	return NULL;
}

/* Allocated bytes of @path, 0 if it cannot be looked at. */
static u64 allocated_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return 0;
	return (u64)st.st_blocks * 512;
}

static struct json_object *build_info(struct qimgctl_image *img, int *err)
{
	const struct qimg_header *h = &img->h;
	struct json_object *o, *snaps, *fs;
	u64 actual = allocated_size(img->path);
	char *full;

	*err = 0;
	o = json_object_new_object();
	if (h->nb_snapshots) {
		snaps = json_object_new_array();
		json_object_object_add(o, "snapshots", snaps);
		*err = read_snapshots(img, snaps);
		if (*err)
			goto fail;
	}
	if (h->backing_file[0] && h->backing_fmt[0])
		json_object_object_add(o, "backing-filename-format",
				       jstr(h->backing_fmt));
	json_object_object_add(o, "virtual-size", ju64(h->size));
	json_object_object_add(o, "filename", jstr(img->path));
	json_object_object_add(o, "cluster-size", ju64(h->geom.cluster_size));
	json_object_object_add(o, "format", jstr("qcow2"));
	/* Like qemu-img 7.2, only the image file itself is counted. */
	json_object_object_add(o, "actual-size", ju64(actual));
	fs = format_specific(img, err);
	if (!fs)
		goto fail;
	json_object_object_add(o, "format-specific", fs);
	if (h->backing_file[0]) {
		full = qimgctl_path_combine(img->path, h->backing_file);
		if (!full) {
			*err = -ENOMEM;
			qimgctl_err("out of memory");
			goto fail;
		}
		json_object_object_add(o, "full-backing-filename", jstr(full));
		free(full);
		if (h->crypt_method)
			json_object_object_add(o, "encrypted", jbool(1));
		json_object_object_add(o, "backing-filename",
				       jstr(h->backing_file));
	}
	else if (h->crypt_method) {
		json_object_object_add(o, "encrypted", jbool(1));
	}
	json_object_object_add(o, "dirty-flag",
			       jbool(h->incompatible_features &
				     QIMG_INCOMPAT_DIRTY));
	return o;
fail:
	json_object_put(o);
	return NULL;
}

/*
 * What qemu-img reports for a QED image: no format-specific part, and a
 * backing format only when the image names one (raw).  dirty-flag is
 * false even with need-check set: that is what qemu-img 7.2 prints.
 */
static struct json_object *build_qed_info(struct qimgctl_node *n, int *err)
{
	const struct qimgctl_qed *q = n->qed;
	struct json_object *o = json_object_new_object();
	char *full;

	*err = 0;
	if (q->backing[0] && q->h.backing_raw)
		json_object_object_add(o, "backing-filename-format",
				       jstr("raw"));
	json_object_object_add(o, "virtual-size", ju64(q->h.image_size));
	json_object_object_add(o, "filename", jstr(n->path));
	json_object_object_add(o, "cluster-size", ju64(q->h.cluster_size));
	json_object_object_add(o, "format", jstr("qed"));
	json_object_object_add(o, "actual-size",
			       ju64(allocated_size(n->path)));
	if (q->backing[0]) {
		full = qimgctl_path_combine(n->path, q->backing);
		if (!full) {
			*err = -ENOMEM;
			qimgctl_err("out of memory");
			json_object_put(o);
			return NULL;
		}
		json_object_object_add(o, "full-backing-filename", jstr(full));
		free(full);
		json_object_object_add(o, "backing-filename",
				       jstr(q->backing));
	}
	json_object_object_add(o, "dirty-flag", jbool(0));
	return o;
}

/* What qemu-img reports for a raw file in a backing chain. */
static struct json_object *build_raw_info(struct qimgctl_node *n)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "virtual-size", ju64(n->length));
	json_object_object_add(o, "filename", jstr(n->path));
	json_object_object_add(o, "format", jstr("raw"));
	json_object_object_add(o, "actual-size",
			       ju64(allocated_size(n->path)));
	json_object_object_add(o, "dirty-flag", jbool(0));
	return o;
}

static const char *jget_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static u64 jget_u64(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	return json_object_get_uint64(v);
}

/* qemu's generic QAPI dump: "key: value", dashes shown as spaces. */
static void human_dump(struct json_object *o, int indent);

static void human_scalar(struct json_object *v)
{
	if (json_object_is_type(v, json_type_boolean))
		fputs(json_object_get_boolean(v) ? "true" : "false", stdout);
	else if (json_object_is_type(v, json_type_int))
		printf("%" PRId64, json_object_get_int64(v));
	else
		fputs(json_object_get_string(v), stdout);
}

static bool composite(struct json_object *v)
{
	return json_object_is_type(v, json_type_object) ||
	       json_object_is_type(v, json_type_array);
}

/* The "journal" entry of the human output, on one line. */
static void human_journal(struct json_object *j, int indent)
{
	const char *e = jget_str(j, "error");
	u64 n;

	printf("%*sjournal: %" PRIu64 " bytes, ", indent * 4, "",
	       (uint64_t)jget_u64(j, "size"));
	if (!json_object_get_boolean(json_object_object_get(j, "dirty"))) {
		printf("clean%s\n",
		       json_object_get_boolean(json_object_object_get(j, "valid")) ?
		       "" : ", not valid");
		return;
	}
	if (e) {
		printf("dirty, damaged (%s)\n", e);
		return;
	}
	n = jget_u64(j, "transactions");
	printf("dirty, %" PRIu64 " transaction%s", (uint64_t)n,
	       n == 1 ? "" : "s");
	if (n)
		printf(" (sequence %" PRIu64 "..%" PRIu64 ")",
		       (uint64_t)jget_u64(j, "first-sequence"),
		       (uint64_t)jget_u64(j, "last-sequence"));
	printf(" not checkpointed%s\n",
	       json_object_get_boolean(json_object_object_get(j, "torn")) ?
	       ", then a torn one" : "");
}

static void human_dump(struct json_object *o, int indent)
{
	size_t i, n;

	if (json_object_is_type(o, json_type_array)) {
		n = json_object_array_length(o);
		for (i = 0; i < n; i++) {
			struct json_object *v = json_object_array_get_idx(o, i);

			printf("%*s[%zu]:", indent * 4, "", i);
			if (composite(v)) {
				putchar('\n');
				human_dump(v, indent + 1);
			} else {
				putchar(' ');
				human_scalar(v);
				putchar('\n');
			}
		}
		return;
	}
	json_object_object_foreach(o, key, val) {
		char name[64];
		char *p;

		if (indent == 1 && !strcmp(key, "journal") &&
		    json_object_is_type(val, json_type_object)) {
			human_journal(val, indent);
			continue;
		}
		snprintf(name, sizeof(name), "%s", key);
		for (p = name; *p; p++)
			if (*p == '-')
				*p = ' ';
		printf("%*s%s:", indent * 4, "", name);
		if (composite(val)) {
			putchar('\n');
			human_dump(val, indent + 1);
		} else {
			putchar(' ');
			human_scalar(val);
			putchar('\n');
		}
	}
}

static void human_snapshot(struct json_object *s)
{
	char date[32] = "", clk[48], icount[32] = "", vmsize[32];
	time_t t = (time_t)jget_u64(s, "date-sec");
	u64 secs = jget_u64(s, "vm-clock-sec");
	u64 ns = jget_u64(s, "vm-clock-nsec");
	struct json_object *ic;
	struct tm tm;

	if (localtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(clk, sizeof(clk), "%02" PRIu64 ":%02u:%02u.%03u",
		 (uint64_t)(secs / 3600), (unsigned int)(secs / 60 % 60),
		 (unsigned int)(secs % 60), (unsigned int)(ns / 1000000));
	if (json_object_object_get_ex(s, "icount", &ic))
		snprintf(icount, sizeof(icount), "%" PRIu64,
			 json_object_get_uint64(ic));
	qimgctl_size_str(jget_u64(s, "vm-state-size"), vmsize, sizeof(vmsize));
	printf("%-9s %-16s %8s%20s%13s%11s\n", jget_str(s, "id"),
	       jget_str(s, "name"), vmsize, date, clk, icount);
}

static void print_human(struct json_object *o)
{
	struct json_object *snaps, *fs, *data;
	const char *bf, *full, *fmt;
	char vs[32], ds[32];
	size_t i, n;

	qimgctl_size_str(jget_u64(o, "virtual-size"), vs, sizeof(vs));
	qimgctl_size_str(jget_u64(o, "actual-size"), ds, sizeof(ds));
	printf("image: %s\nfile format: %s\n"
	       "virtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n",
	       jget_str(o, "filename"), jget_str(o, "format"), vs,
	       (uint64_t)jget_u64(o, "virtual-size"), ds);
	if (json_object_object_get_ex(o, "encrypted", NULL))
		printf("encrypted: yes\n");
	if (json_object_object_get_ex(o, "cluster-size", NULL))
		printf("cluster_size: %" PRIu64 "\n",
		       (uint64_t)jget_u64(o, "cluster-size"));
	if (json_object_get_boolean(json_object_object_get(o, "dirty-flag")))
		printf("cleanly shut down: no\n");
	bf = jget_str(o, "backing-filename");
	if (bf) {
		full = jget_str(o, "full-backing-filename");
		printf("backing file: %s", bf);
		if (full && strcmp(bf, full))
			printf(" (actual path: %s)", full);
		putchar('\n');
		fmt = jget_str(o, "backing-filename-format");
		if (fmt)
			printf("backing file format: %s\n", fmt);
	}
	if (json_object_object_get_ex(o, "snapshots", &snaps)) {
		printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID",
		       "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
		n = json_object_array_length(snaps);
		for (i = 0; i < n; i++)
			human_snapshot(json_object_array_get_idx(snaps, i));
	}
	if (json_object_object_get_ex(o, "format-specific", &fs) &&
	    json_object_object_get_ex(fs, "data", &data)) {
		printf("Format specific information:\n");
		human_dump(data, 1);
	}
}

int qimgctl_cmd_info(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'O' },
		{ "backing-chain", no_argument, NULL, 'B' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qimgctl_node *top, *n;
	struct json_object *o, *list;
	bool json = false, chain = false;
	unsigned int flags = QIMGCTL_OPEN_META | QIMGCTL_CHAIN_QED;
	size_t i;
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hf:U", lopts, NULL)) != -1) {
		switch (c) {
		case 'B':
			chain = true;
			break;
		case 'U':
			flags |= QIMGCTL_OPEN_SHARE;
			break;
		case 'j':
			json = true;
			break;
		case 'f':
			if (qimgctl_want_format(optarg, &flags))
				return 1;
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
		case 'h':
			qimgctl_usage(stdout, "info");
			return 0;
		default:
			qimgctl_opt_err("info", c, argv);
			return 1;
		}
	}
	if (qimgctl_one_file("info", argc, argv))
		return 1;
	/* Backing files are opened only when they are to be shown. */
	ret = qimgctl_chain_open(&top, argv[optind], NULL,
				 flags | (chain ? 0 : QIMGCTL_CHAIN_NO_BACKING));
	if (ret)
		return 1;
	list = json_object_new_array();
	for (n = top; n; n = n->backing) {
		o = n->raw ? build_raw_info(n) :
		    n->qed ? build_qed_info(n, &ret) : build_info(&n->img, &ret);
		if (!o) {
			json_object_put(list);
			qimgctl_chain_close(top);
			return 1;
		}
		json_object_array_add(list, o);
	}
	qimgctl_chain_close(top);
	if (json && chain) {
		qimgctl_json_print(stdout, list);
	} else if (json) {
		qimgctl_json_print(stdout, json_object_array_get_idx(list, 0));
	} else {
		for (i = 0; i < json_object_array_length(list); i++) {
			if (i)
				putchar('\n');
			print_human(json_object_array_get_idx(list, i));
		}
	}
	json_object_put(list);
	return 0;
}
