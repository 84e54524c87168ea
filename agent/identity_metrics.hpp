// Prometheus families of the Connect inspection and access control
// (docs/metrics.md, "NVMe identity and access control").
#pragma once

#include <prometheus/metric_family.h>

#include <vector>

namespace nvqos::agent {

struct Snapshot;
void identity_families(std::vector<prometheus::MetricFamily>& out, const Snapshot& s);

}  // namespace nvqos::agent
