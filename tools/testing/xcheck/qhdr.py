#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Small hand edits of a qcow2 v3 header for the error-handling cases.

usage: qhdr.py incompat IMAGE BIT NAME
  Set incompatible feature bit BIT and add a feature-name table entry that
  names it NAME, the way a newer writer would, so a reader that does not
  know the bit can say which feature it lacks.
usage: qhdr.py journal IMAGE
  Print the qimg journal extension and bits: "OFFSET SIZE DIRTY VALID"
  (decimal; DIRTY and VALID 0 or 1), or "none" without the extension.

Only the first cluster is rewritten; the header extensions are re-packed in
place and must still fit in front of the backing file name (or the end of
the cluster).
"""
import struct
import sys

EXT_END = 0
EXT_FEATURE_TABLE = 0x6803f857


def die(msg):
    sys.stderr.write('qhdr.py: %s\n' % msg)
    sys.exit(1)


def add_incompat(path, bit, name):
    with open(path, 'r+b') as f:
        hdr = bytearray(f.read(104))
        if len(hdr) < 104 or hdr[:4] != b'QFI\xfb':
            die('%s: not a qcow2 image' % path)
        version, = struct.unpack_from('>I', hdr, 4)
        if version != 3:
            die('%s: needs a version 3 image' % path)
        cluster = 1 << struct.unpack_from('>I', hdr, 20)[0]
        f.seek(0)
        buf = bytearray(f.read(cluster))
        back_off, = struct.unpack_from('>Q', buf, 8)
        hlen, = struct.unpack_from('>I', buf, 100)
        limit = back_off if 0 < back_off < cluster else cluster

        exts = []
        off = hlen
        while off + 8 <= limit:
            typ, ln = struct.unpack_from('>II', buf, off)
            if typ == EXT_END:
                break
            exts.append([typ, bytes(buf[off + 8:off + 8 + ln])])
            off += 8 + ((ln + 7) & ~7)

        entry = struct.pack('>BB46s', 0, bit, name.encode()[:46])
        for e in exts:
            if e[0] == EXT_FEATURE_TABLE:
                e[1] += entry
                break
        else:
            exts.insert(0, [EXT_FEATURE_TABLE, entry])

        out = bytearray()
        for typ, data in exts:
            out += struct.pack('>II', typ, len(data)) + data
            out += bytes((8 - len(data) % 8) % 8)
        out += struct.pack('>II', EXT_END, 0)
        if hlen + len(out) > limit:
            die('%s: no room for another feature-name entry' % path)
        buf[hlen:hlen + len(out)] = out

        incompat, = struct.unpack_from('>Q', buf, 72)
        struct.pack_into('>Q', buf, 72, incompat | (1 << bit))
        f.seek(0)
        f.write(buf)


def show_journal(path):
    with open(path, 'rb') as f:
        buf = f.read(2 << 20)
    cluster = 1 << struct.unpack_from('>I', buf, 20)[0]
    buf = buf[:cluster]
    back_off, = struct.unpack_from('>Q', buf, 8)
    hlen, = struct.unpack_from('>I', buf, 100)
    incompat, = struct.unpack_from('>Q', buf, 72)
    autoclear, = struct.unpack_from('>Q', buf, 88)
    limit = back_off if 0 < back_off < cluster else cluster
    off = hlen
    while off + 8 <= limit:
        typ, ln = struct.unpack_from('>II', buf, off)
        if typ == EXT_END:
            break
        if typ == 0x716a726e and ln == 16:
            joff, jsize = struct.unpack_from('>QQ', buf, off + 8)
            print(joff, jsize, incompat >> 32 & 1, autoclear >> 32 & 1)
            return
        off += 8 + ((ln + 7) & ~7)
    print('none')


def main():
    if len(sys.argv) == 3 and sys.argv[1] == 'journal':
        show_journal(sys.argv[2])
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == 'incompat':
        add_incompat(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main())
