/*
 * thread_lifetimes.c: thousands of detached, overlapping thread lifetimes,
 * each freeing blocks that threads which have already exited allocated.
 *
 *     thread_lifetimes [threads=4000] [concurrent=32]
 *
 * The main thread keeps up to `concurrent` detached threads alive, starting
 * a new one whenever one ends, until `threads` have run. Each thread takes
 * 16 blocks out of a shared ring (allocated by earlier threads, most of them
 * gone by then), verifies and frees them, allocates 16 blocks of assorted
 * sizes (16 B - 64 KiB, a few large) filled with a pattern and puts them in
 * the ring, churns a few hundred blocks of its own (every small class, so
 * its cache has something in each), and exits, now and then from a thread-
 * specific-data destructor that allocates and frees too, or after starting
 * and joining a short-lived thread of its own.
 *
 * Checks (FAIL): block contents across owners; RSS stays under 256 MiB and
 * grows by at most 64 MiB from the first 1000 threads to the end (dead
 * threads' caches are reused, not leaked). Prints the thread count.
 */
#include "bb.h"

#include <pthread.h>
#include <semaphore.h>

#define MiB ((size_t)1024 * 1024)
#define RING 4096
#define TAKE 16

typedef struct {
    unsigned char *p;
    size_t n;
} blk_t;

static blk_t ring[RING];
static size_t ring_pos;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static sem_t slots;
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static long done, nested;
static pthread_key_t key;

static uintptr_t seed_of(const blk_t *b) { return (uintptr_t)b->p ^ (b->n * 0x9E3779B97F4A7C15ull); }

static size_t rand_size(uint64_t *rs) {
    uint64_t r = bb_rand(rs) % 100;
    if (r < 85) return 1 + (size_t)(bb_rand(rs) % 1024);
    if (r < 99) return 1025 + (size_t)(bb_rand(rs) % (64 * 1024 - 1024));
    return 65537 + (size_t)(bb_rand(rs) % (512 * 1024));
}

static void verify_free(blk_t b, const char *what) {
    size_t bad = bb_check(b.p, b.n, seed_of(&b));
    BB_CHECK(bad == (size_t)-1, "%s: block %p of %zu bytes corrupted at offset %zu", what, (void *)b.p, b.n, bad);
    free(b.p);
}

static void churn(uint64_t *rs) {
    void *p[128];
    for (int i = 0; i < 128; i++) {
        size_t n = 16 + (size_t)i * 16 + (size_t)(bb_rand(rs) % 16);
        p[i] = malloc(n);
        BB_CHECK(p[i] != NULL, "malloc(%zu) failed", n);
        memset(p[i], i, n < 64 ? n : 64);
    }
    for (int i = 0; i < 128; i += 2) free(p[i]);
    for (int i = 1; i < 128; i += 2) free(p[i]);
}

static void destructor(void *v) {
    /* Allocation from a TSD destructor, while the thread is being torn down. */
    uint64_t rs = (uint64_t)(uintptr_t)v;
    void *q = malloc(200);
    BB_CHECK(q != NULL, "malloc in a TSD destructor failed");
    memset(q, 1, 200);
    churn(&rs);
    free(q);
    free(v);
}

static void *inner(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg;
    churn(&rs);
    return NULL;
}

static void *life(void *arg) {
    uint64_t id = (uint64_t)(uintptr_t)arg;
    uint64_t rs = id * 0x9E3779B97F4A7C15ull + 11;
    blk_t mine[TAKE], old[TAKE];
    for (int i = 0; i < TAKE; i++) {
        mine[i].n = rand_size(&rs);
        mine[i].p = malloc(mine[i].n);
        BB_CHECK(mine[i].p != NULL, "malloc(%zu) failed", mine[i].n);
        bb_fill(mine[i].p, mine[i].n, seed_of(&mine[i]));
    }
    pthread_mutex_lock(&ring_lock);
    for (int i = 0; i < TAKE; i++) {
        old[i] = ring[ring_pos];
        ring[ring_pos] = mine[i];
        ring_pos = (ring_pos + 1) % RING;
    }
    pthread_mutex_unlock(&ring_lock);
    for (int i = 0; i < TAKE; i++)
        if (old[i].p) verify_free(old[i], "block from an earlier thread");
    churn(&rs);
    uint64_t r = bb_rand(&rs) % 8;
    if (r == 0) {
        /* Leave something for a TSD destructor to free at exit. */
        void *v = malloc(48);
        BB_CHECK(v != NULL, "malloc failed");
        pthread_setspecific(key, v);
    } else if (r == 1) {
        pthread_t t;
        if (pthread_create(&t, NULL, inner, (void *)(uintptr_t)bb_rand(&rs)) == 0) {
            pthread_join(t, NULL);
            pthread_mutex_lock(&done_lock);
            nested++;
            pthread_mutex_unlock(&done_lock);
        }
    }
    pthread_mutex_lock(&done_lock);
    done++;
    pthread_mutex_unlock(&done_lock);
    sem_post(&slots);
    return NULL;
}

int main(int argc, char **argv) {
    bb_print_variant();
    int total = 4000, conc = 32;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "threads=", 8) == 0) total = atoi(argv[i] + 8);
        else if (strncmp(argv[i], "concurrent=", 11) == 0) conc = atoi(argv[i] + 11);
        else bb_fail("usage: thread_lifetimes [threads=N >= 2000] [concurrent=N] (got %s)", argv[i]);
    }
    BB_CHECK(total >= 2000 && conc >= 1 && conc <= 256, "need threads >= 2000 and 1 <= concurrent <= 256");
    BB_CHECK(pthread_key_create(&key, destructor) == 0, "pthread_key_create failed");
    BB_CHECK(sem_init(&slots, 0, (unsigned)conc) == 0, "sem_init failed");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    size_t rss_first = 0, rss_max = 0;
    for (int started = 0; started < total; started++) {
        while (sem_wait(&slots) != 0) {}
        pthread_t t;
        int e;
        while ((e = pthread_create(&t, &attr, life, (void *)(uintptr_t)(started + 1))) == EAGAIN) usleep(1000);
        BB_CHECK(e == 0, "pthread_create failed: %d", e);
        if ((started + 1) % 1000 == 0) {
            size_t rss = bb_rss_bytes();
            if (!rss_first) rss_first = rss;
            if (rss > rss_max) rss_max = rss;
            BB_CHECK(rss < 256 * MiB, "RSS is %zu MiB after %d threads (limit 256 MiB)", rss / MiB, started + 1);
        }
    }
    /* Wait for the last ones: every slot back. */
    for (int i = 0; i < conc; i++)
        while (sem_wait(&slots) != 0) {}
    /* A detached thread has posted but may still be exiting; give the last
     * ones a moment before reading RSS. */
    usleep(20000);
    pthread_mutex_lock(&done_lock);
    long finished = done;
    pthread_mutex_unlock(&done_lock);
    BB_CHECK(finished == total, "%ld of %d threads finished", finished, total);
    size_t left = 0;
    for (size_t i = 0; i < RING; i++)
        if (ring[i].p) {
            verify_free(ring[i], "block left in the ring");
            left++;
        }
    size_t rss_end = bb_rss_bytes();
    BB_CHECK(rss_end <= rss_first + 64 * MiB, "RSS grew from %zu MiB after 1000 threads to %zu MiB at the end",
             rss_first / MiB, rss_end / MiB);
    bb_say("thread_lifetimes: %d detached threads, up to %d at once, %ld started a thread of their own, %zu blocks "
           "freed by main, RSS %zu MiB after 1000, max %zu MiB, %zu MiB at the end",
           total, conc, nested, left, rss_first / MiB, rss_max / MiB, rss_end / MiB);
    return 0;
}
