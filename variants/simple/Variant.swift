// Variant.swift for libaethalloc-simple.so: thread-local free lists with
// O(1) batch anti-hoarding into a global pool.
//
// Every seam of the core is decided here, as constants and a type alias, and
// the core reads each seam in one place:
//   - `Cache`: the caching policy (`CachePolicy`, ThreadCache.swift)
//   - `statsEnabled`: whether Stats.swift counts (compiled out when false)
//   - `unmapsEmptySegments`: whether a wholly free segment may be unmapped
//     (Segment.swift); a policy whose lock-free pool reads freed blocks needs
//     segments to stay mapped (purged, not unmapped)
//   - `hardened`: the checks of Hardening.swift (live-block bitmap, encoded
//     free lists, zero-on-free, guard pages)
//   - `name`: what aethalloc_variant() returns

enum Variant {
    static let name: StaticString = "simple"
    /// Per-thread free lists; half moves to the class's global pool in one CAS.
    typealias Cache = SimpleCache
    static let statsEnabled = false
    static let unmapsEmptySegments = false
    static let hardened = false
}
