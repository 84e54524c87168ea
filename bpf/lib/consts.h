/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Constants private to the BPF programs: protocol fields the UAPI headers do
 * not name, and data path tuning. What user space must also know lives in
 * include/nvqos/abi.h.
 */
#ifndef NVQOS_BPF_CONSTS_H
#define NVQOS_BPF_CONSTS_H

/* Fragment offset bits of the IPv4 frag_off field and the IPv6 fragment header. */
#define NVQOS_IPV4_FRAG_OFFSET_MASK 0x1fff
#define NVQOS_IPV6_FRAG_OFFSET_MASK 0xfff8

/* IPv6 hop-by-hop / routing / destination options: hdrlen counts 8-octet units after the first. */
#define NVQOS_IPV6_EXT_LEN_UNIT 8

/* Byte 13 of the TCP header holds the flags. */
#define NVQOS_TCP_FLAGS_OFFSET 13
#define NVQOS_TCP_F_FIN 0x01
#define NVQOS_TCP_F_SYN 0x02
#define NVQOS_TCP_F_RST 0x04
#define NVQOS_TCP_F_ACK 0x10

/*
 * How much of a non-linear skb tc pulls into the linear area when the headers
 * are not all there (e.g. frames sent through AF_PACKET): Ethernet + two VLAN
 * tags + IPv6 with extension headers + TCP with options fit with room.
 */
#define NVQOS_PARSE_PULL_LEN 512

/*
 * Handshakes of connections without a flow yet (lib/handshake.h). A SYN flood
 * churns this table; a legitimate handshake evicted from it still gets its
 * flow, and its PDU walk resynchronises on the first PDU.
 */
#define NVQOS_MAX_HANDSHAKES 16384

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

#endif /* NVQOS_BPF_CONSTS_H */
