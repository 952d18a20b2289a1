// MagazineCache.swift: the magazine caching policy (default variant).
//
// Per thread and class: a loaded and a previous magazine (Bonwick). The hot
// entry mirrors the loaded magazine: `items` is its rounds array and `count`
// its fill, so the fast paths never touch the magazine header. Invariants:
//   - hot.capacity == 0  <=> no magazine is loaded (hot.items == nil)
//   - the previous magazine, if any, is either full or empty
//   - a thread holds at most 2 * capacity blocks of a class
// Misses trade whole magazines with the class's depot (one CAS), or go to the
// pages in one batch under the class lock. A thread that has not refilled a
// class since its last flush only frees it (a consumer, a long-lived thread
// freeing what short-lived ones allocated): its full magazines all go to the
// depot, so it keeps at most the one it is filling. A magazine taken from
// the depot of a class whose blocks travel between threads has its blocks
// prefetched for writing (`prefetchForWrite`); the fast paths issue no
// prefetch (one there cost tail_latency's median about 5 ns, BENCHMARK.md).
//
// Rounds are an array, not a chain through the blocks' first word: a chain
// was measured (BENCHMARK.md, "remote_free") and was no faster on
// small_objects and 1.14x slower on remote_free.

struct MagazinePair {
    var loaded: UnsafeMutablePointer<Magazine>?
    var previous: UnsafeMutablePointer<Magazine>?
    /// Whether the thread refilled this class since its last flush: only a
    /// thread that also allocates the class keeps a full magazine back.
    var refilled: Bool
}

enum MagazineCache: CachePolicy {
    // Fast-path budget (x86-64, after inlining into malloc/free):
    //   pop:  load count, test, load items, load slot, store count  (3 loads, 1 store, 1 branch)
    //   push: load count, load capacity, compare, load items, store slot, store count
    @inline(__always)
    static func take(_ e: UnsafeMutablePointer<CacheEntry>) -> RawPointer {
        let m = e.pointee.count &- 1
        e.pointee.count = m
        // m >= 0: as unsigned, the index needs no sign extension.
        return e.pointee.items.unsafelyUnwrapped.load(fromByteOffset: Int(UInt32(bitPattern: m)) &* 8, as: RawPointer.self)
    }

    @inline(__always)
    static func push(_ e: UnsafeMutablePointer<CacheEntry>, _ p: RawPointer) -> Bool {
        let n = e.pointee.count
        if n >= e.pointee.capacity { return false }
        e.pointee.items.unsafelyUnwrapped.storeBytes(of: p, toByteOffset: Int(n) &* 8, as: RawPointer.self)
        e.pointee.count = n &+ 1
        return true
    }

    static func refill(_ tc: RawPointer, _ c: Int) -> RawPointer? {
        Stats.cacheMiss(tc)
        let hot = ThreadCache.hot(tc, c)
        let pair = ThreadCache.cold(tc, c, as: MagazinePair.self)
        pair.pointee.refilled = true
        if let prev = pair.pointee.previous, prev.pointee.count > 0 {
            swap(c, hot, pair)
        } else if let full = Depot.popFull(c, to: tc) {
            if let prev = pair.pointee.previous { Magazine.recycle(prev) }
            unload(hot, pair)
            load(c, hot, pair, full)
            if Depot.isShared(c) { prefetchForWrite(full) }
        } else {
            if pair.pointee.loaded == nil {
                guard let m = Magazine.obtainEmpty() else { return ThreadCache.allocateDirect(c) }
                load(c, hot, pair, m)
            }
            let n = Central.fill(c, into: Magazine.rounds(pair.pointee.loaded!), max: Int(hot.pointee.capacity))
            if n == 0 { return nil }
            hot.pointee.count = Int32(n)
        }
        return pop(hot)
    }

    static func flush(_ tc: RawPointer, _ c: Int, _ p: RawPointer) {
        let hot = ThreadCache.hot(tc, c)
        let pair = ThreadCache.cold(tc, c, as: MagazinePair.self)
        let onlyFreed = !pair.pointee.refilled
        pair.pointee.refilled = false
        if pair.pointee.loaded == nil {
            guard let m = Magazine.obtainEmpty() else { return ThreadCache.deallocateDirect(p, c) }
            load(c, hot, pair, m)
        } else if let prev = pair.pointee.previous, prev.pointee.count == 0 {
            swap(c, hot, pair)
        } else {
            // The loaded magazine is full; so is the previous one, if any.
            if let prev = pair.pointee.previous {
                if !Depot.pushFull(c, prev, from: tc) {
                    // The depot is at its limit: the blocks go back to their
                    // pages, which hand them out again in address order.
                    Central.drain(c, from: Magazine.rounds(prev), count: prev.pointee.count)
                    prev.pointee.count = 0
                    swap(c, hot, pair)
                    _ = push(hot, p)
                    return
                }
                // The depot owns it now: another thread may pop it at once.
                pair.pointee.previous = nil
            }
            let full = pair.pointee.loaded.unsafelyUnwrapped
            full.pointee.count = Int(hot.pointee.count)
            if onlyFreed && Depot.pushFull(c, full, from: tc) {
                // No refill since the last flush (a consumer, a thread that
                // frees what others allocated): a full magazine kept back
                // would sit unused, so it goes to the depot too.
                pair.pointee.previous = nil
            } else {
                // previous := the full loaded magazine.
                pair.pointee.previous = full
            }
            // An empty magazine is loaded.
            pair.pointee.loaded = nil
            hot.pointee = CacheEntry(items: nil, count: 0, capacity: 0)
            // No memory for an empty magazine: the cache keeps its full one
            // as `previous` (if it kept one) and the block goes straight to
            // its page.
            guard let m = Magazine.obtainEmpty() else { return ThreadCache.deallocateDirect(p, c) }
            load(c, hot, pair, m)
        }
        _ = push(hot, p)
    }

    static func flushAll(_ tc: RawPointer) {
        for c in 0..<SizeClass.count {
            let hot = ThreadCache.hot(tc, c)
            let pair = ThreadCache.cold(tc, c, as: MagazinePair.self)
            if let m = pair.pointee.loaded {
                m.pointee.count = Int(hot.pointee.count)
                release(c, m, from: tc)
            }
            if let m = pair.pointee.previous { release(c, m, from: tc) }
            pair.pointee = MagazinePair(loaded: nil, previous: nil, refilled: false)
            hot.pointee = CacheEntry(items: nil, count: 0, capacity: 0)
        }
    }

    static func drainGlobal(_ c: Int) { Depot.drainAll(c) }

    /// Full magazines in the depot, at the class's capacity each.
    static func globalBlocks(_ c: Int) -> Int {
        Globals.depot(c).pointee.full.approximateCount() * Globals.classInfo(c).pointee.magazineCapacity
    }

    // ---- helpers ---------------------------------------------------------------

    /// A magazine from the depot of a shared class holds blocks that other
    /// threads freed, whose lines are likely in other cores' caches: each
    /// is fetched for writing now, while the thread still works, rather
    /// than at the program's first write to it.
    @inline(__always)
    private static func prefetchForWrite(_ m: UnsafeMutablePointer<Magazine>) {
        let rounds = Magazine.rounds(m)
        // In the order the pops take them: the last round first.
        var i = m.pointee.count
        while i > 0 {
            i &-= 1
            OS.prefetchForWrite(rounds[i])
        }
    }

    /// A magazine leaving a cache: full ones to the depot, the rest drained.
    private static func release(_ c: Int, _ m: UnsafeMutablePointer<Magazine>, from tc: RawPointer) {
        if m.pointee.count == Globals.classInfo(c).pointee.magazineCapacity && Depot.pushFull(c, m, from: tc) { return }
        Central.drain(c, from: Magazine.rounds(m), count: m.pointee.count)
        Magazine.recycle(m)
    }

    /// previous := loaded (with its count saved).
    @inline(__always)
    private static func unload(_ hot: UnsafeMutablePointer<CacheEntry>, _ pair: UnsafeMutablePointer<MagazinePair>) {
        if let m = pair.pointee.loaded { m.pointee.count = Int(hot.pointee.count) }
        pair.pointee.previous = pair.pointee.loaded
    }

    @inline(__always)
    private static func load(
        _ c: Int, _ hot: UnsafeMutablePointer<CacheEntry>, _ pair: UnsafeMutablePointer<MagazinePair>,
        _ m: UnsafeMutablePointer<Magazine>
    ) {
        pair.pointee.loaded = m
        hot.pointee = CacheEntry(
            items: RawPointer(Magazine.rounds(m)), count: Int32(truncatingIfNeeded: m.pointee.count),
            capacity: Int32(truncatingIfNeeded: Globals.classInfo(c).pointee.magazineCapacity))
    }

    /// Exchanges the loaded and previous magazines.
    private static func swap(_ c: Int, _ hot: UnsafeMutablePointer<CacheEntry>, _ pair: UnsafeMutablePointer<MagazinePair>) {
        let prev = pair.pointee.previous!
        unload(hot, pair)
        load(c, hot, pair, prev)
    }
}
