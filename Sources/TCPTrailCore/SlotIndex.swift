/// An open-addressing hash index of slot numbers (linear probing, at most half
/// full, backward-shift deletion). The caller keeps the keys in its slots and
/// compares them through a closure.
///
/// A bucket is 8 bytes: the key's hash (low 32 bits) and its slot. Probes
/// compare hashes, so a lookup touches the caller's slot only for the key it
/// is after, and growing or deleting needs no key at all.
struct SlotIndex {
    private static let empty = UInt64.max
    private var buckets = [UInt64](repeating: SlotIndex.empty, count: 16)
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
    var allSlots: [Int32] { buckets.filter { $0 != Self.empty }.map { Self.slot($0) } }

    @inline(__always) private static func slot(_ bucket: UInt64) -> Int32 { Int32(truncatingIfNeeded: bucket) }
    @inline(__always) private static func hash32(_ bucket: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: bucket >> 32) }

    /// The slot whose key `matches`, looking from `hash`'s bucket.
    @inline(__always)
    func find(_ hash: Int, _ matches: (Int32) -> Bool) -> Int32? {
        let mask = buckets.count - 1
        let h = UInt32(truncatingIfNeeded: hash)
        var i = hash & mask
        while true {
            let b = buckets[i]
            if b == Self.empty { return nil }
            if Self.hash32(b) == h && matches(Self.slot(b)) { return Self.slot(b) }
            i = (i + 1) & mask
        }
    }

    /// Adds a slot whose key is not in the index yet.
    mutating func insert(_ slot: Int32, hash: Int) {
        if (count + 1) * 2 > buckets.count { grow() }
        place(UInt64(UInt32(truncatingIfNeeded: hash)) << 32 | UInt64(UInt32(bitPattern: slot)))
        count += 1
    }

    /// Removes a slot (found from its key's `hash`), and moves back the slots
    /// after it that probed past it, so lookups need no tombstones.
    mutating func remove(_ slot: Int32, hash: Int) {
        let mask = buckets.count - 1
        var hole = hash & mask
        while true {
            let b = buckets[hole]
            if b == Self.empty { return }
            if Self.slot(b) == slot { break }
            hole = (hole + 1) & mask
        }
        buckets[hole] = Self.empty
        count -= 1
        var i = hole
        while true {
            i = (i + 1) & mask
            let moving = buckets[i]
            if moving == Self.empty { return }
            // `moving` may fill the hole unless its home lies cyclically in (hole, i].
            let home = Int(Self.hash32(moving)) & mask
            let homeAfterHole = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i)
            if !homeAfterHole {
                buckets[hole] = moving
                buckets[i] = Self.empty
                hole = i
            }
        }
    }

    private mutating func place(_ bucket: UInt64) {
        let mask = buckets.count - 1
        var i = Int(Self.hash32(bucket)) & mask
        while buckets[i] != Self.empty { i = (i + 1) & mask }
        buckets[i] = bucket
    }

    private mutating func grow() {
        let old = buckets
        buckets = [UInt64](repeating: Self.empty, count: old.count * 2)
        for b in old where b != Self.empty { place(b) }
    }
}
