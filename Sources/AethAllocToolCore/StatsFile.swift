// StatsFile.swift: reading the per-process statistics files that
// libaethalloc-metrics.so publishes. The layout and the reading rules live in
// Sources/CAethAllocStatsFormat/include/aethalloc_stats_file.h, the only home
// of the format: offsets, sizes and constants come from that C module.
//
// Torn reads: a file is mapped MAP_SHARED, PROT_READ and copied under the
// header's sequence lock. The reader loads `sequence` with acquire ordering
// (Synchronization.Atomic through a pointer into the mapping), copies the
// body, issues an acquire fence and loads `sequence` again; the copy is
// accepted only if both loads saw the same even value. Otherwise it retries,
// yielding the CPU, up to `StatsFile.maxAttempts` times (about 50 ms in all),
// and then reports the file as busy.
import CAethAllocStatsFormat
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The constants of the statistics file format, from the C header.
public enum StatsFormat {
    /// "AETHSTAT".
    public static let magic: [UInt8] = Array(AETHALLOC_STATS_MAGIC.utf8)
    /// The newest version this reader understands.
    public static let version = UInt32(AETHALLOC_STATS_VERSION)
    /// The size the writer gives the file.
    public static let fileBytes = Int(AETHALLOC_STATS_FILE_BYTES)
    public static let maxClasses = Int(AETHALLOC_STATS_MAX_CLASSES)
    /// The bytes a version-1 file holds at least (the header struct).
    public static let version1Bytes = MemoryLayout<aethalloc_stats_file>.size

    static func offset(_ field: PartialKeyPath<aethalloc_stats_file>) -> Int {
        MemoryLayout<aethalloc_stats_file>.offset(of: field)!
    }
    static let versionOffset = offset(\aethalloc_stats_file.version)
    static let fileBytesOffset = offset(\aethalloc_stats_file.file_bytes)
    static let sequenceOffset = offset(\aethalloc_stats_file.sequence)
}

/// The counters of one process, as published (totals since it started).
/// The JSON keys are the field names of the C header.
public struct StatsCounters: Codable, Equatable, Sendable {
    public var allocs: UInt64 = 0
    public var frees: UInt64 = 0
    public var cacheHits: UInt64 = 0
    public var cacheMisses: UInt64 = 0
    public var directAllocs: UInt64 = 0
    public var bytesInUse: UInt64 = 0
    public var peakBytesInUse: UInt64 = 0
    /// Total ever mapped from the OS.
    public var bytesMapped: UInt64 = 0
    /// Total ever given back to the OS.
    public var bytesReturned: UInt64 = 0
    public var depotTransfers: UInt64 = 0
    public var threadsExited: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case allocs, frees
        case cacheHits = "cache_hits"
        case cacheMisses = "cache_misses"
        case directAllocs = "direct_allocs"
        case bytesInUse = "bytes_in_use"
        case peakBytesInUse = "peak_bytes_in_use"
        case bytesMapped = "bytes_mapped"
        case bytesReturned = "bytes_returned"
        case depotTransfers = "depot_transfers"
        case threadsExited = "threads_exited"
    }

    /// Cache hits over cache hits plus misses; nil before the first lookup.
    public var cacheHitRatio: Double? {
        let lookups = Double(cacheHits) + Double(cacheMisses)
        return lookups > 0 ? Double(cacheHits) / lookups : nil
    }
}

/// One size class's allocation count.
public struct SizeClassCount: Codable, Equatable, Sendable {
    public var size: UInt64
    public var allocs: UInt64

    public init(size: UInt64, allocs: UInt64) {
        self.size = size
        self.allocs = allocs
    }
}

/// A consistent copy of one statistics file.
public struct StatsSnapshot: Equatable, Sendable {
    public var version: UInt32 = StatsFormat.version
    public var sequence: UInt64 = 0
    public var pid: Int64 = 0
    public var variant = ""
    public var command = ""
    public var startUnixMs: UInt64 = 0
    public var updateUnixMs: UInt64 = 0
    public var publishes: UInt32 = 0
    public var counters = StatsCounters()
    public var classes: [SizeClassCount] = []

    public init() {}
}

/// Why a statistics file could not be read. `message` is the text after
/// "<path>: " in the one-line error.
public enum StatsFileError: Error, Equatable, Sendable {
    /// Zero bytes, or a header of zeros: the library is creating it, or its
    /// process was killed while creating it.
    case empty
    /// Shorter than its version needs.
    case truncated(size: Int, needed: Int)
    /// Not written by AethAlloc (bad magic), or not a regular file.
    case foreign(String)
    case newerVersion(UInt32)
    /// Right magic and version, impossible contents.
    case invalid(String)
    /// The sequence stayed odd or kept changing: a writer stopped mid-update.
    case busy
    /// A system call failed.
    case system(String, Int32)

    public var message: String {
        switch self {
        case .empty:
            return "empty statistics file (its process is starting, or was killed while starting)"
        case .truncated(let size, let needed):
            return "truncated statistics file: \(size) byte\(size == 1 ? "" : "s"), a version-1 file has at least \(needed)"
        case .foreign(let why):
            return "not an AethAlloc statistics file (\(why))"
        case .newerVersion(let v):
            return "written by a newer AethAlloc (version \(v)); this aethalloc-cli reads up to \(StatsFormat.version)"
        case .invalid(let why):
            return "invalid statistics file: \(why)"
        case .busy:
            return "statistics file stays mid-update (its writer may be stopped); try again"
        case .system(let op, let code):
            return "cannot \(op): \(errnoText(code))"
        }
    }

    /// Whether the library wrote (or was writing) this file: such files of
    /// dead processes are removed.
    public var isOurs: Bool {
        switch self {
        case .empty, .truncated, .newerVersion, .invalid, .busy: return true
        case .foreign, .system: return false
        }
    }
}

/// strerror(3), lower-cased like the rest of the tool's messages.
func errnoText(_ code: Int32) -> String {
    switch code {
    case EACCES, EPERM: return "permission denied"
    case ENOENT: return "no such file or directory"
    case ENOTDIR: return "not a directory"
    default:
        let s = String(cString: strerror(code))
        return s.prefix(1).lowercased() + s.dropFirst()
    }
}

public enum StatsFile {
    /// Seqlock attempts before a file is reported busy.
    public static let maxAttempts = 1000

    /// Checks the fields that never change after creation: magic, version,
    /// file_bytes, and the size a version needs. `bytes` may be just the
    /// beginning of the file; `size` is its size on disk.
    public static func checkHeader(_ bytes: UnsafeRawBufferPointer, fileSize size: Int) throws(StatsFileError) {
        let magic = StatsFormat.magic
        if size == 0 { throw .empty }
        let head = Array(bytes.prefix(magic.count))
        if head.count < magic.count {
            if head.elementsEqual(magic.prefix(head.count)) { throw .truncated(size: size, needed: StatsFormat.version1Bytes) }
            throw .foreign("bad magic")
        }
        if head != magic {
            if head.allSatisfy({ $0 == 0 }) { throw .empty }
            throw .foreign("bad magic")
        }
        if bytes.count < StatsFormat.fileBytesOffset + 4 { throw .truncated(size: size, needed: StatsFormat.version1Bytes) }
        let version = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: StatsFormat.versionOffset, as: UInt32.self))
        if version == 0 { throw .invalid("version 0") }
        if version > StatsFormat.version { throw .newerVersion(version) }
        if size < StatsFormat.version1Bytes { throw .truncated(size: size, needed: StatsFormat.version1Bytes) }
        let declared = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: StatsFormat.fileBytesOffset, as: UInt32.self)))
        if declared < StatsFormat.version1Bytes {
            throw .invalid("file_bytes is \(declared), less than a version-1 header (\(StatsFormat.version1Bytes))")
        }
    }

    /// Parses a copy of a statistics file. `size` is the file's size on
    /// disk (the copy may hold fewer bytes than that, never more).
    public static func parse(_ bytes: UnsafeRawBufferPointer, fileSize size: Int? = nil) throws(StatsFileError) -> StatsSnapshot {
        try checkHeader(bytes, fileSize: size ?? bytes.count)
        if bytes.count < StatsFormat.version1Bytes { throw .truncated(size: bytes.count, needed: StatsFormat.version1Bytes) }
        let version = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: StatsFormat.versionOffset, as: UInt32.self))

        var f = aethalloc_stats_file()
        withUnsafeMutableBytes(of: &f) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<dst.count]))
        }
        var s = StatsSnapshot()
        s.version = version
        s.sequence = UInt64(littleEndian: f.sequence)
        if s.sequence & 1 != 0 { throw .busy }
        s.pid = Int64(littleEndian: f.pid)
        if s.pid <= 0 || s.pid > Int64(Int32.max) { throw .invalid("pid \(s.pid)") }
        s.variant = cString(f.variant)
        s.command = cString(f.command)
        s.startUnixMs = UInt64(littleEndian: f.start_unix_ms)
        s.updateUnixMs = UInt64(littleEndian: f.update_unix_ms)
        s.publishes = UInt32(littleEndian: f.publishes)
        var c = StatsCounters()
        c.allocs = UInt64(littleEndian: f.allocs)
        c.frees = UInt64(littleEndian: f.frees)
        c.cacheHits = UInt64(littleEndian: f.cache_hits)
        c.cacheMisses = UInt64(littleEndian: f.cache_misses)
        c.directAllocs = UInt64(littleEndian: f.direct_allocs)
        c.bytesInUse = UInt64(littleEndian: f.bytes_in_use)
        c.peakBytesInUse = UInt64(littleEndian: f.peak_bytes_in_use)
        c.bytesMapped = UInt64(littleEndian: f.bytes_mapped)
        c.bytesReturned = UInt64(littleEndian: f.bytes_returned)
        c.depotTransfers = UInt64(littleEndian: f.depot_transfers)
        c.threadsExited = UInt64(littleEndian: f.threads_exited)
        s.counters = c
        let classCount = Int(UInt32(littleEndian: f.class_count))
        if classCount > StatsFormat.maxClasses { throw .invalid("class_count \(classCount) > \(StatsFormat.maxClasses)") }
        withUnsafeBytes(of: f.class_size) { sizes in
            withUnsafeBytes(of: f.class_allocs) { counts in
                for i in 0..<classCount {
                    s.classes.append(SizeClassCount(
                        size: UInt64(littleEndian: sizes.load(fromByteOffset: i * 8, as: UInt64.self)),
                        allocs: UInt64(littleEndian: counts.load(fromByteOffset: i * 8, as: UInt64.self))))
                }
            }
        }
        return s
    }

    public static func parse(_ bytes: [UInt8], fileSize: Int? = nil) throws(StatsFileError) -> StatsSnapshot {
        let r: Result<StatsSnapshot, StatsFileError> = bytes.withUnsafeBytes { b in
            do throws(StatsFileError) { return .success(try parse(b, fileSize: fileSize)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    /// A NUL-padded C char array as a String (invalid UTF-8 is replaced).
    static func cString<T>(_ field: T) -> String {
        withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Reads one file: open, map MAP_SHARED/PROT_READ, copy under the
    /// sequence lock, parse. Never writes the file.
    public static func read(path: String) throws(StatsFileError) -> StatsSnapshot {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
        if fd < 0 {
            let e = errno
            if e == ELOOP { throw .foreign("a symbolic link") }
            throw .system("open it", e)
        }
        var st = stat()
        if fstat(fd, &st) != 0 {
            let e = errno
            close(fd)
            throw .system("stat it", e)
        }
        if (st.st_mode & S_IFMT) != S_IFREG {
            close(fd)
            throw .foreign("not a regular file")
        }
        let size = Int(st.st_size)
        if size == 0 {
            close(fd)
            throw .empty
        }
        // Map no more than the file holds: touching a page past its end
        // would raise SIGBUS. The library never shrinks its file (only a
        // foreign writer truncating it during the copy could).
        let mapBytes = min(size, max(StatsFormat.fileBytes, StatsFormat.version1Bytes))
        let map = mmap(nil, mapBytes, PROT_READ, MAP_SHARED, fd, 0)
        let mapErrno = errno
        close(fd)
        guard let map, map != MAP_FAILED else { throw .system("map it", mapErrno) }
        defer { munmap(map, mapBytes) }
        let mapped = UnsafeRawBufferPointer(start: map, count: mapBytes)

        // Magic, version and size never change after creation: check them
        // once, then copy the body under the sequence lock.
        try checkHeader(mapped, fileSize: size)
        let copyBytes = min(mapBytes, StatsFormat.version1Bytes)
        var buffer = [UInt8](repeating: 0, count: copyBytes)
        let sequence = UnsafeRawPointer(map + StatsFormat.sequenceOffset).assumingMemoryBound(to: Atomic<UInt64>.self)
        for attempt in 0..<maxAttempts {
            let before = sequence.pointee.load(ordering: .acquiring)
            if before & 1 == 0 {
                buffer.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: mapped[0..<copyBytes])) }
                atomicMemoryFence(ordering: .acquiring)
                let after = sequence.pointee.load(ordering: .relaxed)
                if before == after {
                    var snapshot = try parse(buffer, fileSize: size)
                    snapshot.sequence = before
                    return snapshot
                }
            }
            if attempt < 100 { sched_yield() } else { usleep(50) }
        }
        throw .busy
    }
}

/// A file that could not be read.
public struct StatsProblem: Equatable, Sendable {
    public var path: String
    public var error: StatsFileError

    public init(path: String, error: StatsFileError) {
        self.path = path
        self.error = error
    }

    /// "<path>: <message>".
    public var line: String { "\(path): \(error.message)" }
}

/// The statistics directory could not be listed.
public struct StatsDirectoryError: Error, Equatable, Sendable {
    public var directory: String
    public var code: Int32

    public var message: String { "cannot read the statistics directory \(directory): \(errnoText(code))" }
}

/// What one look at the statistics directory found.
public struct StatsScan: Equatable, Sendable {
    /// Live processes, by pid.
    public var snapshots: [StatsSnapshot] = []
    public var problems: [StatsProblem] = []
    /// Files of dead processes that were removed.
    public var removed: [String] = []
    /// Files of dead processes that could not be removed (skipped too).
    public var stale: [String] = []

    public init() {}
}

/// The statistics directory: finding files, telling live from stale.
public enum StatsDirectory {
    /// $AETHALLOC_STATS_DIR when set and not empty, else /dev/shm (where
    /// the library publishes by default).
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let d = environment["AETHALLOC_STATS_DIR"], !d.isEmpty { return d }
        return "/dev/shm"
    }

    public static func fileName(pid: Int32) -> String { "aethalloc-\(pid).stats" }

    /// The pid in a file name `aethalloc-<pid>.stats`; nil for any other name.
    public static func pid(fromFileName name: String) -> Int32? {
        let prefix = "aethalloc-", suffix = ".stats"
        guard name.hasPrefix(prefix), name.hasSuffix(suffix), name.count > prefix.count + suffix.count else { return nil }
        let digits = name.dropFirst(prefix.count).dropLast(suffix.count)
        guard digits.count <= 10, digits.first != "0", digits.allSatisfy({ $0.isASCII && $0.isNumber }),
            let n = Int32(digits), n > 0
        else { return nil }
        return n
    }

    /// Whether a process exists: kill(pid, 0) fails with ESRCH only for a
    /// dead one (EPERM means alive, owned by someone else).
    public static func isAlive(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno != ESRCH
    }

    /// The `aethalloc-<pid>.stats` files in `directory`, by pid.
    public static func list(_ directory: String) throws(StatsDirectoryError) -> [(pid: Int32, path: String)] {
        guard let d = opendir(directory) else { throw StatsDirectoryError(directory: directory, code: errno) }
        defer { closedir(d) }
        var found: [(pid: Int32, path: String)] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let pid = pid(fromFileName: name) { found.append((pid, directory + "/" + name)) }
        }
        return found.sorted { $0.pid < $1.pid }
    }

    /// Reads every live process's file, or only `pid`'s. Files of dead
    /// processes (kill(pid, 0) fails with ESRCH) are removed when
    /// `removeStale` and they are ours: the magic matches, or they are empty
    /// or all zeros (killed while creating it). Files that are not ours are
    /// never removed, and reported as problems like those of live processes.
    public static func scan(
        _ directory: String, pid only: Int32? = nil, removeStale: Bool = true,
        isAlive: (Int32) -> Bool = StatsDirectory.isAlive
    ) throws(StatsDirectoryError) -> StatsScan {
        let files: [(pid: Int32, path: String)]
        if let only {
            let path = directory + "/" + fileName(pid: only)
            var st = stat()
            if lstat(path, &st) != 0 {
                let e = errno
                if e != ENOENT { throw StatsDirectoryError(directory: directory, code: e) }
                // Tell a missing directory from a missing file.
                var dst = stat()
                if stat(directory, &dst) != 0 { throw StatsDirectoryError(directory: directory, code: errno) }
                if (dst.st_mode & S_IFMT) != S_IFDIR { throw StatsDirectoryError(directory: directory, code: ENOTDIR) }
                files = []
            } else {
                files = [(only, path)]
            }
        } else {
            files = try list(directory)
        }
        var scan = StatsScan()
        for (pid, path) in files {
            let alive = isAlive(pid)
            if !alive, isOurs(path) {
                if removeStale, unlink(path) == 0 || errno == ENOENT {
                    scan.removed.append(path)
                } else {
                    scan.stale.append(path)
                }
                continue
            }
            do throws(StatsFileError) {
                let snapshot = try readSettled(path)
                if !alive {
                    scan.stale.append(path)  // became ours meanwhile: next time
                    continue
                }
                // The header's pid must be the name's.
                if snapshot.pid != Int64(pid) { throw .invalid("it holds pid \(snapshot.pid)") }
                scan.snapshots.append(snapshot)
            } catch {
                if case .system(_, ENOENT) = error { continue }  // exited meanwhile
                scan.problems.append(StatsProblem(path: path, error: error))
            }
        }
        return scan
    }

    /// Reads a file, giving a file that is being created (empty) a few
    /// milliseconds to get its header.
    static func readSettled(_ path: String) throws(StatsFileError) -> StatsSnapshot {
        var waited = 0
        while true {
            do throws(StatsFileError) {
                return try StatsFile.read(path: path)
            } catch {
                guard error == .empty, waited < 20 else { throw error }
                usleep(1000)
                waited += 1
            }
        }
    }

    /// Whether a file of a dead process is one the library wrote: empty,
    /// all zeros so far, or starting with (a prefix of) the magic.
    static func isOurs(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
        if fd < 0 { return false }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
        if st.st_size == 0 { return true }
        var head = [UInt8](repeating: 0, count: StatsFormat.magic.count)
        let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return false }
        let got = head.prefix(n)
        return got.elementsEqual(StatsFormat.magic.prefix(n)) || got.allSatisfy { $0 == 0 }
    }
}

/// Allocation and free rates between two snapshots of one process.
public struct StatsRates: Codable, Equatable, Sendable {
    public var allocsPerSec: Double
    public var freesPerSec: Double

    public init(allocsPerSec: Double, freesPerSec: Double) {
        self.allocsPerSec = allocsPerSec
        self.freesPerSec = freesPerSec
    }

    enum CodingKeys: String, CodingKey {
        case allocsPerSec = "allocs_per_sec"
        case freesPerSec = "frees_per_sec"
    }

    /// The rates from `a` to `b`, taken `seconds` apart; nil when they are
    /// not two snapshots of the same process run (other pid or start time,
    /// a counter went back) or no time passed.
    public static func between(_ a: StatsSnapshot, _ b: StatsSnapshot, seconds: Double) -> StatsRates? {
        guard seconds > 0, seconds.isFinite, a.pid == b.pid, a.startUnixMs == b.startUnixMs,
            b.counters.allocs >= a.counters.allocs, b.counters.frees >= a.counters.frees
        else { return nil }
        return StatsRates(
            allocsPerSec: Double(b.counters.allocs - a.counters.allocs) / seconds,
            freesPerSec: Double(b.counters.frees - a.counters.frees) / seconds)
    }
}
