// Floods against a target running the agent: nvqos-target in one namespace with
// the agent on its veth, an established nvqos-load job (tenant gold) from
// another, and from that other namespace a SYN flood (raw frames, random source
// ports, some sources that answer with RST and some that cannot be reached) and
// a flood of short-lived connections (connect, ICReq, close) to port 4420.
// Asserted: gold's connections keep their flows (no re-open), its commands keep
// being counted for gold; /metrics answers in time throughout; the bounded
// tables stay within their capacity and export their fill; the agent's RSS
// stays bounded (printed).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "agent_lab.hpp"

namespace nvqos::test {
namespace {

using namespace std::chrono_literals;

constexpr int kMetricsPort = 9468;
const char* kTarget = "10.203.0.1";
const char* kGoldHost = "10.203.0.2";
const char* kFloodHost = "10.203.0.3";        // a real address: answers the SYN-ACKs with RST
const char* kUnreachable = "198.51.100.";      // spoofed sources the target cannot answer
const char* kSubnqn = "nqn.2026-11.io.nvqos:flood-test";
constexpr std::uint32_t kMaxFlows = 1024;      // the smallest flow table the config allows
constexpr int kSynFlood = 30000;               // > 16384 handshakes and > 29 x the flow table
constexpr int kShortLived = 2500;              // > 2 x the flow table

std::uint16_t checksum(const std::uint8_t* p, std::size_t n, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += std::uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) sum += std::uint32_t(p[n - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// An Ethernet/IPv4/TCP SYN with valid checksums, so the target's stack answers it.
std::vector<std::uint8_t> syn_frame(const std::uint8_t* dst_mac, const std::uint8_t* src_mac, in_addr src, in_addr dst,
                                    std::uint16_t sport, std::uint32_t seq) {
  std::vector<std::uint8_t> f(14 + 20 + 20, 0);
  std::memcpy(&f[0], dst_mac, 6);
  std::memcpy(&f[6], src_mac, 6);
  f[12] = 0x08;
  std::uint8_t* ip = &f[14];
  ip[0] = 0x45;
  ip[3] = 40;
  ip[6] = 0x40;  // DF
  ip[8] = 64;
  ip[9] = IPPROTO_TCP;
  std::memcpy(ip + 12, &src, 4);
  std::memcpy(ip + 16, &dst, 4);
  const std::uint16_t ipsum = checksum(ip, 20);
  ip[10] = ipsum >> 8;
  ip[11] = ipsum & 0xff;
  std::uint8_t* tcp = ip + 20;
  tcp[0] = sport >> 8;
  tcp[1] = sport & 0xff;
  tcp[2] = 4420 >> 8;
  tcp[3] = 4420 & 0xff;
  for (int i = 0; i < 4; ++i) tcp[4 + i] = static_cast<std::uint8_t>(seq >> (24 - 8 * i));
  tcp[12] = 5 << 4;
  tcp[13] = 0x02;  // SYN
  tcp[14] = 0xff;  // window
  tcp[15] = 0xff;
  std::uint8_t pseudo[12];
  std::memcpy(pseudo, &src, 4);
  std::memcpy(pseudo + 4, &dst, 4);
  pseudo[8] = 0;
  pseudo[9] = IPPROTO_TCP;
  pseudo[10] = 0;
  pseudo[11] = 20;
  std::uint32_t sum = 0;
  for (int i = 0; i < 12; i += 2) sum += std::uint32_t(pseudo[i]) << 8 | pseudo[i + 1];
  const std::uint16_t tcpsum = checksum(tcp, 20, sum);
  tcp[16] = tcpsum >> 8;
  tcp[17] = tcpsum & 0xff;
  return f;
}

bool parse_mac(const std::string& text, std::uint8_t* mac) {
  return std::sscanf(text.c_str(), "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4],
                     &mac[5]) == 6;
}

// An NVMe/TCP ICReq (128 bytes): the connection has NVMe/TCP payload, so the
// data path keeps PDU-walk state for it until it closes.
std::string icreq() {
  std::string pdu(128, '\0');
  pdu[2] = static_cast<char>(128);
  pdu[4] = static_cast<char>(128);
  return pdu;
}

class ConnectionFloodTest : public AgentLabTest {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, BPF, raw sockets)";
    lab_.emplace(LabSpec{"fl", {std::string(kTarget) + "/24"},
                         {std::string(kGoldHost) + "/24", std::string(kFloodHost) + "/24"}});
    lab_->route_from(kTarget, kGoldHost);
    // Room for the short-lived connections' TIME_WAIT sockets on the initiator.
    must(initiator().exec() + "sysctl -qw net.ipv4.tcp_tw_reuse=1");
    lab_->receive_each_flow_on_one_cpu(true, true);
    target_proc_ =
        start_target(target(), {std::string(kTarget) + ":4420"}, kSubnqn, "1G:4096", lab_->path("target.log"));
    const std::string config =
        lab_->write_file("policy.json", R"({"version": 1, "tenants": [{"name": "gold", "match": [{"remote": ")" +
                                            std::string(kGoldHost) + R"(/32"}]}], "limits": {"max_flows": )" +
                                            std::to_string(kMaxFlows) + "}}");
    AgentSpec spec(target().name(), target_if(), kMetricsPort);
    spec.config = config;
    spec.telemetry_interval = "200ms";
    spec.admin_socket = lab_->path("agent.sock");
    start_agent(spec, 15s);
  }

  // /metrics, and how long it took to answer.
  std::string metrics(double* seconds = nullptr) {
    const auto start = std::chrono::steady_clock::now();
    std::string body = agent_->metrics();
    if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return body;
  }

  double gold(const std::string& text, const std::string& name) {
    return metric_value(text, name, {{"tenant", "gold"}}).value_or(-1);
  }

  double gold_commands(const std::string& text) {
    return metric_value(text, "nvqos_nvme_commands_total", {{"tenant", "gold"}, {"op", "read"}, {"role", "target"}})
        .value_or(0);
  }

  void start_load(const std::string& runtime) {
    const std::string jobs = lab_->write_file(
        "jobs.json", R"({"jobs": [{"name": "gold", "target": ")" + std::string(kTarget) + R"(:4420", "subnqn": ")" +
                         kSubnqn + R"(", "rw": "randread", "bs": "4k", "qd": 4, "runtime": ")" + runtime + R"("}]})");
    load_ = nvqos::test::start_load(initiator(), {"--job-file", jobs}, lab_->path("load.log"));
  }

  // Raw SYNs from the initiator's namespace: half from kFloodHost (whose stack
  // answers the SYN-ACKs with RST), half from unreachable spoofed sources.
  void syn_flood(int count) {
    std::string mac_text;
    ASSERT_EQ(run(target().exec() + "cat /sys/class/net/" + target_if() + "/address", &mac_text), 0);
    std::string src_mac_text;
    ASSERT_EQ(run(initiator().exec() + "cat /sys/class/net/" + initiator_if() + "/address", &src_mac_text), 0);
    std::uint8_t dst_mac[6], src_mac[6];
    ASSERT_TRUE(parse_mac(mac_text, dst_mac) && parse_mac(src_mac_text, src_mac));
    int sent = 0;
    in_netns(initiator().name(), [&] {
      const int fd = ::socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
      if (fd < 0) return;
      sockaddr_ll to{};
      to.sll_family = AF_PACKET;
      to.sll_ifindex = static_cast<int>(if_nametoindex(initiator_if().c_str()));
      to.sll_halen = 6;
      std::memcpy(to.sll_addr, dst_mac, 6);
      in_addr dst{}, real{};
      inet_pton(AF_INET, kTarget, &dst);
      inet_pton(AF_INET, kFloodHost, &real);
      std::mt19937 rng(4420);
      for (int i = 0; i < count; ++i) {
        in_addr src = real;
        if (i % 2) {
          const std::string spoofed = std::string(kUnreachable) + std::to_string(1 + rng() % 250);
          inet_pton(AF_INET, spoofed.c_str(), &src);
        }
        const auto frame = syn_frame(dst_mac, src_mac, src, dst, static_cast<std::uint16_t>(1024 + rng() % 64000),
                                     static_cast<std::uint32_t>(rng()));
        if (::sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
            static_cast<ssize_t>(frame.size()))
          ++sent;
        // Pace a little: the veth backlog would drop a burst, and tc must see the frames.
        if (i % 256 == 255) std::this_thread::sleep_for(1ms);
      }
      ::close(fd);
    });
    std::printf("[ flood    ] SYN flood: %d of %d frames sent\n", sent, count);
    ASSERT_GT(sent, count * 9 / 10);
  }

  // Connect, send an ICReq, close: as fast as the stacks allow.
  void short_lived_connections(int count) {
    int connected = 0;
    in_netns(initiator().name(), [&] {
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(4420);
      inet_pton(AF_INET, kTarget, &to.sin_addr);
      sockaddr_in from{};
      from.sin_family = AF_INET;
      inet_pton(AF_INET, kFloodHost, &from.sin_addr);
      const std::string pdu = icreq();
      for (int i = 0; i < count; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) continue;
        if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0 &&
            ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0) {
          ++connected;
          (void)::send(fd, pdu.data(), pdu.size(), MSG_NOSIGNAL);
        }
        ::close(fd);
      }
    });
    std::printf("[ flood    ] short-lived connections: %d of %d connected\n", connected, count);
    ASSERT_GT(connected, count * 9 / 10);
  }

  std::unique_ptr<ChildProcess> target_proc_;
  std::unique_ptr<ChildProcess> load_;
};

TEST_F(ConnectionFloodTest, EstablishedTenantSurvivesSynAndShortLivedConnectionFloods) {
  start_load("14s");
  // The job is connected and its commands are being counted for gold.
  ASSERT_TRUE(wait_until([&] { return gold_commands(metrics()) > 100; }, 10s)) << read_file(lab_->path("load.log"));
  std::this_thread::sleep_for(500ms);
  const std::string before = metrics();
  const double opened_before = gold(before, "nvqos_tenant_flows_opened_total");
  const double commands_before = gold_commands(before);
  const double rss_before = metric_value(before, "nvqos_agent_resident_memory_bytes", {}).value_or(0);
  ASSERT_GT(opened_before, 0) << before;
  ASSERT_GT(rss_before, 0);

  // Scrape all along the floods: the agent must answer every time, in time.
  std::atomic<bool> flooding{true};
  double slowest = 0;
  int scrapes = 0, failed = 0;
  std::thread scraper([&] {
    while (flooding) {
      double seconds = 0;
      const std::string text = metrics(&seconds);
      ++scrapes;
      if (text.find("nvqos_datapath_table_entries") == std::string::npos) ++failed;
      slowest = std::max(slowest, seconds);
      std::this_thread::sleep_for(100ms);
    }
  });
  syn_flood(kSynFlood);
  std::this_thread::sleep_for(600ms);  // a telemetry interval
  const std::string after_syn = metrics();
  short_lived_connections(kShortLived);
  flooding = false;
  scraper.join();
  std::this_thread::sleep_for(600ms);  // a telemetry interval

  const std::string after = metrics();
  const double commands_after = gold_commands(after);
  const double rss_after = metric_value(after, "nvqos_agent_resident_memory_bytes", {}).value_or(0);
  std::printf("[ figures  ] /metrics during the floods: %d scrapes, slowest %.3f s, %d without data\n", scrapes,
              slowest, failed);
  std::printf("[ figures  ] agent RSS: %.1f MiB before, %.1f MiB after the floods\n", rss_before / 1048576.0,
              rss_after / 1048576.0);
  for (const char* table : {"flow_table", "handshakes", "inflight_cmds"}) {
    const auto entries = metric_value(after, "nvqos_datapath_table_entries", {{"table", table}});
    const auto capacity = metric_value(after, "nvqos_datapath_table_capacity_entries", {{"table", table}});
    ASSERT_TRUE(entries && capacity) << table << "\n" << after;
    std::printf("[ figures  ] %s: %.0f of %.0f entries\n", table, *entries, *capacity);
    EXPECT_LE(*entries, *capacity) << table;
  }
  EXPECT_EQ(metric_value(after, "nvqos_datapath_table_capacity_entries", {{"table", "flow_table"}}), kMaxFlows);
  auto default_opened = [&](const std::string& text) {
    return metric_value(text, "nvqos_tenant_flows_opened_total", {{"tenant", "default"}}).value_or(0);
  };
  const double syn_packets =
      metric_value(after_syn, "nvqos_tenant_packets_total", {{"tenant", "default"}, {"direction", "ingress"}})
          .value_or(0);
  std::printf("[ figures  ] flows opened: gold %.0f -> %.0f; default: %.0f after the SYN flood (%.0f packets in), "
              "%.0f after the short-lived connections\n",
              opened_before, gold(after, "nvqos_tenant_flows_opened_total"), default_opened(after_syn), syn_packets,
              default_opened(after));

  // The SYN flood reached tc and opened (almost) no flow: before handshakes were kept apart,
  // every SYN opened one. A few packets it provokes that are neither SYN nor RST (e.g. the
  // target's challenge ACKs to out-of-window RSTs on reused tuples) may open a flow each.
  // The short-lived connections opened theirs (more than one per connection when the full
  // table evicted one before its last packet).
  EXPECT_GE(syn_packets, kSynFlood * 9 / 10) << "the SYN flood did not reach tc";
  EXPECT_LT(default_opened(after_syn), kSynFlood / 100) << "the SYN flood opened flows";
  EXPECT_GE(default_opened(after), kShortLived * 9 / 10) << "the short-lived connections did not reach tc";
  // Gold's flows were never evicted: an evicted flow is re-opened by its next packet.
  EXPECT_EQ(gold(after, "nvqos_tenant_flows_opened_total"), opened_before);
  EXPECT_GT(commands_after, commands_before) << "gold's commands stopped being counted";
  // And they keep being counted after the floods.
  EXPECT_TRUE(wait_until([&] { return gold_commands(metrics()) > commands_after + 50; }, 5s));

  EXPECT_EQ(failed, 0);
  EXPECT_GT(scrapes, 0);
  EXPECT_LT(slowest, 2.0) << "the agent was starved";
  EXPECT_LT(rss_after, rss_before + 64.0 * 1048576) << "agent memory grew with the floods";
  EXPECT_EQ(load_->wait(30s), 0) << read_file(lab_->path("load.log"));
}

}  // namespace
}  // namespace nvqos::test
