#if canImport(Glibc)
import Glibc
#endif

/// A growable byte buffer that writers append to and the caller flushes.
///
/// It is reused for every event: after warm-up, appending allocates nothing.
public struct OutputBuffer {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 1 << 16) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { bytes.count }
    public var isEmpty: Bool { bytes.isEmpty }
    /// The contents as a String (for tests and one-off messages).
    public var string: String { String(decoding: bytes, as: UTF8.self) }

    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    /// Drops everything past `count` bytes (undoing a partly written record).
    public mutating func truncate(to count: Int) {
        bytes.removeSubrange(count..<bytes.count)
    }

    @inline(__always) public mutating func append(_ byte: UInt8) { bytes.append(byte) }

    @inline(__always) public mutating func append(_ s: StaticString) {
        bytes.append(contentsOf: s.bytes)
    }

    public mutating func append(_ s: String) { bytes.append(contentsOf: s.utf8) }

    public mutating func append(_ raw: UnsafeRawBufferPointer) { bytes.append(contentsOf: raw) }

    /// Appends an unsigned decimal number.
    public mutating func append(decimal value: UInt64) {
        if value < 10 {
            bytes.append(UInt8(truncatingIfNeeded: value) &+ 48)
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, no heap
        var n = 0
        var v = value
        withUnsafeMutableBytes(of: &digits) { scratch in
            while v > 0 {
                scratch[23 - n] = UInt8(truncatingIfNeeded: v % 10) &+ 48
                v /= 10
                n += 1
            }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[(24 - n)...]))
        }
    }

    public mutating func append(decimal value: Int64) {
        if value < 0 {
            bytes.append(UInt8(ascii: "-"))
            append(decimal: UInt64(bitPattern: 0 &- value))
        } else {
            append(decimal: UInt64(value))
        }
    }

    /// Appends `value` as exactly `width` digits, zero-padded.
    public mutating func append(decimal value: UInt64, zeroPaddedTo width: Int) {
        var divisor: UInt64 = 1
        for _ in 1..<max(width, 1) { divisor &*= 10 }
        var v = value % (divisor &* 10)
        while divisor > 0 {
            bytes.append(UInt8(truncatingIfNeeded: v / divisor) &+ 48)
            v %= divisor
            divisor /= 10
        }
    }

    /// Pads with spaces until the bytes since `start` reach `width`, then adds one space.
    public mutating func pad(from start: Int, to width: Int) {
        let used = bytes.count - start
        if used < width {
            for _ in used..<width { bytes.append(32) }
        }
        bytes.append(32)
    }

    // MARK: - Escaping

    private static let hex: StaticString = "0123456789abcdef"

    /// Appends bytes for a terminal: printable ASCII as is, everything else as `\xNN`
    /// (and a backslash as `\\`), so no escape sequence reaches the screen raw.
    public mutating func appendEscapedText(_ raw: UnsafeRawBufferPointer) {
        for b in raw {
            if b >= 0x20 && b < 0x7f && b != UInt8(ascii: "\\") {
                bytes.append(b)
            } else if b == UInt8(ascii: "\\") {
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(UInt8(ascii: "\\"))
            } else {
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(UInt8(ascii: "x"))
                bytes.append(Self.hex.bytes[Int(b >> 4)])
                bytes.append(Self.hex.bytes[Int(b & 0xf)])
            }
        }
    }

    public mutating func appendEscapedText(_ name: ProcessName) {
        name.withBytes { appendEscapedText($0) }
    }

    /// Appends a JSON string (with quotes). Control characters, quotes and
    /// backslashes are escaped; bytes of 0x80 and above become `\u00NN` so the
    /// output is valid UTF-8 JSON whatever the kernel handed over.
    public mutating func appendJSONString(_ raw: UnsafeRawBufferPointer) {
        bytes.append(UInt8(ascii: "\""))
        for b in raw {
            switch b {
            case UInt8(ascii: "\""):
                bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case 0x20..<0x7f:
                bytes.append(b)
            default:
                append("\\u00" as StaticString)
                bytes.append(Self.hex.bytes[Int(b >> 4)])
                bytes.append(Self.hex.bytes[Int(b & 0xf)])
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func appendJSONString(_ s: String) {
        var copy = s
        copy.withUTF8 { appendJSONString(UnsafeRawBufferPointer($0)) }
    }

    public mutating func appendJSONString(_ name: ProcessName) {
        name.withBytes { appendJSONString($0) }
    }

    // MARK: - Addresses

    /// Appends an address in its usual text form: dotted quad, or RFC 5952 IPv6.
    public mutating func append(address: RawAddress, family: UInt8) {
        address.withBytes { raw in
            if family == 4 {
                for i in 0..<4 {
                    if i > 0 { bytes.append(UInt8(ascii: ".")) }
                    append(decimal: UInt64(raw[i]))
                }
            } else {
                appendIPv6(raw)
            }
        }
    }

    private mutating func appendIPv6(_ raw: UnsafeRawBufferPointer) {
        var groups: (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &groups) { g in
            for i in 0..<8 {
                let v = UInt16(raw[2 * i]) << 8 | UInt16(raw[2 * i + 1])
                g.storeBytes(of: v, toByteOffset: 2 * i, as: UInt16.self)
            }
        }
        let group: (Int) -> UInt16 = { i in
            withUnsafeBytes(of: groups) { $0.load(fromByteOffset: 2 * i, as: UInt16.self) }
        }
        // IPv4-mapped (::ffff:a.b.c.d) keeps the dotted form, as inet_ntop does.
        if group(0) == 0 && group(1) == 0 && group(2) == 0 && group(3) == 0 && group(4) == 0 && group(5) == 0xffff {
            append("::ffff:" as StaticString)
            for i in 12..<16 {
                if i > 12 { bytes.append(UInt8(ascii: ".")) }
                append(decimal: UInt64(raw[i]))
            }
            return
        }
        // The longest run of two or more zero groups becomes "::" (first one on a tie).
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if group(i) == 0 {
                var j = i
                while j < 8 && group(j) == 0 { j += 1 }
                if j - i > bestLen { bestStart = i; bestLen = j - i }
                i = j
            } else {
                i += 1
            }
        }
        if bestLen < 2 { bestStart = -1 }
        i = 0
        var needColon = false
        while i < 8 {
            if i == bestStart {
                append("::" as StaticString)
                i += bestLen
                needColon = false
                continue
            }
            if needColon { bytes.append(UInt8(ascii: ":")) }
            appendHex(group(i))
            needColon = true
            i += 1
        }
    }

    private mutating func appendHex(_ v: UInt16) {
        var started = false
        for shift in stride(from: 12, through: 0, by: -4) {
            let nibble = Int((v >> UInt16(shift)) & 0xf)
            if nibble != 0 || started || shift == 0 {
                bytes.append(Self.hex.bytes[nibble])
                started = true
            }
        }
    }

    // MARK: - Output

    /// Writes everything to `fd` and empties the buffer.
    /// Returns the errno of a failed write (EPIPE for a closed reader), or 0.
    @discardableResult
    public mutating func flush(to fd: Int32) -> Int32 {
        var failure: Int32 = 0
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                offset += n
            }
        }
        bytes.removeAll(keepingCapacity: true)
        return failure
    }
}
