// Large.swift: allocations above the largest size class, straight from mmap.
//
// Each large block is its own mapping, aligned to 4 MiB (or to the requested
// alignment if larger), laid out like a segment's first bytes so `free`
// recognises it from one byte:
//
//   base +0    sliceClass[64], all SizeClass.markLarge
//   base +128  LargeHeader
//   base + userOffset   the block (userOffset = max(256, alignment))
//
// The segment map marks the chunk holding the block with the distance back
// to `base`. Freed spans up to `Tuning.largeCacheMaxSpanBytes` are kept in a
// small cache, so alternating large malloc/free costs no syscall and no page
// fault: a request takes the smallest cached span that fits and cuts it at
// the first chunk boundary past what it needs; the rest becomes a cached span
// where it is. A freed span merges with the cached spans right before and
// after it in memory. A request no cached span fits is assembled from cached
// spans moved (mremap) into one new mapping. When spans go back to the OS
// (their decay, the cache's limit) is Reclaim.swift's to say; malloc_trim
// unmaps them all, after the cache's lock is released (`unlock`).
// `realloc` grows in place with mremap, or moves the pages with mremap, and
// copies only a block mremap cannot take as one mapping (assembled, or with
// hardened guard pages).
import CAethAlloc
import Synchronization

struct LargeHeader {
    var kind: UInt32
    /// 1 while the program owns the block, 0 while the span is cached.
    var inUse: UInt32
    var mappedBytes: Int
    var userOffset: Int
    /// Alignment of `base`: 4 MiB or the requested alignment if larger.
    var baseAlignment: Int
    var idleSinceMs: UInt64
    /// The size the program last asked for (realloc trims the mapping only
    /// when the block shrinks below it).
    var requested: Int
    /// Whether the span lies within one mapping (VMA). A span assembled from
    /// cached ones is several, which mremap cannot move or grow as a whole:
    /// realloc copies such a block, and a growing block never reuses one.
    var singleMapping: Bool
    /// The start of the mmap the span was cut from: two adjacent spans of
    /// the same origin merge into one that is still a single mapping.
    var origin: UInt
    /// The next span on `LargeCache.toUnmap`.
    var nextToUnmap: RawPointer?
}

struct LargeCacheEntry {
    var base: RawPointer?
    var mappedBytes: Int
    var baseAlignment: Int
    var idleSinceMs: UInt64
}

/// The cache of freed large spans. Invariants (under `lock`): entries
/// 0..<count are occupied; `totalBytes` is the sum of their sizes; spans
/// leaving for the OS wait on `toUnmap` (linked through their headers) and
/// are unmapped once the lock is released (`Large.unlock`), so no thread
/// waits for the lock through a munmap.
struct LargeCache: ~Copyable {
    var count: Int
    var totalBytes: Int
    var lastDecayMs: UInt64
    var toUnmap: RawPointer?

    @inline(__always) static var entriesOffset: Int { Layout.after(0, MemoryLayout<LargeCache>.size) }
    @inline(__always) static var bytes: Int { entriesOffset + MemoryLayout<LargeCacheEntry>.stride * Tuning.largeCacheEntries }
    static var lockWord: UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.largeCacheLock)
    }
    static var entries: UnsafeMutablePointer<LargeCacheEntry> {
        (RawPointer(Globals.largeCache) + entriesOffset).assumingMemoryBound(to: LargeCacheEntry.self)
    }
}

enum Large {
    static let headerOffset = 128

    @inline(__always)
    static func header(_ base: RawPointer) -> UnsafeMutablePointer<LargeHeader> {
        (base + headerOffset).assumingMemoryBound(to: LargeHeader.self)
    }

    /// Mapping size for `size` bytes at `userOffset`, or nil on overflow.
    static func mappedBytes(size: Int, userOffset: Int) -> Int? {
        let (total, o1) = size.addingReportingOverflow(userOffset + OS.pageBytes - 1)
        if o1 || total > Int.max / 2 { return nil }
        return total & ~(OS.pageBytes - 1)
    }

    /// A large block of `size` bytes aligned to `alignment` (power of two).
    /// With `zeroed`, its first `size` bytes read as zero. With `growing`
    /// (realloc moving a block that grows), a reused span keeps up to
    /// `largeGrowingSlackFactor` times what is needed, to grow into in place.
    static func allocate(size: Int, alignment: Int, zeroed: Bool, growing: Bool = false) -> RawPointer? {
        let userOffset = Hardening.largeUserOffset(alignment: alignment)
        // At least one byte: a zero-size block with a large alignment would
        // otherwise start exactly at the end of its own mapping.
        guard var needed = mappedBytes(size: max(size, 1), userOffset: userOffset) else { return nil }
        needed += Hardening.largeTrailingGuardBytes
        let baseAlignment = max(Tuning.segmentBytes, alignment)
        if userOffset >> Tuning.segmentShift > 200 { return nil }  // alignment beyond 800 MiB
        var base: RawPointer? = nil
        var mapped = needed
        // A cached span reused whole: its marks are in place, its guards too.
        var reused = false
        var single = true
        var origin: UInt = 0
        // Bytes from the mapping's start that may hold an earlier owner's data.
        var dirty = 0
        Lock.acquire(LargeCache.lockWord)
        if let (b, bytes) = takeCached(needed: needed, baseAlignment: baseAlignment, singleMappingOnly: growing) {
            base = b
            mapped = bytes
            reused = true
            dirty = bytes
            // The old block's chunk may differ from the new one's.
            let old = header(b).pointee
            Segment.mapClear(b + old.userOffset)
            single = old.singleMapping
            origin = old.origin
            let keepsSlack = growing && mapped / Tuning.largeGrowingSlackFactor <= needed
            if mapped - needed >= Tuning.largeReuseSlackBytes && !keepsSlack {
                // Larger than asked: cut at the first chunk boundary past
                // `needed`, and the rest becomes a cached span where it is
                // (no syscall). The block keeps the pages up to the cut,
                // less than a chunk, with what the span's last owner wrote
                // there: purging them made big_churn fault 10 times as often
                // (521,415 faults against 50,584) for 10% less peak RSS.
                let cut = min(mapped, (needed + Tuning.segmentBytes - 1) & ~(Tuning.segmentBytes - 1))
                if mapped - cut >= Tuning.largeReuseSlackBytes {
                    splitOff(b + cut, bytes: mapped - cut, singleMapping: single, origin: origin)
                    mapped = cut
                }
                dirty = needed
            }
        } else if !growing && baseAlignment == Tuning.segmentBytes && cacheHasSpanBelow(needed) {
            // No cached span is large enough: the new mapping is assembled
            // from cached ones, whose pages move without a fault, and only
            // the rest is faulted in (big-block churn). Not for a block
            // realloc is growing: it is to grow with mremap.
            if let b = OS.mapAligned(bytes: needed, alignment: baseAlignment) {
                base = b
                origin = UInt(bitPattern: b)
                dirty = assemble(into: b, bytes: needed)
                single = dirty == 0
                // The moved pages were counted when first mapped.
                Stats.largeMapped(bytes: needed - dirty)
            }
        }
        decay()
        unlock()
        if base == nil {
            base = OS.mapAligned(bytes: needed, alignment: baseAlignment)
            if base == nil {
                // Cached spans may be what stands in the way.
                if releaseCached() > 0 { base = OS.mapAligned(bytes: needed, alignment: baseAlignment) }
                if base == nil { return nil }
            }
            origin = UInt(bitPattern: base!)
            Stats.largeMapped(bytes: needed)
        }
        let b = base!
        if !reused {
            // Hardened: no block without its guards (NULL + ENOMEM instead).
            if !Hardening.protectLarge(b, mapped: mapped, userOffset: userOffset) {
                if OS.unmap(b, bytes: mapped) { Stats.largeUnmapped(bytes: mapped) }
                return nil
            }
            OS.fill(b, byte: SizeClass.markLarge, bytes: 64)
        }
        // Hardened with MTE: the block's pages tagged (or none of it).
        let usable = mapped - userOffset - Hardening.largeTrailingGuardBytes
        guard let handedOut = Hardening.tagLarge(b + userOffset, usable: usable, base: b) else {
            if OS.unmap(b, bytes: mapped) { Stats.largeUnmapped(bytes: mapped) }
            return nil
        }
        header(b).pointee = LargeHeader(
            kind: SegmentHeader.kindLarge, inUse: 1, mappedBytes: mapped, userOffset: userOffset,
            // A growing block's `size` includes realloc's headroom; the
            // program's own size comes with its next realloc.
            baseAlignment: baseAlignment, idleSinceMs: 0, requested: growing ? 0 : size, singleMapping: single,
            origin: origin)
        let user = b + userOffset
        Segment.mapSet(user, headerChunksBack: userOffset >> Tuning.segmentShift)
        Stats.largeAllocated(bytes: usable)
        Globals.largeLiveBytes.pointee.wrappingAdd(mapped, ordering: .relaxed)
        Globals.largeCount.pointee.wrappingAdd(1, ordering: .relaxed)
        if zeroed && dirty > userOffset { OS.zero(handedOut, bytes: min(size, dirty - userOffset)) }
        return handedOut
    }

    /// Frees large block `p` (as the program passed it: tagged, hardened
    /// with MTE) whose mapping starts at `base`.
    static func deallocate(_ p: RawPointer, base: RawPointer) {
        let h = header(base)
        validate(p, base: base, operation: "free")
        // One CAS, so two threads freeing the same block at once cannot both
        // cache or unmap its span: the loser reports the double free.
        let claimed = withUnsafeMutablePointer(to: &h.pointee.inUse) {
            RawPointer($0).assumingMemoryBound(to: Atomic<UInt32>.self).pointee
                .compareExchange(expected: 1, desired: 0, ordering: .acquiringAndReleasing).exchanged
        }
        if !claimed { Diagnostics.invalidPointer(p, operation: "free", reason: "block already freed") }
        Hardening.largeFreed(p, base: base)
        let bytes = h.pointee.mappedBytes
        Stats.largeFreed(bytes: bytes - h.pointee.userOffset - Hardening.largeTrailingGuardBytes)
        Globals.largeLiveBytes.pointee.wrappingSubtract(bytes, ordering: .relaxed)
        Globals.largeCount.pointee.wrappingSubtract(1, ordering: .relaxed)
        if bytes <= Tuning.largeCacheMaxSpanBytes && Hardening.cachesLargeSpans {
            Lock.acquire(LargeCache.lockWord)
            insertCached(base, h)
            decay()
            unlock()
            return
        }
        unmap(base, h)
    }

    /// Usable bytes of large block `p`.
    static func usableSize(_ p: RawPointer, base: RawPointer, operation: StaticString) -> Int {
        validate(p, base: base, operation: operation)
        let h = header(base).pointee
        return h.mappedBytes - h.userOffset - Hardening.largeTrailingGuardBytes
    }

    /// Resizes block `p` to `size` bytes without copying: in place, or by
    /// moving its pages with mremap. Nil if neither works (the caller copies).
    static func reallocate(_ p: RawPointer, base: RawPointer, size: Int) -> RawPointer? {
        validate(p, base: base, operation: "realloc")
        let h = header(base)
        let userOffset = h.pointee.userOffset
        let guardBytes = Hardening.largeTrailingGuardBytes
        guard var needed = mappedBytes(size: size, userOffset: userOffset) else { return nil }
        needed += guardBytes
        let mapped = h.pointee.mappedBytes
        let shrinking = size < h.pointee.requested
        h.pointee.requested = size
        if needed <= mapped {
            // Shrink: give back the tail when at least half would be unused.
            // The new guard page is protected first, so the block is never
            // without one; if the OS refuses, nil makes the caller move the
            // block to a new one of the right size. From then on the block
            // ends at `needed`; should the OS refuse to unmap the tail, its
            // pages are purged and its address range stays mapped, owned by
            // nobody (a leak of address space only).
            if shrinking && mapped - needed >= mapped / 2 && mapped - needed >= Tuning.sliceBytes {
                if !Hardening.protectTrailingGuard(base, mapped: needed) { return nil }
                h.pointee.mappedBytes = needed
                if OS.unmap(base + needed, bytes: mapped - needed) || OS.purge(base + needed, bytes: mapped - needed) {
                    Stats.largeUnmapped(bytes: mapped - needed)
                }
                resized(from: mapped, to: needed)
            }
            return p
        }
        // Growing: leave 25% headroom so a buffer growing in small steps
        // does not make a syscall per step.
        let headroom = mapped / 4
        if needed - mapped < headroom {
            needed = (mapped + headroom + OS.pageBytes - 1) & ~(OS.pageBytes - 1)
        }
        // The hardened variant's guard pages split the mapping into several
        // VMAs, as does assembling a span from cached ones, and mremap works
        // on one: the caller copies instead.
        if !Hardening.remapsLargeBlocks || !h.pointee.singleMapping { return nil }
        if OS.remapInPlace(base, from: mapped, to: needed) {
            h.pointee.mappedBytes = needed
            Stats.largeMapped(bytes: needed - mapped)
            resized(from: mapped, to: needed)
            return p
        }
        let alignment = h.pointee.baseAlignment
        guard let target = OS.mapAligned(bytes: needed, alignment: alignment) else { return nil }
        Segment.mapClear(p)
        if !OS.remap(base, from: mapped, to: needed, at: target) {
            // The block stays where it was; the caller copies.
            Segment.mapSet(p, headerChunksBack: userOffset >> Tuning.segmentShift)
            OS.unmap(target, bytes: needed)
            return nil
        }
        header(target).pointee.mappedBytes = needed
        header(target).pointee.origin = UInt(bitPattern: target)
        Stats.largeMapped(bytes: needed - mapped)
        resized(from: mapped, to: needed)
        let user = target + userOffset
        Segment.mapSet(user, headerChunksBack: userOffset >> Tuning.segmentShift)
        return user
    }

    private static func resized(from old: Int, to new: Int) {
        Stats.largeResized(from: old, to: new)
        Globals.largeLiveBytes.pointee.wrappingAdd(new &- old, ordering: .relaxed)
    }

    /// The background reclaimer's step: unmaps spans idle for longer than
    /// `largeCacheDecayMs`. Returns the milliseconds until the oldest
    /// remaining span is due, nil if none is cached.
    static func reclaim(now: UInt64) -> UInt64? {
        Lock.acquire(LargeCache.lockWord)
        defer { unlock() }
        let cache = Globals.largeCache
        while cache.pointee.count > 0 && now &- LargeCache.entries[0].idleSinceMs >= Tuning.largeCacheDecayMs {
            let e = LargeCache.entries[0]
            removeEntry(0)
            retire(e.base!)
        }
        if cache.pointee.count == 0 { return nil }
        let due = LargeCache.entries[0].idleSinceMs &+ Tuning.largeCacheDecayMs
        return due > now ? due - now : 0
    }

    /// Cached spans and their bytes (mallinfo2, malloc_stats).
    static func cachedFigures() -> (count: Int, bytes: Int) {
        Lock.acquire(LargeCache.lockWord)
        defer { Lock.release(LargeCache.lockWord) }
        return (Globals.largeCache.pointee.count, Globals.largeCache.pointee.totalBytes)
    }

    /// Unmaps every cached span (malloc_trim). Returns the bytes released.
    @discardableResult
    static func releaseCached() -> Int {
        Lock.acquire(LargeCache.lockWord)
        let cache = Globals.largeCache
        var released = 0
        while cache.pointee.count > 0 {
            let e = LargeCache.entries[cache.pointee.count - 1]
            removeEntry(cache.pointee.count - 1)
            released += e.mappedBytes
            retire(e.base!)
        }
        unlock()
        return released
    }

    // ---- internals -------------------------------------------------------------

    /// Aborts unless `p` (tagged or not) is the live block of the mapping at
    /// `base`, and, tagging, unless its tag is the block's.
    @inline(__always)
    private static func validate(_ p: RawPointer, base: RawPointer, operation: StaticString) {
        let h = header(base).pointee
        if h.kind != SegmentHeader.kindLarge || base + h.userOffset != Hardening.stripTag(p) {
            Diagnostics.invalidPointer(p, operation: operation, reason: "not the start of a block")
        }
        if h.inUse != 1 { Diagnostics.invalidPointer(p, operation: operation, reason: "block already freed") }
        if Hardening.tagging { Hardening.checkTag(p, operation: operation) }
    }

    /// Gives a span back to the OS. Should munmap be refused (it splits
    /// nothing here, but a fault plan or a seccomp filter can refuse it), the
    /// pages are purged instead: the address space leaks, the memory does not.
    private static func unmap(_ base: RawPointer, _ h: UnsafeMutablePointer<LargeHeader>) {
        let bytes = h.pointee.mappedBytes
        Segment.mapClear(base + h.pointee.userOffset)
        if OS.unmap(base, bytes: bytes) || OS.purge(base, bytes: bytes) { Stats.largeUnmapped(bytes: bytes) }
    }

    /// Whether a cached span could make up part of a new `needed`-byte
    /// mapping (lock held).
    private static func cacheHasSpanBelow(_ needed: Int) -> Bool {
        for i in 0..<Globals.largeCache.pointee.count where LargeCache.entries[i].mappedBytes < needed { return true }
        return false
    }

    /// Moves cached spans into fresh mapping `target` of `bytes`, largest
    /// first, each whole and only while it fits, so the pages they hold are
    /// reused instead of faulted in again (lock held). Returns the end of the
    /// last span moved: below it the mapping holds old data, above it zeros.
    /// A span mremap refuses is given back to the OS instead.
    private static func assemble(into target: RawPointer, bytes: Int) -> Int {
        let cache = Globals.largeCache
        var offset = 0
        while offset < bytes {
            var pick = -1
            for i in 0..<cache.pointee.count {
                let n = LargeCache.entries[i].mappedBytes
                if n <= bytes - offset && (pick < 0 || n > LargeCache.entries[pick].mappedBytes) { pick = i }
            }
            if pick < 0 { break }
            let e = LargeCache.entries[pick]
            removeEntry(pick)
            let h = header(e.base!)
            Segment.mapClear(e.base! + h.pointee.userOffset)
            if OS.remap(e.base!, from: e.mappedBytes, to: e.mappedBytes, at: target + offset) {
                offset += e.mappedBytes
            } else {
                retire(e.base!)
            }
        }
        return offset
    }

    /// The unused tail of a reused span, starting at a chunk boundary (lock
    /// held): a cached span where it is, with the reused span's mapping
    /// facts.
    private static func splitOff(_ tail: RawPointer, bytes: Int, singleMapping: Bool, origin: UInt) {
        OS.fill(tail, byte: SizeClass.markLarge, bytes: 64)
        let h = header(tail)
        h.pointee = LargeHeader(
            kind: SegmentHeader.kindLarge, inUse: 0, mappedBytes: bytes, userOffset: Tuning.largeHeaderBytes,
            baseAlignment: Tuning.segmentBytes, idleSinceMs: 0, requested: 0, singleMapping: singleMapping, origin: origin)
        insertCached(tail, h)
    }

    /// The smallest cached span that fits (the caller trims a much larger one).
    private static func takeCached(needed: Int, baseAlignment: Int, singleMappingOnly: Bool) -> (RawPointer, Int)? {
        let cache = Globals.largeCache
        var best = -1
        for i in 0..<cache.pointee.count {
            let e = LargeCache.entries[i]
            if e.mappedBytes >= needed && e.baseAlignment >= baseAlignment
                && (!singleMappingOnly || header(e.base!).pointee.singleMapping)
                && (best < 0 || e.mappedBytes < LargeCache.entries[best].mappedBytes)
            {
                best = i
            }
        }
        if best < 0 { return nil }
        let e = LargeCache.entries[best]
        removeEntry(best)
        return (e.base!, e.mappedBytes)
    }

    /// Caches the span at `spanBase` (lock held), merged with the cached
    /// spans that end where it starts and start where it ends: one span, at
    /// the lowest base, newest in decay order. Older spans are evicted to
    /// make room; a span larger than the cache may hold is given back.
    private static func insertCached(_ spanBase: RawPointer, _ spanHeader: UnsafeMutablePointer<LargeHeader>) {
        let cache = Globals.largeCache
        var base = spanBase
        var h = spanHeader
        var i = 0
        while i < cache.pointee.count {
            let e = LargeCache.entries[i]
            let other = header(e.base!)
            let before = e.base! + e.mappedBytes == base
            let after = base + h.pointee.mappedBytes == e.base!
            // Only spans laid out alike: a span with a larger alignment
            // keeps it, and the header stays at the chunk boundary it needs.
            if (before || after) && e.baseAlignment == Tuning.segmentBytes && h.pointee.baseAlignment == Tuning.segmentBytes {
                removeEntry(i)
                let (low, lowHeader, high, highHeader) = before ? (e.base!, other, base, h) : (base, h, e.base!, other)
                // The upper span's block is gone: its map entry would point
                // into the merged span.
                Segment.mapClear(high + highHeader.pointee.userOffset)
                lowHeader.pointee.singleMapping =
                    lowHeader.pointee.singleMapping && highHeader.pointee.singleMapping
                    && lowHeader.pointee.origin == highHeader.pointee.origin
                lowHeader.pointee.mappedBytes += highHeader.pointee.mappedBytes
                base = low
                h = lowHeader
                i = 0
                continue
            }
            i += 1
        }
        let bytes = h.pointee.mappedBytes
        while cache.pointee.count > 0
            && (cache.pointee.count >= Tuning.largeCacheEntries
                || cache.pointee.totalBytes + bytes > Reclaimer.largeCacheLimitBytes)
        {
            // Evict the oldest (entry 0).
            let e = LargeCache.entries[0]
            removeEntry(0)
            retire(e.base!)
        }
        if bytes > Reclaimer.largeCacheLimitBytes { return retire(base) }
        let now = OS.nowMs()
        LargeCache.entries[cache.pointee.count] = LargeCacheEntry(
            base: base, mappedBytes: bytes, baseAlignment: h.pointee.baseAlignment, idleSinceMs: now)
        cache.pointee.count += 1
        cache.pointee.totalBytes += bytes
    }

    /// Queues the span at `base`, out of the cache, for unmapping once the
    /// lock is released (lock held).
    private static func retire(_ base: RawPointer) {
        header(base).pointee.nextToUnmap = Globals.largeCache.pointee.toUnmap
        Globals.largeCache.pointee.toUnmap = base
    }

    /// Releases the cache's lock, then unmaps the spans retired under it.
    private static func unlock() {
        var next = Globals.largeCache.pointee.toUnmap
        Globals.largeCache.pointee.toUnmap = nil
        Lock.release(LargeCache.lockWord)
        while let base = next {
            let h = header(base)
            next = h.pointee.nextToUnmap
            unmap(base, h)
        }
    }

    private static func removeEntry(_ i: Int) {
        let cache = Globals.largeCache
        cache.pointee.totalBytes -= LargeCache.entries[i].mappedBytes
        var k = i
        while k + 1 < cache.pointee.count {
            LargeCache.entries[k] = LargeCache.entries[k + 1]
            k += 1
        }
        cache.pointee.count -= 1
    }

    /// Unmaps spans idle for longer than `largeCacheDecayMs` (lock held),
    /// unless the background reclaimer does.
    private static func decay() {
        let cache = Globals.largeCache
        Reclaimer.notePending(bytes: cache.pointee.totalBytes)
        if !Reclaimer.checksDelaysInline { return }
        let now = OS.nowMs()
        if now &- cache.pointee.lastDecayMs < 100 { return }
        cache.pointee.lastDecayMs = now
        while cache.pointee.count > 0 && now &- LargeCache.entries[0].idleSinceMs >= Tuning.largeCacheDecayMs {
            let e = LargeCache.entries[0]
            removeEntry(0)
            retire(e.base!)
        }
    }
}
