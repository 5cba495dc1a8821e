// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's measured operations, in C so that what is timed is the kernel
 * path and not a language runtime. bench/run.ts starts one worker per variant
 * (ungoverned, governed, under strace, under the seccomp supervisor) and hands
 * them batches in turn, so that machine noise hits every variant alike.
 *
 *   bench-driver worker --op OP [--file F] [--port N] [--exe F]
 *       Reads commands on stdin, one a line, and answers each on stdout:
 *         w N   run N operations untimed (warm-up)         → "ok"
 *         r N   run N operations, each timed on its own     → "ok"
 *         d MS  run operations for MS milliseconds, untimed → "ok COUNT"
 *         q     → "samples N", then N lines of nanoseconds, then exit
 *       An operation that fails answers "err ERRNO STEP: MESSAGE" and the
 *       worker exits: a failed operation is never timed.
 *   bench-driver once --op OP ...   one operation: prints "ok" or "err ..."
 *   bench-driver serve --tcp P --http P [--http P]...
 *       Loopback servers: accept-and-close on --tcp, a minimal HTTP/1.1
 *       server (Connection: close) on each --http. Prints "ready" when
 *       listening; runs until killed.
 *
 * Operations: read (open, read 1 KB, close), write (open O_CREAT|O_TRUNC,
 * write 1 KB, close), exec (posix_spawn of --exe and wait for it), connect
 * (socket, connect, close with an RST so no TIME_WAIT piles up), get (HTTP
 * GET of 1 KB), post (HTTP POST of 1 KB), denied-open (an open that must
 * fail with EPERM: the audit load), denied-connect (a TCP connect to a
 * loopback port that must fail with EPERM: the audit load where only helm's
 * network hooks run).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 1024

enum op { OP_READ, OP_WRITE, OP_EXEC, OP_CONNECT, OP_GET, OP_POST, OP_DENIED_OPEN, OP_DENIED_CONNECT };
static const char *const op_names[] = { "read", "write", "exec", "connect", "get", "post", "denied-open", "denied-connect" };

struct config {
	enum op op;
	const char *file;
	const char *exe;
	int port;
};

static char payload[PAYLOAD];
static char failure[512];

static int fail(const char *step, int err)
{
	snprintf(failure, sizeof(failure), "err %d %s: %s", err, step, strerror(err));
	return -1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int full_write(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

static int op_read(const struct config *c)
{
	char buf[PAYLOAD];
	int fd = open(c->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail("open", errno);
	ssize_t n = read(fd, buf, sizeof(buf));
	int err = errno;
	close(fd);
	if (n != PAYLOAD)
		return fail("read", n < 0 ? err : EIO);
	return 0;
}

static int op_write(const struct config *c)
{
	int fd = open(c->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fail("open", errno);
	ssize_t n = write(fd, payload, PAYLOAD);
	int err = errno;
	if (close(fd) < 0 && n == PAYLOAD)
		return fail("close", errno);
	if (n != PAYLOAD)
		return fail("write", n < 0 ? err : EIO);
	return 0;
}

static int op_exec(const struct config *c)
{
	char *argv[] = { (char *)c->exe, NULL };
	char *envp[] = { NULL };
	pid_t pid;
	int status;
	int rc = posix_spawn(&pid, c->exe, NULL, NULL, argv, envp);
	if (rc != 0)
		return fail("posix_spawn", rc);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return fail("waitpid", errno);
	}
	/* posix_spawn reports a failed exec as exit status 127 */
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return fail("exec (child exit status)", WIFEXITED(status) && WEXITSTATUS(status) == 127 ? EACCES : ECHILD);
	return 0;
}

static int connect_loopback(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("socket", errno), -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;
		close(fd);
		return fail("connect", err), -1;
	}
	return fd;
}

static int op_connect(const struct config *c)
{
	int fd = connect_loopback(c->port);
	if (fd < 0)
		return -1;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	return 0;
}

/* One request, the whole response read to EOF (the server closes), status 200 checked. */
static int op_http(const struct config *c, int post)
{
	char req[256 + PAYLOAD];
	char resp[4096];
	int n;
	if (post)
		n = snprintf(req, sizeof(req),
			     "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/octet-stream\r\n"
			     "Content-Length: %d\r\nConnection: close\r\n\r\n",
			     c->port, PAYLOAD);
	else
		n = snprintf(req, sizeof(req), "GET /data HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", c->port);
	if (post) {
		memcpy(req + n, payload, PAYLOAD);
		n += PAYLOAD;
	}
	int fd = connect_loopback(c->port);
	if (fd < 0)
		return -1;
	if (full_write(fd, req, (size_t)n) < 0) {
		int err = errno;
		close(fd);
		return fail("send", err);
	}
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, resp + got, sizeof(resp) - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = errno;
			close(fd);
			return fail("recv", err);
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (got == sizeof(resp) - 1)
			break;
	}
	close(fd);
	resp[got] = 0;
	if (strncmp(resp, "HTTP/1.1 200 ", 13) != 0)
		return fail("http status", EPROTO);
	return 0;
}

static int op_denied_open(const struct config *c)
{
	int fd = open(c->file, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return fail("open was allowed; the audit load needs a denied one", EEXIST);
	}
	if (errno != EPERM)
		return fail("open", errno);
	return 0;
}

/*
 * A refused connect leaves the socket unconnected, so one socket serves every
 * attempt: what the load costs is the connect(2) and its decision, not socket(2).
 */
static int op_denied_connect(const struct config *c)
{
	static int fd = -1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 && (fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return fail("socket", errno);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fail("connect was allowed; the audit load needs a denied one", EEXIST);
	if (errno != EPERM)
		return fail("connect", errno);
	return 0;
}

static int run_op(const struct config *c)
{
	switch (c->op) {
	case OP_READ: return op_read(c);
	case OP_WRITE: return op_write(c);
	case OP_EXEC: return op_exec(c);
	case OP_CONNECT: return op_connect(c);
	case OP_GET: return op_http(c, 0);
	case OP_POST: return op_http(c, 1);
	case OP_DENIED_OPEN: return op_denied_open(c);
	case OP_DENIED_CONNECT: return op_denied_connect(c);
	}
	return fail("unknown operation", EINVAL);
}

static int parse_config(int argc, char **argv, struct config *c)
{
	int have_op = 0;
	memset(c, 0, sizeof(*c));
	for (int i = 0; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--op") == 0) {
			for (size_t k = 0; k < sizeof(op_names) / sizeof(op_names[0]); k++) {
				if (strcmp(argv[i + 1], op_names[k]) == 0) {
					c->op = (enum op)k;
					have_op = 1;
				}
			}
			if (!have_op) {
				fprintf(stderr, "bench-driver: unknown --op %s\n", argv[i + 1]);
				return -1;
			}
		} else if (strcmp(argv[i], "--file") == 0) {
			c->file = argv[i + 1];
		} else if (strcmp(argv[i], "--exe") == 0) {
			c->exe = argv[i + 1];
		} else if (strcmp(argv[i], "--port") == 0) {
			c->port = atoi(argv[i + 1]);
		} else {
			fprintf(stderr, "bench-driver: unknown option %s\n", argv[i]);
			return -1;
		}
	}
	if (argc % 2 != 0 || !have_op) {
		fprintf(stderr, "bench-driver: --op OP [--file F] [--exe F] [--port N] (options in pairs)\n");
		return -1;
	}
	int needs_file = c->op == OP_READ || c->op == OP_WRITE || c->op == OP_DENIED_OPEN;
	int needs_port = c->op == OP_CONNECT || c->op == OP_GET || c->op == OP_POST || c->op == OP_DENIED_CONNECT;
	if ((needs_file && !c->file) || (c->op == OP_EXEC && !c->exe) || (needs_port && (c->port <= 0 || c->port > 65535))) {
		fprintf(stderr, "bench-driver: --op %s needs %s\n", op_names[c->op], needs_file ? "--file" : needs_port ? "--port" : "--exe");
		return -1;
	}
	return 0;
}

static int worker(const struct config *c)
{
	size_t cap = 1 << 16, count = 0;
	uint64_t *samples = malloc(cap * sizeof(*samples));
	char line[128];
	if (!samples)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		char cmd = line[0];
		long n = strtol(line + 1, NULL, 10);
		if (cmd == 'q')
			break;
		if ((cmd != 'w' && cmd != 'r' && cmd != 'd') || n < 0) {
			printf("err %d bad command: %s", EINVAL, line);
			return 1;
		}
		if (cmd == 'r' && count + (size_t)n > cap) {
			while (count + (size_t)n > cap)
				cap *= 2;
			samples = realloc(samples, cap * sizeof(*samples));
			if (!samples)
				return 1;
		}
		long done = 0;
		uint64_t until = cmd == 'd' ? now_ns() + (uint64_t)n * 1000000ull : 0;
		for (long i = 0; cmd == 'd' ? now_ns() < until : i < n; i++) {
			uint64_t t0 = now_ns();
			int rc = run_op(c);
			uint64_t t1 = now_ns();
			if (rc < 0) {
				printf("%s\n", failure);
				return 1;
			}
			if (cmd == 'r')
				samples[count++] = t1 - t0;
			done++;
		}
		if (cmd == 'd')
			printf("ok %ld\n", done);
		else
			printf("ok\n");
	}
	printf("samples %zu\n", count);
	for (size_t i = 0; i < count; i++)
		printf("%llu\n", (unsigned long long)samples[i]);
	fflush(stdout);
	return 0;
}

/* ------------------------------------------------------------------ servers */

static int listen_on(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
		fprintf(stderr, "bench-driver: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads one request (headers, then Content-Length bytes of body) and answers 200 with a body. */
static void serve_http(int fd)
{
	char buf[8192];
	size_t got = 0;
	long body = -1;
	char *end = NULL;
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			return;
		got += (size_t)r;
		buf[got] = 0;
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			char *cl = strcasestr(buf, "\r\ncontent-length:");
			body = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
		}
		if (end && got >= (size_t)(end + 4 - buf) + (size_t)body)
			break;
		if (got == sizeof(buf) - 1)
			return;
	}
	/* One write: a second small one would wait for the client's delayed ACK (Nagle). */
	char resp[128 + PAYLOAD];
	int post = strncmp(buf, "POST ", 5) == 0;
	size_t len = post ? 3 : PAYLOAD;
	int n = snprintf(resp, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", len);
	memcpy(resp + n, post ? "ok\n" : payload, len);
	full_write(fd, resp, (size_t)n + len);
}

static int serve(int argc, char **argv)
{
	struct pollfd fds[8];
	int is_http[8];
	int n = 0;
	for (int i = 0; i + 1 < argc && n < 8; i += 2) {
		int http = strcmp(argv[i], "--http") == 0;
		if (!http && strcmp(argv[i], "--tcp") != 0) {
			fprintf(stderr, "bench-driver serve: --tcp PORT | --http PORT\n");
			return 2;
		}
		int fd = listen_on(atoi(argv[i + 1]));
		if (fd < 0)
			return 1;
		fds[n] = (struct pollfd){ .fd = fd, .events = POLLIN };
		is_http[n++] = http;
	}
	signal(SIGPIPE, SIG_IGN);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		if (poll(fds, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (!(fds[i].revents & POLLIN))
				continue;
			int c = accept4(fds[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (c < 0)
				continue;
			if (is_http[i])
				serve_http(c);
			close(c);
		}
	}
}

int main(int argc, char **argv)
{
	struct config c;
	memset(payload, 'x', sizeof(payload));
	if (argc >= 2 && strcmp(argv[1], "serve") == 0)
		return serve(argc - 2, argv + 2);
	if (argc >= 2 && (strcmp(argv[1], "worker") == 0 || strcmp(argv[1], "once") == 0)) {
		if (parse_config(argc - 2, argv + 2, &c) < 0)
			return 2;
		signal(SIGPIPE, SIG_IGN);
		if (strcmp(argv[1], "worker") == 0)
			return worker(&c);
		if (run_op(&c) < 0) {
			printf("%s\n", failure);
			return 1;
		}
		printf("ok\n");
		return 0;
	}
	fprintf(stderr, "usage: bench-driver worker|once --op OP [...] | serve --tcp P --http P [--http P]\n");
	return 2;
}
