// The SLO controller's configuration and the agent-side glue that needs no
// kernel: classes as the controller sees them, observations from two
// readings of an interface's counters, effective ceilings in a DesiredState.
#include <gtest/gtest.h>

#include <string>

#include "config.hpp"
#include "config_refusal.hpp"
#include "policy.hpp"
#include "slo_loop.hpp"

namespace nvqos::agent {
namespace {

const char* kSlo = R"({
  "links": [{"interface": "eth0", "capacity_mbit_s": 1000}],
  "slo_controller": {"interval_ms": 200, "dry_run": true},
  "classes": [
    {"name": "gold", "priority": 0, "guaranteed_mbit_s": 100,
     "objectives": [{"op": "read", "quantile": 0.99, "max_latency_us": 500},
                    {"op": "write", "quantile": 0.999, "max_latency_us": 5000}]},
    {"name": "silver", "priority": 3, "ceiling_mbit_s": 600, "ceiling_iops": 10000, "slo": {"min_share": 0.2}},
    {"name": "bronze", "priority": 7, "scope": "aggregate", "guaranteed_mbit_s": 100},
    {"name": "batch", "priority": 7, "slo": {"enabled": false}}
  ],
  "default_class": "bronze",
  "tenants": [
    {"name": "g1", "class": "gold", "match": [{"remote": "10.0.0.1"}]},
    {"name": "s1", "class": "silver", "match": [{"remote": "10.0.1.1"}]},
    {"name": "s2", "class": "silver", "match": [{"remote": "10.0.1.2"}]},
    {"name": "b1", "match": [{"remote": "10.0.2.1"}]},
    {"name": "b2", "match": [{"remote": "10.0.2.2"}]}
  ]
})";

TEST(SloConfig, ParsesObjectivesClassOptionsAndTheControllerSection) {
  const Policy p = parse_policy(kSlo);
  EXPECT_TRUE(p.slo_controller.enabled);
  EXPECT_TRUE(p.slo_controller.dry_run);
  EXPECT_EQ(p.slo_controller.interval.count(), 200);
  const auto& gold = p.classes[0].slo;
  ASSERT_EQ(gold.objectives.size(), 2u);
  EXPECT_EQ(gold.objectives[0].op, NVQOS_CMD_OP_READ);
  EXPECT_DOUBLE_EQ(gold.objectives[0].quantile, 0.99);
  EXPECT_EQ(gold.objectives[0].max_latency_ns, 500'000u);
  EXPECT_EQ(gold.objectives[1].op, NVQOS_CMD_OP_WRITE);
  EXPECT_EQ(gold.objectives[1].max_latency_ns, 5'000'000u);
  EXPECT_DOUBLE_EQ(gold.min_share, 0.05);
  EXPECT_DOUBLE_EQ(p.classes[1].slo.min_share, 0.2);
  EXPECT_FALSE(p.classes[3].slo.enabled);

  const Policy d = parse_policy(R"({"classes": [{"name": "c"}]})");
  EXPECT_TRUE(d.slo_controller.enabled);
  EXPECT_FALSE(d.slo_controller.dry_run);
  EXPECT_EQ(d.slo_controller.interval.count(), 250);
  EXPECT_TRUE(d.classes[0].slo.objectives.empty());
}

TEST(SloConfig, RefusesBadObjectivesAndOptionsWithTheirPointer) {
  auto with_class = [](const std::string& extra) {
    return R"({"classes": [{"name": "gold", "priority": 0, )" + extra + "}]}";
  };
  expect_refused(with_class(R"("objectives": {"op": "read"})"), "/classes/0/objectives", "must be a list");
  expect_refused(with_class(R"("objectives": [{"op": "trim", "quantile": 0.99, "max_latency_us": 500}])"),
                 "/classes/0/objectives/0/op", "\"trim\" is not an op");
  expect_refused(with_class(R"("objectives": [{"op": "read", "max_latency_us": 500}])"),
                 "/classes/0/objectives/0/quantile", "required");
  expect_refused(with_class(R"("objectives": [{"op": "read", "quantile": 99, "max_latency_us": 500}])"),
                 "/classes/0/objectives/0/quantile", "up to (not including) 1");
  expect_refused(with_class(R"("objectives": [{"op": "read", "quantile": 0.99, "max_latency_us": 0}])"),
                 "/classes/0/objectives/0/max_latency_us", "from 1 to");
  expect_refused(with_class(R"("objectives": [{"op": "read", "quantile": 0.99, "max_latency_ms": 1}])"),
                 "/classes/0/objectives/0/max_latency_ms", "unknown field");
  expect_refused(with_class(R"("objectives": [{"op": "read", "quantile": 0.99, "max_latency_us": 500},
                                               {"op": "read", "quantile": 0.99, "max_latency_us": 900}])"),
                 "/classes/0/objectives/1", "same op and quantile");
  expect_refused(with_class(R"("slo": {"min_share": 10})"), "/classes/0/slo/min_share", "from 0 to 1");
  expect_refused(with_class(R"("slo": {"enabled": "no"})"), "/classes/0/slo/enabled", "true or false");
  expect_refused(with_class(R"("slo": {"protect": true})"), "/classes/0/slo/protect", "unknown field");
  expect_refused(R"({"slo_controller": {"interval_ms": 5}})", "/slo_controller/interval_ms", "from 50 to 10000");
  expect_refused(R"({"slo_controller": {"interval_ms": 250.5}})", "/slo_controller/interval_ms", "whole number");
  expect_refused(R"({"slo_controller": {"dryrun": true}})", "/slo_controller/dryrun", "unknown field");
}

TEST(SloLoop, ClassesGetTheirFloorFromGuaranteeOrMinimumShareAndTheirMaxFromTheStaticCeiling) {
  const auto classes = slo_classes(parse_policy(kSlo), 1'000'000'000);
  ASSERT_EQ(classes.size(), 4u);
  EXPECT_EQ(classes[0].objectives.size(), 2u);
  EXPECT_DOUBLE_EQ(classes[0].objectives[0].max_latency_seconds, 500e-6);
  EXPECT_DOUBLE_EQ(classes[1].max_bps, 600e6);     // static ceiling
  EXPECT_DOUBLE_EQ(classes[1].floor_bps, 200e6);   // 20% of the link
  EXPECT_DOUBLE_EQ(classes[1].max_iops, 10000);
  EXPECT_DOUBLE_EQ(classes[1].floor_iops, 2000);
  EXPECT_DOUBLE_EQ(classes[2].max_bps, 1e9);       // no ceiling: the link
  EXPECT_DOUBLE_EQ(classes[2].floor_bps, 100e6);   // guarantee above 5% of the link
  EXPECT_DOUBLE_EQ(classes[2].max_iops, 0);        // no IOPS ceiling: not adapted
  EXPECT_FALSE(classes[3].enabled);
}

CommandCounters command(const std::string& tenant, std::uint8_t op, std::uint8_t role, std::uint64_t ns,
                        std::uint64_t n) {
  CommandCounters c;
  c.tenant = tenant;
  c.key.op = op;
  c.key.role = role;
  c.stats.completed = n;
  c.latency.assign(NVQOS_CMD_HIST_BUCKETS, 0);
  c.latency[nvqos_hist_index(ns, NVQOS_HIST_KERNEL_SUB_BITS)] = n;
  return c;
}

TenantCounters tenant(const std::string& name, std::uint64_t egress_bytes) {
  TenantCounters t;
  t.name = name;
  t.stats.bytes[NVQOS_DIR_EGRESS] = egress_bytes;
  return t;
}

TEST(SloLoop, ObservationsAreDeltasByClass) {
  const Policy p = parse_policy(kSlo);
  using namespace std::chrono_literals;
  const auto t0 = std::chrono::steady_clock::time_point{} + 1s;
  InterfaceCounters a, b;
  a.tenants = {tenant("g1", 0), tenant("s1", 1000), tenant("s2", 0), tenant("b1", 0), tenant("b2", 0)};
  a.commands = {command("g1", NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR, 100'000, 50)};
  b.tenants = {tenant("g1", 0), tenant("s1", 1000 + 25'000'000), tenant("s2", 12'500'000), tenant("b1", 10'000'000),
               tenant("b2", 5'000'000)};
  // 20 more reads at 100 us as initiator, 30 at 1 ms as target: roles are summed.
  b.commands = {command("g1", NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR, 100'000, 70),
                command("g1", NVQOS_CMD_OP_READ, NVQOS_ROLE_TARGET, 1'000'000, 30)};
  const SloObservation obs = slo_observation(slo_reading(a, t0), slo_reading(b, t0 + 500ms), p);

  ASSERT_EQ(obs.latency.size(), 1u);
  const LogLinearHistogram& gold = obs.latency.at({"gold", NVQOS_CMD_OP_READ});
  EXPECT_EQ(gold.count(), 50u);
  EXPECT_NEAR(static_cast<double>(gold.quantile(0.99)), 1e6, 0.02e6);
  EXPECT_NEAR(static_cast<double>(gold.quantile(0.3)), 1e5, 0.002e6);
  // Per-tenant class: the busiest tenant's rate (25 MB in 0.5 s); aggregate: the sum.
  EXPECT_DOUBLE_EQ(obs.load.at("silver").bytes_per_second, 50e6);
  EXPECT_DOUBLE_EQ(obs.load.at("bronze").bytes_per_second, 30e6);
  EXPECT_DOUBLE_EQ(obs.load.at("gold").iops, 100);  // 50 completions in 0.5 s

  // Counters that went backwards (maps recreated) count from zero.
  const SloObservation again = slo_observation(slo_reading(b, t0 + 500ms), slo_reading(a, t0 + 1000ms), p);
  EXPECT_EQ(again.latency.at({"gold", NVQOS_CMD_OP_READ}).count(), 50u);
  EXPECT_DOUBLE_EQ(again.load.at("silver").bytes_per_second, 2000);
}

TEST(SloLoop, EffectiveCeilingsReplaceTheStaticOnesOfTheirClassOnly) {
  const Policy p = parse_policy(kSlo);
  const DesiredState state = compile_policy(p);
  const DesiredState eff = with_effective_ceilings(state, {{"silver", {300e6, 4000}}, {"bronze", {50e6, 0}}});
  ASSERT_EQ(eff.qos.units.size(), state.qos.units.size());
  int silver = 0, bronze = 0;
  for (std::size_t i = 0; i < eff.qos.units.size(); ++i) {
    const ShapingUnit& before = state.qos.units[i];
    const ShapingUnit& after = eff.qos.units[i];
    if (after.class_name == "silver") {
      ++silver;
      EXPECT_EQ(before.ceiling_bps, 600'000'000u);
      EXPECT_EQ(after.ceiling_bps, 300'000'000u);
    } else if (after.class_name == "bronze") {
      ++bronze;
      EXPECT_EQ(after.ceiling_bps, 100'000'000u) << "never below the guarantee";
    } else {
      EXPECT_EQ(after, before);
    }
  }
  EXPECT_EQ(silver, 2);  // per tenant
  EXPECT_EQ(bronze, 1);  // aggregate
  bool silver_limiter = false;
  for (const auto& t : eff.tenants)
    if (t.class_name == "silver" && t.qos.limiter_id != NVQOS_LIMITER_NONE) {
      const auto& l = eff.qos.limiters.at(t.qos.limiter_id);
      EXPECT_EQ(l.limit[NVQOS_LIMIT_IOPS].per_sec, 4000u);
      EXPECT_EQ(l.limit[NVQOS_LIMIT_EGRESS_BYTES].per_sec, 300'000'000u / 8);
      silver_limiter = true;
    }
  EXPECT_TRUE(silver_limiter);
}

}  // namespace
}  // namespace nvqos::agent
