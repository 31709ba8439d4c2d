/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest-visible contents of an opened backing chain (image_io.h's
 * qimgctl_node): reading guest bytes through the chain (data clusters,
 * compressed clusters, zeroes, backing files) and the block status qemu's
 * block layer reports for a range, with its flags, so commands that
 * follow qemu-img's walk over block status (compare) see the same extents.
 */
#ifndef QIMGCTL_GUEST_H
#define QIMGCTL_GUEST_H

#include <stdint.h>

#include "image_io.h"

/* The block status flags of qemu's block layer, with its values. */
#define QIMGCTL_BS_DATA		0x01
#define QIMGCTL_BS_ZERO		0x02
#define QIMGCTL_BS_OFFSET_VALID	0x04
#define QIMGCTL_BS_ALLOCATED	0x10
#define QIMGCTL_BS_EOF		0x20

/*
 * The status of [@off, @off + @bytes) of the whole chain @top, as qemu's
 * bdrv_block_status_above() with no base computes it: *pnum bytes from
 * @off share the returned flags (QIMGCTL_BS_*).  @off < top->length.
 * Corrupt tables: a message and -EUCLEAN; other errors -errno.
 */
int qimgctl_chain_status(struct qimgctl_node *top, u64 off, u64 bytes,
			 u64 *pnum);

/*
 * Read @len guest bytes at @off of the chain @top into @buf (past the
 * virtual size: zeroes).  Prints the reason and returns -errno on failure.
 */
int qimgctl_guest_read(struct qimgctl_node *top, u64 off, void *buf,
		       size_t len);

#endif /* QIMGCTL_GUEST_H */
