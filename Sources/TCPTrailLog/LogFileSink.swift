import TCPTrailCore
import TCPTrailHost

/// The `--output` log as a pipeline sink: its own writer (and `seq`), its own
/// buffer handed to the log's writer thread, the header of every file, the
/// rotation before a record that would pass --rotate-size, the summary at the end.
public final class LogFileSink: RecordSink {
    public let log: EventLog
    private var writer: JSONLinesWriter
    private var buffer = OutputBuffer(capacity: EventLog.bufferCapacity)

    public init(log: EventLog, clock: WallClock) {
        self.log = log
        writer = JSONLinesWriter(clock: clock)
    }

    /// Writes the header record now, and at the top of every file a rotation or reopen starts.
    public func writeHeader(version: String, hostname: String, kernel: String, filters: String, thresholds: String,
                            features: String, tables: String) {
        let started = WallClock.monotonicNow()
        log.header = { [unowned self] buffer in
            self.writer.appendHeader(version: version, hostname: hostname, kernel: kernel, startedMono: started,
                                     filters: filters, thresholds: thresholds, features: features, tables: tables,
                                     mono: WallClock.monotonicNow(), to: &buffer)
        }
        log.writeHeader()
    }

    /// Rotates before a record that would push the file past --rotate-size, so a
    /// record never spans two files and each new file's header takes the next seq.
    private func rotateIfNeeded() {
        guard log.wouldOverflow(adding: buffer.count + 512) else { return }
        log.write(&buffer)
        log.rotate()
    }

    public func record(_ output: EngineOutput, to out: inout OutputBuffer) {
        rotateIfNeeded()
        writer.append(output, to: &buffer)
        // Here, not per event: a timer or the end of the run can make thousands of records at once.
        if buffer.count >= EventLog.handOverBytes { log.write(&buffer) }
    }

    public func lost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64], mono: UInt64, to out: inout OutputBuffer) {
        rotateIfNeeded()
        writer.appendLost(count: count, total: total, byKind: byKind, mono: mono, to: &buffer)
    }

    public func untracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer) {
        rotateIfNeeded()
        writer.appendUntracked(gaps, mono: mono, to: &buffer)
    }

    /// Hands what is buffered to the writer thread.
    public func flush() {
        if !buffer.isEmpty { log.write(&buffer) }
    }

    /// SIGHUP: reopens the log path (after handing over what is buffered).
    public func reopen() {
        log.write(&buffer)
        log.reopen()
    }

    /// Writes the summary record, fsyncs and closes the log.
    public func finish(anomalies: [(String, Int)], lost: UInt64, untracked: TableGaps) {
        log.write(&buffer)
        // The summary's export-error count covers everything before it.
        log.waitUntilWritten()
        writer.appendSummary(recordsByType: writer.countsByType, anomalies: anomalies, lost: lost,
                             exportErrors: log.recordsNotWritten, untracked: untracked, mono: WallClock.monotonicNow(), to: &buffer)
        log.finish(&buffer)
    }

    /// Records the log could not take.
    public var exportErrors: UInt64 { log.recordsNotWritten }
}
