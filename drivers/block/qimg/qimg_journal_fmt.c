// SPDX-License-Identifier: GPL-2.0
/*
 * qimg metadata journal, format core: encoders and the recovery passes.
 *
 * The passes follow the shape of fs/jbd2/recovery.c (one walker run in
 * three modes: scan, revoke, replay) but the format is qimg's own,
 * Documentation/block/qimg-format.rst section 5.1.  No I/O except through
 * the caller's callbacks, no allocation: the same file builds into the
 * kernel module, qimgctl, the unit tests and the fuzzer.
 *
 * Every field read from the journal is untrusted.  Two kinds of bad block
 * are told apart: one that fails its magic, sequence number or checksum is
 * a write that never completed and ends the log; one whose checksum is
 * right but whose fields are wrong was written that way, and is -EUCLEAN.
 */
#include "qimg_journal_fmt.h"

static const u32 qimg_crc32c_table[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4,
	0xc79a971f, 0x35f1141c, 0x26a1e7e8, 0xd4ca64eb,
	0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
	0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24,
	0x105ec76f, 0xe235446c, 0xf165b798, 0x030e349b,
	0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
	0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54,
	0x5d1d08bf, 0xaf768bbc, 0xbc267848, 0x4e4dfb4b,
	0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
	0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35,
	0xaa64d611, 0x580f5512, 0x4b5fa6e6, 0xb93425e5,
	0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
	0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45,
	0xf779deae, 0x05125dad, 0x1642ae59, 0xe4292d5a,
	0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
	0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595,
	0x417b1dbc, 0xb3109ebf, 0xa0406d4b, 0x522bee48,
	0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
	0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687,
	0x0c38d26c, 0xfe53516f, 0xed03a29b, 0x1f682198,
	0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38,
	0xdbfc821c, 0x2997011f, 0x3ac7f2eb, 0xc8ac71e8,
	0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
	0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096,
	0xa65c047d, 0x5437877e, 0x4767748a, 0xb50cf789,
	0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
	0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46,
	0x7198540d, 0x83f3d70e, 0x90a324fa, 0x62c8a7f9,
	0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
	0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36,
	0x3cdb9bdd, 0xceb018de, 0xdde0eb2a, 0x2f8b6829,
	0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
	0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93,
	0x082f63b7, 0xfa44e0b4, 0xe9141340, 0x1b7f9043,
	0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
	0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3,
	0x55326b08, 0xa759e80b, 0xb4091bff, 0x466298fc,
	0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
	0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033,
	0xa24bb5a6, 0x502036a5, 0x4370c551, 0xb11b4652,
	0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d,
	0xef087a76, 0x1d63f975, 0x0e330a81, 0xfc588982,
	0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
	0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622,
	0x38cc2a06, 0xcaa7a905, 0xd9f75af1, 0x2b9cd9f2,
	0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
	0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530,
	0x0417b1db, 0xf67c32d8, 0xe52cc12c, 0x1747422f,
	0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
	0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0,
	0xd3d3e1ab, 0x21b862a8, 0x32e8915c, 0xc083125f,
	0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
	0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90,
	0x9e902e7b, 0x6cfbad78, 0x7fab5e8c, 0x8dc0dd8f,
	0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
	0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1,
	0x69e9f0d5, 0x9b8273d6, 0x88d28022, 0x7ab90321,
	0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
	0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81,
	0x34f4f86a, 0xc69f7b69, 0xd5cf889d, 0x27a40b9e,
	0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

u32 qimg_crc32c(u32 crc, const void *buf, size_t len)
{
	const u8 *p = buf;

	crc = ~crc;
	while (len--)
		crc = qimg_crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* Sizes and offsets are the on-disk format. */
static inline void qimg_jrnl_build_checks(void)
{
	BUILD_BUG_ON(sizeof(struct qimg_disk_jrnl_header) != 48);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_header, generation) != 24);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_header, synced_seq) != 32);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_header, tail_block) != 40);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_header, crc) != 44);
	BUILD_BUG_ON(sizeof(struct qimg_disk_jrnl_block) != 32);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_block, crc) != 4);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_block, seq) != 8);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_block, count) != 16);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_block, blocks) != 20);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_block, tx_crc) != 24);
	BUILD_BUG_ON(sizeof(struct qimg_disk_jrnl_write) != 24);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_write, target) != 8);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_write, data_off) != 16);
	BUILD_BUG_ON(offsetof(struct qimg_disk_jrnl_write, data_crc) != 20);
	BUILD_BUG_ON(sizeof(struct qimg_disk_jrnl_revoke) != 16);
	BUILD_BUG_ON(sizeof(struct qimg_disk_jrnl_header) > QIMG_JRNL_HDR_CHUNK);
	BUILD_BUG_ON(QIMG_JRNL_HDR_CHUNK != 1 << QIMG_JRNL_MIN_BLOCK_BITS);
}

static bool jzero(const u8 *p, size_t len)
{
	while (len--)
		if (*p++)
			return false;
	return true;
}

#define JHDR_CRC_OFF	offsetof(struct qimg_disk_jrnl_header, crc)
#define JBLK_CRC_OFF	offsetof(struct qimg_disk_jrnl_block, crc)

/* CRC-32C of a block with its 4-byte checksum field at @off taken as 0. */
static u32 jblock_crc(const u8 *blk, u32 bs, size_t off)
{
	static const u8 zero4[4];
	u32 crc;

	crc = qimg_crc32c(0, blk, off);
	crc = qimg_crc32c(crc, zero4, 4);
	return qimg_crc32c(crc, blk + off + 4, bs - off - 4);
}

/* ------------------------------------------------------------------------ */
/* Header                                                                   */

static int jhdr_geom_check(u32 bits, u64 size, u32 cluster_bits,
			   struct qimg_err *err)
{
	u64 nblocks;

	if (bits < QIMG_JRNL_MIN_BLOCK_BITS || bits > cluster_bits)
		return qimg_fail(err, -EUCLEAN,
			     "journal block_bits %u outside %u..%u (cluster)",
			     bits, QIMG_JRNL_MIN_BLOCK_BITS, cluster_bits);
	if (!size || size & ((1ULL << bits) - 1))
		return qimg_fail(err, -EUCLEAN,
			     "journal size %llu is not a multiple of its %u-byte blocks",
			     size, 1U << bits);
	nblocks = size >> bits;
	if (nblocks < QIMG_JRNL_MIN_BLOCKS || nblocks > 0xffffffffULL)
		return qimg_fail(err, -EUCLEAN,
			     "journal of %llu blocks (at least %u, below 2^32)",
			     nblocks, QIMG_JRNL_MIN_BLOCKS);
	return 0;
}

int qimg_jrnl_size_check(u64 size, u32 cluster_bits, struct qimg_err *err)
{
	u32 bits = qimg_jrnl_block_bits(cluster_bits);
	u64 min = (u64)QIMG_JRNL_MIN_WRITE_BLOCKS << bits;

	if (cluster_bits < QIMG_MIN_CLUSTER_BITS ||
	    cluster_bits > QIMG_MAX_CLUSTER_BITS)
		return qimg_fail(err, -EINVAL, "cluster_bits %u", cluster_bits);
	if (min < (1ULL << cluster_bits))
		min = 1ULL << cluster_bits;
	if (size > QIMG_MAX_JOURNAL_BYTES)
		return qimg_fail(err, -EFBIG,
			     "journal size %llu is above the maximum of %llu bytes",
			     size, QIMG_MAX_JOURNAL_BYTES);
	if (size & ((1ULL << cluster_bits) - 1))
		return qimg_fail(err, -EINVAL,
			     "journal size %llu is not a multiple of the cluster size (%u bytes)",
			     size, 1U << cluster_bits);
	if (size < min)
		return qimg_fail(err, -EINVAL,
			     "journal size %llu is below the minimum of %llu bytes (%u journal blocks of %u bytes)",
			     size, min, QIMG_JRNL_MIN_WRITE_BLOCKS, 1U << bits);
	return 0;
}

int qimg_jrnl_hdr_init(struct qimg_jrnl_hdr *h, u32 block_bits, u64 size,
		       u32 cluster_bits, u64 seq, struct qimg_err *err)
{
	int ret;

	ret = jhdr_geom_check(block_bits, size, cluster_bits, err);
	if (ret)
		return ret == -EUCLEAN ? -EINVAL : ret;
	if (size > QIMG_MAX_JOURNAL_BYTES)
		return qimg_fail(err, -EFBIG, "journal size %llu above %llu",
			     size, QIMG_MAX_JOURNAL_BYTES);
	if (seq >= QIMG_JRNL_MAX_SEQ)
		return qimg_fail(err, -EINVAL, "journal sequence %llu too large",
			     seq);
	memset(h, 0, sizeof(*h));
	h->block_bits = block_bits;
	h->size = size;
	h->generation = 1;
	h->synced_seq = seq;
	h->tail_block = QIMG_JRNL_RING_START;
	h->nblocks = size >> block_bits;
	return 0;
}

int qimg_jrnl_hdr_encode(void *blk, const struct qimg_jrnl_hdr *h,
			 struct qimg_err *err)
{
	struct qimg_disk_jrnl_header *d = blk;
	u32 bs;

	if (h->block_bits < QIMG_JRNL_MIN_BLOCK_BITS ||
	    h->block_bits > QIMG_MAX_CLUSTER_BITS)
		return qimg_fail(err, -EINVAL, "journal block_bits %u",
			     h->block_bits);
	bs = 1U << h->block_bits;
	if (h->tail_block < QIMG_JRNL_RING_START ||
	    h->tail_block >= h->size >> h->block_bits)
		return qimg_fail(err, -EINVAL, "journal tail block %u outside the ring",
			     h->tail_block);
	memset(blk, 0, bs);
	d->magic = cpu_to_be64(QIMG_JRNL_MAGIC);
	d->version = cpu_to_be32(QIMG_JRNL_VERSION);
	d->block_bits = cpu_to_be32(h->block_bits);
	d->size = cpu_to_be64(h->size);
	d->generation = cpu_to_be64(h->generation);
	d->synced_seq = cpu_to_be64(h->synced_seq);
	d->tail_block = cpu_to_be32(h->tail_block);
	d->crc = cpu_to_be32(jblock_crc(blk, bs, JHDR_CRC_OFF));
	return 0;
}

/*
 * Read and check the copy at byte @pos of the area.  @want_bits: the
 * block_bits the copy must declare (its position depends on it), or 0 for
 * copy 0, which declares its own.  Returns -EUCLEAN for an invalid copy.
 */
static int jhdr_copy(const struct qimg_jrnl_geom *g,
		     const struct qimg_jrnl_io *io, u8 *chunk, u64 pos,
		     u32 want_bits, struct qimg_jrnl_hdr *h,
		     struct qimg_err *err)
{
	static const u8 zero4[4];
	const struct qimg_disk_jrnl_header *d = (const void *)chunk;
	u32 bits, bs, stored, crc;
	u64 p, end;
	int ret;

	if (pos + QIMG_JRNL_HDR_CHUNK > g->area_size)
		return qimg_fail(err, -EUCLEAN, "outside the journal area");
	ret = io->read(io->ctx, pos, chunk, QIMG_JRNL_HDR_CHUNK);
	if (ret)
		return ret;
	if (be64_to_cpu(d->magic) != QIMG_JRNL_MAGIC)
		return qimg_fail(err, -EUCLEAN, "bad magic");
	if (be32_to_cpu(d->version) != QIMG_JRNL_VERSION)
		return qimg_fail(err, -EUCLEAN, "version %u, not %u",
			     be32_to_cpu(d->version), QIMG_JRNL_VERSION);
	bits = be32_to_cpu(d->block_bits);
	if (want_bits && bits != want_bits)
		return qimg_fail(err, -EUCLEAN, "block_bits %u does not match its position",
			     bits);
	memset(h, 0, sizeof(*h));
	h->block_bits = bits;
	h->size = be64_to_cpu(d->size);
	h->generation = be64_to_cpu(d->generation);
	h->synced_seq = be64_to_cpu(d->synced_seq);
	h->tail_block = be32_to_cpu(d->tail_block);
	ret = jhdr_geom_check(bits, h->size, g->cluster_bits, err);
	if (ret)
		return ret;
	if (h->size != g->area_size)
		return qimg_fail(err, -EUCLEAN,
			     "size %llu, but the extension says %llu",
			     h->size, g->area_size);
	h->nblocks = h->size >> bits;
	bs = 1U << bits;
	if (pos && pos != bs)
		return qimg_fail(err, -EUCLEAN, "block_bits %u does not match its position",
			     bits);
	if (h->synced_seq >= QIMG_JRNL_MAX_SEQ)
		return qimg_fail(err, -EUCLEAN, "synced_seq %llu too large",
			     h->synced_seq);
	if (h->tail_block < QIMG_JRNL_RING_START ||
	    h->tail_block >= h->nblocks)
		return qimg_fail(err, -EUCLEAN, "tail block %u outside the ring 2..%u",
			     h->tail_block, h->nblocks - 1);
	/* Stream the checksum over the whole block, 512 bytes at a time. */
	stored = be32_to_cpu(d->crc);
	crc = qimg_crc32c(0, chunk, JHDR_CRC_OFF);
	crc = qimg_crc32c(crc, zero4, 4);
	crc = qimg_crc32c(crc, chunk + JHDR_CRC_OFF + 4,
			  QIMG_JRNL_HDR_CHUNK - JHDR_CRC_OFF - 4);
	if (!jzero(chunk + sizeof(*d), QIMG_JRNL_HDR_CHUNK - sizeof(*d)))
		return qimg_fail(err, -EUCLEAN, "reserved bytes are not zero");
	end = pos + bs;
	for (p = pos + QIMG_JRNL_HDR_CHUNK; p < end; p += QIMG_JRNL_HDR_CHUNK) {
		ret = io->read(io->ctx, p, chunk, QIMG_JRNL_HDR_CHUNK);
		if (ret)
			return ret;
		if (!jzero(chunk, QIMG_JRNL_HDR_CHUNK))
			return qimg_fail(err, -EUCLEAN, "reserved bytes are not zero");
		crc = qimg_crc32c(crc, chunk, QIMG_JRNL_HDR_CHUNK);
	}
	if (crc != stored)
		return qimg_fail(err, -EUCLEAN, "bad checksum %08x (computed %08x)",
			     stored, crc);
	return 0;
}

int qimg_jrnl_hdr_read(const struct qimg_jrnl_geom *g,
		       const struct qimg_jrnl_io *io, void *chunk,
		       struct qimg_jrnl_hdr *h, struct qimg_err *err)
{
	struct qimg_jrnl_hdr c0, c1;
	struct qimg_err e0 = { "" }, e1 = { "bad magic" };
	int r0, r1 = -EUCLEAN;
	u32 k;

	if (g->cluster_bits < QIMG_MIN_CLUSTER_BITS ||
	    g->cluster_bits > QIMG_MAX_CLUSTER_BITS)
		return qimg_fail(err, -EINVAL, "cluster_bits %u", g->cluster_bits);
	r0 = jhdr_copy(g, io, chunk, 0, 0, &c0, &e0);
	if (r0 && r0 != -EUCLEAN)
		return qimg_fail(err, r0, "journal header copy 0: read error %d", r0);
	if (!r0) {
		r1 = jhdr_copy(g, io, chunk, 1ULL << c0.block_bits,
			       c0.block_bits, &c1, &e1);
	} else {
		/* Copy 0 gives no block size: try each possible one. */
		for (k = QIMG_JRNL_MIN_BLOCK_BITS; k <= g->cluster_bits; k++) {
			struct qimg_err ek;

			r1 = jhdr_copy(g, io, chunk, 1ULL << k, k, &c1, &ek);
			if (r1 != -EUCLEAN)
				break;
			/* Report a copy that had the magic, if any. */
			if (strcmp(ek.msg, "bad magic") &&
			    strcmp(ek.msg, "outside the journal area"))
				e1 = ek;
		}
	}
	if (r1 && r1 != -EUCLEAN)
		return qimg_fail(err, r1, "journal header copy 1: read error %d", r1);
	if (r0 && r1)
		return qimg_fail(err, -EUCLEAN,
			     "no valid journal header (copy 0: %s; copy 1: %s)",
			     e0.msg, e1.msg);
	if (!r0 && !r1) {
		if (c0.generation == c1.generation &&
		    (c0.synced_seq != c1.synced_seq ||
		     c0.tail_block != c1.tail_block))
			return qimg_fail(err, -EUCLEAN,
				     "journal header copies both have generation %llu but differ",
				     c0.generation);
		if (c1.generation > c0.generation) {
			*h = c1;
			h->copy = 1;
		} else {
			*h = c0;
			h->copy = 0;
		}
	} else if (!r0) {
		*h = c0;
		h->copy = 0;
	} else {
		*h = c1;
		h->copy = 1;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Writer side: descriptors and commits                                     */

static int jrec_layout(u32 bs, const struct qimg_jrnl_rec *r, u32 n,
		       u32 *data_end, struct qimg_err *err)
{
	u32 off = sizeof(struct qimg_disk_jrnl_block), end = 0, i;

	for (i = 0; i < n; i++) {
		switch (r[i].type) {
		case QIMG_JRNL_REC_WRITE:
			if (!r[i].len || r[i].len > bs || r[i].len & 7 ||
			    r[i].target & 7 || !r[i].data)
				return qimg_fail(err, -EINVAL,
					     "journal record %u: write of %u bytes at %llu",
					     i, r[i].len, r[i].target);
			off += sizeof(struct qimg_disk_jrnl_write);
			/* A record's data never crosses a data block. */
			if ((end & (bs - 1)) + r[i].len > bs)
				end = (end | (bs - 1)) + 1;
			end += r[i].len;
			break;
		case QIMG_JRNL_REC_REVOKE:
			if (!r[i].len)
				return qimg_fail(err, -EINVAL,
					     "journal record %u: empty revoke", i);
			off += sizeof(struct qimg_disk_jrnl_revoke);
			break;
		default:
			return qimg_fail(err, -EINVAL, "journal record %u: type %u",
				     i, r[i].type);
		}
		if (off > bs)
			return qimg_fail(err, -ENOSPC,
				     "journal records do not fit in one descriptor");
	}
	*data_end = end;
	return 0;
}

int qimg_jrnl_desc_blocks(u32 block_bits, const struct qimg_jrnl_rec *r,
			  u32 n, struct qimg_err *err)
{
	u32 bs = 1U << block_bits, end;
	int ret;

	ret = jrec_layout(bs, r, n, &end, err);
	if (ret)
		return ret;
	return (end + bs - 1) >> block_bits;
}

int qimg_jrnl_desc_encode(void *desc, void *data, u32 data_blocks,
			  u32 block_bits, u64 seq,
			  const struct qimg_jrnl_rec *r, u32 n,
			  struct qimg_err *err)
{
	struct qimg_disk_jrnl_block *b = desc;
	u32 bs = 1U << block_bits, end, off, doff = 0, nd, i;
	u8 *dp = data;
	int ret;

	ret = jrec_layout(bs, r, n, &end, err);
	if (ret)
		return ret;
	nd = (end + bs - 1) >> block_bits;
	if (nd > data_blocks)
		return qimg_fail(err, -ENOSPC,
				 "journal descriptor needs %u data blocks, room for %u",
				 nd, data_blocks);
	memset(desc, 0, bs);
	if (nd)
		memset(data, 0, (size_t)nd << block_bits);
	off = sizeof(*b);
	for (i = 0; i < n; i++) {
		u8 *rp = (u8 *)desc + off;

		if (r[i].type == QIMG_JRNL_REC_WRITE) {
			struct qimg_disk_jrnl_write *w = (void *)rp;

			if ((doff & (bs - 1)) + r[i].len > bs)
				doff = (doff | (bs - 1)) + 1;
			memcpy(dp + doff, r[i].data, r[i].len);
			w->type = cpu_to_be16(QIMG_JRNL_REC_WRITE);
			w->len = cpu_to_be32(r[i].len);
			w->target = cpu_to_be64(r[i].target);
			w->data_off = cpu_to_be32(doff);
			w->data_crc = cpu_to_be32(qimg_crc32c(0, r[i].data,
							      r[i].len));
			doff += r[i].len;
			off += sizeof(*w);
		} else {
			struct qimg_disk_jrnl_revoke *v = (void *)rp;

			v->type = cpu_to_be16(QIMG_JRNL_REC_REVOKE);
			v->len = cpu_to_be32(r[i].len);
			v->target = cpu_to_be64(r[i].target);
			off += sizeof(*v);
		}
	}
	b->magic = cpu_to_be32(QIMG_JRNL_DESC_MAGIC);
	b->seq = cpu_to_be64(seq);
	b->count = cpu_to_be32(n);
	b->blocks = cpu_to_be32(nd);
	b->crc = cpu_to_be32(jblock_crc(desc, bs, JBLK_CRC_OFF));
	return nd;
}

void qimg_jrnl_commit_encode(void *blk, u32 block_bits, u64 seq, u32 before,
			     u32 next_start, u32 tx_crc)
{
	struct qimg_disk_jrnl_block *b = blk;
	u32 bs = 1U << block_bits;

	memset(blk, 0, bs);
	b->magic = cpu_to_be32(QIMG_JRNL_COMMIT_MAGIC);
	b->seq = cpu_to_be64(seq);
	b->count = cpu_to_be32(before);
	b->blocks = cpu_to_be32(next_start);
	b->tx_crc = cpu_to_be32(tx_crc);
	b->crc = cpu_to_be32(jblock_crc(blk, bs, JBLK_CRC_OFF));
}

u32 qimg_jrnl_next_start(const struct qimg_jrnl_hdr *h, u32 commit_block,
			 u32 max_tx_blocks)
{
	u64 next = (u64)commit_block + 1;

	if (next + max_tx_blocks > h->nblocks)
		return QIMG_JRNL_RING_START;
	return next;
}

/* ------------------------------------------------------------------------ */
/* Recovery: one walker, three passes                                       */

enum jpass { JP_SCAN, JP_REVOKE, JP_REPLAY };

struct jwalk {
	const struct qimg_jrnl_geom *g;
	const struct qimg_jrnl_io *io;
	const struct qimg_jrnl_hdr *h;
	struct qimg_err *err;
	enum jpass pass;
	u8 *blk;		/* descriptor or commit block */
	u8 *dat;		/* one data block */
	u32 bits, bs;
	/* Per transaction, filled by jtx(). */
	u64 writes, revokes;
	/* Revoke pass: the table being filled. */
	struct qimg_jrnl_revoke *rv;
	u64 nrv, rv_cap;
	/* Replay pass: the sorted table and what was written. */
	const struct qimg_jrnl_revoke *rrv;
	u64 written;
};

/* How a transaction ended when it is not complete. */
struct jend {
	u32 pos;		/* block where the walk stopped */
	bool commit_ok;		/* its commit block was intact ... */
	u32 next;		/* ... and named this next start */
	bool partial;		/* blocks of this transaction were found */
	const char *why;
};

static int jread(struct jwalk *w, u32 blk, u8 *buf)
{
	return w->io->read(w->io->ctx, (u64)blk << w->bits, buf, w->bs);
}

/* Magic, sequence number and checksum: a block written whole. */
static bool jblock_ok(const struct jwalk *w, const u8 *buf, u32 magic,
		      u64 seq)
{
	const struct qimg_disk_jrnl_block *b = (const void *)buf;

	return be32_to_cpu(b->magic) == magic && be64_to_cpu(b->seq) == seq &&
	       be32_to_cpu(b->crc) == jblock_crc(buf, w->bs, JBLK_CRC_OFF);
}

static bool jrange_hits_area(const struct qimg_jrnl_geom *g, u64 off,
			     u64 len)
{
	return off < g->area_offset + g->area_size && g->area_offset < off + len;
}

/*
 * Check the records of the descriptor in w->blk (at ring block @pos, of
 * transaction @seq); returns the number of data blocks or -EUCLEAN.
 */
static int jdesc_check(struct jwalk *w, u32 pos, u64 seq)
{
	const struct qimg_disk_jrnl_block *b = (const void *)w->blk;
	const struct qimg_jrnl_geom *g = w->g;
	u32 nrec = be32_to_cpu(b->count), ndata = be32_to_cpu(b->blocks);
	u64 cmask = (1ULL << g->cluster_bits) - 1;
	u32 off = sizeof(*b), i, prev_end = 0, need;

	if (b->tx_crc || b->reserved)
		return qimg_fail(w->err, -EUCLEAN,
			     "journal descriptor at block %u (seq %llu): reserved fields are not zero",
			     pos, seq);
	for (i = 0; i < nrec; i++) {
		const u8 *rp = w->blk + off;
		u16 type, flags;
		u32 len;
		u64 tgt, end;

		if (off + 8 > w->bs)
			return qimg_fail(w->err, -EUCLEAN,
				     "journal descriptor at block %u (seq %llu): %u records overrun the block",
				     pos, seq, nrec);
		type = get_unaligned_be16(rp);
		flags = get_unaligned_be16(rp + 2);
		len = get_unaligned_be32(rp + 4);
		if (type != QIMG_JRNL_REC_WRITE && type != QIMG_JRNL_REC_REVOKE)
			return qimg_fail(w->err, -EUCLEAN,
				     "journal descriptor at block %u (seq %llu): record %u has type %u",
				     pos, seq, i, type);
		if (flags)
			return qimg_fail(w->err, -EUCLEAN,
				     "journal descriptor at block %u (seq %llu): record %u has unknown flags 0x%x",
				     pos, seq, i, flags);
		if (type == QIMG_JRNL_REC_WRITE) {
			const struct qimg_disk_jrnl_write *r = (const void *)rp;
			u32 doff;

			if (off + sizeof(*r) > w->bs)
				return qimg_fail(w->err, -EUCLEAN,
					     "journal descriptor at block %u (seq %llu): %u records overrun the block",
					     pos, seq, nrec);
			tgt = be64_to_cpu(r->target);
			doff = be32_to_cpu(r->data_off);
			if (!len || len & 7 || len > w->bs || tgt & 7)
				return qimg_fail(w->err, -EUCLEAN,
					     "journal write record %u (seq %llu): %u bytes at %llu not 8-byte aligned or longer than a block",
					     i, seq, len, tgt);
			if (!qimg_add_ok(tgt, len, &end) || end > g->file_size)
				return qimg_fail(w->err, -EUCLEAN,
					     "journal write record %u (seq %llu): %u bytes at %llu past the end of the image (%llu)",
					     i, seq, len, tgt, g->file_size);
			if ((tgt & ~cmask) != ((end - 1) & ~cmask))
				return qimg_fail(w->err, -EUCLEAN,
					     "journal write record %u (seq %llu): %u bytes at %llu cross a cluster boundary",
					     i, seq, len, tgt);
			if (jrange_hits_area(g, tgt, len))
				return qimg_fail(w->err, -EUCLEAN,
					     "journal write record %u (seq %llu): target %llu is inside the journal",
					     i, seq, tgt);
			if (doff < prev_end || doff & 7 ||
			    (doff & (w->bs - 1)) + len > w->bs ||
			    doff > 0xffffffffU - len)
				return qimg_fail(w->err, -EUCLEAN,
					     "journal write record %u (seq %llu): data offset %u out of order or crossing a block",
					     i, seq, doff);
			prev_end = doff + len;
			off += sizeof(*r);
			w->writes++;
		} else {
			const struct qimg_disk_jrnl_revoke *r = (const void *)rp;

			if (off + sizeof(*r) > w->bs)
				return qimg_fail(w->err, -EUCLEAN,
					     "journal descriptor at block %u (seq %llu): %u records overrun the block",
					     pos, seq, nrec);
			tgt = be64_to_cpu(r->target);
			if (!len || (len & cmask) || (tgt & cmask) ||
			    !qimg_add_ok(tgt, len, &end) ||
			    end > QIMG_MAX_HOST_OFFSET + 1)
				return qimg_fail(w->err, -EUCLEAN,
					     "journal revoke record %u (seq %llu): %u bytes at %llu not whole clusters",
					     i, seq, len, tgt);
			off += sizeof(*r);
			w->revokes++;
		}
	}
	if (!jzero(w->blk + off, w->bs - off))
		return qimg_fail(w->err, -EUCLEAN,
			     "journal descriptor at block %u (seq %llu): bytes after the %u records are not zero",
			     pos, seq, nrec);
	need = ((u64)prev_end + w->bs - 1) >> w->bits;
	if (ndata != need)
		return qimg_fail(w->err, -EUCLEAN,
			     "journal descriptor at block %u (seq %llu): %u data blocks, its records use %u",
			     pos, seq, ndata, need);
	/* Its data blocks and at least a commit block before the ring end. */
	if ((u64)pos + 1 + ndata >= w->h->nblocks)
		return qimg_fail(w->err, -EUCLEAN,
			     "journal descriptor at block %u (seq %llu): transaction runs past the ring end",
			     pos, seq);
	return ndata;
}

/* Apply the revoke records of the descriptor in w->blk (revoke pass). */
static int jdesc_revokes(struct jwalk *w, u64 seq)
{
	const struct qimg_disk_jrnl_block *b = (const void *)w->blk;
	u32 nrec = be32_to_cpu(b->count), off = sizeof(*b), i;

	for (i = 0; i < nrec; i++) {
		const u8 *rp = w->blk + off;

		if (get_unaligned_be16(rp) == QIMG_JRNL_REC_WRITE) {
			off += sizeof(struct qimg_disk_jrnl_write);
			continue;
		}
		if (w->nrv >= w->rv_cap)
			return qimg_fail(w->err, -EIO,
				     "journal changed between the scan and revoke passes");
		w->rv[w->nrv].off = get_unaligned_be64(rp + 8);
		w->rv[w->nrv].len = get_unaligned_be32(rp + 4);
		w->rv[w->nrv].seq = seq;
		w->nrv++;
		off += sizeof(struct qimg_disk_jrnl_revoke);
	}
	return 0;
}

/*
 * The write records of the descriptor in w->blk whose data lies in data
 * block @di (now in w->dat): check their checksums; in the replay pass,
 * write them.  *@cur and *@ri walk the records across calls.  Returns
 * 1 for a data checksum mismatch (a torn data block), 0 or an error.
 */
static int jdata_block(struct jwalk *w, u32 di, u32 *cur, u32 *ri, u64 seq)
{
	const struct qimg_disk_jrnl_block *b = (const void *)w->blk;
	u32 nrec = be32_to_cpu(b->count);
	int bad = 0, ret;

	for (; *ri < nrec; ) {
		const u8 *rp = w->blk + *cur;
		const struct qimg_disk_jrnl_write *r = (const void *)rp;
		u32 doff, len;
		u64 tgt;

		if (get_unaligned_be16(rp) != QIMG_JRNL_REC_WRITE) {
			*cur += sizeof(struct qimg_disk_jrnl_revoke);
			(*ri)++;
			continue;
		}
		doff = be32_to_cpu(r->data_off);
		if (doff >> w->bits != di)
			break;
		len = be32_to_cpu(r->len);
		tgt = be64_to_cpu(r->target);
		doff &= w->bs - 1;
		if (qimg_crc32c(0, w->dat + doff, len) != be32_to_cpu(r->data_crc)) {
			bad = 1;
		} else if (w->pass == JP_REPLAY) {
			if (!qimg_jrnl_revoked(w->rrv, w->rv_cap, tgt, len, seq)) {
				ret = w->io->write(w->io->ctx, tgt, w->dat + doff,
						   len);
				if (ret)
					return qimg_fail(w->err, ret,
						     "journal replay: writing %u bytes at %llu failed (%d)",
						     len, tgt, ret);
				w->written++;
			}
		}
		*cur += sizeof(*r);
		(*ri)++;
	}
	return bad;
}

/*
 * Walk transaction @seq starting at ring block @start.  Returns 0 when it
 * is complete (*@next: where the next one starts, *@nblk: its blocks),
 * 1 when the log ends here (@e says how), or a negative errno.
 */
static int jtx(struct jwalk *w, u32 start, u64 seq, u32 *next, u32 *nblk,
	       struct jend *e)
{
	const struct qimg_disk_jrnl_block *b = (const void *)w->blk;
	u32 pos = start, ndesc = 0, n = 0, i, ri, cur, nb;
	u32 crc = 0;
	bool bad = false;
	int ret;

	w->writes = 0;
	w->revokes = 0;
	memset(e, 0, sizeof(*e));
	for (;;) {
		/* jdesc_check() keeps room for the commit before the end. */
		ret = jread(w, pos, w->blk);
		if (ret)
			return qimg_fail(w->err, ret, "journal: reading block %u failed (%d)",
				     pos, ret);
		if (jblock_ok(w, w->blk, QIMG_JRNL_DESC_MAGIC, seq)) {
			ret = jdesc_check(w, pos, seq);
			if (ret < 0)
				return ret;
			nb = ret;
			crc = qimg_crc32c(crc, w->blk, w->bs);
			if (w->pass == JP_REVOKE) {
				ret = jdesc_revokes(w, seq);
				if (ret)
					return ret;
			}
			ri = 0;
			cur = sizeof(*b);
			for (i = 0; i < nb; i++) {
				ret = jread(w, pos + 1 + i, w->dat);
				if (ret)
					return qimg_fail(w->err, ret,
						     "journal: reading block %u failed (%d)",
						     pos + 1 + i, ret);
				crc = qimg_crc32c(crc, w->dat, w->bs);
				ret = jdata_block(w, i, &cur, &ri, seq);
				if (ret < 0)
					return ret;
				if (ret) {
					if (w->pass != JP_SCAN)
						return qimg_fail(w->err, -EIO,
							     "journal changed between the scan and replay passes");
					bad = true;
					e->why = "a data checksum does not match";
				}
			}
			ndesc++;
			n += 1 + nb;
			pos += 1 + nb;
			continue;
		}
		e->pos = pos;
		e->partial = n > 0 ||
			((be32_to_cpu(b->magic) == QIMG_JRNL_DESC_MAGIC ||
			  be32_to_cpu(b->magic) == QIMG_JRNL_COMMIT_MAGIC) &&
			 be64_to_cpu(b->seq) == seq);
		if (!jblock_ok(w, w->blk, QIMG_JRNL_COMMIT_MAGIC, seq)) {
			if (!e->why)
				e->why = ndesc ? "torn or missing commit block" :
					"no descriptor with the expected sequence number";
			return 1;
		}
		if (!ndesc)
			return qimg_fail(w->err, -EUCLEAN,
				     "journal commit block at %u (seq %llu) without a descriptor",
				     pos, seq);
		break;
	}
	/* The commit block, intact: its fields were written as they are. */
	{
		u32 before = be32_to_cpu(b->count);
		u32 ns = be32_to_cpu(b->blocks);

		if (before != n)
			return qimg_fail(w->err, -EUCLEAN,
				     "journal commit at block %u (seq %llu) counts %u blocks, the transaction has %u",
				     pos, seq, before, n);
		if (b->reserved || !jzero(w->blk + sizeof(*b), w->bs - sizeof(*b)))
			return qimg_fail(w->err, -EUCLEAN,
				     "journal commit at block %u (seq %llu): reserved bytes are not zero",
				     pos, seq);
		if (ns != QIMG_JRNL_RING_START &&
		    (ns != pos + 1 || ns >= w->h->nblocks))
			return qimg_fail(w->err, -EUCLEAN,
				     "journal commit at block %u (seq %llu): next start %u is neither %u nor the ring start",
				     pos, seq, ns, pos + 1);
		if (be32_to_cpu(b->tx_crc) != crc && !bad) {
			bad = true;
			e->why = "the transaction checksum does not match";
		}
		if (bad) {
			if (w->pass != JP_SCAN)
				return qimg_fail(w->err, -EIO,
					     "journal changed between the scan and replay passes");
			e->commit_ok = true;
			e->next = ns;
			e->partial = true;
			return 1;
		}
		*next = ns;
		*nblk = n + 1;
	}
	return 0;
}

/* Is there a valid descriptor of transaction @seq at ring block @pos? */
static int jdesc_at(struct jwalk *w, u32 pos, u64 seq, bool *found)
{
	int ret;

	*found = false;
	if (pos < QIMG_JRNL_RING_START || pos >= w->h->nblocks)
		return 0;
	ret = jread(w, pos, w->blk);
	if (ret)
		return qimg_fail(w->err, ret, "journal: reading block %u failed (%d)",
			     pos, ret);
	*found = jblock_ok(w, w->blk, QIMG_JRNL_DESC_MAGIC, seq);
	return 0;
}

/*
 * The rest of a transaction @seq whose block at @pos is damaged: follow
 * its blocks by magic and sequence number alone (the descriptors' data
 * counts are untrusted, but each step only moves forward) to its commit.
 * Stores up to two places where transaction seq + 1 would start in @cand
 * and returns how many.
 */
static int jsalvage(struct jwalk *w, u32 pos, u64 seq, u32 *cand)
{
	const struct qimg_disk_jrnl_block *b = (const void *)w->blk;
	u64 p = pos;
	int ret;

	while (p < w->h->nblocks) {
		ret = jread(w, p, w->blk);
		if (ret)
			return qimg_fail(w->err, ret, "journal: reading block %llu failed (%d)",
				     p, ret);
		if (be64_to_cpu(b->seq) != seq)
			break;
		if (be32_to_cpu(b->magic) == QIMG_JRNL_DESC_MAGIC) {
			p += 1 + (u64)be32_to_cpu(b->blocks);
			continue;
		}
		if (be32_to_cpu(b->magic) != QIMG_JRNL_COMMIT_MAGIC)
			break;
		if (jblock_ok(w, w->blk, QIMG_JRNL_COMMIT_MAGIC, seq)) {
			cand[0] = be32_to_cpu(b->blocks);
			return 1;
		}
		cand[0] = p + 1;
		cand[1] = QIMG_JRNL_RING_START;
		return 2;
	}
	return 0;
}

static int jwalk_init(struct jwalk *w, const struct qimg_jrnl_geom *g,
		      const struct qimg_jrnl_io *io,
		      const struct qimg_jrnl_hdr *h, void *work,
		      enum jpass pass, struct qimg_err *err)
{
	memset(w, 0, sizeof(*w));
	w->g = g;
	w->io = io;
	w->h = h;
	w->err = err;
	w->pass = pass;
	w->bits = h->block_bits;
	w->bs = 1U << h->block_bits;
	w->blk = work;
	w->dat = (u8 *)work + w->bs;
	if (h->block_bits < QIMG_JRNL_MIN_BLOCK_BITS ||
	    h->block_bits > g->cluster_bits || h->nblocks < QIMG_JRNL_MIN_BLOCKS ||
	    h->nblocks != h->size >> h->block_bits || h->size != g->area_size ||
	    h->tail_block < QIMG_JRNL_RING_START || h->tail_block >= h->nblocks ||
	    h->synced_seq >= QIMG_JRNL_MAX_SEQ)
		return qimg_fail(err, -EINVAL, "journal header not from qimg_jrnl_hdr_read()");
	return 0;
}

/*
 * Walk the log from the tail.  @limit: transactions to walk in the revoke
 * and replay passes (all must be complete); the scan pass fills @s.
 */
static int jwalk_run(struct jwalk *w, struct qimg_jrnl_scan *s, u64 limit)
{
	const struct qimg_jrnl_hdr *h = w->h;
	u64 seq = h->synced_seq + 1, ntx = 0, used = 0;
	u64 ring = h->nblocks - QIMG_JRNL_RING_START;
	u32 pos = h->tail_block, next = 0, nblk = 0;
	struct jend e;
	int ret;

	for (;;) {
		if (w->pass != JP_SCAN && ntx == limit)
			return 0;
		if (seq >= QIMG_JRNL_MAX_SEQ)
			return qimg_fail(w->err, -EUCLEAN,
				     "journal sequence number %llu too large", seq);
		ret = jtx(w, pos, seq, &next, &nblk, &e);
		if (ret < 0)
			return ret;
		if (ret) {
			u32 cand[5];
			int nc = 0, i;
			bool found;

			if (w->pass != JP_SCAN)
				return qimg_fail(w->err, -EIO,
					     "journal changed between the scan and replay passes");
			/*
			 * Transaction seq + 1 is written only once this one's
			 * commit is stable: finding it means this one was
			 * damaged after it was committed.
			 */
			if (e.commit_ok) {
				cand[nc++] = e.next;
			} else {
				cand[nc++] = e.pos;
				cand[nc++] = e.pos + 1;
				cand[nc++] = QIMG_JRNL_RING_START;
				if (e.partial) {
					ret = jsalvage(w, e.pos, seq, &cand[nc]);
					if (ret < 0)
						return ret;
					nc += ret;
				}
			}
			for (i = 0; i < nc; i++) {
				ret = jdesc_at(w, cand[i], seq + 1, &found);
				if (ret)
					return ret;
				if (found)
					return qimg_fail(w->err, -EUCLEAN,
						     "journal transaction %llu at block %u is damaged (%s) but transaction %llu follows",
						     seq, pos, e.why, seq + 1);
			}
			s->torn = e.partial;
			break;
		}
		used += nblk;
		if (next == QIMG_JRNL_RING_START)
			used += h->nblocks - (pos + nblk);
		if (used > ring)
			return qimg_fail(w->err, -EUCLEAN,
				     "journal transactions from block %u overrun the ring (%llu blocks)",
				     h->tail_block, ring);
		s->nwrites += w->writes;
		s->nrevokes += w->revokes;
		ntx++;
		seq++;
		pos = next;
	}
	s->ntx = ntx;
	s->last_seq = seq - 1;
	s->used_blocks = used;
	s->end_block = pos;
	s->next_seq = seq + 1;
	return 0;
}

int qimg_jrnl_scan(const struct qimg_jrnl_geom *g,
		   const struct qimg_jrnl_io *io,
		   const struct qimg_jrnl_hdr *h, void *work,
		   struct qimg_jrnl_scan *s, struct qimg_err *err)
{
	struct jwalk w;
	int ret;

	memset(s, 0, sizeof(*s));
	ret = jwalk_init(&w, g, io, h, work, JP_SCAN, err);
	if (ret)
		return ret;
	s->hdr = *h;
	s->first_seq = h->synced_seq + 1;
	return jwalk_run(&w, s, 0);
}

/* Heap sort by offset (no libc sort in the kernel build's core). */
static bool jrv_less(const struct qimg_jrnl_revoke *a,
		     const struct qimg_jrnl_revoke *b)
{
	return a->off < b->off || (a->off == b->off && a->seq < b->seq);
}

static void jrv_sift(struct qimg_jrnl_revoke *rv, u64 root, u64 n)
{
	struct qimg_jrnl_revoke t;
	u64 child;

	while ((child = 2 * root + 1) < n) {
		if (child + 1 < n && jrv_less(&rv[child], &rv[child + 1]))
			child++;
		if (!jrv_less(&rv[root], &rv[child]))
			return;
		t = rv[root];
		rv[root] = rv[child];
		rv[child] = t;
		root = child;
	}
}

static void jrv_sort(struct qimg_jrnl_revoke *rv, u64 n)
{
	struct qimg_jrnl_revoke t;
	u64 i;

	for (i = n / 2; i-- > 0; )
		jrv_sift(rv, i, n);
	for (i = n; i-- > 1; ) {
		t = rv[0];
		rv[0] = rv[i];
		rv[i] = t;
		jrv_sift(rv, 0, i);
	}
}

int qimg_jrnl_revokes(const struct qimg_jrnl_geom *g,
		      const struct qimg_jrnl_io *io,
		      const struct qimg_jrnl_scan *s, void *work,
		      struct qimg_jrnl_revoke *rv, struct qimg_err *err)
{
	struct qimg_jrnl_scan tmp;
	struct jwalk w;
	u64 i, reach = 0;
	int ret;

	ret = jwalk_init(&w, g, io, &s->hdr, work, JP_REVOKE, err);
	if (ret)
		return ret;
	w.rv = rv;
	w.rv_cap = s->nrevokes;
	memset(&tmp, 0, sizeof(tmp));
	ret = jwalk_run(&w, &tmp, s->ntx);
	if (ret)
		return ret;
	if (w.nrv != s->nrevokes)
		return qimg_fail(err, -EIO,
			     "journal changed between the scan and revoke passes");
	jrv_sort(rv, w.nrv);
	/* reach: the furthest end of any entry up to this one. */
	for (i = 0; i < w.nrv; i++) {
		if (rv[i].off + rv[i].len > reach)
			reach = rv[i].off + rv[i].len;
		rv[i].reach = reach;
	}
	return 0;
}

bool qimg_jrnl_revoked(const struct qimg_jrnl_revoke *rv, u64 n, u64 off,
		       u64 len, u64 seq)
{
	u64 lo = 0, hi = n;

	/* First entry that starts at or after the end of the write. */
	while (lo < hi) {
		u64 mid = lo + (hi - lo) / 2;

		if (rv[mid].off < off + len)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* Entries before it start earlier; stop once none can reach us. */
	while (lo-- > 0) {
		if (rv[lo].reach <= off)
			break;
		if (rv[lo].off + rv[lo].len > off && rv[lo].seq > seq)
			return true;
	}
	return false;
}

int qimg_jrnl_replay(const struct qimg_jrnl_geom *g,
		     const struct qimg_jrnl_io *io,
		     const struct qimg_jrnl_scan *s, void *work,
		     const struct qimg_jrnl_revoke *rv, u64 *written,
		     struct qimg_err *err)
{
	struct qimg_jrnl_scan tmp;
	struct jwalk w;
	int ret;

	if (written)
		*written = 0;
	ret = jwalk_init(&w, g, io, &s->hdr, work, JP_REPLAY, err);
	if (ret)
		return ret;
	if (s->nrevokes && !rv)
		return qimg_fail(err, -EINVAL, "journal replay needs the revoke table");
	w.rrv = rv;
	w.rv_cap = s->nrevokes;
	memset(&tmp, 0, sizeof(tmp));
	ret = jwalk_run(&w, &tmp, s->ntx);
	if (written)
		*written = w.written;
	return ret;
}
