/*
 * thread_exit.c: malloc and free during and after thread teardown.
 *
 * 1. pthread key destructors that malloc/free/realloc, on keys created
 *    before and after the first allocation of the process and of the
 *    thread, re-arming themselves so that glibc runs them in later passes,
 *    after any allocator teardown that uses a pthread key of its own.
 * 2. Thread-local destructors (__cxa_thread_atexit_impl, what C++
 *    thread_local uses) registered before and after the thread's first
 *    allocation, which malloc and free.
 * 3. Blocks allocated by threads that have exited, freed and realloc'd by
 *    other threads and by main.
 * 4. Process exit while detached threads are still allocating, and
 *    atexit/destructor functions that allocate.
 *
 * The property: no crash, no corruption, and every destructor ran as many
 * times as glibc promises (counted in `dtor_runs`).
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>

extern int __cxa_thread_atexit_impl(void (*)(void *), void *, void *);
extern void *__dso_handle;

/* Blocks allocated in destructors, freed by main later. */
#define KEEP_MAX 65536
static void *kept[KEEP_MAX];
static size_t kept_n[KEEP_MAX];
static int nkept;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static long dtor_runs;

static void keep(void *p, size_t n) {
    bb_fill(p, n, (uintptr_t)p);
    pthread_mutex_lock(&kept_lock);
    if (nkept < KEEP_MAX) {
        kept[nkept] = p;
        kept_n[nkept] = n;
        nkept++;
        p = NULL;
    }
    dtor_runs++;
    pthread_mutex_unlock(&kept_lock);
    free(p);
}

static void free_kept(void) {
    pthread_mutex_lock(&kept_lock);
    for (int i = 0; i < nkept; i++) {
        size_t bad = bb_check(kept[i], kept_n[i], (uintptr_t)kept[i]);
        BB_CHECK(bad == (size_t)-1, "block of %zu allocated in a destructor corrupted at %zu", kept_n[i], bad);
        free(kept[i]);
    }
    nkept = 0;
    pthread_mutex_unlock(&kept_lock);
}

/* Allocate and free a spread of sizes; keep one block for main. */
static void allocate_in_teardown(unsigned salt) {
    void *p[12];
    for (int i = 0; i < 12; i++) {
        size_t n = (size_t)16 << i;
        p[i] = (i % 3 == 0) ? calloc(1, n + salt % 7) : malloc(n + salt % 7);
        BB_CHECK(p[i] != NULL, "allocation in a thread destructor failed");
        memset(p[i], 0x3D, n);
    }
    p[3] = realloc(p[3], 5000);
    BB_CHECK(p[3] != NULL, "realloc in a thread destructor failed");
    void *a = aligned_alloc(256, 1000);
    BB_CHECK(a != NULL && ((uintptr_t)a & 255) == 0, "aligned_alloc in a thread destructor failed");
    free(a);
    for (int i = 0; i < 12; i++)
        if (i != 5) free(p[i]);
    keep(p[5], (size_t)16 << 5);
}

/* Key destructors: value is a heap block holding a re-arm counter. */
static pthread_key_t key_early, key_late;

static void key_dtor(void *v, pthread_key_t key) {
    int *count = v;
    BB_CHECK(*count >= 0 && *count < 10, "key destructor got a corrupted value");
    allocate_in_teardown((unsigned)*count);
    if (*count < 3) {
        /* Re-arm: glibc runs the destructors again (up to
         * PTHREAD_DESTRUCTOR_ITERATIONS passes), later than the
         * allocator's own key destructor if it has one. */
        int *next = malloc(sizeof *next);
        BB_CHECK(next != NULL, "malloc in a key destructor failed");
        *next = *count + 1;
        pthread_setspecific(key, next);
    }
    free(count);
}
static void dtor_early(void *v) { key_dtor(v, key_early); }
static void dtor_late(void *v) { key_dtor(v, key_late); }

static void tls_dtor(void *arg) {
    allocate_in_teardown((unsigned)(uintptr_t)arg);
    free(bb_escape(malloc(100000))); /* a large block too */
}

static void *thread_with_destructors(void *arg) {
    /* Registered before the thread's first allocation: with LIFO order this
     * runs after any thread-local destructor the allocator registers on
     * the thread's first malloc. */
    __cxa_thread_atexit_impl(tls_dtor, (void *)(uintptr_t)1, &__dso_handle);
    int *a = malloc(sizeof *a);
    int *b = malloc(sizeof *b);
    BB_CHECK(a && b, "malloc failed");
    *a = 0;
    *b = 0;
    pthread_setspecific(key_early, a);
    pthread_setspecific(key_late, b);
    for (int i = 0; i < 100; i++) free(bb_escape(malloc((size_t)(i + 1) * 40)));
    /* Registered after: runs first. */
    __cxa_thread_atexit_impl(tls_dtor, (void *)(uintptr_t)2, &__dso_handle);
    if ((uintptr_t)arg % 2) pthread_exit(NULL); /* the other exit path */
    return NULL;
}

/* Threads that allocate and exit; others free their blocks later. */
#define PRODUCED 2000
static void *produced[8][PRODUCED];
static size_t produced_n[8][PRODUCED];

static void *producer(void *arg) {
    int id = (int)(uintptr_t)arg;
    uint64_t rs = (uint64_t)id * 31 + 5;
    for (int i = 0; i < PRODUCED; i++) {
        size_t n = (i % 100 == 0) ? 50000 + (size_t)(bb_rand(&rs) % 500000) : 1 + (size_t)(bb_rand(&rs) % 2048);
        unsigned char *p = malloc(n);
        BB_CHECK(p != NULL, "producer: malloc failed");
        bb_fill(p, n, (uintptr_t)p);
        produced[id][i] = p;
        produced_n[id][i] = n;
    }
    return NULL;
}

static void *consumer(void *arg) {
    int id = (int)(uintptr_t)arg; /* frees what producer `id` made */
    for (int i = 0; i < PRODUCED; i++) {
        unsigned char *p = produced[id][i];
        size_t n = produced_n[id][i];
        size_t bad = bb_check(p, n, (uintptr_t)p);
        BB_CHECK(bad == (size_t)-1, "block of an exited thread corrupted at %zu", bad);
        if (i % 4 == 0) {
            /* realloc another thread's block, then keep it for main */
            unsigned char *q = realloc(p, n * 2 + 10);
            BB_CHECK(q != NULL, "realloc of an exited thread's block failed");
            bad = bb_check(q, n, (uintptr_t)p);
            BB_CHECK(bad == (size_t)-1, "realloc of an exited thread's block lost contents at %zu", bad);
            bb_fill(q, n * 2 + 10, (uintptr_t)q);
            produced[id][i] = q;
            produced_n[id][i] = n * 2 + 10;
        } else {
            free(p);
            produced[id][i] = NULL;
        }
    }
    return NULL;
}

/* Runs at exit while detached threads may still be allocating. */
static volatile int spinners_started;

static void *spinner(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg;
    __sync_fetch_and_add(&spinners_started, 1);
    void *live[32] = {0};
    for (;;) {
        int k = (int)(bb_rand(&rs) % 32);
        free(live[k]);
        live[k] = malloc(1 + (size_t)(bb_rand(&rs) % 5000));
        if (live[k]) memset(live[k], 1, 1);
    }
    return NULL;
}

static void at_exit_alloc(void) {
    void *p = malloc(1000);
    if (p) memset(p, 2, 1000);
    free(p);
    free(bb_escape(calloc(10, 1000)));
}

__attribute__((destructor)) static void destructor_alloc(void) {
    char *p = malloc(3000);
    if (p) memset(p, 4, 3000);
    p = realloc(p, 300000);
    free(p);
}

static void run_threads(void *(*fn)(void *), int n, int base) {
    pthread_t t[16];
    for (int i = 0; i < n; i++) {
        int e = pthread_create(&t[i], NULL, fn, (void *)(uintptr_t)(base + i));
        BB_CHECK(e == 0, "pthread_create failed: %d", e);
    }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

int main(void) {
    /* A key created before main's first malloc (bb_print_variant may not
     * allocate; the allocator may well have allocated before main). */
    BB_CHECK(pthread_key_create(&key_early, dtor_early) == 0, "pthread_key_create failed");
    bb_print_variant();
    free(bb_escape(malloc(10)));
    BB_CHECK(pthread_key_create(&key_late, dtor_late) == 0, "pthread_key_create failed");

    /* 1 + 2: destructors that allocate. */
    enum { ROUNDS = 50, PER_ROUND = 4 };
    for (int round = 0; round < ROUNDS; round++) run_threads(thread_with_destructors, PER_ROUND, round * PER_ROUND);
    free_kept();
    /* Each thread: two thread-local destructors, and per key the destructor
     * with counts 0, 1, 2 and 3 (re-armed three times; glibc makes
     * PTHREAD_DESTRUCTOR_ITERATIONS = 4 passes). Each run keeps one block.
     * Fewer means a destructor was skipped (say, an allocator teardown that
     * deleted or cleared the program's keys, or a pass lost to a crash
     * swallowed somewhere). */
    long expected_runs = (long)ROUNDS * PER_ROUND * (2 + 2 * 4);
    BB_CHECK(dtor_runs == expected_runs, "%ld destructor runs allocated, expected %ld", dtor_runs, expected_runs);

    /* 3: free blocks of exited threads from other threads. */
    run_threads(producer, 8, 0);
    for (int i = 0; i < 8; i += 2) run_threads(consumer, 2, i);
    for (int id = 0; id < 8; id++)
        for (int i = 0; i < PRODUCED; i++) {
            if (!produced[id][i]) continue;
            size_t bad = bb_check(produced[id][i], produced_n[id][i], (uintptr_t)produced[id][i]);
            BB_CHECK(bad == (size_t)-1, "realloc'd block of an exited thread corrupted at %zu", bad);
            free(produced[id][i]);
        }
    /* Again, with the exited threads' blocks freed by main directly. */
    run_threads(producer, 4, 0);
    for (int id = 0; id < 4; id++)
        for (int i = PRODUCED - 1; i >= 0; i--) free(produced[id][i]);

    bb_say("thread_exit: %ld destructor allocations", dtor_runs);

    /* 4: exit while detached threads allocate. */
    atexit(at_exit_alloc);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        BB_CHECK(pthread_create(&t, &attr, spinner, (void *)(uintptr_t)(i + 99)) == 0, "pthread_create failed");
    }
    while (spinners_started < 2) usleep(100);
    usleep(20000);
    return 0; /* exit() runs atexit handlers and destructors concurrently
                 with the spinners */
}
