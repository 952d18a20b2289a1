import Testing

@testable import AethAllocToolCore

@Suite struct ArgumentTests {
    func parse(_ s: [String]) throws -> Command { try Arguments.parse(s) }

    func usageError(_ s: [String]) -> UsageError? {
        do {
            _ = try Arguments.parse(s)
            return nil
        } catch {
            return error
        }
    }

    @Test func help() throws {
        #expect(try parse([]) == .help(nil))
        #expect(try parse(["help"]) == .help(nil))
        #expect(try parse(["--help"]) == .help(nil))
        #expect(try parse(["help", "ab"]) == .help("ab"))
        #expect(try parse(["run", "--help"]) == .help("run"))
        #expect(try parse(["ab", "-h"]) == .help("ab"))
        #expect(try parse(["bench", "--quick", "--help"]) == .help("bench"))
        // After `--`, --help belongs to the command.
        guard case .run(let o) = try parse(["run", "--", "ls", "--help"]) else { Issue.record("not run"); return }
        #expect(o.command == ["ls", "--help"])
    }

    @Test func run() throws {
        guard case .run(let a) = try parse(["run", "--", "ls", "-l"]) else { Issue.record("not run"); return }
        #expect(a.variant == "magazine")
        #expect(a.command == ["ls", "-l"])
        guard case .run(let b) = try parse(["run", "--variant", "simple", "python3", "-c", "1"]) else { Issue.record("not run"); return }
        #expect(b.variant == "simple")
        #expect(b.command == ["python3", "-c", "1"])
        guard case .run(let c) = try parse(["run", "--variant=hardened", "--", "true"]) else { Issue.record("not run"); return }
        #expect(c.variant == "hardened")
    }

    @Test func ab() throws {
        guard case .ab(let a) = try parse(["ab", "--", "true"]) else { Issue.record("not ab"); return }
        #expect(a.allocators == nil)
        #expect(a.runs == 5)
        #expect(a.json == false)
        #expect(a.command == ["true"])
        guard case .ab(let b) = try parse(["ab", "--with", "glibc,mimalloc,magazine", "--runs", "3", "--json", "--", "echo", "--json"])
        else { Issue.record("not ab"); return }
        #expect(b.allocators == ["glibc", "mimalloc", "magazine"])
        #expect(b.runs == 3)
        #expect(b.json)
        #expect(b.command == ["echo", "--json"])
        guard case .ab(let c) = try parse(["ab", "--with=glibc,glibc,/tmp/libx.so", "--warmup", "0", "--ignore-stdout", "--timeout", "2.5", "true"])
        else { Issue.record("not ab"); return }
        #expect(c.allocators == ["glibc", "/tmp/libx.so"])
        #expect(c.warmup == 0)
        #expect(c.checkStdout == false)
        #expect(c.timeout == 2.5)
    }

    @Test func allocatorEntriesWithSettings() throws {
        // Commas inside brackets belong to the value, not to the list.
        guard case .ab(let a) = try parse([
            "ab", "--with", "magazine,magazine[AETHALLOC_BACKGROUND=0],jemalloc[MALLOC_CONF=background_thread:true,dirty_decay_ms:1000]",
            "--", "true",
        ]) else { Issue.record("not ab"); return }
        #expect(a.allocators == ["magazine", "magazine[AETHALLOC_BACKGROUND=0]", "jemalloc[MALLOC_CONF=background_thread:true,dirty_decay_ms:1000]"])
        #expect(try AllocatorEntry.parse("glibc[A=1 B_2= A=3]").get() == AllocatorEntry(
            base: "glibc", settings: [Setting(variable: "B_2", value: ""), Setting(variable: "A", value: "3")]))
        for (entry, fragment) in [
            ("magazine[]", "at least one setting"), ("[A=1]", "with a name"), ("magazine[A]", "is not VAR=VALUE"),
            ("magazine[1A=2]", "not a variable name"), ("magazine[LD_PRELOAD=/x.so]", "LD_PRELOAD"),
            ("magazine[A=1]x", "one pair of brackets"), ("magazine]", "without a '['"),
        ] {
            let e = usageError(["ab", "--with", entry, "--", "true"])
            #expect(e?.message.contains(fragment) == true, "\(entry): \(e?.message ?? "no error")")
        }
        #expect(usageError(["ab", "--with", "nosuch[A=1]", "--", "true"])?.message.contains("unknown allocator 'nosuch'") == true)
    }

    @Test func bench() throws {
        guard case .bench(let a) = try parse(["bench"]) else { Issue.record("not bench"); return }
        #expect(a.quick == false)
        #expect(a.runs == 3)
        #expect(a.effectiveThreads == [1, 2, 4, 8])
        guard case .bench(let b) = try parse(["bench", "--quick"]) else { Issue.record("not bench"); return }
        #expect(b.effectiveThreads == [2])
        guard case .bench(let c) = try parse([
            "bench", "--quick", "--only", "larson,packet_churn", "--with", "glibc,jemalloc", "--runs", "5",
            "--threads", "1,16", "--out", "/tmp/x", "--timeout", "0",
        ]) else { Issue.record("not bench"); return }
        #expect(c.only == ["larson", "packet_churn"])
        #expect(c.allocators == ["glibc", "jemalloc"])
        #expect(c.runs == 5)
        #expect(c.effectiveThreads == [1, 16])
        #expect(c.out == "/tmp/x")
        #expect(c.timeout == 0)
        guard case .bench(let d) = try parse(["bench", "--report-only", "results/x"]) else { Issue.record("not bench"); return }
        #expect(d.reportOnly == "results/x")
    }

    @Test func badUsage() {
        let cases: [([String], String)] = [
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["--frob"], "unknown option '--frob'"),
            (["help", "nope"], "unknown command"),
            (["run"], "no command to run"),
            (["run", "--"], "no command to run"),
            (["run", "--variant", "turbo", "--", "true"], "unknown variant 'turbo'"),
            (["run", "--variant"], "--variant needs a value"),
            (["run", "--bogus", "true"], "unknown option '--bogus'"),
            (["ab", "--", ], "no command to compare"),
            (["ab", "--with", "glibc,nosuch", "--", "true"], "unknown allocator 'nosuch'"),
            (["ab", "--with", "glibc,,jemalloc", "--", "true"], "comma-separated list"),
            (["ab", "--runs", "0", "--", "true"], "--runs wants a whole number"),
            (["ab", "--runs", "x", "--", "true"], "--runs wants a whole number"),
            (["ab", "--json=1", "--", "true"], "takes no value"),
            (["bench", "--threads", "1,zero"], "--threads wants a whole number"),
            (["bench", "extra"], "unexpected argument 'extra'"),
            (["bench", "--timeout", "-1"], "--timeout wants a number of seconds"),
        ]
        for (args, fragment) in cases {
            let e = usageError(args)
            #expect(e != nil, "\(args) should fail")
            #expect(e?.message.contains(fragment) == true, "\(args): \(e?.message ?? "no error")")
            // One line, naming where to get help.
            #expect(e?.line.contains("\n") == false)
            #expect(e?.line.contains("help") == true)
        }
    }
}
