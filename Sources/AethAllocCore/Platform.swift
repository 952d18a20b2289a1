// Platform.swift: the OS contract the core is written against.
//
// Every call the core makes into libc or the kernel is one thin function
// here, named for what the core needs, and this file is the only Swift file
// that calls the C shim's `aeth_*` functions (Tests/AethAllocTests checks
// that). What each call can do wrong is part of its contract: the functions
// that can fail return whether they did, and the callers decide (documented
// at each call) what a failure means. None of them may be ignored silently
// where a failure changes what memory holds: a purge that did not happen
// leaves its slices dirty, an unmap that did not happen keeps its segment.
//
// Fault injection: the hosted white-box build (`Variant.injectsFaults`) can
// make the Nth call of each kind fail on the calling thread (`FaultPlan`).
// In the Embedded variants the check is a compile-time `false` and the
// wrappers are the plain calls. The black-box tests inject faults into the
// real libraries by interposing mmap & co. in the test program
// (Tests/blackbox/faults.h).
import CAethAlloc

typealias RawPointer = UnsafeMutableRawPointer

/// The OS calls that the fault plan can make fail.
enum FaultKind: Int {
    case mmap = 0, munmap, madvise, mprotect, mremap, threadKey, thread
    static let count = 7
}

enum OS {
    // ---- the machine (aeth_platform.h, "the architecture") ---------------------

    /// The OS page size: getauxval(AT_PAGESZ), read once (4 KiB on x86-64;
    /// 4, 16 or 64 KiB on aarch64). Slow paths only.
    static var pageBytes: Int { aeth_page_bytes() }
    /// User-space addresses are below 2^userAddressBits (47 on x86-64, 48
    /// on aarch64); the segment map covers exactly that range.
    @inline(__always) static var userAddressBits: Int { Int(AETH_USER_ADDRESS_BITS) }
    /// log2 of the segment size; defined in the shim, which sizes the
    /// segment map with it (Tuning.segmentShift reads it here).
    @inline(__always) static var segmentShift: Int { Int(AETH_SEGMENT_SHIFT) }

    // ---- virtual memory ------------------------------------------------------

    /// Maps `bytes` of read-write memory aligned to `alignment` (a power of
    /// two, a multiple of the page size). Over-maps and trims the ends; a trim
    /// that fails leaves that end mapped and unused (a leak of address space,
    /// never of ownership). Nil when the OS refuses.
    static func mapAligned(bytes: Int, alignment: Int) -> RawPointer? {
        if alignment <= pageBytes { return map(bytes: bytes) }
        let (total, overflow) = bytes.addingReportingOverflow(alignment - pageBytes)
        if overflow { return nil }
        guard let raw = map(bytes: total) else { return nil }
        let start = UInt(bitPattern: raw)
        let aligned = (start + UInt(alignment - 1)) & ~UInt(alignment - 1)
        let head = Int(aligned - start)
        let tail = total - head - bytes
        if head > 0 { _ = unmap(raw, bytes: head) }
        if tail > 0 { _ = unmap(RawPointer(bitPattern: aligned + UInt(bytes))!, bytes: tail) }
        return RawPointer(bitPattern: aligned)
    }

    /// mmap(2) of anonymous read-write memory; nil when the OS refuses.
    static func map(bytes: Int) -> RawPointer? {
        if FaultPlan.fails(.mmap) { return nil }
        guard let p = aeth_mmap(bytes) else { return nil }
        aeth_count_mapped(bytes)
        return p
    }

    /// munmap(2). False when the OS refused (ENOMEM: splitting a mapping
    /// would pass vm.max_map_count); the range is then still mapped.
    @discardableResult
    static func unmap(_ p: RawPointer, bytes: Int) -> Bool {
        if FaultPlan.fails(.munmap) { return false }
        if aeth_munmap(p, bytes) != 0 { return false }
        aeth_count_unmapped(bytes)
        return true
    }

    /// madvise(MADV_DONTNEED): returns the physical pages of a range to the
    /// OS; it reads as zero after. False when the OS refused (EINVAL on
    /// locked pages, under mlockall): the range then keeps its contents.
    static func purge(_ p: RawPointer, bytes: Int) -> Bool {
        if FaultPlan.fails(.madvise) { return false }
        if aeth_purge(p, bytes) != 0 { return false }
        aeth_count_purged(bytes)
        return true
    }

    /// mprotect(PROT_NONE) / mprotect(PROT_READ | PROT_WRITE). False when
    /// the OS refused (ENOMEM at vm.max_map_count: the split needs a VMA).
    static func protectNone(_ p: RawPointer, bytes: Int) -> Bool {
        if FaultPlan.fails(.mprotect) { return false }
        return aeth_protect_none(p, bytes) == 0
    }
    static func protectReadWrite(_ p: RawPointer, bytes: Int) -> Bool {
        if FaultPlan.fails(.mprotect) { return false }
        return aeth_protect_read_write(p, bytes) == 0
    }

    /// Resizes a mapping without moving it. False if the neighbours are
    /// taken or the OS refused; the mapping is then unchanged.
    static func remapInPlace(_ p: RawPointer, from old: Int, to new: Int) -> Bool {
        if FaultPlan.fails(.mremap) { return false }
        if aeth_mremap_inplace(p, old, new) == nil { return false }
        if new > old { aeth_count_mapped(new - old) } else { aeth_count_unmapped(old - new) }
        return true
    }

    /// Moves a mapping's pages to `target` (a range we own) without copying.
    /// False when the OS refused; the mapping is then unchanged.
    static func remap(_ p: RawPointer, from old: Int, to new: Int, at target: RawPointer) -> Bool {
        if FaultPlan.fails(.mremap) { return false }
        if aeth_mremap_to(p, old, new, target) != target { return false }
        // The pages moved onto the target range (mapped and counted by us);
        // the old range's `old` bytes are no longer mapped.
        aeth_count_moved_away(old)
        return true
    }

    /// What the allocator holds from the OS: bytes mapped now and at the
    /// peak, and bytes given back so far (munmap and purges). Counted here,
    /// on every successful call, in every variant.
    static var bytesMapped: Int { Int(truncatingIfNeeded: aeth_counted_mapped()) }
    static var peakBytesMapped: Int { Int(truncatingIfNeeded: aeth_counted_peak()) }
    static var bytesReturned: Int { Int(truncatingIfNeeded: aeth_counted_returned()) }

    // ---- memory tagging (aarch64 MTE; aeth_platform.h) ----------------------------

    /// Whether this build can tag memory at all: aarch64 only. A compile-time
    /// constant, so the x86-64 libraries carry no tagging branch.
    #if arch(arm64)
    static let canTagMemory = true
    #else
    static let canTagMemory = false
    #endif
    /// Bits 56..59 of a pointer hold its tag.
    static let tagShift = 56
    /// Turns tag checks on for this thread and those it creates
    /// (prctl(PR_SET_TAGGED_ADDR_CTRL)); false without MTE or when refused.
    static func enableMemoryTagging(asynchronous: Bool) -> Bool { aeth_mte_enable(asynchronous ? 2 : 1) == 0 }
    /// Whether enableMemoryTagging succeeded in this process.
    @inline(__always) static var memoryTaggingActive: Bool { canTagMemory && aeth_mte_active() != 0 }
    /// mprotect(PROT_READ | PROT_WRITE | PROT_MTE); false when the OS refused.
    static func allowTags(_ p: RawPointer, bytes: Int) -> Bool {
        if FaultPlan.fails(.mprotect) { return false }
        return aeth_mte_protect(p, bytes) == 0
    }
    /// The memory tag of the 16-byte granule at `p` (ldg).
    static func memoryTag(of p: RawPointer) -> UInt { UInt(aeth_mte_tag_of(p)) }
    /// Gives `bytes` at `p` a random tag outside the 16-bit mask `excluding`
    /// and zeroes them; returns `p` carrying that tag.
    static func tagAndZero(_ p: RawPointer, bytes: Int, excluding: UInt64) -> RawPointer {
        aeth_mte_tag_block(p, bytes, excluding).unsafelyUnwrapped
    }
    /// Gives `bytes` at `p` tag 0 and zeroes them.
    static func untagAndZero(_ p: RawPointer, bytes: Int) { aeth_mte_untag_block(p, bytes) }

    // ---- memory primitives (no OS call; here so the shim has one door) --------

    @inline(__always) static func zero(_ p: RawPointer, bytes: Int) { aeth_memset(p, 0, bytes) }
    @inline(__always) static func fill(_ p: RawPointer, byte: UInt8, bytes: Int) { aeth_memset(p, Int32(byte), bytes) }
    @inline(__always) static func copy(_ dst: RawPointer, _ src: UnsafeRawPointer, bytes: Int) { aeth_memcpy(dst, src, bytes) }

    // ---- static storage --------------------------------------------------------

    /// Zeroed, 4 KiB-aligned storage for the global state (Globals.swift).
    @inline(__always) static var rootStorage: RawPointer { RawPointer(aeth_root()) }
    @inline(__always) static var rootStorageBytes: Int { aeth_root_bytes() }
    /// The segment map: a byte per 4 MiB chunk of the address space.
    @inline(__always) static var segmentMap: UnsafeMutablePointer<UInt8> { aeth_segment_map_ptr() }
    /// AETH_SEGMENT_MAP_ENTRIES (a macro Swift cannot import), from the same two numbers.
    @inline(__always) static var segmentMapEntries: Int { 1 << (userAddressBits - segmentShift) }

    // ---- thread-local state ----------------------------------------------------

    @inline(__always) static var tlsCache: RawPointer { aeth_tls_cache_get().unsafelyUnwrapped }
    @inline(__always) static func setTLSCache(_ p: RawPointer) { aeth_tls_cache_set(p) }
    @inline(__always) static var tlsState: UInt { aeth_tls_state_get() }
    @inline(__always) static func setTLSState(_ s: UInt) { aeth_tls_state_set(s) }
    /// The shared all-zero cache of threads that have none.
    @inline(__always) static var emptyCache: RawPointer { RawPointer(aeth_empty_cache_ptr()) }
    static var emptyCacheBytes: Int { Int(AETH_EMPTY_CACHE_BYTES) }

    // ---- threads and process ---------------------------------------------------

    /// pthread_key_create with the thread-exit destructor; nil on failure.
    static func createThreadKey() -> Int32? {
        if FaultPlan.fails(.threadKey) { return nil }
        let k = aeth_thread_key_create()
        return k < 0 ? nil : Int32(k)
    }
    /// pthread_setspecific. False when glibc could not store the value
    /// (ENOMEM past its inline keys): the destructor will then not run.
    static func setThreadKey(_ key: Int32, _ value: RawPointer?) -> Bool {
        if FaultPlan.fails(.threadKey) { return false }
        return aeth_thread_key_set(key, value) == 0
    }
    static func registerForkHandlers() { aeth_register_atfork() }
    /// Starts the background reclaimer thread (`aethalloc_background_main`);
    /// false if the OS refused (RLIMIT_NPROC, a seccomp filter on clone).
    /// Whether RLIMIT_AS (ulimit -v) is finite.
    static var addressSpaceLimited: Bool { aeth_address_space_limited() != 0 }
    static func startBackgroundThread() -> Bool {
        if FaultPlan.fails(.thread) { return false }
        return aeth_background_thread_start() == 0
    }
    static var pid: Int64 { aeth_getpid() }
    /// /proc/self/comm into `buf` (NUL-terminated, at most `capacity` bytes).
    static func readCommand(into buf: UnsafeMutablePointer<CChar>, capacity: Int) { aeth_read_comm(buf, capacity) }

    // ---- synchronisation ---------------------------------------------------------

    @inline(__always) static func futexWait(_ word: UnsafeMutablePointer<UInt32>, expected: UInt32) {
        aeth_futex_wait(word, expected)
    }
    @inline(__always) static func futexWakeOne(_ word: UnsafeMutablePointer<UInt32>) { aeth_futex_wake_one(word) }
    /// Waits while `*word == expected`, at most `ms` milliseconds (or until
    /// woken, or spuriously).
    static func futexWait(_ word: UnsafeMutablePointer<UInt32>, expected: UInt32, timeoutMs ms: UInt64) {
        aeth_futex_wait_ms(word, expected, ms)
    }
    @inline(__always) static func yield() { aeth_yield() }
    @inline(__always) static func cpuRelax() { aeth_cpu_relax() }
    /// A hint to load the line at `p` into the cache; never faults (nil and
    /// stale addresses included).
    @inline(__always) static func prefetch(_ p: UnsafeRawPointer?) { aeth_prefetch(p) }
    /// The same, owned for writing: taken from another core's cache now.
    @inline(__always) static func prefetchForWrite(_ p: UnsafeRawPointer?) { aeth_prefetch_write(p) }

    // ---- time and randomness ---------------------------------------------------

    /// Monotonic milliseconds (coarse clock, no syscall). The hosted build's
    /// tests may drive it (`TestClock`).
    @inline(__always) static func nowMs() -> UInt64 {
        if Variant.injectsFaults, let t = TestClock.override { return t }
        return aeth_now_ms()
    }
    static func unixMs() -> UInt64 { aeth_unix_ms() }
    /// 8 random bytes (AT_RANDOM; no syscall).
    static func randomWord() -> UInt64 { aeth_random_word() }

    // ---- environment, errno, output ------------------------------------------------

    /// getenv(3) (does not allocate).
    static func environment(_ name: UnsafePointer<CChar>) -> UnsafePointer<CChar>? { aeth_getenv(name) }
    static func environment(_ name: StaticString) -> UnsafePointer<CChar>? {
        aeth_getenv(UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self))
    }

    /// The `i`-th "NAME=value" entry of the environment, nil past the end.
    static func environmentEntry(_ i: Int) -> UnsafePointer<CChar>? { aeth_environ_entry(i) }

    @inline(__always) static var errno: Int32 {
        get { aeth_errno_get() }
        set { aeth_errno_set(newValue) }
    }
    static var ENOMEM: Int32 { aeth_ENOMEM() }
    static var EINVAL: Int32 { aeth_EINVAL() }

    static func writeStderr(_ p: UnsafePointer<UInt8>, count: Int) { aeth_write_stderr(p, count) }
    /// write(2) of all `count` bytes to `fd`; false on an error.
    @discardableResult
    static func write(_ fd: Int32, _ p: UnsafeRawPointer, count: Int) -> Bool { aeth_write_fd(fd, p, count) == 0 }
    /// fflush(fp) and fileno(fp) of a C `FILE *`; nil if it has none.
    static func flushAndDescriptor(of file: UnsafeMutableRawPointer?) -> Int32? {
        let fd = aeth_flush_fileno(file)
        return fd < 0 ? nil : fd
    }
    static func abort() -> Never { aeth_abort() }

    // ---- the statistics file (metrics variant) -------------------------------------

    static func dirIsWritable(_ dir: UnsafePointer<CChar>) -> Bool { aeth_dir_is_writable(dir) != 0 }
    static func createStatsFile(
        directory: UnsafePointer<CChar>, path: UnsafeMutablePointer<CChar>, capacity: Int
    ) -> RawPointer? {
        aeth_stats_file_create(directory, path, capacity)
    }
    static func closeStatsFile(_ map: RawPointer?, path: UnsafePointer<CChar>?) { aeth_stats_file_close(map, path) }
}

/// Test-only fault injection: every `every[k]`-th call of kind k on the
/// calling thread fails (0: never), counted in `seen[k]`; `failed[k]`
/// counts the injected failures. Per thread, so white-box tests running in
/// parallel do not see each other's faults. Only the hosted build reads it.
enum FaultPlan {
    @inline(__always)
    static func fails(_ kind: FaultKind) -> Bool {
        if !Variant.injectsFaults { return false }
        return aeth_fault_should_fail(Int32(kind.rawValue)) != 0
    }

    /// Makes every `n`-th call of `kind` on this thread fail (0: none).
    static func set(_ kind: FaultKind, every n: UInt32) { aeth_fault_set(Int32(kind.rawValue), n) }
    /// Clears this thread's plan.
    static func reset() { aeth_fault_reset() }
    /// Failures injected on this thread since the last reset.
    static func injected(_ kind: FaultKind) -> UInt64 { aeth_fault_injected(Int32(kind.rawValue)) }
}

/// Test-only clock (hosted build): while `override` is set, `OS.nowMs()`
/// returns it, so tests of the purge delay and span decay step time instead
/// of sleeping. Process-wide; tests that set it run serialized.
enum TestClock {
    static var override: UInt64? {
        let v = aeth_test_clock_get()
        return v == 0 ? nil : v
    }
    static func set(_ ms: UInt64?) { aeth_test_clock_set(ms ?? 0) }
}
