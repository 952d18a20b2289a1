// Segment.swift: segments, the segment map, and the slice allocator.
//
// A segment is 4 MiB of address space aligned to 4 MiB. Slice 0 holds the
// metadata; slices 1...63 (64 KiB each) are handed out as pages, a page
// being a run of 1...16 slices serving one size class.
//
//   +0      sliceClass[64]  UInt8   class of the page owning the slice, or
//                                   SizeClass.markFree / markHeader / markLarge
//   +64     sliceHead[64]   UInt8   first slice of the page owning the slice
//   +128    SegmentHeader
//   +512    PageMeta[64]    64 bytes each; a page uses its first slice's entry
//   +64 KiB slice 1 ...
//
// A large allocation (Large.swift) uses the same first 128 bytes with every
// sliceClass set to markLarge, so `free` tells the two apart from one byte.
//
// Finding a block's metadata is address arithmetic only, never a guess from
// bytes near the block:
//   segment = p & ~(4 MiB - 1), checked against the segment map
//   slice   = (p >> 16) & 63,  class = sliceClass[slice]
//
// The segment map has a byte per 4 MiB chunk of the address space (in the C
// shim's BSS). It is written under the SegmentManager or LargeCache lock when
// a mapping is created or destroyed, and read without a lock by `free`: a
// pointer the program legitimately frees was handed out after its map byte
// was set, so the read is ordered by whatever handed the pointer over.
import CAethAlloc
import Synchronization

struct SegmentHeader {
    static let kindSmall: UInt32 = 0x4145_5331  // "AES1"
    static let kindLarge: UInt32 = 0x4145_4C31  // "AEL1"
    var kind: UInt32
    /// Bit i set: slice i is free. Bit 0 (the header slice) is never set.
    var freeMask: UInt64
    /// Bit i set: slice i is free and may still hold committed memory.
    var dirtyMask: UInt64
    /// Links in `SegmentManager.withFree` (segments that have a free slice).
    var next: UnsafeMutablePointer<SegmentHeader>?
    var prev: UnsafeMutablePointer<SegmentHeader>?
    var listed: Bool
}

enum Segment {
    static let sliceClassOffset = 0
    static let sliceHeadOffset = 64
    static let headerOffset = 128
    static let pagesOffset = 512
    static let pageStride = 64
    /// Every slice but slice 0.
    static let allSlicesFree: UInt64 = ~UInt64(1)

    // ---- the segment map -------------------------------------------------

    /// Marks the 4 MiB chunk holding `p` as ours, with its header `back`
    /// chunks below (0: in the chunk itself).
    static func mapSet(_ p: RawPointer, headerChunksBack back: Int) {
        Globals.segmentMap[Int(UInt(bitPattern: p) >> UInt(Tuning.segmentShift))] = UInt8(back + 1)
    }
    static func mapClear(_ p: RawPointer) {
        Globals.segmentMap[Int(UInt(bitPattern: p) >> UInt(Tuning.segmentShift))] = 0
    }

    /// The header base (segment or large mapping) for a pointer that is ours,
    /// nil for any address AethAlloc did not map.
    @inline(__always)
    static func owner(of p: RawPointer) -> RawPointer? {
        let a = UInt(bitPattern: p)
        let chunk = a >> UInt(Tuning.segmentShift)
        if chunk >= UInt(AETH_SEGMENT_MAP_ENTRIES) { return nil }
        let v = UInt(Globals.segmentMap[Int(bitPattern: chunk)])
        if v == 0 { return nil }
        return RawPointer(bitPattern: (chunk &- (v &- 1)) << UInt(Tuning.segmentShift))
    }

    // ---- layout accessors --------------------------------------------------

    @inline(__always) static func base(of p: RawPointer) -> RawPointer {
        RawPointer(bitPattern: UInt(bitPattern: p) & ~UInt(Tuning.segmentBytes - 1))!
    }
    @inline(__always) static func sliceIndex(of p: RawPointer) -> Int {
        Int(bitPattern: (UInt(bitPattern: p) >> UInt(Tuning.sliceShift)) & UInt(Tuning.slicesPerSegment - 1))
    }
    @inline(__always) static func sliceClass(_ seg: RawPointer, _ slice: Int) -> UInt8 {
        seg.load(fromByteOffset: sliceClassOffset &+ slice, as: UInt8.self)
    }
    /// The header's `kind`, read on its own: it is written once when the
    /// mapping is made, while other fields change under the segment lock.
    @inline(__always) static func kind(_ base: RawPointer) -> UInt32 {
        base.load(fromByteOffset: headerOffset, as: UInt32.self)
    }
    @inline(__always) static func header(_ seg: RawPointer) -> UnsafeMutablePointer<SegmentHeader> {
        (seg + headerOffset).assumingMemoryBound(to: SegmentHeader.self)
    }
    @inline(__always) static func pageMeta(_ seg: RawPointer, headSlice: Int) -> UnsafeMutablePointer<PageMeta> {
        (seg + (pagesOffset &+ headSlice &* pageStride)).assumingMemoryBound(to: PageMeta.self)
    }
    /// The page owning block `p`, which lies in small segment `seg`.
    @inline(__always) static func page(of p: RawPointer, in seg: RawPointer) -> UnsafeMutablePointer<PageMeta> {
        let head = Int(seg.load(fromByteOffset: sliceHeadOffset &+ sliceIndex(of: p), as: UInt8.self))
        return pageMeta(seg, headSlice: head)
    }
}

/// Hands out runs of slices from segments, maps and unmaps segments.
///
/// Invariants (under `lock`):
/// - `withFree` lists exactly the small segments with `freeMask != 0`.
/// - `emptySegments` counts listed segments whose `freeMask == allSlicesFree`;
///   at most `Tuning.cachedEmptySegments` of them stay mapped.
/// - A free slice has sliceClass `markFree`; a used one, its page's class.
struct SegmentManager: ~Copyable {
    var withFree: UnsafeMutablePointer<SegmentHeader>?
    var emptySegments: Int
    var lastPurgeMs: UInt64

    static var shared: UnsafeMutablePointer<SegmentManager> { Globals.segments }
    static var lockWord: UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.segmentLock)
    }

    /// A page of `slices` slices for class `sizeClass`, its metadata reset.
    /// Nil when the OS refuses memory.
    static func allocatePage(slices: Int, sizeClass: Int) -> UnsafeMutablePointer<PageMeta>? {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        maybePurge(m)
        var run: UInt64 = (slices >= 64) ? 0 : (UInt64(1) << UInt64(slices)) - 1
        var seg = m.pointee.withFree
        var slice = -1
        while let s = seg {
            let free = s.pointee.freeMask
            // Bit i of `starts` is set when slices i..<i+slices are all free.
            var starts = free
            var k = 1
            while k < slices && starts != 0 { starts &= free >> UInt64(k); k += 1 }
            if starts != 0 { slice = starts.trailingZeroBitCount; break }
            seg = s.pointee.next
        }
        if slice < 0 {
            guard let fresh = newSegment(m) else { return nil }
            seg = fresh
            slice = 1
        }
        let h = seg!
        let base = RawPointer(h) - Segment.headerOffset
        if h.pointee.freeMask == Segment.allSlicesFree { m.pointee.emptySegments -= 1 }
        run <<= UInt64(slice)
        h.pointee.freeMask &= ~run
        h.pointee.dirtyMask &= ~run
        if h.pointee.freeMask == 0 { unlink(m, h) }
        for i in slice..<(slice + slices) {
            base.storeBytes(of: UInt8(truncatingIfNeeded: sizeClass), toByteOffset: Segment.sliceClassOffset + i, as: UInt8.self)
            base.storeBytes(of: UInt8(truncatingIfNeeded: slice), toByteOffset: Segment.sliceHeadOffset + i, as: UInt8.self)
        }
        let page = Segment.pageMeta(base, headSlice: slice)
        page.pointee = PageMeta(
            free: nil, start: base + slice * Tuning.sliceBytes, next: nil, prev: nil,
            bumpBytes: 0, limitBytes: 0, used: 0, blockSize: 0,
            sizeClass: UInt8(truncatingIfNeeded: sizeClass), slices: UInt8(truncatingIfNeeded: slices), listed: false)
        return page
    }

    /// Gives a page's slices back to its segment. The memory stays committed
    /// until the next purge; a segment left wholly free is unmapped unless it
    /// is the one kept for reuse.
    static func releasePage(_ page: UnsafeMutablePointer<PageMeta>) {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        let start = page.pointee.start!
        let base = Segment.base(of: start)
        let h = Segment.header(base)
        let slice = Segment.sliceIndex(of: start)
        let slices = Int(page.pointee.slices)
        for i in slice..<(slice + slices) {
            base.storeBytes(of: SizeClass.markFree, toByteOffset: Segment.sliceClassOffset + i, as: UInt8.self)
        }
        let run: UInt64 = ((slices >= 64) ? ~0 : (UInt64(1) << UInt64(slices)) - 1) << UInt64(slice)
        h.pointee.freeMask |= run
        h.pointee.dirtyMask |= run
        if Options.purgeDelayMs == 0 { purgeSegment(h) }
        if !h.pointee.listed { link(m, h) }
        if h.pointee.freeMask == Segment.allSlicesFree {
            // A wholly free segment beyond the one kept warm goes back to the
            // OS now: unmapped, or purged where the variant keeps segments mapped.
            if m.pointee.emptySegments >= Tuning.cachedEmptySegments && Variant.unmapsEmptySegments {
                unlink(m, h)
                Segment.mapClear(base)
                Stats.segmentUnmapped(bytes: Tuning.segmentBytes)
                OS.unmap(base, bytes: Tuning.segmentBytes)
                maybePurge(m)
                return
            }
            if m.pointee.emptySegments >= Tuning.cachedEmptySegments { purgeSegment(h) }
            m.pointee.emptySegments += 1
        }
        maybePurge(m)
    }

    /// Returns every free-but-committed slice to the OS. Returns the bytes purged.
    @discardableResult
    static func purgeAll() -> Int {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        return purge(shared)
    }

    /// Unmaps the wholly free segments kept for reuse (malloc_trim).
    /// Returns the bytes released.
    @discardableResult
    static func releaseEmptySegments() -> Int {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        var released = 0
        var seg = m.pointee.withFree
        while let h = seg {
            seg = h.pointee.next
            if h.pointee.freeMask == Segment.allSlicesFree && Variant.unmapsEmptySegments {
                let base = RawPointer(h) - Segment.headerOffset
                unlink(m, h)
                m.pointee.emptySegments -= 1
                Segment.mapClear(base)
                Stats.segmentUnmapped(bytes: Tuning.segmentBytes)
                OS.unmap(base, bytes: Tuning.segmentBytes)
                released += Tuning.segmentBytes
            }
        }
        return released
    }

    // ---- internals (lock held) ---------------------------------------------

    private static func maybePurge(_ m: UnsafeMutablePointer<SegmentManager>) {
        let delay = Options.purgeDelayMs
        if delay <= 0 { return }  // at once (done by the caller), or only on malloc_trim
        let now = OS.nowMs()
        if now &- m.pointee.lastPurgeMs >= UInt64(delay) {
            m.pointee.lastPurgeMs = now
            _ = purge(m)
        }
    }

    private static func purge(_ m: UnsafeMutablePointer<SegmentManager>) -> Int {
        var purged = 0
        var seg = m.pointee.withFree
        while let h = seg {
            purged += purgeSegment(h)
            seg = h.pointee.next
        }
        return purged
    }

    /// Purges one segment's dirty free slices, in runs. Returns the bytes.
    @discardableResult
    private static func purgeSegment(_ h: UnsafeMutablePointer<SegmentHeader>) -> Int {
        var purged = 0
        var dirty = h.pointee.dirtyMask
        let base = RawPointer(h) - Segment.headerOffset
        while dirty != 0 {
            let first = dirty.trailingZeroBitCount
            let len = (~(dirty >> UInt64(first))).trailingZeroBitCount
            OS.purge(base + first * Tuning.sliceBytes, bytes: len * Tuning.sliceBytes)
            purged += len * Tuning.sliceBytes
            dirty &= ~(((len >= 64) ? ~0 : (UInt64(1) << UInt64(len)) - 1) << UInt64(first))
        }
        h.pointee.dirtyMask = 0
        if purged > 0 { Stats.purged(bytes: purged) }
        return purged
    }

    private static func newSegment(_ m: UnsafeMutablePointer<SegmentManager>) -> UnsafeMutablePointer<SegmentHeader>? {
        guard let base = OS.mapAligned(bytes: Tuning.segmentBytes, alignment: Tuning.segmentBytes) else { return nil }
        Stats.segmentMapped(bytes: Tuning.segmentBytes)
        base.storeBytes(of: SizeClass.markHeader, toByteOffset: Segment.sliceClassOffset, as: UInt8.self)
        for i in 1..<Tuning.slicesPerSegment {
            base.storeBytes(of: SizeClass.markFree, toByteOffset: Segment.sliceClassOffset + i, as: UInt8.self)
        }
        let h = Segment.header(base)
        h.pointee = SegmentHeader(
            kind: SegmentHeader.kindSmall, freeMask: Segment.allSlicesFree, dirtyMask: 0,
            next: nil, prev: nil, listed: false)
        link(m, h)
        m.pointee.emptySegments += 1
        Hardening.protectSegment(base)
        Segment.mapSet(base, headerChunksBack: 0)
        return h
    }

    private static func link(_ m: UnsafeMutablePointer<SegmentManager>, _ h: UnsafeMutablePointer<SegmentHeader>) {
        h.pointee.prev = nil
        h.pointee.next = m.pointee.withFree
        if let n = m.pointee.withFree { n.pointee.prev = h }
        m.pointee.withFree = h
        h.pointee.listed = true
    }

    private static func unlink(_ m: UnsafeMutablePointer<SegmentManager>, _ h: UnsafeMutablePointer<SegmentHeader>) {
        if let p = h.pointee.prev { p.pointee.next = h.pointee.next } else { m.pointee.withFree = h.pointee.next }
        if let n = h.pointee.next { n.pointee.prev = h.pointee.prev }
        h.pointee.next = nil
        h.pointee.prev = nil
        h.pointee.listed = false
    }
}
