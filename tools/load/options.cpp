#include "options.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace nvqos::load {
namespace {

namespace po = boost::program_options;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "123abc" into 123 and "abc"; throws if there is no leading number.
std::pair<double, std::string> number_and_suffix(std::string_view text, const char* what) {
  std::string t = lower(text);
  size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  if (i == 0) throw std::invalid_argument(std::string("invalid ") + what + " '" + std::string(text) + "'");
  double value = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + i, value);
  if (ec != std::errc() || ptr != t.data() + i)
    throw std::invalid_argument(std::string("invalid ") + what + " '" + std::string(text) + "'");
  return {value, t.substr(i)};
}

uint32_t to_u32(uint64_t v, const char* what) {
  if (v > UINT32_MAX) throw std::invalid_argument(std::string(what) + " " + std::to_string(v) + " too large");
  return static_cast<uint32_t>(v);
}

}  // namespace

uint64_t parse_size(std::string_view text) {
  auto [value, suffix] = number_and_suffix(text, "size");
  double mult = 1;
  if (suffix.empty() || suffix == "b") mult = 1;
  else if (suffix == "k" || suffix == "kb" || suffix == "kib") mult = 1024.0;
  else if (suffix == "m" || suffix == "mb" || suffix == "mib") mult = 1024.0 * 1024;
  else if (suffix == "g" || suffix == "gb" || suffix == "gib") mult = 1024.0 * 1024 * 1024;
  else if (suffix == "t" || suffix == "tb" || suffix == "tib") mult = 1024.0 * 1024 * 1024 * 1024;
  else
    throw std::invalid_argument("invalid size '" + std::string(text) +
                                "': use a number of bytes with an optional k/m/g suffix (KiB/MiB/GiB)");
  double bytes = value * mult;
  if (bytes != static_cast<double>(static_cast<uint64_t>(bytes)))
    throw std::invalid_argument("invalid size '" + std::string(text) + "': not a whole number of bytes");
  return static_cast<uint64_t>(bytes);
}

std::chrono::nanoseconds parse_duration(std::string_view text) {
  auto [value, suffix] = number_and_suffix(text, "duration");
  double ns_per_unit;
  if (suffix.empty() || suffix == "s") ns_per_unit = 1e9;
  else if (suffix == "ms") ns_per_unit = 1e6;
  else if (suffix == "us") ns_per_unit = 1e3;
  else if (suffix == "ns") ns_per_unit = 1;
  else if (suffix == "m" || suffix == "min") ns_per_unit = 60e9;
  else if (suffix == "h") ns_per_unit = 3600e9;
  else
    throw std::invalid_argument("invalid duration '" + std::string(text) + "': use us, ms, s, m or h");
  return std::chrono::nanoseconds(static_cast<int64_t>(value * ns_per_unit));
}

void apply_rw(JobSpec& job, std::string_view rw, uint32_t rwmix_read) {
  std::string r = lower(rw);
  if (r == "randread") job.access = Access::kRandom, job.read_percent = 100;
  else if (r == "randwrite") job.access = Access::kRandom, job.read_percent = 0;
  else if (r == "randrw") job.access = Access::kRandom, job.read_percent = rwmix_read;
  else if (r == "read") job.access = Access::kSequential, job.read_percent = 100;
  else if (r == "write") job.access = Access::kSequential, job.read_percent = 0;
  else if (r == "rw" || r == "readwrite") job.access = Access::kSequential, job.read_percent = rwmix_read;
  else
    throw std::invalid_argument("invalid rw '" + std::string(rw) +
                                "': use randread, randwrite, randrw, read, write or rw");
}

void apply_digest(JobSpec& job, std::string_view digest) {
  job.header_digest = job.data_digest = false;
  std::string d = lower(digest);
  if (d == "none" || d.empty()) return;
  std::stringstream ss(d);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "header" || item == "hdgst") job.header_digest = true;
    else if (item == "data" || item == "ddgst") job.data_digest = true;
    else if (item == "both" || item == "all") job.header_digest = job.data_digest = true;
    else throw std::invalid_argument("invalid digest '" + std::string(digest) + "': use none, header, data or header,data");
  }
}

void apply_target(JobSpec& job, std::string_view target) {
  std::string t(target);
  std::string host = t, port;
  if (!t.empty() && t[0] == '[') {
    auto close = t.find(']');
    if (close == std::string::npos) throw std::invalid_argument("invalid target '" + t + "': missing ']'");
    host = t.substr(1, close - 1);
    if (close + 1 < t.size()) {
      if (t[close + 1] != ':') throw std::invalid_argument("invalid target '" + t + "'");
      port = t.substr(close + 2);
    }
  } else if (auto colon = t.rfind(':'); colon != std::string::npos && t.find(':') == colon) {
    host = t.substr(0, colon);
    port = t.substr(colon + 1);
  }
  if (host.empty()) throw std::invalid_argument("invalid target '" + t + "': no host");
  job.host = host;
  if (!port.empty()) {
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p == 0 || p > 65535)
      throw std::invalid_argument("invalid target '" + t + "': bad port '" + port + "'");
    job.port = static_cast<uint16_t>(p);
  }
}

void validate(const JobSpec& job) {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument("job '" + job.name + "': " + what);
  };
  if (job.name.empty()) fail("empty name");
  if (job.subnqn.empty()) fail("no subsystem NQN (--subnqn)");
  if (job.subnqn.size() > 223 || job.hostnqn.size() > 223) fail("NQN longer than 223 bytes");
  if (job.queues == 0 || job.queues > 1024) fail("queues must be 1..1024");
  if (job.qd == 0 || job.qd > 1024) fail("qd must be 1..1024");
  if (job.block_size == 0 || job.block_size % 512) fail("block size must be a non-zero multiple of 512 bytes");
  if (job.read_percent > 100) fail("rwmix-read must be 0..100");
  if (job.runtime.count() == 0 && job.ios == 0) fail("give a --runtime or an --ios count");
  if (job.nsid == 0 || job.nsid == 0xffffffffu) fail("invalid namespace ID");
  if (job.offset % 512) fail("offset must be a multiple of 512 bytes");
  if (job.io_timeout.count() <= 0) fail("io-timeout must be positive");
  if (!job.source.empty()) {
    boost::system::error_code ec;
    boost::asio::ip::make_address(job.source, ec);
    if (ec) fail("source '" + job.source + "' is not an IP address");
  }
}

namespace {

void apply_json_job(JobSpec& job, const nlohmann::json& j) {
  if (!j.is_object()) throw std::invalid_argument("job file: each job must be a JSON object");
  uint32_t rwmix = job.read_percent == 0 || job.read_percent == 100 ? 50 : job.read_percent;
  if (j.contains("rwmix-read")) rwmix = to_u32(j["rwmix-read"].get<uint64_t>(), "rwmix-read");
  auto size_of = [](const nlohmann::json& v) {
    return v.is_string() ? parse_size(v.get<std::string>()) : v.get<uint64_t>();
  };
  auto duration_of = [](const nlohmann::json& v) {
    return v.is_string() ? parse_duration(v.get<std::string>())
                         : std::chrono::nanoseconds(static_cast<int64_t>(v.get<double>() * 1e9));
  };
  for (auto& [key, v] : j.items()) {
    if (key == "name") job.name = v.get<std::string>();
    else if (key == "target") apply_target(job, v.get<std::string>());
    else if (key == "source") job.source = v.get<std::string>();
    else if (key == "subnqn") job.subnqn = v.get<std::string>();
    else if (key == "hostnqn") job.hostnqn = v.get<std::string>();
    else if (key == "nsid") job.nsid = v.get<uint32_t>();
    else if (key == "queues") job.queues = v.get<uint32_t>();
    else if (key == "qd") job.qd = v.get<uint32_t>();
    else if (key == "bs") job.block_size = to_u32(size_of(v), "bs");
    else if (key == "rw") apply_rw(job, v.get<std::string>(), rwmix);
    else if (key == "rwmix-read") {
      if (job.read_percent != 0 && job.read_percent != 100) job.read_percent = rwmix;
    } else if (key == "runtime") job.runtime = duration_of(v);
    else if (key == "ios") job.ios = v.get<uint64_t>();
    else if (key == "rate-iops") job.rate_iops = v.get<uint64_t>();
    else if (key == "latency-clock") job.latency_clock = wireclock::parse_latency_clock(v.get<std::string>());
    else if (key == "digest") apply_digest(job, v.get<std::string>());
    else if (key == "verify") job.verify = v.get<bool>();
    else if (key == "offset") job.offset = size_of(v);
    else if (key == "size") job.size = size_of(v);
    else if (key == "kato") job.kato = std::chrono::duration_cast<std::chrono::milliseconds>(duration_of(v));
    else if (key == "io-timeout")
      job.io_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(duration_of(v));
    else throw std::invalid_argument("job file: unknown key '" + key + "'");
  }
}

}  // namespace

std::vector<JobSpec> parse_job_json(std::string_view json_text, const JobSpec& defaults) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::invalid_argument(std::string("job file: ") + e.what());
  }
  const nlohmann::json* list = &doc;
  if (doc.is_object()) {
    if (!doc.contains("jobs")) throw std::invalid_argument("job file: expected a list of jobs or {\"jobs\": [...]}");
    list = &doc["jobs"];
  }
  if (!list->is_array() || list->empty()) throw std::invalid_argument("job file: no jobs");
  std::vector<JobSpec> jobs;
  for (size_t i = 0; i < list->size(); ++i) {
    JobSpec job = defaults;
    job.name = "job" + std::to_string(i);
    try {
      apply_json_job(job, (*list)[i]);
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("job file: job " + std::to_string(i) + ": " + e.what());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("job file: job " + std::to_string(i) + ": " + e.what());
    }
    for (const auto& other : jobs)
      if (other.name == job.name) throw std::invalid_argument("job file: duplicate job name '" + job.name + "'");
    jobs.push_back(std::move(job));
  }
  return jobs;
}

std::vector<JobSpec> parse_job_file(const std::string& path, const JobSpec& defaults) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("job file '" + path + "': cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return parse_job_json(ss.str(), defaults);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("'" + path + "': " + e.what());
  }
}

std::optional<Options> parse_command_line(int argc, const char* const argv[]) {
  po::options_description desc(
      "Usage: nvqos-load --target HOST:PORT --subnqn NQN [options]\n"
      "       nvqos-load --job-file FILE [options]\n\n"
      "Runs NVMe/TCP workloads against a target and reports IOPS, throughput and\n"
      "latency per job and operation.\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("target", po::value<std::string>(), "NVMe/TCP target HOST:PORT (port defaults to 4420)")
    ("source", po::value<std::string>(), "local IP address to connect from (default: chosen by routing)")
    ("subnqn", po::value<std::string>(), "subsystem NQN to connect to")
    ("hostnqn", po::value<std::string>(), "host NQN (default nqn.2014-08.org.nvmexpress:uuid:<random host ID per job>)")
    ("nsid", po::value<uint32_t>(), "namespace ID (default 1)")
    ("name", po::value<std::string>(), "job (tenant) name shown in reports (default job0)")
    ("queues", po::value<uint32_t>(), "I/O queues (TCP connections) (default 1)")
    ("qd", po::value<uint32_t>(), "queue depth per I/O queue (default 1)")
    ("bs", po::value<std::string>(), "block size in bytes, k/m suffix = KiB/MiB (default 4k)")
    ("rw", po::value<std::string>(), "randread|randwrite|randrw|read|write|rw (default randread)")
    ("rwmix-read", po::value<uint32_t>(), "percent of reads for randrw/rw (default 50)")
    ("runtime", po::value<std::string>(), "duration: us|ms|s|m suffix (e.g. 10s)")
    ("ios", po::value<uint64_t>(), "stop after this many I/Os (per job)")
    ("rate-iops", po::value<uint64_t>(), "open-loop IOPS cap per job; latency is then measured from the scheduled send time")
    ("latency-clock", po::value<std::string>(), "app|kernel|wire: latency from the send call to the completion parsed "
                                                "(app, default), from the kernel's TX stamp of the capsule to its RX "
                                                "stamp of the completion (kernel; both are then reported), or to the "
                                                "packet that carried the completion (wire: a packet tap, needs "
                                                "CAP_NET_RAW; all three are reported)")
    ("digest", po::value<std::string>(), "none|header|data|header,data (default none)")
    ("verify", "write a pattern derived from (LBA, generation) and check it on reads")
    ("offset", po::value<std::string>(), "start of the job's range in the namespace, bytes (k/m/g)")
    ("size", po::value<std::string>(), "length of the job's range, bytes (k/m/g) (default: to the end)")
    ("kato", po::value<std::string>(), "Keep Alive Timeout requested in Connect (default 30s)")
    ("io-timeout", po::value<std::string>(), "fail a queue whose I/O is outstanding this long (default 30s)")
    ("job-file", po::value<std::string>(), "JSON file with a list of named jobs run concurrently; "
                                           "command-line job flags are the defaults for every job")
    ("json", "print the report as JSON on stdout")
    ("trace", po::value<std::string>(), "write one CSV line per I/O to FILE")
    ("progress", po::value<std::string>(), "on|off|auto: progress line on stderr every second (auto: runs > 2 s)");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw std::invalid_argument(e.what());
  }
  if (vm.count("help")) {
    std::cout << desc << "\nSizes are in bytes (k/m/g = KiB/MiB/GiB); durations take us/ms/s/m.\n"
              << "Example: nvqos-load --target 10.0.0.5:4420 --subnqn nqn.2024-01.io.example:vol1 \\\n"
              << "           --rw randread --bs 4k --qd 32 --queues 2 --runtime 10s\n";
    return std::nullopt;
  }
  JobSpec job;
  uint32_t rwmix = vm.count("rwmix-read") ? vm["rwmix-read"].as<uint32_t>() : 50;
  if (vm.count("target")) apply_target(job, vm["target"].as<std::string>());
  if (vm.count("source")) job.source = vm["source"].as<std::string>();
  if (vm.count("subnqn")) job.subnqn = vm["subnqn"].as<std::string>();
  if (vm.count("hostnqn")) job.hostnqn = vm["hostnqn"].as<std::string>();
  if (vm.count("nsid")) job.nsid = vm["nsid"].as<uint32_t>();
  if (vm.count("name")) job.name = vm["name"].as<std::string>();
  if (vm.count("queues")) job.queues = vm["queues"].as<uint32_t>();
  if (vm.count("qd")) job.qd = vm["qd"].as<uint32_t>();
  if (vm.count("bs")) job.block_size = to_u32(parse_size(vm["bs"].as<std::string>()), "bs");
  apply_rw(job, vm.count("rw") ? vm["rw"].as<std::string>() : "randread", rwmix);
  if (vm.count("runtime")) job.runtime = parse_duration(vm["runtime"].as<std::string>());
  if (vm.count("ios")) job.ios = vm["ios"].as<uint64_t>();
  if (vm.count("rate-iops")) job.rate_iops = vm["rate-iops"].as<uint64_t>();
  if (vm.count("latency-clock"))
    job.latency_clock = wireclock::parse_latency_clock(vm["latency-clock"].as<std::string>());
  if (vm.count("digest")) apply_digest(job, vm["digest"].as<std::string>());
  if (vm.count("verify")) job.verify = true;
  if (vm.count("offset")) job.offset = parse_size(vm["offset"].as<std::string>());
  if (vm.count("size")) job.size = parse_size(vm["size"].as<std::string>());
  if (vm.count("io-timeout"))
    job.io_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(vm["io-timeout"].as<std::string>()));
  if (vm.count("kato"))
    job.kato = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(vm["kato"].as<std::string>()));

  Options opts;
  if (vm.count("job-file")) {
    opts.jobs = parse_job_file(vm["job-file"].as<std::string>(), job);
  } else {
    if (!vm.count("target")) throw std::invalid_argument("no target: give --target HOST:PORT or --job-file FILE");
    opts.jobs.push_back(job);
  }
  for (const auto& j : opts.jobs) validate(j);
  opts.json = vm.count("json") > 0;
  if (vm.count("trace")) opts.trace_path = vm["trace"].as<std::string>();
  if (vm.count("progress")) {
    std::string p = lower(vm["progress"].as<std::string>());
    if (p == "on") opts.progress = true;
    else if (p == "off") opts.progress = false;
    else if (p != "auto") throw std::invalid_argument("invalid --progress '" + p + "': use on, off or auto");
  }
  return opts;
}

std::string describe_rw(const JobSpec& job) {
  bool rnd = job.access == Access::kRandom;
  if (job.read_percent == 100) return rnd ? "randread" : "read";
  if (job.read_percent == 0) return rnd ? "randwrite" : "write";
  return std::string(rnd ? "randrw" : "rw") + " " + std::to_string(job.read_percent) + "% read";
}

}  // namespace nvqos::load
