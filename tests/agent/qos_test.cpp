#include <gtest/gtest.h>

#include "config.hpp"
#include "config_refusal.hpp"
#include "policy.hpp"
#include "qos.hpp"

namespace nvqos::agent {
namespace {

const char* kClasses = R"({
  "links": [{"interface": "eth0", "capacity_mbit_s": 1000}],
  "classes": [
    {"name": "gold", "priority": 0, "dscp": 46, "guaranteed_mbit_s": 200, "ceiling_mbit_s": 800,
     "ceiling_iops": 20000, "burst_bytes": 1048576},
    {"name": "split", "priority": 2, "read_ceiling_mbit_s": 300, "write_ceiling_mbit_s": 100},
    {"name": "bulk", "priority": 7, "scope": "aggregate", "guaranteed_mbit_s": 100, "ceiling_mbit_s": 500,
     "ingress_ceiling_mbit_s": 400}
  ],
  "default_class": "bulk",
  "tenants": [
    {"name": "g1", "class": "gold", "match": [{"remote": "10.0.0.1"}]},
    {"name": "g2", "class": "gold", "match": [{"remote": "10.0.0.2"}]},
    {"name": "s1", "class": "split", "match": [{"remote": "10.0.1.1"}]},
    {"name": "b1", "match": [{"remote": "10.0.2.1"}]},
    {"name": "b2", "class": "bulk", "match": [{"remote": "10.0.2.2"}]}
  ]
})";

TEST(QosConfig, ParsesLinksClassesAndTenantClasses) {
  Policy p = parse_policy(kClasses);
  ASSERT_EQ(p.links.size(), 1u);
  EXPECT_EQ(p.links[0].capacity_bps, 1'000'000'000u);
  ASSERT_EQ(p.classes.size(), 3u);
  const ClassSpec& gold = p.classes[0];
  EXPECT_EQ(gold.priority, 0u);
  EXPECT_EQ(*gold.dscp, 46);
  EXPECT_EQ(gold.scope, ClassScope::per_tenant);
  EXPECT_EQ(gold.guaranteed_bps, 200'000'000u);
  EXPECT_EQ(gold.ceiling_bps, 800'000'000u);
  EXPECT_EQ(gold.ceiling_iops, 20000u);
  EXPECT_EQ(gold.burst_bytes, 1048576u);
  EXPECT_EQ(p.classes[2].scope, ClassScope::aggregate);
  EXPECT_EQ(p.class_of("g1"), "gold");
  EXPECT_EQ(p.class_of("b1"), "bulk");  // default_class
  EXPECT_EQ(p.class_of("default"), "bulk");
  // gold 2 x 200 (per tenant) + bulk 100 once (aggregate).
  EXPECT_EQ(p.guaranteed_sum_bps(), 500'000'000u);
}

TEST(QosConfig, FractionalMbitAndDefaults) {
  Policy p = parse_policy(R"({"classes": [{"name": "c", "ceiling_mbit_s": 0.5}]})");
  EXPECT_EQ(p.classes[0].ceiling_bps, 500'000u);
  EXPECT_EQ(p.classes[0].priority, kLowestClassPriority);
  EXPECT_FALSE(p.classes[0].dscp.has_value());
  EXPECT_EQ(p.class_of("default"), "");
}

TEST(QosConfig, RefusesImpossiblePolicies) {
  expect_refused(R"({"classes": [{"name": "a"}], "tenants": [{"name": "t", "class": "b", "match": [{"port": 4420}]}]})",
                 "/tenants/0/class", "unknown class \"b\"");
  expect_refused(R"({"default_class": "x"})", "/default_class", "no classes are defined");
  expect_refused(R"({"classes": [{"name": "a"}, {"name": "a"}]})", "/classes/1/name", "already defined at /classes/0");
  expect_refused(R"({"classes": [{"name": "a", "guaranteed_mbit_s": 300, "ceiling_mbit_s": 200}]})",
                 "/classes/0/ceiling_mbit_s", "below the guarantee");
  expect_refused(R"({"classes": [{"name": "a", "priority": 8}]})", "/classes/0/priority", "out of range 0..7");
  expect_refused(R"({"classes": [{"name": "a", "dscp": 64}]})", "/classes/0/dscp", "out of range 0..63");
  expect_refused(R"({"classes": [{"name": "a", "ceiling_mbit_s": 0}]})", "/classes/0/ceiling_mbit_s", "above 0");
  expect_refused(R"({"classes": [{"name": "a", "ceiling_mbit_s": -5}]})", "/classes/0/ceiling_mbit_s", "above 0");
  expect_refused(R"({"classes": [{"name": "a", "ceiling_iops": 0}]})", "/classes/0/ceiling_iops", "out of range");
  expect_refused(R"({"classes": [{"name": "a", "scope": "shared"}]})", "/classes/0/scope", "per_tenant");
  expect_refused(R"({"classes": [{"name": "a", "ceiling_mbit_s": 100, "read_ceiling_mbit_s": 200}]})",
                 "/classes/0/read_ceiling_mbit_s", "could never be reached");
  expect_refused(R"({"classes": [{"name": "a", "burst_ios": 10}]})", "/classes/0/burst_ios", "needs an IOPS ceiling");
  expect_refused(R"({"classes": [{"name": "a", "typo": 1}]})", "/classes/0/typo", "unknown field");
  expect_refused(R"({"links": [{"interface": "eth0"}]})", "/links/0/capacity_mbit_s", "required");
  expect_refused(R"({"links": [{"interface": "eth0", "capacity_mbit_s": 10},
                                {"interface": "eth0", "capacity_mbit_s": 10}]})",
                 "/links/1/interface", "listed twice");
  // 2 tenants x 600 Mbit/s per tenant on a 1 Gbit/s link.
  expect_refused(R"({"links": [{"interface": "eth0", "capacity_mbit_s": 1000}],
                     "classes": [{"name": "a", "guaranteed_mbit_s": 600}],
                     "tenants": [{"name": "t1", "class": "a", "match": [{"port": 4420}]},
                                 {"name": "t2", "class": "a", "match": [{"remote": "10.0.0.1"}]}]})",
                 "/links/0/capacity_mbit_s", "guarantees sum to 1200 Mbit/s");
}

TEST(QosConfig, AggregateGuaranteeCountsOnce) {
  Policy p = parse_policy(R"({"links": [{"interface": "eth0", "capacity_mbit_s": 1000}],
      "classes": [{"name": "a", "scope": "aggregate", "guaranteed_mbit_s": 600}],
      "tenants": [{"name": "t1", "class": "a", "match": [{"port": 4420}]},
                  {"name": "t2", "class": "a", "match": [{"remote": "10.0.0.1"}]}]})");
  EXPECT_EQ(p.guaranteed_sum_bps(), 600'000'000u);
}

TEST(QosPolicy, TenantsGetClassidsDscpAndLimiters) {
  DesiredState st = compile_policy(parse_policy(kClasses));
  const auto& ids = st.tenant_ids;
  const TenantSlot* g1 = st.tenant(ids.at("g1"));
  const TenantSlot* g2 = st.tenant(ids.at("g2"));
  ASSERT_TRUE(g1 && g2);
  EXPECT_EQ(g1->class_name, "gold");
  EXPECT_TRUE(g1->qos.flags & NVQOS_TENANT_F_SET_PRIORITY);
  EXPECT_TRUE(g1->qos.flags & NVQOS_TENANT_F_MARK_DSCP);
  EXPECT_TRUE(g1->qos.flags & NVQOS_TENANT_F_EDT);
  EXPECT_FALSE(g1->qos.flags & NVQOS_TENANT_F_INGRESS_LIMIT);
  EXPECT_EQ(g1->qos.dscp, 46);
  // Per tenant: own leaf, own limiter, the same leaf for both roles.
  EXPECT_NE(g1->qos.classid[0], g2->qos.classid[0]);
  EXPECT_EQ(g1->qos.classid[NVQOS_ROLE_INITIATOR], g1->qos.classid[NVQOS_ROLE_TARGET]);
  EXPECT_EQ(g1->qos.classid[0] >> 16, kHtbMajor);
  EXPECT_NE(g1->qos.limiter_id, g2->qos.limiter_id);
  const auto& lim = st.qos.limiters.at(g1->qos.limiter_id);
  EXPECT_EQ(lim.limit[NVQOS_LIMIT_EGRESS_BYTES].per_sec, 100'000'000u);  // 800 Mbit/s
  EXPECT_EQ(lim.limit[NVQOS_LIMIT_EGRESS_BYTES].burst, 1048576u);
  EXPECT_EQ(lim.limit[NVQOS_LIMIT_IOPS].per_sec, 20000u);
  EXPECT_EQ(lim.limit[NVQOS_LIMIT_IOPS].burst, 200u);  // 10 ms of the rate
  EXPECT_EQ(lim.limit[NVQOS_LIMIT_READ_BYTES].per_sec, 0u);

  // Split by role: initiator (writes) and target (reads) leaves differ.
  const TenantSlot* s1 = st.tenant(ids.at("s1"));
  EXPECT_NE(s1->qos.classid[NVQOS_ROLE_INITIATOR], s1->qos.classid[NVQOS_ROLE_TARGET]);
  EXPECT_FALSE(s1->qos.flags & NVQOS_TENANT_F_MARK_DSCP);

  // Aggregate: b1, b2 and the default tenant share one leaf and one limiter.
  const TenantSlot* b1 = st.tenant(ids.at("b1"));
  const TenantSlot* b2 = st.tenant(ids.at("b2"));
  const TenantSlot* d = st.tenant(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(b1->qos.classid[0], b2->qos.classid[0]);
  EXPECT_EQ(b1->qos.classid[0], d->qos.classid[0]);
  EXPECT_EQ(b1->qos.limiter_id, d->qos.limiter_id);
  EXPECT_EQ(d->class_name, "bulk");
  EXPECT_TRUE(b1->qos.flags & NVQOS_TENANT_F_INGRESS_LIMIT);
  EXPECT_TRUE(st.needs_xdp);
  EXPECT_EQ(st.qos.limiters.at(b1->qos.limiter_id).limit[NVQOS_LIMIT_INGRESS_BYTES].per_sec, 50'000'000u);

  // Units: g1, g2, s1 (split), bulk.
  EXPECT_EQ(st.qos.units.size(), 4u);
  EXPECT_TRUE(st.qos.has_bandwidth);
  EXPECT_TRUE(st.qos.needs_edt);
}

TEST(QosPolicy, NoClassesMeansNothingEnforced) {
  DesiredState st = compile_policy(parse_policy(R"({"tenants": [{"name": "t", "match": [{"port": 4420}]}]})"));
  EXPECT_TRUE(st.qos.units.empty());
  EXPECT_TRUE(st.qos.limiters.empty());
  for (const auto& t : st.tenants) {
    EXPECT_EQ(t.qos.flags, 0u);
    EXPECT_EQ(t.qos.limiter_id, NVQOS_LIMITER_NONE);
  }
  EXPECT_TRUE(plan_htb(st.qos, 1'000'000'000).empty());
}

TEST(QosPolicy, DscpOnlyClassNeedsNoTree) {
  DesiredState st = compile_policy(parse_policy(R"({"classes": [{"name": "m", "dscp": 10}], "default_class": "m"})"));
  EXPECT_TRUE(st.qos.units.empty());
  EXPECT_EQ(st.tenant(0)->qos.flags, NVQOS_TENANT_F_MARK_DSCP);
  EXPECT_EQ(st.tenant(0)->qos.dscp, 10);
}

TEST(QosPolicy, ClassidsSurviveARateChange) {
  DesiredState a = compile_policy(parse_policy(kClasses));
  std::string changed = kClasses;
  changed.replace(changed.find("\"ceiling_mbit_s\": 800"), 21, "\"ceiling_mbit_s\": 900");
  DesiredState b = compile_policy(parse_policy(changed), a.tenant_ids);
  for (const auto& t : a.tenants) EXPECT_EQ(t.qos.classid[0], b.tenant(t.id)->qos.classid[0]) << t.name;
  auto ta = plan_htb(a.qos, 1'000'000'000), tb = plan_htb(b.qos, 1'000'000'000);
  ASSERT_EQ(ta.size(), tb.size());
  int differing = 0;
  for (std::size_t i = 0; i < ta.size(); ++i) {
    EXPECT_EQ(ta[i].classid, tb[i].classid);
    differing += !(ta[i] == tb[i]);
  }
  EXPECT_EQ(differing, 2);  // g1's and g2's leaves, nothing else
}

TEST(QosHtb, TreeFollowsTheClasses) {
  DesiredState st = compile_policy(parse_policy(kClasses));
  const std::uint64_t cap = 1'000'000'000;
  auto tree = plan_htb(st.qos, cap);
  // root, g1, g2, s1 inner + 2 leaves, bulk, default.
  ASSERT_EQ(tree.size(), 8u);
  EXPECT_EQ(tree.front().label, "root");
  EXPECT_EQ(tree.front().rate_bps, cap);
  EXPECT_EQ(tree.front().ceil_bps, cap);
  EXPECT_FALSE(tree.front().leaf);
  auto find = [&](std::uint32_t classid) -> const HtbClass& {
    for (const auto& c : tree)
      if (c.classid == classid) return c;
    throw std::runtime_error("no class");
  };
  const auto& ids = st.tenant_ids;
  const HtbClass& g1 = find(st.tenant(ids.at("g1"))->qos.classid[0]);
  EXPECT_EQ(g1.rate_bps, 200'000'000u);
  EXPECT_EQ(g1.ceil_bps, 800'000'000u);
  EXPECT_EQ(g1.priority, 0u);
  EXPECT_EQ(g1.parent, htb_classid(kHtbRootMinor));
  EXPECT_EQ(g1.burst_bytes, 65536u);          // 1 ms of 200 Mbit/s is 25 KB: one GSO packet at least
  EXPECT_EQ(g1.cburst_bytes, 1048576u);       // the class's burst_bytes above 1 ms of 800 Mbit/s
  const TenantSlot* s1 = st.tenant(ids.at("s1"));
  const HtbClass& s1w = find(s1->qos.classid[NVQOS_ROLE_INITIATOR]);
  const HtbClass& s1r = find(s1->qos.classid[NVQOS_ROLE_TARGET]);
  EXPECT_EQ(s1w.ceil_bps, 100'000'000u);
  EXPECT_EQ(s1r.ceil_bps, 300'000'000u);
  EXPECT_EQ(s1w.parent, s1r.parent);
  EXPECT_FALSE(find(s1w.parent).leaf);
  EXPECT_EQ(find(s1w.parent).ceil_bps, cap);  // no total ceiling: the link
  const HtbClass& def = tree.back();
  EXPECT_EQ(def.classid, htb_classid(kHtbDefaultMinor));
  EXPECT_EQ(def.priority, kLowestClassPriority);
  // 1000 - 200 - 200 - 100 (bulk) - 1 (s1's sliver, capacity / 1000).
  EXPECT_EQ(def.rate_bps, 499'000'000u);
  EXPECT_EQ(def.ceil_bps, cap);
}

TEST(QosHtb, BurstsScaleWithTheRate) {
  EXPECT_EQ(htb_burst_bytes(10'000'000'000ull), 1'250'000u);  // 1 ms of 10 Gbit/s
  EXPECT_EQ(htb_burst_bytes(1'000'000'000ull), 125'000u);
  EXPECT_EQ(htb_burst_bytes(50'000'000ull), 65536u);
}

TEST(QosHtb, GuaranteesFillingTheLinkLeaveTheDefaultClassOnePercent) {
  DesiredState st = compile_policy(parse_policy(R"({
      "classes": [{"name": "a", "guaranteed_mbit_s": 1000}], "default_class": "a"})"));
  auto tree = plan_htb(st.qos, 1'000'000'000);
  EXPECT_EQ(tree.back().rate_bps, 10'000'000u);
}

TEST(QosHtb, CeilingsAboveTheLinkAreCapped) {
  DesiredState st = compile_policy(parse_policy(R"({
      "classes": [{"name": "a", "ceiling_mbit_s": 40000}], "default_class": "a"})"));
  auto tree = plan_htb(st.qos, 10'000'000'000ull);
  EXPECT_EQ(tree[1].ceil_bps, 10'000'000'000ull);
}

TEST(QosHtb, PrioritiesAloneNeedATreeOnlyWhenTheyDiffer) {
  DesiredState same = compile_policy(parse_policy(R"({"classes": [{"name": "a", "priority": 1}], "default_class": "a"})"));
  EXPECT_TRUE(same.qos.units.empty());
  DesiredState differ = compile_policy(parse_policy(R"({
      "classes": [{"name": "a", "priority": 1}, {"name": "b", "priority": 5}], "default_class": "a",
      "tenants": [{"name": "t", "class": "b", "match": [{"port": 4420}]}]})"));
  EXPECT_EQ(differ.qos.units.size(), 2u);
  EXPECT_FALSE(differ.qos.has_bandwidth);
}

TEST(QosUnenforced, IopsNeedEdtAndEverythingNeedsATree) {
  DesiredState st = compile_policy(parse_policy(kClasses));
  EXPECT_TRUE(unenforced_limits(st.qos, true, true).empty());
  auto no_edt = unenforced_limits(st.qos, true, false);
  ASSERT_EQ(no_edt.size(), 1u);
  EXPECT_EQ(no_edt[0].class_name, "gold");
  EXPECT_EQ(no_edt[0].limit, "ceiling_iops");
  auto nothing = unenforced_limits(st.qos, false, false);
  EXPECT_GT(nothing.size(), 5u);
}

TEST(QosConfig, EgressMechanismPerLink) {
  Policy p = parse_policy(R"({"links": [{"interface": "eth0", "capacity_mbit_s": 1000, "egress_mechanism": "htb"},
                                        {"interface": "eth1", "capacity_mbit_s": 1000, "egress_mechanism": "edt"},
                                        {"interface": "eth2", "capacity_mbit_s": 1000, "egress_mechanism": "auto"},
                                        {"interface": "eth3", "capacity_mbit_s": 1000}]})");
  EXPECT_EQ(p.links[0].egress_mechanism, EgressMechanism::htb);
  EXPECT_EQ(p.links[1].egress_mechanism, EgressMechanism::edt);
  EXPECT_EQ(p.links[2].egress_mechanism, EgressMechanism::automatic);
  EXPECT_EQ(p.links[3].egress_mechanism, EgressMechanism::automatic);
  EXPECT_STREQ(to_string(EgressMechanism::automatic), "auto");
  DesiredState st = compile_policy(p);
  EXPECT_EQ(egress_mechanism_of(st.qos, "eth0"), EgressMechanism::htb);
  EXPECT_EQ(egress_mechanism_of(st.qos, "eth1"), EgressMechanism::edt);
  EXPECT_EQ(egress_mechanism_of(st.qos, "eth9"), EgressMechanism::automatic);  // not listed
  expect_refused(R"({"links": [{"interface": "eth0", "capacity_mbit_s": 1000, "egress_mechanism": "fq"}]})",
                 "/links/0/egress_mechanism", "\"auto\", \"htb\" or \"edt\"");
  expect_refused(R"({"links": [{"interface": "eth0", "capacity_mbit_s": 1000, "egress_mechanism": 1}]})",
                 "/links/0/egress_mechanism", "must be");
}

TEST(QosPolicy, IopsCeilingAloneGetsAnHtbLeafForItsFq) {
  DesiredState st = compile_policy(parse_policy(R"({
      "links": [{"interface": "lo", "capacity_mbit_s": 200}],
      "classes": [{"name": "capped", "read_ceiling_iops": 1000}], "default_class": "capped"})"));
  ASSERT_EQ(st.qos.units.size(), 1u);
  EXPECT_TRUE(st.qos.needs_edt);
  EXPECT_FALSE(st.qos.has_bandwidth);
  const TenantSlot* d = st.tenant(NVQOS_TENANT_DEFAULT);
  EXPECT_TRUE(d->qos.flags & NVQOS_TENANT_F_EDT);
  EXPECT_TRUE(d->qos.flags & NVQOS_TENANT_F_SET_PRIORITY);
  EXPECT_EQ(d->qos.classid[NVQOS_ROLE_INITIATOR], st.qos.units[0].classid_for(NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(plan_htb(st.qos, 200'000'000).size(), 3u);  // root, the unit's leaf, default
}

TEST(QosUnenforced, ReasonNamesTheForcedMechanism) {
  DesiredState st = compile_policy(parse_policy(kClasses));
  auto forced = unenforced_limits(st.qos, true, false, "links[].egress_mechanism is \"htb\"");
  ASSERT_EQ(forced.size(), 1u);
  EXPECT_EQ(forced[0].reason, "links[].egress_mechanism is \"htb\"");
  EXPECT_EQ(unenforced_limits(st.qos, true, false)[0].reason, kNoSchFqReason);
}

TEST(QosBurstBalance, IoCreditFromTheLimiterClock) {
  nvqos_limiter_config config{};
  config.limit[NVQOS_LIMIT_READ_IOPS] = {1000, 10};  // 1 ms a command, 10 commands of credit
  config.limit[NVQOS_LIMIT_WRITE_IOPS] = {500, 50};
  nvqos_limiter_state state{};
  const std::uint64_t now = 5'000'000'000;
  state.next_ns[NVQOS_LIMIT_READ_IOPS] = now - 4'000'000;   // 4 commands earned
  state.next_ns[NVQOS_LIMIT_WRITE_IOPS] = now - 40'000'000;  // 20 earned
  EXPECT_EQ(burst_balance(config, state, now, NVQOS_LIMIT_IOPS, NVQOS_LIMIT_WRITE_IOPS), 4u);  // the smallest
  state.next_ns[NVQOS_LIMIT_READ_IOPS] = 0;  // idle since boot: reads capped at their burst of 10
  EXPECT_EQ(burst_balance(config, state, now, NVQOS_LIMIT_IOPS, NVQOS_LIMIT_WRITE_IOPS), 10u);
  state.target_iops_next_ns[NVQOS_LIMIT_READ_IOPS - NVQOS_LIMIT_IOPS] = now - 2'000'000;  // the target's clock binds
  EXPECT_EQ(burst_balance(config, state, now, NVQOS_LIMIT_IOPS, NVQOS_LIMIT_WRITE_IOPS), 2u);
  state.next_ns[NVQOS_LIMIT_WRITE_IOPS] = now + 3'000'000;  // in debt: commands are being delayed
  EXPECT_EQ(burst_balance(config, state, now, NVQOS_LIMIT_IOPS, NVQOS_LIMIT_WRITE_IOPS), 0u);
  // Kinds without a rate do not count; none at all: no balance.
  EXPECT_EQ(burst_balance(config, state, now, NVQOS_LIMIT_EGRESS_BYTES, NVQOS_LIMIT_WRITE_BYTES), std::nullopt);
  // An hour idle at 10^8/s does not overflow.
  config.limit[NVQOS_LIMIT_EGRESS_BYTES] = {100'000'000, 1'000'000};
  EXPECT_EQ(burst_balance(config, state, 3600ull * 1'000'000'000, NVQOS_LIMIT_EGRESS_BYTES, NVQOS_LIMIT_EGRESS_BYTES),
            1'000'000u);
}

}  // namespace
}  // namespace nvqos::agent
