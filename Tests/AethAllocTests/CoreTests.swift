// White-box tests of pages, segments, magazines, the depot, the large path
// and the allocator's entry points, on the core compiled in normal Swift.
// Each test checks the structures' invariants after its steps.
//
// The allocator's state is process-wide (segments, dirty bytes, the depot,
// the counters, the test clock), so the suites that use it take the
// `.exclusiveCoreState` trait: their tests run one at a time, and each can
// assert exact figures for what it did. Tests without it (the size-class
// table, the tagged stack on memory of its own) still run in parallel.
import CAethAlloc
import Foundation
import Synchronization
import Testing
@testable import AethAllocHosted

/// A value behind an NSLock, shared between threads of a test.
final class LockedBox<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ value: T) { self.value = value }
    func withLock<R>(_ body: (inout T) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

/// Hands non-Sendable values (pointers into a test's own memory) to the
/// threads the test starts and waits for.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One test at a time, across suites, holds the allocator's process-wide
/// state (`.exclusiveCoreState`).
actor CoreStateGate {
    static let shared = CoreStateGate()
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !held {
            held = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { held = false } else { waiters.removeFirst().resume() }
    }
}

/// Runs each test case of the suite (or test) it is applied to while
/// holding `CoreStateGate`: no other such test runs meanwhile, in any suite.
struct ExclusiveCoreState: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    /// Per test case: a scope around a whole suite would hold the gate its
    /// own tests wait for.
    func scopeProvider(for test: Test, testCase: Test.Case?) -> ExclusiveCoreState? {
        testCase == nil ? nil : self
    }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        await CoreStateGate.shared.acquire()
        do {
            try await function()
        } catch {
            await CoreStateGate.shared.release()
            throw error
        }
        await CoreStateGate.shared.release()
    }
}

extension Trait where Self == ExclusiveCoreState {
    /// The test uses the allocator's process-wide state: it runs alone
    /// among the tests that do.
    static var exclusiveCoreState: Self { ExclusiveCoreState() }
}

/// Runs `body` with the medium cache off and emptied (malloc_trim), for tests
/// of what happens to freed slices: a freed medium block then goes back to
/// its segment. (An exclusiveCoreState test.)
func withoutMediumCache<T>(_ body: () throws -> T) rethrows -> T {
    let saved = Globals.process.pointee.mediumCache
    Globals.process.pointee.mediumCache = false
    defer { Globals.process.pointee.mediumCache = saved }
    _ = Reclaimer.trim()
    return try body()
}

/// Checks the page invariant (used + free bitmap == handed-out blocks) of the
/// page owning `p`, under its class lock.
func pageIsValid(_ p: UnsafeMutableRawPointer) -> Bool {
    let seg = Segment.base(of: p)
    let c = Int(Segment.sliceClass(seg, Segment.sliceIndex(of: p)))
    guard c < SizeClass.count else { return false }
    Lock.acquire(Central.lockWord(c))
    defer { Lock.release(Central.lockWord(c)) }
    return Central.isValid(Segment.page(of: p, in: seg))
}

@Suite(.exclusiveCoreState) struct PageTests {
    init() { Runtime.ensureInitialized() }

    @Test(arguments: 0..<SizeClass.count)
    func fillAndDrainEveryClass(_ c: Int) throws {
        let info = Globals.classInfo(c).pointee
        let n = min(3 * info.blocksPerPage + 1, 400)
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: n)
        defer { buf.deallocate() }
        var got = 0
        while got < n {
            let k = Central.fill(c, into: buf + got, max: min(62, n - got))
            try #require(k > 0, "fill returned nothing")
            got += k
        }
        var seen = Set<UInt>()
        for i in 0..<n {
            let p = try #require(buf[i])
            let a = UInt(bitPattern: p)
            #expect(a % 16 == 0)
            #expect(seen.insert(a).inserted, "block handed out twice")
            // Address arithmetic finds the block's segment, class and page.
            let owner = try #require(Segment.owner(of: p))
            #expect(owner == Segment.base(of: p))
            #expect(Int(Segment.sliceClass(owner, Segment.sliceIndex(of: p))) == c)
            let page = Segment.page(of: p, in: owner)
            let offset = p - page.pointee.start!
            #expect(offset >= 0 && offset % info.blockSize == 0)
            #expect(offset + info.blockSize <= info.blocksPerPage * info.blockSize)
            // The whole block is writable.
            memset(p, 0xA5, info.blockSize)
        }
        #expect(pageIsValid(buf[0]!))
        Central.drain(c, from: buf, count: n)
        // Blocks are reusable after the drain.
        let again = Central.fill(c, into: buf, max: 8)
        #expect(again > 0)
        Central.drain(c, from: buf, count: again)
    }

    /// Blocks that went back to their page in any order come out of the
    /// next fill in address order, the lowest where a magazine pops first
    /// (the end of the batch), so a structure rebuilt from them is laid out
    /// as a fresh one would be.
    @Test func returnedBlocksComeBackInAddressOrder() throws {
        let c = 1  // 32-byte blocks
        let n = 124
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 2 * n)
        defer { buf.deallocate() }
        var got = 0
        while got < 2 * n { got += Central.fill(c, into: buf + got, max: 2 * n - got) }
        // Keep the first half out (the page stays in use); return the second
        // half scrambled: odd positions first, then even ones backwards.
        let back = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: n)
        defer { back.deallocate() }
        var k = 0
        for i in stride(from: 1, to: n, by: 2) { back[k] = buf[n + i]; k += 1 }
        for i in stride(from: n - 2, through: 0, by: -2) { back[k] = buf[n + i]; k += 1 }
        let returned = Set((0..<n).map { UInt(bitPattern: back[$0]) })
        Central.drain(c, from: back, count: n)
        let again = Central.fill(c, into: back, max: n)
        try #require(again == n)
        // Popped from the top: back[n-1] first. Another page of the class
        // may be filled from first; the blocks of the returned half's page
        // must come out in order.
        func page(_ p: UnsafeMutableRawPointer) -> UnsafeMutablePointer<PageMeta> { Segment.page(of: p, in: Segment.base(of: p)) }
        let popped = (0..<n).reversed().map { back[$0]! }
            .filter { returned.contains(UInt(bitPattern: $0)) && page($0) == page(buf[n]!) }
            .map { UInt(bitPattern: $0) }
        try #require(popped.count >= 2, "the fill took none of the returned blocks")
        #expect(popped == popped.sorted(), "returned blocks are not handed out in address order")
        Central.drain(c, from: back, count: n)
        Central.drain(c, from: buf, count: n)
    }

    /// Pages of more than 64 blocks keep their free bitmaps in their
    /// segment's rows, apart from each other and from every block, and their
    /// first blocks start at different colour offsets.
    @Test func freeBitmapsLiveInTheSegmentMetadataAndPagesAreColoured() throws {
        let c = 1  // 32-byte blocks: 2,000-odd a page, a bitmap of 4 lines
        let info = Globals.classInfo(c)
        let n = 8 * info.pointee.blocksPerPage
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: n)
        defer { buf.deallocate() }
        var got = 0
        while got < n {
            let k = Central.fill(c, into: buf + got, max: n - got)
            try #require(k > 0)
            got += k
        }
        defer { Central.drain(c, from: buf, count: n) }
        var pages: [UnsafeMutablePointer<PageMeta>] = []
        for i in 0..<n {
            let page = Segment.page(of: buf[i]!, in: Segment.base(of: buf[i]!))
            if !pages.contains(page) { pages.append(page) }
        }
        try #require(pages.count >= 8)
        let words = PageMeta.bitmapWords(blocks: info.pointee.blocksPerPage)
        var seen = Set<UInt>()
        var offsets = Set<Int>()
        for page in pages {
            let start = page.pointee.start!
            let seg = UInt(bitPattern: Segment.base(of: start))
            let bits = Central.bitmap(page)
            for w in 0..<words {
                let word = UInt(bitPattern: Segment.bitmapWord(bits, w))
                #expect(word >= seg + UInt(Segment.freeBitmapsOffset) && word + 8 <= seg + UInt(Segment.liveBitmapsOffset))
                #expect(seen.insert(word).inserted, "two pages share a bitmap word")
            }
            // The bitmap's first line is the page's own.
            #expect(UInt(bitPattern: bits) % UInt(Tuning.cacheLineBytes) == 0)
            let offset = Int(bitPattern: UInt(bitPattern: start) & UInt(Tuning.sliceBytes - 1))
            #expect(offset == SizeClass.firstBlockOffset(info, sizeClass: c, headSlice: Segment.sliceIndex(of: start)))
            offsets.insert(offset)
        }
        #expect(offsets.count > 1, "every page's first block at the same offset")
    }

    @Test func emptyPagesGoBackToTheirSegment() throws {
        let c = SizeClass.count - 1  // 64 KiB blocks: a few per page
        let info = Globals.classInfo(c).pointee
        let n = 4 * info.blocksPerPage
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: n)
        defer { buf.deallocate() }
        var got = 0
        while got < n { got += Central.fill(c, into: buf + got, max: n - got) }
        let firstPage = Segment.page(of: buf[0]!, in: Segment.base(of: buf[0]!))
        let slice = Segment.sliceIndex(of: firstPage.pointee.start!)
        let seg = Segment.base(of: buf[0]!)
        Central.drain(c, from: buf, count: n)
        _ = Central.releaseEmptyPages(c)
        // The slice is now free or reused by another class's page, never
        // still marked as class c with no page behind it.
        let mark = Segment.sliceClass(seg, slice)
        #expect(mark == SizeClass.markFree || Int(mark) != c || Segment.page(of: firstPage.pointee.start!, in: seg).pointee.used > 0)
    }
}

@Suite(.exclusiveCoreState) struct MagazineTests {
    init() { Runtime.ensureInitialized() }

    /// A magazine fills whole cache lines (no line is shared by two
    /// magazines that different threads write), 512 bytes with 62 slots.
    @Test func magazineLayoutIsDerivedFromItsSlots() {
        #expect(Magazine.roundsOffset == 16)
        #expect(Tuning.magazineBytes == 512)
        #expect(Tuning.magazineBytes % 64 == 0)
    }

    @Test func taggedStackIsLifoAndCounts() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { raw.deallocate() }
        memset(raw, 0, 64)
        let stack = raw.assumingMemoryBound(to: TaggedStack.self)
        let nodes = (0..<5).map { _ in UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16) }
        defer { nodes.forEach { $0.deallocate() } }
        for n in nodes { stack.pointee.push(n) }
        #expect(stack.pointee.approximateCount() == 5)
        for n in nodes.reversed() { #expect(stack.pointee.pop() == n) }
        #expect(stack.pointee.pop() == nil)
        #expect(stack.pointee.approximateCount() == 0)
    }

    /// The ABA interleaving, driven step by step: a pop reads head (A, t)
    /// and A's link B, then stalls; meanwhile A and B are popped and A is
    /// pushed back. The stalled pop's compare-and-swap must now fail: the
    /// head holds A again but not the same tag. Without the tag it would
    /// succeed and install B, a node another thread holds.
    @Test func taggedStackRejectsAStalePop() throws {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { raw.deallocate() }
        memset(raw, 0, 64)
        let stack = raw.assumingMemoryBound(to: TaggedStack.self)
        let nodes = (0..<3).map { _ in UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16) }
        defer { nodes.forEach { $0.deallocate() } }
        let (a, b, c) = (nodes[0], nodes[1], nodes[2])
        for n in [c, b, a] { stack.pointee.push(n) }  // head: a -> b -> c
        // The stalled pop's first step (what TaggedStack.pop reads).
        let seen = stack.pointee.head.load(ordering: .acquiring)
        try #require(seen.first == UInt(bitPattern: a))
        let link = a.load(as: UInt.self)
        #expect(link == UInt(bitPattern: b))
        // Another thread, meanwhile.
        #expect(stack.pointee.pop() == a)
        #expect(stack.pointee.pop() == b)
        stack.pointee.push(a)
        // The stalled pop resumes.
        let stale = WordPair(first: link, second: seen.second &+ 1)
        let (exchanged, now) = stack.pointee.head.compareExchange(
            expected: seen, desired: stale, ordering: .acquiringAndReleasing)
        #expect(!exchanged, "a stale pop installed a node another thread holds")
        #expect(now.first == UInt(bitPattern: a) && now.second != seen.second)
        #expect(stack.pointee.pop() == a && stack.pointee.pop() == c && stack.pointee.pop() == nil)
    }

    /// Threads pop and push the same nodes as fast as they can: no node is
    /// ever lost or held by two threads at once (ABA would do either). The
    /// threads start together from a barrier, and the test checks that
    /// their operations really overlapped: at some moment several nodes
    /// were out of the stack at once, held by different threads.
    @Test func taggedStackUnderContention() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { raw.deallocate() }
        memset(raw, 0, 64)
        let stack = raw.assumingMemoryBound(to: TaggedStack.self)
        let nodeCount = 64
        let nodes = (0..<nodeCount).map { _ -> UnsafeMutableRawPointer in
            let n = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
            n.storeBytes(of: 0, toByteOffset: 8, as: Int.self)
            return n
        }
        defer { nodes.forEach { $0.deallocate() } }
        for n in nodes { stack.pointee.push(n) }
        let owners = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: nodeCount)
        for i in 0..<nodeCount { (owners + i).initialize(to: Atomic(0)) }
        defer { owners.deallocate() }
        let index = Dictionary(uniqueKeysWithValues: nodes.enumerated().map { (UInt(bitPattern: $1), $0) })
        let threads = 4
        // failures, threads ready, nodes out, most nodes out at once.
        let counters = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 4)
        for i in 0..<4 { (counters + i).initialize(to: Atomic(0)) }
        defer { counters.deallocate() }
        let (failures, ready, out, mostOut) = (counters, counters + 1, counters + 2, counters + 3)
        // Threads of our own (concurrentPerform may run fewer at once than
        // it has iterations, which the barrier would wait for forever).
        let finished = DispatchSemaphore(value: 0)
        let shared = UnsafeSendable((stack, owners, index, failures, ready, out, mostOut))
        // The threads must overlap for the test to mean anything; on two
        // cores shared with other tests a round can run them one after
        // another, so rounds repeat (bounded) until one overlapped.
        for _ in 0..<20 where mostOut.pointee.load(ordering: .relaxed) < 2 {
            ready.pointee.store(0, ordering: .relaxed)
            for _ in 0..<threads {
                Thread {
                    let (stack, owners, index, failures, ready, out, mostOut) = shared.value
                    // Barrier: nobody starts before every thread is running.
                    ready.pointee.add(1, ordering: .acquiringAndReleasing)
                    while ready.pointee.load(ordering: .acquiring) < threads { sched_yield() }
                    for _ in 0..<50_000 {
                        guard let n = stack.pointee.pop() else { continue }
                        let held = out.pointee.add(1, ordering: .relaxed).newValue
                        if held > mostOut.pointee.load(ordering: .relaxed) { _ = mostOut.pointee.max(held, ordering: .relaxed) }
                        let i = index[UInt(bitPattern: n)]!
                        if owners[i].add(1, ordering: .relaxed).newValue != 1 { failures.pointee.add(1, ordering: .relaxed) }
                        owners[i].subtract(1, ordering: .relaxed)
                        out.pointee.subtract(1, ordering: .relaxed)
                        stack.pointee.push(n)
                    }
                    finished.signal()
                }.start()
            }
            for _ in 0..<threads { finished.wait() }
        }
        #expect(mostOut.pointee.load(ordering: .relaxed) >= 2, "the threads' pops and pushes never overlapped in 20 rounds")
        #expect(failures.pointee.load(ordering: .relaxed) == 0)
        var count = 0
        var seen = Set<UInt>()
        while let n = stack.pointee.pop() {
            count += 1
            seen.insert(UInt(bitPattern: n))
        }
        #expect(count == nodeCount && seen.count == nodeCount)
    }

    /// Uses class 40 (40 KiB blocks), which no other test allocates, and
    /// pushes only magazines really full of blocks: the depot is process-wide
    /// and tests run in parallel, so anything pushed must be valid for any
    /// thread that pops it.
    @Test func depotRespectsItsLimit() throws {
        let c = 40
        let info = Globals.classInfo(c).pointee
        let limit = info.depotLimit
        let capacity = info.magazineCapacity
        var pushed: [UnsafeMutablePointer<Magazine>] = []
        var refused = 0
        for _ in 0..<(limit + 3) {
            let m = try #require(Magazine.obtainEmpty())
            try #require(Central.fill(c, into: Magazine.rounds(m), max: capacity) == capacity)
            m.pointee.count = capacity
            // The limit of a class whose blocks travel between threads
            // (until then its depotUnsharedLimit; see the test below).
            if Depot.pushFull(c, m, from: RawPointer(bitPattern: 0x1000)!, limit: limit) {
                pushed.append(m)
            } else {
                refused += 1
                Central.drain(c, from: Magazine.rounds(m), count: capacity)
                Magazine.recycle(m)
            }
        }
        #expect(refused == 3, "the depot keeps at most its limit")
        Depot.drainAll(c)
        #expect(Globals.depot(c).pointee.full.approximateCount() == 0)
    }

    /// A depot keeps its class's depotUnsharedLimit until a cache pops a
    /// magazine another cache pushed last, then its class's full limit.
    @Test func theDepotGrowsOnceItsBlocksChangeThreads() throws {
        let c = 41
        let info = Globals.classInfo(c).pointee
        try #require(info.depotLimit > info.depotUnsharedLimit + 1)
        let d = Globals.depot(c)
        d.pointee.shared.store(false, ordering: .relaxed)
        defer { d.pointee.shared.store(false, ordering: .relaxed) }
        // Two caches, by address only: the depot never reads them.
        let a = RawPointer(bitPattern: 0x1000)!, b = RawPointer(bitPattern: 0x2000)!
        func fullMagazine() throws -> UnsafeMutablePointer<Magazine> {
            let m = try #require(Magazine.obtainEmpty())
            try #require(Central.fill(c, into: Magazine.rounds(m), max: info.magazineCapacity) == info.magazineCapacity)
            m.pointee.count = info.magazineCapacity
            return m
        }
        func pushUntilRefused(from tc: RawPointer) throws -> Int {
            var accepted = 0
            while true {
                let m = try fullMagazine()
                if !Depot.pushFull(c, m, from: tc) {
                    Central.drain(c, from: Magazine.rounds(m), count: m.pointee.count)
                    Magazine.recycle(m)
                    return accepted
                }
                accepted += 1
            }
        }
        #expect(try pushUntilRefused(from: a) == info.depotUnsharedLimit)
        // The cache that pushed takes one back: still unshared.
        let own = try #require(Depot.popFull(c, to: a))
        let sharedAfterOwnPop = d.pointee.shared.load(ordering: .relaxed)
        #expect(!sharedAfterOwnPop)
        #expect(Depot.pushFull(c, own, from: a))
        // Another cache takes one: from now on, the full limit.
        let other = try #require(Depot.popFull(c, to: b))
        let sharedAfterOtherPop = d.pointee.shared.load(ordering: .relaxed)
        #expect(sharedAfterOtherPop)
        #expect(Depot.pushFull(c, other, from: b))
        #expect(try pushUntilRefused(from: b) == info.depotLimit - info.depotUnsharedLimit)
        Depot.drainAll(c)
    }

    /// While no block of a class has changed threads, its depot keeps a
    /// magazine of neighbouring blocks (either way, with a break or two) up
    /// to the class's depotUnsharedLimit, and a scattered one only up to
    /// Tuning.depotMinMagazines. The magazine is never pushed: its rounds
    /// are addresses only.
    @Test func theUnsharedDepotKeepsSequencesLongerThanScatteredBlocks() throws {
        let c = 15  // 512-byte blocks: 62 rounds, an unshared limit of 8 magazines
        let info = Globals.classInfo(c)
        let n = info.pointee.magazineCapacity
        try #require(n >= 2 * Tuning.sequenceSamples)
        try #require(info.pointee.depotUnsharedLimit > Tuning.depotMinMagazines)
        let m = try #require(Magazine.obtainEmpty())
        defer {
            m.pointee.count = 0
            Magazine.recycle(m)
        }
        let rounds = Magazine.rounds(m)
        func limit(count: Int = n, _ block: (Int) -> Int) -> Int {
            for i in 0..<count { rounds[i] = RawPointer(bitPattern: 0x7000_0000_0000 + block(i) * info.pointee.blockSize) }
            m.pointee.count = count
            return Depot.unsharedLimit(for: m, info)
        }
        let kept = info.pointee.depotUnsharedLimit
        #expect(limit { $0 } == kept, "ascending")
        #expect(limit { n - 1 - $0 } == kept, "descending")
        #expect(limit { $0 < n / 2 ? $0 + n : $0 } == kept, "two runs")
        #expect(limit { ($0 * 7) % n } == Tuning.depotMinMagazines, "every seventh block")
        #expect(limit { $0 * 2 } == Tuning.depotMinMagazines, "every other block")
        #expect(limit { ($0 % 2 == 0 ? $0 : n + $0) } == Tuning.depotMinMagazines, "two interleaved runs")
        #expect(limit(count: 2 * Tuning.sequenceSamples - 1) { ($0 * 7) % n } == kept, "too few rounds to tell")
    }

    /// A thread that frees a class without refilling it since its last
    /// flush (a consumer) sends every full magazine to the depot and keeps
    /// only the one it is filling; one that refilled keeps a full one back.
    @Test func aThreadThatOnlyFreesKeepsNoFullMagazine() throws {
        let c = 39
        let capacity = Globals.classInfo(c).pointee.magazineCapacity
        let d = Globals.depot(c)
        let wasShared = d.pointee.shared.load(ordering: .relaxed)
        d.pointee.shared.store(true, ordering: .relaxed)
        defer { d.pointee.shared.store(wasShared, ordering: .relaxed) }
        Depot.drainAll(c)
        let out0 = Central.outBlocks(c)
        let tc = try #require(ThreadCacheRegistry.obtain())
        let hot = ThreadCache.hot(tc, c)
        let pair = ThreadCache.cold(tc, c, as: MagazinePair.self)
        let buffer = UnsafeMutablePointer<RawPointer?>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        func block() throws -> RawPointer {
            try #require(Central.fill(c, into: buffer, max: 1) == 1)
            return try #require(buffer[0])
        }
        /// Frees blocks from the pages until the loaded magazine is full.
        func fillLoaded() throws -> [RawPointer] {
            var freed: [RawPointer] = []
            while hot.pointee.count < hot.pointee.capacity {
                let b = try block()
                #expect(MagazineCache.push(hot, b))
                freed.append(b)
            }
            return freed
        }
        func depotCount() -> Int { d.pointee.full.approximateCount() }
        // The first free sets up a magazine.
        let first = try block()
        MagazineCache.flush(tc, c, first)
        #expect(pair.pointee.loaded != nil && pair.pointee.previous == nil && hot.pointee.count == 1)
        for round in 1...2 {
            let full = try #require(pair.pointee.loaded)
            let freed = (round == 1 ? [first] : [try #require(hot.pointee.items).load(as: RawPointer.self)]) + (try fillLoaded())
            let depot0 = depotCount()
            MagazineCache.flush(tc, c, try block())
            #expect(pair.pointee.previous == nil, "a thread that only frees kept a full magazine")
            #expect(depotCount() == depot0 + 1)
            let top = try #require(RawPointer(bitPattern: d.pointee.full.head.load(ordering: .relaxed).first))
            #expect(top == RawPointer(full))
            #expect(full.pointee.count == capacity)
            #expect(Array(UnsafeBufferPointer(start: Magazine.rounds(full), count: capacity)) == freed)
            #expect(pair.pointee.loaded != full && hot.pointee.count == 1)
        }
        // A refill since the last flush: the full magazine stays as `previous`.
        pair.pointee.refilled = true
        let kept = try #require(pair.pointee.loaded)
        _ = try fillLoaded()
        let depot1 = depotCount()
        MagazineCache.flush(tc, c, try block())
        #expect(pair.pointee.previous == kept)
        #expect(depotCount() == depot1)
        // Then only frees again: both full magazines go to the depot.
        _ = try fillLoaded()
        MagazineCache.flush(tc, c, try block())
        #expect(pair.pointee.previous == nil)
        #expect(depotCount() == depot1 + 2)
        MagazineCache.flushAll(tc)
        ThreadCacheRegistry.recycle(tc)
        Depot.drainAll(c)
        #expect(Central.outBlocks(c) == out0, "every block went back to its pages")
    }
}

@Suite(.exclusiveCoreState) struct AllocatorTests {
    init() { Runtime.ensureInitialized() }

    @Test(arguments: [0, 1, 15, 16, 17, 100, 1000, 1024, 1025, 5000, 65535, 65536, 65537, 200_000, 3_000_000])
    func mallocFreeSizes(_ size: Int) throws {
        var blocks: [UnsafeMutableRawPointer] = []
        for i in 0..<200 {
            let p = try #require(Allocator.allocate(UInt(size)))
            #expect(UInt(bitPattern: p) % 16 == 0)
            let usable = Int(Allocator.usableSize(p))
            #expect(usable >= size)
            memset(p, Int32(i & 0xFF), usable)
            blocks.append(p)
            if size > 100_000 && i > 4 { break }
        }
        for (i, p) in blocks.enumerated() {
            let usable = Int(Allocator.usableSize(p))
            let bytes = p.assumingMemoryBound(to: UInt8.self)
            #expect(bytes[0] == UInt8(i & 0xFF) && bytes[usable - 1] == UInt8(i & 0xFF), "block \(i) was overwritten")
            Allocator.deallocate(p)
        }
    }

    @Test func reallocKeepsContentsAcrossEveryPath() throws {
        var p = try #require(Allocator.allocate(10))
        memset(p, 7, 10)
        var size = 10
        // Small -> small -> large -> large grown by mremap -> shrunk -> small.
        for next in [100, 5000, 70_000, 1_000_000, 9_000_000, 300_000, 50, 8] {
            let q = try #require(Allocator.reallocate(p, UInt(next)))
            let keep = min(size, next)
            let bytes = q.assumingMemoryBound(to: UInt8.self)
            for i in stride(from: 0, to: keep, by: max(1, keep / 97)) { #expect(bytes[i] == 7) }
            #expect(bytes[keep - 1] == 7)
            memset(q, 7, next)
            p = q
            size = next
        }
        Allocator.deallocate(p)
        // realloc(NULL, 0) is malloc(0), as in glibc: a unique block that
        // can be freed, never NULL.
        let z1 = try #require(Allocator.reallocate(nil, 0))
        let z2 = try #require(Allocator.reallocate(nil, 0))
        #expect(z1 != z2)
        #expect(Segment.owner(of: z1) != nil && Segment.owner(of: z2) != nil)
        Allocator.deallocate(z1)
        Allocator.deallocate(z2)
    }

    @Test func blocksAboveTheClassesAreFoundFromTheirAddress() throws {
        // 100 KB: a medium block (a run of slices) while the alignment is at
        // most a slice, a large mapping beyond; 2 MiB is always large.
        for (size, align) in [(100_000, 16), (100_000, 4096), (100_000, 65536), (1 << 20, 16),
                              (100_000, 1 << 20), (100_000, 2 << 20), (100_000, 8 << 20), (2 << 20, 16)] {
            let p = try #require(Allocator.allocateAligned(UInt(align), UInt(size)))
            #expect(UInt(bitPattern: p) % UInt(align) == 0)
            #expect(Allocator.usableSize(p) >= UInt(size))
            switch Allocator.classify(p, operation: "test") {
            case .medium(let page):
                #expect(size <= Tuning.mediumMaxBytes && align <= Tuning.sliceBytes, "size \(size) align \(align)")
                #expect(page.pointee.start == p && page.pointee.used == 1)
                #expect(Int(page.pointee.slices) == (size + Tuning.sliceBytes - 1) / Tuning.sliceBytes)
                #expect(Segment.sliceClass(Segment.base(of: p), Segment.sliceIndex(of: p)) == SizeClass.markMedium)
            case .large(let base):
                #expect(size > Tuning.mediumMaxBytes || align > Tuning.sliceBytes, "size \(size) align \(align)")
                #expect(Segment.owner(of: p) == base)
                #expect(Large.header(base).pointee.inUse == 1)
            case .small:
                Issue.record("a \(size)-byte block is small")
            }
            Allocator.deallocate(p)
        }
    }

    @Test func mediumBlocksGrowInPlaceAndComeBackZeroed() throws {
        // Wherever the two runs land, growing the first never takes the
        // second's slices while it is live: the grown block does not overlap
        // it and its bytes are untouched. Once the second is freed, the first
        // grows again (in place if the slices after it are free).
        let a = try #require(Allocator.allocate(200_000))
        let b = try #require(Allocator.allocate(200_000))
        memset(a, 0xA5, 200_000)
        memset(b, 0x5A, 200_000)
        let grown = try #require(Allocator.reallocate(a, 500_000))
        let bytes = grown.assumingMemoryBound(to: UInt8.self)
        #expect(bytes[0] == 0xA5 && bytes[199_999] == 0xA5)
        let grownEnd = grown + Int(Allocator.usableSize(grown))
        let bEnd = b + Int(Allocator.usableSize(b))
        #expect(grownEnd <= b || bEnd <= grown, "grew over a live neighbour")
        let bBytes = b.assumingMemoryBound(to: UInt8.self)
        #expect((0..<200_000).allSatisfy { bBytes[$0] == 0x5A }, "the live neighbour was overwritten")
        Allocator.deallocate(b)
        let again = try #require(Allocator.reallocate(grown, 900_000))
        #expect(again.assumingMemoryBound(to: UInt8.self)[199_999] == 0xA5)
        #expect(Allocator.usableSize(again) >= 900_000)
        memset(again, 0xFF, 900_000)
        Allocator.deallocate(again)
        // calloc over slices that were just written must still read as zero.
        for _ in 0..<4 {
            let z = try #require(Allocator.allocateZeroed(count: 1, size: 700_000))
            let zb = z.assumingMemoryBound(to: UInt8.self)
            var nonzero = 0
            for i in stride(from: 0, to: 700_000, by: 509) where zb[i] != 0 { nonzero += 1 }
            #expect(nonzero == 0 && zb[699_999] == 0)
            memset(z, 0xEE, 700_000)
            Allocator.deallocate(z)
        }
    }

    @Test func freedSlicesStayWithinTheDirtyBudget() throws { try withoutMediumCache {
        // 24 MiB of medium blocks freed at once while 24 MiB stay: what
        // stays committed is bounded by the budget, computed as
        // `SegmentManager.dirtyBudget` does: a share of the heap, where the
        // heap is the bytes in pages (usedBytes, medium blocks included)
        // plus medium and large blocks once more, at least dirtyMinBytes.
        // Freed and kept blocks alternate, a kept one last, so no segment
        // becomes wholly free (it would be unmapped, never dirty) and the
        // budget is what bounds the dirty bytes. (No other test uses the
        // allocator meanwhile, so nothing else moves the budget.)
        let freed = 24 * Tuning.mediumMaxBytes
        // The budget computed below leaves out the churn allowance, which
        // an earlier test's purge (less than the purge delay ago, on the
        // real clock) would grant to the slices this test commits afresh:
        // the record of past purges is cleared, so none is granted.
        Lock.acquire(SegmentManager.lockWord)
        SegmentManager.shared.pointee.budgetPurgeMs = 0
        SegmentManager.shared.pointee.budgetPurgedBytes = 0
        SegmentManager.shared.pointee.refaultedBytes = 0
        SegmentManager.shared.pointee.churnBytes = 0
        Lock.release(SegmentManager.lockWord)
        let returnedBefore = MetricsSnapshot.totals().bytesReturned
        var blocks: [RawPointer] = []
        var kept: [RawPointer] = []
        for _ in 0..<24 {
            for keep in [false, true] {
                let p = try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes)))
                memset(p, 1, Tuning.mediumMaxBytes)
                if keep { kept.append(p) } else { blocks.append(p) }
            }
        }
        defer { kept.forEach { Allocator.deallocate($0) } }
        for p in blocks { Allocator.deallocate(p) }
        Lock.acquire(SegmentManager.lockWord)
        let m = SegmentManager.shared
        let dirty = m.pointee.dirtyBytes
        let heap = m.pointee.usedBytes + m.pointee.mediumBytes + Globals.largeLiveBytes.pointee.load(ordering: .relaxed)
        Lock.release(SegmentManager.lockWord)
        let budget = max(Tuning.dirtyMinBytes, heap / 100 * Options.dirtyPercent)
        #expect(dirty <= budget, "dirty \(dirty), budget \(budget) (heap \(heap))")
        // Every freed slice is still dirty, or was purged or unmapped, both
        // counted as returned.
        let returned = Int(MetricsSnapshot.totals().bytesReturned - returnedBefore)
        #expect(returned >= freed - dirty, "returned \(returned) of \(freed) freed, \(dirty) dirty")
        // malloc_trim purges the rest.
        _ = Reclaimer.trim()
        Lock.acquire(SegmentManager.lockWord)
        let after = SegmentManager.shared.pointee.dirtyBytes
        Lock.release(SegmentManager.lockWord)
        #expect(after == 0, "\(after) bytes still dirty after malloc_trim")
    } }

    @Test func layoutFactsTheFastPathsRelyOn() {
        // SimpleCache.take loads `items` at this offset without the type.
        #expect(MemoryLayout<CacheEntry>.offset(of: \CacheEntry.items) == CacheEntry.itemsOffset)
        // free's one-mask test: the map's reach is a power of two.
        let reach = UInt(OS.segmentMapEntries) << UInt(Tuning.segmentShift)
        #expect(reach & (reach - 1) == 0)
        #expect(Allocator.outsideMapOrMisaligned == ~(reach - 1) | 15)
    }

    @Test func bestFitPicksTheShortestHole() {
        // free slices 1-3 (3), 8-9 (2), 20-40 (21)
        let free: UInt64 = (0b111 << 1) | (0b11 << 8) | (((1 << 21) - 1) << 20)
        #expect(SegmentManager.bestFit(free, slices: 2) == 8)
        #expect(SegmentManager.bestFit(free, slices: 3) == 1)
        #expect(SegmentManager.bestFit(free, slices: 4) == 20)
        #expect(SegmentManager.bestFit(free, slices: 22) == -1)
        #expect(SegmentManager.longestRun(free) == 21)
        #expect(SegmentManager.longestRun(~UInt64(1)) == 63)
        #expect(SegmentManager.bestFit(~UInt64(1), slices: 63) == 1)
        #expect(SegmentManager.longestRun(0) == 0)
    }

    @Test func mediumBlocksAreCarvedBestFitThroughTheBins() throws { try withoutMediumCache {
        // Medium blocks of 1-16 slices, a random half freed: holes of every
        // length in many segments.
        var rng = SystemRandomNumberGenerator()
        var blocks: [RawPointer] = []
        for _ in 0..<600 {
            let slices = Int.random(in: 1...16, using: &rng)
            blocks.append(try #require(Allocator.allocate(UInt(slices * Tuning.sliceBytes - 100))))
        }
        blocks.shuffle(using: &rng)
        for p in blocks.suffix(300) { Allocator.deallocate(p) }
        blocks.removeLast(300)
        defer { for p in blocks { Allocator.deallocate(p) } }

        /// Each listed segment's longest runs of free committed slices and
        /// of free slices.
        func longestRuns() -> [UInt: (dirty: Int, free: Int)] {
            Lock.acquire(SegmentManager.lockWord)
            defer { Lock.release(SegmentManager.lockWord) }
            var longest: [UInt: (dirty: Int, free: Int)] = [:]
            var s = SegmentManager.shared.pointee.withFree
            while let h = s {
                longest[UInt(bitPattern: h)] = (
                    SegmentManager.longestRun(h.pointee.dirtyMask), SegmentManager.longestRun(h.pointee.freeMask)
                )
                s = h.pointee.next
            }
            return longest
        }
        func binsConsistent() -> Bool {
            Lock.acquire(SegmentManager.lockWord)
            defer { Lock.release(SegmentManager.lockWord) }
            return SegmentBins.consistent(listed: SegmentManager.shared.pointee.withFree)
        }
        #expect(binsConsistent())
        // Each new block comes from a segment whose longest committed free
        // run was the shortest that holds it, over every segment; failing
        // that, whose longest free run was.
        var checked = 0
        for slices in [2, 3, 7, 16, 2, 5, 4, 9, 12, 6] {  // medium blocks (one slice is a size class)
            let before = longestRuns()
            let p = try #require(Allocator.allocate(UInt(slices * Tuning.sliceBytes)))
            blocks.append(p)
            let h = UInt(bitPattern: Segment.header(Segment.base(of: p)))
            if let want = before.values.map(\.dirty).filter({ $0 >= slices }).min() {
                #expect(before[h]?.dirty == want, "\(slices) slices: longest committed run \(before[h]?.dirty ?? -1), best \(want)")
                checked += 1
            } else if let want = before.values.map(\.free).filter({ $0 >= slices }).min() {
                #expect(before[h]?.free == want, "\(slices) slices: longest free run \(before[h]?.free ?? -1), best \(want)")
                checked += 1
            }
            #expect(binsConsistent())
        }
        #expect(checked >= 8)
    } }

    @Test func alignedSmallBlocks() throws {
        for align in [32, 64, 256, 4096, 65536] {
            for size in [1, 24, 100, 4000] {
                let p = try #require(Allocator.allocateAligned(UInt(align), UInt(size)))
                #expect(UInt(bitPattern: p) % UInt(align) == 0, "align \(align) size \(size)")
                #expect(Allocator.usableSize(p) >= UInt(size))
                Allocator.deallocate(p)
            }
        }
    }

    @Test func callocZeroesReusedMemory() throws {
        for size in [48, 3000, 100_000] {
            var ps: [UnsafeMutableRawPointer] = []
            for _ in 0..<50 {
                let p = try #require(Allocator.allocate(UInt(size)))
                memset(p, 0xEE, size)
                ps.append(p)
            }
            ps.forEach { Allocator.deallocate($0) }
            for _ in 0..<50 {
                let p = try #require(Allocator.allocateZeroed(count: 1, size: UInt(size)))
                let bytes = p.assumingMemoryBound(to: UInt8.self)
                #expect((0..<size).allSatisfy { bytes[$0] == 0 })
                Allocator.deallocate(p)
            }
        }
    }

    @Test func overflowAndHugeRequestsFail() {
        #expect(Allocator.allocate(UInt.max) == nil)
        #expect(Allocator.allocate(UInt(Int.max) + 1) == nil)
        #expect(Allocator.allocateZeroed(count: UInt.max / 2, size: 3) == nil)
        #expect(Allocator.reallocateArray(nil, count: UInt.max / 4, size: 8) == nil)
    }

    /// Blocks freed by threads that then exit are not stranded: thread exit
    /// returns each thread's magazines to the depot or the pages, so once the
    /// depot is drained every page that held them has no block out.
    /// (A class no other test allocates, so the counts are this test's own.)
    @Test func threadExitReturnsCachedBlocks() throws {
        let size = 3500  // class 3584
        let c = SizeClass.index(of: size)
        let threads = 16
        // NSLock rather than Mutex: ThreadSanitizer understands pthread locks.
        let addresses = LockedBox<Set<UInt>>([])
        let allocated = DispatchGroup()
        let go = DispatchSemaphore(value: 0)
        var started: [pthread_t] = []
        for _ in 0..<threads {
            allocated.enter()
            let tid = try #require(startThread {
                var local: [UnsafeMutableRawPointer] = []
                for _ in 0..<500 { if let p = Allocator.allocate(UInt(size)) { local.append(p) } }
                addresses.withLock { s in local.forEach { s.insert(UInt(bitPattern: $0)) } }
                // Hold the blocks until every thread has its own.
                allocated.leave()
                go.wait()
                local.forEach { Allocator.deallocate($0) }
            })
            started.append(tid)
        }
        allocated.wait()
        for _ in 0..<threads { go.signal() }
        // pthread_join returns once the thread has run its key destructors
        // (the allocator's thread-exit hook among them): no waiting on time.
        for tid in started { #expect(pthread_join(tid, nil) == 0) }
        let all = addresses.withLock { $0 }
        #expect(all.count == threads * 500)
        // Every page that held one of the blocks is now empty, or was given
        // back (its slices free or carved for something else), once the
        // depot is drained; blocks stranded in a dead thread's cache would
        // stay counted.
        Variant.Cache.drainGlobal(c)
        var stranded = 0
        // The class's lock orders us after a thread draining into its
        // pages; the segment lock (taken after it, as the allocator does)
        // keeps segments from being unmapped while we look.
        Lock.acquire(Central.lockWord(c))
        Lock.acquire(SegmentManager.lockWord)
        for a in all {
            let p = RawPointer(bitPattern: a)!
            guard Segment.owner(of: p) != nil else { continue }
            let seg = Segment.base(of: p)
            if Int(Segment.sliceClass(seg, Segment.sliceIndex(of: p))) != c { continue }
            if Segment.page(of: p, in: seg).pointee.used != 0 { stranded += 1 }
        }
        Lock.release(SegmentManager.lockWord)
        Lock.release(Central.lockWord(c))
        #expect(stranded == 0, "\(stranded) blocks' pages still count blocks out after every thread exited")
    }
}

/// The header chunks (segments and large mappings) in the segment map now:
/// the addresses of the mappings AethAlloc holds.
func mappedHeaderChunks() -> Set<UInt> {
    Lock.acquire(SegmentManager.lockWord)
    defer { Lock.release(SegmentManager.lockWord) }
    var found = Set<UInt>()
    // Eight map bytes at a time: the map is 32 MiB, nearly all zero.
    let words = UnsafeRawPointer(Globals.segmentMap).assumingMemoryBound(to: UInt64.self)
    for w in 0..<(OS.segmentMapEntries / 8) where words[w] != 0 {
        for i in (w * 8)..<(w * 8 + 8) where Globals.segmentMap[i] == 1 {
            found.insert(UInt(i) << UInt(Tuning.segmentShift))
        }
    }
    return found
}

/// Starts a joinable pthread running `body`; nil if pthread_create failed.
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
    final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }
    let context = Unmanaged.passRetained(Body(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        Unmanaged<Body>.fromOpaque(arg!).takeRetainedValue().run()
        return nil
    }, context)
    if rc != 0 {
        Unmanaged<Body>.fromOpaque(context).release()
        return nil
    }
    return tid
}

/// The hosted build compiles statistics in (variants/hosted/Variant.swift),
/// so the counters behind the metrics variant are checked here.
@Suite(.exclusiveCoreState) struct StatsTests {
    init() { Runtime.ensureInitialized() }

    @Test func countersFollowAllocationsOnAThread() throws {
        let snapshots = LockedBox<[MetricsSnapshot]>([])
        let segmentCount = LockedBox<Int>(0)
        // A thread of our own, so its cache and counters are fresh; joined,
        // so its exit (which flushes its cache) is over before the next test.
        let tid = try #require(startThread {
            _ = Reclaimer.trim()  // no empty segment kept warm
            let before = MetricsSnapshot.take()
            let mappedBefore = mappedHeaderChunks()
            var blocks: [UnsafeMutableRawPointer] = []
            for i in 0..<5000 { blocks.append(Allocator.allocate(UInt(16 + i % 900))!) }
            let big = Allocator.allocate(1 << 20)!
            // 32 MiB of medium blocks (untouched): more than the holes of the
            // segments there are can take, so new segments are mapped.
            var medium: [UnsafeMutableRawPointer] = []
            for _ in 0..<32 { medium.append(Allocator.allocate(UInt(Tuning.mediumMaxBytes))!) }
            let after = MetricsSnapshot.take()
            // All of these live in segments (1 MiB is a medium block).
            let held = Set((blocks + [big] + medium).compactMap { Segment.owner(of: $0) }.map { UInt(bitPattern: $0) })
            blocks.forEach { Allocator.deallocate($0) }
            medium.forEach { Allocator.deallocate($0) }
            Allocator.deallocate(big)
            let afterFree = MetricsSnapshot.take()
            snapshots.withLock { $0 = [before, after, afterFree] }
            segmentCount.withLock { $0 = held.subtracting(mappedBefore).count }
        })
        #expect(pthread_join(tid, nil) == 0)
        let taken = snapshots.withLock { $0 }
        let newSegments = segmentCount.withLock { $0 }
        try #require(taken.count == 3)
        try #require(newSegments >= 1, "no segment was mapped for 32 MiB of medium blocks")
        let (before, after, afterFree) = (taken[0], taken[1], taken[2])
        // Threads of earlier tests may flush counters late, so compare at
        // least what we did.
        #expect(after.allocs - before.allocs >= 5001)
        #expect(after.directAllocs - before.directAllocs >= 1)
        #expect(after.cacheMisses > before.cacheMisses)
        #expect(after.cacheHits - before.cacheHits >= 4000, "most small allocations hit the cache")
        #expect(afterFree.frees - after.frees >= 5001)
        #expect(after.peakBytesInUse >= after.bytesInUse)
        // bytesMapped counts each segment when it is mapped: it grew by at
        // least the segments our blocks live in that were not mapped before.
        #expect(after.bytesMapped - before.bytesMapped >= UInt64(newSegments * Tuning.segmentBytes),
                "\(newSegments) segments were mapped for our blocks")
        let ext = after.asExt()
        #expect(ext.version == UInt32(AETHALLOC_METRICS_VERSION) && ext.enabled == 1)
        #expect(Int(ext.class_count) == SizeClass.count)
    }
}

/// The purge delay, driven by the test clock (`TestClock`, process-wide)
/// instead of sleeps: freed medium blocks stay committed while the clock
/// is short of the delay, and the next segment operation after it purges
/// them. Serialized, and exclusive with every test that uses the
/// allocator's state, since moving the clock moves it for all of them.
@Suite("Purge delay on the test clock", .serialized, .exclusiveCoreState)
struct PurgeDelayTests {
    init() { Runtime.ensureInitialized() }

    static func dirtyBytes() -> Int {
        Lock.acquire(SegmentManager.lockWord)
        defer { Lock.release(SegmentManager.lockWord) }
        return SegmentManager.shared.pointee.dirtyBytes
    }

    /// A medium block carved and freed: a segment operation, when a due
    /// purge runs. Returns the bytes of its run (dirty once it is freed).
    static func carveAndFree() throws -> Int {
        let p = try #require(Allocator.allocate(100_000))
        guard case .medium(let page) = Allocator.classify(p, operation: "test") else {
            Issue.record("a 100,000-byte block is not medium")
            return 0
        }
        let bytes = Int(page.pointee.slices) * Tuning.sliceBytes
        Allocator.deallocate(p)
        return bytes
    }

    /// Runs `body(t0)` with a 1 s purge delay and a budget of
    /// `dirtyPercent` of the heap (by default 1000%, which never purges
    /// what a test frees, so only the delay may); the test clock stands at
    /// t0 and nothing is dirty. Restores all of it.
    /// `blocks` 1 MiB blocks, written: the swing of a heap, to be freed;
    /// `keeping`, each followed by one to keep (returned apart), so no
    /// segment becomes wholly free when the swing is freed.
    static func swing(blocks: Int, keeping: Bool) throws -> (dropped: [RawPointer], kept: [RawPointer]) {
        var dropped: [RawPointer] = []
        var kept: [RawPointer] = []
        for _ in 0..<blocks {
            let p = try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes)))
            memset(p, 0x3C, Tuning.mediumMaxBytes)
            dropped.append(p)
            if keeping { kept.append(try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes)))) }
        }
        return (dropped, kept)
    }

    static func withDelayOnly(dirtyPercent: Int = 1000, _ body: (UInt64) throws -> Void) throws {
        let state = Globals.process
        let (savedDelay, savedPercent, savedCache) =
            (state.pointee.purgeDelayMs, state.pointee.dirtyPercent, state.pointee.mediumCache)
        state.pointee.purgeDelayMs = 1000
        state.pointee.dirtyPercent = dirtyPercent
        state.pointee.mediumCache = false
        let t0 = OS.nowMs()
        TestClock.set(t0)
        defer {
            TestClock.set(nil)
            state.pointee.purgeDelayMs = savedDelay
            state.pointee.dirtyPercent = savedPercent
            state.pointee.mediumCache = savedCache
        }
        _ = Reclaimer.trim()
        try #require(dirtyBytes() == 0, "malloc_trim left dirty slices")
        try body(t0)
    }

    @Test func freedSlicesStayCommittedUntilTheDelayHasPassed() throws { try Self.withDelayOnly { t0 in

        // Dropped and kept 1 MiB blocks interleaved, a kept one last, so no
        // segment becomes wholly free (it would be unmapped, not left
        // dirty): a dropped block that opens a segment is followed there by
        // a kept one (best fit), and any other segment has live blocks.
        var kept: [RawPointer] = []
        var dropped: [RawPointer] = []
        for _ in 0..<8 {
            for list in [1, 0] {
                let p = try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes)))
                memset(p, 0x5C, Tuning.mediumMaxBytes)
                if list == 0 { kept.append(p) } else { dropped.append(p) }
            }
        }
        defer {
            kept.forEach { Allocator.deallocate($0) }
            _ = Reclaimer.trim()
        }
        dropped.forEach { Allocator.deallocate($0) }
        let droppedBytes = dropped.count * Tuning.mediumMaxBytes
        #expect(Self.dirtyBytes() == droppedBytes, "freed slices stay committed at first")

        // Just short of the delay: a carve reuses dirty slices and gives
        // them back; nothing is purged.
        TestClock.set(t0 + 999)
        _ = try Self.carveAndFree()
        #expect(Self.dirtyBytes() == droppedBytes, "purged before the delay had passed")

        // Past the delay (and past the tenth of it between two checks): the
        // carve purges first, then its own run is the only dirty one.
        TestClock.set(t0 + 1000 + 101)
        let carved = try Self.carveAndFree()
        #expect(Self.dirtyBytes() == carved, "not purged after the delay had passed")
    } }

    /// A program whose heap swings: the budget purges the first trough,
    /// the program faults as much in again within the delay, and the next
    /// trough stays committed (churn); once the allowance is older than the
    /// delay, the budget purges again.
    /// The budget is 1% of the heap: a few hundred KiB here, whatever
    /// other tests left live, so each trough is over it.
    @Test func memoryTakenBackSoonAfterAPurgeStaysCommitted() throws { try Self.withDelayOnly(dirtyPercent: 1) { t0 in
        var kept: [RawPointer] = []
        defer {
            kept.forEach { Allocator.deallocate($0) }
            _ = Reclaimer.trim()
        }
        let blocks = 8
        let swing = blocks * Tuning.mediumMaxBytes
        func build(keeping: Bool) throws -> [RawPointer] {
            let (dropped, more) = try Self.swing(blocks: blocks, keeping: keeping)
            kept += more
            return dropped
        }
        // First trough: over the budget, purged.
        try build(keeping: true).forEach { Allocator.deallocate($0) }
        #expect(Self.dirtyBytes() < swing / 2, "the first trough was not purged")
        // The same again 10 ms later: what was purged faulted in again, so
        // the second trough stays committed.
        TestClock.set(t0 + 10)
        try build(keeping: false).forEach { Allocator.deallocate($0) }
        #expect(Self.dirtyBytes() >= swing, "a trough after a refault was purged")
        // Longer than the delay after the allowance: purged again.
        TestClock.set(t0 + 10 + 2 * 1000)
        try build(keeping: false).forEach { Allocator.deallocate($0) }
        #expect(Self.dirtyBytes() < swing / 2, "the allowance outlived the delay")
    } }
}
