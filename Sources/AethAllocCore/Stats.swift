// Stats.swift: the statistics seam.
//
// Every counter the core keeps goes through these functions. Each body
// starts with `if !Variant.statsEnabled { return }`: a compile-time constant,
// so in the variants without metrics the optimiser removes the calls
// entirely. Call sites carry no `#if`, and the fast paths gain no
// instruction (checked with callgrind; see README).
//
// In the metrics variant, the fast paths add to per-thread counters (plain
// stores into the thread cache, no atomics). Those are added to the process
// totals (GlobalMetrics, atomics) every `Tuning.statsFlushTrades` cache
// refills and overflows together, and at thread exit. Slow-path events (mapping, purging, large
// blocks, depot transfers) go straight to the atomics.
//
// Per-thread counters, at ThreadCache.statsOffset (ThreadStats):
//   {allocs, frees}[SizeClass.count] (a class's pair lies where its cache
//   entry lies in the hot array), misses, tradesSinceFlush, lastFlushMs:
//   UInt64 each
import Synchronization

/// Process totals. Per-class allocation counts follow the struct at
/// `Globals.metricsOffset + classAllocsOffset`.
struct GlobalMetrics: ~Copyable {
    let allocs: Atomic<UInt64>
    let frees: Atomic<UInt64>
    let cacheHits: Atomic<UInt64>
    let cacheMisses: Atomic<UInt64>
    let directAllocs: Atomic<UInt64>
    let bytesInUse: Atomic<Int>
    let peakBytesInUse: Atomic<Int>
    let bytesMapped: Atomic<UInt64>
    let bytesReturned: Atomic<UInt64>
    let depotTransfers: Atomic<UInt64>
    let threadsExited: Atomic<UInt64>
    /// Times the background reclaimer could not be started (Reclaim.swift).
    let backgroundUnavailable: Atomic<UInt64>
    @inline(__always) static var classAllocsOffset: Int { Layout.after(0, MemoryLayout<GlobalMetrics>.size, align: 8) }
    @inline(__always) static var bytes: Int { classAllocsOffset + 8 * SizeClass.count }
}

/// The per-thread counters' layout, inside the thread cache.
enum ThreadStats {
    /// Per class, its allocations and its frees side by side, at the offset
    /// of its entry among the hot entries (one CacheEntry stride per class;
    /// Globals.checkLayout): the fast paths locate them from the entry's
    /// offset as it is.
    @inline(__always) static var classesOffset: Int { 0 }
    @inline(__always) static func allocsOffset(entryOffset: Int) -> Int { classesOffset &+ (entryOffset &- ThreadCache.hotOffset) }
    @inline(__always) static func freesOffset(entryOffset: Int) -> Int { allocsOffset(entryOffset: entryOffset) &+ 8 }
    @inline(__always) static var missesOffset: Int { classesOffset + MemoryLayout<CacheEntry>.stride * SizeClass.count }
    @inline(__always) static var tradesOffset: Int { missesOffset + 8 }
    @inline(__always) static var lastFlushOffset: Int { tradesOffset + 8 }
    @inline(__always) static var bytes: Int { lastFlushOffset + 8 }
}

enum Stats {
    @inline(__always) static var enabled: Bool { Variant.statsEnabled }
    @inline(__always) static var global: UnsafeMutablePointer<GlobalMetrics> { Globals.metrics }

    @inline(__always)
    static func classAllocs(_ c: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (RawPointer(Globals.metrics) + (GlobalMetrics.classAllocsOffset + c * 8)).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    @inline(__always)
    private static func local(_ tc: RawPointer, _ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (tc + (ThreadCache.statsOffset &+ offset)).assumingMemoryBound(to: UInt64.self)
    }

    // ---- fast paths (live thread caches only) --------------------------------

    @inline(__always)
    static func allocated(_ tc: RawPointer, _ c: Int) { allocated(tc, entryOffset: ThreadCache.entryOffset(c)) }

    /// The same, for the class whose cache entry lies at `entryOffset`.
    @inline(__always)
    static func allocated(_ tc: RawPointer, entryOffset: Int) {
        if !enabled { return }
        local(tc, ThreadStats.allocsOffset(entryOffset: entryOffset)).pointee &+= 1
    }

    @inline(__always)
    static func freed(_ tc: RawPointer, _ c: Int) { freed(tc, entryOffset: ThreadCache.entryOffset(c)) }

    @inline(__always)
    static func freed(_ tc: RawPointer, entryOffset: Int) {
        if !enabled { return }
        local(tc, ThreadStats.freesOffset(entryOffset: entryOffset)).pointee &+= 1
    }

    // ---- slow paths ------------------------------------------------------------

    /// A small block of class `c` handed out or taken back without a live
    /// cache (before attach, after thread teardown): straight to the totals.
    static func uncachedAllocated(_ c: Int) {
        if !enabled { return }
        global.pointee.allocs.wrappingAdd(1, ordering: .relaxed)
        global.pointee.cacheMisses.wrappingAdd(1, ordering: .relaxed)
        classAllocs(c).pointee.wrappingAdd(1, ordering: .relaxed)
        addInUse(Globals.classInfo(c).pointee.blockSize)
    }

    static func uncachedFreed(_ c: Int) {
        if !enabled { return }
        global.pointee.frees.wrappingAdd(1, ordering: .relaxed)
        addInUse(-Globals.classInfo(c).pointee.blockSize)
    }

    /// A cache refill (an allocation the cache could not serve).
    static func cacheMiss(_ tc: RawPointer) {
        if !enabled { return }
        local(tc, ThreadStats.missesOffset).pointee &+= 1
        traded(tc)
    }

    /// A cache overflow (a free that made room by giving blocks back).
    /// Counted like a refill, so a thread that only frees (a consumer of
    /// what others allocated) folds its frees into the totals while it
    /// runs, not only at its exit: otherwise `bytes_in_use` and its peak
    /// climb by everything the producers allocate.
    static func cacheOverflow(_ tc: RawPointer) {
        if !enabled { return }
        traded(tc)
    }

    /// Folds the thread's counters every so many refills and overflows, or
    /// when the last fold is old enough that a live reader would see stale
    /// numbers.
    private static func traded(_ tc: RawPointer) {
        let trades = local(tc, ThreadStats.tradesOffset)
        trades.pointee &+= 1
        if trades.pointee >= Tuning.statsFlushTrades
            || OS.nowMs() &- local(tc, ThreadStats.lastFlushOffset).pointee >= Tuning.publishIntervalMs
        {
            flush(tc)
        }
    }

    static func largeAllocated(bytes: Int) {
        if !enabled { return }
        global.pointee.allocs.wrappingAdd(1, ordering: .relaxed)
        global.pointee.directAllocs.wrappingAdd(1, ordering: .relaxed)
        addInUse(bytes)
        Publisher.publishIfStale()
    }

    static func largeFreed(bytes: Int) {
        if !enabled { return }
        global.pointee.frees.wrappingAdd(1, ordering: .relaxed)
        addInUse(-bytes)
    }

    static func largeResized(from old: Int, to new: Int) {
        if !enabled { return }
        addInUse(new - old)
    }

    static func backgroundUnavailable() {
        if !enabled { return }
        global.pointee.backgroundUnavailable.wrappingAdd(1, ordering: .relaxed)
    }

    static func depotTransfer() {
        if !enabled { return }
        global.pointee.depotTransfers.wrappingAdd(1, ordering: .relaxed)
    }

    static func segmentMapped(bytes: Int) { mapped(bytes) }
    static func largeMapped(bytes: Int) { mapped(bytes) }
    static func metadataMapped(bytes: Int) { mapped(bytes) }
    static func segmentUnmapped(bytes: Int) { returned(bytes) }
    static func largeUnmapped(bytes: Int) { returned(bytes) }
    static func purged(bytes: Int) { returned(bytes) }

    static func threadExit(_ tc: RawPointer) {
        if !enabled { return }
        // Counted before the flush, so the flush publishes it.
        global.pointee.threadsExited.wrappingAdd(1, ordering: .relaxed)
        flush(tc)
    }

    /// Adds the thread's counters to the process totals and zeroes them.
    static func flush(_ tc: RawPointer) {
        if !enabled { return }
        var allocs: UInt64 = 0
        var frees: UInt64 = 0
        var delta = 0
        for c in 0..<SizeClass.count {
            let a = local(tc, ThreadStats.allocsOffset(entryOffset: ThreadCache.entryOffset(c)))
            let f = local(tc, ThreadStats.freesOffset(entryOffset: ThreadCache.entryOffset(c)))
            if a.pointee | f.pointee == 0 { continue }
            classAllocs(c).pointee.wrappingAdd(a.pointee, ordering: .relaxed)
            allocs &+= a.pointee
            frees &+= f.pointee
            delta &+= (Int(truncatingIfNeeded: a.pointee) &- Int(truncatingIfNeeded: f.pointee)) &* Globals.classInfo(c).pointee.blockSize
            a.pointee = 0
            f.pointee = 0
        }
        let misses = local(tc, ThreadStats.missesOffset).pointee
        global.pointee.allocs.wrappingAdd(allocs, ordering: .relaxed)
        global.pointee.frees.wrappingAdd(frees, ordering: .relaxed)
        global.pointee.cacheMisses.wrappingAdd(misses, ordering: .relaxed)
        global.pointee.cacheHits.wrappingAdd(allocs &- min(allocs, misses), ordering: .relaxed)
        addInUse(delta)
        local(tc, ThreadStats.missesOffset).pointee = 0
        local(tc, ThreadStats.tradesOffset).pointee = 0
        local(tc, ThreadStats.lastFlushOffset).pointee = OS.nowMs()
        Publisher.publish()
    }

    private static func mapped(_ bytes: Int) {
        if !enabled { return }
        global.pointee.bytesMapped.wrappingAdd(UInt64(truncatingIfNeeded: bytes), ordering: .relaxed)
    }

    private static func returned(_ bytes: Int) {
        if !enabled { return }
        global.pointee.bytesReturned.wrappingAdd(UInt64(truncatingIfNeeded: bytes), ordering: .relaxed)
    }

    private static func addInUse(_ delta: Int) {
        let now = global.pointee.bytesInUse.wrappingAdd(delta, ordering: .relaxed).newValue
        var peak = global.pointee.peakBytesInUse.load(ordering: .relaxed)
        while now > peak {
            let (done, seen) = global.pointee.peakBytesInUse.compareExchange(
                expected: peak, desired: now, ordering: .relaxed)
            if done { break }
            peak = seen
        }
    }
}
