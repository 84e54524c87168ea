// The tc programs on real, non-linear skbs: a frame sent through AF_PACKET
// larger than a page carries only its Ethernet header in the linear area
// (net/packet/af_packet.c), so tc must pull before it can parse. The test runs
// in a child process with its own network namespace: its veth pair disappears
// with the child, also when the test fails.
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "datapath_harness.hpp"
#include "packet_builder.hpp"

namespace nvqos::testing {
namespace {

constexpr std::size_t kPayload = 6000;  // frame > PAGE_SIZE: AF_PACKET makes it non-linear

// Child-side steps; each returns an exit code naming the step that failed.
enum ChildExit { kOk = 0, kUnshare = 10, kIpLink, kAttach, kSocket, kSend, kTimeout };

int attach(const char *ifname, bpf_tc_attach_point point, const bpf_program *prog) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(if_nametoindex(ifname)),
              .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = bpf_program__fd(prog));
  const int err = bpf_tc_hook_create(&hook);
  if (err != 0 && err != -EEXIST) return err;
  return bpf_tc_attach(&hook, &opts);
}

int run_child(Datapath &dp, const Bytes &frame) {
  if (unshare(CLONE_NEWNET) != 0) return kUnshare;
  if (std::system("ip link add bpfnl0 mtu 9000 type veth peer name bpfnl1 mtu 9000 && "
                  "ip link set bpfnl0 up && ip link set bpfnl1 up") != 0)
    return kIpLink;
  if (attach("bpfnl0", BPF_TC_EGRESS, dp.skel().progs.nvqos_tc_egress) != 0 ||
      attach("bpfnl1", BPF_TC_INGRESS, dp.skel().progs.nvqos_tc_ingress) != 0)
    return kAttach;

  const int fd = socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) return kSocket;
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_ifindex = static_cast<int>(if_nametoindex("bpfnl0"));
  addr.sll_halen = ETH_ALEN;
  std::memcpy(addr.sll_addr, frame.data(), ETH_ALEN);
  const ssize_t sent = sendto(fd, frame.data(), frame.size(), 0,
                              reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
  close(fd);
  if (sent != static_cast<ssize_t>(frame.size())) return kSend;

  // Egress ran in sendto(); the peer's ingress runs from the backlog soon after.
  for (int i = 0; i < 200; ++i) {
    if (dp.datapath_stats().packets_nvme >= 2) return kOk;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return kTimeout;
}

TEST(NonLinearSkbTest, TcPullsHeadersThatAreNotInTheLinearArea) {
  if (const std::string why = bpf_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
  if (std::system("ip -V >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs iproute2's ip";

  Datapath dp;
  dp.add_nvme_port(NVQOS_PORT_NVME_IO);
  dp.set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT);
  const PacketBuilder pkt = PacketBuilder()
                                .ip("10.0.0.1", "10.0.0.2")
                                .tcp(40000, NVQOS_PORT_NVME_IO, kTcpAck | kTcpPsh)
                                .payload(kPayload);
  const Bytes frame = pkt.build();

  const pid_t child = fork();
  ASSERT_GE(child, 0) << "fork: " << std::strerror(errno);
  if (child == 0) _exit(run_child(dp, frame));
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), kOk)
      << "child step failed (10 unshare, 11 ip link, 12 tc attach, 13 socket, 14 send, "
         "15 ingress never saw the frame)";

  const nvqos_datapath_stats ds = dp.datapath_stats();
  EXPECT_EQ(ds.parse_errors, 0u);
  EXPECT_EQ(ds.packets_nvme, 2u);
  const nvqos_tenant_stats ts = dp.tenant_stats(NVQOS_TENANT_DEFAULT);
  EXPECT_EQ(ts.bytes[NVQOS_DIR_EGRESS], pkt.ip_length());
  EXPECT_EQ(ts.payload_bytes[NVQOS_DIR_EGRESS], kPayload);
  EXPECT_EQ(ts.bytes[NVQOS_DIR_INGRESS], pkt.ip_length());
  EXPECT_EQ(ts.payload_bytes[NVQOS_DIR_INGRESS], kPayload);

  // One flow per end: the sender is the initiator, the receiver the target.
  int roles[NVQOS_ROLE_MAX] = {};
  for (const auto &[key, value] : dp.flows()) ++roles[value.role];
  EXPECT_EQ(roles[NVQOS_ROLE_INITIATOR], 1);
  EXPECT_EQ(roles[NVQOS_ROLE_TARGET], 1);
}

}  // namespace
}  // namespace nvqos::testing
