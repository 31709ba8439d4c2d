#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
#
# Turn the fio JSON files left by guest.sh into result.json, result.md and
# PNG plots (gnuplot, when installed) in OUT_DIR.
#   report.py RAW_DIR OUT_DIR [KEY=VALUE ...]
# KEY=VALUE pairs (accelerator, host load, ...) are added to the "run"
# section.  Ratios are computed per round (both targets measured in the
# same round, minutes apart) and the median of those ratios is reported;
# absolute figures are the median of each target's rounds.  Under TCG only
# the ratios mean anything.
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

# name, metric the ratios use, what it shows
WORKLOADS = [
    ("randread-4k-qd1", "iops", "4k random read, QD1"),
    ("randread-4k-qd32", "iops", "4k random read, QD32"),
    ("randwrite-4k-qd1", "iops", "4k random write, QD1"),
    ("randwrite-4k-qd32", "iops", "4k random write, QD32"),
    ("randread-4k-4x8", "iops", "4k random read, 4 jobs x QD8"),
    ("randwrite-4k-4x8", "iops", "4k random write, 4 jobs x QD8"),
    ("seqread-1m", "mbps", "1M sequential read, QD4"),
    ("seqwrite-1m", "mbps", "1M sequential write, QD4"),
    ("randrw-70-30", "iops", "4k 70/30 random read/write, QD16"),
    ("alloc-4k", "iops", "allocating 4k random writes, empty image"),
    ("alloc-64k", "iops", "allocating 64k random writes, empty image"),
    ("alloc-seq-4k", "iops", "allocating 4k sequential writes, QD32, empty image"),
    ("cow-4k", "iops", "4k writes, empty overlay over a full backing file"),
    ("cow-4k-xl2", "iops", "the same, overlay with extended L2 entries"),
    ("fsync-empty-4k", "iops", "4k random write + fsync, empty image"),
    ("fsync-alloc-4k", "iops", "4k random write + fsync, allocated image"),
    ("ext4-fsync", "iops", "ext4 on the device, 2 jobs x 8 files, 4k + fsync"),
]
TARGETS = ("qimg", "qimgj", "loop", "nbd", "raw")
NAMES = {"qimg": "qimg", "qimgj": "qimg+journal", "loop": "loop",
         "nbd": "qemu-nbd", "raw": "raw file"}
# numerator, denominator
RATIOS = [("qimg", "loop"), ("qimg", "nbd"), ("qimgj", "qimg"),
          ("qimgj", "nbd"), ("loop", "raw"), ("qimg", "raw")]
CACHE = "cache-randread-4k"
FNAME = re.compile(r"^(?P<w>[a-z0-9-]+)\.(?P<t>[A-Za-z0-9-]+)\.(?P<r>\d+)\.json$")
TCG_NOTE = ("Under TCG (no KVM) absolute IOPS, MB/s and latencies mean "
            "nothing; only ratios measured in the same guest run do.")


def load_run(path):
    """One fio result: IOPS, MB/s, p50/p99 completion latency (us)."""
    with open(path) as f:
        j = json.load(f)
    if not j.get("jobs"):
        raise ValueError("no jobs")
    job = j["jobs"][0]
    iops = mbps = 0.0
    ios = 0
    lat = None
    for d in ("read", "write"):
        x = job.get(d) or {}
        if not x.get("total_ios"):
            continue
        iops += float(x["iops"])
        mbps += float(x["bw_bytes"]) / 1e6
        ios += int(x["total_ios"])
        pct = x.get("clat_ns", {}).get("percentile", {})
        # The larger direction's latencies (reads in the 70/30 mix).
        if lat is None or int(x["total_ios"]) > lat[0]:
            lat = (int(x["total_ios"]), pct.get("50.000000"),
                   pct.get("99.000000"))
    us = (lambda v: float(v) / 1000 if v is not None else None)
    return {"iops": iops, "mbps": mbps, "ios": ios,
            "p50_us": us(lat[1]) if lat else None,
            "p99_us": us(lat[2]) if lat else None}


def load_counters(path):
    c = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.strip().partition(" ")
                try:
                    c[k] = int(v)
                except ValueError:
                    pass
    except OSError:
        pass
    return c


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: report.py RAW_DIR OUT_DIR [KEY=VALUE ...]")
    raw, out = sys.argv[1], sys.argv[2]
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
            errors = [ln.strip() for ln in f if ln.strip()]

    # runs[workload][target][round] = fio figures
    runs = {}
    for fn in sorted(os.listdir(raw) if os.path.isdir(raw) else []):
        m = FNAME.match(fn)
        if not m or fn == "meta.json":
            continue
        p = os.path.join(raw, fn)
        try:
            r = load_run(p)
        except (OSError, ValueError, KeyError, TypeError) as e:
            errors.append("%s: unreadable fio output: %s" % (fn, e))
            continue
        c0, c1 = load_counters(p + ".jrnl0"), load_counters(p + ".jrnl1")
        if c1:
            r["journal"] = {k: c1[k] - c0.get(k, 0) for k in c1
                            if k.endswith(("commits", "flushes",
                                           "checkpoints", "written"))}
        runs.setdefault(m["w"], {}).setdefault(m["t"], {})[int(m["r"])] = r

    result = {"run": run, "note": TCG_NOTE, "errors": errors,
              "workloads": {}, "cache_scaling": None}
    for name, metric, desc in WORKLOADS:
        tg = runs.get(name, {})
        w = {"metric": metric, "description": desc, "targets": {},
             "ratios": {}}
        for t in TARGETS:
            rs = tg.get(t)
            if not rs:
                continue
            w["targets"][t] = {
                k: med(r[k] for r in rs.values())
                for k in ("iops", "mbps", "p50_us", "p99_us")}
            w["targets"][t]["rounds"] = [rs[k] for k in sorted(rs)]
        for a, b in RATIOS:
            per = [tg[a][k][metric] / tg[b][k][metric]
                   for k in sorted(tg.get(a, {}))
                   if k in tg.get(b, {}) and tg[b][k][metric]]
            if per:
                w["ratios"]["%s/%s" % (a, b)] = {"median": med(per),
                                                 "per_round": per}
        jr = [r["journal"] for r in tg.get("qimgj", {}).values()
              if "journal" in r]
        if jr:
            per = [j.get("journal_device_flushes", 0) /
                   j["journal_guest_flushes"] for j in jr
                   if j.get("journal_guest_flushes")]
            w["journal"] = {
                "per_round": jr,
                "barriers_per_guest_flush": med(per) if per else None}
        if w["targets"]:
            result["workloads"][name] = w

    # Subclusters: qimg on the extended-L2 overlay against qimg on the
    # plain one, per round (the target is 5x).
    xl, pl = runs.get("cow-4k-xl2", {}).get("qimg", {}), \
        runs.get("cow-4k", {}).get("qimg", {})
    per = [xl[k]["iops"] / pl[k]["iops"] for k in sorted(xl)
           if k in pl and pl[k]["iops"]]
    if per and "cow-4k-xl2" in result["workloads"]:
        result["workloads"]["cow-4k-xl2"]["ratios"]["qimg/qimg-no-xl2"] = {
            "median": med(per), "per_round": per}

    ctg = runs.get(CACHE, {})
    if ctg:
        def size_key(s):
            return float(s[:-1]) * {"K": 1, "M": 1024, "G": 1 << 20}.get(
                s[-1], 1 / 1024)
        sizes = sorted((t[3:] for t in ctg if t.startswith("l2-")),
                       key=size_key)
        big = "l2-" + sizes[-1]
        pts = []
        for s in sizes:
            rs = ctg["l2-" + s]
            per = [rs[k]["iops"] / ctg[big][k]["iops"] for k in rs
                   if k in ctg[big] and ctg[big][k]["iops"]]
            pts.append({"l2_cache": s, "l2_cache_kib": size_key(s),
                        "iops": med(r["iops"] for r in rs.values()),
                        "p99_us": med(r["p99_us"] for r in rs.values()),
                        "vs_largest": med(per), "per_round": per})
        result["cache_scaling"] = {"image": run.get("cache_vsize"),
                                   "points": pts}

    os.makedirs(out, exist_ok=True)
    plots = plot(result, out, errors)
    dest = os.path.join(out, "result.json")
    with open(dest + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(dest + ".tmp", dest)
    md = markdown(result, plots)
    with open(os.path.join(out, "result.md"), "w") as f:
        f.write(md)
    print(md)
    print("wrote %s, %s%s" % (dest, os.path.join(out, "result.md"),
                              "".join(", " + os.path.join(out, p)
                                      for p in plots)))
    want = {n for n, _, _ in WORKLOADS}
    missing = want - set(result["workloads"])
    if missing and not run.get("only"):
        print("bench: no results for: " + ", ".join(sorted(missing)))
    return 1 if errors else 0


def fmt(v, spec="%.2f"):
    return "n/a" if v is None else spec % v


def markdown(res, plots):
    run = res["run"]
    L = ["# qimg benchmark", "",
         "**%s**" % TCG_NOTE, "",
         "Generated by `make bench` (tools/testing/bench). Ratios are taken "
         "per round (targets interleaved, order rotated each round), then "
         "the median over rounds; absolute figures are medians of each "
         "target's rounds.", ""]
    L.append("| run | |")
    L.append("|---|---|")
    for k in ("accel", "host_cpu", "host_nproc", "host_kernel", "kernel",
              "cpu", "nproc", "fio", "qemu_nbd",
              "nbd_aio", "size", "runtime", "fsync_runtime", "rounds", "cache_vsize",
              "host_load", "host_load_end", "wall_seconds", "git_head"):
        if k in run:
            L.append("| %s | %s |" % (k, run[k]))
    L += ["", "Targets: qimg (journal off), qimg+journal (`attach "
          "--journal=on`), loop (`--direct-io=on`, raw file), qemu-nbd "
          "(`--cache=none --aio=%s`, same qcow2 image), raw file (fio "
          "with O_DIRECT on the raw file: the ceiling)."
          % run.get("nbd_aio", "native"), "", "## Ratios (median of per-round ratios)", ""]
    rn = ["%s/%s" % (a, b) for a, b in RATIOS]
    L.append("| workload | metric | " + " | ".join(
        r.replace("qimgj", "qimg+j").replace("nbd", "qemu-nbd")
        for r in rn) + " |")
    L.append("|---|---|" + "---|" * len(rn))
    for name, w in res["workloads"].items():
        L.append("| %s | %s | %s |" % (name, w["metric"], " | ".join(
            fmt(w["ratios"].get(r, {}).get("median")) for r in rn)))
    xw = res["workloads"].get("cow-4k-xl2", {}).get("ratios", {})
    if "qimg/qimg-no-xl2" in xw:
        L += ["", "Extended L2 (subclusters): qimg on cow-4k-xl2 / qimg on "
              "cow-4k, median of per-round ratios: **%s**."
              % fmt(xw["qimg/qimg-no-xl2"]["median"])]
    L += ["", "## Figures (medians; meaningless in absolute terms under TCG)",
          "", "| workload | target | IOPS | MB/s | p50 us | p99 us |",
          "|---|---|---|---|---|---|"]
    for name, w in res["workloads"].items():
        for t, x in w["targets"].items():
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                name, NAMES[t], fmt(x["iops"], "%.0f"),
                fmt(x["mbps"], "%.1f"), fmt(x["p50_us"], "%.0f"),
                fmt(x["p99_us"], "%.0f")))
    jw = [(n, w["journal"]) for n, w in res["workloads"].items()
          if "journal" in w]
    if jw:
        L += ["", "## Journal counters (qimg+journal runs, summed over a run, "
              "median over rounds)", "",
              "| workload | commits | device flushes | guest flushes | "
              "checkpoints | device barriers per guest flush |",
              "|---|---|---|---|---|---|"]
        for n, j in jw:
            def m(k):
                return fmt(med(r.get(k) for r in j["per_round"]), "%.0f")
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                n, m("journal_commits"), m("journal_device_flushes"),
                m("journal_guest_flushes"), m("journal_checkpoints"),
                fmt(j["barriers_per_guest_flush"])))
    cs = res.get("cache_scaling")
    if cs:
        L += ["", "## Cache scaling (qimg, 4k random read QD32 over a %s "
              "image, L2 tables all present)" % cs["image"], "",
              "| L2 cache | IOPS | p99 us | IOPS vs largest cache |",
              "|---|---|---|---|"]
        for p in cs["points"]:
            L.append("| %s | %s | %s | %s |" % (
                p["l2_cache"], fmt(p["iops"], "%.0f"),
                fmt(p["p99_us"], "%.0f"), fmt(p["vs_largest"])))
    if plots:
        L += ["", "Plots: " + ", ".join("`%s`" % p for p in plots)
              + " (in build/bench/)."]
    if res["errors"]:
        L += ["", "## Errors", ""] + ["- " + e for e in res["errors"]]
    return "\n".join(L) + "\n"


def plot(res, out, errors):
    """Write .dat/.gp files and render PNGs; returns the PNG names."""
    gp = shutil.which("gnuplot")
    made = []
    rn = ["qimg/loop", "qimg/nbd", "qimgj/qimg", "qimgj/nbd"]
    rows = [(n, w) for n, w in res["workloads"].items() if w["ratios"]]
    # gnuplot refuses a histogram column without a single point (an
    # --only run may have no loop or journal targets).
    rn = [r for r in rn if any(r in w["ratios"] for _, w in rows)]
    if not rn:
        rows = []
    jobs = []
    if rows:
        with open(os.path.join(out, "ratios.dat"), "w") as f:
            f.write("workload " + " ".join(rn) + "\n")
            for n, w in rows:
                f.write(n + " " + " ".join(
                    fmt(w["ratios"].get(r, {}).get("median"), "%.4f")
                    .replace("n/a", "NaN") for r in rn) + "\n")
        script = """set terminal pngcairo size 1400,600 noenhanced
set output '%s'
set title 'qimg ratios, median of per-round ratios (TCG: only ratios mean anything)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top left autotitle columnheader
set xtics rotate by -35
set grid ytics
set ylabel 'ratio'
set yrange [0:*]
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb 'black'
plot for [i=2:%d] '%s' using i:xtic(1)
""" % (os.path.join(out, "ratios.png"), len(rn) + 1,
       os.path.join(out, "ratios.dat"))
        jobs.append(("ratios", script))
    cs = res.get("cache_scaling")
    if cs and cs["points"]:
        with open(os.path.join(out, "cache.dat"), "w") as f:
            f.write("l2_kib iops vs_largest label\n")
            for p in cs["points"]:
                f.write("%g %s %s %s\n" % (
                    p["l2_cache_kib"], fmt(p["iops"], "%.1f").replace(
                        "n/a", "NaN"),
                    fmt(p["vs_largest"], "%.4f").replace("n/a", "NaN"),
                    p["l2_cache"]))
        script = """set terminal pngcairo size 900,550 noenhanced
set output '%s'
set title 'qimg 4k randread QD32 over a %s image vs L2 cache size (TCG)'
set logscale x 2
set offsets graph 0.05, graph 0.05, 0, 0
set xlabel 'L2 cache size'
set ylabel 'IOPS relative to the largest cache'
set yrange [0:*]
set grid
set key off
plot '%s' using 1:3:xtic(4) with linespoints lw 2 pt 7
""" % (os.path.join(out, "cache.png"), cs["image"],
       os.path.join(out, "cache.dat"))
        jobs.append(("cache", script))
    for name, script in jobs:
        with open(os.path.join(out, name + ".gp"), "w") as f:
            f.write(script)
        if not gp:
            continue
        r = subprocess.run([gp, os.path.join(out, name + ".gp")],
                           capture_output=True, text=True)
        if r.returncode == 0:
            made.append(name + ".png")
        else:
            errors.append("gnuplot %s.gp failed: %s"
                          % (name, r.stderr.strip().splitlines()[-1:]))
    if jobs and not gp:
        print("bench: gnuplot not installed (make deps): no PNG plots")
    return made


if __name__ == "__main__":
    sys.exit(main())
