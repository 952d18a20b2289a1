// White-box tests of how freed large spans are reused (Large.allocate): a
// request no cached span fits is assembled from cached spans, whose pages
// move (mremap) instead of being faulted in again; the unused tail of a
// reused span, from a chunk boundary on, becomes a cached span where it is;
// freed spans merge with their cached neighbours; calloc reads zeros either
// way; a refused mremap gives the spans back and the block is still whole.
import CAethAlloc
import Foundation
import Testing
@testable import AethAllocHosted

/// Whether each 4 KiB page of [p, p + bytes) is resident (mincore).
func residentPages(_ p: UnsafeMutableRawPointer, bytes: Int) -> [Bool] {
    let start = UInt(bitPattern: p) & ~UInt(4095)
    let length = Int(UInt(bitPattern: p) - start) + bytes
    var vec = [UInt8](repeating: 0, count: (length + 4095) / 4096)
    precondition(mincore(UnsafeMutableRawPointer(bitPattern: start), length, &vec) == 0)
    return vec.map { $0 & 1 == 1 }
}

@Suite(.exclusiveCoreState) struct LargeReuseTests {
    static let mib = 1 << 20

    init() {
        Runtime.ensureInitialized()
        Large.releaseCached()
    }

    @Test func aMissIsAssembledFromCachedSpansWhosePagesMove() throws {
        let a = try #require(Allocator.allocate(UInt(8 * Self.mib)))
        let b = try #require(Allocator.allocate(UInt(6 * Self.mib)))
        stamp(a, bytes: 8 * Self.mib, seed: 0xA)
        stamp(b, bytes: 6 * Self.mib, seed: 0xB)
        Allocator.deallocate(a)
        Allocator.deallocate(b)
        #expect(Large.cachedFigures().count == 2)

        // Larger than either: both move into the new mapping, the larger first.
        let size = 20 * Self.mib
        let c = try #require(Allocator.allocate(UInt(size)))
        defer { Allocator.deallocate(c) }
        #expect(Large.cachedFigures().count == 0, "the cached spans were not used")
        #expect(Segment.owner(of: a) == nil && Segment.owner(of: b) == nil, "a moved span is still in the map")
        #expect(stamped(c, bytes: 8 * Self.mib, seed: 0xA), "the first span's pages did not move to the start")
        // Nothing was written to the block: its first 14 MiB are resident
        // because they moved there (all but the last page of each span,
        // which the stamps did not reach), the rest is not yet faulted in.
        let resident = residentPages(c, bytes: size)
        let moved = 14 * Self.mib / 4096
        #expect(resident[0..<moved].filter { $0 }.count >= moved - 2, "moved pages are not resident")
        #expect(resident[(moved + 4)...].allSatisfy { !$0 }, "pages past the moved spans were touched")
        memset(c, 0x5A, size)
    }

    @Test func callocOfAnAssembledBlockReadsZero() throws {
        let a = try #require(Allocator.allocate(UInt(8 * Self.mib)))
        memset(a, 0xEE, 8 * Self.mib)
        Allocator.deallocate(a)
        let size = 12 * Self.mib
        let c = try #require(Allocator.allocateZeroed(count: 1, size: UInt(size)))
        defer { Allocator.deallocate(c) }
        #expect(Large.cachedFigures().count == 0)
        let bytes = UnsafeRawBufferPointer(start: c, count: size)
        #expect(bytes.allSatisfy { $0 == 0 })
    }

    @Test func theTailOfAReusedSpanIsCutAtAChunkBoundaryAndCachedWhereItIs() throws {
        let a = try #require(Allocator.allocate(UInt(20 * Self.mib)))
        let base = try #require(Segment.owner(of: a))
        let whole = Large.header(base).pointee.mappedBytes
        stamp(a, bytes: 20 * Self.mib, seed: 0xC)
        Allocator.deallocate(a)
        let b = try #require(Allocator.allocate(UInt(6 * Self.mib)))
        defer { Allocator.deallocate(b) }
        #expect(Segment.owner(of: b) == base, "the cached span was not reused")
        // 6 MiB and the header, up to the next 4 MiB boundary.
        let cut = 8 * Self.mib
        #expect(Large.header(base).pointee.mappedBytes == cut, "the reused span was not cut at the chunk boundary")
        let cached = Large.cachedFigures()
        #expect(cached.count == 1)
        #expect(cached.bytes == whole - cut)
        // The tail stayed where it was, with its data: a block reusing it
        // starts `cut` into the old span and reads the old block's stamps.
        let c = try #require(Allocator.allocate(UInt(cached.bytes - Tuning.largeHeaderBytes)))
        defer { Allocator.deallocate(c) }
        #expect(Segment.owner(of: c) == base + cut, "the tail moved")
        #expect(Large.cachedFigures().count == 0)
        for x in stride(from: 0, to: 4 * Self.mib, by: 4096) {
            let word = c.load(fromByteOffset: x, as: UInt64.self)
            if word != 0xC ^ UInt64(cut + x) {
                Issue.record("the tail's page at +\(x) does not hold the old block's data")
                break
            }
        }
    }

    @Test func aFreedSpanMergesWithTheCachedSpansNextToIt() throws {
        let a = try #require(Allocator.allocate(UInt(20 * Self.mib)))
        let base = try #require(Segment.owner(of: a))
        let whole = Large.header(base).pointee.mappedBytes
        Allocator.deallocate(a)
        // Cut in three: b, c and the cached tail, all one mapping.
        let b = try #require(Allocator.allocate(UInt(6 * Self.mib)))
        let c = try #require(Allocator.allocate(UInt(6 * Self.mib)))
        #expect(Segment.owner(of: b) == base && Segment.owner(of: c) == base + 8 * Self.mib)
        #expect(Large.cachedFigures().count == 1)
        // b alone has no free neighbour; c then joins b before it and the
        // tail after it: one span again, the whole mapping, still single.
        Allocator.deallocate(b)
        #expect(Large.cachedFigures().count == 2)
        Allocator.deallocate(c)
        let cached = Large.cachedFigures()
        #expect(cached.count == 1 && cached.bytes == whole, "the spans did not merge: \(cached)")
        #expect(Large.header(base).pointee.mappedBytes == whole)
        #expect(Large.header(base).pointee.singleMapping)
        #expect(Segment.owner(of: c) == nil, "the merged block's map entry points into the span")
        // A block as large as the first takes the merged span whole.
        let d = try #require(Allocator.allocate(UInt(20 * Self.mib)))
        defer { Allocator.deallocate(d) }
        #expect(Segment.owner(of: d) == base)
        #expect(Large.cachedFigures().count == 0)
    }

    @Test func aRefusedMremapGivesTheSpansBack() throws {
        let a = try #require(Allocator.allocate(UInt(8 * Self.mib)))
        memset(a, 0xEE, 8 * Self.mib)
        Allocator.deallocate(a)
        FaultPlan.set(.mremap, every: 1)
        let c = Allocator.allocateZeroed(count: 1, size: UInt(12 * Self.mib))
        let refused = FaultPlan.injected(.mremap)
        FaultPlan.reset()
        let block = try #require(c)
        defer { Allocator.deallocate(block) }
        #expect(refused >= 1)
        #expect(Large.cachedFigures().count == 0, "a span mremap refused stayed cached")
        #expect(Segment.owner(of: a) == nil)
        #expect(UnsafeRawBufferPointer(start: block, count: 12 * Self.mib).allSatisfy { $0 == 0 })
    }

    @Test func anAssembledBlockIsCopiedByReallocAndNeverReusedForGrowing() throws {
        let a = try #require(Allocator.allocate(UInt(8 * Self.mib)))
        Allocator.deallocate(a)
        let c = try #require(Allocator.allocate(UInt(12 * Self.mib)))
        let base = try #require(Segment.owner(of: c))
        #expect(!Large.header(base).pointee.singleMapping)
        stamp(c, bytes: 12 * Self.mib, seed: 0xD)
        // mremap cannot move two mappings as one: the block is copied, whole.
        let d = try #require(Allocator.reallocate(c, UInt(40 * Self.mib)))
        #expect(d != c)
        #expect(stamped(d, bytes: 12 * Self.mib, seed: 0xD))
        // The assembled span is cached now; a block realloc grows (a medium
        // block growing past the medium sizes) does not take it.
        #expect(Large.cachedFigures().count == 1)
        let m = try #require(Allocator.allocate(UInt(900 << 10)))
        let g = try #require(Allocator.reallocate(m, UInt(4 * Self.mib)))
        #expect(Segment.owner(of: g) != base, "a growing block took a span of several mappings")
        let dBase = try #require(Segment.owner(of: d))
        #expect(Large.header(dBase).pointee.singleMapping)
        Allocator.deallocate(g)
        Allocator.deallocate(d)
    }
}
