// Arena.swift: memory for the allocator's own metadata.
//
// Magazines and thread caches are carved from 1 MiB mmap'd chunks with a bump
// pointer under a lock. Nothing carved here is ever unmapped: freed magazines
// go to the empty-magazine stack and freed thread caches to the registry's
// free list. That is what makes the lock-free stacks safe to read: a node
// popped by another thread is still mapped memory (see TaggedStack).

struct MetadataArena: ~Copyable {
    var cursor: UInt
    var end: UInt
    var mappedBytes: Int

    static var lockWord: UnsafeMutablePointer<LockWord> {
        Globals.lock(Globals.arenaLock)
    }

    /// `bytes` of zeroed memory aligned to 64 bytes, or nil if the OS refuses.
    static func allocate(bytes: Int) -> RawPointer? {
        let size = UInt((bytes + 63) & ~63)
        let a = Globals.arena
        Lock.acquire(lockWord)
        defer { Lock.release(lockWord) }
        if a.pointee.cursor == 0 || a.pointee.end - a.pointee.cursor < size {
            let chunk = max(Tuning.arenaChunkBytes, Int(size))
            guard let p = OS.mapAligned(bytes: chunk, alignment: OS.pageBytes) else { return nil }
            Stats.metadataMapped(bytes: chunk)
            a.pointee.mappedBytes += chunk
            a.pointee.cursor = UInt(bitPattern: p)
            a.pointee.end = a.pointee.cursor + UInt(chunk)
        }
        let p = RawPointer(bitPattern: a.pointee.cursor)
        a.pointee.cursor += size
        return p
    }
}
