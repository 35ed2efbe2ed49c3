/// The engine's live connections by id, counting how many are in each
/// documented state as records come and go, so `/metrics` can say how many
/// are ESTABLISHED now without walking the table (one hash lookup per change,
/// as a plain dictionary: the old value comes back from the same update).
struct ConnectionTable: Sequence {
    private var records: [ConnectionID: ConnectionRecord] = [:]
    /// By `TCPState.index`.
    private(set) var inState = [Int](repeating: 0, count: TCPState.allCases.count)

    var count: Int { records.count }
    var keys: Dictionary<ConnectionID, ConnectionRecord>.Keys { records.keys }
    var values: Dictionary<ConnectionID, ConnectionRecord>.Values { records.values }

    func makeIterator() -> Dictionary<ConnectionID, ConnectionRecord>.Iterator { records.makeIterator() }

    subscript(id: ConnectionID) -> ConnectionRecord? {
        get { records[id] }
        set {
            let old = newValue.map { records.updateValue($0, forKey: id) } ?? records.removeValue(forKey: id)
            if let old { inState[old.state.index] -= 1 }
            if let newValue { inState[newValue.state.index] += 1 }
        }
    }
}

extension TCPState {
    /// Its place in `allCases`, for counts kept in arrays.
    public var index: Int {
        switch self {
        case .closed: 0
        case .listen: 1
        case .synSent: 2
        case .synReceived: 3
        case .established: 4
        case .finWait1: 5
        case .finWait2: 6
        case .closeWait: 7
        case .closing: 8
        case .lastAck: 9
        case .timeWait: 10
        }
    }
}
