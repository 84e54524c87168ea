// NVMe command telemetry in user space: names of the kernel's op / role /
// status-class indices, the sliding window that turns the kernel's cumulative
// fine latency histograms into window quantiles, and the mapping of the fine
// histogram onto the coarse Prometheus buckets. Pure: unit-tested without a kernel.
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nvqos/abi.h"
#include "nvqos/histogram.hpp"

namespace nvqos::agent {

const char* cmd_op_name(std::uint32_t op);                 // "read", "write", ...
const char* cmd_role_name(std::uint32_t role);             // "initiator", "target"
const char* status_class_name(std::uint32_t status_class);  // "generic", "media", ...

struct CommandKey {
  std::uint32_t tenant_id = 0;
  std::uint8_t op = 0;    // enum nvqos_cmd_op
  std::uint8_t role = 0;  // enum nvqos_role
  friend auto operator<=>(const CommandKey&, const CommandKey&) = default;
};

// Quantiles reported over the window, and the coarse Prometheus bucket bounds
// (seconds) chosen for storage SLOs: 50 us (a fast local flash read) to 10 s.
inline constexpr double kLatencyQuantiles[] = {0.5, 0.9, 0.99, 0.999};
inline constexpr double kLatencyBucketBoundsSeconds[] = {
    50e-6, 100e-6, 200e-6, 300e-6, 500e-6, 750e-6, 1e-3,  2e-3, 3e-3, 5e-3, 7.5e-3,
    10e-3, 20e-3,  50e-3,  100e-3, 250e-3, 500e-3, 1.0,   2.5,  5.0,  10.0};

// The kernel's histogram scheme (NVQOS_HIST_KERNEL_SUB_BITS, NVQOS_CMD_HIST_BUCKETS).
LogLinearHistogram kernel_latency_histogram(std::span<const std::uint64_t> counts);

// Cumulative count per coarse bound (then the total for +Inf), and the sum of
// the samples in seconds: each fine bucket counts at its midpoint, so a count
// near a bound may sit one fine bucket (<= 3.2%) on the wrong side.
struct CoarseHistogram {
  std::vector<std::uint64_t> cumulative;  // one per kLatencyBucketBoundsSeconds
  std::uint64_t count = 0;
  double sum_seconds = 0;
};
CoarseHistogram coarse_latency_histogram(std::span<const std::uint64_t> fine_counts);

// Quantiles of the commands completed in the last `window`, from successive
// cumulative readings of one kernel histogram. Keeps only the non-zero
// buckets of each interval's delta, so memory follows the traffic, not the
// 1024 buckets times the readings.
class LatencyWindow {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LatencyWindow(std::chrono::nanoseconds window) : window_(window) {}

  // A reading of the cumulative counts at `now`. The first reading counts as
  // a delta (the map was created with the agent's programs); a reading below
  // the previous one (the map was recreated) counts from zero.
  void update(Clock::time_point now, std::span<const std::uint64_t> cumulative);
  // Takes `cumulative` as the baseline without counting it (a histogram
  // adopted from a previous agent: its history is not this window's).
  void prime(std::span<const std::uint64_t> cumulative) { last_.assign(cumulative.begin(), cumulative.end()); }
  LogLinearHistogram histogram() const;  // the deltas of the window, merged
  std::chrono::nanoseconds window() const { return window_; }

 private:
  struct Delta {
    Clock::time_point at;
    std::vector<std::pair<std::uint32_t, std::uint64_t>> buckets;  // index, count
  };
  std::chrono::nanoseconds window_;
  std::vector<std::uint64_t> last_;
  std::deque<Delta> deltas_;
};

// At most `per_second` events pass in any one-second step of the clock.
class LogRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogRateLimiter(std::uint32_t per_second) : per_second_(per_second) {}
  bool allow(Clock::time_point now);
  std::uint64_t suppressed() const { return suppressed_; }

 private:
  std::uint32_t per_second_;
  Clock::time_point second_{};
  std::uint32_t in_second_ = 0;
  std::uint64_t suppressed_ = 0;
};

inline constexpr std::uint32_t kSlowCommandLogsPerSecond = 10;

}  // namespace nvqos::agent
