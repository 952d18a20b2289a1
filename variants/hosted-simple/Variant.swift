// Variant.swift for the hosted build of the simple policy: the core in
// normal Swift for the white-box tests of SimpleCache and GlobalPool
// (Tests/AethAllocSimpleTests), with statistics on and the test hooks of
// Platform.swift. Built by the package in Tests/packages/hosted-simple.
// What each seam means: Sources/AethAllocCore/Seams.swift.

enum Variant {
    static let name: StaticString = "hosted-simple"
    /// Per-thread free lists; half moves to the class's global pool in one CAS.
    typealias Cache = SimpleCache
    static let statsEnabled = true
    static let hardened = false
    static let injectsFaults = true
}
