// ThreadCache.swift: the per-thread cache and its life cycle.
//
// Layout (carved from the metadata arena, `bytes` long; every offset below is
// computed from the one before it and checked by Globals.checkLayout):
//
//   hotOffset     hot[SizeClass.count]   CacheEntry: what the fast paths touch
//   coldOffset    cold[SizeClass.count]  `coldStride` bytes each: the caching
//                                        policy's own state
//   statsOffset   per-thread counters (metrics variant; Stats.swift)
//   linksOffset   CacheLinks: the registry's lists and the busy flag
//
// The thread's TLS slot points at its cache. A thread that has no cache
// (new, or torn down) points at `OS.emptyCache`: all zero, so every entry
// has count 0 and capacity 0 and both fast paths fall into the slow path
// without an "initialised?" test. The TLS state tells the slow path which
// case it is in:
//
//   0 (new)        attach a cache, then retry
//   1 (live)       the caching policy's refill / flush
//   2 (torn down)  the pthread key destructor ran: serve directly from the
//                  pages, never re-create a cache that nobody would free
//                  (glibc frees TLS blocks after the destructors ran)
//   3 (no cache)   attaching failed (no memory for a cache, or the pthread
//                  key could not be set): serve directly, and try to attach
//                  again `Tuning.attachRetryMs` after the last failure

import Synchronization

/// The part of a cache entry the fast paths touch. The meaning of `items`
/// is the caching policy's: a magazine's rounds or a free list's head.
struct CacheEntry {
    var items: RawPointer?
    var count: Int32
    var capacity: Int32

    /// Where `items` lies: the first field.
    static let itemsOffset = 0
}

/// A cache's place in the registry (`ThreadCacheRegistry`).
struct CacheLinks {
    /// The live list (doubly linked) or the free/orphan lists (through `next`).
    var next: RawPointer?
    var prev: RawPointer?
    /// Non-zero while the owning thread changes its policy state on a slow
    /// path, and from the start of its thread-exit flush until the cache is
    /// handed to a new thread (`obtain` zeroes it). A fork child reclaims a
    /// dead thread's cache only if the fork did not catch it busy (its
    /// magazines could be half moved: the kernel copies memory page by
    /// page, so the child may see a batch already on the pool and still in
    /// the cache).
    var busy: UInt
    /// The `Globals.trimEpoch` this cache last emptied itself for (set
    /// to the current one when the cache is handed to a thread).
    var seenTrimEpoch: UInt
}

enum ThreadState {
    static let new: UInt = 0
    static let live: UInt = 1
    static let tornDown: UInt = 2
    static let noCache: UInt = 3
}

enum ThreadCache {
    @inline(__always) static var hotOffset: Int { 0 }
    @inline(__always) static var coldOffset: Int { hotOffset + MemoryLayout<CacheEntry>.stride * SizeClass.count }
    /// Room for the largest policy state (checked in Globals.checkLayout).
    @inline(__always) static var coldStride: Int { 32 }
    @inline(__always) static var statsOffset: Int { coldOffset + coldStride * SizeClass.count }
    @inline(__always) static var linksOffset: Int { statsOffset + ThreadStats.bytes }
    /// A whole page, so the magazines carved after it from the arena start
    /// 512-byte aligned. With 3136 bytes, a magazine straddling a page
    /// boundary made the 64-byte class's malloc/free pair 3x slower
    /// (benches/alloc_free_loop size=64: 9.1 ns vs 2.9 ns per pair; no extra
    /// instructions under callgrind, so a memory-disambiguation stall).
    static let bytes = 4096

    @inline(__always) static var current: RawPointer { OS.tlsCache }

    @inline(__always)
    static func hot(_ tc: RawPointer, _ c: Int) -> UnsafeMutablePointer<CacheEntry> {
        hot(tc, entryOffset: entryOffset(c))
    }
    @inline(__always)
    static func hot(_ tc: RawPointer, entryOffset: Int) -> UnsafeMutablePointer<CacheEntry> {
        (tc + entryOffset).assumingMemoryBound(to: CacheEntry.self)
    }
    /// Where class `c`'s entry lies in a cache (what Globals.sizeTable holds).
    @inline(__always)
    static func entryOffset(_ c: Int) -> Int { hotOffset &+ c &* MemoryLayout<CacheEntry>.stride }
    /// The class whose entry lies at `offset`.
    @inline(__always)
    static func sizeClass(ofEntryOffset offset: Int) -> Int { (offset &- hotOffset) / MemoryLayout<CacheEntry>.stride }
    @inline(__always)
    static func cold<T>(_ tc: RawPointer, _ c: Int, as: T.Type) -> UnsafeMutablePointer<T> {
        (tc + (coldOffset &+ c &* coldStride)).assumingMemoryBound(to: T.self)
    }
    @inline(__always)
    static func links(_ tc: RawPointer) -> UnsafeMutablePointer<CacheLinks> {
        (tc + linksOffset).assumingMemoryBound(to: CacheLinks.self)
    }

    // ---- slow paths shared by every policy -----------------------------------

    /// A block of class `c` when the fast path found the cache empty.
    @inline(never)
    static func allocate(_ c: Int) -> RawPointer? {
        if OS.tlsState != ThreadState.live { attachIfDue() }
        if OS.tlsState == ThreadState.live {
            let tc = current
            ThreadCacheRegistry.reclaimOrphansIfAny()
            setBusy(tc, true)
            honorTrim(tc)
            let p = Variant.Cache.refill(tc, c)
            setBusy(tc, false)
            if p != nil { Stats.allocated(tc, c) }
            return p
        }
        let p = allocateDirect(c)
        if p != nil { Stats.uncachedAllocated(c) }
        return p
    }

    /// Takes block `p` of class `c` when the fast path found the cache full.
    @inline(never)
    static func deallocate(_ p: RawPointer, _ c: Int) {
        if OS.tlsState != ThreadState.live { attachIfDue() }
        if OS.tlsState == ThreadState.live {
            let tc = current
            ThreadCacheRegistry.reclaimOrphansIfAny()
            setBusy(tc, true)
            honorTrim(tc)
            Variant.Cache.flush(tc, c, p)
            setBusy(tc, false)
            Stats.freed(tc, c)
            Stats.cacheOverflow(tc)
            return
        }
        deallocateDirect(p, c)
        Stats.uncachedFreed(c)
    }

    /// One block straight from the pages, bypassing any cache.
    static func allocateDirect(_ c: Int) -> RawPointer? {
        var slot: RawPointer? = nil
        let n = withUnsafeMutablePointer(to: &slot) { Central.fill(c, into: $0, max: 1) }
        return n == 1 ? slot : nil
    }

    static func deallocateDirect(_ p: RawPointer, _ c: Int) {
        var slot: RawPointer? = p
        withUnsafeMutablePointer(to: &slot) { Central.drain(c, from: $0, count: 1) }
    }

    /// A malloc_trim in another thread asks every cache to empty itself:
    /// this one does so at its first slow path after the request (busy set).
    @inline(__always)
    static func honorTrim(_ tc: RawPointer) {
        let epoch = Globals.trimEpoch.pointee.load(ordering: .relaxed)
        if links(tc).pointee.seenTrimEpoch != epoch { trimRequested(tc, epoch: epoch) }
    }

    @inline(never)
    private static func trimRequested(_ tc: RawPointer, epoch: UInt) {
        links(tc).pointee.seenTrimEpoch = epoch
        Variant.Cache.flushAll(tc)
        Reclaimer.returnShared()
    }

    /// Marks `tc` busy or not. The order matters only to a fork child, which
    /// sees another thread's memory as it was at the fork: a cache's policy
    /// state changes only between `busy = 1` and `busy = 0`.
    @inline(__always)
    static func setBusy(_ tc: RawPointer, _ busy: Bool) {
        let word = (tc + (linksOffset + 2 * MemoryLayout<RawPointer?>.stride)).assumingMemoryBound(to: Atomic<UInt>.self)
        if busy {
            word.pointee.store(1, ordering: .relaxed)
            atomicMemoryFence(ordering: .releasing)
        } else {
            word.pointee.store(0, ordering: .releasing)
        }
    }

    // ---- life cycle ------------------------------------------------------------

    /// A new thread attaches; one whose attach failed tries again once
    /// `Tuning.attachRetryMs` have passed since the last failure.
    @inline(__always)
    static func attachIfDue() {
        let state = OS.tlsState
        if state == ThreadState.new
            || (state == ThreadState.noCache
                && OS.nowMs() &- Globals.attachFailedMs.pointee.load(ordering: .relaxed) >= Tuning.attachRetryMs)
        {
            _ = attach()
        }
    }

    /// Gives the calling thread a cache. False if it could not: no memory
    /// for one, or the pthread key could not be set (then the destructor
    /// would never return the cache, so it is given back at once). The
    /// thread is then served directly from the pages (`noCache`).
    static func attach() -> Bool {
        Runtime.ensureInitialized()
        guard let tc = ThreadCacheRegistry.obtain() else { return attachFailed() }
        OS.setTLSCache(tc)
        OS.setTLSState(ThreadState.live)
        // glibc stores the first 32 keys inline; past them it allocates. The
        // cache is set, so that allocation takes the normal path.
        if !OS.setThreadKey(Globals.process.pointee.threadKey, tc) {
            OS.setTLSCache(OS.emptyCache)
            OS.setTLSState(ThreadState.noCache)
            Variant.Cache.flushAll(tc)
            ThreadCacheRegistry.recycle(tc)
            return attachFailed()
        }
        return true
    }

    private static func attachFailed() -> Bool {
        OS.setTLSState(ThreadState.noCache)
        Globals.attachFailedMs.pointee.store(OS.nowMs(), ordering: .relaxed)
        return false
    }

    /// Thread exit: everything cached goes back to the depot or the pages.
    static func detach(_ tc: RawPointer) {
        OS.setTLSCache(OS.emptyCache)
        OS.setTLSState(ThreadState.tornDown)
        // Busy until the cache is reused: a fork during the flush must not
        // make it an orphan the child flushes a second time.
        setBusy(tc, true)
        Variant.Cache.flushAll(tc)
        Stats.threadExit(tc)
        if ThreadCacheRegistry.recycle(tc) <= 1 {
            // Back to one thread: the depot or pool has nobody to hand blocks
            // to but the survivor, who has its own cache. What the exited
            // threads left there goes back to the pages, where empty ones can
            // return to the OS (tail_latency bench, one worker: peak RSS
            // 63.4 MB -> 58.6 MB, glibc 57.4 MB).
            for c in 0..<SizeClass.count { Variant.Cache.drainGlobal(c) }
        }
    }
}

/// Every thread cache: the live ones (one per thread with a cache), the free
/// ones (for reuse by new threads) and, in a fork child, the orphans (caches
/// of threads that exist only in the parent).
///
/// Invariants (under `lockWord`): `live` is the length of `liveList` (written
/// only under the lock); a cache
/// is on exactly one of the three lists or, between `obtain` and `recycle`,
/// owned by its thread and on `liveList`. `Globals.orphansPending` is true
/// while `orphans` is non-empty.
struct ThreadCacheRegistry: ~Copyable {
    var freeList: RawPointer?
    var liveList: RawPointer?
    var orphans: RawPointer?
    let live: Atomic<Int>

    static var lockWord: UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.registryLock)
    }

    /// A zeroed cache on the live list, or nil if the OS refuses memory.
    static func obtain() -> RawPointer? {
        let r = Globals.registry
        Lock.acquire(lockWord)
        var tc = r.pointee.freeList
        if let t = tc { r.pointee.freeList = ThreadCache.links(t).pointee.next }
        Lock.release(lockWord)
        if tc == nil { tc = MetadataArena.allocate(bytes: ThreadCache.bytes) }
        guard let t = tc else { return nil }
        OS.zero(t, bytes: ThreadCache.bytes)
        let links = ThreadCache.links(t)
        // A new cache holds nothing an earlier malloc_trim asked for.
        links.pointee.seenTrimEpoch = Globals.trimEpoch.pointee.load(ordering: .relaxed)
        Lock.acquire(lockWord)
        links.pointee.next = r.pointee.liveList
        if let n = r.pointee.liveList { ThreadCache.links(n).pointee.prev = t }
        r.pointee.liveList = t
        r.pointee.live.wrappingAdd(1, ordering: .relaxed)
        Lock.release(lockWord)
        return t
    }

    /// Takes back a dead thread's (emptied) cache. Returns how many remain live.
    @discardableResult
    static func recycle(_ tc: RawPointer) -> Int {
        let r = Globals.registry
        Lock.acquire(lockWord)
        let links = ThreadCache.links(tc)
        if let p = links.pointee.prev { ThreadCache.links(p).pointee.next = links.pointee.next } else { r.pointee.liveList = links.pointee.next }
        if let n = links.pointee.next { ThreadCache.links(n).pointee.prev = links.pointee.prev }
        r.pointee.live.wrappingSubtract(1, ordering: .relaxed)
        pushFree(r, tc)
        let live = r.pointee.live.load(ordering: .relaxed)
        Lock.release(lockWord)
        return live
    }

    /// In a fork child (one thread, locks reset): every live cache but the
    /// calling thread's belongs to a thread that does not exist here. Those
    /// the fork did not catch busy become orphans, reclaimed at the child's
    /// next slow path; the busy ones are left alone (a leak, never a block
    /// owned twice). O(threads) pointer work, nothing touched in the caches
    /// beyond their links, so fork+exec stays cheap.
    static func adoptAfterFork() {
        let r = Globals.registry
        let mine: RawPointer? = OS.tlsState == ThreadState.live ? OS.tlsCache : nil
        var tc = r.pointee.liveList
        r.pointee.liveList = nil
        r.pointee.live.store(0, ordering: .relaxed)
        var orphaned = false
        while let t = tc {
            tc = ThreadCache.links(t).pointee.next
            if t == mine {
                ThreadCache.links(t).pointee.next = nil
                ThreadCache.links(t).pointee.prev = nil
                r.pointee.liveList = t
                r.pointee.live.store(1, ordering: .relaxed)
            } else if ThreadCache.links(t).pointee.busy == 0 {
                ThreadCache.links(t).pointee.next = r.pointee.orphans
                r.pointee.orphans = t
                orphaned = true
            }
        }
        Globals.orphansPending.pointee.store(orphaned, ordering: .releasing)
    }

    /// Returns the orphans' blocks to the depots and pages, and their caches
    /// to the free list (fork child, first slow path after the fork).
    @inline(__always)
    static func reclaimOrphansIfAny() {
        if Globals.orphansPending.pointee.load(ordering: .relaxed) { reclaimOrphans() }
    }

    @inline(never)
    static func reclaimOrphans() {
        let r = Globals.registry
        Lock.acquire(lockWord)
        var list = r.pointee.orphans
        r.pointee.orphans = nil
        Globals.orphansPending.pointee.store(false, ordering: .relaxed)
        Lock.release(lockWord)
        while let t = list {
            list = ThreadCache.links(t).pointee.next
            Variant.Cache.flushAll(t)
            Stats.threadExit(t)
            Lock.acquire(lockWord)
            pushFree(r, t)
            Lock.release(lockWord)
        }
        if r.pointee.live.load(ordering: .relaxed) <= 1 {
            for c in 0..<SizeClass.count { Variant.Cache.drainGlobal(c) }
        }
    }

    private static func pushFree(_ r: UnsafeMutablePointer<ThreadCacheRegistry>, _ tc: RawPointer) {
        let links = ThreadCache.links(tc)
        links.pointee.prev = nil
        links.pointee.next = r.pointee.freeList
        r.pointee.freeList = tc
    }
}

/// A caching policy: the seam between variants (see variants/*/Variant.swift).
/// The fast paths (`pop`, `push`) are inlined into malloc and free; the rest
/// runs when they fail.
protocol CachePolicy {
    /// A cached block of the entry's class; only when `e.pointee.count > 0`
    /// (`pop` checks). Non-optional, so the fast path tests once.
    static func take(_ e: UnsafeMutablePointer<CacheEntry>) -> RawPointer
    /// Caches `p`; false when the entry is full.
    static func push(_ e: UnsafeMutablePointer<CacheEntry>, _ p: RawPointer) -> Bool
    /// Restocks class `c` of cache `tc` and returns a block (nil: out of memory).
    static func refill(_ tc: RawPointer, _ c: Int) -> RawPointer?
    /// Makes room in class `c` of cache `tc` and caches `p`.
    static func flush(_ tc: RawPointer, _ c: Int, _ p: RawPointer)
    /// Returns everything cache `tc` holds (thread exit, malloc_trim).
    static func flushAll(_ tc: RawPointer)
    /// Returns class `c`'s process-wide store (depot, pool) to the pages.
    static func drainGlobal(_ c: Int)
    /// Blocks of class `c` in the process-wide store now (approximate when
    /// other threads trade with it meanwhile).
    static func globalBlocks(_ c: Int) -> Int
}

extension CachePolicy {
    /// A cached block of the entry's class, or nil when the entry is empty.
    @inline(__always)
    static func pop(_ e: UnsafeMutablePointer<CacheEntry>) -> RawPointer? {
        e.pointee.count == 0 ? nil : take(e)
    }
}
