// NVMe identity end to end: nvqos-target with several subsystems on one
// address in one namespace, nvqos-load in another, nvqos-agent on the target
// side. Tenants told apart only by SUBNQN; access control refusing a host
// before the target sees its Connect, by reset (the initiator fails at once)
// or by drop (in XDP: the initiator times out); dry run only counting.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent_lab.hpp"

namespace nvqos::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMetricsPort = 9468;
const char* kTarget = "10.203.0.1";
const char* kHost = "10.203.0.2";
const char* kSubA = "nqn.2026-11.io.nvqos:vol-a";
const char* kSubB = "nqn.2026-11.io.nvqos:vol-b";
const char* kLocked = "nqn.2026-11.io.nvqos:locked";
const char* kGoodHost = "nqn.2014-08.org.nvmexpress:uuid:0000000a-0000-4000-8000-00000000600d";
const char* kBadHost = "nqn.2014-08.org.nvmexpress:uuid:0000000b-0000-4000-8000-000000000bad";

// The value of the first sample whose line contains `needle`, or -1.
double sample(const std::string& metrics, const std::string& needle) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("#", 0) != 0 && line.find(needle) != std::string::npos)
      return std::stod(line.substr(line.rfind(' ') + 1));
  return -1;
}

class IdentityTest : public AgentLabTest {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, BPF)";
    lab_.emplace(LabSpec{"id", {std::string(kTarget) + "/24"}, {std::string(kHost) + "/24"}});
    lab_->receive_each_flow_on_one_cpu(true, false);
    nlohmann::json subsystems = nlohmann::json::array();
    for (const char* nqn : {kSubA, kSubB, kLocked})
      subsystems.push_back({{"nqn", nqn}, {"allow_any_host", true}, {"namespaces", {{{"size", "64M"}}}}});
    const std::string config = lab_->write_file(
        "target.json",
        nlohmann::json{{"listen", {std::string(kTarget) + ":4420"}}, {"subsystems", subsystems}}.dump());
    target_proc_ = std::make_unique<ChildProcess>(
        in_netns_argv(target().name(), {target_program(), "--config", config}), lab_->path("target.log"));
  }

  void start_agent(const std::string& policy) {
    AgentSpec spec(target().name(), target_if(), kMetricsPort);
    spec.config = lab_->write_file("policy.json", policy);
    spec.telemetry_interval = "200ms";
    spec.admin_socket = lab_->path("agent.sock");
    spec.pin_dir = "";
    AgentLabTest::start_agent(spec, 30s);
  }

  std::string metrics() const {
    std::this_thread::sleep_for(600ms);  // three telemetry intervals
    return agent_->metrics();
  }

  // Runs nvqos-load; returns its exit status and its JSON report (null if none).
  std::pair<int, nlohmann::json> load(const std::vector<std::string>& args, const std::string& name) {
    LoadResult result = run_load(initiator(), args, lab_->path(name + ".json"), 60s);
    if (result.report.is_discarded()) result.report = nullptr;
    return {result.status, result.report};
  }

  // refuse: "" leaves the default ("reset").
  std::string access_policy(const char* mode, const std::string& refuse = "") {
    return std::string(R"({"version": 1, "access_control": {"connect_timeout_s": 5, )") +
           (refuse.empty() ? "" : R"("refuse": ")" + refuse + R"(", )") + R"("subsystems": [{"nqn": ")" + kLocked +
           R"(", "mode": ")" + mode + R"(", "hosts": [")" + kGoodHost + R"("]}]}})";
  }

  // Whether an XDP program is attached to the target's interface.
  bool xdp_attached() {
    const std::string out = lab_->path("link.txt");
    must(target().exec() + "ip -d link show dev " + target_if() + " > " + out);
    return read_file(out).find("prog/xdp") != std::string::npos;
  }

  // The allowed host connects and does its I/O; the forbidden one is refused
  // (counted, logged with both NQNs, never seen by the target). Returns how
  // long the forbidden host's nvqos-load took and its error.
  std::pair<std::chrono::duration<double>, std::string> allowed_and_forbidden(const char* io_timeout) {
    auto [good, good_report] = load({"--target", std::string(kTarget) + ":4420", "--subnqn", kLocked, "--hostnqn",
                                     kGoodHost, "--ios", "2000", "--qd", "4"},
                                    "good");
    EXPECT_EQ(good, 0) << good_report.dump();
    if (good == 0) EXPECT_EQ(good_report.at("jobs")[0].at("ops").at("read").at("ios"), 2000);
    const auto start = std::chrono::steady_clock::now();
    auto [bad, bad_report] = load({"--target", std::string(kTarget) + ":4420", "--subnqn", kLocked, "--hostnqn",
                                   kBadHost, "--ios", "100", "--io-timeout", io_timeout},
                                  "bad");
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    EXPECT_NE(bad, 0) << "the forbidden host's Connect must never complete";
    std::string error = bad_report.is_object() && bad_report.contains("jobs") && !bad_report["jobs"].empty()
                            ? bad_report["jobs"][0].value("error", "")
                            : "";
    if (error.empty()) error = read_file(lab_->path("bad.json"));
    std::printf("forbidden host's nvqos-load ended after %.2f s: %s\n", took.count(), error.c_str());
    const std::string m = metrics();
    EXPECT_EQ(sample(m, std::string("nvqos_access_denied_total{interface=\"") + target_if() + "\",subsystem=\"" + kLocked),
              1) << m;
    EXPECT_EQ(sample(m, std::string("nvqos_access_allowed_total{interface=\"") + target_if() + "\",subsystem=\"" + kLocked),
              2) << "admin and I/O queue of the allowed host";
    EXPECT_GT(sample(m, std::string("nvqos_access_dropped_packets_total{interface=\"") + target_if() + "\",subsystem=\"" +
                            kLocked),
              0);
    EXPECT_EQ(read_file(lab_->path("target.log")).find(kBadHost), std::string::npos)
        << "the target never saw the forbidden host's Connect";
    const std::string log = agent_->log();
    EXPECT_NE(log.find("Connect refused by access control"), std::string::npos) << log;
    EXPECT_NE(log.find(kBadHost), std::string::npos) << "logged with the host NQN";
    EXPECT_NE(log.find(std::string("subnqn=") + kLocked), std::string::npos) << "and the subsystem's" << log;
    return {took, error};
  }

  std::unique_ptr<ChildProcess> target_proc_;
};

TEST_F(IdentityTest, TwoTenantsOnOneTargetAddressToldApartBySubsystemNqn) {
  // vol-a by an exact rule (decided in the kernel), vol-b by a pattern (decided by the agent).
  start_agent(std::string(R"({"version": 1, "tenants": [
      {"name": "alpha", "match": [{"subsystem_nqn": ")") + kSubA + R"("}]},
      {"name": "beta", "match": [{"subsystem_nqn": "nqn.2026-11.io.nvqos:vol-[b-z]"}]}]})");
  const std::string jobs = lab_->write_file(
      "jobs.json",
      nlohmann::json{{"jobs",
                      {{{"name", "a"}, {"target", std::string(kTarget) + ":4420"}, {"subnqn", kSubA},
                        {"rw", "randread"}, {"qd", 4}, {"ios", 3000}},
                       {{"name", "b"}, {"target", std::string(kTarget) + ":4420"}, {"subnqn", kSubB},
                        {"rw", "randrw"}, {"qd", 8}, {"queues", 2}, {"ios", 5000}}}}}
          .dump());
  auto [status, report] = load({"--job-file", jobs}, "two");
  ASSERT_EQ(status, 0) << report.dump();
  const std::string m = metrics();
  for (const auto& job : report.at("jobs")) {
    const std::string tenant = job.at("name") == "a" ? "alpha" : "beta";
    for (const char* op : {"read", "write"}) {
      const auto& ops = job.at("ops");
      const double want = ops.contains(op) ? ops.at(op).value("ios", 0.0) : 0.0;
      const double got = sample(m, "tenant=\"" + tenant + "\",op=\"" + op + "\",role=\"target\"}");
      EXPECT_EQ(std::max(got, 0.0), want) << tenant << " " << op << "\n" << m;
    }
  }
  EXPECT_EQ(sample(m, "nvqos_nvme_commands_total{interface=\"" + target_if() + "\",tenant=\"default\",op=\"read\""), -1)
      << "nothing left under the address tenant";
  EXPECT_EQ(sample(m, "nvqos_nvme_connects_total"), 5) << "admin + 1 I/O queue for a, admin + 2 for b";
}

TEST_F(IdentityTest, ResetRefusalFailsTheForbiddenHostAtOnce) {
  start_agent(access_policy("enforce"));  // refuse "reset" is the default
  EXPECT_FALSE(xdp_attached()) << "refuse \"reset\" needs no XDP";
  auto [took, error] = allowed_and_forbidden("20s");
  EXPECT_LT(took.count(), 5.0) << "reset, not left to time out (I/O timeout 20 s): " << error;
  std::string lower = error;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  EXPECT_NE(lower.find("reset"), std::string::npos) << "the initiator sees a connection reset: " << error;
  const std::string m = metrics();
  EXPECT_GE(sample(m, std::string("nvqos_access_resets_total{interface=\"") + target_if() + "\",subsystem=\"" + kLocked),
            1) << m;
  EXPECT_EQ(sample(m, "nvqos_datapath_table_entries{interface=\"" + target_if() + "\",table=\"access_conns\"}"), 0)
      << "the reset connection's gate is freed";
  EXPECT_NE(agent_->log().find("refuse=reset"), std::string::npos);
}

TEST_F(IdentityTest, DropRefusalInXdpLeavesTheForbiddenHostToTimeOut) {
  start_agent(access_policy("enforce", "drop"));
  EXPECT_TRUE(xdp_attached()) << "refuse \"drop\" drops in XDP";
  auto [took, error] = allowed_and_forbidden("3s");
  EXPECT_GE(took.count(), 3.0) << "dropped: the initiator waits for its own timeout: " << error;
  const std::string m = metrics();
  EXPECT_EQ(sample(m, std::string("nvqos_access_resets_total{interface=\"") + target_if() + "\",subsystem=\"" + kLocked),
            0) << m;
  EXPECT_NE(agent_->log().find("refuse=drop"), std::string::npos);
}

TEST_F(IdentityTest, DryRunOnlyCounts) {
  start_agent(access_policy("dry_run"));
  auto [bad, bad_report] = load({"--target", std::string(kTarget) + ":4420", "--subnqn", kLocked, "--hostnqn", kBadHost,
                                 "--ios", "500", "--qd", "4"},
                                "bad");
  ASSERT_EQ(bad, 0) << bad_report.dump();
  EXPECT_EQ(bad_report.at("jobs")[0].at("ops").at("read").at("ios"), 500);
  const std::string m = metrics();
  EXPECT_EQ(sample(m, std::string("nvqos_access_dry_run_denied_total{interface=\"") + target_if() + "\",subsystem=\"" +
                          kLocked),
            2) << m;
  EXPECT_EQ(sample(m, std::string("nvqos_access_denied_total{interface=\"") + target_if() + "\",subsystem=\"" + kLocked),
            0);
}

}  // namespace
}  // namespace nvqos::test
