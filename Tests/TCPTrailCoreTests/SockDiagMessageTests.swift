import Testing
import TCPTrailCore

/// sock_diag answers parsed from bytes recorded on this project's test VM
/// (Linux 6.18, a Python listener on 127.0.0.1:54433 with backlog 7, one client,
/// and a listener on [::1]:44339 with backlog 3), with what `ss -tanei` printed
/// for them beside: the expected values below are ss's, not this parser's.
@Suite struct SockDiagMessageTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16) ?? 0)
            i = j
        }
        return out
    }

    static let listener4 = "7c00000014000200010000007d1e0000020a0000d4a100007f0000010000000000000000000000000000000000000000000000000000000000000000020000000000000000000000000000000700000000000000ef360000050008000000000008000f00000000000c00150001000000000000000600160052000000"
    static let server4 = "7c00000014000200010000007d1e000002010000d4a190527f0000010000000000000000000000007f00000100000000000000000000000000000000030000000000000000000000000000000000000000000000f1360000050008000000000008000f00000000000c00150001000000000000000600160052000000"
    static let client4 = "7c00000014000200010000007d1e0000020100009052d4a17f0000010000000000000000000000007f00000100000000000000000000000000000000040000000000000000000000000000000000000000000000f0360000050008000000000008000f00000000000c00150001000000000000000600160052000000"
    static let done = "1400000003000200010000007d1e000000000000"
    static let listener6 = "8400000014000200010000007d1e00000a0a0000ad330000000000000000000000000000000000010000000000000000000000000000000000000000050000000000000000000000000000000300000000000000f2360000050008000000000005000b000100000008000f00000000000c00150001000000000000000600160012000000"

    @Test func aRecordedIPv4DumpGivesWhatSSShowed() {
        let b = Self.bytes(Self.listener4 + Self.server4 + Self.client4 + Self.done)
        let items = SockDiagMessage.items(in: b, count: b.count)
        #expect(items.count == 4)
        guard items.count == 4, case .socket(let l) = items[0], case .socket(let s) = items[1], case .socket(let c) = items[2] else {
            Issue.record("expected three sockets then done, got \(items)")
            return
        }
        #expect(items[3] == .done)
        // LISTEN 0 7 127.0.0.1:54433 0.0.0.0:* ino:14063 sk:2
        #expect(l.state == .listen && l.family == .ipv4 && l.local.port == 54433 && l.remote.port == 0)
        #expect(l.local.address == RawAddress(bytes: [127, 0, 0, 1]))
        #expect(l.acceptQueue == 0 && l.acceptQueueLimit == 7 && l.inode == 14063 && l.cookie == 2)
        // ESTAB 127.0.0.1:54433 127.0.0.1:36946 ino:14065 sk:3
        #expect(s.state == .established && s.local.port == 54433 && s.remote.port == 36946 && s.inode == 14065 && s.cookie == 3)
        // ESTAB 127.0.0.1:36946 127.0.0.1:54433 ino:14064 sk:4
        #expect(c.state == .established && c.local.port == 36946 && c.remote.port == 54433 && c.inode == 14064 && c.cookie == 4)
    }

    @Test func aRecordedIPv6ListenerGivesWhatSSShowed() {
        let b = Self.bytes(Self.listener6 + Self.done)
        let items = SockDiagMessage.items(in: b, count: b.count)
        guard case .socket(let l)? = items.first else {
            Issue.record("no socket in \(items)")
            return
        }
        // LISTEN 0 3 [::1]:44339 [::]:* ino:14066 sk:5
        #expect(l.state == .listen && l.family == .ipv6 && l.local.port == 44339)
        #expect(l.local.address == RawAddress(bytes: [UInt8](repeating: 0, count: 15) + [1]))
        #expect(l.acceptQueueLimit == 3 && l.inode == 14066 && l.cookie == 5)
        #expect(items.last == .done)
    }

    @Test func aCutMessageEndsTheDumpAndAnErrorIsSaid() {
        let whole = Self.bytes(Self.listener4 + Self.server4)
        // The second message cut short: the first is kept, the rest ends the dump.
        let items = SockDiagMessage.items(in: whole, count: whole.count - 10)
        #expect(items.count == 2)
        #expect(items.last == .done)
        var error = Self.bytes(Self.done)
        error[4] = 2  // NLMSG_ERROR
        #expect(SockDiagMessage.items(in: error, count: error.count) == [.error])
    }

    @Test func theDumpRequestIsWhatSSSends() {
        let r = SockDiagMessage.dumpRequest(family: .ipv6, states: 1 << 10)
        #expect(r.count == 72)
        #expect(Array(r[0..<8]) == [72, 0, 0, 0, 20, 0, 0x01, 0x03])
        #expect(r[16] == 10 && r[17] == 6)
        #expect(Array(r[20..<24]) == [0, 4, 0, 0])
    }

    @Test func procNetTextParsesListenersAndOverflows() {
        let tcp = """
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 0100007F:D4A1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 14063 1 0000000000000000 100 0 0 10 0
           1: 0100007F:D4A1 0100007F:9052 01 00000000:00000000 00:00000000 00000000     0        0 14065 1 0000000000000000 20 4 30 10 -1

        """
        let rows = ProcNetText.listeners(in: tcp)
        #expect(rows.count == 1)
        #expect(rows.first?.0 == 54433 && rows.first?.1 == 14063)
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 5 5\nIpExt: InNoRoutes\nIpExt: 0\n"
        #expect(ProcNetText.listenOverflows(netstat: netstat) == 5)
        #expect(ProcNetText.listenOverflows(netstat: "IpExt: A\nIpExt: 1\n") == nil)
        let shares = ProcNetText.share(drops: 7, among: ["a", "b", "c"])
        #expect(shares.map(\.0) == ["a", "b", "c"] && shares.map(\.1) == [3, 2, 2])
        #expect(ProcNetText.share(drops: 1, among: ["a", "b"]).map(\.0) == ["a"])
    }
}
