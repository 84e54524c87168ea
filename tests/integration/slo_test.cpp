// The SLO controller end to end: nvqos-target in one namespace, a gold and a
// bronze nvqos-load job from another, nvqos-agent on the target's side where
// read data leaves. Gold's objective is unreachable on purpose (p99 read <= 1 us),
// so the controller must cut bronze to its floor in the kernel (HTB ceil, checked
// with tc; its static IOPS ceiling in the limiter, read from the pinned map),
// show it in /metrics, the log and `nvqosctl slo`, and give the link back once
// gold's load stops. In dry run it reports the same and changes nothing.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agent_lab.hpp"
#include "nvqos/abi.h"

namespace nvqos::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMetricsPort = 9468;
const char* kGoldTarget = "10.203.0.1";
const char* kBronzeTarget = "10.203.0.11";
const char* kGoldHost = "10.203.0.2";
const char* kBronzeHost = "10.203.0.3";
const char* kSubnqn = "nqn.2026-11.io.nvqos:slo-test";
constexpr double kLinkBps = 1e9;
constexpr double kBronzeFloorBps = 0.1 * kLinkBps;
// Far above what bronze sends, so only the controller's cut (to the same 10% share) makes it a limit.
constexpr std::uint64_t kBronzeIops = 50000;

bool near(double got, double want) { return std::abs(got - want) <= 1e-6 * want; }

class SloTest : public AgentLabTest {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, BPF, qdiscs)";
    lab_.emplace(LabSpec{"slo", {std::string(kGoldTarget) + "/24", std::string(kBronzeTarget) + "/24"},
                         {std::string(kGoldHost) + "/24", std::string(kBronzeHost) + "/24"}});
    lab_->route_from(kGoldTarget, kGoldHost);
    lab_->route_from(kBronzeTarget, kBronzeHost);
    bpffs_.emplace(lab_->dir() / "bpf");
    target_proc_ = start_target(target(), {std::string(kGoldTarget) + ":4420", std::string(kBronzeTarget) + ":4420"},
                                kSubnqn, "1G:4096", lab_->path("target.log"));
  }

  void TearDown() override {
    load_.reset();
    AgentLabTest::TearDown();
    target_proc_.reset();
  }

  void start_agent(bool dry_run) {
    const std::string config = lab_->write_file("policy.json", nlohmann::json{
        {"links", {{{"interface", target_if()}, {"capacity_mbit_s", kLinkBps / 1e6}}}},
        {"slo_controller", {{"interval_ms", 200}, {"dry_run", dry_run}}},
        {"classes",
         {{{"name", "gold"},
           {"priority", 0},
           {"objectives", {{{"op", "read"}, {"quantile", 0.99}, {"max_latency_us", 1}}}}},
          {{"name", "bronze"},
           {"priority", 7},
           {"ceiling_iops", kBronzeIops},
           {"slo", {{"min_share", kBronzeFloorBps / kLinkBps}}}}}},
        {"tenants",
         {{{"name", "gold"}, {"class", "gold"}, {"match", {{{"remote", std::string(kGoldHost) + "/32"}}}}},
          {{"name", "bronze"}, {"class", "bronze"}, {"match", {{{"remote", std::string(kBronzeHost) + "/32"}}}}}}}}
                                    .dump());
    AgentSpec spec(target().name(), target_if(), kMetricsPort);
    spec.config = config;
    spec.telemetry_interval = "200ms";
    spec.admin_socket = lab_->path("agent.sock");
    spec.pin_dir = pin_root();
    AgentLabTest::start_agent(spec, 15s);
  }

  // Gold QD1 4 KiB random reads and bronze QD16 128 KiB reads, in the background.
  void start_load(const std::string& runtime) {
    const std::string jobs = lab_->write_file("jobs.json", nlohmann::json{
        {"jobs",
         {{{"name", "gold"}, {"target", std::string(kGoldTarget) + ":4420"}, {"subnqn", kSubnqn},
           {"rw", "randread"}, {"bs", "4k"}, {"qd", 1}, {"runtime", runtime}},
          {{"name", "bronze"}, {"target", std::string(kBronzeTarget) + ":4420"}, {"subnqn", kSubnqn},
           {"rw", "read"}, {"bs", "128k"}, {"qd", 16}, {"runtime", runtime}, {"offset", "512m"},
           {"size", "512m"}}}}}
                                  .dump());
    load_ = nvqos::test::start_load(initiator(), {"--job-file", jobs}, lab_->path("load.log"));
  }

  double effective_bronze() {
    return metric_value(metrics(), "nvqos_class_effective_ceiling_bits_per_second",
                        {{"interface", target_if()}, {"class", "bronze"}})
        .value_or(-1);
  }
  std::string tc_classes() {
    std::string out;
    run(target().exec() + "tc class show dev " + target_if(), &out);
    return out;
  }
  std::string log() { return agent_->log(); }
  std::string pin_root() const { return (lab_->dir() / "bpf" / "nvqos").string(); }
  // The IOPS rates of the limiters in force (bronze's is the only one), from the pinned map.
  std::vector<std::uint64_t> limiter_iops() {
    std::string out;
    if (run("bpftool -j map dump pinned " + pin_root() + "/" + target_if() + "/limiter_config", &out) != 0) return {};
    const auto dump = nlohmann::json::parse(out, nullptr, false);
    if (!dump.is_array()) return {};
    std::vector<std::uint64_t> rates;
    for (const auto& entry : dump)  // "formatted": the value as its BTF type says
      if (const auto rate = entry.at("formatted").at("value").at("limit").at(NVQOS_LIMIT_IOPS).at("per_sec").get<std::uint64_t>())
        rates.push_back(rate);
    return rates;
  }

  std::optional<BpffsMount> bpffs_;
  std::unique_ptr<ChildProcess> target_proc_, load_;
};

TEST_F(SloTest, AnObjectiveAtRiskCutsLowerClassesToTheirFloorInTheKernelAndGoldStoppingGivesTheLinkBack) {
  start_agent(false);
  EXPECT_EQ(metric_value(metrics(), "nvqos_slo_controller_info", {{"mode", "on"}}), 1.0);
  EXPECT_TRUE(near(effective_bronze(), kLinkBps)) << effective_bronze();
  EXPECT_EQ(metric_value(metrics(), "nvqos_slo_objective_seconds",
                         {{"class", "gold"}, {"op", "read"}, {"quantile", "0.99"}}),
            1e-6);

  start_load("6s");
  ASSERT_TRUE(wait_until([&] { return near(effective_bronze(), kBronzeFloorBps); }, 5s))
      << "bronze's effective ceiling: " << effective_bronze() << "\n" << log();
  const std::string classes = tc_classes();
  EXPECT_NE(classes.find("ceil 100Mbit"), std::string::npos) << "the HTB class of bronze holds the floor:\n" << classes;
  const std::vector<std::uint64_t> cut_iops{static_cast<std::uint64_t>(kBronzeIops * kBronzeFloorBps / kLinkBps)};
  EXPECT_TRUE(wait_until([&] { return limiter_iops() == cut_iops; }, 2s))
      << "bronze's IOPS ceiling in the kernel: " << testing::PrintToString(limiter_iops());
  EXPECT_EQ(metric_value(metrics(), "nvqos_slo_compliance_ratio", {{"class", "gold"}, {"op", "read"}, {"quantile", "0.99"}}),
            0.0);

  // Bronze's wire rate while cut: within its 100 Mbit/s ceiling (plus HTB's burst).
  auto bronze_bytes = [&] {
    return metric_value(metrics(), "nvqos_tenant_bytes_total",
                        {{"interface", target_if()}, {"tenant", "bronze"}, {"direction", "egress"}})
        .value_or(0);
  };
  const double b0 = bronze_bytes();
  std::this_thread::sleep_for(2s);
  const double bronze_bps = (bronze_bytes() - b0) * 8 / 2;
  std::printf("[ figures  ] bronze at its floor: %.1f Mbit/s on the wire\n", bronze_bps / 1e6);
  EXPECT_LT(bronze_bps, 1.15 * kBronzeFloorBps);
  EXPECT_GT(bronze_bps, 0.5 * kBronzeFloorBps) << "bronze still runs at its floor";

  std::string ctl;
  int rc = -1;
  ctl = agent_->nvqosctl("slo", &rc);
  EXPECT_EQ(rc, 0) << ctl;
  EXPECT_NE(ctl.find("SLO controller: on"), std::string::npos) << ctl;
  EXPECT_NE(ctl.find("gold read p99"), std::string::npos) << ctl;
  EXPECT_NE(ctl.find("100.0"), std::string::npos) << ctl;
  // Nothing is left to cut and 1 µs is still missed: said in the table, the metric and the log.
  EXPECT_NE(ctl.find("at_risk*"), std::string::npos) << ctl;
  EXPECT_NE(ctl.find("missed with every lower class at its floor"), std::string::npos) << ctl;
  EXPECT_GT(metric_value(metrics(), "nvqos_slo_windows_total",
                         {{"interface", target_if()}, {"class", "gold"}, {"outcome", "missed_at_floor"}})
                .value_or(0),
            0.0)
      << metrics();
  EXPECT_NE(log().find("SLO: objective missed with every lower class at its floor"), std::string::npos) << log();

  // The load ends: gold is idle, bronze's ceiling returns to the link within 5 s.
  ASSERT_EQ(load_->wait(30s), 0) << read_file(lab_->path("load.log"));
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return near(effective_bronze(), kLinkBps); }, 5s)) << effective_bronze();
  std::printf("[ figures  ] bronze's ceiling back at the link %.1f s after the load ended\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count());
  EXPECT_EQ(tc_classes().find("ceil 100Mbit"), std::string::npos) << tc_classes();
  EXPECT_EQ(limiter_iops(), std::vector<std::uint64_t>{kBronzeIops});
  const std::string text = log();
  EXPECT_NE(text.find("SLO: ceiling lowered"), std::string::npos) << text;
  EXPECT_NE(text.find("class=bronze"), std::string::npos) << text;
  EXPECT_NE(text.find("SLO: ceiling raised"), std::string::npos) << text;
}

TEST_F(SloTest, DryRunReportsTheCutAndChangesNothing) {
  start_agent(true);
  EXPECT_EQ(metric_value(metrics(), "nvqos_slo_controller_info", {{"mode", "dry_run"}}), 1.0);
  start_load("4s");
  ASSERT_TRUE(wait_until([&] { return near(effective_bronze(), kBronzeFloorBps); }, 5s))
      << effective_bronze() << "\n" << metrics() << log();
  EXPECT_EQ(tc_classes().find("ceil 100Mbit"), std::string::npos) << tc_classes();
  EXPECT_NE(log().find("outcome=dry_run"), std::string::npos) << log();
  load_->wait(30s);
}

}  // namespace
}  // namespace nvqos::test
