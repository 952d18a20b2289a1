import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The write end of the active watcher's pipe, for the signal handler.
nonisolated(unsafe) private var interruptPipeWriteFD: Int32 = -1

/// Async-signal-safe: one byte into the pipe, errno preserved.
private let interruptHandler: @convention(c) (Int32) -> Void = { _ in
    let saved = errno
    var byte: UInt8 = 1
    if interruptPipeWriteFD >= 0 { _ = write(interruptPipeWriteFD, &byte, 1) }
    errno = saved
}

/// Turns SIGINT and SIGTERM into a readable pipe, so that a loop can sleep
/// in poll(2) and end cleanly on Ctrl-C. One at a time per process; the
/// previous handlers come back on `restore()`.
final class InterruptWatcher {
    private var fds: [Int32] = [-1, -1]
    private var saved: [(Int32, sigaction)] = []
    private var savedMask = sigset_t()

    init() throws {
        fds = try Poll.makePipe()
        interruptPipeWriteFD = fds[1]
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = interruptHandler
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = SA_RESTART
        for sig in [SIGINT, SIGTERM] {
            var old = sigaction()
            sigaction(sig, &sa, &old)
            saved.append((sig, old))
        }
        // A parent may have started us with them blocked (the mask is
        // inherited across exec): take them on this thread.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, &savedMask)
    }

    /// The read end: readable once a signal came.
    var fd: Int32 { fds[0] }

    /// Whether a signal came (does not wait).
    var interrupted: Bool { Poll.readable(fd, timeoutMs: 0) }

    /// Sleeps up to `seconds`; true if interrupted meanwhile.
    func wait(_ seconds: Double) -> Bool {
        Poll.readable(fd, timeoutMs: Int(seconds * 1000))
    }

    func restore() {
        if !saved.isEmpty { pthread_sigmask(SIG_SETMASK, &savedMask, nil) }
        for (sig, old) in saved {
            var o = old
            sigaction(sig, &o, nil)
        }
        saved = []
        interruptPipeWriteFD = -1
        for f in fds where f >= 0 { close(f) }
        fds = [-1, -1]
    }

    deinit { restore() }
}

enum Poll {
    /// A pipe, both ends close-on-exec and non-blocking.
    static func makePipe() throws -> [Int32] {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw ToolError("cannot create a pipe: \(errnoText(errno))") }
        for f in fds {
            _ = fcntl(f, F_SETFD, FD_CLOEXEC)
            _ = fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK)
        }
        return fds
    }

    /// Milliseconds on the monotonic clock.
    static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Seconds on the monotonic clock.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Whether `fd` becomes readable (or hung up) within `timeoutMs`;
    /// retries after EINTR with the time left.
    static func readable(_ fd: Int32, timeoutMs: Int) -> Bool {
        let deadline = nowMs() + Int64(max(0, timeoutMs))
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(clamping: max(0, deadline - nowMs()))
            let n = poll(&p, 1, left)
            if n > 0 { return true }
            if n == 0 { return false }
            if errno != EINTR { return false }
        }
    }
}
