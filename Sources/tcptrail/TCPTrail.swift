import ArgumentParser
import TCPTrailCore
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

@main
struct TCPTrail: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "tcptrail",
        abstract: "Trace TCP connections on this host from inside the kernel.",
        discussion: "Run 'tcptrail doctor' first on a new host. Tracing needs root (or CAP_BPF and CAP_PERFMON).",
        version: version,
        subcommands: [Trace.self, Top.self, Serve.self, Replay.self, Doctor.self],
        defaultSubcommand: Trace.self
    )
}
