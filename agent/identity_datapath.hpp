// Tenants by NVMe identity and access control, the data path side for one
// interface: writes the NQN and access maps of the skeleton, consumes the
// connect_events ring buffer on the agent's io_context (moves flows whose
// tenant only a glob rule decides, caches the pair for the kernel, logs
// refusals with both NQNs), keeps the NQNs of every connection seen, and
// expires gated connections that never sent their Connect.
#pragma once

#include <bpf/libbpf.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "flows.hpp"
#include "identity.hpp"
#include "nvqos/abi.h"
#include "result.hpp"
#include "ring_buffer_reader.hpp"

struct nvqos_datapath;  // generated skeleton

namespace nvqos::agent {

struct DesiredState;

// A connection whose Connect the data path parsed (nvqosctl flows shows these).
struct FlowIdentity {
  nvqos_flow_key flow{};
  std::string hostnqn;
  std::string subnqn;
  std::uint16_t qid = 0;       // 0 = admin queue
  std::uint16_t cntlid = 0xffff;
  std::uint8_t role = 0;       // enum nvqos_role
  std::uint8_t verdict = 0;    // enum nvqos_access_verdict
  std::uint32_t tenant_id = 0; // after NQN rules
  std::string tenant;          // its name when the Connect was seen
  bool tenant_by_nqn = false;  // an NQN rule decided the tenant (kernel or agent)
  std::chrono::system_clock::time_point connected{};
};

struct AccessCounters {
  std::string subsystem;  // SUBNQN, or "(unknown)": refused before a readable Connect
  nvqos_access_stats stats{};  // summed over CPUs
};

struct IdentityCounters {
  nvqos_connect_stats connect{};  // summed over CPUs
  std::vector<AccessCounters> access;
  std::map<std::uint32_t, nvqos_access_drops> tenant_drops;  // tenant id -> packets/bytes dropped
  std::uint64_t events_received = 0;
  std::uint64_t moved_by_agent = 0;     // flows the agent moved to a glob rule's tenant
  std::uint64_t gated_connections = 0;  // access_conns entries (pending + refused)
  std::uint64_t connect_timeouts = 0;   // gated connections refused for sending no Connect in time
  std::uint64_t refusals_freed = 0;     // refused connections idle for the timeout, freed from access_conns
};

std::string nqn_to_string(const nvqos_nqn& nqn);
std::string flow_endpoint(const std::uint8_t addr[16], std::uint16_t port_be);

class IdentityDatapath {
 public:
  IdentityDatapath(std::string ifname, nvqos_datapath* skel, int possible_cpus);
  ~IdentityDatapath();

  // Writes the NQN and access maps for `next` by difference (before the
  // settings flag enables access checks).
  Status apply(const DesiredState& next);
  // After the address rules re-attributed flows: put the NQN tenants back.
  Status reattribute(const DesiredState& next);
  Status watch(boost::asio::io_context& io);
  // Also expires gated connections and forgets identities of closed flows.
  Status read(IdentityCounters& out);
  std::vector<FlowIdentity> flows() const;
  // Adds the access verdict to the rows of connections whose Connect was seen
  // (flows() in datapath_inspect.cpp adds their NQNs and queue).
  void annotate(std::vector<FlowRow>& rows) const;

 private:
  using KeyBytes = std::string;
  Status sync_map(bpf_map* map, const std::map<KeyBytes, std::string>& old_entries,
                  const std::map<KeyBytes, std::string>& new_entries, const char* name);
  std::map<KeyBytes, std::string> nqn_entries(const std::map<std::string, std::uint32_t>& m) const;
  void access_entries(const IdentityState& st, std::map<KeyBytes, std::string>& subsystems,
                      std::map<KeyBytes, std::string>& hosts, std::map<KeyBytes, std::string>& cidrs,
                      std::map<KeyBytes, std::string>& ports);
  std::uint32_t subsys_id(const std::string& nqn);
  std::map<KeyBytes, std::string> kernel_keys(bpf_map* map) const;
  Status clear_pair_cache();
  std::uint32_t address_tenant(const nvqos_flow_key& key, std::uint8_t role) const;
  void on_event(const nvqos_connect_event& e);
  void expire_gated(IdentityCounters& out);
  const char* refuse_mode(std::uint16_t port, const std::string& subnqn) const;

  std::string ifname_;
  nvqos_datapath* skel_;
  int possible_cpus_;
  IdentityState current_;
  bool applied_ = false;
  std::map<std::uint32_t, std::string> tenant_names_;
  std::uint32_t settings_flags_ = 0;
  std::map<std::string, std::uint32_t> subsys_ids_;  // stable while the agent runs
  std::map<std::array<std::uint8_t, sizeof(nvqos_flow_key)>, FlowIdentity> flows_;
  std::uint64_t events_received_ = 0;
  std::uint64_t moved_by_agent_ = 0;
  std::uint64_t connect_timeouts_ = 0;
  std::uint64_t refusals_freed_ = 0;
  LogRateLimiter log_limit_{10};
  RingBufferReader events_;
};

}  // namespace nvqos::agent
