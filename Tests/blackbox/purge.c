/* purge.c: the dirty budget and purge delay do what the README says.
 *
 * Each case runs in a child process started with its own environment
 * (AETHALLOC_DIRTY_PERCENT, AETHALLOC_PURGE_DELAY_MS are read once, at
 * start), with AETHALLOC_BACKGROUND=0: this is the inline policy; the
 * background reclaimer has reclaim.c. A child allocates 32 "kept" and 32 "dropped" medium blocks of
 * 960 KiB, interleaved so that no segment ever becomes wholly free (a free
 * segment is unmapped whatever the budget says), touches every page, frees
 * the dropped ones and measures how much RSS fell:
 *
 *   default          budget 25% of ~30 MiB in use: most of 30 MiB goes back
 *                    at once
 *   delay=0          every freed slice is purged at once
 *   percent=400,     budget far above what was freed: RSS stays, then
 *   delay=-1         malloc_trim(0) gives it back
 *   percent=400,     a delay far longer than the case can take: RSS stays
 *   delay=600000     although a medium block is carved (a segment
 *                    operation, when a due purge would run)
 *   percent=400,     a short delay, then a sleep far above it: once a
 *   delay=20         medium block is carved, what was freed is gone
 *
 * The two delay cases split "not before the delay" from "after it" so that
 * neither depends on how long the frees or the sleeps take: nothing a child
 * does comes near 600 s, and 20 ms is far below the 500 ms sleep.
 *
 * Last, "last-thread": what a worker thread freed before exiting goes back
 * to the OS once the main thread is the only one left.
 *
 * The hardened variant maps these sizes (no budget applies: freed at once)
 * and is checked for that instead. Under glibc the program only runs the
 * cases without checking them. */
#include "bb.h"
#include <malloc.h>
#include <sys/wait.h>
#include <pthread.h>

#define N 32
#define SIZE (960u << 10)
#define MIB (1u << 20)

static long rss_mib10(void) { return (long)(bb_rss_bytes() * 10 / MIB); } /* tenths of MiB */

/* One medium block carved and freed: a segment operation, which is when a
 * due purge happens. Written to, so the compiler cannot drop the pair. */
static void carve_one(void) {
    char *volatile p = malloc(SIZE);
    BB_CHECK(p != NULL, "malloc(%u) failed", SIZE);
    p[0] = 1;
    free(p);
}

static int child(const char *mode) {
    const char *v = bb_variant();
    int checked = v != NULL;
    int hardened = v && !strcmp(v, "hardened");
    static char *keep[N], *drop[N];
    for (int i = 0; i < N; i++) {
        keep[i] = malloc(SIZE);
        drop[i] = malloc(SIZE);
        BB_CHECK(keep[i] && drop[i], "malloc(%u) failed", SIZE);
        memset(keep[i], 1, SIZE);
        memset(drop[i], 2, SIZE);
    }
    long before = rss_mib10();
    for (int i = 0; i < N; i++) free(drop[i]);
    long fell = before - rss_mib10(); /* tenths of MiB */
    long freed = (long)N * SIZE * 10 / MIB;
    bb_say("%s: RSS fell by %ld.%ld MiB of %ld.%ld MiB freed", mode, fell / 10, fell % 10, freed / 10, freed % 10);
    if (!checked) return 0;
    if (!hardened && !strcmp(mode, "delay")) {
        /* The 20 ms delay may or may not have passed during the frees; after
         * the sleep it has, and the carve purges every dirty segment. */
        usleep(500 * 1000);
        carve_one();
        long total = before - rss_mib10();
        bb_say("delay: after the delay RSS fell by %ld.%ld MiB in all", total / 10, total % 10);
        BB_CHECK(total >= freed - 40, "delay: only %ld.%ld MiB went back after the delay had passed", total / 10,
                 total % 10);
        for (int i = 0; i < N; i++) free(keep[i]);
        return 0;
    }
    int keeps = !hardened && (!strcmp(mode, "retain") || !strcmp(mode, "hold"));
    if (!keeps) {
        /* At most the budget (8 MiB here) may stay. */
        BB_CHECK(fell >= freed - 80 - 20, "%s: only %ld.%ld of %ld.%ld MiB went back", mode, fell / 10, fell % 10,
                 freed / 10, freed % 10);
        if (!strcmp(mode, "eager"))
            BB_CHECK(fell >= freed - 20, "eager: %ld.%ld MiB stayed", (freed - fell) / 10, (freed - fell) % 10);
    } else {
        BB_CHECK(fell < 40, "%s: %ld.%ld MiB went back although the budget allows keeping it", mode, fell / 10,
                 fell % 10);
        long mark = rss_mib10();
        if (!strcmp(mode, "hold")) {
            carve_one(); /* long before the delay: nothing goes */
            long early = mark - rss_mib10();
            BB_CHECK(early < 40, "hold: %ld.%ld MiB purged before the delay had passed", early / 10, early % 10);
        }
        malloc_trim(0); /* then malloc_trim gives it all back */
        long later = mark - rss_mib10();
        bb_say("%s: then RSS fell by %ld.%ld MiB", mode, later / 10, later % 10);
        BB_CHECK(later >= freed - 40, "%s: only %ld.%ld MiB went back afterwards", mode, later / 10, later % 10);
    }
    for (int i = 0; i < N; i++) free(keep[i]);
    return 0;
}

static void run(const char *self, const char *mode, const char *percent, const char *delay) {
    pid_t pid = fork();
    BB_CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        if (percent) setenv("AETHALLOC_DIRTY_PERCENT", percent, 1); else unsetenv("AETHALLOC_DIRTY_PERCENT");
        if (delay) setenv("AETHALLOC_PURGE_DELAY_MS", delay, 1); else unsetenv("AETHALLOC_PURGE_DELAY_MS");
        /* The inline policy, measured synchronously; the background
         * reclaimer (which takes the delay and the budget off the freeing
         * thread) has its own program, reclaim.c. */
        setenv("AETHALLOC_BACKGROUND", "0", 1);
        execl(self, self, mode, (char *)NULL);
        _exit(127);
    }
    int status;
    BB_CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
    BB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "case %s failed (status %d)", mode, status);
}

/* A worker fills three size classes (64 MiB), frees it all and exits; the
 * depot or pool would keep up to 2 MiB per class for other threads, but
 * with only the main thread left it drains to the pages and their memory
 * goes back. */
static void *worker(void *arg) {
    (void)arg;
    static const size_t sizes[3] = {64, 256, 1024};
    enum { COUNT = 64 << 20 >> 10 }; /* 64 MiB of 1 KiB-average blocks per class share */
    static void *blocks[3][COUNT / 3];
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < COUNT / 3; i++) {
            blocks[c][i] = malloc(sizes[c]);
            BB_CHECK(blocks[c][i] != NULL, "malloc failed");
            memset(blocks[c][i], 3, sizes[c]);
        }
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < COUNT / 3; i++) free(blocks[c][i]);
    return NULL;
}

static int last_thread(void) {
    const char *v = bb_variant();
    long base = rss_mib10();
    pthread_t t;
    BB_CHECK(pthread_create(&t, NULL, worker, NULL) == 0, "pthread_create failed");
    BB_CHECK(pthread_join(t, NULL) == 0, "pthread_join failed");
    usleep(20 * 1000); /* the key destructor runs as the thread exits */
    long left = rss_mib10() - base;
    bb_say("last thread: %ld.%ld MiB above the starting RSS after the worker exited", left / 10, left % 10);
    if (v) BB_CHECK(left < 20, "last thread: %ld.%ld MiB stayed after the only worker exited", left / 10, left % 10);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1) return strcmp(argv[1], "last-thread") ? child(argv[1]) : last_thread();
    bb_print_variant();
    run(argv[0], "default", NULL, NULL);
    run(argv[0], "eager", NULL, "0");
    run(argv[0], "retain", "400", "-1");
    run(argv[0], "hold", "400", "600000");
    run(argv[0], "delay", "400", "20");
    run(argv[0], "last-thread", NULL, NULL);
    bb_say("purge: all cases passed");
    return 0;
}
