// SPDX-License-Identifier: GPL-2.0
/*
 * A program that loads on kernels which refuse LSM programs: it reports the
 * getppid() calls of one chosen process through the same event layout and the
 * same ring-buffer path helmd drains. The host-privileged tests use it to prove
 * map access, ring-buffer draining and loss counting without BPF LSM.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "helm.h"

char LICENSE[] SEC("license") = "GPL";

#define NR_getppid 110 /* x86_64 */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32); /* tgid to report */
} selftest_target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

/* All zeros: events are larger than an inline memset may clear. */
const struct helm_event zero_event = {};

SEC("raw_tp/sys_enter")
int helm_selftest(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u32 *target = bpf_map_lookup_elem(&selftest_target, &zero);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!target || *target != (__u32)(pid_tgid >> 32) || ctx->args[1] != NR_getppid)
		return 0;

	struct helm_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return 0;
	}
	bpf_probe_read_kernel(e, sizeof(*e), &zero_event);
	e->ts_boot_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->type = HELM_EVENT_SELFTEST;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->path_len = -1;
	e->exe_len = -1;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
