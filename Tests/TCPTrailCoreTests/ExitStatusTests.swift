import Foundation
import Testing
import TCPTrailCore

/// The README's "Exit status" table and `ExitStatus` say the same: every
/// code once, and no code the program does not use.
@Suite struct ExitStatusTests {
    static func readmeCodes() throws -> [Int32] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        guard let start = text.range(of: "### Exit status\n") else { return [] }
        let section = text[start.upperBound...].prefix { _ in true }
        var codes: [Int32] = []
        for line in section.split(separator: "\n") {
            if line.hasPrefix("###") { break }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count > 2, let code = Int32(cells[1]) { codes.append(code) }
        }
        return codes
    }

    @Test func theREADMETableListsEveryStatusOnce() throws {
        let codes = try Self.readmeCodes()
        #expect(!codes.isEmpty, "no Exit status table in README.md")
        #expect(codes.count == Set(codes).count, "a code has two rows: \(codes)")
        #expect(Set(codes) == Set(ExitStatus.allCases.map(\.rawValue)))
    }

    @Test func eachStatusHasOneCode() {
        let raw = ExitStatus.allCases.map(\.rawValue)
        #expect(raw.count == Set(raw).count)
    }
}
