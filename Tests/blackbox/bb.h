/*
 * bb.h: shared helpers for the black-box test programs.
 *
 * Each program in this folder tests one property of the malloc family as
 * seen from the outside. It is run by Tests/AethAllocTests/BlackBoxTests.swift
 * under LD_PRELOAD=<libaethalloc*.so>, and can also be run plain (glibc) or
 * under any other preloaded allocator:
 *
 *     cc -O1 -g -pthread -Wall -o api Tests/blackbox/api.c && ./api
 *
 * Conventions: exit 0 on success; on failure print exactly one line
 * "FAIL: <what>" on stdout and exit non-zero. Every program first prints
 * "aethalloc_variant=<name>" ("none" when AethAlloc is not loaded) so the
 * harness can check that the preload took effect.
 *
 * Messages are formatted into a stack buffer and written with write(2), so
 * reporting a failure needs no malloc and works in forked children and in
 * threads.
 */
#ifndef AETHALLOC_BB_H
#define AETHALLOC_BB_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((unused)) static void bb_write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Format "<prefix><message>\n" into a stack buffer and write it to stdout. */
__attribute__((unused)) static void bb_vline(const char *prefix, const char *fmt, va_list ap) {
    char buf[512];
    size_t len = strlen(prefix);
    memcpy(buf, prefix, len);
    int n = vsnprintf(buf + len, sizeof buf - len - 2, fmt, ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof buf - len - 2) n = (int)(sizeof buf - len - 2);
    len += (size_t)n;
    buf[len++] = '\n';
    bb_write_all(1, buf, len);
}

/* Print one line to stdout without allocating. */
__attribute__((format(printf, 1, 2), unused)) static void bb_say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    bb_vline("", fmt, ap);
    va_end(ap);
}

/* Print "FAIL: <what>" and exit(1) without running atexit handlers. */
__attribute__((format(printf, 1, 2), noreturn, unused)) static void bb_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    bb_vline("FAIL: ", fmt, ap);
    va_end(ap);
    _exit(1);
}

#define BB_CHECK(cond, ...) \
    do {                    \
        if (!(cond)) bb_fail(__VA_ARGS__); \
    } while (0)

/* Hide a value from the optimizer so that calls with constant arguments are
 * really made (GCC knows malloc/calloc and could fold or drop them). */
static inline size_t bb_opaque(size_t x) {
    __asm__ volatile("" : "+r"(x));
    return x;
}

/* Make the pointed-to memory "escape": the compiler must assume it is read
 * and written here (defeats calloc-is-zero and dead malloc/free elision). */
static inline void *bb_escape(void *p) {
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

/* A compiler barrier: memory (errno included) is really written before and
 * read again after. GCC knows that free() leaves errno alone and would
 * otherwise fold "errno = X; free(p); errno == X" to true. */
static inline void bb_barrier(void) { __asm__ volatile("" : : : "memory"); }

/* AethAlloc's variant name, or NULL when AethAlloc is not loaded. */
__attribute__((unused)) static const char *bb_variant(void) {
    const char *(*fn)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "aethalloc_variant");
    return fn ? fn() : NULL;
}

/* Print "aethalloc_variant=<name>" (the harness checks this line). */
__attribute__((unused)) static void bb_print_variant(void) {
    const char *v = bb_variant();
    bb_say("aethalloc_variant=%s", v ? v : "none");
}

/* A deterministic byte pattern for block contents. */
static inline unsigned char bb_pat(uintptr_t seed, size_t i) {
    uint64_t x = (uint64_t)seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xBF58476D1CE4E5B9ull;
    return (unsigned char)(x >> 56 ^ x >> 24 ^ i);
}

__attribute__((unused)) static void bb_fill(void *p, size_t n, uintptr_t seed) {
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) c[i] = bb_pat(seed, i);
}

/* Index of the first byte that differs from the pattern, or (size_t)-1. */
__attribute__((unused)) static size_t bb_check(const void *p, size_t n, uintptr_t seed) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != bb_pat(seed, i)) return i;
    return (size_t)-1;
}

/* xorshift64* random numbers. */
static inline uint64_t bb_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Resident set size in bytes, from /proc/self/statm (no malloc). */
/* The number after "key" (e.g. "VmSize:") in a /proc file such as
 * /proc/self/status or /proc/self/smaps_rollup, in the file's unit (kB). */
__attribute__((unused)) static size_t bb_proc_field(const char *path, const char *key) {
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    BB_CHECK(fd >= 0, "cannot open %s", path);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    BB_CHECK(n > 0, "cannot read %s", path);
    buf[n] = 0;
    char *s = strstr(buf, key);
    BB_CHECK(s != NULL, "no %s in %s", key, path);
    return strtoul(s + strlen(key), NULL, 10);
}

__attribute__((unused)) static size_t bb_rss_bytes(void) {
    char buf[128];
    size_t rss_pages = 0;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *s = buf;
    while (*s && *s != ' ') s++; /* skip total size */
    while (*s == ' ') s++;
    while (*s >= '0' && *s <= '9') rss_pages = rss_pages * 10 + (size_t)(*s++ - '0');
    return rss_pages * (size_t)sysconf(_SC_PAGESIZE);
}


/* "key=value" arguments: true and *value set when `a` is `key=...`. */
__attribute__((unused)) static int bb_arg(const char *a, const char *key, const char **value) {
    size_t n = strlen(key);
    if (strncmp(a, key, n) == 0 && a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    return 0;
}

/* A random size: 90% up to 1 KiB, 9% up to `mid` more, 1% a large block of
 * up to `large` more. */
/* A word-wise pattern: byte j of a block with seed s is byte j % 8 of
 * bb_mix(s, j / 8), so whole words can be written and compared (soak, the
 * API fuzzer). */
static inline uint64_t bb_mix(uint64_t s, uint64_t i) {
    uint64_t x = s ^ (i * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}
static inline unsigned char bb_pat_byte(size_t j, uint64_t s) { return (unsigned char)(bb_mix(s, j / 8) >> (8 * (j % 8))); }

__attribute__((unused)) static size_t bb_rand_size(uint64_t *rs, size_t mid, size_t large) {
    uint64_t r = bb_rand(rs) % 100;
    if (r < 90) return 1 + (size_t)(bb_rand(rs) % 1024);
    if (r < 99) return 1025 + (size_t)(bb_rand(rs) % mid);
    return 65537 + (size_t)(bb_rand(rs) % large);
}

/* Allocates, fills, verifies and frees `ops` blocks (malloc, calloc, realloc)
 * with up to `slots` (<= 64) alive at a time, verifying every block before it
 * is freed or reallocated. Returns how many blocks it verified: `ops` when
 * every allocation was made and checked. */
__attribute__((unused)) static long bb_churn(uint64_t *rs, int ops, const char *who, int slots, size_t mid,
                                             size_t large) {
    long verified = 0;
    void *live[64] = {0};
    size_t n[64] = {0};
    if (slots > 64) slots = 64;
    for (int i = 0; i < ops; i++) {
        int k = (int)(bb_rand(rs) % (uint64_t)slots);
        if (live[k]) {
            size_t bad = bb_check(live[k], n[k], (uintptr_t)live[k]);
            BB_CHECK(bad == (size_t)-1, "%s: block of %zu bytes corrupted at %zu", who, n[k], bad);
            verified++;
            if (bb_rand(rs) % 4 == 0) {
                size_t nn = bb_rand_size(rs, mid, large);
                unsigned char *q = realloc(live[k], nn);
                BB_CHECK(q != NULL, "%s: realloc(%zu) failed", who, nn);
                live[k] = q;
                n[k] = nn;
                bb_fill(q, nn, (uintptr_t)q);
                continue;
            }
            free(live[k]);
        }
        n[k] = bb_rand_size(rs, mid, large);
        live[k] = (bb_rand(rs) % 8 == 0) ? calloc(1, n[k]) : malloc(n[k]);
        BB_CHECK(live[k] != NULL, "%s: allocation of %zu bytes failed", who, n[k]);
        bb_fill(live[k], n[k], (uintptr_t)live[k]);
    }
    for (int k = 0; k < slots; k++) {
        if (!live[k]) continue;
        size_t bad = bb_check(live[k], n[k], (uintptr_t)live[k]);
        BB_CHECK(bad == (size_t)-1, "%s: block of %zu bytes corrupted at %zu", who, n[k], bad);
        verified++;
        free(live[k]);
    }
    return verified;
}

/* Puts a fresh patterned block of bb_rand_size(rs, mid, large) bytes into a
 * random one of the `count` slots shared under `lock`, then checks and frees
 * the block it replaced (allocated, most likely, by another thread): frees
 * that cross threads. `who` names the caller in a failure message. */
__attribute__((unused)) static void bb_swap_shared(void **slots, size_t *sizes, int count, pthread_mutex_t *lock,
                                                   uint64_t *rs, size_t mid, size_t large, const char *who) {
    int k = (int)(bb_rand(rs) % (uint64_t)count);
    size_t n = bb_rand_size(rs, mid, large);
    void *p = malloc(n);
    BB_CHECK(p != NULL, "%s: malloc failed", who);
    bb_fill(p, n, (uintptr_t)p);
    pthread_mutex_lock(lock);
    void *old = slots[k];
    size_t oldn = sizes[k];
    slots[k] = p;
    sizes[k] = n;
    pthread_mutex_unlock(lock);
    if (old) {
        size_t bad = bb_check(old, oldn, (uintptr_t)old);
        BB_CHECK(bad == (size_t)-1, "%s: shared block corrupted at %zu", who, bad);
        free(old);
    }
}

#endif
