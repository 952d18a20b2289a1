// Variant.swift for libaethalloc.so: the default variant.
// What each seam means: Sources/AethAllocCore/Seams.swift.

enum Variant {
    static let name: StaticString = "magazine"
    /// Per-thread loaded/previous magazines and a lock-free depot per class.
    typealias Cache = MagazineCache
    static let statsEnabled = false
    static let hardened = false
    static let injectsFaults = false
}
