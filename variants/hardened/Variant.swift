// Variant.swift for libaethalloc-hardened.so: the default variant plus the
// checks of Hardening.swift. See variants/magazine/Variant.swift for what
// each seam means.
//   - every free, realloc and malloc_usable_size of a small block checks a
//     live-block bitmap: double frees and interior pointers abort
//   - page free lists are encoded with a per-process secret
//   - freed small blocks are zeroed; freed large blocks are unmapped
//   - guard pages after large blocks and between metadata and data

enum Variant {
    static let name: StaticString = "hardened"
    typealias Cache = MagazineCache
    static let statsEnabled = false
    static let unmapsEmptySegments = true
    static let hardened = true
}
