// Options.swift: run-time options, read from the environment once, at
// initialisation (getenv does not allocate). Their documentation is in the
// README's "Tuning" section; defaults live in Tuning.swift.
//
//   AETHALLOC_PURGE_DELAY_MS   how long freed slices may stay committed
//                              before madvise(MADV_DONTNEED) gives them
//                              back, checked when pages or medium blocks are
//                              carved or freed: N ms (default 1000), 0 = at
//                              once, -1 = no time limit (dirty budget and
//                              malloc_trim only)
//   AETHALLOC_DIRTY_PERCENT    committed free slices kept, as a percentage
//                              of the heap in use (default 25; medium
//                              blocks count twice, large blocks once; at
//                              least 256 KiB);
//                              beyond it a free purges down to half
//   AETHALLOC_STATS=1          print the metrics summary at exit (metrics variant)

enum Options {
    @inline(__always) static var purgeDelayMs: Int { Globals.process.pointee.purgeDelayMs }
    @inline(__always) static var dirtyPercent: Int { Globals.process.pointee.dirtyPercent }

    /// Reads the environment into ProcessState (during initialisation).
    static func load() {
        let state = Globals.process
        state.pointee.purgeDelayMs = integer("AETHALLOC_PURGE_DELAY_MS") ?? Tuning.defaultPurgeDelayMs
        let percent = integer("AETHALLOC_DIRTY_PERCENT") ?? Tuning.defaultDirtyPercent
        state.pointee.dirtyPercent = min(max(percent, 0), 1000)
    }

    /// A decimal integer variable, optionally negative; nil if unset or malformed.
    static func integer(_ name: StaticString) -> Int? {
        guard let raw = OS.environment(name) else { return nil }
        var p = UnsafeRawPointer(raw).assumingMemoryBound(to: UInt8.self)
        var negative = false
        if p.pointee == 0x2D { negative = true; p += 1 }
        var value = 0
        var digits = 0
        while p.pointee >= 0x30 && p.pointee <= 0x39 && digits < 12 {
            value = value * 10 + Int(p.pointee - 0x30)
            p += 1
            digits += 1
        }
        if digits == 0 || p.pointee != 0 { return nil }
        return negative ? -value : value
    }
}
