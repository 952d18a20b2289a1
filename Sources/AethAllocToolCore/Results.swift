import Foundation

/// Any JSON value (for a bench's free-form params).
public enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let d = try? c.decode(Double.self) { self = .number(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        if let o = try? c.decode([String: JSONValue].self) { self = .object(o); return }
        throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value")
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// A compact rendering for reports.
    public var text: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .string(let s): return s
        case .array(let a): return "[" + a.map(\.text).joined(separator: ",") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\($0):\(o[$0]!.text)" }.joined(separator: ",") + "}"
        }
    }
}

/// The machine the suite ran on.
public struct SystemInfo: Codable, Equatable, Sendable {
    public var cpuModel: String?
    public var logicalCPUs: Int?
    public var memTotalKB: Int?
    public var kernel: String?
    public var os: String?
    public var compiler: String?
    public var cpuGovernor: String?

    public init(
        cpuModel: String? = nil, logicalCPUs: Int? = nil, memTotalKB: Int? = nil, kernel: String? = nil, os: String? = nil,
        compiler: String? = nil, cpuGovernor: String? = nil
    ) {
        self.cpuModel = cpuModel
        self.logicalCPUs = logicalCPUs
        self.memTotalKB = memTotalKB
        self.kernel = kernel
        self.os = os
        self.compiler = compiler
        self.cpuGovernor = cpuGovernor
    }
}

/// An allocator as recorded in the results.
public struct AllocatorInfo: Codable, Equatable, Sendable {
    public var name: String
    public var kind: AllocatorKind
    public var library: String?
    public var version: String?
    /// The environment variables the entry set (absent: none).
    public var settings: [Setting]?
    /// The copy of `library` that was preloaded (bench copies variant and
    /// library-path entries when it starts; absent: run in place).
    public var snapshot: String?

    public init(name: String, kind: AllocatorKind, library: String?, version: String?, settings: [Setting]? = nil) {
        self.name = name
        self.kind = kind
        self.library = library
        self.version = version
        self.settings = settings
    }
}

/// One run of one bench under one allocator.
public struct BenchRun: Codable, Equatable, Sendable {
    public var allocator: String
    /// 1-based.
    public var run: Int
    public var ok: Bool
    /// Why it failed: "exit 1", "signal 11 (SIGSEGV)", "no JSON line on stdout", ...
    public var error: String?
    public var wallSeconds: Double
    public var cpuSeconds: Double
    public var maxRSSKB: Int
    /// The numbers from the bench's JSON "metrics".
    public var metrics: [String: Double]
    public var params: [String: JSONValue]?

    public init(
        allocator: String, run: Int, ok: Bool, error: String? = nil, wallSeconds: Double, cpuSeconds: Double, maxRSSKB: Int,
        metrics: [String: Double] = [:], params: [String: JSONValue]? = nil
    ) {
        self.allocator = allocator
        self.run = run
        self.ok = ok
        self.error = error
        self.wallSeconds = wallSeconds
        self.cpuSeconds = cpuSeconds
        self.maxRSSKB = maxRSSKB
        self.metrics = metrics
        self.params = params
    }
}

/// The medians of one allocator in one scenario.
public struct AllocatorSummary: Codable, Equatable, Sendable {
    public var allocator: String
    public var okRuns: Int
    public var failedRuns: Int
    /// The first failure's reason.
    public var error: String?
    /// Per metric (the bench's, plus wall_seconds, cpu_seconds, max_rss_kb).
    public var stats: [String: Summary]
}

/// One bench at one thread count.
public struct Scenario: Codable, Equatable, Sendable {
    public var bench: String
    /// nil for a single-threaded bench.
    public var threads: Int?
    public var runs: [BenchRun]
    public var primaryMetric: String
    public var higherIsBetter: Bool
    public var summaries: [AllocatorSummary]

    public init(bench: String, threads: Int?, runs: [BenchRun], allocators: [String]) {
        self.bench = bench
        self.threads = threads
        self.runs = runs
        (primaryMetric, higherIsBetter) = Scenario.primary(of: runs)
        summaries = allocators.map { a in Scenario.summarize(runs.filter { $0.allocator == a }, allocator: a) }
    }

    /// "larson · 4 threads" or "packet_churn".
    public var title: String {
        guard let t = threads else { return bench }
        return "\(bench) · \(t) thread\(t == 1 ? "" : "s")"
    }

    /// ops_per_sec (higher is better) if any run reports it, else seconds
    /// (lower is better), else the child's wall time.
    public static func primary(of runs: [BenchRun]) -> (String, Bool) {
        let ok = runs.filter(\.ok)
        if ok.contains(where: { $0.metrics["ops_per_sec"] != nil }) { return ("ops_per_sec", true) }
        if ok.contains(where: { $0.metrics["seconds"] != nil }) { return ("seconds", false) }
        return ("wall_seconds", false)
    }

    public static func summarize(_ runs: [BenchRun], allocator: String) -> AllocatorSummary {
        let ok = runs.filter(\.ok)
        var samples: [String: [Double]] = [:]
        for r in ok {
            for (k, v) in r.metrics { samples[k, default: []].append(v) }
            samples["wall_seconds", default: []].append(r.wallSeconds)
            samples["cpu_seconds", default: []].append(r.cpuSeconds)
            samples["max_rss_kb", default: []].append(Double(r.maxRSSKB))
        }
        var stats: [String: Summary] = [:]
        for (k, xs) in samples { stats[k] = Summary(xs) }
        return AllocatorSummary(
            allocator: allocator, okRuns: ok.count, failedRuns: runs.count - ok.count,
            error: runs.first { !$0.ok }?.error, stats: stats)
    }

    /// The median of a metric for each allocator (nil where it has none).
    public func medians(_ metric: String) -> [Double?] { summaries.map { $0.stats[metric]?.median } }
}

/// The configuration a suite ran with.
public struct BenchConfig: Codable, Equatable, Sendable {
    public var quick: Bool
    public var runs: Int
    public var threads: [Int]
    public var timeoutSeconds: Double
    public var compileCommand: String
    /// How benches that do not take `threads=N` were given their thread
    /// count (bench name: arguments).
    public var threadKnobs: [String: String]?

    public init(quick: Bool, runs: Int, threads: [Int], timeoutSeconds: Double, compileCommand: String, threadKnobs: [String: String]? = nil) {
        self.quick = quick
        self.runs = runs
        self.threads = threads
        self.timeoutSeconds = timeoutSeconds
        self.compileCommand = compileCommand
        self.threadKnobs = threadKnobs
    }
}

/// results.json.
public struct BenchResults: Codable, Equatable, Sendable {
    public var schema = 1
    public var tool = "aethalloc-cli"
    public var startedAt: String
    public var finishedAt: String?
    public var invocation: [String]
    public var config: BenchConfig
    public var system: SystemInfo
    public var allocators: [AllocatorInfo]
    public var scenarios: [Scenario]

    public init(
        startedAt: String, finishedAt: String?, invocation: [String], config: BenchConfig, system: SystemInfo,
        allocators: [AllocatorInfo], scenarios: [Scenario]
    ) {
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.invocation = invocation
        self.config = config
        self.system = system
        self.allocators = allocators
        self.scenarios = scenarios
    }

    public func encoded() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(self)
    }

    public static func decode(_ data: Data) throws -> BenchResults {
        try JSONDecoder().decode(BenchResults.self, from: data)
    }
}
