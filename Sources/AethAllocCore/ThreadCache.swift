// ThreadCache.swift: the per-thread cache and its life cycle.
//
// Layout (carved from the metadata arena, `bytes` long):
//
//   +0      hot[SizeClass.count]   CacheEntry, 16 bytes: what the fast paths touch
//   +768    cold[SizeClass.count]  32 bytes each: the caching policy's own state
//   +2304   ThreadStats            per-thread counters (metrics variant only)
//   +3072   nextFree               link on the registry's free list
//
// The thread's TLS slot points at its cache. A thread that has no cache
// (new, or torn down) points at `aeth_empty_cache`: all zero, so every entry
// has count 0 and capacity 0 and both fast paths fall into the slow path
// without an "initialised?" test. `aeth_tls_state` tells the slow path which
// case it is in:
//
//   0 (new)        attach a cache, then retry
//   1 (live)       the caching policy's refill / flush
//   2 (torn down)  the pthread key destructor ran: serve directly from the
//                  pages, never re-create a cache that nobody would free
//                  (glibc frees TLS blocks after the destructors ran)
import CAethAlloc

/// The part of a cache entry the fast paths touch. The meaning of `items`
/// is the caching policy's: a magazine's rounds or a free list's head.
struct CacheEntry {
    var items: RawPointer?
    var count: Int32
    var capacity: Int32
}

enum ThreadState {
    static let new: UInt = 0
    static let live: UInt = 1
    static let tornDown: UInt = 2
}

enum ThreadCache {
    static let hotOffset = 0
    static let coldOffset = 768
    static let coldStride = 32
    static let statsOffset = 2304
    static let nextFreeOffset = 3072
    /// A whole page, so the magazines carved after it from the arena start
    /// 512-byte aligned. With 3136 bytes, a magazine straddling a page
    /// boundary made the 64-byte class's malloc/free pair 3x slower
    /// (benches/alloc_free_loop size=64: 9.1 ns vs 2.9 ns per pair; no extra
    /// instructions under callgrind, so a memory-disambiguation stall).
    static let bytes = 4096

    @inline(__always) static var current: RawPointer { aeth_tls_cache_get().unsafelyUnwrapped }

    @inline(__always)
    static func hot(_ tc: RawPointer, _ c: Int) -> UnsafeMutablePointer<CacheEntry> {
        (tc + (hotOffset &+ c &* 16)).assumingMemoryBound(to: CacheEntry.self)
    }
    @inline(__always)
    static func cold<T>(_ tc: RawPointer, _ c: Int, as: T.Type) -> UnsafeMutablePointer<T> {
        (tc + (coldOffset &+ c &* coldStride)).assumingMemoryBound(to: T.self)
    }

    // ---- slow paths shared by every policy -----------------------------------

    /// A block of class `c` when the fast path found the cache empty.
    @inline(never)
    static func allocate(_ c: Int) -> RawPointer? {
        if aeth_tls_state_get() == ThreadState.new { _ = attach() }
        if aeth_tls_state_get() == ThreadState.live {
            let tc = current
            let p = Variant.Cache.refill(tc, c)
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
        if aeth_tls_state_get() == ThreadState.new { _ = attach() }
        if aeth_tls_state_get() == ThreadState.live {
            let tc = current
            Variant.Cache.flush(tc, c, p)
            Stats.freed(tc, c)
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

    // ---- life cycle ------------------------------------------------------------

    /// Gives the calling thread a cache. False if no memory for one.
    static func attach() -> Bool {
        Runtime.ensureInitialized()
        guard let tc = ThreadCacheRegistry.obtain() else { return false }
        aeth_tls_cache_set(tc)
        aeth_tls_state_set(ThreadState.live)
        // May allocate in glibc past the 32 inline keys; the cache is set, so
        // that allocation takes the normal path.
        aeth_thread_key_set(Globals.process.pointee.threadKey, tc)
        return true
    }

    /// Thread exit: everything cached goes back to the depot or the pages.
    static func detach(_ tc: RawPointer) {
        aeth_tls_cache_set(aeth_empty_cache_ptr())
        aeth_tls_state_set(ThreadState.tornDown)
        Variant.Cache.flushAll(tc)
        Stats.threadExit(tc)
        aeth_memset(tc, 0, ThreadCache.bytes)
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

/// Thread caches not in use, for reuse by new threads.
struct ThreadCacheRegistry: ~Copyable {
    var freeList: RawPointer?
    var live: Int

    static var lockWord: UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.registryLock)
    }

    static func obtain() -> RawPointer? {
        let r = Globals.registry
        Lock.acquire(lockWord)
        var tc = r.pointee.freeList
        if let t = tc { r.pointee.freeList = t.load(fromByteOffset: ThreadCache.nextFreeOffset, as: RawPointer?.self) }
        r.pointee.live += 1
        Lock.release(lockWord)
        if tc == nil { tc = MetadataArena.allocate(bytes: ThreadCache.bytes) }
        if let t = tc { aeth_memset(t, 0, ThreadCache.bytes) }
        return tc
    }

    /// Takes back a dead thread's cache. Returns how many remain live.
    @discardableResult
    static func recycle(_ tc: RawPointer) -> Int {
        let r = Globals.registry
        Lock.acquire(lockWord)
        tc.storeBytes(of: r.pointee.freeList, toByteOffset: ThreadCache.nextFreeOffset, as: RawPointer?.self)
        r.pointee.freeList = tc
        r.pointee.live -= 1
        let live = r.pointee.live
        Lock.release(lockWord)
        return live
    }
}

/// A caching policy: the seam between variants (see variants/*/Variant.swift).
/// The fast paths (`pop`, `push`) are inlined into malloc and free; the rest
/// runs when they fail.
protocol CachePolicy {
    /// A cached block of the entry's class, or nil when the entry is empty.
    static func pop(_ e: UnsafeMutablePointer<CacheEntry>) -> RawPointer?
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
}
