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
 * children; every fork started was reaped and checked (forks started ==
 * forks completed, per forker, and each forker completed at least one); and
 * the children's own tally, kept in memory shared with the parent, adds up:
 * as many children and grandchildren finished their work as were forked,
 * and they made exactly the allocations their plan says (400 churn
 * operations each, 400 more per extra thread, 100 more while waiting for a
 * grandchild), checking every inherited block they freed. Prints the
 * number of forks and worker operations.
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
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

static long forks_started[MAX_FORKERS], forks_done[MAX_FORKERS], worker_ops[MAX_WORKERS];
static unsigned long long g_seed = 1;

/* What the children did, in a MAP_SHARED page so that the parent sees it
 * (updated with atomic adds: children of different forkers run at once). A
 * child adds to it only after its work passed every check, just before
 * _exit(0); a child that failed or died adds nothing. */
struct tally {
    long children, grandchildren; /* finished their work */
    long grandchildren_forked;    /* forked by a child, reaped and checked */
    long child_threads;           /* extra threads a child or grandchild ran */
    long churn_ops;               /* blocks bb_churn allocated and verified */
    long inherited_checked;       /* blocks inherited from workers, verified and freed */
};
static struct tally *tally;
#define TALLY_ADD(field, n) __atomic_fetch_add(&tally->field, (n), __ATOMIC_RELAXED)
#define CHURN_OPS 400
#define WAIT_OPS 100

/* Allocate, fill, verify and free `ops` blocks, up to 48 alive at a time. */
/* Returns the number of blocks verified. */
static long churn(uint64_t *rs, int ops, const char *who) { return bb_churn(rs, ops, who, 48, 32768, (1 << 19)); }

static void *child_thread(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg;
    return (void *)(uintptr_t)churn(&rs, CHURN_OPS, "thread in a child");
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
    long inherited = 0;
    pthread_mutex_lock(&shared_lock);
    for (int i = (int)(bb_rand(&rs) % 7); i < NSHARED; i += 7) {
        if (!shared[i]) continue;
        bad = bb_check(shared[i], shared_n[i], (uintptr_t)shared[i]);
        BB_CHECK(bad == (size_t)-1, "child: block inherited from a worker corrupted at %zu", bad);
        free(shared[i]);
        shared[i] = NULL;
        inherited++;
    }
    pthread_mutex_unlock(&shared_lock);
    long ops = 0;
    pthread_t t;
    int with_thread = bb_rand(&rs) % 4 == 0;
    if (with_thread) {
        int e = pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)bb_rand(&rs));
        BB_CHECK(e == 0, "child: pthread_create failed: %d", e);
    }
    ops += churn(&rs, CHURN_OPS, depth ? "grandchild" : "child");
    if (with_thread) {
        void *verified;
        BB_CHECK(pthread_join(t, &verified) == 0, "child: pthread_join failed");
        ops += (long)(uintptr_t)verified;
    }
    long grandchildren = 0;
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
        ops += churn(&rs, WAIT_OPS, "child waiting for its grandchild");
        reap(pid, "grandchild");
        bad = bb_check(p, n, (uintptr_t)p);
        BB_CHECK(bad == (size_t)-1, "child: its block corrupted across its own fork at %zu", bad);
        free(p);
        grandchildren = 1;
    }
    /* Everything passed: report it. */
    if (depth) TALLY_ADD(grandchildren, 1); else TALLY_ADD(children, 1);
    TALLY_ADD(grandchildren_forked, grandchildren);
    TALLY_ADD(child_threads, with_thread);
    TALLY_ADD(churn_ops, ops);
    TALLY_ADD(inherited_checked, inherited);
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
        forks_started[id]++;
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
    tally = mmap(NULL, sizeof *tally, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    BB_CHECK(tally != MAP_FAILED, "mmap of the shared tally failed: errno %d", errno);
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
        BB_CHECK(pthread_join(ft[t], NULL) == 0, "pthread_join failed");
        /* A forker stops only between forks, after reaping and checking. */
        BB_CHECK(forks_done[t] == forks_started[t], "forker %d started %ld forks but completed %ld", t,
                 forks_started[t], forks_done[t]);
        BB_CHECK(forks_done[t] >= 1, "forker %d completed no fork in %.1f s", t, seconds);
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
    /* Every child and grandchild that exited 0 did all its work; and every
     * one that was forked exited 0 (reap), so the tally must match exactly. */
    struct tally got = *tally;
    BB_CHECK(got.children == forks, "%ld children finished their work, %ld forks completed", got.children, forks);
    BB_CHECK(got.grandchildren == got.grandchildren_forked, "%ld grandchildren finished their work, %ld were forked",
             got.grandchildren, got.grandchildren_forked);
    long planned_ops = (got.children + got.grandchildren + got.child_threads) * CHURN_OPS
        + got.grandchildren_forked * WAIT_OPS;
    BB_CHECK(got.churn_ops == planned_ops, "children made %ld checked allocations, their plan was %ld",
             got.churn_ops, planned_ops);
    bb_say("fork_storm: children: %ld (+%ld grandchildren, %ld extra threads), %ld allocations and %ld inherited "
           "blocks checked", got.children, got.grandchildren, got.child_threads, got.churn_ops,
           got.inherited_checked);
    bb_say("fork_storm: %.1f s, %ld forks from %d threads at once, %d workers did %ld operations", seconds, forks,
           forkers, workers, ops);
    return 0;
}
