// The SLO controller in the agent: a steady timer on the agent's io_context
// reads each interface's counters every control interval, turns them into a
// per-class observation, steps that interface's SloController and applies the
// effective ceilings through the same path as static ones (the interface's
// DesiredState: HTB classes and limiters, by difference). It also renders its
// metrics and the state behind GET /v1/slo (`nvqosctl slo`).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "config.hpp"
#include "datapath.hpp"
#include "policy.hpp"
#include "slo_controller.hpp"

namespace nvqos::agent {

// The classes of `policy` as one interface's controller sees them.
std::vector<SloClass> slo_classes(const Policy& policy, std::uint64_t capacity_bps);

// Cumulative counters of one interface, by tenant.
struct SloReading {
  std::chrono::steady_clock::time_point at{};
  std::map<std::string, std::uint64_t> egress_bytes;  // tenant -> wire bytes sent
  std::map<std::string, std::uint64_t> commands;      // tenant -> commands completed (any op)
  // (tenant, op) -> fine latency histogram (kernel scheme), roles summed
  std::map<std::pair<std::string, std::uint8_t>, std::vector<std::uint64_t>> latency;
};
SloReading slo_reading(const InterfaceCounters& counters, std::chrono::steady_clock::time_point at);

// What happened between two readings, by class: latency deltas merged over
// the class's tenants; the rate a ceiling constrains (the sum of the tenants'
// for an aggregate class, the busiest tenant's for a per-tenant one).
SloObservation slo_observation(const SloReading& before, const SloReading& now, const Policy& policy);

struct EffectiveCeiling {
  double bps = 0;
  double iops = 0;  // 0: not adapted
};
// `state` with the effective ceilings in place of the static ones: the HTB
// ceil of the classes' units, their read/write ceils where lower, and the
// byte and IOPS rates of their limiters.
DesiredState with_effective_ceilings(DesiredState state, const std::map<std::string, EffectiveCeiling>& ceilings);

class SloLoop {
 public:
  explicit SloLoop(boost::asio::io_context& io);
  ~SloLoop();

  // (Re)configures from a policy the data paths have just applied: a link
  // whose classes did not change keeps its controller (and re-applies its
  // effective ceilings over the new state), others start from the static ceilings.
  void configure(const Policy& policy, const DesiredState& state, const std::vector<InterfaceDatapath*>& datapaths);
  void stop();

  const char* mode() const;  // "on", "dry_run", "off"
  std::string metrics_text() const;
  nlohmann::json state_json() const;

 private:
  struct Link {
    InterfaceDatapath* datapath = nullptr;
    std::uint64_t capacity_bps = 0;
    std::vector<SloClass> classes;
    std::unique_ptr<SloController> controller;
    std::optional<SloReading> last;
    std::map<std::string, EffectiveCeiling> applied;  // what the data path holds now
    std::vector<bool> exhausted;  // per objective: what the log last said
  };
  struct Event {
    double unix_seconds = 0;
    std::string interface;
    SloAdjustment adjustment;
    bool applied = false;
  };

  void schedule();
  void tick();
  void step(Link& link, std::chrono::steady_clock::time_point now);
  Status apply(Link& link, const std::map<std::string, EffectiveCeiling>& ceilings);
  void log_adjustment(const std::string& ifname, const SloAdjustment& a, bool applied, const std::string& error);
  void log_exhaustion(Link& link);

  boost::asio::steady_timer timer_;
  Policy policy_;
  DesiredState state_;
  std::map<std::string, Link> links_;  // by interface
  std::deque<Event> events_;           // the latest adjustments, newest last
  LogRateLimiter log_limit_{5};
  std::uint64_t apply_failures_ = 0;
  bool running_ = false;
};

}  // namespace nvqos::agent
