// Black-box tests: the C programs in Tests/blackbox, each run under
// LD_PRELOAD of every built variant (`libaethalloc*.so` in .build/release or
// $AETHALLOC_LIB_DIR), and checks of each library's exports and dependencies.

import Foundation
import Testing

/// The C programs in Tests/blackbox (see the comment at the top of each).
enum BBProgram: String, CaseIterable, Sendable, Codable, CustomTestStringConvertible {
    /// Every exported function with glibc's semantics.
    case api
    /// Multi-threaded random allocation with cross-thread frees and realloc.
    case stress
    /// 5000 short-lived threads; RSS must stay bounded.
    case threadChurn = "thread_churn"
    /// fork() while other threads are in malloc; children allocate.
    case fork
    /// malloc/free in key and thread-local destructors, blocks of exited threads.
    case threadExit = "thread_exit"
    /// Allocation from .preinit_array and constructor(101), before the allocator's constructor.
    case initEarly = "init_early"
    /// dlopen/dlsym/dlerror (which allocate) early and in threads.
    case initDlsym = "init_dlsym"
    /// The metrics API: counters follow the program (metrics variant), zeros elsewhere.
    case metrics
    /// Producer/consumer handoff of 64-byte blocks; RSS falls once all is freed.
    case handoff
    /// The dirty budget and purge delay (AETHALLOC_DIRTY_PERCENT, AETHALLOC_PURGE_DELAY_MS).
    case purge

    var testDescription: String { rawValue }

    var arguments: [String] {
        switch self {
        case .stress: ["4", "300000", "6"]
        case .threadChurn: ["5000", "4"]
        case .fork: ["50", "3"]
        default: []
        }
    }
}

@Suite("Black-box C programs under LD_PRELOAD")
struct BlackBoxTests {
    @Test("A variant library was built")
    func variantsWereBuilt() {
        #expect(!BBVariant.found.isEmpty, "\(BBVariant.missingMessage)")
        for variant in BBVariant.found {
            #expect(!variant.expectedName.isEmpty, "unexpected library file name \(variant.testDescription)")
        }
    }

    @Test("C program passes under the preloaded variant", arguments: BBVariant.all, BBProgram.allCases)
    func program(_ variant: BBVariant, _ program: BBProgram) async throws {
        let library = try variant.libraryPath()
        let executable = try await BBBuild.executable(program.rawValue)
        let result = try await BBProcess.run(executable, program.arguments, preload: library)
        let passed = result.succeeded
        #expect(
            passed,
            "\(program.rawValue) failed under \(variant.testDescription): \(result.outcome) \(result.failLines.joined(separator: " "))\n\(result.report)"
        )
        // The program must really have run with this library as its allocator.
        let variantLine = result.stdoutLines.first { $0.hasPrefix("aethalloc_variant=") }
        #expect(
            variantLine == "aethalloc_variant=\(variant.expectedName)",
            "\(program.rawValue) did not run under \(variant.testDescription): it printed \(variantLine ?? "no variant line"), expected aethalloc_variant=\(variant.expectedName)\(passed ? "\n" + result.report : "")"
        )
        if program == .api {
            // Under AethAlloc nothing may be skipped and nothing may deviate.
            let noted = result.stdoutLines.filter { $0.hasPrefix("SKIP:") || $0.hasPrefix("DEVIATION:") }
            #expect(noted.isEmpty, "api skipped or deviated:\n\(noted.joined(separator: "\n"))")
            let strict = result.stdoutLines.contains { $0.hasPrefix("allocator_object=") && $0.hasSuffix("strict=1") }
            #expect(strict, "api did not run in strict mode (AethAlloc not the allocator?)")
        }
    }

    /// The glibc malloc family, exported by every variant with glibc's
    /// semantics: the libc names of variants/c-aliases, the list both builds
    /// link with.
    static func mallocFamily() throws -> Set<String> {
        let list = BBPaths.packageRoot.appendingPathComponent("variants/c-aliases")
        let text = try String(contentsOf: list, encoding: .utf8)
        let names = text.split(separator: "\n").compactMap { line -> String? in
            guard let name = line.split(separator: " ").first, !name.hasPrefix("#") else { return nil }
            return String(name)
        }
        guard names.contains("malloc") && names.contains("free") else {
            throw BBFailure("\(list.path) does not list malloc and free (parsed: \(names))")
        }
        return Set(names)
    }

    /// The functions declared in the public header include/aethalloc.h
    /// (aethalloc_variant, the metrics API, ...).
    static func headerFunctions() throws -> Set<String> {
        let header = BBPaths.packageRoot.appendingPathComponent("include/aethalloc.h")
        var text = try String(contentsOf: header, encoding: .utf8)
        // Drop comments and preprocessor lines, then take "name(" at the
        // start of each declaration.
        while let open = text.range(of: "/*") {
            let close = text.range(of: "*/", range: open.upperBound..<text.endIndex)
            text.replaceSubrange(open.lowerBound..<(close?.upperBound ?? text.endIndex), with: " ")
        }
        let code = text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("#") }
            .map { $0.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }
            .joined(separator: " ")
        var names: Set<String> = []
        for declaration in code.split(separator: ";") {
            guard let paren = declaration.firstIndex(of: "(") else { continue }
            let before = declaration[..<paren].reversed().drop { $0 == " " }
            let name = String(before.prefix { $0.isLetter || $0.isNumber || $0 == "_" }.reversed())
            if !name.isEmpty { names.insert(name) }
        }
        return names
    }

    /// The malloc family plus the header's functions, and nothing else: no
    /// Swift runtime or mangled Swift symbols, no helpers.
    static func exportedNames() throws -> Set<String> {
        let declared = try headerFunctions()
        guard declared.contains("aethalloc_variant") else {
            throw BBFailure("include/aethalloc.h does not declare aethalloc_variant (parsed: \(declared.sorted()))")
        }
        return try mallocFamily().union(declared)
    }

    @Test(
        "Exports exactly the C API", .enabled(if: BBProcess.find("nm") != nil, "nm (binutils) is not installed"),
        arguments: BBVariant.all)
    func exportsExactlyTheCAPI(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let result = try await BBProcess.run("nm", ["-D", "--defined-only", library])
        try Self.expectExactlyTheCAPI(nmDefinedOutput: result)
    }

    /// Checks the output of `nm -D --defined-only <library>` (any target's
    /// nm): no Swift symbols, and exactly the malloc family plus the public
    /// header's functions, each once.
    static func expectExactlyTheCAPI(nmDefinedOutput result: BBProcessOutput, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(result.succeeded, "nm failed\n\(result.report)", sourceLocation: sourceLocation)
        var names: [String] = []
        for line in result.stdoutLines where !line.isEmpty {
            // "<address> <type> <name>[@version]"
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let last = fields.last else { continue }
            var name = String(last)
            if let at = name.firstIndex(of: "@") { name = String(name[..<at]) }
            names.append(name)
        }
        let swiftish = names.filter { $0.contains("swift_") || $0.hasPrefix("$s") || $0.hasPrefix("$e") || $0.hasPrefix("_$s") }
        #expect(swiftish.isEmpty, "Swift symbols exported: \(swiftish.sorted())", sourceLocation: sourceLocation)
        let exported = Set(names)
        let expected = try Self.exportedNames()
        let missing = expected.subtracting(exported).sorted()
        let extra = exported.subtracting(expected).sorted()
        #expect(
            missing.isEmpty && extra.isEmpty,
            "exports differ from the malloc family plus include/aethalloc.h: missing \(missing), unexpected \(extra)\n\(result.stdoutText)",
            sourceLocation: sourceLocation
        )
        #expect(names.count == exported.count, "some names exported more than once:\n\(result.stdoutText)", sourceLocation: sourceLocation)
    }

    @Test(
        "Links only libc", .enabled(if: BBProcess.find("ldd") != nil, "ldd is not installed"), arguments: BBVariant.all)
    func linksOnlyLibc(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let result = try await BBProcess.run("ldd", [library])
        try #require(result.succeeded, "ldd failed\n\(result.report)")
        var libraries: [String] = []
        for line in result.stdoutLines {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, let first = trimmed.split(separator: " ").first else { continue }
            libraries.append((String(first) as NSString).lastPathComponent)
        }
        let allowed: Set<String> = ["linux-vdso.so.1", "libc.so.6"]
        let others = libraries.filter { !allowed.contains($0) && !$0.hasPrefix("ld-linux") }
        #expect(others.isEmpty, "depends on more than libc: \(others)\n\(result.stdoutText)")
        #expect(libraries.contains("libc.so.6"), "ldd does not list libc.so.6\n\(result.stdoutText)")
    }
}
