// Hardening.swift: the hardened variant's checks (libaethalloc-hardened.so).
//
// Every hook here starts with `if !Variant.hardened { ... }` and compiles to
// nothing (or to the plain behaviour) in the other variants. What the
// hardened variant adds:
//
// - Live-block bitmap: one bit per 16-byte granule of every slice, set while
//   a block starting there is with the program. free/realloc/
//   malloc_usable_size of a pointer whose bit is clear (a double free, an
//   interior pointer, a block still in a cache) abort with one line. Bits
//   are updated with atomic OR/AND: two threads may free neighbours that
//   share a bitmap word.
//
//     segment +8192 .. +40960: bitmap[slice][4096 bits]  (512 bytes per slice)
//     segment +61440 .. +65536: guard page (PROT_NONE) between the segment's
//                               metadata and its first page of blocks: the
//                               metadata slice's last OS page (4 KiB here;
//                               16 KiB pages: +49152; 64 KiB pages: none,
//                               the page would cover the bitmap)
//
// - Page free lists (blocks threaded through their first word) store
//   next ^ secret ^ (address of the link >> 12), with a per-process secret
//   from the kernel's AT_RANDOM bytes; a decoded link that leaves its page
//   aborts ("free list corrupted") instead of handing out a forged address.
// - Freed small blocks are zero-filled, so a use after free reads no stale
//   data; freed large blocks are unmapped at once (no span cache), so a use
//   after free faults.
// - Large blocks have a PROT_NONE guard page right after their last page and
//   one between their header page and their data.
import Synchronization

enum Hardening {
    static let bitmapOffset = 8192
    static let bitmapBytesPerSlice = Tuning.sliceBytes / 16 / 8  // 512
    /// Where the metadata slice's used bytes end: the bitmaps of every slice.
    @inline(__always) static var metadataEndBytes: Int { bitmapOffset + Tuning.slicesPerSegment * bitmapBytesPerSlice }
    /// The segment guard is the metadata slice's last OS page...
    @inline(__always) static var segmentGuardOffset: Int { Tuning.sliceBytes - OS.pageBytes }
    /// ...where that page lies wholly after the metadata: with 4 and 16 KiB
    /// pages, not with 64 KiB pages (one page is the whole slice), where
    /// segments have no guard and the first block page borders the bitmap.
    static var segmentHasGuard: Bool { segmentGuardOffset >= metadataEndBytes }

    // ---- the live-block bitmap ----------------------------------------------

    @inline(__always)
    private static func bitWord(_ p: RawPointer) -> (UnsafeMutablePointer<Atomic<UInt64>>, UInt64) {
        let a = UInt(bitPattern: p)
        let seg = a & ~UInt(Tuning.segmentBytes - 1)
        let granule = (a - seg) >> 4  // 0 ..< 4 MiB / 16
        let word = RawPointer(bitPattern: seg + UInt(bitmapOffset) + (granule >> 6) * 8)!
        return (word.assumingMemoryBound(to: Atomic<UInt64>.self), UInt64(1) << UInt64(granule & 63))
    }

    /// A small block leaves the allocator for the program.
    @inline(__always)
    static func handOut(_ p: RawPointer) {
        if !Variant.hardened { return }
        let (word, bit) = bitWord(p)
        word.pointee.bitwiseOr(bit, ordering: .relaxed)
    }

    /// A small block comes back from the program (free, realloc). Aborts
    /// unless it is live; afterwards it is not.
    @inline(__always)
    static func takeBack(_ p: RawPointer, sizeClass c: Int, operation: StaticString) {
        if !Variant.hardened { return }
        let (word, bit) = bitWord(p)
        let old = word.pointee.bitwiseAnd(~bit, ordering: .relaxed).oldValue
        if old & bit == 0 {
            Diagnostics.invalidPointer(p, operation: operation, reason: "not a live block: double free or interior pointer")
        }
        OS.zero(p, bytes: Globals.classInfo(c).pointee.blockSize)
    }

    /// Checks, without changing it, that a small block is live.
    @inline(__always)
    static func checkLive(_ p: RawPointer, operation: StaticString) {
        if !Variant.hardened { return }
        let (word, bit) = bitWord(p)
        if word.pointee.load(ordering: .relaxed) & bit == 0 {
            Diagnostics.invalidPointer(p, operation: operation, reason: "not a live block: freed or interior pointer")
        }
    }

    // ---- guard pages --------------------------------------------------------

    // A guard the OS refuses (mprotect fails with ENOMEM once the process
    // is at vm.max_map_count: each guard splits a mapping) is never skipped:
    // the allocation that needed it fails with NULL + ENOMEM instead, so a
    // hardened block always has its guards (README, "The hardened variant").

    /// A new segment: the last page of its metadata slice becomes a guard.
    /// False if the OS refused (the caller gives the segment back).
    static func protectSegment(_ base: RawPointer) -> Bool {
        if !Variant.hardened || !segmentHasGuard { return true }
        return OS.protectNone(base + segmentGuardOffset, bytes: OS.pageBytes)
    }

    /// Extra bytes a large mapping needs for its trailing guard page.
    @inline(__always) static var largeTrailingGuardBytes: Int { Variant.hardened ? OS.pageBytes : 0 }

    /// Where a large block's data starts for `alignment`.
    @inline(__always)
    static func largeUserOffset(alignment: Int) -> Int {
        if !Variant.hardened { return max(Tuning.largeHeaderBytes, alignment) }
        // Header page, guard page, then data.
        return max(2 * OS.pageBytes, alignment)
    }

    /// Protects the guard pages of a large mapping of `mapped` bytes (the
    /// last page) with data at `userOffset` (the page before the data).
    /// False if the OS refused either (the caller unmaps the span).
    static func protectLarge(_ base: RawPointer, mapped: Int, userOffset: Int) -> Bool {
        if !Variant.hardened { return true }
        return OS.protectNone(base + (userOffset - OS.pageBytes), bytes: OS.pageBytes)
            && OS.protectNone(base + (mapped - OS.pageBytes), bytes: OS.pageBytes)
    }

    /// The page at `base + mapped - page` becomes a large block's trailing
    /// guard (after a shrink). False if the OS refused.
    static func protectTrailingGuard(_ base: RawPointer, mapped: Int) -> Bool {
        if !Variant.hardened { return true }
        return OS.protectNone(base + (mapped - OS.pageBytes), bytes: OS.pageBytes)
    }

    /// Whether blocks above 64 KiB may be carved from segments (Medium.swift)
    /// with no guard page between them: not when hardened.
    @inline(__always) static var carvesMediumBlocks: Bool { !Variant.hardened }
    /// Whether freed large spans may be cached (not when hardened).
    @inline(__always) static var cachesLargeSpans: Bool { !Variant.hardened }
    /// Whether large blocks may grow or move with mremap: not when hardened,
    /// since the guard pages split the mapping into several VMAs and mremap
    /// works on one. Growth then copies, with headroom (Allocator.reallocate).
    @inline(__always) static var remapsLargeBlocks: Bool { !Variant.hardened }

    // ---- free-list links ------------------------------------------------------

    /// The value stored in a free block's link word at `slot`.
    @inline(__always)
    static func encodeLink(_ next: RawPointer?, at slot: RawPointer) -> UInt {
        let raw = UInt(bitPattern: next)
        if !Variant.hardened { return raw }
        return raw ^ secret ^ (UInt(bitPattern: slot) >> 12)
    }

    /// The link stored at `slot`, decoded. Aborts unless it is a block of
    /// `page`: on a block boundary of its class and below the bump limit
    /// (only blocks handed out before can be on a free list).
    @inline(__always)
    static func decodeLink(at slot: RawPointer, page: UnsafeMutablePointer<PageMeta>) -> RawPointer? {
        let stored = slot.load(as: UInt.self)
        if !Variant.hardened { return RawPointer(bitPattern: stored) }
        let raw = stored ^ secret ^ (UInt(bitPattern: slot) >> 12)
        if raw == 0 { return nil }
        let start = UInt(bitPattern: page.pointee.start)
        if raw < start || raw - start >= UInt(page.pointee.bumpBytes) || (raw - start) % UInt(page.pointee.blockSize) != 0 {
            Diagnostics.invalidPointer(slot, operation: "malloc", reason: "free list corrupted: a freed block was written to")
        }
        return RawPointer(bitPattern: raw)
    }

    /// A block leaving a page's free list: its link word is cleared, so the
    /// program never reads an encoded link (the list's last link would
    /// otherwise give away `secret ^ (address >> 12)`).
    @inline(__always)
    static func clearLink(_ block: RawPointer) {
        if !Variant.hardened { return }
        block.storeBytes(of: 0, as: UInt.self)
    }

    @inline(__always) static var secret: UInt { Globals.process.pointee.secret }

    /// Reads the per-process secret (initialisation).
    static func loadSecret() {
        if !Variant.hardened { return }
        Globals.process.pointee.secret = UInt(truncatingIfNeeded: OS.randomWord()) | 1
    }
}
