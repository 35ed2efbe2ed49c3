/// When the log file rotates and how its files move: the decisions the log's
/// writer carries out, kept pure so they are tested without a file.
public struct LogRotation: Sendable, Equatable {
    /// Rotate before a file grows past this many bytes (nil: never).
    public var maxBytes: Int?
    /// Rotated files kept beside the live one (NAME.1 is the newest).
    public var keep = 5

    public init(maxBytes: Int? = nil, keep: Int = 5) {
        self.maxBytes = maxBytes
        self.keep = keep
    }

    /// Whether a file that holds `inFile` bytes rotates before `pending` more:
    /// a record never spans two files, and a file is never left empty.
    public func rotates(inFile: Int, adding pending: Int) -> Bool {
        guard let maxBytes else { return false }
        return inFile + pending > maxBytes && inFile > 0
    }

    /// One move of a rotation, in a directory.
    public enum Move: Equatable, Sendable {
        case remove(String)
        case rename(from: String, to: String)
    }

    /// The moves of one rotation of the file `name`, in order: the oldest
    /// dropped, each NAME.i to NAME.i+1, then NAME to NAME.1 (with keep 0, NAME removed).
    public func moves(for name: String) -> [Move] {
        guard keep > 0 else { return [.remove(name)] }
        var out: [Move] = [.remove("\(name).\(keep)")]
        if keep > 1 {
            for i in stride(from: keep - 1, through: 1, by: -1) { out.append(.rename(from: "\(name).\(i)", to: "\(name).\(i + 1)")) }
        }
        out.append(.rename(from: name, to: "\(name).1"))
        return out
    }
}
