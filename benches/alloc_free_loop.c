/*
 * alloc_free_loop: the allocator's fast path and nothing else.
 *
 * A single thread runs malloc(size); free() `ops` times after `warmup`
 * untimed pairs. The pointer escapes through a volatile sink so the compiler
 * cannot elide the pair. Meant for ns/op comparisons and for instruction
 * counts under callgrind (e.g. ops=1000000 warmup=0, then divide). Before
 * and after the loop, blocks of the same size are patterned and verified.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("ops", 200000000, 1000000, 1, 1e12),
    BP_INT("size", 64, 64, 1, 1ll << 32),
    BP_INT("warmup", 1000000, 10000, 0, 1e12),
};

static void *volatile sink;

static BENCH_NOINLINE void loop(uint64_t n, size_t size)
{
    for (uint64_t i = 0; i < n; i++) {
        void *p = malloc(size);
        if (BENCH_UNLIKELY(p == NULL))
            bench_fail("malloc(%zu) returned NULL", size);
        sink = p;
        free(p);
    }
}

/* Allocates a few blocks at once, patterns and verifies them. */
static void verify_blocks(size_t size)
{
    enum { N = 64 };
    void *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(size);
        BENCH_CHECK_ALLOC(b[i], size);
        blk_fill(b[i], size, (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < i; j++)
            if (b[i] == b[j])
                bench_fail("malloc returned %p twice", b[i]);
        blk_check(b[i], size, (uint64_t)i, "live block");
    }
    for (int i = 0; i < N; i++)
        free(b[i]);
}

int main(int argc, char **argv)
{
    bench_parse("alloc_free_loop", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t ops = (uint64_t)bench_geti("ops");
    size_t size = (size_t)bench_geti("size");

    verify_blocks(size);
    loop((uint64_t)bench_geti("warmup"), size);
    uint64_t t0 = now_ns();
    loop(ops, size);
    uint64_t t1 = now_ns();
    verify_blocks(size);

    bench_metric("ns_per_pair", round((double)(t1 - t0) / (double)ops * 1000) / 1000);
    bench_metric_throughput((double)ops, t1 - t0);
    bench_emit();
    return 0;
}
