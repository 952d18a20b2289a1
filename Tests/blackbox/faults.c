/*
 * faults.c: what the allocator does when the OS says no (faults.h makes the
 * allocator's mmap, munmap, madvise, mprotect and mremap fail on demand).
 *
 *     faults magazines | calloc-madvise | calloc-mlock | guards | errno
 *
 * magazines       Frees about 190,000 small blocks of 16 classes while every
 *                 mmap fails, so the metadata for new magazines runs out in
 *                 the middle of the frees. Then, with mmap working again,
 *                 allocates as many blocks of each class: no address may be
 *                 handed out twice, and each block keeps the tag written into
 *                 it until it is freed. (A cache that kept a magazine it had
 *                 already given to the depot handed its blocks out twice.)
 * calloc-madvise  Dirties and frees medium and large blocks (80 KiB - 1000 KiB)
 *                 while every madvise fails, then callocs 6000 such blocks:
 *                 each must read as zero (a purge that failed must not count
 *                 as one).
 * calloc-mlock    The same under mlockall(MCL_CURRENT | MCL_FUTURE), where the
 *                 kernel itself refuses MADV_DONTNEED with EINVAL. Needs
 *                 CAP_IPC_LOCK or a large RLIMIT_MEMLOCK: without, it says so
 *                 on a "SKIP:" line and exits 0 (the test harness then fails
 *                 if it expected to run it).
 * guards          With every mprotect failing, the hardened variant must
 *                 return NULL + ENOMEM for blocks that need a new guard page
 *                 (a new segment, a large block) rather than hand them out
 *                 unguarded; the other variants never need mprotect. With
 *                 mprotect working again, allocation works again.
 *
 * errno           A call that succeeds leaves errno as it was, even when an
 *                 OS call failed on the way: a realloc whose mremap fails
 *                 (it copies instead), a malloc whose first mmap fails (it
 *                 releases cached memory and retries), a realloc that grows
 *                 a medium block in place.
 *
 * Output: the variant line, one line per scenario with its counts, "FAIL:"
 * and exit 1 on the first violation.
 */
#include "bb.h"
#include "faults.h"

#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>

#define KiB ((size_t)1024)

/* ---- magazines: no block owned twice when metadata runs out ---------------- */

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* A second thread that takes blocks of each class the main thread freed,
 * then waits until `magazines` ends: until blocks of a class travel
 * between threads, its depot keeps 4 magazines, and the frees below would
 * need few. */
static const size_t sizes[] = {16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512};
enum { CLASSES = sizeof sizes / sizeof sizes[0] };
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t parked_cond = PTHREAD_COND_INITIALIZER;
static int parked_state; /* 1: take blocks, 2: taken, 3: may exit */

static void parked_wait(int state) {
    pthread_mutex_lock(&parked_lock);
    while (parked_state != state)
        pthread_cond_wait(&parked_cond, &parked_lock);
    pthread_mutex_unlock(&parked_lock);
}

static void parked_set(int state) {
    pthread_mutex_lock(&parked_lock);
    parked_state = state;
    pthread_cond_broadcast(&parked_cond);
    pthread_mutex_unlock(&parked_lock);
}

/* Allocates `n` (at most 200) blocks of each class, then frees them. */
static void churn_each_class(int n) {
    void *held[200];
    for (int c = 0; c < CLASSES; c++) {
        for (int i = 0; i < n; i++) held[i] = bb_escape(malloc(sizes[c]));
        for (int i = 0; i < n; i++) free(held[i]);
    }
}

static void *parked(void *arg) {
    (void)arg;
    parked_wait(1);
    /* A magazine's worth of each class: from the depot, where the main
     * thread's frees put full magazines. */
    churn_each_class(64);
    parked_set(2);
    parked_wait(3);
    return NULL;
}

static void magazines(void) {
    /* Classes 16..512 B: with 62-block magazines and their depot limits
     * (2 MiB of blocks per class, at most 256 magazines), freeing this many
     * needs more than the 2048 magazines one metadata chunk holds. */
    pthread_t helper;
    BB_CHECK(pthread_create(&helper, NULL, parked, NULL) == 0, "cannot start the second thread");
    /* Three magazines' worth of each class freed here: full ones go to
     * the depot, for the second thread to take. */
    churn_each_class(200);
    parked_set(1);
    parked_wait(2);
    size_t per_class[CLASSES];
    size_t total = 0;
    for (int c = 0; c < CLASSES; c++) {
        size_t blocks = (2u << 20) / sizes[c] + 256;
        if (blocks > 256 * 62 + 256) blocks = 256 * 62 + 256;
        per_class[c] = blocks;
        total += blocks;
    }
    uintptr_t *all = (uintptr_t *)bb_escape(malloc(total * sizeof *all));
    BB_CHECK(all != NULL, "cannot allocate the block table");
    size_t k = 0;
    for (int c = 0; c < CLASSES; c++)
        for (size_t i = 0; i < per_class[c]; i++) {
            void *p = malloc(sizes[c]);
            BB_CHECK(p != NULL, "malloc(%zu) failed before any fault", sizes[c]);
            all[k++] = (uintptr_t)p;
        }
    /* Free everything with mmap refused: the depot fills, empty magazines
     * run out, and the metadata arena cannot grow. */
    __atomic_store_n(&fault_every[F_MMAP], 1, __ATOMIC_RELAXED);
    for (size_t i = 0; i < total; i++) free((void *)all[i]);
    unsigned long refused = __atomic_load_n(&fault_failed[F_MMAP], __ATOMIC_RELAXED);
    fault_set_all(0);
    /* The magazine variants need new magazines for those frees; the simple
     * variant's lists need only small batch descriptors. */
    const char *variant = bb_variant();
    if (variant && strcmp(variant, "simple") != 0)
        BB_CHECK(refused > 0, "freeing %zu blocks never needed a new mapping: the scenario did not happen", total);

    /* Everything again, tagged: an address handed out twice shows up as a
     * duplicate or as a tag overwritten by its second owner. */
    k = 0;
    for (int c = 0; c < CLASSES; c++)
        for (size_t i = 0; i < per_class[c]; i++) {
            size_t *p = malloc(sizes[c]);
            BB_CHECK(p != NULL, "malloc(%zu) failed after the faults stopped", sizes[c]);
            p[0] = k;
            p[1] = ~k;
            all[k++] = (uintptr_t)p;
        }
    for (size_t i = 0; i < total; i++) {
        size_t *p = (size_t *)all[i];
        BB_CHECK(p[0] == i && p[1] == ~i, "block %p (number %zu) was also handed out as number %zu", (void *)p, i, p[0]);
    }
    qsort(all, total, sizeof *all, cmp_ptr);
    for (size_t i = 1; i < total; i++)
        BB_CHECK(all[i] != all[i - 1], "address %p handed out twice", (void *)all[i]);
    /* And once more through free and malloc_trim: the depot must not loop. */
    for (size_t i = 0; i < total; i++) free((void *)all[i]);
    malloc_trim(0);
    free(all);
    parked_set(3);
    pthread_join(helper, NULL);
    bb_say("faults: magazines: %zu blocks freed with %lu mmap calls refused, allocated again without a duplicate",
           total, refused);
}

/* ---- calloc after purges that did not happen ---------------------------------- */

static void calloc_after_failed_purges(const char *name) {
    enum { LIVE = 24, ROUNDS = 6000 };
    void *live[LIVE] = {0};
    uint64_t rs = 12345;
    /* Dirty: fill blocks of every medium size with non-zero bytes, free them. */
    for (int round = 0; round < 2000; round++) {
        int i = round % LIVE;
        if (live[i]) free(live[i]);
        size_t n = 80 * KiB + (size_t)(bb_rand(&rs) % (920 * KiB));
        live[i] = malloc(n);
        BB_CHECK(live[i] != NULL, "malloc(%zu) failed", n);
        memset(live[i], 0xA5, n);
    }
    size_t bad = 0, first_bad_size = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int i = round % LIVE;
        free(live[i]);
        size_t n = 80 * KiB + (size_t)(bb_rand(&rs) % (920 * KiB));
        unsigned char *p = calloc(1, n);
        BB_CHECK(p != NULL, "calloc(1, %zu) failed", n);
        const unsigned char *z = bb_escape(p);
        for (size_t j = 0; j < n; j += 512)
            if (z[j] != 0 || z[n - 1] != 0) {
                if (bad++ == 0) first_bad_size = n;
                break;
            }
        memset(p, 0x5A, n);
        live[i] = p;
    }
    for (int i = 0; i < LIVE; i++) free(live[i]);
    BB_CHECK(bad == 0, "%s: %zu of %d calloc blocks were not zero (the first of %zu bytes)", name, bad, ROUNDS,
             first_bad_size);
    unsigned long refused = __atomic_load_n(&fault_failed[F_MADVISE], __ATOMIC_RELAXED) +
                            __atomic_load_n(&fault_os_failed[F_MADVISE], __ATOMIC_RELAXED);
    const char *variant = bb_variant();
    /* AethAlloc purges freed medium slices (the hardened variant unmaps its
     * blocks instead), so the scenario must have seen refused purges. */
    if (variant && strcmp(variant, "hardened") != 0)
        BB_CHECK(refused > 0, "%s: no madvise was refused: the scenario did not happen", name);
    bb_say("faults: %s: %d calloc blocks of 80-1000 KiB after dirty frees, all zero (%lu madvise calls refused)", name,
           ROUNDS, refused);
}

static void calloc_madvise(void) {
    __atomic_store_n(&fault_every[F_MADVISE], 1, __ATOMIC_RELAXED);
    calloc_after_failed_purges("calloc-madvise");
    fault_set_all(0);
}

static void calloc_mlock(void) {
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
        bb_say("SKIP: mlockall failed (errno %d): needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK", errno);
        return;
    }
    calloc_after_failed_purges("calloc-mlock");
    munlockall();
}

/* ---- guard pages or nothing ------------------------------------------------------- */

static void guards(void) {
    const char *variant = bb_variant();
    int hardened = variant && strcmp(variant, "hardened") == 0;
    __atomic_store_n(&fault_every[F_MPROTECT], 1, __ATOMIC_RELAXED);
    /* Large blocks need fresh mappings with guard pages. */
    size_t large_ok = 0, large_enomem = 0;
    void *big[8];
    for (int i = 0; i < 8; i++) {
        errno = 0;
        big[i] = malloc((size_t)(3 + i) << 20);
        if (big[i]) large_ok++;
        else if (errno == ENOMEM) large_enomem++;
        else bb_fail("malloc of a large block failed with errno %d, not ENOMEM", errno);
    }
    /* Small blocks until more than a few segments were needed. */
    size_t small_ok = 0, small_enomem = 0;
    enum { SMALL = 6000 };
    static void *small[SMALL];
    for (int i = 0; i < SMALL; i++) {
        errno = 0;
        small[i] = malloc(4000);
        if (small[i]) {
            small_ok++;
            memset(small[i], 1, 4000);
        } else if (errno == ENOMEM) {
            small_enomem++;
        } else {
            bb_fail("malloc(4000) failed with errno %d, not ENOMEM", errno);
        }
    }
    unsigned long refused = __atomic_load_n(&fault_failed[F_MPROTECT], __ATOMIC_RELAXED);
    fault_set_all(0);
    if (hardened) {
        BB_CHECK(large_ok == 0, "hardened: %zu large blocks handed out while their guard pages could not be made",
                 large_ok);
        BB_CHECK(small_enomem > 0 && refused > 0,
                 "hardened: 24 MB of small blocks needed no new guarded segment (%zu ENOMEM, %lu mprotect refused)",
                 small_enomem, refused);
    } else {
        BB_CHECK(large_ok == 8 && small_ok == SMALL, "%s: allocation failed (%zu large, %zu small) though it needs no mprotect",
                 variant ? variant : "glibc", large_ok, small_ok);
    }
    /* With mprotect back, everything works again. */
    for (int i = 0; i < 8; i++) {
        free(big[i]);
        big[i] = malloc((size_t)(3 + i) << 20);
        BB_CHECK(big[i] != NULL, "malloc of a large block failed after mprotect works again");
        memset(big[i], 2, (size_t)(3 + i) << 20);
    }
    for (int i = 0; i < SMALL; i++) {
        if (!small[i]) small[i] = malloc(4000);
        BB_CHECK(small[i] != NULL, "malloc(4000) failed after mprotect works again");
    }
    for (int i = 0; i < 8; i++) free(big[i]);
    for (int i = 0; i < SMALL; i++) free(small[i]);
    bb_say("faults: guards: with mprotect refused %zu/%zu large and %zu/%d small blocks were handed out (%lu refused)",
           large_ok, large_ok + large_enomem, small_ok, SMALL, refused);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL: faults: no progress for 60 s (a free list or the depot looped?)\n";
    bb_write_all(1, msg, sizeof msg - 1);
    _exit(1);
}

/* ---- errno after a success that met a failure ------------------------------------ */

static void errno_kept(void) {
    /* realloc of a large block: mremap refused, the block is copied. */
    char *p = malloc(8 << 20);
    BB_CHECK(p != NULL, "malloc(8 MiB) failed");
    memset(p, 0x11, 8 << 20);
    __atomic_store_n(&fault_every[F_MREMAP], 1, __ATOMIC_RELAXED);
    errno = 777;
    char *q = realloc(p, 24 << 20);
    int e = errno;
    fault_set_all(0);
    BB_CHECK(q != NULL, "realloc(8 MiB -> 24 MiB) failed with mremap refused");
    BB_CHECK(e == 777, "a realloc that succeeded after mremap failed left errno %d, not 777", e);
    BB_CHECK(q[0] == 0x11 && q[(8 << 20) - 1] == 0x11, "realloc lost the contents");
    free(q);
    /* malloc whose first mmap fails: it retries after releasing memory. */
    void *keep = malloc(16 << 20);
    free(keep); /* a cached span for the retry to release */
    __atomic_store_n(&fault_next[F_MMAP], 1, __ATOMIC_RELAXED);
    errno = 777;
    void *r = malloc(40 << 20);
    e = errno;
    const char *variant = bb_variant();
    if (variant && strcmp(variant, "hardened") == 0) {
        /* It caches no spans: nothing to release, so no retry. */
        BB_CHECK(r == NULL && e == ENOMEM, "hardened: malloc(40 MiB) with its mmap refused returned %p, errno %d", r, e);
    } else {
        BB_CHECK(r != NULL, "malloc(40 MiB) failed after one refused mmap");
        BB_CHECK(e == 777, "a malloc that succeeded on its retry left errno %d, not 777", e);
    }
    __atomic_store_n(&fault_next[F_MMAP], 0, __ATOMIC_RELAXED);
    free(r);
    /* A medium block grown in place. */
    void *m = malloc(100 << 10);
    BB_CHECK(m != NULL, "malloc(100 KiB) failed");
    errno = 777;
    void *m2 = realloc(m, 300 << 10);
    e = errno;
    BB_CHECK(m2 != NULL && e == 777, "realloc of a medium block returned %p with errno %d", m2, e);
    free(m2);
    bb_say("faults: errno: kept through refused mremap, a refused mmap's retry and an in-place medium growth");
}

int main(int argc, char **argv) {
    bb_print_variant();
    signal(SIGALRM, on_alarm);
    alarm(60);
    BB_CHECK(argc == 2, "usage: faults magazines | calloc-madvise | calloc-mlock | guards | errno");
    /* Prove the interposition works before trusting any scenario. */
    fault_set_all(0);
    void *probe = malloc(64 << 20);
    BB_CHECK(probe != NULL, "malloc(64 MiB) failed");
    free(probe);
    BB_CHECK(bb_variant() == NULL || __atomic_load_n(&fault_calls[F_MMAP], __ATOMIC_RELAXED) > 0,
             "the allocator's mmap calls do not reach faults.h (is the program built with -rdynamic?)");
    if (strcmp(argv[1], "magazines") == 0) magazines();
    else if (strcmp(argv[1], "calloc-madvise") == 0) calloc_madvise();
    else if (strcmp(argv[1], "calloc-mlock") == 0) calloc_mlock();
    else if (strcmp(argv[1], "guards") == 0) guards();
    else if (strcmp(argv[1], "errno") == 0) errno_kept();
    else bb_fail("unknown scenario %s", argv[1]);
    return 0;
}
