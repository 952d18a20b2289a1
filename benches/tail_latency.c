/*
 * tail_latency: per-operation latency distribution under thread contention.
 *
 * `threads` threads (4 by default, so more threads than cores on a 2-core
 * machine: preemption shows up in the far tail, as it does in production).
 * Each keeps a working set of `slots` blocks of log-uniform sizes in
 * [min, max]; one operation frees a random slot's block and allocates a new
 * one of a new random size. The free+malloc pair is timed individually,
 * every operation is sampled into a per-thread array mapped up front, and
 * the merged samples give p50/p90/p99/p999/p9999 and max.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("threads", 4, 4, 1, 1024),
    BP_INT("ops", 3500000, 25000, 1, 1e10), /* timed operations per thread */
    BP_INT("warmup", 100000, 5000, 0, 1e12),
    BP_INT("slots", 2048, 512, 1, 1 << 24),
    BP_INT("min", 16, 16, 1, 1 << 30),
    BP_INT("max", 8192, 8192, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    void *p;
    size_t size;
    uint64_t tag;
} slot_t;

typedef struct {
    _Alignas(64) int id;
    uint64_t ops, warmup, nslots;
    size_t min, max;
    uint64_t seed;
    uint64_t *samples;
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
    uint64_t total = w->warmup + w->ops;
    for (uint64_t i = 0; i < total; i++) {
        slot_t *e = &s[rng_below(&rng, w->nslots)];
        size_t n = rng_size_log(&rng, w->min, w->max);
        blk_check(e->p, e->size, e->tag, "working-set block");
        uint64_t a = lat_begin();
        free(e->p);
        void *p = malloc(n);
        uint64_t b = lat_end();
        BENCH_CHECK_ALLOC(p, n);
        blk_fill(p, n, ++tag);
        *e = (slot_t){ p, n, tag };
        if (i >= w->warmup)
            w->samples[i - w->warmup] = b - a;
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
    bench_parse("tail_latency", argc, argv, params, sizeof params / sizeof params[0]);
    int threads = (int)bench_geti("threads");
    uint64_t ops = (uint64_t)bench_geti("ops");
    size_t min = (size_t)bench_geti("min"), max = (size_t)bench_geti("max");
    if (min > max)
        bench_usage("min (%zu) must not exceed max (%zu)", min, max);

    double overhead = lat_calibrate();
    size_t nsamples = (size_t)threads * ops;
    uint64_t *samples = bench_map(nsamples * sizeof(uint64_t), 1);
    worker_t *w = bench_map((size_t)threads * sizeof *w, 1);
    pthread_t *tid = bench_map((size_t)threads * sizeof *tid, 1);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){ .id = i, .ops = ops, .warmup = (uint64_t)bench_geti("warmup"),
                           .nslots = (uint64_t)bench_geti("slots"), .min = min, .max = max,
                           .seed = (uint64_t)bench_geti("seed"), .samples = samples + (size_t)i * ops,
                           .start = &start };
        bench_thread_create(&tid[i], worker, &w[i]);
    }
    pthread_barrier_wait(&start);
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&start);
    uint64_t t1 = now_ns();
    for (int i = 0; i < threads; i++)
        bench_thread_join(tid[i]);
    pthread_barrier_destroy(&start);

    uint64_t *scratch = bench_map(nsamples * sizeof(uint64_t), 0);
    /* wall time includes the warm-up operations and the timer reads */
    bench_metric_throughput((double)(ops + (uint64_t)bench_geti("warmup")) * threads, t1 - t0);
    lat_emit(samples, scratch, nsamples, "50,90,99,999,9999,max");
    lat_emit_timer(overhead);
    bench_emit();
    return 0;
}
