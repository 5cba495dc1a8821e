// SPDX-License-Identifier: Apache-2.0
/*
 * Network operations for the network suites, run as a governed agent: one
 * process tries every case given and prints "CASE <id> ok[ <detail>]" or
 * "CASE <id> <ERRNO-NAME>" (or "CASE <id> dns <gai error>"). A C program
 * because the VM suite pays seconds for every interpreter started there.
 *
 *   id=tcp:ADDR:PORT       TCP connect
 *   id=udp:ADDR:PORT       UDP sendto (unconnected) of one byte
 *   id=udpc:ADDR:PORT      UDP connect, then send
 *   id=bind-tcp:ADDR:PORT  bind a TCP socket
 *   id=bind-udp:ADDR:PORT  bind a UDP socket
 *   id=name:HOST:PORT      getaddrinfo (the agent's own DNS), then TCP connect to each answer
 *   id=unix:PATH:0         connect to a unix stream socket (PATH "@name": abstract)
 *   id=unixd:PATH:0        send one datagram to a unix datagram socket
 *   id=raw:PROTO:0         create a raw IPv4 socket of protocol PROTO
 *   id=packet:ETHERTYPE:0  create a packet socket
 *   id=sleep:SECONDS:0     wait (between cases that depend on time)
 * ADDR is IPv4 or IPv6 text (no brackets); the family follows the address.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <unistd.h>

static const char *errname(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ENETUNREACH: return "ENETUNREACH";
	case EADDRINUSE: return "EADDRINUSE";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case EINVAL: return "EINVAL";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	default: return strerror(e);
	}
}

static int sockaddr_of(const char *addr, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		*len = sizeof(*in4);
		return AF_INET;
	}
	if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof(*in6);
		return AF_INET6;
	}
	return -1;
}

/* 0 or an errno */
static int attempt(const char *kind, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int family = sockaddr_of(addr, port, &ss, &len);
	if (family < 0)
		return EINVAL;
	int udp = !strcmp(kind, "udp") || !strcmp(kind, "udpc") || !strcmp(kind, "bind-udp");
	int fd = socket(family, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
	if (fd < 0)
		return errno;
	int rc;
	if (!strcmp(kind, "tcp") || !strcmp(kind, "udpc")) {
		rc = connect(fd, (struct sockaddr *)&ss, len);
		if (!rc && udp)
			rc = send(fd, "x", 1, 0) < 0 ? -1 : 0;
	} else if (!strcmp(kind, "udp")) {
		rc = sendto(fd, "x", 1, 0, (struct sockaddr *)&ss, len) < 0 ? -1 : 0;
	} else {
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		rc = bind(fd, (struct sockaddr *)&ss, len);
	}
	int e = rc ? errno : 0;
	close(fd);
	return e;
}

/* 0 or an errno */
static int unix_attempt(const char *path, int dgram)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	size_t n = strlen(path);
	if (n >= sizeof(sa.sun_path))
		return EINVAL;
	if (path[0] == '@') { /* abstract: a leading NUL, no terminator */
		memcpy(sa.sun_path + 1, path + 1, n - 1);
		len = offsetof(struct sockaddr_un, sun_path) + n;
	} else {
		memcpy(sa.sun_path, path, n);
		len = sizeof(sa);
	}
	int fd = socket(AF_UNIX, dgram ? SOCK_DGRAM : SOCK_STREAM, 0);
	if (fd < 0)
		return errno;
	int rc = dgram ? (sendto(fd, "x", 1, 0, (struct sockaddr *)&sa, len) < 0 ? -1 : 0)
		       : connect(fd, (struct sockaddr *)&sa, len);
	int e = rc ? errno : 0;
	close(fd);
	return e;
}

static int socket_attempt(int family, int type, int protocol)
{
	int fd = socket(family, type, protocol);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static void by_name(const char *id, const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g) {
		printf("CASE %s dns %s\n", id, gai_strerror(g));
		return;
	}
	int last = 0;
	char text[INET6_ADDRSTRLEN] = "";
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM, 0);
		void *a = ai->ai_family == AF_INET ? (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
						   : (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		inet_ntop(ai->ai_family, a, text, sizeof(text));
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			close(fd);
			printf("CASE %s ok %s\n", id, text);
			freeaddrinfo(res);
			return;
		}
		last = errno;
		if (fd >= 0)
			close(fd);
	}
	printf("CASE %s %s %s\n", id, errname(last), text);
	freeaddrinfo(res);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("PID %d\n", getpid());
	for (int i = 1; i < argc; i++) {
		char *c = strdup(argv[i]);
		char *eq = strchr(c, '=');
		char *k = eq ? strchr(eq + 1, ':') : NULL;
		char *p = k ? strrchr(k + 1, ':') : NULL;
		if (!eq || !k || !p) {
			printf("CASE %s bad-case\n", argv[i]);
			continue;
		}
		*eq = *k = *p = 0;
		const char *id = c, *kind = eq + 1, *addr = k + 1, *port = p + 1;
		if (!strcmp(kind, "sleep")) {
			sleep(atoi(addr));
			printf("CASE %s ok\n", id);
		} else if (!strcmp(kind, "unix") || !strcmp(kind, "unixd") || !strcmp(kind, "raw") || !strcmp(kind, "packet")) {
			int e = !strcmp(kind, "raw")      ? socket_attempt(AF_INET, SOCK_RAW, (int)strtol(addr, NULL, 0))
				: !strcmp(kind, "packet") ? socket_attempt(AF_PACKET, SOCK_RAW, htons((int)strtol(addr, NULL, 0)))
							  : unix_attempt(addr, !strcmp(kind, "unixd"));
			if (e)
				printf("CASE %s %s\n", id, errname(e));
			else
				printf("CASE %s ok\n", id);
		} else if (!strcmp(kind, "name")) {
			by_name(id, addr, port);
		} else {
			int e = attempt(kind, addr, atoi(port));
			if (e)
				printf("CASE %s %s\n", id, errname(e));
			else
				printf("CASE %s ok\n", id);
		}
		free(c);
	}
	return 0;
}
