// nvqos-target's service times per host NQN and operation (--report): from the capsule's
// arrival to the completion's departure. The app clock times it from the capsule parsed to the
// completion handed to the socket; the kernel clock (--latency-clock kernel) from the capsule
// header's RX stamp to the completion header's TX stamp, the span nvqos-agent's tc programs
// time on the target (see nvqos/wireclock/wire_clock.h); the wire clock (--latency-clock wire)
// takes the capsule header's RX stamp from a packet tap instead (nvqos/wireclock/packet_tap.h).
#pragma once

#include <nlohmann/json.hpp>
#include <nvqos/histogram.hpp>
#include <nvqos/wireclock/latency_json.h>
#include <nvqos/wireclock/wire_clock.h>

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>

namespace nvqos::target {

enum class ServiceOp : std::uint8_t { kRead, kWrite, kFlush, kOther };
inline constexpr int kServiceOpCount = 4;
const char* service_op_name(ServiceOp op);  // "read", "write", "flush", "other"
ServiceOp service_op_of(std::uint8_t nvm_opcode);

struct OpServiceTimes {
  std::uint64_t ios = 0;
  LogLinearHistogram app;
  wireclock::StampedClock kernel, wire;
};

// A completion's kernel stamps (0 = none): the capsule header's RX stamp from the socket and
// from the packet tap, the completion header's TX stamp.
struct CompletionStamps {
  std::uint64_t rx_ns = 0;
  std::uint64_t tap_rx_ns = 0;
  std::uint64_t tx_ns = 0;
  bool rx_behind = false;  // see wireclock::later_data_queued
};

// Shared by every connection (and event-loop thread); each call takes the lock once.
class ServiceTimes {
 public:
  explicit ServiceTimes(wireclock::LatencyClock clock) : clock_(clock) {}
  wireclock::LatencyClock clock() const { return clock_; }

  void record_app(const std::string& hostnqn, ServiceOp op, std::uint64_t ns);
  // A completion's stamps for the kernel clock (and the wire clock when selected); a span that
  // lacks a stamp is counted as missing.
  void record_stamps(const std::string& hostnqn, ServiceOp op, const CompletionStamps& s);

  // {"units", "latency_clock", "hosts": {NQN: {"ops": {op: {"ios", "latency_us", ...}}}}}:
  // `latency_us` is the selected clock, with the same fields as nvqos-load's report.
  nlohmann::json report() const;

 private:
  wireclock::LatencyClock clock_;
  mutable std::mutex mu_;
  std::map<std::string, std::array<OpServiceTimes, kServiceOpCount>> hosts_;
};

// One connection's completions waiting for their TX stamp, in send order.
class PendingCompletions {
 public:
  struct Entry {
    ServiceOp op;
    CompletionStamps stamps;  // tx_ns comes with the TX stamp
  };
  // Returns the token to register with the send that ends the completion's header.
  std::uint64_t add(const Entry& e) {
    waiting_.push_back({next_token_, e});
    return next_token_++;
  }
  // Settles a TX stamp matched (or not) by wireclock::TxKeyQueue: entries before `token` never
  // got one and go to `missed`, the entry of `token` to `stamped`.
  template <class Stamped, class Missed>
  void settle(std::uint64_t token, Stamped&& stamped, Missed&& missed) {
    while (!waiting_.empty() && waiting_.front().token < token) {
      missed(waiting_.front().entry);
      waiting_.pop_front();
    }
    if (!waiting_.empty() && waiting_.front().token == token) {
      stamped(waiting_.front().entry);
      waiting_.pop_front();
    }
  }
  // The connection closed: whatever still waits never gets a stamp.
  template <class Missed>
  void drop_all(Missed&& missed) {
    for (const auto& w : waiting_) missed(w.entry);
    waiting_.clear();
  }
  std::size_t waiting() const { return waiting_.size(); }

 private:
  struct Waiting {
    std::uint64_t token;
    Entry entry;
  };
  std::deque<Waiting> waiting_;
  std::uint64_t next_token_ = 1;
};

}  // namespace nvqos::target
