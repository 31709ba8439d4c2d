#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Damage a qcow2 image in one precise way, for the `check` cross-tests.

usage: corrupt.py KIND IMAGE
       corrupt.py --list

Every structure is found by parsing the image's own header, L1/L2 tables and
refcount table, so the recipes work for any cluster size, refcount width,
extended L2 and v2/v3 images.  The image must have at least one allocated
data cluster (two for `overlap`).  Prints one line saying what was changed.

KINDS and what `qemu-img check` (and `qimgctl check`) should say afterwards:
  refcount-low      a data cluster's refcount set to 0        -> corruption
  refcount-high     a zeroed cluster appended at EOF with
                    refcount 1 and no reference (a crashed
                    allocation)                                -> leak
  l2-past-eof       an L2 entry moved far past EOF            -> corruption
  l2-unaligned      an L2 entry's offset moved off a cluster
                    boundary                                   -> corruption
  copied-flag       COPIED cleared on an L2 entry whose
                    cluster has refcount 1                     -> corruption
  overlap           a second L2 entry pointed at the first
                    entry's cluster (two owners, refcount 1)   -> corruption
  l1-reserved       a reserved bit set in an L1 entry          -> corruption
  truncated-header  the file cut to 16 bytes, before
                    cluster_bits                               -> cannot open
  bad-magic         the magic overwritten                      -> not qcow2
  refblock-past-eof an unused refcount table entry pointed
                    past EOF                                   -> corruption
  refblock-missing  the refcount table entry of a refcount block
                    that covers clusters in use cleared (needs
                    more than one refcount block)              -> corruption
  leak-then-copied  refcount of a data cluster raised to 2
                    (leak + COPIED mismatch)                   -> corruption
"""
import struct
import sys

MAGIC = b'QFI\xfb'
COPIED = 1 << 63
COMPRESSED = 1 << 62
OFFSET_MASK = 0x00fffffffffffe00
INCOMPAT_EXTL2 = 1 << 4


def die(msg):
    sys.stderr.write('corrupt.py: %s\n' % msg)
    sys.exit(1)


class Image:
    """Just enough qcow2 parsing to find the structures we damage."""

    def __init__(self, path):
        self.f = open(path, 'r+b')
        hdr = self.f.read(104)
        if len(hdr) < 72 or hdr[:4] != MAGIC:
            die('%s: not a qcow2 image' % path)
        (self.version,) = struct.unpack('>I', hdr[4:8])
        (self.cluster_bits,) = struct.unpack('>I', hdr[20:24])
        if not 9 <= self.cluster_bits <= 21:
            die('%s: bad cluster_bits %d' % (path, self.cluster_bits))
        self.cs = 1 << self.cluster_bits
        (self.l1_size, self.l1_off, self.rt_off, self.rt_clusters) = \
            struct.unpack('>IQQI', hdr[36:60])
        self.incompat = 0
        self.refcount_order = 4
        if self.version >= 3 and len(hdr) >= 104:
            (self.incompat,) = struct.unpack('>Q', hdr[72:80])
            (self.refcount_order,) = struct.unpack('>I', hdr[96:100])
        self.ext_l2 = bool(self.incompat & INCOMPAT_EXTL2)
        self.l2_entry_size = 16 if self.ext_l2 else 8
        self.rb_entries = self.cs * 8 >> self.refcount_order
        self.f.seek(0, 2)
        self.size = self.f.tell()

    def u64(self, off):
        self.f.seek(off)
        data = self.f.read(8)
        if len(data) < 8:
            die('read past EOF at 0x%x' % off)
        return struct.unpack('>Q', data)[0]

    def put64(self, off, val):
        self.f.seek(off)
        self.f.write(struct.pack('>Q', val))

    def l1_entries(self):
        """(index, raw) of every L1 entry naming an L2 table."""
        for i in range(self.l1_size):
            raw = self.u64(self.l1_off + 8 * i)
            if raw & OFFSET_MASK:
                yield i, raw

    def data_entries(self):
        """(address of the L2 entry, raw) for every standard allocated
        (normal or zero-allocated) L2 entry of the active image."""
        for _, l1e in self.l1_entries():
            l2 = l1e & OFFSET_MASK
            for j in range(self.cs // self.l2_entry_size):
                addr = l2 + j * self.l2_entry_size
                raw = self.u64(addr)
                if raw & COMPRESSED or not raw & OFFSET_MASK:
                    continue
                yield addr, raw

    def first_data(self, n=1):
        found = []
        for ent in self.data_entries():
            found.append(ent)
            if len(found) == n:
                return found
        die('image needs %d allocated data cluster(s), found %d'
            % (n, len(found)))

    # Refcounts: entries of 2^order bits; narrow ones are packed from the
    # least significant bit of each byte, wide ones are big-endian.
    def refblock_of(self, cluster):
        idx = cluster // self.rb_entries
        if idx >= self.rt_clusters * self.cs // 8:
            die('cluster %d is beyond the refcount table' % cluster)
        rb = self.u64(self.rt_off + 8 * idx) & OFFSET_MASK
        if not rb:
            die('cluster %d has no refcount block' % cluster)
        return rb, cluster % self.rb_entries

    def get_refcount(self, cluster):
        rb, i = self.refblock_of(cluster)
        bits = 1 << self.refcount_order
        if bits < 8:
            self.f.seek(rb + i * bits // 8)
            byte = self.f.read(1)[0]
            return (byte >> (i * bits % 8)) & ((1 << bits) - 1)
        self.f.seek(rb + i * bits // 8)
        return int.from_bytes(self.f.read(bits // 8), 'big')

    def set_refcount(self, cluster, val):
        rb, i = self.refblock_of(cluster)
        bits = 1 << self.refcount_order
        if val >= 1 << bits:
            die('refcount %d does not fit in %d bits' % (val, bits))
        if bits < 8:
            pos = rb + i * bits // 8
            self.f.seek(pos)
            byte = self.f.read(1)[0]
            shift = i * bits % 8
            byte &= ~(((1 << bits) - 1) << shift) & 0xff
            byte |= val << shift
            self.f.seek(pos)
            self.f.write(bytes([byte]))
            return
        self.f.seek(rb + i * bits // 8)
        self.f.write(val.to_bytes(bits // 8, 'big'))


def refcount_low(img):
    addr, raw = img.first_data()[0]
    cl = (raw & OFFSET_MASK) >> img.cluster_bits
    old = img.get_refcount(cl)
    img.set_refcount(cl, 0)
    return 'cluster %d refcount %d -> 0' % (cl, old)


def refcount_high(img):
    end = (img.size + img.cs - 1) // img.cs
    img.f.truncate((end + 1) * img.cs)
    img.set_refcount(end, 1)
    return 'appended cluster %d with refcount 1' % end


def leak_then_copied(img):
    addr, raw = img.first_data()[0]
    cl = (raw & OFFSET_MASK) >> img.cluster_bits
    if img.refcount_order == 0:
        die('refcount_bits=1 cannot hold 2')
    img.set_refcount(cl, 2)
    return 'cluster %d refcount -> 2' % cl


def l2_past_eof(img):
    addr, raw = img.first_data()[0]
    far = ((img.size + img.cs - 1) // img.cs + 1000) * img.cs
    img.put64(addr, (raw & ~OFFSET_MASK) | far)
    return 'L2 entry at 0x%x -> 0x%x' % (addr, far)


def l2_unaligned(img):
    if img.cs == 512:
        die('512-byte clusters cannot hold an unaligned 512-byte offset')
    addr, raw = img.first_data()[0]
    img.put64(addr, raw + 512)
    return 'L2 entry at 0x%x offset += 512' % addr


def copied_flag(img):
    for addr, raw in img.data_entries():
        cl = (raw & OFFSET_MASK) >> img.cluster_bits
        if raw & COPIED and img.get_refcount(cl) == 1:
            img.put64(addr, raw & ~COPIED)
            return 'COPIED cleared on L2 entry at 0x%x' % addr
    die('no L2 entry with COPIED set and refcount 1')


def overlap(img):
    (a1, r1), (a2, r2) = img.first_data(2)
    img.put64(a2, (r2 & ~OFFSET_MASK) | (r1 & OFFSET_MASK))
    return 'L2 entry at 0x%x now shares 0x%x' % (a2, r1 & OFFSET_MASK)


def l1_reserved(img):
    for i, raw in img.l1_entries():
        img.put64(img.l1_off + 8 * i, raw | (1 << 56))
        return 'L1 entry %d: reserved bit 56 set' % i
    die('no allocated L1 entry')


def truncated_header(img):
    img.f.truncate(16)
    return 'file truncated to 16 bytes'


def bad_magic(img):
    img.f.seek(0)
    img.f.write(b'QFI\x00')
    return 'magic overwritten'


def refblock_past_eof(img):
    n = img.rt_clusters * img.cs // 8
    for i in range(n):
        if not img.u64(img.rt_off + 8 * i):
            far = ((img.size + img.cs - 1) // img.cs + 1000) * img.cs
            img.put64(img.rt_off + 8 * i, far)
            return 'refcount table entry %d -> 0x%x' % (i, far)
    die('refcount table has no free entry')


def refblock_missing(img):
    n = img.rt_clusters * img.cs // 8
    used = set()
    for _, raw in img.data_entries():
        used.add((raw & OFFSET_MASK) >> img.cluster_bits)
    for i in range(1, n):
        rb = img.u64(img.rt_off + 8 * i) & OFFSET_MASK
        first = i * img.rb_entries
        if rb and any(first <= c < first + img.rb_entries for c in used):
            img.put64(img.rt_off + 8 * i, 0)
            return 'refcount table entry %d (block 0x%x) cleared' % (i, rb)
    die('no refcount block other than the first covers a data cluster')


KINDS = {
    'refblock-missing': refblock_missing,
    'refcount-low': refcount_low,
    'refcount-high': refcount_high,
    'leak-then-copied': leak_then_copied,
    'l2-past-eof': l2_past_eof,
    'l2-unaligned': l2_unaligned,
    'copied-flag': copied_flag,
    'overlap': overlap,
    'l1-reserved': l1_reserved,
    'truncated-header': truncated_header,
    'bad-magic': bad_magic,
    'refblock-past-eof': refblock_past_eof,
}


def main(argv):
    if len(argv) == 2 and argv[1] == '--list':
        print('\n'.join(sorted(KINDS)))
        return 0
    if len(argv) != 3 or argv[1] not in KINDS:
        sys.stderr.write('usage: corrupt.py KIND IMAGE  (KIND: %s)\n'
                         % ', '.join(sorted(KINDS)))
        return 2
    img = Image(argv[2])
    msg = KINDS[argv[1]](img)
    img.f.close()
    print('%s: %s' % (argv[1], msg))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
