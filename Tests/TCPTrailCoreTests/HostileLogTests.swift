import CTCPTrailEvent
import Foundation
import PropertyBased
import Testing
@testable import TCPTrailCore
@testable import TCPTrailLog

/// Issue 14: lines that pass the schema but hold nonsense numbers or times
/// must be reported as malformed (file:line, exit 65) or saturate, never
/// trap. Each single-line trigger here crashed replay (SIGILL) before.
@Suite struct HostileLogTests {
    static let header = ReplayInputTests.header
    static let time = "2026-11-21T06:30:00.000000000Z"

    /// A kernel transition with the given fields as raw JSON text.
    static func transition(seq: String = "2", mono: String = "2000", prev: String = "null", time: String = "\"2026-11-21T06:30:00.000000000Z\"",
                           conn: String = "5", from: String = "CLOSE", to: String = "SYN_SENT") -> String {
        #"{"v":1,"seq":\#(seq),"type":"transition","time":\#(time),"mono_ns":\#(mono),"conn":"\#(conn)","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":40000,"raddr":"198.18.0.2","rport":8080,"owner_known":true,"cpu":0,"kernel_from":"\#(from)","kernel_to":"\#(to)","prev_state_ns":\#(prev),"peer_fin":false}"#
    }

    /// How a log was replayed.
    enum Mode { case text, json, board }

    /// Replays `lines` in each output (text, --json, the --html board).
    static func replayEveryWay(_ lines: [String], name: String = "hostile.jsonl")
        throws -> [(output: String, diagnostics: [String], result: ReplayResult, path: String, mode: Mode)] {
        let s = try Scratch()
        let path = try s.file(name, lines.joined(separator: "\n") + "\n")
        return [(Mode.text, replay([path], json: false)), (.json, replay([path], json: true)), (.board, replay([path], json: false) { $0.board = true })]
            .map { ($1.output, $1.diagnostics, $1.result, path, $0) }
    }

    /// `line` (at line 3, after the header and a good record) is malformed in
    /// every output, named with its file and line, and the records around it are kept.
    static func expectMalformed(_ line: String, because words: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let good = transition(seq: "2", mono: "2000")
        let after = transition(seq: "4", mono: "3000", conn: "6")
        for (output, diagnostics, result, path, mode) in try replayEveryWay([header, good, line, after]) {
            #expect(result.malformed == 1 && result.exitStatus == 65, "\(mode): \(diagnostics)", sourceLocation: sourceLocation)
            #expect(diagnostics.contains { $0.contains("\(path):3:") && $0.contains(words) }, "\(mode): \(diagnostics)", sourceLocation: sourceLocation)
            #expect(result.records == 2, "the records before and after it are replayed", sourceLocation: sourceLocation)
            if mode == .text { #expect(output.contains("conn 5 ") && output.contains("conn 6 "), sourceLocation: sourceLocation) }
        }
    }

    // MARK: - prev_state_ns > mono_ns

    @Test func moreTimeInThePreviousStateThanSinceBootIsMalformed() throws {
        try Self.expectMalformed(Self.transition(seq: "3", mono: "5000", prev: "5001", conn: "7"), because: "\"prev_state_ns\" 5001 is larger than \"mono_ns\" 5000")
        try Self.expectMalformed(Self.transition(seq: "3", mono: "0", prev: "18446744073709551615", conn: "7"), because: "prev_state_ns")
        // Equal is a socket that changed state at boot: fine.
        let (_, diagnostics, result, _, _) = try Self.replayEveryWay([Self.header, Self.transition(mono: "5000", prev: "5000")])[0]
        #expect(result.exitStatus == 0, "\(diagnostics)")
    }

    @Test func theEngineClampsAPreviousStateReachingBeforeBoot() {
        // The live path has no parser in front: the engine itself must not trap.
        var e = KernelEvent(monoNanoseconds: 10, cookie: 1, kind: .transition)
        e.oldState = .synSent
        e.newState = .established
        e.previousStateNanoseconds = 11
        var engine = HandshakeEngine()
        var board = ConnectionBoard()
        engine.process(e) { board.apply($0) }
        #expect(board.rows[e.connectionID]?.opened == 0)
    }

    // MARK: - mono_ns near 2^64

    static let hugeMonos = ["18446744073709551615", "18446744073709551614", "9223372036854775808"]

    @Test(arguments: hugeMonos) func aMonoNsPastTheKernelsRangeIsMalformed(_ mono: String) throws {
        try Self.expectMalformed(Self.transition(seq: "3", mono: mono, conn: "7"), because: "\"mono_ns\" must be an integer from 0 to 9223372036854775807")
        // In every record type, not only kernel records.
        for line in [#"{"v":1,"seq":3,"type":"lost","time":"\#(Self.time)","mono_ns":\#(mono),"count":1,"total":1,"total_by_type":{}}"#,
                     #"{"v":1,"seq":3,"type":"summary","time":"\#(Self.time)","mono_ns":\#(mono),"records":{},"anomalies":{},"lost":0,"export_errors":0}"#] {
            try Self.expectMalformed(line, because: "mono_ns")
        }
    }

    @Test func aMonoNsWhoseWallTimeIsPast2262IsMalformed() throws {
        // Within the kernel's range, but with the header's boot offset past Int64 ns.
        try Self.expectMalformed(Self.transition(seq: "3", mono: "9223372036854775807", conn: "7"), because: "is no time")
        // Without a header and a time, the clock starts at 0: Int64.max is 2262, and shows.
        for (output, diagnostics, result, _, mode) in try Self.replayEveryWay([Self.transition(mono: "9223372036854775807", time: "null").replacingOccurrences(of: #""time":null,"#, with: ""),
                                                                         Self.transition(seq: "3", mono: "9223372036854775807", from: "SYN_SENT", to: "ESTABLISHED"),
                                                                         Self.transition(seq: "4", mono: "9223372036854775807", from: "ESTABLISHED", to: "FIN_WAIT1"),
                                                                         Self.transition(seq: "5", mono: "9223372036854775807", from: "FIN_WAIT1", to: "FIN_WAIT2"),
                                                                         Self.transition(seq: "6", mono: "9223372036854775807", from: "FIN_WAIT2", to: "CLOSE").replacingOccurrences(of: #""peer_fin":false"#, with: #""peer_fin":true"#)]) {
            #expect(result.exitStatus == 0 && result.malformed == 0, "\(diagnostics)")
            if mode == .text {
                // 60 s of TIME_WAIT past the end of Int64 ns: the last time there is.
                #expect(output.contains("in TIME_WAIT until 23:47:16.854775"), "\(output)")
            }
        }
    }

    @Test func theEngineSaturatesDeadlinesNearTheEndOfTime() {
        // Live events carry no parser's checks: every deadline saturates.
        var engine = HandshakeEngine()
        var timelines = TimelineWriter(clock: WallClock(bootOffsetNanoseconds: 0))
        var out = OutputBuffer()
        func event(_ mono: UInt64, _ from: KernelTCPState, _ to: KernelTCPState, kind: KernelEventKind = .transition) -> KernelEvent {
            var e = KernelEvent(monoNanoseconds: mono, cookie: 1, kind: kind)
            e.oldState = from
            e.newState = to
            e.flags = UInt8(TT_FLAG_PEER_FIN.rawValue)
            return e
        }
        for mono in [UInt64.max - 1, .max] {
            for e in [event(mono, .close, .synSent), event(mono, .synSent, .established), event(mono, .established, .closeWait),
                      event(mono, .established, .finWait1), event(mono, .finWait1, .finWait2), event(mono, .finWait2, .close),
                      event(mono, .established, .close), event(mono, .listen, .listen, kind: .listenDrop), event(mono, .listen, .listen, kind: .listenDrop)] {
                engine.process(e) { timelines.add($0, to: &out) }
            }
            engine.seed([SocketSnapshot(cookie: 9, state: .timeWait, family: .ipv4, local: Endpoint(address: RawAddress(), port: 1), remote: Endpoint(address: RawAddress(), port: 2), inode: 0, netns: 1, expiresMilliseconds: .max)], at: mono) { timelines.add($0, to: &out) }
            engine.advance(to: .max) { timelines.add($0, to: &out) }
        }
        engine.finish { timelines.add($0, to: &out) }
        timelines.finish(to: &out)
        #expect(timelines.connectionsSeen > 0 && out.string.contains("conn 1 "))
    }

    // MARK: - time

    @Test(arguments: ["1600-01-01T00:00:00.000000000Z", "2300-01-01T00:00:00.000000000Z", "9999-12-31T23:59:59.999999999Z"])
    func aHeaderlessLogWhoseFirstTimeIsOutsideNanosecondsIsMalformed(_ time: String) throws {
        let lines = [Self.transition(mono: "2000", time: "\"\(time)\""), Self.transition(seq: "3", mono: "3000", from: "SYN_SENT", to: "ESTABLISHED")]
        for (output, diagnostics, result, path, mode) in try Self.replayEveryWay(lines) {
            #expect(result.malformed == 1 && result.exitStatus == 65, "\(diagnostics)")
            #expect(diagnostics.contains { $0.contains("\(path):1:") && $0.contains("\"time\" must be an RFC 3339 time") }, "\(diagnostics)")
            // The next record starts the clock.
            #expect(result.records == 1)
            if mode == .text { #expect(output.contains("from 2026-11-21T06:30:00.000000000Z"), "\(output)") }
        }
    }

    @Test func aTimeAndMonoNsMoreThan292YearsApartAreMalformed() throws {
        let line = Self.transition(mono: "9223372036854775807", time: "\"1677-09-21T00:12:43.145224192Z\"")
        for (_, diagnostics, result, path, _) in try Self.replayEveryWay([line]) {
            #expect(result.malformed == 1, "\(diagnostics)")
            #expect(diagnostics.contains { $0.contains("\(path):1:") && $0.contains("give no boot time") }, "\(diagnostics)")
        }
    }

    @Test(arguments: ["\"t\"", "\"2026-11-21\"", "\"2026-13-01T00:00:00Z\"", "\"2026-02-29T00:00:00Z\"", "\"2026-11-21T06:30:00\"",
                      "\"2026-11-21T06:30Z\"", "\"2026-11-21 06:30:00Z\"", "\"2026-11-21T24:00:00Z\"", "\"2026-11-21T06:30:00.Z\"",
                      "\"\\u0032026-11-21T06:30:00Z\"", "5", "null", "\"2026-11-21T06:30:00.000000000Zjunk\""])
    func aMalformedTimeIsMalformed(_ time: String) throws {
        try Self.expectMalformed(Self.transition(seq: "3", mono: "2500", time: time, conn: "7"), because: "\"time\" must be an RFC 3339 time")
    }

    @Test func timesTheWriterAndRFC3339AllowAreAccepted() throws {
        for time in ["2026-11-21T06:30:00.000000000Z", "2024-02-29T23:59:60.5+01:00", "2026-11-21t06:30:00z", "2262-04-11T23:47:16.854775807Z",
                     "1677-09-21T00:12:43.145224192Z", "2026-11-21T06:30:00-00:30"] {
            let (_, diagnostics, result, _, _) = try Self.replayEveryWay([Self.header, Self.transition(time: "\"\(time)\"")])[1]
            #expect(result.exitStatus == 0, "\(time): \(diagnostics)")
        }
        #expect(WallClock.parseRFC3339("2262-04-11T23:47:16.854775807Z") == .max)
        #expect(WallClock.parseRFC3339("2262-04-11T23:47:16.854775808Z") == nil)
        #expect(WallClock.parseRFC3339("1677-09-21T00:12:43.145224192Z") == .min)
        #expect(WallClock.parseRFC3339("9999-12-31T23:59:59Z") == nil)
        #expect(WallClock.parseRFC3339("2026-11-21 06:30") != nil)  // --since keeps its lenient form
    }

    // MARK: - seq, counts, signs

    @Test func hugeSeqsAreCountedNotTrapped() throws {
        // A header (a SIGHUP reopen) after the last seq there is: the gap count must not overflow.
        let reopened = Self.header.replacingOccurrences(of: #""seq":1,"#, with: #""seq":2,"#)
        let lines = [Self.header, Self.transition(seq: "18446744073709551615", mono: "2000"), reopened,
                     Self.transition(seq: "3", mono: "3000", from: "SYN_SENT", to: "ESTABLISHED")]
        for (output, diagnostics, result, _, mode) in try Self.replayEveryWay(lines) {
            #expect(result.exitStatus == 0, "\(diagnostics)")
            if mode == .text { #expect(output.contains("18446744073709551613 records missing by seq in 1 gap(s)") && output.contains("1 duplicate records"), "\(output)") }
        }
        let top = Self.header.replacingOccurrences(of: #""seq":1,"#, with: #""seq":18446744073709551615,"#)
        #expect(try Self.replayEveryWay([Self.header, Self.transition(seq: "18446744073709551614"), top, top, Self.transition(seq: "18446744073709551615")])[0].result.exitStatus == 0)
    }

    @Test(arguments: [("seq", #""seq":-1"#), ("mono_ns", #""mono_ns":-1"#), ("prev_state_ns", #""prev_state_ns":-1"#), ("pid", #""pid":-1"#),
                      ("lport", #""lport":-1"#), ("netns", #""netns":-1"#), ("cpu", #""cpu":-1"#), ("mono_ns", #""mono_ns":-0.0"#),
                      ("prev_state_ns", #""prev_state_ns":1e3"#), ("seq", #""seq":-9223372036854775808"#)])
    func negativeNumbersWhereUnsignedIsExpectedAreMalformed(_ field: String, _ member: String) throws {
        var line = Self.transition(seq: "3", mono: "2500", prev: "1", conn: "7")
        let name = member.prefix { $0 != ":" }
        line = line.replacingOccurrences(of: #"\#(name):[0-9]+"#, with: member, options: .regularExpression)
        #expect(line.contains(member))
        try Self.expectMalformed(line, because: "\"\(field)\" must be an integer from 0")
    }

    @Test func negativeCountsAndOutOfRangeReasonsAreMalformed() throws {
        let anomaly = #"{"v":1,"seq":3,"type":"anomaly","time":"\#(Self.time)","mono_ns":2500,"conn":"7","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":8080,"raddr":"0.0.0.0","rport":0,"owner_known":true,"anomaly":"listen_overflow","severity":"critical","detail":"d","count":-5,"accept_queue":2,"accept_queue_limit":1}"#
        try Self.expectMalformed(anomaly, because: "\"count\" must be an integer from 0")
        let lost = #"{"v":1,"seq":3,"type":"lost","time":"\#(Self.time)","mono_ns":2500,"count":-1,"total":1,"total_by_type":{}}"#
        try Self.expectMalformed(lost, because: "\"count\" must be an integer from 0")
        let reset = #"{"v":1,"seq":3,"type":"reset","time":"\#(Self.time)","mono_ns":2500,"conn":"7","pid":0,"comm":"","netns":1,"family":4,"laddr":"198.18.0.2","lport":1,"raddr":"198.18.0.1","rport":2,"owner_known":false,"cpu":1,"direction":"sent","kernel_state":"CLOSE","reason":4294967296}"#
        try Self.expectMalformed(reset, because: "\"reason\" must be an integer from 0 to 4294967295")
    }

    // MARK: - Edge numbers in every numeric field

    /// Every numeric member of every record type in `ReplayInputTests` and
    /// the fuzz corpus's shapes, as lines whose numbers can be replaced.
    static let templates: [String] = [
        header,
        transition(seq: "2", mono: "2000", prev: "100"),
        #"{"v":1,"seq":3,"type":"snapshot","time":"\#(time)","mono_ns":2000,"conn":"8","pid":0,"comm":"","netns":1,"family":4,"laddr":"198.18.0.1","lport":8080,"raddr":"198.18.0.2","rport":33000,"owner_known":false,"state":"TIME_WAIT","kernel_state":"TIME_WAIT","expires_ms":1500}"#,
        #"{"v":1,"seq":4,"type":"retransmit","time":"\#(time)","mono_ns":3000,"conn":"5","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":40000,"raddr":"198.18.0.2","rport":8080,"owner_known":true,"cpu":1,"kernel_state":"SYN_SENT","what":"syn"}"#,
        #"{"v":1,"seq":5,"type":"reset","time":"\#(time)","mono_ns":4000,"conn":"5","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":40000,"raddr":"198.18.0.2","rport":8080,"owner_known":true,"cpu":1,"direction":"sent","kernel_state":"ESTABLISHED","reason":2}"#,
        #"{"v":1,"seq":6,"type":"error","time":"\#(time)","mono_ns":5000,"conn":"5","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":40000,"raddr":"198.18.0.2","rport":8080,"owner_known":true,"cpu":1,"kernel_state":"CLOSE","errno":110,"error":"ETIMEDOUT"}"#,
        #"{"v":1,"seq":7,"type":"listen_drop","time":"\#(time)","mono_ns":6000,"conn":"7","pid":42,"comm":"srv","netns":1,"family":4,"laddr":"198.18.0.2","lport":8080,"raddr":"198.18.0.1","rport":50000,"owner_known":true,"cpu":0}"#,
        #"{"v":1,"seq":8,"type":"anomaly","time":"\#(time)","mono_ns":7000,"conn":"7","pid":42,"comm":"srv","netns":1,"family":4,"laddr":"198.18.0.2","lport":8080,"raddr":"0.0.0.0","rport":0,"owner_known":true,"anomaly":"listen_overflow","severity":"critical","detail":"d","count":4,"accept_queue":129,"accept_queue_limit":128}"#,
        #"{"v":1,"seq":9,"type":"lost","time":"\#(time)","mono_ns":8000,"count":3,"total":3,"total_by_type":{"transition":2,"reset":1}}"#,
        #"{"v":1,"seq":10,"type":"transition","time":"\#(time)","mono_ns":9000,"conn":"5","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":40000,"raddr":"198.18.0.2","rport":8080,"owner_known":true,"from":"TIME_WAIT","to":"CLOSED","step":"closed","inferred":true,"reason":"2msl_expired"}"#,
        #"{"v":1,"seq":11,"type":"summary","time":"\#(time)","mono_ns":70000000000,"records":{"transition":2},"anomalies":{},"lost":3,"export_errors":0}"#,
    ]

    static let edgeNumbers = ["0", "1", "9223372036854775807", "9223372036854775806", "9223372036854775808", "18446744073709551614",
                              "18446744073709551615", "18446744073709551616", "4294967295", "4294967296", "65535", "65536", "-1",
                              "-9223372036854775808", "1795242600000000000", "-1795242600000000000", "0.5", "1e300"]

    /// The byte ranges of the numbers in a line (after `:`, `[` or `,`).
    static func numberRanges(_ line: [UInt8]) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var i = 0
        while i < line.count {
            if (line[i] == UInt8(ascii: ":") || line[i] == UInt8(ascii: ",")) && i + 1 < line.count,
               line[i + 1] == UInt8(ascii: "-") || (line[i + 1] >= 48 && line[i + 1] <= 57) {
                var j = i + 1
                while j < line.count, line[j] == UInt8(ascii: "-") || line[j] == UInt8(ascii: ".") || line[j] == UInt8(ascii: "e") || (line[j] >= 48 && line[j] <= 57) { j += 1 }
                ranges.append(i + 1..<j)
                i = j
            } else {
                i += 1
            }
        }
        return ranges
    }

    @Test func edgeNumbersInEveryNumericFieldNeverTrapReplay() async throws {
        let scratch = try Scratch()
        let templates = Self.templates.map { Array($0.utf8) }
        let edit = zip(Gen.int(in: 0..<templates.count), Gen.int(in: 0..<64), Gen.int(in: 0..<Self.edgeNumbers.count))
        // Each case: up to 6 lines, each with up to 3 numbers replaced, replayed every way.
        await propertyCheck(count: 400, input: edit.array(of: 1...3).array(of: 1...6)) { spec in
            var lines: [String] = []
            for edits in spec {
                var line = templates[edits[0].0]
                for (_, which, number) in edits {
                    let ranges = Self.numberRanges(line)
                    guard !ranges.isEmpty else { continue }
                    line.replaceSubrange(ranges[which % ranges.count], with: Array(Self.edgeNumbers[number].utf8))
                }
                lines.append(String(decoding: line, as: UTF8.self))
            }
            let path = try! scratch.file("edge.jsonl", lines.joined(separator: "\n") + "\n")
            for (json, board) in [(false, false), (true, false), (false, true)] {
                let (_, diagnostics, result) = replay([path], json: json) { $0.board = board }
                // Every line is replayed or named as malformed; nothing else stops
                // the run but a changed format version (`"v":1` made 0).
                if case .unknownVersion? = result.stop { continue }
                #expect(result.stop == nil, "\(lines) \(diagnostics)")
                #expect(result.exitStatus == (result.malformed > 0 ? 65 : 0))
                #expect(result.malformed <= UInt64(lines.count))
            }
            // Each line alone: accepted lines parse to numbers in their fields' ranges.
            var parser = LogRecordParser()
            for line in lines {
                guard case .success(let r) = Array(line.utf8).withUnsafeBytes({ parser.parse($0) }) else { continue }
                #expect(r.mono <= UInt64(Int64.max), "\(line)")
                #expect((r.event.previousStateNanoseconds ?? 0) <= r.mono, "\(line)")
                #expect((r.count ?? 0) >= 0, "\(line)")
            }
        }
    }
}

/// The fuzzer's committed corpus (Tests/Fuzz/corpus: its seeds, what it
/// found, and the regress-* inputs of issue 14's crashes) replayed as the
/// fuzz target does it: a trap in any of them fails here without libFuzzer.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus").path

    @Test func everyCorpusInputReplaysEveryWay() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(names.count > 100 && names.contains("regress-mono-uint64-max.jsonl"))
        for name in names {
            let path = Self.corpus + "/" + name
            for (json, board) in [(false, false), (true, false), (false, true)] {
                let (_, diagnostics, result) = replay([path], json: json) { $0.board = board }
                // Only what a hostile file may do: lines named, gzip errors, a foreign version.
                #expect([0, 65, 66, 76].contains(result.exitStatus), "\(name): \(diagnostics)")
            }
        }
        // The crash inputs: each named as malformed, not replayed.
        for name in names where name.hasPrefix("regress-headerless") || name.hasPrefix("regress-prev") || name.hasPrefix("regress-mono-uint64") {
            #expect(replay([Self.corpus + "/" + name]).result.malformed >= 1, "\(name)")
        }
    }
}

/// The reader sniffs gzip by its first bytes and never seeks: pipes and
/// FIFOs read like files, and every cut of a gzip stream is an error, not a trap.
@Suite struct LogInputTests {
    static var text: String { ReplayInputTests.goodLines.joined(separator: "\n") + "\n" }

    static func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/gzip")
        p.arguments = ["-c", "-n"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        input.fileHandleForWriting.write(Data(bytes))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Array(data)
    }

    /// Replays `bytes` written into a pipe by another thread, read through /dev/fd.
    static func replayThroughAPipe(_ bytes: [UInt8], json: Bool = true) -> (output: String, diagnostics: [String], result: ReplayResult) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { Issue.record("pipe: \(errno)"); return ("", [], ReplayResult()) }
        let fds = ends
        let writer = Thread {
            // In small pieces: the reader must not depend on getting it all at once.
            var at = 0
            while at < bytes.count {
                let n = bytes[at...].prefix(7).withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
                if n <= 0 { break }
                at += n
            }
            close(fds[1])
        }
        writer.start()
        defer { close(fds[0]) }
        return replay(["/dev/fd/\(fds[0])"], json: json)
    }

    @Test func plainAndGzipLogsReadThroughAPipeLikeFiles() throws {
        let s = try Scratch()
        let plain = Array(Self.text.utf8)
        let expected = replay([try s.file("log.jsonl", Self.text)]).output
        let a = Self.replayThroughAPipe(plain)
        #expect(a.result.exitStatus == 0 && a.output == expected, "\(a.diagnostics)")
        let b = Self.replayThroughAPipe(try Self.gzip(plain))
        #expect(b.result.exitStatus == 0 && b.output == expected, "\(b.diagnostics)")
        // The header was seen through the pipe: its host and boot offset are used.
        #expect(a.output.contains("\"hostname\":\"h\""))
    }

    @Test func concatenatedGzipMembersReadAsOneFileAndTrailingGarbageIsIgnored() throws {
        let s = try Scratch()
        let lines = ReplayInputTests.goodLines
        let two = try Self.gzip(Array((lines[0] + "\n").utf8)) + Self.gzip(Array((lines[1...].joined(separator: "\n") + "\n").utf8))
        let expected = replay([try s.file("log.jsonl", Self.text)], json: false).output
        let path = try s.file("two.jsonl.gz", bytes: two)
        #expect(replay([path], json: false).output.replacingOccurrences(of: path, with: s.path + "/log.jsonl") == expected)
        let padded = try s.file("padded.jsonl.gz", bytes: two + [0, 0, 0, 0])
        #expect(replay([padded], json: false).result.exitStatus == 0)
    }

    @Test func everyCutOfAGzipStreamIsAnErrorOrFewerLines() throws {
        let s = try Scratch()
        let gz = try Self.gzip(Array(Self.text.utf8))
        for n in 0..<gz.count {
            let path = try s.file("cut.gz", bytes: Array(gz[..<n]))
            let (_, diagnostics, result) = replay([path], json: false)
            // A prefix shorter than the magic is plain text (garbage); longer ones are cut gzip.
            if n >= 2 {
                #expect(result.exitStatus == 66 && diagnostics.contains { $0.contains("gzip") }, "\(n): \(diagnostics)")
            }
        }
        // A flipped byte in the deflate data: corrupt, with the lines before it kept.
        var bad = gz
        bad[gz.count / 2] ^= 0xff
        let (_, diagnostics, result) = replay([try s.file("bad.gz", bytes: bad)], json: false)
        #expect(result.exitStatus == 66 || result.exitStatus == 65, "\(diagnostics)")
    }

    @Test func tinyInputsAreReadAsText() throws {
        let s = try Scratch()
        for bytes: [UInt8] in [[], [0x1f], [0x1f, 0x8c], [0x0a], [0x1f, 0x0a]] {
            let (_, diagnostics, result) = replay([try s.file("tiny", bytes: bytes)], json: false)
            #expect(result.stop == nil, "\(bytes): \(diagnostics)")
        }
    }
}
