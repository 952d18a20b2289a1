#!/usr/bin/env bash
# Instructions per malloc/free pair on aarch64, counted under qemu (emulated
# times mean nothing; instruction counts do not depend on the host).
#
#   benches/aarch64_instructions.sh [LIB_DIR]
#
# LIB_DIR holds the four libraries variants/build-aarch64 builds (default
# .build/aarch64/release). qemu runs alloc_free_loop with one guest
# instruction per translation block and logs every block it executes
# (-one-insn-per-tb -d exec,nochain), so the log has one line per executed
# instruction. The difference between 3000 and 1000 operations, divided by
# 2000, is what one more malloc/free pair costs, the bench's own loop
# included (as callgrind's count of `loop` is on x86-64). Repeatable within
# one instruction per pair (slow paths that read the clock vary a little).
# Needs qemu 8.0 or later
# ($AETHALLOC_QEMU_AARCH64 or qemu-aarch64 on PATH) and
# gcc-aarch64-linux-gnu.
set -euo pipefail
cd "$(dirname "$0")/.."
lib_dir=${1:-.build/aarch64/release}
qemu=${AETHALLOC_QEMU_AARCH64:-qemu-aarch64}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
aarch64-linux-gnu-gcc -O2 -o "$work/loop" benches/alloc_free_loop.c -lm

executed() { # cpu library ops
    local preload=()
    [ -n "$2" ] && preload=(-E "LD_PRELOAD=$2")
    "$qemu" -cpu "$1" -one-insn-per-tb -d exec,nochain -D "$work/trace" -L /usr/aarch64-linux-gnu \
        "${preload[@]}" "$work/loop" "ops=$3" warmup=0 > /dev/null
    wc -l < "$work/trace"
}
per_pair() { # cpu library
    local low high
    low=$(executed "$1" "$2" 1000)
    high=$(executed "$1" "$2" 3000)
    echo $(( (high - low) / 2000 ))
}

echo "| library | CPU | instructions per malloc/free pair |"
echo "|---|---|---:|"
echo "| glibc malloc | cortex-a72 | $(per_pair cortex-a72 "") |"
for lib in libaethalloc.so libaethalloc-simple.so libaethalloc-metrics.so libaethalloc-hardened.so; do
    echo "| $lib | cortex-a72 | $(per_pair cortex-a72 "$lib_dir/$lib") |"
done
echo "| libaethalloc-hardened.so, MTE sync | max | $(per_pair max "$lib_dir/libaethalloc-hardened.so") |"
