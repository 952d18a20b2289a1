/*
 * init_dlsym.c: the dynamic linker calling into the allocator early.
 *
 * glibc's dlsym/dlopen/dlerror allocate (dlerror state via calloc/malloc,
 * freed by libc at thread exit; dlopen's link maps). An allocator that
 * itself calls dlsym during initialization would recurse. This program
 * calls dlopen/dlsym/dlerror from a .preinit_array function (before the
 * allocator's constructor), from a constructor, from main and from new
 * threads, including failing lookups that make glibc allocate an error
 * message, and dlsym(RTLD_NEXT, "malloc").
 */
#include "bb.h"

#include <pthread.h>

static int preinit_ran, ctor_ran;

static void use_dl(const char *when) {
    /* A successful lookup in the global scope. */
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    BB_CHECK(m != NULL, "%s: dlsym(RTLD_DEFAULT, malloc) failed", when);
    /* Failing lookups: glibc mallocs the error string. */
    for (int i = 0; i < 20; i++) {
        void *x = dlsym(RTLD_DEFAULT, "aethalloc_no_such_symbol_xyz");
        BB_CHECK(x == NULL, "%s: dlsym of a missing symbol succeeded", when);
        const char *err = dlerror();
        BB_CHECK(err != NULL && *err, "%s: dlerror() returned no message", when);
    }
    BB_CHECK(dlerror() == NULL, "%s: dlerror() not cleared", when);
    /* dlopen/dlsym/dlclose a real library. */
    void *h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
    BB_CHECK(h != NULL, "%s: dlopen(libm.so.6) failed: %s", when, dlerror());
    double (*cosine)(double) = (double (*)(double))dlsym(h, "cos");
    BB_CHECK(cosine != NULL && cosine(0.0) == 1.0, "%s: dlsym(libm, cos) failed", when);
    BB_CHECK(dlclose(h) == 0, "%s: dlclose failed", when);
    /* A failing dlopen. */
    void *bad = dlopen("libaethalloc-does-not-exist.so", RTLD_NOW);
    BB_CHECK(bad == NULL, "%s: dlopen of a missing library succeeded", when);
    BB_CHECK(dlerror() != NULL, "%s: no dlerror after a failed dlopen", when);
    /* dlsym(RTLD_NEXT, ...) from the executable. */
    (void)dlsym(RTLD_NEXT, "malloc");
    (void)dlerror();
    void *p = bb_escape(malloc(100));
    BB_CHECK(p != NULL, "%s: malloc failed", when);
    free(p);
}

static void preinit(int argc, char **argv, char **envp) {
    (void)argc, (void)argv, (void)envp;
    preinit_ran = 1;
    use_dl("preinit_array");
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_p)(int, char **, char **) = preinit;

__attribute__((constructor(101))) static void ctor(void) {
    ctor_ran = 1;
    use_dl("constructor(101)");
}

static void *thread_fn(void *arg) {
    (void)arg;
    use_dl("thread");
    return NULL; /* libc frees this thread's dlerror state at exit */
}

int main(void) {
    bb_print_variant();
    BB_CHECK(preinit_ran && ctor_ran, "preinit_array/constructor did not run");
    use_dl("main");
    for (int round = 0; round < 20; round++) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) BB_CHECK(pthread_create(&t[i], NULL, thread_fn, NULL) == 0, "pthread_create failed");
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    }
    bb_say("init_dlsym: ok");
    return 0;
}
