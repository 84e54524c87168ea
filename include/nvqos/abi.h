/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The nvqos kernel/user ABI: every key, value, event and constant that both
 * the BPF programs (bpf/) and user space (agent/, tools/, tests/) see.
 *
 * Rules: include nothing but <linux/types.h>; fixed-width __u8..__u64 only;
 * explicit padding so both compilers lay the structs out identically.
 * tests/bpf/abi_btf_test.cpp compares every struct's size and field offsets
 * with the BTF of the compiled object, so drift fails the suite.
 */
#ifndef NVQOS_ABI_H
#define NVQOS_ABI_H

#include <linux/types.h>

/* Tenant 0 is the built-in "default" tenant: unmatched NVMe/TCP traffic. */
#define NVQOS_TENANT_DEFAULT 0u
/* Returned by the classifier when traffic is not NVMe/TCP or no tenant applies. */
#define NVQOS_TENANT_NONE 0xffffffffu

/* Map sizes. Those marked "resizable" are set by the agent before load. */
#define NVQOS_MAX_TENANTS 16384u       /* tenant_stats / tenant_config entries */
#define NVQOS_MAX_TENANT_RULES 65536u  /* tenant_rules LPM entries */
#define NVQOS_MAX_NVME_PORTS 64u       /* nvme_ports entries */
#define NVQOS_DEFAULT_MAX_FLOWS 131072u /* flow_table, resizable */

/*
 * Header parsing limits of the data path: packets with more VLAN tags or more
 * IPv6 extension headers before TCP pass unparsed and unaccounted.
 */
#define NVQOS_PARSE_MAX_VLANS 2u    /* 802.1Q / 802.1ad tags (QinQ) */
#define NVQOS_PARSE_MAX_IPV6_EXT 4u /* hop-by-hop, routing, dest. options, fragment */

/* Well-known NVMe/TCP ports (NVMe-oF TCP transport binding, IANA). */
#define NVQOS_PORT_NVME_IO 4420
#define NVQOS_PORT_NVME_DISCOVERY 8009

enum nvqos_direction {
	NVQOS_DIR_INGRESS = 0,
	NVQOS_DIR_EGRESS = 1,
	NVQOS_DIR_MAX = 2,
};

/* Which end of the NVMe/TCP connection this host is. */
enum nvqos_role {
	NVQOS_ROLE_INITIATOR = 0, /* remote port is an NVMe/TCP port */
	NVQOS_ROLE_TARGET = 1,    /* local port is an NVMe/TCP port */
	NVQOS_ROLE_MAX = 2,
};

/* nvme_ports value: what a listening NVMe/TCP port serves. */
enum nvqos_port_kind {
	NVQOS_PORT_KIND_IO = 1,
	NVQOS_PORT_KIND_DISCOVERY = 2,
};

/* Address family tags used in keys (not AF_* so the header stays libc-free). */
enum nvqos_family {
	NVQOS_FAMILY_IPV4 = 4,
	NVQOS_FAMILY_IPV6 = 6,
};

/*
 * tenant_rules: LPM trie. Data is the NVMe/TCP service port followed by the
 * remote address; IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d) so one
 * trie serves both families. A rule without a port is stored with port 0, so
 * the classifier looks up (port, addr) first and (0, addr) second.
 * prefixlen counts bits of port + address: 16 + address prefix length.
 */
struct nvqos_tenant_rule_key {
	__u32 prefixlen;
	__u16 port;     /* network byte order; 0 = any port */
	__u8 addr[16];  /* network byte order, v4-mapped for IPv4 */
	__u8 pad[2];    /* not part of the matched data: prefixlen <= 144 */
};
#define NVQOS_RULE_PORT_BITS 16u
#define NVQOS_RULE_ADDR_BITS 128u

struct nvqos_tenant_rule_value {
	__u32 tenant_id;
};

/* tenant_config: array indexed by tenant id; written by the agent. */
#define NVQOS_TENANT_F_ACTIVE (1u << 0)       /* slot holds a configured tenant */
#define NVQOS_TENANT_F_DROP_INGRESS (1u << 1) /* XDP drops the tenant's ingress */
#define NVQOS_TENANT_F_SET_PRIORITY (1u << 2) /* egress: skb->priority = classid[role] (HTB leaf) */
#define NVQOS_TENANT_F_MARK_DSCP (1u << 3)    /* egress: rewrite the IP DSCP to dscp */
#define NVQOS_TENANT_F_EDT (1u << 4)          /* egress: pace with skb->tstamp (needs sch_fq) */
#define NVQOS_TENANT_F_INGRESS_LIMIT (1u << 5) /* XDP: drop ingress above the limiter's bucket */
#define NVQOS_LIMITER_NONE 0xffffffffu
struct nvqos_tenant_config {
	__u32 flags;
	__u32 limiter_id;  /* index into limiter_config/limiter_state; NVQOS_LIMITER_NONE = none */
	__u64 slow_cmd_ns; /* commands slower than this go to slow_cmd_events; 0 = none */
	__u32 classid[NVQOS_ROLE_MAX]; /* HTB class (major << 16 | minor) of egress as initiator / target */
	__u8 dscp;         /* 6-bit DSCP, with NVQOS_TENANT_F_MARK_DSCP */
	__u8 pad[7];
};

/*
 * QoS limiters (docs/design.md, "QoS"). One limiter per tenant, or one shared
 * by all tenants of an aggregate class. Egress limits are paced with EDT
 * (skb->tstamp, honoured by sch_fq); ingress limits are XDP token buckets.
 * Bulk data leaves the target for reads and the initiator for writes, so the
 * role of the egress traffic tells which of the read/write limits applies.
 * IOPS limits count command capsules (initiator egress) or completions
 * (target egress).
 */
#define NVQOS_MAX_LIMITERS NVQOS_MAX_TENANTS
enum nvqos_limit_kind {
	NVQOS_LIMIT_EGRESS_BYTES = 0,     /* wire bytes leaving, any op */
	NVQOS_LIMIT_READ_BYTES = 1,       /* wire bytes leaving as target */
	NVQOS_LIMIT_WRITE_BYTES = 2,      /* wire bytes leaving as initiator */
	NVQOS_LIMIT_IOPS = 3,             /* commands, any op */
	NVQOS_LIMIT_READ_IOPS = 4,
	NVQOS_LIMIT_WRITE_IOPS = 5,
	NVQOS_LIMIT_INGRESS_BYTES = 6,    /* wire bytes arriving (XDP) */
	NVQOS_LIMIT_INGRESS_PACKETS = 7,  /* packets arriving (XDP) */
	NVQOS_LIMIT_MAX = 8,
};

/* A rate and the credit that may be spent above it after an idle period. */
struct nvqos_rate {
	__u64 per_sec; /* units (bytes, commands, packets) per second; 0 = unlimited */
	__u64 burst;   /* units of credit at most */
};

/* limiter_config: array indexed by limiter id; written by the agent. */
struct nvqos_limiter_config {
	struct nvqos_rate limit[NVQOS_LIMIT_MAX];
};

/*
 * limiter_state: array indexed by limiter id; written by tc egress (egress
 * kinds) and XDP (ingress kinds); user space only reads it, and zeroes an
 * entry to forget a limiter's history (e.g. when its rates change).
 *
 * Every kind k with a rate is a virtual clock, next_ns[k]: the time (the
 * data path's clock: CLOCK_MONOTONIC as bpf_ktime_get_ns(), or
 * settings.fixed_now_ns when set) at which the limiter has spent all its
 * credit. A unit costs T = 10^9 / per_sec ns; the credit of an idle limiter
 * is capped by never letting next_ns lag now by more than
 * B = burst * 10^9 / per_sec (burst clamped to NVQOS_LIMITER_MAX_BURST).
 *  - Egress (EDT): a packet charging units_k > 0 to the kinds k that apply
 *    to it (bytes: EGRESS, plus READ as target or WRITE as initiator; IOPS:
 *    the command capsules (initiator) or completions (target) it carries)
 *    departs at D = max(now, departure_ns[role], max over those k of
 *    max(next_ns[k], now - B_k)), cut to now + NVQOS_EDT_HORIZON_NS (counted
 *    in throttle_capped); then next_ns[k] = min(max(next_ns[k], D - B_k), D)
 *    + units_k * T_k, so the debt never exceeds the horizon plus one
 *    packet, and departure_ns[role] = D. departure_ns keeps the departures
 *    of a role in order, so a packet without a capsule never overtakes the
 *    capsule before it on its connection (a connection has one role), and
 *    one role's debt does not hold the other's packets. skb->tstamp
 *    becomes max(skb->tstamp, D).
 *  - Ingress (XDP): with n = max(next_ns[k], now - max(B_k, T_k)), a packet
 *    passes if n + units_k * T_k <= now for every ingress kind with a rate
 *    (each then advances next_ns[k] to that sum), else it is dropped and
 *    the state is left alone. max(B, T) lets a burst below one packet pass
 *    packets at the rate rather than none.
 * The IOPS kinds keep one clock per role (target_iops_next_ns for egress as
 * target): a host that is both ends of a tenant's connections (loopback, or
 * initiator of some and target of others) counts each command once at each
 * end, not twice against one clock; the byte kinds count what leaves the
 * host, one clock for both roles.
 * The burst balance of kind k in its units at time now is therefore
 *   balance_k = min(burst_k, max(0, now - next_ns[k]) * per_sec_k / 10^9)
 * (0 while next_ns[k] >= now: packets are being delayed). A tenant's byte
 * balance is the smallest balance of its limiter's egress byte kinds with a
 * rate (EGRESS, READ, WRITE bytes); its IO balance the smallest of the IOPS
 * kinds' clocks of both roles. Updates are plain read-modify-writes of the shared value (as
 * Cilium's EDT does): two CPUs updating one limiter in the same instant may
 * lose one packet's charge, letting it through for free.
 */
#define NVQOS_EDT_HORIZON_NS 2000000000ull     /* 2 s; sch_fq drops beyond its horizon (10 s default) */
#define NVQOS_LIMITER_MAX_BURST (1ull << 34) /* units; keeps burst * 10^9 in 64 bits */
#define NVQOS_LIMIT_IOPS_KINDS 3 /* NVQOS_LIMIT_IOPS, _READ_IOPS, _WRITE_IOPS */
struct nvqos_limiter_state {
	__u64 next_ns[NVQOS_LIMIT_MAX];     /* per enum nvqos_limit_kind */
	__u64 departure_ns[NVQOS_ROLE_MAX]; /* egress: the latest departure per role */
	/* The IOPS kinds' clocks for egress as target (completions); next_ns holds them as initiator. */
	__u64 target_iops_next_ns[NVQOS_LIMIT_IOPS_KINDS];
};

/* nvme_ports: hash keyed by a TCP port in host byte order. */
struct nvqos_port_value {
	__u32 kind; /* enum nvqos_port_kind */
};

/*
 * nvme_port_bitmap: array of one entry, the set of nvme_ports as a bitmap
 * (bit p % 64 of bits[p / 64] for host-order port p). Optional: the data path
 * uses it instead of the nvme_ports hash only while settings has
 * NVQOS_SETTINGS_F_PORT_BITMAP, so the agent writes the bits first, then sets
 * the flag. Two hash lookups cost ~30 ns per non-NVMe packet, the bitmap ~2 ns.
 */
#define NVQOS_PORT_BITMAP_WORDS (65536u / 64u)
struct nvqos_port_bitmap {
	__u64 bits[NVQOS_PORT_BITMAP_WORDS];
};

/*
 * flow_table: LRU hash of NVMe/TCP connections, keyed from this host's point of
 * view (local = ours) so both directions of a connection share one entry.
 */
struct nvqos_flow_key {
	__u8 local_addr[16];  /* v4-mapped for IPv4 */
	__u8 remote_addr[16];
	__u16 local_port;     /* network byte order */
	__u16 remote_port;    /* network byte order */
	__u32 ifindex;        /* the same 5-tuple may exist in two netns' veths */
};

#define NVQOS_FLOW_F_CLOSED (1u << 0) /* FIN or RST seen */
struct nvqos_flow_value {
	__u32 tenant_id;
	__u8 role;   /* enum nvqos_role */
	__u8 family; /* enum nvqos_family */
	__u16 flags; /* NVQOS_FLOW_F_* */
	__u64 first_seen_ns; /* CLOCK_MONOTONIC, tick resolution (bpf_ktime_get_coarse_ns) */
	__u64 last_seen_ns;
	__u64 bytes[NVQOS_DIR_MAX];
	__u64 packets[NVQOS_DIR_MAX];
};

/* tenant_stats: per-CPU array indexed by tenant id; user space sums CPUs. */
struct nvqos_tenant_stats {
	__u64 bytes[NVQOS_DIR_MAX];         /* IP bytes on the wire (GSO/GRO: per segment) */
	__u64 payload_bytes[NVQOS_DIR_MAX]; /* TCP payload bytes */
	__u64 packets[NVQOS_DIR_MAX];       /* wire packets (GSO/GRO: segment count) */
	__u64 flows_opened;           /* flow_table inserts */
	__u64 flows_closed;           /* first FIN/RST of a flow */
	__u64 dropped_bytes;          /* dropped by quarantine (XDP, NVQOS_TENANT_F_DROP_INGRESS) */
	__u64 dropped_packets;
	__u64 throttled_packets;      /* egress wire packets EDT stamped later than they would have left */
	__u64 throttle_delay_ns;      /* sum over throttled skbs of the delay added */
	__u64 throttle_capped;        /* egress skbs whose delay was cut to NVQOS_EDT_HORIZON_NS */
	__u64 ingress_limit_dropped_bytes;   /* dropped by the ingress ceiling (XDP) */
	__u64 ingress_limit_dropped_packets;
};

/* datapath_stats: per-CPU array, one entry, health of the data path itself. */
struct nvqos_datapath_stats {
	__u64 packets_seen;       /* every packet a program ran on */
	__u64 packets_nvme;       /* NVMe/TCP packets accounted */
	__u64 parse_errors;       /* truncated/malformed headers, passed untouched */
	__u64 flow_insert_failed; /* flow_table update errors */
	__u64 unclassified;       /* NVMe/TCP but no tenant (default tenant off) */
};

/* settings: array of one entry, written by the agent. */
#define NVQOS_SETTINGS_F_DEFAULT_TENANT (1u << 0) /* account unmatched flows */
#define NVQOS_SETTINGS_F_PORT_BITMAP (1u << 1)    /* nvme_port_bitmap is complete: use it */
#define NVQOS_SETTINGS_F_ACCESS (1u << 2)         /* access_ports is not empty: check Connects */
#define NVQOS_SETTINGS_F_ACCESS_XDP (1u << 3)     /* XDP drops the packets of connections refused by "drop" */
struct nvqos_settings {
	__u32 flags;
	__u32 pad;
	__u64 fixed_now_ns; /* tests only: non-zero replaces the QoS clock, so tests are deterministic */
};

/*
 * NVMe/TCP command tracking (docs/design.md, "Command tracking"). tc follows
 * the PDU stream of every connection, times each command from its capsule to
 * its completion and accounts it per (tenant, op, role).
 */
enum nvqos_cmd_op {
	NVQOS_CMD_OP_READ = 0,
	NVQOS_CMD_OP_WRITE = 1,
	NVQOS_CMD_OP_FLUSH = 2,
	NVQOS_CMD_OP_ADMIN = 3, /* admin queue and Fabrics commands */
	NVQOS_CMD_OP_OTHER = 4, /* other I/O commands */
	NVQOS_CMD_OP_MAX = 5,
};

/* Status Code Type of a failed completion (CQE status bits 10:8). */
enum nvqos_status_class {
	NVQOS_STATUS_GENERIC = 0,
	NVQOS_STATUS_COMMAND_SPECIFIC = 1,
	NVQOS_STATUS_MEDIA = 2,
	NVQOS_STATUS_PATH = 3,
	NVQOS_STATUS_VENDOR = 4, /* SCT 7h and reserved types */
	NVQOS_STATUS_CLASS_MAX = 5,
};

#define NVQOS_MAX_CMD_KEYS 1024u          /* (tenant, op, role) with command stats */
#define NVQOS_MAX_INFLIGHT_CMDS 262144u   /* inflight_cmds LRU entries */
#define NVQOS_SLOW_CMD_RINGBUF_BYTES (256u * 1024u)
/* slow_cmd_events token bucket: events per second and burst, all tenants together. */
#define NVQOS_SLOW_CMD_RATE 1000u
#define NVQOS_SLOW_CMD_BURST 200u

/* cmd_stats / cmd_latency key. */
struct nvqos_cmd_key {
	__u32 tenant_id;
	__u8 op;   /* enum nvqos_cmd_op */
	__u8 role; /* enum nvqos_role */
	__u16 pad;
};

/* cmd_stats: per-CPU hash; user space sums CPUs. */
struct nvqos_cmd_stats {
	__u64 submitted;  /* command capsules seen and tracked */
	__u64 completed;  /* completions matched to a tracked command (latency samples) */
	__u64 bytes;      /* data length (SGL) of completed commands */
	__u64 errors[NVQOS_STATUS_CLASS_MAX]; /* completed with a non-zero status */
	__u64 aborted;    /* in flight when the connection closed (FIN/RST) */
	__u64 lost;       /* replaced by a capsule reusing its CID: completion never seen */
};

/* cmd_latency: hash of one shared histogram per key (atomic adds), ns in
 * NVQOS_HIST_KERNEL_SUB_BITS log-linear buckets; the last bucket holds all
 * larger values. */
#define NVQOS_CMD_HIST_BUCKETS 1024u /* == NVQOS_HIST_KERNEL_BUCKETS */
struct nvqos_cmd_hist {
	__u64 buckets[NVQOS_CMD_HIST_BUCKETS];
};

/* inflight_cmds: LRU hash of commands awaiting their completion. */
struct nvqos_inflight_key {
	struct nvqos_flow_key flow;
	__u16 cid;
	__u16 pad;
};

struct nvqos_inflight_value {
	__u64 submit_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 tenant_id;
	__u32 bytes;
	__u8 op;   /* enum nvqos_cmd_op */
	__u8 role; /* enum nvqos_role */
	__u8 opcode;
	__u8 pad[5];
};

/* slow_cmd_events ring buffer record. */
struct nvqos_slow_cmd_event {
	struct nvqos_flow_key flow;
	__u64 latency_ns;
	__u32 tenant_id;
	__u32 bytes;
	__u16 cid;
	__u16 status; /* CQE status without the phase bit */
	__u8 op;
	__u8 role;
	__u8 opcode;
	__u8 pad;
};

/* nvme_stats: per-CPU array, one entry: health of the PDU walk. */
struct nvqos_nvme_stats {
	__u64 pdus;            /* PDU headers parsed */
	__u64 desync;          /* times a stream lost track of PDU boundaries */
	__u64 resync;          /* times a lost stream found a PDU boundary again */
	__u64 unmatched_resp;  /* completions without a tracked command */
	__u64 inflight_insert_failed;
	__u64 tls_flows;       /* connections that start with a TLS ClientHello */
	__u64 slow_cmd_events; /* slow-command records sent */
	__u64 slow_cmd_dropped; /* suppressed by the rate limit or a full ring */
	__u64 cid_reused;      /* a capsule reused the CID of a tracked command */
};

/*
 * NVMe identity and access control (docs/design.md, "NVMe identity and
 * access control"). tc reads HOSTNQN and SUBNQN from the Fabrics Connect
 * capsule of each connection, resolves the tenant from exact NQN rules and
 * checks the target's access rules before the target sees the Connect.
 * NQN fields travel as 256 bytes, NUL-terminated; the data path zeroes every
 * byte after the first NUL (byte 255 is forced to NUL, as Linux nvmet does)
 * so that keys compare what a target compares.
 */
#define NVQOS_NQN_LEN 256u
#define NVQOS_MAX_NQN_RULES 4096u      /* host_nqn_tenants / sub_nqn_tenants entries */
#define NVQOS_MAX_NQN_PAIRS 4096u      /* nqn_pair_tenants LRU entries */
#define NVQOS_MAX_ACCESS_SUBSYS 1024u  /* access subsystem ids; 0 = unknown subsystem */
#define NVQOS_MAX_ACCESS_HOSTS 16384u  /* access_hosts entries */
#define NVQOS_MAX_ACCESS_CIDRS 16384u  /* access_cidrs entries */
#define NVQOS_MAX_ACCESS_CONNS 65536u  /* access_conns entries: connections awaiting or refused */
#define NVQOS_CONNECT_RINGBUF_BYTES (256u * 1024u)
#define NVQOS_ACCESS_SUBSYS_UNKNOWN 0u

struct nvqos_nqn {
	__u8 name[NVQOS_NQN_LEN]; /* NUL-padded */
};

/* nqn_pair_tenants key (host, then subsystem); sub/host_nqn_tenants key is a struct nvqos_nqn. */
struct nvqos_nqn_pair {
	struct nvqos_nqn host;
	struct nvqos_nqn sub;
};

/* NQN -> tenant maps. NVQOS_TENANT_NONE: no NQN rule applies, keep the address tenant. */
struct nvqos_nqn_tenant {
	__u32 tenant_id;
};

/* access_subsystems: a protected subsystem, keyed by (SUBNQN, target port; 0 = any port). */
struct nvqos_access_subsys_key {
	struct nvqos_nqn sub;
	__u16 port; /* host byte order; 0 = every port */
	__u16 pad;
};

#define NVQOS_ACCESS_F_ENFORCE (1u << 0) /* refuse; without it a refusal is only counted (dry run) */
#define NVQOS_ACCESS_F_HOSTS (1u << 1)   /* the host NQN must be listed in access_hosts */
#define NVQOS_ACCESS_F_CIDRS (1u << 2)   /* the initiator address must be in access_cidrs */
#define NVQOS_ACCESS_F_RESET (1u << 3)   /* refuse by TCP resets to both ends (else: drop) */
struct nvqos_access_subsys {
	__u32 subsys_id; /* 1 .. NVQOS_MAX_ACCESS_SUBSYS - 1 */
	__u32 flags;     /* NVQOS_ACCESS_F_* */
};

/* access_hosts: (subsystem id, host NQN) pairs allowed to connect. Value: __u32 1. */
struct nvqos_access_host_key {
	__u32 subsys_id;
	struct nvqos_nqn host;
};

/* access_cidrs: LPM trie over (subsystem id, initiator address); value __u32 1. */
struct nvqos_access_cidr_key {
	__u32 prefixlen; /* 32 + address bits (v4-mapped space) */
	__u32 subsys_id; /* network byte order, so the trie matches it first */
	__u8 addr[16];
};
#define NVQOS_ACCESS_CIDR_ID_BITS 32u

/* access_ports: hash keyed by a host-order port with at least one protected subsystem. */
struct nvqos_access_port {
	__u32 flags; /* NVQOS_ACCESS_F_ENFORCE if any subsystem on the port enforces;
		      * NVQOS_ACCESS_F_RESET unless one of those refuses by "drop" */
};

/*
 * access_conns: connections to a protected port whose SYN the data path saw
 * and that have not yet been allowed by a checked Connect. No entry = allowed
 * (or predating the agent). Written by tc, which frees an entry on the
 * connection's FIN or RST; the agent turns PENDING entries older than the
 * Connect timeout into REFUSED and frees REFUSED ones idle that long.
 */
enum nvqos_access_conn_state {
	NVQOS_ACCESS_CONN_PENDING = 1, /* no Connect checked yet */
	NVQOS_ACCESS_CONN_REFUSED = 2, /* every further ingress packet is dropped or reset (RSTs pass) */
};
struct nvqos_access_conn {
	__u64 since_ns;  /* CLOCK_MONOTONIC (coarse): state entered; REFUSED: last packet refused */
	__u32 state;     /* enum nvqos_access_conn_state */
	__u32 subsys_id; /* of the refusal; 0 = unknown */
	__u32 flags;     /* NVQOS_ACCESS_F_ENFORCE: refusing (else dry run); NVQOS_ACCESS_F_RESET */
	__u32 pad;
};

/* What the data path decided about a Connect. */
enum nvqos_access_verdict {
	NVQOS_ACCESS_UNPROTECTED = 0,    /* no access rule for the subsystem on this port */
	NVQOS_ACCESS_ALLOWED = 1,
	NVQOS_ACCESS_DENIED = 2,         /* refused: the connection's ingress is dropped */
	NVQOS_ACCESS_DRY_RUN_DENIED = 3, /* would have been refused; passed (dry run) */
	NVQOS_ACCESS_NOT_CHECKED = 4,    /* initiator side: the target checks */
};

/* access_stats: per-CPU array indexed by subsystem id (0 = unknown subsystem). */
struct nvqos_access_stats {
	__u64 allowed;         /* Connects allowed */
	__u64 denied;          /* connections refused */
	__u64 dry_run_denied;  /* connections that would have been refused */
	__u64 dropped_packets; /* ingress packets dropped on refused connections */
	__u64 dropped_bytes;   /* their IP bytes */
	__u64 resets;          /* refused segments turned into a TCP RST pair (refuse "reset") */
};

/* access_tenant_drops: per-CPU array indexed by tenant id (drop reason "access_denied"). */
struct nvqos_access_drops {
	__u64 packets;
	__u64 bytes;
};

/* connect_events ring buffer record: one per Connect capsule the walk parses. */
#define NVQOS_CONNECT_F_TENANT_SET (1u << 0) /* the data path set the tenant from an NQN map */
#define NVQOS_CONNECT_F_UNPARSED (1u << 1)   /* the NQNs were not in the capsule's skb: none below */
struct nvqos_connect_event {
	struct nvqos_flow_key flow;
	__u32 tenant_id; /* tenant the connection is attributed to after the Connect */
	__u16 qid;       /* 0 = admin queue */
	__u16 cntlid;    /* from the Connect data; 0xffff = dynamic */
	__u8 role;       /* enum nvqos_role */
	__u8 verdict;    /* enum nvqos_access_verdict */
	__u8 flags;      /* NVQOS_CONNECT_F_* */
	__u8 pad;
	/* From here the record doubles as map keys: access_hosts (subsys_id,
	 * hostnqn), nqn_pair_tenants (hostnqn, subnqn), access_subsystems
	 * (subnqn, port). Keep the order. */
	__u32 subsys_id;           /* access subsystem id, 0 = unprotected or unknown */
	struct nvqos_nqn hostnqn;
	struct nvqos_nqn subnqn;
	__u16 port;                /* NVMe/TCP service port, host order */
	__u16 pad2;
};

/* connect_stats: per-CPU array, one entry. */
struct nvqos_connect_stats {
	__u64 connects;         /* Connect capsules parsed */
	__u64 unparsed;         /* Connect whose NQNs were not in its skb */
	__u64 events_sent;      /* connect_events records */
	__u64 events_dropped;   /* ring buffer full */
	__u64 tenant_set;       /* connections moved to a tenant by an NQN map */
	__u64 gate_refused;     /* protected connections refused before a parseable Connect */
	__u64 conns_full;       /* SYNs dropped: access_conns full (fail closed) */
};

#endif /* NVQOS_ABI_H */
