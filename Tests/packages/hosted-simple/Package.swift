// swift-tools-version: 6.1
//
// The hosted (normal Swift) build of the core with the simple variant's seams
// (variants/hosted-simple) and its white-box tests (Tests/AethAllocSimpleTests).
//
// A package of its own because SwiftPM links every test target of a package
// into one test binary, and two hosted cores cannot share one: each defines
// the same C symbols (`@c(aethalloc_malloc)`, `aethalloc_thread_exit`, the
// fork handlers, ...: "multiple definition" at link time), and they would
// share the one CAethAlloc shim's static storage (`aeth_root_storage`, the
// segment map, the TLS cache slot) and its callbacks. Here the core gets its
// own shim, storage and process. The targets are symlinks into the root
// package (SwiftPM refuses paths outside a package).
//
//   swift test --package-path Tests/packages/hosted-simple
//   swift test --package-path Tests/packages/hosted-simple --sanitize=thread
import PackageDescription

let package = Package(
    name: "AethAllocHostedSimple",
    targets: [
        .target(
            name: "CAethAlloc", dependencies: ["CAethAllocStatsFormat"], path: "Sources/CAethAlloc",
            cSettings: [.unsafeFlags(["-mcx16"])]),
        .target(name: "CAethAllocStatsFormat", path: "Sources/CAethAllocStatsFormat"),
        .target(
            name: "AethAllocHostedSimple", dependencies: ["CAethAlloc"], path: "Sources/AethAllocHostedSimple",
            swiftSettings: [.unsafeFlags(["-Xcc", "-mcx16"])]),
        .testTarget(
            name: "AethAllocSimpleTests", dependencies: ["AethAllocHostedSimple"], path: "Tests/AethAllocSimpleTests",
            swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
