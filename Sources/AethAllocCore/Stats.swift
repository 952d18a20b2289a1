// Stats.swift: the statistics seam.
//
// Every counter the core keeps goes through these functions. When the
// variant compiles stats out (`Variant.statsEnabled == false`) each body is a
// constant-false branch and the optimiser removes the call entirely, so call
// sites carry no `#if` and the fast paths gain no instruction. The metrics
// variant (its own issue) gives them bodies.

enum RefillSource { case swap, depot, pages }

enum Stats {
    @inline(__always) static func cacheMiss(_ c: Int, refilledFrom: RefillSource) {}
    @inline(__always) static func depotTransfer() {}
    @inline(__always) static func segmentMapped(bytes: Int) {}
    @inline(__always) static func segmentUnmapped(bytes: Int) {}
    @inline(__always) static func largeMapped(bytes: Int) {}
    @inline(__always) static func largeUnmapped(bytes: Int) {}
    @inline(__always) static func metadataMapped(bytes: Int) {}
    @inline(__always) static func purged(bytes: Int) {}
    @inline(__always) static func threadExit(_ tc: RawPointer) {}
}
