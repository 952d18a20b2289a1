// Exports.swift: the C API. Each function is exported under an
// `aethalloc_` name; Package.swift binds the libc names to them at link time
// (--defsym) and variants/exports.map exports exactly those names.
import CAethAlloc

@c(aethalloc_malloc)
public func aethalloc_malloc(_ size: UInt) -> UnsafeMutableRawPointer? {
    Allocator.allocate(size)
}

@c(aethalloc_free)
public func aethalloc_free(_ p: UnsafeMutableRawPointer?) {
    Allocator.deallocate(p)
}

@c(aethalloc_free_sized)
public func aethalloc_free_sized(_ p: UnsafeMutableRawPointer?, _ size: UInt) {
    Allocator.deallocate(p)
}

@c(aethalloc_free_aligned_sized)
public func aethalloc_free_aligned_sized(_ p: UnsafeMutableRawPointer?, _ alignment: UInt, _ size: UInt) {
    Allocator.deallocate(p)
}

@c(aethalloc_calloc)
public func aethalloc_calloc(_ count: UInt, _ size: UInt) -> UnsafeMutableRawPointer? {
    Allocator.allocateZeroed(count: count, size: size)
}

@c(aethalloc_realloc)
public func aethalloc_realloc(_ p: UnsafeMutableRawPointer?, _ size: UInt) -> UnsafeMutableRawPointer? {
    Allocator.reallocate(p, size)
}

@c(aethalloc_reallocarray)
public func aethalloc_reallocarray(_ p: UnsafeMutableRawPointer?, _ count: UInt, _ size: UInt) -> UnsafeMutableRawPointer? {
    Allocator.reallocateArray(p, count: count, size: size)
}

/// C11: NULL + EINVAL unless `alignment` is a power of two.
@c(aethalloc_aligned_alloc)
public func aethalloc_aligned_alloc(_ alignment: UInt, _ size: UInt) -> UnsafeMutableRawPointer? {
    if alignment == 0 || alignment & (alignment &- 1) != 0 {
        OS.errno = OS.EINVAL
        return nil
    }
    return Allocator.allocateAligned(alignment, size)
}

/// POSIX: EINVAL, with `*memptr` untouched, unless `alignment` is a power of
/// two and a multiple of sizeof(void *).
@c(aethalloc_posix_memalign)
public func aethalloc_posix_memalign(
    _ memptr: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ alignment: UInt, _ size: UInt
) -> Int32 {
    if alignment < 8 || alignment & (alignment &- 1) != 0 { return OS.EINVAL }
    let saved = OS.errno
    guard let p = Allocator.allocateAligned(alignment, size) else {
        OS.errno = saved
        return OS.ENOMEM
    }
    memptr?.pointee = p
    return 0
}

/// glibc: a non-power-of-two alignment is rounded up to the next power of two.
@c(aethalloc_memalign)
public func aethalloc_memalign(_ alignment: UInt, _ size: UInt) -> UnsafeMutableRawPointer? {
    var a = alignment
    if a > Allocator.maxRequest / 2 + 1 {
        OS.errno = OS.EINVAL
        return nil
    }
    if a & (a &- 1) != 0 { a = UInt(1) << UInt(UInt.bitWidth - a.leadingZeroBitCount) }
    return Allocator.allocateAligned(a, size)
}

@c(aethalloc_valloc)
public func aethalloc_valloc(_ size: UInt) -> UnsafeMutableRawPointer? {
    Allocator.allocateAligned(UInt(OS.pageBytes), size)
}

/// glibc: the size is rounded up to whole pages (pvalloc(0) is one page).
@c(aethalloc_pvalloc)
public func aethalloc_pvalloc(_ size: UInt) -> UnsafeMutableRawPointer? {
    let page = UInt(OS.pageBytes)
    if size > Allocator.maxRequest - page {
        OS.errno = OS.ENOMEM
        return nil
    }
    let rounded = size == 0 ? page : (size + page - 1) & ~(page - 1)
    return Allocator.allocateAligned(page, rounded)
}

@c(aethalloc_malloc_usable_size)
public func aethalloc_malloc_usable_size(_ p: UnsafeMutableRawPointer?) -> UInt {
    Allocator.usableSize(p)
}

/// Returns 1 if memory went back to the OS, else 0. `pad` is ignored.
@c(aethalloc_malloc_trim)
public func aethalloc_malloc_trim(_ pad: UInt) -> Int32 {
    let saved = OS.errno
    let released = Reclaimer.trim()
    OS.errno = saved
    return released ? 1 : 0
}

/// The variant's name ("magazine", ...): a static string.
@c(aethalloc_variant)
public func aethalloc_variant() -> UnsafePointer<CChar> {
    UnsafeRawPointer(Variant.name.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// The seed's five counters (zeros unless this is the metrics variant).
@c(aethalloc_get_metrics)
public func aethalloc_get_metrics() -> aethalloc_metrics {
    let m = MetricsSnapshot.take()
    return aethalloc_metrics(
        allocs: m.allocs, frees: m.frees, cache_hits: m.cacheHits, cache_misses: m.cacheMisses,
        direct_allocs: m.directAllocs)
}

/// The versioned extended snapshot; see include/aethalloc.h.
@c(aethalloc_get_metrics_ext)
public func aethalloc_get_metrics_ext(_ out: UnsafeMutablePointer<aethalloc_metrics_ext>?) -> Int32 {
    guard let out else { return -1 }
    let header = 16
    let callerBytes = Int(out.pointee.size)
    if callerBytes < header { return -1 }
    var full = MetricsSnapshot.take().asExt()
    let n = min(callerBytes, MemoryLayout<aethalloc_metrics_ext>.size)
    full.size = UInt32(n)
    withUnsafeBytes(of: &full) { OS.copy(out, $0.baseAddress!, bytes: n) }
    return 0
}

// ---- glibc's introspection API (Introspection.swift) ---------------------------

@c(aethalloc_mallinfo2)
public func aethalloc_mallinfo2() -> AethMallinfo2 {
    let saved = OS.errno
    defer { OS.errno = saved }
    return HeapFigures.take().mallinfo2
}

/// The old `struct mallinfo`: the same figures, each saturating at INT_MAX
/// as glibc's do.
@c(aethalloc_mallinfo)
public func aethalloc_mallinfo() -> AethMallinfo {
    let m = aethalloc_mallinfo2()
    func clamp(_ v: Int) -> Int32 { Int32(min(max(v, 0), Int(Int32.max))) }
    return AethMallinfo(
        arena: clamp(m.arena), ordblks: clamp(m.ordblks), smblks: clamp(m.smblks), hblks: clamp(m.hblks),
        hblkhd: clamp(m.hblkhd), usmblks: clamp(m.usmblks), fsmblks: clamp(m.fsmblks), uordblks: clamp(m.uordblks),
        fordblks: clamp(m.fordblks), keepcost: clamp(m.keepcost))
}

@c(aethalloc_malloc_stats)
public func aethalloc_malloc_stats() {
    let saved = OS.errno
    HeapReport.printStats()
    OS.errno = saved
}

/// 0 on success; EINVAL (returned, errno set) for options other than 0, as
/// glibc; -1 with errno from write(2) if the stream cannot be written.
@c(aethalloc_malloc_info)
public func aethalloc_malloc_info(_ options: Int32, _ stream: UnsafeMutableRawPointer?) -> Int32 {
    if options != 0 {
        OS.errno = OS.EINVAL
        return -1
    }
    guard let fd = OS.flushAndDescriptor(of: stream) else {
        OS.errno = OS.EINVAL
        return -1
    }
    return HeapReport.writeInfo(to: fd) ? 0 : -1
}

@c(aethalloc_mallopt)
public func aethalloc_mallopt(_ param: Int32, _ value: Int32) -> Int32 {
    MallocOption.set(param, value)
}
