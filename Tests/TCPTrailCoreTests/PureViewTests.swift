import Testing
@testable import TCPTrailCore

/// What only root could test before, as pure code: log rotation decisions,
/// top's table layout, serve's address check.
@Suite struct PureViewTests {
    @Test func rotationHappensBeforeARecordWouldPassTheLimitAndNeverLeavesAFileEmpty() {
        let r = LogRotation(maxBytes: 4096, keep: 3)
        #expect(!r.rotates(inFile: 0, adding: 10_000))      // a record larger than the limit starts a file
        #expect(!r.rotates(inFile: 4000, adding: 96))
        #expect(r.rotates(inFile: 4000, adding: 97))
        #expect(!LogRotation(maxBytes: nil, keep: 3).rotates(inFile: 1 << 40, adding: 1))
    }

    @Test func rotationMovesTheFilesOldestFirst() {
        #expect(LogRotation(maxBytes: 1, keep: 3).moves(for: "t.jsonl") == [
            .remove("t.jsonl.3"), .rename(from: "t.jsonl.2", to: "t.jsonl.3"), .rename(from: "t.jsonl.1", to: "t.jsonl.2"),
            .rename(from: "t.jsonl", to: "t.jsonl.1"),
        ])
        #expect(LogRotation(maxBytes: 1, keep: 1).moves(for: "t") == [.remove("t.1"), .rename(from: "t", to: "t.1")])
        #expect(LogRotation(maxBytes: 1, keep: 0).moves(for: "t") == [.remove("t")])
    }

    static func row(comm: String, port: UInt16, family: AddressFamily = .ipv4) throws -> ConnectionBoard.Row {
        var board = ConnectionBoard()
        let owner = UInt8(1)  // TT_FLAG_OWNER_KNOWN
        let address = family == .ipv6 ? RawAddress(bytes: [0xfd] + [UInt8](repeating: 0, count: 14) + [2]) : RawAddress(bytes: [198, 18, 0, 2])
        var engine = HandshakeEngine()
        for (i, (from, to)) in [(KernelTCPState.close, KernelTCPState.synSent), (.synSent, .established)].enumerated() {
            let e = KernelEvent(monoNanoseconds: 1_000_000_000 + UInt64(i), cookie: UInt64(port), pid: 4242, comm: ProcessName(comm), kind: .transition,
                                family: family, localAddress: address, remoteAddress: address, localPort: port, remotePort: 443,
                                oldState: from, newState: to, flags: owner)
            engine.process(e) { board.apply($0) }
        }
        return try #require(board.rows.first?.value)
    }

    @Test func topsTableGivesTheBarWhatIsLeftAndNarrowsOtherColumnsFirst() throws {
        let rows = [try Self.row(comm: "curl", port: 40000), try Self.row(comm: "nginx", port: 40001)][...]
        // Widest cells: process "PROCESS PID" (11), local "198.18.0.2:40000" (16), remote "198.18.0.2:443" (14), state "ESTABLISHED" (11).
        // Fixed part: 2 + 11 + 1 + 16 + 4 + 14 + 1 + 11 (state) + 1 + 6 + 1 (age) + 6 (for) + 1 = 75.
        let wide = TopColumns.fitting(160, rows: rows)
        #expect(wide == TopColumns(process: 11, local: 16, remote: 14, state: 11, bar: 85))
        #expect(wide.barTitle(window: 60) == "-60s" + String(repeating: " ", count: 85 - 4 - 3) + "now")
        // 80 columns: the bar would have 5, under its 10; the local address gives way to its port (10 columns), the age stays.
        let narrow = TopColumns.fitting(80, rows: rows)
        #expect(narrow == TopColumns(process: 11, local: 6, localPortOnly: true, remote: 14, state: 11, bar: 15))
        // 40 columns: the age goes too, the process and remote shrink to their floors, the bar keeps 1.
        let tiny = TopColumns.fitting(40, rows: rows)
        #expect(tiny.localPortOnly && tiny.local == 6 && tiny.age == 0 && tiny.process == 8 && tiny.remote == 11 && tiny.bar == 1)
        #expect(tiny.barTitle(window: 300) == "~")
    }

    @Test func serveListensOnlyOnAddressesItCanParseAndSaysWhichAreLoopback() {
        #expect(ServeAddress("127.0.0.1:8080") == ServeAddress("localhost:8080"))
        #expect(ServeAddress("127.0.0.1:8080")?.isLoopback == true)
        #expect(ServeAddress("[::1]:9000")?.host == "::1" && ServeAddress("[::1]:9000")?.isLoopback == true)
        #expect(ServeAddress("198.18.0.1:80")?.isLoopback == false)
        #expect(ServeAddress("[fd00::1]:80")?.isLoopback == false)
        for bad in ["nonsense", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":80", "[::1]80", "example.com:80"] {
            #expect(ServeAddress(bad) == nil, "\(bad)")
        }
    }
}
