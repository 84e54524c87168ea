// QoS end to end: the agent's HTB tree on a veth in a namespace, real TCP
// traffic to another namespace, rates measured from the agent's own wire-byte
// counters over fixed windows, the tree checked with `tc`.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <csignal>
#include <filesystem>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include "agent_lab.hpp"
#include "tcp_sink.hpp"

namespace nvqos::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMetricsPort = 9467;
const char* kTargetAddr = "10.202.0.1";
const char* kInitiatorAddr = "10.202.0.2";

// Sends as fast as TCP lets it over `connections` connections to port from
// inside `netns`, until destroyed; remembers whether a connection broke.
class BulkSender {
 public:
  BulkSender(std::string netns, int port, int connections = 1) {
    for (int i = 0; i < connections; ++i)
      threads_.emplace_back([this, netns, port] { in_netns(netns, [&] { run(port); }); });
    while (connected_ < connections && !failed_) std::this_thread::sleep_for(5ms);
  }
  ~BulkSender() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }
  bool failed() const { return failed_; }
  std::string error() const { return error_; }

 private:
  void run(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, kInitiatorAddr, &sa.sin_addr);
    bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    sa.sin_port = htons(port);
    inet_pton(AF_INET, kTargetAddr, &sa.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      error_ = std::string("connect: ") + std::strerror(errno);
      failed_ = true;
      close(fd);
      return;
    }
    ++connected_;
    std::vector<char> chunk(256 * 1024, 'q');
    while (!stop_) {
      ssize_t n = send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        error_ = std::string("send: ") + std::strerror(errno);
        failed_ = true;
        break;
      }
    }
    close(fd);
  }

  std::vector<std::thread> threads_;
  std::atomic<int> connected_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::string error_;
};

// "200Mbit", "1Gbit", "64Kbit", "1000bit" (tc's rate output) -> bits/s.
double tc_rate(const std::string& text) {
  std::size_t used = 0;
  double v = std::stod(text, &used);
  std::string unit = text.substr(used);
  if (unit == "Kbit") v *= 1e3;
  else if (unit == "Mbit") v *= 1e6;
  else if (unit == "Gbit") v *= 1e9;
  else if (unit == "Tbit") v *= 1e12;
  return v;
}

struct TcClass {
  std::string parent;
  unsigned prio = 0;
  double rate = 0, ceil = 0;
  double burst = 0, cburst = 0;
};

double tc_size(const std::string& text) {
  std::size_t used = 0;
  double v = std::stod(text, &used);
  std::string unit = text.substr(used);
  if (unit == "Kb") v *= 1024;
  else if (unit == "Mb") v *= 1024 * 1024;
  return v;
}

class QosInNetns : public AgentLabTest {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, BPF, qdiscs)";
    lab_.emplace(LabSpec{"nvqq", {std::string(kTargetAddr) + "/24"}, {std::string(kInitiatorAddr) + "/24"}});
    ifname_ = initiator_if();  // the initiator's end: writes leave here
    agent_ns_ = initiator().name();
  }

  std::string write_config(const std::string& json) { return lab_->write_file("config.json", json); }

  AgentSpec agent_spec(const std::string& config, const std::vector<std::string>& extra = {}) {
    AgentSpec spec(agent_ns_, ifname_, kMetricsPort);
    spec.config = config;
    spec.watch_config = false;
    spec.extra = extra;
    return spec;
  }

  void start_agent(const std::string& config, const std::vector<std::string>& extra = {}) {
    AgentLabTest::start_agent(agent_spec(config, extra), 20s);
  }

  std::string tc(const std::string& args) {
    std::string out;
    run(initiator().exec() + "tc " + args + " 2>&1", &out);
    return out;
  }

  std::map<std::string, TcClass> htb_classes() {
    std::map<std::string, TcClass> out;
    std::istringstream in(tc("class show dev " + ifname_));
    std::string line;
    static const std::regex re(
        R"(class htb (\S+) (?:parent (\S+)|root)(?: leaf \S+)? (?:prio (\d+) )?rate (\S+) ceil (\S+) burst (\S+) cburst (\S+))");
    while (std::getline(in, line)) {
      std::smatch m;
      if (!std::regex_search(line, m, re)) continue;
      TcClass c;
      c.parent = m[2].matched ? m[2].str() : "root";
      c.prio = m[3].matched ? std::stoul(m[3].str()) : 0;
      c.rate = tc_rate(m[4]);
      c.ceil = tc_rate(m[5]);
      c.burst = tc_size(m[6]);
      c.cburst = tc_size(m[7]);
      out[m[1]] = c;
    }
    return out;
  }

  // Wire bytes of `tenant` in `direction` and the time the agent read them.
  std::pair<double, double> egress_sample(const std::string& tenant, const std::string& direction = "egress") {
    std::string text = metrics();
    double bytes = metric_value(text, "nvqos_tenant_bytes_total",
                                {{"interface", ifname_}, {"tenant", tenant}, {"direction", direction}})
                       .value_or(-1);
    double t = metric_value(text, "nvqos_telemetry_last_read_timestamp_seconds", {}).value_or(-1);
    return {bytes, t};
  }

  // Mbit/s of each tenant's egress (or ingress) over `window`, from the agent's counters.
  std::map<std::string, double> measure_mbit(const std::vector<std::string>& tenants, std::chrono::milliseconds window,
                                             const std::string& direction = "egress") {
    std::map<std::string, std::pair<double, double>> first;
    for (const auto& t : tenants) first[t] = egress_sample(t, direction);
    std::this_thread::sleep_for(window);
    std::map<std::string, double> out;
    for (const auto& t : tenants) {
      auto [b1, t1] = egress_sample(t, direction);
      auto [b0, t0] = first[t];
      out[t] = t1 > t0 ? (b1 - b0) * 8 / (t1 - t0) / 1e6 : -1;
    }
    return out;
  }

  std::string ifname_, agent_ns_;
};

std::string link(const std::string& ifname, int mbit) {
  return R"("links": [{"interface": ")" + ifname + R"(", "capacity_mbit_s": )" + std::to_string(mbit) + "}]";
}

TEST_F(QosInNetns, HtbTreeIsInstalledAsConfiguredAndRemovedOnExit) {
  start_agent(write_config(R"({"nvme_ports": {"io": [4420, 4421]}, )" + link(ifname_, 1000) + R"(,
    "classes": [
      {"name": "gold", "priority": 0, "guaranteed_mbit_s": 300, "ceiling_mbit_s": 800},
      {"name": "bulk", "priority": 6, "scope": "aggregate", "ceiling_mbit_s": 200, "burst_bytes": 1048576},
      {"name": "unused", "priority": 3, "ceiling_mbit_s": 10}
    ],
    "default_class": "bulk",
    "tenants": [{"name": "g", "class": "gold", "match": [{"port": 4420}]},
                {"name": "b", "match": [{"port": 4421}]}]})"));
  EXPECT_NE(tc("qdisc show dev " + ifname_).find("qdisc htb 4e56: root"), std::string::npos)
      << tc("qdisc show dev " + ifname_);
  auto classes = htb_classes();
  // root, gold's tenant, bulk's aggregate (b and default), the default class;
  // nothing for the unused class.
  ASSERT_EQ(classes.size(), 4u) << tc("class show dev " + ifname_);
  ASSERT_TRUE(classes.count("4e56:1"));
  EXPECT_EQ(classes["4e56:1"].rate, 1e9);
  EXPECT_EQ(classes["4e56:1"].ceil, 1e9);
  ASSERT_TRUE(classes.count("4e56:fffe"));
  EXPECT_EQ(classes["4e56:fffe"].parent, "4e56:1");
  EXPECT_EQ(classes["4e56:fffe"].prio, 7u);
  int gold = 0, bulk = 0;
  for (const auto& [id, c] : classes) {
    if (c.ceil == 800e6) {
      ++gold;
      EXPECT_EQ(c.rate, 300e6);
      EXPECT_EQ(c.prio, 0u);
      EXPECT_EQ(c.parent, "4e56:1");
      EXPECT_NEAR(c.cburst, 100000, 1024) << "1 ms at 800 Mbit/s";
    }
    if (c.ceil == 200e6) {
      ++bulk;
      EXPECT_EQ(c.prio, 6u);
      EXPECT_NEAR(c.cburst, 1048576, 1024) << "the class's burst_bytes";
    }
  }
  EXPECT_EQ(gold, 1);
  EXPECT_EQ(bulk, 1);
  std::string m = metrics();
  EXPECT_EQ(metric_value(m, "nvqos_qos_mechanism_info", {{"interface", ifname_}, {"direction", "egress"}, {"mechanism", "htb"}}),
            1.0);

  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0) << agent_->log();
  EXPECT_EQ(tc("qdisc show dev " + ifname_).find("htb"), std::string::npos) << tc("qdisc show dev " + ifname_);
}

TEST_F(QosInNetns, CeilingsOf50_200And500MbitAreMetWithin5Percent) {
  start_agent(write_config(R"({"nvme_ports": {"io": [4420, 4421, 4422]}, )" + link(ifname_, 10000) + R"(,
    "classes": [{"name": "c50", "ceiling_mbit_s": 50}, {"name": "c200", "ceiling_mbit_s": 200},
                {"name": "c500", "ceiling_mbit_s": 500}],
    "tenants": [{"name": "t50", "class": "c50", "match": [{"port": 4420}]},
                {"name": "t200", "class": "c200", "match": [{"port": 4421}]},
                {"name": "t500", "class": "c500", "match": [{"port": 4422}]}]})"));
  TcpSink sink(target().name(), kTargetAddr, {4420, 4421, 4422});
  ASSERT_FALSE(sink.failed());
  BulkSender s50(initiator().name(), 4420), s200(initiator().name(), 4421), s500(initiator().name(), 4422);
  ASSERT_FALSE(s50.failed() || s200.failed() || s500.failed()) << s50.error() << s200.error() << s500.error();
  std::this_thread::sleep_for(2s);  // past slow start and the initial burst
  // A ceiling is an upper bound that a backlogged sender reaches. On this shared 2-CPU host a sender
  // is sometimes starved of CPU for part of a window (a CI run measured 94.3% of 500 Mbit/s where
  // quiet runs measure 98-99%), so a short-of-the-ceiling window is measured again, up to three
  // windows: every window must stay under ceiling + 5%, and each tenant's best window within 5%.
  const std::vector<std::pair<std::string, double>> ceilings{{"t50", 50.0}, {"t200", 200.0}, {"t500", 500.0}};
  std::map<std::string, double> best;
  for (int window = 1; window <= 3; ++window) {
    auto rates = measure_mbit({"t50", "t200", "t500"}, 10s);
    bool all_reached = true;
    for (const auto& [tenant, ceiling] : ceilings) {
      std::printf("window %d, ceiling %.0f Mbit/s: measured %.1f Mbit/s of IP bytes over 10 s (%.1f%%)\n", window,
                  ceiling, rates[tenant], 100 * rates[tenant] / ceiling);
      EXPECT_LE(rates[tenant], ceiling * 1.05) << tenant << " above its ceiling in window " << window;
      best[tenant] = std::max(best[tenant], rates[tenant]);
      all_reached = all_reached && best[tenant] >= ceiling * 0.95;
    }
    if (all_reached) break;
  }
  for (const auto& [tenant, ceiling] : ceilings) EXPECT_NEAR(best[tenant], ceiling, ceiling * 0.05) << tenant;
  EXPECT_FALSE(s50.failed() || s200.failed() || s500.failed());
  // HTB held the senders back: counted as throttled.
  std::string m = metrics();
  EXPECT_GT(metric_value(m, "nvqos_tenant_throttled_total", {{"interface", ifname_}, {"tenant", "t50"}}).value_or(0), 0);
}

// The XDP ingress ceiling on the receiving end (the target's interface): what passes to the stack
// stays under the ceiling, the excess is dropped and counted as such, and the mechanism says XDP.
TEST_F(QosInNetns, IngressCeilingDropsAboveItsRateInXdp) {
  ifname_ = target_if();
  agent_ns_ = target().name();
  start_agent(write_config(R"({"nvme_ports": {"io": [4420]}, )" + link(ifname_, 10000) + R"(,
    "classes": [{"name": "capped", "ingress_ceiling_mbit_s": 100, "burst_bytes": 625000}],
    "tenants": [{"name": "bulk", "class": "capped", "match": [{"remote": ")" + std::string(kInitiatorAddr) + R"(/32"}]}]})"));
  TcpSink sink(target().name(), kTargetAddr, {4420});
  ASSERT_FALSE(sink.failed());
  BulkSender sender(initiator().name(), 4420);
  ASSERT_FALSE(sender.failed()) << sender.error();
  std::this_thread::sleep_for(2s);
  const double passed = measure_mbit({"bulk"}, 5s, "ingress")["bulk"];
  std::printf("ingress ceiling 100 Mbit/s: %.1f Mbit/s of IP bytes passed to the stack over 5 s\n", passed);
  // A policer drops what exceeds its bucket and TCP backs off (on a veth's near-zero RTT, down to
  // retransmission timeouts), so well under the ceiling passes: docs/config.md says so.
  EXPECT_LE(passed, 105.0);
  EXPECT_GT(passed, 1.0) << "the connection should still move data under the policer";
  const std::string m = metrics();
  EXPECT_GT(metric_value(m, "nvqos_tenant_dropped_total",
                         {{"interface", ifname_}, {"tenant", "bulk"}, {"reason", "ingress_ceiling"}})
                .value_or(0),
            0);
  EXPECT_EQ(metric_value(m, "nvqos_tenant_dropped_total",
                         {{"interface", ifname_}, {"tenant", "bulk"}, {"reason", "quarantine"}})
                .value_or(-1),
            0);
  EXPECT_EQ(metric_value(m, "nvqos_qos_mechanism_info",
                         {{"interface", ifname_}, {"direction", "ingress"}, {"mechanism", "xdp"}})
                .value_or(0),
            1);
  EXPECT_FALSE(sender.failed()) << sender.error();
}

TEST_F(QosInNetns, GuaranteeHoldsAgainstAHigherPriorityHigherCeilingTenant) {
  start_agent(write_config(R"({"nvme_ports": {"io": [4420, 4421]}, )" + link(ifname_, 400) + R"(,
    "classes": [{"name": "steady", "priority": 5, "guaranteed_mbit_s": 250, "ceiling_mbit_s": 300},
                {"name": "hog", "priority": 0, "ceiling_mbit_s": 400}],
    "tenants": [{"name": "g", "class": "steady", "match": [{"port": 4420}]},
                {"name": "h", "class": "hog", "match": [{"port": 4421}]}]})"));
  TcpSink sink(target().name(), kTargetAddr, {4420, 4421});
  BulkSender g(initiator().name(), 4420), h(initiator().name(), 4421, 4);
  ASSERT_FALSE(g.failed() || h.failed());
  std::this_thread::sleep_for(2s);
  auto rates = measure_mbit({"g", "h"}, 5s);
  std::printf("link 400 Mbit/s: guaranteed tenant %.1f Mbit/s (guarantee 250), hog %.1f Mbit/s\n", rates["g"],
              rates["h"]);
  EXPECT_GE(rates["g"], 250 * 0.95);
  EXPECT_LE(rates["g"], 300 * 1.05);
  // Work-conserving: the hog gets what the guarantee leaves.
  EXPECT_GE(rates["h"], 100 * 0.9);
  EXPECT_LE(rates["g"] + rates["h"], 400 * 1.05);
}

TEST_F(QosInNetns, ClassChangeUnderTrafficAppliesWithinOneSecondWithoutReset) {
  auto config = [&](int ceiling) {
    return R"({)" + link(ifname_, 10000) + R"(, "classes": [{"name": "c", "ceiling_mbit_s": )" + std::to_string(ceiling) +
           R"(}], "tenants": [{"name": "t", "class": "c", "match": [{"port": 4420}]}]})";
  };
  start_agent(write_config(config(100)));
  TcpSink sink(target().name(), kTargetAddr, {4420});
  BulkSender s(initiator().name(), 4420);
  ASSERT_FALSE(s.failed());
  std::this_thread::sleep_for(1500ms);
  double before = measure_mbit({"t"}, 2s)["t"];
  auto classes_before = htb_classes();

  write_config(config(300));
  agent_->signal(SIGHUP);
  std::this_thread::sleep_for(1s);
  double after = measure_mbit({"t"}, 2s)["t"];
  std::printf("ceiling 100 -> 300 Mbit/s under traffic: %.1f Mbit/s before, %.1f Mbit/s from 1 s after the reload\n",
              before, after);
  EXPECT_NEAR(before, 100, 10);
  EXPECT_NEAR(after, 300, 30);
  EXPECT_FALSE(s.failed()) << s.error();
  // Changed in place: the same classids, the new ceiling.
  auto classes_after = htb_classes();
  ASSERT_EQ(classes_before.size(), classes_after.size());
  for (const auto& [id, c] : classes_before) EXPECT_TRUE(classes_after.count(id)) << id;
  bool found = false;
  for (const auto& [id, c] : classes_after) found |= c.ceil == 300e6;
  EXPECT_TRUE(found);
  std::string m = metrics();
  EXPECT_EQ(metric_value(m, "nvqos_tenant_flows_opened_total", {{"interface", ifname_}, {"tenant", "t"}}), 1.0);
  EXPECT_EQ(metric_value(m, "nvqos_config_reload_success", {}), 1.0);
}


TEST_F(QosInNetns, BadQosConfigOnReloadKeepsTheRunningTree) {
  auto good = R"({)" + link(ifname_, 1000) +
              R"(, "classes": [{"name": "c", "guaranteed_mbit_s": 100, "ceiling_mbit_s": 150}], "default_class": "c"})";
  start_agent(write_config(good));
  auto before = htb_classes();
  ASSERT_EQ(before.size(), 3u);
  for (const std::string& bad : std::vector<std::string>{
           // guarantees above the link
           R"({)" + link(ifname_, 1000) + R"(, "classes": [{"name": "c", "guaranteed_mbit_s": 600}],
               "default_class": "c", "tenants": [{"name": "x", "match": [{"port": 4420}]}]})",
           // unknown class
           R"({)" + link(ifname_, 1000) + R"(, "classes": [{"name": "c", "ceiling_mbit_s": 50}], "default_class": "d"})",
           // no /links entry: checked at reload against the veth's own speed (10 Gbit/s)
           std::string(R"({"classes": [{"name": "c", "guaranteed_mbit_s": 20000}], "default_class": "c"})")}) {
    write_config(bad);
    agent_->signal(SIGHUP);
    ASSERT_TRUE(wait_until([&] { return metric_value(metrics(), "nvqos_config_reload_success", {}) == 0.0; }, 5s))
        << bad;
    auto after = htb_classes();
    ASSERT_EQ(after.size(), before.size()) << bad;
    for (const auto& [id, c] : before) {
      EXPECT_EQ(after[id].rate, c.rate) << id;
      EXPECT_EQ(after[id].ceil, c.ceil) << id;
    }
    write_config(good);
    agent_->signal(SIGHUP);
    ASSERT_TRUE(wait_until([&] { return metric_value(metrics(), "nvqos_config_reload_success", {}) == 1.0; }, 5s));
  }
  EXPECT_NE(agent_->log().find("guarantees sum to"), std::string::npos);
  EXPECT_NE(agent_->log().find("guarantees sum to 20000 Mbit/s, above the link's capacity of 10000 Mbit/s"),
            std::string::npos)
      << agent_->log();
}

TEST_F(QosInNetns, ForeignRootQdiscIsRefusedUnlessAskedToReplaceIt) {
  ASSERT_EQ(run(initiator().exec() + "tc qdisc add dev " + ifname_ + " root handle 1: htb default 1"), 0);
  auto config = write_config(R"({)" + link(ifname_, 1000) +
                             R"(, "classes": [{"name": "c", "ceiling_mbit_s": 100}], "default_class": "c"})");
  AgentProcess refused(agent_spec(config), lab_->path("refused.log"));
  auto status = refused.wait(20s);
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
  EXPECT_NE(refused.log().find("that nvqos did not install"), std::string::npos) << refused.log();
  EXPECT_NE(tc("qdisc show dev " + ifname_).find("qdisc htb 1: root"), std::string::npos);

  start_agent(config, {"--replace-root-qdisc"});
  EXPECT_NE(tc("qdisc show dev " + ifname_).find("qdisc htb 4e56: root"), std::string::npos);
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0);
  EXPECT_EQ(tc("qdisc show dev " + ifname_).find("htb"), std::string::npos);
}

TEST_F(QosInNetns, UnenforcedIopsCeilingIsReportedWithoutSchFq) {
  start_agent(write_config(R"({)" + link(ifname_, 1000) +
                           R"(, "classes": [{"name": "c", "ceiling_mbit_s": 100, "ceiling_iops": 1000}],
                               "default_class": "c"})"));
  std::string m = metrics();
  bool fq = m.find("mechanism=\"edt\"") != std::string::npos;
  auto unenforced = metric_value(m, "nvqos_qos_unenforced_limits",
                                 {{"interface", ifname_}, {"class", "c"}, {"limit", "ceiling_iops"}});
  if (fq) {
    EXPECT_FALSE(unenforced.has_value());
  } else {
    EXPECT_EQ(unenforced, 1.0) << m;
    EXPECT_NE(agent_->log().find("QoS limit not enforced"), std::string::npos);
  }
}

TEST_F(QosInNetns, EgressMechanismIsChosenPerLink) {
  auto config = [&](const std::string& mechanism) {
    return R"({"links": [{"interface": ")" + ifname_ + R"(", "capacity_mbit_s": 1000, "egress_mechanism": ")" +
           mechanism + R"("}], "classes": [{"name": "c", "ceiling_mbit_s": 100, "ceiling_iops": 1000}],
               "default_class": "c"})";
  };
  auto mechanism = [&](const std::string& m) {
    return metric_value(metrics(), "nvqos_qos_mechanism_info",
                        {{"interface", ifname_}, {"direction", "egress"}, {"mechanism", m}});
  };
  start_agent(write_config(config("auto")));
  const bool fq = mechanism("edt").has_value();  // this kernel's sch_fq, as the agent found it
  EXPECT_EQ(mechanism("htb"), 1.0);

  // "edt": taken where sch_fq exists; elsewhere the reload is refused and HTB keeps running.
  write_config(config("edt"));
  agent_->signal(SIGHUP);
  const double want = fq ? 1.0 : 0.0;
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(), "nvqos_config_reload_success", {}) == want; }, 5s));
  if (fq) {
    EXPECT_EQ(mechanism("edt"), 1.0);
    EXPECT_NE(tc("qdisc show dev " + ifname_).find("qdisc fq"), std::string::npos);
  } else {
    EXPECT_NE(agent_->log().find(R"(links[].egress_mechanism is \"edt\", but the kernel cannot attach sch_fq)"),
              std::string::npos)
        << agent_->log();
    EXPECT_EQ(mechanism("htb"), 1.0);
    EXPECT_FALSE(mechanism("edt").has_value());
  }

  // "htb": HTB alone even with sch_fq; the IOPS ceiling is reported as not enforced, naming why.
  write_config(config("htb"));
  agent_->signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(), "nvqos_config_reload_success", {}) == 1.0; }, 5s));
  EXPECT_EQ(mechanism("htb"), 1.0);
  EXPECT_FALSE(mechanism("edt").has_value());
  EXPECT_EQ(tc("qdisc show dev " + ifname_).find("qdisc fq"), std::string::npos);
  EXPECT_EQ(metric_value(metrics(), "nvqos_qos_unenforced_limits",
                         {{"interface", ifname_}, {"class", "c"}, {"limit", "ceiling_iops"}}),
            1.0);
  EXPECT_NE(agent_->log().find(R"(links[].egress_mechanism is \"htb\")"), std::string::npos);
  agent_->signal(SIGTERM);
  ASSERT_EQ(agent_->wait(10s), 0);

  if (fq) return;
  // Starting with "edt" on a kernel without sch_fq fails, naming the interface, and leaves nothing behind.
  AgentProcess refused(agent_spec(write_config(config("edt"))), lab_->path("refused-edt.log"));
  auto status = refused.wait(20s);
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
  EXPECT_NE(refused.log().find("interface " + ifname_ + R"(: links[].egress_mechanism is \"edt\")"),
            std::string::npos)
      << refused.log();
  EXPECT_EQ(tc("qdisc show dev " + ifname_).find("htb"), std::string::npos);
}

// DSCP of the first NVMe/TCP data packet seen on `ifname` in `netns`.
std::optional<int> capture_dscp(const std::string& netns, const std::string& ifname, int port) {
  std::optional<int> dscp;
  in_netns(netns, [&] {
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_IP));
    if (fd < 0) return;
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_IP);
    sll.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
    bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll);
    timeval tv{0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto deadline = std::chrono::steady_clock::now() + 5s;
    std::vector<std::uint8_t> buf(65536);
    while (!dscp && std::chrono::steady_clock::now() < deadline) {
      ssize_t n = recv(fd, buf.data(), buf.size(), 0);
      if (n < static_cast<ssize_t>(ETH_HLEN + sizeof(iphdr) + sizeof(tcphdr))) continue;
      const auto* ip = reinterpret_cast<const iphdr*>(buf.data() + ETH_HLEN);
      if (ip->protocol != IPPROTO_TCP) continue;
      const auto* tcp = reinterpret_cast<const tcphdr*>(buf.data() + ETH_HLEN + ip->ihl * 4);
      if (ntohs(tcp->dest) == port) dscp = ip->tos >> 2;
    }
    close(fd);
  });
  return dscp;
}

TEST_F(QosInNetns, DscpOfTheClassIsOnTheWire) {
  start_agent(write_config(R"({"nvme_ports": {"io": [4420, 4421]}, "classes": [{"name": "c", "dscp": 46}],
                               "tenants": [{"name": "t", "class": "c", "match": [{"port": 4420}]}]})"));
  TcpSink sink(target().name(), kTargetAddr, {4420, 4421});
  std::optional<int> marked, other;
  std::thread capture([&] { marked = capture_dscp(target().name(), target_if(), 4420); });
  std::this_thread::sleep_for(200ms);
  { BulkSender s(initiator().name(), 4420); std::this_thread::sleep_for(300ms); }
  capture.join();
  std::thread capture2([&] { other = capture_dscp(target().name(), target_if(), 4421); });
  std::this_thread::sleep_for(200ms);
  { BulkSender s(initiator().name(), 4421); std::this_thread::sleep_for(300ms); }
  capture2.join();
  ASSERT_TRUE(marked.has_value());
  EXPECT_EQ(*marked, 46);
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(*other, 0) << "traffic of tenants without the class keeps its DSCP";
}

// Bytes HTB sent through `classid` ("4e56:10"), from `tc -s class show`.
double htb_sent_bytes(const std::string& tc_stats, const std::string& classid) {
  const auto at = tc_stats.find("class htb " + classid + " ");
  if (at == std::string::npos) return -1;
  std::smatch m;
  const std::string rest = tc_stats.substr(at);
  static const std::regex sent(R"(Sent (\d+) bytes)");
  return std::regex_search(rest, m, sent) ? std::stod(m[1]) : -1;
}

// A temporary class override under traffic: tenant t (its own HTB class,
// ceiling 300 Mbit/s) is moved into the aggregate class "slow" (100 Mbit/s,
// HTB class 4e56:10 shared with the default tenant) for 6 s, then returns.
TEST_F(QosInNetns, ClassOverrideUnderTrafficMovesTheTenantWithinOneSecondAndExpiryRestoresIt) {
  AgentSpec spec = agent_spec(write_config(R"({)" + link(ifname_, 10000) + R"(,
    "classes": [{"name": "fast", "priority": 1, "ceiling_mbit_s": 300},
                {"name": "slow", "priority": 5, "scope": "aggregate", "ceiling_mbit_s": 100}],
    "default_class": "slow",
    "tenants": [{"name": "t", "class": "fast", "match": [{"port": 4420}]}]})"));
  spec.admin_socket = lab_->path("agent.sock");
  AgentLabTest::start_agent(spec, 20s);
  TcpSink sink(target().name(), kTargetAddr, {4420});
  BulkSender s(initiator().name(), 4420);
  ASSERT_FALSE(s.failed()) << s.error();
  std::this_thread::sleep_for(1500ms);
  const double before = measure_mbit({"t"}, 2s)["t"];
  const std::string slow_leaf = "4e56:10", t_leaf = "4e56:13";  // units keyed by tenant ids 0 (default) and 1 (t)
  const double slow_bytes_before = htb_sent_bytes(tc("-s class show dev " + ifname_), slow_leaf);

  int rc = -1;
  const auto set_at = std::chrono::steady_clock::now();  // the TTL starts after this
  const std::string set = agent_->nvqosctl("set-class t slow --ttl 6s", &rc);
  ASSERT_EQ(rc, 0) << set;
  EXPECT_NE(set.find("t: class slow (override of the configured fast for"), std::string::npos) << set;
  std::this_thread::sleep_for(1s);
  const double during = measure_mbit({"t"}, 2s)["t"];
  const std::string tc_during = tc("-s class show dev " + ifname_);
  const std::string m = metrics();
  const std::string classes = agent_->nvqosctl("--json classes");
  const std::string tenants = agent_->nvqosctl("tenants");
  const std::string table = agent_->nvqosctl("classes");

  // The TTL passes: t goes back to its own class.
  ASSERT_TRUE(wait_until([&] {
    return !metric_value(metrics(), "nvqos_tenant_class_override_info", {{"tenant", "t"}}).has_value();
  }, 10s)) << agent_->log();
  const double expired_after_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - set_at).count();
  std::this_thread::sleep_for(1s);
  const double after = measure_mbit({"t"}, 2s)["t"];
  std::printf("[ figures  ] class override fast (300) -> slow (100 Mbit/s) under traffic: %.1f before, %.1f from 1 s "
              "after the override, %.1f after it expired (seen %.1f s after set, TTL 6 s)\n",
              before, during, after, expired_after_s);

  EXPECT_NEAR(before, 300, 30);
  EXPECT_NEAR(during, 100, 10);
  EXPECT_NEAR(after, 300, 30);
  EXPECT_GE(expired_after_s, 6.0);
  EXPECT_LT(expired_after_s, 8.0);
  EXPECT_FALSE(s.failed()) << "the connection must survive both moves: " << s.error();
  EXPECT_EQ(metric_value(metrics(), "nvqos_tenant_flows_opened_total", {{"interface", ifname_}, {"tenant", "t"}}), 1.0);
  // During the override t's packets went through slow's HTB class.
  EXPECT_GT(htb_sent_bytes(tc_during, slow_leaf) - slow_bytes_before, 100e6 / 8) << tc_during;
  EXPECT_EQ(htb_sent_bytes(tc_during, t_leaf), -1) << "t's own class is gone while it is in slow:\n" << tc_during;
  EXPECT_GT(htb_sent_bytes(tc("-s class show dev " + ifname_), t_leaf), 0) << "t's class is back";
  EXPECT_EQ(metric_value(m, "nvqos_tenant_class_override_info",
                         {{"tenant", "t"}, {"class", "slow"}, {"configured_class", "fast"}}),
            1.0)
      << m;
  EXPECT_EQ(metric_value(m, "nvqos_tenant_info", {{"tenant", "t"}, {"class", "slow"}}), 1.0);
  EXPECT_TRUE(metric_value(m, "nvqos_tenant_class_override_expiry_timestamp_seconds", {{"tenant", "t"}}).has_value());
  EXPECT_NE(tenants.find("slow (override; configured fast, "), std::string::npos) << tenants;
  EXPECT_NE(classes.find("\"overridden_tenants\": [\n        \"t\"\n      ]"), std::string::npos) << classes;
  // slow's row: its limit, default and t (here by the override), its HTB class, the rate against its ceiling.
  std::smatch row;
  ASSERT_TRUE(std::regex_search(table, row, std::regex(R"(slow +5 +aggregate +- +- +100 Mbit/s +- +default, t\* +(\S+) +htb +4e56:10 +(\d+) Mbit/s +- +(\d+) %)")))
      << table;
  EXPECT_EQ(row[1], ifname_);
  EXPECT_NEAR(std::stod(row[2]), 100, 20) << "the rate over the last second\n" << table;
  EXPECT_NEAR(std::stod(row[3]), 100, 20) << "against the ceiling, in %\n" << table;
  EXPECT_NE(table.find("*: in the class by a temporary override"), std::string::npos) << table;
  EXPECT_EQ(metric_value(metrics(), "nvqos_tenant_info", {{"tenant", "t"}, {"class", "fast"}}), 1.0);
  const std::string log = agent_->log();
  EXPECT_NE(log.find("tenant class override set"), std::string::npos) << log;
  EXPECT_NE(log.find("tenant class override expired"), std::string::npos) << log;
}

}  // namespace
}  // namespace nvqos::test
