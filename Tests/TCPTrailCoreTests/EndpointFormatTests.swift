import Testing
import TCPTrailCore

/// One endpoint formatter everywhere: IPv6 in brackets before its port.
@Suite struct EndpointFormatTests {
    static let v6 = ConnectionIdentity(KernelEvent(monoNanoseconds: 1, cookie: 1, kind: .transition, family: .ipv6,
                                                   localAddress: RawAddress(bytes: [UInt8](repeating: 0, count: 15) + [1]), localPort: 8081))

    @Test func ipv6EndpointsHaveBracketsInEveryView() {
        #expect(Self.v6.endpoints == "[::1]:8081 -> [::]:0")
        #expect(ConnectionBoard.endpoint(Self.v6, remote: false) == "[::1]:8081")
        #expect(Fmt.endpoints(Self.v6) == ("[::1]:8081", "[::]:0"))
        var out = OutputBuffer()
        out.append(endpoint: Endpoint(address: RawAddress(bytes: [198, 18, 0, 2]), port: 80), family: .ipv4)
        #expect(out.string == "198.18.0.2:80")
    }
}

/// Records write 4 and 6; the kernel says AF_INET 2 and AF_INET6 10.
@Suite struct AddressFamilyTests {
    @Test func kernelValuesMapBothWays() {
        #expect(AddressFamily(kernel: 2) == .ipv4 && AddressFamily(kernel: 10) == .ipv6)
        #expect(AddressFamily(kernel: 0) == nil && AddressFamily(kernel: 1) == nil && AddressFamily(kernel: 6) == nil)
        #expect(AddressFamily.ipv4.kernel == 2 && AddressFamily.ipv6.kernel == 10)
        #expect(AddressFamily(rawValue: 4) == .ipv4 && AddressFamily(rawValue: 6) == .ipv6 && AddressFamily(rawValue: 2) == nil)
    }
}
