// Temporary class overrides (agent/class_override.hpp): what is refused and
// why, what the data path gets, expiry, and what a reload keeps; the class
// usage rates and override metrics of /v1/classes and /metrics.
#include <gtest/gtest.h>

#include "admin_classes.hpp"
#include "class_override.hpp"
#include "metrics.hpp"
#include "policy.hpp"

namespace nvqos::agent {
namespace {

using namespace std::chrono_literals;

Policy three_classes() {
  return parse_policy(R"({"nvme_ports": {"io": [4420, 4421, 4422]},
    "links": [{"interface": "eth0", "capacity_mbit_s": 1000}],
    "classes": [{"name": "gold", "priority": 0, "guaranteed_mbit_s": 200, "ceiling_mbit_s": 800, "dscp": 46},
                {"name": "silver", "priority": 3, "ceiling_mbit_s": 400},
                {"name": "bronze", "priority": 6, "scope": "aggregate", "ceiling_mbit_s": 100}],
    "default_class": "bronze",
    "tenants": [{"name": "a", "class": "gold", "match": [{"port": 4420}]},
                {"name": "b", "match": [{"port": 4421}]},
                {"name": "c", "class": "silver", "match": [{"port": 4422}]}]})");
}

const std::chrono::steady_clock::time_point kNow{std::chrono::hours(1000)};
const std::chrono::system_clock::time_point kWall{std::chrono::seconds(1'800'000'000)};

ClassOverride make(const Policy& p, const std::string& tenant, const std::string& cls,
                   std::optional<std::chrono::seconds> ttl = std::nullopt) {
  EXPECT_TRUE(ClassOverrides::check(p, tenant, cls, ttl).ok());
  return ClassOverrides::make(p, tenant, cls, ttl, kWall, kNow);
}

TEST(ClassOverride, UnknownTenantClassOrTtlIsRefusedNamingWhat) {
  const Policy p = three_classes();
  auto tenant = ClassOverrides::check(p, "nosuch", "gold", std::nullopt);
  ASSERT_FALSE(tenant.ok());
  EXPECT_EQ(tenant.error().code, ENOENT);
  EXPECT_NE(tenant.error().message.find("unknown tenant \"nosuch\""), std::string::npos) << tenant.error().message;
  auto cls = ClassOverrides::check(p, "a", "platinum", std::nullopt);
  ASSERT_FALSE(cls.ok());
  EXPECT_EQ(cls.error().code, EINVAL);
  EXPECT_NE(cls.error().message.find("unknown class \"platinum\" (configured classes: gold, silver, bronze)"),
            std::string::npos)
      << cls.error().message;
  for (auto ttl : {0s, -5s, kMaxClassOverrideTtl + 1s}) {
    auto s = ClassOverrides::check(p, "a", "bronze", ttl);
    ASSERT_FALSE(s.ok()) << ttl.count();
    EXPECT_NE(s.error().message.find("ttl_s " + std::to_string(ttl.count()) + " out of range"), std::string::npos);
  }
  EXPECT_TRUE(ClassOverrides::check(p, "a", "bronze", kMaxClassOverrideTtl).ok());
  EXPECT_TRUE(ClassOverrides::check(p, "default", "gold", 1s).ok());
  Policy no_default = p;
  no_default.default_tenant_enabled = false;
  EXPECT_EQ(ClassOverrides::check(no_default, "default", "gold", std::nullopt).error().code, ENOENT);
}

TEST(ClassOverride, MovesOnlyTheTenantInTheCompiledState) {
  const Policy p = three_classes();
  const DesiredState before = compile_policy(p);
  ClassOverrides o;
  o.set(make(p, "a", "bronze", 600s));
  EXPECT_EQ(o.find("a")->configured_class, "gold");
  const Policy applied = o.apply_to(p);
  EXPECT_EQ(p.class_of("a"), "gold") << "the configured policy is not changed";
  const DesiredState after = compile_policy(applied, before.tenant_ids);
  EXPECT_EQ(after.tenant_ids, before.tenant_ids);
  EXPECT_EQ(after.qos.tenant_class.at("a"), "bronze");
  const auto* a = after.tenant(after.tenant_ids.at("a"));
  const auto* b = after.tenant(after.tenant_ids.at("b"));
  // a joins bronze's aggregate: b's HTB leaf, no DSCP of gold.
  EXPECT_EQ(a->qos.classid[NVQOS_ROLE_INITIATOR], b->qos.classid[NVQOS_ROLE_INITIATOR]);
  EXPECT_FALSE(a->qos.flags & NVQOS_TENANT_F_MARK_DSCP);
  EXPECT_TRUE(before.tenant(before.tenant_ids.at("a"))->qos.flags & NVQOS_TENANT_F_MARK_DSCP);
  // Every other tenant keeps exactly what it had.
  for (const char* other : {"default", "b", "c"}) {
    const auto id = before.tenant_ids.at(other);
    EXPECT_EQ(after.tenant(id)->qos, before.tenant(id)->qos) << other;
  }
  // gold has no member left: its unit is gone, the guarantee with it.
  EXPECT_EQ(after.qos.guaranteed_sum_bps, 0u);
}

TEST(ClassOverride, DefaultTenantMovesAloneNotTheTenantsWithoutAClass) {
  const Policy p = three_classes();
  ClassOverrides o;
  o.set(make(p, "default", "silver"));
  const Policy applied = o.apply_to(p);
  EXPECT_EQ(applied.class_of("default"), "silver");
  EXPECT_EQ(applied.class_of("b"), "bronze") << "b takes default_class, which did not change";
}

TEST(ClassOverride, ExpiresAtItsDeadlineAndNotBefore) {
  const Policy p = three_classes();
  ClassOverrides o;
  o.set(make(p, "a", "bronze", 600s));
  o.set(make(p, "c", "gold", 60s));
  o.set(make(p, "b", "silver"));  // no TTL: until cleared
  ASSERT_TRUE(o.next_deadline());
  EXPECT_EQ(*o.next_deadline(), kNow + 60s);
  EXPECT_EQ(*o.find("c")->expires_at, kWall + 60s);
  EXPECT_TRUE(o.take_expired(kNow + 59s).empty());
  auto gone = o.take_expired(kNow + 60s);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].tenant, "c");
  EXPECT_EQ(gone[0].configured_class, "silver");
  EXPECT_EQ(*o.next_deadline(), kNow + 600s);
  EXPECT_EQ(o.take_expired(kNow + 24h).size(), 1u);
  EXPECT_FALSE(o.next_deadline());
  ASSERT_NE(o.find("b"), nullptr) << "an override without TTL never expires";
  EXPECT_EQ(o.apply_to(p).class_of("c"), "silver") << "expired: back to the configured class";
  ASSERT_TRUE(o.clear("b"));
  EXPECT_FALSE(o.clear("b"));
  EXPECT_TRUE(o.empty());
}

TEST(ClassOverride, AReloadKeepsLiveOverridesAndEndsThoseItCannotHonour) {
  const Policy p = three_classes();
  ClassOverrides o;
  o.set(make(p, "a", "bronze", 600s));
  o.set(make(p, "b", "silver", 600s));
  o.set(make(p, "c", "gold"));
  // The new config drops tenant c and class silver, and gives b a class of its own.
  Policy next = parse_policy(R"({"nvme_ports": {"io": [4420, 4421]}, "links": [{"interface": "eth0", "capacity_mbit_s": 1000}],
    "classes": [{"name": "gold", "ceiling_mbit_s": 800}, {"name": "bronze", "ceiling_mbit_s": 100}],
    "tenants": [{"name": "a", "class": "gold", "match": [{"port": 4420}]},
                {"name": "b", "class": "bronze", "match": [{"port": 4421}]}]})");
  auto ended = o.prune(next);
  ASSERT_EQ(ended.size(), 2u);
  EXPECT_EQ(ended[0].first.tenant, "b");
  EXPECT_EQ(ended[0].second, "the class is no longer in the config");
  EXPECT_EQ(ended[1].first.tenant, "c");
  EXPECT_EQ(ended[1].second, "the tenant is no longer in the config");
  ASSERT_NE(o.find("a"), nullptr);
  EXPECT_EQ(o.find("a")->class_name, "bronze");
  EXPECT_EQ(o.find("a")->configured_class, "gold");
  EXPECT_EQ(*o.find("a")->deadline, kNow + 600s) << "a reload does not extend or shorten the TTL";
  EXPECT_EQ(o.apply_to(next).class_of("a"), "bronze");
  EXPECT_EQ(o.describe(), "a -> bronze");
}

Snapshot reading(double seconds, std::uint64_t a_egress, std::uint64_t b_egress, std::uint64_t a_reads,
                 const std::string& a_class = "gold") {
  Snapshot s;
  s.taken = std::chrono::system_clock::time_point(std::chrono::milliseconds(static_cast<long long>(seconds * 1000)));
  InterfaceCounters ifc;
  ifc.interface = "eth0";
  TenantCounters a, b;
  a.id = 1;
  a.name = "a";
  a.class_name = a_class;
  a.stats.bytes[NVQOS_DIR_EGRESS] = a_egress;
  a.stats.bytes[NVQOS_DIR_INGRESS] = a_egress / 10;
  b.id = 2;
  b.name = "b";
  b.class_name = "bronze";
  b.stats.bytes[NVQOS_DIR_EGRESS] = b_egress;
  ifc.tenants = {a, b};
  CommandCounters reads;
  reads.key = {1, NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR};
  reads.stats.completed = a_reads;
  CommandCounters writes;
  writes.key = {1, NVQOS_CMD_OP_WRITE, NVQOS_ROLE_INITIATOR};
  writes.stats.completed = a_reads / 2;
  ifc.commands = {reads, writes};
  s.interfaces.push_back(ifc);
  return s;
}

TEST(ClassUsage, RatesPerInterfaceAndClassOverTheSnapshotInterval) {
  auto u = class_usage(reading(10, 1'000'000, 500, 1000), reading(10.5, 3'500'000, 500 + 125'000, 2000));
  ASSERT_EQ(u.size(), 2u);
  const ClassUsage& gold = u.at({"eth0", "gold"});
  EXPECT_DOUBLE_EQ(gold.interval_seconds, 0.5);
  EXPECT_DOUBLE_EQ(gold.egress_bits_per_second, 2'500'000.0 * 8 / 0.5);
  EXPECT_DOUBLE_EQ(gold.ingress_bits_per_second, 250'000.0 * 8 / 0.5);
  EXPECT_DOUBLE_EQ(gold.read_iops, 2000);
  EXPECT_DOUBLE_EQ(gold.write_iops, 1000);
  EXPECT_DOUBLE_EQ(gold.iops, 3000);
  EXPECT_EQ(gold.busiest_tenant, "a");
  EXPECT_DOUBLE_EQ(u.at({"eth0", "bronze"}).egress_bits_per_second, 2'000'000);
}

TEST(ClassUsage, AMovedTenantCountsForItsNewClassAndResetsCountZero) {
  auto u = class_usage(reading(10, 1'000'000, 1'000'000, 100), reading(11, 2'000'000, 10, 100, "bronze"));
  EXPECT_FALSE(u.count({"eth0", "gold"}));
  const ClassUsage& bronze = u.at({"eth0", "bronze"});
  EXPECT_DOUBLE_EQ(bronze.egress_bits_per_second, 8'000'000) << "a's bytes; b's counter went backwards: 0";
  EXPECT_TRUE(class_usage(reading(10, 0, 0, 0), reading(10, 5, 5, 5)).empty()) << "no time between the readings";
}

TEST(ClassOverride, MetricsNameTheClassInForceTheConfiguredOneAndTheExpiry) {
  const Policy p = three_classes();
  Snapshot s;
  s.class_overrides = {make(p, "a", "bronze", 600s), make(p, "c", "gold")};
  const std::string text = render_metrics(s, AgentStatus{});
  EXPECT_NE(text.find("nvqos_tenant_class_override_info{tenant=\"a\",class=\"bronze\",configured_class=\"gold\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("nvqos_tenant_class_override_info{tenant=\"c\",class=\"gold\",configured_class=\"silver\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("nvqos_tenant_class_override_expiry_timestamp_seconds{tenant=\"a\"} 1800000600\n"),
            std::string::npos);
  EXPECT_EQ(text.find("nvqos_tenant_class_override_expiry_timestamp_seconds{tenant=\"c\"}"), std::string::npos);
}

}  // namespace
}  // namespace nvqos::agent
