import Foundation
import Testing

/// Issue 14: the log goes only into a file root's tracer controls, in a
/// directory others cannot write; refusals create nothing; a full disk with
/// rotation leaves a gap replay reports.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct LogSafetyTests {
    static let nobody: uid_t = 65534

    /// A root-owned directory of a given mode for one test, removed afterwards.
    final class Directory {
        let path: String
        init(mode: mode_t) throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("ttsafe-\(getpid())-\(Unique.next())").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            chmod(path, mode)
        }
        deinit {
            chmod(path, 0o700)
            _ = try? run(["umount", "-l", path + "/small"], check: false)
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    func size(_ path: String) -> Int? {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : nil
    }

    func records(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func refusals(_ stderr: String) -> [Substring] {
        stderr.split(separator: "\n").filter { $0.contains("refusing") }
    }

    /// Waits until stderr holds `count` refusal lines.
    func waitForRefusals(_ tracer: Background, _ count: Int) throws {
        let end = Date().addingTimeInterval(10)
        while refusals(tracer.stderr).count < count && Date() < end { usleep(20_000) }
    }

    /// The reported attack: the directory made world-writable mid-run, `nobody`
    /// moves the log away and puts a 0666 file at its path, SIGHUP. Decided:
    /// the reopen is refused (one line), nothing goes into nobody's file, the
    /// moved-away original keeps what was written before the SIGHUP (it is not
    /// written to after it), records are counted as not written, and a later
    /// SIGHUP with the directory fixed and nobody's file removed writes again.
    @Test func aDirectoryMadeWritableMidRunCannotRedirectTheLog() throws {
        let dir = try Directory(mode: 0o755)
        let ns = try NetworkNamespace(prefix: "ttsa")
        let port = Unique.port()
        let path = dir.path + "/trace.jsonl", moved = dir.path + "/moved.jsonl"
        let tracer = try LogRun.tracer(path, port: port, ["--quiet"])
        try Peer.exchange(ns, port: port, n: 3)
        usleep(300_000)

        chmod(dir.path, 0o777)
        try run(["runuser", "-u", "nobody", "--", "mv", path, moved])
        try run(["runuser", "-u", "nobody", "--", "sh", "-c", "umask 0; : > \"$0\"", path])
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_uid == Self.nobody && st.st_mode & 0o777 == 0o666)
        tracer.signal(SIGHUP)
        try waitForRefusals(tracer, 1)
        // Measured once the reopen closed it: from here on it must not grow.
        let movedSize = size(moved)
        try Peer.exchange(ns, port: port, n: 3)
        usleep(300_000)
        #expect(size(path) == 0, "records went into nobody's file")
        #expect(size(moved) == movedSize, "the moved-away log was written after the SIGHUP")
        let first = refusals(tracer.stderr)
        #expect(first.count == 1 && first[0].contains(dir.path) && first[0].contains("0777") && first[0].contains("--allow-shared-dir"),
                "\(tracer.stderr)")
        #expect(tracer.process.isRunning, "tracing must go on")

        // The directory fixed: nobody's file is still refused, for its owner.
        chmod(dir.path, 0o755)
        tracer.signal(SIGHUP)
        try waitForRefusals(tracer, 2)
        let second = refusals(tracer.stderr)
        #expect(second.count == 2 && second.last?.contains("owned by uid 65534") == true, "\(tracer.stderr)")
        let attackerBytes = size(path) ?? -1
        #expect(attackerBytes == 0)

        // Nobody's file gone: the next SIGHUP creates a new log and writes again.
        unlink(path)
        try LogRun.hangUp(tracer, then: ns, port: port, n: 3)
        tracer.signal(SIGINT)
        #expect(try tracer.wait() == 0)
        #expect(refusals(tracer.stderr).count == 2, "\(tracer.stderr)")

        let before = try records(moved), after = try records(path)
        #expect(before.first?.str("type") == "header" && after.first?.str("type") == "header")
        #expect(before.filter(\.isSetState).count == 32)
        // The second batch's records were not written; the third's were.
        let transitions = after.filter(\.isSetState).count
        #expect(transitions >= 32)
        let summary = try #require(after.last)
        #expect(summary.str("type") == "summary")
        #expect(summary.int("export_errors") >= 32, "\(summary)")
        #expect(stat(path, &st) == 0 && st.st_uid == 0 && st.st_mode & 0o7777 == 0o600 && st.st_nlink == 1)
        print("SAFETY-FIGURES attacker file bytes \(attackerBytes); moved log \(before.count) records; refused reopens 2; export_errors \(summary.int("export_errors"))")
    }

    /// The directory is held open: renamed mid-run and replaced by another at
    /// its old path, SIGHUP and rotation still write, rename and create in
    /// the original directory, and nothing appears in the new one.
    @Test func renamingTheDirectoryMidRunDoesNotRedirectTheLog() throws {
        let dir = try Directory(mode: 0o755)
        let held = dir.path + ".held"
        defer { try? FileManager.default.removeItem(atPath: held) }
        let ns = try NetworkNamespace(prefix: "ttsr")
        let port = Unique.port()
        let path = dir.path + "/trace.jsonl"
        let tracer = try LogRun.tracer(path, port: port, ["--quiet", "--rotate-size", "16K"])
        try Peer.exchange(ns, port: port, n: 2)
        usleep(300_000)
        #expect(rename(dir.path, held) == 0)
        try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: false)
        chmod(dir.path, 0o755)
        try LogRun.hangUp(tracer, then: ns, port: port, n: 20)
        tracer.signal(SIGINT)
        #expect(try tracer.wait() == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "the log followed the path")
        let files = try FileManager.default.contentsOfDirectory(atPath: held).sorted()
        #expect(files.contains("trace.jsonl") && files.contains("trace.jsonl.1"), "\(files)")
        #expect(try records(held + "/trace.jsonl").last?.str("type") == "summary")
    }

    /// A file at the path that someone else could read or reach: refused at
    /// start (73, one line naming it and the fix), nothing written into it.
    @Test func aHardLinkOrALooseFileAtThePathIsRefusedAtStart() throws {
        let dir = try Directory(mode: 0o700)
        let path = dir.path + "/trace.jsonl"
        let other = dir.path + "/other"
        try "keep\n".write(toFile: other, atomically: false, encoding: .utf8)
        chmod(other, 0o600)
        #expect(link(other, path) == 0)
        let linked = try run([Products.tcptrail, "trace", "--output", path, "--duration", "0.3"], check: false)
        #expect(linked.status == 73)
        #expect(linked.stderr.split(separator: "\n").count == 1 && linked.stderr.contains("2 hard links") && linked.stderr.contains("remove it"),
                "\(linked.stderr)")
        #expect(try String(contentsOfFile: other, encoding: .utf8) == "keep\n")
        unlink(path)

        #expect(FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]))
        chmod(path, 0o644)
        let loose = try run([Products.tcptrail, "trace", "--output", path, "--duration", "0.3"], check: false)
        #expect(loose.status == 73)
        #expect(loose.stderr.split(separator: "\n").count == 1 && loose.stderr.contains("mode 0644") && loose.stderr.contains("chmod 600"),
                "\(loose.stderr)")
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_size == 0 && st.st_mode & 0o7777 == 0o644)

        // Another user's 0600 file, and a FIFO, are refused too.
        chmod(path, 0o600)
        chown(path, Self.nobody, gid_t(Self.nobody))
        let foreign = try run([Products.tcptrail, "trace", "--output", path, "--duration", "0.3"], check: false)
        #expect(foreign.status == 73 && foreign.stderr.contains("owned by uid 65534"), "\(foreign.stderr)")
        #expect(size(path) == 0)
        unlink(path)
        #expect(mkfifo(path, 0o600) == 0)
        let fifo = try run([Products.tcptrail, "trace", "--output", path, "--duration", "0.3"], check: false, timeout: 30)
        #expect(fifo.status == 73 && fifo.stderr.contains("not a regular file"), "\(fifo.stderr)")
        unlink(path)

        // Our own 0600 file with one link is appended to.
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        chmod(path, 0o600)
        let kept = try run([Products.tcptrail, "trace", "--output", path, "--duration", "0.3", "--quiet", "--port", "\(Unique.port())"], check: false)
        #expect(kept.status == 0, "\(kept.stderr)")
        #expect(try records(path).first?.str("type") == "header")
    }

    /// Group-writable and sticky world-writable (/tmp-like) directories are
    /// refused without --allow-shared-dir (creating nothing), accepted with it.
    @Test(arguments: [0o770 as mode_t, 0o1777 as mode_t])
    func aSharedDirectoryNeedsAllowSharedDir(mode: mode_t) throws {
        let dir = try Directory(mode: mode)
        let path = dir.path + "/trace.jsonl"
        let refused = try run([Products.tcptrail, "trace", "--output", path, "--duration", "0.3"], check: false)
        #expect(refused.status == 73)
        #expect(refused.stderr.split(separator: "\n").count == 1 && refused.stderr.contains("--allow-shared-dir")
                && refused.stderr.contains(String(mode, radix: 8)), "\(refused.stderr)")
        #expect(size(path) == nil, "a refused run created the file")

        let allowed = try run([Products.tcptrail, "trace", "--output", path, "--allow-shared-dir", "--duration", "0.3", "--quiet",
                               "--port", "\(Unique.port())"], check: false)
        #expect(allowed.status == 0, "\(allowed.stderr)")
        let written = try records(path)
        #expect(written.first?.str("type") == "header" && written.last?.str("type") == "summary")
    }

    /// Refused for privileges (77): the log is not created, even in a
    /// directory the user could create it in.
    @Test func aRunRefusedForPrivilegesCreatesNoFile() throws {
        let dir = try Directory(mode: 0o700)
        chown(dir.path, Self.nobody, gid_t(Self.nobody))
        let path = dir.path + "/trace.jsonl"
        let r = try run(["runuser", "-u", "nobody", "--", Products.tcptrail, "trace", "--output", path, "--duration", "0.3"], check: false)
        #expect(r.status == 77, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(size(path) == nil, "the refused run created \(path)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)

        // In a root-owned directory nobody can search but not write: 77 too, nothing created.
        let shared = try Directory(mode: 0o755)
        let other = shared.path + "/trace.jsonl"
        let r2 = try run(["runuser", "-u", "nobody", "--", Products.tcptrail, "trace", "--output", other, "--duration", "0.3"], check: false)
        #expect(r2.status == 77, "\(r2.stderr)")
        #expect(size(other) == nil)
    }

    /// A full disk while rotating: every file starts with its header (a
    /// header that did not fit goes in first when space returns), no empty
    /// headerless file is left, and replay reports the records that were not
    /// written as missing by seq instead of "complete".
    @Test func aFullDiskWhileRotatingLeavesAGapReplayReports() throws {
        let dir = try Directory(mode: 0o700)
        let mount = dir.path + "/small"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false)
        try run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mount])
        let ns = try NetworkNamespace(prefix: "ttsd")
        let port = Unique.port()
        let path = mount + "/trace.jsonl"
        let tracer = try Background([Products.tcptrail, "trace", "--output", path, "--quiet", "--rotate-size", "16K",
                                     "--rotate-keep", "1000", "--port", "\(port)"])
        try tracer.waitFor("tracing TCP events", inStderr: true)
        try Peer.exchange(ns, port: port, n: 10)
        usleep(300_000)
        // Fill the disk (dd stops at ENOSPC), then rotate while it is full.
        _ = try run(["dd", "if=/dev/zero", "of=\(mount)/filler", "bs=4k"], check: false)
        try Peer.exchange(ns, port: port, n: 20)
        usleep(500_000)
        #expect(tracer.process.isRunning)
        unlink(mount + "/filler")
        try Peer.exchange(ns, port: port, n: 10)
        usleep(300_000)
        tracer.signal(SIGINT)
        #expect(try tracer.wait() == 0)
        #expect(tracer.stderr.contains("cannot write the log"), "\(tracer.stderr)")

        let names = try FileManager.default.contentsOfDirectory(atPath: mount).filter { $0.hasPrefix("trace.jsonl") }
        let files = names.map { "\(mount)/\($0)" }
        #expect(files.count >= 4, "\(names)")
        var seqs: [Int] = []
        var summary: [String: Any]?
        for file in files {
            #expect((size(file) ?? 0) > 0, "\(file) was left empty")
            let r = try records(file)
            #expect(r.first?.str("type") == "header", "\(file) does not start with a header")
            seqs += r.map { $0.int("seq") }
            if r.last?.str("type") == "summary" { summary = r.last }
        }
        seqs.sort()
        let missing = zip(seqs, seqs.dropFirst()).reduce(0) { $0 + ($1.1 - $1.0 - 1) }
        #expect(missing > 0)
        let errors = try #require(summary).int("export_errors")
        #expect(missing == errors, "\(missing) seqs missing, \(errors) counted as not written")

        let replay = try run([Products.tcptrail, "replay"] + files, check: false)
        let text = replay.stdout + replay.stderr
        #expect(text.contains("\(missing) records missing by seq"), "\(text.suffix(1500))")
        #expect(!text.contains("complete: no gaps"))
        print("SAFETY-FIGURES full disk: \(files.count) files, \(seqs.count) records in them, \(missing) seqs missing, export_errors \(errors)")
    }
}
