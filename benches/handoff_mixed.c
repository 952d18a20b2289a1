/*
 * handoff_mixed: threads churning a mixed working set of small and rare large
 * blocks, handing some of their new blocks to the next thread to free.
 *
 * `threads` (2) threads each own `slots` (4096) slots. Each of `ops`
 * operations per thread picks a random own slot, verifies and frees its block
 * (if it holds one) and allocates a new block of a log-uniform size in
 * [`min`, `small_max`] (16 B..4 KiB) or, for `large_pct` per mille (2 =
 * 0.2%) of operations, in [`large_min`, `max`] (256 KiB..4 MiB). Every
 * `handoff`-th (8) operation the new block does not go into the slot (which
 * stays empty until picked again) but into the inbox of the next thread
 * (thread i -> i+1 mod threads), which verifies and frees it: those frees are
 * remote. Blocks over 4 KiB get one word written in every 4 KiB page, so
 * their pages are really faulted in, as a program using them would.
 *
 * Inboxes are bounded single-producer single-consumer lock-free rings of
 * `inbox` (1024) entries; a thread drains its own inbox before each
 * operation, and while its neighbour's inbox is full it drains its own and
 * yields (so a ring of full inboxes cannot deadlock). After its operations a
 * thread keeps draining until its predecessor is done. At the end every
 * thread's slots are verified and freed, and allocation, free and handoff
 * counts (and the sum of the handed tags) must balance.
 *
 * The timed phase starts when every working set is built and ends when every
 * thread has finished and drained; user/system time and minor faults are
 * getrusage(RUSAGE_SELF) differences over it (all threads).
 */
#include "bench_common.h"
#include <stdatomic.h>

static bench_param params[] = {
    BP_INT("threads", 2, 2, 1, 1024),
    BP_INT("ops", 500000, 20000, 1, 1e12), /* per thread */
    BP_INT("slots", 4096, 256, 1, 1 << 24),
    BP_INT("min", 16, 16, 1, 1 << 30),
    BP_INT("small_max", 4096, 4096, 1, 1 << 30),
    BP_INT("large_min", 262144, 262144, 1, 1ll << 36),
    BP_INT("max", 4194304, 4194304, 1, 1ll << 36),
    BP_INT("large_pct", 2, 2, 0, 1000), /* per mille */
    BP_INT("handoff", 8, 8, 0, 1e12),   /* 0 = no handoff */
    BP_INT("inbox", 1024, 1024, 2, 1 << 24),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    unsigned char *p;
    size_t size;
    uint64_t tag;
} blk_t;

typedef struct {
    _Alignas(64) _Atomic uint64_t head; /* next to pop (consumer) */
    _Alignas(64) _Atomic uint64_t tail; /* next to push (producer) */
    _Alignas(64) blk_t *ring;
    uint64_t mask;
} inbox_t;

typedef struct {
    _Alignas(64) int id;
    _Atomic int done; /* finished its operations (no more pushes) */
    uint64_t allocs, local_frees, remote_frees, pushed, received;
    uint64_t pushed_tag_sum, received_tag_sum;
    char pad[64];
} worker_t;

static int nthreads;
static uint64_t g_ops, g_slots, g_handoff, g_large_pm;
static size_t g_min, g_small_max, g_large_min, g_max;
static uint64_t g_seed;
static inbox_t *inboxes;
static worker_t *workers;
static pthread_barrier_t start;

static inline blk_t new_block(rng_t *rng, worker_t *w, uint64_t *tag)
{
    size_t n = rng_below(rng, 1000) < g_large_pm ? rng_size_log(rng, g_large_min, g_max)
                                                  : rng_size_log(rng, g_min, g_small_max);
    unsigned char *p = malloc(n);
    BENCH_CHECK_ALLOC(p, n);
    ++*tag;
    blk_fill_pages(p, n, *tag);
    w->allocs++;
    return (blk_t){ p, n, *tag };
}

static inline int inbox_push(inbox_t *q, blk_t b)
{
    uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if (t - atomic_load_explicit(&q->head, memory_order_acquire) > q->mask)
        return 0;
    q->ring[t & q->mask] = b;
    atomic_store_explicit(&q->tail, t + 1, memory_order_release);
    return 1;
}

/* Verifies and frees everything in thread w's inbox. */
static inline void drain(worker_t *w)
{
    inbox_t *q = &inboxes[w->id];
    uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&q->tail, memory_order_acquire);
    if (h == t)
        return;
    for (; h != t; h++) {
        blk_t b = q->ring[h & q->mask];
        blk_check_pages(b.p, b.size, b.tag, "handed-over block");
        free(b.p);
        w->remote_frees++;
        w->received++;
        w->received_tag_sum += b.tag;
    }
    atomic_store_explicit(&q->head, h, memory_order_release);
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    rng_t rng = rng_seed(g_seed, (uint64_t)w->id);
    blk_t *s = bench_map(g_slots * sizeof *s, 1);
    uint64_t tag = (uint64_t)w->id << 48;
    inbox_t *next = &inboxes[(w->id + 1) % nthreads];
    worker_t *pred = &workers[(w->id + nthreads - 1) % nthreads];

    for (uint64_t i = 0; i < g_slots; i++)
        s[i] = new_block(&rng, w, &tag);
    pthread_barrier_wait(&start);

    for (uint64_t i = 0; i < g_ops; i++) {
        drain(w);
        blk_t *e = &s[rng_below(&rng, g_slots)];
        if (e->p) {
            blk_check_pages(e->p, e->size, e->tag, "working-set block");
            free(e->p);
            w->local_frees++;
        }
        blk_t b = new_block(&rng, w, &tag);
        if (g_handoff && (i + 1) % g_handoff == 0) {
            *e = (blk_t){ NULL, 0, 0 };
            while (!inbox_push(next, b)) {
                drain(w);
                sched_yield();
            }
            w->pushed++;
            w->pushed_tag_sum += b.tag;
        } else {
            *e = b;
        }
    }
    atomic_store_explicit(&w->done, 1, memory_order_release);
    while (!atomic_load_explicit(&pred->done, memory_order_acquire)) {
        drain(w);
        sched_yield();
    }
    drain(w); /* anything pushed before pred was done */
    pthread_barrier_wait(&start);

    for (uint64_t i = 0; i < g_slots; i++) {
        if (s[i].p) {
            blk_check_pages(s[i].p, s[i].size, s[i].tag, "working-set block at exit");
            free(s[i].p);
            w->local_frees++;
        }
    }
    bench_unmap(s, g_slots * sizeof *s);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_parse("handoff_mixed", argc, argv, params, sizeof params / sizeof params[0]);
    nthreads = (int)bench_geti("threads");
    g_ops = (uint64_t)bench_geti("ops");
    g_slots = (uint64_t)bench_geti("slots");
    g_min = (size_t)bench_geti("min");
    g_small_max = (size_t)bench_geti("small_max");
    g_large_min = (size_t)bench_geti("large_min");
    g_max = (size_t)bench_geti("max");
    g_large_pm = (uint64_t)bench_geti("large_pct");
    g_handoff = (uint64_t)bench_geti("handoff");
    g_seed = (uint64_t)bench_geti("seed");
    uint64_t cap = (uint64_t)bench_geti("inbox");
    if (cap & (cap - 1))
        bench_usage("inbox (%llu) must be a power of two", (unsigned long long)cap);
    if (g_min > g_small_max)
        bench_usage("min (%zu) must not exceed small_max (%zu)", g_min, g_small_max);
    if (g_large_min > g_max)
        bench_usage("large_min (%zu) must not exceed max (%zu)", g_large_min, g_max);

    workers = bench_map((size_t)nthreads * sizeof *workers, 1);
    inboxes = bench_map((size_t)nthreads * sizeof *inboxes, 1);
    pthread_t *tid = bench_map((size_t)nthreads * sizeof *tid, 1);
    for (int i = 0; i < nthreads; i++) {
        inboxes[i].ring = bench_map(cap * sizeof(blk_t), 1);
        inboxes[i].mask = cap - 1;
        workers[i].id = i;
    }
    pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++)
        bench_thread_create(&tid[i], worker, &workers[i]);

    struct rusage r0, r1;
    pthread_barrier_wait(&start); /* all working sets built */
    getrusage(RUSAGE_SELF, &r0);
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&start); /* all operations done, all inboxes drained */
    uint64_t t1 = now_ns();
    getrusage(RUSAGE_SELF, &r1);
    long peak = peak_rss_kb();
    for (int i = 0; i < nthreads; i++)
        bench_thread_join(tid[i]);
    pthread_barrier_destroy(&start);

    uint64_t allocs = 0, frees = 0, pushed = 0;
    for (int i = 0; i < nthreads; i++) {
        worker_t *w = &workers[i], *n = &workers[(i + 1) % nthreads];
        if (w->pushed != n->received || w->pushed_tag_sum != n->received_tag_sum)
            bench_fail("thread %d handed over %llu blocks, thread %d received %llu (or their tags differ)", i,
                       (unsigned long long)w->pushed, (i + 1) % nthreads, (unsigned long long)n->received);
        allocs += w->allocs;
        frees += w->local_frees + w->remote_frees;
        pushed += w->pushed;
    }
    if (allocs != frees)
        bench_fail("%llu allocations but %llu frees", (unsigned long long)allocs, (unsigned long long)frees);
    for (int i = 0; i < nthreads; i++)
        bench_unmap(inboxes[i].ring, cap * sizeof(blk_t));

    bench_metric_throughput((double)g_ops * nthreads, t1 - t0);
    bench_metric_rusage(&r0, &r1);
    bench_metric("peak_rss_kb", (double)peak);
    bench_metric("handoffs", (double)pushed);
    bench_emit();
    return 0;
}
