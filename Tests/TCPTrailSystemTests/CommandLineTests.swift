import Foundation
import Testing

/// One option of a `--help` page: its names, value name and text (wrapped lines joined).
struct HelpEntry {
    var names: [String]
    var value: String?
    var text: String
}

/// The options a subcommand's `--help` lists, as argument-parser prints them.
func helpEntries(_ subcommand: String?) throws -> [HelpEntry] {
    let r = try run([Products.tcptrail] + (subcommand.map { [$0] } ?? []) + ["--help"], timeout: 30)
    var entries: [HelpEntry] = []
    var inOptions = false
    for line in r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
        if !line.hasPrefix(" ") {
            inOptions = line == "OPTIONS:"
            continue
        }
        guard inOptions else { continue }
        let body = line.drop { $0 == " " }
        if line.hasPrefix("  -") {
            // "  -w, --name <value>   text": names and value, then the text (after
            // one space only where the names are long).
            let tokens = body.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            let headCount = tokens.firstIndex { !($0.hasPrefix("-") || $0.hasPrefix("<")) } ?? tokens.count
            let head = tokens.prefix(headCount)
            let text = tokens.dropFirst(headCount).joined(separator: " ").trimmingCharacters(in: .whitespaces)
            let value = head.first { $0.hasPrefix("<") }.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "<>. ")) }
            let names = head.filter { $0.hasPrefix("-") }.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: ",")) }
            entries.append(HelpEntry(names: names, value: value, text: text))
        } else if !entries.isEmpty {
            entries[entries.count - 1].text += (entries[entries.count - 1].text.isEmpty ? "" : " ") + body
        }
    }
    return entries
}

/// Issue 17, item 8: `--help`, `--version`, option values, completions and the
/// manual page, as an operator meets them.
@Suite struct CommandLineTests {
    static let subcommands = ["trace", "top", "serve", "replay", "doctor"]

    /// Options whose value is a quantity, and the unit its help must name.
    static let units: [String: String] = [
        "--duration": "seconds", "--count": "events", "--rotate-size": "bytes", "--rotate-keep": "files",
        "--buffer-size": "bytes", "--poll-interval": "milliseconds", "--max-connections": "sockets",
        "--max-listeners": "listen", "--close-wait-threshold": "seconds", "--fin-wait-2-threshold": "seconds",
        "--time-wait-threshold": "sockets", "--retransmit-threshold": "segments", "--window": "seconds",
        "--refresh": "milliseconds", "--header-timeout": "seconds", "--idle-timeout": "seconds",
        "--max-clients": "connections", "--max-streams": "clients", "--html-limit": "connections", "--anomaly-lines": "lines",
    ]
    /// Options with a value that is not a quantity (an id, a name, a time, a file, a mode).
    static let unitless: Set<String> = ["--pid", "--port", "--lport", "--rport", "--netns", "--addr", "--nice", "--output",
                                        "--snapshot", "--listen", "--since", "--until", "--conn", "--html", "--time-format", "--columns",
                                        "--cgroup"]

    @Test(arguments: subcommands)
    func everyOptionsHelpNamesItsDefaultAndUnit(_ subcommand: String) throws {
        let entries = try helpEntries(subcommand)
        #expect(entries.contains { $0.names.contains("--help") }, "the help was parsed: \(entries)")
        for entry in entries where entry.value != nil {
            let name = try #require(entry.names.first { $0.hasPrefix("--") })
            // Every option with a value says what it is when not given.
            #expect(entry.text.contains("default:"), "\(subcommand) \(name): no default in \"\(entry.text)\"")
            if let unit = Self.units[name] {
                #expect(entry.text.contains(unit) || entry.value == unit, "\(subcommand) \(name): no unit (\(unit)) in \"\(entry.text)\"")
            } else {
                // A new option with a value is classified here, so its unit cannot be forgotten.
                #expect(Self.unitless.contains(name), "\(subcommand) \(name) takes a value: add it to the units or to the unitless options")
            }
        }
    }

    @Test func versionIsOneLineAndExitsZero() throws {
        for args in [["--version"], ["trace", "--version"]] {
            let r = try run([Products.tcptrail] + args, check: false, timeout: 30)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            let line = r.stdout.trimmingCharacters(in: .newlines)
            #expect(line.split(separator: ".").count == 3 && line.split(separator: ".").allSatisfy { Int($0) != nil }, "\(args): \(r.stdout)")
        }
    }

    /// A value below an option's range, negative numbers too, is a usage error
    /// naming the option and the rule: not argument-parser's "Missing value"
    /// (it took "-1" for an option's name).
    @Test(arguments: [
        ["trace", "--duration", "-1"], ["trace", "--duration", "0"], ["trace", "--count", "-1"], ["trace", "--count", "0"],
        ["trace", "--poll-interval", "-1"], ["trace", "--max-connections", "-1"], ["trace", "--max-listeners", "-1"],
        ["trace", "--close-wait-threshold", "-1"], ["trace", "--fin-wait-2-threshold", "-0.5"],
        ["trace", "--time-wait-threshold", "-1"], ["trace", "--retransmit-threshold", "-1"],
        ["trace", "--pid", "-1"], ["trace", "--port", "-1"], ["trace", "--lport", "0"], ["trace", "--rport", "-80"],
        ["trace", "--netns", "-1"], ["top", "--window", "-1"], ["top", "--refresh", "-100"],
        ["serve", "--window", "-1"], ["serve", "--header-timeout", "-1"], ["serve", "--idle-timeout", "-1"],
        ["serve", "--max-clients", "-1"], ["serve", "--max-streams", "-1"], ["replay", "--html-limit", "-1", "x.jsonl"],
        ["replay", "--port", "-1", "x.jsonl"],
    ])
    func aNegativeValueMustBePositive(_ args: [String]) throws {
        let r = try run([Products.tcptrail] + args, check: false, timeout: 30)
        #expect(r.status == 64, "\(args): \(r.stderr)")
        let lines = r.stderr.split(separator: "\n").map(String.init)
        let first = lines.first ?? ""
        #expect(first.hasPrefix("Error: ") && first.contains(args[1]) && first.contains("must be positive"), "\(args): \(r.stderr)")
        #expect(!r.stderr.contains("Missing value"), "\(args): \(r.stderr)")
        // The one line says it all; what follows is the usage.
        #expect(lines.dropFirst().allSatisfy { $0.hasPrefix("Help:") || $0.hasPrefix("Usage:") || $0.hasPrefix("  See ") }, "\(args): \(r.stderr)")
    }

    /// Negative values where the range allows them, and ranges that do not start at 1.
    @Test func negativeValuesReachTheirRangeCheck() throws {
        let low = try run([Products.tcptrail, "trace", "--nice", "-21"], check: false, timeout: 30)
        #expect(low.status == 64 && low.stderr.hasPrefix("Error: --nice must be -20 to 19, got -21"), "\(low.stderr)")
        let keep = try run([Products.tcptrail, "trace", "--rotate-keep", "-1"], check: false, timeout: 30)
        #expect(keep.status == 64 && keep.stderr.hasPrefix("Error: --rotate-keep must be 0 to 1000, got -1"), "\(keep.stderr)")
        // Positive but under the range: the range alone, not "must be positive".
        let small = try run([Products.tcptrail, "trace", "--max-connections", "10"], check: false, timeout: 30)
        #expect(small.status == 64 && small.stderr.hasPrefix("Error: --max-connections must be 64 to 16777216, got 10"), "\(small.stderr)")
        let short = try run([Products.tcptrail, "top", "--window", "0.5"], check: false, timeout: 30)
        #expect(short.status == 64 && short.stderr.hasPrefix("Error: --window must be a number of seconds from 1 to 86400, got 0.5"), "\(short.stderr)")
        // --nice -5 is a valid value: top gets past the options to its terminal check.
        let nice = try run([Products.tcptrail, "top", "--nice", "-5"], check: false, timeout: 30)
        #expect(nice.status == 64 && nice.stderr.contains("top needs a terminal"), "\(nice.stderr)")
    }

    /// Runs `script` in bash with tcptrail's completion loaded from `source`.
    func bash(_ source: String, _ script: String) throws -> CommandResult {
        try run(["bash", "-c", "source \(source)\n" + script], check: false, timeout: 30)
    }

    /// The completions a bash user gets for the words typed so far.
    static func complete(_ words: [String]) -> String {
        let line = words.joined(separator: " ")
        return """
        f=$(complete -p tcptrail | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')
        COMPREPLY=(); COMP_WORDS=(\(words.map { "'\($0)'" }.joined(separator: " "))); COMP_CWORD=\(words.count - 1)
        COMP_LINE='\(line)'; COMP_POINT=${#COMP_LINE}
        "$f" tcptrail '\(words.last ?? "")' '\(words.dropLast().last ?? "")'
        printf '%s\\n' "${COMPREPLY[@]}"
        """
    }

    @Test func bashCompletionLoadsAndCompletesSubcommandsAndOptions() throws {
        let source = "<(\(Products.tcptrail) --generate-completion-script bash)"
        let spec = try bash(source, "complete -p tcptrail")
        #expect(spec.status == 0 && spec.stdout.contains("-F ") && spec.stdout.hasSuffix("tcptrail\n"), "\(spec.stdout) \(spec.stderr)")
        let sub = try bash(source, Self.complete(["tcptrail", "tr"]))
        #expect(sub.stdout.split(separator: "\n") == ["trace"], "\(sub.stdout) \(sub.stderr)")
        let all = try bash(source, Self.complete(["tcptrail", ""]))
        #expect(Set(Self.subcommands).isSubset(of: Set(all.stdout.split(separator: "\n").map(String.init))), "\(all.stdout) \(all.stderr)")
        let option = try bash(source, Self.complete(["tcptrail", "top", "--ref"]))
        #expect(option.stdout.split(separator: "\n") == ["--refresh"], "\(option.stdout) \(option.stderr)")
    }
}

/// scripts/install into a scratch prefix, with the binary under test: the
/// files in their standard places, the manual page as man renders it, the
/// installed bash completion as bash loads it.
@Suite(.serialized) struct InstallTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func installPutsTheBinaryManualAndCompletionsWhereTheirToolsLook() throws {
        let prefix = FileManager.default.temporaryDirectory.appendingPathComponent("tt-install-\(getpid())-\(Unique.next())").path
        defer { try? FileManager.default.removeItem(atPath: prefix) }
        // The first run builds generate-manual (about a minute); later ones reuse it.
        let install = try run([Self.root.appendingPathComponent("scripts/install").path, "--prefix", prefix, "--bin", Products.tcptrail],
                              check: false, timeout: 900)
        #expect(install.status == 0, "\(install.stdout) \(install.stderr)")
        for path in ["bin/tcptrail", "share/man/man1/tcptrail.1", "share/bash-completion/completions/tcptrail",
                     "share/zsh/site-functions/_tcptrail", "share/fish/vendor_completions.d/tcptrail.fish"] {
            #expect(FileManager.default.fileExists(atPath: prefix + "/" + path), "\(path) not installed: \(install.stdout)")
        }
        let version = try run([prefix + "/bin/tcptrail", "--version"], timeout: 30)
        #expect(install.stdout.contains("(\(version.stdout.trimmingCharacters(in: .newlines)))"), "\(install.stdout)")

        // man itself renders the page; every option of every subcommand is in it.
        let page = try run(["bash", "-c", "MANWIDTH=100 man -l \"$0\" | col -b", prefix + "/share/man/man1/tcptrail.1"], check: false, timeout: 60)
        #expect(page.status == 0, "\(page.stderr)")
        #expect(page.stdout.contains("tcptrail") && page.stdout.contains("SYNOPSIS"), "\(page.stdout)")
        let lines = page.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        for subcommand in CommandLineTests.subcommands {
            let entries = try helpEntries(subcommand)
            #expect(lines.contains { $0.hasPrefix(subcommand + " ") || $0 == subcommand }, "no \(subcommand) section in the page")
            for entry in entries {
                for name in entry.names where name != "-h" && name != "--help" {
                    // An option's own line: "--name value" (value as in --help, without the brackets), or "-w, --wide".
                    #expect(lines.contains { $0 == name || $0.hasPrefix(name + " ") || $0.hasPrefix(name + ",") || $0.hasPrefix(name + "\t")
                                || ($0.hasPrefix("-") && ($0.contains(", " + name + " ") || $0.hasSuffix(", " + name))) },
                            "\(subcommand) \(name) is not in the manual page")
                }
            }
        }

        // The installed completion file, as bash-completion would source it.
        let completion = prefix + "/share/bash-completion/completions/tcptrail"
        let sub = try run(["bash", "-c", "source \"$0\"\n" + CommandLineTests.complete(["tcptrail", "rep"]), completion], check: false, timeout: 30)
        #expect(sub.stdout.split(separator: "\n") == ["replay"], "\(sub.stdout) \(sub.stderr)")
    }
}
