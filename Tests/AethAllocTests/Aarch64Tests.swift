// aarch64 Linux, under emulation: the four libraries that
// variants/build-aarch64 builds (ARMv8.0), and the black-box programs, the
// API fuzzer and the benches' quick mode cross-compiled with
// aarch64-linux-gnu-gcc, all run by qemu-aarch64-static (user-mode
// emulation of an aarch64 Linux process: the allocator's own code runs
// instruction by instruction, the kernel is the host's). Not hardware.
//
// The libraries are built once per test process into a scratch directory, so
// the tests always see the current sources; AETHALLOC_AARCH64_LIB_DIR points
// them at prebuilt ones instead. Without the cross tools or a qemu 8.0+ the
// whole suite is skipped, naming the Debian packages (.ci/run installs
// them; Arm64.emulator says why 8.0).
//
// CPUs: qemu's `max` (every extension, MTE included; the hardened variant
// tags there by default, Aarch64MTETests) unless a test says
// `cortex-a72` (ARMv8.0, no MTE, a Raspberry Pi 4).
// Page sizes: qemu's `-p N` makes the guest see AT_PAGESZ = N, as on an
// aarch64 kernel built with 16 or 64 KiB pages; the API program and the
// fuzzer run with each.

import Foundation
import Testing

enum Arm64 {
    static let compiler = "aarch64-linux-gnu-gcc"
    static let sysroot = "/usr/aarch64-linux-gnu"

    /// qemu's user mode for aarch64 guests, with its version.
    struct Emulator {
        let path: String
        let major: Int
        let minor: Int

        /// The candidates: $AETHALLOC_QEMU_AARCH64 (.ci/run points it at
        /// bookworm-backports' qemu-user, unpacked), then the names on PATH.
        static let installed: [Emulator] = {
            let named = ProcessInfo.processInfo.environment["AETHALLOC_QEMU_AARCH64"].map { [$0] } ?? []
            return (named + ["qemu-aarch64", "qemu-aarch64-static"]).compactMap { name in
                guard let path = BBProcess.find(name), let (major, minor) = version(of: path) else { return nil }
                return Emulator(path: path, major: major, minor: minor)
            }
        }()

        /// "qemu-aarch64 version 7.2.22 (Debian ...)" -> (7, 2).
        static func version(of path: String) -> (Int, Int)? {
            let process = Process()
            let pipe = Pipe()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = ["--version"]
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return nil }
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            guard let range = text.range(of: #"version [0-9]+\.[0-9]+"#, options: .regularExpression) else { return nil }
            let numbers = text[range].dropFirst("version ".count).split(separator: ".").compactMap { Int($0) }
            return numbers.count == 2 ? (numbers[0], numbers[1]) : nil
        }
    }

    /// The emulator for every run but the page-size ones: qemu 8.0 or later.
    /// qemu 7.2 (Debian bookworm's qemu-user-static) allocates a page's tag
    /// storage on the first tag access without a lock, so two threads
    /// tagging a fresh page at once lose one's tags (Tests/blackbox/
    /// qemu_tag_race.c loses hundreds of 16,384; 10.0.2 none), and tagged
    /// multi-threaded programs die of a tag-check fault that hardware would
    /// never raise. Aarch64MTETests.emulatorKeepsTags checks the one chosen.
    static let emulator: String? = Emulator.installed.first { $0.major >= 8 }?.path

    /// The emulator for the page-size runs (`-p`): qemu before 9.0, which
    /// disabled changing the guest's page size (bookworm's 7.2 has it).
    static let pageSizeEmulator: String? = Emulator.installed.first { $0.major < 9 }?.path

    /// Nil when the cross compiler, aarch64 glibc and a qemu 8.0+ are installed.
    static let missingTool: String? = {
        if BBProcess.find(compiler) == nil { return "\(compiler) (Debian: gcc-aarch64-linux-gnu)" }
        if !FileManager.default.fileExists(atPath: "\(sysroot)/include/stdlib.h") {
            return "aarch64 glibc headers (Debian: libc6-dev-arm64-cross)"
        }
        if emulator == nil {
            return "qemu-aarch64 8.0 or later (Debian: qemu-user from bookworm-backports; bookworm's 7.2 loses memory tags between threads)"
        }
        return nil
    }()
    static var toolsInstalled: Bool { missingTool == nil }
    static var pageSizeEmulatorInstalled: Bool { toolsInstalled && pageSizeEmulator != nil }

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

    /// The emulated CPUs: `max` has every extension qemu knows, MTE
    /// included (the hardened variant tags memory there); `cortex-a72` (a
    /// Raspberry Pi 4) is plain ARMv8.0 without MTE.
    static let withMTE = "max"
    static let withoutMTE = "cortex-a72"

    /// Runs an aarch64 program under qemu with `library` preloaded in the
    /// guest; `pageBytes` sets the guest's page size (AT_PAGESZ).
    static func run(
        _ exe: String, _ arguments: [String] = [], library: String?, environment: [String: String] = [:],
        cpu: String = withMTE, pageBytes: Int? = nil, timeout: Duration = .seconds(300)
    ) async throws -> BBProcessOutput {
        var options = ["-L", sysroot, "-cpu", cpu]
        // qemu 7.2 faults `dc zva` through a tagged pointer (reproduced
        // without the allocator: memset(tagged, 0, 8192) dies with SEGV_MAPERR),
        // and glibc's default memset zeroes with it; the a64fx memset
        // (SVE, which `max` has) does not. Real hardware ignores the tag
        // (top-byte ignore) there.
        if cpu == withMTE { options += ["-E", "GLIBC_TUNABLES=glibc.cpu.name=a64fx"] }
        if let pageBytes { options += ["-p", "\(pageBytes)"] }
        if let library { options += ["-E", "LD_PRELOAD=\(library)"] }
        let qemu = pageBytes == nil ? emulator : pageSizeEmulator
        guard let qemu else { throw BBFailure("no qemu for this run: \(missingTool ?? "qemu before 9.0 for -p")") }
        return try await BBProcess.run(qemu, options + [exe] + arguments, environment: environment, timeout: timeout)
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
    .enabled(if: Arm64.toolsInstalled, "needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user 8.0+ (bookworm-backports)"))
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
    /// trimmed and (hardened) guarded in whole pages. On the ARMv8.0 CPU:
    /// qemu 7.2 with `-p` kills any program that turns MTE on (a five-line
    /// program doing only the prctl dies on its next store). qemu 9.0 and
    /// later ignore `-p`, so these runs need a second, older qemu.
    @Test(
        "API program and fuzzer pass with 16 and 64 KiB pages",
        .enabled(if: Arm64.pageSizeEmulatorInstalled, "needs qemu-aarch64 before 9.0 for -p (Debian bookworm: qemu-user-static 7.2)"),
        arguments: Arm64.Variant.allCases, [16384, 65536])
    func pageSizes(_ variant: Arm64.Variant, _ pageBytes: Int) async throws {
        let library = try await Arm64.library(variant)
        let api = try await Arm64.run(try await Arm64.blackbox("api"), library: library, cpu: Arm64.withoutMTE, pageBytes: pageBytes)
        #expect(api.succeeded, "api with \(pageBytes)-byte pages: \(api.outcome) \(api.failLines.joined(separator: " "))\n\(api.report)")
        Self.expectVariant(api, variant)
        Self.expectStrictAPI(api)
        let fuzz = try await Arm64.run(
            try await Arm64.fuzzer(), ["seed=3", "iterations=10000"], library: library, cpu: Arm64.withoutMTE,
            pageBytes: pageBytes)
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
    /// (MisuseTests): SIGABRT and exactly one line naming the misuse; on a
    /// CPU with MTE (the hardened variant tags) and one without.
    @Test(
        "Detected misuse aborts with one clear line", arguments: Arm64.Variant.allCases, [Arm64.withMTE, Arm64.withoutMTE])
    func misuse(_ variant: Arm64.Variant, _ cpu: String) async throws {
        let library = try await Arm64.library(variant)
        let exe = try await Arm64.blackbox("misuse")
        let cases = MisuseCase.all.filter { $0.reasons(for: variant.rawValue) != nil }
        try #require(!cases.isEmpty)
        for misuse in cases {
            let reasons = try #require(misuse.reasons(for: variant.rawValue))
            let result = try await Arm64.run(exe, [misuse.name], library: library, cpu: cpu, timeout: .seconds(60))
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
        try expectBenchLine(result, bench: bench)
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

/// Memory tagging in the hardened variant (Tests/blackbox/mte.c) on qemu's
/// `max` CPU, which emulates MTE with synchronous and asynchronous checks.
/// Tagging is on by default there (synchronous); the cases below set
/// AETHALLOC_MTE=sync anyway unless they say otherwise. The multi-threaded
/// programs run tagged in Aarch64Tests (hardened variant on `max`).
@Suite(
    "aarch64 MTE in the hardened variant, under qemu -cpu max",
    .enabled(if: Arm64.toolsInstalled, "needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user 8.0+ (bookworm-backports)"))
struct Aarch64MTETests {
    static func mte(
        _ arguments: [String], environment: [String: String] = ["AETHALLOC_MTE": "sync"], cpu: String = Arm64.withMTE,
        program: String = "mte"
    ) async throws -> BBProcessOutput {
        let library = try await Arm64.library(.hardened)
        let exe = try await Arm64.blackbox(program)
        return try await Arm64.run(exe, arguments, library: library, environment: environment, cpu: cpu, timeout: .seconds(300))
    }

    /// The pointer a case printed ("ptr=0x..."), as a number.
    static func printedPointer(_ result: BBProcessOutput) -> UInt64? {
        guard let line = result.stdoutLines.first(where: { $0.hasPrefix("ptr=0x") }) else { return nil }
        let hex = line.dropFirst("ptr=0x".count).prefix { $0.isHexDigit }
        return UInt64(hex, radix: 16)
    }

    /// "fault si_code=<n> addr=0x...": the code and the address.
    static func fault(_ result: BBProcessOutput) -> (code: Int, address: UInt64?)? {
        guard let line = result.stdoutLines.first(where: { $0.hasPrefix("fault si_code=") }) else { return nil }
        let fields = line.split(separator: " ")
        guard fields.count >= 3, let code = Int(fields[1].dropFirst("si_code=".count)) else { return nil }
        let addr = fields[2].dropFirst("addr=".count)
        return (code, addr.hasPrefix("0x") ? UInt64(addr.dropFirst(2), radix: 16) : nil)
    }

    /// A use after free (read, write, and write once the block is out
    /// again under a new tag) and a one-byte overflow into the next block:
    /// each dies by SIGSEGV with SEGV_MTESERR (9) at the exact address. The
    /// x86-64 hardened variant catches none of these.
    @Test(
        "A bad access faults with SEGV_MTESERR at its address",
        arguments: ["uaf-read", "uaf-write", "uaf-reused", "overflow", "large-uaf-reused"])
    func faults(_ kind: String) async throws {
        let result = try await Self.mte([kind])
        #expect(result.stdoutLines.contains("tagging=sync tagged=1"), "tagging was not on\n\(result.report)")
        #expect(result.signaled && result.status == SIGSEGV, "expected death by SIGSEGV\n\(result.report)")
        #expect(!result.stdoutText.contains("survived"), "the access went through\n\(result.report)")
        let pointer = try #require(Self.printedPointer(result), "no ptr= line\n\(result.report)")
        let fault = try #require(Self.fault(result), "no fault line from the handler\n\(result.report)")
        #expect(fault.code == 9, "si_code \(fault.code), expected 9 (SEGV_MTESERR)\n\(result.report)")
        // *uaf-*: the access is at ptr + 8; overflow: at ptr (one past the block).
        let expected = kind == "overflow" ? pointer : pointer + 8
        #expect(fault.address == expected, "fault address \(fault.address.map { String($0, radix: 16) } ?? "nil"), expected \(String(expected, radix: 16))\n\(result.report)")
    }

    @Test("AETHALLOC_MTE=async: the fault is reported asynchronously (SEGV_MTEAERR)")
    func asynchronous() async throws {
        let result = try await Self.mte(["uaf-write"], environment: ["AETHALLOC_MTE": "async"])
        #expect(result.stdoutLines.contains("tagging=async tagged=1"), "async tagging was not on\n\(result.report)")
        #expect(result.signaled && result.status == SIGSEGV, "expected death by SIGSEGV\n\(result.report)")
        #expect(Self.fault(result)?.code == 8, "expected si_code 8 (SEGV_MTEAERR)\n\(result.report)")
    }

    /// AETHALLOC_MTE unset: synchronous tagging, as with `sync`. A value it
    /// does not know: one line naming the variable and the accepted values,
    /// then the default.
    @Test("Synchronous tagging by default, also after a bad AETHALLOC_MTE", arguments: ["unset", "bad"])
    func onByDefault(_ how: String) async throws {
        let result = try await Self.mte(["uaf-write"], environment: how == "unset" ? [:] : ["AETHALLOC_MTE": "sometimes"])
        #expect(result.stdoutLines.contains("tagging=sync tagged=1"), "tagging was not on\n\(result.report)")
        #expect(result.signaled && result.status == SIGSEGV, "expected death by SIGSEGV\n\(result.report)")
        #expect(Self.fault(result)?.code == 9, "expected si_code 9 (SEGV_MTESERR)\n\(result.report)")
        let complaint = Arm64.guestStderrLines(result).filter { $0.hasPrefix("aethalloc:") }
        if how == "unset" {
            #expect(complaint.isEmpty, "\(result.report)")
        } else {
            #expect(
                complaint == ["aethalloc: AETHALLOC_MTE=sometimes is not valid (accepted: sync, async or 0); using sync"],
                "\(result.report)")
        }
    }

    /// AETHALLOC_MTE=0, or a CPU without MTE: no tags, and the same accesses
    /// go through (the software checks remain; they do not see these).
    @Test("No tagging with AETHALLOC_MTE=0 or without MTE", arguments: ["0", "no-mte-cpu"])
    func off(_ how: String) async throws {
        let result: BBProcessOutput
        switch how {
        case "0": result = try await Self.mte(["uaf-write"], environment: ["AETHALLOC_MTE": "0"])
        default: result = try await Self.mte(["uaf-write"], environment: [:], cpu: Arm64.withoutMTE)
        }
        #expect(result.stdoutLines.contains("tagging=off tagged=0"), "tagging was on\n\(result.report)")
        #expect(!result.signaled && result.status == 3 && result.stdoutText.contains("survived"), "\(result.report)")
    }

    /// The emulator itself keeps tags that threads store at once into fresh
    /// pages (Tests/aarch64/qemu_tag_race.c; qemu 7.2 does not, Arm64.emulator).
    /// Without this, a tagged multi-threaded run that fails says nothing
    /// about the allocator.
    @Test("The emulator keeps memory tags stored by several threads at once")
    func emulatorKeepsTags() async throws {
        let exe = try await Arm64.executable(
            BBPaths.packageRoot.appendingPathComponent("Tests/aarch64/qemu_tag_race.c"),
            flags: ["-O2", "-Wall", "-march=armv8.5-a+memtag", "-pthread"], libraries: [])
        let result = try await Arm64.run(exe, library: nil)
        #expect(result.succeeded && result.stdoutText.hasPrefix("lost=0 "), "\(result.report)")
    }

    /// Misuse through free/realloc/malloc_usable_size still ends in one line:
    /// double and interior frees as without tagging, a stale pointer to a
    /// block that is out again (bitmap says live) by its tag.
    @Test(
        "Misuse with tagging on aborts with one clear line",
        arguments: [
            ("double-free", "free", "not a live block: double free or interior pointer"),
            ("interior-free", "free", "not a live block: double free or interior pointer"),
            ("stale-free", "free", "memory tag mismatch: a stale pointer to a block freed and handed out again"),
            ("stale-realloc", "realloc", "memory tag mismatch: a stale pointer to a block freed and handed out again"),
            ("stale-usable-size", "malloc_usable_size", "memory tag mismatch: a stale pointer to a block freed and handed out again"),
            ("large-stale-free", "free", "memory tag mismatch: a stale pointer to a block freed and handed out again"),
        ])
    func misuse(_ kind: String, _ operation: String, _ reason: String) async throws {
        let result = try await Self.mte([kind])
        #expect(result.stdoutLines.contains("tagging=sync tagged=1"), "tagging was not on\n\(result.report)")
        #expect(result.signaled && result.status == SIGABRT, "expected SIGABRT\n\(result.report)")
        let line = try #require(result.stdoutLines.first { $0.hasPrefix("ptr=") }, "no ptr= line\n\(result.report)")
        let expected = "aethalloc: \(operation)(): invalid pointer \(line.dropFirst(4)) (\(reason))"
        #expect(Arm64.guestStderrLines(result) == [expected], "expected exactly: \(expected)\n\(result.report)")
    }

    /// The API program with tagging on: every function, with glibc's
    /// semantics, on tagged pointers (mte.c checks that tagging is on in the
    /// same setting).
    @Test("API program passes with tagging on")
    func apiWithTagging() async throws {
        let result = try await Self.mte([], program: "api")
        #expect(result.succeeded, "\(result.failLines.joined(separator: " "))\n\(result.report)")
        Aarch64Tests.expectVariant(result, .hardened)
        Aarch64Tests.expectStrictAPI(result)
    }

    /// Tagged pointers work everywhere the API takes one; neighbours differ.
    /// The same for large blocks up to 1 MiB; above, no tag.
    @Test("Tagged pointers: usable size, realloc, free, calloc; neighbours never share a tag", arguments: ["tagged-api", "large-tagged-api"])
    func taggedAPI(_ kind: String) async throws {
        let result = try await Self.mte([kind])
        #expect(result.stdoutLines.contains("tagging=sync tagged=1"), "tagging was not on\n\(result.report)")
        #expect(result.succeeded && result.stdoutLines.contains("ok"), "\(result.failLines.joined(separator: " "))\n\(result.report)")
    }
}
