// Per-job, per-operation measurements of nvqos-load and their reports.
#pragma once

#include <nvqos/histogram.hpp>
#include <nvqos/wireclock/latency_json.h>
#include <nvqos/wireclock/packet_tap.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "options.hpp"

namespace nvqos::load {

enum class Op : uint8_t { kRead = 0, kWrite = 1 };
inline constexpr int kOpCount = 2;
inline const char* op_name(Op op) { return op == Op::kRead ? "read" : "write"; }

struct OpStats {
  uint64_t ios = 0;    // completed, successful or not
  uint64_t bytes = 0;  // of successful I/Os
  // Send (capsule handed to the socket) to completion parsed.
  LogLinearHistogram latency;
  // Scheduled send time to completion: the open-loop latency when --rate-iops
  // paces the job (includes time spent waiting for a free queue slot).
  LogLinearHistogram intended_latency;
  // --latency-clock kernel and wire: capsule header's kernel TX stamp to the completion header's
  // RX stamp, from the socket (kernel) or from the packet tap (wire).
  wireclock::StampedClock kernel_clock, wire_clock;
  // Failures by name: NVMe status names, "transport error", "verify mismatch".
  std::map<std::string, uint64_t> errors;

  uint64_t error_count() const {
    uint64_t n = 0;
    for (const auto& [_, c] : errors) n += c;
    return n;
  }
};

// What setup learned about the controller, for the report.
struct ControllerSummary {
  bool connected = false;
  uint16_t cntlid = 0;
  std::string model;
  uint32_t in_capsule_data = 0;  // bytes
  uint32_t lba_size = 0;         // bytes
  uint64_t namespace_blocks = 0;
  bool in_capsule_writes = false;
  std::vector<uint16_t> local_ports;  // per I/O queue, this host's TCP port
};

struct JobStats {
  OpStats ops[kOpCount];
  wireclock::TapCounts wire_tap;  // --latency-clock wire: the I/O queues' packet taps
  ControllerSummary controller;
  uint64_t verified_blocks = 0;   // 512-byte chunks whose pattern matched
  uint64_t unwritten_blocks = 0;  // chunks read in verify mode that hold no pattern yet
  std::chrono::nanoseconds elapsed{0};
  std::string fatal_error;  // set when the job could not run (e.g. Connect rejected)

  OpStats& op(Op o) { return ops[static_cast<int>(o)]; }
  const OpStats& op(Op o) const { return ops[static_cast<int>(o)]; }
  uint64_t total_ios() const { return ops[0].ios + ops[1].ios; }
  uint64_t total_bytes() const { return ops[0].bytes + ops[1].bytes; }
  uint64_t total_errors() const { return ops[0].error_count() + ops[1].error_count(); }
};

struct JobReport {
  const JobSpec* spec;
  const JobStats* stats;
};

// The latency of the job's --latency-clock.
const LogLinearHistogram& selected_latency(const JobSpec& spec, const OpStats& st);

// Text table: one row per job x op; latency in microseconds, throughput in
// MiB/s (2^20 bytes per second).
void print_text_report(std::ostream& out, const std::vector<JobReport>& jobs);
void print_json_report(std::ostream& out, const std::vector<JobReport>& jobs);

}  // namespace nvqos::load
