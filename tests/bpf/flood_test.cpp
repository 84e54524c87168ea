// BPF program tests of the data path under connection floods: a SYN flood
// (spoofed sources that never complete a handshake) must not evict the flow or
// the PDU-walk state of an established connection, even with a flow table far
// smaller than the flood; what answers a flood (SYN-ACK, RST) opens nothing.
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

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
constexpr const char *kTarget = "10.0.0.2";  // this host
constexpr const char *kHost = "10.0.0.1";    // the established initiator
constexpr std::uint16_t kHostPort = 40000;
constexpr std::uint32_t kFlows = 1024;
constexpr std::uint32_t kIfindex = 1;

Bytes read_capsule(std::uint16_t cid) {
  return nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_read(cid, 1, 0, 0, 512), {}});
}

Bytes response(std::uint16_t cid) {
  nvmf::Cqe cqe;
  cqe.cid = cid;
  return nvmf::encode_pdu(nvmf::CapsuleResp{cqe});
}

class FloodTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = bpf_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    dp_ = std::make_unique<Datapath>(MapSizes{kFlows, kFlows, 0});
    dp_->add_nvme_port(kNvmePort);
    dp_->add_rule(kNvmePort, kHost, 32, kTenant);
    dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT);
  }

  // This host is the target: H2C arrives (ingress), C2H leaves (egress).
  void h2c(std::uint8_t flags, const Bytes &payload = {}) {
    dp_->ingress(PacketBuilder().ip(kHost, kTarget).tcp(kHostPort, kNvmePort, flags, h2c_seq_).payload(payload).build(),
                 ctx());
    h2c_seq_ += payload.size() + ((flags & kTcpSyn) ? 1 : 0);
  }
  void c2h(std::uint8_t flags, const Bytes &payload = {}) {
    dp_->egress(PacketBuilder().ip(kTarget, kHost).tcp(kNvmePort, kHostPort, flags, c2h_seq_).payload(payload).build(),
                ctx());
    c2h_seq_ += payload.size() + ((flags & kTcpSyn) ? 1 : 0);
  }
  static SkbContext ctx() { return SkbContext{.ifindex = kIfindex}; }

  void establish() {
    h2c(kTcpSyn);
    c2h(kTcpSyn | kTcpAck);
    h2c(kTcpAck);
    h2c(kTcpAck | kTcpPsh, nvmf::encode_pdu(nvmf::IcReq{}));
    c2h(kTcpAck | kTcpPsh, nvmf::encode_pdu(nvmf::IcResp{}));
  }

  // One read command and its completion on the established connection.
  void one_command(std::uint16_t cid) {
    h2c(kTcpAck | kTcpPsh, read_capsule(cid));
    c2h(kTcpAck | kTcpPsh, response(cid));
  }

  // `n` handshakes from spoofed sources (never completed): SYN in, SYN-ACK out,
  // and for every other one the spoofed source's RST.
  void syn_flood(std::uint32_t n) {
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::string src = "10.66." + std::to_string((i >> 8) & 0xff) + "." + std::to_string(i & 0xff);
      const auto sport = static_cast<std::uint16_t>(1024 + i % 60000);
      dp_->ingress(PacketBuilder().ip(src, kTarget).tcp(sport, kNvmePort, kTcpSyn, i * 7919u).build(), ctx());
      dp_->egress(PacketBuilder().ip(kTarget, src).tcp(kNvmePort, sport, kTcpSyn | kTcpAck, i).build(), ctx());
      if (i % 2)
        dp_->ingress(PacketBuilder().ip(src, kTarget).tcp(sport, kNvmePort, kTcpRst, i * 7919u + 1).build(), ctx());
    }
  }

  nvqos_cmd_stats reads() const {
    nvqos_cmd_key key{};
    key.tenant_id = kTenant;
    key.op = NVQOS_CMD_OP_READ;
    key.role = NVQOS_ROLE_TARGET;
    return dp_->cmd_stats(key);
  }

  static constexpr std::uint32_t kTenant = 3;
  std::unique_ptr<Datapath> dp_;
  std::uint32_t h2c_seq_ = 0x10000000u;
  std::uint32_t c2h_seq_ = 0x20000000u;
};

TEST_F(FloodTest, SynFloodLargerThanTheFlowTableEvictsNoEstablishedConnection) {
  establish();
  one_command(1);
  const nvqos_flow_key key = make_flow_key(kTarget, kNvmePort, kHost, kHostPort, kIfindex);
  ASSERT_TRUE(dp_->flow(key));

  syn_flood(8 * kFlows);

  // The flood opened no flow: the table holds the established connection only.
  EXPECT_EQ(dp_->flows().size(), 1u);
  const auto flow = dp_->flow(key);
  ASSERT_TRUE(flow) << "the established connection's flow was evicted by the SYN flood";
  EXPECT_EQ(flow->tenant_id, kTenant);
  EXPECT_LE(map_entries(dp_->skel().maps.handshakes), bpf_map__max_entries(dp_->skel().maps.handshakes));
  EXPECT_EQ(map_entries(dp_->skel().maps.nvme_conns), 1u) << "the flood created PDU-walk state";
  const nvqos_tenant_stats ts = dp_->tenant_stats(kTenant);
  EXPECT_EQ(ts.flows_opened, 1u);
  // The flood's packets still count as traffic of the tenant whose rules they match (default).
  EXPECT_EQ(dp_->tenant_stats(NVQOS_TENANT_DEFAULT).packets[NVQOS_DIR_INGRESS], 8 * kFlows + 4 * kFlows);
  EXPECT_EQ(dp_->tenant_stats(NVQOS_TENANT_DEFAULT).flows_opened, 0u);

  // Its PDU walk is still in sync: the next command is timed, attributed to its tenant.
  one_command(2);
  const nvqos_cmd_stats s = reads();
  EXPECT_EQ(s.submitted, 2u);
  EXPECT_EQ(s.completed, 2u);
  const nvqos_nvme_stats ns = dp_->nvme_stats();
  EXPECT_EQ(ns.desync, 0u);
  EXPECT_EQ(ns.resync, 0u) << "the walk started in sync from the handshake";
}

TEST_F(FloodTest, TheFirstPacketAfterTheHandshakeOpensTheFlowInSync) {
  h2c(kTcpSyn);
  c2h(kTcpSyn | kTcpAck);
  EXPECT_TRUE(dp_->flows().empty());
  EXPECT_EQ(map_entries(dp_->skel().maps.handshakes), 1u);
  h2c(kTcpAck);
  EXPECT_EQ(dp_->flows().size(), 1u);
  EXPECT_EQ(dp_->tenant_stats(kTenant).flows_opened, 1u);
  h2c(kTcpAck | kTcpPsh, nvmf::encode_pdu(nvmf::IcReq{}));
  EXPECT_EQ(map_entries(dp_->skel().maps.handshakes), 0u) << "taken by the first payload";
  c2h(kTcpAck | kTcpPsh, nvmf::encode_pdu(nvmf::IcResp{}));
  one_command(5);
  EXPECT_EQ(reads().completed, 1u);
  EXPECT_EQ(dp_->nvme_stats().resync, 0u);
}

TEST_F(FloodTest, AnRstAnsweringASynOpensNothingAndForgetsTheHandshake) {
  dp_->ingress(PacketBuilder().ip("10.66.0.1", kTarget).tcp(5555, kNvmePort, kTcpSyn).build(), ctx());
  EXPECT_EQ(map_entries(dp_->skel().maps.handshakes), 1u);
  dp_->egress(PacketBuilder().ip(kTarget, "10.66.0.1").tcp(kNvmePort, 5555, kTcpRst | kTcpAck).build(), ctx());
  EXPECT_TRUE(dp_->flows().empty());
  EXPECT_EQ(map_entries(dp_->skel().maps.handshakes), 0u);
  EXPECT_EQ(dp_->tenant_stats(NVQOS_TENANT_DEFAULT).packets[NVQOS_DIR_EGRESS], 1u);
}

TEST_F(FloodTest, AHandshakeEvictedByTheFloodStillGetsItsFlowAndResyncs) {
  h2c(kTcpSyn);
  c2h(kTcpSyn | kTcpAck);
  syn_flood(2 * bpf_map__max_entries(dp_->skel().maps.handshakes));
  h2c(kTcpAck);
  h2c(kTcpAck | kTcpPsh, nvmf::encode_pdu(nvmf::IcReq{}));
  c2h(kTcpAck | kTcpPsh, nvmf::encode_pdu(nvmf::IcResp{}));
  one_command(9);
  EXPECT_EQ(dp_->tenant_stats(kTenant).flows_opened, 1u);
  EXPECT_EQ(reads().completed, 1u);
}

}  // namespace
}  // namespace nvqos::testing
