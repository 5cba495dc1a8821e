/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Every layout that the kernel programs and userspace both read: map keys, map
 * values and ring-buffer events. This header is the single source of truth;
 * daemon/kernel/layout.ts mirrors it and test/unit/layout.test.ts compares the
 * two through native/layout_dump.c, so a drift fails the build's tests.
 */
#ifndef HELM_H
#define HELM_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* LPM trie data is at most 256 bytes: 4 for the role id, the rest for the path. */
#define HELM_PATH_BUF 252
#define HELM_MAX_PATH_ENTRIES 65536
#define HELM_MAX_INODE_ENTRIES 65536
#define HELM_MAX_AGENTS 4096
#define HELM_MAX_CGROUP_DEPTH 32
#define HELM_MAX_GENERATIONS 4
/*
 * Decisions in progress at once on one CPU, each in a scratch frame of its own
 * (a decision can be preempted half-way on a fully preemptible kernel). One more
 * is refused, fail-closed, and counted as a denial whose line was lost.
 */
#define HELM_SCRATCH_FRAMES 16
/*
 * Two rings, so that allows can never crowd out a denial: denials and
 * would-denials on one, logged allows on the other. docs/audit-schema.md
 * ("Loss") gives the sizing: records are HELM_EVENT_SLOT bytes in the ring.
 */
#define HELM_DENY_RING_BYTES (32 * 1024 * 1024)
#define HELM_ALLOW_RING_BYTES (8 * 1024 * 1024)
/* An exec's arguments, NUL-separated, as many as fit (the rest is flagged as truncated). */
#define HELM_ARGV_BUF 256
#define HELM_MAX_ARGS 32
/* How many directory levels above a file are checked against the inode table. */
#define HELM_MAX_ANCESTORS 32
/* Path components the kernel walks to name a file in mutation hooks (bpf_d_path is not allowed there). */
#define HELM_MAX_COMPONENTS 40
#define HELM_MAX_PROTECTED 256
/* Network tables: address prefixes per role, host-name patterns per role, learned addresses. */
#define HELM_MAX_NET_ENTRIES 65536
#define HELM_MAX_NAME_ENTRIES 65536
#define HELM_MAX_LEARNED 65536
#define HELM_MAX_DNS_SOCKETS 16384
/* Port ranges with distinct verdicts that one address entry can hold. */
#define HELM_NET_SEGMENTS 16
/* Host-name patterns one learned address can carry (a CDN address may serve several names). */
#define HELM_LEARNED_NAMES 4
/*
 * Contextual conditions the kernel checks per operation (exe, label, uid; role
 * is resolved by the compiler): lists per generation, the contextual rules of
 * one list, the executables and uids named by conditions, distinct label pairs.
 */
#define HELM_MAX_COND_LISTS 65536
#define HELM_COND_LIST_LEN 8
#define HELM_MAX_COND_EXES 65536
#define HELM_MAX_COND_UIDS 65536
#define HELM_MAX_LABEL_PAIRS 64

/* File verbs, as indices into helm_path_value.verdict[]. */
enum helm_op {
	HELM_OP_READ = 0,
	HELM_OP_WRITE = 1,
	HELM_OP_EXEC = 2,
	HELM_FILE_OPS = 3,
	/* self-protection: events only, never in policy tables */
	HELM_OP_BPF = 3,
	HELM_OP_SIGNAL = 4,
	HELM_OP_PTRACE = 5,
	HELM_OP_MOUNT = 6,
	HELM_OP_MODULE = 7,
	HELM_OP_CONTROL = 8, /* helm's own files, cgroupfs, bpffs, the control socket */
	/* network verbs: decided by the network tables */
	HELM_OP_CONNECT = 9,
	HELM_OP_BIND = 10,
};

/* Network verbs, as indices into helm_port_range.verdict[]. */
enum helm_net_op {
	HELM_NET_CONNECT = 0,
	HELM_NET_BIND = 1,
	HELM_NET_OPS = 2,
};

/* What a write was (helm_event.detail): every mutation is decided by the write rules. */
enum helm_detail {
	HELM_DETAIL_OPEN = 0,
	HELM_DETAIL_CREATE = 1,
	HELM_DETAIL_MKDIR = 2,
	HELM_DETAIL_UNLINK = 3,
	HELM_DETAIL_RMDIR = 4,
	HELM_DETAIL_RENAME_FROM = 5,
	HELM_DETAIL_RENAME_TO = 6,
	HELM_DETAIL_LINK_FROM = 7,
	HELM_DETAIL_LINK_TO = 8,
	HELM_DETAIL_SYMLINK = 9,
	HELM_DETAIL_CHMOD = 10,
	HELM_DETAIL_CHOWN = 11,
	HELM_DETAIL_TRUNCATE = 12,
	HELM_DETAIL_MMAP_EXEC = 13,
	HELM_DETAIL_RECEIVE = 14,
	HELM_DETAIL_XATTR = 15,
	/* network: how the destination was reached */
	HELM_DETAIL_NET_CONNECT = 16, /* connect(2) */
	HELM_DETAIL_NET_SENDMSG = 17, /* an unconnected datagram send */
	HELM_DETAIL_NET_BIND = 18,
	/* sockets that are not IP destinations, decided by `connect` rules */
	HELM_DETAIL_UNIX = 19,   /* connect or send to a unix socket; path holds its name ("@..." if abstract) */
	HELM_DETAIL_RAW = 20,    /* a raw IP socket; proto holds the protocol */
	HELM_DETAIL_PACKET = 21, /* a packet socket; port holds the EtherType */
};

/* What a matched rule says; NONE means no rule of this verb covers the path. */
enum helm_action {
	HELM_ACTION_NONE = 0,
	HELM_ACTION_ALLOW = 1,
	HELM_ACTION_DENY = 2,
};

enum helm_mode {
	HELM_MODE_ENFORCE = 0,
	HELM_MODE_DRY_RUN = 1,
};

enum helm_decision {
	HELM_DECISION_ALLOW = 0,
	HELM_DECISION_DENY = 1,
	HELM_DECISION_WOULD_DENY = 2,
};

/* Why a default-deny happened when no rule decided; reported in helm_event.reason. */
enum helm_reason {
	HELM_REASON_RULE = 0,        /* a rule decided */
	HELM_REASON_DEFAULT = 1,     /* no rule matched: default deny */
	HELM_REASON_NO_POLICY = 2,   /* no policy governs the agent's role */
	HELM_REASON_PATH_ERROR = 3,  /* the path could not be resolved or did not fit */
	HELM_REASON_NO_TABLE = 4,    /* the active generation's tables were missing */
	HELM_REASON_INODE_RULE = 5,  /* a block rule matched the object's inode (hard link, bind mount) */
	HELM_REASON_SELF_PROTECT = 6, /* helm protects itself; no policy can allow this */
};

/* governed_cgroups: cgroup id -> the agent attached there. */
struct helm_agent {
	__u64 agent_id;
	__u32 role_id;
	__u32 flags; /* HELM_AGENT_* */
	__u16 dns_port; /* helmd's DNS forwarder for this agent on loopback; 0: none */
	__u16 pad[3];
	/*
	 * The label pairs (key: value) the agent was attached with, as bits: bit
	 * n-1 is the pair helmd gave id n. Ids are stable across generations and
	 * only ever added, so these bits hold for every generation.
	 */
	__u64 label_bits;
};
#define HELM_AGENT_DRY_RUN 1u

/*
 * Which kind of rule decided, so that two verdicts folded separately (an address
 * entry and a host-name entry) combine with POLICY.md's precedence.
 */
enum helm_rank {
	HELM_RANK_NONE = 0,
	HELM_RANK_ALLOW = 1,
	HELM_RANK_CONTEXTUAL = 2,
	HELM_RANK_BLOCK = 3,
};

/*
 * What one verb's matching rules decided, precomputed by the compiler. When
 * contextual rules with exe, label or uid conditions match, the decision also
 * depends on the acting process: cond_list then names the list of those rules
 * (struct helm_cond_list) to try first, and this verdict is what holds when
 * none of their conditions does.
 */
struct helm_verdict {
	__u16 policy_id;
	__u16 rule_id;
	__u8 action; /* enum helm_action */
	__u8 mode;   /* enum helm_mode */
	__u8 rank;   /* enum helm_rank */
	__u8 pad;
	__u32 cond_list; /* 0: none */
};

/* What a condition asks of the acting process besides its agent's labels. */
#define HELM_COND_EXE 1u /* its executable is in cond_exes under this condition's id */
#define HELM_COND_UID 2u /* its uid is in cond_uids under this condition's id */

/* One contextual rule of a list: the allow it gives when its condition holds. */
struct helm_cond {
	struct helm_verdict verdict;
	__u32 cond_id;    /* the condition's id in cond_exes and cond_uids */
	__u64 label_bits; /* label pairs the agent must have (all of them) */
	__u32 flags;      /* HELM_COND_* */
	__u32 pad;
};

/*
 * Contextual rules whose conditions the kernel checks, in POLICY.md's report
 * order (enforce before dry-run, then policy, then rule): the first that holds
 * decides.
 */
struct helm_cond_list {
	__u32 count;
	__u32 pad;
	struct helm_cond cond[HELM_COND_LIST_LEN];
};

/* cond_exes key: an LPM trie over (condition id, executable path), stored as path table keys are. */
struct helm_exe_key {
	__u32 prefixlen; /* in bits, counting cond_id */
	__u32 cond_id;
	char path[HELM_PATH_BUF];
};

/* cond_uids key. */
struct helm_uid_key {
	__u32 cond_id;
	__u32 uid;
};

/*
 * path table key: an LPM trie over (role id, path bytes). Exact rules are stored
 * NUL-terminated, subtree rules end in '/', so one longest-prefix lookup of
 * "<path>\0" (directories as "<path>/\0") finds the most specific entry, and
 * the compiler has already folded every shorter matching rule into it.
 */
struct helm_path_key {
	__u32 prefixlen; /* in bits, counting role_id */
	__u32 role_id;
	char path[HELM_PATH_BUF];
};

struct helm_path_value {
	struct helm_verdict verdict[HELM_FILE_OPS];
	__u8 default_mode; /* mode of the default deny for this role */
	__u8 pad[7];
};

/* inode table: objects a block rule covers, found by identity rather than by name. */
struct helm_inode_key {
	__u32 role_id;
	__u32 dev; /* kernel dev_t: major << 20 | minor */
	__u64 ino;
};

struct helm_inode_value {
	struct helm_verdict self[HELM_FILE_OPS];  /* for the object itself: exact and subtree blocks */
	struct helm_verdict below[HELM_FILE_OPS]; /* for anything below a directory: subtree blocks only */
};

/*
 * net table key: an LPM trie over (role id, family, address bytes). IPv4 is
 * family 4 with its 4 bytes first; an IPv4-mapped IPv6 destination
 * (::ffff:a.b.c.d) is looked up as the IPv4 address it is, so it cannot slip
 * past an IPv4 rule, and IPv6 networks never cover IPv4. `*` is the role's root
 * entry (prefixlen 32: role id only).
 */
struct helm_net_key {
	__u32 prefixlen; /* in bits, counting role_id and family */
	__u32 role_id;
	__u8 family; /* 4 or 6 */
	__u8 addr[16];
};

/* Ports [from, to] and what each network verb's rules decided for them. */
struct helm_port_range {
	__u16 from;
	__u16 to;
	struct helm_verdict verdict[HELM_NET_OPS];
};

/*
 * The folded decision for an address entry or a host-name pattern: sorted,
 * disjoint port ranges; a port in none of them is matched by no rule.
 */
struct helm_net_value {
	__u8 default_mode; /* mode of the default deny for this role */
	__u8 count;        /* ranges in use */
	__u16 pad;
	struct helm_port_range range[HELM_NET_SEGMENTS];
};

/* name table key: a host-name pattern (its id is helmd's, stable across generations) for a role. */
struct helm_name_key {
	__u32 role_id;
	__u32 name_id;
};

/* learned_addrs: an address the agent's own DNS lookups returned for allowed names. */
struct helm_learned_key {
	__u64 agent_id;
	__u8 addr[16]; /* IPv6; IPv4 mapped */
};

struct helm_learned_value {
	__u64 expires_boot_ns; /* CLOCK_BOOTTIME; ignored once past */
	__u32 name_id[HELM_LEARNED_NAMES]; /* 0: unused */
};

/* dns_origins: where a redirected DNS query was really sent, by socket cookie. */
struct helm_dns_origin {
	__u8 addr[16]; /* IPv6; IPv4 mapped */
	__u16 port;    /* network byte order */
	__u16 family;  /* AF_INET or AF_INET6, as the socket sent it */
	__u32 pad;
};

/*
 * socket table key: raw and packet sockets by protocol, decided when the socket
 * is created. Every governed role has an entry with protocol HELM_ANY_PROTOCOL
 * per kind (the `*` rules, and the default's mode).
 */
enum helm_socket_kind {
	HELM_SOCKET_RAW = 1,
	HELM_SOCKET_PACKET = 2,
};
#define HELM_ANY_PROTOCOL 0xffffffffu
#define HELM_MAX_SOCKET_ENTRIES 4096
#define HELM_MAX_UNIX_ENTRIES 16384

struct helm_socket_key {
	__u32 role_id;
	__u32 kind;     /* enum helm_socket_kind */
	__u32 protocol; /* IPPROTO_* for raw, the EtherType for packet, or HELM_ANY_PROTOCOL */
};

/*
 * The folded verdict of a socket-table entry, and of a unix-table entry: an LPM
 * trie keyed like helm_path_key, "<path>\0" or "<dir>/" for sockets bound to a
 * path, "@<name>\0" or "@" for abstract ones, "" for the role's default.
 */
struct helm_socket_value {
	struct helm_verdict verdict;
	__u8 default_mode;
	__u8 pad[7];
};

/* protected_inodes: helm's own files (policies, audit trail, control socket): no governed access at all. */
struct helm_protected_key {
	__u32 dev;
	__u32 pad;
	__u64 ino;
};

/* Global switches, one entry. */
struct helm_settings {
	__u32 active_generation;
	__u32 flags;      /* HELM_SETTINGS_* */
	__u32 helmd_tgid; /* no governed task may signal or trace it */
	__u32 pad;
};
#define HELM_SETTINGS_DRY_RUN 1u

/*
 * <pin dir>/<set>/meta, one entry: what a pinned set of maps and links is.
 * Every helmd version reads it, so fields are only ever appended and `format`
 * says how many there are. Never used by the kernel programs.
 */
struct helm_pin_meta {
	__u32 format;       /* HELM_PIN_FORMAT */
	__u32 state;        /* HELM_PIN_* */
	__u8 layout[32];    /* SHA-256 over helm.h and the maps' and programs' definitions */
	__u8 object[32];    /* SHA-256 of the object file whose programs the links run */
	__u8 instance[16];  /* random, new for every set: ties helmd's state file to it */
	__u64 created_ns;   /* CLOCK_REALTIME when the set was pinned */
	char version[32];   /* the helmd that pinned it, NUL-terminated */
};
#define HELM_PIN_FORMAT 1
#define HELM_PIN_READY 1
#define HELM_PIN_CHANGING 2 /* programs are being replaced: whoever starts next finishes the job */

#define HELM_EVENT_DECISION 1
#define HELM_EVENT_SELFTEST 2
#define HELM_EVENT_FLAG_DIR 1u
#define HELM_EVENT_FLAG_ARGV_TRUNCATED 2u /* more arguments or bytes than the event holds */
#define HELM_EVENT_FLAG_SAMPLED 4u        /* an allow logged by the per-agent sampler */

/* The rings events travel on; also the index of each ring's counter in lost_events. */
enum helm_ring {
	HELM_RING_DENY = 0,
	HELM_RING_ALLOW = 1,
	HELM_RINGS = 2,
};

/* Which allows reach the audit trail (every decision is counted whatever the level). */
enum helm_allow_log {
	HELM_ALLOW_LOG_NONE = 0,
	HELM_ALLOW_LOG_SAMPLED = 1, /* per agent, at most a token bucket's worth */
	HELM_ALLOW_LOG_ALL = 2,
};

/* audit_settings: one entry, written by helmd. */
struct helm_audit_settings {
	__u32 allow_log;       /* enum helm_allow_log */
	__u32 pad;
	__u64 sample_cost_ns;  /* credit one sampled allow spends: 1e9 / rate per second */
	__u64 sample_burst_ns; /* most credit a bucket holds: burst * cost */
};

/* agent_counters (per CPU, by agent id): every decision, whether it reached the trail or not. */
struct helm_agent_counters {
	__u64 allowed;
	__u64 allow_unlogged; /* not sent, by the allow-log level or the sampler */
	__u64 allow_lost;     /* sent, but the allow ring was full */
	__u64 denied;         /* enforced denials, self-protection included */
	__u64 would_deny;
	__u64 deny_lost;      /* denials or would-denials that did not fit in the deny ring */
};

/* One decision, as the ring buffer carries it. */
struct helm_event {
	__u64 ts_boot_ns;
	__u64 cgroup_id;
	__u64 agent_id;
	__u64 ino;
	__u32 type; /* HELM_EVENT_* */
	__u32 pid;  /* thread group id */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 role_id;
	__u32 generation;
	__u32 dev;
	__u16 policy_id;
	__u16 rule_id;
	__u8 op;       /* enum helm_op */
	__u8 decision; /* enum helm_decision */
	__u8 mode;     /* enum helm_mode */
	__u8 reason;   /* enum helm_reason */
	__u32 flags;   /* HELM_EVENT_FLAG_* */
	__u32 detail;  /* enum helm_detail for file ops; the signal number for HELM_OP_SIGNAL */
	__u32 target_pid; /* the task signalled or traced */
	__u8 addr[16];  /* network ops: IPv6; IPv4 mapped */
	__u16 port;     /* network ops: host byte order */
	__u8 proto;     /* network ops: IPPROTO_TCP, IPPROTO_UDP, ... */
	__u8 family;    /* network ops: AF_INET or AF_INET6 as the socket used it */
	__s32 path_len; /* bytes in path including NUL, or a negative errno */
	__s32 exe_len;  /* bytes in exe including NUL, or a negative errno */
	char comm[16];
	char path[HELM_PATH_BUF];
	char exe[HELM_PATH_BUF]; /* the acting task's executable, resolved by the kernel */
	/* audit fields: kept at the end so that other additions merge textually */
	__u32 ops;            /* bits (1 << enum helm_op) of every verb the operation needed */
	__s32 argc;           /* exec: arguments in argv, or a negative errno; 0 for other ops */
	__u32 argv_len;       /* bytes of argv used */
	__s32 parent_exe_len; /* as exe_len, for the parent's executable */
	char parent_exe[HELM_PATH_BUF];
	char argv[HELM_ARGV_BUF]; /* exec: the caller's argv strings, each NUL-terminated */
};

#endif /* HELM_H */
