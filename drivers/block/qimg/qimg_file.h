/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qimg backing-file layer: image-file I/O with flags we set ourselves,
 * decompression, the SRCU sections of data I/O, writer thread context.
 */
#ifndef QIMG_FILE_H
#define QIMG_FILE_H

#include <linux/ratelimit.h>

#include "qimg.h"

/*
 * Messages about a device: errors name the device and its image
 * ("qimgN: IMAGE: ..."), information the device ("qimgN: ...").  Every
 * other message of the driver is prefixed "qimg: " (pr_fmt).
 */
void qimg_dev_err(const struct qimg_device *dev, const char *fmt, ...)
	__printf(2, 3);
void qimg_dev_info(const struct qimg_device *dev, const char *fmt, ...)
	__printf(2, 3);

#define qimg_dev_err_ratelimited(dev, fmt, ...)				\
do {									\
	static DEFINE_RATELIMIT_STATE(_rs, DEFAULT_RATELIMIT_INTERVAL,	\
				      DEFAULT_RATELIMIT_BURST);		\
									\
	if (__ratelimit(&_rs))						\
		qimg_dev_err(dev, fmt, ##__VA_ARGS__);			\
} while (0)

void qimg_kiocb_init(struct kiocb *iocb, struct file *file, u64 pos,
		     int flags, u16 ioprio);
int qimg_kread(struct file *file, void *buf, size_t len, u64 pos);
int qimg_kwrite(struct file *file, const void *buf, size_t len, u64 pos);
int qimg_file_extend(struct file *file, u64 end);
int qimg_file_punch(struct file *file, u64 off, u64 len);
int qimg_file_zero(struct qimg_image *img, u64 pos, u64 len);
bool qimg_dio_ok(struct qimg_image *img, u64 pos, struct iov_iter *it);
int qimg_read_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it);
int qimg_write_iter_at(struct qimg_image *img, u64 pos, struct iov_iter *it);
int qimg_buf_alloc(struct qimg_buf *b, size_t len);
void qimg_buf_iter(const struct qimg_buf *b, struct iov_iter *it,
		   unsigned int dir, size_t off, size_t len);
void qimg_buf_free(struct qimg_buf *b);
int qimg_decompress(struct qimg_image *img, const struct qimg_l2_entry *e,
		    void *out);
u64 qimg_image_end(struct qimg_image *img);

/*
 * Data I/O to a host cluster found by a lookup of the top image: enter
 * before the lookup, exit (any context) once the I/O completed.  Drain
 * (dev->meta_lock held) waits for every section begun before it.
 */
int qimg_io_enter(struct qimg_device *dev);
void qimg_io_exit(struct qimg_device *dev, int idx);
void qimg_io_drain(struct qimg_device *dev);

/* Around work that writes image files for requests (loop's flags). */
unsigned int qimg_writer_begin(void);
void qimg_writer_end(unsigned int old);

#endif /* QIMG_FILE_H */
