// The latency-SLO part of the configuration (docs/config.md, "Latency
// objectives"): a class's objectives and controller options, and the
// top-level slo_controller section. Parsed here so config.cpp only calls in.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace nvqos::agent {

struct SloObjectiveSpec {
  std::uint8_t op = 0;  // enum nvqos_cmd_op
  double quantile = 0.99;
  std::uint64_t max_latency_ns = 0;
  bool operator==(const SloObjectiveSpec&) const = default;
};

struct ClassSloSpec {
  std::vector<SloObjectiveSpec> objectives;  // empty: no objective of its own
  double min_share = 0.05;  // share of the link the controller never cuts the class below
  bool enabled = true;      // false: neither protected nor adapted by the controller
  bool operator==(const ClassSloSpec&) const = default;
};

struct SloControllerSpec {
  bool enabled = true;
  bool dry_run = false;  // decide and report, never apply
  std::chrono::milliseconds interval{250};
  bool operator==(const SloControllerSpec&) const = default;
};

inline constexpr std::chrono::milliseconds kSloMinInterval{50};
inline constexpr std::chrono::milliseconds kSloMaxInterval{10000};

// Reads "objectives" and "slo" of the class object `class_json` (the other
// keys are the caller's); `where` is the class's JSON pointer. Throws ConfigError.
ClassSloSpec parse_class_slo(const nlohmann::json& class_json, const std::string& where);
// The top-level "slo_controller" object. Throws ConfigError.
SloControllerSpec parse_slo_controller(const nlohmann::json& j, const std::string& where);

// "read", "write", ... for an objective's op; the names of the metrics' op label.
std::uint8_t slo_op_from_name(const std::string& name, bool& ok);

}  // namespace nvqos::agent
