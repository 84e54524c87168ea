// The agent's command telemetry: window quantiles from cumulative kernel
// histograms, the coarse Prometheus buckets, and their exposition.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "commands.hpp"
#include "metrics.hpp"

namespace nvqos::agent {
namespace {

using namespace std::chrono_literals;
using Clock = LatencyWindow::Clock;

// A kernel histogram (cumulative counts) holding `n` more samples of `ns`.
void add(std::vector<std::uint64_t>& counts, std::uint64_t ns, std::uint64_t n) {
  std::uint32_t idx = nvqos_hist_index(ns, NVQOS_HIST_KERNEL_SUB_BITS);
  if (idx >= NVQOS_CMD_HIST_BUCKETS) idx = NVQOS_CMD_HIST_BUCKETS - 1;
  counts[idx] += n;
}

double relative_error(double got, double want) { return std::abs(got - want) / want; }

TEST(LatencyWindow, QuantilesOfTheWindowOnlyWithinTheKernelSchemeError) {
  LatencyWindow window(60s);
  std::vector<std::uint64_t> cumulative(NVQOS_CMD_HIST_BUCKETS, 0);
  const Clock::time_point t0{};
  // Before the window: a slow minute that must age out.
  add(cumulative, 50'000'000, 1000);
  window.update(t0, cumulative);
  // Then 10 s steps: 990 fast commands and 9 slow ones and 1 very slow per step.
  for (int step = 1; step <= 6; ++step) {
    add(cumulative, 100'000, 990);
    add(cumulative, 2'000'000, 9);
    add(cumulative, 20'000'000, 1);
    window.update(t0 + step * 10s, cumulative);
  }
  const LogLinearHistogram h = window.histogram();
  ASSERT_EQ(h.count(), 6000u) << "the 50 ms samples are 60 s old and left the window";
  EXPECT_LE(relative_error(double(h.quantile(0.5)), 100'000), 0.02);
  EXPECT_LE(relative_error(double(h.quantile(0.99)), 100'000), 0.02);
  EXPECT_LE(relative_error(double(h.quantile(0.995)), 2'000'000), 0.02);
  EXPECT_LE(relative_error(double(h.quantile(0.9995)), 20'000'000), 0.02);
}

TEST(LatencyWindow, CountsFromZeroWhenTheMapWasRecreated) {
  LatencyWindow window(60s);
  std::vector<std::uint64_t> cumulative(NVQOS_CMD_HIST_BUCKETS, 0);
  add(cumulative, 1'000'000, 100);
  window.update(Clock::time_point{}, cumulative);
  std::vector<std::uint64_t> fresh(NVQOS_CMD_HIST_BUCKETS, 0);
  add(fresh, 1'000'000, 10);
  window.update(Clock::time_point{} + 1s, fresh);
  EXPECT_EQ(window.histogram().count(), 110u);
}

TEST(LatencyWindow, EmptyWhenNothingCompletedInTheWindow) {
  LatencyWindow window(5s);
  std::vector<std::uint64_t> cumulative(NVQOS_CMD_HIST_BUCKETS, 0);
  add(cumulative, 1'000, 3);
  window.update(Clock::time_point{}, cumulative);
  window.update(Clock::time_point{} + 5s, cumulative);
  EXPECT_TRUE(window.histogram().empty());
}

TEST(CoarseHistogram, FineBucketsLandAtTheirMidpoint) {
  std::vector<std::uint64_t> counts(NVQOS_CMD_HIST_BUCKETS, 0);
  add(counts, 40'000, 2);          // 40 us  -> le 50 us
  add(counts, 400'000, 3);         // 400 us -> le 500 us
  add(counts, 30'000'000'000, 1);  // 30 s   -> +Inf only
  const CoarseHistogram h = coarse_latency_histogram(counts);
  EXPECT_EQ(h.count, 6u);
  EXPECT_EQ(h.cumulative.front(), 2u);  // le 50 us
  EXPECT_EQ(h.cumulative[4], 5u);       // le 500 us
  EXPECT_EQ(h.cumulative.back(), 5u);   // le 10 s
  EXPECT_NEAR(h.sum_seconds, 2 * 40e-6 + 3 * 400e-6 + 30.0, 30.0 * 0.02);
}

TEST(LogRateLimiter, PassesAtMostNPerSecond) {
  LogRateLimiter limit(3);
  const LogRateLimiter::Clock::time_point t0 = LogRateLimiter::Clock::now();
  int passed = 0;
  for (int i = 0; i < 10; ++i) passed += limit.allow(t0 + std::chrono::milliseconds(i));
  EXPECT_EQ(passed, 3);
  EXPECT_EQ(limit.suppressed(), 7u);
  EXPECT_TRUE(limit.allow(t0 + 1001ms)) << "a new second";
}

TEST(CommandMetrics, ExposesHistogramQuantilesAndErrors) {
  Snapshot s;
  InterfaceCounters ifc;
  ifc.interface = "eth0";
  CommandCounters c;
  c.key = {1, NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR};
  c.tenant = "gold";
  c.stats.submitted = 12;
  c.stats.completed = 10;
  c.stats.bytes = 40960;
  c.stats.errors[NVQOS_STATUS_MEDIA] = 1;
  c.timeouts = 1;
  c.latency.assign(NVQOS_CMD_HIST_BUCKETS, 0);
  add(c.latency, 80'000, 10);
  c.window_count = 10;
  c.window_quantiles = {{0.5, 80e-6}, {0.999, 81e-6}};
  ifc.commands.push_back(c);
  ifc.nvme.desync = 3;
  s.interfaces.push_back(ifc);
  const std::string text = render_metrics(s, AgentStatus{});
  const std::string l = "interface=\"eth0\",tenant=\"gold\",op=\"read\",role=\"initiator\"";
  EXPECT_NE(text.find("nvqos_nvme_command_latency_seconds_bucket{" + l + ",le=\"0.0001\"} 10"), std::string::npos)
      << text;
  EXPECT_NE(text.find("nvqos_nvme_command_latency_seconds_bucket{" + l + ",le=\"5e-05\"} 0"), std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_command_latency_seconds_count{" + l + "} 10"), std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_command_latency_quantile_seconds{" + l + ",quantile=\"0.999\"} 8.1e-05"),
            std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_commands_total{" + l + "} 10"), std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_bytes_total{" + l + "} 40960"), std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_command_errors_total{" + l + ",status=\"media\"} 1"), std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_commands_in_flight{" + l + "} 1"), std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_command_timeouts_total{" + l + "} 1"), std::string::npos);
  EXPECT_NE(text.find("nvqos_nvme_desync_total{interface=\"eth0\"} 3"), std::string::npos);
}

}  // namespace
}  // namespace nvqos::agent
