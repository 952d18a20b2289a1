// The medium cache (MediumCache.swift): freed medium blocks kept whole for a
// request that ends in the same 8 KiB, within its limit, for at most the
// purge delay, and given back by malloc_trim and when address space runs out.
import Foundation
import Testing
@testable import AethAllocHosted

@Suite("Medium cache", .serialized, .exclusiveCoreState)
struct MediumCacheTests {
    init() { Runtime.ensureInitialized() }

    static func cached() -> (bytes: Int, count: Int) {
        Lock.acquire(SegmentManager.lockWord)
        defer { Lock.release(SegmentManager.lockWord) }
        return (MediumCache.shared.pointee.bytes, MediumCache.shared.pointee.count)
    }

    /// Runs `body(t0)` on the test clock at t0 with a 1 s purge delay, a
    /// dirty budget (1000% of the heap) whose half holds what a test frees,
    /// and an empty cache that admits what it is offered; restores the
    /// clock, the options and the cache's admission state.
    static func onTestClock(_ body: (UInt64) throws -> Void) throws {
        let state = Globals.process
        let (savedDelay, savedPercent) = (state.pointee.purgeDelayMs, state.pointee.dirtyPercent)
        state.pointee.purgeDelayMs = 1000
        state.pointee.dirtyPercent = 1000
        let t0 = OS.nowMs()
        TestClock.set(t0)
        let cache = MediumCache.shared
        let savedGate = (cache.pointee.admitting, cache.pointee.keeps, cache.pointee.hits, cache.pointee.probes)
        cache.pointee.admitting = true
        defer {
            TestClock.set(nil)
            (state.pointee.purgeDelayMs, state.pointee.dirtyPercent) = (savedDelay, savedPercent)
            (cache.pointee.admitting, cache.pointee.keeps, cache.pointee.hits, cache.pointee.probes) = savedGate
            _ = Reclaimer.trim()
        }
        _ = Reclaimer.trim()
        try #require(cached().count == 0, "malloc_trim left cached runs")
        try body(t0)
    }

    @Test func aFreedBlockServesTheNextRequestEndingInTheSame8KiB() throws { try Self.onTestClock { _ in
        let keep = try #require(Allocator.allocate(300_000))  // keeps the segment from emptying
        defer { Allocator.deallocate(keep) }
        let p = try #require(Allocator.allocate(300_000))
        Allocator.deallocate(p)
        #expect(Self.cached().count == 1)
        #expect(Self.cached().bytes == Medium.slices(for: 300_000) * Tuning.sliceBytes)
        // 300,000 and 303,000 bytes end in the same 8 KiB step: the same block.
        let q = try #require(Allocator.allocate(303_000))
        #expect(q == p, "not the cached block")
        #expect(Self.cached().count == 0)
        // A hole of free committed slices (freed with the cache off), then
        // the block cached again.
        let hole = try #require(Allocator.allocate(300_000))
        Globals.process.pointee.mediumCache = false
        Allocator.deallocate(hole)
        Globals.process.pointee.mediumCache = true
        Allocator.deallocate(q)
        #expect(Self.cached().count == 1)
        // 290,000 ends in the step before (same slice count): carved from
        // the hole, not from the cached block.
        let r = try #require(Allocator.allocate(290_000))
        #expect(r == hole && r != p, "a request of another 8 KiB step got the cached block")
        #expect(Self.cached().count == 1)
        Allocator.deallocate(r)
        // Off: a freed block goes back to its segment.
        try withoutMediumCache {
            let s = try #require(Allocator.allocate(300_000))
            Allocator.deallocate(s)
            #expect(Self.cached().count == 0)
        }
    } }

    @Test func aBlockNoFreeSliceHoldsSplitsACachedOneBeforeFreshMemory() throws { try Self.onTestClock { _ in
        // After malloc_trim nothing freed is committed: the only committed
        // free memory is the block cached here.
        let live = try (0..<4).map { _ in try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes))) }
        defer { live.forEach { Allocator.deallocate($0) } }
        let p = try #require(Allocator.allocate(600_000))
        Allocator.deallocate(p)
        #expect(Self.cached().count == 1)
        let q = try #require(Allocator.allocate(200_000))
        defer { Allocator.deallocate(q) }
        #expect(q == p, "fresh slices used while a cached block held the request")
        #expect(Self.cached().count == 0)
    } }

    @Test func keepsFewBlocksUntilTheyAreTakenAgain() throws { try Self.onTestClock { _ in
        let live = try (0..<4).map { _ in try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes))) }
        defer { live.forEach { Allocator.deallocate($0) } }
        let cache = MediumCache.shared
        (cache.pointee.admitting, cache.pointee.keeps, cache.pointee.hits, cache.pointee.probes) = (false, 0, 0, 0)
        /// Frees `n` blocks of 70,000 B (one bin) at once; returns how many
        /// the cache kept, and empties it again (malloc_trim).
        func keptOf(_ n: Int) throws -> Int {
            let blocks = try (0..<n).map { _ in try #require(Allocator.allocate(70_000)) }
            let before = Self.cached().count
            blocks.forEach { Allocator.deallocate($0) }
            return Self.cached().count - before
        }
        // Not admitting: 1 candidate in probeEvery.
        let probed = try keptOf(2 * MediumCache.probeEvery)
        #expect(probed == 2, "kept \(probed) of \(2 * MediumCache.probeEvery) while probing")
        // A window of keeps, each taken again: admitting from then on.
        var rounds = 0
        while !cache.pointee.admitting && rounds < 4 * MediumCache.window * MediumCache.probeEvery {
            let p = try #require(Allocator.allocate(70_000))
            Allocator.deallocate(p)  // a candidate (probed or kept)...
            Allocator.deallocate(try #require(Allocator.allocate(70_000)))  // ...and taken again when kept
            rounds += 1
        }
        #expect(cache.pointee.admitting, "not admitting after a window of hits")
        #expect(try keptOf(8) == 8, "not admitting after a window of hits")
        // A window of keeps never taken (each block of a new size): probing again.
        var k = 0
        while cache.pointee.admitting && k < 4 * MediumCache.window {
            Allocator.deallocate(try #require(Allocator.allocate(UInt(70_000 + k % 100 * 8192))))
            k += 1
        }
        #expect(!cache.pointee.admitting, "still admitting after a window without hits")
    } }

    @Test func cachedBlocksCountAsFreeAndMallocTrimEmptiesTheCache() throws { try Self.onTestClock { _ in
        // Live blocks, so the heap (and the cache's limit) does not shrink
        // to nothing as the others are freed.
        let live = try (0..<4).map { _ in try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes))) }
        defer { live.forEach { Allocator.deallocate($0) } }
        var blocks: [RawPointer] = []
        for i in 0..<8 { blocks.append(try #require(Allocator.allocate(UInt(100_000 + i * 60_000)))) }
        let before = HeapFigures.take()
        blocks.forEach { Allocator.deallocate($0) }
        let after = HeapFigures.take()
        let bytes = Self.cached().bytes
        #expect(Self.cached().count == 8 && bytes > 0)
        #expect(after.cachedRunBytes == bytes)
        #expect(after.mediumBytes == before.mediumBytes - bytes, "cached runs still count as medium blocks in use")
        #expect(after.pageBytes == before.pageBytes, "cached runs count as pages")
        #expect(after.trimmable >= bytes)
        #expect(Reclaimer.trim())
        #expect(Self.cached().count == 0 && Self.cached().bytes == 0)
        #expect(HeapFigures.take().cachedRunBytes == 0)
    } }

    @Test func theReclaimerReturnsBlocksCachedLongerThanTheDelay() throws { try Self.onTestClock { t0 in
        let keep = try #require(Allocator.allocate(700_000))
        defer { Allocator.deallocate(keep) }
        let p = try #require(Allocator.allocate(400_000))
        memset(p, 0x6B, 400_000)
        TestClock.set(t0 + 100)
        Allocator.deallocate(p)
        let returnedBefore = OS.bytesReturned

        // Before the delay: kept, and the step asks to be woken when it is due.
        let wait = Reclaimer.step(now: t0 + 500)
        #expect(Self.cached().count == 1, "returned before the delay")
        #expect(wait == 600, "next wake in \(String(describing: wait)) ms, the block is due in 600")

        // Past it: back in its segment and purged.
        _ = Reclaimer.step(now: t0 + 1100)
        #expect(Self.cached().count == 0, "kept past the delay")
        #expect(OS.bytesReturned - returnedBefore >= Medium.slices(for: 400_000) * Tuning.sliceBytes, "not purged")
        #expect(HeapFigures.take().dirtyBytes == 0)
    } }

    @Test func theCacheStaysWithinHalfTheDirtyBudget() throws { try Self.onTestClock { t0 in
        let state = Globals.process
        let (savedPercent, savedMin) = (state.pointee.dirtyPercent, state.pointee.dirtyMinBytes)
        state.pointee.dirtyPercent = 10
        state.pointee.dirtyMinBytes = 0
        // The refused blocks' slices put the freed memory over this small
        // budget, and a purge of the excess takes the cached runs first: the
        // background reclaimer that earlier tests started in this process
        // could do so at any moment between the frees and the checks. What
        // is tested is keep's limit, so purges wait (as after a refused
        // madvise) until the test clock, frozen at t0, passes the backoff.
        Lock.acquire(SegmentManager.lockWord)
        let manager = SegmentManager.shared
        let savedPurge = (manager.pointee.purgeFailures, manager.pointee.purgeBackoffUntilMs)
        (manager.pointee.purgeFailures, manager.pointee.purgeBackoffUntilMs) = (1, t0 + 3_600_000)
        Lock.release(SegmentManager.lockWord)
        defer {
            Lock.acquire(SegmentManager.lockWord)
            (manager.pointee.purgeFailures, manager.pointee.purgeBackoffUntilMs) = savedPurge
            Lock.release(SegmentManager.lockWord)
            (state.pointee.dirtyPercent, state.pointee.dirtyMinBytes) = (savedPercent, savedMin)
        }
        var blocks: [RawPointer] = []
        for i in 0..<64 { blocks.append(try #require(Allocator.allocate(UInt(70_000 + (i % 100) * 9_000)))) }
        try #require(Self.cached().count == 0)
        // Every other block freed (no segment empties): a block the cache
        // keeps leaves it within half the budget of the heap as it is then.
        var refused = 0
        for (i, p) in blocks.enumerated() where i % 2 == 0 {
            let before = Self.cached().bytes
            Allocator.deallocate(p)
            Lock.acquire(SegmentManager.lockWord)
            let m = SegmentManager.shared
            let heap = m.pointee.usedBytes + m.pointee.mediumBytes + Globals.largeLiveBytes.pointee.load(ordering: .relaxed)
            let limit = heap / 100 * 10 / 2
            let bytes = MediumCache.shared.pointee.bytes
            Lock.release(SegmentManager.lockWord)
            if bytes == before { refused += 1 } else { #expect(bytes <= limit, "cached \(bytes), limit \(limit)") }
        }
        #expect(refused > 0, "the limit never applied")
        #expect(Self.cached().count > 0)
        for (i, p) in blocks.enumerated() where i % 2 == 1 { Allocator.deallocate(p) }
    } }

    @Test func cachedBlocksGoBackWhenNoSegmentCanBeMapped() throws { try Self.onTestClock { _ in
        // Fill what is mapped, then cache blocks of one size and ask for
        // another while mmap fails: the cached runs coalesce and serve it.
        let live = try (0..<4).map { _ in try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes))) }
        defer { live.forEach { Allocator.deallocate($0) } }
        var blocks: [RawPointer] = []
        for _ in 0..<6 { blocks.append(try #require(Allocator.allocate(600_000))) }
        blocks.forEach { Allocator.deallocate($0) }
        #expect(Self.cached().count == 6)
        FaultPlan.set(.mmap, every: 1)
        defer { FaultPlan.reset() }
        var taken: [RawPointer] = []
        while let p = Allocator.allocate(1_000_000) { taken.append(p) }
        FaultPlan.reset()
        #expect(Self.cached().count == 0, "cached runs kept while the heap could not grow")
        #expect(taken.count >= 3, "only \(taken.count) blocks of 1 MB from 6 freed ones of 600 kB")
        taken.forEach { Allocator.deallocate($0) }
    } }
}
