import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where the tool writes. The real console writes straight to fds 1 and 2;
/// the capturing console (for tests) collects everything in memory.
public final class Console: @unchecked Sendable {
    private let lock = NSLock()
    private let capture: Bool
    private var outText = ""
    private var errText = ""
    /// Whether stderr is a terminal (progress lines are then redrawn in place).
    public let errIsTTY: Bool
    /// Whether stdout is a terminal (`stat` then redraws the screen).
    public let outIsTTY: Bool
    private var progressShown = false

    private init(capture: Bool, errIsTTY: Bool, outIsTTY: Bool) {
        self.capture = capture
        self.errIsTTY = errIsTTY
        self.outIsTTY = outIsTTY
    }

    /// The process's stdout and stderr.
    public static func standard() -> Console {
        Console(capture: false, errIsTTY: isatty(2) != 0, outIsTTY: isatty(1) != 0)
    }

    /// A console that records output, for tests.
    public static func capturing() -> Console {
        Console(capture: true, errIsTTY: false, outIsTTY: false)
    }

    public var capturedOut: String { lock.withLock { outText } }
    public var capturedErr: String { lock.withLock { errText } }

    /// Writes `text` to stdout as is.
    public func out(_ text: String) {
        lock.withLock {
            clearProgressLocked()
            if capture { outText += text } else { Console.writeAll(1, text) }
        }
    }

    /// Writes one line to stdout.
    public func outLine(_ line: String = "") { out(line + "\n") }

    /// Writes one line to stderr.
    public func errLine(_ line: String) {
        lock.withLock {
            clearProgressLocked()
            if capture { errText += line + "\n" } else { Console.writeAll(2, line + "\n") }
        }
    }

    /// A transient progress line on stderr: redrawn in place on a terminal,
    /// one line each otherwise.
    public func progress(_ line: String) {
        lock.withLock {
            if capture {
                errText += line + "\n"
            } else if errIsTTY {
                Console.writeAll(2, "\r\u{1B}[K" + line)
                progressShown = true
            } else {
                Console.writeAll(2, line + "\n")
            }
        }
    }

    /// Ends a progress display (call when done).
    public func endProgress() {
        lock.withLock { clearProgressLocked() }
    }

    private func clearProgressLocked() {
        if progressShown {
            Console.writeAll(2, "\r\u{1B}[K")
            progressShown = false
        }
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { buf in
                write(fd, buf.baseAddress! + offset, buf.count - offset)
            }
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
        bytes.removeAll()
    }
}
