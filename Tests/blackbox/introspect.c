/*
 * introspect.c: glibc's introspection API answered by the preloaded
 * allocator, checked against what the program did and the kernel's view.
 *
 *     introspect mallinfo | info | stats | mallopt
 *
 * mallinfo  Allocates 100 MiB (small, medium and large blocks), writes it,
 *           then checks mallinfo2(): uordblks within [100 MiB, 115 MiB],
 *           arena + hblkhd at least uordblks, the Rss of
 *           /proc/self/smaps_rollup at least 95% of uordblks; mallinfo()
 *           gives the same figures (saturated at INT_MAX); after freeing
 *           everything and malloc_trim(0), uordblks is below 2 MiB and the
 *           mapped bytes fell by at least 90 MiB.
 * info      malloc_info(0, fp) writes one <malloc version="aethalloc-1">
 *           document to fp (checked by reading it back), whose <inuse> size
 *           matches mallinfo2().uordblks within 1 MiB; malloc_info(1, fp)
 *           fails with EINVAL.
 * stats     malloc_stats() writes lines starting "aethalloc[" to stderr
 *           (the test reads them).
 * mallopt   Known parameters return 1, unknown or out-of-range ones 0;
 *           M_MMAP_THRESHOLD moves the medium/large boundary (a 512 KiB
 *           block becomes its own mapping: hblks grows by one);
 *           M_TRIM_THRESHOLD raises the dirty budget's floor (freed
 *           slices next to live ones stay committed: keepcost), and
 *           malloc_trim(0) brings keepcost to 0.
 */
#include "bb.h"

#include <limits.h>
#include <malloc.h>

/* mallinfo() is deprecated in glibc's header; programs still call it. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

static size_t rss_rollup(void) { return bb_proc_field("/proc/self/smaps_rollup", "\nRss:") * KiB; }

enum { SMALL = 200000, MEDIUM = 100, LARGE = 6 };
static void *small[SMALL], *medium[MEDIUM], *large[LARGE];

/* 100 MiB: 200,000 blocks of 16-240 B (about 25 MiB), 100 of 256 KiB
 * (25 MiB), 6 of 8.33 MiB (50 MiB). Returns the bytes asked for. */
static size_t allocate_100mib(void) {
    size_t total = 0;
    for (int i = 0; i < SMALL; i++) {
        size_t n = 16 + (size_t)(i % 15) * 16;
        small[i] = malloc(n);
        BB_CHECK(small[i] != NULL, "malloc(%zu) failed", n);
        memset(small[i], 1, n);
        total += n;
    }
    for (int i = 0; i < MEDIUM; i++) {
        medium[i] = malloc(256 * KiB);
        BB_CHECK(medium[i] != NULL, "malloc(256 KiB) failed");
        memset(medium[i], 2, 256 * KiB);
        total += 256 * KiB;
    }
    for (int i = 0; i < LARGE; i++) {
        size_t n = 50 * MiB / LARGE;
        large[i] = malloc(n);
        BB_CHECK(large[i] != NULL, "malloc(%zu) failed", n);
        memset(large[i], 3, n);
        total += n;
    }
    return total;
}

static void free_all(void) {
    for (int i = 0; i < SMALL; i++) free(small[i]);
    for (int i = 0; i < MEDIUM; i++) free(medium[i]);
    for (int i = 0; i < LARGE; i++) free(large[i]);
}

static void check_mallinfo(void) {
    struct mallinfo2 before = mallinfo2();
    size_t asked = allocate_100mib();
    struct mallinfo2 m = mallinfo2();
    size_t rss = rss_rollup();
    bb_say("mallinfo2: arena=%zu ordblks=%zu smblks=%zu hblks=%zu hblkhd=%zu fsmblks=%zu uordblks=%zu fordblks=%zu "
           "keepcost=%zu rss=%zu asked=%zu",
           m.arena, m.ordblks, m.smblks, m.hblks, m.hblkhd, m.fsmblks, m.uordblks, m.fordblks, m.keepcost, rss, asked);
    BB_CHECK(m.uordblks >= asked && m.uordblks <= asked + 15 * MiB,
             "uordblks %zu is not within [%zu, %zu + 15 MiB] after the program asked for that", m.uordblks, asked, asked);
    BB_CHECK(m.hblks >= LARGE && m.hblkhd >= 50 * MiB, "hblks %zu / hblkhd %zu do not count the 6 large blocks",
             m.hblks, m.hblkhd);
    BB_CHECK(m.arena + m.hblkhd >= m.uordblks, "arena %zu + hblkhd %zu < uordblks %zu", m.arena, m.hblkhd,
             m.uordblks);
    BB_CHECK(rss >= m.uordblks / 100 * 95, "RSS %zu (smaps_rollup) is below 95%% of uordblks %zu for written memory",
             rss, m.uordblks);
    struct mallinfo old = mallinfo();
    BB_CHECK((size_t)old.uordblks == (m.uordblks > INT_MAX ? (size_t)INT_MAX : m.uordblks) &&
                 (size_t)old.hblkhd == (m.hblkhd > INT_MAX ? (size_t)INT_MAX : m.hblkhd),
             "mallinfo() (uordblks %d, hblkhd %d) disagrees with mallinfo2()", old.uordblks, old.hblkhd);
    free_all();
    malloc_trim(0);
    struct mallinfo2 after = mallinfo2();
    bb_say("mallinfo2 after free and malloc_trim: arena=%zu hblkhd=%zu uordblks=%zu fordblks=%zu (before: %zu)",
           after.arena, after.hblkhd, after.uordblks, after.fordblks, before.uordblks);
    BB_CHECK(after.uordblks < before.uordblks + 2 * MiB, "uordblks %zu after freeing everything (started at %zu)",
             after.uordblks, before.uordblks);
    BB_CHECK(after.arena + after.hblkhd + 90 * MiB <= m.arena + m.hblkhd,
             "arena + hblkhd fell only from %zu to %zu after free and malloc_trim", m.arena + m.hblkhd,
             after.arena + after.hblkhd);
}

static void check_info(void) {
    allocate_100mib();
    struct mallinfo2 m = mallinfo2();
    FILE *fp = tmpfile();
    BB_CHECK(fp != NULL, "tmpfile failed");
    fputs("before\n", fp); /* buffered: malloc_info must flush it first */
    int r = malloc_info(0, fp);
    BB_CHECK(r == 0, "malloc_info(0, fp) returned %d (errno %d)", r, errno);
    fflush(fp);
    static char doc[65536];
    rewind(fp);
    size_t n = fread(doc, 1, sizeof doc - 1, fp);
    doc[n] = 0;
    BB_CHECK(strncmp(doc, "before\n<malloc version=\"aethalloc-1\"", 36) == 0, "malloc_info wrote: %.200s", doc);
    BB_CHECK(strstr(doc, "</malloc>\n") != NULL, "the document is not closed: %.300s", doc);
    const char *inuse = strstr(doc, "<inuse size=\"");
    BB_CHECK(inuse != NULL, "no <inuse> element: %.300s", doc);
    size_t v = strtoul(inuse + 13, NULL, 10);
    BB_CHECK(v + MiB >= m.uordblks && v <= m.uordblks + MiB, "<inuse size=%zu> but mallinfo2().uordblks %zu", v,
             m.uordblks);
    errno = 0;
    r = malloc_info(1, fp);
    BB_CHECK(r != 0 && errno == EINVAL, "malloc_info(1, fp) returned %d, errno %d (expected EINVAL)", r, errno);
    fclose(fp);
    free_all();
    bb_say("malloc_info: %zu bytes, inuse %zu", n, v);
}

static void check_stats(void) {
    allocate_100mib();
    malloc_stats();
    free_all();
    bb_say("malloc_stats: done");
}

/* Allocates 64 blocks of 200 KiB, frees three in four (the fourth keeps
 * their segments from being wholly free) and returns mallinfo2().keepcost,
 * then frees the rest and trims. */
static size_t freed_but_committed(void) {
    void *blocks[64];
    for (int i = 0; i < 64; i++) {
        blocks[i] = bb_escape(malloc(200 * KiB));
        BB_CHECK(blocks[i] != NULL, "malloc(200 KiB) failed");
        memset(blocks[i], 1, 200 * KiB);
    }
    for (int i = 0; i < 64; i++)
        if (i % 4) free(blocks[i]);
    size_t kept = mallinfo2().keepcost;
    for (int i = 0; i < 64; i += 4) free(blocks[i]);
    malloc_trim(0);
    size_t left = mallinfo2().keepcost;
    BB_CHECK(left == 0, "after malloc_trim(0) keepcost is %zu, not 0", left);
    return kept;
}

static void check_mallopt(void) {
    BB_CHECK(mallopt(M_ARENA_MAX, 4) == 1, "mallopt(M_ARENA_MAX, 4) != 1");
    BB_CHECK(mallopt(M_TOP_PAD, 1 << 20) == 1, "mallopt(M_TOP_PAD) != 1");
    BB_CHECK(mallopt(12345, 1) == 0, "mallopt of an unknown parameter != 0");
    BB_CHECK(mallopt(M_TRIM_THRESHOLD, -5) == 0, "mallopt(M_TRIM_THRESHOLD, -5) accepted");
    BB_CHECK(mallopt(M_MMAP_THRESHOLD, 64 << 20) == 0, "mallopt(M_MMAP_THRESHOLD, 64 MiB) accepted");
    BB_CHECK(mallopt(M_PERTURB, 0x55) == 0, "mallopt(M_PERTURB) claims to be honoured");
    /* The medium/large boundary: a 512 KiB block is medium by default
     * (the hardened variant maps every block above 64 KiB on its own). */
    const char *variant = bb_variant();
    int hardened = variant && strcmp(variant, "hardened") == 0;
    struct mallinfo2 a = mallinfo2();
    void *p = bb_escape(malloc(512 * KiB));
    struct mallinfo2 b = mallinfo2();
    BB_CHECK(hardened || b.hblks == a.hblks, "a 512 KiB block was mapped on its own before mallopt (hblks %zu -> %zu)",
             a.hblks, b.hblks);
    BB_CHECK(mallopt(M_MMAP_THRESHOLD, 256 * 1024) == 1, "mallopt(M_MMAP_THRESHOLD, 256 KiB) != 1");
    void *q = bb_escape(malloc(512 * KiB));
    struct mallinfo2 c = mallinfo2();
    BB_CHECK(c.hblks == b.hblks + 1, "after M_MMAP_THRESHOLD=256 KiB a 512 KiB block is not its own mapping "
             "(hblks %zu -> %zu)", b.hblks, c.hblks);
    memset(q, 7, 512 * KiB);
    free(q);
    free(p);
    BB_CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1, "mallopt(M_MMAP_THRESHOLD, 1 MiB) != 1");
    /* The dirty budget's floor: freed medium slices next to live ones stay
     * committed (keepcost) up to it instead of being purged. */
    size_t kept_default = freed_but_committed();
    BB_CHECK(mallopt(M_TRIM_THRESHOLD, 64 << 20) == 1, "mallopt(M_TRIM_THRESHOLD, 64 MiB) != 1");
    size_t kept_raised = freed_but_committed();
    BB_CHECK(hardened || (kept_raised >= 8 << 20 && kept_raised >= kept_default + (4 << 20)),
             "with M_TRIM_THRESHOLD=64 MiB %zu bytes of freed slices stay committed (default: %zu)", kept_raised,
             kept_default);
    bb_say("mallopt: boundary moved; freed slices kept committed: %zu by default, %zu with M_TRIM_THRESHOLD=64 MiB",
           kept_default, kept_raised);
}

int main(int argc, char **argv) {
    bb_print_variant();
    BB_CHECK(argc == 2, "usage: introspect mallinfo | info | stats | mallopt");
    if (strcmp(argv[1], "mallinfo") == 0) check_mallinfo();
    else if (strcmp(argv[1], "info") == 0) check_info();
    else if (strcmp(argv[1], "stats") == 0) check_stats();
    else if (strcmp(argv[1], "mallopt") == 0) check_mallopt();
    else bb_fail("unknown check %s", argv[1]);
    return 0;
}
