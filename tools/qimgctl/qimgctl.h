/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimgctl internals shared by the subcommands.
 */
#ifndef QIMGCTL_H
#define QIMGCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#include "qimg_fmt.h"

/* Exit codes of `check`, the same as qemu-img check's. */
#define QIMGCTL_CHECK_CLEAN		0
#define QIMGCTL_CHECK_INCOMPLETE	1
#define QIMGCTL_CHECK_CORRUPT		2
#define QIMGCTL_CHECK_LEAKS		3
#define QIMGCTL_CHECK_UNSUPPORTED	63

extern const char *qimgctl_prog;

/* One line on stderr, prefixed with the program name. */
void qimgctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Command lines (qimgctl.c's command table is the only description of
 * them).  qimgctl_usage(): "usage: qimgctl SYNOPSIS" and the command's
 * help, for CMD --help (stdout).  qimgctl_usage_err(): a bad command line
 * of @cmd, one line on stderr with a pointer to --help.
 * qimgctl_opt_err(): the same for getopt_long() having returned '?' or ':'
 * (every optstring starts with ':'; main() sets opterr to 0).
 */
void qimgctl_usage(FILE *f, const char *cmd);
void qimgctl_usage_err(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void qimgctl_opt_err(const char *cmd, int c, char **argv);

/* After option parsing: exactly one operand left (FILE), else an error. */
int qimgctl_one_file(const char *cmd, int argc, char **argv);

/*
 * Parse a size the way qemu-img does: plain bytes, or a number (possibly
 * with a fraction) followed by k/K, M, G, T, P, E (powers of 1024) or b/B
 * for bytes.  Returns 0 or -EINVAL / -ERANGE.
 */
int qimgctl_parse_size(const char *s, uint64_t *out);
/*
 * Split a -o string "a=1,b=2" in place (",," after '=' is a literal comma,
 * as in qemu) and call @fn for each key (val NULL for a bare key); stops
 * at and returns @fn's first non-zero result.
 */
int qimgctl_opts_each(char *s, int (*fn)(void *ctx, char *key, char *val),
		      void *ctx);
/* Powers of two, as cluster sizes and refcount widths must be. */
static inline bool qimgctl_is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* floor(log2(@v)), 0 for 0 and 1. */
static inline unsigned int qimgctl_log2(uint64_t v)
{
	unsigned int n = 0;

	while (v > 1) {
		v >>= 1;
		n++;
	}
	return n;
}

/* -f FMT of a command that reads qcow2 only: 0, or -1 after a message. */
int qimgctl_want_qcow2(const char *fmt);

/* An opened image: its fd, size and decoded header. */
struct qimgctl_image {
	const char *path;
	int fd;
	bool writable;
	uint64_t file_size;
	struct qimg_header h;
	void *hdr_buf;		/* the first cluster as read */
	size_t hdr_len;
};

/* How qimgctl_image_open() and the chain opener open and lock a file. */
#define QIMGCTL_OPEN_WRITE	0x1	/* read-write, QEMU's write locks */
#define QIMGCTL_OPEN_SHARE	0x2	/* -U/--force-share (read-only) */
#define QIMGCTL_OPEN_META	0x4	/* header only: qemu-img info's locks */
/*
 * The caller handles a dirty metadata journal itself (attach: the kernel
 * replays it).  Without it (or META), an image whose journal is dirty is
 * refused: its tables are stale.
 */
#define QIMGCTL_OPEN_JOURNAL_OK	0x8

/*
 * Open, lock (see lock.h) and decode @path.  On failure prints one line on
 * stderr naming the file and the reason and returns a negative errno;
 * -EOPNOTSUPP means an unsupported feature (check exits 63 for it),
 * -EINVAL not a qcow2 image, -EAGAIN another process holds the image,
 * -EUCLEAN a dirty metadata journal (see QIMGCTL_OPEN_JOURNAL_OK).
 */
int qimgctl_image_open(struct qimgctl_image *img, const char *path,
		       unsigned int flags);
void qimgctl_image_close(struct qimgctl_image *img);

/*
 * The persistent bitmaps of the decoded @img as qemu 7.2 checks them at
 * every open (util.c): 0, or -EUCLEAN after one line on stderr, in qemu's
 * words, of why qemu would not open the image.  qimgctl_image_open() and
 * check's opener call it.
 */
int qimgctl_bitmaps_qemu_ok(const struct qimgctl_image *img);

/*
 * The first half of qimgctl_image_open(): open @path and read its first
 * cluster into img->hdr_buf, without decoding it (img->h is left zeroed),
 * for callers that decode with rules of their own (check).
 */
int qimgctl_image_load(struct qimgctl_image *img, const char *path,
		       unsigned int flags);

struct qimg_jrnl_scan;
/*
 * Scan the metadata journal named by @h in the image open as @fd
 * (journal.c; the shared passes of qimg_journal_fmt.c).  0, -EUCLEAN for a
 * damaged journal (@err says why), else a negative errno.
 */
int qimgctl_jrnl_scan(int fd, const struct qimg_header *h, u64 file_size,
		      struct qimg_jrnl_scan *s, struct qimg_err *err);
/* Print why the journal-dirty @img is refused; returns -EUCLEAN. */
int qimgctl_jrnl_refuse(const struct qimgctl_image *img);

/* Lock the freshly opened @fd of @path as QIMGCTL_OPEN_* @flags say. */
int qimgctl_lock_open_file(int fd, const char *path, unsigned int flags);

/* Full-length pread/pwrite; a short read past EOF is zero-filled. */
int qimgctl_pread(int fd, void *buf, size_t len, uint64_t off);
int qimgctl_pwrite(int fd, const void *buf, size_t len, uint64_t off);

/*
 * The progress line of convert and commit: "    (12.34/100%)" as
 * qemu-img prints it, plus the rate and the time left, on stderr, at most
 * five times a second (and always for the last one).  Prints nothing
 * unless @show (callers pass -p and stderr being a terminal).
 */
struct qimgctl_progress {
	bool show;
	uint64_t total;
	double start, last_print;
};
void qimgctl_progress_start(struct qimgctl_progress *p, bool show,
			    uint64_t total);
void qimgctl_progress_update(struct qimgctl_progress *p, uint64_t done,
			     bool last);

/* Subcommands: each gets argv with argv[0] the subcommand name. */
int qimgctl_cmd_create(int argc, char **argv);
/*
 * create as convert makes its qcow2 output: a journal-dirty backing file
 * is refused without suggesting -u (convert has none).
 */
int qimgctl_create_for_convert(int argc, char **argv);
int qimgctl_cmd_info(int argc, char **argv);
int qimgctl_cmd_check(int argc, char **argv);
int qimgctl_repair_dirty(const char *path);
int qimgctl_cmd_map(int argc, char **argv);
int qimgctl_cmd_attach(int argc, char **argv);
int qimgctl_cmd_detach(int argc, char **argv);
int qimgctl_cmd_list(int argc, char **argv);
int qimgctl_cmd_convert(int argc, char **argv);
int qimgctl_cmd_resize(int argc, char **argv);
int qimgctl_attached(const char *what, uint32_t *index, uint64_t *cur,
		     bool *read_only);
int qimgctl_resize_index(uint32_t index, uint64_t size);
int qimgctl_cmd_amend(int argc, char **argv);
int qimgctl_cmd_compare(int argc, char **argv);
int qimgctl_cmd_measure(int argc, char **argv);
int qimgctl_cmd_snapshot(int argc, char **argv);
int qimgctl_cmd_bitmap(int argc, char **argv);
int qimgctl_cmd_rebase(int argc, char **argv);
int qimgctl_cmd_commit(int argc, char **argv);

#endif /* QIMGCTL_H */
