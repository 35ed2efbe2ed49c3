// tt-peer: a TCP client or server for tcptrail's own tests, with a chosen
// process name, reporting what it did (pid, endpoints) on stdout so tests
// compare tcptrail with the processes themselves.
//
//   tt-peer server ADDR PORT COUNT [--name N] [--close-first] [--linger0] [--hold S] [--backlog N] [--no-accept]
//   tt-peer client ADDR PORT COUNT [--name N] [--close-first] [--linger0] [--half-close] [--hold S]
//   --hold S: wait S seconds before close() (after the peer's FIN, if awaited)
//   --half-close: shutdown(SHUT_WR) first, keep the socket open for --hold
//   tt-peer reconnect ADDR PORT CLOSED-PORT: one socket, refused by
//       CLOSED-PORT, then connected to PORT (the kernel reuses the socket)
// Lines: "pid P", "listening", then per connection
// "conn LADDR LPORT RADDR RPORT". Exit 0 when COUNT connections are done.
import CTCPTrailSys
#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String) -> Never {
    let line = Array(("tt-peer: " + message + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

/// A parsed IPv4 or IPv6 socket address.
struct Endpoint {
    var storage = sockaddr_storage()
    var length: socklen_t = 0
    var family: Int32 = AF_INET

    init?(_ host: String, _ port: UInt16) {
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            withUnsafeBytes(of: v4) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        } else if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            withUnsafeBytes(of: v6) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            family = AF_INET6
        } else {
            return nil
        }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }
}

func describe(_ fd: Int32, peer: Bool) -> String {
    var ss = sockaddr_storage()
    var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let rc = withUnsafeMutableBytes(of: &ss) { raw in
        peer ? getpeername(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len)
             : getsockname(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len)
    }
    guard rc == 0 else { return "? 0" }
    var text = [CChar](repeating: 0, count: 64)
    var port: UInt16 = 0
    withUnsafeBytes(of: ss) { raw in
        if Int32(ss.ss_family) == AF_INET {
            var a = raw.load(as: sockaddr_in.self)
            port = UInt16(bigEndian: a.sin_port)
            inet_ntop(AF_INET, &a.sin_addr, &text, 64)
        } else {
            var a = raw.load(as: sockaddr_in6.self)
            port = UInt16(bigEndian: a.sin6_port)
            inet_ntop(AF_INET6, &a.sin6_addr, &text, 64)
        }
    }
    let addr = String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return "\(addr) \(port)"
}

func setLinger0(_ fd: Int32) {
    var l = linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
}

/// Reads until the peer's FIN (or an error).
func drain(_ fd: Int32) {
    var buf = [UInt8](repeating: 0, count: 512)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 { return }
    }
}

let args = CommandLine.arguments
guard args.count >= 5, let port = UInt16(args[3]), let count = Int(args[4]) else {
    fail("usage: tt-peer server|client ADDR PORT COUNT [--name N] [--close-first] [--linger0] [--reuseport] [--fork] [--send N] [--hold S]")
}
let mode = args[1]
guard let endpoint = Endpoint(args[2], port) else { fail("bad address \(args[2])") }
let flags = Set(args.dropFirst(5))
let hold: Double = args.firstIndex(of: "--hold").flatMap { $0 + 1 < args.count ? Double(args[$0 + 1]) : nil } ?? 0
func holdBeforeClose() { if hold > 0 { usleep(useconds_t(hold * 1_000_000)) } }
if let i = args.firstIndex(of: "--name"), i + 1 < args.count { tt_set_comm(args[i + 1]) }
let closeFirst = flags.contains("--close-first")
let linger0 = flags.contains("--linger0")
say("pid \(getpid())")

switch mode {
case "server":
    let listener = socket(endpoint.family, Int32(SOCK_STREAM.rawValue), 0)
    var one: Int32 = 1
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    // Several servers on one port: the kernel spreads connections over them.
    if flags.contains("--reuseport") { setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size)) }
    guard endpoint.withSockaddr({ bind(listener, $0, $1) }) == 0 else { fail("bind: \(String(cString: strerror(errno)))") }
    let backlog = args.firstIndex(of: "--backlog").flatMap { $0 + 1 < args.count ? Int32(args[$0 + 1]) : nil } ?? 4096
    guard listen(listener, backlog) == 0 else { fail("listen failed") }
    say("listening")
    if flags.contains("--no-accept") {
        holdBeforeClose()  // a listener that never accepts: its queue overflows
        exit(0)
    }
    for _ in 0..<count {
        let fd = accept(listener, nil, nil)
        if fd < 0 { fail("accept: \(String(cString: strerror(errno)))") }
        say("conn \(describe(fd, peer: false)) \(describe(fd, peer: true))")
        if flags.contains("--fork") {
            // The socket handed to a child, which reads it and closes it.
            let child = fork()
            if child == 0 {
                close(listener)
                say("child \(getpid()) \(describe(fd, peer: true))")
                drain(fd)
                holdBeforeClose()
                close(fd)
                exit(0)
            }
            close(fd)
            continue
        }
        if linger0 {
            setLinger0(fd)
        } else if !closeFirst {
            drain(fd)  // the client closes first
        } else if flags.contains("--half-close") {
            shutdown(fd, Int32(SHUT_WR))  // our FIN first, socket kept open
            drain(fd)
        }
        holdBeforeClose()
        close(fd)
    }
    close(listener)
case "client":
    for _ in 0..<count {
        let fd = socket(endpoint.family, Int32(SOCK_STREAM.rawValue), 0)
        guard endpoint.withSockaddr({ connect(fd, $0, $1) }) == 0 else { fail("connect: \(String(cString: strerror(errno)))") }
        say("conn \(describe(fd, peer: false)) \(describe(fd, peer: true))")
        if let i = args.firstIndex(of: "--send"), i + 1 < args.count, let n = Int(args[i + 1]) {
            let data = [UInt8](repeating: 0x78, count: n)
            _ = data.withUnsafeBytes { write(fd, $0.baseAddress, n) }
        }
        if linger0 {
            setLinger0(fd)
        } else if closeFirst {
            // The server closes first: wait for its FIN.
            drain(fd)
        } else if flags.contains("--half-close") {
            shutdown(fd, Int32(SHUT_WR))  // our FIN first, socket kept open
            if !flags.contains("--no-drain") { drain(fd) }
        }
        holdBeforeClose()
        close(fd)
    }
case "reconnect":
    // COUNT is the closed port here: the first connect is refused.
    guard let closed = Endpoint(args[2], UInt16(count)) else { fail("bad closed port") }
    let fd = socket(endpoint.family, Int32(SOCK_STREAM.rawValue), 0)
    let refused = closed.withSockaddr { connect(fd, $0, $1) }
    say("refused \(refused == 0 ? "no" : String(cString: strerror(errno)))")
    guard endpoint.withSockaddr({ connect(fd, $0, $1) }) == 0 else { fail("connect: \(String(cString: strerror(errno)))") }
    say("conn \(describe(fd, peer: false)) \(describe(fd, peer: true))")
    close(fd)
default:
    fail("mode must be server, client or reconnect")
}
