import Foundation

/// `aethalloc-cli run`.
public struct RunOptions: Equatable, Sendable {
    public var variant = Catalog.defaultVariant
    public var command: [String] = []
    public init() {}
}

/// `aethalloc-cli ab`.
public struct ABOptions: Equatable, Sendable {
    /// nil: the default set.
    public var allocators: [String]?
    public var runs = 5
    public var warmup = 1
    public var json = false
    public var checkStdout = true
    public var timeout: Double?
    public var command: [String] = []
    public init() {}
}

/// `aethalloc-cli bench`.
public struct BenchOptions: Equatable, Sendable {
    public var quick = false
    public var only: [String]?
    public var allocators: [String]?
    public var runs = 3
    /// nil: 1,2,4,8, or 2 with --quick.
    public var threads: [Int]?
    public var out: String?
    public var reportOnly: String?
    /// Where the bench sources are; nil: <package>/benches.
    public var benchDir: String?
    public var timeout: Double = 600
    public init() {}

    public var effectiveThreads: [Int] { threads ?? (quick ? [2] : [1, 2, 4, 8]) }
}

/// `aethalloc-cli stat`.
public struct StatOptions: Equatable, Sendable {
    /// nil: every process publishing in the directory.
    public var pid: Int32?
    public var once = false
    /// One JSON document (implies `once`).
    public var json = false
    /// Seconds between the two snapshots of `--once`/`--json`, and between
    /// redraws otherwise.
    public var interval: Double = 1
    /// nil: $AETHALLOC_STATS_DIR, else /dev/shm.
    public var dir: String?
    public init() {}
}

/// A host and port to listen on.
public struct ListenAddress: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public static let defaultMetrics = ListenAddress(host: "127.0.0.1", port: 9091)

    /// `HOST:PORT`, `[IPV6]:PORT`, or `:PORT` (loopback).
    public static func parse(_ s: String) -> ListenAddress? {
        guard let colon = s.lastIndex(of: ":") else { return nil }
        var host = String(s[..<colon])
        let portText = s[s.index(after: colon)...]
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
            let port = UInt16(portText)
        else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") && host.count > 2 {
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") || host.contains("[") || host.contains("]") {
            return nil  // an IPv6 address needs brackets
        }
        if host.isEmpty { host = "127.0.0.1" }
        guard !host.contains(where: { $0.isWhitespace || $0 == "/" }) else { return nil }
        return ListenAddress(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// `aethalloc-cli metrics`.
public struct MetricsOptions: Equatable, Sendable {
    public var listen = ListenAddress.defaultMetrics
    /// nil: $AETHALLOC_STATS_DIR, else /dev/shm.
    public var dir: String?
    public init() {}
}

/// `aethalloc-cli install`.
public struct InstallOptions: Equatable, Sendable {
    public static let defaultPrefix = "/usr/local"
    /// Absolute and normalised (no `.`, `..`, `//` or trailing `/`).
    public var prefix = InstallOptions.defaultPrefix
    /// The build directory holding the libraries and aethalloc-cli; nil: the
    /// directory of the running executable.
    public var from: String?
    public var dryRun = false
    public var force = false
    public init() {}
}

public enum Command: Equatable, Sendable {
    /// Help, in general or on one command.
    case help(String?)
    case run(RunOptions)
    case ab(ABOptions)
    case bench(BenchOptions)
    case stat(StatOptions)
    case metrics(MetricsOptions)
    case install(InstallOptions)
}

/// Bad usage: reported in one line, exit status 2.
public struct UsageError: Error, Equatable {
    public var message: String
    /// The command whose help to point at.
    public var command: String?

    public init(_ message: String, command: String? = nil) {
        self.message = message
        self.command = command
    }

    public var line: String {
        let prefix = command.map { "aethalloc-cli \($0): " } ?? "aethalloc-cli: "
        let hint = command.map { "see 'aethalloc-cli \($0) --help'" } ?? "see 'aethalloc-cli help'"
        return prefix + message + "; " + hint
    }
}

public enum Arguments {
    public static let commands = ["run", "ab", "bench", "stat", "metrics", "install", "help"]

    /// Parses the arguments after the program name.
    public static func parse(_ args: [String]) throws(UsageError) -> Command {
        guard let first = args.first else { return .help(nil) }
        let rest = Array(args.dropFirst())
        switch first {
        case "help", "--help", "-h":
            guard let topic = rest.first else { return .help(nil) }
            guard commands.dropLast().contains(topic) else { throw UsageError("no help on '\(topic)': unknown command") }
            return .help(topic)
        case "run": return try parseRun(rest)
        case "ab": return try parseAB(rest)
        case "bench": return try parseBench(rest)
        case "stat": return try parseStat(rest)
        case "metrics": return try parseMetrics(rest)
        case "install": return try parseInstall(rest)
        default:
            if first.hasPrefix("-") { throw UsageError("unknown option '\(first)'") }
            throw UsageError("unknown command '\(first)' (commands: \(commands.joined(separator: ", ")))")
        }
    }

    /// Walks options; stops at `--` or at the first non-option argument.
    struct Scanner {
        let command: String
        var args: [String]
        var index = 0

        /// The next option name and its inline value (`--x=v`), or nil when
        /// the options end. `trailing` collects what follows.
        mutating func nextOption(trailing: inout [String]?) -> (name: String, inline: String?)? {
            guard index < args.count else { return nil }
            let a = args[index]
            if a == "--" {
                trailing = Array(args[(index + 1)...])
                index = args.count
                return nil
            }
            if !a.hasPrefix("-") || a == "-" {
                trailing = Array(args[index...])
                index = args.count
                return nil
            }
            index += 1
            if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                return (String(a[..<eq]), String(a[a.index(after: eq)...]))
            }
            return (a, nil)
        }

        mutating func value(_ opt: (name: String, inline: String?)) throws(UsageError) -> String {
            if let v = opt.inline { return v }
            guard index < args.count else { throw UsageError("option \(opt.name) needs a value", command: command) }
            index += 1
            return args[index - 1]
        }

        func noValue(_ opt: (name: String, inline: String?)) throws(UsageError) {
            if opt.inline != nil { throw UsageError("option \(opt.name) takes no value", command: command) }
        }
    }

    static func isHelp(_ name: String) -> Bool { name == "--help" || name == "-h" }

    static func positiveInt(_ s: String, option: String, command: String, max: Int = 1_000_000) throws(UsageError) -> Int {
        guard let n = Int(s), n >= 1, n <= max else {
            throw UsageError("\(option) wants a whole number from 1 to \(max), not '\(s)'", command: command)
        }
        return n
    }

    static func seconds(_ s: String, option: String, command: String) throws(UsageError) -> Double {
        guard let n = Double(s), n >= 0, n.isFinite else {
            throw UsageError("\(option) wants a number of seconds, not '\(s)'", command: command)
        }
        return n
    }

    static func list(_ s: String, option: String, command: String) throws(UsageError) -> [String] {
        try list(s.split(separator: ",", omittingEmptySubsequences: false).map(String.init), whole: s, option: option, command: command)
    }

    static func list(_ parts: [String], whole s: String, option: String, command: String) throws(UsageError) -> [String] {
        let items = parts.map { $0.trimmingCharacters(in: .whitespaces) }
        guard !items.isEmpty, !items.contains(where: \.isEmpty) else {
            throw UsageError("\(option) wants a comma-separated list, not '\(s)'", command: command)
        }
        var seen: [String] = []
        for i in items where !seen.contains(i) { seen.append(i) }
        return seen
    }

    static func allocatorList(_ s: String, command: String) throws(UsageError) -> [String] {
        let names = try list(AllocatorEntry.splitList(s), whole: s, option: "--with", command: command)
        for n in names {
            let base: String
            switch AllocatorEntry.parse(n) {
            case .success(let e): base = e.base
            case .failure(let e): throw UsageError("--with: \(e.message)", command: command)
            }
            if !Catalog.all.contains(base) && !Catalog.isLibraryPath(base) {
                throw UsageError("unknown allocator '\(base)' (known: \(Catalog.all.joined(separator: ", ")), or a path to a .so)", command: command)
            }
        }
        return names
    }

    static func parseRun(_ args: [String]) throws(UsageError) -> Command {
        var o = RunOptions()
        var s = Scanner(command: "run", args: args)
        var trailing: [String]?
        while let opt = s.nextOption(trailing: &trailing) {
            switch opt.name {
            case _ where isHelp(opt.name): return .help("run")
            case "--variant":
                let v = try s.value(opt)
                guard Catalog.variants.contains(v) else {
                    throw UsageError("unknown variant '\(v)' (variants: \(Catalog.variants.joined(separator: ", ")))", command: "run")
                }
                o.variant = v
            default: throw UsageError("unknown option '\(opt.name)'", command: "run")
            }
        }
        o.command = trailing ?? []
        if o.command.isEmpty { throw UsageError("no command to run", command: "run") }
        return .run(o)
    }

    static func parseAB(_ args: [String]) throws(UsageError) -> Command {
        var o = ABOptions()
        var s = Scanner(command: "ab", args: args)
        var trailing: [String]?
        while let opt = s.nextOption(trailing: &trailing) {
            switch opt.name {
            case _ where isHelp(opt.name): return .help("ab")
            case "--with": o.allocators = try allocatorList(s.value(opt), command: "ab")
            case "--runs": o.runs = try positiveInt(s.value(opt), option: "--runs", command: "ab")
            case "--warmup":
                let v = try s.value(opt)
                o.warmup = v == "0" ? 0 : try positiveInt(v, option: "--warmup", command: "ab", max: 100)
            case "--json": try s.noValue(opt); o.json = true
            case "--ignore-stdout": try s.noValue(opt); o.checkStdout = false
            case "--timeout": o.timeout = try seconds(s.value(opt), option: "--timeout", command: "ab")
            default: throw UsageError("unknown option '\(opt.name)'", command: "ab")
            }
        }
        o.command = trailing ?? []
        if o.command.isEmpty { throw UsageError("no command to compare", command: "ab") }
        return .ab(o)
    }

    static func parseBench(_ args: [String]) throws(UsageError) -> Command {
        var o = BenchOptions()
        var s = Scanner(command: "bench", args: args)
        var trailing: [String]?
        while let opt = s.nextOption(trailing: &trailing) {
            switch opt.name {
            case _ where isHelp(opt.name): return .help("bench")
            case "--quick": try s.noValue(opt); o.quick = true
            case "--only": o.only = try list(s.value(opt), option: "--only", command: "bench")
            case "--with": o.allocators = try allocatorList(s.value(opt), command: "bench")
            case "--runs":
                o.runs = try positiveInt(s.value(opt), option: "--runs", command: "bench")
            case "--threads":
                var ts: [Int] = []
                for t in try list(s.value(opt), option: "--threads", command: "bench") {
                    ts.append(try positiveInt(t, option: "--threads", command: "bench", max: 4096))
                }
                o.threads = ts
            case "--out": o.out = try s.value(opt)
            case "--report-only": o.reportOnly = try s.value(opt)
            case "--benches": o.benchDir = try s.value(opt)
            case "--timeout": o.timeout = try seconds(s.value(opt), option: "--timeout", command: "bench")
            default: throw UsageError("unknown option '\(opt.name)'", command: "bench")
            }
        }
        if let t = trailing, !t.isEmpty {
            throw UsageError("unexpected argument '\(t[0])'", command: "bench")
        }
        return .bench(o)
    }

    static func parseStat(_ args: [String]) throws(UsageError) -> Command {
        var o = StatOptions()
        // Options may come before or after the PID: `stat 1234 --once`.
        var s = Scanner(command: "stat", args: args)
        var intervalGiven = false
        var positional: [String] = []
        var afterDashes = false
        while s.index < args.count {
            let a = args[s.index]
            s.index += 1
            if afterDashes || !a.hasPrefix("-") || a == "-" {
                positional.append(a)
                continue
            }
            if a == "--" {
                afterDashes = true
                continue
            }
            var opt: (name: String, inline: String?) = (a, nil)
            if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                opt = (String(a[..<eq]), String(a[a.index(after: eq)...]))
            }
            switch opt.name {
            case _ where isHelp(opt.name): return .help("stat")
            case "--once": try s.noValue(opt); o.once = true
            case "--json": try s.noValue(opt); o.json = true
            case "--interval":
                o.interval = try seconds(s.value(opt), option: "--interval", command: "stat")
                intervalGiven = true
            case "--dir":
                let d = try s.value(opt)
                if d.isEmpty { throw UsageError("--dir wants a directory", command: "stat") }
                o.dir = d
            default: throw UsageError("unknown option '\(opt.name)'", command: "stat")
            }
        }
        if positional.count > 1 { throw UsageError("unexpected argument '\(positional[1])' (one PID at most)", command: "stat") }
        if let p = positional.first {
            guard p.allSatisfy({ $0.isASCII && $0.isNumber }), let pid = Int32(p), pid > 0 else {
                throw UsageError("PID wants a process id, not '\(p)'", command: "stat")
            }
            o.pid = pid
        }
        if o.json { o.once = true }
        if intervalGiven, !o.once, o.interval < 0.1 {
            throw UsageError("--interval wants at least 0.1 seconds when refreshing, not '\(o.interval)'", command: "stat")
        }
        if o.interval > 86400 { throw UsageError("--interval wants at most 86400 seconds", command: "stat") }
        return .stat(o)
    }

    static func parseMetrics(_ args: [String]) throws(UsageError) -> Command {
        var o = MetricsOptions()
        var s = Scanner(command: "metrics", args: args)
        var trailing: [String]?
        while let opt = s.nextOption(trailing: &trailing) {
            switch opt.name {
            case _ where isHelp(opt.name): return .help("metrics")
            case "--listen":
                let v = try s.value(opt)
                guard let a = ListenAddress.parse(v) else {
                    throw UsageError("--listen wants HOST:PORT or :PORT (port 0 to 65535), not '\(v)'", command: "metrics")
                }
                o.listen = a
            case "--dir":
                let d = try s.value(opt)
                if d.isEmpty { throw UsageError("--dir wants a directory", command: "metrics") }
                o.dir = d
            default: throw UsageError("unknown option '\(opt.name)'", command: "metrics")
            }
        }
        if let t = trailing, !t.isEmpty {
            throw UsageError("unexpected argument '\(t[0])'", command: "metrics")
        }
        return .metrics(o)
    }

    static func parseInstall(_ args: [String]) throws(UsageError) -> Command {
        var o = InstallOptions()
        var s = Scanner(command: "install", args: args)
        var trailing: [String]?
        while let opt = s.nextOption(trailing: &trailing) {
            switch opt.name {
            case _ where isHelp(opt.name): return .help("install")
            case "--prefix": o.prefix = try prefix(s.value(opt))
            case "--from":
                let d = try s.value(opt)
                if d.isEmpty { throw UsageError("--from wants a directory", command: "install") }
                o.from = d
            case "--dry-run": try s.noValue(opt); o.dryRun = true
            case "--force": try s.noValue(opt); o.force = true
            default: throw UsageError("unknown option '\(opt.name)'", command: "install")
            }
        }
        if let t = trailing, !t.isEmpty {
            throw UsageError("unexpected argument '\(t[0])'", command: "install")
        }
        return .install(o)
    }

    /// An install prefix: absolute (like configure's --prefix), and free of
    /// whitespace and ':', which split paths in LD_PRELOAD and
    /// /etc/ld.so.preload. Returned normalised.
    static func prefix(_ s: String) throws(UsageError) -> String {
        guard s.hasPrefix("/") else {
            throw UsageError("--prefix wants an absolute directory, not '\(s)'", command: "install")
        }
        guard !s.contains(where: { $0.isWhitespace || $0 == ":" }) else {
            throw UsageError("--prefix cannot contain spaces or ':' (LD_PRELOAD would split the path there), not '\(s)'", command: "install")
        }
        var parts: [Substring] = []
        for p in s.split(separator: "/") where p != "." {
            if p == ".." { _ = parts.popLast() } else { parts.append(p) }
        }
        return "/" + parts.joined(separator: "/")
    }
}
