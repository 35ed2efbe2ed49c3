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

/// 1 if path is a directory on a cgroup2 file system (statfs f_type
/// CGROUP2_SUPER_MAGIC), 0 if not, -1 with errno if it cannot be read.
int tt_is_cgroup2_dir(const char *path);

/// The handle type the file system at dir_fd gives its directories
/// (name_to_handle_at on dir_fd itself; FILEID_KERNFS on cgroup2), or -1 with errno.
int tt_handle_type(int dir_fd);

/// Writes into buf (len bytes, NUL-terminated) the path of the kernfs
/// directory whose 64-bit id is id, on the file system of mount_fd
/// (open_by_handle_at, then the link of the descriptor in /proc/self/fd);
/// returns its length, or -1 with errno (ESTALE: no such cgroup now).
int tt_kernfs_path(int mount_fd, int handle_type, unsigned long long id, char *buf, int len);

#endif
