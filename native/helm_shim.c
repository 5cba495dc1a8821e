// SPDX-License-Identifier: Apache-2.0
/*
 * A flat, FFI-friendly C API over libbpf for helmd (bound with koffi in
 * daemon/kernel/native.ts). Every function takes and returns plain integers,
 * strings and caller-owned buffers; errors come back as -errno plus a message.
 * libbpf's own diagnostics (the verifier log included) are captured so that a
 * failure to load reaches the user as text, not just as an errno.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define HELM_MAX_LINKS 64
#define LOG_TAIL 16384

struct helm_obj {
	struct bpf_object *obj;
	struct bpf_link *links[HELM_MAX_LINKS];
	int nlinks;
};

/*
 * A ring-buffer consumer of our own rather than libbpf's: libbpf hands the
 * kernel back each record's space as soon as its callback returns, so records
 * copied out but not yet written to the audit trail would vanish with a killed
 * helmd. Here the kernel's consumer position moves only on helm_ring_commit(),
 * once the records are written: a new helmd reads from there, and nothing the
 * kernel reported is lost unnoticed (what did not fit in the ring was counted).
 */
struct helm_ring {
	int epfd;
	unsigned long *consumer; /* the kernel-visible consumer position (read-write page) */
	void *upper;             /* the producer position page, then the data pages, mapped once */
	size_t upper_len;
	unsigned long *producer;
	char *data;
	unsigned long mask;
	unsigned long read_pos;  /* where the next drain starts; ahead of *consumer until committed */
	int max_record;
};

/* The tail of libbpf's messages since the last helm_open(). */
static char libbpf_log[LOG_TAIL];
static size_t libbpf_log_len;

static int capture_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char *msg = NULL;
	const char *text;
	int n;

	if (level == LIBBPF_DEBUG)
		return 0;
	n = vasprintf(&msg, fmt, ap);
	if (n <= 0 || !msg)
		return 0;
	/* a verifier log arrives as one huge message: its verdict is at the end, keep that */
	text = msg;
	if ((size_t)n >= LOG_TAIL / 2) {
		text = msg + n - (LOG_TAIL / 2 - 1);
		n = LOG_TAIL / 2 - 1;
	}
	if (libbpf_log_len + n >= LOG_TAIL) {
		size_t keep = LOG_TAIL / 2 - 1 - n > 0 ? LOG_TAIL / 4 : 0;
		if (keep > libbpf_log_len)
			keep = libbpf_log_len;
		memmove(libbpf_log, libbpf_log + libbpf_log_len - keep, keep);
		libbpf_log_len = keep;
	}
	memcpy(libbpf_log + libbpf_log_len, text, n);
	libbpf_log_len += n;
	libbpf_log[libbpf_log_len] = 0;
	free(msg);
	return 0;
}

static void set_error(char *err, int errlen, int code, const char *what)
{
	if (!err || errlen <= 0)
		return;
	snprintf(err, errlen, "%s: %s (errno %d)%s%s", what, strerror(code), code,
		 libbpf_log_len ? "\nlibbpf said:\n" : "", libbpf_log_len ? libbpf_log : "");
}

/* helm_open / helm_obj_open flags */
#define HELM_OPEN_NETWORK_ONLY 1 /* leave the LSM programs out: the kernel would refuse them */

/*
 * Map sizes to set before loading, as "name=max_entries,name=max_entries"
 * (e.g. the audit rings). Returns 0 or -errno with the reason in err.
 */
static int resize_maps(struct bpf_object *obj, const char *spec, char *err, int errlen)
{
	char buf[512], *save = NULL, *item;

	if (!spec || !*spec)
		return 0;
	if (strlen(spec) >= sizeof(buf)) {
		set_error(err, errlen, E2BIG, "map sizes: too long");
		return -E2BIG;
	}
	strcpy(buf, spec);
	for (item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		struct bpf_map *m;
		char what[300];

		if (!eq) {
			set_error(err, errlen, EINVAL, "map sizes: expected name=size");
			return -EINVAL;
		}
		*eq = 0;
		m = bpf_object__find_map_by_name(obj, item);
		if (!m) {
			snprintf(what, sizeof(what), "map sizes: no map %s", item);
			set_error(err, errlen, ENOENT, what);
			return -ENOENT;
		}
		if (bpf_map__set_max_entries(m, (unsigned int)strtoul(eq + 1, NULL, 10))) {
			int code = errno;
			snprintf(what, sizeof(what), "map sizes: cannot size %s", item);
			set_error(err, errlen, code, what);
			return -code;
		}
	}
	return 0;
}

static void reset_log(void)
{
	libbpf_set_print(capture_libbpf);
	libbpf_log_len = 0;
	libbpf_log[0] = 0;
}

/* Opens an object file without loading it: its maps may first be pointed at pinned ones. */
struct helm_obj *helm_obj_open(const char *path, int flags, char *err, int errlen)
{
	struct helm_obj *o;

	reset_log();
	o = calloc(1, sizeof(*o));
	if (!o) {
		set_error(err, errlen, ENOMEM, "out of memory");
		return NULL;
	}
	o->obj = bpf_object__open_file(path, NULL);
	if (!o->obj) {
		set_error(err, errlen, errno, "cannot open BPF object");
		free(o);
		return NULL;
	}
	if (flags & HELM_OPEN_NETWORK_ONLY) {
		struct bpf_program *prog;

		bpf_object__for_each_program(prog, o->obj) {
			if (bpf_program__type(prog) == BPF_PROG_TYPE_LSM)
				bpf_program__set_autoload(prog, false);
		}
	}
	return o;
}

/* Loads (verifies) every program and creates every map not reused; nothing is attached. */
int helm_obj_load(struct helm_obj *o, char *err, int errlen)
{
	int rc;

	reset_log();
	rc = bpf_object__load(o->obj);
	if (rc) {
		set_error(err, errlen, -rc, "the kernel refused to load the BPF programs");
		return rc;
	}
	return 0;
}

/* Sets maps' sizes on an opened object, before it is loaded: "name=max_entries,..." (e.g. the audit rings). */
int helm_obj_resize(struct helm_obj *o, const char *sizes, char *err, int errlen)
{
	reset_log();
	return resize_maps(o->obj, sizes, err, errlen);
}

/* Opens and loads an object file (flags: HELM_OPEN_*), its maps sized per `sizes` (may be NULL); nothing is attached yet. */
struct helm_obj *helm_open_sized(const char *path, int flags, const char *sizes, char *err, int errlen)
{
	struct helm_obj *o = helm_obj_open(path, flags, err, errlen);

	if (!o)
		return NULL;
	if (resize_maps(o->obj, sizes, err, errlen) || helm_obj_load(o, err, errlen)) {
		bpf_object__close(o->obj);
		free(o);
		return NULL;
	}
	return o;
}

struct helm_obj *helm_open(const char *path, int flags, char *err, int errlen)
{
	return helm_open_sized(path, flags, NULL, err, errlen);
}

/*
 * Attaches every loaded program: LSM programs by their section name, cgroup
 * programs (sock_addr) to the cgroup `cgroup_fd` — the root of the v2 tree, so
 * that they see every process and decide, like the LSM hooks, by who is governed.
 */
int helm_attach_all(struct helm_obj *o, int cgroup_fd, char *err, int errlen)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, o->obj) {
		struct bpf_link *link;
		char what[256];

		if (!bpf_program__autoload(prog))
			continue;
		if (o->nlinks >= HELM_MAX_LINKS) {
			set_error(err, errlen, E2BIG, "too many programs");
			return -E2BIG;
		}
		if (bpf_program__type(prog) == BPF_PROG_TYPE_CGROUP_SOCK_ADDR ||
		    bpf_program__type(prog) == BPF_PROG_TYPE_CGROUP_SOCK)
			link = bpf_program__attach_cgroup(prog, cgroup_fd);
		else
			link = bpf_program__attach(prog);
		if (!link) {
			int code = errno;
			snprintf(what, sizeof(what), "cannot attach program %s",
				 bpf_program__name(prog));
			set_error(err, errlen, code, what);
			return -code;
		}
		o->links[o->nlinks++] = link;
	}
	return o->nlinks;
}

void helm_close(struct helm_obj *o)
{
	if (!o)
		return;
	for (int i = 0; i < o->nlinks; i++)
		bpf_link__destroy(o->links[i]);
	bpf_object__close(o->obj);
	free(o);
}

int helm_map_fd(struct helm_obj *o, const char *name)
{
	struct bpf_map *m = bpf_object__find_map_by_name(o->obj, name);
	if (!m)
		return -ENOENT;
	return bpf_map__fd(m);
}

/* ---------------------------------------------------------------- pinning and links */

static int appendf(char *buf, int len, int *used, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf + *used, *used < len ? len - *used : 0, fmt, ap);
	va_end(ap);
	if (n < 0 || *used + n >= len)
		return -E2BIG;
	*used += n;
	return 0;
}

/*
 * One line per map the object declares (internal .data/.rodata/.bss maps left
 * out: they belong to their programs and are never shared or pinned):
 *   map NAME TYPE KEY VALUE MAX_ENTRIES FLAGS [inner TYPE KEY VALUE MAX_ENTRIES FLAGS]
 * then one line per program that will be loaded:
 *   prog NAME TYPE EXPECTED_ATTACH_TYPE SECTION
 * helmd hashes this text (with the header identity) into the layout id of pinned state.
 */
int helm_obj_describe(struct helm_obj *o, char *buf, int len)
{
	struct bpf_program *prog;
	struct bpf_map *m;
	int used = 0;

	if (len > 0)
		buf[0] = 0;
	bpf_object__for_each_map(m, o->obj) {
		struct bpf_map *in = bpf_map__inner_map(m);

		if (bpf_map__is_internal(m))
			continue;
		if (appendf(buf, len, &used, "map %s %d %u %u %u %u", bpf_map__name(m), bpf_map__type(m),
			    bpf_map__key_size(m), bpf_map__value_size(m), bpf_map__max_entries(m),
			    bpf_map__map_flags(m)))
			return -E2BIG;
		if (in && appendf(buf, len, &used, " inner %d %u %u %u %u", bpf_map__type(in),
				  bpf_map__key_size(in), bpf_map__value_size(in),
				  bpf_map__max_entries(in), bpf_map__map_flags(in)))
			return -E2BIG;
		if (appendf(buf, len, &used, "\n"))
			return -E2BIG;
	}
	bpf_object__for_each_program(prog, o->obj) {
		if (!bpf_program__autoload(prog))
			continue; /* left out (network-only): not loaded, not attached */
		if (appendf(buf, len, &used, "prog %s %d %d %s\n", bpf_program__name(prog),
			    bpf_program__type(prog), bpf_program__expected_attach_type(prog),
			    bpf_program__section_name(prog)))
			return -E2BIG;
	}
	return used;
}

/*
 * The initial bytes of an internal data map (e.g. ".rodata.helm_layout", where
 * helm.bpf.c records which helm.h it was built from). Returns the byte count,
 * -ENOENT when the object has no such section.
 */
int helm_obj_section_data(struct helm_obj *o, const char *section, void *out, int len)
{
	struct bpf_map *m;
	const void *data;
	size_t size = 0;

	bpf_object__for_each_map(m, o->obj) {
		if (!bpf_map__is_internal(m) || strcmp(bpf_map__name(m), section) != 0)
			continue;
		data = bpf_map__initial_value(m, &size);
		if (!data)
			return -ENOENT;
		if ((size_t)len < size)
			return -E2BIG;
		memcpy(out, data, size);
		return (int)size;
	}
	return -ENOENT;
}

/* Points a declared map at an existing one (a pinned map) before loading. */
int helm_obj_reuse_map(struct helm_obj *o, const char *name, int fd)
{
	struct bpf_map *m = bpf_object__find_map_by_name(o->obj, name);

	if (!m)
		return -ENOENT;
	return bpf_map__reuse_fd(m, fd);
}

int helm_prog_fd(struct helm_obj *o, const char *name)
{
	struct bpf_program *p = bpf_object__find_program_by_name(o->obj, name);

	if (!p)
		return -ENOENT;
	return bpf_program__fd(p);
}

static int is_cgroup_program(enum bpf_prog_type t)
{
	switch (t) {
	case BPF_PROG_TYPE_CGROUP_SKB:
	case BPF_PROG_TYPE_CGROUP_SOCK:
	case BPF_PROG_TYPE_CGROUP_SOCK_ADDR:
	case BPF_PROG_TYPE_CGROUP_DEVICE:
	case BPF_PROG_TYPE_CGROUP_SYSCTL:
	case BPF_PROG_TYPE_CGROUP_SOCKOPT:
	case BPF_PROG_TYPE_SOCK_OPS:
		return 1;
	default:
		return 0;
	}
}

/*
 * Attaches one program and returns its link's fd, owned by the caller (who pins
 * it): cgroup programs to the cgroup at cgroup_path, everything else where its
 * section name says (lsm/..., raw_tp/...).
 */
int helm_prog_attach(struct helm_obj *o, const char *name, const char *cgroup_path, char *err,
		     int errlen)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(o->obj, name);
	struct bpf_link *link;
	char what[300];
	int fd, code;

	reset_log();
	if (!prog) {
		set_error(err, errlen, ENOENT, "no such program");
		return -ENOENT;
	}
	if (is_cgroup_program(bpf_program__type(prog))) {
		int cg = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (cg < 0) {
			code = errno;
			snprintf(what, sizeof(what), "cannot open cgroup %s for program %s", cgroup_path, name);
			set_error(err, errlen, code, what);
			return -code;
		}
		link = bpf_program__attach_cgroup(prog, cg);
		code = errno;
		close(cg);
	} else {
		link = bpf_program__attach(prog);
		code = errno;
	}
	if (!link) {
		snprintf(what, sizeof(what), "cannot attach program %s", name);
		set_error(err, errlen, code, what);
		return -code;
	}
	/* the fd becomes ours: disconnected, libbpf frees its bookkeeping and leaves the link alone */
	fd = bpf_link__fd(link);
	bpf_link__disconnect(link);
	bpf_link__destroy(link);
	return fd;
}

/* Swaps the program behind a link in one step (cgroup links and others that support it). */
int helm_link_update(int link_fd, int new_prog_fd, int old_prog_fd)
{
	LIBBPF_OPTS(bpf_link_update_opts, opts, .flags = old_prog_fd >= 0 ? BPF_F_REPLACE : 0,
		    .old_prog_fd = old_prog_fd >= 0 ? old_prog_fd : 0);

	return bpf_link_update(link_fd, new_prog_fd, &opts) ? -errno : 0;
}

/* A link's type, id and program id. */
int helm_link_info(int fd, unsigned int *out3)
{
	struct bpf_link_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	out3[0] = info.type;
	out3[1] = info.id;
	out3[2] = info.prog_id;
	return 0;
}

/* A program's id (to tell which program a link runs). */
int helm_prog_id(int fd)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	return (int)info.id;
}

int helm_pin(int fd, const char *path)
{
	return bpf_obj_pin(fd, path) ? -errno : 0;
}

/* Opens a pinned map, program or link; the fd is the caller's. */
int helm_pinned(const char *path)
{
	int fd = bpf_obj_get(path);

	return fd < 0 ? -errno : fd;
}

/* ---------------------------------------------------------------- process plumbing */

/*
 * An exclusive lock on a file, held until the fd is closed or the process ends
 * (Node has no flock). -EWOULDBLOCK when another process holds it.
 */
int helm_lock_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int code = errno;
		close(fd);
		return -code;
	}
	return fd;
}

/*
 * sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or
 * "@name" in the abstract namespace). Node cannot send unix datagrams. Returns 0
 * when there is no socket to tell (not started by systemd).
 */
int helm_sd_notify(const char *message)
{
	const char *where = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n, len;
	int fd, rc = 0;

	if (!where || !where[0])
		return 0;
	n = strlen(where);
	if ((where[0] != '/' && where[0] != '@') || n >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, where, n);
	if (where[0] == '@')
		sa.sun_path[0] = 0;
	len = offsetof(struct sockaddr_un, sun_path) + n;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, message, strlen(message), MSG_NOSIGNAL, (struct sockaddr *)&sa, (socklen_t)len) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* ---------------------------------------------------------------- maps */

int helm_map_create(int type, const char *name, int key_size, int value_size, int max_entries,
		    int map_flags)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = map_flags);
	int fd = bpf_map_create(type, name, key_size, value_size, max_entries, &opts);
	return fd < 0 ? -errno : fd;
}

/* type, key size, value size, max entries: so callers can check their buffers first. */
int helm_map_info(int fd, unsigned int *out4)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	out4[0] = info.type;
	out4[1] = info.key_size;
	out4[2] = info.value_size;
	out4[3] = info.max_entries;
	return 0;
}

int helm_map_update(int fd, const void *key, const void *value, unsigned long long flags)
{
	return bpf_map_update_elem(fd, key, value, flags) ? -errno : 0;
}

/*
 * Many elements in one call: `count` keys of key_size bytes and values of
 * value_size bytes, packed. One BPF_MAP_UPDATE_BATCH where the kernel has it for
 * the map type, else one update per element; either way no FFI round trip per
 * element. Returns 0, or -errno with *done the elements written before the error.
 */
int helm_map_update_many(int fd, const void *keys, const void *values, int count, int key_size,
			 int value_size, unsigned long long flags, int *done)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = flags);
	__u32 n = count;
	int i;

	*done = 0;
	if (count <= 0)
		return 0;
	if (!bpf_map_update_batch(fd, keys, values, &n, &opts)) {
		*done = count;
		return 0;
	}
	/* A kernel or map type without batch updates processed nothing: go element by element. */
	if (n != 0 || (errno != EINVAL && errno != EOPNOTSUPP && errno != 524 /* ENOTSUPP */))
		return *done = n, -errno;
	for (i = 0; i < count; i++) {
		if (bpf_map_update_elem(fd, (const char *)keys + (size_t)i * key_size,
					(const char *)values + (size_t)i * value_size, flags))
			return -errno;
		*done = i + 1;
	}
	return 0;
}

/* Deletes `count` packed keys, as helm_map_update_many; a missing key is an error (-ENOENT). */
int helm_map_delete_many(int fd, const void *keys, int count, int key_size, int *done)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 n = count;
	int i;

	*done = 0;
	if (count <= 0)
		return 0;
	if (!bpf_map_delete_batch(fd, keys, &n, &opts)) {
		*done = count;
		return 0;
	}
	if (n != 0 || (errno != EINVAL && errno != EOPNOTSUPP && errno != 524 /* ENOTSUPP */))
		return *done = n, -errno;
	for (i = 0; i < count; i++) {
		if (bpf_map_delete_elem(fd, (const char *)keys + (size_t)i * key_size))
			return -errno;
		*done = i + 1;
	}
	return 0;
}

int helm_map_lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) ? -errno : 0;
}

/* The key after `key` (the first one when key is NULL); -ENOENT after the last. */
int helm_map_next_key(int fd, const void *key, void *next)
{
	return bpf_map_get_next_key(fd, key, next) ? -errno : 0;
}

int helm_map_delete(int fd, const void *key)
{
	return bpf_map_delete_elem(fd, key) ? -errno : 0;
}

int helm_close_fd(int fd)
{
	return close(fd) ? -errno : 0;
}

int helm_num_possible_cpus(void)
{
	return libbpf_num_possible_cpus();
}

/* CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns(): expiry times helmd writes into maps. */
long long helm_boottime_ns(void)
{
	struct timespec bt;

	clock_gettime(CLOCK_BOOTTIME, &bt);
	return bt.tv_sec * 1000000000LL + bt.tv_nsec;
}

/* CLOCK_REALTIME minus CLOCK_BOOTTIME, to turn bpf_ktime_get_boot_ns() into wall time. */
long long helm_realtime_offset_ns(void)
{
	struct timespec rt, bt;

	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_BOOTTIME, &bt);
	return (rt.tv_sec - bt.tv_sec) * 1000000000LL + (rt.tv_nsec - bt.tv_nsec);
}

/*
 * Waits until every BPF program that was running when this was called has
 * returned. helm's programs run under rcu_read_lock(), and an update of a
 * map-in-map makes the kernel call synchronize_rcu() before it returns
 * (maybe_wait_bpf_programs() in kernel/bpf/syscall.c: userspace must know that
 * no program still uses the inner map it replaced). So a one-slot array of
 * maps of our own, rewritten with the same inner map, is a grace period.
 * membarrier(MEMBARRIER_CMD_GLOBAL) is not: it skips synchronize_rcu() when
 * one CPU is online, where a decision preempted half-way (preempt=full) can
 * still hold the table helmd is about to rewrite. helmd calls this between
 * switching generations and rewriting or dropping the old one's tables.
 * 0, or -errno (the caller then falls back to waiting).
 */
static int grace_outer = -1, grace_inner = -1, grace_err;
static pthread_once_t grace_once = PTHREAD_ONCE_INIT;

static void grace_maps_create(void)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts);
	int inner = bpf_map_create(BPF_MAP_TYPE_ARRAY, "helm_grace_in", 4, 4, 1, NULL);

	if (inner < 0) {
		grace_err = -errno;
		return;
	}
	opts.inner_map_fd = inner;
	grace_outer = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "helm_grace", 4, 4, 1, &opts);
	if (grace_outer < 0) {
		grace_err = -errno;
		close(inner);
		return;
	}
	grace_inner = inner;
}

int helm_sync_programs(void)
{
	__u32 zero = 0;

	/* helmd calls this from its main thread and from koffi's worker threads. */
	pthread_once(&grace_once, grace_maps_create);
	if (grace_outer < 0)
		return grace_err;
	if (bpf_map_update_elem(grace_outer, &zero, &grace_inner, BPF_ANY) < 0)
		return -errno;
	return 0;
}

/*
 * Records are copied into the caller's buffer as [u32 len][u32 0][data, padded
 * to 8]; a record that does not fit waits for the next drain.
 */
void helm_ring_close(struct helm_ring *r);

static unsigned int record_span(unsigned int len)
{
	return (len + BPF_RINGBUF_HDR_SZ + 7) / 8 * 8;
}

static int copy_ready(struct helm_ring *r, char *out, int cap)
{
	unsigned long prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
	unsigned long pos = r->read_pos;
	int used = 0;

	while (pos < prod) {
		unsigned int *hdr = (unsigned int *)(r->data + (pos & r->mask));
		unsigned int h = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
		unsigned int len = h & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);

		if (h & BPF_RINGBUF_BUSY_BIT)
			break; /* reserved, not submitted yet: everything after it waits too */
		if (!(h & BPF_RINGBUF_DISCARD_BIT)) {
			int padded = (int)((len + 7) & ~7u);
			unsigned long start = (pos + BPF_RINGBUF_HDR_SZ) & r->mask;
			unsigned long first = r->mask + 1 - start;

			if (used + 8 + padded > cap)
				break;
			*(unsigned int *)(out + used) = len;
			*(unsigned int *)(out + used + 4) = 0;
			/* the data is mapped once (libbpf maps it twice, which RSS counts twice): a record may wrap */
			if (first >= len) {
				memcpy(out + used + 8, r->data + start, len);
			} else {
				memcpy(out + used + 8, r->data + start, first);
				memcpy(out + used + 8 + first, r->data, len - first);
			}
			used += 8 + padded;
		}
		pos += record_span(len);
	}
	r->read_pos = pos;
	return used;
}

struct helm_ring *helm_ring_open(int map_fd, int max_record, char *err, int errlen)
{
	struct bpf_map_info info = {};
	__u32 info_len = sizeof(info);
	struct epoll_event ev = { .events = EPOLLIN };
	struct helm_ring *r;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (bpf_obj_get_info_by_fd(map_fd, &info, &info_len)) {
		set_error(err, errlen, errno, "cannot inspect the ring buffer map");
		return NULL;
	}
	if (info.type != BPF_MAP_TYPE_RINGBUF) {
		set_error(err, errlen, EINVAL, "not a ring buffer map");
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		set_error(err, errlen, ENOMEM, "out of memory");
		return NULL;
	}
	r->max_record = max_record;
	r->mask = info.max_entries - 1;
	r->epfd = -1;
	r->consumer = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (r->consumer == MAP_FAILED) {
		r->consumer = NULL;
		set_error(err, errlen, errno, "cannot map the ring buffer's consumer page");
		goto fail;
	}
	/*
	 * The producer page and the data once. The kernel allows mapping the data
	 * twice, so that a record wrapping around the end reads contiguously; that
	 * doubles the ring in the process's RSS (the memory is the kernel's either way).
	 * copy_ready() copies a wrapping record in two pieces instead.
	 */
	r->upper_len = page + (size_t)info.max_entries;
	r->upper = mmap(NULL, r->upper_len, PROT_READ, MAP_SHARED, map_fd, (off_t)page);
	if (r->upper == MAP_FAILED) {
		r->upper = NULL;
		set_error(err, errlen, errno, "cannot map the ring buffer's data");
		goto fail;
	}
	r->producer = r->upper;
	r->data = (char *)r->upper + page;
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, map_fd, &ev)) {
		set_error(err, errlen, errno, "cannot wait on the ring buffer");
		goto fail;
	}
	/* a ring another helmd left: start where it last committed */
	r->read_pos = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	return r;
fail:
	helm_ring_close(r);
	return NULL;
}

/* Waits up to timeout_ms for records, then copies as many as fit. Returns bytes used or -errno. */
int helm_ring_drain(struct helm_ring *r, void *buf, int buflen, int timeout_ms)
{
	struct epoll_event ev;
	int used;

	if (buflen < r->max_record + 8)
		return -EINVAL;
	used = copy_ready(r, buf, buflen);
	if (used == 0 && timeout_ms != 0) {
		if (epoll_wait(r->epfd, &ev, 1, timeout_ms) < 0 && errno != EINTR)
			return -errno;
		used = copy_ready(r, buf, buflen);
	}
	return used;
}

/* Gives the space of every record drained so far back to the kernel: call once they are written. */
void helm_ring_commit(struct helm_ring *r)
{
	__atomic_store_n(r->consumer, r->read_pos, __ATOMIC_RELEASE);
}

/* Where the next drain starts: helm_ring_commit_to() this once what was drained before it is written. */
long long helm_ring_position(struct helm_ring *r)
{
	return (long long)r->read_pos;
}

/*
 * Gives the kernel back the space of the records before `pos` (a position
 * helm_ring_position() returned): the records drained before it are written,
 * later ones may not be yet. Never moves the consumer position back.
 */
void helm_ring_commit_to(struct helm_ring *r, long long pos)
{
	unsigned long p = (unsigned long)pos;
	unsigned long cur = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);

	if (p > r->read_pos || (long)(p - cur) <= 0)
		return;
	__atomic_store_n(r->consumer, p, __ATOMIC_RELEASE);
}

/* Records in the ring not yet committed, in bytes (what a killed helmd had not confirmed). */
long long helm_ring_pending(struct helm_ring *r)
{
	return (long long)(__atomic_load_n(r->producer, __ATOMIC_ACQUIRE) - __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE));
}

void helm_ring_close(struct helm_ring *r)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (!r)
		return;
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->upper)
		munmap(r->upper, r->upper_len);
	if (r->consumer)
		munmap(r->consumer, page);
	free(r);
}

/*
 * The audit trail's hash chain over a batch of lines, in one call (helmd's
 * writer: about a microsecond per line less than a crypto.hash call from JS).
 *
 * SHA-256 is OpenSSL's, as the node process that loads this library already
 * has it (node exports its OpenSSL): the symbols are weak, so a process without
 * them still loads the library, and helm_chain_lines says -ENOSYS (the writer
 * then hashes in JS, the same bytes). OpenSSL's SHA256_CTX is smaller than
 * this; its layout is not needed here.
 */
extern int SHA256_Init(void *ctx) __attribute__((weak));
extern int SHA256_Update(void *ctx, const void *data, size_t len) __attribute__((weak));
extern int SHA256_Final(unsigned char *md, void *ctx) __attribute__((weak));

/* Room before each line's body in helm_chain_lines' input: what the line grows by. */
#define HELM_CHAIN_GAP 76

/*
 * `buf` holds `n` slots back to back from `start`: slot i is HELM_CHAIN_GAP bytes
 * of room, then line i's JSON object text ("{...}"), ending at ends[i] (where
 * slot i + 1 begins). For each line in order: chain = SHA-256 of the previous
 * chain (64 hex digits), a newline and the text; the slot becomes the text
 * without its closing brace, `,"chain":"<chain>"}` and a newline, exactly
 * filling it. `prev` is the chain before the first line (64 hex digits) and
 * gets the last one. Returns 0, -EINVAL (a text that is not a non-empty object,
 * or a slot too short: nothing is trusted from there on) or -ENOSYS.
 */
int helm_chain_lines(unsigned char *buf, int start, const int *ends, int n, char *prev)
{
	static const char hex[] = "0123456789abcdef";
	static const char key[] = ",\"chain\":\"";
	unsigned long long ctx[64]; /* room for any SHA256_CTX */
	unsigned char md[32];
	int slot = start;

	if (!SHA256_Init || !SHA256_Update || !SHA256_Final)
		return -ENOSYS;
	for (int i = 0; i < n; i++) {
		int b = slot + HELM_CHAIN_GAP, e = ends[i];
		unsigned char *p;

		if (e - b < 3 || buf[b] != '{' || buf[e - 1] != '}')
			return -EINVAL;
		/* the previous chain and a newline right before the text: what is hashed */
		memcpy(buf + b - 65, prev, 64);
		buf[b - 1] = '\n';
		if (SHA256_Init(ctx) != 1 || SHA256_Update(ctx, buf + b - 65, (size_t)(e - b + 65)) != 1 || SHA256_Final(md, ctx) != 1)
			return -EIO;
		for (int k = 0; k < 32; k++) {
			prev[2 * k] = hex[md[k] >> 4];
			prev[2 * k + 1] = hex[md[k] & 15];
		}
		memmove(buf + slot, buf + b, (size_t)(e - 1 - b));
		p = buf + slot + (e - 1 - b);
		memcpy(p, key, sizeof(key) - 1);
		p += sizeof(key) - 1;
		memcpy(p, prev, 64);
		p += 64;
		*p++ = '"';
		*p++ = '}';
		*p++ = '\n';
		slot = e;
	}
	return 0;
}

