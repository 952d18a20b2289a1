// White-box tests of the size-class table (SizeClasses.swift), on the core
// compiled in normal Swift (variants/hosted).
import Testing
@testable import AethAllocHosted

@Suite struct SizeClassTests {
    init() { Runtime.ensureInitialized() }

    @Test(arguments: 0..<SizeClass.count)
    func classIsConsistent(_ c: Int) {
        let info = Globals.classInfo(c).pointee
        #expect(info.blockSize == SizeClass.computedBlockSize(c))
        #expect(info.blockSize % 16 == 0, "every block is 16-byte aligned")
        #expect(SizeClass.index(of: info.blockSize) == c)
        if c > 0 {
            let below = SizeClass.computedBlockSize(c - 1)
            #expect(below < info.blockSize)
            #expect(SizeClass.index(of: below + 1) == c)
            // Rounding loss is at most 25% above 128 bytes, 15 bytes below.
            #expect(info.blockSize - (below + 1) <= max(15, info.blockSize / 4))
        }
        let pageBytes = info.pageSlices * Tuning.sliceBytes
        #expect(info.pageSlices >= 1 && info.pageSlices <= 16)
        // Colours: first blocks at offsets that keep them aligned as at the
        // slice boundary, a cache line apart at least, costing at most
        // 1/pageColourDivisor of the page.
        let lowestBit = info.blockSize & -info.blockSize
        let span = (info.colours - 1) * info.colourStep
        #expect(info.colours >= 1 && info.colours <= Tuning.pageColours)
        #expect(info.colourStep % lowestBit == 0 && info.colourStep % Tuning.cacheLineBytes == 0)
        #expect(span * Tuning.pageColourDivisor <= pageBytes)
        #expect(info.blocksPerPage == (pageBytes - span) / info.blockSize)
        var offsets = Set<Int>()
        for head in 0..<Tuning.slicesPerSegment {
            let offset = SizeClass.firstBlockOffset(Globals.classInfo(c), sizeClass: c, headSlice: head)
            #expect(offset % lowestBit == 0 && offset <= span)
            offsets.insert(offset)
        }
        #expect(offsets.count == info.colours, "every colour is used")
        // The free bitmap: in the PageMeta for up to 64 blocks, else in the
        // lines of the page's first slice in its segment's metadata.
        if info.blocksPerPage > PageMeta.inlineBitmapBlocks {
            #expect(PageMeta.bitmapWords(blocks: info.blocksPerPage) * 8 <= Segment.bitmapRowBytes)
        }
        #expect(info.reciprocal == UInt64.max / UInt64(info.blockSize) + 1)
        #expect(info.blocksPerPage >= 1)
        // SizeClass.computedPageSlices: the fewest slices (up to 16) giving
        // at least minBlocksPerPage blocks with at most 1/pageWasteDivisor of
        // the page lost to rounding. Every class reaches both before 16
        // slices, so both hold, and one slice fewer would miss one of them.
        func fits(_ slices: Int) -> Bool {
            let bytes = slices * Tuning.sliceBytes
            let blocks = bytes / info.blockSize
            return blocks >= Tuning.minBlocksPerPage && (bytes - blocks * info.blockSize) * Tuning.pageWasteDivisor <= bytes
        }
        #expect(fits(info.pageSlices), "\(info.pageSlices) slices of \(info.blockSize)-byte blocks waste too much")
        #expect(info.pageSlices == 1 || !fits(info.pageSlices - 1), "\(info.pageSlices - 1) slices would do")
        #expect(info.magazineCapacity >= 1 && info.magazineCapacity <= Tuning.magazineSlots)
        #expect(info.depotLimit >= Tuning.depotMinMagazines)
        // The unshared depot: between the minimum and the shared limit, and
        // past the minimum only as far as its byte budget reaches.
        let magazineBytes = info.magazineCapacity * info.blockSize
        #expect(info.depotUnsharedLimit >= Tuning.depotMinMagazines && info.depotUnsharedLimit <= info.depotLimit)
        #expect(
            info.depotUnsharedLimit == Tuning.depotMinMagazines
                || info.depotUnsharedLimit * magazineBytes <= Tuning.depotUnsharedBytesPerClass)
        #expect(
            info.depotUnsharedLimit == info.depotLimit
                || (info.depotUnsharedLimit + 1) * magazineBytes > Tuning.depotUnsharedBytesPerClass)
    }

    /// Central.drain takes a block's index and the interior-pointer test
    /// from one product with the reciprocal: both must be exact for every
    /// offset a page can hold, block starts and the bytes around them.
    @Test(arguments: 0..<SizeClass.count)
    func reciprocalGivesIndexAndBlockStart(_ c: Int) {
        let info = Globals.classInfo(c).pointee
        let size = info.blockSize
        let span = info.pageSlices * Tuning.sliceBytes
        var wrong = 0
        for q in 0..<(span / size) {
            for r in [0, 1, 15, 16, size / 2, size - 16, size - 1] where r < size {
                let n = q * size + r
                let (high, low) = info.reciprocal.multipliedFullWidth(by: UInt64(n))
                if Int(high) != q || (low < info.reciprocal) != (r == 0) { wrong += 1 }
            }
        }
        #expect(wrong == 0, "class \(c) (\(size) bytes)")
    }

    @Test func everySmallSizeMapsToTheSmallestFittingClass() {
        for size in 0...Tuning.maxSmallBytes {
            let c = SizeClass.index(of: size)
            #expect(c >= 0 && c < SizeClass.count)
            let block = SizeClass.computedBlockSize(c)
            if block < size || (c > 0 && SizeClass.computedBlockSize(c - 1) >= max(size, 1)) {
                Issue.record("size \(size) maps to class \(c) of \(block) bytes")
                return
            }
        }
    }

    @Test func tableAndFormulaAgree() {
        for size in 1...Tuning.smallTableMaxBytes {
            #expect(SizeClass.index(of: size) == SizeClass.computedIndex(of: size), "size \(size)")
        }
        #expect(SizeClass.index(of: 0) == 0)
        #expect(SizeClass.computedBlockSize(SizeClass.count - 1) == Tuning.maxSmallBytes)
    }

    @Test(arguments: [32, 64, 128, 256, 512, 1024, 4096, 16384, 65536])
    func alignedClassesExist(_ alignment: Int) {
        for size in [1, 17, alignment - 1, alignment, alignment + 1] where size <= Tuning.maxSmallBytes {
            let c = SizeClass.alignedIndex(from: SizeClass.index(of: max(size, alignment)), alignment: alignment)
            #expect(c < SizeClass.count)
            let block = SizeClass.computedBlockSize(c)
            #expect(block % alignment == 0 && block >= size)
        }
    }
}
