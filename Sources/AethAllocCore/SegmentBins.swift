// SegmentBins.swift: finding the segment that best fits a run, without a walk.
//
// SegmentManager carves pages and medium blocks best fit: the segment whose
// longest run of free committed slices (else of free slices) is the shortest
// that holds the request. Walking every segment with a free slice to find it
// cost a cache miss per segment on each medium malloc, hundreds of them in a
// heap of a few GiB. Instead each segment is filed, per kind, in the bin of
// its longest run: kind `free` by its longest run of free slices, kind
// `dirty` by its longest run of free committed ones. A word per kind has bit L set while bin L is non-empty,
// so the best segment is the head of the bin of the lowest set bit at or
// above the request: a mask, a count of trailing zeros and a load.
//
// Storage: the manager's table follows SegmentManager in the global state
// (Globals), `words` words per kind: word 0 the mask, word L (1...63) the
// head of bin L as a pointer's bits. Each segment keeps its two BinLinks in
// its own metadata, right after its header (Segment.binLinksOffset); a fresh
// mapping reads as zero, filed nowhere.
//
// Invariants (under the SegmentManager lock):
// - A segment is in bin L of a kind iff its BinLink of that kind has
//   `length` L != 0, the length of its longest run of that kind:
//   `SegmentManager.noteMasks` files it after every change of its masks.
// - Bit L of a kind's mask is set iff bin L is non-empty.
// - An unmapped segment is in no bin (SegmentManager.unmapSegment).

/// A segment's place in one bin: a doubly linked list through the segments.
struct BinLink {
    var next: UnsafeMutablePointer<SegmentHeader>?
    var prev: UnsafeMutablePointer<SegmentHeader>?
    /// The bin it is filed in (its longest run when filed); 0: none.
    var length: Int
}

enum SegmentBins {
    /// Kind 0: by longest run of free slices; kind 1: of free committed ones.
    static let kinds = 2
    static let free = 0
    static let dirty = 1
    /// Words per kind: the mask, then a head for each run length 1...63.
    @inline(__always) static var words: Int { Tuning.slicesPerSegment }
    @inline(__always) static var bytes: Int { kinds &* words &* MemoryLayout<UInt>.stride }

    @inline(__always)
    private static func table(_ kind: Int) -> UnsafeMutablePointer<UInt> {
        Globals.segmentBins + kind &* words
    }

    @inline(__always)
    private static func link(_ h: UnsafeMutablePointer<SegmentHeader>, _ kind: Int) -> UnsafeMutablePointer<BinLink> {
        let base = RawPointer(h) - Segment.headerOffset
        return (base + Segment.binLinksOffset).assumingMemoryBound(to: BinLink.self) + kind
    }

    @inline(__always)
    private static func head(_ kind: Int, _ length: Int) -> UnsafeMutablePointer<SegmentHeader>? {
        UnsafeMutablePointer(bitPattern: table(kind)[length])
    }

    /// The segment whose longest run of `kind` is the shortest holding
    /// `slices` slices, nil if none has one.
    @inline(__always)
    static func best(_ kind: Int, slices: Int) -> UnsafeMutablePointer<SegmentHeader>? {
        let fits = table(kind)[0] & (~UInt(0) << UInt(slices))
        if fits == 0 { return nil }
        return head(kind, fits.trailingZeroBitCount)
    }

    /// Moves `h` to the bin for a longest run of `length` (0: out of all).
    static func file(_ h: UnsafeMutablePointer<SegmentHeader>, _ kind: Int, length: Int) {
        let l = link(h, kind)
        if l.pointee.length == length { return }
        if l.pointee.length != 0 { remove(h, l, kind) }
        if length == 0 { return }
        let t = table(kind)
        let first = head(kind, length)
        l.pointee = BinLink(next: first, prev: nil, length: length)
        if let first { link(first, kind).pointee.prev = h }
        t[length] = UInt(bitPattern: h)
        t[0] |= UInt(1) << UInt(length)
    }

    private static func remove(_ h: UnsafeMutablePointer<SegmentHeader>, _ l: UnsafeMutablePointer<BinLink>, _ kind: Int) {
        let t = table(kind)
        let length = l.pointee.length
        if let p = l.pointee.prev {
            link(p, kind).pointee.next = l.pointee.next
        } else {
            t[length] = UInt(bitPattern: l.pointee.next)
            if l.pointee.next == nil { t[0] &= ~(UInt(1) << UInt(length)) }
        }
        if let n = l.pointee.next { link(n, kind).pointee.prev = l.pointee.prev }
        l.pointee = BinLink(next: nil, prev: nil, length: 0)
    }
}

extension SegmentBins {
    /// The length of `h`'s longest run of `kind` as filed (tests).
    static func filedLength(_ h: UnsafeMutablePointer<SegmentHeader>, _ kind: Int) -> Int {
        link(h, kind).pointee.length
    }

    /// Whether the bins hold exactly the segments on `listed` (the manager's
    /// list of segments with a free slice), each in the bin of its longest
    /// run, and the masks match the bins (tests; the segment lock held).
    static func consistent(listed: UnsafeMutablePointer<SegmentHeader>?) -> Bool {
        for kind in 0..<kinds {
            var filed = 0
            for length in 1..<words {
                var h = head(kind, length)
                if (table(kind)[0] >> UInt(length)) & 1 != (h == nil ? 0 : 1) { return false }
                var prev: UnsafeMutablePointer<SegmentHeader>? = nil
                while let s = h {
                    let l = link(s, kind)
                    let mask = kind == free ? s.pointee.freeMask : s.pointee.dirtyMask
                    if l.pointee.length != length || l.pointee.prev != prev
                        || SegmentManager.longestRun(mask) != length
                    {
                        return false
                    }
                    filed += 1
                    prev = s
                    h = l.pointee.next
                }
            }
            var expected = 0
            var s = listed
            while let h = s {
                let mask = kind == free ? h.pointee.freeMask : h.pointee.dirtyMask
                if mask != 0 { expected += 1 }
                s = h.pointee.next
            }
            if filed != expected { return false }
        }
        return true
    }
}
