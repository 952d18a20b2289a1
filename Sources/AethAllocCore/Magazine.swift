// Magazine.swift: magazines, the lock-free tagged stack, and the depot
// (Bonwick & Adams, "Magazines and Vmem", USENIX ATC 2001).
//
// A magazine is an array of up to 62 block pointers of one class:
//
//   +0   next   (link while the magazine sits on a TaggedStack; atomic word)
//   +8   count  (rounds held; authoritative only while not loaded in a cache)
//   +16  rounds[62]
//
// Each class has a depot: a stack of full magazines. Empty magazines are
// class-agnostic and share one stack. Threads trade whole magazines with the
// depot, so a producer/consumer pair moves 62 blocks per depot operation,
// and a thread never holds more than two magazines per class.
import Synchronization

struct Magazine {
    var next: UInt
    var count: Int

    /// Where the rounds start: right after the header.
    static let roundsOffset = MemoryLayout<Magazine>.stride

    @inline(__always)
    static func rounds(_ m: UnsafeMutablePointer<Magazine>) -> UnsafeMutablePointer<RawPointer?> {
        (RawPointer(m) + roundsOffset).assumingMemoryBound(to: RawPointer?.self)
    }

    /// An empty magazine: from the shared stack, or carved from the arena.
    static func obtainEmpty() -> UnsafeMutablePointer<Magazine>? {
        if let m = Globals.emptyMagazines.pointee.pop() {
            let mag = m.assumingMemoryBound(to: Magazine.self)
            mag.pointee.count = 0
            return mag
        }
        guard let raw = MetadataArena.allocate(bytes: Tuning.magazineBytes) else { return nil }
        let mag = raw.assumingMemoryBound(to: Magazine.self)
        mag.pointee = Magazine(next: 0, count: 0)
        return mag
    }

    static func recycle(_ m: UnsafeMutablePointer<Magazine>) {
        m.pointee.count = 0
        Globals.emptyMagazines.pointee.push(RawPointer(m))
    }
}

/// A lock-free LIFO of nodes linked through the word at `linkOffset`
/// (Treiber stack).
///
/// ABA: the head is a {pointer, tag} pair updated with a 16-byte
/// compare-and-swap (`lock cmpxchg16b`). Every successful push or pop
/// increments the tag, so a pop that read head (A, t) and A.next = B fails if
/// A was popped and pushed back meanwhile: the head is now (A, t+2).
/// Reading A.next after another thread popped A is safe because nodes live
/// in metadata memory that is never unmapped; the link is an atomic word so
/// the racy read is well defined, and a stale value is rejected by the CAS.
/// Nodes must stay readable memory while any thread may still pop: every
/// node (magazines, the simple variant's batch descriptors) lives in the
/// metadata arena, which is never unmapped.
struct TaggedStack: ~Copyable {
    let head: Atomic<WordPair>
    let count: Atomic<Int>

    @inline(__always)
    private static func link(_ node: RawPointer, _ offset: Int) -> UnsafeMutablePointer<Atomic<UInt>> {
        (node + offset).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    borrowing func push(_ node: RawPointer, linkOffset: Int = 0) {
        var old = head.load(ordering: .relaxed)
        while true {
            TaggedStack.link(node, linkOffset).pointee.store(old.first, ordering: .relaxed)
            let new = WordPair(first: UInt(bitPattern: node), second: old.second &+ 1)
            let (done, seen) = head.compareExchange(expected: old, desired: new, ordering: .releasing)
            if done { break }
            old = seen
        }
        count.wrappingAdd(1, ordering: .relaxed)
    }

    borrowing func pop(linkOffset: Int = 0) -> RawPointer? {
        var old = head.load(ordering: .acquiring)
        while true {
            guard let node = RawPointer(bitPattern: old.first) else { return nil }
            let next = TaggedStack.link(node, linkOffset).pointee.load(ordering: .relaxed)
            let new = WordPair(first: next, second: old.second &+ 1)
            let (done, seen) = head.compareExchange(expected: old, desired: new, ordering: .acquiringAndReleasing)
            if done {
                count.wrappingSubtract(1, ordering: .relaxed)
                return node
            }
            old = seen
        }
    }

    /// Approximate: exact when no push or pop is in flight.
    borrowing func approximateCount() -> Int { count.load(ordering: .relaxed) }
}

/// One class's depot of full magazines.
///
/// Until a thread pops a magazine that another thread's cache pushed, the
/// depot could only hand the thread that uses it its own blocks back, last
/// freed first. Whether that is worth keeping depends on the magazine:
///   - its rounds are neighbouring blocks (most sampled pairs lie one block
///     apart, either way: `inSequence`): a run freed in the order it was
///     handed out, which comes back in that order reversed. The depot keeps
///     up to the class's `depotUnsharedLimit` (Tuning.depotUnsharedBytesPerClass)
///     of these, and saves them the pages' round trip, about 31
///     instructions a block: `remote_free` (one thread) 1.07x mimalloc's
///     time with 4 magazines, 0.98x with 256 KiB;
///   - its rounds are scattered: blocks freed while others were handed out
///     (a list copied node by node, each copy taking the block just
///     freed). Given back last-in-first-out they scatter a little more each
///     time a program rebuilds its structures, so past
///     `Tuning.depotMinMagazines` they go back to their pages, which hand
///     them out again in address order (their free bitmaps, Page.swift).
///     `small_objects`: 11% behind mimalloc's time when the depot kept
///     every magazine to 256 KiB, 6% with this, and the share of
///     allocations placed right above the previous one of their size went
///     from 11% to 44% (mimalloc 40%; BENCHMARK.md, "Sequential
///     magazines").
/// Once blocks of the class do travel between threads (`shared`, set for
/// good), the depot keeps up to the class's `depotLimit` whatever their
/// order, so a producer's and a consumer's magazines meet there. Per class
/// and by what happened, not by how many threads exist: an idle second
/// thread does not change a busy one's depot. The simple variant keeps its
/// pool of batches in the same slot and records sharing the same way
/// (`notePush`, `notePop`; GlobalPool.limit).
struct Depot: ~Copyable {
    let full: TaggedStack
    /// The thread cache (its address) that pushed last.
    let lastPusher: Atomic<UInt>
    /// Set when a cache popped a magazine (or batch) while another cache was
    /// the last to push (a heuristic: a race between the two only delays it).
    let shared: Atomic<Bool>

    /// The number of full magazines class `c`'s depot may hold for `m`
    /// to be pushed.
    @inline(__always)
    static func limit(_ c: Int, for m: UnsafeMutablePointer<Magazine>) -> Int {
        let info = Globals.classInfo(c)
        if isShared(c) { return info.pointee.depotLimit }
        return unsharedLimit(for: m, info)
    }

    /// The same while no block of the class has changed threads.
    static func unsharedLimit(for m: UnsafeMutablePointer<Magazine>, _ info: UnsafeMutablePointer<ClassInfo>) -> Int {
        inSequence(m, blockSize: info.pointee.blockSize) ? info.pointee.depotUnsharedLimit : Tuning.depotMinMagazines
    }

    /// Whether `m`'s rounds are neighbouring blocks: of
    /// `Tuning.sequenceSamples` pairs of adjacent rounds spread over the
    /// magazine, at least `Tuning.sequenceNeighbours` lie one block apart
    /// (either way). A magazine of fewer than twice that many rounds (blocks
    /// of 4 KiB and more) counts as one.
    static func inSequence(_ m: UnsafeMutablePointer<Magazine>, blockSize: Int) -> Bool {
        let n = m.pointee.count
        let samples = Tuning.sequenceSamples
        if n < 2 &* samples { return true }
        let rounds = UnsafeRawPointer(Magazine.rounds(m))
        let stride = MemoryLayout<RawPointer>.stride
        let step = (n / samples) &* stride
        let size = UInt(bitPattern: blockSize)
        var neighbours = 0
        var offset = 0
        for _ in 0..<samples {
            let a = rounds.load(fromByteOffset: offset, as: UInt.self)
            let b = rounds.load(fromByteOffset: offset &+ stride, as: UInt.self)
            neighbours &+= (b &- a == size || a &- b == size) ? 1 : 0
            offset &+= step
        }
        return neighbours >= Tuning.sequenceNeighbours
    }

    /// Whether blocks of class `c` have travelled between threads.
    @inline(__always)
    static func isShared(_ c: Int) -> Bool { Globals.depot(c).pointee.shared.load(ordering: .relaxed) }

    /// Cache `tc` pushes onto class `c`'s stack.
    @inline(__always)
    static func notePush(_ c: Int, from tc: RawPointer) {
        Globals.depot(c).pointee.lastPusher.store(UInt(bitPattern: tc), ordering: .relaxed)
    }

    /// Cache `tc` popped from class `c`'s stack: the class is shared from
    /// now on if another cache pushed last.
    @inline(__always)
    static func notePop(_ c: Int, to tc: RawPointer) {
        let d = Globals.depot(c)
        if !d.pointee.shared.load(ordering: .relaxed) && d.pointee.lastPusher.load(ordering: .relaxed) != UInt(bitPattern: tc) {
            d.pointee.shared.store(true, ordering: .relaxed)
        }
    }

    /// Pushes a full magazine from cache `tc`, or returns false when the
    /// depot already holds its limit (the caller then drains the magazine
    /// to the pages).
    @inline(__always)
    static func pushFull(_ c: Int, _ m: UnsafeMutablePointer<Magazine>, from tc: RawPointer) -> Bool {
        pushFull(c, m, from: tc, limit: limit(c, for: m))
    }

    @inline(__always)
    static func pushFull(_ c: Int, _ m: UnsafeMutablePointer<Magazine>, from tc: RawPointer, limit: Int) -> Bool {
        let d = Globals.depot(c)
        if d.pointee.full.approximateCount() >= limit { return false }
        notePush(c, from: tc)
        d.pointee.full.push(RawPointer(m))
        Stats.depotTransfer()
        return true
    }

    /// A full magazine for cache `tc`, if the depot has one.
    @inline(__always)
    static func popFull(_ c: Int, to tc: RawPointer) -> UnsafeMutablePointer<Magazine>? {
        let d = Globals.depot(c)
        guard let m = d.pointee.full.pop() else { return nil }
        notePop(c, to: tc)
        Stats.depotTransfer()
        return m.assumingMemoryBound(to: Magazine.self)
    }

    /// Drains every full magazine of class `c` to the pages (malloc_trim).
    static func drainAll(_ c: Int) {
        while let m = Globals.depot(c).pointee.full.pop() {
            let mag = m.assumingMemoryBound(to: Magazine.self)
            Central.drain(c, from: Magazine.rounds(mag), count: mag.pointee.count)
            Magazine.recycle(mag)
        }
    }
}
