// SimpleCache.swift: the simple caching policy (libaethalloc-simple.so).
//
// Per thread and class, a singly linked free list threaded through the
// blocks' first word, in two halves of B blocks each (B = half the
// anti-hoarding threshold, SizeClass.computedSimpleBatch):
//
//   hot    head -> ... -> nil        the fast paths push and pop here (<= B)
//   spare  a complete batch of B     its head
//
// When the thread holds the threshold (hot full and a spare), the spare
// batch moves to the class's global pool in one CAS: its head and count are
// known, nothing is walked. A thread that has not refilled the class since
// its last flush only frees it (a consumer, a long-lived thread freeing what
// short-lived ones allocated): it keeps no spare, and its full hot list goes
// to the pool at once, so it holds at most one batch of the class
// (thread_churn, one short-lived thread at a time: peak RSS 15.6-16.3 MB ->
// 10.7-10.8 MB). Refills take the spare or pop one batch from the pool, also
// in one CAS. At thread exit a hot list of at least half a batch goes to the
// pool as it is, with its count; a shorter one is walked back to its pages.
// Until blocks of a class travel between threads, its pool keeps one batch
// and the rest go back to their pages, which hand them out again in address
// order (GlobalPool.limit, as the magazine depot does).
// The pool is a TaggedStack of batch descriptors (`PoolBatch`, in the
// metadata arena), each naming a batch's head and count; the blocks
// themselves are never read by another thread while they sit on the pool,
// so their segments can be unmapped like any other.
//
// The fast push takes a block whenever the hot list is below its capacity,
// empty included: a program that frees a block and allocates one of the same
// class, again and again, with its list empty (a ring of packets, a queue
// whose length stays put) stays on the fast paths. The capacity is 0 only
// while the thread has no list of the class yet.
//
// Invariants: hot.count <= hot.capacity; hot.count blocks hang from
// hot.items, the last one linking to nil; a spare, if any, holds exactly B;
// a pooled batch holds at most B (exactly B except one left at thread exit).

struct SimpleLists {
    var spareHead: RawPointer?
    /// Whether the thread refilled this class since its last flush: only a
    /// thread that also allocates the class keeps a spare batch.
    var refilled: Bool
}

enum SimpleCache: CachePolicy {
    // Fast-path budget (x86-64, after inlining into malloc/free):
    //   pop:  load count, test, load head, load head.next, 2 stores, prefetch
    //         of the new head (the next pop reads it; when another core
    //         freed it, its line arrives while the program works)
    //   push: load count, load capacity, compare, load head, 3 stores
    @inline(__always)
    static func take(_ e: UnsafeMutablePointer<CacheEntry>) -> RawPointer {
        // Loaded as a non-optional pointer: `unsafelyUnwrapped` would leave
        // a test for nil on the fast path.
        let p = UnsafeRawPointer(e).load(fromByteOffset: CacheEntry.itemsOffset, as: RawPointer.self)
        let next = p.load(as: RawPointer?.self)
        e.pointee.items = next
        e.pointee.count &-= 1
        OS.prefetch(next)
        return p
    }

    @inline(__always)
    static func push(_ e: UnsafeMutablePointer<CacheEntry>, _ p: RawPointer) -> Bool {
        let n = e.pointee.count
        if n >= e.pointee.capacity { return false }
        p.storeBytes(of: e.pointee.items, as: RawPointer?.self)
        e.pointee.items = p
        e.pointee.count = n &+ 1
        return true
    }

    static func refill(_ tc: RawPointer, _ c: Int) -> RawPointer? {
        Stats.cacheMiss(tc)
        let hot = ThreadCache.hot(tc, c)
        let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
        let batch = Globals.classInfo(c).pointee.simpleBatch
        lists.pointee.refilled = true
        if let spare = lists.pointee.spareHead {
            setHot(c, hot, head: spare, count: batch)
            lists.pointee.spareHead = nil
        } else if let (head, count) = GlobalPool.pop(c, to: tc) {
            setHot(c, hot, head: head, count: count)
        } else {
            // From the pages, linked as they come (pageRefillBlocks).
            var buffer = BlockBuffer()
            var head: RawPointer? = nil
            let got = withUnsafeMutableBytes(of: &buffer) { raw in
                let slots = raw.baseAddress!.assumingMemoryBound(to: RawPointer?.self)
                let n = Central.fill(c, into: slots, max: pageRefillBlocks(c))
                for i in 0..<n {
                    let b = slots[i]!
                    b.storeBytes(of: head, as: RawPointer?.self)
                    head = b
                }
                return n
            }
            if got == 0 { return nil }
            setHot(c, hot, head: head, count: got)
        }
        return pop(hot)
    }

    /// The blocks a refill takes from the pages: half a batch, and at most
    /// a BlockBuffer. A thread that allocates a few blocks of many classes
    /// and exits (thread_churn) carves, links and at exit walks back only
    /// that many per class, and the pages' lock is still taken once per
    /// refill. (At 256 blocks, thread_churn concurrent=2 took 2.1x the time
    /// it takes at 32.)
    static func pageRefillBlocks(_ c: Int) -> Int {
        max(1, min(Globals.classInfo(c).pointee.simpleBatch / 2, BlockBuffer.slots))
    }

    static func flush(_ tc: RawPointer, _ c: Int, _ p: RawPointer) {
        let hot = ThreadCache.hot(tc, c)
        // The fast path found the list full or not set up; a trim on the way
        // here (ThreadCache.honorTrim) may have emptied it since.
        if push(hot, p) { return }
        let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
        if hot.pointee.count != 0 {
            let batch = Globals.classInfo(c).pointee.simpleBatch
            if let spare = lists.pointee.spareHead {
                // Hot is full: it becomes the spare; the older spare goes to the pool.
                GlobalPool.push(c, head: spare, count: batch, from: tc)
                lists.pointee.spareHead = hot.pointee.items
            } else if lists.pointee.refilled {
                lists.pointee.spareHead = hot.pointee.items
            } else {
                // Only frees since the last flush (a consumer, a thread
                // that frees what others allocated): a spare would sit
                // unused, so the full list goes to the pool at once.
                GlobalPool.push(c, head: hot.pointee.items!, count: batch, from: tc)
            }
        }
        lists.pointee.refilled = false
        // A new hot list of one block.
        p.storeBytes(of: nil, as: RawPointer?.self)
        setHot(c, hot, head: p, count: 1)
    }

    static func flushAll(_ tc: RawPointer) {
        for c in 0..<SizeClass.count {
            let hot = ThreadCache.hot(tc, c)
            let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
            let batch = Globals.classInfo(c).pointee.simpleBatch
            if let spare = lists.pointee.spareHead {
                GlobalPool.push(c, head: spare, count: batch, from: tc)
            }
            let n = Int(hot.pointee.count)
            if n >= batch / 2 && n > 0 {
                // At least half a batch goes to the pool as it is: a
                // short-lived thread that took a batch and used a few of its
                // blocks hands the rest on without walking them.
                GlobalPool.push(c, head: hot.pointee.items!, count: n, from: tc)
            } else if n > 0 {
                Central.drainList(c, head: hot.pointee.items, count: n)
            }
            lists.pointee = SimpleLists(spareHead: nil, refilled: false)
            hot.pointee = CacheEntry(items: nil, count: 0, capacity: 0)
        }
    }

    static func drainGlobal(_ c: Int) { GlobalPool.drainAll(c) }

    /// Batches on the pool, at the class's batch size each (an upper bound:
    /// one a thread left at exit may hold less).
    static func globalBlocks(_ c: Int) -> Int {
        Globals.depot(c).pointee.full.approximateCount() * Globals.classInfo(c).pointee.simpleBatch
    }

    @inline(__always)
    private static func setHot(_ c: Int, _ hot: UnsafeMutablePointer<CacheEntry>, head: RawPointer?, count: Int) {
        hot.pointee = CacheEntry(
            items: head, count: Int32(truncatingIfNeeded: count),
            capacity: Int32(truncatingIfNeeded: Globals.classInfo(c).pointee.simpleBatch))
    }
}

/// One batch on a pool: a descriptor carved from the metadata arena, which
/// is never unmapped, so a pop that reads a descriptor another thread
/// popped meanwhile reads mapped memory (the tag rejects the stale link;
/// see TaggedStack). Free descriptors wait on `Globals.emptyBatches`.
struct PoolBatch {
    /// Link on a TaggedStack (atomic word).
    var next: UInt
    var head: RawPointer?
    var count: Int

    static func obtain() -> UnsafeMutablePointer<PoolBatch>? {
        if let d = Globals.emptyBatches.pointee.pop() { return d.assumingMemoryBound(to: PoolBatch.self) }
        return MetadataArena.allocate(bytes: MemoryLayout<PoolBatch>.size)?.assumingMemoryBound(to: PoolBatch.self)
    }

    static func recycle(_ d: UnsafeMutablePointer<PoolBatch>) {
        Globals.emptyBatches.pointee.push(RawPointer(d))
    }
}

/// The simple variant's per-class global pools of complete batches, kept in
/// the same per-class slot as the magazine variant's depot (one policy is
/// compiled in per variant).
enum GlobalPool {
    /// The batches class `c`'s pool keeps: `Tuning.simpleUnsharedPoolBatches`
    /// until a thread pops a batch that another thread's cache pushed (the
    /// depot's record, `Depot.notePop`), then the class's `simplePoolLimit`.
    /// A pool that only hands a thread its own blocks back would hand them
    /// out last freed first, batch after batch, and a program that frees and
    /// rebuilds its structures would get them a little more scattered each
    /// time; the pages hand them out in address order instead.
    @inline(__always)
    static func limit(_ c: Int) -> Int {
        let full = Globals.classInfo(c).pointee.simplePoolLimit
        return Depot.isShared(c) ? full : Swift.min(full, Tuning.simpleUnsharedPoolBatches)
    }

    /// Moves a batch of `count` blocks linked from `head`, freed by cache
    /// `tc`, to class `c`'s pool; at the pool's limit, or with no
    /// memory for a descriptor, the blocks go back to their pages instead.
    static func push(_ c: Int, head: RawPointer, count: Int, from tc: RawPointer) {
        let stack = Globals.depot(c)
        guard stack.pointee.full.approximateCount() < limit(c),
            let d = PoolBatch.obtain()
        else {
            Central.drainList(c, head: head, count: count)
            return
        }
        d.pointee.head = head
        d.pointee.count = count
        Depot.notePush(c, from: tc)
        stack.pointee.full.push(RawPointer(d))
        Stats.depotTransfer()
    }

    /// A batch from class `c`'s pool for cache `tc`: its head and count.
    static func pop(_ c: Int, to tc: RawPointer) -> (RawPointer, Int)? {
        guard let raw = Globals.depot(c).pointee.full.pop() else { return nil }
        Depot.notePop(c, to: tc)
        let d = raw.assumingMemoryBound(to: PoolBatch.self)
        let batch = (d.pointee.head!, d.pointee.count)
        PoolBatch.recycle(d)
        Stats.depotTransfer()
        return batch
    }

    /// Every pooled batch of class `c` back to the pages (malloc_trim).
    /// Not through `pop`: a trim hands no blocks to a thread, so it does not
    /// mark the class shared.
    static func drainAll(_ c: Int) {
        while let raw = Globals.depot(c).pointee.full.pop() {
            let d = raw.assumingMemoryBound(to: PoolBatch.self)
            let (head, count) = (d.pointee.head, d.pointee.count)
            PoolBatch.recycle(d)
            Central.drainList(c, head: head, count: count)
        }
    }
}
