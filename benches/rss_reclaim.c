/*
 * rss_reclaim: does freed memory go back to the operating system, and when?
 *
 * Allocates `blocks` blocks of `size` bytes (4M x 256 B = 1 GiB by default;
 * quick=1 uses 256K blocks = 64 MiB), chained into a list through the blocks
 * themselves so that no bookkeeping memory is needed, then verifies and frees
 * them all in allocation order. It then makes no allocator call at all and
 * samples RSS every `interval_ms` for `samples` samples (100 ms x 10 = 1 s by
 * default; 10 ms x 10 under quick=1), calls malloc_trim(0) and samples RSS
 * once more. Metric rss_<T>ms_kb is the RSS T ms after the last free.
 */
#include "bench_common.h"
#include <malloc.h>

static bench_param params[] = {
    BP_INT("blocks", 4194304, 262144, 1, 1e10),
    BP_INT("size", 256, 256, 24, 1 << 30),
    BP_INT("interval_ms", 100, 10, 1, 10000),
    BP_INT("samples", 10, 10, 1, 100),
    BP_INT("seed", 1, 1, 0, 1e18),
};

int main(int argc, char **argv)
{
    bench_parse("rss_reclaim", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t blocks = (uint64_t)bench_geti("blocks");
    size_t size = (size_t)bench_geti("size");
    uint64_t interval_ns = (uint64_t)bench_geti("interval_ms") * 1000000ull;
    int nsamples = (int)bench_geti("samples");
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);
    uint64_t salt = rng_next(&rng);

    long rss_initial = rss_kb();
    /* block layout: [0,8) pattern head, [8,16) next pointer, [size-8,size) pattern tail */
    unsigned char *first = NULL, *last = NULL;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < blocks; i++) {
        unsigned char *p = malloc(size);
        BENCH_CHECK_ALLOC(p, size);
        blk_fill(p, size, i ^ salt);
        memset(p + 8, 0, 8);
        if (last)
            memcpy(last + 8, &p, 8);
        else
            first = p;
        last = p;
    }
    uint64_t t1 = now_ns();
    long rss_after_alloc = rss_kb();

    uint64_t i = 0;
    for (unsigned char *p = first; p != NULL; i++) {
        unsigned char *next;
        memcpy(&next, p + 8, 8);
        if (i >= blocks)
            bench_fail("block list longer than %llu blocks", (unsigned long long)blocks);
        blk_check(p, size, i ^ salt, "block before free");
        free(p);
        p = next;
    }
    uint64_t t2 = now_ns();
    if (i != blocks)
        bench_fail("block list holds %llu blocks, %llu allocated", (unsigned long long)i, (unsigned long long)blocks);

    long rss_after_free = rss_kb();
    long rss_peak = peak_rss_kb();
    if (rss_after_alloc > rss_peak)
        rss_peak = rss_after_alloc;
    long sample[100];
    for (int k = 0; k < nsamples; k++) {
        sleep_until_ns(t2 + (uint64_t)(k + 1) * interval_ns);
        sample[k] = rss_kb();
    }
    malloc_trim(0);
    long rss_after_trim = rss_kb();

    bench_metric("alloc_seconds", round((double)(t1 - t0) / 1e3) / 1e6);
    bench_metric("free_seconds", round((double)(t2 - t1) / 1e3) / 1e6);
    bench_metric("ops_per_sec", round(2.0 * (double)blocks / ((double)(t2 - t0 ? t2 - t0 : 1) / 1e9)));
    bench_metric("rss_initial_kb", (double)rss_initial);
    bench_metric("rss_after_alloc_kb", (double)rss_after_alloc);
    bench_metric("rss_peak_kb", (double)rss_peak);
    bench_metric("rss_after_free_kb", (double)rss_after_free);
    int k1s = -1;
    for (int k = 0; k < nsamples; k++) {
        char name[48];
        uint64_t ms = (uint64_t)(k + 1) * (interval_ns / 1000000ull);
        snprintf(name, sizeof name, "rss_%llums_kb", (unsigned long long)ms);
        bench_metric(name, (double)sample[k]);
        if (ms == 1000)
            k1s = k;
    }
    bench_metric("rss_after_trim_kb", (double)rss_after_trim);
    /* only when the schedule has a sample at 1 s (the default one does) */
    if (k1s >= 0)
        bench_metric("reclaimed_fraction_1s", round((1.0 - (double)sample[k1s] / (double)rss_peak) * 1e4) / 1e4);
    bench_metric("reclaimed_fraction_end",
                 round((1.0 - (double)sample[nsamples - 1] / (double)rss_peak) * 1e4) / 1e4);
    bench_metric("reclaimed_fraction_trim", round((1.0 - (double)rss_after_trim / (double)rss_peak) * 1e4) / 1e4);
    bench_emit();
    return 0;
}
