// Medium.swift: blocks above the largest size class (64 KiB) and up to
// `Tuning.mediumMaxBytes` (1 MiB), each a run of whole slices in a segment.
//
// A medium block is a page of one block: its slices carry the mark
// `SizeClass.markMedium` in the segment's slice-class map, its PageMeta (at
// the run's first slice) records the run length, and the block starts at the
// run's first byte, so it is 64 KiB-aligned. Freeing it gives the slices back
// to the segment, where they stay committed within the dirty budget
// (SegmentManager): the next medium block or page carved there costs no page
// faults, and neighbouring free runs coalesce in the segment's free mask.
// This is why these sizes are not own mappings: a mapping per block pays an
// mmap, a munmap and a page fault per 4 KiB every time (fragmentation bench:
// 335k faults against tcmalloc's 141k before this file existed).
//
// Invariants: `page.used == 1` while the program owns the block;
// `page.slices * sliceBytes` is its usable size; `page.limitBytes` is the
// request it serves (the medium cache's key). After the free the block is
// either kept whole by the medium cache (MediumCache.swift: `used == 0`) or
// its slices are marked free; a second free of the same pointer finds one
// or the other and aborts (Medium.page, Allocator.classify).
//
// The hardened variant keeps mapping these sizes (Large.swift), for the
// guard page after every block.
import Synchronization

enum Medium {
    /// Whether requests of `size` bytes (> maxSmallBytes) and `alignment`
    /// are served here.
    @inline(__always)
    static func serves(size: Int, alignment: Int) -> Bool {
        size <= Options.mediumMaxBytes && alignment <= Tuning.sliceBytes && Hardening.carvesMediumBlocks
    }

    @inline(__always)
    static func slices(for size: Int) -> Int {
        (size &+ Tuning.sliceBytes &- 1) &>> Tuning.sliceShift
    }

    /// A medium block of `size` bytes; with `zeroed`, its first `size` bytes
    /// read as zero. Nil when the OS refuses memory.
    static func allocate(size: Int, zeroed: Bool) -> RawPointer? {
        let n = slices(for: max(size, 1))
        guard let (page, clean) = SegmentManager.allocateMedium(size: size, slices: n) else { return nil }
        page.pointee.used = 1
        page.pointee.limitBytes = UInt32(truncatingIfNeeded: size)
        let p = page.pointee.start!
        Stats.largeAllocated(bytes: n * Tuning.sliceBytes)
        if zeroed && !clean { OS.zero(p, bytes: size) }
        return p
    }

    /// The medium block's page, or a one-line message and abort unless `p`
    /// starts a live medium block in segment `seg`.
    static func page(of p: RawPointer, in seg: RawPointer, operation: StaticString) -> UnsafeMutablePointer<PageMeta> {
        let page = Segment.page(of: p, in: seg)
        if page.pointee.start != p {
            Diagnostics.invalidPointer(p, operation: operation, reason: "not the start of a block")
        }
        // Freed and kept whole by the medium cache (a freed block given back
        // to its segment has free slices: Allocator.classify).
        if page.pointee.used != 1 { Diagnostics.invalidPointer(p, operation: operation, reason: "block already freed") }
        return page
    }

    static func deallocate(_ p: RawPointer, _ page: UnsafeMutablePointer<PageMeta>) {
        // One CAS, so two threads freeing the same block at once cannot both
        // give its slices back (the second could free a block carved there
        // in between): the loser reports the double free.
        let claimed = withUnsafeMutablePointer(to: &page.pointee.used) {
            RawPointer($0).assumingMemoryBound(to: Atomic<UInt32>.self).pointee
                .compareExchange(expected: 1, desired: 0, ordering: .acquiringAndReleasing).exchanged
        }
        if !claimed { Diagnostics.invalidPointer(p, operation: "free", reason: "block already freed") }
        Stats.largeFreed(bytes: usableSize(page))
        SegmentManager.releasePage(page)
    }

    @inline(__always)
    static func usableSize(_ page: UnsafeMutablePointer<PageMeta>) -> Int {
        Int(page.pointee.slices) &* Tuning.sliceBytes
    }

    /// Grows the block in place to hold `size` bytes (<= mediumMaxBytes) if
    /// the slices after it are free. True on success.
    static func grow(_ page: UnsafeMutablePointer<PageMeta>, to size: Int) -> Bool {
        let old = usableSize(page)
        if !SegmentManager.growRun(page, to: slices(for: size)) { return false }
        page.pointee.limitBytes = UInt32(truncatingIfNeeded: size)
        Stats.largeResized(from: old, to: usableSize(page))
        return true
    }
}
