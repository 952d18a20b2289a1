// Options.swift: run-time options, read from the environment once, at
// initialisation (the first malloc of the process). Their documentation is
// the README's "Tuning" table; defaults live in Tuning.swift.
//
//   AETHALLOC_PURGE_DELAY_MS   -1 ... 86400000 (default 1000): how long freed
//                              slices may stay committed; 0 = at once, -1 =
//                              no time limit (dirty budget and malloc_trim)
//   AETHALLOC_DIRTY_PERCENT    0 ... 1000 (default 25): committed free slices
//                              kept, as a percentage of the heap in use
//   AETHALLOC_MEDIUM_CACHE     0/1, true/false, yes/no (default 1): keep
//                              freed blocks of 64 KiB-1 MiB whole for the
//                              next request of the same size (MediumCache.swift)
//   AETHALLOC_STATS            0/1, true/false, yes/no: print the heap
//                              figures (and, in the metrics variant, the
//                              operation counters) at exit
//   AETHALLOC_STATS_DIR        where the metrics variant publishes (Publish.swift)
//   AETHALLOC_VERBOSE          0/1, true/false, yes/no: print the variant and
//                              the effective options at start-up
//   AETHALLOC_BACKGROUND       auto (default), 1, 0: the background reclaimer
//                              (Reclaim.swift); 0 keeps the inline policy
//   AETHALLOC_MTE              sync (default; also 1), async, 0: memory
//                              tagging in the hardened variant on aarch64 with
//                              MTE (Hardening.swift); read by startTagging
//
// Every variable is parsed whole. A malformed or out-of-range value gets one
// line on stderr naming the variable, the value and what is accepted, and
// the default is used; an AETHALLOC_* name that is none of the above (a
// typo) gets one warning line. Parsing and printing use no allocation: the
// environment is read with getenv and by walking `environ`.

/// AETHALLOC_BACKGROUND.
enum BackgroundMode: UInt8 {
    /// Never: the inline policy only.
    case off = 0
    /// Once `Tuning.backgroundStartBytes` of freed memory wait.
    case auto = 1
    /// At the first freed byte that waits.
    case always = 2
}

enum Options {
    @inline(__always) static var purgeDelayMs: Int { Globals.process.pointee.purgeDelayMs }
    @inline(__always) static var dirtyPercent: Int { Globals.process.pointee.dirtyPercent }
    /// The dirty budget's floor (Tuning.dirtyMinBytes; mallopt M_TRIM_THRESHOLD).
    @inline(__always) static var dirtyMinBytes: Int { Globals.process.pointee.dirtyMinBytes }
    /// The largest medium block (Tuning.mediumMaxBytes; mallopt M_MMAP_THRESHOLD).
    @inline(__always) static var mediumMaxBytes: Int { Globals.process.pointee.mediumMaxBytes }
    @inline(__always) static var background: BackgroundMode { Globals.process.pointee.background }
    @inline(__always) static var mediumCache: Bool { Globals.process.pointee.mediumCache }

    /// Reads the environment into ProcessState (during initialisation).
    static func load() {
        let state = Globals.process
        state.pointee.purgeDelayMs = integer(
            "AETHALLOC_PURGE_DELAY_MS", in: -1...86_400_000, default: Tuning.defaultPurgeDelayMs,
            accepted: "an integer from -1 to 86400000 (ms)")
        state.pointee.dirtyPercent = integer(
            "AETHALLOC_DIRTY_PERCENT", in: 0...1000, default: Tuning.defaultDirtyPercent,
            accepted: "an integer from 0 to 1000 (%)")
        state.pointee.mediumCache = boolean("AETHALLOC_MEDIUM_CACHE", default: true)
        state.pointee.printStatsAtExit = boolean("AETHALLOC_STATS")
        state.pointee.verbose = boolean("AETHALLOC_VERBOSE")
        state.pointee.background = backgroundMode()
        state.pointee.dirtyMinBytes = Tuning.dirtyMinBytes
        state.pointee.mediumMaxBytes = Tuning.mediumMaxBytes
        warnAboutUnknownNames()
        if state.pointee.verbose { printEffective() }
    }

    // ---- parsing ---------------------------------------------------------------

    /// The variable's value as a decimal integer in `range`; unset gives the
    /// default silently, anything else not in range gives the default and
    /// one line naming what is accepted.
    static func integer(_ name: StaticString, in range: ClosedRange<Int>, default value: Int, accepted: StaticString) -> Int {
        guard let raw = OS.environment(name) else { return value }
        if let v = parseInteger(raw), range.contains(v) { return v }
        complain(name, raw, accepted: accepted, usingDecimal: value, orWord: nil)
        return value
    }

    /// auto, 1 (true, yes) or 0 (false, no). The hosted white-box build
    /// defaults to 0: its tests drive the reclaimer's steps themselves.
    static func backgroundMode() -> BackgroundMode {
        let fallback: BackgroundMode = Variant.injectsFaults ? .off : .auto
        guard let raw = OS.environment("AETHALLOC_BACKGROUND") else { return fallback }
        if equalsIgnoringCase(raw, "auto") { return .auto }
        if let v = parseBoolean(raw) { return v ? .always : .off }
        complain("AETHALLOC_BACKGROUND", raw, accepted: "auto, 1 or 0", usingDecimal: nil, orWord: "auto")
        return fallback
    }

    /// AETHALLOC_MTE: 1 synchronous (the default; also sync, true, yes), 2
    /// asynchronous (async), 0 off (also false, no).
    static func memoryTaggingMode() -> Int {
        guard let raw = OS.environment("AETHALLOC_MTE") else { return 1 }
        if equalsIgnoringCase(raw, "sync") { return 1 }
        if equalsIgnoringCase(raw, "async") { return 2 }
        if let v = parseBoolean(raw) { return v ? 1 : 0 }
        complain("AETHALLOC_MTE", raw, accepted: "sync, async or 0", usingDecimal: nil, orWord: "sync")
        return 1
    }

    /// 1/true/yes or 0/false/no (any case); unset gives the default.
    static func boolean(_ name: StaticString, default value: Bool = false) -> Bool {
        guard let raw = OS.environment(name) else { return value }
        if let v = parseBoolean(raw) { return v }
        complain(name, raw, accepted: "0, 1, true, false, yes or no", usingDecimal: nil, orWord: value ? "1" : "0")
        return value
    }

    /// A decimal integer, optionally negative, with nothing around it.
    static func parseInteger(_ raw: UnsafePointer<CChar>) -> Int? {
        var p = UnsafeRawPointer(raw).assumingMemoryBound(to: UInt8.self)
        var negative = false
        if p.pointee == 0x2D {
            negative = true
            p += 1
        }
        var value = 0
        var digits = 0
        while p.pointee >= 0x30 && p.pointee <= 0x39 {
            if digits >= 15 { return nil }  // beyond any accepted range; no overflow
            value = value * 10 + Int(p.pointee - 0x30)
            p += 1
            digits += 1
        }
        if digits == 0 || p.pointee != 0 { return nil }
        return negative ? -value : value
    }

    static func parseBoolean(_ raw: UnsafePointer<CChar>) -> Bool? {
        if equalsIgnoringCase(raw, "1") || equalsIgnoringCase(raw, "true") || equalsIgnoringCase(raw, "yes") { return true }
        if equalsIgnoringCase(raw, "0") || equalsIgnoringCase(raw, "false") || equalsIgnoringCase(raw, "no") { return false }
        return nil
    }

    /// Whether C string `raw` equals `word` (ASCII, any case).
    static func equalsIgnoringCase(_ raw: UnsafePointer<CChar>, _ word: StaticString) -> Bool {
        let w = word.utf8Start
        var i = 0
        while i < word.utf8CodeUnitCount {
            let a = UInt8(bitPattern: raw[i])
            if a == 0 || (a | 0x20) != (w[i] | 0x20) { return false }
            i += 1
        }
        return raw[i] == 0
    }

    // ---- messages ----------------------------------------------------------------

    /// "aethalloc: AETHALLOC_X=value is not valid (accepted: ...); using N"
    private static func complain(
        _ name: StaticString, _ raw: UnsafePointer<CChar>, accepted: StaticString, usingDecimal: Int?, orWord: StaticString?
    ) {
        var line = LineBuffer()
        line.append("aethalloc: ")
        line.append(name)
        line.append("=")
        var i = 0
        while raw[i] != 0 && i < 64 {
            line.append(byte: UInt8(bitPattern: raw[i]))
            i += 1
        }
        if raw[i] != 0 { line.append("...") }
        line.append(" is not valid (accepted: ")
        line.append(accepted)
        line.append("); using ")
        if let v = usingDecimal {
            if v < 0 { line.append("-") }
            line.appendDecimal(UInt(v.magnitude))
        } else if let w = orWord {
            line.append(w)
        }
        line.append("\n")
        line.write()
    }

    /// One line for each AETHALLOC_* variable the project does not know.
    private static func warnAboutUnknownNames() {
        var i = 0
        while let entry = OS.environmentEntry(i) {
            i += 1
            if !hasPrefix(entry, "AETHALLOC_") || isKnown(entry) { continue }
            var line = LineBuffer()
            line.append("aethalloc: ignoring unknown variable ")
            var k = 0
            while entry[k] != 0 && entry[k] != 0x3D && k < 80 {
                line.append(byte: UInt8(bitPattern: entry[k]))
                k += 1
            }
            line.append(" (not an AethAlloc option: see the README's Tuning table)\n")
            line.write()
        }
    }

    /// The names the library reads, and those of the tools around it
    /// (aethalloc-cli and the test suite), which are not typos either.
    private static func isKnown(_ entry: UnsafePointer<CChar>) -> Bool {
        isName(entry, "AETHALLOC_PURGE_DELAY_MS") || isName(entry, "AETHALLOC_DIRTY_PERCENT")
            || isName(entry, "AETHALLOC_MEDIUM_CACHE")
            || isName(entry, "AETHALLOC_STATS") || isName(entry, "AETHALLOC_STATS_DIR")
            || isName(entry, "AETHALLOC_VERBOSE") || isName(entry, "AETHALLOC_BACKGROUND")
            || isName(entry, "AETHALLOC_MTE")
            // Tools and tests:
            || isName(entry, "AETHALLOC_LIB_DIR") || isName(entry, "AETHALLOC_KEEP_TEST_FILES")
            || isName(entry, "AETHALLOC_SOAK_SECONDS") || isName(entry, "AETHALLOC_SOAK_THREADS")
            || isName(entry, "AETHALLOC_FUZZ_SECONDS") || isName(entry, "AETHALLOC_FUZZ_SEEDS")
            || isName(entry, "AETHALLOC_FUZZ_ITERATIONS") || isName(entry, "AETHALLOC_REDIS_REQUESTS")
            || isName(entry, "AETHALLOC_PYTHON_TESTS")
            || isName(entry, "AETHALLOC_AARCH64_LIB_DIR") || isName(entry, "AETHALLOC_AARCH64_OUT")
            || isName(entry, "AETHALLOC_QEMU_AARCH64")
    }

    /// Whether "NAME=value" entry `entry` is variable `name`.
    private static func isName(_ entry: UnsafePointer<CChar>, _ name: StaticString) -> Bool {
        hasPrefix(entry, name) && entry[name.utf8CodeUnitCount] == 0x3D
    }

    private static func hasPrefix(_ s: UnsafePointer<CChar>, _ prefix: StaticString) -> Bool {
        let p = prefix.utf8Start
        for i in 0..<prefix.utf8CodeUnitCount where UInt8(bitPattern: s[i]) != p[i] { return false }
        return true
    }

    /// AETHALLOC_VERBOSE=1: the variant and the effective options.
    private static func printEffective() {
        var line = LineBuffer.summary()
        line.append(" options: AETHALLOC_PURGE_DELAY_MS=")
        if purgeDelayMs < 0 { line.append("-") }
        line.appendDecimal(UInt(purgeDelayMs.magnitude))
        line.append(" AETHALLOC_DIRTY_PERCENT=")
        line.appendDecimal(UInt(dirtyPercent))
        line.append(" AETHALLOC_MEDIUM_CACHE=")
        line.append(mediumCache ? "1" : "0")
        line.append(" AETHALLOC_STATS=")
        line.append(Globals.process.pointee.printStatsAtExit ? "1" : "0")
        line.append(" AETHALLOC_BACKGROUND=")
        switch background {
        case .off: line.append("0")
        case .auto: line.append("auto")
        case .always: line.append("1")
        }
        line.append(" statistics=")
        line.append(Variant.statsEnabled ? "on" : "off")
        line.append(" hardened=")
        line.append(Variant.hardened ? "yes" : "no")
        line.append("\n")
        line.write()
    }
}
