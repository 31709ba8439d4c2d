// SPDX-License-Identifier: GPL-2.0
/*
 * qimgctl attach / detach / list: talk to /dev/qimg-control.
 *
 * The kernel only returns an errno; the explanation a user needs comes
 * from here, using the image header we decode ourselves (dmesg has the
 * kernel's side of the story).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <json-c/json.h>
#include <linux/qimg.h>

#include "image_io.h"
#include "qimg_journal_fmt.h"

#define QIMGCTL_CONTROL "/dev/" QIMG_CONTROL_NAME

static int qimgctl_control_open(void)
{
	int fd = open(QIMGCTL_CONTROL, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;

		if (e == ENOENT)
			qimgctl_err("qimg module not loaded (%s does not exist; try 'modprobe qimg')",
				    QIMGCTL_CONTROL);
		else if (e == EACCES || e == EPERM)
			qimgctl_err("%s: permission denied (needs root)",
				    QIMGCTL_CONTROL);
		else
			qimgctl_err("%s: %s", QIMGCTL_CONTROL, strerror(e));
		return -e;
	}
	return fd;
}

/* ------------------------------------------------------------------------ */
/* attach                                                                    */

/* Would clearing the dirty bit (what a repair does) let us write? */
static bool qimgctl_repair_helps(const struct qimg_header *h)
{
	struct qimg_header clean = *h;

	clean.incompatible_features &= ~QIMG_INCOMPAT_DIRTY;
	return (h->incompatible_features & QIMG_INCOMPAT_DIRTY) &&
	       !qimg_unsupported_feature(&clean, true);
}

/* Name the reason the kernel refused, from what we know of the header. */
static void qimgctl_explain_attach(const struct qimgctl_image *img, int e,
				   bool ro, __u32 aflags)
{
	const struct qimg_header *h = &img->h;
	const char *what;

	switch (e) {
	case EOPNOTSUPP:
		/* The kernel's own policy, so the reason is the one it used. */
		what = qimg_unsupported_feature(h, !ro);
		if (!what && (aflags & QIMG_ATTACH_JOURNAL)) {
			qimgctl_err("%s: this qimg module cannot keep a metadata journal (%s); attach without --journal=on",
				    img->path, strerror(e));
		} else if (!what) {
			qimgctl_err("%s: unsupported feature (see dmesg)",
				    img->path);
		} else if (qimg_unsupported_feature(h, false)) {
			qimgctl_err("%s: unsupported feature: %s", img->path,
				    what);
		} else {
			/* Only writing is refused: say how to get going. */
			qimgctl_err("%s: unsupported feature: %s (attach with -r%s)",
				    img->path, what,
				    qimgctl_repair_helps(h) ?
				    ", or repair with 'qemu-img check -r all'" :
				    "");
		}
		return;
	case EUCLEAN:
		if (h->incompatible_features & QIMG_INCOMPAT_CORRUPT)
			qimgctl_err("%s: image is marked corrupt; repair it with 'qemu-img check -r all' or attach read-only (-r)",
				    img->path);
		else
			qimgctl_err("%s: image metadata is corrupt (see dmesg)",
				    img->path);
		return;
	case EBUSY:
		qimgctl_err("%s: image (or one of its backing files) is already attached%s",
			    img->path, ro ? " read-write" : "");
		return;
	case ENOSPC:
		if (aflags & QIMG_ATTACH_JOURNAL || img->h.has_journal_ext)
			qimgctl_err("%s: no free minor numbers, or no room for the metadata journal (see dmesg; a header with no space left in its first cluster: recreate the image with qimgctl create -o journal=on)",
				    img->path);
		else
			qimgctl_err("%s: no free minor numbers", img->path);
		return;
	case EINVAL:
		if (aflags & (QIMG_ATTACH_JOURNAL | QIMG_ATTACH_NO_JOURNAL)) {
			qimgctl_err("%s: the qimg module refused the journal options (%s; see dmesg)",
				    img->path, strerror(e));
			return;
		}
		qimgctl_err("%s: attach failed: %s (see dmesg)", img->path,
			    strerror(e));
		return;
	default:
		qimgctl_err("%s: attach failed: %s (see dmesg)", img->path,
			    strerror(e));
	}
}

static int qimgctl_parse_cache(const char *opt, const char *arg, __u64 *out)
{
	uint64_t v;

	if (qimgctl_parse_size(arg, &v)) {
		qimgctl_err("%s: invalid size '%s'", opt, arg);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int qimgctl_cmd_attach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "read-only", no_argument, NULL, 'r' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "partscan", no_argument, NULL, 'P' },
		{ "autoclear", no_argument, NULL, 'a' },
		{ "direct-io", required_argument, NULL, 'D' },
		{ "l2-cache-size", required_argument, NULL, 'L' },
		{ "refcount-cache-size", required_argument, NULL, 'R' },
		{ "journal", required_argument, NULL, 'J' },
		{ "journal-size", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qimg_attach a = { .size = sizeof(a) };
	struct qimg_backing_fd fds[QIMG_MAX_BACKING];
	struct qimgctl_node *top, *n;
	unsigned int flags = QIMGCTL_CHAIN_HEADERS;
	bool ro = false, share = false, has_jsize = false;
	int c, ctl, ret;

	a.flags = QIMG_ATTACH_DIRECT_IO;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":rUPah", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			ro = true;
			break;
		case 'U':
			share = true;
			break;
		case 'P':
			a.flags |= QIMG_ATTACH_PARTSCAN;
			break;
		case 'a':
			a.flags |= QIMG_ATTACH_AUTOCLEAR;
			break;
		case 'D':
			if (!strcmp(optarg, "on")) {
				a.flags |= QIMG_ATTACH_DIRECT_IO;
			} else if (!strcmp(optarg, "off")) {
				a.flags &= ~QIMG_ATTACH_DIRECT_IO;
			} else {
				qimgctl_usage_err("attach", "--direct-io takes on or off, not '%s'",
						  optarg);
				return 1;
			}
			break;
		case 'L':
			if (qimgctl_parse_cache("--l2-cache-size", optarg,
						&a.l2_cache_size))
				return 1;
			break;
		case 'R':
			if (qimgctl_parse_cache("--refcount-cache-size", optarg,
						&a.refcount_cache_size))
				return 1;
			break;
		case 'J':
			a.flags &= ~(QIMG_ATTACH_JOURNAL |
				     QIMG_ATTACH_NO_JOURNAL);
			if (!strcmp(optarg, "on")) {
				a.flags |= QIMG_ATTACH_JOURNAL;
			} else if (!strcmp(optarg, "off")) {
				a.flags |= QIMG_ATTACH_NO_JOURNAL;
			} else {
				qimgctl_usage_err("attach", "--journal takes on or off, not '%s'",
						  optarg);
				return 1;
			}
			break;
		case 'S':
			if (qimgctl_parse_cache("--journal-size", optarg,
						&a.journal_size))
				return 1;
			has_jsize = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "attach");
			return 0;
		default:
			qimgctl_opt_err("attach", c, argv);
			return 1;
		}
	}
	if (qimgctl_one_file("attach", argc, argv))
		return 1;
	if (share && !ro) {
		qimgctl_err("%s: --force-share (-U) can only be used with read-only attach (-r)",
			    argv[optind]);
		return 1;
	}
	if (has_jsize && !(a.flags & QIMG_ATTACH_JOURNAL)) {
		qimgctl_err("%s: --journal-size needs --journal=on",
			    argv[optind]);
		return 1;
	}
	if (ro)
		a.flags |= QIMG_ATTACH_READ_ONLY;
	else
		flags |= QIMGCTL_OPEN_WRITE;
	if (share)
		flags |= QIMGCTL_OPEN_SHARE;
	/* The kernel replays a dirty journal at attach. */
	flags |= QIMGCTL_OPEN_JOURNAL_OK;

	/*
	 * The image and its backing files are locked the way QEMU locks
	 * them, on the very fds the kernel takes: the locks belong to the
	 * open file descriptions, so they stay while the image is attached
	 * and a QEMU started on it meanwhile refuses what would conflict.
	 */
	ret = qimgctl_chain_open(&top, argv[optind], NULL, flags);
	if (ret)
		return 1;
	/*
	 * Lazy refcounts left dirty (QEMU stopped without writing them):
	 * rebuilt first, as QEMU does when it opens such an image for
	 * writing.  The repair takes the write lock itself, so the chain is
	 * closed meanwhile and opened again.
	 */
	if (!ro && qimgctl_repair_helps(&top->img.h) &&
	    !(top->img.h.incompatible_features & QIMG_INCOMPAT_JOURNAL_DIRTY)) {
		char *path = strdup(top->path);

		qimgctl_chain_close(top);
		top = NULL;
		if (!path) {
			qimgctl_err("%s: out of memory", argv[optind]);
			return 1;
		}
		ret = qimgctl_repair_dirty(path);
		free(path);
		if (ret)
			return 1;
		ret = qimgctl_chain_open(&top, argv[optind], NULL, flags);
		if (ret)
			return 1;
	}
	if (has_jsize) {
		struct qimg_err err = { "" };

		if (qimg_jrnl_size_check(a.journal_size,
					 top->img.h.cluster_bits, &err)) {
			qimgctl_err("%s: invalid --journal-size: %s", top->path,
				    err.msg);
			ret = 1;
			goto out;
		}
	}
	a.nr_backing = 0;
	for (n = top->backing; n; n = n->backing) {
		if (a.nr_backing == QIMG_MAX_BACKING) {
			qimgctl_err("%s: backing chain longer than %d images",
				    top->path, QIMG_MAX_BACKING);
			ret = 1;
			goto out;
		}
		fds[a.nr_backing].fd = qimgctl_node_fd(n);
		fds[a.nr_backing].format = n->raw ? QIMG_FMT_RAW :
						    QIMG_FMT_QCOW2;
		a.nr_backing++;
	}
	ctl = qimgctl_control_open();
	if (ctl < 0) {
		ret = 1;
		goto out;
	}
	a.fd = top->img.fd;
	a.backing = (uintptr_t)fds;
	if (ioctl(ctl, QIMG_CTL_ATTACH, &a) < 0) {
		qimgctl_explain_attach(&top->img, errno, ro, a.flags);
		ret = 1;
	} else {
		printf("/dev/qimg%u\n", a.index);
		ret = 0;
	}
	close(ctl);
out:
	qimgctl_chain_close(top);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* detach / list                                                             */

static int qimgctl_info(int ctl, uint32_t index, uint32_t query,
			struct qimg_info *info)
{
	memset(info, 0, sizeof(*info));
	info->size = sizeof(*info);
	info->index = index;
	info->query = query;
	if (ioctl(ctl, QIMG_CTL_GET_INFO, info) < 0)
		return -errno;
	return 0;
}

static int qimgctl_detach_index(int ctl, uint32_t index)
{
	struct qimg_detach d = { .size = sizeof(d), .index = index };

	if (ioctl(ctl, QIMG_CTL_DETACH, &d) < 0) {
		int e = errno;

		if (e == EBUSY)
			qimgctl_err("/dev/qimg%u is in use (mounted or open)",
				    index);
		else if (e == ENXIO)
			qimgctl_err("/dev/qimg%u is not attached", index);
		else if (e == EIO)
			qimgctl_err("/dev/qimg%u detached, but its final write-back failed (%s): recent writes may be lost; check the image",
				    index, strerror(e));
		else
			qimgctl_err("/dev/qimg%u: detach failed: %s", index,
				    strerror(e));
		return -e;
	}
	return 0;
}

static uint32_t qimgctl_encode_dev(dev_t d)
{
	uint32_t ma = major(d), mi = minor(d);

	return (mi & 0xff) | (ma << 8) | ((mi & ~0xffU) << 12);
}

/* "/dev/qimgN", "qimgN" or "N": the index; -1 if @s is none of those. */
static long qimgctl_dev_index(const char *s)
{
	char *end;
	long v;

	if (!strncmp(s, "/dev/", 5))
		s += 5;
	if (!strncmp(s, "qimg", 4))
		s += 4;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v > INT_MAX)
		return -1;
	return v;
}

int qimgctl_cmd_detach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "all", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct qimg_info info;
	struct stat st;
	uint32_t idx = 0;
	int c, ctl, ret = 0, found = 0;
	bool all = false;
	const char *what;
	long index;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":ah", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			all = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "detach");
			return 0;
		default:
			qimgctl_opt_err("detach", c, argv);
			return 1;
		}
	}
	if (all && optind < argc) {
		qimgctl_usage_err("detach", "-a takes no DEVICE or FILE");
		return 1;
	}
	if (!all && optind >= argc) {
		qimgctl_usage_err("detach", "no DEVICE or FILE given");
		return 1;
	}
	if (!all && qimgctl_one_file("detach", argc, argv))
		return 1;
	what = all ? NULL : argv[optind];
	ctl = qimgctl_control_open();
	if (ctl < 0)
		return 1;
	if (all) {
		while (!qimgctl_info(ctl, idx, QIMG_QUERY_NEXT, &info)) {
			if (qimgctl_detach_index(ctl, info.index))
				ret = 1;
			idx = info.index + 1;
		}
		goto out;
	}
	/* A path to an existing regular file is an image, else a device. */
	if (stat(what, &st) == 0 && S_ISREG(st.st_mode)) {
		uint32_t enc = qimgctl_encode_dev(st.st_dev);

		while (!qimgctl_info(ctl, idx, QIMG_QUERY_NEXT, &info)) {
			if (info.ino == st.st_ino && info.dev == enc) {
				found = 1;
				if (qimgctl_detach_index(ctl, info.index))
					ret = 1;
			}
			idx = info.index + 1;
		}
		if (!found) {
			qimgctl_err("%s is not attached", what);
			ret = 1;
		}
		goto out;
	}
	index = qimgctl_dev_index(what);
	if (index < 0) {
		qimgctl_err("%s: neither a qimg device nor an image file",
			    what);
		ret = 1;
		goto out;
	}
	if (qimgctl_detach_index(ctl, (uint32_t)index))
		ret = 1;
out:
	close(ctl);
	return ret;
}

int qimgctl_cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct json_object *arr = NULL;
	struct qimg_info info;
	bool json = false, header = false;
	uint32_t idx = 0;
	int c, ctl, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			qimgctl_usage(stdout, "list");
			return 0;
		default:
			qimgctl_opt_err("list", c, argv);
			return 1;
		}
	}
	if (optind < argc) {
		qimgctl_usage_err("list", "unexpected argument '%s'",
				  argv[optind]);
		return 1;
	}
	if (json) {
		arr = json_object_new_array();
		if (!arr) {
			qimgctl_err("out of memory");
			return 1;
		}
	}
	/*
	 * No module, no devices: an empty list, as losetup -l says when no
	 * loop device is set up.
	 */
	if (access(QIMGCTL_CONTROL, F_OK) < 0 && errno == ENOENT) {
		ret = -ENXIO;
		goto done;
	}
	ctl = qimgctl_control_open();
	if (ctl < 0) {
		json_object_put(arr);
		return 1;
	}
	while (!(ret = qimgctl_info(ctl, idx, QIMG_QUERY_NEXT, &info))) {
		char devname[32];

		if (!json && !header) {
			printf("%-12s %-40s %14s %-3s %s\n", "DEVICE", "FILE",
			       "SIZE", "RO", "BACKING");
			header = true;
		}

		snprintf(devname, sizeof(devname), "/dev/qimg%u", info.index);
		if (json) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "device",
					       json_object_new_string(devname));
			json_object_object_add(o, "file",
					       json_object_new_string(info.path));
			json_object_object_add(o, "size",
				json_object_new_int64((int64_t)info.virtual_size));
			json_object_object_add(o, "cluster-size",
				json_object_new_int64((int64_t)info.cluster_size));
			json_object_object_add(o, "ro",
				json_object_new_boolean(info.flags &
							QIMG_INFO_READ_ONLY));
			json_object_object_add(o, "direct-io",
				json_object_new_boolean(info.flags &
							QIMG_INFO_DIRECT_IO));
			json_object_object_add(o, "corrupt",
				json_object_new_boolean(info.flags &
							QIMG_INFO_CORRUPT));
			json_object_object_add(o, "journal",
				json_object_new_boolean(info.flags &
							QIMG_INFO_JOURNAL));
			json_object_object_add(o, "backing",
				info.backing_path[0] ?
				json_object_new_string(info.backing_path) :
				NULL);
			json_object_object_add(o, "backing-depth",
				json_object_new_int((int)info.nr_backing));
			json_object_object_add(o, "l2-cache-hits",
				json_object_new_int64((int64_t)info.l2_hits));
			json_object_object_add(o, "l2-cache-misses",
				json_object_new_int64((int64_t)info.l2_misses));
			json_object_array_add(arr, o);
		} else {
			printf("%-12s %-40s %14" PRIu64 " %-3s %s\n", devname,
			       info.path, (uint64_t)info.virtual_size,
			       info.flags & QIMG_INFO_READ_ONLY ? "1" : "0",
			       info.backing_path[0] ? info.backing_path : "-");
		}
		idx = info.index + 1;
	}
	close(ctl);
done:
	if (ret != -ENXIO) {
		qimgctl_err("list: %s", strerror(-ret));
		json_object_put(arr);
		return 1;
	}
	if (json && !json_object_array_length(arr)) {
		printf("[]\n");
		json_object_put(arr);
	} else if (json) {
		printf("%s\n", json_object_to_json_string_ext(arr,
			JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(arr);
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* resize of an attached device                                              */

/*
 * Is @what an attached device or the image of one?  A path to a regular
 * file is looked up among the attached images (not attached, or no module
 * loaded: 0, the offline resize applies); anything else must name a qimg
 * device.  Return: 1 with *@index and *@cur (its size) set, 0, or -errno
 * after a message.
 */
int qimgctl_attached(const char *what, uint32_t *index, uint64_t *cur,
		     bool *read_only)
{
	struct qimg_info info;
	struct stat st;
	uint32_t idx = 0, enc;
	bool reg;
	long v;
	int ctl, ret;

	reg = stat(what, &st) == 0 && S_ISREG(st.st_mode);
	if (reg) {
		ctl = open(QIMGCTL_CONTROL, O_RDWR | O_CLOEXEC);
		if (ctl < 0)
			return 0;
		enc = qimgctl_encode_dev(st.st_dev);
		ret = 0;
		while (!qimgctl_info(ctl, idx, QIMG_QUERY_NEXT, &info)) {
			if (info.ino == st.st_ino && info.dev == enc) {
				ret = 1;
				break;
			}
			idx = info.index + 1;
		}
		close(ctl);
		if (!ret)
			return 0;
	} else {
		v = qimgctl_dev_index(what);
		if (v < 0) {
			qimgctl_err("%s: neither a qimg device nor an image file",
				    what);
			return -EINVAL;
		}
		ctl = qimgctl_control_open();
		if (ctl < 0)
			return ctl;
		ret = qimgctl_info(ctl, (uint32_t)v, QIMG_QUERY_EXACT, &info);
		close(ctl);
		if (ret) {
			qimgctl_err("/dev/qimg%ld is not attached", v);
			return ret;
		}
	}
	*index = info.index;
	*cur = info.virtual_size;
	*read_only = info.flags & QIMG_INFO_READ_ONLY;
	return 1;
}

/* Grow attached device @index to @size bytes. */
int qimgctl_resize_index(uint32_t index, uint64_t size)
{
	struct qimg_resize r = { .size = sizeof(r), .index = index,
				 .new_size = size };
	int ctl, e;

	ctl = qimgctl_control_open();
	if (ctl < 0)
		return ctl;
	if (ioctl(ctl, QIMG_CTL_RESIZE, &r) == 0) {
		close(ctl);
		return 0;
	}
	e = errno;
	close(ctl);
	switch (e) {
	case ENOTTY:
		qimgctl_err("/dev/qimg%u: the loaded qimg module cannot resize attached devices (too old)",
			    index);
		break;
	case EBUSY:
		qimgctl_err("/dev/qimg%u: busy (being attached, detached or resized)",
			    index);
		break;
	case ENXIO:
		qimgctl_err("/dev/qimg%u is not attached", index);
		break;
	case EROFS:
		qimgctl_err("/dev/qimg%u is read-only (attached read-only, or turned read-only after an error: see dmesg)",
			    index);
		break;
	case EOPNOTSUPP:
		qimgctl_err("/dev/qimg%u: this image cannot grow while attached (see dmesg); detach it and resize the file",
			    index);
		break;
	case EFBIG:
		qimgctl_err("/dev/qimg%u: the new size is past the qcow2 format's limits",
			    index);
		break;
	default:
		qimgctl_err("/dev/qimg%u: resize failed: %s (see dmesg)", index,
			    strerror(e));
	}
	return -e;
}
