// Runtime.swift: process initialisation, fork safety, and the callbacks the
// C shim makes (thread exit, fork handlers, library constructor).
//
// Initialisation is lazy (the first slow path of any thread), thread-safe
// (one thread runs it, others wait) and cannot recurse: it only fills tables
// and creates a pthread key, neither of which allocates. Work that may call
// malloc (pthread_atfork) runs from the library constructor, once the
// allocator already works.
import Synchronization

enum Runtime {
    static let uninitialized = 0
    static let initializing = 1
    static let ready = 2

    @inline(__always)
    static func ensureInitialized() {
        if Globals.initState.pointee.load(ordering: .acquiring) != ready { initializeSlow() }
    }

    @inline(never)
    static func initializeSlow() {
        let state = Globals.process
        if Globals.initState.pointee.compareExchange(expected: uninitialized, desired: initializing, ordering: .acquiring).exchanged {
            Globals.checkLayout()
            if !pageSizeFits { Diagnostics.fatal("the OS page size is larger than 64 KiB: not supported") }
            fillClassTables()
            Options.load()
            Hardening.startTagging()
            guard let key = OS.createThreadKey() else { Diagnostics.fatal("cannot create the pthread key for thread caches") }
            state.pointee.threadKey = key
            Globals.initState.pointee.store(ready, ordering: .releasing)
            return
        }
        while Globals.initState.pointee.load(ordering: .acquiring) != ready { OS.yield() }
    }

    /// Segments are purged and guarded in whole slices and mapped aligned to
    /// their size (Tuning.swift, "address space"): that holds for any page
    /// size that divides a slice, which every Linux page size (4, 16, 64 KiB)
    /// does.
    static var pageSizeFits: Bool {
        let page = OS.pageBytes
        return page > 0 && page & (page - 1) == 0 && Tuning.sliceBytes % page == 0
    }

    private static func fillClassTables() {
        for c in 0..<SizeClass.count {
            let block = SizeClass.computedBlockSize(c)
            let slices = SizeClass.computedPageSlices(c)
            Globals.classInfo(c).pointee = ClassInfo(
                blockSize: block, pageSlices: slices, blocksPerPage: SizeClass.computedBlocksPerPage(c),
                colours: SizeClass.computedColours(c), colourStep: SizeClass.computedColourStep(c),
                reciprocal: SizeClass.computedReciprocal(c),
                magazineCapacity: SizeClass.computedMagazineCapacity(c), depotLimit: SizeClass.computedDepotLimit(c),
                depotUnsharedLimit: SizeClass.computedDepotUnsharedLimit(c),
                simpleBatch: SizeClass.computedSimpleBatch(c), simplePoolLimit: SizeClass.computedSimplePoolLimit(c))
        }
        var i = 0
        while i * 16 <= Tuning.smallTableMaxBytes {
            Globals.sizeTable[i] = UInt16(ThreadCache.entryOffset(SizeClass.computedIndex(of: max(i * 16, 1))))
            i += 1
        }
    }

    // ---- fork ----------------------------------------------------------------
    // Every lock is taken before fork and released (parent) or reset (child)
    // after it, so the child never inherits a lock held by a thread that does
    // not exist there. Order: class locks, then the segment lock (the order
    // the slow paths nest them in), then the independent ones.

    static func forEachLock(_ body: (UnsafeMutablePointer<LockWord>) -> Void) {
        for c in 0..<SizeClass.count { body(Central.lockWord(c)) }
        body(SegmentManager.lockWord)
        body(LargeCache.lockWord)
        body(MetadataArena.lockWord)
        body(ThreadCacheRegistry.lockWord)
    }
}

@c(aethalloc_fork_prepare)
public func aethalloc_fork_prepare() {
    Runtime.forEachLock { Lock.acquire($0) }
}
// (The publisher's try-lock is not taken around fork: a writer interrupted
// by fork leaves the parent's file, which the child unmaps, and the child
// resets the lock.)

@c(aethalloc_fork_parent)
public func aethalloc_fork_parent() {
    Runtime.forEachLock { Lock.release($0) }
}

@c(aethalloc_fork_child)
public func aethalloc_fork_child() {
    Runtime.forEachLock { Lock.reset($0) }
    Lock.reset(Publisher.lockWord)
    // Only this thread exists here: the others' caches become orphans.
    ThreadCacheRegistry.adoptAfterFork()
    Reclaimer.resetAfterFork()
    Publisher.restartInChild()
}

@c(aethalloc_thread_exit)
public func aethalloc_thread_exit(_ cache: UnsafeMutableRawPointer?) {
    guard let cache else { return }
    let saved = OS.errno
    ThreadCache.detach(cache)
    OS.errno = saved
}

@c(aethalloc_process_init)
public func aethalloc_process_init() {
    Runtime.ensureInitialized()
    let state = Globals.process
    if !state.pointee.constructorRan {
        state.pointee.constructorRan = true
        OS.registerForkHandlers()
        Publisher.start()
    }
}

/// The library destructor (.fini_array: runs at exit without atexit's lock).
@c(aethalloc_process_exit)
public func aethalloc_process_exit() {
    if Globals.process.pointee.printStatsAtExit {
        if Variant.statsEnabled { MetricsSnapshot.take().printSummary() }
        HeapReport.printExitSummary()
    }
    Publisher.stop()
}
