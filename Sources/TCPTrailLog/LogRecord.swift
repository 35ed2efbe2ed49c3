import CTCPTrailEvent
#if canImport(Glibc)
import Glibc
#endif
import TCPTrailCore
import TCPTrailHost

/// One line of a v1 log, read back: what replay needs to re-run the engine.
public struct LogRecord: Sendable {
    public var type: LogRecordType = .other
    public var seq: UInt64 = 0
    public var mono: UInt64 = 0
    /// Kernel records: the event as the kernel side sent it. Snapshots and
    /// anomalies: their connection's identity fields.
    public var event = KernelEvent(monoNanoseconds: 0, cookie: 0, kind: .transition)
    /// A transition carrying `kernel_from`/`kernel_to`: the kernel's word, an
    /// input of the engine. Without them it is one the engine made up (2MSL).
    public var isKernelTransition = false
    /// The live engine's documented `step` is on the record: it was written
    /// after the engine decided (a held close, once its cause was known).
    public var hasDocumentedStep = false
    /// snapshot: the socket's kernel state; TIME_WAIT: ms it had left.
    public var snapshotState: KernelTCPState?
    public var expiresMilliseconds: UInt32 = 0
    /// anomaly: its name, `count`, and for a `listen_overflow` read from the
    /// kernel's counter, the accept queue then (an input of the engine).
    public var anomalyName: String? { get { rare?.anomalyName } set { withRare { $0.anomalyName = newValue } } }
    public var count: Int64?
    public var acceptQueue: Anomaly.AcceptQueue? { get { rare?.acceptQueue } set { withRare { $0.acceptQueue = newValue } } }
    /// header
    public var formatVersion: Int64? { get { rare?.formatVersion } set { withRare { $0.formatVersion = newValue } } }
    public var thresholds: AnomalyThresholds? { get { rare?.thresholds } set { withRare { $0.thresholds = newValue } } }
    public var bootOffsetNanoseconds: Int64? { get { rare?.bootOffsetNanoseconds } set { withRare { $0.bootOffsetNanoseconds = newValue } } }
    public var hostname: String? { get { rare?.hostname } set { withRare { $0.hostname = newValue } } }
    public var kernel: String? { get { rare?.kernel } set { withRare { $0.kernel = newValue } } }
    public var started: String? { get { rare?.started } set { withRare { $0.started = newValue } } }
    /// `time`, only when the parser was asked for it (`wantsTime`).
    public var time: String? { get { rare?.time } set { withRare { $0.time = newValue } } }
    /// `time` as Unix ns, with `time`.
    public var timeUnixNanoseconds: Int64? { get { rare?.timeUnixNanoseconds } set { withRare { $0.timeUnixNanoseconds = newValue } } }
    /// lost
    public var lostTotal: UInt64 = 0
    /// summary: records the log could not take.
    public var exportErrors: UInt64 = 0
    public var lostByType: [KernelEventKind: UInt64] { get { rare?.lostByType ?? [:] } set { withRare { $0.lostByType = newValue } } }
    /// untracked, summary: what full kernel tables kept from the record.
    public var untracked: TableGaps? { get { rare?.untracked } set { withRare { $0.untracked = newValue } } }
    /// transition: a move the kernel's socket table showed (reason
    /// `kernel_table` or `gone_from_kernel_table`), the state it moved to.
    public var settledByTable: TCPState? { get { rare?.settledByTable } set { withRare { $0.settledByTable = newValue } } }

    /// The fields of headers, anomalies and summaries, boxed: a kernel record,
    /// nearly every line, then stays small to build and copy.
    private final class Rare: @unchecked Sendable {
        var anomalyName: String?
        var acceptQueue: Anomaly.AcceptQueue?
        var formatVersion: Int64?
        var thresholds: AnomalyThresholds?
        var bootOffsetNanoseconds: Int64?
        var hostname: String?
        var kernel: String?
        var started: String?
        var time: String?
        var timeUnixNanoseconds: Int64?
        var lostByType: [KernelEventKind: UInt64] = [:]
        var untracked: TableGaps?
        var settledByTable: TCPState?

        init() {}

        init(copying o: Rare) {
            anomalyName = o.anomalyName; acceptQueue = o.acceptQueue; formatVersion = o.formatVersion
            thresholds = o.thresholds; bootOffsetNanoseconds = o.bootOffsetNanoseconds; hostname = o.hostname
            kernel = o.kernel; started = o.started; time = o.time; timeUnixNanoseconds = o.timeUnixNanoseconds
            lostByType = o.lostByType
            untracked = o.untracked
            settledByTable = o.settledByTable
        }
    }
    private var rare: Rare?

    private mutating func withRare(_ body: (Rare) -> Void) {
        if rare == nil {
            rare = Rare()
        } else if !isKnownUniquelyReferenced(&rare!) {
            rare = Rare(copying: rare!)
        }
        body(rare!)
    }

    public init() {}

    /// The record was sent by the kernel side (an input of the engine).
    public var isKernelEvent: Bool {
        switch type {
        case .transition: isKernelTransition
        case .retransmit, .reset, .error, .listenDrop: true
        default: false
        }
    }

    /// The socket the snapshot record shows, as sock_diag read it.
    public var snapshot: SocketSnapshot {
        let e = event
        var s = SocketSnapshot(cookie: e.cookie, state: snapshotState ?? .close, family: e.family, local: e.local, remote: e.remote,
                               inode: 0, netns: e.netns, expiresMilliseconds: expiresMilliseconds,
                               owner: Owner(pid: e.ownerKnown ? e.pid : 0, comm: e.comm, cgroup: e.cgroup))
        if let acceptQueue {
            s.acceptQueue = acceptQueue.depth
            s.acceptQueueLimit = acceptQueue.limit
        }
        return s
    }
}

/// A line that cannot be used, and whether it is because of its format version.
public struct LogParseFailure: Error, Sendable, Equatable {
    public var message: String
    /// Set when the record declares a format version this tcptrail does not read.
    public var unknownVersion: Int64?
}

/// Parses v1 log lines into `LogRecord`s without Foundation: it runs once per
/// event in replay. Fields may come in any order; unknown fields are ignored.
public struct LogRecordParser {
    private var scratch: [UInt8] = []
    private let table = FieldTable()
    /// The member names' slots in the order the last line had them.
    private var order = [Int](repeating: -1, count: 48)
    /// Kept here: `allCases` would build an array on every record.
    private let recordTypes = LogRecordType.allCases.filter { $0 != .other }
    /// Also read `time` (a log without header gets its wall clock from it).
    public var wantsTime = false
    /// Try `WriterLayoutParser` first (off only in tests that compare the two).
    var tryWriterLayout = true

    public init() {
        scratch.reserveCapacity(256)
    }

    /// The member names, from the schema's one table; a name replay does not read is skipped.
    typealias Field = LogKey

    /// Finds a member name's `Field` with one hash and (nearly always) one
    /// compare: a switch over ~45 names compared one by one cost more than
    /// the rest of the parse.
    struct FieldTable {
        /// A name as its length and first and last 8 bytes (names are at most 24).
        struct Key: Equatable {
            var length: Int
            var head: UInt64
            var tail: UInt64
        }
        private var keys: [Key]
        private(set) var fields: [Field?]
        static let slots = 256
        /// Per slot, `"name":` for `JSONObjectScanner.next(expecting:)`.
        let patterns: Patterns

        final class Patterns {
            let bytes: UnsafeMutablePointer<UInt8>
            var offsets = [Int](repeating: 0, count: FieldTable.slots)
            var lengths = [Int](repeating: 0, count: FieldTable.slots)
            init(size: Int) { bytes = .allocate(capacity: size) }
            deinit { bytes.deallocate() }
        }

        init() {
            keys = Array(repeating: Key(length: -1, head: 0, tail: 0), count: Self.slots)
            fields = Array(repeating: nil, count: Self.slots)
            patterns = Patterns(size: Field.allCases.reduce(0) { $0 + $1.rawValue.utf8.count + 3 })
            var offset = 0
            for f in Field.allCases {
                let name = Array(f.rawValue.utf8)
                let key = name.withUnsafeBufferPointer { Self.key($0.baseAddress!, $0.count, readable: $0.count) }
                var i = Self.slot(key)
                while fields[i] != nil { i = (i + 1) & (Self.slots - 1) }
                keys[i] = key
                fields[i] = f
                let pattern = [UInt8(ascii: "\"")] + name + [UInt8(ascii: "\""), UInt8(ascii: ":")]
                for (k, b) in pattern.enumerated() { patterns.bytes[offset + k] = b }
                patterns.offsets[i] = offset
                patterns.lengths[i] = pattern.count
                offset += pattern.count
            }
        }

        /// The slot of a name (to predict it on the next line), or -1.
        @inline(__always)
        func slot(_ p: UnsafePointer<UInt8>, _ n: Int, readable: Int) -> Int {
            guard n <= 24 else { return -1 }
            let key = Self.key(p, n, readable: readable)
            var i = Self.slot(key)
            while let f = fields[i] {
                if keys[i] == key {
                    return n <= 16 || f.rawValue.utf8.elementsEqual(UnsafeBufferPointer(start: p, count: n)) ? i : -1
                }
                i = (i + 1) & (Self.slots - 1)
            }
            return -1
        }

        @inline(__always)
        static func slot(_ k: Key) -> Int {
            Int(truncatingIfNeeded: (((k.head ^ k.tail &* 31) &+ UInt64(k.length)) &* 0x9E37_79B9_7F4A_7C15) >> 56)
        }

        /// `readable`: bytes that may be read from `p` (the rest of the line).
        @inline(__always)
        static func key(_ p: UnsafePointer<UInt8>, _ n: Int, readable: Int) -> Key {
            var head: UInt64 = 0, tail: UInt64 = 0
            if n >= 8 {
                head = UnsafeRawPointer(p).loadUnaligned(as: UInt64.self)
                tail = UnsafeRawPointer(p + n - 8).loadUnaligned(as: UInt64.self)
            } else if readable >= 8 {
                head = UnsafeRawPointer(p).loadUnaligned(as: UInt64.self) & (UInt64.max >> UInt64(64 - 8 * n))
            } else {
                for i in 0..<n { head |= UInt64(p[i]) << (8 * UInt64(i)) }
            }
            return Key(length: n, head: head, tail: tail)
        }

        @inline(__always)
        func field(_ p: UnsafePointer<UInt8>, _ n: Int, readable: Int) -> Field? {
            guard n <= 24 else { return nil }
            let key = Self.key(p, n, readable: readable)
            var i = Self.slot(key)
            while let f = fields[i] {
                if keys[i] == key {
                    // Names of 17 to 24 bytes: the middle bytes are not in the key.
                    return n <= 16 || f.rawValue.utf8.elementsEqual(UnsafeBufferPointer(start: p, count: n)) ? f : nil
                }
                i = (i + 1) & (Self.slots - 1)
            }
            return nil
        }
    }

    private static func fail(_ message: String) -> LogParseFailure { LogParseFailure(message: message) }

    /// The case whose name the string value spells, or an error naming them all.
    private static func named<T: NamedCase>(_ p: UnsafePointer<UInt8>, _ v: JSONValue, _ key: String) throws -> T {
        guard let c = T.allCases.first(where: { JSONStrings.equals(p, v, $0.name) }) else {
            throw fail("\"\(key)\" must be one of " + T.allCases.map { $0.name.description }.joined(separator: ", "))
        }
        return c
    }

    /// Parses one line (without its newline).
    public mutating func parse(_ line: UnsafeRawBufferPointer) -> Result<LogRecord, LogParseFailure> {
        var r = LogRecord()
        if let failure = parse(line, into: &r) { return .failure(failure) }
        return .success(r)
    }

    /// `parse(_:)` into a record the caller keeps (replay's loop: no Result
    /// to wrap and copy each record out of). Returns nil on success.
    mutating func parse(_ line: UnsafeRawBufferPointer, into r: inout LogRecord) -> LogParseFailure? {
        guard let base = line.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return Self.fail("empty line") }
        // Nearly every line: a kernel record exactly as tcptrail writes it.
        if tryWriterLayout && !wantsTime && WriterLayoutParser.parse(base, line.count, into: &r) { return nil }
        do {
            try parse(base, line.count, into: &r)
            return nil
        } catch let e as LogParseFailure {
            return e
        } catch let e as LogLineError {
            return Self.fail(e.message)
        } catch {
            return Self.fail("\(error)")
        }
    }

    private mutating func parse(_ p: UnsafePointer<UInt8>, _ n: Int, into r: inout LogRecord) throws {
        var scanner = try JSONObjectScanner(p, count: n)
        r = LogRecord()
        var version: Int64?, seq: UInt64?, mono: UInt64?, typeValue: JSONValue?
        var conn: JSONValue?, laddr: JSONValue?, raddr: JSONValue?, family: UInt64?
        var lport: UInt64?, rport: UInt64?
        var kernelFrom: JSONValue?, kernelTo: JSONValue?, kernelState: JSONValue?
        var what: JSONValue?, direction: JSONValue?, errnoValue: Int64?, reason: JSONValue?, timewait: JSONValue?
        var toState: JSONValue?
        var ownerKnown = false, peerFin = false, noSocket = false, untrackedFlag = false
        var depth: UInt64?, limit: UInt64?
        var thresholds: JSONValue?, totalByType: JSONValue?, untracked: JSONValue?, time: JSONValue?

        func number(_ v: JSONValue, _ name: String, max: UInt64 = .max) throws -> UInt64 {
            guard let x = JSONStrings.unsigned(p, v), x <= max else {
                throw Self.fail("\"\(name)\" must be an integer from 0 to \(max)")
            }
            return x
        }
        func flag(_ v: JSONValue, _ name: String) throws -> Bool {
            guard v.kind == .bool else { throw Self.fail("\"\(name)\" must be true or false") }
            return v.boolValue
        }
        func name(_ v: JSONValue, _ key: String) throws -> ProcessName {
            guard v.kind == .string else { throw Self.fail("\"\(key)\" must be a string") }
            guard v.escaped else { return ProcessName(bytes: UnsafeBufferPointer(start: p + v.start, count: v.end - v.start)) }
            JSONStrings.decode(p, v, latin1: true, into: &scratch)
            return ProcessName(bytes: scratch)
        }

        // Records of one type list their members in one order: the slot seen
        // at each position on the last line is tried first.
        var position = 0
        let patterns = table.patterns
        while true {
            let predicted = position < order.count ? order[position] : -1
            let pattern: UnsafePointer<UInt8>? = predicted >= 0 ? UnsafePointer(patterns.bytes + patterns.offsets[predicted]) : nil
            guard let (keyRange, v, hit) = try scanner.next(expecting: pattern, predicted >= 0 ? patterns.lengths[predicted] : 0) else { break }
            let slot = hit ? predicted : table.slot(p + keyRange.lowerBound, keyRange.count, readable: n - keyRange.lowerBound)
            if !hit && position < order.count { order[position] = slot }
            position += 1
            switch slot >= 0 ? table.fields[slot] : nil {
            case .v?:
                guard let x = JSONStrings.signed(p, v) else { throw Self.fail("\"v\" must be an integer") }
                version = x
            case .seq?: seq = try number(v, "seq")
            case .type?: typeValue = v
            // CLOCK_MONOTONIC is a ktime_t, signed 64-bit: larger is no kernel time.
            case .monoNs?: mono = try number(v, "mono_ns", max: UInt64(Int64.max))
            case .conn?: conn = v
            case .pid?: r.event.pid = UInt32(try number(v, "pid", max: UInt64(UInt32.max)))
            case .comm?: r.event.comm = try name(v, "comm")
            case .thread?: r.event.thread = try name(v, "thread")
            // unit, container and pod are read again from the path.
            case .cgroup?:
                guard let path = JSONStrings.string(p, v) else { throw Self.fail("\"cgroup\" must be a string") }
                guard let normal = CgroupInfo.normalized(path), normal == path else {
                    throw Self.fail("\"cgroup\" must be a path from the cgroup2 mount, such as /system.slice/nginx.service")
                }
                r.event.cgroup = CgroupNames.intern(path: path)
            case .netns?: r.event.netns = UInt32(try number(v, "netns", max: UInt64(UInt32.max)))
            case .family?: family = try number(v, "family", max: 255)
            case .laddr?: laddr = v
            case .raddr?: raddr = v
            case .lport?: lport = try number(v, "lport", max: 65535)
            case .rport?: rport = try number(v, "rport", max: 65535)
            case .ownerKnown?: ownerKnown = try flag(v, "owner_known")
            case .cpu?: r.event.cpu = UInt8(try number(v, "cpu", max: 255))
            case .kernelFrom?: kernelFrom = v
            case .kernelTo?: kernelTo = v
            case .kernelState?: kernelState = v
            case .prevStateNs?: r.event.previousStateNanoseconds = v.kind == .null ? nil : try number(v, "prev_state_ns")
            case .peerFin?: peerFin = try flag(v, "peer_fin")
            case .noSocket?: noSocket = try flag(v, "no_socket")
            case .what?: what = v
            case .timewait?: timewait = v
            case .step?: r.hasDocumentedStep = true
            case .to?: toState = v
            case .direction?: direction = v
            case .reason?: reason = v
            case .errno?:
                guard let x = JSONStrings.signed(p, v), x >= Int64(Int32.min), x <= Int64(Int32.max) else {
                    throw Self.fail("\"errno\" must be an integer")
                }
                errnoValue = x
            case .anomaly?: r.anomalyName = JSONStrings.string(p, v)
            case .count?: r.count = Int64(try number(v, "count", max: UInt64(Int64.max)))
            case .acceptQueue?: depth = try number(v, "accept_queue", max: UInt64(UInt32.max))
            case .acceptQueueLimit?: limit = try number(v, "accept_queue_limit", max: UInt64(UInt32.max))
            case .expiresMs?: r.expiresMilliseconds = UInt32(try number(v, "expires_ms", max: UInt64(UInt32.max)))
            case .total?: r.lostTotal = try number(v, "total")
            case .lost?: r.lostTotal = try number(v, "lost")
            case .exportErrors?: r.exportErrors = try number(v, "export_errors")
            case .totalByType?: totalByType = v
            case .untracked?:
                if v.kind == .bool { untrackedFlag = v.boolValue } else { untracked = v }
            case .formatVersion?:
                guard let x = JSONStrings.signed(p, v) else { throw Self.fail("\"format_version\" must be an integer") }
                r.formatVersion = x
            case .thresholds?: thresholds = v
            case .bootOffsetNs?:
                guard let x = JSONStrings.signed(p, v) else { throw Self.fail("\"boot_offset_ns\" must be an integer") }
                r.bootOffsetNanoseconds = x
            case .hostname?: r.hostname = JSONStrings.string(p, v)
            case .started?: r.started = JSONStrings.string(p, v)
            case .kernel?: r.kernel = JSONStrings.string(p, v)
            case .time?: time = v
            default: break
            }
        }
        try scanner.finish()

        guard let version else { throw Self.fail("no \"v\" (format version): not a tcptrail v1 record") }
        guard version == 1 else {
            throw LogParseFailure(message: "format version \(version) (this tcptrail reads version 1)", unknownVersion: version)
        }
        guard let typeValue, typeValue.kind == .string else { throw Self.fail("no \"type\" string") }
        guard let seq else { throw Self.fail("no \"seq\"") }
        guard let mono else { throw Self.fail("no \"mono_ns\"") }
        if let time { try parseTime(p, time, into: &r) }
        // Time in the previous state cannot reach back before boot.
        if let prev = r.event.previousStateNanoseconds, prev > mono {
            throw Self.fail("\"prev_state_ns\" \(prev) is larger than \"mono_ns\" \(mono): more time in the previous state than since boot")
        }
        r.seq = seq
        r.mono = mono
        r.event.monoNanoseconds = mono
        r.type = recordType(p, typeValue)

        switch r.type {
        case .header:
            if let fv = r.formatVersion, fv != 1 {
                throw LogParseFailure(message: "format version \(fv) (this tcptrail reads version 1)", unknownVersion: fv)
            }
            if let thresholds { r.thresholds = try parseThresholds(p, thresholds) }
            return
        case .lost:
            if let totalByType { r.lostByType = try parseLostByType(p, totalByType) }
            return
        case .untracked, .summary:
            if let untracked { r.untracked = try parseTableGaps(p, untracked) }
            return
        case .other, .accept:
            return
        default:
            break
        }

        // Connection records: identity and endpoints.
        guard let conn else { throw Self.fail("no \"conn\" in a \(r.type.name) record") }
        try Self.parseConn(p, conn, into: &r.event)
        guard let family, let f = AddressFamily(rawValue: UInt8(family)) else { throw Self.fail("\"family\" must be 4 or 6") }
        r.event.family = f
        guard let laddr, let raddr else { throw Self.fail("no \"laddr\" or \"raddr\"") }
        r.event.localAddress = try Self.parseAddress(p, laddr, family: r.event.family, "laddr")
        r.event.remoteAddress = try Self.parseAddress(p, raddr, family: r.event.family, "raddr")
        guard let lport, let rport else { throw Self.fail("no \"lport\" or \"rport\"") }
        r.event.localPort = UInt16(lport)
        r.event.remotePort = UInt16(rport)
        var flags: UInt8 = 0
        if ownerKnown { flags |= UInt8(TT_FLAG_OWNER_KNOWN.rawValue) }
        if peerFin { flags |= UInt8(TT_FLAG_PEER_FIN.rawValue) }
        if untrackedFlag { flags |= UInt8(TT_FLAG_UNTRACKED.rawValue) }
        // A reset no socket owned has no connection id, and only it has none.
        if noSocket && conn.end != conn.start { throw Self.fail("a \"no_socket\" record must have \"conn\":\"\"") }
        if conn.end == conn.start { flags |= UInt8(TT_FLAG_NO_SOCKET.rawValue) }
        r.event.flags = flags

        switch r.type {
        case .transition:
            r.event.kind = .transition
            if kernelFrom != nil || kernelTo != nil {
                guard let kernelFrom, let kernelTo else { throw Self.fail("a transition needs both \"kernel_from\" and \"kernel_to\"") }
                r.event.oldState = try state(p, kernelFrom, "kernel_from")
                r.event.newState = try state(p, kernelTo, "kernel_to")
                r.isKernelTransition = true
            }
            if let timewait { r.event.timewait = try Self.named(p, timewait, "timewait") }
            if !r.isKernelTransition, let reason, reason.kind == .string,
               JSONStrings.equals(p, reason, "kernel_table") || JSONStrings.equals(p, reason, "gone_from_kernel_table"),
               let toState, let to = TCPState.allCases.first(where: { JSONStrings.equals(p, toState, $0.nameBytes) }) {
                r.settledByTable = to
            }
        case .retransmit:
            r.event.kind = .retransmit
            try setKernelState(p, kernelState, of: &r.event)
            guard let what else { throw Self.fail("no \"what\" in a retransmit record") }
            r.event.retransmit = try Self.named(p, what, "what") as RetransmitKind
        case .reset:
            r.event.kind = .reset
            try setKernelState(p, kernelState, of: &r.event)
            guard let direction else { throw Self.fail("no \"direction\" in a reset record") }
            r.event.reset = try Self.named(p, direction, "direction") as ResetDirection
            if let reason, reason.kind == .number { r.event.resetReason = UInt32(try number(reason, "reason", max: UInt64(UInt32.max))) }
        case .error:
            r.event.kind = .error
            try setKernelState(p, kernelState, of: &r.event)
            guard let errnoValue else { throw Self.fail("no \"errno\" in an error record") }
            r.event.errorNumber = Int32(errnoValue)
        case .listenDrop:
            r.event.kind = .listenDrop
        case .snapshot:
            guard let kernelState else { throw Self.fail("no \"kernel_state\" in a snapshot record") }
            r.snapshotState = try state(p, kernelState, "kernel_state")
        case .anomaly:
            guard r.anomalyName != nil else { throw Self.fail("no \"anomaly\" name in an anomaly record") }
            if let depth, let limit { r.acceptQueue = Anomaly.AcceptQueue(depth: UInt32(depth), limit: UInt32(limit)) }
        default:
            break
        }
    }

    /// `time`: checked on every record (a malformed one is a malformed line),
    /// kept only when asked for (`wantsTime`).
    private func parseTime(_ p: UnsafePointer<UInt8>, _ v: JSONValue, into r: inout LogRecord) throws {
        guard v.kind == .string, !v.escaped, let unix = WallClock.parseRecordTime(p + v.start, v.end - v.start) else {
            throw Self.fail(Self.badTime)
        }
        if wantsTime {
            r.time = JSONStrings.string(p, v)
            r.timeUnixNanoseconds = unix
        }
    }

    static let badTime = "\"time\" must be an RFC 3339 time from 1677-09-21 to 2262-04-11 such as 2026-11-21T04:53:14.276226781Z"

    private func recordType(_ p: UnsafePointer<UInt8>, _ v: JSONValue) -> LogRecordType {
        for t in recordTypes where JSONStrings.equals(p, v, t.name) { return t }
        return .other
    }

    /// `kernel_state` of a retransmit, reset or error: optional, null allowed.
    private func setKernelState(_ p: UnsafePointer<UInt8>, _ v: JSONValue?, of e: inout KernelEvent) throws {
        guard let v, v.kind != .null else { return }
        e.newState = try state(p, v, "kernel_state")
        e.oldState = e.newState
    }

    private func state(_ p: UnsafePointer<UInt8>, _ v: JSONValue, _ name: String) throws -> KernelTCPState {
        guard v.kind == .string, !v.escaped else { throw Self.fail("\"\(name)\" must be a kernel state name such as ESTABLISHED") }
        if let s = KernelTCPState(name: p + v.start, count: v.end - v.start) { return s }
        throw Self.fail("\"\(name)\" is not a kernel state name: \(JSONStrings.string(p, v) ?? "")")
    }

    /// "4217" or "4217.2"; "" for a socket-less reset.
    static func parseConn(_ p: UnsafePointer<UInt8>, _ v: JSONValue, into e: inout KernelEvent) throws {
        guard v.kind == .string, !v.escaped else { throw Self.fail("\"conn\" must be a string such as \"4217\" or \"4217.1\"") }
        var cookie: UInt64 = 0, generation: UInt64 = 0
        var inGeneration = false, digits = 0
        for i in v.start..<v.end {
            let b = p[i]
            if b == UInt8(ascii: "."), !inGeneration, digits > 0 { inGeneration = true; digits = 0; continue }
            let d = b &- 48
            guard d < 10 else { throw Self.fail("\"conn\" must be digits, or digits.digits") }
            digits += 1
            if inGeneration {
                generation = generation &* 10 &+ UInt64(d)
                guard generation <= UInt64(UInt32.max) else { throw Self.fail("\"conn\" generation out of range") }
            } else {
                let (m, o1) = cookie.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(UInt64(d))
                guard !o1 && !o2 else { throw Self.fail("\"conn\" cookie out of range") }
                cookie = s
            }
        }
        if inGeneration && digits == 0 { throw Self.fail("\"conn\" must be digits, or digits.digits") }
        e.cookie = cookie
        e.generation = UInt32(generation)
    }

    /// Dotted quad by hand (the common case); IPv6 through inet_pton.
    static func parseAddress(_ p: UnsafePointer<UInt8>, _ v: JSONValue, family: AddressFamily, _ name: String) throws -> RawAddress {
        guard v.kind == .string, !v.escaped, v.end - v.start <= 45 else { throw Self.fail("\"\(name)\" must be an IP address") }
        if family == .ipv4 {
            var bytes: UInt32 = 0
            var part: UInt32 = 0, parts = 0, digits = 0
            for i in v.start...v.end {
                let b: UInt8 = i < v.end ? p[i] : UInt8(ascii: ".")
                if b == UInt8(ascii: ".") {
                    guard digits > 0, part < 256, parts < 4 else { throw Self.fail("\"\(name)\" is not an IPv4 address") }
                    bytes |= part << (8 * UInt32(parts))
                    parts += 1; part = 0; digits = 0
                    continue
                }
                let d = b &- 48
                guard d < 10, digits < 3 else { throw Self.fail("\"\(name)\" is not an IPv4 address") }
                part = part * 10 + UInt32(d)
                digits += 1
            }
            guard parts == 4 else { throw Self.fail("\"\(name)\" is not an IPv4 address") }
            return RawAddress(high: UInt64(bytes), low: 0)
        }
        var text: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)  // 48 bytes, NUL-terminated
        var address = RawAddress()
        let ok = withUnsafeMutableBytes(of: &text) { t -> Bool in
            for i in 0..<(v.end - v.start) { t[i] = p[v.start + i] }
            return withUnsafeMutableBytes(of: &address) { a in
                inet_pton(AF_INET6, t.baseAddress!.assumingMemoryBound(to: CChar.self), a.baseAddress) == 1
            }
        }
        guard ok else { throw Self.fail("\"\(name)\" is not an IPv6 address") }
        return address
    }

    private func parseThresholds(_ p: UnsafePointer<UInt8>, _ v: JSONValue) throws -> AnomalyThresholds {
        guard v.kind == .object else { throw Self.fail("\"thresholds\" must be an object") }
        var s = try JSONObjectScanner(p, count: v.end, start: v.start)
        var t = AnomalyThresholds()
        func seconds(_ v: JSONValue, _ name: String) throws -> UInt64 {
            guard let x = JSONStrings.double(p, v), x > 0, x < 1e9 else { throw Self.fail("threshold \"\(name)\" must be positive seconds") }
            return UInt64(x * 1e9)
        }
        func count(_ v: JSONValue, _ name: String) throws -> Int {
            guard let x = JSONStrings.unsigned(p, v), x >= 1, x <= UInt64(Int32.max) else { throw Self.fail("threshold \"\(name)\" must be a positive integer") }
            return Int(x)
        }
        while let (name, value) = try s.next() {
            switch table.field(p + name.lowerBound, name.count, readable: v.end - name.lowerBound) {
            case .closeWaitS?: t.closeWaitNanoseconds = try seconds(value, "close_wait_s")
            case .finWait2S?: t.finWait2Nanoseconds = try seconds(value, "fin_wait_2_s")
            case .timeWaitSockets?: t.timeWaitSockets = try count(value, "time_wait_sockets")
            case .dataRetransmits?: t.dataRetransmits = try count(value, "data_retransmits")
            default: break
            }
        }
        return t
    }

    private func parseTableGaps(_ p: UnsafePointer<UInt8>, _ v: JSONValue) throws -> TableGaps {
        guard v.kind == .object else { throw Self.fail("\"untracked\" must be an object") }
        var s = try JSONObjectScanner(p, count: v.end, start: v.start)
        var gaps = TableGaps()
        while let (k, value) = try s.next() {
            guard let n = JSONStrings.unsigned(p, value) else { throw Self.fail("\"untracked\" values must be integers from 0") }
            let name = String(decoding: UnsafeBufferPointer(start: p + k.lowerBound, count: k.count), as: UTF8.self)
            _ = gaps.set(name, n)
        }
        return gaps
    }

    private func parseLostByType(_ p: UnsafePointer<UInt8>, _ v: JSONValue) throws -> [KernelEventKind: UInt64] {
        guard v.kind == .object else { throw Self.fail("\"total_by_type\" must be an object") }
        var s = try JSONObjectScanner(p, count: v.end, start: v.start)
        var result: [KernelEventKind: UInt64] = [:]
        while let (k, value) = try s.next() {
            guard let n = JSONStrings.unsigned(p, value) else { throw Self.fail("\"total_by_type\" values must be integers") }
            let name = JSONValue(kind: .string, start: k.lowerBound, end: k.upperBound)
            switch recordType(p, name) {
            case .transition: result[.transition] = n
            case .retransmit: result[.retransmit] = n
            case .reset: result[.reset] = n
            case .error: result[.error] = n
            case .listenDrop: result[.listenDrop] = n
            case .accept: result[.accept] = n
            default: break
            }
        }
        return result
    }
}
