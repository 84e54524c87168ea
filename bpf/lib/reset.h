/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * TCP resets for connections access control refuses with refuse "reset"
 * (docs/design.md, "Refusing: reset or drop"): tc ingress rewrites the refused
 * segment into an RST, sends a copy with the ends swapped back out of the
 * interface to the initiator, and lets the RST itself continue to the target.
 * Both carry a fixed IP header and a bare TCP header with checksums computed
 * in full, so they are right whatever options or extension headers the
 * segment had and whatever checksum state the skb was in.
 */
#ifndef NVQOS_BPF_RESET_H
#define NVQOS_BPF_RESET_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"
#include "lib/consts.h"
#include "lib/parse.h"

#define RST_TTL 64
#define RST_IPV4_LEN 20
#define RST_IPV6_LEN 40
#define RST_TCP_LEN 20
#define RST_ETH_MACS 12                 /* destination then source MAC */
#define RST_IPV4_DF 0x4000
#define RST_TCP_DOFF_FLAGS 0x5004       /* data offset 5 words, RST */
#define RST_ACK_SEQ_OFF 8               /* of the TCP header */

/* The headers of one RST and its pseudo header, built apart from the stack. */
struct rst_scratch {
	__u8 hdr[RST_IPV6_LEN + RST_TCP_LEN];
	__u8 pseudo[RST_IPV6_LEN];
	__u8 macs[RST_ETH_MACS];
	__u8 swapped[RST_ETH_MACS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rst_scratch);
} rst_scratches SEC(".maps");

static __always_inline __u16 rst_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The bare TCP header of an RST (no ACK, no options, window 0). */
static __always_inline void rst_tcp_header(struct tcphdr *tcp, __be16 sport, __be16 dport, __be32 seq)
{
	__u16 *doff_flags = (__u16 *)((__u8 *)tcp + 12);

	tcp->source = sport;
	tcp->dest = dport;
	tcp->seq = seq;
	*doff_flags = bpf_htons(RST_TCP_DOFF_FLAGS);
}

/* The TCP checksum over r->pseudo (pseudo_len bytes, a constant) and the header. */
static __always_inline __u16 rst_tcp_csum(struct rst_scratch *r, struct tcphdr *tcp, __u32 pseudo_len)
{
	__u32 sum = bpf_csum_diff(NULL, 0, (__be32 *)r->pseudo, pseudo_len, 0);

	return rst_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)tcp, RST_TCP_LEN, sum));
}

/* IPv4: header, then the pseudo header and TCP header for the TCP checksum. */
static __always_inline void rst_build_v4(struct rst_scratch *r, const __u8 *src, const __u8 *dst,
					 __be16 sport, __be16 dport, __be32 seq)
{
	struct iphdr *ip = (struct iphdr *)r->hdr;
	struct tcphdr *tcp = (struct tcphdr *)(r->hdr + RST_IPV4_LEN);

	__builtin_memset(r->hdr, 0, sizeof(r->hdr));
	ip->version = 4;
	ip->ihl = RST_IPV4_LEN / 4;
	ip->tot_len = bpf_htons(RST_IPV4_LEN + RST_TCP_LEN);
	ip->frag_off = bpf_htons(RST_IPV4_DF);
	ip->ttl = RST_TTL;
	ip->protocol = IPPROTO_TCP;
	__builtin_memcpy(&ip->saddr, src + 12, 4);
	__builtin_memcpy(&ip->daddr, dst + 12, 4);
	ip->check = rst_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)ip, RST_IPV4_LEN, 0));

	rst_tcp_header(tcp, sport, dport, seq);
	__builtin_memset(r->pseudo, 0, sizeof(r->pseudo));
	__builtin_memcpy(r->pseudo, src + 12, 4);
	__builtin_memcpy(r->pseudo + 4, dst + 12, 4);
	r->pseudo[9] = IPPROTO_TCP;
	r->pseudo[11] = RST_TCP_LEN;
	tcp->check = rst_tcp_csum(r, tcp, 12);
}

static __always_inline void rst_build_v6(struct rst_scratch *r, const __u8 *src, const __u8 *dst,
					 __be16 sport, __be16 dport, __be32 seq)
{
	struct ipv6hdr *ip = (struct ipv6hdr *)r->hdr;
	struct tcphdr *tcp = (struct tcphdr *)(r->hdr + RST_IPV6_LEN);

	__builtin_memset(r->hdr, 0, sizeof(r->hdr));
	ip->version = 6;
	ip->payload_len = bpf_htons(RST_TCP_LEN);
	ip->nexthdr = IPPROTO_TCP;
	ip->hop_limit = RST_TTL;
	__builtin_memcpy(&ip->saddr, src, 16);
	__builtin_memcpy(&ip->daddr, dst, 16);

	rst_tcp_header(tcp, sport, dport, seq);
	__builtin_memset(r->pseudo, 0, sizeof(r->pseudo));
	__builtin_memcpy(r->pseudo, src, 16);
	__builtin_memcpy(r->pseudo + 16, dst, 16);
	r->pseudo[35] = RST_TCP_LEN;
	r->pseudo[39] = IPPROTO_TCP;
	tcp->check = rst_tcp_csum(r, tcp, RST_IPV6_LEN);
}

/* Writes an RST from src to dst over the skb's IP and TCP headers. */
static __always_inline int rst_store(struct __sk_buff *skb, struct rst_scratch *r, const struct nvqos_pkt *pkt,
				     const __u8 *src, const __u8 *dst, __be16 sport, __be16 dport, __be32 seq)
{
	if (pkt->family == NVQOS_FAMILY_IPV4) {
		rst_build_v4(r, src, dst, sport, dport, seq);
		return bpf_skb_store_bytes(skb, pkt->l3_off, r->hdr, RST_IPV4_LEN + RST_TCP_LEN,
					   BPF_F_RECOMPUTE_CSUM);
	}
	rst_build_v6(r, src, dst, sport, dport, seq);
	return bpf_skb_store_bytes(skb, pkt->l3_off, r->hdr, RST_IPV6_LEN + RST_TCP_LEN, BPF_F_RECOMPUTE_CSUM);
}

/*
 * Turns the segment into an RST to the target (seq: the segment's, which is
 * the target's next expected byte for an in-order segment) and sends a copy
 * to the initiator (seq: what the segment acknowledged, the initiator's next
 * expected byte). Returns the tc verdict: TC_ACT_OK with the skb now the
 * target's RST, or TC_ACT_SHOT if the skb could not be rewritten. A global
 * function: its scratch and stack stay out of the callers' frames.
 */
__noinline int access_reset(struct __sk_buff *skb, const struct nvqos_pkt *pkt)
{
	struct rst_scratch *r;
	__be32 ack_seq;
	__u32 len;

	r = bpf_map_lookup_elem(&rst_scratches, &nvqos_zero_key);
	if (!r || !pkt || pkt->l3_off < RST_ETH_MACS)
		return TC_ACT_SHOT;
	len = pkt->l3_off + RST_TCP_LEN + (pkt->family == NVQOS_FAMILY_IPV4 ? RST_IPV4_LEN : RST_IPV6_LEN);
	if (bpf_skb_load_bytes(skb, pkt->l3_off + pkt->ip_hdr_len + RST_ACK_SEQ_OFF, &ack_seq, sizeof(ack_seq)) ||
	    bpf_skb_load_bytes(skb, 0, r->macs, RST_ETH_MACS) || bpf_skb_change_tail(skb, len, 0))
		return TC_ACT_SHOT;
	__builtin_memcpy(r->swapped, r->macs + 6, 6);
	__builtin_memcpy(r->swapped + 6, r->macs, 6);
	if (!bpf_skb_store_bytes(skb, 0, r->swapped, RST_ETH_MACS, 0) &&
	    !rst_store(skb, r, pkt, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, ack_seq))
		bpf_clone_redirect(skb, skb->ifindex, 0);
	if (bpf_skb_store_bytes(skb, 0, r->macs, RST_ETH_MACS, 0) ||
	    rst_store(skb, r, pkt, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, bpf_htonl(pkt->seq)))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

#endif /* NVQOS_BPF_RESET_H */
