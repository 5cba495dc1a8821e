// SPDX-License-Identifier: Apache-2.0
/*
 * escape-tools: the attempts of the VM escape suite that a shell cannot make.
 * Each subcommand tries one route and prints "OK <detail>" or "ERR <errno name>",
 * exiting 0 either way (the test reads the line); usage errors exit 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

static int report(long rc)
{
	if (rc < 0)
		printf("ERR %s\n", strerrorname_np(errno) ? strerrorname_np(errno) : "?");
	else
		printf("OK %ld\n", rc);
	return 0;
}

/* Reads the first bytes of an fd: proves the open gave access, not just a number. */
static int report_fd(int fd)
{
	char buf[64];
	if (fd < 0)
		return report(-1);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return report(-1);
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	printf("OK %s\n", buf);
	return 0;
}

static int uring_open(const char *path)
{
	struct io_uring_params p = { 0 };
	int ring = syscall(__NR_io_uring_setup, 4, &p);
	if (ring < 0)
		return report(-1);
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(__u32);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	char *sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED, ring, IORING_OFF_SQ_RING);
	char *cq = mmap(0, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED, ring, IORING_OFF_CQ_RING);
	struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(*sqes), PROT_READ | PROT_WRITE,
					 MAP_SHARED, ring, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		return report(-1);
	memset(&sqes[0], 0, sizeof(sqes[0]));
	sqes[0].opcode = IORING_OP_OPENAT;
	sqes[0].fd = AT_FDCWD;
	sqes[0].addr = (unsigned long)path;
	sqes[0].open_flags = O_RDONLY;
	unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
	unsigned *array = (unsigned *)(sq + p.sq_off.array);
	array[*tail & *(unsigned *)(sq + p.sq_off.ring_mask)] = 0;
	__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return report(-1);
	unsigned head = *(unsigned *)(cq + p.cq_off.head);
	struct io_uring_cqe *cqe = (struct io_uring_cqe *)(cq + p.cq_off.cqes) +
				   (head & *(unsigned *)(cq + p.cq_off.ring_mask));
	if (cqe->res < 0) {
		errno = -cqe->res;
		return report(-1);
	}
	return report_fd(cqe->res);
}

static int openat2_open(const char *path)
{
	struct open_how how = { .flags = O_RDONLY,
				.resolve = RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS };
	return report_fd(syscall(__NR_openat2, AT_FDCWD, path, &how, sizeof(how)));
}

static int opath_reopen(const char *path)
{
	int o = open(path, O_PATH);
	if (o < 0)
		return report(-1);
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o);
	return report_fd(open(proc, O_RDONLY));
}

static int unix_socket(const char *path, int listen_too)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
	if (listen_too) {
		unlink(path);
		if (bind(s, (void *)&a, sizeof(a)) || listen(s, 1))
			return -1;
		return s;
	}
	return connect(s, (void *)&a, sizeof(a)) ? -1 : s;
}

/* Outside the agent: opens PATH and passes the fd to the first peer that connects. */
static int send_fd(const char *sock, const char *path)
{
	int fd = open(path, O_RDONLY), l = unix_socket(sock, 1);
	if (fd < 0 || l < 0)
		return report(-1);
	printf("READY\n");
	fflush(stdout);
	int c = accept(l, 0, 0);
	char byte = 'x', ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return report(sendmsg(c, &m, 0));
}

static int recv_fd(const char *sock)
{
	int s = unix_socket(sock, 0);
	if (s < 0)
		return report(-1);
	char byte, ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	if (recvmsg(s, &m, 0) < 0)
		return report(-1);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (!cm)
		return report((errno = EPERM, -1)); /* the kernel dropped the fd: file_receive refused it */
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return report_fd(fd);
}

static int memfd_exec(const char *binary)
{
	int in = open(binary, O_RDONLY), m = memfd_create("payload", MFD_CLOEXEC);
	char buf[65536];
	ssize_t n;
	if (in < 0 || m < 0)
		return report(-1);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(m, buf, n) != n)
			return report(-1);
	char *argv[] = { "payload", NULL }, *envp[] = { NULL };
	fexecve(m, argv, envp);
	return report(-1);
}

static const char *race_link;
static volatile int race_stop;

static void *flip(void *targets)
{
	const char **t = targets;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", race_link);
	for (unsigned i = 0; !race_stop; i++) {
		unlink(tmp);
		if (symlink(t[i & 1], tmp) == 0)
			rename(tmp, race_link);
	}
	return 0;
}

/* Flips LINK between ALLOWED and SECRET while opening it; counts what each open read. */
static int symlink_race(const char *link, const char *allowed, const char *secret, int rounds)
{
	const char *targets[2] = { allowed, secret };
	char want_secret[64] = { 0 }, buf[64];
	int fd = open(secret, O_RDONLY); /* outside the agent this reads; inside it must not */
	if (fd >= 0) {
		ssize_t n = read(fd, want_secret, sizeof(want_secret) - 1);
		(void)n;
		close(fd);
	}
	race_link = link;
	symlink(allowed, link);
	pthread_t th;
	pthread_create(&th, 0, flip, targets);
	int got_allowed = 0, got_secret = 0, denied = 0;
	for (int i = 0; i < rounds; i++) {
		fd = open(link, O_RDONLY);
		if (fd < 0) {
			denied += errno == EPERM || errno == EACCES;
			continue;
		}
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = 0;
		if (strstr(buf, "SECRET"))
			got_secret++;
		else
			got_allowed++;
	}
	race_stop = 1;
	pthread_join(th, 0);
	printf("OK allowed=%d secret=%d denied=%d\n", got_allowed, got_secret, denied);
	return 0;
}

/*
 * Two processes on one CPU, each opening its own file as fast as it can: one a file
 * the agent may read, the other one it may not. On a fully preemptible kernel each
 * is preempted in the middle of helm's decision over and over, and the other one's
 * decision runs on the same CPU meanwhile: a decision that shared per-CPU scratch
 * space with it would be made on the other's path. Counts, per file, the opens that
 * went the wrong way.
 */
static void open_loop(const char *path, int want_ok, int seconds, int out)
{
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_setaffinity(0, sizeof(one), &one))
		_exit(3);
	struct timeval start, now;
	gettimeofday(&start, 0);
	long opens = 0, wrong = 0;
	char buf[16];
	for (;;) {
		for (int i = 0; i < 64; i++, opens++) {
			int fd = open(path, O_RDONLY);
			if (fd >= 0) {
				ssize_t n = read(fd, buf, sizeof(buf));
				(void)n;
				close(fd);
			}
			wrong += want_ok ? fd < 0 : fd >= 0;
		}
		gettimeofday(&now, 0);
		if (now.tv_sec - start.tv_sec >= seconds)
			break;
	}
	long r[2] = { opens, wrong };
	ssize_t n = write(out, r, sizeof(r));
	_exit(n == sizeof(r) ? 0 : 4);
}

static int preempt_race(const char *allowed, const char *denied, int seconds)
{
	int p[2][2];
	pid_t pid[2];
	for (int k = 0; k < 2; k++) {
		if (pipe(p[k]))
			return report(-1);
		pid[k] = fork();
		if (pid[k] < 0)
			return report(-1);
		if (!pid[k])
			open_loop(k ? denied : allowed, !k, seconds, p[k][1]);
		close(p[k][1]);
	}
	long r[2][2] = { { -1, -1 }, { -1, -1 } };
	for (int k = 0; k < 2; k++) {
		int status = 0;
		ssize_t n = read(p[k][0], r[k], sizeof(r[k]));
		(void)n;
		waitpid(pid[k], &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			return report((errno = ECHILD, -1));
	}
	printf("OK allowed_opens=%ld allowed_denied=%ld denied_opens=%ld denied_allowed=%ld\n", r[0][0], r[0][1], r[1][0], r[1][1]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		goto usage;
	const char *cmd = argv[1];
	if (!strcmp(cmd, "uring-open") && argc == 3)
		return uring_open(argv[2]);
	if (!strcmp(cmd, "openat2") && argc == 3)
		return openat2_open(argv[2]);
	if (!strcmp(cmd, "opath-reopen") && argc == 3)
		return opath_reopen(argv[2]);
	if (!strcmp(cmd, "send-fd") && argc == 4)
		return send_fd(argv[2], argv[3]);
	if (!strcmp(cmd, "recv-fd") && argc == 3)
		return recv_fd(argv[2]);
	if (!strcmp(cmd, "connect") && argc == 3)
		return report(unix_socket(argv[2], 0));
	if (!strcmp(cmd, "bpf") && argc == 2) {
		union bpf_attr a = { .map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1 };
		return report(syscall(__NR_bpf, BPF_MAP_CREATE, &a, sizeof(a)));
	}
	if (!strcmp(cmd, "kill") && argc == 4)
		return report(kill(atoi(argv[2]), atoi(argv[3])));
	if (!strcmp(cmd, "ptrace") && argc == 3) {
		long rc = ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0);
		if (rc == 0)
			ptrace(PTRACE_DETACH, atoi(argv[2]), 0, 0);
		return report(rc);
	}
	if (!strcmp(cmd, "mount") && argc == 3)
		return report(mount("none", argv[2], "tmpfs", 0, 0));
	if (!strcmp(cmd, "umount") && argc == 3)
		return report(umount2(argv[2], MNT_DETACH));
	if (!strcmp(cmd, "chroot") && argc == 3)
		return report(chroot(argv[2]));
	if (!strcmp(cmd, "finit-module") && argc == 3) {
		int fd = open(argv[2], O_RDONLY);
		return report(fd < 0 ? -1 : syscall(__NR_finit_module, fd, "", 0));
	}
	if (!strcmp(cmd, "pivot-root") && argc == 4)
		return report(syscall(SYS_pivot_root, argv[2], argv[3]));
	if (!strcmp(cmd, "kexec-file") && argc == 3) {
		int fd = open(argv[2], O_RDONLY);
		return report(fd < 0 ? -1 : syscall(__NR_kexec_file_load, fd, -1, 1, "", 2 /* KEXEC_FILE_NO_INITRAMFS */));
	}
	if (!strcmp(cmd, "setxattr") && argc == 3)
		return report(setxattr(argv[2], "user.helm", "x", 1, 0));
	if (!strcmp(cmd, "removexattr") && argc == 3)
		return report(removexattr(argv[2], "user.helm"));
	if (!strcmp(cmd, "memfd-exec") && argc == 3)
		return memfd_exec(argv[2]);
	if (!strcmp(cmd, "renamed-open") && argc == 4) {
		prctl(PR_SET_NAME, argv[2]);
		return report_fd(open(argv[3], O_RDONLY));
	}
	if (!strcmp(cmd, "symlink-race") && argc == 6)
		return symlink_race(argv[2], argv[3], argv[4], atoi(argv[5]));
	if (!strcmp(cmd, "preempt-race") && argc == 5)
		return preempt_race(argv[2], argv[3], atoi(argv[4]));
usage:
	fprintf(stderr, "usage: escape-tools uring-open|openat2|opath-reopen|recv-fd|connect|bpf|kill|ptrace|"
			"mount|umount|chroot|finit-module|memfd-exec|renamed-open|symlink-race|preempt-race|send-fd ...\n");
	return 2;
}
