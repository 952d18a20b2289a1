/* mte.c: what memory tagging (aarch64 MTE) catches in the hardened variant.
 * Run as
 *   mte <case>
 * under the hardened library on an aarch64 CPU with MTE (the test suite:
 * qemu-aarch64-static -cpu max). Every case first prints
 *   tagging=<sync|async|off> tagged=<0|1>
 * (the thread's tag-check mode from prctl, and whether malloc's pointers
 * carry a tag), then:
 *
 * - fault cases (uaf-read, uaf-write, uaf-reused, overflow) print
 *   "ptr=0x..." and then make the bad access. A SIGSEGV handler prints
 *   "fault si_code=<n> addr=0x..." and re-raises, so the process dies by
 *   SIGSEGV: si_code 9 is SEGV_MTESERR (synchronous), 8 SEGV_MTEAERR
 *   (asynchronous). Surviving the access prints "survived" and exits 3.
 * - misuse cases (double-free, interior-free, stale-free, stale-realloc,
 *   stale-usable-size) print "ptr=0x..." and pass that pointer back; the
 *   allocator must abort with one line (the harness checks it).
 * - tagged-api: malloc_usable_size, realloc and free accept tagged
 *   pointers, neighbours never share a tag, calloc zeroes; prints "ok".
 * - large-*: the same for blocks above the size classes (64 KiB) up to the
 *   largest the hardened variant tags (1 MiB): large-uaf-reused is a fault
 *   case, large-stale-free a misuse case, large-tagged-api prints "ok". */
#include "bb.h"

#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"

#define TAG_SHIFT 56
static unsigned tag_of(const void *p) { return (unsigned)((uintptr_t)p >> TAG_SHIFT) & 15u; }
static uintptr_t address_of(const void *p) { return (uintptr_t)p & ~((uintptr_t)0xff << TAG_SHIFT); }

static void say_now(const char *fmt, ...) {
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) (void)!write(1, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    say_now("fault si_code=%d addr=%p\n", si->si_code, si->si_addr);
    /* SA_RESETHAND: returning re-runs the access, which now kills us. For an
     * asynchronous fault (reported after the access) raise it ourselves. */
    raise(SIGSEGV);
}

static void print_mode(void) {
    int ctrl = prctl(56 /* PR_GET_TAGGED_ADDR_CTRL */, 0, 0, 0, 0);
    const char *mode = ctrl < 0 ? "off" : (ctrl & 2) ? "sync" : (ctrl & 4) ? "async" : "off";
    void *p = malloc(48);
    say_now("tagging=%s tagged=%d\n", mode, tag_of(p) != 0);
    free(p);
}

static volatile unsigned char sink;

/* A large block the hardened variant tags (64 KiB < LARGE <= 1 MiB). */
#define LARGE 200000

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: mte CASE\n"); return 2; }
    const char *c = argv[1];
    bb_print_variant();
    print_mode();
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigaction(SIGSEGV, &sa, NULL);

    if (!strcmp(c, "uaf-read")) {
        unsigned char *p = malloc(64);
        memset(p, 7, 64);
        free(p);
        say_now("ptr=%p\n", (void *)p);
        sink = p[8];
    } else if (!strcmp(c, "uaf-write")) {
        unsigned char *p = malloc(64);
        free(p);
        say_now("ptr=%p\n", (void *)p);
        p[8] = 1;
    } else if (!strcmp(c, "uaf-reused")) {
        /* The block is handed out again (same address, new tag); the old
         * pointer must still fault. */
        unsigned char *p = malloc(64);
        free(p);
        unsigned char *q = malloc(64);
        BB_CHECK(address_of(q) == address_of(p), "the block was not handed out again (%p, then %p)", (void *)p, (void *)q);
        BB_CHECK(tag_of(q) != tag_of(p), "the block kept its tag when handed out again (%p, %p)", (void *)p, (void *)q);
        say_now("ptr=%p\n", (void *)p);
        p[8] = 1;
    } else if (!strcmp(c, "large-uaf-reused")) {
        /* Unmapped at free, mapped again at the same address for the next
         * block of the size, under another tag: the old pointer faults. */
        unsigned char *p = malloc(LARGE);
        free(p);
        unsigned char *q = malloc(LARGE);
        BB_CHECK(address_of(q) == address_of(p), "the address was not used again (%p, then %p)", (void *)p, (void *)q);
        BB_CHECK(tag_of(q) != 0 && tag_of(q) != tag_of(p), "tags %p, then %p", (void *)p, (void *)q);
        say_now("ptr=%p\n", (void *)p);
        p[8] = 1;
    } else if (!strcmp(c, "overflow")) {
        /* One byte past the block is the next block's first granule. */
        unsigned char *p = malloc(64);
        unsigned char *q = malloc(64);
        size_t n = malloc_usable_size(p);
        say_now("ptr=%p next=%p\n", (void *)(p + n), (void *)q);
        p[n] = 1;
    } else if (!strcmp(c, "double-free")) {
        char *p = malloc(64);
        free(p);
        say_now("ptr=%p\n", (void *)p);
        free(p);
    } else if (!strcmp(c, "interior-free")) {
        char *p = malloc(64);
        say_now("ptr=%p\n", (void *)(p + 16));
        free(p + 16);
    } else if (!strcmp(c, "stale-free") || !strcmp(c, "stale-realloc") || !strcmp(c, "stale-usable-size")) {
        /* A stale pointer to a block that is live again under a new tag. */
        char *p = malloc(64);
        free(p);
        char *q = malloc(64);
        BB_CHECK(address_of(q) == address_of(p), "the block was not handed out again (%p, then %p)", (void *)p, (void *)q);
        say_now("ptr=%p\n", (void *)p);
        if (!strcmp(c, "stale-free")) free(p);
        else if (!strcmp(c, "stale-realloc")) p = realloc(p, 128);
        else sink = (unsigned char)malloc_usable_size(p);
    } else if (!strcmp(c, "large-stale-free")) {
        /* Without tags this would free the new block. */
        char *p = malloc(LARGE);
        free(p);
        char *q = malloc(LARGE);
        BB_CHECK(address_of(q) == address_of(p), "the address was not used again (%p, then %p)", (void *)p, (void *)q);
        say_now("ptr=%p\n", (void *)p);
        free(p);
    } else if (!strcmp(c, "large-tagged-api")) {
        unsigned char *p = malloc(LARGE);
        BB_CHECK(p != NULL && tag_of(p) != 0, "malloc(%d) = %p carries no tag", LARGE, (void *)p);
        size_t n = malloc_usable_size(p);
        BB_CHECK(n >= LARGE, "malloc_usable_size(%p) = %zu", (void *)p, n);
        memset(p, 0x5a, n); /* every usable byte carries the tag */
        unsigned char *q = realloc(p, LARGE / 2);
        BB_CHECK(q == p, "realloc shrinking %p moved it to %p", (void *)p, (void *)q);
        q = realloc(q, 3 * LARGE);
        BB_CHECK(q != NULL && tag_of(q) != 0, "realloc growing gave %p", (void *)q);
        for (size_t k = 0; k < LARGE / 2; k++) BB_CHECK(q[k] == 0x5a, "realloc lost byte %zu", k);
        memset(q, 1, malloc_usable_size(q));
        free(q);
        unsigned char *z = calloc(1, LARGE);
        BB_CHECK(z != NULL && tag_of(z) != 0, "calloc(%d) = %p carries no tag", LARGE, (void *)z);
        for (size_t k = 0; k < LARGE; k++) BB_CHECK(z[k] == 0, "calloc byte %zu is %u", k, z[k]);
        free(z);
        /* Above 1 MiB: guard pages only, no tag. */
        unsigned char *big = malloc(4 << 20);
        BB_CHECK(big != NULL && tag_of(big) == 0, "malloc(4 MiB) = %p is tagged", (void *)big);
        memset(big, 2, 4 << 20);
        free(big);
        say_now("ok\n");
        return 0;
    } else if (!strcmp(c, "tagged-api")) {
        enum { N = 2000 };
        static unsigned char *ps[N];
        int adjacent = 0;
        for (int i = 0; i < N; i++) {
            size_t n = 16 + (size_t)(i % 7) * 16;
            ps[i] = malloc(n);
            BB_CHECK(ps[i] != NULL && tag_of(ps[i]) != 0, "malloc(%zu) = %p carries no tag", n, (void *)ps[i]);
            BB_CHECK(malloc_usable_size(ps[i]) >= n, "malloc_usable_size(%p) < %zu", (void *)ps[i], n);
            memset(ps[i], i & 0xff, n);
        }
        /* Neighbours in memory (same class, consecutive blocks) differ. */
        for (int i = 0; i < N; i++) {
            for (int j = i + 1; j < N && j < i + 64; j++) {
                size_t si = malloc_usable_size(ps[i]), sj = malloc_usable_size(ps[j]);
                if (address_of(ps[i]) + si == address_of(ps[j]) || address_of(ps[j]) + sj == address_of(ps[i])) {
                    adjacent++;
                    BB_CHECK(tag_of(ps[i]) != tag_of(ps[j]), "neighbours %p and %p share a tag", (void *)ps[i], (void *)ps[j]);
                }
            }
        }
        BB_CHECK(adjacent > 100, "only %d neighbouring pairs found", adjacent);
        for (int i = 0; i < N; i += 2) {
            size_t n = 16 + (size_t)(i % 7) * 16;
            unsigned char *q = realloc(ps[i], n * 40);
            BB_CHECK(q != NULL, "realloc(%p) failed", (void *)ps[i]);
            for (size_t k = 0; k < n; k++) BB_CHECK(q[k] == (i & 0xff), "realloc lost byte %zu", k);
            ps[i] = q;
        }
        for (int i = 0; i < N; i++) free(ps[i]);
        unsigned char *z = calloc(1, 4000);
        for (size_t k = 0; k < 4000; k++) BB_CHECK(z[k] == 0, "calloc byte %zu is %u", k, z[k]);
        free(z);
        say_now("ok\n");
        return 0;
    } else {
        fprintf(stderr, "mte: unknown case %s\n", c);
        return 2;
    }
    say_now("survived\n");
    return 3;
}
