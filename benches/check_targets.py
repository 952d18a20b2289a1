#!/usr/bin/env python3
"""Checks the performance targets (issue 8) against a results.json written by
`aethalloc-cli bench`, and prints the table the README and BENCHMARK.md quote.

    python3 benches/check_targets.py benchmarks/results.json

Per scenario: the default variant's throughput over the best peer's (glibc,
jemalloc, mimalloc, tcmalloc; target >= 0.9), its peak RSS over the lowest
peer's (target <= 1.1), the same for the simple variant, the hardened
variant's throughput over the default's, and the default over mimalloc.
All figures are medians of the recorded runs.
"""
import json
import math
import statistics
import sys

PEERS = ["glibc", "jemalloc", "mimalloc", "tcmalloc"]


def label(params, bench):
    parts = [bench]
    for key in ("threads", "concurrent", "producers", "consumers"):
        if key in params:
            parts.append(f"{key}={params[key]}")
    return " ".join(parts)


def primary(run, prim):
    """A run's primary metric; `wall_seconds` (benches that report neither
    throughput nor time, such as idle_reclaim) is the process's wall time."""
    if prim == "wall_seconds" and prim not in run["metrics"]:
        return run["wallSeconds"]
    return run["metrics"][prim]


def main(path):
    data = json.load(open(path))
    rows = []
    for s in data["scenarios"]:
        prim, higher = s["primaryMetric"], s["higherIsBetter"]
        by = {}
        for r in s["runs"]:
            if r["ok"]:
                by.setdefault(r["allocator"], []).append(r)
        if "magazine" not in by or not all(p in by for p in PEERS):
            continue
        val = {a: statistics.median(primary(r, prim) for r in rs) for a, rs in by.items()}
        rss = {a: statistics.median(r["maxRSSKB"] for r in rs) for a, rs in by.items()}

        def speed(a, ref):  # > 1 means `a` is faster than `ref`
            return val[a] / ref if higher else ref / val[a]

        best = max(val[p] for p in PEERS) if higher else min(val[p] for p in PEERS)
        low = min(rss[p] for p in PEERS)
        row = {
            "scenario": label(s["runs"][0]["params"], s["bench"]),
            "magazine/best peer": speed("magazine", best),
            "magazine RSS/lowest peer": rss["magazine"] / low,
            "simple/best peer": speed("simple", best) if "simple" in val else float("nan"),
            "simple RSS/lowest peer": rss["simple"] / low if "simple" in rss else float("nan"),
            "hardened/magazine": speed("hardened", val["magazine"]) if "hardened" in val else float("nan"),
            "magazine/mimalloc": speed("magazine", val["mimalloc"]),
        }
        rows.append(row)
    cols = list(rows[0].keys())
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join([r["scenario"]] + [f"{r[c]:.2f}" for c in cols[1:]]) + " |")

    def geo(key):
        xs = [r[key] for r in rows if not math.isnan(r[key])]
        # nan when the run had no such allocator (a targeted run without hardened)
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else math.nan

    print()
    print(f"- geometric mean, magazine throughput / mimalloc: {geo('magazine/mimalloc'):.2f} (target >= 1.0)")
    print(f"- geometric mean, hardened throughput / magazine: {geo('hardened/magazine'):.2f}")
    slow = [r["scenario"] for r in rows if r["magazine/best peer"] < 0.9]
    fat = [f"{r['scenario']} ({r['magazine RSS/lowest peer']:.2f})" for r in rows if r["magazine RSS/lowest peer"] > 1.1]
    print(f"- below 0.9x the best peer's throughput: {', '.join(slow) or 'none'}")
    print(f"- peak RSS above 1.1x the lowest peer's: {', '.join(fat) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results.json")
