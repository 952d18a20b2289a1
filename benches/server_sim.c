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

static size_t min_, big_min_, max_;
static uint64_t big_pct_;
static int touch_;

static bench_slot new_block(rng_t *rng, uint64_t tag)
{
    size_t n = rng_chance(rng, big_pct_, 100) ? (size_t)rng_range(rng, big_min_, max_)
                                               : rng_size_log(rng, min_, big_min_ - 1);
    unsigned char *p = malloc(n);
    BENCH_CHECK_ALLOC(p, n);
    if (touch_)
        blk_fill_pages(p, n, tag);
    else
        blk_fill(p, n, tag);
    return (bench_slot){ p, n, tag };
}

static void check_block(const bench_slot *e, const char *what)
{
    if (touch_)
        blk_check_pages(e->p, e->size, e->tag, what);
    else
        blk_check(e->p, e->size, e->tag, what);
}

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
    bench_churn_result r = bench_slot_churn(slots, ops, &rng, new_block, check_block);
    bench_metric_churn(&r, ops);
    bench_emit();
    return 0;
}
