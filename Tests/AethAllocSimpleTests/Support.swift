// Helpers shared by the simple policy's white-box tests.
import CAethAlloc
import Foundation
import Synchronization
import Testing
@testable import AethAllocHostedSimple

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

/// Runs `body(0..<count)` on `count` new threads and returns once every one
/// has ended, its thread-exit work (the cache's pthread key destructor)
/// included: pthread_join returns only after the destructors ran.
func runJoinedThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Start { let run: () -> Void; init(_ run: @escaping () -> Void) { self.run = run } }
    var threads: [pthread_t] = []
    for i in 0..<count {
        let start = Unmanaged.passRetained(Start { body(i) }).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
        }, start)
        precondition(rc == 0, "pthread_create failed")
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

/// The page invariant (used + free list == handed-out blocks) of the page
/// owning `p`, checked under its class lock. A page that went back to its
/// segment (its slices no longer of class `c`, or the segment unmapped) has
/// no invariant left to check and counts as valid.
func pageIsValid(_ p: UnsafeMutableRawPointer, sizeClass c: Int) -> Bool {
    Lock.acquire(Central.lockWord(c))
    defer { Lock.release(Central.lockWord(c)) }
    guard let seg = Segment.owner(of: p), Int(Segment.sliceClass(seg, Segment.sliceIndex(of: p))) == c else { return true }
    return Central.isValid(Segment.page(of: p, in: seg))
}

/// The sum of `used` over the distinct pages holding `blocks` (all of class `c`).
func usedBlocks(of blocks: [UnsafeMutableRawPointer], sizeClass c: Int) -> Int {
    var pages = Set<UInt>()
    var total = 0
    Lock.acquire(Central.lockWord(c))
    defer { Lock.release(Central.lockWord(c)) }
    for b in blocks {
        let page = Segment.page(of: b, in: Segment.base(of: b))
        if pages.insert(UInt(bitPattern: page)).inserted { total += Int(page.pointee.used) }
    }
    return total
}

/// `n` blocks of class `c` straight from the pages.
func blocksFromPages(_ c: Int, _ n: Int) -> [UnsafeMutableRawPointer] {
    let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 64)
    defer { buf.deallocate() }
    var out: [UnsafeMutableRawPointer] = []
    while out.count < n {
        let k = Central.fill(c, into: buf, max: min(64, n - out.count))
        precondition(k > 0, "the pages gave nothing")
        for i in 0..<k { out.append(buf[i]!) }
    }
    return out
}

/// Links `blocks` through their first word, in order, the last to nil; returns the head.
func linkBatch(_ blocks: [UnsafeMutableRawPointer]) -> UnsafeMutableRawPointer {
    for i in 0..<blocks.count {
        blocks[i].storeBytes(of: i + 1 < blocks.count ? blocks[i + 1] : nil, as: UnsafeMutableRawPointer?.self)
    }
    return blocks.first!
}

/// The blocks of a list linked through their first word (at most `limit`).
func walk(_ head: UnsafeMutableRawPointer?, limit: Int) -> [UnsafeMutableRawPointer] {
    var out: [UnsafeMutableRawPointer] = []
    var p = head
    while let b = p, out.count < limit {
        out.append(b)
        p = b.load(as: UnsafeMutableRawPointer?.self)
    }
    return out
}

/// Batches on class `c`'s global pool.
func poolCount(_ c: Int) -> Int { Globals.depot(c).pointee.full.approximateCount() }

/// The descriptor on top of class `c`'s pool (nil when empty).
func poolTop(_ c: Int) -> UnsafeMutablePointer<PoolBatch>? {
    let top = Globals.depot(c).pointee.full.head.load(ordering: .acquiring).first
    return UnsafeMutableRawPointer(bitPattern: top)?.assumingMemoryBound(to: PoolBatch.self)
}

/// An atomic counter that closures running on other threads can share.
final class Counter: @unchecked Sendable {
    private let word = Atomic<Int>(0)
    func add(_ n: Int) { word.wrappingAdd(n, ordering: .acquiringAndReleasing) }
    var value: Int { word.load(ordering: .acquiring) }
}
