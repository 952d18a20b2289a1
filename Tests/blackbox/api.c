/*
 * api.c: the whole exported C API, with glibc's semantics.
 *
 * Checks every malloc-family function AethAlloc exports: alignment, zero
 * sizes, errno on failure and its preservation by free, overflow handling,
 * realloc contents, posix_memalign/aligned_alloc/memalign argument checks,
 * every power-of-two alignment up to 2 MiB, valloc/pvalloc, usable sizes,
 * calloc zeroing of reused dirty memory, sized frees, the __libc_* aliases,
 * malloc_trim and aethalloc_variant.
 *
 * When AethAlloc is loaded (aethalloc_variant resolves) every exported name
 * must resolve to the same object as malloc ("strict" mode). Otherwise a
 * function the running allocator does not define itself is skipped with a
 * "SKIP:" line, so the program can be validated against glibc and other
 * allocators. Likewise a check of a glibc-specific behaviour (GLIBC_CHECK)
 * is fatal in strict mode and otherwise only prints a "DEVIATION:" line.
 */
#include "bb.h"

#include <limits.h>
#include <malloc.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

static size_t pagesz;
static int strict;
static const char *alloc_obj;

/* Functions that not every allocator defines: called through pointers that
 * are NULL when the running allocator does not provide them. */
static void *(*p_reallocarray)(void *, size_t, size_t);
static void *(*p_memalign)(size_t, size_t);
static void *(*p_valloc)(size_t);
static void *(*p_pvalloc)(size_t);
static void (*p_free_sized)(void *, size_t);
static void (*p_free_aligned_sized)(void *, size_t, size_t);
static void (*p_cfree)(void *);
static int (*p_malloc_trim)(size_t);
static void *(*p_libc_malloc)(size_t);
static void (*p_libc_free)(void *);
static void *(*p_libc_calloc)(size_t, size_t);
static void *(*p_libc_realloc)(void *, size_t);
static void *(*p_libc_memalign)(size_t, size_t);
static void *(*p_libc_valloc)(size_t);
static void *(*p_libc_pvalloc)(size_t);
static int (*p_posix_memalign2)(void **, size_t, size_t);

/* Names glibc does not define (or only as a compat symbol): weak, so the
 * program links everywhere; in strict mode the link-time binding must reach
 * the allocator too. */
extern void free_sized(void *, size_t) __attribute__((weak));
extern void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));
extern void cfree(void *) __attribute__((weak));
extern int __posix_memalign(void **, size_t, size_t) __attribute__((weak));
extern void *__libc_malloc(size_t) __attribute__((weak));
extern void __libc_free(void *) __attribute__((weak));
extern void *__libc_calloc(size_t, size_t) __attribute__((weak));
extern void *__libc_realloc(void *, size_t) __attribute__((weak));
extern void *__libc_memalign(size_t, size_t) __attribute__((weak));
extern void *__libc_valloc(size_t) __attribute__((weak));
extern void *__libc_pvalloc(size_t) __attribute__((weak));

static int deviations;

__attribute__((format(printf, 1, 2))) static void deviation(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    bb_vline("DEVIATION: ", fmt, ap);
    va_end(ap);
}

/* A glibc-specific behaviour: fatal for AethAlloc, reported for others
 * (each call site reports at most twice). */
#define GLIBC_CHECK(cond, ...)                         \
    ({                                                 \
        int ok_ = !!(cond);                            \
        if (!ok_) {                                    \
            static int seen_;                          \
            if (strict) bb_fail(__VA_ARGS__);          \
            if (seen_++ < 2) deviation(__VA_ARGS__);   \
            deviations++;                              \
        }                                              \
        ok_;                                           \
    })

static const char *obj_of(void *fn) {
    Dl_info di;
    if (!fn || !dladdr(fn, &di) || !di.dli_fname) return NULL;
    return di.dli_fname;
}

/* Resolve `name`; NULL (with a SKIP line) unless the allocator defines it.
 * `direct` is the program's own link-time binding of the name (or NULL). */
static void *want(const char *name, void *direct) {
    void *f = dlsym(RTLD_DEFAULT, name);
    if (!f) {
        if (strict) bb_fail("%s is not exported", name);
        bb_say("SKIP: %s (not defined by any loaded object)", name);
        return NULL;
    }
    const char *obj = obj_of(f);
    if (!obj || strcmp(obj, alloc_obj) != 0) {
        if (strict) bb_fail("%s resolves to %s, not to the allocator %s", name, obj ? obj : "?", alloc_obj);
        bb_say("SKIP: %s (defined by %s, not by the allocator %s)", name, obj ? obj : "?", alloc_obj);
        return NULL;
    }
    if (strict && direct && direct != f)
        bb_fail("the program's link-time binding of %s (%p) is not the allocator's (%p)", name, direct, f);
    return f;
}

static void resolve(void) {
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    alloc_obj = obj_of(m);
    BB_CHECK(alloc_obj != NULL, "dladdr(malloc) failed");
    const char *v = bb_variant();
    if (v) {
        strict = 1;
        BB_CHECK(*v != 0, "aethalloc_variant() returned an empty string");
        const char *vobj = obj_of(dlsym(RTLD_DEFAULT, "aethalloc_variant"));
        BB_CHECK(vobj && strcmp(vobj, alloc_obj) == 0,
                 "malloc comes from %s but aethalloc_variant from %s", alloc_obj, vobj ? vobj : "?");
    }
    bb_say("allocator_object=%s strict=%d", alloc_obj, strict);
    /* The standard names, called directly below. */
    want("malloc", (void *)malloc);
    want("free", (void *)free);
    want("calloc", (void *)calloc);
    want("realloc", (void *)realloc);
    want("aligned_alloc", (void *)aligned_alloc);
    want("posix_memalign", (void *)posix_memalign);
    want("malloc_usable_size", (void *)malloc_usable_size);
    /* The rest through pointers. */
    p_reallocarray = want("reallocarray", (void *)reallocarray);
    p_memalign = want("memalign", (void *)memalign);
    p_valloc = want("valloc", (void *)valloc);
    p_pvalloc = want("pvalloc", (void *)pvalloc);
    p_malloc_trim = want("malloc_trim", (void *)malloc_trim);
    p_free_sized = want("free_sized", (void *)free_sized);
    p_free_aligned_sized = want("free_aligned_sized", (void *)free_aligned_sized);
    p_cfree = want("cfree", (void *)cfree);
    p_libc_malloc = want("__libc_malloc", (void *)__libc_malloc);
    p_libc_free = want("__libc_free", (void *)__libc_free);
    p_libc_calloc = want("__libc_calloc", (void *)__libc_calloc);
    p_libc_realloc = want("__libc_realloc", (void *)__libc_realloc);
    p_libc_memalign = want("__libc_memalign", (void *)__libc_memalign);
    p_libc_valloc = want("__libc_valloc", (void *)__libc_valloc);
    p_libc_pvalloc = want("__libc_pvalloc", (void *)__libc_pvalloc);
    p_posix_memalign2 = want("__posix_memalign", (void *)__posix_memalign);
}

static void check_aligned(const void *p, size_t al, const char *what, size_t n) {
    BB_CHECK(p != NULL, "%s(size %zu, alignment %zu) returned NULL", what, n, al);
    BB_CHECK(((uintptr_t)p & (al - 1)) == 0, "%s(alignment %zu, size %zu) = %p is not aligned", what, al, n, p);
}

/* glibc aligns every block to 16 bytes, even tiny ones. */
static void check_aligned16(const void *p, const char *what, size_t n) {
    BB_CHECK(p != NULL, "%s(%zu) returned NULL", what, n);
    GLIBC_CHECK(((uintptr_t)p & 15) == 0, "%s(%zu) = %p is not 16-byte aligned (glibc aligns every block to 16)",
                what, n, p);
}

static void check_pattern(const void *p, size_t n, uintptr_t seed, const char *what) {
    size_t bad = bb_check(p, n, seed);
    BB_CHECK(bad == (size_t)-1, "%s: contents corrupted at offset %zu of %zu", what, bad, n);
}

static void check_zero(const void *p, size_t n, const char *what) {
    const unsigned char *c = bb_escape((void *)p);
    for (size_t i = 0; i < n; i++)
        BB_CHECK(c[i] == 0, "%s: byte %zu of %zu is 0x%02x, not zero", what, i, n, c[i]);
}

/* ---- alignment of malloc/calloc/realloc ---- */

static void test_alignment(void) {
    static void *ptrs[4097];
    for (size_t n = 0; n <= 4096; n++) {
        void *p = malloc(bb_opaque(n));
        check_aligned16(p, "malloc", n);
        memset(p, 0x5A, n);
        ptrs[n] = p;
    }
    for (size_t n = 0; n <= 4096; n++) bb_fill(ptrs[n], n, n);
    for (size_t n = 0; n <= 4096; n++) check_pattern(ptrs[n], n, n, "live small malloc blocks overlap");
    for (size_t n = 0; n <= 4096; n++) free(ptrs[n]);

    for (size_t base = 4097; base <= 16 * MiB + 1; base = base * 5 / 4 + 1) {
        for (size_t n = base - 1; n <= base + 1; n++) {
            void *p = malloc(bb_opaque(n));
            check_aligned16(p, "malloc", n);
            memset(p, 0xA5, n);
            void *q = calloc(1, bb_opaque(n));
            check_aligned16(q, "calloc", n);
            check_zero(q, n, "calloc");
            void *r = realloc(q, bb_opaque(n / 2 + 1));
            check_aligned16(r, "realloc (shrink)", n / 2 + 1);
            void *s = realloc(r, bb_opaque(n * 2));
            check_aligned16(s, "realloc (grow)", n * 2);
            memset(s, 0x3C, n * 2);
            free(s);
            free(p);
        }
    }
}

/* ---- malloc(0), free(NULL), errno across free ---- */

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void test_malloc0(void) {
    enum { N = 1000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = bb_escape(malloc(bb_opaque(0)));
        BB_CHECK(p[i] != NULL, "malloc(0) returned NULL (glibc returns a unique pointer)");
        check_aligned16(p[i], "malloc", 0);
    }
    static void *s[N];
    memcpy(s, p, sizeof s);
    qsort(s, N, sizeof s[0], cmp_ptr);
    for (int i = 1; i < N; i++) BB_CHECK(s[i] != s[i - 1], "malloc(0) returned the same pointer %p twice", s[i]);
    for (int i = 0; i < N; i++) free(p[i]);
    void *q = bb_escape(calloc(bb_opaque(0), bb_opaque(0)));
    BB_CHECK(q != NULL, "calloc(0, 0) returned NULL (glibc returns a unique pointer)");
    free(q);
}

static void test_free_errno(void) {
    errno = 1234;
    bb_barrier();
    free(NULL);
    bb_barrier();
    BB_CHECK(errno == 1234, "free(NULL) changed errno to %d", errno);

    static const size_t sizes[] = {1, 16, 24, 100, 1000, 4096, 10000, 65536, 131072, 200000,
                                   1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        char *p = malloc(bb_opaque(n));
        BB_CHECK(p != NULL, "malloc(%zu) returned NULL", n);
        p[0] = 1;
        p[n - 1] = 2;
        errno = 1234;
        bb_barrier();
        free(p);
        bb_barrier();
        BB_CHECK(errno == 1234, "free of a malloc(%zu) block changed errno to %d", n, errno);

        p = calloc(1, bb_opaque(n));
        BB_CHECK(p != NULL, "calloc(1, %zu) returned NULL", n);
        errno = 1234;
        bb_barrier();
        free(p);
        bb_barrier();
        BB_CHECK(errno == 1234, "free of a calloc(1, %zu) block changed errno to %d", n, errno);

        p = aligned_alloc(4096, bb_opaque(n));
        BB_CHECK(p != NULL, "aligned_alloc(4096, %zu) returned NULL", n);
        p[0] = 1;
        errno = 1234;
        bb_barrier();
        free(p);
        bb_barrier();
        BB_CHECK(errno == 1234, "free of an aligned_alloc(4096, %zu) block changed errno to %d", n, errno);
    }
    /* Many frees in a row (caches filling up and flushing). */
    enum { N = 5000 };
    static void *ptrs[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            ptrs[i] = malloc(bb_opaque((size_t)(i % 37) * 24 + 8));
            BB_CHECK(ptrs[i] != NULL, "malloc returned NULL");
        }
        for (int i = 0; i < N; i++) {
            errno = 1234 + i;
            bb_barrier();
            free(ptrs[round == 1 ? N - 1 - i : i]);
            bb_barrier();
            BB_CHECK(errno == 1234 + i, "free #%d of a run of small frees changed errno", i);
        }
    }
    /* Via realloc too. */
    char *p = malloc(100);
    p = realloc(p, bb_opaque(3 * MiB));
    BB_CHECK(p != NULL, "realloc to 3 MiB returned NULL");
    errno = 1234;
    bb_barrier();
    free(p);
    bb_barrier();
    BB_CHECK(errno == 1234, "free of a realloc'd 3 MiB block changed errno to %d", errno);
}

/* ---- impossible sizes ---- */

static const struct {
    size_t n;
    const char *name;
} huge[] = {
    {SIZE_MAX, "SIZE_MAX"},
    {SIZE_MAX - 4096, "SIZE_MAX-4096"},
    {SIZE_MAX - 15, "SIZE_MAX-15"},
    {(size_t)PTRDIFF_MAX + 1, "PTRDIFF_MAX+1"},
    {(size_t)PTRDIFF_MAX, "PTRDIFF_MAX"},
    {(size_t)1 << 62, "2^62"},
};
#define NHUGE (sizeof huge / sizeof huge[0])

#define EXPECT_ENOMEM(call, what, name)                                                        \
    do {                                                                                       \
        errno = 0;                                                                             \
        bb_barrier();                                                                          \
        void *r_ = (call);                                                                     \
        bb_barrier();                                                                          \
        int e_ = errno;                                                                        \
        BB_CHECK(r_ == NULL, "%s with size %s returned %p, not NULL", what, name, r_);         \
        GLIBC_CHECK(e_ == ENOMEM, "%s with size %s set errno %d, not ENOMEM", what, name, e_); \
    } while (0)

static void test_huge(void) {
    for (size_t i = 0; i < NHUGE; i++) {
        size_t n = bb_opaque(huge[i].n);
        const char *nm = huge[i].name;
        EXPECT_ENOMEM(malloc(n), "malloc", nm);
        EXPECT_ENOMEM(calloc(1, n), "calloc(1, n)", nm);
        EXPECT_ENOMEM(calloc(n, 1), "calloc(n, 1)", nm);
        EXPECT_ENOMEM(realloc(NULL, n), "realloc(NULL, n)", nm);
        EXPECT_ENOMEM(aligned_alloc(16, n), "aligned_alloc(16, n)", nm);
        EXPECT_ENOMEM(aligned_alloc(4096, n), "aligned_alloc(4096, n)", nm);
        EXPECT_ENOMEM(aligned_alloc(2 * MiB, n), "aligned_alloc(2 MiB, n)", nm);
        void *sentinel = (void *)(uintptr_t)0x1234, *q = sentinel;
        int r = posix_memalign(&q, 64, n);
        BB_CHECK(r == ENOMEM, "posix_memalign(64, %s) returned %d, not ENOMEM", nm, r);
        BB_CHECK(q == sentinel, "failed posix_memalign(64, %s) changed *memptr", nm);
        if (p_memalign) EXPECT_ENOMEM(p_memalign(64, n), "memalign(64, n)", nm);
        if (p_valloc) EXPECT_ENOMEM(p_valloc(n), "valloc", nm);
        if (p_pvalloc) EXPECT_ENOMEM(p_pvalloc(n), "pvalloc", nm);
        if (p_reallocarray) EXPECT_ENOMEM(p_reallocarray(NULL, n, 1), "reallocarray(NULL, n, 1)", nm);
        if (p_libc_malloc) EXPECT_ENOMEM(p_libc_malloc(n), "__libc_malloc", nm);
    }
    /* After all that, the allocator still works. */
    void *p = malloc(100);
    BB_CHECK(p != NULL, "malloc(100) failed after the huge-size tests");
    free(p);
}

static void test_overflow(void) {
    static const struct {
        size_t a, b;
        const char *name;
    } ov[] = {
        {SIZE_MAX / 2, 3, "SIZE_MAX/2 * 3"},
        {3, SIZE_MAX / 2, "3 * SIZE_MAX/2"},
        {SIZE_MAX / 2 + 1, 2, "(SIZE_MAX/2+1) * 2"},
        {(size_t)1 << 32, (size_t)1 << 32, "2^32 * 2^32"},
        {SIZE_MAX, SIZE_MAX, "SIZE_MAX * SIZE_MAX"},
        {(size_t)1 << 33, ((size_t)1 << 31) + 1, "2^33 * (2^31+1)"},
    };
    for (size_t i = 0; i < sizeof ov / sizeof ov[0]; i++) {
        size_t a = bb_opaque(ov[i].a), b = bb_opaque(ov[i].b);
        EXPECT_ENOMEM(calloc(a, b), "calloc", ov[i].name);
        if (p_libc_calloc) EXPECT_ENOMEM(p_libc_calloc(a, b), "__libc_calloc", ov[i].name);
        if (p_reallocarray) {
            EXPECT_ENOMEM(p_reallocarray(NULL, a, b), "reallocarray(NULL, ...)", ov[i].name);
            char *p = malloc(100);
            BB_CHECK(p != NULL, "malloc(100) returned NULL");
            bb_fill(p, 100, 77);
            EXPECT_ENOMEM(p_reallocarray(p, a, b), "reallocarray(p, ...)", ov[i].name);
            check_pattern(p, 100, 77, "block after a failed reallocarray");
            free(p);
        }
    }
    /* Zero times anything is not an overflow: glibc returns a unique pointer. */
    void *p = bb_escape(calloc(bb_opaque(0), bb_opaque(SIZE_MAX)));
    BB_CHECK(p != NULL, "calloc(0, SIZE_MAX) returned NULL");
    free(p);
    p = bb_escape(calloc(bb_opaque(SIZE_MAX), bb_opaque(0)));
    BB_CHECK(p != NULL, "calloc(SIZE_MAX, 0) returned NULL");
    free(p);
    if (p_reallocarray) {
        char *q = p_reallocarray(NULL, 10, 10);
        BB_CHECK(q != NULL, "reallocarray(NULL, 10, 10) returned NULL");
        bb_fill(q, 100, 5);
        q = p_reallocarray(q, 1000, 10);
        BB_CHECK(q != NULL, "reallocarray(p, 1000, 10) returned NULL");
        check_pattern(q, 100, 5, "reallocarray grow");
        q = p_reallocarray(q, 5, 10);
        BB_CHECK(q != NULL, "reallocarray(p, 5, 10) returned NULL");
        check_pattern(q, 50, 5, "reallocarray shrink");
        free(q);
    }
}

/* ---- realloc ---- */

static void test_realloc_fail(void) {
    static const size_t bases[] = {1, 100, 5000, 300000, 3 * MiB};
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        size_t n = bases[b];
        char *p = malloc(n);
        BB_CHECK(p != NULL, "malloc(%zu) returned NULL", n);
        bb_fill(p, n, n + 1);
        for (size_t i = 0; i < NHUGE; i++) {
            errno = 0;
            bb_barrier();
            void *q = realloc(p, bb_opaque(huge[i].n));
            bb_barrier();
            int e = errno;
            BB_CHECK(q == NULL, "realloc(%zu-byte block, %s) returned %p, not NULL", n, huge[i].name, q);
            GLIBC_CHECK(e == ENOMEM, "realloc(%zu-byte block, %s) set errno %d, not ENOMEM", n, huge[i].name, e);
            check_pattern(p, n, n + 1, "block after a failed realloc");
            if (p_libc_realloc) {
                errno = 0;
                bb_barrier();
                q = p_libc_realloc(p, bb_opaque(huge[i].n));
                bb_barrier();
                e = errno;
                BB_CHECK(q == NULL, "__libc_realloc(%zu-byte block, %s) returned %p, not NULL", n, huge[i].name, q);
                GLIBC_CHECK(e == ENOMEM, "__libc_realloc(%zu-byte block, %s) set errno %d, not ENOMEM", n,
                            huge[i].name, e);
                check_pattern(p, n, n + 1, "block after a failed __libc_realloc");
            }
        }
        /* Still a valid block: it can grow and be freed. */
        p = realloc(p, n + 4096);
        BB_CHECK(p != NULL, "realloc after failed reallocs returned NULL");
        check_pattern(p, n, n + 1, "block grown after failed reallocs");
        free(p);
    }
}

static void test_realloc_zero(void) {
    /* glibc: realloc(p, 0) with p != NULL frees p and returns NULL. */
    static const size_t sizes[] = {1, 100, 5000, 300000, 3 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = malloc(sizes[i]);
        BB_CHECK(p != NULL, "malloc(%zu) returned NULL", sizes[i]);
        void *q = realloc(p, bb_opaque(0));
        if (!GLIBC_CHECK(q == NULL, "realloc(%zu-byte block, 0) returned %p; glibc frees and returns NULL", sizes[i],
                         q))
            free(q);
    }
    /* realloc(NULL, 0) is malloc(0): a unique pointer. */
    void *p = bb_escape(realloc(NULL, bb_opaque(0)));
    BB_CHECK(p != NULL, "realloc(NULL, 0) returned NULL (glibc: malloc(0))");
    free(p);
    /* realloc(NULL, n) is malloc(n). */
    static const size_t ns[] = {1, 24, 1000, 70000, 2 * MiB};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        char *r = realloc(NULL, bb_opaque(ns[i]));
        check_aligned16(r, "realloc(NULL, n)", ns[i]);
        bb_fill(r, ns[i], 9);
        check_pattern(r, ns[i], 9, "realloc(NULL, n)");
        free(r);
    }
}

/* Small blocks resized within 1 KiB, one byte step at a time up and down:
 * every result keeps the contents and errno, whether the block stays or
 * moves. Then 20000 blocks moved up a class and down again, enough to
 * overflow the thread cache in both directions. */
static void test_realloc_small(void) {
    for (int round = 0; round < 3; round++) {
        size_t n = 1;
        char *p = malloc(1);
        BB_CHECK(p != NULL, "malloc(1) returned NULL");
        p[0] = (char)bb_pat(7, 0);
        for (size_t next = 2; next <= 1024 + 1024; next++) {
            /* 2..1024 growing, then 1023..1 shrinking. */
            size_t ns = next <= 1024 ? next : 2048 - next;
            if (ns == 0) break;
            errno = 1234;
            bb_barrier();
            char *q = realloc(p, bb_opaque(ns));
            bb_barrier();
            int e = errno;
            check_aligned16(q, "realloc (small step)", ns);
            BB_CHECK(e == 1234, "realloc(%zu-byte block, %zu) changed errno to %d", n, ns, e);
            size_t keep = ns < n ? ns : n;
            check_pattern(q, keep, 7, "realloc small step");
            for (size_t i = keep; i < ns; i++) q[i] = (char)bb_pat(7, i);
            p = q;
            n = ns;
        }
        free(p);
    }
    enum { K = 20000 };
    static char *blocks[K];
    for (int i = 0; i < K; i++) {
        blocks[i] = malloc(24);
        BB_CHECK(blocks[i] != NULL, "malloc(24) returned NULL");
        bb_fill(blocks[i], 24, (uintptr_t)i);
        blocks[i] = realloc(blocks[i], bb_opaque(200));
        BB_CHECK(blocks[i] != NULL, "realloc(24-byte block, 200) returned NULL");
        check_pattern(blocks[i], 24, (uintptr_t)i, "realloc 24 -> 200");
    }
    for (int i = 0; i < K; i++) {
        blocks[i] = realloc(blocks[i], bb_opaque(16));
        BB_CHECK(blocks[i] != NULL, "realloc(200-byte block, 16) returned NULL");
        check_pattern(blocks[i], 16, (uintptr_t)i, "realloc 200 -> 16");
    }
    for (int i = 0; i < K; i++) free(blocks[i]);
}

/* Several interleaved growth chains, then shrinking, then a random walk. */
static void test_realloc_chains(void) {
    enum { C = 4 };
    char *p[C] = {0};
    size_t sz[C] = {0};
    for (int c = 0; c < C; c++) {
        sz[c] = (size_t)c + 1;
        p[c] = realloc(NULL, sz[c]);
        BB_CHECK(p[c] != NULL, "realloc(NULL, %zu) returned NULL", sz[c]);
        bb_fill(p[c], sz[c], (uintptr_t)c);
    }
    /* Grow to several MiB. */
    for (int step = 0;; step++) {
        int grew = 0;
        for (int c = 0; c < C; c++) {
            if (sz[c] >= 6 * MiB) continue;
            size_t ns = sz[c] + sz[c] / 2 + 7 + (size_t)c * 3;
            char *q = realloc(p[c], bb_opaque(ns));
            check_aligned16(q, "realloc (growth chain)", ns);
            check_pattern(q, sz[c], (uintptr_t)c, "realloc growth chain");
            for (size_t i = sz[c]; i < ns; i++) q[i] = (char)bb_pat((uintptr_t)c, i);
            p[c] = q;
            sz[c] = ns;
            grew = 1;
        }
        if (!grew) break;
        /* An unrelated allocation between steps, so blocks cannot always
         * grow in place. */
        void *junk = malloc((size_t)step * 97 + 1);
        bb_escape(junk);
        free(junk);
    }
    /* Shrink back down. */
    for (;;) {
        int shrank = 0;
        for (int c = 0; c < C; c++) {
            if (sz[c] <= 1) continue;
            size_t ns = sz[c] * 2 / 3;
            if (ns < 1) ns = 1;
            char *q = realloc(p[c], bb_opaque(ns));
            check_aligned16(q, "realloc (shrink chain)", ns);
            check_pattern(q, ns, (uintptr_t)c, "realloc shrink chain");
            p[c] = q;
            sz[c] = ns;
            shrank = 1;
        }
        if (!shrank) break;
    }
    /* Random walk over sizes from 1 byte to 2 MiB, log-uniform. */
    uint64_t rs = 0x1234567;
    for (int step = 0; step < 3000; step++) {
        int c = (int)(bb_rand(&rs) % C);
        int bits = (int)(bb_rand(&rs) % 21);
        size_t ns = 1 + (size_t)(bb_rand(&rs) % ((size_t)2 << bits));
        char *q = realloc(p[c], bb_opaque(ns));
        check_aligned16(q, "realloc (random walk)", ns);
        size_t keep = ns < sz[c] ? ns : sz[c];
        check_pattern(q, keep, (uintptr_t)c, "realloc random walk");
        for (size_t i = keep; i < ns; i++) q[i] = (char)bb_pat((uintptr_t)c, i);
        p[c] = q;
        sz[c] = ns;
    }
    for (int c = 0; c < C; c++) {
        check_pattern(p[c], sz[c], (uintptr_t)c, "realloc chain end");
        free(p[c]);
    }
    /* Same size, and aligned blocks. */
    char *q = malloc(1000);
    bb_fill(q, 1000, 3);
    q = realloc(q, bb_opaque(1000));
    BB_CHECK(q != NULL, "realloc to the same size returned NULL");
    check_pattern(q, 1000, 3, "realloc to the same size");
    free(q);
    static const size_t als[] = {64, 4096, 2 * MiB};
    for (size_t i = 0; i < sizeof als / sizeof als[0]; i++) {
        size_t al = als[i];
        q = aligned_alloc(al, 1000);
        check_aligned(q, al, "aligned_alloc", 1000);
        bb_fill(q, 1000, al);
        q = realloc(q, bb_opaque(300000));
        check_aligned16(q, "realloc of an aligned block", 300000);
        check_pattern(q, 1000, al, "realloc (grow) of an aligned block");
        q = realloc(q, bb_opaque(10));
        check_aligned16(q, "realloc of an aligned block", 10);
        check_pattern(q, 10, al, "realloc (shrink) of an aligned block");
        free(q);
    }
}

/* ---- posix_memalign / aligned_alloc / memalign argument checks ---- */

static void test_bad_alignments(void) {
    /* posix_memalign: alignment must be a power of two multiple of
     * sizeof(void *); otherwise EINVAL and *memptr untouched. */
    static const size_t bad[] = {0, 1, 2, 3, 4, 5, 6, 7, 12, 24, 40, 48, 96, 100, 3 * MiB, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *sentinel = (void *)(uintptr_t)0xdead0;
        void *q = sentinel;
        int r = posix_memalign(&q, bb_opaque(bad[i]), 64);
        BB_CHECK(r == EINVAL, "posix_memalign(alignment %zu) returned %d, not EINVAL", bad[i], r);
        BB_CHECK(q == sentinel, "posix_memalign(alignment %zu) failed but changed *memptr", bad[i]);
        if (p_posix_memalign2) {
            r = p_posix_memalign2(&q, bb_opaque(bad[i]), 64);
            BB_CHECK(r == EINVAL && q == sentinel, "__posix_memalign(alignment %zu) did not fail cleanly with EINVAL",
                     bad[i]);
        }
    }
    /* Too big an alignment for any block: ENOMEM, *memptr untouched. */
    {
        void *sentinel = (void *)(uintptr_t)0xdead0, *q = sentinel;
        int r = posix_memalign(&q, bb_opaque((size_t)1 << 63), 8);
        BB_CHECK(r == ENOMEM, "posix_memalign(alignment 2^63) returned %d, not ENOMEM", r);
        BB_CHECK(q == sentinel, "posix_memalign(alignment 2^63) failed but changed *memptr");
    }
    /* sizeof(void *) is the smallest valid alignment; size 0 gives a unique
     * pointer (glibc). */
    void *q = NULL;
    int r = posix_memalign(&q, 8, 100);
    BB_CHECK(r == 0 && q != NULL, "posix_memalign(8, 100) failed with %d", r);
    check_aligned(q, 8, "posix_memalign", 100);
    free(q);
    q = NULL;
    r = posix_memalign(&q, 64, bb_opaque(0));
    BB_CHECK(r == 0 && q != NULL, "posix_memalign(64, 0) failed with %d (glibc returns a unique pointer)", r);
    check_aligned(q, 64, "posix_memalign", 0);
    free(q);

    /* aligned_alloc: a non-power-of-two alignment is EINVAL (C17, glibc >= 2.38). */
    static const size_t badal[] = {0, 3, 5, 6, 7, 12, 24, 48, 100, 3 * MiB, SIZE_MAX};
    for (size_t i = 0; i < sizeof badal / sizeof badal[0]; i++) {
        errno = 0;
        bb_barrier();
        void *p = aligned_alloc(bb_opaque(badal[i]), 64);
        bb_barrier();
        int e = errno;
        if (!GLIBC_CHECK(p == NULL, "aligned_alloc(alignment %zu) returned %p, not NULL (C17, glibc >= 2.38: EINVAL)",
                         badal[i], p))
            free(p);
        else
            GLIBC_CHECK(e == EINVAL, "aligned_alloc(alignment %zu) set errno %d, not EINVAL", badal[i], e);
    }
    /* Alignments below 16 are valid. */
    for (size_t al = 1; al < 16; al <<= 1) {
        void *p = aligned_alloc(bb_opaque(al), 24);
        check_aligned(p, al, "aligned_alloc", 24);
        memset(p, 1, 24);
        free(p);
        if (p_memalign) {
            p = p_memalign(bb_opaque(al), 24);
            check_aligned(p, al, "memalign", 24);
            free(p);
        }
    }
    /* glibc's memalign rounds a non-power-of-two alignment up to the next
     * power of two, and treats 0 like malloc. */
    if (p_memalign) {
        static const struct {
            size_t al, expect;
        } ma[] = {{0, 16}, {24, 32}, {48, 64}, {100, 128}, {3 * MiB, 4 * MiB}};
        for (size_t i = 0; i < sizeof ma / sizeof ma[0]; i++) {
            void *p = p_memalign(bb_opaque(ma[i].al), 100);
            if (!GLIBC_CHECK(p != NULL, "memalign(%zu, 100) returned NULL (glibc rounds the alignment up)", ma[i].al))
                continue;
            GLIBC_CHECK(((uintptr_t)p & (ma[i].expect - 1)) == 0, "memalign(%zu, 100) = %p is not %zu-byte aligned",
                        ma[i].al, p, ma[i].expect);
            memset(p, 2, 100);
            free(p);
        }
    }
}

/* ---- every power-of-two alignment from 16 to 2 MiB ---- */

static void test_alignments(void) {
    enum { MAXLIVE = 64 };
    for (size_t al = 16; al <= 2 * MiB; al <<= 1) {
        const size_t sizes[] = {1, 8, al / 2 + 1, al - 1, al, al + 1, 3 * al + 5, 100000, MiB + 3};
        const size_t ns = sizeof sizes / sizeof sizes[0];
        void *live[MAXLIVE];
        size_t livesz[MAXLIVE];
        int nlive = 0;
        for (size_t i = 0; i < ns; i++) {
            size_t n = sizes[i];
            for (int how = 0; how < 4; how++) {
                void *p = NULL;
                const char *what = "?";
                if (how == 0) {
                    what = "posix_memalign";
                    int r = posix_memalign(&p, al, bb_opaque(n));
                    BB_CHECK(r == 0, "posix_memalign(%zu, %zu) failed with %d", al, n, r);
                } else if (how == 1) {
                    what = "aligned_alloc";
                    p = aligned_alloc(al, bb_opaque(n));
                } else if (how == 2) {
                    if (!p_memalign) continue;
                    what = "memalign";
                    p = p_memalign(al, bb_opaque(n));
                } else {
                    if (!p_libc_memalign) continue;
                    what = "__libc_memalign";
                    p = p_libc_memalign(al, bb_opaque(n));
                }
                check_aligned(p, al, what, n);
                size_t us = malloc_usable_size(p);
                BB_CHECK(us >= n, "%s(%zu, %zu): malloc_usable_size %zu < size", what, al, n, us);
                memset(p, 0xC3, n);
                live[nlive] = p;
                livesz[nlive] = n;
                nlive++;
            }
        }
        for (int i = 0; i < nlive; i++) bb_fill(live[i], livesz[i], (uintptr_t)i * 131 + al);
        for (int i = 0; i < nlive; i++)
            check_pattern(live[i], livesz[i], (uintptr_t)i * 131 + al, "live aligned blocks overlap");
        for (int i = 1; i < nlive; i += 2) free(live[i]);
        for (int i = 0; i < nlive; i += 2) free(live[i]);
    }
}

static void test_huge_aligned(void) {
    size_t n = 2 * GiB;
    unsigned char *p = aligned_alloc(2 * MiB, bb_opaque(n));
    check_aligned(p, 2 * MiB, "aligned_alloc", n);
    p[0] = 1;
    p[n - 1] = 2;
    for (size_t off = MiB; off < n - 1; off += MiB) p[off] = (unsigned char)(off >> 20);
    BB_CHECK(p[0] == 1 && p[n - 1] == 2, "aligned_alloc(2 MiB, 2 GiB): first/last byte lost");
    for (size_t off = MiB; off < n - 1; off += MiB)
        BB_CHECK(p[off] == (unsigned char)(off >> 20), "aligned_alloc(2 MiB, 2 GiB): byte at %zu lost", off);
    size_t us = malloc_usable_size(p);
    BB_CHECK(us >= n, "aligned_alloc(2 MiB, 2 GiB): malloc_usable_size %zu < size", us);
    free(p);
}

/* ---- valloc / pvalloc ---- */

static void test_valloc_pvalloc(void) {
    static const size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 100000, MiB + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        for (int how = 0; how < 2; how++) {
            void *(*fn)(size_t) = how ? p_libc_valloc : p_valloc;
            if (!fn) continue;
            const char *what = how ? "__libc_valloc" : "valloc";
            void *p = fn(bb_opaque(n));
            check_aligned(p, pagesz, what, n);
            BB_CHECK(malloc_usable_size(p) >= n, "%s(%zu): usable size too small", what, n);
            memset(p, 7, n);
            free(p);
        }
    }
    for (int how = 0; how < 2; how++) {
        void *(*fn)(size_t) = how ? p_libc_pvalloc : p_pvalloc;
        if (!fn) continue;
        const char *what = how ? "__libc_pvalloc" : "pvalloc";
        void *p = fn(bb_opaque(1));
        check_aligned(p, pagesz, what, 1);
        size_t us = malloc_usable_size(p);
        BB_CHECK(us >= pagesz, "%s(1): malloc_usable_size %zu < page size %zu", what, us, pagesz);
        memset(p, 8, pagesz);
        free(p);
        p = fn(bb_opaque(pagesz + 1));
        check_aligned(p, pagesz, what, pagesz + 1);
        us = malloc_usable_size(p);
        BB_CHECK(us >= 2 * pagesz, "%s(page+1): malloc_usable_size %zu < two pages", what, us);
        memset(p, 8, 2 * pagesz);
        free(p);
        p = fn(bb_opaque(0));
        BB_CHECK(p != NULL, "%s(0) returned NULL", what);
        check_aligned(p, pagesz, what, 0);
        free(p);
    }
}

/* ---- malloc_usable_size ---- */

static void test_usable_size(void) {
    BB_CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) != 0");
    enum { N = 2600 };
    static unsigned char *p[N];
    static size_t req[N], us[N];
    int n = 0;
    for (size_t s = 0; s <= 2048; s++) req[n++] = s;
    for (size_t s = 2049; s <= 8 * MiB && n < N; s = s * 9 / 8 + 13) req[n++] = s;
    for (int i = 0; i < n; i++) {
        p[i] = malloc(bb_opaque(req[i]));
        BB_CHECK(p[i] != NULL, "malloc(%zu) returned NULL", req[i]);
        us[i] = malloc_usable_size(p[i]);
        BB_CHECK(us[i] >= req[i], "malloc_usable_size(malloc(%zu)) = %zu", req[i], us[i]);
    }
    /* Fill every block's whole usable size, then check no block was
     * overwritten by a neighbour's. */
    for (int i = 0; i < n; i++) bb_fill(p[i], us[i], (uintptr_t)i + 1000);
    for (int i = 0; i < n; i++) {
        size_t bad = bb_check(p[i], us[i], (uintptr_t)i + 1000);
        BB_CHECK(bad == (size_t)-1,
                 "block malloc(%zu) (usable %zu) corrupted at offset %zu after neighbours were filled to their "
                 "usable size",
                 req[i], us[i], bad);
        BB_CHECK(malloc_usable_size(p[i]) == us[i], "malloc_usable_size changed for a live block of %zu", req[i]);
    }
    for (int i = 0; i < n; i += 2) free(p[i]);
    for (int i = 1; i < n; i += 2) free(p[i]);
    /* calloc and realloc blocks too. */
    for (size_t s = 1; s < 300000; s = s * 3 + 1) {
        unsigned char *c = calloc(s, 1);
        BB_CHECK(c && malloc_usable_size(c) >= s, "calloc(%zu, 1): usable size too small", s);
        memset(c, 1, malloc_usable_size(c));
        c = realloc(c, s * 2);
        BB_CHECK(c && malloc_usable_size(c) >= s * 2, "realloc to %zu: usable size too small", s * 2);
        memset(c, 1, malloc_usable_size(c));
        free(c);
    }
}

/* ---- calloc zeroes, including reused dirty memory ---- */

static void test_calloc_zero(void) {
    static const size_t sizes[] = {1,     8,     16,     24,     48,     100,     256,     1000,
                                   4000,  4096,  10000,  40000,  100000, 300000,  MiB, 3 * MiB + 5};
    static void *blk[256];
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        int count = n < 65536 ? 256 : n < MiB ? 16 : 4;
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < count; i++) {
                blk[i] = malloc(bb_opaque(n));
                BB_CHECK(blk[i] != NULL, "malloc(%zu) returned NULL", n);
                memset(blk[i], 0xAB, malloc_usable_size(blk[i]));
            }
            for (int i = 0; i < count; i++) free(blk[round == 1 ? count - 1 - i : i]);
            for (int i = 0; i < count; i++) {
                size_t nm = 1, el = n;
                if (round == 1) nm = n, el = 1;
                if (round == 2 && n % 8 == 0) nm = n / 8, el = 8;
                blk[i] = calloc(bb_opaque(nm), bb_opaque(el));
                BB_CHECK(blk[i] != NULL, "calloc(%zu, %zu) returned NULL", nm, el);
                check_zero(blk[i], n, "calloc after freeing dirty blocks of the same size");
                memset(blk[i], 0xAB, n);
            }
            for (int i = 0; i < count; i++) free(blk[i]);
        }
        if (p_libc_calloc) {
            void *a = malloc(n);
            memset(a, 0xCD, n);
            free(a);
            a = p_libc_calloc(1, n);
            BB_CHECK(a != NULL, "__libc_calloc(1, %zu) returned NULL", n);
            check_zero(a, n, "__libc_calloc after freeing a dirty block");
            free(a);
        }
    }
}

/* ---- sized frees, cfree, __libc_* names ---- */

static void test_sized_free(void) {
    if (p_free_sized) {
        errno = 1234;
        bb_barrier();
        p_free_sized(NULL, 0);
        bb_barrier();
        p_free_sized(NULL, 100);
        BB_CHECK(errno == 1234, "free_sized(NULL, n) changed errno");
        static const size_t sizes[] = {1, 16, 100, 1000, 5000, 70000, 300000, 3 * MiB};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t n = sizes[i];
            for (int how = 0; how < 3; how++) {
                char *p = how == 1 ? calloc(1, n) : malloc(n);
                BB_CHECK(p != NULL, "allocation of %zu failed", n);
                memset(p, 3, n);
                size_t fs = how == 2 ? malloc_usable_size(p) : n;
                errno = 1234;
                bb_barrier();
                p_free_sized(p, fs);
                bb_barrier();
                BB_CHECK(errno == 1234, "free_sized(p, %zu) changed errno", fs);
            }
            char *p = malloc(n);
            p = realloc(p, n * 2);
            BB_CHECK(p != NULL, "realloc failed");
            p_free_sized(p, n * 2);
        }
    }
    if (p_free_aligned_sized) {
        p_free_aligned_sized(NULL, 64, 0);
        for (size_t al = 16; al <= 2 * MiB; al <<= 2) {
            const size_t sizes[] = {1, al, 3 * al + 1, 100000};
            for (size_t i = 0; i < 4; i++) {
                char *p = aligned_alloc(al, sizes[i]);
                check_aligned(p, al, "aligned_alloc", sizes[i]);
                memset(p, 4, sizes[i]);
                errno = 1234;
                bb_barrier();
                p_free_aligned_sized(p, al, sizes[i]);
                bb_barrier();
                BB_CHECK(errno == 1234, "free_aligned_sized(p, %zu, %zu) changed errno", al, sizes[i]);
            }
        }
    }
    if (p_cfree) {
        p_cfree(NULL);
        static const size_t sizes[] = {1, 100, 5000, 300000, 3 * MiB};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            char *p = malloc(sizes[i]);
            BB_CHECK(p != NULL, "malloc failed");
            p[0] = 1;
            p_cfree(p);
        }
    }
}

static void test_libc_names(void) {
    if (p_libc_malloc && p_libc_free) {
        static const size_t sizes[] = {0, 1, 100, 5000, 300000, 3 * MiB};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t n = sizes[i];
            char *p = p_libc_malloc(n);
            check_aligned16(p, "__libc_malloc", n);
            memset(p, 5, n);
            free(p); /* mixing names is fine: they are one allocator */
            p = malloc(n);
            BB_CHECK(p != NULL, "malloc failed");
            memset(p, 5, n);
            p_libc_free(p);
        }
        p_libc_free(NULL);
    }
    if (p_libc_calloc) {
        char *p = p_libc_calloc(10, 10);
        check_aligned16(p, "__libc_calloc", 100);
        check_zero(p, 100, "__libc_calloc");
        free(p);
    }
    if (p_libc_realloc) {
        char *p = p_libc_realloc(NULL, 100);
        check_aligned16(p, "__libc_realloc(NULL, n)", 100);
        bb_fill(p, 100, 42);
        p = p_libc_realloc(p, 200000);
        check_aligned16(p, "__libc_realloc", 200000);
        check_pattern(p, 100, 42, "__libc_realloc grow");
        p = p_libc_realloc(p, 50);
        check_pattern(p, 50, 42, "__libc_realloc shrink");
        p = p_libc_realloc(p, 0);
        if (!GLIBC_CHECK(p == NULL, "__libc_realloc(p, 0) did not return NULL (glibc frees)")) free(p);
    }
    if (p_libc_memalign) {
        for (size_t al = 16; al <= MiB; al <<= 4) {
            char *p = p_libc_memalign(al, 1000);
            check_aligned(p, al, "__libc_memalign", 1000);
            memset(p, 6, 1000);
            free(p);
        }
    }
    if (p_posix_memalign2) {
        void *q = NULL;
        int r = p_posix_memalign2(&q, 256, 1000);
        BB_CHECK(r == 0, "__posix_memalign(256, 1000) returned %d", r);
        check_aligned(q, 256, "__posix_memalign", 1000);
        memset(q, 7, 1000);
        free(q);
    }
}

static void test_trim(void) {
    if (!p_malloc_trim) return;
    enum { N = 20000, L = 64 };
    static void *small[N], *large[L];
    for (int i = 0; i < N; i++) {
        small[i] = malloc(1000);
        BB_CHECK(small[i] != NULL, "malloc(1000) failed");
        memset(small[i], 1, 1000);
    }
    for (int i = 0; i < L; i++) {
        large[i] = malloc(MiB);
        BB_CHECK(large[i] != NULL, "malloc(1 MiB) failed");
        memset(large[i], 1, MiB);
    }
    for (int i = 0; i < N; i++) free(small[i]);
    for (int i = 0; i < L; i++) free(large[i]);
    int r = p_malloc_trim(0);
    BB_CHECK(r == 0 || r == 1, "malloc_trim(0) returned %d", r);
    r = p_malloc_trim(MiB);
    BB_CHECK(r == 0 || r == 1, "malloc_trim(1 MiB) returned %d", r);
    /* Everything still works afterwards. */
    for (int i = 0; i < 1000; i++) {
        small[i] = calloc(1, 1000);
        check_zero(small[i], 1000, "calloc after malloc_trim");
    }
    for (int i = 0; i < 1000; i++) free(small[i]);
}

int main(void) {
    bb_print_variant();
    pagesz = (size_t)sysconf(_SC_PAGESIZE);
    resolve();
    test_alignment();
    test_malloc0();
    test_free_errno();
    test_huge();
    test_overflow();
    test_realloc_fail();
    test_realloc_zero();
    test_realloc_small();
    test_realloc_chains();
    test_bad_alignments();
    test_alignments();
    test_huge_aligned();
    test_valloc_pvalloc();
    test_usable_size();
    test_calloc_zero();
    test_sized_free();
    test_libc_names();
    test_trim();
    if (deviations) bb_say("api: passed, with %d deviations from glibc's semantics (allowed only without AethAlloc)", deviations);
    else bb_say("api: all checks passed");
    return 0;
}
