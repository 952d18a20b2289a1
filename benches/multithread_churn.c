/*
 * multithread_churn: N threads, each with a private working set of `slots`
 * blocks of mixed sizes (log-uniform in [min, max], 16 B..4 KiB by default).
 * Each operation picks a random slot, verifies and frees its block and puts
 * a freshly allocated, patterned block of a new random size in its place.
 * All frees are local (same thread); this measures the per-thread fast paths
 * and their scaling under a realistic size mix.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("threads", 4, 2, 1, 1024),
    BP_INT("ops", 12000000, 100000, 1, 1e12), /* per thread */
    BP_INT("slots", 4096, 1024, 1, 1 << 24),  /* working set per thread */
    BP_INT("min", 16, 16, 1, 1 << 30),
    BP_INT("max", 4096, 4096, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    void *p;
    size_t size;
    uint64_t tag;
} slot_t;

typedef struct {
    _Alignas(64) int id;
    uint64_t ops;
    uint64_t nslots;
    size_t min, max;
    uint64_t seed;
    pthread_barrier_t *start;
    char pad[64];
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    rng_t rng = rng_seed(w->seed, (uint64_t)w->id);
    slot_t *s = bench_map(w->nslots * sizeof *s, 1);
    uint64_t tag = (uint64_t)w->id << 48;
    for (uint64_t i = 0; i < w->nslots; i++) {
        size_t n = rng_size_log(&rng, w->min, w->max);
        void *p = malloc(n);
        BENCH_CHECK_ALLOC(p, n);
        blk_fill(p, n, ++tag);
        s[i] = (slot_t){ p, n, tag };
    }
    pthread_barrier_wait(w->start);
    for (uint64_t i = 0; i < w->ops; i++) {
        slot_t *e = &s[rng_below(&rng, w->nslots)];
        blk_check(e->p, e->size, e->tag, "working-set block");
        free(e->p);
        size_t n = rng_size_log(&rng, w->min, w->max);
        void *p = malloc(n);
        BENCH_CHECK_ALLOC(p, n);
        blk_fill(p, n, ++tag);
        *e = (slot_t){ p, n, tag };
    }
    pthread_barrier_wait(w->start);
    for (uint64_t i = 0; i < w->nslots; i++) {
        blk_check(s[i].p, s[i].size, s[i].tag, "working-set block at exit");
        free(s[i].p);
    }
    bench_unmap(s, w->nslots * sizeof *s);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_parse("multithread_churn", argc, argv, params, sizeof params / sizeof params[0]);
    int threads = (int)bench_geti("threads");
    size_t min = (size_t)bench_geti("min"), max = (size_t)bench_geti("max");
    if (min > max)
        bench_usage("min (%zu) must not exceed max (%zu)", min, max);

    worker_t *w = bench_map((size_t)threads * sizeof *w, 1);
    pthread_t *tid = bench_map((size_t)threads * sizeof *tid, 1);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){ .id = i, .ops = (uint64_t)bench_geti("ops"), .nslots = (uint64_t)bench_geti("slots"),
                           .min = min, .max = max, .seed = (uint64_t)bench_geti("seed"), .start = &start };
        bench_thread_create(&tid[i], worker, &w[i]);
    }
    pthread_barrier_wait(&start); /* all working sets built */
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&start); /* all churn done */
    uint64_t t1 = now_ns();
    for (int i = 0; i < threads; i++)
        bench_thread_join(tid[i]);
    pthread_barrier_destroy(&start);

    bench_metric_throughput((double)bench_geti("ops") * threads, t1 - t0);
    bench_metric("peak_rss_kb", (double)peak_rss_kb());
    bench_metric("rss_final_kb", (double)rss_kb());
    bench_emit();
    return 0;
}
