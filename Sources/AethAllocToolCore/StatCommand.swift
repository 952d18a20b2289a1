import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension Format {
    /// Bytes in binary units: "0 B", "812 B", "1.50 KiB", "12.3 MiB".
    public static func bytes(_ v: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var x = Double(v)
        var i = 0
        while x >= 1024, i < units.count - 1 {
            x /= 1024
            i += 1
        }
        return i == 0 ? "\(v) B" : number(x) + " " + units[i]
    }

    /// A per-second rate with an SI prefix: "0", "950", "12.3k", "1.23M";
    /// "–" when unknown.
    public static func rate(_ v: Double?) -> String {
        guard let v, v.isFinite else { return "–" }
        let a = abs(v)
        if a >= 1e9 { return number(v / 1e9) + "G" }
        if a >= 1e6 { return number(v / 1e6) + "M" }
        if a >= 1e3 { return number(v / 1e3) + "k" }
        return String(format: "%.0f", v)
    }

    /// A ratio as a percentage with one decimal: "99.2%"; "–" when unknown.
    public static func percent(_ r: Double?) -> String {
        guard let r, r.isFinite else { return "–" }
        return String(format: "%.1f%%", r * 100)
    }

    /// Text from a process (its command name) made safe for one table cell.
    static func printable(_ s: String) -> String {
        String(s.unicodeScalars.map { $0.properties.generalCategory == .control ? "?" : Character($0) })
    }
}

/// One process in `stat` output.
public struct StatProcess: Codable, Equatable, Sendable {
    public var pid: Int64
    public var command: String
    public var variant: String
    public var version: UInt32
    public var startUnixMs: UInt64
    public var updateUnixMs: UInt64
    public var publishes: UInt32
    /// The raw counters, as published.
    public var counters: StatsCounters
    /// Between the two snapshots; absent with --interval 0 or for a process
    /// seen only once.
    public var rates: StatsRates?
    public var cacheHitRatio: Double?
    public var sizeClasses: [SizeClassCount]

    enum CodingKeys: String, CodingKey {
        case pid, command, variant, version, publishes, counters, rates
        case startUnixMs = "start_unix_ms"
        case updateUnixMs = "update_unix_ms"
        case cacheHitRatio = "cache_hit_ratio"
        case sizeClasses = "size_classes"
    }

    public init(_ s: StatsSnapshot, rates: StatsRates?) {
        pid = s.pid
        command = s.command
        variant = s.variant
        version = s.version
        startUnixMs = s.startUnixMs
        updateUnixMs = s.updateUnixMs
        publishes = s.publishes
        counters = s.counters
        self.rates = rates
        cacheHitRatio = s.counters.cacheHitRatio
        sizeClasses = s.classes
    }
}

/// What `stat --json` prints: one document.
public struct StatReport: Codable, Equatable, Sendable {
    public var directory: String
    public var intervalSeconds: Double
    public var timeUnixMs: UInt64
    public var processes: [StatProcess]
    /// One line per file that could not be read.
    public var errors: [String]

    enum CodingKeys: String, CodingKey {
        case directory, processes, errors
        case intervalSeconds = "interval_seconds"
        case timeUnixMs = "time_unix_ms"
    }
}

/// `aethalloc-cli stat`.
public enum StatCommand {
    public static func run(_ o: StatOptions, console: Console, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Int32 {
        let dir = o.dir ?? StatsDirectory.defaultPath(environment: environment)
        return o.once ? try once(o, dir: dir, console: console) : try live(o, dir: dir, console: console)
    }

    /// Scans, turning a directory error into a one-line tool error.
    static func look(_ dir: String, pid: Int32?) throws -> (StatsScan, Double) {
        do {
            let s = try StatsDirectory.scan(dir, pid: pid)
            return (s, Poll.now())
        } catch {
            throw ToolError(error.message)
        }
    }

    /// The processes of `scan`, with rates against `previous` (taken
    /// `seconds` earlier).
    public static func processes(_ scan: StatsScan, previous: [StatsSnapshot], seconds: Double) -> [StatProcess] {
        var before: [Int64: StatsSnapshot] = [:]
        for s in previous { before[s.pid] = s }
        return scan.snapshots.map { s in
            StatProcess(s, rates: before[s.pid].flatMap { StatsRates.between($0, s, seconds: seconds) })
        }
    }

    /// Why a requested pid has no statistics.
    static func missing(_ pid: Int32, dir: String, scan: StatsScan) -> String {
        let path = dir + "/" + StatsDirectory.fileName(pid: pid)
        if scan.removed.contains(path) { return "pid \(pid) is not running (removed its stale \(path))" }
        if scan.stale.contains(path) { return "pid \(pid) is not running (its stale \(path) could not be removed)" }
        return "no statistics for pid \(pid) in \(dir) (is it running with libaethalloc-metrics.so preloaded and the same AETHALLOC_STATS_DIR?)"
    }

    static func once(_ o: StatOptions, dir: String, console: Console) throws -> Int32 {
        let (first, t0) = try look(dir, pid: o.pid)
        var (second, t1) = (first, t0)
        if o.interval > 0 {
            Thread.sleep(forTimeInterval: o.interval)
            (second, t1) = try look(dir, pid: o.pid)
        }
        let procs = processes(second, previous: o.interval > 0 ? first.snapshots : [], seconds: t1 - t0)
        var errors = second.problems.map(\.line)
        if let pid = o.pid, procs.isEmpty, second.problems.isEmpty {
            errors.append(missing(pid, dir: dir, scan: second))
        }
        for e in errors { console.errLine("aethalloc-cli stat: \(e)") }
        if o.json {
            let report = StatReport(
                directory: dir, intervalSeconds: o.interval, timeUnixMs: UInt64(Date().timeIntervalSince1970 * 1000),
                processes: procs, errors: errors)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            console.out(String(decoding: try enc.encode(report), as: UTF8.self) + "\n")
        } else if !procs.isEmpty {
            console.out(renderTable(procs))
        } else if o.pid == nil {
            console.outLine(noneLine(dir))
        }
        return errors.isEmpty ? 0 : 1
    }

    static func noneLine(_ dir: String) -> String {
        "no process publishes AethAlloc statistics in \(dir) (run one with libaethalloc-metrics.so preloaded)"
    }

    /// The table of processes.
    public static func renderTable(_ procs: [StatProcess]) -> String {
        var t = TextTable(
            headers: ["pid", "command", "variant", "allocs/s", "frees/s", "in use", "peak", "mapped", "returned", "cache hits"],
            aligns: [.right, .left, .left, .right, .right, .right, .right, .right, .right, .right])
        for p in procs {
            let c = p.counters
            t.rows.append([
                String(p.pid), Format.printable(p.command), Format.printable(p.variant),
                Format.rate(p.rates?.allocsPerSec), Format.rate(p.rates?.freesPerSec),
                Format.bytes(c.bytesInUse), Format.bytes(c.peakBytesInUse), Format.bytes(c.bytesMapped),
                Format.bytes(c.bytesReturned), Format.percent(p.cacheHitRatio),
            ])
        }
        return t.render()
    }

    static let clockFormatter: DateFormatter = {
        let f = DateFormatter()
        f.dateFormat = "HH:mm:ss"
        return f
    }()

    /// The refreshing display: clear and redraw every interval until
    /// Ctrl-C (exit 0), or until the one requested process exits.
    static func live(_ o: StatOptions, dir: String, console: Console) throws -> Int32 {
        let watcher = try InterruptWatcher()
        defer { watcher.restore() }
        var (scan, t1) = try look(dir, pid: o.pid)
        var previous = StatsScan()
        var t0 = t1
        var directoryError: String?
        var frame = 0
        while true {
            let procs = processes(scan, previous: previous.snapshots, seconds: t1 - t0)
            var text = console.outIsTTY ? "\u{1B}[H\u{1B}[2J" : (frame == 0 ? "" : "\n")
            let clock = clockFormatter.string(from: Date())
            let count = procs.count == 1 ? "1 process" : "\(procs.count) processes"
            text += "aethalloc-cli stat  \(dir)  \(clock)  \(count)  every \(String(format: "%g", o.interval)) s, Ctrl-C to quit\n\n"
            if let directoryError {
                text += "! \(directoryError)\n"
            } else if procs.isEmpty, let pid = o.pid {
                text += (frame > 0 && scan.problems.isEmpty ? "pid \(pid) has exited" : missing(pid, dir: dir, scan: scan)) + "\n"
            } else if procs.isEmpty {
                text += noneLine(dir) + "\n"
            } else {
                text += renderTable(procs)
            }
            for p in scan.problems { text += "! \(p.line)\n" }
            console.out(text)
            // The one process asked for is gone: done (an error if it never was there).
            if o.pid != nil, procs.isEmpty, directoryError == nil, scan.problems.isEmpty {
                return frame == 0 ? 1 : 0
            }
            if watcher.wait(o.interval) { return 0 }
            previous = scan
            t0 = t1
            do {
                (scan, t1) = try look(dir, pid: o.pid)
                directoryError = nil
            } catch let e as ToolError {
                scan = StatsScan()
                t1 = Poll.now()
                directoryError = e.message
            }
            frame += 1
        }
    }
}
