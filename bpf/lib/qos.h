/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * QoS enforcement in the data path: on tc egress, skb->priority (HTB leaf),
 * DSCP marking and EDT pacing (skb->tstamp, honoured by sch_fq) per tenant;
 * in XDP, the ingress ceiling as a token bucket. The limiter arithmetic is
 * documented with struct nvqos_limiter_state in include/nvqos/abi.h, the
 * mechanism in docs/design.md ("QoS").
 */
#ifndef NVQOS_BPF_QOS_H
#define NVQOS_BPF_QOS_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"
#include "lib/consts.h"
#include "lib/maps.h"
#include "lib/nvme_pdu.h"
#include "lib/parse.h"

#define NVQOS_NSEC_PER_SEC 1000000000ull

/* The IPv4 header's checksum, and the 16-bit word holding version/IHL and TOS. */
#define NVQOS_IPV4_CSUM_OFF 10
#define NVQOS_IP_DSCP_SHIFT 2
#define NVQOS_IP_ECN_MASK 0x03
/* IPv6: version(4) | traffic class(8) | flow label(20); TC's DSCP in bits 11:6 of the first word. */
#define NVQOS_IPV6_DSCP_MASK 0x0fc0
#define NVQOS_IPV6_DSCP_SHIFT 6

#define NVQOS_QOS_EGRESS_FLAGS \
	(NVQOS_TENANT_F_SET_PRIORITY | NVQOS_TENANT_F_MARK_DSCP | NVQOS_TENANT_F_EDT)

/* What an egress skb charges to its limiter, per enum nvqos_limit_kind (egress kinds). */
struct qos_charge {
	__u64 units[NVQOS_LIMIT_INGRESS_BYTES];
};

/*
 * What egress QoS needs of one accounted skb and its tenant: the argument of
 * a global function, which the verifier checks once, not once per parser
 * path of the program.
 */
struct qos_egress_pkt {
	__u64 wire_bytes;
	__u32 tenant_id;
	__u32 segs;
	__u32 flags;    /* the tenant's NVQOS_TENANT_F_* */
	__u32 limiter_id;
	__u32 classid;  /* of the role */
	__u16 l3_off;
	__u8 family;
	__u8 role;
	__u8 dscp;
	__u8 pad[1];
	struct nvme_ios ios;
};

/* The QoS clock: the test clock when the agent (a test) set one. */
static __always_inline __u64 qos_now(void)
{
	struct nvqos_settings *s = bpf_map_lookup_elem(&settings, &nvqos_zero_key);

	if (s && s->fixed_now_ns)
		return s->fixed_now_ns;
	return bpf_ktime_get_ns();
}

/* ns that `units` take at the rate; units stay far below 2^34, so no overflow. */
static __always_inline __u64 qos_cost_ns(__u64 units, __u64 per_sec)
{
	return units * NVQOS_NSEC_PER_SEC / per_sec;
}

/* How far the limiter's clock may lag now: the burst as time at the rate. */
static __always_inline __u64 qos_burst_ns(const struct nvqos_rate *r)
{
	__u64 burst = r->burst < NVQOS_LIMITER_MAX_BURST ? r->burst : NVQOS_LIMITER_MAX_BURST;

	return burst * NVQOS_NSEC_PER_SEC / r->per_sec;
}

static __always_inline __u64 qos_max(__u64 a, __u64 b)
{
	return a > b ? a : b;
}

/* t - d, or 0 before the clock's start (a small test clock, or early boot). */
static __always_inline __u64 qos_sub_floor(__u64 t, __u64 d)
{
	return t > d ? t - d : 0;
}

/*
 * Rewrites the DSCP, keeping ECN. IPv4: the header checksum is patched for
 * the changed 16-bit word; the TCP checksum does not cover the TOS. IPv6: the
 * traffic class has no checksum. Nothing is written when the DSCP is already
 * right, so an unchanged packet stays a clone.
 */
static __always_inline void qos_mark_dscp(struct __sk_buff *skb, const struct qos_egress_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off = p->l3_off;
	__u16 old_word, new_word;
	__u8 *first;
	__u8 tos;

	/* Read directly (the parser saw the header linear); write through helpers only, since a
	 * direct write would make the verifier un-clone every skb the program sees. */
	if (off > NVQOS_PARSE_PULL_LEN)
		return;
	first = data + off;
	if ((void *)(first + sizeof(old_word)) > end)
		return;
	old_word = *(__u16 *)first;
	if (p->family == NVQOS_FAMILY_IPV4) {
		tos = bpf_ntohs(old_word) & 0xff;
		tos = (p->dscp << NVQOS_IP_DSCP_SHIFT) | (tos & NVQOS_IP_ECN_MASK);
		new_word = bpf_htons((bpf_ntohs(old_word) & 0xff00) | tos);
		if (new_word == old_word)
			return;
		if (bpf_l3_csum_replace(skb, off + NVQOS_IPV4_CSUM_OFF, old_word, new_word,
					sizeof(new_word)))
			return;
	} else {
		new_word = bpf_htons((bpf_ntohs(old_word) & ~NVQOS_IPV6_DSCP_MASK) |
				     ((__u16)(p->dscp & 0x3f) << NVQOS_IPV6_DSCP_SHIFT));
		if (new_word == old_word)
			return;
	}
	bpf_skb_store_bytes(skb, off, &new_word, sizeof(new_word), 0);
}

/* The skb's charge to each egress kind: bytes by role, IOPS by op. */
static __always_inline void qos_egress_charge(struct qos_charge *c, __u8 role, __u64 wire_bytes,
					      const struct nvme_ios *ios)
{
	__u64 reads = ios->n[NVQOS_CMD_OP_READ];
	__u64 writes = ios->n[NVQOS_CMD_OP_WRITE];

	c->units[NVQOS_LIMIT_EGRESS_BYTES] = wire_bytes;
	c->units[NVQOS_LIMIT_READ_BYTES] = role == NVQOS_ROLE_TARGET ? wire_bytes : 0;
	c->units[NVQOS_LIMIT_WRITE_BYTES] = role == NVQOS_ROLE_INITIATOR ? wire_bytes : 0;
	/* Admin and Fabrics commands (keep-alive, Connect) are never paced. */
	c->units[NVQOS_LIMIT_IOPS] = reads + writes + ios->n[NVQOS_CMD_OP_FLUSH] +
				     ios->n[NVQOS_CMD_OP_OTHER];
	c->units[NVQOS_LIMIT_READ_IOPS] = reads;
	c->units[NVQOS_LIMIT_WRITE_IOPS] = writes;
}

/* The clock of kind k for egress in `role`: the IOPS kinds have one per role (see abi.h). */
static __always_inline __u64 *qos_clock(struct nvqos_limiter_state *st, __u32 k, __u8 role)
{
	if (role == NVQOS_ROLE_TARGET && k >= NVQOS_LIMIT_IOPS &&
	    k < NVQOS_LIMIT_IOPS + NVQOS_LIMIT_IOPS_KINDS)
		return &st->target_iops_next_ns[k - NVQOS_LIMIT_IOPS];
	return &st->next_ns[k];
}

/*
 * EDT: the departure time of an skb under its limiter (see abi.h), charged
 * to the limiter. Plain read-modify-write of the shared state: a charge lost
 * to a concurrent update on another CPU lets one packet leave early, never
 * stalls one.
 */
static __always_inline __u64 qos_edt_departure(const struct nvqos_limiter_config *cfg,
					       struct nvqos_limiter_state *st,
					       const struct qos_charge *c, __u8 role, __u64 now,
					       bool *capped)
{
	__u64 burst_ns[NVQOS_LIMIT_INGRESS_BYTES] = {};
	__u64 horizon = now + NVQOS_EDT_HORIZON_NS;
	__u64 depart = qos_max(now, st->departure_ns[role & 1]);
	__u32 k;

#pragma unroll
	for (k = 0; k < NVQOS_LIMIT_INGRESS_BYTES; k++) {
		if (!cfg->limit[k].per_sec || !c->units[k])
			continue;
		burst_ns[k] = qos_burst_ns(&cfg->limit[k]);
		depart = qos_max(depart, qos_max(*qos_clock(st, k, role), qos_sub_floor(now, burst_ns[k])));
	}
	*capped = depart > horizon;
	if (*capped)
		depart = horizon;
#pragma unroll
	for (k = 0; k < NVQOS_LIMIT_INGRESS_BYTES; k++) {
		__u64 *clock = qos_clock(st, k, role);
		__u64 from;

		if (!cfg->limit[k].per_sec || !c->units[k])
			continue;
		/* Charged from at most the departure: the debt stops at the horizon plus one packet. */
		from = qos_max(*clock, qos_sub_floor(depart, burst_ns[k]));
		if (from > depart)
			from = depart;
		*clock = from + qos_cost_ns(c->units[k], cfg->limit[k].per_sec);
	}
	/* Written only when it moves: most packets of a limiter with credit leave at now. */
	if (depart != st->departure_ns[role & 1])
		st->departure_ns[role & 1] = depart;
	return depart;
}

/* EDT for one skb of a tenant with NVQOS_TENANT_F_EDT: stamp, count. */
static __always_inline void qos_edt(struct __sk_buff *skb, const struct qos_egress_pkt *p)
{
	struct nvqos_limiter_config *cfg;
	struct nvqos_limiter_state *st;
	struct nvqos_tenant_stats *ts;
	struct qos_charge charge;
	__u32 limiter_id = p->limiter_id;
	__u32 tenant_id = p->tenant_id;
	bool capped = false;
	__u64 now, depart, earliest;

	cfg = bpf_map_lookup_elem(&limiter_config, &limiter_id);
	st = bpf_map_lookup_elem(&limiter_state, &limiter_id);
	if (!cfg || !st)
		return;
	qos_egress_charge(&charge, p->role, p->wire_bytes, &p->ios);
	now = qos_now();
	depart = qos_edt_departure(cfg, st, &charge, p->role, now, &capped);
	earliest = qos_max(skb->tstamp, now);
	if (depart <= earliest)
		return;
	skb->tstamp = depart;
	ts = bpf_map_lookup_elem(&tenant_stats, &tenant_id);
	if (ts) {
		ts->throttled_packets += p->segs;
		ts->throttle_delay_ns += depart - earliest;
		if (capped)
			ts->throttle_capped++;
	}
}

/* Egress QoS of one skb of a tenant with QoS flags. Always returns 0. */
__noinline int nvqos_qos_egress(struct __sk_buff *skb, const struct qos_egress_pkt *p)
{
	if (!skb || !p)
		return 0;
	/* Class id 0 is no HTB class: leave the socket's priority alone. */
	if ((p->flags & NVQOS_TENANT_F_SET_PRIORITY) && p->classid)
		skb->priority = p->classid;
	if (p->flags & NVQOS_TENANT_F_MARK_DSCP)
		qos_mark_dscp(skb, p);
	if ((p->flags & NVQOS_TENANT_F_EDT) && p->limiter_id < NVQOS_MAX_LIMITERS)
		qos_edt(skb, p);
	return 0;
}

/*
 * tc egress, after accounting and the PDU walk: the tenant's egress QoS.
 * A tenant without QoS flags costs one array lookup.
 */
static __always_inline void qos_egress(struct __sk_buff *skb, const struct nvqos_pkt *pkt,
				       __u32 tenant_id, int role, __u64 wire_bytes, __u32 segs,
				       const struct nvme_ios *ios)
{
	struct nvqos_tenant_config *config = bpf_map_lookup_elem(&tenant_config, &tenant_id);
	struct qos_egress_pkt p = {};

	if (!config || !(config->flags & NVQOS_QOS_EGRESS_FLAGS))
		return;
	p.wire_bytes = wire_bytes;
	p.tenant_id = tenant_id;
	p.segs = segs;
	p.flags = config->flags;
	p.limiter_id = config->limiter_id;
	p.classid = config->classid[role & 1];
	p.l3_off = pkt->l3_off;
	p.family = pkt->family;
	p.role = role;
	p.dscp = config->dscp;
	p.ios = *ios;
	nvqos_qos_egress(skb, &p);
}

/*
 * XDP ingress ceiling: one token bucket per ingress kind with a rate (bytes,
 * packets). Returns true when the packet fits all of them (and charges it),
 * false to drop it (nothing charged).
 */
static __always_inline bool qos_ingress_admit(__u32 limiter_id, __u64 bytes)
{
	struct nvqos_limiter_config *cfg = bpf_map_lookup_elem(&limiter_config, &limiter_id);
	struct nvqos_limiter_state *st = bpf_map_lookup_elem(&limiter_state, &limiter_id);
	__u64 next[2] = {}, units[2] = {bytes, 1};
	__u64 now, cost, tolerance;
	__u32 i;

	if (!cfg || !st)
		return true;
	now = qos_now();
#pragma unroll
	for (i = 0; i < 2; i++) {
		const struct nvqos_rate *r = &cfg->limit[NVQOS_LIMIT_INGRESS_BYTES + i];

		if (!r->per_sec)
			continue;
		cost = qos_cost_ns(units[i], r->per_sec);
		tolerance = qos_max(qos_burst_ns(r), cost);
		next[i] = qos_max(st->next_ns[NVQOS_LIMIT_INGRESS_BYTES + i],
				  qos_sub_floor(now, tolerance)) + cost;
		if (next[i] > now)
			return false;
	}
#pragma unroll
	for (i = 0; i < 2; i++)
		if (next[i])
			st->next_ns[NVQOS_LIMIT_INGRESS_BYTES + i] = next[i];
	return true;
}

/* XDP, a tenant with NVQOS_TENANT_F_INGRESS_LIMIT: XDP_PASS or XDP_DROP (counted). */
__noinline int nvqos_qos_xdp_ingress(__u32 limiter_id, __u32 tenant_id, __u32 ip_len)
{
	struct nvqos_tenant_stats *ts;

	if (limiter_id >= NVQOS_MAX_LIMITERS || qos_ingress_admit(limiter_id, ip_len))
		return XDP_PASS;
	ts = bpf_map_lookup_elem(&tenant_stats, &tenant_id);
	if (ts) {
		ts->ingress_limit_dropped_bytes += ip_len;
		ts->ingress_limit_dropped_packets++;
	}
	return XDP_DROP;
}

#endif /* NVQOS_BPF_QOS_H */
