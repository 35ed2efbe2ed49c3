// churn: opens and closes TCP connections on loopback as fast as the machine
// allows, and reports connections/s. The load for tcptrail's benchmarks.
//
//   churn [-t THREADS] [-d SECONDS] [-p PORT] [-a ADDR] [-s]
//   -s: the server closes first (default: the client does)
// Prints one line: "connections N seconds S rate R port P failed F", where N counts
// connect()s that succeeded, P is the port listened on (chosen by the kernel
// when -p is 0) and F counts connect()s that failed (e.g. EADDRNOTAVAIL when
// the local ports run out).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in server_addr;
static int listener;
static int server_first;
static atomic_long completed;
static atomic_long failed;
static atomic_int stop;

static void *server_loop(void *arg)
{
	(void)arg;
	char buf[64];
	for (;;) {
		int fd = accept(listener, NULL, NULL);
		if (fd < 0) {
			// Once the clients are done, leave only when the accept queue is
			// empty (accept() timed out), so that no connection is reset by
			// the listener's close and each one closes the ordinary way.
			if (atomic_load(&stop) && errno != EINTR && errno != ECONNABORTED)
				break;
			continue;
		}
		if (!server_first)
			while (read(fd, buf, sizeof(buf)) > 0) {
			}
		close(fd);
	}
	return NULL;
}

static void *client_loop(void *arg)
{
	(void)arg;
	char buf[64];
	while (!atomic_load(&stop)) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			continue;
		if (connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) == 0) {
			if (server_first)
				while (read(fd, buf, sizeof(buf)) > 0) {
				}
			atomic_fetch_add(&completed, 1);
		} else {
			atomic_fetch_add(&failed, 1);
		}
		close(fd);
	}
	return NULL;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int threads = 2, port = 0;
	double duration = 10;
	const char *addr = "127.0.0.1";
	int opt;
	while ((opt = getopt(argc, argv, "t:d:p:a:s")) != -1) {
		switch (opt) {
		case 't': threads = atoi(optarg); break;
		case 'd': duration = atof(optarg); break;
		case 'p': port = atoi(optarg); break;
		case 'a': addr = optarg; break;
		case 's': server_first = 1; break;
		default:
			fprintf(stderr, "usage: churn [-t THREADS] [-d SECONDS] [-p PORT] [-a ADDR] [-s]\n");
			return 2;
		}
	}
	server_addr.sin_family = AF_INET;
	server_addr.sin_port = htons(port);
	if (inet_pton(AF_INET, addr, &server_addr.sin_addr) != 1) {
		fprintf(stderr, "churn: bad address %s\n", addr);
		return 2;
	}
	listener = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listener, (struct sockaddr *)&server_addr, sizeof(server_addr)) || listen(listener, 4096)) {
		fprintf(stderr, "churn: cannot listen on %s:%d: %s\n", addr, port, strerror(errno));
		return 1;
	}
	socklen_t len = sizeof(server_addr);
	getsockname(listener, (struct sockaddr *)&server_addr, &len);
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	pthread_t tids[256];
	int n = threads > 128 ? 128 : threads;
	for (int i = 0; i < n; i++) {
		pthread_create(&tids[i], NULL, server_loop, NULL);
		pthread_create(&tids[n + i], NULL, client_loop, NULL);
	}
	double start = now();
	usleep((useconds_t)(duration * 1e6));
	atomic_store(&stop, 1);
	double elapsed = now() - start;
	for (int i = 0; i < n; i++)
		pthread_join(tids[n + i], NULL);
	long done = atomic_load(&completed);
	for (int i = 0; i < n; i++)
		pthread_join(tids[i], NULL);
	shutdown(listener, SHUT_RDWR);
	close(listener);
	printf("connections %ld seconds %.3f rate %.0f port %d failed %ld\n", done, elapsed, done / elapsed,
	       ntohs(server_addr.sin_port), atomic_load(&failed));
	return 0;
}
