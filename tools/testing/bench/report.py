#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
#
# Turn the fio JSON files left by guest.sh into a table and result.json.
#   report.py RAW_DIR RESULT_JSON [KEY=VALUE ...]
# KEY=VALUE pairs (accelerator, host load, ...) are added to the "run"
# section.  With several rounds the median of each target's rounds is used.
# Thresholds: qimg should reach at least half of loop (within 2x) and at
# least qemu-nbd's figure (with NBD_PAR_TOLERANCE for run-to-run noise).
import json
import os
import statistics
import sys

WORKLOADS = [
    # name, direction, what the table shows
    ("randread-4k", "read", "iops"),
    ("randwrite-4k", "write", "iops"),
    ("seqread-64k", "read", "mbps"),
    ("seqwrite-64k", "write", "mbps"),
    ("alloc-randwrite-4k", "write", "iops"),
]
TARGETS = ("qimg", "loop", "nbd")
LOOP_MIN_RATIO = 0.5
NBD_PAR_TOLERANCE = 0.05


def load_run(path, direction):
    """One fio result: IOPS, MB/s, p99 completion latency (us)."""
    with open(path) as f:
        j = json.load(f)
    if j.get("jobs") is None or not j["jobs"]:
        raise ValueError("no jobs in " + path)
    d = j["jobs"][0][direction]
    p99 = d.get("clat_ns", {}).get("percentile", {}).get("99.000000")
    return {
        "iops": float(d["iops"]),
        "mbps": float(d["bw_bytes"]) / 1e6,
        "p99_us": float(p99) / 1000 if p99 is not None else None,
        "ios": int(d.get("total_ios", 0)),
    }


def median_of(runs, key):
    vals = [r[key] for r in runs if r[key] is not None]
    return statistics.median(vals) if vals else None


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: report.py RAW_DIR RESULT_JSON [KEY=VALUE ...]")
    raw, dest = sys.argv[1], sys.argv[2]
    run = {}
    meta_path = os.path.join(raw, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            run.update(json.load(f))
    for kv in sys.argv[3:]:
        k, _, v = kv.partition("=")
        run[k] = v
    errors = []
    err_path = os.path.join(raw, "errors.txt")
    if os.path.exists(err_path):
        with open(err_path) as f:
            errors = [l.strip() for l in f if l.strip()]

    files = os.listdir(raw) if os.path.isdir(raw) else []
    result = {"run": run, "errors": errors, "workloads": {}}
    rows = []
    for name, direction, unit in WORKLOADS:
        w = {"metric": unit, "targets": {}}
        for t in TARGETS:
            runs = []
            for fn in sorted(files):
                if fn.startswith(name + "." + t + ".") and fn.endswith(".json"):
                    try:
                        runs.append(load_run(os.path.join(raw, fn),
                                             direction))
                    except (OSError, ValueError, KeyError) as e:
                        errors.append("%s: unreadable fio output: %s"
                                      % (fn, e))
            if runs:
                w["targets"][t] = {
                    "iops": median_of(runs, "iops"),
                    "mbps": median_of(runs, "mbps"),
                    "p99_us": median_of(runs, "p99_us"),
                    "rounds": runs,
                }
        tg = w["targets"]

        def ratio(a, b):
            if a in tg and b in tg and tg[b][unit]:
                return tg[a][unit] / tg[b][unit]
            return None

        w["qimg_loop"] = ratio("qimg", "loop")
        w["qimg_nbd"] = ratio("qimg", "nbd")
        w["within_2x_of_loop"] = (None if w["qimg_loop"] is None
                                  else w["qimg_loop"] >= LOOP_MIN_RATIO)
        w["on_par_with_nbd"] = (None if w["qimg_nbd"] is None
                                else w["qimg_nbd"] >= 1 - NBD_PAR_TOLERANCE)
        result["workloads"][name] = w
        rows.append((name, unit, w))

    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    with open(dest + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(dest + ".tmp", dest)

    def cell(w, t):
        x = w["targets"].get(t)
        if not x:
            return "n/a"
        return "%.0f IOPS %.1f MB/s" % (x["iops"], x["mbps"])

    def rcell(r, ok):
        if r is None:
            return "n/a"
        return "%.2f%s" % (r, "" if ok else " !")

    hdr = ("workload", "qimg", "loop", "qemu-nbd", "qimg/loop", "qimg/nbd")
    table = [hdr]
    for name, unit, w in rows:
        table.append((name + (" (MB/s)" if unit == "mbps" else " (IOPS)"),
                      cell(w, "qimg"), cell(w, "loop"), cell(w, "nbd"),
                      rcell(w["qimg_loop"], w["within_2x_of_loop"]),
                      rcell(w["qimg_nbd"], w["on_par_with_nbd"])))
    widths = [max(len(r[i]) for r in table) for i in range(len(hdr))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(widths[k]) if k == 0 else c.rjust(widths[k])
                        for k, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * x for x in widths))
    print()
    info = ["%s=%s" % (k, run[k]) for k in
            ("accel", "kernel", "nproc", "size", "runtime", "rounds",
             "nbd_aio", "host_load", "git_head") if k in run]
    print("run: " + ", ".join(info))
    print("ratios compare the metric named in each row; '!' marks "
          "qimg < %.1fx loop or < %.2fx qemu-nbd"
          % (LOOP_MIN_RATIO, 1 - NBD_PAR_TOLERANCE))
    for e in errors:
        print("error: " + e)
    print("wrote " + dest)
    missing = [n for n, _, w in rows if len(w["targets"]) != len(TARGETS)]
    return 1 if missing or errors else 0


if __name__ == "__main__":
    sys.exit(main())
