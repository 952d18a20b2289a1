/*
 * larson: server simulation in the style of Larson and Krishnan's benchmark.
 *
 * `threads` lanes each own `slots` blocks (sizes uniform in [min, max]),
 * first allocated by the main thread. A lane is served by a succession of
 * `generations` threads: each one performs `steps` steps (free a random
 * slot's block after verifying it, allocate a new random-size block into
 * it), then starts its successor and exits; the successor inherits the
 * slots, so blocks allocated by one thread are freed by another one that
 * did not exist when they were allocated. The work is fixed (threads x
 * generations x steps steps), unlike the original's timed rounds, so runs
 * with the same parameters do the same work.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("threads", 4, 2, 1, 1024),
    BP_INT("slots", 2000, 1000, 1, 1 << 24),
    BP_INT("steps", 250000, 2000, 1, 1e12),
    BP_INT("generations", 100, 10, 1, 1e9),
    BP_INT("min", 16, 16, 1, 1 << 30),
    BP_INT("max", 1024, 1024, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    void *p;
    size_t size;
    uint64_t tag;
} slot_t;

typedef struct {
    _Alignas(64) int id;
    slot_t *slots;
    uint64_t nslots;
    uint64_t gen;
    rng_t rng;
    uint64_t tag;
    pthread_t prev;     /* predecessor, joined by its successor */
    int has_prev;
    pthread_t cur;      /* the thread now serving the lane */
    char pad[64];
} lane_t;

static uint64_t steps, generations;
static size_t szmin, szmax;
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int lanes_done;
static _Atomic uint64_t threads_created;

static void *lane_worker(void *arg)
{
    lane_t *l = arg;
    if (l->has_prev)
        bench_thread_join(l->prev);
    for (uint64_t i = 0; i < steps; i++) {
        slot_t *s = &l->slots[rng_below(&l->rng, l->nslots)];
        blk_check(s->p, s->size, s->tag, "inherited slot block");
        free(s->p);
        size_t n = (size_t)rng_range(&l->rng, szmin, szmax);
        void *p = malloc(n);
        BENCH_CHECK_ALLOC(p, n);
        blk_fill(p, n, ++l->tag);
        *s = (slot_t){ p, n, l->tag };
    }
    if (++l->gen < generations) {
        pthread_t next;
        l->prev = pthread_self();
        l->has_prev = 1;
        bench_thread_create(&next, lane_worker, l);
        /* the successor reads l->cur only after joining this thread */
        l->cur = next;
        threads_created++;
        return NULL;
    }
    pthread_mutex_lock(&done_lock);
    lanes_done++;
    pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_parse("larson", argc, argv, params, sizeof params / sizeof params[0]);
    int threads = (int)bench_geti("threads");
    uint64_t nslots = (uint64_t)bench_geti("slots");
    steps = (uint64_t)bench_geti("steps");
    generations = (uint64_t)bench_geti("generations");
    szmin = (size_t)bench_geti("min");
    szmax = (size_t)bench_geti("max");
    uint64_t seed = (uint64_t)bench_geti("seed");
    if (szmin > szmax)
        bench_usage("min (%zu) must not exceed max (%zu)", szmin, szmax);

    lane_t *lanes = bench_map((size_t)threads * sizeof(lane_t), 1);
    for (int i = 0; i < threads; i++) {
        lane_t *l = &lanes[i];
        l->id = i;
        l->nslots = nslots;
        l->slots = bench_map(nslots * sizeof(slot_t), 1);
        l->rng = rng_seed(seed, (uint64_t)i);
        l->tag = (uint64_t)i << 48;
        for (uint64_t k = 0; k < nslots; k++) {
            size_t n = (size_t)rng_range(&l->rng, szmin, szmax);
            void *p = malloc(n);
            BENCH_CHECK_ALLOC(p, n);
            blk_fill(p, n, ++l->tag);
            l->slots[k] = (slot_t){ p, n, l->tag };
        }
    }

    uint64_t t0 = now_ns();
    for (int i = 0; i < threads; i++) {
        threads_created++;
        bench_thread_create(&lanes[i].cur, lane_worker, &lanes[i]);
    }
    pthread_mutex_lock(&done_lock);
    while (lanes_done < threads)
        pthread_cond_wait(&done_cond, &done_lock);
    pthread_mutex_unlock(&done_lock);
    for (int i = 0; i < threads; i++)
        bench_thread_join(lanes[i].cur);
    uint64_t t1 = now_ns();

    for (int i = 0; i < threads; i++) {
        lane_t *l = &lanes[i];
        if (l->gen != generations)
            bench_fail("lane %d ran %llu generations, expected %llu", i, (unsigned long long)l->gen,
                       (unsigned long long)generations);
        for (uint64_t k = 0; k < nslots; k++) {
            blk_check(l->slots[k].p, l->slots[k].size, l->slots[k].tag, "slot block at exit");
            free(l->slots[k].p);
        }
    }
    if (threads_created != (uint64_t)threads * generations)
        bench_fail("%llu threads created, expected %llu", (unsigned long long)threads_created,
                   (unsigned long long)((uint64_t)threads * generations));

    bench_metric_throughput((double)threads * (double)generations * (double)steps, t1 - t0);
    bench_metric("threads_created", (double)threads_created);
    bench_metric("peak_rss_kb", (double)peak_rss_kb());
    bench_emit();
    return 0;
}
