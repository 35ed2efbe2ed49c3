import TCPTrailLoader

/// What a live session is started with: the kernel side's settings (filters,
/// buffer and table sizes) and how the loop runs.
public struct SessionOptions: Sendable {
    public var settings: TraceSettings
    /// libbpf's log on stderr as it is written.
    public var verbose = false
    /// Table sizes asked for; nil sizes them from the host.
    public var maxConnections: Int?
    public var maxListeners: Int?
    /// The longest wait for events, in ms.
    public var pollInterval: Int32 = 50
    /// The nice value to run at once attached (0 leaves it).
    public var nice: Int32 = 0

    public init(settings: TraceSettings) {
        self.settings = settings
    }
}
