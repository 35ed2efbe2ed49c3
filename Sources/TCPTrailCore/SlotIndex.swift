/// An open-addressing hash index of slot numbers (linear probing, at most half
/// full, backward-shift deletion). The caller keeps the keys in its slots, and
/// hashes and compares them through closures.
struct SlotIndex {
    private var buckets = [Int32](repeating: -1, count: 16)
    private(set) var count = 0

    /// A seed per process, so that a remote peer cannot choose addresses and
    /// ports whose hashes collide.
    static func randomSeed() -> UInt64 { UInt64.random(in: 1 ... .max) }

    /// A multiply-xorshift mix (murmur3's finalizer): cheap, and spreads
    /// kernel counters (cookies) and port pairs over the buckets.
    @inline(__always)
    static func mix(_ value: UInt64) -> Int {
        var x = value
        x = (x ^ (x >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        x = (x ^ (x >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        return Int(truncatingIfNeeded: x ^ (x >> 33))
    }

    @inline(__always)
    static func hash(_ conn: ConnectionID, seed: UInt64) -> Int {
        mix(conn.cookie ^ UInt64(conn.generation) &* 0x9E37_79B9_7F4A_7C15 ^ seed)
    }

    /// Every slot in the index, in bucket order.
    var allSlots: [Int32] { buckets.filter { $0 >= 0 } }

    /// The slot whose key `matches`, looking from `hash`'s bucket.
    func find(_ hash: Int, _ matches: (Int32) -> Bool) -> Int32? {
        let mask = buckets.count - 1
        var i = hash & mask
        while true {
            let slot = buckets[i]
            if slot < 0 { return nil }
            if matches(slot) { return slot }
            i = (i + 1) & mask
        }
    }

    /// Adds a slot whose key is not in the index yet.
    mutating func insert(_ slot: Int32, hash: Int, rehash: (Int32) -> Int) {
        if (count + 1) * 2 > buckets.count { grow(rehash) }
        let mask = buckets.count - 1
        var i = hash & mask
        while buckets[i] >= 0 { i = (i + 1) & mask }
        buckets[i] = slot
        count += 1
    }

    /// Removes a slot (found from its key's `hash`), and moves back the slots
    /// after it that probed past it, so lookups need no tombstones.
    mutating func remove(_ slot: Int32, hash: Int, rehash: (Int32) -> Int) {
        let mask = buckets.count - 1
        var hole = hash & mask
        while buckets[hole] != slot {
            if buckets[hole] < 0 { return }
            hole = (hole + 1) & mask
        }
        buckets[hole] = -1
        count -= 1
        var i = hole
        while true {
            i = (i + 1) & mask
            let moving = buckets[i]
            if moving < 0 { return }
            // `moving` may fill the hole unless its home lies cyclically in (hole, i].
            let home = rehash(moving) & mask
            let homeAfterHole = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i)
            if !homeAfterHole {
                buckets[hole] = moving
                buckets[i] = -1
                hole = i
            }
        }
    }

    private mutating func grow(_ rehash: (Int32) -> Int) {
        let old = buckets
        buckets = [Int32](repeating: -1, count: old.count * 2)
        let mask = buckets.count - 1
        for slot in old where slot >= 0 {
            var i = rehash(slot) & mask
            while buckets[i] >= 0 { i = (i + 1) & mask }
            buckets[i] = slot
        }
    }
}
