// SPDX-License-Identifier: GPL-2.0
/*
 * Describing encrypted qcow2 images the way qemu-img info does: the old
 * AES method is just named; for LUKS the LUKS (version 1) header the
 * crypto header extension points at is read and its cipher, modes, hash,
 * payload offset and key slots are reported.  Nothing is decrypted and no
 * key is needed.  Every field of the LUKS header is checked before use.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

#define LUKS_HDR_LEN		592
#define LUKS_SLOTS		8
#define LUKS_SLOT_ACTIVE	0x00ac71f3U
#define LUKS_SLOT_INACTIVE	0x0000deadU
#define LUKS_SECTOR		512

/* Offsets in the LUKS v1 header (all numbers big-endian). */
#define LH_VERSION		6
#define LH_CIPHER_NAME		8
#define LH_CIPHER_MODE		40
#define LH_HASH_SPEC		72
#define LH_PAYLOAD		104
#define LH_KEY_BYTES		108
#define LH_MK_ITERS		164
#define LH_UUID			168
#define LH_SLOTS		208
#define LH_SLOT_LEN		48

/* A NUL-terminated copy of a fixed-size header field. */
static void field(char *dst, const u8 *src, size_t len)
{
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static bool one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

/* qemu's cipher algorithm name for a LUKS cipher name and key size. */
static int cipher_alg(const char *name, u32 key_bytes, char *out, size_t len)
{
	if (!strcmp(name, "aes") || !strcmp(name, "serpent") ||
	    !strcmp(name, "twofish")) {
		if (key_bytes != 16 && key_bytes != 24 && key_bytes != 32)
			return -EINVAL;
	} else if (!strcmp(name, "cast5") || !strcmp(name, "sm4")) {
		if (key_bytes != 16)
			return -EINVAL;
		if (!strcmp(name, "sm4")) {
			snprintf(out, len, "sm4");
			return 0;
		}
	} else {
		return -EINVAL;
	}
	snprintf(out, len, "%s-%u", name, key_bytes * 8);
	return 0;
}

static struct json_object *jstr(const char *s)
{
	return json_object_new_string(s);
}

static int luks_info(struct qimgctl_image *img, struct json_object *enc)
{
	static const char *const modes[] = { "ecb", "cbc", "xts", "ctr", NULL };
	static const char *const ivgens[] = { "plain", "plain64", "essiv",
					      NULL };
	static const char *const hashes[] = { "md5", "sha1", "sha224",
					      "sha256", "sha384", "sha512",
					      "ripemd160", "sm3", NULL };
	const struct qimg_header *h = &img->h;
	char cname[33], cmode[33], hspec[33], uuid[41], alg[64];
	char *ivgen, *ivhash = NULL;
	struct json_object *slots, *sl;
	u32 key_bytes, active, i;
	u8 hdr[LUKS_HDR_LEN];
	const u8 *s;
	int ret;

	if (h->crypto_length < LUKS_HDR_LEN) {
		qimgctl_err("%s: LUKS header is too short (%" PRIu64 " bytes)",
			    img->path, (uint64_t)h->crypto_length);
		return -EUCLEAN;
	}
	ret = qimgctl_pread(img->fd, hdr, sizeof(hdr), h->crypto_offset);
	if (ret) {
		qimgctl_err("%s: reading the LUKS header: %s", img->path,
			    strerror(-ret));
		return ret;
	}
	if (memcmp(hdr, "LUKS\xba\xbe", 6)) {
		qimgctl_err("%s: Volume is not in LUKS format", img->path);
		return -EUCLEAN;
	}
	if (get_unaligned_be16(hdr + LH_VERSION) != 1) {
		qimgctl_err("%s: LUKS version %u is not supported", img->path,
			    get_unaligned_be16(hdr + LH_VERSION));
		return -EOPNOTSUPP;
	}
	field(cname, hdr + LH_CIPHER_NAME, 32);
	field(cmode, hdr + LH_CIPHER_MODE, 32);
	field(hspec, hdr + LH_HASH_SPEC, 32);
	field(uuid, hdr + LH_UUID, 40);
	key_bytes = get_unaligned_be32(hdr + LH_KEY_BYTES);
	/* "xts-plain64", "cbc-essiv:sha256": mode, IV generator, its hash. */
	ivgen = strchr(cmode, '-');
	if (!ivgen)
		goto bad_mode;
	*ivgen++ = '\0';
	ivhash = strchr(ivgen, ':');
	if (ivhash)
		*ivhash++ = '\0';
	if (!one_of(cmode, modes) || !one_of(ivgen, ivgens) ||
	    !strcmp(ivgen, "essiv") != (ivhash != NULL) ||
	    (ivhash && !one_of(ivhash, hashes)))
		goto bad_mode;
	/* XTS takes two keys of the cipher's size. */
	if (!strcmp(cmode, "xts"))
		key_bytes /= 2;
	if (cipher_alg(cname, key_bytes, alg, sizeof(alg))) {
		qimgctl_err("%s: LUKS cipher '%s' with %u-byte keys is not supported",
			    img->path, cname, key_bytes);
		return -EOPNOTSUPP;
	}
	if (!one_of(hspec, hashes)) {
		qimgctl_err("%s: LUKS hash '%s' is not supported", img->path,
			    hspec);
		return -EOPNOTSUPP;
	}

	json_object_object_add(enc, "ivgen-alg", jstr(ivgen));
	json_object_object_add(enc, "hash-alg", jstr(hspec));
	json_object_object_add(enc, "cipher-alg", jstr(alg));
	json_object_object_add(enc, "uuid", jstr(uuid));
	if (ivhash)
		json_object_object_add(enc, "ivgen-hash-alg", jstr(ivhash));
	json_object_object_add(enc, "format", jstr("luks"));
	json_object_object_add(enc, "cipher-mode", jstr(cmode));
	slots = json_object_new_array();
	json_object_object_add(enc, "slots", slots);
	for (i = 0; i < LUKS_SLOTS; i++) {
		s = hdr + LH_SLOTS + i * LH_SLOT_LEN;
		active = get_unaligned_be32(s);
		sl = json_object_new_object();
		json_object_object_add(sl, "active",
				       json_object_new_boolean(active ==
							       LUKS_SLOT_ACTIVE));
		if (active == LUKS_SLOT_ACTIVE)
			json_object_object_add(sl, "iters",
					       json_object_new_int64(get_unaligned_be32(s + 4)));
		json_object_object_add(sl, "key-offset",
				       json_object_new_int64((int64_t)get_unaligned_be32(s + 40) *
							     LUKS_SECTOR));
		if (active == LUKS_SLOT_ACTIVE)
			json_object_object_add(sl, "stripes",
					       json_object_new_int64(get_unaligned_be32(s + 44)));
		json_object_array_add(slots, sl);
	}
	json_object_object_add(enc, "payload-offset",
			       json_object_new_int64((int64_t)get_unaligned_be32(hdr + LH_PAYLOAD) *
						     LUKS_SECTOR));
	json_object_object_add(enc, "master-key-iters",
			       json_object_new_int64(get_unaligned_be32(hdr + LH_MK_ITERS)));
	return 0;
bad_mode:
	field(cmode, hdr + LH_CIPHER_MODE, 32);
	qimgctl_err("%s: LUKS cipher mode '%s' is not supported", img->path,
		    cmode);
	return -EOPNOTSUPP;
}

struct json_object *qimgctl_crypto_info(struct qimgctl_image *img, int *err)
{
	struct json_object *enc = json_object_new_object();

	*err = 0;
	if (img->h.crypt_method == QIMG_CRYPT_AES) {
		json_object_object_add(enc, "format", jstr("aes"));
		return enc;
	}
	*err = luks_info(img, enc);
	if (*err) {
		json_object_put(enc);
		return NULL;
	}
	return enc;
}
