/* platform.c: the out-of-line half of aeth_platform.h. See the header. */
#define _GNU_SOURCE 1
#include <sys/mman.h>
#include "aeth_platform.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/auxv.h>
#include <stdio.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>

extern char **environ;

const unsigned char aeth_empty_cache[AETH_EMPTY_CACHE_BYTES] __attribute__((aligned(64)));
__thread void *aeth_tls_cache __attribute__((tls_model("initial-exec"))) = (void *)aeth_empty_cache;
__thread uintptr_t aeth_tls_state __attribute__((tls_model("initial-exec")));

unsigned char aeth_segment_map[AETH_SEGMENT_MAP_ENTRIES] __attribute__((aligned(4096)));
size_t aeth_page_bytes_cache;

size_t aeth_page_bytes_load(void) {
    size_t p = (size_t)getauxval(AT_PAGESZ);
    if (p == 0) p = (size_t)sysconf(_SC_PAGESIZE);
    __atomic_store_n(&aeth_page_bytes_cache, p, __ATOMIC_RELAXED);
    return p;
}
aeth_os_counters aeth_os_counts;
unsigned char aeth_root_storage[AETH_ROOT_BYTES] __attribute__((aligned(4096)));

static void aeth_thread_exit_hook(void *cache) { aethalloc_thread_exit(cache); }

int aeth_thread_key_create(void) {
    pthread_key_t key;
    if (pthread_key_create(&key, aeth_thread_exit_hook) != 0) return -1;
    return (int)key;
}

static void *aeth_background_entry(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "aethalloc-bg", 0, 0, 0);
    aethalloc_background_main();
    return NULL;
}

int aeth_background_thread_start(void) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return EAGAIN;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int e = pthread_create(&t, &attr, aeth_background_entry, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return e;
}

int aeth_address_space_limited(void) {
    struct rlimit r;
    return getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY;
}

void aeth_futex_wait_ms(uint32_t *addr, uint32_t expected, uint64_t ms) {
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, &ts, NULL, 0);
}

void aeth_register_atfork(void) {
    pthread_atfork(aethalloc_fork_prepare, aethalloc_fork_parent, aethalloc_fork_child);
}

void aeth_write_stderr(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(2, buf, len);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

_Noreturn void aeth_abort(void) { abort(); }

const char *aeth_environ_entry(size_t i) {
    char **env = environ;
    if (!env) return NULL;
    for (size_t k = 0; k < i; k++)
        if (!env[k]) return NULL;
    return env[i];
}

int aeth_write_fd(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int aeth_flush_fileno(void *fp) {
    if (!fp) return -1;
    fflush((FILE *)fp);
    return fileno((FILE *)fp);
}

/* Runs after libc is initialised and before main: the place for work that may
 * itself call malloc (pthread_atfork). Lazy init on the first malloc covers
 * everything that happens earlier. */
__attribute__((constructor)) static void aeth_constructor(void) { aethalloc_process_init(); }

/* Runs at exit from .fini_array, not through atexit (which may allocate
 * under a libc lock). Prints the AETHALLOC_STATS=1 summary. */
__attribute__((destructor)) static void aeth_destructor(void) { aethalloc_process_exit(); }

void *aeth_mremap_inplace(void *p, size_t old_bytes, size_t new_bytes) {
    void *q = mremap(p, old_bytes, new_bytes, 0);
    return q == MAP_FAILED ? NULL : q;
}

void *aeth_mremap_to(void *p, size_t old_bytes, size_t new_bytes, void *target) {
    void *q = mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    return q == MAP_FAILED ? NULL : q;
}

/* Appends the decimal digits of v to buf at *len (no allocation, no stdio). */
static void aeth_append_decimal(char *buf, size_t cap, size_t *len, int64_t v) {
    char digits[24];
    int n = 0;
    uint64_t x = v < 0 ? (uint64_t)(-v) : (uint64_t)v;
    do { digits[n++] = (char)('0' + x % 10); x /= 10; } while (x && n < 24);
    if (v < 0 && *len + 1 < cap) buf[(*len)++] = '-';
    while (n > 0 && *len + 1 < cap) buf[(*len)++] = digits[--n];
    buf[*len] = 0;
}

static void aeth_append(char *buf, size_t cap, size_t *len, const char *s) {
    while (*s && *len + 1 < cap) buf[(*len)++] = *s++;
    buf[*len] = 0;
}

void *aeth_stats_file_create(const char *dir, char *path, size_t cap) {
    size_t len = 0;
    if (cap < 2) return NULL;
    path[0] = 0;
    aeth_append(path, cap, &len, dir);
    aeth_append(path, cap, &len, "/aethalloc-");
    aeth_append_decimal(path, cap, &len, (int64_t)getpid());
    aeth_append(path, cap, &len, ".stats");
    if (len + 1 >= cap) return NULL;
    int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(path, flags, 0644);
    if (fd < 0 && errno == EEXIST) {
        /* A file left by a dead process whose pid we now have. */
        unlink(path);
        fd = open(path, flags, 0644);
    }
    if (fd < 0) return NULL;
    if (ftruncate(fd, AETHALLOC_STATS_FILE_BYTES) != 0) {
        close(fd);
        unlink(path);
        return NULL;
    }
    void *map = mmap(NULL, AETHALLOC_STATS_FILE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        unlink(path);
        return NULL;
    }
    return map;
}

void aeth_stats_file_close(void *map, const char *path) {
    if (map) munmap(map, AETHALLOC_STATS_FILE_BYTES);
    if (path && path[0]) unlink(path);
}

int aeth_dir_is_writable(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    return access(dir, W_OK) == 0;
}

void aeth_read_comm(char *buf, size_t cap) {
    if (cap == 0) return;
    buf[0] = 0;
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0) { buf[0] = 0; return; }
    if (buf[n - 1] == '\n') n--;
    buf[n] = 0;
}

uint64_t aeth_random_word(void) {
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    uint64_t v = 0;
    if (r) __builtin_memcpy(&v, r + 8, sizeof v);
    if (v == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
    }
    return v;
}

/* ---- test hooks ------------------------------------------------------------
 * Only the hosted white-box build calls these (Variant.injectsFaults); the
 * Embedded variants compile the calls out, and the linker script keeps the
 * symbols local. */
static __thread uint32_t aeth_fault_every[AETH_FAULT_KINDS] __attribute__((tls_model("initial-exec")));
static __thread uint32_t aeth_fault_seen[AETH_FAULT_KINDS] __attribute__((tls_model("initial-exec")));
static __thread uint64_t aeth_fault_failed[AETH_FAULT_KINDS] __attribute__((tls_model("initial-exec")));
static uint64_t aeth_test_clock_ms;

int aeth_fault_should_fail(int kind) {
    if (kind < 0 || kind >= AETH_FAULT_KINDS || aeth_fault_every[kind] == 0) return 0;
    if (++aeth_fault_seen[kind] % aeth_fault_every[kind] != 0) return 0;
    aeth_fault_failed[kind]++;
    return 1;
}

void aeth_fault_set(int kind, uint32_t every) {
    if (kind < 0 || kind >= AETH_FAULT_KINDS) return;
    aeth_fault_every[kind] = every;
    aeth_fault_seen[kind] = 0;
}

void aeth_fault_reset(void) {
    for (int k = 0; k < AETH_FAULT_KINDS; k++) {
        aeth_fault_every[k] = 0;
        aeth_fault_seen[k] = 0;
        aeth_fault_failed[k] = 0;
    }
}

uint64_t aeth_fault_injected(int kind) {
    return (kind < 0 || kind >= AETH_FAULT_KINDS) ? 0 : aeth_fault_failed[kind];
}

uint64_t aeth_test_clock_get(void) { return __atomic_load_n(&aeth_test_clock_ms, __ATOMIC_RELAXED); }
void aeth_test_clock_set(uint64_t ms) { __atomic_store_n(&aeth_test_clock_ms, ms, __ATOMIC_RELAXED); }

/* ---- memory tagging (see the header) ---------------------------------------- */
int aeth_mte_mode;
#if defined(__aarch64__)
/* Values from the kernel's uapi headers (Documentation/arch/arm64/
 * memory-tagging-extension.rst), spelled out so older headers build too. */
#define AETH_HWCAP2_MTE (1UL << 18)
#define AETH_PROT_MTE 0x20
#define AETH_PR_SET_TAGGED_ADDR_CTRL 55
#define AETH_PR_TAGGED_ADDR_ENABLE (1UL << 0)
#define AETH_PR_MTE_TCF_SYNC (1UL << 1)
#define AETH_PR_MTE_TCF_ASYNC (1UL << 2)
#define AETH_PR_MTE_TAG_SHIFT 3
/* Only these functions use MTE instructions; the rest stays ARMv8.0. */
#define AETH_MEMTAG __attribute__((target("arch=armv8.5-a+memtag")))

int aeth_mte_enable(int mode) {
    if ((getauxval(AT_HWCAP2) & AETH_HWCAP2_MTE) == 0) return -1;
    unsigned long tcf = mode == 2 ? AETH_PR_MTE_TCF_ASYNC : AETH_PR_MTE_TCF_SYNC;
    /* irg may pick any tag but 0 (0xfffe: tags 1..15 allowed). */
    unsigned long ctrl = AETH_PR_TAGGED_ADDR_ENABLE | tcf | (0xfffeUL << AETH_PR_MTE_TAG_SHIFT);
    if (prctl(AETH_PR_SET_TAGGED_ADDR_CTRL, ctrl, 0, 0, 0) != 0) return -1;
    __atomic_store_n(&aeth_mte_mode, mode == 2 ? 2 : 1, __ATOMIC_RELAXED);
    return 0;
}

int aeth_mte_protect(void *p, size_t bytes) { return mprotect(p, bytes, PROT_READ | PROT_WRITE | AETH_PROT_MTE); }

AETH_MEMTAG unsigned aeth_mte_tag_of(const void *p) {
    uintptr_t q = (uintptr_t)p;
    __asm__ volatile("ldg %0, [%0]" : "+r"(q) : : "memory");
    return (unsigned)(q >> AETH_MTE_TAG_SHIFT) & 15u;
}

AETH_MEMTAG static void aeth_mte_store_zero(uintptr_t tagged, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 16) {
        __asm__ volatile("stzg %0, [%0]" : : "r"(tagged + off) : "memory");
    }
}

AETH_MEMTAG void *aeth_mte_tag_block(void *p, size_t bytes, uint64_t exclude) {
    uintptr_t tagged;
    __asm__ volatile("irg %0, %1, %2" : "=r"(tagged) : "r"(p), "r"(exclude));
    aeth_mte_store_zero(tagged, bytes);
    return (void *)tagged;
}

void aeth_mte_untag_block(void *p, size_t bytes) {
    aeth_mte_store_zero((uintptr_t)p & ~(15UL << AETH_MTE_TAG_SHIFT), bytes);
}
#else
int aeth_mte_enable(int mode) { (void)mode; return -1; }
int aeth_mte_protect(void *p, size_t bytes) { (void)p; (void)bytes; return -1; }
unsigned aeth_mte_tag_of(const void *p) { (void)p; return 0; }
void *aeth_mte_tag_block(void *p, size_t bytes, uint64_t exclude) { (void)bytes; (void)exclude; return p; }
void aeth_mte_untag_block(void *p, size_t bytes) { (void)p; (void)bytes; }
#endif
