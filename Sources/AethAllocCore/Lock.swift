// Lock.swift: the one lock type of the core.
//
// A futex mutex after Drepper, "Futexes Are Tricky" (mutex 2): the word is
// 0 (unlocked), 1 (locked) or 2 (locked, maybe waiters). It spins briefly
// before sleeping. Zero bits are the unlocked state, so a lock in zeroed
// static or mmap'd memory needs no initialisation. Locks are only taken on
// slow paths (page, segment, large-span and metadata work), never on the
// malloc/free fast paths.
import CAethAlloc
import Synchronization

typealias LockWord = Atomic<UInt32>

enum Lock {
    @inline(__always)
    static func acquire(_ l: UnsafeMutablePointer<LockWord>) {
        if l.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return }
        acquireSlow(l)
    }

    @inline(never)
    static func acquireSlow(_ l: UnsafeMutablePointer<LockWord>) {
        for _ in 0..<100 {
            OS.cpuRelax()
            if l.pointee.load(ordering: .relaxed) == 0,
                l.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
            {
                return
            }
        }
        let raw = UnsafeMutableRawPointer(l).assumingMemoryBound(to: UInt32.self)
        while l.pointee.exchange(2, ordering: .acquiring) != 0 {
            OS.futexWait(raw, expected: 2)
        }
    }

    @inline(__always)
    static func release(_ l: UnsafeMutablePointer<LockWord>) {
        if l.pointee.exchange(0, ordering: .releasing) == 2 {
            OS.futexWakeOne(UnsafeMutableRawPointer(l).assumingMemoryBound(to: UInt32.self))
        }
    }

    /// In a fork child only one thread exists; whoever held the lock is gone.
    static func reset(_ l: UnsafeMutablePointer<LockWord>) {
        l.pointee.store(0, ordering: .relaxed)
    }
}
