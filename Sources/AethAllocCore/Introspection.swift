// Introspection.swift: what programs and operators can ask the allocator
// through glibc's API (mallinfo2, mallinfo, malloc_stats, malloc_info,
// mallopt), answered with our own figures in every variant.
//
// The figures come from counters the slow paths already keep (segments,
// pages, the depot, large mappings), read under their locks: nothing is
// added to the malloc/free fast paths. What that granularity means: a small
// block counts as in use from the moment it leaves its page until it goes
// back, so blocks sitting in thread caches count as in use; blocks in the
// depots and pools count as free (`pooled`). Medium blocks count with their
// whole slices, large blocks with their whole mapping (header included).
// The metrics variant's operation counters (`aethalloc_get_metrics_ext`)
// give the exact bytes the program holds.
import CAethAlloc  // the mallinfo structs' layout
import Synchronization

/// A snapshot of the heap, in bytes unless named otherwise.
struct HeapFigures {
    /// Segments mapped (4 MiB each), and those with a free slice.
    var segments = 0
    var segmentsWithFree = 0
    /// Bytes of slices in small-block pages, and in medium blocks.
    var pageBytes = 0
    var mediumBytes = 0
    /// Small blocks out of their pages, and the part of them in the depots
    /// and pools (free, waiting for a thread).
    var smallOutBytes = 0
    var pooledBytes = 0
    var pooledBlocks = 0
    /// Free slices still committed (purged later or by malloc_trim), and
    /// freed medium blocks kept whole for reuse (MediumCache).
    var dirtyBytes = 0
    var cachedRunBytes = 0
    /// Live large blocks and their mappings; freed spans kept for reuse.
    var largeBlocks = 0
    var largeBytes = 0
    var cachedSpans = 0
    var cachedSpanBytes = 0
    /// From the OS: mapped now, at the peak, given back so far.
    var mapped = 0
    var peakMapped = 0
    var returned = 0

    /// Bytes the program holds, at the granularity above.
    var inUse: Int { smallOutBytes - pooledBytes + mediumBytes + largeBytes }
    /// Free bytes the allocator holds for reuse: free space in pages, the
    /// depots and pools, committed free slices and cached spans.
    var free: Int { (pageBytes - smallOutBytes) + pooledBytes + dirtyBytes + cachedRunBytes + cachedSpanBytes }
    /// What malloc_trim(0) gives back at least: committed free slices,
    /// cached medium blocks and cached spans (it also drains the depots and
    /// empty pages).
    var trimmable: Int { dirtyBytes + cachedRunBytes + cachedSpanBytes }

    static func take() -> HeapFigures {
        Runtime.ensureInitialized()
        var f = HeapFigures()
        let seg = SegmentManager.figures()
        f.segments = seg.segments
        f.segmentsWithFree = seg.withFree
        f.mediumBytes = seg.medium
        f.pageBytes = seg.used - seg.medium - seg.cached
        f.cachedRunBytes = seg.cached
        f.dirtyBytes = seg.dirty
        for c in 0..<SizeClass.count {
            let block = Globals.classInfo(c).pointee.blockSize
            f.smallOutBytes += Central.outBlocks(c) * block
            let pooled = Variant.Cache.globalBlocks(c)
            f.pooledBlocks += pooled
            f.pooledBytes += pooled * block
        }
        // The depot count is read without the class lock: keep the figures
        // consistent with each other.
        f.pooledBytes = min(f.pooledBytes, f.smallOutBytes)
        f.largeBlocks = Globals.largeCount.pointee.load(ordering: .relaxed)
        f.largeBytes = Globals.largeLiveBytes.pointee.load(ordering: .relaxed)
        let cached = Large.cachedFigures()
        f.cachedSpans = cached.count
        f.cachedSpanBytes = cached.bytes
        f.mapped = OS.bytesMapped
        f.peakMapped = OS.peakBytesMapped
        f.returned = OS.bytesReturned
        return f
    }

    /// glibc's `struct mallinfo2` fields, ours:
    ///   arena     bytes of segments (small and medium blocks)
    ///   ordblks   segments with free slices
    ///   smblks    blocks waiting in the depots/pools (glibc: fastbin blocks)
    ///   hblks     large mappings (live and cached), hblkhd their bytes
    ///   usmblks   0, as in glibc
    ///   fsmblks   bytes waiting in the depots/pools
    ///   uordblks  bytes in use (`inUse`), fordblks free (`free`)
    ///   keepcost  what malloc_trim(0) returns at least (`trimmable`)
    var mallinfo2: AethMallinfo2 {
        AethMallinfo2(
            arena: segments * Tuning.segmentBytes, ordblks: segmentsWithFree, smblks: pooledBlocks,
            hblks: largeBlocks + cachedSpans, hblkhd: largeBytes + cachedSpanBytes, usmblks: 0,
            fsmblks: pooledBytes, uordblks: max(0, inUse), fordblks: max(0, free), keepcost: trimmable)
    }
}

// ---- mallopt -------------------------------------------------------------------

/// mallopt(3)'s parameters (glibc's values) and what each does here.
enum MallocOption {
    static let trimThreshold: Int32 = -1  // M_TRIM_THRESHOLD: the dirty budget's floor, bytes >= 0
    static let topPad: Int32 = -2  // M_TOP_PAD: accepted, ignored (no heap top to pad)
    static let mmapThreshold: Int32 = -3  // M_MMAP_THRESHOLD: largest medium block, bytes
    static let mmapMax: Int32 = -4  // M_MMAP_MAX: > 0 accepted and ignored; 0 refused
    static let checkAction: Int32 = -5  // M_CHECK_ACTION: accepted, ignored (misuse always aborts)
    static let perturb: Int32 = -6  // M_PERTURB: refused (would cost every malloc and free)
    static let arenaTest: Int32 = -7  // M_ARENA_TEST: accepted, ignored (no arenas)
    static let arenaMax: Int32 = -8  // M_ARENA_MAX: accepted, ignored (per-thread caches, no arenas)
    static let mxFast: Int32 = 1  // M_MXFAST: 0...160 accepted, ignored (no fastbins)

    /// 1 if accepted (and applied where it maps onto the design), 0 for an
    /// unknown parameter or a value out of range, as glibc returns.
    static func set(_ param: Int32, _ value: Int32) -> Int32 {
        Runtime.ensureInitialized()
        let state = Globals.process
        switch param {
        case trimThreshold:
            if value < 0 { return 0 }
            state.pointee.dirtyMinBytes = Int(value)
        case mmapThreshold:
            // A medium block is a run of a segment's slices after its metadata.
            if value < 0 || Int(value) > Tuning.segmentBytes - Segment.metadataBytes { return 0 }
            state.pointee.mediumMaxBytes = max(Int(value), Tuning.maxSmallBytes)
        case mmapMax:
            if value <= 0 { return 0 }
        case topPad, arenaTest, arenaMax, checkAction:
            if value < 0 && param != checkAction { return 0 }
        case mxFast:
            if value < 0 || value > 160 { return 0 }
        default:
            return 0
        }
        return 1
    }
}

// ---- malloc_stats and malloc_info --------------------------------------------------

enum HeapReport {
    /// malloc_stats(3): a short summary on stderr.
    static func printStats() {
        let f = HeapFigures.take()
        var head = LineBuffer.summary()
        head.append(" heap: in use ")
        head.appendBytes(f.inUse)
        head.append(", free ")
        head.appendBytes(f.free)
        head.append(", mapped ")
        head.appendBytes(f.mapped)
        head.append(" (peak ")
        head.appendBytes(f.peakMapped)
        head.append("), returned to the OS ")
        head.appendBytes(f.returned)
        head.append("\n")
        head.write()
        var small = LineBuffer.summary()
        small.append("   small (16 B - 64 KiB): ")
        small.appendDecimal(UInt(f.segments))
        small.append(" segments, pages ")
        small.appendBytes(f.pageBytes)
        small.append(", blocks out ")
        small.appendBytes(f.smallOutBytes)
        small.append(" of which pooled ")
        small.appendBytes(f.pooledBytes)
        small.append("\n")
        small.write()
        forEachClassInUse { c, out, pooled in
            var line = LineBuffer.summary()
            line.append("     class ")
            line.appendDecimal(UInt(Globals.classInfo(c).pointee.blockSize))
            line.append(" B: ")
            line.appendDecimal(UInt(out))
            line.append(" blocks out, ")
            line.appendDecimal(UInt(pooled))
            line.append(" pooled\n")
            line.write()
        }
        var rest = LineBuffer.summary()
        rest.append("   medium (64 KiB - 1 MiB): ")
        rest.appendBytes(f.mediumBytes)
        rest.append(", free committed slices ")
        rest.appendBytes(f.dirtyBytes)
        rest.append("; large: ")
        rest.appendDecimal(UInt(f.largeBlocks))
        rest.append(" blocks, ")
        rest.appendBytes(f.largeBytes)
        rest.append(", cached spans ")
        rest.appendDecimal(UInt(f.cachedSpans))
        rest.append(" (")
        rest.appendBytes(f.cachedSpanBytes)
        rest.append(")\n")
        rest.write()
    }

    /// Each class with blocks out of its pages: the class, those blocks, and
    /// how many of them wait in the depot or pool.
    private static func forEachClassInUse(_ body: (Int, Int, Int) -> Void) {
        for c in 0..<SizeClass.count {
            let out = Central.outBlocks(c)
            if out > 0 { body(c, out, min(out, Variant.Cache.globalBlocks(c))) }
        }
    }

    /// malloc_info(3): the figures as XML, written to `fd`.
    static func writeInfo(to fd: Int32) -> Bool {
        let f = HeapFigures.take()
        var ok = true
        func emit(_ line: inout LineBuffer) { if !line.write(to: fd) { ok = false } }
        var l = LineBuffer()
        l.append("<malloc version=\"aethalloc-1\" variant=\"")
        l.append(Variant.name)
        l.append("\">\n<sizes>\n")
        emit(&l)
        forEachClassInUse { c, out, pooled in
            var s = LineBuffer()
            s.append("  <size from=\"")
            s.appendDecimal(UInt(c == 0 ? 1 : Globals.classInfo(c - 1).pointee.blockSize + 1))
            s.append("\" to=\"")
            s.appendDecimal(UInt(Globals.classInfo(c).pointee.blockSize))
            s.append("\" out=\"")
            s.appendDecimal(UInt(out))
            s.append("\" pooled=\"")
            s.appendDecimal(UInt(pooled))
            s.append("\"/>\n")
            emit(&s)
        }
        var t = LineBuffer()
        t.append("</sizes>\n")
        t.appendTotal("segments", count: f.segments, size: f.segments * Tuning.segmentBytes)
        t.appendTotal("pages", count: nil, size: f.pageBytes)
        t.appendTotal("medium", count: nil, size: f.mediumBytes)
        emit(&t)
        var u = LineBuffer()
        u.appendTotal("large", count: f.largeBlocks, size: f.largeBytes)
        u.appendTotal("cached", count: f.cachedSpans, size: f.cachedSpanBytes)
        u.appendTotal("pooled", count: f.pooledBlocks, size: f.pooledBytes)
        emit(&u)
        var v = LineBuffer()
        v.appendSized("inuse", f.inUse)
        v.appendSized("free", f.free)
        v.appendSized("keepcost", f.trimmable)
        emit(&v)
        var w = LineBuffer()
        w.append("<system type=\"current\" size=\"")
        w.appendDecimal(UInt(max(0, f.mapped)))
        w.append("\"/>\n<system type=\"max\" size=\"")
        w.appendDecimal(UInt(max(0, f.peakMapped)))
        w.append("\"/>\n<system type=\"returned\" size=\"")
        w.appendDecimal(UInt(max(0, f.returned)))
        w.append("\"/>\n</malloc>\n")
        emit(&w)
        return ok
    }

    /// AETHALLOC_STATS=1 at exit in every variant: the heap figures (the
    /// metrics variant prints its operation counters before them).
    static func printExitSummary() {
        let f = HeapFigures.take()
        var line = LineBuffer.summary()
        line.append(field: "mapped_now", UInt64(max(0, f.mapped)))
        line.append(field: "peak_mapped", UInt64(max(0, f.peakMapped)))
        line.append(field: "returned", UInt64(max(0, f.returned)))
        line.append(field: "in_use", UInt64(max(0, f.inUse)))
        line.append(field: "free", UInt64(max(0, f.free)))
        line.append(" (bytes) background=")
        switch Reclaimer.state.pointee.load(ordering: .relaxed) {
        case Reclaimer.running: line.append("running")
        case Reclaimer.unavailable: line.append(Options.background == .off ? "off" : "unavailable")
        default: line.append("not-started")
        }
        if Variant.statsEnabled {
            line.append(field: "background_failures", Globals.metrics.pointee.backgroundUnavailable.load(ordering: .relaxed))
        }
        line.append("\n")
        line.write()
        if !Variant.statsEnabled {
            var note = LineBuffer.summary()
            note.append(" operation counters (allocs, frees, cache hits) need libaethalloc-metrics.so\n")
            note.write()
        }
    }
}

extension LineBuffer {
    /// A byte count as "N B", "N KiB", "N MiB" or "N GiB" (rounded down).
    mutating func appendBytes(_ n: Int) {
        let v = UInt(max(0, n))
        if v < 10 << 10 {
            appendDecimal(v)
            append(" B")
        } else if v < 10 << 20 {
            appendDecimal(v >> 10)
            append(" KiB")
        } else if v < 10 << 30 {
            appendDecimal(v >> 20)
            append(" MiB")
        } else {
            appendDecimal(v >> 30)
            append(" GiB")
        }
    }

    mutating func appendTotal(_ type: StaticString, count: Int?, size: Int) {
        append("<total type=\"")
        append(type)
        if let count {
            append("\" count=\"")
            appendDecimal(UInt(max(0, count)))
        }
        append("\" size=\"")
        appendDecimal(UInt(max(0, size)))
        append("\"/>\n")
    }

    mutating func appendSized(_ tag: StaticString, _ size: Int) {
        append("<")
        append(tag)
        append(" size=\"")
        appendDecimal(UInt(max(0, size)))
        append("\"/>\n")
    }
}
