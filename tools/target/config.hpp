// nvqos-target configuration: listeners, subsystems with their hosts and namespaces, emulated
// device service time, transport limits. Built from command-line flags and/or a JSON file.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>

#include <nvqos/wireclock/wire_clock.h>
#include <vector>

namespace nvqos::target {

// Thrown for any invalid option or config file entry; what() names the flag or JSON pointer.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct NamespaceConfig {
  std::uint32_t nsid = 0;        // 0 = next free
  std::uint64_t size_bytes = 0;  // multiple of block_size
  std::uint32_t block_size = 512;
};

struct SubsystemConfig {
  std::string nqn;
  bool allow_any_host = false;
  std::vector<std::string> hosts;  // allowed host NQNs
  std::vector<NamespaceConfig> namespaces;
};

// Emulated backend latency per command: fixed, exponential, or log-normal fitted to p50/p99.
class ServiceTime {
 public:
  enum class Kind { none, fixed, exponential, percentile };
  static ServiceTime parse(const std::string& spec);  // "fixed:100us", "exp:mean=200us", "pct:p50=100us,p99=1ms"
  Kind kind() const { return kind_; }
  std::chrono::nanoseconds sample(std::mt19937_64& rng) const;
  std::string describe() const;

 private:
  Kind kind_ = Kind::none;
  double a_ns_ = 0;  // fixed: value; exp: mean; pct: median
  double sigma_ = 0; // pct: log-normal sigma
};

struct TargetConfig {
  std::vector<std::string> listen;  // "ADDR:PORT", IPv6 as "[::1]:4420"
  std::vector<SubsystemConfig> subsystems;
  ServiceTime service_time;
  std::uint32_t inline_data_size = 16384;  // in-capsule data per I/O command (bytes)
  std::uint32_t max_h2c_data = 131072;     // MAXH2CDATA advertised in ICResp (bytes)
  std::uint32_t maxr2t = 1;                // our cap on outstanding R2Ts per command (also host's MAXR2T+1)
  std::uint32_t r2t_size = 0;              // bytes per R2T; 0 = the whole remaining transfer
  std::uint32_t mdts_bytes = 1u << 20;     // maximum data transfer size (power of two, >= 4 KiB)
  std::uint16_t max_io_queues = 64;
  std::uint16_t max_queue_size = 1024;     // CAP.MQES + 1
  bool allow_digests = true;
  bool c2h_success = false;                // complete reads with C2HData SUCCESS, no CapsuleResp
  unsigned threads = 1;
  double stats_interval_s = 0;             // 0 = no periodic stats line
  // Service-time clock of the --report (app: capsule parsed to completion handed to the
  // socket; kernel: capsule's RX stamp to the completion's TX stamp).
  wireclock::LatencyClock latency_clock = wireclock::LatencyClock::kApp;
  std::string log_level = "info";          // "info" (connect/disconnect/errors) or "debug"
};

// Parses "4420", "127.0.0.1:4420", "[::1]:4420", "0.0.0.0:4420".
struct ListenAddress {
  std::string host;
  std::uint16_t port;
};
ListenAddress parse_listen(const std::string& s);

// "1G", "512M", "4096", "64KiB" -> bytes (binary multiples).
std::uint64_t parse_size(const std::string& s);
// "SIZE[:BLOCK]" as given to --namespace.
NamespaceConfig parse_namespace(const std::string& s);

// Merges a JSON config file into `cfg` (JSON wins for scalars it sets; lists are appended).
void load_config_file(const std::string& path, TargetConfig& cfg);
void load_config_json(const std::string& text, TargetConfig& cfg);  // for tests
// Checks the whole config (NQN syntax, sizes, duplicate NQNs/NSIDs); assigns NSIDs.
void validate(TargetConfig& cfg);

}  // namespace nvqos::target
