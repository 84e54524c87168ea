// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Reference programs for nvqos-bench-bpf: the floor that any XDP or tc program
 * costs under BPF_PROG_TEST_RUN, and the price of reading the clocks.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/consts.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Written so the compiler cannot drop the clock reads. */
__u64 last_ns;

SEC("xdp")
int bench_xdp_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int bench_tc_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("tc")
int bench_tc_ktime(struct __sk_buff *skb)
{
	last_ns = bpf_ktime_get_ns();
	return TC_ACT_OK;
}

SEC("tc")
int bench_tc_ktime_coarse(struct __sk_buff *skb)
{
	last_ns = bpf_ktime_get_coarse_ns();
	return TC_ACT_OK;
}
