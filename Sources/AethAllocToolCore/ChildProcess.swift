import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended.
public enum ExitStatus: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)

    /// Decodes a wait(2) status word.
    public init(waitStatus s: Int32) {
        let sig = s & 0x7f
        if sig == 0 {
            self = .exited((s >> 8) & 0xff)
        } else {
            self = .signaled(sig)
        }
    }

    public var succeeded: Bool { self == .exited(0) }

    /// The code a shell would report: the exit code, or 128 + the signal.
    public var shellCode: Int32 {
        switch self {
        case .exited(let c): return c
        case .signaled(let s): return 128 + s
        }
    }

    public var description: String {
        switch self {
        case .exited(let c): return "exit \(c)"
        case .signaled(let s): return "signal \(s) (\(Format.signalName(s)))"
        }
    }
}

/// What a child's standard stream is connected to.
public enum StdioMode: Sendable {
    case inherit
    case null
    case capture
}

/// A child process to start.
public struct ChildSpec: Sendable {
    public var argv: [String]
    /// The environment, except LD_PRELOAD, which `preload` sets.
    public var environment: [String: String]
    /// The library to LD_PRELOAD into the command; nil: none.
    public var preload: String?
    /// Start the command through this launcher, for a true ru_maxrss.
    public var launcher: Launcher?
    public var stdin: StdioMode = .null
    public var stdout: StdioMode = .capture
    public var stderr: StdioMode = .capture
    /// Kill the child (SIGKILL) after this many seconds.
    public var timeout: Double?
    /// Ignore SIGINT/SIGQUIT in this process while the child runs, as
    /// system(3) does, so that ^C reaches the child only.
    public var ignoreInterrupts = false

    public init(argv: [String], environment: [String: String], preload: String? = nil, launcher: Launcher? = nil) {
        self.argv = argv
        self.environment = environment
        self.preload = preload
        self.launcher = launcher
    }
}

/// What one child run measured.
public struct ChildResult: Sendable {
    public var status: ExitStatus
    public var wallSeconds: Double
    public var userSeconds: Double
    public var sysSeconds: Double
    public var maxRSSKB: Int
    public var stdout: Data
    public var stderr: Data
    public var timedOut: Bool

    public var cpuSeconds: Double { userSeconds + sysSeconds }

    /// The last non-empty line the child wrote on stderr, trimmed, if captured.
    public var lastErrorLine: String? {
        let text = String(decoding: stderr, as: UTF8.self)
        let line = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .last { !$0.isEmpty }
        guard let line else { return nil }
        return line.count > 200 ? String(line.prefix(200)) + "…" : line
    }
}

/// The child could not be started at all.
public struct SpawnError: Error, Equatable {
    public var command: String
    public var code: Int32

    public var message: String {
        switch code {
        case ENOENT: return "command not found: \(command)"
        case EACCES: return "permission denied: \(command)"
        case ENOEXEC: return "not an executable: \(command)"
        default: return "cannot run \(command): \(String(cString: strerror(code)))"
        }
    }

    /// The shell's exit code for this failure.
    public var exitCode: Int32 { code == ENOENT ? 127 : 126 }
}

/// Builds a child environment from `base`: with LD_PRELOAD set to `preload`,
/// or with LD_PRELOAD removed when `preload` is nil (the glibc baseline).
func environment(_ base: [String: String], preload: String?) -> [String: String] {
    var env = base
    if let preload { env["LD_PRELOAD"] = preload } else { env.removeValue(forKey: "LD_PRELOAD") }
    return env
}

private final class KillTimer: @unchecked Sendable {
    let lock = NSLock()
    var done = false
    var fired = false
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// An unlinked temporary file, open read-write and close-on-exec.
private func anonymousFile() throws -> Int32 {
    let dir = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    var template = Array((dir + "/aethalloc-cli-XXXXXX").utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    guard fd >= 0 else { throw ToolError("cannot create a temporary file in \(dir): \(String(cString: strerror(errno)))") }
    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    return fd
}

private func readAll(_ fd: Int32) -> Data {
    var data = Data()
    guard lseek(fd, 0, SEEK_SET) == 0 else { return data }
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        data.append(contentsOf: buf[0..<n])
    }
    return data
}

/// Runs a child to completion and measures it: wall time around
/// spawn-to-exit, user and system CPU time and peak RSS from wait4(2).
public func runChild(_ spec: ChildSpec) throws -> ChildResult {
    guard let command = spec.argv.first, !command.isEmpty else { throw ToolError("no command given") }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }

    // The child starts with an empty signal mask and default dispositions.
    var mask = sigset_t()
    sigemptyset(&mask)
    posix_spawnattr_setsigmask(&attr, &mask)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for s in [SIGINT, SIGQUIT, SIGPIPE, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, s) }
    posix_spawnattr_setsigdefault(&attr, &defaults)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    // Through the launcher, the command is a grandchild: the launcher runs
    // with no preload and sets it for the command alone.
    var argv = spec.argv
    var env = environment(spec.environment, preload: spec.preload)
    if let l = spec.launcher {
        let ms = spec.timeout.map { max(1, Int(($0 * 1000).rounded(.up))) } ?? 0
        argv = [l.path, String(ms), spec.preload ?? "-"] + spec.argv
        env = environment(spec.environment, preload: nil)
    }

    var openFDs: [Int32] = []
    defer { for fd in openFDs { close(fd) } }
    var outFD: Int32 = -1
    var errFD: Int32 = -1
    func connect(_ mode: StdioMode, to target: Int32, write: Bool) throws -> Int32 {
        switch mode {
        case .inherit:
            return -1
        case .null:
            posix_spawn_file_actions_addopen(&actions, target, "/dev/null", write ? O_WRONLY : O_RDONLY, 0)
            return -1
        case .capture:
            let fd = try anonymousFile()
            openFDs.append(fd)
            posix_spawn_file_actions_adddup2(&actions, fd, target)
            return fd
        }
    }
    _ = try connect(spec.stdin == .capture ? .null : spec.stdin, to: 0, write: false)
    outFD = try connect(spec.stdout, to: 1, write: true)
    errFD = try connect(spec.stderr, to: 2, write: true)
    let reportFD = spec.launcher == nil ? -1 : try connect(.capture, to: 3, write: true)

    let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    let cEnv: [UnsafeMutablePointer<CChar>?] = env.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for p in cArgs { free(p) }
        for p in cEnv { free(p) }
    }

    var oldInt = sigaction()
    var oldQuit = sigaction()
    if spec.ignoreInterrupts {
        var ign = sigaction()
        ign.__sigaction_handler.sa_handler = SIG_IGN
        sigemptyset(&ign.sa_mask)
        sigaction(SIGINT, &ign, &oldInt)
        sigaction(SIGQUIT, &ign, &oldQuit)
    }
    defer {
        if spec.ignoreInterrupts {
            sigaction(SIGINT, &oldInt, nil)
            sigaction(SIGQUIT, &oldQuit, nil)
        }
    }

    var pid: pid_t = 0
    let start = monotonicSeconds()
    let rc = posix_spawnp(&pid, argv[0], &actions, &attr, cArgs, cEnv)
    if rc != 0 { throw SpawnError(command: argv[0], code: rc) }

    let timer = KillTimer()
    if let t = spec.timeout, t > 0, spec.launcher == nil {
        let target = pid
        DispatchQueue.global().asyncAfter(deadline: .now() + t) {
            timer.lock.withLock {
                if !timer.done {
                    kill(target, SIGKILL)
                    timer.fired = true
                }
            }
        }
    }

    // Wait for the exit without reaping, so the timer can never signal a
    // recycled pid; then reap with wait4 for the rusage.
    var info = siginfo_t()
    while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 {
        if errno != EINTR { break }
    }
    let end = monotonicSeconds()
    timer.lock.withLock { timer.done = true }

    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 {
        if errno != EINTR { throw ToolError("wait4 failed: \(String(cString: strerror(errno)))") }
    }

    if let l = spec.launcher {
        let text = String(decoding: readAll(reportFD), as: UTF8.self)
        guard ExitStatus(waitStatus: status).succeeded, let r = Launcher.parseReport(text) else {
            throw ToolError("the measuring launcher \(l.path) failed (\(ExitStatus(waitStatus: status).description))")
        }
        if r.execErrno != 0 { throw SpawnError(command: command, code: r.execErrno) }
        return ChildResult(
            status: ExitStatus(waitStatus: r.status),
            wallSeconds: r.wallNs * 1e-9,
            userSeconds: r.userUs * 1e-6,
            sysSeconds: r.sysUs * 1e-6,
            maxRSSKB: r.maxRSS,
            stdout: outFD >= 0 ? readAll(outFD) : Data(),
            stderr: errFD >= 0 ? readAll(errFD) : Data(),
            timedOut: r.timedOut)
    }

    return ChildResult(
        status: ExitStatus(waitStatus: status),
        wallSeconds: end - start,
        userSeconds: Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) * 1e-6,
        sysSeconds: Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) * 1e-6,
        maxRSSKB: Int(usage.ru_maxrss),
        stdout: outFD >= 0 ? readAll(outFD) : Data(),
        stderr: errFD >= 0 ? readAll(errFD) : Data(),
        timedOut: timer.lock.withLock { timer.fired })
}
