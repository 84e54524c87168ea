// nvqos-target: an NVMe/TCP controller with RAM-backed namespaces on Boost.Asio.
//
// Threads: the io_context may run on several threads (--threads). Each connection's handlers
// run on its own strand, so per-connection state needs no lock; what connections share
// (controller registry, CC/CSTS, namespace chunk allocation) is guarded by a mutex or atomics.
// One thread is the default because target and initiator usually share this 2-core machine;
// more threads help when the target runs alone on a bigger host.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"

namespace nvqos::target {

// Receives one line per event (no trailing newline).
using LogSink = std::function<void(std::string_view line)>;
LogSink stderr_log_sink();

struct TargetStats {
  std::uint64_t connections = 0;  // open now
  std::uint64_t commands = 0;     // completed, all queues
  std::uint64_t read_ops = 0;
  std::uint64_t write_ops = 0;
  std::uint64_t read_bytes = 0;
  std::uint64_t write_bytes = 0;
  std::uint64_t fatal_errors = 0;  // connections closed with a TermReq
};

class Target {
 public:
  Target(boost::asio::io_context& io, TargetConfig config, LogSink log = stderr_log_sink());
  ~Target();
  Target(const Target&) = delete;
  Target& operator=(const Target&) = delete;

  // Binds every --listen address and starts accepting; returns the bound endpoints (a port of 0
  // gets an ephemeral one). Throws std::system_error naming the address on failure.
  std::vector<boost::asio::ip::tcp::endpoint> start();
  // Stops accepting and closes every connection; io_context::run() then returns.
  void stop();
  TargetStats stats() const;
  // Service times per host NQN and op so far (see service_time.hpp); safe from any thread.
  nlohmann::json service_report() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace nvqos::target
