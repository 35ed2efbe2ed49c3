import PropertyBased
import Testing
@testable import TCPTrailCore

/// The compact TIME_WAIT table against a plain model: the same answers after
/// every operation, through index growth, deletions that shift probe runs,
/// pairs and endpoints shared by many connections, and queue compaction.
@Suite struct TimeWaitTableTests {
    struct Model {
        var live: [ConnectionID: (ends: UInt64, identity: ConnectionIdentity, order: Int)] = [:]
        var order = 0

        func onPair(_ id: ConnectionIdentity) -> ConnectionID? {
            live.values.first { samePair($0.identity, id) }?.identity.conn
        }

        func onEndpoint(_ id: ConnectionIdentity) -> Int {
            live.values.filter { $0.identity.netns == id.netns && $0.identity.local == id.local }.count
        }

        func samePair(_ a: ConnectionIdentity, _ b: ConnectionIdentity) -> Bool {
            a.netns == b.netns && a.local == b.local && a.remote == b.remote
        }
    }

    static func identity(_ rng: inout SplitMix64, connections: UInt64, ports: UInt16) -> ConnectionIdentity {
        let s = SocketSnapshot(cookie: UInt64.random(in: 1...connections, using: &rng), state: .timeWait, family: .ipv4,
                               local: Endpoint(address: RawAddress(bytes: [198, 18, 0, UInt8.random(in: 1...2, using: &rng)]), port: UInt16.random(in: 1...ports, using: &rng)),
                               remote: Endpoint(address: RawAddress(bytes: [198, 18, 1, 1]), port: UInt16.random(in: 1...ports, using: &rng)),
                               inode: 0, netns: UInt32.random(in: 1...2, using: &rng), expiresMilliseconds: 0)
        return ConnectionIdentity(cookie: s.cookie, snapshot: s)
    }

    @Test func answersAsAPlainModelDoes() async {
        await propertyCheck(count: 24, input: Gen.int(in: 0...Int(Int32.max))) { seed in
            var rng = SplitMix64(state: UInt64(seed))
            // Small spaces collide pairs and share endpoints; large ones grow the indexes.
            let connections = [UInt64(40), 600, 6000][seed % 3]
            let ports = [UInt16(3), 12, 200][(seed / 3) % 3]
            var table = TimeWaitTable()
            var model = Model()
            var now: UInt64 = 1_000
            for _ in 0..<12_000 {
                now += UInt64.random(in: 0...3, using: &rng)
                switch UInt8.random(in: 0..<10, using: &rng) {
                case 0..<5:
                    let id = Self.identity(&rng, connections: connections, ports: ports)
                    // As the engine does: the TIME_WAIT on the same pair ends first.
                    if let old = table.connection(onPairOf: id), old != id.conn {
                        #expect(model.onPair(id) == old)
                        let gone = table.remove(old)
                        model.live[old] = nil
                        #expect(gone?.leftOnEndpoint == model.onEndpoint(id))
                    } else {
                        #expect(model.onPair(id) == nil || model.onPair(id) == id.conn)
                    }
                    model.live[id.conn] = nil
                    let ends = now + 60
                    model.live[id.conn] = (ends, id, model.order)
                    model.order += 1
                    #expect(table.insert(id, ends: ends) == model.onEndpoint(id))
                case 5..<8:
                    let conn = ConnectionID(cookie: UInt64.random(in: 1...connections, using: &rng))
                    let removed = table.remove(conn)
                    let expected = model.live.removeValue(forKey: conn)
                    #expect(removed?.identity == expected?.identity)
                    if let expected { #expect(removed?.leftOnEndpoint == model.onEndpoint(expected.identity)) }
                default:
                    while true {
                        let due = model.live.values.filter { $0.ends <= now }.min { $0.order < $1.order }
                        let got = table.removeExpired(by: now)
                        #expect(got?.identity == due?.identity && got?.ends == due?.ends)
                        guard let due else { break }
                        model.live[due.identity.conn] = nil
                        #expect(got?.leftOnEndpoint == model.onEndpoint(due.identity))
                    }
                }
                #expect(table.count == model.live.count)
            }
            for cookie in 1...connections {
                #expect(table.contains(ConnectionID(cookie: cookie)) == (model.live[ConnectionID(cookie: cookie)] != nil))
            }
            let next = model.live.values.min { $0.order < $1.order }?.ends
            if let next { #expect(table.nextExpiry.map { $0 <= next } == true) }
        }
    }
}
