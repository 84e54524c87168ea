// --trace FILE: one CSV line per completed I/O, so other tools (tshark, the
// agent's telemetry) can be cross-checked against what the initiator saw.
//
// Columns (documented in docs/tools.md):
//   submit_ns    wall-clock ns since the Unix epoch when the command capsule
//                was handed to the socket
//   complete_ns  when its completion (CapsuleResp or C2HData with SUCCESS) was parsed
//   scheduled_ns when the pacer meant to send it (= submit_ns unless --rate-iops)
//   job, queue (I/O queue ID, 1-based), local_port (TCP port of the queue's
//   connection on this host), cid, op (read/write), bytes,
//   status (NVMe status field: SCT<<8 | SC in hex; 0x0000 = success)
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "stats.hpp"

namespace nvqos::load {

struct TraceRecord {
  uint64_t submit_ns;
  uint64_t complete_ns;
  uint64_t scheduled_ns;
  uint16_t queue;
  uint16_t local_port;
  uint16_t cid;
  Op op;
  uint32_t bytes;
  uint16_t status;
  uint64_t latency_ns;  // by the job's --latency-clock; 0: a kernel stamp was missing
};

class TraceWriter {
 public:
  // Throws std::runtime_error naming the path when it cannot be created.
  explicit TraceWriter(const std::string& path);
  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // Formats into an in-memory buffer; the file is written in large chunks so
  // the hot path makes no system call per I/O.
  void write(std::string_view job, const TraceRecord& r);
  void flush();

  static constexpr const char* kHeader =
      "submit_ns,complete_ns,scheduled_ns,job,queue,local_port,cid,op,bytes,status,latency_ns";

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::vector<char> buf_;
  size_t used_ = 0;
};

}  // namespace nvqos::load
