// BPF program tests of the Fabrics Connect inspection (bpf/lib/connect.h):
// Connect capsules built with the tools/nvmf codec run through the real tc
// programs in both roles; the NQN tenant maps, the access maps and the
// connect_events ring buffer are checked.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <net/if.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
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
constexpr const char *kTarget = "10.0.0.2";
constexpr const char *kSubA = "nqn.2024-01.io.example:vol-a";
constexpr const char *kSubB = "nqn.2024-01.io.example:vol-b";
constexpr const char *kHost1 = "nqn.2014-08.org.nvmexpress:uuid:11111111-1111-1111-1111-111111111111";
constexpr const char *kHost2 = "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-2222-2222-222222222222";
constexpr int kTcOk = 0;
constexpr int kTcShot = 2;

Bytes connect_capsule(const std::string &subnqn, const std::string &hostnqn, std::uint16_t qid = 0,
                      std::uint16_t cntlid = 0xffff) {
  nvmf::ConnectCommand cmd;
  cmd.qid = qid;
  cmd.sqsize = 31;
  nvmf::ConnectData data;
  data.cntlid = cntlid;
  data.subnqn = subnqn;
  data.hostnqn = hostnqn;
  std::array<std::uint8_t, nvmf::kConnectDataSize> raw{};
  data.encode(raw);
  return nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_connect(1, cmd), raw});
}

Bytes read_cmd(std::uint16_t cid) {
  return nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_read(cid, 1, 0, 7, 4096), {}});
}

nvqos_nqn nqn(const std::string &name) {
  nvqos_nqn n{};
  std::memcpy(n.name, name.data(), std::min<std::size_t>(name.size(), NVQOS_NQN_LEN - 1));
  return n;
}

std::string nqn_text(const nvqos_nqn &n) {
  return std::string(reinterpret_cast<const char *>(n.name),
                     strnlen(reinterpret_cast<const char *>(n.name), NVQOS_NQN_LEN));
}

// One TCP connection host -> target seen from our role; returns tc verdicts.
class Conn {
 public:
  Conn(Datapath &dp, std::uint8_t role, const char *host = "10.0.0.1", std::uint16_t host_port = 40000)
      : dp_(dp), role_(role), host_(host), host_port_(host_port) {}

  int syn() {
    int r = send(true, h2c_seq_ - 1, {}, kTcpSyn);
    send(false, c2h_seq_ - 1, {}, kTcpSyn | kTcpAck);
    return r;
  }
  int h2c(const Bytes &b) {
    int r = send(true, h2c_seq_, b, kTcpAck | kTcpPsh);
    h2c_seq_ += b.size();
    return r;
  }
  int h2c_at(std::uint32_t seq, const Bytes &b) { return send(true, seq, b, kTcpAck | kTcpPsh); }
  int c2h(const Bytes &b) {
    int r = send(false, c2h_seq_, b, kTcpAck | kTcpPsh);
    c2h_seq_ += b.size();
    return r;
  }
  // Segments of at most mss bytes; the verdict of the worst one.
  int h2c_segmented(const Bytes &b, std::size_t mss) {
    int worst = kTcOk;
    for (std::size_t off = 0; off < b.size(); off += mss)
      worst = std::max(worst, h2c(Bytes(b.begin() + off, b.begin() + std::min(b.size(), off + mss))));
    return worst;
  }
  std::uint32_t h2c_seq() const { return h2c_seq_; }
  nvqos_flow_key key() const {
    return role_ == NVQOS_ROLE_TARGET ? make_flow_key(kTarget, kNvmePort, host_, host_port_, ifindex())
                                      : make_flow_key(host_, host_port_, kTarget, kNvmePort, ifindex());
  }
  static std::uint32_t ifindex() { return if_nametoindex("lo"); }

 private:
  int send(bool to_target, std::uint32_t seq, const Bytes &bytes, std::uint8_t flags) {
    PacketBuilder pkt;
    if (to_target)
      pkt.ip(host_, kTarget).tcp(host_port_, kNvmePort, flags, seq);
    else
      pkt.ip(kTarget, host_).tcp(kNvmePort, host_port_, flags, seq);
    pkt.payload(bytes);
    const SkbContext ctx{ifindex(), 0, 0};
    const bool egress = (role_ == NVQOS_ROLE_INITIATOR) == to_target;
    return static_cast<int>(egress ? dp_.egress(pkt.build(), ctx).retval : dp_.ingress(pkt.build(), ctx).retval);
  }

  Datapath &dp_;
  std::uint8_t role_;
  const char *host_;
  std::uint16_t host_port_;
  std::uint32_t h2c_seq_ = 0xffffff00u;  // crosses the wrap
  std::uint32_t c2h_seq_ = 1000;
};

class ConnectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = bpf_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    dp_ = observe_only_datapath();
    dp_->set_tenant_flags(0, NVQOS_TENANT_F_ACTIVE);
  }

  nvqos_datapath &skel() { return dp_->skel(); }

  void put_tenant(bpf_map *map, const void *key, std::size_t key_size, std::uint32_t tenant) {
    nvqos_nqn_tenant v{tenant};
    ASSERT_EQ(bpf_map__update_elem(map, key, key_size, &v, sizeof v, BPF_ANY), 0);
  }

  // Protects subNQN on kNvmePort; hosts/cidrs empty = not checked.
  void protect(const std::string &sub, std::uint32_t id, bool enforce, const std::vector<std::string> &hosts,
               const std::vector<std::pair<std::string, unsigned>> &cidrs = {}) {
    nvqos_access_subsys_key k{};
    k.sub = nqn(sub);
    k.port = kNvmePort;
    nvqos_access_subsys v{id, (enforce ? NVQOS_ACCESS_F_ENFORCE : 0u) |
                                  (hosts.empty() ? 0u : NVQOS_ACCESS_F_HOSTS) |
                                  (cidrs.empty() ? 0u : NVQOS_ACCESS_F_CIDRS)};
    ASSERT_EQ(bpf_map__update_elem(skel().maps.access_subsystems, &k, sizeof k, &v, sizeof v, BPF_ANY), 0);
    for (const auto &h : hosts) {
      nvqos_access_host_key hk{};
      hk.subsys_id = id;
      hk.host = nqn(h);
      __u32 one = 1;
      ASSERT_EQ(bpf_map__update_elem(skel().maps.access_hosts, &hk, sizeof hk, &one, sizeof one, BPF_ANY), 0);
    }
    for (const auto &[addr, len] : cidrs) {
      nvqos_access_cidr_key ck{};
      ck.prefixlen = NVQOS_ACCESS_CIDR_ID_BITS + 96 + len;
      ck.subsys_id = htonl(id);
      const Addr16 a = parse_addr(addr);
      std::memcpy(ck.addr, a.data(), 16);
      __u32 one = 1;
      ASSERT_EQ(bpf_map__update_elem(skel().maps.access_cidrs, &ck, sizeof ck, &one, sizeof one, BPF_ANY), 0);
    }
    __u16 port = kNvmePort;
    nvqos_access_port ap{};
    nvqos_access_port old{};
    if (bpf_map__lookup_elem(skel().maps.access_ports, &port, sizeof port, &old, sizeof old, 0) == 0) ap = old;
    ap.flags |= enforce ? NVQOS_ACCESS_F_ENFORCE : 0u;
    ASSERT_EQ(bpf_map__update_elem(skel().maps.access_ports, &port, sizeof port, &ap, sizeof ap, BPF_ANY), 0);
    dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_ACCESS);
  }

  std::vector<nvqos_connect_event> drain_events() {
    std::vector<nvqos_connect_event> events;
    auto on_event = [](void *ctx, void *data, std::size_t size) -> int {
      if (size >= sizeof(nvqos_connect_event)) {
        nvqos_connect_event e;
        std::memcpy(&e, data, sizeof e);
        static_cast<std::vector<nvqos_connect_event> *>(ctx)->push_back(e);
      }
      return 0;
    };
    std::unique_ptr<ring_buffer, decltype(&ring_buffer__free)> rb(
        ring_buffer__new(bpf_map__fd(skel().maps.connect_events), on_event, &events, nullptr), &ring_buffer__free);
    EXPECT_TRUE(rb);
    if (rb) ring_buffer__consume(rb.get());
    return events;
  }

  template <typename T>
  T percpu_sum(bpf_map *map, __u32 key) {
    const int cpus = libbpf_num_possible_cpus();
    const std::size_t stride = (sizeof(T) + 7) & ~std::size_t{7};
    std::vector<std::uint8_t> raw(stride * cpus);
    T total{};
    if (bpf_map__lookup_elem(map, &key, sizeof key, raw.data(), raw.size(), 0)) return total;
    auto *out = reinterpret_cast<std::uint64_t *>(&total);
    for (int c = 0; c < cpus; ++c) {
      const auto *in = reinterpret_cast<const std::uint64_t *>(raw.data() + c * stride);
      for (std::size_t i = 0; i < sizeof(T) / 8; ++i) out[i] += in[i];
    }
    return total;
  }
  nvqos_connect_stats connect_stats() { return percpu_sum<nvqos_connect_stats>(skel().maps.connect_stats, 0); }
  nvqos_access_stats access_stats(__u32 id) { return percpu_sum<nvqos_access_stats>(skel().maps.access_stats, id); }
  std::uint64_t admin_submitted(std::uint32_t tenant, std::uint8_t role) {
    nvqos_cmd_key k{};
    k.tenant_id = tenant;
    k.op = NVQOS_CMD_OP_ADMIN;
    k.role = role;
    return dp_->cmd_stats(k).submitted;
  }

  std::unique_ptr<Datapath> dp_;
};

TEST_F(ConnectTest, InitiatorReportsNqnsAndMovesTheFlowToTheSubsystemTenant) {
  const nvqos_nqn sub = nqn(kSubA);
  put_tenant(skel().maps.sub_nqn_tenants, &sub, sizeof sub, 5);
  dp_->set_tenant_flags(5, NVQOS_TENANT_F_ACTIVE);
  Conn c(*dp_, NVQOS_ROLE_INITIATOR);
  c.syn();
  c.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  c.c2h(nvmf::encode_pdu(nvmf::IcResp{}));
  ASSERT_EQ(dp_->flow(c.key())->tenant_id, 0u) << "address tenant before the Connect";
  c.h2c(connect_capsule(kSubA, kHost1, 0, 0xffff));

  EXPECT_EQ(dp_->flow(c.key())->tenant_id, 5u);
  EXPECT_EQ(admin_submitted(5, NVQOS_ROLE_INITIATOR), 1u) << "the Connect itself counts for the NQN tenant";
  EXPECT_EQ(admin_submitted(0, NVQOS_ROLE_INITIATOR), 0u);
  EXPECT_EQ(dp_->tenant_stats(5).flows_opened, 1u);
  EXPECT_EQ(dp_->tenant_stats(0).flows_opened, 0u) << "the open flow moved with it";
  c.h2c(read_cmd(9));
  nvqos_cmd_key rk{5, NVQOS_CMD_OP_ADMIN, NVQOS_ROLE_INITIATOR, 0};
  EXPECT_EQ(dp_->cmd_stats(rk).submitted, 2u) << "later PDUs follow the flow's tenant (admin queue: QID 0)";

  const auto events = drain_events();
  ASSERT_EQ(events.size(), 1u);
  const nvqos_connect_event &e = events[0];
  EXPECT_EQ(nqn_text(e.subnqn), kSubA);
  EXPECT_EQ(nqn_text(e.hostnqn), kHost1);
  EXPECT_EQ(e.qid, 0u);
  EXPECT_EQ(e.cntlid, 0xffffu);
  EXPECT_EQ(e.role, NVQOS_ROLE_INITIATOR);
  EXPECT_EQ(e.tenant_id, 5u);
  EXPECT_EQ(e.verdict, NVQOS_ACCESS_NOT_CHECKED);
  EXPECT_EQ(e.flags, NVQOS_CONNECT_F_TENANT_SET);
  EXPECT_EQ(e.port, kNvmePort);
  const nvqos_flow_key want = c.key();
  EXPECT_EQ(std::memcmp(&e.flow, &want, sizeof e.flow), 0);
  EXPECT_EQ(connect_stats().connects, 1u);
  EXPECT_EQ(connect_stats().tenant_set, 1u);
}

TEST_F(ConnectTest, AReusedTupleWithoutAnNqnRuleGoesBackToTheAddressTenant) {
  const nvqos_nqn sub = nqn(kSubA);
  put_tenant(skel().maps.sub_nqn_tenants, &sub, sizeof sub, 5);
  Conn c(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 47000);
  c.syn();
  c.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  c.h2c(connect_capsule(kSubA, kHost1));
  ASSERT_EQ(dp_->flow(c.key())->tenant_id, 5u);
  Conn again(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 47000);  // same 5-tuple, a new connection
  again.syn();
  again.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  again.h2c(connect_capsule(kSubB, kHost1));
  EXPECT_EQ(dp_->flow(c.key())->tenant_id, 0u) << "vol-b has no NQN rule: the address tenant";
}

TEST_F(ConnectTest, TargetIoQueueConnectWithoutNqnRulesKeepsTheAddressTenant) {
  Conn c(*dp_, NVQOS_ROLE_TARGET);
  c.syn();
  c.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  c.c2h(nvmf::encode_pdu(nvmf::IcResp{}));
  EXPECT_EQ(c.h2c(connect_capsule(kSubB, kHost2, 3, 7)), kTcOk);
  EXPECT_EQ(dp_->flow(c.key())->tenant_id, 0u);
  const auto events = drain_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].qid, 3u);
  EXPECT_EQ(events[0].cntlid, 7u);
  EXPECT_EQ(events[0].role, NVQOS_ROLE_TARGET);
  EXPECT_EQ(events[0].flags, 0u);
  EXPECT_EQ(nqn_text(events[0].hostnqn), kHost2);
  EXPECT_EQ(admin_submitted(0, NVQOS_ROLE_TARGET), 1u) << "the Connect is a Fabrics command";
}

TEST_F(ConnectTest, PairCacheIsDecisiveEvenWhenItSaysNoRule) {
  const nvqos_nqn sub = nqn(kSubA);
  put_tenant(skel().maps.sub_nqn_tenants, &sub, sizeof sub, 5);
  nvqos_nqn_pair pair{nqn(kHost1), nqn(kSubA)};
  put_tenant(skel().maps.nqn_pair_tenants, &pair, sizeof pair, NVQOS_TENANT_NONE);
  nvqos_nqn_pair pair2{nqn(kHost2), nqn(kSubA)};
  put_tenant(skel().maps.nqn_pair_tenants, &pair2, sizeof pair2, 9);

  Conn a(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 40001);
  a.syn();
  a.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  a.h2c(connect_capsule(kSubA, kHost1));
  EXPECT_EQ(dp_->flow(a.key())->tenant_id, 0u);
  Conn b(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 40002);
  b.syn();
  b.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  b.h2c(connect_capsule(kSubA, kHost2));
  EXPECT_EQ(dp_->flow(b.key())->tenant_id, 9u);
  Conn c(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 40003);
  c.syn();
  c.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  c.h2c(connect_capsule(kSubA, "nqn.2014-08.org.example:other-host"));
  EXPECT_EQ(dp_->flow(c.key())->tenant_id, 5u) << "no pair cached: the exact subsystem rule";
}

TEST_F(ConnectTest, BytesAfterTheNulDoNotChangeTheKey) {
  const nvqos_nqn host = nqn(kHost1);
  put_tenant(skel().maps.host_nqn_tenants, &host, sizeof host, 4);
  Bytes capsule = connect_capsule(kSubA, kHost1);
  // HOSTNQN field: data at PDO 72, NQN at 512; garbage after its NUL.
  const std::size_t host_off = 72 + 512 + std::strlen(kHost1) + 1;
  for (std::size_t i = host_off; i < 72 + 768; ++i) capsule[i] = 0xee;
  Conn c(*dp_, NVQOS_ROLE_TARGET);
  c.syn();
  c.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  c.h2c(capsule);
  EXPECT_EQ(dp_->flow(c.key())->tenant_id, 4u);
  const auto events = drain_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(nqn_text(events[0].hostnqn), kHost1);
  EXPECT_EQ(events[0].hostnqn.name[NVQOS_NQN_LEN - 1], 0);
  EXPECT_EQ(events[0].hostnqn.name[std::strlen(kHost1) + 5], 0);
}

TEST_F(ConnectTest, ConnectSplitAcrossSegmentsIsCountedNotGuessed) {
  const nvqos_nqn sub = nqn(kSubA);
  put_tenant(skel().maps.sub_nqn_tenants, &sub, sizeof sub, 5);
  for (std::uint8_t role : {NVQOS_ROLE_INITIATOR, NVQOS_ROLE_TARGET}) {
    Conn c(*dp_, role, "10.0.0.1", role == NVQOS_ROLE_INITIATOR ? 41000 : 41001);
    c.syn();
    c.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
    EXPECT_EQ(c.h2c_segmented(connect_capsule(kSubA, kHost1), 536), kTcOk);
    EXPECT_EQ(dp_->flow(c.key())->tenant_id, 0u) << "address tenant kept";
  }
  EXPECT_EQ(connect_stats().unparsed, 2u);
  const auto events = drain_events();
  ASSERT_EQ(events.size(), 2u);
  for (const auto &e : events) {
    EXPECT_EQ(e.flags, NVQOS_CONNECT_F_UNPARSED);
    EXPECT_EQ(nqn_text(e.subnqn), "");
  }
  EXPECT_EQ(dp_->nvme_stats().desync, 0u) << "the walk itself follows the split capsule";
}

TEST_F(ConnectTest, GarbageAndMalformedConnectsAreNotReadAsNqns) {
  std::mt19937 rng(42);
  Bytes garbage(1200);
  for (auto &b : garbage) b = static_cast<std::uint8_t>(rng());
  garbage[0] = 0x04;  // looks like a capsule type, nothing else agrees
  Conn c(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 42000);
  c.syn();
  c.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  c.h2c(garbage);
  // A Connect whose SGL claims 512 bytes of data: not the Connect data layout.
  Bytes bad = connect_capsule(kSubA, kHost1);
  bad[40] = 0x00;
  bad[41] = 0x02;
  Conn d(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 42001);
  d.syn();
  d.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  d.h2c(bad);
  const nvqos_connect_stats cs = connect_stats();
  EXPECT_EQ(cs.connects, 1u) << "the random bytes are no capsule";
  EXPECT_EQ(cs.unparsed, 1u);
  const auto events = drain_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].flags, NVQOS_CONNECT_F_UNPARSED);
}

TEST_F(ConnectTest, ForbiddenHostIsDroppedBeforeTheTargetAndStaysRefused) {
  protect(kSubA, 3, /*enforce=*/true, {kHost1});
  Conn ok(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 43000);
  EXPECT_EQ(ok.syn(), kTcOk);
  EXPECT_EQ(ok.h2c(nvmf::encode_pdu(nvmf::IcReq{})), kTcOk);
  EXPECT_EQ(ok.h2c(connect_capsule(kSubA, kHost1)), kTcOk);
  EXPECT_EQ(ok.h2c(read_cmd(5)), kTcOk);

  Conn bad(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 43001);
  EXPECT_EQ(bad.syn(), kTcOk);
  EXPECT_EQ(bad.h2c(nvmf::encode_pdu(nvmf::IcReq{})), kTcOk);
  const std::uint32_t connect_seq = bad.h2c_seq();
  const Bytes capsule = connect_capsule(kSubA, kHost2);
  EXPECT_EQ(bad.h2c(capsule), kTcShot);
  EXPECT_EQ(bad.h2c_at(connect_seq, capsule), kTcShot) << "the retransmission too";
  EXPECT_EQ(bad.h2c(read_cmd(6)), kTcShot) << "and whatever follows";

  const nvqos_access_stats s = access_stats(3);
  EXPECT_EQ(s.allowed, 1u);
  EXPECT_EQ(s.denied, 1u);
  EXPECT_EQ(s.dropped_packets, 3u) << "the refusing packet and the two after it";
  const auto drops = percpu_sum<nvqos_access_drops>(skel().maps.access_tenant_drops, 0);
  EXPECT_EQ(drops.packets, 3u);
  EXPECT_EQ(drops.bytes, 2 * (capsule.size() + 40) + read_cmd(6).size() + 40) << "IP bytes";
  EXPECT_EQ(admin_submitted(0, NVQOS_ROLE_TARGET), 2u)
      << "the allowed Connect and command (admin queue); the refused Connect is not tracked";

  const auto events = drain_events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].verdict, NVQOS_ACCESS_ALLOWED);
  EXPECT_EQ(events[1].verdict, NVQOS_ACCESS_DENIED);
  EXPECT_EQ(events[1].subsys_id, 3u);
  EXPECT_EQ(nqn_text(events[1].hostnqn), kHost2);
  EXPECT_EQ(nqn_text(events[1].subnqn), kSubA);
}

TEST_F(ConnectTest, InitiatorAddressRuleAndUnprotectedSubsystems) {
  protect(kSubA, 2, true, {}, {{"10.0.1.0", 24}});
  Conn in(*dp_, NVQOS_ROLE_TARGET, "10.0.1.7", 44000);
  in.syn();
  in.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(in.h2c(connect_capsule(kSubA, kHost2)), kTcOk);
  Conn out(*dp_, NVQOS_ROLE_TARGET, "10.0.2.7", 44001);
  out.syn();
  out.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(out.h2c(connect_capsule(kSubA, kHost1)), kTcShot);
  Conn other(*dp_, NVQOS_ROLE_TARGET, "10.0.2.7", 44002);
  other.syn();
  other.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(other.h2c(connect_capsule(kSubB, kHost1)), kTcOk) << "vol-b has no access rule";
  EXPECT_EQ(other.h2c(read_cmd(1)), kTcOk);
  EXPECT_EQ(access_stats(2).allowed, 1u);
  EXPECT_EQ(access_stats(2).denied, 1u);
}

TEST_F(ConnectTest, DryRunOnlyCounts) {
  protect(kSubA, 4, /*enforce=*/false, {kHost1});
  Conn bad(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 45000);
  bad.syn();
  bad.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(bad.h2c(connect_capsule(kSubA, kHost2)), kTcOk);
  EXPECT_EQ(bad.h2c(read_cmd(3)), kTcOk);
  EXPECT_EQ(access_stats(4).dry_run_denied, 1u);
  EXPECT_EQ(access_stats(4).denied, 0u);
  EXPECT_EQ(access_stats(4).dropped_packets, 0u);
  const auto events = drain_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].verdict, NVQOS_ACCESS_DRY_RUN_DENIED);
}

TEST_F(ConnectTest, ProtectedPortFailsClosedOnWhatItCannotCheck) {
  protect(kSubA, 1, true, {kHost1});
  // The Connect of an allowed host, cut so its NQNs are in no single skb.
  Conn split(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 46000);
  split.syn();
  split.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(split.h2c_segmented(connect_capsule(kSubA, kHost1), 400), kTcShot);
  EXPECT_EQ(split.h2c(read_cmd(1)), kTcShot);
  // A command before any Connect.
  Conn early(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 46001);
  early.syn();
  early.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(early.h2c(read_cmd(1)), kTcShot);
  // Bytes the walk cannot follow (lost PDU boundaries).
  Conn lost(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 46002);
  lost.syn();
  EXPECT_EQ(lost.h2c(Bytes(300, 0x41)), kTcShot);
  EXPECT_EQ(connect_stats().gate_refused, 3u);
  EXPECT_EQ(access_stats(NVQOS_ACCESS_SUBSYS_UNKNOWN).denied, 3u);
  // A connection that predates the agent (no SYN seen) is left alone until it sends a Connect.
  Conn old(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 46003);
  EXPECT_EQ(old.h2c(read_cmd(1)), kTcOk);
}

}  // namespace
}  // namespace nvqos::testing
