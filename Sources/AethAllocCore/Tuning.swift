// Tuning.swift: every tuning constant of the core, with its unit in its name.
//
// The size-class table lives in SizeClasses.swift; the per-variant seams in
// variants/<name>/Variant.swift. Nothing else defines a number that another
// file must agree with.

enum Tuning {
    // ---- address space ---------------------------------------------------
    /// Small blocks live in segments: 4 MiB, aligned to 4 MiB, so a block's
    /// segment is its address with the low bits cleared. The shift is defined
    /// once, in the C shim (AETH_SEGMENT_SHIFT), which sizes the segment map
    /// from it and the architecture's user address bits (`OS.userAddressBits`).
    @inline(__always) static var segmentShift: Int { OS.segmentShift }
    @inline(__always) static var segmentBytes: Int { 1 << segmentShift }
    /// A segment is cut into 64 KiB slices; a page is a run of slices.
    ///
    /// The OS page size is read at run time (`OS.pageBytes`: 4 KiB on
    /// x86-64; 4, 16 or 64 KiB on aarch64). Everything the allocator gives
    /// back to or protects with the OS inside a segment is whole slices
    /// (purge, unmap of a segment), and a slice is a multiple of every page
    /// size Linux has, so segments work unchanged on every kernel. What is
    /// not whole slices uses `OS.pageBytes`: large mappings are rounded to
    /// it, their guard pages and trims are page-sized, valloc/pvalloc align
    /// to it, and the hardened segment guard is one page at the end of the
    /// metadata slice (Hardening.swift). `Runtime.initializeSlow` refuses to
    /// start on a page larger than a slice (`pageSizeFits`).
    static let sliceShift = 16
    static let sliceBytes = 1 << sliceShift
    @inline(__always) static var slicesPerSegment: Int { segmentBytes >> sliceShift }  // 64

    // ---- size classes ----------------------------------------------------
    /// The largest request served from a size class; larger ones are mapped.
    static let maxSmallBytes = 64 * 1024
    /// Requests up to this size find their class with one table load.
    static let smallTableMaxBytes = 1024

    // ---- magazines ---------------------------------------------------------
    /// Slots in a magazine: with its header (Magazine.swift), 62 pointers
    /// make 512 bytes. Larger magazines were measured and not taken: 126
    /// and 254 slots made a ring of threads freeing each other's blocks
    /// (remote_free bench, 2 threads) 1.15x and 1.3x faster, but thread
    /// creation 1.6x and 2.2x slower (thread_churn, 2 at a time) and peak
    /// RSS 13% and 27% higher (larson, 8 threads).
    static let magazineSlots = 62
    static var magazineBytes: Int { Magazine.roundsOffset + magazineSlots * MemoryLayout<RawPointer>.stride }
    /// A magazine holds at most this many bytes of blocks (at least 1 block),
    /// so a thread hoards at most 2 magazines' worth per class.
    static let magazineMaxBlockBytes = 64 * 1024
    /// The depot keeps at most this many bytes of full magazines per class...
    static let depotMaxBytesPerClass = 2 * 1024 * 1024
    /// ...and never fewer than this many magazines, nor more than the upper bound.
    static let depotMinMagazines = 4
    static let depotMaxMagazines = 256
    /// The depot's limit in bytes until blocks of its class travel between
    /// threads (Depot), within the same bounds in magazines (at least
    /// `depotMinMagazines`, at most the shared limit), for magazines whose
    /// rounds are neighbouring blocks; scattered ones get
    /// `depotMinMagazines`. Memory a single-threaded program keeps out of
    /// its pages after freeing everything: rss_reclaim's 1 GiB freed leaves
    /// 2.48 MB against 2.27 MB with 4 magazines.
    static let depotUnsharedBytesPerClass = 256 * 1024
    /// How a magazine counts as neighbouring blocks (Depot.inSequence): of
    /// this many sampled pairs of adjacent rounds...
    static let sequenceSamples = 8
    /// ...at least this many lie one block apart. remote_free (one thread)
    /// frees in the order it allocated: 97% of its pairs are neighbours.
    static let sequenceNeighbours = 6

    // ---- simple variant ----------------------------------------------------
    /// A thread's list of a class holds at most this many blocks (the seed's
    /// threshold) and at most this many bytes; half moves to the pool.
    static let simpleThresholdBlocks = 4096
    static let simpleThresholdBytes = 256 * 1024
    static let simplePoolMaxBytesPerClass = 2 * 1024 * 1024
    /// The pool's limit, in batches, until blocks of its class travel
    /// between threads (GlobalPool.limit). small_objects (one thread, 1,200
    /// rounds, `ab --runs 9`): 2.76 s with the full pool, 2.46 s with 0,
    /// 2.26 s with 1 (mimalloc 2.38 s).
    static let simpleUnsharedPoolBatches = 1

    // ---- metrics -----------------------------------------------------------
    /// Per-thread counters reach the process totals every this many cache
    /// refills and overflows.
    static let statsFlushTrades: UInt64 = 64
    /// ...or when the thread's last flush is older than this; the statistics
    /// file is rewritten on every flush.
    static let publishIntervalMs: UInt64 = 100

    // ---- pages and segments ----------------------------------------------
    /// A page holds at least this many blocks where the class allows it.
    static let minBlocksPerPage = 4
    /// A page wastes at most 1/`pageWasteDivisor` of its bytes to rounding.
    static let pageWasteDivisor = 16
    /// Pages of a class start their blocks at up to this many different
    /// offsets (colours), a cache line or the block's alignment apart, so
    /// that the first blocks of different pages do not all fall in the same
    /// cache sets (SizeClass.computedColours); the offsets take at most
    /// 1/`pageColourDivisor` of a page.
    static let pageColours = 8
    static let pageColourDivisor = 128
    static let cacheLineBytes = 64
    /// Free slices that were used stay committed at most this long before
    /// madvise(MADV_DONTNEED) returns them to the OS, checked on segment
    /// operations (0: at once). Overridden by AETHALLOC_PURGE_DELAY_MS
    /// (Options.swift).
    static let defaultPurgeDelayMs = 1000
    /// Committed free slices are kept up to this percentage of the heap
    /// (bytes in pages and medium blocks, medium blocks counted twice, plus
    /// live large blocks once), and at least
    /// `dirtyMinBytes`; beyond that a release purges down to half
    /// (SegmentManager). Overridden by AETHALLOC_DIRTY_PERCENT.
    /// fragmentation bench, page faults by setting (before dirty-first
    /// placement): 3% 350k, 12% 192k, 25% 166k, 50% 155k; peak RSS 569-570 MB
    /// in each. The floor trades small programs' RSS against page faults:
    /// small_objects peak RSS 4.8 MB at 256 KiB, 5.1 MB at 1 MiB, 5.2 MB at
    /// 4 MiB; realloc_growth page faults 58k at 256 KiB, 36k at 4 MiB.
    static let defaultDirtyPercent = 25
    static let dirtyMinBytes = 256 << 10
    /// After the OS refuses a purge (madvise fails on locked pages, under
    /// mlockall), budget and delay purges pause this long: the slices stay
    /// committed and dirty, and calloc zeroes them.
    static let purgeBackoffMs: UInt64 = 1000
    /// Wholly free segments kept mapped for reuse.
    static let cachedEmptySegments = 1

    // ---- medium blocks -------------------------------------------------------
    /// Requests above `maxSmallBytes` and up to this size are runs of whole
    /// slices in a segment (Medium.swift); larger ones are mapped (Large.swift).
    static let mediumMaxBytes = 1 << 20

    // ---- large allocations -------------------------------------------------
    /// Header before a large block's data (sliceClass and LargeHeader).
    static let largeHeaderBytes = 256
    /// Freed large spans kept mapped for reuse: entries, and bytes per span.
    static let largeCacheEntries = 64
    static let largeCacheMaxSpanBytes = 32 * 1024 * 1024
    static let largeCacheMaxTotalBytes = 128 * 1024 * 1024
    /// Cached spans idle longer than this are unmapped on the next large op.
    static let largeCacheDecayMs: UInt64 = 1000
    /// A cached span reused for a smaller block is cut at the first chunk
    /// boundary past the block when at least this much lies beyond the cut;
    /// that rest becomes a cached span where it is (Large.allocate). (With
    /// the earlier split by mremap, splitting off only tails of 1 MiB or
    /// more took 5-12% more time on handoff_mixed, big_churn and
    /// fragmentation, one interleaved `aethalloc-cli ab` run.)
    static let largeReuseSlackBytes = 64 * 1024
    /// ...except for a block that realloc moves while growing: it keeps a
    /// reused span up to this many times its size (realloc_growth bench:
    /// buffers growing to 4 MiB re-faulted every page of a trimmed span).
    static let largeGrowingSlackFactor = 8

    // ---- the background reclaimer (Reclaim.swift) ----------------------------
    /// With AETHALLOC_BACKGROUND=auto it starts once this much freed memory
    /// waits for the purge delay or the span decay: a program that stays
    /// smaller never gets the thread.
    static let backgroundStartBytes = 4 << 20
    /// Its sleep while something is pending is at least this long (the
    /// delay and the decay are checked this often at most)...
    static let backgroundMinSleepMs: UInt64 = 20
    /// ...and while nothing is pending, at most this long (it is woken when
    /// the budget is exceeded; the timeout is a safety net).
    static let backgroundIdleSleepMs: UInt64 = 10_000
    /// It acts on what is due within this many milliseconds, so what was
    /// freed is back with the OS within the purge delay and the span decay
    /// (1 s by default), not a sleep's rounding after them: idle_reclaim
    /// reached its target at 1050 ms without it.
    static let backgroundLeadMs: UInt64 = 300

    // ---- threads -----------------------------------------------------------
    /// A thread that could not attach a cache (no memory for one) is served
    /// from the pages directly and tries again this long after the last
    /// failure, not on every call.
    static let attachRetryMs: UInt64 = 100

    // ---- internal metadata -------------------------------------------------
    static let arenaChunkBytes = 1 << 20
}
