// aarch64 Linux, under emulation: the four libraries that
// variants/build-aarch64 builds (ARMv8.0), and the black-box programs, the
// API fuzzer and the benches' quick mode cross-compiled with
// aarch64-linux-gnu-gcc, all run by qemu-aarch64-static (user-mode
// emulation of an aarch64 Linux process: the allocator's own code runs
// instruction by instruction, the kernel is the host's). Not hardware.
//
// The libraries are built once per test process into a scratch directory, so
// the tests always see the current sources; AETHALLOC_AARCH64_LIB_DIR points
// them at prebuilt ones instead. Without the cross tools or qemu the whole
// suite is skipped, naming the Debian packages (.ci/run installs them).
//
// Page sizes: qemu's `-p N` makes the guest see AT_PAGESZ = N, as on an
// aarch64 kernel built with 16 or 64 KiB pages; the API program and the
// fuzzer run with each.

import Foundation
import Testing

enum Arm64 {
    static let compiler = "aarch64-linux-gnu-gcc"
    static let emulator = "qemu-aarch64-static"
    static let sysroot = "/usr/aarch64-linux-gnu"

    /// Nil when the cross compiler, aarch64 glibc and qemu are all installed.
    static let missingTool: String? = {
        if BBProcess.find(compiler) == nil { return "\(compiler) (Debian: gcc-aarch64-linux-gnu)" }
        if !FileManager.default.fileExists(atPath: "\(sysroot)/include/stdlib.h") {
            return "aarch64 glibc headers (Debian: libc6-dev-arm64-cross)"
        }
        if BBProcess.find(emulator) == nil { return "\(emulator) (Debian: qemu-user-static)" }
        return nil
    }()
    static var toolsInstalled: Bool { missingTool == nil }

    /// The four libraries, as `variants/build-aarch64` names them.
    enum Variant: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case magazine, simple, metrics, hardened
        var file: String { self == .magazine ? "libaethalloc.so" : "libaethalloc-\(rawValue).so" }
        var testDescription: String { "aarch64 \(file)" }
    }

    /// The directory holding the four libraries: built once per test process.
    static func libraryDirectory() async throws -> String {
        try await BBOnce.shared.value("aarch64:libraries") {
            if let dir = ProcessInfo.processInfo.environment["AETHALLOC_AARCH64_LIB_DIR"], !dir.isEmpty { return dir }
            guard let swiftc = BBProcess.find("swiftc") else {
                throw BBFailure("swiftc is not on PATH: variants/build-aarch64 needs the Swift toolchain")
            }
            let out = try BBScratch.directory("aarch64-lib").path
            let script = BBPaths.packageRoot.appendingPathComponent("variants/build-aarch64").path
            let result = try await BBProcess.run(
                script, [], environment: ["AETHALLOC_AARCH64_OUT": out, "SWIFTC": swiftc], timeout: .seconds(1500))
            guard result.succeeded else { throw BBFailure("variants/build-aarch64 failed:\n\(result.report)") }
            return out
        }
    }

    static func library(_ variant: Variant) async throws -> String {
        let path = try await libraryDirectory() + "/" + variant.file
        guard FileManager.default.fileExists(atPath: path) else { throw BBFailure("\(path) was not built") }
        return path
    }

    /// Cross-compiles a C program once per test process.
    static func executable(_ source: URL, flags: [String], libraries: [String]) async throws -> String {
        try await BBOnce.shared.value("aarch64:\(source.path)") {
            let exe = try BBScratch.directory("aarch64-bin").appendingPathComponent(source.deletingPathExtension().lastPathComponent).path
            let result = try await BBProcess.run(compiler, flags + ["-o", exe, source.path] + libraries, timeout: .seconds(300))
            guard result.succeeded else { throw BBFailure("\(compiler) \(source.lastPathComponent) failed:\n\(result.report)") }
            return exe
        }
    }

    /// A black-box program (Tests/blackbox) or the fuzzer (Tests/fuzz), with
    /// the flags BBBuild uses for the host.
    static func blackbox(_ name: String) async throws -> String {
        try await executable(BBPaths.blackboxSources.appendingPathComponent("\(name).c"), flags: BBBuild.flags, libraries: ["-ldl"])
    }
    static func fuzzer() async throws -> String {
        try await executable(
            BBPaths.packageRoot.appendingPathComponent("Tests/fuzz/api_fuzz.c"), flags: BBBuild.flags, libraries: ["-ldl"])
    }
    static func bench(_ name: String) async throws -> String {
        try await executable(
            BenchSources.directory.appendingPathComponent("\(name).c"), flags: ["-O2", "-pthread", "-Wall"], libraries: ["-lm"])
    }

    /// Runs an aarch64 program under qemu with `library` preloaded in the
    /// guest; `pageBytes` sets the guest's page size (AT_PAGESZ).
    static func run(
        _ exe: String, _ arguments: [String] = [], library: String?, environment: [String: String] = [:],
        pageBytes: Int? = nil, timeout: Duration = .seconds(300)
    ) async throws -> BBProcessOutput {
        var options = ["-L", sysroot]
        if let pageBytes { options += ["-p", "\(pageBytes)"] }
        if let library { options += ["-E", "LD_PRELOAD=\(library)"] }
        return try await BBProcess.run(emulator, options + [exe] + arguments, environment: environment, timeout: timeout)
    }

    /// stderr without qemu's own report of a fatal guest signal.
    static func guestStderrLines(_ result: BBProcessOutput) -> [String] {
        result.stderrText.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("qemu: ") }
    }
}

/// The black-box programs run on aarch64, with arguments scaled down for
/// emulation (the same checks, fewer rounds).
enum Arm64Program: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case api, stress, fork
    case threadExit = "thread_exit"

    var testDescription: String { rawValue }
    var arguments: [String] {
        switch self {
        case .stress: ["4", "50000", "2"]
        case .fork: ["10", "2"]
        default: []
        }
    }
}

@Suite(
    "aarch64 under qemu: the libraries, the black-box programs, the fuzzer and the benches",
    .enabled(if: Arm64.toolsInstalled, "needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user-static"))
struct Aarch64Tests {
    @Test("Links only libc and the loader", arguments: Arm64.Variant.allCases)
    func linksOnlyLibc(_ variant: Arm64.Variant) async throws {
        let library = try await Arm64.library(variant)
        let result = try await BBProcess.run("aarch64-linux-gnu-readelf", ["-d", "-h", library])
        try #require(result.succeeded, "readelf failed\n\(result.report)")
        #expect(result.stdoutText.contains("AArch64"), "not an aarch64 object\n\(result.stdoutText)")
        let needed = result.stdoutLines.filter { $0.contains("(NEEDED)") }.compactMap { line -> String? in
            guard let open = line.firstIndex(of: "["), let close = line.lastIndex(of: "]") else { return nil }
            return String(line[line.index(after: open)..<close])
        }
        #expect(needed.contains("libc.so.6"), "no libc.so.6 in NEEDED\n\(result.stdoutText)")
        let others = needed.filter { $0 != "libc.so.6" && !$0.hasPrefix("ld-linux-aarch64.so") }
        #expect(others.isEmpty, "depends on more than libc and the loader: \(others)")
    }

    @Test("Exports exactly the C API", arguments: Arm64.Variant.allCases)
    func exportsExactlyTheCAPI(_ variant: Arm64.Variant) async throws {
        let library = try await Arm64.library(variant)
        let result = try await BBProcess.run("aarch64-linux-gnu-nm", ["-D", "--defined-only", library])
        try BlackBoxTests.expectExactlyTheCAPI(nmDefinedOutput: result)
    }

    /// ARMv8.0: no LSE atomics (cas*, ld<op>*, swp*, st<op>*), which a
    /// Cortex-A72 (Raspberry Pi 4) does not have; the 16-byte CAS is an
    /// ldaxp/stlxp loop.
    @Test("Plain ARMv8.0 code: no LSE instructions", arguments: Arm64.Variant.allCases)
    func noLSE(_ variant: Arm64.Variant) async throws {
        let library = try await Arm64.library(variant)
        let result = try await BBProcess.run("aarch64-linux-gnu-objdump", ["-d", "--no-show-raw-insn", library])
        try #require(result.succeeded, "objdump failed\n\(result.report)")
        let lse = #"^\s*[0-9a-f]+:\s+(casp?|ldadd|ldclr|ldeor|ldset|ld[su]max|ld[su]min|swp|stadd|stclr|steor|stset|st[su]max|st[su]min)(a|l|al)?(b|h)?\s"#
        let found = result.stdoutLines.filter { $0.range(of: lse, options: .regularExpression) != nil }
        #expect(found.isEmpty, "LSE instructions (ARMv8.1+):\n\(found.prefix(10).joined(separator: "\n"))")
        let pairs = result.stdoutLines.filter { $0.contains("ldaxp") }
        #expect(!pairs.isEmpty, "no ldaxp: where did the 16-byte compare-exchange go?")
    }

    @Test("C program passes", arguments: Arm64.Variant.allCases, Arm64Program.allCases)
    func program(_ variant: Arm64.Variant, _ program: Arm64Program) async throws {
        let library = try await Arm64.library(variant)
        let exe = try await Arm64.blackbox(program.rawValue)
        let result = try await Arm64.run(exe, program.arguments, library: library)
        #expect(result.succeeded, "\(program.rawValue): \(result.outcome) \(result.failLines.joined(separator: " "))\n\(result.report)")
        Self.expectVariant(result, variant)
        if program == .api { Self.expectStrictAPI(result) }
    }

    /// AT_PAGESZ 16 and 64 KiB, as on aarch64 kernels built with those
    /// pages: valloc/pvalloc align to the page, large blocks are rounded,
    /// trimmed and (hardened) guarded in whole pages.
    @Test("API program and fuzzer pass with 16 and 64 KiB pages", arguments: Arm64.Variant.allCases, [16384, 65536])
    func pageSizes(_ variant: Arm64.Variant, _ pageBytes: Int) async throws {
        let library = try await Arm64.library(variant)
        let api = try await Arm64.run(try await Arm64.blackbox("api"), library: library, pageBytes: pageBytes)
        #expect(api.succeeded, "api with \(pageBytes)-byte pages: \(api.outcome) \(api.failLines.joined(separator: " "))\n\(api.report)")
        Self.expectVariant(api, variant)
        Self.expectStrictAPI(api)
        let fuzz = try await Arm64.run(
            try await Arm64.fuzzer(), ["seed=3", "iterations=10000"], library: library, pageBytes: pageBytes)
        #expect(fuzz.succeeded, "api_fuzz with \(pageBytes)-byte pages: \(fuzz.outcome)\n\(fuzz.report)")
        Self.expectVariant(fuzz, variant)
    }

    @Test("API fuzzer agrees with its shadow model", arguments: Arm64.Variant.allCases)
    func fuzz(_ variant: Arm64.Variant) async throws {
        let library = try await Arm64.library(variant)
        let args = ["seed=1", "iterations=20000"]
        let result = try await Arm64.run(try await Arm64.fuzzer(), args, library: library)
        #expect(result.succeeded, "api_fuzz \(args.joined(separator: " ")): \(result.outcome) \(result.failLines.joined(separator: " "))\n\(result.report)")
        Self.expectVariant(result, variant)
        #expect(result.stdoutLines.contains { $0.hasPrefix("api_fuzz: ") }, "api_fuzz printed no summary\n\(result.report)")
    }

    /// Tests/blackbox/misuse.c, every case that applies to the variant
    /// (MisuseTests): SIGABRT and exactly one line naming the misuse.
    @Test("Detected misuse aborts with one clear line", arguments: Arm64.Variant.allCases)
    func misuse(_ variant: Arm64.Variant) async throws {
        let library = try await Arm64.library(variant)
        let exe = try await Arm64.blackbox("misuse")
        let cases = MisuseCase.all.filter { $0.reasons(for: variant.rawValue) != nil }
        try #require(!cases.isEmpty)
        for misuse in cases {
            let reasons = try #require(misuse.reasons(for: variant.rawValue))
            let result = try await Arm64.run(exe, [misuse.name], library: library, timeout: .seconds(60))
            #expect(result.signaled && result.status == SIGABRT, "\(misuse.name): expected SIGABRT\n\(result.report)")
            let pointer = result.stdoutLines.first { $0.hasPrefix("ptr=") }.map { String($0.dropFirst(4)) }
            #expect(pointer != nil, "\(misuse.name): the program did not get as far as the misuse\n\(result.report)")
            let allowed = reasons.map { "aethalloc: \(misuse.operation)(): invalid pointer \(pointer ?? "?") (\($0))" }
            let lines = Arm64.guestStderrLines(result)
            #expect(lines.count == 1 && allowed.contains(lines[0]), "\(misuse.name): expected one of \(allowed)\n\(result.report)")
        }
    }

    @Test("Benchmark quick run prints its JSON line", arguments: Arm64.Variant.allCases, BenchSources.names)
    func benchQuick(_ variant: Arm64.Variant, _ bench: String) async throws {
        let library = try await Arm64.library(variant)
        let result = try await Arm64.run(try await Arm64.bench(bench), ["quick=1"], library: library)
        #expect(result.succeeded, "\(result.report)")
        let lines = result.stdoutLines.filter { !$0.isEmpty }
        try #require(lines.count == 1, "expected one JSON line\n\(result.report)")
        let object = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        let json = try #require(object, "not a JSON object: \(lines[0])")
        #expect(json["bench"] as? String == bench)
        let metrics = try #require(json["metrics"] as? [String: Any], "no metrics: \(lines[0])")
        #expect(!metrics.isEmpty)
    }

    static func expectVariant(_ result: BBProcessOutput, _ variant: Arm64.Variant, sourceLocation: SourceLocation = #_sourceLocation) {
        let line = result.stdoutLines.first { $0.hasPrefix("aethalloc_variant=") }
        #expect(
            line == "aethalloc_variant=\(variant.rawValue)",
            "did not run under \(variant.testDescription): printed \(line ?? "no variant line")\n\(result.report)",
            sourceLocation: sourceLocation)
    }

    /// api.c under AethAlloc: strict mode, nothing skipped or deviating.
    static func expectStrictAPI(_ result: BBProcessOutput, sourceLocation: SourceLocation = #_sourceLocation) {
        let noted = result.stdoutLines.filter { $0.hasPrefix("SKIP:") || $0.hasPrefix("DEVIATION:") }
        #expect(noted.isEmpty, "api skipped or deviated:\n\(noted.joined(separator: "\n"))", sourceLocation: sourceLocation)
        let strict = result.stdoutLines.contains { $0.hasPrefix("allocator_object=") && $0.hasSuffix("strict=1") }
        #expect(strict, "api did not run in strict mode (AethAlloc not the allocator?)", sourceLocation: sourceLocation)
    }
}
