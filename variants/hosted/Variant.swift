// Variant.swift for the hosted build: the core in normal Swift for the
// white-box tests. It takes the default variant's seams, with statistics on
// so the counters are exercised too. See variants/magazine/Variant.swift.

enum Variant {
    static let name: StaticString = "hosted"
    typealias Cache = MagazineCache
    static let statsEnabled = true
    static let unmapsEmptySegments = true
    static let hardened = false
}
