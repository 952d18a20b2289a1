/*
 * aethalloc_stats_file.h: the per-process statistics file, its only home.
 *
 * libaethalloc-metrics.so publishes its counters in one small shared-memory
 * file per process, `<dir>/aethalloc-<pid>.stats`, where <dir> is
 * $AETHALLOC_STATS_DIR, or /dev/shm when that variable is unset and /dev/shm
 * is writable. The library maps the file MAP_SHARED and rewrites it every
 * time a thread's counters are added to the process totals; it removes the
 * file at normal exit. Readers (`aethalloc-cli stat`, `aethalloc-cli
 * metrics`) map or read it and never write it.
 *
 * Torn reads are prevented by a sequence lock: the writer makes `sequence`
 * odd, writes the body, then makes it even again (with release ordering).
 * A reader copies the whole file, and accepts the copy only if `sequence`
 * was even and unchanged before and after the copy (acquire ordering);
 * otherwise it retries.
 *
 * All fields are little-endian (the library only runs on x86-64). Fields
 * are only ever appended: a reader must check `magic`, accept any `version`
 * it knows (and refuse newer ones with a clear message), and use
 * `header_bytes`/`file_bytes` rather than sizeof.
 */
#ifndef AETHALLOC_STATS_FILE_H
#define AETHALLOC_STATS_FILE_H

#include <stdint.h>

#define AETHALLOC_STATS_MAGIC "AETHSTAT"   /* 8 bytes, no NUL */
#define AETHALLOC_STATS_VERSION 1
#define AETHALLOC_STATS_FILE_BYTES 4096
#define AETHALLOC_STATS_MAX_CLASSES 64

typedef struct aethalloc_stats_file {
    char magic[8];               /*    0: "AETHSTAT" */
    uint32_t version;            /*    8: AETHALLOC_STATS_VERSION */
    uint32_t file_bytes;         /*   12: AETHALLOC_STATS_FILE_BYTES */
    uint64_t sequence;           /*   16: even = stable, odd = being written */
    int64_t pid;                 /*   24 */
    char variant[16];            /*   32: "metrics", NUL-padded */
    char command[64];            /*   48: /proc/self/comm, NUL-padded */
    uint64_t start_unix_ms;      /*  112: when the library started */
    uint64_t update_unix_ms;     /*  120: time of the last publish */
    uint64_t allocs;             /*  128 */
    uint64_t frees;              /*  136 */
    uint64_t cache_hits;         /*  144 */
    uint64_t cache_misses;       /*  152 */
    uint64_t direct_allocs;      /*  160 */
    uint64_t bytes_in_use;       /*  168 */
    uint64_t peak_bytes_in_use;  /*  176 */
    uint64_t bytes_mapped;       /*  184: total ever mapped from the OS */
    uint64_t bytes_returned;     /*  192: total ever given back */
    uint64_t depot_transfers;    /*  200 */
    uint64_t threads_exited;     /*  208 */
    uint32_t class_count;        /*  216 */
    uint32_t publishes;          /*  220: how many times the file was written */
    uint64_t class_size[AETHALLOC_STATS_MAX_CLASSES];   /*  224 */
    uint64_t class_allocs[AETHALLOC_STATS_MAX_CLASSES]; /*  736 */
                                 /* 1248: end of version 1 */
} aethalloc_stats_file;

#endif /* AETHALLOC_STATS_FILE_H */
