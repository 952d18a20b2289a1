// White-box tests of the fork handlers (Runtime.swift): prepare takes every
// lock and parent releases them; in a real fork child, the caches of the
// parent's other threads become orphans and the child's first reclaim
// returns their blocks. The child case forks this test process: the child
// holds only the forking thread, calls nothing but the core (and reads of
// memory prepared before the fork), and ends with _exit and a status code
// naming the first check that failed.
import CAethAlloc
import Foundation
import Synchronization
import Testing
@testable import AethAllocHosted

/// Serialises the tests that fork or replace the publisher's file (a fork
/// child restarts the publisher).
let forkAndPublisherLock = NSLock()

enum ChildEnd: Equatable {
    case exited(Int32)
    case signaled(Int32)
    case timedOut
}

/// Forks; the child runs `body` and exits with its result. Returns how the
/// child ended (killed after 30 s).
func forkChild(_ body: () -> Int32) -> ChildEnd {
    let pid = fork()
    if pid == 0 { _exit(body()) }
    precondition(pid > 0, "fork failed")
    var status: Int32 = 0
    for _ in 0..<3000 {
        if waitpid(pid, &status, WNOHANG) == pid {
            return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
        }
        usleep(10_000)
    }
    kill(pid, SIGKILL)
    waitpid(pid, &status, 0)
    return .timedOut
}

@Suite(.exclusiveCoreState) struct ForkTests {
    init() { Runtime.ensureInitialized() }

    @Test func prepareTakesEveryLockAndParentReleasesThem() {
        forkAndPublisherLock.lock()
        defer { forkAndPublisherLock.unlock() }
        var total = 0
        var held = 0
        AethAllocHosted.aethalloc_fork_prepare()
        Runtime.forEachLock {
            total += 1
            if $0.pointee.load(ordering: .relaxed) != 0 { held += 1 }
        }
        AethAllocHosted.aethalloc_fork_parent()
        #expect(total == SizeClass.count + 4)
        #expect(held == total, "fork_prepare left \(total - held) locks free")
        // Released: each can be taken again (other tests may hold one briefly).
        var free = 0
        Runtime.forEachLock { l in
            for _ in 0..<200_000 {
                if l.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
                    Lock.release(l)
                    free += 1
                    return
                }
                usleep(10)
            }
        }
        #expect(free == total, "fork_parent left \(total - free) locks held")
    }

    @Test func aForkChildReclaimsTheCachesOfThreadsItDoesNotHave() throws {
        forkAndPublisherLock.lock()
        defer { forkAndPublisherLock.unlock() }
        let threads = 3
        let size = 48
        let c = SizeClass.index(of: size)
        let perThread = 20
        // Caches and one cached block of each parked thread, written before the fork.
        let caches = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: threads)
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: threads * perThread)
        defer {
            caches.deallocate()
            blocks.deallocate()
        }
        let ready = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let finished = DispatchGroup()
        for t in 0..<threads {
            finished.enter()
            let thread = Thread {
                for i in 0..<perThread { blocks[t * perThread + i] = Allocator.allocate(UInt(size)) }
                for i in 0..<perThread { Allocator.deallocate(blocks[t * perThread + i]) }
                caches[t] = OS.tlsState == ThreadState.live ? OS.tlsCache : nil
                ready.signal()
                release.wait()
                finished.leave()
            }
            thread.start()
        }
        for _ in 0..<threads { ready.wait() }
        defer {
            for _ in 0..<threads { release.signal() }
            finished.wait()
        }
        for t in 0..<threads { try #require(caches[t] != nil, "a parked thread has no cache") }

        let end = forkChild {
            // The child handler has run: only this thread's cache is live.
            let r = Globals.registry
            if r.pointee.live.load(ordering: .relaxed) > 1 { return 10 }
            if !Globals.orphansPending.pointee.load(ordering: .relaxed) { return 11 }
            for t in 0..<threads {
                var found = false
                var o = r.pointee.orphans
                while let x = o {
                    if x == caches[t] { found = true }
                    o = ThreadCache.links(x).pointee.next
                }
                if !found { return 12 }
                if ThreadCache.hot(caches[t]!, c).pointee.count == 0 { return 13 }
            }
            var usedBefore = 0
            for i in 0..<(threads * perThread) {
                usedBefore += Int(Segment.page(of: blocks[i]!, in: Segment.base(of: blocks[i]!)).pointee.used)
            }
            ThreadCacheRegistry.reclaimOrphans()
            if r.pointee.orphans != nil || Globals.orphansPending.pointee.load(ordering: .relaxed) { return 14 }
            if r.pointee.live.load(ordering: .relaxed) > 1 { return 15 }
            for t in 0..<threads {
                var found = false
                var f = r.pointee.freeList
                while let x = f {
                    if x == caches[t] { found = true }
                    f = ThreadCache.links(x).pointee.next
                }
                if !found { return 16 }
                if ThreadCache.hot(caches[t]!, c).pointee.count != 0 { return 17 }
            }
            // Their blocks went back to the pages (the child has one thread, so
            // the depots were drained too). A page emptied and released reads
            // used 0, which only makes the sum smaller.
            var usedAfter = 0
            for i in 0..<(threads * perThread) {
                usedAfter += Int(Segment.page(of: blocks[i]!, in: Segment.base(of: blocks[i]!)).pointee.used)
            }
            if usedAfter >= usedBefore { return 18 }
            return 0
        }
        #expect(end == .exited(0))
    }

    /// Allocates and frees `blocks` 48-byte blocks on the calling thread;
    /// its cache afterwards (nil if the thread has none).
    static func cacheAfterChurn(blocks: Int) -> UnsafeMutableRawPointer? {
        var held: [UnsafeMutableRawPointer] = []
        for _ in 0..<blocks { held.append(Allocator.allocate(48)!) }
        held.forEach { Allocator.deallocate($0) }
        return OS.tlsState == ThreadState.live ? OS.tlsCache : nil
    }

    /// A thread's exit flush marks its cache busy, and it stays so until a
    /// new thread gets it: a fork during that flush (the cache still on the
    /// live list, its batches partly on the pool already) must not orphan it.
    @Test func aThreadsExitFlushLeavesItsCacheBusyUntilReused() throws {
        let cache = LockedBox<UnsafeMutableRawPointer?>(nil)
        let worker = JoinableThread { cache.withLock { $0 = Self.cacheAfterChurn(blocks: 40) } }
        worker.join()
        let tc = try #require(cache.withLock { $0 })
        #expect(ThreadCache.links(tc).pointee.busy != 0, "an exited thread's cache is not busy")
        let again = try #require(ThreadCacheRegistry.obtain())
        defer { ThreadCacheRegistry.recycle(again) }
        if again == tc { #expect(ThreadCache.links(tc).pointee.busy == 0, "a reused cache is still busy") }
    }

    @Test func aForkChildLeavesABusyCacheAlone() throws {
        forkAndPublisherLock.lock()
        defer { forkAndPublisherLock.unlock() }
        let c = SizeClass.index(of: 48)
        let cache = LockedBox<UnsafeMutableRawPointer?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let worker = JoinableThread {
            cache.withLock { $0 = Self.cacheAfterChurn(blocks: 20) }
            ready.signal()
            release.wait()
        }
        ready.wait()
        defer {
            release.signal()
            worker.join()
        }
        let tc = try #require(cache.withLock { $0 })
        let cached = ThreadCache.hot(tc, c).pointee.count
        try #require(cached > 0)
        // As a fork during the thread's slow path or exit flush finds it.
        ThreadCache.setBusy(tc, true)
        defer { ThreadCache.setBusy(tc, false) }
        let end = forkChild {
            var o = Globals.registry.pointee.orphans
            while let x = o {
                if x == tc { return 10 }
                o = ThreadCache.links(x).pointee.next
            }
            ThreadCacheRegistry.reclaimOrphans()
            if ThreadCache.hot(tc, c).pointee.count != cached { return 11 }
            return 0
        }
        #expect(end == .exited(0))
    }
}
