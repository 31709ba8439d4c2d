/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QEMU's image locking protocol, so that qimgctl, qemu-img and a running
 * QEMU refuse to use an image in ways that would corrupt it.
 *
 * The protocol (QEMU's block/file-posix.c): every user of an image file
 * takes shared OFD byte-range locks on the file.  For each permission
 * bit i it holds, it locks byte 100 + i; for each permission it does not
 * let others have ("unshares"), it locks byte 200 + i.  Before going on it
 * tests, with F_OFD_GETLK for an exclusive lock, byte 200 + i for every
 * permission it holds (someone else forbids it) and byte 100 + i for every
 * permission it unshares (someone else has it).  All the locks are read
 * locks, so holders never conflict with each other, only the tests fail.
 *
 * The locks belong to the open file description, not the process: they
 * last while any fd of it (or the kernel's struct file, for an attached
 * image) is open.
 */
#ifndef QIMGCTL_LOCK_H
#define QIMGCTL_LOCK_H

#include <stdbool.h>
#include <stdint.h>

/* QEMU's BLK_PERM_* bits (include/block/block-common.h, QEMU 7.2). */
#define QIMGCTL_PERM_CONSISTENT_READ	0x01
#define QIMGCTL_PERM_WRITE		0x02
#define QIMGCTL_PERM_WRITE_UNCHANGED	0x04
#define QIMGCTL_PERM_RESIZE		0x08
#define QIMGCTL_PERM_ALL		0x0f

#define QIMGCTL_LOCK_PERM_BASE		100
#define QIMGCTL_LOCK_SHARED_BASE	200

/* What an opener is going to do with the image, as qemu-img sees it. */
enum qimgctl_lock_mode {
	/* Header only, no data read (qemu-img info): unshare write, resize. */
	QIMGCTL_LOCK_META,
	/* Reading data (check, map, attach -r, backing files). */
	QIMGCTL_LOCK_READ,
	/* Reading and writing (create, check -r, attach). */
	QIMGCTL_LOCK_WRITE,
};

/*
 * Lock @fd (opened for reading) the way QEMU locks an image opened for
 * @mode; @force_share (qemu-img -U, not with QIMGCTL_LOCK_WRITE) lets
 * others have every permission, as QEMU's force-share does.  Returns 0, or
 * prints one line naming @path and the permission and returns -EAGAIN
 * when another process holds a conflicting lock, or another -errno.
 * Filesystems without OFD locks are used unlocked, as QEMU does.
 * The locks stay until the open file description goes away.
 */
int qimgctl_lock_image(int fd, const char *path, enum qimgctl_lock_mode mode,
		       bool force_share);

/*
 * The primitive under qimgctl_lock_image(): hold @perm, let others have
 * @shared (QIMGCTL_PERM_* masks).  On a conflict nothing stays locked.
 */
int qimgctl_lock_perms(int fd, const char *path, uint64_t perm,
		       uint64_t shared);

#endif /* QIMGCTL_LOCK_H */
