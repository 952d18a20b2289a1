/*
 * aeth_platform.h: the C shim under the Swift core.
 *
 * Why this exists: the core is Embedded Swift, which cannot import Glibc and
 * has no thread-local variables. This header is the only place the core
 * touches libc. Every function is a thin `static inline` wrapper so Swift
 * inlines it; every symbol is prefixed `aeth_`. Nothing here may call the
 * malloc family (the core *is* malloc), `dlsym`, or `atexit`.
 */
#ifndef AETH_PLATFORM_H
#define AETH_PLATFORM_H


#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/futex.h>

/* ---- thread-local state ------------------------------------------------ */
/* Initial-exec TLS: one %fs-relative load, no __tls_get_addr call. Right for
 * LD_PRELOAD; a late dlopen of the library can fail with "cannot allocate
 * memory in static TLS block" (see README). */
#define AETH_HIDDEN __attribute__((visibility("hidden")))
/* The current thread's cache. It starts out pointing at `aeth_empty_cache`, an
 * all-zero cache on which every fast path fails, so the fast path needs no
 * "initialised?" test. */
extern AETH_HIDDEN __thread void *aeth_tls_cache __attribute__((tls_model("initial-exec")));
/* 0: no cache yet, 1: live cache, 2: torn down at thread exit. */
extern AETH_HIDDEN __thread uintptr_t aeth_tls_state __attribute__((tls_model("initial-exec")));
#define AETH_EMPTY_CACHE_BYTES 8192
extern AETH_HIDDEN const unsigned char aeth_empty_cache[AETH_EMPTY_CACHE_BYTES];
static inline void *aeth_empty_cache_ptr(void) { return (void *)aeth_empty_cache; }

static inline void *aeth_tls_cache_get(void) { return aeth_tls_cache; }
static inline void aeth_tls_cache_set(void *p) { aeth_tls_cache = p; }
static inline uintptr_t aeth_tls_state_get(void) { return aeth_tls_state; }
static inline void aeth_tls_state_set(uintptr_t s) { aeth_tls_state = s; }

/* ---- static storage ------------------------------------------------------ */
/* Zero-initialised, 4 KiB-aligned storage for the core's global state and for
 * the shared empty thread cache. Zero is a valid initial state for all of it,
 * so no constructor has to run before the first malloc. */
#define AETH_ROOT_BYTES (256 * 1024)
extern AETH_HIDDEN unsigned char aeth_root_storage[AETH_ROOT_BYTES];
static inline void *aeth_root(void) { return aeth_root_storage; }
static inline size_t aeth_root_bytes(void) { return AETH_ROOT_BYTES; }

/* ---- the architecture ------------------------------------------------------- */
/* Everything the core assumes about the machine is here, one definition each.
 *
 * AETH_USER_ADDRESS_BITS: user-space addresses are below 2^bits. x86-64
 * Linux with 4-level paging: 47. aarch64 Linux: 48 (the largest user VA
 * without asking for 52-bit addresses with an mmap hint, which the allocator
 * never does; kernels configured with 39, 42 or 47 bits only give lower
 * addresses). Anything above is not ours.
 * aeth_cpu_relax: the spin-wait hint. x86-64: pause. aarch64: isb, which
 * (unlike yield, a no-op on most cores) really stalls the pipeline for a
 * short while, as Rust's spin_loop does. */
#if defined(__x86_64__)
#define AETH_USER_ADDRESS_BITS 47
static inline void aeth_cpu_relax(void) { __builtin_ia32_pause(); }
#elif defined(__aarch64__)
#define AETH_USER_ADDRESS_BITS 48
static inline void aeth_cpu_relax(void) { __asm__ __volatile__("isb sy" ::: "memory"); }
#else
#error "AethAlloc supports x86-64 and aarch64 Linux: add the architecture here"
#endif

/* aeth_prefetch: a hint to bring the line at p into the cache for reading
 * (x86-64 prefetcht0, aarch64 prfm pldl1keep). aeth_prefetch_write: the
 * same, owned for writing, so a line another core holds is taken from it
 * now rather than at the first store (x86-64 prefetchw, aarch64 prfm
 * pstl1keep). Neither ever faults, so p may be NULL or any address.
 * prefetchw is written out: compilers emit it only under -mprfchw. Intel
 * cores before Broadwell do not list it in CPUID but execute it as a no-op
 * (64-bit Windows 10 requires it and runs on them), and AMD has
 * had it since the K6-2. */
static inline void aeth_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
static inline void aeth_prefetch_write(const void *p) {
#if defined(__x86_64__)
    __asm__("prefetchw (%0)" : : "r"(p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}

/* Segments are 2^AETH_SEGMENT_SHIFT bytes (4 MiB), aligned to their size.
 * The one definition: Tuning.segmentShift reads it through Platform.swift,
 * and the segment map below is sized from it. */
#define AETH_SEGMENT_SHIFT 22

/* The OS page size, from getauxval(AT_PAGESZ) (4, 16 or 64 KiB on aarch64),
 * read once. Neither getauxval nor the cache allocate. */
extern AETH_HIDDEN size_t aeth_page_bytes_cache;
size_t aeth_page_bytes_load(void);
static inline size_t aeth_page_bytes(void) {
    size_t p = __atomic_load_n(&aeth_page_bytes_cache, __ATOMIC_RELAXED);
    return p != 0 ? p : aeth_page_bytes_load();
}

/* The segment map: one byte per segment-sized chunk of the user address
 * space (x86-64: 2^25 bytes = 32 MiB of zero BSS; aarch64: 64 MiB; only the
 * bytes covering our own mappings are ever touched).
 * 0: not ours. k > 0: an AethAlloc header lies k-1 chunks below this one. */
#define AETH_SEGMENT_MAP_ENTRIES (1UL << (AETH_USER_ADDRESS_BITS - AETH_SEGMENT_SHIFT))
extern AETH_HIDDEN unsigned char aeth_segment_map[AETH_SEGMENT_MAP_ENTRIES];
static inline unsigned char *aeth_segment_map_ptr(void) { return aeth_segment_map; }

/* ---- errno --------------------------------------------------------------- */
static inline int aeth_errno_get(void) { return errno; }
static inline void aeth_errno_set(int e) { errno = e; }
static inline int aeth_ENOMEM(void) { return ENOMEM; }
static inline int aeth_EINVAL(void) { return EINVAL; }

/* ---- virtual memory ------------------------------------------------------ */
/* Reserve and commit read-write anonymous memory. NULL on failure. */
static inline void *aeth_mmap(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}
static inline int aeth_munmap(void *p, size_t bytes) { return munmap(p, bytes); }
/* Give the physical pages back; the range stays mapped and reads as zero. */
static inline int aeth_purge(void *p, size_t bytes) { return madvise(p, bytes, MADV_DONTNEED); }
static inline int aeth_protect_none(void *p, size_t bytes) { return mprotect(p, bytes, PROT_NONE); }
static inline int aeth_protect_read_write(void *p, size_t bytes) { return mprotect(p, bytes, PROT_READ | PROT_WRITE); }
/* Grow or shrink a mapping in place. NULL if it cannot stay where it is.
 * (Out of line: mremap needs _GNU_SOURCE, which must not leak into a header
 * that Swift modules share with Glibc.) */
void *aeth_mremap_inplace(void *p, size_t old_bytes, size_t new_bytes);
/* Move a mapping to `target` (which we reserved), without copying. */
void *aeth_mremap_to(void *p, size_t old_bytes, size_t new_bytes, void *target);
/* 8 random bytes from the kernel's AT_RANDOM auxiliary vector (no syscall). */
uint64_t aeth_random_word(void);

/* ---- memory tagging (aarch64 MTE; the hardened variant) ------------------------
 * Where the CPU has MTE and the kernel lets the process enable it, the
 * hardened variant maps segments with PROT_MTE and gives every small block a
 * random 4-bit tag (pointer bits 56..59) that its 16-byte granules carry too;
 * a load or store whose pointer tag differs from the memory's faults (SIGSEGV,
 * si_code SEGV_MTESERR in synchronous mode). Elsewhere (x86-64, no MTE) every
 * function below is a stub: aeth_mte_enable fails and nothing else is called.
 *
 * aeth_mte_enable(mode): 1 synchronous, 2 asynchronous checks. Sets the
 *   calling thread's tagged-address control (prctl), which threads created
 *   afterwards inherit. 0 on success, -1 without MTE or when refused.
 * aeth_mte_protect: adds PROT_MTE to a read-write anonymous mapping.
 * aeth_mte_tag_of: the memory tag of the granule at p (ldg).
 * aeth_mte_tag_block: picks a random tag not in `exclude` (a 16-bit mask of
 *   tags; irg), stores it in every granule of [p, p+bytes) and zeroes them
 *   (stzg); returns p with that tag in bits 56..59.
 * aeth_mte_untag_block: the same with tag 0 (zeroes too). */
#define AETH_MTE_TAG_SHIFT 56
/* 0: tagging off; 1 or 2: the mode aeth_mte_enable turned on. */
extern AETH_HIDDEN int aeth_mte_mode;
static inline int aeth_mte_active(void) { return __atomic_load_n(&aeth_mte_mode, __ATOMIC_RELAXED); }
int aeth_mte_enable(int mode);
int aeth_mte_protect(void *p, size_t bytes);
unsigned aeth_mte_tag_of(const void *p);
void *aeth_mte_tag_block(void *p, size_t bytes, uint64_t exclude);
void aeth_mte_untag_block(void *p, size_t bytes);

/* ---- glibc's introspection structs (malloc.h), under our own names --------- */
/* Same layout as glibc's `struct mallinfo2` and `struct mallinfo`: the
 * exported mallinfo2()/mallinfo() return them by value. */
typedef struct {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
} AethMallinfo2;
typedef struct {
    int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
} AethMallinfo;

/* ---- what the allocator asked of the OS ------------------------------------ */
/* Bytes mapped now and at the peak, and bytes given back (munmap, and
 * madvise(MADV_DONTNEED) of committed free memory), counted in every variant
 * by Platform.swift on the slow paths that make those calls. */
typedef struct {
    uint64_t mapped;
    uint64_t peak;
    uint64_t returned;
} aeth_os_counters;
extern AETH_HIDDEN aeth_os_counters aeth_os_counts;
static inline void aeth_count_mapped(size_t n) {
    uint64_t now = __atomic_add_fetch(&aeth_os_counts.mapped, n, __ATOMIC_RELAXED);
    uint64_t peak = __atomic_load_n(&aeth_os_counts.peak, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&aeth_os_counts.peak, &peak, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}
static inline void aeth_count_unmapped(size_t n) {
    __atomic_sub_fetch(&aeth_os_counts.mapped, n, __ATOMIC_RELAXED);
    __atomic_add_fetch(&aeth_os_counts.returned, n, __ATOMIC_RELAXED);
}
static inline void aeth_count_moved_away(size_t n) { __atomic_sub_fetch(&aeth_os_counts.mapped, n, __ATOMIC_RELAXED); }
static inline void aeth_count_purged(size_t n) { __atomic_add_fetch(&aeth_os_counts.returned, n, __ATOMIC_RELAXED); }
static inline uint64_t aeth_counted_mapped(void) { return __atomic_load_n(&aeth_os_counts.mapped, __ATOMIC_RELAXED); }
static inline uint64_t aeth_counted_peak(void) { return __atomic_load_n(&aeth_os_counts.peak, __ATOMIC_RELAXED); }
static inline uint64_t aeth_counted_returned(void) { return __atomic_load_n(&aeth_os_counts.returned, __ATOMIC_RELAXED); }

/* ---- futex --------------------------------------------------------------- */
static inline void aeth_futex_wait(uint32_t *addr, uint32_t expected) {
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}
static inline void aeth_futex_wake_one(uint32_t *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}
/* Waits while *addr == expected, at most `ms` milliseconds. */
void aeth_futex_wait_ms(uint32_t *addr, uint32_t expected, uint64_t ms);
static inline void aeth_yield(void) { sched_yield(); }

/* ---- time ---------------------------------------------------------------- */
/* Monotonic milliseconds from the vDSO's coarse clock: no syscall. */
static inline uint64_t aeth_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- threads and process ------------------------------------------------- */
/* Registers `aeth_thread_exit_hook` as the destructor of a pthread key.
 * pthread_key_create does not allocate. Returns the key or -1. */
int aeth_thread_key_create(void);
/* Attaches `value` to the key so the destructor runs at thread exit. The first
 * 32 keys are stored inline in glibc, so this does not allocate in practice;
 * if it does, the allocation re-enters with the thread cache already set. */
static inline int aeth_thread_key_set(int key, void *value) {
    return pthread_setspecific((pthread_key_t)key, value);
}
/* Starts the background reclaimer: a detached thread with a small stack,
 * every signal blocked (signals stay with the program's threads), named
 * "aethalloc-bg", running aethalloc_background_main. Returns 0 or the
 * pthread_create error (EAGAIN under RLIMIT_NPROC, EPERM under seccomp). */
int aeth_background_thread_start(void);
/* 1 if RLIMIT_AS (ulimit -v) is finite. */
int aeth_address_space_limited(void);
/* Registers the fork handlers (called from the library constructor). */
void aeth_register_atfork(void);

/* ---- environment and output ---------------------------------------------- */
/* getenv does not allocate. */
static inline const char *aeth_getenv(const char *name) { return getenv(name); }
/* The i-th "NAME=value" string of the environment, NULL past the end. */
const char *aeth_environ_entry(size_t i);
/* write(2) of all of buf to fd, retrying on partial writes; 0 or -1. */
int aeth_write_fd(int fd, const void *buf, size_t len);
/* fflush(fp) then fileno(fp) (neither allocates); -1 if fp is not usable. */
int aeth_flush_fileno(void *fp);
/* write(2) to stderr, retrying on partial writes. */
void aeth_write_stderr(const char *buf, size_t len);
_Noreturn void aeth_abort(void);

/* ---- memory primitives ----------------------------------------------------- */
static inline void aeth_memset(void *p, int c, size_t n) { __builtin_memset(p, c, n); }
static inline void aeth_memcpy(void *d, const void *s, size_t n) { __builtin_memcpy(d, s, n); }

/* ---- the statistics file (aethalloc_stats_file.h) -------------------------- */
#include "aethalloc_stats_file.h"
/* Creates <dir>/aethalloc-<pid>.stats, replacing a stale file of that name,
 * sizes it to AETHALLOC_STATS_FILE_BYTES and maps it shared. The path goes
 * into `path` (`cap` bytes). NULL on any failure (nothing is left behind). */
void *aeth_stats_file_create(const char *dir, char *path, size_t cap);
/* Unmaps the file and, with a path, removes it. */
void aeth_stats_file_close(void *map, const char *path);
/* access(dir, W_OK) == 0 and dir is a directory. */
int aeth_dir_is_writable(const char *dir);
static inline int64_t aeth_getpid(void) { return (int64_t)getpid(); }
/* /proc/self/comm without the newline, NUL-terminated, into buf. */
void aeth_read_comm(char *buf, size_t cap);
static inline uint64_t aeth_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- test hooks (read only by the hosted white-box build) ---------------- */
/* Fault plan, per thread: every n-th call of kind k fails (0: never).
 * Kinds are FaultKind in Platform.swift. */
#define AETH_FAULT_KINDS 8
int aeth_fault_should_fail(int kind);
void aeth_fault_set(int kind, uint32_t every);
void aeth_fault_reset(void);
uint64_t aeth_fault_injected(int kind);
/* A process-wide clock override in ms (0: the real clock). */
uint64_t aeth_test_clock_get(void);
void aeth_test_clock_set(uint64_t ms);

/* ---- callbacks implemented in Swift -------------------------------------- */
AETH_HIDDEN void aethalloc_thread_exit(void *cache);
AETH_HIDDEN void aethalloc_fork_prepare(void);
AETH_HIDDEN void aethalloc_fork_parent(void);
AETH_HIDDEN void aethalloc_fork_child(void);
AETH_HIDDEN void aethalloc_process_init(void);
AETH_HIDDEN void aethalloc_process_exit(void);
AETH_HIDDEN void aethalloc_background_main(void);

#endif /* AETH_PLATFORM_H */
