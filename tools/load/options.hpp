// nvqos-load configuration: one JobSpec per named workload (tenant), from
// single-job command-line flags or a JSON job file.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nvqos/wireclock/wire_clock.h>

namespace nvqos::load {

enum class Access { kSequential, kRandom };

struct JobSpec {
  std::string name = "job0";
  std::string host = "127.0.0.1";
  std::string source;  // local address to connect from (e.g. to appear as another tenant); empty = any
  uint16_t port = 4420;
  std::string subnqn;
  std::string hostnqn;  // empty: nqn.2014-08.org.nvmexpress:uuid:<random host ID> per job
  uint32_t nsid = 1;
  uint32_t queues = 1;
  uint32_t qd = 1;
  uint32_t block_size = 4096;  // bytes
  Access access = Access::kRandom;
  uint32_t read_percent = 100;  // 100 = read only, 0 = write only
  std::chrono::nanoseconds runtime{0};  // 0 = until `ios` are done
  uint64_t ios = 0;                     // 0 = until `runtime` has passed
  uint64_t rate_iops = 0;               // 0 = closed loop (as fast as QD allows)
  bool header_digest = false;
  bool data_digest = false;
  bool verify = false;
  uint64_t offset = 0;  // bytes into the namespace where the job's range starts
  uint64_t size = 0;    // bytes of the range; 0 = to the end of the namespace
  std::chrono::milliseconds kato{30000};  // Keep Alive Timeout asked for in Connect
  std::chrono::milliseconds io_timeout{30000};  // an I/O outstanding longer fails its queue
  // Which clock `latency_us` reports: the app's (send call to completion parsed) or the
  // kernel's (capsule's TX stamp to the completion's RX stamp; both are then measured).
  wireclock::LatencyClock latency_clock = wireclock::LatencyClock::kApp;
};

struct Options {
  std::vector<JobSpec> jobs;
  bool json = false;
  std::string trace_path;
  std::optional<bool> progress;  // unset = automatic (runs longer than ~2 s)
};

// "4096", "4k", "128K", "1m", "2g": k/m/g are KiB/MiB/GiB. Throws
// std::invalid_argument naming the text on anything else.
uint64_t parse_size(std::string_view text);
// "500us", "20ms", "10s", "2m" (minutes); a bare number is seconds.
std::chrono::nanoseconds parse_duration(std::string_view text);
// "randread" | "randwrite" | "randrw" | "read" | "write" | "rw" into access
// and read percentage (mixes keep rwmix_read).
void apply_rw(JobSpec& job, std::string_view rw, uint32_t rwmix_read);
// "none" | "header" | "data" | "header,data".
void apply_digest(JobSpec& job, std::string_view digest);
// "HOST:PORT" or "[V6]:PORT"; port defaults to 4420.
void apply_target(JobSpec& job, std::string_view target);

// Validates a job; throws std::invalid_argument naming the job and field.
void validate(const JobSpec& job);

// Parses a JSON job file: {"jobs": [{...}, ...]} or a bare list; each job
// takes the same keys as the long command-line flags ("rw", "bs", "qd", ...)
// and inherits unspecified keys from `defaults`.
std::vector<JobSpec> parse_job_file(const std::string& path, const JobSpec& defaults);
std::vector<JobSpec> parse_job_json(std::string_view json_text, const JobSpec& defaults);

// Parses argv. Returns nullopt after printing --help/--version to stdout.
// Throws std::invalid_argument on bad input.
std::optional<Options> parse_command_line(int argc, const char* const argv[]);

std::string describe_rw(const JobSpec& job);

}  // namespace nvqos::load
