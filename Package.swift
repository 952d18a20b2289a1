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
import Foundation
import PackageDescription

/// x86-64 only: `cmpxchg16b` for the 16-byte CAS of the tagged stacks
/// (aarch64 has `ldaxp/stlxp` and `casp` without a flag; variants/build-aarch64).
#if arch(x86_64)
let cx16: [String] = ["-mcx16"]
#else
let cx16: [String] = []
#endif
let swiftCX16 = cx16.flatMap { ["-Xcc", $0] }

/// Settings shared by every Embedded variant target (variants/build-aarch64
/// passes the same flags). Leaf functions keep no frame pointer: the malloc
/// and free fast paths are leaves ending in tail jumps, and a frame cost them
/// 3 instructions each.
let embeddedSwift: [SwiftSetting] = [
    .enableExperimentalFeature("Embedded"),
    .unsafeFlags(["-wmo", "-Xcc", "-momit-leaf-frame-pointer"] + swiftCX16),
]

/// The libc names bound to the core's own exported entry points, as
/// (libc name, core symbol): variants/c-aliases, the list's one home (the
/// aarch64 build and the export tests read it too).
let cAliases: [(name: String, target: String)] = {
    let path = "\(Context.packageDirectory)/variants/c-aliases"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
        fatalError("cannot read \(path)")
    }
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let name = fields.first, !name.hasPrefix("#") else { return nil }
        return (name, fields.count > 1 ? fields[1] : "aethalloc_\(name)")
    }
}()

func variantLinkerSettings() -> [LinkerSetting] {
    var flags: [String] = ["-use-ld=lld", "-Xlinker", "--version-script=\(Context.packageDirectory)/variants/exports.map"]
    for (name, target) in cAliases {
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
            cSettings: [.unsafeFlags(cx16)]),
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
            swiftSettings: [.unsafeFlags(swiftCX16)]),
        .testTarget(
            name: "AethAllocTests", dependencies: ["AethAllocHosted"], path: "Tests/AethAllocTests",
            swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
