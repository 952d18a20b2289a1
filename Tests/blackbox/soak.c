/*
 * soak.c: time-bounded multi-threaded stress in which threads die and are
 * replaced while the blocks they allocated live on.
 *
 *     soak [seconds=2] [threads=4] [seed=1] [restart_ms=2]
 *
 * `threads` worker slots run for `seconds`. Each slot owns a table of up to
 * 512 live blocks; the thread running in a slot allocates (malloc, calloc,
 * posix_memalign, aligned_alloc; mostly up to 1 KiB, some up to 32 KiB, a
 * few up to 256 KiB), fills every byte of every block with a pattern from a
 * per-block seed, and later verifies the whole block before freeing it,
 * reallocating it (the kept prefix is verified, then the block refilled) or
 * passing it to another thread. A quarter of the operations on live blocks
 * pass the block through a shared exchange of 4096 entries; whoever takes
 * a block out verifies it and frees it, or reallocates and keeps it.
 *
 * Every `restart_ms` the main thread ends the thread of a random slot,
 * joins it and starts a new one in that slot, which inherits the table: the
 * blocks of dead threads stay live and are verified and freed later by
 * other threads. A thread ends in one of three ways, in turn: it returns
 * when asked, it calls pthread_exit when asked, or it is cancelled with
 * pthread_cancel (deferred; it tests for cancellation between operations).
 * The main thread also calls malloc_trim(0) every 50 ms while the workers
 * run. At the end everything left is verified and freed by the main thread.
 *
 * Checks (FAIL): block contents, calloc zeroing, alignment, usable size,
 * realloc keeping the old contents, RSS under 1 GiB (the live set is a few
 * tens of MiB: a limit that only a leak of dead threads' memory reaches).
 * Prints the operations, thread lifetimes and blocks passed between threads.
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>
#include <time.h>

#define NLOCAL 512
#define NEXCH 4096
#define MAX_THREADS 64
#define MiB ((size_t)1024 * 1024)

typedef struct {
    unsigned char *p;
    size_t n;
    uint64_t seed;
} blk_t;

typedef struct {
    pthread_t tid;
    int running;
    volatile int exit_request; /* 1: return, 2: pthread_exit */
    uint64_t rs;               /* the slot's random state, carried over threads */
    blk_t tab[NLOCAL];
    long ops, handed, received;
} slot_t;

static slot_t *slots;
static int nthreads;
static blk_t exch[NEXCH];
static pthread_mutex_t exch_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop_all;

/* ---- patterns: every byte, word-wise ---- */

static void fill(unsigned char *p, size_t n, uint64_t s) {
    size_t j = 0;
    for (; j + 8 <= n; j += 8) *(uint64_t *)(p + j) = bb_mix(s, j / 8);
    for (; j < n; j++) p[j] = bb_pat_byte(j, s);
}

static void verify(const unsigned char *p, size_t n, uint64_t s, size_t upto, const char *what) {
    if (upto > n) upto = n;
    size_t j = 0;
    for (; j + 8 <= upto; j += 8)
        if (*(const uint64_t *)(p + j) != bb_mix(s, j / 8)) break;
    for (; j < upto; j++)
        if (p[j] != bb_pat_byte(j, s))
            bb_fail("%s: block %p of %zu bytes corrupted at offset %zu (0x%02x, expected 0x%02x)", what, (void *)p, n,
                    j, p[j], bb_pat_byte(j, s));
}

static void check_and_free(blk_t b, const char *what) {
    verify(b.p, b.n, b.seed, b.n, what);
    free(b.p);
}

static size_t rand_size(uint64_t *rs) {
    uint64_t r = bb_rand(rs) % 1000;
    if (r < 900) return (size_t)(bb_rand(rs) % 1025);
    if (r < 990) return 1025 + (size_t)(bb_rand(rs) % (32768 - 1025));
    return 32769 + (size_t)(bb_rand(rs) % (262144 - 32769));
}

static blk_t alloc_blk(uint64_t *rs) {
    blk_t b = {.n = rand_size(rs), .seed = bb_rand(rs)};
    size_t n = b.n;
    uint64_t how = bb_rand(rs) % 100;
    if (how < 80) {
        b.p = malloc(n);
        BB_CHECK(b.p != NULL, "malloc(%zu) returned NULL", n);
        BB_CHECK(((uintptr_t)b.p & 15) == 0, "malloc(%zu) returned %p, not 16-byte aligned", n, (void *)b.p);
    } else if (how < 92) {
        b.p = calloc(1, n);
        BB_CHECK(b.p != NULL, "calloc(1, %zu) returned NULL", n);
        const unsigned char *c = bb_escape(b.p);
        for (size_t i = 0; i < n; i++)
            BB_CHECK(c[i] == 0, "calloc(1, %zu) returned %p, not zeroed at %zu", n, (void *)c, i);
    } else if (how < 96) {
        size_t al = (size_t)8 << (bb_rand(rs) % 10);
        void *q = NULL;
        int r = posix_memalign(&q, al, n);
        BB_CHECK(r == 0 && q != NULL, "posix_memalign(%zu, %zu) failed: %d", al, n, r);
        BB_CHECK(((uintptr_t)q & (al - 1)) == 0, "posix_memalign(%zu, %zu) returned %p", al, n, q);
        b.p = q;
    } else {
        size_t al = (size_t)16 << (bb_rand(rs) % 9);
        b.p = aligned_alloc(al, n);
        BB_CHECK(b.p != NULL, "aligned_alloc(%zu, %zu) returned NULL", al, n);
        BB_CHECK(((uintptr_t)b.p & (al - 1)) == 0, "aligned_alloc(%zu, %zu) returned %p", al, n, (void *)b.p);
    }
    BB_CHECK(malloc_usable_size(b.p) >= n, "usable size of a %zu-byte block is %zu", n, malloc_usable_size(b.p));
    fill(b.p, n, b.seed);
    return b;
}

/* realloc with checks: the old contents up to min(old, new) are kept. */
static blk_t realloc_blk(uint64_t *rs, blk_t b, const char *what) {
    verify(b.p, b.n, b.seed, b.n, what);
    size_t nn = rand_size(rs);
    if (nn == 0) nn = 1; /* realloc(p, 0) frees: not what we want here */
    unsigned char *q = realloc(b.p, nn);
    BB_CHECK(q != NULL, "realloc(%zu -> %zu) returned NULL", b.n, nn);
    BB_CHECK(((uintptr_t)q & 15) == 0, "realloc(%zu -> %zu) returned %p, not 16-byte aligned", b.n, nn, (void *)q);
    verify(q, b.n, b.seed, nn < b.n ? nn : b.n, "contents kept by realloc");
    BB_CHECK(malloc_usable_size(q) >= nn, "usable size after realloc to %zu is %zu", nn, malloc_usable_size(q));
    blk_t r = {.p = q, .n = nn, .seed = bb_rand(rs)};
    fill(q, nn, r.seed);
    return r;
}

/* Put b in a random exchange entry; return what was there (maybe nothing). */
static blk_t exchange(uint64_t *rs, blk_t b) {
    size_t e = (size_t)(bb_rand(rs) % NEXCH);
    pthread_mutex_lock(&exch_lock);
    blk_t old = exch[e];
    exch[e] = b;
    pthread_mutex_unlock(&exch_lock);
    return old;
}

static void *worker(void *arg) {
    slot_t *s = arg;
    uint64_t *rs = &s->rs;
    for (;;) {
        pthread_testcancel(); /* the only cancellation point: the table is consistent here */
        if (s->exit_request == 1 || stop_all) return NULL;
        if (s->exit_request == 2) pthread_exit(NULL);
        s->ops++;
        size_t i = (size_t)(bb_rand(rs) % NLOCAL);
        blk_t *b = &s->tab[i];
        if (!b->p) {
            *b = alloc_blk(rs);
            continue;
        }
        uint64_t act = bb_rand(rs) % 100;
        if (act < 10) {
            *b = realloc_blk(rs, *b, "block before realloc");
        } else if (act < 35) {
            /* A quarter: pass the block on, and take whatever was there. */
            blk_t give = *b;
            verify(give.p, give.n, give.seed, give.n, "block before passing it to another thread");
            b->p = NULL;
            blk_t got = exchange(rs, give);
            s->handed++;
            if (got.p) {
                s->received++;
                if (bb_rand(rs) % 4 == 0) *b = realloc_blk(rs, got, "block received from another thread, before realloc");
                else check_and_free(got, "block received from another thread");
            }
        } else {
            check_and_free(*b, "block freed by the thread holding it");
            b->p = NULL;
        }
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long lifetimes, cancelled, exited, returned;

static void start(int k) {
    int e = pthread_create(&slots[k].tid, NULL, worker, &slots[k]);
    BB_CHECK(e == 0, "pthread_create failed: %d", e);
    slots[k].running = 1;
    lifetimes++;
}

static void end(int k, int how) {
    slot_t *s = &slots[k];
    void *ret = NULL;
    if (how == 0) {
        int e = pthread_cancel(s->tid);
        BB_CHECK(e == 0, "pthread_cancel failed: %d", e);
    } else {
        s->exit_request = how;
    }
    int e = pthread_join(s->tid, &ret);
    BB_CHECK(e == 0, "pthread_join failed: %d", e);
    if (how == 0) {
        BB_CHECK(ret == PTHREAD_CANCELED, "a cancelled thread did not end cancelled");
        cancelled++;
    } else if (how == 1) {
        returned++;
    } else {
        exited++;
    }
    s->exit_request = 0;
    s->running = 0;
}


int main(int argc, char **argv) {
    bb_print_variant();
    double seconds = 2;
    int restart_ms = 2;
    unsigned long long seed = 1;
    nthreads = 4;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (bb_arg(argv[i], "seconds", &v)) seconds = strtod(v, NULL);
        else if (bb_arg(argv[i], "threads", &v)) nthreads = atoi(v);
        else if (bb_arg(argv[i], "seed", &v)) seed = strtoull(v, NULL, 0);
        else if (bb_arg(argv[i], "restart_ms", &v)) restart_ms = atoi(v);
        else bb_fail("usage: soak [seconds=S] [threads=N] [seed=N] [restart_ms=N] (got %s)", argv[i]);
    }
    BB_CHECK(seconds > 0 && nthreads > 0 && nthreads <= MAX_THREADS && restart_ms >= 0,
             "need seconds > 0, 1 <= threads <= %d, restart_ms >= 0", MAX_THREADS);
    slots = calloc((size_t)nthreads, sizeof *slots);
    BB_CHECK(slots != NULL, "calloc of the slot tables failed");
    for (int k = 0; k < nthreads; k++) slots[k].rs = seed * 0x9E3779B97F4A7C15ull + (uint64_t)k * 7919 + 1;
    uint64_t rs = seed ^ 0x5DEECE66Dull;

    for (int k = 0; k < nthreads; k++) start(k);
    double t0 = now(), deadline = t0 + seconds, next_trim = t0 + 0.05;
    size_t rss_max = 0;
    int how = 0;
    while (now() < deadline) {
        if (restart_ms > 0) {
            struct timespec ts = {restart_ms / 1000, (long)(restart_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            int k = (int)(bb_rand(&rs) % (uint64_t)nthreads);
            end(k, how);
            how = (how + 1) % 3;
            start(k);
        } else {
            struct timespec ts = {0, 10000000L};
            nanosleep(&ts, NULL);
        }
        double t = now();
        if (t >= next_trim) {
            malloc_trim(0);
            next_trim = t + 0.05;
            size_t rss = bb_rss_bytes();
            if (rss > rss_max) rss_max = rss;
            BB_CHECK(rss < 1024 * MiB, "RSS is %zu MiB after %.1f s (limit 1024 MiB)", rss / MiB, t - t0);
        }
    }
    stop_all = 1;
    long ops = 0, handed = 0, received = 0;
    for (int k = 0; k < nthreads; k++) {
        if (slots[k].running) pthread_join(slots[k].tid, NULL);
        ops += slots[k].ops;
        handed += slots[k].handed;
        received += slots[k].received;
    }
    double elapsed = now() - t0;
    /* Everything left: the tables of the last threads, the exchange. */
    size_t left = 0;
    for (int k = 0; k < nthreads; k++)
        for (size_t i = 0; i < NLOCAL; i++)
            if (slots[k].tab[i].p) {
                check_and_free(slots[k].tab[i], "block left in a slot's table at the end");
                left++;
            }
    for (size_t i = 0; i < NEXCH; i++)
        if (exch[i].p) {
            check_and_free(exch[i], "block left in the exchange at the end");
            left++;
        }
    free(slots);
    bb_say("soak: %.1f s, %d threads, %ld operations, %ld thread lifetimes (%ld cancelled, %ld pthread_exit, %ld "
           "returned), %ld blocks passed between threads (%ld taken), %zu freed at the end, max RSS %zu MiB",
           elapsed, nthreads, ops, lifetimes, cancelled, exited, returned, handed, received, left, rss_max / MiB);
    return 0;
}
