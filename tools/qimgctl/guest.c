// SPDX-License-Identifier: GPL-2.0
/*
 * Guest contents of a backing chain: reads through the chain, and the
 * block status qemu's block layer would report (see guest.h).
 *
 * The status model follows qemu's layering: a qcow2 node reports a run of
 * (sub)clusters of one type inside one L2 table, as its cluster lookup
 * does (compressed clusters one at a time, allocated ones only while the
 * host offsets stay contiguous); the generic layer then marks data and
 * zero runs allocated, makes unallocated runs without anything below read
 * as zero, asks the image file about data of metadata-preallocated images
 * and sets EOF; the chain walk descends while a run is unallocated.  Every
 * table entry goes through the format core's decoders.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "guest.h"

/* qemu's subcluster types. */
enum sc_type {
	SC_UNALLOC_PLAIN,
	SC_UNALLOC_ALLOC,
	SC_ZERO_PLAIN,
	SC_ZERO_ALLOC,
	SC_NORMAL,
	SC_COMPRESSED,
};

static int l2_entry_at(struct qimgctl_node *n, u64 guest, bool *mapped,
		       struct qimg_l2_entry *e)
{
	struct qimgctl_mapper *m = &n->map;
	const struct qimg_geom *g = &n->img.h.geom;
	struct qimg_err err = { "" };
	u64 l1i, l2_offset, raw, bitmap, l2i;
	bool copied;
	int ret;

	*mapped = false;
	l1i = qimg_l1_index(g, guest);
	if (l1i >= m->l1_entries)
		return 0;
	if (qimg_l1_decode(g, m->l1[l1i], n->img.file_size, &l2_offset,
			   &copied, &err)) {
		qimgctl_err("%s: L1 entry %" PRIu64 ": %s", n->path,
			    (uint64_t)l1i, err.msg);
		return -EUCLEAN;
	}
	if (!l2_offset)
		return 0;
	l2i = qimg_l2_index(g, guest);
	ret = qimgctl_l2_raw(m, l2_offset, l2i, &raw, &bitmap);
	if (ret)
		return ret;
	if (qimg_l2_decode(g, n->img.h.version, raw, bitmap, m->data_size, e,
			   &err)) {
		qimgctl_err("%s: L2 entry %" PRIu64 " of the table at %#" PRIx64 ": %s",
			    n->path, (uint64_t)l2i, (uint64_t)l2_offset,
			    err.msg);
		return -EUCLEAN;
	}
	*mapped = true;
	return 0;
}

static enum sc_type sc_type_of(const struct qimg_l2_entry *e, unsigned int sc)
{
	bool has = e->host_offset != 0;

	if (e->ext_l2 && e->type != QIMG_CLUSTER_COMPRESSED) {
		switch (qimg_subcluster_type(e, sc)) {
		case QIMG_SUBCLUSTER_NORMAL:
			return SC_NORMAL;
		case QIMG_SUBCLUSTER_ZERO:
			return has ? SC_ZERO_ALLOC : SC_ZERO_PLAIN;
		case QIMG_SUBCLUSTER_COMPRESSED:
			return SC_COMPRESSED;
		default:
			return has ? SC_UNALLOC_ALLOC : SC_UNALLOC_PLAIN;
		}
	}
	switch (e->type) {
	case QIMG_CLUSTER_NORMAL:
		return SC_NORMAL;
	case QIMG_CLUSTER_ZERO_ALLOC:
		return SC_ZERO_ALLOC;
	case QIMG_CLUSTER_ZERO_PLAIN:
		return SC_ZERO_PLAIN;
	case QIMG_CLUSTER_COMPRESSED:
		return SC_COMPRESSED;
	default:
		return SC_UNALLOC_PLAIN;
	}
}

/*
 * qemu's cluster lookup for block status: the type at @off and how many
 * bytes from @off (at most @bytes) share it; *host the host offset of
 * @off for types that have one.
 */
static int qcow2_run(struct qimgctl_node *n, u64 off, u64 bytes, u64 *pnum,
		     enum sc_type *type, u64 *host)
{
	const struct qimg_geom *g = &n->img.h.geom;
	unsigned int scb = g->ext_l2 ? g->subcluster_bits : g->cluster_bits;
	unsigned int spc = g->ext_l2 ? 32 : 1, sc_index, first, j;
	u64 in_cl = off & (g->cluster_size - 1);
	u64 l2i = qimg_l2_index(g, off), needed, avail, nb, i, count = 0;
	u64 expected = 0, cl_host;
	struct qimg_l2_entry e;
	bool mapped, check_off = false;
	enum sc_type t, first_t = SC_UNALLOC_PLAIN;
	int ret;

	*host = 0;
	needed = bytes + in_cl;
	avail = (g->l2_entries - l2i) << g->cluster_bits;
	if (needed > avail)
		needed = avail;
	sc_index = (unsigned int)(in_cl >> scb);
	ret = l2_entry_at(n, off, &mapped, &e);
	if (ret)
		return ret;
	if (!mapped) {
		*type = SC_UNALLOC_PLAIN;
		goto out;
	}
	nb = (needed + g->cluster_size - 1) >> g->cluster_bits;
	for (i = 0; i < nb; i++) {
		u64 guest = (off - in_cl) + (i << g->cluster_bits);

		first = i ? 0 : sc_index;
		if (i) {
			ret = l2_entry_at(n, guest, &mapped, &e);
			if (ret)
				return ret;
		}
		t = sc_type_of(&e, first);
		cl_host = e.type == QIMG_CLUSTER_COMPRESSED ? 0 : e.host_offset;
		if (!i) {
			first_t = t;
			if (t == SC_COMPRESSED) {
				count = spc - sc_index;
				break;
			}
			check_off = t == SC_NORMAL || t == SC_ZERO_ALLOC ||
				    t == SC_UNALLOC_ALLOC;
			expected = cl_host;
			*host = cl_host + in_cl;
		} else if (t != first_t) {
			break;
		} else if (check_off) {
			expected += g->cluster_size;
			if (expected != cl_host)
				break;
		}
		for (j = first; j < spc && sc_type_of(&e, j) == t; j++)
			count++;
		if (j < spc)
			break;
	}
	*type = first_t;
	avail = ((u64)count + sc_index) << scb;
out:
	if (avail > needed)
		avail = needed;
	*pnum = avail - in_cl;
	return 0;
}

/* A file's status (qemu's file driver): data or hole runs from lseek. */
static int file_status(int fd, u64 total, u64 off, u64 bytes, u64 *pnum)
{
	off_t data, hole;
	int st;

	if (off >= total) {
		*pnum = 0;
		return QIMGCTL_BS_EOF;
	}
	if (bytes > total - off)
		bytes = total - off;
	*pnum = bytes;
	data = lseek(fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		/* ENXIO: a hole up to the end; other errors: assume data. */
		st = errno == ENXIO ? QIMGCTL_BS_ZERO : QIMGCTL_BS_DATA;
	} else if ((u64)data > off) {
		st = QIMGCTL_BS_ZERO;
		if ((u64)data - off < bytes)
			*pnum = (u64)data - off;
	} else {
		st = QIMGCTL_BS_DATA;
		hole = lseek(fd, (off_t)off, SEEK_HOLE);
		if (hole > data && (u64)hole - off < bytes)
			*pnum = (u64)hole - off;
	}
	st |= QIMGCTL_BS_OFFSET_VALID | QIMGCTL_BS_ALLOCATED;
	if (off + *pnum == total)
		st |= QIMGCTL_BS_EOF;
	return st;
}

static u64 sectors_of(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0 || st.st_size < 0)
		return 0;
	return ((u64)st.st_size + 511) & ~511ULL;
}

static int data_fd(struct qimgctl_node *n)
{
	if (!n->map.data_path)
		return n->img.fd;
	if (n->data_fd < 0) {
		n->data_fd = open(n->map.data_path, O_RDONLY | O_CLOEXEC);
		if (n->data_fd < 0)
			qimgctl_err("%s: could not open data file '%s': %s",
				    n->path, n->map.data_path,
				    strerror(errno));
	}
	return n->data_fd;
}

/* bdrv_co_block_status() of one node. */
static int node_status(struct qimgctl_node *n, u64 off, u64 bytes, u64 *pnum)
{
	u64 total = n->length, host, fpnum;
	enum sc_type t;
	int st = 0, st2, fd, ret;

	if (off >= total) {
		*pnum = 0;
		return QIMGCTL_BS_EOF;
	}
	if (bytes > total - off)
		bytes = total - off;
	if (n->raw) {
		st = file_status(n->raw_fd, total, off, bytes, pnum);
		goto out;
	}
	ret = qcow2_run(n, off, bytes, pnum, &t, &host);
	if (ret)
		return ret;
	if ((t == SC_NORMAL || t == SC_ZERO_ALLOC || t == SC_UNALLOC_ALLOC) &&
	    !n->img.h.crypt_method)
		st |= QIMGCTL_BS_OFFSET_VALID;
	if (t == SC_ZERO_PLAIN || t == SC_ZERO_ALLOC)
		st |= QIMGCTL_BS_ZERO;
	else if (t != SC_UNALLOC_PLAIN && t != SC_UNALLOC_ALLOC)
		st |= QIMGCTL_BS_DATA;
	if (st & (QIMGCTL_BS_DATA | QIMGCTL_BS_ZERO))
		st |= QIMGCTL_BS_ALLOCATED;
	else if (!n->backing || off >= n->backing->length)
		st |= QIMGCTL_BS_ZERO;
	if ((st & QIMGCTL_BS_DATA) && (st & QIMGCTL_BS_OFFSET_VALID)) {
		if (!n->prealloc_known) {
			n->prealloc = qimgctl_meta_prealloc(&n->img);
			n->prealloc_known = true;
		}
		fd = n->prealloc ? data_fd(n) : -1;
		if (fd >= 0) {
			st2 = file_status(fd, sectors_of(fd), host, *pnum,
					  &fpnum);
			if ((st2 & QIMGCTL_BS_EOF) &&
			    (!fpnum || (st2 & QIMGCTL_BS_ZERO))) {
				st |= QIMGCTL_BS_ZERO;
			} else {
				*pnum = fpnum;
				st |= st2 & QIMGCTL_BS_ZERO;
			}
		}
	}
out:
	if (off + *pnum == total)
		st |= QIMGCTL_BS_EOF;
	return st;
}

int qimgctl_chain_status(struct qimgctl_node *top, u64 off, u64 bytes,
			 u64 *pnum)
{
	struct qimgctl_node *p;
	u64 eof = 0;
	int st;

	st = node_status(top, off, bytes, pnum);
	if (st < 0 || !*pnum || (st & QIMGCTL_BS_ALLOCATED))
		return st;
	if (st & QIMGCTL_BS_EOF)
		eof = off + *pnum;
	bytes = *pnum;
	for (p = top->backing; p; p = p->backing) {
		st = node_status(p, off, bytes, pnum);
		if (st < 0)
			return st;
		if (!*pnum) {
			/* Zeroes past a short backing file count as its own. */
			*pnum = bytes;
			st = QIMGCTL_BS_ZERO | QIMGCTL_BS_ALLOCATED;
			break;
		}
		if (st & QIMGCTL_BS_ALLOCATED) {
			st &= ~QIMGCTL_BS_EOF;
			break;
		}
		bytes = *pnum;
	}
	if (eof && off + *pnum == eof)
		st |= QIMGCTL_BS_EOF;
	return st;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */

static int decompress(struct qimgctl_node *n, const struct qimg_l2_entry *e,
		      u8 *out)
{
	const struct qimg_geom *g = &n->img.h.geom;
	u64 end = n->img.file_size, len = e->compressed_len;
	u8 *in;
	int ret = -EUCLEAN;

	if (e->host_offset >= end)
		goto bad;
	if (len > end - e->host_offset)
		len = end - e->host_offset;
	if (len > 2 * g->cluster_size)
		len = 2 * g->cluster_size;
	in = malloc(len ? len : 1);
	if (!in) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	ret = qimgctl_pread(n->img.fd, in, len, e->host_offset);
	if (ret) {
		qimgctl_err("%s: reading a compressed cluster: %s", n->path,
			    strerror(-ret));
		free(in);
		return ret;
	}
	ret = -EUCLEAN;
	if (n->img.h.compression_type == QIMG_COMPRESSION_ZSTD) {
		ZSTD_DStream *zs = ZSTD_createDStream();
		ZSTD_inBuffer ib = { in, len, 0 };
		ZSTD_outBuffer ob = { out, g->cluster_size, 0 };
		size_t zr = 1;

		if (zs && !ZSTD_isError(ZSTD_initDStream(zs))) {
			while (ob.pos < ob.size && ib.pos < ib.size) {
				zr = ZSTD_decompressStream(zs, &ob, &ib);
				if (ZSTD_isError(zr) || !zr)
					break;
			}
			if (!ZSTD_isError(zr) && ob.pos == ob.size)
				ret = 0;
		}
		ZSTD_freeDStream(zs);
	} else {
		z_stream s;
		int zr;

		memset(&s, 0, sizeof(s));
		if (inflateInit2(&s, -12) == Z_OK) {
			s.next_in = in;
			s.avail_in = (uInt)len;
			s.next_out = out;
			s.avail_out = (uInt)g->cluster_size;
			zr = inflate(&s, Z_FINISH);
			if ((zr == Z_STREAM_END || zr == Z_BUF_ERROR) &&
			    !s.avail_out)
				ret = 0;
			inflateEnd(&s);
		}
	}
	free(in);
	if (!ret)
		return 0;
bad:
	qimgctl_err("%s: compressed cluster at %#" PRIx64 " does not decompress",
		    n->path, (uint64_t)e->host_offset);
	return -EUCLEAN;
}

static int read_compressed(struct qimgctl_node *n, u64 off, u8 *buf, u64 len)
{
	const struct qimg_geom *g = &n->img.h.geom;
	struct qimg_l2_entry e;
	bool mapped;
	u8 *cl;
	int ret;

	ret = l2_entry_at(n, off, &mapped, &e);
	if (ret)
		return ret;
	if (!mapped || e.type != QIMG_CLUSTER_COMPRESSED) {
		qimgctl_err("%s: cluster at guest offset %#" PRIx64 " changed while being read",
			    n->path, (uint64_t)off);
		return -EIO;
	}
	cl = malloc(g->cluster_size);
	if (!cl) {
		qimgctl_err("out of memory");
		return -ENOMEM;
	}
	ret = decompress(n, &e, cl);
	if (!ret)
		memcpy(buf, cl + (off & (g->cluster_size - 1)), len);
	free(cl);
	return ret;
}

static int node_read(struct qimgctl_node *n, u64 off, u8 *buf, u64 len)
{
	struct qimgctl_extent ext;
	u64 chunk;
	int ret, fd;

	while (len) {
		if (off >= n->length) {
			memset(buf, 0, len);
			return 0;
		}
		chunk = len;
		if (chunk > n->length - off)
			chunk = n->length - off;
		if (n->raw) {
			ret = qimgctl_pread(n->raw_fd, buf, chunk, off);
			if (ret) {
				qimgctl_err("%s: read at %" PRIu64 ": %s",
					    n->path, (uint64_t)off,
					    strerror(-ret));
				return ret;
			}
			goto next;
		}
		if (n->img.h.crypt_method) {
			qimgctl_err("%s: encrypted images cannot be read", n->path);
			return -EOPNOTSUPP;
		}
		ret = qimgctl_map_status(&n->map, off, chunk, &ext);
		if (ret)
			return ret;
		chunk = ext.len;
		switch (ext.status) {
		case QIMGCTL_ST_DATA:
			if (ext.compressed) {
				ret = read_compressed(n, off, buf, chunk);
				if (ret)
					return ret;
				break;
			}
			fd = data_fd(n);
			if (fd < 0)
				return -EIO;
			ret = qimgctl_pread(fd, buf, chunk, ext.host_offset);
			if (ret) {
				qimgctl_err("%s: read at %#" PRIx64 ": %s",
					    n->path, (uint64_t)ext.host_offset,
					    strerror(-ret));
				return ret;
			}
			break;
		case QIMGCTL_ST_ZERO:
			memset(buf, 0, chunk);
			break;
		default:
			if (n->backing) {
				ret = node_read(n->backing, off, buf, chunk);
				if (ret)
					return ret;
			} else {
				memset(buf, 0, chunk);
			}
			break;
		}
next:
		off += chunk;
		buf += chunk;
		len -= chunk;
	}
	return 0;
}

int qimgctl_guest_read(struct qimgctl_node *top, u64 off, void *buf,
		       size_t len)
{
	return node_read(top, off, buf, len);
}
