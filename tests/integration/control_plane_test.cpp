// Hitless restart, --cleanup and interface faults end to end: nvqos-target in
// one namespace, nvqos-load in another, the agent on the initiator's veth with
// its pins on a bpffs the test mounts (an agent under `ip netns exec` gets
// its own /sys, so the host's /sys/fs/bpf is not visible to it).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agent_lab.hpp"

namespace nvqos::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMetricsPort = 9468;
constexpr int kAdminPort = 9469;
const char* kTargetAddr = "10.203.0.1";
const char* kHostAddr = "10.203.0.2";
const char* kSubnqn = "nqn.2026-11.io.nvqos:restart-test";

class ControlPlaneTest : public AgentLabTest {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, BPF, mounting bpffs)";
    lab_.emplace(LabSpec{"rst", {std::string(kTargetAddr) + "/24"}, {std::string(kHostAddr) + "/24"}});
    // One CPU per receive side keeps each stream in order (see agent_lab.hpp).
    lab_->receive_each_flow_on_one_cpu(true, true);
    bpffs_.emplace(lab_->dir() / "bpf");
    target_proc_ = start_target(target(), {std::string(kTargetAddr) + ":4420"}, kSubnqn, "256M:4096",
                                lab_->path("target.log"));
    write_config(R"({"version": 1, "tenants": [{"name": "gold", "match": [{"remote": "10.203.0.1/32"}]}]})");
  }

  std::string pin_root() const { return (lab_->dir() / "bpf" / "nvqos").string(); }
  std::string pin_dir() const { return pin_root() + "/" + initiator_if(); }
  std::string admin_socket() const { return lab_->path("agent.sock"); }

  void write_config(const std::string& json) { lab_->write_file("policy.json", json); }

  AgentSpec agent_spec(bool keep) const {
    AgentSpec spec(initiator().name(), initiator_if(), kMetricsPort);
    spec.config = lab_->path("policy.json");
    spec.admin_socket = admin_socket();
    spec.pin_dir = pin_root();
    if (keep) spec.extra.push_back("--keep-on-exit");
    return spec;
  }

  void start_agent(bool keep) { start_agent(agent_spec(keep)); }
  void start_agent(const AgentSpec& spec) {
    AgentLabTest::start_agent(spec, 20s, log_name(++agent_runs_));
  }

  // The log of the agent's `run`th start.
  static std::string log_name(int run) { return "agent" + std::to_string(run) + ".log"; }
  std::string log_path(int run) const { return lab_->path(log_name(run)); }

  std::string in_initiator(const std::string& command) {
    std::string out;
    run(initiator().exec() + command + " 2>&1", &out);
    return out;
  }

  // Readings that must never go backwards across restarts.
  struct Counters {
    double bytes_in = 0, bytes_out = 0, reads = 0, flows = 0;
  };
  Counters counters() {
    // One telemetry interval, so the reading is fresh.
    std::this_thread::sleep_for(250ms);
    const std::string text = metrics();
    Counters c;
    c.bytes_in = metric_value(text, "nvqos_tenant_bytes_total", {{"tenant", "gold"}, {"direction", "ingress"}}).value_or(-1);
    c.bytes_out = metric_value(text, "nvqos_tenant_bytes_total", {{"tenant", "gold"}, {"direction", "egress"}}).value_or(-1);
    c.reads = metric_value(text, "nvqos_nvme_commands_total", {{"tenant", "gold"}, {"op", "read"}, {"role", "initiator"}})
                  .value_or(-1);
    c.flows = metric_value(text, "nvqos_tenant_flows_opened_total", {{"tenant", "gold"}}).value_or(-1);
    return c;
  }

  static void expect_not_backwards(const Counters& before, const Counters& after, const char* when) {
    SCOPED_TRACE(when);
    EXPECT_GE(after.bytes_in, before.bytes_in);
    EXPECT_GE(after.bytes_out, before.bytes_out);
    EXPECT_GE(after.reads, before.reads);
    EXPECT_EQ(after.flows, before.flows) << "the restart must not see the load's connections as new";
  }

  // nvqosctl inside the initiator namespace (the agent's TCP address is there).
  std::string nvqosctl(const std::string& args, int* rc = nullptr) { return agent_->nvqosctl(args, rc); }

  // curl inside the initiator namespace: returns the HTTP status.
  int curl(const std::string& args, std::string* body = nullptr) {
    std::string out;
    run(initiator().exec() + "curl -s -o " + lab_->path("curl.out") + " -w '%{http_code}' " + args, &out);
    if (body) *body = read_file(lab_->path("curl.out"));
    return std::atoi(out.c_str());
  }

  // The admin API also on TCP (kAdminPort), behind the bearer token in `token_file`.
  AgentSpec admin_over_tcp(const std::string& token_file) const {
    AgentSpec spec = agent_spec(false);
    spec.extra = {"--admin-address", "127.0.0.1:" + std::to_string(kAdminPort), "--admin-token-file", token_file};
    return spec;
  }

  std::string write_token(const std::string& token, mode_t mode) {
    const std::string path = lab_->path("token");
    std::ofstream(path) << token << "\n";
    chmod(path.c_str(), mode);
    return path;
  }

  std::unique_ptr<ChildProcess> start_load(const std::string& runtime) {
    return nvqos::test::start_load(initiator(),
                                   {"--target", std::string(kTargetAddr) + ":4420", "--subnqn", kSubnqn, "--name",
                                    "gold", "--rw", "randread", "--bs", "4k", "--qd", "4", "--runtime", runtime,
                                    "--json", "--progress", "off"},
                                   lab_->path("load.json"));
  }

  nlohmann::json load_report() { return nvqos::test::load_report(read_file(lab_->path("load.json"))); }

  bool tc_filter_present() { return in_initiator("tc filter show dev " + initiator_if() + " ingress").find("nvqos_tc_ingres") != std::string::npos; }
  bool clsact_present() { return in_initiator("tc qdisc show dev " + initiator_if()).find("clsact") != std::string::npos; }

  std::optional<BpffsMount> bpffs_;
  std::unique_ptr<ChildProcess> target_proc_;
  int agent_runs_ = 0;
};

TEST_F(ControlPlaneTest, SigtermWithKeepAndKill9UnderLoadLoseNothing) {
  start_agent(true);
  auto load = start_load("9s");
  Counters last;
  ASSERT_TRUE(wait_until([&] { return (last = counters()).reads > 100; }, 10s)) << read_file(log_path(1));

  // SIGTERM with --keep-on-exit: everything stays attached and counting.
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0) << read_file(log_path(1));
  EXPECT_TRUE(tc_filter_present()) << "the tc filter must stay attached across a keep restart";
  EXPECT_TRUE(std::filesystem::exists(pin_dir() + "/flow_table"));
  EXPECT_TRUE(std::filesystem::exists(pin_dir() + "/nvqos_tc_ingress"));
  std::this_thread::sleep_for(1s);  // traffic while no agent runs is still counted by the kernel

  start_agent(true);
  Counters after = counters();
  expect_not_backwards(last, after, "after SIGTERM with keep");
  EXPECT_GT(after.reads, last.reads) << "commands during the restart were not counted";
  std::string text = metrics();
  EXPECT_EQ(metric_value(text, "nvqos_restart_adopted_total", {{"interface", initiator_if()}}), 1.0);
  EXPECT_EQ(metric_value(text, "nvqos_pinned_maps", {{"interface", initiator_if()}, {"action", "replaced"}}), 0.0);
  EXPECT_NE(read_file(log_path(2)).find("adopted the pinned data path"), std::string::npos) << read_file(log_path(2));
  last = after;

  // kill -9: nothing runs on exit, the pins and filters are there by nature.
  agent_->signal(SIGKILL);
  agent_->wait(5s);
  std::this_thread::sleep_for(1s);
  start_agent(true);
  after = counters();
  expect_not_backwards(last, after, "after kill -9");
  EXPECT_GT(after.reads, last.reads);
  EXPECT_EQ(metric_value(metrics(), "nvqos_restart_adopted_total", {{"interface", initiator_if()}}), 2.0);

  // The load saw no error and no reset connection, and the agent, although
  // restarted twice, counted exactly the commands the load completed.
  ASSERT_EQ(load->wait(60s), 0) << read_file(lab_->path("load.json"));
  const auto report = load_report();
  ASSERT_FALSE(report.is_discarded());
  const auto& reads = report.at("jobs").at(0).at("ops").at("read");
  EXPECT_TRUE(reads.at("errors").empty()) << reads.at("errors").dump();
  std::this_thread::sleep_for(300ms);
  const std::string final_text = metrics();
  const double desync = metric_value(final_text, "nvqos_nvme_desync_total", {}).value_or(-1);
  const double counted = counters().reads;
  std::printf("[ figures  ] load completed %.0f reads; agent counted %.0f across 2 restarts (desync %.0f)\n",
              reads.at("ios").get<double>(), counted, desync);
  if (desync == 0) {
    EXPECT_EQ(counted, reads.at("ios").get<double>());
  }
  EXPECT_EQ(metric_value(final_text, "nvqos_tenant_flows_opened_total", {{"tenant", "gold"}}), 2.0)
      << "one admin and one I/O connection, each opened once";
}

TEST_F(ControlPlaneTest, AFailedStartLeavesTheAdoptedDataPathRunning) {
  start_agent(true);
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0);
  // The next agent adopts, then cannot listen on its metrics port (taken):
  // it must not tear down what the previous agent left running.
  ChildProcess squatter(in_netns_argv(initiator().name(),
                                      {"/usr/bin/python3", "-c",
                                       "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
                                       "socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', " +
                                           std::to_string(kMetricsPort) + ")); s.listen(); time.sleep(30)"}),
                        lab_->path("squatter.log"));
  ASSERT_TRUE(wait_until([&] { return in_initiator("ss -ltn").find(":" + std::to_string(kMetricsPort)) != std::string::npos; }, 5s));
  AgentProcess failing(agent_spec(false), log_path(2));
  EXPECT_EQ(failing.wait(20s), 1) << read_file(log_path(2));
  EXPECT_NE(read_file(log_path(2)).find("adopted the pinned data path"), std::string::npos) << read_file(log_path(2));
  EXPECT_TRUE(tc_filter_present()) << "a failed start removed the running data path";
  EXPECT_TRUE(std::filesystem::exists(pin_dir() + "/flow_table"));
}

TEST_F(ControlPlaneTest, PlainSigtermRemovesEverything) {
  start_agent(false);
  ASSERT_TRUE(tc_filter_present());
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0);
  EXPECT_FALSE(tc_filter_present());
  EXPECT_FALSE(clsact_present()) << "the agent created the clsact qdisc, so it removes it";
  EXPECT_FALSE(std::filesystem::exists(pin_dir())) << "pins left behind";
}

TEST_F(ControlPlaneTest, CleanupRemovesWhatAKilledAgentLeft) {
  // A quarantined tenant needs XDP, a class with a ceiling the HTB tree:
  // cleanup must remove them too.
  write_config(R"({"version": 1, "links": [{"interface": ")" + initiator_if() + R"(", "capacity_mbit_s": 1000}],
                   "classes": [{"name": "c", "ceiling_mbit_s": 500}],
                   "tenants": [{"name": "gold", "class": "c", "match": [{"remote": "10.203.0.1/32"}]},
                   {"name": "bad", "quarantine": true, "match": [{"remote": "10.203.0.9/32"}]}]})");
  start_agent(false);
  ASSERT_NE(in_initiator("ip link show dev " + initiator_if()).find("xdp"), std::string::npos);
  ASSERT_NE(in_initiator("tc qdisc show dev " + initiator_if()).find("qdisc htb 4e56: root"), std::string::npos);
  agent_->signal(SIGKILL);
  agent_->wait(5s);
  ASSERT_TRUE(tc_filter_present());

  std::string out;
  const int rc = run(initiator().exec() + agent_program() + " --cleanup --pin-dir " + pin_root() + " 2>&1", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("removed tc ingress filter"), std::string::npos) << out;
  EXPECT_NE(out.find("removed XDP program"), std::string::npos) << out;
  EXPECT_NE(out.find("removed HTB root qdisc 4e56:"), std::string::npos) << out;
  EXPECT_EQ(in_initiator("tc qdisc show dev " + initiator_if()).find("htb"), std::string::npos)
      << in_initiator("tc qdisc show dev " + initiator_if());
  EXPECT_FALSE(tc_filter_present());
  EXPECT_EQ(in_initiator("tc filter show dev " + initiator_if() + " egress").find("nvqos"), std::string::npos);
  EXPECT_FALSE(clsact_present());
  EXPECT_EQ(in_initiator("ip link show dev " + initiator_if()).find("xdp"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(pin_root()));

  // Nothing left: a second run finds nothing to do, and leaves another tool's root qdisc alone.
  must(initiator().exec() + "tc qdisc add dev " + initiator_if() + " root handle 1: htb default 1");
  run(initiator().exec() + agent_program() + " --cleanup --pin-dir " + pin_root() + " 2>&1", &out);
  EXPECT_NE(out.find("0 interface(s) cleaned, 0 error(s)"), std::string::npos) << out;
  EXPECT_NE(in_initiator("tc qdisc show dev " + initiator_if()).find("qdisc htb 1: root"), std::string::npos)
      << "cleanup removed a root qdisc nvqos did not install";
}

// What the HTB tree has sent, from `tc -s`: the root qdisc's count and each class's.
struct HtbSent {
  double root = -1;
  std::map<std::string, double> classes;
};

HtbSent htb_sent(const std::string& qdiscs, const std::string& classes) {
  HtbSent out;
  auto sent_after = [](const std::string& text, std::size_t at) {
    const auto s = text.find("Sent ", at);
    return s == std::string::npos ? -1.0 : std::stod(text.substr(s + 5));
  };
  if (auto at = qdiscs.find("qdisc htb 4e56: root"); at != std::string::npos) out.root = sent_after(qdiscs, at);
  for (auto at = classes.find("class htb "); at != std::string::npos; at = classes.find("class htb ", at + 1)) {
    const std::string id = classes.substr(at + 10, classes.find(' ', at + 10) - at - 10);
    out.classes[id] = sent_after(classes, at);
  }
  return out;
}

TEST_F(ControlPlaneTest, HtbTreeAndItsCountersSurviveAKeepRestartAndKill9) {
  write_config(R"({"version": 1, "links": [{"interface": ")" + initiator_if() + R"(", "capacity_mbit_s": 1000}],
                   "classes": [{"name": "gold", "priority": 0, "guaranteed_mbit_s": 100, "ceiling_mbit_s": 500}],
                   "tenants": [{"name": "gold", "class": "gold", "match": [{"remote": "10.203.0.1/32"}]}]})");
  auto sent = [&] {
    return htb_sent(in_initiator("tc -s qdisc show dev " + initiator_if()), in_initiator("tc -s class show dev " + initiator_if()));
  };
  start_agent(true);
  auto load = start_load("15s");  // outlasts two restarts
  ASSERT_TRUE(wait_until([&] { return counters().reads > 100; }, 10s)) << read_file(log_path(1));
  HtbSent last = sent();
  const std::string gold_leaf = "4e56:13";  // the unit of tenant id 1
  ASSERT_GT(last.classes[gold_leaf], 0) << in_initiator("tc -s class show dev " + initiator_if());
  const auto classids = [](const HtbSent& h) {
    std::vector<std::string> ids;
    for (const auto& [id, bytes] : h.classes) ids.push_back(id);
    return ids;
  };
  auto expect_grown = [&](const HtbSent& now, const char* when) {
    SCOPED_TRACE(when);
    EXPECT_EQ(classids(now), classids(last)) << "the same classes";
    EXPECT_GT(now.root, last.root) << "the root qdisc's counter was reset or stopped";
    for (const auto& [id, bytes] : last.classes) EXPECT_GE(now.classes.at(id), bytes) << id;
    EXPECT_GT(now.classes.at(gold_leaf), last.classes.at(gold_leaf)) << "gold's commands go through its class";
    last = now;
  };

  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0) << read_file(log_path(1));
  std::this_thread::sleep_for(500ms);
  expect_grown(sent(), "while no agent runs after SIGTERM with keep");
  start_agent(true);
  EXPECT_NE(read_file(log_path(2)).find("adopting the HTB tree a previous agent left"), std::string::npos)
      << read_file(log_path(2));
  EXPECT_EQ(read_file(log_path(2)).find("HTB root qdisc installed"), std::string::npos) << "not replaced";
  std::this_thread::sleep_for(500ms);
  expect_grown(sent(), "after the keep restart");

  agent_->signal(SIGKILL);
  agent_->wait(5s);
  std::this_thread::sleep_for(500ms);
  expect_grown(sent(), "while no agent runs after kill -9");
  start_agent(true);
  EXPECT_NE(read_file(log_path(3)).find("adopting the HTB tree a previous agent left"), std::string::npos)
      << read_file(log_path(3));
  std::this_thread::sleep_for(500ms);
  expect_grown(sent(), "after kill -9 and a new agent");
  // The adopted tree is the agent's: /v1/classes shows gold in it, with its counters
  // (read at a telemetry interval after `last`).
  std::this_thread::sleep_for(300ms);
  auto classes = nlohmann::json::parse(nvqosctl("--json classes"), nullptr, false);
  ASSERT_FALSE(classes.is_discarded());
  const auto& gold = classes.at("classes").at(0).at("interfaces").at(initiator_if());
  EXPECT_EQ(gold.at("htb").at(0).at("classid"), gold_leaf) << gold.dump(2);
  EXPECT_GE(gold.at("htb").at(0).at("sent_bytes").get<double>(), last.classes.at(gold_leaf));
  EXPECT_EQ(gold.at("mechanisms").at("egress").at(0), "htb");

  ASSERT_EQ(load->wait(60s), 0) << read_file(lab_->path("load.json"));
  const auto report = load_report();
  ASSERT_FALSE(report.is_discarded());
  EXPECT_TRUE(report.at("jobs").at(0).at("ops").at("read").at("errors").empty());
  std::printf("[ figures  ] HTB root sent %.0f bytes, gold's class %.0f bytes, across a keep restart and a kill -9\n",
              last.root, last.classes.at(gold_leaf));
}

TEST_F(ControlPlaneTest, XdpIsAdoptedAcrossAKeepRestart) {
  write_config(R"({"version": 1, "tenants": [{"name": "gold", "match": [{"remote": "10.203.0.1/32"}]},
                   {"name": "bad", "quarantine": true, "match": [{"remote": "10.203.0.9/32"}]}]})");
  start_agent(true);
  ASSERT_TRUE(metric_value(metrics(), "nvqos_datapath_attached_info", {{"hook", "xdp"}}).has_value());
  const std::string before = in_initiator("ip -d link show dev " + initiator_if());
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0);
  EXPECT_NE(in_initiator("ip link show dev " + initiator_if()).find("xdp"), std::string::npos)
      << "XDP must stay attached across a keep restart";
  start_agent(false);
  EXPECT_NE(read_file(log_path(2)).find("adopted the attached XDP program"), std::string::npos) << read_file(log_path(2));
  EXPECT_TRUE(metric_value(metrics(), "nvqos_datapath_attached_info", {{"hook", "xdp"}}).has_value());
  // The same program is attached: adopted, not replaced by a second one.
  const auto prog_id = [](const std::string& link) {
    const auto at = link.find("prog/xdp id ");
    return at == std::string::npos ? std::string() : link.substr(at + 12, link.find_first_of(" \n", at + 12) - at - 12);
  };
  EXPECT_FALSE(prog_id(before).empty()) << before;
  EXPECT_EQ(prog_id(in_initiator("ip -d link show dev " + initiator_if())), prog_id(before));
  // This agent runs without --keep-on-exit: its SIGTERM removes what it adopted.
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0);
  EXPECT_EQ(in_initiator("ip link show dev " + initiator_if()).find("xdp"), std::string::npos);
  EXPECT_FALSE(tc_filter_present());
}

TEST_F(ControlPlaneTest, ResizedFlowTableIsMigratedWithItsFlows) {
  start_agent(true);
  auto load = start_load("5s");
  Counters last;
  ASSERT_TRUE(wait_until([&] { return (last = counters()).reads > 50; }, 10s));
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0);

  // A new flow table size changes the map's max_entries: a layout change.
  write_config(R"({"version": 1, "limits": {"max_flows": 4096},
                   "tenants": [{"name": "gold", "match": [{"remote": "10.203.0.1/32"}]}]})");
  start_agent(true);
  const std::string log = read_file(log_path(2));
  EXPECT_NE(log.find("pinned map migrated to the new layout"), std::string::npos) << log;
  EXPECT_NE(log.find("map=flow_table"), std::string::npos) << log;
  const std::string text = metrics();
  EXPECT_GE(metric_value(text, "nvqos_pinned_maps", {{"interface", initiator_if()}, {"action", "migrated"}}).value_or(0), 1.0);
  EXPECT_EQ(metric_value(text, "nvqos_flow_table_capacity_entries", {{"interface", initiator_if()}}), 4096.0);
  const Counters after = counters();
  expect_not_backwards(last, after, "after the flow table was migrated");
  EXPECT_EQ(load->wait(60s), 0);
}

TEST_F(ControlPlaneTest, RecreatedInterfaceIsAttachedAgain) {
  // A second veth pair inside the initiator namespace, deleted and re-created.
  const std::string a = unique_name("rsta"), b = unique_name("rstb");
  must(initiator().exec() + "ip link add " + a + " type veth peer name " + b);
  AgentSpec spec = agent_spec(false);
  spec.interface = a;
  spec.config.reset();
  start_agent(spec);
  must(initiator().exec() + "ip link del " + a);
  EXPECT_TRUE(wait_until([&] { return metric_value(metrics(), "nvqos_interface_present", {{"interface", a}}) == 0.0; }, 5s));
  must(initiator().exec() + "ip link add " + a + " type veth peer name " + b);
  EXPECT_TRUE(wait_until(
      [&] { return metric_value(metrics(), "nvqos_interface_reattached_total", {{"interface", a}}) == 1.0; }, 5s))
      << read_file(log_path(1));
  EXPECT_EQ(metric_value(metrics(), "nvqos_interface_present", {{"interface", a}}), 1.0);
  EXPECT_NE(in_initiator("tc filter show dev " + a + " ingress").find("nvqos_tc_ingres"), std::string::npos);
  const std::string log = read_file(log_path(1));
  EXPECT_NE(log.find("interface disappeared"), std::string::npos) << log;
  EXPECT_NE(log.find("interface re-created: programs attached again"), std::string::npos) << log;
  agent_->signal(SIGTERM);
  EXPECT_EQ(agent_->wait(10s), 0);
  run(initiator().exec() + "ip link del " + a);
}

const char* kToken = "0123456789abcdef0123456789abcdef";

TEST_F(ControlPlaneTest, AdminApiOverTcpNeedsTheBearerToken) {
  const std::string token_file = write_token(kToken, 0600);
  start_agent(admin_over_tcp(token_file));
  const std::string url = "http://127.0.0.1:" + std::to_string(kAdminPort);
  std::string body;
  EXPECT_EQ(curl(url + "/v1/status", &body), 401) << body;
  EXPECT_NE(body.find("missing bearer token"), std::string::npos) << body;
  EXPECT_EQ(curl("-H 'Authorization: Bearer wrong-token-0123456789' " + url + "/v1/status", &body), 401) << body;
  EXPECT_NE(body.find("wrong bearer token"), std::string::npos) << body;
  EXPECT_EQ(curl("-H 'Authorization: Bearer " + std::string(kToken) + "x' " + url + "/v1/status"), 401)
      << "a longer token with the right prefix must not pass";
  EXPECT_EQ(curl("-X POST " + url + "/v1/reload", &body), 401) << "a write without the token";
  EXPECT_EQ(curl("-H 'Authorization: Bearer " + std::string(kToken) + "' " + url + "/v1/status", &body), 200) << body;
  EXPECT_EQ(curl("-X POST -H 'Authorization: Bearer " + std::string(kToken) + "' " + url + "/v1/reload", &body), 200)
      << body;
  EXPECT_EQ(curl(url + "/metrics"), 401) << "everything on the admin listener needs the token";

  int rc = -1;
  std::string out = nvqosctl("--address 127.0.0.1:9469 --token-file " + token_file + " status", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(initiator_if()), std::string::npos) << out;
  out = nvqosctl("--address 127.0.0.1:9469 status", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("missing bearer token"), std::string::npos) << out;
  EXPECT_NE(read_file(log_path(1)).find("admin API request refused"), std::string::npos);
}

TEST_F(ControlPlaneTest, TokenFileReadableByOthersIsRefused) {
  const std::string token_file = write_token(kToken, 0644);
  AgentProcess agent(admin_over_tcp(token_file), log_path(1));
  EXPECT_EQ(agent.wait(20s), 1);
  const std::string log = read_file(log_path(1));
  EXPECT_NE(log.find("accessible by group or others (mode 0644)"), std::string::npos) << log;
  EXPECT_FALSE(std::filesystem::exists(pin_dir())) << "a refused start must not leave pins";
}

TEST_F(ControlPlaneTest, AdminSocketWithAWrongModeIsNotServed) {
  start_agent(false);
  const std::string socket = admin_socket();
  struct stat st {};
  ASSERT_EQ(stat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  int rc = -1;
  std::string out = nvqosctl("status", &rc);
  ASSERT_EQ(rc, 0) << out;
  chmod(socket.c_str(), 0666);
  out = nvqosctl("status", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("refusing to serve"), std::string::npos) << out;
  EXPECT_NE(out.find("mode 0666"), std::string::npos) << out;
  chmod(socket.c_str(), 0600);
  EXPECT_EQ((nvqosctl("status", &rc), rc), 0);
}

TEST_F(ControlPlaneTest, NvqosctlShowsFlowsTopAndSlowCommands) {
  write_config(R"({"version": 1, "tenants": [{"name": "gold", "slow_command_threshold_us": 1,
                   "match": [{"remote": "10.203.0.1/32"}]}]})");
  start_agent(false);
  auto load = start_load("6s");
  ASSERT_TRUE(wait_until([&] { return counters().reads > 100; }, 10s));

  int rc = -1;
  std::string out = nvqosctl("flows", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("10.203.0.1:4420"), std::string::npos) << out;
  EXPECT_NE(out.find("initiator"), std::string::npos) << out;
  EXPECT_NE(out.find("gold"), std::string::npos) << out;
  EXPECT_NE(out.find("MiB/s"), std::string::npos) << out;
  auto flows = nlohmann::json::parse(nvqosctl("--json flows"), nullptr, false);
  ASSERT_FALSE(flows.is_discarded());
  ASSERT_EQ(flows.at("total"), 2) << flows.dump(2) << "admin queue and one I/O queue";
  const auto& busiest = flows.at("flows").at(0);
  EXPECT_EQ(busiest.at("tenant"), "gold");
  EXPECT_EQ(busiest.at("role"), "initiator");
  EXPECT_EQ(busiest.at("rate"), "live");
  EXPECT_GT(busiest.at("ingress_bytes_per_second").get<double>(), 0);
  // The Connect of each connection names its NQNs (the identity room), shown as extra fields.
  EXPECT_EQ(busiest.value("subsystem_nqn", ""), kSubnqn) << busiest.dump(2);
  EXPECT_EQ(busiest.value("queue", ""), "io 1") << busiest.dump(2);

  out = nvqosctl("top --count 1 --interval 1", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("IOPS"), std::string::npos) << out;
  EXPECT_NE(out.find("p99.9"), std::string::npos) << out;
  EXPECT_NE(out.find("gold"), std::string::npos) << out;
  auto top = nlohmann::json::parse(nvqosctl("--json top --count 1 --interval 1"), nullptr, false);
  ASSERT_FALSE(top.is_discarded());
  bool saw_reads = false;
  for (const auto& row : top.at("rows"))
    if (row.at("tenant") == "gold" && row.at("op") == "read") {
      saw_reads = true;
      EXPECT_GT(row.at("iops").get<double>(), 0);
      EXPECT_GT(row.at("p50_seconds").get<double>(), 0);
      EXPECT_GE(row.at("p999_seconds").get<double>(), row.at("p50_seconds").get<double>());
    }
  EXPECT_TRUE(saw_reads) << top.dump(2);

  out = nvqosctl("slow --no-follow --json", &rc);
  EXPECT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  std::string line;
  int events = 0;
  while (std::getline(lines, line)) {
    auto e = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(e.is_discarded()) << line;
    EXPECT_EQ(e.at("tenant"), "gold");
    EXPECT_GT(e.at("latency_seconds").get<double>(), 0);
    ++events;
  }
  EXPECT_GT(events, 0) << out;
  out = nvqosctl("slow --no-follow", &rc);
  EXPECT_NE(out.find("gold  read  initiator"), std::string::npos) << out;

  out = nvqosctl("status", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("flow_table"), std::string::npos) << out;
  EXPECT_NE(out.find("pinned under " + pin_dir()), std::string::npos) << out;
  auto status = nlohmann::json::parse(nvqosctl("--json status"), nullptr, false);
  ASSERT_FALSE(status.is_discarded());
  bool flow_table_counted = false;
  for (const auto& m : status.at("interfaces").at(0).at("maps"))
    if (m.at("name") == "flow_table") flow_table_counted = m.at("entries") == 2;
  EXPECT_TRUE(flow_table_counted) << status.dump(2);
  EXPECT_EQ(load->wait(60s), 0);
}

// Who may set a tenant's class, what is refused and why, and what a reload keeps.
TEST_F(ControlPlaneTest, ClassOverrideNeedsTheTokenOnTcpAndNamesWhatIsWrong) {
  auto config = [&](bool with_slow) {
    return R"({"version": 1, "links": [{"interface": ")" + initiator_if() + R"(", "capacity_mbit_s": 1000}],
        "classes": [{"name": "fast", "guaranteed_mbit_s": 400}, )" +
           (with_slow ? R"({"name": "slow", "ceiling_mbit_s": 100}, )" : "") +
           R"({"name": "other", "ceiling_mbit_s": 500}],
        "tenants": [{"name": "t", "class": "other", "match": [{"remote": "10.203.0.1/32"}]},
                    {"name": "u", "class": "fast", "match": [{"remote": "10.203.0.7/32"}]}]})";
  };
  write_config(config(true));
  AgentSpec spec = admin_over_tcp(write_token(kToken, 0600));
  spec.watch_config = false;
  start_agent(spec);
  const std::string url = "http://127.0.0.1:" + std::to_string(kAdminPort) + "/v1/tenants/";
  const std::string auth = "-H 'Authorization: Bearer " + std::string(kToken) + "' ";
  auto put = [&](const std::string& tenant, const std::string& json, std::string* body, const std::string& with = "") {
    return curl("-X PUT " + with + "-H 'Content-Type: application/json' --data '" + json + "' " + url + tenant + "/class",
                body);
  };
  const std::string slow = R"({"class": "slow", "ttl_s": 600})";
  std::string body;
  EXPECT_EQ(put("t", slow, &body), 401) << body;
  EXPECT_EQ(put("t", slow, &body, "-H 'Authorization: Bearer wrong-token-0123456789' "), 401) << body;
  EXPECT_EQ(curl("-X DELETE " + url + "t/class", &body), 401) << body;
  std::string direct;
  EXPECT_EQ(http_get_in(initiator().name(), "127.0.0.1", kMetricsPort, "/v1/tenants/t/class", &direct), 403)
      << "never on the metrics port: " << direct;
  EXPECT_FALSE(metric_value(metrics(), "nvqos_tenant_class_override_info", {{"tenant", "t"}}).has_value())
      << "a refused request changed the class";

  EXPECT_EQ(put("nosuch", slow, &body, auth), 404);
  EXPECT_NE(body.find("unknown tenant \\\"nosuch\\\""), std::string::npos) << body;
  EXPECT_EQ(put("t", R"({"class": "platinum"})", &body, auth), 422);
  EXPECT_NE(body.find("unknown class \\\"platinum\\\" (configured classes: fast, slow, other)"), std::string::npos)
      << body;
  EXPECT_EQ(put("t", R"({"class": "slow", "ttl_s": 0})", &body, auth), 422);
  EXPECT_NE(body.find("ttl_s 0 out of range"), std::string::npos) << body;
  EXPECT_EQ(put("t", R"({"klass": "slow"})", &body, auth), 400);
  EXPECT_NE(body.find("unknown key \\\"klass\\\""), std::string::npos) << body;
  EXPECT_EQ(put("t", "not json", &body, auth), 400);
  // A second 400 Mbit/s guarantee on a 1000 Mbit/s link fits; a third does not.
  EXPECT_EQ(put("default", R"({"class": "fast"})", &body, auth), 200) << body;
  EXPECT_EQ(put("t", R"({"class": "fast"})", &body, auth), 409);
  EXPECT_NE(body.find("guarantees sum to 1200 Mbit/s"), std::string::npos) << body;
  EXPECT_NE(body.find("with the class overrides in force: default -> fast, t -> fast"), std::string::npos) << body;
  EXPECT_EQ(curl("-X DELETE " + auth + url + "default/class", &body), 200) << body;
  EXPECT_EQ(curl("-X DELETE " + auth + url + "default/class", &body), 404);
  EXPECT_NE(body.find("has no class override"), std::string::npos) << body;

  // With the token: set; a reload of a config that keeps the class keeps the override.
  EXPECT_EQ(put("t", slow, &body, auth), 200) << body;
  agent_->signal(SIGHUP);
  EXPECT_EQ(agent_->metric_at_least("nvqos_config_reloads_total", {}, 1), 1);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(metric_value(metrics(), "nvqos_tenant_info", {{"tenant", "t"}, {"class", "slow"}}), 1.0);
  EXPECT_EQ(metric_value(metrics(), "nvqos_tenant_class_override_info", {{"tenant", "t"}}), 1.0);
  // A config without the class ends it: t is back in its configured class.
  write_config(config(false));
  agent_->signal(SIGHUP);
  EXPECT_EQ(agent_->metric_at_least("nvqos_config_reloads_total", {}, 2), 2);
  ASSERT_TRUE(wait_until([&] {
    return metric_value(metrics(), "nvqos_tenant_info", {{"tenant", "t"}, {"class", "other"}}) == 1.0;
  }, 2s)) << agent_->log();
  EXPECT_EQ(metric_value(metrics(), "nvqos_config_reload_success", {}), 1.0);
  EXPECT_FALSE(metric_value(metrics(), "nvqos_tenant_class_override_info", {{"tenant", "t"}}).has_value());
  EXPECT_NE(agent_->log().find("the class is no longer in the config"), std::string::npos);
  int rc = 0;
  const std::string cleared = nvqosctl("clear-class t", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(cleared.find("tenant \"t\" has no class override"), std::string::npos) << cleared;
}

}  // namespace
}  // namespace nvqos::test
