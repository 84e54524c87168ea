#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "policy.hpp"

namespace nvqos::agent {
namespace {

Policy two_tenants() {
  return parse_policy(R"({"tenants": [
      {"name": "gold", "match": [{"remote": "10.0.0.0/24"}, {"remote": "10.0.1.1", "port": 4420}]},
      {"name": "bronze", "quarantine": true, "match": [{"port": 4420}]}]})");
}

TEST(Policy, CompilesTenantsRulesPortsAndSettings) {
  DesiredState st = compile_policy(two_tenants());
  ASSERT_EQ(st.tenants.size(), 3u);
  EXPECT_EQ(st.tenants[0].name, "default");
  EXPECT_EQ(st.tenants[0].id, NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(st.tenant_ids.at("gold"), 1u);
  EXPECT_EQ(st.tenant_ids.at("bronze"), 2u);
  EXPECT_EQ(st.tenant(2)->flags, NVQOS_TENANT_F_ACTIVE | NVQOS_TENANT_F_DROP_INGRESS);
  EXPECT_TRUE(st.needs_xdp);
  EXPECT_EQ(st.settings_flags, NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_PORT_BITMAP);
  EXPECT_EQ(st.ports.at(4420), static_cast<std::uint32_t>(NVQOS_PORT_KIND_IO));
  EXPECT_EQ(st.ports.at(8009), static_cast<std::uint32_t>(NVQOS_PORT_KIND_DISCOVERY));
  ASSERT_EQ(st.rules.size(), 3u);

  // The port-only rule of bronze covers every address: port + 0 address bits.
  RuleKey any_addr;
  any_addr.port_be = htons(4420);
  ASSERT_TRUE(st.rules.count(any_addr));
  EXPECT_EQ(st.rules.at(any_addr), 2u);
  auto k = any_addr.to_kernel();
  EXPECT_EQ(k.prefixlen, NVQOS_RULE_PORT_BITS);

  // gold's /24 has no port: port 0, 96 + 24 address bits.
  bool found = false;
  for (const auto& [key, tenant] : st.rules)
    if (key.port_be == 0) {
      EXPECT_EQ(key.to_kernel().prefixlen, NVQOS_RULE_PORT_BITS + 120);
      EXPECT_EQ(key.addr[12], 10);
      EXPECT_EQ(tenant, 1u);
      found = true;
    }
  EXPECT_TRUE(found);
}

TEST(Policy, DefaultTenantCanBeDisabled) {
  DesiredState st = compile_policy(parse_policy(R"({"default_tenant": {"enabled": false}})"));
  EXPECT_EQ(st.settings_flags, NVQOS_SETTINGS_F_PORT_BITMAP);
  EXPECT_EQ(st.tenant(0)->flags, 0u);
  EXPECT_FALSE(st.needs_xdp);
}

TEST(Policy, TenantIdsAreStableAcrossReloads) {
  DesiredState first = compile_policy(two_tenants());
  // gold removed, silver added, bronze kept: bronze keeps its id, silver must
  // not inherit gold's id (its counters) in the same reload.
  DesiredState second = compile_policy(parse_policy(R"({"tenants": [
      {"name": "silver", "match": [{"remote": "10.9.0.0/16"}]},
      {"name": "bronze", "match": [{"port": 4420}]}]})"),
                                       first.tenant_ids);
  EXPECT_EQ(second.tenant_ids.at("bronze"), first.tenant_ids.at("bronze"));
  EXPECT_NE(second.tenant_ids.at("silver"), first.tenant_ids.at("gold"));
  EXPECT_EQ(second.tenant_ids.count("gold"), 0u);
  EXPECT_FALSE(second.needs_xdp);
  EXPECT_EQ(second.tenant(second.tenant_ids.at("bronze"))->flags, NVQOS_TENANT_F_ACTIVE);
}

TEST(Policy, IdenticalPolicyCompilesToIdenticalState) {
  DesiredState a = compile_policy(two_tenants());
  DesiredState b = compile_policy(two_tenants(), a.tenant_ids);
  EXPECT_EQ(a.rules, b.rules);
  EXPECT_EQ(a.ports, b.ports);
  EXPECT_EQ(a.tenant_ids, b.tenant_ids);
}

}  // namespace
}  // namespace nvqos::agent
