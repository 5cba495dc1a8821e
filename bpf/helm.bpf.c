// SPDX-License-Identifier: GPL-2.0
/*
 * File enforcement for governed agents: every open, exec and mutation by a task
 * whose cgroup (or an ancestor) is attached is decided here, on the object the
 * kernel resolved, deny by default. The policy lives in maps; this file only
 * looks it up. Self-protection hooks at the end are not policy: no rule can
 * switch them off.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "helm.h"

char LICENSE[] SEC("license") = "GPL";

/*
 * The SHA-256 of the bpf/helm.h this object was compiled against (the Makefile
 * passes it). helmd hashes it with the object's map and program definitions
 * into the layout id of pinned state: maps are never reused by code that reads
 * their bytes differently.
 */
#ifndef HELM_H_SHA256
#error "compile with -DHELM_H_SHA256=\"<sha256 of bpf/helm.h>\" (see the Makefile)"
#endif
const char helm_layout[] SEC(".rodata.helm_layout") = HELM_H_SHA256;

#define EPERM 1
#define ENOENT 2
#define ENAMETOOLONG 36
#define S_IFMT 00170000
#define S_IFDIR 0040000
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define FMODE_EXEC 0x20
#define O_TRUNC 00001000
#define __FMODE_EXEC 0x20 /* in f_flags: the kernel opened the file to execute it */
#define PROT_EXEC 0x4
#define CGROUP_SUPER_MAGIC 0x27e0eb
#define CGROUP2_SUPER_MAGIC 0x63677270
#define BPF_FS_MAGIC 0xcafe4a11
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_AGENTS);
	__type(key, __u64); /* cgroup id */
	__type(value, struct helm_agent);
} governed_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct helm_settings);
} settings SEC(".maps");

/* One generation of compiled policy per slot; the active slot is switched atomically. */
struct path_table {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HELM_MAX_PATH_ENTRIES);
	/* sizes, not types: clang emits types only reached through the outer map as forward declarations */
	__uint(key_size, sizeof(struct helm_path_key));
	__uint(value_size, sizeof(struct helm_path_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct path_table);
} path_tables SEC(".maps");

struct inode_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_INODE_ENTRIES);
	__uint(key_size, sizeof(struct helm_inode_key));
	__uint(value_size, sizeof(struct helm_inode_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct inode_table);
} inode_tables SEC(".maps");

/*
 * Contextual conditions on the acting process, per generation (see struct
 * helm_cond_list): the lists verdicts name, and the executables and uids
 * conditions name, each keyed by the condition's id.
 */
struct cond_list_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_COND_LISTS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct helm_cond_list));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct cond_list_table);
} cond_lists SEC(".maps");

struct cond_exe_table {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HELM_MAX_COND_EXES);
	__uint(key_size, sizeof(struct helm_exe_key));
	__uint(value_size, sizeof(__u32));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct cond_exe_table);
} cond_exes SEC(".maps");

struct cond_uid_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_COND_UIDS);
	__uint(key_size, sizeof(struct helm_uid_key));
	__uint(value_size, sizeof(__u32));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct cond_uid_table);
} cond_uids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_PROTECTED);
	__type(key, struct helm_protected_key);
	__type(value, __u32);
} protected_inodes SEC(".maps");

/* Denials and would-denials for the audit trail: never shared with allows. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HELM_DENY_RING_BYTES);
} deny_events SEC(".maps");

/* Logged allows (per the allow-log level). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HELM_ALLOW_RING_BYTES);
} allow_events SEC(".maps");

/* Events that did not fit, per ring (enum helm_ring) and per CPU; helmd reports every change. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HELM_RINGS);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct helm_audit_settings);
} audit_settings SEC(".maps");

/* Every decision per agent, logged or not, so that unlogged allows are accounted for. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, HELM_MAX_AGENTS);
	__type(key, __u64); /* agent id */
	__type(value, struct helm_agent_counters);
} agent_counters SEC(".maps");

/* The allow sampler's token bucket per agent, kept as nanoseconds of credit. */
struct sample_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 credit_ns;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_AGENTS);
	__type(key, __u64); /* agent id */
	__type(value, struct sample_bucket);
} sample_buckets SEC(".maps");


/*
 * The lookup key is too large for the BPF stack next to everything else. The
 * slack after it lets a path index masked to 0xff stay inside the map value
 * whatever bounds the verifier lost track of (the checks before it keep the
 * real index below HELM_PATH_BUF).
 */
struct key_scratch {
	struct helm_path_key key;
	char slack[256 - HELM_PATH_BUF];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HELM_SCRATCH_FRAMES);
	__type(key, __u32);
	__type(value, struct key_scratch);
} scratch SEC(".maps");

/* The acting task's executable, as the exe table is looked up (named once per decision, if needed). */
struct exe_scratch {
	struct helm_exe_key key;
	char slack[256 - HELM_PATH_BUF];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HELM_SCRATCH_FRAMES);
	__type(key, __u32);
	__type(value, struct exe_scratch);
} exe_scratch SEC(".maps");

/* Where a path is assembled backwards, component by component (see path_of). */
#define WALK_BUF 768
struct walk_buf {
	char b[WALK_BUF];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HELM_SCRATCH_FRAMES);
	__type(key, __u32);
	__type(value, struct walk_buf);
} walk_scratch SEC(".maps");

/*
 * The scratch maps above hold one frame per decision in progress on a CPU. A
 * program runs with migration disabled, not preemption: on a fully preemptible
 * kernel a decision can be preempted half-way and another task's decision run
 * on the same CPU meanwhile, so each decision holds a frame of its own (taken
 * after the agent is known, put back when the hook returns).
 */
_Static_assert((HELM_SCRATCH_FRAMES & (HELM_SCRATCH_FRAMES - 1)) == 0, "frame_put masks a frame number");
struct frame_flags {
	__u64 busy[HELM_SCRATCH_FRAMES];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame_flags);
} scratch_frames SEC(".maps");

/*
 * A free frame of this CPU (atomically: a preempting decision may be looking too), or -1.
 * Global, so that the verifier sees one unknown number: inlined, each frame would be a
 * constant of its own, and every decision checked once per frame (ten times the work).
 */
__noinline int frame_take(void)
{
	__u32 zero = 0;
	struct frame_flags *f = bpf_map_lookup_elem(&scratch_frames, &zero);
	if (!f)
		return -1;
	for (int i = 0; i < HELM_SCRATCH_FRAMES; i++)
		if (__sync_val_compare_and_swap(&f->busy[i], 0, 1) == 0)
			return i;
	return -1;
}

static __always_inline void frame_put(int frame)
{
	__u32 zero = 0;
	struct frame_flags *f = bpf_map_lookup_elem(&scratch_frames, &zero);
	/* a plain store: only this CPU's decisions share the flag, and the frame's last use is before it */
	asm volatile("" ::: "memory");
	if (!f || frame < 0 || frame >= HELM_SCRATCH_FRAMES)
		return;
	__u32 i = frame;
	asm volatile("%0 &= %1" : "+r"(i) : "i"(HELM_SCRATCH_FRAMES - 1)); /* bounds the verifier keeps */
	*(volatile __u64 *)&f->busy[i] = 0;
}

/* ---------------------------------------------------------------- who is governed */

static __always_inline struct helm_agent *governing_agent(__u64 *cgroup_id)
{
	struct helm_agent *found = 0;

	for (int level = 0; level < HELM_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		struct helm_agent *a = bpf_map_lookup_elem(&governed_cgroups, &id);
		if (a) {
			found = a;
			*cgroup_id = id;
		}
	}
	return found;
}

/* The agent governing another task: its cgroup and ancestors, deepest attachment first. */
static __always_inline struct helm_agent *agent_of_task(struct task_struct *task)
{
	struct cgroup *cgrp = BPF_CORE_READ(task, cgroups, dfl_cgrp);

	for (int i = 0; i < HELM_MAX_CGROUP_DEPTH && cgrp; i++) {
		__u64 id = BPF_CORE_READ(cgrp, kn, id);
		struct helm_agent *a = bpf_map_lookup_elem(&governed_cgroups, &id);
		if (a)
			return a;
		/* self is the first member of struct cgroup: a parent css is its cgroup */
		cgrp = (struct cgroup *)BPF_CORE_READ(cgrp, self.parent);
	}
	return 0;
}

static __always_inline struct helm_settings *current_settings(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&settings, &zero);
}

/* ---------------------------------------------------------------- naming objects */

struct name_walk {
	struct mount *mnt;
	struct dentry *dentry;
	struct walk_buf *w;
	__u32 pos;
	int done;
	long error;
};

/* One component: prepend "/<name>", or cross from a mount's root to its mount point. */
static long name_step(__u32 i, struct name_walk *c)
{
	struct dentry *dentry = c->dentry;
	struct mount *mnt = c->mnt;
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (dentry == mnt_root || dentry == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (up == mnt || !up) {
			c->done = 1; /* the root of the mount tree */
			return 1;
		}
		c->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		c->mnt = up;
		return 0;
	}
	__u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	__u32 pos = c->pos;
	if (len > 255 || pos < len + 1 + 512 - HELM_PATH_BUF) {
		c->error = -ENAMETOOLONG;
		return 1;
	}
	pos -= len;
	bpf_probe_read_kernel(&c->w->b[pos & 511], len & 255, name);
	pos -= 1;
	c->w->b[pos & 511] = '/';
	c->pos = pos;
	c->dentry = parent;
	return 0;
}

/*
 * The path of (mnt, dentry) from the root of the mount tree, as d_path would
 * give it, built backwards component by component and crossing mount points.
 * Used where bpf_d_path is not allowed (the path_* hooks, and naming the exe).
 * Writes "<path>\0" (and bytes after it to ignore) into dst[HELM_PATH_BUF];
 * returns its length with the NUL, or a negative errno.
 */
static __always_inline long name_of(struct vfsmount *vfsmnt, struct dentry *dentry, char *dst,
				    __u32 frame)
{
	struct walk_buf *w = bpf_map_lookup_elem(&walk_scratch, &frame);
	if (!w || !vfsmnt || !dentry)
		return -EPERM;
	struct name_walk c = {
		.mnt = container_of(vfsmnt, struct mount, mnt),
		.dentry = dentry,
		.w = w,
		.pos = 511,
	};
	w->b[511] = 0;
	bpf_loop(HELM_MAX_COMPONENTS, name_step, &c, 0);
	if (c.error)
		return c.error;
	if (!c.done)
		return -ENAMETOOLONG;
	__u32 pos = c.pos;
	if (pos == 511) {
		pos = 510;
		w->b[510] = '/';
	}
	long len = 512 - pos;
	if (len < 1 || len > HELM_PATH_BUF)
		return -ENAMETOOLONG;
	/* a fixed-size copy keeps the verifier's bounds simple; bytes after the NUL are ignored */
	bpf_probe_read_kernel(dst, HELM_PATH_BUF, &w->b[pos & 511]);
	return len;
}

static __always_inline long path_of(struct vfsmount *vfsmnt, struct dentry *dentry,
				    struct helm_path_key *key, __u32 frame)
{
	return name_of(vfsmnt, dentry, key->path, frame);
}

/* ---------------------------------------------------------------- decisions and events */

/* A network operation's subject, as the audit trail reports it. */
struct net_subject {
	__u8 addr[16]; /* IPv6; IPv4 mapped */
	__u16 port;    /* host byte order */
	__u8 proto;
	__u8 family;   /* AF_INET or AF_INET6, as the socket used it */
};

struct decision {
	struct helm_verdict verdict;
	__u8 op;
	__u8 reason;
	__u8 decision; /* enum helm_decision, set by deny() or allow() */
	__u32 ops;     /* OP_BIT()s the operation needed */
	__u32 generation;
	__u32 detail;
	__u32 flags;
	__u32 target_pid;
	long path_len;
	const struct net_subject *net; /* network ops only */
	__u64 ino; /* the object's identity, for the event (set by emit) */
	__u32 dev;
	__u32 frame; /* the decision's scratch frame (see frame_take) */
};

#define OP_BIT(op) (1u << (op))
#define ENOENT 2
#define EOPNOTSUPP 95

static __always_inline struct helm_agent_counters *counters_of(struct helm_agent *agent)
{
	__u64 id = agent->agent_id;
	struct helm_agent_counters *c = bpf_map_lookup_elem(&agent_counters, &id);
	if (c)
		return c;
	/* helmd creates the entry when it attaches; an adopted agent gets one here */
	struct helm_agent_counters zero = {};
	bpf_map_update_elem(&agent_counters, &id, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&agent_counters, &id);
}

static __always_inline void count_lost(__u32 ring)
{
	__u64 *lost = bpf_map_lookup_elem(&lost_events, &ring);
	if (lost)
		__sync_fetch_and_add(lost, 1);
}

/* Where an exec's arguments are read from: the caller's memory (see read_argv). */
struct argv_walk {
	const char *const *argv;
	struct walk_buf *w;
	__u32 off;
	int argc;
	int truncated;
	long error;
};

static long argv_step(__u32 i, struct argv_walk *c)
{
	const char *arg = 0;
	long rc = bpf_probe_read_user(&arg, sizeof(arg), &c->argv[i]);
	if (rc) {
		c->error = rc;
		return 1;
	}
	if (!arg)
		return 1; /* the end of argv */
	__u32 off = c->off;
	if (off >= HELM_ARGV_BUF) {
		c->truncated = 1;
		return 1;
	}
	/* walk_buf is larger than HELM_ARGV_BUF * 2: a whole argument fits after any offset */
	long n = bpf_probe_read_user_str(&c->w->b[off & (HELM_ARGV_BUF - 1)], HELM_ARGV_BUF, arg);
	if (n <= 0) {
		c->error = n ? n : -ENOENT;
		return 1;
	}
	c->argc++;
	off += n;
	if (off > HELM_ARGV_BUF) {
		off = HELM_ARGV_BUF;
		c->truncated = 1;
	}
	c->off = off;
	return 0;
}

/*
 * An exec's arguments. The decision is made when the kernel opens the binary,
 * before it copies argv into the new program: here they are still only in the
 * caller's memory, at the address the execve/execveat system call was given.
 * They are read from there now, bounded; a second thread of the caller could
 * change that memory meanwhile, so they are evidence of what was asked, never
 * an input to the decision.
 */
static __always_inline void read_argv(struct task_struct *task, struct helm_event *e, __u32 frame)
{
	e->argc = -EOPNOTSUPP;
	e->argv_len = 0;
#ifdef __TARGET_ARCH_x86
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs)
		return;
	long nr = BPF_CORE_READ(regs, orig_ax);
	const char *const *argv;
	if (nr == 59) /* execve(path, argv, envp) */
		argv = (const char *const *)BPF_CORE_READ(regs, si);
	else if (nr == 322) /* execveat(dirfd, path, argv, envp, flags) */
		argv = (const char *const *)BPF_CORE_READ(regs, dx);
	else {
		e->argc = -ENOENT; /* not an execve: e.g. a 32-bit compat call */
		return;
	}
	struct walk_buf *w = bpf_map_lookup_elem(&walk_scratch, &frame);
	if (!w)
		return;
	struct argv_walk c = { .argv = argv, .w = w };
	bpf_loop(HELM_MAX_ARGS, argv_step, &c, 0);
	if (c.argc == HELM_MAX_ARGS && !c.error) {
		const char *more = 0;
		if (!bpf_probe_read_user(&more, sizeof(more), &argv[HELM_MAX_ARGS]) && more)
			c.truncated = 1;
	}
	e->argc = c.argc ? c.argc : (c.error ? (int)c.error : 0);
	e->argv_len = c.off;
	if (c.truncated)
		e->flags |= HELM_EVENT_FLAG_ARGV_TRUNCATED;
	bpf_probe_read_kernel(e->argv, HELM_ARGV_BUF, w->b);
#endif
}

/* The event for a decision, on the ring of its kind. Returns 0 if the ring was full. */
static __always_inline int emit_event(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
				      struct helm_path_key *key, const struct net_subject *net,
				      int with_argv)
{
	int is_allow = d->decision == HELM_DECISION_ALLOW;
	struct helm_event *e;
	if (is_allow)
		e = bpf_ringbuf_reserve(&allow_events, sizeof(*e), 0);
	else
		e = bpf_ringbuf_reserve(&deny_events, sizeof(*e), 0);
	if (!e) {
		count_lost(is_allow ? HELM_RING_ALLOW : HELM_RING_DENY);
		return 0;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = cgroup_id;
	e->agent_id = agent->agent_id;
	e->ino = d->ino;
	e->dev = d->dev;
	e->type = HELM_EVENT_DECISION;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->role_id = agent->role_id;
	e->generation = d->generation;
	e->policy_id = d->verdict.policy_id;
	e->rule_id = d->verdict.rule_id;
	e->op = d->op;
	e->decision = d->decision;
	e->mode = d->verdict.mode;
	e->reason = d->reason;
	e->flags = d->flags;
	e->detail = d->detail;
	e->target_pid = d->target_pid;
	e->path_len = d->path_len;
	if (net) {
		__builtin_memcpy(e->addr, net->addr, sizeof(e->addr));
		e->port = net->port;
		e->proto = net->proto;
		e->family = net->family;
	} else {
		__builtin_memset(e->addr, 0, sizeof(e->addr));
		e->port = 0;
		e->proto = 0;
		e->family = 0;
	}
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (key && d->path_len > 0)
		__builtin_memcpy(e->path, key->path, sizeof(e->path));
	else
		e->path[0] = 0;
	/*
	 * Resolved now: by the time helmd reads the event the process may be gone.
	 * Named by the walk, not bpf_d_path, which most hooks may not call.
	 */
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	e->exe_len = -2; /* ENOENT: a task without an executable */
	e->exe[0] = 0;
	if (exe)
		e->exe_len = name_of(BPF_CORE_READ(exe, f_path.mnt), BPF_CORE_READ(exe, f_path.dentry), e->exe,
				     d->frame);
	/* The parent's, best effort: it may be exiting (then its name is what could be read). */
	struct file *parent_exe = BPF_CORE_READ(task, real_parent, mm, exe_file);
	e->parent_exe_len = -ENOENT;
	e->parent_exe[0] = 0;
	if (parent_exe)
		e->parent_exe_len = name_of(BPF_CORE_READ(parent_exe, f_path.mnt),
					    BPF_CORE_READ(parent_exe, f_path.dentry), e->parent_exe, d->frame);
	e->ops = d->ops ? d->ops : OP_BIT(d->op);
	e->argc = 0;
	e->argv_len = 0;
	e->argv[0] = 0;
	/* the binary itself, the ELF interpreter, a script's interpreter: all opened within execve */
	if (with_argv && d->op == HELM_OP_EXEC && d->detail == HELM_DETAIL_OPEN)
		read_argv(task, e, d->frame);
	bpf_ringbuf_submit(e, 0);
	return 1;
}

/*
 * The reporting functions are global: the verifier checks each once per program
 * rather than at every call site (an event names two executables and may read
 * argv, all loops), which keeps loading fast. Their pointer arguments may be
 * NULL to the verifier, and kernel objects are passed as plain numbers. File
 * decisions (LSM hooks) may read an exec's argv; the other one, linked into the
 * cgroup programs too, uses no helper those cannot call. `net` is not const:
 * clang 14 emits a struct reached only through const pointers in struct
 * members as a forward declaration, and the verifier refuses a global
 * function whose argument's size it cannot determine.
 */
__noinline int helm_emit(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
			 struct helm_path_key *key, struct net_subject *net)
{
	if (!agent || !d)
		return 0;
	return emit_event(agent, cgroup_id, d, key, net, 0);
}

__noinline int helm_emit_file(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
			      struct helm_path_key *key)
{
	if (!agent || !d)
		return 0;
	return emit_event(agent, cgroup_id, d, key, 0, 1);
}

static __always_inline int emit(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
				struct helm_path_key *key, struct inode *inode, int file)
{
	d->ino = inode ? BPF_CORE_READ(inode, i_ino) : 0;
	d->dev = inode ? BPF_CORE_READ(inode, i_sb, s_dev) : 0;
	if (file)
		return helm_emit_file(agent, cgroup_id, d, key);
	return helm_emit(agent, cgroup_id, d, key, (struct net_subject *)d->net);
}

/* Applies dry-run (agent or global), counts, reports, and gives the hook's return value. */
static __always_inline int deny_as(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
				   struct helm_path_key *key, struct inode *inode, int file)
{
	struct helm_settings *s = current_settings();
	__u32 mode_flags = s ? READ_ONCE(s->flags) : 0;

	if (d->reason != HELM_REASON_SELF_PROTECT &&
	    ((agent->flags & HELM_AGENT_DRY_RUN) || (mode_flags & HELM_SETTINGS_DRY_RUN)))
		d->verdict.mode = HELM_MODE_DRY_RUN;
	int enforced = d->verdict.mode != HELM_MODE_DRY_RUN;
	d->decision = enforced ? HELM_DECISION_DENY : HELM_DECISION_WOULD_DENY;
	struct helm_agent_counters *c = counters_of(agent);
	if (c)
		__sync_fetch_and_add(enforced ? &c->denied : &c->would_deny, 1);
	if (!emit(agent, cgroup_id, d, key, inode, file) && c)
		__sync_fetch_and_add(&c->deny_lost, 1);
	return enforced ? -EPERM : 0;
}

static __always_inline int deny(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
				struct helm_path_key *key, struct inode *inode)
{
	return deny_as(agent, cgroup_id, d, key, inode, 0);
}

/* Takes one sample's credit from the agent's bucket, if it has it. */
static __always_inline int sample_allow(struct helm_agent *agent, struct helm_audit_settings *as)
{
	__u64 id = agent->agent_id;
	__u64 now = bpf_ktime_get_ns();
	__u64 cost = as->sample_cost_ns;
	__u64 burst = as->sample_burst_ns;
	struct sample_bucket *b = bpf_map_lookup_elem(&sample_buckets, &id);
	if (!b) {
		struct sample_bucket fresh = { .credit_ns = burst, .last_ns = now };
		bpf_map_update_elem(&sample_buckets, &id, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&sample_buckets, &id);
		if (!b)
			return 0;
	}
	int take = 0;
	bpf_spin_lock(&b->lock);
	__u64 credit = b->credit_ns;
	if (now > b->last_ns) {
		credit += now - b->last_ns;
		b->last_ns = now;
	}
	if (credit > burst)
		credit = burst;
	if (cost && credit >= cost) {
		credit -= cost;
		take = 1;
	}
	b->credit_ns = credit;
	bpf_spin_unlock(&b->lock);
	return take;
}

/* An allowed operation: counted always, reported per the allow-log level. Returns 0 (allow). */
static __always_inline int allow_as(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
				    struct helm_path_key *key, struct inode *inode, int file)
{
	__u32 zero = 0;
	struct helm_audit_settings *as = bpf_map_lookup_elem(&audit_settings, &zero);
	__u32 level = as ? READ_ONCE(as->allow_log) : HELM_ALLOW_LOG_NONE;
	struct helm_agent_counters *c = counters_of(agent);

	if (c)
		__sync_fetch_and_add(&c->allowed, 1);
	int send = level == HELM_ALLOW_LOG_ALL;
	if (level == HELM_ALLOW_LOG_SAMPLED && as && sample_allow(agent, as)) {
		send = 1;
		d->flags |= HELM_EVENT_FLAG_SAMPLED;
	}
	if (!send) {
		if (c)
			__sync_fetch_and_add(&c->allow_unlogged, 1);
		return 0;
	}
	d->decision = HELM_DECISION_ALLOW;
	if (!emit(agent, cgroup_id, d, key, inode, file) && c)
		__sync_fetch_and_add(&c->allow_lost, 1);
	return 0;
}

static __always_inline int allow(struct helm_agent *agent, __u64 cgroup_id, struct decision *d,
				 struct helm_path_key *key, struct inode *inode)
{
	return allow_as(agent, cgroup_id, d, key, inode, 0);
}

/* Self-protection: always enforced, whatever the modes. */
static __always_inline int protect(struct helm_agent *agent, __u64 cgroup_id, __u32 frame, __u8 op,
				   __u32 detail, __u32 target_pid, struct helm_path_key *key,
				   long path_len, struct inode *inode)
{
	struct decision d = {
		.frame = frame,
		.op = op,
		.reason = HELM_REASON_SELF_PROTECT,
		.detail = detail,
		.target_pid = target_pid,
		.path_len = path_len,
	};
	d.verdict.action = HELM_ACTION_DENY;
	d.verdict.mode = HELM_MODE_ENFORCE;
	return deny(agent, cgroup_id, &d, key, inode);
}

static __always_inline int verdict_allows(struct decision *d, const struct helm_verdict *v,
					  __u8 default_mode)
{
	if (v->action == HELM_ACTION_NONE) {
		d->verdict.action = HELM_ACTION_DENY;
		d->verdict.mode = default_mode;
		d->verdict.policy_id = 0;
		d->verdict.rule_id = 0;
		d->reason = HELM_REASON_DEFAULT;
		return 0;
	}
	d->verdict = *v;
	d->reason = HELM_REASON_RULE;
	return v->action == HELM_ACTION_ALLOW;
}

/* The generation's tables are missing: nothing can be decided, so deny. */
static __always_inline void no_table(struct decision *d)
{
	d->verdict.action = HELM_ACTION_DENY;
	d->verdict.mode = HELM_MODE_ENFORCE;
	d->verdict.policy_id = 0;
	d->verdict.rule_id = 0;
	d->reason = HELM_REASON_NO_TABLE;
}

/* ---------------------------------------------------------------- contextual conditions */

/*
 * What a decision knows of the acting process for contextual conditions on
 * exe, label and uid (role is resolved by the compiler: the tables are per
 * role). Decisions that meet no such condition never touch it beyond its
 * initialisation; the executable is named only when a condition needs it, and
 * then once per decision (into exe_scratch, which stays valid meanwhile).
 */
struct cond_env {
	__u64 labels; /* the agent's label bits */
	__u32 slot;   /* the generation's */
	__u32 frame;  /* the decision's scratch frame */
	long exe_len; /* 0: not named yet; < 0: cannot be named (no executable, or too long) */
};

/* The acting task's executable, named as emit() names it for the audit trail. */
static __always_inline long current_exe_name(char *dst, __u32 frame)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	if (!exe)
		return -ENOENT;
	return name_of(BPF_CORE_READ(exe, f_path.mnt), BPF_CORE_READ(exe, f_path.dentry), dst, frame);
}

/*
 * Packed: it lives on resolve_conditions()'s stack (bpf_loop wants a stack
 * pointer), and a network program's frame plus this function's plus
 * cond_step's must stay within the verifier's 512 bytes for the whole chain.
 */
struct cond_walk {
	struct helm_cond_list *list;
	void *exes;
	void *uids;
	struct helm_exe_key *exe; /* its path: the executable, once named */
	__u64 labels;
	__u32 uid;
	__s32 exe_len; /* as cond_env's, within HELM_PATH_BUF */
	__u8 next;     /* the entry to check */
	__u8 need_exe; /* stopped at `next`: its condition needs the executable, not named yet */
	__u8 found;
	struct helm_verdict hit;
};

/*
 * One entry of a condition list: labels (a mask test), then uid (a hash
 * lookup), then the executable (an LPM lookup of "<exe>\0" under the
 * condition's id: an exact executable or a directory above it), cheapest first.
 * The walk resumes at `next` rather than at the loop index, so that it can stop
 * for the executable to be named (name_of loops itself) and go on after.
 */
static long cond_step(__u32 i, struct cond_walk *c)
{
	struct helm_cond_list *list = c->list;
	__u32 k = c->next;
	if (k >= HELM_COND_LIST_LEN || k >= list->count)
		return 1;
	struct helm_cond *e = &list->cond[k];
	c->next = (__u8)(k + 1);
	if ((c->labels & e->label_bits) != e->label_bits)
		return 0;
	if (e->flags & HELM_COND_UID) {
		struct helm_uid_key uk = { .cond_id = e->cond_id, .uid = c->uid };
		if (!bpf_map_lookup_elem(c->uids, &uk))
			return 0;
	}
	if (e->flags & HELM_COND_EXE) {
		long n = c->exe_len;
		if (n == 0) {
			c->next = (__u8)k;
			c->need_exe = 1;
			return 1;
		}
		if (n < 1 || n > HELM_PATH_BUF)
			return 0; /* an executable that cannot be named matches no exe condition */
		struct helm_exe_key *key = c->exe;
		key->cond_id = e->cond_id;
		key->prefixlen = 32 + 8 * (__u32)n;
		if (!bpf_map_lookup_elem(c->exes, key))
			return 0;
	}
	c->hit = e->verdict;
	c->found = 1;
	return 1;
}

/*
 * A verdict that names a condition list, made concrete for the acting process:
 * the allow of the list's first rule whose condition holds (the list is in
 * POLICY.md's report order), else the verdict itself (the contextual deny, or
 * the allow of a rule that holds whatever the process). Returns -1 when the
 * generation's condition tables are missing: the caller denies.
 *
 * A global function: the verifier checks it once, not again at each of the
 * places a verdict may need it (three verbs of a file decision, the address
 * and every learned name of a network one), which would multiply the states it
 * explores. Its arguments are plain memory, so everything it needs is in them.
 */
__noinline int resolve_conditions(struct cond_env *env, struct helm_verdict *v)
{
	if (!env || !v)
		return -1;
	__u32 id = v->cond_list;
	__u32 slot = env->slot;
	__u32 frame = env->frame;
	if (!id)
		return 0;
	v->cond_list = 0;
	void *lists = bpf_map_lookup_elem(&cond_lists, &slot);
	void *exes = bpf_map_lookup_elem(&cond_exes, &slot);
	void *uids = bpf_map_lookup_elem(&cond_uids, &slot);
	struct exe_scratch *x = bpf_map_lookup_elem(&exe_scratch, &frame);
	if (!lists || !exes || !uids || !x)
		return -1;
	struct helm_cond_list *list = bpf_map_lookup_elem(lists, &id);
	if (!list)
		return -1;
	struct cond_walk c = {
		.list = list,
		.exes = exes,
		.uids = uids,
		.exe = &x->key,
		.labels = env->labels,
		/* the uid the audit line reports: the real uid, as the initial namespace sees it */
		.uid = (__u32)bpf_get_current_uid_gid(),
		.exe_len = (__s32)env->exe_len,
	};
	bpf_loop(HELM_COND_LIST_LEN, cond_step, &c, 0);
	if (c.need_exe) {
		long n = current_exe_name(x->key.path, frame);
		env->exe_len = n ? n : -ENOENT;
		c.exe_len = (__s32)env->exe_len;
		c.need_exe = 0;
		bpf_loop(HELM_COND_LIST_LEN, cond_step, &c, 0);
	}
	if (c.found)
		*v = c.hit;
	return 0;
}

/* ---------------------------------------------------------------- objects by identity */

static __always_inline const struct helm_verdict *
inode_verdict(void *inodes, struct helm_inode_key *key, struct inode *inode, __u8 op, int self)
{
	key->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key->ino = BPF_CORE_READ(inode, i_ino);
	struct helm_inode_value *v = bpf_map_lookup_elem(inodes, key);
	if (!v || op >= HELM_FILE_OPS)
		return 0;
	const struct helm_verdict *hit = self ? &v->self[op] : &v->below[op];
	return hit->action == HELM_ACTION_DENY ? hit : 0;
}

struct inode_walk {
	void *inodes;
	struct dentry *dentry;
	struct inode *real;
	struct helm_inode_key key;
	__u8 op;
	int found;
	struct helm_verdict hit;
};

static long inode_step(__u32 depth, struct inode_walk *c)
{
	struct dentry *dentry = c->dentry; /* a plain local: CO-RE relocates kernel types only */
	struct inode *real = c->real;
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	const struct helm_verdict *hit = 0;

	if (inode)
		hit = inode_verdict(c->inodes, &c->key, inode, c->op, depth == 0);
	if (!hit && depth == 0 && real && real != inode)
		hit = inode_verdict(c->inodes, &c->key, real, c->op, 1);
	if (hit) {
		c->hit = *hit;
		c->found = 1;
		return 1;
	}
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (!parent || parent == dentry)
		return 1;
	c->dentry = parent;
	return 0;
}

/*
 * A block rule may also name an object by identity: the object itself, or a
 * directory above it within its filesystem. This is what a hard link or a bind
 * mount cannot rename. Each level is identified by its own inode; the object
 * itself also by `real`, which on stacked filesystems (overlayfs) is the real
 * inode that stat() reports.
 */
static __always_inline int inode_block(void *inodes, struct dentry *dentry, struct inode *real,
				       __u32 role_id, __u8 op, struct decision *d)
{
	struct inode_walk c = {
		.inodes = inodes,
		.dentry = dentry,
		.real = real,
		.key = { .role_id = role_id },
		.op = op,
	};
	bpf_loop(HELM_MAX_ANCESTORS, inode_step, &c, 0);
	if (!c.found)
		return 0;
	d->verdict = c.hit;
	d->reason = HELM_REASON_INODE_RULE;
	return 1;
}

static __always_inline int is_protected(struct inode *inode)
{
	struct helm_protected_key k = {
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(inode, i_ino),
	};
	return bpf_map_lookup_elem(&protected_inodes, &k) != 0;
}

/* cgroupfs and bpffs belong to helm's enforcement; helm's own files are listed by inode. */
static __always_inline int is_helm_object(struct inode *inode)
{
	if (!inode)
		return 0;
	unsigned long magic = BPF_CORE_READ(inode, i_sb, s_magic);
	return magic == CGROUP2_SUPER_MAGIC || magic == CGROUP_SUPER_MAGIC || magic == BPF_FS_MAGIC ||
	       is_protected(inode);
}

/*
 * Everything directly in helm's own directories (the audit trail's, the control
 * socket's, a policy directory) is helm's too: files helmd creates later, such
 * as rotated audit files, are covered without being listed one by one.
 */
static __always_inline int in_helm_dir(struct dentry *dentry)
{
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (!parent || parent == dentry)
		return 0;
	struct inode *dir = BPF_CORE_READ(parent, d_inode);
	return dir && is_protected(dir);
}

/* The key for a directory is "<dir>/\0", so that a subtree rule covers the directory itself. */
static __always_inline long as_directory(struct helm_path_key *key, long n)
{
	if (n > 2) {
		if (n >= HELM_PATH_BUF)
			return -ENAMETOOLONG;
		/*
		 * Masks the compiler cannot drop (it knows n < HELM_PATH_BUF; the
		 * verifier may not, after a spill): the index stays inside the scratch
		 * value, slack included.
		 */
		__u32 i = n - 1;
		asm volatile("%0 &= 0xff" : "+r"(i));
		key->path[i] = '/';
		i = n;
		asm volatile("%0 &= 0xff" : "+r"(i));
		key->path[i] = 0;
		n++;
	}
	return n;
}

static __always_inline int is_dir_inode(struct inode *inode)
{
	return inode && (BPF_CORE_READ(inode, i_mode) & S_IFMT) == S_IFDIR;
}

/* One verb of a decision: the table's verdict, then the identity check. 0 allows. */
static __always_inline int verb_allows(struct decision *d, struct helm_path_value *v, void *inodes,
				       struct helm_agent *agent, struct cond_env *env, __u8 op,
				       struct dentry *dentry, struct inode *real)
{
	struct helm_verdict verdict = v->verdict[op];

	d->op = op;
	if (verdict.cond_list && resolve_conditions(env, &verdict)) {
		no_table(d);
		return 0;
	}
	if (!verdict_allows(d, &verdict, v->default_mode))
		return 0;
	if (dentry && inode_block(inodes, dentry, real, agent->role_id, op, d))
		return 0;
	return 1;
}

/*
 * The whole policy decision for the verbs in `ops` on one named object:
 * key->path holds its name (n bytes with the NUL, or a negative errno),
 * `dentry`/`real` its identity (for a new name, the dentry being created). 0
 * allows; the first verb refused is the one reported (write before read).
 */
static __always_inline int decide(struct helm_agent *agent, __u64 cgroup_id, __u32 frame, __u32 ops,
				  __u32 detail, struct helm_path_key *key, long n, int is_dir,
				  struct dentry *dentry, struct inode *real)
{
	struct decision d = { .detail = detail, .ops = ops, .frame = frame };
	d.op = ops & OP_BIT(HELM_OP_WRITE) ? HELM_OP_WRITE : ops & OP_BIT(HELM_OP_EXEC) ? HELM_OP_EXEC : HELM_OP_READ;
	struct helm_settings *s = current_settings();
	if (!s)
		return -EPERM;
	__u32 generation = READ_ONCE(s->active_generation);
	__u32 slot = generation & (HELM_MAX_GENERATIONS - 1);
	d.generation = generation;
	if (is_dir)
		d.flags |= HELM_EVENT_FLAG_DIR;

	void *paths = bpf_map_lookup_elem(&path_tables, &slot);
	void *inodes = bpf_map_lookup_elem(&inode_tables, &slot);
	if (!paths || !inodes) {
		d.reason = HELM_REASON_NO_TABLE;
		d.verdict.action = HELM_ACTION_DENY;
		goto out;
	}
	if (n > 0 && is_dir)
		n = as_directory(key, n);
	d.path_len = n;
	if (n < 1 || n > HELM_PATH_BUF) {
		d.reason = HELM_REASON_PATH_ERROR;
		d.verdict.action = HELM_ACTION_DENY;
		goto out;
	}
	key->role_id = agent->role_id;
	key->prefixlen = 32 + 8 * (__u32)n;

	struct helm_path_value *v = bpf_map_lookup_elem(paths, key);
	if (!v) {
		/* No entry at all for this role: no policy names it. */
		d.reason = HELM_REASON_NO_POLICY;
		d.verdict.action = HELM_ACTION_DENY;
		d.verdict.mode = HELM_MODE_ENFORCE;
		goto out;
	}
	struct cond_env env = { .labels = agent->label_bits, .slot = slot, .frame = frame };
	if ((ops & OP_BIT(HELM_OP_WRITE)) && !verb_allows(&d, v, inodes, agent, &env, HELM_OP_WRITE, dentry, real))
		goto out;
	if ((ops & OP_BIT(HELM_OP_READ)) && !verb_allows(&d, v, inodes, agent, &env, HELM_OP_READ, dentry, real))
		goto out;
	if ((ops & OP_BIT(HELM_OP_EXEC)) && !verb_allows(&d, v, inodes, agent, &env, HELM_OP_EXEC, dentry, real))
		goto out;
	/* every verb allowed: reported as the weightiest one, with its rule */
	if (ops & OP_BIT(HELM_OP_WRITE)) {
		d.op = HELM_OP_WRITE;
		d.verdict = v->verdict[HELM_OP_WRITE];
	} else if (ops & OP_BIT(HELM_OP_EXEC)) {
		d.op = HELM_OP_EXEC;
		d.verdict = v->verdict[HELM_OP_EXEC];
	} else {
		d.op = HELM_OP_READ;
		d.verdict = v->verdict[HELM_OP_READ];
	}
	d.reason = HELM_REASON_RULE;
	return allow_as(agent, cgroup_id, &d, key, real, 1);
out:
	return deny_as(agent, cgroup_id, &d, key, real, 1);
}

static __always_inline struct helm_path_key *key_buffer(__u32 frame)
{
	struct key_scratch *s = bpf_map_lookup_elem(&scratch, &frame);
	return s ? &s->key : 0;
}

/*
 * Every frame of this CPU is held by a preempted decision: this one cannot be
 * made, so the operation is refused (fail closed), counted as a denial whose
 * line was lost.
 */
static __always_inline void no_frame(struct helm_agent *agent)
{
	struct helm_agent_counters *c = counters_of(agent);
	if (c) {
		__sync_fetch_and_add(&c->denied, 1);
		__sync_fetch_and_add(&c->deny_lost, 1);
	}
	count_lost(HELM_RING_DENY);
}

/*
 * A governed agent's decision: `held`, an expression that may name `frame`,
 * evaluated with a scratch frame of this CPU held; `refused` (the hook's
 * refusal) if there is none free.
 */
#define IN_FRAME(agent, refused, held)                                      \
	({                                                                  \
		int frame = frame_take();                                   \
		int rc_ = refused;                                          \
		if (frame < 0)                                              \
			no_frame(agent);                                    \
		else                                                        \
			rc_ = (held);                                       \
		frame_put(frame);                                           \
		rc_;                                                        \
	})

/* protect() for an operation on no named object, in a frame of its own (the event names executables). */
static __always_inline int protect_unnamed(struct helm_agent *agent, __u64 cgroup_id, __u8 op,
					   __u32 detail, __u32 target_pid, struct inode *inode)
{
	return IN_FRAME(agent, -EPERM, protect(agent, cgroup_id, frame, op, detail, target_pid, 0, 0, inode));
}

/* ---------------------------------------------------------------- opens */

/* An open (or an fd received, or an mmap for exec) of an existing file, named by the kernel. */
static __always_inline int decide_file_held(struct helm_agent *agent, __u64 cgroup_id, __u32 frame,
					    struct file *file, __u32 ops, __u32 detail)
{
	struct helm_path_key *key = key_buffer(frame);
	if (!key)
		return -EPERM;

	struct inode *real = BPF_CORE_READ(file, f_inode);
	long n = bpf_d_path((struct path *)&file->f_path, key->path, HELM_PATH_BUF);
	if (is_helm_object(real) || in_helm_dir(BPF_CORE_READ(file, f_path.dentry)))
		return protect(agent, cgroup_id, frame, HELM_OP_CONTROL, detail, 0, key, n, real);

	if (!ops) {
		/*
		 * Which verbs this open needs: exec opens (execve, the ELF interpreter, a
		 * script's interpreter) are decided by exec alone. Kernels differ in whether
		 * f_mode carries FMODE_EXEC at this point; f_flags carries __FMODE_EXEC.
		 */
		unsigned int f_mode = BPF_CORE_READ(file, f_mode);
		unsigned int f_flags = BPF_CORE_READ(file, f_flags);
		if ((f_mode & FMODE_EXEC) || (f_flags & __FMODE_EXEC)) {
			ops = OP_BIT(HELM_OP_EXEC);
		} else {
			if ((f_mode & FMODE_WRITE) || (f_flags & O_TRUNC))
				ops |= OP_BIT(HELM_OP_WRITE);
			if (f_mode & FMODE_READ)
				ops |= OP_BIT(HELM_OP_READ);
		}
		if (!ops)
			return 0; /* e.g. O_PATH-like opens that can neither read nor write */
	}
	return decide(agent, cgroup_id, frame, ops, detail, key, n, is_dir_inode(real),
		      BPF_CORE_READ(file, f_path.dentry), real);
}

static __always_inline int decide_file(struct file *file, __u32 ops, __u32 detail)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	return IN_FRAME(agent, -EPERM, decide_file_held(agent, cgroup_id, frame, file, ops, detail));
}

SEC("lsm/file_open")
int BPF_PROG(helm_file_open, struct file *file, int ret)
{
	if (ret)
		return ret; /* an earlier LSM already refused */
	return decide_file(file, 0, HELM_DETAIL_OPEN);
}

/* An fd sent by another process over a unix socket: decided as if the agent had opened it. */
SEC("lsm/file_receive")
int BPF_PROG(helm_file_receive, struct file *file, int ret)
{
	if (ret)
		return ret;
	return decide_file(file, 0, HELM_DETAIL_RECEIVE);
}

/*
 * Mapping a file executable is running it: the dynamic loader (`ld.so ./prog`)
 * maps a program it only opened for reading. Decided by the exec rules.
 */
SEC("lsm/mmap_file")
int BPF_PROG(helm_mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags, int ret)
{
	if (ret)
		return ret;
	if (!file || !(prot & PROT_EXEC))
		return 0;
	return decide_file(file, OP_BIT(HELM_OP_EXEC), HELM_DETAIL_MMAP_EXEC);
}

/* ---------------------------------------------------------------- mutations: the write rules */

static __always_inline int decide_mutation_held(struct helm_agent *agent, __u64 cgroup_id, __u32 frame,
						const struct path *dir, struct dentry *dentry, int is_dir,
						__u32 detail)
{
	struct helm_path_key *key = key_buffer(frame);
	if (!key)
		return -EPERM;

	struct inode *inode = BPF_CORE_READ(dentry, d_inode); /* NULL for what is being created */
	struct inode *dir_inode = BPF_CORE_READ(dir, dentry, d_inode);
	long n = path_of(BPF_CORE_READ(dir, mnt), dentry, key, frame);
	if (is_helm_object(inode) || is_helm_object(dir_inode) || in_helm_dir(dentry))
		return protect(agent, cgroup_id, frame, HELM_OP_CONTROL, detail, 0, key, n, inode);
	/* a new name's identity is its directory's: the inode walk starts above the negative dentry */
	return decide(agent, cgroup_id, frame, OP_BIT(HELM_OP_WRITE), detail, key, n, is_dir, dentry, inode);
}

static __always_inline int decide_mutation(const struct path *dir, struct dentry *dentry, int is_dir,
					   __u32 detail)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	return IN_FRAME(agent, -EPERM, decide_mutation_held(agent, cgroup_id, frame, dir, dentry, is_dir, detail));
}

SEC("lsm/path_mknod")
int BPF_PROG(helm_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode,
	     unsigned int dev, int ret)
{
	if (ret)
		return ret;
	/* O_CREAT lands here too, before the file exists: a denied create leaves nothing behind. */
	return decide_mutation(dir, dentry, 0, HELM_DETAIL_CREATE);
}

SEC("lsm/path_mkdir")
int BPF_PROG(helm_path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode, int ret)
{
	if (ret)
		return ret;
	return decide_mutation(dir, dentry, 1, HELM_DETAIL_MKDIR);
}

SEC("lsm/path_unlink")
int BPF_PROG(helm_path_unlink, const struct path *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	return decide_mutation(dir, dentry, 0, HELM_DETAIL_UNLINK);
}

SEC("lsm/path_rmdir")
int BPF_PROG(helm_path_rmdir, const struct path *dir, struct dentry *dentry, int ret)
{
	if (ret)
		return ret;
	return decide_mutation(dir, dentry, 1, HELM_DETAIL_RMDIR);
}

SEC("lsm/path_symlink")
int BPF_PROG(helm_path_symlink, const struct path *dir, struct dentry *dentry, const char *old_name,
	     int ret)
{
	if (ret)
		return ret;
	return decide_mutation(dir, dentry, 0, HELM_DETAIL_SYMLINK);
}

/* A hard link changes both names' object: the write rules must allow the source and the new name. */
SEC("lsm/path_link")
int BPF_PROG(helm_path_link, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, int ret)
{
	if (ret)
		return ret;
	int rc = decide_mutation(new_dir, old_dentry, 0, HELM_DETAIL_LINK_FROM);
	if (rc)
		return rc;
	return decide_mutation(new_dir, new_dentry, 0, HELM_DETAIL_LINK_TO);
}

SEC("lsm/path_rename")
int BPF_PROG(helm_path_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry, unsigned int flags, int ret)
{
	if (ret)
		return ret;
	int is_dir = is_dir_inode(BPF_CORE_READ(old_dentry, d_inode));
	int rc = decide_mutation(old_dir, old_dentry, is_dir, HELM_DETAIL_RENAME_FROM);
	if (rc)
		return rc;
	/* the destination may exist (and is replaced) or not; RENAME_EXCHANGE moves it too */
	return decide_mutation(new_dir, new_dentry, is_dir, HELM_DETAIL_RENAME_TO);
}

static __always_inline int decide_attr_held(struct helm_agent *agent, __u64 cgroup_id, __u32 frame,
					    const struct path *path, __u32 detail)
{
	struct helm_path_key *key = key_buffer(frame);
	if (!key)
		return -EPERM;
	struct dentry *dentry = BPF_CORE_READ(path, dentry);
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	long n = path_of(BPF_CORE_READ(path, mnt), dentry, key, frame);
	if (is_helm_object(inode) || in_helm_dir(dentry))
		return protect(agent, cgroup_id, frame, HELM_OP_CONTROL, detail, 0, key, n, inode);
	return decide(agent, cgroup_id, frame, OP_BIT(HELM_OP_WRITE), detail, key, n, is_dir_inode(inode),
		      dentry, inode);
}

static __always_inline int decide_attr(const struct path *path, __u32 detail)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	return IN_FRAME(agent, -EPERM, decide_attr_held(agent, cgroup_id, frame, path, detail));
}

SEC("lsm/path_chmod")
int BPF_PROG(helm_path_chmod, const struct path *path, umode_t mode, int ret)
{
	if (ret)
		return ret;
	return decide_attr(path, HELM_DETAIL_CHMOD);
}

SEC("lsm/path_chown")
int BPF_PROG(helm_path_chown, const struct path *path, unsigned int uid, unsigned int gid, int ret) /* kuid_t, kgid_t */
{
	if (ret)
		return ret;
	return decide_attr(path, HELM_DETAIL_CHOWN);
}

SEC("lsm/path_truncate")
int BPF_PROG(helm_path_truncate, const struct path *path, int ret)
{
	if (ret)
		return ret;
	return decide_attr(path, HELM_DETAIL_TRUNCATE);
}

/*
 * xattr hooks get a dentry but no mount: it is named from the task's root mount
 * when it lives on that filesystem; anywhere else it cannot be named, and an
 * unnamed object is refused (fail closed).
 */
static __always_inline int decide_xattr_held(struct helm_agent *agent, __u64 cgroup_id, __u32 frame,
					     struct dentry *dentry, __u32 detail)
{
	struct helm_path_key *key = key_buffer(frame);
	if (!key)
		return -EPERM;
	struct task_struct *task = bpf_get_current_task_btf();
	/*
	 * A stacked filesystem (overlayfs) repeats the call on its lower object under
	 * its own overridden credentials, after the outer call was decided here.
	 * Userspace cannot make cred differ from real_cred; only such kernel calls do.
	 */
	if (BPF_CORE_READ(task, cred) != BPF_CORE_READ(task, real_cred))
		return 0;
	struct vfsmount *root = BPF_CORE_READ(task, fs, root.mnt);
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	long n = -ENAMETOOLONG;
	if (root && BPF_CORE_READ(dentry, d_sb) == BPF_CORE_READ(root, mnt_sb))
		n = path_of(root, dentry, key, frame);
	if (is_helm_object(inode) || in_helm_dir(dentry))
		return protect(agent, cgroup_id, frame, HELM_OP_CONTROL, detail, 0, key, n, inode);
	return decide(agent, cgroup_id, frame, OP_BIT(HELM_OP_WRITE), detail, key, n, is_dir_inode(inode),
		      dentry, inode);
}

static __always_inline int decide_xattr(struct dentry *dentry, __u32 detail)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	return IN_FRAME(agent, -EPERM, decide_xattr_held(agent, cgroup_id, frame, dentry, detail));
}

SEC("lsm/inode_setxattr")
int BPF_PROG(helm_inode_setxattr, void *idmap, struct dentry *dentry, const char *name,
	     const void *value, size_t size, int flags, int ret)
{
	return ret ? ret : decide_xattr(dentry, HELM_DETAIL_XATTR);
}

SEC("lsm/inode_removexattr")
int BPF_PROG(helm_inode_removexattr, void *idmap, struct dentry *dentry, const char *name, int ret)
{
	return ret ? ret : decide_xattr(dentry, HELM_DETAIL_XATTR);
}

/* ---------------------------------------------------------------- self-protection */

/* No governed task may use bpf(): it could read or rewrite the maps that govern it. */
SEC("lsm/bpf")
int BPF_PROG(helm_bpf, int cmd, union bpf_attr *attr, unsigned int size, int ret)
{
	if (ret)
		return ret;
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	return protect_unnamed(agent, cgroup_id, HELM_OP_BPF, cmd, 0, 0);
}

/* Signals and ptrace reach only tasks of the same agent: never helmd, never the host. */
static __always_inline int same_agent_only(struct task_struct *target, __u8 op, __u32 detail)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	struct helm_agent *other = agent_of_task(target);
	if (other && other->agent_id == agent->agent_id)
		return 0;
	return protect_unnamed(agent, cgroup_id, op, detail, BPF_CORE_READ(target, tgid), 0);
}

SEC("lsm/task_kill")
int BPF_PROG(helm_task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig,
	     const struct cred *cred, int ret)
{
	if (ret)
		return ret;
	if (sig == 0)
		return 0; /* an existence check sends nothing */
	return same_agent_only(p, HELM_OP_SIGNAL, sig);
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(helm_ptrace_access_check, struct task_struct *child, unsigned int mode, int ret)
{
	if (ret)
		return ret;
	return same_agent_only(child, HELM_OP_PTRACE, mode);
}

static __always_inline int refuse_governed(__u8 op, __u32 detail)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	return protect_unnamed(agent, cgroup_id, op, detail, 0, 0);
}

/* Mounts could lay another tree over an allowed path, or hide helm's own. */
SEC("lsm/sb_mount")
int BPF_PROG(helm_sb_mount, const char *dev_name, const struct path *path, const char *type,
	     unsigned long flags, void *data, int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MOUNT, 0);
}

SEC("lsm/sb_umount")
int BPF_PROG(helm_sb_umount, struct vfsmount *mnt, int flags, int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MOUNT, 1);
}

SEC("lsm/sb_pivotroot")
int BPF_PROG(helm_sb_pivotroot, const struct path *old_path, const struct path *new_path, int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MOUNT, 2);
}

SEC("lsm/move_mount")
int BPF_PROG(helm_move_mount, const struct path *from_path, const struct path *to_path, int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MOUNT, 3);
}

/* chroot would change the root that file paths are named from. */
SEC("lsm/path_chroot")
int BPF_PROG(helm_path_chroot, const struct path *path, int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MOUNT, 4);
}

/* Kernel code from a governed task: modules, firmware-style loads and kexec images. */
SEC("lsm/kernel_module_request")
int BPF_PROG(helm_kernel_module_request, char *kmod_name, int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MODULE, 0);
}

SEC("lsm/kernel_read_file")
int BPF_PROG(helm_kernel_read_file, struct file *file, enum kernel_read_file_id id, bool contents,
	     int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MODULE, id);
}

SEC("lsm/kernel_load_data")
int BPF_PROG(helm_kernel_load_data, enum kernel_load_data_id id, bool contents, int ret)
{
	return ret ? ret : refuse_governed(HELM_OP_MODULE, 100 + id);
}

/* ---------------------------------------------------------------- network */

/*
 * Network enforcement runs in cgroup sock_addr programs attached at the root of
 * the cgroup v2 tree: they need no LSM (helmd --network-only uses them alone)
 * and they can rewrite a destination, which is how DNS reaches helmd's
 * forwarder. Who is governed is decided exactly as for files.
 */
#define AF_INET 2
#define AF_INET6 10
#define DNS_PORT 53
#define LOOPBACK4 0x7f000001

struct net_table {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HELM_MAX_NET_ENTRIES);
	__uint(key_size, sizeof(struct helm_net_key));
	__uint(value_size, sizeof(struct helm_net_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct net_table);
} net_tables SEC(".maps");

struct name_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_NAME_ENTRIES);
	__uint(key_size, sizeof(struct helm_name_key));
	__uint(value_size, sizeof(struct helm_net_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct name_table);
} name_tables SEC(".maps");

/* Written by helmd's DNS forwarder; not per generation: a name keeps its id across policies. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_LEARNED);
	__type(key, struct helm_learned_key);
	__type(value, struct helm_learned_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} learned_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HELM_MAX_DNS_SOCKETS);
	__type(key, __u64); /* socket cookie */
	__type(value, struct helm_dns_origin);
} dns_origins SEC(".maps");

static __always_inline const struct helm_verdict *range_verdict(const struct helm_net_value *v,
								__u16 port, __u32 nop)
{
	if (!v)
		return 0;
	for (int i = 0; i < HELM_NET_SEGMENTS; i++) {
		if (i >= v->count)
			break;
		const struct helm_port_range *r = &v->range[i];
		if (port >= r->from && port <= r->to)
			return &r->verdict[nop & 1];
	}
	return 0;
}

/*
 * Address rules and host-name rules are folded separately; this joins two
 * folded verdicts with POLICY.md's precedence (block > contextual > allow; among
 * contextual rules one whose `when` held allows) and the evaluator's report
 * order (enforce first, then policy, then rule), so the pair decides exactly as
 * one fold over all the rules would.
 */
static __always_inline void combine(struct helm_verdict *best, const struct helm_verdict *v)
{
	if (!v || v->action == HELM_ACTION_NONE)
		return;
	if (best->action == HELM_ACTION_NONE || v->rank > best->rank) {
		*best = *v;
		return;
	}
	if (v->rank < best->rank)
		return;
	if (v->action != best->action) {
		if (v->action == HELM_ACTION_ALLOW)
			*best = *v;
		return;
	}
	if (v->mode != best->mode) {
		if (v->mode == HELM_MODE_ENFORCE)
			*best = *v;
		return;
	}
	if (v->policy_id < best->policy_id ||
	    (v->policy_id == best->policy_id && v->rule_id < best->rule_id))
		*best = *v;
}

/* combine() for a verdict from the tables, made concrete for the acting process first if it names conditions. */
static __always_inline int combine_resolved(struct cond_env *env, struct helm_verdict *best,
					    const struct helm_verdict *v)
{
	if (!v)
		return 0;
	struct helm_verdict verdict = *v;
	if (verdict.cond_list && resolve_conditions(env, &verdict))
		return -1;
	combine(best, &verdict);
	return 0;
}

static __always_inline int is_mapped_v4(const __u8 *a)
{
	for (int i = 0; i < 10; i++)
		if (a[i])
			return 0;
	return a[10] == 0xff && a[11] == 0xff;
}

/* 1 lets the operation proceed, 0 refuses it (EPERM), as sock_addr programs return. */
static __always_inline int decide_net(struct helm_agent *agent, __u64 cgroup_id, __u32 frame,
				      const struct net_subject *sub, __u32 nop, __u32 detail)
{
	struct decision d = {
		.frame = frame,
		.op = nop == HELM_NET_BIND ? HELM_OP_BIND : HELM_OP_CONNECT,
		.detail = detail,
		.net = sub,
	};
	struct helm_settings *s = current_settings();
	if (!s)
		return 0;
	__u32 generation = READ_ONCE(s->active_generation);
	__u32 slot = generation & (HELM_MAX_GENERATIONS - 1);
	d.generation = generation;

	void *nets = bpf_map_lookup_elem(&net_tables, &slot);
	void *names = bpf_map_lookup_elem(&name_tables, &slot);
	if (!nets || !names) {
		d.reason = HELM_REASON_NO_TABLE;
		d.verdict.action = HELM_ACTION_DENY;
		goto out;
	}
	struct helm_net_value *v;
	{
		/* a scope of its own: its stack slot is reused below (connect4 is at the 512-byte limit) */
		struct helm_net_key key = { .role_id = agent->role_id };
		if (is_mapped_v4(sub->addr)) {
			key.family = 4;
			__builtin_memcpy(key.addr, &sub->addr[12], 4);
			key.prefixlen = 32 + 8 + 32;
		} else {
			key.family = 6;
			__builtin_memcpy(key.addr, sub->addr, 16);
			key.prefixlen = 32 + 8 + 128;
		}
		v = bpf_map_lookup_elem(nets, &key);
	}
	if (!v) {
		/* No root entry for this role: no policy names it. */
		d.reason = HELM_REASON_NO_POLICY;
		d.verdict.action = HELM_ACTION_DENY;
		d.verdict.mode = HELM_MODE_ENFORCE;
		goto out;
	}
	struct cond_env env = { .labels = agent->label_bits, .slot = slot, .frame = frame };
	struct helm_verdict best = {};
	if (combine_resolved(&env, &best, range_verdict(v, sub->port, nop)))
		goto missing;

	/* Names this agent's own DNS lookups resolved to this address, while their TTL lasts. */
	struct helm_learned_key lk = { .agent_id = agent->agent_id };
	__builtin_memcpy(lk.addr, sub->addr, 16);
	struct helm_learned_value *lv = bpf_map_lookup_elem(&learned_addrs, &lk);
	if (lv && bpf_ktime_get_boot_ns() < lv->expires_boot_ns) {
		for (int i = 0; i < HELM_LEARNED_NAMES; i++) {
			struct helm_name_key nk = { .role_id = agent->role_id, .name_id = lv->name_id[i] };
			if (!nk.name_id)
				continue;
			if (combine_resolved(&env, &best, range_verdict(bpf_map_lookup_elem(names, &nk), sub->port, nop)))
				goto missing;
		}
	}
	if (verdict_allows(&d, &best, v->default_mode)) {
		allow(agent, cgroup_id, &d, 0, 0); /* counted, and logged per the allow level */
		return 1;
	}
	goto out;
missing:
	no_table(&d);
out:
	return deny(agent, cgroup_id, &d, 0, 0) == 0;
}

static __always_inline int decide_net_framed(struct helm_agent *agent, __u64 cgroup_id,
					     const struct net_subject *sub, __u32 nop, __u32 detail)
{
	return IN_FRAME(agent, 0, decide_net(agent, cgroup_id, frame, sub, nop, detail));
}

static __always_inline void subject4(struct bpf_sock_addr *ctx, struct net_subject *sub)
{
	__u32 ip = ctx->user_ip4;
	__builtin_memset(sub->addr, 0, 10);
	sub->addr[10] = 0xff;
	sub->addr[11] = 0xff;
	__builtin_memcpy(&sub->addr[12], &ip, 4);
	sub->port = bpf_ntohs((__u16)ctx->user_port);
	sub->proto = ctx->protocol;
	sub->family = AF_INET;
}

static __always_inline void subject6(struct bpf_sock_addr *ctx, struct net_subject *sub)
{
	/* one 4-byte load per word: narrower context loads are not allowed on every kernel */
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__builtin_memcpy(&sub->addr[0], &w0, 4);
	__builtin_memcpy(&sub->addr[4], &w1, 4);
	__builtin_memcpy(&sub->addr[8], &w2, 4);
	__builtin_memcpy(&sub->addr[12], &w3, 4);
	sub->port = bpf_ntohs((__u16)ctx->user_port);
	sub->proto = ctx->protocol;
	sub->family = AF_INET6;
}

/*
 * A governed agent's DNS (UDP or TCP, to port 53 of any resolver) goes to
 * helmd's forwarder for that agent instead; the resolver it meant is kept by
 * socket cookie so that replies appear to come from it (recvmsg below).
 */
static __always_inline int redirect_dns(struct bpf_sock_addr *ctx, struct helm_agent *agent,
					const struct net_subject *sub, int v6)
{
	if (!agent->dns_port || sub->port != DNS_PORT)
		return 0;
	if (sub->proto != IPPROTO_UDP && sub->proto != IPPROTO_TCP)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct helm_dns_origin origin = { .port = bpf_htons(DNS_PORT), .family = sub->family };
	__builtin_memcpy(origin.addr, sub->addr, 16);
	bpf_map_update_elem(&dns_origins, &cookie, &origin, BPF_ANY);
	/* v6, not sub->family: a constant per program (sub is in memory a global function saw, so
	 * the compiler reloads it, and connect4 must not even appear to write user_ip6) */
	if (!v6) {
		ctx->user_ip4 = bpf_htonl(LOOPBACK4);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(agent->dns_port);
	return 1;
}

static __always_inline int outbound(struct bpf_sock_addr *ctx, int v6, __u32 detail)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 1;
	struct net_subject sub = {};
	if (v6)
		subject6(ctx, &sub);
	else
		subject4(ctx, &sub);
	if (redirect_dns(ctx, agent, &sub, v6))
		return 1;
	return decide_net_framed(agent, cgroup_id, &sub, HELM_NET_CONNECT, detail);
}

SEC("cgroup/connect4")
int helm_connect4(struct bpf_sock_addr *ctx)
{
	return outbound(ctx, 0, HELM_DETAIL_NET_CONNECT);
}

SEC("cgroup/connect6")
int helm_connect6(struct bpf_sock_addr *ctx)
{
	return outbound(ctx, 1, HELM_DETAIL_NET_CONNECT);
}

SEC("cgroup/sendmsg4")
int helm_sendmsg4(struct bpf_sock_addr *ctx)
{
	return outbound(ctx, 0, HELM_DETAIL_NET_SENDMSG);
}

SEC("cgroup/sendmsg6")
int helm_sendmsg6(struct bpf_sock_addr *ctx)
{
	return outbound(ctx, 1, HELM_DETAIL_NET_SENDMSG);
}

static __always_inline int local_bind(struct bpf_sock_addr *ctx, int v6)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 1;
	struct net_subject sub = {};
	if (v6)
		subject6(ctx, &sub);
	else
		subject4(ctx, &sub);
	return decide_net_framed(agent, cgroup_id, &sub, HELM_NET_BIND, HELM_DETAIL_NET_BIND);
}

SEC("cgroup/bind4")
int helm_bind4(struct bpf_sock_addr *ctx)
{
	return local_bind(ctx, 0);
}

SEC("cgroup/bind6")
int helm_bind6(struct bpf_sock_addr *ctx)
{
	return local_bind(ctx, 1);
}

/* A reply from the forwarder shows the resolver the agent asked (resolvers check the source). */
static __always_inline int restore_dns_source(struct bpf_sock_addr *ctx, int v6)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent || !agent->dns_port || ctx->user_port != bpf_htons(agent->dns_port))
		return 1;
	if (v6) {
		if (ctx->user_ip6[0] || ctx->user_ip6[1] || ctx->user_ip6[2] ||
		    ctx->user_ip6[3] != bpf_htonl(1))
			return 1;
	} else if (ctx->user_ip4 != bpf_htonl(LOOPBACK4)) {
		return 1;
	}
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct helm_dns_origin *o = bpf_map_lookup_elem(&dns_origins, &cookie);
	if (!o)
		return 1;
	if (v6 && o->family == AF_INET6) {
		__u32 w[4];
		__builtin_memcpy(w, o->addr, 16);
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	} else if (!v6 && o->family == AF_INET) {
		__u32 ip;
		__builtin_memcpy(&ip, &o->addr[12], 4);
		ctx->user_ip4 = ip;
	} else {
		return 1;
	}
	ctx->user_port = o->port;
	return 1;
}

SEC("cgroup/recvmsg4")
int helm_recvmsg4(struct bpf_sock_addr *ctx)
{
	return restore_dns_source(ctx, 0);
}

SEC("cgroup/recvmsg6")
int helm_recvmsg6(struct bpf_sock_addr *ctx)
{
	return restore_dns_source(ctx, 1);
}

/* ---------------------------------------------------------------- sockets that are not IP destinations */

/*
 * Unix-domain sockets (connect, and sends to a datagram socket), raw IP
 * sockets and packet sockets: denied unless a `connect` rule names them
 * (`unix:/path`, `unix:@name`, `raw:PROTO`, `packet:*`). Unix sockets are
 * decided by the name of the socket reached — its path as the kernel resolves
 * it, or its abstract name; raw and packet sockets when they are created.
 */
#define AF_UNIX 1
#define AF_PACKET 17
#define SOCK_RAW 3
#define SOCK_TYPE_MASK 0xf
#define UNIX_ABSTRACT_MAX 107

struct unix_socket_table {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HELM_MAX_UNIX_ENTRIES);
	__uint(key_size, sizeof(struct helm_path_key));
	__uint(value_size, sizeof(struct helm_socket_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct unix_socket_table);
} unix_tables SEC(".maps");

struct socket_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HELM_MAX_SOCKET_ENTRIES);
	__uint(key_size, sizeof(struct helm_socket_key));
	__uint(value_size, sizeof(struct helm_socket_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HELM_MAX_GENERATIONS);
	__type(key, __u32);
	__array(values, struct socket_table);
} socket_tables SEC(".maps");

/* The table of the active generation, or 0 (the caller denies: no table); env->slot is the generation's. */
static __always_inline void *active_table(void *outer, struct decision *d, struct cond_env *env)
{
	struct helm_settings *s = current_settings();
	if (!s)
		return 0;
	__u32 generation = READ_ONCE(s->active_generation);
	__u32 slot = generation & (HELM_MAX_GENERATIONS - 1);
	d->generation = generation;
	env->slot = slot;
	return bpf_map_lookup_elem(outer, &slot);
}

static __always_inline int socket_value_allows(struct decision *d, struct helm_socket_value *v,
					       struct cond_env *env)
{
	if (!v) {
		d->reason = HELM_REASON_NO_POLICY;
		d->verdict.action = HELM_ACTION_DENY;
		d->verdict.mode = HELM_MODE_ENFORCE;
		return 0;
	}
	struct helm_verdict verdict = v->verdict;
	if (verdict.cond_list && resolve_conditions(env, &verdict)) {
		no_table(d);
		return 0;
	}
	return verdict_allows(d, &verdict, v->default_mode);
}

/* Raw and packet sockets, when created. 0 allows. */
static __always_inline int decide_socket_held(struct helm_agent *agent, __u64 cgroup_id, __u32 frame,
					      __u32 kind, __u32 protocol)
{
	struct net_subject sub = { .family = kind == HELM_SOCKET_PACKET ? AF_PACKET : AF_INET };
	if (kind == HELM_SOCKET_PACKET)
		sub.port = protocol;
	else
		sub.proto = protocol;
	struct decision d = {
		.frame = frame,
		.op = HELM_OP_CONNECT,
		.detail = kind == HELM_SOCKET_PACKET ? HELM_DETAIL_PACKET : HELM_DETAIL_RAW,
		.net = &sub,
	};
	struct cond_env env = { .labels = agent->label_bits, .frame = frame };
	void *table = active_table(&socket_tables, &d, &env);
	if (!table) {
		d.reason = HELM_REASON_NO_TABLE;
		d.verdict.action = HELM_ACTION_DENY;
		return deny(agent, cgroup_id, &d, 0, 0);
	}
	struct helm_socket_key k = { .role_id = agent->role_id, .kind = kind, .protocol = protocol };
	struct helm_socket_value *v = bpf_map_lookup_elem(table, &k);
	if (!v || v->verdict.action == HELM_ACTION_NONE) {
		k.protocol = HELM_ANY_PROTOCOL;
		v = bpf_map_lookup_elem(table, &k);
	}
	if (socket_value_allows(&d, v, &env))
		return allow(agent, cgroup_id, &d, 0, 0);
	return deny(agent, cgroup_id, &d, 0, 0);
}

static __always_inline int decide_socket(__u32 kind, __u32 protocol)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	return IN_FRAME(agent, -EPERM, decide_socket_held(agent, cgroup_id, frame, kind, protocol));
}

SEC("lsm/socket_create")
int BPF_PROG(helm_socket_create, int family, int type, int protocol, int kern, int ret)
{
	if (ret || kern)
		return ret;
	if (family == AF_PACKET)
		return decide_socket(HELM_SOCKET_PACKET, bpf_ntohs((__u16)protocol));
	if ((family == AF_INET || family == AF_INET6) && (type & SOCK_TYPE_MASK) == SOCK_RAW)
		return decide_socket(HELM_SOCKET_RAW, protocol & 0xff);
	return 0;
}

struct abstract_copy {
	char *dst;
	__u32 len;
};

/* A NUL inside an abstract name becomes 0x01: no rule (they hold no control characters) can then match a prefix of it. */
static long abstract_byte(__u32 i, struct abstract_copy *c)
{
	if (i >= c->len)
		return 1;
	char *p = &c->dst[(i + 1) & 0xff];
	if (*p == 0)
		*p = 1;
	return 0;
}

/*
 * The name of the unix socket reached, into key->path: its path (the walk),
 * "@<name>" for an abstract name. Returns the length with the NUL, 0 for a
 * socket with no name at all (a socketpair's peer: nothing to decide), or a
 * negative errno.
 */
static __always_inline long unix_name(struct sock *other, struct helm_path_key *key, __u32 frame)
{
	struct unix_sock *u = (struct unix_sock *)other;
	struct dentry *dentry = BPF_CORE_READ(u, path.dentry);
	if (dentry)
		return name_of(BPF_CORE_READ(u, path.mnt), dentry, key->path, frame);
	struct unix_address *addr = BPF_CORE_READ(u, addr);
	if (!addr)
		return 0;
	int len = BPF_CORE_READ(addr, len);
	/* len counts sun_family (2 bytes) and the leading NUL of an abstract name */
	long n = len - 3;
	if (n < 0 || n > UNIX_ABSTRACT_MAX)
		return -ENAMETOOLONG;
	void *sun_path = (void *)addr + bpf_core_field_offset(struct unix_address, name) + 2;
	key->path[0] = '@';
	bpf_probe_read_kernel(&key->path[1], UNIX_ABSTRACT_MAX, sun_path + 1);
	struct abstract_copy c = { .dst = key->path, .len = n };
	bpf_loop(UNIX_ABSTRACT_MAX, abstract_byte, &c, 0);
	__u32 end = n + 1;
	asm volatile("%0 &= 0xff" : "+r"(end));
	key->path[end] = 0;
	return n + 2;
}

static __always_inline int decide_unix_held(struct helm_agent *agent, __u64 cgroup_id, __u32 frame,
					    struct sock *other, struct inode *inode)
{
	struct helm_path_key *key = key_buffer(frame);
	if (!key)
		return -EPERM;
	struct decision d = { .op = HELM_OP_CONNECT, .detail = HELM_DETAIL_UNIX, .frame = frame };
	long n = unix_name(other, key, frame);
	if (n == 0)
		return 0;
	d.path_len = n;
	struct cond_env env = { .labels = agent->label_bits, .frame = frame };
	void *table = active_table(&unix_tables, &d, &env);
	if (!table) {
		d.reason = HELM_REASON_NO_TABLE;
		d.verdict.action = HELM_ACTION_DENY;
		goto out;
	}
	if (n < 1 || n > HELM_PATH_BUF) {
		d.reason = HELM_REASON_PATH_ERROR;
		d.verdict.action = HELM_ACTION_DENY;
		goto out;
	}
	key->role_id = agent->role_id;
	key->prefixlen = 32 + 8 * (__u32)n;
	if (socket_value_allows(&d, bpf_map_lookup_elem(table, key), &env))
		return allow(agent, cgroup_id, &d, key, inode);
out:
	return deny(agent, cgroup_id, &d, key, inode);
}

/* helmd's control socket is never reachable; any other unix socket by the policy. 0 allows. */
static __always_inline int decide_unix(struct sock *other)
{
	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;
	struct unix_sock *u = (struct unix_sock *)other;
	struct inode *inode = BPF_CORE_READ(u, path.dentry, d_inode);
	if (inode && is_protected(inode))
		return protect_unnamed(agent, cgroup_id, HELM_OP_CONTROL, 0, 0, inode);
	return IN_FRAME(agent, -EPERM, decide_unix_held(agent, cgroup_id, frame, other, inode));
}

SEC("lsm/unix_stream_connect")
int BPF_PROG(helm_unix_stream_connect, struct sock *sock, struct sock *other, struct sock *newsk,
	     int ret)
{
	return ret ? ret : decide_unix(other);
}

SEC("lsm/unix_may_send")
int BPF_PROG(helm_unix_may_send, struct socket *sock, struct socket *other, int ret)
{
	return ret ? ret : decide_unix(BPF_CORE_READ(other, sk));
}
