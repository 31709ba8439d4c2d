/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Encrypted qcow2 images, described without a key (see crypto.c).
 */
#ifndef QIMGCTL_CRYPTO_H
#define QIMGCTL_CRYPTO_H

#include <json-c/json.h>

#include "qimgctl.h"

/*
 * qemu-img info's "encrypt" object of an encrypted @img (decoded with
 * QIMG_DECODE_ENCRYPTED): {"format": "aes"} or the LUKS header's details.
 * NULL, *err set and a message printed if the LUKS header is unusable.
 */
struct json_object *qimgctl_crypto_info(struct qimgctl_image *img, int *err);

#endif /* QIMGCTL_CRYPTO_H */
