// The latency fields nvqos-load's and nvqos-target's JSON reports share (microseconds), and the
// bookkeeping of their stamped clocks.
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

// One clock made of kernel stamps (kernel or wire) over one tenant and op: the commands it timed
// and those it could not, counted and never given a guessed time.
struct StampedClock {
  LogLinearHistogram latency;
  uint64_t missing_tx = 0;  // the timed header's TX stamp never came
  uint64_t missing_rx = 0;  // no RX stamp for the timed header
  uint64_t reversed = 0;    // the span came out negative: the realtime clock was stepped
  // Timed, but later data was already queued when the header was read, so its socket RX stamp
  // may be a later segment's (later_data_queued; the kernel clock only).
  uint64_t rx_behind = 0;

  // One command's stamps (0 = none). `tx_first`: the span runs from TX to RX (nvqos-load),
  // else from RX to TX (nvqos-target).
  void record(uint64_t tx_ns, uint64_t rx_ns, bool tx_first, bool behind = false) {
    if (tx_ns == 0) return void(++missing_tx);
    if (rx_ns == 0) return void(++missing_rx);
    const uint64_t from = tx_first ? tx_ns : rx_ns, to = tx_first ? rx_ns : tx_ns;
    if (to < from) return void(++reversed);
    latency.record(to - from);
    if (behind) ++rx_behind;
  }
  uint64_t untimed() const { return missing_tx + missing_rx + reversed; }

  // {"timed", "missing_tx_stamp", "missing_rx_stamp", "reversed"[, "rx_behind"]}
  nlohmann::json counts_json(bool with_rx_behind) const {
    nlohmann::json j = {{"timed", latency.count()},
                        {"missing_tx_stamp", missing_tx},
                        {"missing_rx_stamp", missing_rx},
                        {"reversed", reversed}};
    if (with_rx_behind) j["rx_behind"] = rx_behind;
    return j;
  }
};

}  // namespace nvqos::wireclock
