// The platform boundary (Sources/AethAllocCore/Platform.swift): every call
// the core makes into the C shim, and so into libc and the kernel, goes
// through `OS` in that one file. That is what lets the hosted build inject
// faults into every OS call, and what a port to another platform replaces.
import Foundation
import Testing

@Suite("Platform boundary")
struct PlatformBoundaryTests {
    static let core = BBPaths.packageRoot.appendingPathComponent("Sources/AethAllocCore")

    /// Lines of `file` that call a shim function (`aeth_...(`), comments
    /// left out.
    static func shimCalls(in file: URL) throws -> [String] {
        let text = try String(contentsOf: file, encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().compactMap { i, line in
            let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            return code.range(of: #"\baeth_[a-z_0-9]*\("#, options: .regularExpression) != nil
                ? "\(file.lastPathComponent):\(i + 1): \(line.trimmingCharacters(in: .whitespaces))" : nil
        }
    }

    @Test("only Platform.swift calls the C shim")
    func onlyPlatformCallsTheShim() throws {
        let files = try FileManager.default.contentsOfDirectory(at: Self.core, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "swift" }
        try #require(files.count > 10, "the core's sources were not found in \(Self.core.path)")
        var outside: [String] = []
        var inside = 0
        for file in files {
            let calls = try Self.shimCalls(in: file)
            if file.lastPathComponent == "Platform.swift" { inside += calls.count } else { outside += calls }
        }
        #expect(outside.isEmpty, "calls into the shim outside Platform.swift:\n\(outside.joined(separator: "\n"))")
        #expect(inside >= 20, "Platform.swift makes only \(inside) shim calls: is the check looking at the right text?")
    }
}
