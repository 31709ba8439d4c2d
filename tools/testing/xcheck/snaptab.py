#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Rewrite fields of a qcow2 image's snapshot table in place, for the
`snapshot -l` cross-checks: values qemu-img itself never writes (a VM
clock, a VM state size, icount absent, short extra data, long IDs).

usage: snaptab.py IMAGE N KEY=VALUE...   (N: entry index from 0)
keys: clock (ns), vmstate (bytes), date (s), icount (-1: absent),
      extra (8, 16 or 24 bytes), id (string)
The table is written back at its offset; it must still fit its clusters
(it only shrinks, or grows by a few bytes within the cluster).
"""
import struct
import sys


def main():
    path, idx = sys.argv[1], int(sys.argv[2])
    kv = dict(a.split('=', 1) for a in sys.argv[3:])
    with open(path, 'r+b') as f:
        h = f.read(112)
        cbits = struct.unpack('>I', h[20:24])[0]
        nb, off = struct.unpack('>IQ', h[60:72])
        f.seek(off)
        buf = f.read(1 << 20)
        ents, pos = [], 0
        for _ in range(nb):
            pos = (pos + 7) & ~7
            (l1o, l1s, ids, ns, ds, dn, clk, vms,
             xs) = struct.unpack('>QIHHIIQII', buf[pos:pos + 40])
            x = buf[pos + 40:pos + 40 + xs]
            i = buf[pos + 40 + xs:pos + 40 + xs + ids]
            n = buf[pos + 40 + xs + ids:pos + 40 + xs + ids + ns]
            ents.append([l1o, l1s, ds, dn, clk, vms, x, i, n])
            pos += 40 + xs + ids + ns
        e = ents[idx]
        x = bytearray(e[6].ljust(24, b'\0'))
        if 'clock' in kv:
            e[4] = int(kv['clock'])
        if 'date' in kv:
            e[2] = int(kv['date'])
        if 'vmstate' in kv:
            v = int(kv['vmstate'])
            e[5] = v if v <= 0xffffffff else 0
            x[0:8] = struct.pack('>Q', v)
        if 'icount' in kv:
            x[16:24] = struct.pack('>q', int(kv['icount']))
        xs = int(kv.get('extra', len(e[6])))
        e[6] = bytes(x[:xs])
        if 'id' in kv:
            e[7] = kv['id'].encode()
        room = ((pos + (1 << cbits) - 1) >> cbits) << cbits
        out = bytearray()
        for (l1o, l1s, ds, dn, clk, vms, x, i, n) in ents:
            out += b'\0' * (((len(out) + 7) & ~7) - len(out))
            out += struct.pack('>QIHHIIQII', l1o, l1s, len(i), len(n), ds,
                               dn, clk, vms, len(x))
            out += x + i + n
        if len(out) > room:
            sys.exit('snaptab.py: the table would outgrow its clusters')
        f.seek(off)
        f.write(bytes(out))


main()
