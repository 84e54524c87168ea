// NVMe command timing end to end: nvqos-target in one namespace, two tenants'
// nvqos-load jobs in another, nvqos-agent on one side; the agent's per-tenant
// command counts and window quantiles are compared with what nvqos-load (on the
// initiator side) or nvqos-target (on the target side) measured itself for the
// same run with its wire clock (--latency-clock wire: kernel TX stamps, RX stamps
// from a packet tap).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agent_lab.hpp"

namespace nvqos::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMetricsPort = 9467;
const char* kGoldTarget = "10.202.0.1";
const char* kBronzeTarget = "10.202.0.11";
const char* kGoldHost = "10.202.0.2";
const char* kBronzeHost = "10.202.0.3";
const char* kSubnqn = "nqn.2026-11.io.nvqos:cmd-test";
// Each tenant's host NQN, so the target's service-time report names the tenant.
std::string host_nqn(const std::string& tenant) { return "nqn.2026-11.io.nvqos:host-" + tenant; }

// The issue's agreement bound: 5% or 20 us, whichever is larger.
bool agrees(double agent_us, double load_us) {
  return std::abs(agent_us - load_us) <= std::max(0.05 * load_us, 20.0);
}

class NvmeCommandsTest : public AgentLabTest {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, BPF)";
    lab_.emplace(LabSpec{"cmd", {std::string(kGoldTarget) + "/24", std::string(kBronzeTarget) + "/24"},
                         {std::string(kGoldHost) + "/24", std::string(kBronzeHost) + "/24"}});
    // Each tenant's connection leaves from its own address.
    lab_->route_from(kGoldTarget, kGoldHost);
    lab_->route_from(kBronzeTarget, kBronzeHost);
    lab_->receive_each_flow_on_one_cpu(true, true);
    target_proc_ = start_target(target(), {std::string(kGoldTarget) + ":4420", std::string(kBronzeTarget) + ":4420"},
                                kSubnqn, "1G:4096", lab_->path("target.log"));
  }

  // Link shaping of a torture run: MTU on both ends, GRO on both ends.
  void shape_link(int mtu, bool gro) {
    for (const auto& [ns, ifname] : {std::pair{&target(), target_if()},
                                     std::pair{&initiator(), initiator_if()}}) {
      must(ns->exec() + "ip link set dev " + ifname + " mtu " + std::to_string(mtu));
      if (run(ns->exec() + "ethtool -K " + ifname + " gro " + (gro ? "on" : "off") + " >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "ethtool cannot switch GRO on " << ifname;
    }
  }

  void start_initiator_agent() {
    start_agent(initiator(), initiator_if(),
                std::string(R"({"version": 1, "tenants": [)") + R"({"name": "gold", "match": [{"remote": ")" +
                    kGoldTarget + R"(/32"}]}, {"name": "bronze", "match": [{"remote": ")" + kBronzeTarget +
                    R"(/32"}]}]})");
  }

  void start_agent(const Netns& ns, const std::string& ifname, const std::string& policy) {
    AgentSpec spec(ns.name(), ifname, kMetricsPort);
    spec.config = lab_->write_file("policy.json", policy);
    spec.telemetry_interval = "200ms";
    spec.admin_socket = lab_->path("agent.sock");
    AgentLabTest::start_agent(spec, 15s);
  }

  // Two jobs at once: gold QD1 4 KiB random reads, bronze QD16 128 KiB reads and writes,
  // timed by nvqos-load's `clock`.
  nlohmann::json run_load(const std::string& runtime, const std::string& bronze_bs = "128k",
                          const std::string& clock = "wire") {
    const std::string jobs = lab_->write_file(
        "jobs.json",
        nlohmann::json{{"jobs",
                        {{{"name", "gold"}, {"target", std::string(kGoldTarget) + ":4420"}, {"subnqn", kSubnqn},
                          {"rw", "randread"}, {"bs", "4k"}, {"qd", 1}, {"runtime", runtime},
                          {"latency-clock", clock}, {"hostnqn", host_nqn("gold")}},
                         {{"name", "bronze"}, {"target", std::string(kBronzeTarget) + ":4420"}, {"subnqn", kSubnqn},
                          {"rw", "randrw"}, {"bs", bronze_bs}, {"qd", 16}, {"runtime", runtime}, {"offset", "512m"},
                          {"size", "512m"}, {"latency-clock", clock}, {"hostnqn", host_nqn("bronze")}}}}}
            .dump());
    const LoadResult load = nvqos::test::run_load(initiator(), {"--job-file", jobs}, lab_->path("load.json"), 120s);
    EXPECT_EQ(load.status, 0) << load.output;
    EXPECT_FALSE(load.report.is_discarded()) << load.output;
    return load.report;
  }

  // nvqos-target again, with its wire clock and service-time report.
  void restart_target_with_report() {
    target_proc_.reset();
    target_proc_ = start_target(target(), {std::string(kGoldTarget) + ":4420", std::string(kBronzeTarget) + ":4420"},
                                kSubnqn, "1G:4096", lab_->path("target.log"),
                                {"--latency-clock", "wire", "--report", lab_->path("target-report.json")});
  }

  // The target's service-time report, written when it exits.
  nlohmann::json target_report() {
    target_proc_->signal(SIGTERM);
    EXPECT_TRUE(target_proc_->wait(10s)) << "nvqos-target did not exit";
    return nlohmann::json::parse(read_file(lab_->path("target-report.json")));
  }

  // Compares the agent's view with the tools' own for every job and op nvqos-load ran: on the
  // initiator side nvqos-load's latency, on the target side nvqos-target's service time, both
  // by the wire clock (TX stamp of the header; RX at the packet that carried it, which TCP's
  // receive-queue coalescing cannot move). Counts exact; p50/p99/p99.9 within 5% or 20 us for
  // every tenant and op. Torture runs (`strict` false, kernel clock) only bound the agent by the
  // app clock, which encloses every wire event: there the stamped clocks' tails move both ways
  // (a capsule retransmitted after a drop is stamped at its first transmission; a write's p99.9
  // once read 11% below the agent's).
  void expect_agreement(const nlohmann::json& load, const char* role, bool strict = true) {
    std::this_thread::sleep_for(600ms);  // a telemetry interval after the last completion
    const std::string text = metrics();
    const bool target_side = std::string(role) == "target";
    const nlohmann::json service = target_side ? target_report() : nlohmann::json();
    const std::string clock = strict ? "wire" : "kernel";
    if (target_side) ASSERT_EQ(service.at("latency_clock"), clock);
    EXPECT_EQ(metric_value(text, "nvqos_nvme_desync_total", {}), 0.0) << "PDUs were lost: counts cannot be exact";
    for (const auto& job : load.at("jobs")) {
      const std::string tenant = job.at("name");
      ASSERT_EQ(job.at("latency_clock"), clock);
      if (strict)
        std::printf("[ figures  ] %s %s tap %s\n", role, tenant.c_str(),
                    (target_side ? service : job).at("wire_tap").dump().c_str());
      for (const auto& [op, v] : job.at("ops").items()) {
        SCOPED_TRACE(tenant + " " + op);
        const nlohmann::json& own = target_side ? service.at("hosts").at(host_nqn(tenant)).at("ops").at(op) : v;
        const std::map<std::string, std::string> labels{{"tenant", tenant}, {"op", op}, {"role", role}};
        const auto count = metric_value(text, "nvqos_nvme_commands_total", labels);
        ASSERT_TRUE(count) << text;
        EXPECT_EQ(*count, v.at("ios").get<double>()) << "desync: "
                                                     << metric_value(text, "nvqos_nvme_desync_total", {}).value_or(-1);
        EXPECT_EQ(own.at("ios"), v.at("ios"));
        // A command without both stamps is counted, never given a time: a TX stamp goes missing
        // under receive-memory pressure (a full receive queue drops error-queue stamps), an RX
        // stamp of the tap when its ring overflowed; a few per thousand on this busy host.
        const nlohmann::json& counts = own.at(clock + "_clock");
        EXPECT_GE(counts.at("timed").get<double>(), 0.99 * own.at("ios").get<double>()) << counts.dump();
        std::printf("[ figures  ] %s %s %s: %s commands, %s clock %s, kernel clock %s\n", role, tenant.c_str(),
                    op.c_str(), own.at("ios").dump().c_str(), clock.c_str(), counts.dump().c_str(),
                    own.at("kernel_clock").dump().c_str());
        const std::pair<const char*, const char*> quantiles[] = {{"0.5", "p50"}, {"0.99", "p99"}, {"0.999", "p99.9"}};
        for (const auto& [q, name] : quantiles) {
          auto l = labels;
          l["quantile"] = q;
          const auto agent_s = metric_value(text, "nvqos_nvme_command_latency_quantile_seconds", l);
          ASSERT_TRUE(agent_s) << q;
          const double agent_us = *agent_s * 1e6;
          const double tool_us = own.at("latency_us").at(name).get<double>();
          const double kernel_us = own.at("kernel_latency_us").at(name).get<double>();
          const double app_us = own.at("app_latency_us").at(name).get<double>();
          if (strict)
            EXPECT_TRUE(agrees(agent_us, tool_us))
                << name << ": agent " << agent_us << " us, " << (target_side ? "nvqos-target" : "nvqos-load")
                << " wire clock " << tool_us << " us";
          else
            EXPECT_LE(agent_us, app_us * 1.035 + 20.0) << name;
          std::printf("[ figures  ] %s %s %s %s: agent %.1f us, %s %s clock %.1f us (%s 5%%/20 us), kernel clock "
                      "%.1f us, app clock %.1f us\n",
                      role, tenant.c_str(), op.c_str(), name, agent_us, target_side ? "target" : "load", clock.c_str(),
                      tool_us, agrees(agent_us, tool_us) ? "within" : "NOT within", kernel_us, app_us);
        }
      }
    }
  }

  std::unique_ptr<ChildProcess> target_proc_;
};

TEST_F(NvmeCommandsTest, InitiatorSideAgreesWithTheLoadGenerator) {
  start_initiator_agent();
  const nlohmann::json load = run_load("4s");
  expect_agreement(load, "initiator");
}

TEST_F(NvmeCommandsTest, SlowCommandsOfATenantReachTheAgent) {
  // gold reports every command (threshold 1 us), bronze none: events name gold only.
  start_agent(initiator(), initiator_if(),
              std::string(R"({"version": 1, "tenants": [)") + R"({"name": "gold", "slow_command_threshold_us": 1, )" +
                  R"("match": [{"remote": ")" + kGoldTarget + R"(/32"}]}, {"name": "bronze", "match": [{"remote": ")" +
                  kBronzeTarget + R"(/32"}]}]})");
  run_load("2s");
  double received = 0;
  wait_until(
      [&] {
        received = metric_value(metrics(), "nvqos_nvme_slow_commands_received_total", {}).value_or(0);
        return received > 0;
      },
      5s);
  EXPECT_GT(received, 0);
  const std::string log = agent_->log();
  EXPECT_NE(log.find("msg=\"slow NVMe command\""), std::string::npos) << log;
  EXPECT_NE(log.find("tenant=gold"), std::string::npos);
  EXPECT_EQ(log.find("msg=\"slow NVMe command\" interface=" + initiator_if() + " tenant=bronze"), std::string::npos);
}

// Segmentation torture: MSS 536 (headers split across segments, many PDUs per frame),
// GRO off and on, 1 MiB reads and writes: every command still counted and timed.
class NvmeSegmentationTest : public NvmeCommandsTest, public ::testing::WithParamInterface<bool> {};

TEST_P(NvmeSegmentationTest, TinyMssAndOneMebibyteIosCountExactly) {
  shape_link(576, GetParam());
  if (IsSkipped()) return;
  start_initiator_agent();
  const nlohmann::json load = run_load("3s", "1m", "kernel");
  expect_agreement(load, "initiator", false);
}

INSTANTIATE_TEST_SUITE_P(Gro, NvmeSegmentationTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "gro_on" : "gro_off"; });

// Drops by a TBF on the target's side: lost and retransmitted segments make the walk lose
// PDUs. It must say so (desync) and time fewer commands, never a wrong pairing: no sample
// beyond the slowest command nvqos-load saw (by its app clock, which includes every command).
TEST_F(NvmeCommandsTest, DropsDesyncButNeverMisattribute) {
  must(target().exec() + "tc qdisc add dev " + target_if() + " root tbf rate 300mbit burst 16k latency 2ms");
  start_initiator_agent();
  const nlohmann::json load = run_load("3s", "1m", "app");
  std::this_thread::sleep_for(600ms);
  const std::string text = metrics();
  EXPECT_GT(metric_value(text, "nvqos_nvme_desync_total", {}).value_or(0), 0) << "the TBF dropped nothing?";
  for (const auto& job : load.at("jobs")) {
    const std::string tenant = job.at("name");
    for (const auto& [op, v] : job.at("ops").items()) {
      SCOPED_TRACE(tenant + " " + op);
      const std::map<std::string, std::string> labels{{"tenant", tenant}, {"op", op}, {"role", "initiator"}};
      EXPECT_LE(metric_value(text, "nvqos_nvme_commands_total", labels).value_or(0), v.at("ios").get<double>());
      auto l = labels;
      l["quantile"] = "0.999";
      const auto p999 = metric_value(text, "nvqos_nvme_command_latency_quantile_seconds", l);
      if (p999) {
        EXPECT_LE(*p999 * 1e6, v.at("latency_us").at("max").get<double>() * 1.035 + 20.0);
      }
    }
  }
}

// On the target the agent times the target's service (capsule in, completion out), the
// span nvqos-target's wire clock measures: counts exact, quantiles within 5% / 20 us.
TEST_F(NvmeCommandsTest, TargetSideAgreesWithTheTargetsServiceTime) {
  restart_target_with_report();
  start_agent(target(), target_if(),
              std::string(R"({"version": 1, "tenants": [)") + R"({"name": "gold", "match": [{"remote": ")" +
                  kGoldHost + R"(/32"}]}, {"name": "bronze", "match": [{"remote": ")" + kBronzeHost +
                  R"(/32"}]}]})");
  const nlohmann::json load = run_load("3s");
  expect_agreement(load, "target");
}

}  // namespace
}  // namespace nvqos::test
