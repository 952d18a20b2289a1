// Misuse the default variants detect (Tests/blackbox/misuse.c): each case must
// end the process by SIGABRT with exactly one line on stderr naming the
// operation, the pointer and the misuse. Never silent corruption, never a
// crash elsewhere.

import Foundation
import Testing

struct MisuseCase: Sendable, CustomTestStringConvertible {
    var name: String
    var operation: String
    /// The reason the default variants print.
    var reason: String
    /// What the hardened variant prints instead, if it differs (it unmaps
    /// freed large blocks at once, so their address may be unmapped or reused).
    var hardenedReasons: [String]? = nil
    /// Detected only by the hardened variant.
    var hardenedOnly = false
    var testDescription: String { name }

    func reasons(for variant: String) -> [String]? {
        if variant == "hardened" { return hardenedReasons ?? [reason] }
        return hardenedOnly ? nil : [reason]
    }

    /// Every (variant, case) pair that applies: the hardened-only cases
    /// are paired with the hardened variant alone, so no test case runs
    /// that has nothing to check.
    static var pairs: [(BBVariant, MisuseCase)] {
        BBVariant.all.flatMap { variant in
            all.filter { $0.reasons(for: variant.expectedName) != nil }.map { (variant, $0) }
        }
    }

    static let all: [MisuseCase] = [
        MisuseCase(name: "foreign", operation: "free", reason: "not allocated by AethAlloc"),
        MisuseCase(name: "stack", operation: "free", reason: "not allocated by AethAlloc"),
        MisuseCase(name: "misaligned", operation: "free", reason: "misaligned: not a block start"),
        MisuseCase(name: "large-interior", operation: "free", reason: "not the start of a block"),
        MisuseCase(name: "medium-interior", operation: "free", reason: "not the start of a block"),
        MisuseCase(
            name: "large-double-free", operation: "free", reason: "block already freed",
            hardenedReasons: ["not allocated by AethAlloc", "not inside a live page"]),
        MisuseCase(
            name: "medium-double-free", operation: "free", reason: "block already freed",
            hardenedReasons: ["not allocated by AethAlloc", "not inside a live page"]),
        MisuseCase(
            name: "medium-double-free-uncached", operation: "free", reason: "not inside a live page",
            hardenedReasons: ["not allocated by AethAlloc", "not inside a live page"]),
        MisuseCase(
            name: "large-realloc-after-free", operation: "realloc", reason: "block already freed",
            hardenedReasons: ["not allocated by AethAlloc", "not inside a live page"]),
        MisuseCase(name: "usable-size-foreign", operation: "malloc_usable_size", reason: "not allocated by AethAlloc"),
        MisuseCase(
            name: "small-double-free", operation: "free", reason: "not a live block: double free or interior pointer",
            hardenedOnly: true),
        MisuseCase(
            name: "small-double-free-trim", operation: "free", reason: "freed twice (found when its page took it back)",
            hardenedReasons: ["not a live block: double free or interior pointer"]),
        MisuseCase(
            name: "small-double-free-apart", operation: "free", reason: "freed twice (found when its page took it back)",
            hardenedReasons: ["not a live block: double free or interior pointer"]),
        MisuseCase(
            name: "small-interior-trim", operation: "free", reason: "not a block start",
            hardenedReasons: ["not a live block: double free or interior pointer"]),
        MisuseCase(
            name: "small-interior", operation: "free", reason: "not a live block: double free or interior pointer",
            hardenedOnly: true),
        MisuseCase(
            name: "small-realloc-after-free", operation: "realloc", reason: "not a live block: freed or interior pointer",
            hardenedOnly: true),
    ]
}

@Suite("Detected misuse aborts with one clear line")
struct MisuseTests {
    // Small-block double frees and interior pointers are caught at once
    // only by the hardened variant (README: "What programs see"), so those
    // cases are generated for it alone (MisuseCase.pairs); the others catch
    // them when the blocks go back to their page (the "-trim" cases).
    @Test(arguments: MisuseCase.pairs)
    func misuseIsReported(_ variant: BBVariant, _ misuse: MisuseCase) async throws {
        let library = try variant.libraryPath()
        let reasons = try #require(misuse.reasons(for: variant.expectedName))
        let executable = try await BBBuild.executable("misuse")
        let result = try await BBProcess.run(executable, [misuse.name], preload: library, timeout: .seconds(30))
        #expect(result.signaled && result.status == SIGABRT, "expected SIGABRT\n\(result.report)")
        let pointer = try #require(
            result.stdoutLines.first { $0.hasPrefix("ptr=") }.map { String($0.dropFirst(4)) },
            "the program did not get as far as the misuse\n\(result.report)")
        let lines = result.stderrText.split(separator: "\n").map(String.init)
        let allowed = reasons.map {
            "aethalloc: \(misuse.operation)(): invalid pointer \(pointer) (\($0))"
        }
        #expect(lines.count == 1 && allowed.contains(lines[0]), "expected one of \(allowed)\n\(result.report)")
        #expect(!result.stdoutText.contains("survived"))
    }
}
