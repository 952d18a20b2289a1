import Foundation
import Testing

@testable import AethAllocToolCore

@Suite struct LocatorTests {
    func locator(_ files: Set<String>, libDir: String? = nil) -> Locator {
        Locator(libDir: libDir, executableDir: "/exe", packageRoot: "/pkg", multiarch: "x86_64-linux-gnu", fileExists: { files.contains($0) })
    }

    @Test func searchOrder() {
        let all: Set = ["/env/libaethalloc.so", "/exe/libaethalloc.so", "/pkg/.build/release/libaethalloc.so", "/pkg/.build/release/libaethalloc-simple.so"]
        #expect(locator(all, libDir: "/env").variantSearchDirs == ["/env", "/exe", "/pkg/.build/release"])
        #expect(locator(all, libDir: "/env").variantPath("magazine") == "/env/libaethalloc.so")
        #expect(locator(all).variantPath("magazine") == "/exe/libaethalloc.so")
        #expect(locator(all).variantPath("simple") == "/pkg/.build/release/libaethalloc-simple.so")
        #expect(locator(all).variantPath("hardened") == nil)
        #expect(Catalog.libraryName(variant: "metrics") == "libaethalloc-metrics.so")
    }

    @Test func defaultSet() throws {
        let l = locator(["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/exe/libaethalloc.so", "/exe/libaethalloc-metrics.so"])
        let (allocators, notices) = try l.resolve(nil)
        #expect(allocators.map(\.name) == ["glibc", "jemalloc", "magazine", "metrics"])
        #expect(allocators[0].library == nil)
        #expect(allocators[1].library == "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
        #expect(notices.count == 2)
        #expect(notices.allSatisfy { $0.contains("apt-get install libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4") })
        #expect(notices[0].contains("mimalloc") && notices[1].contains("tcmalloc"))
    }

    @Test func explicitList() throws {
        let l = locator(["/exe/libaethalloc-simple.so", "/opt/libfoo.so.1"])
        let (a, n) = try l.resolve(["glibc", "tcmalloc", "simple", "/opt/libfoo.so.1"])
        #expect(a.map(\.name) == ["glibc", "simple", "foo"])
        #expect(a[2].kind == .custom)
        #expect(n.count == 1 && n[0].contains("skipping tcmalloc"))
        #expect(throws: ToolError.self) { try l.resolve(["tcmalloc"]) }
    }

    @Test func librariesWithOneBaseNameStayApart() throws {
        let l = locator(["/a/libaethalloc.so", "/b/libaethalloc.so"])
        let (a, _) = try l.resolve(["/a/libaethalloc.so", "/b/libaethalloc.so", "/a/libaethalloc.so"])
        #expect(a.map(\.name) == ["/a/libaethalloc.so", "/b/libaethalloc.so"])
        #expect(a.map(\.library) == ["/a/libaethalloc.so", "/b/libaethalloc.so"])
        let (one, _) = try l.resolve(["/a/libaethalloc.so"])
        #expect(one.map(\.name) == ["aethalloc"])
    }

    @Test func entriesWithSettingsAreSeparateAllocators() throws {
        let l = locator(["/exe/libaethalloc.so"])
        let (a, _) = try l.resolve(["magazine", "magazine[AETHALLOC_BACKGROUND=0 X=a,b]", "glibc[MALLOC_ARENA_MAX=1]", "tcmalloc[X=1]"])
        #expect(a.map(\.name) == ["magazine", "magazine[AETHALLOC_BACKGROUND=0 X=a,b]", "glibc[MALLOC_ARENA_MAX=1]"])
        #expect(a[1].library == "/exe/libaethalloc.so")
        #expect(a[1].kind == .variant)
        let env = a[1].environment(over: ["X": "old", "PATH": "/bin"])
        #expect(env == ["X": "a,b", "AETHALLOC_BACKGROUND": "0", "PATH": "/bin"])
        #expect(a[0].environment(over: ["X": "old"]) == ["X": "old"])
        #expect(a[2].library == nil && a[2].settings == [Setting(variable: "MALLOC_ARENA_MAX", value: "1")])
    }

    @Test func missingVariant() {
        let l = locator([])
        do {
            _ = try l.resolve(["glibc", "simple"])
            Issue.record("should throw")
        } catch let e as ToolError {
            #expect(e.exitCode == 2)
            #expect(e.message.contains("/pkg/.build/release/libaethalloc-simple.so"))
            #expect(e.message.contains("swift build -c release"))
            #expect(!e.message.contains("\n"))
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func probes() {
        let cpu = "processor\t: 0\nmodel name\t: Fancy CPU @ 3GHz\n\nprocessor\t: 1\nmodel name\t: Fancy CPU @ 3GHz\n"
        #expect(SystemProbe.parseCPUInfo(cpu).model == "Fancy CPU @ 3GHz")
        #expect(SystemProbe.parseCPUInfo(cpu).count == 2)
        #expect(SystemProbe.parseMemTotalKB("MemTotal:       16384000 kB\nMemFree: 1 kB\n") == 16_384_000)
        let status = "Package: libfoo\nVersion: 1.0\n\nPackage: libjemalloc2\nStatus: install ok installed\nVersion: 5.3.0-1\n"
        #expect(SystemProbe.dpkgVersion(of: "libjemalloc2", status: status) == "5.3.0-1")
        #expect(SystemProbe.dpkgVersion(of: "libnone", status: status) == nil)
    }
}

@Suite struct BenchOutputTests {
    func parse(_ s: String) -> Result<BenchOutput, ToolError> { BenchCommand.parseOutput(Data(s.utf8)) }

    @Test func good() throws {
        let out = try parse(#"{"bench":"larson","params":{"threads":4,"mode":"x"},"metrics":{"ops_per_sec":1.5e6,"peak_rss_kb":1024,"note":"hi"}}"# + "\n").get()
        #expect(out.bench == "larson")
        #expect(out.metrics == ["ops_per_sec": 1.5e6, "peak_rss_kb": 1024])
        #expect(out.params?["threads"] == .number(4))
        #expect(out.params?["mode"] == .string("x"))
        // Other lines around the JSON line are tolerated.
        let out2 = try parse("warming up\n{\"bench\":\"a\",\"metrics\":{\"seconds\":2}}\n").get()
        #expect(out2.metrics["seconds"] == 2)
    }

    @Test func bad() {
        func error(_ s: String) -> String? {
            if case .failure(let e) = parse(s) { return e.message }
            return nil
        }
        #expect(error("") == "no JSON line on stdout")
        #expect(error("hello\n") == "no JSON line on stdout")
        #expect(error("{\"metrics\":{}}\n{\"metrics\":{}}\n")?.contains("2 JSON lines") == true)
        #expect(error("{not json\n")?.hasPrefix("bad JSON") == true)
        #expect(error("{\"bench\":\"a\"}\n")?.contains("no \"metrics\"") == true)
    }

    @Test func multiThreadedDetection() {
        #expect(BenchCommand.isMultiThreaded(name: "larson", source: #"BP_INT("threads", 4, 2, 1, 1024),"#))
        #expect(BenchCommand.isMultiThreaded(name: "fake", source: #"if (!strncmp(argv[i], "threads=", 8))"#))
        #expect(BenchCommand.isMultiThreaded(name: "kv_store", source: #"pthread_create(&t, 0, f, 0); BP_INT("threads", 1)"#))
        #expect(!BenchCommand.isMultiThreaded(name: "kv_store", source: "int main(void) { return 0; }"))
        #expect(!BenchCommand.isMultiThreaded(name: "packet_churn", source: ""))
        // These two take their thread count under other names.
        #expect(BenchCommand.isMultiThreaded(name: "producer_consumer", source: ""))
        #expect(BenchCommand.isMultiThreaded(name: "thread_churn", source: ""))
        #expect(BenchCommand.threadArguments(bench: "larson", threads: 4) == ["threads=4"])
        #expect(BenchCommand.threadArguments(bench: "thread_churn", threads: 4) == ["concurrent=4"])
        #expect(BenchCommand.threadArguments(bench: "producer_consumer", threads: 8) == ["producers=4", "consumers=4"])
        #expect(BenchCommand.threadArguments(bench: "producer_consumer", threads: 1) == ["producers=1", "consumers=1"])
        #expect(BenchCommand.threadArguments(bench: "producer_consumer", threads: 3) == ["producers=1", "consumers=2"])
        // 1 thread would repeat the 1+1 scenario of 2 threads.
        #expect(BenchCommand.distinctThreadCounts(bench: "producer_consumer", [1, 2, 4, 8]) == [2, 4, 8])
        #expect(BenchCommand.distinctThreadCounts(bench: "larson", [1, 2, 4, 8]) == [1, 2, 4, 8])
        #expect(BenchCommand.distinctThreadCounts(bench: "thread_churn", [2, 2, 4]) == [2, 4])
    }
}
