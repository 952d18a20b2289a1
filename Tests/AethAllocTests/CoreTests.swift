// White-box tests of pages, segments, magazines, the depot, the large path
// and the allocator's entry points, on the core compiled in normal Swift.
// Each test checks the structures' invariants after its steps.
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

/// Checks the page invariant (used + free list == handed-out blocks) of the
/// page owning `p`, under its class lock.
func pageIsValid(_ p: UnsafeMutableRawPointer) -> Bool {
    let seg = Segment.base(of: p)
    let c = Int(Segment.sliceClass(seg, Segment.sliceIndex(of: p)))
    guard c < SizeClass.count else { return false }
    Lock.acquire(Central.lockWord(c))
    defer { Lock.release(Central.lockWord(c)) }
    return Segment.page(of: p, in: seg).pointee.isValid()
}

@Suite struct PageTests {
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
        // The slice is now free or reused by another class's page (tests run
        // in parallel), never still marked as class c with no page behind it.
        let mark = Segment.sliceClass(seg, slice)
        #expect(mark == SizeClass.markFree || Int(mark) != c || Segment.page(of: firstPage.pointee.start!, in: seg).pointee.used > 0)
    }
}

@Suite struct MagazineTests {
    init() { Runtime.ensureInitialized() }

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

    /// Threads pop and push the same nodes as fast as they can: no node is
    /// ever lost or held by two threads at once (ABA would do either).
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
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<50_000 {
                guard let n = stack.pointee.pop() else { continue }
                let i = index[UInt(bitPattern: n)]!
                if owners[i].add(1, ordering: .relaxed).newValue != 1 { failures.add(1, ordering: .relaxed) }
                owners[i].subtract(1, ordering: .relaxed)
                stack.pointee.push(n)
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
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
            if Depot.pushFull(c, m) {
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
}

@Suite struct AllocatorTests {
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
        #expect(Allocator.reallocate(nil, 0) != nil || true)
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
        // Two neighbouring runs: the first cannot grow while the second is
        // there, and grows in place once it is freed.
        let a = try #require(Allocator.allocate(200_000))
        let b = try #require(Allocator.allocate(200_000))
        memset(a, 0xA5, 200_000)
        memset(b, 0x5A, 200_000)
        let grown = try #require(Allocator.reallocate(a, 500_000))
        let bytes = grown.assumingMemoryBound(to: UInt8.self)
        #expect(bytes[0] == 0xA5 && bytes[199_999] == 0xA5)
        if Segment.base(of: a) == Segment.base(of: b) && b == a + 4 * Tuning.sliceBytes {
            #expect(grown != a, "grew over a live neighbour")
        }
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

    @Test func freedSlicesStayWithinTheDirtyBudget() throws {
        // 48 MiB of medium blocks freed at once: what stays committed is
        // bounded by the budget (a share of the heap in use, at least
        // dirtyMinBytes), whatever other tests do meanwhile.
        var blocks: [RawPointer] = []
        for _ in 0..<48 {
            let p = try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes)))
            memset(p, 1, Tuning.mediumMaxBytes)
            blocks.append(p)
        }
        for p in blocks { Allocator.deallocate(p) }
        Lock.acquire(SegmentManager.lockWord)
        let dirty = SegmentManager.shared.pointee.dirtyBytes
        let used = SegmentManager.shared.pointee.usedBytes + SegmentManager.shared.pointee.mediumBytes
            + 2 * Globals.largeLiveBytes.pointee.load(ordering: .relaxed)
        Lock.release(SegmentManager.lockWord)
        #expect(dirty >= 0 && used >= 0)
        #expect(dirty <= max(Tuning.dirtyMinBytes, used / 100 * Options.dirtyPercent), "dirty \(dirty) used \(used)")
        // malloc_trim purges the rest.
        _ = Allocator.trim()
        Lock.acquire(SegmentManager.lockWord)
        let after = SegmentManager.shared.pointee.dirtyBytes
        Lock.release(SegmentManager.lockWord)
        #expect(after < dirty || after == 0 || dirty == 0)
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
    @Test func threadExitReturnsCachedBlocks() {
        let size = 3500  // class 3584
        let c = SizeClass.index(of: size)
        let threads = 16
        let group = DispatchGroup()
        // NSLock rather than Mutex: ThreadSanitizer understands pthread locks.
        let addresses = LockedBox<Set<UInt>>([])
        let allocated = DispatchGroup()
        let go = DispatchSemaphore(value: 0)
        for _ in 0..<threads {
            group.enter()
            allocated.enter()
            let t = Thread {
                var local: [UnsafeMutableRawPointer] = []
                for _ in 0..<500 { if let p = Allocator.allocate(UInt(size)) { local.append(p) } }
                addresses.withLock { s in local.forEach { s.insert(UInt(bitPattern: $0)) } }
                // Hold the blocks until every thread has its own.
                allocated.leave()
                go.wait()
                local.forEach { Allocator.deallocate($0) }
                group.leave()
            }
            t.start()
        }
        allocated.wait()
        for _ in 0..<threads { go.signal() }
        group.wait()
        let all = addresses.withLock { $0 }
        #expect(all.count == threads * 500)
        // Every page that held one of the blocks becomes empty, or is given
        // back (its slices free or carved for something else), once the
        // exiting threads have run their key destructors and the depot is
        // drained. A thread may still be exiting: look again for up to 2 s;
        // blocks stranded in a dead thread's cache would stay counted.
        var stranded = 0
        for _ in 0..<100 {
            Thread.sleep(forTimeInterval: 0.02)
            Variant.Cache.drainGlobal(c)
            stranded = 0
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
            if stranded == 0 { break }
        }
        #expect(stranded == 0, "\(stranded) blocks' pages still count blocks out after every thread exited")
    }
}

/// The hosted build compiles statistics in (variants/hosted/Variant.swift),
/// so the counters behind the metrics variant are checked here.
@Suite struct StatsTests {
    init() { Runtime.ensureInitialized() }

    @Test func countersFollowAllocationsOnAThread() throws {
        let done = DispatchSemaphore(value: 0)
        let snapshots = LockedBox<[MetricsSnapshot]>([])
        // A thread of our own, so its cache and counters are fresh.
        Thread {
            let before = MetricsSnapshot.take()
            var blocks: [UnsafeMutableRawPointer] = []
            for i in 0..<5000 { blocks.append(Allocator.allocate(UInt(16 + i % 900))!) }
            let big = Allocator.allocate(1 << 20)!
            let after = MetricsSnapshot.take()
            blocks.forEach { Allocator.deallocate($0) }
            Allocator.deallocate(big)
            let afterFree = MetricsSnapshot.take()
            snapshots.withLock { $0 = [before, after, afterFree] }
            done.signal()
        }.start()
        done.wait()
        let taken = snapshots.withLock { $0 }
        try #require(taken.count == 3)
        let (before, after, afterFree) = (taken[0], taken[1], taken[2])
        // Other tests allocate concurrently, so compare at least what we did.
        #expect(after.allocs - before.allocs >= 5001)
        #expect(after.directAllocs - before.directAllocs >= 1)
        #expect(after.cacheMisses > before.cacheMisses)
        #expect(after.cacheHits - before.cacheHits >= 4000, "most small allocations hit the cache")
        #expect(afterFree.frees - after.frees >= 5001)
        #expect(after.peakBytesInUse >= after.bytesInUse)
        #expect(after.bytesMapped > 0)
        let ext = after.asExt()
        #expect(ext.version == UInt32(AETHALLOC_METRICS_VERSION) && ext.enabled == 1)
        #expect(Int(ext.class_count) == SizeClass.count)
    }
}
