// What programs and operators can ask the preloaded allocator: glibc's
// introspection API with our figures (Tests/blackbox/introspect.c checks
// them against what it allocated and against /proc/self/smaps_rollup), the
// AETHALLOC_STATS summary at exit, and strict option parsing, in every
// variant.
import Foundation
import Testing

@Suite("Introspection and options")
struct IntrospectionTests {
    @Test("mallinfo2, mallinfo, malloc_info, malloc_stats and mallopt answer with our figures",
          arguments: BBVariant.all, ["mallinfo", "info", "stats", "mallopt"])
    func glibcIntrospection(_ variant: BBVariant, _ check: String) async throws {
        let library = try variant.libraryPath()
        let executable = try await BBBuild.executable("introspect")
        let result = try await BBProcess.run(executable, [check], preload: library, timeout: .seconds(120))
        #expect(result.succeeded, "introspect \(check) under \(variant.testDescription)\n\(result.report)")
        if check == "stats" {
            // malloc_stats(): our summary on stderr, not glibc's empty arena.
            let lines = result.stderrText.split(separator: "\n").map(String.init)
            let prefix = "aethalloc[\(variant.expectedName)]"
            #expect(lines.first?.hasPrefix("\(prefix) heap: in use ") == true, "\(result.report)")
            #expect(lines.allSatisfy { $0.hasPrefix(prefix) }, "\(result.report)")
            #expect(lines.contains { $0.contains("medium (64 KiB - 1 MiB)") }, "\(result.report)")
            #expect(!result.stderrText.contains("Arena 0:"), "glibc's malloc_stats ran\n\(result.report)")
        }
    }

    /// A program's stderr under `environment`, preloading `variant`.
    func stderr(_ variant: BBVariant, _ environment: [String: String]) async throws -> [String] {
        let library = try variant.libraryPath()
        let executable = try await BBBuild.executable("introspect")
        // `stats` allocates and frees 100 MiB: the exit summary has figures.
        let result = try await BBProcess.run(
            executable, ["stats"], environment: environment, preload: library, timeout: .seconds(120))
        #expect(result.succeeded, "\(result.report)")
        return result.stderrText.split(separator: "\n").map(String.init).filter { !$0.contains("] heap:") && !$0.contains("]   ") }
    }

    @Test("AETHALLOC_STATS=1 prints the heap figures at exit in every variant", arguments: BBVariant.all)
    func statsAtExit(_ variant: BBVariant) async throws {
        let prefix = "aethalloc[\(variant.expectedName)]"
        for value in ["1", "true", "YES"] {
            let lines = try await stderr(variant, ["AETHALLOC_STATS": value])
            let heap = lines.first { $0.hasPrefix("\(prefix) mapped_now=") }
            #expect(heap != nil, "AETHALLOC_STATS=\(value): no heap line in \(lines)")
            if let heap {
                // peak_mapped covers the 100 MiB the program held.
                let peak = heap.split(separator: " ").first { $0.hasPrefix("peak_mapped=") }
                    .flatMap { Int($0.dropFirst("peak_mapped=".count)) } ?? 0
                #expect(peak >= 100 << 20, "\(heap)")
            }
            let counters = lines.contains { $0.hasPrefix("\(prefix) allocs=") }
            let note = lines.contains { $0.contains("operation counters (allocs, frees, cache hits) need libaethalloc-metrics.so") }
            if variant.expectedName == "metrics" {
                #expect(counters && !note, "\(lines)")
            } else {
                #expect(!counters && note, "\(lines)")
            }
        }
        for value in ["0", "false", "no"] {
            let lines = try await stderr(variant, ["AETHALLOC_STATS": value])
            #expect(lines.isEmpty, "AETHALLOC_STATS=\(value) printed \(lines)")
        }
    }

    @Test("Malformed options and unknown names get one line each, then the defaults", arguments: BBVariant.all)
    func strictOptions(_ variant: BBVariant) async throws {
        let lines = try await stderr(variant, [
            "AETHALLOC_PURGE_DELAY_MS": "abc", "AETHALLOC_DIRTY_PERCENT": "5000", "AETHALLOC_STATS": "maybe",
            "AETHALLOC_PURGE_DELAY": "5", "AETHALLOC_VERBOSE": "1", "AETHALLOC_MEDIUM_CACHE": "2",
        ])
        let expected = [
            "aethalloc: AETHALLOC_PURGE_DELAY_MS=abc is not valid (accepted: an integer from -1 to 86400000 (ms)); using 1000",
            "aethalloc: AETHALLOC_DIRTY_PERCENT=5000 is not valid (accepted: an integer from 0 to 1000 (%)); using 25",
            "aethalloc: AETHALLOC_STATS=maybe is not valid (accepted: 0, 1, true, false, yes or no); using 0",
            "aethalloc: AETHALLOC_MEDIUM_CACHE=2 is not valid (accepted: 0, 1, true, false, yes or no); using 1",
            "aethalloc: ignoring unknown variable AETHALLOC_PURGE_DELAY (not an AethAlloc option: see the README's Tuning table)",
            "aethalloc[\(variant.expectedName)] options: AETHALLOC_PURGE_DELAY_MS=1000 AETHALLOC_DIRTY_PERCENT=25 "
                + "AETHALLOC_MEDIUM_CACHE=1 AETHALLOC_STATS=0 AETHALLOC_BACKGROUND=auto statistics=\(variant.expectedName == "metrics" ? "on" : "off") "
                + "hardened=\(variant.expectedName == "hardened" ? "yes" : "no")",
        ]
        #expect(Set(lines) == Set(expected) && lines.count == expected.count, "stderr:\n\(lines.joined(separator: "\n"))")
        // Valid values, including the edges of the ranges, are taken silently.
        let quiet = try await stderr(variant, [
            "AETHALLOC_PURGE_DELAY_MS": "-1", "AETHALLOC_DIRTY_PERCENT": "1000", "AETHALLOC_STATS": "no",
            "AETHALLOC_MEDIUM_CACHE": "0",
            "AETHALLOC_STATS_DIR": "/nonexistent-but-only-read-by-metrics", "AETHALLOC_LIB_DIR": "x",
        ])
        #expect(quiet.filter { !$0.contains("AETHALLOC_STATS_DIR") }.isEmpty, "\(quiet)")
    }
}
