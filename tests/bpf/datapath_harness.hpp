// Runs the nvqos BPF programs under BPF_PROG_TEST_RUN: an RAII owner of the
// loaded nvqos_datapath skeleton with typed access to its maps. Shared by the
// BPF program tests and nvqos-bench-bpf.
#pragma once

#include <bpf/libbpf.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nvqos/abi.h"
#include "nvqos_datapath.skel.h"
#include "packet_builder.hpp"

namespace nvqos::testing {

// Why this process cannot load and run BPF programs, or "" if it can.
std::string bpf_unavailable_reason();

// __sk_buff fields a tc test run may set; 0 leaves the kernel's default.
struct SkbContext {
  std::uint32_t ifindex = 0;
  std::uint32_t gso_segs = 0;
  std::uint32_t gso_size = 0;
  std::uint64_t tstamp = 0;
  std::uint32_t priority = 0;
};

struct RunResult {
  std::uint32_t retval = 0;
  std::uint32_t duration_ns = 0;  // kernel-measured mean per repeat
  // tc: the skb after the (last) run.
  std::uint64_t tstamp = 0;
  std::uint32_t priority = 0;
  Bytes data;  // the frame after the (last) run, tc and XDP
};

// Throw std::system_error naming the program on failure.
RunResult run_tc(const bpf_program *prog, const Bytes &frame, const SkbContext &ctx = {},
                 std::uint32_t repeat = 1);
RunResult run_xdp(const bpf_program *prog, const Bytes &frame, std::uint32_t repeat = 1);

// Sizes of the bounded maps set before load; 0 keeps the object's size. Small
// tables let a test overflow them with a few thousand packets.
struct MapSizes {
  std::uint32_t flows = 0;     // flow_table
  std::uint32_t conns = 0;     // nvme_conns
  std::uint32_t inflight = 0;  // inflight_cmds
  std::uint32_t access = 0;    // access_conns (a preallocated hash: resizable before load too)
};

class Datapath {
 public:
  Datapath();  // open and load; throws std::system_error with libbpf's errno
  explicit Datapath(const MapSizes &sizes);
  ~Datapath();
  Datapath(const Datapath &) = delete;
  Datapath &operator=(const Datapath &) = delete;

  nvqos_datapath &skel() { return *skel_; }

  void add_nvme_port(std::uint16_t port, std::uint32_t kind = NVQOS_PORT_KIND_IO);
  // prefix: an address in text; prefix_len counts address bits (IPv4: 0..32).
  void add_rule(std::uint16_t port, std::string_view prefix, unsigned prefix_len,
                std::uint32_t tenant_id);
  // Writes nvme_port_bitmap (used only with NVQOS_SETTINGS_F_PORT_BITMAP).
  void set_port_bitmap(const std::vector<std::uint16_t> &ports);
  void set_settings(std::uint32_t flags);
  void set_tenant_flags(std::uint32_t tenant_id, std::uint32_t flags);
  void set_tenant_slow_cmd_ns(std::uint32_t tenant_id, std::uint64_t slow_cmd_ns);
  void set_tenant_config(std::uint32_t tenant_id, const nvqos_tenant_config &config);
  void set_limiter(std::uint32_t limiter_id, const nvqos_limiter_config &config);
  nvqos_limiter_state limiter_state(std::uint32_t limiter_id) const;
  // settings.fixed_now_ns (0 = the real clock), keeping the flags.
  void set_clock(std::uint64_t fixed_now_ns);

  nvqos_tenant_stats tenant_stats(std::uint32_t tenant_id) const;  // summed over CPUs
  nvqos_datapath_stats datapath_stats() const;                     // summed over CPUs
  std::optional<nvqos_flow_value> flow(const nvqos_flow_key &key) const;
  std::vector<std::pair<nvqos_flow_key, nvqos_flow_value>> flows() const;

  // NVMe command tracking: summed over CPUs; zeros for a key never seen.
  nvqos_cmd_stats cmd_stats(const nvqos_cmd_key &key) const;
  nvqos_nvme_stats nvme_stats() const;
  // The latency histogram of a key, empty if none.
  std::vector<std::uint64_t> cmd_latency(const nvqos_cmd_key &key) const;
  std::size_t inflight_count() const;
  // Slow-command records waiting in the ring buffer (consumes them).
  std::vector<nvqos_slow_cmd_event> drain_slow_cmd_events();

  RunResult ingress(const Bytes &frame, const SkbContext &ctx = {}, std::uint32_t repeat = 1);
  RunResult egress(const Bytes &frame, const SkbContext &ctx = {}, std::uint32_t repeat = 1);
  RunResult xdp(const Bytes &frame, std::uint32_t repeat = 1);

 private:
  nvqos_datapath *skel_ = nullptr;
};

// What the agent loads with no --config: the NVMe/TCP I/O port and the
// built-in default tenant.
std::unique_ptr<Datapath> observe_only_datapath(const MapSizes &sizes = {});

// Keys in `map`. Counts no further than twice its capacity: enough to fail a
// capacity check, and bounded should the key walk restart.
std::size_t map_entries(const bpf_map *map);

// The per-CPU values of one key of a per-CPU map of u64 counters, summed field
// by field; zeros when the key is absent. (Copied, not cast: the counters are
// __u64, which std::uint64_t may not alias.)
template <typename T>
T percpu_sum(const bpf_map *map, std::uint32_t key) {
  static_assert(sizeof(T) % sizeof(__u64) == 0);
  const int cpus = libbpf_num_possible_cpus();
  std::array<__u64, sizeof(T) / sizeof(__u64)> sum{};
  std::vector<__u64> raw(sum.size() * static_cast<std::size_t>(cpus > 0 ? cpus : 0));
  if (!raw.empty() && bpf_map__lookup_elem(map, &key, sizeof key, raw.data(), raw.size() * sizeof(__u64), 0) == 0)
    for (std::size_t i = 0; i < raw.size(); ++i) sum[i % sum.size()] += raw[i];
  T total;
  std::memcpy(&total, sum.data(), sizeof total);
  return total;
}

// The flow key tc builds for a packet of a connection between local and remote.
nvqos_flow_key make_flow_key(std::string_view local, std::uint16_t local_port,
                             std::string_view remote, std::uint16_t remote_port,
                             std::uint32_t ifindex);

}  // namespace nvqos::testing
