import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif
import TCPTrailLog

/// The libFuzzer target over replay: the input is a log file, read and
/// replayed as `tcptrail replay` does (the reader's gzip sniffing and line
/// splitting, the parser, the engine, the timelines, `--json`, the `--html`
/// board). Whatever the bytes, nothing may trap.
///
/// Built by `scripts/fuzz-replay` with `-sanitize=fuzzer,address -DFUZZING`;
/// built plainly (as `swift build` does), `tcptrail-fuzz FILE...` runs saved
/// inputs once each, to reproduce a crash without the sanitizers.
enum ReplayFuzz {
    /// The input goes through a file: LogReplay reads paths. A deleted temp
    /// file, reached through /proc/self/fd, so nothing is left behind.
    nonisolated(unsafe) static var file: (fd: Int32, path: String)? = {
        let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        var template = Array("\(dir)/tcptrail-fuzz-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { return nil }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return (fd, "/proc/self/fd/\(fd)")
    }()

    /// How an input is replayed: the last byte picks the output (text,
    /// `--json`, the `--html` board; one per input keeps the runs fast) and
    /// the selections, so the fuzzer reaches all of them.
    static func options(_ bytes: UnsafeRawBufferPointer) -> ReplayOptions {
        let knob = bytes.last ?? 0
        var o = ReplayOptions()
        switch knob % 3 {
        case 0: break
        case 1: o.json = true
        default: o.board = true
        }
        if knob & 8 != 0 { o.anomaliesOnly = true }
        if knob & 16 != 0 { o.strict = true }
        if knob & 32 != 0 { o.conn = ConnectionID(cookie: 10) }
        if knob & 64 != 0 {
            // The test logs' boot time, and the ends of the range.
            o.since = 1_795_242_600_000_000_000
            o.until = knob & 128 != 0 ? .max : 1_795_242_601_000_000_000
        } else if knob & 128 != 0 {
            var t = AnomalyThresholds()
            t.closeWaitNanoseconds = 1
            t.finWait2Nanoseconds = 999_999_999_000_000_000
            t.timeWaitSockets = 1
            t.dataRetransmits = 1
            o.thresholds = t
            o.since = .min
        }
        return o
    }

    static func run(_ bytes: UnsafeRawBufferPointer) {
        guard let (fd, path) = file else { fatalError("tcptrail-fuzz: no scratch file") }
        guard ftruncate(fd, 0) == 0, bytes.isEmpty || pwrite(fd, bytes.baseAddress, bytes.count, 0) == bytes.count else {
            fatalError("tcptrail-fuzz: cannot write the scratch file")
        }
        let options = options(bytes)
        let replay = LogReplay(paths: [path], options: options, write: { _ in true }, diagnose: { _ in })
        _ = replay.run().exitStatus
        // `replay --html`: the board as the page's JSON.
        if let board = replay.board, let clock = replay.clock {
            var query = ConnectionBoard.Query()
            query.anomaliesOnly = options.anomaliesOnly
            let json = BoardJSON(clock: clock, source: "replay", host: replay.hostname ?? "", windowSeconds: 0, limit: 2000)
            var out = OutputBuffer(capacity: 1 << 16)
            json.append(board, query: query, to: &out)
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    ReplayFuzz.run(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}

#if FUZZING
/// libFuzzer's own driver: SwiftPM makes this target's `main` the entry
/// point, so libFuzzer's `main` is not linked and is called here instead.
/// Pointers and an Int32 only, so Swift's calling convention matches C's.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ test: @convention(c) (UnsafeRawPointer, Int) -> CInt) -> CInt
#endif

/// One line on standard error.
func warn(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

@main
struct FuzzMain {
    static func main() {
        #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzz))
        #else
        // Without libFuzzer: run each saved input once.
        let files = CommandLine.arguments.dropFirst()
        if files.isEmpty {
            warn("usage: tcptrail-fuzz FILE... (build with scripts/fuzz-replay to fuzz)")
            exit(64)
        }
        for path in files {
            guard let f = fopen(path, "rb") else { warn("tcptrail-fuzz: cannot open \(path)"); exit(66) }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while case let n = fread(&chunk, 1, chunk.count, f), n > 0 { bytes += chunk[..<n] }
            fclose(f)
            bytes.withUnsafeBytes { ReplayFuzz.run($0) }
            print("\(path): ok")
        }
        #endif
    }
}
