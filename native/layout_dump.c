// SPDX-License-Identifier: Apache-2.0
/*
 * Prints the size and field offsets of every struct in bpf/helm.h as JSON, and
 * its constants. test/unit/layout.test.ts compares this with
 * daemon/kernel/layout.ts, so C and TypeScript cannot drift apart unnoticed.
 */
#include <stddef.h>
#include <stdio.h>
#include "helm.h"

static int first_struct = 1, first_field;

#define STRUCT(s) do { printf("%s\n  \"%s\": {\"size\": %zu, \"fields\": {", first_struct ? "" : ",", #s, sizeof(struct s)); first_struct = 0; first_field = 1; } while (0)
#define FIELD(s, f) do { printf("%s\"%s\": [%zu, %zu]", first_field ? "" : ", ", #f, offsetof(struct s, f), sizeof(((struct s *)0)->f)); first_field = 0; } while (0)
#define END() printf("}}")
#define CONST(c) printf(",\n  \"%s\": %lld", #c, (long long)(c))

int main(void)
{
	printf("{");
	STRUCT(helm_agent); FIELD(helm_agent, agent_id); FIELD(helm_agent, role_id); FIELD(helm_agent, flags); FIELD(helm_agent, dns_port); FIELD(helm_agent, label_bits); END();
	STRUCT(helm_verdict); FIELD(helm_verdict, policy_id); FIELD(helm_verdict, rule_id); FIELD(helm_verdict, action); FIELD(helm_verdict, mode); FIELD(helm_verdict, rank); FIELD(helm_verdict, cond_list); END();
	STRUCT(helm_cond); FIELD(helm_cond, verdict); FIELD(helm_cond, cond_id); FIELD(helm_cond, label_bits); FIELD(helm_cond, flags); END();
	STRUCT(helm_cond_list); FIELD(helm_cond_list, count); FIELD(helm_cond_list, cond); END();
	STRUCT(helm_exe_key); FIELD(helm_exe_key, prefixlen); FIELD(helm_exe_key, cond_id); FIELD(helm_exe_key, path); END();
	STRUCT(helm_uid_key); FIELD(helm_uid_key, cond_id); FIELD(helm_uid_key, uid); END();
	STRUCT(helm_path_key); FIELD(helm_path_key, prefixlen); FIELD(helm_path_key, role_id); FIELD(helm_path_key, path); END();
	STRUCT(helm_path_value); FIELD(helm_path_value, verdict); FIELD(helm_path_value, default_mode); END();
	STRUCT(helm_inode_key); FIELD(helm_inode_key, role_id); FIELD(helm_inode_key, dev); FIELD(helm_inode_key, ino); END();
	STRUCT(helm_inode_value); FIELD(helm_inode_value, self); FIELD(helm_inode_value, below); END();
	STRUCT(helm_settings); FIELD(helm_settings, active_generation); FIELD(helm_settings, flags); FIELD(helm_settings, helmd_tgid); END();
	STRUCT(helm_protected_key); FIELD(helm_protected_key, dev); FIELD(helm_protected_key, ino); END();
	STRUCT(helm_net_key); FIELD(helm_net_key, prefixlen); FIELD(helm_net_key, role_id); FIELD(helm_net_key, family); FIELD(helm_net_key, addr); END();
	STRUCT(helm_port_range); FIELD(helm_port_range, from); FIELD(helm_port_range, to); FIELD(helm_port_range, verdict); END();
	STRUCT(helm_net_value); FIELD(helm_net_value, default_mode); FIELD(helm_net_value, count); FIELD(helm_net_value, range); END();
	STRUCT(helm_name_key); FIELD(helm_name_key, role_id); FIELD(helm_name_key, name_id); END();
	STRUCT(helm_learned_key); FIELD(helm_learned_key, agent_id); FIELD(helm_learned_key, addr); END();
	STRUCT(helm_learned_value); FIELD(helm_learned_value, expires_boot_ns); FIELD(helm_learned_value, name_id); END();
	STRUCT(helm_dns_origin); FIELD(helm_dns_origin, addr); FIELD(helm_dns_origin, port); FIELD(helm_dns_origin, family); END();
	STRUCT(helm_socket_key); FIELD(helm_socket_key, role_id); FIELD(helm_socket_key, kind); FIELD(helm_socket_key, protocol); END();
	STRUCT(helm_socket_value); FIELD(helm_socket_value, verdict); FIELD(helm_socket_value, default_mode); END();
	STRUCT(helm_pin_meta); FIELD(helm_pin_meta, format); FIELD(helm_pin_meta, state); FIELD(helm_pin_meta, layout);
	FIELD(helm_pin_meta, object); FIELD(helm_pin_meta, instance); FIELD(helm_pin_meta, created_ns); FIELD(helm_pin_meta, version); END();
	STRUCT(helm_event);
	FIELD(helm_event, ts_boot_ns); FIELD(helm_event, cgroup_id); FIELD(helm_event, agent_id); FIELD(helm_event, ino);
	FIELD(helm_event, type); FIELD(helm_event, pid); FIELD(helm_event, tid); FIELD(helm_event, ppid);
	FIELD(helm_event, uid); FIELD(helm_event, gid); FIELD(helm_event, role_id); FIELD(helm_event, generation);
	FIELD(helm_event, dev); FIELD(helm_event, policy_id); FIELD(helm_event, rule_id); FIELD(helm_event, op);
	FIELD(helm_event, decision); FIELD(helm_event, mode); FIELD(helm_event, reason); FIELD(helm_event, flags);
	FIELD(helm_event, detail); FIELD(helm_event, target_pid);
	FIELD(helm_event, addr); FIELD(helm_event, port); FIELD(helm_event, proto); FIELD(helm_event, family);
	FIELD(helm_event, path_len); FIELD(helm_event, exe_len); FIELD(helm_event, comm); FIELD(helm_event, path);
	FIELD(helm_event, exe); FIELD(helm_event, ops); FIELD(helm_event, argc); FIELD(helm_event, argv_len);
	FIELD(helm_event, parent_exe_len); FIELD(helm_event, parent_exe); FIELD(helm_event, argv);
	END();
	STRUCT(helm_audit_settings); FIELD(helm_audit_settings, allow_log); FIELD(helm_audit_settings, sample_cost_ns);
	FIELD(helm_audit_settings, sample_burst_ns); END();
	STRUCT(helm_agent_counters); FIELD(helm_agent_counters, allowed); FIELD(helm_agent_counters, allow_unlogged);
	FIELD(helm_agent_counters, allow_lost); FIELD(helm_agent_counters, denied); FIELD(helm_agent_counters, would_deny);
	FIELD(helm_agent_counters, deny_lost); END();
	printf(",\n  \"constants\": {\"_\": 0");
	CONST(HELM_PATH_BUF); CONST(HELM_MAX_PATH_ENTRIES); CONST(HELM_MAX_INODE_ENTRIES); CONST(HELM_MAX_AGENTS);
	CONST(HELM_MAX_CGROUP_DEPTH); CONST(HELM_MAX_GENERATIONS); CONST(HELM_DENY_RING_BYTES); CONST(HELM_ALLOW_RING_BYTES); CONST(HELM_MAX_ANCESTORS);
	CONST(HELM_OP_READ); CONST(HELM_OP_WRITE); CONST(HELM_OP_EXEC); CONST(HELM_FILE_OPS);
	CONST(HELM_OP_BPF); CONST(HELM_OP_SIGNAL); CONST(HELM_OP_PTRACE); CONST(HELM_OP_MOUNT); CONST(HELM_OP_MODULE); CONST(HELM_OP_CONTROL);
	CONST(HELM_MAX_COMPONENTS); CONST(HELM_MAX_PROTECTED);
	CONST(HELM_DETAIL_OPEN); CONST(HELM_DETAIL_CREATE); CONST(HELM_DETAIL_MKDIR); CONST(HELM_DETAIL_UNLINK); CONST(HELM_DETAIL_RMDIR);
	CONST(HELM_DETAIL_RENAME_FROM); CONST(HELM_DETAIL_RENAME_TO); CONST(HELM_DETAIL_LINK_FROM); CONST(HELM_DETAIL_LINK_TO);
	CONST(HELM_DETAIL_SYMLINK); CONST(HELM_DETAIL_CHMOD); CONST(HELM_DETAIL_CHOWN); CONST(HELM_DETAIL_TRUNCATE);
	CONST(HELM_DETAIL_MMAP_EXEC); CONST(HELM_DETAIL_RECEIVE); CONST(HELM_DETAIL_XATTR); CONST(HELM_REASON_SELF_PROTECT);
	CONST(HELM_ACTION_NONE); CONST(HELM_ACTION_ALLOW); CONST(HELM_ACTION_DENY);
	CONST(HELM_MODE_ENFORCE); CONST(HELM_MODE_DRY_RUN);
	CONST(HELM_DECISION_ALLOW); CONST(HELM_DECISION_DENY); CONST(HELM_DECISION_WOULD_DENY);
	CONST(HELM_REASON_RULE); CONST(HELM_REASON_DEFAULT); CONST(HELM_REASON_NO_POLICY);
	CONST(HELM_REASON_PATH_ERROR); CONST(HELM_REASON_NO_TABLE); CONST(HELM_REASON_INODE_RULE);
	CONST(HELM_AGENT_DRY_RUN); CONST(HELM_SETTINGS_DRY_RUN);
	CONST(HELM_MAX_NET_ENTRIES); CONST(HELM_MAX_NAME_ENTRIES); CONST(HELM_MAX_LEARNED); CONST(HELM_MAX_DNS_SOCKETS);
	CONST(HELM_NET_SEGMENTS); CONST(HELM_LEARNED_NAMES);
	CONST(HELM_MAX_COND_LISTS); CONST(HELM_COND_LIST_LEN); CONST(HELM_MAX_COND_EXES); CONST(HELM_MAX_COND_UIDS);
	CONST(HELM_MAX_LABEL_PAIRS); CONST(HELM_COND_EXE); CONST(HELM_COND_UID);
	CONST(HELM_OP_CONNECT); CONST(HELM_OP_BIND); CONST(HELM_NET_CONNECT); CONST(HELM_NET_BIND); CONST(HELM_NET_OPS);
	CONST(HELM_DETAIL_NET_CONNECT); CONST(HELM_DETAIL_NET_SENDMSG); CONST(HELM_DETAIL_NET_BIND);
	CONST(HELM_RANK_NONE); CONST(HELM_RANK_ALLOW); CONST(HELM_RANK_CONTEXTUAL); CONST(HELM_RANK_BLOCK);
	CONST(HELM_DETAIL_UNIX); CONST(HELM_DETAIL_RAW); CONST(HELM_DETAIL_PACKET);
	CONST(HELM_SOCKET_RAW); CONST(HELM_SOCKET_PACKET); CONST(HELM_ANY_PROTOCOL); CONST(HELM_MAX_SOCKET_ENTRIES); CONST(HELM_MAX_UNIX_ENTRIES);
	CONST(HELM_PIN_FORMAT); CONST(HELM_PIN_READY); CONST(HELM_PIN_CHANGING);
	CONST(HELM_EVENT_DECISION); CONST(HELM_EVENT_SELFTEST); CONST(HELM_EVENT_FLAG_DIR);
	CONST(HELM_EVENT_FLAG_ARGV_TRUNCATED); CONST(HELM_EVENT_FLAG_SAMPLED); CONST(HELM_ARGV_BUF); CONST(HELM_MAX_ARGS);
	CONST(HELM_RING_DENY); CONST(HELM_RING_ALLOW); CONST(HELM_RINGS);
	CONST(HELM_ALLOW_LOG_NONE); CONST(HELM_ALLOW_LOG_SAMPLED); CONST(HELM_ALLOW_LOG_ALL);
	printf("}\n}\n");
	return 0;
}
