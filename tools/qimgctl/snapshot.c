// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl snapshot: internal snapshots of a detached qcow2 image, as
 * `qemu-img snapshot -l|-c|-a|-d` makes, lists, applies and deletes them.
 *
 * A snapshot is an entry of the snapshot table (id, name, dates, the v3
 * extra data: vm_state_size_large, disk_size, icount) naming a copy of an
 * L1 table.  Every L2 table and data cluster an L1 table reaches counts one
 * reference for it, so the refcount of a cluster is the number of L1
 * tables (active or snapshot) that reach it; the COPIED flag of an active
 * table entry says "refcount 1, may be written in place".
 *
 * Write order (each step durable before the next: image_rw.h's flush
 * writes refcount blocks, then L2 tables, then the L1 table), so that an
 * interruption leaves at worst leaked clusters or missing COPIED flags
 * (which cost a copy on the next write; `check -r all` sets them again),
 * never a reference to a cluster whose refcount is too low and never a
 * COPIED flag on a shared cluster:
 *
 *   create: the L1 copy goes to new clusters (without COPIED flags); the
 *     refcounts of everything the active L1 reaches are raised, and the
 *     COPIED flags of its L2 tables (written in place) and of the active
 *     L1 are cleared; a new snapshot table (old entries plus the new one)
 *     goes to new clusters; flush; then the header names the new table;
 *     then the old table's clusters are freed.
 *   apply: refcounts of everything the snapshot reaches are raised and
 *     COPIED flags in its L2 tables cleared; flush; the active L1 becomes
 *     the snapshot's (COPIED flags cleared) and the header its size; flush;
 *     then the refcounts of what the old active L1 reached are lowered;
 *     then COPIED flags are set again where a refcount is 1.
 *   delete: the new table without the entry, the header names it, the old
 *     table is freed; then the refcounts of what the snapshot reached and
 *     of its L1 copy are lowered; then COPIED flags set where refcount 1.
 *
 * Clusters whose refcount drops to 0 become free in the refcounts; as in
 * qemu (pass-discard-snapshot) their space is given back to the file
 * system (holes punched) once the refcounts are on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "image_rw.h"

/* QEMU's limits: QCOW_MAX_SNAPSHOTS, and its 256-byte name buffer. */
#define SN_MAX		65536
#define SN_NAME_MAX	255
/* Extra data QEMU 7.2 writes: vm_state_size_large, disk_size, icount. */
#define SN_EXTRA	24

/* One table entry as qemu rewrites it (extra data at least SN_EXTRA). */
struct sn {
	struct qimg_snapshot s;	/* decoded */
	u8 *extra;		/* extra_len bytes, the first 24 normalized */
	u32 extra_len;
	char *id;		/* raw id and name (not NUL-terminated inside) */
	u16 id_len;
	char *name;
	u16 name_len;
};

struct sntab {
	struct sn *v;
	u32 n;
	u64 off, len;		/* where the table read lies */
};

static void tab_free(struct sntab *t)
{
	u32 i;

	for (i = 0; i < t->n; i++) {
		free(t->v[i].extra);
		free(t->v[i].id);
		free(t->v[i].name);
	}
	free(t->v);
	memset(t, 0, sizeof(*t));
}

static int oom(const char *path)
{
	qimgctl_err("%s: out of memory", path);
	return -ENOMEM;
}

/*
 * Read the snapshot table of @img.  Entries with less extra data than
 * QEMU 7.2 writes get what it would fill in when rewriting them: the VM
 * state size, the current virtual size, icount -1.
 */
static int tab_load(struct qimgctl_image *img, struct sntab *t)
{
	const struct qimg_header *h = &img->h;
	struct qimg_disk_snapshot d;
	struct qimg_err err = { "" };
	u64 off = h->snapshots_offset, len;
	u8 *buf;
	u32 i;
	int ret;

	memset(t, 0, sizeof(*t));
	t->off = off;
	if (!h->nb_snapshots)
		return 0;
	t->v = calloc(h->nb_snapshots, sizeof(*t->v));
	if (!t->v)
		return oom(img->path);
	for (i = 0; i < h->nb_snapshots; i++) {
		struct sn *e = &t->v[i];
		u32 x;

		ret = qimgctl_pread(img->fd, &d, sizeof(d), off);
		if (ret) {
			qimgctl_err("%s: reading snapshot %u: %s", img->path,
				    i + 1, strerror(-ret));
			goto fail;
		}
		x = be32_to_cpu(d.extra_data_size);
		len = sizeof(d) + (u64)x + be16_to_cpu(d.id_str_size) +
		      be16_to_cpu(d.name_size);
		if (x > QIMG_MAX_SNAPSHOT_EXTRA || off >= img->file_size ||
		    len > img->file_size - off) {
			qimgctl_err("%s: snapshot %u extends past the end of the file or has too much extra data",
				    img->path, i + 1);
			ret = -EUCLEAN;
			goto fail;
		}
		buf = malloc(len);
		if (!buf) {
			ret = oom(img->path);
			goto fail;
		}
		ret = qimgctl_pread(img->fd, buf, len, off);
		if (!ret)
			ret = qimg_snapshot_decode(&h->geom, buf, len,
						   img->file_size, &e->s, &err);
		if (ret) {
			qimgctl_err("%s: snapshot %u: %s", img->path, i + 1,
				    err.msg[0] ? err.msg : strerror(-ret));
			free(buf);
			goto fail;
		}
		e->extra_len = x > SN_EXTRA ? x : SN_EXTRA;
		e->id_len = be16_to_cpu(d.id_str_size);
		e->name_len = be16_to_cpu(d.name_size);
		e->extra = calloc(1, e->extra_len);
		e->id = malloc(e->id_len + 1);
		e->name = malloc(e->name_len + 1);
		if (!e->extra || !e->id || !e->name) {
			free(buf);
			ret = oom(img->path);
			goto fail;
		}
		memcpy(e->extra, buf + sizeof(d), x);
		memcpy(e->id, buf + sizeof(d) + x, e->id_len);
		memcpy(e->name, buf + sizeof(d) + x + e->id_len, e->name_len);
		e->id[e->id_len] = '\0';
		e->name[e->name_len] = '\0';
		free(buf);
		if (!e->s.has_disk_size)
			e->s.disk_size = h->size;
		put_unaligned_be64(e->s.vm_state_size, e->extra);
		put_unaligned_be64(e->s.disk_size, e->extra + 8);
		put_unaligned_be64(e->s.icount, e->extra + 16);
		t->n++;
		t->len = off + len - t->off;
		off += e->s.entry_len;
	}
	return 0;
fail:
	tab_free(t);
	return ret;
}

/* The table as qemu writes it: 8-byte aligned entries, no tail padding. */
static u64 tab_size(const struct sntab *t)
{
	u64 len = 0;
	u32 i;

	for (i = 0; i < t->n; i++) {
		len = (len + 7) & ~7ULL;
		len += sizeof(struct qimg_disk_snapshot) + t->v[i].extra_len +
		       t->v[i].id_len + t->v[i].name_len;
	}
	return len;
}

static void tab_encode(const struct sntab *t, u8 *buf)
{
	struct qimg_disk_snapshot d;
	u64 pos = 0;
	u32 i;

	for (i = 0; i < t->n; i++) {
		const struct sn *e = &t->v[i];

		pos = (pos + 7) & ~7ULL;
		memset(&d, 0, sizeof(d));
		d.l1_table_offset = cpu_to_be64(e->s.l1_table_offset);
		d.l1_size = cpu_to_be32(e->s.l1_size);
		d.id_str_size = cpu_to_be16(e->id_len);
		d.name_size = cpu_to_be16(e->name_len);
		d.date_sec = cpu_to_be32(e->s.date_sec);
		d.date_nsec = cpu_to_be32(e->s.date_nsec);
		d.vm_clock_nsec = cpu_to_be64(e->s.vm_clock_nsec);
		/* Older readers take a VM state over 4 GiB for none. */
		if (e->s.vm_state_size <= 0xffffffffULL)
			d.vm_state_size = cpu_to_be32((u32)e->s.vm_state_size);
		d.extra_data_size = cpu_to_be32(e->extra_len);
		memcpy(buf + pos, &d, sizeof(d));
		pos += sizeof(d);
		memcpy(buf + pos, e->extra, e->extra_len);
		pos += e->extra_len;
		memcpy(buf + pos, e->id, e->id_len);
		pos += e->id_len;
		memcpy(buf + pos, e->name, e->name_len);
		pos += e->name_len;
	}
}

/*
 * Write @t to new clusters and make the header name it; then free the
 * clusters of the table read at open.
 */
static int tab_store(struct qimgw *w, const struct sntab *t,
		     const struct sntab *old)
{
	u64 len = tab_size(t), off = 0, o, end;
	u8 *buf;
	int ret;

	if (len) {
		buf = calloc(1, len);
		if (!buf)
			return oom(w->img.path);
		tab_encode(t, buf);
		ret = qimgw_alloc(w, (len + w->cs - 1) / w->cs, &off);
		if (!ret)
			ret = qimgctl_pwrite(w->img.fd, buf, len, off);
		free(buf);
		if (ret) {
			qimgctl_err("%s: writing the snapshot table: %s",
				    w->img.path, strerror(-ret));
			return ret;
		}
	}
	ret = qimgw_set_snapshots(w, t->n, off);
	if (ret || !old->n || !old->len)
		return ret;
	end = old->off + old->len;
	for (o = old->off & ~(w->cs - 1); o < end; o += w->cs) {
		ret = qimgw_ref_add(w, o, -1);
		if (ret)
			return ret;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Walking an L1 table                                                      */

struct walk {
	struct qimgw *w;
	int delta;		/* +1, -1 */
	u64 *freed;		/* clusters whose refcount reached 0 */
	size_t nb_freed, cap;
};

static int ref_change(struct walk *k, u64 off)
{
	u64 val;
	int ret = qimgw_ref_add(k->w, off, k->delta);

	if (ret || k->delta > 0)
		return ret;
	ret = qimgw_ref_get(k->w, off, &val);
	if (ret || val)
		return ret;
	if (k->nb_freed == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 64;
		u64 *f = realloc(k->freed, cap * sizeof(*f));

		if (!f)
			return oom(k->w->img.path);
		k->freed = f;
		k->cap = cap;
	}
	k->freed[k->nb_freed++] = off;
	return 0;
}

static int read_l1(struct qimgw *w, u64 off, u32 n, u64 **l1)
{
	u32 i;
	int ret;

	*l1 = calloc(n ? n : 1, sizeof(**l1));
	if (!*l1)
		return oom(w->img.path);
	ret = n ? qimgctl_pread(w->img.fd, *l1, (size_t)n * 8, off) : 0;
	if (ret) {
		qimgctl_err("%s: reading a snapshot L1 table: %s", w->img.path,
			    strerror(-ret));
		free(*l1);
		*l1 = NULL;
		return ret;
	}
	for (i = 0; i < n; i++)
		(*l1)[i] = be64_to_cpu((*l1)[i]);
	return 0;
}

/*
 * Add k->delta to the refcount of every L2 table @l1 reaches and of every
 * cluster those tables reach.  With delta > 0 COPIED flags are cleared in
 * the L2 tables (written in place at once: clearing one is always safe).
 */
static int walk_l1(struct walk *k, const u64 *l1, u32 n)
{
	struct qimgw *w = k->w;
	const struct qimg_geom *g = w->g;
	struct qimg_err err = { "" };
	struct qimg_l2_entry e;
	u64 l2off, j, raw, c, end;
	bool copied, dirty;
	u8 *tbl, *p;
	u32 i;
	int ret = 0;

	tbl = malloc(w->cs);
	if (!tbl)
		return oom(w->img.path);
	for (i = 0; i < n && !ret; i++) {
		ret = qimg_l1_decode(g, l1[i], w->end, &l2off, &copied, &err);
		if (ret) {
			qimgctl_err("%s: L1 entry %u: %s", w->img.path, i,
				    err.msg);
			ret = -EUCLEAN;
			break;
		}
		if (!l2off)
			continue;
		ret = qimgctl_pread(w->img.fd, tbl, w->cs, l2off);
		if (ret) {
			qimgctl_err("%s: reading an L2 table: %s", w->img.path,
				    strerror(-ret));
			break;
		}
		dirty = false;
		for (j = 0; j < g->l2_entries && !ret; j++) {
			p = tbl + (j << g->l2_entry_shift);
			raw = get_unaligned_be64(p);
			ret = qimg_l2_decode(g, w->h->version, raw,
					     g->ext_l2 ?
					     get_unaligned_be64(p + 8) : 0,
					     w->end, &e, &err);
			if (ret) {
				qimgctl_err("%s: L2 table at %#" PRIx64 ", entry %" PRIu64 ": %s",
					    w->img.path, (uint64_t)l2off,
					    (uint64_t)j, err.msg);
				ret = -EUCLEAN;
				break;
			}
			switch (e.type) {
			case QIMG_CLUSTER_NORMAL:
			case QIMG_CLUSTER_ZERO_ALLOC:
				ret = ref_change(k, e.host_offset);
				break;
			case QIMG_CLUSTER_COMPRESSED:
				end = e.host_offset + e.compressed_len;
				for (c = e.host_offset & ~(w->cs - 1);
				     c < end && !ret; c += w->cs)
					ret = ref_change(k, c);
				break;
			default:
				break;
			}
			if (k->delta > 0 && (raw & QIMG_OFLAG_COPIED)) {
				put_unaligned_be64(raw & ~QIMG_OFLAG_COPIED, p);
				dirty = true;
			}
		}
		if (!ret && dirty)
			ret = qimgctl_pwrite(w->img.fd, tbl, w->cs, l2off);
		if (!ret)
			ret = ref_change(k, l2off);
	}
	free(tbl);
	return ret;
}

/*
 * QEMU's update with addend 0 on the active L1 table: COPIED exactly where
 * the refcount is 1 (compressed and unallocated entries never), in the
 * writer's cache, written at the next flush.
 */
static int fix_copied(struct qimgw *w)
{
	const struct qimg_geom *g = w->g;
	struct qimg_err err = { "" };
	struct qimg_l2_entry e;
	u64 l2off, j, raw, nraw, val;
	bool copied;
	u8 *tbl, *p;
	u32 i;
	int ret;

	for (i = 0; i < w->l1_size; i++) {
		ret = qimg_l1_decode(g, w->l1[i], w->end, &l2off, &copied,
				     &err);
		if (ret) {
			qimgctl_err("%s: L1 entry %u: %s", w->img.path, i,
				    err.msg);
			return -EUCLEAN;
		}
		if (!l2off)
			continue;
		if (!w->l2[i]) {
			w->l2[i] = malloc(w->cs);
			if (!w->l2[i])
				return oom(w->img.path);
			ret = qimgctl_pread(w->img.fd, w->l2[i], w->cs, l2off);
			if (ret) {
				qimgctl_err("%s: reading an L2 table: %s",
					    w->img.path, strerror(-ret));
				return ret;
			}
		}
		tbl = w->l2[i];
		for (j = 0; j < g->l2_entries; j++) {
			p = tbl + (j << g->l2_entry_shift);
			raw = get_unaligned_be64(p);
			ret = qimg_l2_decode(g, w->h->version, raw,
					     g->ext_l2 ?
					     get_unaligned_be64(p + 8) : 0,
					     w->end, &e, &err);
			if (ret) {
				qimgctl_err("%s: L2 table at %#" PRIx64 ": %s",
					    w->img.path, (uint64_t)l2off,
					    err.msg);
				return -EUCLEAN;
			}
			nraw = raw;
			if (e.type == QIMG_CLUSTER_NORMAL ||
			    e.type == QIMG_CLUSTER_ZERO_ALLOC) {
				ret = qimgw_ref_get(w, e.host_offset, &val);
				if (ret)
					return ret;
				nraw = val == 1 ? raw | QIMG_OFLAG_COPIED :
						  raw & ~QIMG_OFLAG_COPIED;
			} else if (e.type != QIMG_CLUSTER_COMPRESSED) {
				nraw = raw & ~QIMG_OFLAG_COPIED;
			}
			if (nraw != raw) {
				put_unaligned_be64(nraw, p);
				w->l2_dirty[i] = true;
			}
		}
		ret = qimgw_ref_get(w, l2off, &val);
		if (ret)
			return ret;
		raw = qimg_l1_encode(l2off, val == 1);
		if (raw != w->l1[i]) {
			w->l1[i] = raw;
			w->l1_dirty = true;
		}
	}
	return 0;
}

/* Give clusters whose refcount reached 0 back to the file system. */
static void punch_freed(struct qimgw *w, struct walk *k)
{
	size_t i;
	u64 val;

	for (i = 0; i < k->nb_freed; i++) {
		/* Taken again since (the new snapshot table, say)? */
		if (qimgw_ref_get(w, k->freed[i], &val) || val)
			continue;
		/* Best effort: a file system without holes keeps the bytes. */
		(void)fallocate(w->img.fd,
				FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)k->freed[i], (off_t)w->cs);
	}
}

/* ------------------------------------------------------------------------ */
/* The operations                                                           */

/* The first entry whose id is @s, else the first whose name is. */
static int find_id_or_name(const struct sntab *t, const char *s)
{
	u32 i;

	for (i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].id, s))
			return (int)i;
	for (i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].name, s))
			return (int)i;
	return -1;
}

static int find_name(const struct sntab *t, const char *s)
{
	u32 i;

	for (i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].name, s))
			return (int)i;
	return -1;
}

static int sn_create(struct qimgw *w, struct sntab *t, const char *name)
{
	struct walk k = { .w = w, .delta = 1 };
	struct sntab nt = *t;
	struct sn *e;
	struct timespec ts;
	u64 l1off = 0, max_id = 0, v, *copy;
	size_t nlen = strlen(name);
	char idbuf[24];
	u32 i;
	int ret;

	if (t->n >= SN_MAX) {
		qimgctl_err("Could not create snapshot '%s': %s", name,
			    strerror(EFBIG));
		return -EFBIG;
	}
	if (nlen > SN_NAME_MAX)
		nlen = SN_NAME_MAX;	/* qemu-img keeps 255 bytes of it */
	for (i = 0; i < t->n; i++) {
		v = strtoull(t->v[i].id, NULL, 10);
		if (v > max_id)
			max_id = v;
	}
	snprintf(idbuf, sizeof(idbuf), "%" PRIu64, (uint64_t)(max_id + 1));

	nt.v = calloc(t->n + 1, sizeof(*nt.v));
	if (!nt.v)
		return oom(w->img.path);
	if (t->n)
		memcpy(nt.v, t->v, t->n * sizeof(*nt.v));
	e = &nt.v[t->n];
	nt.n = t->n + 1;
	e->extra_len = SN_EXTRA;
	e->extra = calloc(1, SN_EXTRA);
	e->id = strdup(idbuf);
	e->name = strndup(name, nlen);
	if (!e->extra || !e->id || !e->name) {
		ret = oom(w->img.path);
		goto out;
	}
	e->id_len = (u16)strlen(idbuf);
	e->name_len = (u16)nlen;
	clock_gettime(CLOCK_REALTIME, &ts);
	e->s.date_sec = (u32)ts.tv_sec;
	/* qemu-img takes the time in microseconds. */
	e->s.date_nsec = (u32)(ts.tv_nsec / 1000 * 1000);
	e->s.disk_size = w->h->size;
	e->s.icount = 0;	/* what qemu-img records */
	put_unaligned_be64(e->s.disk_size, e->extra + 8);
	e->s.l1_size = w->l1_size;

	/* The L1 copy, without COPIED flags. */
	if (w->l1_size) {
		copy = calloc(w->l1_size, sizeof(*copy));
		if (!copy) {
			ret = oom(w->img.path);
			goto out;
		}
		for (i = 0; i < w->l1_size; i++)
			copy[i] = cpu_to_be64(w->l1[i] & ~QIMG_OFLAG_COPIED);
		ret = qimgw_alloc(w, ((u64)w->l1_size * 8 + w->cs - 1) /
				  w->cs, &l1off);
		if (!ret)
			ret = qimgctl_pwrite(w->img.fd, copy,
					     (size_t)w->l1_size * 8, l1off);
		free(copy);
		if (ret) {
			qimgctl_err("%s: writing the snapshot L1 table: %s",
				    w->img.path, strerror(-ret));
			goto out;
		}
	}
	e->s.l1_table_offset = l1off;
	ret = walk_l1(&k, w->l1, w->l1_size);
	if (ret)
		goto out;
	for (i = 0; i < w->l1_size; i++) {
		if (w->l1[i] & QIMG_OFLAG_COPIED) {
			w->l1[i] &= ~QIMG_OFLAG_COPIED;
			w->l1_dirty = true;
		}
	}
	ret = qimgw_flush(w);
	if (!ret)
		ret = tab_store(w, &nt, t);
	if (!ret)
		ret = qimgw_flush(w);
out:
	free(e->extra);
	free(e->id);
	free(e->name);
	free(nt.v);
	free(k.freed);
	return ret;
}

static int sn_apply(struct qimgw *w, struct sntab *t, const char *name)
{
	struct walk up = { .w = w, .delta = 1 }, down = { .w = w, .delta = -1 };
	u64 *sl1 = NULL, *old = NULL;
	struct sn *e;
	u32 i, old_n;
	int idx = find_id_or_name(t, name), ret;

	/*
	 * QEMU loads the persistent bitmaps at open and refuses to revert
	 * the disk under them, whatever the snapshot (even a missing one).
	 */
	if (w->h->has_bitmaps_ext && w->h->nb_bitmaps) {
		qimgctl_err("Could not apply snapshot '%s': Device has active dirty bitmaps",
			    name);
		return -EBUSY;
	}
	if (idx < 0) {
		qimgctl_err("Could not apply snapshot '%s': Failed to load snapshot: %s",
			    name, strerror(ENOENT));
		return -ENOENT;
	}
	e = &t->v[idx];
	if (e->s.disk_size % 512 || e->s.disk_size > QIMG_MAX_VIRTUAL_SIZE ||
	    e->s.l1_size < qimg_l1_entries_for(w->g->cluster_bits,
					       w->g->ext_l2,
					       e->s.disk_size)) {
		qimgctl_err("Could not apply snapshot '%s': the snapshot's size (%" PRIu64 " bytes) does not fit its L1 table",
			    name, (uint64_t)e->s.disk_size);
		return -EUCLEAN;
	}
	ret = read_l1(w, e->s.l1_table_offset, e->s.l1_size, &sl1);
	if (!ret)
		ret = walk_l1(&up, sl1, e->s.l1_size);
	if (!ret)
		ret = qimgw_flush(w);
	if (ret)
		goto out;
	/* Only now may the active L1 table name what the snapshot does. */
	old_n = w->l1_size;
	old = malloc((old_n ? old_n : 1) * sizeof(*old));
	if (!old) {
		ret = oom(w->img.path);
		goto out;
	}
	memcpy(old, w->l1, old_n * sizeof(*old));
	ret = qimgw_l1_grow(w, e->s.l1_size);
	if (ret)
		goto out;
	for (i = 0; i < w->l1_size; i++) {
		free(w->l2[i]);
		w->l2[i] = NULL;
		w->l2_dirty[i] = false;
		w->l1[i] = i < e->s.l1_size ? sl1[i] & ~QIMG_OFLAG_COPIED : 0;
	}
	w->l1_dirty = true;
	if (w->h->size != e->s.disk_size) {
		w->h->size = e->s.disk_size;
		w->hdr_dirty = true;
	}
	ret = qimgw_flush(w);
	if (!ret)
		ret = walk_l1(&down, old, old_n);
	if (!ret)
		ret = qimgw_flush(w);
	if (!ret)
		ret = fix_copied(w);
	if (!ret)
		ret = qimgw_flush(w);
	if (!ret)
		punch_freed(w, &down);
out:
	free(sl1);
	free(old);
	free(up.freed);
	free(down.freed);
	return ret;
}

static int sn_delete(struct qimgw *w, struct sntab *t, const char *name)
{
	struct walk k = { .w = w, .delta = -1 };
	struct sntab nt = *t;
	struct qimg_snapshot s;
	u64 *sl1 = NULL, o, end;
	int idx = find_name(t, name), ret;

	if (idx < 0) {
		qimgctl_err("Could not delete snapshot '%s': snapshot not found",
			    name);
		return -ENOENT;
	}
	s = t->v[idx].s;
	ret = read_l1(w, s.l1_table_offset, s.l1_size, &sl1);
	if (ret)
		return ret;
	nt.v = calloc(t->n, sizeof(*nt.v));
	if (!nt.v) {
		free(sl1);
		return oom(w->img.path);
	}
	memcpy(nt.v, t->v, idx * sizeof(*nt.v));
	memcpy(nt.v + idx, t->v + idx + 1,
	       (t->n - idx - 1) * sizeof(*nt.v));
	nt.n = t->n - 1;
	ret = tab_store(w, &nt, t);
	if (!ret)
		ret = qimgw_flush(w);
	/* From here on an interruption only leaks clusters. */
	if (!ret)
		ret = walk_l1(&k, sl1, s.l1_size);
	end = s.l1_table_offset + (u64)s.l1_size * 8;
	for (o = s.l1_table_offset; !ret && s.l1_size && o < end; o += w->cs)
		ret = ref_change(&k, o);
	if (!ret)
		ret = qimgw_flush(w);
	if (!ret)
		ret = fix_copied(w);
	if (!ret)
		ret = qimgw_flush(w);
	if (!ret)
		punch_freed(w, &k);
	free(nt.v);
	free(sl1);
	free(k.freed);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* -l                                                                       */

static void print_row(const char *id, const char *name, const char *size,
		      const char *date, const char *clock, const char *icount)
{
	printf("%-9s %-16s %8s%20s%13s%11s\n", id, name, size, date, clock,
	       icount);
}

static int sn_list(const char *path, bool share)
{
	struct qimgctl_image img;
	struct sntab t;
	char sz[32], date[64], clk[64], ic[32];
	struct tm tm;
	time_t ti;
	u64 secs;
	enum qimgctl_fmt fmt;
	u32 i;
	int ret, fd;

	/* Other formats have no snapshots: qemu-img lists nothing. */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ret = qimgctl_probe_format(fd, &fmt);
		close(fd);
		if (!ret && fmt != QIMGCTL_FMT_QCOW2)
			return 0;
	}
	ret = qimgctl_image_open(&img, path, share ? QIMGCTL_OPEN_SHARE : 0);
	if (ret)
		return ret;
	/* qemu-img opens the backing chain too, and fails as it fails. */
	ret = qimgctl_backing_chain_usable(path, share);
	if (ret) {
		qimgctl_image_close(&img);
		return ret;
	}
	ret = tab_load(&img, &t);
	if (ret || !t.n)
		goto out;
	printf("Snapshot list:\n");
	printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
	       "VM CLOCK", "ICOUNT");
	for (i = 0; i < t.n; i++) {
		const struct qimg_snapshot *s = &t.v[i].s;

		qimgctl_size_str(s->vm_state_size, sz, sizeof(sz));
		ti = (time_t)s->date_sec;
		if (!localtime_r(&ti, &tm) ||
		    !strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm))
			date[0] = '\0';
		secs = s->vm_clock_nsec / 1000000000ULL;
		snprintf(clk, sizeof(clk), "%02d:%02d:%02d.%03d",
			 (int)(secs / 3600), (int)((secs / 60) % 60),
			 (int)(secs % 60),
			 (int)((s->vm_clock_nsec / 1000000) % 1000));
		ic[0] = '\0';
		if (s->icount != (u64)-1)
			snprintf(ic, sizeof(ic), "%" PRId64,
				 (int64_t)s->icount);
		print_row(s->id_str, s->name, sz, date, clk, ic);
	}
out:
	tab_free(&t);
	qimgctl_image_close(&img);
	return ret;
}

/* ------------------------------------------------------------------------ */

int qimgctl_cmd_snapshot(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *name = NULL;
	bool share = false;
	int op = 0, c, ret;
	struct sntab t;
	struct qimgw w;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":hqUla:c:d:", lopts,
				NULL)) != -1) {
		switch (c) {
		case 'l':
		case 'a':
		case 'c':
		case 'd':
			if (op) {
				qimgctl_usage_err("snapshot",
						  "cannot mix -l, -a, -c, -d");
				return 1;
			}
			op = c;
			name = optarg;
			break;
		case 'q':
			break;	/* nothing is printed on success anyway */
		case 'U':
			share = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "snapshot");
			return 0;
		default:
			qimgctl_opt_err("snapshot", c, argv);
			return 1;
		}
	}
	if (qimgctl_one_file("snapshot", argc, argv))
		return 1;
	if (op == 'l')
		return sn_list(argv[optind], share) ? 1 : 0;
	if (share) {
		qimgctl_err("%s: -U/--force-share is only for -l (changing a snapshot needs the image to itself)",
			    argv[optind]);
		return 1;
	}
	ret = qimgw_open(&w, argv[optind]);
	if (ret)
		return 1;
	if (qimgctl_backing_chain_usable(argv[optind], false)) {
		qimgw_close(&w, false);
		return 1;
	}
	/* Without an operation qemu-img opens the image and does nothing. */
	ret = op ? tab_load(&w.img, &t) : 0;
	if (ret || !op) {
		qimgw_close(&w, false);
		return ret ? 1 : 0;
	}
	if (op == 'c')
		ret = sn_create(&w, &t, name);
	else if (op == 'a')
		ret = sn_apply(&w, &t, name);
	else
		ret = sn_delete(&w, &t, name);
	tab_free(&t);
	qimgw_close(&w, false);
	return ret ? 1 : 0;
}
