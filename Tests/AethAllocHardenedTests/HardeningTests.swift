// White-box tests of the hardened variant's checks (Hardening.swift) on the
// core compiled in normal Swift with `Variant.hardened`: the live-block
// bitmap, free-list links (encoded while on a list, cleared when handed
// out, rejected when they leave their page), and guard pages that are never
// skipped. The aborting cases run in a forked child, which holds only the
// forking thread and calls nothing but the core before it ends; its stderr
// comes back through a pipe. One serialized suite: the fault plan is per
// thread, but the maps and pages the tests look at are process-wide.
import CAethAlloc
import Foundation
import Synchronization
import Testing
@testable import AethAllocHostedHardened

/// How a child process ended.
enum ChildEnd: Equatable {
    case exited(Int32)
    case signaled(Int32)
    case timedOut
}

/// Runs `body` in a forked child and returns how the child ended and what it
/// wrote to stderr. The child exits with `body`'s result if `body` returns.
func runInChild(_ body: () -> Int32) -> (end: ChildEnd, stderr: String) {
    var fds: [Int32] = [0, 0]
    precondition(pipe(&fds) == 0)
    let pid = fork()
    if pid == 0 {
        close(fds[0])
        dup2(fds[1], 2)
        _exit(body())
    }
    precondition(pid > 0, "fork failed")
    close(fds[1])
    var status: Int32 = 0
    var end = ChildEnd.timedOut
    for _ in 0..<3000 {
        if waitpid(pid, &status, WNOHANG) == pid {
            end = status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
            break
        }
        usleep(10_000)
    }
    if end == .timedOut {
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }
    var output = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fds[0], &buf, buf.count)
        if n <= 0 { break }
        output += buf[0..<n]
    }
    close(fds[0])
    return (end, String(decoding: output, as: UTF8.self))
}

/// The live-block bit of the granule at `p` (Hardening's bitmap layout).
func liveBit(_ p: UnsafeMutableRawPointer) -> Bool {
    let a = UInt(bitPattern: p)
    let seg = a & ~UInt(Tuning.segmentBytes - 1)
    let granule = (a - seg) >> 4
    let word = UnsafeMutableRawPointer(bitPattern: seg + UInt(Hardening.bitmapOffset) + (granule >> 6) * 8)!
    return word.assumingMemoryBound(to: Atomic<UInt64>.self).pointee.load(ordering: .relaxed) & (1 << (granule & 63)) != 0
}

/// The /proc/self/maps line of the mapping that starts at `p`, if any.
func mapping(startingAt p: UnsafeMutableRawPointer) -> Substring? {
    guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return nil }
    let start = String(UInt(bitPattern: p), radix: 16)
    return maps.split(separator: "\n").first { $0.hasPrefix(start + "-") }
}

/// Whether the page at `p` is its own PROT_NONE mapping.
func isGuardPage(_ p: UnsafeMutableRawPointer) -> Bool {
    guard let line = mapping(startingAt: p) else { return false }
    let fields = line.split(separator: " ")
    return fields.count > 1 && fields[1] == "---p"
}

@Suite(.serialized) struct HardeningTests {
    init() { Runtime.ensureInitialized() }

    @Test func theLiveBitmapFollowsEveryBlockAndFreeZeroes() throws {
        let size = 64
        let p = try #require(Allocator.allocate(UInt(size)))
        #expect(liveBit(p), "a handed-out block is not marked live")
        #expect(!liveBit(p + 16), "an interior granule is marked live")
        Hardening.checkLive(p, operation: "test")  // aborts unless live
        memset(p, 0xAB, size)
        Allocator.deallocate(p)
        #expect(!liveBit(p), "a freed block is still marked live")
        let bytes = UnsafeRawBufferPointer(start: p, count: size)
        #expect(bytes.allSatisfy { $0 == 0 }, "a freed block keeps its data")
        // Handed out again (the cache is LIFO): live again.
        let q = try #require(Allocator.allocate(UInt(size)))
        #expect(q == p)
        #expect(liveBit(q))
        Allocator.deallocate(q)
    }

    @Test func freeListLinksAreEncodedAndClearedWhenHandedOut() throws {
        let c = SizeClass.computedIndex(of: 2048)
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 5)
        defer { buf.deallocate() }
        #expect(Central.fill(c, into: buf, max: 5) == 5)
        // A fifth block stays out: a page with none out is carved again
        // from its start and keeps no free list.
        let kept = buf[4]!
        let blocks = (0..<4).map { buf[$0]! }
        for b in blocks { memset(b, 0x5C, 64) }
        Central.drain(c, from: buf, count: 4)
        // On the free list: the last drained block heads it, and its link is
        // the previous one, stored encoded.
        // (A fresh class: one page.)
        let page = Segment.page(of: blocks[3], in: Segment.base(of: blocks[3]))
        try #require(Segment.page(of: blocks[2], in: Segment.base(of: blocks[2])) == page)
        Lock.acquire(Central.lockWord(c))
        let head = page.pointee.free
        let stored = blocks[3].load(as: UInt.self)
        let decoded = Hardening.decodeLink(at: blocks[3], page: page)
        let valid = page.pointee.isValid()
        Lock.release(Central.lockWord(c))
        try #require(head == blocks[3])
        #expect(stored != UInt(bitPattern: blocks[2]), "the link is stored in the clear")
        #expect(decoded == blocks[2])
        #expect(valid)
        // Handed out again: no block's first word holds a link.
        #expect(Central.fill(c, into: buf, max: 4) == 4)
        for i in 0..<4 {
            let b = buf[i]!
            #expect(b.load(as: UInt.self) == 0, "a handed-out block's first word holds its old link")
        }
        #expect(Set((0..<4).map { UInt(bitPattern: buf[$0]!) }) == Set(blocks.map { UInt(bitPattern: $0) }))
        buf[4] = kept
        Central.drain(c, from: buf, count: 5)
    }

    /// A page, with one of its handed-out blocks as a scratch link slot.
    func pageWithSlot(_ c: Int) -> (UnsafeMutablePointer<PageMeta>, UnsafeMutableRawPointer, UnsafeMutablePointer<UnsafeMutableRawPointer?>) {
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 4)
        precondition(Central.fill(c, into: buf, max: 4) == 4)
        let slot = buf[0]!
        return (Segment.page(of: slot, in: Segment.base(of: slot)), slot, buf)
    }

    @Test func decodeLinkAcceptsEveryBlockBelowTheBumpLimit() throws {
        let c = SizeClass.computedIndex(of: 512)
        let (page, slot, buf) = pageWithSlot(c)
        defer {
            Central.drain(c, from: buf, count: 4)
            buf.deallocate()
        }
        let start = try #require(page.pointee.start)
        let size = Int(page.pointee.blockSize)
        let blocks = Int(page.pointee.bumpBytes) / size
        #expect(blocks >= 1)
        for k in 0..<blocks {
            slot.storeBytes(of: Hardening.encodeLink(start + k * size, at: slot), as: UInt.self)
            #expect(Hardening.decodeLink(at: slot, page: page) == start + k * size)
        }
        slot.storeBytes(of: Hardening.encodeLink(nil, at: slot), as: UInt.self)
        #expect(Hardening.decodeLink(at: slot, page: page) == nil)
        // The encoding depends on the slot's address and the secret.
        #expect(Hardening.encodeLink(start, at: slot) != UInt(bitPattern: start))
        #expect(Hardening.encodeLink(start, at: slot) != Hardening.encodeLink(start, at: slot + 4096))
    }

    @Test(arguments: ["inside a block", "at the bump limit", "below the page", "past the page"])
    func decodeLinkRejectsALinkThatLeavesItsPage(_ where_: String) throws {
        let c = SizeClass.computedIndex(of: 512)
        let (page, slot, buf) = pageWithSlot(c)
        defer {
            Central.drain(c, from: buf, count: 4)
            buf.deallocate()
        }
        let start = try #require(page.pointee.start)
        let size = Int(page.pointee.blockSize)
        let target: UnsafeMutableRawPointer
        switch where_ {
        case "inside a block": target = start + size + 16
        case "at the bump limit": target = start + Int(page.pointee.bumpBytes)
        case "below the page": target = start - size
        default: target = start + Int(page.pointee.limitBytes) + size
        }
        slot.storeBytes(of: Hardening.encodeLink(target, at: slot), as: UInt.self)
        let (end, stderr) = runInChild {
            _ = Hardening.decodeLink(at: slot, page: page)
            return 0
        }
        #expect(end == .signaled(SIGABRT), "a forged link was accepted (\(where_))")
        #expect(stderr.contains("free list corrupted"), "stderr: \(stderr)")
    }

    @Test(arguments: ["double free", "interior pointer"])
    func freeOfABlockThatIsNotLiveAborts(_ misuse: String) throws {
        let p = try #require(Allocator.allocate(96))
        let (end, stderr) = runInChild {
            if misuse == "double free" {
                Allocator.deallocate(p)
                Allocator.deallocate(p)
            } else {
                Allocator.deallocate(p + 16)
            }
            return 0
        }
        #expect(end == .signaled(SIGABRT), "\(misuse) was not caught")
        #expect(stderr.contains("not a live block"), "stderr: \(stderr)")
        Allocator.deallocate(p)
    }

    @Test func aNewSegmentWithoutItsGuardPageIsNotUsed() throws {
        // No empty segment kept for reuse: the run below needs a new one.
        _ = Reclaimer.trim()
        let slices = Tuning.slicesPerSegment - 1
        FaultPlan.set(.mprotect, every: 1)
        let refused = SegmentManager.allocateRun(slices: slices, mark: SizeClass.markMedium)
        let injected = FaultPlan.injected(.mprotect)
        FaultPlan.reset()
        #expect(refused == nil, "a segment was used without its guard page")
        #expect(injected == 1)
        let run = try #require(SegmentManager.allocateRun(slices: slices, mark: SizeClass.markMedium))
        let base = Segment.base(of: run.page.pointee.start!)
        #expect(isGuardPage(base + Hardening.segmentGuardOffset), "no guard page after the segment's metadata")
        SegmentManager.releasePage(run.page)
    }

    @Test func aLargeBlockWithoutItsGuardPagesIsNotHandedOut() throws {
        let size = 1 << 20
        errno = 0
        FaultPlan.set(.mprotect, every: 1)
        let refused = Allocator.allocate(UInt(size))
        let injected = FaultPlan.injected(.mprotect)
        let err = errno
        FaultPlan.reset()
        #expect(refused == nil, "a large block was handed out without its guards")
        #expect(err == ENOMEM)
        #expect(injected >= 1)
        let p = try #require(Allocator.allocate(UInt(size)))
        let base = try #require(Segment.owner(of: p))
        let h = Large.header(base).pointee
        #expect(isGuardPage(p - OS.pageBytes), "no guard page before the data")
        #expect(isGuardPage(base + (h.mappedBytes - OS.pageBytes)), "no guard page after the data")
        Allocator.deallocate(p)
    }
}
