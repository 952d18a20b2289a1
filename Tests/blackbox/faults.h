/*
 * faults.h: make the allocator's OS calls fail, from inside a test program.
 *
 * Including this file defines mmap, munmap, madvise, mprotect and mremap in
 * the program itself. Compiled with -rdynamic (the test harness does), the
 * program's definitions come first in the dynamic symbol lookup, so the
 * preloaded allocator's calls land here; glibc's own internal calls (thread
 * stacks, stdio) do not, so only the allocator and the program see faults.
 * Each call goes to the kernel with syscall(2) unless the plan says it fails,
 * in which case it returns the documented failure (MAP_FAILED or -1) with
 * errno ENOMEM (EINVAL for madvise, as on locked pages).
 *
 * The plan, per kind, process-wide (atomics; the counters are shared by all
 * threads): fault_every[k] = N makes every N-th call of kind k fail (0:
 * none, 1: all). fault_calls[k] and fault_failed[k] count what happened.
 */
#ifndef AETH_TEST_FAULTS_H
#define AETH_TEST_FAULTS_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

enum fault_kind { F_MMAP, F_MUNMAP, F_MADVISE, F_MPROTECT, F_MREMAP, F_KINDS };
static unsigned long fault_every[F_KINDS];
/* The next fault_next[k] calls of kind k fail, whatever fault_every says. */
static unsigned long fault_next[F_KINDS];
static unsigned long fault_calls[F_KINDS];
static unsigned long fault_failed[F_KINDS];
/* Calls the kernel itself refused (e.g. madvise on locked pages). */
static unsigned long fault_os_failed[F_KINDS];

static long fault_os_result(int k, long r) {
    if (r == -1) __atomic_add_fetch(&fault_os_failed[k], 1, __ATOMIC_RELAXED);
    return r;
}

/* True if this call of kind k is to fail (and counts it). */
static int fault_now(int k) {
    unsigned long every = __atomic_load_n(&fault_every[k], __ATOMIC_RELAXED);
    unsigned long n = __atomic_add_fetch(&fault_calls[k], 1, __ATOMIC_RELAXED);
    unsigned long next = __atomic_load_n(&fault_next[k], __ATOMIC_RELAXED);
    int forced = next > 0 && __atomic_compare_exchange_n(&fault_next[k], &next, next - 1, 0, __ATOMIC_RELAXED,
                                                          __ATOMIC_RELAXED);
    if (!forced && (every == 0 || n % every != 0)) return 0;
    __atomic_add_fetch(&fault_failed[k], 1, __ATOMIC_RELAXED);
    return 1;
}

/* Every kind fails every n-th call (0: faults off). */
static void fault_set_all(unsigned long n) {
    for (int k = 0; k < F_KINDS; k++) __atomic_store_n(&fault_every[k], n, __ATOMIC_RELAXED);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (fault_now(F_MMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    long r = fault_os_result(F_MMAP, syscall(SYS_mmap, addr, len, prot, flags, fd, off));
    return r == -1 ? MAP_FAILED : (void *)r;
}

int munmap(void *addr, size_t len) {
    if (fault_now(F_MUNMAP)) {
        errno = ENOMEM;
        return -1;
    }
    return (int)fault_os_result(F_MUNMAP, syscall(SYS_munmap, addr, len));
}

int madvise(void *addr, size_t len, int advice) {
    if (fault_now(F_MADVISE)) {
        errno = EINVAL;
        return -1;
    }
    return (int)fault_os_result(F_MADVISE, syscall(SYS_madvise, addr, len, advice));
}

int mprotect(void *addr, size_t len, int prot) {
    if (fault_now(F_MPROTECT)) {
        errno = ENOMEM;
        return -1;
    }
    return (int)fault_os_result(F_MPROTECT, syscall(SYS_mprotect, addr, len, prot));
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...) {
    void *target = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        target = va_arg(ap, void *);
        va_end(ap);
    }
    if (fault_now(F_MREMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    long r = fault_os_result(F_MREMAP, syscall(SYS_mremap, old, old_len, new_len, flags, target));
    return r == -1 ? MAP_FAILED : (void *)r;
}

#endif
