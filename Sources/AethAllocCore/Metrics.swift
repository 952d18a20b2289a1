// Metrics.swift: snapshots of the counters (Stats.swift) for the C API and
// the AETHALLOC_STATS=1 summary printed at exit.
import CAethAlloc
import Synchronization

struct MetricsSnapshot {
    var allocs: UInt64 = 0
    var frees: UInt64 = 0
    var cacheHits: UInt64 = 0
    var cacheMisses: UInt64 = 0
    var directAllocs: UInt64 = 0
    var bytesInUse: UInt64 = 0
    var peakBytesInUse: UInt64 = 0
    var bytesMapped: UInt64 = 0
    var bytesReturned: UInt64 = 0
    var depotTransfers: UInt64 = 0
    var threadsExited: UInt64 = 0

    /// The process totals, after adding the calling thread's own counters.
    static func take() -> MetricsSnapshot {
        if !Variant.statsEnabled { return MetricsSnapshot() }
        if OS.tlsState == ThreadState.live { Stats.flush(ThreadCache.current) }
        return totals()
    }

    /// The process totals as they stand.
    static func totals() -> MetricsSnapshot {
        var s = MetricsSnapshot()
        if !Variant.statsEnabled { return s }
        let g = Globals.metrics
        s.allocs = g.pointee.allocs.load(ordering: .relaxed)
        s.frees = g.pointee.frees.load(ordering: .relaxed)
        s.cacheHits = g.pointee.cacheHits.load(ordering: .relaxed)
        s.cacheMisses = g.pointee.cacheMisses.load(ordering: .relaxed)
        s.directAllocs = g.pointee.directAllocs.load(ordering: .relaxed)
        s.bytesInUse = UInt64(max(0, g.pointee.bytesInUse.load(ordering: .relaxed)))
        s.peakBytesInUse = UInt64(max(0, g.pointee.peakBytesInUse.load(ordering: .relaxed)))
        s.bytesMapped = g.pointee.bytesMapped.load(ordering: .relaxed)
        s.bytesReturned = g.pointee.bytesReturned.load(ordering: .relaxed)
        s.depotTransfers = g.pointee.depotTransfers.load(ordering: .relaxed)
        s.threadsExited = g.pointee.threadsExited.load(ordering: .relaxed)
        return s
    }

    func asExt() -> aethalloc_metrics_ext {
        var e = aethalloc_metrics_ext()
        e.size = UInt32(MemoryLayout<aethalloc_metrics_ext>.size)
        e.version = UInt32(AETHALLOC_METRICS_VERSION)
        e.enabled = Variant.statsEnabled ? 1 : 0
        e.class_count = UInt32(SizeClass.count)
        e.allocs = allocs
        e.frees = frees
        e.cache_hits = cacheHits
        e.cache_misses = cacheMisses
        e.direct_allocs = directAllocs
        e.bytes_in_use = bytesInUse
        e.peak_bytes_in_use = peakBytesInUse
        e.bytes_mapped = bytesMapped
        e.bytes_returned = bytesReturned
        e.depot_transfers = depotTransfers
        e.threads_exited = threadsExited
        withUnsafeMutableBytes(of: &e.class_size) { sizes in
            for c in 0..<SizeClass.count {
                sizes.storeBytes(of: UInt64(Globals.classInfo(c).pointee.blockSize), toByteOffset: c * 8, as: UInt64.self)
            }
        }
        if Variant.statsEnabled {
            withUnsafeMutableBytes(of: &e.class_allocs) { counts in
                for c in 0..<SizeClass.count {
                    counts.storeBytes(of: Stats.classAllocs(c).pointee.load(ordering: .relaxed), toByteOffset: c * 8, as: UInt64.self)
                }
            }
        }
        return e
    }

    /// The summary printed on stderr at exit when AETHALLOC_STATS=1.
    func printSummary() {
        var line = LineBuffer.summary()
        line.append(field: "allocs", allocs)
        line.append(field: "frees", frees)
        line.append(field: "cache_hits", cacheHits)
        line.append(field: "cache_misses", cacheMisses)
        line.append(field: "direct_allocs", directAllocs)
        line.append("\n")
        line.write()
        var bytes = LineBuffer.summary()
        bytes.append(field: "in_use", bytesInUse)
        bytes.append(field: "peak", peakBytesInUse)
        bytes.append(field: "mapped", bytesMapped)
        bytes.append(field: "returned", bytesReturned)
        bytes.append(field: "depot_transfers", depotTransfers)
        bytes.append(field: "threads_exited", threadsExited)
        bytes.append(" (bytes)\n")
        bytes.write()
    }
}

extension LineBuffer {
    /// A line starting "aethalloc[<variant>]".
    static func summary() -> LineBuffer {
        var line = LineBuffer()
        line.append("aethalloc[")
        line.append(Variant.name)
        line.append("]")
        return line
    }

    /// Appends " name=value".
    mutating func append(field name: StaticString, _ value: UInt64) {
        append(" ")
        append(name)
        append("=")
        appendDecimal(UInt(value))
    }
}

