// NQN rules and access control, the pure part (agent/identity.*): parsing,
// matching, precedence, and which exact rules the kernel may apply alone.
#include <gtest/gtest.h>

#include "config.hpp"
#include "config_refusal.hpp"
#include "identity.hpp"
#include "policy.hpp"

namespace nvqos::agent {
namespace {

constexpr const char* kHostA = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-0000-0000-000000000001";
constexpr const char* kHostB = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-0000-0000-000000000002";

DesiredState compile(const std::string& text) { return compile_policy(parse_policy(text)); }

TEST(NqnMatch, ExactAndGlob) {
  EXPECT_TRUE(nqn_matches("nqn.2024-01.io.example:vol1", "nqn.2024-01.io.example:vol1"));
  EXPECT_FALSE(nqn_matches("nqn.2024-01.io.example:vol1", "nqn.2024-01.io.example:vol10"));
  EXPECT_TRUE(nqn_matches("nqn.2024-01.io.example:*", "nqn.2024-01.io.example:db:vol7"));
  EXPECT_TRUE(nqn_matches("nqn.2024-01.io.example:vol?", "nqn.2024-01.io.example:vol3"));
  EXPECT_TRUE(nqn_matches("nqn.2024-01.io.example:vol[12]", "nqn.2024-01.io.example:vol2"));
  EXPECT_FALSE(nqn_matches("nqn.2024-01.io.example:vol[12]", "nqn.2024-01.io.example:vol3"));
  EXPECT_FALSE(nqn_matches("nqn.2024-01.io.example:*", "nqn.2024-01.io.other:vol"));
  EXPECT_TRUE(nqn_is_glob("a*"));
  EXPECT_FALSE(nqn_is_glob("nqn.2014-08.org.nvmexpress:uuid:x"));
}

TEST(NqnConfig, RulesParseAndBadOnesAreRefused) {
  Policy p = parse_policy(R"({"tenants": [
    {"name": "db", "match": [{"subsystem_nqn": "nqn.2024-01.io.example:db-*"}, {"remote": "10.0.0.0/24"}]},
    {"name": "h", "match": [{"host_nqn": "nqn.2014-08.org.nvmexpress:uuid:aaaa", "subsystem_nqn": "nqn.x:y"}]}]})");
  ASSERT_EQ(p.tenants[0].match.size(), 2u);
  EXPECT_EQ(p.tenants[0].match[0].subsystem_nqn, "nqn.2024-01.io.example:db-*");
  EXPECT_TRUE(p.tenants[0].match[0].is_nqn_rule());
  EXPECT_FALSE(p.tenants[0].match[1].is_nqn_rule());

  expect_refused(R"({"tenants": [{"name": "t", "match": [{"subsystem_nqn": "nqn.a:b", "remote": "10.0.0.1"}]}]})",
                 "/tenants/0/match/0", "not both");
  expect_refused(R"({"tenants": [{"name": "t", "match": [{"host_nqn": ""}]}]})", "/tenants/0/match/0/host_nqn",
                 "empty");
  expect_refused(R"({"tenants": [{"name": "t", "match": [{"host_nqn": 7}]}]})", "/tenants/0/match/0/host_nqn",
                 "string");
  expect_refused(std::string(R"({"tenants": [{"name": "t", "match": [{"subsystem_nqn": ")") + std::string(224, 'n') +
                     R"("}]}]})",
                 "/tenants/0/match/0/subsystem_nqn", "at most 223");
  expect_refused(R"({"tenants": [{"name": "a", "match": [{"subsystem_nqn": "nqn.a:b"}]},
                                {"name": "b", "match": [{"subsystem_nqn": "nqn.a:b"}]}]})",
                 "/tenants/1/match/0", "already belongs to tenant \"a\"");
  // Two tenants with different NQN rules are not an address overlap.
  EXPECT_NO_THROW(parse_policy(R"({"tenants": [{"name": "a", "match": [{"subsystem_nqn": "nqn.a:1"}]},
                                               {"name": "b", "match": [{"subsystem_nqn": "nqn.a:2"}]}]})"));
}

TEST(NqnPrecedence, BothBeatsSubsystemBeatsHostExactBeatsGlobThenOrder) {
  const DesiredState st = compile(std::string(R"({"tenants": [
    {"name": "host-only", "match": [{"host_nqn": ")") + kHostA + R"("}]},
    {"name": "sub-glob", "match": [{"subsystem_nqn": "nqn.2024-01.io.example:*"}]},
    {"name": "sub-exact", "match": [{"subsystem_nqn": "nqn.2024-01.io.example:vol1"}]},
    {"name": "both", "match": [{"host_nqn": ")" + kHostA + R"(", "subsystem_nqn": "nqn.2024-01.io.example:vol*"}]},
    {"name": "first-glob", "match": [{"host_nqn": "nqn.2014-08.org.nvmexpress:uuid:b*"}]},
    {"name": "second-glob", "match": [{"host_nqn": "nqn.2014-08.org.nvmexpress:uuid:*"}]}]})");
  auto id = [&](const char* name) { return st.tenant_ids.at(name); };
  const IdentityState& s = st.identity;
  EXPECT_EQ(s.resolve(kHostA, "nqn.2024-01.io.example:vol1"), id("both"));
  EXPECT_EQ(s.resolve(kHostB, "nqn.2024-01.io.example:vol1"), id("sub-exact"));
  EXPECT_EQ(s.resolve(kHostB, "nqn.2024-01.io.example:vol2"), id("sub-glob"));
  EXPECT_EQ(s.resolve(kHostA, "nqn.2024-02.other:x"), id("host-only"));
  EXPECT_EQ(s.resolve(kHostB, "nqn.2024-02.other:x"), id("first-glob")) << "same kind and exactness: file order";
  EXPECT_EQ(s.resolve("nqn.2014-08.org.nvmexpress:uuid:cccc", "nqn.2024-02.other:x"), id("second-glob"));
  EXPECT_EQ(s.resolve("nqn.other-host", "nqn.2024-02.other:x"), std::nullopt) << "no NQN rule: the address tenant";

  // vol1 is shadowed by the host+subsystem glob rule for host A: not decisive in the kernel.
  EXPECT_TRUE(s.subs.empty());
  // Subsystem-only globs exist: no host rule is decisive either.
  EXPECT_TRUE(s.hosts.empty());
  EXPECT_TRUE(s.pairs.empty());
}

TEST(NqnPrecedence, DecisiveExactRulesGoToTheKernel) {
  const DesiredState st = compile(std::string(R"({"tenants": [
    {"name": "a", "match": [{"subsystem_nqn": "nqn.2024-01.io.example:vol-a"}]},
    {"name": "b", "match": [{"subsystem_nqn": "nqn.2024-01.io.example:vol-b"}]},
    {"name": "p", "match": [{"host_nqn": ")") + kHostB + R"(", "subsystem_nqn": "nqn.2024-01.io.example:vol-c"}]}]})");
  const IdentityState& s = st.identity;
  EXPECT_EQ(s.subs.size(), 2u);
  EXPECT_EQ(s.subs.at("nqn.2024-01.io.example:vol-a"), st.tenant_ids.at("a"));
  EXPECT_EQ(s.pairs.size(), 1u);
  EXPECT_EQ(s.pairs.begin()->second, st.tenant_ids.at("p"));
  // No subsystem-only rule: exact host rules are decisive unless a pair rule's host pattern matches.
  const DesiredState h = compile(std::string(R"({"tenants": [
    {"name": "x", "match": [{"host_nqn": ")") + kHostA + R"("}, {"host_nqn": ")" + kHostB + R"("}]},
    {"name": "y", "match": [{"host_nqn": ")" + kHostB + R"(", "subsystem_nqn": "nqn.s:*"}]}]})");
  EXPECT_EQ(h.identity.hosts.size(), 1u);
  EXPECT_TRUE(h.identity.hosts.count(kHostA));
}

TEST(AccessConfig, ParsesAndCompilesPerPort) {
  const DesiredState st = compile(std::string(R"({
    "nvme_ports": {"io": [4420, 4421]},
    "access_control": {"connect_timeout_s": 30, "subsystems": [
      {"nqn": "nqn.2024-01.io.example:vol1", "hosts": [")") + kHostA + R"("], "initiators": ["10.0.0.0/24"]},
      {"nqn": "nqn.2024-01.io.example:vol2", "mode": "dry_run", "ports": [4421], "initiators": ["fd00::/64"]}]}})");
  const IdentityState& s = st.identity;
  ASSERT_EQ(s.access.size(), 2u);
  EXPECT_EQ(s.access[0].ports, (std::vector<std::uint16_t>{4420, 4421})) << "default: every I/O port";
  EXPECT_TRUE(s.access[0].enforce);
  EXPECT_FALSE(s.access[1].enforce);
  EXPECT_EQ(s.access_ports.at(4420), NVQOS_ACCESS_F_ENFORCE | NVQOS_ACCESS_F_RESET) << "refuse \"reset\" by default";
  EXPECT_EQ(s.access_ports.at(4421), NVQOS_ACCESS_F_ENFORCE | NVQOS_ACCESS_F_RESET) << "vol1 enforces on 4421 too";
  EXPECT_TRUE(s.access[0].reset);
  EXPECT_FALSE(s.xdp_refusal);
  EXPECT_EQ(s.connect_timeout_s, 30u);
  EXPECT_TRUE(st.settings_flags & NVQOS_SETTINGS_F_ACCESS);
  EXPECT_FALSE(compile("{}").settings_flags & NVQOS_SETTINGS_F_ACCESS) << "off by default";
}

TEST(AccessConfig, MistakesAreRefused) {
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b"}]}})", "/access_control/subsystems/0",
                 "who may connect");
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:*", "hosts": ["nqn.h:1"]}]}})",
                 "/access_control/subsystems/0/nqn", "only exact NQNs");
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b", "hosts": ["nqn.h:*"]}]}})",
                 "/access_control/subsystems/0/hosts/0", "only exact NQNs");
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b", "initiators": ["10.0.0.300"]}]}})",
                 "/access_control/subsystems/0/initiators/0", "not an IPv4 or IPv6");
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b", "hosts": ["nqn.h:1"], "mode": "audit"}]}})",
                 "/access_control/subsystems/0/mode", "dry_run");
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b", "hosts": ["nqn.h:1"], "ports": [4430]}]}})",
                 "/access_control/subsystems/0/ports/0", "not an NVMe/TCP port");
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b", "hosts": ["nqn.h:1"]},
                                                       {"nqn": "nqn.a:b", "hosts": ["nqn.h:2"]}]}})",
                 "/access_control/subsystems/1/nqn", "listed twice");
  expect_refused(R"({"access_control": {"subsytems": []}})", "/access_control/subsytems", "unknown field");
  expect_refused(R"({"access_control": {"refuse": "rst"}})", "/access_control/refuse", "\"reset\"");
  expect_refused(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b", "hosts": ["nqn.h:1"], "refuse": 1}]}})",
                 "/access_control/subsystems/0/refuse", "\"drop\"");
}

TEST(AccessConfig, RefuseByResetOrDropGloballyAndPerSubsystem) {
  const std::string subsystems = std::string(R"("subsystems": [
      {"nqn": "nqn.2024-01.io.example:vol1", "hosts": [")") + kHostA + R"("], "ports": [4420]},
      {"nqn": "nqn.2024-01.io.example:vol2", "hosts": [")" + kHostA + R"("], "ports": [4421], "refuse": "reset"},
      {"nqn": "nqn.2024-01.io.example:vol3", "hosts": [")" + kHostA + R"("], "ports": [4421], "mode": "dry_run"}])";
  const std::string ports = R"("nvme_ports": {"io": [4420, 4421]})";
  // Globally drop, one subsystem resets: XDP is needed for the others.
  const DesiredState drop = compile("{" + ports + R"(, "access_control": {"refuse": "drop", )" + subsystems + "}}");
  EXPECT_FALSE(drop.identity.access[0].reset);
  EXPECT_TRUE(drop.identity.access[1].reset);
  EXPECT_EQ(drop.identity.access_ports.at(4420), NVQOS_ACCESS_F_ENFORCE) << "a port with a dropping subsystem drops";
  EXPECT_EQ(drop.identity.access_ports.at(4421), NVQOS_ACCESS_F_ENFORCE | NVQOS_ACCESS_F_RESET)
      << "the dry-run subsystem's mode does not count";
  EXPECT_TRUE(drop.identity.xdp_refusal);
  EXPECT_TRUE(drop.needs_xdp);
  EXPECT_TRUE(drop.settings_flags & NVQOS_SETTINGS_F_ACCESS_XDP);
  // The default: reset everywhere, no XDP for access control.
  const DesiredState reset = compile("{" + ports + R"(, "access_control": {)" + subsystems + "}}");
  EXPECT_TRUE(reset.identity.access[0].reset);
  EXPECT_FALSE(reset.identity.xdp_refusal);
  EXPECT_FALSE(reset.needs_xdp) << "native XDP halves veth throughput: never attached for reset refusals";
  EXPECT_FALSE(reset.settings_flags & NVQOS_SETTINGS_F_ACCESS_XDP);
  // A dry-run subsystem that says drop needs no XDP either.
  const DesiredState dry = compile(std::string(R"({"access_control": {"subsystems": [{"nqn": "nqn.a:b", "hosts": [")") +
                                   kHostA + R"("], "mode": "dry_run", "refuse": "drop"}]}})");
  EXPECT_FALSE(dry.needs_xdp);
}

}  // namespace
}  // namespace nvqos::agent
