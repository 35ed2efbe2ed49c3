import ArgumentParser
import CNCurses
import CTCPTrailSys
import Foundation
import TCPTrailCore
import TCPTrailLoader
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// `tcptrail top`: a full-screen, live table of the host's TCP connections.
struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show TCP connections live, full screen: states over time, anomalies, event rate.",
        discussion: """
        The header shows events per second, open connections (and those ended in the last 5 s), \
        events lost by the kernel, and how many anomalies of each kind were seen. Each row is a \
        connection: process name and pid, local -> remote endpoint, documented state, age, time \
        in that state, and a timeline bar of its states over the last --window seconds (a colour \
        and a letter per state, "!" at each anomaly; '?' shows the legend). Ended connections stay \
        dimmed for 5 s. Below the table, the anomaly feed, newest first.

        Keys: arrows, PgUp/PgDn, Home/End scroll; s sort order; f state filter; a anomalies only; \
        / process (or unit) filter; g group by process, unit or remote endpoint; w, + and - time window; p pause \
        (events are still read); ? help; q quit. Ctrl-C or SIGTERM also quit and restore the terminal.

        Filters (--pid, --port, ...) run in the kernel as for 'trace'. Needs a terminal; use \
        'trace' for pipes and files.
        """
    )

    @OptionGroup var filters: FilterOptions

    @OptionGroup var live: LiveOptions

    @Option(parsing: .unconditional, help: ArgumentHelp("Width of the timeline bar in seconds (1 to 86400; keys w, + and - change it).", valueName: "seconds"))
    var window: Double = 30

    @Option(parsing: .unconditional, help: ArgumentHelp("Redraw the screen every this many milliseconds (20 to 10000).", valueName: "ms"))
    var refresh: Int = 250

    @Flag(help: "No colours: letters and reverse video only (also when NO_COLOR is set).")
    var noColor = false

    mutating func validate() throws {
        try OptionCheck.seconds(window, "--window", in: 1...86400)
        try OptionCheck.count(refresh, "--refresh", in: 20...10_000, unit: "ms")
    }

    /// The board the engine's output goes to, shared with the observer closure.
    final class BoardBox {
        var board = ConnectionBoard()
    }

    func run() throws {
        try Diagnostics.running(top)
    }

    private func top() throws {
        guard isatty(STDIN_FILENO) == 1 && isatty(STDOUT_FILENO) == 1 else {
            throw CommandFailure("top needs a terminal on stdin and stdout; use 'tcptrail trace' for pipes and files", status: .usage)
        }
        // Everything that can fail does so before the screen is taken.
        // One filter value: the kernel's config and the user-space check are made from it.
        let filter = filters.eventFilter
        let session = try TraceSession(options: live.session(filter))
        tt_install_stop_handlers()
        let box = BoardBox()
        let sink = LivePipeline(format: .none, filter: filter, limit: nil,
                                engine: HandshakeEngine(thresholds: live.anomalies.thresholds), log: nil)
        sink.observer = { box.board.apply($0) }
        try session.begin(sink: sink)

        let color = !noColor && ProcessInfo.processInfo.environment["NO_COLOR"].map(\.isEmpty) ?? true
        tt_guard_terminal()
        setlocale(LC_ALL, "")
        // newterm, not initscr: an unknown TERM comes back as an error instead of exit(1).
        guard newterm(nil, fdopen(STDOUT_FILENO, "w"), fdopen(STDIN_FILENO, "r")) != nil, let screen = tt_stdscr() else {
            session.stop()
            throw CommandFailure("cannot start the terminal (TERM=\(ProcessInfo.processInfo.environment["TERM"] ?? "")): set TERM to a terminal this host knows (such as xterm-256color)", status: .usage)
        }
        cbreak()
        noecho()
        nonl()
        keypad(screen, true)
        nodelay(screen, true)
        set_escdelay(25)
        curs_set(0)
        var painter = TopScreen(palette: Palette(color: color))
        var view = TopView(window: window)
        var frozen: ConnectionBoard?
        var quit = false
        var hungUp = false
        let interval = UInt64(refresh) * 1_000_000
        var nextDraw: UInt64 = 0
        let step = min(live.pollInterval, 50)

        while tt_stop_signal() == 0 && !quit && !sink.finished {
            session.step(timeoutMilliseconds: step)
            // The terminal went away (its window closed, tmux killed): SIGHUP only
            // asks the tracer to reopen its log, so look at the terminal itself.
            if Self.terminalHungUp() {
                hungUp = true
                break
            }
            var dirty = false
            while true {
                let key = getch()
                if key == ERR { break }
                dirty = true
                if handle(key, &view, &quit) {
                    frozen = view.paused ? box.board : nil
                }
                if quit { break }
            }
            let now = WallClock.monotonicNow()
            if now >= nextDraw || dirty {
                box.board.setLost(session.lost)
                box.board.advance(to: now)
                painter.draw(frozen ?? box.board, &view)
                nextDraw = now + interval
            }
        }
        endwin()
        let stats = session.stop()
        // No summary to a terminal that is gone (the write would fail and trap).
        if hungUp { return }
        var summary = "tcptrail: \(sink.events) events, \(stats.lost) lost"
        for phrase in session.gaps(stats).phrases { summary += ", " + phrase }
        Diagnostics.note(summary)
    }

    static func terminalHungUp() -> Bool {
        var fds = [pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)]
        return poll(&fds, 1, 0) > 0 && fds[0].revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0
    }

    /// Applies one key; true when pause was toggled.
    func handle(_ key: Int32, _ view: inout TopView, _ quit: inout Bool) -> Bool {
        let page = view.page
        if view.help {
            if key != KEY_RESIZE { view.help = false }
            return false
        }
        if var typed = view.editing {
            switch key {
            case 27:
                view.editing = nil
            case 10, 13, KEY_ENTER:
                view.query.process = typed.isEmpty ? nil : typed
                view.editing = nil
                view.offset = 0
            case KEY_BACKSPACE, 127, 8:
                if !typed.isEmpty { typed.removeLast() }
                view.editing = typed
            case 0x20..<0x7f:
                if typed.utf8.count < 40 { typed.append(Character(Unicode.Scalar(UInt8(key)))) }
                view.editing = typed
            default:
                break
            }
            return false
        }
        switch key {
        case Int32(UInt8(ascii: "q")), Int32(UInt8(ascii: "Q")): quit = true
        case Int32(UInt8(ascii: "?")), Int32(UInt8(ascii: "h")): view.help = true
        case Int32(UInt8(ascii: "s")): view.cycleOrder()
        case Int32(UInt8(ascii: "f")): view.cycleStateFilter()
        case Int32(UInt8(ascii: "a")):
            view.query.anomaliesOnly.toggle()
            view.offset = 0
        case Int32(UInt8(ascii: "/")): view.editing = view.query.process ?? ""
        case Int32(UInt8(ascii: "g")): view.cycleGrouping()
        case Int32(UInt8(ascii: "w")): view.cycleWindow()
        case Int32(UInt8(ascii: "+")), Int32(UInt8(ascii: "=")): view.widerWindow()
        case Int32(UInt8(ascii: "-")), Int32(UInt8(ascii: "_")): view.narrowerWindow()
        case Int32(UInt8(ascii: "p")), Int32(UInt8(ascii: " ")):
            view.paused.toggle()
            return true
        case KEY_UP, Int32(UInt8(ascii: "k")): view.offset = max(0, view.offset - 1)
        case KEY_DOWN, Int32(UInt8(ascii: "j")): view.offset += 1
        case KEY_PPAGE: view.offset = max(0, view.offset - page)
        case KEY_NPAGE: view.offset += page
        case KEY_HOME: view.offset = 0
        case KEY_END: view.offset = Int.max / 2
        default: break
        }
        return false
    }
}
