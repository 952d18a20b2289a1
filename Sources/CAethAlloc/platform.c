/* platform.c: the out-of-line half of aeth_platform.h. See the header. */
#define _GNU_SOURCE 1
#include <sys/mman.h>
#include "aeth_platform.h"

const unsigned char aeth_empty_cache[AETH_EMPTY_CACHE_BYTES] __attribute__((aligned(64)));
__thread void *aeth_tls_cache __attribute__((tls_model("initial-exec"))) = (void *)aeth_empty_cache;
__thread uintptr_t aeth_tls_state __attribute__((tls_model("initial-exec")));

unsigned char aeth_segment_map[AETH_SEGMENT_MAP_ENTRIES] __attribute__((aligned(4096)));
unsigned char aeth_root_storage[AETH_ROOT_BYTES] __attribute__((aligned(4096)));

static void aeth_thread_exit_hook(void *cache) { aethalloc_thread_exit(cache); }

int aeth_thread_key_create(void) {
    pthread_key_t key;
    if (pthread_key_create(&key, aeth_thread_exit_hook) != 0) return -1;
    return (int)key;
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
