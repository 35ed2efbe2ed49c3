import Testing
@testable import TCPTrailCore

/// The text's anomaly rate limit: per kind and shared endpoint, 1 s windows.
struct AnomalyRateLimitTests {
    static func identity(_ conn: UInt64, local: UInt16, remote: UInt16, pid: UInt32 = 812) -> ConnectionIdentity {
        let address = RawAddress(bytes: [127, 0, 0, 1])
        return ConnectionIdentity(conn: ConnectionID(cookie: conn, generation: 0), owner: Owner(pid: pid, comm: ProcessName("nginx")),
                                  thread: ProcessName("nginx"), ownerKnown: true, netns: 1, family: .ipv4,
                                  local: Endpoint(address: address, port: local), remote: Endpoint(address: address, port: remote))
    }

    static func anomaly(_ kind: Anomaly.Kind, _ id: ConnectionIdentity, at ms: UInt64) -> Anomaly {
        Anomaly(kind: kind, severity: .warning, detail: "d", monoNanoseconds: ms * 1_000_000, connection: id)
    }

    @Test func aFloodShowsFiveASecondAndCountsTheRest() {
        var limit = AnomalyRateLimit(perSecond: 5)
        limit.note(.snapshot(Self.identity(1, local: 8081, remote: 0), state: .listen, kernel: .listen, mono: 0, expires: 0))
        var shown = 0
        var bursts: [AnomalyRateLimit.Burst] = []
        // 3,000 in 3 s from as many client ports, then a quiet second.
        for i in 0..<3000 {
            let ms = UInt64(i)
            bursts += limit.due(at: ms * 1_000_000)
            if limit.admit(Self.anomaly(.serverTimeWait, Self.identity(UInt64(10 + i), local: 8081, remote: UInt16(40000 + i)), at: ms)) { shown += 1 }
        }
        bursts += limit.due(at: 4_000_000_000)
        #expect(shown == 15)
        #expect(bursts.map(\.counted) == [995, 995, 995])
        #expect(bursts.allSatisfy { $0.endpoint == "on 127.0.0.1:8081" && $0.owner == "nginx (812)" && $0.shown == 5 })
        #expect(bursts.first?.text == "server_time_wait ×995 more in 1 s on 127.0.0.1:8081 nginx (812) (5 shown singly; --json and --output record each)")
        #expect(limit.drain().isEmpty)
    }

    @Test func kindsEndpointsAndOwnersAreKeptApart() {
        var limit = AnomalyRateLimit(perSecond: 1)
        // No listener on 40000-: clients, grouped by the peer they reach.
        for i in 0..<4 {
            _ = limit.admit(Self.anomaly(.connectionRefused, Self.identity(UInt64(i), local: UInt16(40000 + i), remote: 9, pid: UInt32(100 + i % 2)), at: UInt64(i)))
            _ = limit.admit(Self.anomaly(.resetReceived, Self.identity(UInt64(i), local: UInt16(40000 + i), remote: 10), at: UInt64(i)))
        }
        #expect(limit.due(at: 999_000_000).isEmpty)
        let bursts = limit.drain()
        #expect(bursts.map(\.kind) == [.connectionRefused, .resetReceived])
        #expect(bursts.map(\.endpoint) == ["to 127.0.0.1:9", "to 127.0.0.1:10"])
        #expect(bursts.map(\.counted) == [3, 3])
        #expect(bursts[0].owner == nil && bursts[1].owner == "nginx (812)", "two processes refused: no one owner")
    }

    @Test func zeroShowsEveryOne() {
        var limit = AnomalyRateLimit(perSecond: 0)
        for i in 0..<100 {
            let shown = limit.admit(Self.anomaly(.serverTimeWait, Self.identity(UInt64(i), local: 80, remote: 40000), at: 0))
            #expect(shown)
        }
        #expect(limit.drain().isEmpty)
    }
}

/// The board's feed (top's, the page's): a flood is 5 items a second and one growing count.
struct BoardFeedRateTests {
    @Test func aFloodIsOneCountingItemPerSecond() {
        var board = ConnectionBoard()
        board.apply(.snapshot(AnomalyRateLimitTests.identity(1, local: 8081, remote: 0), state: .listen, kernel: .listen, mono: 0, expires: 0))
        for i in 0..<3000 {
            let id = AnomalyRateLimitTests.identity(UInt64(10 + i), local: 8081, remote: UInt16(40000 + i))
            board.apply(.anomaly(AnomalyRateLimitTests.anomaly(.serverTimeWait, id, at: UInt64(i))))
        }
        let feed = board.recentAnomalies(limit: 400)
        #expect(feed.count == 18, "\(feed.map(\.count))")
        #expect(feed.map(\.count).reduce(0, +) == 3000 && board.anomalyCounts[.serverTimeWait] == 3000)
        let bursts = feed.filter { $0.count > 1 }
        #expect(bursts.map(\.count) == [995, 995, 995])
        // Newest first: the last second's count, stamped with its latest anomaly.
        #expect(feed.first?.count == 995 && feed.first?.mark.mono == 2_999_000_000)
        #expect(feed.first?.mark.detail.hasPrefix("×995 more in 1 s on 127.0.0.1:8081 nginx (812)") == true, "\(feed.first?.mark.detail ?? "")")
        var json = OutputBuffer()
        BoardJSON(clock: fixedClock, source: "test", host: "h", windowSeconds: 10, limit: 10).appendFeed(feed, to: &json)
        #expect(json.string.components(separatedBy: "\"count\":995").count == 4)
    }
}
