#define NCURSES_WIDECHAR 1
#define _XOPEN_SOURCE_EXTENDED 1
#include <locale.h>
#include <ncurses.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

// What Swift cannot import from ncurses.h: function-like macros and the
// global variables (which Swift 6 would not let us read).

static inline WINDOW *tt_stdscr(void) { return stdscr; }
static inline int tt_lines(void) { return LINES; }
static inline int tt_cols(void) { return COLS; }
static inline int tt_colors(void) { return COLORS; }
static inline int tt_color_pair(int n) { return (int)COLOR_PAIR(n); }
static inline int tt_a_normal(void) { return (int)A_NORMAL; }
static inline int tt_a_bold(void) { return (int)A_BOLD; }
static inline int tt_a_dim(void) { return (int)A_DIM; }
static inline int tt_a_reverse(void) { return (int)A_REVERSE; }
static inline int tt_a_underline(void) { return (int)A_UNDERLINE; }

// The terminal as it was before initscr, and the handlers that were in place:
// a crash (a Swift trap is SIGILL or SIGTRAP) puts the terminal back before
// the previous handler (the Swift backtracer, or the default) runs.
// (A function's static, not a file's: Swift emits the one but not the other.)
struct tt_terminal_guard {
    struct termios saved;
    int saved_ok;
    struct sigaction previous[NSIG];
};

static inline struct tt_terminal_guard *tt_terminal_guard_state(void) {
    static struct tt_terminal_guard state;
    return &state;
}

static inline void tt_crash_restore(int sig) {
    // Async-signal-safe: tcsetattr and write only. Attributes off, cursor
    // shown, keypad transmit off, alternate screen left (xterm, tmux, screen).
    static const char restore[] = "\033[0m\033[?25h\033[?1l\033>\033[?1049l\r\n";
    struct tt_terminal_guard *g = tt_terminal_guard_state();
    if (g->saved_ok) tcsetattr(STDIN_FILENO, TCSANOW, &g->saved);
    ssize_t unused = write(STDOUT_FILENO, restore, sizeof restore - 1);
    (void)unused;
    sigaction(sig, &g->previous[sig], NULL);
    raise(sig);
}

/// Call once, just before the screen is set up.
static inline void tt_guard_terminal(void) {
    struct tt_terminal_guard *g = tt_terminal_guard_state();
    g->saved_ok = tcgetattr(STDIN_FILENO, &g->saved) == 0;
    static const int signals[] = {SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGABRT, SIGFPE};
    for (unsigned i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = tt_crash_restore;
        sigemptyset(&sa.sa_mask);
        sigaction(signals[i], &sa, &g->previous[signals[i]]);
    }
}
