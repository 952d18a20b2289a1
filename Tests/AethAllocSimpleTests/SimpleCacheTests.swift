// White-box tests of the simple caching policy (SimpleCache.swift): the
// per-thread hot list and spare batch, the anti-hoarding move to the global
// pool, refills, flushAll/drainAll, the pool's batch descriptors and its
// limit, many threads passing blocks, malloc_trim, and a failed descriptor
// allocation. One serialized suite: the pools and pages are process-wide,
// and the tests count what they hold.
import CAethAlloc
import Foundation
import Synchronization
import Testing
@testable import AethAllocHostedSimple

@Suite(.serialized) struct SimpleCacheTests {
    /// The 1 KiB class: batches of 128 blocks, a pool of 16 batches.
    let c = SizeClass.computedIndex(of: 1024)
    var batch: Int { Globals.classInfo(c).pointee.simpleBatch }

    /// A cache by address only, for pushes and pops outside a thread's
    /// cache: the pool never reads it.
    let someCache = UnsafeMutableRawPointer(bitPattern: 0x1000)!

    /// The pool empty, and its class marked as shared (blocks travel
    /// between threads), so it keeps up to its full limit; the unshared
    /// limit has a test of its own.
    init() {
        Runtime.ensureInitialized()
        GlobalPool.drainAll(c)
        Globals.depot(c).pointee.shared.store(true, ordering: .relaxed)
    }

    /// A cache that belongs to no thread, so only the test moves its lists.
    func withPrivateCache(_ body: (UnsafeMutableRawPointer) throws -> Void) throws {
        let tc = try #require(ThreadCacheRegistry.obtain())
        defer {
            SimpleCache.flushAll(tc)
            ThreadCacheRegistry.recycle(tc)
        }
        try body(tc)
    }

    /// Pushes blocks from the pages until the hot list refuses one.
    func fillHot(_ hot: UnsafeMutablePointer<CacheEntry>) -> Int {
        var pushed = 0
        for b in blocksFromPages(c, Int(hot.pointee.capacity - hot.pointee.count)) {
            #expect(SimpleCache.push(hot, b), "the hot list refused a block below its capacity")
            pushed += 1
        }
        return pushed
    }

    /// Fills the hot list to its capacity; returns its head and its blocks,
    /// head first.
    func fillHotList(_ hot: UnsafeMutablePointer<CacheEntry>) throws -> (UnsafeMutableRawPointer, [UnsafeMutableRawPointer]) {
        _ = fillHot(hot)
        #expect(Int(hot.pointee.count) == batch)
        let head = try #require(hot.pointee.items)
        let list = walk(head, limit: batch + 1)
        #expect(list.count == batch)
        return (head, list)
    }

    @Test func hotListIsLifoAndStartsEmpty() throws {
        try withPrivateCache { tc in
            let hot = ThreadCache.hot(tc, c)
            #expect(SimpleCache.pop(hot) == nil)
            // No list of the class yet (capacity 0): the fast path refuses.
            let probe = blocksFromPages(c, 1)[0]
            #expect(!SimpleCache.push(hot, probe))
            ThreadCache.deallocateDirect(probe, c)
            // With an empty pool, a refill takes half a batch from the
            // pages, at most what its buffer holds.
            let want = SimpleCache.pageRefillBlocks(c)
            #expect(want == min(batch / 2, BlockBuffer.slots))
            #expect(BlockBuffer.slots * MemoryLayout<UnsafeMutableRawPointer?>.stride == MemoryLayout<BlockBuffer>.size)
            let first = try #require(SimpleCache.refill(tc, c))
            #expect(Int(hot.pointee.count) == want - 1)
            #expect(Int(hot.pointee.capacity) == batch)
            let chain = walk(hot.pointee.items, limit: batch + 1)
            #expect(chain.count == want - 1)
            #expect(Set((chain + [first]).map { UInt(bitPattern: $0) }).count == want)
            // Last in, first out.
            #expect(SimpleCache.push(hot, first))
            #expect(SimpleCache.pop(hot) == first)
            #expect(Int(hot.pointee.count) == want - 1)
            #expect(pageIsValid(first, sizeClass: c))
            ThreadCache.deallocateDirect(first, c)
        }
    }

    /// A thread that frees a block and allocates one of the same class, in
    /// turn, with its list empty (a ring of packets) stays on the fast
    /// paths: the push onto the empty list is a fast one.
    @Test func anEmptiedListTakesFastPushes() throws {
        try withPrivateCache { tc in
            let hot = ThreadCache.hot(tc, c)
            var held = [try #require(SimpleCache.refill(tc, c))]
            while let b = SimpleCache.pop(hot) { held.append(b) }
            #expect(hot.pointee.count == 0 && hot.pointee.items == nil && Int(hot.pointee.capacity) == batch)
            for round in 0..<3 {
                let b = held[round]
                #expect(SimpleCache.push(hot, b), "a push onto the emptied list took the slow path")
                #expect(hot.pointee.count == 1 && hot.pointee.items == b)
                #expect(b.load(as: UnsafeMutableRawPointer?.self) == nil, "the only block of a list links to nil")
                #expect(SimpleCache.pop(hot) == b)
                #expect(hot.pointee.count == 0 && hot.pointee.items == nil)
            }
            // The slow path, reached with room on the list (a trim emptied it
            // on the way), pushes as the fast path would: a list that is not
            // full never becomes the spare, which holds a whole batch.
            let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
            #expect(SimpleCache.push(hot, held[1]))
            SimpleCache.flush(tc, c, held[0])
            #expect(hot.pointee.count == 2 && walk(hot.pointee.items, limit: 3) == [held[0], held[1]])
            #expect(lists.pointee.spareHead == nil)
            #expect(SimpleCache.pop(hot) == held[0] && SimpleCache.pop(hot) == held[1])
            for b in held { ThreadCache.deallocateDirect(b, c) }
        }
    }

    @Test func atTheThresholdTheSpareBatchMovesToThePool() throws {
        try withPrivateCache { tc in
            let hot = ThreadCache.hot(tc, c)
            let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
            let first = try #require(SimpleCache.refill(tc, c))
            ThreadCache.deallocateDirect(first, c)
            let (firstHead, firstBatch) = try fillHotList(hot)
            // Full hot list, no spare: the hot list becomes the spare.
            let pool0 = poolCount(c)
            let p1 = blocksFromPages(c, 1)[0]
            SimpleCache.flush(tc, c, p1)
            #expect(poolCount(c) == pool0)
            #expect(lists.pointee.spareHead == firstHead)
            #expect(hot.pointee.items == p1 && hot.pointee.count == 1)
            #expect(p1.load(as: UnsafeMutableRawPointer?.self) == nil)
            // Threshold (full hot list and a spare): the spare goes to the pool whole.
            _ = fillHot(hot)
            let secondHead = try #require(hot.pointee.items)
            let p2 = blocksFromPages(c, 1)[0]
            SimpleCache.flush(tc, c, p2)
            #expect(poolCount(c) == pool0 + 1)
            let d = try #require(poolTop(c))
            #expect(d.pointee.head == firstHead)
            #expect(d.pointee.count == batch)
            #expect(walk(d.pointee.head, limit: batch + 1) == firstBatch)
            #expect(lists.pointee.spareHead == secondHead)
            #expect(hot.pointee.count == 1)
        }
        GlobalPool.drainAll(c)
    }

    /// A thread that frees a class without allocating it since its last
    /// flush (a consumer, a survivor freeing what dying threads allocated)
    /// keeps no spare: its full list goes to the pool at once, so it holds
    /// at most one batch of the class. Once it refills, it keeps a spare again.
    @Test func aThreadThatOnlyFreesKeepsNoSpare() throws {
        try withPrivateCache { tc in
            let hot = ThreadCache.hot(tc, c)
            let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
            // No list yet: the first free sets one up through the slow path.
            let first = blocksFromPages(c, 1)[0]
            SimpleCache.flush(tc, c, first)
            #expect(hot.pointee.count == 1 && Int(hot.pointee.capacity) == batch)
            let (fullHead, fullList) = try fillHotList(hot)
            let pool0 = poolCount(c)
            let p1 = blocksFromPages(c, 1)[0]
            SimpleCache.flush(tc, c, p1)
            #expect(lists.pointee.spareHead == nil, "a thread that only frees kept a spare")
            #expect(poolCount(c) == pool0 + 1)
            let d = try #require(poolTop(c))
            #expect(d.pointee.head == fullHead && d.pointee.count == batch)
            #expect(walk(d.pointee.head, limit: batch + 1) == fullList)
            #expect(hot.pointee.items == p1 && hot.pointee.count == 1)
            // Again, still without a refill: another whole batch to the pool.
            _ = fillHot(hot)
            SimpleCache.flush(tc, c, blocksFromPages(c, 1)[0])
            #expect(lists.pointee.spareHead == nil)
            #expect(poolCount(c) == pool0 + 2)
            // A refill (here from the pool) makes the thread an allocator of
            // the class: at its next full list it keeps a spare.
            var out: [UnsafeMutableRawPointer] = []
            while let b = SimpleCache.pop(hot) { out.append(b) }
            out.append(try #require(SimpleCache.refill(tc, c)))
            #expect(poolCount(c) == pool0 + 1)
            _ = fillHot(hot)
            let keptHead = try #require(hot.pointee.items)
            SimpleCache.flush(tc, c, blocksFromPages(c, 1)[0])
            #expect(lists.pointee.spareHead == keptHead)
            #expect(poolCount(c) == pool0 + 1)
            for b in out { ThreadCache.deallocateDirect(b, c) }
        }
        GlobalPool.drainAll(c)
    }

    @Test func refillTakesTheSpareThenThePoolThenThePages() throws {
        try withPrivateCache { tc in
            let hot = ThreadCache.hot(tc, c)
            let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
            var out: [UnsafeMutableRawPointer] = []
            out.append(try #require(SimpleCache.refill(tc, c)))
            _ = fillHot(hot)
            SimpleCache.flush(tc, c, blocksFromPages(c, 1)[0])
            let spare = try #require(lists.pointee.spareHead)
            while let b = SimpleCache.pop(hot) { out.append(b) }
            // 1. The spare.
            let pool0 = poolCount(c)
            #expect(try #require(SimpleCache.refill(tc, c)) == spare)
            #expect(Int(hot.pointee.count) == batch - 1)
            #expect(lists.pointee.spareHead == nil)
            #expect(poolCount(c) == pool0)
            out.append(spare)
            while let b = SimpleCache.pop(hot) { out.append(b) }
            // 2. A batch from the pool.
            let pooled = blocksFromPages(c, batch)
            let head = linkBatch(pooled)
            GlobalPool.push(c, head: head, count: batch, from: someCache)
            #expect(poolCount(c) == pool0 + 1)
            #expect(try #require(SimpleCache.refill(tc, c)) == head)
            #expect(poolCount(c) == pool0)
            #expect(Int(hot.pointee.count) == batch - 1)
            #expect(walk(hot.pointee.items, limit: batch) == Array(pooled.dropFirst()))
            out.append(head)
            while let b = SimpleCache.pop(hot) { out.append(b) }
            // 3. The pages.
            let usedBefore = usedBlocks(of: out, sizeClass: c)
            out.append(try #require(SimpleCache.refill(tc, c)))
            #expect(Int(hot.pointee.count) == SimpleCache.pageRefillBlocks(c) - 1)
            #expect(usedBlocks(of: out, sizeClass: c) >= usedBefore)
            #expect(Set(out.map { UInt(bitPattern: $0) }).count == out.count, "a block was handed out twice")
            for b in out { ThreadCache.deallocateDirect(b, c) }
            #expect(out.allSatisfy { pageIsValid($0, sizeClass: c) })
        }
    }

    @Test func flushAllPoolsWholeBatchesAndDrainsTheRest() throws {
        var held: [UnsafeMutableRawPointer] = []
        try withPrivateCache { tc in
            let hot = ThreadCache.hot(tc, c)
            let lists = ThreadCache.cold(tc, c, as: SimpleLists.self)
            // A full hot list and a spare: two whole batches for the pool.
            ThreadCache.deallocateDirect(try #require(SimpleCache.refill(tc, c)), c)
            _ = fillHot(hot)
            SimpleCache.flush(tc, c, blocksFromPages(c, 1)[0])
            _ = fillHot(hot)
            let pool0 = poolCount(c)
            SimpleCache.flushAll(tc)
            #expect(poolCount(c) == pool0 + 2)
            #expect(hot.pointee.items == nil && hot.pointee.count == 0 && hot.pointee.capacity == 0)
            #expect(lists.pointee.spareHead == nil)
            // A hot list of at least half a batch goes to the pool as it
            // is, with its count: a thread that took a batch and used a few
            // of its blocks does not walk the rest back to their pages.
            GlobalPool.drainAll(c)
            let pooled = blocksFromPages(c, batch)
            GlobalPool.push(c, head: linkBatch(pooled), count: batch, from: someCache)
            var taken = [try #require(SimpleCache.refill(tc, c))]
            for _ in 0..<(batch / 2 - 1) { taken.append(try #require(SimpleCache.pop(hot))) }
            let rest = walk(hot.pointee.items, limit: batch)
            #expect(rest.count == batch - batch / 2)
            #expect(poolCount(c) == 0)
            SimpleCache.flushAll(tc)
            #expect(poolCount(c) == 1)
            let d = try #require(poolTop(c))
            #expect(d.pointee.count == rest.count)
            #expect(walk(d.pointee.head, limit: batch + 1) == rest)
            // The next refill hands out exactly those blocks.
            let again = try #require(SimpleCache.refill(tc, c))
            #expect(Int(hot.pointee.count) == rest.count - 1)
            #expect([again] + walk(hot.pointee.items, limit: batch) == rest)
            taken.append(again)
            SimpleCache.flushAll(tc)
            for b in taken { ThreadCache.deallocateDirect(b, c) }
            // A partial hot list below half a batch (refilled from the
            // pages: the pool is emptied first) goes back to its pages, not
            // to the pool.
            GlobalPool.drainAll(c)
            held = [try #require(SimpleCache.refill(tc, c))]
            let partial = walk(hot.pointee.items, limit: batch)
            #expect(partial.count == SimpleCache.pageRefillBlocks(c) - 1)
            let usedBefore = usedBlocks(of: partial, sizeClass: c)
            SimpleCache.flushAll(tc)
            #expect(poolCount(c) == 0)
            #expect(usedBefore - usedBlocks(of: partial, sizeClass: c) == partial.count)
            #expect(partial.allSatisfy { pageIsValid($0, sizeClass: c) })
        }
        for b in held { ThreadCache.deallocateDirect(b, c) }
        GlobalPool.drainAll(c)
    }

    @Test func drainAllReturnsEveryBatchAndDescriptorsAreRecycled() throws {
        let pool0 = poolCount(c)
        #expect(pool0 == 0)
        var batches: [[UnsafeMutableRawPointer]] = []
        for _ in 0..<3 {
            let blocks = blocksFromPages(c, batch)
            GlobalPool.push(c, head: linkBatch(blocks), count: batch, from: someCache)
            batches.append(blocks)
        }
        #expect(poolCount(c) == 3)
        // A popped batch's descriptor goes to the free descriptors, and the
        // next push takes it from there: no new metadata is carved.
        let top = try #require(poolTop(c))
        let empty0 = Globals.emptyBatches.pointee.approximateCount()
        let (head, count) = try #require(GlobalPool.pop(c, to: someCache))
        #expect(head == batches[2].first && count == batch)
        #expect(walk(head, limit: batch + 1) == batches[2])
        #expect(Globals.emptyBatches.pointee.approximateCount() == empty0 + 1)
        Lock.acquire(MetadataArena.lockWord)
        let cursor = Globals.arena.pointee.cursor
        Lock.release(MetadataArena.lockWord)
        GlobalPool.push(c, head: head, count: count, from: someCache)
        #expect(poolTop(c) == top)
        #expect(Globals.emptyBatches.pointee.approximateCount() == empty0)
        Lock.acquire(MetadataArena.lockWord)
        #expect(Globals.arena.pointee.cursor == cursor)
        Lock.release(MetadataArena.lockWord)
        // drainAll: every batch back to its pages.
        let all = batches.flatMap { $0 }
        let usedBefore = usedBlocks(of: all, sizeClass: c)
        GlobalPool.drainAll(c)
        #expect(poolCount(c) == 0)
        #expect(GlobalPool.pop(c, to: someCache) == nil)
        #expect(usedBefore - usedBlocks(of: all, sizeClass: c) == all.count)
        #expect(all.allSatisfy { pageIsValid($0, sizeClass: c) })
    }

    @Test func thePoolKeepsAtMostItsLimit() throws {
        let limit = Globals.classInfo(c).pointee.simplePoolLimit
        var all: [UnsafeMutableRawPointer] = []
        for _ in 0..<(limit + 3) { all += blocksFromPages(c, batch) }
        let usedBefore = usedBlocks(of: all, sizeClass: c)
        for k in 0..<(limit + 3) {
            let head = linkBatch(Array(all[(k * batch)..<((k + 1) * batch)]))
            GlobalPool.push(c, head: head, count: batch, from: someCache)
        }
        #expect(poolCount(c) == limit)
        // The three batches past the limit went back to their pages.
        #expect(usedBefore - usedBlocks(of: all, sizeClass: c) == 3 * batch)
        #expect(all.allSatisfy { pageIsValid($0, sizeClass: c) })
        GlobalPool.drainAll(c)
        #expect(usedBlocks(of: all, sizeClass: c) == usedBefore - all.count)
    }

    /// Until a cache pops a batch another cache pushed, the pool keeps
    /// Tuning.simpleUnsharedPoolBatches and sends the rest to the pages;
    /// then it keeps its class's full limit.
    @Test func thePoolGrowsOnceItsBlocksChangeThreads() throws {
        let limit = Globals.classInfo(c).pointee.simplePoolLimit
        let unshared = Tuning.simpleUnsharedPoolBatches
        try #require(limit > unshared + 1)
        let d = Globals.depot(c)
        d.pointee.shared.store(false, ordering: .relaxed)
        defer { d.pointee.shared.store(true, ordering: .relaxed) }
        let a = UnsafeMutableRawPointer(bitPattern: 0x1000)!, b = UnsafeMutableRawPointer(bitPattern: 0x2000)!
        var all: [UnsafeMutableRawPointer] = []
        /// Pushes batches from `tc` until one goes to the pages; returns
        /// how many the pool took.
        func pushUntilRefused(from tc: UnsafeMutableRawPointer) -> Int {
            var accepted = 0
            while accepted <= limit {
                let blocks = blocksFromPages(c, batch)
                all += blocks
                let used = usedBlocks(of: blocks, sizeClass: c)
                let head = linkBatch(blocks)
                let before = poolCount(c)
                GlobalPool.push(c, head: head, count: batch, from: tc)
                if poolCount(c) == before {
                    #expect(used - usedBlocks(of: blocks, sizeClass: c) == batch, "a refused batch goes to its pages")
                    return accepted
                }
                accepted += 1
            }
            return accepted
        }
        #expect(pushUntilRefused(from: a) == unshared)
        // The cache that pushed takes a batch back: still unshared.
        let own = try #require(GlobalPool.pop(c, to: a))
        #expect(!Depot.isShared(c))
        GlobalPool.push(c, head: own.0, count: own.1, from: a)
        #expect(poolCount(c) == unshared)
        // Another cache takes one: from now on, the full limit.
        let other = try #require(GlobalPool.pop(c, to: b))
        #expect(Depot.isShared(c))
        GlobalPool.push(c, head: other.0, count: other.1, from: b)
        #expect(pushUntilRefused(from: b) == limit - unshared)
        #expect(poolCount(c) == limit)
        GlobalPool.drainAll(c)
        #expect(all.allSatisfy { pageIsValid($0, sizeClass: c) })
    }

    /// Producers allocate, consumers free what the producers allocated, so
    /// the consumers' caches overflow into the pool and the producers refill
    /// from it. Each block carries a cookie from allocation to free; a block
    /// handed out twice would be caught by the live set or its cookie.
    @Test func manyThreadsPassBlocksThroughThePool() throws {
        let producers = 4
        let consumers = 4
        let perProducer = 20_000
        let sizes = [24, 200, 1000]
        let live = LockedBox(Set<UInt>())
        let queue = LockedBox([(UInt, UInt64, Int)]())
        let done = Counter()
        let failures = Counter()
        let transfers0 = MetricsSnapshot.totals().depotTransfers
        runJoinedThreads(producers + consumers) { i in
            if i < producers {
                for k in 0..<perProducer {
                    // Stay close to the consumers, so their frees reach the
                    // pool while the producers still refill.
                    while queue.withLock({ $0.count }) > 1024 { sched_yield() }
                    let size = sizes[k % sizes.count]
                    guard let p = Allocator.allocate(UInt(size)) else {
                        failures.add(1)
                        continue
                    }
                    let a = UInt(bitPattern: p)
                    if !live.withLock({ $0.insert(a).inserted }) { failures.add(1) }
                    let cookie = UInt64(i) << 32 | UInt64(k)
                    p.storeBytes(of: cookie, as: UInt64.self)
                    p.storeBytes(of: cookie, toByteOffset: size - 8, as: UInt64.self)
                    queue.withLock { $0.append((a, cookie, size)) }
                }
                done.add(1)
            } else {
                // Each consumer keeps its last `window` blocks live a while
                // before freeing them, so a block handed out again too early
                // meets its first owner's cookie.
                let window = 1024
                var held: [(UInt, UInt64, Int)] = []
                held.reserveCapacity(window)
                var next = 0
                func release(_ item: (UInt, UInt64, Int)) {
                    let (a, cookie, size) = item
                    let p = UnsafeMutableRawPointer(bitPattern: a)!
                    if p.load(as: UInt64.self) != cookie || p.load(fromByteOffset: size - 8, as: UInt64.self) != cookie {
                        failures.add(1)
                    }
                    if live.withLock({ $0.remove(a) }) == nil { failures.add(1) }
                    Allocator.deallocate(p)
                }
                while true {
                    guard let item = queue.withLock({ $0.popLast() }) else {
                        if done.value == producers && queue.withLock({ $0.isEmpty }) { break }
                        sched_yield()
                        continue
                    }
                    if held.count < window {
                        held.append(item)
                    } else {
                        release(held[next])
                        held[next] = item
                        next = (next + 1) % window
                    }
                }
                for item in held { release(item) }
            }
        }
        #expect(failures.value == 0)
        #expect(live.withLock { $0.isEmpty })
        #expect(MetricsSnapshot.totals().depotTransfers > transfers0, "no batch went through a pool")
    }

    /// Batches on the pool are descriptors in the metadata arena, so the
    /// blocks can go back to their pages and their segments to the OS.
    @Test func mallocTrimUnmapsEmptySegments() throws {
        let size = 8192
        let count = 3 * Tuning.segmentBytes / size
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<count { blocks.append(try #require(Allocator.allocate(UInt(size)))) }
        let segments = Set(blocks.map { UInt(bitPattern: Segment.base(of: $0)) })
        #expect(segments.count >= 3)
        for b in blocks { Allocator.deallocate(b) }
        // Freed from one thread: the cache holds a batch or two, the pool the rest.
        #expect(poolCount(SizeClass.computedIndex(of: size)) > 0)
        _ = Reclaimer.trim()
        #expect(poolCount(SizeClass.computedIndex(of: size)) == 0)
        let unmapped = segments.filter { Segment.owner(of: UnsafeMutableRawPointer(bitPattern: $0)!) == nil }
        // Every segment but possibly the first (which may hold older pages) is gone.
        #expect(unmapped.count >= segments.count - 1)
    }

    /// With no free descriptor and the arena at the end of its chunk, a push
    /// needs a new mapping; when the OS refuses it, the batch goes back to
    /// its pages: nothing is lost, the pages stay consistent.
    @Test func aRefusedDescriptorSendsTheBatchToThePages() throws {
        var held: [UnsafeMutableRawPointer] = []
        while let d = Globals.emptyBatches.pointee.pop() { held.append(d) }
        defer { for d in held { PoolBatch.recycle(d.assumingMemoryBound(to: PoolBatch.self)) } }
        Lock.acquire(MetadataArena.lockWord)
        let left = Int(Globals.arena.pointee.end - Globals.arena.pointee.cursor) & ~63
        Lock.release(MetadataArena.lockWord)
        if left > 0 { _ = try #require(MetadataArena.allocate(bytes: left)) }
        let blocks = blocksFromPages(c, batch)
        let head = linkBatch(blocks)
        let usedBefore = usedBlocks(of: blocks, sizeClass: c)
        let pool0 = poolCount(c)
        FaultPlan.set(.mmap, every: 1)
        GlobalPool.push(c, head: head, count: batch, from: someCache)
        let injected = FaultPlan.injected(.mmap)
        FaultPlan.reset()
        #expect(injected >= 1, "the push did not need a new mapping")
        #expect(poolCount(c) == pool0)
        #expect(usedBefore - usedBlocks(of: blocks, sizeClass: c) == batch)
        #expect(blocks.allSatisfy { pageIsValid($0, sizeClass: c) })
    }
}
