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
