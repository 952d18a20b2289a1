/*
 * idle_reclaim: does freed memory go back to the operating system while the
 * program is idle, with no further allocator call?
 *
 * shape=0 (large, the default): allocates `large_blocks` blocks of
 * `large_size` bytes (256 x 4 MiB = 1 GiB; quick=1: 32 blocks), writes the
 * pattern and one byte in every 4 KiB page of each, verifies and frees them
 * all.
 *
 * shape=1 (partial): allocates `small_blocks` blocks of `small_size` bytes
 * (2M x 256 B) and `medium_blocks` blocks of `medium_size` bytes
 * (2048 x 256 KiB), about 1 GiB in all, interleaved (one medium block after
 * every small_blocks/medium_blocks small ones, so both kinds share the heap's
 * time order), touches every page, then verifies and frees every other block
 * of both kinds (in allocation order). The rest stays live and is verified
 * and freed after the measurement.
 *
 * Then, in both shapes, the program makes no allocator call at all: it
 * samples RSS every `interval_ms` (50) until `idle_ms` (2000; quick: 1200)
 * have passed since the last free (a sample at or after 1000 ms always
 * exists: idle_ms >= 1000 and the last sample is at or after idle_ms).
 * ms_to_target is the time of the first sample (0 = right after the last
 * free) at which RSS is at or below the target, or -1 if no sample is:
 *   large:   target = `target` (1.5) x rss_initial;
 *   partial: target = rss_initial + `live_target` (1.05) x live bytes.
 * In the partial shape the freed small blocks share their pages with live
 * ones, so that target is out of reach of any allocator in the default
 * shape; live_pages_kb (every 4 KiB page that holds a byte of a live block,
 * computed from the block addresses after the idle phase) is the floor, and
 * ms_to_pages_target uses rss_initial + live_pages + (live_target - 1) x
 * live, the "live x 1.05 + what cannot be returned because its page
 * still holds a live block".
 *
 * Bookkeeping (pointer arrays, the sample array) is mapped and touched before
 * rss_initial is read, so it is part of the baseline.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("shape", 0, 0, 0, 1), /* 0 = large, 1 = partial */
    BP_INT("large_blocks", 256, 32, 1, 1 << 24),
    BP_INT("large_size", 4194304, 4194304, 16, 1ll << 36),
    BP_INT("small_blocks", 2097152, 65536, 0, 1ll << 32),
    BP_INT("small_size", 256, 256, 16, 1 << 30),
    BP_INT("medium_blocks", 2048, 64, 1, 1 << 24),
    BP_INT("medium_size", 262144, 262144, 16, 1ll << 36),
    BP_INT("interval_ms", 50, 50, 1, 10000),
    BP_INT("idle_ms", 2000, 1200, 1000, 600000),
    BP_REAL("target", 1.5, 1.5, 1.0, 1000),
    BP_REAL("live_target", 1.05, 1.05, 1.0, 1000),
    BP_INT("seed", 1, 1, 0, 1e18),
};

/* Pattern plus one word at every 4 KiB offset from the start, so every page
 * of the block is written (the tail word covers a last partial page). */
/*
 * The merged allocation order of the partial shape: small blocks, with medium
 * block m right after small block (m+1)*S/M - 1 (S, M: the block counts).
 */
typedef struct {
    uint64_t s, m, S, M;
} order_t;

static int order_next(order_t *o, int *medium, uint64_t *idx)
{
    if (o->m >= o->M)
        return 0;
    uint64_t upto = (uint64_t)((unsigned __int128)(o->m + 1) * o->S / o->M);
    if (o->s < upto) {
        *medium = 0;
        *idx = o->s++;
    } else {
        *medium = 1;
        *idx = o->m++;
    }
    return 1;
}

static long ms_to(const long *sample, uint64_t nsamples, long after_free, uint64_t interval_ms, double target_kb)
{
    if ((double)after_free <= target_kb)
        return 0;
    for (uint64_t k = 0; k < nsamples; k++)
        if ((double)sample[k] <= target_kb)
            return (long)((k + 1) * interval_ms);
    return -1;
}

int main(int argc, char **argv)
{
    bench_parse("idle_reclaim", argc, argv, params, sizeof params / sizeof params[0]);
    int shape = (int)bench_geti("shape");
    uint64_t interval_ms = (uint64_t)bench_geti("interval_ms");
    uint64_t idle_ms = (uint64_t)bench_geti("idle_ms");
    uint64_t nsamples = (idle_ms + interval_ms - 1) / interval_ms;
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);
    uint64_t salt = rng_next(&rng);

    long *sample = bench_map(nsamples * sizeof *sample, 1);
    uint64_t t_free;
    long rss_initial, rss_after_alloc, rss_after_free;
    uint64_t live_bytes = 0;

    /* partial shape state */
    uint64_t S = 0, M = 0;
    size_t ssize = 0, msize = 0;
    unsigned char **sp = NULL, **mp = NULL;

    if (shape == 0) {
        uint64_t nb = (uint64_t)bench_geti("large_blocks");
        size_t size = (size_t)bench_geti("large_size");
        unsigned char **p = bench_map(nb * sizeof *p, 1);
        rss_initial = rss_kb();
        for (uint64_t i = 0; i < nb; i++) {
            p[i] = malloc(size);
            BENCH_CHECK_ALLOC(p[i], size);
            blk_fill_pages(p[i], size, i ^ salt);
        }
        rss_after_alloc = rss_kb();
        for (uint64_t i = 0; i < nb; i++) {
            blk_check_pages(p[i], size, i ^ salt, "large block before free");
            free(p[i]);
        }
        t_free = now_ns();
        rss_after_free = rss_kb();
    } else {
        S = (uint64_t)bench_geti("small_blocks");
        M = (uint64_t)bench_geti("medium_blocks");
        ssize = (size_t)bench_geti("small_size");
        msize = (size_t)bench_geti("medium_size");
        sp = bench_map((S ? S : 1) * sizeof *sp, 1);
        mp = bench_map(M * sizeof *mp, 1);
        uint64_t mtag = salt ^ (1ull << 62);
        rss_initial = rss_kb();
        order_t o = { 0, 0, S, M };
        int med;
        uint64_t i;
        while (order_next(&o, &med, &i)) {
            unsigned char **slot = med ? &mp[i] : &sp[i];
            size_t n = med ? msize : ssize;
            *slot = malloc(n);
            BENCH_CHECK_ALLOC(*slot, n);
            blk_fill_pages(*slot, n, i ^ (med ? mtag : salt));
        }
        rss_after_alloc = rss_kb();
        o = (order_t){ 0, 0, S, M };
        while (order_next(&o, &med, &i)) {
            if (!(i & 1))
                continue;
            unsigned char **slot = med ? &mp[i] : &sp[i];
            blk_check_pages(*slot, med ? msize : ssize, i ^ (med ? mtag : salt),
                        med ? "medium block before free" : "small block before free");
            free(*slot);
            *slot = NULL;
        }
        t_free = now_ns();
        rss_after_free = rss_kb();
        live_bytes = (S - S / 2) * ssize + (M - M / 2) * msize;
    }

    /* idle: no allocator call from here until the samples are taken */
    long rss_peak = peak_rss_kb();
    if (rss_after_alloc > rss_peak)
        rss_peak = rss_after_alloc;
    for (uint64_t k = 0; k < nsamples; k++) {
        sleep_until_ns(t_free + (k + 1) * interval_ms * 1000000ull);
        sample[k] = rss_kb();
    }
    uint64_t k1s = (1000 + interval_ms - 1) / interval_ms - 1; /* first sample at or after 1000 ms */
    long rss_1000ms = sample[k1s], rss_end = sample[nsamples - 1];

    bench_metric("rss_initial_kb", (double)rss_initial);
    bench_metric("rss_peak_kb", (double)rss_peak);
    bench_metric("rss_after_free_kb", (double)rss_after_free);
    bench_metric("rss_1000ms_kb", (double)rss_1000ms);
    bench_metric("rss_end_kb", (double)rss_end);
    if (shape == 0) {
        double target_kb = bench_get("target") * (double)rss_initial;
        bench_metric("target_kb", round(target_kb));
        bench_metric("ms_to_target", (double)ms_to(sample, nsamples, rss_after_free, interval_ms, target_kb));
    } else {
        double live_kb = (double)live_bytes / 1024;
        double lt = bench_get("live_target");
        /* pages holding a byte of a live block, from their addresses: mapped
         * after the idle phase, so this does not disturb it */
        uint64_t mpages = (msize + 4095) / 4096 + 1, spages = (ssize + 4095) / 4096 + 1;
        uint64_t cap = (S - S / 2) * spages + (M - M / 2) * mpages;
        uint64_t *pg = bench_map(cap * sizeof *pg, 0), *tmp = bench_map(cap * sizeof *tmp, 0);
        uint64_t np = 0;
        for (uint64_t i = 0; i < S; i += 2)
            for (uintptr_t a = (uintptr_t)sp[i] >> 12; a <= ((uintptr_t)sp[i] + ssize - 1) >> 12; a++)
                pg[np++] = a;
        for (uint64_t i = 0; i < M; i += 2)
            for (uintptr_t a = (uintptr_t)mp[i] >> 12; a <= ((uintptr_t)mp[i] + msize - 1) >> 12; a++)
                pg[np++] = a;
        bench_sort_u64(pg, tmp, np);
        uint64_t distinct = 0;
        for (uint64_t k = 0; k < np; k++)
            if (k == 0 || pg[k] != pg[k - 1])
                distinct++;
        bench_unmap(pg, cap * sizeof *pg);
        bench_unmap(tmp, cap * sizeof *tmp);
        double live_pages_kb = (double)distinct * 4;
        double target_kb = (double)rss_initial + lt * live_kb;
        double pages_target_kb = (double)rss_initial + live_pages_kb + (lt - 1) * live_kb;

        bench_metric("live_kb", round(live_kb));
        bench_metric("live_pages_kb", live_pages_kb);
        bench_metric("rss_1000ms_over_live", round((double)(rss_1000ms - rss_initial) / live_kb * 1000) / 1000);
        bench_metric("rss_1000ms_over_live_pages",
                     round((double)(rss_1000ms - rss_initial) / live_pages_kb * 1000) / 1000);
        bench_metric("target_kb", round(target_kb));
        bench_metric("ms_to_target", (double)ms_to(sample, nsamples, rss_after_free, interval_ms, target_kb));
        bench_metric("pages_target_kb", round(pages_target_kb));
        bench_metric("ms_to_pages_target",
                     (double)ms_to(sample, nsamples, rss_after_free, interval_ms, pages_target_kb));

        /* the survivors must be intact; then free them */
        uint64_t mtag = salt ^ (1ull << 62), freed = 0;
        order_t o = { 0, 0, S, M };
        int med;
        uint64_t i;
        while (order_next(&o, &med, &i)) {
            unsigned char *p = med ? mp[i] : sp[i];
            if (i & 1) {
                if (p != NULL)
                    bench_fail("%s block %llu was not freed", med ? "medium" : "small", (unsigned long long)i);
                continue;
            }
            blk_check_pages(p, med ? msize : ssize, i ^ (med ? mtag : salt),
                        med ? "live medium block after idling" : "live small block after idling");
            free(p);
            freed++;
        }
        if (freed != (S - S / 2) + (M - M / 2))
            bench_fail("%llu live blocks freed at the end, expected %llu", (unsigned long long)freed,
                       (unsigned long long)((S - S / 2) + (M - M / 2)));
    }
    bench_emit();
    return 0;
}
