// White-box tests of the statistics file (Publish.swift), which the hosted
// build writes because it counts (`Variant.statsEnabled`): the file is
// created in AETHALLOC_STATS_DIR, read back through the C layout
// `aethalloc_stats_file`, its counters lie between two snapshots of the
// totals, its sequence stays even between writes, stop() removes it, and a
// fork child gets a file of its own. The test moves the process's publisher
// into a temporary directory and leaves it stopped.
import CAethAlloc
import Foundation
import Synchronization
import Testing
@testable import AethAllocHosted

/// The file at `path` as the C struct, read with the header's seqlock rule:
/// a copy is kept only if `sequence` was even and unchanged around it.
func readStatsFile(_ path: String) throws -> aethalloc_stats_file {
    for _ in 0..<1000 {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try #require(data.count == Int(AETHALLOC_STATS_FILE_BYTES))
        let copy = data.withUnsafeBytes { $0.loadUnaligned(as: aethalloc_stats_file.self) }
        let again = try Data(contentsOf: URL(fileURLWithPath: path))
        let seqAgain = again.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self) }
        if copy.sequence % 2 == 0 && copy.sequence == seqAgain { return copy }
        usleep(100)
    }
    throw CancellationError()
}

@Suite(.exclusiveCoreState) struct PublisherTests {
    init() { Runtime.ensureInitialized() }

    @Test func theStatisticsFileFollowsTheCountersAndGoesAway() throws {
        forkAndPublisherLock.lock()
        defer { forkAndPublisherLock.unlock() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aethalloc-publisher-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let before = MetricsSnapshot.totals()
        Publisher.stop()
        #expect(Publisher.state.pointee.map == nil)
        setenv("AETHALLOC_STATS_DIR", dir, 1)
        Publisher.start()
        unsetenv("AETHALLOC_STATS_DIR")
        defer { Publisher.stop() }
        let path = "\(dir)/aethalloc-\(getpid()).stats"
        try #require(Publisher.state.pointee.map != nil, "no file in AETHALLOC_STATS_DIR")
        #expect(String(cString: Publisher.path) == path)
        #expect(FileManager.default.fileExists(atPath: path))

        // Counted work on this thread, added to the totals: 100 blocks freed
        // and 100 still live when the file is written.
        var ps: [UnsafeMutableRawPointer] = []
        for i in 0..<100 { ps.append(Allocator.allocate(UInt(16 + i * 8))!) }
        for p in ps { Allocator.deallocate(p) }
        ps = (0..<100).map { Allocator.allocate(UInt(16 + $0 * 8))! }
        if OS.tlsState == ThreadState.live { Stats.flush(OS.tlsCache) }
        let first = try readStatsFile(path)
        Publisher.publish()
        let f = try readStatsFile(path)
        let after = MetricsSnapshot.totals()
        for p in ps { Allocator.deallocate(p) }

        #expect(withUnsafeBytes(of: f.magic) { Array($0) } == Array("AETHSTAT".utf8))
        #expect(f.version == UInt32(AETHALLOC_STATS_VERSION))
        #expect(f.file_bytes == UInt32(AETHALLOC_STATS_FILE_BYTES))
        #expect(f.pid == Int64(getpid()))
        #expect(withUnsafeBytes(of: f.variant) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } == "hosted")
        #expect(f.sequence % 2 == 0 && f.sequence >= first.sequence + 2, "sequence \(first.sequence) -> \(f.sequence)")
        #expect(f.publishes > first.publishes)
        #expect(f.class_count == UInt32(SizeClass.count))
        let sizes = withUnsafeBytes(of: f.class_size) { Array($0.bindMemory(to: UInt64.self)) }
        for c in 0..<SizeClass.count { #expect(sizes[c] == UInt64(Globals.classInfo(c).pointee.blockSize)) }
        // Every counter only grows: the file's lies between the two snapshots.
        let pairs: [(String, UInt64, UInt64, UInt64)] = [
            ("allocs", before.allocs, f.allocs, after.allocs),
            ("frees", before.frees, f.frees, after.frees),
            ("cache_hits", before.cacheHits, f.cache_hits, after.cacheHits),
            ("cache_misses", before.cacheMisses, f.cache_misses, after.cacheMisses),
            ("direct_allocs", before.directAllocs, f.direct_allocs, after.directAllocs),
            ("bytes_mapped", before.bytesMapped, f.bytes_mapped, after.bytesMapped),
            ("bytes_returned", before.bytesReturned, f.bytes_returned, after.bytesReturned),
            ("depot_transfers", before.depotTransfers, f.depot_transfers, after.depotTransfers),
            ("threads_exited", before.threadsExited, f.threads_exited, after.threadsExited),
            ("peak_bytes_in_use", before.peakBytesInUse, f.peak_bytes_in_use, after.peakBytesInUse),
        ]
        for (name, low, value, high) in pairs {
            #expect(low <= value && value <= high, "\(name): \(value) not within \(low)...\(high)")
        }
        #expect(f.allocs >= before.allocs + 200, "the 200 allocations above are missing")
        #expect(f.frees >= before.frees + 100, "the 100 frees above are missing")
        #expect(f.bytes_mapped > 0)

        // A fork child publishes in a file of its own; the parent's stays.
        var childPid: Int32 = 0
        let end = forkChild {
            // (The new mapping may reuse the parent's address: compare pids.)
            let map = Publisher.state.pointee.map
            if map == nil { return 20 }
            let file = map!.assumingMemoryBound(to: aethalloc_stats_file.self)
            if file.pointee.pid != Int64(getpid()) { return 21 }
            if file.pointee.sequence % 2 != 0 || file.pointee.sequence == 0 { return 22 }
            return 0
        }
        #expect(end == .exited(0))
        // The child's pid: the one file besides ours.
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(names.contains("aethalloc-\(getpid()).stats"), "the child removed the parent's file")
        #expect(try readStatsFile(path).pid == Int64(getpid()), "the child wrote into the parent's file")
        let others = names.filter { $0 != "aethalloc-\(getpid()).stats" }
        #expect(others.count == 1, "files: \(names)")
        if let other = others.first {
            childPid = Int32(other.dropFirst("aethalloc-".count).dropLast(".stats".count)) ?? 0
            #expect(childPid > 0 && childPid != getpid())
            let child = try readStatsFile("\(dir)/\(other)")
            #expect(child.pid == Int64(childPid))
        }

        Publisher.stop()
        #expect(Publisher.state.pointee.map == nil)
        #expect(!FileManager.default.fileExists(atPath: path), "stop() left the file")
    }
}
