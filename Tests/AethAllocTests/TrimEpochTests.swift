// malloc_trim reaches every thread's cache: the caller's at once, every other
// thread's at that thread's next slow path (the trim epoch).
import Foundation
import Synchronization
import Testing
@testable import AethAllocHosted

@Suite("malloc_trim reaches other threads", .serialized, .exclusiveCoreState)
struct TrimEpochTests {
    @Test func anotherThreadsCacheEmptiesAtItsNextSlowPath() throws {
        let sizes = [48, 256]
        let perClass = 20
        let blocks = LockedBox<[UnsafeMutableRawPointer]>([])
        let cache = LockedBox<UnsafeMutableRawPointer?>(nil)
        let report = LockedBox<[String]>([])
        let usedBefore = LockedBox(0)
        let parked = DispatchSemaphore(value: 0)
        let goOn = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)

        let worker = JoinableThread {
            var mine: [UnsafeMutableRawPointer] = []
            for size in sizes {
                for _ in 0..<perClass { mine.append(Allocator.allocate(UInt(size))!) }
            }
            mine.forEach { Allocator.deallocate($0) }
            blocks.withLock { [mine] in $0 = mine }
            cache.withLock { $0 = OS.tlsState == ThreadState.live ? OS.tlsCache : nil }
            parked.signal()
            goOn.wait()
            let cached = blocks.withLock { $0 }
            // One slow path: a class this thread has never used has an empty
            // entry, so malloc goes to ThreadCache.allocate.
            let other = Allocator.allocate(3000)
            let tc = OS.tlsCache
            var lines: [String] = []
            for size in sizes where ThreadCache.hot(tc, SizeClass.index(of: size)).pointee.count != 0 {
                lines.append("\(size)-byte class still cached after the slow path")
            }
            if ThreadCache.links(tc).pointee.seenTrimEpoch != Globals.trimEpoch.pointee.load(ordering: .relaxed) {
                lines.append("the cache did not record the trim it honoured")
            }
            // Its blocks went back to their pages (a page emptied and
            // released reads used 0, which only makes the sum smaller); the
            // thread has not exited, so its own exit did not return them.
            if Self.usedOnPages(cached) >= usedBefore.withLock({ $0 }) {
                lines.append("the blocks it cached did not go back to their pages")
            }
            report.withLock { $0 = lines }
            Allocator.deallocate(other)
            done.signal()
        }
        parked.wait()
        let tc = try #require(cache.withLock { $0 }, "the worker has no cache")
        for size in sizes {
            #expect(ThreadCache.hot(tc, SizeClass.index(of: size)).pointee.count > 0, "\(size)-byte blocks not cached")
        }
        usedBefore.withLock { $0 = Self.usedOnPages(blocks.withLock { $0 }) }

        _ = Reclaimer.trim()
        // Another thread's cache is its own until it makes a call: untouched.
        for size in sizes {
            #expect(ThreadCache.hot(tc, SizeClass.index(of: size)).pointee.count > 0)
        }
        #expect(ThreadCache.links(tc).pointee.seenTrimEpoch != Globals.trimEpoch.pointee.load(ordering: .relaxed))

        goOn.signal()
        done.wait()
        worker.join()
        #expect(report.withLock { $0 } == [])
    }

    /// Blocks in use on the pages of `blocks`; a segment given back to the
    /// OS (its map byte cleared) counts 0 and is not read.
    static func usedOnPages(_ blocks: [UnsafeMutableRawPointer]) -> Int {
        blocks.reduce(0) { sum, p in
            guard Segment.owner(of: p) != nil else { return sum }
            return sum + Int(Segment.page(of: p, in: Segment.base(of: p)).pointee.used)
        }
    }

    /// A cache handed to a new thread starts at the current epoch: its first
    /// slow path does not empty it, nor return what every thread shares.
    @Test func aNewCacheStartsAtTheCurrentEpoch() throws {
        _ = Reclaimer.trim()
        _ = Reclaimer.trim()
        let tc = try #require(ThreadCacheRegistry.obtain())
        #expect(ThreadCache.links(tc).pointee.seenTrimEpoch == Globals.trimEpoch.pointee.load(ordering: .relaxed))
        ThreadCacheRegistry.recycle(tc)
    }
}
