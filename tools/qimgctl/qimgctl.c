// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl: manage qcow2 images and the qimg block devices that serve them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qimgctl.h"

const char *qimgctl_prog = "qimgctl";

struct qimgctl_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
};

static const struct qimgctl_cmd cmds[] = {
	{ "create", qimgctl_cmd_create,
	  "create [-f qcow2] [-o cluster_size=,refcount_bits=,lazy_refcounts=,compat=,extended_l2=] [-b BACKING -F FMT] FILE [SIZE]" },
	{ "info", qimgctl_cmd_info, "info [--json] FILE" },
	{ "check", qimgctl_cmd_check,
	  "check [-r leaks|all | --repair=leaks|all] [--json] FILE" },
	{ "map", qimgctl_cmd_map, "map [--json] FILE" },
	{ "attach", qimgctl_cmd_attach,
	  "attach [-r] [-P] [-a] [--direct-io=on|off] [--l2-cache-size=SIZE] [--refcount-cache-size=SIZE] FILE" },
	{ "detach", qimgctl_cmd_detach, "detach DEVICE|FILE | detach -a" },
	{ "list", qimgctl_cmd_list, "list [--json]" },
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: %s COMMAND [ARGS]\n\ncommands:\n", qimgctl_prog);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %s\n", cmds[i].usage);
	fprintf(f, "\nSizes take qemu-img suffixes: k, M, G, T, P, E.\n");
}

int main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		usage(stderr);
		return 1;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	qimgctl_err("unknown command '%s' (try '%s --help')", argv[1],
		    qimgctl_prog);
	return 1;
}
