import Foundation
import Testing
@testable import TCPTrailHost

/// systemd's notify protocol by hand: the datagram reaches a socket bound at a path.
@Suite struct SystemdNotifyTests {
    @Test func readyReachesAPathSocket() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ttn-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { unlink(path) }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        let notify = SystemdNotify(environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"])
        #expect(notify.enabled && notify.watchdogInterval == 1_500_000_000)
        #expect(notify.send("READY=1"))
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        #expect(n > 0 && String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self) == "READY=1")
    }

    @Test func withoutNotifySocketNothingIsSent() {
        let notify = SystemdNotify(environment: ["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"])
        #expect(!notify.enabled && !notify.send("READY=1"))
        #expect(notify.watchdogInterval == nil, "the watchdog is another process's")
    }
}
