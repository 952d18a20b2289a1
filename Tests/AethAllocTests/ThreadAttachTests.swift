// A thread that cannot get a cache (the pthread key cannot be set, or no
// memory for one) is served from the pages directly, is not counted live,
// gives the cache back at once, and tries again `Tuning.attachRetryMs`
// later, not on every call (ThreadCache.attach).
import Foundation
import Synchronization
import Testing
@testable import AethAllocHosted

@Suite("Thread cache attach failures", .serialized, .exclusiveCoreState)
struct ThreadAttachTests {
    init() { Runtime.ensureInitialized() }

    static func registry() -> (live: Int, free: Int) {
        Lock.acquire(ThreadCacheRegistry.lockWord)
        defer { Lock.release(ThreadCacheRegistry.lockWord) }
        var free = 0
        var tc = Globals.registry.pointee.freeList
        while let t = tc {
            free += 1
            tc = ThreadCache.links(t).pointee.next
        }
        return (Globals.registry.pointee.live.load(ordering: .relaxed), free)
    }

    /// Runs `body` on a new thread and joins it: when this returns, the
    /// thread's key destructors (which give its cache back) have run.
    static func onNewThread(_ body: @escaping @Sendable () -> Void) { JoinableThread(body).join() }

    @Test func aKeyThatCannotBeSetLeavesTheThreadUncachedAndRetriesLater() {
        let t0 = OS.nowMs()
        TestClock.set(t0)
        defer { TestClock.set(nil) }
        let before = Self.registry()
        let results = LockedBox<[String]>([])
        Self.onNewThread {
            func note(_ s: String) { results.withLock { $0.append(s) } }
            FaultPlan.reset()
            FaultPlan.set(.threadKey, every: 1)
            // First allocation: attach fails at pthread_setspecific.
            guard let p = Allocator.allocate(48) else { return note("malloc returned NULL") }
            if OS.tlsState != ThreadState.noCache { note("state \(OS.tlsState), not noCache") }
            if FaultPlan.injected(.threadKey) != 1 { note("\(FaultPlan.injected(.threadKey)) key failures, not 1") }
            let mid = Self.registry()
            if mid.live != before.live { note("live \(before.live) -> \(mid.live) for a thread with no cache") }
            if mid.free < 1 { note("the cache was not given back") }
            // Within the retry interval: served directly, no new attempt.
            for _ in 0..<100 { Allocator.deallocate(Allocator.allocate(48)) }
            Allocator.deallocate(p)
            if FaultPlan.injected(.threadKey) != 1 { note("attach retried on every call (\(FaultPlan.injected(.threadKey)))") }
            // After the interval, with the key working: a live cache.
            FaultPlan.reset()
            TestClock.set(t0 + Tuning.attachRetryMs)
            Allocator.deallocate(Allocator.allocate(48))
            if OS.tlsState != ThreadState.live { note("no cache after the retry interval (state \(OS.tlsState))") }
            if Self.registry().live != before.live + 1 { note("live is not one more with a cache") }
        }
        #expect(results.withLock { $0 }.isEmpty, "\(results.withLock { $0 })")
        // The thread exited: its cache is back, the live count as before.
        #expect(Self.registry().live == before.live)
    }
}
