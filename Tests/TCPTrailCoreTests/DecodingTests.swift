import CTCPTrailEvent
import Foundation
import Testing
@testable import TCPTrailCore

/// A record as the kernel side writes it: built byte by byte at the offsets
/// bpf/tcptrail_event.h gives, independently of the Swift decoder.
func recordedTransition() -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 128)
    func put<T: FixedWidthInteger>(_ v: T, at offset: Int) {
        withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[offset + i] = x } }
    }
    put(UInt64(987_358_511_830), at: 0)      // mono_ns
    put(UInt64(4217), at: 8)                 // cookie
    put(UInt64(361_612), at: 16)             // prev_state_ns
    put(UInt32(2), at: 24)                   // generation
    put(UInt32(4_026_531_833), at: 28)       // netns
    put(UInt32(5536), at: 32)                // pid
    put(Int32(0), at: 36)                    // error
    b[40...43] = [127, 0, 0, 1]              // saddr
    b[56...59] = [198, 18, 0, 2]             // daddr
    put(UInt16(42174), at: 72)               // sport
    put(UInt16(8080), at: 74)                // dport
    put(UInt16(2), at: 76)                   // family AF_INET
    b[78] = 1                                // type transition
    b[79] = 2                                // old SYN_SENT
    b[80] = 1                                // new ESTABLISHED
    b[82] = UInt8(TT_FLAG_OWNER_KNOWN.rawValue | TT_FLAG_PREV_KNOWN.rawValue)
    b[83] = 1                                // cpu
    for (i, c) in "curl".utf8.enumerated() { b[88 + i] = c }
    for (i, c) in "curl-worker".utf8.enumerated() { b[104 + i] = c }  // thread
    put(UInt64(0x1_0000_2f4e), at: 120)      // cgroup
    return b
}

@Suite struct LayoutTests {
    @Test func swiftSeesTheSameLayoutAsTheHeader() {
        #expect(MemoryLayout<tcptrail_event>.size == Int(TT_EVENT_SIZE))
        #expect(MemoryLayout<tcptrail_event>.size == 128)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.mono_ns) == 0)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.cookie) == 8)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.prev_state_ns) == 16)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.generation) == 24)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.netns) == 28)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.pid) == 32)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.error) == 36)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.saddr) == 40)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.daddr) == 56)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.sport) == 72)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.dport) == 74)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.family) == 76)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.type) == 78)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.old_state) == 79)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.new_state) == 80)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.detail) == 81)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.flags) == 82)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.cpu) == 83)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.reason) == 84)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.comm) == 88)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.thread) == 104)
        #expect(MemoryLayout<tcptrail_event>.offset(of: \.cgroup) == 120)
        #expect(MemoryLayout<tcptrail_config>.size == 128)
        #expect(MemoryLayout<tcptrail_config>.offset(of: \.cgroup_filter) == 120)
        #expect(MemoryLayout<tcptrail_owner>.size == 48 && MemoryLayout<tcptrail_listener>.size == 56)
        #expect(MemoryLayout<tcptrail_owner>.offset(of: \.cgroup) == 40)
        #expect(MemoryLayout<tcptrail_tw_key>.size == 44 && MemoryLayout<tcptrail_tw>.size == 88)
        #expect(MemoryLayout<tcptrail_tw>.offset(of: \.substate) == 80)
    }

    @Test func kernelStateNumbersMatchTheKernel() {
        #expect(KernelTCPState.established.rawValue == 1)
        #expect(KernelTCPState.close.rawValue == 7)
        #expect(KernelTCPState.listen.rawValue == 10)
        #expect(KernelTCPState.newSynRecv.rawValue == 12)
        #expect(KernelTCPState(name: "FIN_WAIT1") == .finWait1)
    }
}

@Suite struct DecodingTests {
    @Test func decodesARecordedTransition() throws {
        let bytes = recordedTransition()
        let event = try bytes.withUnsafeBytes { try EventDecoder.decode($0).get() }
        #expect(event.kind == .transition)
        #expect(event.monoNanoseconds == 987_358_511_830)
        #expect(event.connectionID == ConnectionID(cookie: 4217, generation: 2))
        #expect(event.connectionID.description == "4217.2")
        #expect(ConnectionID("4217.2") == event.connectionID && ConnectionID("4217") == ConnectionID(cookie: 4217))
        #expect(ConnectionID("") == nil && ConnectionID("1.") == nil && ConnectionID(".1") == nil && ConnectionID("1.2.3") == nil && ConnectionID("+1") == nil)
        #expect(event.previousStateNanoseconds == 361_612)
        #expect(event.pid == 5536)
        #expect(event.comm == ProcessName("curl"))
        #expect(event.thread == ProcessName("curl-worker"))
        #expect(event.cgroupID == 0x1_0000_2f4e)
        #expect(event.family == .ipv4)
        #expect(event.localPort == 42174)
        #expect(event.remotePort == 8080)
        #expect(event.oldState == .synSent)
        #expect(event.newState == .established)
        #expect(event.ownerKnown)
        #expect(event.cpu == 1)
    }

    @Test func decodesUnaligned() throws {
        let bytes = [0] + recordedTransition()
        let event = try bytes.withUnsafeBytes { try EventDecoder.decode(UnsafeRawBufferPointer(rebasing: $0[1...])).get() }
        #expect(event.cookie == 4217)
    }

    @Test func rejectsWrongSizeAndUnknownKinds() {
        var bytes = recordedTransition()
        #expect(bytes.dropLast().withUnsafeBytes { EventDecoder.decode($0) } == .failure(.wrongSize(127)))
        bytes[78] = 9
        #expect(bytes.withUnsafeBytes { EventDecoder.decode($0) } == .failure(.unknownKind(9)))
        bytes[78] = 1
        bytes[76] = 7
        #expect(bytes.withUnsafeBytes { EventDecoder.decode($0) } == .failure(.unknownFamily(7)))
    }

    @Test func encodeRoundTrips() throws {
        let original = try recordedTransition().withUnsafeBytes { try EventDecoder.decode($0).get() }
        let again = try EventDecoder.encode(original).withUnsafeBytes { try EventDecoder.decode($0).get() }
        #expect(again == original)
        #expect(EventDecoder.encode(original) == recordedTransition())
    }

    @Test func unknownPreviousStateDuration() throws {
        var bytes = recordedTransition()
        bytes[82] = UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
        let event = try bytes.withUnsafeBytes { try EventDecoder.decode($0).get() }
        #expect(event.previousStateNanoseconds == nil)
    }
}
