import Foundation
import Testing

@testable import AethAllocToolCore

/// A locator that finds no allocator library at all: these tests must not
/// depend on any .so being built or installed.
let noLibraries = Locator(libDir: nil, executableDir: nil, packageRoot: nil, fileExists: { _ in false })

func tempDir(_ tag: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aeth-\(tag)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// The C compiler for the test programs: cc, else the clang that comes
/// with the Swift toolchain (a machine with only the toolchain has no cc).
let cCompiler: String = {
    let env = ProcessInfo.processInfo.environment
    return (try? runChild(ChildSpec(argv: ["cc", "--version"], environment: env)))?.status.succeeded == true ? "cc" : "clang"
}()

/// `bench` itself compiles the benchmarks with cc.
let haveCC: Bool = { cCompiler == "cc" }()

@Suite struct EndToEndTests {
    func tool(_ args: [String], locator: Locator = noLibraries) -> (code: Int32, out: String, err: String) {
        let c = Console.capturing()
        let code = AethAllocTool.main(["aethalloc-cli"] + args, console: c, locator: locator)
        return (code, c.capturedOut, c.capturedErr)
    }

    @Test func abUnderGlibc() {
        let r = tool(["ab", "--with", "glibc", "--runs", "3", "--", "/bin/echo", "hello"])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains("/bin/echo hello"))
        #expect(r.out.contains("3 runs per allocator, interleaved"))
        #expect(r.out.contains("allocator"))
        #expect(r.out.contains("peak RSS"))
        #expect(r.out.contains("glibc"))
        #expect(r.out.contains("1.00"))
        #expect(r.out.contains("every run: exit 0, identical stdout"))
    }

    @Test func abJSON() throws {
        let r = tool(["ab", "--with", "glibc", "--runs", "2", "--warmup", "0", "--json", "--", "/bin/echo", "hello"])
        #expect(r.code == 0, "\(r.err)")
        let report = try JSONDecoder().decode(ABReport.self, from: Data(r.out.utf8))
        #expect(report.ok)
        #expect(report.baseline == "glibc")
        #expect(report.allocators.count == 1)
        let g = report.allocators[0]
        #expect(g.runs.count == 2)
        #expect(g.runs.allSatisfy { $0.status == "exit 0" && $0.stdoutBytes == 6 && $0.maxRSSKB > 0 && $0.wallSeconds > 0 })
        #expect(g.wallRatio == 1)
        #expect(g.maxRSSRatio == 1)
    }

    @Test func abSetsAnEntrysVariablesForItsRunsOnly() throws {
        // The same allocator twice, once with a variable set: the program
        // prints it, so the two entries' stdout differ (a mismatch, exit 1)
        // and each entry's runs agree among themselves.
        let r = tool(["ab", "--with", "glibc,glibc[AETH_AB_PROBE=on]", "--runs", "2", "--warmup", "0", "--json", "--",
                      "sh", "-c", "echo ${AETH_AB_PROBE:-unset}"])
        #expect(r.code == 1, "\(r.err)")
        let report = try JSONDecoder().decode(ABReport.self, from: Data(r.out.utf8))
        #expect(report.allocators.map(\.allocator.name) == ["glibc", "glibc[AETH_AB_PROBE=on]"])
        #expect(report.allocators.map { $0.runs.map(\.stdoutBytes) } == [[6, 6], [3, 3]])
        #expect(!report.mismatches.isEmpty && report.mismatches.allSatisfy { $0.contains("AETH_AB_PROBE") })
    }

    @Test func abReportsMismatches() {
        // Output that changes from run to run.
        let r = tool(["ab", "--with", "glibc", "--runs", "2", "--", "sh", "-c", "date +%s%N"])
        #expect(r.code == 1)
        #expect(r.out.contains("MISMATCH: stdout under glibc"))
        #expect(r.err.contains("mismatch"))
        // A crash is a failure, in one line.
        let c = tool(["ab", "--with", "glibc", "--runs", "1", "--warmup", "0", "--", "sh", "-c", "kill -SEGV $$"])
        #expect(c.code == 1)
        #expect(c.err.contains("killed by signal 11 (SIGSEGV)"))
        #expect(!c.err.contains("\n\n"))
    }

    @Test func abCommandNotFound() {
        let r = tool(["ab", "--with", "glibc", "--", "/nonexistent/program"])
        #expect(r.code == 127)
        #expect(r.err == "aethalloc-cli ab: command not found: /nonexistent/program\n")
    }

    @Test func abWithoutLauncherStillMeasures() throws {
        var o = ABOptions()
        o.command = ["/bin/echo", "x"]
        o.runs = 2
        o.warmup = 0
        let report = try ABCommand.measure(o, allocators: [.glibc], launcher: nil, console: .capturing())
        #expect(report.ok)
        #expect(report.allocators[0].runs.count == 2)
        #expect(report.allocators[0].cpuSeconds != nil)
    }

    @Test func badUsageIsOneLine() {
        for args in [["frob"], ["ab", "--with", "glibc,bogus", "--", "true"], ["run", "--variant", "turbo", "--", "true"], ["bench", "--runs", "0"]] {
            let r = tool(args)
            #expect(r.code == 2, "\(args)")
            #expect(r.err.split(separator: "\n").count == 1, "\(args): \(r.err)")
            #expect(r.out.isEmpty)
        }
        let none = tool([])
        #expect(none.code == 2)
        #expect(none.err.contains("Usage:"))
        let help = tool(["help", "bench"])
        #expect(help.code == 0)
        #expect(help.out.contains("--report-only"))
    }

    @Test func runMissingVariant() {
        let r = tool(["run", "--variant", "hardened", "--", "true"],
                     locator: Locator(libDir: nil, executableDir: nil, packageRoot: "/pkg", fileExists: { _ in false }))
        #expect(r.code == 2)
        #expect(r.err == "aethalloc-cli run: variant 'hardened' is not built: no /pkg/.build/release/libaethalloc-hardened.so; build it with 'swift build -c release'\n")
    }

    @Test func runPropagatesStatusAndPreloads() throws {
        // Any real shared library stands in for the variant: libm is harmless.
        let dir = try tempDir("run")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/lib/aarch64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"]
            .first { FileManager.default.fileExists(atPath: $0) }
        guard let libm else { return }
        try FileManager.default.createSymbolicLink(atPath: dir + "/libaethalloc-simple.so", withDestinationPath: libm)
        let loc = Locator(libDir: dir, executableDir: nil, packageRoot: nil)
        let out = dir + "/preload.txt"
        let r = tool(["run", "--variant", "simple", "--", "sh", "-c", "printf %s \"$LD_PRELOAD\" > \(out); exit 7"], locator: loc)
        #expect(r.code == 7)
        #expect(try String(contentsOfFile: out, encoding: .utf8) == dir + "/libaethalloc-simple.so")
        let crash = tool(["run", "--variant", "simple", "--", "sh", "-c", "kill -ABRT $$"], locator: loc)
        #expect(crash.code == 128 + 6)
        #expect(crash.err.contains("killed by signal 6 (SIGABRT)"))
        let missing = tool(["run", "--variant", "simple", "--", "no-such-command-xyz"], locator: loc)
        #expect(missing.code == 127)
        #expect(missing.err == "aethalloc-cli run: command not found: no-such-command-xyz\n")
    }

    @Test(.enabled(if: haveCC, "cc is not installed (Debian package gcc)")) func benchWithFakeBenches() throws {
        let src = try tempDir("benches")
        let out = try tempDir("results")
        defer {
            try? FileManager.default.removeItem(atPath: src)
            try? FileManager.default.removeItem(atPath: out)
        }
        // A single-threaded bench, a multi-threaded one that reports its
        // thread count, and one that always fails.
        try #"""
            #include <stdio.h>
            #include <string.h>
            int main(int argc, char **argv) {
                int quick = argc > 1 && strcmp(argv[1], "quick=1") == 0;
                printf("{\"bench\":\"fake_churn\",\"params\":{\"quick\":%d},\"metrics\":{\"ops_per_sec\":1000000,\"p99_ns\":250}}\n", quick);
                return 0;
            }
            """#.write(toFile: src + "/fake_churn.c", atomically: true, encoding: .utf8)
        try #"""
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            int main(int argc, char **argv) {
                int t = 0;
                for (int i = 1; i < argc; i++) if (!strncmp(argv[i], "threads=", 8)) t = atoi(argv[i] + 8);
                printf("{\"bench\":\"larson\",\"params\":{\"threads\":%d},\"metrics\":{\"seconds\":%d}}\n", t, t);
                return 0;
            }
            """#.write(toFile: src + "/larson.c", atomically: true, encoding: .utf8)
        try "int main(void) { return 3; }\n".write(toFile: src + "/broken.c", atomically: true, encoding: .utf8)

        let r = tool(["bench", "--benches", src, "--quick", "--with", "glibc", "--runs", "2", "--threads", "1,3", "--out", out])
        #expect(r.code == 1, "\(r.err)")  // broken.c failed
        #expect(r.err.contains("[1/8] broken · glibc · run 1/2"))
        #expect(r.err.contains("larson · 3 threads · glibc · run 2/2"))
        #expect(r.err.contains("broken · glibc · run 1: exit 3"))

        let results = try BenchResults.decode(Data(contentsOf: URL(fileURLWithPath: out + "/results.json")))
        #expect(results.scenarios.map(\.title) == ["broken", "fake_churn", "larson · 1 thread", "larson · 3 threads"])
        #expect(results.config.quick)
        let churn = results.scenarios[1]
        #expect(churn.primaryMetric == "ops_per_sec")
        #expect(churn.runs.count == 2)
        #expect(churn.runs.allSatisfy { $0.ok && $0.params?["quick"] == .number(1) && $0.maxRSSKB > 0 })
        #expect(results.scenarios[3].summaries[0].stats["seconds"]?.median == 3)
        #expect(results.scenarios[0].summaries[0].okRuns == 0)

        for f in ["report.md", "fake_churn.svg", "larson.svg", "broken.svg"] {
            #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f)")
        }
        let md = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        #expect(md.contains("### larson · 3 threads"))
        #expect(md.contains("| glibc | FAILED: exit 3 |"))
        #expect(md.contains("| glibc | **1.00M** |"))

        // An unknown bench name is bad usage.
        let bad = tool(["bench", "--benches", src, "--only", "nope", "--with", "glibc", "--out", out])
        #expect(bad.code == 2)
        #expect(bad.err.contains("unknown bench 'nope' (available: broken, fake_churn, larson)"))
    }

    @Test(.enabled(if: haveCC, "cc is not installed (Debian package gcc)")) func benchPreloadsCopiesAndAppliesSettings() throws {
        let src = try tempDir("benches")
        let out = try tempDir("results")
        let libs = try tempDir("libs")
        defer { for d in [src, out, libs] { try? FileManager.default.removeItem(atPath: d) } }
        // Any real shared library stands in for an allocator: libm is harmless.
        guard let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/lib/aarch64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"]
            .first(where: { FileManager.default.fileExists(atPath: $0) })
        else { Issue.record("no libm to preload"); return }
        try FileManager.default.copyItem(atPath: libm, toPath: libs + "/libfake.so")
        // The bench reports FAKE_KNOB (1 when unset) and whether what it
        // was preloaded with is a copy in the results' libraries/.
        try #"""
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            int main(void) {
                const char *p = getenv("LD_PRELOAD"), *k = getenv("FAKE_KNOB");
                printf("{\"bench\":\"probe\",\"params\":{},\"metrics\":{\"ops_per_sec\":%d,\"copy\":%d}}\n",
                       k ? atoi(k) : 1, p && strstr(p, "/libraries/libfake.so") ? 1 : 0);
                return 0;
            }
            """#.write(toFile: src + "/probe.c", atomically: true, encoding: .utf8)
        let lib = libs + "/libfake.so"
        let r = tool(["bench", "--benches", src, "--with", "glibc,\(lib),\(lib)[FAKE_KNOB=7]", "--runs", "1", "--out", out],
                     locator: Locator(libDir: nil, executableDir: nil, packageRoot: nil))
        #expect(r.code == 0, "\(r.err)")
        let results = try BenchResults.decode(Data(contentsOf: URL(fileURLWithPath: out + "/results.json")))
        let stats = results.scenarios[0].summaries.map { ($0.allocator, $0.stats["ops_per_sec"]?.median, $0.stats["copy"]?.median) }
        #expect(stats.map(\.0) == ["glibc", "fake", "\(lib)[FAKE_KNOB=7]"])
        #expect(stats.map(\.1) == [1, 1, 7])
        #expect(stats.map(\.2) == [0, 1, 1])
        #expect(results.allocators.map(\.library) == [nil, lib, lib])
        #expect(results.allocators.map(\.snapshot) == [nil, out + "/libraries/libfake.so", out + "/libraries/libfake.so"])
        #expect(results.allocators[2].settings == [Setting(variable: "FAKE_KNOB", value: "7")])
        let md = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        #expect(md.contains("copied when the run started"))
        #expect(md.contains("ran with those environment variables set: `\(lib)[FAKE_KNOB=7]`"))
    }
}
