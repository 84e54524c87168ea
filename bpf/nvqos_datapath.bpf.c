// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The nvqos data path: tc ingress/egress account NVMe/TCP traffic per
 * connection and tenant, tc egress applies the tenants' QoS (priority, DSCP,
 * EDT); XDP drops the ingress of tenants the policy blocks or limits.
 * docs/design.md ("Data path") explains the choices.
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"
#include "lib/classify.h"
#include "lib/consts.h"
#include "lib/maps.h"
#include "lib/nvme_pdu.h"
#include "lib/parse.h"
#include "lib/qos.h"
#include "lib/reset.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What one packet (one GSO/GRO super-packet) was on the wire. */
struct wire_size {
	__u64 bytes;   /* IP bytes, per-segment headers included */
	__u64 payload; /* TCP payload bytes */
	__u32 packets; /* segments */
};

/*
 * A GSO/GRO super-packet crossed (or will cross) the wire as gso_segs
 * segments, each with its own copy of the IP and TCP headers. gso_segs may be
 * unset on packets from some drivers and virtio; then derive it from gso_size.
 */
static __always_inline void wire_size_of(const struct nvqos_pkt *pkt, __u32 gso_segs,
					 __u32 gso_size, struct wire_size *w)
{
	__u32 hdrs = pkt->ip_hdr_len + pkt->tcp_hdr_len;
	__u32 payload = pkt->ip_len - hdrs;
	__u32 segs = 1;

	if (gso_size) {
		segs = gso_segs ? gso_segs : (payload + gso_size - 1) / gso_size;
		if (!segs)
			segs = 1;
	}
	w->packets = segs;
	w->payload = payload;
	w->bytes = pkt->ip_len + (__u64)(segs - 1) * hdrs;
}

/*
 * Direct access first: the headers of almost every skb are in the linear
 * area, and pulling would un-clone the egress TCP clones. Only when they are
 * not (AF_PACKET frames may carry just the Ethernet header there) pull and
 * parse again.
 */
static __always_inline int tc_parse(struct __sk_buff *skb, struct nvqos_pkt *pkt)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 pull_len;
	int ret;

	ret = nvqos_parse(data, end, pkt);
	if (ret == NVQOS_PARSE_SHORT && skb->len > (__u32)(end - data)) {
		pull_len = skb->len < NVQOS_PARSE_PULL_LEN ? skb->len : NVQOS_PARSE_PULL_LEN;
		if (bpf_skb_pull_data(skb, pull_len))
			return NVQOS_PARSE_SHORT;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		ret = nvqos_parse(data, end, pkt);
	}
	if (ret != NVQOS_PARSE_OK)
		return ret;
	return nvqos_parse_check_len(pkt, skb->len, skb->gso_size != 0);
}

/* Inserts the flow of a connection seen for the first time (or again after LRU eviction). */
static __always_inline struct nvqos_flow_value *flow_open(const struct nvqos_flow_key *key, int role,
							  const struct nvqos_pkt *pkt, __u32 tenant_id,
							  __u64 now, struct nvqos_datapath_stats *ds,
							  struct nvqos_tenant_stats *ts)
{
	struct nvqos_flow_value fresh = {
		.tenant_id = tenant_id,
		.role = role,
		.family = pkt->family,
		.first_seen_ns = now,
		.last_seen_ns = now,
	};
	long err;

	err = bpf_map_update_elem(&flow_table, key, &fresh, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		ds->flow_insert_failed++;
		return NULL;
	}
	/* -EEXIST: another CPU opened it between our lookup and insert. */
	if (!err && ts)
		ts->flows_opened++;
	return bpf_map_lookup_elem(&flow_table, key);
}

/*
 * The first FIN or RST closes a flow; a SYN (not SYN-ACK) on a closed flow is
 * the 5-tuple being reused by a new connection. Plain read-modify-write: two
 * CPUs closing one flow in the same instant may both count it.
 */
static __always_inline void flow_track_state(struct nvqos_flow_value *flow, __u8 tcp_flags,
					     struct nvqos_tenant_stats *ts)
{
	bool closed = flow->flags & NVQOS_FLOW_F_CLOSED;

	if (tcp_flags & (NVQOS_TCP_F_FIN | NVQOS_TCP_F_RST)) {
		if (closed)
			return;
		flow->flags |= NVQOS_FLOW_F_CLOSED;
		if (ts)
			ts->flows_closed++;
	} else if ((tcp_flags & (NVQOS_TCP_F_SYN | NVQOS_TCP_F_ACK)) == NVQOS_TCP_F_SYN && closed) {
		flow->flags &= ~NVQOS_FLOW_F_CLOSED;
		if (ts)
			ts->flows_opened++;
	}
}

/*
 * tc, both directions: parse, classify, find or open the flow, account.
 * Always TC_ACT_OK: egress QoS delays (EDT), marks and classifies, it never
 * drops. After the accounting, the PDU walk times the connection's NVMe
 * commands and counts what egress QoS charges to IOPS limits.
 */
static __always_inline int tc_account(struct __sk_buff *skb, __u32 dir)
{
	struct nvqos_datapath_stats *ds;
	struct nvqos_tenant_stats *ts;
	struct nvqos_flow_value *flow;
	struct nvqos_flow_key key;
	struct nvme_ios ios = {};
	struct nvqos_pkt pkt;
	struct wire_size wire;
	__u32 tenant_id;
	__u32 settings;
	bool gated;
	__u64 now;
	int role;
	int ret;

	ds = bpf_map_lookup_elem(&datapath_stats, &nvqos_zero_key);
	if (!ds)
		return TC_ACT_OK;
	ds->packets_seen++;

	ret = tc_parse(skb, &pkt);
	if (ret != NVQOS_PARSE_OK) {
		if (ret != NVQOS_PARSE_SKIP)
			ds->parse_errors++;
		return TC_ACT_OK;
	}
	settings = settings_flags();
	role = nvqos_classify(&pkt, dir, skb->ifindex, port_bitmap(settings), &key);
	if (role < 0)
		return TC_ACT_OK;

	/* Coarse clock: idle-flow bookkeeping needs no more than tick precision. */
	now = bpf_ktime_get_coarse_ns();
	flow = bpf_map_lookup_elem(&flow_table, &key);
	if (flow) {
		tenant_id = flow->tenant_id;
		ts = tenant_stats_of(tenant_id);
	} else {
		tenant_id = nvqos_lookup_tenant(&key, role, settings);
		if (tenant_id == NVQOS_TENANT_NONE) {
			ds->unclassified++;
			return TC_ACT_OK;
		}
		ts = tenant_stats_of(tenant_id);
		/* A SYN's handshake is kept by nvme_track() until it completes. */
		if (opens_flow(pkt.tcp_flags))
			flow = flow_open(&key, role, &pkt, tenant_id, now, ds, ts);
	}

	gated = access_gated(role, dir, settings);
	if (gated && !(pkt.tcp_flags & NVQOS_TCP_F_RST)) {
		ret = access_refused(skb, &key, tenant_id, pkt.ip_len);
		if (ret != ACCESS_PASS)
			return ret == ACCESS_RESET ? access_reset(skb, &pkt) : TC_ACT_SHOT;
	}

	ds->packets_nvme++;
	wire_size_of(&pkt, skb->gso_segs, skb->gso_size, &wire);
	if (ts) {
		ts->bytes[dir] += wire.bytes;
		ts->payload_bytes[dir] += wire.payload;
		ts->packets[dir] += wire.packets;
	}
	if (flow) {
		__sync_fetch_and_add(&flow->bytes[dir], wire.bytes);
		__sync_fetch_and_add(&flow->packets[dir], wire.packets);
		flow->last_seen_ns = now;
		flow_track_state(flow, pkt.tcp_flags, ts);
	}
	ret = nvme_track(skb, &pkt, &key, tenant_id, role, dir, &ios, gated, flow != NULL);
	if (dir == NVQOS_DIR_EGRESS)
		qos_egress(skb, &pkt, tenant_id, role, wire.bytes, wire.packets, &ios);
	if (pkt.tcp_flags & (NVQOS_TCP_F_FIN | NVQOS_TCP_F_RST)) {
		nvme_close(&key);
		if (ret != TC_ACT_SHOT)
			access_conn_close(&key, role, settings);
	}
	if (ret == TC_ACT_SHOT && gated && access_resets(&key))
		return access_reset(skb, &pkt);
	return ret;
}

SEC("tc")
int nvqos_tc_ingress(struct __sk_buff *skb)
{
	return tc_account(skb, NVQOS_DIR_INGRESS);
}

SEC("tc")
int nvqos_tc_egress(struct __sk_buff *skb)
{
	return tc_account(skb, NVQOS_DIR_EGRESS);
}

/* Tenant of an ingress packet without opening a flow: XDP only looks. */
static __always_inline __u32 xdp_tenant_of(const struct nvqos_flow_key *key, int role,
					   __u32 settings)
{
	struct nvqos_flow_value *flow = bpf_map_lookup_elem(&flow_table, key);

	return flow ? flow->tenant_id : nvqos_lookup_tenant(key, role, settings);
}

/*
 * XDP, ingress only: drop early what the policy blocks (quarantine), what
 * exceeds the tenant's ingress ceiling and the packets of connections access
 * control refused with refuse "drop", before the stack spends anything on it.
 * Everything else passes untouched and uncounted; tc accounts it (and counts
 * its parse errors) once the stack has built the skb.
 */
SEC("xdp")
int nvqos_xdp_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct nvqos_tenant_config *config;
	struct nvqos_tenant_stats *ts;
	struct nvqos_flow_key key;
	struct nvqos_pkt pkt;
	__u32 tenant_id;
	__u32 settings;
	int role;

	if (nvqos_parse(data, end, &pkt) != NVQOS_PARSE_OK ||
	    nvqos_parse_check_len(&pkt, end - data, false) != NVQOS_PARSE_OK)
		return XDP_PASS;
	settings = settings_flags();
	role = nvqos_classify(&pkt, NVQOS_DIR_INGRESS, ctx->ingress_ifindex, port_bitmap(settings),
			      &key);
	if (role < 0)
		return XDP_PASS;

	tenant_id = xdp_tenant_of(&key, role, settings);
	if (role == NVQOS_ROLE_TARGET && (settings & NVQOS_SETTINGS_F_ACCESS_XDP) &&
	    access_xdp_refused(&key, tenant_id, pkt.tcp_flags, pkt.ip_len))
		return XDP_DROP;
	config = bpf_map_lookup_elem(&tenant_config, &tenant_id);
	if (!config || !(config->flags & (NVQOS_TENANT_F_DROP_INGRESS | NVQOS_TENANT_F_INGRESS_LIMIT)))
		return XDP_PASS;
	if (!(config->flags & NVQOS_TENANT_F_DROP_INGRESS))
		return nvqos_qos_xdp_ingress(config->limiter_id, tenant_id, pkt.ip_len);

	ts = tenant_stats_of(tenant_id);
	if (ts) {
		ts->dropped_bytes += pkt.ip_len;
		ts->dropped_packets++;
	}
	return XDP_DROP;
}
