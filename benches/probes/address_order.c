/*
 * address_order: how often an allocator hands out the block right above the
 * previous one of the same size, a deterministic stand-in for what hardware
 * prefetchers reward and callgrind's cache simulation cannot see.
 *
 * A shared object preloaded in front of the allocator under test:
 *
 *     cc -O2 -shared -fPIC -o address_order.so benches/probes/address_order.c -ldl
 *     LD_PRELOAD="./address_order.so .build/release/libaethalloc.so" \
 *         .build/benches/small_objects rounds=100
 *
 * For every malloc of 1..1024 bytes it compares the returned address with
 * the one the same thread got for the previous request of the same size
 * (rounded up to 16 bytes), and at exit prints one line on stderr: the
 * share of requests placed within one block above it ("next above"), within
 * one block below it ("next below"), and in the same 4 KiB page. Only
 * malloc is counted (not calloc, realloc or the aligned functions).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { MAX_BYTES = 1024, GRANULE = 16 };

static void *(*next_malloc)(size_t);
static __thread uintptr_t last[MAX_BYTES / GRANULE + 1];
static unsigned long long total, above, below, same_page;
static __thread int resolving;

void *malloc(size_t n)
{
    if (!next_malloc) {
        /* dlsym may allocate: that request fails instead of recursing. */
        if (resolving)
            return NULL;
        resolving = 1;
        next_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
        resolving = 0;
        if (!next_malloc)
            abort();
    }
    void *p = next_malloc(n);
    if (p && n > 0 && n <= MAX_BYTES) {
        size_t k = (n + GRANULE - 1) / GRANULE;
        uintptr_t a = (uintptr_t)p, prev = last[k];
        last[k] = a;
        __atomic_fetch_add(&total, 1, __ATOMIC_RELAXED);
        if (a > prev && a - prev <= GRANULE * k)
            __atomic_fetch_add(&above, 1, __ATOMIC_RELAXED);
        else if (prev > a && prev - a <= GRANULE * k)
            __atomic_fetch_add(&below, 1, __ATOMIC_RELAXED);
        if (a >> 12 == prev >> 12)
            __atomic_fetch_add(&same_page, 1, __ATOMIC_RELAXED);
    }
    return p;
}

__attribute__((destructor)) static void report(void)
{
    if (total == 0)
        return;
    fprintf(stderr, "address_order: %llu requests of 1..%d bytes: next above %.1f%%, next below %.1f%%, same 4 KiB page %.1f%%\n",
            total, MAX_BYTES, 100.0 * above / total, 100.0 * below / total, 100.0 * same_page / total);
}
