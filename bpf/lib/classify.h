/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Classification: is a parsed TCP packet NVMe/TCP, which end are we, which
 * connection (flow_table key) and which tenant does it belong to.
 */
#ifndef NVQOS_BPF_CLASSIFY_H
#define NVQOS_BPF_CLASSIFY_H

#include "lib/maps.h"
#include "lib/parse.h"

/* The agent's NVQOS_SETTINGS_F_* switches; all off if unreadable. */
static __always_inline __u32 settings_flags(void)
{
	struct nvqos_settings *s = bpf_map_lookup_elem(&settings, &nvqos_zero_key);

	return s ? s->flags : 0;
}

/* The port bitmap if the agent says it is complete, else NULL (use the hash). */
static __always_inline const struct nvqos_port_bitmap *port_bitmap(__u32 settings)
{
	if (!(settings & NVQOS_SETTINGS_F_PORT_BITMAP))
		return NULL;
	return bpf_map_lookup_elem(&nvme_port_bitmap, &nvqos_zero_key);
}

static __always_inline bool nvme_port(__be16 port, const struct nvqos_port_bitmap *bitmap)
{
	__u16 key = bpf_ntohs(port);

	if (bitmap)
		return (bitmap->bits[(key / 64) % NVQOS_PORT_BITMAP_WORDS] >> (key % 64)) & 1;
	return bpf_map_lookup_elem(&nvme_ports, &key) != NULL;
}

/*
 * Fills the flow key from this host's point of view (ingress: we are the
 * destination; egress: the source) and returns the role, or -1 when neither
 * port is an NVMe/TCP port.
 */
static __always_inline int nvqos_classify(const struct nvqos_pkt *pkt, __u32 dir, __u32 ifindex,
					  const struct nvqos_port_bitmap *bitmap,
					  struct nvqos_flow_key *key)
{
	bool ingress = dir == NVQOS_DIR_INGRESS;
	__be16 local_port = ingress ? pkt->dport : pkt->sport;
	__be16 remote_port = ingress ? pkt->sport : pkt->dport;
	int role;

	if (nvme_port(remote_port, bitmap))
		role = NVQOS_ROLE_INITIATOR;
	else if (nvme_port(local_port, bitmap))
		role = NVQOS_ROLE_TARGET;
	else
		return -1;

	__builtin_memcpy(key->local_addr, ingress ? pkt->daddr : pkt->saddr, sizeof(key->local_addr));
	__builtin_memcpy(key->remote_addr, ingress ? pkt->saddr : pkt->daddr, sizeof(key->remote_addr));
	key->local_port = local_port;
	key->remote_port = remote_port;
	key->ifindex = ifindex;
	return role;
}

/* The NVMe/TCP port of the connection: the target's end. */
static __always_inline __be16 service_port(const struct nvqos_flow_key *key, int role)
{
	return role == NVQOS_ROLE_INITIATOR ? key->remote_port : key->local_port;
}

/*
 * Tenant of a new connection: the longest rule for (service port, remote
 * address), else the longest port-less rule, else the default tenant if the
 * agent enabled it. Rules naming an id beyond the tables count as no rule.
 */
static __always_inline __u32 nvqos_lookup_tenant(const struct nvqos_flow_key *key, int role,
						 __u32 settings)
{
	struct nvqos_tenant_rule_key rule = {
		.prefixlen = NVQOS_RULE_PORT_BITS + NVQOS_RULE_ADDR_BITS,
		.port = service_port(key, role),
	};
	struct nvqos_tenant_rule_value *match;

	__builtin_memcpy(rule.addr, key->remote_addr, sizeof(rule.addr));
	match = bpf_map_lookup_elem(&tenant_rules, &rule);
	if (!match) {
		rule.port = 0;
		match = bpf_map_lookup_elem(&tenant_rules, &rule);
	}
	if (match)
		return match->tenant_id < NVQOS_MAX_TENANTS ? match->tenant_id : NVQOS_TENANT_NONE;
	return settings & NVQOS_SETTINGS_F_DEFAULT_TENANT ? NVQOS_TENANT_DEFAULT : NVQOS_TENANT_NONE;
}

static __always_inline struct nvqos_tenant_stats *tenant_stats_of(__u32 tenant_id)
{
	return bpf_map_lookup_elem(&tenant_stats, &tenant_id);
}

#endif /* NVQOS_BPF_CLASSIFY_H */
