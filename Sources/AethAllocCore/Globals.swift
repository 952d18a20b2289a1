// Globals.swift: where the core's global state lives.
//
// All global state is carved out of `OS.rootStorage`, zeroed static storage
// in the C shim. Zero bits are a valid state for every structure here
// (unlocked locks, empty stacks and lists, `initState` 0), so nothing has to
// run before the first malloc, and no Swift global with a lazy initialiser
// (`swift_once`) is on any path.
//
// The layout is derived, never written down: each region starts where the
// one before it ends (`Layout.after`), rounded up to its alignment, and its
// size comes from `MemoryLayout` of its type. Adding a field to a structure
// moves everything after it; nothing can overlap. In release builds every
// offset folds to a constant. In order:
//
//   size table      class of each 16-byte step up to 1 KiB
//   ProcessState
//   ClassInfo[SizeClass.count]
//   Central[SizeClass.count]     `centralStride` apart (own cache lines)
//   Depot[SizeClass.count]       `depotStride` apart
//   SegmentManager, its bins (SegmentBins), MediumCache and its bins, MetadataArena, the stacks of empty magazines and of
//   free batch descriptors,
//   ThreadCacheRegistry, GlobalMetrics (+ per-class counts), PublisherState
//   the slot table: every lock and atomic flag, `slotStride` apart
//   LargeCache and its entries
//
// Locks and atomic flags live apart from the data they protect, so plain
// field accesses of a structure never overlap a word that other threads
// update atomically.
import Synchronization

/// Offsets derived from sizes.
enum Layout {
    /// The first multiple of `align` (a power of two) at or after
    /// `offset + bytes`.
    @inline(__always)
    static func after(_ offset: Int, _ bytes: Int, align: Int = 64) -> Int {
        (offset &+ bytes &+ align &- 1) & ~(align &- 1)
    }
}

/// Process-wide flags and handles.
/// Written once by the initialising thread before `Globals.initState` is
/// published as ready, read-only after.
struct ProcessState {
    /// The pthread key whose destructor tears a thread's cache down.
    var threadKey: Int32
    var constructorRan: Bool
    var printStatsAtExit: Bool
    /// The options (Options.swift): from the environment, and from
    /// mallopt for the last two.
    var purgeDelayMs: Int
    var dirtyPercent: Int
    var verbose: Bool
    var background: BackgroundMode
    var dirtyMinBytes: Int
    var mediumMaxBytes: Int
    /// AETHALLOC_MEDIUM_CACHE (MediumCache.swift).
    var mediumCache: Bool
}

enum Globals {
    // ---- the regions, each after the one before --------------------------------
    @inline(__always) static var sizeTableOffset: Int { 0 }
    @inline(__always) static var sizeTableBytes: Int { (Tuning.smallTableMaxBytes / 16 + 1) * MemoryLayout<UInt16>.stride }
    @inline(__always) static var processOffset: Int { Layout.after(sizeTableOffset, sizeTableBytes) }
    @inline(__always) static var classInfoOffset: Int { Layout.after(processOffset, MemoryLayout<ProcessState>.size) }
    /// Two cache lines per class: a class lock's holder does not share a
    /// line with another class's list head (adjacent-line prefetch).
    @inline(__always) static var centralStride: Int { Layout.after(0, MemoryLayout<Central>.size, align: 128) }
    @inline(__always) static var centralOffset: Int {
        Layout.after(classInfoOffset, MemoryLayout<ClassInfo>.stride * SizeClass.count, align: 128)
    }
    @inline(__always) static var depotStride: Int { Layout.after(0, MemoryLayout<Depot>.size) }
    @inline(__always) static var depotOffset: Int { Layout.after(centralOffset, centralStride * SizeClass.count) }
    @inline(__always) static var segmentManagerOffset: Int { Layout.after(depotOffset, depotStride * SizeClass.count) }
    @inline(__always) static var segmentBinsOffset: Int { Layout.after(segmentManagerOffset, MemoryLayout<SegmentManager>.size) }
    @inline(__always) static var mediumCacheOffset: Int { Layout.after(segmentBinsOffset, SegmentBins.bytes) }
    @inline(__always) static var mediumCacheBinsOffset: Int {
        Layout.after(mediumCacheOffset, MemoryLayout<MediumCache>.size, align: 16)
    }
    @inline(__always) static var arenaOffset: Int {
        Layout.after(mediumCacheBinsOffset, MediumCache.bins * MemoryLayout<MediumCache.Bin>.stride)
    }
    @inline(__always) static var emptyMagazinesOffset: Int { Layout.after(arenaOffset, MemoryLayout<MetadataArena>.size) }
    @inline(__always) static var emptyBatchesOffset: Int { Layout.after(emptyMagazinesOffset, MemoryLayout<TaggedStack>.size) }
    @inline(__always) static var registryOffset: Int { Layout.after(emptyBatchesOffset, MemoryLayout<TaggedStack>.size) }
    @inline(__always) static var metricsOffset: Int { Layout.after(registryOffset, MemoryLayout<ThreadCacheRegistry>.size) }
    @inline(__always) static var publisherOffset: Int { Layout.after(metricsOffset, GlobalMetrics.bytes) }
    @inline(__always) static var slotTableOffset: Int { Layout.after(publisherOffset, PublisherState.bytes, align: 4096) }
    /// One slot per lock or flag, a cache line each.
    @inline(__always) static var slotStride: Int { 64 }
    @inline(__always) static var largeCacheOffset: Int { Layout.after(slotTableOffset, slotCount * slotStride) }
    @inline(__always) static var endOffset: Int { Layout.after(largeCacheOffset, LargeCache.bytes) }

    // ---- the slot table ----------------------------------------------------------
    // Locks.
    static let segmentLock = 0
    static let largeCacheLock = 1
    static let arenaLock = 2
    static let registryLock = 3
    static let publisherLock = 4
    /// Not a lock: 0 untouched, 1 a thread is initialising, 2 ready.
    static let initStateSlot = 5
    /// Not a lock: when the statistics file was last written (Publish.swift).
    static let lastPublishSlot = 6
    /// Not a lock: bytes mapped for live large blocks (Large.swift), a part
    /// of the heap the dirty budget scales with (SegmentManager).
    static let largeLiveSlot = 7
    /// Not a lock: when a thread last failed to attach a cache (ThreadCache).
    static let attachFailedSlot = 8
    /// Not a lock: a fork child has orphaned caches to reclaim (ThreadCache).
    static let orphansPendingSlot = 9
    /// Not a lock: live large blocks (Large.swift; mallinfo2's hblks).
    static let largeCountSlot = 10
    /// Not locks: the background reclaimer's state, whether it is wanted,
    /// and its futex word (Reclaim.swift).
    static let reclaimerStateSlot = 11
    static let reclaimerWantedSlot = 12
    static let reclaimerWakeSlot = 13
    /// Not a lock: the statistics file is open (Publish.swift); read
    /// without the publisher lock, `map` itself only under it.
    static let publishingSlot = 14
    /// Not locks: the reclaimer is in (or entering) its futex wait, so a
    /// wake needs the syscall (Reclaim.swift).
    static let reclaimerSleepingSlot = 15
    /// Not a lock: bumped by each malloc_trim; a thread cache that has not
    /// seen the current value empties itself at its next slow path
    /// (ThreadCache.honorTrim).
    static let trimEpochSlot = 16
    /// Not a lock: the hardened variant's last freed tagged large block, its
    /// base address ORed with its memory tag (Hardening.tagLarge).
    static let lastFreedLargeTagSlot = 17
    /// The class locks: `centralLock0 + c`.
    static let centralLock0 = 18
    @inline(__always) static var slotCount: Int { centralLock0 + SizeClass.count }

    @inline(__always)
    private static func slot<T: ~Copyable>(_ i: Int, as: T.Type) -> UnsafeMutablePointer<T> {
        (root + (slotTableOffset &+ i &* slotStride)).assumingMemoryBound(to: T.self)
    }
    @inline(__always) static func lock(_ i: Int) -> UnsafeMutablePointer<LockWord> { slot(i, as: LockWord.self) }
    @inline(__always) static var initState: UnsafeMutablePointer<Atomic<Int>> { slot(initStateSlot, as: Atomic<Int>.self) }
    @inline(__always) static var lastPublishMs: UnsafeMutablePointer<Atomic<UInt64>> { slot(lastPublishSlot, as: Atomic<UInt64>.self) }
    @inline(__always) static var largeLiveBytes: UnsafeMutablePointer<Atomic<Int>> { slot(largeLiveSlot, as: Atomic<Int>.self) }
    @inline(__always) static var attachFailedMs: UnsafeMutablePointer<Atomic<UInt64>> { slot(attachFailedSlot, as: Atomic<UInt64>.self) }
    @inline(__always) static var orphansPending: UnsafeMutablePointer<Atomic<Bool>> { slot(orphansPendingSlot, as: Atomic<Bool>.self) }
    @inline(__always) static var largeCount: UnsafeMutablePointer<Atomic<Int>> { slot(largeCountSlot, as: Atomic<Int>.self) }
    @inline(__always) static var lastFreedLargeTag: UnsafeMutablePointer<Atomic<UInt>> { slot(lastFreedLargeTagSlot, as: Atomic<UInt>.self) }
    @inline(__always) static var reclaimerState: UnsafeMutablePointer<Atomic<Int>> { slot(reclaimerStateSlot, as: Atomic<Int>.self) }
    @inline(__always) static var reclaimerWanted: UnsafeMutablePointer<Atomic<Bool>> { slot(reclaimerWantedSlot, as: Atomic<Bool>.self) }
    @inline(__always) static var reclaimerWake: UnsafeMutablePointer<Atomic<UInt32>> { slot(reclaimerWakeSlot, as: Atomic<UInt32>.self) }
    @inline(__always) static var publishing: UnsafeMutablePointer<Atomic<Bool>> { slot(publishingSlot, as: Atomic<Bool>.self) }
    @inline(__always) static var reclaimerSleeping: UnsafeMutablePointer<Atomic<Bool>> { slot(reclaimerSleepingSlot, as: Atomic<Bool>.self) }
    @inline(__always) static var trimEpoch: UnsafeMutablePointer<Atomic<UInt>> { slot(trimEpochSlot, as: Atomic<UInt>.self) }

    // ---- the regions ---------------------------------------------------------------
    @inline(__always) static var root: RawPointer { OS.rootStorage }

    /// For each request size up to 1 KiB, in 16-byte steps: where its
    /// class's entry lies in a thread cache (ThreadCache.entryOffset), so
    /// malloc's fast path adds it to the cache's address as it is.
    @inline(__always) static var sizeTable: UnsafeMutablePointer<UInt16> {
        (root + sizeTableOffset).assumingMemoryBound(to: UInt16.self)
    }
    @inline(__always) static var process: UnsafeMutablePointer<ProcessState> {
        (root + processOffset).assumingMemoryBound(to: ProcessState.self)
    }
    @inline(__always) static func classInfo(_ c: Int) -> UnsafeMutablePointer<ClassInfo> {
        (root + classInfoOffset).assumingMemoryBound(to: ClassInfo.self) + c
    }
    @inline(__always) static func central(_ c: Int) -> UnsafeMutablePointer<Central> {
        (root + centralOffset + c &* centralStride).assumingMemoryBound(to: Central.self)
    }
    @inline(__always) static func depot(_ c: Int) -> UnsafeMutablePointer<Depot> {
        (root + depotOffset + c &* depotStride).assumingMemoryBound(to: Depot.self)
    }
    @inline(__always) static var segments: UnsafeMutablePointer<SegmentManager> {
        (root + segmentManagerOffset).assumingMemoryBound(to: SegmentManager.self)
    }
    @inline(__always) static var segmentBins: UnsafeMutablePointer<UInt> {
        (root + segmentBinsOffset).assumingMemoryBound(to: UInt.self)
    }
    @inline(__always) static var mediumCache: UnsafeMutablePointer<MediumCache> {
        (root + mediumCacheOffset).assumingMemoryBound(to: MediumCache.self)
    }
    @inline(__always) static var mediumCacheBins: UnsafeMutablePointer<MediumCache.Bin> {
        (root + mediumCacheBinsOffset).assumingMemoryBound(to: MediumCache.Bin.self)
    }
    @inline(__always) static var largeCache: UnsafeMutablePointer<LargeCache> {
        (root + largeCacheOffset).assumingMemoryBound(to: LargeCache.self)
    }
    @inline(__always) static var arena: UnsafeMutablePointer<MetadataArena> {
        (root + arenaOffset).assumingMemoryBound(to: MetadataArena.self)
    }
    @inline(__always) static var emptyMagazines: UnsafeMutablePointer<TaggedStack> {
        (root + emptyMagazinesOffset).assumingMemoryBound(to: TaggedStack.self)
    }
    /// Free batch descriptors of the simple variant's pools (SimpleCache.swift).
    @inline(__always) static var emptyBatches: UnsafeMutablePointer<TaggedStack> {
        (root + emptyBatchesOffset).assumingMemoryBound(to: TaggedStack.self)
    }
    @inline(__always) static var registry: UnsafeMutablePointer<ThreadCacheRegistry> {
        (root + registryOffset).assumingMemoryBound(to: ThreadCacheRegistry.self)
    }
    @inline(__always) static var metrics: UnsafeMutablePointer<GlobalMetrics> {
        (root + metricsOffset).assumingMemoryBound(to: GlobalMetrics.self)
    }
    @inline(__always) static var publisher: UnsafeMutablePointer<PublisherState> {
        (root + publisherOffset).assumingMemoryBound(to: PublisherState.self)
    }
    @inline(__always) static var segmentMap: UnsafeMutablePointer<UInt8> { OS.segmentMap }

    /// Checks at start-up what the derivation cannot: that everything fits
    /// the static storage, that a segment's metadata ends before its page
    /// table, and that each policy's per-class state and the thread cache
    /// fit their fixed sizes.
    static func checkLayout() {
        let ok = endOffset <= OS.rootStorageBytes
            && Segment.metadataFits
            && MemoryLayout<PageMeta>.stride <= Segment.pageStride
            && MemoryLayout<SimpleLists>.size <= ThreadCache.coldStride
            && MemoryLayout<MagazinePair>.size <= ThreadCache.coldStride
            && ThreadCache.linksOffset + MemoryLayout<CacheLinks>.size <= ThreadCache.bytes
            && ThreadCache.bytes <= OS.emptyCacheBytes
            && MemoryLayout<LockWord>.size <= slotStride && MemoryLayout<Atomic<UInt64>>.size <= slotStride
            && 2 * MemoryLayout<UInt64>.stride <= MemoryLayout<CacheEntry>.stride
        if !ok { Diagnostics.fatal("internal error: global state layout does not fit") }
    }
}
