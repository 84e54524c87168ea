// Snapshot + agent status -> Prometheus text exposition. Built as a pure
// function over values so the exposition is unit-tested without a kernel;
// prometheus-cpp supplies the data model and the serializer.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "class_override.hpp"
#include "datapath.hpp"

namespace nvqos::agent {

struct Snapshot {
  std::chrono::system_clock::time_point taken{};
  std::vector<InterfaceCounters> interfaces;
  double read_seconds = 0;  // how long reading the maps took
  std::uint64_t resident_memory_bytes = 0;  // the agent's RSS when the snapshot was taken
  QosState qos;             // classes and tenant -> class of the policy in force
  std::vector<ClassOverride> class_overrides;  // temporary classes of tenants, by tenant
};

struct KernelFeature {
  std::string name;  // "btf", "clsact", "xdp_native", "sch_fq", ...
  bool available = false;
};

struct AgentStatus {
  std::string version;
  std::string config_source;  // file path, or "built-in default"
  double start_time_seconds = 0;
  bool last_reload_success = true;
  double last_reload_timestamp_seconds = 0;
  std::uint64_t reloads_total = 0;
  std::uint64_t reload_failures_total = 0;
  std::size_t tenants_configured = 0;
  std::vector<KernelFeature> kernel_features;
};

std::string render_metrics(const Snapshot& snapshot, const AgentStatus& status);

}  // namespace nvqos::agent
