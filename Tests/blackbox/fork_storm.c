/*
 * fork_storm.c: many forks from several threads at once while other threads
 * allocate.
 *
 *     fork_storm [seconds=2] [forkers=3] [workers=2] [seed=1]
 *
 * For `seconds`, `forkers` threads fork in a loop, concurrently, while
 * `workers` threads allocate, verify and free, and swap blocks through a
 * shared array (cross-thread frees). A forker allocates a block, forks, and
 * while the child runs keeps allocating itself; then it waits for the child
 * (with a deadline) and checks its block survived. Each child: verifies and
 * frees the block its forker made and some blocks inherited from the
 * workers, allocates and frees a few hundred blocks (small and large), in
 * one child out of four also in a new thread, in one out of eight forks a
 * grandchild that does the same, and _exit(0)s. A child that hangs (an
 * allocator lock left held across fork) is killed by its alarm and reported.
 *
 * Checks (FAIL): every child exits 0 in time; block contents in parents and
 * children. Prints the number of forks and worker operations.
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define NSHARED 512
#define MAX_FORKERS 16
#define MAX_WORKERS 16
#define CHILD_ALARM 30
#define WAIT_SECONDS 60

static volatile int stop;
static void *shared[NSHARED];
static size_t shared_n[NSHARED];
/* Held around fork by pthread_atfork, so a child never inherits it locked. */
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static void lock_shared(void) { pthread_mutex_lock(&shared_lock); }
static void unlock_shared(void) { pthread_mutex_unlock(&shared_lock); }

static long forks_done[MAX_FORKERS], worker_ops[MAX_WORKERS];
static unsigned long long g_seed = 1;



/* Allocate, fill, verify and free `ops` blocks, up to 48 alive at a time. */
static void churn(uint64_t *rs, int ops, const char *who) { bb_churn(rs, ops, who, 48, 32768, (1 << 19)); }

static void *child_thread(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg;
    churn(&rs, 400, "thread in a child");
    return NULL;
}

/* Waits for pid with a deadline; FAIL unless it exited 0. */
static void reap(pid_t pid, const char *who) {
    int status = 0;
    pid_t r;
    for (long waited_us = 0;; waited_us += 500) {
        r = waitpid(pid, &status, WNOHANG);
        if (r != 0 && !(r < 0 && errno == EINTR)) break;
        if (waited_us > WAIT_SECONDS * 1000000L) {
            kill(pid, SIGKILL);
            bb_fail("%s %d still running after %d s: deadlock after fork?", who, (int)pid, WAIT_SECONDS);
        }
        usleep(500);
    }
    BB_CHECK(r == pid, "waitpid(%d) failed: errno %d", (int)pid, errno);
    if (WIFSIGNALED(status))
        bb_fail("%s %d killed by signal %d%s", who, (int)pid, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (its alarm: deadlock after fork?)" : "");
    BB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s %d exited with status %d (its FAIL line is above)",
             who, (int)pid, WEXITSTATUS(status));
}

/* What a child (depth 0) or grandchild (depth 1) does; returns to _exit(0). */
static void child_work(uint64_t rs, void *mine, size_t mine_n, int depth) {
    alarm(CHILD_ALARM);
    size_t bad = bb_check(mine, mine_n, (uintptr_t)mine);
    BB_CHECK(bad == (size_t)-1, "child: block allocated just before fork corrupted at %zu", bad);
    free(mine);
    /* Blocks owned by the parent's workers at fork time. */
    pthread_mutex_lock(&shared_lock);
    for (int i = (int)(bb_rand(&rs) % 7); i < NSHARED; i += 7) {
        if (!shared[i]) continue;
        bad = bb_check(shared[i], shared_n[i], (uintptr_t)shared[i]);
        BB_CHECK(bad == (size_t)-1, "child: block inherited from a worker corrupted at %zu", bad);
        free(shared[i]);
        shared[i] = NULL;
    }
    pthread_mutex_unlock(&shared_lock);
    pthread_t t;
    int with_thread = bb_rand(&rs) % 4 == 0;
    if (with_thread) {
        int e = pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)bb_rand(&rs));
        BB_CHECK(e == 0, "child: pthread_create failed: %d", e);
    }
    churn(&rs, 400, depth ? "grandchild" : "child");
    if (with_thread) pthread_join(t, NULL);
    if (depth == 0 && bb_rand(&rs) % 8 == 0) {
        size_t n = bb_rand_size(&rs, 32768, (1 << 19));
        void *p = malloc(n);
        BB_CHECK(p != NULL, "child: malloc failed");
        bb_fill(p, n, (uintptr_t)p);
        pid_t pid = fork();
        BB_CHECK(pid >= 0, "child: fork failed: errno %d", errno);
        if (pid == 0) {
            child_work(rs ^ 0xABCDEF, p, n, 1);
            _exit(0);
        }
        churn(&rs, 100, "child waiting for its grandchild");
        reap(pid, "grandchild");
        bad = bb_check(p, n, (uintptr_t)p);
        BB_CHECK(bad == (size_t)-1, "child: its block corrupted across its own fork at %zu", bad);
        free(p);
    }
}

static void *forker(void *arg) {
    int id = (int)(uintptr_t)arg;
    uint64_t rs = g_seed * 0x9E3779B97F4A7C15ull + (uint64_t)id * 131 + 5;
    while (!stop) {
        size_t n = bb_rand_size(&rs, 32768, (1 << 19));
        void *p = malloc(n);
        BB_CHECK(p != NULL, "forker: malloc failed");
        bb_fill(p, n, (uintptr_t)p);
        uint64_t child_rs = bb_rand(&rs);
        pid_t pid = fork();
        BB_CHECK(pid >= 0, "fork failed: errno %d", errno);
        if (pid == 0) {
            child_work(child_rs, p, n, 0);
            _exit(0);
        }
        churn(&rs, 100, "forker while its child runs");
        reap(pid, "child");
        size_t bad = bb_check(p, n, (uintptr_t)p);
        BB_CHECK(bad == (size_t)-1, "forker: block corrupted across fork at %zu", bad);
        free(p);
        forks_done[id]++;
    }
    return NULL;
}

static void *worker(void *arg) {
    int id = (int)(uintptr_t)arg;
    uint64_t rs = g_seed * 0xD1B54A32D192ED03ull + (uint64_t)id * 17 + 3;
    while (!stop) {
        churn(&rs, 100, "worker");
        bb_swap_shared(shared, shared_n, NSHARED, &shared_lock, &rs, 32768, (1 << 19), "worker");
        worker_ops[id] += 101;
    }
    return NULL;
}


int main(int argc, char **argv) {
    bb_print_variant();
    double seconds = 2;
    int forkers = 3, workers = 2;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (bb_arg(argv[i], "seconds", &v)) seconds = strtod(v, NULL);
        else if (bb_arg(argv[i], "forkers", &v)) forkers = atoi(v);
        else if (bb_arg(argv[i], "workers", &v)) workers = atoi(v);
        else if (bb_arg(argv[i], "seed", &v)) g_seed = strtoull(v, NULL, 0);
        else bb_fail("usage: fork_storm [seconds=S] [forkers=N] [workers=N] [seed=N] (got %s)", argv[i]);
    }
    BB_CHECK(seconds > 0 && forkers >= 1 && forkers <= MAX_FORKERS && workers >= 0 && workers <= MAX_WORKERS,
             "need seconds > 0, 1 <= forkers <= %d, 0 <= workers <= %d", MAX_FORKERS, MAX_WORKERS);
    pthread_atfork(lock_shared, unlock_shared, unlock_shared);
    pthread_t ft[MAX_FORKERS], wt[MAX_WORKERS];
    for (int t = 0; t < workers; t++) {
        int e = pthread_create(&wt[t], NULL, worker, (void *)(uintptr_t)t);
        BB_CHECK(e == 0, "pthread_create failed: %d", e);
    }
    for (int t = 0; t < forkers; t++) {
        int e = pthread_create(&ft[t], NULL, forker, (void *)(uintptr_t)t);
        BB_CHECK(e == 0, "pthread_create failed: %d", e);
    }
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    stop = 1;
    long forks = 0, ops = 0;
    for (int t = 0; t < forkers; t++) {
        pthread_join(ft[t], NULL);
        forks += forks_done[t];
    }
    for (int t = 0; t < workers; t++) {
        pthread_join(wt[t], NULL);
        ops += worker_ops[t];
    }
    for (int i = 0; i < NSHARED; i++) {
        if (!shared[i]) continue;
        size_t bad = bb_check(shared[i], shared_n[i], (uintptr_t)shared[i]);
        BB_CHECK(bad == (size_t)-1, "shared block corrupted at %zu", bad);
        free(shared[i]);
    }
    BB_CHECK(forks >= forkers, "only %ld forks in %.1f s", forks, seconds);
    bb_say("fork_storm: %.1f s, %ld forks from %d threads at once, %d workers did %ld operations", seconds, forks,
           forkers, workers, ops);
    return 0;
}
