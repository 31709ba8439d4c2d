/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Userspace stand-ins for the few kernel facilities the format core uses,
 * so drivers/block/qimg/qimg_fmt.c compiles unchanged outside the kernel.
 * Keep this small: anything the core needs beyond it is a sign the core is
 * doing more than decoding and validating buffers.
 */
#ifndef QIMG_SHIM_H
#define QIMG_SHIM_H

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
/*
 * 64-bit types are long long, as in the kernel on every architecture, so
 * the same "%llu"/"%llx" format strings are right on both sides.  (Print
 * them with %llu, not PRIu64.)
 */
typedef unsigned long long u64;
typedef int8_t s8;
typedef int16_t s16;
typedef int32_t s32;
typedef long long s64;
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef unsigned long long __u64;

/* Distinct types would need sparse; in userspace they are plain integers. */
typedef uint16_t __be16;
typedef uint32_t __be32;
typedef unsigned long long __be64;
typedef uint16_t __le16;
typedef uint32_t __le32;
typedef unsigned long long __le64;

#define be16_to_cpu(x) be16toh(x)
#define be32_to_cpu(x) be32toh(x)
#define be64_to_cpu(x) be64toh(x)
#define cpu_to_be16(x) htobe16(x)
#define cpu_to_be32(x) htobe32(x)
#define cpu_to_be64(x) htobe64(x)
#define le16_to_cpu(x) le16toh(x)
#define le32_to_cpu(x) le32toh(x)
#define le64_to_cpu(x) le64toh(x)
#define cpu_to_le16(x) htole16(x)
#define cpu_to_le32(x) htole32(x)
#define cpu_to_le64(x) htole64(x)

#ifndef __packed
#define __packed __attribute__((packed))
#endif

#ifndef BIT
#define BIT(n) (1UL << (n))
#endif
#ifndef BIT_ULL
#define BIT_ULL(n) (1ULL << (n))
#endif

#ifndef __printf
#define __printf(a, b) __attribute__((format(printf, a, b)))
#endif

#define BUILD_BUG_ON(cond) _Static_assert(!(cond), #cond)

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

#ifndef U32_MAX
#define U32_MAX UINT32_MAX
#endif
#ifndef U64_MAX
#define U64_MAX UINT64_MAX
#endif

#ifndef EUCLEAN
#define EUCLEAN 117
#endif

/* Unaligned big-endian loads from byte buffers. */
static inline u16 get_unaligned_be16(const void *p)
{
	u16 v;

	memcpy(&v, p, sizeof(v));
	return be16toh(v);
}

static inline u32 get_unaligned_be32(const void *p)
{
	u32 v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static inline u64 get_unaligned_be64(const void *p)
{
	u64 v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

static inline void put_unaligned_be16(u16 val, void *p)
{
	val = htobe16(val);
	memcpy(p, &val, sizeof(val));
}

static inline void put_unaligned_be32(u32 val, void *p)
{
	val = htobe32(val);
	memcpy(p, &val, sizeof(val));
}

static inline void put_unaligned_be64(u64 val, void *p)
{
	val = htobe64(val);
	memcpy(p, &val, sizeof(val));
}

/* Little-endian ones (QED). */
static inline u32 get_unaligned_le32(const void *p)
{
	u32 v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static inline u64 get_unaligned_le64(const void *p)
{
	u64 v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline void put_unaligned_le64(u64 val, void *p)
{
	val = htole64(val);
	memcpy(p, &val, sizeof(val));
}

#endif /* QIMG_SHIM_H */
