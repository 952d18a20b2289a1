// SizeClasses.swift: the size-class table, its only home.
//
// Classes are multiples of 16 bytes (so every block is 16-byte aligned):
//
//   class  0..7 : 16, 32, 48, ..., 128            (step 16)
//   class  8..  : four classes per power of two:  (2^e, 2^(e+1)] is split into
//                 2^e + k * 2^(e-2), k = 1...4     e.g. 160 192 224 256 | 320 ...
//   class 43    : 65536
//
// Every power of two from 16 to 64 KiB is a class, which the aligned path uses:
// a page starts 64 KiB-aligned, so blocks of a class whose size is a multiple
// of A are A-aligned. The worst rounding loss above 128 bytes is 25%.

enum SizeClass {
    /// Number of classes; class indices are 0..<count.
    static let count = 44
    /// The smallest class, and the step every class size is a multiple of.
    static let minBlockBytes = 16
    /// Marks in a segment's slice-class byte map that are not classes.
    static let markMedium: UInt8 = 0xFC
    static let markFree: UInt8 = 0xFD
    static let markHeader: UInt8 = 0xFE
    static let markLarge: UInt8 = 0xFF

    /// Class for a request of `size` bytes, `size <= Tuning.maxSmallBytes`.
    /// Sizes up to 1 KiB use the table in `Globals`; above, the formula.
    @inline(__always)
    static func index(of size: Int) -> Int {
        if size <= Tuning.smallTableMaxBytes {
            return ThreadCache.sizeClass(ofEntryOffset: entryOffset(ofSmall: UInt(bitPattern: size)))
        }
        return computedIndex(of: size)
    }

    /// Where the class for a request of `n <= Tuning.smallTableMaxBytes`
    /// bytes has its thread-cache entry: one load from the table in `Globals`.
    @inline(__always)
    static func entryOffset(ofSmall n: UInt) -> Int {
        Int(Globals.sizeTable[Int(bitPattern: (n &+ 15) &>> 4)])
    }

    /// The class formula (valid for 1 <= size <= 64 KiB).
    @inline(__always)
    static func computedIndex(of size: Int) -> Int {
        if size <= 128 { return (max(size, 1) &+ 15) &>> 4 &- 1 }
        let s = size &- 1
        let e = (Int.bitWidth &- 1) &- s.leadingZeroBitCount  // floor(log2(s)), >= 7
        return 8 &+ (e &- 7) &* 4 &+ ((s &>> (e &- 2)) & 3)
    }

    /// Block size of class `c`, from the formula (tables are filled from it).
    static func computedBlockSize(_ c: Int) -> Int {
        if c < 8 { return (c + 1) * 16 }
        let e = 7 + (c - 8) / 4
        let k = (c - 8) % 4 + 1
        return (1 << e) + k * (1 << (e - 2))
    }

    /// Slices per page for class `c`: the smallest run that holds at least
    /// `minBlocksPerPage` blocks (when 16 slices allow it) and wastes at most
    /// 1/`pageWasteDivisor` of the page.
    static func computedPageSlices(_ c: Int) -> Int {
        let block = computedBlockSize(c)
        var k = 1
        while k < 16 {
            let bytes = k * Tuning.sliceBytes
            let blocks = bytes / block
            let waste = bytes - blocks * block
            if blocks >= Tuning.minBlocksPerPage && waste * Tuning.pageWasteDivisor <= bytes { break }
            k += 1
        }
        return k
    }

    /// Bytes between two colours of class `c`'s pages: a cache line, or the
    /// block's alignment (the largest power of two dividing its size; the
    /// aligned path relies on it) where that is larger.
    static func computedColourStep(_ c: Int) -> Int {
        let block = computedBlockSize(c)
        return max(Tuning.cacheLineBytes, block & -block)
    }

    /// Colours of class `c`'s pages: how many different offsets their first
    /// block starts at (1: always the page's first byte). Without them, every
    /// page's first blocks would sit 64 KiB apart, in the same cache sets: a
    /// program using the first few blocks of several classes (bignum) had 3x
    /// the L1 misses of staggered pages under callgrind.
    static func computedColours(_ c: Int) -> Int {
        let pageBytes = computedPageSlices(c) * Tuning.sliceBytes
        return min(Tuning.pageColours, pageBytes / Tuning.pageColourDivisor / computedColourStep(c) + 1)
    }

    /// Where the first block of a page of class `c` starts, from the page's
    /// first byte, for the page whose first slice is `headSlice`.
    @inline(__always)
    static func firstBlockOffset(_ info: UnsafeMutablePointer<ClassInfo>, sizeClass c: Int, headSlice: Int) -> Int {
        (c &+ headSlice) % info.pointee.colours &* info.pointee.colourStep
    }

    /// Blocks a page of class `c` holds after its largest colour offset.
    static func computedBlocksPerPage(_ c: Int) -> Int {
        let span = (computedColours(c) - 1) * computedColourStep(c)
        return (computedPageSlices(c) * Tuning.sliceBytes - span) / computedBlockSize(c)
    }

    /// ceil(2^64 / blockSize) for class `c` (ClassInfo.reciprocal).
    static func computedReciprocal(_ c: Int) -> UInt64 {
        UInt64.max / UInt64(computedBlockSize(c)) &+ 1
    }

    /// Blocks a thread magazine of class `c` holds.
    static func computedMagazineCapacity(_ c: Int) -> Int {
        let block = computedBlockSize(c)
        return max(1, min(Tuning.magazineSlots, Tuning.magazineMaxBlockBytes / block))
    }

    /// Full magazines of class `c` the depot keeps before draining to pages.
    static func computedDepotLimit(_ c: Int) -> Int {
        let bytes = computedBlockSize(c) * computedMagazineCapacity(c)
        return max(Tuning.depotMinMagazines, min(Tuning.depotMaxMagazines, Tuning.depotMaxBytesPerClass / bytes))
    }

    /// The same while no block of class `c` has travelled between threads.
    static func computedDepotUnsharedLimit(_ c: Int) -> Int {
        let bytes = computedBlockSize(c) * computedMagazineCapacity(c)
        return max(Tuning.depotMinMagazines, min(computedDepotLimit(c), Tuning.depotUnsharedBytesPerClass / bytes))
    }

    /// Blocks per batch of the simple variant: half its anti-hoarding
    /// threshold (the seed's 4096 blocks, fewer for large classes).
    static func computedSimpleBatch(_ c: Int) -> Int {
        let threshold = max(8, min(Tuning.simpleThresholdBlocks, Tuning.simpleThresholdBytes / computedBlockSize(c)))
        return threshold / 2
    }

    /// Complete batches the simple variant's global pool of class `c` keeps.
    static func computedSimplePoolLimit(_ c: Int) -> Int {
        max(2, Tuning.simplePoolMaxBytesPerClass / (computedBlockSize(c) * computedSimpleBatch(c)))
    }

    /// Smallest class at or above `c` whose block size is a multiple of
    /// `alignment` (a power of two <= 64 KiB). Always exists: powers of two are classes.
    static func alignedIndex(from c: Int, alignment: Int) -> Int {
        var k = c
        while k < count && Globals.classInfo(k).pointee.blockSize & (alignment - 1) != 0 { k += 1 }
        return k
    }
}

/// Per-class constants, computed once at initialisation into `Globals`.
struct ClassInfo {
    var blockSize: Int
    var pageSlices: Int
    var blocksPerPage: Int
    /// Page colours (SizeClass.computedColours) and the bytes between two.
    var colours: Int
    var colourStep: Int
    /// ceil(2^64 / blockSize). For an offset n < 2^32 in a page, the
    /// 128-bit product n * reciprocal gives both what `Central.drain` needs
    /// in one multiplication: its high half is n / blockSize, and its low
    /// half is below `reciprocal` exactly when blockSize divides n (Lemire,
    /// Kaser and Kurz, "Faster Remainder by Direct Computation", 2019: both
    /// hold for 32-bit n and divisor with a 64-bit reciprocal).
    var reciprocal: UInt64
    var magazineCapacity: Int
    var depotLimit: Int
    var depotUnsharedLimit: Int
    var simpleBatch: Int
    var simplePoolLimit: Int
}
