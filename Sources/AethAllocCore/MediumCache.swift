// MediumCache.swift: freed medium blocks kept whole, for the next request of
// the same size.
//
// Why: a medium block is a run of 64 KiB slices, but a program writes the
// pages of the bytes it asked for, so which pages of a run end up resident
// depends on the request, not on the run. Best fit over slices hands a freed
// 13-slice run to any request of 768-832 KiB; each new tenant writes its own
// last page, and over a long run every page of every slice becomes resident
// (server_sim bench: 143k page faults and 606 MiB peak RSS against
// tcmalloc's 85k and 367 MiB; with every request rounded up to whole slices
// by the program itself, 30k faults and 165 MiB). Reusing a freed block for a
// request that ends in the same 8 KiB (`grainShift`) gives the new tenant
// the pages the old one made resident.
//
// Each bin holds the freed runs whose request ended in one 8 KiB step,
// newest first (a doubly linked list through PageMeta.next/prev, with a
// tail for the oldest). A run is kept only against a request of its bin
// that no kept run has answered yet (`Bin.demand`): sizes a program asks
// for again and again keep their runs; sizes spread thin (handoff_mixed
// bench, 256 KiB-4 MiB blocks among small ones: 1.22x the time and 1.8x the
// page faults when every freed run was kept) go back to the slices. And
// until 1 in 4 kept runs are taken again (over windows of 32 keeps, from
// the start), only 1 candidate in 32 is kept: a program must show that it
// reuses sizes before the cache holds much for it (handoff_mixed: median
// page faults over 10 runs 25.4k without the cache, 27.4k with it; 30.0k
// probing 1 in 8 over windows of 64). A cached run stays claimed in its segment, marked
// medium, with `used == 0` (a second free of its pointer still aborts), and
// records in its PageMeta:
//
//   limitBytes  the request it last served (set by Medium.allocate)
//   bumpBytes   when it was cached (OS.nowMs, truncated; wraps in 49 days,
//               compared by difference)
//
// Bounds (all under the SegmentManager lock, which every operation here
// takes or requires):
// - `bytes` (the slices of cached runs) stays within half the dirty budget;
//   a freed run past it goes back to its segment as before.
// - A run cached for longer than the purge delay goes back to its segment
//   and is purged (the reclaimer, or the next segment operation without
//   one): memory a program stopped using returns to the OS.
// - Freed memory still committed (free slices and cached runs) stays within
//   the dirty budget; past it, slices are purged first, then cached runs.
// - A page or block that no free committed slices hold takes a cached run
//   of another size that holds it (`takeHolding`: the run goes back to its
//   segment) before it faults in fresh slices.
// - When no segment can be mapped, every cached run goes back to its
//   segment and the carve is tried again.
// - malloc_trim empties it.

struct MediumCache {
    /// Bytes of the slices of cached runs, and how many runs.
    var bytes: Int
    var count: Int
    /// Runs kept and runs taken in the current window of `window` keeps;
    /// `admitting` whether the last window's hits paid for its keeps (false
    /// at first); `probes` counts candidates while not.
    var keeps: Int
    var hits: Int
    var admitting: Bool
    var probes: Int
    // Followed by `bins` Bin structures (Globals.mediumCacheBins).

    /// The bins' step: a request's bin is (bytes - 1) >> grainShift.
    static let grainShift = 13
    /// Bins up to the largest medium block (Tuning.mediumMaxBytes); larger
    /// requests (mallopt M_MMAP_THRESHOLD) are not cached.
    static let bins = Tuning.mediumMaxBytes >> grainShift

    struct Bin {
        var newest: UnsafeMutablePointer<PageMeta>?
        var oldest: UnsafeMutablePointer<PageMeta>?
        /// Requests of the bin not yet answered by a kept run, at most
        /// `demandCap`: a freed run is kept only against one.
        var demand: Int
    }

    /// Requests a bin remembers: a size asked for often enough to have a
    /// few runs in flight keeps them; one asked for once in a while (sizes
    /// spread thin) does not tie up runs that best fit could use.
    static let demandCap = 16
    /// The hit rate is judged every `window` keeps: below 1 in
    /// `minHitRatio`, only every `probeEvery`-th candidate is kept (enough
    /// to see the rate come back).
    static let window = 32
    static let minHitRatio = 4
    static let probeEvery = 32

    @inline(__always) static var shared: UnsafeMutablePointer<MediumCache> { Globals.mediumCache }

    @inline(__always)
    static func bin(_ i: Int) -> UnsafeMutablePointer<Bin> {
        Globals.mediumCacheBins + i
    }

    /// The bin of a request of `size` bytes, or nil if not cached.
    @inline(__always)
    static func index(size: Int) -> Int? {
        let i = (size &- 1) &>> grainShift
        return i < bins ? i : nil
    }

    /// A cached run for a request of `size` bytes, unlinked, or nil; the
    /// request counts as demand for its bin either way. Segment lock held.
    static func take(size: Int) -> UnsafeMutablePointer<PageMeta>? {
        guard let i = index(size: size) else { return nil }
        let b = bin(i)
        if b.pointee.demand < demandCap { b.pointee.demand &+= 1 }
        guard let page = b.pointee.newest else { return nil }
        unlink(page, from: b)
        shared.pointee.hits &+= 1
        return page
    }

    /// Keeps the freed medium block `page` (its `used` already 0) if its
    /// request's bin exists and has demand, and `limit` allows. Segment
    /// lock held.
    static func keep(_ page: UnsafeMutablePointer<PageMeta>, limit: Int, now: UInt64) -> Bool {
        let request = Int(page.pointee.limitBytes)
        let runBytes = Int(page.pointee.slices) &* Tuning.sliceBytes
        // Every request of the bin must fit the run: a run grown in place
        // records its new size, so this holds unless the bin is cut off.
        guard request > Tuning.maxSmallBytes, let i = index(size: request),
            (i &+ 1) << grainShift <= runBytes, bin(i).pointee.demand > 0,
            shared.pointee.bytes &+ runBytes <= limit
        else { return false }
        let c = shared
        if !c.pointee.admitting {
            c.pointee.probes &+= 1
            if c.pointee.probes % probeEvery != 0 { return false }
        }
        c.pointee.keeps &+= 1
        if c.pointee.keeps == window {
            c.pointee.admitting = c.pointee.hits &* minHitRatio >= c.pointee.keeps
            c.pointee.keeps = 0
            c.pointee.hits = 0
        }
        page.pointee.bumpBytes = UInt32(truncatingIfNeeded: now)
        let b = bin(i)
        b.pointee.demand &-= 1
        page.pointee.prev = nil
        page.pointee.next = b.pointee.newest
        if let n = b.pointee.newest { n.pointee.prev = page } else { b.pointee.oldest = page }
        b.pointee.newest = page
        shared.pointee.bytes &+= runBytes
        shared.pointee.count &+= 1
        return true
    }

    /// Takes out a run that is the oldest of its bin and was cached at or
    /// before `olderThanMs` (any bin's oldest when nil), or nil if there is
    /// none. Segment lock held.
    static func takeOldest(olderThanMs: UInt64?) -> UnsafeMutablePointer<PageMeta>? {
        if shared.pointee.count == 0 { return nil }
        for i in 0..<bins {
            guard let page = bin(i).pointee.oldest else { continue }
            if let limit = olderThanMs, !isOlder(page, than: limit) { continue }
            unlink(page, from: bin(i))
            return page
        }
        return nil
    }

    static func takeOldest(bin i: Int) -> UnsafeMutablePointer<PageMeta>? {
        guard let page = bin(i).pointee.oldest else { return nil }
        unlink(page, from: bin(i))
        return page
    }

    /// Takes out the oldest run of the lowest bin whose oldest run has at
    /// least `slices` slices, or nil. Segment lock held.
    static func takeHolding(slices: Int) -> UnsafeMutablePointer<PageMeta>? {
        if shared.pointee.count == 0 { return nil }
        // Bin i holds requests of at most (i + 1) 8 KiB steps, in runs of
        // at least that many bytes: below `first`, none has `slices`.
        let first = max(0, ((slices &- 1) &* Tuning.sliceBytes) >> grainShift)
        var i = first
        while i < bins {
            if let page = bin(i).pointee.oldest, Int(page.pointee.slices) >= slices {
                unlink(page, from: bin(i))
                return page
            }
            i &+= 1
        }
        return nil
    }

    /// Milliseconds until the oldest cached run is `delay` old (0 if it
    /// is), nil if none is cached. Segment lock held.
    static func nextDue(now: UInt64, delay: UInt64) -> UInt64? {
        if shared.pointee.count == 0 { return nil }
        var next: UInt64? = nil
        let now32 = UInt32(truncatingIfNeeded: now)
        for i in 0..<bins {
            guard let page = bin(i).pointee.oldest else { continue }
            let age = UInt64(now32 &- page.pointee.bumpBytes)
            let wait = age >= delay ? 0 : delay - age
            next = min(next ?? wait, wait)
        }
        return next
    }

    @inline(__always)
    private static func isOlder(_ page: UnsafeMutablePointer<PageMeta>, than ms: UInt64) -> Bool {
        // Differences of truncated stamps: `page` was cached at or before
        // `ms` iff it is at least as old, measured from `ms`'s view.
        let stamp = page.pointee.bumpBytes
        let limit = UInt32(truncatingIfNeeded: ms)
        return Int32(bitPattern: limit &- stamp) >= 0
    }

    private static func unlink(_ page: UnsafeMutablePointer<PageMeta>, from b: UnsafeMutablePointer<Bin>) {
        if let p = page.pointee.prev { p.pointee.next = page.pointee.next } else { b.pointee.newest = page.pointee.next }
        if let n = page.pointee.next { n.pointee.prev = page.pointee.prev } else { b.pointee.oldest = page.pointee.prev }
        page.pointee.next = nil
        page.pointee.prev = nil
        shared.pointee.bytes &-= Int(page.pointee.slices) &* Tuning.sliceBytes
        shared.pointee.count &-= 1
    }
}
