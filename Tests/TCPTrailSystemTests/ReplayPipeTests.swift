import Foundation
import Testing

/// Issue 14: `replay` reads what is not a seekable file (a pipe, a FIFO,
/// `<(cat log)`, /dev/stdin), plain or gzip, as it reads the file; and a
/// hostile log is named line by line (exit 65), never a crash (132).
/// Needs no privileges: the built binary and bash.
@Suite(.serialized) struct ReplayPipeTests {
    static let boot = "1795242600000000000"
    static func transition(_ seq: Int, conn: String, from: String, to: String, mono: Int) -> String {
        #"{"v":1,"seq":\#(seq),"type":"transition","time":"2026-11-21T06:30:00.000000000Z","mono_ns":\#(mono),"conn":"\#(conn)","pid":1,"comm":"x","netns":1,"family":4,"laddr":"198.18.0.1","lport":40000,"raddr":"198.18.0.2","rport":8080,"owner_known":true,"cpu":0,"kernel_from":"\#(from)","kernel_to":"\#(to)","prev_state_ns":null,"peer_fin":false}"#
    }
    static let lines = [
        #"{"v":1,"seq":1,"type":"header","time":"2026-11-21T06:30:00.000001000Z","mono_ns":1000,"format_version":1,"tcptrail_version":"t","hostname":"pipehost","kernel":"k","started":"2026-11-21T06:30:00.000001000Z","boot_offset_ns":\#(boot),"filters":{},"thresholds":{"close_wait_s":60,"data_retransmits":3,"fin_wait_2_s":60,"time_wait_sockets":1000}}"#,
        transition(2, conn: "5", from: "CLOSE", to: "SYN_SENT", mono: 2_000_000),
        transition(3, conn: "5", from: "SYN_SENT", to: "ESTABLISHED", mono: 3_000_000),
        transition(4, conn: "5", from: "ESTABLISHED", to: "CLOSE", mono: 4_000_000),
    ]

    /// A log, its gzip copy, and what replay --json makes of the plain file.
    struct Log {
        let dir: EventLogTests.PrivateDirectory
        let plain: String
        let gz: String
        let expected: String

        init() throws {
            dir = try EventLogTests.PrivateDirectory()
            plain = dir.path + "/log.jsonl"
            gz = plain + ".gz"
            try (ReplayPipeTests.lines.joined(separator: "\n") + "\n").write(toFile: plain, atomically: false, encoding: .utf8)
            try run(["gzip", "-k", plain])
            expected = try run([Products.tcptrail, "replay", "--json", plain]).stdout
            #expect(expected.contains("\"hostname\":\"pipehost\"") && expected.contains("\"to\":\"ESTABLISHED\""))
        }
    }

    /// Runs a bash command line with TCPTRAIL set to the binary.
    func bash(_ script: String) throws -> CommandResult {
        try run(["env", "TCPTRAIL=\(Products.tcptrail)", "bash", "-c", "set -o pipefail; " + script], check: false)
    }

    @Test func pipesAndProcessSubstitutionReadLikeTheFile() throws {
        let log = try Log()
        for source in [log.plain, log.gz] {
            for script in ["cat '\(source)' | \"$TCPTRAIL\" replay --json -",
                           "cat '\(source)' | \"$TCPTRAIL\" replay --json /dev/stdin",
                           "\"$TCPTRAIL\" replay --json <(cat '\(source)')",
                           "\"$TCPTRAIL\" replay --json /dev/stdin < '\(source)'"] {
                let r = try bash(script)
                #expect(r.status == 0, "\(script): \(r.stderr)")
                #expect(r.stdout == log.expected, "\(script)")
            }
        }
    }

    @Test func aFIFOReadsLikeTheFile() throws {
        let log = try Log()
        for source in [log.plain, log.gz] {
            let fifo = log.dir.path + "/fifo"
            unlink(fifo)
            #expect(mkfifo(fifo, 0o600) == 0)
            // In 64-byte writes, so the reader meets short reads (and half a gzip magic).
            let writer = try Background(["dd", "if=\(source)", "of=\(fifo)", "bs=64", "status=none"])
            let r = try run([Products.tcptrail, "replay", "--json", fifo], check: false)
            #expect(try writer.wait(timeout: 30) == 0)
            #expect(r.status == 0, "\(source): \(r.stderr)")
            #expect(r.stdout == log.expected, "\(source)")
        }
    }

    @Test func hostileLinesAreNamedNotACrash() throws {
        let log = try Log()
        let hostile = log.dir.path + "/hostile.jsonl"
        var lines = Self.lines
        lines.insert(Self.transition(5, conn: "6", from: "CLOSE", to: "SYN_SENT", mono: 5000).replacingOccurrences(of: #""prev_state_ns":null"#, with: #""prev_state_ns":5001"#), at: 2)
        lines.insert(Self.transition(6, conn: "7", from: "CLOSE", to: "SYN_SENT", mono: 0).replacingOccurrences(of: #""mono_ns":0"#, with: #""mono_ns":18446744073709551615"#), at: 3)
        lines.insert(Self.transition(7, conn: "8", from: "CLOSE", to: "SYN_SENT", mono: 6000).replacingOccurrences(of: "2026-11-21T06:30:00.000000000Z", with: "9999-12-31T23:59:59.999999999Z"), at: 4)
        try (lines.joined(separator: "\n") + "\n").write(toFile: hostile, atomically: false, encoding: .utf8)
        for args in [["replay", hostile], ["replay", "--json", hostile], ["replay", "--html", log.dir.path + "/r.html", hostile]] {
            let r = try run([Products.tcptrail] + args, check: false)
            #expect(r.status == 65, "\(args): \(r.status) \(r.stderr)")
            for n in 3...5 { #expect(r.stderr.contains("hostile.jsonl:\(n): "), "\(args): \(r.stderr)") }
        }
        // Headerless, first time in 1600: named, and the next record starts the clock.
        let headerless = log.dir.path + "/headerless.jsonl"
        try ([Self.lines[1].replacingOccurrences(of: "2026-11-21T06:30:00.000000000Z", with: "1600-01-01T00:00:00.000000000Z"), Self.lines[2]]
            .joined(separator: "\n") + "\n").write(toFile: headerless, atomically: false, encoding: .utf8)
        let r = try run([Products.tcptrail, "replay", headerless], check: false)
        #expect(r.status == 65 && r.stderr.contains("headerless.jsonl:1: \"time\" must be an RFC 3339 time"), "\(r.stderr)")
        #expect(r.stdout.contains("SYN_SENT      -> ESTABLISHED"))
    }

    /// `--conn`, `--since` and `--anomalies-only` narrow the summary as they
    /// narrow the timelines: it counts the connections shown, not the whole log.
    @Test func theSummaryCountsOnlyWhatTheSelectionShows() throws {
        let log = try Log()
        let path = log.dir.path + "/three.jsonl"
        // 5: opens in 1 ms and closes; 7: opens in 4 ms and stays in CLOSE_WAIT
        // past the 60 s threshold; 9: opens at 70 s in 2 ms, closes at 71 s.
        let s = 1_000_000_000
        let lines = Array(Self.lines) + [
            Self.transition(5, conn: "7", from: "CLOSE", to: "SYN_SENT", mono: 5_000_000),
            Self.transition(6, conn: "7", from: "SYN_SENT", to: "ESTABLISHED", mono: 9_000_000),
            Self.transition(7, conn: "7", from: "ESTABLISHED", to: "CLOSE_WAIT", mono: 10_000_000),
            Self.transition(8, conn: "9", from: "CLOSE", to: "SYN_SENT", mono: 70 * s),
            Self.transition(9, conn: "9", from: "SYN_SENT", to: "ESTABLISHED", mono: 70 * s + 2_000_000),
            Self.transition(10, conn: "9", from: "ESTABLISHED", to: "CLOSE", mono: 71 * s),
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        func summary(_ args: [String]) throws -> (states: String, anomalies: String, active: String, all: String) {
            let r = try run([Products.tcptrail, "replay"] + args + [path], check: false)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            func line(_ prefix: String) -> String {
                r.stdout.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) } ?? "(no line)"
            }
            return (line("connections by final state: "), line("anomalies: "), line("handshake SYN_SENT -> ESTABLISHED: "), r.stdout)
        }
        let whole = try summary([])
        #expect(whole.states == "CLOSED 2, CLOSE_WAIT 1" && whole.anomalies.contains("close_wait_stall 1"), "\(whole.all)")
        #expect(whole.active.hasPrefix("n=3 "), "\(whole.all)")
        #expect(!whole.all.contains("counted below"), "\(whole.all)")

        let five = try summary(["--conn", "5"])
        #expect(five.states == "CLOSED 1" && five.anomalies == "none" && five.active.hasPrefix("n=1 p50=1.000ms"), "\(five.all)")
        #expect(five.all.contains("counted below: only what --conn 5 selects"), "\(five.all)")
        let seven = try summary(["--conn", "7"])
        #expect(seven.states == "CLOSE_WAIT 1" && seven.anomalies == "close_wait_stall 1" && seven.active.hasPrefix("n=1 p50=4.000ms"), "\(seven.all)")
        // From 65 s on: 9's whole life, and 7's stall (7 changed no state there).
        let late = try summary(["--since", "2026-11-21T06:31:05Z"])
        #expect(late.states == "CLOSED 1" && late.anomalies.contains("close_wait_stall 1") && late.active.hasPrefix("n=1 p50=2.000ms"), "\(late.all)")
        let flagged = try summary(["--anomalies-only"])
        #expect(flagged.states == "CLOSE_WAIT 1" && flagged.active.hasPrefix("n=1 p50=4.000ms"), "\(flagged.all)")
        // The JSON summary record counts the same anomalies.
        let json = try run([Products.tcptrail, "replay", "--json", "--conn", "5", path]).stdout
        let last = json.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.contains(#""type":"summary""#) && last.contains(#""anomalies":{}"#), "\(last)")
    }
}
