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

/// Sets the calling thread's nice value (threads it starts later inherit
/// it); 0 or an error number.
int tt_set_nice(int nice);

/// Moves the calling thread into the network namespace open at fd (setns).
int tt_enter_netns(int fd);

/// Returns freed heap memory to the kernel (glibc malloc_trim).
void tt_release_free_memory(void);

/// Starts writeback of a written file range without waiting for it
/// (sync_file_range SYNC_FILE_RANGE_WRITE); 0 or -1 with errno.
int tt_start_writeback(int fd, long long offset, long long length);

/// Drops a file range that is already on disk from the page cache
/// (posix_fadvise POSIX_FADV_DONTNEED); 0 or an error number.
int tt_drop_cached(int fd, long long offset, long long length);

#endif
