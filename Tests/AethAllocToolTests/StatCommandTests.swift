import Foundation
import Testing

@testable import AethAllocToolCore

#if canImport(Glibc)
import Glibc
#endif

func runTool(_ args: [String]) -> (code: Int32, out: String, err: String) {
    let c = Console.capturing()
    let code = AethAllocTool.main(["aethalloc-cli"] + args, console: c, locator: noLibraries)
    return (code, c.capturedOut, c.capturedErr)
}

@Suite struct StatArgumentTests {
    func stat(_ args: [String]) throws -> StatOptions {
        guard case .stat(let o) = try Arguments.parse(["stat"] + args) else { throw ToolError("not stat") }
        return o
    }

    @Test func statOptions() throws {
        let d = try stat([])
        #expect(d.pid == nil && !d.once && !d.json && d.interval == 1 && d.dir == nil)
        let a = try stat(["1234", "--once", "--interval", "0.5", "--dir", "/tmp/x"])
        #expect(a.pid == 1234 && a.once && a.interval == 0.5 && a.dir == "/tmp/x")
        let b = try stat(["--json", "--interval=0", "42"])
        #expect(b.pid == 42 && b.json && b.once && b.interval == 0)
        #expect(try Arguments.parse(["stat", "--help"]) == .help("stat"))
        #expect(try Arguments.parse(["help", "metrics"]) == .help("metrics"))
        for bad in [["stat", "abc"], ["stat", "1", "2"], ["stat", "--interval", "0"], ["stat", "--interval", "x"],
                    ["stat", "--frob"], ["stat", "--once=1"], ["stat", "--dir", ""], ["stat", "0"], ["stat", "-5"]] {
            #expect(throws: UsageError.self, "\(bad)") { try Arguments.parse(bad) }
        }
    }

    @Test func metricsOptions() throws {
        guard case .metrics(let d) = try Arguments.parse(["metrics"]) else { Issue.record("not metrics"); return }
        #expect(d.listen == ListenAddress(host: "127.0.0.1", port: 9091) && d.dir == nil)
        guard case .metrics(let o) = try Arguments.parse(["metrics", "--listen", ":9100", "--dir=/d"]) else { Issue.record("not metrics"); return }
        #expect(o.listen == ListenAddress(host: "127.0.0.1", port: 9100) && o.dir == "/d")
        let e = runTool(["metrics", "--listen", "9100"])
        #expect(e.code == 2)
        #expect(e.err == "aethalloc-cli metrics: --listen wants HOST:PORT or :PORT (port 0 to 65535), not '9100'; see 'aethalloc-cli metrics --help'\n")
        #expect(runTool(["metrics", "extra"]).code == 2)
        let help = runTool(["help", "stat"])
        #expect(help.code == 0 && help.out.contains("--interval SEC"))
        #expect(runTool(["help"]).out.contains("aethalloc-cli metrics [--listen HOST:PORT] [--dir DIR]"))
    }
}

@Suite struct StatCommandTests {
    @Test func onceJSONAndTable() throws {
        let dir = try tempDir("stat")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var f = FakeStats()
        f.command = "fake\u{1B}[2J"
        f.counters = counters(100_000, 99_000)
        _ = try f.write(to: dir)

        let j = runTool(["stat", "--json", "--interval", "0", "--dir", dir])
        #expect(j.code == 0, "\(j.err)")
        #expect(j.err.isEmpty)
        let report = try JSONDecoder().decode(StatReport.self, from: Data(j.out.utf8))
        #expect(report.directory == dir)
        #expect(report.errors.isEmpty)
        #expect(report.processes.count == 1)
        let p = report.processes[0]
        #expect(p.pid == Int64(getpid()) && p.variant == "metrics" && p.command == "fake\u{1B}[2J")
        #expect(p.counters == f.counters)
        #expect(p.rates == nil)  // one snapshot
        #expect(p.sizeClasses.count == 2)
        // Raw counters under the C header's names.
        #expect(j.out.contains(#""peak_bytes_in_use" : 1048576"#))
        #expect(j.out.contains(#""cache_hit_ratio" : 0.9"#))

        // Two snapshots: rates, 0 here since nothing changes.
        let two = runTool(["stat", "\(getpid())", "--json", "--interval", "0.05", "--dir", dir])
        let r2 = try JSONDecoder().decode(StatReport.self, from: Data(two.out.utf8))
        #expect(r2.processes.first?.rates == StatsRates(allocsPerSec: 0, freesPerSec: 0))

        let t = runTool(["stat", "--once", "--interval", "0", "--dir", dir])
        #expect(t.code == 0)
        let lines = t.out.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[0].trimmingCharacters(in: .whitespaces).hasPrefix("pid  command"))
        #expect(lines[0].contains("allocs/s  frees/s"))
        #expect(lines[2].contains("fake?[2J  metrics"))  // no escape sequence reaches the terminal
        #expect(lines[2].contains("4.00 KiB  1.00 MiB  3.00 MiB  1.00 MiB       90.0%"))
    }

    @Test func badFilesAreOneLineErrors() throws {
        let dir = try tempDir("statbad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try FakeStats().write(to: dir)
        var newer = FakeStats()
        newer.version = 2
        newer.pid = Int64(getppid())
        _ = try newer.write(to: dir)
        try Data(FakeStats().bytes.prefix(100)).write(to: URL(fileURLWithPath: dir + "/aethalloc-1.stats"))
        let r = runTool(["stat", "--once", "--interval", "0", "--dir", dir])
        #expect(r.code == 1)
        let errs = r.err.split(separator: "\n").map(String.init)
        #expect(errs.count == 2)
        #expect(errs.contains("aethalloc-cli stat: \(dir)/aethalloc-1.stats: truncated statistics file: 100 bytes, a version-1 file has at least 1248"))
        #expect(errs.contains("aethalloc-cli stat: \(dir)/aethalloc-\(getppid()).stats: written by a newer AethAlloc (version 2); this aethalloc-cli reads up to 1"))
        // The good one is still shown.
        #expect(r.out.contains("\(getpid())  fake"))

        let missing = runTool(["stat", "--once", "--dir", dir + "/nope"])
        #expect(missing.code == 1)
        #expect(missing.err == "aethalloc-cli stat: cannot read the statistics directory \(dir)/nope: no such file or directory\n")
        let notDir = runTool(["stat", "99", "--once", "--dir", dir + "/aethalloc-1.stats"])
        #expect(notDir.code == 1)
        #expect(notDir.err.hasSuffix(": not a directory\n"))

        // A pid with nothing published, and a dead one whose file is removed.
        let empty = try tempDir("statnone")
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let none = runTool(["stat", "\(getppid() == 1 ? 2 : 1)", "--once", "--interval", "0", "--dir", empty])
        #expect(none.code == 1)
        #expect(none.err.contains("no statistics for pid"))
        let dead = try deadPid()
        var stale = FakeStats()
        stale.pid = Int64(dead)
        let stalePath = try stale.write(to: dir)
        let gone = runTool(["stat", "\(dead)", "--once", "--interval", "0", "--dir", dir])
        #expect(gone.code == 1)
        #expect(gone.err == "aethalloc-cli stat: pid \(dead) is not running (removed its stale \(stalePath))\n")
        #expect(!FileManager.default.fileExists(atPath: stalePath))
    }

    @Test func permissionDenied() throws {
        let dir = try tempDir("statperm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try FakeStats().write(to: dir)
        #expect(chmod(path, 0) == 0)
        if geteuid() != 0 {
            let r = runTool(["stat", "--once", "--interval", "0", "--dir", dir])
            #expect(r.code == 1)
            #expect(r.err == "aethalloc-cli stat: \(path): cannot open it: permission denied\n")
            return
        }
        // root reads anything: run the built tool as nobody instead.
        let tool = try builtTool()
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser") else {
            Issue.record("running as root without runuser: cannot test permission denied")
            return
        }
        let r = try runChild(ChildSpec(
            argv: ["/usr/sbin/runuser", "-u", "nobody", "--", tool, "stat", "--once", "--interval", "0", "--dir", dir],
            environment: ProcessInfo.processInfo.environment))
        #expect(r.status == .exited(1), "\(String(decoding: r.stderr, as: UTF8.self))")
        #expect(String(decoding: r.stderr, as: UTF8.self) == "aethalloc-cli stat: \(path): cannot open it: permission denied\n")
    }
}

/// The aethalloc-cli binary that `swift build`/`swift test` put next to the
/// test bundle.
func builtTool() throws -> String {
    var dirs: [String] = []
    if let exe = Locator.executablePath() { dirs.append((exe as NSString).deletingLastPathComponent) }
    dirs.append(Bundle.main.bundleURL.deletingLastPathComponent().path)
    dirs.append(Bundle.main.bundlePath)
    for d in dirs where FileManager.default.isExecutableFile(atPath: d + "/aethalloc-cli") { return d + "/aethalloc-cli" }
    throw ToolError("aethalloc-cli is not built next to the tests (looked in \(dirs.joined(separator: ", "))); run 'swift build'")
}
