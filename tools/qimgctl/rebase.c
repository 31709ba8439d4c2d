// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl rebase: give a detached qcow2 image another backing file, as
 * `qemu-img rebase` does.
 *
 * -u (unsafe) only changes the backing file name and format in the header
 * (the new backing file is not even opened, as in qemu-img).
 * Without it, every cluster the image does not allocate itself and whose
 * contents differ between the old backing chain and the new one (or no
 * backing file, with -b "") first gets the old contents written into the
 * image, so the guest sees the same disk afterwards.  Write order: the
 * copied clusters are flushed (data, refcounts, L2, L1: image_rw.h) before
 * the header names the new backing file, so an interruption leaves the
 * old backing file named and the image showing the same data.  Internal
 * snapshots keep what they reach (shared tables and clusters are copied
 * for the active image); persistent bitmaps are in use on disk while the
 * clusters are copied, then stored with the copied clusters dirty in
 * every enabled one, as qemu's writes mark them.  With extended L2
 * entries the comparison and the copy go subcluster by subcluster.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image_rw.h"

struct rb_opts {
	const char *file, *backing, *fmt;
	bool unsafe, progress, quiet;
};

/*
 * A cluster of @w's image that defers to its backing chain: all of it
 * (mask ~0), or with extended L2 entries only the subclusters in mask.
 */
struct rb_cl {
	u64 off;
	u32 mask;
};

/* The clusters of @w's image that defer to the backing chain, in part. */
static int unalloc_clusters(struct qimgw *w, struct rb_cl **list, size_t *n)
{
	u64 sc = w->g->ext_l2 ? w->cs / QIMG_SUBCLUSTERS : w->cs;
	struct qimgctl_mapper m;
	struct qimgctl_extent ext;
	u64 off, cap = 0, o;
	struct rb_cl *l = NULL, *nl;
	u32 mask, i;
	int ret;

	*n = 0;
	ret = qimgctl_mapper_init(&m, &w->img);
	if (ret)
		return ret;
	for (off = 0; off < w->h->size; off += w->cs) {
		ret = qimgctl_map_status(&m, off, w->cs, &ext);
		if (ret)
			break;
		mask = 0;
		if (ext.status == QIMGCTL_ST_UNALLOC &&
		    (ext.len >= w->cs || off + ext.len >= w->h->size))
			mask = ~0U;
		/* Extended L2: which subclusters defer, one by one. */
		for (i = 0; mask != ~0U && w->g->ext_l2 &&
		     i < QIMG_SUBCLUSTERS && !ret; i++) {
			o = off + i * sc;
			if (o >= w->h->size)
				break;
			ret = qimgctl_map_status(&m, o, sc, &ext);
			if (!ret && ext.status == QIMGCTL_ST_UNALLOC)
				mask |= 1U << i;
		}
		if (ret)
			break;
		if (!mask)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 256;
			nl = realloc(l, cap * sizeof(*l));
			if (!nl) {
				qimgctl_err("%s: out of memory", w->img.path);
				ret = -ENOMEM;
				break;
			}
			l = nl;
		}
		l[*n].off = off;
		l[(*n)++].mask = mask;
	}
	qimgctl_mapper_fini(&m);
	if (ret)
		free(l);
	else
		*list = l;
	return ret;
}

/*
 * A cluster that allocates some of its subclusters (extended L2): the
 * subclusters in @cl.mask that read differently through the old and the
 * new backing chain get the old contents, the others keep their state.
 * The guest's view of the whole cluster comes through the image itself
 * (opened on first use into *@self, sharing: the writer holds the locks):
 * the cluster is read before it is written, so that view is the old one.
 */
static int copy_subclusters(struct qimgw *w, struct qimgctl_node **self,
			    struct qimgr *rs, bool *rs_ok, struct qimgr *rn,
			    struct qimgctl_node *nw, struct rb_cl cl, u64 len,
			    u8 *a, u8 *b, void *bms)
{
	u64 sc = w->cs / QIMG_SUBCLUSTERS, so, sl;
	u32 wmask = 0, k;
	int ret = 0;

	if (!*self) {
		ret = qimgctl_chain_open(self, w->img.path, "qcow2",
					 QIMGCTL_OPEN_SHARE);
		if (!ret)
			ret = qimgr_init(rs, *self);
		*rs_ok = !ret;
	}
	if (!ret)
		ret = qimgr_read(rs, *self, cl.off, a, len);
	if (!ret && rn)
		ret = qimgr_read(rn, nw, cl.off, b, len);
	for (k = 0; !ret && k < QIMG_SUBCLUSTERS && k * sc < len; k++) {
		so = k * sc;
		sl = len - so < sc ? len - so : sc;
		if ((cl.mask & (1U << k)) && memcmp(a + so, b + so, sl))
			wmask |= 1U << k;
	}
	if (ret || !wmask)
		return ret;
	ret = qimgw_write_subclusters(w, cl.off, a, wmask);
	for (k = 0; !ret && k < QIMG_SUBCLUSTERS && k * sc < len; k++)
		if (wmask & (1U << k))
			qimgctl_bitmaps_dirty(bms, cl.off + k * sc,
					      len - k * sc < sc ? len - k * sc : sc);
	return ret;
}

/*
 * Open the chain below @w named by @name (relative to the image).  @new:
 * the new backing chain, in which a journal-dirty image is refused as
 * qemu-img refuses a new backing file it cannot open (the old chain's
 * is refused by the opener, as every command that reads it does).
 */
static int open_chain(struct qimgw *w, const char *name, const char *fmt,
		      bool new, struct qimgctl_node **top)
{
	char *path;
	int ret;

	*top = NULL;
	if (!name || !name[0])
		return 0;
	path = qimgctl_path_combine(w->img.path, name);
	if (!path) {
		qimgctl_err("%s: out of memory", w->img.path);
		return -ENOMEM;
	}
	/* The opener names the file and the reason. */
	ret = qimgctl_chain_open(top, path, fmt ? fmt : "",
				 new ? QIMGCTL_OPEN_JOURNAL_OK : 0);
	free(path);
	if (!ret && new)
		ret = qimgctl_chain_refuse_dirty(*top, ", or rebase with -u",
						 "Could not open new backing file '%s'",
						 name);
	if (ret) {
		qimgctl_chain_close(*top);
		*top = NULL;
	}
	return ret;
}

static int copy_differing(struct qimgw *w, const struct rb_opts *o)
{
	struct qimgctl_node *old = NULL, *nw = NULL;
	struct qimgctl_progress prog;
	struct qimgctl_node *self = NULL;
	struct qimgr ro, rn, rs;
	bool ro_ok = false, rn_ok = false, rs_ok = false;
	void *bms = NULL;
	u8 *a = NULL, *b = NULL;
	struct rb_cl *list = NULL;
	size_t n = 0, i;
	int ret;

	ret = open_chain(w, w->h->backing_file, w->h->backing_fmt, false,
			 &old);
	if (!ret)
		ret = open_chain(w, o->backing, o->fmt, true, &nw);
	if (!ret && old)
		ret = qimgr_init(&ro, old);
	ro_ok = !ret && old;
	if (!ret && nw)
		ret = qimgr_init(&rn, nw);
	rn_ok = !ret && nw;
	if (!ret)
		ret = unalloc_clusters(w, &list, &n);
	/*
	 * As qemu writes through the image it opened: clusters shared with
	 * internal snapshots are copied first, and enabled persistent
	 * bitmaps see the copied clusters as written.
	 */
	w->snapshots_ok = true;
	if (!ret)
		ret = qimgctl_bitmaps_begin(w, w->h->size, false, &bms);
	a = calloc(1, w->cs);
	b = calloc(1, w->cs);
	if (!ret && (!a || !b)) {
		qimgctl_err("%s: out of memory", w->img.path);
		ret = -ENOMEM;
	}
	/* -p: qemu-img's meter over the virtual disk, on a terminal only. */
	qimgctl_progress_start(&prog, o->progress && !o->quiet &&
			       isatty(STDERR_FILENO), w->h->size);
	for (i = 0; !ret && i < n; i++) {
		u64 off = list[i].off, len = w->cs;

		qimgctl_progress_update(&prog, off, false);

		if (len > w->h->size - off)
			len = w->h->size - off;
		memset(a, 0, w->cs);
		memset(b, 0, w->cs);
		if (list[i].mask != ~0U) {
			ret = copy_subclusters(w, &self, &rs, &rs_ok, nw ? &rn : NULL,
					       nw, list[i], len, a, b, bms);
			continue;
		}
		if (old)
			ret = qimgr_read(&ro, old, off, a, len);
		if (!ret && nw)
			ret = qimgr_read(&rn, nw, off, b, len);
		if (ret || !memcmp(a, b, len))
			continue;
		ret = qimgw_write_cluster(w, off, a);
		if (!ret)
			qimgctl_bitmaps_dirty(bms, off, len);
	}
	if (!ret)
		qimgctl_progress_update(&prog, w->h->size, true);
	if (!ret)
		ret = qimgw_flush(w);
	if (!ret && bms) {
		ret = qimgctl_bitmaps_end(w, bms);
		bms = NULL;
	}
	qimgctl_bitmaps_free(bms);
	w->snapshots_ok = false;
	free(a);
	free(b);
	free(list);
	if (ro_ok)
		qimgr_fini(&ro);
	if (rn_ok)
		qimgr_fini(&rn);
	if (rs_ok)
		qimgr_fini(&rs);
	qimgctl_chain_close(self);
	qimgctl_chain_close(old);
	qimgctl_chain_close(nw);
	return ret;
}

static int rebase(const struct rb_opts *o)
{
	struct qimg_header nh;
	struct qimgw w;
	int ret;

	ret = qimgw_open(&w, o->file);
	if (ret)
		return ret;
	if (strlen(o->backing) > QIMG_MAX_BACKING_NAME) {
		qimgctl_err("%s: the backing file name is too long", o->file);
		ret = -ENAMETOOLONG;
		goto out;
	}
	if (!o->unsafe) {
		ret = copy_differing(&w, o);
		if (ret)
			goto out;
	}
	nh = *w.h;
	snprintf(nh.backing_file, sizeof(nh.backing_file), "%s", o->backing);
	snprintf(nh.backing_fmt, sizeof(nh.backing_fmt), "%s",
		 o->backing[0] && o->fmt ? o->fmt : "");
	nh.backing_file_offset = 0;
	nh.backing_file_size = (u32)strlen(o->backing);
	ret = qimgw_rewrite_header(&w, &nh);
out:
	qimgw_close(&w, false);
	return ret;
}

int qimgctl_cmd_rebase(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct rb_opts o = { 0 };
	const char *fmt = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hqpuf:b:F:", lopts,
				NULL)) != -1) {
		switch (c) {
		case 'u':
			o.unsafe = true;
			break;
		case 'b':
			o.backing = optarg;
			break;
		case 'F':
			o.fmt = optarg;
			break;
		case 'f':
			fmt = optarg;
			break;
		case 'q':
			o.quiet = true;	/* nothing else is printed on success */
			break;
		case 'p':
			o.progress = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "rebase");
			return 0;
		default:
			qimgctl_opt_err("rebase", c, argv);
			return 1;
		}
	}
	if (qimgctl_one_file("rebase", argc, argv))
		return 1;
	o.file = argv[optind];
	if (fmt && qimgctl_want_qcow2(fmt))
		return 1;
	if (!o.backing && !o.unsafe) {
		qimgctl_err("Must specify backing file (-b) or use unsafe mode (-u)");
		return 1;
	}
	if (!o.backing)
		o.backing = "";	/* -u alone: no backing file any more */
	if (o.backing[0] && !o.fmt) {
		qimgctl_err("Could not change the backing file to '%s': backing format must be specified",
			    o.backing);
		return 1;
	}
	if (o.fmt && strcmp(o.fmt, "qcow2") && strcmp(o.fmt, "raw")) {
		qimgctl_err("Unknown backing format '%s' (qcow2 or raw)", o.fmt);
		return 1;
	}
	return rebase(&o) ? 1 : 0;
}
