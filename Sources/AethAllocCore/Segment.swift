// Segment.swift: segments, the segment map, and the slice allocator.
//
// A segment is 4 MiB of address space aligned to 4 MiB, cut into 64 slices
// of 64 KiB. Its first `Segment.metadataSlices` slices (1; 2 in the hardened
// variant) hold its metadata; the others are handed out as pages, a page
// being a run of 1...16 slices serving one size class.
//
//   +0      sliceClass[64]  UInt8   class of the page owning the slice, or
//                                   SizeClass.markFree / markHeader / markLarge
//   +64     sliceHead[64]   UInt8   first slice of the page owning the slice
//   +128    SegmentHeader
//   after   BinLink[2]      its place in the manager's two bins (SegmentBins)
//   +512    PageMeta[64]    64 bytes each; a page uses its first slice's entry
//   +8192   freeBitmaps     8 rows of 64 lines: line l of a slice's free
//                           bitmap is line s of row l (Page.swift; the page's
//                           first slice s). Row 0 is 4 KiB: a segment whose
//                           pages need at most 512 blocks' bits touches only
//                           it; pages of the smallest classes use the rows
//                           below.
//   +40960  liveBitmaps[64] hardened only: 512 bytes each (Hardening.swift)
//   then    the hardened segment guard, the last OS page of the metadata
//           slices, where it lies wholly after the metadata
//
// The free bitmaps sit together here rather than in front of each page's
// blocks: at the start of a 64 KiB-aligned page, every page's bitmap would
// fall in the same few cache sets, and a drain of blocks scattered over
// many pages missed on nearly every one of them (perl dropping a hash, under
// callgrind: the drain's last-level read misses 101k in front of the
// blocks, 1.1k here; BENCHMARK.md, "Free bitmaps out of the pages").
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
    /// Bit i set: slice i is free. The metadata slices' bits are never set.
    var freeMask: UInt64
    /// Bit i set: slice i is free and may still hold committed memory.
    var dirtyMask: UInt64
    /// Links in `SegmentManager.withFree` (segments that have a free slice).
    var next: UnsafeMutablePointer<SegmentHeader>?
    var prev: UnsafeMutablePointer<SegmentHeader>?
    var listed: Bool
    /// When `dirtyMask` last went from 0 to non-zero (for the purge delay).
    var dirtySinceMs: UInt64
    // Followed by its BinLinks (Segment.binLinksOffset): the lengths of its
    // longest runs of free and of free committed slices, kept by
    // `SegmentManager.noteMasks` for the best-fit search (SegmentBins).
}

enum Segment {
    static let sliceClassOffset = 0
    static let sliceHeadOffset = 64
    static let headerOffset = 128
    static let pagesOffset = 512
    static let pageStride = 64
    /// A slice's free bitmap: a bit for every block of the smallest class a
    /// slice can hold (512 bytes, 8 lines), one line in each of 8 rows.
    static let bitmapRowBytes = Tuning.sliceBytes / SizeClass.minBlockBytes / UInt8.bitWidth
    static let bitmapLineWords = Tuning.cacheLineBytes / MemoryLayout<UInt64>.size
    /// On a 4 KiB boundary (the smallest OS page): a small program's row 0
    /// is one OS page of its own.
    static let smallestOSPageBytes = 4096
    @inline(__always) static var freeBitmapsOffset: Int {
        Layout.after(pagesOffset, Tuning.slicesPerSegment * pageStride, align: smallestOSPageBytes)
    }
    /// The hardened variant's live-block bitmap rows (Hardening.swift).
    @inline(__always) static var liveBitmapsOffset: Int { freeBitmapsOffset + Tuning.slicesPerSegment * bitmapRowBytes }
    /// Word `w` of a free bitmap that starts at `bits`: 8 words a line, and
    /// the next line one row (64 lines) further. A bitmap in a PageMeta has
    /// word 0 only.
    @inline(__always) static func bitmapWord(_ bits: UnsafeMutablePointer<UInt64>, _ w: Int) -> UnsafeMutablePointer<UInt64> {
        bits + (w &+ (w / bitmapLineWords) &* (Tuning.slicesPerSegment &- 1) &* bitmapLineWords)
    }
    /// Where the metadata ends, and the slices it takes.
    @inline(__always) static var metadataEndBytes: Int { Variant.hardened ? liveBitmapsOffset + Tuning.slicesPerSegment * bitmapRowBytes : liveBitmapsOffset }
    @inline(__always) static var metadataSlices: Int { (metadataEndBytes + Tuning.sliceBytes - 1) / Tuning.sliceBytes }
    /// Where the first page can start: the bytes the metadata slices take.
    @inline(__always) static var metadataBytes: Int { metadataSlices * Tuning.sliceBytes }
    /// The first line of the free bitmap of the page whose first slice is
    /// `headSlice` (its other words: `bitmapWord`).
    @inline(__always) static func freeBitmap(_ seg: RawPointer, headSlice: Int) -> UnsafeMutablePointer<UInt64> {
        (seg + (freeBitmapsOffset &+ headSlice &* Tuning.cacheLineBytes)).assumingMemoryBound(to: UInt64.self)
    }
    /// Where a segment's two BinLinks start (right after its header).
    @inline(__always) static var binLinksOffset: Int {
        Layout.after(headerOffset, MemoryLayout<SegmentHeader>.size, align: 8)
    }
    /// Whether the metadata before the pages fits their fixed offset
    /// (Globals.checkLayout).
    static var metadataFits: Bool {
        binLinksOffset + SegmentBins.kinds * MemoryLayout<BinLink>.stride <= pagesOffset
    }
    /// Every slice but the metadata slices.
    @inline(__always) static var allSlicesFree: UInt64 { ~((UInt64(1) << UInt64(metadataSlices)) &- 1) }

    // ---- the segment map -------------------------------------------------

    /// The map byte of chunk `chunk`. Every write of the map and every read
    /// but free's fast path (Allocator.deallocate says why) goes
    /// through here as a relaxed atomic (a plain byte load or store on
    /// x86-64 and aarch64): the byte of a span unmapped under the large-cache
    /// lock may be written next, without that lock, by the thread the kernel
    /// hands the same addresses to. The kernel orders the two (munmap before
    /// mmap returns the range), which ThreadSanitizer cannot see; as atomics
    /// the two writes are no data race, and no lock is taken on the
    /// allocation path.
    @inline(__always)
    static func mapEntry(_ chunk: UInt) -> UnsafeMutablePointer<Atomic<UInt8>> {
        UnsafeMutableRawPointer(Globals.segmentMap + Int(bitPattern: chunk)).assumingMemoryBound(to: Atomic<UInt8>.self)
    }

    @inline(__always)
    static func mapByte(_ chunk: UInt) -> UInt8 { mapEntry(chunk).pointee.load(ordering: .relaxed) }

    /// Marks the 4 MiB chunk holding `p` as ours, with its header `back`
    /// chunks below (0: in the chunk itself).
    static func mapSet(_ p: RawPointer, headerChunksBack back: Int) {
        mapEntry(UInt(bitPattern: p) >> UInt(Tuning.segmentShift)).pointee.store(UInt8(back + 1), ordering: .relaxed)
    }
    static func mapClear(_ p: RawPointer) {
        mapEntry(UInt(bitPattern: p) >> UInt(Tuning.segmentShift)).pointee.store(0, ordering: .relaxed)
    }

    /// The header base (segment or large mapping) for a pointer that is ours,
    /// nil for any address AethAlloc did not map.
    @inline(__always)
    static func owner(of p: RawPointer) -> RawPointer? {
        let a = UInt(bitPattern: p)
        let chunk = a >> UInt(Tuning.segmentShift)
        if chunk >= UInt(OS.segmentMapEntries) { return nil }
        let v = UInt(mapByte(chunk))
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
        pageMeta(seg, headSlice: headSlice(of: p, in: seg))
    }
    /// The first slice of the page holding `p`, in small segment `seg`.
    @inline(__always) static func headSlice(of p: RawPointer, in seg: RawPointer) -> Int {
        Int(seg.load(fromByteOffset: sliceHeadOffset &+ sliceIndex(of: p), as: UInt8.self))
    }
}

/// Hands out runs of slices from segments, maps and unmaps segments, and
/// decides when free slices go back to the OS.
///
/// Invariants (under `lock`):
/// - `withFree` lists exactly the small segments with `freeMask != 0`.
/// - `emptySegments` counts listed segments whose `freeMask == allSlicesFree`;
///   at most `Tuning.cachedEmptySegments` of them stay mapped, or more
///   while the reclaimer runs, until their slices are due (Reclaimer).
/// - A free slice has sliceClass `markFree`; a used one, its page's class.
/// - `dirtyBytes` is the sum over segments of popcount(dirtyMask) slices;
///   `usedBytes` the bytes of all slices in pages (small or medium).
///
/// Purge policy (when: Reclaim.swift): a freed slice stays committed
/// ("dirty") so the next page or medium block carved there costs no page
/// faults, within the dirty budget (plus the churn allowance) and the
/// purge delay; this type carries them out, under its lock. malloc_trim
/// purges everything.
struct SegmentManager: ~Copyable {
    var withFree: UnsafeMutablePointer<SegmentHeader>?
    var emptySegments: Int
    var lastPurgeMs: UInt64
    var dirtyBytes: Int
    var usedBytes: Int
    /// The part of `usedBytes` in medium blocks.
    var mediumBytes: Int
    /// Purges the OS refused (Stats: madvise failures), and until when the
    /// budget and the delay stop trying (`purgeAllowed`).
    var purgeFailures: Int
    var purgeBackoffUntilMs: UInt64
    /// Segments mapped now (mallinfo2, malloc_stats).
    var mappedSegments: Int
    /// Churn (`churnAllowance`): when the budget last purged (on a releasing
    /// thread or the reclaimer; 0: never) and how many bytes, the bytes of
    /// slices committed afresh since then, and the allowance those set, with
    /// when it was set.
    var budgetPurgeMs: UInt64
    var budgetPurgedBytes: Int
    var refaultedBytes: Int
    var churnBytes: Int
    var churnSinceMs: UInt64

    static var shared: UnsafeMutablePointer<SegmentManager> { Globals.segments }
    static var lockWord: UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.segmentLock)
    }

    /// A page of `slices` slices for class `sizeClass`, its metadata reset.
    /// Nil when the OS refuses memory.
    static func allocatePage(slices: Int, sizeClass: Int) -> UnsafeMutablePointer<PageMeta>? {
        allocateRun(slices: slices, mark: UInt8(truncatingIfNeeded: sizeClass))?.page
    }

    /// A run of `slices` slices marked `mark` (a size class or
    /// `SizeClass.markMedium`), with its page metadata reset. `clean` tells
    /// whether every slice of the run reads as zero (fresh or purged).
    static func allocateRun(slices: Int, mark: UInt8) -> (page: UnsafeMutablePointer<PageMeta>, clean: Bool)? {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        return carve(shared, slices: slices, mark: mark)
    }

    /// A medium block for a request of `size` bytes: a freed one whose
    /// request ended in the same 8 KiB (MediumCache, never clean), else a
    /// run of `slices` slices carved as `allocateRun` does.
    static func allocateMedium(size: Int, slices: Int) -> (page: UnsafeMutablePointer<PageMeta>, clean: Bool)? {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        if let page = MediumCache.take(size: size) {
            m.pointee.mediumBytes += Int(page.pointee.slices) * Tuning.sliceBytes
            return (page, false)
        }
        return carve(m, slices: slices, mark: SizeClass.markMedium)
    }

    private static func carve(
        _ m: UnsafeMutablePointer<SegmentManager>, slices: Int, mark: UInt8
    ) -> (page: UnsafeMutablePointer<PageMeta>, clean: Bool)? {
        maybePurge(m)
        var run: UInt64 = (slices >= 64) ? 0 : (UInt64(1) << UInt64(slices)) - 1
        // Best fit, committed slices first: the segment whose longest run of
        // free committed slices is the shortest that fits, then the shortest
        // such run inside it; failing that, the same over all free slices.
        // Reusing committed slices costs no page faults and keeps RSS from
        // growing while freed memory waits for a purge; best fit fills the
        // holes left by freed pages before a fresh segment's long run is cut.
        var seg: UnsafeMutablePointer<SegmentHeader>? = nil
        var slice = -1
        var flushed = false
        while true {
            seg = SegmentBins.best(SegmentBins.dirty, slices: slices)
            if seg == nil, let page = MediumCache.takeHolding(slices: slices) {
                // Committed memory the cache keeps for another size, rather
                // than slices that would fault in afresh: the run goes back
                // to its segment, where best fit finds it or a better hole.
                release(m, page, live: false, purge: false)
                seg = SegmentBins.best(SegmentBins.dirty, slices: slices)
            }
            if let h = seg {
                slice = bestFit(h.pointee.dirtyMask, slices: slices)
            } else {
                seg = SegmentBins.best(SegmentBins.free, slices: slices)
                if let h = seg { slice = bestFit(h.pointee.freeMask, slices: slices) }
            }
            if slice >= 0 { break }
            if let fresh = newSegment(m) {
                seg = fresh
                slice = Segment.metadataSlices
                break
            }
            // No address space for a segment (RLIMIT_AS, vm.max_map_count):
            // the medium cache's runs go back to their segments, where they
            // may coalesce into what is asked for.
            if flushed || releaseCached(m, olderThanMs: nil, purge: false) == 0 { return nil }
            flushed = true
        }
        let h = seg!
        let base = RawPointer(h) - Segment.headerOffset
        if h.pointee.freeMask == Segment.allSlicesFree { m.pointee.emptySegments -= 1 }
        run <<= UInt64(slice)
        m.pointee.refaultedBytes &+= (run & ~h.pointee.dirtyMask).nonzeroBitCount &* Tuning.sliceBytes
        let clean = claim(m, h, run, head: slice, mark: mark)
        let page = Segment.pageMeta(base, headSlice: slice)
        page.pointee = PageMeta(
            inlineBits: 0, start: base + slice * Tuning.sliceBytes, next: nil, prev: nil,
            bumpBytes: 0, limitBytes: 0, used: 0, blockSize: 0, freeBlocks: 0, firstFreeWord: 0,
            sizeClass: mark, slices: UInt8(truncatingIfNeeded: slices), listed: false)
        return (page, clean)
    }

    /// Extends `page` in place to `slices` slices if the slices after it are
    /// free. The new slices may hold stale data. True on success.
    static func growRun(_ page: UnsafeMutablePointer<PageMeta>, to slices: Int) -> Bool {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        let (base, h, first, old) = locate(page)
        if first + slices > Tuning.slicesPerSegment { return false }
        let extra: UInt64 = ((UInt64(1) << UInt64(slices - old)) - 1) << UInt64(first + old)
        if h.pointee.freeMask & extra != extra { return false }
        _ = claim(m, h, extra, head: first, mark: Segment.sliceClass(base, first))
        page.pointee.slices = UInt8(truncatingIfNeeded: slices)
        return true
    }

    /// Gives a page's slices back to its segment. They stay committed within
    /// the dirty budget and purge delay; a segment left wholly free is
    /// unmapped unless it is among those kept for reuse. A medium block is
    /// kept whole in the medium cache instead while its limit allows.
    static func releasePage(_ page: UnsafeMutablePointer<PageMeta>) {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        if page.pointee.sizeClass == SizeClass.markMedium && Options.mediumCache && Options.purgeDelayMs != 0 {
            // At most half the budget of the heap as it is without the block.
            let bytes = Int(page.pointee.slices) * Tuning.sliceBytes
            let limit = Reclaimer.dirtyBudget(
                used: m.pointee.usedBytes - MediumCache.shared.pointee.bytes - bytes, medium: m.pointee.mediumBytes - bytes) / 2
            if MediumCache.keep(page, limit: limit, now: OS.nowMs()) {
                m.pointee.mediumBytes -= bytes
                purgeIfOverBudget(m, sparing: nil)
                maybePurge(m)
                if Options.purgeDelayMs > 0 { Reclaimer.notePending(bytes: committedFree(m)) }
                return
            }
        }
        release(m, page, live: true, purge: false)
    }

    /// releasePage's work, lock held; `live` is false for a run coming out
    /// of the medium cache (already out of `mediumBytes`); `purge` purges
    /// the run's slices at once.
    private static func release(
        _ m: UnsafeMutablePointer<SegmentManager>, _ page: UnsafeMutablePointer<PageMeta>, live: Bool, purge: Bool
    ) {
        let (base, h, slice, slices) = locate(page)
        for i in slice..<(slice + slices) {
            base.storeBytes(of: SizeClass.markFree, toByteOffset: Segment.sliceClassOffset + i, as: UInt8.self)
        }
        let run: UInt64 = ((slices >= 64) ? ~0 : (UInt64(1) << UInt64(slices)) - 1) << UInt64(slice)
        h.pointee.freeMask |= run
        markDirty(m, h, run)
        noteMasks(h)
        m.pointee.usedBytes -= slices * Tuning.sliceBytes
        if live && page.pointee.sizeClass == SizeClass.markMedium { m.pointee.mediumBytes -= slices * Tuning.sliceBytes }
        if Options.purgeDelayMs == 0 && purgeAllowed(m) {
            purgeSegment(m, h)
        } else if purge && purgeAllowed(m) {
            purgeSegment(m, h, only: run)
        }
        if !h.pointee.listed { link(m, h) }
        if h.pointee.freeMask == Segment.allSlicesFree {
            // A wholly free segment beyond those kept warm goes back to the
            // OS now (unmapped; purged, should the OS refuse the munmap),
            // unless it is churn (the program maps as much again each time);
            // with the reclaimer running, when its slices are due.
            if Reclaimer.unmapsEmptySegmentNow(kept: m.pointee.emptySegments) && !isChurn(m) {
                let dirty = h.pointee.dirtyMask.nonzeroBitCount &* Tuning.sliceBytes
                if unmapSegment(m, h) {
                    noteGivenBack(m, bytes: dirty)
                    maybePurge(m)
                    return
                }
                purgeSegment(m, h)
            }
            m.pointee.emptySegments += 1
        }
        if purge { return }
        purgeIfOverBudget(m, sparing: h)
        maybePurge(m)
        if Options.purgeDelayMs > 0 { Reclaimer.notePending(bytes: committedFree(m)) }
    }

    /// Gives the medium cache's runs cached at or before `olderThanMs` (all
    /// when nil) back to their segments, purging them with `purge` (they
    /// have waited out the delay). Returns how many went back.
    @discardableResult
    private static func releaseCached(_ m: UnsafeMutablePointer<SegmentManager>, olderThanMs: UInt64?, purge: Bool) -> Int {
        var released = 0
        while let page = MediumCache.takeOldest(olderThanMs: olderThanMs) {
            release(m, page, live: false, purge: purge)
            released += 1
        }
        return released
    }

    /// The background reclaimer's step: purges the slices the delay and the
    /// budget say are due. Returns the milliseconds until the next segment's
    /// slices are due, nil if none are committed and free (or the delay is
    /// off, -1, and the budget holds).
    static func reclaim(now: UInt64) -> UInt64? {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        // The budget, as a releasing thread applies it (purgeIfOverBudget):
        // memory the program took back soon after the last such purge stays.
        if committedFree(m) > dirtyBudget(m) && purgeAllowed(m) { purgeUnlessChurn(m, sparing: nil) }
        let delay = Options.purgeDelayMs
        if delay <= 0 || (m.pointee.dirtyBytes == 0 && MediumCache.shared.pointee.count == 0) { return nil }
        releaseCached(m, olderThanMs: now &- UInt64(delay), purge: true)
        if purgeAllowed(m) { _ = purge(m, olderThanMs: now &- UInt64(delay)) }
        var next = MediumCache.nextDue(now: now, delay: UInt64(delay))
        var seg = m.pointee.withFree
        while let h = seg {
            if h.pointee.dirtyMask != 0 {
                let due = h.pointee.dirtySinceMs &+ UInt64(delay)
                let wait = due > now ? due - now : 0
                next = min(next ?? wait, wait)
            }
            seg = h.pointee.next
        }
        if m.pointee.purgeFailures != 0 && m.pointee.purgeBackoffUntilMs > now, let n = next {
            next = max(n, m.pointee.purgeBackoffUntilMs - now)
        }
        return next
    }

    /// The manager's figures, read under its lock (mallinfo2, malloc_stats).
    /// `used` includes the medium cache's runs (`cached`), `medium` does not.
    static func figures() -> (segments: Int, withFree: Int, used: Int, medium: Int, cached: Int, dirty: Int) {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        let m = shared
        var withFree = 0
        var s = m.pointee.withFree
        while let h = s {
            withFree += 1
            s = h.pointee.next
        }
        return (
            m.pointee.mappedSegments, withFree, m.pointee.usedBytes, m.pointee.mediumBytes,
            MediumCache.shared.pointee.bytes, m.pointee.dirtyBytes
        )
    }

    /// Returns every free-but-committed slice to the OS, the medium cache's
    /// runs included. Returns the bytes purged.
    @discardableResult
    static func purgeAll() -> Int {
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        // The program asked for everything back: churn is measured afresh.
        shared.pointee.budgetPurgeMs = 0
        shared.pointee.churnBytes = 0
        releaseCached(shared, olderThanMs: nil, purge: false)
        return purge(shared, olderThanMs: nil)
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
            if h.pointee.freeMask == Segment.allSlicesFree && unmapSegment(m, h) {
                m.pointee.emptySegments -= 1
                released += Tuning.segmentBytes
            }
        }
        return released
    }

    /// The first slice of the shortest run of free slices in `free` that
    /// holds `slices` slices, or -1.
    static func bestFit(_ free: UInt64, slices: Int) -> Int {
        var rest = free
        var best = -1
        var bestLength = Int.max
        while rest != 0 {
            let first = rest.trailingZeroBitCount
            let length = (~(rest >> UInt64(first))).trailingZeroBitCount
            if length >= slices && length < bestLength {
                best = first
                bestLength = length
                if length == slices { break }
            }
            rest &= (first + length >= 64) ? 0 : ~UInt64(0) << UInt64(first + length)
        }
        return best
    }

    /// Length of the longest run of set bits in `free`.
    static func longestRun(_ free: UInt64) -> Int {
        var rest = free
        var longest = 0
        while rest != 0 {
            let first = rest.trailingZeroBitCount
            let length = (~(rest >> UInt64(first))).trailingZeroBitCount
            longest = max(longest, length)
            rest &= (first + length >= 64) ? 0 : ~UInt64(0) << UInt64(first + length)
        }
        return longest
    }

    // ---- internals (lock held) ---------------------------------------------

    /// A page's segment base, segment header, first slice and slice count.
    private static func locate(
        _ page: UnsafeMutablePointer<PageMeta>
    ) -> (RawPointer, UnsafeMutablePointer<SegmentHeader>, Int, Int) {
        let start = page.pointee.start!
        let base = Segment.base(of: start)
        return (base, Segment.header(base), Segment.sliceIndex(of: start), Int(page.pointee.slices))
    }

    /// Takes the free slices `run` of segment `h` for the page whose first
    /// slice is `head`, marking them `mark`. True if none was committed.
    private static func claim(
        _ m: UnsafeMutablePointer<SegmentManager>, _ h: UnsafeMutablePointer<SegmentHeader>, _ run: UInt64,
        head: Int, mark: UInt8
    ) -> Bool {
        let dirtyRun = h.pointee.dirtyMask & run
        m.pointee.dirtyBytes -= dirtyRun.nonzeroBitCount * Tuning.sliceBytes
        m.pointee.usedBytes += run.nonzeroBitCount * Tuning.sliceBytes
        if mark == SizeClass.markMedium { m.pointee.mediumBytes += run.nonzeroBitCount * Tuning.sliceBytes }
        h.pointee.freeMask &= ~run
        h.pointee.dirtyMask &= ~run
        noteMasks(h)
        if h.pointee.freeMask == 0 { unlink(m, h) }
        let base = RawPointer(h) - Segment.headerOffset
        var bits = run
        while bits != 0 {
            let i = bits.trailingZeroBitCount
            base.storeBytes(of: mark, toByteOffset: Segment.sliceClassOffset + i, as: UInt8.self)
            base.storeBytes(of: UInt8(truncatingIfNeeded: head), toByteOffset: Segment.sliceHeadOffset + i, as: UInt8.self)
            bits &= bits &- 1
        }
        return dirtyRun == 0
    }

    /// Recomputes the run lengths after `h`'s masks changed, and files `h`
    /// in the bins for them.
    private static func noteMasks(_ h: UnsafeMutablePointer<SegmentHeader>) {
        SegmentBins.file(h, SegmentBins.free, length: longestRun(h.pointee.freeMask))
        SegmentBins.file(h, SegmentBins.dirty, length: longestRun(h.pointee.dirtyMask))
    }

    /// The dirty budget now (Reclaimer.dirtyBudget) plus the churn
    /// allowance. The medium cache's runs are not part of the heap it
    /// scales with.
    private static func dirtyBudget(_ m: UnsafeMutablePointer<SegmentManager>) -> Int {
        Reclaimer.dirtyBudget(used: m.pointee.usedBytes - MediumCache.shared.pointee.bytes, medium: m.pointee.mediumBytes)
            &+ churnAllowance(m)
    }

    /// How long a churn allowance lasts: the purge delay (the default one
    /// when the delay is off, -1).
    private static var churnWindowMs: UInt64 {
        UInt64(Options.purgeDelayMs > 0 ? Options.purgeDelayMs : Tuning.defaultPurgeDelayMs)
    }

    /// Freed memory a program has shown it takes again: the budget is a
    /// share of the heap as it is now, so a program whose heap swings (it
    /// builds a large structure, frees all of it, builds it again) is
    /// purged at every trough and faults the same pages in at every peak
    /// (remote_free with one thread: 39,602 minor faults and 0.17 s of
    /// system time against mimalloc's 1,736 and 0.00 s). When the budget
    /// purges within `churnWindowMs` of its last purge (on a releasing
    /// thread or the reclaimer), and slices were committed afresh in
    /// between, that many bytes (at most what that purge gave back: growth
    /// is not churn) may stay committed and free on top of the budget, for
    /// one window. It raises
    /// the trough, never the peak, and the purge delay still returns the
    /// memory once the program stops touching it.
    private static func churnAllowance(_ m: UnsafeMutablePointer<SegmentManager>) -> Int {
        if m.pointee.churnBytes == 0 { return 0 }
        if OS.nowMs() &- m.pointee.churnSinceMs > churnWindowMs {
            m.pointee.churnBytes = 0
            return 0
        }
        return m.pointee.churnBytes
    }

    /// The budget's inline purge after a release (Reclaimer.purgesInline),
    /// unless the memory over budget is churn.
    private static func purgeIfOverBudget(_ m: UnsafeMutablePointer<SegmentManager>, sparing hot: UnsafeMutablePointer<SegmentHeader>?) {
        if Reclaimer.purgesInline(dirty: committedFree(m), budget: dirtyBudget(m)) { purgeUnlessChurn(m, sparing: hot) }
    }

    /// The budget's purge, on a releasing thread or the reclaimer: down to
    /// half the budget unless the memory over it is churn, recording what
    /// went back.
    private static func purgeUnlessChurn(_ m: UnsafeMutablePointer<SegmentManager>, sparing hot: UnsafeMutablePointer<SegmentHeader>?) {
        if isChurn(m) { return }
        let before = committedFree(m)
        purgeExcess(m, sparing: hot)
        noteGivenBack(m, bytes: before &- committedFree(m))
    }

    /// Whether the freed memory still committed is within the churn
    /// allowance, after setting it if the program took back memory given
    /// back less than `churnWindowMs` ago.
    private static func isChurn(_ m: UnsafeMutablePointer<SegmentManager>) -> Bool {
        if Options.purgeDelayMs == 0 { return false }
        let now = OS.nowMs()
        if m.pointee.budgetPurgeMs != 0 && now &- m.pointee.budgetPurgeMs <= churnWindowMs && m.pointee.refaultedBytes > 0 {
            m.pointee.churnBytes = max(m.pointee.churnBytes, min(m.pointee.refaultedBytes, m.pointee.budgetPurgedBytes))
            m.pointee.churnSinceMs = now
            m.pointee.refaultedBytes = 0
        }
        return churnAllowance(m) > 0 && committedFree(m) <= dirtyBudget(m)
    }

    /// The budget's purge (on a releasing thread or the reclaimer) or an
    /// empty segment's unmap gave `bytes` back to the OS: what churn may be
    /// measured against.
    private static func noteGivenBack(_ m: UnsafeMutablePointer<SegmentManager>, bytes: Int) {
        let now = OS.nowMs()
        let recent = m.pointee.budgetPurgeMs != 0 && now &- m.pointee.budgetPurgeMs <= churnWindowMs
        m.pointee.budgetPurgedBytes = recent ? m.pointee.budgetPurgedBytes &+ bytes : bytes
        m.pointee.budgetPurgeMs = now
        m.pointee.refaultedBytes = 0
    }

    /// Freed memory still committed, which the budget bounds: free
    /// committed slices and the medium cache's runs.
    @inline(__always)
    private static func committedFree(_ m: UnsafeMutablePointer<SegmentManager>) -> Int {
        m.pointee.dirtyBytes + MediumCache.shared.pointee.bytes
    }


    private static func markDirty(_ m: UnsafeMutablePointer<SegmentManager>, _ h: UnsafeMutablePointer<SegmentHeader>, _ run: UInt64) {
        if h.pointee.dirtyMask == 0 { h.pointee.dirtySinceMs = OS.nowMs() }
        m.pointee.dirtyBytes += (run & ~h.pointee.dirtyMask).nonzeroBitCount * Tuning.sliceBytes
        h.pointee.dirtyMask |= run
    }

    /// Purges the medium cache's runs, then segments other than `hot` (the
    /// one just released into), then `hot`, until the freed memory still
    /// committed is at most half the budget.
    private static func purgeExcess(_ m: UnsafeMutablePointer<SegmentManager>, sparing hot: UnsafeMutablePointer<SegmentHeader>?) {
        if !purgeAllowed(m) { return }
        let target = dirtyBudget(m) / 2
        // Cached runs first: free slices serve any size, a cached run only
        // its own (handoff_mixed bench: purging slices first cost 1.3x the
        // page faults).
        while committedFree(m) > target, let page = MediumCache.takeOldest(olderThanMs: nil) {
            release(m, page, live: false, purge: true)
        }
        var seg = m.pointee.withFree
        while let h = seg, m.pointee.dirtyBytes > 0 && committedFree(m) > target {
            seg = h.pointee.next
            if h != hot { giveBack(m, h) }
        }
        if let hot, m.pointee.dirtyBytes > 0 && committedFree(m) > target { giveBack(m, hot) }
    }

    /// False for `Tuning.purgeBackoffMs` after the OS refused a purge (under
    /// mlockall every madvise fails): the budget and the delay do not retry
    /// on every free. malloc_trim always tries.
    @inline(__always)
    private static func purgeAllowed(_ m: UnsafeMutablePointer<SegmentManager>) -> Bool {
        m.pointee.purgeFailures == 0 || OS.nowMs() >= m.pointee.purgeBackoffUntilMs
    }

    /// Purges segments dirty for longer than the purge delay, checking at
    /// most every tenth of the delay.
    private static func maybePurge(_ m: UnsafeMutablePointer<SegmentManager>) {
        let delay = Options.purgeDelayMs
        // 0: done by releasePage; -1: budget and malloc_trim only; with the
        // reclaimer running, its job.
        if delay <= 0 || (m.pointee.dirtyBytes == 0 && MediumCache.shared.pointee.count == 0) || !purgeAllowed(m)
            || !Reclaimer.checksDelaysInline
        {
            return
        }
        let now = OS.nowMs()
        if now &- m.pointee.lastPurgeMs >= UInt64(delay / 10 + 1) {
            m.pointee.lastPurgeMs = now
            releaseCached(m, olderThanMs: now &- UInt64(delay), purge: true)
            _ = purge(m, olderThanMs: now &- UInt64(delay))
        }
    }

    /// Purges every listed segment, or those dirty since before `olderThanMs`;
    /// such a segment that is wholly free and beyond the ones kept warm is
    /// unmapped instead. Returns the bytes purged.
    private static func purge(_ m: UnsafeMutablePointer<SegmentManager>, olderThanMs: UInt64?) -> Int {
        var purged = 0
        var seg = m.pointee.withFree
        while let h = seg {
            seg = h.pointee.next
            if olderThanMs.map({ h.pointee.dirtySinceMs <= $0 }) ?? true { purged += giveBack(m, h) }
        }
        return purged
    }

    /// Gives `h`'s free committed slices back to the OS: unmaps it if it is
    /// wholly free and beyond the empty segments kept warm (kept past
    /// releasePage only while the reclaimer runs), else purges them.
    /// Returns the bytes purged.
    @discardableResult
    private static func giveBack(_ m: UnsafeMutablePointer<SegmentManager>, _ h: UnsafeMutablePointer<SegmentHeader>) -> Int {
        if h.pointee.freeMask == Segment.allSlicesFree && m.pointee.emptySegments > Tuning.cachedEmptySegments
            && unmapSegment(m, h)
        {
            m.pointee.emptySegments -= 1
            return 0
        }
        return purgeSegment(m, h)
    }

    /// Purges one segment's dirty free slices (those in `mask`), in runs.
    /// Returns the bytes.
    /// A run the OS refuses to purge (madvise fails with EINVAL on locked
    /// pages, under mlockall) stays dirty: it still holds its old contents,
    /// so `claim` reports it as not clean and calloc zeroes it. Its segment's
    /// dirty clock restarts, so the purge delay does not retry it at once.
    @discardableResult
    private static func purgeSegment(
        _ m: UnsafeMutablePointer<SegmentManager>, _ h: UnsafeMutablePointer<SegmentHeader>, only mask: UInt64 = ~0
    ) -> Int {
        var purged = 0
        var dirty = h.pointee.dirtyMask & mask
        var kept: UInt64 = 0
        let base = RawPointer(h) - Segment.headerOffset
        while dirty != 0 {
            let first = dirty.trailingZeroBitCount
            let len = (~(dirty >> UInt64(first))).trailingZeroBitCount
            let run = ((len >= 64) ? ~0 : (UInt64(1) << UInt64(len)) - 1) << UInt64(first)
            if OS.purge(base + first * Tuning.sliceBytes, bytes: len * Tuning.sliceBytes) {
                purged += len * Tuning.sliceBytes
            } else {
                kept |= run
            }
            dirty &= ~run
        }
        h.pointee.dirtyMask = (h.pointee.dirtyMask & ~mask) | kept
        noteMasks(h)
        if kept != 0 {
            let now = OS.nowMs()
            h.pointee.dirtySinceMs = now
            m.pointee.purgeFailures &+= 1
            m.pointee.purgeBackoffUntilMs = now &+ Tuning.purgeBackoffMs
        }
        m.pointee.dirtyBytes -= purged
        if purged > 0 { Stats.purged(bytes: purged) }
        return purged
    }

    /// Unmaps a wholly free segment. If the OS refuses, the segment stays
    /// listed as an empty one (purged), so nothing it maps is lost track of.
    /// True if it was unmapped.
    @discardableResult
    private static func unmapSegment(_ m: UnsafeMutablePointer<SegmentManager>, _ h: UnsafeMutablePointer<SegmentHeader>) -> Bool {
        let base = RawPointer(h) - Segment.headerOffset
        let dirty = h.pointee.dirtyMask.nonzeroBitCount * Tuning.sliceBytes
        let wasListed = h.pointee.listed
        if wasListed { unlink(m, h) }
        SegmentBins.file(h, SegmentBins.free, length: 0)
        SegmentBins.file(h, SegmentBins.dirty, length: 0)
        // The map byte goes first: from here no free can find this segment.
        Segment.mapClear(base)
        if !OS.unmap(base, bytes: Tuning.segmentBytes) {
            Segment.mapSet(base, headerChunksBack: 0)
            if wasListed { link(m, h) }
            noteMasks(h)
            purgeSegment(m, h)
            return false
        }
        m.pointee.dirtyBytes -= dirty
        m.pointee.mappedSegments -= 1
        Stats.segmentUnmapped(bytes: Tuning.segmentBytes)
        return true
    }

    private static func newSegment(_ m: UnsafeMutablePointer<SegmentManager>) -> UnsafeMutablePointer<SegmentHeader>? {
        guard let base = OS.mapAligned(bytes: Tuning.segmentBytes, alignment: Tuning.segmentBytes) else { return nil }
        // Hardened: a segment without its guard page is not used.
        if !Hardening.protectSegment(base) {
            OS.unmap(base, bytes: Tuning.segmentBytes)
            return nil
        }
        Stats.segmentMapped(bytes: Tuning.segmentBytes)
        m.pointee.mappedSegments += 1
        for i in 0..<Tuning.slicesPerSegment {
            let mark = i < Segment.metadataSlices ? SizeClass.markHeader : SizeClass.markFree
            base.storeBytes(of: mark, toByteOffset: Segment.sliceClassOffset + i, as: UInt8.self)
        }
        let h = Segment.header(base)
        h.pointee = SegmentHeader(
            kind: SegmentHeader.kindSmall, freeMask: Segment.allSlicesFree, dirtyMask: 0,
            next: nil, prev: nil, listed: false, dirtySinceMs: 0)
        noteMasks(h)
        link(m, h)
        m.pointee.emptySegments += 1
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
