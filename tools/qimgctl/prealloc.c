// SPDX-License-Identifier: GPL-2.0
/*
 * create -o preallocation=metadata|falloc|full: the image qemu-img makes,
 * cluster for cluster.
 *
 * qemu makes such an image by creating an empty one (header, refcount
 * table, one refcount block), then growing it to its size with
 * preallocation, and where each table lands follows from the order of its
 * cluster allocations.  This file replays that order on an in-memory model
 * of the refcounts (a layout plan, not a general allocator: only the
 * allocations of a fresh image happen here), then writes the result:
 *
 *  - the L1 table is allocated at the first free cluster;
 *  - metadata: for each L2 table in guest order, the table at the first
 *    free cluster, then its data clusters as one run after it; a cluster
 *    whose refcount block is missing gets the block at the first free
 *    cluster, and the run is searched again (qemu's -EAGAIN retry);
 *  - falloc/full: a refcount structure covering the whole data area is
 *    built at the end of the file (new blocks, then a new table, as
 *    qemu's refcount area), the old table is freed, the data run follows
 *    it, and the L2 tables come last, each at the first free cluster (the
 *    first one where the old table was).  The data area is allocated in
 *    the file (fallocate, or written with zeroes for full).
 *
 * L2 entries are normal clusters with the COPIED flag (with extended L2,
 * no subcluster is marked allocated, as qemu leaves them).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prealloc.h"

/* Images whose model would not fit in memory are refused. */
#define PA_MAX_CLUSTERS		(1ULL << 28)

struct pa_sim {
	u64 cs;
	u32 cb;
	u64 rbe;		/* refcount entries per block */
	u8 *rc;			/* refcount of each host cluster (0 or 1) */
	u64 nclusters;		/* size of rc */
	u64 *rt;		/* refcount table: block cluster index, 0 none */
	u64 rt_size;		/* entries */
	u64 rt_cl;		/* table location (cluster) and length */
	u64 rt_len;
	u64 free_idx;
	u64 top;		/* one past the highest cluster allocated */
	const char *path;
	/* Tables replaced by bigger ones: their clusters keep what qemu
	 * wrote there (later writes overwrite the ones reused). */
	struct pa_old_table {
		u64 cl, len, *entries;
	} old[64];
	unsigned int nold;
};

static int pa_fail(struct pa_sim *s, const char *why)
{
	qimgctl_err("%s: preallocation of this image is not supported (%s)",
		    s->path, why);
	return -EOPNOTSUPP;
}

static bool pa_covered(const struct pa_sim *s, u64 c)
{
	u64 i = c / s->rbe;

	return i < s->rt_size && s->rt[i];
}

static u64 pa_get(const struct pa_sim *s, u64 c)
{
	if (c >= s->nclusters || !pa_covered(s, c))
		return 0;
	return s->rc[c];
}

static int pa_set(struct pa_sim *s, u64 c, u8 v)
{
	if (c >= s->nclusters)
		return pa_fail(s, "too many clusters");
	s->rc[c] = v;
	if (v && c + 1 > s->top)
		s->top = c + 1;
	return 0;
}

/* First run of @n clusters with refcount 0 from the free index (qemu's
 * search, which leaves the index after the run). */
static u64 pa_noref(struct pa_sim *s, u64 n)
{
	u64 i;

retry:
	for (i = 0; i < n; i++)
		if (pa_get(s, s->free_idx++))
			goto retry;
	return s->free_idx - n;
}

static int pa_update(struct pa_sim *s, u64 first, u64 n, bool inc);
static int pa_refcount_area(struct pa_sim *s, u64 start, u64 extra,
			    bool exact, u64 new_idx, u64 new_blk, u64 *end);

/*
 * The refcount block for cluster @c is missing: allocate it as qemu does.
 * Returns -EAGAIN (the caller reverts and searches again) or an error.
 */
static int pa_new_block(struct pa_sim *s, u64 c)
{
	u64 idx = c / s->rbe, nb, used, end;
	int ret;

	nb = pa_noref(s, 1);
	if (nb / s->rbe == idx) {
		/* The block describes itself. */
		ret = pa_set(s, nb, 1);
	} else {
		ret = pa_update(s, nb, 1, true);
	}
	if (ret)
		return ret;
	if (idx < s->rt_size) {
		s->rt[idx] = nb;
		return -EAGAIN;
	}
	/*
	 * The table is full: a new, larger one with blocks that describe
	 * themselves goes after everything the blocks so far cover.
	 */
	used = (c + 1 > nb + 1 ? c + 1 : nb + 1);
	used = (used + s->rbe - 1) / s->rbe;
	ret = pa_refcount_area(s, used * s->rbe, 0, false, idx, nb, &end);
	return ret ? ret : -EAGAIN;
}

static int pa_update(struct pa_sim *s, u64 first, u64 n, bool inc)
{
	u64 c;
	int ret;

	for (c = first; c < first + n; c++) {
		if (!pa_covered(s, c)) {
			ret = inc ? pa_new_block(s, c) : -EIO;
			if (ret) {
				/* Undo what was done, as qemu does on error. */
				if (c > first)
					pa_update(s, first, c - first, !inc);
				/* The search starts again where this run did. */
				if (first < s->free_idx)
					s->free_idx = first;
				return ret;
			}
		}
		if (c >= s->nclusters)
			return pa_fail(s, "too many clusters");
		ret = pa_set(s, c, inc ? 1 : 0);
		if (ret)
			return ret;
		if (!inc && c < s->free_idx)
			s->free_idx = c;
	}
	return 0;
}

/* qemu's qcow2_alloc_clusters(): search, count, again while it moved. */
static int pa_alloc(struct pa_sim *s, u64 n, u64 *out)
{
	int ret;

	do {
		*out = pa_noref(s, n);
		ret = pa_update(s, *out, n, true);
	} while (ret == -EAGAIN);
	return ret;
}

/* Refcount blocks (and table clusters) for @clusters clusters, exactly. */
static u64 pa_blocks_for(const struct pa_sim *s, u64 clusters, bool generous)
{
	u64 per_table = s->cs / 8, table = 0, blocks = 0, n = 0, last;

	do {
		last = n;
		blocks = (clusters + table + blocks + s->rbe - 1) / s->rbe;
		table = (blocks + per_table - 1) / per_table;
		n = clusters + blocks + table;
		if (n == last && generous) {
			/* Room to grow: half the table again, once. */
			clusters += (table + 1) / 2;
			n = 0;
			generous = false;
		}
	} while (n != last);
	return blocks;
}

/*
 * qemu's refcount area: new blocks from @start for every table entry that
 * has none up to what @start plus @extra clusters need, then a new table
 * after them; everything in it counted; the old table freed.  Returns the
 * first cluster after the area in *end.
 */
static int pa_refcount_area(struct pa_sim *s, u64 start, u64 extra,
			    bool exact, u64 new_idx, u64 new_blk, u64 *end)
{
	u64 total = pa_blocks_for(s, start + extra, !exact);
	u64 area = start / s->rbe, per_cl = s->cs / 8, size, tcl, add = 0;
	u64 i, blk, tab, first, j, e, old_cl = s->rt_cl, old_len = s->rt_len;
	u64 *nt;
	int ret;

	size = exact ? total : total + (total + 1) / 2;
	size = (size + per_cl - 1) / per_cl * per_cl;
	tcl = size / per_cl;
	nt = calloc(size, sizeof(u64));
	if (!nt) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	memcpy(nt, s->rt, (s->rt_size < size ? s->rt_size : size) * 8);
	if (s->nold < ARRAY_SIZE(s->old)) {
		struct pa_old_table *o = &s->old[s->nold];

		o->entries = malloc(s->rt_size * 8);
		if (o->entries) {
			memcpy(o->entries, s->rt, s->rt_size * 8);
			o->cl = old_cl;
			o->len = old_len;
			s->nold++;
		}
	}
	if (new_blk && new_idx < size)
		nt[new_idx] = new_blk;
	for (i = area; i < total; i++)
		if (!nt[i])
			add++;
	tab = start + add;
	e = tab + tcl;
	blk = start;
	free(s->rt);
	s->rt = nt;
	s->rt_size = size;
	for (i = area; i < total; i++) {
		if (!nt[i])
			nt[i] = blk++;
		first = i * s->rbe;
		if (first >= e)
			continue;
		j = first < start ? start : first;
		for (; j < e && j < first + s->rbe; j++) {
			ret = pa_set(s, j, 1);
			if (ret)
				return ret;
		}
	}
	s->rt_cl = tab;
	s->rt_len = tcl;
	ret = pa_update(s, old_cl, old_len, false);
	*end = e;
	return ret;
}

static int pa_write(int fd, const char *path, const void *buf, size_t len,
		    u64 off)
{
	int ret = qimgctl_pwrite(fd, buf, len, off);

	if (ret)
		qimgctl_err("%s: write failed: %s", path, strerror(-ret));
	return ret;
}

/*
 * Allocate (falloc) or zero-fill (full) [@from, @to) of the file; @prog
 * (or NULL) counts the bytes zero-filled.
 */
static int pa_fill(int fd, const char *path, u64 from, u64 to, bool full,
		   struct qimgctl_progress *prog)
{
	static const size_t chunk = 1 << 20;
	u8 *zero;
	u64 off;
	int ret = 0;

	if (to <= from)
		return 0;
	if (!full) {
		ret = posix_fallocate(fd, (off_t)from, (off_t)(to - from));
		if (ret)
			qimgctl_err("%s: Could not preallocate data for the new file: %s",
				    path, strerror(ret));
		return -ret;
	}
	zero = calloc(1, chunk);
	if (!zero) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	for (off = from; off < to && !ret; off += chunk) {
		if (prog)
			qimgctl_progress_update(prog, off - from, false);
		ret = pa_write(fd, path, zero,
			       to - off < chunk ? to - off : chunk, off);
	}
	free(zero);
	return ret;
}

int qimgctl_prealloc_create(int fd, const char *path, struct qimg_header *h,
			    enum qimgctl_prealloc mode, bool progress)
{
	const struct qimg_geom *g = &h->geom;
	struct pa_sim s = { 0 };
	u64 ndata, nl2, l1_cl, l1_off_cl, i, j, n, guest_cl, data0 = 0, l2;
	u64 *l2_at = NULL, *data_at = NULL, start, area_end, file_end;
	u64 esz = g->ext_l2 ? 16 : 8, l1_bytes = (u64)h->l1_size * 8;
	u8 *buf = NULL, *hdr = NULL;
	int ret;

	s.path = path;
	s.cs = g->cluster_size;
	s.cb = g->cluster_bits;
	s.rbe = g->rb_entries;
	ndata = (h->size + s.cs - 1) >> s.cb;
	nl2 = (ndata + g->l2_entries - 1) / g->l2_entries;
	l1_cl = (l1_bytes + s.cs - 1) >> s.cb;
	/* Everything we place, plus room for refcount structures. */
	s.nclusters = 4 + l1_cl + 2 * (ndata + nl2) + 64 + 4 * s.rbe;
	s.nclusters += 4 * pa_blocks_for(&s, s.nclusters, true) + 2;
	if (s.nclusters > PA_MAX_CLUSTERS) {
		ret = pa_fail(&s, "too many clusters");
		goto out;
	}
	s.rc = calloc(s.nclusters, 1);
	s.rt = calloc(s.cs / 8, sizeof(u64));
	l2_at = calloc(nl2 ? nl2 : 1, sizeof(u64));
	data_at = calloc(nl2 ? nl2 : 1, sizeof(u64));
	buf = malloc(s.cs);
	hdr = malloc(s.cs);
	if (!s.rc || !s.rt || !l2_at || !data_at || !buf || !hdr) {
		qimgctl_err("out of memory");
		ret = -ENOMEM;
		goto out;
	}
	/* The empty image: header, table (one cluster), its first block. */
	s.rt_size = s.cs / 8;
	s.rt_cl = 1;
	s.rt_len = 1;
	s.rt[0] = 2;
	ret = pa_alloc(&s, 3, &start);
	if (ret)
		goto out;
	/* Growing it: the L1 table. */
	l1_off_cl = 0;
	if (l1_cl) {
		ret = pa_alloc(&s, l1_cl, &l1_off_cl);
		if (ret)
			goto out;
	}
	if (mode == QIMGCTL_PREALLOC_METADATA) {
		for (i = 0; i < nl2; i++) {
			n = ndata - i * g->l2_entries;
			if (n > g->l2_entries)
				n = g->l2_entries;
			ret = pa_alloc(&s, 1, &l2_at[i]);
			if (!ret)
				ret = pa_alloc(&s, n, &data_at[i]);
			if (ret)
				goto out;
		}
	} else {
		start = s.top;
		ret = pa_refcount_area(&s, start, ndata + nl2 + 1, true, 0, 0,
				       &area_end);
		if (ret)
			goto out;
		data0 = area_end;
		for (j = 0; j < ndata; j++) {
			if (!pa_covered(&s, data0 + j)) {
				ret = pa_fail(&s, "data outside the refcount area");
				goto out;
			}
			ret = pa_set(&s, data0 + j, 1);
			if (ret)
				goto out;
		}
		for (i = 0; i < nl2; i++) {
			data_at[i] = data0 + i * g->l2_entries;
			ret = pa_alloc(&s, 1, &l2_at[i]);
			if (ret)
				goto out;
		}
	}

	/* The header, with the tables where the plan put them. */
	h->refcount_table_offset = s.rt_cl << s.cb;
	h->refcount_table_clusters = (u32)s.rt_len;
	h->l1_table_offset = l1_cl ? l1_off_cl << s.cb : 0;
	if (h->backing_file[0]) {
		struct qimg_header tmp = *h;

		tmp.backing_file[0] = '\0';
		tmp.backing_file_size = 0;
		ret = qimg_header_encode(&tmp, hdr, s.cs);
		if (ret >= 0 && (u64)ret + strlen(h->backing_file) > s.cs)
			ret = -ENOSPC;
		if (ret < 0)
			goto enc_fail;
		h->backing_file_offset = (u64)ret;
	}
	ret = qimg_header_encode(h, hdr, s.cs);
	if (ret < 0)
		goto enc_fail;
	file_end = s.top << s.cb;
	if (mode == QIMGCTL_PREALLOC_METADATA && ndata) {
		/*
		 * The file ends where the last table or the guest data does;
		 * a partial last (sub)cluster is completed with zeroes, as
		 * qemu's copy-on-write of the allocation's tail writes them.
		 */
		u64 sc = g->ext_l2 ? 1ULL << g->subcluster_bits : s.cs;
		u64 last = ndata - 1, tail_at, tail_end;

		tail_at = ((data_at[last / g->l2_entries] +
			    last % g->l2_entries) << s.cb) +
			  (h->size - (last << s.cb));
		tail_end = (tail_at + sc - 1) & ~(sc - 1);
		file_end = tail_end;
		for (i = 0; i < nl2; i++)
			if ((l2_at[i] + 1) << s.cb > file_end)
				file_end = (l2_at[i] + 1) << s.cb;
		for (i = 0; i < s.rt_size; i++)
			if (s.rt[i] && (s.rt[i] + 1) << s.cb > file_end)
				file_end = (s.rt[i] + 1) << s.cb;
		if ((s.rt_cl + s.rt_len) << s.cb > file_end)
			file_end = (s.rt_cl + s.rt_len) << s.cb;
		if (tail_end > tail_at) {
			ret = pa_fill(fd, path, tail_at, tail_end, true, NULL);
			if (ret)
				goto out;
		}
	}
	if (mode != QIMGCTL_PREALLOC_METADATA) {
		/* The data area is allocated in the file before the tables. */
		struct qimgctl_progress prog;
		u64 from = area_end << s.cb, to = (data0 + ndata) << s.cb;

		/* -p: the zero-filling of full, on a terminal only. */
		qimgctl_progress_start(&prog, progress &&
				       mode == QIMGCTL_PREALLOC_FULL &&
				       isatty(STDERR_FILENO),
				       to > from ? to - from : 0);
		ret = pa_fill(fd, path, from, to,
			      mode == QIMGCTL_PREALLOC_FULL, &prog);
		if (ret)
			goto out;
		qimgctl_progress_update(&prog, prog.total, true);
	}
	ret = pa_write(fd, path, hdr, s.cs, 0);
	if (ret)
		goto out;
	/*
	 * The empty image's table stays in its cluster when a new one
	 * replaced it (later writes overwrite it if the cluster was reused).
	 */
	for (n = 0; n < s.nold; n++) {
		for (i = 0; i < s.old[n].len; i++) {
			memset(buf, 0, s.cs);
			for (j = 0; j < s.cs / 8; j++) {
				l2 = i * (s.cs / 8) + j;
				if (l2 < s.old[n].len * (s.cs / 8) &&
				    s.old[n].entries[l2])
					put_unaligned_be64(s.old[n].entries[l2] << s.cb,
							   buf + j * 8);
			}
			ret = pa_write(fd, path, buf, s.cs,
				       (s.old[n].cl + i) << s.cb);
			if (ret)
				goto out;
		}
	}
	/* L1 and L2 tables. */
	for (i = 0; i < l1_cl; i++) {
		memset(buf, 0, s.cs);
		for (j = 0; j < s.cs / 8; j++) {
			l2 = i * (s.cs / 8) + j;
			if (l2 < nl2)
				put_unaligned_be64(qimg_l1_encode(l2_at[l2] << s.cb,
								  true),
						   buf + j * 8);
		}
		/* qemu writes the L1 table's bytes, rounded to sectors. */
		n = l1_bytes - i * s.cs;
		n = n > s.cs ? s.cs : (n + 511) & ~511ULL;
		ret = pa_write(fd, path, buf, n, (l1_off_cl + i) << s.cb);
		if (ret)
			goto out;
	}
	for (i = 0; i < nl2; i++) {
		memset(buf, 0, s.cs);
		for (j = 0; j < g->l2_entries; j++) {
			guest_cl = i * g->l2_entries + j;
			if (guest_cl >= ndata)
				break;
			put_unaligned_be64(qimg_l2_encode_normal((data_at[i] + j) << s.cb,
								 true),
					   buf + j * esz);
		}
		ret = pa_write(fd, path, buf, s.cs, l2_at[i] << s.cb);
		if (ret)
			goto out;
	}
	/* Refcount blocks and the table. */
	for (i = 0; i < s.rt_size; i++) {
		if (!s.rt[i])
			continue;
		memset(buf, 0, s.cs);
		for (j = 0; j < s.rbe && i * s.rbe + j < s.nclusters; j++)
			if (s.rc[i * s.rbe + j])
				qimg_refcount_set(buf, g->refcount_order, j, 1);
		ret = pa_write(fd, path, buf, s.cs, s.rt[i] << s.cb);
		if (ret)
			goto out;
	}
	for (i = 0; i < s.rt_len; i++) {
		memset(buf, 0, s.cs);
		for (j = 0; j < s.cs / 8; j++) {
			n = i * (s.cs / 8) + j;
			if (n < s.rt_size && s.rt[n])
				put_unaligned_be64(s.rt[n] << s.cb, buf + j * 8);
		}
		ret = pa_write(fd, path, buf, s.cs, (s.rt_cl + i) << s.cb);
		if (ret)
			goto out;
	}
	if (ftruncate(fd, (off_t)file_end) < 0 || fsync(fd) < 0) {
		ret = -errno;
		qimgctl_err("%s: write failed: %s", path, strerror(errno));
		goto out;
	}
	ret = 0;
	goto out;
enc_fail:
	qimgctl_err("%s: cannot encode the header: %s", path,
		    ret == -ENOSPC ? "backing file name does not fit in the first cluster" :
		    strerror(-ret));
out:
	while (s.nold)
		free(s.old[--s.nold].entries);
	free(s.rc);
	free(s.rt);
	free(l2_at);
	free(data_at);
	free(buf);
	free(hdr);
	return ret;
}
