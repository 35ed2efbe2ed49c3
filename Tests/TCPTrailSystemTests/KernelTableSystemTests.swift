import Foundation
import Testing

/// Connections whose events never reached tcptrail end where the kernel's
/// socket table (`ss`) has them.
@Suite(.serialized) struct KernelTableSystemTests {
    /// The tracer stopped on a 4 KiB ring while connections open and close on
    /// loopback: most of their events are lost, so tcptrail saw the first
    /// steps of a few and nothing after. Once it runs again and counts the
    /// loss it reads the kernel's table: every connection it knows ends in
    /// the state ss shows for its address pair (TIME_WAIT), or CLOSED where ss
    /// shows none; none is left in a state the kernel no longer has.
    @Test(.enabled(if: Privileged.available, "\(Privileged.reason)"))
    func connectionsLeftByLostEventsEndAsTheKernelsTableSays() throws {
        let ns = try NetworkNamespace(prefix: "ttk")
        let port = Unique.port(), n = 60
        let tracer = try Tracer(["--port", "\(port)", "--buffer-size", "4096", "--no-snapshot"])
        try tracer.paused { try Peer.exchange(ns, port: port, n: n) }
        // The loss is counted at the next turn, the table read within a second.
        sleep(3)
        let ss = try run(ns.command(["ss", "-Htan", "state", "all", "( sport = :\(port) or dport = :\(port) )"]), timeout: 30).stdout
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")
        #expect(records.contains { $0.str("type") == "lost" }, "nothing was lost, so nothing is tested: \(stderr)")

        // ss's state per local:remote pair.
        var kernel: [String: String] = [:]
        for line in ss.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 5 else { continue }
            kernel["\(f[3]) \(f[4])"] = String(f[0])
        }
        var final: [String: (pair: String, to: String, reason: String)] = [:]
        for r in records where r.str("type") == "transition" && !r.str("to").isEmpty {
            final[r.str("conn")] = ("\(r.str("laddr")):\(r.int("lport")) \(r.str("raddr")):\(r.int("rport"))", r.str("to"), r.str("reason"))
        }
        let settled = final.values.filter { $0.reason == "kernel_table" || $0.reason == "gone_from_kernel_table" }
        #expect(!settled.isEmpty, "no connection was settled by the table: \(final.values.map(\.to))")
        for (conn, f) in final.sorted(by: { $0.key < $1.key }) {
            let there = kernel[f.pair]
            switch f.to {
            case "TIME_WAIT": #expect(there == "TIME-WAIT", "\(conn) \(f) but ss: \(there ?? "none")")
            case "CLOSED": #expect(there == nil || there == "TIME-WAIT", "\(conn) \(f) but ss: \(there ?? "none")")
            default: Issue.record("\(conn) left in \(f.to) (\(f.pair)); ss: \(there ?? "none"); its records: \(records.filter { $0.str("conn") == conn }.map { "\($0.str("type")) \($0.str("from"))->\($0.str("to")) \($0.str("reason"))" })")
            }
        }
    }
}
