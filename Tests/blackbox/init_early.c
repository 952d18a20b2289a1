/*
 * init_early.c: allocation before main, before constructors, and before
 * the allocator's own constructor.
 *
 * A .preinit_array function runs before any shared object's constructor,
 * the preloaded allocator's included: its mallocs must initialize the
 * allocator on the spot. A constructor(101) allocates more (including
 * stdio, which mallocs its buffers, and a thread), and leaves blocks for
 * main to verify and free.
 */
#include "bb.h"

#include <malloc.h>
#include <pthread.h>

static void *early_blocks[6];
static size_t early_sizes[6] = {1, 24, 1000, 10000, 200000, 3 << 20};
static int preinit_ran, ctor_ran;

static void allocate_a_bit(const char *when) {
    for (size_t n = 1; n < (8u << 20); n = n * 3 + 1) {
        char *p = malloc(n);
        BB_CHECK(p != NULL, "%s: malloc(%zu) failed", when, n);
        BB_CHECK(((uintptr_t)p & 15) == 0 || n < 16, "%s: malloc(%zu) misaligned", when, n);
        memset(p, 0x11, n);
        BB_CHECK(malloc_usable_size(p) >= n, "%s: usable size too small", when);
        p = realloc(p, n * 2);
        BB_CHECK(p != NULL, "%s: realloc failed", when);
        free(p);
        p = bb_escape(calloc(n, 1));
        BB_CHECK(p != NULL && p[0] == 0 && p[n - 1] == 0, "%s: calloc(%zu) failed", when, n);
        free(p);
        void *a = NULL;
        BB_CHECK(posix_memalign(&a, 4096, n) == 0 && ((uintptr_t)a & 4095) == 0, "%s: posix_memalign failed", when);
        free(a);
    }
}

static void preinit(int argc, char **argv, char **envp) {
    (void)argc, (void)argv, (void)envp;
    preinit_ran = 1;
    allocate_a_bit("preinit_array");
    for (int i = 0; i < 3; i++) {
        early_blocks[i] = malloc(early_sizes[i]);
        BB_CHECK(early_blocks[i] != NULL, "preinit_array: malloc failed");
        bb_fill(early_blocks[i], early_sizes[i], (uintptr_t)i);
    }
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_p)(int, char **, char **) = preinit;

static void *ctor_thread(void *arg) {
    (void)arg;
    allocate_a_bit("thread started by a constructor");
    return malloc(777);
}

__attribute__((constructor(101))) static void early_ctor(void) {
    ctor_ran = 1;
    allocate_a_bit("constructor(101)");
    for (int i = 3; i < 6; i++) {
        early_blocks[i] = malloc(early_sizes[i]);
        BB_CHECK(early_blocks[i] != NULL, "constructor: malloc failed");
        bb_fill(early_blocks[i], early_sizes[i], (uintptr_t)i);
    }
    /* stdio allocates its FILE and buffer with malloc. */
    FILE *f = fopen("/proc/self/statm", "r");
    BB_CHECK(f != NULL, "constructor: fopen failed");
    char line[128];
    BB_CHECK(fgets(line, sizeof line, f) != NULL, "constructor: fgets failed");
    fclose(f);
    char *s = strdup("allocated in a constructor");
    BB_CHECK(s != NULL, "constructor: strdup failed");
    free(s);
    pthread_t t;
    BB_CHECK(pthread_create(&t, NULL, ctor_thread, NULL) == 0, "constructor: pthread_create failed");
    void *r = NULL;
    pthread_join(t, &r);
    BB_CHECK(r != NULL, "constructor: thread's malloc failed");
    free(r);
}

int main(void) {
    bb_print_variant();
    BB_CHECK(preinit_ran && ctor_ran, "preinit_array/constructor did not run");
    for (int i = 0; i < 6; i++) {
        size_t bad = bb_check(early_blocks[i], early_sizes[i], (uintptr_t)i);
        BB_CHECK(bad == (size_t)-1, "block %d allocated before main corrupted at %zu", i, bad);
        early_blocks[i] = realloc(early_blocks[i], early_sizes[i] + 5000);
        BB_CHECK(early_blocks[i] != NULL, "realloc of an early block failed");
        bad = bb_check(early_blocks[i], early_sizes[i], (uintptr_t)i);
        BB_CHECK(bad == (size_t)-1, "realloc of block %d allocated before main lost contents at %zu", i, bad);
        free(early_blocks[i]);
    }
    allocate_a_bit("main");
    bb_say("init_early: ok");
    return 0;
}
