// Smoke test of the benchmark suite: every program in benches/ built with
// the same command `aethalloc-cli bench` uses, run with `quick=1` under each
// built variant; it must exit 0 and print exactly one JSON line that follows
// the contract in benches/README.md. Performance is never asserted here.

import Foundation
import Testing

enum BenchSources {
    static let directory = BBPaths.packageRoot.appendingPathComponent("benches")

    /// The bench names: every benches/*.c.
    static let names: [String] = {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return files.filter { $0.hasSuffix(".c") }.map { String($0.dropLast(2)) }.sorted()
    }()

    static func executable(_ name: String) async throws -> String {
        try await BBOnce.shared.value("bench:\(name)") {
            let dir = try BBScratch.directory("bench-bin")
            let exe = dir.appendingPathComponent(name).path
            let source = directory.appendingPathComponent("\(name).c").path
            let result = try await BBProcess.run(
                BBBuild.compiler, ["-O2", "-pthread", "-Wall", "-o", exe, source, "-lm"], timeout: .seconds(300))
            guard result.succeeded else { throw BBFailure("compiling benches/\(name).c failed:\n\(result.report)") }
            return exe
        }
    }
}

@Suite("Benchmark programs: quick runs under every variant")
struct BenchSmokeTests {
    @Test func everyScenarioHasAProgram() {
        let expected = [
            "alloc_free_loop", "fragmentation", "kv_store", "larson", "multithread_churn", "packet_churn",
            "producer_consumer", "realloc_growth", "remote_free", "rss_reclaim", "small_objects", "tail_latency",
            "thread_churn", "xthread_stress",
        ]
        #expect(Set(expected).isSubset(of: Set(BenchSources.names)), "benches/: \(BenchSources.names)")
    }

    @Test(arguments: BBVariant.all, BenchSources.names)
    func quickRun(_ variant: BBVariant, _ bench: String) async throws {
        let library = try variant.libraryPath()
        let exe = try await BenchSources.executable(bench)
        let result = try await BBProcess.run(exe, ["quick=1"], preload: library, timeout: .seconds(120))
        let json = try expectBenchLine(result, bench: bench)
        #expect(json["params"] is [String: Any])
        let metrics = json["metrics"] as? [String: Any] ?? [:]
        for (key, value) in metrics {
            #expect(value is NSNumber, "metric \(key) is not a number: \(value)")
        }
    }

    /// A bad argument is a one-line error and exit status 2, not a number.
    @Test func unknownParameterIsRejected() async throws {
        let exe = try await BenchSources.executable("alloc_free_loop")
        let result = try await BBProcess.run(exe, ["no_such_param=1"])
        #expect(!result.signaled && result.status == 2, "\(result.report)")
        #expect(result.stdoutText.isEmpty)
    }
}

/// A bench run's contract (benches/README.md): success, exactly one JSON
/// object on stdout, naming the bench, with a non-empty `metrics` object.
/// Returns the object.
@discardableResult
func expectBenchLine(_ result: BBProcessOutput, bench: String) throws -> [String: Any] {
    #expect(result.succeeded, "\(result.report)")
    let lines = result.stdoutLines.filter { !$0.isEmpty }
    try #require(lines.count == 1, "expected one JSON line\n\(result.report)")
    let object = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
    let json = try #require(object, "not a JSON object: \(lines[0])")
    #expect(json["bench"] as? String == bench)
    let metrics = try #require(json["metrics"] as? [String: Any], "no metrics: \(lines[0])")
    #expect(!metrics.isEmpty)
    return json
}
