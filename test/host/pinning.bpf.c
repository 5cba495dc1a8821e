// SPDX-License-Identifier: GPL-2.0
/*
 * A fixture for the pinning tests on kernels that refuse BPF LSM programs: a
 * cgroup program (connect4: refuses the ports listed in a map) and a tracing
 * program (counts the getppid calls of one chosen process), so that both kinds
 * of link are pinned, adopted and replaced. Each variant marks what it ran in
 * `hits`, so a test can tell which programs are attached:
 *   1  a first release
 *   2  new program code, the same maps
 *   3  a changed map layout (blocked_ports values grow to 8 bytes)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#ifndef PINNING_VARIANT
#error "compile with -DPINNING_VARIANT=1, 2 or 3"
#endif

#define NR_getppid 110 /* x86_64 */

#if PINNING_VARIANT == 3
typedef __u64 verdict_t;
#else
typedef __u32 verdict_t;
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16); /* port, host order */
	__type(value, verdict_t);
} blocked_ports SEC(".maps");

/* [0] connect4 decisions, [1] by variant 2, [2] getppid calls times the variant, [3] by variant 3 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32); /* tgid whose getppid calls are counted */
} target SEC(".maps");

static __always_inline void count(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);
	if (v)
		__sync_fetch_and_add(v, n);
}

SEC("cgroup/connect4")
int pin_connect4(struct bpf_sock_addr *ctx)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	verdict_t *blocked = bpf_map_lookup_elem(&blocked_ports, &port);

	count(0, 1);
#if PINNING_VARIANT == 2
	count(1, 1);
#elif PINNING_VARIANT == 3
	count(3, 1);
#endif
	return blocked && *blocked ? 0 : 1; /* 0 refuses the connect with EPERM */
}

SEC("raw_tp/sys_enter")
int pin_getppid(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u32 *tgid = bpf_map_lookup_elem(&target, &zero);

	if (tgid && *tgid == (__u32)(bpf_get_current_pid_tgid() >> 32) && ctx->args[1] == NR_getppid)
		count(2, PINNING_VARIANT);
	return 0;
}
