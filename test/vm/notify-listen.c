// SPDX-License-Identifier: Apache-2.0
/*
 * What systemd does with NOTIFY_SOCKET, for the VM tests (Node cannot receive
 * unix datagrams): binds a datagram socket at PATH, prints each message it
 * receives on one line (newlines inside shown as '|'), and exits 0 once a
 * message contains READY=1, or 1 after TIMEOUT seconds without it.
 *   notify-listen PATH TIMEOUT
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[4096];
	int fd, timeout;
	time_t end;

	if (argc != 3 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "usage: notify-listen PATH TIMEOUT\n");
		return 2;
	}
	timeout = atoi(argv[2]);
	strcpy(sa.sun_path, argv[1]);
	unlink(argv[1]);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("notify-listen");
		return 2;
	}
	printf("LISTENING\n");
	fflush(stdout);
	end = time(NULL) + timeout;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(end - time(NULL));
		ssize_t n;

		if (left <= 0 || poll(&p, 1, left * 1000) <= 0)
			return 1;
		n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n < 0)
			return 1;
		buf[n] = 0;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] == '\n')
				buf[i] = '|';
		printf("%s\n", buf);
		fflush(stdout);
		if (strstr(buf, "READY=1"))
			return 0;
	}
}
