import Foundation

/// A unit chosen for a whole column, so that every cell in it reads alike.
public struct UnitScale: Equatable, Sendable {
    public var divisor: Double
    public var suffix: String
    /// Put between number and suffix: " " for units ("12 ms"), "" for an SI
    /// prefix alone ("12.3M").
    public var joiner: String

    public init(divisor: Double, suffix: String, joiner: String = " ") {
        self.divisor = divisor
        self.suffix = suffix
        self.joiner = joiner
    }

    public func format(_ v: Double) -> String { Format.number(v / divisor) }
    public func formatWithUnit(_ v: Double) -> String {
        suffix.isEmpty ? format(v) : format(v) + joiner + suffix
    }
    /// An axis label: as short as exact ("50M", "2.5 ms").
    public func tickLabel(_ v: Double) -> String {
        var s = String(format: "%.3f", v / divisor)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return suffix.isEmpty ? s : s + joiner + suffix
    }

    /// "lo–hi" with the unit once at the end.
    public func range(_ lo: Double, _ hi: Double) -> String {
        "\(format(lo))–\(format(hi))" + (suffix.isEmpty ? "" : joiner + suffix)
    }
}

/// How the values of a metric are read and shown.
public enum MetricKind: Equatable, Sendable {
    case rate  // per second, higher is better
    case seconds
    case nanoseconds
    case kilobytes
    case plain

    /// The kind of a bench metric, from its name.
    public static func of(metric name: String) -> MetricKind {
        let n = name.lowercased()
        if n.hasSuffix("_per_sec") || n.hasSuffix("_per_s") || n.hasSuffix("per_second") { return .rate }
        if n == "seconds" || n.hasSuffix("_seconds") || n.hasSuffix("_s") || n.hasSuffix("_sec") { return .seconds }
        if n.hasSuffix("_ns") { return .nanoseconds }
        if n.hasSuffix("_kb") || n.hasSuffix("_kib") { return .kilobytes }
        return .plain
    }

    /// A unit for showing `values` of this kind.
    public func scale(for values: [Double]) -> UnitScale {
        let m = values.map { abs($0) }.max() ?? 0
        switch self {
        case .rate: return Format.siScale(m)
        case .seconds: return Format.durationScale(seconds: m)
        case .nanoseconds: return Format.durationScale(seconds: m / 1e9, fromNanoseconds: true)
        case .kilobytes: return Format.kilobyteScale(m)
        case .plain: return Format.siScale(m)
        }
    }
}

public enum Format {
    /// About three significant digits, without exponent notation.
    public static func number(_ v: Double) -> String {
        guard v.isFinite else { return v.isNaN ? "nan" : (v > 0 ? "inf" : "-inf") }
        let a = abs(v)
        if a >= 100 || a == 0 { return String(format: "%.0f", v) }
        if a >= 10 { return String(format: "%.1f", v) }
        if a >= 1 { return String(format: "%.2f", v) }
        return String(format: "%.3f", v)
    }

    /// A ratio with two decimals; "–" when absent.
    public static func ratio(_ r: Double?) -> String {
        guard let r, r.isFinite else { return "–" }
        return String(format: "%.2f", r)
    }

    /// An SI prefix (k, M, G) for the largest value; plain below 10 000.
    public static func siScale(_ maxValue: Double) -> UnitScale {
        if maxValue >= 1e9 { return UnitScale(divisor: 1e9, suffix: "G", joiner: "") }
        if maxValue >= 1e6 { return UnitScale(divisor: 1e6, suffix: "M", joiner: "") }
        if maxValue >= 1e4 { return UnitScale(divisor: 1e3, suffix: "k", joiner: "") }
        return UnitScale(divisor: 1, suffix: "", joiner: "")
    }

    public static func durationScale(seconds m: Double, fromNanoseconds: Bool = false) -> UnitScale {
        let k: Double = fromNanoseconds ? 1e9 : 1
        if m >= 1 { return UnitScale(divisor: k, suffix: "s") }
        if m >= 1e-3 { return UnitScale(divisor: k * 1e-3, suffix: "ms") }
        if m >= 1e-6 || !fromNanoseconds { return UnitScale(divisor: k * 1e-6, suffix: "µs") }
        return UnitScale(divisor: 1, suffix: "ns")
    }

    public static func kilobyteScale(_ maxKB: Double) -> UnitScale {
        if maxKB >= 1024 * 1024 { return UnitScale(divisor: 1024 * 1024, suffix: "GiB") }
        if maxKB >= 1024 { return UnitScale(divisor: 1024, suffix: "MiB") }
        return UnitScale(divisor: 1, suffix: "KiB")
    }

    /// A shell-like rendering of a command line (for display only).
    public static func shellQuote(_ args: [String]) -> String {
        args.map { a in
            if !a.isEmpty, a.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0) }) { return a }
            return "'" + a.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }

    /// A signal's conventional name.
    public static func signalName(_ sig: Int32) -> String {
        let names: [Int32: String] = [
            1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
            8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
            14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ", 31: "SIGSYS",
        ]
        return names[sig] ?? "signal \(sig)"
    }
}

/// A plain-text table with aligned columns.
public struct TextTable {
    public enum Align { case left, right }
    public var headers: [String]
    public var aligns: [Align]
    public var rows: [[String]] = []

    public init(headers: [String], aligns: [Align]) {
        self.headers = headers
        self.aligns = aligns
    }

    public func render(separator: String = "  ") -> String {
        let all = [headers] + rows
        var widths = [Int](repeating: 0, count: headers.count)
        for row in all { for (i, c) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ row: [String]) -> String {
            var parts: [String] = []
            for (i, w) in widths.enumerated() {
                let c = i < row.count ? row[i] : ""
                let pad = String(repeating: " ", count: max(0, w - c.count))
                parts.append(aligns[i] == .left ? c + pad : pad + c)
            }
            var s = parts.joined(separator: separator)
            while s.hasSuffix(" ") { s.removeLast() }
            return s
        }
        var out = line(headers) + "\n"
        out += line(widths.map { String(repeating: "-", count: $0) }) + "\n"
        for r in rows { out += line(r) + "\n" }
        return out
    }
}
