// Publish.swift: the metrics variant's per-process statistics file
// (layout and reading rules: Sources/CAethAllocStatsFormat/include/
// aethalloc_stats_file.h).
//
// Off unless the variant has statistics and either AETHALLOC_STATS_DIR is
// set or /dev/shm is writable. The file is created by the library
// constructor, rewritten after every flush of a thread's counters into the
// process totals (at most every `Tuning.publishIntervalMs` from the large
// path), recreated for the child after fork, and removed by the library
// destructor. Nothing here allocates, and no thread or socket is added to
// the process.
//
// Writers serialise on a try-lock: a thread that finds another one
// publishing skips (the other one writes the newer totals anyway). Readers
// are protected from torn copies by the sequence lock described in the header.
import CAethAlloc
import Synchronization

struct PublisherState {
    var sequence: UInt64
    var map: RawPointer?
    var startUnixMs: UInt64
    var publishes: UInt32
    var explicitDirectory: Bool
    /// The directory and the file's path, NUL-terminated, after the fields.
    @inline(__always) static var directoryOffset: Int { Layout.after(0, MemoryLayout<PublisherState>.size) }
    static let directoryBytes = 192
    @inline(__always) static var pathOffset: Int { directoryOffset + directoryBytes }
    static let pathBytes = 256
    @inline(__always) static var bytes: Int { pathOffset + pathBytes }
}

enum Publisher {
    @inline(__always) static var state: UnsafeMutablePointer<PublisherState> { Globals.publisher }
    static var lockWord: UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.publisherLock)
    }
    static var directory: UnsafeMutablePointer<CChar> {
        (RawPointer(Globals.publisher) + PublisherState.directoryOffset).assumingMemoryBound(to: CChar.self)
    }
    static var path: UnsafeMutablePointer<CChar> {
        (RawPointer(Globals.publisher) + PublisherState.pathOffset).assumingMemoryBound(to: CChar.self)
    }

    /// From the library constructor.
    static func start() {
        if !Variant.statsEnabled { return }
        let s = state
        s.pointee.startUnixMs = OS.unixMs()
        if let dir = OS.environment("AETHALLOC_STATS_DIR"), dir.pointee != 0 {
            s.pointee.explicitDirectory = true
            copy(dir, to: directory, capacity: PublisherState.directoryBytes)
        } else {
            let shm: StaticString = "/dev/shm"
            let p = UnsafeRawPointer(shm.utf8Start).assumingMemoryBound(to: CChar.self)
            if !OS.dirIsWritable(p) { return }
            copy(p, to: directory, capacity: PublisherState.directoryBytes)
        }
        create()
    }

    /// From the library destructor: a last publish, then the file goes.
    static func stop() {
        if !Variant.statsEnabled || !Globals.publishing.pointee.load(ordering: .acquiring) { return }
        Lock.acquire(lockWord)
        let map = state.pointee.map
        state.pointee.map = nil
        Globals.publishing.pointee.store(false, ordering: .relaxed)
        Lock.release(lockWord)
        OS.closeStatsFile(map, path: path)
    }

    /// In the child after fork: the parent's file is the parent's.
    static func restartInChild() {
        if !Variant.statsEnabled { return }
        guard let map = state.pointee.map else { return }
        state.pointee.map = nil
        Globals.publishing.pointee.store(false, ordering: .relaxed)
        OS.closeStatsFile(map, path: nil)
        state.pointee.startUnixMs = OS.unixMs()
        create()
    }

    /// Writes the current totals, unless another thread is doing so.
    static func publish() {
        if !Variant.statsEnabled || !Globals.publishing.pointee.load(ordering: .relaxed) { return }
        if !lockWord.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return }
        if let map = state.pointee.map { write(MetricsSnapshot.totals(), into: map) }
        Lock.release(lockWord)
    }

    /// Publishes if nothing was published for `publishIntervalMs` (large path).
    static func publishIfStale() {
        if !Variant.statsEnabled || !Globals.publishing.pointee.load(ordering: .relaxed) { return }
        if OS.nowMs() &- Globals.lastPublishMs.pointee.load(ordering: .relaxed) >= Tuning.publishIntervalMs { publish() }
    }

    // ---- internals -----------------------------------------------------------

    private static func create() {
        let s = state
        guard let map = OS.createStatsFile(directory: directory, path: path, capacity: PublisherState.pathBytes) else {
            if s.pointee.explicitDirectory {
                var line = LineBuffer()
                line.append("aethalloc: cannot publish statistics in AETHALLOC_STATS_DIR (")
                line.append(cString: directory)
                line.append("): not a writable directory\n")
                line.write()
            }
            return
        }
        let file = map.assumingMemoryBound(to: aethalloc_stats_file.self)
        OS.zero(map, bytes: Int(AETHALLOC_STATS_FILE_BYTES))
        let magic: StaticString = "AETHSTAT"
        OS.copy(map, magic.utf8Start, bytes: 8)
        file.pointee.version = UInt32(AETHALLOC_STATS_VERSION)
        file.pointee.file_bytes = UInt32(AETHALLOC_STATS_FILE_BYTES)
        file.pointee.pid = OS.pid
        withUnsafeMutableBytes(of: &file.pointee.variant) { v in
            OS.copy(v.baseAddress!, Variant.name.utf8Start, bytes: min(15, Variant.name.utf8CodeUnitCount))
        }
        withUnsafeMutableBytes(of: &file.pointee.command) { c in
            OS.readCommand(into: c.baseAddress!.assumingMemoryBound(to: CChar.self), capacity: 64)
        }
        file.pointee.start_unix_ms = s.pointee.startUnixMs
        file.pointee.class_count = UInt32(SizeClass.count)
        withUnsafeMutableBytes(of: &file.pointee.class_size) { sizes in
            for c in 0..<SizeClass.count {
                sizes.storeBytes(of: UInt64(Globals.classInfo(c).pointee.blockSize), toByteOffset: c * 8, as: UInt64.self)
            }
        }
        s.pointee.sequence = 0
        s.pointee.map = map
        Globals.publishing.pointee.store(true, ordering: .releasing)
        publish()
    }

    private static func write(_ m: MetricsSnapshot, into map: RawPointer) {
        let s = state
        let file = map.assumingMemoryBound(to: aethalloc_stats_file.self)
        let seqWord = (map + 16).assumingMemoryBound(to: Atomic<UInt64>.self)
        let seq = s.pointee.sequence
        seqWord.pointee.store(seq &+ 1, ordering: .relaxed)  // odd: being written
        atomicMemoryFence(ordering: .releasing)
        file.pointee.update_unix_ms = OS.unixMs()
        file.pointee.allocs = m.allocs
        file.pointee.frees = m.frees
        file.pointee.cache_hits = m.cacheHits
        file.pointee.cache_misses = m.cacheMisses
        file.pointee.direct_allocs = m.directAllocs
        file.pointee.bytes_in_use = m.bytesInUse
        file.pointee.peak_bytes_in_use = m.peakBytesInUse
        file.pointee.bytes_mapped = m.bytesMapped
        file.pointee.bytes_returned = m.bytesReturned
        file.pointee.depot_transfers = m.depotTransfers
        file.pointee.threads_exited = m.threadsExited
        s.pointee.publishes &+= 1
        file.pointee.publishes = s.pointee.publishes
        withUnsafeMutableBytes(of: &file.pointee.class_allocs) { counts in
            for c in 0..<SizeClass.count {
                counts.storeBytes(of: Stats.classAllocs(c).pointee.load(ordering: .relaxed), toByteOffset: c * 8, as: UInt64.self)
            }
        }
        seqWord.pointee.store(seq &+ 2, ordering: .releasing)  // even: stable
        s.pointee.sequence = seq &+ 2
        Globals.lastPublishMs.pointee.store(OS.nowMs(), ordering: .relaxed)
    }

    private static func copy(_ src: UnsafePointer<CChar>, to dst: UnsafeMutablePointer<CChar>, capacity: Int) {
        var i = 0
        while i < capacity - 1 && src[i] != 0 {
            dst[i] = src[i]
            i += 1
        }
        dst[i] = 0
    }
}
