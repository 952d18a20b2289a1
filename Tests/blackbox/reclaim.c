/*
 * reclaim.c: the background reclaimer (Reclaim.swift), seen from a program.
 *
 *     reclaim idle-large | idle-medium | small | refused | fork | exit | threads
 *
 * idle-large   Maps 256 MiB as 64 blocks of 4 MiB, writes and frees them,
 *              then makes no further call: RSS must fall back to within
 *              8 MiB of where it started (polled for up to 10 s), and an
 *              "aethalloc-bg" thread must exist. With AETHALLOC_BACKGROUND=0
 *              (argument "off") RSS must still hold the cached spans after
 *              2 s, and no such thread exists.
 * idle-medium  The same with 200 MiB of 256 KiB blocks, every other one
 *              freed: RSS must fall by at least 80 MiB with no call.
 * small        A program that frees less than the start threshold (4 MiB)
 *              has no reclaimer thread.
 * refused      pthread_create fails (interposed here: EAGAIN), so the
 *              reclaimer cannot start: no crash, no message on stderr, and
 *              the inline policy still returns memory when the program
 *              calls the allocator again (malloc_trim not used). The
 *              metrics variant counts the refusal (background_failures in
 *              the AETHALLOC_STATS line; ReclaimTests).
 * fork         50 rounds: free 64 MiB (the reclaimer is purging), fork; the
 *              child allocates, frees and exits 0, or (every third round)
 *              execs /bin/true (checked); the parent goes on.
 * exit         20 children each free 64 MiB and exit at once (exit or
 *              _exit, alternating) while the reclaimer is busy: each must
 *              exit 0.
 * threads      10,000 thread lifetimes, each allocating and freeing, with the
 *              reclaimer running.
 */
#include "bb.h"

#include <dirent.h>
#include <malloc.h>
#include <sys/wait.h>
#include <time.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* ---- pthread_create, refusable (the program is built with -rdynamic) ------- */
static int refuse_threads;
typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg) {
    static create_fn real;
    if (__atomic_load_n(&refuse_threads, __ATOMIC_RELAXED)) return EAGAIN;
    if (!real) real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
    return real(t, a, fn, arg);
}

/* ---- what the process looks like --------------------------------------------- */

static int reclaimer_threads(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    BB_CHECK(d != NULL, "cannot open /proc/self/task");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[32] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t k = read(fd, comm, sizeof comm - 1);
        close(fd);
        if (k > 0 && strncmp(comm, "aethalloc-bg", 12) == 0) n++;
    }
    closedir(d);
    return n;
}

/* The hardened variant unmaps freed blocks above 64 KiB at once and caches
 * no spans: it has nothing for a reclaimer to wait for in these scenarios. */
static int hardened(void) {
    const char *v = bb_variant();
    return v && strcmp(v, "hardened") == 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Polls RSS (no allocator call) until it is at most `limit` or `seconds`
 * pass; returns the last RSS seen. */
static size_t wait_rss_at_most(size_t limit, double seconds) {
    double end = now() + seconds;
    size_t rss = bb_rss_bytes();
    while (rss > limit && now() < end) {
        usleep(20000);
        rss = bb_rss_bytes();
    }
    return rss;
}

static void churn_free(size_t bytes, size_t block) {
    size_t n = bytes / block;
    void **b = bb_escape(malloc(n * sizeof *b));
    BB_CHECK(b != NULL, "malloc of the table failed");
    for (size_t i = 0; i < n; i++) {
        b[i] = malloc(block);
        BB_CHECK(b[i] != NULL, "malloc(%zu) failed", block);
        memset(b[i], 1, block);
    }
    for (size_t i = 0; i < n; i++) free(b[i]);
    free(b);
}

/* ---- scenarios ---------------------------------------------------------------- */

static void idle_large(int off) {
    size_t start = bb_rss_bytes();
    enum { N = 64 };
    void *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(4 * MiB);
        BB_CHECK(b[i] != NULL, "malloc(4 MiB) failed");
        memset(b[i], 1, 4 * MiB);
    }
    for (int i = 0; i < N; i++) free(b[i]);
    size_t after = bb_rss_bytes();
    if (off) {
        usleep(2000000);
        size_t rss = bb_rss_bytes();
        BB_CHECK(reclaimer_threads() == 0, "AETHALLOC_BACKGROUND=0 but a reclaimer thread exists");
        BB_CHECK(rss + 16 * MiB >= after, "AETHALLOC_BACKGROUND=0: RSS fell from %zu to %zu MiB with no call",
                 after / MiB, rss / MiB);
        bb_say("reclaim: idle-large off: RSS %zu MiB after the frees, %zu MiB 2 s later", after / MiB, rss / MiB);
        return;
    }
    double t0 = now();
    size_t rss = wait_rss_at_most(start + 8 * MiB, 10);
    double took = now() - t0;
    BB_CHECK(rss <= start + 8 * MiB, "RSS is %zu MiB 10 s after freeing 256 MiB with no call (started at %zu MiB)",
             rss / MiB, start / MiB);
    BB_CHECK(reclaimer_threads() == (hardened() ? 0 : 1), "%d reclaimer threads", reclaimer_threads());
    bb_say("reclaim: idle-large: RSS %zu -> %zu MiB after the frees -> %zu MiB %.2f s later, with no call",
           start / MiB, after / MiB, rss / MiB, took);
}

static void idle_medium(void) {
    size_t start = bb_rss_bytes();
    enum { N = 800 };
    static void *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(256 * KiB);
        BB_CHECK(b[i] != NULL, "malloc(256 KiB) failed");
        memset(b[i], 1, 256 * KiB);
    }
    for (int i = 0; i < N; i += 2) free(b[i]);
    size_t after = bb_rss_bytes();
    double t0 = now();
    /* 100 MiB stay live; the freed half goes back (part of it already
     * inline, past the budget's hard ceiling, during the frees). */
    size_t target = start + 100 * MiB + 12 * MiB;
    size_t rss = wait_rss_at_most(target, 10);
    BB_CHECK(rss <= target, "RSS is %zu MiB 10 s after freeing half of 200 MiB of 256 KiB blocks (live: 100 MiB, "
             "started at %zu MiB)", rss / MiB, start / MiB);
    bb_say("reclaim: idle-medium: RSS %zu -> %zu MiB in %.2f s with no call", after / MiB, rss / MiB, now() - t0);
    for (int i = 1; i < N; i += 2) free(b[i]);
}

static void small(void) {
    churn_free(2 * MiB, 256 * KiB);
    churn_free(1 * MiB, 100);
    usleep(100000);
    BB_CHECK(reclaimer_threads() == 0, "a program that freed 3 MiB has a reclaimer thread");
    bb_say("reclaim: small: no reclaimer thread");
}

static void refused(void) {
    __atomic_store_n(&refuse_threads, 1, __ATOMIC_RELAXED);
    churn_free(128 * MiB, 4 * MiB);
    churn_free(64 * MiB, 256 * KiB);
    BB_CHECK(reclaimer_threads() == 0, "a reclaimer thread exists though pthread_create refuses");
    /* The inline policy acts on the program's next calls. */
    size_t before = bb_rss_bytes();
    usleep(1200000);
    for (int i = 0; i < 4; i++) churn_free(8 * MiB, 4 * MiB);
    size_t rss = bb_rss_bytes();
    BB_CHECK(rss < 80 * MiB, "RSS %zu MiB: the inline policy did not return memory (was %zu MiB)", rss / MiB,
             before / MiB);
    bb_say("reclaim: refused: no thread, inline policy: RSS %zu -> %zu MiB", before / MiB, rss / MiB);
}

static void forks(void) {
    for (int round = 0; round < 50; round++) {
        churn_free(64 * MiB, round % 2 ? 4 * MiB : 256 * KiB);
        pid_t pid = fork();
        BB_CHECK(pid >= 0, "fork failed: errno %d", errno);
        if (pid == 0) {
            if (round % 3 == 2) {
                /* fork+exec, as a shell or a server spawning helpers does. */
                execl("/bin/true", "true", (char *)NULL);
                _exit(4);
            }
            churn_free(16 * MiB, 256 * KiB);
            char *p = malloc(100);
            if (!p) _exit(3);
            strcpy(p, "child");
            free(p);
            _exit(0);
        }
        int status = 0;
        BB_CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
        BB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "round %d: the child ended with status 0x%x", round,
                 status);
    }
    bb_say("reclaim: fork: 50 children forked while the reclaimer purged (every third exec'd /bin/true), all "
           "exited 0");
}

static void exits(void) {
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        BB_CHECK(pid >= 0, "fork failed: errno %d", errno);
        if (pid == 0) {
            churn_free(64 * MiB, round % 4 < 2 ? 4 * MiB : 256 * KiB);
            if (round % 2) _exit(0);
            exit(0);
        }
        int status = 0;
        BB_CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
        BB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "round %d: the child ended with status 0x%x", round,
                 status);
    }
    bb_say("reclaim: exit: 20 children exited while the reclaimer purged");
}

static void *lifetime(void *arg) {
    size_t n = (size_t)(uintptr_t)arg;
    void *p = malloc(n);
    if (p) memset(p, 1, n);
    free(p);
    void *q = malloc(300 * KiB);
    free(q);
    return NULL;
}

static void threads(void) {
    churn_free(64 * MiB, 256 * KiB); /* the reclaimer starts */
    for (int i = 0; i < 10000; i++) {
        pthread_t t;
        int e = pthread_create(&t, NULL, lifetime, (void *)(uintptr_t)(16 + (i % 64) * 32));
        BB_CHECK(e == 0, "pthread_create failed: %d", e);
        BB_CHECK(pthread_join(t, NULL) == 0, "pthread_join failed");
        if (i % 1000 == 0) churn_free(16 * MiB, 4 * MiB);
    }
    BB_CHECK(reclaimer_threads() == (hardened() ? 0 : 1), "%d reclaimer threads after 10,000 thread lifetimes",
             reclaimer_threads());
    bb_say("reclaim: threads: 10000 thread lifetimes with the reclaimer running");
}

int main(int argc, char **argv) {
    bb_print_variant();
    BB_CHECK(argc >= 2, "usage: reclaim idle-large [off] | idle-medium | small | refused | fork | exit | threads");
    if (strcmp(argv[1], "idle-large") == 0) idle_large(argc > 2 && strcmp(argv[2], "off") == 0);
    else if (strcmp(argv[1], "idle-medium") == 0) idle_medium();
    else if (strcmp(argv[1], "small") == 0) small();
    else if (strcmp(argv[1], "refused") == 0) refused();
    else if (strcmp(argv[1], "fork") == 0) forks();
    else if (strcmp(argv[1], "exit") == 0) exits();
    else if (strcmp(argv[1], "threads") == 0) threads();
    else bb_fail("unknown scenario %s", argv[1]);
    return 0;
}
