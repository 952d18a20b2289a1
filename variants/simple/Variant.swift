// Variant.swift for libaethalloc-simple.so: thread-local free lists with
// O(1) batch anti-hoarding into a global pool.
// What each seam means: Sources/AethAllocCore/Seams.swift.

enum Variant {
    static let name: StaticString = "simple"
    /// Per-thread free lists; half moves to the class's global pool in one CAS.
    typealias Cache = SimpleCache
    static let statsEnabled = false
    static let hardened = false
    static let injectsFaults = false
}
