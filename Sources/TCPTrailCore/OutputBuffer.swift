#if canImport(Glibc)
import Glibc
#endif

/// A growable byte buffer that writers append to and the caller flushes.
///
/// It is reused for every event: after warm-up, appending allocates nothing.
public struct OutputBuffer {
    /// Raw bytes, so an append is a capacity check and a copy: Array's
    /// append(contentsOf:) cost more than the formatting around it.
    /// Inlinable (with `reserve` and the small appends): the log writer and
    /// the sinks append from other modules on every record (replay --json ran
    /// 8% more instructions per event with these as calls). `let`s, because a
    /// class's `var` read from inlined code in another module costs a runtime
    /// exclusivity check: twice the instructions (bench/callgrind-replay).
    @usableFromInline final class Storage {
        @usableFromInline let base: UnsafeMutablePointer<UInt8>
        @usableFromInline let capacity: Int
        @usableFromInline init(capacity: Int) {
            self.capacity = max(capacity, 16)
            base = .allocate(capacity: self.capacity)
        }
        deinit { base.deallocate() }
    }
    @usableFromInline var storage: Storage
    @usableFromInline var used = 0
    /// Bytes appended.
    public var count: Int { used }

    public init(capacity: Int = 1 << 16) {
        storage = Storage(capacity: capacity)
    }

    public var isEmpty: Bool { count == 0 }
    /// A copy of the contents.
    public var bytes: [UInt8] { Array(UnsafeBufferPointer(start: storage.base, count: count)) }
    /// The contents as a String (for tests and one-off messages).
    public var string: String { String(decoding: UnsafeBufferPointer(start: storage.base, count: count), as: UTF8.self) }

    /// The contents, without a copy.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.base, count: count))
    }

    public mutating func removeAll() { used = 0 }

    /// Drops everything past `count` bytes (undoing a partly written record).
    public mutating func truncate(to count: Int) {
        used = min(max(count, 0), used)
    }

    /// Room for `n` more bytes; where they go.
    @inlinable @inline(__always)
    mutating func reserve(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if _slowPath(count + n > storage.capacity || !isKnownUniquelyReferenced(&storage)) { grow(n) }
        return storage.base + count
    }

    @usableFromInline @inline(never)
    mutating func grow(_ n: Int) {
        let bigger = Storage(capacity: max(storage.capacity * 2, count + n))
        bigger.base.update(from: storage.base, count: count)
        storage = bigger
    }

    @inlinable @inline(__always) public mutating func append(_ byte: UInt8) {
        reserve(1).pointee = byte
        used += 1
    }

    @inlinable @inline(__always) public mutating func append(_ s: StaticString) {
        append(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    public mutating func append(_ s: String) {
        var s = s
        s.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    @inlinable @inline(__always) public mutating func append(_ raw: UnsafeRawBufferPointer) {
        let n = raw.count
        guard n > 0, let src = raw.baseAddress else { return }
        UnsafeMutableRawPointer(reserve(n)).copyMemory(from: src, byteCount: n)
        used += n
    }

    public mutating func append(contentsOf bytes: some Sequence<UInt8>) {
        for b in bytes { append(b) }
    }

    /// "00" to "99": numbers are written two digits per division.
    private static let digitPairs: StaticString = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

    /// 10^0 to 10^19.
    private static let powersOfTen: [UInt64] = (0..<20).map { (0..<$0).reduce(UInt64(1)) { p, _ in p * 10 } }

    /// Writes the last `n` digits of `value` (zero-padded) ending just before `end`.
    @inline(__always)
    private static func writeDigits(_ value: UInt64, _ n: Int, before end: UnsafeMutablePointer<UInt8>) {
        let pairs = digitPairs.utf8Start
        var v = value, i = n, p = end
        while i >= 2 {
            let r = Int(truncatingIfNeeded: v % 100)
            v /= 100
            p -= 2
            p[0] = pairs[2 &* r]
            p[1] = pairs[2 &* r &+ 1]
            i -= 2
        }
        if i == 1 { (p - 1).pointee = UInt8(truncatingIfNeeded: v % 10) &+ 48 }
    }

    /// A JSON member: its `,"key":` (or `{"key":`) literal, then the number.
    @inlinable @inline(__always)
    public mutating func append(_ key: StaticString, decimal value: UInt64) {
        append(key)
        append(decimal: value)
    }

    @inlinable @inline(__always)
    public mutating func append(_ key: StaticString, decimal value: Int64) {
        append(key)
        append(decimal: value)
    }

    /// A JSON member whose value is a string, escaped.
    @inline(__always)
    public mutating func append(_ key: StaticString, jsonString value: String) {
        append(key)
        appendJSONString(value)
    }

    /// A JSON member whose value is a process name, escaped.
    @inline(__always)
    public mutating func append(_ key: StaticString, jsonString value: ProcessName) {
        append(key)
        appendJSONString(value)
    }

    /// Appends an unsigned decimal number.
    public mutating func append(decimal value: UInt64) {
        if value < 10 {
            append(UInt8(truncatingIfNeeded: value) &+ 48)
            return
        }
        // The digit count from the bit length (x 1233 / 4096 is about x log10(2)), then one compare.
        var n = ((64 - value.leadingZeroBitCount) &* 1233) >> 12
        if value >= Self.powersOfTen[n] { n += 1 }
        Self.writeDigits(value, n, before: reserve(n) + n)
        used += n
    }

    public mutating func append(decimal value: Int64) {
        if value < 0 {
            append(UInt8(ascii: "-"))
            append(decimal: UInt64(bitPattern: 0 &- value))
        } else {
            append(decimal: UInt64(value))
        }
    }

    /// Appends `value` as exactly `width` digits, zero-padded.
    public mutating func append(decimal value: UInt64, zeroPaddedTo width: Int) {
        let w = max(width, 1)
        Self.writeDigits(value, w, before: reserve(w) + w)
        used += w
    }

    /// Pads with spaces until the bytes since `start` reach `width`, then adds one space.
    public mutating func pad(from start: Int, to width: Int) {
        let written = count - start
        let n = (written < width ? width - written : 0) + 1
        reserve(n).update(repeating: 32, count: n)
        used += n
    }

    // MARK: - Escaping

    private static let hex: StaticString = "0123456789abcdef"

    /// Appends bytes for a terminal: printable ASCII as is, everything else as `\xNN`
    /// (and a backslash as `\\`), so no escape sequence reaches the screen raw.
    public mutating func appendEscapedText(_ raw: UnsafeRawBufferPointer) {
        for b in raw {
            if b >= 0x20 && b < 0x7f && b != UInt8(ascii: "\\") {
                append(b)
            } else if b == UInt8(ascii: "\\") {
                append(UInt8(ascii: "\\"))
                append(UInt8(ascii: "\\"))
            } else {
                append(UInt8(ascii: "\\"))
                append(UInt8(ascii: "x"))
                append(Self.hex.bytes[Int(b >> 4)])
                append(Self.hex.bytes[Int(b & 0xf)])
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
        append(UInt8(ascii: "\""))
        for b in raw {
            switch b {
            case UInt8(ascii: "\""):
                append(UInt8(ascii: "\\")); append(b)
            case UInt8(ascii: "\\"):
                append(UInt8(ascii: "\\")); append(b)
            case 0x20..<0x7f:
                append(b)
            default:
                append("\\u00" as StaticString)
                append(Self.hex.bytes[Int(b >> 4)])
                append(Self.hex.bytes[Int(b & 0xf)])
            }
        }
        append(UInt8(ascii: "\""))
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
    public mutating func append(address: RawAddress, family: AddressFamily) {
        address.withBytes { raw in
            if family == .ipv4 {
                for i in 0..<4 {
                    if i > 0 { append(UInt8(ascii: ".")) }
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
            Swift.withUnsafeBytes(of: groups) { $0.load(fromByteOffset: 2 * i, as: UInt16.self) }
        }
        // IPv4-mapped (::ffff:a.b.c.d) keeps the dotted form, as inet_ntop does.
        if group(0) == 0 && group(1) == 0 && group(2) == 0 && group(3) == 0 && group(4) == 0 && group(5) == 0xffff {
            append("::ffff:" as StaticString)
            for i in 12..<16 {
                if i > 12 { append(UInt8(ascii: ".")) }
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
            if needColon { append(UInt8(ascii: ":")) }
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
                append(Self.hex.bytes[nibble])
                started = true
            }
        }
    }
}
