import CTCPTrailEvent
import TCPTrailCore
import TCPTrailHost

/// The fast path of `LogRecordParser`: a kernel record (transition,
/// retransmit, reset, error, listen_drop) laid out byte for byte as
/// `JSONLinesWriter` writes it, read in one pass from left to right.
///
/// Nearly every line of a tcptrail log is such a record, so this is where
/// replay spends its parsing time. It is strict: any other layout (another key
/// order, an unknown key, white space, an escape or a non-ASCII byte in a
/// string, a number with a fraction) makes it return nil, and the general
/// parser reads the line instead. So logs from other writers still parse,
/// and malformed lines still get the general parser's error message. What it
/// accepts, it reads to the same `LogRecord` (ReplayTests checks both agree).
struct WriterLayoutParser {
    private let p: UnsafePointer<UInt8>
    private let end: Int
    private var i = 0

    private init(_ p: UnsafePointer<UInt8>, _ n: Int) {
        self.p = p
        end = n
    }

    /// Reads the line into `r`; false (and `r` half-filled) when the line
    /// is not in the writer's layout.
    static func parse(_ p: UnsafePointer<UInt8>, _ n: Int, into r: inout LogRecord) -> Bool {
        var cursor = WriterLayoutParser(p, n)
        return cursor.record(&r)
    }

    // MARK: - The record

    /// `"thread"`, written after `comm` where the owner's thread has its own name.
    private mutating func optionalThread(_ r: inout LogRecord) -> Bool {
        guard skip(",\"thread\":") else { return true }
        guard let thread = plainString() else { return false }
        r.event.thread = ProcessName(p + thread.start, count: thread.end - thread.start)
        return true
    }

    /// `"cgroup"` and what it names (`unit`, `container`, `pod`, which are
    /// read again from the path), written after `comm` and `thread` where known.
    private mutating func optionalCgroup(_ r: inout LogRecord) -> Bool {
        guard skip(",\"cgroup\":") else { return true }
        guard let path = plainString(), path.end > path.start, p[path.start] == UInt8(ascii: "/") else { return false }
        let text = String(decoding: UnsafeBufferPointer(start: p + path.start, count: path.end - path.start), as: UTF8.self)
        guard CgroupInfo.normalized(text) == text else { return false }
        r.event.cgroup = CgroupNames.intern(path: text)
        for key in [",\"unit\":", ",\"container\":", ",\"pod\":"] as [StaticString] where skip(key) {
            guard plainString() != nil else { return false }
        }
        return true
    }

    private mutating func record(_ r: inout LogRecord) -> Bool {
        r = LogRecord()
        guard skip("{\"v\":1,\"seq\":"), let seq = unsigned(),
              skip(",\"type\":\""), let type = kernelRecordType(),
              skip(",\"time\":"), let time = plainString(), WallClock.parseRecordTime(p + time.start, time.end - time.start) != nil,
              skip(",\"mono_ns\":"), let mono = unsigned(max: UInt64(Int64.max)),
              skip(",\"conn\":"), let conn = plainString(),
              (try? LogRecordParser.parseConn(p, conn, into: &r.event)) != nil,
              skip(",\"pid\":"), let pid = unsigned(max: UInt64(UInt32.max)),
              skip(",\"comm\":"), let comm = plainString(),
              optionalThread(&r), optionalCgroup(&r),
              skip(",\"netns\":"), let netns = unsigned(max: UInt64(UInt32.max)),
              skip(",\"family\":"), let family = unsigned(max: 255).flatMap({ AddressFamily(rawValue: UInt8($0)) }),
              skip(",\"laddr\":"), let laddr = plainString(),
              skip(",\"lport\":"), let lport = unsigned(max: 65535),
              skip(",\"raddr\":"), let raddr = plainString(),
              skip(",\"rport\":"), let rport = unsigned(max: 65535),
              skip(",\"owner_known\":"), let ownerKnown = bool()
        else { return false }
        r.type = type
        r.seq = seq
        r.mono = mono
        r.event.monoNanoseconds = mono
        r.event.pid = UInt32(pid)
        r.event.comm = ProcessName(p + comm.start, count: comm.end - comm.start)
        r.event.netns = UInt32(netns)
        r.event.family = family
        guard let local = address(laddr, family: family), let remote = address(raddr, family: family) else { return false }
        r.event.localAddress = local
        r.event.remoteAddress = remote
        r.event.localPort = UInt16(lport)
        r.event.remotePort = UInt16(rport)
        var flags: UInt8 = ownerKnown ? UInt8(TT_FLAG_OWNER_KNOWN.rawValue) : 0
        let socketless = conn.end == conn.start
        if socketless { flags |= UInt8(TT_FLAG_NO_SOCKET.rawValue) }

        // A transition the engine made up (2MSL) has no kernel fields, not even `cpu`.
        if type == .transition, skip(",\"from\":") {
            guard documentedTail(&r) else { return false }
            r.event.flags = flags
            return true
        }
        guard skip(",\"cpu\":"), let cpu = unsigned(max: 255) else { return false }
        r.event.cpu = UInt8(cpu)

        switch type {
        case .transition:
            r.event.kind = .transition
            guard skip(",\"kernel_from\":"), let from = state(),
                  skip(",\"kernel_to\":"), let to = state(),
                  skip(",\"prev_state_ns\":") else { return false }
            if !skip("null") {
                guard let prev = unsigned(), prev <= mono else { return false }
                r.event.previousStateNanoseconds = prev
            }
            guard skip(",\"peer_fin\":"), let peerFin = bool() else { return false }
            if peerFin { flags |= UInt8(TT_FLAG_PEER_FIN.rawValue) }
            if skip(",\"untracked\":true") { flags |= UInt8(TT_FLAG_UNTRACKED.rawValue) }
            if skip(",\"timewait\":\"") {
                var found: TimewaitStep?
                let start = i
                for step in TimewaitStep.allCases {
                    if skip(step.name), skip("\"") { found = step; break }
                    i = start
                }
                guard let found else { return false }
                r.event.timewait = found
            }
            r.event.oldState = from
            r.event.newState = to
            r.isKernelTransition = true
            if skip(",\"from\":") {
                guard documentedTail(&r) else { return false }
            } else {
                guard skip("}") else { return false }
            }
        case .retransmit:
            r.event.kind = .retransmit
            guard skip(",\"kernel_state\":"), kernelState(&r.event), skip(",\"what\":\"") else { return false }
            if skip("data\"") { r.event.retransmit = .data }
            else if skip("syn\"") { r.event.retransmit = .syn }
            else if skip("synack\"") { r.event.retransmit = .synack }
            else { return false }
            guard skip("}") else { return false }
        case .reset:
            r.event.kind = .reset
            guard skip(",\"direction\":\"") else { return false }
            if skip("sent\"") { r.event.reset = .sent }
            else if skip("received\"") { r.event.reset = .received }
            else { return false }
            guard skip(",\"kernel_state\":"), kernelState(&r.event) else { return false }
            if skip(",\"reason\":") {
                guard let reason = unsigned(max: UInt64(UInt32.max)) else { return false }
                r.event.resetReason = UInt32(reason)
            }
            // Only a reset no socket owned has no connection id, and it says so.
            if skip(",\"no_socket\":true") {
                guard socketless else { return false }
            }
            guard skip("}") else { return false }
        case .error:
            r.event.kind = .error
            guard skip(",\"kernel_state\":"), kernelState(&r.event),
                  skip(",\"errno\":"), let errorNumber = signed32(),
                  skip(",\"error\":"), plainString() != nil, skip("}") else { return false }
            r.event.errorNumber = errorNumber
        case .listenDrop:
            r.event.kind = .listenDrop
            guard skip("}") else { return false }
        default:
            return false
        }
        guard i == end else { return false }
        r.event.flags = flags
        return true
    }

    /// `"from":` is read; the rest of the engine's documented meaning and the
    /// end of the line: `"S","to":"S","step":"S","inferred":B[,"reason":"S"]}`.
    private mutating func documentedTail(_ r: inout LogRecord) -> Bool {
        guard plainString() != nil,
              skip(",\"to\":"), plainString() != nil,
              skip(",\"step\":"), plainString() != nil,
              skip(",\"inferred\":"), bool() != nil else { return false }
        if skip(",\"reason\":") { guard plainString() != nil else { return false } }
        guard skip("}"), i == end else { return false }
        r.hasDocumentedStep = true
        return true
    }

    /// A dotted quad read here (nearly every address); IPv6 by the general parser's code.
    private func address(_ v: JSONValue, family: AddressFamily) -> RawAddress? {
        guard family == .ipv4 else { return try? LogRecordParser.parseAddress(p, v, family: family, "") }
        // As the general parser: four parts of 1 to 3 digits, each below 256.
        var bytes: UInt32 = 0, part: UInt32 = 0, parts: UInt32 = 0, digits = 0
        for k in v.start..<v.end {
            let d = p[k] &- 48
            if d < 10 {
                guard digits < 3 else { return nil }
                part = part * 10 + UInt32(d)
                digits += 1
            } else {
                guard p[k] == UInt8(ascii: "."), digits > 0, part < 256, parts < 3 else { return nil }
                bytes |= part << (8 * parts)
                parts += 1; part = 0; digits = 0
            }
        }
        guard parts == 3, digits > 0, part < 256 else { return nil }
        return RawAddress(high: UInt64(bytes | part << 24), low: 0)
    }

    /// The kernel record types, the only ones read here.
    private mutating func kernelRecordType() -> LogRecordType? {
        if skip("transition\"") { return .transition }
        if skip("reset\"") { return .reset }
        if skip("retransmit\"") { return .retransmit }
        if skip("error\"") { return .error }
        if skip("listen_drop\"") { return .listenDrop }
        return nil
    }

    /// `kernel_state` of a retransmit, reset or error: a name or null.
    private mutating func kernelState(_ e: inout KernelEvent) -> Bool {
        if skip("null") { return true }
        guard let s = state() else { return false }
        e.oldState = s
        e.newState = s
        return true
    }

    // MARK: - Tokens

    /// Moves past `text` if the line continues with it.
    @inline(__always)
    private mutating func skip(_ text: StaticString) -> Bool {
        let n = text.utf8CodeUnitCount
        guard end - i >= n, Self.equal(p + i, text.utf8Start, n) else { return false }
        i += n
        return true
    }

    /// Byte-wise equality, 8 bytes at a time; the last word overlaps the one
    /// before instead of a byte loop (the keys are 4 to 20 bytes).
    @inline(__always)
    private static func equal(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        @inline(__always) func word(_ p: UnsafePointer<UInt8>, _ k: Int) -> UInt64 { UnsafeRawPointer(p + k).loadUnaligned(as: UInt64.self) }
        @inline(__always) func half(_ p: UnsafePointer<UInt8>, _ k: Int) -> UInt32 { UnsafeRawPointer(p + k).loadUnaligned(as: UInt32.self) }
        if n >= 8 {
            var k = 0
            while k + 8 < n {
                if word(a, k) != word(b, k) { return false }
                k += 8
            }
            return word(a, n - 8) == word(b, n - 8)
        }
        if n >= 4 { return half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4) }
        for k in 0..<n where a[k] != b[k] { return false }
        return true
    }

    /// A JSON integer of digits only, at most `max`; nil for anything else
    /// (a sign, a leading zero, a fraction or exponent is checked by the
    /// next `skip`, which expects `,` or `}`).
    @inline(__always)
    private mutating func unsigned(max: UInt64 = .max) -> UInt64? {
        guard i < end, case let first = p[i] &- 48, first < 10 else { return nil }
        let start = i
        i += 1
        var value = UInt64(first)
        if first == 0 { return i < end && p[i] &- 48 < 10 ? nil : 0 }
        // 19 digits cannot overflow: no check per digit.
        while i < end, i - start < 19, case let d = p[i] &- 48, d < 10 {
            value = value &* 10 &+ UInt64(d)
            i += 1
        }
        if i < end, p[i] &- 48 < 10 {
            // A 20th digit: UInt64 holds some; more never fit.
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(p[i] &- 48))
            i += 1
            if o1 || o2 || (i < end && p[i] &- 48 < 10) { return nil }
            value = s
        }
        return value <= max ? value : nil
    }

    /// `errno`: an integer that fits an Int32, maybe negative.
    private mutating func signed32() -> Int32? {
        let negative = i < end && p[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        guard let m = unsigned(max: UInt64(Int32.max) + 1) else { return nil }
        if negative { return Int32(-Int64(m)) }
        return m <= UInt64(Int32.max) ? Int32(m) : nil
    }

    @inline(__always)
    private mutating func bool() -> Bool? {
        if skip("true") { return true }
        if skip("false") { return false }
        return nil
    }

    /// A quoted string of ASCII without control bytes or escapes: its bytes.
    @inline(__always)
    private mutating func plainString() -> JSONValue? {
        guard i < end, p[i] == UInt8(ascii: "\"") else { return nil }
        i += 1
        let start = i
        i = JSONObjectScanner.skipPlainWords(p, from: i, end: end)
        while i < end {
            let b = p[i]
            if b == UInt8(ascii: "\"") {
                i += 1
                return JSONValue(kind: .string, start: start, end: i - 1)
            }
            guard b >= 0x20, b < 0x80, b != UInt8(ascii: "\\") else { return nil }
            i += 1
        }
        return nil
    }

    /// A quoted kernel state name.
    @inline(__always)
    private mutating func state() -> KernelTCPState? {
        guard let v = plainString() else { return nil }
        return KernelTCPState(name: p + v.start, count: v.end - v.start)
    }
}

extension KernelTCPState {
    /// Reads a kernel name such as `SYN_SENT` from bytes: the length and a
    /// byte or two pick the one candidate, one compare confirms it.
    init?(name p: UnsafePointer<UInt8>, count n: Int) {
        let s: KernelTCPState
        switch n {
        case 5: s = .close
        case 6: s = .listen
        case 7: s = .closing
        case 8: s = p[0] == UInt8(ascii: "L") ? .lastAck : p[4] == UInt8(ascii: "S") ? .synSent : .synRecv
        case 9: s = p[0] == UInt8(ascii: "T") ? .timeWait : p[8] == UInt8(ascii: "1") ? .finWait1 : .finWait2
        case 10: s = .closeWait
        case 11: s = .established
        case 12: s = .newSynRecv
        default: return nil
        }
        guard JSONStrings.memcmpEqual(p, s.nameBytes.utf8Start, n) else { return nil }
        self = s
    }
}

extension ProcessName {
    /// The first 16 bytes of `count` (as `init(bytes:)`), copied at once.
    init(_ p: UnsafePointer<UInt8>, count: Int) {
        var value = ProcessName()
        withUnsafeMutableBytes(of: &value) { raw in
            raw.copyMemory(from: UnsafeRawBufferPointer(start: p, count: min(count, 16)))
        }
        self = value
    }
}
