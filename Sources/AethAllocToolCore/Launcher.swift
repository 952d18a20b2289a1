import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A tiny C program that starts the measured command for us.
///
/// Why: a child's ru_maxrss is at least the RSS of the memory image it
/// replaced at exec (Linux folds the old mm's high-water mark into the
/// process's maxrss in exec_mmap). A child spawned straight from this tool
/// would therefore report at least this tool's own RSS (tens of MiB) as its
/// peak, drowning small programs. The launcher is a ~1 MiB C process: it
/// forks the command from itself, waits with wait4, and reports the
/// command's rusage, exit status and wall time on fd 3.
public struct Launcher: Sendable {
    public var path: String

    public init(path: String) { self.path = path }

    public static let source = #"""
        /* aethalloc-cli's measuring launcher (generated; see Launcher.swift).
           usage: launch TIMEOUT_MS PRELOAD|- CMD ARGS...
           Runs CMD in a child with LD_PRELOAD=PRELOAD (none for "-"), and
           writes to fd 3: exec_errno status wall_ns utime_us stime_us maxrss_kb timed_out */
        #define _GNU_SOURCE
        #include <errno.h>
        #include <fcntl.h>
        #include <signal.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/resource.h>
        #include <sys/time.h>
        #include <sys/wait.h>
        #include <time.h>
        #include <unistd.h>

        static volatile pid_t child;
        static volatile sig_atomic_t timed_out;

        static void on_alarm(int sig) {
            (void)sig;
            timed_out = 1;
            if (child > 0) kill(child, SIGKILL);
        }

        int main(int argc, char **argv) {
            if (argc < 4) return 125;
            long timeout_ms = atol(argv[1]);
            const char *preload = argv[2];
            if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0) return 125;
            int errpipe[2];
            if (pipe2(errpipe, O_CLOEXEC) != 0) return 125;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            pid_t pid = fork();
            if (pid < 0) return 125;
            if (pid == 0) {
                if (strcmp(preload, "-") != 0) setenv("LD_PRELOAD", preload, 1);
                else unsetenv("LD_PRELOAD");
                execvp(argv[3], argv + 3);
                int e = errno;
                if (write(errpipe[1], &e, sizeof e) < 0) _exit(127);
                _exit(127);
            }
            child = pid;
            close(errpipe[1]);
            if (timeout_ms > 0) {
                struct sigaction sa;
                memset(&sa, 0, sizeof sa);
                sa.sa_handler = on_alarm;
                sigaction(SIGALRM, &sa, 0);
                struct itimerval it;
                memset(&it, 0, sizeof it);
                it.it_value.tv_sec = timeout_ms / 1000;
                it.it_value.tv_usec = (timeout_ms % 1000) * 1000;
                setitimer(ITIMER_REAL, &it, 0);
            }
            int exec_errno = 0;
            ssize_t n;
            while ((n = read(errpipe[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {}
            if (n != (ssize_t)sizeof exec_errno) exec_errno = 0;
            int status = 0;
            struct rusage ru;
            while (wait4(pid, &status, 0, &ru) < 0) {
                if (errno != EINTR) return 125;
            }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long long wall_ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
            long long ut = (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec;
            long long st = (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
            dprintf(3, "%d %d %lld %lld %lld %ld %d\n", exec_errno, status, wall_ns, ut, st, ru.ru_maxrss, (int)timed_out);
            return 0;
        }
        """#

    /// Compiles the launcher into `dir` with cc.
    public static func build(in dir: String) -> Result<Launcher, ToolError> {
        let src = dir + "/aethalloc-launch.c"
        let bin = dir + "/aethalloc-launch"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try source.write(toFile: src, atomically: true, encoding: .utf8)
        } catch {
            return .failure(ToolError("cannot write \(src): \(error.localizedDescription)"))
        }
        var spec = ChildSpec(argv: ["cc", "-O2", "-o", bin, src], environment: ProcessInfo.processInfo.environment)
        spec.stdout = .null
        do {
            let r = try runChild(spec)
            guard r.status.succeeded else {
                return .failure(ToolError("cc failed on the launcher: \(r.lastErrorLine ?? r.status.description)"))
            }
        } catch let e as SpawnError {
            return .failure(ToolError(e.message))
        } catch {
            return .failure(ToolError("\(error)"))
        }
        return .success(Launcher(path: bin))
    }

    /// Parses the launcher's report line.
    static func parseReport(_ text: String) -> (execErrno: Int32, status: Int32, wallNs: Double, userUs: Double, sysUs: Double, maxRSS: Int, timedOut: Bool)? {
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard f.count == 7, let e = Int32(f[0]), let s = Int32(f[1]), let w = Double(f[2]), let u = Double(f[3]), let sy = Double(f[4]),
            let m = Int(f[5]), let t = Int(f[6])
        else { return nil }
        return (e, s, w, u, sy, m, t != 0)
    }
}

/// A launcher in a temporary directory for the duration of `body`; nil
/// (with a notice) when there is no C compiler.
public func withTemporaryLauncher<T>(console: Console, prefix: String, _ body: (Launcher?) throws -> T) rethrows -> T {
    var template = Array((NSTemporaryDirectory() + "/aethalloc-cli-XXXXXX").utf8CString)
    guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { return try body(nil) }
    let dir = String(cString: p)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    switch Launcher.build(in: dir) {
    case .success(let l): return try body(l)
    case .failure(let e):
        console.errLine("\(prefix)note: peak RSS includes this tool's own footprint (\(e.message); install a C compiler, e.g. 'apt-get install gcc')")
        return try body(nil)
    }
}
