// Support for the black-box tests: finding the built variants, a per-process
// scratch directory, running programs with a timeout (optionally under
// LD_PRELOAD), and compiling the C programs in Tests/blackbox once.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Paths

enum BBPaths {
    /// The package root: this file is `<root>/Tests/AethAllocTests/TestSupport.swift`.
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // AethAllocTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    /// The C programs run by `BlackBoxTests`.
    static let blackboxSources: URL = packageRoot.appendingPathComponent("Tests/blackbox")

    /// Where `swift build -c release` puts the variants: `<root>/.build/release`,
    /// or `$AETHALLOC_LIB_DIR`.
    static let libraryDirectory: URL = {
        if let dir = ProcessInfo.processInfo.environment["AETHALLOC_LIB_DIR"], !dir.isEmpty {
            let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            return URL(fileURLWithPath: dir, relativeTo: cwd).standardizedFileURL
        }
        return packageRoot.appendingPathComponent(".build/release")
    }()
}

// MARK: - Variants

/// One built variant library, `libaethalloc.so` or `libaethalloc-<name>.so`.
///
/// When no library is found, `BBVariant.all` holds a single placeholder whose
/// `libraryPath()` throws, so every parametrised test fails with a message
/// saying what to build instead of passing with zero arguments.
struct BBVariant: Sendable, Codable, CustomTestStringConvertible {
    /// Absolute path of the `.so`, or nil for the "nothing built" placeholder.
    let path: String?
    /// What `aethalloc_variant()` must return: "magazine" for
    /// `libaethalloc.so`, "<x>" for `libaethalloc-<x>.so`.
    let expectedName: String

    var testDescription: String {
        guard let path else { return "no libaethalloc*.so in \(BBPaths.libraryDirectory.path)" }
        return (path as NSString).lastPathComponent
    }

    /// The variant name a library file name implies, or nil if the name does
    /// not follow the pattern.
    static func expectedName(forFileName file: String) -> String? {
        if file == "libaethalloc.so" { return "magazine" }
        guard file.hasPrefix("libaethalloc-"), file.hasSuffix(".so") else { return nil }
        let name = file.dropFirst("libaethalloc-".count).dropLast(".so".count)
        return name.isEmpty ? nil : String(name)
    }

    /// Every `libaethalloc*.so` in the library directory, sorted by name.
    static let found: [BBVariant] = {
        let dir = BBPaths.libraryDirectory
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return files
            .filter { $0.hasPrefix("libaethalloc") && $0.hasSuffix(".so") }
            .sorted()
            .map { BBVariant(path: dir.appendingPathComponent($0).path, expectedName: expectedName(forFileName: $0) ?? "") }
    }()

    /// The arguments of every per-variant test.
    static let all: [BBVariant] = found.isEmpty ? [BBVariant(path: nil, expectedName: "")] : found

    static var missingMessage: String {
        "No libaethalloc*.so found in \(BBPaths.libraryDirectory.path). The black-box tests run the built "
            + "variants: run `swift build -c release` first (the README's test command is "
            + "`swift build -c release && swift test`), or set AETHALLOC_LIB_DIR to the directory holding them."
    }

    /// The library to preload; throws (failing the test) when none was built.
    func libraryPath() throws -> String {
        guard let path else { throw BBFailure(BBVariant.missingMessage) }
        guard !expectedName.isEmpty else {
            throw BBFailure("\(path): the file name should be libaethalloc.so or libaethalloc-<variant>.so")
        }
        return path
    }
}

/// An error whose description is the whole message (shown by Swift Testing).
struct BBFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - BBScratch directories

enum BBScratch {
    /// One directory per test process, removed at exit unless
    /// AETHALLOC_KEEP_TEST_FILES is set.
    static let root: URL = {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("aethalloc-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        if ProcessInfo.processInfo.environment["AETHALLOC_KEEP_TEST_FILES"] == nil {
            atexit { try? FileManager.default.removeItem(at: BBScratch.root) }
        }
        return url
    }()

    /// A new, empty, uniquely named directory.
    static func directory(_ label: String) throws -> URL {
        let safe = label.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }
        let url = root.appendingPathComponent("\(String(safe))-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

// MARK: - Running programs

/// The outcome of one program run.
struct BBProcessOutput: Sendable, CustomStringConvertible {
    var command: String
    var preload: String?
    /// Exit status, or the signal number when `signaled`.
    var status: Int32
    var signaled: Bool
    var timedOut: Bool
    var stdout: Data
    var stderr: Data
    var seconds: Double

    var succeeded: Bool { !timedOut && !signaled && status == 0 }
    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    var stdoutLines: [String] { stdoutText.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }

    var description: String { "`\(command)`: \(outcome)" }

    /// The "FAIL: ..." lines a black-box program printed.
    var failLines: [String] { stdoutLines.filter { $0.hasPrefix("FAIL:") } }

    var outcome: String {
        if timedOut { return "timed out: killed after \(String(format: "%.0f", seconds)) s" }
        if signaled { return "killed by signal \(status)" }
        return "exit status \(status)"
    }

    /// Everything needed to understand a failure: command, outcome, output.
    var report: String {
        func tail(_ text: String, _ limit: Int = 12_000) -> String {
            text.count <= limit ? text : "[... \(text.count - limit) characters cut ...]\n" + text.suffix(limit)
        }
        return """
            $ \(preload.map { "LD_PRELOAD=\($0) " } ?? "")\(command)
            \(timedOut ? outcome : "\(outcome) after \(String(format: "%.2f", seconds)) s")
            --- stdout ---
            \(tail(stdoutText))
            --- stderr ---
            \(tail(stderrText))
            """
    }
}

/// Limits how many child processes run at once (the machine may have only
/// two cores, and Swift Testing runs tests in parallel).
actor BBProcessSlots {
    static let shared = BBProcessSlots(max(2, ProcessInfo.processInfo.activeProcessorCount))

    private var available: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { available = count }

    func acquire() async {
        if available > 0 {
            available -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty {
            available += 1
        } else {
            waiters.removeFirst().resume()
        }
    }
}

/// Set once by whichever comes first: the process's termination or the timeout.
private final class BBRunState: @unchecked Sendable {
    private let lock = NSLock()
    private var exited = false
    private var timedOut = false
    private var continuation: CheckedContinuation<Void, Never>?

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.lock()
            if exited {
                lock.unlock()
                c.resume()
            } else {
                continuation = c
                lock.unlock()
            }
        }
    }

    func markExited() {
        lock.lock()
        exited = true
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume()
    }

    /// Marks a timeout; false if the process had already exited.
    func markTimedOut() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if exited { return false }
        timedOut = true
        return true
    }

    var didTimeOut: Bool {
        lock.lock()
        defer { lock.unlock() }
        return timedOut
    }
}

enum BBProcess {
    /// The absolute path of `name` on PATH, or nil.
    static func find(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue,
                FileManager.default.isExecutableFile(atPath: candidate)
            {
                return candidate
            }
        }
        return nil
    }

    /// Runs `executable` (a path, or a name looked up on PATH) and collects its
    /// output. The environment is this process's, without any LD_PRELOAD,
    /// plus `environment`, plus `LD_PRELOAD=preload` when given. A run longer
    /// than `timeout` is killed and reported as timed out.
    static func run(
        _ executable: String, _ arguments: [String] = [], environment: [String: String] = [:],
        preload: String? = nil, directory: URL? = nil, stdin: URL? = nil,
        timeout: Duration = .seconds(120)
    ) async throws -> BBProcessOutput {
        guard let exe = find(executable) else { throw BBFailure("\(executable): not found on PATH") }
        let command = ([executable] + arguments).map(shellQuoted).joined(separator: " ")
        let outDir = try BBScratch.directory("run")
        let outURL = outDir.appendingPathComponent("stdout")
        let errURL = outDir.appendingPathComponent("stderr")
        guard FileManager.default.createFile(atPath: outURL.path, contents: nil),
            FileManager.default.createFile(atPath: errURL.path, contents: nil)
        else { throw BBFailure("cannot create output files in \(outDir.path)") }
        defer { try? FileManager.default.removeItem(at: outDir) }

        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "LD_PRELOAD")
        env.merge(environment) { _, new in new }
        if let preload { env["LD_PRELOAD"] = preload }

        await BBProcessSlots.shared.acquire()
        let start = Date()
        let state = BBRunState()
        let process = Process()
        do {
            process.executableURL = URL(fileURLWithPath: exe)
            process.arguments = arguments
            process.environment = env
            if let directory { process.currentDirectoryURL = directory }
            // The child gets its own copies; ours are closed once it started.
            let outHandle = try FileHandle(forWritingTo: outURL)
            let errHandle = try FileHandle(forWritingTo: errURL)
            let inHandle = try stdin.map { try FileHandle(forReadingFrom: $0) }
            defer {
                try? outHandle.close()
                try? errHandle.close()
                try? inHandle?.close()
            }
            process.standardOutput = outHandle
            process.standardError = errHandle
            process.standardInput = inHandle ?? FileHandle.nullDevice
            process.terminationHandler = { _ in state.markExited() }
            try process.run()
        } catch {
            await BBProcessSlots.shared.release()
            throw BBFailure("cannot start \(command): \(error)")
        }
        let pid = process.processIdentifier
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            if state.markTimedOut() { kill(pid, SIGKILL) }
        }
        await state.wait()
        watchdog.cancel()
        await BBProcessSlots.shared.release()
        process.waitUntilExit()

        return BBProcessOutput(
            command: command, preload: preload,
            status: process.terminationStatus,
            signaled: process.terminationReason == .uncaughtSignal,
            timedOut: state.didTimeOut,
            stdout: (try? Data(contentsOf: outURL)) ?? Data(),
            stderr: (try? Data(contentsOf: errURL)) ?? Data(),
            seconds: Date().timeIntervalSince(start))
    }

    static func shellQuoted(_ s: String) -> String {
        if !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0) }) { return s }
        return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

// MARK: - Computing things once per process

/// Runs each keyed computation once per test process and shares the result
/// (compiled programs, baseline outputs of real programs).
actor BBOnce {
    static let shared = BBOnce()
    private var tasks: [String: Task<any Sendable, any Error>] = [:]

    func value<T: Sendable>(_ key: String, _ compute: @escaping @Sendable () async throws -> T) async throws -> T {
        let task: Task<any Sendable, any Error>
        if let existing = tasks[key] {
            task = existing
        } else {
            task = Task { try await compute() }
            tasks[key] = task
        }
        guard let value = try await task.value as? T else { throw BBFailure("Once: type mismatch for \(key)") }
        return value
    }
}

// MARK: - The black-box C programs

enum BBBuild {
    /// The C compiler: $CC, else cc, else the clang that comes with the
    /// Swift toolchain (a machine with only the toolchain has no cc).
    static var compiler: String {
        if let cc = ProcessInfo.processInfo.environment["CC"], !cc.isEmpty { return cc }
        return BBProcess.find("cc") != nil ? "cc" : "clang"
    }

    /// Compiles `Tests/blackbox/<name>.c` (once per test process) with
    /// `cc -O1 -g -pthread -Wall -rdynamic` and returns the executable's
    /// path. `-rdynamic` lets a program's own mmap & co. (faults.h) take the
    /// preloaded allocator's calls.
    static let flags = ["-O1", "-g", "-pthread", "-Wall", "-rdynamic"]

    static func executable(_ name: String) async throws -> String {
        try await BBOnce.shared.value("blackbox:\(name)") {
            let source = BBPaths.blackboxSources.appendingPathComponent("\(name).c")
            guard FileManager.default.fileExists(atPath: source.path) else {
                throw BBFailure("missing test program \(source.path)")
            }
            let dir = try BBScratch.directory("bin")
            let exe = dir.appendingPathComponent(name).path
            let result = try await BBProcess.run(
                compiler, flags + ["-o", exe, source.path, "-ldl"], timeout: .seconds(300))
            guard result.succeeded else { throw BBFailure("compiling \(name).c failed:\n\(result.report)") }
            return exe
        }
    }
}
