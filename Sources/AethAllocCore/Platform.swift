// Platform.swift: the OS contract the core is written against.
//
// reserve / release / purge / remap, page size, time, errno and stderr.
// Only this file and the C shim (Sources/CAethAlloc) touch libc; the rest of
// the core calls `OS`.
import CAethAlloc

typealias RawPointer = UnsafeMutableRawPointer

enum OS {
    /// Maps `bytes` of read-write memory aligned to `alignment` (a power of
    /// two, a multiple of the page size). Over-maps and trims the ends.
    static func mapAligned(bytes: Int, alignment: Int) -> RawPointer? {
        if alignment <= Tuning.osPageBytes { return aeth_mmap(bytes) }
        let (total, overflow) = bytes.addingReportingOverflow(alignment - Tuning.osPageBytes)
        if overflow { return nil }
        // Try the exact size first: the kernel often hands out aligned space.
        guard let raw = aeth_mmap(total) else { return nil }
        let start = UInt(bitPattern: raw)
        let aligned = (start + UInt(alignment - 1)) & ~UInt(alignment - 1)
        let head = Int(aligned - start)
        let tail = total - head - bytes
        if head > 0 { _ = aeth_munmap(raw, head) }
        if tail > 0 { _ = aeth_munmap(RawPointer(bitPattern: aligned + UInt(bytes)), tail) }
        return RawPointer(bitPattern: aligned)
    }

    static func unmap(_ p: RawPointer, bytes: Int) { _ = aeth_munmap(p, bytes) }

    /// Returns the physical pages of a range to the OS; it reads as zero after.
    static func purge(_ p: RawPointer, bytes: Int) { _ = aeth_purge(p, bytes) }

    /// Resizes a mapping without moving it. False if the neighbours are taken.
    static func remapInPlace(_ p: RawPointer, from old: Int, to new: Int) -> Bool {
        aeth_mremap_inplace(p, old, new) != nil
    }

    /// Moves a mapping's pages to `target` (a range we own) without copying.
    static func remap(_ p: RawPointer, from old: Int, to new: Int, at target: RawPointer) -> Bool {
        aeth_mremap_to(p, old, new, target) == target
    }

    @inline(__always) static func nowMs() -> UInt64 { aeth_now_ms() }

    @inline(__always) static var errno: Int32 {
        get { aeth_errno_get() }
        set { aeth_errno_set(newValue) }
    }
    static var ENOMEM: Int32 { aeth_ENOMEM() }
    static var EINVAL: Int32 { aeth_EINVAL() }

    static func writeStderr(_ p: UnsafePointer<UInt8>, count: Int) { aeth_write_stderr(p, count) }
    static func abort() -> Never { aeth_abort() }
}
