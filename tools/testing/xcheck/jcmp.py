#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Compare the JSON that qimgctl prints with what qemu-img prints.

usage: jcmp.py MODE EXPECTED ACTUAL
  info   qemu-img info --output=json  vs  qimgctl info --json
  map    qemu-img map --output=json   vs  qimgctl map --json
  check  qemu-img check --output=json vs  qimgctl check --json
  repair qemu-img check -r --output=json vs qimgctl check -r --json; as
         check, but where the repair put new metadata (image-end-offset)
         is only noted: a different, valid layout is allowed
  twin   qemu-img info of a qemu-img-made image vs one made by qimgctl
  layout qemu-img map --output=json of two images (both from qemu-img):
         the guest layout alone: host offsets left out, and "zero" of
         data extents too (it says where the host file has holes, which
         qemu looks at only when it guesses the image is preallocated),
         adjacent extents that then look alike merged
usage: jcmp.py get FILE KEY[.KEY...]    print one value (for the shell)
usage: jcmp.py --serve
  Read "MODE<TAB>EXPECTED<TAB>ACTUAL" lines (MODE may be "get") on stdin
  and answer each with its output followed by "@@END <status>": one
  python start-up for the whole suite instead of one per comparison.

EXPECTED is always qemu-img's side.  Exit status: 0 equal, 1 different,
2 a file is not valid JSON (or is missing).  Differences are printed one per
line (the suite indents them into its log as comments);
"note:" lines are observations that do not make the comparison fail.
"""
import json
import sys

MAX_LINES = 12

# Keys of `info` that qimgctl must print whenever qemu-img does.  The rest
# (e.g. a snapshot's "icount", "compression-type") are compared when both
# sides have them and only noted when qimgctl leaves them out.
INFO_REQUIRED = {
    'virtual-size', 'filename', 'cluster-size', 'format', 'actual-size',
    'dirty-flag', 'format-specific', 'backing-filename',
    'full-backing-filename', 'backing-filename-format', 'snapshots',
    'format-specific.type', 'format-specific.data',
    'format-specific.data.compat', 'format-specific.data.refcount-bits',
    'format-specific.data.corrupt', 'format-specific.data.lazy-refcounts',
    'format-specific.data.extended-l2', 'format-specific.data.bitmaps',
}

# Counters of `check`.  qemu-img leaves a counter out when it is zero, so a
# missing counter reads as 0; the key sets themselves are only noted.
CHECK_NUMBERS = (
    'check-errors', 'corruptions', 'leaks', 'corruptions-fixed',
    'leaks-fixed', 'image-end-offset', 'total-clusters',
    'allocated-clusters', 'fragmented-clusters', 'compressed-clusters',
)
CHECK_STRINGS = ('filename', 'format')


class Report:
    def __init__(self):
        self.diffs = []
        self.notes = []

    def diff(self, msg):
        self.diffs.append(msg)

    def note(self, msg):
        self.notes.append(msg)

    def emit(self):
        lines = self.diffs + ['note: ' + n for n in self.notes]
        for line in lines[:MAX_LINES]:
            print(line)
        if len(lines) > MAX_LINES:
            print('... %d more' % (len(lines) - MAX_LINES))
        return 1 if self.diffs else 0


class LoadError(Exception):
    pass


def load(path):
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except OSError as e:
        raise LoadError('cannot read %s: %s' % (path, e.strerror))
    if not text.strip():
        raise LoadError('%s: empty output' % path)
    try:
        return json.loads(text)
    except ValueError as e:
        raise LoadError('%s: not JSON (%s): %s'
                        % (path, e, text[:120].strip()))


def short(v):
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 160 else s[:157] + '...'


def walk(exp, act, path, rep, required, skip):
    """Compare the keys both sides know; report required keys missing."""
    if isinstance(exp, dict) and isinstance(act, dict):
        for k in exp:
            p = path + '.' + k if path else k
            if p in skip:
                continue
            if k not in act:
                if p in required:
                    rep.diff('%s: missing (qemu-img: %s)' % (p, short(exp[k])))
                else:
                    rep.note('%s: not printed (qemu-img: %s)'
                             % (p, short(exp[k])))
                continue
            walk(exp[k], act[k], p, rep, required, skip)
        for k in act:
            p = path + '.' + k if path else k
            if k not in exp and p not in skip:
                rep.note('%s: extra key (qimgctl: %s)' % (p, short(act[k])))
    elif isinstance(exp, list) and isinstance(act, list):
        if len(exp) != len(act):
            rep.diff('%s: %d entries, qemu-img has %d'
                     % (path, len(act), len(exp)))
        for i, (e, a) in enumerate(zip(exp, act)):
            walk(e, a, '%s[%d]' % (path, i), rep, required, skip)
    elif type(exp) is not type(act) or exp != act:
        # bool is a subclass of int: 'true' must not equal '1'.
        rep.diff('%s: qemu-img %s, qimgctl %s' % (path, short(exp), short(act)))


def cmp_info(exp, act, rep):
    if not isinstance(act, dict):
        rep.diff('qimgctl output is not a JSON object')
        return
    # Snapshot entries' keys sit under "snapshots[N]."; require them by
    # their un-indexed name.
    req = set(INFO_REQUIRED)
    for i in range(len(exp.get('snapshots', []))):
        for k in ('id', 'name', 'vm-state-size', 'date-sec', 'date-nsec',
                  'vm-clock-sec', 'vm-clock-nsec'):
            req.add('snapshots[%d].%s' % (i, k))
    bms = exp.get('format-specific', {}).get('data', {}).get('bitmaps', [])
    for i in range(len(bms)):
        for k in ('name', 'granularity', 'flags'):
            req.add('format-specific.data.bitmaps[%d].%s' % (i, k))
    walk(exp, act, '', rep, req, set())


def cmp_map(exp, act, rep):
    if not isinstance(act, list):
        rep.diff('qimgctl output is not a JSON list')
        return
    n = max(len(exp), len(act))
    shown = 0
    for i in range(n):
        e = exp[i] if i < len(exp) else None
        a = act[i] if i < len(act) else None
        if e == a and type(e) is type(a):
            continue
        rep.diff('[%d] qemu-img %s' % (i, short(e)))
        rep.diff('[%d] qimgctl  %s' % (i, short(a)))
        shown += 1
        if shown >= 3:
            break
    if len(exp) != len(act):
        rep.diff('qemu-img has %d extents, qimgctl %d' % (len(exp), len(act)))


def guest_layout(m):
    out = []
    for e in m:
        e = {k: v for k, v in e.items() if k != 'offset'}
        if e.get('data'):
            e.pop('zero', None)
        last = out[-1] if out else None
        if last and all(last.get(k) == e.get(k)
                        for k in ('depth', 'present', 'zero', 'data')) \
                and last.get('start', 0) + last.get('length', 0) == \
                e.get('start'):
            last['length'] += e.get('length', 0)
        else:
            out.append(e)
    return out


def cmp_layout(exp, act, rep):
    if not isinstance(exp, list) or not isinstance(act, list):
        rep.diff('a map is not a JSON list')
        return
    cmp_map(guest_layout(exp), guest_layout(act), rep)


def cmp_check(exp, act, rep, layout_free=()):
    if not isinstance(act, dict):
        rep.diff('qimgctl output is not a JSON object')
        return
    for k in CHECK_NUMBERS:
        e = exp.get(k, 0)
        a = act.get(k, 0)
        if type(a) is not int or e != a:
            msg = '%s: qemu-img %s, qimgctl %s' % (k, short(e), short(a))
            if k in layout_free and type(a) is int:
                rep.note(msg)
            else:
                rep.diff(msg)
    for k in CHECK_STRINGS:
        if exp.get(k) != act.get(k):
            rep.diff('%s: qemu-img %s, qimgctl %s'
                     % (k, short(exp.get(k)), short(act.get(k))))
    for k in sorted(set(exp) ^ set(act)):
        side = 'qemu-img' if k in exp else 'qimgctl'
        val = exp.get(k, act.get(k))
        rep.note('key %s printed only by %s (%s)' % (k, side, short(val)))


def cmp_repair(exp, act, rep):
    cmp_check(exp, act, rep, layout_free=('image-end-offset',))


def cmp_twin(exp, act, rep):
    # Both are qemu-img's own view; only the file names and the layout
    # dependent size may differ.
    skip = {'filename', 'actual-size'}
    walk(exp, act, '', rep, set(INFO_REQUIRED), skip)
    for k in sorted(set(act) - set(exp)):
        rep.diff('%s: only in the qimgctl-made image' % k)
    if exp.get('actual-size') != act.get('actual-size'):
        rep.note('actual-size: qemu-img-made %s, qimgctl-made %s'
                 % (exp.get('actual-size'), act.get('actual-size')))


def get(path, key):
    v = load(path)
    for part in key.split('.'):
        if isinstance(v, dict) and part in v:
            v = v[part]
        elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
            v = v[int(part)]
        else:
            return 1
    print(v if isinstance(v, str) else json.dumps(v))
    return 0


MODES = {'info': cmp_info, 'map': cmp_map, 'check': cmp_check,
         'repair': cmp_repair, 'twin': cmp_twin, 'layout': cmp_layout}


def run(mode, a, b):
    try:
        if mode == 'get':
            return get(a, b)
        if mode not in MODES:
            print('unknown mode %s' % mode)
            return 2
        exp = load(a)
        act = load(b)
        rep = Report()
        MODES[mode](exp, act, rep)
        return rep.emit()
    except LoadError as e:
        print(e)
        return 2


def serve():
    for line in sys.stdin:
        parts = line.rstrip('\n').split('\t')
        if len(parts) != 3:
            rc = 2
            print('bad request: %r' % line)
        else:
            rc = run(*parts)
        print('@@END %d' % rc, flush=True)
    return 0


def main():
    if len(sys.argv) == 2 and sys.argv[1] == '--serve':
        return serve()
    if len(sys.argv) == 4 and (sys.argv[1] in MODES or sys.argv[1] == 'get'):
        return run(*sys.argv[1:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main())
