/*
 * producer_consumer: cross-thread frees through bounded queues.
 *
 * `producers` threads allocate `size`-byte blocks, pattern them (tag,
 * producer id, sequence number) and hand them round-robin to `consumers`
 * threads, one bounded queue (capacity `qcap`) per consumer; consumers
 * verify and free them, so every free is remote. Queues are lock-free
 * (bounded MPMC ring with per-cell sequence numbers; a full or empty queue
 * makes the thread yield) or, with mutex=1, a mutex with two condition
 * variables. asymmetric=1 runs 1 producer and 3 consumers (unless producers
 * or consumers are given explicitly): the single producer runs flat out and
 * all its memory comes back through remote frees. Unless given, items is 20M
 * (lock-free), 30M (lock-free, asymmetric) or 8M (mutex), 100k under quick. At the end every
 * producer's items must have been consumed exactly once (count, sequence
 * sum and hash sum per producer).
 */
#include "bench_common.h"
#include <stdatomic.h>

static bench_param params[] = {
    BP_INT("producers", 4, 2, 1, 256),
    BP_INT("consumers", 4, 2, 1, 256),
    BP_INT("items", 20000000, 100000, 1, 1e12), /* total, split among producers */
    BP_INT("size", 64, 64, 32, 1 << 30),
    BP_INT("qcap", 1024, 1024, 2, 1 << 24),
    BP_INT("mutex", 0, 0, 0, 1),
    BP_INT("asymmetric", 0, 0, 0, 1),
    BP_INT("seed", 1, 1, 0, 1e18),
};

#define CACHE_LINE 64

typedef struct {
    _Atomic size_t seq;
    void *data;
} cell_t;

typedef struct {
    _Alignas(CACHE_LINE) _Atomic size_t enq;
    _Alignas(CACHE_LINE) _Atomic size_t deq;
    _Alignas(CACHE_LINE) cell_t *cells;
    size_t mask;
    /* mutex mode */
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    size_t count, head;
    void **ring;
} queue_t;

static queue_t *queues;
static int nprod, ncons, use_mutex;
static size_t blk_size;
static uint64_t salt;
static _Atomic int producers_done;
static pthread_barrier_t start_barrier;

/* ---- lock-free bounded MPMC queue ---- */

static int lf_push(queue_t *q, void *x)
{
    size_t pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
    for (;;) {
        cell_t *c = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->enq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                c->data = x;
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                return 1;
            }
        } else if (dif < 0) {
            return 0; /* full */
        } else {
            pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
        }
    }
}

static void *lf_pop(queue_t *q)
{
    size_t pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
    for (;;) {
        cell_t *c = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->deq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                void *x = c->data;
                atomic_store_explicit(&c->seq, pos + q->mask + 1, memory_order_release);
                return x;
            }
        } else if (dif < 0) {
            return NULL; /* empty */
        } else {
            pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
        }
    }
}

/* ---- mutex queue ---- */

static void mx_push(queue_t *q, void *x)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == q->mask + 1)
        pthread_cond_wait(&q->not_full, &q->lock);
    q->ring[(q->head + q->count) & q->mask] = x;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

/* NULL when the queue is empty and all producers are done. */
static void *mx_pop(queue_t *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == 0 && atomic_load(&producers_done) < nprod)
        pthread_cond_wait(&q->not_empty, &q->lock);
    void *x = NULL;
    if (q->count > 0) {
        x = q->ring[q->head];
        q->head = (q->head + 1) & q->mask;
        q->count--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->lock);
    return x;
}

/* ---- items ---- */

typedef struct {
    uint64_t head_word; /* blk_fill header */
    uint64_t producer;
    uint64_t seq;
} item_hdr_t;

static inline uint64_t item_tag(uint64_t producer, uint64_t seq) { return (producer << 44) ^ seq ^ salt; }

typedef struct {
    _Alignas(CACHE_LINE) int id;
    uint64_t items;
    /* consumer results, per producer */
    uint64_t *count, *seq_sum, *hash_sum;
    char pad[CACHE_LINE];
} thr_t;

static void *producer(void *arg)
{
    thr_t *t = arg;
    uint64_t pid = (uint64_t)t->id;
    int target = t->id % ncons;
    pthread_barrier_wait(&start_barrier);
    for (uint64_t s = 0; s < t->items; s++) {
        unsigned char *p = malloc(blk_size);
        BENCH_CHECK_ALLOC(p, blk_size);
        blk_fill(p, blk_size, item_tag(pid, s));
        memcpy(p + 8, &pid, 8);
        memcpy(p + 16, &s, 8);
        queue_t *q = &queues[target];
        if (use_mutex) {
            mx_push(q, p);
        } else {
            while (!lf_push(q, p))
                sched_yield();
        }
        if (++target == ncons)
            target = 0;
    }
    atomic_fetch_add(&producers_done, 1);
    if (use_mutex) {
        for (int c = 0; c < ncons; c++) {
            pthread_mutex_lock(&queues[c].lock);
            pthread_cond_broadcast(&queues[c].not_empty);
            pthread_mutex_unlock(&queues[c].lock);
        }
    }
    return NULL;
}

static inline void consume(thr_t *t, unsigned char *p)
{
    uint64_t pid, s;
    memcpy(&pid, p + 8, 8);
    memcpy(&s, p + 16, 8);
    if (pid >= (uint64_t)nprod)
        bench_fail("item %p carries producer id %llu", (void *)p, (unsigned long long)pid);
    blk_check(p, blk_size, item_tag(pid, s), "handed-off item");
    t->count[pid]++;
    t->seq_sum[pid] += s;
    t->hash_sum[pid] += mix64(s);
    free(p);
}

static void *consumer(void *arg)
{
    thr_t *t = arg;
    queue_t *q = &queues[t->id];
    pthread_barrier_wait(&start_barrier);
    if (use_mutex) {
        void *p;
        while ((p = mx_pop(q)) != NULL)
            consume(t, p);
        return NULL;
    }
    for (;;) {
        void *p = lf_pop(q);
        if (p) {
            consume(t, p);
            continue;
        }
        if (atomic_load(&producers_done) == nprod) {
            /* producers finished before this check: drain what is left */
            while ((p = lf_pop(q)) != NULL)
                consume(t, p);
            return NULL;
        }
        sched_yield();
    }
}

int main(int argc, char **argv)
{
    bench_parse("producer_consumer", argc, argv, params, sizeof params / sizeof params[0]);
    if (bench_geti("asymmetric")) {
        if (!bench_given("producers"))
            bench_set("producers", 1);
        if (!bench_given("consumers"))
            bench_set("consumers", 3);
    }
    /* defaults that keep each mode's full run at a second or two */
    if (!bench_given("items") && !bench_is_quick()) {
        if (bench_geti("mutex"))
            bench_set("items", 8000000);
        else if (bench_geti("asymmetric"))
            bench_set("items", 30000000);
    }
    nprod = (int)bench_geti("producers");
    ncons = (int)bench_geti("consumers");
    use_mutex = (int)bench_geti("mutex");
    blk_size = (size_t)bench_geti("size");
    uint64_t items = (uint64_t)bench_geti("items");
    size_t qcap = (size_t)bench_geti("qcap");
    if (qcap & (qcap - 1))
        bench_usage("qcap must be a power of two");
    if (items < (uint64_t)nprod)
        bench_usage("items must be at least producers");
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);
    salt = rng_next(&rng) & 0xFFFFFFFFFFFull;

    queues = bench_map((size_t)ncons * sizeof(queue_t), 1);
    for (int c = 0; c < ncons; c++) {
        queue_t *q = &queues[c];
        q->mask = qcap - 1;
        q->cells = bench_map(qcap * sizeof(cell_t), 1);
        for (size_t i = 0; i < qcap; i++)
            atomic_init(&q->cells[i].seq, i);
        atomic_init(&q->enq, 0);
        atomic_init(&q->deq, 0);
        q->ring = bench_map(qcap * sizeof(void *), 1);
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->not_empty, NULL);
        pthread_cond_init(&q->not_full, NULL);
    }

    int nthr = nprod + ncons;
    thr_t *thr = bench_map((size_t)nthr * sizeof(thr_t), 1);
    /* each consumer's counters on cache lines of their own */
    size_t stride = ((size_t)3 * (size_t)nprod * sizeof(uint64_t) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE / sizeof(uint64_t);
    uint64_t *results = bench_map((size_t)ncons * stride * sizeof(uint64_t), 1);
    pthread_t *tid = bench_map((size_t)nthr * sizeof(pthread_t), 1);
    pthread_barrier_init(&start_barrier, NULL, (unsigned)nthr + 1);
    for (int c = 0; c < ncons; c++) {
        thr_t *t = &thr[nprod + c];
        t->id = c;
        t->count = results + (size_t)c * stride;
        t->seq_sum = t->count + nprod;
        t->hash_sum = t->seq_sum + nprod;
        bench_thread_create(&tid[nprod + c], consumer, t);
    }
    for (int p = 0; p < nprod; p++) {
        thr[p].id = p;
        thr[p].items = items / (uint64_t)nprod + ((uint64_t)p < items % (uint64_t)nprod);
        bench_thread_create(&tid[p], producer, &thr[p]);
    }
    pthread_barrier_wait(&start_barrier);
    uint64_t t0 = now_ns();
    for (int i = 0; i < nthr; i++)
        bench_thread_join(tid[i]);
    uint64_t t1 = now_ns();

    for (int p = 0; p < nprod; p++) {
        uint64_t n = thr[p].items, cnt = 0, ssum = 0, hsum = 0, want_h = 0;
        for (int c = 0; c < ncons; c++) {
            cnt += thr[nprod + c].count[p];
            ssum += thr[nprod + c].seq_sum[p];
            hsum += thr[nprod + c].hash_sum[p];
        }
        for (uint64_t s = 0; s < n; s++)
            want_h += mix64(s);
        if (cnt != n || ssum != n * (n - 1) / 2 || hsum != want_h)
            bench_fail("producer %d: %llu of %llu items consumed, sequence sums differ: %s", p,
                       (unsigned long long)cnt, (unsigned long long)n,
                       (ssum != n * (n - 1) / 2 || hsum != want_h) ? "yes" : "no");
    }

    bench_metric_throughput((double)items, t1 - t0);
    bench_metric("peak_rss_kb", (double)peak_rss_kb());
    bench_metric("rss_final_kb", (double)rss_kb());
    bench_emit();
    return 0;
}
