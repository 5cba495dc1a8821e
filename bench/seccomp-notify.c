// SPDX-License-Identifier: Apache-2.0
/*
 * The alternative helm is compared with that decides in userspace: a minimal,
 * fair seccomp user-notification supervisor (SECCOMP_RET_USER_NOTIF).
 *
 *   seccomp-notify [--allow PATH]... [--allow-addr A.B.C.D]... -- CMD ARGS...
 *
 * CMD (and everything it starts) runs under a filter that sends open, openat,
 * openat2, execve, execveat and connect to this process, which reads the
 * path or address from the task's memory, checks it against the allowlist
 * (a PATH ending in '/' allows everything below it; otherwise exactly that
 * path; a relative path is taken from the task's cwd or dirfd) and answers:
 * continue, or EPERM. Every other system call runs untouched.
 *
 * What it cannot do, and why helm decides in the kernel instead: the answer
 * "continue" lets the kernel re-read the arguments after the check, so
 * another thread of the task can swap the path in between (the kernel's
 * documentation warns about exactly this); symlinks and ".." are seen as
 * written, not as resolved (".." is refused here). This program is for
 * measuring the cost of the mechanism, not a guard.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_RULES 64

static const char *allow_paths[MAX_RULES];
static int n_paths;
static struct in_addr allow_addrs[MAX_RULES];
static int n_addrs;

static int install_filter(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 6, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 5, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 4, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execve, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execveat, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_connect, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

static int send_fd(int sock, int fd)
{
	char data = 'f';
	struct iovec iov = { .iov_base = &data, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char data;
	struct iovec iov = { .iov_base = &data, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	if (recvmsg(sock, &msg, 0) != 1)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	int fd;
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* A NUL-terminated string from the task's memory, read page by page (a page beyond may be unmapped). */
static int read_string(pid_t pid, unsigned long addr, char *out, size_t cap)
{
	size_t got = 0;
	while (got < cap - 1) {
		size_t chunk = 4096 - ((addr + got) & 4095);
		if (chunk > cap - 1 - got)
			chunk = cap - 1 - got;
		struct iovec local = { .iov_base = out + got, .iov_len = chunk };
		struct iovec remote = { .iov_base = (void *)(addr + got), .iov_len = chunk };
		ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
		if (n <= 0)
			return -1;
		char *nul = memchr(out + got, 0, (size_t)n);
		if (nul)
			return 0;
		got += (size_t)n;
	}
	return -1; /* longer than PATH_MAX: refused */
}

/* An absolute name for (dirfd, path) as the task sees it, without resolving symlinks. */
static int absolute(pid_t pid, int dirfd, const char *path, char *out, size_t cap)
{
	if (path[0] == '/') {
		if (strlen(path) >= cap)
			return -1;
		strcpy(out, path);
		return 0;
	}
	char link[64], base[PATH_MAX];
	if (dirfd == AT_FDCWD)
		snprintf(link, sizeof(link), "/proc/%d/cwd", pid);
	else
		snprintf(link, sizeof(link), "/proc/%d/fd/%d", pid, dirfd);
	ssize_t n = readlink(link, base, sizeof(base) - 1);
	if (n < 0)
		return -1;
	base[n] = 0;
	if ((size_t)snprintf(out, cap, "%s/%s", strcmp(base, "/") == 0 ? "" : base, path) >= cap)
		return -1;
	return 0;
}

static int path_allowed(const char *p)
{
	if (strstr(p, "/../") || (strlen(p) >= 3 && strcmp(p + strlen(p) - 3, "/..") == 0))
		return 0;
	for (int i = 0; i < n_paths; i++) {
		size_t len = strlen(allow_paths[i]);
		if (allow_paths[i][len - 1] == '/' ? strncmp(p, allow_paths[i], len) == 0 : strcmp(p, allow_paths[i]) == 0)
			return 1;
	}
	return 0;
}

static int decide(const struct seccomp_notif *req)
{
	pid_t pid = (pid_t)req->pid;
	const __u64 *a = req->data.args;
	char raw[PATH_MAX], path[PATH_MAX];
	int dirfd = AT_FDCWD;
	unsigned long ptr;

	switch (req->data.nr) {
	case __NR_open:
	case __NR_execve:
		ptr = a[0];
		break;
	case __NR_openat:
	case __NR_openat2:
	case __NR_execveat:
		dirfd = (int)a[0];
		ptr = a[1];
		break;
	case __NR_connect: {
		struct sockaddr_storage ss;
		size_t len = a[2] < sizeof(ss) ? a[2] : sizeof(ss);
		struct iovec local = { .iov_base = &ss, .iov_len = len };
		struct iovec remote = { .iov_base = (void *)a[1], .iov_len = len };
		if (len < sizeof(sa_family_t) || process_vm_readv(pid, &local, 1, &remote, 1, 0) != (ssize_t)len)
			return 0;
		if (ss.ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
			struct in_addr addr = ((struct sockaddr_in *)&ss)->sin_addr;
			for (int i = 0; i < n_addrs; i++)
				if (allow_addrs[i].s_addr == addr.s_addr)
					return 1;
			return 0;
		}
		if (ss.ss_family == AF_UNIX && len > offsetof(struct sockaddr_un, sun_path)) {
			struct sockaddr_un *un = (struct sockaddr_un *)&ss;
			size_t n = len - offsetof(struct sockaddr_un, sun_path);
			if (n >= sizeof(un->sun_path))
				n = sizeof(un->sun_path) - 1;
			un->sun_path[n] = 0;
			return un->sun_path[0] == '/' && path_allowed(un->sun_path);
		}
		return 0;
	}
	default:
		return 0;
	}
	if (read_string(pid, ptr, raw, sizeof(raw)) < 0)
		return 0;
	if (absolute(pid, dirfd, raw, path, sizeof(path)) < 0)
		return 0;
	return path_allowed(path);
}

static int supervise(int listener, pid_t child)
{
	struct seccomp_notif_sizes sizes;
	if (syscall(__NR_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) {
		perror("seccomp-notify: SECCOMP_GET_NOTIF_SIZES");
		return 1;
	}
	struct seccomp_notif *req = calloc(1, sizes.seccomp_notif);
	struct seccomp_notif_resp *resp = calloc(1, sizes.seccomp_notif_resp);
	struct pollfd pfd = { .fd = listener, .events = POLLIN };
	for (;;) {
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd.revents & POLLHUP)
			break; /* every task under the filter has exited */
		memset(req, 0, sizes.seccomp_notif);
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0) {
			if (errno == EINTR || errno == ENOENT)
				continue;
			break;
		}
		int ok = decide(req);
		/* The task may have died and its pid been reused while we read its memory. */
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) < 0)
			continue;
		memset(resp, 0, sizes.seccomp_notif_resp);
		resp->id = req->id;
		if (ok)
			resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		else
			resp->error = -EPERM;
		ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp); /* ENOENT: the task is gone */
	}
	int status;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
		if (i + 1 >= argc || n_paths == MAX_RULES || n_addrs == MAX_RULES)
			goto usage;
		if (strcmp(argv[i], "--allow") == 0 && argv[i + 1][0] == '/') {
			allow_paths[n_paths++] = argv[i + 1];
		} else if (strcmp(argv[i], "--allow-addr") == 0) {
			if (inet_pton(AF_INET, argv[i + 1], &allow_addrs[n_addrs++]) != 1)
				goto usage;
		} else {
			goto usage;
		}
	}
	if (i >= argc - 1)
		goto usage;
	char **cmd = &argv[i + 1];

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("seccomp-notify: socketpair");
		return 1;
	}
	pid_t child = fork();
	if (child < 0) {
		perror("seccomp-notify: fork");
		return 1;
	}
	if (child == 0) {
		close(sv[0]);
		int listener = install_filter();
		if (listener < 0) {
			fprintf(stderr, "seccomp-notify: cannot install the filter: %s\n", strerror(errno));
			_exit(125);
		}
		if (send_fd(sv[1], listener) < 0)
			_exit(125);
		close(listener);
		char ack;
		if (read(sv[1], &ack, 1) != 1) /* the supervisor holds the listener: exec is decided */
			_exit(125);
		execvp(cmd[0], cmd);
		fprintf(stderr, "seccomp-notify: cannot run %s: %s\n", cmd[0], strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	int listener = recv_fd(sv[0]);
	if (listener < 0 || write(sv[0], "g", 1) != 1) {
		fprintf(stderr, "seccomp-notify: no listener from the child\n");
		return 1;
	}
	close(sv[0]);
	return supervise(listener, child);

usage:
	fprintf(stderr, "usage: seccomp-notify [--allow PATH]... [--allow-addr A.B.C.D]... -- CMD ARGS...\n");
	return 2;
}
