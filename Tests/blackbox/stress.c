/*
 * stress.c: multi-threaded allocation stress with cross-thread frees.
 *
 *     stress [threads=4] [iterations per thread=300000] [rounds=6]
 *
 * In each round `threads` threads are created. Each does its share of the
 * iterations over a private table of live blocks: allocate a random size
 * (mostly 8..1024 bytes, some up to 32 KiB, a few up to 256 KiB; malloc,
 * calloc, posix_memalign or aligned_alloc), fill it with a pattern derived
 * from its address and size, and later verify the pattern before freeing,
 * reallocating (then re-verifying) or handing the block to another thread.
 * About a quarter of the blocks go through a mutex-protected exchange array;
 * whoever takes a block out verifies and frees it. Blocks left in the
 * exchange when a round's threads exit are freed by the next round's
 * threads, and by main at the end.
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>

#define NLOCAL 512
#define NEXCH 4096

typedef struct {
    unsigned char *p;
    size_t n;
} blk_t;

static blk_t exch[NEXCH];
static pthread_mutex_t exch_lock = PTHREAD_MUTEX_INITIALIZER;
static long iters_per_thread;

static uintptr_t seed_of(const void *p, size_t n) { return (uintptr_t)p ^ (n * 0x100000001b3ull); }

/* Fill only a sample of big blocks to keep the run short: the first and
 * last 4 KiB and one byte per 512. */
static void fill_blk(unsigned char *p, size_t n) {
    uintptr_t s = seed_of(p, n);
    if (n <= 16384) {
        bb_fill(p, n, s);
        return;
    }
    for (size_t i = 0; i < 4096; i++) p[i] = bb_pat(s, i);
    for (size_t i = 4096; i < n - 4096; i += 512) p[i] = bb_pat(s, i);
    for (size_t i = n - 4096; i < n; i++) p[i] = bb_pat(s, i);
}

/* Verify the positions fill_blk wrote for a block of n bytes, limited to the
 * first `upto` bytes (the kept prefix after a realloc). */
static void verify_blk(const unsigned char *p, size_t n, uintptr_t s, size_t upto, const char *what) {
    if (upto > n) upto = n;
    if (n <= 16384) {
        size_t bad = bb_check(p, upto, s);
        BB_CHECK(bad == (size_t)-1, "%s: block %p of %zu bytes corrupted at offset %zu", what, (void *)p, n, bad);
        return;
    }
    for (size_t i = 0; i < 4096 && i < upto; i++)
        BB_CHECK(p[i] == bb_pat(s, i), "%s: block %p of %zu bytes corrupted at offset %zu", what, (void *)p, n, i);
    for (size_t i = 4096; i < n - 4096 && i < upto; i += 512)
        BB_CHECK(p[i] == bb_pat(s, i), "%s: block %p of %zu bytes corrupted at offset %zu", what, (void *)p, n, i);
    for (size_t i = n - 4096; i < upto; i++)
        BB_CHECK(p[i] == bb_pat(s, i), "%s: block %p of %zu bytes corrupted at offset %zu", what, (void *)p, n, i);
}

static void check_and_free(blk_t b, const char *what) {
    verify_blk(b.p, b.n, seed_of(b.p, b.n), b.n, what);
    free(b.p);
}

static size_t rand_size(uint64_t *rs) {
    uint64_t r = bb_rand(rs) % 1000;
    if (r < 900) return 8 + (size_t)(bb_rand(rs) % 1017);
    if (r < 990) return 1025 + (size_t)(bb_rand(rs) % (32768 - 1025));
    return 32769 + (size_t)(bb_rand(rs) % (262144 - 32769));
}

static unsigned char *alloc_blk(uint64_t *rs, size_t n) {
    unsigned char *p = NULL;
    uint64_t how = bb_rand(rs) % 100;
    if (how < 85) {
        p = malloc(n);
        BB_CHECK(p != NULL, "malloc(%zu) returned NULL", n);
    } else if (how < 95) {
        p = calloc(1, n);
        BB_CHECK(p != NULL, "calloc(1, %zu) returned NULL", n);
        const unsigned char *c = bb_escape(p);
        for (size_t i = 0; i < n; i += (n > 16384 ? 61 : 1))
            BB_CHECK(c[i] == 0, "calloc(1, %zu) block not zero at %zu", n, i);
    } else if (how < 98) {
        size_t al = (size_t)16 << (bb_rand(rs) % 9);
        void *q = NULL;
        int r = posix_memalign(&q, al, n);
        BB_CHECK(r == 0 && q != NULL, "posix_memalign(%zu, %zu) failed: %d", al, n, r);
        BB_CHECK(((uintptr_t)q & (al - 1)) == 0, "posix_memalign(%zu, %zu) returned %p", al, n, q);
        p = q;
    } else {
        size_t al = (size_t)32 << (bb_rand(rs) % 8);
        p = aligned_alloc(al, n);
        BB_CHECK(p != NULL, "aligned_alloc(%zu, %zu) returned NULL", al, n);
        BB_CHECK(((uintptr_t)p & (al - 1)) == 0, "aligned_alloc(%zu, %zu) returned %p", al, n, (void *)p);
    }
    BB_CHECK(malloc_usable_size(p) >= n, "usable size of a %zu-byte block is too small", n);
    fill_blk(p, n);
    return p;
}

/* Hand a block to the exchange; if the slot is taken, take that block
 * (allocated by some other thread, maybe an exited one) and free it. */
static void exchange(uint64_t *rs, blk_t b) {
    size_t slot = (size_t)(bb_rand(rs) % NEXCH);
    pthread_mutex_lock(&exch_lock);
    blk_t old = exch[slot];
    exch[slot] = b;
    pthread_mutex_unlock(&exch_lock);
    if (old.p) check_and_free(old, "block received from another thread");
}

static void *worker(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 12345;
    blk_t local[NLOCAL];
    memset(local, 0, sizeof local);
    for (long it = 0; it < iters_per_thread; it++) {
        size_t i = (size_t)(bb_rand(&rs) % NLOCAL);
        blk_t *b = &local[i];
        if (!b->p) {
            b->n = rand_size(&rs);
            b->p = alloc_blk(&rs, b->n);
            continue;
        }
        uint64_t act = bb_rand(&rs) % 100;
        if (act < 10) {
            /* realloc: verify, resize, check the kept prefix, refill. */
            uintptr_t oldseed = seed_of(b->p, b->n);
            verify_blk(b->p, b->n, oldseed, b->n, "block before realloc");
            size_t nn = rand_size(&rs);
            unsigned char *q = realloc(b->p, nn);
            BB_CHECK(q != NULL, "realloc(%zu -> %zu) returned NULL", b->n, nn);
            size_t keep = nn < b->n ? nn : b->n;
            verify_blk(q, b->n, oldseed, keep, "realloc kept prefix");
            b->p = q;
            b->n = nn;
            fill_blk(q, nn);
        } else if (act < 35) {
            blk_t give = *b;
            verify_blk(give.p, give.n, seed_of(give.p, give.n), give.n, "block before hand-off");
            b->p = NULL;
            exchange(&rs, give);
        } else {
            check_and_free(*b, "block freed by its own thread");
            b->p = NULL;
        }
    }
    /* Leave about half of the survivors to other threads. */
    for (size_t i = 0; i < NLOCAL; i++) {
        if (!local[i].p) continue;
        if (i % 2) exchange(&rs, local[i]);
        else check_and_free(local[i], "block freed at thread exit");
    }
    return NULL;
}

int main(int argc, char **argv) {
    bb_print_variant();
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long iters = argc > 2 ? atol(argv[2]) : 300000;
    int rounds = argc > 3 ? atoi(argv[3]) : 6;
    BB_CHECK(threads > 0 && iters > 0 && rounds > 0, "usage: stress [threads] [iterations] [rounds]");
    iters_per_thread = iters / rounds;
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    BB_CHECK(tid != NULL, "calloc failed");
    for (int r = 0; r < rounds; r++) {
        for (int t = 0; t < threads; t++) {
            int e = pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)(r * threads + t + 1));
            BB_CHECK(e == 0, "pthread_create failed: %d", e);
        }
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    }
    size_t left = 0;
    for (size_t i = 0; i < NEXCH; i++) {
        if (!exch[i].p) continue;
        check_and_free(exch[i], "block left in the exchange");
        left++;
    }
    free(tid);
    bb_say("stress: %d threads x %d rounds x %ld iterations, %zu blocks freed by main", threads, rounds,
           iters_per_thread, left);
    return 0;
}
