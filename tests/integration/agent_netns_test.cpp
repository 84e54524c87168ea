// The agent end to end: real programs attached to a veth in a namespace, real
// TCP traffic from another namespace, numbers read back from /metrics.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "netns.hpp"

namespace nvqos::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMetricsPort = 9466;
const char* kTargetAddr = "10.201.0.1";
const char* kGoldAddr = "10.201.0.2";
const char* kBronzeAddr = "10.201.0.3";

std::string agent_path() { return std::string(NVQOS_AGENT_PATH); }

// Accepts connections on `ports` inside `netns` and counts received bytes.
class TcpSink {
 public:
  TcpSink(std::string netns, std::string addr, std::vector<int> ports) {
    for (int port : ports) {
      std::atomic<bool> listening{false};
      threads_.emplace_back([this, netns, addr, port, &listening] {
        in_netns(netns, [&] { serve(addr, port, listening); });
      });
      while (!listening && !failed_) std::this_thread::sleep_for(5ms);
    }
  }
  ~TcpSink() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }
  std::uint64_t received() const { return received_; }
  bool failed() const { return failed_; }

 private:
  void serve(const std::string& addr, int port, std::atomic<bool>& listening) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    timeval tv{0, 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) || listen(fd, 16)) {
      failed_ = true;
      close(fd);
      return;
    }
    listening = true;
    while (!stop_) {
      int c = accept(fd, nullptr, nullptr);
      if (c < 0) continue;
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[65536];
      while (!stop_) {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n == 0) break;
        if (n > 0) received_ += n;
      }
      close(c);
    }
    close(fd);
  }

  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<std::uint64_t> received_{0};
};

// Sends `bytes` from src to dst:port over one TCP connection; false if the
// connection could not be made or broke.
bool send_bytes(const std::string& src, const std::string& dst, int port, std::size_t bytes,
                std::chrono::seconds timeout = 10s) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{static_cast<long>(timeout.count()), 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, src.c_str(), &sa.sin_addr);
  bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  sa.sin_port = htons(port);
  inet_pton(AF_INET, dst.c_str(), &sa.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(fd);
    return false;
  }
  std::vector<char> chunk(64 * 1024, 'n');
  std::size_t sent = 0;
  while (sent < bytes) {
    ssize_t n = send(fd, chunk.data(), std::min(chunk.size(), bytes - sent), MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += n;
  }
  close(fd);
  return sent == bytes;
}

class AgentInNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, BPF)";
    target_ = std::make_unique<Netns>(unique_name("nvqit-t"));
    initiator_ = std::make_unique<Netns>(unique_name("nvqit-i"));
    veth_ = std::make_unique<VethPair>(*target_, unique_name("nvqt"), std::vector<std::string>{std::string(kTargetAddr) + "/24"},
                                       *initiator_, unique_name("nvqi"),
                                       std::vector<std::string>{std::string(kGoldAddr) + "/24", std::string(kBronzeAddr) + "/24"});
    dir_ = std::filesystem::temp_directory_path() / unique_name("nvqit-dir");
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    agent_.reset();
    veth_.reset();
    initiator_.reset();
    target_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string write_config(const std::string& json) {
    auto path = (dir_ / "config.json").string();
    std::ofstream(path + ".tmp") << json;
    std::filesystem::rename(path + ".tmp", path);
    return path;
  }

  // Starts the agent in `ns` on `ifname`; waits for /readyz.
  void start_agent(const Netns& ns, const std::string& ifname, const std::optional<std::string>& config) {
    log_path_ = (dir_ / "agent.log").string();
    std::vector<std::string> argv{"ip", "netns", "exec", ns.name(), agent_path(), "--interface", ifname,
                                  "--metrics-address", "127.0.0.1:" + std::to_string(kMetricsPort),
                                  "--telemetry-interval", "100ms", "--admin-socket", admin_socket()};
    if (config) {
      argv.push_back("--config");
      argv.push_back(*config);
    }
    agent_ = std::make_unique<ChildProcess>(argv, log_path_);
    agent_ns_ = ns.name();
    ASSERT_TRUE(wait_agent_ready(*agent_, agent_ns_, kMetricsPort, 15s)) << "agent not ready:\n"
                                                                          << read_file(log_path_);
  }

  std::string admin_socket() const { return (dir_ / "agent.sock").string(); }
  std::string nvqosctl(const std::string& args, int* rc = nullptr) {
    std::string out;
    int status = run(std::string(NVQOS_CTL_PATH) + " --socket " + admin_socket() + " " + args, &out);
    if (rc) *rc = status;
    return out;
  }

  std::string metrics() {
    std::string body;
    http_get_in(agent_ns_, "127.0.0.1", kMetricsPort, "/metrics", &body);
    return body;
  }

  // Waits until `name{labels}` reaches at least `want` (telemetry is periodic).
  double metric_at_least(const std::string& name, const std::map<std::string, std::string>& labels, double want) {
    double seen = -1;
    wait_until(
        [&] {
          seen = metric_value(metrics(), name, labels).value_or(-1);
          return seen >= want;
        },
        5s);
    return seen;
  }

  std::unique_ptr<Netns> target_, initiator_;
  std::unique_ptr<VethPair> veth_;
  std::unique_ptr<ChildProcess> agent_;
  std::filesystem::path dir_;
  std::string log_path_, agent_ns_;
};

const char* kTwoTenants = R"({
  "version": 1,
  "tenants": [
    {"name": "gold", "match": [{"remote": "10.201.0.2/32"}]},
    {"name": "bronze", "match": [{"remote": "10.201.0.3", "port": 4420}]}
  ]
})";

TEST_F(AgentInNetns, TargetSideCountsEachTenantsBytesAndIgnoresOtherPorts) {
  start_agent(*target_, veth_->a_name(), write_config(kTwoTenants));
  TcpSink sink(target_->name(), kTargetAddr, {4420, 5555});
  ASSERT_FALSE(sink.failed());

  constexpr std::size_t kGold = 3'000'000, kBronze = 7'000'000, kOther = 2'000'000;
  in_netns(initiator_->name(), [&] {
    ASSERT_TRUE(send_bytes(kGoldAddr, kTargetAddr, 4420, kGold));
    ASSERT_TRUE(send_bytes(kBronzeAddr, kTargetAddr, 4420, kBronze));
    ASSERT_TRUE(send_bytes(kGoldAddr, kTargetAddr, 5555, kOther));
  });
  ASSERT_TRUE(wait_until([&] { return sink.received() == kGold + kBronze + kOther; }, 10s));

  auto ifc = veth_->a_name();
  double gold = metric_at_least("nvqos_tenant_payload_bytes_total",
                                {{"interface", ifc}, {"tenant", "gold"}, {"direction", "ingress"}}, kGold);
  double bronze = metric_at_least("nvqos_tenant_payload_bytes_total",
                                  {{"interface", ifc}, {"tenant", "bronze"}, {"direction", "ingress"}}, kBronze);
  // Within 1% (the issue's bound); TCP payload counting is in fact exact.
  EXPECT_NEAR(gold, kGold, kGold * 0.01);
  EXPECT_NEAR(bronze, kBronze, kBronze * 0.01);
  std::string text = metrics();
  // The port-5555 connection is not NVMe/TCP: nobody, not even "default", gets it.
  EXPECT_EQ(metric_value(text, "nvqos_tenant_payload_bytes_total",
                         {{"interface", ifc}, {"tenant", "default"}, {"direction", "ingress"}}),
            0.0);
  // Wire bytes include headers: more than payload, by less than 10% at MTU 1500.
  double gold_wire = metric_value(text, "nvqos_tenant_bytes_total",
                                  {{"interface", ifc}, {"tenant", "gold"}, {"direction", "ingress"}})
                         .value_or(0);
  EXPECT_GT(gold_wire, kGold);
  EXPECT_LT(gold_wire, kGold * 1.10);
  // ACKs leave the target: packets but no payload on egress.
  EXPECT_GT(metric_value(text, "nvqos_tenant_packets_total", {{"tenant", "gold"}, {"direction", "egress"}}).value_or(0), 0);
  EXPECT_EQ(metric_value(text, "nvqos_tenant_payload_bytes_total", {{"tenant", "gold"}, {"direction", "egress"}}), 0.0);
  EXPECT_EQ(metric_value(text, "nvqos_tenant_flows_opened_total", {{"tenant", "gold"}}), 1.0);
  EXPECT_EQ(metric_value(text, "nvqos_tenant_flows_opened_total", {{"tenant", "bronze"}}), 1.0);
  EXPECT_EQ(metric_value(text, "nvqos_tenant_flows_active", {{"tenant", "gold"}}), 0.0);
  EXPECT_EQ(metric_value(text, "nvqos_datapath_parse_errors_total", {{"interface", ifc}}), 0.0);

  // SIGTERM detaches everything the agent attached.
  agent_->signal(SIGTERM);
  auto status = agent_->wait(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 0) << read_file(log_path_);
  std::string qdiscs;
  run(target_->exec() + "tc qdisc show dev " + ifc, &qdiscs);
  EXPECT_EQ(qdiscs.find("clsact"), std::string::npos) << qdiscs;
}

TEST_F(AgentInNetns, InitiatorSideWithBuiltInDefaultAccountsEverythingUnderDefault) {
  start_agent(*initiator_, veth_->b_name(), std::nullopt);
  TcpSink sink(target_->name(), kTargetAddr, {4420});
  constexpr std::size_t kBytes = 4'000'000;
  in_netns(initiator_->name(), [&] { ASSERT_TRUE(send_bytes(kGoldAddr, kTargetAddr, 4420, kBytes)); });
  double sent = metric_at_least("nvqos_tenant_payload_bytes_total",
                                {{"tenant", "default"}, {"direction", "egress"}}, kBytes);
  EXPECT_NEAR(sent, kBytes, kBytes * 0.01);
}

TEST_F(AgentInNetns, ReloadAttachesXdpForQuarantineAndRefusesBadConfig) {
  auto config = write_config(kTwoTenants);
  start_agent(*target_, veth_->a_name(), config);
  TcpSink sink(target_->name(), kTargetAddr, {4420});
  EXPECT_FALSE(metric_value(metrics(), "nvqos_datapath_attached_info", {{"hook", "xdp"}}).has_value())
      << "XDP attached although no policy needs it";

  write_config(R"({"tenants": [
    {"name": "gold", "match": [{"remote": "10.201.0.2/32"}]},
    {"name": "bronze", "quarantine": true, "match": [{"remote": "10.201.0.3", "port": 4420}]}]})");
  agent_->signal(SIGHUP);
  ASSERT_GE(metric_at_least("nvqos_datapath_attached_info", {{"hook", "xdp"}}, 1), 1) << read_file(log_path_);
  in_netns(initiator_->name(), [&] {
    EXPECT_FALSE(send_bytes(kBronzeAddr, kTargetAddr, 4420, 100'000, 2s)) << "quarantined tenant got through";
    EXPECT_TRUE(send_bytes(kGoldAddr, kTargetAddr, 4420, 100'000));
  });
  EXPECT_GE(metric_at_least("nvqos_tenant_dropped_total", {{"tenant", "bronze"}, {"reason", "quarantine"}}, 1), 1);

  // A broken config is refused; the running policy (and XDP) stays.
  write_config(R"({"tenants": [{"name": "gold", "match": [{"remote": "10.201.0.300"}]}]})");
  agent_->signal(SIGHUP);
  ASSERT_GE(metric_at_least("nvqos_config_reload_failures_total", {}, 1), 1);
  std::string text = metrics();
  EXPECT_EQ(metric_value(text, "nvqos_config_reload_success", {}), 0.0);
  EXPECT_TRUE(metric_value(text, "nvqos_datapath_attached_info", {{"hook", "xdp"}}).has_value());
  EXPECT_NE(read_file(log_path_).find("/tenants/0/match/0/remote"), std::string::npos);

  // Lifting the quarantine detaches XDP again.
  write_config(kTwoTenants);
  agent_->signal(SIGHUP);
  EXPECT_TRUE(wait_until([&] { return !metric_value(metrics(), "nvqos_datapath_attached_info", {{"hook", "xdp"}}); }, 5s));
  EXPECT_EQ(metric_value(metrics(), "nvqos_config_reload_success", {}), 1.0);
}

TEST_F(AgentInNetns, AdminApiOnAPrivateSocketAndLiveReloadOnFileChange) {
  auto config = write_config(kTwoTenants);
  start_agent(*target_, veth_->a_name(), config);

  struct stat st {};
  ASSERT_EQ(stat(admin_socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "admin socket must not be reachable by other users";

  int rc = -1;
  std::string status = nvqosctl("status", &rc);
  EXPECT_EQ(rc, 0) << status;
  EXPECT_NE(status.find(veth_->a_name()), std::string::npos) << status;
  EXPECT_NE(status.find("tc_ingress/clsact"), std::string::npos) << status;
  std::string tenants = nvqosctl("tenants");
  EXPECT_NE(tenants.find("10.201.0.3/32 port 4420"), std::string::npos) << tenants;

  // The admin API is not served on the TCP metrics listener.
  std::string body;
  int http = http_get_in(target_->name(), "127.0.0.1", kMetricsPort, "/v1/status", &body);
  EXPECT_EQ(http, 403) << body;

  // Replace the file the way editors and ConfigMap volumes do (rename over
  // it): the agent notices without a signal.
  write_config(R"({"tenants": [{"name": "silver", "match": [{"remote": "10.201.0.0/24"}]}]})");
  EXPECT_TRUE(wait_until([&] { return nvqosctl("tenants --json").find("\"silver\"") != std::string::npos; }, 5s))
      << read_file(log_path_);
  EXPECT_EQ(nvqosctl("tenants --json").find("\"gold\""), std::string::npos);

  // A bad file is refused, reported by `nvqosctl reload`, and silver stays.
  write_config("{not json");
  std::string out = nvqosctl("reload", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("not valid JSON at line 1"), std::string::npos) << out;
  EXPECT_NE(nvqosctl("tenants --json").find("\"silver\""), std::string::npos);
  EXPECT_NE(nvqosctl("status").find("last reload FAILED"), std::string::npos);
}

TEST(NvqosctlOffline, ValidatesAndExplainsAMissingAgent) {
  std::string out;
  int rc = run(std::string(NVQOS_CTL_PATH) + " --socket /nonexistent/agent.sock status", &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("is nvqos-agent running?"), std::string::npos) << out;
  auto path = std::filesystem::temp_directory_path() / unique_name("nvqctl-bad.json");
  std::ofstream(path) << R"({"tenants": [{"name": "a", "match": []}]})";
  rc = run(std::string(NVQOS_CTL_PATH) + " validate " + path.string(), &out);
  std::filesystem::remove(path);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("/tenants/0/match"), std::string::npos) << out;
}

TEST(AgentErrors, NamesAMissingInterface) {
  if (!is_root()) GTEST_SKIP() << "needs root";
  std::string out;
  int rc = run(agent_path() + " --interface nvq-nosuchif --metrics-address 127.0.0.1:0", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("interface nvq-nosuchif does not exist"), std::string::npos) << out;
}

TEST(AgentErrors, RefusesInvalidConfigNamingTheField) {
  auto path = std::filesystem::temp_directory_path() / unique_name("nvqit-bad.json");
  std::ofstream(path) << R"({"tenants": [{"name": "a", "match": [{"remote": "10.0.0.0/24", "port": 22}]}]})";
  std::string out;
  int rc = run(agent_path() + " --interface lo --config " + path.string(), &out);
  std::filesystem::remove(path);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("/tenants/0/match/0/port"), std::string::npos) << out;
  EXPECT_NE(out.find("not an NVMe/TCP port"), std::string::npos) << out;
}

TEST(AgentErrors, ValidateModeChecksWithoutAttaching) {
  auto path = std::filesystem::temp_directory_path() / unique_name("nvqit-ok.json");
  std::ofstream(path) << kTwoTenants;
  std::string out;
  int rc = run(agent_path() + " --validate --config " + path.string(), &out);
  std::filesystem::remove(path);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("valid (2 tenants, 0 QoS classes)"), std::string::npos) << out;
}

}  // namespace
}  // namespace nvqos::test
