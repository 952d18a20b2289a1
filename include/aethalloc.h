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

#ifdef __cplusplus
extern "C" {
#endif

/* The name of the variant this library was built as: "magazine" for
 * libaethalloc.so. The string is static; do not free it. */
const char *aethalloc_variant(void);

/* C23 sized deallocation, also exported under these names. `size` must be
 * the size that was requested (or any size up to malloc_usable_size). */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* AETHALLOC_H */
