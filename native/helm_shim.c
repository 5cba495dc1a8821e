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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define HELM_MAX_LINKS 64
#define LOG_TAIL 16384

struct helm_obj {
	struct bpf_object *obj;
	struct bpf_link *links[HELM_MAX_LINKS];
	int nlinks;
};

struct helm_ring {
	struct ring_buffer *rb;
	char *out;
	int cap;
	int used;
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

/* helm_open flags */
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

/* Opens and loads an object file (flags: HELM_OPEN_*), its maps sized per `sizes` (may be NULL); nothing is attached yet. */
struct helm_obj *helm_open_sized(const char *path, int flags, const char *sizes, char *err, int errlen)
{
	struct helm_obj *o;
	int rc;

	libbpf_set_print(capture_libbpf);
	libbpf_log_len = 0;
	libbpf_log[0] = 0;
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
	rc = resize_maps(o->obj, sizes, err, errlen);
	if (!rc) {
		rc = bpf_object__load(o->obj);
		if (rc)
			set_error(err, errlen, -rc, "the kernel refused to load the BPF programs");
	}
	if (rc) {
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
 * returned: MEMBARRIER_CMD_GLOBAL is synchronize_rcu() on more than one CPU,
 * and helm's programs run under rcu_read_lock(). helmd calls it between
 * switching generations and dropping the old one's maps, so no decision still
 * holds a table that is about to be freed. 0, or -errno (e.g. -EINVAL under
 * nohz_full, where the caller must fall back to waiting).
 */
int helm_sync_programs(void)
{
	if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) < 0)
		return -errno;
	return 0;
}

/*
 * Records are copied into the caller's buffer as [u32 len][u32 0][data, padded
 * to 8]. libbpf consumes a record before calling us, so a record must never be
 * refused: we stop (by returning an error) only after copying, once the room
 * left could not hold a record of the largest size.
 */
#define RING_FULL (-ENOSPC)

static int copy_record(void *ctx, void *data, size_t len)
{
	struct helm_ring *r = ctx;
	size_t padded = (len + 7) & ~7UL;

	if (r->used + 8 + (int)padded > r->cap)
		return -E2BIG; /* cannot happen: room was checked after the previous record */
	*(unsigned int *)(r->out + r->used) = (unsigned int)len;
	*(unsigned int *)(r->out + r->used + 4) = 0;
	memcpy(r->out + r->used + 8, data, len);
	r->used += 8 + (int)padded;
	return r->cap - r->used < r->max_record + 8 ? RING_FULL : 0;
}

struct helm_ring *helm_ring_open(int map_fd, int max_record, char *err, int errlen)
{
	struct helm_ring *r = calloc(1, sizeof(*r));

	if (!r) {
		set_error(err, errlen, ENOMEM, "out of memory");
		return NULL;
	}
	r->max_record = max_record;
	r->rb = ring_buffer__new(map_fd, copy_record, r, NULL);
	if (!r->rb) {
		set_error(err, errlen, errno, "cannot open ring buffer");
		free(r);
		return NULL;
	}
	return r;
}

/* Waits up to timeout_ms for records, then copies as many as fit. Returns bytes used or -errno. */
int helm_ring_drain(struct helm_ring *r, void *buf, int buflen, int timeout_ms)
{
	int rc;

	if (buflen < r->max_record + 8)
		return -EINVAL;
	r->out = buf;
	r->cap = buflen;
	r->used = 0;
	rc = ring_buffer__poll(r->rb, timeout_ms);
	r->out = NULL;
	if (rc < 0 && rc != RING_FULL && rc != -EINTR)
		return rc;
	return r->used;
}

void helm_ring_close(struct helm_ring *r)
{
	if (!r)
		return;
	ring_buffer__free(r->rb);
	free(r);
}
