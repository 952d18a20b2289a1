/*
 * big_churn: churn of big zero-filled blocks, where the cost is page faults.
 *
 * `live` (20) slots hold blocks of sizes uniform in [`min`, `max`]
 * (5 MiB..25 MiB; quick=1: 1 MiB..4 MiB). Each of `ops` (2000; quick: 40)
 * replacements picks a random slot, verifies and frees its block, and
 * callocs a new one of a new random size: the new block must read zero at
 * its first and last 8 bytes and at one byte in every 64 KiB, then it is
 * filled (the pattern plus one 8-byte word in every further 4 KiB page, so
 * every page is written as a program using the block would). Freed memory
 * that the allocator gave back to the OS is faulted in again by that fill:
 * user/system CPU time and minor faults are measured with
 * getrusage(RUSAGE_SELF) over the timed phase (the replacements, verification
 * and fill included; building the initial slots and the final teardown
 * excluded).
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("live", 20, 20, 1, 1 << 20),
    BP_INT("ops", 2000, 40, 1, 1e12),
    BP_INT("min", 5242880, 1048576, 16, 1ll << 36),
    BP_INT("max", 26214400, 4194304, 16, 1ll << 36),
    BP_INT("seed", 1, 1, 0, 1e18),
};

static size_t min_, max_;

/* calloc'd memory must read zero: both ends and one byte per 64 KiB. */
static inline void zero_check(const unsigned char *p, size_t n)
{
    uint64_t a = 0, b = 0;
    size_t k = n < 8 ? n : 8;
    memcpy(&a, p, k);
    memcpy(&b, p + n - k, k);
    if (BENCH_UNLIKELY(a != 0 || b != 0))
        bench_fail("calloc(%zu) at %p is not zero-filled at its ends", n, (const void *)p);
    for (size_t off = 65536; off < n; off += 65536)
        if (BENCH_UNLIKELY(p[off] != 0))
            bench_fail("calloc(%zu) at %p is not zero-filled at offset %zu", n, (const void *)p, off);
}

static bench_slot new_block(rng_t *rng, uint64_t tag)
{
    size_t n = (size_t)rng_range(rng, min_, max_);
    unsigned char *p = calloc(1, n);
    BENCH_CHECK_ALLOC(p, n);
    zero_check(p, n);
    blk_fill_pages(p, n, tag);
    return (bench_slot){ p, n, tag };
}

static void check_block(const bench_slot *e, const char *what) { blk_check_pages(e->p, e->size, e->tag, what); }

int main(int argc, char **argv)
{
    bench_parse("big_churn", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t live = (uint64_t)bench_geti("live"), ops = (uint64_t)bench_geti("ops");
    min_ = (size_t)bench_geti("min");
    max_ = (size_t)bench_geti("max");
    if (min_ > max_)
        bench_usage("min (%zu) must not exceed max (%zu)", min_, max_);
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);
    bench_churn_result r = bench_slot_churn(live, ops, &rng, new_block, check_block);
    bench_metric_churn(&r, ops);
    bench_emit();
    return 0;
}
