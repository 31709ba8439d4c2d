// SPDX-License-Identifier: GPL-2.0
/*
 * QED images in qimgctl: opening (header, backing file name, L1 table),
 * the per-offset status `map` walks, and `check` with the counts, output
 * and exit status of `qemu-img check`.
 *
 * Every header field and every table entry goes through the format core
 * (drivers/block/qimg/qimg_qed.c); sizes are bounded by the file before
 * anything is allocated or read.
 *
 * `check` does what QEMU's QED check does, quirks included, because its
 * numbers must be qemu-img's:
 *  - the L1 table's clusters and every L2 table's and data cluster's are
 *    marked used; one marked twice is a corruption (and an L2 table with
 *    such a cluster is not walked);
 *  - an L1 entry that is not a valid table offset, or an L2 entry that is
 *    not a valid cluster offset (0 and 1 are not offsets), is a corruption;
 *  - after a complete walk, every unmarked cluster past the header is a
 *    leak.  QEMU numbers clusters by dividing byte offsets by the cluster
 *    size minus one (block/qed.h, qed_bytes_to_clusters()), which is the
 *    true number only for files smaller than (cluster size - 1) clusters;
 *    beyond that, the numbering skips some and QEMU counts those as
 *    leaked.  qimgctl numbers them the same way, so that it reports what
 *    qemu-img reports.
 * Repair (-r) clears the bad entries (the rest is left as it is: QEMU does
 * not free leaked clusters of QED images), writes the tables back, and
 * clears the need-check flag, as QEMU does when it closes an image it
 * opened for writing; unknown autoclear feature bits are cleared when the
 * image is opened for writing, as QEMU's open does.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_io.h"

/* ------------------------------------------------------------------------ */
/* Opening                                                                  */

static int qed_read_table(struct qimgctl_qed *q, u64 off, u8 *buf,
			  const char *what)
{
	int ret = qimgctl_pread(q->fd, buf, q->h.table_bytes, off);

	if (ret)
		qimgctl_err("%s: reading the %s at %#" PRIx64 ": %s", q->path,
			    what, (uint64_t)off, strerror(-ret));
	return ret;
}

int qimgctl_qed_open(struct qimgctl_qed *q, const char *path,
		     unsigned int flags, bool headers)
{
	bool writable = flags & QIMGCTL_OPEN_WRITE;
	struct qimg_err err = { "" };
	u8 hdr[QIMG_QED_HEADER_LEN], *name = NULL;
	struct stat st;
	int ret;

	memset(q, 0, sizeof(*q));
	q->path = path;
	q->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (q->fd < 0) {
		ret = -errno;
		qimgctl_err("%s: %s", path, strerror(errno));
		return ret;
	}
	/* Like QEMU: lock before reading anything. */
	ret = qimgctl_lock_open_file(q->fd, path, flags);
	if (ret)
		goto fail;
	if (fstat(q->fd, &st) < 0) {
		ret = -errno;
		qimgctl_err("%s: %s", path, strerror(errno));
		goto fail;
	}
	q->file_size = (u64)st.st_size;
	/* A short file reads as zeroes past its end, as in QEMU. */
	ret = qimgctl_pread(q->fd, hdr, sizeof(hdr), 0);
	if (ret) {
		qimgctl_err("%s: read: %s", path, strerror(-ret));
		goto fail;
	}
	ret = qimg_qed_header_decode(hdr, sizeof(hdr), q->file_size, &q->h,
				     &err);
	if (ret) {
		qimgctl_err("%s: %s", path, err.msg);
		goto fail;
	}
	if (q->h.has_backing) {
		name = malloc(q->h.backing_filename_size + 1);
		if (!name) {
			ret = -ENOMEM;
			qimgctl_err("%s: out of memory", path);
			goto fail;
		}
		ret = qimgctl_pread(q->fd, name, q->h.backing_filename_size,
				    q->h.backing_filename_offset);
		if (!ret)
			ret = qimg_qed_backing_name(&q->h, name, q->backing,
						    sizeof(q->backing), &err);
		free(name);
		if (ret) {
			qimgctl_err("%s: %s", path, ret == -EINVAL ? err.msg :
				    strerror(-ret));
			goto fail;
		}
	}
	if (headers)
		return 0;
	ret = qimgctl_qed_read_l1(q);
	if (ret)
		goto fail;
	return 0;
fail:
	qimgctl_qed_close(q);
	return ret;
}

int qimgctl_qed_read_l1(struct qimgctl_qed *q)
{
	if (q->l1)
		return 0;
	/* The table lies inside the file (the header decoder checked). */
	q->l1 = malloc(q->h.table_bytes);
	q->l2 = malloc(q->h.table_bytes);
	if (!q->l1 || !q->l2) {
		free(q->l1);
		free(q->l2);
		q->l1 = NULL;
		q->l2 = NULL;
		qimgctl_err("%s: out of memory", q->path);
		return -ENOMEM;
	}
	q->l2_offset = 0;
	if (qed_read_table(q, q->h.l1_table_offset, q->l1, "L1 table")) {
		free(q->l1);
		free(q->l2);
		q->l1 = NULL;
		q->l2 = NULL;
		return -EIO;
	}
	return 0;
}

void qimgctl_qed_close(struct qimgctl_qed *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	free(q->l1);
	free(q->l2);
	q->l1 = NULL;
	q->l2 = NULL;
	q->l2_offset = 0;
}

/* ------------------------------------------------------------------------ */
/* Mapping                                                                  */

static int qed_load_l2(struct qimgctl_qed *q, u64 off)
{
	int ret;

	if (q->l2_offset == off)
		return 0;
	q->l2_offset = 0;
	ret = qed_read_table(q, off, q->l2, "L2 table");
	if (!ret)
		q->l2_offset = off;
	return ret;
}

int qimgctl_qed_status(struct qimgctl_qed *q, u64 guest, u64 max,
		       struct qimgctl_extent *ext)
{
	const struct qimg_qed_header *h = &q->h;
	struct qimg_err err = { "" };
	struct qimg_qed_l2_entry e;
	u64 span = qimg_qed_l2_span(h), len, in_cl, first, l2_off;
	u32 l1i, l2i, want, run;
	int ret;

	memset(ext, 0, sizeof(*ext));
	/* The callers stay inside the disk; say so if one does not. */
	if (guest >= h->image_size || !max) {
		qimgctl_err("%s: no block status for %" PRIu64 " bytes at offset %#" PRIx64 ": the virtual disk ends at %#" PRIx64,
			    q->path, (uint64_t)max, (uint64_t)guest,
			    (uint64_t)h->image_size);
		return -EINVAL;
	}
	if (!q->l1) {
		qimgctl_err("%s: no block status: the L1 table was not read (opened for its header only)",
			    q->path);
		return -EINVAL;
	}
	/* Like QEMU, one lookup never crosses what one L2 table maps. */
	len = span - (guest & (span - 1));
	if (len > max)
		len = max;
	l1i = qimg_qed_l1_index(h, guest);
	if (l1i >= h->table_entries) {
		qimgctl_err("%s: offset %#" PRIx64 " is beyond the L1 table",
			    q->path, (uint64_t)guest);
		return -EUCLEAN;
	}
	ret = qimg_qed_l1_decode(h, qimg_qed_table_get(q->l1, l1i), &l2_off,
				 &err);
	if (ret) {
		qimgctl_err("%s: L1 entry %u: %s", q->path, l1i, err.msg);
		return -EUCLEAN;
	}
	if (!l2_off) {
		ext->status = QIMGCTL_ST_UNALLOC;
		ext->len = len;
		return 0;
	}
	ret = qed_load_l2(q, l2_off);
	if (ret)
		return ret;
	l2i = qimg_qed_l2_index(h, guest);
	in_cl = guest & (h->cluster_size - 1);
	/* Clusters the range touches; len <= span, so this fits. */
	want = (u32)((in_cl + len + h->cluster_size - 1) >> h->cluster_bits);
	run = qimg_qed_l2_run(h, q->l2, l2i, want, &first);
	ret = qimg_qed_l2_decode(h, first, &e, &err);
	if (ret) {
		qimgctl_err("%s: entry %u of the L2 table at %#" PRIx64 ": %s",
			    q->path, l2i, (uint64_t)l2_off, err.msg);
		return -EUCLEAN;
	}
	if ((u64)run * h->cluster_size - in_cl < len)
		len = (u64)run * h->cluster_size - in_cl;
	ext->len = len;
	switch (e.type) {
	case QIMG_QED_CL_DATA:
		ext->status = QIMGCTL_ST_DATA;
		ext->has_offset = true;
		ext->host_offset = e.host_offset + in_cl;
		break;
	case QIMG_QED_CL_ZERO:
		ext->status = QIMGCTL_ST_ZERO;
		break;
	default:
		ext->status = QIMGCTL_ST_UNALLOC;
		break;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Check                                                                    */

struct qed_ck {
	struct qimgctl_qed *q;
	bool fix;
	u64 nclusters;		/* in QEMU's numbering (see the top) */
	u32 *used;		/* one bit per cluster */
	s64 corruptions;
	s64 corruptions_fixed;
	s64 check_errors;
	s64 leaks;
	u64 total_clusters;
	u64 allocated_clusters;
	u64 fragmented_clusters;
};

/* QEMU's cluster number of byte offset @off (see the top comment). */
static u64 qed_ck_cluster(const struct qed_ck *c, u64 off)
{
	u64 cs = c->q->h.cluster_size;

	return ((off + cs - 1) & ~(cs - 1)) / (cs - 1);
}

/* Mark @n clusters from @off used; false if one already was. */
static bool qed_ck_use(struct qed_ck *c, u64 off, u32 n)
{
	u64 cl = qed_ck_cluster(c, off);
	s64 dup = 0;

	for (; n; n--, cl++) {
		/* Valid offsets stay below nclusters; be safe anyway. */
		if (cl >= ((c->nclusters + 31) & ~31ULL))
			continue;
		if (c->used[cl / 32] & (1U << (cl % 32)))
			dup++;
		c->used[cl / 32] |= 1U << (cl % 32);
	}
	c->corruptions += dup;
	return !dup;
}

/* Walk one L2 table (read into @t); returns the number of bad entries. */
static u32 qed_ck_l2(struct qed_ck *c, u8 *t)
{
	const struct qimg_qed_header *h = &c->q->h;
	u64 raw, last = 0;
	u32 i, bad = 0;

	for (i = 0; i < h->table_entries; i++) {
		raw = qimg_qed_table_get(t, i);
		if (raw == QIMG_QED_UNALLOC || raw == QIMG_QED_ZERO)
			continue;
		c->allocated_clusters++;
		if (last && last + h->cluster_size != raw)
			c->fragmented_clusters++;
		last = raw;
		if (!qimg_qed_cluster_ok(h, raw)) {
			if (c->fix) {
				qimg_qed_table_set(t, i, QIMG_QED_UNALLOC);
				c->corruptions_fixed++;
			} else {
				c->corruptions++;
			}
			bad++;
			continue;
		}
		qed_ck_use(c, raw, 1);
	}
	return bad;
}

static int qed_ck_write(struct qed_ck *c, const u8 *t, u64 off)
{
	int ret = qimgctl_pwrite(c->q->fd, t, c->q->h.table_bytes, off);

	if (ret) {
		qimgctl_err("%s: writing the table at %#" PRIx64 ": %s",
			    c->q->path, (uint64_t)off, strerror(-ret));
		c->check_errors++;
	}
	return ret;
}

/* The walk; 0, or the last I/O error (then leaks are not counted). */
static int qed_ck_walk(struct qed_ck *c)
{
	struct qimgctl_qed *q = c->q;
	const struct qimg_qed_header *h = &q->h;
	u32 i, bad_l1 = 0;
	u64 raw;
	int ret, last_err = 0;

	qed_ck_use(c, h->l1_table_offset, h->table_size);
	for (i = 0; i < h->table_entries; i++) {
		raw = qimg_qed_table_get(q->l1, i);
		if (raw == QIMG_QED_UNALLOC)
			continue;
		if (!qimg_qed_table_ok(h, raw)) {
			if (c->fix) {
				qimg_qed_table_set(q->l1, i, QIMG_QED_UNALLOC);
				c->corruptions_fixed++;
			} else {
				c->corruptions++;
			}
			bad_l1++;
			continue;
		}
		if (!qed_ck_use(c, raw, h->table_size))
			continue;
		q->l2_offset = 0;
		ret = qed_read_table(q, raw, q->l2, "L2 table");
		if (ret) {
			c->check_errors++;
			last_err = ret;
			continue;
		}
		if (qed_ck_l2(c, q->l2) && c->fix) {
			ret = qed_ck_write(c, q->l2, raw);
			if (ret)
				last_err = ret;
		}
	}
	if (bad_l1 && c->fix) {
		ret = qed_ck_write(c, q->l1, h->l1_table_offset);
		if (ret)
			last_err = ret;
	}
	return last_err;
}

/* Rewrite the features or autoclear field of the header. */
static int qed_ck_set_field(struct qimgctl_qed *q, u64 off, u64 val)
{
	u8 b[8];
	int ret;

	put_unaligned_le64(val, b);
	ret = qimgctl_pwrite(q->fd, b, sizeof(b), off);
	if (!ret && fdatasync(q->fd) < 0)
		ret = -errno;
	if (ret)
		qimgctl_err("%s: updating the header: %s", q->path,
			    strerror(-ret));
	return ret;
}

static int qed_ck_run(struct qimgctl_qed *q, bool fix, struct qed_ck *c)
{
	const struct qimg_qed_header *h = &q->h;
	u64 i;
	int ret;

	memset(c, 0, sizeof(*c));
	c->q = q;
	c->fix = fix;
	c->nclusters = h->file_size / (h->cluster_size - 1);
	c->used = calloc((c->nclusters + 31) / 32 + 1, sizeof(*c->used));
	if (!c->used) {
		qimgctl_err("%s: out of memory", q->path);
		return -ENOMEM;
	}
	c->total_clusters = (h->image_size + h->cluster_size - 1) >>
			    h->cluster_bits;
	ret = qed_ck_walk(c);
	if (!ret) {
		for (i = h->header_size; i < c->nclusters; i++)
			if (!(c->used[i / 32] & (1U << (i % 32))))
				c->leaks++;
	}
	/* Writes of the repair reach the disk before the header changes. */
	if (fix && fdatasync(q->fd) < 0 && !ret) {
		ret = -errno;
		c->check_errors++;
	}
	free(c->used);
	c->used = NULL;
	return ret;
}

static void qed_ck_human(const struct qed_ck *c)
{
	if (!c->corruptions && !c->leaks && !c->check_errors) {
		printf("No errors were found on the image.\n");
	} else {
		if (c->corruptions)
			printf("\n%lld errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
			       c->corruptions);
		if (c->leaks)
			printf("\n%lld leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
			       c->leaks);
		if (c->check_errors)
			printf("\n%lld internal errors have occurred during the check.\n",
			       c->check_errors);
	}
	if (c->total_clusters && c->allocated_clusters)
		printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
		       c->allocated_clusters, c->total_clusters,
		       c->allocated_clusters * 100.0 / c->total_clusters,
		       c->fragmented_clusters * 100.0 / c->allocated_clusters,
		       0.0);
}

static void qed_ck_num(struct json_object *o, const char *key, s64 v,
		       bool always)
{
	if (v || always)
		json_object_object_add(o, key, json_object_new_int64(v));
}

/*
 * qemu-img's JSON: its keys come out in the order of its dictionary's
 * hash buckets, which for these keys is the order below (a key is left
 * out when its counter is 0, check-errors excepted).
 */
static void qed_ck_json(const struct qed_ck *c, const char *path)
{
	struct json_object *o = json_object_new_object();

	qed_ck_num(o, "total-clusters", (s64)c->total_clusters, false);
	qed_ck_num(o, "corruptions", c->corruptions, false);
	qed_ck_num(o, "corruptions-fixed", c->corruptions_fixed, false);
	qed_ck_num(o, "check-errors", c->check_errors, true);
	qed_ck_num(o, "leaks", c->leaks, false);
	qed_ck_num(o, "allocated-clusters", (s64)c->allocated_clusters, false);
	json_object_object_add(o, "filename", json_object_new_string(path));
	json_object_object_add(o, "format", json_object_new_string("qed"));
	qed_ck_num(o, "fragmented-clusters", (s64)c->fragmented_clusters,
		   false);
	qimgctl_json_print(stdout, o);
	json_object_put(o);
}

int qimgctl_qed_check(const char *path, bool fix, bool json, bool quiet,
		      bool share)
{
	struct qimgctl_node *top;
	struct qimgctl_qed *q;
	struct qed_ck c;
	s64 fixed;
	int ret;

	/*
	 * Like qemu-img check, open (and lock) the whole backing chain: a
	 * missing or unreadable backing file makes the check fail.
	 */
	ret = qimgctl_chain_open(&top, path, NULL,
				 (fix ? QIMGCTL_OPEN_WRITE :
				  share ? QIMGCTL_OPEN_SHARE : 0) |
				 QIMGCTL_CHAIN_QED | QIMGCTL_CHAIN_ONLY_QED |
				 QIMGCTL_CHAIN_HEADERS);
	if (ret)
		return QIMGCTL_CHECK_INCOMPLETE;
	q = top->qed;
	if (qimgctl_qed_read_l1(q)) {
		qimgctl_chain_close(top);
		return QIMGCTL_CHECK_INCOMPLETE;
	}
	/* Opened for writing: QEMU drops autoclear bits it does not know. */
	if (fix && (q->h.autoclear_features & ~QIMG_QED_AUTOCLEAR_KNOWN)) {
		q->h.autoclear_features &= QIMG_QED_AUTOCLEAR_KNOWN;
		if (qed_ck_set_field(q, offsetof(struct qimg_qed_disk_header,
						 autoclear_features),
				     q->h.autoclear_features)) {
			qimgctl_chain_close(top);
			return QIMGCTL_CHECK_INCOMPLETE;
		}
	}
	ret = qed_ck_run(q, fix, &c);
	if (!ret && c.corruptions_fixed) {
		/* Like qemu-img: say what was repaired, then check again. */
		fixed = c.corruptions_fixed;
		if (!json && !quiet)
			printf("The following inconsistencies were found and repaired:\n\n    0 leaked clusters\n    %lld corruptions\n\nDouble checking the fixed image now...\n",
			       fixed);
		ret = qed_ck_run(q, false, &c);
		c.corruptions_fixed = fixed;
	}
	/*
	 * Clear need-check after a clean repair, or in any case when the
	 * image was opened for writing, as QEMU's close does.
	 */
	if (fix && q->h.need_check &&
	    !qed_ck_set_field(q, QIMG_QED_OFF_FEATURES,
			      q->h.features & ~QIMG_QED_F_NEED_CHECK))
		q->h.need_check = false;
	qimgctl_chain_close(top);
	if (ret) {
		qimgctl_err("%s: check failed: %s", path, strerror(-ret));
		return QIMGCTL_CHECK_INCOMPLETE;
	}
	if (json)
		qed_ck_json(&c, path);
	else if (!quiet)
		qed_ck_human(&c);
	if (c.check_errors) {
		qimgctl_err("%s: check failed", path);
		return QIMGCTL_CHECK_INCOMPLETE;
	}
	if (c.corruptions)
		return QIMGCTL_CHECK_CORRUPT;
	if (c.leaks)
		return QIMGCTL_CHECK_LEAKS;
	return QIMGCTL_CHECK_CLEAN;
}
