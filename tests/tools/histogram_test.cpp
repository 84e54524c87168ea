// LogLinearHistogram: quantile error against an exact sort, merge/subtract, edges.
#include <nvqos/histogram.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace {

using nvqos::LogLinearHistogram;

uint64_t exact_quantile(const std::vector<uint64_t>& sorted, double q) {
  if (q <= 0) return sorted.front();
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

void expect_quantiles_within(std::vector<uint64_t> values, double max_rel_error, const char* name) {
  LogLinearHistogram h;
  for (uint64_t v : values) h.record(v);
  std::sort(values.begin(), values.end());
  ASSERT_EQ(h.count(), values.size());
  EXPECT_EQ(h.min(), values.front());
  EXPECT_EQ(h.max(), values.back());
  for (double q : {0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0}) {
    double exact = static_cast<double>(exact_quantile(values, q));
    double got = static_cast<double>(h.quantile(q));
    double rel = exact == 0 ? got : std::abs(got - exact) / exact;
    EXPECT_LE(rel, max_rel_error) << name << " q=" << q << " exact=" << exact << " got=" << got;
  }
}

TEST(LogLinearHistogram, UniformQuantilesWithinOnePercent) {
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<uint64_t> dist(1'000, 50'000'000);
  std::vector<uint64_t> v(200'000);
  for (auto& x : v) x = dist(rng);
  expect_quantiles_within(v, 0.01, "uniform");
}

TEST(LogLinearHistogram, ExponentialQuantilesWithinOnePercent) {
  std::mt19937_64 rng(2);
  std::exponential_distribution<double> dist(1.0 / 80'000.0);  // mean 80 us
  std::vector<uint64_t> v(200'000);
  for (auto& x : v) x = static_cast<uint64_t>(dist(rng)) + 1;
  expect_quantiles_within(v, 0.01, "exponential");
}

TEST(LogLinearHistogram, BimodalQuantilesWithinOnePercent) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> fast(20'000, 2'000);      // 20 us cache hits
  std::normal_distribution<double> slow(5'000'000, 800'000);  // 5 ms media reads
  std::bernoulli_distribution pick_slow(0.05);
  std::vector<uint64_t> v(200'000);
  for (auto& x : v) x = static_cast<uint64_t>(std::max(1.0, pick_slow(rng) ? slow(rng) : fast(rng)));
  expect_quantiles_within(v, 0.01, "bimodal");
}

TEST(LogLinearHistogram, KernelSubBitsStayWithinTheirBound) {
  // S = 5: midpoint error <= 2^-6 = 1.6%.
  std::mt19937_64 rng(4);
  std::lognormal_distribution<double> dist(11.0, 1.5);
  LogLinearHistogram h(NVQOS_HIST_KERNEL_SUB_BITS, NVQOS_HIST_KERNEL_BUCKETS);
  std::vector<uint64_t> v(100'000);
  for (auto& x : v) {
    x = static_cast<uint64_t>(dist(rng)) + 1;
    h.record(x);
  }
  std::sort(v.begin(), v.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    double exact = static_cast<double>(exact_quantile(v, q));
    EXPECT_LE(std::abs(static_cast<double>(h.quantile(q)) - exact) / exact, 1.0 / 64) << q;
  }
}

TEST(LogLinearHistogram, SmallValuesAreExact) {
  LogLinearHistogram h;
  for (uint64_t v = 0; v < 128; ++v) h.record(v);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 127u);
  EXPECT_EQ(h.quantile(0.5), 63u);
  EXPECT_EQ(h.quantile(1.0 / 128), 0u);
  EXPECT_EQ(h.quantile(2.0 / 128), 1u);
}

TEST(LogLinearHistogram, ZeroAndOne) {
  LogLinearHistogram h;
  h.record(0);
  EXPECT_EQ(h.count(), 1u);
  EXPECT_EQ(h.quantile(0.5), 0u);
  h.record(1);
  EXPECT_EQ(h.quantile(1.0), 1u);
  EXPECT_EQ(h.quantile(0.5), 0u);
}

TEST(LogLinearHistogram, EmptyReportsZero) {
  LogLinearHistogram h;
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.quantile(0.99), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
}

TEST(LogLinearHistogram, HugeValuesClampIntoLastBucketAndCount) {
  LogLinearHistogram h(NVQOS_HIST_KERNEL_SUB_BITS, NVQOS_HIST_KERNEL_BUCKETS);
  h.record(1000);
  h.record(1ull << 50);
  h.record(UINT64_MAX);
  EXPECT_EQ(h.count(), 3u);
  EXPECT_EQ(h.counts()[NVQOS_HIST_KERNEL_BUCKETS - 1], 2u);
  EXPECT_EQ(h.max(), UINT64_MAX);
  // The quantile lands in the last bucket; it is reported within its bounds.
  EXPECT_GE(h.quantile(0.9), h.bucket_lower(NVQOS_HIST_KERNEL_BUCKETS - 1));

  LogLinearHistogram full;  // full 64-bit range: nothing clamps, max is exact
  full.record(UINT64_MAX);
  EXPECT_EQ(full.index_of(UINT64_MAX), full.bucket_count() - 1);
  EXPECT_EQ(full.quantile(0.5), UINT64_MAX);
}

TEST(LogLinearHistogram, MergeEqualsRecordingEverything) {
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<uint64_t> dist(0, 10'000'000);
  LogLinearHistogram a, b, all;
  for (int i = 0; i < 10'000; ++i) {
    uint64_t v = dist(rng);
    (i % 3 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_TRUE(std::equal(a.counts().begin(), a.counts().end(), all.counts().begin()));
  for (double q : {0.5, 0.99}) EXPECT_EQ(a.quantile(q), all.quantile(q));
}

TEST(LogLinearHistogram, SubtractGivesTheWindowDelta) {
  // Cumulative kernel-style histograms at t0 and t1; the delta is the window.
  LogLinearHistogram window(NVQOS_HIST_KERNEL_SUB_BITS, NVQOS_HIST_KERNEL_BUCKETS);
  LogLinearHistogram t0(NVQOS_HIST_KERNEL_SUB_BITS, NVQOS_HIST_KERNEL_BUCKETS);
  for (uint64_t v = 1; v <= 1000; ++v) t0.record(v * 1000);
  LogLinearHistogram t1 = t0;
  for (uint64_t v = 0; v < 500; ++v) {
    t1.record(5'000'000);
    window.record(5'000'000);
  }
  auto c0 = LogLinearHistogram::from_counts(NVQOS_HIST_KERNEL_SUB_BITS, t0.counts());
  auto c1 = LogLinearHistogram::from_counts(NVQOS_HIST_KERNEL_SUB_BITS, t1.counts());
  c1.subtract(c0);
  EXPECT_EQ(c1.count(), 500u);
  EXPECT_TRUE(std::equal(c1.counts().begin(), c1.counts().end(), window.counts().begin()));
  EXPECT_NEAR(static_cast<double>(c1.quantile(0.99)), 5e6, 5e6 / 64);
  EXPECT_LE(c1.min(), 5'000'000u);
  EXPECT_GE(c1.max(), 5'000'000u);
}

TEST(LogLinearHistogram, SubtractRejectsALaterOrResetState) {
  LogLinearHistogram a, b;
  a.record(10);
  b.record(10);
  b.record(10);
  EXPECT_THROW(a.subtract(b), std::invalid_argument);
  EXPECT_EQ(a.count(), 1u);  // unchanged on error
}

TEST(LogLinearHistogram, DifferentLayoutsDoNotMix) {
  LogLinearHistogram a(7), b(5);
  EXPECT_THROW(a.merge(b), std::invalid_argument);
  LogLinearHistogram c(7, 1024);
  EXPECT_THROW(a.merge(c), std::invalid_argument);
}

TEST(LogLinearHistogram, FromCountsDerivesCountAndBounds) {
  std::vector<uint64_t> counts(1024, 0);
  counts[100] = 3;
  counts[200] = 1;
  auto h = LogLinearHistogram::from_counts(5, counts);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_EQ(h.min(), nvqos_hist_lower(100, 5));
  EXPECT_EQ(h.max(), nvqos_hist_upper(200, 5) - 1);
  int buckets = 0;
  h.for_each_bucket([&](uint64_t lower, uint64_t last, uint64_t n) {
    EXPECT_LE(lower, last);
    EXPECT_TRUE(n == 3 || n == 1);
    ++buckets;
  });
  EXPECT_EQ(buckets, 2);
}

}  // namespace
