/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Little-endian fields of NVMe/TCP PDUs and Fabrics data, read byte by byte (any host order). */
#ifndef NVQOS_BPF_LE_H
#define NVQOS_BPF_LE_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

static __always_inline __u16 get_le16(const __u8 *p)
{
	return p[0] | (__u16)p[1] << 8;
}

static __always_inline __u32 get_le32(const __u8 *p)
{
	return p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24;
}

#endif
