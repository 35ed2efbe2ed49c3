#ifndef TT_SYS_H
#define TT_SYS_H

#include <signal.h>

/// Which signal asked tcptrail to stop (SIGINT or SIGTERM), 0 while none has.
int tt_stop_signal(void);

/// Installs handlers that record SIGINT/SIGTERM for tt_stop_signal(),
/// without SA_RESTART so a blocking poll returns EINTR at once, and ignores
/// SIGPIPE so a closed stdout shows up as EPIPE from write().
int tt_install_stop_handlers(void);

/// Whether SIGHUP arrived since the last call (it asks to reopen the log).
int tt_take_hangup(void);

/// Sets the calling thread's name (comm), as prctl(PR_SET_NAME).
int tt_set_comm(const char *name);

/// Moves the calling thread into the network namespace open at fd (setns).
int tt_enter_netns(int fd);

/// Returns freed heap memory to the kernel (glibc malloc_trim).
void tt_release_free_memory(void);

#endif
