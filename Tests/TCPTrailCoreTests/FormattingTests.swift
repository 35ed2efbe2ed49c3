import Foundation
import Testing
@testable import TCPTrailCore
@testable import TCPTrailLog

func event(_ bytes: [UInt8] = recordedTransition()) -> KernelEvent {
    bytes.withUnsafeBytes { (try? EventDecoder.decode($0).get())! }
}

/// A clock that puts mono 0 at 2026-11-21T04:43:00Z.
let fixedClock = WallClock(bootOffsetNanoseconds: 1_795_236_180_000_000_000)

@Suite struct FormattingTests {
    @Test func decimalsAtEveryDigitCount() {
        var values: [UInt64] = [0, 1, 9, UInt64.max, UInt64.max - 1]
        var p: UInt64 = 10
        for _ in 1...19 {
            values += [p - 1, p, p + 1, p + p / 2]
            if p > UInt64.max / 10 { break }
            p *= 10
        }
        for v in values {
            var out = OutputBuffer(capacity: 4)
            out.append(decimal: v)
            #expect(out.string == String(v))
            var padded = OutputBuffer(capacity: 4)
            padded.append(decimal: v, zeroPaddedTo: 7)
            let text = String(v)
            #expect(padded.string == String((String(repeating: "0", count: 7) + text).suffix(7)))
        }
    }

    @Test func staticNamesAreTheRawValues() {
        for s in TCPState.allCases { #expect(s.nameBytes.description == s.rawValue) }
        for s in Step.allCases { #expect(s.nameBytes.description == s.rawValue) }
    }

    @Test func rfc3339WithNanoseconds() {
        var clock = fixedClock
        var out = OutputBuffer()
        clock.appendRFC3339(mono: 123_456_789, to: &out)
        #expect(out.string == "2026-11-21T04:43:00.123456789Z")
        out.removeAll()
        clock.appendRFC3339(mono: 86_400_000_000_001, to: &out)
        #expect(out.string == "2026-11-22T04:43:00.000000001Z")
    }

    @Test func civilDatesAgreeWithFoundation() {
        var clock = WallClock(bootOffsetNanoseconds: 0)
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        for seconds in stride(from: Int64(0), to: 4_102_444_800, by: 7_919_993) {
            var out = OutputBuffer()
            clock.appendRFC3339(mono: UInt64(seconds) * 1_000_000_000, to: &out)
            let expected = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
            #expect(out.string == expected.replacingOccurrences(of: "Z", with: ".000000000Z"))
        }
    }

    @Test func jsonTransitionRecordHasTheV1Fields() throws {
        var writer = JSONLinesWriter(clock: fixedClock)
        var out = OutputBuffer()
        writer.append(event(), to: &out)
        writer.append(event(), to: &out)
        let lines = out.string.split(separator: "\n")
        #expect(lines.count == 2)
        let record = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(record["v"] as? Int == 1)
        #expect(record["seq"] as? Int == 1)
        #expect(record["type"] as? String == "transition")
        #expect(record["time"] as? String == "2026-11-21T04:59:27.358511830Z")
        #expect(record["mono_ns"] as? Int == 987_358_511_830)
        #expect(record["conn"] as? String == "4217.2")
        #expect(record["pid"] as? Int == 5536)
        #expect(record["comm"] as? String == "curl")
        #expect(record["netns"] as? Int == 4_026_531_833)
        #expect(record["family"] as? Int == 4)
        #expect(record["laddr"] as? String == "127.0.0.1")
        #expect(record["lport"] as? Int == 42174)
        #expect(record["raddr"] as? String == "198.18.0.2")
        #expect(record["rport"] as? Int == 8080)
        #expect(record["kernel_from"] as? String == "SYN_SENT")
        #expect(record["kernel_to"] as? String == "ESTABLISHED")
        #expect(record["prev_state_ns"] as? Int == 361_612)
        let second = try #require(try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
        #expect(second["seq"] as? Int == 2)
    }

    @Test func jsonOtherRecordTypes() throws {
        var writer = JSONLinesWriter(clock: fixedClock)
        var out = OutputBuffer()
        var e = event()
        e.kind = .retransmit; e.retransmit = .syn; e.newState = .synSent
        writer.append(e, to: &out)
        e.kind = .reset; e.reset = .sent; e.retransmit = nil
        writer.append(e, to: &out)
        e.kind = .error; e.reset = nil; e.errorNumber = 111
        writer.append(e, to: &out)
        writer.appendLost(count: 5, total: 12, byKind: [.transition: 10, .reset: 2], mono: 1, to: &out)
        let records = try out.string.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(records[0]["type"] as? String == "retransmit")
        #expect(records[0]["what"] as? String == "syn")
        #expect(records[0]["kernel_state"] as? String == "SYN_SENT")
        #expect(records[1]["type"] as? String == "reset")
        #expect(records[1]["direction"] as? String == "sent")
        #expect(records[2]["type"] as? String == "error")
        #expect(records[2]["errno"] as? Int == 111)
        #expect(records[2]["error"] as? String == "ECONNREFUSED")
        #expect(records[3]["type"] as? String == "lost")
        #expect(records[3]["count"] as? Int == 5)
        #expect(records[3]["total"] as? Int == 12)
        #expect(records[3]["total_by_type"] as? [String: Int] == ["transition": 10, "reset": 2])
        #expect(records.map { $0["seq"] as? Int } == [1, 2, 3, 4])
    }

    @Test func hostileProcessNamesAreEscaped() throws {
        var e = event()
        e.comm = ProcessName("\u{1b}]0;pwn\u{7}\"\\x")
        var json = JSONLinesWriter(clock: fixedClock)
        var out = OutputBuffer()
        json.append(e, to: &out)
        #expect(!out.bytes.contains(0x1b))
        #expect(!out.bytes.contains(0x07))
        let record = try #require(try JSONSerialization.jsonObject(with: Data(out.bytes.dropLast())) as? [String: Any])
        #expect(record["comm"] as? String == "\u{1b}]0;pwn\u{7}\"\\x")

        var text = TextLinesWriter(clock: fixedClock)
        out.removeAll()
        text.append(e, to: &out)
        #expect(!out.bytes.contains(where: { $0 < 0x20 && $0 != 0x0a }))
        #expect(out.string.contains("\\x1b]0;pwn\\x07\"\\\\x"))
    }

    @Test func highBytesInNamesStayValidJSON() throws {
        var e = event()
        e.comm = ProcessName(a: 0x00ff_fe80, b: 0)  // bytes 80 fe ff: not UTF-8
        var json = JSONLinesWriter(clock: fixedClock)
        var out = OutputBuffer()
        json.append(e, to: &out)
        #expect(String(validatingUTF8: out.bytes.map { CChar(bitPattern: $0) } + [0]) != nil)
        #expect(out.string.contains("\"comm\":\"\\u0080\\u00fe\\u00ff\""))
    }

    @Test func textLineIsAligned() {
        var text = TextLinesWriter(clock: fixedClock)
        var out = OutputBuffer()
        text.appendHeader(to: &out)
        text.append(event(), to: &out)
        let lines = out.string.split(separator: "\n")
        #expect(lines[1] == "04:59:27.358511 5536    curl            127.0.0.1       42174 198.18.0.2      8080  SYN_SENT    -> ESTABLISHED 0.361")
        let header = lines[0]
        #expect(header.range(of: "OLDSTATE")?.lowerBound.utf16Offset(in: header) == lines[1].range(of: "SYN_SENT")?.lowerBound.utf16Offset(in: lines[1]))
    }
}

@Suite struct AddressTests {
    func text(_ bytes: [UInt8], family: AddressFamily) -> String {
        var out = OutputBuffer()
        out.append(address: RawAddress(bytes: bytes), family: family)
        return out.string
    }

    @Test(arguments: [
        "fd00::1", "::", "::1", "fd00:0:0:1::2", "2001:db8::1:0:0:1", "fe80::1:2:3:4",
        "1:2:3:4:5:6:7:8", "1::8", "fd00:198:18::", "::ffff:198.18.0.1",
    ])
    func ipv6MatchesInetNtop(_ address: String) throws {
        var raw = in6_addr()
        #expect(inet_pton(AF_INET6, address, &raw) == 1)
        let bytes = withUnsafeBytes(of: raw) { Array($0) }
        var buffer = [CChar](repeating: 0, count: 64)
        inet_ntop(AF_INET6, &raw, &buffer, 64)
        let expected = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #expect(text(bytes, family: .ipv6) == expected)
    }

    @Test func ipv4() {
        #expect(text([198, 18, 0, 1], family: .ipv4) == "198.18.0.1")
        #expect(text([0, 0, 0, 0], family: .ipv4) == "0.0.0.0")
    }

    @Test func cidrMatching() throws {
        let net = try #require(AddressPrefix("198.18.0.0/15"))
        #expect(net.contains(RawAddress(bytes: [198, 19, 255, 1]), family: .ipv4))
        #expect(!net.contains(RawAddress(bytes: [198, 20, 0, 1]), family: .ipv4))
        #expect(!net.contains(RawAddress(bytes: [198, 18, 0, 1]), family: .ipv6))
        let v6 = try #require(AddressPrefix("fd00::/8"))
        #expect(v6.contains(RawAddress(bytes: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), family: .ipv6))
        #expect(!v6.contains(RawAddress(bytes: [0xfe, 0x80] + [UInt8](repeating: 0, count: 14)), family: .ipv6))
        let host = try #require(AddressPrefix("127.0.0.1"))
        #expect(host.prefixLength == 32)
        for bad in ["198.18.0.0/33", "300.1.1.1", "fd00:::1", "abc", "1.2.3", "fd00::/129", ""] {
            #expect(AddressPrefix(bad) == nil, "\(bad) should be rejected")
        }
    }
}
