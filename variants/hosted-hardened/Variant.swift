// Variant.swift for the hosted build of the hardened seams: the core in
// normal Swift for the white-box tests of Hardening.swift
// (Tests/AethAllocHardenedTests), with the test hooks of Platform.swift.
// Built by the package in Tests/packages/hosted-hardened.
// What each seam means: Sources/AethAllocCore/Seams.swift.

enum Variant {
    static let name: StaticString = "hosted-hardened"
    /// Per-thread loaded/previous magazines and a lock-free depot per class.
    typealias Cache = MagazineCache
    static let statsEnabled = false
    static let hardened = true
    static let injectsFaults = true
}
