/*
 * fork.c: fork while other threads are inside malloc/free.
 *
 *     fork [forks=50] [workers=3]
 *
 * Worker threads allocate, verify and free in a tight loop (including
 * cross-thread frees through a shared slot array) while the main thread, and
 * now and then a worker, forks. Each child verifies and frees a block
 * inherited from the parent, mallocs/frees a lot itself, does the same in a
 * new thread, and _exit(0)s. A child that deadlocks (an allocator lock held
 * by a thread that does not exist in the child) is killed by its own alarm;
 * the parent waits with a deadline too, so a hang is a FAIL, not a stuck test.
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define NSHARED 256
#define CHILD_ALARM 20
#define PARENT_WAIT_SECONDS 40

static volatile int stop;
static void *shared[NSHARED];
static size_t shared_n[NSHARED];
/* Taken around fork by pthread_atfork, so children get it unlocked. */
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

static void lock_shared(void) { pthread_mutex_lock(&shared_lock); }
static void unlock_shared(void) { pthread_mutex_unlock(&shared_lock); }



/* Allocate, fill, verify and free `ops` blocks, up to 64 alive at a time. */
static void churn(uint64_t *rs, int ops, const char *who) { bb_churn(rs, ops, who, 64, 16384, (1 << 18)); }

static void *child_thread(void *arg) {
    uint64_t rs = (uint64_t)(uintptr_t)arg;
    churn(&rs, 1500, "thread in child");
    return NULL;
}

/* What a child does: use inherited blocks, the allocator, and threads. */
static void child_main(uint64_t seed, void *inherited, size_t inherited_n) {
    alarm(CHILD_ALARM); /* default action: the child dies with SIGALRM */
    size_t bad = bb_check(inherited, inherited_n, (uintptr_t)inherited);
    BB_CHECK(bad == (size_t)-1, "child: inherited block corrupted at %zu", bad);
    free(inherited);
    /* Blocks owned by the parent's other threads at fork time. */
    pthread_mutex_lock(&shared_lock);
    for (int i = 0; i < NSHARED; i += 3) {
        if (!shared[i]) continue;
        bad = bb_check(shared[i], shared_n[i], (uintptr_t)shared[i]);
        BB_CHECK(bad == (size_t)-1, "child: block inherited from a worker corrupted at %zu", bad);
        free(shared[i]);
        shared[i] = NULL;
    }
    pthread_mutex_unlock(&shared_lock);
    uint64_t rs = seed;
    churn(&rs, 2000, "child");
    pthread_t t;
    int e = pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)(seed + 1));
    BB_CHECK(e == 0, "child: pthread_create failed: %d", e);
    churn(&rs, 1000, "child (concurrently with its thread)");
    pthread_join(t, NULL);
    void *p = aligned_alloc(4096, 100000);
    BB_CHECK(p != NULL, "child: aligned_alloc failed");
    free(p);
    _exit(0);
}

static void check_child(pid_t pid, int i, const char *who) {
    int status = 0;
    pid_t r;
    /* Poll with a deadline (thread-safe, unlike a process-wide alarm). */
    for (long waited_us = 0;; waited_us += 200) {
        r = waitpid(pid, &status, WNOHANG);
        if (r != 0 && !(r < 0 && errno == EINTR)) break;
        if (waited_us > PARENT_WAIT_SECONDS * 1000000L) {
            kill(pid, SIGKILL);
            bb_fail("child %d (forked by %s) still running after %d s: deadlock after fork?", i, who,
                    PARENT_WAIT_SECONDS);
        }
        usleep(200);
    }
    BB_CHECK(r == pid, "waitpid failed: %d", errno);
    if (WIFSIGNALED(status))
        bb_fail("child %d (forked by %s) killed by signal %d%s", i, who, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (its alarm: deadlock in the child?)" : "");
    BB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "child %d (forked by %s) exited with status %d (its FAIL line is above)", i, who, WEXITSTATUS(status));
}

static void do_fork(int i, const char *who) {
    uint64_t rs = (uint64_t)i * 7919 + 17;
    size_t n = bb_rand_size(&rs, 16384, (1 << 18));
    void *p = malloc(n);
    BB_CHECK(p != NULL, "malloc failed");
    bb_fill(p, n, (uintptr_t)p);
    pid_t pid = fork();
    BB_CHECK(pid >= 0, "fork failed: %d", errno);
    if (pid == 0) child_main(rs, p, n);
    /* The parent keeps using the allocator while the child runs. */
    churn(&rs, 500, who);
    check_child(pid, i, who);
    size_t bad = bb_check(p, n, (uintptr_t)p);
    BB_CHECK(bad == (size_t)-1, "parent: block corrupted across fork at %zu", bad);
    free(p);
}

static void *worker(void *arg) {
    int id = (int)(uintptr_t)arg;
    uint64_t rs = (uint64_t)id * 0x9E3779B97F4A7C15ull + 1;
    long loops = 0;
    while (!stop) {
        churn(&rs, 200, "worker");
        /* Swap a block through the shared array: cross-thread frees. */
        bb_swap_shared(shared, shared_n, NSHARED, &shared_lock, &rs, 16384, (1 << 18), "worker");
        /* Worker 0 also forks, a few times. */
        if (id == 0 && loops % 50 == 49 && loops < 500) do_fork(1000 + (int)loops, "a worker thread");
        loops++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    bb_print_variant();
    int forks = argc > 1 ? atoi(argv[1]) : 50;
    int workers = argc > 2 ? atoi(argv[2]) : 3;
    BB_CHECK(forks > 0 && workers >= 0 && workers <= 16, "usage: fork [forks] [workers <= 16]");
    pthread_atfork(lock_shared, unlock_shared, unlock_shared);
    pthread_t tid[16];
    for (int t = 0; t < workers; t++) {
        int e = pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t);
        BB_CHECK(e == 0, "pthread_create failed: %d", e);
    }
    for (int i = 0; i < forks; i++) {
        do_fork(i, "the main thread");
        /* Let the workers get back into malloc before the next fork. */
        if (i % 5 == 4) usleep(1000);
    }
    stop = 1;
    for (int t = 0; t < workers; t++) pthread_join(tid[t], NULL);
    for (int i = 0; i < NSHARED; i++) {
        if (!shared[i]) continue;
        size_t bad = bb_check(shared[i], shared_n[i], (uintptr_t)shared[i]);
        BB_CHECK(bad == (size_t)-1, "shared block corrupted at %zu", bad);
        free(shared[i]);
    }
    bb_say("fork: %d forks from the main thread with %d busy workers", forks, workers);
    return 0;
}
