#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include "tt_sys.h"
#include <string.h>
#include <sys/prctl.h>

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
