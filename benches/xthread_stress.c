/*
 * xthread_stress: generations of threads whose objects outlive them.
 *
 * `threads` rows (16 by default: many more threads than cores), each served
 * by a succession of `generations` threads. The thread of generation g for
 * a row first verifies and frees what generation g-1 left in the row
 * (memory of a thread that has exited), then allocates `objects` objects of
 * log-uniform sizes in [min, max]; it frees (100 - keep_pct)% of them
 * itself, in random order, before exiting, and leaves the rest in the row
 * for its successor. Successive generations overlap: a row's next thread
 * starts as soon as that row's previous thread has been joined, while the
 * other rows are still running. Stresses orphaned thread caches and remote
 * frees into the heaps of dead threads.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("threads", 16, 8, 1, 4096),
    BP_INT("generations", 800, 10, 1, 1e9),
    BP_INT("objects", 2000, 500, 1, 1 << 24),
    BP_INT("keep_pct", 50, 50, 0, 100),
    BP_INT("min", 16, 16, 1, 1 << 30),
    BP_INT("max", 512, 512, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    _Alignas(64) int row;
    uint64_t gen;
    bench_obj *objs;  /* `objects` entries; p == NULL when empty */
    uint32_t *order;  /* scratch permutation */
    uint64_t allocs, frees;
    char pad[64];
} row_t;

static uint64_t nobjects, keep_pct, seed;
static size_t szmin, szmax;

static void *worker(void *arg)
{
    row_t *r = arg;
    rng_t rng = rng_seed(seed, ((uint64_t)r->row << 32) ^ r->gen);
    uint64_t tag = ((uint64_t)r->row << 48) ^ (r->gen << 24);

    for (uint64_t j = 0; j < nobjects; j++) {
        bench_obj *o = &r->objs[j];
        if (o->p) {
            blk_check(o->p, o->size, o->tag, "object left by the previous generation");
            free(o->p);
            o->p = NULL;
            r->frees++;
        }
    }
    for (uint64_t j = 0; j < nobjects; j++) {
        size_t n = rng_size_log(&rng, szmin, szmax);
        void *p = malloc(n);
        BENCH_CHECK_ALLOC(p, n);
        blk_fill(p, n, ++tag);
        r->objs[j] = (bench_obj){ p, n, tag };
        r->order[j] = (uint32_t)j;
        r->allocs++;
    }
    /* free a random (100 - keep_pct)% subset, in random order */
    for (uint64_t j = nobjects; j > 1; j--) {
        uint64_t k = rng_below(&rng, j);
        uint32_t t = r->order[j - 1];
        r->order[j - 1] = r->order[k];
        r->order[k] = t;
    }
    uint64_t nfree = nobjects * (100 - keep_pct) / 100;
    for (uint64_t j = 0; j < nfree; j++) {
        bench_obj *o = &r->objs[r->order[j]];
        blk_check(o->p, o->size, o->tag, "object freed by its own thread");
        free(o->p);
        o->p = NULL;
        r->frees++;
    }
    r->gen++;
    return NULL;
}

int main(int argc, char **argv)
{
    bench_parse("xthread_stress", argc, argv, params, sizeof params / sizeof params[0]);
    int threads = (int)bench_geti("threads");
    uint64_t generations = (uint64_t)bench_geti("generations");
    nobjects = (uint64_t)bench_geti("objects");
    keep_pct = (uint64_t)bench_geti("keep_pct");
    szmin = (size_t)bench_geti("min");
    szmax = (size_t)bench_geti("max");
    seed = (uint64_t)bench_geti("seed");
    if (szmin > szmax)
        bench_usage("min (%zu) must not exceed max (%zu)", szmin, szmax);

    row_t *rows = bench_map((size_t)threads * sizeof(row_t), 1);
    pthread_t *tid = bench_map((size_t)threads * sizeof(pthread_t), 1);
    for (int i = 0; i < threads; i++) {
        rows[i].row = i;
        rows[i].objs = bench_map(nobjects * sizeof(bench_obj), 1);
        rows[i].order = bench_map(nobjects * sizeof(uint32_t), 1);
    }

    uint64_t t0 = now_ns();
    for (uint64_t g = 0; g < generations; g++) {
        for (int i = 0; i < threads; i++) {
            if (g > 0)
                bench_thread_join(tid[i]);
            bench_thread_create(&tid[i], worker, &rows[i]);
        }
    }
    for (int i = 0; i < threads; i++)
        bench_thread_join(tid[i]);
    uint64_t t1 = now_ns();
    long peak = peak_rss_kb();

    uint64_t allocs = 0, frees = 0, timed_frees = 0;
    for (int i = 0; i < threads; i++)
        timed_frees += rows[i].frees;
    for (int i = 0; i < threads; i++) {
        row_t *r = &rows[i];
        if (r->gen != generations)
            bench_fail("row %d ran %llu generations, expected %llu", i, (unsigned long long)r->gen,
                       (unsigned long long)generations);
        for (uint64_t j = 0; j < nobjects; j++) {
            bench_obj *o = &r->objs[j];
            if (o->p) {
                blk_check(o->p, o->size, o->tag, "object left by the last generation");
                free(o->p);
                r->frees++;
            }
        }
        allocs += r->allocs;
        frees += r->frees;
    }
    if (allocs != frees || allocs != (uint64_t)threads * generations * nobjects)
        bench_fail("%llu allocations, %llu frees", (unsigned long long)allocs, (unsigned long long)frees);
    long rss_final = rss_kb();

    double s = (double)(t1 - t0) / 1e9;
    /* operations: the allocations and frees done by the generations */
    bench_metric_throughput((double)(allocs + timed_frees), t1 - t0);
    bench_metric("threads_per_sec", round((double)threads * (double)generations / s * 10) / 10);
    bench_metric("peak_rss_kb", (double)peak);
    bench_metric("rss_final_kb", (double)rss_final);
    bench_emit();
    return 0;
}
