// nvqos-target: NVMe/TCP controller with RAM-backed namespaces. See docs/tools.md.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>
#include <cerrno>
#include <cstring>
#include <functional>

#include "config.hpp"
#include "target.hpp"

namespace po = boost::program_options;
namespace asio = boost::asio;
using namespace nvqos::target;

namespace {

const char* kUsage =
    "Usage: nvqos-target [--listen ADDR:PORT]... --subsystem NQN --namespace SIZE[:BLOCK]...\n"
    "                    (--allow-host NQN... | --allow-any-host) [--subsystem ...] [options]\n"
    "       nvqos-target --config FILE [options]\n"
    "\n"
    "An NVMe/TCP controller (NVMe-oF TCP transport) with RAM-backed namespaces.\n"
    "--namespace / --allow-host / --allow-any-host apply to the --subsystem before them.\n"
    "Sizes take binary units (K, M, G, T); durations take ns, us, ms, s.\n\n"
    "Example:\n"
    "  nvqos-target --listen 127.0.0.1:4420 --subsystem nqn.2024-01.io.nvqos:disk1 \\\n"
    "               --namespace 1G --namespace 256M:4096 --allow-any-host --service-time fixed:100us\n";

std::uint32_t size_u32(const std::string& v, const char* flag) {
  try {
    std::uint64_t b = parse_size(v);
    if (b > UINT32_MAX) throw ConfigError("too large");
    return static_cast<std::uint32_t>(b);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string(flag) + " '" + v + "': " + e.what());
  }
}

std::string rate(double bytes_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB/s", bytes_per_s / 1e6);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("Options");
  opts.add_options()
      ("help,h", "show this help")
      ("listen,l", po::value<std::vector<std::string>>()->composing(),
       "listen on ADDR:PORT (repeatable; IPv6 as [::1]:4420; default 0.0.0.0:4420)")
      ("subsystem,s", po::value<std::vector<std::string>>()->composing(), "define a subsystem NQN")
      ("namespace,n", po::value<std::vector<std::string>>()->composing(),
       "add a namespace SIZE[:BLOCK] to the last --subsystem (block 512 B by default)")
      ("allow-host", po::value<std::vector<std::string>>()->composing(),
       "allow host NQN to connect to the last --subsystem")
      ("allow-any-host", po::bool_switch(), "let any host connect to the last --subsystem")
      ("config,c", po::value<std::string>(), "JSON config file (see docs/tools.md)")
      ("service-time", po::value<std::string>(),
       "emulated device time per command: fixed:100us | exp:mean=200us | pct:p50=100us,p99=1ms")
      ("inline-data-size", po::value<std::string>(), "in-capsule data per I/O command, bytes (default 16K)")
      ("max-h2c-data", po::value<std::string>(), "MAXH2CDATA: most data per H2CData PDU, bytes (default 128K)")
      ("maxr2t", po::value<std::uint32_t>(), "most outstanding R2Ts per command (also bounded by the host's MAXR2T; default 1)")
      ("r2t-size", po::value<std::string>(), "bytes requested per R2T (default 0 = the whole transfer)")
      ("mdts", po::value<std::string>(), "maximum data transfer size per command, bytes (default 1M, max 2M)")
      ("max-io-queues", po::value<std::uint16_t>(), "I/O queues granted per controller (default 64)")
      ("queue-size", po::value<std::uint16_t>(), "largest I/O queue, entries (CAP.MQES+1, default 1024)")
      ("no-digests", po::bool_switch(), "refuse header/data digests even if the host asks")
      ("c2h-success", po::bool_switch(),
       "complete reads with C2HData SUCCESS (no CapsuleResp) on queues whose host disabled SQ flow control")
      ("threads", po::value<unsigned>(), "threads running the event loop (default 1)")
      ("stats-interval", po::value<double>(), "print a stats line every N seconds (0 = never)")
      ("report", po::value<std::string>(),
       "write service times per host NQN and op as JSON to FILE on exit and on SIGUSR1")
      ("latency-clock", po::value<std::string>(),
       "app|kernel|wire: the report's service time from capsule parsed to completion handed to the socket (app, "
       "default), from the capsule's kernel RX stamp to the completion's TX stamp (kernel; both reported), or "
       "from the packet that carried the capsule (wire: a packet tap per listening port, needs CAP_NET_RAW; all three "
       "reported)");
  po::variables_map vm;
  po::parsed_options parsed(&opts);
  try {
    parsed = po::command_line_parser(argc, argv).options(opts).run();
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "nvqos-target: %s\n\n%s", e.what(), kUsage);
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << opts;
    return 0;
  }

  TargetConfig cfg;
  try {
    if (vm.count("config")) load_config_file(vm["config"].as<std::string>(), cfg);
    // Walk the flags in command-line order so --namespace/--allow-host attach to the right subsystem.
    for (const auto& o : parsed.options) {
      const std::string& key = o.string_key;
      const std::string value = o.value.empty() ? "" : o.value.front();
      if (key == "listen") {
        parse_listen(value);
        cfg.listen.push_back(value);
      } else if (key == "subsystem") {
        cfg.subsystems.emplace_back();
        cfg.subsystems.back().nqn = value;
      } else if (key == "namespace" || key == "allow-host" || key == "allow-any-host") {
        if (cfg.subsystems.empty()) throw ConfigError("--" + key + " before any --subsystem");
        auto& s = cfg.subsystems.back();
        if (key == "namespace") s.namespaces.push_back(parse_namespace(value));
        else if (key == "allow-host") s.hosts.push_back(value);
        else s.allow_any_host = true;
      }
    }
    if (vm.count("service-time")) {
      try {
        cfg.service_time = ServiceTime::parse(vm["service-time"].as<std::string>());
      } catch (const ConfigError& e) {
        throw ConfigError(e.what());
      }
    }
    if (vm.count("inline-data-size")) cfg.inline_data_size = size_u32(vm["inline-data-size"].as<std::string>(), "--inline-data-size");
    if (vm.count("max-h2c-data")) cfg.max_h2c_data = size_u32(vm["max-h2c-data"].as<std::string>(), "--max-h2c-data");
    if (vm.count("maxr2t")) cfg.maxr2t = vm["maxr2t"].as<std::uint32_t>();
    if (vm.count("r2t-size")) cfg.r2t_size = size_u32(vm["r2t-size"].as<std::string>(), "--r2t-size");
    if (vm.count("mdts")) cfg.mdts_bytes = size_u32(vm["mdts"].as<std::string>(), "--mdts");
    if (vm.count("max-io-queues")) cfg.max_io_queues = vm["max-io-queues"].as<std::uint16_t>();
    if (vm.count("queue-size")) cfg.max_queue_size = vm["queue-size"].as<std::uint16_t>();
    if (vm["no-digests"].as<bool>()) cfg.allow_digests = false;
    if (vm["c2h-success"].as<bool>()) cfg.c2h_success = true;
    if (vm.count("threads")) cfg.threads = vm["threads"].as<unsigned>();
    if (vm.count("stats-interval")) cfg.stats_interval_s = vm["stats-interval"].as<double>();
    if (vm.count("latency-clock")) {
      try {
        cfg.latency_clock = nvqos::wireclock::parse_latency_clock(vm["latency-clock"].as<std::string>());
      } catch (const std::invalid_argument& e) {
        throw ConfigError(std::string("--latency-clock: ") + e.what());
      }
    }
    if (cfg.max_queue_size < 2) throw ConfigError("--queue-size must be >= 2");
    if (cfg.max_io_queues < 1) throw ConfigError("--max-io-queues must be >= 1");
    validate(cfg);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "nvqos-target: %s\n", e.what());
    return 2;
  }

  asio::io_context io;
  const unsigned threads = cfg.threads;
  const double interval = cfg.stats_interval_s;
  LogSink log = stderr_log_sink();
  std::unique_ptr<Target> target;
  try {
    target = std::make_unique<Target>(io, cfg, log);
    target->start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nvqos-target: %s\n", e.what());
    return 1;
  }

  // The stats timer and the signal handler share a strand: with --threads > 1 they could
  // otherwise run at once.
  auto control = asio::make_strand(io);
  asio::steady_timer stats_timer(control);
  bool stopping = false;  // a stats tick already queued when the signal arrives must not re-arm
  TargetStats last = target->stats();
  auto last_time = std::chrono::steady_clock::now();
  std::function<void()> arm_stats = [&] {
    stats_timer.expires_after(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(interval)));
    stats_timer.async_wait([&](boost::system::error_code ec) {
      if (ec || stopping) return;
      TargetStats now = target->stats();
      auto t = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(t - last_time).count();
      char line[256];
      std::snprintf(line, sizeof line,
                    "stats: %llu connections, %.0f IOPS (read %.0f, write %.0f), read %s, write %s, %llu fatal errors",
                    static_cast<unsigned long long>(now.connections),
                    (now.read_ops + now.write_ops - last.read_ops - last.write_ops) / dt,
                    (now.read_ops - last.read_ops) / dt, (now.write_ops - last.write_ops) / dt,
                    rate((now.read_bytes - last.read_bytes) / dt).c_str(),
                    rate((now.write_bytes - last.write_bytes) / dt).c_str(),
                    static_cast<unsigned long long>(now.fatal_errors));
      log(line);
      last = now;
      last_time = t;
      arm_stats();
    });
  };
  if (interval > 0) arm_stats();

  const std::string report_path = vm.count("report") ? vm["report"].as<std::string>() : "";
  // Written to a temporary name and renamed, so a reader never sees half a report.
  auto write_report = [&] {
    if (report_path.empty()) return;
    const std::string tmp = report_path + ".tmp";
    {
      std::ofstream out(tmp);
      out << target->service_report().dump(2) << '\n';
      if (!out) {
        log("cannot write the service-time report to " + tmp);
        return;
      }
    }
    if (std::rename(tmp.c_str(), report_path.c_str()) != 0)
      log("cannot rename " + tmp + " to " + report_path + ": " + std::strerror(errno));
    else
      log("wrote the service-time report (" + std::string(nvqos::wireclock::latency_clock_name(cfg.latency_clock)) +
          " clock) to " + report_path);
  };
  asio::signal_set report_signal(control, SIGUSR1);
  std::function<void()> arm_report_signal = [&] {
    report_signal.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      write_report();
      arm_report_signal();
    });
  };
  if (!report_path.empty()) arm_report_signal();

  asio::signal_set signals(control, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    log(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
    stopping = true;
    stats_timer.cancel();
    report_signal.cancel();
    target->stop();
  });

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& th : pool) th.join();
  write_report();
  return 0;
}
