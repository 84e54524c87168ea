// The connection listing of the admin API (GET /v1/flows, nvqosctl flows):
// one row per flow_table entry with its tenant, role and live rates. Rows
// carry free-form `attributes` so other rooms add columns (e.g. the NQNs of a
// connection) without changing this code or nvqosctl.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvqos/abi.h"

namespace nvqos::agent {

struct FlowRow {
  std::string interface;
  nvqos_flow_key key{};
  nvqos_flow_value value{};
  std::string tenant;  // name, or "id:N" for a slot no longer configured
  double age_seconds = 0;   // since the first packet
  double idle_seconds = 0;  // since the last packet
  double rate_bytes_per_second[NVQOS_DIR_MAX] = {0, 0};
  // true: no earlier reading of this flow (or too old): the rate is the
  // average over the connection's life, not a live rate.
  bool rate_is_lifetime_average = true;
  std::map<std::string, std::string> attributes;
};

// Live rates from successive readings of the flow table.
class FlowRateTracker {
 public:
  using Clock = std::chrono::steady_clock;
  explicit FlowRateTracker(std::chrono::seconds max_gap = std::chrono::seconds(60)) : max_gap_(max_gap) {}
  // Sets each row's rate from its previous reading if that is at most
  // max_gap old and the counters did not go backwards (a reused 5-tuple),
  // else the lifetime average; remembers this reading, forgets flows absent.
  void update(Clock::time_point now, std::vector<FlowRow>& rows);

 private:
  struct Reading {
    Clock::time_point at;
    std::uint64_t bytes[NVQOS_DIR_MAX];
    std::uint64_t first_seen_ns;
  };
  using Key = std::array<std::uint8_t, sizeof(nvqos_flow_key)>;
  std::chrono::seconds max_gap_;
  std::map<Key, Reading> last_;
};

// "10.0.0.1:4420", "[2001:db8::1]:4420" (v4-mapped addresses print as IPv4).
std::string format_endpoint(const std::uint8_t addr[16], std::uint16_t port_be);

nlohmann::json flow_to_json(const FlowRow& row);

}  // namespace nvqos::agent
