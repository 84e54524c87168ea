/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NVMe/TCP command tracking: tc follows the PDU stream of each connection and
 * direction by TCP sequence number, times every command from its capsule to
 * its completion (CapsuleResp, or C2HData with SUCCESS) and accounts it per
 * (tenant, op, role). docs/design.md ("Command tracking") explains the state
 * machine and the resynchronisation rule.
 */
#ifndef NVQOS_BPF_NVME_PDU_H
#define NVQOS_BPF_NVME_PDU_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "nvqos/abi.h"
#include "nvqos/histogram.h"
#include "lib/connect.h"
#include "lib/consts.h"
#include "lib/handshake.h"
#include "lib/le.h"
#include "lib/maps.h"
#include "lib/parse.h"

/* PDU types and common-header flags (NVMe/TCP transport binding). */
#define NVME_TCP_ICREQ 0x00
#define NVME_TCP_ICRESP 0x01
#define NVME_TCP_H2C_TERM 0x02
#define NVME_TCP_C2H_TERM 0x03
#define NVME_TCP_CMD 0x04
#define NVME_TCP_RSP 0x05
#define NVME_TCP_H2C_DATA 0x06
#define NVME_TCP_C2H_DATA 0x07
#define NVME_TCP_R2T 0x09

#define NVME_TCP_F_HDGST 0x01
#define NVME_TCP_F_DDGST 0x02
#define NVME_TCP_F_LAST 0x04
#define NVME_TCP_F_SUCCESS 0x08

#define NVME_TCP_IC_HLEN 128
#define NVME_TCP_TERM_HLEN 24
#define NVME_TCP_CMD_HLEN 72
#define NVME_TCP_SHORT_HLEN 24 /* CapsuleResp, H2CData, C2HData, R2T */
#define NVME_TCP_DIGEST_LEN 4
#define NVME_TCP_TERM_MAX_DATA 152

/* Byte offsets in a PDU (common header 0..7, then the PDU specific header). */
#define PDU_OFF_PLEN 4
#define PDU_OFF_ICRESP_DGST 11
#define PDU_OFF_CMD_OPCODE 8
#define PDU_OFF_CMD_CID 10
#define PDU_OFF_CMD_FCTYPE 12 /* Fabrics: NSID bits 7:0 */
#define PDU_OFF_CMD_SGL_LEN 40
#define PDU_OFF_CONNECT_QID 50 /* Fabrics Connect: CDW10 bits 31:16 */
#define PDU_OFF_RSP_CID 20
#define PDU_OFF_RSP_STATUS 22
#define PDU_OFF_DATA_CCCID 8

#define NVME_OPC_FLUSH 0x00
#define NVME_OPC_WRITE 0x01
#define NVME_OPC_READ 0x02
#define NVME_ADMIN_OPC_AER 0x0c
#define NVME_OPC_FABRICS 0x7f
#define NVME_FCTYPE_CONNECT 0x01

/* TLS record header of a ClientHello: handshake (0x16), version 3.x. */
#define TLS_CONTENT_HANDSHAKE 0x16
#define TLS_VERSION_MAJOR 0x03

#define NVQOS_PDU_CH_LEN 8
#define NVQOS_PDU_PEEK_MAX 52 /* capsule bytes read: through the Connect QID */
#define NVQOS_PDU_HDR_BUF 128 /* >= 63 + NVQOS_PDU_PEEK_MAX, a bound the verifier can see */
#define NVQOS_PDU_MAX_PER_SKB 128
#define NVQOS_PDU_MAX_PLEN (64u << 20)

/* One direction of a connection in NVMe/TCP terms. */
enum { STREAM_H2C = 0, STREAM_C2H = 1 };

#define STREAM_F_SYNCED (1u << 0)    /* next_seq is a known PDU boundary (or split header) */
#define STREAM_F_SEEN (1u << 1)      /* seen_end is valid */
#define STREAM_F_START (1u << 2)     /* nothing after the SYN parsed yet */
#define STREAM_F_RESYNCING (1u << 3) /* synced on trust: the first header must be plausible */

#define CONN_F_TLS (1u << 0)
#define CONN_F_DIGESTS_KNOWN (1u << 1) /* ICResp seen */
#define CONN_F_HDGST (1u << 2)
#define CONN_F_ADMIN_QUEUE (1u << 3) /* Connect with QID 0 seen */
#define CONN_F_IO_QUEUE (1u << 4)

struct pdu_stream {
	__u32 next_seq; /* next stream byte the walk needs: a PDU start or the rest of a split header */
	__u32 seen_end; /* one past the highest sequence number seen */
	__u32 hdr_seq;  /* where the header collected in hdr[] starts */
	__u16 hdr_len;  /* header bytes collected in hdr[] */
	__u16 flags;    /* STREAM_F_* */
	__u8 hdr[NVQOS_PDU_HDR_BUF];
};

struct nvme_conn {
	__u32 flags; /* CONN_F_* */
	/*
	 * Commands this connection put in inflight_cmds and did not complete
	 * itself (atomic: capsules and completions may be walked on two CPUs).
	 * Zero at close: no walk of inflight_cmds, which costs ~3 ms at its
	 * default size. Never below the true number (the agent's sweep and LRU
	 * eviction only remove entries), so a close never skips a command.
	 */
	__u32 inflight;
	struct pdu_stream stream[2]; /* STREAM_H2C, STREAM_C2H */
};

// PDU walk state per NVMe/TCP connection (BPF-private). Written by tc only;
// deleted when the connection closes.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NVQOS_DEFAULT_MAX_FLOWS);
	__type(key, struct nvqos_flow_key);
	__type(value, struct nvme_conn);
} nvme_conns SEC(".maps");

// A zeroed histogram to insert new cmd_latency entries from (BPF-private, never written).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvqos_cmd_hist);
} zero_cmd_hist SEC(".maps");

// A zeroed connection to insert new nvme_conns entries from (BPF-private, never
// written): the value is too large for the BPF stack.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nvme_conn);
} zero_nvme_conn SEC(".maps");

/*
 * cmd_submit()'s and cmd_complete()'s in-flight key and value (BPF-private, per
 * CPU): off their stack frames, which count against the 512 bytes of the whole
 * tc -> walk_one_pdu() -> cmd_*() chain.
 */
struct cmd_scratch {
	struct nvqos_inflight_key ik;
	struct nvqos_inflight_value v;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cmd_scratch);
} cmd_scratch SEC(".maps");

// Slow-command rate limit (BPF-private): GCRA theoretical arrival time, ns.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} slow_cmd_tat SEC(".maps");

/*
 * Commands started (capsules) and completed (CapsuleResp, C2HData with
 * SUCCESS) in one skb, per enum nvqos_cmd_op: what QoS charges to IOPS
 * limits. A completion whose command was not tracked counts as OTHER.
 */
struct nvme_ios {
	__u16 n[NVQOS_CMD_OP_MAX];
};

/*
 * What a command's submission or completion needs of the walk besides the
 * pointers: scalars only, so that cmd_submit() and cmd_complete() can take it
 * as global functions.
 */
struct nvme_cmd_ctx {
	__u64 now; /* read once per skb, when the first command or completion needs it */
	__u32 tenant_id;
	__u8 role;
	__u8 pad[3];
};

/* What the walk of one skb works with. */
struct nvme_walk {
	const struct nvqos_flow_key *key;
	struct nvqos_nvme_stats *ns;
	struct nvme_conn *conn;
	struct nvme_ios *ios;
	struct nvme_cmd_ctx cmd;
	__u8 sdir;
	__u8 access; /* target ingress with access control on (connect.h) */
	__u8 gate;   /* the connection awaited a checked Connect when the skb came;
		      * connect_sites has its state during the walk */
};

/* The one clock of command latency: tests read it around a run to bound a sample. */
static __always_inline __u64 nvqos_cmd_clock_ns(struct nvme_cmd_ctx *cx)
{
	if (!cx->now)
		cx->now = bpf_ktime_get_ns();
	return cx->now;
}

static __always_inline bool pdu_dir_ok(__u8 type, __u8 sdir)
{
	if (sdir == STREAM_H2C)
		return type == NVME_TCP_ICREQ || type == NVME_TCP_H2C_TERM || type == NVME_TCP_CMD ||
		       type == NVME_TCP_H2C_DATA;
	return type == NVME_TCP_ICRESP || type == NVME_TCP_C2H_TERM || type == NVME_TCP_RSP ||
	       type == NVME_TCP_C2H_DATA || type == NVME_TCP_R2T;
}

static __always_inline __u32 pdu_hlen(__u8 type)
{
	switch (type) {
	case NVME_TCP_ICREQ:
	case NVME_TCP_ICRESP:
		return NVME_TCP_IC_HLEN;
	case NVME_TCP_CMD:
		return NVME_TCP_CMD_HLEN;
	default:
		return NVME_TCP_SHORT_HLEN;
	}
}

/* Header bytes the walk reads of a PDU of this type. */
static __always_inline __u32 pdu_need(__u8 type)
{
	switch (type) {
	case NVME_TCP_CMD:
		return NVQOS_PDU_PEEK_MAX;
	case NVME_TCP_RSP:
		return PDU_OFF_RSP_STATUS + 2;
	case NVME_TCP_C2H_DATA:
		return PDU_OFF_DATA_CCCID + 2;
	case NVME_TCP_ICRESP:
		return PDU_OFF_ICRESP_DGST + 1;
	default:
		return NVQOS_PDU_CH_LEN;
	}
}

static __always_inline __u8 pdu_allowed_flags(__u8 type)
{
	switch (type) {
	case NVME_TCP_CMD:
		return NVME_TCP_F_HDGST | NVME_TCP_F_DDGST;
	case NVME_TCP_H2C_DATA:
		return NVME_TCP_F_HDGST | NVME_TCP_F_DDGST | NVME_TCP_F_LAST;
	case NVME_TCP_C2H_DATA:
		return NVME_TCP_F_HDGST | NVME_TCP_F_DDGST | NVME_TCP_F_LAST | NVME_TCP_F_SUCCESS;
	case NVME_TCP_RSP:
	case NVME_TCP_R2T:
		return NVME_TCP_F_HDGST;
	default:
		return 0;
	}
}

/*
 * Strict checks of a common header: right type for the direction, the fixed
 * HLEN of the type, only defined flags, the header digest the connection
 * negotiated, PDO and PLEN consistent with the type. A walk that meets a
 * header failing them has lost the PDU boundaries; a resync accepts only a
 * header passing them.
 */
static __always_inline bool pdu_plausible(const __u8 *h, __u8 sdir, __u32 conn_flags)
{
	__u8 type = h[0], flags = h[1], hlen = h[2], pdo = h[3];
	__u32 plen = get_le32(h + PDU_OFF_PLEN);
	__u32 hdr_end;

	if (!pdu_dir_ok(type, sdir) || hlen != pdu_hlen(type))
		return false;
	if (flags & ~pdu_allowed_flags(type))
		return false;
	if ((flags & NVME_TCP_F_SUCCESS) && !(flags & NVME_TCP_F_LAST))
		return false;
	hdr_end = hlen + ((flags & NVME_TCP_F_HDGST) ? NVME_TCP_DIGEST_LEN : 0);
	if ((conn_flags & CONN_F_DIGESTS_KNOWN) && type != NVME_TCP_ICRESP && type != NVME_TCP_ICREQ &&
	    type != NVME_TCP_H2C_TERM && type != NVME_TCP_C2H_TERM &&
	    !(flags & NVME_TCP_F_HDGST) != !(conn_flags & CONN_F_HDGST))
		return false;

	switch (type) {
	case NVME_TCP_ICREQ:
	case NVME_TCP_ICRESP:
		return pdo == 0 && plen == NVME_TCP_IC_HLEN;
	case NVME_TCP_H2C_TERM:
	case NVME_TCP_C2H_TERM:
		return pdo == 0 && plen >= hlen && plen <= hlen + NVME_TCP_TERM_MAX_DATA;
	case NVME_TCP_RSP:
	case NVME_TCP_R2T:
		return pdo == 0 && plen == hdr_end;
	default: /* capsule, H2CData, C2HData: data at PDO */
		if (plen > NVQOS_PDU_MAX_PLEN || plen < hdr_end)
			return false;
		if (plen == hdr_end) /* no data */
			return type == NVME_TCP_CMD && (pdo == 0 || pdo == hdr_end) &&
			       !(flags & NVME_TCP_F_DDGST);
		if (pdo < hdr_end || pdo >= plen)
			return false;
		return !(flags & NVME_TCP_F_DDGST) || plen - pdo > NVME_TCP_DIGEST_LEN;
	}
}

static __always_inline __u8 cmd_op_of(__u8 opcode, __u32 conn_flags)
{
	if (opcode == NVME_OPC_FABRICS || (conn_flags & CONN_F_ADMIN_QUEUE))
		return NVQOS_CMD_OP_ADMIN;
	switch (opcode) {
	case NVME_OPC_READ:
		return NVQOS_CMD_OP_READ;
	case NVME_OPC_WRITE:
		return NVQOS_CMD_OP_WRITE;
	case NVME_OPC_FLUSH:
		return NVQOS_CMD_OP_FLUSH;
	default:
		return NVQOS_CMD_OP_OTHER;
	}
}

static __always_inline __u32 status_class_of(__u16 status)
{
	__u32 sct = (status >> 8) & 0x7;

	return sct < NVQOS_STATUS_VENDOR ? sct : NVQOS_STATUS_VENDOR;
}

static const struct nvqos_cmd_stats zero_cmd_stats;

static __always_inline struct nvqos_cmd_stats *cmd_stats_of(const struct nvqos_cmd_key *key)
{
	struct nvqos_cmd_stats *s = bpf_map_lookup_elem(&cmd_stats, key);

	if (s)
		return s;
	bpf_map_update_elem(&cmd_stats, key, &zero_cmd_stats, BPF_NOEXIST);
	return bpf_map_lookup_elem(&cmd_stats, key);
}

static __always_inline struct nvqos_cmd_hist *cmd_hist_of(const struct nvqos_cmd_key *key)
{
	struct nvqos_cmd_hist *h = bpf_map_lookup_elem(&cmd_latency, key);
	void *fresh;

	if (h)
		return h;
	fresh = bpf_map_lookup_elem(&zero_cmd_hist, &nvqos_zero_key);
	if (!fresh)
		return NULL;
	bpf_map_update_elem(&cmd_latency, key, fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&cmd_latency, key);
}

/* GCRA: at most NVQOS_SLOW_CMD_RATE events per second after a burst of NVQOS_SLOW_CMD_BURST. */
static __always_inline bool slow_cmd_allowed(__u64 now)
{
	const __u64 interval = 1000000000ull / NVQOS_SLOW_CMD_RATE;
	__u64 *tat = bpf_map_lookup_elem(&slow_cmd_tat, &nvqos_zero_key);
	__u64 t;

	if (!tat)
		return false;
	t = *tat > now ? *tat : now;
	if (t - now > interval * NVQOS_SLOW_CMD_BURST)
		return false;
	*tat = t + interval;
	return true;
}

/*
 * Fills a reserved slow-command record. A subprogram so that the record's
 * type is in the object's BTF (the ABI drift test compares it with C++).
 */
static __noinline void slow_cmd_fill(struct nvqos_slow_cmd_event *e, const struct nvqos_flow_key *key,
				     const struct nvqos_inflight_value *v, __u32 cid_status,
				     __u64 latency)
{
	if (!e)
		return;
	__builtin_memcpy(&e->flow, key, sizeof(e->flow));
	e->latency_ns = latency;
	e->tenant_id = v->tenant_id;
	e->bytes = v->bytes;
	e->cid = cid_status & 0xffff;
	e->status = cid_status >> 16;
	e->op = v->op;
	e->role = v->role;
	e->opcode = v->opcode;
	e->pad = 0;
}

static __always_inline void slow_cmd_report(const struct nvqos_flow_key *key, struct nvqos_nvme_stats *ns,
					    __u64 now, const struct nvqos_inflight_value *v, __u16 cid,
					    __u16 status, __u64 latency)
{
	struct nvqos_tenant_config *config;
	struct nvqos_slow_cmd_event *e;
	__u32 tenant_id = v->tenant_id;

	config = bpf_map_lookup_elem(&tenant_config, &tenant_id);
	if (!config || !config->slow_cmd_ns || latency < config->slow_cmd_ns)
		return;
	if (!slow_cmd_allowed(now)) {
		ns->slow_cmd_dropped++;
		return;
	}
	e = bpf_ringbuf_reserve(&slow_cmd_events, sizeof(*e), 0);
	if (!e) {
		ns->slow_cmd_dropped++;
		return;
	}
	slow_cmd_fill(e, key, v, cid | (__u32)status << 16, latency);
	bpf_ringbuf_submit(e, 0);
	ns->slow_cmd_events++;
}

/*
 * cmd_submit() and cmd_complete() are global functions: the verifier checks
 * each once on its own, not again for every state in which the walk's
 * bpf_loop() body reaches it (as a static subprogram it was, and the tc
 * programs outgrew the verifier's 1M-instruction budget on a 6.18 kernel).
 * Their arguments are pointers to memory the verifier can size (it rejects
 * NULL only by the checks inside) and scalars; their frames are not added to
 * the walk's (512 bytes for the whole chain). Return 0.
 */
__noinline int cmd_submit(const struct nvqos_flow_key *key, struct nvme_conn *conn,
			  struct nvqos_nvme_stats *ns, struct nvme_cmd_ctx *cx, const struct pdu_stream *st)
{
	struct nvqos_inflight_value *v;
	struct nvqos_inflight_key *ik;
	struct cmd_scratch *scratch;
	struct nvqos_cmd_stats *s;
	struct nvqos_cmd_key sk = {};
	const __u8 *h;
	__u8 opcode;
	__u32 conn_flags;
	__u32 tenant_id;

	scratch = bpf_map_lookup_elem(&cmd_scratch, &nvqos_zero_key);
	if (!key || !conn || !ns || !cx || !st || !scratch)
		return 0;
	ik = &scratch->ik;
	v = &scratch->v;
	h = st->hdr;
	opcode = h[PDU_OFF_CMD_OPCODE];
	conn_flags = conn->flags;
	tenant_id = cx->tenant_id;
	if (opcode == NVME_OPC_FABRICS && h[PDU_OFF_CMD_FCTYPE] == NVME_FCTYPE_CONNECT) {
		conn_flags |= get_le16(h + PDU_OFF_CONNECT_QID) ? CONN_F_IO_QUEUE : CONN_F_ADMIN_QUEUE;
		conn->flags = conn_flags;
		/* connect.h may just have moved the connection to its NQN tenant. */
		tenant_id = connect_tenant(tenant_id);
	}
	/* An Asynchronous Event Request is outstanding until something happens: not a latency. */
	if ((conn_flags & CONN_F_ADMIN_QUEUE) && opcode == NVME_ADMIN_OPC_AER)
		return 0;

	__builtin_memset(scratch, 0, sizeof(*scratch));
	__builtin_memcpy(&ik->flow, key, sizeof(ik->flow));
	ik->cid = get_le16(h + PDU_OFF_CMD_CID);
	v->submit_ns = nvqos_cmd_clock_ns(cx);
	v->tenant_id = tenant_id;
	v->bytes = get_le32(h + PDU_OFF_CMD_SGL_LEN);
	v->op = cmd_op_of(opcode, conn_flags);
	v->role = cx->role;
	v->opcode = opcode;
	if (v->op == NVQOS_CMD_OP_FLUSH)
		v->bytes = 0;
	/* A tracked CID reused: its completion was never seen; the old command is lost. */
	if (bpf_map_update_elem(&inflight_cmds, ik, v, BPF_NOEXIST)) {
		struct nvqos_inflight_value *old = bpf_map_lookup_elem(&inflight_cmds, ik);

		if (old) {
			sk.tenant_id = old->tenant_id;
			sk.op = old->op;
			sk.role = old->role;
			s = cmd_stats_of(&sk);
			if (s)
				s->lost++;
		}
		if (bpf_map_update_elem(&inflight_cmds, ik, v, BPF_ANY)) {
			ns->inflight_insert_failed++;
			return 0;
		}
		ns->cid_reused++;
	} else {
		__sync_fetch_and_add(&conn->inflight, 1);
	}
	sk.tenant_id = v->tenant_id;
	sk.op = v->op;
	sk.role = v->role;
	s = cmd_stats_of(&sk);
	if (s)
		s->submitted++;
	return 0;
}

/*
 * The completion of command `cid_status & 0xffff` with status `cid_status >> 16`.
 * Returns the op of the completed command (OTHER when it was not tracked).
 */
__noinline int cmd_complete(const struct nvqos_flow_key *key, struct nvme_conn *conn,
			    struct nvqos_nvme_stats *ns, struct nvme_cmd_ctx *cx, __u32 cid_status)
{
	__u16 cid = cid_status & 0xffff, status = cid_status >> 16;
	struct nvqos_inflight_value *found, *v;
	struct cmd_scratch *scratch;
	struct nvqos_cmd_key sk = {};
	struct nvqos_cmd_stats *s;
	struct nvqos_cmd_hist *hist;
	__u64 latency = 0;
	__u32 bucket;

	scratch = bpf_map_lookup_elem(&cmd_scratch, &nvqos_zero_key);
	if (!key || !conn || !ns || !cx || !scratch)
		return NVQOS_CMD_OP_OTHER;
	__builtin_memset(&scratch->ik, 0, sizeof(scratch->ik));
	__builtin_memcpy(&scratch->ik.flow, key, sizeof(scratch->ik.flow));
	scratch->ik.cid = cid;
	found = bpf_map_lookup_elem(&inflight_cmds, &scratch->ik);
	if (!found) {
		ns->unmatched_resp++;
		return NVQOS_CMD_OP_OTHER;
	}
	/* A copy: once deleted, the entry may be reused by an insert on another CPU. */
	v = &scratch->v;
	*v = *found;
	/* Whoever deletes the entry owns the sample: never two samples for one command. */
	if (bpf_map_delete_elem(&inflight_cmds, &scratch->ik))
		return v->op;
	if (conn->inflight)
		__sync_fetch_and_add(&conn->inflight, -1);
	if (nvqos_cmd_clock_ns(cx) > v->submit_ns)
		latency = cx->now - v->submit_ns;

	sk.tenant_id = v->tenant_id;
	sk.op = v->op;
	sk.role = v->role;
	s = cmd_stats_of(&sk);
	if (s) {
		s->completed++;
		s->bytes += v->bytes;
		if (status)
			s->errors[status_class_of(status)]++;
	}
	hist = cmd_hist_of(&sk);
	if (hist) {
		bucket = nvqos_hist_index(latency, NVQOS_HIST_KERNEL_SUB_BITS);
		if (bucket >= NVQOS_CMD_HIST_BUCKETS)
			bucket = NVQOS_CMD_HIST_BUCKETS - 1;
		/*
		 * A no-op (a power of two), for verifiers that walk the clamp's
		 * impossible branch with contradictory bounds (Linux 6.1 does and
		 * refused the access): the mask bounds the index on every path. The
		 * empty asm keeps clang from dropping the mask as redundant.
		 */
		asm volatile("" : "+r"(bucket));
		bucket &= NVQOS_CMD_HIST_BUCKETS - 1;
		__sync_fetch_and_add(&hist->buckets[bucket], 1);
	}
	slow_cmd_report(key, ns, cx->now, v, cid, status, latency);
	return v->op;
}

static __always_inline void ios_count(struct nvme_walk *w, int op)
{
	if (op >= 0 && op < NVQOS_CMD_OP_MAX)
		w->ios->n[op]++;
}

/* Acts on one complete, plausible PDU header, the one collected in st. */
static __always_inline void pdu_handle(struct nvme_walk *w, const struct pdu_stream *st)
{
	const __u8 *h = st->hdr;

	switch (h[0]) {
	case NVME_TCP_ICRESP:
		w->conn->flags |= CONN_F_DIGESTS_KNOWN |
				  ((h[PDU_OFF_ICRESP_DGST] & NVME_TCP_F_HDGST) ? CONN_F_HDGST : 0);
		break;
	case NVME_TCP_CMD:
		cmd_submit(w->key, w->conn, w->ns, &w->cmd, st);
		ios_count(w, cmd_op_of(h[PDU_OFF_CMD_OPCODE], w->conn->flags));
		break;
	case NVME_TCP_RSP:
		ios_count(w, cmd_complete(w->key, w->conn, w->ns, &w->cmd,
					  get_le16(h + PDU_OFF_RSP_CID) |
						  (__u32)(get_le16(h + PDU_OFF_RSP_STATUS) >> 1) << 16));
		break;
	case NVME_TCP_C2H_DATA:
		if (h[1] & NVME_TCP_F_SUCCESS)
			ios_count(w, cmd_complete(w->key, w->conn, w->ns, &w->cmd,
						  get_le16(h + PDU_OFF_DATA_CCCID)));
		break;
	}
}

/* The stream lost its PDU boundaries: wait for a safe resync point. */
static __always_inline void stream_desync(struct nvme_walk *w, struct pdu_stream *st)
{
	if ((st->flags & STREAM_F_SYNCED) && !(st->flags & STREAM_F_RESYNCING))
		w->ns->desync++;
	st->flags &= ~(STREAM_F_SYNCED | STREAM_F_RESYNCING | STREAM_F_START);
	st->hdr_len = 0;
}

/*
 * Copies header bytes from the skb into st->hdr until it holds `want` bytes
 * or the segment ends. Returns false when the segment ended first.
 */
static __always_inline bool collect_header(struct __sk_buff *skb, struct pdu_stream *st,
					   __u32 payload_off, __u32 *off, __u32 len, __u32 want)
{
	__u32 have = st->hdr_len;
	__u64 take;

	if (have >= want)
		return true;
	if (have > NVQOS_PDU_PEEK_MAX)
		return false;
	take = want - have;
	if (take > len - *off)
		take = len - *off;
	/* Re-check on the register the helper gets: clang may have merged the bounds away. */
	asm volatile("" : "+r"(take));
	if (take > NVQOS_PDU_PEEK_MAX)
		return false;
	/*
	 * A signed test, behind a barrier so clang keeps it signed: Linux 6.1's
	 * verifier learns nothing from `take == 0` and refused a size of 0.
	 */
	asm volatile("" : "+r"(take));
	if ((__s64)take < 1)
		return false;
	if (bpf_skb_load_bytes(skb, payload_off + *off, st->hdr + (have & 63), take))
		return false;
	st->hdr_len = have + take;
	*off += take;
	return have + take >= want;
}

static __always_inline bool pdu_is_connect(const __u8 *h)
{
	return h[0] == NVME_TCP_CMD && h[PDU_OFF_CMD_OPCODE] == NVME_OPC_FABRICS &&
	       h[PDU_OFF_CMD_FCTYPE] == NVME_FCTYPE_CONNECT;
}

/* bpf_loop() state of the walk of one segment. */
struct walk_loop {
	struct __sk_buff *skb;
	struct nvme_walk w;
	struct pdu_stream *st;
	__u32 payload_off;
	__u32 seq; /* of the segment's first payload byte */
	__u32 len;
	__u32 off; /* where the walk is, from the first payload byte */
};

/*
 * A Connect capsule goes to connect.h; before it, a gated connection may only
 * send an ICReq. Returns true when the connection was refused. The gate and
 * refusal live in connect_sites, not in the walk's state on the stack: values
 * that change inside the bpf_loop() body multiply the verifier's work.
 */
static __always_inline bool walk_connect(struct walk_loop *l)
{
	struct nvme_walk *w = &l->w;
	struct pdu_stream *st = l->st;
	struct connect_site *site;

	site = bpf_map_lookup_elem(&connect_sites, &nvqos_zero_key);
	if (!site)
		return false;
	site->payload_off = l->payload_off;
	site->seg_seq = l->seq;
	site->seg_len = l->len;
	site->pdu_seq = st->hdr_seq;
	site->tenant_id = w->cmd.tenant_id;
	site->role = w->cmd.role;
	site->access = w->access;
	return connect_pdu(l->skb, w->key, (const struct connect_capsule_hdr *)st->hdr, site);
}

/*
 * One PDU per bpf_loop() iteration: the verifier checks the body once instead
 * of once per unrolled iteration. Returns 1 to stop.
 */
static long walk_one_pdu(__u32 index, struct walk_loop *l)
{
	struct nvme_walk *w = &l->w;
	struct pdu_stream *st = l->st;
	__u32 plen, pdu_end;
	__s32 d;

	if (l->off >= l->len)
		return 1;
	if (!collect_header(l->skb, st, l->payload_off, &l->off, l->len, NVQOS_PDU_CH_LEN))
		goto split;
	if ((st->flags & STREAM_F_START) && w->sdir == STREAM_H2C &&
	    st->hdr[0] == TLS_CONTENT_HANDSHAKE && st->hdr[1] == TLS_VERSION_MAJOR) {
		w->conn->flags |= CONN_F_TLS;
		w->ns->tls_flows++;
		l->off = l->len;
		return 1;
	}
	if (!collect_header(l->skb, st, l->payload_off, &l->off, l->len, pdu_need(st->hdr[0])))
		goto split;
	if (!pdu_plausible(st->hdr, w->sdir, w->conn->flags)) {
		stream_desync(w, st);
		return 1;
	}
	if (w->gate || pdu_is_connect(st->hdr)) {
		if (walk_connect(l)) {
			/* Stay at the Connect: a retransmission is checked and refused again. */
			st->next_seq = st->hdr_seq;
			st->hdr_len = 0;
			l->off = l->len;
			return 1;
		}
	}
	if (st->flags & STREAM_F_RESYNCING)
		w->ns->resync++;
	st->flags &= ~(STREAM_F_RESYNCING | STREAM_F_START);
	w->ns->pdus++;
	pdu_handle(w, st);

	plen = get_le32(st->hdr + PDU_OFF_PLEN);
	pdu_end = st->hdr_seq + plen;
	st->next_seq = pdu_end;
	st->hdr_seq = pdu_end;
	st->hdr_len = 0;
	d = (__s32)(pdu_end - l->seq);
	l->off = d < 0 ? l->len : (__u32)d;
	return 0;
split:
	/* The segment ended inside a header: continue it with the next one. */
	st->next_seq = l->seq + l->len;
	l->off = l->len;
	return 1;
}

/*
 * Walks the PDUs of one segment [seq, seq + len) of a stream. See
 * docs/design.md for the rules: parse only from a known boundary (next_seq);
 * a segment beginning past next_seq lost that boundary; resync only on a
 * segment that starts at or after everything seen and begins with a
 * plausible header.
 */
static __always_inline void stream_walk(struct walk_loop *l)
{
	struct nvme_walk *w = &l->w;
	struct pdu_stream *st = l->st;
	__u32 seq = l->seq;
	__u32 len = l->len;
	__u32 end = seq + len;
	bool fresh = !(st->flags & STREAM_F_SEEN) || (__s32)(seq - st->seen_end) >= 0;
	__s32 d;

	if (!(st->flags & STREAM_F_SEEN) || (__s32)(end - st->seen_end) > 0) {
		st->seen_end = end;
		st->flags |= STREAM_F_SEEN;
	}
	if (st->flags & STREAM_F_SYNCED) {
		d = (__s32)(st->next_seq - seq);
		if (d < 0)
			stream_desync(w, st);
		else if ((__u32)d >= len)
			return; /* data of the current PDU, or bytes already walked */
		else
			l->off = d;
	}
	if (!(st->flags & STREAM_F_SYNCED)) {
		/* A retransmission may carry PDUs already counted: never resync on one. */
		if (!fresh)
			return;
		st->next_seq = seq;
		st->hdr_seq = seq;
		st->hdr_len = 0;
		st->flags |= STREAM_F_SYNCED | STREAM_F_RESYNCING;
	}

	bpf_loop(NVQOS_PDU_MAX_PER_SKB, walk_one_pdu, l, 0);
	/* More PDUs in this skb than the walk may parse: the rest is lost. */
	if (l->off < len && (st->flags & STREAM_F_SYNCED))
		stream_desync(w, st);
}

/* Inserts a fresh connection (all streams unsynced) and returns it. */
static __always_inline struct nvme_conn *nvme_conn_open(const struct nvqos_flow_key *key, __u64 flags)
{
	struct nvme_conn *fresh = bpf_map_lookup_elem(&zero_nvme_conn, &nvqos_zero_key);

	if (!fresh)
		return NULL;
	bpf_map_update_elem(&nvme_conns, key, fresh, flags);
	return bpf_map_lookup_elem(&nvme_conns, key);
}

/* A SYN starts a stream at a known boundary: the byte after it. */
static __always_inline void stream_init(struct pdu_stream *st, __u32 syn_seq)
{
	st->next_seq = syn_seq + 1;
	st->seen_end = syn_seq + 1;
	st->hdr_seq = syn_seq + 1;
	st->hdr_len = 0;
	st->flags = STREAM_F_SYNCED | STREAM_F_SEEN | STREAM_F_START;
}

/* A SYN of a connection with a flow (a new connection reusing its 5-tuple). */
static __always_inline void stream_start(const struct nvqos_flow_key *key, __u8 sdir, __u32 syn_seq,
					 bool initial_syn)
{
	struct nvme_conn *conn = bpf_map_lookup_elem(&nvme_conns, key);

	if (!conn || initial_syn) {
		conn = nvme_conn_open(key, BPF_ANY);
		if (!conn)
			return;
	}
	stream_init(&conn->stream[sdir & 1], syn_seq);
}

/* The first payload after a handshake kept in `handshakes`: start its streams in sync. */
static __always_inline void conn_adopt_handshake(const struct nvqos_flow_key *key, struct nvme_conn *conn)
{
	struct handshake hs;

	if (!handshake_take(key, &hs))
		return;
	if (hs.seen & (1u << STREAM_H2C))
		stream_init(&conn->stream[STREAM_H2C], hs.isn[STREAM_H2C]);
	if (hs.seen & (1u << STREAM_C2H))
		stream_init(&conn->stream[STREAM_C2H], hs.isn[STREAM_C2H]);
}

/* The NVMe direction of a packet: host to controller or controller to host. */
static __always_inline __u8 nvme_stream_dir(int role, __u32 dir)
{
	return (role == NVQOS_ROLE_INITIATOR) == (dir == NVQOS_DIR_EGRESS) ? STREAM_H2C : STREAM_C2H;
}

/*
 * tc, after accounting: walk the PDUs of an NVMe/TCP segment of a known
 * connection, counting its commands and completions in *ios (zeroed by the
 * caller). Pure ACKs cost nothing beyond the payload length test. `known`:
 * the connection has a flow; a SYN without one only notes its handshake.
 */
static __always_inline int nvme_track(struct __sk_buff *skb, const struct nvqos_pkt *pkt,
				      const struct nvqos_flow_key *key, __u32 tenant_id, int role,
				      __u32 dir, struct nvme_ios *ios, bool gated, bool known)
{
	__u32 hdrs = pkt->ip_hdr_len + pkt->tcp_hdr_len;
	struct walk_loop l = {
		.skb = skb,
		.w = {
			.key = key,
			.ios = ios,
			.cmd = {.tenant_id = tenant_id, .role = role},
			.access = gated,
			.sdir = nvme_stream_dir(role, dir),
		},
		.payload_off = pkt->l3_off + hdrs,
		.seq = pkt->seq,
		.len = pkt->ip_len - hdrs,
	};

	if (pkt->tcp_flags & NVQOS_TCP_F_SYN) {
		/* Without a flow, the handshake waits apart: a SYN flood must not evict anything. */
		if (known)
			stream_start(key, l.w.sdir, pkt->seq, !(pkt->tcp_flags & NVQOS_TCP_F_ACK));
		else
			handshake_note(key, l.w.sdir, pkt->seq);
		if (gated && !(pkt->tcp_flags & NVQOS_TCP_F_ACK))
			return access_conn_open(key);
		return TC_ACT_OK;
	}
	if (!l.len)
		return TC_ACT_OK;
	l.w.ns = bpf_map_lookup_elem(&nvme_stats, &nvqos_zero_key);
	if (!l.w.ns)
		return TC_ACT_OK;
	if (gated)
		l.w.gate = access_walk_begin(key, tenant_id);
	l.w.conn = bpf_map_lookup_elem(&nvme_conns, key);
	if (!l.w.conn) {
		/*
		 * The first payload after the handshake: in sync from the ISNs
		 * kept. Else joined mid-stream (agent started late, LRU
		 * eviction): resync first.
		 */
		l.w.conn = nvme_conn_open(key, BPF_NOEXIST);
		if (!l.w.conn)
			return l.w.gate && access_gate_fail(key) ? access_shot(skb, key, tenant_id, pkt->ip_len)
								 : TC_ACT_OK;
		conn_adopt_handshake(key, l.w.conn);
	}
	if (l.w.conn->flags & CONN_F_TLS)
		return l.w.gate && access_gate_fail(key) ? access_shot(skb, key, tenant_id, pkt->ip_len)
							 : TC_ACT_OK;
	l.st = &l.w.conn->stream[l.w.sdir & 1];
	stream_walk(&l);
	/* Refused, or still gated after a segment the walk could not follow: fail closed. */
	if (gated && access_walk_end(skb, key, pkt->ip_len,
				     (l.w.conn->flags & CONN_F_TLS) || !(l.st->flags & STREAM_F_SYNCED)))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

struct close_ctx {
	struct nvqos_flow_key key;
};

/* Word by word: the key sits 4-byte aligned on the stack. */
static __always_inline bool flow_key_eq(const struct nvqos_flow_key *a, const struct nvqos_flow_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 diff = 0;
	__u32 i;

#pragma unroll
	for (i = 0; i < sizeof(*a) / sizeof(__u32); i++)
		diff |= x[i] ^ y[i];
	return !diff;
}

struct bpf_map;

/* bpf_for_each_map_elem callback: abort the closed connection's commands. */
static long abort_inflight(struct bpf_map *map, struct nvqos_inflight_key *k,
			   struct nvqos_inflight_value *v, struct close_ctx *c)
{
	struct nvqos_cmd_key sk = {};
	struct nvqos_cmd_stats *s;

	if (!flow_key_eq(&k->flow, &c->key))
		return 0;
	sk.tenant_id = v->tenant_id;
	sk.op = v->op;
	sk.role = v->role;
	if (bpf_map_delete_elem(map, k))
		return 0;
	s = cmd_stats_of(&sk);
	if (s)
		s->aborted++;
	return 0;
}

/*
 * The connection closed (first FIN or RST): forget its streams and abort its
 * tracked commands. Walks the whole in-flight table, once per connection
 * that closes with commands outstanding.
 */
static __always_inline void nvme_close(const struct nvqos_flow_key *key)
{
	struct nvme_conn *conn;
	struct close_ctx c;
	bool outstanding;

	bpf_map_delete_elem(&handshakes, key);
	conn = bpf_map_lookup_elem(&nvme_conns, key);
	if (!conn)
		return; /* no PDU state, hence no tracked command */
	outstanding = conn->inflight != 0;
	if (bpf_map_delete_elem(&nvme_conns, key) || !outstanding)
		return; /* another CPU closed it, or nothing to abort */
	__builtin_memcpy(&c.key, key, sizeof(c.key));
	bpf_for_each_map_elem(&inflight_cmds, abort_inflight, &c, 0);
}

#endif /* NVQOS_BPF_NVME_PDU_H */
