/*
 * thread_churn: many short-lived threads whose memory outlives them.
 *
 * The main thread starts `threads` short-lived threads in total, at most
 * `concurrent` at a time. Each one does `local` allocations of its own
 * (replacing random entries of a 16-slot scratch array, then freeing them)
 * and allocates `per_thread` blocks (log-uniform sizes in [min, max]) that
 * it hands, in batches of `batch`, to one of `survivors` long-lived threads,
 * then exits. Each survivor keeps the last `hold` blocks it received (so
 * memory of dead threads stays live for a while), verifies and frees older
 * ones. Measures thread start/exit cost inside the allocator (thread caches
 * set up and torn down, orphaned memory adopted) and whether RSS keeps
 * growing with the number of dead threads.
 *
 * A short-lived thread waits while its survivor has `max_pending` batches
 * not yet taken (0: no limit). Without a limit the queue grows whenever the
 * survivors fall behind, and peak RSS then measures that backlog more than
 * the allocator: with 16000 threads one at a time on 2 cores, the backlog
 * reached 600-1400 blocks under mimalloc (5.4 s), 6000-9700 under AethAlloc
 * (0.8 s) and 14000-16000 under tcmalloc (0.9 s), and peak RSS followed it.
 * `pending_max_blocks` reports the largest backlog seen.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("threads", 16000, 300, 1, 1e9),
    BP_INT("concurrent", 2, 2, 1, 1024),
    BP_INT("survivors", 2, 2, 1, 256),
    BP_INT("per_thread", 256, 256, 0, 1 << 24),
    BP_INT("local", 256, 256, 0, 1 << 24),
    BP_INT("batch", 32, 32, 1, 1 << 16),
    BP_INT("hold", 4096, 1024, 0, 1 << 24),
    BP_INT("max_pending", 8, 8, 0, 1 << 24),
    BP_INT("min", 16, 16, 16, 1 << 30),
    BP_INT("max", 1024, 1024, 16, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    void *p;
    size_t size;
    uint64_t tag;
} blk_t;

typedef struct batch {
    struct batch *next;
    size_t n;
    blk_t b[]; /* `batch` entries */
} batch_t;

typedef struct {
    _Alignas(64) pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_cond_t space; /* signalled when a batch is taken */
    batch_t *head, *tail;
    uint64_t pending; /* batches queued, not yet taken */
    int done;
    uint64_t received, freed, batches;
    char pad[64];
} survivor_t;

static survivor_t *surv;
static int nsurv;
static uint64_t per_thread, local_ops, batch_sz, hold, max_pending;
static uint64_t pending_blocks, pending_blocks_max; /* atomics */
static size_t szmin, szmax;
static uint64_t seed;

static void send(survivor_t *s, batch_t *b)
{
    uint64_t now = __atomic_add_fetch(&pending_blocks, b->n, __ATOMIC_RELAXED);
    uint64_t seen = __atomic_load_n(&pending_blocks_max, __ATOMIC_RELAXED);
    while (now > seen &&
           !__atomic_compare_exchange_n(&pending_blocks_max, &seen, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    pthread_mutex_lock(&s->lock);
    while (max_pending && s->pending >= max_pending)
        pthread_cond_wait(&s->space, &s->lock);
    s->pending++;
    b->next = NULL;
    if (s->tail)
        s->tail->next = b;
    else
        s->head = b;
    s->tail = b;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void *short_lived(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    rng_t rng = rng_seed(seed, id);
    uint64_t tag = id << 24;

    blk_t scratch[16] = { { 0 } };
    for (uint64_t i = 0; i < local_ops; i++) {
        blk_t *e = &scratch[rng_below(&rng, 16)];
        if (e->p) {
            blk_check(e->p, e->size, e->tag, "thread-local block");
            free(e->p);
        }
        size_t n = rng_size_log(&rng, szmin, szmax);
        e->p = malloc(n);
        BENCH_CHECK_ALLOC(e->p, n);
        e->size = n;
        e->tag = ++tag;
        blk_fill(e->p, n, e->tag);
    }

    survivor_t *s = &surv[id % (uint64_t)nsurv];
    batch_t *b = NULL;
    for (uint64_t i = 0; i < per_thread; i++) {
        if (!b) {
            size_t bytes = sizeof(batch_t) + batch_sz * sizeof(blk_t);
            b = malloc(bytes);
            BENCH_CHECK_ALLOC(b, bytes);
            b->n = 0;
        }
        size_t n = rng_size_log(&rng, szmin, szmax);
        void *p = malloc(n);
        BENCH_CHECK_ALLOC(p, n);
        blk_fill(p, n, ++tag);
        b->b[b->n++] = (blk_t){ p, n, tag };
        if (b->n == batch_sz) {
            send(s, b);
            b = NULL;
        }
    }
    if (b)
        send(s, b);

    for (int k = 0; k < 16; k++) {
        if (scratch[k].p) {
            blk_check(scratch[k].p, scratch[k].size, scratch[k].tag, "thread-local block");
            free(scratch[k].p);
        }
    }
    return NULL;
}

static void *survivor(void *arg)
{
    survivor_t *s = arg;
    blk_t *ring = bench_map((hold ? hold : 1) * sizeof(blk_t), 1);
    uint64_t head = 0, count = 0;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->head && !s->done)
            pthread_cond_wait(&s->cond, &s->lock);
        batch_t *b = s->head;
        if (b) {
            s->head = b->next;
            if (!s->head)
                s->tail = NULL;
            s->pending--;
            pthread_cond_signal(&s->space);
        }
        pthread_mutex_unlock(&s->lock);
        if (!b)
            break; /* done and drained */
        __atomic_sub_fetch(&pending_blocks, b->n, __ATOMIC_RELAXED);
        s->batches++;
        for (size_t i = 0; i < b->n; i++) {
            blk_t e = b->b[i];
            s->received++;
            if (hold == 0) {
                blk_check(e.p, e.size, e.tag, "handed-off block");
                free(e.p);
                s->freed++;
                continue;
            }
            if (count == hold) {
                blk_t *old = &ring[head];
                blk_check(old->p, old->size, old->tag, "held block");
                free(old->p);
                s->freed++;
                *old = e;
                head = (head + 1) % hold;
            } else {
                ring[(head + count) % hold] = e;
                count++;
            }
        }
        free(b);
    }
    for (uint64_t i = 0; i < count; i++) {
        blk_t *e = &ring[(head + i) % hold];
        blk_check(e->p, e->size, e->tag, "held block at exit");
        free(e->p);
        s->freed++;
    }
    bench_unmap(ring, (hold ? hold : 1) * sizeof(blk_t));
    return NULL;
}

int main(int argc, char **argv)
{
    bench_parse("thread_churn", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t threads = (uint64_t)bench_geti("threads");
    int concurrent = (int)bench_geti("concurrent");
    nsurv = (int)bench_geti("survivors");
    per_thread = (uint64_t)bench_geti("per_thread");
    local_ops = (uint64_t)bench_geti("local");
    batch_sz = (uint64_t)bench_geti("batch");
    hold = (uint64_t)bench_geti("hold");
    max_pending = (uint64_t)bench_geti("max_pending");
    szmin = (size_t)bench_geti("min");
    szmax = (size_t)bench_geti("max");
    seed = (uint64_t)bench_geti("seed");
    if (szmin > szmax)
        bench_usage("min (%zu) must not exceed max (%zu)", szmin, szmax);

    surv = bench_map((size_t)nsurv * sizeof(survivor_t), 1);
    pthread_t *stid = bench_map((size_t)nsurv * sizeof(pthread_t), 1);
    pthread_t *tid = bench_map((size_t)concurrent * sizeof(pthread_t), 1);
    for (int i = 0; i < nsurv; i++) {
        pthread_mutex_init(&surv[i].lock, NULL);
        pthread_cond_init(&surv[i].cond, NULL);
        pthread_cond_init(&surv[i].space, NULL);
        bench_thread_create(&stid[i], survivor, &surv[i]);
    }

    long rss_start = rss_kb();
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < threads; i++) {
        pthread_t *slot = &tid[i % (uint64_t)concurrent];
        if (i >= (uint64_t)concurrent)
            bench_thread_join(*slot);
        bench_thread_create(slot, short_lived, (void *)(uintptr_t)i);
    }
    for (uint64_t i = threads > (uint64_t)concurrent ? threads - (uint64_t)concurrent : 0; i < threads; i++)
        bench_thread_join(tid[i % (uint64_t)concurrent]);
    for (int i = 0; i < nsurv; i++) {
        pthread_mutex_lock(&surv[i].lock);
        surv[i].done = 1;
        pthread_cond_signal(&surv[i].cond);
        pthread_mutex_unlock(&surv[i].lock);
    }
    for (int i = 0; i < nsurv; i++)
        bench_thread_join(stid[i]);
    uint64_t t1 = now_ns();

    uint64_t received = 0, freed = 0;
    for (int i = 0; i < nsurv; i++) {
        received += surv[i].received;
        freed += surv[i].freed;
    }
    if (received != threads * per_thread || freed != received)
        bench_fail("survivors received %llu and freed %llu blocks, %llu were sent", (unsigned long long)received,
                   (unsigned long long)freed, (unsigned long long)(threads * per_thread));

    double s = (double)(t1 - t0) / 1e9;
    bench_metric("threads_per_sec", round((double)threads / s * 10) / 10);
    bench_metric("ops_per_sec", round((double)threads * (double)(per_thread + local_ops) / s));
    bench_metric("seconds", round(s * 1e6) / 1e6);
    bench_metric("rss_start_kb", (double)rss_start);
    bench_metric("pending_max_blocks", (double)pending_blocks_max);
    bench_metric("peak_rss_kb", (double)peak_rss_kb());
    bench_metric("rss_final_kb", (double)rss_kb());
    bench_emit();
    return 0;
}
