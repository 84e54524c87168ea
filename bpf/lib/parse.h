/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing shared by the XDP and tc programs: Ethernet, up to
 * NVQOS_PARSE_MAX_VLANS 802.1Q/802.1ad tags, IPv4 (with options) or IPv6 (with
 * up to NVQOS_PARSE_MAX_IPV6_EXT extension headers), TCP.
 *
 * The parser works on a [data, data_end) window of directly accessible packet
 * bytes, xdp-tools style: each helper bounds-checks right before it reads and
 * advances a cursor. It reports NVQOS_PARSE_SHORT when the window ends before
 * the headers do, so a tc caller whose linear area is too short can pull and
 * parse again; the frame length checks that need the whole frame's size come
 * after, in nvqos_parse_check_len().
 */
#ifndef NVQOS_BPF_PARSE_H
#define NVQOS_BPF_PARSE_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"
#include "lib/consts.h"

enum nvqos_parse_result {
	NVQOS_PARSE_OK = 0,    /* TCP over IP: pkt is filled in */
	NVQOS_PARSE_SKIP,      /* well-formed, but not something we account */
	NVQOS_PARSE_SHORT,     /* headers run past the accessible window */
	NVQOS_PARSE_MALFORMED, /* header fields that cannot be right */
};

/* What the classifier and the accounting need from one packet. */
struct nvqos_pkt {
	__u8 saddr[16]; /* network byte order, v4-mapped for IPv4 */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u32 seq;         /* host order; where the payload sits in the stream */
	__u32 ip_len;      /* IP header length field as bytes, 0 if absent (BIG TCP) */
	__u16 l3_off;      /* IP header, from the start of the frame */
	__u16 ip_hdr_len;  /* IP header incl. options / extension headers */
	__u16 tcp_hdr_len; /* TCP header incl. options */
	__u8 family;       /* enum nvqos_family */
	__u8 tcp_flags;    /* NVQOS_TCP_F_* */
};

/* Not in the UAPI headers. */
struct nvqos_vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct nvqos_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

struct hdr_cursor {
	void *pos;
};

static __always_inline int parse_ethhdr(struct hdr_cursor *c, void *end, __be16 *proto)
{
	struct ethhdr *eth = c->pos;
	struct nvqos_vlan_hdr *vlan;
	__u32 i;

	if ((void *)(eth + 1) > end)
		return NVQOS_PARSE_SHORT;
	*proto = eth->h_proto;
	c->pos = eth + 1;

#pragma unroll
	for (i = 0; i < NVQOS_PARSE_MAX_VLANS; i++) {
		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = c->pos;
		if ((void *)(vlan + 1) > end)
			return NVQOS_PARSE_SHORT;
		*proto = vlan->encapsulated_proto;
		c->pos = vlan + 1;
	}
	return NVQOS_PARSE_OK;
}

/* ::ffff:a.b.c.d, so that one key layout serves both families. */
static __always_inline void set_v4_mapped(__u8 *dst, __be32 addr)
{
	__u32 *words = (__u32 *)dst;

	words[0] = 0;
	words[1] = 0;
	words[2] = bpf_htonl(0x0000ffff);
	words[3] = addr;
}

static __always_inline int parse_iphdr(struct hdr_cursor *c, void *end, struct nvqos_pkt *pkt)
{
	struct iphdr *iph = c->pos;
	__u32 hdr_len;

	if ((void *)(iph + 1) > end)
		return NVQOS_PARSE_SHORT;
	if (iph->version != 4)
		return NVQOS_PARSE_MALFORMED;
	hdr_len = iph->ihl * 4;
	if (hdr_len < sizeof(*iph))
		return NVQOS_PARSE_MALFORMED;
	if (c->pos + hdr_len > end)
		return NVQOS_PARSE_SHORT;
	if (iph->protocol != IPPROTO_TCP)
		return NVQOS_PARSE_SKIP;
	/* A non-first fragment starts with payload, not with a TCP header. */
	if (iph->frag_off & bpf_htons(NVQOS_IPV4_FRAG_OFFSET_MASK))
		return NVQOS_PARSE_SKIP;

	pkt->family = NVQOS_FAMILY_IPV4;
	pkt->ip_len = bpf_ntohs(iph->tot_len);
	pkt->ip_hdr_len = hdr_len;
	set_v4_mapped(pkt->saddr, iph->saddr);
	set_v4_mapped(pkt->daddr, iph->daddr);
	c->pos += hdr_len;
	return NVQOS_PARSE_OK;
}

/* Walks the extension headers Linux may put before TCP; stops at TCP. */
static __always_inline int skip_ipv6_ext(struct hdr_cursor *c, void *end, __u8 *nexthdr)
{
	struct nvqos_ipv6_frag_hdr *frag;
	struct ipv6_opt_hdr *opt;
	__u32 i;

#pragma unroll
	for (i = 0; i < NVQOS_PARSE_MAX_IPV6_EXT; i++) {
		switch (*nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			opt = c->pos;
			if ((void *)(opt + 1) > end)
				return NVQOS_PARSE_SHORT;
			*nexthdr = opt->nexthdr;
			c->pos += (opt->hdrlen + 1) * NVQOS_IPV6_EXT_LEN_UNIT;
			break;
		case IPPROTO_FRAGMENT:
			frag = c->pos;
			if ((void *)(frag + 1) > end)
				return NVQOS_PARSE_SHORT;
			if (frag->frag_off & bpf_htons(NVQOS_IPV6_FRAG_OFFSET_MASK))
				return NVQOS_PARSE_SKIP;
			*nexthdr = frag->nexthdr;
			c->pos = frag + 1;
			break;
		default:
			return NVQOS_PARSE_OK;
		}
	}
	return NVQOS_PARSE_OK;
}

static __always_inline int parse_ipv6hdr(struct hdr_cursor *c, void *end, struct nvqos_pkt *pkt)
{
	struct ipv6hdr *ip6h = c->pos;
	__u16 payload_len;
	__u8 nexthdr;
	int ret;

	if ((void *)(ip6h + 1) > end)
		return NVQOS_PARSE_SHORT;
	if (ip6h->version != 6)
		return NVQOS_PARSE_MALFORMED;
	nexthdr = ip6h->nexthdr;
	payload_len = bpf_ntohs(ip6h->payload_len);
	__builtin_memcpy(pkt->saddr, &ip6h->saddr, sizeof(pkt->saddr));
	__builtin_memcpy(pkt->daddr, &ip6h->daddr, sizeof(pkt->daddr));
	c->pos = ip6h + 1;

	ret = skip_ipv6_ext(c, end, &nexthdr);
	if (ret != NVQOS_PARSE_OK)
		return ret;
	if (nexthdr != IPPROTO_TCP)
		return NVQOS_PARSE_SKIP;

	pkt->family = NVQOS_FAMILY_IPV6;
	/* payload_len 0 means a jumbogram (BIG TCP): the frame says how long. */
	pkt->ip_len = payload_len ? sizeof(*ip6h) + payload_len : 0;
	pkt->ip_hdr_len = c->pos - (void *)ip6h;
	return NVQOS_PARSE_OK;
}

static __always_inline int parse_tcphdr(struct hdr_cursor *c, void *end, struct nvqos_pkt *pkt)
{
	struct tcphdr *th = c->pos;
	__u32 hdr_len;

	if ((void *)(th + 1) > end)
		return NVQOS_PARSE_SHORT;
	hdr_len = th->doff * 4;
	if (hdr_len < sizeof(*th))
		return NVQOS_PARSE_MALFORMED;
	pkt->sport = th->source;
	pkt->dport = th->dest;
	pkt->seq = bpf_ntohl(th->seq);
	pkt->tcp_flags = ((__u8 *)th)[NVQOS_TCP_FLAGS_OFFSET];
	pkt->tcp_hdr_len = hdr_len;
	return NVQOS_PARSE_OK;
}

/* Parses the headers in [data, end) into pkt. */
static __always_inline int nvqos_parse(void *data, void *end, struct nvqos_pkt *pkt)
{
	struct hdr_cursor c = { .pos = data };
	__be16 proto;
	int ret;

	ret = parse_ethhdr(&c, end, &proto);
	if (ret != NVQOS_PARSE_OK)
		return ret;
	pkt->l3_off = c.pos - data;
	if (proto == bpf_htons(ETH_P_IP))
		ret = parse_iphdr(&c, end, pkt);
	else if (proto == bpf_htons(ETH_P_IPV6))
		ret = parse_ipv6hdr(&c, end, pkt);
	else
		ret = NVQOS_PARSE_SKIP;
	if (ret != NVQOS_PARSE_OK)
		return ret;
	return parse_tcphdr(&c, end, pkt);
}

/*
 * Checks the IP length against the frame, which may be longer than the
 * accessible window (tc: non-linear skb). A length field of 0 is only valid
 * on a GSO/GRO super-packet beyond 64 KiB (BIG TCP); the frame's length is
 * then the IP length. Trailing bytes (Ethernet padding) are not IP bytes.
 */
static __always_inline int nvqos_parse_check_len(struct nvqos_pkt *pkt, __u32 frame_len, bool gso)
{
	__u32 avail = frame_len - pkt->l3_off;

	if (frame_len < pkt->l3_off)
		return NVQOS_PARSE_MALFORMED;
	if (!pkt->ip_len) {
		if (!gso)
			return NVQOS_PARSE_MALFORMED;
		pkt->ip_len = avail;
	}
	if (pkt->ip_len > avail)
		return NVQOS_PARSE_MALFORMED;
	if (pkt->ip_len < (__u32)pkt->ip_hdr_len + pkt->tcp_hdr_len)
		return NVQOS_PARSE_MALFORMED;
	return NVQOS_PARSE_OK;
}

#endif /* NVQOS_BPF_PARSE_H */
