/// The `type` of a record in the v1 contract.
public enum LogRecordType: Int, Sendable, CaseIterable {
    case transition, retransmit, reset, error, listenDrop, anomaly, snapshot, lost, header, summary, untracked
    /// An accept() the kernel side saw: named in `lost` records' `total_by_type`, never written.
    case accept
    /// A type this version does not know (v1 may add types); read, never written.
    case other

    /// The name in the record's `type`.
    public var name: StaticString {
        switch self {
        case .transition: "transition"
        case .retransmit: "retransmit"
        case .reset: "reset"
        case .error: "error"
        case .listenDrop: "listen_drop"
        case .anomaly: "anomaly"
        case .snapshot: "snapshot"
        case .lost: "lost"
        case .header: "header"
        case .summary: "summary"
        case .untracked: "untracked"
        case .accept: "accept"
        case .other: "other"
        }
    }
}

/// What the kernel side's full tables kept from the record, as totals since
/// the start of the run: the `untracked` record and the summary's `untracked`.
public struct TableGaps: Sendable, Equatable {
    /// Sockets whose first event found the connection table full.
    public var sockets: UInt64 = 0
    /// Their events: each has no owner, previous state or saved endpoints.
    public var events: UInt64 = 0
    /// Listeners the listener table could not take.
    public var listeners: UInt64 = 0
    /// Accepted sockets whose listener the kernel side did not hold.
    public var acceptedWithoutOwner: UInt64 = 0
    /// Of those, the ones whose owner user space named (from every listen() it saw, or /proc).
    public var acceptedNamed: UInt64 = 0
    /// Accepted sockets that kept their listener's cookie (Linux 6.1, child_ids full).
    public var childIDs: UInt64 = 0
    /// Sockets open at start whose owner did not fit the seed table.
    public var ownerSeeds: UInt64 = 0

    public init() {}

    /// Whether nothing was lost to a full table. Accepted sockets named by
    /// user space are no loss.
    public var isEmpty: Bool {
        sockets == 0 && events == 0 && listeners == 0 && acceptedWithoutOwner <= acceptedNamed && childIDs == 0 && ownerSeeds == 0
    }

    /// The JSON members, in the contract's order.
    public static let names = ["sockets", "events", "listeners", "accepted_without_owner", "accepted_named", "child_ids", "owner_seeds"]

    public var values: [UInt64] { [sockets, events, listeners, acceptedWithoutOwner, acceptedNamed, childIDs, ownerSeeds] }

    /// Sets the member called `name`; false if there is none.
    public mutating func set(_ name: String, _ value: UInt64) -> Bool {
        switch name {
        case "sockets": sockets = value
        case "events": events = value
        case "listeners": listeners = value
        case "accepted_without_owner": acceptedWithoutOwner = value
        case "accepted_named": acceptedNamed = value
        case "child_ids": childIDs = value
        case "owner_seeds": ownerSeeds = value
        default: return false
        }
        return true
    }

    public func appendFields(to out: inout OutputBuffer) {
        for (i, (name, value)) in zip(Self.names, values).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.appendJSONString(name)
            out.append(UInt8(ascii: ":"))
            out.append(decimal: value)
        }
    }

    /// One phrase per gap, for replay's report and the run's summary line.
    public var phrases: [String] {
        var p: [String] = []
        if sockets > 0 || events > 0 {
            p.append("\(sockets) sockets untracked (connection table full; raise --max-connections): \(events) events without owner or previous state")
        }
        if listeners > 0 {
            p.append("\(listeners) listeners not in the listener table (raise --max-listeners)"
                     + (acceptedNamed > 0 ? ": \(acceptedNamed) accepted sockets named from user space's table instead" : ""))
        }
        if acceptedWithoutOwner > acceptedNamed {
            p.append("\(acceptedWithoutOwner - acceptedNamed) accepted sockets without owner")
        }
        if childIDs > 0 { p.append("\(childIDs) accepted sockets sharing their listener's id (table full)") }
        if ownerSeeds > 0 { p.append("\(ownerSeeds) sockets open at start whose owner did not fit its table") }
        return p
    }
}
