// Packet fuzzing of the data path: every program of the real BPF object (tc
// ingress, tc egress, XDP, and whatever programs are added later) runs on
// >= 100k random and mutated frames under BPF_PROG_TEST_RUN: random bytes, valid
// Ethernet/IP/TCP headers to the NVMe/TCP ports with garbage PDUs, lengths at
// the edges, truncations, absurd PLEN/HLEN/PDO, and valid NVMe/TCP
// conversations split at random points and mutated (bit flips, dropped,
// duplicated, reordered and shifted segments, stray SYN/FIN/RST).
//
// The oracle. The generator knows where it placed PDU headers in each TCP byte
// stream. Everywhere else it guarantees that no 8-byte common header of a
// command, a CapsuleResp or a C2HData with SUCCESS could look plausible, also
// across segment boundaries (see Sanitizer). So the data path may count at
// most one command per placed command header it was fed, and a completion only
// for a command it counted; a latency sample needs a completion. Checked too:
// verdicts, every map's entry count against its limit, keys and values of the
// maps the programs write (tenants, ops, roles in range), and that clean
// conversations before and after the hostile traffic are counted exactly.
//
// Enforcement is on while it runs: QoS (gold: EDT pacing, DSCP rewrite, HTB
// priority; a limited tenant: XDP ingress ceiling; a quarantined tenant) and
// access control on three more NVMe/TCP ports (enforce with refuse "reset",
// enforce with refuse "drop" in XDP, dry run), so every refusal and QoS path
// of every program sees the hostile traffic. Verdicts other than pass must
// have a cause: a quarantined or limited sender, or an access refusal counted
// on an enforcing port; an ingress frame tc rewrites must be a TCP RST with
// valid checksums; an egress frame may differ only by its DSCP and IPv4
// checksum, which stays valid; EDT departures stay within the horizon.
// Allowed connections through the access-controlled ports are counted
// exactly, like the clean conversations on the plain port.
//
// The test runs in a network namespace of its own (a veth pair gives the
// extra interface indexes): RSTs the reset path sends leave only there.
//
// Deterministic: NVQOS_FUZZ_SEED (printed) and NVQOS_FUZZ_PACKETS override the
// defaults for a longer or different run.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "datapath_harness.hpp"
#include "nvqos/nvmf/nvme.h"
#include "nvqos/nvmf/pdu.h"
#include "packet_builder.hpp"

namespace nvqos::testing {
namespace {

namespace nvmf = nvqos::nvmf;

constexpr std::uint64_t kDefaultSeed = 0x6e76716f73667a31ull;  // "nvqosfz1"
// Enough that each program runs >= 100k times: XDP drops the quarantined tenant's frames
// before tc ingress, and tc test runs refuse IP frames shorter than the IP header.
constexpr std::size_t kDefaultHostilePackets = 125000;
// BPF_PROG_TEST_RUN copies at most about a page (minus head- and tailroom).
constexpr std::size_t kMaxFrame = 3400;
constexpr std::size_t kMinFrame = 14;  // an Ethernet header: no program runs on less

// BPF_PROG_TEST_RUN of a tc program refuses (EINVAL) an IPv4 or IPv6 frame
// shorter than Ethernet + the fixed IP header (kernel 6.18); XDP takes them.
bool tc_accepts(const Bytes &frame) {
  const unsigned type = frame[12] << 8 | frame[13];
  if (type == 0x0800) return frame.size() >= 14 + 20;
  if (type == 0x86dd) return frame.size() >= 14 + 40;
  return true;
}
constexpr std::size_t kMaxSegment = 1400;

// Sizes of the LRU tables: small so that the fuzz traffic overflows them.
constexpr std::uint32_t kFlows = 2048;
constexpr std::uint32_t kConns = 2048;
constexpr std::uint32_t kInflight = 4096;

constexpr std::uint32_t kTenantGold = 1;
constexpr std::uint32_t kTenantQuarantined = 2;
constexpr std::uint32_t kTenantLimited = 3;
constexpr std::uint32_t kTenants = 4;  // default (0), gold, quarantined, limited

// QoS: gold is paced (EDT), marked and prioritised on egress; limited has an XDP ingress ceiling.
constexpr std::uint32_t kLimiterGold = 1;
constexpr std::uint32_t kLimiterLimited = 2;
constexpr std::uint8_t kGoldDscp = 46;
constexpr std::uint64_t kClockStepNs = 1000000;  // the QoS clock advances 1 ms every kClockEvery frames
constexpr std::uint64_t kClockEvery = 500;

// Access control: one subsystem protected on three more I/O ports, one per refusal mode.
constexpr std::uint16_t kPortReset = 4421;
constexpr std::uint16_t kPortDrop = 4422;
constexpr std::uint16_t kPortDryRun = 4423;
constexpr std::uint32_t kLockedId = 1;
const std::string kLockedNqn = "nqn.2026-11.io.nvqos:fuzz-locked";
const std::string kAllowedHost = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000a110e";
const std::string kForbiddenHost = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000bad0";

bool access_port(std::uint16_t port) { return port == kPortReset || port == kPortDrop || port == kPortDryRun; }
bool enforcing_port(std::uint16_t port) { return port == kPortReset || port == kPortDrop; }

// PDU header fields the sanitizer and the mutator know (NVMe/TCP transport binding).
constexpr std::uint8_t kPduCmd = 0x04;
constexpr std::uint8_t kPduRsp = 0x05;
constexpr std::uint8_t kPduC2HData = 0x07;
constexpr std::uint8_t kFlagSuccess = 0x08;
constexpr std::uint32_t kMaxPlen = 64u << 20;

std::uint64_t env_or(const char *name, std::uint64_t fallback) {
  const char *v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

std::uint32_t le32(const std::uint8_t *p) {
  return p[0] | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

// What an 8-byte common header could be to the data path, judged loosely (a
// superset of its strict checks, whatever digests were negotiated).
enum class Ch { none, command, completion };

Ch classify_ch(const std::uint8_t *h) {
  const std::uint8_t type = h[0], flags = h[1], hlen = h[2], pdo = h[3];
  const std::uint32_t plen = le32(h + 4);
  if (type == kPduCmd && hlen == 72 && !(flags & ~0x03) && plen >= 72 && plen <= kMaxPlen)
    return Ch::command;
  if (type == kPduRsp && hlen == 24 && !(flags & ~0x01) && pdo == 0 && (plen == 24 || plen == 28))
    return Ch::completion;
  if (type == kPduC2HData && hlen == 24 && (flags & kFlagSuccess) && !(flags & ~0x0f) &&
      plen >= 24 && plen <= kMaxPlen)
    return Ch::completion;
  return Ch::none;
}

// Could these k < 8 bytes at the end of a segment begin such a header, to be
// completed by the next segment?
bool could_begin_ch(const std::uint8_t *p, std::size_t k) {
  const std::uint8_t type = p[0];
  if (type != kPduCmd && type != kPduRsp && type != kPduC2HData) return false;
  if (k >= 2) {
    const std::uint8_t f = p[1];
    if (type == kPduCmd && (f & ~0x03)) return false;
    if (type == kPduRsp && (f & ~0x01)) return false;
    if (type == kPduC2HData && (!(f & kFlagSuccess) || (f & ~0x0f))) return false;
  }
  if (k >= 3 && p[2] != (type == kPduCmd ? 72 : 24)) return false;
  if (k >= 4 && type == kPduRsp && p[3] != 0) return false;
  return true;
}

// A TCP byte stream as the data path keys it: addresses and ports as sent, ifindex.
struct StreamId {
  Addr16 src, dst;
  std::uint16_t sport, dport;
  std::uint32_t ifindex;
  auto operator<=>(const StreamId &) const = default;
};

// Where the generator placed PDU headers, per stream, by sequence number.
using Placed = std::map<StreamId, std::set<std::uint32_t>>;

// Makes sure the only plausible command/completion headers in fed bytes are
// the placed ones: a header starting anywhere else gets its type byte broken,
// as does an unplaced header start among a segment's last 7 bytes (which the
// next segment could complete). Repeats until stable, since a broken byte
// (0xff) can complete another header's PDO or PLEN. `placed` null: nothing in
// these bytes is placed (frames whose headers were mutated: any offset may be
// payload).
void sanitize(std::uint8_t *p, std::size_t n, std::uint32_t seq, const std::set<std::uint32_t> *placed) {
  auto is_placed = [&](std::size_t j) {
    return placed && placed->count(static_cast<std::uint32_t>(seq + j)) > 0;
  };
  for (bool changed = true; changed;) {
    changed = false;
    for (std::size_t j = 0; j < n; ++j) {
      if (is_placed(j)) continue;
      const bool bad = j + 8 <= n ? classify_ch(p + j) != Ch::none : could_begin_ch(p + j, n - j);
      if (bad) {
        p[j] = 0xff;
        changed = true;
      }
    }
  }
}

// The most the data path may count from one segment's payload: placed headers
// that still look like a command / completion, or are cut by the segment's end.
struct Bound {
  std::uint64_t commands = 0;
  std::uint64_t completions = 0;
};

Bound placed_in(const std::uint8_t *p, std::size_t n, std::uint32_t seq, const std::set<std::uint32_t> *placed) {
  Bound b;
  if (!placed) return b;
  for (std::size_t j = 0; j < n; ++j) {
    if (!placed->count(static_cast<std::uint32_t>(seq + j))) continue;
    const Ch ch = j + 8 <= n ? classify_ch(p + j) : Ch::none;
    const bool cut = j + 8 > n;
    b.commands += cut || ch == Ch::command;
    b.completions += cut || ch == Ch::completion;
  }
  return b;
}

// One frame to feed: its bytes and, if its headers are as built, the stream
// and payload it carries (for the sanitizer and the bound).
struct Frame {
  Bytes bytes;
  SkbContext ctx;
  bool structured = false;  // headers as built: stream and payload offset known
  StreamId stream{};
  std::size_t payload_off = 0;
  std::size_t payload_len = 0;
  std::uint32_t seq = 0;
  bool quarantined_src = false;  // sent by an address of the quarantined tenant
  bool limited_src = false;      // sent by an address of the ingress-limited tenant
};

struct Endpoint {
  std::string addr;
  std::uint16_t port;
};

// The addresses the rules know: initiators of gold (10.1/16, fd01::/32) and of
// the quarantined tenant (10.2/16, fd02::/32); everything else is `default`.
struct AddressPlan {
  std::vector<std::string> v4_initiators{"10.1.0.1", "10.1.0.2", "10.2.0.1", "10.3.0.1", "10.3.0.2", "10.4.0.1"};
  std::vector<std::string> v6_initiators{"fd01::1", "fd02::1", "fd03::1", "fd04::1"};
  std::vector<std::string> v4_targets{"10.9.0.1", "10.9.0.2"};
  std::vector<std::string> v6_targets{"fd09::1"};
};

bool quarantined(const std::string &addr) { return addr.rfind("10.2.", 0) == 0 || addr.rfind("fd02:", 0) == 0; }
bool limited(const std::string &addr) { return addr.rfind("10.4.", 0) == 0 || addr.rfind("fd04:", 0) == 0; }

// Tenant of a connection from the target's point of view (remote = initiator)
// when the service port is the I/O port; the initiator's view (remote = target)
// and the discovery port are always `default`.
std::uint32_t tenant_of_initiator(const std::string &addr, std::uint16_t service_port) {
  if (service_port != NVQOS_PORT_NVME_IO) return NVQOS_TENANT_DEFAULT;
  if (addr.rfind("10.1.", 0) == 0 || addr.rfind("fd01:", 0) == 0) return kTenantGold;
  if (quarantined(addr)) return kTenantQuarantined;
  if (limited(addr)) return kTenantLimited;
  return NVQOS_TENANT_DEFAULT;
}

// Where the IP header of an Ethernet frame starts (after VLAN tags), and its ethertype.
std::size_t l3_of(const Bytes &f, std::uint16_t &type) {
  std::size_t off = 12;
  type = 0;
  while (off + 2 <= f.size()) {
    type = static_cast<std::uint16_t>(f[off] << 8 | f[off + 1]);
    if (type != kEtherTypeVlan && type != kEtherTypeQinQ) return off + 2;
    off += 4;
  }
  return f.size();
}

// The IPv4 header of the frame, if it has a plausible one: its offset and length.
bool ipv4_header(const Bytes &f, std::size_t &off, std::size_t &len) {
  std::uint16_t type;
  off = l3_of(f, type);
  if (type != 0x0800 || off + 20 > f.size() || (f[off] >> 4) != 4) return false;
  len = (f[off] & 15) * 4u;
  return len >= 20 && off + len <= f.size();
}

bool ipv4_checksum_ok(const Bytes &f) {
  std::size_t off, len;
  return ipv4_header(f, off, len) && ones_fold(ones_sum(f.data() + off, len)) == 0xffff;
}

// What a sender's stack does: a valid IPv4 header checksum (frames are built with 0).
void set_ipv4_checksum(Bytes &f) {
  std::size_t off, len;
  if (!ipv4_header(f, off, len)) return;
  f[off + 10] = f[off + 11] = 0;
  const std::uint16_t c = static_cast<std::uint16_t>(~ones_fold(ones_sum(f.data() + off, len)));
  f[off + 10] = static_cast<std::uint8_t>(c >> 8);
  f[off + 11] = static_cast<std::uint8_t>(c & 0xff);
}

// An Ethernet + IP + TCP RST with no payload and valid checksums (what the reset path builds).
bool valid_rst(const Bytes &f) {
  std::uint16_t type;
  const std::size_t off = l3_of(f, type);
  const std::uint8_t *ip = f.data() + off;
  std::size_t ip_len, hdr;
  std::uint32_t pseudo;
  if (type == 0x0800 && off + 40 <= f.size()) {
    hdr = (ip[0] & 15) * 4u;
    ip_len = std::size_t(ip[2] << 8 | ip[3]);
    if (hdr != 20 || ip_len != 40 || ip[9] != 6 || !ipv4_checksum_ok(f)) return false;
    pseudo = ones_sum(ip + 12, 8) + 6 + 20;
  } else if (type == 0x86dd && off + 60 <= f.size()) {
    hdr = 40;
    ip_len = 40 + std::size_t(ip[4] << 8 | ip[5]);
    if (ip_len != 60 || ip[6] != 6) return false;
    pseudo = ones_sum(ip + 8, 32) + 6 + 20;
  } else {
    return false;
  }
  const std::uint8_t *tcp = ip + hdr;
  return off + ip_len == f.size() && (tcp[13] & kTcpRst) && (tcp[12] >> 4) == 5 &&
         ones_fold(ones_sum(tcp, 20, pseudo)) == 0xffff;
}

// Does `after` differ from `before` only in the DSCP bits and the IPv4 checksum?
bool only_dscp_differs(const Bytes &before, const Bytes &after) {
  if (before.size() != after.size()) return false;
  std::uint16_t type;
  const std::size_t off = l3_of(before, type);
  for (std::size_t i = 0; i < before.size(); ++i) {
    if (before[i] == after[i]) continue;
    const bool v4 = type == 0x0800;
    const bool tos = v4 ? i == off + 1 : (i == off || i == off + 1);
    const bool csum = v4 && (i == off + 10 || i == off + 11);
    if (!tos && !csum) return false;
  }
  return true;
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : gen_(seed) {}
  std::uint64_t next() { return gen_(); }
  std::size_t below(std::size_t n) { return n ? gen_() % n : 0; }
  bool chance(double p) { return uniform() < p; }
  double uniform() { return std::uniform_real_distribution<double>(0, 1)(gen_); }
  template <typename T>
  const T &pick(const std::vector<T> &v) { return v[below(v.size())]; }
  std::uint8_t byte() { return static_cast<std::uint8_t>(gen_()); }
  Bytes bytes(std::size_t n) {
    Bytes b(n);
    for (auto &x : b) x = byte();
    return b;
  }

 private:
  std::mt19937_64 gen_;
};

// Lengths where parsers break: around header sizes and PDU header sizes.
std::size_t edge_length(Rng &rng, std::size_t max) {
  static const std::vector<std::size_t> kEdges{0, 1, 2, 7, 8, 9, 11, 12, 13, 23, 24, 25, 27, 28, 29,
                                                51, 52, 53, 71, 72, 73, 75, 76, 127, 128, 129, 131, 132};
  std::size_t n = rng.chance(0.6) ? rng.pick(kEdges) : rng.below(max + 1);
  return std::min(n, max);
}

// A PDU common header that breaks some rule: absurd PLEN/HLEN/PDO, flags, types.
Bytes absurd_header(Rng &rng) {
  static const std::vector<std::uint32_t> kPlens{0, 1, 7, 8, 23, 24, 25, 71, 72, 73, 128, 0x3ffffff,
                                                  0x4000000, 0x4000001, 0x7fffffff, 0x80000000, 0xffffffff};
  static const std::vector<std::uint8_t> kHlens{0, 1, 8, 23, 25, 71, 73, 127, 129, 255};
  Bytes h(8 + rng.below(80));
  for (auto &x : h) x = rng.byte();
  h[0] = static_cast<std::uint8_t>(rng.chance(0.8) ? rng.below(10) : rng.byte());
  h[1] = rng.chance(0.5) ? 0 : rng.byte();
  h[2] = rng.chance(0.5) ? rng.pick(kHlens) : rng.byte();
  h[3] = rng.chance(0.5) ? static_cast<std::uint8_t>(rng.pick(std::vector<std::uint8_t>{0, 1, 23, 24, 71, 72, 73, 255}))
                         : rng.byte();
  const std::uint32_t plen = rng.chance(0.7) ? rng.pick(kPlens) : static_cast<std::uint32_t>(rng.next());
  std::memcpy(h.data() + 4, &plen, 4);  // little endian, as on the wire
  return h;
}

Bytes garbage_payload(Rng &rng) {
  Bytes p;
  const std::size_t target = edge_length(rng, kMaxSegment);
  while (p.size() < target) {
    Bytes part;
    switch (rng.below(4)) {
      case 0: part = absurd_header(rng); break;
      case 1: part = rng.bytes(1 + rng.below(300)); break;
      case 2: part = Bytes(1 + rng.below(300), 0x00); break;
      default: part = Bytes(1 + rng.below(300), 0xff); break;
    }
    p.insert(p.end(), part.begin(), part.end());
  }
  p.resize(target);
  return p;
}

// One NVMe/TCP conversation between an initiator and a target, as segments
// in conversation order: handshake, IC exchange, Connect, commands of every
// kind (completions out of order, sometimes in one segment with data), FIN.
struct Segment {
  bool h2c;
  std::uint32_t seq;
  std::uint8_t flags;
  Bytes payload;
};

struct Conversation {
  Endpoint initiator, target;
  std::uint32_t ifindex = 1;
  std::vector<Segment> segments;
  std::uint64_t commands = 0;  // placed command capsules
  bool ipv6 = false;
};

class ConversationBuilder {
 public:
  ConversationBuilder(Rng &rng, Placed &placed) : rng_(rng), placed_(placed) {}

  // hostnqn: the Connect names kLockedNqn and this host; empty: NQNs all zero.
  Conversation build(const Endpoint &initiator, const Endpoint &target, std::uint32_t ifindex,
                     const std::string &hostnqn = {}) {
    Conversation c;
    c.initiator = initiator;
    c.target = target;
    c.ifindex = ifindex;
    conv_ = &c;
    h2c_seq_ = static_cast<std::uint32_t>(rng_.next());
    c2h_seq_ = static_cast<std::uint32_t>(rng_.next());
    h2c_stream_ = stream(true);
    c2h_stream_ = stream(false);
    c.segments.push_back({true, h2c_seq_++, kTcpSyn, {}});
    c.segments.push_back({false, c2h_seq_++, kTcpSyn | kTcpAck, {}});
    c.segments.push_back({true, h2c_seq_, kTcpAck, {}});

    link_.header_digest = rng_.chance(0.3);
    link_.data_digest = rng_.chance(0.3);
    pdu(true, nvmf::IcReq{.hdgst = link_.header_digest, .ddgst = link_.data_digest}, false, {});
    flush();
    pdu(false, nvmf::IcResp{.hdgst = link_.header_digest, .ddgst = link_.data_digest}, false, {});
    flush();

    std::uint16_t cid = static_cast<std::uint16_t>(rng_.below(1000));
    nvmf::ConnectCommand connect;
    connect.qid = rng_.chance(0.3) ? 0 : 1;
    std::array<std::uint8_t, nvmf::kConnectDataSize> connect_data{};
    if (!hostnqn.empty()) {
      nvmf::ConnectData data;
      data.subnqn = kLockedNqn;
      data.hostnqn = hostnqn;
      data.encode(connect_data);
    }
    pdu(true, nvmf::CapsuleCmd{nvmf::make_connect(cid, connect), connect_data}, true, link_);
    // Access control reads a Connect only whole in one segment (a split one is
    // refused, docs/design.md): sent as a host with a normal MSS sends it.
    flush(/*whole=*/!hostnqn.empty());
    pdu(false, response(cid), false, link_);
    flush();

    const std::size_t commands = 1 + rng_.below(12);
    for (std::size_t i = 0; i < commands;) {
      // A burst of up to 4 commands, then their completions in random order.
      const std::size_t burst = std::min(commands - i, 1 + rng_.below(4));
      std::vector<std::pair<std::uint16_t, int>> outstanding;
      for (std::size_t k = 0; k < burst; ++k, ++i) {
        const int kind = static_cast<int>(rng_.below(4));
        cid = static_cast<std::uint16_t>(cid + 1);
        const std::uint32_t len = 512u << rng_.below(4);  // 512 .. 4096
        switch (kind) {
          case 0: pdu(true, nvmf::CapsuleCmd{nvmf::make_read(cid, 1, i, len / 512 - 1, len), {}}, true, link_); break;
          case 1: pdu(true, nvmf::CapsuleCmd{nvmf::make_write(cid, 1, i, len / 512 - 1, len, true),
                                             std::span(filler(), len)}, true, link_); break;
          case 2: pdu(true, nvmf::CapsuleCmd{nvmf::make_write(cid, 1, i, len / 512 - 1, len, false), {}}, true, link_); break;
          default: pdu(true, nvmf::CapsuleCmd{nvmf::make_flush(cid, 1), {}}, true, link_); break;
        }
        outstanding.emplace_back(cid, kind);
      }
      flush();
      std::shuffle(outstanding.begin(), outstanding.end(), std::mt19937(static_cast<unsigned>(rng_.next())));
      for (const auto &[ocid, kind] : outstanding) complete(ocid, kind);
      flush();
    }
    c.segments.push_back({true, h2c_seq_, kTcpFin | kTcpAck, {}});
    c.segments.push_back({false, c2h_seq_, kTcpFin | kTcpAck, {}});
    conv_ = nullptr;
    return c;
  }

 private:
  static const std::uint8_t *filler() {
    // Zeros: no offset inside data can look like a header (type 0 needs HLEN 128).
    static const std::vector<std::uint8_t> kZeros(8192, 0);
    return kZeros.data();
  }

  static nvmf::CapsuleResp response(std::uint16_t cid) {
    nvmf::Cqe cqe;
    cqe.cid = cid;
    return nvmf::CapsuleResp{cqe};
  }

  void complete(std::uint16_t cid, int kind) {
    const std::uint32_t len = 512;
    switch (kind) {
      case 0: {  // read: data, then SUCCESS on the data or a CapsuleResp
        nvmf::C2HData d;
        d.cccid = cid;
        d.datal = len;
        d.last = true;
        d.success = rng_.chance(0.5);
        d.data = std::span(filler(), len);
        pdu(false, d, false, link_);
        if (!d.success) pdu(false, response(cid), false, link_);
        break;
      }
      case 2: {  // write by R2T: the target asks, the host sends, the target answers
        pdu(false, nvmf::R2T{.cccid = cid, .ttag = 1, .r2to = 0, .r2tl = len}, false, link_);
        flush();
        pdu(true, nvmf::H2CData{.cccid = cid, .ttag = 1, .datao = 0, .datal = len, .last = true,
                                .data = std::span(filler(), len)},
            false, link_);
        flush();
        pdu(false, response(cid), false, link_);
        break;
      }
      default:
        pdu(false, response(cid), false, link_);
        break;
    }
  }

  StreamId stream(bool h2c) const {
    const Endpoint &s = h2c ? conv_->initiator : conv_->target;
    const Endpoint &d = h2c ? conv_->target : conv_->initiator;
    return {parse_addr(s.addr), parse_addr(d.addr), s.port, d.port, conv_->ifindex};
  }

  // Appends a PDU to its direction's pending bytes and records where its header is.
  void pdu(bool h2c, const nvmf::Pdu &p, bool command, const nvmf::LinkParams &link) {
    if (h2c != pending_h2c_) flush();
    pending_h2c_ = h2c;
    std::uint32_t &seq = h2c ? h2c_seq_ : c2h_seq_;
    placed_[h2c ? h2c_stream_ : c2h_stream_].insert(seq + static_cast<std::uint32_t>(pending_.size()));
    const Bytes bytes = nvmf::encode_pdu(p, link);
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    if (command) ++conv_->commands;
  }

  // Cuts the pending bytes into segments: sometimes tiny (split headers), sometimes full.
  void flush(bool whole = false) {
    std::uint32_t &seq = pending_h2c_ ? h2c_seq_ : c2h_seq_;
    for (std::size_t off = 0; off < pending_.size();) {
      std::size_t n = whole ? pending_.size() : rng_.chance(0.25) ? 1 + rng_.below(30) : 1 + rng_.below(kMaxSegment);
      n = std::min(n, pending_.size() - off);
      conv_->segments.push_back({pending_h2c_, seq, kTcpAck | kTcpPsh,
                                 Bytes(pending_.begin() + off, pending_.begin() + off + n)});
      seq += static_cast<std::uint32_t>(n);
      off += n;
    }
    pending_.clear();
  }

  Rng &rng_;
  Placed &placed_;
  Conversation *conv_ = nullptr;
  nvmf::LinkParams link_;
  std::uint32_t h2c_seq_ = 0, c2h_seq_ = 0;
  StreamId h2c_stream_{}, c2h_stream_{};
  Bytes pending_;
  bool pending_h2c_ = true;
};

// Counts fed to the data path and the verdicts it returned.
struct Tally {
  std::uint64_t frames = 0;
  std::uint64_t tc_runs = 0;
  std::uint64_t tc_ingress_runs = 0;
  std::uint64_t tc_egress_runs = 0;
  std::uint64_t xdp_runs = 0;
  std::uint64_t xdp_drops = 0;
  std::uint64_t tc_refused = 0;  // frames too short for a tc test run (XDP only)
  std::uint64_t xdp_access_drops = 0;  // XDP drops of connections refused by "drop"
  std::uint64_t tc_access_drops = 0;   // tc ingress drops of refused connections
  std::uint64_t resets = 0;            // ingress frames turned into RSTs
  std::uint64_t dscp_rewrites = 0;     // egress frames whose DSCP was rewritten
  std::uint64_t paced = 0;             // egress frames given a departure time in the future
  std::uint64_t structured = 0;
  Bound bound;  // summed over tc runs
  std::map<std::string, std::uint64_t> other_runs;  // programs of other types, by name
};

class PacketFuzz : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = bpf_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    seed_ = env_or("NVQOS_FUZZ_SEED", kDefaultSeed);
    hostile_ = env_or("NVQOS_FUZZ_PACKETS", kDefaultHostilePackets);
    std::printf("packet fuzz: seed 0x%llx (NVQOS_FUZZ_SEED), %zu hostile frames (NVQOS_FUZZ_PACKETS)\n",
                static_cast<unsigned long long>(seed_), hostile_);
    rng_ = std::make_unique<Rng>(seed_);
    enter_private_netns();
    if (HasFatalFailure()) return;
    dp_ = std::make_unique<Datapath>(MapSizes{kFlows, kConns, kInflight});
    for (std::uint16_t port : {std::uint16_t{NVQOS_PORT_NVME_IO}, kPortReset, kPortDrop, kPortDryRun})
      dp_->add_nvme_port(port, NVQOS_PORT_KIND_IO);
    dp_->add_nvme_port(NVQOS_PORT_NVME_DISCOVERY, NVQOS_PORT_KIND_DISCOVERY);
    dp_->set_port_bitmap({NVQOS_PORT_NVME_IO, NVQOS_PORT_NVME_DISCOVERY, kPortReset, kPortDrop, kPortDryRun});
    dp_->add_rule(NVQOS_PORT_NVME_IO, "10.1.0.0", 16, kTenantGold);
    dp_->add_rule(NVQOS_PORT_NVME_IO, "fd01::", 32, kTenantGold);
    dp_->add_rule(NVQOS_PORT_NVME_IO, "10.2.0.0", 16, kTenantQuarantined);
    dp_->add_rule(NVQOS_PORT_NVME_IO, "fd02::", 32, kTenantQuarantined);
    dp_->add_rule(NVQOS_PORT_NVME_IO, "10.4.0.0", 16, kTenantLimited);
    dp_->add_rule(NVQOS_PORT_NVME_IO, "fd04::", 32, kTenantLimited);
    dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_PORT_BITMAP | NVQOS_SETTINGS_F_ACCESS |
                      NVQOS_SETTINGS_F_ACCESS_XDP);
    clock_ns_ = 1000 * kClockStepNs;
    dp_->set_clock(clock_ns_);
    // Slow-command reports on (every completion is "slow"), so the ring buffer path runs too.
    dp_->set_tenant_slow_cmd_ns(NVQOS_TENANT_DEFAULT, 1);
    nvqos_tenant_config gold{};
    gold.flags = NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_EDT | NVQOS_TENANT_F_MARK_DSCP | NVQOS_TENANT_F_SET_PRIORITY;
    gold.limiter_id = kLimiterGold;
    gold.slow_cmd_ns = 1;
    gold.classid[NVQOS_ROLE_INITIATOR] = 0x10010;
    gold.classid[NVQOS_ROLE_TARGET] = 0x10011;
    gold.dscp = kGoldDscp;
    dp_->set_tenant_config(kTenantGold, gold);
    nvqos_limiter_config gold_rates{};
    gold_rates.limit[NVQOS_LIMIT_EGRESS_BYTES] = {1000000, 64 * 1024};  // 1 MB/s: the fuzz outruns it
    gold_rates.limit[NVQOS_LIMIT_IOPS] = {1000, 16};
    dp_->set_limiter(kLimiterGold, gold_rates);
    nvqos_tenant_config lim{};
    lim.flags = NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_INGRESS_LIMIT;
    lim.limiter_id = kLimiterLimited;
    dp_->set_tenant_config(kTenantLimited, lim);
    nvqos_limiter_config lim_rates{};
    lim_rates.limit[NVQOS_LIMIT_INGRESS_BYTES] = {2000000, 16 * 1024};  // 2 KB per clock step: some pass
    lim_rates.limit[NVQOS_LIMIT_INGRESS_PACKETS] = {20000, 32};
    dp_->set_limiter(kLimiterLimited, lim_rates);
    dp_->set_tenant_flags(kTenantQuarantined, NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_DROP_INGRESS);
    protect_locked();
  }

  // A network namespace of this process's own, with interfaces 2 and 3 (a veth
  // pair) besides lo, so the RSTs the reset path sends go nowhere real.
  void enter_private_netns() {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    ASSERT_EQ(std::system("ip link set lo up && ip link add nvqfz0 type veth peer name nvqfz1 && "
                          "ip link set nvqfz0 up && ip link set nvqfz1 up"),
              0);
    ASSERT_EQ(if_nametoindex("nvqfz0") + if_nametoindex("nvqfz1"), 5u) << "interface indexes 2 and 3";
  }

  // kLockedNqn on the three access ports, kAllowedHost allowed; the ports' refusal modes.
  void protect_locked() {
    const struct {
      std::uint16_t port;
      std::uint32_t flags;
    } ports[] = {{kPortReset, NVQOS_ACCESS_F_ENFORCE | NVQOS_ACCESS_F_RESET},
                 {kPortDrop, NVQOS_ACCESS_F_ENFORCE},
                 {kPortDryRun, NVQOS_ACCESS_F_RESET}};
    auto &maps = dp_->skel().maps;
    for (const auto &p : ports) {
      nvqos_access_subsys_key k{};
      std::memcpy(k.sub.name, kLockedNqn.data(), kLockedNqn.size());
      k.port = p.port;
      const nvqos_access_subsys v{kLockedId, p.flags | NVQOS_ACCESS_F_HOSTS};
      ASSERT_EQ(bpf_map__update_elem(maps.access_subsystems, &k, sizeof k, &v, sizeof v, BPF_ANY), 0);
      const __u16 port = p.port;
      const nvqos_access_port ap{p.flags};
      ASSERT_EQ(bpf_map__update_elem(maps.access_ports, &port, sizeof port, &ap, sizeof ap, BPF_ANY), 0);
    }
    nvqos_access_host_key hk{};
    hk.subsys_id = kLockedId;
    std::memcpy(hk.host.name, kAllowedHost.data(), kAllowedHost.size());
    const __u32 one = 1;
    ASSERT_EQ(bpf_map__update_elem(maps.access_hosts, &hk, sizeof hk, &one, sizeof one, BPF_ANY), 0);
  }

  // Access refusals counted so far (packets kept from targets, connections turned away at a full table).
  std::uint64_t access_refusals() {
    return access_stats(NVQOS_ACCESS_SUBSYS_UNKNOWN).dropped_packets + access_stats(kLockedId).dropped_packets +
           percpu_sum<nvqos_connect_stats>(dp_->skel().maps.connect_stats, 0).conns_full;
  }
  std::uint64_t access_resets() {
    return access_stats(NVQOS_ACCESS_SUBSYS_UNKNOWN).resets + access_stats(kLockedId).resets;
  }
  nvqos_access_stats access_stats(std::uint32_t id) {
    return percpu_sum<nvqos_access_stats>(dp_->skel().maps.access_stats, id);
  }

  // Every frame runs through XDP (as arriving), then, unless XDP dropped it,
  // tc ingress, and tc egress (as leaving): one frame is both the initiator's
  // and the target's view of a segment. Programs added to the object later run too.
  void feed(Frame &f, bool sanitized = true) {
    Bound b;  // what the tc programs may count from this frame, per program run
    if (!sanitized) {
      // A clean conversation: its bytes are exactly the PDUs placed, counted exactly.
    } else if (f.structured) {
      auto it = placed_.find(f.stream);
      const std::set<std::uint32_t> *placed = it == placed_.end() ? nullptr : &it->second;
      sanitize(f.bytes.data() + f.payload_off, f.payload_len, f.seq, placed);
      b = placed_in(f.bytes.data() + f.payload_off, f.payload_len, f.seq, placed);
    } else {
      sanitize(f.bytes.data(), f.bytes.size(), 0, nullptr);
    }
    ++tally_.frames;
    tally_.structured += f.structured;
    if (tally_.frames % kClockEvery == 0) dp_->set_clock(clock_ns_ += kClockStepNs);
    set_ipv4_checksum(f.bytes);
    // A structured frame to an enforcing access port (as the target sees it) may be refused.
    const bool refusable = !f.structured || (f.stream.dport == kPortReset || f.stream.dport == kPortDrop);

    const std::uint64_t refusals = access_refusals();
    const RunResult x = explained([&] { return dp_->xdp(f.bytes); }, f);
    ++tally_.xdp_runs;
    ASSERT_TRUE(x.retval == XDP_PASS || x.retval == XDP_DROP)
        << "XDP verdict " << x.retval << " on frame " << tally_.frames;
    if (x.retval == XDP_DROP) {
      ++tally_.xdp_drops;
      const bool refused = access_refusals() > refusals;
      tally_.xdp_access_drops += refused;
      ASSERT_TRUE(!f.structured || f.quarantined_src || f.limited_src || (refused && f.stream.dport == kPortDrop))
          << "XDP dropped frame " << tally_.frames << " of a tenant neither quarantined nor limited, not refused";
    } else {
      // What XDP dropped never reaches tc ingress.
      if (!tc_accepts(f.bytes)) {
        ++tally_.tc_refused;
        return;
      }
      const std::uint64_t resets = access_resets();
      const RunResult in = explained([&] { return dp_->ingress(f.bytes, f.ctx); }, f);
      ++tally_.tc_runs;
      ++tally_.tc_ingress_runs;
      if (in.retval == static_cast<std::uint32_t>(TC_ACT_SHOT)) {
        ASSERT_TRUE(refusable && access_refusals() > refusals)
            << "tc ingress dropped frame " << tally_.frames << " without an access refusal on an enforcing port"
            << " (structured " << f.structured << ", to port " << f.stream.dport << ")";
        ++tally_.tc_access_drops;
      } else {
        ASSERT_EQ(in.retval, static_cast<std::uint32_t>(TC_ACT_OK)) << "tc ingress verdict, frame " << tally_.frames;
      }
      if (in.retval == TC_ACT_OK && in.data != f.bytes) {
        ASSERT_TRUE(refusable && access_resets() > resets)
            << "tc ingress rewrote frame " << tally_.frames << " without a counted reset";
        ASSERT_TRUE(valid_rst(in.data)) << "frame " << tally_.frames << " became something else than a valid RST";
        ++tally_.resets;
      }
      tally_.bound.commands += b.commands;
      tally_.bound.completions += b.completions;
    }
    if (!tc_accepts(f.bytes)) {
      ++tally_.tc_refused;
      return;
    }
    const bool checksum_was_ok = ipv4_checksum_ok(f.bytes);
    const RunResult out = explained([&] { return dp_->egress(f.bytes, f.ctx); }, f);
    ASSERT_EQ(out.retval, static_cast<std::uint32_t>(TC_ACT_OK)) << "tc egress verdict, frame " << tally_.frames;
    ASSERT_TRUE(only_dscp_differs(f.bytes, out.data)) << "tc egress changed more than the DSCP, frame " << tally_.frames;
    if (out.data != f.bytes) {
      ++tally_.dscp_rewrites;
      if (checksum_was_ok) ASSERT_TRUE(ipv4_checksum_ok(out.data)) << "IPv4 checksum broken by the DSCP rewrite, frame "
                                                                   << tally_.frames;
    }
    ASSERT_LE(out.tstamp, clock_ns_ + NVQOS_EDT_HORIZON_NS) << "EDT departure beyond the horizon, frame " << tally_.frames;
    tally_.paced += out.tstamp > clock_ns_;
    ++tally_.tc_runs;
    ++tally_.tc_egress_runs;
    tally_.bound.commands += b.commands;
    tally_.bound.completions += b.completions;
    run_other_programs(f);
  }

  // A failed test run names the frame: its number, size, context and first bytes.
  template <typename Run>
  RunResult explained(Run &&run, const Frame &f) {
    try {
      return run();
    } catch (const std::exception &e) {
      std::string hex;
      char b[4];
      for (std::size_t i = 0; i < std::min<std::size_t>(f.bytes.size(), 80); ++i) {
        std::snprintf(b, sizeof b, "%02x", f.bytes[i]);
        hex += b;
      }
      throw std::runtime_error(std::string(e.what()) + " (frame " + std::to_string(tally_.frames) + ", " +
                               std::to_string(f.bytes.size()) + " bytes, ifindex " + std::to_string(f.ctx.ifindex) +
                               ", gso " + std::to_string(f.ctx.gso_size) + "/" + std::to_string(f.ctx.gso_segs) +
                               ": " + hex + ")");
    }
  }

  // Programs other helpers add to the object: run them too (tc and XDP types),
  // with the verdicts a program may return while no enforcement is configured.
  void run_other_programs(const Frame &f) {
    bpf_program *prog;
    bpf_object__for_each_program(prog, dp_->skel().obj) {
      if (prog == dp_->skel().progs.nvqos_tc_ingress || prog == dp_->skel().progs.nvqos_tc_egress ||
          prog == dp_->skel().progs.nvqos_xdp_ingress || bpf_program__fd(prog) < 0)
        continue;
      const auto type = bpf_program__type(prog);
      std::uint32_t verdict;
      if (type == BPF_PROG_TYPE_SCHED_CLS) {
        verdict = run_tc(prog, f.bytes, f.ctx).retval;
        ASSERT_TRUE(verdict == TC_ACT_OK || verdict == static_cast<std::uint32_t>(TC_ACT_UNSPEC))
            << bpf_program__name(prog) << " verdict " << verdict;
      } else if (type == BPF_PROG_TYPE_XDP) {
        verdict = run_xdp(prog, f.bytes).retval;
        ASSERT_TRUE(verdict == XDP_PASS || verdict == XDP_DROP) << bpf_program__name(prog) << " verdict " << verdict;
      } else {
        continue;
      }
      ++tally_.other_runs[bpf_program__name(prog)];
    }
  }

  Frame frame_of(const Conversation &c, const Segment &s) {
    const Endpoint &src = s.h2c ? c.initiator : c.target;
    const Endpoint &dst = s.h2c ? c.target : c.initiator;
    PacketBuilder b;
    b.ip(src.addr, dst.addr).tcp(src.port, dst.port, s.flags, s.seq).payload(s.payload);
    Frame f;
    f.bytes = b.build();
    f.ctx.ifindex = c.ifindex;
    f.structured = true;
    f.stream = {parse_addr(src.addr), parse_addr(dst.addr), src.port, dst.port, c.ifindex};
    f.payload_off = b.l3_offset() + b.ip_header_length() + b.tcp_header_length();
    f.payload_len = s.payload.size();
    f.seq = s.seq;
    f.quarantined_src = quarantined(src.addr);
    f.limited_src = limited(src.addr);
    return f;
  }

  // To an access-controlled port the Connect names the locked subsystem and hostnqn
  // (allowed or forbidden at random when empty).
  Conversation conversation(const std::string &initiator, const std::string &target, std::uint16_t port,
                            std::string hostnqn = {}) {
    ConversationBuilder builder(*rng_, placed_);
    const std::uint16_t sport = static_cast<std::uint16_t>(1024 + rng_->below(64000));
    if (access_port(port) && hostnqn.empty()) hostnqn = rng_->chance(0.5) ? kAllowedHost : kForbiddenHost;
    return builder.build({initiator, sport}, {target, port}, 1 + static_cast<std::uint32_t>(rng_->below(3)),
                         access_port(port) ? hostnqn : std::string());
  }

  // The NVMe/TCP port of a hostile frame or conversation: mostly the plain I/O port.
  std::uint16_t hostile_port() {
    const double r = rng_->uniform();
    if (r < 0.55) return NVQOS_PORT_NVME_IO;
    if (r < 0.7) return NVQOS_PORT_NVME_DISCOVERY;
    if (r < 0.8) return kPortReset;
    if (r < 0.9) return kPortDrop;
    return kPortDryRun;
  }

  // Valid Ethernet/IP/TCP to or from an NVMe/TCP port, garbage PDUs.
  Frame garbage_frame() {
    const AddressPlan plan;
    const bool v6 = rng_->chance(0.3);
    const std::string ini = v6 ? rng_->pick(plan.v6_initiators) : rng_->pick(plan.v4_initiators);
    const std::string tgt = v6 ? rng_->pick(plan.v6_targets) : rng_->pick(plan.v4_targets);
    const std::uint16_t nvme_port = hostile_port();
    // Few host ports, so that garbage lands on the same streams again and again.
    const std::uint16_t host_port = static_cast<std::uint16_t>(rng_->chance(0.7) ? 40000 + rng_->below(8)
                                                                               : 1024 + rng_->below(64000));
    const bool h2c = rng_->chance(0.5);
    static const std::vector<std::uint8_t> kFlags{kTcpAck, kTcpAck | kTcpPsh, kTcpSyn, kTcpSyn | kTcpAck,
                                                  kTcpFin | kTcpAck, kTcpRst, kTcpRst | kTcpAck};
    const std::uint8_t flags = rng_->chance(0.8) ? rng_->pick(kFlags) : rng_->byte();
    const std::uint32_t seq = rng_->chance(0.5) ? static_cast<std::uint32_t>(rng_->below(4096))
                                                : static_cast<std::uint32_t>(rng_->next());
    const Bytes payload = garbage_payload(*rng_);
    PacketBuilder b;
    for (std::size_t v = rng_->chance(0.15) ? 1 + rng_->below(3) : 0; v > 0; --v)
      b.vlan(static_cast<std::uint16_t>(rng_->below(4096)), rng_->chance(0.5) ? kEtherTypeVlan : kEtherTypeQinQ);
    if (h2c) b.ip(ini, tgt).tcp(host_port, nvme_port, flags, seq);
    else b.ip(tgt, ini).tcp(nvme_port, host_port, flags, seq);
    if (rng_->chance(0.1)) {
      if (v6) b.ipv6_ext(rng_->pick(std::vector<std::uint8_t>{kIpv6HopByHop, kIpv6Routing, kIpv6DestOptions}),
                         8 * (1 + rng_->below(3)));
      else b.ipv4_options(4 * rng_->below(11));
    }
    if (rng_->chance(0.05)) {
      if (v6) b.ipv6_fragment(static_cast<std::uint16_t>(rng_->below(3)), rng_->chance(0.5));
      else b.ipv4_fragment(static_cast<std::uint16_t>(rng_->below(3)), rng_->chance(0.5));
    }
    if (rng_->chance(0.1)) b.tcp_options(4 * rng_->below(11));
    b.payload(payload);
    if (rng_->chance(0.05)) b.trailer(rng_->below(64));

    Frame f;
    f.ctx.ifindex = 1 + static_cast<std::uint32_t>(rng_->below(3));
    if (rng_->chance(0.1)) {
      f.ctx.gso_size = static_cast<std::uint32_t>(rng_->chance(0.5) ? 1 + rng_->below(1500) : rng_->next());
      f.ctx.gso_segs = static_cast<std::uint32_t>(rng_->chance(0.5) ? 0 : rng_->below(65536));  // GSO_MAX_SEGS
    }
    // Malformed headers: then nothing about the stream is known.
    const int malformed = rng_->chance(0.3) ? static_cast<int>(1 + rng_->below(5)) : 0;
    static const std::vector<std::uint16_t> kIpLengths{0, 1, 19, 20, 39, 40, 41, 59, 60, 0xfffe, 0xffff};
    switch (malformed) {
      case 1: b.raw_ip_length(rng_->chance(0.7) ? rng_->pick(kIpLengths) : static_cast<std::uint16_t>(rng_->next())); break;
      case 2: b.raw_ihl(static_cast<std::uint8_t>(rng_->below(16))); break;
      case 3: b.raw_doff(static_cast<std::uint8_t>(rng_->below(16))); break;
      case 4: b.raw_ip_version(static_cast<std::uint8_t>(rng_->below(16))); break;
      default: break;
    }
    f.bytes = b.build();
    if (malformed == 5 || f.bytes.size() > kMaxFrame) f.bytes.resize(std::clamp(edge_length(*rng_, f.bytes.size()), kMinFrame, kMaxFrame));
    if (malformed == 0 && f.bytes.size() <= kMaxFrame) {
      f.structured = true;
      f.stream = {parse_addr(h2c ? ini : tgt), parse_addr(h2c ? tgt : ini), h2c ? host_port : nvme_port,
                  h2c ? nvme_port : host_port, f.ctx.ifindex};
      f.payload_off = b.l3_offset() + b.ip_header_length() + b.tcp_header_length();
      f.payload_len = payload.size();
      f.seq = seq;
      f.quarantined_src = h2c && quarantined(ini);
      f.limited_src = h2c && limited(ini);
    }
    return f;
  }

  Frame random_frame() {
    Frame f;
    f.bytes = rng_->bytes(std::max(kMinFrame, edge_length(*rng_, kMaxFrame)));
    // Often an IP ethertype, so the parser gets past Ethernet.
    if (f.bytes.size() >= 14 && rng_->chance(0.7)) {
      const std::uint16_t type = rng_->chance(0.5) ? 0x0800 : 0x86dd;
      f.bytes[12] = type >> 8;
      f.bytes[13] = type & 0xff;
      if (f.bytes.size() > 14) f.bytes[14] = type == 0x0800 ? 0x45 : 0x60;
    }
    f.ctx.ifindex = 1 + static_cast<std::uint32_t>(rng_->below(3));
    return f;
  }

  // Mutations of a conversation's frames; returns the frames to feed, in order.
  std::vector<Frame> mutate(const Conversation &c) {
    std::vector<Frame> out;
    for (const Segment &s : c.segments) {
      Segment m = s;
      bool header_mutation = false;
      std::size_t feeds = 1;
      if (rng_->chance(0.2)) {
        switch (rng_->below(9)) {
          case 0: feeds = 0; break;                            // lost before our hook
          case 1: feeds = 2; break;                            // duplicated (retransmission)
          case 2:                                              // bit flips in the payload
            for (std::size_t k = 1 + rng_->below(8); k > 0 && !m.payload.empty(); --k)
              m.payload[rng_->below(m.payload.size())] ^= static_cast<std::uint8_t>(1u << rng_->below(8));
            break;
          case 3:                                              // an absurd field in a header
            if (m.payload.size() >= 8) {
              const std::size_t at = rng_->below(m.payload.size() - 7);
              const Bytes h = absurd_header(*rng_);
              const std::size_t field = rng_->below(4);
              if (field == 0) std::memcpy(&m.payload[at + 4], h.data() + 4, 4);  // PLEN
              else m.payload[at + 1 + field] = h[1 + field];                     // HLEN / PDO / flags
            }
            break;
          case 4: m.seq += static_cast<std::uint32_t>(rng_->chance(0.5) ? rng_->below(64) : rng_->next()); break;
          case 5: m.flags |= rng_->pick(std::vector<std::uint8_t>{kTcpSyn, kTcpFin, kTcpRst}); break;
          case 6:                                              // the payload cut short
            m.payload.resize(edge_length(*rng_, m.payload.size()));
            break;
          case 7: header_mutation = true; break;               // bytes anywhere in the frame
          default: break;                                      // (reordering: see below)
        }
      }
      Frame f = frame_of(c, m);
      if (header_mutation) {
        for (std::size_t k = 1 + rng_->below(4); k > 0; --k)
          f.bytes[rng_->below(std::min<std::size_t>(f.bytes.size(), 80))] = rng_->byte();
        f.structured = false;
      }
      if (rng_->chance(0.05)) {
        f.ctx.gso_size = static_cast<std::uint32_t>(1 + rng_->below(1500));
        f.ctx.gso_segs = static_cast<std::uint32_t>(rng_->below(64));
      }
      for (std::size_t k = 0; k < feeds; ++k) out.push_back(f);
    }
    // Reordering: swap neighbours now and then.
    for (std::size_t i = 0; i + 1 < out.size(); ++i)
      if (rng_->chance(0.03)) std::swap(out[i], out[i + 1]);
    return out;
  }

  struct Expected {
    std::map<std::pair<std::uint32_t, std::uint8_t>, std::uint64_t> commands;  // (tenant, role) -> count
  };

  // Clean conversations fed in order: counted exactly, per tenant and role.
  void clean_conversations(std::size_t n, Expected &expected) {
    const AddressPlan plan;
    for (std::size_t i = 0; i < n; ++i) {
      const bool v6 = i % 3 == 2;
      // Initiators of gold and default only: the quarantined tenant's capsules drop in XDP.
      const std::string ini = v6 ? "fd01::7" : (i % 2 ? "10.1.0.7" : "10.3.0.7");
      const std::string tgt = v6 ? "fd09::7" : "10.9.0.7";
      const Conversation c = conversation(ini, tgt, NVQOS_PORT_NVME_IO);
      for (const Segment &s : c.segments) {
        Frame f = frame_of(c, s);
        feed(f, false);
        if (HasFatalFailure()) return;
      }
      expected.commands[{NVQOS_TENANT_DEFAULT, NVQOS_ROLE_INITIATOR}] += c.commands;
      expected.commands[{tenant_of_initiator(ini, NVQOS_PORT_NVME_IO), NVQOS_ROLE_TARGET}] += c.commands;
    }
    // Through access control: allowed hosts on the enforcing ports, a forbidden one on the dry-run port.
    for (std::uint16_t port : {kPortReset, kPortDrop, kPortDryRun}) {
      const Conversation c = conversation("10.3.0.8", "10.9.0.8", port,
                                          port == kPortDryRun ? kForbiddenHost : kAllowedHost);
      for (const Segment &s : c.segments) {
        Frame f = frame_of(c, s);
        feed(f, false);
        if (HasFatalFailure()) return;
      }
      expected.commands[{NVQOS_TENANT_DEFAULT, NVQOS_ROLE_INITIATOR}] += c.commands;
      expected.commands[{NVQOS_TENANT_DEFAULT, NVQOS_ROLE_TARGET}] += c.commands;
    }
  }

  struct Counted {
    std::map<std::pair<std::uint32_t, std::uint8_t>, nvqos_cmd_stats> by_tenant_role;
    std::uint64_t submitted = 0, completed = 0, samples = 0;
  };

  Counted counted() {
    Counted c;
    for (std::uint32_t t = 0; t < kTenants; ++t)
      for (std::uint8_t op = 0; op < NVQOS_CMD_OP_MAX; ++op)
        for (std::uint8_t role = 0; role < NVQOS_ROLE_MAX; ++role) {
          nvqos_cmd_key key{};
          key.tenant_id = t;
          key.op = op;
          key.role = role;
          const nvqos_cmd_stats s = dp_->cmd_stats(key);
          auto &agg = c.by_tenant_role[{t, role}];
          agg.submitted += s.submitted;
          agg.completed += s.completed;
          c.submitted += s.submitted;
          c.completed += s.completed;
          std::uint64_t samples = 0;
          for (std::uint64_t v : dp_->cmd_latency(key)) samples += v;
          // A latency sample is a matched completion, nothing else.
          EXPECT_EQ(samples, s.completed) << "tenant " << t << " op " << int(op) << " role " << int(role);
          EXPECT_LE(s.completed + s.aborted + s.lost, s.submitted)
              << "tenant " << t << " op " << int(op) << " role " << int(role);
          c.samples += samples;
        }
    return c;
  }

  // Every map's entry count within its limit; what the programs wrote names
  // only configured tenants, real ops and roles.
  void expect_bounded_state() {
    bpf_map *map;
    bpf_object__for_each_map(map, dp_->skel().obj) {
      const auto type = bpf_map__type(map);
      if (type != BPF_MAP_TYPE_HASH && type != BPF_MAP_TYPE_LRU_HASH && type != BPF_MAP_TYPE_PERCPU_HASH &&
          type != BPF_MAP_TYPE_LRU_PERCPU_HASH && type != BPF_MAP_TYPE_LPM_TRIE)
        continue;
      const std::size_t n = map_entries(map);
      std::printf("packet fuzz: map %-20s %7zu / %u entries\n", bpf_map__name(map), n, bpf_map__max_entries(map));
      EXPECT_LE(n, bpf_map__max_entries(map)) << bpf_map__name(map);
    }
    for (const auto &[key, value] : dp_->flows()) {
      EXPECT_LT(value.tenant_id, kTenants) << "flow of an unknown tenant";
      EXPECT_LT(value.role, NVQOS_ROLE_MAX);
      const std::uint16_t lp = ntohs(key.local_port), rp = ntohs(key.remote_port);
      EXPECT_TRUE(lp == NVQOS_PORT_NVME_IO || lp == NVQOS_PORT_NVME_DISCOVERY || rp == NVQOS_PORT_NVME_IO ||
                  rp == NVQOS_PORT_NVME_DISCOVERY || access_port(lp) || access_port(rp))
          << "flow of a connection that is not NVMe/TCP: ports " << lp << ", " << rp;
    }
    const bpf_map *gates = dp_->skel().maps.access_conns;
    for_each_key<nvqos_flow_key>(gates, [&](const nvqos_flow_key &k) {
      EXPECT_TRUE(enforcing_port(ntohs(k.local_port)) || ntohs(k.local_port) == kPortDryRun)
          << "a gate on port " << ntohs(k.local_port);
      nvqos_access_conn v{};
      if (bpf_map__lookup_elem(gates, &k, sizeof(k), &v, sizeof(v), 0) != 0) return;
      EXPECT_TRUE(v.state == NVQOS_ACCESS_CONN_PENDING || v.state == NVQOS_ACCESS_CONN_REFUSED);
      EXPECT_TRUE(v.subsys_id == NVQOS_ACCESS_SUBSYS_UNKNOWN || v.subsys_id == kLockedId);
      EXPECT_TRUE(v.state == NVQOS_ACCESS_CONN_PENDING || (v.flags & NVQOS_ACCESS_F_ENFORCE))
          << "a refusal on a dry-run port";
    });
    for_each_key<nvqos_cmd_key>(dp_->skel().maps.cmd_stats, [](const nvqos_cmd_key &k) {
      EXPECT_LT(k.tenant_id, kTenants);
      EXPECT_LT(k.op, NVQOS_CMD_OP_MAX);
      EXPECT_LT(k.role, NVQOS_ROLE_MAX);
    });
    for_each_key<nvqos_cmd_key>(dp_->skel().maps.cmd_latency, [](const nvqos_cmd_key &k) {
      EXPECT_LT(k.tenant_id, kTenants);
      EXPECT_LT(k.op, NVQOS_CMD_OP_MAX);
    });
    const bpf_map *inflight = dp_->skel().maps.inflight_cmds;
    for_each_key<nvqos_inflight_key>(inflight, [&](const nvqos_inflight_key &k) {
      nvqos_inflight_value v{};
      if (bpf_map__lookup_elem(inflight, &k, sizeof(k), &v, sizeof(v), 0) != 0) return;
      EXPECT_LT(v.tenant_id, kTenants);
      EXPECT_LT(v.op, NVQOS_CMD_OP_MAX);
      EXPECT_LT(v.role, NVQOS_ROLE_MAX);
    });
  }

  template <typename K, typename F>
  static void for_each_key(const bpf_map *map, F &&f) {
    K key{}, next{};
    const K *prev = nullptr;
    while (bpf_map__get_next_key(map, prev, &next, sizeof(next)) == 0) {
      key = next;
      prev = &key;
      f(key);
    }
  }

  void expect_exact(const Expected &expected, const Counted &before, const char *phase) {
    const Counted now = counted();
    for (std::uint32_t t = 0; t < kTenants; ++t)
      for (std::uint8_t role = 0; role < NVQOS_ROLE_MAX; ++role) {
        auto it = expected.commands.find({t, role});
        const std::uint64_t want = it == expected.commands.end() ? 0 : it->second;
        const auto &a = now.by_tenant_role.at({t, role});
        const auto &b = before.by_tenant_role.at({t, role});
        EXPECT_EQ(a.submitted - b.submitted, want) << phase << ": submitted, tenant " << t << " role " << int(role);
        EXPECT_EQ(a.completed - b.completed, want) << phase << ": completed, tenant " << t << " role " << int(role);
      }
  }

  std::uint64_t seed_ = kDefaultSeed;
  std::uint64_t clock_ns_ = 0;  // the QoS clock (settings.fixed_now_ns)
  std::size_t hostile_ = kDefaultHostilePackets;
  std::unique_ptr<Rng> rng_;
  std::unique_ptr<Datapath> dp_;
  Placed placed_;
  Tally tally_;
};

TEST_F(PacketFuzz, HostileFramesCountNoCommandAndStateStaysBounded) {
  const auto started = std::chrono::steady_clock::now();
  const AddressPlan plan;

  // 1. Clean conversations: exact counts (the oracle below is not vacuous).
  Expected clean;
  Counted zero = counted();
  clean_conversations(12, clean);
  ASSERT_FALSE(HasFatalFailure());
  expect_exact(clean, zero, "clean conversations before the fuzz");

  // 2. Garbage only (a third of the budget): no command, completion or sample at all.
  const Counted before_garbage = counted();
  const std::size_t garbage = hostile_ / 3;
  for (std::size_t i = 0; i < garbage; ++i) {
    Frame f = rng_->chance(0.25) ? random_frame() : garbage_frame();
    feed(f);
    ASSERT_FALSE(HasFatalFailure()) << "seed 0x" << std::hex << seed_;
  }
  const Counted after_garbage = counted();
  EXPECT_EQ(after_garbage.submitted, before_garbage.submitted) << "garbage counted as a command";
  EXPECT_EQ(after_garbage.completed, before_garbage.completed) << "garbage counted as a completion";
  EXPECT_EQ(after_garbage.samples, before_garbage.samples) << "a latency sample from garbage";
  EXPECT_EQ(dp_->inflight_count(), 0u) << "garbage left commands in flight";

  // 3. Mutated conversations interleaved with garbage until the budget is spent.
  const Tally at_mix = tally_;
  std::size_t conversations = 0;
  while (tally_.frames - at_mix.frames < hostile_ - garbage) {
    const bool v6 = rng_->chance(0.3);
    const std::string ini = v6 ? rng_->pick(plan.v6_initiators) : rng_->pick(plan.v4_initiators);
    const std::string tgt = v6 ? rng_->pick(plan.v6_targets) : rng_->pick(plan.v4_targets);
    const Conversation c = conversation(ini, tgt, hostile_port());
    ++conversations;
    for (Frame &f : mutate(c)) {
      feed(f);
      ASSERT_FALSE(HasFatalFailure()) << "seed 0x" << std::hex << seed_;
      if (rng_->chance(0.3)) {
        Frame g = rng_->chance(0.3) ? random_frame() : garbage_frame();
        feed(g);
        ASSERT_FALSE(HasFatalFailure()) << "seed 0x" << std::hex << seed_;
      }
    }
  }
  const Counted after_mix = counted();
  const std::uint64_t mix_commands = after_mix.submitted - after_garbage.submitted;
  const std::uint64_t mix_completions = after_mix.completed - after_garbage.completed;
  const std::uint64_t bound_commands = tally_.bound.commands - at_mix.bound.commands;
  const std::uint64_t bound_completions = tally_.bound.completions - at_mix.bound.completions;
  std::printf("packet fuzz: %zu mutated conversations; commands counted %llu of at most %llu placed, "
              "completions %llu of at most %llu\n",
              conversations, static_cast<unsigned long long>(mix_commands),
              static_cast<unsigned long long>(bound_commands), static_cast<unsigned long long>(mix_completions),
              static_cast<unsigned long long>(bound_completions));
  EXPECT_LE(mix_commands, bound_commands) << "more commands counted than valid capsules were fed";
  EXPECT_LE(mix_completions, bound_completions) << "more completions counted than were fed";
  EXPECT_GT(mix_commands, 0u) << "the mutated conversations exercised no command tracking";

  // 4. The data path still counts clean conversations exactly after all that.
  Expected after;
  const Counted before_clean = counted();
  clean_conversations(12, after);
  ASSERT_FALSE(HasFatalFailure());
  expect_exact(after, before_clean, "clean conversations after the fuzz");

  // Health counters agree with what was fed.
  const nvqos_datapath_stats ds = dp_->datapath_stats();
  EXPECT_EQ(ds.packets_seen, tally_.tc_runs);
  EXPECT_LE(ds.parse_errors + ds.packets_nvme, ds.packets_seen);
  EXPECT_GT(ds.parse_errors, 0u) << "no malformed frame reached the parser";
  std::uint64_t dropped = 0, limited_drops = 0;
  for (std::uint32_t t = 0; t < kTenants; ++t) {
    const nvqos_tenant_stats ts = dp_->tenant_stats(t);
    if (t != kTenantQuarantined) EXPECT_EQ(ts.dropped_packets, 0u) << "tenant " << t;
    if (t != kTenantLimited) EXPECT_EQ(ts.ingress_limit_dropped_packets, 0u) << "tenant " << t;
    dropped += ts.dropped_packets;
    limited_drops += ts.ingress_limit_dropped_packets;
  }
  EXPECT_EQ(dropped + limited_drops + tally_.xdp_access_drops, tally_.xdp_drops)
      << "XDP drops not accounted to the quarantined tenant, the ingress ceiling or access control";
  const nvqos_access_stats locked = access_stats(kLockedId);
  const nvqos_access_stats unknown = access_stats(NVQOS_ACCESS_SUBSYS_UNKNOWN);
  std::printf("packet fuzz: access control: %llu allowed, %llu refused (+%llu before a checked Connect), %llu dry-run "
              "refusals; %llu XDP drops, %llu tc drops, %llu RSTs; QoS: %llu DSCP rewrites, %llu paced, %llu ingress "
              "ceiling drops\n",
              static_cast<unsigned long long>(locked.allowed), static_cast<unsigned long long>(locked.denied),
              static_cast<unsigned long long>(unknown.denied),
              static_cast<unsigned long long>(locked.dry_run_denied + unknown.dry_run_denied),
              static_cast<unsigned long long>(tally_.xdp_access_drops),
              static_cast<unsigned long long>(tally_.tc_access_drops), static_cast<unsigned long long>(tally_.resets),
              static_cast<unsigned long long>(tally_.dscp_rewrites), static_cast<unsigned long long>(tally_.paced),
              static_cast<unsigned long long>(limited_drops));
  const auto events = dp_->drain_slow_cmd_events();
  const nvqos_nvme_stats ns = dp_->nvme_stats();
  EXPECT_LE(ns.slow_cmd_events, after_mix.completed + (counted().completed - before_clean.completed));
  for (const auto &e : events) EXPECT_LT(e.tenant_id, kTenants);
  expect_bounded_state();

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("packet fuzz: %llu frames too short for a tc test run went through XDP only\n",
              static_cast<unsigned long long>(tally_.tc_refused));
  std::printf("packet fuzz: program runs: tc ingress %llu, tc egress %llu, XDP %llu\n",
              static_cast<unsigned long long>(tally_.tc_ingress_runs),
              static_cast<unsigned long long>(tally_.tc_egress_runs), static_cast<unsigned long long>(tally_.xdp_runs));
  std::printf("packet fuzz: %llu frames (%llu structured), %llu tc runs, %llu XDP runs (%llu dropped), "
              "%llu parse errors, %llu PDUs, %llu desyncs, %llu resyncs, %llu unmatched completions, "
              "%llu TLS flows, %.1f s\n",
              static_cast<unsigned long long>(tally_.frames), static_cast<unsigned long long>(tally_.structured),
              static_cast<unsigned long long>(tally_.tc_runs), static_cast<unsigned long long>(tally_.xdp_runs),
              static_cast<unsigned long long>(tally_.xdp_drops), static_cast<unsigned long long>(ds.parse_errors),
              static_cast<unsigned long long>(ns.pdus), static_cast<unsigned long long>(ns.desync),
              static_cast<unsigned long long>(ns.resync), static_cast<unsigned long long>(ns.unmatched_resp),
              static_cast<unsigned long long>(ns.tls_flows), seconds);
  for (const auto &[name, runs] : tally_.other_runs)
    std::printf("packet fuzz: program %s ran %llu times\n", name.c_str(), static_cast<unsigned long long>(runs));
  if (hostile_ >= kDefaultHostilePackets) {
    EXPECT_GE(tally_.xdp_runs, 100000u);
    EXPECT_GE(tally_.tc_ingress_runs, 100000u);
    EXPECT_GE(tally_.tc_egress_runs, 100000u);
    for (const auto &[name, runs] : tally_.other_runs) EXPECT_GE(runs, 100000u) << name;
    // Every enforcement path saw the hostile traffic.
    EXPECT_GT(locked.allowed, 0u);
    EXPECT_GT(locked.denied, 0u);
    EXPECT_GT(locked.dry_run_denied, 0u);
    EXPECT_GT(tally_.xdp_access_drops, 0u);
    EXPECT_GT(tally_.tc_access_drops, 0u);
    EXPECT_GT(tally_.resets, 0u);
    EXPECT_GT(tally_.dscp_rewrites, 0u);
    EXPECT_GT(tally_.paced, 0u);
    EXPECT_GT(limited_drops, 0u);
  }
}

}  // namespace
}  // namespace nvqos::testing
