import Foundation
import Testing
@testable import TCPTrailCore

/// Issue 17, item 5: the text's time formats, CSV/TSV, columns and widths.
@Suite struct TextFormatTests {
    /// The recorded transition (curl 127.0.0.1:42174 -> 198.18.0.2:8080, SYN_SENT -> ESTABLISHED)
    /// through a writer in the given format.
    func line(_ format: TextFormat, documented: Bool = false, header: Bool = true, _ e: KernelEvent = event()) -> [String] {
        var w = format.writer(clock: fixedClock, documented: documented, startMono: e.monoNanoseconds - 1_500_000_000)
        var out = OutputBuffer()
        if header { w.appendHeader(to: &out) }
        w.append(e, to: &out)
        return out.string.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    @Test func timeFormatsAgreeWithFoundation() throws {
        let e = event()
        let unix = Double(fixedClock.unixNanoseconds(mono: e.monoNanoseconds)) / 1e9
        let date = Date(timeIntervalSince1970: unix)
        func formatted(_ pattern: String, _ zone: TimeZone) -> String {
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.timeZone = zone
            f.dateFormat = pattern
            return f.string(from: date)
        }
        let utc = try #require(TimeZone(identifier: "UTC"))
        let plusFiveThirty = try #require(TimeZone(secondsFromGMT: 5 * 3600 + 1800))
        var f = TextFormat()
        f.timeFormat = .iso
        #expect(line(f)[1].hasPrefix(formatted("yyyy-MM-dd'T'HH:mm:ss.", utc)))
        #expect(line(f)[1].prefix(28).hasSuffix("Z "), "\(line(f)[1])")
        f.timeFormat = .isoLocal
        f.utcOffsetSeconds = 5 * 3600 + 1800
        #expect(line(f)[1].hasPrefix(formatted("yyyy-MM-dd'T'HH:mm:ss.", plusFiveThirty)))
        #expect(line(f)[1].prefix(32).hasSuffix("+05:30"), "\(line(f)[1])")
        f.timeFormat = .local
        #expect(line(f)[1].hasPrefix(formatted("HH:mm:ss.", plusFiveThirty)))
        #expect(line(f)[0].hasPrefix("TIME(+05:30)"))
        f.utcOffsetSeconds = -(3 * 3600)
        #expect(line(f)[0].hasPrefix("TIME(-03:00)"))
        f.timeFormat = .relative
        #expect(line(f)[1].hasPrefix("1.500000 "), "\(line(f)[1])")
        #expect(line(f)[0].hasPrefix("TIME(s)"))
    }

    @Test func csvIsReadByARealCSVReader() throws {
        var e = event()
        e.comm = ProcessName("a,b\"c")
        var f = TextFormat()
        f.style = .csv
        let lines = line(f, documented: true, e)
        #expect(lines[0] == TextColumn.allCases.map(\.rawValue).joined(separator: ","))
        // Python's csv module, outside tcptrail, reads the fields back.
        let csv = lines.joined(separator: "\n") + "\n"
        let fields = try pythonCSV(csv)
        #expect(fields.count == 2 && fields.allSatisfy { $0.count == TextColumn.allCases.count }, "\(fields)")
        let row = Dictionary(uniqueKeysWithValues: zip(fields[0], fields[1]))
        #expect(row["comm"] == "a,b\"c" && row["event"] == "transition" && row["laddr"] == "127.0.0.1" && row["rport"] == "8080")
        #expect(row["old"] == "SYN_SENT" && row["new"] == "ESTABLISHED" && row["ms"] == "0.361", "\(row)")
    }

    func pythonCSV(_ text: String, delimiter: String = ",") throws -> [[String]] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", "import csv, json, sys\nprint(json.dumps(list(csv.reader(sys.stdin, delimiter=sys.argv[1]))))", delimiter]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        try p.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return try JSONDecoder().decode([[String]].self, from: data)
    }

    @Test func tsvAndChosenColumns() throws {
        var f = TextFormat()
        f.style = .tsv
        f.columns = try TextLinesWriter.columns("laddr, lport,new").get()
        let lines = line(f)
        #expect(lines == ["laddr\tlport\tnew", "127.0.0.1\t42174\tESTABLISHED"])
        f.style = .aligned
        f.columns = try TextLinesWriter.columns("comm,raddr,ms").get()
        #expect(line(f) == ["COMM            RADDR           MS", "curl            198.18.0.2      0.361"])
        if case .failure(let error) = TextLinesWriter.columns("time,bogus") { #expect(error.name == "bogus") } else { Issue.record("bogus accepted") }
    }

    @Test func everyColumnLinesUpUnderItsTitle() throws {
        // Documented and raw, narrow and after widening.
        for documented in [false, true] {
            let lines = line(TextFormat(), documented: documented)
            let header = lines[0], row = lines[1]
            for (title, value) in [("PID", "5536"), ("COMM", "curl"), ("LADDR", "127.0.0.1"), ("LPORT", "42174"), ("RADDR", "198.18.0.2"),
                                   ("RPORT", "8080"), ("OLDSTATE", "SYN_SENT"), ("-> NEWSTATE", "-> ESTABLISHED"), ("MS", "0.361")] {
                let at = header.range(of: title).map { header.distance(from: header.startIndex, to: $0.lowerBound) }
                let valueAt = row.range(of: value).map { row.distance(from: row.startIndex, to: $0.lowerBound) }
                #expect(at != nil && at == valueAt, "\(title) at \(at ?? -1), \(value) at \(valueAt ?? -1)\n\(header)\n\(row)")
            }
            #expect(!row.hasSuffix(" "))
        }
        // The longest documented state, SYN_RECEIVED, keeps the columns after it in place.
        var e = event()
        e.oldState = .synRecv
        e.newState = .established
        let lines = line(TextFormat(), documented: true, e)
        #expect(lines[1].contains("SYN_RECEIVED -> ESTABLISHED"), "\(lines[1])")
        #expect(lines[0].range(of: "-> NEWSTATE")?.lowerBound.utf16Offset(in: lines[0]) == lines[1].range(of: "-> ")?.lowerBound.utf16Offset(in: lines[1]), "\(lines)")
    }

    @Test func aLongAddressWidensTheColumnsUnderANewHeader() throws {
        var e = event()
        e.family = .ipv6
        e.localAddress = RawAddress(bytes: [0xfd, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc])
        e.remoteAddress = RawAddress(bytes: [0xfd] + [UInt8](repeating: 0, count: 14) + [1])
        var w = TextFormat().writer(clock: fixedClock, documented: true, startMono: 0)
        var out = OutputBuffer()
        w.appendHeader(to: &out)
        w.append(event(), to: &out)
        w.append(e, to: &out)
        w.append(event(), to: &out)
        let lines = out.string.split(separator: "\n").map(String.init)
        #expect(lines.count == 5, "\(lines)")
        #expect(lines[2].hasPrefix("TIME(UTC)"), "a second header: \(lines)")
        for row in lines[3...4] {
            #expect(row.range(of: "-> ")?.lowerBound.utf16Offset(in: row) == lines[2].range(of: "-> NEWSTATE")?.lowerBound.utf16Offset(in: lines[2]), "\(lines)")
        }
        #expect(lines[3].contains("fd00:1234:5678:9abc:def0:1234:5678:9abc 42174 fd00::1"), "\(lines[3])")
    }

    @Test func aSelfTransitionIsInTheDocumentsNames() {
        var e = event()
        e.oldState = .finWait1
        e.newState = .finWait1
        let documented = line(TextFormat(), documented: true, header: false, e)[0]
        #expect(documented.contains("FIN_WAIT_1   -> FIN_WAIT_1") && documented.contains("unchanged (close() on a closing socket)"), "\(documented)")
        #expect(!documented.contains("FIN_WAIT1"))
        let raw = line(TextFormat(), header: false, e)[0]
        #expect(raw.contains("FIN_WAIT1   -> FIN_WAIT1"), "--raw keeps the kernel's names: \(raw)")
    }
}
