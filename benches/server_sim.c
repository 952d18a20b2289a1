/*
 * server_sim: a long-running server's heap, where sizes reach 1 MiB.
 *
 * `slots` (10,000) slots hold one block each. Each of `ops` (1,000,000)
 * replacements picks a random slot, verifies and frees its block, and
 * allocates a new one of a new size in its place. Sizes: `big_pct`% (20) are
 * uniform in [`big_min`, `max`] (128 KiB..1 MiB: request and response
 * buffers, decoded images, batches), the rest log-uniform in
 * [`min`, `big_min`) (16 B..128 KiB: strings, nodes, small buffers). Every
 * block is patterned at both ends, and `touch`=1 also writes one word in
 * each 4 KiB page (as a program filling its buffers would); the default (0)
 * writes the ends only, so the allocator's own work dominates: finding,
 * splitting and merging runs for the blocks above the small size classes.
 * The timed phase is the replacements; user/system time and minor faults
 * are taken with getrusage over it. Peak RSS shows what the allocator keeps
 * around the ~1.1 GiB of address space the live blocks span.
 */
#include "bench_common.h"
#include <sys/resource.h>

static bench_param params[] = {
    BP_INT("slots", 10000, 2000, 1, 1 << 24),
    BP_INT("ops", 1000000, 50000, 1, 1e12),
    BP_INT("min", 16, 16, 1, 1ll << 36),
    BP_INT("big_min", 131072, 131072, 1, 1ll << 36),
    BP_INT("max", 1048576, 1048576, 1, 1ll << 36),
    BP_INT("big_pct", 20, 20, 0, 100),
    BP_INT("touch", 0, 0, 0, 1),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    unsigned char *p;
    size_t size;
    uint64_t tag;
} slot_t;

static size_t min_, big_min_, max_;
static uint64_t big_pct_;
static int touch_;

static slot_t new_block(rng_t *rng, uint64_t tag)
{
    size_t n = rng_chance(rng, big_pct_, 100) ? (size_t)rng_range(rng, big_min_, max_)
                                               : rng_size_log(rng, min_, big_min_ - 1);
    unsigned char *p = malloc(n);
    BENCH_CHECK_ALLOC(p, n);
    if (touch_)
        blk_fill_pages(p, n, tag);
    else
        blk_fill(p, n, tag);
    return (slot_t){ p, n, tag };
}

static void check_block(const slot_t *e, const char *what)
{
    if (touch_)
        blk_check_pages(e->p, e->size, e->tag, what);
    else
        blk_check(e->p, e->size, e->tag, what);
}

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

int main(int argc, char **argv)
{
    bench_parse("server_sim", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t slots = (uint64_t)bench_geti("slots"), ops = (uint64_t)bench_geti("ops");
    min_ = (size_t)bench_geti("min");
    big_min_ = (size_t)bench_geti("big_min");
    max_ = (size_t)bench_geti("max");
    big_pct_ = (uint64_t)bench_geti("big_pct");
    touch_ = (int)bench_geti("touch");
    if (!(min_ < big_min_ && big_min_ <= max_))
        bench_usage("need min (%zu) < big_min (%zu) <= max (%zu)", min_, big_min_, max_);
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);

    slot_t *s = bench_map(slots * sizeof *s, 1);
    uint64_t tag = 0;
    for (uint64_t i = 0; i < slots; i++)
        s[i] = new_block(&rng, ++tag);

    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        slot_t *e = &s[rng_below(&rng, slots)];
        check_block(e, "block before free");
        free(e->p);
        *e = new_block(&rng, ++tag);
    }
    uint64_t t1 = now_ns();
    getrusage(RUSAGE_SELF, &r1);
    long peak = peak_rss_kb();

    for (uint64_t i = 0; i < slots; i++) {
        check_block(&s[i], "block at the end");
        free(s[i].p);
    }
    bench_unmap(s, slots * sizeof *s);

    bench_metric_throughput((double)ops, t1 - t0);
    bench_metric("user_seconds", round((tv_s(r1.ru_utime) - tv_s(r0.ru_utime)) * 1e6) / 1e6);
    bench_metric("sys_seconds", round((tv_s(r1.ru_stime) - tv_s(r0.ru_stime)) * 1e6) / 1e6);
    bench_metric("minor_faults", (double)(r1.ru_minflt - r0.ru_minflt));
    bench_metric("peak_rss_kb", (double)peak);
    bench_emit();
    return 0;
}
