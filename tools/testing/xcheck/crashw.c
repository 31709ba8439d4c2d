// SPDX-License-Identifier: GPL-2.0
/*
 * Test helper for xcheck (LD_PRELOAD): simulate a crash of a qimgctl
 * command in the middle of its writes.
 *
 *   QIMG_CRASH_AT=N     exit(99) instead of doing the Nth pwrite/fsync
 *                       (of the files opened read-write)
 *   QIMG_CRASH_COUNT=F  at exit, write how many there were to file F
 *
 * Everything written before the crash point stays in the file, so the
 * image is what the write order leaves behind at that point; a writer
 * whose order is right leaves an image qemu-img check finds clean or
 * merely leaking, never corrupt.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static long calls;

static void hit(void)
{
	const char *at = getenv("QIMG_CRASH_AT");

	calls++;
	if (at && atol(at) == calls)
		_exit(99);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t, off_t))
			dlsym(RTLD_NEXT, "pwrite");
	hit();
	return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

int fsync(int fd)
{
	static int (*real)(int);

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	hit();
	return real(fd);
}

__attribute__((destructor)) static void report(void)
{
	const char *f = getenv("QIMG_CRASH_COUNT");
	FILE *fp;

	if (!f)
		return;
	fp = fopen(f, "w");
	if (fp) {
		fprintf(fp, "%ld\n", calls);
		fclose(fp);
	}
}
