// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl: manage qcow2 images and the qimg block devices that serve them.
 *
 * The command table below is the only place the command lines are
 * described: `qimgctl --help`, `qimgctl CMD --help` and the usage errors
 * of every command print from it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qimgctl.h"

#ifndef QIMGCTL_VERSION
#error "QIMGCTL_VERSION must be defined (the Makefile takes it from dkms.conf)"
#endif

const char *qimgctl_prog = "qimgctl";

struct qimgctl_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;	/* synopsis, after "qimgctl " */
	const char *details;	/* more lines for CMD --help, or NULL */
};

static const struct qimgctl_cmd cmds[] = {
	{ "create", qimgctl_cmd_create,
	  "create [-q] [-p] [-f qcow2] [-o OPTIONS] [-b BACKING -F FMT [-u]] FILE [SIZE]",
	  "Make an empty qcow2 image, as qemu-img create -f qcow2 does.\n"
	  "OPTIONS (comma-separated key=value, ',,' for a comma):\n"
	  "  cluster_size, refcount_bits, lazy_refcounts=on|off,\n"
	  "  compat=0.10|v2|1.1|v3, extended_l2=on|off,\n"
	  "  compression_type=zlib|zstd, preallocation=off|metadata|falloc|full,\n"
	  "  backing_file, backing_fmt, size,\n"
	  "  journal=on|off, journal_size (with journal=on; default 4M): ask\n"
	  "  for a qimg metadata journal while attached (nothing allocated)\n"
	  "-b BACKING -F qcow2|raw  backing file and its format; SIZE defaults\n"
	  "                         to the backing file's\n"
	  "-u                       do not open the backing file (SIZE needed)\n"
	  "-q                       do not print the \"Formatting\" line\n"
	  "-p                       show progress while preallocation=full\n"
	  "                         writes zeroes (on a terminal only)\n" },
	{ "info", qimgctl_cmd_info,
	  "info [-f qcow2|qed] [-U] [--backing-chain] [--json | --output=json|human] FILE",
	  "FILE is a qcow2 or a QED image (probed unless -f says which).\n" },
	{ "check", qimgctl_cmd_check,
	  "check [-q] [-p] [-f qcow2|qed] [-U] [-r leaks|all | --repair=leaks|all] [--json | --output=json|human] FILE",
	  "Exit status as qemu-img check: 0 clean, 1 check not completed,\n"
	  "2 corruptions, 3 leaked clusters only, 63 checks not supported.\n"
	  "FILE is a qcow2 or a QED image (probed unless -f says which).\n"
	  "-p shows progress on a terminal (qemu-img check has no -p; qcow2).\n" },
	{ "map", qimgctl_cmd_map,
	  "map [-f qcow2|qed] [-U] [--start-offset=OFFSET] [--max-length=LEN] [--json | --output=json|human] FILE",
	  "FILE is a qcow2 or a QED image (probed unless -f says which).\n"
	  "--start-offset, --max-length  map only LEN bytes from OFFSET (qemu-img\n"
	  "                              suffixes allowed)\n" },
	{ "attach", qimgctl_cmd_attach,
	  "attach [-r [-U]] [-P] [-a] [--direct-io=on|off] [--l2-cache-size=SIZE] [--refcount-cache-size=SIZE] [--journal=on|off [--journal-size=SIZE]] FILE",
	  "Serve FILE as /dev/qimgN (printed).  -r read-only, -P scan\n"
	  "partitions, -a detach automatically on last close.  The image and\n"
	  "its backing files stay locked against QEMU while attached.\n"
	  "--journal=on|off  keep a metadata journal while attached, or not\n"
	  "                  (default: what the image asks for, see create -o\n"
	  "                  journal=on); --journal-size with on: its size\n"
	  "                  (a multiple of the cluster size, default 4M)\n" },
	{ "detach", qimgctl_cmd_detach, "detach DEVICE|FILE | detach -a",
	  NULL },
	{ "list", qimgctl_cmd_list, "list [--json]",
	  "Attached devices; nothing (or [] with --json) if there are none.\n" },
	{ "convert", qimgctl_cmd_convert,
	  "convert [-p] [-q] [-c] [--bitmaps [--skip-broken-bitmaps]] [-f qcow2|qed|raw] [-O qcow2|raw] [-o OPTIONS] [-B BACKING -F FMT] [-U] SRC DST",
	  "Copy the guest contents of SRC (through its backing chain) into a\n"
	  "new image DST, as qemu-img convert does (-O defaults to raw).\n"
	  "Zeroes are not written (raw stays sparse, qcow2 unallocated).\n"
	  "SRC is raw, qcow2 or QED (probed unless -f says which).\n"
	  "-o OPTIONS   as create -o (qcow2 output)\n"
	  "-c           compressed clusters (zlib, or zstd with\n"
	  "             -o compression_type=zstd)\n"
	  "-B BACKING -F FMT  DST gets this backing file; only what SRC's top\n"
	  "             image allocates is copied\n"
	  "-p           progress on stderr when it is a terminal\n"
	  "--bitmaps    copy SRC's persistent bitmaps too (qcow2 v3 to v3);\n"
	  "             --skip-broken-bitmaps leaves in-use ones out\n" },
	{ "resize", qimgctl_cmd_resize,
	  "resize [-q] [-f qcow2|raw] [--shrink] FILE|DEVICE [+|-]SIZE",
	  "Change the virtual size of a detached image, as qemu-img resize.\n"
	  "Shrinking needs --shrink and, as in qemu-img, deletes what lies\n"
	  "past the new end.  An attached image (its /dev/qimgN or its file)\n"
	  "grows online; it cannot shrink.\n" },
	{ "amend", qimgctl_cmd_amend,
	  "amend [-q] [-f qcow2] -o OPTIONS FILE",
	  "Change options of a detached qcow2 image, as qemu-img amend:\n"
	  "  compat=0.10|v2|1.1|v3, lazy_refcounts=on|off, refcount_bits,\n"
	  "  size (as resize, shrinking included)\n" },
	{ "compare", qimgctl_cmd_compare,
	  "compare [-f FMT] [-F FMT] [-s] [-U] [-p] [-q] FILE1 FILE2",
	  "Whether two images (qcow2 or raw, with their backing chains) show\n"
	  "the guest the same contents, as qemu-img compare says it.  Without\n"
	  "-s the larger image's extra part must read as zeroes.\n"
	  "-f FMT, -F FMT  format of FILE1, FILE2: qcow2 or raw (default: probe)\n"
	  "-s              strict: sizes and allocation state must match too\n"
	  "-p              show progress (qemu-img's meter)   -q  print nothing\n"
	  "Exit status: 0 identical, 1 different, 2 an image could not be\n"
	  "opened, 3 allocation status failed, 4 a read failed.\n" },
	{ "measure", qimgctl_cmd_measure,
	  "measure [--output=human|json] [-O qcow2|raw] [-o OPTIONS] [--size SIZE | [-f FMT] [-U] FILE]",
	  "The size a new image of format -O (default raw) needs, for SIZE\n"
	  "bytes or for the contents of FILE (qcow2 or raw, with its backing\n"
	  "chain), as qemu-img measure reports it: required size, fully\n"
	  "allocated size and, for qcow2 v3, the space of FILE's persistent\n"
	  "bitmaps.  OPTIONS as create takes them (cluster_size,\n"
	  "refcount_bits, compat, extended_l2, preallocation, backing_file...).\n" },
	{ "snapshot", qimgctl_cmd_snapshot,
	  "snapshot [-q] [-U] [-l | -c NAME | -a NAME | -d NAME] FILE",
	  "Internal snapshots of a detached qcow2 image, as qemu-img snapshot:\n"
	  "-l       list them (-U with an image in use)\n"
	  "-c NAME  create one of the current state (names need not be unique;\n"
	  "         the ID is one more than the largest)\n"
	  "-a NAME  apply one (NAME is an ID or, failing that, a name): the\n"
	  "         image returns to its contents and size\n"
	  "-d NAME  delete the first one of that name\n"
	  "Files of other formats have no snapshots (-l lists nothing).\n" },
	{ "bitmap", qimgctl_cmd_bitmap,
	  "bitmap (--add | --remove | --clear | --enable | --disable | --merge SRC [-b SRC_FILE [-F qcow2]])... [-g GRANULARITY] [-f qcow2] FILE NAME\n"
	  "       qimgctl bitmap --export NAME [-U] [-f qcow2] FILE",
	  "Persistent dirty bitmaps of a detached qcow2 v3 image, as qemu-img\n"
	  "bitmap: the actions run in the order given on bitmap NAME.\n"
	  "--add            a new, empty, enabled bitmap (-g: granularity, a\n"
	  "                 power of two from 512 to 2G; default the cluster\n"
	  "                 size, but at least 4k and at most 64k)\n"
	  "--remove, --clear, --enable, --disable   as their names say\n"
	  "--merge SRC      set every bit that bitmap SRC (of FILE, or of\n"
	  "                 SRC_FILE with -b) has set\n"
	  "--export NAME    print the dirty extents of bitmap NAME as JSON:\n"
	  "                 [{ \"offset\": N, \"length\": N }, ...] in guest bytes\n" },
	{ "rebase", qimgctl_cmd_rebase,
	  "rebase [-q] [-p] [-f qcow2] [-u] -b BACKING [-F qcow2|raw] FILE",
	  "Give a detached qcow2 image the backing file BACKING (\"\" for none),\n"
	  "as qemu-img rebase.  Without -u, what the image reads from its old\n"
	  "backing chain and the new one would show differently is first\n"
	  "copied into the image; -u (unsafe) only changes the header.\n"
	  "-F (required with a BACKING) is the new backing file's format.\n"
	  "-p shows progress on a terminal (qemu-img's meter).\n" },
	{ "commit", qimgctl_cmd_commit,
	  "commit [-q] [-p] [-f qcow2] [-t CACHE] [-b BASE] [-d] [-r RATE] FILE",
	  "Write what the detached qcow2 image FILE holds into its backing file,\n"
	  "as qemu-img commit; then FILE is emptied (reads through to it).\n"
	  "-b BASE  commit into BASE further down the backing chain: the data\n"
	  "         of every image above BASE goes there (implies -d; the\n"
	  "         images in between are left as they are)\n"
	  "-d       leave FILE as it is\n"
	  "-p       progress on stderr when it is a terminal\n"
	  "-r RATE  at most RATE bytes per second (suffixes allowed)\n"
	  "-t CACHE accepted for qemu-img's sake; data is always synced\n"
	  "The backing file is written and synced before FILE is emptied.\n" },
};

#define NR_CMDS	(sizeof(cmds) / sizeof(cmds[0]))

static const char common_help[] =
	"Sizes take qemu-img suffixes: k, M, G, T, P, E.\n"
	"-U, --force-share: use an image another process (QEMU) holds, read-only.\n"
	"Images are locked the way QEMU locks them.\n";

static const struct qimgctl_cmd *find_cmd(const char *name)
{
	size_t i;

	for (i = 0; i < NR_CMDS; i++)
		if (!strcmp(name, cmds[i].name))
			return &cmds[i];
	return NULL;
}

void qimgctl_usage(FILE *f, const char *cmd)
{
	const struct qimgctl_cmd *c = find_cmd(cmd);

	if (!c)
		return;
	fprintf(f, "usage: %s %s\n", qimgctl_prog, c->usage);
	if (c->details)
		fprintf(f, "\n%s", c->details);
	fprintf(f, "\n%s", common_help);
}

void qimgctl_usage_err(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: %s: ", qimgctl_prog, cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try '%s %s --help')\n", qimgctl_prog, cmd);
}

void qimgctl_opt_err(const char *cmd, int c, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "";

	if (c == ':') {
		if (optopt)
			qimgctl_usage_err(cmd, "option -%c needs an argument",
					  optopt);
		else
			qimgctl_usage_err(cmd, "option '%s' needs an argument",
					  arg);
	} else if (optopt) {
		qimgctl_usage_err(cmd, "unknown option -%c", optopt);
	} else {
		qimgctl_usage_err(cmd, "unknown option '%s'", arg);
	}
}

int qimgctl_one_file(const char *cmd, int argc, char **argv)
{
	if (optind >= argc) {
		qimgctl_usage_err(cmd, "no FILE given");
		return -EINVAL;
	}
	if (optind + 1 < argc) {
		qimgctl_usage_err(cmd, "unexpected argument '%s'",
				  argv[optind + 1]);
		return -EINVAL;
	}
	return 0;
}

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: %s COMMAND [ARGS]   (options may come before or after FILE)\n"
		"       %s [COMMAND] --help\n       %s --version\n\ncommands:\n",
		qimgctl_prog, qimgctl_prog, qimgctl_prog);
	for (i = 0; i < NR_CMDS; i++)
		fprintf(f, "  %s\n", cmds[i].usage);
	fprintf(f, "\n%s", common_help);
}

int main(int argc, char **argv)
{
	const struct qimgctl_cmd *c;

	if (argc < 2) {
		qimgctl_err("no command given (try '%s --help')", qimgctl_prog);
		return 1;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		if (argc > 2 && find_cmd(argv[2])) {
			qimgctl_usage(stdout, argv[2]);
			return 0;
		}
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("%s version %s\n", qimgctl_prog, QIMGCTL_VERSION);
		return 0;
	}
	c = find_cmd(argv[1]);
	if (!c) {
		qimgctl_err("unknown command '%s' (try '%s --help')", argv[1],
			    qimgctl_prog);
		return 1;
	}
	/* Our own messages, with our one prefix, instead of getopt's. */
	opterr = 0;
	return c->fn(argc - 1, argv + 1);
}
