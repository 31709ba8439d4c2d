#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Attach one hostile image in the kernel and use it; say what went wrong.

usage: exercise.py IMG [--rw-only]
       exercise.py --batch DIR NAME... [--rw-only]
           (write each case of mkhostile.py to DIR and exercise it)

The image is attached through the control ioctl directly (qimgctl checks
headers in user space first, and the point is what the kernel does with
them), read-only and then read-write.  Either attach may be refused: it
must then fail with a kernel message.  An attached device is read (the
first 4 MiB and the last 256 KiB, O_DIRECT, EIO allowed), and, read-write,
written with marked sectors (each 512-byte sector starts with "QHOSTILE"
and its guest offset) over the first clusters (where hostile L2 entries
point), a 64 KiB span, the second L2 table's range and the last cluster,
then flushed, read back and detached.  Failures (prints "FAILED: ..."
and exits 1):

  - a read-only attach changed a byte of the file;
  - a marked sector in the file at a place the image itself names as
    metadata (header cluster, L1 table, refcount table, every cluster the
    L1 and refcount tables name, snapshot table and snapshots' L1 tables,
    bitmap directory): a data write landed on metadata;
  - an I/O error, or a refused attach, without any qimg kernel message;
    more than 100 qimg kernel messages for one image (not ratelimited);
  - an errno other than EIO/EUCLEAN/EROFS/... from I/O, detach failing to
    remove the device, a device left behind.

Kernel reports (KASAN, oops, lockdep, hung tasks) are caught by the
caller from the kernel log; hangs by the caller's time limit.
"""
import errno
import fcntl
import mmap
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'tests'))
import qimg_ioctl as q  # noqa: E402

MARK = b'QHOSTILE'
BLKGETSIZE64 = 0x80081272
# EPERM: a write to a device that went read-only (the image turned out
# corrupt) fails in the block layer.
IO_OK = {errno.EIO, errno.EUCLEAN, errno.EROFS, errno.EPERM, errno.ENOSPC,
         errno.EFBIG, errno.ENOMEM, errno.EOVERFLOW}
ATTACH_OK = IO_OK | {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOENT,
                     errno.ENXIO, errno.ENOEXEC, errno.E2BIG, errno.EBUSY,
                     errno.ERANGE}
MAX_MSGS = 100

failed = []


def fail(msg):
    failed.append(msg)
    print('FAILED: %s' % msg)


class Kmsg:
    """Kernel messages since the last mark (non-blocking /dev/kmsg)."""

    def __init__(self):
        self.fd = os.open('/dev/kmsg', os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.seen = []

    def new(self):
        out = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.EPIPE:   # overwritten: go on
                    continue
                raise
            line = rec.decode('utf-8', 'replace').split(';', 1)[-1]
            out.append(line.split('\n', 1)[0])
            self.seen.append(out[-1])


def be(b, off, n):
    if off + n > len(b):
        return 0
    return int.from_bytes(b[off:off + n], 'big')


def meta_ranges(b):
    """Every range the image's own header and tables call metadata."""
    size = len(b)
    cb = be(b, 20, 4)
    if not 9 <= cb <= 21:
        cb = 12
    cs = 1 << cb
    mask = 0x00fffffffffffe00
    out = [(0, cs, 'header')]

    # Whole clusters: the rest of a table's last cluster is its too.
    def add(off, ln, what):
        if off < size and ln > 0:
            end = min(size, (off + ln + cs - 1) & ~(cs - 1))
            off &= ~(cs - 1)
            out.append((off, end - off, what))

    l1_size, l1_off = be(b, 36, 4), be(b, 40, 8)
    rt_off, rt_cl = be(b, 48, 8), be(b, 56, 4)
    nb_snap, snap_off = be(b, 60, 4), be(b, 64, 8)
    add(l1_off, min(l1_size, 1 << 17) * 8, 'L1 table')
    add(rt_off, min(rt_cl, 256) * cs, 'refcount table')
    for i in range(min(l1_size, 1 << 14)):
        e = be(b, l1_off + 8 * i, 8) & mask
        if e:
            add(e, cs, 'L2 table (L1 entry %d)' % i)
    for i in range(min(rt_cl * cs // 8, 1 << 14)):
        e = be(b, rt_off + 8 * i, 8) & mask
        if e:
            add(e, cs, 'refcount block (entry %d)' % i)
    pos = snap_off
    for i in range(min(nb_snap, 64)):
        if pos + 40 > size:
            break
        sl1, sl1n = be(b, pos, 8), be(b, pos + 8, 4)
        idl, nml = be(b, pos + 12, 2), be(b, pos + 14, 2)
        extra = be(b, pos + 36, 4)
        add(sl1, min(sl1n, 1 << 17) * 8, 'snapshot %d L1 table' % i)
        ln = 40 + min(extra, 1 << 16) + idl + nml
        add(pos, ln, 'snapshot table entry %d' % i)
        pos += (ln + 7) & ~7
    if be(b, 4, 4) >= 3:
        off, end = be(b, 100, 4), min(cs, size)
        for _ in range(64):
            if off < 104 or off + 8 > end:
                break
            typ, ln = be(b, off, 4), be(b, off + 4, 4)
            if typ == 0:
                break
            if typ == 0x23852875 and ln >= 24:
                add(be(b, off + 24, 8), min(be(b, off + 16, 8), 1 << 20),
                    'bitmap directory')
            off += 8 + ((ln + 7) & ~7)
    return out


def find_marks(b, ranges):
    hits = []
    for off, ln, what in ranges:
        at = b.find(MARK, off, off + ln)
        if at >= 0:
            guest = be(b, at + 8, 8)
            hits.append('%s at 0x%x: guest data (guest offset 0x%x) at '
                        'host 0x%x' % (what, off, guest, at))
    return hits


def attach(img, ro):
    flags = os.O_RDONLY if ro else os.O_RDWR
    fd = os.open(img, flags)
    try:
        aflags = q.ATTACH_DIRECT_IO | (q.ATTACH_READ_ONLY if ro else 0)
        buf = bytearray(struct.pack(q.ATTACH_FMT, 80, aflags, fd, 0, 0, 0, 0,
                                    0, 0, 0, 0, 0, 0))
        q.do_ioctl(q.ioc(3, 0, 80), buf)
        return struct.unpack_from('<I', buf, 40)[0]
    finally:
        os.close(fd)


def detach(idx):
    buf = bytearray(struct.pack(q.DETACH_FMT, 32, idx, 0, 0, 0, 0))
    q.do_ioctl(q.ioc(1, 1, 32), buf)


def open_dev(idx, flags):
    dev = '/dev/qimg%d' % idx
    for _ in range(100):
        try:
            return os.open(dev, flags | os.O_DIRECT)
        except FileNotFoundError:
            time.sleep(0.05)
    raise OSError(errno.ENOENT, '%s did not appear' % dev)


class Io:
    def __init__(self, what):
        self.what = what
        self.errs = {}
        self.ok = 0

    def note(self, e, op, off):
        name = errno.errorcode.get(e.errno, str(e.errno))
        if e.errno not in IO_OK:
            fail('%s: %s at %d: unexpected %s' % (self.what, op, off, name))
        self.errs[name] = self.errs.get(name, 0) + 1

    def summary(self):
        return '%d ok, errors %s' % (self.ok, self.errs or 'none')


def read_dev(fd, io, size):
    buf = mmap.mmap(-1, 65536)
    spans = [(0, min(size, 4 << 20))]
    if size > 4 << 20:
        tail = max(4 << 20, size - (256 << 10)) & ~65535
        spans.append((tail, size))
    for a, z in spans:
        off = a
        while off < z:
            n = min(65536, z - off)
            if n < 65536 and n & 511:
                break
            try:
                got = os.preadv(fd, [memoryview(buf)[:n]], off)
                io.ok += 1
                if got == 0:
                    break
            except OSError as e:
                io.note(e, 'read', off)
            off += n


def marked(guest_off, n):
    b = bytearray(n)
    for s in range(0, n, 512):
        b[s:s + 512] = (MARK + struct.pack('>Q', guest_off + s) +
                        bytes([0x5a]) * 496)
    return b


def write_dev(fd, io, size, cs):
    targets = [(i * 4096, 4096) for i in range(16)]
    targets += [(128 << 10, 64 << 10), (2 << 20, 4096),
                ((2 << 20) + 4096, 4096), (1 << 20, cs)]
    if size >= 8192:
        targets.append(((size - 4096) & ~4095, 4096))
    buf = mmap.mmap(-1, 65536)
    for off, n in targets:
        if off + n > size:
            continue
        buf[:n] = marked(off, n)
        try:
            os.pwritev(fd, [memoryview(buf)[:n]], off)
            io.ok += 1
        except OSError as e:
            io.note(e, 'write', off)
    try:
        os.fsync(fd)
    except OSError as e:
        io.note(e, 'fsync', 0)


def gone(idx):
    for _ in range(100):
        if not os.path.exists('/sys/block/qimg%d' % idx):
            return True
        time.sleep(0.05)
    return False


def one_pass(img, ro, km):
    what = 'ro' if ro else 'rw'
    km.new()
    try:
        idx = attach(img, ro)
    except OSError as e:
        msgs = [m for m in km.new() if 'qimg' in m]
        name = errno.errorcode.get(e.errno, str(e.errno))
        print('%s: attach refused (%s): %s' % (what, name,
              msgs[-1] if msgs else '(no message)'))
        if e.errno not in ATTACH_OK:
            fail('%s attach refused with %s' % (what, name))
        if not msgs:
            fail('%s attach refused (%s) without a kernel message'
                 % (what, name))
        return False
    io = Io(what)
    size = 0
    try:
        fd = open_dev(idx, os.O_RDONLY if ro else os.O_RDWR)
        try:
            size = struct.unpack('<Q', fcntl.ioctl(fd, BLKGETSIZE64,
                                                   bytes(8)))[0]
            read_dev(fd, io, size)
            if not ro:
                cb = be(open(img, 'rb').read(24), 20, 4)
                write_dev(fd, io, size, 1 << cb if 9 <= cb <= 21 else 4096)
                read_dev(fd, io, min(size, 256 << 10))
        finally:
            os.close(fd)
    except OSError as e:
        fail('%s: cannot use /dev/qimg%d: %s' % (what, idx, e))
    try:
        detach(idx)
    except OSError as e:
        # A failed final write-back is reported, and the device goes.
        print('%s: detach said %s' % (what, e))
    if not gone(idx):
        fail('%s: /dev/qimg%d still there after detach' % (what, idx))
        try:
            detach(idx)
        except OSError:
            pass
    msgs = [m for m in km.new() if 'qimg' in m]
    print('%s: attached, %d bytes, %s; %d kernel messages%s'
          % (what, size, io.summary(), len(msgs),
             (': ' + msgs[0]) if msgs else ''))
    if io.errs and not msgs:
        fail('%s: I/O errors without a kernel message' % what)
    if len(msgs) > MAX_MSGS:
        fail('%s: %d kernel messages for one image (not ratelimited)'
             % (what, len(msgs)))
    return True


def exercise(img, km, rw_only):
    """One image; the failures are in the global list."""
    with open(img, 'rb') as f:
        orig = f.read(16 << 20)
    out = []
    if not rw_only:
        out.append(one_pass(img, True, km))
        with open(img, 'rb') as f:
            now = f.read(16 << 20)
        if now != orig:
            n = next(i for i in range(min(len(now), len(orig)) + 1)
                     if i >= min(len(now), len(orig)) or now[i] != orig[i])
            fail('a read-only attach changed the file (first at byte %d, '
                 'size %d -> %d)' % (n, len(orig), len(now)))
            orig = now
    rw = one_pass(img, False, km)
    out.append(rw)
    if rw:
        with open(img, 'rb') as f:
            now = f.read(16 << 20)
        for h in find_marks(now, meta_ranges(orig)):
            fail('data write landed on metadata: ' + h)
    return out


def batch(outdir, names, rw_only):
    """Every image in one process: generate, exercise, report.

    Prints, flushed as it goes, for each image: its details indented,
    then "PASS NAME: attached|refused ..." or "FAIL NAME: why".  A kernel
    report (QIMG_HOSTILE_KBAD, an ERE) logged meanwhile fails the image.
    """
    import re
    import mkhostile
    bad = os.environ.get('QIMG_HOSTILE_KBAD')
    bad = re.compile(bad) if bad else None
    cases = {n: fn for n, _, fn in mkhostile.CASES}
    km = Kmsg()
    status = 0
    for name in names:
        del failed[:]
        t0 = time.time()
        img = os.path.join(outdir, name + '.qcow2')
        print('START %s' % name, flush=True)
        cases[name]().write(img)
        km.new()
        km.seen = []
        try:
            res = exercise(img, km, rw_only)
        except Exception as e:     # the harness's own bug: say so
            fail('exercise.py: %r' % e)
            res = []
        km.new()
        for line in km.seen:
            if bad and bad.search(line):
                fail('kernel log: %s' % line)
                break
        how = ', '.join('%s %s' % (w, 'attached' if r else 'refused')
                        for w, r in zip(['ro', 'rw'][-len(res):], res))
        if failed:
            status = 1
            for line in km.seen[:40]:
                print('  dmesg: %s' % line)
            print('FAIL %s: %s' % (name, failed[0]), flush=True)
        else:
            print('PASS %s: %s (%.1f s)' % (name, how, time.time() - t0),
                  flush=True)
            os.unlink(img)
    return status


def main(argv):
    if len(argv) >= 3 and argv[1] == '--batch':
        rw_only = '--rw-only' in argv
        names = [a for a in argv[3:] if a != '--rw-only']
        return batch(argv[2], names, rw_only)
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    exercise(argv[1], Kmsg(), '--rw-only' in argv[2:])
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
