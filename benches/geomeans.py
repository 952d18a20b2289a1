#!/usr/bin/env python3
"""Geometric means of a results.json written by `aethalloc-cli bench`, over a
chosen set of scenarios and against a chosen pool of allocators, so that a run
can be compared with an older report on that report's terms.

    python3 benches/geomeans.py benchmarks/results.json \\
        --pool glibc,jemalloc,mimalloc,tcmalloc,magazine,simple,hardened \\
        --skip bignum,server_sim [--scenarios]

For each allocator of the run: the geometric mean over the scenarios of its
median primary metric against the best median of the pool (best/value for
throughput, value/best for time; 1.00 = the best everywhere), and the same for
peak RSS against the lowest median. The pool defaults to every allocator
without settings in brackets; an allocator outside the pool (say
`magazine[AETHALLOC_BACKGROUND=0]`) is measured against the pool plus itself,
so adding it to a run does not move the others' figures. --skip leaves out
benches by name (scenarios added since the report being compared with).
--scenarios prints each scenario's ratios as well.
"""
import argparse
import json
import math
import statistics

from check_targets import label, primary  # as check_targets.py reads them


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--pool", default="", help="comma-separated allocators the best is taken over")
    ap.add_argument("--skip", default="", help="comma-separated benches to leave out")
    ap.add_argument("--scenarios", action="store_true", help="print every scenario's ratios too")
    a = ap.parse_args()
    data = json.load(open(a.results))
    names = [x["name"] for x in data["allocators"]]
    pool = [p for p in a.pool.split(",") if p] or [n for n in names if "[" not in n]
    missing = [p for p in pool if p not in names]
    if missing:
        raise SystemExit(f"geomeans.py: not in this run: {', '.join(missing)}")
    skip = {s for s in a.skip.split(",") if s}

    rows = []
    for s in data["scenarios"]:
        if s["bench"] in skip:
            continue
        prim, higher = s["primaryMetric"], s["higherIsBetter"]
        by = {}
        for r in s["runs"]:
            if r["ok"]:
                by.setdefault(r["allocator"], []).append(r)
        if not all(p in by for p in pool):
            continue
        val = {n: statistics.median(primary(r, prim) for r in rs) for n, rs in by.items()}
        rss = {n: statistics.median(r["maxRSSKB"] for r in rs) for n, rs in by.items()}
        ratios = {}
        for n in by:
            group = pool + ([n] if n not in pool else [])
            best = (max if higher else min)(val[g] for g in group)
            lowest = min(rss[g] for g in group)
            speed = best / val[n] if higher else val[n] / best
            ratios[n] = (speed, rss[n] / lowest)
        params = next((r.get("params") or {} for r in s["runs"] if r.get("params")), {})
        rows.append((label(params, s["bench"]), ratios))

    print(f"{len(rows)} scenarios; best and lowest over: {', '.join(pool)}")
    print(f"{'allocator':40s} {'speed':>7s} {'RSS':>7s}")
    for n in names:
        rs = [r[n] for _, r in rows if n in r]
        if not rs:
            continue
        g = [math.exp(sum(math.log(x[i]) for x in rs) / len(rs)) for i in (0, 1)]
        print(f"{n:40s} {g[0]:7.3f} {g[1]:7.3f}" + (f"   ({len(rs)} scenarios)" if len(rs) != len(rows) else ""))
    if a.scenarios:
        print()
        for lab, r in rows:
            print(f"{lab:45s} " + "  ".join(f"{n} {v[0]:.2f}/{v[1]:.2f}" for n, v in r.items() if n not in ("glibc", "jemalloc")))


if __name__ == "__main__":
    main()
