#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Write the hostile qcow2 corpus: images whose metadata lies.

usage: mkhostile.py DIR [NAME...]   write DIR/NAME.qcow2 for every case
       mkhostile.py --list          print "NAME<TAB>what it does"

Every image is built from scratch (no qemu-img) and is deterministic: the
same script writes the same bytes.  The good layout, 4 KiB clusters,
16-bit refcounts, an 8 MiB disk (4 L1 entries):

  cluster 0  header (+ extensions)      cluster 6  data, guest cluster 0
  cluster 1  refcount table             cluster 7  data, guest cluster 1
  cluster 2  refcount block             cluster 8  data, guest 2 MiB
  cluster 3  L1 table                   cluster 9  snapshot table
  cluster 4  L2 table (guest 0-2 MiB)   cluster 10 snapshot's L1 table
  cluster 5  L2 table (guest 2-4 MiB)   cluster 11 bitmap directory

(the snapshot and bitmap clusters only where a case asks for them).  Each
case then breaks one thing: a header field, an extension, a table entry,
a refcount, a snapshot entry; the "mut-" cases flip bytes of the good
image at places drawn from a fixed-seed generator.  The cases are listed
in CASES below, named by what they do; tools/testing/vm/hostile/run
attaches each in the guest.
"""
import os
import struct
import sys

MAGIC = b'QFI\xfb'
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
EXT_BACKING_FMT = 0xe2792aca
EXT_FEATURES = 0x6803f857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537be77
EXT_DATA_FILE = 0x44415441
EXT_JOURNAL = 0x716a726e

# Cluster numbers of the good layout.
C_RT, C_RB, C_L1, C_L2A, C_L2B, C_D0, C_D1, C_D2, C_ST, C_SL1, C_BMD = \
    range(1, 12)
DATA_BYTE = {C_D0: 0x61, C_D1: 0x62, C_D2: 0x63}


class Img:
    """The good image, as fields to edit before build()."""

    def __init__(self, cb=12, size=8 << 20, version=3, rorder=4,
                 snapshot=False, bitmaps=False, extl2=False):
        self.cb = cb
        self.cs = 1 << cb
        self.version = version
        self.rorder = rorder
        self.extl2 = extl2
        self.l2_esize = 16 if extl2 else 8
        self.h = {
            'magic': MAGIC, 'version': version, 'backing_off': 0,
            'backing_len': 0, 'cb': cb, 'size': size, 'crypt': 0,
            'l1_size': min(-(-size // (self.cs * self.cs // self.l2_esize)),
                           4),
            'l1_off': C_L1 * self.cs, 'rt_off': C_RT * self.cs,
            'rt_clusters': 1, 'nb_snap': 0, 'snap_off': 0,
            'incompat': 4 << 2 if extl2 else 0, 'compat': 0,
            'autoclear': 0, 'rorder': rorder, 'hlen': 104,
        }
        if extl2:
            self.h['incompat'] = 1 << 4
        self.exts = []          # (type, bytes); None: no end marker
        self.ext_raw = None     # bytes replacing the extension area
        self.backing_name = b''
        self.l1 = {0: COPIED | C_L2A * self.cs, 1: COPIED | C_L2B * self.cs}
        # L2 entries: {(cluster, index): (raw, bitmap)}
        self.l2 = {
            (C_L2A, 0): (COPIED | C_D0 * self.cs, 1),
            (C_L2A, 1): (COPIED | C_D1 * self.cs, 1),
            (C_L2B, 0): (COPIED | C_D2 * self.cs, 1),
        }
        self.rt = {0: C_RB * self.cs}
        self.used = [0, C_RT, C_RB, C_L1, C_L2A, C_L2B, C_D0, C_D1, C_D2]
        self.refs = {}          # cluster -> refcount, over the default 1
        self.snaps = []
        self.file_clusters = C_D2 + 1
        self.file_size = None   # bytes; default: file_clusters
        self.patches = []       # (offset, bytes) applied last
        if snapshot:
            self.add_snapshot()
        if bitmaps:
            self.add_bitmaps()

    def add_snapshot(self, **kw):
        s = {'l1_off': C_SL1 * self.cs, 'l1_size': self.h['l1_size'],
             'id': b'1', 'name': b'snap1', 'extra': struct.pack(
                 '>QQ', 0, self.h['size']), 'vmstate': 0}
        s.update(kw)
        self.snaps.append(s)
        self.h['nb_snap'] = len(self.snaps)
        self.h['snap_off'] = C_ST * self.cs
        for c in (C_ST, C_SL1):
            if c not in self.used:
                self.used.append(c)
        # The snapshot shares the L2 tables and data: refcount 2, and the
        # active L1 and L2 entries lose COPIED.
        for i in list(self.l1):
            self.l1[i] &= ~COPIED
        for k, (raw, bm) in list(self.l2.items()):
            self.l2[k] = (raw & ~COPIED, bm)
        for c in (C_L2A, C_L2B, C_D0, C_D1, C_D2):
            self.refs[c] = 2
        self.file_clusters = max(self.file_clusters, C_SL1 + 1)

    def add_bitmaps(self, entries=None, ext=None):
        # One bitmap with an all-zero table: nothing set (table entry 0).
        if entries is None:
            name = b'b0'
            entries = struct.pack('>QIIBBHI', (C_BMD + 1) * self.cs, 1, 2,
                                  1, 16, len(name), 0)
            entries += name + bytes((8 - (24 + len(name)) % 8) % 8)
        self.bitmap_dir = entries
        self.h['autoclear'] |= 1
        if ext is None:
            ext = struct.pack('>IIQQ', 1, 0, len(entries), C_BMD * self.cs)
        self.exts.append((EXT_BITMAPS, ext))
        if C_BMD not in self.used:
            self.used.append(C_BMD)
        self.file_clusters = max(self.file_clusters, C_BMD + 2)
        self.used.append(C_BMD + 1)

    def header(self):
        h = self.h
        b = bytearray(self.cs)
        struct.pack_into('>4sIQIIQIIQQIIQ', b, 0, h['magic'], h['version'],
                         h['backing_off'], h['backing_len'], h['cb'],
                         h['size'], h['crypt'], h['l1_size'], h['l1_off'],
                         h['rt_off'], h['rt_clusters'], h['nb_snap'],
                         h['snap_off'])
        if self.version < 3:
            return b
        struct.pack_into('>QQQII', b, 72, h['incompat'], h['compat'],
                         h['autoclear'], h['rorder'], h['hlen'])
        off = max(104, h['hlen']) if h['hlen'] < self.cs else 104
        if self.ext_raw is not None:
            b[off:off + len(self.ext_raw)] = self.ext_raw
            return b
        area = bytearray()
        exts = self.exts
        end = True
        if exts and exts[-1] is None:
            exts, end = exts[:-1], False
        for typ, data in exts:
            area += struct.pack('>II', typ, len(data)) + data
            area += bytes((8 - len(data) % 8) % 8)
        if end:
            area += bytes(8)
        b[off:off + len(area)] = area[:self.cs - off]
        if self.backing_name:
            b[h['backing_off']:h['backing_off'] + len(self.backing_name)] = \
                self.backing_name
        return b

    def refblock(self):
        b = bytearray(self.cs)
        bits = 1 << self.rorder
        for c in self.used:
            v = self.refs.get(c, 1)
            if bits >= 8:
                v &= (1 << bits) - 1
                b[c * bits // 8:(c + 1) * bits // 8] = \
                    v.to_bytes(bits // 8, 'big')
            else:
                v &= (1 << bits) - 1
                pos, sh = c * bits // 8, c * bits % 8
                b[pos] = (b[pos] & ~(((1 << bits) - 1) << sh) & 0xff) | \
                    (v << sh)
        return b

    def snaptable(self):
        b = bytearray()
        for s in self.snaps:
            e = struct.pack('>QIHHIIQII', s['l1_off'], s['l1_size'],
                            s.get('id_len', len(s['id'])),
                            s.get('name_len', len(s['name'])), 0, 0, 0,
                            s['vmstate'],
                            s.get('extra_len', len(s['extra'])))
            e += s['extra'] + s['id'] + s['name']
            e += bytes((8 - len(e) % 8) % 8)
            b += e
        return b

    def build(self):
        cs = self.cs
        img = bytearray(self.file_clusters * cs)

        def put(off, data):
            if off + len(data) > len(img):
                img.extend(bytes(off + len(data) - len(img)))
            img[off:off + len(data)] = data
        put(0, self.header())
        for i, v in self.rt.items():
            put(C_RT * cs + 8 * i, struct.pack('>Q', v))
        put(C_RB * cs, self.refblock())
        for i, v in self.l1.items():
            put(C_L1 * cs + 8 * i, struct.pack('>Q', v))
        for (c, i), (raw, bm) in self.l2.items():
            put(c * cs + i * self.l2_esize, struct.pack('>Q', raw))
            if self.extl2:
                put(c * cs + i * 16 + 8, struct.pack('>Q', bm))
        for c, byte in DATA_BYTE.items():
            put(c * cs, bytes([byte]) * cs)
        if self.snaps:
            put(C_ST * cs, self.snaptable())
            for i, v in self.l1.items():
                put(C_SL1 * cs + 8 * i, struct.pack('>Q', v & ~COPIED))
        if hasattr(self, 'bitmap_dir'):
            put(C_BMD * cs, self.bitmap_dir)
        for off, data in self.patches:
            put(off, data)
        return bytes(img)

    def write(self, path):
        data = self.build()
        with open(path, 'wb') as f:
            f.write(data)
            size = self.file_size if self.file_size is not None \
                else len(data)
            f.truncate(size)


class Rng:
    """xorshift64*: the same stream on every Python version."""

    def __init__(self, seed):
        self.s = seed or 1

    def next(self):
        s = self.s
        s ^= s >> 12
        s ^= (s << 25) & 0xffffffffffffffff
        s ^= s >> 27
        self.s = s
        return (s * 0x2545F4914F6CDD1D) & 0xffffffffffffffff

    def below(self, n):
        return self.next() % n


def u64(v):
    return struct.pack('>Q', v & 0xffffffffffffffff)


def u32(v):
    return struct.pack('>I', v & 0xffffffff)


CASES = []


def case(name, what):
    def reg(fn):
        CASES.append((name, what, fn))
        return fn
    return reg


def simple(name, what, **kw):
    """A case that only sets header fields (and Img() arguments)."""
    img_kw = {k: kw.pop(k) for k in list(kw)
              if k in ('cb', 'size', 'version', 'rorder', 'snapshot',
                       'bitmaps', 'extl2')}

    def fn():
        i = Img(**img_kw)
        i.h.update(kw)
        return i
    CASES.append((name, what, fn))


def l2_at(name, what, target, flags=COPIED, **img_kw):
    """Guest cluster 0's L2 entry names host offset TARGET."""
    def fn():
        i = Img(**img_kw)
        i.l2[(C_L2A, 0)] = (flags | target(i), 1)
        return i
    CASES.append((name, what, fn))


def l1_at(name, what, raw, **img_kw):
    """L1 entry 0 is RAW (a function of the image)."""
    def fn():
        i = Img(**img_kw)
        i.l1[0] = raw(i)
        return i
    CASES.append((name, what, fn))


# --- controls: must attach and work ----------------------------------------

simple('ok-good', 'the good layout itself (must attach read-write)')
simple('ok-good-snapshot', 'the good layout with one snapshot', snapshot=True)

# --- header fields ------------------------------------------------------------

simple('hdr-l1-in-header', 'L1 table offset 0 (the header)', l1_off=0)
simple('hdr-l1-unaligned', 'L1 table offset not cluster aligned',
       l1_off=C_L1 * 4096 + 8)
simple('hdr-l1-past-eof', 'L1 table far past the end of the file',
       l1_off=1 << 40)
simple('hdr-l1-past-2e63', 'L1 table offset past 2^63', l1_off=(1 << 63) |
       (C_L1 * 4096))
simple('hdr-l1-end-wraps', 'L1 table offset + size wraps around 2^64',
       l1_off=0xfffffffffffff000, l1_size=0x10000)
simple('hdr-l1-size-huge', 'l1_size 0xffffffff (size * 8 overflows 32 bits)',
       l1_size=0xffffffff)
simple('hdr-l1-size-small', 'L1 table smaller than the disk needs',
       l1_size=1)
simple('hdr-l1-is-reftable', 'L1 table and refcount table are one cluster',
       l1_off=C_RT * 4096)
simple('hdr-rt-in-header', 'refcount table offset 0 (the header)', rt_off=0)
simple('hdr-rt-is-l2', 'refcount table is an L2 table', rt_off=C_L2A * 4096)
simple('hdr-rt-past-2e63', 'refcount table offset past 2^63',
       rt_off=(1 << 63) | (C_RT * 4096))
simple('hdr-rt-clusters-huge', 'refcount_table_clusters 0xffffffff',
       rt_clusters=0xffffffff)
simple('hdr-rt-clusters-zero', 'refcount_table_clusters 0', rt_clusters=0)
simple('hdr-size-2e63', 'virtual size 2^63 (L1 size overflows)',
       size=1 << 63)
simple('hdr-size-max', 'virtual size 2^64 - 1', size=0xffffffffffffffff)
simple('hdr-size-unaligned', 'virtual size not a multiple of 512',
       size=(8 << 20) - 100)
simple('hdr-size-zero', 'virtual size 0 with L1 entries', size=0)
simple('hdr-cb-8', 'cluster_bits 8', cb=12, **{})
simple('hdr-cb-63', 'cluster_bits 63')
simple('hdr-rorder-7', 'refcount_order 7 (128-bit refcounts)', rorder=4)
simple('hdr-hlen-short', 'header_length 96, shorter than the v3 header',
       hlen=96)
simple('hdr-hlen-odd', 'header_length 105, not a multiple of 8', hlen=105)
simple('hdr-hlen-huge', 'header_length 0xfffffff8, past the cluster',
       hlen=0xfffffff8)
simple('hdr-hlen-cluster', 'header_length = cluster size: no extension area',
       hlen=4096)
simple('hdr-crypt-aes', 'AES encryption method', crypt=1)
simple('hdr-crypt-luks-noext', 'LUKS without its crypto extension', crypt=2)
simple('hdr-compat-lazy-dirty', 'dirty bit set (needs a refcount repair)',
       incompat=1)
simple('hdr-corrupt-bit', 'corrupt bit set (read-only at most)', incompat=2)
simple('hdr-compression-nobit', 'compression type zstd without its bit',
       hlen=112)
simple('hdr-nb-snap-huge', 'nb_snapshots 0xffffffff', nb_snap=0xffffffff,
       snap_off=C_ST * 4096)


def _fix_cases():
    # A few of the simple() cases need the field set in a way simple()'s
    # keyword form cannot say (names shared with Img() arguments).
    fixes = {
        'hdr-cb-8': {'cb': 8},
        'hdr-cb-63': {'cb': 63},
        'hdr-rorder-7': {'rorder': 7},
    }
    for n, (name, what, fn) in enumerate(CASES):
        if name in fixes:
            def fix(fn=fn, f=fixes[name]):
                i = fn()
                i.h.update(f)
                return i
            CASES[n] = (name, what, fix)
        if name == 'hdr-compression-nobit':
            def comp(fn=fn):
                i = fn()
                i.patches.append((104, bytes([1]) + bytes(7)))
                return i
            CASES[n] = (name, what, comp)


_fix_cases()


@case('hdr-backing-past-cluster', 'backing file name past the header cluster')
def _():
    i = Img()
    i.h.update(backing_off=4000, backing_len=500)
    return i


@case('hdr-backing-len-huge', 'backing file name length 0xffffffff')
def _():
    i = Img()
    i.h.update(backing_off=512, backing_len=0xffffffff)
    return i


@case('hdr-backing-in-fields', 'backing file name inside the header fields')
def _():
    i = Img()
    i.h.update(backing_off=16, backing_len=32)
    return i


@case('hdr-file-truncated', 'file cut to 200 bytes: every table past EOF')
def _():
    i = Img()
    i.file_size = 200
    return i


@case('hdr-l2-half-past-eof', 'the second L2 table is cut by the end of file')
def _():
    i = Img()
    i.file_clusters = C_L2B + 1
    i.file_size = C_L2B * 4096 + 1000
    del i.l2[(C_L2B, 0)]
    return i


# --- header extensions ----------------------------------------------------------

def ext_case(name, what, raw):
    def fn():
        i = Img()
        i.ext_raw = raw
        return i
    CASES.append((name, what, fn))


ext_case('ext-len-huge', 'extension length 0xffffffff',
         u32(0x12345678) + u32(0xffffffff))
ext_case('ext-len-past-cluster', 'extension length 1 byte past the cluster',
         u32(0x12345678) + u32(4096 - 104 - 8 + 1))
ext_case('ext-len-to-cluster-end', 'extension filling the cluster, no end',
         u32(0x12345678) + u32(4096 - 104 - 8))
ext_case('ext-backing-fmt-dup', 'two backing-format extensions',
         u32(EXT_BACKING_FMT) + u32(3) + b'raw\0\0\0\0\0' +
         u32(EXT_BACKING_FMT) + u32(5) + b'qcow2\0\0\0' + bytes(8))
ext_case('ext-backing-fmt-nul', 'backing-format name with a NUL inside',
         u32(EXT_BACKING_FMT) + u32(5) + b'ra\0w2\0\0\0' + bytes(8))
ext_case('ext-features-odd', 'feature-name table of 47 bytes',
         u32(EXT_FEATURES) + u32(47) + bytes(48) + bytes(8))
ext_case('ext-many-unknown', '400 unknown extensions',
         (u32(0x11110000) + u32(0)) * 400 + bytes(8))
ext_case('ext-data-file-nobit', 'external data file name without its bit',
         u32(EXT_DATA_FILE) + u32(4) + b'd.rw\0\0\0\0' + bytes(8))
ext_case('ext-crypto-unencrypted', 'crypto extension in a plain image',
         u32(EXT_CRYPTO) + u32(16) + bytes(16) + bytes(8))
ext_case('ext-bitmaps-short', 'bitmaps extension of 8 bytes',
         u32(EXT_BITMAPS) + u32(8) + bytes(8) + bytes(8))
ext_case('ext-journal-size-zero', 'journal extension of size 0',
         u32(EXT_JOURNAL) + u32(16) + u64(C_D2 * 4096 + 4096) + u64(0) +
         bytes(8))
ext_case('ext-journal-huge', 'journal of 2^62 bytes',
         u32(EXT_JOURNAL) + u32(16) + u64(16 * 4096) + u64(1 << 62) +
         bytes(8))


@case('ext-journal-on-l1', 'journal area over the L1 table')
def _():
    i = Img()
    i.exts.append((EXT_JOURNAL, u64(C_L1 * 4096) + u64(4 * 4096)))
    return i


def journal_over(name, what, first, valid=True):
    """A journal extension naming 4 clusters from FIRST, marked valid."""
    def fn():
        i = Img()
        i.exts.append((EXT_JOURNAL, u64(first * 4096) + u64(4 * 4096)))
        if valid:
            i.h['autoclear'] |= 1 << 32
        return i
    CASES.append((name, what, fn))


journal_over('ext-journal-on-l2', 'valid journal area over the L2 tables and '
             'data (all referenced)', C_L2A)
journal_over('ext-journal-on-refblock', 'valid journal area over the '
             'refcount block', C_RB)
journal_over('ext-journal-on-free', 'valid journal area over free, '
             'unreferenced clusters past EOF', 64)


@case('ext-journal-dirty-garbage', 'journal dirty bit, area full of 0xa5')
def _():
    i = Img()
    i.exts.append((EXT_JOURNAL, u64(16 * 4096) + u64(4 * 4096)))
    i.h['incompat'] |= 1 << 32
    i.h['autoclear'] |= 1 << 32
    i.file_clusters = 20
    i.used += [16, 17, 18, 19]
    i.patches.append((16 * 4096, b'\xa5' * 4 * 4096))
    return i


@case('ext-bitmaps-dir-on-l1', 'bitmap directory is the L1 table')
def _():
    i = Img()
    i.add_bitmaps(ext=struct.pack('>IIQQ', 1, 0, 32, C_L1 * 4096))
    return i


@case('ext-bitmaps-dir-in-header', 'bitmap directory inside the header')
def _():
    i = Img()
    i.add_bitmaps(ext=struct.pack('>IIQQ', 1, 0, 32, 0))
    return i


@case('ext-bitmaps-dir-huge', 'bitmap directory of 2^60 bytes')
def _():
    i = Img()
    i.add_bitmaps(ext=struct.pack('>IIQQ', 1, 0, 1 << 60, C_BMD * 4096))
    return i


@case('ext-bitmaps-count-lies', '65535 bitmaps in a one-entry directory')
def _():
    i = Img()
    i.add_bitmaps()
    i.exts[-1] = (EXT_BITMAPS, struct.pack('>IIQQ', 65535, 0,
                                            len(i.bitmap_dir), C_BMD * 4096))
    return i


@case('ext-bitmaps-table-on-l1', 'a bitmap table that is the L1 table')
def _():
    i = Img()
    name = b'b0'
    e = struct.pack('>QIIBBHI', C_L1 * 4096, 1, 0, 1, 16, len(name), 0)
    i.add_bitmaps(entries=e + name + bytes(6))
    return i


@case('ext-bitmaps-name-huge', 'a bitmap name of 65535 bytes')
def _():
    i = Img()
    e = struct.pack('>QIIBBHI', 0, 1, 0, 1, 16, 0xffff, 0)
    i.add_bitmaps(entries=e + b'b0' + bytes(6))
    return i


@case('ext-bitmaps-ok', 'one well-formed bitmap (attach marks it in use)')
def _():
    i = Img()
    i.add_bitmaps()
    return i


# --- L1 entries -------------------------------------------------------------------

l1_at('l1-to-l1', 'L1 entry 0 names the L1 table as its L2 table',
      lambda i: COPIED | C_L1 * i.cs)
l1_at('l1-to-reftable', 'L1 entry 0 names the refcount table',
      lambda i: COPIED | C_RT * i.cs)
l1_at('l1-to-refblock', 'L1 entry 0 names the refcount block',
      lambda i: COPIED | C_RB * i.cs)
l1_at('l1-to-data', 'L1 entry 0 names a data cluster (0x61 bytes)',
      lambda i: COPIED | C_D0 * i.cs)
l1_at('l1-to-snaptable', 'L1 entry 0 names the snapshot table',
      lambda i: COPIED | C_ST * i.cs, snapshot=True)
l1_at('l1-unaligned', 'L1 entry 0 not cluster aligned',
      lambda i: COPIED | C_L2A * i.cs + 512)
l1_at('l1-past-eof', 'L1 entry 0 past the end of the file',
      lambda i: COPIED | 1 << 40)
l1_at('l1-max-offset', 'L1 entry 0 with every offset bit set',
      lambda i: COPIED | 0x00fffffffffffe00)
l1_at('l1-reserved', 'L1 entry 0 with reserved bits',
      lambda i: COPIED | 0x7f00000000000000 | C_L2A * i.cs)


@case('l1-same-l2', 'L1 entries 0 and 1 name the same L2 table')
def _():
    i = Img()
    i.l1[1] = i.l1[0]
    return i


@case('l1-past-size', 'L1 entries past the disk size name the L1 table')
def _():
    i = Img()
    i.h['l1_size'] = 64
    for n in range(4, 64):
        i.l1[n] = COPIED | C_L1 * i.cs
    return i


# --- L2 entries --------------------------------------------------------------------

l2_at('l2-to-self', 'guest cluster 0 is its own L2 table',
      lambda i: C_L2A * i.cs)
l2_at('l2-to-other-l2', 'guest cluster 0 is the other L2 table',
      lambda i: C_L2B * i.cs)
l2_at('l2-to-l1', 'guest cluster 0 is the L1 table', lambda i: C_L1 * i.cs)
l2_at('l2-to-reftable', 'guest cluster 0 is the refcount table',
      lambda i: C_RT * i.cs)
l2_at('l2-to-refblock', 'guest cluster 0 is the refcount block',
      lambda i: C_RB * i.cs)
l2_at('l2-to-snaptable', 'guest cluster 0 is the snapshot table',
      lambda i: C_ST * i.cs, snapshot=True)
l2_at('l2-to-snapl1', "guest cluster 0 is the snapshot's L1 table",
      lambda i: C_SL1 * i.cs, snapshot=True)
l2_at('l2-to-bitmapdir', 'guest cluster 0 is the bitmap directory',
      lambda i: C_BMD * i.cs, bitmaps=True)
l2_at('l2-zero-to-l1', 'zero-allocated guest cluster 0 is the L1 table',
      lambda i: C_L1 * i.cs | ZERO)
l2_at('l2-to-header-low', 'guest cluster 0 at host offset 512 (the header)',
      lambda i: 512, flags=COPIED)
l2_at('l2-unaligned', 'guest cluster 0 not cluster aligned',
      lambda i: C_D0 * i.cs + 512)
l2_at('l2-past-eof', 'guest cluster 0 past the end of the file',
      lambda i: 1 << 44)
l2_at('l2-max-offset', 'guest cluster 0 with every offset bit set',
      lambda i: 0x00fffffffffffe00)
l2_at('l2-reserved', 'guest cluster 0 with reserved bits set',
      lambda i: 0x3f00000000000000 | C_D0 * i.cs)
l2_at('l2-notcopied-to-l1', 'not-COPIED guest cluster 0 names the L1 table '
      '(a COW frees it)', lambda i: C_L1 * i.cs, flags=0)
l2_at('l2-compressed-in-header', 'compressed cluster inside the header',
      lambda i: 200, flags=COMPRESSED)
l2_at('l2-compressed-l1', 'compressed cluster is the L1 table (garbage)',
      lambda i: C_L1 * i.cs, flags=COMPRESSED)
l2_at('l2-compressed-past-eof', 'compressed cluster past the end of the file',
      lambda i: 1 << 40, flags=COMPRESSED)
l2_at('l2-compressed-long', 'compressed cluster at the last bytes, 16 '
      'sectors long', lambda i: (C_D2 + 1) * i.cs - 10 | (15 << 58),
      flags=COMPRESSED)
l2_at('l2-compressed-copied', 'compressed entry with COPIED',
      lambda i: C_D0 * i.cs, flags=COMPRESSED | COPIED)


@case('l2-loop', 'guest 0 is the second L2 table, guest 2 MiB the first')
def _():
    i = Img()
    i.l2[(C_L2A, 0)] = (COPIED | C_L2B * i.cs, 1)
    i.l2[(C_L2B, 0)] = (COPIED | C_L2A * i.cs, 1)
    return i


@case('l2-every-entry-l1', 'every entry of the first L2 table names the L1')
def _():
    i = Img()
    for n in range(512):
        i.l2[(C_L2A, n)] = (COPIED | C_L1 * i.cs, 1)
    return i


@case('l2-shared-copied', 'two guest clusters share one data cluster, '
      'both COPIED, refcount 1')
def _():
    i = Img()
    i.l2[(C_L2A, 1)] = (COPIED | C_D0 * i.cs, 1)
    return i


@case('l2-extl2-to-l1', 'extended L2: guest cluster 0 is the L1 table')
def _():
    i = Img(cb=14, extl2=True)
    i.l2[(C_L2A, 0)] = (COPIED | C_L1 * i.cs, 0xffffffff)
    return i


@case('l2-extl2-alloc-and-zero', 'extended L2: subclusters allocated and zero')
def _():
    i = Img(cb=14, extl2=True)
    i.l2[(C_L2A, 0)] = (COPIED | C_D0 * i.cs, 0xffffffffffffffff)
    return i


# --- refcounts ----------------------------------------------------------------------

def rc_case(name, what, refs=None, rt=None, **img_kw):
    def fn():
        i = Img(**img_kw)
        for c, v in (refs or {}).items():
            i.refs[c] = v
        for n, v in (rt or {}).items():
            i.rt[n] = v(i) if callable(v) else v
        return i
    CASES.append((name, what, fn))


rc_case('rc-l1-free', 'the L1 table has refcount 0 (the allocator may '
        'hand it out)', {C_L1: 0})
rc_case('rc-l2-free', 'both L2 tables have refcount 0', {C_L2A: 0, C_L2B: 0})
rc_case('rc-meta-free', 'header, tables and blocks all refcount 0',
        {0: 0, C_RT: 0, C_RB: 0, C_L1: 0, C_L2A: 0, C_L2B: 0})
rc_case('rc-data-free', 'COPIED data clusters with refcount 0',
        {C_D0: 0, C_D1: 0, C_D2: 0})
rc_case('rc-max16', 'every refcount 0xffff (COW must not overflow)',
        {c: 0xffff for c in range(C_D2 + 1)})
rc_case('rc-max64', '64-bit refcounts all 2^64 - 1',
        {c: (1 << 64) - 1 for c in range(C_D2 + 1)}, rorder=6)
rc_case('rc-1bit-free', '1-bit refcounts, the L1 and L2 tables free',
        {C_L1: 0, C_L2A: 0, C_L2B: 0}, rorder=0)
rc_case('rb-is-l1', 'the refcount block is the L1 table',
        rt={0: lambda i: C_L1 * i.cs})
rc_case('rb-is-l2', 'the refcount block is an L2 table',
        rt={0: lambda i: C_L2A * i.cs})
rc_case('rb-is-reftable', 'the refcount block is the refcount table',
        rt={0: lambda i: C_RT * i.cs})
rc_case('rb-is-data', 'the refcount block is a data cluster (0x61 bytes)',
        rt={0: lambda i: C_D0 * i.cs})
rc_case('rb-missing', 'refcount table entry 0 cleared (the first refcount '
        'block would cover the header)', rt={0: 0})
rc_case('rb-same-twice', 'refcount table entries 0 and 1 name one block',
        rt={1: lambda i: C_RB * i.cs})
rc_case('rb-unaligned', 'refcount block not cluster aligned',
        rt={0: lambda i: C_RB * i.cs + 8})
rc_case('rb-past-eof', 'refcount block past the end of the file',
        rt={1: 1 << 44})
rc_case('rb-reserved', 'refcount table entry with reserved bits',
        rt={0: lambda i: C_RB * i.cs | 0xff})
rc_case('rb-past-2e63', 'refcount table entry past 2^63',
        rt={1: (1 << 63) | (64 << 12)})

# --- snapshots ------------------------------------------------------------------------


def snap_case(name, what, hdr=None, **snap_kw):
    def fn():
        i = Img()
        i.add_snapshot(**snap_kw)
        if hdr:
            i.h.update(hdr)
        return i
    CASES.append((name, what, fn))


snap_case('snap-l1-in-header', "the snapshot's L1 table is the header",
          l1_off=0)
snap_case('snap-l1-is-active', "the snapshot's L1 table is the active L1",
          l1_off=C_L1 * 4096)
snap_case('snap-l1-past-eof', "the snapshot's L1 table past EOF",
          l1_off=1 << 40)
snap_case('snap-l1-past-2e63', "the snapshot's L1 table past 2^63",
          l1_off=(1 << 63) | (C_SL1 * 4096))
snap_case('snap-l1-size-huge', "the snapshot's l1_size 0xffffffff",
          l1_size=0xffffffff)
snap_case('snap-id-len-lies', 'snapshot id length 0xffff',
          id_len=0xffff)
snap_case('snap-extra-huge', 'snapshot extra data size 0xffffffff',
          extra_len=0xffffffff)
snap_case('snap-count-lies', 'nb_snapshots 1000 with one entry',
          hdr={'nb_snap': 1000})
snap_case('snap-table-in-header', 'the snapshot table is in the header',
          hdr={'snap_off': 64})
snap_case('snap-table-is-l1', 'the snapshot table is the L1 table',
          hdr={'snap_off': C_L1 * 4096})
snap_case('snap-table-past-eof', 'the snapshot table past EOF',
          hdr={'snap_off': 1 << 40})
snap_case('snap-table-unaligned', 'the snapshot table not cluster aligned',
          hdr={'snap_off': C_ST * 4096 + 8})
snap_case('snap-disk-size-huge', "the snapshot's disk size 2^63",
          extra=struct.pack('>QQ', 0, 1 << 63))

# --- byte flips of the good image (fixed seed) -----------------------------------------

REGIONS = [('hdr', 0, 104), ('ext', 104, 256), ('l1', C_L1 * 4096, 32),
           ('l2', C_L2A * 4096, 64), ('rt', C_RT * 4096, 16),
           ('rb', C_RB * 4096, 32)]


def mut_case(n):
    name = 'mut-%02d' % n

    def fn():
        rng = Rng(0x9e3779b97f4a7c15 * (n + 1) & 0xffffffffffffffff)
        i = Img(snapshot=bool(n & 1))
        img = bytearray(i.build())
        flips = []
        for _ in range(1 + rng.below(6)):
            _, base, ln = REGIONS[rng.below(len(REGIONS))]
            off = base + rng.below(ln)
            how = rng.below(3)
            if how == 0:
                img[off] ^= 1 << rng.below(8)
            elif how == 1:
                img[off] = rng.below(256)
            else:
                img[off] = 0xff
            flips.append(off)
        i.patches.append((0, bytes(img)))
        return i
    CASES.append((name, 'random byte changes (seed %d) in the header, '
                  'L1, L2 and refcount structures' % n, fn))


for _n in range(16):
    mut_case(_n)


# --- fuzz_header inputs on the good image's tables ---------------------------------------
#
# fuzz/ holds a few inputs of tools/testing/fuzz (libFuzzer's corpus after
# 90 s from seeds of this corpus, chosen far from their seeds: eight the
# format core accepts, four it refuses late).  An input is the start of a
# header cluster and a 4-byte big-endian x: the file is (size - 4) +
# x * 4096 bytes.  The image is the input's bytes over the good image
# (so the tables it names exist), cut or extended to that size (at most
# 1 MiB past the input: the guest reads every file whole).

FUZZ_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fuzz')


def fuzz_case(tag):
    def fn():
        with open(os.path.join(FUZZ_DIR, tag), 'rb') as f:
            data = f.read()
        i = Img()
        n = len(data) - 4
        x = struct.unpack('>I', data[n:])[0]
        i.patches.append((0, data[:n]))
        i.file_size = n + min(x, 256) * 4096
        return i
    CASES.append(('fuzz-' + tag, 'fuzz_header corpus input %s over the good '
                  'image' % tag, fn))


if os.path.isdir(FUZZ_DIR):
    for _t in sorted(os.listdir(FUZZ_DIR)):
        fuzz_case(_t)


def main(argv):
    if len(argv) == 2 and argv[1] == '--list':
        for name, what, _ in CASES:
            print('%s\t%s' % (name, what))
        return 0
    if len(argv) < 2 or argv[1].startswith('-'):
        sys.stderr.write(__doc__)
        return 2
    names = set(argv[2:])
    seen = set()
    for name, _, fn in CASES:
        if name in seen:
            sys.stderr.write('mkhostile.py: duplicate case %s\n' % name)
            return 1
        seen.add(name)
        if names and name not in names:
            continue
        fn().write('%s/%s.qcow2' % (argv[1], name))
    missing = names - seen
    if missing:
        sys.stderr.write('mkhostile.py: no case %s\n' % ', '.join(missing))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
