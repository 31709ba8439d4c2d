// SPDX-License-Identifier: GPL-2.0
/*
 * QEMU-compatible image locking: see lock.h for the protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "lock.h"
#include "qimgctl.h"

static const char *const perm_names[] = {
	"consistent read", "write", "write unchanged", "resize",
};

#define NR_PERMS	(sizeof(perm_names) / sizeof(perm_names[0]))

static int ofd_lock(int fd, int type, int byte)
{
	struct flock fl = {
		.l_type = (short)type,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) < 0)
		return -errno;
	return 0;
}

/* 1 if another open file description holds a lock on @byte, else 0/-errno. */
static int ofd_held_elsewhere(int fd, int byte)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

static void unlock_bytes(int fd, uint64_t perm_bits, uint64_t unshared_bits)
{
	unsigned int i;

	for (i = 0; i < NR_PERMS; i++) {
		if (perm_bits & (1ULL << i))
			ofd_lock(fd, F_UNLCK, QIMGCTL_LOCK_PERM_BASE + (int)i);
		if (unshared_bits & (1ULL << i))
			ofd_lock(fd, F_UNLCK, QIMGCTL_LOCK_SHARED_BASE + (int)i);
	}
}

int qimgctl_lock_perms(int fd, const char *path, uint64_t perm,
		       uint64_t shared)
{
	uint64_t unshared = ~shared & QIMGCTL_PERM_ALL, got_p = 0, got_s = 0;
	unsigned int i;
	int ret, byte;

	perm &= QIMGCTL_PERM_ALL;
	if (!perm && !unshared)
		return 0;
	/* No OFD locks here (old kernel, some network filesystems): QEMU
	 * then uses the image without locking, and so do we. */
	ret = ofd_held_elsewhere(fd, QIMGCTL_LOCK_PERM_BASE);
	if (ret == -EINVAL || ret == -ENOLCK || ret == -EOPNOTSUPP ||
	    ret == -ENOSYS)
		return 0;
	if (ret < 0) {
		qimgctl_err("%s: cannot test image locks: %s", path,
			    strerror(-ret));
		return ret;
	}

	/* Step one: take our bytes, so that whoever comes next sees us. */
	for (i = 0; i < NR_PERMS; i++) {
		if (perm & (1ULL << i)) {
			byte = QIMGCTL_LOCK_PERM_BASE + (int)i;
			ret = ofd_lock(fd, F_RDLCK, byte);
			if (ret)
				goto lock_failed;
			got_p |= 1ULL << i;
		}
		if (unshared & (1ULL << i)) {
			byte = QIMGCTL_LOCK_SHARED_BASE + (int)i;
			ret = ofd_lock(fd, F_RDLCK, byte);
			if (ret)
				goto lock_failed;
			got_s |= 1ULL << i;
		}
	}

	/* Step two: nobody forbids what we hold ... */
	for (i = 0; i < NR_PERMS; i++) {
		if (!(perm & (1ULL << i)))
			continue;
		ret = ofd_held_elsewhere(fd, QIMGCTL_LOCK_SHARED_BASE + (int)i);
		if (ret) {
			if (ret > 0)
				qimgctl_err("Failed to get \"%s\" lock: is another process using the image [%s]?",
					    perm_names[i], path);
			goto test_failed;
		}
	}
	/* ... and nobody holds what we forbid. */
	for (i = 0; i < NR_PERMS; i++) {
		if (!(unshared & (1ULL << i)))
			continue;
		ret = ofd_held_elsewhere(fd, QIMGCTL_LOCK_PERM_BASE + (int)i);
		if (ret) {
			if (ret > 0)
				qimgctl_err("Failed to get shared \"%s\" lock: is another process using the image [%s]?",
					    perm_names[i], path);
			goto test_failed;
		}
	}
	return 0;

lock_failed:
	/* A write lock of another kind on our bytes (not QEMU's protocol). */
	if (ret == -EAGAIN || ret == -EACCES)
		qimgctl_err("Failed to lock byte %d: is another process using the image [%s]?",
			    byte, path);
	else
		qimgctl_err("%s: failed to lock byte %d: %s", path, byte,
			    strerror(-ret));
	unlock_bytes(fd, got_p, got_s);
	return ret == -EACCES ? -EAGAIN : ret;
test_failed:
	if (ret < 0)
		qimgctl_err("%s: cannot test image locks: %s", path,
			    strerror(-ret));
	unlock_bytes(fd, got_p, got_s);
	return ret > 0 ? -EAGAIN : ret;
}

int qimgctl_lock_image(int fd, const char *path, enum qimgctl_lock_mode mode,
		       bool force_share)
{
	/*
	 * What QEMU 7.2 holds on the file of a qcow2 image: a format
	 * driver needs consistent reads of its metadata unless it does no
	 * I/O at all, writes and resizes the file when writable, and never
	 * lets anyone else write or resize it under its metadata.  -U lifts
	 * the last part (read-only only).
	 */
	uint64_t perm = 0, shared = QIMGCTL_PERM_ALL &
		~(QIMGCTL_PERM_WRITE | QIMGCTL_PERM_RESIZE);

	switch (mode) {
	case QIMGCTL_LOCK_META:
		break;
	case QIMGCTL_LOCK_READ:
		perm = QIMGCTL_PERM_CONSISTENT_READ;
		break;
	case QIMGCTL_LOCK_WRITE:
		perm = QIMGCTL_PERM_CONSISTENT_READ | QIMGCTL_PERM_WRITE |
		       QIMGCTL_PERM_RESIZE;
		break;
	}
	if (force_share && mode != QIMGCTL_LOCK_WRITE)
		shared = QIMGCTL_PERM_ALL;
	return qimgctl_lock_perms(fd, path, perm, shared);
}
