/* misuse.c: deliberate misuse that AethAlloc detects. Run as
 *   misuse <case>
 * Each case prints the pointer it misuses as "ptr=0x..." on stdout (flushed),
 * then commits the misuse. Under AethAlloc the process must die by SIGABRT
 * with one line on stderr naming the pointer and the misuse; the test
 * harness checks both. Reaching the end prints "survived" and exits 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <malloc.h>

/* The misuse is the point; keep the compiler quiet about it. */
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* Where a block's address goes so that the compiler keeps a malloc/free
 * pair it could otherwise drop. */
static void *volatile sink;

static void show(void *p) {
    printf("ptr=%p\n", p);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: misuse CASE\n"); return 2; }
    const char *c = argv[1];
    if (!strcmp(c, "foreign")) {
        /* Memory the allocator never mapped. */
        char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        show(m + 64);
        free(m + 64);
    } else if (!strcmp(c, "stack")) {
        char local[64];
        show(local);
        free(local);
    } else if (!strcmp(c, "misaligned")) {
        char *p = malloc(64);
        show(p + 8);
        free(p + 8);
    } else if (!strcmp(c, "large-interior")) {
        char *p = malloc(4 << 20);
        show(p + 4096);
        free(p + 4096);
    } else if (!strcmp(c, "medium-interior")) {
        /* A medium block (64 KiB .. 1 MiB) is a run of 64 KiB slices; a
         * pointer into its second slice must not pass for its start. */
        char *p = malloc(200000);
        show(p + 65536);
        free(p + 65536);
    } else if (!strcmp(c, "large-double-free")) {
        char *p = malloc(4 << 20);
        free(p);
        show(p);
        free(p);
    } else if (!strcmp(c, "medium-double-free")) {
        /* With 40 MB of medium blocks live, the medium cache keeps the
         * freed block whole (its limit is half the dirty budget) once the
         * program has shown that it asks for the same size again (the
         * cache admits 1 freed block in 32 until 1 in 4 kept ones is
         * taken again, judged every 32 kept); nothing is allocated between
         * the two frees. */
        for (int i = 0; i < 40; i++) {
            char *keep = malloc(1 << 20);
            keep[0] = 1;
        }
        for (int i = 0; i < 1100; i++) {
            sink = malloc(300000);
            free(sink);
        }
        char *p = malloc(300000);
        show(p);
        free(p);
        free(p);
    } else if (!strcmp(c, "medium-double-free-uncached")) {
        /* A heap too small for the cache to keep it: its slices are free. */
        char *p = malloc(300000);
        show(p);
        free(p);
        free(p);
    } else if (!strcmp(c, "large-realloc-after-free")) {
        char *p = malloc(4 << 20);
        free(p);
        show(p);
        p = realloc(p, 8 << 20);
    } else if (!strcmp(c, "small-double-free")) {
        char *p = malloc(64);
        free(p);
        show(p);
        free(p);
    } else if (!strcmp(c, "small-double-free-trim")) {
        /* Caught when the blocks go back to their page (malloc_trim hands
         * them back); a second block keeps the page in use. */
        char *keep = malloc(64);
        sink = keep;
        char *p = malloc(64);
        free(p);
        show(p);
        free(p);
        malloc_trim(0);
    } else if (!strcmp(c, "small-double-free-apart")) {
        /* The same, with a block of another bitmap word of the same page
         * freed between the two frees: the page gathers a run's bits a
         * word at a time (Central.drain), so the second free of p meets
         * its first in the page's word, not in the run's. */
        char *b[256];
        for (int i = 0; i < 256; i++) b[i] = malloc(64);
        char *p = b[0], *q = NULL;
        for (int i = 1; i < 256 && !q; i++)
            if (b[i] - p >= 64 * 64 && b[i] - p < 2 * 64 * 64) q = b[i];
        if (!q) { fprintf(stderr, "no block a bitmap word away\n"); return 4; }
        free(p);
        free(q);
        show(p);
        free(p);
        malloc_trim(0);
    } else if (!strcmp(c, "small-interior-trim")) {
        char *keep = malloc(64);
        sink = keep;
        char *p = malloc(64);
        show(p + 16);
        free(p + 16);
        malloc_trim(0);
    } else if (!strcmp(c, "small-interior")) {
        char *p = malloc(64);
        show(p + 16);
        free(p + 16);
    } else if (!strcmp(c, "small-realloc-after-free")) {
        char *p = malloc(64);
        free(p);
        show(p);
        p = realloc(p, 100);
    } else if (!strcmp(c, "usable-size-foreign")) {
        char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        show(m);
        printf("%zu\n", malloc_usable_size(m));
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    printf("survived\n");
    return 3;
}
