// SPDX-License-Identifier: GPL-2.0
/*
 * Test helper for xcheck: hold QEMU-protocol locks on an image through
 * qimgctl's lock module (tools/qimgctl/lock.c) until stdin closes, so the
 * tests can see what qemu-io and qemu-img make of locks qimgctl holds.
 *
 *   qimg-lockhold MODE FILE     MODE: write, read, read-U, meta, meta-U
 *
 * Prints "locked" on stdout once the locks are held (exit 1 and the lock
 * module's message if they cannot be had), then waits for EOF on stdin.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lock.h"
#include "qimgctl.h"

const char *qimgctl_prog = "qimg-lockhold";

void qimgctl_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", qimgctl_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	enum qimgctl_lock_mode mode;
	bool share = false;
	char buf[256];
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: %s write|read|read-U|meta|meta-U FILE\n",
			qimgctl_prog);
		return 2;
	}
	if (!strcmp(argv[1], "write")) {
		mode = QIMGCTL_LOCK_WRITE;
	} else if (!strncmp(argv[1], "read", 4)) {
		mode = QIMGCTL_LOCK_READ;
		share = !strcmp(argv[1], "read-U");
	} else if (!strncmp(argv[1], "meta", 4)) {
		mode = QIMGCTL_LOCK_META;
		share = !strcmp(argv[1], "meta-U");
	} else {
		fprintf(stderr, "%s: unknown mode '%s'\n", qimgctl_prog,
			argv[1]);
		return 2;
	}
	fd = open(argv[2], (mode == QIMGCTL_LOCK_WRITE ? O_RDWR : O_RDONLY) |
		  O_CLOEXEC);
	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	if (qimgctl_lock_image(fd, argv[2], mode, share))
		return 1;
	printf("locked\n");
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return 0;
}
