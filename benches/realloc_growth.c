/*
 * realloc_growth: buffers that grow by small appends, like string builders,
 * vectors and network read buffers.
 *
 * `buffers` buffers grow in interleaved order (a random one per operation,
 * so a buffer cannot always be extended in place); each operation appends
 * step_min..step_max bytes with realloc and writes them. A buffer that
 * reaches `max_size` (4 MiB) is checked in full (time excluded from the
 * measure) and freed, and a new one starts in its place; the buffers left at
 * the end are checked in full too. After every realloc the kept content is spot-checked
 * (first and last 8 bytes of the old content and one random interior byte).
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("ops", 5000000, 200000, 1, 1e12),
    BP_INT("buffers", 4, 4, 1, 1 << 20),
    BP_INT("max_size", 4 << 20, 1 << 20, 16, 1ll << 40),
    BP_INT("step_min", 16, 16, 1, 1 << 30),
    BP_INT("step_max", 256, 256, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    unsigned char *p;
    size_t len;
    uint64_t id;
} buf_t;

static inline unsigned char pat(uint64_t id, size_t k)
{
    return (unsigned char)((k * 0x9Du) ^ (k >> 8) ^ (id * 0x3Bu));
}

static BENCH_NOINLINE void bad(const buf_t *b, size_t k, const char *what)
{
    bench_fail("%s: buffer %llu of %zu bytes at %p: byte %zu is %#x, expected %#x", what,
               (unsigned long long)b->id, b->len, (void *)b->p, k, b->p[k], pat(b->id, k));
}

static inline void check_byte(const buf_t *b, size_t k, const char *what)
{
    if (BENCH_UNLIKELY(b->p[k] != pat(b->id, k)))
        bad(b, k, what);
}

/* Every byte, in 4 KiB chunks whose comparison the compiler can vectorise;
 * the byte-by-byte pass only runs to report a mismatch. */
static void check_all(const buf_t *b)
{
    for (size_t base = 0; base < b->len; base += 4096) {
        size_t end = base + 4096 < b->len ? base + 4096 : b->len;
        unsigned char diff = 0;
        for (size_t k = base; k < end; k++)
            diff |= (unsigned char)(b->p[k] ^ pat(b->id, k));
        if (BENCH_UNLIKELY(diff))
            for (size_t k = base; k < end; k++)
                check_byte(b, k, "buffer check before free");
    }
}

int main(int argc, char **argv)
{
    bench_parse("realloc_growth", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t ops = (uint64_t)bench_geti("ops");
    uint64_t nbuf = (uint64_t)bench_geti("buffers");
    size_t max_size = (size_t)bench_geti("max_size");
    size_t step_min = (size_t)bench_geti("step_min"), step_max = (size_t)bench_geti("step_max");
    if (step_min > step_max)
        bench_usage("step_min (%zu) must not exceed step_max (%zu)", step_min, step_max);
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);

    buf_t *bufs = bench_map(nbuf * sizeof(buf_t), 1);
    uint64_t next_id = 0, completed = 0, moved = 0, bytes = 0, check_ns = 0;
    for (uint64_t i = 0; i < nbuf; i++)
        bufs[i].id = next_id++;

    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        buf_t *b = &bufs[rng_below(&rng, nbuf)];
        size_t step = (size_t)rng_range(&rng, step_min, step_max);
        size_t old = b->len, len = old + step;
        unsigned char *q = realloc(b->p, len);
        BENCH_CHECK_ALLOC(q, len);
        moved += (q != b->p && b->p != NULL);
        b->p = q;
        if (old > 0) {
            size_t probe = (size_t)rng_below(&rng, old);
            for (size_t k = 0; k < 8 && k < old; k++) {
                check_byte(b, k, "buffer head after realloc");
                check_byte(b, old - 1 - k, "buffer tail after realloc");
            }
            check_byte(b, probe, "buffer interior after realloc");
        }
        for (size_t k = old; k < len; k++)
            q[k] = pat(b->id, k);
        b->len = len;
        bytes += step;
        if (len >= max_size) {
            uint64_t c0 = now_ns();
            check_all(b);
            check_ns += now_ns() - c0;
            free(b->p);
            b->p = NULL;
            b->len = 0;
            b->id = next_id++;
            completed++;
        }
    }
    uint64_t t1 = now_ns() - check_ns; /* full checks are not part of the measure */
    long peak = peak_rss_kb();
    for (uint64_t i = 0; i < nbuf; i++) {
        check_all(&bufs[i]);
        free(bufs[i].p);
    }

    bench_metric_throughput((double)ops, t1 - t0);
    bench_metric("mb_per_sec", round((double)bytes / 1048576.0 / ((double)(t1 - t0) / 1e9) * 10) / 10);
    bench_metric("buffers_completed", (double)completed);
    bench_metric("moved_fraction", round((double)moved / (double)ops * 1e4) / 1e4);
    bench_metric("peak_rss_kb", (double)peak);
    bench_emit();
    return 0;
}
