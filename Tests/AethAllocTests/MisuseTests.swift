// Misuse the default variants detect (Tests/blackbox/misuse.c): each case must
// end the process by SIGABRT with exactly one line on stderr naming the
// operation, the pointer and the misuse. Never silent corruption, never a
// crash elsewhere.

import Foundation
import Testing

struct MisuseCase: Sendable, CustomTestStringConvertible {
    var name: String
    var operation: String
    var reason: String
    var testDescription: String { name }

    static let all: [MisuseCase] = [
        MisuseCase(name: "foreign", operation: "free", reason: "not allocated by AethAlloc"),
        MisuseCase(name: "stack", operation: "free", reason: "not allocated by AethAlloc"),
        MisuseCase(name: "misaligned", operation: "free", reason: "misaligned: not a block start"),
        MisuseCase(name: "large-interior", operation: "free", reason: "not the start of a block"),
        MisuseCase(name: "large-double-free", operation: "free", reason: "block already freed"),
        MisuseCase(name: "large-realloc-after-free", operation: "realloc", reason: "block already freed"),
        MisuseCase(name: "usable-size-foreign", operation: "malloc_usable_size", reason: "not allocated by AethAlloc"),
    ]
}

@Suite("Detected misuse aborts with one clear line")
struct MisuseTests {
    @Test(arguments: BBVariant.all, MisuseCase.all)
    func misuseIsReported(_ variant: BBVariant, _ misuse: MisuseCase) async throws {
        let library = try variant.libraryPath()
        let executable = try await BBBuild.executable("misuse")
        let result = try await BBProcess.run(executable, [misuse.name], preload: library, timeout: .seconds(30))
        #expect(result.signaled && result.status == SIGABRT, "expected SIGABRT\n\(result.report)")
        let pointer = try #require(
            result.stdoutLines.first { $0.hasPrefix("ptr=") }.map { String($0.dropFirst(4)) },
            "the program did not get as far as the misuse\n\(result.report)")
        let lines = result.stderrText.split(separator: "\n").map(String.init)
        #expect(lines == ["aethalloc: \(misuse.operation)(): invalid pointer \(pointer) (\(misuse.reason))"], "\(result.report)")
        #expect(!result.stdoutText.contains("survived"))
    }
}
