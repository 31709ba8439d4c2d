// SPDX-License-Identifier: GPL-2.0
/*
 * Cross-checks against QEMU: images made by `qemu-img create` decode to
 * what was asked for (header, snapshot table and bitmap directory), and
 * images whose metadata qimg wrote by hand pass `qemu-img check`.  Skipped
 * when qemu-img is not installed.
 */
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qimg_tests.h"

static char qt_dir[64];

static bool qt_have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0;
}

/* Run a shell command; its output is kept in @out (may be NULL). */
static __printf(3, 4) int qt_run(char *out, size_t out_len,
				 const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	FILE *p;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (out && out_len) {
		n = fread(out, 1, out_len - 1, p);
		out[n] = '\0';
	} else {
		char sink[256];

		while (fread(sink, 1, sizeof(sink), p) > 0)
			;
	}
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static u8 *qt_read_file(const char *path, u64 *size)
{
	struct stat st;
	FILE *f;
	u8 *buf;

	assert_int_equal(stat(path, &st), 0);
	*size = (u64)st.st_size;
	buf = malloc(*size ? *size : 1);
	assert_non_null(buf);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(buf, 1, *size, f), *size);
	fclose(f);
	return buf;
}

struct qt_qemu_case {
	const char *name;
	const char *create;	/* qemu-img create options, then size */
	const char *after;	/* further qemu-img commands on the image */
	u32 version;
	u32 cluster_bits;
	u32 refcount_order;
	u64 incompat;
	const char *backing;
	const char *backing_fmt;
	u32 nb_snapshots;
	u32 nb_bitmaps;
	bool data_file;
};

static const struct qt_qemu_case qt_qemu_cases[] = {
	{ .name = "qemu-img default", .create = "1G", .after = NULL,
	  .version = 3, .cluster_bits = 16, .refcount_order = 4 },
	{ .name = "qemu-img compat=0.10", .create = "-o compat=0.10 1G",
	  .after = NULL, .version = 2, .cluster_bits = 16,
	  .refcount_order = 4 },
	{ .name = "qemu-img 512-byte clusters",
	  .create = "-o cluster_size=512 100M", .after = NULL, .version = 3,
	  .cluster_bits = 9, .refcount_order = 4 },
	{ .name = "qemu-img 2M clusters 1-bit refcounts",
	  .create = "-o cluster_size=2M,refcount_bits=1 10G", .after = NULL,
	  .version = 3, .cluster_bits = 21, .refcount_order = 0 },
	{ .name = "qemu-img 64-bit refcounts lazy",
	  .create = "-o refcount_bits=64,lazy_refcounts=on 3G",
	  .after = NULL, .version = 3, .cluster_bits = 16,
	  .refcount_order = 6 },
	{ .name = "qemu-img extended L2",
	  .create = "-o extended_l2=on,cluster_size=128k 1G", .after = NULL,
	  .version = 3, .cluster_bits = 17, .refcount_order = 4,
	  .incompat = QIMG_INCOMPAT_EXTL2 },
	{ .name = "qemu-img zstd", .create = "-o compression_type=zstd 1G",
	  .after = NULL, .version = 3, .cluster_bits = 16,
	  .refcount_order = 4, .incompat = QIMG_INCOMPAT_COMPRESSION },
	{ .name = "qemu-img backing file",
	  .create = "-b base.qcow2 -F qcow2", .after = NULL, .version = 3,
	  .cluster_bits = 16, .refcount_order = 4, .incompat = 0,
	  .backing = "base.qcow2", .backing_fmt = "qcow2" },
	{ .name = "qemu-img v2 backing file, 4k clusters",
	  .create = "-o compat=0.10,cluster_size=4k -b base.qcow2 -F qcow2",
	  .after = NULL, .version = 2, .cluster_bits = 12,
	  .refcount_order = 4, .incompat = 0, .backing = "base.qcow2",
	  .backing_fmt = "qcow2" },
	{ .name = "qemu-img external data file",
	  .create = "-o data_file=IMG.raw 64M", .after = NULL, .version = 3,
	  .cluster_bits = 16, .refcount_order = 4,
	  .incompat = QIMG_INCOMPAT_DATA_FILE, .data_file = true },
	{ .name = "qemu-img empty", .create = "0", .after = NULL,
	  .version = 3, .cluster_bits = 16, .refcount_order = 4 },
	{ .name = "qemu-img metadata preallocation",
	  .create = "-o preallocation=metadata 64M", .after = NULL,
	  .version = 3, .cluster_bits = 16, .refcount_order = 4 },
	{ .name = "qemu-img snapshots and bitmaps", .create = "1G",
	  .after = "qemu-img snapshot -c first IMG && qemu-img snapshot -c second IMG && qemu-img bitmap --add IMG bm0 && qemu-img bitmap --add -g 1M IMG bm1",
	  .version = 3, .cluster_bits = 16, .refcount_order = 4,
	  .incompat = 0, .nb_snapshots = 2, .nb_bitmaps = 2 },
};

static void qt_qemu_image(void **state)
{
	const struct qt_qemu_case *c = *state;
	char path[128], create[512], after[1024], out[4096];
	struct qimg_header *h = calloc(1, sizeof(*h));
	struct qimg_err err = { "" };
	const char *s;
	size_t k;
	u64 size, i, off;
	u8 *buf;
	int ret;

	assert_non_null(h);
	snprintf(path, sizeof(path), "%s/t.qcow2", qt_dir);
	/* Substitute IMG with the image path. */
	for (s = c->create, k = 0; *s && k + 128 < sizeof(create); s++) {
		if (!strncmp(s, "IMG", 3)) {
			k += snprintf(create + k, sizeof(create) - k, "%s",
				      path);
			s += 2;
		} else {
			create[k++] = *s;
		}
	}
	create[k] = '\0';
	ret = qt_run(out, sizeof(out),
		     "cd %s && rm -f t.qcow2 && qemu-img create -q -f qcow2 t.qcow2 %s",
		     qt_dir, create);
	if (ret)
		fail_msg("qemu-img create %s: %s", create, out);
	if (c->after) {
		for (s = c->after, k = 0; *s && k + 128 < sizeof(after); s++) {
			if (!strncmp(s, "IMG", 3)) {
				k += snprintf(after + k, sizeof(after) - k,
					      "%s", path);
				s += 2;
			} else {
				after[k++] = *s;
			}
		}
		after[k] = '\0';
		ret = qt_run(out, sizeof(out), "%s", after);
		if (ret)
			fail_msg("%s: %s", after, out);
	}

	buf = qt_read_file(path, &size);
	ret = qimg_header_decode(buf, size < (2 << 20) ? size : (2 << 20),
				 size, h, &err);
	if (ret)
		fail_msg("decode: %d %s", ret, err.msg);
	assert_int_equal(h->version, c->version);
	assert_int_equal(h->cluster_bits, c->cluster_bits);
	assert_int_equal(h->refcount_order, c->refcount_order);
	assert_true((h->incompatible_features & ~QIMG_INCOMPAT_DIRTY) ==
		    c->incompat);
	assert_string_equal(h->backing_file, c->backing ? c->backing : "");
	assert_string_equal(h->backing_fmt,
			    c->backing_fmt ? c->backing_fmt : "");
	assert_int_equal(h->has_data_file, c->data_file);
	assert_int_equal(h->nb_snapshots, c->nb_snapshots);
	assert_int_equal(h->has_bitmaps_ext, c->nb_bitmaps != 0);
	assert_int_equal(h->nb_bitmaps, c->nb_bitmaps);
	assert_int_equal(h->nb_unknown_exts, 0);

	/* Walk the snapshot table and the bitmap directory. */
	for (i = 0, off = h->snapshots_offset; i < h->nb_snapshots; i++) {
		struct qimg_snapshot sn;

		ret = qimg_snapshot_decode(&h->geom, buf + off, size - off,
					   size, &sn, &err);
		if (ret)
			fail_msg("snapshot %llu: %d %s", i, ret, err.msg);
		assert_string_equal(sn.name, i ? "second" : "first");
		assert_true(sn.has_disk_size);
		assert_true(sn.disk_size == h->size);
		assert_int_equal(sn.l1_size, h->l1_size);
		off += sn.entry_len;
	}
	for (i = 0, off = h->bitmap_directory_offset; i < h->nb_bitmaps; i++) {
		struct qimg_bitmap *b = malloc(sizeof(*b));
		u64 j, dlen = h->bitmap_directory_offset +
			      h->bitmap_directory_size - off;

		assert_non_null(b);
		ret = qimg_bitmap_decode(&h->geom, buf + off, dlen, size, b,
					 &err);
		if (ret)
			fail_msg("bitmap %llu: %d %s", i, ret, err.msg);
		assert_string_equal(b->name, i ? "bm1" : "bm0");
		assert_int_equal(b->granularity_bits, i ? 20 : 16);
		for (j = 0; j < b->bitmap_table_size; j++) {
			u64 doff;
			bool ones;

			ret = qimg_bitmap_table_decode(&h->geom,
				get_unaligned_be64(buf + b->bitmap_table_offset
						   + j * 8),
				size, &doff, &ones, &err);
			if (ret)
				fail_msg("bitmap table: %s", err.msg);
		}
		off += b->entry_len;
		free(b);
	}
	assert_true(off == (h->nb_bitmaps ? h->bitmap_directory_offset +
			    h->bitmap_directory_size : 0));

	/* Every active L1 and reachable L2 entry decodes. */
	for (i = 0; i < h->l1_size; i++) {
		u64 l2, j;
		bool copied;

		ret = qimg_l1_decode(&h->geom,
				     get_unaligned_be64(buf +
							h->l1_table_offset +
							i * 8),
				     size, &l2, &copied, &err);
		if (ret)
			fail_msg("L1 %llu: %s", i, err.msg);
		for (j = 0; l2 && j < h->geom.l2_entries; j++) {
			const u8 *e = buf + l2 + (j << h->geom.l2_entry_shift);
			struct qimg_l2_entry l2e;

			ret = qimg_l2_decode(&h->geom, h->version,
					     get_unaligned_be64(e),
					     h->geom.ext_l2 ?
					     get_unaligned_be64(e + 8) : 0,
					     h->geom.data_file ? ~0ULL : size,
					     &l2e, &err);
			if (ret)
				fail_msg("L2 %llu/%llu: %s", i, j, err.msg);
		}
	}
	free(buf);
	free(h);
}

/* ---- images written by qimg, checked by QEMU ---- */

struct qt_own_case {
	const char *name;
	u32 version;
	u32 cluster_bits;
	u32 refcount_order;
	u64 size;
	bool backing;
	bool journal;
	u64 incompat;
	u64 autoclear;
	const char *expect_fail;	/* qemu-img info must fail saying it */
	/*
	 * QEMU does not know the journal, so its clusters look leaked to
	 * `qemu-img check` (exit 3); `check -r leaks` would free them, which
	 * is why "journal valid" is an autoclear bit.
	 */
	int check_rc;
	const char *check_msg;
};

static const struct qt_own_case qt_own_cases[] = {
	{ .name = "qimg-written v3 image passes qemu-img check",
	  .version = 3, .cluster_bits = 16, .refcount_order = 4,
	  .size = 1ULL << 30 },
	{ .name = "qimg-written v2 image passes qemu-img check",
	  .version = 2, .cluster_bits = 16, .refcount_order = 4,
	  .size = 1ULL << 30 },
	{ .name = "qimg-written 512-byte clusters, 1-bit refcounts",
	  .version = 3, .cluster_bits = 9, .refcount_order = 0,
	  .size = 1 << 20 },
	{ .name = "qimg-written 2M clusters, 64-bit refcounts", .version = 3,
	  .cluster_bits = 21, .refcount_order = 6, .size = 1ULL << 34 },
	{ .name = "qimg-written image with backing file", .version = 3,
	  .cluster_bits = 16, .refcount_order = 4, .size = 1ULL << 30,
	  .backing = true },
	{ .name = "qimg-written image with journal extension", .version = 3,
	  .cluster_bits = 16, .refcount_order = 4, .size = 1ULL << 30,
	  .backing = false, .journal = true, .incompat = 0,
	  .autoclear = QIMG_AUTOCLEAR_JOURNAL_VALID, .check_rc = 3,
	  .check_msg = "2 leaked clusters" },
	{ .name = "qemu names our journal dirty bit", .version = 3,
	  .cluster_bits = 16, .refcount_order = 4, .size = 1ULL << 30,
	  .backing = false, .journal = true,
	  .incompat = QIMG_INCOMPAT_JOURNAL_DIRTY,
	  .autoclear = QIMG_AUTOCLEAR_JOURNAL_VALID,
	  .expect_fail = "journal dirty" },
};

static void qt_own_image(void **state)
{
	const struct qt_own_case *c = *state;
	struct qimg_header *h = calloc(1, sizeof(*h));
	struct qimg_header *d = calloc(1, sizeof(*d));
	struct qimg_err err = { "" };
	u64 cs = 1ULL << c->cluster_bits, nclusters, i, fsize;
	char path[128], out[4096];
	u8 *img;
	FILE *f;
	int n, ret;

	assert_non_null(h);
	assert_non_null(d);
	/* header | refcount table | refcount block | L1 ... | journal */
	h->version = c->version;
	h->cluster_bits = c->cluster_bits;
	h->size = c->size;
	h->refcount_order = c->refcount_order;
	h->incompatible_features = c->incompat;
	h->autoclear_features = c->autoclear;
	assert_int_equal(qimg_geom_init(h, &err), 0);
	h->refcount_table_offset = cs;
	h->refcount_table_clusters = 1;
	h->l1_table_offset = 3 * cs;
	h->l1_size = h->geom.l1_size;
	nclusters = 3 + ((u64)h->l1_size * 8 + cs - 1) / cs;
	if (c->journal) {
		h->has_journal_ext = true;
		h->journal_offset = nclusters * cs;
		h->journal_size = 2 * cs;
		nclusters += 2;
	}
	if (c->backing) {
		snprintf(h->backing_file, sizeof(h->backing_file),
			 "%s/base.raw", qt_dir);
		strcpy(h->backing_fmt, "raw");
		assert_int_equal(qt_run(NULL, 0,
					"qemu-img create -q -f raw %s %llu",
					h->backing_file, c->size), 0);
	}
	assert_true(nclusters <= h->geom.rb_entries);
	fsize = nclusters * cs;
	img = calloc(1, fsize);
	assert_non_null(img);
	n = qimg_header_encode(h, img, cs);
	assert_true(n > 0);
	put_unaligned_be64(2 * cs, img + cs);
	for (i = 0; i < nclusters; i++)
		assert_int_equal(qimg_refcount_set(img + 2 * cs,
						   c->refcount_order, i, 1), 0);
	ret = qimg_header_decode(img, cs, fsize, d, &err);
	if (ret)
		fail_msg("own decode: %d %s", ret, err.msg);

	snprintf(path, sizeof(path), "%s/own.qcow2", qt_dir);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(img, 1, fsize, f), fsize);
	fclose(f);
	free(img);

	ret = qt_run(out, sizeof(out), "qemu-img info -f qcow2 %s", path);
	if (c->expect_fail) {
		if (!ret || !strstr(out, c->expect_fail))
			fail_msg("qemu-img info: %d, %s", ret, out);
		goto out;
	}
	if (ret)
		fail_msg("qemu-img info: %s", out);
	ret = qt_run(out, sizeof(out), "qemu-img check -f qcow2 %s", path);
	if (ret != c->check_rc ||
	    (c->check_msg && !strstr(out, c->check_msg)))
		fail_msg("qemu-img check: %d %s", ret, out);
out:
	free(h);
	free(d);
}

int qimg_test_run_qemu(void)
{
	int failed = 0;
	char cmd[128];

	if (!qt_have_qemu_img()) {
		printf("ok - qemu-img cross-checks # SKIP qemu-img not found\n");
		return 0;
	}
	snprintf(qt_dir, sizeof(qt_dir), "/tmp/qimg-unit.XXXXXX");
	if (!mkdtemp(qt_dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (qt_run(NULL, 0, "cd %s && qemu-img create -q -f qcow2 base.qcow2 1G",
		   qt_dir))
		failed++;
	failed += qimg_test_run_table("qemu-img created images",
				      qt_qemu_cases, ARRAY_SIZE(qt_qemu_cases),
				      sizeof(qt_qemu_cases[0]),
				      offsetof(struct qt_qemu_case, name),
				      qt_qemu_image);
	failed += qimg_test_run_table("qimg-written images",
				      qt_own_cases, ARRAY_SIZE(qt_own_cases),
				      sizeof(qt_own_cases[0]),
				      offsetof(struct qt_own_case, name),
				      qt_own_image);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", qt_dir);
	if (system(cmd))
		failed++;
	return failed;
}
