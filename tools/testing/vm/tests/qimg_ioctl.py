#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Issue qimg control ioctls directly, with what qimgctl never sends.

The e2e suite uses it to test the ioctl interface itself: descriptors
opened with unusual flags, struct sizes of older and newer qimgctl
versions, argument memory the kernel cannot write back to.

  qimg_ioctl.py attach IMG [--open append,direct] [--size N] [--tail HEX]
                           [--cmd-size N] [--ro-arg] [--ro]
                           [--journal on|off|both] [--journal-size N]
      prints the device number; exit status 1 with "errno NAME" on failure
  qimg_ioctl.py detach N [--size N] [--tail HEX]
  qimg_ioctl.py info N [--size N]       prints "index path" of device N
"""
import argparse
import ctypes
import errno
import fcntl
import mmap
import os
import struct
import sys

CTL = "/dev/qimg-control"
MAGIC = 0xD5
# struct qimg_attach, 80 bytes: size, flags, fd, nr_backing, backing,
# l2_cache_size, refcount_cache_size, index, __pad, journal_size,
# __reserved[3]
ATTACH_FMT = "<IIiIQQQIIQ3Q"
DETACH_FMT = "<IIII2Q"          # struct qimg_detach, 32 bytes
INFO_SIZE = 2176                # struct qimg_info
ATTACH_DIRECT_IO = 1 << 3
ATTACH_READ_ONLY = 1 << 0
ATTACH_JOURNAL = 1 << 4
ATTACH_NO_JOURNAL = 1 << 5


def ioc(direction, nr, size):
    """_IOC() of asm-generic/ioctl.h."""
    return (direction << 30) | (size << 16) | (MAGIC << 8) | nr


def do_ioctl(cmd, buf, ro_arg=False):
    """ioctl with @buf; with @ro_arg, from a read-only mapping."""
    ctl = os.open(CTL, os.O_RDWR)
    try:
        if not ro_arg:
            fcntl.ioctl(ctl, cmd, buf, True)
            return buf
        m = mmap.mmap(-1, mmap.PAGESIZE)
        m.write(bytes(buf))
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect(ctypes.c_void_p(addr), mmap.PAGESIZE, 1)  # PROT_READ
        ret = libc.ioctl(ctl, ctypes.c_ulong(cmd), ctypes.c_void_p(addr))
        if ret < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return buf
    finally:
        os.close(ctl)


def padded(packed, size, tail):
    """A struct as a caller of another version would send it."""
    b = bytearray(packed)
    struct.pack_into("<I", b, 0, size)
    if size > len(b):
        b += bytes.fromhex(tail) if tail else b""
        b += bytes(size - len(b))
    return b[:max(size, 4)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["attach", "detach", "info"])
    p.add_argument("arg")
    p.add_argument("--open", default="")
    p.add_argument("--size", type=int)
    p.add_argument("--tail", default="")
    p.add_argument("--cmd-size", type=int)
    p.add_argument("--ro-arg", action="store_true")
    p.add_argument("--ro", action="store_true")
    p.add_argument("--journal", choices=["on", "off", "both"])
    p.add_argument("--journal-size", type=int, default=0)
    a = p.parse_args()
    try:
        if a.op == "attach":
            flags = os.O_RDONLY if a.ro else os.O_RDWR
            for f in filter(None, a.open.split(",")):
                flags |= {"append": os.O_APPEND, "direct": os.O_DIRECT,
                          "dsync": os.O_DSYNC}[f]
            fd = os.open(a.arg, flags)
            aflags = ATTACH_DIRECT_IO | (ATTACH_READ_ONLY if a.ro else 0)
            aflags |= {None: 0, "on": ATTACH_JOURNAL,
                       "off": ATTACH_NO_JOURNAL,
                       "both": ATTACH_JOURNAL | ATTACH_NO_JOURNAL}[a.journal]
            size = a.size if a.size is not None else 80
            buf = padded(struct.pack(ATTACH_FMT, 80, aflags, fd, 0, 0, 0, 0,
                                     0, 0, a.journal_size, 0, 0, 0),
                         size, a.tail)
            cmd = ioc(3, 0, a.cmd_size if a.cmd_size is not None else 80)
            do_ioctl(cmd, buf, a.ro_arg)
            print(struct.unpack_from("<I", buf, 40)[0])
        elif a.op == "detach":
            size = a.size if a.size is not None else 32
            buf = padded(struct.pack(DETACH_FMT, 32, int(a.arg), 0, 0, 0, 0),
                         size, a.tail)
            do_ioctl(ioc(1, 1, 32), buf)
        else:
            size = a.size if a.size is not None else INFO_SIZE
            buf = bytearray(max(size, 16))
            struct.pack_into("<IIII", buf, 0, size, 0, int(a.arg), 0)
            do_ioctl(ioc(3, 2, INFO_SIZE), buf)
            got = struct.unpack_from("<I", buf, 0)[0]
            path = bytes(buf[128:128 + 1024]).split(b"\0")[0].decode()
            print(struct.unpack_from("<I", buf, 8)[0], path, got)
    except OSError as e:
        print("errno %s" % errno.errorcode.get(e.errno, e.errno))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
