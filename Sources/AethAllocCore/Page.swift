// Page.swift: pages and the per-class central lists (the slab layer).
//
// A page is a run of slices holding blocks of one class. Its blocks are in
// exactly one of three places:
//
//   [0, bumpBytes)            handed out at least once: either with a
//                             thread / the depot / the program (`used` of
//                             them), or on the page's `free` list
//   [bumpBytes, limitBytes)   never handed out (carved lazily, so a fresh
//                             page costs no page faults until used)
//
//   invariant: used + length(free) == bumpBytes / blockSize
//
// A page with a free or never-used block is on its class's `partial` list;
// a full page is on no list and is found again from a block's address when
// one of its blocks comes back. A page whose `used` drops to 0 goes back to
// its segment, unless it is the only page on the list (kept so a class that
// oscillates around one page does not map and unmap it).
//
// Everything here runs under the class's `Central.lock`; the magazine layer
// calls it with whole batches (`fill`, `drain`), so the lock is taken once
// per magazine, not once per block.

struct PageMeta {
    /// Returned blocks, linked through their first word.
    var free: RawPointer?
    /// The first block; pages start on a slice boundary (64 KiB-aligned).
    var start: RawPointer?
    /// Links in the class's `partial` list.
    var next: UnsafeMutablePointer<PageMeta>?
    var prev: UnsafeMutablePointer<PageMeta>?
    var bumpBytes: UInt32
    var limitBytes: UInt32
    /// Blocks out of the page (thread caches, depot, program).
    var used: UInt32
    var blockSize: UInt32
    var sizeClass: UInt8
    var slices: UInt8
    var listed: Bool
    /// How many blocks at the head of `free` came back since the list was
    /// last put in order (Central.fill orders them before handing any out).
    var unordered: UInt32

    var hasFree: Bool { free != nil || bumpBytes < limitBytes }
    func isValid() -> Bool {
        var n: UInt32 = 0
        var p = free
        while let b = p, n <= limitBytes / blockSize {
            n += 1
            p = RawPointer(bitPattern: b.load(as: UInt.self) ^ (Hardening.encodeLink(nil, at: b)))
        }
        return bumpBytes <= limitBytes && used + n == bumpBytes / blockSize
    }
}

/// A bit per block of a page, for `Central.order` (on its stack).
struct OrderBitmap {
    var words = InlineArray<64, UInt64>(repeating: 0)
}

/// One size class's pages.
///
/// Invariants (under its lock, `Central.lockWord(c)`): `partial` lists exactly the class's pages that
/// have a free or never-used block, each with `listed` set.
struct Central {
    var partial: UnsafeMutablePointer<PageMeta>?
    /// Blocks of the class out of their pages: with the program, in thread
    /// caches or in the depot/pool (mallinfo2, malloc_stats).
    var outBlocks: Int

    @inline(__always)
    static func lockWord(_ c: Int) -> UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.centralLock0 &+ c)
    }

    /// Moves up to `max` blocks of class `c` into `dst[0..<n]`, returns n.
    /// 0 means the OS refused memory.
    static func fill(_ c: Int, into dst: UnsafeMutablePointer<RawPointer?>, max: Int) -> Int {
        let central = Globals.central(c)
        let info = Globals.classInfo(c)
        Lock.acquire(lockWord(c))
        defer { Lock.release(lockWord(c)) }
        var n = 0
        while n < max {
            var page = central.pointee.partial
            if page == nil {
                guard let fresh = SegmentManager.allocatePage(slices: info.pointee.pageSlices, sizeClass: c) else { break }
                fresh.pointee.blockSize = UInt32(info.pointee.blockSize)
                fresh.pointee.limitBytes = UInt32(info.pointee.blockSize * info.pointee.blocksPerPage)
                link(central, fresh)
                page = fresh
            }
            let pg = page!
            if pg.pointee.unordered != 0 { order(pg) }
            var taken: UInt32 = 0
            // Returned blocks first (warm in cache), then never-used ones.
            while n < max, let b = pg.pointee.free {
                pg.pointee.free = Hardening.decodeLink(at: b, page: pg)
                Hardening.clearLink(b)
                dst[n] = b
                n &+= 1
                taken &+= 1
            }
            let size = pg.pointee.blockSize
            while n < max && pg.pointee.bumpBytes < pg.pointee.limitBytes {
                dst[n] = pg.pointee.start! + Int(pg.pointee.bumpBytes)
                pg.pointee.bumpBytes &+= size
                n &+= 1
                taken &+= 1
            }
            pg.pointee.used &+= taken
            central.pointee.outBlocks &+= Int(taken)
            if !pg.pointee.hasFree { unlink(central, pg) }
        }
        // Pops take from the top: put the lowest address there.
        var i = 0, j = n &- 1
        while i < j { let t = dst[i]; dst[i] = dst[j]; dst[j] = t; i &+= 1; j &-= 1 }
        return n
    }

    /// Returns `n` blocks of class `c` from `src` to their pages.
    static func drain(_ c: Int, from src: UnsafeMutablePointer<RawPointer?>, count n: Int) {
        let central = Globals.central(c)
        Lock.acquire(lockWord(c))
        defer { Lock.release(lockWord(c)) }
        central.pointee.outBlocks &-= n
        var i = 0
        while i < n {
            // Blocks freed one after another often share a page: the page is
            // looked up once per run of them, and its list head and count
            // are written back once.
            let first = src[i]!
            let page = Segment.page(of: first, in: Segment.base(of: first))
            let start = UInt(bitPattern: page.pointee.start)
            let span = UInt(page.pointee.limitBytes)
            var head = page.pointee.free
            var k: UInt32 = 0
            repeat {
                let b = src[i]!
                if UInt(bitPattern: b) &- start >= span { break }
                b.storeBytes(of: Hardening.encodeLink(head, at: b), as: UInt.self)
                head = b
                k &+= 1
                i &+= 1
            } while i < n
            page.pointee.free = head
            page.pointee.unordered &+= k
            page.pointee.used &-= k
            if !page.pointee.listed { link(central, page) }
            if page.pointee.used == 0 {
                if page.pointee.prev != nil || page.pointee.next != nil {
                    unlink(central, page)
                    SegmentManager.releasePage(page)
                } else {
                    // The class's only page, kept: every block is back, so
                    // it is carved again from its start, in address order.
                    page.pointee.free = nil
                    page.pointee.unordered = 0
                    page.pointee.bumpBytes = 0
                }
            }
        }
    }

    /// Puts the blocks that came back since the last call (the head of the
    /// page's free list) in ascending address order, ahead of the rest.
    /// O(returned blocks + bitmap words): a page's earlier, ordered blocks
    /// are not walked again.
    static func order(_ pg: UnsafeMutablePointer<PageMeta>) {
        let k = pg.pointee.unordered
        pg.pointee.unordered = 0
        let size = UInt(pg.pointee.blockSize)
        let blocks = Int(UInt(pg.pointee.limitBytes) / size)
        if k < 2 || blocks > Tuning.orderedPageBlocks { return }
        var bitmap = OrderBitmap()
        let start = UInt(bitPattern: pg.pointee.start)
        // offset / size as a multiply: an offset is q * size, and with
        // reciprocal * size = 2^32 + e (0 < e <= size) the product is
        // q * 2^32 + q * e, where q * e <= q * size < 1 MiB (one page).
        let reciprocal = (UInt(1) << 32) / size &+ 1
        withUnsafeMutableBytes(of: &bitmap) { raw in
            let w = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
            var lowest = blocks, highest = 0
            var p = pg.pointee.free
            var left = k
            while left > 0, let b = p {
                p = Hardening.decodeLink(at: b, page: pg)
                let i = Int(truncatingIfNeeded: ((UInt(bitPattern: b) &- start) &* reciprocal) >> 32)
                w[i >> 6] |= UInt64(1) << UInt64(i & 63)
                lowest = Swift.min(lowest, i)
                highest = Swift.max(highest, i)
                left &-= 1
            }
            // Relink from the highest address down, ending at the lowest,
            // in front of the blocks that were already in order.
            var head = p
            var word = highest >> 6
            let first = lowest >> 6
            while word >= first {
                var m = w[word]
                while m != 0 {
                    let bit = 63 &- m.leadingZeroBitCount
                    m &= ~(UInt64(1) << UInt64(bit))
                    let b = RawPointer(bitPattern: start &+ UInt((word << 6) | bit) &* size)!
                    b.storeBytes(of: Hardening.encodeLink(head, at: b), as: UInt.self)
                    head = b
                }
                if word == 0 { break }
                word &-= 1
            }
            pg.pointee.free = head
        }
    }

    /// Returns `n` blocks of class `c` linked through their first word,
    /// starting at `head`, to their pages.
    static func drainList(_ c: Int, head: RawPointer?, count n: Int) {
        var buffer: (RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?,
                     RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?) =
            (nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil)
        var next = head
        var left = n
        withUnsafeMutableBytes(of: &buffer) { raw in
            let slots = raw.baseAddress!.assumingMemoryBound(to: RawPointer?.self)
            while left > 0 {
                var k = 0
                while k < 16 && left > 0, let b = next {
                    next = b.load(as: RawPointer?.self)
                    slots[k] = b
                    k += 1
                    left -= 1
                }
                if k == 0 { break }
                drain(c, from: slots, count: k)
            }
        }
    }

    /// Blocks of class `c` out of their pages (read under the class lock).
    static func outBlocks(_ c: Int) -> Int {
        Lock.acquire(lockWord(c))
        defer { Lock.release(lockWord(c)) }
        return Globals.central(c).pointee.outBlocks
    }

    /// Releases every page of class `c` with no block out (malloc_trim).
    /// Returns the bytes released.
    static func releaseEmptyPages(_ c: Int) -> Int {
        let central = Globals.central(c)
        Lock.acquire(lockWord(c))
        defer { Lock.release(lockWord(c)) }
        var released = 0
        var page = central.pointee.partial
        while let pg = page {
            page = pg.pointee.next
            if pg.pointee.used == 0 {
                unlink(central, pg)
                released += Int(pg.pointee.slices) * Tuning.sliceBytes
                SegmentManager.releasePage(pg)
            }
        }
        return released
    }

    private static func link(_ central: UnsafeMutablePointer<Central>, _ page: UnsafeMutablePointer<PageMeta>) {
        page.pointee.prev = nil
        page.pointee.next = central.pointee.partial
        if let n = central.pointee.partial { n.pointee.prev = page }
        central.pointee.partial = page
        page.pointee.listed = true
    }

    private static func unlink(_ central: UnsafeMutablePointer<Central>, _ page: UnsafeMutablePointer<PageMeta>) {
        if let p = page.pointee.prev { p.pointee.next = page.pointee.next } else { central.pointee.partial = page.pointee.next }
        if let n = page.pointee.next { n.pointee.prev = page.pointee.prev }
        page.pointee.next = nil
        page.pointee.prev = nil
        page.pointee.listed = false
    }
}
