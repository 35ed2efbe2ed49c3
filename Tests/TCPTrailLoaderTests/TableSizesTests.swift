import Testing
@testable import TCPTrailLoader

/// Issue 14: the kernel side's tables grow with the host, or take what the operator gives.
@Suite struct TableSizesTests {
    @Test func theSocketCountComesFromSockstatsAlloc() {
        #expect(SocketCount.parse("TCP: inuse 5 orphan 0 tw 2 alloc 912 mem 1\n") == 912)
        #expect(SocketCount.parse("TCP: inuse 5") == nil)
        #expect(SocketCount.allocated() != nil, "this host has /proc/net/sockstat")
    }

    @Test func tablesGrowWithWhatIsOpenAtStart() {
        let small = TableSizes.forHost(maxConnections: nil, maxListeners: nil, socketsNow: 10, listenersNow: 3)
        #expect(small.connections == 65_536 && small.listeners == 8_192)
        let big = TableSizes.forHost(maxConnections: nil, maxListeners: nil, socketsNow: 100_000, listenersNow: 5_000)
        #expect(big.connections == 400_000 && big.listeners == 20_000 && big.ownerSeeds == 200_000)
        let given = TableSizes.forHost(maxConnections: 64, maxListeners: 16, socketsNow: 100_000, listenersNow: 5_000)
        #expect(given.connections == 64 && given.listeners == 16)
        #expect(given.headerJSON == #"{"connections":64,"listeners":16,"owner_seeds":200000}"#)
    }
}
