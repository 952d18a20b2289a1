import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One C bench program.
public struct BenchProgram: Equatable, Sendable {
    public var name: String
    public var source: String
    public var multiThreaded: Bool
    public var binary: String?

    public init(name: String, source: String, multiThreaded: Bool, binary: String? = nil) {
        self.name = name
        self.source = source
        self.multiThreaded = multiThreaded
        self.binary = binary
    }
}

/// What a bench printed.
public struct BenchOutput: Equatable, Sendable {
    public var bench: String?
    public var params: [String: JSONValue]?
    public var metrics: [String: Double]
}

public enum BenchCommand {
    /// Benches whose thread count is not their `threads` parameter.
    public static let threadKnobs: [String: String] = [
        // `threads` is the total number of short-lived threads there; the
        // concurrency is `concurrent`.
        "thread_churn": "concurrent=N",
        // Producers and consumers: N threads in all.
        "producer_consumer": "producers=N/2 consumers=N-N/2",
    ]

    /// The arguments that run `bench` at `n` threads.
    public static func threadArguments(bench: String, threads n: Int) -> [String] {
        switch bench {
        case "thread_churn": return ["concurrent=\(n)"]
        case "producer_consumer":
            let p = max(1, n / 2)
            return ["producers=\(p)", "consumers=\(max(1, n - p))"]
        default: return ["threads=\(n)"]
        }
    }

    /// The thread counts of `counts` that give `bench` arguments of their
    /// own, each scenario under the largest count that gives it:
    /// producer_consumer needs a producer and a consumer, so 1 thread runs
    /// the same 1+1 scenario as 2 and is left out.
    public static func distinctThreadCounts(bench: String, _ counts: [Int]) -> [Int] {
        var seen: [[String]] = []
        var kept: [Int] = []
        for n in counts {
            let args = threadArguments(bench: bench, threads: n)
            if let i = seen.firstIndex(of: args) {
                kept[i] = max(kept[i], n)
            } else {
                seen.append(args)
                kept.append(n)
            }
        }
        return kept
    }

    public static func compileCommand(binary: String, source: String) -> [String] {
        ["cc", "-O2", "-pthread", "-o", binary, source, "-lm"]
    }

    /// Whether a bench runs at each thread count: the ones in `threadKnobs`,
    /// and any whose source declares a `threads` parameter (so a bench
    /// without one, kv_store say, is never passed `threads=`, which it would
    /// reject).
    public static func isMultiThreaded(name: String, source: String) -> Bool {
        threadKnobs[name] != nil || source.contains("\"threads\"") || source.contains("\"threads=")
    }

    /// The benches in `dir`, by name.
    public static func discover(in dir: String) throws -> [BenchProgram] {
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else {
            throw ToolError("no bench directory \(dir)")
        }
        let sources = files.filter { $0.hasSuffix(".c") }.sorted()
        if sources.isEmpty { throw ToolError("no benches (*.c) in \(dir)") }
        return sources.map { f in
            let path = dir + "/" + f
            let name = String(f.dropLast(2))
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            return BenchProgram(name: name, source: path, multiThreaded: isMultiThreaded(name: name, source: text))
        }
    }

    /// Reads the single JSON line of a bench's stdout.
    public static func parseOutput(_ stdout: Data) -> Result<BenchOutput, ToolError> {
        struct Line: Decodable {
            var bench: String?
            var params: [String: JSONValue]?
            var metrics: [String: JSONValue]?
        }
        let text = String(decoding: stdout, as: UTF8.self)
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { $0.hasPrefix("{") }
        guard let line = lines.first else { return .failure(ToolError("no JSON line on stdout")) }
        if lines.count > 1 { return .failure(ToolError("\(lines.count) JSON lines on stdout, expected one")) }
        guard let decoded = try? JSONDecoder().decode(Line.self, from: Data(line.utf8)) else {
            return .failure(ToolError("bad JSON on stdout: \(line.prefix(80))"))
        }
        guard let m = decoded.metrics else { return .failure(ToolError("the JSON line has no \"metrics\"")) }
        var metrics: [String: Double] = [:]
        for (k, v) in m { if case .number(let d) = v, d.isFinite { metrics[k] = d } }
        return .success(BenchOutput(bench: decoded.bench, params: decoded.params, metrics: metrics))
    }

    static func utcStamp(_ date: Date, forPath: Bool) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = forPath ? "yyyy-MM-dd'T'HH-mm-ss'Z'" : "yyyy-MM-dd'T'HH:mm:ss'Z'"
        return f.string(from: date)
    }

    /// Copies the library of every variant and library-path entry into
    /// `dir` (one copy per distinct file) and returns the allocators with
    /// those copies to preload, and a map from each original to its copy.
    /// Peers and glibc are system packages and are run in place.
    static func snapshotLibraries(_ allocators: [Allocator], into dir: String) throws -> ([Allocator], [String: String]) {
        var copies: [String: String] = [:]
        var result: [Allocator] = []
        let fm = FileManager.default
        if allocators.contains(where: { $0.kind == .variant || $0.kind == .custom }) {
            try? fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        for var a in allocators {
            if let lib = a.library, a.kind == .variant || a.kind == .custom {
                if copies[lib] == nil {
                    var name = (lib as NSString).lastPathComponent
                    if copies.values.contains(dir + "/" + name) { name = "\(copies.count)-" + name }
                    let copy = dir + "/" + name
                    try? fm.removeItem(atPath: copy)
                    do {
                        try fm.copyItem(atPath: lib, toPath: copy)
                    } catch {
                        throw ToolError("cannot copy \(lib) to \(copy): \(error.localizedDescription)")
                    }
                    copies[lib] = copy
                }
                a.library = copies[lib]
            }
            result.append(a)
        }
        return (result, copies)
    }

    /// `aethalloc-cli bench`.
    public static func run(_ o: BenchOptions, invocation: [String], locator: Locator, console: Console) throws -> Int32 {
        if let dir = o.reportOnly { return try reportOnly(dir, console: console) }

        let root = locator.packageRoot
        guard let benchDir = o.benchDir ?? root.map({ $0 + "/benches" }) else {
            throw ToolError("cannot find the AethAlloc package (run from inside it, or pass --benches DIR)")
        }
        var programs = try discover(in: benchDir)
        if let only = o.only {
            for n in only where !programs.contains(where: { $0.name == n }) {
                throw ToolError("unknown bench '\(n)' (available: \(programs.map(\.name).joined(separator: ", ")))", exitCode: 2)
            }
            programs = programs.filter { only.contains($0.name) }
        }

        let (allocators, notices) = try locator.resolve(o.allocators)
        for n in notices { console.errLine("aethalloc-cli bench: \(n)") }

        let start = Date()
        let outDir = o.out ?? ((root ?? FileManager.default.currentDirectoryPath) + "/results/" + utcStamp(start, forPath: true))
        do {
            try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        } catch {
            throw ToolError("cannot create \(outDir): \(error.localizedDescription)")
        }

        // The libraries run are copies taken now, so that rebuilding the
        // package while a long run goes on cannot mix two builds in one report.
        let (runAllocators, snapshots) = try snapshotLibraries(allocators, into: outDir + "/libraries")

        // Build.
        var tempBuild: String?
        let buildDir: String
        if let root, o.benchDir == nil {
            buildDir = root + "/.build/benches"
        } else {
            var template = Array((NSTemporaryDirectory() + "/aethalloc-benches-XXXXXX").utf8CString)
            guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                throw ToolError("cannot create a temporary build directory")
            }
            buildDir = String(cString: p)
            tempBuild = buildDir
        }
        defer { if let t = tempBuild { try? FileManager.default.removeItem(atPath: t) } }
        try? FileManager.default.createDirectory(atPath: buildDir, withIntermediateDirectories: true)
        var built: [BenchProgram] = []
        for (i, p) in programs.enumerated() {
            console.progress("[build \(i + 1)/\(programs.count)] cc \((p.source as NSString).lastPathComponent)")
            let bin = buildDir + "/" + p.name
            let r: ChildResult
            do {
                r = try runChild(ChildSpec(argv: compileCommand(binary: bin, source: p.source), environment: ProcessInfo.processInfo.environment))
            } catch let e as SpawnError {
                throw ToolError("cannot compile the benches: \(e.message)")
            }
            if r.status.succeeded {
                var q = p
                q.binary = bin
                built.append(q)
            } else {
                let why = String(decoding: r.stderr, as: UTF8.self).split(separator: "\n").first { $0.contains("error") }.map(String.init)
                console.errLine("aethalloc-cli bench: skipping \(p.name): it does not compile\(why.map { ": \($0)" } ?? "")")
            }
        }
        console.endProgress()
        if built.isEmpty { throw ToolError("no bench compiled") }
        var launcher: Launcher?
        switch Launcher.build(in: buildDir) {
        case .success(let l): launcher = l
        case .failure(let e): console.errLine("aethalloc-cli bench: note: peak RSS includes this tool's own footprint (\(e.message))")
        }

        // Scenarios: each bench, at each thread count if multi-threaded.
        let threadCounts = o.effectiveThreads
        var plan: [(BenchProgram, Int?)] = []
        for p in built {
            if p.multiThreaded {
                for t in BenchCommand.distinctThreadCounts(bench: p.name, threadCounts) { plan.append((p, t)) }
            } else {
                plan.append((p, nil))
            }
        }

        let config = BenchConfig(
            quick: o.quick, runs: o.runs, threads: threadCounts, timeoutSeconds: o.timeout,
            compileCommand: "cc -O2 -pthread -o BIN FILE -lm",
            threadKnobs: BenchCommand.threadKnobs.filter { k, _ in plan.contains { $0.0.name == k && $0.1 != nil } })
        var results = BenchResults(
            startedAt: utcStamp(start, forPath: false), finishedAt: nil, invocation: invocation, config: config,
            system: SystemProbe.detect(),
            allocators: SystemProbe.versions(of: allocators, packageRoot: root).map { info in
                var info = info
                info.snapshot = info.library.flatMap { snapshots[$0] }
                return info
            },
            scenarios: [])
        let jsonPath = outDir + "/results.json"

        let total = plan.count * o.runs * runAllocators.count
        var step = 0
        var failures = 0
        let base = ProcessInfo.processInfo.environment
        for (program, threads) in plan {
            var args: [String] = []
            if o.quick { args.append("quick=1") }
            if let t = threads { args += threadArguments(bench: program.name, threads: t) }
            let label = program.name + (threads.map { " · \($0) thread\($0 == 1 ? "" : "s")" } ?? "")
            var runs: [BenchRun] = []
            for r in 1...o.runs {
                for a in runAllocators {
                    step += 1
                    console.progress("[\(step)/\(total)] \(label) · \(a.name) · run \(r)/\(o.runs)")
                    var spec = ChildSpec(argv: [program.binary!] + args, environment: a.environment(over: base), preload: a.library, launcher: launcher)
                    spec.timeout = o.timeout > 0 ? o.timeout : nil
                    let run = measureOnce(spec, allocator: a.name, run: r)
                    if !run.ok {
                        failures += 1
                        console.errLine("  ✗ \(label) · \(a.name) · run \(r): \(run.error ?? "failed")")
                    }
                    runs.append(run)
                }
            }
            results.scenarios.append(Scenario(bench: program.name, threads: threads, runs: runs, allocators: allocators.map(\.name)))
            try? results.encoded().write(to: URL(fileURLWithPath: jsonPath))
        }
        console.endProgress()

        results.finishedAt = utcStamp(Date(), forPath: false)
        do {
            try results.encoded().write(to: URL(fileURLWithPath: jsonPath))
            try Report.write(results, to: outDir)
        } catch {
            throw ToolError("cannot write the results into \(outDir): \(error.localizedDescription)")
        }
        console.out(summaryText(results))
        console.outLine("results: \(jsonPath)")
        console.outLine("report:  \(outDir)/report.md")
        if failures > 0 {
            console.errLine("aethalloc-cli bench: \(failures) run\(failures == 1 ? "" : "s") failed (see the report)")
            return 1
        }
        return 0
    }

    /// Runs a bench once and records it.
    public static func measureOnce(_ spec: ChildSpec, allocator: String, run: Int) -> BenchRun {
        let r: ChildResult
        do {
            r = try runChild(spec)
        } catch let e as SpawnError {
            return BenchRun(allocator: allocator, run: run, ok: false, error: e.message, wallSeconds: 0, cpuSeconds: 0, maxRSSKB: 0)
        } catch {
            return BenchRun(allocator: allocator, run: run, ok: false, error: "\(error)", wallSeconds: 0, cpuSeconds: 0, maxRSSKB: 0)
        }
        var rec = BenchRun(allocator: allocator, run: run, ok: false, wallSeconds: r.wallSeconds, cpuSeconds: r.cpuSeconds, maxRSSKB: r.maxRSSKB)
        if r.timedOut {
            rec.error = "timed out after \(Format.number(spec.timeout ?? 0)) s"
        } else if !r.status.succeeded {
            rec.error = r.status.description + (r.lastErrorLine.map { ": \($0)" } ?? "")
        } else {
            switch parseOutput(r.stdout) {
            case .success(let out):
                rec.ok = true
                rec.metrics = out.metrics
                rec.params = out.params
            case .failure(let e):
                rec.error = e.message
            }
        }
        return rec
    }

    /// The summary table for the terminal.
    public static func summaryText(_ r: BenchResults) -> String {
        var t = TextTable(headers: ["allocator", "speed (geomean × best)", "peak RSS (geomean × lowest)", "scenarios", "failed runs"],
                          aligns: [.left, .right, .right, .right, .right])
        for row in Report.summary(Report.recomputed(r)) {
            t.rows.append([row.allocator, Format.ratio(row.speed), Format.ratio(row.rss), "\(row.scenarios)/\(row.total)", "\(row.failedRuns)"])
        }
        return t.render()
    }

    static func reportOnly(_ dir: String, console: Console) throws -> Int32 {
        let path = dir + "/results.json"
        guard let data = FileManager.default.contents(atPath: path) else { throw ToolError("no results.json in \(dir)") }
        let results: BenchResults
        do {
            results = try BenchResults.decode(data)
        } catch {
            throw ToolError("\(path) is not a results file of this tool: \(error.localizedDescription)")
        }
        let paths: [String]
        do {
            paths = try Report.write(results, to: dir)
        } catch {
            throw ToolError("cannot write the report into \(dir): \(error.localizedDescription)")
        }
        console.out(summaryText(results))
        for p in paths { console.outLine("wrote \(p)") }
        return 0
    }
}
