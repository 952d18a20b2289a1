/*
 * thread_churn.c: thousands of short-lived threads must not make memory grow.
 *
 *     thread_churn [threads=5000] [concurrent=4]
 *
 * Threads are started `concurrent` at a time. Each allocates blocks of many
 * size classes (so any per-thread cache or heap gets populated), frees most
 * of them, and hands a few to a survivor list that the main thread frees
 * later, after the allocating thread has exited. An allocator that leaks a
 * thread's cached or abandoned memory grows linearly with the number of
 * threads: the check is that RSS stays under 200 MiB and that it grew by no
 * more than 64 MiB between the first 1000 threads and the end.
 */
#include "bb.h"

#include <pthread.h>

#define MiB ((size_t)1024 * 1024)
#define SURVIVORS_MAX 4096

static void *survivors[SURVIVORS_MAX];
static size_t survivor_sizes[SURVIVORS_MAX];
static int nsurvivors;
static pthread_mutex_t surv_lock = PTHREAD_MUTEX_INITIALIZER;
static long survivors_freed;

static void free_survivors(void) {
    pthread_mutex_lock(&surv_lock);
    for (int i = 0; i < nsurvivors; i++) {
        size_t bad = bb_check(survivors[i], survivor_sizes[i], (uintptr_t)survivors[i]);
        BB_CHECK(bad == (size_t)-1, "survivor block of %zu bytes corrupted at offset %zu after its thread exited",
                 survivor_sizes[i], bad);
        free(survivors[i]);
        survivors_freed++;
    }
    nsurvivors = 0;
    pthread_mutex_unlock(&surv_lock);
}

static void *churn(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 7;
    enum { N = 160 };
    void *p[N];
    size_t n[N];
    for (int i = 0; i < N; i++) {
        /* Every small size class up to 4 KiB, a few medium and large. */
        if (i < 128) n[i] = 8 + (size_t)i * 32 + (size_t)(bb_rand(&rs) % 32);
        else if (i < 159) n[i] = 4096 + (size_t)(bb_rand(&rs) % 60000);
        else n[i] = 100000 + (size_t)(bb_rand(&rs) % 200000);
        p[i] = (i % 5 == 0) ? calloc(1, n[i]) : malloc(n[i]);
        BB_CHECK(p[i] != NULL, "allocation of %zu bytes failed", n[i]);
        /* Touch every page, so that leaked memory shows in RSS. */
        unsigned char *c = p[i];
        memset(c, 0x77, n[i] < 256 ? n[i] : 256);
        for (size_t k = 4096; k < n[i]; k += 4096) c[k] = 0x77;
        c[n[i] - 1] = 0x77;
    }
    for (int i = 0; i < N; i += 3) {
        p[i] = realloc(p[i], n[i] / 2 + 1);
        BB_CHECK(p[i] != NULL, "realloc failed");
        n[i] = n[i] / 2 + 1;
    }
    for (int i = 0; i < N; i++) {
        if (i % 53 == 7 && n[i] <= 8192) {
            bb_fill(p[i], n[i], (uintptr_t)p[i]);
            pthread_mutex_lock(&surv_lock);
            if (nsurvivors < SURVIVORS_MAX) {
                survivors[nsurvivors] = p[i];
                survivor_sizes[nsurvivors] = n[i];
                nsurvivors++;
                p[i] = NULL;
            }
            pthread_mutex_unlock(&surv_lock);
        }
        free(p[i]);
    }
    /* Leave the thread with a warm cache: allocate and free a batch last. */
    for (int i = 0; i < 64; i++) p[i] = bb_escape(malloc(16 + (size_t)i * 16));
    for (int i = 0; i < 64; i++) free(p[i]);
    return NULL;
}

int main(int argc, char **argv) {
    bb_print_variant();
    int total = argc > 1 ? atoi(argv[1]) : 5000;
    int conc = argc > 2 ? atoi(argv[2]) : 4;
    BB_CHECK(total >= 2000 && conc > 0 && conc <= 64, "usage: thread_churn [threads >= 2000] [concurrent <= 64]");
    pthread_t tid[64];
    size_t rss_first = 0, rss_max = 0;
    int started = 0, checkpoint = 1000;
    while (started < total) {
        int batch = conc;
        if (batch > total - started) batch = total - started;
        for (int t = 0; t < batch; t++) {
            int e = pthread_create(&tid[t], NULL, churn, (void *)(uintptr_t)(started + t + 1));
            BB_CHECK(e == 0, "pthread_create failed: %d", e);
        }
        for (int t = 0; t < batch; t++) pthread_join(tid[t], NULL);
        started += batch;
        if (started % 200 < conc) free_survivors();
        if (started >= checkpoint) {
            free_survivors();
            size_t rss = bb_rss_bytes();
            BB_CHECK(rss != 0, "cannot read /proc/self/statm");
            if (!rss_first) rss_first = rss;
            if (rss > rss_max) rss_max = rss;
            BB_CHECK(rss < 200 * MiB, "RSS is %zu MiB after %d threads (limit 200 MiB)", rss / MiB, started);
            checkpoint += 1000;
        }
    }
    free_survivors();
    size_t rss_end = bb_rss_bytes();
    if (rss_end > rss_max) rss_max = rss_end;
    BB_CHECK(rss_end < 200 * MiB, "RSS is %zu MiB at the end (limit 200 MiB)", rss_end / MiB);
    BB_CHECK(rss_end <= rss_first + 64 * MiB,
             "RSS grew from %zu MiB after the first 1000 threads to %zu MiB after %d threads (limit +64 MiB)",
             rss_first / MiB, rss_end / MiB, total);
    bb_say("thread_churn: %d threads, %ld survivor blocks freed by main, RSS %zu KiB after 1000, %zu KiB at end, "
           "max %zu KiB",
           total, survivors_freed, rss_first / 1024, rss_end / 1024, rss_max / 1024);
    return 0;
}
