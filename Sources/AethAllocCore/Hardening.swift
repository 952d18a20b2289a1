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
//     segment +40960 .. +73728:  liveBitmaps[slice][4096 bits] (512 bytes
//                                per slice; Segment.liveBitmapsOffset), so
//                                the metadata takes two slices
//     segment +126976 .. +131072: guard page (PROT_NONE) between the
//                                segment's metadata and its first page of
//                                blocks: the metadata slices' last OS page
//                                (4 KiB here; 16 KiB pages: +114688; 64 KiB
//                                pages: none, the page would cover the
//                                bitmap)
//
// - Pages keep their free blocks in a bitmap (Page.swift), not in links
//   through the blocks, so a write to a freed block cannot forge an address
//   for malloc to hand out. A block a page hands out must not be live: a
//   bitmap that says otherwise (an overflow from the page before wrote into
//   it) aborts ("page free bitmap corrupted") instead of handing out a
//   block twice.
// - Freed small blocks are zero-filled, so a use after free reads no stale
//   data; freed large blocks are unmapped at once (no span cache), so a use
//   after free faults.
// - Large blocks have a PROT_NONE guard page right after their last page and
//   one between their header page and their data.
// - Memory tagging (aarch64 with MTE; synchronous unless AETHALLOC_MTE says
//   async or 0, README "ARM machines"): segments are mapped with PROT_MTE;
//   a small block leaves with a random tag in pointer bits 56..59 that its
//   granules carry too, never 0 (free blocks and metadata), never its left
//   or right neighbour's tag and never the tag it had when it was last
//   freed. On free it is checked (pointer tag ==
//   memory tag, after the bitmap check), zeroed and retagged 0, and its tag
//   is kept in its second word for the next hand-out to avoid. So a load
//   or store through a freed pointer, even once the block is out again, and
//   a linear overflow into the next block fault (SIGSEGV, SEGV_MTESERR); a
//   stale pointer passed to free/realloc/malloc_usable_size after the block
//   was handed out again aborts with one line. A large block up to 1 MiB
//   gets one tag over its usable bytes (`tagLarge`), checked the same way
//   by free/realloc/malloc_usable_size. Pointers are untagged (`stripTag`)
//   before any address arithmetic.
import Synchronization

enum Hardening {
    /// The segment guard is the metadata slices' last OS page...
    @inline(__always) static var segmentGuardOffset: Int { Segment.metadataBytes - OS.pageBytes }
    /// ...where that page lies wholly after the metadata: with 4 and 16 KiB
    /// pages, not with 64 KiB pages (one page is the whole slice), where
    /// segments have no guard and the first block page borders the bitmap.
    static var segmentHasGuard: Bool { segmentGuardOffset >= Segment.metadataEndBytes }

    // ---- the live-block bitmap ----------------------------------------------

    @inline(__always)
    private static func bitWord(_ p: RawPointer) -> (UnsafeMutablePointer<Atomic<UInt64>>, UInt64) {
        let a = UInt(bitPattern: p)
        let seg = a & ~UInt(Tuning.segmentBytes - 1)
        // Wrapping arithmetic: a block's address is inside its segment, so
        // none of this can overflow, and the checked forms left traps on
        // the fast paths.
        let granule = (a &- seg) / UInt(SizeClass.minBlockBytes)  // 0 ..< 4 MiB / 16
        let word = RawPointer(bitPattern: seg &+ UInt(Segment.liveBitmapsOffset) &+ (granule &>> 6) &* 8).unsafelyUnwrapped
        return (word.assumingMemoryBound(to: Atomic<UInt64>.self), UInt64(1) << UInt64(granule & 63))
    }

    /// A small block of class `c` leaves the allocator for the program; the
    /// pointer the program gets (tagged when tagging is on).
    @inline(__always)
    static func handOut(_ p: RawPointer, sizeClass c: Int) -> RawPointer {
        if !Variant.hardened { return p }
        let (word, bit) = bitWord(p)
        word.pointee.bitwiseOr(bit, ordering: .relaxed)
        if tagging { return tag(p, sizeClass: c) }
        return p
    }

    /// A small block comes back from the program (free, realloc) through
    /// `pointer` (tagged or not). Aborts unless it is live (and, tagging,
    /// unless the pointer's tag is the block's); afterwards it is not.
    @inline(__always)
    static func takeBack(_ pointer: RawPointer, sizeClass c: Int, operation: StaticString) {
        if !Variant.hardened { return }
        let p = stripTag(pointer)
        let (word, bit) = bitWord(p)
        let old = word.pointee.bitwiseAnd(~bit, ordering: .relaxed).oldValue
        if old & bit == 0 {
            Diagnostics.invalidPointer(pointer, operation: operation, reason: "not a live block: double free or interior pointer")
        }
        if tagging { return retire(pointer, sizeClass: c, operation: operation) }
        OS.zero(p, bytes: Globals.classInfo(c).pointee.blockSize)
    }

    /// A block a page is handing out from its free bitmap: aborts if the
    /// program holds it (the bitmap was written to).
    @inline(__always)
    static func checkNotLive(_ p: RawPointer) {
        if !Variant.hardened { return }
        let (word, bit) = bitWord(p)
        if word.pointee.load(ordering: .relaxed) & bit != 0 {
            Diagnostics.invalidPointer(p, operation: "malloc", reason: "page free bitmap corrupted: a live block is marked free")
        }
    }

    /// Checks, without changing it, that a small block is live (and,
    /// tagging, that `pointer` carries its tag).
    @inline(__always)
    static func checkLive(_ pointer: RawPointer, operation: StaticString) {
        if !Variant.hardened { return }
        let p = stripTag(pointer)
        let (word, bit) = bitWord(p)
        if word.pointee.load(ordering: .relaxed) & bit == 0 {
            Diagnostics.invalidPointer(pointer, operation: operation, reason: "not a live block: freed or interior pointer")
        }
        if tagging { checkTag(pointer, operation: operation) }
    }

    // ---- memory tagging (aarch64 MTE) ------------------------------------------

    /// Whether small blocks are tagged: the hardened variant, built for
    /// aarch64, with tagging turned on at initialisation.
    @inline(__always) static var tagging: Bool { Variant.hardened && OS.memoryTaggingActive }

    /// Whether every small block leaves zeroed (tagging stores tags with
    /// stzg, which zeroes): calloc need not zero it again.
    @inline(__always) static var handsOutZeroed: Bool { tagging }

    /// The tag `p` carries in bits 56..59 (0 for an untagged pointer).
    @inline(__always)
    static func pointerTag(_ p: RawPointer) -> UInt { UInt(bitPattern: p) >> UInt(OS.tagShift) & 15 }

    /// `p` without its tag bits. The identity where no pointer is ever tagged.
    @inline(__always)
    static func stripTag(_ p: RawPointer) -> RawPointer {
        RawPointer(bitPattern: stripTag(UInt(bitPattern: p))).unsafelyUnwrapped
    }

    /// The same for an address (0 stays 0).
    @inline(__always)
    static func stripTag(_ a: UInt) -> UInt {
        if !Variant.hardened || !OS.canTagMemory { return a }
        return a & ~(UInt(15) << UInt(OS.tagShift))
    }

    /// At initialisation (Runtime): turns tag checks on where the CPU has
    /// MTE, synchronous unless AETHALLOC_MTE says async or 0. Without MTE the
    /// software checks above remain.
    static func startTagging() {
        if !Variant.hardened || !OS.canTagMemory { return }
        let mode = Options.memoryTaggingMode()
        if mode == 0 { return }
        _ = OS.enableMemoryTagging(asynchronous: mode == 2)
    }

    /// Tags a block that leaves: a random tag that is not 0, not its
    /// neighbours' (the granules just before and after it, when they are in
    /// this segment's block slices) and not the one it had when last freed.
    @inline(never)
    static func tag(_ p: RawPointer, sizeClass c: Int) -> RawPointer {
        let size = Globals.classInfo(c).pointee.blockSize
        let offset = UInt(bitPattern: p) & UInt(Tuning.segmentBytes - 1)
        var exclude: UInt64 = 1
        exclude |= 1 << ((p + 8).load(as: UInt64.self) & 15)
        if offset > UInt(Segment.metadataBytes) { exclude |= 1 << UInt64(OS.memoryTag(of: p - 16)) }
        if offset + UInt(size) < UInt(Tuning.segmentBytes) { exclude |= 1 << UInt64(OS.memoryTag(of: p + size)) }
        return OS.tagAndZero(p, bytes: size, excluding: exclude)
    }

    /// Large blocks of at most this many usable bytes are tagged: the sizes
    /// the other variants serve as medium blocks. Tagging stores a tag in
    /// every granule, which commits every page at malloc; a larger block
    /// keeps its guard pages and its unmapping at free (tag 0).
    static var largestTaggedLargeBytes: Int { Tuning.mediumMaxBytes }

    /// A new large block of `usable` bytes at `user` (page-aligned, between
    /// its guard pages) in the mapping at `base`: with tagging on and a block
    /// no larger than `largestTaggedLargeBytes`, its pages get PROT_MTE and
    /// one random tag that is not 0 and, when `base` is where the last tagged
    /// large block was freed, not that block's tag (so a stale pointer to it
    /// faults). The pointer to hand out; nil if the OS refused PROT_MTE (the
    /// caller unmaps: no block without the checks the variant promises).
    static func tagLarge(_ user: RawPointer, usable: Int, base: RawPointer) -> RawPointer? {
        if !tagging || usable > largestTaggedLargeBytes { return user }
        if !OS.allowTags(user, bytes: usable) { return nil }
        let last = Globals.lastFreedLargeTag.pointee.load(ordering: .relaxed)
        var exclude: UInt64 = 1
        if last & ~UInt(15) == UInt(bitPattern: base) { exclude |= 1 << UInt64(last & 15) }
        return OS.tagAndZero(user, bytes: usable, excluding: exclude)
    }

    /// A large block at `base` is freed through `pointer`, whose tag was
    /// checked (Large.validate): remembered for tagLarge.
    static func largeFreed(_ pointer: RawPointer, base: RawPointer) {
        if !tagging { return }
        let tag = pointerTag(pointer)
        if tag != 0 { Globals.lastFreedLargeTag.pointee.store(UInt(bitPattern: base) | tag, ordering: .relaxed) }
    }

    /// A live block comes back through `pointer`: its tag must be the
    /// block's; then the block is zeroed and retagged 0, and keeps its old
    /// tag in its second word (nothing else is stored in a free block).
    @inline(never)
    static func retire(_ pointer: RawPointer, sizeClass c: Int, operation: StaticString) {
        checkTag(pointer, operation: operation)
        let p = stripTag(pointer)
        OS.untagAndZero(p, bytes: Globals.classInfo(c).pointee.blockSize)
        (p + 8).storeBytes(of: UInt64(pointerTag(pointer)), as: UInt64.self)
    }

    @inline(never)
    static func checkTag(_ pointer: RawPointer, operation: StaticString) {
        let p = stripTag(pointer)
        if OS.memoryTag(of: p) != pointerTag(pointer) {
            Diagnostics.invalidPointer(
                pointer, operation: operation, reason: "memory tag mismatch: a stale pointer to a block freed and handed out again")
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
        if !Variant.hardened { return true }
        if tagging && !OS.allowTags(base, bytes: Tuning.segmentBytes) { return false }
        if !segmentHasGuard { return true }
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
}
