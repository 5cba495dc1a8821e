// SPDX-License-Identifier: Apache-2.0
/*
 * helm-enter CGROUP_DIR -- CMD ARGS...
 * Moves itself into CGROUP_DIR, then execs CMD. Node cannot exec in place, so
 * `helmctl run` spawns this instead: the agent's first instruction already runs
 * governed, and nothing is left outside the cgroup to race with.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char procs[4096], pid[32];
	int fd, n;

	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		fprintf(stderr, "usage: helm-enter CGROUP_DIR -- CMD [ARGS...]\n");
		return 125;
	}
	if (snprintf(procs, sizeof(procs), "%s/cgroup.procs", argv[1]) >= (int)sizeof(procs)) {
		fprintf(stderr, "helm-enter: cgroup path too long\n");
		return 125;
	}
	fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "helm-enter: cannot open %s: %s\n", procs, strerror(errno));
		return 125;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", getpid());
	if (write(fd, pid, n) != n) {
		fprintf(stderr, "helm-enter: cannot join %s: %s\n", argv[1], strerror(errno));
		return 125;
	}
	close(fd);
	execvp(argv[3], &argv[3]);
	n = errno; /* fprintf may change errno */
	fprintf(stderr, "helm-enter: cannot run %s: %s\n", argv[3], strerror(n));
	return n == ENOENT ? 127 : 126;
}
