#include "commands.hpp"

#include <algorithm>
#include <iterator>

namespace nvqos::agent {

const char* cmd_op_name(std::uint32_t op) {
  static const char* const kNames[NVQOS_CMD_OP_MAX] = {"read", "write", "flush", "admin", "other"};
  return op < NVQOS_CMD_OP_MAX ? kNames[op] : "unknown";
}

const char* cmd_role_name(std::uint32_t role) {
  static const char* const kNames[NVQOS_ROLE_MAX] = {"initiator", "target"};
  return role < NVQOS_ROLE_MAX ? kNames[role] : "unknown";
}

const char* status_class_name(std::uint32_t status_class) {
  static const char* const kNames[NVQOS_STATUS_CLASS_MAX] = {"generic", "command_specific", "media",
                                                             "path", "vendor"};
  return status_class < NVQOS_STATUS_CLASS_MAX ? kNames[status_class] : "unknown";
}

LogLinearHistogram kernel_latency_histogram(std::span<const std::uint64_t> counts) {
  return LogLinearHistogram::from_counts(NVQOS_HIST_KERNEL_SUB_BITS, counts);
}

CoarseHistogram coarse_latency_histogram(std::span<const std::uint64_t> fine_counts) {
  constexpr std::size_t kBounds = std::size(kLatencyBucketBoundsSeconds);
  CoarseHistogram out;
  out.cumulative.assign(kBounds, 0);
  std::vector<std::uint64_t> per_bound(kBounds, 0);
  for (std::uint32_t i = 0; i < fine_counts.size(); ++i) {
    const std::uint64_t n = fine_counts[i];
    if (!n) continue;
    const std::uint64_t lower = nvqos_hist_lower(i, NVQOS_HIST_KERNEL_SUB_BITS);
    const std::uint64_t upper = nvqos_hist_upper(i, NVQOS_HIST_KERNEL_SUB_BITS);
    const double mid_seconds = (static_cast<double>(lower) + static_cast<double>(upper - 1)) / 2 / 1e9;
    out.count += n;
    out.sum_seconds += mid_seconds * static_cast<double>(n);
    const auto* bound = std::lower_bound(std::begin(kLatencyBucketBoundsSeconds),
                                         std::end(kLatencyBucketBoundsSeconds), mid_seconds);
    if (bound != std::end(kLatencyBucketBoundsSeconds))
      per_bound[bound - std::begin(kLatencyBucketBoundsSeconds)] += n;
  }
  std::uint64_t running = 0;
  for (std::size_t b = 0; b < kBounds; ++b) out.cumulative[b] = running += per_bound[b];
  return out;
}

void LatencyWindow::update(Clock::time_point now, std::span<const std::uint64_t> cumulative) {
  bool reset = last_.size() != cumulative.size();
  for (std::size_t i = 0; !reset && i < cumulative.size(); ++i) reset = cumulative[i] < last_[i];
  Delta delta{now, {}};
  for (std::uint32_t i = 0; i < cumulative.size(); ++i) {
    const std::uint64_t n = reset ? cumulative[i] : cumulative[i] - last_[i];
    if (n) delta.buckets.emplace_back(i, n);
  }
  last_.assign(cumulative.begin(), cumulative.end());
  if (!delta.buckets.empty()) deltas_.push_back(std::move(delta));
  while (!deltas_.empty() && now - deltas_.front().at >= window_) deltas_.pop_front();
}

LogLinearHistogram LatencyWindow::histogram() const {
  std::vector<std::uint64_t> counts(NVQOS_CMD_HIST_BUCKETS, 0);
  for (const Delta& d : deltas_)
    for (const auto& [index, n] : d.buckets)
      if (index < counts.size()) counts[index] += n;
  return kernel_latency_histogram(counts);
}

bool LogRateLimiter::allow(Clock::time_point now) {
  if (now - second_ >= std::chrono::seconds(1)) {
    second_ = now;
    in_second_ = 0;
  }
  if (in_second_ < per_second_) {
    ++in_second_;
    return true;
  }
  ++suppressed_;
  return false;
}

}  // namespace nvqos::agent
