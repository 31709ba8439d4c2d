/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Table reading shared by qimgctl subcommands: L1/L2 access, a guest-offset
 * to host mapping walker, backing-chain opening and a JSON printer that
 * formats like qemu-img, so `map`, `info` and `check` agree on how a
 * cluster is classified and on how output looks.
 */
#ifndef QIMGCTL_IMAGE_IO_H
#define QIMGCTL_IMAGE_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "qimgctl.h"
#include "qimg_qed.h"

/* Longest backing chain we follow; deeper chains are almost surely loops. */
#define QIMGCTL_MAX_CHAIN	64

/*
 * Reads the tables of one opened image.  The L1 table is read once; one L2
 * table is cached, which is all a sequential walk needs.
 */
struct qimgctl_mapper {
	struct qimgctl_image *img;
	u64 *l1;		/* CPU-endian raw entries */
	u32 l1_entries;		/* entries that map guest data */
	u8 *l2;			/* cached L2 table, raw bytes */
	u64 l2_offset;		/* host offset of the cached table, 0 = none */
	u64 l2_bytes;
	/*
	 * Where guest data lives: the image itself, or its external data
	 * file (then host offsets in L2 entries are offsets in that file).
	 */
	char *data_path;	/* NULL: the image file */
	u64 data_size;
};

/* How a range of guest bytes is stored in one image (not its backing). */
enum qimgctl_status {
	QIMGCTL_ST_UNALLOC,	/* defer to the backing file */
	QIMGCTL_ST_ZERO,	/* reads as zeroes */
	QIMGCTL_ST_DATA,	/* data, possibly compressed */
};

struct qimgctl_extent {
	enum qimgctl_status status;
	bool compressed;
	bool has_offset;	/* host_offset is meaningful */
	u64 host_offset;	/* of the first byte asked for */
	u64 len;		/* bytes from the asked offset with this status */
};

/*
 * Whether qemu would take @img for a metadata-preallocated image: it then
 * asks the image (or data) file where its holes are inside allocated
 * data clusters, and `map` must do the same to agree with it.  qemu's
 * guess: more clusters have a non-zero refcount than the file has blocks
 * allocated (by a margin).  Errors reading refcounts mean "no", as there.
 */
bool qimgctl_meta_prealloc(struct qimgctl_image *img);

/* Read the L1 table of @img.  Prints the reason and returns -errno. */
int qimgctl_mapper_init(struct qimgctl_mapper *m, struct qimgctl_image *img);
void qimgctl_mapper_fini(struct qimgctl_mapper *m);

/*
 * Raw entry @idx of the L2 table at @l2_offset (second word in @bitmap for
 * extended L2).  Loads the table into the cache.
 */
int qimgctl_l2_raw(struct qimgctl_mapper *m, u64 l2_offset, u64 idx,
		   u64 *raw, u64 *bitmap);

/*
 * Status of guest offset @guest (< virtual size): the extent covers at most
 * to the end of the (sub)cluster, or of the whole L2 range when the L1
 * entry is empty, and never more than @max bytes.  Every table entry is
 * decoded by the format core; corruption prints a message naming the image
 * and returns -EUCLEAN.  Every failure prints one line naming the image
 * and the reason: -EINVAL for an offset outside the disk or @max 0 (no
 * caller asks that), a read error's -errno.
 */
int qimgctl_map_status(struct qimgctl_mapper *m, u64 guest, u64 max,
		       struct qimgctl_extent *ext);

/*
 * An opened QED image (see qed.c): its header, the L1 table and one cached
 * L2 table, raw as read (little-endian entries, decoded by the format core
 * on every use).
 */
struct qimgctl_qed {
	const char *path;
	int fd;
	u64 file_size;		/* the real size; h.file_size is rounded down */
	struct qimg_qed_header h;
	char backing[QIMG_QED_MAX_BACKING_NAME + 1];	/* "" without one */
	u8 *l1;			/* h.table_bytes, NULL with QIMGCTL_CHAIN_HEADERS */
	u8 *l2;
	u64 l2_offset;		/* of the cached table, 0 = none */
};

/* One element of a backing chain: a qcow2 image, a QED image or a raw file. */
struct qimgctl_node {
	char *path;		/* as opened (resolved for backing files) */
	bool raw;
	int raw_fd;
	u64 length;		/* virtual size in bytes */
	dev_t dev;		/* the file, for loop detection */
	ino_t ino;
	struct qimgctl_image img;
	struct qimgctl_mapper map;	/* unless QIMGCTL_CHAIN_HEADERS */
	struct qimgctl_node *backing;
	/* Used by map: see qimgctl_meta_prealloc(). */
	bool prealloc_known;
	bool prealloc;
	int data_fd;		/* external data file, opened on demand */
	struct qimgctl_qed *qed;	/* a QED image (then img is unused) */
};

/* The fd of a chain element's file (qcow2 or raw). */
static inline int qimgctl_node_fd(const struct qimgctl_node *n)
{
	return n->raw ? n->raw_fd : n->qed ? n->qed->fd : n->img.fd;
}

/* qimgctl_chain_open() flags, besides QIMGCTL_OPEN_* (see qimgctl.h). */
#define QIMGCTL_CHAIN_NO_BACKING	0x100	/* the first image only */
#define QIMGCTL_CHAIN_HEADERS		0x200	/* do not read the L1 tables */
#define QIMGCTL_CHAIN_QED		0x400	/* QED images are welcome */
#define QIMGCTL_CHAIN_ONLY_QED		0x800	/* -f qed: the first one is QED */
#define QIMGCTL_CHAIN_ONLY_QCOW2	0x1000	/* -f qcow2: it is qcow2 */

/*
 * The one backing-chain opener.  Opens @path and, unless
 * QIMGCTL_CHAIN_NO_BACKING, every backing file below it, each resolved
 * against the directory of the image naming it.  @fmt NULL: @path is the
 * image the user named and must be qcow2; else @path is itself a backing
 * file of format @fmt ("qcow2", "raw" or "" to probe), as when `create`
 * looks at the backing file it is given.  With QIMGCTL_CHAIN_QED, QED
 * images are opened too (the first one is then probed: qcow2 or QED, or
 * QED alone with QIMGCTL_CHAIN_ONLY_QED); without it a QED image anywhere
 * in the chain is refused.
 *
 * Every file is locked as QEMU locks it (lock.h): the first one as @flags
 * say (QIMGCTL_OPEN_WRITE applies to it alone), backing files for reading
 * (QIMGCTL_OPEN_SHARE and QIMGCTL_OPEN_META apply to all).  A chain that
 * comes back to a file already in it (by device and inode, so hard and
 * symbolic links count) is refused with -ELOOP, and so is one deeper than
 * QIMGCTL_MAX_CHAIN.  Prints the reason and returns -errno on failure.
 */
int qimgctl_chain_open(struct qimgctl_node **top, const char *path,
		       const char *fmt, unsigned int flags);
void qimgctl_chain_close(struct qimgctl_node *top);

/*
 * qemu cannot open a qcow2 image whose journal-dirty bit is set (to QEMU
 * it is an incompatible feature it lacks, named "journal dirty" by the
 * image's feature table), so qemu-img refuses a new backing file (create
 * -b, rebase -b, convert -B) with such an image anywhere in its chain.
 * Open @chain with QIMGCTL_OPEN_META or QIMGCTL_OPEN_JOURNAL_OK to let a
 * dirty image through, then ask: 0 if none is dirty, else -EOPNOTSUPP
 * after one line: the @fmt part (how qemu-img words the failure to open
 * the new backing file, e.g. "Could not open new backing file 'b.qcow2'"),
 * the dirty file if it is deeper in the chain, qemu's reason, and the
 * remedy (replay with check -r all, then @alt, e.g. ", or rebase with -u";
 * "" for none).
 */
int qimgctl_chain_refuse_dirty(const struct qimgctl_node *chain,
			       const char *alt, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * qemu-img opens the whole backing chain of the image it is given even
 * for commands that only read or change that image (snapshot, amend,
 * check): a backing file that is missing, journal-dirty or being written
 * by another process makes them fail before they touch anything.  Do the
 * same for @path, a qcow2 image the caller has already opened (and
 * locked): open the chain below it as QEMU opens backing files, read-only
 * and locked for reading (nobody may write them meanwhile) unless @share
 * (-U).  Returns 0, or -errno after one line saying why, the journal-dirty
 * case in qimgctl_chain_refuse_dirty()'s words.  A dirty journal of @path
 * itself is left to the caller (check replays it; the others refuse it).
 */
int qimgctl_backing_chain_usable(const char *path, bool share);

/*
 * The same, for an image whose header the caller decoded itself and
 * which may be too damaged to open again (check): the chain is opened
 * from @bname (the header's backing file name, relative to @path) in
 * format @bfmt ("" to probe).
 */
int qimgctl_backing_usable(const char *path, const char *bname,
			   const char *bfmt, bool share);

/*
 * Resolve @rel against the directory of @base the way qemu does: absolute
 * names stay, relative ones are taken from @base's directory.  Returns a
 * malloc'd string or NULL.
 */
char *qimgctl_path_combine(const char *base, const char *rel);

/* Image formats the probe tells apart (everything else is raw). */
enum qimgctl_fmt {
	QIMGCTL_FMT_RAW,
	QIMGCTL_FMT_QCOW2,
	QIMGCTL_FMT_QED,
};

/*
 * The one format probe: the format of @fd from its first bytes (missing
 * ones read as zeroes, as QEMU probes); -errno on read errors.
 */
int qimgctl_probe_format(int fd, enum qimgctl_fmt *fmt);

/*
 * Print @obj the way qemu's pretty JSON output does (four-space indent,
 * "key": value, empty containers on two lines), followed by a newline.
 */
void qimgctl_json_print(FILE *f, struct json_object *obj);

/* qemu's size_to_str(): "0 B", "196 KiB", "1.5 GiB". */
void qimgctl_size_str(u64 val, char *buf, size_t len);

/*
 * Status of guest offset @off (< n->length) of one chain element, a qcow2
 * image or a raw file (holes read as zeroes), as `map` sees it.
 */
int qimgctl_node_status(struct qimgctl_node *n, u64 off, u64 max,
			struct qimgctl_extent *ext);

/*
 * -f FMT of a command that reads qcow2 and QED images: adds the
 * QIMGCTL_CHAIN_ONLY_* flag for @fmt to @flags; -1 after a message for
 * another format.
 */
int qimgctl_want_format(const char *fmt, unsigned int *flags);

/* ------------------------------------------------------------------------ */
/* QED images (qed.c)                                                       */

/*
 * Open and lock (QIMGCTL_OPEN_* @flags) the QED image @path and decode its
 * header and backing file name; read the L1 table too unless @headers.
 * Prints the reason (QEMU's words for a bad header) and returns -errno:
 * -EINVAL not QED or a bad header, -EOPNOTSUPP unknown features.
 */
int qimgctl_qed_open(struct qimgctl_qed *q, const char *path,
		     unsigned int flags, bool headers);
void qimgctl_qed_close(struct qimgctl_qed *q);
/* Read the L1 table of an image opened with @headers (once). */
int qimgctl_qed_read_l1(struct qimgctl_qed *q);

/*
 * Status of guest offset @guest, as qimgctl_map_status() for qcow2 (the
 * same errors and messages; -EINVAL too for an image opened for its header
 * only).
 */
int qimgctl_qed_status(struct qimgctl_qed *q, u64 guest, u64 max,
		       struct qimgctl_extent *ext);

/*
 * `check` of the QED image @path, printed and with the exit status of
 * qemu-img check.  @fix: repair (-r leaks and -r all alike, as QEMU).
 */
int qimgctl_qed_check(const char *path, bool fix, bool json, bool quiet,
		      bool share);

/*
 * Call @fn for every entry of @img's bitmap directory, in order, each
 * decoded and checked by the format core (the name and the entry's bounds
 * too); a non-zero return of @fn stops the walk and is returned.  Bad
 * directories print one line naming the image and return -EUCLEAN.
 */
int qimgctl_bitmaps_each(struct qimgctl_image *img,
			 int (*fn)(void *ctx, const struct qimg_bitmap *b),
			 void *ctx);

#endif /* QIMGCTL_IMAGE_IO_H */
