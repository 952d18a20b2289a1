// swift-tools-version: 6.1
//
// AethAlloc: one Embedded Swift allocator core, compiled once per variant.
//
// Layout
//   Sources/AethAllocCore/   the core (not a target by itself)
//   Sources/CAethAlloc/      the C platform shim: syscalls, TLS, errno
//   variants/<name>/         one target per variant: a `Core` symlink to the
//                            core plus `Variant.swift`, the variant's seams
//   variants/exports.map     linker version script: only the C API is exported
//   include/aethalloc.h      the public C header
//
// Each variant target is compiled in Embedded mode into its own `lib<name>.so`
// that links only libc. `variants/hosted` compiles the same core in normal
// Swift for the white-box tests. The hosted builds of the simple policy and
// of the hardened seams (`variants/hosted-simple`, `variants/hosted-hardened`)
// are packages of their own, Tests/packages/hosted-*: all test targets of a
// package link into one test binary, where two hosted cores would define the
// same C symbols and share the one C shim's storage.
import PackageDescription

/// Settings shared by every Embedded variant target.
let embeddedSwift: [SwiftSetting] = [
    .enableExperimentalFeature("Embedded"),
    .unsafeFlags(["-wmo", "-Xcc", "-mcx16"]),
]

/// The libc names bound to the core's own exported entry points.
let cAliases: [String] = [
    "malloc", "free", "calloc", "realloc", "reallocarray", "aligned_alloc",
    "posix_memalign", "memalign", "valloc", "pvalloc", "malloc_usable_size",
    "free_sized", "free_aligned_sized", "cfree", "malloc_trim",
    "mallinfo2", "mallinfo", "malloc_stats", "malloc_info", "mallopt",
    "__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc",
    "__libc_memalign", "__libc_valloc", "__libc_pvalloc", "__posix_memalign",
]

let cAliasTargets: [String: String] = [
    "cfree": "aethalloc_free", "__libc_malloc": "aethalloc_malloc", "__libc_free": "aethalloc_free",
    "__libc_calloc": "aethalloc_calloc", "__libc_realloc": "aethalloc_realloc",
    "__libc_memalign": "aethalloc_memalign", "__libc_valloc": "aethalloc_valloc",
    "__libc_pvalloc": "aethalloc_pvalloc", "__posix_memalign": "aethalloc_posix_memalign",
]

func variantLinkerSettings() -> [LinkerSetting] {
    var flags: [String] = ["-use-ld=lld", "-Xlinker", "--version-script=\(Context.packageDirectory)/variants/exports.map"]
    for name in cAliases {
        let target = cAliasTargets[name] ?? "aethalloc_\(name)"
        flags += ["-Xlinker", "--defsym=\(name)=\(target)"]
    }
    // Release libraries carry no DWARF: valgrind 3.19 cannot read the DWARF 5
    // this toolchain emits and gives up on any program that preloads them.
    return [.unsafeFlags(flags), .unsafeFlags(["-Xlinker", "--strip-debug"], .when(configuration: .release))]
}

/// An Embedded variant target: `variants/<dir>` with the compile-time seams in
/// its `Variant.swift`.
func variant(_ target: String, dir: String) -> Target {
    .target(
        name: target, dependencies: ["CAethAlloc"], path: "variants/\(dir)",
        swiftSettings: embeddedSwift, linkerSettings: variantLinkerSettings())
}

let package = Package(
    name: "AethAlloc",
    products: [
        .library(name: "aethalloc", type: .dynamic, targets: ["AethAllocMagazine"]),
        .library(name: "aethalloc-simple", type: .dynamic, targets: ["AethAllocSimple"]),
        .library(name: "aethalloc-metrics", type: .dynamic, targets: ["AethAllocMetrics"]),
        .library(name: "aethalloc-hardened", type: .dynamic, targets: ["AethAllocHardened"]),
        .executable(name: "aethalloc-cli", targets: ["AethAllocTool"]),
    ],
    targets: [
        .target(
            name: "CAethAlloc", dependencies: ["CAethAllocStatsFormat"], path: "Sources/CAethAlloc",
            cSettings: [.unsafeFlags(["-mcx16"])]),
        // The layout of the per-process statistics file, shared by the
        // metrics variant (writer) and aethalloc-cli (reader).
        .target(name: "CAethAllocStatsFormat", path: "Sources/CAethAllocStatsFormat"),
        variant("AethAllocMagazine", dir: "magazine"),
        variant("AethAllocSimple", dir: "simple"),
        variant("AethAllocMetrics", dir: "metrics"),
        variant("AethAllocHardened", dir: "hardened"),
        // The `aethalloc-cli` command: run, ab, bench, stat, metrics.
        .executableTarget(name: "AethAllocTool", dependencies: ["AethAllocToolCore"], path: "Sources/aethalloc"),
        .target(name: "AethAllocToolCore", dependencies: ["CAethAllocStatsFormat"], path: "Sources/AethAllocToolCore"),
        .testTarget(name: "AethAllocToolTests", dependencies: ["AethAllocToolCore"], path: "Tests/AethAllocToolTests"),
        // The same core in normal Swift, for white-box tests.
        .target(
            name: "AethAllocHosted", dependencies: ["CAethAlloc"], path: "variants/hosted",
            swiftSettings: [.unsafeFlags(["-Xcc", "-mcx16"])]),
        .testTarget(
            name: "AethAllocTests", dependencies: ["AethAllocHosted"], path: "Tests/AethAllocTests",
            swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
