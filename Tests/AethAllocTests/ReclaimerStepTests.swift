// The background reclaimer's step (Reclaim.swift), on the test clock: what
// it purges and unmaps, and when it asks to be woken next. The hosted build
// never starts the thread (AETHALLOC_BACKGROUND defaults to 0 there); these
// tests call the step the thread would run.
import Foundation
import Synchronization
import Testing
@testable import AethAllocHosted

@Suite("Background reclaimer steps", .serialized, .exclusiveCoreState)
struct ReclaimerStepTests {
    init() { Runtime.ensureInitialized() }

    @Test func purgesFreedSlicesOnceTheDelayHasPassedAndSaysWhenNext() throws { try PurgeDelayTests.withDelayOnly { t0 in
        #expect(Reclaimer.step(now: t0) == nil, "nothing pending, yet the step asks to be woken")

        // Freed 1 MiB blocks next to kept ones (no segment wholly free).
        var kept: [RawPointer] = []
        var dropped: [RawPointer] = []
        for _ in 0..<6 {
            for list in [1, 0] {
                let p = try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes)))
                memset(p, 0x3A, Tuning.mediumMaxBytes)
                if list == 0 { kept.append(p) } else { dropped.append(p) }
            }
        }
        defer {
            kept.forEach { Allocator.deallocate($0) }
            _ = Reclaimer.trim()
        }
        TestClock.set(t0 + 10)
        dropped.forEach { Allocator.deallocate($0) }
        let droppedBytes = dropped.count * Tuning.mediumMaxBytes
        #expect(PurgeDelayTests.dirtyBytes() == droppedBytes)

        // Before the delay: nothing purged; woken again when it is due.
        let wait = Reclaimer.step(now: t0 + 400)
        #expect(PurgeDelayTests.dirtyBytes() == droppedBytes, "purged before the delay")
        #expect(wait == 610, "next wake in \(String(describing: wait)) ms, the slices are due in 610")

        // At the delay: all purged, nothing pending.
        let after = Reclaimer.step(now: t0 + 1010)
        #expect(PurgeDelayTests.dirtyBytes() == 0, "not purged once due")
        #expect(after == nil, "nothing is pending, yet the step asks to be woken in \(String(describing: after)) ms")
    } }

    /// Segments left wholly free stay mapped while the reclaimer runs (a
    /// program that empties and refills them does not unmap and fault them
    /// in again), and go back once the delay is up; without the reclaimer,
    /// all but `Tuning.cachedEmptySegments` go at once.
    @Test(arguments: [true, false])
    func emptySegmentsWaitForTheDelayWhileTheReclaimerRuns(running: Bool) throws { try PurgeDelayTests.withDelayOnly { t0 in
        let saved = Reclaimer.state.pointee.load(ordering: .relaxed)
        Reclaimer.state.pointee.store(running ? Reclaimer.running : Reclaimer.notStarted, ordering: .relaxed)
        // A budget that holds every freed slice (as in a heap of a GiB).
        let savedFloor = Globals.process.pointee.dirtyMinBytes
        Globals.process.pointee.dirtyMinBytes = 1 << 30
        defer {
            Reclaimer.state.pointee.store(saved, ordering: .relaxed)
            Globals.process.pointee.dirtyMinBytes = savedFloor
        }
        _ = SegmentManager.releaseEmptySegments()
        let mapped0 = SegmentManager.figures().segments
        // 1 MiB blocks, three to a segment: twenty segments' worth. Holes
        // that earlier tests left in segments still mapped take some of
        // them, so fewer segments may be new; several are needed.
        var blocks: [RawPointer] = []
        for _ in 0..<60 { blocks.append(try #require(Allocator.allocate(UInt(Tuning.mediumMaxBytes)))) }
        let mapped1 = SegmentManager.figures().segments
        try #require(mapped1 - mapped0 >= 4, "\(mapped1 - mapped0) segments mapped for 60 MiB")
        TestClock.set(t0 + 10)
        blocks.forEach { Allocator.deallocate($0) }
        if running {
            #expect(SegmentManager.figures().segments == mapped1, "empty segments unmapped before the delay")
            #expect(Reclaimer.step(now: t0 + 500) == 510, "the empty segments' delay is up at t0 + 1010")
            #expect(SegmentManager.figures().segments == mapped1, "empty segments unmapped before the delay")
            _ = Reclaimer.step(now: t0 + 1010)
        }
        let kept = SegmentManager.figures().segments - mapped0
        #expect(kept <= Tuning.cachedEmptySegments, "\(kept) empty segments still mapped")
    } }

    @Test func unmapsCachedSpansOnceIdleForTheDecay() throws {
        let t0 = OS.nowMs()
        TestClock.set(t0)
        defer { TestClock.set(nil) }
        _ = Large.releaseCached()
        let p = try #require(Allocator.allocate(8 << 20))
        memset(p, 1, 8 << 20)
        Allocator.deallocate(p)
        try #require(Large.cachedFigures().count == 1, "the span was not cached")
        let wait = Large.reclaim(now: t0 + 300)
        #expect(Large.cachedFigures().count == 1, "unmapped before the decay")
        #expect(wait == Tuning.largeCacheDecayMs - 300, "next wake in \(String(describing: wait)) ms")
        #expect(Large.reclaim(now: t0 + Tuning.largeCacheDecayMs) == nil)
        #expect(Large.cachedFigures().count == 0, "still cached after the decay")
    }

    /// The reclaimer's step run the way its thread runs it, over and over,
    /// while other threads allocate and free medium and large blocks (CI
    /// runs this under ThreadSanitizer): every block keeps its contents.
    @Test func stepsRacingAllocatingThreads() {
        let state = Globals.process
        let savedDelay = state.pointee.purgeDelayMs
        state.pointee.purgeDelayMs = 1
        defer { state.pointee.purgeDelayMs = savedDelay }
        let stop = Atomic<Bool>(false)
        let failures = LockedBox<[String]>([])
        // A pthread, joined below: the join orders its last step before the
        // options are restored.
        let reclaimer = JoinableThread {
            while !stop.load(ordering: .relaxed) { _ = Reclaimer.step(now: OS.nowMs()) }
        }
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            var rng = UInt64(worker + 1) &* 0x9E37_79B9_7F4A_7C15
            var live: [(UnsafeMutableRawPointer, Int, UInt8)] = []
            for i in 0..<600 {
                rng ^= rng << 13
                rng ^= rng >> 7
                rng ^= rng << 17
                let size = rng % 4 == 0 ? 1 << 20 + Int(rng >> 40) % (3 << 20) : 70_000 + Int(rng >> 40) % 900_000
                guard let p = Allocator.allocate(UInt(size)) else {
                    failures.withLock { $0.append("malloc(\(size)) failed") }
                    return
                }
                let tag = UInt8(truncatingIfNeeded: i &+ worker)
                memset(p, Int32(tag), size)
                live.append((p, size, tag))
                if live.count > 6 {
                    let (q, n, t) = live.removeFirst()
                    let bytes = q.assumingMemoryBound(to: UInt8.self)
                    if bytes[0] != t || bytes[n / 2] != t || bytes[n - 1] != t {
                        failures.withLock { $0.append("a \(n)-byte block lost its contents") }
                    }
                    Allocator.deallocate(q)
                }
            }
            live.forEach { Allocator.deallocate($0.0) }
        }
        stop.store(true, ordering: .relaxed)
        reclaimer.join()
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
    }

    /// The reclaimer applies the budget as a releasing thread does: memory
    /// the program faulted in again soon after the budget's last purge
    /// stays committed for one delay (the churn allowance), instead of being
    /// purged at every trough and faulted in at every peak.
    @Test func theReclaimersBudgetSparesMemoryTakenBackSoonAfterAPurge() throws { try PurgeDelayTests.withDelayOnly(dirtyPercent: 1) { t0 in
        let savedState = Reclaimer.state.pointee.load(ordering: .relaxed)
        let savedFloor = Globals.process.pointee.dirtyMinBytes
        var kept: [RawPointer] = []
        defer {
            Reclaimer.state.pointee.store(savedState, ordering: .relaxed)
            Globals.process.pointee.dirtyMinBytes = savedFloor
            kept.forEach { Allocator.deallocate($0) }
            _ = Reclaimer.trim()
        }
        // With the reclaimer running, a trough between the budget and twice
        // it is left to the reclaimer's step (not purged inline).
        let blocks = 8
        let swing = blocks * Tuning.mediumMaxBytes
        Globals.process.pointee.dirtyMinBytes = swing * 5 / 8
        Reclaimer.state.pointee.store(Reclaimer.running, ordering: .relaxed)
        func build(keeping: Bool) throws -> [RawPointer] {
            let (dropped, more) = try PurgeDelayTests.swing(blocks: blocks, keeping: keeping)
            kept += more
            return dropped
        }
        // First trough: left to the reclaimer, whose step purges it.
        try build(keeping: true).forEach { Allocator.deallocate($0) }
        #expect(PurgeDelayTests.dirtyBytes() >= swing, "purged inline below twice the budget")
        _ = Reclaimer.step(now: t0 + 1)
        #expect(PurgeDelayTests.dirtyBytes() < swing / 2, "the reclaimer did not purge the first trough")
        // The same again 10 ms later: what was purged faulted in again, so
        // the step leaves the second trough committed.
        TestClock.set(t0 + 10)
        try build(keeping: false).forEach { Allocator.deallocate($0) }
        _ = Reclaimer.step(now: t0 + 11)
        #expect(PurgeDelayTests.dirtyBytes() >= swing, "the reclaimer purged a trough after a refault")
        // Longer than the delay after the allowance: purged again.
        TestClock.set(t0 + 10 + 2 * 1000)
        try build(keeping: false).forEach { Allocator.deallocate($0) }
        _ = Reclaimer.step(now: t0 + 11 + 2 * 1000)
        #expect(PurgeDelayTests.dirtyBytes() < swing / 2, "the allowance outlived the delay")
    } }

    @Test func theInlinePolicyDefersToARunningReclaimerBelowTheCeiling() {
        let saved = Reclaimer.state.pointee.load(ordering: .relaxed)
        defer { Reclaimer.state.pointee.store(saved, ordering: .relaxed) }
        Reclaimer.state.pointee.store(Reclaimer.notStarted, ordering: .relaxed)
        #expect(Reclaimer.purgesInline(dirty: 150, budget: 100), "no reclaimer: over the budget purges inline")
        #expect(!Reclaimer.purgesInline(dirty: 100, budget: 100))
        #expect(Reclaimer.checksDelaysInline)
        Reclaimer.state.pointee.store(Reclaimer.running, ordering: .relaxed)
        #expect(!Reclaimer.purgesInline(dirty: 150, budget: 100), "with the reclaimer: woken, not inline")
        #expect(Reclaimer.purgesInline(dirty: 201, budget: 100), "past the hard ceiling: inline")
        #expect(!Reclaimer.checksDelaysInline)
    }
}

/// A thread running `body`, joined with pthread_join (which orders everything
/// it did before what follows the join, for ThreadSanitizer too).
final class JoinableThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Void

    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let me = Unmanaged.passRetained(self).toOpaque()
        let created = pthread_create(&thread, nil, { arg in
            let me = Unmanaged<JoinableThread>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, me)
        precondition(created == 0, "pthread_create failed: \(created)")
    }

    func join() { pthread_join(thread, nil) }
}
