import Foundation
import Testing
@testable import TCPTrailHost

/// The listen-overflow counter read from a netstat file, as the monitor reads
/// /proc/thread-self/net/netstat (here a copy in a file the test makes).
@Suite struct NetstatFileTests {
    @Test func listenOverflowsAreReadFromTheFileAtPath() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tt-netstat-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("netstat").path
        let text = """
        TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops
        TcpExt: 0 0 17 19
        IpExt: InNoRoutes InTruncatedPkts
        IpExt: 0 0

        """
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        #expect(ListenQueueMonitor.listenOverflows(path: path) == 17)
        #expect(ListenQueueMonitor.listenOverflows(path: dir.appendingPathComponent("absent").path) == nil)
    }
}
