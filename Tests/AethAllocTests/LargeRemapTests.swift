// White-box tests of realloc on large blocks (Large.reallocate): growth in
// place and by moving the pages with mremap, shrinking that gives the tail
// back, the copy fallback when mremap fails, and a refused munmap of a freed
// block. Each test checks the contents and what the segment map says.
import CAethAlloc
import Foundation
import Testing
@testable import AethAllocHosted

/// Whether every page touching [p, p + bytes) is mapped (mincore fails
/// with ENOMEM on an unmapped page).
func isMapped(_ p: UnsafeMutableRawPointer, bytes: Int) -> Bool {
    let start = UInt(bitPattern: p) & ~UInt(4095)
    let length = Int(UInt(bitPattern: p) - start) + bytes
    var vec = [UInt8](repeating: 0, count: (length + 4095) / 4096)
    return mincore(UnsafeMutableRawPointer(bitPattern: start), length, &vec) == 0
}

/// Writes a word that depends on the seed and the offset at the start of
/// every 4 KiB of [p, p + bytes); `stamped` checks them in a prefix.
func stamp(_ p: UnsafeMutableRawPointer, bytes: Int, seed: UInt64) {
    for off in stride(from: 0, to: bytes - 7, by: 4096) { p.storeBytes(of: seed ^ UInt64(off), toByteOffset: off, as: UInt64.self) }
}
func stamped(_ p: UnsafeMutableRawPointer, bytes: Int, seed: UInt64) -> Bool {
    for off in stride(from: 0, to: bytes - 7, by: 4096) where p.load(fromByteOffset: off, as: UInt64.self) != seed ^ UInt64(off) {
        return false
    }
    return true
}

@Suite(.exclusiveCoreState) struct LargeRemapTests {
    // No cached spans: each block here is one fresh mapping, which mremap
    // can grow and move (a block assembled from cached spans is copied:
    // LargeReuseTests).
    init() {
        Runtime.ensureInitialized()
        Large.releaseCached()
    }

    @Test func growsInPlaceWhenTheNextPagesAreFree() throws {
        let old = 8 << 20
        // 1 MiB more; realloc grows by at least a quarter (headroom), so the
        // block needs 2 MiB after it. The trimmed tail of the over-mapping
        // that aligned it (0 to 4 MiB) is often that large.
        let growth = 1 << 20
        // A block whose next pages are free: proven by mapping them
        // ourselves (MAP_FIXED_NOREPLACE fails if anything is there) and
        // unmapping them just before the realloc. Where something is there
        // (mappings are placed top-down, usually right below the previous
        // one), try another block.
        var tried: [UnsafeMutableRawPointer] = []
        var found: UnsafeMutableRawPointer? = nil
        let room = 3 << 20
        for _ in 0..<64 {
            let p = try #require(Allocator.allocate(UInt(old)))
            let b = try #require(Segment.owner(of: p))
            let end = b + Large.header(b).pointee.mappedBytes
            let claim = mmap(end, room, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
            if claim == end {
                munmap(end, room)
                found = p
                break
            }
            if let claim, claim != UnsafeMutableRawPointer(bitPattern: -1) { munmap(claim, room) }
            tried.append(p)
        }
        for t in tried { Allocator.deallocate(t) }
        let p = try #require(found, "no large block with free pages after it")
        defer { Allocator.deallocate(p) }
        stamp(p, bytes: old, seed: 0x1111)
        let base = try #require(Segment.owner(of: p))
        let q = try #require(Allocator.reallocate(p, UInt(old + growth)))
        #expect(q == p, "the block moved although it could grow in place")
        #expect(Large.header(base).pointee.mappedBytes >= Large.header(base).pointee.userOffset + old + growth)
        #expect(isMapped(q, bytes: old + growth))
        #expect(stamped(q, bytes: old, seed: 0x1111))
        #expect(Segment.owner(of: q) == base)
    }

    @Test func movesThePagesWhenItCannotGrowInPlace() throws {
        let old = 8 << 20
        let p = try #require(Allocator.allocate(UInt(old)))
        stamp(p, bytes: old, seed: 0x2222)
        let base = try #require(Segment.owner(of: p))
        let mapped = Large.header(base).pointee.mappedBytes
        // A mapping of our own right after the block: mremap cannot grow it there.
        // (Already taken by another mapping, EEXIST, serves as well.)
        let blocker = mmap(base + mapped, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
        let failed = UnsafeMutableRawPointer(bitPattern: -1)
        let placed = blocker == base + mapped
        let taken = blocker == failed && errno == EEXIST
        if !placed && blocker != failed { munmap(blocker, 4096) }
        defer { if placed { munmap(base + mapped, 4096) } }
        try #require(placed || taken, "could not block the pages after the block")
        let size = old + (8 << 20)
        let q = try #require(Allocator.reallocate(p, UInt(size)))
        #expect(q != p)
        #expect(stamped(q, bytes: old, seed: 0x2222), "the contents did not move with the pages")
        let newBase = try #require(Segment.owner(of: q))
        #expect(newBase != base)
        #expect(newBase + Large.header(newBase).pointee.userOffset == q)
        #expect(Large.header(newBase).pointee.mappedBytes >= Large.header(newBase).pointee.userOffset + size)
        // The old address is no longer ours: its pages went with the move.
        #expect(Segment.owner(of: p) == nil, "the segment map still points at the old block")
        #expect(!isMapped(base, bytes: 4096))
        Allocator.deallocate(q)
    }

    @Test func shrinkingGivesTheTailBack() throws {
        let old = 16 << 20
        let p = try #require(Allocator.allocate(UInt(old)))
        defer { Allocator.deallocate(p) }
        stamp(p, bytes: old, seed: 0x3333)
        let base = try #require(Segment.owner(of: p))
        let mapped = Large.header(base).pointee.mappedBytes
        let size = 2 << 20
        let q = try #require(Allocator.reallocate(p, UInt(size)))
        #expect(q == p)
        let now = Large.header(base).pointee.mappedBytes
        #expect(now < mapped / 2, "the tail was kept")
        #expect(now >= Large.header(base).pointee.userOffset + size)
        #expect(!isMapped(base + now, bytes: mapped - now), "the tail is still mapped")
        #expect(stamped(q, bytes: size, seed: 0x3333))
        #expect(Allocator.usableSize(q) >= UInt(size))
    }

    @Test func aFailedMremapFallsBackToACopy() throws {
        let old = 8 << 20
        let p = try #require(Allocator.allocate(UInt(old)))
        stamp(p, bytes: old, seed: 0x4444)
        let base = try #require(Segment.owner(of: p))
        FaultPlan.set(.mremap, every: 1)
        errno = 1234
        let q = Allocator.reallocate(p, UInt(old + (8 << 20)))
        let err = errno
        let injected = FaultPlan.injected(.mremap)
        FaultPlan.reset()
        let r = try #require(q)
        #expect(injected == 2, "expected a failed in-place growth and a failed move")
        #expect(err == 1234, "a successful realloc changed errno")
        #expect(r != p)
        #expect(stamped(r, bytes: old, seed: 0x4444), "the copy lost the contents")
        let newBase = try #require(Segment.owner(of: r))
        #expect(newBase != base)
        #expect(newBase + Large.header(newBase).pointee.userOffset == r)
        // The old block was freed: its span is cached or gone, not in use.
        #expect(Segment.owner(of: p) == nil || Large.header(base).pointee.inUse == 0)
        Allocator.deallocate(r)
    }

    @Test func aRefusedMunmapPurgesTheFreedBlock() throws {
        // Above the span cache's limit: freed at once.
        let size = Tuning.largeCacheMaxSpanBytes + (8 << 20)
        let p = try #require(Allocator.allocate(UInt(size)))
        stamp(p, bytes: size, seed: 0x5555)
        let base = try #require(Segment.owner(of: p))
        let mapped = Large.header(base).pointee.mappedBytes
        FaultPlan.set(.munmap, every: 1)
        Allocator.deallocate(p)
        let refused = FaultPlan.injected(.munmap)
        let purgeFailed = FaultPlan.injected(.madvise)
        FaultPlan.reset()
        #expect(refused == 1)
        #expect(purgeFailed == 0)
        // Still mapped (the address space leaks), no longer ours, its memory given back.
        #expect(isMapped(base, bytes: mapped))
        #expect(Segment.owner(of: p) == nil, "a freed block is still in the segment map")
        #expect(p.load(as: UInt64.self) == 0 && p.load(fromByteOffset: (size - 8) & ~4095, as: UInt64.self) == 0,
                "the freed block was not purged")
        // The next block of that size is a new mapping, not the leaked one.
        let q = try #require(Allocator.allocate(UInt(size)))
        #expect(Segment.owner(of: q) != base)
        stamp(q, bytes: size, seed: 0x6666)
        #expect(stamped(q, bytes: size, seed: 0x6666))
        Allocator.deallocate(q)
        munmap(base, mapped)
    }
}
