/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of nvqos_datapath.bpf.o. Names, keys and values are the ABI the agent loads. */
#ifndef NVQOS_BPF_MAPS_H
#define NVQOS_BPF_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"

/*
 * The key of every single-entry array map, in .rodata rather than on the
 * stack: Linux 6.1 rounds every frame of a call chain up to 32 bytes and
 * refuses a chain above 512, and a 4-byte key in a frame's top slot can cost
 * it a whole 32.
 */
static const __u32 nvqos_zero_key;

// Which tenant owns traffic of (NVMe/TCP service port, remote address prefix).
// Written by the agent from the policy; read by tc and XDP on a flow miss.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NVQOS_MAX_TENANT_RULES);
	__type(key, struct nvqos_tenant_rule_key);
	__type(value, struct nvqos_tenant_rule_value);
} tenant_rules SEC(".maps");

// Per-tenant switches (active, drop ingress), indexed by tenant id.
// Written by the agent; read by XDP.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NVQOS_MAX_TENANTS);
	__type(key, __u32);
	__type(value, struct nvqos_tenant_config);
} tenant_config SEC(".maps");

// TCP ports (host byte order) that NVMe/TCP targets listen on.
// Written by the agent; read by tc and XDP to tell NVMe/TCP from other TCP.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NVQOS_MAX_NVME_PORTS);
	__type(key, __u16);
	__type(value, struct nvqos_port_value);
} nvme_ports SEC(".maps");

// The nvme_ports set as a bitmap (one entry): two hash lookups per packet
// become one array lookup. Written by the agent, which then sets
// NVQOS_SETTINGS_F_PORT_BITMAP; read by tc and XDP only while that flag is set.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_port_bitmap);
} nvme_port_bitmap SEC(".maps");

// One entry per NVMe/TCP connection seen from this host: tenant, role, byte
// and packet counts per direction. Inserted and updated by tc; read by XDP
// (lookup only) and by the agent, which may delete entries and resize the map
// before load.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NVQOS_DEFAULT_MAX_FLOWS);
	__type(key, struct nvqos_flow_key);
	__type(value, struct nvqos_flow_value);
} flow_table SEC(".maps");

// Per-CPU traffic counters per tenant id. Written by tc (traffic, flows) and
// XDP (drops only); the agent sums the CPUs.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NVQOS_MAX_TENANTS);
	__type(key, __u32);
	__type(value, struct nvqos_tenant_stats);
} tenant_stats SEC(".maps");

// Per-CPU health counters of the data path itself (one entry). Written by tc
// only, so a packet that crosses XDP and tc is counted once; read by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_datapath_stats);
} datapath_stats SEC(".maps");

// Global switches of the data path (one entry). Written by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_settings);
} settings SEC(".maps");

// QoS rates per limiter id (one per tenant, or shared by an aggregate
// class's tenants). Written by the agent; read by tc egress (EDT) and XDP
// (ingress ceiling).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NVQOS_MAX_LIMITERS);
	__type(key, __u32);
	__type(value, struct nvqos_limiter_config);
} limiter_config SEC(".maps");

// QoS limiter clocks per limiter id, shared by all CPUs (see abi.h for the
// arithmetic and the burst balance). Written by tc egress and XDP; read by
// the agent, which may zero an entry.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NVQOS_MAX_LIMITERS);
	__type(key, __u32);
	__type(value, struct nvqos_limiter_state);
} limiter_state SEC(".maps");

// Commands awaiting their completion, keyed by (connection, CID): submit time,
// tenant, op, bytes. Inserted by tc on a command capsule, deleted by tc on its
// completion or when the connection closes; the agent deletes entries older
// than the command timeout and counts them as timeouts.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NVQOS_MAX_INFLIGHT_CMDS);
	__type(key, struct nvqos_inflight_key);
	__type(value, struct nvqos_inflight_value);
} inflight_cmds SEC(".maps");

// Per-CPU command counters per (tenant, op, role). Written by tc; the agent sums CPUs.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NVQOS_MAX_CMD_KEYS);
	__type(key, struct nvqos_cmd_key);
	__type(value, struct nvqos_cmd_stats);
} cmd_stats SEC(".maps");

// Command latency histogram per (tenant, op, role), shared by all CPUs
// (atomic adds): 8 KiB per key whatever the CPU count. Written by tc; read by
// the agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NVQOS_MAX_CMD_KEYS);
	__type(key, struct nvqos_cmd_key);
	__type(value, struct nvqos_cmd_hist);
} cmd_latency SEC(".maps");

// Commands slower than their tenant's slow_cmd_ns, rate-limited. Written by
// tc; consumed by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NVQOS_SLOW_CMD_RINGBUF_BYTES);
} slow_cmd_events SEC(".maps");

// Per-CPU health counters of the PDU walk (one entry). Written by tc; read by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_nvme_stats);
} nvme_stats SEC(".maps");

#endif /* NVQOS_BPF_MAPS_H */
