/*
 * oom.c: allocation under an address-space limit (ulimit -v).
 *
 *     oom [headroom_mib=256]
 *
 * Each phase runs in a forked child of its own, so the limit stays there:
 * the child reads its VmSize from /proc/self/status, sets RLIMIT_AS to
 * VmSize + headroom (the library maps 32 MiB for its segment map at load, so
 * the limit is relative to what the process already has) and then, for
 * small (1 B - 1 KiB, mixed classes), medium (100 KiB) or large (10 MiB)
 * blocks:
 *
 *   1. mallocs until malloc returns NULL, which it must, with errno ENOMEM,
 *      writing a tag at both ends of every block;
 *   2. at the limit calls calloc, realloc (growing a live block),
 *      reallocarray, posix_memalign, aligned_alloc, memalign and valloc:
 *      each either succeeds with a correct block or fails the documented way
 *      (NULL + ENOMEM; posix_memalign returns ENOMEM and leaves *memptr;
 *      realloc leaves the block intact);
 *   3. frees every other block and allocates the same sizes again: every
 *      allocation must succeed; then frees another quarter and allocates it
 *      back with calloc (zeroed), realloc(NULL, n), posix_memalign(16) and
 *      aligned_alloc(16): all must succeed;
 *   4. frees everything and mallocs one block of half the headroom: it must
 *      succeed (memory freed is memory that can be had again).
 *
 * Then, at the limit again, a thread created before the limit was set makes
 * its first allocations (its thread cache is new) and exits; finally
 * everything is freed. Each phase prints a line; a child killed by a signal or failing a
 * check is a FAIL, with the phase it was in. The tags of every block are
 * checked before it is freed. Output lines also give the counts of blocks
 * and the calls that failed with ENOMEM at the limit.
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)
#define CAP ((size_t)2 << 20) /* blocks per phase, at most */

static void **ptr;
static size_t *sz;
static size_t headroom;
static const char *phase = "start";
static int strict; /* AethAlloc: a freed block's memory serves the same size again, always */

static size_t vm_size_kib(void) { return bb_proc_field("/proc/self/status", "VmSize:"); }

static void tag(void *p, size_t n, size_t i) {
    unsigned char *c = p;
    uint64_t t = (uint64_t)i * 0x9E3779B97F4A7C15ull ^ n;
    if (n >= 16) {
        memcpy(c, &t, 8);
        memcpy(c + n - 8, &t, 8);
    } else if (n > 0) {
        c[0] = (unsigned char)t;
        c[n - 1] = (unsigned char)t;
    }
}

static void check_tag(const void *p, size_t n, size_t i, const char *what) {
    const unsigned char *c = p;
    uint64_t t = (uint64_t)i * 0x9E3779B97F4A7C15ull ^ n, a, b;
    if (n >= 16) {
        memcpy(&a, c, 8);
        memcpy(&b, c + n - 8, 8);
        BB_CHECK(a == t && b == t, "%s: %s: block %zu (%zu bytes at %p) lost its tags", phase, what, i, n, p);
    } else if (n > 0) {
        BB_CHECK(c[0] == (unsigned char)t && c[n - 1] == (unsigned char)t, "%s: %s: block %zu (%zu bytes) lost its tags",
                 phase, what, i, n);
    }
}

static void check_free(size_t i, const char *what) {
    check_tag(ptr[i], sz[i], i, what);
    free(ptr[i]);
    ptr[i] = NULL;
}

static size_t size_of(int kind, uint64_t *rs) {
    if (kind == 0) return 1 + (size_t)(bb_rand(rs) % 1024);
    return kind == 1 ? 100 * KiB : 10 * MiB;
}

static const char *kind_name[3] = {"small (1 B - 1 KiB)", "medium (100 KiB)", "large (10 MiB)"};

/* A call at the limit: success must be a usable block, failure the
 * documented ENOMEM. Returns 1 when it failed. */
static int at_limit(const char *call, void *p, int err, size_t n, size_t align, int zeroed) {
    if (!p) {
        BB_CHECK(err == ENOMEM, "%s: %s failed with errno %d, not ENOMEM", phase, call, err);
        return 1;
    }
    BB_CHECK(((uintptr_t)p & (align - 1)) == 0, "%s: %s returned %p, not %zu-aligned", phase, call, p, align);
    BB_CHECK(malloc_usable_size(p) >= n, "%s: %s: usable size %zu", phase, call, malloc_usable_size(p));
    if (zeroed) {
        const unsigned char *c = bb_escape(p);
        for (size_t k = 0; k < n; k += (n > 65536 ? 4093 : 1))
            BB_CHECK(c[k] == 0, "%s: %s: not zeroed at %zu", phase, call, k);
    }
    if (n) ((unsigned char *)p)[n - 1] = 1;
    free(p);
    return 0;
}

static long enomem_total[8];
static const char *probe_name[8] = {"calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign",
                                    "valloc", "malloc"};

static void probes(size_t n, size_t live_count) {
    int e;
    void *p;
    char c[96];
    snprintf(c, sizeof c, "calloc(1, %zu)", n);
    errno = 0;
    p = calloc(1, n);
    e = errno;
    enomem_total[0] += at_limit(c, p, e, n, 16, 1);
    if (live_count > 0) {
        /* Grow a live block: it stays intact when that fails. */
        size_t i = live_count / 2, grow = sz[i] + n;
        errno = 0;
        p = realloc(ptr[i], grow);
        e = errno;
        if (p) {
            check_tag(p, sz[i], i, "realloc at the limit (kept part)");
            ptr[i] = p = realloc(p, sz[i]); /* back to its size */
            BB_CHECK(p != NULL, "%s: shrinking realloc failed", phase);
            tag(p, sz[i], i);
        } else {
            BB_CHECK(e == ENOMEM, "%s: realloc(p, %zu) failed with errno %d, not ENOMEM", phase, grow, e);
            check_tag(ptr[i], sz[i], i, "after a failed realloc");
            enomem_total[1]++;
        }
        errno = 0;
        p = reallocarray(ptr[i], 2, grow);
        e = errno;
        if (p) {
            check_tag(p, sz[i], i, "reallocarray at the limit (kept part)");
            ptr[i] = p = realloc(p, sz[i]);
            BB_CHECK(p != NULL, "%s: shrinking realloc failed", phase);
            tag(p, sz[i], i);
        } else {
            BB_CHECK(e == ENOMEM, "%s: reallocarray(p, 2, %zu) failed with errno %d, not ENOMEM", phase, grow, e);
            check_tag(ptr[i], sz[i], i, "after a failed reallocarray");
            enomem_total[2]++;
        }
    }
    void *q = (void *)0x5a5a;
    int r = posix_memalign(&q, 4096, n);
    if (r != 0) {
        BB_CHECK(r == ENOMEM, "%s: posix_memalign(4096, %zu) returned %d, not ENOMEM", phase, n, r);
        BB_CHECK(q == (void *)0x5a5a, "%s: a failed posix_memalign changed *memptr", phase);
        enomem_total[3]++;
    } else {
        snprintf(c, sizeof c, "posix_memalign(4096, %zu)", n);
        at_limit(c, q, 0, n, 4096, 0);
    }
    snprintf(c, sizeof c, "aligned_alloc(65536, %zu)", n);
    errno = 0;
    p = aligned_alloc(65536, n);
    e = errno;
    enomem_total[4] += at_limit(c, p, e, n, 65536, 0);
    snprintf(c, sizeof c, "memalign(256, %zu)", n);
    errno = 0;
    p = memalign(256, n);
    e = errno;
    enomem_total[5] += at_limit(c, p, e, n, 256, 0);
    snprintf(c, sizeof c, "valloc(%zu)", n);
    errno = 0;
    p = valloc(n);
    e = errno;
    enomem_total[6] += at_limit(c, p, e, n, 4096, 0);
}

static void run_phase(int kind) {
    uint64_t rs = 12345 + (uint64_t)kind;
    static char name[64];
    snprintf(name, sizeof name, "%s blocks", kind_name[kind]);
    phase = name;
    /* 1. Allocate until NULL. */
    size_t n = 0, bytes = 0, failed_size = 0;
    for (;;) {
        size_t s = size_of(kind, &rs);
        errno = 0;
        void *p = malloc(s);
        if (!p) {
            BB_CHECK(errno == ENOMEM, "%s: malloc(%zu) returned NULL with errno %d, not ENOMEM", phase, s, errno);
            failed_size = s;
            enomem_total[7]++;
            break;
        }
        BB_CHECK(n < CAP, "%s: %zu blocks (%zu MiB) and malloc never returned NULL under a %zu MiB headroom", phase,
                 n, bytes / MiB, headroom / MiB);
        /* Touch every page, so that the memory is really there. */
        for (size_t k = 4096; k < s; k += 4096) ((volatile unsigned char *)p)[k] = 1;
        tag(p, s, n);
        ptr[n] = p;
        sz[n] = s;
        bytes += s;
        n++;
    }
    bb_say("oom: %s: malloc returned NULL/ENOMEM after %zu blocks, %zu MiB", phase, n, bytes / MiB);
    BB_CHECK(kind == 0 || bytes >= headroom / 4, "%s: only %zu MiB allocated under a %zu MiB headroom", phase,
             bytes / MiB, headroom / MiB);
    /* 2. The rest of the API at the limit. */
    probes(failed_size, n);
    probes(kind == 0 ? 64 * KiB + 1 : failed_size * 2, n);
    /* 3. Free half, allocate the same sizes again. */
    for (size_t i = 1; i < n; i += 2) check_free(i, "freeing half");
    size_t half = 0, half_got = 0;
    for (size_t i = 1; i < n; i += 2) {
        half++;
        errno = 0;
        ptr[i] = malloc(sz[i]);
        if (!ptr[i] && !strict) {
            /* A general-purpose heap (glibc) may have split freed chunks for
             * other sizes; it must still give back nearly all of it. */
            BB_CHECK(errno == ENOMEM, "%s: malloc(%zu) failed with errno %d", phase, sz[i], errno);
            continue;
        }
        BB_CHECK(ptr[i] != NULL, "%s: after freeing half of the blocks, malloc(%zu) failed (errno %d) at block %zu",
                 phase, sz[i], errno, i);
        tag(ptr[i], sz[i], i);
        half_got++;
    }
    BB_CHECK(half_got * 10 >= half * 9, "%s: after freeing half of the blocks (%zu), only %zu of the same sizes could "
             "be allocated again", phase, half, half_got);
    size_t again = 0;
    for (size_t i = 1; i < n; i += 4)
        if (ptr[i]) check_free(i, "freeing a quarter");
    size_t quarter = 0;
    for (size_t i = 1; i < n; i += 4) {
        quarter++;
        void *p = NULL;
        const char *how;
        switch ((i / 4) % 4) {
        case 0:
            how = "calloc";
            p = calloc(1, sz[i]);
            if (p) {
                const unsigned char *c = bb_escape(p);
                for (size_t k = 0; k < sz[i]; k += (sz[i] > 65536 ? 4093 : 1))
                    BB_CHECK(c[k] == 0, "%s: calloc(1, %zu) not zeroed at %zu", phase, sz[i], k);
            }
            break;
        case 1:
            how = "realloc(NULL, n)";
            p = realloc(NULL, sz[i]);
            break;
        case 2:
            how = "posix_memalign(16)";
            if (posix_memalign(&p, 16, sz[i]) != 0) p = NULL;
            break;
        default:
            how = "aligned_alloc(16)";
            p = aligned_alloc(16, sz[i]);
            break;
        }
        if (!p && !strict) continue;
        BB_CHECK(p != NULL, "%s: after freeing a quarter of the blocks, %s of %zu bytes failed at block %zu", phase, how,
                 sz[i], i);
        ptr[i] = p;
        tag(p, sz[i], i);
        again++;
    }
    BB_CHECK(again * 10 >= quarter * 9, "%s: after freeing a quarter of the blocks (%zu), only %zu could be "
             "allocated again", phase, quarter, again);
    /* 4. Free everything; a big block can be had again. */
    for (size_t i = 0; i < n; i++)
        if (ptr[i]) check_free(i, "freeing everything");
    size_t big = headroom / 2;
    errno = 0;
    void *p = malloc(big);
    if (!p) {
        /* Reported on its own line (the test harness tells this apart), then
         * the run goes on after malloc_trim(0), which must make room. */
        int e = errno;
        int trimmed = malloc_trim(0);
        errno = 0;
        p = malloc(big);
        bb_say("RECOVERY: %s: after freeing every block, malloc(%zu MiB) failed (errno %d) under a %zu MiB headroom; "
               "after malloc_trim(0) (returned %d) it %s (VmSize %zu MiB)",
               phase, big / MiB, e, headroom / MiB, trimmed, p ? "succeeded" : "failed too", vm_size_kib() / 1024);
        BB_CHECK(p != NULL || errno == ENOMEM, "%s: malloc(%zu MiB) failed with errno %d", phase, big / MiB, errno);
    }
    if (p) {
        for (size_t k = 0; k < big; k += 4096) ((volatile unsigned char *)p)[k] = 1;
        free(p);
    }
    bb_say("oom: %s: half freed and allocated again, a quarter again with calloc/realloc/posix_memalign/"
           "aligned_alloc (%zu), all freed, then malloc(%zu MiB) %s",
           phase, again, big / MiB, p ? "succeeded" : "failed (see RECOVERY above)");
}

/* A thread whose first allocation comes when the process is at its limit. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open;
static int thread_outcome; /* 1: got a block, 2: NULL + ENOMEM */
static pthread_t late;

static void *late_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&gate_lock);
    while (!gate_open) pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    void *got[64];
    int n = 0;
    for (size_t s = 16; s <= 64 * KiB && n < 64; s *= 2) {
        errno = 0;
        void *p = malloc(s);
        if (!p) {
            BB_CHECK(errno == ENOMEM, "new thread at the limit: malloc(%zu) failed with errno %d", s, errno);
            if (!thread_outcome) thread_outcome = 2;
            continue;
        }
        memset(p, 0x5c, s);
        got[n++] = p;
        if (!thread_outcome) thread_outcome = 1;
    }
    for (int i = 0; i < n; i++) free(got[i]);
    return NULL;
}

static void thread_at_limit(void) {
    phase = "a new thread's first allocation at the limit";
    /* Fill the address space with medium blocks, then small ones. */
    uint64_t rs = 99;
    size_t n = 0;
    for (int kind = 1; kind >= 0; kind--) {
        for (;;) {
            size_t s = size_of(kind, &rs);
            void *p = malloc(s);
            if (!p) break;
            BB_CHECK(n < CAP, "%s: malloc never returned NULL", phase);
            tag(p, s, n);
            ptr[n] = p;
            sz[n] = s;
            n++;
        }
    }
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    pthread_join(late, NULL);
    for (size_t i = 0; i < n; i++) check_free(i, "freeing everything after the thread exited");
    bb_say("oom: %s: %s, the thread exited, %zu blocks freed", phase,
           thread_outcome == 1 ? "it got memory" : "NULL/ENOMEM", n);
}

/* One phase in a child process of its own, under its own limit. */
static void child(int which, size_t headroom_mib) {
    /* The tables live outside the heap and exist before the limit is set. */
    ptr = mmap(NULL, CAP * sizeof *ptr, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sz = mmap(NULL, CAP * sizeof *sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    BB_CHECK(ptr != MAP_FAILED && sz != MAP_FAILED, "mmap of the tables failed");
    /* The library is set up (and stdio's buffer exists) before the limit. */
    free(malloc(1));
    if (which == 3) {
        /* The thread that allocates for the first time at the limit: created
         * now, since its stack needs address space too. */
        int e = pthread_create(&late, NULL, late_thread, NULL);
        BB_CHECK(e == 0, "pthread_create failed: %d", e);
    }
    size_t vm = vm_size_kib() * KiB;
    headroom = headroom_mib * MiB;
    struct rlimit rl = {.rlim_cur = vm + headroom, .rlim_max = vm + headroom};
    BB_CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit(RLIMIT_AS) failed: errno %d", errno);
    if (which < 3) {
        bb_say("oom: VmSize %zu MiB, RLIMIT_AS %zu MiB", vm / MiB, (vm + headroom) / MiB);
        run_phase(which);
        char line[256];
        size_t len = 0;
        for (int k = 0; k < 8; k++)
            len += (size_t)snprintf(line + len, sizeof line - len, " %s=%ld", probe_name[k], enomem_total[k]);
        bb_say("oom: %s: calls that returned ENOMEM at the limit:%s", phase, line);
    } else {
        thread_at_limit();
    }
    _exit(0);
}

int main(int argc, char **argv) {
    bb_print_variant();
    size_t headroom_mib = 256;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "headroom_mib=", 13) == 0) headroom_mib = strtoul(argv[i] + 13, NULL, 10);
        else bb_fail("usage: oom [headroom_mib=N] (got %s)", argv[i]);
    }
    BB_CHECK(headroom_mib >= 64, "headroom_mib must be at least 64");
    strict = bb_variant() != NULL;
    static const char *names[4] = {"small blocks", "medium blocks", "large blocks", "a new thread at the limit"};
    for (int which = 0; which < 4; which++) {
        pid_t pid = fork();
        BB_CHECK(pid >= 0, "fork failed: errno %d", errno);
        if (pid == 0) child(which, headroom_mib);
        int status = 0;
        BB_CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed: errno %d", errno);
        if (WIFSIGNALED(status))
            bb_fail("the child under RLIMIT_AS (%s) was killed by signal %d (%s)", names[which], WTERMSIG(status),
                    strsignal(WTERMSIG(status)));
        BB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child under RLIMIT_AS (%s) exited with status %d",
                 names[which], WEXITSTATUS(status));
    }
    bb_say("oom: passed");
    return 0;
}
