// The latency fields nvqos-load's and nvqos-target's JSON reports share (microseconds).
#pragma once

#include <nlohmann/json.hpp>
#include <nvqos/histogram.hpp>

namespace nvqos::wireclock {

inline constexpr struct {
  const char* label;
  double q;
} kReportQuantiles[] = {{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p99.9", 0.999}, {"p99.99", 0.9999}};

// {"min", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"} in microseconds.
inline nlohmann::json latency_json(const LogLinearHistogram& h) {
  auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
  nlohmann::json j;
  j["min"] = us(h.min());
  for (const auto& q : kReportQuantiles) j[q.label] = us(h.quantile(q.q));
  j["max"] = us(h.max());
  j["mean"] = h.mean() / 1000.0;
  return j;
}

}  // namespace nvqos::wireclock
