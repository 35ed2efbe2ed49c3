import CTCPTrailEvent
import Foundation
import Testing
import TCPTrailCore
@testable import TCPTrailLog

/// The one table of v1 record types and members (`LogSchema`) against the
/// published schema (docs/event-log.schema.json) and against what the writer
/// writes: a member added in one place and not the others fails here.
@Suite struct LogSchemaTests {
    static func schema() throws -> [String: Any] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let data = try Data(contentsOf: root.appendingPathComponent("docs/event-log.schema.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The members a schema node requires and those it names anywhere (through allOf, anyOf, $ref, if/then).
    static func members(_ node: [String: Any], defs: [String: Any], requiredToo: Bool = true) -> (required: Set<String>, named: Set<String>) {
        var required = requiredToo ? Set(node["required"] as? [String] ?? []) : []
        var named = Set((node["properties"] as? [String: Any])?.keys.map { $0 } ?? [])
        named.formUnion(node["required"] as? [String] ?? [])
        if let ref = node["$ref"] as? String, let def = defs[String(ref.split(separator: "/").last ?? "")] as? [String: Any] {
            let m = members(def, defs: defs, requiredToo: requiredToo)
            required.formUnion(m.required)
            named.formUnion(m.named)
        }
        for sub in node["allOf"] as? [[String: Any]] ?? [] {
            let m = members(sub, defs: defs, requiredToo: requiredToo)
            required.formUnion(m.required)
            named.formUnion(m.named)
        }
        // Alternatives and conditions: what they name may be there, none of it must.
        for sub in (node["anyOf"] as? [[String: Any]] ?? []) + (node["oneOf"] as? [[String: Any]] ?? []) + [node["then"] as? [String: Any]].compactMap({ $0 }) {
            named.formUnion(members(sub, defs: defs, requiredToo: false).named)
        }
        return (required, named)
    }

    @Test func theSchemaFileHasTheTablesMembersForEveryType() throws {
        let s = try Self.schema()
        let defs = s["$defs"] as? [String: Any] ?? [:]
        #expect(Set(s["required"] as? [String] ?? []) == Set(LogSchema.common.map(\.rawValue)))
        let types = ((s["properties"] as? [String: Any])?["type"] as? [String: Any])?["enum"] as? [String] ?? []
        #expect(Set(types) == Set(LogSchema.written.map { "\($0.name)" }))
        var seen: Set<String> = []
        for clause in s["allOf"] as? [[String: Any]] ?? [] {
            let type = try #require((((clause["if"] as? [String: Any])?["properties"] as? [String: Any])?["type"] as? [String: Any])?["const"] as? String)
            let then = try #require(clause["then"] as? [String: Any])
            let record = try #require(LogSchema.written.first { "\($0.name)" == type }, "\(type) is not in LogSchema")
            let m = Self.members(then, defs: defs)
            let table = LogSchema.members(record)
            #expect(m.required == Set(table.required.map(\.rawValue)), "\(type): required")
            #expect(m.named == Set(table.all.map(\.rawValue)), "\(type): members")
            seen.insert(type)
        }
        #expect(seen == Set(types), "a type without its clause in the schema")
        // The objects with fixed members.
        let header = try #require((s["allOf"] as? [[String: Any]])?.first { ((($0["if"] as? [String: Any])?["properties"] as? [String: Any])?["type"] as? [String: Any])?["const"] as? String == "header" })
        let props = try #require((header["then"] as? [String: Any])?["properties"] as? [String: Any])
        let thresholds = try #require(props["thresholds"] as? [String: Any])
        #expect(Set(thresholds["required"] as? [String] ?? []) == Set(LogSchema.thresholds.map(\.rawValue)))
        let tables = try #require(props["tables"] as? [String: Any])
        #expect(Set(tables["required"] as? [String] ?? []) == Set(LogSchema.tables.map(\.rawValue)))
        let gaps = try #require(defs["tableGaps"] as? [String: Any])
        #expect(gaps["required"] as? [String] ?? [] == TableGaps.names)
    }

    /// Every record type the writer makes, from random traffic and by hand.
    static func writtenLines() -> [[UInt8]] {
        var lines = WriterLayoutParserTests.writerLines()
        var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 0))
        var out = OutputBuffer()
        writer.appendHeader(version: "test", hostname: "h", kernel: "6.1", startedMono: 1, filters: "{}", thresholds: AnomalyThresholds().json,
                            features: "{\"timewait_sockets\":true}", tables: "{\"connections\":1,\"listeners\":1,\"owner_seeds\":1}", mono: 1, to: &out)
        let owner = UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
        for e in [
            KernelEvent(monoNanoseconds: 2, cookie: 7, pid: 3, comm: ProcessName("a"), kind: .retransmit, localPort: 1, remotePort: 2, newState: .established, retransmit: .data, flags: owner),
            KernelEvent(monoNanoseconds: 3, cookie: 7, kind: .reset, localPort: 1, remotePort: 2, newState: .established, reset: .sent, resetReason: 2, flags: UInt8(TT_FLAG_NO_SOCKET.rawValue)),
            KernelEvent(monoNanoseconds: 4, cookie: 7, kind: .error, localPort: 1, remotePort: 2, newState: .synSent, errorNumber: 111),
            KernelEvent(monoNanoseconds: 5, cookie: 8, kind: .listenDrop, localPort: 80),
            KernelEvent(monoNanoseconds: 6, cookie: 7, previousStateNanoseconds: 1, kind: .transition, localPort: 1, remotePort: 2,
                        oldState: .finWait2, newState: .timeWait, timewait: .timeWait, flags: UInt8(TT_FLAG_UNTRACKED.rawValue)),
        ] {
            writer.append(e, to: &out)
        }
        let snapshot = SocketSnapshot(cookie: 9, state: .timeWait, family: .ipv4, local: Endpoint(address: RawAddress(), port: 1), remote: Endpoint(address: RawAddress(), port: 2), inode: 0, netns: 1, expiresMilliseconds: 500)
        var engine = HandshakeEngine()
        engine.seed([snapshot], at: 7) { writer.append($0, to: &out) }
        writer.appendLost(count: 1, total: 2, byKind: [.transition: 2], mono: 8, to: &out)
        var gaps = TableGaps()
        gaps.sockets = 1
        writer.appendUntracked(gaps, mono: 9, to: &out)
        writer.appendSummary(recordsByType: writer.countsByType, anomalies: [("x", 1)], lost: 1, exportErrors: 0, untracked: gaps, mono: 10, to: &out)
        lines += out.bytes.split(separator: 10).map(Array.init)
        return lines
    }

    @Test func theWriterWritesTheTablesMembersAndNoOthers() throws {
        var types: Set<String> = []
        for line in Self.writtenLines() {
            let record = try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], "\(String(decoding: line, as: UTF8.self))")
            let name = try #require(record["type"] as? String)
            let type = try #require(LogSchema.written.first { "\($0.name)" == name })
            let table = LogSchema.members(type)
            let keys = Set(record.keys)
            let allowed = Set((LogSchema.common + table.required + table.optional).map(\.rawValue))
            let required = Set((LogSchema.common + table.required).map(\.rawValue))
            #expect(keys.isSubset(of: allowed), "\(name) has \(keys.subtracting(allowed).sorted()) the table does not")
            #expect(required.isSubset(of: keys), "\(name) lacks \(required.subtracting(keys).sorted())")
            if type == .header, let t = record["thresholds"] as? [String: Any] {
                #expect(Set(t.keys) == Set(LogSchema.thresholds.map(\.rawValue)))
            }
            types.insert(name)
        }
        #expect(types == Set(LogSchema.written.map { "\($0.name)" }), "the test wrote no \(Set(LogSchema.written.map { "\($0.name)" }).subtracting(types).sorted())")
    }

    @Test func everyMemberTheParsersReadIsInTheTable() {
        // The parser's field table is built from LogKey; names are unique and fit its 24-byte keys.
        let names = LogKey.allCases.map(\.rawValue)
        #expect(names.count == Set(names).count)
        #expect(names.allSatisfy { $0.utf8.count <= 24 })
        let table = LogRecordParser.FieldTable()
        for key in LogKey.allCases {
            let bytes = Array(key.rawValue.utf8)
            let slot = bytes.withUnsafeBufferPointer { table.slot($0.baseAddress!, $0.count, readable: $0.count) }
            #expect(slot >= 0 && table.fields[slot] == key, "\(key.rawValue)")
        }
    }
}
