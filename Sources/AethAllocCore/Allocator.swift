// Allocator.swift: the malloc family's semantics, on top of the caches,
// pages and large mappings. Exports.swift binds these to C names.
//
// glibc behaviour kept here: 16-byte alignment for every block; malloc(0) is
// a unique block; NULL + ENOMEM on failure (including sizes above
// PTRDIFF_MAX); realloc(p, 0) frees p and returns NULL; a failed realloc
// leaves p intact; free preserves errno.
import CAethAlloc

/// What a pointer passed back to us is.
enum BlockKind {
    case small(sizeClass: Int)
    case medium(page: UnsafeMutablePointer<PageMeta>)
    case large(base: RawPointer)
}

enum Allocator {
    static let maxRequest = UInt(Int.max)  // PTRDIFF_MAX

    // ---- malloc ------------------------------------------------------------------

    // Fast-path budget for malloc(n <= 1 KiB), x86-64: compare n, one table
    // load for the class, one TLS load for the cache, then the policy's pop
    // (3 loads, 1 store, 1 branch). No atomics, no locks, no calls.
    @inline(__always)
    static func allocate(_ n: UInt) -> RawPointer? {
        if n <= UInt(Tuning.smallTableMaxBytes) {
            return allocate(entryOffset: SizeClass.entryOffset(ofSmall: n), request: n)
        }
        return aethalloc_allocate_above_1k(n)
    }

    /// A block of class `c` for a request of `n` bytes: the thread cache's
    /// pop, else the slow path. Every small allocation goes through here.
    @inline(__always)
    static func allocate(sizeClass c: Int, request n: UInt) -> RawPointer? {
        allocate(entryOffset: ThreadCache.entryOffset(c), request: n)
    }

    /// The same, for the class whose cache entry lies at `offset`.
    @inline(__always)
    static func allocate(entryOffset offset: Int, request n: UInt) -> RawPointer? {
        if let p = takeCached(ThreadCache.current, entryOffset: offset) { return p }
        return aethalloc_allocate_slow(n, ThreadCache.sizeClass(ofEntryOffset: offset))
    }

    /// A block from cache `tc`'s entry at `offset`, handed to the program,
    /// or nil when the entry is empty (malloc's and realloc's fast paths).
    @inline(__always)
    static func takeCached(_ tc: RawPointer, entryOffset offset: Int) -> RawPointer? {
        guard let p = Variant.Cache.pop(ThreadCache.hot(tc, entryOffset: offset)) else { return nil }
        Stats.allocated(tc, entryOffset: offset)
        return Hardening.handOut(p, sizeClass: ThreadCache.sizeClass(ofEntryOffset: offset))
    }

    /// Reached through `aethalloc_allocate_above_1k` (kept out of line there).
    static func allocateAbove1K(_ n: UInt) -> RawPointer? {
        if n <= UInt(Tuning.maxSmallBytes) {
            return allocate(sizeClass: SizeClass.computedIndex(of: Int(bitPattern: n)), request: n)
        }
        if n > maxRequest { return outOfMemory() }
        return allocateAboveClasses(size: Int(bitPattern: n), alignment: 16, zeroed: false)
    }

    /// A block above the largest size class: a medium block carved from a
    /// segment, or a large mapping (`growing`: for realloc, see
    /// Large.allocate). Retries once after releasing cached memory; NULL +
    /// ENOMEM if the OS still refuses.
    @inline(never)
    static func allocateAboveClasses(size: Int, alignment: Int, zeroed: Bool, growing: Bool = false) -> RawPointer? {
        Runtime.ensureInitialized()
        let saved = OS.errno
        let medium = Medium.serves(size: size, alignment: alignment)
        for attempt in 0..<2 {
            if attempt == 1 && !releaseForRetry() { break }
            let p = medium
                ? Medium.allocate(size: size, zeroed: zeroed)
                : Large.allocate(size: size, alignment: alignment, zeroed: zeroed, growing: growing)
            if let p {
                OS.errno = saved
                return p
            }
        }
        return outOfMemory()
    }

    /// The cache had nothing for class `c`. Before the thread's first
    /// allocation the size table may not be filled yet, so the class is
    /// computed again once the process is initialised.
    /// A successful allocation leaves errno as it was (a futex wait on a
    /// contended lock may set it). Reached through `aethalloc_allocate_slow`
    /// (kept out of line there).
    static func allocateSlow(_ n: UInt, _ c: Int) -> RawPointer? {
        let saved = OS.errno
        var c = c
        if OS.tlsState != ThreadState.live {
            Runtime.ensureInitialized()
            c = SizeClass.index(of: Int(bitPattern: n))
        }
        guard let p = ThreadCache.allocate(c) ?? (releaseForRetry() ? ThreadCache.allocate(c) : nil) else {
            return outOfMemory()
        }
        let q = Hardening.handOut(p, sizeClass: c)
        OS.errno = saved
        return q
    }

    /// The OS refused memory: give back what malloc_trim would (cached
    /// blocks, empty pages and segments, cached large spans) so a retry can
    /// succeed under an address-space limit. True if anything was released.
    @inline(never)
    static func releaseForRetry() -> Bool {
        Reclaimer.trim()
    }

    @inline(never)
    static func outOfMemory() -> RawPointer? {
        OS.errno = OS.ENOMEM
        return nil
    }

    // ---- free --------------------------------------------------------------------

    /// The address bits that must be clear in a pointer the segment map can
    /// describe and that is a block start: those at or above the map's reach
    /// (OS.segmentMapEntries chunks) and the low four.
    @inline(__always) static var outsideMapOrMisaligned: UInt {
        ~((UInt(OS.segmentMapEntries) &<< UInt(Tuning.segmentShift)) &- 1) | 15
    }

    // Fast-path budget for free(p) of a small block, x86-64: alignment test,
    // segment-map byte load and compare, slice-class byte load and compare,
    // TLS load, then the policy's push (2 loads, 2 stores, 1 branch). The map
    // byte is read plainly, not through Segment.mapByte: a block being freed
    // keeps its segment mapped, so nothing writes that byte meanwhile, and
    // `cmpb` on memory saves the load-then-compare of an atomic load.
    //
    // free(NULL) needs no test of its own here: address 0 passes the mask
    // test, and the map byte of chunk 0 is never set (every mapping the map
    // describes starts at a non-zero multiple of 4 MiB), so NULL leaves the
    // fast path at the map byte and returns below it.
    @inline(__always)
    static func deallocate(_ pointer: RawPointer?) {
        // Hardened on aarch64: the address without a memory tag.
        let a = Hardening.stripTag(UInt(bitPattern: pointer))
        if let c = smallClass(ofUntagged: a) {
            Hardening.takeBack(pointer.unsafelyUnwrapped, sizeClass: c, operation: "free")
            return cacheFreed(RawPointer(bitPattern: a).unsafelyUnwrapped, c, ThreadCache.current)
        }
        guard let pointer else { return }
        deallocateSlow(pointer)
    }

    /// The class of the small block at untagged address `a`, from the
    /// segment map and the slice's class byte, or nil when the address is
    /// misaligned, outside the map, not in a small segment or not in a page
    /// of a class (the caller's slow path tells which). Free's and realloc's
    /// fast test.
    @inline(__always)
    static func smallClass(ofUntagged a: UInt) -> Int? {
        let chunk = a &>> UInt(Tuning.segmentShift)
        // 16-byte aligned and inside the map, in one test against one mask.
        if a & Allocator.outsideMapOrMisaligned == 0 && Globals.segmentMap[Int(bitPattern: chunk)] == 1 {
            let seg = RawPointer(bitPattern: a & ~UInt(Tuning.segmentBytes - 1)).unsafelyUnwrapped
            let c = Int(Segment.sliceClass(seg, Segment.sliceIndex(of: RawPointer(bitPattern: a).unsafelyUnwrapped)))
            if c < SizeClass.count { return c }
        }
        return nil
    }

    /// Puts block `p` of class `c`, taken back from the program, into cache
    /// `tc` (the slow path when its entry is full).
    @inline(__always)
    static func cacheFreed(_ p: RawPointer, _ c: Int, _ tc: RawPointer) {
        // The slow path gets the entry's offset and derives the class: the
        // fast path then keeps only the offset live.
        let offset = ThreadCache.entryOffset(c)
        if Variant.Cache.push(ThreadCache.hot(tc, entryOffset: offset), p) {
            Stats.freed(tc, entryOffset: offset)
            return
        }
        deallocateToFullCache(p, entryOffset: offset)
    }

    @inline(never)
    static func deallocateToFullCache(_ p: RawPointer, entryOffset: Int) {
        let saved = OS.errno
        ThreadCache.deallocate(p, ThreadCache.sizeClass(ofEntryOffset: entryOffset))
        OS.errno = saved
    }

    /// Large blocks and everything the fast path rejected.
    @inline(never)
    static func deallocateSlow(_ pointer: RawPointer) {
        let saved = OS.errno
        let p = Hardening.stripTag(pointer)
        switch classify(pointer, operation: "free") {
        case .small(let c):
            Hardening.takeBack(pointer, sizeClass: c, operation: "free")
            ThreadCache.deallocate(p, c)
        case .medium(let page):
            Medium.deallocate(p, page)
            Reclaimer.startIfWanted()
        case .large(let base):
            Large.deallocate(pointer, base: base)
            Reclaimer.startIfWanted()
        }
        OS.errno = saved
    }

    /// What `pointer` is, or a one-line message and abort if it is not a
    /// block we handed out (as far as address arithmetic can tell). The
    /// message names the pointer as the program passed it (tag included).
    static func classify(_ pointer: RawPointer, operation: StaticString) -> BlockKind {
        let p = Hardening.stripTag(pointer)
        let a = UInt(bitPattern: p)
        if a & 15 != 0 { Diagnostics.invalidPointer(pointer, operation: operation, reason: "misaligned: not a block start") }
        guard let base = Segment.owner(of: p) else {
            Diagnostics.invalidPointer(pointer, operation: operation, reason: "not allocated by AethAlloc")
        }
        let mark = Segment.sliceClass(base, 0)
        if mark == SizeClass.markLarge { return .large(base: base) }
        if mark != SizeClass.markHeader || Segment.kind(base) != SegmentHeader.kindSmall {
            Diagnostics.invalidPointer(pointer, operation: operation, reason: "corrupted allocator metadata")
        }
        let slice = Segment.sliceClass(base, Segment.sliceIndex(of: p))
        if Int(slice) < SizeClass.count { return .small(sizeClass: Int(slice)) }
        if slice == SizeClass.markMedium { return .medium(page: Medium.page(of: p, in: base, operation: operation)) }
        Diagnostics.invalidPointer(pointer, operation: operation, reason: "not inside a live page")
    }

    // ---- the rest of the family -------------------------------------------------

    static func allocateZeroed(count: UInt, size: UInt) -> RawPointer? {
        let (total, overflow) = count.multipliedReportingOverflow(by: size)
        if overflow || total > maxRequest { return outOfMemory() }
        if total > UInt(Tuning.maxSmallBytes) {
            return allocateAboveClasses(size: Int(bitPattern: total), alignment: 16, zeroed: true)
        }
        guard let p = allocate(total) else { return nil }
        if !Hardening.handsOutZeroed { OS.zero(p, bytes: Int(bitPattern: total)) }
        return p
    }

    /// realloc: a success (or realloc(p, 0), which frees) leaves errno as it
    /// was; a failure sets ENOMEM and leaves `p` intact.
    ///
    /// Fast path: a small block asked to hold at most 1 KiB, which either
    /// stays put or moves to a block its thread cache holds. It validates the
    /// pointer as free's fast path does and calls nothing that can set errno;
    /// the rest (an empty cache entry, medium and large blocks, anything the
    /// tests reject) takes `reallocateSlow`. Programs that grow strings and
    /// arrays a step at a time realloc about as often as they free (Perl:
    /// 50k reallocs, 43k of them moves, against 181k frees on
    /// benches/pl_hash_churn.pl).
    @inline(__always)
    static func reallocate(_ pointer: RawPointer?, _ n: UInt) -> RawPointer? {
        let a = Hardening.stripTag(UInt(bitPattern: pointer))
        // n in [1, 1 KiB]: n == 0 frees, and wraps around to fail the test.
        if let c = smallClass(ofUntagged: a), n &- 1 < UInt(Tuning.smallTableMaxBytes) {
            let old = pointer.unsafelyUnwrapped
            Hardening.checkLive(old, operation: "realloc")
            let usable = UInt(bitPattern: Globals.classInfo(c).pointee.blockSize)
            if staysPut(n, usable: usable) { return old }
            let tc = ThreadCache.current
            if let new = takeCached(tc, entryOffset: SizeClass.entryOffset(ofSmall: n)) {
                OS.copy(new, old, bytes: Int(bitPattern: Swift.min(usable, n)))
                Hardening.takeBack(old, sizeClass: c, operation: "realloc")
                cacheFreed(RawPointer(bitPattern: a).unsafelyUnwrapped, c, tc)
                return new
            }
        }
        return reallocateSlow(pointer, n)
    }

    /// Whether a small block of `usable` bytes keeps a request of `n`: it
    /// fits, and the block would not be more than half empty.
    @inline(__always)
    static func staysPut(_ n: UInt, usable: UInt) -> Bool {
        n <= usable && (n > usable / 2 || usable <= 32)
    }

    @inline(never)
    static func reallocateSlow(_ p: RawPointer?, _ n: UInt) -> RawPointer? {
        let saved = OS.errno
        let q = resize(p, n)
        if q != nil || (p != nil && n == 0) { OS.errno = saved }
        return q
    }

    private static func resize(_ p: RawPointer?, _ n: UInt) -> RawPointer? {
        guard let p else { return allocate(n) }
        if n == 0 {
            deallocate(p)
            return nil
        }
        if n > maxRequest {
            _ = classify(p, operation: "realloc")
            return outOfMemory()
        }
        let size = Int(bitPattern: n)
        let usable: Int
        switch classify(p, operation: "realloc") {
        case .small(let c):
            Hardening.checkLive(p, operation: "realloc")
            usable = Globals.classInfo(c).pointee.blockSize
            // Stay put unless the block would be more than half empty.
            if staysPut(n, usable: UInt(usable)) { return p }
        case .medium(let page):
            usable = Medium.usableSize(page)
            if size <= usable && size > usable / 2 { return p }
            if size > usable && size <= Options.mediumMaxBytes && Medium.grow(page, to: size) { return p }
        case .large(let base):
            usable = Large.usableSize(p, base: base, operation: "realloc")
            if size > Tuning.maxSmallBytes, let q = Large.reallocate(p, base: base, size: size) { return q }
        }
        // A block that must move while growing gets 25% headroom, so a
        // buffer growing in small steps does not copy at every step.
        var request = n
        if size > usable && usable > Tuning.maxSmallBytes / 2 {
            request = max(n, UInt(usable + usable / 4))
        }
        let growing = size > usable && request > UInt(Tuning.maxSmallBytes)
        let first = growing
            ? allocateAboveClasses(size: Int(bitPattern: request), alignment: 16, zeroed: false, growing: true)
            : allocate(request)
        // No memory for a smaller copy: the block stays where it is.
        guard let q = first ?? (request != n ? allocate(n) : nil) else { return size <= usable ? p : nil }
        OS.copy(q, p, bytes: min(usable, size))
        deallocate(p)
        return q
    }

    static func reallocateArray(_ p: RawPointer?, count: UInt, size: UInt) -> RawPointer? {
        let (total, overflow) = count.multipliedReportingOverflow(by: size)
        if overflow { return outOfMemory() }
        return reallocate(p, total)
    }

    /// A block of `n` bytes aligned to `alignment`, a power of two.
    static func allocateAligned(_ alignment: UInt, _ n: UInt) -> RawPointer? {
        if alignment <= 16 { return allocate(n) }
        if n > maxRequest || alignment > maxRequest / 2 { return outOfMemory() }
        Runtime.ensureInitialized()
        let size = Int(bitPattern: n)
        let align = Int(bitPattern: alignment)
        if align <= Tuning.sliceBytes && size <= Tuning.maxSmallBytes {
            let c = SizeClass.alignedIndex(from: SizeClass.index(of: max(size, align)), alignment: align)
            // The request is the class's block size: it maps back to `c`.
            return allocate(sizeClass: c, request: UInt(Globals.classInfo(c).pointee.blockSize))
        }
        return allocateAboveClasses(size: size, alignment: align, zeroed: false)
    }

    static func usableSize(_ p: RawPointer?) -> UInt {
        guard let p else { return 0 }
        switch classify(p, operation: "malloc_usable_size") {
        case .small(let c):
            Hardening.checkLive(p, operation: "malloc_usable_size")
            return UInt(Globals.classInfo(c).pointee.blockSize)
        case .medium(let page): return UInt(Medium.usableSize(page))
        case .large(let base): return UInt(Large.usableSize(p, base: base, operation: "malloc_usable_size"))
        }
    }
}

// The slow paths malloc's fast path ends in, under the C calling convention
// like the exported entry points: the fast path reaches them with a tail
// jump, so it needs no stack frame of its own (a Swift-convention callee
// would need a call, and with it a frame). Not exported (exports.map).
@c(aethalloc_allocate_slow) @inline(never)
func aethalloc_allocate_slow(_ n: UInt, _ c: Int) -> RawPointer? { Allocator.allocateSlow(n, c) }

@c(aethalloc_allocate_above_1k) @inline(never)
func aethalloc_allocate_above_1k(_ n: UInt) -> RawPointer? { Allocator.allocateAbove1K(n) }
