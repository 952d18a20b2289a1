#!/usr/bin/env python3
"""Runs the background-reclaim shapes (issue 13) against the peers, interleaved,
and prints the Markdown tables BENCHMARK.md quotes.

    python3 benches/reclaim_shapes.py [--runs 3] [--lib DIR|FILE] [--quick] [--only big_churn,...]

Shapes: idle_reclaim (large and partial), big_churn, handoff_mixed with 2
threads and with 8 threads and rarer large blocks. Allocators: glibc, the
three peers from their Debian paths, jemalloc with a background thread and
dirty_decay_ms:1000 (the closest peer design), libaethalloc.so, and
libaethalloc.so with AETHALLOC_BACKGROUND=0 (the inline policy). Every
allocator runs each shape once per round, rounds repeated --runs times, so
slow drift of a shared machine affects all alike. Each cell is the median of
the runs. A run that fails is reported and left out.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
PEERS = [
    ("glibc", None, {}),
    ("jemalloc", f"{MULTIARCH}/libjemalloc.so.2", {}),
    ("jemalloc-bg", f"{MULTIARCH}/libjemalloc.so.2", {"MALLOC_CONF": "background_thread:true,dirty_decay_ms:1000"}),
    ("mimalloc", f"{MULTIARCH}/libmimalloc.so.2", {}),
    ("tcmalloc", f"{MULTIARCH}/libtcmalloc_minimal.so.4", {}),
]
PEER_NAMES = [p[0] for p in PEERS]

# (label, program, arguments, metrics shown: (key, title, lower is better))
IDLE = [("rss_after_free_kb", "RSS after free (KiB)"), ("rss_1000ms_kb", "RSS at 1 s (KiB)"),
        ("rss_end_kb", "RSS at 2 s (KiB)")]
CHURN = [("ops_per_sec", "ops/s"), ("sys_seconds", "system s"), ("user_seconds", "user s"),
         ("minor_faults", "minor faults"), ("peak_rss_kb", "peak RSS (KiB)")]
SHAPES = [
    ("idle, large: 256 x 4 MiB freed", "idle_reclaim", ["shape=0"], IDLE + [("ms_to_target", "ms to 1.5x start")]),
    ("idle, partial: every other of 2M x 256 B + 2048 x 256 KiB freed", "idle_reclaim", ["shape=1"],
     IDLE + [("live_pages_kb", "pages holding live blocks (KiB)"), ("ms_to_pages_target", "ms to target")]),
    ("churn: 20 blocks of 5-25 MiB, 2000 calloc replacements", "big_churn", [], CHURN),
    ("churn: 2 threads, 16 B - 4 MiB, handed over", "handoff_mixed", ["threads=2"], CHURN),
    ("churn: 8 threads, rarer large blocks, handed over", "handoff_mixed", ["threads=8", "large_pct=1", "ops=250k"], CHURN),
]


def build(tmp, program):
    binary = os.path.join(tmp, program)
    if not os.path.exists(binary):
        subprocess.run(["cc", "-O2", "-pthread", "-o", binary, os.path.join(HERE, program + ".c"), "-lm"], check=True)
    return binary


def run(binary, args, library, env_extra):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.update(env_extra)
    if library:
        env["LD_PRELOAD"] = library
    p = subprocess.run([binary] + args, env=env, capture_output=True, text=True, timeout=900)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or len(lines) != 1:
        return None, f"exit {p.returncode}: {p.stderr.strip()[:200]}"
    return json.loads(lines[0])["metrics"], None


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lib", default=os.path.join(HERE, "..", ".build", "release"),
                    help="the libaethalloc.so to measure, or the directory holding it (default: .build/release)")
    ap.add_argument("--quick", action="store_true", help="quick=1 for every program (a smoke run)")
    ap.add_argument("--only", default="", help="comma-separated programs to run (default: all)")
    a = ap.parse_args()
    shapes = [sh for sh in SHAPES if not a.only or sh[1] in a.only.split(",")]
    lib = os.path.abspath(a.lib if os.path.isfile(a.lib) else os.path.join(a.lib, "libaethalloc.so"))
    if not os.path.isfile(lib):
        # ld.so only warns about a preload it cannot find and runs glibc's
        # malloc: the rows would be glibc's under AethAlloc's name.
        sys.exit(f"reclaim_shapes.py: no library at {lib} (build it with 'swift build -c release', or pass --lib)")
    allocators = [p for p in PEERS if p[1] is None or os.path.exists(p[1])]
    for p in PEERS:
        if p not in allocators:
            print(f"note: {p[0]} is not installed ({p[1]}), left out", file=sys.stderr)
    allocators += [("aethalloc", lib, {}), ("aethalloc, BACKGROUND=0", lib, {"AETHALLOC_BACKGROUND": "0"})]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.runs):
            for label, program, args, _ in shapes:
                binary = build(tmp, program)
                for name, library, env in allocators:
                    m, err = run(binary, args + (["quick=1"] if a.quick else []), library, env)
                    if err:
                        print(f"FAILED: {label} / {name}: {err}", file=sys.stderr)
                        continue
                    results.setdefault((label, name), []).append(m)
                    print(f"run {r + 1}/{a.runs}: {program} {' '.join(args)} / {name}", file=sys.stderr)
    out = []
    for label, program, args, metrics in shapes:
        cmd = f"./{program} {' '.join(args)}".rstrip()
        out.append(f"#### {label}\n\n`{cmd}`, median of {a.runs} interleaved runs\n")
        out.append("| allocator | " + " | ".join(t for _, t in metrics) + " |")
        out.append("|---|" + "---:|" * len(metrics))
        for name, _, _ in allocators:
            runs = results.get((label, name), [])
            cells = []
            for key, _ in metrics:
                vals = [m[key] for m in runs if key in m]
                cells.append(fmt(statistics.median(vals)) if vals else "–")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
