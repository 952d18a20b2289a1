// Variant.swift for libaethalloc-metrics.so: the default variant plus
// counters and live statistics.
// What each seam means: Sources/AethAllocCore/Seams.swift.

enum Variant {
    static let name: StaticString = "metrics"
    /// Per-thread loaded/previous magazines and a lock-free depot per class.
    typealias Cache = MagazineCache
    static let statsEnabled = true
    static let hardened = false
    static let injectsFaults = false
}
