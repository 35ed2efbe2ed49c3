import ArgumentParser
import TCPTrailCore

/// The anomaly thresholds as options, the same four for the live commands
/// and `replay` (where a value given overrides the log's header).
struct ThresholdOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: ArgumentHelp("Flag a socket in CLOSE_WAIT for longer than this many seconds (close_wait_stall; default: \(AnomalyThresholds().closeWaitNanoseconds / 1_000_000_000)).", valueName: "seconds"))
    var closeWaitThreshold: Double?

    @Option(name: .customLong("fin-wait-2-threshold"), parsing: .unconditional, help: ArgumentHelp("Flag a socket in FIN_WAIT_2 for longer than this many seconds (fin_wait_2_stall; default: \(AnomalyThresholds().finWait2Nanoseconds / 1_000_000_000)).", valueName: "seconds"))
    var finWait2Threshold: Double?

    @Option(parsing: .unconditional, help: ArgumentHelp("Flag a local endpoint holding more TIME_WAIT sockets than this (time_wait_buildup; default: \(AnomalyThresholds().timeWaitSockets)).", valueName: "sockets"))
    var timeWaitThreshold: Int?

    @Option(parsing: .unconditional, help: ArgumentHelp("Flag a connection retransmitting more data segments than this (data_retransmit; default: \(AnomalyThresholds().dataRetransmits)).", valueName: "segments"))
    var retransmitThreshold: Int?

    func validate() throws {
        if let closeWaitThreshold { try OptionCheck.seconds(closeWaitThreshold, "--close-wait-threshold", in: 0.001...OptionCheck.longestSeconds) }
        if let finWait2Threshold { try OptionCheck.seconds(finWait2Threshold, "--fin-wait-2-threshold", in: 0.001...OptionCheck.longestSeconds) }
        if let timeWaitThreshold { try OptionCheck.count(timeWaitThreshold, "--time-wait-threshold", in: 1...100_000_000) }
        if let retransmitThreshold { try OptionCheck.count(retransmitThreshold, "--retransmit-threshold", in: 1...1_000_000_000) }
    }

    /// Whether any threshold was given.
    var isSet: Bool { closeWaitThreshold != nil || finWait2Threshold != nil || timeWaitThreshold != nil || retransmitThreshold != nil }

    /// The defaults, with the values given.
    var thresholds: AnomalyThresholds {
        var t = AnomalyThresholds()
        if let v = closeWaitThreshold { t.closeWaitNanoseconds = UInt64(v * 1e9) }
        if let v = finWait2Threshold { t.finWait2Nanoseconds = UInt64(v * 1e9) }
        if let v = timeWaitThreshold { t.timeWaitSockets = v }
        if let v = retransmitThreshold { t.dataRetransmits = v }
        return t
    }
}
