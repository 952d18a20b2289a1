// The background reclaimer (Sources/AethAllocCore/Reclaim.swift), black-box on
// every variant (Tests/blackbox/reclaim.c): memory goes back while the
// program makes no call; the thread exists only past the start threshold;
// fork, exit and 10,000 thread lifetimes while it purges; a refused
// pthread_create falls back to the inline policy silently;
// AETHALLOC_BACKGROUND=0 keeps the inline policy; a bad value is one line.
import Foundation
import Testing

@Suite("Background reclaim")
struct ReclaimTests {
    @Test("reclaim.c scenario passes", arguments: BBVariant.all,
          ["idle-large", "idle-medium", "small", "refused", "fork", "exit", "threads"])
    func scenario(_ variant: BBVariant, _ name: String) async throws {
        let library = try variant.libraryPath()
        let executable = try await BBBuild.executable("reclaim")
        let result = try await BBProcess.run(executable, [name], preload: library, timeout: .seconds(180))
        #expect(result.succeeded, "reclaim \(name) under \(variant.testDescription)\n\(result.report)")
        #expect(result.stdoutLines.contains { $0.hasPrefix("reclaim: \(name): ") }, "\(result.report)")
        // Nothing on stderr: a refused thread in particular is silent.
        #expect(result.stderrText.isEmpty, "\(result.report)")
    }

    @Test("AETHALLOC_BACKGROUND=0 keeps the inline policy: no thread, spans stay cached while idle",
          arguments: BBVariant.all.filter { $0.expectedName != "hardened" })
    func backgroundOff(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let executable = try await BBBuild.executable("reclaim")
        let result = try await BBProcess.run(
            executable, ["idle-large", "off"], environment: ["AETHALLOC_BACKGROUND": "0"], preload: library,
            timeout: .seconds(60))
        #expect(result.succeeded, "\(result.report)")
        #expect(result.stderrText.isEmpty, "\(result.report)")
    }

    @Test("A reclaimer the OS refuses is counted by the metrics variant, and said by no other")
    func refusedIsCounted() async throws {
        let executable = try await BBBuild.executable("reclaim")
        for variant in BBVariant.all {
            let result = try await BBProcess.run(
                executable, ["refused"], environment: ["AETHALLOC_STATS": "1"], preload: try variant.libraryPath(),
                timeout: .seconds(60))
            #expect(result.succeeded, "\(result.report)")
            let prefix = "aethalloc[\(variant.expectedName)]"
            let heap = result.stderrText.split(separator: "\n").first { $0.hasPrefix("\(prefix) mapped_now=") }
            let line = try #require(heap, "no heap line: \(result.report)")
            // The hardened variant never starts one (it does not cache spans).
            if variant.expectedName != "hardened" {
                #expect(line.contains("background=unavailable"), "\(line)")
            }
            if variant.expectedName == "metrics" {
                #expect(line.hasSuffix("background_failures=1"), "\(line)")
            } else {
                #expect(!line.contains("background_failures"), "\(line)")
            }
        }
    }

    @Test("A bad AETHALLOC_BACKGROUND is one line naming the accepted values, then auto", arguments: BBVariant.all)
    func badValue(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let executable = try await BBBuild.executable("reclaim")
        let result = try await BBProcess.run(
            executable, ["small"], environment: ["AETHALLOC_BACKGROUND": "sometimes"], preload: library,
            timeout: .seconds(60))
        #expect(result.succeeded, "\(result.report)")
        #expect(
            result.stderrText
                == "aethalloc: AETHALLOC_BACKGROUND=sometimes is not valid (accepted: auto, 1 or 0); using auto\n",
            "\(result.report)")
    }
}
