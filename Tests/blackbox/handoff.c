/* handoff.c: producer/consumer handoff must not bloat memory.
 *
 * A producer thread allocates ROUNDS x BATCH 64-byte blocks and hands each
 * batch to a consumer thread, which verifies and frees them. The consumer
 * frees blocks it never allocated, so every caching scheme must move them
 * back (magazines to the depot, batches to the pool, the excess to the pages).
 * Then all live memory is freed and RSS, without malloc_trim, must fall below
 * a quarter of its peak. */
#include "bb.h"
#include <pthread.h>

#define BATCH 4096
static int rounds = 400;

static void *slot[2][BATCH];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int filled = -1;  /* which slot holds a batch for the consumer, or -1 */
static int done = 0;
static size_t peak;

static void *producer(void *arg) {
    (void)arg;
    for (int r = 0; r < rounds; r++) {
        int s = r & 1;
        for (int i = 0; i < BATCH; i++) {
            slot[s][i] = malloc(64);
            BB_CHECK(slot[s][i] != NULL, "malloc failed");
            bb_fill(slot[s][i], 64, (uintptr_t)slot[s][i]);
        }
        pthread_mutex_lock(&lock);
        while (filled != -1) pthread_cond_wait(&cond, &lock);
        filled = s;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    while (filled != -1) pthread_cond_wait(&cond, &lock);
    done = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (filled == -1 && !done) pthread_cond_wait(&cond, &lock);
        if (filled == -1 && done) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        int s = filled;
        pthread_mutex_unlock(&lock);
        size_t rss = bb_rss_bytes();
        if (rss > peak) peak = rss;
        for (int i = 0; i < BATCH; i++) {
            BB_CHECK(bb_check(slot[s][i], 64, (uintptr_t)slot[s][i]) == (size_t)-1, "block %p corrupted", slot[s][i]);
            free(slot[s][i]);
        }
        pthread_mutex_lock(&lock);
        filled = -1;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
    }
}

int main(int argc, char **argv) {
    bb_print_variant();
    if (argc > 1) rounds = atoi(argv[1]);
    /* A long-lived working set the handoff runs beside, freed at the end. */
    enum { LIVE = 400000 };
    static void *live[LIVE];
    for (int i = 0; i < LIVE; i++) {
        live[i] = malloc(64 + (size_t)(i % 4) * 64);
        memset(live[i], 1, 64 + (size_t)(i % 4) * 64);
    }
    size_t with_live = bb_rss_bytes();
    pthread_t p, c;
    BB_CHECK(pthread_create(&p, NULL, producer, NULL) == 0, "pthread_create");
    BB_CHECK(pthread_create(&c, NULL, consumer, NULL) == 0, "pthread_create");
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    size_t after_handoff = bb_rss_bytes();
    /* The handoff moved rounds * BATCH * 64 bytes (100 MiB by default) through
     * two threads; what it leaves behind must be small next to that. */
    BB_CHECK(after_handoff < with_live + (24u << 20), "RSS grew from %zu KiB to %zu KiB across the handoff",
             with_live >> 10, after_handoff >> 10);
    for (int i = 0; i < LIVE; i++) free(live[i]);
    size_t final = bb_rss_bytes();
    BB_CHECK(final * 4 < with_live, "RSS %zu KiB after freeing everything, %zu KiB at peak", final >> 10,
             with_live >> 10);
    bb_say("handoff: RSS %zu KiB with live set, %zu KiB after handoff, %zu KiB after freeing all", with_live >> 10,
           after_handoff >> 10, final >> 10);
    return 0;
}
