/// A listening TCP socket and the process that holds it.
public struct ListenerOwner: Sendable, Equatable {
    public var key: ListenerKey
    public var owner: Owner

    public init(key: ListenerKey, owner: Owner) {
        self.key = key
        self.owner = owner
    }
}

/// A listening endpoint as the kernel side's listener table keys it.
public struct ListenerKey: Hashable, Sendable {
    public var netns: UInt32
    public var family: AddressFamily
    public var port: UInt16
    public init(netns: UInt32, family: AddressFamily, port: UInt16) {
        self.netns = netns
        self.family = family
        self.port = port
    }
}

/// What the kernel's /proc/net text files say, parsed: pure, for tests and the host module.
public enum ProcNetText {
    /// (port, inode) of each LISTEN row (state 0A) in a /proc/net/tcp table.
    public static func listeners(in table: String) -> [(UInt16, UInt64)] {
        var out: [(UInt16, UInt64)] = []
        for line in table.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 9, f[3] == "0A",
                  let colon = f[1].lastIndex(of: ":"),
                  let port = UInt16(f[1][f[1].index(after: colon)...], radix: 16),
                  let inode = UInt64(f[9]), inode != 0
            else { continue }
            out.append((port, inode))
        }
        return out
    }

    /// TcpExtListenOverflows from the text of a /proc/net/netstat file.
    public static func listenOverflows(netstat text: String) -> Int? {
        let lines = text.split(separator: "\n")
        for i in stride(from: 0, to: lines.count - 1, by: 2) where lines[i].hasPrefix("TcpExt:") {
            let names = lines[i].split(separator: " "), values = lines[i + 1].split(separator: " ")
            if let at = names.firstIndex(of: "ListenOverflows"), at < values.count { return Int(values[at]) }
        }
        return nil
    }

    /// A namespace's drops split over its full listeners; the first takes the
    /// remainder, and a listener with no share is left out.
    public static func share<T>(drops: Int, among listeners: [T]) -> [(T, Int)] {
        guard !listeners.isEmpty else { return [] }
        var out: [(T, Int)] = []
        for (i, l) in listeners.enumerated() {
            let share = drops / listeners.count + (i == 0 ? drops % listeners.count : 0)
            if share > 0 { out.append((l, share)) }
        }
        return out
    }
}
