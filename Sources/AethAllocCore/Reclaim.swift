// Reclaim.swift: when memory goes back to the OS, in one place.
//
// The mechanics live with the data (SegmentManager purges and unmaps
// segments, Large unmaps spans, the caching policies drain their depots);
// what is decided here is *when*:
//
//   dirty budget   freed slices stay committed up to `dirtyBudget` (a share
//                  of the heap, at least Options.dirtyMinBytes); past it a
//                  release (or the reclaimer it wakes) purges down to half.
//                  Plus the churn allowance: what such a purge (or an empty
//                  segment's unmap) gave back and the program faulted in
//                  again within the purge delay may stay for one delay
//                  (SegmentManager.churnAllowance), whoever purges
//   purge delay    a slice committed and free for longer than
//                  Options.purgeDelayMs is purged
//   span decay     a cached large span idle for longer than
//                  Tuning.largeCacheDecayMs is unmapped; at most
//                  largeCacheLimitBytes are cached
//   empty segments one wholly free segment stays mapped; the rest are
//                  unmapped at once (SegmentManager.releasePage), or, while
//                  the reclaimer runs, when the purge delay is up (they
//                  count as dirty, within the budget): a program whose
//                  segments empty and refill does not unmap and fault in
//                  the same memory in a loop
//   depots, pools  drained when the process is back to one thread
//                  (ThreadCache.detach) and by malloc_trim (Reclaimer.trim), which
//                  reaches every thread's cache through the trim epoch
//
// Who acts on the delay and the decay:
//
//   inline         (AETHALLOC_BACKGROUND=0, or before the reclaimer starts,
//                  or when it cannot be created) the next segment or large
//                  operation checks them, on whichever thread makes it; a
//                  program that stops calling the allocator keeps what it
//                  freed last.
//   background     one thread per process, "aethalloc-bg", started the first
//                  time more than `Tuning.backgroundStartBytes` of freed
//                  memory waits for the delay or the decay (so a program that
//                  stays small never has it; AETHALLOC_BACKGROUND=1 starts it
//                  at the first byte). Not under an address-space limit
//                  (RLIMIT_AS): there the thread's stack would come out of
//                  what the program may map. It sleeps on a futex while nothing is
//                  pending, and otherwise wakes when the oldest pending item
//                  is due (up to Tuning.backgroundLeadMs early, so memory is
//                  back within the delay): memory goes back while the
//                  program is idle.
//                  Allocating threads then only mark work: the budget is
//                  enforced inline only past twice its size (a hard
//                  ceiling), below that the reclaimer is woken instead.
//
// The reclaimer takes only the segment and large-cache locks, which no fast
// path takes; it never allocates through malloc; it holds no lock across
// fork (the fork handlers take every lock, so fork waits for its current
// step), and a fork child starts without one until it has work of its own.
// It blocks every signal, so signals stay with the program's threads.
import Synchronization

enum Reclaimer {
    static let notStarted = 0
    static let starting = 1
    static let running = 2
    /// Switched off (AETHALLOC_BACKGROUND=0) or the OS refused the thread.
    static let unavailable = 3

    @inline(__always) static var state: UnsafeMutablePointer<Atomic<Int>> { Globals.reclaimerState }
    @inline(__always) static var isRunning: Bool { state.pointee.load(ordering: .relaxed) == running }

    // ---- the policy ---------------------------------------------------------------

    /// Dirty bytes allowed before a release purges: a share of the heap
    /// (bytes in pages, medium and large blocks; AETHALLOC_DIRTY_PERCENT), at
    /// least `Options.dirtyMinBytes`. `used` includes `medium`.
    static func dirtyBudget(used: Int, medium: Int) -> Int {
        // Medium blocks count twice (they are in `used` too): they come and
        // go in runs of up to 16 slices, and a program cycling through them
        // (growing buffers) re-faults every purged run. Live large blocks
        // count once.
        let heap = used &+ medium &+ Globals.largeLiveBytes.pointee.load(ordering: .relaxed)
        return max(Options.dirtyMinBytes, heap / 100 * Options.dirtyPercent)
    }

    /// Whether a release that left `dirty` bytes committed against `budget`
    /// purges on the releasing thread now. With the reclaimer running, only
    /// past the hard ceiling; below it the reclaimer is woken.
    static func purgesInline(dirty: Int, budget: Int) -> Bool {
        if dirty <= budget { return false }
        if isRunning && dirty <= 2 * budget {
            wake()
            return false
        }
        return true
    }

    /// Bytes of freed large spans kept for reuse. Twice
    /// `Tuning.largeCacheMaxTotalBytes` while the reclaimer runs, since it
    /// returns idle spans within the decay whether or not the program calls
    /// again (big_churn bench, 20 blocks of 5-25 MiB, 1000 replacements,
    /// measured before every split-off tail was cached: 68,148 minor faults
    /// instead of 92,634, peak RSS 447 MB instead of 413 MB).
    @inline(__always) static var largeCacheLimitBytes: Int {
        isRunning ? 2 * Tuning.largeCacheMaxTotalBytes : Tuning.largeCacheMaxTotalBytes
    }

    /// Whether a segment just left wholly free, with `kept` such segments
    /// already mapped, is unmapped by the releasing thread: past
    /// `Tuning.cachedEmptySegments`, unless the reclaimer runs (then the
    /// purge delay unmaps it). server_sim bench (10,000 slots of 16 B to
    /// 1 MiB, every page written), unmapping at once against keeping:
    /// 110,238 against 62,277 minor faults, 0.40 s against 0.23 s system
    /// time, peak RSS 1,503,684 KiB against 1,509,420 KiB.
    @inline(__always)
    static func unmapsEmptySegmentNow(kept: Int) -> Bool {
        kept >= Tuning.cachedEmptySegments && !isRunning
    }

    /// Whether the releasing thread checks the purge delay and the span
    /// decay itself: not while the reclaimer does.
    @inline(__always) static var checksDelaysInline: Bool { !isRunning }

    /// `bytes` of freed memory now wait for the delay or the decay (called
    /// under the segment or large-cache lock). Past the start threshold the
    /// reclaimer is wanted; it is started by `startIfWanted`, outside every
    /// lock (pthread_create allocates).
    @inline(__always)
    static func notePending(bytes: Int) {
        if state.pointee.load(ordering: .relaxed) != notStarted { return }
        if bytes >= startThresholdBytes { Globals.reclaimerWanted.pointee.store(true, ordering: .relaxed) }
    }

    /// The start threshold: `Tuning.backgroundStartBytes` for `auto`, 1 byte
    /// for `1`.
    static var startThresholdBytes: Int {
        Options.background == .always ? 1 : Tuning.backgroundStartBytes
    }

    // ---- the thread ----------------------------------------------------------------

    /// Called after a program frees a block above 64 KiB, with no lock of
    /// ours held: starts the reclaimer if it is wanted and not started.
    /// Only there: pthread_create takes glibc's own locks (the stack cache,
    /// the TLS lock), and the small frees glibc makes inside its dynamic
    /// loader while holding those must never create a thread. A program
    /// that frees only small blocks keeps the inline policy.
    @inline(__always)
    static func startIfWanted() {
        if !Globals.reclaimerWanted.pointee.load(ordering: .relaxed) { return }
        if state.pointee.load(ordering: .relaxed) != notStarted { return }
        start()
    }

    @inline(never)
    static func start() {
        // Under an address-space limit the thread's stack and TLS would come
        // out of what the program may map, and purging gives no address
        // space back: the inline policy is used there.
        if Options.background == .off || OS.addressSpaceLimited {
            state.pointee.store(unavailable, ordering: .relaxed)
            return
        }
        guard state.pointee.compareExchange(expected: notStarted, desired: starting, ordering: .acquiring).exchanged
        else { return }
        let saved = OS.errno
        if OS.startBackgroundThread() {
            state.pointee.store(running, ordering: .releasing)
        } else {
            // RLIMIT_NPROC, a seccomp filter: the inline policy goes on,
            // silently; the metrics variant counts it.
            state.pointee.store(unavailable, ordering: .releasing)
            Stats.backgroundUnavailable()
        }
        OS.errno = saved
    }

    /// Wakes the reclaimer early (the budget was exceeded). The futex word
    /// changes on every call, so a reclaimer about to wait returns at once;
    /// the syscall is made only when it is waiting or about to (`sleeping`).
    /// Both sides store, then load the other's word, sequentially
    /// consistent: one of them sees the other's store.
    static func wake() {
        let word = Globals.reclaimerWake
        word.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if !Globals.reclaimerSleeping.pointee.load(ordering: .sequentiallyConsistent) { return }
        OS.futexWakeOne(UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self))
    }

    /// The reclaimer's loop: one step, then sleep until the next item is
    /// due, a wake, or `Tuning.backgroundIdleSleepMs`.
    static func run() -> Never {
        let word = Globals.reclaimerWake
        let raw = UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self)
        while true {
            let seen = word.pointee.load(ordering: .acquiring)
            let next = step(now: OS.nowMs() &+ Tuning.backgroundLeadMs)
            let sleep = next.map { max($0, Tuning.backgroundMinSleepMs) } ?? Tuning.backgroundIdleSleepMs
            Globals.reclaimerSleeping.pointee.store(true, ordering: .sequentiallyConsistent)
            if word.pointee.load(ordering: .sequentiallyConsistent) == seen {
                OS.futexWait(raw, expected: seen, timeoutMs: sleep)
            }
            Globals.reclaimerSleeping.pointee.store(false, ordering: .relaxed)
        }
    }

    /// One round: purges what the delay and the budget say, decays spans,
    /// publishes statistics. Returns the milliseconds until the next item is
    /// due, nil if nothing is pending.
    static func step(now: UInt64) -> UInt64? {
        let segments = SegmentManager.reclaim(now: now)
        let spans = Large.reclaim(now: now)
        Publisher.publishIfStale()
        switch (segments, spans) {
        case (nil, nil): return nil
        case (let a?, nil): return a
        case (nil, let b?): return b
        case (let a?, let b?): return min(a, b)
        }
    }

    // ---- malloc_trim -----------------------------------------------------------------

    /// malloc_trim: the calling thread's cache, then what every thread
    /// shares, go back. Every other thread's cache is asked to empty itself
    /// (the trim epoch) and does so at its next slow path, returning what
    /// it shares again then; a thread that never calls the allocator again
    /// keeps its cache (at most a magazine pair or list per class). True if
    /// any bytes went back to the OS now.
    static func trim() -> Bool {
        Runtime.ensureInitialized()
        let epoch = Globals.trimEpoch.pointee.wrappingAdd(1, ordering: .relaxed).newValue
        if OS.tlsState == ThreadState.live {
            let tc = ThreadCache.current
            ThreadCache.setBusy(tc, true)
            ThreadCache.links(tc).pointee.seenTrimEpoch = epoch
            Variant.Cache.flushAll(tc)
            ThreadCache.setBusy(tc, false)
        }
        return returnShared() > 0
    }

    /// Returns what no thread's cache holds: the depots or pools, empty
    /// pages, free slices, empty segments and cached large spans. Returns the
    /// bytes given back.
    @discardableResult
    static func returnShared() -> Int {
        var released = 0
        for c in 0..<SizeClass.count {
            Variant.Cache.drainGlobal(c)
            released += Central.releaseEmptyPages(c)
        }
        released += SegmentManager.purgeAll()
        released += SegmentManager.releaseEmptySegments()
        released += Large.releaseCached()
        return released
    }

    /// In a fork child: the parent's reclaimer did not come along.
    static func resetAfterFork() {
        state.pointee.store(Options.background == .off ? unavailable : notStarted, ordering: .relaxed)
        Globals.reclaimerWanted.pointee.store(false, ordering: .relaxed)
        Globals.reclaimerWake.pointee.store(0, ordering: .relaxed)
        Globals.reclaimerSleeping.pointee.store(false, ordering: .relaxed)
    }
}

@c(aethalloc_background_main)
public func aethalloc_background_main() {
    Reclaimer.run()
}
