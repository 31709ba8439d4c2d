#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Give a qemu-img-made qcow2 v3 image a dirty qimg metadata journal.

usage: mkjournal.py IMAGE NTX [SYNCED [DAMAGE]]
       mkjournal.py IMAGE --scenario NAME
  Append a 64 KiB journal area (4 KiB blocks) at the end of IMAGE, give its
  clusters refcount 1, add the "qjrn" header extension and set the journal
  dirty (incompatible bit 32) and journal valid (autoclear bit 32) bits,
  and write NTX committed transactions with sequence numbers SYNCED+1 on
  (SYNCED default 0).  Each logs the 8 bytes already at the start of the L1
  table, so a replay would leave the image as it is.  DAMAGE: "torn" breaks
  the last commit block's checksum (the end of the log after a crash),
  "middle" a data byte of the first transaction (corruption, -EUCLEAN when
  later transactions follow).

  --scenario NAME: transactions that change guest data of guest clusters 0
  and 1, which must be allocated and hold 0x11 bytes (qemu-io -c 'write -P
  0x11 0 128k'), so a replay can be checked through QEMU's own reads.
  Prints the expected guest contents after replay, one "OFFSET LENGTH
  BYTE" line per range (the rest of the two clusters stays 0x11):
    several  three transactions, the second overlapping the first
    torn     the same, the third one's commit block torn (not replayed)
    wrapped  the same three, starting near the ring's end so that the log
             wraps to block 2; stale older blocks after the third one
    revoke   a write to guest cluster 1, a revoke of its host cluster, a
             later write into it again (only that one is replayed)
    clean    nothing to replay: the ring holds only transactions up to
             synced_seq (already written in place)
    idle     as clean, but journal dirty is not set (a crash with an empty
             journal: the area is allocated, journal valid vouches for it)
    stale    as idle, without journal valid either (as a QEMU that wrote
             the image leaves it: the area is only leaked clusters)
    released as idle, but the area's clusters have refcount 0 (a detach
             cut short after its checkpoint, or an attach before its first
             commit: the area is named but free)
    released-dirty  as clean (journal dirty), the area's clusters free
    grow     an online grow to 2 MiB whose L1 table moved: a copy of the
             table in place in a new cluster after the area, then three
             transactions: the new cluster's refcount 1, the old
             table's 0, and header bytes 24-47 (size 2 MiB, l1_size 2,
             l1_table_offset the new cluster); guest data unchanged
  The feature-name table gets names for the qimg bits (as qimg writes
  them), so QEMU's refusal names "journal dirty".

This encoder is written from Documentation/block/qimg-format.rst section
5.1 alone, independently of qimg_journal_fmt.c, so the two checking each
other is a test of the specification as well as of the code.
"""
import struct
import sys

EXT_END = 0
EXT_JOURNAL = 0x716a726e
BITS = 12
BS = 1 << BITS
NBLOCKS = 16


def die(msg):
    sys.stderr.write('mkjournal.py: %s\n' % msg)
    sys.exit(1)


def _table():
    tab = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
        tab.append(c)
    return tab


TAB = _table()


def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc = TAB[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


def with_crc(blk, off):
    """Fill in the 4-byte checksum at off (computed with the field zero)."""
    blk[off:off + 4] = b'\0' * 4
    blk[off:off + 4] = struct.pack('>I', crc32c(bytes(blk)))
    return blk


def journal_header(gen, synced, tail):
    blk = bytearray(BS)
    struct.pack_into('>QIIQQQI', blk, 0, 0x71696d676a726e6c, 1, BITS,
                     NBLOCKS * BS, gen, synced, tail)
    return with_crc(blk, 44)


def put_tx(area, pos, seq, rec, nxt):
    """Write one one-record transaction at ring block pos; its length."""
    kind, target, data = rec
    desc = bytearray(BS)
    if kind == 'w':
        struct.pack_into('>IIQIIII', desc, 0, 0x716a6473, 0, seq, 1, 1, 0, 0)
        struct.pack_into('>HHIQII', desc, 32, 1, 0, len(data), target, 0,
                         crc32c(data))
        dat = bytearray(BS)
        dat[0:len(data)] = data
        blocks = [desc, dat]
    else:
        struct.pack_into('>IIQIIII', desc, 0, 0x716a6473, 0, seq, 1, 0, 0, 0)
        struct.pack_into('>HHIQ', desc, 32, 2, 0, data, target)
        blocks = [desc]
    with_crc(desc, 4)
    com = bytearray(BS)
    struct.pack_into('>IIQIIII', com, 0, 0x716a636d, 0, seq, len(blocks),
                     nxt, crc32c(b''.join(bytes(b) for b in blocks)), 0)
    with_crc(com, 4)
    blocks.append(com)
    for i, b in enumerate(blocks):
        area[(pos + i) * BS:(pos + i + 1) * BS] = b
    return len(blocks)


def scenario_area(name, g0, g1, cluster, grow=None):
    """Journal area and expected guest ranges of a --scenario."""
    area = bytearray(NBLOCKS * BS)
    synced, tail = 5, 2
    three = [('w', g0, b'\xa1' * 512), ('w', g0 + 256, b'\xa2' * 512),
             ('w', g1, b'\xa3' * 8)]
    expect = [(0, 256, 0xa1), (256, 512, 0xa2), (cluster, 8, 0xa3)]
    stale = []
    if name == 'grow':
        # The new table's refcount, the old one's, the header bytes.
        recs, expect = grow, []
    elif name in ('several', 'torn'):
        recs = three
    elif name == 'wrapped':
        recs, tail = three, 11
        # Blocks left from an earlier pass: lower sequence numbers.
        stale = [(5, ('w', g0, b'\xee' * 512), 8)]
    elif name == 'revoke':
        recs = [('w', g1, b'\xb1' * 4096), ('r', g1, cluster),
                ('w', g1 + 1024, b'\xb3' * 512)]
        expect = [(cluster + 1024, 512, 0xb3)]
    elif name in ('clean', 'idle', 'stale', 'released', 'released-dirty'):
        recs, expect = [], []
        stale = [(4, ('w', g0, b'\xee' * 512), 2),
                 (5, ('w', g0, b'\xef' * 512), 5)]
        tail = 8
    else:
        die('unknown scenario %s' % name)
    for seq, rec, pos in stale:
        put_tx(area, pos, seq, rec, pos + 3)
    area[0:BS] = journal_header(1, synced, tail)
    area[BS:2 * BS] = journal_header(1, synced, tail)
    pos = tail
    last = 0
    for i, rec in enumerate(recs):
        n = 3 if rec[0] == 'w' else 2
        nxt = pos + n if pos + n + 3 <= NBLOCKS else 2
        put_tx(area, pos, synced + 1 + i, rec, nxt)
        last = pos + n - 1
        pos = nxt
    if name == 'torn':
        area[last * BS + 100] ^= 0x01
        expect = expect[:2]
    return area, expect


def transactions(ntx, synced, target, data, damage):
    area = bytearray(NBLOCKS * BS)
    area[0:BS] = journal_header(1, synced, 2)
    area[BS:2 * BS] = journal_header(1, synced, 2)
    pos = 2
    commits = []
    for i in range(ntx):
        seq = synced + 1 + i
        desc = bytearray(BS)
        struct.pack_into('>IIQIIII', desc, 0, 0x716a6473, 0, seq, 1, 1, 0, 0)
        struct.pack_into('>HHIQII', desc, 32, 1, 0, len(data), target, 0,
                         crc32c(data))
        with_crc(desc, 4)
        dat = bytearray(BS)
        dat[0:len(data)] = data
        nxt = pos + 3 if pos + 3 + 3 <= NBLOCKS else 2
        com = bytearray(BS)
        struct.pack_into('>IIQIIII', com, 0, 0x716a636d, 0, seq, 2, nxt,
                         crc32c(bytes(desc) + bytes(dat)), 0)
        with_crc(com, 4)
        area[pos * BS:(pos + 1) * BS] = desc
        area[(pos + 1) * BS:(pos + 2) * BS] = dat
        area[(pos + 2) * BS:(pos + 3) * BS] = com
        if i == 0 and damage == 'middle':
            area[(pos + 1) * BS] ^= 0xff
        commits.append(pos + 2)
        pos = nxt
    if damage == 'torn' and commits:
        area[commits[-1] * BS + 100] ^= 0x01
    return area


def guest_host(f, l1_off, cluster, guest):
    """Host offset of an allocated guest cluster (standard L2 entries)."""
    mask = 0x00fffffffffffe00
    per_l2 = cluster // 8
    f.seek(l1_off + 8 * (guest // cluster // per_l2))
    l2, = struct.unpack('>Q', f.read(8))
    if not l2 & mask:
        die('guest offset %#x is not allocated' % guest)
    f.seek((l2 & mask) + 8 * (guest // cluster % per_l2))
    ent, = struct.unpack('>Q', f.read(8))
    if not ent & mask or ent & (1 << 62):
        die('guest offset %#x is not a standard allocated cluster' % guest)
    return ent & mask


def feature_names(data):
    """The feature-name table with names for the qimg bits added."""
    out = bytearray(data)
    have = {(data[i], data[i + 1]) for i in range(0, len(data) - 47, 48)}
    for kind, bit, name in ((0, 32, b'journal dirty'),
                            (2, 32, b'journal valid')):
        if (kind, bit) not in have:
            out += struct.pack('>BB46s', kind, bit, name)
    return bytes(out)


RELEASED = ('released', 'released-dirty')


def make(path, ntx, synced, damage, scenario=None):
    with open(path, 'r+b') as f:
        hdr = bytearray(f.read(112))
        if len(hdr) < 104 or hdr[:4] != b'QFI\xfb':
            die('%s: not a qcow2 image' % path)
        version, = struct.unpack_from('>I', hdr, 4)
        if version != 3:
            die('%s: needs a version 3 image' % path)
        cbits, = struct.unpack_from('>I', hdr, 20)
        cluster = 1 << cbits
        l1_off, = struct.unpack_from('>Q', hdr, 40)
        rt_off, = struct.unpack_from('>Q', hdr, 48)
        rorder, = struct.unpack_from('>I', hdr, 96)
        if rorder != 4 or cluster < NBLOCKS * BS:
            die('%s: needs 16-bit refcounts and 64 KiB clusters or more'
                % path)
        f.seek(0, 2)
        size = f.tell()
        joff = (size + cluster - 1) // cluster * cluster
        jsize = cluster

        # Refcount 1 for the journal cluster, in an existing block.
        idx = joff // cluster
        per_block = cluster // 2
        f.seek(rt_off + 8 * (idx // per_block))
        rb_off, = struct.unpack('>Q', f.read(8))
        if not rb_off:
            die('%s: no refcount block covers the journal' % path)
        f.seek(rb_off + 2 * (idx % per_block))
        f.write(struct.pack('>H', 0 if scenario in RELEASED else 1))

        # The extension, first in the list.
        f.seek(0)
        buf = bytearray(f.read(cluster))
        back_off, = struct.unpack_from('>Q', buf, 8)
        hlen, = struct.unpack_from('>I', buf, 100)
        limit = back_off if 0 < back_off < cluster else cluster
        exts = [[EXT_JOURNAL, struct.pack('>QQ', joff, jsize)]]
        off = hlen
        while off + 8 <= limit:
            typ, ln = struct.unpack_from('>II', buf, off)
            if typ == EXT_END:
                break
            exts.append([typ, bytes(buf[off + 8:off + 8 + ln])])
            off += 8 + ((ln + 7) & ~7)
        for e in exts:
            if e[0] == 0x6803f857:
                e[1] = feature_names(e[1])
                break
        else:
            exts.append([0x6803f857, feature_names(b'')])
        out = bytearray()
        for typ, data in exts:
            out += struct.pack('>II', typ, len(data)) + data
            out += b'\0' * (-len(data) % 8)
        out += struct.pack('>II', EXT_END, 0)
        if hlen + len(out) > limit:
            die('%s: no room for the journal extension' % path)
        buf[hlen:hlen + len(out)] = out
        incompat, = struct.unpack_from('>Q', buf, 72)
        autoclear, = struct.unpack_from('>Q', buf, 88)
        if scenario not in ('idle', 'stale', 'released'):
            incompat |= 1 << 32
        if scenario != 'stale':
            autoclear |= 1 << 32
        struct.pack_into('>Q', buf, 72, incompat)
        struct.pack_into('>Q', buf, 88, autoclear)
        f.seek(0)
        f.write(buf)

        if scenario:
            g0 = guest_host(f, l1_off, cluster, 0)
            g1 = guest_host(f, l1_off, cluster, cluster)
            grow = None
            if scenario == 'grow':
                # The new table: the old one's entry, then a zero one.
                nl1 = joff + jsize
                f.seek(l1_off)
                l1 = f.read(8)
                f.seek(nl1)
                f.write(l1 + b'\0' * (cluster - 8))
                def rc_rec(off, val):
                    """The aligned 8 bytes holding off's refcount, set."""
                    i = off // cluster
                    f.seek(rt_off + 8 * (i // per_block))
                    rb, = struct.unpack('>Q', f.read(8))
                    if not rb:
                        die('%s: no refcount block covers %#x' % (path, off))
                    pos = rb + 2 * (i % per_block)
                    f.seek(pos & ~7)
                    word = bytearray(f.read(8))
                    struct.pack_into('>H', word, pos & 7, val)
                    return ('w', pos & ~7, bytes(word))
                crypt, = struct.unpack_from('>I', buf, 32)
                grow = [rc_rec(nl1, 1), rc_rec(l1_off, 0),
                        ('w', 24, struct.pack('>QIIQ', 2 << 20, crypt, 2,
                                              nl1))]
            area, expect = scenario_area(scenario, g0, g1, cluster, grow)
            f.seek(joff)
            f.write(area)
            for off, ln, byte in expect:
                print('%d %d 0x%02x' % (off, ln, byte))
            return
        f.seek(l1_off)
        data = f.read(8)
        f.seek(joff)
        f.write(transactions(ntx, synced, l1_off, data, damage))


def main():
    if len(sys.argv) == 4 and sys.argv[2] == '--scenario':
        make(sys.argv[1], 0, 0, '', sys.argv[3])
        return
    if len(sys.argv) not in (3, 4, 5):
        die('usage: mkjournal.py IMAGE NTX [SYNCED [DAMAGE]]')
    synced = int(sys.argv[3], 0) if len(sys.argv) > 3 else 0
    damage = sys.argv[4] if len(sys.argv) > 4 else ''
    if damage not in ('', 'torn', 'middle'):
        die('DAMAGE must be torn or middle')
    make(sys.argv[1], int(sys.argv[2]), synced, damage)


if __name__ == '__main__':
    main()
