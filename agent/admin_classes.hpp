// QoS classes as operators see them (GET /v1/classes, `nvqosctl classes`) and
// the metrics of temporary class overrides. The Agent members that serve
// them are in admin_classes.cpp; the pure parts are declared here so they are
// unit-tested over plain snapshots.
#pragma once

#include <prometheus/metric_family.h>

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace nvqos::agent {

struct Snapshot;

// /v1/classes reports rates over at least this long (or since the agent
// started): one telemetry interval at 100 ms is too short to read a ceiling.
inline constexpr std::chrono::seconds kUsageWindow{1};

// What a class's tenants sent and completed on one interface between two
// snapshots, per second.
struct ClassUsage {
  double interval_seconds = 0;
  double egress_bits_per_second = 0;
  double ingress_bits_per_second = 0;
  double iops = 0;  // NVMe commands completed, any op
  double read_iops = 0;
  double write_iops = 0;
  // For per-tenant limits: the tenant of the class sending the most.
  std::string busiest_tenant;
  double busiest_tenant_egress_bits_per_second = 0;
};

// (interface, class) -> usage. Traffic is attributed to the tenant's class in
// `cur` (a tenant moved between the two counts for its new class); a counter
// that went backwards (a reused tenant slot) counts as 0. Empty when the
// snapshots do not span any time.
std::map<std::pair<std::string, std::string>, ClassUsage> class_usage(const Snapshot& prev, const Snapshot& cur);

// nvqos_tenant_class_override_info and _expiry_timestamp_seconds (docs/metrics.md).
void class_override_families(std::vector<prometheus::MetricFamily>& out, const Snapshot& s);

}  // namespace nvqos::agent
