// Globals.swift: where the core's global state lives.
//
// All global state is carved out of `aeth_root_storage`, zeroed static storage
// in the C shim, at the fixed offsets below. Zero bits are a valid state for
// every structure here (unlocked locks, empty stacks and lists, `initState`
// 0), so nothing has to run before the first malloc, and no Swift global with
// a lazy initialiser (`swift_once`) is on any path.
//
//   offset   contents
//   0        size table: class of each 16-byte step up to 1 KiB (65 bytes)
//   128      ProcessState
//   1024     ClassInfo[SizeClass.count]
//   4096     Central[SizeClass.count], 128 bytes each (own cache lines)
//   12288    Depot[SizeClass.count], 64 bytes each
//   16384    SegmentManager
//   17408    (free)
//   18432    MetadataArena
//   18688    the shared stack of empty magazines
//   18944    ThreadCacheRegistry
//   20480    GlobalMetrics (metrics variant), then per-class counts
//   21504    PublisherState (metrics variant's statistics file)
//   24576    the lock table: every lock of the core, 64 bytes apart
//   28672    LargeCache and its entries
//
// Locks live apart from the data they protect, so plain field accesses of a
// structure never overlap a lock word that other threads update atomically.
import CAethAlloc
import Synchronization

/// Process-wide flags and handles.
/// Written once by the initialising thread before `Globals.initState` is
/// published as ready, read-only after.
struct ProcessState {
    /// The pthread key whose destructor tears a thread's cache down.
    var threadKey: Int32
    var constructorRan: Bool
    var printStatsAtExit: Bool
    /// Options.purgeDelayMs, Options.dirtyPercent.
    var purgeDelayMs: Int
    var dirtyPercent: Int
    /// Hardening.secret (hardened variant).
    var secret: UInt
}

enum Globals {
    static let sizeTableOffset = 0
    static let processOffset = 128
    static let classInfoOffset = 1024
    static let centralOffset = 4096
    static let centralStride = 128
    static let depotOffset = 12288
    static let depotStride = 64
    static let segmentManagerOffset = 16384
    static let arenaOffset = 18432
    static let emptyMagazinesOffset = 18688
    static let registryOffset = 18944
    static let metricsOffset = 20480
    static let publisherOffset = 21504
    static let lockTableOffset = 24576
    static let lockStride = 64
    static let largeCacheOffset = 28672
    static let endOffset = 32768

    // Indices in the lock table.
    static let segmentLock = 0
    static let largeCacheLock = 1
    static let arenaLock = 2
    static let registryLock = 3
    static let publisherLock = 4
    static let centralLock0 = 8  // + size class
    /// Not a lock: 0 untouched, 1 a thread is initialising, 2 ready.
    static let initStateSlot = 5

    /// Not a lock: when the statistics file was last written (Publish.swift).
    static let lastPublishSlot = 6
    /// Not a lock: bytes mapped for live large blocks (Large.swift), a part
    /// of the heap the dirty budget scales with (SegmentManager).
    static let largeLiveSlot = 7
    @inline(__always) static var largeLiveBytes: UnsafeMutablePointer<Atomic<Int>> {
        (root + (lockTableOffset &+ largeLiveSlot &* lockStride)).assumingMemoryBound(to: Atomic<Int>.self)
    }
    @inline(__always) static var lastPublishMs: UnsafeMutablePointer<Atomic<UInt64>> {
        (root + (lockTableOffset &+ lastPublishSlot &* lockStride)).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    @inline(__always) static var initState: UnsafeMutablePointer<Atomic<Int>> {
        (root + (lockTableOffset &+ initStateSlot &* lockStride)).assumingMemoryBound(to: Atomic<Int>.self)
    }

    @inline(__always) static func lock(_ i: Int) -> UnsafeMutablePointer<LockWord> {
        (root + (lockTableOffset &+ i &* lockStride)).assumingMemoryBound(to: LockWord.self)
    }

    @inline(__always) static var root: RawPointer { RawPointer(aeth_root()) }

    @inline(__always) static var sizeTable: UnsafeMutablePointer<UInt8> {
        (root + sizeTableOffset).assumingMemoryBound(to: UInt8.self)
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
    @inline(__always) static var largeCache: UnsafeMutablePointer<LargeCache> {
        (root + largeCacheOffset).assumingMemoryBound(to: LargeCache.self)
    }
    @inline(__always) static var arena: UnsafeMutablePointer<MetadataArena> {
        (root + arenaOffset).assumingMemoryBound(to: MetadataArena.self)
    }
    @inline(__always) static var emptyMagazines: UnsafeMutablePointer<TaggedStack> {
        (root + emptyMagazinesOffset).assumingMemoryBound(to: TaggedStack.self)
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
    @inline(__always) static var segmentMap: UnsafeMutablePointer<UInt8> { aeth_segment_map_ptr() }

    /// Checks at start-up that the fixed offsets above fit the types.
    static func checkLayout() {
        let ok = MemoryLayout<ProcessState>.size <= classInfoOffset - processOffset
            && MemoryLayout<ClassInfo>.stride * SizeClass.count <= centralOffset - classInfoOffset
            && MemoryLayout<Central>.size <= centralStride
            && centralOffset + centralStride * SizeClass.count <= depotOffset
            && MemoryLayout<Depot>.size <= depotStride
            && depotOffset + depotStride * SizeClass.count <= segmentManagerOffset
            && MemoryLayout<SegmentManager>.size <= largeCacheOffset - segmentManagerOffset
            && MemoryLayout<LargeCache>.size <= LargeCache.entriesOffset
            && LargeCache.entriesOffset + MemoryLayout<LargeCacheEntry>.stride * Tuning.largeCacheEntries
                <= endOffset - largeCacheOffset
            && MemoryLayout<MetadataArena>.size <= emptyMagazinesOffset - arenaOffset
            && MemoryLayout<TaggedStack>.size <= registryOffset - emptyMagazinesOffset
            && MemoryLayout<ThreadCacheRegistry>.size <= metricsOffset - registryOffset
            && MemoryLayout<GlobalMetrics>.size <= GlobalMetrics.classAllocsOffset
            && GlobalMetrics.classAllocsOffset + 8 * SizeClass.count <= publisherOffset - metricsOffset
            && MemoryLayout<PublisherState>.size <= PublisherState.directoryOffset
            && publisherOffset + PublisherState.bytes <= lockTableOffset
            && lockTableOffset + (centralLock0 + SizeClass.count) * lockStride <= largeCacheOffset
            && MemoryLayout<SimpleLists>.size <= ThreadCache.coldStride
            && MemoryLayout<MagazinePair>.size <= ThreadCache.coldStride
            && ThreadCache.coldOffset + ThreadCache.coldStride * SizeClass.count <= ThreadCache.statsOffset
            && ThreadCache.statsOffset + 720 <= ThreadCache.nextFreeOffset
            && endOffset <= aeth_root_bytes()
            && ThreadCache.bytes <= Int(AETH_EMPTY_CACHE_BYTES)
        if !ok { Diagnostics.fatal("internal error: global state layout does not fit") }
    }
}
