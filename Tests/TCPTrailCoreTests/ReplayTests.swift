import CTCPTrailEvent
import Foundation
import PropertyBased
import Testing
@testable import TCPTrailCore
@testable import TCPTrailLog

/// A seeded generator, so a failing case can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// A private directory for one test's files, removed afterwards.
final class Scratch {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("ttreplay-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String, _ text: String) throws -> String {
        let p = path + "/" + name
        try text.write(toFile: p, atomically: false, encoding: .utf8)
        return p
    }

    func file(_ name: String, bytes: [UInt8]) throws -> String {
        let p = path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }
}

/// Plays the part of `trace`: events come out of the ring in batches, the
/// engine's clock is also moved by a tick 200 ms behind the wall clock, and
/// everything the engine says is written to the log as LivePipeline writes it.
struct LiveRunSimulator {
    var engine: HandshakeEngine
    var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 1_795_000_000_000_000_000))
    var out = OutputBuffer()
    var anomalies: [Anomaly] = []
    var changes: [StateChange] = []

    init(thresholds: AnomalyThresholds) {
        engine = HandshakeEngine(thresholds: thresholds)
        writer.appendHeader(version: "test", hostname: "sim", kernel: "6.18", startedMono: 1_000_000_000, filters: "{}",
                            thresholds: thresholds.json, mono: 1_000_000_000, to: &out)
    }

    mutating func record(_ o: EngineOutput) {
        writer.append(o, to: &out)
        if case .anomaly(let a) = o { anomalies.append(a) }
        if case .change(let c) = o { changes.append(c) }
    }

    /// Runs `events` (already in ring order) with polls every `poll` ns and
    /// random delivery delays from `rng`.
    mutating func run(_ events: [KernelEvent], seeds: [SocketSnapshot] = [], overflows: [(UInt64, ListenOverflow)] = [],
                      rng: inout SplitMix64) {
        var sink: [EngineOutput] = []
        if !seeds.isEmpty {
            engine.seed(seeds, at: 1_000_000_000) { sink.append($0) }
        }
        var wall: UInt64 = 1_000_000_000
        var i = 0
        var pendingOverflows = overflows
        let end = (events.last?.monoNanoseconds ?? wall) + 3_000_000_000
        while wall < end || i < events.count {
            wall += 50_000_000
            // Events written at least `delay` ago are in the ring; delivered in order.
            let delay = UInt64.random(in: 0...40_000_000, using: &rng)
            while i < events.count && events[i].monoNanoseconds + delay <= wall {
                engine.process(events[i]) { sink.append($0) }
                i += 1
            }
            engine.advance(to: wall - 200_000_000) { sink.append($0) }
            while let (at, o) = pendingOverflows.first, at <= wall {
                engine.listenOverflow(o, at: wall) { sink.append($0) }
                pendingOverflows.removeFirst()
            }
            for o in sink { record(o) }
            sink.removeAll()
        }
        engine.finish { sink.append($0) }
        for o in sink { record(o) }
        writer.appendSummary(recordsByType: [], anomalies: [], lost: 0, exportErrors: 0, mono: wall, to: &out)
    }
}

/// Replays a log text with LogReplay and returns what it wrote and said.
func replay(_ paths: [String], json: Bool = true, strict: Bool = false, configure: (inout ReplayOptions) -> Void = { _ in })
    -> (output: String, diagnostics: [String], result: ReplayResult) {
    var options = ReplayOptions()
    options.json = json
    options.strict = strict
    configure(&options)
    var output: [UInt8] = []
    var diagnostics: [String] = []
    let r = LogReplay(paths: paths, options: options, write: { output.append(contentsOf: $0.bytes); return true },
                      diagnose: { diagnostics.append($0) })
    let result = r.run()
    return (String(decoding: output, as: UTF8.self), diagnostics, result)
}

func jsonRecords(_ text: String) -> [[String: Any]] {
    text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
}

/// An anomaly as a comparable line: connection, name, count, detail, time.
func anomalyKeys(_ records: [[String: Any]]) -> [String] {
    records.filter { $0["type"] as? String == "anomaly" }.map {
        "\($0["conn"] ?? "") \($0["anomaly"] ?? "") \($0["count"] ?? "-") \($0["mono_ns"] ?? "") \($0["detail"] ?? "")"
    }.sorted()
}

/// A documented transition as a comparable line.
func changeKeys(_ records: [[String: Any]]) -> [String] {
    records.filter { $0["type"] as? String == "transition" }.map {
        "\($0["conn"] ?? "") \($0["mono_ns"] ?? "") \($0["from"] ?? "") \($0["to"] ?? "") \($0["step"] ?? "") \($0["inferred"] ?? "") \($0["reason"] ?? "")"
    }.sorted()
}

/// Random connections of every kind the engine knows, in ring order.
func randomTraffic(_ rng: inout SplitMix64, connections: Int) -> (events: [KernelEvent], seeds: [SocketSnapshot], overflows: [(UInt64, ListenOverflow)]) {
    var events: [KernelEvent] = []
    var cookie: UInt64 = 1000
    let serverPort: UInt16 = 8080
    func ms(_ lo: UInt64, _ hi: UInt64) -> UInt64 { UInt64.random(in: lo...hi, using: &rng) * 1_000_000 }
    var seeds: [SocketSnapshot] = []
    // A listener and a TIME_WAIT socket that predate the trace.
    seeds.append(SocketSnapshot(cookie: 7, state: .listen, family: .ipv4, local: Endpoint(address: RawAddress(bytes: [198, 18, 0, 2]), port: serverPort),
                                remote: Endpoint(address: RawAddress(), port: 0), inode: 1, netns: 1, expiresMilliseconds: 0, owner: Owner(pid: 42, comm: ProcessName("srv"))))
    seeds.append(SocketSnapshot(cookie: 8, state: .timeWait, family: .ipv4, local: Endpoint(address: RawAddress(bytes: [198, 18, 0, 2]), port: serverPort),
                                remote: Endpoint(address: RawAddress(bytes: [198, 18, 0, 1]), port: 33000), inode: 0, netns: 1,
                                expiresMilliseconds: UInt32.random(in: 1...5000, using: &rng)))
    seeds.append(SocketSnapshot(cookie: 9, state: .closeWait, family: .ipv6,
                                local: Endpoint(address: RawAddress(bytes: [0xfd, 0, 0x74, 0x74] + Array(repeating: 0, count: 11) + [2]), port: serverPort),
                                remote: Endpoint(address: RawAddress(bytes: [0xfd, 0, 0x74, 0x74] + Array(repeating: 0, count: 11) + [1]), port: 33001),
                                inode: 5, netns: 1, expiresMilliseconds: 0, owner: Owner(pid: 43, comm: ProcessName("stuck\u{1b}[31m"))))
    for _ in 0..<connections {
        cookie += 1
        let start = 1_000_000_000 + ms(0, 8000)
        let lport = UInt16.random(in: 20000...60000, using: &rng)
        let s = Script(cookie, lport: lport, rport: serverPort, at: start)
        let kind = Int.random(in: 0..<11, using: &rng)
        switch kind {
        case 0:  // client closes first
            s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1, after: ms(0, 500) / 1_000_000)
                .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true)
        case 1:  // server side closes first: server_time_wait
            let srv = Script(cookie + 100_000, lport: serverPort, rport: lport, at: start)
            srv.t(.listen, .synRecv).t(.synRecv, .established).t(.established, .finWait1, after: 3).t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true)
            events += srv.events
        case 2:  // refused: RST and error around the close, in either order
            s.t(.close, .synSent)
            if Bool.random(using: &rng) { s.reset(.received, in: .synSent).error(111, in: .close).t(.synSent, .close, after: 0) }
            else { s.t(.synSent, .close, after: 0).reset(.received, in: .close).error(111, in: .close) }
        case 3:  // handshake timeout
            s.t(.close, .synSent)
            for _ in 0..<Int.random(in: 1...3, using: &rng) { s.retransmit(.syn, in: .synSent, after: 1000) }
            // The error comes a moment after the close; connect()'s tcp_disconnect reports errno 0 after it.
            s.t(.synSent, .close, after: 1000).error(110, in: .close).error(0, in: .close)
        case 4:  // linger 0: reset sent
            s.t(.close, .synSent).t(.synSent, .established).t(.established, .close, after: 20).reset(.sent, in: .close)
        case 5:  // reset received while established
            s.t(.close, .synSent).t(.synSent, .established).reset(.received, in: .established, after: 10).t(.established, .close, after: 0)
        case 6:  // CLOSE_WAIT that may stall past the threshold
            s.t(.close, .synSent).t(.synSent, .established).t(.established, .closeWait, after: 5)
            if Bool.random(using: &rng) { s.t(.closeWait, .lastAck, after: ms(500, 3000) / 1_000_000).t(.lastAck, .close) }
        case 7:  // FIN_WAIT_2 that may stall
            s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1, after: 5).t(.finWait1, .finWait2)
            if Bool.random(using: &rng) { s.t(.finWait2, .finWait2, after: 200) }  // close() after shutdown(SHUT_WR)
            s.t(.finWait2, .close, after: ms(100, 3000) / 1_000_000, peerFin: Bool.random(using: &rng))
        case 8:  // data retransmits past the threshold
            s.t(.close, .synSent).t(.synSent, .established)
            for _ in 0..<Int.random(in: 1...6, using: &rng) { s.retransmit(.data, in: .established, after: 50) }
            s.t(.established, .finWait1).t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true)
        case 9:  // outside the diagram
            s.t(.close, .synSent).t(.synSent, .closeWait)
        default:  // second connection on the same socket after a refusal
            s.t(.close, .synSent).reset(.received, in: .synSent).t(.synSent, .close, after: 0)
            s.generation = 1
            s.t(.close, .synSent, after: 5).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true)
        }
        events += s.events
    }
    // TIME_WAIT buildup on the server port: many passive closes.
    events.sort { $0.monoNanoseconds < $1.monoNanoseconds }
    // Two CPUs: a few neighbours less than 50 µs apart arrive swapped.
    if events.count > 2 {
        for _ in 0..<events.count / 10 {
            let k = Int.random(in: 0..<(events.count - 1), using: &rng)
            if events[k + 1].monoNanoseconds - events[k].monoNanoseconds < 50_000 && events[k].cookie != events[k + 1].cookie {
                events.swapAt(k, k + 1)
            }
        }
    }
    var listener = seeds[0]
    listener.acceptQueue = 129
    listener.acceptQueueLimit = 128
    let overflows = [(UInt64(1_000_000_000 + ms(0, 8000)), ListenOverflow(listener: listener, drops: Int.random(in: 1...50, using: &rng)))]
    return (events, seeds, overflows)
}

@Suite struct ReplayEngineTests {
    /// The claim replay rests on: the anomalies (and documented transitions) of
    /// a replay equal those of the live run that wrote the log, whatever the
    /// batching, tick timing and CPU interleaving were.
    @Test func replayGivesTheLiveRunsAnomalies() async throws {
        let scratch = try Scratch()
        await propertyCheck(count: 60, input: Gen.int(in: 0...Int(Int32.max))) { seed in
            var rng = SplitMix64(state: UInt64(seed))
            var thresholds = AnomalyThresholds()
            thresholds.closeWaitNanoseconds = 1_000_000_000
            thresholds.finWait2Nanoseconds = 1_500_000_000
            thresholds.timeWaitSockets = Int.random(in: 2...6, using: &rng)
            thresholds.dataRetransmits = 3
            let (events, seeds, overflows) = randomTraffic(&rng, connections: Int.random(in: 5...60, using: &rng))
            var live = LiveRunSimulator(thresholds: thresholds)
            live.run(events, seeds: seeds, overflows: overflows, rng: &rng)
            let path = try! scratch.file("live-\(seed).jsonl", live.out.string)
            let liveRecords = jsonRecords(live.out.string)
            let (text, diagnostics, result) = replay([path])
            #expect(result.exitStatus == 0 && result.malformed == 0, "\(diagnostics)")
            let replayed = jsonRecords(text)
            #expect(!anomalyKeys(liveRecords).isEmpty)
            #expect(anomalyKeys(replayed) == anomalyKeys(liveRecords), "seed \(seed)")
            #expect(changeKeys(replayed) == changeKeys(liveRecords), "seed \(seed)")
            #expect(replayed.first?["type"] as? String == "header" && replayed.last?["type"] as? String == "summary")
        }
    }

    @Test func everyKernelRecordReadsBackAsTheEventItWasWrittenFrom() throws {
        var rng = SplitMix64(state: 7)
        let (events, _, _) = randomTraffic(&rng, connections: 80)
        var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 0))
        var parser = LogRecordParser()
        var odd = events
        // Owners with every kind of byte in their name, and IPv6 endpoints.
        odd[0].comm = ProcessName(bytes: [0x1b, 0x5b, 0x32, 0x4a, 0x22, 0x5c, 0xff, 0x80, 0x01, 0x7f, 0x41])
        odd[1].family = .ipv6
        odd[1].localAddress = RawAddress(bytes: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        odd[1].remoteAddress = RawAddress(bytes: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0xab, 0xcd])
        odd[2].previousStateNanoseconds = 123_456
        // A thread with its own name, one named as its process, one escaped.
        let owned = UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
        odd[3].thread = ProcessName("NIO-SGLTN-1-#2"); odd[3].flags |= owned
        odd[4].thread = odd[4].comm; odd[4].flags |= owned
        odd[5].thread = ProcessName(bytes: [0x1b, 0x5d, 0x41, 0xff]); odd[5].flags |= owned
        odd[6].thread = ProcessName("not-an-owner"); odd[6].flags &= ~owned
        for e in odd {
            var out = OutputBuffer()
            writer.append(e, to: &out)
            let line = out.bytes.dropLast()  // the newline
            let r = try line.withUnsafeBytes { try parser.parse($0).get() }
            #expect(r.isKernelEvent)
            var expected = e
            expected.flags &= ~UInt8(TT_FLAG_PREV_KNOWN.rawValue)
            if e.kind != .transition { expected.oldState = e.newState }
            if e.kind == .transition { expected.errorNumber = 0 }
            // Written only for an owner, and only where it differs from comm.
            if !e.ownerKnown || e.thread == e.comm { expected.thread = ProcessName() }
            #expect(r.event == expected, "\(out.string)")
            #expect(out.string.contains("\"thread\":") == (e.ownerKnown && !e.thread.isEmpty && e.thread != e.comm), "\(out.string)")
        }
    }
}

@Suite struct ReplayInputTests {
    static let header = #"{"v":1,"seq":1,"type":"header","time":"2026-11-21T06:30:00.000000000Z","mono_ns":1000,"format_version":1,"tcptrail_version":"t","hostname":"h","kernel":"k","started":"2026-11-21T06:30:00.000000000Z","boot_offset_ns":1795242600000000000,"filters":{},"thresholds":{"close_wait_s":60,"data_retransmits":3,"fin_wait_2_s":60,"time_wait_sockets":1000}}"#
    static func transition(_ seq: Int, conn: String = "5", from: String, to: String, mono: Int) -> String {
        #"{"v":1,"seq":\#(seq),"type":"transition","time":"2026-11-21T06:30:00.000000000Z","mono_ns":\#(mono),"conn":"\#(conn)","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":40000,"raddr":"198.18.0.2","rport":8080,"owner_known":true,"cpu":0,"kernel_from":"\#(from)","kernel_to":"\#(to)","prev_state_ns":null,"peer_fin":false}"#
    }
    static var goodLines: [String] {
        [header, transition(2, from: "CLOSE", to: "SYN_SENT", mono: 2000), transition(3, from: "SYN_SENT", to: "ESTABLISHED", mono: 3000)]
    }

    /// Connections still open at the end go out by first sight, ties by id:
    /// the same text on every run (hash order differs per process).
    @Test func connectionsOpenAtTheEndFirstSeenTogetherGoOutInIdOrder() throws {
        let s = try Scratch()
        let ids = [907, 12, 4401, 58, 3, 770, 2048, 31, 999, 64, 150, 8]
        var lines = [Self.header]
        for (k, id) in ids.enumerated() {
            lines.append(#"{"v":1,"seq":\#(k + 2),"type":"snapshot","time":"2026-11-21T06:30:00.000000000Z","mono_ns":5000,"conn":"\#(id)","pid":0,"comm":"","netns":1,"family":4,"laddr":"198.18.0.1","lport":\#(40000 + k),"raddr":"198.18.0.2","rport":8080,"owner_known":false,"state":"ESTABLISHED","kernel_state":"ESTABLISHED"}"#)
        }
        let path = try s.file("open.jsonl", lines.joined(separator: "\n") + "\n")
        let (text, diagnostics, result) = replay([path], json: false)
        #expect(result.exitStatus == 0, "\(diagnostics)")
        let order = text.split(separator: "\n").filter { $0.hasPrefix("conn ") }.compactMap { Int($0.dropFirst(5).prefix { $0 != " " }) }
        #expect(order == ids.sorted())
    }

    @Test func aMalformedLineIsNamedSkippedAndCounted() throws {
        let s = try Scratch()
        var lines = Self.goodLines
        lines.insert(#"{"v":1,"seq":2,"type":"transition","mono_ns":"soon"}"#, at: 1)
        lines.insert("not json at all", at: 2)
        let path = try s.file("bad.jsonl", lines.joined(separator: "\n") + "\n")
        let (text, diagnostics, result) = replay([path], json: false)
        #expect(result.malformed == 2)
        #expect(result.exitStatus == 65)
        #expect(diagnostics.contains { $0.contains("bad.jsonl:2:") && $0.contains("mono_ns") })
        #expect(diagnostics.contains { $0.contains("bad.jsonl:3:") && $0.contains("not a JSON object") })
        // The good lines around them were still replayed.
        #expect(text.contains("SYN_SENT      -> ESTABLISHED"))
        #expect(text.contains("malformed lines skipped: 2"))
    }

    @Test func aSocketlessResetWithAConnectionIdIsMalformed() throws {
        // Found by the mutation property: conn "1" with no_socket true read back as conn "".
        let line = #"{"v":1,"seq":7,"type":"reset","time":"2026-11-21T06:30:00.000000005Z","mono_ns":5,"conn":"1","pid":0,"comm":"","netns":1,"family":4,"laddr":"198.18.0.2","lport":1,"raddr":"198.18.0.1","rport":2,"owner_known":false,"cpu":1,"direction":"sent","kernel_state":"CLOSE","reason":3,"no_socket":true}"#
        var parser = LogRecordParser()
        let r = Array(line.utf8).withUnsafeBytes { parser.parse($0) }
        #expect(r.map { _ in "" } == .failure(LogParseFailure(message: #"a "no_socket" record must have "conn":"""#)))
        let ok = Array(line.replacingOccurrences(of: #""conn":"1""#, with: #""conn":"""#).utf8).withUnsafeBytes { parser.parse($0) }
        #expect((try? ok.get())?.event.noSocket == true)
    }

    @Test func strictStopsAtTheFirstMalformedLine() throws {
        let s = try Scratch()
        var lines = Self.goodLines
        lines.insert(#"{"v":1,"seq":2,"type":"transition","mono_ns":1,"conn":5}"#, at: 1)
        let path = try s.file("bad.jsonl", lines.joined(separator: "\n") + "\n")
        let (_, diagnostics, result) = replay([path], json: false, strict: true)
        #expect(result.exitStatus == 65)
        #expect(result.stop == .malformed("\(path):2"))
        #expect(result.records == 0)  // the header only; nothing after line 2 was read
        #expect(diagnostics.contains { $0.contains(":2:") && $0.contains("\"conn\" must be a string") })
    }

    @Test func anUnknownFormatVersionIsRefused() throws {
        let s = try Scratch()
        let v2 = Self.header.replacingOccurrences(of: #""format_version":1"#, with: #""format_version":2"#)
            .replacingOccurrences(of: #"{"v":1,"#, with: #"{"v":2,"#)
        let path = try s.file("v2.jsonl", ([v2] + Self.goodLines.dropFirst()).joined(separator: "\n") + "\n")
        let (_, diagnostics, result) = replay([path], json: false)
        #expect(result.exitStatus == 76)
        #expect(diagnostics.count == 1 && diagnostics[0].contains("v2.jsonl:1: format version 2"))
    }

    @Test func aCutLastLineIsAWarningNotAnError() throws {
        let s = try Scratch()
        let text = Self.goodLines.joined(separator: "\n") + "\n" + String(Self.transition(4, from: "ESTABLISHED", to: "FIN_WAIT1", mono: 4000).prefix(90))
        let path = try s.file("cut.jsonl", text)
        let (out, diagnostics, result) = replay([path], json: false)
        #expect(result.exitStatus == 0 && result.malformed == 0 && result.cutLastLines == 1)
        #expect(diagnostics.count == 1 && diagnostics[0].contains("cut.jsonl:4:") && diagnostics[0].contains("cut off"))
        #expect(out.contains("-> ESTABLISHED"))
    }

    @Test func hugeLinesGarbageAndInvalidUTF8AreSkipped() throws {
        let s = try Scratch()
        var bytes = Array((Self.goodLines[0] + "\n").utf8)
        bytes += Array(repeating: UInt8(ascii: "x"), count: 3 << 20) + [10]  // 3 MiB line
        bytes += Array(Self.goodLines[1].utf8) + [10]
        bytes += [0x00, 0xff, 0xfe, 0x7b, 0x22, 0x0a - 1, 0x80] + [10]  // binary garbage
        bytes += Array(#"{"v":1,"seq":9,"type":"transition","time":"x","mono_ns":1,"comm":""#.utf8) + [0xc3, 0x28] + Array(#""}"#.utf8) + [10]
        bytes += Array(Self.goodLines[2].utf8) + [10]
        let path = try s.file("garbage.jsonl", bytes: bytes)
        let (out, diagnostics, result) = replay([path], json: false)
        #expect(result.malformed == 3)
        #expect(diagnostics.contains { $0.contains(":2:") && $0.contains("longer than the 1 MiB limit") })
        #expect(diagnostics.contains { $0.contains(":5:") && $0.contains("invalid UTF-8") })
        #expect(out.contains("SYN_SENT      -> ESTABLISHED"))
    }

    @Test func gzipLogsReadLikePlainOnes() throws {
        let s = try Scratch()
        let plain = try s.file("log.jsonl", Self.goodLines.joined(separator: "\n") + "\n")
        let gz = Process()
        gz.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gz.arguments = ["-k", plain]
        try gz.run()
        gz.waitUntilExit()
        let a = replay([plain], json: false), b = replay([plain + ".gz"], json: false)
        #expect(b.result.exitStatus == 0 && a.output.replacingOccurrences(of: plain, with: "F") == b.output.replacingOccurrences(of: plain + ".gz", with: "F"))
        // A corrupt stream: what came before is kept, the error is named.
        var data = try Array(Data(contentsOf: URL(fileURLWithPath: plain + ".gz")))
        data.removeLast(12)
        let cut = try s.file("cut.jsonl.gz", bytes: data)
        let c = replay([cut], json: false)
        #expect(c.result.exitStatus == 66)
        #expect(c.diagnostics.contains { $0.contains("cut.jsonl.gz") && $0.contains("gzip") })
    }

    @Test func unreadableInputsFailBeforeAnyOutput() throws {
        let s = try Scratch()
        let good = try s.file("good.jsonl", Self.goodLines.joined(separator: "\n") + "\n")
        let missing = replay([good, s.path + "/missing.jsonl"], json: false)
        #expect(missing.result.exitStatus == 66 && missing.output.isEmpty)
        #expect(missing.diagnostics == ["tcptrail: cannot open \(s.path)/missing.jsonl: no such file"])
        let dir = replay([s.path], json: false)
        #expect(dir.result.exitStatus == 66 && dir.diagnostics.first?.contains("is a directory") == true)
    }

    @Test func rotatedFilesAreReplayedInSeqOrderAsOneRun() throws {
        let s = try Scratch()
        let second = Self.header.replacingOccurrences(of: #""seq":1,"#, with: #""seq":3,"#)
        let a = try s.file("log.jsonl.1", [Self.header, Self.transition(2, from: "CLOSE", to: "SYN_SENT", mono: 2000)].joined(separator: "\n") + "\n")
        let b = try s.file("log.jsonl", [second, Self.transition(4, from: "SYN_SENT", to: "ESTABLISHED", mono: 3000)].joined(separator: "\n") + "\n")
        let (out, _, result) = replay([b, a], json: false)
        #expect(result.runs == 1)
        #expect(out.contains("SYN_SENT      -> ESTABLISHED   established"))
        #expect(out.contains("complete: no gaps") == false && out.contains("no summary record"))
        // A record missing by seq is reported as a gap.
        let c = try s.file("gap.jsonl", [Self.header, Self.transition(5, from: "CLOSE", to: "SYN_SENT", mono: 2000)].joined(separator: "\n") + "\n")
        #expect(replay([c], json: false).output.contains("3 records missing by seq in 1 gap(s)"))
    }

    @Test func filtersAndSelectionsPickConnectionsAndTimes() throws {
        let s = try Scratch()
        let lines = [Self.header, Self.transition(2, conn: "5", from: "CLOSE", to: "SYN_SENT", mono: 2_000_000_000),
                     Self.transition(3, conn: "6", from: "CLOSE", to: "SYN_SENT", mono: 9_000_000_000).replacingOccurrences(of: "40000", with: "40001")]
        let path = try s.file("log.jsonl", lines.joined(separator: "\n") + "\n")
        #expect(replay([path], json: false) { $0.conn = ConnectionID(cookie: 6) }.output.contains("conn 6 ") == true)
        #expect(replay([path], json: false) { $0.conn = ConnectionID(cookie: 6) }.output.contains("conn 5 ") == false)
        let lport = replay([path], json: false) { $0.filter.localPorts = [40000] }.output
        #expect(lport.contains("conn 5 ") && !lport.contains("conn 6 "))
        // Boot offset 1795242600 s: mono 9 s is 06:30:09 UTC.
        let late = replay([path], json: true) { $0.since = WallClock.parseRFC3339("2026-11-21T06:30:05Z") }.output
        #expect(jsonRecords(late).compactMap { $0["conn"] as? String } == ["6"])
    }
}

/// Replaces one of the line's numbers (the `which`-th, wrapping) with an edge
/// value picked by `pick`: 0, 1, Int64.max, UInt64.max and their neighbours.
func replaceNumber(in line: inout [UInt8], _ which: Int, _ pick: UInt8) {
    let ranges = HostileLogTests.numberRanges(line)
    guard !ranges.isEmpty else { return }
    let edges = HostileLogTests.edgeNumbers
    line.replaceSubrange(ranges[which % ranges.count], with: Array(edges[Int(pick) % edges.count].utf8))
}

/// Property-based robustness: whatever the bytes, the parser and the replay
/// never crash, and every line that is not a record is reported.
@Suite struct ReplayRobustnessTests {
    @Test func randomBytesNeverCrashTheParser() async {
        var parser = LogRecordParser()
        await propertyCheck(count: 20_000, input: Gen.uint8().array(of: 0...300)) { bytes in
            let r = bytes.withUnsafeBytes { parser.parse($0) }
            if case .success = r { Issue.record("random bytes parsed as a record: \(bytes)") }
        }
    }

    @Test func mutatedRecordsNeverCrashAndRoundTripWhenAccepted() async {
        var parser = LogRecordParser()
        let seeds = ReplayInputTests.goodLines.map { Array($0.utf8) } + [
            Array(#"{"v":1,"seq":7,"type":"reset","time":"2026-11-21T06:30:00.000000005Z","mono_ns":5,"conn":"","pid":0,"comm":"\u001b\u00ff\"","netns":1,"family":6,"laddr":"fd00::1","lport":1,"raddr":"fd00::2","rport":2,"owner_known":false,"cpu":1,"direction":"sent","kernel_state":"CLOSE","reason":3,"no_socket":true}"#.utf8),
            Array(#"{"v":1,"seq":8,"type":"lost","time":"2026-11-21T06:30:00.000000005Z","mono_ns":5,"count":3,"total":9,"total_by_type":{"transition":8,"reset":1}}"#.utf8),
        ]
        let mutation = zip(Gen.int(in: 0..<seeds.count), Gen.int(in: 0..<5), Gen.int(in: 0..<10_000), Gen.uint8())
        await propertyCheck(count: 30_000, input: mutation.array(of: 1...4)) { edits in
            var line = seeds[edits[0].0]
            for (_, op, pos, b) in edits {
                let at = line.isEmpty ? 0 : pos % line.count
                switch op {
                case 0: if !line.isEmpty { line[at] = b }
                case 1: line.insert(b, at: at)
                case 2: if !line.isEmpty { line.remove(at: at) }
                case 3: line = Array(line.prefix(at))
                default: replaceNumber(in: &line, pos, b)
                }
            }
            let first = line.withUnsafeBytes { parser.parse($0) }
            guard case .success(let r) = first, r.isKernelEvent else { return }
            // An accepted kernel record writes back to a line that reads the same.
            var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 0))
            var out = OutputBuffer()
            writer.append(r.event, to: &out)
            let again = out.bytes.dropLast().withUnsafeBytes { parser.parse($0) }
            guard case .success(let r2) = again else {
                Issue.record("rewritten record does not parse: \(out.string)")
                return
            }
            #expect(r2.event == r.event)
        }
    }

    @Test func replayOfGarbageFilesReportsEveryLine() async throws {
        let scratch = try Scratch()
        await propertyCheck(count: 200, input: Gen.uint8().array(of: 0...200).array(of: 1...40)) { lines in
            // Lines without a newline byte inside, and none that is blank.
            let blank: (UInt8) -> Bool = { $0 == 32 || $0 == 9 || $0 == 13 }
            let noNewline: ([UInt8]) -> [UInt8] = { line in line.map { $0 == 10 ? UInt8(0) : $0 } }
            let clean: [[UInt8]] = lines.map(noNewline).filter { !$0.allSatisfy(blank) }
            var bytes: [UInt8] = []
            for l in clean { bytes += l + [10] }
            let path = try! scratch.file("g.jsonl", bytes: bytes)
            let (_, _, result) = replay([path], json: false)
            #expect(result.malformed == UInt64(clean.count))
            #expect(result.exitStatus == (clean.isEmpty ? 0 : 65))
        }
    }
}

/// `WriterLayoutParser` (the fast path for tcptrail's own layout) must read
/// every line exactly as the general parser does, or leave it to it.
@Suite struct WriterLayoutParserTests {
    /// What a parse gave, as a comparable value.
    static func outcome(_ line: [UInt8], writerLayout: Bool) -> String {
        var parser = LogRecordParser()
        parser.tryWriterLayout = writerLayout
        switch line.withUnsafeBytes({ parser.parse($0) }) {
        case .success(let r):
            return "\(r.type) \(r.seq) \(r.mono) \(r.event) kernel=\(r.isKernelTransition) step=\(r.hasDocumentedStep) snap=\(String(describing: r.snapshotState))"
        case .failure(let f):
            return "failure: \(f.message) \(String(describing: f.unknownVersion))"
        }
    }

    /// The lines the writer makes of random traffic and of what the engine made of it.
    static func writerLines() -> [[UInt8]] {
        var rng = SplitMix64(state: 11)
        var (events, _, _) = randomTraffic(&rng, connections: 120)
        events[0].comm = ProcessName(bytes: [0x1b, 0x22, 0x5c, 0xff, 0x41])
        events[1].family = .ipv6
        events[1].localAddress = RawAddress(bytes: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        events[2].errorNumber = -5
        events[3].thread = ProcessName("pool-worker-7"); events[3].flags |= UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
        events[4].thread = ProcessName(bytes: [0x1b, 0x5c, 0x41]); events[4].flags |= UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
        // Owners' cgroups: a plain path (the fast path), one the general parser must unescape.
        events[5].cgroup = CgroupNames.add(CgroupInfo(path: "/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8695_a4b3c2d1e0f9.slice/crio-\(String(repeating: "ab", count: 32)).scope"))
        events[6].cgroup = CgroupNames.add(CgroupInfo(path: "/tt.slice/a\u{1b}\"b.service"))
        var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 0))
        var engine = HandshakeEngine()
        var lines: [[UInt8]] = []
        for e in events {
            var out = OutputBuffer()
            writer.append(e, to: &out)
            engine.process(e) { writer.append($0, to: &out) }
            lines += out.bytes.split(separator: 10).map(Array.init)
        }
        var out = OutputBuffer()
        engine.advance(to: .max / 2) { writer.append($0, to: &out) }
        return lines + out.bytes.split(separator: 10).map(Array.init)
    }

    @Test func writerLinesReadTheSameAndTakeTheFastPath() {
        var fast = 0
        for line in Self.writerLines() {
            #expect(Self.outcome(line, writerLayout: true) == Self.outcome(line, writerLayout: false), "\(String(decoding: line, as: UTF8.self))")
            var r = LogRecord()
            if line.withUnsafeBufferPointer({ WriterLayoutParser.parse($0.baseAddress!, $0.count, into: &r) }) { fast += 1 }
        }
        // Every kernel record and made-up transition (not anomalies): most lines.
        #expect(fast * 10 > Self.writerLines().count * 8)
    }

    @Test func mutatedWriterLinesReadTheSameEitherWay() async {
        let seeds = Self.writerLines()
        let mutation = zip(Gen.int(in: 0..<seeds.count), Gen.int(in: 0..<5), Gen.int(in: 0..<10_000), Gen.uint8())
        await propertyCheck(count: 30_000, input: mutation.array(of: 1...3)) { edits in
            var line = seeds[edits[0].0]
            for (_, op, pos, b) in edits {
                let at = line.isEmpty ? 0 : pos % line.count
                // Digits, quotes, commas and letters of the layout, as often as any byte.
                let byte = [UInt8(ascii: "0"), UInt8(ascii: "9"), UInt8(ascii: "\""), UInt8(ascii: ","), UInt8(ascii: "-"), UInt8(ascii: "n"), b][Int(b) % 7]
                switch op {
                case 0: if !line.isEmpty { line[at] = byte }
                case 1: line.insert(byte, at: at)
                case 2: if !line.isEmpty { line.remove(at: at) }
                case 3: line = Array(line.prefix(at))
                default: replaceNumber(in: &line, pos, b)
                }
            }
            #expect(Self.outcome(line, writerLayout: true) == Self.outcome(line, writerLayout: false), "\(String(decoding: line, as: UTF8.self))")
        }
    }
}
