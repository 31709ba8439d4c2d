#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Hand edits of the persistent bitmaps of a qcow2 v3 image, for images
beyond the limits qemu-img puts on bitmaps.

usage: bmhack.py IMAGE EDIT...

EDITs, applied in order:
  nb=N          the number of bitmaps the bitmaps extension claims
  dirsize=N     the bitmap directory size the extension claims
  I.table=N     entry I (from 0) of the directory: bitmap_table_size
  I.gran=N      granularity_bits
  I.flags=N     flags
  I.type=N      type
  clone=N       the directory becomes N copies of entry 0 (names made
                unique by a decimal suffix; every copy shares entry 0's
                bitmap table), written at the end of the file; the
                extension names it.  The copies' clusters get no
                refcounts: the image is for opening, not for writing.

Only the first cluster (the header extension) and the directory are
rewritten; nothing else of the image is touched.
"""
import struct
import sys

EXT_BITMAPS = 0x23852875
ENTRY = struct.Struct('>QIIBBHI')


def die(msg):
    sys.stderr.write('bmhack.py: %s\n' % msg)
    sys.exit(1)


def ext_pos(f):
    f.seek(0)
    hdr = f.read(104)
    if hdr[:4] != b'QFI\xfb':
        die('not a qcow2 image')
    version, = struct.unpack_from('>I', hdr, 4)
    if version != 3:
        die('needs a version 3 image')
    cluster = 1 << struct.unpack_from('>I', hdr, 20)[0]
    hdr_len, = struct.unpack_from('>I', hdr, 100)
    f.seek(0)
    buf = f.read(cluster)
    pos = hdr_len
    while pos + 8 <= len(buf):
        kind, length = struct.unpack_from('>II', buf, pos)
        if kind == 0:
            break
        if kind == EXT_BITMAPS:
            return pos + 8, cluster
        pos += 8 + ((length + 7) & ~7)
    die('no bitmaps extension')
    return None


def entries(f, dpos, dsize):
    f.seek(dpos)
    buf = f.read(dsize)
    pos, out = 0, []
    while pos + ENTRY.size <= len(buf):
        e = list(ENTRY.unpack_from(buf, pos))
        n = e[6] + e[5]
        out.append((pos, e, buf[pos + ENTRY.size:pos + ENTRY.size + n]))
        pos += (ENTRY.size + n + 7) & ~7
    return out


def main(argv):
    if len(argv) < 3:
        die('usage: bmhack.py IMAGE EDIT...')
    fields = {'table': 1, 'flags': 2, 'type': 3, 'gran': 4}
    with open(argv[1], 'r+b') as f:
        epos, cluster = ext_pos(f)
        f.seek(epos)
        nb, _, dsize, dpos = struct.unpack('>IIQQ', f.read(24))
        for ed in argv[2:]:
            key, _, val = ed.partition('=')
            val = int(val, 0)
            if key == 'nb':
                f.seek(epos)
                f.write(struct.pack('>I', val))
            elif key == 'dirsize':
                f.seek(epos + 8)
                f.write(struct.pack('>Q', val))
            elif key == 'clone':
                _, e, tail = entries(f, dpos, dsize)[0]
                out = bytearray()
                for i in range(val):
                    name = tail[e[6]:] + (b'%d' % i)
                    out += ENTRY.pack(e[0], e[1], e[2], e[3], e[4],
                                      len(name), 0) + name
                    out += bytes(-len(out) % 8)
                f.seek(0, 2)
                end = f.tell()
                dpos = (end + cluster - 1) // cluster * cluster
                f.seek(dpos)
                f.write(out)
                f.write(bytes(-len(out) % cluster))
                dsize = len(out)
                f.seek(epos)
                f.write(struct.pack('>IIQQ', val, 0, dsize, dpos))
            elif '.' in key and key.split('.')[1] in fields:
                idx, name = key.split('.')
                pos, e, _ = entries(f, dpos, dsize)[int(idx)]
                e[fields[name]] = val
                f.seek(dpos + pos)
                f.write(ENTRY.pack(*e))
            else:
                die('unknown edit ' + ed)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
