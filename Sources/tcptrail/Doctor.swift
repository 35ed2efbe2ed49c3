import ArgumentParser
import TCPTrailLoader
import TCPTrailCore
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// `tcptrail doctor`: one line per thing tracing needs, and whether this host has it.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that this host can run the tracer: privileges, BTF, ring buffer, the program loaded and attached as trace does, each feature this kernel offers, memlock."
    )

    @Flag(help: "Show libbpf's own messages.")
    var verbose = false

    func run() throws {
        LibBPFLog.install(verbose: verbose)
        let checks = Preflight.doctor()
        let width = checks.map(\.name.count).max() ?? 0
        for check in checks {
            let tag = "[\(check.outcome.rawValue)]".padding(toLength: 7, withPad: " ", startingAt: 0)
            print(tag + check.name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + check.detail)
        }
        if let failed = checks.first(where: { $0.outcome == .fail }) {
            throw ExitCode(failed.exitStatus)
        }
    }
}
