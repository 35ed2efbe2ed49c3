/// The connections in TIME_WAIT, kept compact.
///
/// Under churn a host holds one TIME_WAIT per recently used address pair
/// (28,000 in the benchmark), and the engine finds them by connection and by
/// pair. Swift dictionaries holding whole identities took 11 MB there; here
/// the entries sit once in an array of slots, open-addressing indexes of
/// 8-byte buckets (`SlotIndex`) find them, and a queue in entry order says
/// when each 2MSL ends.
///
/// It also counts TIME_WAITs per local endpoint (for `time_wait_buildup`)
/// without a table entry per client port: an endpoint with one TIME_WAIT is
/// found through a third index; only endpoints that have had two at once (a
/// server's port) get a counter.
struct TimeWaitTable {
    private struct Entry {
        /// When 2MSL ends; `free` for a slot no connection holds.
        var ends: UInt64
        /// Which insert took the slot: queue items of an earlier holder differ.
        var insert: UInt32
        var identity: ConnectionIdentity
    }

    private static let free = UInt64.max
    private var entries: [Entry] = []
    private var freeSlots: [Int32] = []
    private var byConnection = SlotIndex()
    private var byPair = SlotIndex()
    /// Endpoints with exactly one TIME_WAIT and no counter, by that slot.
    private var byLoneEndpoint = SlotIndex()
    /// TIME_WAITs per local endpoint that has had two at once; dropped at zero.
    private var sharedEndpoints: [HandshakeEngine.EndpointKey: Int] = [:]
    /// Expiry order: every TIME_WAIT lasts 60 s from its entry (seeded ones come
    /// first, sorted), so entry order is expiry order. Items of slots that ended
    /// early, or were taken again since, no longer match the slot's `insert`.
    private var expiry: [(ends: UInt64, slot: Int32, insert: UInt32)] = []
    private var expiryHead = 0
    private var inserts: UInt32 = 0
    /// Per process, so a remote peer cannot choose ports that collide.
    private let seed = SlotIndex.randomSeed()

    /// Connections in TIME_WAIT now.
    var count: Int { byConnection.count }
    var isEmpty: Bool { byConnection.count == 0 }

    func contains(_ conn: ConnectionID) -> Bool { slot(of: conn) != nil }

    /// The connection in TIME_WAIT on the same address pair as `identity`.
    func connection(onPairOf identity: ConnectionIdentity) -> ConnectionID? {
        guard byPair.count > 0 else { return nil }
        let found = byPair.find(Self.pairHash(identity, seed)) { Self.samePair(entries[Int($0)].identity, identity) }
        return found.map { entries[Int($0)].identity.conn }
    }

    /// Starts a connection's TIME_WAIT; returns how many its local endpoint
    /// holds now. The engine ends the one on the same pair first: the kernel
    /// keeps one per pair.
    mutating func insert(_ identity: ConnectionIdentity, ends: UInt64) -> Int {
        if let old = slot(of: identity.conn) { _ = release(old) }
        inserts &+= 1
        // `free` marks an empty slot: a saturated deadline must not look like one.
        let ends = min(ends, Self.free - 1)
        let entry = Entry(ends: ends, insert: inserts, identity: identity)
        let slot: Int32
        if let reused = freeSlots.popLast() {
            slot = reused
            entries[Int(slot)] = entry
        } else {
            slot = Int32(entries.count)
            entries.append(entry)
        }
        byConnection.insert(slot, hash: Self.connectionHash(identity.conn, seed))
        byPair.insert(slot, hash: Self.pairHash(identity, seed))
        expiry.append((ends, slot, inserts))
        if expiry.count - expiryHead > 2 * count + 1024 { compactExpiry() }
        return countOnEndpoint(adding: slot)
    }

    /// Ends a connection's TIME_WAIT early: its identity, and how many TIME_WAITs
    /// its local endpoint holds after it; nil if it was in none.
    mutating func remove(_ conn: ConnectionID) -> (identity: ConnectionIdentity, leftOnEndpoint: Int)? {
        guard let slot = slot(of: conn) else { return nil }
        let identity = entries[Int(slot)].identity
        return (identity, release(slot))
    }

    /// When the next 2MSL ends, if any TIME_WAIT is left.
    var nextExpiry: UInt64? {
        expiryHead < expiry.count ? expiry[expiryHead].ends : nil
    }

    /// Removes the TIME_WAIT whose 2MSL ends first, if it ends at or before `now`.
    mutating func removeExpired(by now: UInt64) -> (identity: ConnectionIdentity, ends: UInt64, leftOnEndpoint: Int)? {
        while expiryHead < expiry.count, expiry[expiryHead].ends <= now {
            let (ends, slot, insert) = expiry[expiryHead]
            expiryHead += 1
            guard isLive(slot, insert) else { continue }
            let identity = entries[Int(slot)].identity
            return (identity, ends, release(slot))
        }
        if expiryHead > 4096 && expiryHead * 2 > expiry.count { compactExpiry() }
        return nil
    }

    // MARK: - Slots

    private func slot(of conn: ConnectionID) -> Int32? {
        guard byConnection.count > 0 else { return nil }
        return byConnection.find(Self.connectionHash(conn, seed)) { entries[Int($0)].identity.conn == conn }
    }

    /// Frees a slot; returns the TIME_WAITs left on its local endpoint.
    private mutating func release(_ slot: Int32) -> Int {
        let identity = entries[Int(slot)].identity
        let left = countOnEndpoint(removing: slot)
        byConnection.remove(slot, hash: Self.connectionHash(identity.conn, seed))
        byPair.remove(slot, hash: Self.pairHash(identity, seed))
        entries[Int(slot)].ends = Self.free
        freeSlots.append(slot)
        return left
    }

    // MARK: - Per local endpoint

    /// Counts a new slot on its local endpoint; returns the endpoint's count.
    private mutating func countOnEndpoint(adding slot: Int32) -> Int {
        let key = Self.endpoint(entries[Int(slot)].identity)
        if let n = sharedEndpoints[key] {
            sharedEndpoints[key] = n + 1
            return n + 1
        }
        let hash = Self.endpointHash(key, seed)
        guard let lone = byLoneEndpoint.find(hash, { Self.endpoint(entries[Int($0)].identity) == key }) else {
            byLoneEndpoint.insert(slot, hash: hash)
            return 1
        }
        byLoneEndpoint.remove(lone, hash: hash)
        sharedEndpoints[key] = 2
        return 2
    }

    /// Uncounts a slot that leaves; returns its endpoint's count after.
    private mutating func countOnEndpoint(removing slot: Int32) -> Int {
        let key = Self.endpoint(entries[Int(slot)].identity)
        if let n = sharedEndpoints[key] {
            sharedEndpoints[key] = n > 1 ? n - 1 : nil
            return n - 1
        }
        byLoneEndpoint.remove(slot, hash: Self.endpointHash(key, seed))
        return 0
    }

    private func isLive(_ slot: Int32, _ insert: UInt32) -> Bool {
        entries[Int(slot)].insert == insert && entries[Int(slot)].ends != Self.free
    }

    /// Drops the queue's items that no longer match their slot.
    private mutating func compactExpiry() {
        // In place: the queue's storage is kept, so steady churn allocates nothing.
        var kept = 0
        for i in expiryHead..<expiry.count where isLive(expiry[i].slot, expiry[i].insert) {
            expiry[kept] = expiry[i]
            kept += 1
        }
        expiry.removeLast(expiry.count - kept)
        expiryHead = 0
    }

    // MARK: - Keys

    private static func connectionHash(_ conn: ConnectionID, _ seed: UInt64) -> Int {
        SlotIndex.hash(conn, seed: seed)
    }

    private static func pairHash(_ id: ConnectionIdentity, _ seed: UInt64) -> Int {
        let addresses = id.local.address.high &* 0x9E37_79B9_7F4A_7C15 ^ id.local.address.low
            ^ id.remote.address.high &* 0xC2B2_AE3D_27D4_EB4F ^ id.remote.address.low
        return SlotIndex.mix(addresses ^ (UInt64(id.local.port) << 16 | UInt64(id.remote.port) | UInt64(id.netns) << 32) ^ seed)
    }

    private static func endpoint(_ id: ConnectionIdentity) -> HandshakeEngine.EndpointKey {
        HandshakeEngine.EndpointKey(netns: id.netns, address: id.local.address, port: id.local.port)
    }

    private static func endpointHash(_ key: HandshakeEngine.EndpointKey, _ seed: UInt64) -> Int {
        SlotIndex.mix(key.address.high &* 0x9E37_79B9_7F4A_7C15 ^ key.address.low ^ (UInt64(key.port) | UInt64(key.netns) << 16) ^ seed)
    }

    private static func samePair(_ a: ConnectionIdentity, _ b: ConnectionIdentity) -> Bool {
        a.local == b.local && a.remote == b.remote && a.netns == b.netns
    }

}
