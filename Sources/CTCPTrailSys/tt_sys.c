#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include "tt_sys.h"
#include <string.h>
#include <sys/prctl.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/vfs.h>

static volatile sig_atomic_t stop_signal;

static volatile sig_atomic_t hangup;

static void on_stop(int sig) { stop_signal = sig; }

static void on_hangup(int sig) { (void)sig; hangup = 1; }

int tt_take_hangup(void)
{
	int h = hangup;
	hangup = 0;
	return h;
}

int tt_stop_signal(void) { return stop_signal; }

int tt_install_stop_handlers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL))
		return -1;
	sa.sa_handler = on_hangup;
	if (sigaction(SIGHUP, &sa, NULL))
		return -1;
	signal(SIGPIPE, SIG_IGN);
	/* A parent may have started us with these blocked (posix_spawn from a
	 * thread that blocks signals): a tracer that ignores Ctrl-C is worse. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	return sigprocmask(SIG_UNBLOCK, &set, NULL);
}

int tt_set_comm(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }

#include <sys/resource.h>
#include <errno.h>

/* On Linux the nice value belongs to the thread: PRIO_PROCESS with 0 is the caller. */
int tt_set_nice(int nice) { return setpriority(PRIO_PROCESS, 0, nice) == 0 ? 0 : errno; }

int tt_enter_netns(int fd) { return setns(fd, CLONE_NEWNET); }

#include <malloc.h>

void tt_release_free_memory(void)
{
	malloc_trim(0);
}

int tt_start_writeback(int fd, long long offset, long long length)
{
	return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

int tt_drop_cached(int fd, long long offset, long long length)
{
	return posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED);
}

int tt_handle_type(int dir_fd)
{
	struct {
		struct file_handle fh;
		unsigned char bytes[MAX_HANDLE_SZ];
	} h;
	int mount_id = 0;
	h.fh.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(dir_fd, "", &h.fh, &mount_id, AT_EMPTY_PATH) != 0)
		return -1;
	return h.fh.handle_type;
}

int tt_kernfs_path(int mount_fd, int handle_type, unsigned long long id, char *buf, int len)
{
	struct {
		struct file_handle fh;
		unsigned char bytes[sizeof(unsigned long long)];
	} h;
	h.fh.handle_bytes = sizeof(id);
	h.fh.handle_type = handle_type;
	memcpy(h.fh.f_handle, &id, sizeof(id));
	int fd = open_by_handle_at(mount_fd, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, buf, len - 1);
	int saved = errno;
	close(fd);
	if (n < 0) {
		errno = saved;
		return -1;
	}
	buf[n] = 0;
	return (int)n;
}

int tt_is_cgroup2_dir(const char *path)
{
	struct statfs fs;
	struct stat st;
	if (stat(path, &st) != 0 || statfs(path, &fs) != 0)
		return -1;
	return S_ISDIR(st.st_mode) && fs.f_type == 0x63677270 ? 1 : 0;
}
