// Variant.swift for libaethalloc-hardened.so: the default variant plus the
// checks of Hardening.swift (live-block bitmap, encoded free lists, zero on
// free, guard pages that are never skipped).
// What each seam means: Sources/AethAllocCore/Seams.swift.

enum Variant {
    static let name: StaticString = "hardened"
    /// Per-thread loaded/previous magazines and a lock-free depot per class.
    typealias Cache = MagazineCache
    static let statsEnabled = false
    static let hardened = true
    static let injectsFaults = false
}
