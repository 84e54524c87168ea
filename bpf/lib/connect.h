/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NVMe identity and access control: the PDU walk hands every Fabrics Connect
 * capsule it parses to connect_inspect(), which reads HOSTNQN and SUBNQN from
 * the capsule's in-capsule data, moves the connection to the tenant an NQN
 * map names, checks the target's access rules and reports the Connect to the
 * agent. A connection to a protected port stays gated (access_conns) from its
 * SYN until a checked Connect allows it: anything the walk cannot check on
 * such a connection is refused (fail closed). docs/design.md ("NVMe identity
 * and access control") explains the rules.
 */
#ifndef NVQOS_BPF_CONNECT_H
#define NVQOS_BPF_CONNECT_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"
#include "lib/classify.h"
#include "lib/consts.h"
#include "lib/le.h"
#include "lib/maps.h"

/* Fabrics Connect data (NVMe-oF): 1024 bytes of in-capsule data. */
#define CONNECT_DATA_LEN 1024
#define CONNECT_DATA_CNTLID 16
#define CONNECT_DATA_SUBNQN 256
#define CONNECT_DATA_HOSTNQN 512

/* Capsule offsets (common header 0..7, SQE from 8) the inspection reads. */
#define CONNECT_OFF_PDO 3
#define CONNECT_OFF_PLEN 4
#define CONNECT_OFF_SGL_ADDR 32  /* SQE DPTR: SGL address (in-capsule: offset) */
#define CONNECT_OFF_SGL_LEN 40
#define CONNECT_OFF_SGL_TYPE 47  /* SGL byte 15: descriptor type << 4 | subtype */
#define CONNECT_OFF_QID 50
#define CONNECT_OFF_OPCODE 8
#define CONNECT_OFF_FCTYPE 12
#define CONNECT_OPCODE_FABRICS 0x7f
#define CONNECT_FCTYPE 0x01
#define NVME_TCP_ICREQ_PDU 0x00
#define NVME_TCP_CMD_PDU 0x04
#define CONNECT_SGL_DATA_BLOCK_OFFSET 0x01 /* in-capsule data at an offset */
#define CONNECT_CNTLID_NONE 0xffff

// HOSTNQN/SUBNQN pair -> tenant, as resolved by the agent (glob rules
// included); NVQOS_TENANT_NONE caches "no NQN rule". Written by the agent
// (on Connect events and from exact pair rules); read by tc.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NVQOS_MAX_NQN_PAIRS);
	__type(key, struct nvqos_nqn_pair);
	__type(value, struct nvqos_nqn_tenant);
} nqn_pair_tenants SEC(".maps");

// Exact SUBNQN -> tenant of rules the agent found decisive (no rule of higher
// precedence can match the same subsystem). Written by the agent; read by tc.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NVQOS_MAX_NQN_RULES);
	__type(key, struct nvqos_nqn);
	__type(value, struct nvqos_nqn_tenant);
} sub_nqn_tenants SEC(".maps");

// Exact HOSTNQN -> tenant, decisive rules only (as sub_nqn_tenants).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NVQOS_MAX_NQN_RULES);
	__type(key, struct nvqos_nqn);
	__type(value, struct nvqos_nqn_tenant);
} host_nqn_tenants SEC(".maps");

// Protected subsystems by (SUBNQN, port or 0). Written by the agent; read by tc.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NVQOS_MAX_ACCESS_SUBSYS);
	__type(key, struct nvqos_access_subsys_key);
	__type(value, struct nvqos_access_subsys);
} access_subsystems SEC(".maps");

// Host NQNs allowed per protected subsystem. Written by the agent; read by tc.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NVQOS_MAX_ACCESS_HOSTS);
	__type(key, struct nvqos_access_host_key);
	__type(value, __u32);
} access_hosts SEC(".maps");

// Initiator prefixes allowed per protected subsystem. Written by the agent; read by tc.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NVQOS_MAX_ACCESS_CIDRS);
	__type(key, struct nvqos_access_cidr_key);
	__type(value, __u32);
} access_cidrs SEC(".maps");

// Ports with at least one protected subsystem. Written by the agent; read by
// tc on a SYN.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NVQOS_MAX_NVME_PORTS);
	__type(key, __u16);
	__type(value, struct nvqos_access_port);
} access_ports SEC(".maps");

// Gated connections (pending or refused). A plain, preallocated hash: an LRU
// would let a flood of connections evict a refusal. Written by tc; the agent
// expires pending entries and frees refused ones when the map fills.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NVQOS_MAX_ACCESS_CONNS);
	__type(key, struct nvqos_flow_key);
	__type(value, struct nvqos_access_conn);
} access_conns SEC(".maps");

// Connect decisions per access subsystem id. Written by tc; read by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NVQOS_MAX_ACCESS_SUBSYS);
	__type(key, __u32);
	__type(value, struct nvqos_access_stats);
} access_stats SEC(".maps");

// Packets dropped on refused connections per tenant id (drop reason "access_denied").
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NVQOS_MAX_TENANTS);
	__type(key, __u32);
	__type(value, struct nvqos_access_drops);
} access_tenant_drops SEC(".maps");

// One record per parsed Connect. Written by tc; consumed by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NVQOS_CONNECT_RINGBUF_BYTES);
} connect_events SEC(".maps");

// Health of the Connect inspection (one entry). Written by tc; read by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_connect_stats);
} connect_stats SEC(".maps");

// Per-CPU scratch record (BPF-private): the NQNs do not fit on the BPF stack,
// and its parts double as the lookup keys of the maps above.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_connect_event);
} connect_scratch SEC(".maps");

// Per-CPU copy of the flow key (BPF-private) for access_gate_fail(), which is
// called deep in the walk's call chain, where 40 more bytes of stack do not fit.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_flow_key);
} access_key_scratch SEC(".maps");

/*
 * What connect_inspect() needs of the walk, and what it hands back. Per-CPU
 * scratch, not the stack: the walk's call chain is near the 512-byte limit.
 */
struct connect_site {
	__u32 payload_off; /* skb offset of the segment's first payload byte */
	__u32 seg_seq;     /* sequence number of that byte */
	__u32 seg_len;
	__u32 pdu_seq;     /* where the Connect capsule starts */
	__u32 tenant_id;   /* in: the connection's tenant; out: after the NQN maps */
	__u8 role;
	__u8 access;       /* target ingress with access control on: check the Connect */
	__u8 gate;         /* the connection still awaits a checked Connect (this skb's walk) */
	__u8 refuse;       /* the connection was refused in this skb's walk */
	__u8 reset;        /* out of connect_check_access(): the subsystem refuses by RST */
};

/* The capsule header bytes the walk collected (through the Connect QID). */
struct connect_capsule_hdr {
	__u8 b[CONNECT_OFF_QID + 2];
};

// The walk's connect_site (BPF-private), one per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct connect_site);
} connect_sites SEC(".maps");

static __always_inline struct nvqos_connect_stats *connect_stats_get(void)
{
	return bpf_map_lookup_elem(&connect_stats, &nvqos_zero_key);
}

/* Target ingress with access control on: the only place a Connect can be refused in time. */
static __always_inline bool access_gated(int role, __u32 dir, __u32 settings)
{
	return role == NVQOS_ROLE_TARGET && dir == NVQOS_DIR_INGRESS && (settings & NVQOS_SETTINGS_F_ACCESS);
}

static __always_inline void access_count(__u32 subsys_id, __u8 verdict)
{
	struct nvqos_access_stats *as;

	if (subsys_id >= NVQOS_MAX_ACCESS_SUBSYS)
		subsys_id = NVQOS_ACCESS_SUBSYS_UNKNOWN;
	as = bpf_map_lookup_elem(&access_stats, &subsys_id);
	if (!as)
		return;
	if (verdict == NVQOS_ACCESS_ALLOWED)
		as->allowed++;
	else if (verdict == NVQOS_ACCESS_DENIED)
		as->denied++;
	else if (verdict == NVQOS_ACCESS_DRY_RUN_DENIED)
		as->dry_run_denied++;
}

/* What tc does with a packet of a refused connection. */
#define ACCESS_PASS 0
#define ACCESS_DROP 1
#define ACCESS_RESET 2

/*
 * Refuses a connection: every further ingress packet of it is dropped, or
 * with `reset` turned into RSTs to both ends. In a dry run the refusal is
 * only counted and the connection is let through. Returns whether this skb
 * is refused.
 */
static __always_inline bool access_refuse(const struct nvqos_flow_key *key, __u32 subsys_id,
					  bool enforce, bool reset)
{
	struct nvqos_access_conn refused = {
		.since_ns = bpf_ktime_get_coarse_ns(),
		.state = NVQOS_ACCESS_CONN_REFUSED,
		.subsys_id = subsys_id,
		.flags = NVQOS_ACCESS_F_ENFORCE | (reset ? NVQOS_ACCESS_F_RESET : 0),
	};

	access_count(subsys_id, enforce ? NVQOS_ACCESS_DENIED : NVQOS_ACCESS_DRY_RUN_DENIED);
	if (!enforce) {
		bpf_map_delete_elem(&access_conns, key);
		return false;
	}
	/* Replacing a pending entry cannot fail on a full map; a new one can, and
	 * then the walk rewinds to the Connect so a retransmission is refused again. */
	bpf_map_update_elem(&access_conns, key, &refused, BPF_ANY);
	return true;
}

/* Is the connection's target port protected? */
static __always_inline bool access_ports_of(const struct nvqos_flow_key *key)
{
	__u16 port = bpf_ntohs(key->local_port);

	return bpf_map_lookup_elem(&access_ports, &port) != NULL;
}

/* A SYN to a protected port: the connection is gated until a Connect allows it. */
static __always_inline int access_conn_open(const struct nvqos_flow_key *key)
{
	__u16 port = bpf_ntohs(key->local_port);
	struct nvqos_access_port *ap = bpf_map_lookup_elem(&access_ports, &port);
	struct nvqos_access_conn pending = {
		.since_ns = bpf_ktime_get_coarse_ns(),
		.state = NVQOS_ACCESS_CONN_PENDING,
	};
	struct nvqos_connect_stats *cs;

	if (!ap)
		return TC_ACT_OK;
	pending.flags = ap->flags & (NVQOS_ACCESS_F_ENFORCE | NVQOS_ACCESS_F_RESET);
	if (!bpf_map_update_elem(&access_conns, key, &pending, BPF_ANY))
		return TC_ACT_OK;
	/* Too many gated connections: a connection we cannot follow is not let in. */
	cs = connect_stats_get();
	if (cs)
		cs->conns_full++;
	return pending.flags & NVQOS_ACCESS_F_ENFORCE ? TC_ACT_SHOT : TC_ACT_OK;
}

/*
 * Counts a packet of a refused connection under drop reason "access_denied"
 * and restarts the refusal's idle clock (the agent frees refusals idle for
 * the Connect timeout). Returns ACCESS_DROP or ACCESS_RESET.
 */
static __always_inline int access_count_refused(struct nvqos_access_conn *ac, __u32 tenant_id, __u32 packets,
						__u32 ip_len)
{
	__u32 subsys_id = ac->subsys_id < NVQOS_MAX_ACCESS_SUBSYS ? ac->subsys_id : NVQOS_ACCESS_SUBSYS_UNKNOWN;
	struct nvqos_access_stats *as = bpf_map_lookup_elem(&access_stats, &subsys_id);
	struct nvqos_access_drops *td = bpf_map_lookup_elem(&access_tenant_drops, &tenant_id);
	bool reset = ac->flags & NVQOS_ACCESS_F_RESET;

	ac->since_ns = bpf_ktime_get_coarse_ns();
	if (as) {
		as->dropped_packets += packets;
		as->dropped_bytes += ip_len;
		if (reset)
			as->resets++;
	}
	if (td) {
		td->packets += packets;
		td->bytes += ip_len;
	}
	return reset ? ACCESS_RESET : ACCESS_DROP;
}

/*
 * Target ingress: a refused connection's packets are dropped or reset,
 * counted. Returns ACCESS_PASS, ACCESS_DROP or ACCESS_RESET. The caller lets
 * RSTs pass: they carry no data and close the target's half.
 */
__noinline int access_refused(struct __sk_buff *skb, const struct nvqos_flow_key *flow, __u32 tenant_id,
			      __u32 ip_len)
{
	struct nvqos_access_conn *ac;
	struct nvqos_flow_key key;

	if (!flow)
		return ACCESS_PASS;
	key = *flow; /* see access_gate_fail() */
	ac = bpf_map_lookup_elem(&access_conns, &key);
	if (!ac || ac->state != NVQOS_ACCESS_CONN_REFUSED)
		return ACCESS_PASS;
	return access_count_refused(ac, tenant_id, skb->gso_segs ? skb->gso_segs : 1, ip_len);
}

/* XDP, target ingress with refuse "drop": drop a refused connection's packets before the stack. */
static __always_inline bool access_xdp_refused(const struct nvqos_flow_key *key, __u32 tenant_id, __u8 tcp_flags,
					       __u32 ip_len)
{
	struct nvqos_access_conn *ac;

	if (tcp_flags & NVQOS_TCP_F_RST)
		return false;
	ac = bpf_map_lookup_elem(&access_conns, key);
	if (!ac || ac->state != NVQOS_ACCESS_CONN_REFUSED || (ac->flags & NVQOS_ACCESS_F_RESET))
		return false;
	access_count_refused(ac, tenant_id, 1, ip_len);
	return true;
}

/*
 * A FIN or RST of a connection on a target with access control, either
 * direction, that was not refused: the connection ends, its gate is freed.
 * Data it retransmits later is no longer gated, but a Connect in it is still
 * checked and one that cannot be read is refused (access_port_refuse()).
 */
static __always_inline void access_conn_close(const struct nvqos_flow_key *key, int role, __u32 settings)
{
	if (role == NVQOS_ROLE_TARGET && (settings & NVQOS_SETTINGS_F_ACCESS))
		bpf_map_delete_elem(&access_conns, key);
}

/* After the walk refused the skb: does its refusal reset? */
static __always_inline bool access_resets(const struct nvqos_flow_key *key)
{
	struct nvqos_access_conn *ac = bpf_map_lookup_elem(&access_conns, key);

	return ac && ac->state == NVQOS_ACCESS_CONN_REFUSED && (ac->flags & NVQOS_ACCESS_F_RESET);
}

/* Drops the skb that got its connection refused, counted like the ones after it. */
static __always_inline int access_shot(struct __sk_buff *skb, const struct nvqos_flow_key *key,
				       __u32 tenant_id, __u32 ip_len)
{
	access_refused(skb, key, tenant_id, ip_len);
	return TC_ACT_SHOT;
}

/*
 * The gated connection did something the walk cannot vouch for (a PDU other
 * than ICReq/Connect before the Connect, lost PDU boundaries, TLS, NQNs out
 * of reach): refuse it, or count it in a dry run. Returns 1 to drop.
 * Global functions here and below: the verifier checks each once, not once
 * per path of the walk that reaches it. To the verifier their pointer
 * arguments are plain memory, which Linux 6.1 does not take as a map key
 * (only the stack, packets and maps): the ones that look the flow up copy it.
 */
__noinline int access_gate_fail(const struct nvqos_flow_key *flow)
{
	struct nvqos_connect_stats *cs = connect_stats_get();
	struct nvqos_flow_key *key;
	struct nvqos_access_conn *ac;
	bool enforce;

	key = bpf_map_lookup_elem(&access_key_scratch, &nvqos_zero_key);
	if (!flow || !key)
		return 0;
	*key = *flow;
	ac = bpf_map_lookup_elem(&access_conns, key);
	if (!ac || ac->state != NVQOS_ACCESS_CONN_PENDING)
		return 0;
	enforce = ac->flags & NVQOS_ACCESS_F_ENFORCE;
	if (cs)
		cs->gate_refused++;
	return access_refuse(key, NVQOS_ACCESS_SUBSYS_UNKNOWN, enforce, ac->flags & NVQOS_ACCESS_F_RESET);
}

/*
 * A Connect whose NQNs cannot be read on a connection that is not gated (its
 * gate was freed, or it predates the agent) to a protected port: refused as
 * if gated, so freeing a gate never lets an unchecked Connect through.
 */
static __noinline int access_port_refuse(const struct nvqos_flow_key *key)
{
	struct nvqos_connect_stats *cs = connect_stats_get();
	__u16 port = bpf_ntohs(key->local_port);
	struct nvqos_access_port *ap = bpf_map_lookup_elem(&access_ports, &port);

	if (!ap)
		return 0;
	if (cs)
		cs->gate_refused++;
	return access_refuse(key, NVQOS_ACCESS_SUBSYS_UNKNOWN, ap->flags & NVQOS_ACCESS_F_ENFORCE,
			     ap->flags & NVQOS_ACCESS_F_RESET);
}

/* bpf_loop() state: zero everything after the first NUL of both NQNs. */
struct nqn_norm {
	struct nvqos_connect_event *e;
	bool host_end;
	bool sub_end;
};

static long nqn_norm_one(__u32 i, struct nqn_norm *n)
{
	struct nvqos_connect_event *e = n->e;

	if (i >= NVQOS_NQN_LEN)
		return 1;
	/* Byte 255 is a NUL whatever was sent, as a target reads the field. */
	if (n->host_end || i == NVQOS_NQN_LEN - 1)
		e->hostnqn.name[i] = 0;
	else if (!e->hostnqn.name[i])
		n->host_end = true;
	if (n->sub_end || i == NVQOS_NQN_LEN - 1)
		e->subnqn.name[i] = 0;
	else if (!e->subnqn.name[i])
		n->sub_end = true;
	return 0;
}


/*
 * Copies SUBNQN and HOSTNQN (and CNTLID when in reach) of the Connect data
 * into e. Only from this skb: a Connect whose NQN fields continue in another
 * segment is not guessed at.
 */
static __noinline bool connect_load_nqns(struct __sk_buff *skb, const struct connect_site *s,
					 const __u8 *h, struct nvqos_connect_event *e)
{
	struct nqn_norm norm = { .e = e };
	__u32 pdo = h[CONNECT_OFF_PDO];
	__u32 plen = get_le32(h + CONNECT_OFF_PLEN);
	__u32 data_seq = s->pdu_seq + pdo;
	__s32 rel;

	/* The data must be the 1024 bytes in the capsule at PDO, as targets read it. */
	if (h[CONNECT_OFF_SGL_TYPE] != CONNECT_SGL_DATA_BLOCK_OFFSET ||
	    get_le32(h + CONNECT_OFF_SGL_ADDR) || get_le32(h + CONNECT_OFF_SGL_ADDR + 4) ||
	    get_le32(h + CONNECT_OFF_SGL_LEN) != CONNECT_DATA_LEN || plen < pdo + CONNECT_DATA_LEN)
		return false;
	rel = (__s32)(data_seq + CONNECT_DATA_SUBNQN - s->seg_seq);
	if (rel < 0 || (__u32)rel + 2 * NVQOS_NQN_LEN > s->seg_len)
		return false;
	if (bpf_skb_load_bytes(skb, s->payload_off + rel, e->subnqn.name, NVQOS_NQN_LEN) ||
	    bpf_skb_load_bytes(skb, s->payload_off + rel + NVQOS_NQN_LEN, e->hostnqn.name,
			       NVQOS_NQN_LEN))
		return false;
	/*
	 * Straight into the event, not through a local: on Linux 6.1, which
	 * rounds each frame up to 32 bytes, 8 more bytes here made the Connect's
	 * call chain 544 bytes of its 512.
	 */
	rel = (__s32)(data_seq + CONNECT_DATA_CNTLID - s->seg_seq);
	if (rel < 0 || bpf_skb_load_bytes(skb, s->payload_off + rel, &e->cntlid, sizeof(e->cntlid)))
		e->cntlid = CONNECT_CNTLID_NONE;
	else
		e->cntlid = get_le16((const __u8 *)&e->cntlid);
	bpf_loop(NVQOS_NQN_LEN, nqn_norm_one, &norm, 0);
	return true;
}

/*
 * Tenant by NQN: the agent's cached resolution of this (host, subsystem)
 * pair first (decisive even when it says "no NQN rule"), then decisive exact
 * subsystem rules, then decisive exact host rules; without an NQN rule the
 * address rules decide again (a reused 5-tuple must not keep the previous
 * connection's NQN tenant). The flow entry moves to the tenant before the
 * Connect itself is tracked.
 */
static __noinline void connect_set_tenant(struct connect_site *s, const struct nvqos_flow_key *key,
					  struct nvqos_connect_event *e, struct nvqos_connect_stats *cs)
{
	struct nvqos_nqn_tenant *t = bpf_map_lookup_elem(&nqn_pair_tenants, &e->hostnqn);
	struct nvqos_tenant_stats *ts;
	struct nvqos_flow_value *flow;
	__u32 tenant_id;

	if (!t)
		t = bpf_map_lookup_elem(&sub_nqn_tenants, &e->subnqn);
	if (!t)
		t = bpf_map_lookup_elem(&host_nqn_tenants, &e->hostnqn);
	if (t && t->tenant_id < NVQOS_MAX_TENANTS) {
		tenant_id = t->tenant_id;
		e->flags |= NVQOS_CONNECT_F_TENANT_SET;
	} else {
		tenant_id = nvqos_lookup_tenant(key, s->role, settings_flags());
		if (tenant_id >= NVQOS_MAX_TENANTS)
			return;
	}
	if (tenant_id == s->tenant_id)
		return;
	flow = bpf_map_lookup_elem(&flow_table, key);
	if (!flow)
		return;
	/* The flow was counted opened under its address tenant: move that too. */
	ts = bpf_map_lookup_elem(&tenant_stats, &flow->tenant_id);
	if (ts)
		ts->flows_opened--;
	ts = bpf_map_lookup_elem(&tenant_stats, &tenant_id);
	if (ts)
		ts->flows_opened++;
	flow->tenant_id = tenant_id;
	s->tenant_id = tenant_id;
	e->tenant_id = tenant_id;
	if (e->flags & NVQOS_CONNECT_F_TENANT_SET)
		cs->tenant_set++;
}

/* The access rule of the Connect's subsystem on this port, or 0 for none; s->reset its refusal mode. */
static __noinline __u8 connect_check_access(const struct nvqos_flow_key *key,
					    struct nvqos_connect_event *e, struct connect_site *s)
{
	struct nvqos_access_cidr_key ck = {
		.prefixlen = NVQOS_ACCESS_CIDR_ID_BITS + NVQOS_RULE_ADDR_BITS,
	};
	struct nvqos_access_subsys *sub;
	bool ok = true;
	__u16 port = e->port;

	sub = bpf_map_lookup_elem(&access_subsystems, &e->subnqn);
	if (!sub) {
		e->port = 0;
		sub = bpf_map_lookup_elem(&access_subsystems, &e->subnqn);
		e->port = port;
	}
	if (!sub)
		return NVQOS_ACCESS_UNPROTECTED;
	e->subsys_id = sub->subsys_id;
	s->reset = !!(sub->flags & NVQOS_ACCESS_F_RESET);
	if (sub->flags & NVQOS_ACCESS_F_HOSTS)
		ok = bpf_map_lookup_elem(&access_hosts, &e->subsys_id) != NULL;
	if (ok && (sub->flags & NVQOS_ACCESS_F_CIDRS)) {
		ck.subsys_id = bpf_htonl(sub->subsys_id);
		__builtin_memcpy(ck.addr, key->remote_addr, sizeof(ck.addr));
		ok = bpf_map_lookup_elem(&access_cidrs, &ck) != NULL;
	}
	if (ok)
		return NVQOS_ACCESS_ALLOWED;
	return (sub->flags & NVQOS_ACCESS_F_ENFORCE) ? NVQOS_ACCESS_DENIED : NVQOS_ACCESS_DRY_RUN_DENIED;
}

static __always_inline void connect_report(struct nvqos_connect_event *e, struct nvqos_connect_stats *cs)
{
	if (bpf_ringbuf_output(&connect_events, e, sizeof(*e), 0))
		cs->events_dropped++;
	else
		cs->events_sent++;
}

/*
 * A Fabrics Connect capsule header was parsed at s->pdu_seq. A global
 * function: the verifier checks it once, not once per path of the walk that
 * reaches it; the scratch record keeps the 512 bytes of NQNs off the stack.
 */
__noinline int connect_inspect(struct __sk_buff *skb, const struct nvqos_flow_key *flow,
			       const struct connect_capsule_hdr *hdr, struct connect_site *s)
{
	struct nvqos_connect_stats *cs = connect_stats_get();
	const struct nvqos_flow_key *key;
	struct nvqos_connect_event *e;
	const __u8 *h;
	__u8 verdict;

	e = bpf_map_lookup_elem(&connect_scratch, &nvqos_zero_key);
	if (!e || !cs || !flow || !hdr || !s)
		return 0;
	h = hdr->b;
	cs->connects++;
	__builtin_memcpy(&e->flow, flow, sizeof(e->flow));
	/* The event's copy is map memory, a map key on every kernel (access_gate_fail()). */
	key = &e->flow;
	e->tenant_id = s->tenant_id;
	e->qid = h[CONNECT_OFF_QID] | (__u16)h[CONNECT_OFF_QID + 1] << 8;
	e->cntlid = CONNECT_CNTLID_NONE;
	e->role = s->role;
	e->verdict = s->access ? NVQOS_ACCESS_UNPROTECTED : NVQOS_ACCESS_NOT_CHECKED;
	e->flags = 0;
	e->pad = 0;
	e->subsys_id = NVQOS_ACCESS_SUBSYS_UNKNOWN;
	e->port = bpf_ntohs(s->role == NVQOS_ROLE_TARGET ? key->local_port : key->remote_port);
	e->pad2 = 0;

	if (!connect_load_nqns(skb, s, h, e)) {
		cs->unparsed++;
		__builtin_memset(e->hostnqn.name, 0, NVQOS_NQN_LEN);
		__builtin_memset(e->subnqn.name, 0, NVQOS_NQN_LEN);
		e->flags = NVQOS_CONNECT_F_UNPARSED;
		if (s->gate) {
			s->refuse = access_gate_fail(key);
			s->gate = 0;
			e->verdict = s->refuse ? NVQOS_ACCESS_DENIED : NVQOS_ACCESS_DRY_RUN_DENIED;
		} else if (s->access && access_ports_of(key)) {
			s->refuse = access_port_refuse(key);
			e->verdict = s->refuse ? NVQOS_ACCESS_DENIED : NVQOS_ACCESS_DRY_RUN_DENIED;
		}
		connect_report(e, cs);
		return 0;
	}
	connect_set_tenant(s, key, e, cs);
	if (s->access) {
		s->reset = 0;
		verdict = connect_check_access(key, e, s);
		e->verdict = verdict;
		if (verdict == NVQOS_ACCESS_DENIED || verdict == NVQOS_ACCESS_DRY_RUN_DENIED) {
			s->refuse = access_refuse(key, e->subsys_id, verdict == NVQOS_ACCESS_DENIED, s->reset);
		} else {
			access_count(e->subsys_id, verdict);
			if (s->gate)
				bpf_map_delete_elem(&access_conns, key);
		}
		if (!s->refuse)
			s->gate = 0;
	}
	connect_report(e, cs);
	return 0;
}

/* The tenant of the Connect connect_pdu() just inspected (the walk's copy is not updated). */
static __always_inline __u32 connect_tenant(__u32 walk_tenant)
{
	struct connect_site *s = bpf_map_lookup_elem(&connect_sites, &nvqos_zero_key);

	return s ? s->tenant_id : walk_tenant;
}

/*
 * The walk parsed a PDU header of a connection that is gated or a Connect
 * capsule: inspect the Connect, or refuse a gated connection sending
 * anything but an ICReq first. Returns 1 to drop the skb.
 */
__noinline int connect_pdu(struct __sk_buff *skb, const struct nvqos_flow_key *key,
			   const struct connect_capsule_hdr *hdr, struct connect_site *s)
{
	const __u8 *h;

	if (!key || !hdr || !s)
		return 0;
	if (!s->access) {
		s->gate = 0;
		s->refuse = 0;
	}
	h = hdr->b;
	if (h[0] == NVME_TCP_CMD_PDU && h[CONNECT_OFF_OPCODE] == CONNECT_OPCODE_FABRICS &&
	    h[CONNECT_OFF_FCTYPE] == CONNECT_FCTYPE) {
		connect_inspect(skb, key, hdr, s);
		return s->refuse;
	}
	if (s->gate && h[0] != NVME_TCP_ICREQ_PDU) {
		s->refuse = access_gate_fail(key);
		s->gate = 0;
	}
	return s->refuse;
}

/*
 * Target ingress with access control, before the walk of a segment with
 * payload: is the connection gated? Readies connect_sites for the walk.
 */
__noinline int access_walk_begin(const struct nvqos_flow_key *flow, __u32 tenant_id)
{
	struct connect_site *s;
	struct nvqos_access_conn *ac;
	struct nvqos_flow_key key;

	s = bpf_map_lookup_elem(&connect_sites, &nvqos_zero_key);
	if (!flow || !s)
		return 0;
	key = *flow; /* see access_gate_fail() */
	ac = bpf_map_lookup_elem(&access_conns, &key);
	s->gate = ac && ac->state == NVQOS_ACCESS_CONN_PENDING;
	s->refuse = 0;
	s->tenant_id = tenant_id;
	return s->gate;
}

/*
 * After the walk: drop the skb if the walk refused the connection, or if it
 * is still gated and the walk could not follow this segment (lost: TLS or
 * lost PDU boundaries). Returns 1 to drop.
 */
__noinline int access_walk_end(struct __sk_buff *skb, const struct nvqos_flow_key *key, __u32 ip_len,
			       int lost)
{
	struct connect_site *s;

	s = bpf_map_lookup_elem(&connect_sites, &nvqos_zero_key);
	if (!key || !s)
		return 0;
	if (!s->refuse && !(s->gate && lost && access_gate_fail(key)))
		return 0;
	access_refused(skb, key, s->tenant_id, ip_len);
	return 1;
}

#endif /* NVQOS_BPF_CONNECT_H */
