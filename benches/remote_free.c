/*
 * remote_free: threads free each other's blocks, in rounds.
 *
 * `threads` threads in a ring. In round r each thread allocates `batch`
 * blocks of log-uniform sizes in [min, max] and writes a pattern into each;
 * after a barrier, thread t checks and frees, in allocation order, the
 * blocks thread t+1 allocated in that round, while the others may already
 * be allocating round r+1. Every block is freed by a thread other than the
 * one that allocated it (with one thread, by itself), so the allocator's
 * remote-free path carries all the frees: a cache that keeps what a thread
 * frees must hand it back to the threads that allocate. Two buffers per
 * thread alternate between rounds; the barrier of round r is passed only
 * after every free of round r-1, so a buffer is reused only once emptied.
 * Reports allocations plus frees per second.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("threads", 4, 2, 1, 4096),
    BP_INT("rounds", 150, 20, 1, 1e9),
    BP_INT("batch", 20000, 2000, 1, 1 << 24),
    BP_INT("min", 16, 16, 1, 1 << 30),
    BP_INT("max", 512, 512, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    _Alignas(64) int id;
    bench_obj *buf[2];
    uint64_t allocs, frees;
    char pad[64];
} ring_t;

static int nthreads;
static uint64_t rounds, batch, seed;
static size_t szmin, szmax;
static ring_t *ring;
static pthread_barrier_t barrier;

static void *worker(void *arg)
{
    ring_t *me = arg;
    ring_t *next = &ring[(me->id + 1) % nthreads];
    rng_t rng = rng_seed(seed, (uint64_t)me->id);
    uint64_t tag = (uint64_t)me->id << 48;

    for (uint64_t r = 0; r < rounds; r++) {
        bench_obj *mine = me->buf[r & 1];
        for (uint64_t j = 0; j < batch; j++) {
            size_t n = rng_size_log(&rng, szmin, szmax);
            void *p = malloc(n);
            BENCH_CHECK_ALLOC(p, n);
            blk_fill(p, n, ++tag);
            mine[j] = (bench_obj){ p, n, tag };
        }
        me->allocs += batch;
        pthread_barrier_wait(&barrier);
        bench_obj *theirs = next->buf[r & 1];
        for (uint64_t j = 0; j < batch; j++) {
            bench_obj *o = &theirs[j];
            blk_check(o->p, o->size, o->tag, "block freed by the next thread in the ring");
            free(o->p);
            o->p = NULL;
        }
        me->frees += batch;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_parse("remote_free", argc, argv, params, sizeof params / sizeof params[0]);
    nthreads = (int)bench_geti("threads");
    rounds = (uint64_t)bench_geti("rounds");
    batch = (uint64_t)bench_geti("batch");
    szmin = (size_t)bench_geti("min");
    szmax = (size_t)bench_geti("max");
    seed = (uint64_t)bench_geti("seed");
    if (szmin > szmax)
        bench_usage("min (%zu) must not exceed max (%zu)", szmin, szmax);

    ring = bench_map((size_t)nthreads * sizeof(ring_t), 1);
    pthread_t *tid = bench_map((size_t)nthreads * sizeof(pthread_t), 1);
    for (int i = 0; i < nthreads; i++) {
        ring[i].id = i;
        ring[i].buf[0] = bench_map(batch * sizeof(bench_obj), 1);
        ring[i].buf[1] = bench_map(batch * sizeof(bench_obj), 1);
    }
    if (pthread_barrier_init(&barrier, NULL, (unsigned)nthreads) != 0)
        bench_fail("pthread_barrier_init failed");

    uint64_t t0 = now_ns();
    for (int i = 0; i < nthreads; i++)
        bench_thread_create(&tid[i], worker, &ring[i]);
    for (int i = 0; i < nthreads; i++)
        bench_thread_join(tid[i]);
    uint64_t t1 = now_ns();
    long peak = peak_rss_kb();

    uint64_t allocs = 0, frees = 0;
    for (int i = 0; i < nthreads; i++) {
        for (int b = 0; b < 2; b++)
            for (uint64_t j = 0; j < batch; j++)
                if (ring[i].buf[b][j].p)
                    bench_fail("thread %d's block %llu of buffer %d was never freed", i, (unsigned long long)j, b);
        allocs += ring[i].allocs;
        frees += ring[i].frees;
    }
    if (allocs != frees || allocs != (uint64_t)nthreads * rounds * batch)
        bench_fail("%llu allocations, %llu frees", (unsigned long long)allocs, (unsigned long long)frees);

    bench_metric_throughput((double)(allocs + frees), t1 - t0);
    bench_metric("peak_rss_kb", (double)peak);
    bench_metric("rss_final_kb", (double)rss_kb());
    bench_emit();
    return 0;
}
