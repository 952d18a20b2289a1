import CAethAllocStatsFormat
import Foundation
import Synchronization
import Testing

@testable import AethAllocToolCore

#if canImport(Glibc)
import Glibc
#endif

/// A synthetic statistics file, laid out by the C struct.
struct FakeStats {
    var pid: Int64 = Int64(getpid())
    var command = "fake"
    var variant = "metrics"
    var version = UInt32(AETHALLOC_STATS_VERSION)
    var sequence: UInt64 = 2
    var counters = StatsCounters()
    var classes: [(UInt64, UInt64)] = [(16, 5), (32, 7)]
    var startUnixMs: UInt64 = 1_700_000_000_000

    var bytes: [UInt8] {
        var f = aethalloc_stats_file()
        withUnsafeMutableBytes(of: &f.magic) { $0.copyBytes(from: Array("AETHSTAT".utf8)) }
        f.version = version
        f.file_bytes = UInt32(AETHALLOC_STATS_FILE_BYTES)
        f.sequence = sequence
        f.pid = pid
        withUnsafeMutableBytes(of: &f.variant) { $0.copyBytes(from: Array(variant.utf8.prefix(15))) }
        withUnsafeMutableBytes(of: &f.command) { $0.copyBytes(from: Array(command.utf8.prefix(63))) }
        f.start_unix_ms = startUnixMs
        f.update_unix_ms = startUnixMs + 10
        f.allocs = counters.allocs
        f.frees = counters.frees
        f.cache_hits = counters.cacheHits
        f.cache_misses = counters.cacheMisses
        f.direct_allocs = counters.directAllocs
        f.bytes_in_use = counters.bytesInUse
        f.peak_bytes_in_use = counters.peakBytesInUse
        f.bytes_mapped = counters.bytesMapped
        f.bytes_returned = counters.bytesReturned
        f.depot_transfers = counters.depotTransfers
        f.threads_exited = counters.threadsExited
        f.class_count = UInt32(classes.count)
        f.publishes = 3
        withUnsafeMutableBytes(of: &f.class_size) { b in for (i, c) in classes.enumerated() { b.storeBytes(of: c.0, toByteOffset: i * 8, as: UInt64.self) } }
        withUnsafeMutableBytes(of: &f.class_allocs) { b in for (i, c) in classes.enumerated() { b.storeBytes(of: c.1, toByteOffset: i * 8, as: UInt64.self) } }
        var out = withUnsafeBytes(of: f) { Array($0) }
        out += [UInt8](repeating: 0, count: Int(AETHALLOC_STATS_FILE_BYTES) - out.count)
        return out
    }

    func write(to dir: String, pid name: Int32? = nil) throws -> String {
        let path = dir + "/" + StatsDirectory.fileName(pid: name ?? Int32(pid))
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}

func counters(_ allocs: UInt64, _ frees: UInt64) -> StatsCounters {
    var c = StatsCounters()
    c.allocs = allocs
    c.frees = frees
    c.cacheHits = allocs * 9 / 10
    c.cacheMisses = allocs - allocs * 9 / 10
    c.bytesInUse = 4096
    c.peakBytesInUse = 1 << 20
    c.bytesMapped = 3 << 20
    c.bytesReturned = 1 << 20
    return c
}

/// A pid that is certainly not running: a child that has been reaped.
func deadPid() throws -> Int32 {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
    defer { for a in argv { free(a) } }
    guard posix_spawn(&pid, "/bin/true", nil, nil, argv, environ) == 0 else { throw ToolError("cannot spawn /bin/true") }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return pid
}

@Suite struct StatsFileTests {
    @Test func layoutComesFromTheHeader() {
        #expect(StatsFormat.magic == Array("AETHSTAT".utf8))
        #expect(StatsFormat.version == 1)
        #expect(StatsFormat.version1Bytes == 1248)
        #expect(StatsFormat.sequenceOffset == 16)
        #expect(StatsFormat.fileBytes == 4096)
    }

    @Test func parsesAGoodFile() throws {
        var f = FakeStats()
        f.pid = 4242
        f.command = "py\"thon\n"
        f.counters = counters(1000, 900)
        let s = try StatsFile.parse(f.bytes)
        #expect(s.pid == 4242)
        #expect(s.command == "py\"thon\n")
        #expect(s.variant == "metrics")
        #expect(s.counters == f.counters)
        #expect(s.classes == [SizeClassCount(size: 16, allocs: 5), SizeClassCount(size: 32, allocs: 7)])
        #expect(s.startUnixMs == 1_700_000_000_000)
        #expect(s.publishes == 3)
        #expect(s.counters.cacheHitRatio == 0.9)
        // Only the version-1 part is needed.
        #expect(try StatsFile.parse(Array(f.bytes.prefix(1248))).counters.allocs == 1000)
    }

    @Test func refusesTruncatedForeignAndNewerFiles() {
        let good = FakeStats().bytes
        func error(_ b: [UInt8]) -> StatsFileError? {
            do {
                _ = try StatsFile.parse(b)
                return nil
            } catch { return error }
        }
        #expect(error([]) == .empty)
        #expect(error([UInt8](repeating: 0, count: 4096)) == .empty)
        #expect(error(Array(good.prefix(5))) == .truncated(size: 5, needed: 1248))
        #expect(error(Array(good.prefix(12))) == .truncated(size: 12, needed: 1248))
        #expect(error(Array(good.prefix(1247))) == .truncated(size: 1247, needed: 1248))
        #expect(error(Array("\u{7F}ELF and more bytes".utf8)) == .foreign("bad magic"))
        #expect(error(Array("AETX".utf8)) == .foreign("bad magic"))
        var newer = FakeStats()
        newer.version = 2
        #expect(error(newer.bytes) == .newerVersion(2))
        // Newer files are refused whatever their size.
        #expect(error(Array(newer.bytes.prefix(16))) == .newerVersion(2))
        #expect(StatsFileError.newerVersion(2).message == "written by a newer AethAlloc (version 2); this aethalloc-cli reads up to 1")
        var zero = FakeStats()
        zero.version = 0
        #expect(error(zero.bytes) == .invalid("version 0"))
        var odd = FakeStats()
        odd.sequence = 7
        #expect(error(odd.bytes) == .busy)
        var badPid = FakeStats()
        badPid.pid = -1
        #expect(error(badPid.bytes) == .invalid("pid -1"))
        var classes = FakeStats().bytes
        classes.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(65), toByteOffset: MemoryLayout<aethalloc_stats_file>.offset(of: \.class_count)!, as: UInt32.self) }
        #expect(error(classes) == .invalid("class_count 65 > 64"))
        var small = FakeStats().bytes
        small.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(100), toByteOffset: 12, as: UInt32.self) }
        #expect(error(small) == .invalid("file_bytes is 100, less than a version-1 header (1248)"))
        #expect(StatsFileError.system("open it", EACCES).message == "cannot open it: permission denied")
        #expect(StatsFileError.truncated(size: 100, needed: 1248).message == "truncated statistics file: 100 bytes, a version-1 file has at least 1248")
    }

    @Test func fileNames() {
        #expect(StatsDirectory.pid(fromFileName: "aethalloc-123.stats") == 123)
        for bad in ["aethalloc-.stats", "aethalloc-0.stats", "aethalloc-012.stats", "aethalloc-12a.stats", "aethalloc-99999999999.stats",
                    "aethalloc-12.stats.tmp", "xaethalloc-12.stats", "aethalloc--1.stats", "aethalloc-+1.stats", "aethalloc-١٢.stats"] {
            #expect(StatsDirectory.pid(fromFileName: bad) == nil, "\(bad)")
        }
        #expect(StatsDirectory.defaultPath(environment: [:]) == "/dev/shm")
        #expect(StatsDirectory.defaultPath(environment: ["AETHALLOC_STATS_DIR": ""]) == "/dev/shm")
        #expect(StatsDirectory.defaultPath(environment: ["AETHALLOC_STATS_DIR": "/tmp/x"]) == "/tmp/x")
    }

    @Test func readsFromDisk() throws {
        let dir = try tempDir("statsfile")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var f = FakeStats()
        f.counters = counters(10, 4)
        let path = try f.write(to: dir)
        #expect(try StatsFile.read(path: path).counters.frees == 4)
        // A FIFO is foreign and must not block the reader.
        let fifo = dir + "/aethalloc-1.stats"
        #expect(mkfifo(fifo, 0o644) == 0)
        #expect(throws: StatsFileError.foreign("not a regular file")) { try StatsFile.read(path: fifo) }
        // So is a symbolic link.
        let link = dir + "/aethalloc-2.stats"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: path)
        #expect(throws: StatsFileError.foreign("a symbolic link")) { try StatsFile.read(path: link) }
        #expect(throws: StatsFileError.system("open it", ENOENT)) { try StatsFile.read(path: dir + "/none") }
        // A writer stopped mid-update: busy after the retries, quickly.
        var odd = FakeStats()
        odd.sequence = 9
        let oddPath = try odd.write(to: dir, pid: 3)
        let t0 = Date()
        #expect(throws: StatsFileError.busy) { try StatsFile.read(path: oddPath) }
        #expect(Date().timeIntervalSince(t0) < 2)
    }

    @Test func scanSortsOutLiveStaleAndBadFiles() throws {
        let dir = try tempDir("scan")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let me = getpid()
        let dead = try deadPid()
        var good = FakeStats()
        good.counters = counters(100, 50)
        _ = try good.write(to: dir)                                              // live, good
        var newer = FakeStats()
        newer.version = 3
        newer.pid = Int64(getppid())
        let newerPath = try newer.write(to: dir)                                // live, newer version
        try Data("hello".utf8).write(to: URL(fileURLWithPath: dir + "/aethalloc-1.stats"))  // init: live, foreign
        var stale = FakeStats()
        stale.pid = Int64(dead)
        let stalePath = try stale.write(to: dir)                                // dead, ours: removed
        let emptyDead = dir + "/aethalloc-\(dead + 100_000).stats"
        #expect(FileManager.default.createFile(atPath: emptyDead, contents: nil))  // dead, empty: removed
        let foreignDead = dir + "/aethalloc-\(dead + 200_000).stats"
        try Data("#!/bin/sh\n".utf8).write(to: URL(fileURLWithPath: foreignDead))  // dead, foreign: kept, reported
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/other.stats"))   // not ours by name: ignored
        let alive: (Int32) -> Bool = { $0 == me || $0 == getppid() || $0 == 1 }

        let scan = try StatsDirectory.scan(dir, isAlive: alive)
        #expect(scan.snapshots.map(\.pid) == [Int64(me)])
        #expect(scan.snapshots.first?.counters.allocs == 100)
        #expect(Set(scan.removed) == [stalePath, emptyDead])
        #expect(!FileManager.default.fileExists(atPath: stalePath))
        #expect(FileManager.default.fileExists(atPath: foreignDead))
        #expect(FileManager.default.fileExists(atPath: dir + "/other.stats"))
        let problems = Dictionary(uniqueKeysWithValues: scan.problems.map { ($0.path, $0.error) })
        #expect(problems.count == 3)
        #expect(problems[newerPath] == .newerVersion(3))
        #expect(problems[dir + "/aethalloc-1.stats"] == .foreign("bad magic"))
        #expect(problems[foreignDead] == .foreign("bad magic"))

        // A pid of its own: only that file is looked at.
        let one = try StatsDirectory.scan(dir, pid: me, isAlive: alive)
        #expect(one.snapshots.count == 1 && one.problems.isEmpty)
        // The real liveness test: this process is alive, a reaped child is not.
        #expect(StatsDirectory.isAlive(me))
        #expect(!StatsDirectory.isAlive(dead))
        #expect(throws: StatsDirectoryError(directory: dir + "/nope", code: ENOENT)) { try StatsDirectory.scan(dir + "/nope") }
        #expect(StatsDirectoryError(directory: "/x", code: ENOENT).message == "cannot read the statistics directory /x: no such file or directory")
    }

    @Test func rates() {
        var a = StatsSnapshot()
        a.pid = 7
        a.startUnixMs = 1
        a.counters = counters(1000, 500)
        var b = a
        b.counters = counters(3000, 1500)
        #expect(StatsRates.between(a, b, seconds: 2) == StatsRates(allocsPerSec: 1000, freesPerSec: 500))
        #expect(StatsRates.between(a, b, seconds: 0) == nil)
        #expect(StatsRates.between(b, a, seconds: 1) == nil)  // counters went back
        var other = b
        other.startUnixMs = 2  // same pid, another run
        #expect(StatsRates.between(a, other, seconds: 1) == nil)
        other = b
        other.pid = 8
        #expect(StatsRates.between(a, other, seconds: 1) == nil)
        var scan = StatsScan()
        scan.snapshots = [b]
        let procs = StatCommand.processes(scan, previous: [a], seconds: 0.5)
        #expect(procs.first?.rates == StatsRates(allocsPerSec: 4000, freesPerSec: 2000))
        #expect(StatCommand.processes(scan, previous: [], seconds: 0.5).first?.rates == nil)
    }

    @Test func humanUnits() {
        #expect(Format.bytes(0) == "0 B")
        #expect(Format.bytes(1023) == "1023 B")
        #expect(Format.bytes(1536) == "1.50 KiB")
        #expect(Format.bytes(5 << 20) == "5.00 MiB")
        #expect(Format.bytes(157 << 20) == "157 MiB")
        #expect(Format.bytes(3 << 30) == "3.00 GiB")
        #expect(Format.rate(nil) == "–")
        #expect(Format.rate(0) == "0")
        #expect(Format.rate(950.4) == "950")
        #expect(Format.rate(12_345) == "12.3k")
        #expect(Format.rate(33_400_000) == "33.4M")
        #expect(Format.percent(0.9959) == "99.6%")
        #expect(Format.percent(nil) == "–")
        #expect(Format.printable("a\u{1B}[2Jb\n") == "a?[2Jb?")
    }

    /// A writer in this process rewrites a mapped file as fast as it can,
    /// following the library's protocol, with every counter equal to one
    /// value; every snapshot read meanwhile must show equal counters.
    @Test func seqlockReaderNeverSeesATornSnapshot() throws {
        let dir = try tempDir("seqlock")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try FakeStats().write(to: dir)
        let fd = open(path, O_RDWR)
        #expect(fd >= 0)
        guard let map = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            Issue.record("mmap failed")
            return
        }
        close(fd)
        defer { munmap(map, 4096) }
        let counterOffsets = (0..<11).map { 128 + 8 * $0 }
        final class Shared: Sendable {
            let stop = Atomic<Bool>(false)
            let writes = Atomic<Int>(0)
        }
        let shared = Shared()
        let base = UInt(bitPattern: map)
        let writer = Thread {
            let map = UnsafeMutableRawPointer(bitPattern: base)!
            let seq = (map + 16).assumingMemoryBound(to: Atomic<UInt64>.self)
            var s: UInt64 = 2
            var k: UInt64 = 0
            while !shared.stop.load(ordering: .relaxed) {
                k += 1
                seq.pointee.store(s + 1, ordering: .relaxed)
                atomicMemoryFence(ordering: .releasing)
                for o in counterOffsets { (map + o).storeBytes(of: k, as: UInt64.self) }
                seq.pointee.store(s + 2, ordering: .releasing)
                s += 2
                shared.writes.add(1, ordering: .relaxed)
                // A few microseconds between writes, as between the library's
                // flushes: back to back, no copy could ever finish.
                let until = DispatchTime.now().uptimeNanoseconds + 3_000
                while DispatchTime.now().uptimeNanoseconds < until {}
            }
        }
        writer.start()
        defer { shared.stop.store(true, ordering: .relaxed) }
        var reads = 0
        var torn = 0
        var busy = 0
        var last: UInt64 = 0
        let t0 = Date()
        while (reads < 5_000 || shared.writes.load(ordering: .relaxed) < 1000) && Date().timeIntervalSince(t0) < 10 {
            do throws(StatsFileError) {
                let c = try StatsFile.read(path: path).counters
                let all = [c.allocs, c.frees, c.cacheHits, c.cacheMisses, c.directAllocs, c.bytesInUse, c.peakBytesInUse,
                           c.bytesMapped, c.bytesReturned, c.depotTransfers, c.threadsExited]
                if Set(all).count != 1 || c.allocs < last { torn += 1 }
                last = c.allocs
                reads += 1
            } catch {
                if error != .busy { Issue.record("\(error)") }
                busy += 1
            }
        }
        shared.stop.store(true, ordering: .relaxed)
        #expect(torn == 0, "\(torn) torn snapshots in \(reads) reads")
        #expect(reads >= 1000, "\(reads) reads, \(busy) busy, \(shared.writes.load(ordering: .relaxed)) writes")
        #expect(last > 0)
    }
}
