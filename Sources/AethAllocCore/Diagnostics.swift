// Diagnostics.swift: one-line messages on stderr, then abort.
//
// Misuse the allocator detects (a pointer it never handed out, an interior
// pointer of a large block, a large block freed twice) ends the process with
//
//   aethalloc: free(): invalid pointer 0x7f12345678 (not allocated by AethAlloc)
//
// rather than corrupting memory. Formatting uses a stack buffer: no
// allocation, no String.
import CAethAlloc

enum Diagnostics {
    @inline(never)
    static func fatal(_ message: StaticString) -> Never {
        var line = LineBuffer()
        line.append("aethalloc: ")
        line.append(message)
        line.append("\n")
        line.write()
        OS.abort()
    }

    @inline(never)
    static func invalidPointer(_ p: RawPointer?, operation: StaticString, reason: StaticString) -> Never {
        var line = LineBuffer()
        line.append("aethalloc: ")
        line.append(operation)
        line.append("(): invalid pointer ")
        line.appendHex(UInt(bitPattern: p))
        line.append(" (")
        line.append(reason)
        line.append(")\n")
        line.write()
        OS.abort()
    }
}

/// A fixed 256-byte line on the stack.
struct LineBuffer {
    var bytes: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var length = 0
    static let capacity = 256

    mutating func append(byte: UInt8) {
        if length >= LineBuffer.capacity { return }
        withUnsafeMutableBytes(of: &bytes) { $0[length] = byte }
        length += 1
    }

    mutating func append(_ s: StaticString) {
        let p = s.utf8Start
        for i in 0..<s.utf8CodeUnitCount { append(byte: p[i]) }
    }

    mutating func append(cString p: UnsafePointer<CChar>) {
        var i = 0
        while p[i] != 0 {
            append(byte: UInt8(bitPattern: p[i]))
            i += 1
        }
    }

    mutating func appendHex(_ v: UInt) {
        append("0x")
        var started = false
        var shift = UInt.bitWidth - 4
        while shift >= 0 {
            let d = Int((v >> UInt(shift)) & 0xF)
            if d != 0 || started || shift == 0 {
                started = true
                append(byte: d < 10 ? UInt8(48 + d) : UInt8(87 + d))
            }
            shift -= 4
        }
    }

    mutating func appendDecimal(_ v: UInt) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var n = 0
        var x = v
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[n] = UInt8(48 + x % 10)
                x /= 10
                n += 1
            } while x > 0
        }
        while n > 0 {
            n -= 1
            let b = withUnsafeBytes(of: &digits) { $0[n] }
            append(byte: b)
        }
    }

    /// Writes the line to `fd`; false on an error.
    mutating func write(to fd: Int32) -> Bool {
        let n = length
        return withUnsafeBytes(of: &bytes) { OS.write(fd, $0.baseAddress!, count: n) }
    }

    mutating func write() {
        let n = length
        withUnsafeBytes(of: &bytes) { OS.writeStderr($0.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n) }
    }
}
