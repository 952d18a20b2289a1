// Variant.swift for the hosted build: the core in normal Swift, for the
// white-box tests. It uses the default variant's seams.
//
// Every seam of the core is decided here, as constants and type aliases;
// the core reads each seam in one place:
//   - `Cache`: the caching policy (ThreadCache.swift, `CachePolicy`)
//   - `name`: what aethalloc_variant() returns

enum Variant {
    static let name: StaticString = "magazine"
    /// Per-thread loaded/previous magazines and a lock-free depot per class.
    typealias Cache = MagazineCache
}
