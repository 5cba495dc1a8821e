// SPDX-License-Identifier: GPL-2.0
/*
 * File enforcement for governed agents: every file open by a task whose cgroup
 * (or an ancestor) is attached is decided here, on the path the kernel resolved,
 * deny by default. The policy lives in maps; this file only looks it up.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "helm.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define S_IFMT 00170000
#define S_IFDIR 0040000
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define FMODE_EXEC 0x20
#define O_TRUNC 00001000
#define __FMODE_EXEC 0x20 /* in f_flags: the kernel opened the file to execute it */
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

/* Decisions for the audit trail. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HELM_EVENTS_BYTES);
} events SEC(".maps");

/* Events that did not fit in the ring buffer; helmd reports every change. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

/* The lookup key is too large for the BPF stack next to everything else. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct helm_path_key);
} scratch SEC(".maps");

/* Deepest attached cgroup among the current task's cgroup and its ancestors. */
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

struct decision {
	struct helm_verdict verdict;
	__u8 op;
	__u8 reason;
	__u32 generation;
};

static __always_inline void verdict_for(struct decision *d, const struct helm_verdict *v,
					__u8 default_mode)
{
	if (v->action == HELM_ACTION_NONE) {
		d->verdict.action = HELM_ACTION_DENY;
		d->verdict.mode = default_mode;
		d->verdict.policy_id = 0;
		d->verdict.rule_id = 0;
		d->reason = HELM_REASON_DEFAULT;
	} else {
		d->verdict = *v;
		d->reason = HELM_REASON_RULE;
	}
}

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

/*
 * A block rule may also name an object by identity: the file itself, or a
 * directory above it within its filesystem. This is what a hard link or a bind
 * mount cannot rename. Each level is identified by its own inode; the file
 * itself also by f_inode, which on stacked filesystems (overlayfs) is the real
 * inode that stat() reports.
 */
static __always_inline int inode_block(void *inodes, struct file *file, __u32 role_id,
				       __u8 op, struct decision *d)
{
	struct helm_inode_key key = { .role_id = role_id };
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct inode *real = BPF_CORE_READ(file, f_inode);
	const struct helm_verdict *hit = 0;

	for (int depth = 0; depth < HELM_MAX_ANCESTORS && !hit; depth++) {
		struct inode *inode = BPF_CORE_READ(dentry, d_inode);
		if (inode)
			hit = inode_verdict(inodes, &key, inode, op, depth == 0);
		if (!hit && depth == 0 && real && real != inode)
			hit = inode_verdict(inodes, &key, real, op, 1);
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		if (!parent || parent == dentry)
			break;
		dentry = parent;
	}
	if (!hit)
		return 0;
	d->verdict = *hit;
	d->reason = HELM_REASON_INODE_RULE;
	return 1;
}

static __always_inline void emit(struct file *file, struct helm_agent *agent, __u64 cgroup_id,
				 struct decision *d, struct helm_path_key *key, long path_len,
				 __u32 flags)
{
	struct helm_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = cgroup_id;
	e->agent_id = agent->agent_id;
	e->ino = BPF_CORE_READ(file, f_inode, i_ino);
	e->dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
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
	e->decision = d->verdict.mode == HELM_MODE_ENFORCE ? HELM_DECISION_DENY
							   : HELM_DECISION_WOULD_DENY;
	e->mode = d->verdict.mode;
	e->reason = d->reason;
	e->flags = flags;
	e->path_len = path_len;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (path_len > 0)
		__builtin_memcpy(e->path, key->path, sizeof(e->path));
	else
		e->path[0] = 0;
	/*
	 * Resolved now: by the time helmd reads the event the process may be gone.
	 * Walked as BTF pointers (not probe-read) so that bpf_d_path accepts the path.
	 */
	struct mm_struct *mm = task->mm;
	struct file *exe = mm ? mm->exe_file : 0;
	e->exe_len = -2; /* ENOENT: a task without an executable */
	e->exe[0] = 0;
	if (exe)
		e->exe_len = bpf_d_path((struct path *)&exe->f_path, e->exe, sizeof(e->exe));
	bpf_ringbuf_submit(e, 0);
}

SEC("lsm/file_open")
int BPF_PROG(helm_file_open, struct file *file, int ret)
{
	if (ret)
		return ret; /* an earlier LSM already refused */

	__u64 cgroup_id = 0;
	struct helm_agent *agent = governing_agent(&cgroup_id);
	if (!agent)
		return 0;

	__u32 zero = 0;
	struct helm_settings *s = bpf_map_lookup_elem(&settings, &zero);
	struct helm_path_key *key = bpf_map_lookup_elem(&scratch, &zero);
	if (!s || !key)
		return -EPERM;

	struct decision d = {};
	__u32 generation = READ_ONCE(s->active_generation);
	__u32 slot = generation & (HELM_MAX_GENERATIONS - 1);
	__u32 mode_flags = READ_ONCE(s->flags);
	d.generation = generation;

	/*
	 * Which verbs this open needs: exec opens (execve, the ELF interpreter, a
	 * script's interpreter) are decided by exec alone. Kernels differ in whether
	 * f_mode carries FMODE_EXEC at this point; f_flags carries __FMODE_EXEC.
	 */
	unsigned int f_mode = BPF_CORE_READ(file, f_mode);
	unsigned int f_flags = BPF_CORE_READ(file, f_flags);
	__u8 is_exec = (f_mode & FMODE_EXEC) || (f_flags & __FMODE_EXEC);
	__u8 needs_write = !is_exec && ((f_mode & FMODE_WRITE) || (f_flags & O_TRUNC));
	__u8 needs_read = !is_exec && (f_mode & FMODE_READ);
	__u8 needs_exec = is_exec;
	d.op = needs_exec ? HELM_OP_EXEC : needs_write ? HELM_OP_WRITE : HELM_OP_READ;

	__u32 flags = 0;
	long n = 0;
	void *paths = bpf_map_lookup_elem(&path_tables, &slot);
	void *inodes = bpf_map_lookup_elem(&inode_tables, &slot);
	if (!paths || !inodes) {
		d.reason = HELM_REASON_NO_TABLE;
		d.verdict.action = HELM_ACTION_DENY;
		goto deny;
	}

	key->role_id = agent->role_id;
	n = bpf_d_path((struct path *)&file->f_path, key->path, HELM_PATH_BUF);
	if (n < 1 || n > HELM_PATH_BUF) {
		d.reason = HELM_REASON_PATH_ERROR;
		d.verdict.action = HELM_ACTION_DENY;
		goto deny;
	}
	/* A directory is matched as "<dir>/" so that a subtree rule covers the directory itself. */
	umode_t i_mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((i_mode & S_IFMT) == S_IFDIR) {
		flags |= HELM_EVENT_FLAG_DIR;
		if (n > 2) {
			if (n >= HELM_PATH_BUF) {
				d.reason = HELM_REASON_PATH_ERROR;
				d.verdict.action = HELM_ACTION_DENY;
				goto deny;
			}
			key->path[(n - 1) & 0xff] = '/';
			key->path[n & 0xff] = 0;
			n++;
		}
	}
	key->prefixlen = 32 + 8 * (__u32)n;

	struct helm_path_value *v = bpf_map_lookup_elem(paths, key);
	if (!v) {
		/* No entry at all for this role: no policy names it. */
		d.reason = HELM_REASON_NO_POLICY;
		d.verdict.action = HELM_ACTION_DENY;
		d.verdict.mode = HELM_MODE_ENFORCE;
		goto deny;
	}

	/* Check write before read so that O_RDWR reports the stricter verb first. */
	if (needs_write) {
		d.op = HELM_OP_WRITE;
		verdict_for(&d, &v->verdict[HELM_OP_WRITE], v->default_mode);
		if (d.verdict.action != HELM_ACTION_ALLOW)
			goto deny;
		if (inode_block(inodes, file, agent->role_id, HELM_OP_WRITE, &d))
			goto deny;
	}
	if (needs_read) {
		d.op = HELM_OP_READ;
		verdict_for(&d, &v->verdict[HELM_OP_READ], v->default_mode);
		if (d.verdict.action != HELM_ACTION_ALLOW)
			goto deny;
		if (inode_block(inodes, file, agent->role_id, HELM_OP_READ, &d))
			goto deny;
	}
	if (needs_exec) {
		d.op = HELM_OP_EXEC;
		verdict_for(&d, &v->verdict[HELM_OP_EXEC], v->default_mode);
		if (d.verdict.action != HELM_ACTION_ALLOW)
			goto deny;
		if (inode_block(inodes, file, agent->role_id, HELM_OP_EXEC, &d))
			goto deny;
	}
	return 0;

deny:
	if ((agent->flags & HELM_AGENT_DRY_RUN) || (mode_flags & HELM_SETTINGS_DRY_RUN))
		d.verdict.mode = HELM_MODE_DRY_RUN;
	emit(file, agent, cgroup_id, &d, key, n, flags);
	return d.verdict.mode == HELM_MODE_DRY_RUN ? 0 : -EPERM;
}
