// Reliability (issue 6): the stress, fork-storm, thread-lifetime and
// memory-limit programs in Tests/blackbox and the API fuzzer in Tests/fuzz,
// each run under every built variant and, as a check of the tests
// themselves, under glibc's malloc (no preload). See the Reliability section of README.md.
//
// CI runs short modes (a few seconds per program). Longer runs:
//
//   AETHALLOC_SOAK_SECONDS=600 AETHALLOC_SOAK_THREADS=8   soak and fork storm
//   AETHALLOC_FUZZ_ITERATIONS=5000000                      fuzz operations per seed (0: no limit; 100000)
//   AETHALLOC_FUZZ_SECONDS=300                             fuzz time limit per seed (default none)
//   AETHALLOC_FUZZ_SEEDS=1,2,3                             fuzz seeds (default 1)
//
// e.g. `AETHALLOC_SOAK_SECONDS=600 swift test --filter ReliabilityTests`.

import Foundation
import Testing

// MARK: - Settings

enum RLSettings {
    static let environment = ProcessInfo.processInfo.environment

    static func number(_ name: String, default value: Double) -> Double {
        guard let text = environment[name], !text.isEmpty else { return value }
        return Double(text) ?? value
    }

    /// Seconds of the soak and fork-storm runs.
    static var soakSeconds: Double { max(0.5, number("AETHALLOC_SOAK_SECONDS", default: 2)) }
    /// Worker threads of the soak run.
    static var soakThreads: Int { max(1, min(64, Int(number("AETHALLOC_SOAK_THREADS", default: 4)))) }
    /// Fuzz operations per seed (0: limited by AETHALLOC_FUZZ_SECONDS only).
    static var fuzzIterations: Int { max(0, Int(number("AETHALLOC_FUZZ_ITERATIONS", default: 100_000))) }
    /// Fuzz time limit per seed in seconds (0: none; 60 when the iterations are unlimited too).
    static var fuzzSeconds: Double {
        let s = max(0, number("AETHALLOC_FUZZ_SECONDS", default: 0))
        return s == 0 && fuzzIterations == 0 ? 60 : s
    }
    /// Fuzz seeds.
    static var fuzzSeeds: [UInt64] {
        let list = (environment["AETHALLOC_FUZZ_SEEDS"] ?? "1").split(separator: ",").compactMap {
            UInt64($0.trimmingCharacters(in: .whitespaces))
        }
        return list.isEmpty ? [1] : list
    }

    /// A run's timeout: its own length plus generous slack (2 cores, tests in parallel).
    static func timeout(forSeconds seconds: Double) -> Duration { .seconds(Int(seconds * 3) + 180) }
}

// MARK: - Targets: every variant, and glibc

/// Where a program runs: under a built variant, or with glibc's malloc.
struct RLTarget: Sendable, CustomTestStringConvertible {
    let variant: BBVariant?

    static let all: [RLTarget] = BBVariant.all.map { RLTarget(variant: $0) } + [RLTarget(variant: nil)]

    var testDescription: String { variant?.testDescription ?? "glibc (no preload)" }
    var expectedName: String { variant?.expectedName ?? "none" }
    func preload() throws -> String? { try variant?.libraryPath() }
}

// MARK: - Programs

enum RLProgram: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// Time-bounded stress; threads killed and re-created while their blocks live on.
    case soak
    /// Forks from several threads at once while others allocate.
    case forkStorm = "fork_storm"
    /// Thousands of detached thread lifetimes freeing dead threads' blocks.
    case threadLifetimes = "thread_lifetimes"
    /// Allocation under RLIMIT_AS: NULL/ENOMEM, no crash, recovery.
    case oom

    var testDescription: String { rawValue }

    var arguments: [String] {
        switch self {
        case .soak: ["seconds=\(RLSettings.soakSeconds)", "threads=\(RLSettings.soakThreads)"]
        case .forkStorm: ["seconds=\(RLSettings.soakSeconds)", "forkers=3", "workers=2"]
        case .threadLifetimes: ["threads=10000", "concurrent=32"]
        case .oom: ["headroom_mib=256"]
        }
    }

    var timeout: Duration {
        switch self {
        case .soak, .forkStorm: RLSettings.timeout(forSeconds: RLSettings.soakSeconds)
        case .threadLifetimes, .oom: .seconds(180)
        }
    }
}

/// The fuzzer, built from Tests/fuzz like the black-box programs.
enum RLFuzz {
    static func executable() async throws -> String {
        try await BBOnce.shared.value("fuzz:api_fuzz") {
            let source = BBPaths.packageRoot.appendingPathComponent("Tests/fuzz/api_fuzz.c")
            let exe = try BBScratch.directory("fuzz-bin").appendingPathComponent("api_fuzz").path
            let result = try await BBProcess.run(
                BBBuild.compiler, BBBuild.flags + ["-o", exe, source.path, "-ldl"], timeout: .seconds(300))
            guard result.succeeded else { throw BBFailure("compiling Tests/fuzz/api_fuzz.c failed:\n\(result.report)") }
            return exe
        }
    }
}

/// Expects the run to have used the target's allocator (the variant line).
func rlExpectVariant(_ result: BBProcessOutput, _ target: RLTarget, sourceLocation: SourceLocation = #_sourceLocation) {
    let line = result.stdoutLines.first { $0.hasPrefix("aethalloc_variant=") }
    #expect(
        line == "aethalloc_variant=\(target.expectedName)",
        "did not run under \(target.testDescription): printed \(line ?? "no variant line")\n\(result.report)",
        sourceLocation: sourceLocation)
}

// MARK: - Tests

@Suite("Reliability: stress, fork storm, thread lifetimes, memory limits, API fuzzing")
struct ReliabilityTests {
    @Test("Program passes", arguments: RLTarget.all, RLProgram.allCases)
    func program(_ target: RLTarget, _ program: RLProgram) async throws {
        let preload = try target.preload()
        let executable = try await BBBuild.executable(program.rawValue)
        let result = try await BBProcess.run(executable, program.arguments, preload: preload, timeout: program.timeout)
        #expect(
            result.succeeded,
            "\(program.rawValue) failed under \(target.testDescription): \(result.outcome) \(result.failLines.joined(separator: " "))\n\(result.report)"
        )
        rlExpectVariant(result, target)
        if program == .oom {
            // A block freed must be memory the program can have again: after
            // freeing everything, one block of half the headroom must fit, in
            // every variant. The program reports a failure of that on a
            // "RECOVERY:" line and goes on. When the OS refuses memory, the
            // allocator releases what malloc_trim(0) would and retries.
            let recovery = result.stdoutLines.filter { $0.hasPrefix("RECOVERY:") }
            #expect(recovery.isEmpty, "\(target.testDescription):\n\(recovery.joined(separator: "\n"))")
        }
    }

    @Test("API fuzzer agrees with its shadow model", arguments: RLTarget.all)
    func fuzz(_ target: RLTarget) async throws {
        let preload = try target.preload()
        let executable = try await RLFuzz.executable()
        for seed in RLSettings.fuzzSeeds {
            var args = ["seed=\(seed)", "iterations=\(RLSettings.fuzzIterations)"]
            if RLSettings.fuzzSeconds > 0 { args.append("seconds=\(RLSettings.fuzzSeconds)") }
            let expected = RLSettings.fuzzSeconds > 0 ? RLSettings.fuzzSeconds : Double(RLSettings.fuzzIterations) / 20_000
            let result = try await BBProcess.run(
                executable, args, preload: preload, timeout: RLSettings.timeout(forSeconds: expected))
            #expect(
                result.succeeded,
                """
                api_fuzz failed under \(target.testDescription): \(result.outcome) \(result.failLines.joined(separator: " "))
                reproduce: cc -O1 -g -pthread -rdynamic -o api_fuzz Tests/fuzz/api_fuzz.c -ldl && \
                \(preload.map { "LD_PRELOAD=\($0) " } ?? "")./api_fuzz \(args.joined(separator: " "))
                \(result.report)
                """
            )
            rlExpectVariant(result, target)
            if result.succeeded {
                let done = result.stdoutLines.first { $0.hasPrefix("api_fuzz: seed=") }
                #expect(done != nil, "api_fuzz printed no summary\n\(result.report)")
            }
        }
    }

    /// The fuzzer under a fault plan (Tests/blackbox/faults.h): every N-th
    /// mmap, munmap, madvise, mprotect and mremap fails, N swept from every
    /// second call to rarely. No crash, no block handed out twice, calloc
    /// zeroed, NULL + ENOMEM where the request could not be met, and then
    /// full recovery once the faults stop (the program's own checks).
    @Test("API fuzzer under OS faults: correct answers, then full recovery", arguments: BBVariant.all, [2, 3, 5, 17, 97])
    func fuzzUnderFaults(_ variant: BBVariant, _ every: Int) async throws {
        let preload = try variant.libraryPath()
        let executable = try await RLFuzz.executable()
        let args = ["seed=\(every)", "iterations=20000", "edge=0", "faults=\(every)", "recover=20000"]
        let result = try await BBProcess.run(executable, args, preload: preload, timeout: RLSettings.timeout(forSeconds: 10))
        #expect(
            result.succeeded,
            """
            api_fuzz \(args.joined(separator: " ")) failed under \(variant.testDescription): \(result.outcome) \
            \(result.failLines.joined(separator: " "))
            \(result.report)
            """)
        let summary = result.stdoutLines.first { $0.hasPrefix("api_fuzz: faults=\(every): ") }
        #expect(summary != nil, "no fault summary: the plan did not run\n\(result.report)")
    }

    /// An address-space limit swept from tight to loose: at every headroom
    /// the program gets NULL + ENOMEM at the limit, never a crash, and gets
    /// its freed memory back (Tests/blackbox/oom.c).
    @Test("RLIMIT_AS sweep from tight to loose", arguments: BBVariant.all, [64, 96, 160])
    func addressSpaceSweep(_ variant: BBVariant, _ headroomMiB: Int) async throws {
        let preload = try variant.libraryPath()
        let executable = try await BBBuild.executable("oom")
        let result = try await BBProcess.run(
            executable, ["headroom_mib=\(headroomMiB)"], preload: preload, timeout: .seconds(180))
        #expect(result.succeeded, "oom headroom_mib=\(headroomMiB) under \(variant.testDescription)\n\(result.report)")
        let recovery = result.stdoutLines.filter { $0.hasPrefix("RECOVERY:") }
        #expect(recovery.isEmpty, "\(recovery.joined(separator: "\n"))")
        #expect(result.stdoutLines.contains("oom: passed"), "\(result.report)")
    }

    /// The OS refuses in the middle of the allocator's work
    /// (Tests/blackbox/faults.c): metadata runs out while magazines move to
    /// the depot, purges fail, guard pages cannot be made.
    @Test("OS faults: no block owned twice, calloc zeroed, guards or NULL", arguments: BBVariant.all,
          ["magazines", "calloc-madvise", "guards", "errno"])
    func osFaults(_ variant: BBVariant, _ scenario: String) async throws {
        try await runFaultScenario(variant, scenario)
    }

    /// The same as calloc-madvise, with the kernel refusing the purges:
    /// madvise(MADV_DONTNEED) fails with EINVAL on pages locked by mlockall.
    /// Not the hardened variant: it maps every block above 64 KiB on its own
    /// and unmaps it on free, so it never purges them (calloc-madvise covers
    /// it), and under mlockall each of those 8000 mappings is populated and
    /// locked (45 s of system time).
    @Test("calloc under mlockall(MCL_CURRENT | MCL_FUTURE) is zeroed",
          .enabled(if: geteuid() == 0, "mlockall of this much memory needs root (CAP_IPC_LOCK)"),
          arguments: BBVariant.all.filter { $0.expectedName != "hardened" })
    func callocUnderMlockall(_ variant: BBVariant) async throws {
        try await runFaultScenario(variant, "calloc-mlock")
    }

    private func runFaultScenario(_ variant: BBVariant, _ scenario: String) async throws {
        let preload = try variant.libraryPath()
        let executable = try await BBBuild.executable("faults")
        let result = try await BBProcess.run(executable, [scenario], preload: preload, timeout: .seconds(120))
        #expect(result.succeeded, "faults \(scenario) under \(variant.testDescription)\n\(result.report)")
        #expect(!result.stdoutLines.contains { $0.hasPrefix("SKIP:") }, "faults \(scenario) did not run\n\(result.report)")
        #expect(result.stdoutLines.contains { $0.hasPrefix("faults: \(scenario): ") }, "\(result.report)")
    }

    /// The fuzzer's operation sequence depends only on the seed: the same
    /// per-operation counts under every allocator (random part only).
    @Test("API fuzzer is deterministic across allocators")
    func fuzzIsDeterministic() async throws {
        let executable = try await RLFuzz.executable()
        let args = ["seed=7", "iterations=20000", "edge=0"]
        let plain = try await BBProcess.run(executable, args)
        try #require(plain.succeeded, "\(plain.report)")
        let counts = plain.stdoutLines.first { $0.hasPrefix("api_fuzz: malloc=") }
        #expect(counts != nil, "\(plain.report)")
        for variant in BBVariant.found {
            let run = try await BBProcess.run(executable, args, preload: try variant.libraryPath())
            #expect(run.succeeded, "\(run.report)")
            #expect(
                run.stdoutLines.first { $0.hasPrefix("api_fuzz: malloc=") } == counts,
                "operation counts differ under \(variant.testDescription):\n\(plain.stdoutText)\n\(run.stdoutText)")
        }
    }
}
