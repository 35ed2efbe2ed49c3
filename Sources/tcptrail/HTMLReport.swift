import Foundation
import TCPTrailCore
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// `replay --html FILE`: the timeline page with a run's board embedded, written
/// to a temporary file beside FILE and renamed over it, so a failed write
/// (a full disk) never leaves a half report, and FILE is never followed if a symlink.
final class HTMLReport {
    let path: String
    private let temporary: String
    private var fd: Int32

    /// Creates the temporary file now: a directory that cannot take it fails before the replay.
    init(path: String) throws(CommandFailure) {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        temporary = (dir.isEmpty ? "" : dir + "/") + ".\((path as NSString).lastPathComponent).tcptrail-\(getpid()).tmp"
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 {
            let err = String(cString: strerror(errno))
            throw CommandFailure("cannot write the report \(path): \(err); check the directory and its permissions", status: .cannotCreate)
        }
    }

    deinit {
        if fd >= 0 {
            close(fd)
            unlink(temporary)
        }
    }

    func write(boardJSON: OutputBuffer) throws(CommandFailure) {
        guard let page = TimelinePage.report(boardJSON: boardJSON) else {
            throw CommandFailure("the embedded page has no data element (a broken build)", status: .damagedBuild)
        }
        var failure = page.withUnsafeBytes { OutputBuffer.writeAll(fd, $0).error }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        fd = -1
        if failure == 0 && rename(temporary, path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary)
            throw CommandFailure("cannot write the report \(path): \(String(cString: strerror(failure))); nothing was written (free space, or choose another path)", status: .outputIncomplete)
        }
    }
}
