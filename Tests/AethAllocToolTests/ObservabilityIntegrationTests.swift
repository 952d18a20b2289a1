// The reader side against the real writer: programs running under
// .build/release/libaethalloc-metrics.so, read by `stat` and scraped from
// `metrics` with curl. A missing library fails these tests (build it with
// `swift build -c release`); nothing here is skipped for it.
import Foundation
import Testing

@testable import AethAllocToolCore

#if canImport(Glibc)
import Glibc
#endif

enum RealLibrary {
    static let path: String? = {
        guard let root = Locator.findPackageRoot() else { return nil }
        return root + "/.build/release/libaethalloc-metrics.so"
    }()

    /// The metrics variant, or a failure telling how to build it.
    static func require() throws -> String {
        guard let p = path, FileManager.default.fileExists(atPath: p) else {
            throw ToolError("\(path ?? ".build/release/libaethalloc-metrics.so") is missing: run 'swift build -c release' first")
        }
        return p
    }

    /// The test program: `aethstat-prog MODE GO READY [N]`.
    /// alloc: a thread does N malloc(64)+free pairs and exits (so its
    ///        counters are flushed), then READY is created.
    /// hammer: two threads malloc and free mixed sizes until GO exists;
    ///        READY is created once they run.
    /// Then it sleeps until the file GO exists, and exits 0.
    static let source = #"""
        #include <fcntl.h>
        #include <pthread.h>
        #include <stdlib.h>
        #include <string.h>
        #include <unistd.h>

        static long n = 100000;
        static volatile int stop;

        static void *once(void *arg) {
            (void)arg;
            for (long i = 0; i < n; i++) {
                char *p = malloc(64);
                if (!p) abort();
                p[0] = (char)i;
                free(p);
            }
            return 0;
        }

        static void *hammer(void *arg) {
            void *slots[256] = {0};
            unsigned x = (unsigned)(size_t)arg * 2654435761u + 1;
            while (!stop) {
                for (int i = 0; i < 10000; i++) {
                    x = x * 1103515245u + 12345u;
                    int k = (x >> 8) & 255;
                    free(slots[k]);
                    slots[k] = malloc(16 + ((x >> 16) & 1023));
                    if (!slots[k]) abort();
                }
            }
            for (int k = 0; k < 256; k++) free(slots[k]);
            return 0;
        }

        int main(int argc, char **argv) {
            if (argc < 4) return 2;
            const char *mode = argv[1], *go = argv[2], *ready = argv[3];
            if (argc > 4) n = atol(argv[4]);
            pthread_t t[2];
            int hammering = strcmp(mode, "hammer") == 0;
            if (hammering) {
                for (long i = 0; i < 2; i++) pthread_create(&t[i], 0, hammer, (void *)(i + 1));
            } else {
                pthread_create(&t[0], 0, once, 0);
                pthread_join(t[0], 0);
            }
            close(open(ready, O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
            while (access(go, F_OK) != 0) usleep(5000);
            if (hammering) {
                stop = 1;
                for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
            }
            return 0;
        }
        """#

    /// Compiled once, into a path named by a hash of the source, so that
    /// runs share it and nothing piles up in the temporary directory.
    static let program: Result<String, ToolError> = {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in source.utf8 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        // The name is the command the library publishes (at most 15 bytes).
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aethalloc-tool-tests-\(getuid())/\(String(hash, radix: 16))").path
        let bin = dir + "/aethstat-prog"
        if FileManager.default.isExecutableFile(atPath: bin) { return .success(bin) }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let src = dir + "/prog-\(getpid()).c", tmp = bin + ".\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: src) }
            try source.write(toFile: src, atomically: true, encoding: .utf8)
            let r = try runChild(ChildSpec(argv: [cCompiler, "-O1", "-pthread", "-o", tmp, src], environment: ProcessInfo.processInfo.environment))
            guard r.status.succeeded else { return .failure(ToolError("\(cCompiler) failed: \(String(decoding: r.stderr, as: UTF8.self))")) }
            guard rename(tmp, bin) == 0 else { return .failure(ToolError("cannot rename \(tmp)")) }
            return .success(bin)
        } catch {
            return .failure(ToolError("cannot compile the test program: \(error)"))
        }
    }()
}

/// One run of the test program under the metrics variant.
final class TracedProgram {
    let process = Process()
    let go: String
    let ready: String
    let stderrPipe = Pipe()
    let work: String

    init(_ mode: String, statsDir: String, count: Int? = nil, environment extra: [String: String] = [:]) throws {
        let lib = try RealLibrary.require()
        let prog = try RealLibrary.program.get()
        work = try tempDir("run")
        go = work + "/go"
        ready = work + "/ready"
        var env = ProcessInfo.processInfo.environment
        env["LD_PRELOAD"] = lib
        env["AETHALLOC_STATS_DIR"] = statsDir
        for (k, v) in extra { env[k] = v }
        process.executableURL = URL(fileURLWithPath: prog)
        process.arguments = [mode, go, ready] + (count.map { [String($0)] } ?? [])
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = stderrPipe
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var statsFile: (String) -> String { { dir in dir + "/" + StatsDirectory.fileName(pid: self.pid) } }

    /// Waits until the program said it is ready.
    func waitReady(timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !FileManager.default.fileExists(atPath: ready) {
            if !process.isRunning { throw ToolError("test program exited early: \(process.terminationStatus)") }
            if Date() > deadline { throw ToolError("test program not ready after \(timeout) s") }
            usleep(5000)
        }
    }

    /// Lets it exit normally; returns its exit status.
    @discardableResult
    func finish(timeout: Double = 20) -> Int32 {
        _ = FileManager.default.createFile(atPath: go, contents: nil)
        return waitExit(timeout: timeout)
    }

    func kill9() {
        kill(pid, SIGKILL)
        _ = waitExit(timeout: 20)
    }

    func waitExit(timeout: Double) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                kill(pid, SIGKILL)
                process.waitUntilExit()
                return -1
            }
            usleep(5000)
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: work)
    }
}

func curl(_ url: String) throws -> String {
    let r = try runChild(ChildSpec(argv: ["curl", "-sf", "--max-time", "10", url], environment: ProcessInfo.processInfo.environment))
    guard r.status.succeeded else { throw ToolError("curl \(url): \(r.status.description)") }
    return String(decoding: r.stdout, as: UTF8.self)
}

/// Parses samples of an exposition: "name{labels}" → value.
func samples(_ text: String) -> [String: Double] {
    var out: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let sp = line.lastIndex(of: " "), let v = Double(line[line.index(after: sp)...]) else { continue }
        out[String(line[..<sp])] = v
    }
    return out
}

let haveCurl = (try? runChild(ChildSpec(argv: ["curl", "--version"], environment: ProcessInfo.processInfo.environment)))?
    .status.succeeded == true

let havePromtool = FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool")
    || (try? runChild(ChildSpec(argv: ["promtool", "--version"], environment: ProcessInfo.processInfo.environment)))?.status.succeeded == true

@Suite struct ObservabilityIntegrationTests {
    func statJSON(_ args: [String]) throws -> (StatReport, String) {
        let r = runTool(["stat", "--json"] + args)
        #expect(r.code == 0, "\(r.err)")
        return (try JSONDecoder().decode(StatReport.self, from: Data(r.out.utf8)), r.err)
    }

    @Test func statSeesARealProcess() throws {
        let dir = try tempDir("real-stat")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try TracedProgram("alloc", statsDir: dir, count: 100_000)
        try p.waitReady()
        let (report, _) = try statJSON(["\(p.pid)", "--interval", "0.2", "--dir", dir])
        #expect(report.processes.count == 1)
        let s = try #require(report.processes.first)
        #expect(s.pid == Int64(p.pid))
        #expect(s.command == "aethstat-prog")
        #expect(s.variant == "metrics")
        #expect(s.counters.allocs >= 100_000)
        #expect(s.counters.frees >= 100_000)
        #expect(s.counters.threadsExited >= 1)
        #expect(s.counters.cacheHits > 0)
        #expect(s.counters.bytesMapped > 0)
        #expect(s.rates != nil)
        #expect(s.sizeClasses.contains { $0.size == 64 && $0.allocs >= 100_000 })

        let table = runTool(["stat", "--once", "--interval", "0", "--dir", dir])
        #expect(table.code == 0)
        #expect(table.out.contains("\(p.pid)  aethstat-prog  metrics"))

        #expect(p.finish() == 0)
        // A normal exit removes the file.
        #expect(!FileManager.default.fileExists(atPath: p.statsFile(dir)))
    }

    @Test(.enabled(if: haveCurl, "curl is not installed (Debian package curl)"))
    func exporterServesRealProcesses() throws {
        let dir = try tempDir("real-metrics")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try TracedProgram("alloc", statsDir: dir, count: 100_000)
        let b = try TracedProgram("alloc", statsDir: dir, count: 200_000)
        try a.waitReady()
        try b.waitReady()
        // A corrupt file of a live process (this one): skipped, counted, logged once.
        let corrupt = dir + "/" + StatsDirectory.fileName(pid: getpid())
        try Data("corrupt!".utf8).write(to: URL(fileURLWithPath: corrupt))

        let console = Console.capturing()
        var o = MetricsOptions()
        o.listen = ListenAddress(host: "127.0.0.1", port: 0)
        o.dir = dir
        let (_, server) = try MetricsCommand.start(o, console: console)
        let s = RunningServer(server)
        defer { s.stop() }
        let url = "http://127.0.0.1:\(s.port)/metrics"

        let text = try curl(url)
        let m = samples(text)
        for (prog, n) in [(a, 100_000.0), (b, 200_000.0)] {
            let labels = #"{pid="\#(prog.pid)",command="aethstat-prog",variant="metrics"}"#
            #expect((m["aethalloc_allocs_total" + labels] ?? 0) >= n, "\(labels)")
            #expect((m["aethalloc_frees_total" + labels] ?? 0) >= n)
            #expect((m["aethalloc_threads_exited_total" + labels] ?? 0) >= 1)
            #expect((m["aethalloc_mapped_bytes_total" + labels] ?? 0) > 0)
            #expect(m["aethalloc_peak_bytes_in_use" + labels] != nil)
        }
        #expect(m["aethalloc_processes"] == 2)
        #expect(m[#"aethalloc_exporter_errors_total{kind="file"}"#] == 1)
        _ = try curl(url)
        #expect(console.capturedErr == "aethalloc-cli metrics: skipping \(corrupt): not an AethAlloc statistics file (bad magic)\n")

        // A malformed request gets 400; serving goes on and counts it.
        #expect(rawHTTP(port: s.port, Array("NOT HTTP AT ALL\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 400 "))
        let after = samples(try curl(url))
        #expect(after[#"aethalloc_exporter_errors_total{kind="request"}"#] == 1)
        #expect(after[#"aethalloc_exporter_errors_total{kind="file"}"#] == 3)
        #expect(try curl("http://127.0.0.1:\(s.port)/").contains("/metrics"))

        #expect(a.finish() == 0)
        #expect(b.finish() == 0)
        #expect(samples(try curl(url))["aethalloc_processes"] == 0)
    }

    @Test(
        .enabled(if: havePromtool, "promtool not installed (Debian package prometheus)"),
        .enabled(if: haveCurl, "curl is not installed (Debian package curl)"))
    func promtoolAcceptsTheExposition() throws {
        let dir = try tempDir("real-promtool")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try TracedProgram("alloc", statsDir: dir, count: 1000)
        try p.waitReady()
        try Data("junk".utf8).write(to: URL(fileURLWithPath: dir + "/" + StatsDirectory.fileName(pid: getpid())))
        var o = MetricsOptions()
        o.listen = ListenAddress(host: "127.0.0.1", port: 0)
        o.dir = dir
        let (_, server) = try MetricsCommand.start(o, console: .capturing())
        let s = RunningServer(server)
        defer { s.stop() }
        let scraped = try curl("http://127.0.0.1:\(s.port)/metrics")
        #expect(scraped.contains("aethalloc_allocs_total{pid=\"\(p.pid)\""))
        // And hostile label values.
        var odd = StatsSnapshot()
        odd.pid = 1
        odd.command = "a\"b\\c\nd é"
        odd.variant = "metrics"
        for (name, text) in [("scraped", scraped), ("hostile", Prometheus.exposition([odd], errors: ["file": 1]))] {
            let file = dir + "/\(name).txt"
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let r = try runChild(ChildSpec(argv: ["sh", "-c", "promtool check metrics < '\(file)'"], environment: ProcessInfo.processInfo.environment))
            #expect(r.status.succeeded, "\(name): \(String(decoding: r.stdout + r.stderr, as: UTF8.self))")
        }
        #expect(p.finish() == 0)
    }

    @Test func killedProcessesLeaveStaleFilesThatAreRemoved() throws {
        let dir = try tempDir("real-stale")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try TracedProgram("alloc", statsDir: dir, count: 1000)
        let b = try TracedProgram("alloc", statsDir: dir, count: 1000)
        try a.waitReady()
        try b.waitReady()
        a.kill9()
        b.kill9()
        #expect(FileManager.default.fileExists(atPath: a.statsFile(dir)))
        #expect(FileManager.default.fileExists(atPath: b.statsFile(dir)))

        // stat drops the dead one named on the command line, with a reason.
        let one = runTool(["stat", "\(a.pid)", "--once", "--interval", "0", "--dir", dir])
        #expect(one.code == 1)
        #expect(one.err == "aethalloc-cli stat: pid \(a.pid) is not running (removed its stale \(a.statsFile(dir)))\n")
        #expect(!FileManager.default.fileExists(atPath: a.statsFile(dir)))
        // The exporter removes the other, logs it, and serves no process.
        let console = Console.capturing()
        let text = MetricsExporter(directory: dir, console: console).scrape()
        #expect(text.contains("aethalloc_processes 0\n"))
        #expect(console.capturedErr == "aethalloc-cli metrics: removed \(b.statsFile(dir)): its process is gone\n")
        #expect(!FileManager.default.fileExists(atPath: b.statsFile(dir)))
    }

    /// 50 scrapes as fast as curl goes, and many more direct reads, while two
    /// threads hammer malloc: counters only grow, frees never pass allocs.
    @Test(.enabled(if: haveCurl, "curl is not installed (Debian package curl)"))
    func scrapesDuringHeavyAllocationAreConsistent() throws {
        let dir = try tempDir("real-hammer")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try TracedProgram("hammer", statsDir: dir)
        try p.waitReady()
        let path = p.statsFile(dir)

        let console = Console.capturing()
        var o = MetricsOptions()
        o.listen = ListenAddress(host: "127.0.0.1", port: 0)
        o.dir = dir
        let (_, server) = try MetricsCommand.start(o, console: console)
        let s = RunningServer(server)
        defer { s.stop() }
        let labels = #"{pid="\#(p.pid)",command="aethstat-prog",variant="metrics"}"#
        let slack = 10_000.0
        var last: [String: Double] = [:]
        var firstAllocs: Double?
        for i in 0..<50 {
            let m = samples(try curl("http://127.0.0.1:\(s.port)/metrics"))
            guard let allocs = m["aethalloc_allocs_total" + labels], let frees = m["aethalloc_frees_total" + labels] else {
                Issue.record("scrape \(i): no series for pid \(p.pid)")
                continue
            }
            firstAllocs = firstAllocs ?? allocs
            #expect(frees <= allocs + slack, "scrape \(i): frees \(frees) > allocs \(allocs)")
            for name in ["aethalloc_allocs_total", "aethalloc_frees_total", "aethalloc_cache_hits_total", "aethalloc_cache_misses_total",
                         "aethalloc_mapped_bytes_total", "aethalloc_returned_bytes_total", "aethalloc_depot_transfers_total"] {
                let v = m[name + labels] ?? -1
                #expect(v >= (last[name] ?? 0), "scrape \(i): \(name) went from \(last[name] ?? 0) to \(v)")
                last[name] = v
            }
            let inUse = m["aethalloc_bytes_in_use" + labels] ?? 0, peak = m["aethalloc_peak_bytes_in_use" + labels] ?? 0
            #expect(inUse >= 0 && peak >= 0)
        }
        #expect(console.capturedErr.isEmpty)

        var lastSnapshot: StatsSnapshot?
        var reads = 0
        let t0 = Date()
        while reads < 5000, Date().timeIntervalSince(t0) < 10 {
            let snap = try StatsFile.read(path: path)
            reads += 1
            #expect(Double(snap.counters.frees) <= Double(snap.counters.allocs) + slack)
            if let l = lastSnapshot {
                #expect(snap.sequence >= l.sequence && snap.publishes >= l.publishes)
                #expect(snap.counters.allocs >= l.counters.allocs && snap.counters.frees >= l.counters.frees)
            }
            lastSnapshot = snap
        }
        #expect((lastSnapshot.map { Double($0.counters.allocs) } ?? 0) > (firstAllocs ?? .infinity), "the counters did not move")
        #expect(p.finish() == 0)
    }

    /// The library's own warning for a directory it cannot publish in; the
    /// program runs on.
    @Test func unusableStatsDirWarnsOnce() throws {
        let lib = try RealLibrary.require()
        let prog = try RealLibrary.program.get()
        let work = try tempDir("real-warn")
        defer { try? FileManager.default.removeItem(atPath: work) }
        _ = FileManager.default.createFile(atPath: work + "/go", contents: nil)
        _ = FileManager.default.createFile(atPath: work + "/a-file", contents: nil)
        let readOnly = work + "/ro"
        try FileManager.default.createDirectory(atPath: readOnly, withIntermediateDirectories: false)
        #expect(chmod(readOnly, 0o555) == 0)
        #expect(chmod(work, 0o755) == 0)
        var cases = [work + "/nonexistent/dir", work + "/a-file"]
        // root writes anywhere: the read-only case runs as nobody.
        let asNobody = geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser")
        if geteuid() != 0 || asNobody { cases.append(readOnly) }
        for dir in cases {
            var env = ProcessInfo.processInfo.environment
            env["AETHALLOC_STATS_DIR"] = dir
            var argv = [prog, "alloc", work + "/go", work + "/ready-\(cases.firstIndex(of: dir)!)", "1000"]
            if dir == readOnly, asNobody {
                #expect(chmod(work, 0o777) == 0)  // for the ready file
                argv = ["/usr/sbin/runuser", "-u", "nobody", "--", "env", "LD_PRELOAD=\(lib)"] + argv
            }
            let r = try runChild(ChildSpec(argv: argv, environment: env, preload: argv[0] == prog ? lib : nil))
            let err = String(decoding: r.stderr, as: UTF8.self)
            #expect(r.status == .exited(0), "\(dir): \(err)")
            #expect(err == "aethalloc: cannot publish statistics in AETHALLOC_STATS_DIR (\(dir)): not a writable directory\n", "\(dir)")
        }
    }

    /// The refreshing display of the built binary: frames until the watched
    /// process exits (status 0), and Ctrl-C ends it cleanly.
    @Test func liveStatFollowsAProcessAndStopsOnCtrlC() throws {
        let tool = try builtTool()
        let dir = try tempDir("real-live")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = try TracedProgram("alloc", statsDir: dir, count: 1000)
        try p.waitReady()

        func start(_ args: [String], output: String) throws -> Process {
            let proc = Process()
            proc.executableURL = URL(fileURLWithPath: tool)
            proc.arguments = args
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let out = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            proc.standardOutput = out
            proc.standardError = out
            try proc.run()
            try out.close()
            return proc
        }
        func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        /// Waits up to 10 s for `ok`.
        func eventually(_ ok: () -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(10)
            while !ok() {
                if Date() > deadline { return false }
                usleep(10_000)
            }
            return true
        }
        func frames(_ path: String) -> Int { text(path).components(separatedBy: "aethalloc-cli stat  \(dir)").count - 1 }

        let work = try tempDir("real-live-out")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let followOut = work + "/follow.txt", allOut = work + "/all.txt"
        // Following one pid: ends by itself when it exits.
        let follow = try start(["stat", "\(p.pid)", "--interval", "0.2", "--dir", dir], output: followOut)
        // Watching all: ends on SIGINT.
        let all = try start(["stat", "--interval", "0.2", "--dir", dir], output: allOut)
        defer {
            for proc in [follow, all] where proc.isRunning {
                kill(proc.processIdentifier, SIGKILL)
                proc.waitUntilExit()
            }
        }
        #expect(eventually { frames(followOut) >= 2 && frames(allOut) >= 2 }, "\(text(followOut))")
        #expect(p.finish() == 0)
        guard eventually({ !follow.isRunning }) else {
            Issue.record("stat PID did not end when PID exited")
            return
        }
        #expect(follow.terminationStatus == 0)
        let followText = text(followOut)
        #expect(followText.contains("\(p.pid)  aethstat-prog  metrics"))
        #expect(followText.hasSuffix("pid \(p.pid) has exited\n"))

        #expect(eventually { text(allOut).contains("no process publishes AethAlloc statistics in \(dir)") })
        #expect(all.isRunning)
        kill(all.processIdentifier, SIGINT)
        guard eventually({ !all.isRunning }) else {
            Issue.record("stat did not stop on SIGINT")
            return
        }
        #expect(all.terminationReason == .exit && all.terminationStatus == 0)
        let allText = text(allOut)
        #expect(allText.contains("aethstat-prog"))
    }
}
