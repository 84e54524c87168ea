// BPF program tests of the Fabrics Connect inspection (bpf/lib/connect.h):
// Connect capsules built with the tools/nvmf codec run through the real tc
// programs in both roles; the NQN tenant maps, the access maps and the
// connect_events ring buffer are checked.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <net/if.h>

#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
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
  Conn(Datapath &dp, std::uint8_t role, const char *host = "10.0.0.1", std::uint16_t host_port = 40000,
       const char *target = kTarget)
      : dp_(dp), role_(role), host_(host), host_port_(host_port), target_(target) {}

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
  int h2c_flags(std::uint8_t flags) { return send(true, h2c_seq_, {}, flags); }
  int c2h_flags(std::uint8_t flags) { return send(false, c2h_seq_, {}, flags); }
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
  std::uint32_t c2h_seq() const { return c2h_seq_; }
  // The frame the last run left (tc may rewrite it).
  const Bytes &last_frame() const { return last_.data; }
  nvqos_flow_key key() const {
    return role_ == NVQOS_ROLE_TARGET ? make_flow_key(target_, kNvmePort, host_, host_port_, ifindex())
                                      : make_flow_key(host_, host_port_, target_, kNvmePort, ifindex());
  }
  static std::uint32_t ifindex() { return if_nametoindex("lo"); }

 private:
  int send(bool to_target, std::uint32_t seq, const Bytes &bytes, std::uint8_t flags) {
    const SkbContext ctx{ifindex(), 0, 0};
    const bool egress = (role_ == NVQOS_ROLE_INITIATOR) == to_target;
    const Bytes f = frame(to_target, seq, bytes, flags);
    last_ = egress ? dp_.egress(f, ctx) : dp_.ingress(f, ctx);
    return static_cast<int>(last_.retval);
  }

 public:
  // A segment of the connection; host -> target acknowledges c2h_seq(), the other way h2c_seq().
  Bytes frame(bool to_target, std::uint32_t seq, const Bytes &bytes, std::uint8_t flags) const {
    PacketBuilder pkt;
    if (to_target)
      pkt.ip(host_, target_).tcp(host_port_, kNvmePort, flags, seq).ack_seq(c2h_seq_);
    else
      pkt.ip(target_, host_).tcp(kNvmePort, host_port_, flags, seq).ack_seq(h2c_seq_);
    pkt.payload(bytes);
    return pkt.build();
  }

 private:

  Datapath &dp_;
  std::uint8_t role_;
  const char *host_;
  std::uint16_t host_port_;
  const char *target_;
  RunResult last_;
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

  // Protects subNQN on kNvmePort; hosts/cidrs empty = not checked. `reset`:
  // refuse "reset" (for the subsystem and the port), else "drop".
  void protect(const std::string &sub, std::uint32_t id, bool enforce, const std::vector<std::string> &hosts,
               const std::vector<std::pair<std::string, unsigned>> &cidrs = {}, bool reset = false) {
    nvqos_access_subsys_key k{};
    k.sub = nqn(sub);
    k.port = kNvmePort;
    nvqos_access_subsys v{id, (enforce ? NVQOS_ACCESS_F_ENFORCE : 0u) |
                                  (hosts.empty() ? 0u : NVQOS_ACCESS_F_HOSTS) |
                                  (cidrs.empty() ? 0u : NVQOS_ACCESS_F_CIDRS) |
                                  (reset ? NVQOS_ACCESS_F_RESET : 0u)};
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
    ap.flags |= (enforce ? NVQOS_ACCESS_F_ENFORCE : 0u) | (reset ? NVQOS_ACCESS_F_RESET : 0u);
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
  EXPECT_EQ(access_stats(NVQOS_ACCESS_SUBSYS_UNKNOWN).dropped_packets, 6u)
      << "every refused segment: the split Connect's three and the command after it, one each for the others";
  // A connection that predates the agent (no SYN seen) is left alone until it sends a Connect.
  Conn old(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 46003);
  EXPECT_EQ(old.h2c(read_cmd(1)), kTcOk);
  // Not gated (predating, or its gate freed) is no way around the check: an unreadable Connect is refused.
  Conn ungated(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 46004);
  EXPECT_EQ(ungated.h2c(nvmf::encode_pdu(nvmf::IcReq{})), kTcOk);
  EXPECT_EQ(ungated.h2c_segmented(connect_capsule(kSubA, kHost1), 400), kTcShot);
  EXPECT_EQ(connect_stats().gate_refused, 4u);
}

// ---- Refusing by reset or drop; access_conns bounded and self-cleaning.

bool checksum_ok(std::uint32_t sum) { return ones_fold(sum) == 0xffff; }

// The fields of an Ethernet + IP + TCP frame, checksums verified from scratch.
struct TcpFrame {
  std::array<std::uint8_t, 6> dst_mac{}, src_mac{};
  Addr16 src{}, dst{};
  std::uint16_t sport = 0, dport = 0;
  std::uint32_t seq = 0, ack = 0;
  std::uint8_t flags = 0, doff = 0;
  std::size_t ip_len = 0;  // IP header + TCP header + payload
  std::size_t frame_len = 0;
  bool ip_checksum_ok = false, tcp_checksum_ok = false;
};

std::optional<TcpFrame> parse_tcp_frame(const std::uint8_t *f, std::size_t n) {
  if (n < 14 + 40) return std::nullopt;
  TcpFrame t;
  std::memcpy(t.dst_mac.data(), f, 6);
  std::memcpy(t.src_mac.data(), f + 6, 6);
  const std::uint16_t type = std::uint16_t(f[12] << 8 | f[13]);
  const std::uint8_t *ip = f + 14;
  const std::uint8_t *tcp = nullptr;
  std::uint32_t pseudo = 0;
  if (type == 0x0800 && (ip[0] >> 4) == 4 && ip[9] == IPPROTO_TCP) {
    const std::size_t ihl = (ip[0] & 15) * 4u;
    t.ip_len = std::size_t(ip[2] << 8 | ip[3]);
    if (t.ip_len < ihl + 20 || 14 + t.ip_len > n) return std::nullopt;
    t.ip_checksum_ok = checksum_ok(ones_sum(ip, ihl));
    t.src[10] = t.src[11] = t.dst[10] = t.dst[11] = 0xff;
    std::memcpy(t.src.data() + 12, ip + 12, 4);
    std::memcpy(t.dst.data() + 12, ip + 16, 4);
    tcp = ip + ihl;
    pseudo = ones_sum(ip + 12, 8) + IPPROTO_TCP + std::uint32_t(t.ip_len - ihl);
  } else if (type == 0x86dd && ip[6] == IPPROTO_TCP) {
    t.ip_len = 40 + std::size_t(ip[4] << 8 | ip[5]);
    if (t.ip_len < 60 || 14 + t.ip_len > n) return std::nullopt;
    t.ip_checksum_ok = true;  // IPv6 has none
    std::memcpy(t.src.data(), ip + 8, 16);
    std::memcpy(t.dst.data(), ip + 24, 16);
    tcp = ip + 40;
    pseudo = ones_sum(ip + 8, 32) + IPPROTO_TCP + std::uint32_t(t.ip_len - 40);
  } else {
    return std::nullopt;
  }
  const std::size_t tcp_len = t.ip_len - std::size_t(tcp - ip);
  t.sport = std::uint16_t(tcp[0] << 8 | tcp[1]);
  t.dport = std::uint16_t(tcp[2] << 8 | tcp[3]);
  t.seq = std::uint32_t(tcp[4]) << 24 | tcp[5] << 16 | tcp[6] << 8 | tcp[7];
  t.ack = std::uint32_t(tcp[8]) << 24 | tcp[9] << 16 | tcp[10] << 8 | tcp[11];
  t.doff = tcp[12] >> 4;
  t.flags = tcp[13];
  t.tcp_checksum_ok = checksum_ok(ones_sum(tcp, tcp_len, pseudo));
  t.frame_len = n;
  return t;
}

// Frames leaving through lo (where tc test runs send bpf_clone_redirect copies).
class LoCapture {
 public:
  LoCapture() {
    fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(if_nametoindex("lo"));
    if (fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr *>(&sll), sizeof sll) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~LoCapture() {
    if (fd_ >= 0) close(fd_);
  }
  LoCapture(const LoCapture &) = delete;
  LoCapture &operator=(const LoCapture &) = delete;
  bool ok() const { return fd_ >= 0; }

  // The first TCP RST from the target port to host_port seen within a second.
  std::optional<TcpFrame> rst_to(std::uint16_t host_port) {
    std::uint8_t buf[2048];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      auto t = parse_tcp_frame(buf, static_cast<std::size_t>(n));
      if (t && t->sport == kNvmePort && t->dport == host_port && (t->flags & kTcpRst)) return t;
    }
    return std::nullopt;
  }

 private:
  int fd_ = -1;
};

// The reset path sends RSTs out of lo: in a network namespace of this process's
// own they go nowhere real, and the capture sees no other lo traffic.
class AccessRefuseTest : public ConnectTest {
 protected:
  void SetUp() override {
    static const bool private_netns = unshare(CLONE_NEWNET) == 0 && std::system("ip link set lo up") == 0;
    ASSERT_TRUE(private_netns) << "a network namespace of its own: " << std::strerror(errno);
    ConnectTest::SetUp();
  }

  // The data path again, access_conns sized `gates`.
  void reload(std::uint32_t gates) {
    dp_.reset();
    MapSizes sizes;
    sizes.access = gates;
    dp_ = observe_only_datapath(sizes);
    dp_->set_tenant_flags(0, NVQOS_TENANT_F_ACTIVE);
  }
  std::size_t gates() { return map_entries(skel().maps.access_conns); }

  // A forbidden host refused by reset on the family of `host`/`target`; an allowed one unaffected.
  void reset_refusal(const char *host, const char *target, std::uint16_t port) {
    protect(kSubA, 5, true, {kHost1}, {}, /*reset=*/true);
    LoCapture capture;
    ASSERT_TRUE(capture.ok()) << "AF_PACKET socket on lo: " << std::strerror(errno);
    Conn bad(*dp_, NVQOS_ROLE_TARGET, host, port, target);
    bad.syn();
    bad.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
    const std::uint32_t connect_seq = bad.h2c_seq();
    const Bytes capsule = connect_capsule(kSubA, kHost2);
    EXPECT_EQ(bad.h2c(capsule), kTcOk) << "the Connect segment goes on as an RST to the target";

    const std::size_t ip_hdr = std::string_view(host).find(':') == std::string_view::npos ? 20 : 40;
    const auto to_target = parse_tcp_frame(bad.last_frame().data(), bad.last_frame().size());
    ASSERT_TRUE(to_target) << "the skb left for the target is not an IP/TCP frame";
    EXPECT_EQ(to_target->frame_len, 14 + ip_hdr + 20) << "the Connect's bytes are cut";
    EXPECT_EQ(to_target->ip_len, ip_hdr + 20);
    EXPECT_EQ(to_target->src, parse_addr(host));
    EXPECT_EQ(to_target->dst, parse_addr(target));
    EXPECT_EQ(to_target->sport, port);
    EXPECT_EQ(to_target->dport, kNvmePort);
    EXPECT_EQ(to_target->seq, connect_seq) << "the target's next expected byte";
    EXPECT_EQ(to_target->flags, kTcpRst);
    EXPECT_EQ(to_target->doff, 5);
    EXPECT_TRUE(to_target->ip_checksum_ok);
    EXPECT_TRUE(to_target->tcp_checksum_ok);

    const auto to_host = capture.rst_to(port);
    ASSERT_TRUE(to_host) << "no RST to the initiator left through the interface";
    EXPECT_EQ(to_host->ip_len, ip_hdr + 20);
    EXPECT_EQ(to_host->src, parse_addr(target));
    EXPECT_EQ(to_host->dst, parse_addr(host));
    EXPECT_EQ(to_host->sport, kNvmePort);
    EXPECT_EQ(to_host->dport, port);
    EXPECT_EQ(to_host->seq, bad.c2h_seq()) << "what the Connect segment acknowledged: the initiator's next byte";
    EXPECT_EQ(to_host->flags, kTcpRst);
    EXPECT_EQ(to_host->dst_mac, to_target->src_mac) << "Ethernet addresses swapped";
    EXPECT_EQ(to_host->src_mac, to_target->dst_mac);
    EXPECT_TRUE(to_host->ip_checksum_ok);
    EXPECT_TRUE(to_host->tcp_checksum_ok);

    EXPECT_EQ(bad.h2c_at(connect_seq, capsule), kTcOk) << "a retransmission is reset again";
    EXPECT_EQ(parse_tcp_frame(bad.last_frame().data(), bad.last_frame().size())->flags, kTcpRst);
    EXPECT_EQ(access_stats(5).denied, 1u);
    EXPECT_EQ(access_stats(5).resets, 2u);
    EXPECT_EQ(access_stats(5).dropped_packets, 2u) << "neither segment reached the target as data";
    EXPECT_EQ(admin_submitted(0, NVQOS_ROLE_TARGET), 0u) << "the refused Connect is not tracked";
    EXPECT_EQ(gates(), 1u);
    EXPECT_EQ(bad.h2c_flags(kTcpRst | kTcpAck), kTcOk) << "the initiator's RST passes";
    EXPECT_EQ(gates(), 0u) << "and frees the refusal";

    Conn ok(*dp_, NVQOS_ROLE_TARGET, host, port + 1, target);
    ok.syn();
    ok.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
    const Bytes allowed = connect_capsule(kSubA, kHost1);
    EXPECT_EQ(ok.h2c(allowed), kTcOk);
    EXPECT_EQ(ok.last_frame().size(), 14 + ip_hdr + 20 + allowed.size()) << "the allowed Connect is untouched";
    EXPECT_EQ(ok.h2c(read_cmd(4)), kTcOk);
    EXPECT_EQ(admin_submitted(0, NVQOS_ROLE_TARGET), 2u);
    EXPECT_FALSE(capture.rst_to(port + 1)) << "no RST for the allowed host";
    EXPECT_EQ(access_stats(5).allowed, 1u);
  }
};

TEST_F(AccessRefuseTest, ResetSendsRstsToBothEndsIpv4) { reset_refusal("10.0.0.1", kTarget, 47000); }

TEST_F(AccessRefuseTest, ResetSendsRstsToBothEndsIpv6) { reset_refusal("fd00::1", "fd00::2", 47100); }

TEST_F(AccessRefuseTest, ResetOnAConnectionThatSendsNoConnectWhenTheGateTimesOut) {
  protect(kSubA, 5, true, {kHost1}, {}, /*reset=*/true);
  Conn late(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 47200);
  late.syn();
  late.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  // What the agent does to a gate past connect_timeout_s.
  const nvqos_flow_key key = late.key();
  nvqos_access_conn v{};
  ASSERT_EQ(bpf_map__lookup_elem(skel().maps.access_conns, &key, sizeof key, &v, sizeof v, 0), 0);
  EXPECT_EQ(v.flags, NVQOS_ACCESS_F_ENFORCE | NVQOS_ACCESS_F_RESET) << "the port's refusal mode, from the SYN";
  v.state = NVQOS_ACCESS_CONN_REFUSED;
  ASSERT_EQ(bpf_map__update_elem(skel().maps.access_conns, &key, sizeof key, &v, sizeof v, BPF_EXIST), 0);
  EXPECT_EQ(late.h2c(read_cmd(1)), kTcOk);
  const auto rst = parse_tcp_frame(late.last_frame().data(), late.last_frame().size());
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->flags, kTcpRst);
  EXPECT_TRUE(rst->tcp_checksum_ok);
  EXPECT_EQ(access_stats(NVQOS_ACCESS_SUBSYS_UNKNOWN).resets, 1u);
}

TEST_F(AccessRefuseTest, DropRefusesInXdpOnlyWhenAskedTo) {
  protect(kSubA, 6, true, {kHost1});
  dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_ACCESS | NVQOS_SETTINGS_F_ACCESS_XDP);
  Conn bad(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 48000);
  bad.syn();
  bad.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  const std::uint32_t connect_seq = bad.h2c_seq();
  const Bytes capsule = connect_capsule(kSubA, kHost2);
  EXPECT_EQ(bad.h2c(capsule), kTcShot) << "the Connect itself: only tc reads it";
  const Bytes retransmission = bad.frame(true, connect_seq, capsule, kTcpAck | kTcpPsh);
  EXPECT_EQ(dp_->xdp(retransmission).retval, XDP_DROP) << "later packets die before the stack";
  EXPECT_EQ(access_stats(6).dropped_packets, 2u);
  EXPECT_EQ(access_stats(6).resets, 0u);
  const auto drops = percpu_sum<nvqos_access_drops>(skel().maps.access_tenant_drops, 0);
  EXPECT_EQ(drops.packets, 2u) << "drop reason access_denied, from XDP too";

  dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_ACCESS);
  EXPECT_EQ(dp_->xdp(retransmission).retval, XDP_PASS) << "XDP refuses nothing unless refuse \"drop\" is configured";
  EXPECT_EQ(bad.h2c_at(connect_seq, capsule), kTcShot) << "tc still drops it";
  dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_ACCESS | NVQOS_SETTINGS_F_ACCESS_XDP);

  const Bytes rst = bad.frame(true, bad.h2c_seq(), {}, kTcpRst | kTcpAck);
  EXPECT_EQ(dp_->xdp(rst).retval, XDP_PASS) << "an RST carries no Connect: it passes and closes the target's half";
  EXPECT_EQ(bad.h2c_flags(kTcpRst | kTcpAck), kTcOk);
  EXPECT_EQ(gates(), 0u);

  Conn ok(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 48001);
  ok.syn();
  ok.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(ok.h2c(connect_capsule(kSubA, kHost1)), kTcOk);
  EXPECT_EQ(dp_->xdp(ok.frame(true, ok.h2c_seq(), read_cmd(2), kTcpAck)).retval, XDP_PASS);
  EXPECT_EQ(ok.h2c(read_cmd(2)), kTcOk);
}

TEST_F(AccessRefuseTest, AConnectionFloodCannotWedgeAccessControl) {
  constexpr std::uint32_t kGates = 64;
  reload(kGates);
  protect(kSubA, 7, true, {kHost1}, {}, /*reset=*/true);
  Conn established(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 49000);
  established.syn();
  established.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  ASSERT_EQ(established.h2c(connect_capsule(kSubA, kHost1)), kTcOk);
  EXPECT_EQ(gates(), 0u) << "an allowed Connect frees its gate";

  std::vector<std::unique_ptr<Conn>> flood;
  for (std::uint32_t i = 0; i < kGates; ++i) {
    flood.push_back(std::make_unique<Conn>(*dp_, NVQOS_ROLE_TARGET, "10.0.3.1", std::uint16_t(50000 + i)));
    EXPECT_EQ(flood.back()->syn(), kTcOk);
  }
  EXPECT_EQ(gates(), kGates);
  Conn turned_away(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 49001);
  EXPECT_EQ(turned_away.syn(), kTcShot) << "full: a connection that cannot be gated is not let in (fail closed)";
  EXPECT_EQ(connect_stats().conns_full, 1u);
  for (std::uint16_t cid = 10; cid < 20; ++cid) EXPECT_EQ(established.h2c(read_cmd(cid)), kTcOk);
  EXPECT_EQ(admin_submitted(0, NVQOS_ROLE_TARGET), 11u) << "the established connection keeps working";

  // The flood's connections end: initiators' FINs for half, the target's RSTs for the rest.
  for (std::uint32_t i = 0; i < kGates; ++i)
    EXPECT_EQ(i % 2 ? flood[i]->h2c_flags(kTcpFin | kTcpAck) : flood[i]->c2h_flags(kTcpRst | kTcpAck), kTcOk);
  EXPECT_EQ(gates(), 0u) << "every gate freed by its connection's end";

  Conn bad(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 49002);
  EXPECT_EQ(bad.syn(), kTcOk);
  bad.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(bad.h2c(connect_capsule(kSubA, kHost2)), kTcOk);
  EXPECT_EQ(parse_tcp_frame(bad.last_frame().data(), bad.last_frame().size())->flags, kTcpRst)
      << "gated and refused again";
  Conn good(*dp_, NVQOS_ROLE_TARGET, "10.0.0.1", 49003);
  EXPECT_EQ(good.syn(), kTcOk);
  good.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(good.h2c(connect_capsule(kSubA, kHost1)), kTcOk);
  EXPECT_EQ(access_stats(7).allowed, 2u);
  EXPECT_EQ(access_stats(7).denied, 1u);
}

}  // namespace
}  // namespace nvqos::testing
