import Testing
import TCPTrailCore

/// One endpoint formatter everywhere: IPv6 in brackets before its port.
@Suite struct EndpointFormatTests {
    static let v6 = ConnectionIdentity(KernelEvent(monoNanoseconds: 1, cookie: 1, kind: .transition, family: 6,
                                                   localAddress: RawAddress(bytes: [UInt8](repeating: 0, count: 15) + [1]), localPort: 8081))

    @Test func ipv6EndpointsHaveBracketsInEveryView() {
        #expect(Self.v6.endpoints == "[::1]:8081 -> [::]:0")
        #expect(ConnectionBoard.endpoint(Self.v6, remote: false) == "[::1]:8081")
        #expect(Fmt.endpoints(Self.v6) == ("[::1]:8081", "[::]:0"))
        var out = OutputBuffer()
        out.append(endpoint: RawAddress(bytes: [198, 18, 0, 2]), port: 80, family: 4)
        #expect(out.string == "198.18.0.2:80")
    }
}
