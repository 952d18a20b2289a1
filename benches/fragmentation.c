/*
 * fragmentation: long single-thread run of mixed sizes and lifetimes.
 *
 * Each operation allocates one block and gives it a lifetime counted in
 * operations; blocks whose time has come are verified and freed after every
 * allocation (a min-heap keyed by death time). Sizes span 16 B..`max`
 * (1 MiB) with a geometric skew toward small sizes: a power-of-two band
 * 2^e..2^(e+1)-1 is drawn with weight `skew`^(e-4), then a size inside it.
 * Lifetimes: short_pct% (85) short (1..64 ops), medium_pct% (13) medium
 * (64..16384 ops), the rest long-lived (ops/4 .. 2*ops, so most survive to
 * the end and pin memory among the short-lived ones). Every 4 KiB page of a
 * block is touched, so RSS reflects what the program would really use.
 * Reports throughput and RSS at the start, peak, end of run, and after
 * freeing everything, plus the live (requested) bytes to compare against.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("ops", 6000000, 60000, 1, 1e10),
    BP_INT("min", 16, 16, 16, 1 << 30),
    BP_INT("max", 1 << 20, 1 << 20, 16, 1 << 30),
    BP_REAL("skew", 0.7, 0.7, 0.01, 1.0),
    BP_INT("short_pct", 85, 85, 0, 100),
    BP_INT("medium_pct", 13, 13, 0, 100),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    uint64_t death;
    uint64_t tag;
    void *p;
    size_t size;
} ent_t;

static ent_t *heap;
static size_t heap_n;

static void heap_push(ent_t e)
{
    size_t i = heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent].death <= e.death)
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = e;
}

static ent_t heap_pop(void)
{
    ent_t top = heap[0];
    ent_t last = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_n)
            break;
        if (c + 1 < heap_n && heap[c + 1].death < heap[c].death)
            c++;
        if (last.death <= heap[c].death)
            break;
        heap[i] = heap[c];
        i = c;
    }
    if (heap_n > 0)
        heap[i] = last;
    return top;
}

/* Writes the pattern and one word in every further 4 KiB page. */
static inline void touch_fill(unsigned char *p, size_t n, uint64_t tag)
{
    blk_fill(p, n, tag);
    for (size_t off = 4096; off + 16 <= n; off += 4096)
        memcpy(p + off, &tag, 8);
}

static inline void touch_check(const unsigned char *p, size_t n, uint64_t tag)
{
    blk_check(p, n, tag, "block at end of its lifetime");
    for (size_t off = 4096; off + 16 <= n; off += 65536) { /* sample every 16th page */
        uint64_t v;
        memcpy(&v, p + off, 8);
        if (v != tag)
            blk_fail_(p, n, tag, "block interior page");
    }
}

int main(int argc, char **argv)
{
    bench_parse("fragmentation", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t ops = (uint64_t)bench_geti("ops");
    size_t min = (size_t)bench_geti("min"), max = (size_t)bench_geti("max");
    double skew = bench_get("skew");
    int short_pct = (int)bench_geti("short_pct"), medium_pct = (int)bench_geti("medium_pct");
    if (min > max)
        bench_usage("min (%zu) must not exceed max (%zu)", min, max);
    if (short_pct + medium_pct > 100)
        bench_usage("short_pct + medium_pct must not exceed 100");
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);

    /* band weights, as cumulative thresholds on a 2^32 scale */
    unsigned lo_band = bench_log2_(min), hi_band = bench_log2_(max);
    unsigned nb = hi_band - lo_band + 1;
    uint64_t cum[64];
    double wsum = 0, w = 1;
    for (unsigned b = 0; b < nb; b++, w *= skew)
        wsum += w;
    double acc = 0;
    w = 1;
    for (unsigned b = 0; b < nb; b++, w *= skew) {
        acc += w;
        cum[b] = (uint64_t)(acc / wsum * 4294967296.0);
    }
    cum[nb - 1] = 4294967296ull;

    heap = bench_map((ops + 1) * sizeof(ent_t), 0);
    long rss_initial = rss_kb();
    uint64_t live = 0, live_peak = 0, frees = 0;

    uint64_t t0 = now_ns();
    for (uint64_t now = 0; now < ops; now++) {
        /* size */
        uint64_t x = rng_next(&rng) >> 32;
        unsigned b = 0;
        while (x >= cum[b])
            b++;
        unsigned e = lo_band + b;
        size_t blo = (size_t)1 << e, bhi = ((size_t)2 << e) - 1;
        if (blo < min) blo = min;
        if (bhi > max) bhi = max;
        size_t n = (size_t)rng_range(&rng, blo, bhi);
        /* lifetime */
        uint64_t kind = rng_below(&rng, 100), life;
        if (kind < (uint64_t)short_pct)
            life = rng_range(&rng, 1, 64);
        else if (kind < (uint64_t)(short_pct + medium_pct))
            life = rng_range(&rng, 64, 16384);
        else
            life = rng_range(&rng, ops / 4 + 1, 2 * ops + 1);

        unsigned char *p = malloc(n);
        BENCH_CHECK_ALLOC(p, n);
        touch_fill(p, n, now);
        heap_push((ent_t){ now + life, now, p, n });
        live += n;
        if (live > live_peak)
            live_peak = live;

        while (heap_n > 0 && heap[0].death <= now) {
            ent_t d = heap_pop();
            touch_check(d.p, d.size, d.tag);
            free(d.p);
            live -= d.size;
            frees++;
        }
    }
    uint64_t t1 = now_ns();

    long rss_end = rss_kb();
    long rss_peak = peak_rss_kb();
    uint64_t live_end = live, live_blocks_end = heap_n;
    while (heap_n > 0) {
        ent_t d = heap_pop();
        touch_check(d.p, d.size, d.tag);
        free(d.p);
        live -= d.size;
        frees++;
    }
    if (live != 0 || frees != ops)
        bench_fail("bookkeeping mismatch: %llu bytes live, %llu of %llu blocks freed", (unsigned long long)live,
                   (unsigned long long)frees, (unsigned long long)ops);
    long rss_final = rss_kb();

    bench_metric_throughput((double)ops, t1 - t0);
    bench_metric("rss_initial_kb", (double)rss_initial);
    bench_metric("rss_peak_kb", (double)rss_peak);
    bench_metric("rss_end_kb", (double)rss_end);
    bench_metric("rss_final_kb", (double)rss_final);
    bench_metric("live_peak_kb", (double)(live_peak / 1024));
    bench_metric("live_end_kb", (double)(live_end / 1024));
    bench_metric("live_blocks_end", (double)live_blocks_end);
    /* RSS the run added per KiB live at its end (1.0 = no overhead) */
    bench_metric("rss_over_live_end",
                 live_end ? round((double)(rss_end - rss_initial) / ((double)live_end / 1024) * 1000) / 1000 : 0);
    bench_emit();
    return 0;
}
