/* metrics.c: the metrics API (include/aethalloc.h) seen from a program.
 *
 * Under libaethalloc-metrics.so the counters must follow what this program
 * does: N small allocations and frees on a thread of its own (whose counters
 * reach the totals at thread exit), and large ones on the main thread.
 * Under the other variants both functions exist and report zeros with
 * `enabled == 0`. A caller passing an older, shorter struct gets only that
 * many bytes. A long-lived thread that only frees (a consumer of blocks
 * that short-lived producers allocated) must fold its counts into the
 * totals while it runs, so `bytes_in_use` and its peak follow the heap. */
#include "bb.h"
#include <pthread.h>
#include "../../include/aethalloc.h"

typedef aethalloc_metrics (*get_fn)(void);
typedef int (*get_ext_fn)(aethalloc_metrics_ext *);

static get_fn get;
static get_ext_fn get_ext;

#define SMALL 20000
#define LARGE 10

static void *worker(void *arg) {
    (void)arg;
    static void *blocks[SMALL];
    for (int i = 0; i < SMALL; i++) blocks[i] = bb_escape(malloc(16 + (size_t)(i % 500)));
    for (int i = 0; i < SMALL; i++) free(blocks[i]);
    return NULL;
}

/* Producer/consumer: ROUNDS producers, one at a time, each allocate BATCH
 * blocks and exit; the consumer frees each batch before the next. */
#define ROUNDS 40
#define BATCH 20000
static void *handed[BATCH];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int full, finished;

static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < BATCH; i++) handed[i] = bb_escape(malloc(16 + (size_t)(i % 500)));
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!full && !finished) pthread_cond_wait(&cv, &mu);
        if (!full) break;
        for (int i = 0; i < BATCH; i++) free(handed[i]);
        full = 0;
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static aethalloc_metrics_ext snapshot(void);

/* Returns the bytes in use and the peak seen while the consumer still runs,
 * as growth over the figures before the rounds. */
static void consumer_rounds(uint64_t *in_use_growth, uint64_t *peak_growth) {
    aethalloc_metrics_ext start = snapshot();
    pthread_t c;
    BB_CHECK(pthread_create(&c, NULL, consumer, NULL) == 0, "pthread_create");
    for (int r = 0; r < ROUNDS; r++) {
        pthread_t p;
        BB_CHECK(pthread_create(&p, NULL, producer, NULL) == 0, "pthread_create");
        BB_CHECK(pthread_join(p, NULL) == 0, "pthread_join");
        pthread_mutex_lock(&mu);
        full = 1;
        pthread_cond_broadcast(&cv);
        while (full) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    aethalloc_metrics_ext mid = snapshot();
    pthread_mutex_lock(&mu);
    finished = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    BB_CHECK(pthread_join(c, NULL) == 0, "pthread_join");
    *in_use_growth = mid.bytes_in_use > start.bytes_in_use ? mid.bytes_in_use - start.bytes_in_use : 0;
    uint64_t base = start.peak_bytes_in_use;
    *peak_growth = mid.peak_bytes_in_use > base ? mid.peak_bytes_in_use - base : 0;
}

static aethalloc_metrics_ext snapshot(void) {
    aethalloc_metrics_ext m;
    memset(&m, 0xFF, sizeof m);
    m.size = sizeof m;
    BB_CHECK(get_ext(&m) == 0, "aethalloc_get_metrics_ext failed");
    BB_CHECK(m.size == sizeof m, "size %u, expected %zu", m.size, sizeof m);
    BB_CHECK(m.version == AETHALLOC_METRICS_VERSION, "version %u", m.version);
    return m;
}

int main(void) {
    bb_print_variant();
    get = (get_fn)dlsym(RTLD_DEFAULT, "aethalloc_get_metrics");
    get_ext = (get_ext_fn)dlsym(RTLD_DEFAULT, "aethalloc_get_metrics_ext");
    if (!get || !get_ext) {
        bb_say("SKIP: no metrics API (not AethAlloc)");
        return 0;
    }
    uint64_t in_use_growth, peak_growth;
    consumer_rounds(&in_use_growth, &peak_growth);
    aethalloc_metrics_ext before = snapshot();
    int enabled = strcmp(bb_variant(), "metrics") == 0;
    BB_CHECK(before.enabled == (uint32_t)enabled, "enabled=%u in variant %s", before.enabled, bb_variant());

    pthread_t t;
    BB_CHECK(pthread_create(&t, NULL, worker, NULL) == 0, "pthread_create");
    BB_CHECK(pthread_join(t, NULL) == 0, "pthread_join");
    void *large[LARGE];
    for (int i = 0; i < LARGE; i++) large[i] = bb_escape(malloc((size_t)(1 + i) << 20));
    aethalloc_metrics_ext during = snapshot();
    for (int i = 0; i < LARGE; i++) free(large[i]);
    aethalloc_metrics_ext after = snapshot();
    aethalloc_metrics five = get();

    /* An older caller: only the header and the first counters. */
    unsigned char small[40];
    memset(small, 0xAB, sizeof small);
    ((aethalloc_metrics_ext *)small)->size = 40;
    BB_CHECK(get_ext((aethalloc_metrics_ext *)small) == 0, "short struct refused");
    BB_CHECK(((aethalloc_metrics_ext *)small)->size == 40, "short struct size not kept");
    aethalloc_metrics_ext tiny;
    tiny.size = 8;
    BB_CHECK(get_ext(&tiny) == -1, "a struct without room for its header was accepted");
    BB_CHECK(get_ext(NULL) == -1, "NULL was accepted");

    if (!enabled) {
        BB_CHECK(after.allocs == 0 && after.frees == 0 && five.allocs == 0 && five.direct_allocs == 0,
                 "variant %s reports counters", bb_variant());
        bb_say("metrics: disabled in this variant, zeros reported");
        return 0;
    }
    /* Each batch is under 5.2 MiB, all freed by the time it is measured;
     * the consumer's counts lag by at most a few magazines per class. */
    BB_CHECK(in_use_growth < (16ull << 20) && peak_growth < (24ull << 20),
             "with a consumer thread still running: bytes in use grew by %llu, the peak by %llu, after %d "
             "batches of at most 5.2 MiB allocated and freed",
             (unsigned long long)in_use_growth, (unsigned long long)peak_growth, ROUNDS);
    uint64_t allocs = during.allocs - before.allocs;
    uint64_t frees = after.frees - before.frees;
    BB_CHECK(allocs >= SMALL + LARGE && allocs < SMALL + LARGE + 200, "allocs grew by %llu", (unsigned long long)allocs);
    BB_CHECK(frees >= SMALL + LARGE && frees < SMALL + LARGE + 200, "frees grew by %llu", (unsigned long long)frees);
    BB_CHECK(during.direct_allocs - before.direct_allocs == LARGE, "direct_allocs grew by %llu",
             (unsigned long long)(during.direct_allocs - before.direct_allocs));
    uint64_t hits = during.cache_hits - before.cache_hits, misses = during.cache_misses - before.cache_misses;
    BB_CHECK(hits + misses >= SMALL && hits > misses * 10, "hits %llu misses %llu", (unsigned long long)hits,
             (unsigned long long)misses);
    BB_CHECK(during.bytes_in_use >= before.bytes_in_use + (55ull << 20), "bytes in use %llu with 55 MiB live",
             (unsigned long long)during.bytes_in_use);
    BB_CHECK(after.bytes_in_use + (50ull << 20) < during.bytes_in_use, "bytes in use did not fall after free");
    BB_CHECK(during.peak_bytes_in_use >= during.bytes_in_use, "peak below current");
    BB_CHECK(during.bytes_mapped >= (55ull << 20), "bytes mapped %llu", (unsigned long long)during.bytes_mapped);
    BB_CHECK(after.threads_exited >= before.threads_exited + 1, "thread exit not counted");
    BB_CHECK(during.class_count > 0 && during.class_count <= AETHALLOC_MAX_CLASSES, "class count");
    uint64_t per_class = 0;
    for (uint32_t c = 0; c < during.class_count; c++) {
        per_class += during.class_allocs[c] - before.class_allocs[c];
        BB_CHECK(c == 0 || during.class_size[c] > during.class_size[c - 1], "class sizes not increasing");
    }
    BB_CHECK(per_class >= SMALL, "per-class allocations %llu", (unsigned long long)per_class);
    BB_CHECK(five.allocs >= after.allocs && five.frees >= after.frees, "five-counter snapshot behind");
    bb_say("metrics: allocs +%llu frees +%llu hits +%llu misses +%llu; consumer rounds: in use +%llu, peak +%llu",
           (unsigned long long)allocs, (unsigned long long)frees, (unsigned long long)hits,
           (unsigned long long)misses, (unsigned long long)in_use_growth, (unsigned long long)peak_growth);
    return 0;
}
