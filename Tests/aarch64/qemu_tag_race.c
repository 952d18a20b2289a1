/* Does the emulator keep memory tags that threads store at once?
 *
 * Four threads tag granules of the same fresh PROT_MTE pages at the same
 * moment (a barrier before each page), then each reads its own tags back.
 * Hardware keeps every tag. qemu 7.2's user mode allocates a page's tag
 * storage on its first tag access without a lock, so when two threads get
 * there together one allocation replaces the other and the tags stored in
 * it are gone: the allocator's tagged multi-threaded runs then die of tag
 * checks that hardware would never fail. Aarch64MTETests runs this on the
 * emulator the suite uses and expects "lost=0".
 *
 * Needs nothing from the allocator: built with -march=armv8.5-a+memtag, run
 * on qemu's `max` CPU. Prints "lost=<n> of <m>"; exit 0 when n is 0, 1 when
 * tags were lost, 2 when MTE is not available. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define THREADS 4
#define PAGES 4096
#define PAGE 4096
#define GRANULE 16
#define PROT_MTE_ 0x20
#define HWCAP2_MTE_ (1UL << 18)

static char *region;
static pthread_barrier_t start_page;
static int lost;

static void store_tag(uintptr_t tagged) {
    __asm__ volatile(".arch_extension memtag\n\tstg %0, [%0]" : : "r"(tagged) : "memory");
}

static unsigned load_tag(uintptr_t address) {
    uintptr_t result = address;
    __asm__ volatile(".arch_extension memtag\n\tldg %0, [%1]" : "+r"(result) : "r"(address) : "memory");
    return (unsigned)(result >> 56) & 15u;
}

static void *tagger(void *arg) {
    uintptr_t index = (uintptr_t)arg;
    uintptr_t tag = index + 1;
    for (int page = 0; page < PAGES; page++) {
        pthread_barrier_wait(&start_page);
        store_tag(((uintptr_t)region + (uintptr_t)page * PAGE + index * GRANULE) | (tag << 56));
    }
    pthread_barrier_wait(&start_page);
    int mine = 0;
    for (int page = 0; page < PAGES; page++) {
        if (load_tag((uintptr_t)region + (uintptr_t)page * PAGE + index * GRANULE) != tag) mine++;
    }
    __atomic_fetch_add(&lost, mine, __ATOMIC_RELAXED);
    return NULL;
}

int main(void) {
    if ((getauxval(AT_HWCAP2) & HWCAP2_MTE_) == 0) { puts("no MTE"); return 2; }
    /* Tagged addresses on, tag checks off: only ldg/stg are used. */
    if (prctl(PR_SET_TAGGED_ADDR_CTRL, PR_TAGGED_ADDR_ENABLE, 0, 0, 0) != 0) { perror("prctl"); return 2; }
    region = mmap(NULL, (size_t)PAGES * PAGE, PROT_READ | PROT_WRITE | PROT_MTE_, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) { perror("mmap"); return 2; }
    pthread_barrier_init(&start_page, NULL, THREADS);
    pthread_t threads[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, tagger, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    printf("lost=%d of %d\n", lost, THREADS * PAGES);
    return lost == 0 ? 0 : 1;
}
