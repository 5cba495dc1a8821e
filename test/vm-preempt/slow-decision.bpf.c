// SPDX-License-Identifier: GPL-2.0
/*
 * A fixture for the grace-period test: a decision that takes long. The first
 * file the chosen process opens makes this LSM program spin (bpf_loop) for a
 * while, recording when it started and when it returned. It runs as helm's own
 * LSM programs do: under rcu_read_lock(), with migration (not preemption)
 * disabled, so on a fully preemptible kernel it can be preempted half-way.
 * times[0]: the chosen tgid (set by the test); [1]: start ns; [2]: end ns.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define SPIN_ROUNDS 8
#define SPIN_LOOPS (1 << 23) /* bpf_loop's most per call */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} times SEC(".maps");

static long spin(__u64 i, void *ctx)
{
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(slow_file_open, struct file *file)
{
	__u32 k_tgid = 0, k_start = 1, k_end = 2;
	__u64 *tgid = bpf_map_lookup_elem(&times, &k_tgid);
	__u64 *start = bpf_map_lookup_elem(&times, &k_start);
	__u64 *end = bpf_map_lookup_elem(&times, &k_end);

	if (!tgid || !start || !end || !*tgid || *tgid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	if (*start) /* once */
		return 0;
	*start = bpf_ktime_get_ns();
	for (int i = 0; i < SPIN_ROUNDS; i++)
		bpf_loop(SPIN_LOOPS, spin, NULL, 0);
	*end = bpf_ktime_get_ns();
	return 0;
}
