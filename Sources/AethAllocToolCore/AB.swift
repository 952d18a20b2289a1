import Foundation

/// One measured run of the `ab` command.
public struct ABRun: Codable, Equatable, Sendable {
    public var run: Int
    public var wallSeconds: Double
    public var cpuSeconds: Double
    public var userSeconds: Double
    public var sysSeconds: Double
    public var maxRSSKB: Int
    /// "exit 0", "signal 11 (SIGSEGV)".
    public var status: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var stdoutBytes: Int
    public var timedOut: Bool
}

/// One allocator's runs and their summary.
public struct ABAllocatorResult: Codable, Equatable, Sendable {
    public var allocator: Allocator
    public var runs: [ABRun]
    /// Over the runs that ended like the baseline's first run.
    public var wallSeconds: Summary?
    public var cpuSeconds: Summary?
    public var maxRSSKB: Summary?
    /// Median over the baseline's median.
    public var wallRatio: Double?
    public var cpuRatio: Double?
    public var maxRSSRatio: Double?
}

/// Everything `ab` measured; `--json` prints this.
public struct ABReport: Codable, Equatable, Sendable {
    public var command: [String]
    public var runsPerAllocator: Int
    public var warmupRounds: Int
    public var baseline: String
    public var allocators: [ABAllocatorResult]
    public var stdoutChecked: Bool
    public var mismatches: [String]
    public var notes: [String]
    public var ok: Bool
}

public enum ABCommand {
    /// Runs `ab`; returns the exit status.
    public static func run(_ o: ABOptions, allocators: [Allocator], console: Console) throws -> Int32 {
        let report = try withTemporaryLauncher(console: console, prefix: "aethalloc-cli ab: ") { launcher in
            try measure(o, allocators: allocators, launcher: launcher, console: console)
        }
        if o.json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let data = try enc.encode(report)
            console.out(String(decoding: data, as: UTF8.self) + "\n")
        } else {
            console.out(renderTable(report))
        }
        if !report.mismatches.isEmpty {
            console.errLine("aethalloc-cli ab: \(report.mismatches.count) mismatch\(report.mismatches.count == 1 ? "" : "es") across allocators (see \(o.json ? "\"mismatches\" in the JSON" : "the MISMATCH lines above"))")
        } else if !report.ok, let n = report.notes.first {
            console.errLine("aethalloc-cli ab: \(n)")
        }
        return report.ok ? 0 : 1
    }

    /// Runs the command under every allocator, interleaved, and compares.
    public static func measure(_ o: ABOptions, allocators: [Allocator], launcher: Launcher?, console: Console) throws -> ABReport {
        precondition(!allocators.isEmpty)
        let base = ProcessInfo.processInfo.environment
        func once(_ a: Allocator) throws -> ChildResult {
            var spec = ChildSpec(argv: o.command, environment: a.environment(over: base), preload: a.library, launcher: launcher)
            spec.stdout = o.checkStdout ? .capture : .null
            spec.stderr = .capture
            spec.timeout = o.timeout
            do {
                return try runChild(spec)
            } catch let e as SpawnError {
                throw ToolError(e.message, exitCode: e.exitCode)
            }
        }

        let total = (o.warmup + o.runs) * allocators.count
        var step = 0
        func progress(_ what: String) {
            step += 1
            if console.errIsTTY { console.progress("[\(step)/\(total)] \(what)") }
        }
        for w in 0..<o.warmup {
            for a in allocators {
                progress("\(a.name) · warm-up \(w + 1)/\(o.warmup)")
                _ = try once(a)
            }
        }

        var results = Array(repeating: [ChildResult](), count: allocators.count)
        for r in 0..<o.runs {
            for (i, a) in allocators.enumerated() {
                progress("\(a.name) · run \(r + 1)/\(o.runs)")
                results[i].append(try once(a))
            }
        }
        console.endProgress()
        return summarize(o, allocators: allocators, results: results)
    }

    /// Builds the report from the raw results: summaries, ratios to the
    /// first allocator, and mismatches against the first allocator's first run.
    public static func summarize(_ o: ABOptions, allocators: [Allocator], results: [[ChildResult]]) -> ABReport {
        let reference = results[0][0]
        var mismatches: [String] = []
        var out: [ABAllocatorResult] = []
        let baseName = allocators[0].name

        for (i, a) in allocators.enumerated() {
            let rs = results[i]
            var runs: [ABRun] = []
            for (k, c) in rs.enumerated() {
                var exitCode: Int32?
                var sig: Int32?
                switch c.status {
                case .exited(let e): exitCode = e
                case .signaled(let s): sig = s
                }
                runs.append(ABRun(
                    run: k + 1, wallSeconds: c.wallSeconds, cpuSeconds: c.cpuSeconds, userSeconds: c.userSeconds,
                    sysSeconds: c.sysSeconds, maxRSSKB: c.maxRSSKB,
                    status: c.timedOut ? "timed out (\(c.status.description))" : c.status.description,
                    exitCode: exitCode, signal: sig, stdoutBytes: c.stdout.count, timedOut: c.timedOut))
            }

            // Exit status against the reference.
            let badStatus = rs.indices.filter { rs[$0].status != reference.status || rs[$0].timedOut != reference.timedOut }
            if !badStatus.isEmpty {
                let c = rs[badStatus[0]]
                var m = "exit status under \(a.name) (run\(badStatus.count > 1 ? "s" : "") \(badStatus.map { String($0 + 1) }.joined(separator: ","))): "
                m += c.timedOut ? "timed out" : c.status.description
                m += "; \(baseName) run 1: \(reference.status.description)"
                if let line = c.lastErrorLine { m += "; stderr: \(line)" }
                mismatches.append(m)
            }
            // Stdout against the reference.
            if o.checkStdout {
                let badOut = rs.indices.filter { !(i == 0 && $0 == 0) && rs[$0].stdout != reference.stdout }
                if !badOut.isEmpty {
                    let c = rs[badOut[0]]
                    let at = firstDifference(c.stdout, reference.stdout)
                    mismatches.append(
                        "stdout under \(a.name) (run\(badOut.count > 1 ? "s" : "") \(badOut.map { String($0 + 1) }.joined(separator: ","))) "
                            + "differs from \(baseName) run 1: \(c.stdout.count) vs \(reference.stdout.count) bytes, first difference at byte \(at)")
                }
            }

            let good = rs.filter { $0.status == reference.status && !$0.timedOut }
            out.append(ABAllocatorResult(
                allocator: a, runs: runs,
                wallSeconds: Summary(good.map(\.wallSeconds)),
                cpuSeconds: Summary(good.map(\.cpuSeconds)),
                maxRSSKB: Summary(good.map { Double($0.maxRSSKB) })))
        }

        let baseWall = out[0].wallSeconds?.median
        let baseCPU = out[0].cpuSeconds?.median
        let baseRSS = out[0].maxRSSKB?.median
        for i in out.indices {
            out[i].wallRatio = Stats.ratios([out[i].wallSeconds?.median], to: baseWall)[0]
            out[i].cpuRatio = Stats.ratios([out[i].cpuSeconds?.median], to: baseCPU)[0]
            out[i].maxRSSRatio = Stats.ratios([out[i].maxRSSKB?.median], to: baseRSS)[0]
        }

        // A crash or a timeout is a failure even when every allocator agrees;
        // a consistent non-zero exit code is only worth a note.
        var ok = mismatches.isEmpty
        var notes: [String] = []
        if reference.timedOut {
            ok = false
            notes.append("the command timed out under \(baseName)")
        } else if case .signaled = reference.status {
            ok = false
            notes.append("the command was killed by \(reference.status.description) under \(baseName)")
        } else if !reference.status.succeeded {
            notes.append("the command exits with \(reference.status.description) under \(baseName)")
        }
        return ABReport(
            command: o.command, runsPerAllocator: o.runs, warmupRounds: o.warmup, baseline: baseName,
            allocators: out, stdoutChecked: o.checkStdout, mismatches: mismatches, notes: notes, ok: ok)
    }

    /// The offset of the first differing byte (the shorter length if one is a
    /// prefix of the other).
    public static func firstDifference(_ a: Data, _ b: Data) -> Int {
        zip(a, b).prefix { $0 == $1 }.count
    }

    /// The human-readable table.
    public static func renderTable(_ r: ABReport) -> String {
        let vs = "vs \(r.baseline)"
        var t = TextTable(
            headers: ["allocator", "wall", "min–max", vs, "CPU", "min–max", vs, "peak RSS", "min–max", vs],
            aligns: [.left, .right, .right, .right, .right, .right, .right, .right, .right, .right])
        let wallScale = MetricKind.seconds.scale(for: r.allocators.compactMap { $0.wallSeconds?.median })
        let cpuScale = MetricKind.seconds.scale(for: r.allocators.compactMap { $0.cpuSeconds?.median })
        let rssScale = MetricKind.kilobytes.scale(for: r.allocators.compactMap { $0.maxRSSKB?.median })
        for a in r.allocators {
            var row = [a.allocator.name]
            for (s, scale, ratio) in [
                (a.wallSeconds, wallScale, a.wallRatio), (a.cpuSeconds, cpuScale, a.cpuRatio), (a.maxRSSKB, rssScale, a.maxRSSRatio),
            ] {
                if let s {
                    row += [scale.formatWithUnit(s.median), scale.range(s.min, s.max), Format.ratio(ratio)]
                } else {
                    row += ["failed", "", ""]
                }
            }
            t.rows.append(row)
        }
        var text = "\(Format.shellQuote(r.command))\n"
        text += "\(r.runsPerAllocator) run\(r.runsPerAllocator == 1 ? "" : "s") per allocator, interleaved"
        text += r.warmupRounds > 0 ? ", after \(r.warmupRounds) warm-up round\(r.warmupRounds == 1 ? "" : "s")" : ""
        text += "; medians, min–max, ratio to \(r.baseline)\n\n"
        text += t.render()
        let status = r.allocators.first?.runs.first?.status ?? "?"
        text += "\n"
        if r.mismatches.isEmpty {
            text += "every run: \(status)\(r.stdoutChecked ? ", identical stdout" : "")\n"
        } else {
            for m in r.mismatches { text += "MISMATCH: \(m)\n" }
        }
        for n in r.notes { text += "note: \(n)\n" }
        return text
    }
}
