// BPF program tests of bpf/nvqos_datapath.bpf.c: crafted frames through the
// real tc and XDP programs (BPF_PROG_TEST_RUN), checking verdicts and maps.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <net/if.h>

#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "datapath_harness.hpp"
#include "packet_builder.hpp"

namespace nvqos::testing {
namespace {

constexpr std::uint32_t kTcActOk = 0;  // TC_ACT_OK
constexpr std::uint16_t kNvmePort = NVQOS_PORT_NVME_IO;
constexpr std::uint16_t kDiscoveryPort = NVQOS_PORT_NVME_DISCOVERY;
constexpr std::uint16_t kLocalPort = 40000;
constexpr const char *kLocal4 = "10.0.0.1";
constexpr const char *kTarget4 = "10.0.0.2";
constexpr const char *kLocal6 = "fd00::1";
constexpr const char *kTarget6 = "fd00::2";
constexpr int kIn = NVQOS_DIR_INGRESS;
constexpr int kEg = NVQOS_DIR_EGRESS;

// An ingress packet from an NVMe/TCP target to this host (the initiator).
PacketBuilder from_target(const char *src = kTarget4, const char *dst = kLocal4,
                          std::size_t payload = 100) {
  return PacketBuilder().ip(src, dst).tcp(kNvmePort, kLocalPort, kTcpAck | kTcpPsh).payload(payload);
}

// An egress packet from this host (the initiator) to the target.
PacketBuilder to_target(const char *src = kLocal4, const char *dst = kTarget4,
                        std::uint8_t flags = kTcpAck | kTcpPsh, std::size_t payload = 100) {
  return PacketBuilder().ip(src, dst).tcp(kLocalPort, kNvmePort, flags).payload(payload);
}

std::uint32_t loopback_ifindex() { return if_nametoindex("lo"); }

// The key tc builds for an ingress packet: we are the destination.
nvqos_flow_key ingress_key(const PacketBuilder &pkt, std::uint16_t local_port,
                           std::uint16_t remote_port) {
  nvqos_flow_key key{};
  std::memcpy(key.local_addr, pkt.dst().data(), 16);
  std::memcpy(key.remote_addr, pkt.src().data(), 16);
  key.local_port = htons(local_port);
  key.remote_port = htons(remote_port);
  key.ifindex = loopback_ifindex();
  return key;
}

bool all_zero(const nvqos_tenant_stats &s) {
  static const nvqos_tenant_stats kZero{};
  return std::memcmp(&s, &kZero, sizeof(s)) == 0;
}

class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = bpf_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    dp_ = observe_only_datapath();
    dp_->add_nvme_port(kDiscoveryPort, NVQOS_PORT_KIND_DISCOVERY);
  }

  // Nothing but the packet itself (and a parse error, if expected) was counted.
  void expect_only_seen(std::uint64_t seen, std::uint64_t parse_errors) {
    const nvqos_datapath_stats ds = dp_->datapath_stats();
    EXPECT_EQ(ds.packets_seen, seen);
    EXPECT_EQ(ds.parse_errors, parse_errors);
    EXPECT_EQ(ds.packets_nvme, 0u);
    EXPECT_EQ(ds.unclassified, 0u);
    EXPECT_EQ(ds.flow_insert_failed, 0u);
    EXPECT_TRUE(all_zero(dp_->tenant_stats(NVQOS_TENANT_DEFAULT)));
    EXPECT_TRUE(dp_->flows().empty());
  }

  std::unique_ptr<Datapath> dp_;
};

// ---- Frames the data path must parse and account --------------------------

struct AcceptCase {
  const char *name;
  PacketBuilder pkt;
};

void PrintTo(const AcceptCase &c, std::ostream *os) { *os << c.name; }

class AcceptTest : public DatapathTest, public ::testing::WithParamInterface<AcceptCase> {};

TEST_P(AcceptTest, AccountsIngressToDefaultTenant) {
  const PacketBuilder &pkt = GetParam().pkt;
  ASSERT_EQ(dp_->ingress(pkt.build()).retval, kTcActOk);

  const nvqos_datapath_stats ds = dp_->datapath_stats();
  EXPECT_EQ(ds.packets_seen, 1u);
  EXPECT_EQ(ds.packets_nvme, 1u);
  EXPECT_EQ(ds.parse_errors, 0u);

  const nvqos_tenant_stats ts = dp_->tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.packets[kIn], 1u);
  EXPECT_EQ(ts.bytes[kIn], pkt.ip_length());
  EXPECT_EQ(ts.payload_bytes[kIn], pkt.payload_length());
  EXPECT_EQ(ts.packets[kEg], 0u);
  EXPECT_EQ(ts.flows_opened, 1u);

  const auto flow = dp_->flow(ingress_key(pkt, kLocalPort, kNvmePort));
  ASSERT_TRUE(flow.has_value()) << "no flow_table entry under the expected key";
  EXPECT_EQ(flow->tenant_id, NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(flow->role, NVQOS_ROLE_INITIATOR);
  EXPECT_EQ(flow->family, pkt.ipv4() ? NVQOS_FAMILY_IPV4 : NVQOS_FAMILY_IPV6);
  EXPECT_EQ(flow->bytes[kIn], pkt.ip_length());
  EXPECT_EQ(flow->packets[kIn], 1u);
  EXPECT_EQ(flow->flags, 0u);
  EXPECT_GT(flow->last_seen_ns, 0u);
  EXPECT_GE(flow->last_seen_ns, flow->first_seen_ns);
}

INSTANTIATE_TEST_SUITE_P(
    Frames, AcceptTest,
    ::testing::Values(
        AcceptCase{"ipv4", from_target()},
        AcceptCase{"ipv4_options", from_target().ipv4_options(12)},
        AcceptCase{"ipv4_max_options", from_target().ipv4_options(40)},
        AcceptCase{"tcp_options", from_target().tcp_options(12)},
        AcceptCase{"ipv4_first_fragment", from_target().ipv4_fragment(0, true)},
        AcceptCase{"no_payload", from_target(kTarget4, kLocal4, 0)},
        AcceptCase{"ethernet_padding", from_target(kTarget4, kLocal4, 0).trailer(6)},
        AcceptCase{"vlan", from_target().vlan(100)},
        AcceptCase{"qinq", from_target().vlan(100, kEtherTypeQinQ).vlan(200)},
        AcceptCase{"qinq_ipv6", from_target(kTarget6, kLocal6).vlan(7, kEtherTypeQinQ).vlan(8)},
        AcceptCase{"ipv6", from_target(kTarget6, kLocal6)},
        AcceptCase{"ipv6_hop_by_hop", from_target(kTarget6, kLocal6).ipv6_ext(kIpv6HopByHop)},
        AcceptCase{"ipv6_routing", from_target(kTarget6, kLocal6).ipv6_ext(kIpv6Routing, 24)},
        AcceptCase{"ipv6_dest_options", from_target(kTarget6, kLocal6).ipv6_ext(kIpv6DestOptions)},
        AcceptCase{"ipv6_first_fragment", from_target(kTarget6, kLocal6).ipv6_fragment(0, true)},
        AcceptCase{"ipv6_long_ext", from_target(kTarget6, kLocal6).ipv6_ext(kIpv6HopByHop, 256)},
        AcceptCase{"ipv6_four_ext", from_target(kTarget6, kLocal6)
                                        .ipv6_ext(kIpv6HopByHop)
                                        .ipv6_ext(kIpv6DestOptions, 16)
                                        .ipv6_ext(kIpv6Routing, 24)
                                        .ipv6_fragment(0, true)},
        AcceptCase{"ipv6_vlan_ext_tcp_options",
                   from_target(kTarget6, kLocal6).vlan(5).ipv6_ext(kIpv6DestOptions).tcp_options(20)}),
    [](const auto &info) { return std::string(info.param.name); });

// ---- Frames that are not (parsable) NVMe/TCP: passed, only seen -------------

struct SkipCase {
  const char *name;
  PacketBuilder pkt;
  std::uint64_t parse_errors;  // 1 if malformed, 0 if merely not ours
};

void PrintTo(const SkipCase &c, std::ostream *os) { *os << c.name; }

class SkipTest : public DatapathTest, public ::testing::WithParamInterface<SkipCase> {};

TEST_P(SkipTest, PassesAndCountsNothingElse) {
  const Bytes frame = GetParam().pkt.build();
  // Make the XDP verdict meaningful: the default tenant's ingress is dropped.
  dp_->set_tenant_flags(NVQOS_TENANT_DEFAULT, NVQOS_TENANT_F_DROP_INGRESS);

  EXPECT_EQ(dp_->ingress(frame).retval, kTcActOk);
  EXPECT_EQ(dp_->egress(frame).retval, kTcActOk);
  EXPECT_EQ(dp_->xdp(frame).retval, XDP_PASS);
  expect_only_seen(2, 2 * GetParam().parse_errors);
}

INSTANTIATE_TEST_SUITE_P(
    NotNvme, SkipTest,
    ::testing::Values(
        SkipCase{"other_tcp_ports", PacketBuilder().ip(kTarget4, kLocal4).tcp(80, 40000), 0},
        SkipCase{"other_tcp_ports_ipv6", PacketBuilder().ip(kTarget6, kLocal6).tcp(443, 40000), 0},
        SkipCase{"udp_on_nvme_port", from_target().ip_protocol(kIpProtoUdp), 0},
        SkipCase{"arp", from_target().ether_type(kEtherTypeArp), 0},
        SkipCase{"three_vlan_tags", from_target().vlan(1, kEtherTypeQinQ).vlan(2).vlan(3), 0},
        SkipCase{"ipv4_non_first_fragment", from_target().ipv4_fragment(185, false), 0},
        SkipCase{"ipv6_non_first_fragment",
                 from_target(kTarget6, kLocal6).ipv6_fragment(185, true), 0},
        SkipCase{"ipv6_five_ext", from_target(kTarget6, kLocal6)
                                      .ipv6_ext(kIpv6HopByHop)
                                      .ipv6_ext(kIpv6DestOptions)
                                      .ipv6_ext(kIpv6Routing)
                                      .ipv6_ext(kIpv6DestOptions)
                                      .ipv6_ext(kIpv6DestOptions),
                 0},
        SkipCase{"ipv6_no_next_header", from_target(kTarget6, kLocal6).ip_protocol(59), 0}),
    [](const auto &info) { return std::string(info.param.name); });

INSTANTIATE_TEST_SUITE_P(
    Malformed, SkipTest,
    ::testing::Values(
        SkipCase{"ihl_below_5", from_target().raw_ihl(4), 1},
        SkipCase{"ihl_past_frame", from_target(kTarget4, kLocal4, 0).raw_ihl(15), 1},
        SkipCase{"doff_below_5", from_target().raw_doff(4), 1},
        SkipCase{"doff_past_ip_length", from_target(kTarget4, kLocal4, 0).raw_doff(15), 1},
        SkipCase{"ipv4_length_below_headers", from_target().raw_ip_length(30), 1},
        SkipCase{"ipv4_length_past_frame", from_target().raw_ip_length(1000), 1},
        SkipCase{"ipv4_length_zero_without_gso", from_target().raw_ip_length(0), 1},
        SkipCase{"ipv6_length_past_frame", from_target(kTarget6, kLocal6).raw_ip_length(1000), 1},
        SkipCase{"ipv6_length_below_tcp", from_target(kTarget6, kLocal6).raw_ip_length(10), 1},
        SkipCase{"ipv4_version_6", from_target().raw_ip_version(6), 1},
        SkipCase{"ipv6_version_4", from_target(kTarget6, kLocal6).raw_ip_version(4), 1}),
    [](const auto &info) { return std::string(info.param.name); });

// ---- Truncation at every byte of the headers and the payload ----------------

struct TruncateCase {
  const char *name;
  PacketBuilder pkt;
};

void PrintTo(const TruncateCase &c, std::ostream *os) { *os << c.name; }

class TruncateTest : public DatapathTest, public ::testing::WithParamInterface<TruncateCase> {};

TEST_P(TruncateTest, EveryCutIsAParseError) {
  const PacketBuilder &pkt = GetParam().pkt;
  const Bytes full = pkt.build();
  dp_->set_tenant_flags(NVQOS_TENANT_DEFAULT, NVQOS_TENANT_F_DROP_INGRESS);

  // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, and for
  // tc also untagged IP frames shorter than the fixed IP header; XDP runs them.
  const std::size_t tc_min = pkt.l3_offset() == 14 ? 14 + (pkt.ipv4() ? 20 : 40) : 14;
  std::uint64_t runs = 0;
  for (std::size_t len = 14; len < full.size(); ++len) {
    const Bytes cut(full.begin(), full.begin() + len);
    EXPECT_EQ(dp_->xdp(cut).retval, XDP_PASS) << "cut at " << len;
    if (len < tc_min) continue;
    EXPECT_EQ(dp_->ingress(cut).retval, kTcActOk) << "cut at " << len;
    ++runs;
    ASSERT_EQ(dp_->datapath_stats().parse_errors, runs) << "cut at " << len << " of " << full.size();
  }
  EXPECT_EQ(runs, full.size() - tc_min);
  expect_only_seen(runs, runs);
  // The whole frame is fine: the cuts above were what made them errors.
  EXPECT_EQ(dp_->xdp(full).retval, XDP_DROP);
  EXPECT_EQ(dp_->ingress(full).retval, kTcActOk);
  EXPECT_EQ(dp_->datapath_stats().packets_nvme, 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Frames, TruncateTest,
    ::testing::Values(
        TruncateCase{"ipv4", from_target(kTarget4, kLocal4, 8)},
        TruncateCase{"qinq_ipv4_options_tcp_options",
                     from_target(kTarget4, kLocal4, 8).vlan(1, kEtherTypeQinQ).vlan(2).ipv4_options(8).tcp_options(8)},
        TruncateCase{"ipv6_ext", from_target(kTarget6, kLocal6, 8)
                                     .ipv6_ext(kIpv6HopByHop)
                                     .ipv6_ext(kIpv6Routing, 24)
                                     .ipv6_fragment(0, false)
                                     .tcp_options(4)}),
    [](const auto &info) { return std::string(info.param.name); });

// ---- Roles and flows ---------------------------------------------------------

TEST_F(DatapathTest, InitiatorWhenTheRemotePortIsNvme) {
  const PacketBuilder pkt = from_target();
  dp_->ingress(pkt.build());
  const auto flow = dp_->flow(ingress_key(pkt, kLocalPort, kNvmePort));
  ASSERT_TRUE(flow);
  EXPECT_EQ(flow->role, NVQOS_ROLE_INITIATOR);
}

TEST_F(DatapathTest, TargetWhenTheLocalPortIsNvme) {
  // A host 10.0.0.3 connects from port 50000 to our NVMe/TCP port.
  dp_->ingress(PacketBuilder().ip("10.0.0.3", kLocal4).tcp(50000, kNvmePort, kTcpSyn).build());
  dp_->egress(PacketBuilder().ip(kLocal4, "10.0.0.3").tcp(kNvmePort, 50000, kTcpSyn | kTcpAck).build());
  EXPECT_TRUE(dp_->flows().empty()) << "a flow before the handshake completed";
  const PacketBuilder in = PacketBuilder().ip("10.0.0.3", kLocal4).tcp(50000, kNvmePort, kTcpAck);
  const PacketBuilder out = PacketBuilder().ip(kLocal4, "10.0.0.3").tcp(kNvmePort, 50000, kTcpAck);
  dp_->ingress(in.build());
  dp_->egress(out.build());

  const auto flows = dp_->flows();
  ASSERT_EQ(flows.size(), 1u);
  const nvqos_flow_key expected = make_flow_key(kLocal4, kNvmePort, "10.0.0.3", 50000, loopback_ifindex());
  EXPECT_EQ(std::memcmp(&flows[0].first, &expected, sizeof(expected)), 0);
  EXPECT_EQ(flows[0].second.role, NVQOS_ROLE_TARGET);
  EXPECT_EQ(flows[0].second.packets[kIn], 1u);
  EXPECT_EQ(flows[0].second.packets[kEg], 1u);
}

TEST_F(DatapathTest, BothDirectionsShareOneFlow) {
  const PacketBuilder syn = to_target(kLocal4, kTarget4, kTcpSyn, 0);
  const PacketBuilder syn_ack =
      PacketBuilder().ip(kTarget4, kLocal4).tcp(kNvmePort, kLocalPort, kTcpSyn | kTcpAck);
  const PacketBuilder ack = to_target(kLocal4, kTarget4, kTcpAck, 0);
  const PacketBuilder data = to_target(kLocal4, kTarget4, kTcpAck | kTcpPsh, 72);
  const PacketBuilder data_ack = from_target(kTarget4, kLocal4, 0);
  dp_->egress(syn.build());
  dp_->ingress(syn_ack.build());
  dp_->egress(ack.build());  // the handshake completes: the flow opens
  dp_->egress(data.build());
  dp_->ingress(data_ack.build());

  const auto flows = dp_->flows();
  ASSERT_EQ(flows.size(), 1u);
  const nvqos_flow_key expected = make_flow_key(kLocal4, kLocalPort, kTarget4, kNvmePort, loopback_ifindex());
  EXPECT_EQ(std::memcmp(&flows[0].first, &expected, sizeof(expected)), 0);
  const nvqos_flow_value &flow = flows[0].second;
  EXPECT_EQ(flow.role, NVQOS_ROLE_INITIATOR);
  EXPECT_EQ(flow.packets[kEg], 2u);
  EXPECT_EQ(flow.packets[kIn], 1u);
  EXPECT_EQ(flow.bytes[kEg], ack.ip_length() + data.ip_length());
  EXPECT_EQ(flow.bytes[kIn], data_ack.ip_length());

  // The tenant counts the handshake too.
  const nvqos_tenant_stats ts = dp_->tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.flows_opened, 1u);
  EXPECT_EQ(ts.packets[kEg], 3u);
  EXPECT_EQ(ts.packets[kIn], 2u);
  EXPECT_EQ(ts.bytes[kIn], syn_ack.ip_length() + data_ack.ip_length());
  EXPECT_EQ(ts.payload_bytes[kEg], 72u);
  EXPECT_EQ(ts.payload_bytes[kIn], 0u);
}

TEST_F(DatapathTest, FlowKeyCarriesTheInterface) {
  const PacketBuilder pkt = from_target();
  const std::uint32_t lo = loopback_ifindex();
  ASSERT_NE(lo, 0u);
  dp_->ingress(pkt.build(), SkbContext{.ifindex = lo});
  EXPECT_TRUE(dp_->flow(ingress_key(pkt, kLocalPort, kNvmePort)));
  nvqos_flow_key other = ingress_key(pkt, kLocalPort, kNvmePort);
  other.ifindex = lo + 1000;
  EXPECT_FALSE(dp_->flow(other));
}

TEST_F(DatapathTest, FinRstCloseAndSynReopens) {
  const nvqos_flow_key key = make_flow_key(kLocal4, kLocalPort, kTarget4, kNvmePort, loopback_ifindex());
  auto flags = [&] { return dp_->flow(key).value().flags; };
  auto stats = [&] { return dp_->tenant_stats(NVQOS_TENANT_DEFAULT); };
  auto inbound = [](std::uint8_t f) {
    return PacketBuilder().ip(kTarget4, kLocal4).tcp(kNvmePort, kLocalPort, f).build();
  };

  dp_->egress(to_target(kLocal4, kTarget4, kTcpSyn, 0).build());
  EXPECT_FALSE(dp_->flow(key)) << "a flow before the handshake completed";
  dp_->egress(to_target(kLocal4, kTarget4, kTcpAck, 0).build());
  EXPECT_EQ(flags(), 0u);
  EXPECT_EQ(stats().flows_opened, 1u);

  dp_->egress(to_target(kLocal4, kTarget4, kTcpFin | kTcpAck, 0).build());
  EXPECT_EQ(flags(), NVQOS_FLOW_F_CLOSED);
  EXPECT_EQ(stats().flows_closed, 1u);

  dp_->ingress(inbound(kTcpFin | kTcpAck));  // the peer's FIN: already closed
  dp_->ingress(inbound(kTcpRst));
  EXPECT_EQ(stats().flows_closed, 1u);

  dp_->ingress(inbound(kTcpSyn | kTcpAck));  // a SYN-ACK does not start a connection
  EXPECT_EQ(flags(), NVQOS_FLOW_F_CLOSED);
  EXPECT_EQ(stats().flows_opened, 1u);

  dp_->egress(to_target(kLocal4, kTarget4, kTcpSyn, 0).build());  // 5-tuple reused
  EXPECT_EQ(flags(), 0u);
  EXPECT_EQ(stats().flows_opened, 2u);

  dp_->ingress(inbound(kTcpRst));
  EXPECT_EQ(flags(), NVQOS_FLOW_F_CLOSED);
  EXPECT_EQ(stats().flows_closed, 2u);
  EXPECT_EQ(stats().packets[kEg] + stats().packets[kIn], 8u);
  EXPECT_EQ(dp_->flows().size(), 1u);
}

TEST_F(DatapathTest, RstOfAnUnknownConnectionOpensNoFlow) {
  dp_->ingress(PacketBuilder().ip(kTarget4, kLocal4).tcp(kNvmePort, kLocalPort, kTcpRst).build());
  const nvqos_tenant_stats ts = dp_->tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.packets[kIn], 1u);
  EXPECT_EQ(ts.flows_opened, 0u);
  EXPECT_EQ(ts.flows_closed, 0u);
  EXPECT_TRUE(dp_->flows().empty());
}

TEST_F(DatapathTest, FinOfAnUnknownConnectionOpensAndClosesTheFlow) {
  dp_->ingress(PacketBuilder().ip(kTarget4, kLocal4).tcp(kNvmePort, kLocalPort, kTcpFin | kTcpAck).build());
  const nvqos_tenant_stats ts = dp_->tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.flows_opened, 1u);
  EXPECT_EQ(ts.flows_closed, 1u);
}

// The bitmap stands in for the nvme_ports hash only while the agent says so.
class PortLookupTest : public DatapathTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    DatapathTest::SetUp();
    if (IsSkipped() || !GetParam()) return;
    dp_->set_port_bitmap({kNvmePort, kDiscoveryPort});
    dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_PORT_BITMAP);
  }
};

TEST_P(PortLookupTest, FindsRolesAndIgnoresOtherPorts) {
  dp_->ingress(from_target().build());                                                  // initiator
  dp_->ingress(PacketBuilder().ip("10.0.0.3", kLocal4).tcp(50000, kDiscoveryPort).build());  // target
  dp_->ingress(PacketBuilder().ip("10.0.0.4", kLocal4).tcp(4421, 50000).build());        // neither
  dp_->egress(PacketBuilder().ip(kLocal4, "10.0.0.4").tcp(50000, 4419).build());         // neither
  const auto flows = dp_->flows();
  ASSERT_EQ(flows.size(), 2u);
  int initiators = 0;
  for (const auto &[key, value] : flows) initiators += value.role == NVQOS_ROLE_INITIATOR;
  EXPECT_EQ(initiators, 1);
  EXPECT_EQ(dp_->datapath_stats().packets_nvme, 2u);
}

INSTANTIATE_TEST_SUITE_P(Lookup, PortLookupTest, ::testing::Bool(),
                         [](const auto &info) { return info.param ? "bitmap" : "hash"; });

TEST_F(DatapathTest, PortBitmapReplacesTheHashOnlyWhenEnabled) {
  const PacketBuilder on_5000 = PacketBuilder().ip(kTarget4, kLocal4).tcp(5000, kLocalPort);
  dp_->set_port_bitmap({5000});  // deliberately unlike the hash (4420, 8009)
  dp_->ingress(on_5000.build());
  dp_->ingress(from_target().build());
  EXPECT_EQ(dp_->datapath_stats().packets_nvme, 1u) << "flag off: the hash decides";

  dp_->set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_PORT_BITMAP);
  dp_->ingress(on_5000.build());
  dp_->ingress(from_target().build());
  EXPECT_EQ(dp_->datapath_stats().packets_nvme, 2u) << "flag on: the bitmap decides";
  EXPECT_TRUE(dp_->flow(ingress_key(on_5000, kLocalPort, 5000)));
  EXPECT_EQ(dp_->xdp(on_5000.build()).retval, XDP_PASS);
  dp_->set_tenant_flags(NVQOS_TENANT_DEFAULT, NVQOS_TENANT_F_DROP_INGRESS);
  EXPECT_EQ(dp_->xdp(on_5000.build()).retval, XDP_DROP);
  EXPECT_EQ(dp_->xdp(from_target().build()).retval, XDP_PASS);
}

// ---- Tenants -------------------------------------------------------------------

TEST_F(DatapathTest, TenantsByCidr) {
  dp_->add_rule(0, "10.1.0.0", 16, 1);
  dp_->add_rule(0, "10.2.0.0", 16, 2);
  dp_->add_rule(0, "fd00:3::", 32, 3);
  const PacketBuilder a = from_target("10.1.7.7", kLocal4, 10);
  const PacketBuilder b = from_target("10.2.7.7", kLocal4, 20);
  const PacketBuilder c = from_target("fd00:3::7", kLocal6, 30);
  const PacketBuilder none = from_target("10.3.7.7", kLocal4, 40);
  for (const PacketBuilder *p : {&a, &b, &b, &c, &none}) dp_->ingress(p->build());

  EXPECT_EQ(dp_->tenant_stats(1).packets[kIn], 1u);
  EXPECT_EQ(dp_->tenant_stats(1).payload_bytes[kIn], 10u);
  EXPECT_EQ(dp_->tenant_stats(2).packets[kIn], 2u);
  EXPECT_EQ(dp_->tenant_stats(2).payload_bytes[kIn], 40u);
  EXPECT_EQ(dp_->tenant_stats(2).flows_opened, 1u);
  EXPECT_EQ(dp_->tenant_stats(3).payload_bytes[kIn], 30u);
  EXPECT_EQ(dp_->tenant_stats(NVQOS_TENANT_DEFAULT).payload_bytes[kIn], 40u);
  EXPECT_EQ(dp_->flow(ingress_key(a, kLocalPort, kNvmePort)).value().tenant_id, 1u);
  EXPECT_EQ(dp_->flow(ingress_key(c, kLocalPort, kNvmePort)).value().tenant_id, 3u);
  EXPECT_EQ(dp_->flows().size(), 4u);
}

TEST_F(DatapathTest, PortRuleBeatsWildcardRule) {
  dp_->add_rule(kNvmePort, "10.0.0.0", 8, 5);  // port-specific, shorter prefix
  dp_->add_rule(0, "10.1.0.0", 16, 6);         // any port, longer prefix
  dp_->ingress(PacketBuilder().ip("10.1.2.3", kLocal4).tcp(kNvmePort, 40001).build());
  dp_->ingress(PacketBuilder().ip("10.1.2.3", kLocal4).tcp(kDiscoveryPort, 40002).build());
  dp_->ingress(PacketBuilder().ip("10.9.9.9", kLocal4).tcp(kDiscoveryPort, 40003).build());
  EXPECT_EQ(dp_->tenant_stats(5).packets[kIn], 1u);
  EXPECT_EQ(dp_->tenant_stats(6).packets[kIn], 1u);
  EXPECT_EQ(dp_->tenant_stats(NVQOS_TENANT_DEFAULT).packets[kIn], 1u);
}

TEST_F(DatapathTest, TargetRulesMatchTheLocalServicePort) {
  dp_->add_rule(kNvmePort, "10.7.0.0", 16, 7);
  dp_->ingress(PacketBuilder().ip("10.7.0.9", kLocal4).tcp(50000, kNvmePort, kTcpAck).build());
  EXPECT_EQ(dp_->tenant_stats(7).flows_opened, 1u);
}

TEST_F(DatapathTest, DefaultTenantOffLeavesUnmatchedUnclassified) {
  dp_->set_settings(0);
  dp_->add_rule(0, "10.1.0.0", 16, 1);
  dp_->ingress(from_target("10.9.0.1", kLocal4).build());
  dp_->egress(to_target(kLocal4, "10.9.0.1").build());
  dp_->ingress(from_target("10.1.0.1", kLocal4).build());

  const nvqos_datapath_stats ds = dp_->datapath_stats();
  EXPECT_EQ(ds.unclassified, 2u);
  EXPECT_EQ(ds.packets_nvme, 1u);
  EXPECT_TRUE(all_zero(dp_->tenant_stats(NVQOS_TENANT_DEFAULT)));
  EXPECT_EQ(dp_->tenant_stats(1).packets[kIn], 1u);
  EXPECT_EQ(dp_->flows().size(), 1u);
}

TEST_F(DatapathTest, OutOfRangeTenantIdsAreRejected) {
  dp_->set_settings(0);
  dp_->add_rule(0, "10.5.0.0", 16, NVQOS_MAX_TENANTS);
  dp_->add_rule(0, "10.6.0.0", 16, NVQOS_TENANT_NONE);
  EXPECT_EQ(dp_->ingress(from_target("10.5.0.1", kLocal4).build()).retval, kTcActOk);
  EXPECT_EQ(dp_->ingress(from_target("10.6.0.1", kLocal4).build()).retval, kTcActOk);
  EXPECT_EQ(dp_->datapath_stats().unclassified, 2u);
  EXPECT_TRUE(dp_->flows().empty());
}

TEST_F(DatapathTest, FlowWithOutOfRangeTenantIsStillCounted) {
  // flow_table is writable by user space: a bad tenant id must not break tc.
  const PacketBuilder pkt = from_target();
  const nvqos_flow_key key = ingress_key(pkt, kLocalPort, kNvmePort);
  nvqos_flow_value value{};
  value.tenant_id = NVQOS_MAX_TENANTS + 5;
  ASSERT_EQ(bpf_map__update_elem(dp_->skel().maps.flow_table, &key, sizeof(key), &value,
                                 sizeof(value), BPF_ANY),
            0);
  EXPECT_EQ(dp_->ingress(pkt.build()).retval, kTcActOk);
  EXPECT_EQ(dp_->flow(key).value().packets[kIn], 1u);
  EXPECT_EQ(dp_->datapath_stats().packets_nvme, 1u);
}

// ---- GSO / GRO super-packets ---------------------------------------------------

TEST_F(DatapathTest, GsoCountsSegmentsAndTheirHeaders) {
  // BPF_PROG_TEST_RUN takes frames up to about a page: small segments.
  const PacketBuilder pkt = to_target(kLocal4, kTarget4, kTcpAck, 4 * 700).tcp_options(12);
  dp_->egress(pkt.build(), SkbContext{.gso_segs = 4, .gso_size = 700});
  const nvqos_tenant_stats ts = dp_->tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.packets[kEg], 4u);
  EXPECT_EQ(ts.payload_bytes[kEg], 4u * 700);
  EXPECT_EQ(ts.bytes[kEg], 4u * (700 + 20 + 32));
}

TEST_F(DatapathTest, GsoSegmentsDerivedFromGsoSizeWhenUnset) {
  const PacketBuilder pkt =
      PacketBuilder().ip(kTarget6, kLocal6).ipv6_ext(kIpv6DestOptions).tcp(kNvmePort, kLocalPort).payload(2500);
  dp_->ingress(pkt.build(), SkbContext{.gso_segs = 0, .gso_size = 1000});
  const nvqos_tenant_stats ts = dp_->tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.packets[kIn], 3u);
  EXPECT_EQ(ts.payload_bytes[kIn], 2500u);
  EXPECT_EQ(ts.bytes[kIn], 2500u + 3 * (40 + 8 + 20));
  const auto flow = dp_->flow(ingress_key(pkt, kLocalPort, kNvmePort));
  ASSERT_TRUE(flow);
  EXPECT_EQ(flow->packets[kIn], 3u);
  EXPECT_EQ(flow->bytes[kIn], ts.bytes[kIn]);
}

TEST_F(DatapathTest, BigTcpZeroLengthTakesTheFrameLength) {
  const PacketBuilder pkt = to_target(kLocal4, kTarget4, kTcpAck, 3000).raw_ip_length(0);
  dp_->egress(pkt.build(), SkbContext{.gso_segs = 2, .gso_size = 1500});
  const nvqos_tenant_stats ts = dp_->tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.packets[kEg], 2u);
  EXPECT_EQ(ts.payload_bytes[kEg], 3000u);
  EXPECT_EQ(ts.bytes[kEg], 3000u + 2 * 40);
  EXPECT_EQ(dp_->datapath_stats().parse_errors, 0u);
}

// ---- XDP early drop ------------------------------------------------------------

TEST_F(DatapathTest, XdpDropsOnlyTenantsMarkedDropIngress) {
  dp_->add_rule(0, "10.1.0.0", 16, 1);
  dp_->add_rule(0, "10.2.0.0", 16, 2);
  dp_->set_tenant_flags(1, NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_DROP_INGRESS);
  dp_->set_tenant_flags(2, NVQOS_TENANT_F_ACTIVE);
  const PacketBuilder blocked = from_target("10.1.0.5", kLocal4, 300);

  EXPECT_EQ(dp_->xdp(blocked.build()).retval, XDP_DROP);
  EXPECT_EQ(dp_->xdp(blocked.build()).retval, XDP_DROP);
  EXPECT_EQ(dp_->xdp(from_target("10.2.0.5", kLocal4).build()).retval, XDP_PASS);
  EXPECT_EQ(dp_->xdp(from_target("10.3.0.5", kLocal4).build()).retval, XDP_PASS);
  EXPECT_EQ(dp_->xdp(PacketBuilder().ip("10.1.0.5", kLocal4).tcp(80, 40000).build()).retval,
            XDP_PASS);

  const nvqos_tenant_stats t1 = dp_->tenant_stats(1);
  EXPECT_EQ(t1.dropped_packets, 2u);
  EXPECT_EQ(t1.dropped_bytes, 2 * blocked.ip_length());
  EXPECT_EQ(t1.packets[kIn], 0u);
  EXPECT_TRUE(all_zero(dp_->tenant_stats(2)));
  // XDP neither opens flows nor counts passed packets: tc does that.
  EXPECT_TRUE(dp_->flows().empty());
  EXPECT_EQ(dp_->datapath_stats().packets_seen, 0u);
}

TEST_F(DatapathTest, XdpFollowsTheFlowsTenant) {
  dp_->set_settings(0);
  const PacketBuilder pkt = from_target(kTarget6, kLocal6);
  const nvqos_flow_key key = ingress_key(pkt, kLocalPort, kNvmePort);
  nvqos_flow_value value{};
  value.tenant_id = 3;
  ASSERT_EQ(bpf_map__update_elem(dp_->skel().maps.flow_table, &key, sizeof(key), &value,
                                 sizeof(value), BPF_ANY),
            0);
  EXPECT_EQ(dp_->xdp(pkt.build()).retval, XDP_PASS);
  dp_->set_tenant_flags(3, NVQOS_TENANT_F_DROP_INGRESS);
  EXPECT_EQ(dp_->xdp(pkt.build()).retval, XDP_DROP);
  EXPECT_EQ(dp_->tenant_stats(3).dropped_packets, 1u);
}

TEST_F(DatapathTest, XdpDropsTheDefaultTenantOnlyWhenEnabled) {
  dp_->set_tenant_flags(NVQOS_TENANT_DEFAULT, NVQOS_TENANT_F_DROP_INGRESS);
  EXPECT_EQ(dp_->xdp(from_target().build()).retval, XDP_DROP);
  dp_->set_settings(0);
  EXPECT_EQ(dp_->xdp(from_target().build()).retval, XDP_PASS);
  EXPECT_EQ(dp_->tenant_stats(NVQOS_TENANT_DEFAULT).dropped_packets, 1u);
}

}  // namespace
}  // namespace nvqos::testing
