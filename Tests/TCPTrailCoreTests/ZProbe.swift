import CTCPTrailEvent
import Testing
import Glibc
@testable import TCPTrailCore

@Test func zprobe() {
    var engine = HandshakeEngine()
    var mono: UInt64 = 1_000_000_000
    var kinds: [String: Int] = [:]
    var before = mallinfo2()
    for pair in 0..<300000 {
        if pair == 290000 { before = mallinfo2() }
        let port = UInt16(32768 + pair % 28000)
        let seq: [(Bool, KernelTCPState, KernelTCPState, Bool)] = [(true, .close, .synSent, false), (false, .listen, .synRecv, false), (true, .synSent, .established, false), (false, .synRecv, .established, false), (true, .established, .finWait1, false), (false, .established, .closeWait, true), (false, .closeWait, .lastAck, true), (true, .finWait1, .finWait2, false), (false, .lastAck, .close, true), (true, .finWait2, .close, true)]
        for (isClient, from, to, fin) in seq {
            var flags = UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
            if fin { flags |= UInt8(TT_FLAG_PEER_FIN.rawValue) }
            let e = KernelEvent(monoNanoseconds: mono, cookie: 1000 + UInt64(pair) * 2 + (isClient ? 0 : 1), netns: 1, pid: 1, comm: ProcessName("churn"), kind: .transition, family: 4, localAddress: RawAddress(bytes: [127,0,0,1]), remoteAddress: RawAddress(bytes: [127,0,0,1]), localPort: isClient ? port : 8080, remotePort: isClient ? 8080 : port, oldState: from, newState: to, flags: flags)
            mono += 10_000
            engine.process(e) { o in
                switch o {
                case .anomaly(let a): kinds[a.kind.rawValue, default: 0] += 1
                case .change(let c): kinds["change:" + c.step.rawValue, default: 0] += 1
                default: kinds["other", default: 0] += 1
                }
            }
        }
    }
    let after = mallinfo2()
    print("arena delta", Int(after.uordblks) - Int(before.uordblks), "hblk", after.hblks)
    print(kinds.sorted { $0.key < $1.key })
}
