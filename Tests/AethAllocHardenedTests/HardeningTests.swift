// White-box tests of the hardened variant's checks (Hardening.swift) on the
// core compiled in normal Swift with `Variant.hardened`: the live-block
// bitmap, pages' free bitmaps (no allocator data in freed blocks, a bitmap
// that marks a live block free is caught), and guard pages that are never
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
    let word = UnsafeMutableRawPointer(bitPattern: seg + UInt(Segment.liveBitmapsOffset) + (granule >> 6) * 8)!
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

    /// Blocks of class `c` from the pages, `n` of them, with their page.
    func blocksFromOnePage(_ c: Int, _ n: Int) throws -> ([UnsafeMutableRawPointer], UnsafeMutablePointer<PageMeta>) {
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: n)
        defer { buf.deallocate() }
        try #require(Central.fill(c, into: buf, max: n) == n)
        let blocks = (0..<n).map { buf[$0]! }
        let page = Segment.page(of: blocks[0], in: Segment.base(of: blocks[0]))
        try #require(blocks.allSatisfy { Segment.page(of: $0, in: Segment.base(of: $0)) == page })
        return (blocks, page)
    }

    func drain(_ c: Int, _ blocks: [UnsafeMutableRawPointer]) {
        var list: [UnsafeMutableRawPointer?] = blocks
        list.withUnsafeMutableBufferPointer { Central.drain(c, from: $0.baseAddress!, count: blocks.count) }
    }

    // 48: the page's bitmap is in front of its blocks; 2048: in its PageMeta.
    @Test(arguments: [48, 2048])
    func freedBlocksHoldNoAllocatorData(_ size: Int) throws {
        let c = SizeClass.computedIndex(of: size)
        // A fifth block stays out: a page with none out is carved again
        // from its start.
        let (all, page) = try blocksFromOnePage(c, 5)
        let blocks = Array(all.prefix(4))
        for b in blocks { memset(b, 0x5C, size) }
        drain(c, blocks.reversed())
        Lock.acquire(Central.lockWord(c))
        let valid = Central.isValid(page)
        let free = page.pointee.freeBlocks
        Lock.release(Central.lockWord(c))
        #expect(valid)
        #expect(free == 4)
        // Nothing was written into the freed blocks: no link for a write
        // after free to forge.
        for b in blocks {
            #expect((0..<size).allSatisfy { b.load(fromByteOffset: $0, as: UInt8.self) == 0x5C }, "a freed block was written to")
        }
        // Handed out again, lowest address first (popped from the top).
        let (again, _) = try blocksFromOnePage(c, 4)
        #expect(again.reversed().map { UInt(bitPattern: $0) } == blocks.map { UInt(bitPattern: $0) }.sorted())
        drain(c, again + [all[4]])
    }

    @Test func aBitmapThatMarksALiveBlockFreeAborts() throws {
        let c = SizeClass.computedIndex(of: 48)
        let (blocks, page) = try blocksFromOnePage(c, 4)
        // The program holds blocks[1]; an overflow from the page before
        // sets its bit in the page's bitmap (the counts made to agree).
        let live = Hardening.handOut(blocks[1], sizeClass: c)
        let (end, stderr) = runInChild {
            let start = UInt(bitPattern: page.pointee.start!)
            let index = Int((UInt(bitPattern: blocks[1]) - start) / UInt(page.pointee.blockSize))
            Central.bitmap(page)[index >> 6] |= UInt64(1) << UInt64(index & 63)
            page.pointee.freeBlocks += 1
            page.pointee.used -= 1
            page.pointee.firstFreeWord = 0
            let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 8)
            _ = Central.fill(c, into: buf, max: 8)
            return 0
        }
        Hardening.takeBack(live, sizeClass: c, operation: "free")
        drain(c, blocks)
        #expect(end == .signaled(SIGABRT), "a block the program holds was handed out again")
        #expect(stderr.contains("page free bitmap corrupted"), "stderr: \(stderr)")
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
