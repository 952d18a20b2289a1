// Variant.swift for the hosted build: the core in normal Swift for the
// white-box tests, with the default variant's seams, statistics on (so the
// counters are exercised too) and the test hooks of Platform.swift.
// What each seam means: Sources/AethAllocCore/Seams.swift.

enum Variant {
    static let name: StaticString = "hosted"
    /// Per-thread loaded/previous magazines and a lock-free depot per class.
    typealias Cache = MagazineCache
    static let statsEnabled = true
    static let hardened = false
    static let injectsFaults = true
}
