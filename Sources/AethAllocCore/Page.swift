// Page.swift: pages and the per-class central lists (the slab layer).
//
// A page is a run of slices holding blocks of one class. Its blocks are in
// exactly one of three places:
//
//   [0, bumpBytes)            handed out at least once: either with a
//                             thread / the depot / the program (`used` of
//                             them), or free in the page: marked in its
//                             free bitmap (`freeBlocks` of them)
//   [bumpBytes, limitBytes)   never handed out (carved lazily, so a fresh
//                             page costs no page faults until used)
//
//   invariant: used + freeBlocks == bumpBytes / blockSize, and freeBlocks is
//              the number of bits set in the free bitmap
//
// The free bitmap has a bit per block (bit i: the block at start + i *
// blockSize; `start` is the page's first byte plus its colour offset,
// SizeClass.firstBlockOffset). A page of at most 64
// blocks keeps it in its PageMeta (`inlineBits`); a larger page in its
// segment's free-bitmap rows, in its first slice's lines (Segment.swift:
// 8 lines, a bit for every block of the smallest class in a slice; only
// pages of one slice have more than 64 blocks, SizeClassTests). Word w is
// `Segment.bitmapWord(bits, w)`. A bitmap instead of a list through the blocks'
// first words: returning and handing out blocks touch the bitmap and the
// PageMeta, never the blocks' memory, and blocks leave in address order
// (the lowest first), so a program that frees and rebuilds its structures
// gets them laid out as the first time (BENCHMARK.md, "address-ordered
// reuse").
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
    /// The free bitmap of a page of at most 64 blocks. First field:
    /// `Central.bitmap` takes the PageMeta's address as its address.
    var inlineBits: UInt64
    /// The first block: the page's first byte (64 KiB-aligned) plus its
    /// colour offset (SizeClass.firstBlockOffset).
    var start: RawPointer?
    /// Links in the class's `partial` list.
    var next: UnsafeMutablePointer<PageMeta>?
    var prev: UnsafeMutablePointer<PageMeta>?
    var bumpBytes: UInt32
    var limitBytes: UInt32
    /// Blocks out of the page (thread caches, depot, program).
    var used: UInt32
    var blockSize: UInt32
    /// Bits set in the free bitmap.
    var freeBlocks: UInt32
    /// No bitmap word below this one has a bit set (while freeBlocks > 0).
    var firstFreeWord: UInt16
    var sizeClass: UInt8
    var slices: UInt8
    var listed: Bool

    /// Pages of up to this many blocks keep their free bitmap inline.
    static let inlineBitmapBlocks = UInt64.bitWidth

    var hasFree: Bool { freeBlocks != 0 || bumpBytes < limitBytes }

    /// The bitmap words (64 bits each) that cover `blocks` blocks.
    @inline(__always)
    static func bitmapWords(blocks: Int) -> Int { (blocks &+ UInt64.bitWidth &- 1) / UInt64.bitWidth }
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

    /// The page's free bitmap (see the top of this file), once the page has
    /// its class (`limitBytes` and `blockSize` set).
    @inline(__always)
    static func bitmap(_ pg: UnsafeMutablePointer<PageMeta>) -> UnsafeMutablePointer<UInt64> {
        // The page's PageMeta is its first slice's entry (Segment.pageMeta).
        let meta = UInt(bitPattern: pg)
        let seg = meta & ~UInt(Tuning.segmentBytes &- 1)
        let head = Int(bitPattern: (meta &- seg &- UInt(Segment.pagesOffset)) / UInt(Segment.pageStride))
        return bitmap(pg, in: RawPointer(bitPattern: seg).unsafelyUnwrapped, headSlice: head)
    }

    /// The same, for a page whose segment and first slice the caller has.
    @inline(__always)
    static func bitmap(
        _ pg: UnsafeMutablePointer<PageMeta>, in seg: RawPointer, headSlice head: Int
    ) -> UnsafeMutablePointer<UInt64> {
        if pg.pointee.limitBytes <= UInt32(truncatingIfNeeded: PageMeta.inlineBitmapBlocks) &* pg.pointee.blockSize {
            return UnsafeMutableRawPointer(pg).assumingMemoryBound(to: UInt64.self)
        }
        return Segment.freeBitmap(seg, headSlice: head)
    }

    /// Whether the free bitmap and the counts agree (tests; lock held).
    static func isValid(_ pg: UnsafeMutablePointer<PageMeta>) -> Bool {
        let bits = bitmap(pg)
        let blocks = Int(pg.pointee.limitBytes / pg.pointee.blockSize)
        // Bits only for blocks handed out before (below the bump limit).
        let handedOut = Swift.min(Int(pg.pointee.bumpBytes / pg.pointee.blockSize), blocks)
        var set = 0
        for w in 0..<PageMeta.bitmapWords(blocks: blocks) {
            let word = Segment.bitmapWord(bits, w).pointee
            let below = handedOut - (w << 6)
            let allowed: UInt64 = below >= 64 ? ~0 : below <= 0 ? 0 : (UInt64(1) << UInt64(below)) - 1
            if word & ~allowed != 0 { return false }
            if word != 0 && w < Int(pg.pointee.firstFreeWord) { return false }
            set += word.nonzeroBitCount
        }
        return pg.pointee.bumpBytes <= pg.pointee.limitBytes && set == Int(pg.pointee.freeBlocks)
            && pg.pointee.used + pg.pointee.freeBlocks == pg.pointee.bumpBytes / pg.pointee.blockSize
    }

    /// Moves up to `max` blocks of class `c` into `dst[0..<n]`, returns n.
    /// 0 means the OS refused memory. The block at the lowest address ends
    /// up in `dst[n - 1]`, where a magazine pops first: blocks are written
    /// from `dst[max - 1]` down, and moved to the bottom if fewer than `max`.
    static func fill(_ c: Int, into dst: UnsafeMutablePointer<RawPointer?>, max: Int) -> Int {
        let central = Globals.central(c)
        let info = Globals.classInfo(c)
        Lock.acquire(lockWord(c))
        defer { Lock.release(lockWord(c)) }
        // dst[k..<max] holds the blocks taken so far; the next goes to dst[k - 1].
        var k = max
        while k > 0 {
            var page = central.pointee.partial
            if page == nil {
                guard let fresh = SegmentManager.allocatePage(slices: info.pointee.pageSlices, sizeClass: c) else { break }
                let head = Segment.sliceIndex(of: fresh.pointee.start.unsafelyUnwrapped)
                fresh.pointee.start = fresh.pointee.start.unsafelyUnwrapped + SizeClass.firstBlockOffset(info, sizeClass: c, headSlice: head)
                fresh.pointee.blockSize = UInt32(info.pointee.blockSize)
                fresh.pointee.limitBytes = UInt32(info.pointee.blockSize * info.pointee.blocksPerPage)
                // A bitmap in the segment's rows may hold an earlier page's
                // bits (the PageMeta's inline word starts at 0).
                let blocks = info.pointee.blocksPerPage
                if blocks > PageMeta.inlineBitmapBlocks { clear(bitmap(fresh), blocks: blocks) }
                link(central, fresh)
                page = fresh
            }
            let pg = page.unsafelyUnwrapped
            let start = UInt(bitPattern: pg.pointee.start)
            let size = UInt(pg.pointee.blockSize)
            let before = k
            // Returned blocks first, lowest address first; never-used ones
            // all lie above them.
            let free = Int(pg.pointee.freeBlocks)
            if free != 0 {
                let bits = bitmap(pg)
                let words = PageMeta.bitmapWords(blocks: info.pointee.blocksPerPage)
                var w = Int(pg.pointee.firstFreeWord)
                while true {
                    if w >= words { corrupted(pg) }
                    var m = Segment.bitmapWord(bits, w).pointee
                    let base = start &+ UInt(w &<< 6) &* size
                    while m != 0 {
                        let b = RawPointer(bitPattern: base &+ UInt(m.trailingZeroBitCount) &* size)
                        m &= m &- 1
                        Hardening.checkNotLive(b.unsafelyUnwrapped)
                        k &-= 1
                        dst[k] = b
                        if k == 0 { break }
                    }
                    Segment.bitmapWord(bits, w).pointee = m
                    if k == 0 || before &- k == free { break }
                    w &+= 1
                }
                pg.pointee.freeBlocks = UInt32(truncatingIfNeeded: free &- (before &- k))
                pg.pointee.firstFreeWord = UInt16(truncatingIfNeeded: w)
            }
            // Then never-used blocks, carved upwards from the bump offset.
            let bump = UInt(pg.pointee.bumpBytes)
            let limit = UInt(pg.pointee.limitBytes)
            if k > 0 && bump < limit {
                let left = info.pointee.reciprocal.multipliedFullWidth(by: UInt64(truncatingIfNeeded: limit &- bump)).high
                let carve = Swift.min(Int(truncatingIfNeeded: left), k)
                var p = start &+ bump
                for _ in 0..<carve {
                    k &-= 1
                    dst[k] = RawPointer(bitPattern: p)
                    p &+= size
                }
                pg.pointee.bumpBytes = UInt32(truncatingIfNeeded: p &- start)
            }
            let taken = before &- k
            pg.pointee.used &+= UInt32(truncatingIfNeeded: taken)
            central.pointee.outBlocks &+= taken
            if !pg.pointee.hasFree { unlink(central, pg) }
        }
        let n = max &- k
        if k != 0 { for i in 0..<n { dst[i] = dst[k &+ i] } }
        return n
    }

    /// Returns `n` blocks of class `c` from `src` to their pages. A pointer
    /// that is not a handed-out block of its page (an interior pointer
    /// passed to free) or a block already free (a double free) aborts with
    /// one line: the bitmap would otherwise hand it out again.
    static func drain(_ c: Int, from src: UnsafeMutablePointer<RawPointer?>, count n: Int) {
        let central = Globals.central(c)
        let info = Globals.classInfo(c)
        let reciprocal = info.pointee.reciprocal
        Lock.acquire(lockWord(c))
        defer { Lock.release(lockWord(c)) }
        central.pointee.outBlocks &-= n
        // One cursor over the blocks, read as addresses (no test for nil
        // per block).
        let stride = MemoryLayout<RawPointer?>.stride
        var q = UnsafeRawPointer(src)
        let end = UnsafeRawPointer(src + n)
        while q < end {
            // Blocks freed one after another often share a page: the page is
            // looked up once per run of them, and its counts are written
            // back once.
            let first = q.load(as: RawPointer.self)
            let seg = Segment.base(of: first)
            // A block freed twice may come back after its page was released.
            if Int(Segment.sliceClass(seg, Segment.sliceIndex(of: first))) != c {
                Diagnostics.invalidPointer(first, operation: "free", reason: "not a block of a live page: freed twice")
            }
            let head = Segment.headSlice(of: first, in: seg)
            let page = Segment.pageMeta(seg, headSlice: head)
            let start = UInt(bitPattern: page.pointee.start)
            let span = UInt(page.pointee.bumpBytes)
            if UInt(bitPattern: first) &- start >= span {
                Diagnostics.invalidPointer(first, operation: "free", reason: "not a block of its page")
            }
            let bits = bitmap(page, in: seg, headSlice: head)
            // The run's bits are gathered a bitmap word at a time (blocks
            // freed one after another are mostly neighbours) and merged into
            // the page's word once per change of word.
            var word = Int(bitPattern: UInt(truncatingIfNeeded: reciprocal.multipliedFullWidth(by: UInt64(truncatingIfNeeded: UInt(bitPattern: first) &- start)).high) &>> 6)
            var lowest = word
            var gathered: UInt64 = 0
            let run = q
            repeat {
                let offset = q.load(as: UInt.self) &- start
                if offset >= span { break }
                // offset < span < 2^32: one product gives the index and
                // whether the offset is a multiple of the size (ClassInfo).
                let (high, low) = reciprocal.multipliedFullWidth(by: UInt64(truncatingIfNeeded: offset))
                if low >= reciprocal {
                    Diagnostics.invalidPointer(RawPointer(bitPattern: q.load(as: UInt.self)), operation: "free", reason: "not a block start")
                }
                let index = UInt(truncatingIfNeeded: high)
                let w = Int(bitPattern: index &>> 6)
                if w != word {
                    merge(gathered, into: Segment.bitmapWord(bits, word), page: page, word: word)
                    gathered = 0
                    word = w
                    lowest = Swift.min(lowest, w)
                }
                let bit: UInt64 = 1 &<< UInt64(index & 63)
                if gathered & bit != 0 { freedTwice(page, index: Int(bitPattern: index)) }
                gathered |= bit
                q += stride
            } while q < end
            merge(gathered, into: Segment.bitmapWord(bits, word), page: page, word: word)
            let k = UInt32(truncatingIfNeeded: (UInt(bitPattern: q) &- UInt(bitPattern: run)) / UInt(stride))
            let low = UInt16(truncatingIfNeeded: lowest)
            if page.pointee.freeBlocks == 0 || low < page.pointee.firstFreeWord { page.pointee.firstFreeWord = low }
            page.pointee.freeBlocks &+= k
            page.pointee.used &-= k
            if !page.pointee.listed { link(central, page) }
            if page.pointee.used == 0 {
                if page.pointee.prev != nil || page.pointee.next != nil {
                    unlink(central, page)
                    SegmentManager.releasePage(page)
                } else {
                    // The class's only page, kept: every block is back, so
                    // it is carved again from its start.
                    clear(bits, blocks: Int(page.pointee.bumpBytes / page.pointee.blockSize))
                    page.pointee.freeBlocks = 0
                    page.pointee.firstFreeWord = 0
                    page.pointee.bumpBytes = 0
                }
            }
        }
    }

    /// Sets a run's gathered bits in the page's bitmap word `word`; a bit
    /// already set there is a block freed twice.
    @inline(__always)
    private static func merge(_ gathered: UInt64, into at: UnsafeMutablePointer<UInt64>, page: UnsafeMutablePointer<PageMeta>, word: Int) {
        let old = at.pointee
        if old & gathered != 0 { freedTwice(page, index: word &<< 6 &+ (old & gathered).trailingZeroBitCount) }
        at.pointee = old | gathered
    }

    /// Block `index` of the page came back while its bit was set.
    @inline(never)
    private static func freedTwice(_ page: UnsafeMutablePointer<PageMeta>, index: Int) -> Never {
        let block = RawPointer(bitPattern: UInt(bitPattern: page.pointee.start) &+ UInt(index) &* UInt(page.pointee.blockSize))
        Diagnostics.invalidPointer(block, operation: "free", reason: "freed twice (found when its page took it back)")
    }

    /// Clears the bits of a free bitmap's first `blocks` blocks.
    private static func clear(_ bits: UnsafeMutablePointer<UInt64>, blocks: Int) {
        for w in 0..<PageMeta.bitmapWords(blocks: blocks) { Segment.bitmapWord(bits, w).pointee = 0 }
    }

    /// The page's counts say it has a free block and its bitmap has none.
    @inline(never)
    static func corrupted(_ pg: UnsafeMutablePointer<PageMeta>) -> Never {
        Diagnostics.invalidPointer(pg.pointee.start, operation: "malloc", reason: "page free bitmap corrupted")
    }

    /// Returns `n` blocks of class `c` linked through their first word,
    /// starting at `head`, to their pages, a BlockBuffer at a time.
    static func drainList(_ c: Int, head: RawPointer?, count n: Int) {
        var buffer = BlockBuffer()
        var next = head
        var left = n
        withUnsafeMutableBytes(of: &buffer) { raw in
            let slots = raw.baseAddress!.assumingMemoryBound(to: RawPointer?.self)
            while left > 0 {
                var k = 0
                while k < BlockBuffer.slots && left > 0, let b = next {
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

/// Room on the stack for a chunk of block pointers that goes to or comes
/// from the pages in one `fill` or `drain` (the simple variant's refills and
/// Central.drainList).
struct BlockBuffer {
    var slots: (
        RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?,
        RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?,
        RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?,
        RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?, RawPointer?
    ) = (
        nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
        nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil
    )

    /// The pointers it holds.
    static var slots: Int { MemoryLayout<BlockBuffer>.size / MemoryLayout<RawPointer?>.stride }
}
