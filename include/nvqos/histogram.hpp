// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// C++ view of the shared log-linear histogram scheme (histogram.h): the one
// histogram type tools, agent and tests use, so a latency quantile means the
// same thing wherever nvqos prints it.
//
// A LogLinearHistogram is either filled by record() (tools, tests) or built
// from raw bucket counts (the agent reading the kernel's cumulative maps) and
// diffed with subtract() to get window deltas. quantile() reports the midpoint
// of the bucket holding the rank, clamped to [min, max]; with sub_bits S the
// relative error is at most 2^-(S+1) (0.4% for the tools' S = 7).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nvqos/histogram.h>

namespace nvqos {

class LogLinearHistogram {
 public:
  // Number of buckets needed so that no 64-bit value is clamped.
  static constexpr uint32_t full_range_buckets(uint32_t sub_bits) {
    return static_cast<uint32_t>((64 - sub_bits + 1)) << sub_bits;
  }

  // bucket_count 0 means "the full 64-bit range" (no value is ever clamped).
  explicit LogLinearHistogram(uint32_t sub_bits = NVQOS_HIST_TOOLS_SUB_BITS,
                              uint32_t bucket_count = 0)
      : sub_bits_(sub_bits) {
    if (sub_bits_ > 16)
      throw std::invalid_argument("histogram sub_bits " + std::to_string(sub_bits) +
                                  " out of range (0..16)");
    uint32_t full = full_range_buckets(sub_bits_);
    if (bucket_count == 0 || bucket_count > full) bucket_count = full;
    counts_.assign(bucket_count, 0);
  }

  // Builds a histogram from raw bucket counts (e.g. a kernel map). The exact
  // min/max are unknown, so they are taken from the bounds of the lowest and
  // highest non-empty buckets.
  static LogLinearHistogram from_counts(uint32_t sub_bits, std::span<const uint64_t> counts) {
    LogLinearHistogram h(sub_bits, static_cast<uint32_t>(counts.size()));
    if (counts.size() > h.counts_.size())
      throw std::invalid_argument("histogram: " + std::to_string(counts.size()) +
                                  " buckets exceed the 64-bit range for sub_bits " +
                                  std::to_string(sub_bits));
    std::copy(counts.begin(), counts.end(), h.counts_.begin());
    h.recompute_from_buckets();
    return h;
  }

  uint32_t sub_bits() const { return sub_bits_; }
  uint32_t bucket_count() const { return static_cast<uint32_t>(counts_.size()); }
  std::span<const uint64_t> counts() const { return counts_; }

  // Bucket of a value, clamped into the last bucket.
  uint32_t index_of(uint64_t value) const {
    uint32_t idx = nvqos_hist_index(value, sub_bits_);
    return std::min<uint32_t>(idx, bucket_count() - 1);
  }
  uint64_t bucket_lower(uint32_t idx) const { return nvqos_hist_lower(idx, sub_bits_); }
  // Largest value of the bucket (inclusive). The last bucket also holds the
  // values clamped into it, so quantiles that land there are lower bounds.
  uint64_t bucket_last(uint32_t idx) const {
    if (idx + 1 >= full_range_buckets(sub_bits_)) return std::numeric_limits<uint64_t>::max();
    return nvqos_hist_upper(idx, sub_bits_) - 1;
  }

  void record(uint64_t value, uint64_t n = 1) {
    if (n == 0) return;
    counts_[index_of(value)] += n;
    count_ += n;
    sum_ += static_cast<double>(value) * static_cast<double>(n);
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
  }

  void merge(const LogLinearHistogram& other) {
    check_compatible(other, "merge");
    for (size_t i = 0; i < other.counts_.size(); ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }

  // this -= earlier, for window deltas of cumulative histograms. Throws if
  // `earlier` has more in any bucket (it is not an earlier state of this one,
  // e.g. the counters were reset). min/max become bucket bounds.
  void subtract(const LogLinearHistogram& earlier) {
    check_compatible(earlier, "subtract");
    for (size_t i = 0; i < earlier.counts_.size(); ++i)
      if (earlier.counts_[i] > counts_[i])
        throw std::invalid_argument("histogram subtract: bucket " + std::to_string(i) +
                                    " would go negative (counters reset?)");
    for (size_t i = 0; i < earlier.counts_.size(); ++i) counts_[i] -= earlier.counts_[i];
    double sum = sum_ - earlier.sum_;
    recompute_from_buckets();
    if (sum >= 0) sum_ = sum;
  }

  void reset() {
    std::fill(counts_.begin(), counts_.end(), 0);
    count_ = 0;
    sum_ = 0;
    min_ = std::numeric_limits<uint64_t>::max();
    max_ = 0;
  }

  uint64_t count() const { return count_; }
  bool empty() const { return count_ == 0; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return count_ ? max_ : 0; }
  // Exact for recorded values; bucket midpoints for histograms built from counts.
  double mean() const { return count_ ? sum_ / static_cast<double>(count_) : 0.0; }

  // Value at quantile q in [0, 1]: the smallest bucket whose cumulative count
  // reaches ceil(q * count), reported as its midpoint clamped to [min, max].
  // q = 0 gives min, q = 1 gives max. 0 for an empty histogram.
  uint64_t quantile(double q) const {
    if (count_ == 0) return 0;
    if (!(q > 0)) return min();
    if (q >= 1) return max();
    auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (uint32_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::clamp(midpoint(i), min_, max_);
    }
    return max();
  }

  // Calls fn(lower, last, count) for every non-empty bucket in value order;
  // [lower, last] is the inclusive value range of the bucket.
  template <typename Fn>
  void for_each_bucket(Fn&& fn) const {
    for (uint32_t i = 0; i < counts_.size(); ++i)
      if (counts_[i]) fn(bucket_lower(i), bucket_last(i), counts_[i]);
  }

 private:
  uint64_t midpoint(uint32_t idx) const {
    uint64_t lo = bucket_lower(idx);
    uint64_t hi = bucket_last(idx);
    return lo + (hi - lo) / 2 + ((hi - lo) & 1);
  }

  void check_compatible(const LogLinearHistogram& other, const char* what) const {
    if (other.sub_bits_ != sub_bits_ || other.counts_.size() != counts_.size())
      throw std::invalid_argument(std::string("histogram ") + what +
                                  ": different layouts (sub_bits " + std::to_string(sub_bits_) +
                                  "/" + std::to_string(other.sub_bits_) + ", buckets " +
                                  std::to_string(counts_.size()) + "/" +
                                  std::to_string(other.counts_.size()) + ")");
  }

  void recompute_from_buckets() {
    count_ = 0;
    sum_ = 0;
    min_ = std::numeric_limits<uint64_t>::max();
    max_ = 0;
    for (uint32_t i = 0; i < counts_.size(); ++i) {
      if (!counts_[i]) continue;
      count_ += counts_[i];
      sum_ += static_cast<double>(midpoint(i)) * static_cast<double>(counts_[i]);
      min_ = std::min(min_, bucket_lower(i));
      max_ = std::max(max_, bucket_last(i));
    }
  }

  uint32_t sub_bits_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

}  // namespace nvqos
