/*
 * aethalloc.h: the public C API of AethAlloc.
 *
 * Every AethAlloc variant (libaethalloc.so, ...) exports the whole glibc
 * malloc family with glibc's semantics (see README.md) plus the functions
 * declared here. Programs usually need none of this: preload the library
 * with LD_PRELOAD and the standard functions are replaced.
 */
#ifndef AETHALLOC_H
#define AETHALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The name of the variant this library was built as: "magazine"
 * (libaethalloc.so), "simple" (libaethalloc-simple.so) or "metrics"
 * (libaethalloc-metrics.so). The string is static; do not free it. */
const char *aethalloc_variant(void);

/* ---- metrics ------------------------------------------------------------
 * Counted by libaethalloc-metrics.so; the other variants export the same
 * functions and report zeros (`aethalloc_metrics_ext.enabled == 0`).
 *
 * Counters are kept per thread and added to the process totals every few
 * dozen cache refills and at thread exit, so a snapshot can lag a busy
 * thread by a few thousand operations. */

/* The original five-counter snapshot, returned by value. */
typedef struct aethalloc_metrics {
    uint64_t allocs;        /* successful allocations, all sizes */
    uint64_t frees;         /* frees of non-NULL pointers */
    uint64_t cache_hits;    /* small allocations served by the thread cache */
    uint64_t cache_misses;  /* small allocations that refilled the cache */
    uint64_t direct_allocs; /* allocations above 64 KiB, mapped directly */
} aethalloc_metrics;

aethalloc_metrics aethalloc_get_metrics(void);

#define AETHALLOC_METRICS_VERSION 1
#define AETHALLOC_MAX_CLASSES 64

/* The extended snapshot. Set `size` to sizeof(aethalloc_metrics_ext) before
 * the call; the library fills at most that many bytes, then sets `size` to
 * the bytes it filled and `version` to its layout version. Fields are only
 * ever appended, so an older caller keeps working with a newer library. */
typedef struct aethalloc_metrics_ext {
    uint32_t size;
    uint32_t version;
    uint32_t enabled;          /* 1 in the metrics variant, else 0 */
    uint32_t class_count;      /* entries used in class_size/class_allocs */
    uint64_t allocs;
    uint64_t frees;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t direct_allocs;
    uint64_t bytes_in_use;      /* block bytes handed out and not freed */
    uint64_t peak_bytes_in_use;
    uint64_t bytes_mapped;      /* total mapped from the OS (mmap, mremap growth) */
    uint64_t bytes_returned;    /* total given back (munmap, MADV_DONTNEED) */
    uint64_t depot_transfers;   /* magazines or batches moved to/from the depot or pool */
    uint64_t threads_exited;
    uint64_t class_size[AETHALLOC_MAX_CLASSES];
    uint64_t class_allocs[AETHALLOC_MAX_CLASSES];
} aethalloc_metrics_ext;

/* Returns 0 on success, -1 if `out` is NULL or `out->size` is too small
 * for the header fields. */
int aethalloc_get_metrics_ext(aethalloc_metrics_ext *out);

/* C23 sized deallocation, also exported under these names. `size` must be
 * the size that was requested (or any size up to malloc_usable_size). */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* AETHALLOC_H */
