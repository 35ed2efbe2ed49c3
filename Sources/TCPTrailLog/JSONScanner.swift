import TCPTrailCore
import TCPTrailHost
/// What is wrong with one line of a log, in words for `FILE:LINE: ...`.
public struct LogLineError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A JSON value found in a line: where it is, and what kind it is.
struct JSONValue {
    enum Kind: UInt8 { case string, number, bool, null, object, array }
    var kind: Kind
    /// Byte offsets of the value; for strings, inside the quotes.
    var start: Int
    var end: Int
    /// A string with backslash escapes (decode before use).
    var escaped = false
    var boolValue = false
    /// A number of digits only that fits in 64 bits: its value, read while scanning.
    var isUnsigned = false
    var unsigned: UInt64 = 0
}

/// Walks the members of one JSON object, validating as it goes (RFC 8259:
/// structure, string escapes, UTF-8, numbers). Hand-written and allocation-free
/// because replay reads millions of lines; nested values are validated and
/// skipped, and can be walked with a scanner of their own.
struct JSONObjectScanner {
    let bytes: UnsafePointer<UInt8>
    let count: Int
    private(set) var position: Int
    private var first = true
    private var closed = false
    static let maxDepth = 64

    /// Starts at the object's `{` (leading white space allowed).
    init(_ bytes: UnsafePointer<UInt8>, count: Int, start: Int = 0) throws(LogLineError) {
        self.bytes = bytes
        self.count = count
        position = start
        skipSpace()
        guard position < count else { throw LogLineError("empty line") }
        guard bytes[position] == UInt8(ascii: "{") else {
            throw LogLineError("not a JSON object: starts with \(Self.describe(bytes[position]))")
        }
        position += 1
    }

    static func describe(_ b: UInt8) -> String {
        (0x21..<0x7f).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x\(String(b, radix: 16))"
    }

    @inline(__always)
    private mutating func skipSpace() {
        // tcptrail writes no white space between tokens: one test, usually.
        if _fastPath(position < count && bytes[position] > 0x20) { return }
        while position < count {
            let b = bytes[position]
            guard b == 0x20 || b == 0x09 || b == 0x0d || b == 0x0a else { return }
            position += 1
        }
    }

    private func failure(_ what: String) -> LogLineError {
        LogLineError("\(what) at column \(position + 1)")
    }

    /// The next member's key bytes and value, or nil after the closing `}`.
    mutating func next() throws(LogLineError) -> (key: Range<Int>, value: JSONValue)? {
        guard let m = try next(expecting: nil, 0) else { return nil }
        return (m.key, m.value)
    }

    /// `next()`, trying first the member name the caller expects: `pattern`
    /// holds `"name":`. When it is there, the name needs no scan (its bytes
    /// are known to be valid) and `expected` is true.
    @inline(__always)
    mutating func next(expecting pattern: UnsafePointer<UInt8>?, _ length: Int) throws(LogLineError) -> (key: Range<Int>, value: JSONValue, expected: Bool)? {
        if closed { return nil }
        skipSpace()
        guard position < count else { throw failure("unexpected end of line inside an object (a cut record?)") }
        if first {
            first = false
            if bytes[position] == UInt8(ascii: "}") { position += 1; closed = true; return nil }
        } else {
            if bytes[position] == UInt8(ascii: "}") { position += 1; closed = true; return nil }
            guard bytes[position] == UInt8(ascii: ",") else { throw failure("expected ',' or '}' but found \(Self.describe(bytes[position]))") }
            position += 1
            skipSpace()
        }
        guard position < count, bytes[position] == UInt8(ascii: "\"") else {
            throw position < count ? failure("expected a quoted key") : failure("unexpected end of line (a cut record?)")
        }
        if let pattern, position + length <= count, JSONStrings.memcmpEqual(bytes + position, pattern, length) {
            let key = position + 1 ..< position + length - 2
            position += length
            skipSpace()
            return (key, try scanValue(depth: 1), true)
        }
        let key = try scanString()
        skipSpace()
        guard position < count, bytes[position] == UInt8(ascii: ":") else { throw failure("expected ':' after a key") }
        position += 1
        skipSpace()
        let value = try scanValue(depth: 1)
        return (key.start..<key.end, value, false)
    }

    /// After the object: only white space may follow.
    mutating func finish() throws(LogLineError) {
        while try next() != nil {}
        skipSpace()
        if position < count { throw failure("unexpected \(Self.describe(bytes[position])) after the object") }
    }

    private mutating func scanValue(depth: Int) throws(LogLineError) -> JSONValue {
        guard position < count else { throw failure("unexpected end of line: a value is missing") }
        switch bytes[position] {
        case UInt8(ascii: "\""):
            return try scanString()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try scanNumber()
        case UInt8(ascii: "t"):
            try literal("true")
            return JSONValue(kind: .bool, start: position - 4, end: position, boolValue: true)
        case UInt8(ascii: "f"):
            try literal("false")
            return JSONValue(kind: .bool, start: position - 5, end: position, boolValue: false)
        case UInt8(ascii: "n"):
            try literal("null")
            return JSONValue(kind: .null, start: position - 4, end: position)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let open = bytes[position]
            let start = position
            try skipContainer(depth: depth)
            return JSONValue(kind: open == UInt8(ascii: "{") ? .object : .array, start: start, end: position)
        default:
            throw failure("expected a value but found \(Self.describe(bytes[position]))")
        }
    }

    private mutating func literal(_ word: StaticString) throws(LogLineError) {
        let n = word.utf8CodeUnitCount
        guard position + n <= count else { throw failure("unexpected end of line in a literal") }
        for i in 0..<n where bytes[position + i] != word.utf8Start[i] {
            throw failure("invalid literal (expected \(word))")
        }
        position += n
    }

    /// Validates a nested object or array and moves past it.
    private mutating func skipContainer(depth: Int) throws(LogLineError) {
        guard depth < Self.maxDepth else { throw failure("nesting deeper than \(Self.maxDepth) levels") }
        let isObject = bytes[position] == UInt8(ascii: "{")
        let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
        position += 1
        skipSpace()
        if position < count && bytes[position] == close { position += 1; return }
        while true {
            skipSpace()
            if isObject {
                guard position < count, bytes[position] == UInt8(ascii: "\"") else { throw failure("expected a quoted key") }
                _ = try scanString()
                skipSpace()
                guard position < count, bytes[position] == UInt8(ascii: ":") else { throw failure("expected ':' after a key") }
                position += 1
                skipSpace()
            }
            _ = try scanValue(depth: depth + 1)
            skipSpace()
            guard position < count else { throw failure("unexpected end of line inside \(isObject ? "an object" : "an array") (a cut record?)") }
            if bytes[position] == close { position += 1; return }
            guard bytes[position] == UInt8(ascii: ",") else { throw failure("expected ',' or '\(Character(Unicode.Scalar(close)))'") }
            position += 1
        }
    }

    /// Skips string bytes 8 at a time while no byte of the word is a quote, a
    /// backslash, a control byte or non-ASCII; returns where the byte-by-byte
    /// scan must go on (at most `end`).
    @inline(__always)
    static func skipPlainWords(_ p: UnsafePointer<UInt8>, from start: Int, end: Int) -> Int {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        var i = start
        while i + 8 <= end {
            let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
            let quote = w ^ (ones &* 0x22), backslash = w ^ (ones &* 0x5c)
            let special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w) | w
            if special & highs != 0 { break }
            i += 8
        }
        return i
    }

    private mutating func scanString() throws(LogLineError) -> JSONValue {
        position += 1  // the opening quote
        let start = position
        var escaped = false
        position = Self.skipPlainWords(bytes, from: position, end: count)
        while position < count {
            let b = bytes[position]
            if b == UInt8(ascii: "\"") {
                let value = JSONValue(kind: .string, start: start, end: position, escaped: escaped)
                position += 1
                return value
            }
            if b == UInt8(ascii: "\\") {
                escaped = true
                guard position + 1 < count else { throw failure("unterminated string (a cut record?)") }
                switch bytes[position + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                     UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    position += 2
                case UInt8(ascii: "u"):
                    guard position + 6 <= count else { throw failure("unterminated \\u escape (a cut record?)") }
                    for i in 2..<6 where JSONStrings.hexValue(bytes[position + i]) == nil {
                        throw failure("invalid \\u escape in a string")
                    }
                    position += 6
                default:
                    throw failure("invalid escape '\\\(Character(Unicode.Scalar(bytes[position + 1])))' in a string")
                }
            } else if b < 0x20 {
                throw failure("control character 0x\(String(b, radix: 16)) in a string (must be escaped)")
            } else if b < 0x80 {
                position += 1
            } else {
                position += try utf8Sequence(at: position)
            }
        }
        throw failure("unterminated string (a cut record?)")
    }

    /// Length of the valid UTF-8 sequence at `i` (its first byte is >= 0x80).
    private func utf8Sequence(at i: Int) throws(LogLineError) -> Int {
        let b0 = bytes[i]
        let n: Int
        var lower: UInt8 = 0x80, upper: UInt8 = 0xbf
        switch b0 {
        case 0xc2...0xdf: n = 2
        case 0xe0: n = 3; lower = 0xa0
        case 0xe1...0xec, 0xee...0xef: n = 3
        case 0xed: n = 3; upper = 0x9f
        case 0xf0: n = 4; lower = 0x90
        case 0xf1...0xf3: n = 4
        case 0xf4: n = 4; upper = 0x8f
        default: throw LogLineError("invalid UTF-8 (byte 0x\(String(b0, radix: 16))) at column \(i + 1)")
        }
        guard i + n <= count else { throw LogLineError("invalid UTF-8 (cut sequence) at column \(i + 1)") }
        for k in 1..<n {
            let b = bytes[i + k]
            let (lo, hi): (UInt8, UInt8) = k == 1 ? (lower, upper) : (0x80, 0xbf)
            guard b >= lo && b <= hi else { throw LogLineError("invalid UTF-8 (byte 0x\(String(b, radix: 16))) at column \(i + k + 1)") }
        }
        return n
    }

    private mutating func scanNumber() throws(LogLineError) -> JSONValue {
        let start = position
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard position < count, isDigit(bytes[position]) else { throw failure("invalid number") }
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
            if position < count && isDigit(bytes[position]) { throw failure("invalid number (leading zero)") }
        } else {
            var value: UInt64 = 0, overflow = false
            while position < count, case let d = bytes[position] &- 48, d < 10 {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(d))
                value = a
                overflow = overflow || o1 || o2
                position += 1
            }
            if bytes[start] != UInt8(ascii: "-") && !overflow,
               position >= count || (bytes[position] != UInt8(ascii: ".") && bytes[position] | 0x20 != UInt8(ascii: "e")) {
                var v = JSONValue(kind: .number, start: start, end: position)
                v.isUnsigned = true
                v.unsigned = value
                return v
            }
        }
        if position < count && bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard position < count, isDigit(bytes[position]) else { throw failure("invalid number (no digit after '.')") }
            while position < count && isDigit(bytes[position]) { position += 1 }
        }
        if position < count && (bytes[position] | 0x20) == UInt8(ascii: "e") {
            position += 1
            if position < count && (bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")) { position += 1 }
            guard position < count, isDigit(bytes[position]) else { throw failure("invalid number (no exponent digits)") }
            while position < count && isDigit(bytes[position]) { position += 1 }
        }
        return JSONValue(kind: .number, start: start, end: position)
    }

    @inline(__always) private func isDigit(_ b: UInt8) -> Bool { b &- 48 < 10 }
}

/// Reading values the scanner found.
enum JSONStrings {
    static func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(b - 48)
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(b - 87)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(b - 55)
        default: nil
        }
    }

    /// Decodes a string value into bytes. `latin1` maps `\u0000`–`\u00ff` to one
    /// byte each, as the writer escapes the raw bytes of process names; other
    /// code points become UTF-8.
    static func decode(_ bytes: UnsafePointer<UInt8>, _ v: JSONValue, latin1: Bool, into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        var i = v.start
        while i < v.end {
            let b = bytes[i]
            guard b == UInt8(ascii: "\\") else { out.append(b); i += 1; continue }
            let e = bytes[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "u"):
                var cp = hex4(bytes, i)
                i += 4
                // A surrogate pair makes one code point; a lone surrogate becomes U+FFFD.
                if cp >= 0xd800 && cp < 0xdc00, i + 6 <= v.end, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                    let low = hex4(bytes, i + 2)
                    if low >= 0xdc00 && low < 0xe000 {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00)
                        i += 6
                    }
                }
                if latin1 && cp < 0x100 { out.append(UInt8(cp)); continue }
                let scalar = Unicode.Scalar(cp) ?? "\u{FFFD}"
                out.append(contentsOf: String(Character(scalar)).utf8)
            default: out.append(e)
            }
        }
    }

    private static func hex4(_ bytes: UnsafePointer<UInt8>, _ i: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v = v << 4 | (hexValue(bytes[i + k]) ?? 0) }
        return v
    }

    /// A non-negative integer without fraction or exponent.
    static func unsigned(_ bytes: UnsafePointer<UInt8>, _ v: JSONValue) -> UInt64? {
        if v.isUnsigned { return v.unsigned }
        guard v.kind == .number, v.start < v.end else { return nil }
        var result: UInt64 = 0
        for i in v.start..<v.end {
            let d = bytes[i] &- 48
            guard d < 10 else { return nil }
            let (m, o1) = result.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(d))
            if o1 || o2 { return nil }
            result = s
        }
        return result
    }

    static func signed(_ bytes: UnsafePointer<UInt8>, _ v: JSONValue) -> Int64? {
        guard v.kind == .number, v.start < v.end else { return nil }
        if bytes[v.start] == UInt8(ascii: "-") {
            var inner = v
            inner.start += 1
            guard let m = unsigned(bytes, inner), m <= UInt64(Int64.max) else { return nil }
            return -Int64(m)
        }
        guard let m = unsigned(bytes, v), m <= UInt64(Int64.max) else { return nil }
        return Int64(m)
    }

    static func double(_ bytes: UnsafePointer<UInt8>, _ v: JSONValue) -> Double? {
        guard v.kind == .number else { return nil }
        return Double(String(decoding: UnsafeBufferPointer(start: bytes + v.start, count: v.end - v.start), as: UTF8.self))
    }

    static func string(_ bytes: UnsafePointer<UInt8>, _ v: JSONValue) -> String? {
        guard v.kind == .string else { return nil }
        if !v.escaped { return String(decoding: UnsafeBufferPointer(start: bytes + v.start, count: v.end - v.start), as: UTF8.self) }
        var scratch: [UInt8] = []
        decode(bytes, v, latin1: false, into: &scratch)
        return String(decoding: scratch, as: UTF8.self)
    }

    /// The string's raw bytes equal `word` (no escapes).
    @inline(__always)
    static func equals(_ bytes: UnsafePointer<UInt8>, _ v: JSONValue, _ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard v.kind == .string, !v.escaped, v.end - v.start == n else { return false }
        return memcmpEqual(bytes + v.start, word.utf8Start, n)
    }

    @inline(__always)
    static func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        for i in 0..<n where a[i] != b[i] { return false }
        return true
    }
}
