/*
 * api_fuzz.c: random sequences of the whole malloc API, checked against a
 * shadow model of every live block.
 *
 *     api_fuzz [seed=1] [iterations=200000] [seconds=0] [maxlive=3000] [maxbytes=128] [edge=1]
 *              [faults=0] [recover=20000]
 *
 * First (unless edge=0) a fixed set of edge cases: every power-of-two
 * alignment from 1 B to 256 MiB with sizes 0, 1, alignment - 1, alignment
 * and alignment + 1 (up to 8 MiB), through aligned_alloc, posix_memalign and
 * memalign, each next to freshly mapped neighbours that must stay intact and
 * recognised (malloc_usable_size unchanged, contents kept).
 *
 * Then, from a fixed seed, a random sequence of operations: malloc, calloc,
 * realloc (from NULL, to 0, to large sizes, and chains of reallocs on one
 * block), reallocarray, aligned_alloc, posix_memalign, memalign, valloc and
 * pvalloc with every power-of-two alignment from 1 B to 2 MiB (1% of them
 * 4 - 64 MiB), free, free_sized, free_aligned_sized, malloc_usable_size,
 * malloc_trim, the documented failures (sizes above PTRDIFF_MAX, calloc and
 * reallocarray overflow, a realloc that cannot be satisfied, a
 * posix_memalign alignment that is not a power of two), and cross-thread
 * traffic with a helper thread: blocks handed to it are verified and freed
 * there, and blocks it allocates are handed back, adopted by the model and
 * freed here.
 *
 * The shadow model keeps every live block (address, requested size, usable
 * size, alignment, how it was allocated, pattern seed) in an array sorted by
 * address. Each check below is a FAIL:
 *   - a successful call returns a block whose alignment is at least the one
 *     asked for (16 bytes for malloc, calloc and realloc), with
 *     malloc_usable_size >= the request, stable for the block's lifetime;
 *   - a new block overlaps no live block (the whole usable size counts:
 *     every block is filled up to its usable size);
 *   - a block's contents are the pattern it was filled with, checked when
 *     it is freed or reallocated, after malloc_trim, and periodically for
 *     every live block; realloc keeps the old contents up to min(old, new);
 *   - calloc returns zeroed memory (also when it reuses a dirty block);
 *   - the documented failures return NULL with errno = ENOMEM (EINVAL for
 *     posix_memalign) and leave the block passed in intact; free preserves
 *     errno.
 *
 * Sizes: 0, tiny, every size-class boundary +-1, powers of two +-1, up to
 * 64 KiB, large (64 KiB - 8 MiB) and rarely huge (8 - 72 MiB). At most
 * `maxlive` blocks and `maxbytes` MiB are live at a time.
 *
 * Output: "aethalloc_variant=<name>", then one line with the number of
 * operations done and one with per-operation counts. On the first
 * discrepancy: one line "FAIL: api_fuzz seed=S op=N: <what>" and exit status
 * 1; a crash (an allocator's abort, a fault) prints the same line with the
 * signal (op=-1: in the edge cases, which it names) and dies by the signal.
 * To reproduce (the operation sequence depends only on the seed):
 *
 *     cc -O1 -g -pthread -o api_fuzz Tests/fuzz/api_fuzz.c -ldl
 *     LD_PRELOAD=.build/release/libaethalloc.so ./api_fuzz seed=S iterations=N+1
 *
 * With faults=N (N > 0) the random sequence runs with a fault plan
 * (../blackbox/faults.h; the program is built with -rdynamic): every N-th
 * mmap, munmap, madvise, mprotect and mremap the allocator makes fails. Then
 * any allocation may fail, but only with NULL + ENOMEM (posix_memalign:
 * ENOMEM) and with the block passed in intact; every other check stands
 * (no block handed out twice, calloc zeroed, contents kept). After the
 * iterations the faults stop and `recover` more operations run with the
 * strict checks: the allocator must have fully recovered.
 *
 * Runs under glibc (no preload) too; functions glibc lacks (free_sized,
 * free_aligned_sized before glibc 2.39) fall back to free.
 */
#include "../blackbox/bb.h"
#include "../blackbox/faults.h"

#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* ---- configuration and failure reporting ------------------------------- */

static unsigned long long g_seed = 1;
static long g_op;                  /* index of the operation in progress */
static long g_iterations = 200000; /* 0: no limit */
static double g_seconds;           /* 0: no limit */
static size_t g_maxlive = 3000;
static size_t g_maxbytes = 128 * MiB;
static size_t g_page;
static int g_edge = 1; /* run the fixed edge cases first */
static unsigned long g_faults; /* every N-th OS call of each kind fails (0: none) */
static long g_recover = 20000; /* operations after the faults stop */
static int g_faulty;           /* faults on now: NULL + ENOMEM is a valid answer */
static long g_enomem;          /* allocations that failed that way */
#define NO_SLOT UINT32_MAX

#define FAIL(...) fuzz_fail(g_op, __VA_ARGS__)

__attribute__((format(printf, 2, 3), noreturn)) static void fuzz_fail(long op, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bb_fail("api_fuzz seed=%llu op=%ld: %s", g_seed, op, msg);
}

#define CHECK(cond, ...) \
    do {                 \
        if (!(cond)) FAIL(__VA_ARGS__); \
    } while (0)

/* Functions not every allocator defines. */
static void (*p_free_sized)(void *, size_t);
static void (*p_free_aligned_sized)(void *, size_t, size_t);

/* ---- patterns -------------------------------------------------------------
 * Byte j of a block with seed s is byte j % 8 of bb_mix(s, j / 8); blocks are
 * 16-byte aligned at least, so whole words are written as words. Blocks up
 * to 256 KiB are filled and checked whole; larger ones in their first and
 * last 64 KiB and the first 64 bytes of every 4 KiB page in between (enough
 * to see a page lost, purged, moved or shared). */

#define SPARSE_ABOVE (256 * KiB)
#define SPARSE_EDGE (64 * KiB)


static void fill_range(unsigned char *p, size_t from, size_t to, uint64_t s) {
    size_t j = from;
    for (; j < to && (j & 7); j++) p[j] = bb_pat_byte(j, s);
    for (; j + 8 <= to; j += 8) *(uint64_t *)(p + j) = bb_mix(s, j / 8);
    for (; j < to; j++) p[j] = bb_pat_byte(j, s);
}

/* First offset in [from, to) that differs from the pattern, or (size_t)-1. */
static size_t check_range(const unsigned char *p, size_t from, size_t to, uint64_t s) {
    size_t j = from;
    for (; j < to && (j & 7); j++)
        if (p[j] != bb_pat_byte(j, s)) return j;
    for (; j + 8 <= to; j += 8)
        if (*(const uint64_t *)(p + j) != bb_mix(s, j / 8)) break;
    for (; j < to; j++)
        if (p[j] != bb_pat_byte(j, s)) return j;
    return (size_t)-1;
}

/* Fill the pattern positions of an n-byte block. */
static void pat_fill(unsigned char *p, size_t n, uint64_t s) {
    if (n <= SPARSE_ABOVE) {
        fill_range(p, 0, n, s);
        return;
    }
    fill_range(p, 0, SPARSE_EDGE, s);
    for (size_t pg = SPARSE_EDGE; pg < n - SPARSE_EDGE; pg += 4096) fill_range(p, pg, pg + 64, s);
    fill_range(p, n - SPARSE_EDGE, n, s);
}

/* Check the pattern positions of an n-byte block below `limit`; the first
 * bad offset or (size_t)-1. */
static size_t pat_check_upto(const unsigned char *p, size_t n, uint64_t s, size_t limit) {
    size_t bad;
    if (limit > n) limit = n;
#define UPTO(x) ((x) < limit ? (x) : limit)
    if (n <= SPARSE_ABOVE) return check_range(p, 0, limit, s);
    if ((bad = check_range(p, 0, UPTO(SPARSE_EDGE), s)) != (size_t)-1) return bad;
    for (size_t pg = SPARSE_EDGE; pg < n - SPARSE_EDGE && pg < limit; pg += 4096)
        if ((bad = check_range(p, pg, UPTO(pg + 64), s)) != (size_t)-1) return bad;
    if (n - SPARSE_EDGE < limit && (bad = check_range(p, n - SPARSE_EDGE, limit, s)) != (size_t)-1) return bad;
#undef UPTO
    return (size_t)-1;
}

static size_t pat_check(const unsigned char *p, size_t n, uint64_t s) { return pat_check_upto(p, n, s, n); }

/* ---- the shadow model ------------------------------------------------------ */

enum kind {
    K_MALLOC, K_CALLOC, K_REALLOC, K_REALLOCARRAY, K_ALIGNED_ALLOC, K_POSIX_MEMALIGN, K_MEMALIGN, K_VALLOC,
    K_PVALLOC, K_HELPER_MALLOC, K_HELPER_ALIGNED, K_COUNT
};
static const char *kind_name[K_COUNT] = {
    "malloc", "calloc", "realloc", "reallocarray", "aligned_alloc", "posix_memalign", "memalign", "valloc",
    "pvalloc", "malloc (helper thread)", "aligned_alloc (helper thread)",
};

typedef struct {
    unsigned char *p;
    size_t size;   /* requested */
    size_t usable; /* malloc_usable_size at allocation; filled with the pattern */
    size_t align;  /* alignment asked for */
    uint64_t seed; /* pattern seed */
    long op;       /* operation that allocated it */
    int kind;
    uint32_t dense; /* its index in `dense` */
} blk_t;

/* The live blocks: records in `pool` (a block is named by its slot there);
 * `order`, their slots sorted by address (so an insertion moves 4-byte
 * entries); `dense`, their slots in an order that depends only on the
 * operation sequence, from which blocks are picked at random (so that what
 * the program does depends on the seed, not on the addresses it gets). All
 * are mmap'ed, so not themselves in the heap under test. */
static blk_t *pool;
static uint32_t *order, *dense, *free_slots;
static size_t nlive, nfree_slots, live_bytes, max_nlive, max_live_bytes;
#define LIVE(i) (pool[order[i]])

static size_t extent(const blk_t *b) { return b->usable ? b->usable : 1; }

/* Index in `order` of the first block with address >= p. */
static size_t lower_bound(const unsigned char *p) {
    size_t lo = 0, hi = nlive;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)LIVE(mid).p < (uintptr_t)p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void describe(char *buf, size_t n, const blk_t *b) {
    snprintf(buf, n, "%p (%s(%zu) align %zu, usable %zu, allocated at op %ld)", (void *)b->p, kind_name[b->kind],
             b->size, b->align, b->usable, b->op);
}

/* Add a new block, which must overlap no live block; returns its slot. */
static uint32_t shadow_insert(const blk_t *b) {
    CHECK(nfree_slots > 0, "shadow model full");
    size_t i = lower_bound(b->p);
    char d1[200], d2[200];
    if (i > 0) {
        const blk_t *prev = &LIVE(i - 1);
        if ((uintptr_t)prev->p + extent(prev) > (uintptr_t)b->p) {
            describe(d1, sizeof d1, b);
            describe(d2, sizeof d2, prev);
            FAIL("new block %s overlaps live block %s", d1, d2);
        }
    }
    if (i < nlive) {
        const blk_t *next = &LIVE(i);
        if ((uintptr_t)b->p + extent(b) > (uintptr_t)next->p) {
            describe(d1, sizeof d1, b);
            describe(d2, sizeof d2, next);
            FAIL("new block %s overlaps live block %s", d1, d2);
        }
    }
    uint32_t slot = free_slots[--nfree_slots];
    pool[slot] = *b;
    memmove(&order[i + 1], &order[i], (nlive - i) * sizeof *order);
    order[i] = slot;
    pool[slot].dense = (uint32_t)nlive;
    dense[nlive] = slot;
    nlive++;
    live_bytes += b->size;
    if (nlive > max_nlive) max_nlive = nlive;
    if (live_bytes > max_live_bytes) max_live_bytes = live_bytes;
    return slot;
}

static blk_t shadow_remove(uint32_t slot) {
    blk_t b = pool[slot];
    size_t i = lower_bound(b.p);
    CHECK(i < nlive && order[i] == slot, "shadow model inconsistent");
    memmove(&order[i], &order[i + 1], (nlive - i - 1) * sizeof *order);
    uint32_t last = dense[nlive - 1];
    dense[b.dense] = last;
    pool[last].dense = b.dense;
    nlive--;
    free_slots[nfree_slots++] = slot;
    live_bytes -= b.size;
    return b;
}

/* ---- checks on blocks ------------------------------------------------------ */

static uint64_t rng; /* the operation sequence's generator */

static inline uint64_t rnd(void) { return bb_rand(&rng); }
static inline size_t below(size_t n) { return (size_t)(rnd() % n); }
static inline int chance(unsigned per_thousand) { return rnd() % 1000 < per_thousand; }

static void verify_block(const blk_t *b, const char *when) {
    size_t bad = pat_check(b->p, b->usable, b->seed);
    if (bad != (size_t)-1) {
        char d[200];
        describe(d, sizeof d, b);
        FAIL("%s: block %s corrupted at offset %zu (byte 0x%02x, expected 0x%02x)", when, d, bad, b->p[bad],
             bb_pat_byte(bad, b->seed));
    }
    size_t us = malloc_usable_size(b->p);
    if (us != b->usable) {
        char d[200];
        describe(d, sizeof d, b);
        FAIL("%s: malloc_usable_size of block %s changed to %zu", when, d, us);
    }
}

static void verify_all(const char *when) {
    for (size_t i = 0; i < nlive; i++) verify_block(&LIVE(i), when);
}

/* Record a block returned by a successful call: alignment, usable size,
 * no overlap; fill it with a fresh pattern. */
static uint32_t adopt(void *ptr, size_t size, size_t align, int kind, const char *call) {
    if (ptr == NULL && g_faulty) {
        CHECK(errno == ENOMEM, "%s returned NULL with errno %d under the fault plan (expected ENOMEM)", call, errno);
        g_enomem++;
        return NO_SLOT;
    }
    CHECK(ptr != NULL, "%s returned NULL", call);
    CHECK(((uintptr_t)ptr & (align - 1)) == 0, "%s returned %p, not %zu-byte aligned", call, ptr, align);
    size_t us = malloc_usable_size(ptr);
    CHECK(us >= size, "%s: malloc_usable_size(%p) = %zu < %zu requested", call, ptr, us, size);
    CHECK(us < size + 64 * MiB, "%s: malloc_usable_size(%p) = %zu is absurd for %zu requested", call, ptr, us, size);
    blk_t b = {.p = ptr, .size = size, .usable = us, .align = align, .seed = rnd(), .op = g_op, .kind = kind};
    uint32_t slot = shadow_insert(&b);
    pat_fill(b.p, b.usable, b.seed);
    return slot;
}

/* ---- sizes and alignments ---------------------------------------------------- */

static size_t class_size(int c) {
    if (c < 8) return (size_t)(c + 1) * 16;
    int e = 7 + (c - 8) / 4, k = (c - 8) % 4 + 1;
    return ((size_t)1 << e) + (size_t)k * ((size_t)1 << (e - 2));
}

static size_t rand_size(void) {
    unsigned r = (unsigned)below(1000);
    if (r < 30) return 0;
    if (r < 230) return 1 + below(128);
    if (r < 500) return 129 + below(1024 - 128);
    if (r < 600) { /* a size-class boundary, +-1 */
        size_t s = class_size((int)below(44));
        return s - 1 + below(3);
    }
    if (r < 680) { /* a power of two from 16 B to 4 MiB, +-1 */
        size_t s = (size_t)1 << (4 + below(19));
        return s - 1 + below(3);
    }
    if (r < 900) return 1025 + below(64 * KiB - 1024);
    if (r < 985) return 64 * KiB + 1 + below(1 * MiB);
    if (r < 999) return 1 * MiB + below(7 * MiB);
    return 8 * MiB + below(64 * MiB); /* 8 - 72 MiB: beyond the large cache's span limit */
}

/* Sizes for calloc/realloc chains, biased small. */
static size_t small_size(void) { return chance(900) ? below(2048) : rand_size(); }

/* A power of two from 1 B to 2 MiB, biased to the small end; rarely 4 - 64 MiB. */
static size_t rand_align(void) {
    unsigned r = (unsigned)below(1000);
    if (r < 500) return (size_t)1 << below(9);   /* 1 .. 256 */
    if (r < 850) return (size_t)1 << below(17);  /* .. 64 KiB */
    if (r < 990) return (size_t)1 << below(22);  /* .. 2 MiB */
    return (size_t)1 << (22 + below(5));         /* 4 .. 64 MiB */
}

/* Room left under the live limits for a request of `size` bytes. */
static int fits(size_t size) { return nlive < g_maxlive && live_bytes + size <= g_maxbytes; }

/* ---- the helper thread ----------------------------------------------------------
 * Frees what it is handed (after verifying it) and keeps a FIFO of blocks it
 * allocated for the main thread. Its allocation sizes come from its own
 * generator, so what the main thread receives depends only on the seed. */

#define QCAP 64
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static blk_t to_free[QCAP];
static size_t to_free_head, to_free_n;
static blk_t ready[QCAP];
static size_t ready_head, ready_n;
static int helper_stop;
static long helper_freed, helper_allocated;
#define READY_TARGET 8

static void *helper(void *arg) {
    (void)arg;
    uint64_t hr = g_seed * 0xD1B54A32D192ED03ull + 99;
    pthread_mutex_lock(&q_lock);
    for (;;) {
        while (!helper_stop && to_free_n == 0 && ready_n >= READY_TARGET) pthread_cond_wait(&q_cond, &q_lock);
        if (to_free_n > 0) {
            blk_t b = to_free[to_free_head];
            to_free_head = (to_free_head + 1) % QCAP;
            to_free_n--;
            pthread_cond_broadcast(&q_cond);
            pthread_mutex_unlock(&q_lock);
            size_t bad = pat_check(b.p, b.usable, b.seed);
            if (bad != (size_t)-1)
                fuzz_fail(b.op, "helper thread: block %p (%s(%zu)) handed over at this op corrupted at offset %zu",
                          (void *)b.p, kind_name[b.kind], b.size, bad);
            size_t us = malloc_usable_size(b.p);
            if (us != b.usable)
                fuzz_fail(b.op, "helper thread: malloc_usable_size of block %p changed from %zu to %zu", (void *)b.p,
                          b.usable, us);
            free(b.p);
            helper_freed++;
            pthread_mutex_lock(&q_lock);
            continue;
        }
        if (ready_n < READY_TARGET) {
            pthread_mutex_unlock(&q_lock);
            blk_t b = {0};
            uint64_t r = bb_rand(&hr);
            b.size = (r & 3) == 0 ? (size_t)(bb_rand(&hr) % (128 * KiB)) : (size_t)(bb_rand(&hr) % 1500);
            if ((r >> 8) % 8 == 0) {
                b.align = (size_t)1 << (bb_rand(&hr) % 13);
                b.p = aligned_alloc(b.align, b.size);
                b.kind = K_HELPER_ALIGNED;
            } else {
                b.align = 16;
                b.p = malloc(b.size);
                b.kind = K_HELPER_MALLOC;
            }
            b.seed = bb_rand(&hr);
            if (b.p) {
                b.usable = malloc_usable_size(b.p);
                if (b.usable >= b.size) pat_fill(b.p, b.usable, b.seed);
            }
            helper_allocated++;
            pthread_mutex_lock(&q_lock);
            ready[(ready_head + ready_n) % QCAP] = b;
            ready_n++;
            pthread_cond_broadcast(&q_cond);
            continue;
        }
        if (helper_stop) break;
    }
    pthread_mutex_unlock(&q_lock);
    return NULL;
}

/* Hand a block of the model to the helper, which frees it. */
static void handoff(uint32_t slot) {
    blk_t b = shadow_remove(slot);
    verify_block(&b, "before handing a block to the helper thread");
    b.op = g_op;
    pthread_mutex_lock(&q_lock);
    while (to_free_n == QCAP) pthread_cond_wait(&q_cond, &q_lock);
    to_free[(to_free_head + to_free_n) % QCAP] = b;
    to_free_n++;
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
}

/* Take the helper's oldest block into the model. */
static void receive(void) {
    pthread_mutex_lock(&q_lock);
    while (ready_n == 0) pthread_cond_wait(&q_cond, &q_lock);
    blk_t b = ready[ready_head];
    ready_head = (ready_head + 1) % QCAP;
    ready_n--;
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
    const char *call = kind_name[b.kind];
    if (b.p == NULL && g_faulty) return; /* the helper's allocation failed under the fault plan */
    CHECK(b.p != NULL, "%s(%zu) returned NULL", call, b.size);
    CHECK(((uintptr_t)b.p & (b.align - 1)) == 0, "%s returned %p, not %zu-byte aligned", call, (void *)b.p, b.align);
    CHECK(b.usable >= b.size, "%s: usable size %zu < %zu requested", call, b.usable, b.size);
    b.op = g_op;
    uint32_t slot = shadow_insert(&b);
    verify_block(&b, "block received from the helper thread");
    /* Take ownership of the pattern: refill with a seed from our sequence. */
    pool[slot].seed = rnd();
    pat_fill(b.p, b.usable, pool[slot].seed);
}

/* ---- operations ---------------------------------------------------------------- */

enum op {
    OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_REALLOC_CHAIN, OP_REALLOCARRAY, OP_ALIGNED_ALLOC, OP_POSIX_MEMALIGN,
    OP_MEMALIGN, OP_VALLOC, OP_PVALLOC, OP_FREE, OP_FREE_SIZED, OP_FREE_ALIGNED_SIZED, OP_USABLE_SIZE,
    OP_HANDOFF, OP_RECEIVE, OP_FAILURES, OP_TRIM, OP_VERIFY, OP_COUNT
};
static const char *op_name[OP_COUNT] = {
    "malloc", "calloc", "realloc", "realloc_chain", "reallocarray", "aligned_alloc", "posix_memalign", "memalign",
    "valloc", "pvalloc", "free", "free_sized", "free_aligned_sized", "malloc_usable_size", "handoff", "receive",
    "failures", "malloc_trim", "verify_all",
};
/* Relative weights. */
static const unsigned op_weight[OP_COUNT] = {
    1900, 800, 1100, 150, 300, 400, 400, 300, 150, 150, 1900, 500, 250, 400, 500, 300, 90, 3, 7,
};
static long op_count[OP_COUNT];

static void do_free(uint32_t slot, int how) {
    blk_t b = shadow_remove(slot);
    verify_block(&b, "before free");
    errno = 4321;
    bb_barrier();
    if (how == 1 && p_free_sized) p_free_sized(b.p, b.size);
    else if (how == 2 && p_free_aligned_sized) p_free_aligned_sized(b.p, b.align, b.size);
    else free(b.p);
    bb_barrier();
    CHECK(errno == 4321, "free of %s(%zu) block %p changed errno to %d", kind_name[b.kind], b.size, (void *)b.p, errno);
}

/* The slot of a random live block of one of the kinds in `mask`, or -1. */
static long pick(unsigned mask) {
    if (nlive == 0) return -1;
    for (int tries = 0; tries < 8; tries++) {
        uint32_t slot = dense[below(nlive)];
        if (mask & (1u << pool[slot].kind)) return (long)slot;
    }
    return -1;
}
#define ANY 0xFFFFFFFFu
#define SIZED_KINDS ((1u << K_MALLOC) | (1u << K_CALLOC) | (1u << K_REALLOC) | (1u << K_REALLOCARRAY) | (1u << K_HELPER_MALLOC))
#define ALIGNED_KINDS ((1u << K_ALIGNED_ALLOC) | (1u << K_HELPER_ALIGNED))

/* realloc the block in slot i (or NULL when i < 0) to `size`, with all the
 * checks. Returns the result's slot, or -1 when realloc(p, 0) freed it. */
static long do_realloc(long i, size_t size, int array, size_t nmemb) {
    blk_t old = {0};
    if (i >= 0) {
        old = shadow_remove((uint32_t)i);
        verify_block(&old, "before realloc");
    }
    void *q;
    const char *call = array ? "reallocarray" : "realloc";
    if (array) q = reallocarray(old.p, nmemb, size / (nmemb ? nmemb : 1));
    else q = realloc(old.p, size);
    if (array) size = nmemb * (size / (nmemb ? nmemb : 1));
    if (size == 0 && old.p && !array) {
        /* glibc: realloc(p, 0) frees p and returns NULL. */
        CHECK(q == NULL, "realloc(p, 0) returned %p, not NULL", q);
        return -1;
    }
    char c[64];
    snprintf(c, sizeof c, "%s(%s, %zu)", call, old.p ? "p" : "NULL", size);
    if (q == NULL && g_faulty) {
        CHECK(errno == ENOMEM, "%s returned NULL with errno %d under the fault plan (expected ENOMEM)", c, errno);
        g_enomem++;
        if (!old.p) return -1;
        /* A failed realloc leaves the block as it was. */
        verify_block(&old, "after a realloc that failed under the fault plan");
        return (long)shadow_insert(&old);
    }
    CHECK(q != NULL, "%s returned NULL (errno %d)", c, errno);
    /* The old contents up to min(old size, new size) are kept. */
    if (old.p) {
        size_t keep = old.size < size ? old.size : size;
        size_t bad = pat_check_upto(q, old.usable, old.seed, keep);
        CHECK(bad == (size_t)-1,
              "%s of a %s(%zu) block (allocated at op %ld) moved %p -> %p and lost its contents at offset %zu of %zu",
              c, kind_name[old.kind], old.size, old.op, (void *)old.p, q, bad, keep);
    }
    uint32_t slot = adopt(q, size, 16, array ? K_REALLOCARRAY : K_REALLOC, c);
    return slot == NO_SLOT ? -1 : (long)slot;
}

/* The documented failures: NULL + ENOMEM, the block passed in intact. */
static void do_failures(void) {
    size_t huge = bb_opaque((size_t)PTRDIFF_MAX + 1 + below(1000));
    void *p;
    errno = 0;
    p = malloc(huge);
    CHECK(p == NULL && errno == ENOMEM, "malloc(%zu) returned %p, errno %d (expected NULL, ENOMEM)", huge, p, errno);
    errno = 0;
    size_t n = bb_opaque(((size_t)1 << 33) + below(1000)), m = bb_opaque(((size_t)1 << 31) + below(1000));
    p = calloc(n, m);
    CHECK(p == NULL && errno == ENOMEM, "calloc(%zu, %zu) (overflow) returned %p, errno %d", n, m, p, errno);
    errno = 0;
    p = calloc(1, huge);
    CHECK(p == NULL && errno == ENOMEM, "calloc(1, %zu) returned %p, errno %d", huge, p, errno);
    long i = pick(ANY);
    if (i >= 0) {
        blk_t *b = &pool[i];
        errno = 0;
        p = realloc(b->p, huge);
        CHECK(p == NULL && errno == ENOMEM, "realloc(p, %zu) returned %p, errno %d", huge, p, errno);
        verify_block(b, "after a failed realloc");
        errno = 0;
        p = reallocarray(b->p, n, m);
        CHECK(p == NULL && errno == ENOMEM, "reallocarray(p, %zu, %zu) (overflow) returned %p, errno %d", n, m, p,
              errno);
        verify_block(b, "after a failed reallocarray");
    }
    void *mp = (void *)0x1234;
    size_t bad_align = chance(500) ? (size_t)24 << below(10) : (size_t)1 << below(3); /* not a power of two, or < 8 */
    int r = posix_memalign(&mp, bad_align, 64);
    CHECK(r == EINVAL && mp == (void *)0x1234, "posix_memalign(&p, %zu, 64) returned %d, p = %p", bad_align, r, mp);
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) != 0");
    errno = 777;
    bb_barrier();
    free(NULL);
    bb_barrier();
    CHECK(errno == 777, "free(NULL) changed errno");
}

static void step(void) {
    unsigned total = 0, acc = 0;
    for (int k = 0; k < OP_COUNT; k++) total += op_weight[k];
    unsigned w = (unsigned)below(total);
    int op = 0;
    for (; op < OP_COUNT - 1; op++) {
        acc += op_weight[op];
        if (w < acc) break;
    }
    /* Over the limits: free instead of allocating. */
    int allocates = op <= OP_PVALLOC || op == OP_RECEIVE;
    if (allocates && !fits(0)) op = OP_FREE;
    if (nlive == 0 && (op >= OP_FREE && op <= OP_HANDOFF)) op = OP_MALLOC;
    op_count[op]++;
    char c[96];
    switch (op) {
    case OP_MALLOC: {
        size_t n = rand_size();
        if (!fits(n)) n = below(256);
        snprintf(c, sizeof c, "malloc(%zu)", n);
        adopt(malloc(n), n, 16, K_MALLOC, c);
        break;
    }
    case OP_CALLOC: {
        size_t n = small_size(), m = 1;
        if (!fits(n)) n = below(256);
        if (n > 0 && chance(500)) { /* split into nmemb * size */
            size_t d = 1 + below(16);
            m = n / d ? n / d : 1;
            n = d;
        } else {
            m = n;
            n = 1;
        }
        snprintf(c, sizeof c, "calloc(%zu, %zu)", n, m);
        unsigned char *p = calloc(n, m);
        if (p == NULL && g_faulty) {
            adopt(p, n * m, 16, K_CALLOC, c);
            break;
        }
        CHECK(p != NULL, "%s returned NULL", c);
        const unsigned char *z = bb_escape(p);
        for (size_t k = 0; k < n * m; k++)
            CHECK(z[k] == 0, "%s returned %p, not zeroed at offset %zu (0x%02x)", c, (void *)p, k, z[k]);
        adopt(p, n * m, 16, K_CALLOC, c);
        break;
    }
    case OP_REALLOC: {
        long i = chance(100) ? -1 : pick(ANY);
        size_t n = chance(50) ? 0 : (chance(700) ? small_size() : rand_size());
        if (!fits(n)) n = below(256);
        do_realloc(i, n, 0, 0);
        break;
    }
    case OP_REALLOC_CHAIN: {
        /* One block through a chain of sizes: growing, shrinking, across
         * the small/large boundary, via 0 and back from NULL. */
        long i = pick(ANY);
        int steps = 3 + (int)below(12);
        for (int s = 0; s < steps; s++) {
            size_t n;
            unsigned r = (unsigned)below(10);
            if (r < 3) n = small_size();
            else if (r < 5) n = 64 * KiB - 64 + below(128);
            else if (r < 7) n = 64 * KiB + below(4 * MiB);
            else if (r < 8) n = 0;
            else n = rand_size();
            if (!fits(n)) n = below(256);
            i = do_realloc(i, n, 0, 0);
        }
        break;
    }
    case OP_REALLOCARRAY: {
        long i = chance(100) ? -1 : pick(ANY);
        size_t nmemb = 1 + below(64);
        size_t n = small_size() * (chance(300) ? 1 : nmemb / 4 + 1);
        if (!fits(n)) n = below(256);
        if (n == 0) n = 1;
        if (n < nmemb) nmemb = n;
        do_realloc(i, n, 1, nmemb);
        break;
    }
    case OP_ALIGNED_ALLOC:
    case OP_POSIX_MEMALIGN:
    case OP_MEMALIGN: {
        size_t al = rand_align(), n = chance(800) ? small_size() : rand_size();
        if (!fits(n + al)) n = below(256);
        if (chance(50)) n = 0;
        void *p = NULL;
        if (op == OP_ALIGNED_ALLOC) {
            snprintf(c, sizeof c, "aligned_alloc(%zu, %zu)", al, n);
            p = aligned_alloc(al, n);
            adopt(p, n, al, K_ALIGNED_ALLOC, c);
        } else if (op == OP_POSIX_MEMALIGN) {
            if (al < sizeof(void *)) al = sizeof(void *);
            snprintf(c, sizeof c, "posix_memalign(&p, %zu, %zu)", al, n);
            int r = posix_memalign(&p, al, n);
            if (r == ENOMEM && g_faulty) {
                CHECK(p == NULL, "%s returned ENOMEM and changed p", c);
                g_enomem++;
                break;
            }
            CHECK(r == 0, "%s returned %d", c, r);
            adopt(p, n, al, K_POSIX_MEMALIGN, c);
        } else {
            /* Sometimes not a power of two: memalign rounds it up. */
            size_t asked = al, need = al;
            if (al >= 4 && chance(200)) {
                asked = al - 1 - below(al / 2 - 1);
                need = al;
            }
            snprintf(c, sizeof c, "memalign(%zu, %zu)", asked, n);
            p = memalign(asked, n);
            adopt(p, n, need, K_MEMALIGN, c);
        }
        break;
    }
    case OP_VALLOC: {
        size_t n = small_size();
        snprintf(c, sizeof c, "valloc(%zu)", n);
        adopt(valloc(n), n, g_page, K_VALLOC, c);
        break;
    }
    case OP_PVALLOC: {
        size_t n = small_size();
        snprintf(c, sizeof c, "pvalloc(%zu)", n);
        void *p = pvalloc(n);
        /* The request is rounded up to whole pages. */
        size_t rounded = (n + g_page - 1) / g_page * g_page;
        CHECK(p == NULL || malloc_usable_size(p) >= rounded, "%s: usable size %zu < %zu", c,
              malloc_usable_size(p), rounded);
        adopt(p, rounded, g_page, K_PVALLOC, c);
        break;
    }
    case OP_FREE:
        do_free((uint32_t)pick(ANY), 0);
        break;
    case OP_FREE_SIZED: {
        long i = pick(SIZED_KINDS);
        if (i >= 0) do_free((uint32_t)i, 1);
        break;
    }
    case OP_FREE_ALIGNED_SIZED: {
        long i = pick(ALIGNED_KINDS);
        if (i >= 0) do_free((uint32_t)i, 2);
        break;
    }
    case OP_USABLE_SIZE: {
        long i = pick(ANY);
        size_t us = malloc_usable_size(pool[i].p);
        CHECK(us == pool[i].usable, "malloc_usable_size(%p) = %zu, was %zu", (void *)pool[i].p, us, pool[i].usable);
        /* Check a random stretch of the block's pattern, cheaply. */
        const blk_t *b = &pool[i];
        if (b->usable > 0) {
            size_t r = (size_t)rnd(); /* drawn even when usable is 0: the sequence must not depend on it */
            size_t from = b->usable ? r % b->usable : 0, to;
            to = from + 256 < b->usable ? from + 256 : b->usable;
            if (b->usable > SPARSE_ABOVE && from >= SPARSE_EDGE && from < b->usable - SPARSE_EDGE)
                from &= ~(size_t)4095, to = from + 64; /* a page's filled head */
            else if (b->usable > SPARSE_ABOVE && from < SPARSE_EDGE && to > SPARSE_EDGE)
                to = SPARSE_EDGE;
            size_t bad = check_range(b->p, from, to, b->seed);
            if (bad != (size_t)-1) {
                char d[200];
                describe(d, sizeof d, b);
                FAIL("block %s corrupted at offset %zu", d, bad);
            }
        }
        break;
    }
    case OP_HANDOFF:
        handoff((uint32_t)pick(ANY));
        break;
    case OP_RECEIVE:
        receive();
        break;
    case OP_FAILURES:
        do_failures();
        break;
    case OP_TRIM:
        malloc_trim(chance(500) ? 0 : below(1 * MiB));
        verify_all("after malloc_trim");
        break;
    case OP_VERIFY:
        verify_all("periodic verification");
        break;
    }
}

/* ---- fixed edge cases, before the random sequence ----------------------------
 * Every power-of-two alignment from 1 B to 256 MiB with sizes 0, 1,
 * alignment - 1, alignment and alignment + 1 (up to 8 MiB), through
 * aligned_alloc, posix_memalign and memalign, each right after
 * malloc_trim(0) and a large and a small neighbour were allocated (so the
 * kernel places the new mapping right below the neighbour's fresh one):
 * the block must be aligned and usable, and the
 * neighbours and a set of older blocks must still be intact and recognised
 * (malloc_usable_size unchanged) before and after it is freed. */

static char g_doing[160]; /* for the crash handler */

typedef struct {
    unsigned char *p;
    size_t n, usable;
    uint64_t seed;
} edge_blk;

static edge_blk edge_new(size_t n, uint64_t seed) {
    edge_blk b = {.p = malloc(n), .n = n, .seed = seed};
    CHECK(b.p != NULL, "edge case: malloc(%zu) returned NULL", n);
    b.usable = malloc_usable_size(b.p);
    pat_fill(b.p, b.usable, seed);
    return b;
}

static void edge_check(const edge_blk *b, const char *when) {
    size_t us = malloc_usable_size(b->p);
    CHECK(us == b->usable, "edge case %s: malloc_usable_size of a neighbouring malloc(%zu) block %p changed %zu -> %zu",
          when, b->n, (void *)b->p, b->usable, us);
    size_t bad = pat_check(b->p, b->usable, b->seed);
    CHECK(bad == (size_t)-1, "edge case %s: neighbouring malloc(%zu) block %p corrupted at offset %zu", when, b->n,
          (void *)b->p, bad);
}

static long edge_cases(void) {
    long count = 0;
    edge_blk older[8];
    for (int k = 0; k < 8; k++) older[k] = edge_new(k % 2 ? 100 + (size_t)k : ((size_t)1 << 20) + (size_t)k * 4096, 1000 + (uint64_t)k);
    for (int lg = 0; lg <= 28; lg++) {
        size_t al = (size_t)1 << lg;
        size_t sizes[5] = {0, 1, al - 1, al, al + 1};
        for (int si = 0; si < 5; si++) {
            size_t n = sizes[si];
            if ((si == 2 && al < 2) || n > 8 * MiB) continue;
            for (int fn = 0; fn < 3; fn++) {
                if (fn == 1 && al < sizeof(void *)) continue;
                const char *name = fn == 0 ? "aligned_alloc" : fn == 1 ? "posix_memalign" : "memalign";
                snprintf(g_doing, sizeof g_doing, "edge case %s(%zu, %zu)", name, al, n);
                /* No cached spans: the neighbour is a fresh mapping, the
                 * lowest one, right above where the next one goes. */
                malloc_trim(0);
                edge_blk big = edge_new(MiB, 7), small = edge_new(64, 8);
                void *p = NULL;
                if (fn == 0) p = aligned_alloc(al, n);
                else if (fn == 1) CHECK(posix_memalign(&p, al, n) == 0, "%s failed", g_doing);
                else p = memalign(al, n);
                CHECK(p != NULL, "%s returned NULL", g_doing);
                CHECK(((uintptr_t)p & (al - 1)) == 0, "%s returned %p, not aligned", g_doing, p);
                size_t us = malloc_usable_size(p);
                CHECK(us >= n, "%s: usable size %zu", g_doing, us);
                CHECK(p != (void *)big.p && p != (void *)small.p, "%s returned a live block's address %p", g_doing, p);
                if (n) memset(p, 0xA5, n);
                edge_check(&big, g_doing);
                edge_check(&small, g_doing);
                for (int k = 0; k < 8; k++) edge_check(&older[k], g_doing);
                free(p);
                edge_check(&big, g_doing);
                edge_check(&small, g_doing);
                free(big.p);
                free(small.p);
                count++;
            }
        }
    }
    for (int k = 0; k < 8; k++) {
        edge_check(&older[k], "at the end of the edge cases");
        free(older[k].p);
    }
    g_doing[0] = 0;
    return count;
}

/* A crash (an allocator abort, a fault) still names the seed, the operation
 * and, in the edge cases, the call; the signal is then re-raised. */
static void on_crash(int sig) {
    char buf[400];
    int n = snprintf(buf, sizeof buf, "FAIL: api_fuzz seed=%llu op=%ld: killed by signal %d%s%s\n", g_seed, g_op, sig,
                     g_doing[0] ? " during " : "", g_doing);
    if (n > 0) bb_write_all(1, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


int main(int argc, char **argv) {
    bb_print_variant();
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (bb_arg(argv[i], "seed", &v)) g_seed = strtoull(v, NULL, 0);
        else if (bb_arg(argv[i], "iterations", &v)) g_iterations = strtol(v, NULL, 0);
        else if (bb_arg(argv[i], "seconds", &v)) g_seconds = strtod(v, NULL);
        else if (bb_arg(argv[i], "maxlive", &v)) g_maxlive = strtoul(v, NULL, 0);
        else if (bb_arg(argv[i], "maxbytes", &v)) g_maxbytes = strtoul(v, NULL, 0) * MiB;
        else if (bb_arg(argv[i], "edge", &v)) g_edge = atoi(v);
        else if (bb_arg(argv[i], "faults", &v)) g_faults = strtoul(v, NULL, 0);
        else if (bb_arg(argv[i], "recover", &v)) g_recover = strtol(v, NULL, 0);
        else bb_fail("usage: api_fuzz [seed=N] [iterations=N] [seconds=S] [maxlive=N] [maxbytes=MiB] [edge=0|1] "
                     "[faults=N] [recover=N] (got %s)",
                     argv[i]);
    }
    BB_CHECK(g_maxlive >= 16 && g_maxbytes >= 16 * MiB, "maxlive must be >= 16 and maxbytes >= 16");
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    p_free_sized = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    p_free_aligned_sized = (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    size_t slots = g_maxlive + 64;
    pool = mmap(NULL, slots * (sizeof *pool + 3 * sizeof(uint32_t)), PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    BB_CHECK(pool != MAP_FAILED, "mmap of the shadow model failed");
    order = (uint32_t *)(pool + slots);
    dense = order + slots;
    free_slots = dense + slots;
    for (size_t k = 0; k < slots; k++) free_slots[nfree_slots++] = (uint32_t)(slots - 1 - k);
    rng = g_seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    if (!rng) rng = 1;
    int crash_signals[] = {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE};
    for (size_t k = 0; k < sizeof crash_signals / sizeof *crash_signals; k++) signal(crash_signals[k], on_crash);

    g_op = -1; /* the edge cases are "operation -1" */
    long edges = g_edge ? edge_cases() : 0;

    pthread_t ht;
    int e = pthread_create(&ht, NULL, helper, NULL);
    BB_CHECK(e == 0, "pthread_create failed: %d", e);

    double start = now(), deadline = g_seconds > 0 ? start + g_seconds : 0;
    if (g_faults) {
        g_faulty = 1;
        fault_set_all(g_faults);
    }
    for (g_op = 0; g_iterations == 0 || g_op < g_iterations; g_op++) {
        step();
        if (deadline && (g_op & 255) == 0 && now() > deadline) {
            g_op++;
            break;
        }
    }
    if (g_faults) {
        /* The OS works again: from here every allocation must succeed. */
        fault_set_all(0);
        unsigned long injected = 0;
        for (int k = 0; k < F_KINDS; k++) injected += fault_failed[k];
        CHECK(injected > 0, "faults=%lu: no OS call was made to fail: the fault plan did not reach the allocator",
              g_faults);
        verify_all("when the faults stopped");
        pthread_mutex_lock(&q_lock);
        while (to_free_n > 0 || ready_n < READY_TARGET) pthread_cond_wait(&q_cond, &q_lock);
        /* Blocks the helper allocated under the plan may be NULL: drop them. */
        size_t kept = 0;
        for (size_t k = 0; k < ready_n; k++) {
            blk_t b = ready[(ready_head + k) % QCAP];
            if (b.p) ready[(ready_head + kept++) % QCAP] = b;
        }
        ready_n = kept;
        g_faulty = 0;
        pthread_cond_broadcast(&q_cond);
        pthread_mutex_unlock(&q_lock);
        long end = g_op + g_recover;
        for (; g_op < end; g_op++) step();
        bb_say("api_fuzz: faults=%lu: %lu OS calls failed, %ld allocations returned ENOMEM, then %ld operations with "
               "none failing",
               g_faults, injected, g_enomem, g_recover);
    }
    long ops = g_op;
    /* Wind down: verify and free everything, the helper's blocks too. */
    verify_all("at the end");
    while (nlive > 0) do_free(dense[nlive - 1], 0);
    pthread_mutex_lock(&q_lock);
    helper_stop = 1;
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
    pthread_join(ht, NULL);
    for (size_t k = 0; k < ready_n; k++) free(ready[(ready_head + k) % QCAP].p);

    char counts[1024];
    size_t len = 0;
    for (int op = 0; op < OP_COUNT; op++)
        len += (size_t)snprintf(counts + len, sizeof counts - len, "%s%s=%ld", op ? " " : "", op_name[op], op_count[op]);
    bb_say("api_fuzz: seed=%llu ops=%ld seconds=%.2f max_live_blocks=%zu max_live_MiB=%zu helper_frees=%ld "
           "helper_allocs=%ld edge_cases=%ld",
           g_seed, ops, now() - start, max_nlive, max_live_bytes / MiB, helper_freed, helper_allocated, edges);
    bb_say("api_fuzz: %s", counts);
    return 0;
}
