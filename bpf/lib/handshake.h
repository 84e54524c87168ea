/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connections in their TCP handshake. A SYN or SYN-ACK of a connection the
 * flow table does not know opens no flow: its initial sequence number is kept
 * here, in a small LRU of its own. The first packet after the handshake opens
 * the flow, and the first payload starts the PDU walk at ISN + 1 from what is
 * kept here. So a SYN flood (spoofed sources that never complete a handshake)
 * churns this table only: it cannot evict the flows and PDU-walk state of
 * established connections. docs/design.md ("Flow lifecycle").
 */
#ifndef NVQOS_BPF_HANDSHAKE_H
#define NVQOS_BPF_HANDSHAKE_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"
#include "lib/consts.h"

struct handshake {
	__u32 isn[2]; /* SYN sequence number per NVMe direction (STREAM_H2C, STREAM_C2H) */
	__u32 seen;   /* bit per direction: isn[] holds it */
	__u32 pad;
};

// Handshakes in progress of connections without a flow (BPF-private). Written
// by tc on SYN / SYN-ACK; taken when the connection's first payload arrives,
// deleted on FIN/RST.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NVQOS_MAX_HANDSHAKES);
	__type(key, struct nvqos_flow_key);
	__type(value, struct handshake);
} handshakes SEC(".maps");

/*
 * Which packet of an unknown connection opens its flow: not a SYN (the
 * handshake waits here until it completes) and not an RST (the connection is
 * over; a RST answering a flood's SYN must not open anything either).
 */
static __always_inline bool opens_flow(__u8 tcp_flags)
{
	return !(tcp_flags & (NVQOS_TCP_F_SYN | NVQOS_TCP_F_RST));
}

static __always_inline void handshake_note(const struct nvqos_flow_key *key, __u32 sdir, __u32 syn_seq)
{
	struct handshake *hs = bpf_map_lookup_elem(&handshakes, key);
	struct handshake fresh = {};

	if (!hs) {
		bpf_map_update_elem(&handshakes, key, &fresh, BPF_NOEXIST);
		hs = bpf_map_lookup_elem(&handshakes, key);
		if (!hs)
			return;
	}
	hs->isn[sdir & 1] = syn_seq;
	hs->seen |= 1u << (sdir & 1);
}

/* Moves a connection's handshake out of the table; false if none is kept. */
static __always_inline bool handshake_take(const struct nvqos_flow_key *key, struct handshake *out)
{
	struct handshake *hs = bpf_map_lookup_elem(&handshakes, key);

	if (!hs)
		return false;
	*out = *hs;
	bpf_map_delete_elem(&handshakes, key);
	return true;
}

#endif /* NVQOS_BPF_HANDSHAKE_H */
