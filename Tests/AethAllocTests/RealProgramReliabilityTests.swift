// Real programs for issue 6, under LD_PRELOAD of every built variant and
// compared with the same run without it (the baselines run once per test
// process): a subset of Python's own regression tests, sqlite3 on a
// generated database, and redis-server driven by redis-cli and
// redis-benchmark. See the Reliability section of README.md.
//
// Needs (Debian): libpython3.11-testsuite (the `test` package for
// /usr/bin/python3.11), sqlite3, redis-server, redis-tools. A test whose
// program is missing is skipped with a message.
//
//   AETHALLOC_PYTHON_TESTS="test_dict test_set ..."   another list of Python tests
//   AETHALLOC_REDIS_REQUESTS=200000                   redis-benchmark requests per test (default 20000)

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Python's regression tests

enum RLPythonSuite {
    /// Debian's interpreter: the installed `test` package belongs to it (a
    /// pyenv `python3` on PATH may be another 3.11.x).
    static let python = "/usr/bin/python3.11"

    static let available: Bool =
        FileManager.default.isExecutableFile(atPath: python)
        && FileManager.default.fileExists(atPath: "/usr/lib/python3.11/test/test_dict.py")
        && FileManager.default.fileExists(atPath: "/usr/lib/python3.11/test/libregrtest")

    /// Allocation-heavy tests: containers, strings and bytes, parsers and
    /// serialisers, the garbage collector and weak references, the compiler,
    /// and threads. About 30 s with -j2 on two cores.
    static let defaultTests = [
        "test_dict", "test_list", "test_set", "test_tuple", "test_deque", "test_bytes", "test_unicode",
        "test_string", "test_memoryview", "test_array", "test_struct", "test_json", "test_re", "test_itertools",
        "test_collections", "test_ordered_dict", "test_userdict", "test_heapq", "test_bisect", "test_sort",
        "test_gc", "test_weakref", "test_pickle", "test_copy", "test_marshal", "test_zlib", "test_hashlib",
        "test_decimal", "test_long", "test_functools", "test_enum", "test_dataclasses", "test_csv",
        "test_xml_etree", "test_ast", "test_compile", "test_threading",
    ]

    static var tests: [String] {
        let custom = (ProcessInfo.processInfo.environment["AETHALLOC_PYTHON_TESTS"] ?? "")
            .split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        return custom.isEmpty ? defaultTests : custom
    }

    /// Runs the tests (every object through malloc: PYTHONMALLOC=malloc).
    static func run(preload: String?) async throws -> BBProcessOutput {
        let dir = try BBScratch.directory(preload == nil ? "pytest-baseline" : "pytest-preload")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = [
            "PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": dir.path,
            "LC_ALL": "C.UTF-8", "HOME": dir.path,
        ]
        return try await BBProcess.run(
            python, ["-m", "test", "-j2", "--timeout=600"] + tests, environment: env, preload: preload,
            directory: dir, timeout: .seconds(1500))
    }

    /// test name -> status ("passed", "failed", "skipped", "env changed", ...)
    /// from regrtest's progress lines "[ 3/37] test_dict passed (1.2 sec)".
    static func statuses(_ output: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in output.split(separator: "\n") {
            guard let close = line.range(of: "] test_") else { continue }
            let rest = line[line.index(after: close.lowerBound)...].trimmingCharacters(in: .whitespaces)
            let parts = rest.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            var status = String(parts[1])
            for cut in [" (", " --", " within"] {
                if let r = status.range(of: cut) { status = String(status[..<r.lowerBound]) }
            }
            result[String(parts[0])] = status.trimmingCharacters(in: .whitespaces)
        }
        return result
    }
}

// MARK: - sqlite3

enum RLSQLite {
    static let available = BBProcess.find("sqlite3") != nil

    /// 20k customers, 100k orders, 300 blobs up to 1.8 MB; indexes, joins,
    /// window functions, updates, deletes, VACUUM, integrity check, and
    /// sha3 digests of whole tables (the sqlite3 shell's sha3_query).
    static let script = """
        PRAGMA journal_mode=WAL;
        PRAGMA cache_size=-65536;
        CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, score REAL);
        CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id), amount INTEGER,
          note TEXT, created TEXT);
        BEGIN;
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
        INSERT INTO customers SELECT x, printf('customer-%08x', (x * 2654435761) % 4294967296),
          'city' || (x * 31 % 97), ((x * 7) % 1000) / 10.0 FROM c;
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
        INSERT INTO orders SELECT x, (x * 7919) % 20000 + 1, (x * 104729) % 10000,
          printf('note-%d-%s-%.*c', x, substr('abcdefghijklmnopqrstuvwxyz', x % 26 + 1, x % 13 + 1), x % 200, 'z'),
          date('2020-01-01', '+' || (x % 1500) || ' days') FROM c;
        COMMIT;
        CREATE INDEX orders_customer ON orders(customer);
        CREATE INDEX orders_created ON orders(created, amount);
        CREATE INDEX customers_city ON customers(city, score);
        CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300)
        INSERT INTO blobs SELECT x, CAST(printf('%.*c', x * 3000, char(65 + x % 26)) AS BLOB) FROM c;
        SELECT count(*), sum(amount), min(created), max(created), sum(length(note)) FROM orders;
        SELECT city, count(*), round(avg(score), 3) FROM customers GROUP BY city ORDER BY city;
        SELECT c.city, count(o.id), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer
          GROUP BY c.city ORDER BY 3 DESC, 1;
        SELECT customer, sum(amount) AS s FROM orders GROUP BY customer ORDER BY s DESC, customer LIMIT 50;
        SELECT id, amount, sum(amount) OVER (PARTITION BY customer ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)
          FROM orders WHERE customer < 6 ORDER BY customer, id;
        SELECT length(group_concat(name, ',')) FROM (SELECT name FROM customers ORDER BY name DESC);
        SELECT note FROM orders ORDER BY note DESC, id LIMIT 20 OFFSET 5000;
        SELECT count(DISTINCT note), count(DISTINCT customer) FROM orders;
        UPDATE orders SET note = note || '-updated' WHERE amount % 7 = 0;
        DELETE FROM orders WHERE amount % 11 = 0;
        UPDATE blobs SET data = data || data WHERE id % 3 = 0;
        DELETE FROM blobs WHERE id % 5 = 0;
        SELECT count(*), sum(length(note)) FROM orders;
        SELECT count(*), sum(length(data)) FROM blobs;
        SELECT hex(sha3_query('SELECT * FROM orders ORDER BY id'));
        SELECT hex(sha3_query('SELECT * FROM blobs ORDER BY id'));
        VACUUM;
        PRAGMA integrity_check;
        SELECT hex(sha3_query('SELECT * FROM orders ORDER BY id'));
        SELECT hex(sha3_query('SELECT * FROM customers ORDER BY name'));
        SELECT o.created, count(*), max(c.score) FROM orders o JOIN customers c ON c.id = o.customer
          WHERE o.created BETWEEN '2021-01-01' AND '2021-03-01' GROUP BY o.created ORDER BY o.created;
        WITH RECURSIVE
          xaxis(x) AS (VALUES(-2.0) UNION ALL SELECT x + 0.05 FROM xaxis WHERE x < 1.2),
          yaxis(y) AS (VALUES(-1.0) UNION ALL SELECT y + 0.1 FROM yaxis WHERE y < 1.0),
          m(iter, cx, cy, x, y) AS (
            SELECT 0, x, y, 0.0, 0.0 FROM xaxis, yaxis
            UNION ALL
            SELECT iter + 1, cx, cy, x * x - y * y + cx, 2.0 * x * y + cy FROM m WHERE (x * x + y * y) < 4.0 AND iter < 28),
          m2(iter, cx, cy) AS (SELECT max(iter), cx, cy FROM m GROUP BY cx, cy),
          a(t) AS (SELECT group_concat(substr(' .+*#', 1 + min(iter / 7, 4), 1), '') FROM m2 GROUP BY cy)
        SELECT group_concat(rtrim(t), char(10)) FROM a;

        """

    static func run(preload: String?) async throws -> BBProcessOutput {
        let dir = try BBScratch.directory(preload == nil ? "sqlite-baseline" : "sqlite-preload")
        defer { try? FileManager.default.removeItem(at: dir) }
        let scriptURL = dir.appendingPathComponent("script.sql")
        try Data(script.utf8).write(to: scriptURL)
        return try await BBProcess.run(
            "sqlite3", ["-bail", dir.appendingPathComponent("test.db").path], environment: ["LC_ALL": "C"],
            preload: preload, directory: dir, stdin: scriptURL, timeout: .seconds(300))
    }
}

// MARK: - redis

enum RLRedis {
    static let available =
        BBProcess.find("redis-server") != nil && BBProcess.find("redis-cli") != nil
        && BBProcess.find("redis-benchmark") != nil

    static var requests: Int {
        Int(ProcessInfo.processInfo.environment["AETHALLOC_REDIS_REQUESTS"] ?? "") ?? 20_000
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BBFailure("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        guard bound == 0 else { throw BBFailure("bind() failed: errno \(errno)") }
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw BBFailure("getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// One command in the Redis protocol.
    static func resp(_ args: [String]) -> String {
        var s = "*\(args.count)\r\n"
        for a in args { s += "$\(a.utf8.count)\r\n\(a)\r\n" }
        return s
    }

    /// The commands written, and what the string keys must hold afterwards
    /// (nil: deleted). Strings of assorted sizes (to 300 KB), appends and
    /// overwrites, lists, hashes, sets, sorted sets, streams, deletions.
    static let workload: (commands: Data, count: Int, strings: [(String, String?)]) = {
        var rng = BBRandom(seed: 6379)
        var out = ""
        var count = 0
        func add(_ args: [String]) {
            out += resp(args)
            count += 1
        }
        func text(_ n: Int) -> String {
            String(decoding: (0..<n).map { _ in UInt8(ascii: "a") + UInt8(rng.below(26)) }, as: UTF8.self)
        }
        var strings: [String: String] = [:]
        let nkeys = 20_000
        for i in 0..<nkeys {
            let r = rng.below(1000)
            let len = r < 900 ? 1 + rng.below(200) : r < 995 ? 200 + rng.below(20_000) : 100_000 + rng.below(200_000)
            let v = text(len)
            add(["SET", "key:\(i)", v])
            strings["key:\(i)"] = v
        }
        for _ in 0..<5000 {
            let k = "key:\(rng.below(nkeys))"
            switch rng.below(3) {
            case 0:
                let v = text(1 + rng.below(500))
                add(["APPEND", k, v])
                strings[k] = (strings[k] ?? "") + v
            case 1:
                let v = text(1 + rng.below(3000))
                add(["SET", k, v])
                strings[k] = v
            default:
                add(["DEL", k])
                strings[k] = nil
            }
        }
        for j in 0..<1500 {
            add(["RPUSH", "list:\(j)"] + (0..<(1 + rng.below(200))).map { _ in text(1 + rng.below(40)) })
            if j % 3 == 0 { add(["LTRIM", "list:\(j)", "1", "-2"]) }
            add(["HSET", "hash:\(j)"] + (0..<(1 + rng.below(150))).flatMap { f in ["f\(f)", text(1 + rng.below(80))] })
            if j % 4 == 0 { add(["HDEL", "hash:\(j)", "f0", "f1", "f2"]) }
            add(["SADD", "set:\(j)"] + (0..<(1 + rng.below(300))).map { _ in String(rng.below(100_000)) })
            add(["ZADD", "zset:\(j)"] + (0..<(1 + rng.below(200))).flatMap { m in [String(rng.below(1000)), "m\(m)"] })
            if j % 5 == 0 { add(["ZREMRANGEBYRANK", "zset:\(j)", "0", "9"]) }
            for e in 0..<(j % 20) { add(["XADD", "stream:\(j % 100)", "\(j)-\(e)", "field", text(1 + rng.below(60))]) }
            add(["INCRBY", "counter:\(j % 50)", String(rng.below(1000))])
        }
        let checked = (0..<nkeys).filter { $0 % 7 == 0 }.map { "key:\($0)" }
        return (Data(out.utf8), count, checked.map { ($0, strings[$0]) })
    }()

    /// Runs the scenario against a server with `preload` (the clients get it
    /// too) and returns a transcript of the results that must not depend on
    /// the allocator. Throws on any failure, with the server's output.
    static func run(preload: String?) async throws -> String {
        let dir = try BBScratch.directory(preload == nil ? "redis-baseline" : "redis-preload")
        defer { try? FileManager.default.removeItem(at: dir) }
        var lastError = ""
        for _ in 0..<3 {
            let port = try freePort()
            let server = try RLServer(
                "redis-server",
                [
                    "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir.path,
                    "--dbfilename", "dump.rdb", "--enable-debug-command", "yes", "--daemonize", "no",
                    "--loglevel", "warning", "--logfile", "", "--protected-mode", "yes",
                ], preload: preload, directory: dir)
            do {
                let started = try await waitForPing(port: port, preload: preload, server: server)
                if !started {
                    // Most likely the port was taken meanwhile: try another.
                    lastError = server.stop().report
                    continue
                }
                let transcript = try await scenario(port: port, preload: preload, dir: dir, server: server)
                try await shutdown(port: port, preload: preload, server: server)
                return transcript
            } catch {
                let out = server.stop()
                throw BBFailure("\(error)\n--- redis-server ---\n\(out.report)")
            }
        }
        throw BBFailure("redis-server did not start (3 tries)\n\(lastError)")
    }

    static func cli(_ port: Int, _ args: [String], preload: String?, stdin: URL? = nil) async throws -> BBProcessOutput {
        try await BBProcess.run(
            "redis-cli", ["-h", "127.0.0.1", "-p", "\(port)"] + args, preload: preload, stdin: stdin,
            timeout: .seconds(120))
    }

    /// A successful redis-cli call's output, trimmed.
    static func query(_ port: Int, _ args: [String], preload: String?) async throws -> String {
        let r = try await cli(port, args, preload: preload)
        guard r.succeeded else { throw BBFailure("redis-cli \(args.joined(separator: " ")) failed\n\(r.report)") }
        return r.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func waitForPing(port: Int, preload: String?, server: RLServer) async throws -> Bool {
        for _ in 0..<100 {
            if !server.isRunning { return false }
            let r = try await cli(port, ["PING"], preload: preload)
            if r.succeeded && r.stdoutText.contains("PONG") { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw BBFailure("redis-server on port \(port) did not answer PING within 10 s")
    }

    static func scenario(port: Int, preload: String?, dir: URL, server: RLServer) async throws -> String {
        var transcript = ""
        // 1. Write the workload through a pipe.
        let input = dir.appendingPathComponent("commands.resp")
        try workload.commands.write(to: input)
        let piped = try await cli(port, ["--pipe"], preload: preload, stdin: input)
        guard piped.succeeded, piped.stdoutText.contains("errors: 0, replies: \(workload.count)") else {
            throw BBFailure("redis-cli --pipe of \(workload.count) commands failed\n\(piped.report)")
        }
        transcript += "pipe: \(workload.count) commands, errors: 0\n"
        // 2. Read back: the size, the digest, and every 7th string key.
        let dbsize = try await query(port, ["DBSIZE"], preload: preload)
        let digest = try await query(port, ["DEBUG", "DIGEST"], preload: preload)
        transcript += "dbsize: \(dbsize)\ndigest: \(digest)\n"
        let keys = workload.strings
        var mismatches = 0
        var firstMismatch = ""
        for start in stride(from: 0, to: keys.count, by: 500) {
            let chunk = Array(keys[start..<min(start + 500, keys.count)])
            let r = try await cli(port, ["--raw", "MGET"] + chunk.map(\.0), preload: preload)
            guard r.succeeded else { throw BBFailure("MGET failed\n\(r.report)") }
            let got = r.stdoutText.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for (i, (key, expected)) in chunk.enumerated() {
                let value = i < got.count ? got[i] : "<missing line>"
                if value != (expected ?? "") {
                    mismatches += 1
                    if firstMismatch.isEmpty {
                        firstMismatch = "\(key): expected \(expected?.count ?? 0) bytes \(expected?.prefix(40) ?? "(nil)"), got \(value.count) bytes \(value.prefix(40))"
                    }
                }
            }
        }
        guard mismatches == 0 else {
            throw BBFailure("\(mismatches) of \(keys.count) string keys read back wrong; first: \(firstMismatch)")
        }
        transcript += "strings read back: \(keys.count), all as written\n"
        transcript += "lists: " + (try await query(port, ["EVAL", evalSummary, "0"], preload: preload)) + "\n"
        // 3. Save and reload the whole dataset (frees and rebuilds every object).
        _ = try await query(port, ["DEBUG", "RELOAD"], preload: preload)
        let reloaded = try await query(port, ["DEBUG", "DIGEST"], preload: preload)
        guard reloaded == digest else { throw BBFailure("digest changed across DEBUG RELOAD: \(digest) -> \(reloaded)") }
        transcript += "after DEBUG RELOAD: same digest\n"
        // 4. A background save: the server forks.
        _ = try await query(port, ["BGSAVE"], preload: preload)
        var saved = false
        for _ in 0..<300 {
            let info = try await query(port, ["INFO", "persistence"], preload: preload)
            if info.contains("rdb_bgsave_in_progress:0") {
                guard info.contains("rdb_last_bgsave_status:ok") else { throw BBFailure("BGSAVE failed:\n\(info)") }
                saved = true
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard saved else { throw BBFailure("BGSAVE did not finish within 30 s") }
        transcript += "BGSAVE: ok\n"
        // 5. Load from redis-benchmark in database 1, then drop it: database
        //    0 is untouched.
        let tests = "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset"
        let bench = try await BBProcess.run(
            "redis-benchmark",
            [
                "-h", "127.0.0.1", "-p", "\(port)", "-q", "-n", "\(requests)", "-r", "10000", "-d", "200", "-c", "20",
                "-P", "4", "--dbnum", "1", "-t", tests,
            ], preload: preload, timeout: .seconds(600))
        let rps = bench.stdoutText.components(separatedBy: "requests per second").count - 1
        guard bench.succeeded, rps >= 14 else {
            throw BBFailure("redis-benchmark failed (\(rps) of 14 results)\n\(bench.report)")
        }
        transcript += "redis-benchmark: \(rps) tests of \(requests) requests\n"
        _ = try await query(port, ["-n", "1", "FLUSHDB"], preload: preload)
        let after = try await query(port, ["DEBUG", "DIGEST"], preload: preload)
        guard after == digest else { throw BBFailure("digest of database 0 changed by the benchmark: \(digest) -> \(after)") }
        transcript += "after the benchmark: same digest\n"
        guard server.isRunning else { throw BBFailure("redis-server exited") }
        return transcript
    }

    /// Sizes of the collections, summed by a server-side script.
    static let evalSummary = """
        local t = {0, 0, 0, 0, 0}
        for j = 0, 1499 do
          t[1] = t[1] + redis.call('LLEN', 'list:' .. j)
          t[2] = t[2] + redis.call('HLEN', 'hash:' .. j)
          t[3] = t[3] + redis.call('SCARD', 'set:' .. j)
          t[4] = t[4] + redis.call('ZCARD', 'zset:' .. j)
        end
        for j = 0, 99 do t[5] = t[5] + redis.call('XLEN', 'stream:' .. j) end
        return table.concat(t, ' ')
        """

    static func shutdown(port: Int, preload: String?, server: RLServer) async throws {
        _ = try await cli(port, ["SHUTDOWN", "NOSAVE"], preload: preload)
        for _ in 0..<300 {
            if !server.isRunning { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let out = server.stop()
        guard !out.timedOut, !out.signaled, out.status == 0 else {
            throw BBFailure("redis-server did not exit cleanly after SHUTDOWN: \(out.outcome)\n\(out.report)")
        }
    }
}

/// A background server process, its output in files; `stop()` kills it if
/// it still runs and returns what it printed.
final class RLServer: @unchecked Sendable {
    private let process = Process()
    private let outURL: URL
    private let errURL: URL
    private let command: String
    private let preload: String?
    private let start = Date()

    init(_ executable: String, _ arguments: [String], preload: String?, directory: URL) throws {
        guard let exe = BBProcess.find(executable) else { throw BBFailure("\(executable) not found") }
        let logs = try BBScratch.directory("server-\(executable)")
        outURL = logs.appendingPathComponent("stdout")
        errURL = logs.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        command = ([executable] + arguments).map(BBProcess.shellQuoted).joined(separator: " ")
        self.preload = preload
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "LD_PRELOAD")
        if let preload { env["LD_PRELOAD"] = preload }
        process.executableURL = URL(fileURLWithPath: exe)
        process.arguments = arguments
        process.environment = env
        process.currentDirectoryURL = directory
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        defer {
            try? out.close()
            try? err.close()
        }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var isRunning: Bool { process.isRunning }

    @discardableResult
    func stop() -> BBProcessOutput {
        let wasRunning = process.isRunning
        if wasRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return BBProcessOutput(
            command: command, preload: preload, status: process.terminationStatus,
            signaled: process.terminationReason == .uncaughtSignal, timedOut: wasRunning,
            stdout: (try? Data(contentsOf: outURL)) ?? Data(), stderr: (try? Data(contentsOf: errURL)) ?? Data(),
            seconds: Date().timeIntervalSince(start))
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

// MARK: - Tests

@Suite("Real programs (reliability): Python's regression tests, sqlite3, redis")
struct RealProgramReliabilityTests {
    @Test(
        "python3.11 -m test: same results with and without the preload",
        .enabled(if: RLPythonSuite.available, "needs /usr/bin/python3.11 and Debian's libpython3.11-testsuite"),
        arguments: BBVariant.all)
    func pythonRegressionTests(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let baseline = try await BBOnce.shared.value("python-regrtest-baseline") { try await RLPythonSuite.run(preload: nil) }
        let expected = RLPythonSuite.statuses(baseline.stdoutText)
        try #require(
            expected.count == RLPythonSuite.tests.count,
            "the run without the preload reported \(expected.count) of \(RLPythonSuite.tests.count) tests\n\(baseline.report)")
        let preloaded = try await RLPythonSuite.run(preload: library)
        let got = RLPythonSuite.statuses(preloaded.stdoutText)
        let differing = RLPythonSuite.tests.filter { expected[$0] != got[$0] }
        #expect(
            differing.isEmpty,
            "results differ under \(variant.testDescription): \(differing.map { "\($0): \(expected[$0] ?? "-") without, \(got[$0] ?? "no result") with" })\n\(preloaded.report)"
        )
        #expect(
            preloaded.status == baseline.status && !preloaded.signaled && !preloaded.timedOut,
            "regrtest: \(preloaded.outcome) under the preload, \(baseline.outcome) without\n\(preloaded.report)")
        let passed = got.values.filter { $0 == "passed" }.count
        #expect(passed > 0, "no test passed\n\(preloaded.report)")
    }

    @Test(
        "sqlite3: 100k-row database, same query results", .enabled(if: RLSQLite.available, "sqlite3 is not installed (Debian package sqlite3)"),
        arguments: BBVariant.all)
    func sqlite(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let baseline = try await BBOnce.shared.value("sqlite-baseline") { try await RLSQLite.run(preload: nil) }
        #expect(baseline.stdoutLines.contains("ok"), "PRAGMA integrity_check did not say ok\n\(baseline.report)")
        let preloaded = try await RLSQLite.run(preload: library)
        bbExpectSameBehavior(preloaded, as: baseline, "sqlite3 < script.sql")
    }

    @Test(
        "redis-server: written data reads back, survives reload, fork and redis-benchmark",
        .enabled(if: RLRedis.available, "redis-server, redis-cli and redis-benchmark are needed (redis-server, redis-tools)"),
        arguments: BBVariant.all)
    func redis(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let baseline = try await BBOnce.shared.value("redis-baseline") { try await RLRedis.run(preload: nil) }
        let preloaded = try await RLRedis.run(preload: library)
        if preloaded != baseline {
            let a = baseline.split(separator: "\n"), b = preloaded.split(separator: "\n")
            let i = bbFirstDifference(a, b)
            Issue.record(
                """
                redis transcript differs from the run without the preload at line \(i + 1):
                  without: \(i < a.count ? a[i] : "<end>")
                  with:    \(i < b.count ? b[i] : "<end>")
                """)
        }
    }
}
