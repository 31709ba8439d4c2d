// SPDX-License-Identifier: GPL-2.0
/*
 * Reading qcow2 tables from userspace: L1/L2 access, the per-offset status
 * walker used by `map` (and usable by `check`), backing-chain opening, and
 * output helpers that format like qemu-img so results can be diffed
 * against it.
 *
 * Nothing read from an image is trusted: every L1 and L2 entry goes through
 * qimg_l1_decode()/qimg_l2_decode(), and every size is bounded before it is
 * used to allocate or to read.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_io.h"
#include "lock.h"

int qimgctl_mapper_init(struct qimgctl_mapper *m, struct qimgctl_image *img)
{
	const struct qimg_header *h = &img->h;
	u64 bytes, end;
	u32 i;
	int ret;

	memset(m, 0, sizeof(*m));
	m->img = img;
	if (h->l1_size < h->geom.l1_size) {
		qimgctl_err("%s: L1 table is too small (%u entries, %u needed)",
			    img->path, h->l1_size, h->geom.l1_size);
		return -EUCLEAN;
	}
	bytes = (u64)h->l1_size * 8;
	if (bytes > QIMG_MAX_L1_BYTES) {
		qimgctl_err("%s: L1 table is too large (%u entries)",
			    img->path, h->l1_size);
		return -EFBIG;
	}
	if (bytes && (!qimg_add_ok(h->l1_table_offset, bytes, &end) ||
		      end > img->file_size)) {
		qimgctl_err("%s: L1 table at %#" PRIx64 " extends past the end of the file",
			    img->path, (uint64_t)h->l1_table_offset);
		return -EUCLEAN;
	}
	m->l1_entries = h->l1_size;
	m->l2_bytes = h->geom.cluster_size;
	m->l1 = calloc(h->l1_size ? h->l1_size : 1, sizeof(u64));
	m->l2 = malloc(m->l2_bytes);
	if (!m->l1 || !m->l2) {
		qimgctl_err("%s: out of memory", img->path);
		qimgctl_mapper_fini(m);
		return -ENOMEM;
	}
	if (bytes) {
		ret = qimgctl_pread(img->fd, m->l1, bytes, h->l1_table_offset);
		if (ret) {
			qimgctl_err("%s: reading the L1 table: %s", img->path,
				    strerror(-ret));
			qimgctl_mapper_fini(m);
			return ret;
		}
	}
	for (i = 0; i < h->l1_size; i++)
		m->l1[i] = be64_to_cpu(m->l1[i]);
	m->data_size = img->file_size;
	if (h->incompatible_features & QIMG_INCOMPAT_DATA_FILE) {
		struct stat st;

		if (!h->has_data_file || !h->data_file[0]) {
			qimgctl_err("%s: image needs an external data file but does not name one",
				    img->path);
			qimgctl_mapper_fini(m);
			return -EUCLEAN;
		}
		/*
		 * qemu opens a relative data file name relative to the
		 * working directory, not to the image; do the same so both
		 * tools see the same file.
		 */
		m->data_path = strdup(h->data_file);
		if (!m->data_path) {
			qimgctl_err("out of memory");
			qimgctl_mapper_fini(m);
			return -ENOMEM;
		}
		if (stat(m->data_path, &st) < 0) {
			ret = -errno;
			qimgctl_err("%s: could not open data file '%s': %s",
				    img->path, m->data_path, strerror(errno));
			qimgctl_mapper_fini(m);
			return ret;
		}
		m->data_size = (u64)st.st_size;
	}
	return 0;
}

bool qimgctl_meta_prealloc(struct qimgctl_image *img)
{
	const struct qimg_geom *g = &img->h.geom;
	u64 real, threshold, end_cluster, count = 0, i, rt_entries;
	u64 rb_loaded = 0, raw_be, rb_off, rti;
	bool have_rb = false, yes = false;
	struct stat st;
	u8 *rb;

	if (fstat(img->fd, &st) < 0 || st.st_size < 0 || st.st_blocks < 0)
		return false;
	real = (u64)st.st_blocks * 512 / g->cluster_size;
	threshold = real * 10 / 9;
	if (threshold < real + 2)
		threshold = real + 2;
	end_cluster = ((u64)st.st_size + g->cluster_size - 1) >>
		      g->cluster_bits;
	rt_entries = ((u64)img->h.refcount_table_clusters <<
		      g->cluster_bits) / 8;
	rb = malloc(g->cluster_size);
	if (!rb)
		return false;
	for (i = 0; i < end_cluster && count < threshold; i++) {
		rti = i >> g->rb_bits;
		/* Clusters the refcount table does not cover count as free. */
		if (rti >= rt_entries)
			break;
		if (!have_rb || rb_loaded != rti) {
			if (qimgctl_pread(img->fd, &raw_be, 8,
					  img->h.refcount_table_offset +
					  rti * 8))
				goto out;
			rb_off = be64_to_cpu(raw_be) & QIMG_REFT_OFFSET_MASK;
			if (rb_off & (g->cluster_size - 1))
				goto out;
			if (!rb_off) {
				memset(rb, 0, g->cluster_size);
			} else if (qimgctl_pread(img->fd, rb, g->cluster_size,
						 rb_off)) {
				goto out;
			}
			have_rb = true;
			rb_loaded = rti;
		}
		if (qimg_refcount_get(rb, g->refcount_order,
				      i & (g->rb_entries - 1)))
			count++;
	}
	yes = count >= threshold;
out:
	free(rb);
	return yes;
}

void qimgctl_mapper_fini(struct qimgctl_mapper *m)
{
	free(m->l1);
	free(m->l2);
	free(m->data_path);
	m->l1 = NULL;
	m->l2 = NULL;
	m->data_path = NULL;
	m->l2_offset = 0;
}

int qimgctl_l2_raw(struct qimgctl_mapper *m, u64 l2_offset, u64 idx,
		   u64 *raw, u64 *bitmap)
{
	const struct qimg_geom *g = &m->img->h.geom;
	int ret;

	if (idx >= g->l2_entries) {
		qimgctl_err("%s: L2 entry %" PRIu64 " asked of the table at %#" PRIx64 ", which has %" PRIu64 " entries",
			    m->img->path, (uint64_t)idx, (uint64_t)l2_offset,
			    (uint64_t)g->l2_entries);
		return -EINVAL;
	}
	if (m->l2_offset != l2_offset) {
		m->l2_offset = 0;
		ret = qimgctl_pread(m->img->fd, m->l2, m->l2_bytes, l2_offset);
		if (ret) {
			qimgctl_err("%s: reading the L2 table at %#" PRIx64 ": %s",
				    m->img->path, (uint64_t)l2_offset,
				    strerror(-ret));
			return ret;
		}
		m->l2_offset = l2_offset;
	}
	*raw = get_unaligned_be64(m->l2 + (idx << g->l2_entry_shift));
	*bitmap = g->ext_l2 ?
		get_unaligned_be64(m->l2 + (idx << g->l2_entry_shift) + 8) : 0;
	return 0;
}

static void set_status(struct qimgctl_extent *ext, enum qimgctl_status st,
		       bool has_offset, u64 host)
{
	ext->status = st;
	ext->has_offset = has_offset;
	ext->host_offset = has_offset ? host : 0;
}

int qimgctl_map_status(struct qimgctl_mapper *m, u64 guest, u64 max,
		       struct qimgctl_extent *ext)
{
	struct qimgctl_image *img = m->img;
	const struct qimg_geom *g = &img->h.geom;
	struct qimg_err err = { "" };
	struct qimg_l2_entry e;
	u64 l1i, l2i, l2_offset, raw, bitmap, cstart, in_cl, end;
	bool copied;
	int ret;

	memset(ext, 0, sizeof(*ext));
	/* The callers stay inside the disk; say so if one does not. */
	if (guest >= g->virtual_size || !max) {
		qimgctl_err("%s: no block status for %" PRIu64 " bytes at offset %#" PRIx64 ": the virtual disk ends at %#" PRIx64,
			    img->path, (uint64_t)max, (uint64_t)guest,
			    (uint64_t)g->virtual_size);
		return -EINVAL;
	}
	l1i = qimg_l1_index(g, guest);
	if (l1i >= m->l1_entries) {
		qimgctl_err("%s: offset %#" PRIx64 " is beyond the L1 table",
			    img->path, (uint64_t)guest);
		return -EUCLEAN;
	}
	ret = qimg_l1_decode(g, m->l1[l1i], img->file_size, &l2_offset,
			     &copied, &err);
	if (ret) {
		qimgctl_err("%s: L1 entry %" PRIu64 ": %s", img->path,
			    (uint64_t)l1i, err.msg);
		return -EUCLEAN;
	}
	cstart = guest & ~(g->cluster_size - 1);
	in_cl = guest - cstart;
	if (!l2_offset) {
		/* The whole range this L2 table would map is unallocated. */
		end = (l1i + 1) << (g->l2_bits + g->cluster_bits);
		set_status(ext, QIMGCTL_ST_UNALLOC, false, 0);
		goto out;
	}
	l2i = qimg_l2_index(g, guest);
	ret = qimgctl_l2_raw(m, l2_offset, l2i, &raw, &bitmap);
	if (ret)
		return ret;
	ret = qimg_l2_decode(g, img->h.version, raw, bitmap, m->data_size,
			     &e, &err);
	if (ret) {
		qimgctl_err("%s: L2 entry %" PRIu64 " of the table at %#" PRIx64 ": %s",
			    img->path, (uint64_t)l2i, (uint64_t)l2_offset,
			    err.msg);
		return -EUCLEAN;
	}
	end = cstart + g->cluster_size;
	if (e.type == QIMG_CLUSTER_COMPRESSED) {
		/* Compressed data has no byte-addressable host location. */
		set_status(ext, QIMGCTL_ST_DATA, false, 0);
		ext->compressed = true;
	} else if (g->ext_l2) {
		unsigned int sc = (unsigned int)(in_cl >> g->subcluster_bits);
		bool has = e.host_offset != 0;

		end = cstart + ((u64)(sc + 1) << g->subcluster_bits);
		switch (qimg_subcluster_type(&e, sc)) {
		case QIMG_SUBCLUSTER_NORMAL:
			if (!has) {
				qimgctl_err("%s: L2 entry %" PRIu64 " of the table at %#" PRIx64 ": subcluster allocated without a cluster",
					    img->path, (uint64_t)l2i,
					    (uint64_t)l2_offset);
				return -EUCLEAN;
			}
			set_status(ext, QIMGCTL_ST_DATA, true,
				   e.host_offset + in_cl);
			break;
		case QIMG_SUBCLUSTER_ZERO:
			set_status(ext, QIMGCTL_ST_ZERO, has,
				   e.host_offset + in_cl);
			break;
		case QIMG_SUBCLUSTER_COMPRESSED:
			set_status(ext, QIMGCTL_ST_DATA, false, 0);
			ext->compressed = true;
			break;
		default:
			/*
			 * An unallocated subcluster of an allocated cluster
			 * still has a host location; qemu reports it.
			 */
			set_status(ext, QIMGCTL_ST_UNALLOC, has,
				   e.host_offset + in_cl);
			break;
		}
	} else {
		switch (e.type) {
		case QIMG_CLUSTER_NORMAL:
			set_status(ext, QIMGCTL_ST_DATA, true,
				   e.host_offset + in_cl);
			break;
		case QIMG_CLUSTER_ZERO_ALLOC:
			set_status(ext, QIMGCTL_ST_ZERO, true,
				   e.host_offset + in_cl);
			break;
		case QIMG_CLUSTER_ZERO_PLAIN:
			set_status(ext, QIMGCTL_ST_ZERO, false, 0);
			break;
		default:
			set_status(ext, QIMGCTL_ST_UNALLOC, false, 0);
			break;
		}
	}
	/* Encrypted data has no plaintext location to point at. */
	if (img->h.crypt_method)
		ext->has_offset = false;
out:
	if (end > g->virtual_size)
		end = g->virtual_size;
	ext->len = end - guest;
	if (ext->len > max)
		ext->len = max;
	return 0;
}

char *qimgctl_path_combine(const char *base, const char *rel)
{
	const char *slash;
	size_t dlen;
	char *out;

	slash = strrchr(base, '/');
	if (rel[0] == '/' || !slash)
		return strdup(rel);
	dlen = (size_t)(slash - base) + 1;
	out = malloc(dlen + strlen(rel) + 1);
	if (!out)
		return NULL;
	memcpy(out, base, dlen);
	strcpy(out + dlen, rel);
	return out;
}

int qimgctl_want_format(const char *fmt, unsigned int *flags)
{
	if (!strcmp(fmt, "qed")) {
		*flags |= QIMGCTL_CHAIN_ONLY_QED;
		return 0;
	}
	if (!strcmp(fmt, "qcow2")) {
		*flags |= QIMGCTL_CHAIN_ONLY_QCOW2;
		return 0;
	}
	qimgctl_err("only the qcow2 and qed formats are supported, not '%s'",
		    fmt);
	return -1;
}

int qimgctl_probe_format(int fd, enum qimgctl_fmt *fmt)
{
	unsigned char buf[4];
	int ret;

	ret = qimgctl_pread(fd, buf, sizeof(buf), 0);
	if (ret)
		return ret;
	if (get_unaligned_be32(buf) == QIMG_MAGIC)
		*fmt = QIMGCTL_FMT_QCOW2;
	else if (qimg_qed_probe(buf, sizeof(buf)))
		*fmt = QIMGCTL_FMT_QED;
	else
		*fmt = QIMGCTL_FMT_RAW;
	return 0;
}

static void node_free(struct qimgctl_node *n)
{
	if (!n)
		return;
	if (n->raw) {
		if (n->raw_fd >= 0)
			close(n->raw_fd);
	} else if (n->qed) {
		qimgctl_qed_close(n->qed);
		free(n->qed);
	} else {
		if (n->data_fd >= 0)
			close(n->data_fd);
		qimgctl_mapper_fini(&n->map);
		qimgctl_image_close(&n->img);
	}
	free(n->path);
	free(n);
}

void qimgctl_chain_close(struct qimgctl_node *top)
{
	while (top) {
		struct qimgctl_node *next = top->backing;

		node_free(top);
		top = next;
	}
}

/*
 * The format of the image the user named, when it may be qcow2 or QED:
 * "qed" when it starts with the QED magic, else "qcow2" (and the qcow2
 * opener says what is wrong with it).  The file is locked while it is
 * looked at, as QEMU locks before it reads.
 */
static const char *top_format(const char *path, unsigned int flags, int *ret)
{
	enum qimgctl_fmt f = QIMGCTL_FMT_QCOW2;
	int fd;

	*ret = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return "qcow2";
	*ret = qimgctl_lock_open_file(fd, path, flags);
	if (!*ret && qimgctl_probe_format(fd, &f))
		f = QIMGCTL_FMT_QCOW2;
	close(fd);
	return f == QIMGCTL_FMT_QED ? "qed" : "qcow2";
}

/* A QED chain element; @n->path is its name. */
static int node_open_qed(struct qimgctl_node *n, unsigned int flags)
{
	int ret;

	if (!(flags & QIMGCTL_CHAIN_QED)) {
		qimgctl_err("%s: QED images are not supported by this command",
			    n->path);
		return -EOPNOTSUPP;
	}
	n->qed = calloc(1, sizeof(*n->qed));
	if (!n->qed) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	ret = qimgctl_qed_open(n->qed, n->path, flags,
			       flags & QIMGCTL_CHAIN_HEADERS);
	if (ret) {
		free(n->qed);
		n->qed = NULL;
		return ret;
	}
	n->length = n->qed->h.image_size;
	return 0;
}

/*
 * Open one chain element; @fmt is "", "qcow2", "qed" or "raw".  @backing:
 * it is a backing file (for the wording of errors).  @flags: QIMGCTL_OPEN_*
 * and QIMGCTL_CHAIN_* for this file.
 */
static int node_open(struct qimgctl_node **out, char *path, const char *fmt,
		     bool backing, unsigned int flags, const struct stat *st)
{
	bool write = flags & QIMGCTL_OPEN_WRITE;
	enum qimgctl_fmt probed;
	struct qimgctl_node *n;
	struct stat fst;
	int ret;

	n = calloc(1, sizeof(*n));
	if (!n) {
		free(path);
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	n->path = path;
	n->raw_fd = -1;
	n->data_fd = -1;
	n->img.fd = -1;
	n->dev = st->st_dev;
	n->ino = st->st_ino;
	if (!strcmp(fmt, "qed") && (flags & QIMGCTL_CHAIN_QED)) {
		if (backing && access(path, R_OK) < 0) {
			ret = -errno;
			qimgctl_err("%s: could not open backing file: %s",
				    path, strerror(errno));
			goto fail;
		}
		ret = node_open_qed(n, flags);
		if (ret)
			goto fail;
		*out = n;
		return 0;
	}
	if (strcmp(fmt, "qcow2")) {
		if (strcmp(fmt, "raw") && fmt[0]) {
			qimgctl_err("%s: backing file format '%s' is not supported (only qcow2 and raw)",
				    path, fmt);
			ret = -EOPNOTSUPP;
			goto fail;
		}
		n->raw_fd = open(path, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (n->raw_fd < 0) {
			ret = -errno;
			qimgctl_err("%s: could not open backing file: %s",
				    path, strerror(errno));
			goto fail;
		}
		ret = qimgctl_lock_open_file(n->raw_fd, path, flags);
		if (ret)
			goto fail;
		if (!fmt[0]) {
			ret = qimgctl_probe_format(n->raw_fd, &probed);
			if (ret) {
				qimgctl_err("%s: %s", path, strerror(-ret));
				goto fail;
			}
			n->raw = probed == QIMGCTL_FMT_RAW;
			if (!n->raw) {
				close(n->raw_fd);
				n->raw_fd = -1;
			}
			if (probed == QIMGCTL_FMT_QED) {
				ret = node_open_qed(n, flags);
				if (ret)
					goto fail;
				*out = n;
				return 0;
			}
		} else {
			n->raw = true;
		}
	}
	if (n->raw) {
		if (fstat(n->raw_fd, &fst) < 0) {
			ret = -errno;
			qimgctl_err("%s: %s", path, strerror(errno));
			goto fail;
		}
		/* The block layer sees raw files in whole sectors. */
		n->length = ((u64)fst.st_size + 511) & ~511ULL;
		*out = n;
		return 0;
	}
	/* Say which file is missing: the user named only the top one. */
	if (backing && access(path, R_OK) < 0) {
		ret = -errno;
		qimgctl_err("%s: could not open backing file: %s", path,
			    strerror(errno));
		goto fail;
	}
	ret = qimgctl_image_open(&n->img, path, flags);
	if (ret)
		goto fail;
	if (!(flags & QIMGCTL_CHAIN_HEADERS)) {
		ret = qimgctl_mapper_init(&n->map, &n->img);
		if (ret) {
			qimgctl_image_close(&n->img);
			goto fail;
		}
	}
	n->length = n->img.h.size;
	*out = n;
	return 0;
fail:
	n->raw = false;
	if (n->raw_fd >= 0)
		close(n->raw_fd);
	free(n->path);
	free(n);
	return ret;
}

int qimgctl_chain_open(struct qimgctl_node **top, const char *path,
		       const char *fmt, unsigned int flags)
{
	struct qimgctl_node *n = NULL, *m, **link = top;
	char *p = strdup(path);
	bool backing = fmt != NULL;
	unsigned int nflags = flags & ~(QIMGCTL_CHAIN_ONLY_QED |
					QIMGCTL_CHAIN_ONLY_QCOW2);
	const char *bname, *bfmt;
	struct stat st;
	int depth, ret;

	*top = NULL;
	if (!p) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	if (!fmt && (flags & QIMGCTL_CHAIN_ONLY_QCOW2)) {
		fmt = "qcow2";
	} else if (!fmt && (flags & QIMGCTL_CHAIN_ONLY_QED)) {
		fmt = "qed";
	} else if (!fmt && (flags & QIMGCTL_CHAIN_QED)) {
		fmt = top_format(p, flags, &ret);
		if (ret) {
			free(p);
			return ret;
		}
	} else if (!fmt) {
		fmt = "qcow2";
	}
	for (depth = 0;; depth++) {
		/*
		 * The same file twice would be a loop, whatever the names
		 * say; find it before opening (and locking) it again.
		 */
		if (stat(p, &st) < 0) {
			ret = -errno;
			if (backing || depth)
				qimgctl_err("%s: could not open backing file: %s",
					    p, strerror(errno));
			else
				qimgctl_err("%s: %s", p, strerror(errno));
			free(p);
			goto fail;
		}
		for (m = *top; m; m = m->backing) {
			if (m->dev == st.st_dev && m->ino == st.st_ino) {
				qimgctl_err("%s: backing chain loop: the backing file of '%s' is '%s' again",
					    path, n->path, m->path);
				free(p);
				ret = -ELOOP;
				goto fail;
			}
		}
		ret = node_open(&n, p, fmt, backing || depth, nflags, &st);
		if (ret)
			goto fail;
		*link = n;
		link = &n->backing;
		if ((flags & QIMGCTL_CHAIN_NO_BACKING) || n->raw)
			return 0;
		if (n->qed) {
			bname = n->qed->backing;
			/* QED names a format only for raw: others are probed. */
			bfmt = n->qed->h.backing_raw ? "raw" : "";
		} else {
			bname = n->img.h.backing_file;
			bfmt = n->img.h.backing_fmt;
		}
		if (!bname[0])
			return 0;
		if (depth + 1 >= QIMGCTL_MAX_CHAIN) {
			qimgctl_err("%s: backing chain is longer than %d images",
				    path, QIMGCTL_MAX_CHAIN);
			ret = -ELOOP;
			goto fail;
		}
		p = qimgctl_path_combine(n->path, bname);
		if (!p) {
			qimgctl_err("out of memory");
			ret = -ENOMEM;
			goto fail;
		}
		fmt = bfmt;
		/* QEMU opens backing files read-only. */
		nflags = flags & ~QIMGCTL_OPEN_WRITE;
	}
fail:
	qimgctl_chain_close(*top);
	*top = NULL;
	return ret;
}

/* The first dirty journal of @chain; @backing: @chain is a backing file. */
static int chain_refuse_dirty(const struct qimgctl_node *chain, bool backing,
			      const char *alt, const char *fmt, va_list ap)
{
	const struct qimgctl_node *n;
	char what[2 * PATH_MAX];

	for (n = chain; n; n = n->backing) {
		if (n->raw || n->qed ||
		    !(n->img.h.incompatible_features &
		      QIMG_INCOMPAT_JOURNAL_DIRTY))
			continue;
		vsnprintf(what, sizeof(what), fmt, ap);
		if (n == chain && !backing)
			qimgctl_err("%s: Unsupported qcow2 feature(s): journal dirty (replay it with 'qimgctl check -r all %s'%s)",
				    what, n->path, alt);
		else
			qimgctl_err("%s: Could not open backing file %s: Unsupported qcow2 feature(s): journal dirty (replay it with 'qimgctl check -r all %s'%s)",
				    what, n->path, n->path, alt);
		return -EOPNOTSUPP;
	}
	return 0;
}

int qimgctl_chain_refuse_dirty(const struct qimgctl_node *chain,
			       const char *alt, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = chain_refuse_dirty(chain, false, alt, fmt, ap);
	va_end(ap);
	return ret;
}

static int refuse_dirty_backing(const struct qimgctl_node *chain,
				const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = chain_refuse_dirty(chain, true, "", fmt, ap);
	va_end(ap);
	return ret;
}

/* Backing files are QEMU's read opens: locked for reading unless -U. */
static int lock_chain(struct qimgctl_node *n, bool share)
{
	int ret = 0;

	for (; !ret && !share && n; n = n->backing)
		ret = qimgctl_lock_image(qimgctl_node_fd(n), n->path,
					 QIMGCTL_LOCK_READ, false);
	return ret;
}

int qimgctl_backing_usable(const char *path, const char *bname,
			   const char *bfmt, bool share)
{
	struct qimgctl_node *chain;
	char *p = qimgctl_path_combine(path, bname);
	int ret;

	if (!p) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	ret = qimgctl_chain_open(&chain, p, bfmt,
				 QIMGCTL_OPEN_SHARE | QIMGCTL_OPEN_JOURNAL_OK |
				 QIMGCTL_CHAIN_HEADERS | QIMGCTL_CHAIN_QED);
	free(p);
	if (ret)
		return ret;
	ret = refuse_dirty_backing(chain, "Could not open '%s'", path);
	if (!ret)
		ret = lock_chain(chain, share);
	qimgctl_chain_close(chain);
	return ret;
}

int qimgctl_backing_chain_usable(const char *path, bool share)
{
	struct qimgctl_node *chain;
	int ret;

	/*
	 * The image itself again, sharing everything (the caller holds its
	 * locks); a dirty journal is let through to be named below.
	 */
	ret = qimgctl_chain_open(&chain, path, NULL,
				 QIMGCTL_OPEN_SHARE | QIMGCTL_OPEN_JOURNAL_OK |
				 QIMGCTL_CHAIN_HEADERS | QIMGCTL_CHAIN_QED |
				 QIMGCTL_CHAIN_ONLY_QCOW2);
	if (ret)
		return ret;
	/* The image's own dirty journal is its caller's business. */
	if (!(chain->img.h.incompatible_features &
	      QIMG_INCOMPAT_JOURNAL_DIRTY))
		ret = qimgctl_chain_refuse_dirty(chain, "",
						 "Could not open '%s'", path);
	if (!ret)
		ret = lock_chain(chain->backing, share);
	qimgctl_chain_close(chain);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Output helpers                                                           */

static void json_indent(FILE *f, int level)
{
	fprintf(f, "%*s", level * 4, "");
}

/*
 * Decode one UTF-8 sequence; invalid bytes become U+FFFD, one at a time,
 * the way qemu's JSON writer treats them.
 */
static u32 utf8_next(const unsigned char **sp)
{
	const unsigned char *s = *sp;
	u32 cp, min;
	int n, i;

	if (s[0] < 0x80) {
		*sp = s + 1;
		return s[0];
	} else if ((s[0] & 0xe0) == 0xc0) {
		n = 1; cp = s[0] & 0x1f; min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 2; cp = s[0] & 0x0f; min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 3; cp = s[0] & 0x07; min = 0x10000;
	} else {
		*sp = s + 1;
		return 0xfffd;
	}
	for (i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			*sp = s + 1;
			return 0xfffd;
		}
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	*sp = s + n + 1;
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0xfffd;
	return cp;
}

static void json_string(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	u32 cp;

	fputc('"', f);
	while (*s) {
		cp = utf8_next(&s);
		switch (cp) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\b':
			fputs("\\b", f);
			break;
		case '\f':
			fputs("\\f", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (cp >= 0x10000) {
				cp -= 0x10000;
				fprintf(f, "\\u%04X\\u%04X", 0xd800 + (cp >> 10),
					0xdc00 + (cp & 0x3ff));
			} else if (cp < 0x20 || cp >= 0x7f) {
				fprintf(f, "\\u%04X", cp);
			} else {
				fputc((int)cp, f);
			}
		}
	}
	fputc('"', f);
}

static void json_value(FILE *f, struct json_object *o, int level)
{
	const char *sep = "";
	size_t i, n;

	switch (json_object_get_type(o)) {
	case json_type_object:
		fputc('{', f);
		json_object_object_foreach(o, key, val) {
			fprintf(f, "%s\n", sep);
			json_indent(f, level + 1);
			json_string(f, key);
			fputs(": ", f);
			json_value(f, val, level + 1);
			sep = ",";
		}
		fputc('\n', f);
		json_indent(f, level);
		fputc('}', f);
		break;
	case json_type_array:
		fputc('[', f);
		n = json_object_array_length(o);
		for (i = 0; i < n; i++) {
			fprintf(f, "%s\n", sep);
			json_indent(f, level + 1);
			json_value(f, json_object_array_get_idx(o, i),
				   level + 1);
			sep = ",";
		}
		fputc('\n', f);
		json_indent(f, level);
		fputc(']', f);
		break;
	case json_type_boolean:
		fputs(json_object_get_boolean(o) ? "true" : "false", f);
		break;
	case json_type_int:
		/* json-c keeps the sign; large unsigned values stay exact. */
		if (json_object_get_int64(o) == INT64_MAX)
			fprintf(f, "%" PRIu64, json_object_get_uint64(o));
		else
			fprintf(f, "%" PRId64, json_object_get_int64(o));
		break;
	case json_type_string:
		json_string(f, json_object_get_string(o));
		break;
	case json_type_double:
		fprintf(f, "%.17g", json_object_get_double(o));
		break;
	default:
		fputs("null", f);
		break;
	}
}

void qimgctl_json_print(FILE *f, struct json_object *obj)
{
	json_value(f, obj, 0);
	fputc('\n', f);
}

void qimgctl_size_str(u64 val, char *buf, size_t len)
{
	static const char *const sfx[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi",
					   "Ei" };
	int e = 0, i;

	/*
	 * Pick the unit so the number shown stays below 1000 (hence the
	 * 1000/1024 correction before taking the binary exponent).
	 */
	frexp((double)val / (1000.0 / 1024.0), &e);
	i = (e - 1) / 10;
	if (i < 0)
		i = 0;
	if (i > 6)
		i = 6;
	snprintf(buf, len, "%0.3g %sB", (double)val / (double)(1ULL << (i * 10)),
		 sfx[i]);
}

int qimgctl_bitmaps_each(struct qimgctl_image *img,
			 int (*fn)(void *ctx, const struct qimg_bitmap *b),
			 void *ctx)
{
	const struct qimg_header *h = &img->h;
	struct qimg_err err = { "" };
	u64 size = h->bitmap_directory_size, pos = 0, end;
	struct qimg_bitmap b;
	u8 *dir;
	u32 i;
	int ret;

	if (size > QIMG_MAX_BITMAP_DIR_SIZE ||
	    !qimg_add_ok(h->bitmap_directory_offset, size, &end) ||
	    end > img->file_size) {
		qimgctl_err("%s: bitmap directory is out of bounds", img->path);
		return -EUCLEAN;
	}
	dir = malloc(size ? size : 1);
	if (!dir) {
		qimgctl_err("%s: out of memory", img->path);
		return -ENOMEM;
	}
	ret = qimgctl_pread(img->fd, dir, size, h->bitmap_directory_offset);
	if (ret) {
		qimgctl_err("%s: reading the bitmap directory: %s", img->path,
			    strerror(-ret));
		goto out;
	}
	for (i = 0; i < h->nb_bitmaps; i++) {
		if (pos >= size) {
			qimgctl_err("%s: bitmap directory is shorter than its %u entries",
				    img->path, h->nb_bitmaps);
			ret = -EUCLEAN;
			goto out;
		}
		ret = qimg_bitmap_decode(&h->geom, dir + pos, size - pos,
					 img->file_size, &b, &err);
		if (ret) {
			qimgctl_err("%s: bitmap %u: %s", img->path, i, err.msg);
			goto out;
		}
		if (!b.entry_len || b.entry_len > size - pos) {
			qimgctl_err("%s: bitmap %u: bad entry length",
				    img->path, i);
			ret = -EUCLEAN;
			goto out;
		}
		pos += b.entry_len;
		ret = fn(ctx, &b);
		if (ret)
			goto out;
	}
out:
	free(dir);
	return ret;
}
