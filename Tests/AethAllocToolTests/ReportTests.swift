import Foundation
import FoundationXML
import Testing

@testable import AethAllocToolCore

/// A fixed, small results structure whose numbers are checked by hand.
func sampleResults() -> BenchResults {
    func run(_ a: String, _ n: Int, ops: Double? = nil, seconds: Double? = nil, rss: Int, p99: Double? = nil) -> BenchRun {
        var m: [String: Double] = [:]
        if let ops { m["ops_per_sec"] = ops }
        if let seconds { m["seconds"] = seconds }
        if let p99 { m["p99_ns"] = p99 }
        return BenchRun(allocator: a, run: n, ok: true, wallSeconds: 0.5, cpuSeconds: 0.4, maxRSSKB: rss, metrics: m,
                        params: ["size": .number(64)])
    }
    let names = ["glibc", "jemalloc", "magazine"]
    let churn = Scenario(bench: "packet_churn", threads: nil, runs: [
        run("glibc", 1, ops: 100, rss: 10240, p99: 900), run("jemalloc", 1, ops: 200, rss: 30720, p99: 800),
        run("magazine", 1, ops: 440, rss: 15360, p99: 700),
        run("glibc", 2, ops: 120, rss: 10240, p99: 1100), run("jemalloc", 2, ops: 240, rss: 30720, p99: 800),
        run("magazine", 2, ops: 440, rss: 15360, p99: 700),
    ], allocators: names)
    let startup = Scenario(bench: "startup", threads: nil, runs: [
        run("glibc", 1, seconds: 2, rss: 10240), run("jemalloc", 1, seconds: 1, rss: 10240), run("magazine", 1, seconds: 4, rss: 10240),
    ], allocators: names)
    let larson = Scenario(bench: "larson", threads: 2, runs: [
        run("glibc", 1, ops: 50, rss: 20480),
        BenchRun(allocator: "jemalloc", run: 1, ok: false, error: "signal 11 (SIGSEGV)", wallSeconds: 0.1, cpuSeconds: 0.1, maxRSSKB: 5000),
        run("magazine", 1, ops: 100, rss: 10240),
    ], allocators: names)
    return BenchResults(
        startedAt: "2025-01-01T00:00:00Z", finishedAt: "2025-01-01T00:10:00Z", invocation: ["aethalloc-cli", "bench"],
        config: BenchConfig(quick: true, runs: 2, threads: [2], timeoutSeconds: 600, compileCommand: "cc -O2 -pthread -o BIN FILE -lm"),
        system: SystemInfo(cpuModel: "Test CPU <&>", logicalCPUs: 4, memTotalKB: 16 * 1024 * 1024, kernel: "Linux 6.1", os: "Debian"),
        allocators: [
            AllocatorInfo(name: "glibc", kind: .system, library: nil, version: "2.36"),
            AllocatorInfo(name: "jemalloc", kind: .peer, library: "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", version: "libjemalloc2 5.3.0-1"),
            AllocatorInfo(name: "magazine", kind: .variant, library: "/pkg/.build/release/libaethalloc.so", version: nil),
        ],
        scenarios: [churn, startup, larson])
}

/// Counts elements; fails on malformed XML.
final class SVGChecker: NSObject, XMLParserDelegate {
    var elements: [String: Int] = [:]
    var texts: [String] = []
    var current = ""
    var failed = false
    func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { failed = true }
    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        elements[name, default: 0] += 1
        current = ""
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) { current += string }
    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "text" { texts.append(current) }
    }

    static func check(_ svg: String) -> (ok: Bool, checker: SVGChecker, error: String?) {
        let p = XMLParser(data: Data(svg.utf8))
        let c = SVGChecker()
        p.delegate = c
        // On Linux parse() can return true after an error: check all three.
        let ok = p.parse() && p.parserError == nil && !c.failed
        return (ok, c, p.parserError.map { "\($0)" })
    }
}

@Suite struct ReportTests {
    @Test func scenarioMedians() {
        let r = sampleResults()
        let churn = r.scenarios[0]
        #expect(churn.primaryMetric == "ops_per_sec")
        #expect(churn.higherIsBetter)
        #expect(churn.medians("ops_per_sec") == [110, 220, 440])
        #expect(churn.summaries[0].stats["ops_per_sec"] == Summary(median: 110, min: 100, max: 120))
        #expect(churn.summaries[0].stats["p99_ns"]?.median == 1000)
        let startup = r.scenarios[1]
        #expect(startup.primaryMetric == "seconds")
        #expect(!startup.higherIsBetter)
        let larson = r.scenarios[2]
        #expect(larson.summaries[1].okRuns == 0)
        #expect(larson.summaries[1].failedRuns == 1)
        #expect(larson.summaries[1].error == "signal 11 (SIGSEGV)")
        #expect(larson.title == "larson · 2 threads")
    }

    @Test func summaryGeometricMeans() {
        let rows = Report.summary(sampleResults())
        #expect(rows.map(\.allocator) == ["glibc", "jemalloc", "magazine"])
        // glibc speed ratios 4, 2, 2 -> 16^(1/3); RSS 1, 1, 2 -> 2^(1/3)
        #expect(abs(rows[0].speed! - pow(16, 1.0 / 3)) < 1e-9)
        #expect(abs(rows[0].rss! - pow(2, 1.0 / 3)) < 1e-9)
        // jemalloc failed larson: speed 2, 1; RSS 3, 1.
        #expect(abs(rows[1].speed! - 2.0.squareRoot()) < 1e-9)
        #expect(abs(rows[1].rss! - 3.0.squareRoot()) < 1e-9)
        #expect(rows[1].scenarios == 2)
        #expect(rows[1].failedRuns == 1)
        // magazine speed 1, 4, 1; RSS 1.5, 1, 1.
        #expect(abs(rows[2].speed! - pow(4, 1.0 / 3)) < 1e-9)
        #expect(abs(rows[2].rss! - pow(1.5, 1.0 / 3)) < 1e-9)
    }

    @Test func markdown() {
        let md = Report.markdown(sampleResults())
        for fragment in [
            "# AethAlloc benchmark report", "## Method", "## Machine", "## Allocators", "## Summary", "## Scenarios",
            "interleaved (glibc → jemalloc → magazine", "| CPU | Test CPU <&> (4 logical CPUs) |", "| Memory | 16.0 GiB |",
            "| jemalloc | `/usr/lib/x86_64-linux-gnu/libjemalloc.so.2` | libjemalloc2 5.3.0-1 |",
            "| Allocator | Speed (geomean × best) | Peak RSS (geomean × lowest) | Scenarios | Failed runs |",
            "| glibc | 2.52 | 1.26 | 3/3 | 0 |", "| jemalloc | 1.41 | 1.73 | 2/3 | 1 |", "| magazine | 1.59 | 1.14 | 3/3 | 0 |",
            "### packet_churn", "Parameters: `size=64`",
            "| Allocator | ops/s (median, higher is better) | min–max | vs best | peak RSS | min–max | vs lowest | p99 | wall | CPU | runs |",
            "| glibc | 110 | 100–120 | 4.00 | 10.0 MiB | 10.0–10.0 MiB | **1.00** | 1.00 µs |",
            "| jemalloc | 220 | 200–240 | 2.00 | 30.0 MiB | 30.0–30.0 MiB | 3.00 |",
            "| magazine | **440** | 440–440 | **1.00** | 15.0 MiB | 15.0–15.0 MiB | 1.50 |",
            "### startup", "time (median, lower is better)", "| jemalloc | **1.00 s** | 1.00–1.00 s | **1.00** |", "| magazine | 4.00 s | 4.00–4.00 s | 4.00 |",
            "### larson · 2 threads", "| jemalloc | FAILED: signal 11 (SIGSEGV) |", "| glibc | 50.0 | 50.0–50.0 | 2.00 | 20.0 MiB | 20.0–20.0 MiB | 2.00 |",
            "![packet_churn](packet_churn.svg)", "![larson](larson.svg)",
        ] {
            #expect(md.contains(fragment), "missing: \(fragment)")
        }
    }

    @Test func svgIsWellFormed() {
        let r = sampleResults()
        for (bench, scenarios) in Report.byBench(r.scenarios) {
            let svg = Report.svg(bench: bench, scenarios: scenarios)
            let (ok, c, err) = SVGChecker.check(svg)
            #expect(ok, "\(bench): \(err ?? "")")
            #expect(c.elements["svg"] == 1)
            // Background + legend swatches + one bar per successful allocator.
            let bars = scenarios.flatMap(\.summaries).filter { $0.okRuns > 0 }.count
            #expect(c.elements["rect"] == 1 + 3 + bars, "\(bench)")
            #expect(c.texts.contains { $0.contains(bench) })
            for name in ["glibc", "jemalloc", "magazine"] { #expect(c.texts.contains(name)) }
        }
        // The checker does reject malformed XML.
        #expect(!SVGChecker.check("<svg><rect></svg>").ok)
        // Hostile names are escaped.
        var s = r.scenarios[0]
        s.summaries[0].allocator = "a<b>&\"c'"
        let (ok, c, _) = SVGChecker.check(Report.svg(bench: "x<&>", scenarios: [s]))
        #expect(ok)
        #expect(c.texts.contains("a<b>&\"c'"))
    }

    @Test func niceAxis() {
        #expect(Report.niceStep(440) == 100)
        #expect(Report.niceStep(1) == 0.2)
        #expect(Report.niceStep(23e6) == 5e6)
        #expect(Report.chartFile(for: "a b/c") == "a_b_c.svg")
    }

    @Test func resultsRoundTripAndReportOnly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aeth-report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = sampleResults()
        let data = try r.encoded()
        #expect(try BenchResults.decode(data) == r)
        try data.write(to: URL(fileURLWithPath: dir + "/results.json"))

        let console = Console.capturing()
        let code = AethAllocTool.main(["aethalloc-cli", "bench", "--report-only", dir], console: console)
        #expect(code == 0, "\(console.capturedErr)")
        for f in ["report.md", "packet_churn.svg", "startup.svg", "larson.svg"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/" + f), "\(f)")
        }
        let md = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        #expect(md == Report.markdown(r))
        #expect(console.capturedOut.contains("jemalloc"))

        // A missing results.json is one clear line.
        let c2 = Console.capturing()
        #expect(AethAllocTool.main(["aethalloc-cli", "bench", "--report-only", dir + "/nope"], console: c2) == 1)
        #expect(c2.capturedErr.contains("no results.json in"))
    }
}
