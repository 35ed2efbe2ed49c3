/// A listener whose accept queue overflowed: what the host's listen-queue
/// monitor found, as the engine takes it.
public struct ListenOverflow: Sendable {
    public var listener: SocketSnapshot
    /// Growth of TcpExtListenOverflows in its namespace since the last check.
    public var drops: Int

    public init(listener: SocketSnapshot, drops: Int) {
        self.listener = listener
        self.drops = drops
    }
}
