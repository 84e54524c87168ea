// BPF program tests of QoS enforcement (bpf/lib/qos.h): skb->priority, DSCP
// marking and EDT pacing on tc egress, the ingress ceiling in XDP. The data
// path's clock is settings.fixed_now_ns, so every stamp is exact.
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "datapath_harness.hpp"
#include "nvqos/nvmf/nvme.h"
#include "nvqos/nvmf/pdu.h"
#include "packet_builder.hpp"

namespace nvqos::testing {
namespace {

namespace nvmf = nvqos::nvmf;

constexpr std::uint16_t kNvmePort = NVQOS_PORT_NVME_IO;
constexpr std::uint16_t kHostPort = 40000;
constexpr const char *kLocal = "10.0.0.1";
constexpr const char *kRemote = "10.0.0.2";
constexpr std::uint32_t kTenant = 1;
constexpr std::uint32_t kLimiter = 5;
constexpr std::uint64_t kT0 = 1000ull * 1000000000ull;  // 1000 s on the test clock
constexpr std::uint64_t kMs = 1000000;
constexpr std::uint32_t kClassInitiator = 0x10010;  // HTB 1:10
constexpr std::uint32_t kClassTarget = 0x10020;     // HTB 1:20

std::uint32_t lo() { return if_nametoindex("lo"); }

// Sets a valid IPv4 header checksum, as a real stack would have.
void ipv4_fix_checksum(Bytes &frame, std::size_t l3) {
  frame[l3 + 10] = frame[l3 + 11] = 0;
  const std::size_t ihl = (frame[l3] & 0x0f) * 4;
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < ihl; i += 2) sum += frame[l3 + i] << 8 | frame[l3 + i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  const std::uint16_t csum = ~sum & 0xffff;
  frame[l3 + 10] = csum >> 8;
  frame[l3 + 11] = csum & 0xff;
}

// A correct IPv4 header sums (one's complement) to 0xffff.
bool ipv4_checksum_ok(const Bytes &frame, std::size_t l3) {
  const std::size_t ihl = (frame[l3] & 0x0f) * 4;
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < ihl; i += 2) sum += frame[l3 + i] << 8 | frame[l3 + i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff;
}

// An egress packet of ours: as initiator (to the remote's NVMe/TCP port) or as target.
PacketBuilder egress_packet(std::uint8_t role, std::size_t payload, std::uint32_t seq = 1) {
  PacketBuilder pkt;
  if (role == NVQOS_ROLE_INITIATOR)
    pkt.ip(kLocal, kRemote).tcp(kHostPort, kNvmePort, kTcpAck | kTcpPsh, seq);
  else
    pkt.ip(kLocal, kRemote).tcp(kNvmePort, kHostPort, kTcpAck | kTcpPsh, seq);
  return std::move(pkt.payload(payload));
}

nvqos_limiter_config limiter(unsigned kind, std::uint64_t per_sec, std::uint64_t burst = 0) {
  nvqos_limiter_config c{};
  c.limit[kind].per_sec = per_sec;
  c.limit[kind].burst = burst;
  return c;
}

// Burst balance of one kind as abi.h tells user space to compute it.
std::uint64_t balance(const nvqos_limiter_state &st, const nvqos_limiter_config &c, unsigned kind,
                      std::uint64_t now) {
  const std::uint64_t next = st.next_ns[kind];
  if (next >= now) return 0;
  const std::uint64_t b = (now - next) * c.limit[kind].per_sec / 1000000000ull;
  return std::min<std::uint64_t>(b, c.limit[kind].burst);
}

class QosTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = bpf_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    dp_ = observe_only_datapath();
    dp_->add_rule(0, "0.0.0.0", 0, kTenant);  // every remote IPv4 address
    dp_->add_rule(0, "::", 0, kTenant);
    dp_->set_clock(kT0);
  }

  void set_tenant(std::uint32_t flags, std::uint32_t limiter_id = NVQOS_LIMITER_NONE,
                  std::uint8_t dscp = 0) {
    nvqos_tenant_config c{};
    c.flags = NVQOS_TENANT_F_ACTIVE | flags;
    c.limiter_id = limiter_id;
    c.classid[NVQOS_ROLE_INITIATOR] = kClassInitiator;
    c.classid[NVQOS_ROLE_TARGET] = kClassTarget;
    c.dscp = dscp;
    dp_->set_tenant_config(kTenant, c);
  }

  // Egress of one packet; the returned skb's tstamp is what sch_fq would see.
  RunResult send(std::uint8_t role, std::size_t payload, SkbContext ctx = {}) {
    ctx.ifindex = lo();
    return dp_->egress(egress_packet(role, payload).build(), ctx);
  }

  std::unique_ptr<Datapath> dp_;
};

TEST_F(QosTest, PriorityIsTheHtbClassOfTheRole) {
  set_tenant(NVQOS_TENANT_F_SET_PRIORITY);
  SkbContext ctx;
  ctx.priority = 3;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 100, ctx).priority, kClassInitiator);
  EXPECT_EQ(send(NVQOS_ROLE_TARGET, 100, ctx).priority, kClassTarget);
}

TEST_F(QosTest, TenantWithoutQosFlagsIsUntouched) {
  set_tenant(0, kLimiter, 46);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_EGRESS_BYTES, 1000));
  PacketBuilder b = egress_packet(NVQOS_ROLE_INITIATOR, 1000);
  Bytes frame = b.build();
  ipv4_fix_checksum(frame, b.l3_offset());
  SkbContext ctx{lo()};
  ctx.priority = 3;
  for (int i = 0; i < 3; ++i) {
    const RunResult r = dp_->egress(frame, ctx);
    EXPECT_EQ(r.priority, 3u);
    EXPECT_EQ(r.tstamp, 0u);
    EXPECT_EQ(r.data, frame);
  }
  const nvqos_limiter_state st = dp_->limiter_state(kLimiter);
  EXPECT_EQ(st.next_ns[NVQOS_LIMIT_EGRESS_BYTES], 0u);
  EXPECT_EQ(dp_->tenant_stats(kTenant).throttled_packets, 0u);
  EXPECT_EQ(dp_->tenant_stats(kTenant).packets[NVQOS_DIR_EGRESS], 3u);
}

TEST_F(QosTest, DscpOnIpv4KeepsEcnAndTheHeaderChecksumRight) {
  set_tenant(NVQOS_TENANT_F_MARK_DSCP, NVQOS_LIMITER_NONE, 46);
  PacketBuilder b = egress_packet(NVQOS_ROLE_INITIATOR, 200);
  b.ipv4_options(8);  // the checksum covers options too
  Bytes frame = b.build();
  const std::size_t l3 = b.l3_offset();
  frame[l3 + 1] = 0x02;  // DSCP 0, ECT(0)
  ipv4_fix_checksum(frame, l3);

  const RunResult r = dp_->egress(frame, {lo()});
  ASSERT_EQ(r.data.size(), frame.size());
  EXPECT_EQ(r.data[l3 + 1], 46 << 2 | 0x02);
  EXPECT_TRUE(ipv4_checksum_ok(r.data, l3));
  Bytes expect = frame;
  expect[l3 + 1] = 46 << 2 | 0x02;
  ipv4_fix_checksum(expect, l3);
  EXPECT_EQ(r.data, expect);  // nothing else changed

  // Congestion experienced set by a router-to-be: still kept, already-right DSCP left alone.
  Bytes marked = expect;
  marked[l3 + 1] = 46 << 2 | 0x03;
  ipv4_fix_checksum(marked, l3);
  EXPECT_EQ(dp_->egress(marked, {lo()}).data, marked);
}

TEST_F(QosTest, DscpOnIpv6KeepsEcnAndFlowLabel) {
  set_tenant(NVQOS_TENANT_F_MARK_DSCP, NVQOS_LIMITER_NONE, 10);
  PacketBuilder b;
  b.vlan(100).ip("fd00::1", "fd00::2").tcp(kHostPort, kNvmePort, kTcpAck | kTcpPsh, 1).payload(64);
  Bytes frame = b.build();
  const std::size_t l3 = b.l3_offset();
  // version 6 | traffic class 0x03 (DSCP 0, ECN CE) | flow label 0xabcde
  frame[l3] = 0x60;
  frame[l3 + 1] = 0x3a;
  frame[l3 + 2] = 0xbc;
  frame[l3 + 3] = 0xde;

  // DSCP 10 with ECN 3 is traffic class 0x2b.
  Bytes expect = frame;
  expect[l3] = 0x62;
  expect[l3 + 1] = 0xba;
  EXPECT_EQ(dp_->egress(frame, {lo()}).data, expect);
  EXPECT_EQ(dp_->egress(expect, {lo()}).data, expect);
}

TEST_F(QosTest, EdtSpacesPacketsAtTheByteRate) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_EGRESS_BYTES, 1000000));  // 1 MB/s
  // 1000 bytes of payload + 40 of headers: 1.04 ms each at 1 MB/s.
  const std::uint64_t t = 1040000;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u);  // the first leaves now: no stamp
  for (std::uint64_t k = 1; k <= 4; ++k)
    EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + k * t) << "packet " << k;
  const nvqos_tenant_stats ts = dp_->tenant_stats(kTenant);
  EXPECT_EQ(ts.throttled_packets, 4u);
  EXPECT_EQ(ts.throttle_delay_ns, (1 + 2 + 3 + 4) * t);
  EXPECT_EQ(ts.throttle_capped, 0u);

  // Time passes: at the departure of the last packet, the next one is one slot later.
  dp_->set_clock(kT0 + 4 * t);
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + 5 * t);
  // A stamp already later (TCP's own pacing) is kept and not counted.
  SkbContext late;
  late.tstamp = kT0 + 1000 * kMs;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000, late).tstamp, late.tstamp);
  EXPECT_EQ(dp_->tenant_stats(kTenant).throttled_packets, 5u);
}

TEST_F(QosTest, EdtCountsEverySegmentOfAGsoPacket) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_EGRESS_BYTES, 1000000));
  // 3 segments of 1000 payload bytes, each with its 40 bytes of headers: 3120
  // wire bytes, 3.12 ms.
  SkbContext gso;
  gso.gso_segs = 3;
  gso.gso_size = 1000;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 3000, gso).tstamp, 0u);
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 3000, gso).tstamp, kT0 + 3120000);
  EXPECT_EQ(dp_->tenant_stats(kTenant).throttled_packets, 3u);
}

TEST_F(QosTest, ReadAndWriteLimitsFollowTheRole) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  nvqos_limiter_config c{};
  c.limit[NVQOS_LIMIT_READ_BYTES].per_sec = 1000000;   // target egress: 1.04 ms per packet
  c.limit[NVQOS_LIMIT_WRITE_BYTES].per_sec = 100000;   // initiator egress: 10.4 ms per packet
  dp_->set_limiter(kLimiter, c);
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u);
  EXPECT_EQ(send(NVQOS_ROLE_TARGET, 1000).tstamp, 0u);  // the write debt does not hold reads
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + 10400000);
  EXPECT_EQ(send(NVQOS_ROLE_TARGET, 1000).tstamp, kT0 + 1040000);
  EXPECT_EQ(send(NVQOS_ROLE_TARGET, 1000).tstamp, kT0 + 2080000);
  const nvqos_limiter_state st = dp_->limiter_state(kLimiter);
  EXPECT_EQ(st.next_ns[NVQOS_LIMIT_WRITE_BYTES], kT0 + 2 * 10400000);
  EXPECT_EQ(st.next_ns[NVQOS_LIMIT_READ_BYTES], kT0 + 3 * 1040000);
}

TEST_F(QosTest, BurstCreditAfterIdle) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  // Burst of 3 packets' bytes: after idle, 4 packets leave at once (the one a
  // limiter may always send, plus the burst), then the rate.
  const nvqos_limiter_config c = limiter(NVQOS_LIMIT_EGRESS_BYTES, 1000000, 3 * 1040);
  const std::uint64_t t = 1040000;
  dp_->set_limiter(kLimiter, c);
  EXPECT_EQ(balance(dp_->limiter_state(kLimiter), c, NVQOS_LIMIT_EGRESS_BYTES, kT0), 3 * 1040u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u) << i;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + t);
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + 2 * t);
  EXPECT_EQ(balance(dp_->limiter_state(kLimiter), c, NVQOS_LIMIT_EGRESS_BYTES, kT0), 0u);

  // The limiter's clock is at 3 slots; at 5 slots two packets' credit is back,
  // and three leave at once (the credit plus the one that may always leave).
  EXPECT_EQ(balance(dp_->limiter_state(kLimiter), c, NVQOS_LIMIT_EGRESS_BYTES, kT0 + 9 * t),
            3 * 1040u);  // never more than the burst
  dp_->set_clock(kT0 + 5 * t);
  EXPECT_EQ(balance(dp_->limiter_state(kLimiter), c, NVQOS_LIMIT_EGRESS_BYTES, kT0 + 5 * t),
            2 * 1040u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u) << i;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + 6 * t);

  // A long idle gives no more than the burst.
  dp_->set_clock(kT0 + 3600 * 1000 * kMs);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u) << i;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + 3600 * 1000 * kMs + t);
}

TEST_F(QosTest, DelayIsCappedAtTheHorizon) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_EGRESS_BYTES, 1000));  // 1.04 s per packet
  const std::uint64_t t = 1040ull * kMs;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u);
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + t);
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + NVQOS_EDT_HORIZON_NS);
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, kT0 + NVQOS_EDT_HORIZON_NS);
  const nvqos_tenant_stats ts = dp_->tenant_stats(kTenant);
  EXPECT_EQ(ts.throttled_packets, 3u);
  EXPECT_EQ(ts.throttle_capped, 2u);
  // The debt stops at the horizon plus one packet.
  EXPECT_EQ(dp_->limiter_state(kLimiter).next_ns[NVQOS_LIMIT_EGRESS_BYTES],
            kT0 + NVQOS_EDT_HORIZON_NS + t);
}

TEST_F(QosTest, WithoutTheTestClockEdtUsesTheMonotonicClock) {
  dp_->set_clock(0);
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_EGRESS_BYTES, 1000));  // 1.04 s per packet
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const std::uint64_t before = ts.tv_sec * 1000000000ull + ts.tv_nsec;
  EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u);
  const std::uint64_t stamp = send(NVQOS_ROLE_INITIATOR, 1000).tstamp;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const std::uint64_t after = ts.tv_sec * 1000000000ull + ts.tv_nsec;
  EXPECT_GE(stamp, before + 1040ull * kMs);
  EXPECT_LE(stamp, after + 1040ull * kMs);
}

TEST_F(QosTest, TenantWithoutLimiterIsNotStamped) {
  set_tenant(NVQOS_TENANT_F_EDT, NVQOS_LIMITER_NONE);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u);
  // A limiter without egress rates does not stamp either.
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_INGRESS_BYTES, 1000));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(send(NVQOS_ROLE_INITIATOR, 1000).tstamp, 0u);
  EXPECT_EQ(dp_->tenant_stats(kTenant).throttled_packets, 0u);
}

// NVMe/TCP byte streams of one connection through tc, as TCP would send them.
class Stream {
 public:
  Stream(Datapath &dp, std::uint8_t role) : dp_(dp), role_(role) {}

  RunResult handshake() {
    send(true, h2c_ - 1, {}, kTcpSyn);
    return send(false, c2h_ - 1, {}, kTcpSyn | kTcpAck);
  }
  RunResult h2c(const Bytes &bytes, SkbContext ctx = {}) {
    const RunResult r = send(true, h2c_, bytes, kTcpAck | kTcpPsh, ctx);
    h2c_ += bytes.size();
    return r;
  }
  RunResult c2h(const Bytes &bytes, SkbContext ctx = {}) {
    const RunResult r = send(false, c2h_, bytes, kTcpAck | kTcpPsh, ctx);
    c2h_ += bytes.size();
    return r;
  }

 private:
  RunResult send(bool to_target, std::uint32_t seq, const Bytes &bytes, std::uint8_t flags,
                 SkbContext ctx = {}) {
    const bool egress = to_target == (role_ == NVQOS_ROLE_INITIATOR);
    PacketBuilder pkt;
    const char *host = role_ == NVQOS_ROLE_INITIATOR ? kLocal : kRemote;
    const char *target = role_ == NVQOS_ROLE_INITIATOR ? kRemote : kLocal;
    if (to_target)
      pkt.ip(host, target).tcp(kHostPort, kNvmePort, flags, seq);
    else
      pkt.ip(target, host).tcp(kNvmePort, kHostPort, flags, seq);
    pkt.payload(bytes);
    ctx.ifindex = lo();
    return egress ? dp_.egress(pkt.build(), ctx) : dp_.ingress(pkt.build(), ctx);
  }

  Datapath &dp_;
  std::uint8_t role_;
  std::uint32_t h2c_ = 1000;
  std::uint32_t c2h_ = 5000;
};

Bytes capsules(std::initializer_list<nvmf::Sqe> sqes) {
  Bytes out;
  for (const nvmf::Sqe &sqe : sqes) {
    const Bytes pdu = nvmf::encode_pdu(nvmf::CapsuleCmd{sqe, {}});
    out.insert(out.end(), pdu.begin(), pdu.end());
  }
  return out;
}

Bytes responses(std::initializer_list<std::uint16_t> cids) {
  Bytes out;
  for (std::uint16_t cid : cids) {
    nvmf::Cqe cqe;
    cqe.cid = cid;
    const Bytes pdu = nvmf::encode_pdu(nvmf::CapsuleResp{cqe});
    out.insert(out.end(), pdu.begin(), pdu.end());
  }
  return out;
}

nvmf::Sqe rd(std::uint16_t cid) { return nvmf::make_read(cid, 1, 0, 8, 4096); }
nvmf::Sqe wr(std::uint16_t cid) { return nvmf::make_write(cid, 1, 0, 8, 4096, false); }

TEST_F(QosTest, IopsPacesCommandCapsulesOfATsoPacket) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_IOPS, 1000));  // 1 ms per command
  Stream s(*dp_, NVQOS_ROLE_INITIATOR);
  s.handshake();
  s.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  s.c2h(nvmf::encode_pdu(nvmf::IcResp{}));
  SkbContext tso;
  tso.gso_size = 200;
  tso.gso_segs = 2;
  // Four capsules in one super-packet leave now and use 4 ms of the limiter.
  EXPECT_EQ(s.h2c(capsules({rd(1), wr(2), rd(3), wr(4)}), tso).tstamp, 0u);
  EXPECT_EQ(dp_->limiter_state(kLimiter).next_ns[NVQOS_LIMIT_IOPS], kT0 + 4 * kMs);
  EXPECT_EQ(s.h2c(capsules({rd(5)})).tstamp, kT0 + 4 * kMs);
  EXPECT_EQ(s.h2c(capsules({rd(6), rd(7)})).tstamp, kT0 + 5 * kMs);
  // A packet without a capsule (a pure ACK) does not overtake the capsule before it.
  EXPECT_EQ(s.h2c({}).tstamp, kT0 + 5 * kMs);
  EXPECT_EQ(dp_->limiter_state(kLimiter).next_ns[NVQOS_LIMIT_IOPS], kT0 + 7 * kMs);
  EXPECT_EQ(dp_->nvme_stats().desync, 0u);
  // Completions arriving are not charged.
  s.c2h(responses({1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(dp_->limiter_state(kLimiter).next_ns[NVQOS_LIMIT_IOPS], kT0 + 7 * kMs);
}

TEST_F(QosTest, ReadAndWriteIopsCountTheirOwnOps) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  nvqos_limiter_config c{};
  c.limit[NVQOS_LIMIT_READ_IOPS].per_sec = 1000;  // 1 ms
  c.limit[NVQOS_LIMIT_WRITE_IOPS].per_sec = 100;  // 10 ms
  dp_->set_limiter(kLimiter, c);
  Stream s(*dp_, NVQOS_ROLE_INITIATOR);
  s.handshake();
  EXPECT_EQ(s.h2c(capsules({rd(1), rd(2), wr(3)})).tstamp, 0u);
  const nvqos_limiter_state st = dp_->limiter_state(kLimiter);
  EXPECT_EQ(st.next_ns[NVQOS_LIMIT_READ_IOPS], kT0 + 2 * kMs);
  EXPECT_EQ(st.next_ns[NVQOS_LIMIT_WRITE_IOPS], kT0 + 10 * kMs);
  EXPECT_EQ(s.h2c(capsules({rd(4)})).tstamp, kT0 + 2 * kMs);
  EXPECT_EQ(s.h2c(capsules({wr(5)})).tstamp, kT0 + 10 * kMs);
}

TEST_F(QosTest, TargetPacesCompletionsByTheirCommandsOp) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_READ_IOPS, 1000));
  Stream s(*dp_, NVQOS_ROLE_TARGET);
  s.handshake();
  s.h2c(capsules({rd(1), rd(2), wr(3), rd(4)}));  // arriving: not charged
  constexpr unsigned kReadIops = NVQOS_LIMIT_READ_IOPS - NVQOS_LIMIT_IOPS;
  EXPECT_EQ(dp_->limiter_state(kLimiter).target_iops_next_ns[kReadIops], 0u);
  EXPECT_EQ(s.c2h(responses({1, 3, 2})).tstamp, 0u);  // two reads, one write
  EXPECT_EQ(dp_->limiter_state(kLimiter).target_iops_next_ns[kReadIops], kT0 + 2 * kMs);
  EXPECT_EQ(dp_->limiter_state(kLimiter).next_ns[NVQOS_LIMIT_READ_IOPS], 0u);  // the initiator's clock
  EXPECT_EQ(s.c2h(responses({4})).tstamp, kT0 + 2 * kMs);
}

// Found in the lab (lo: the host is initiator and target of one tenant): each command was charged
// as its capsule left and again as its completion left, so the tenant got half its IOPS ceiling.
TEST_F(QosTest, IopsClocksArePerRole) {
  set_tenant(NVQOS_TENANT_F_EDT, kLimiter);
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_READ_IOPS, 1000));  // 1 ms a read
  Stream initiator(*dp_, NVQOS_ROLE_INITIATOR), target(*dp_, NVQOS_ROLE_TARGET);
  initiator.handshake();
  target.handshake();
  EXPECT_EQ(initiator.h2c(capsules({rd(1), rd(2)})).tstamp, 0u);
  target.h2c(capsules({rd(1), rd(2)}));
  // The same commands completing at this host's target: charged to the target's clock, not delayed
  // behind the capsules' charge.
  EXPECT_EQ(target.c2h(responses({1, 2})).tstamp, 0u);
  const nvqos_limiter_state st = dp_->limiter_state(kLimiter);
  EXPECT_EQ(st.next_ns[NVQOS_LIMIT_READ_IOPS], kT0 + 2 * kMs);
  EXPECT_EQ(st.target_iops_next_ns[NVQOS_LIMIT_READ_IOPS - NVQOS_LIMIT_IOPS], kT0 + 2 * kMs);
  // Each role is still paced at the ceiling.
  EXPECT_EQ(initiator.h2c(capsules({rd(3)})).tstamp, kT0 + 2 * kMs);
  target.h2c(capsules({rd(3)}));
  EXPECT_EQ(target.c2h(responses({3})).tstamp, kT0 + 2 * kMs);
}

TEST_F(QosTest, XdpIngressCeilingDropsAboveTheBucketAndRefills) {
  nvqos_tenant_config tc{};
  tc.flags = NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_INGRESS_LIMIT;
  tc.limiter_id = kLimiter;
  dp_->set_tenant_config(kTenant, tc);
  // 1000 IP bytes per packet at 1 MB/s: 1 ms each; a burst of 3 packets.
  dp_->set_limiter(kLimiter, limiter(NVQOS_LIMIT_INGRESS_BYTES, 1000000, 3000));
  PacketBuilder b;
  b.ip(kRemote, kLocal).tcp(kNvmePort, kHostPort, kTcpAck | kTcpPsh, 1).payload(960);
  const Bytes frame = b.build();
  auto verdicts = [&](int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += dp_->xdp(frame).retval == XDP_PASS ? 'P' : 'D';
    return out;
  };
  EXPECT_EQ(verdicts(5), "PPPDD");
  dp_->set_clock(kT0 + kMs);  // one packet's worth refilled
  EXPECT_EQ(verdicts(2), "PD");
  dp_->set_clock(kT0 + 2 * kMs + kMs / 2);  // one and a half: one passes, half stays
  EXPECT_EQ(verdicts(2), "PD");
  dp_->set_clock(kT0 + 3 * kMs);
  EXPECT_EQ(verdicts(2), "PD");
  dp_->set_clock(kT0 + 10000 * kMs);  // long idle: the burst, no more
  EXPECT_EQ(verdicts(4), "PPPD");
  const nvqos_tenant_stats ts = dp_->tenant_stats(kTenant);
  EXPECT_EQ(ts.ingress_limit_dropped_packets, 6u);
  EXPECT_EQ(ts.ingress_limit_dropped_bytes, 6000u);
  EXPECT_EQ(ts.dropped_packets, 0u);  // quarantine drops are another counter
}

TEST_F(QosTest, XdpPacketRateAndByteRateBothApply) {
  nvqos_tenant_config tc{};
  tc.flags = NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_INGRESS_LIMIT;
  tc.limiter_id = kLimiter;
  dp_->set_tenant_config(kTenant, tc);
  nvqos_limiter_config c{};
  c.limit[NVQOS_LIMIT_INGRESS_PACKETS] = {1000, 2};      // 1 ms per packet, burst 2
  c.limit[NVQOS_LIMIT_INGRESS_BYTES] = {1000000, 10000};  // ample
  dp_->set_limiter(kLimiter, c);
  PacketBuilder b;
  b.ip(kRemote, kLocal).tcp(kNvmePort, kHostPort, kTcpAck | kTcpPsh, 1).payload(960);
  const Bytes frame = b.build();
  EXPECT_EQ(dp_->xdp(frame).retval, XDP_PASS);
  EXPECT_EQ(dp_->xdp(frame).retval, XDP_PASS);
  EXPECT_EQ(dp_->xdp(frame).retval, XDP_DROP);
  // The packet dropped by the packet rate charged no bytes.
  EXPECT_EQ(dp_->limiter_state(kLimiter).next_ns[NVQOS_LIMIT_INGRESS_BYTES], kT0 - 8 * kMs);
  // Other tenants' and non-limited traffic passes untouched.
  nvqos_tenant_config plain{};
  plain.flags = NVQOS_TENANT_F_ACTIVE;
  plain.limiter_id = kLimiter;
  dp_->set_tenant_config(kTenant, plain);
  EXPECT_EQ(dp_->xdp(frame).retval, XDP_PASS);
  EXPECT_EQ(dp_->tenant_stats(kTenant).ingress_limit_dropped_packets, 1u);

  // Quarantine comes first and keeps its own counters.
  plain.flags = NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_INGRESS_LIMIT | NVQOS_TENANT_F_DROP_INGRESS;
  dp_->set_tenant_config(kTenant, plain);
  EXPECT_EQ(dp_->xdp(frame).retval, XDP_DROP);
  EXPECT_EQ(dp_->tenant_stats(kTenant).dropped_packets, 1u);
  EXPECT_EQ(dp_->tenant_stats(kTenant).ingress_limit_dropped_packets, 1u);
}

}  // namespace
}  // namespace nvqos::testing
