// Real programs under LD_PRELOAD of every built variant: each must behave
// exactly as it does with glibc's malloc (same exit status, byte-identical
// stdout). The runs without the preload (the baselines) are made once per
// test process and shared by all variants.

import Foundation
import Testing

// MARK: - Helpers

/// A deterministic random number generator (BBRandom).
struct BBRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// The index of the first element where `a` and `b` differ.
func bbFirstDifference<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
    zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
}

/// Expects `preloaded` to succeed and to match `baseline` (exit status and stdout).
func bbExpectSameBehavior(
    _ preloaded: BBProcessOutput, as baseline: BBProcessOutput, _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let baselineOK = baseline.succeeded, preloadedOK = preloaded.succeeded
    #expect(baselineOK, "\(what): fails even without the preload\n\(baseline.report)", sourceLocation: sourceLocation)
    #expect(
        preloadedOK, "\(what): failed under the preload: \(preloaded.outcome)\n\(preloaded.report)",
        sourceLocation: sourceLocation)
    guard preloaded.stdout != baseline.stdout else { return }
    let a = baseline.stdoutLines, b = preloaded.stdoutLines
    let i = bbFirstDifference(a, b)
    let expected = i < a.count ? a[i] : "<end of output>"
    let got = i < b.count ? b[i] : "<end of output>"
    Issue.record(
        """
        \(what): stdout differs from the run without the preload (\(baseline.stdout.count) vs \
        \(preloaded.stdout.count) bytes), first at line \(i + 1):
          without: \(expected.prefix(300))
          with:    \(got.prefix(300))
        \(preloaded.report)
        """, sourceLocation: sourceLocation)
}

/// The real BBPython interpreter (not a pyenv shim script), found once.
enum BBPython {
    static let available = BBProcess.find("python3") != nil

    static func executable() async throws -> String {
        try await BBOnce.shared.value("python3-executable") {
            let r = try await BBProcess.run("python3", ["-c", "import sys; print(sys.executable)"])
            let path = r.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            if r.succeeded, FileManager.default.isExecutableFile(atPath: path) { return path }
            guard let onPath = BBProcess.find("python3") else { throw BBFailure("python3 not found") }
            return onPath
        }
    }
}

// MARK: - Inputs

enum BBInputs {
    /// An allocation-heavy BBPython script printing counts and a checksum.
    static let pythonChurn = """
        import gc, hashlib, json, random

        rng = random.Random(20240601)
        h = hashlib.sha256()
        live = {}
        sizes = (8, 24, 100, 600, 3000, 20000, 8, 24, 100, 600, 3000, 150000)
        for step in range(30000):
            k = rng.randrange(3000)
            op = rng.randrange(10)
            if op < 4:
                live[k] = rng.randbytes(rng.choice(sizes) + rng.randrange(64))
            elif op < 6:
                live[k] = [str(i) * (i % 7) for i in range(rng.randrange(1, 150))]
            elif op < 8:
                live[k] = {"k%d-%d" % (i, step): i * step for i in range(rng.randrange(1, 80))}
            elif k in live:
                v = live.pop(k)
                if isinstance(v, bytes):
                    h.update(v[:64] + v[-64:] + len(v).to_bytes(8, "little"))
                elif isinstance(v, list):
                    h.update("|".join(v).encode())
                else:
                    h.update(json.dumps(v, sort_keys=True).encode())
            if step % 3000 == 0:
                big = bytearray()
                for _ in range(64):
                    big += rng.randbytes(rng.randrange(1, 40000))
                text = big.hex()
                parts = text.split("a")
                h.update(hashlib.md5("b".join(reversed(parts)).encode()).digest())
                gc.collect()
        total = sum(len(v) for v in live.values())
        print(len(live), total, h.hexdigest())

        """

    /// A JSON round trip of stdin.
    static let pythonJSON = """
        import json,sys; d=json.load(sys.stdin); s=json.dumps(d, sort_keys=True, indent=1); \
        d2=json.loads(s); assert d2 == d; \
        print(len(d), len(s), sum(len(x["tags"]) for x in d), sum(x["score"] for x in d)); \
        print(json.dumps(sorted(d, key=lambda x: (x["name"], x["id"]))[:3], sort_keys=True))
        """

    static func word(_ rng: inout BBRandom, _ length: Int) -> [UInt8] {
        (0..<length).map { _ in UInt8(ascii: "a") + UInt8(rng.below(26)) }
    }

    /// 200k lines of random-ish text, the same every time.
    static func sortInput() async throws -> URL {
        try await BBOnce.shared.value("sort-input") {
            var rng = BBRandom(seed: 42)
            var bytes: [UInt8] = []
            bytes.reserveCapacity(6_000_000)
            var previous: [UInt8] = []
            for i in 0..<200_000 {
                if i % 17 == 0, !previous.isEmpty {
                    bytes += previous  // some duplicate lines
                    continue
                }
                var line = word(&rng, 3 + rng.below(10))
                line.append(UInt8(ascii: " "))
                line += Array(String(rng.below(1_000_000)).utf8)
                line.append(UInt8(ascii: " "))
                line += word(&rng, 1 + rng.below(20))
                line.append(UInt8(ascii: "\n"))
                bytes += line
                previous = line
            }
            let url = try BBScratch.directory("sort-input").appendingPathComponent("lines.txt")
            try Data(bytes).write(to: url)
            return url
        }
    }

    /// A JSON array of 20000 objects (~2 MB), the same every time.
    static func jsonInput() async throws -> URL {
        try await BBOnce.shared.value("json-input") {
            var rng = BBRandom(seed: 7)
            var out = "["
            for i in 0..<20_000 {
                if i > 0 { out += ",\n" }
                let name = String(decoding: word(&rng, 4 + rng.below(8)), as: UTF8.self)
                let tags = (0..<rng.below(8)).map { _ in "\"\(String(decoding: word(&rng, 2 + rng.below(6)), as: UTF8.self))\"" }
                let xs = (0..<rng.below(20)).map { _ in String(rng.below(100_000)) }
                out += "{\"id\": \(i), \"name\": \"\(name)\", \"tags\": [\(tags.joined(separator: ", "))], "
                out += "\"score\": \(rng.below(1000)), \"nested\": {\"xs\": [\(xs.joined(separator: ","))], "
                out += "\"flag\": \(rng.below(2) == 0 ? "true" : "false"), \"none\": null}}"
            }
            out += "]\n"
            let url = try BBScratch.directory("json-input").appendingPathComponent("data.json")
            try Data(out.utf8).write(to: url)
            return url
        }
    }

    /// A multi-threaded Swift program (Dispatch, structured concurrency,
    /// arrays, dictionaries, strings, classes) with deterministic output.
    static let swiftProgram = """
        import Dispatch

        struct Rng {
            var s: UInt64
            mutating func next() -> UInt64 {
                s &+= 0x9E3779B97F4A7C15
                var z = s
                z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
                z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
                return z ^ (z >> 31)
            }
        }

        final class Node {
            let value: Int
            var children: [Node] = []
            init(_ value: Int) { self.value = value }
            func sum() -> Int { children.reduce(value) { $0 &+ $1.sum() } }
        }

        func fnv(_ s: String, _ h: inout UInt64) {
            for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        }

        func work(_ seed: Int) -> String {
            var rng = Rng(s: UInt64(seed) &* 7919)
            var dict: [String: [Int]] = [:]
            var strings: [String] = []
            for i in 0..<12_000 {
                let key = "k\\(rng.next() % 3000)"
                dict[key, default: []].append(i)
                if i % 3 == 0 {
                    strings.append(String(repeating: "ab", count: Int(rng.next() % 40)) + key)
                }
                if i % 5 == 0 { dict.removeValue(forKey: "k\\(rng.next() % 3000)") }
            }
            let root = Node(seed)
            var frontier = [root]
            for i in 0..<3000 {
                let child = Node(i)
                frontier[Int(rng.next() % UInt64(frontier.count))].children.append(child)
                frontier.append(child)
            }
            var big: [UInt8] = []
            for i in 0..<200_000 { big.append(UInt8(truncatingIfNeeded: i &* seed)) }
            let sorted = strings.sorted()
            var h: UInt64 = 0xcbf29ce484222325
            for s in sorted { fnv(s, &h) }
            for k in dict.keys.sorted() { fnv(k, &h); fnv("\\(dict[k]!.count)", &h) }
            let total = big.reduce(0) { $0 &+ Int($1) }
            return "\\(seed): \\(dict.count) \\(sorted.count) \\(root.sum()) \\(total) \\(String(h, radix: 16))"
        }

        let n = 32
        var results = [String](repeating: "", count: n)
        let lock = DispatchSemaphore(value: 1)
        DispatchQueue.concurrentPerform(iterations: n) { i in
            let r = work(i)
            lock.wait()
            results[i] = r
            lock.signal()
        }
        for r in results { print(r) }

        let fromTasks = await withTaskGroup(of: (Int, String).self) { group in
            for i in 0..<16 { group.addTask { (i, work(1000 + i)) } }
            var all = [String](repeating: "", count: 16)
            for await (i, r) in group { all[i] = r }
            return all
        }
        for r in fromTasks { print(r) }

        """

    /// A small C++ program: STL containers, strings and threads.
    static let cxxProgram = """
        #include <cstdio>
        #include <map>
        #include <memory>
        #include <string>
        #include <thread>
        #include <unordered_map>
        #include <vector>

        static unsigned long work(int seed) {
            std::map<std::string, std::vector<int>> m;
            std::unordered_map<int, std::string> u;
            unsigned long h = 1469598103934665603ul;
            for (int i = 0; i < 20000; i++) {
                std::string k = "key" + std::to_string((i * 7919 + seed) % 2000);
                m[k].push_back(i);
                u[i % 3000] = k + std::string(i % 50, 'x');
                if (i % 7 == 0) m.erase("key" + std::to_string(i % 2000));
            }
            std::vector<std::unique_ptr<std::string>> v;
            for (int i = 0; i < 5000; i++) v.push_back(std::make_unique<std::string>(i % 300, 'a' + i % 26));
            for (auto &kv : m) { for (char c : kv.first) h = (h ^ (unsigned char)c) * 1099511628211ul; h ^= kv.second.size(); }
            for (auto &s : v) h = (h ^ s->size()) * 1099511628211ul;
            return h ^ u.size();
        }

        int main() {
            const int n = 8;
            std::vector<unsigned long> r(n);
            std::vector<std::thread> t;
            for (int i = 0; i < n; i++) t.emplace_back([&r, i] { r[i] = work(i); });
            for (auto &th : t) th.join();
            for (int i = 0; i < n; i++) std::printf("%d %lx\\n", i, r[i]);
            return 0;
        }

        """
}

// MARK: - git scenario

enum BBGit {
    static let available = BBProcess.find("git") != nil

    static func environment(home: URL, day: Int) -> [String: String] {
        let date = "2024-01-\(String(format: "%02d", day))T12:00:00+0000"
        return [
            "HOME": home.path, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_AUTHOR_NAME": "AethAlloc Test", "GIT_AUTHOR_EMAIL": "test@aethalloc.invalid",
            "GIT_COMMITTER_NAME": "AethAlloc Test", "GIT_COMMITTER_EMAIL": "test@aethalloc.invalid",
            "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "TZ": "UTC", "LC_ALL": "C",
            "GIT_PAGER": "cat", "PAGER": "cat", "GIT_TERMINAL_PROMPT": "0",
        ]
    }

    /// The files of commit `c`: text files changing a bit each commit, one
    /// deleted and one renamed along the way, and a 1 MiB binary file.
    static func writeFiles(commit c: Int, in repo: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: repo.appendingPathComponent("src/sub"), withIntermediateDirectories: true)
        try fm.createDirectory(at: repo.appendingPathComponent("data"), withIntermediateDirectories: true)
        for i in 0..<40 {
            if c >= 3 && i == 7 { continue }  // deleted in commit 3
            let name = c >= 4 && i == 9 ? "src/sub/renamed9.txt" : "src/file\(i).txt"
            var text = ""
            let lines = 50 + (i * 37) % 400
            for j in 0..<lines {
                let version = (j % 10 == c % 10 || i % 6 == c) ? c : 0
                text += "file \(i) line \(j) version \(version) \(String(repeating: "lorem ipsum ", count: j % 5))\n"
            }
            try Data(text.utf8).write(to: repo.appendingPathComponent(name))
        }
        if c >= 4 { try? fm.removeItem(at: repo.appendingPathComponent("src/file9.txt")) }
        if c >= 3 { try? fm.removeItem(at: repo.appendingPathComponent("src/file7.txt")) }
        var rng = BBRandom(seed: 99)
        var blob = [UInt8](repeating: 0, count: 1 << 20)
        for k in 0..<blob.count { blob[k] = UInt8(truncatingIfNeeded: rng.next()) }
        for k in 0..<(c * 10) { blob[(k * 104_729) % blob.count] = UInt8(c) }
        try Data(blob).write(to: repo.appendingPathComponent("data/blob.bin"))
    }

    /// Runs the scenario in a new directory, with or without the preload, and
    /// returns a transcript of each git command's stdout and exit status, or
    /// throws on the first failing command (with its report).
    static func run(preload: String?) async throws -> String {
        let dir = try BBScratch.directory(preload == nil ? "git-baseline" : "git-preload")
        let repo = dir.appendingPathComponent("repo")
        try FileManager.default.createDirectory(at: repo, withIntermediateDirectories: true)
        var transcript = ""
        var day = 1
        func git(_ args: [String], in cwd: URL? = nil, filter: ((String) -> Bool)? = nil) async throws {
            let r = try await BBProcess.run(
                "git", args, environment: environment(home: dir, day: day), preload: preload,
                directory: cwd ?? repo)
            transcript += "$ git \(args.joined(separator: " "))\n"
            var out = r.stdoutText
            if let filter { out = out.split(separator: "\n").map(String.init).filter(filter).joined(separator: "\n") + "\n" }
            transcript += out
            transcript += "[\(r.outcome)]\n"
            guard r.succeeded else {
                throw BBFailure("git \(args.joined(separator: " ")) failed\(preload == nil ? " without the preload" : " under the preload")\n\(r.report)")
            }
        }
        try await git(["-c", "init.defaultBranch=main", "init", "-q"])
        for c in 0..<6 {
            day = c + 1
            try writeFiles(commit: c, in: repo)
            try await git(["add", "-A"])
            try await git(["commit", "-q", "-m", "commit \(c)\n\nGenerated by the AethAlloc tests."])
            if c == 2 { try await git(["tag", "-a", "v1", "-m", "tag v1"]) }
        }
        try await git(["log", "--stat", "--format=%H %an <%ae> %ad%n%s%n%b"])
        try await git(["diff", "--stat", "HEAD~5", "HEAD"])
        try await git(["gc", "-q"])
        try await git(["repack", "-a", "-d", "-f", "-q", "--threads=2", "--window=50"])
        try await git(["fsck", "--full", "--strict", "--no-progress"])
        try await git(["count-objects", "-v"]) { line in
            ["count:", "in-pack:", "packs:", "prune-packable:", "garbage:"].contains { line.hasPrefix($0) }
        }
        try await git(["log", "-p", "--format=%H %s", "HEAD~3..HEAD", "--", "src"])
        try await git(["blame", "-s", "src/file3.txt"])
        try await git(["grep", "-c", "version 5"])
        try await git(["clone", "-q", "--no-local", "repo", "clone"], in: dir)
        let clone = dir.appendingPathComponent("clone")
        try await git(["log", "--format=%H %s"], in: clone)
        try await git(["fsck", "--full", "--no-progress"], in: clone)
        try await git(["rev-list", "--objects", "--all"], in: clone)
        try? FileManager.default.removeItem(at: dir)
        return transcript
    }
}

// MARK: - Tests

@Suite("Real programs: same output with and without the preload")
struct RealProgramTests {
    @Test(
        "python3: allocation-heavy script", .enabled(if: BBPython.available, "python3 is not installed (Debian package python3)"),
        arguments: BBVariant.all)
    func pythonChurn(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let python = try await BBPython.executable()
        let script = try await BBOnce.shared.value("python-churn-script") {
            let url = try BBScratch.directory("python").appendingPathComponent("churn.py")
            try Data(BBInputs.pythonChurn.utf8).write(to: url)
            return url.path
        }
        // BBPython's own small-object allocator, then every allocation through malloc.
        for pymalloc in ["pymalloc", "malloc"] {
            let env = ["PYTHONHASHSEED": "0", "PYTHONMALLOC": pymalloc, "PYTHONDONTWRITEBYTECODE": "1"]
            let baseline = try await BBOnce.shared.value("python-churn-\(pymalloc)") {
                try await BBProcess.run(python, [script], environment: env)
            }
            let preloaded = try await BBProcess.run(python, [script], environment: env, preload: library)
            bbExpectSameBehavior(preloaded, as: baseline, "python3 churn.py (PYTHONMALLOC=\(pymalloc))")
        }
        // The interpreter really used this library.
        let probe = try await BBProcess.run(
            python,
            [
                "-c",
                "import ctypes; f = ctypes.CDLL(None).aethalloc_variant; f.restype = ctypes.c_char_p; print(f().decode())",
            ], preload: library)
        let sees = probe.succeeded && probe.stdoutText == "\(variant.expectedName)\n"
        #expect(
            sees,
            "python3 under the preload does not see aethalloc_variant() == \(variant.expectedName)\n\(probe.report)")
    }

    @Test(
        "python3 -c: JSON round trip", .enabled(if: BBPython.available, "python3 is not installed (Debian package python3)"),
        arguments: BBVariant.all)
    func pythonJSON(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let python = try await BBPython.executable()
        let input = try await BBInputs.jsonInput()
        let env = ["PYTHONHASHSEED": "0", "PYTHONMALLOC": "malloc"]
        let args = ["-c", BBInputs.pythonJSON]
        let baseline = try await BBOnce.shared.value("python-json") {
            try await BBProcess.run(python, args, environment: env, stdin: input)
        }
        let preloaded = try await BBProcess.run(python, args, environment: env, preload: library, stdin: input)
        bbExpectSameBehavior(preloaded, as: baseline, "python3 -c 'import json,sys; ...'")
    }

    @Test("sort: 200k lines", .enabled(if: BBProcess.find("sort") != nil, "sort is not installed (Debian package coreutils)"), arguments: BBVariant.all)
    func sortLines(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let input = try await BBInputs.sortInput()
        let runs: [(String, [String])] = [
            ("sort", [input.path]),
            // Small buffer: temporary files and merges; two threads.
            ("sort-external", ["-S", "1M", "--parallel=2", "-k2,2n", "-k1,1", "-T", BBScratch.root.path, input.path]),
        ]
        var plainSort: BBProcessOutput?
        for (key, args) in runs {
            let env = ["LC_ALL": "C"]
            let baseline = try await BBOnce.shared.value(key) { try await BBProcess.run("sort", args, environment: env) }
            let preloaded = try await BBProcess.run("sort", args, environment: env, preload: library)
            bbExpectSameBehavior(preloaded, as: baseline, "sort \(args.joined(separator: " "))")
            if key == "sort" { plainSort = baseline }
        }
        // And the plain sort is right: byte order, every line kept.
        guard let baseline = plainSort else { return }
        let lines = try String(contentsOf: input, encoding: .utf8).split(separator: "\n").map { Array($0.utf8) }
        let expected = lines.sorted { $0.lexicographicallyPrecedes($1) }
        let got = baseline.stdoutLines.dropLast().map { Array($0.utf8) }
        #expect(got == expected, "sort's output is not the input in byte order")
    }

    @Test("git: commit, log, gc, fsck, clone", .enabled(if: BBGit.available, "git is not installed (Debian package git)"), arguments: BBVariant.all)
    func git(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let baseline = try await BBOnce.shared.value("git-baseline") { try await BBGit.run(preload: nil) }
        let preloaded = try await BBGit.run(preload: library)
        if preloaded != baseline {
            let a = baseline.split(separator: "\n", omittingEmptySubsequences: false)
            let b = preloaded.split(separator: "\n", omittingEmptySubsequences: false)
            let i = bbFirstDifference(a, b)
            Issue.record(
                """
                git transcript differs from the run without the preload, first at line \(i + 1):
                  without: \(i < a.count ? a[i] : "<end>")
                  with:    \(i < b.count ? b[i] : "<end>")
                """)
        }
    }

    @Test("cc: compile and link under the preload", .enabled(if: BBProcess.find("cc") != nil, "cc is not installed (Debian package gcc)"), arguments: BBVariant.all)
    func cCompiler(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let source = BBPaths.blackboxSources.appendingPathComponent("stress.c").path
        let dir = try BBScratch.directory("cc")
        defer { try? FileManager.default.removeItem(at: dir) }
        // The same object file with and without the preload.
        let plainObject = try await BBOnce.shared.value("cc-object") { () -> Data in
            let out = try BBScratch.directory("cc-baseline").appendingPathComponent("stress.o")
            let r = try await BBProcess.run("cc", ["-O2", "-c", "-o", out.path, source])
            guard r.succeeded else { throw BBFailure("cc -O2 -c fails without the preload\n\(r.report)") }
            return try Data(contentsOf: out)
        }
        let object = dir.appendingPathComponent("stress.o")
        let compiled = try await BBProcess.run("cc", ["-O2", "-c", "-o", object.path, source], preload: library)
        try #require(compiled.succeeded, "cc -O2 -c failed under the preload\n\(compiled.report)")
        #expect(try Data(contentsOf: object) == plainObject, "cc -O2 -c produced a different object file under the preload")
        // Link a program under the preload; it works (run plain and preloaded).
        let exe = dir.appendingPathComponent("stress").path
        let linked = try await BBProcess.run("cc", ["-O2", "-pthread", "-o", exe, source], preload: library)
        try #require(linked.succeeded, "cc -O2 (compile and link) failed under the preload\n\(linked.report)")
        let runPlain = try await BBProcess.run(exe, ["2", "20000", "2"])
        let plainOK = runPlain.succeeded
        #expect(plainOK, "the program linked under the preload does not work\n\(runPlain.report)")
        let runPreloaded = try await BBProcess.run(exe, ["2", "20000", "2"], preload: library)
        let preloadedOK = runPreloaded.succeeded
        #expect(preloadedOK, "the program linked under the preload fails under it\n\(runPreloaded.report)")
    }

    @Test("c++: STL program compiled and run under the preload", .enabled(if: BBProcess.find("c++") != nil, "c++ is not installed (Debian package g++)"), arguments: BBVariant.all)
    func cxxCompilerAndProgram(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let sourcePath = try await BBOnce.shared.value("cxx-source") {
            let url = try BBScratch.directory("cxx").appendingPathComponent("stl.cpp")
            try Data(BBInputs.cxxProgram.utf8).write(to: url)
            return url.path
        }
        let plainExe = try await BBOnce.shared.value("cxx-plain") { () -> String in
            let exe = try BBScratch.directory("cxx-plain").appendingPathComponent("stl").path
            let r = try await BBProcess.run("c++", ["-O2", "-pthread", "-o", exe, sourcePath])
            guard r.succeeded else { throw BBFailure("c++ fails without the preload\n\(r.report)") }
            return exe
        }
        let baseline = try await BBOnce.shared.value("cxx-run") { try await BBProcess.run(plainExe, []) }
        let dir = try BBScratch.directory("cxx-preload")
        defer { try? FileManager.default.removeItem(at: dir) }
        let exe = dir.appendingPathComponent("stl").path
        let compiled = try await BBProcess.run("c++", ["-O2", "-pthread", "-o", exe, sourcePath], preload: library)
        try #require(compiled.succeeded, "c++ failed under the preload\n\(compiled.report)")
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: exe)) == Data(contentsOf: URL(fileURLWithPath: plainExe)),
            "c++ produced a different executable under the preload")
        let preloaded = try await BBProcess.run(exe, [], preload: library)
        bbExpectSameBehavior(preloaded, as: baseline, "C++ STL program")
    }

    @Test("Swift program (Dispatch, tasks, collections)", .enabled(if: BBProcess.find("swiftc") != nil, "swiftc is not installed"), arguments: BBVariant.all)
    func swiftProgram(_ variant: BBVariant) async throws {
        let library = try variant.libraryPath()
        let exe = try await BBOnce.shared.value("swift-program") { () -> String in
            let dir = try BBScratch.directory("swift-program")
            let source = dir.appendingPathComponent("main.swift")
            try Data(BBInputs.swiftProgram.utf8).write(to: source)
            let exe = dir.appendingPathComponent("program").path
            let r = try await BBProcess.run(
                "swiftc", ["-O", "-swift-version", "5", "-o", exe, source.path], directory: dir, timeout: .seconds(600))
            guard r.succeeded else { throw BBFailure("swiftc failed\n\(r.report)") }
            return exe
        }
        let env = ["SWIFT_DETERMINISTIC_HASHING": "1"]
        let baseline = try await BBOnce.shared.value("swift-program-run") { try await BBProcess.run(exe, [], environment: env) }
        let preloaded = try await BBProcess.run(exe, [], environment: env, preload: library)
        bbExpectSameBehavior(preloaded, as: baseline, "Swift program")
        #expect(baseline.stdoutLines.count == 49, "the Swift program printed \(baseline.stdoutLines.count) lines\n\(baseline.report)")
    }
}
