/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one log-linear histogram bucket scheme of nvqos, compiled unchanged into
 * the BPF programs, the agent and the tools so their figures are comparable.
 *
 * With SUB_BITS = S, values below 2^S get a bucket each; above, every power of
 * two [2^m, 2^(m+1)) is split into 2^S equal sub-buckets. A bucket is therefore
 * at most 2^-S of its lower bound wide: reporting a bucket's midpoint is off by
 * at most 2^-(S+1) relative. Values are plain integers (nvqos uses ns).
 *
 *   kernel: S = 5  -> <= 1.6% midpoint error, 1024 buckets reach 2^36 ns (68 s)
 *   tools:  S = 7  -> <= 0.4% midpoint error
 */
#ifndef NVQOS_HISTOGRAM_H
#define NVQOS_HISTOGRAM_H

#include <linux/types.h>

#define NVQOS_HIST_KERNEL_SUB_BITS 5u
#define NVQOS_HIST_KERNEL_BUCKETS 1024u
#define NVQOS_HIST_TOOLS_SUB_BITS 7u

#ifndef NVQOS_HIST_INLINE
#ifdef __bpf__
#define NVQOS_HIST_INLINE static __always_inline
#else
#define NVQOS_HIST_INLINE static inline
#endif
#endif

/* Index of the most significant set bit; v must be non-zero. Branchy binary
 * search rather than __builtin_clzll, which BPF cannot lower. */
NVQOS_HIST_INLINE __u32 nvqos_hist_msb(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

/* Bucket of value v. Not clamped: callers bound it by their bucket count. */
NVQOS_HIST_INLINE __u32 nvqos_hist_index(__u64 v, __u32 sub_bits)
{
	__u64 sub_count = 1ull << sub_bits;
	__u32 shift;

	if (v < sub_count)
		return (__u32)v;
	shift = nvqos_hist_msb(v) - sub_bits;
	return (__u32)(((__u64)(shift + 1) << sub_bits) | ((v >> shift) & (sub_count - 1)));
}

/* Smallest value that falls into bucket idx. */
NVQOS_HIST_INLINE __u64 nvqos_hist_lower(__u32 idx, __u32 sub_bits)
{
	__u64 sub_count = 1ull << sub_bits;
	__u32 shift;

	if (idx < sub_count)
		return idx;
	shift = (idx >> sub_bits) - 1;
	return (sub_count | (idx & (sub_count - 1))) << shift;
}

/* One past the largest value that falls into bucket idx. */
NVQOS_HIST_INLINE __u64 nvqos_hist_upper(__u32 idx, __u32 sub_bits)
{
	return nvqos_hist_lower(idx + 1, sub_bits);
}

#endif /* NVQOS_HISTOGRAM_H */
