extension String {
    /// The string as a terminal may show it: printable ASCII as is, every
    /// other byte as `\xNN` and a backslash as `\\`, as process names are
    /// shown. For anything that came from a log, a file name or the command
    /// line, so no escape sequence in it reaches a screen raw.
    public var escaped: String {
        var out = OutputBuffer(capacity: utf8.count + 16)
        var copy = self
        copy.withUTF8 { out.appendEscapedText(UnsafeRawBufferPointer($0)) }
        return out.string
    }
}

/// A line for stderr: text as is, control characters (C0 but tab, DEL, C1)
/// as `\xNN` or `\u{NN}`, so a file name or a log field interpolated into a
/// message cannot move the cursor, retitle the window or end the line.
public enum TerminalLine {
    public static func sanitize(_ line: String) -> String {
        guard line.unicodeScalars.contains(where: isControl) else { return line }
        var out = ""
        out.unicodeScalars.reserveCapacity(line.unicodeScalars.count + 8)
        for s in line.unicodeScalars {
            if s.value < 0x20 || s.value == 0x7f {
                out += "\\x" + hex(s.value)
            } else if isControl(s) {
                out += "\\u{" + hex(s.value) + "}"
            } else {
                out.unicodeScalars.append(s)
            }
        }
        return out
    }

    /// C0 and C1 controls, DEL, and the bidirectional overrides that reorder what is shown.
    static func isControl(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || (0x7f...0x9f).contains(s.value) || (0x202a...0x202e).contains(s.value) || (0x2066...0x2069).contains(s.value)
    }

    private static func hex(_ v: UInt32) -> String {
        let h = String(v, radix: 16)
        return h.count < 2 ? "0" + h : h
    }
}
