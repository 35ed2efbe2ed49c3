/// An address or CIDR block (`198.18.0.0/15`, `fd00::/8`, `127.0.0.1`),
/// matched in user space against either end of a connection.
public struct AddressPrefix: Sendable, Equatable, CustomStringConvertible {
    public let family: AddressFamily
    public let address: RawAddress
    public let prefixLength: Int
    public let description: String

    /// Parses `ADDR` or `ADDR/LEN`; nil when either part is malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let first = parts.first else { return nil }
        let host = String(first)
        if let v4 = Self.parseIPv4(host) {
            family = .ipv4
            address = RawAddress(bytes: v4)
        } else if let v6 = Self.parseIPv6(host) {
            family = .ipv6
            address = RawAddress(bytes: v6)
        } else {
            return nil
        }
        let maxLen = family.addressBits
        if parts.count == 2 {
            guard let len = Int(parts[1]), (0...maxLen).contains(len) else { return nil }
            prefixLength = len
        } else {
            prefixLength = maxLen
        }
        description = text
    }

    /// Whether `other` (of `family`) lies inside this prefix.
    public func contains(_ other: RawAddress, family: AddressFamily) -> Bool {
        guard family == self.family else { return false }
        return address.withBytes { mine in
            other.withBytes { theirs in
                var bits = prefixLength
                var i = 0
                while bits > 0 {
                    let mask: UInt8 = bits >= 8 ? 0xff : UInt8(0xff) << UInt8(8 - bits)
                    if mine[i] & mask != theirs[i] & mask { return false }
                    bits -= 8
                    i += 1
                }
                return true
            }
        }
    }

    static func parseIPv4(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let v = UInt8(p) else { return nil }
            out.append(v)
        }
        return out
    }

    static func parseIPv6(_ s: String) -> [UInt8]? {
        guard s.contains(":"), s.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        let halves = s.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let items = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, item) in items.enumerated() {
                if item.contains("."), i == items.count - 1, let v4 = parseIPv4(String(item)) {
                    out.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    out.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                } else {
                    guard !item.isEmpty, item.count <= 4, let v = UInt16(item, radix: 16) else { return nil }
                    out.append(v)
                }
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all += [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard all.count == 8 else { return nil }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }
}
