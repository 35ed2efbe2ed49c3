#if canImport(Glibc)
import Glibc  // inet_pton only: parsing, no I/O
#endif

/// The address `serve --listen` takes, and whether it stays on this host:
/// the check behind --allow-remote, kept pure so it is tested without a server.
public struct ServeAddress: Sendable, Equatable {
    public var host: String
    public var port: Int

    /// "127.0.0.1:8080", "[::1]:8080", "localhost:8080"; nil for anything else.
    public init?(_ text: String) {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (1...65535).contains(port), !host.isEmpty else { return nil }
        if host == "localhost" { host = "127.0.0.1" }
        var v4 = in_addr(), v6 = in6_addr()
        guard inet_pton(AF_INET, String(host), &v4) == 1 || inet_pton(AF_INET6, String(host), &v6) == 1 else { return nil }
        self.host = String(host)
        self.port = port
    }

    /// Only this host can reach it: 127.0.0.0/8 or ::1.
    public var isLoopback: Bool { Self.isLoopback(host) }

    public static func isLoopback(_ host: String) -> Bool {
        host.hasPrefix("127.") || host == "::1"
    }
}
