// nvqos-agent: per-tenant NVMe/TCP accounting (and, as policies grow, QoS) in
// the kernel for the interfaces it is given.
#include <bpf/libbpf.h>

#include <boost/asio/io_context.hpp>
#include <boost/program_options.hpp>
#include <iostream>

#include "agent.hpp"
#include "cleanup.hpp"
#include "log.hpp"
#include "version.hpp"

namespace po = boost::program_options;
using namespace nvqos;
using namespace nvqos::agent;

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

std::vector<std::string> split_interfaces(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const auto& arg : args) {
    std::size_t start = 0;
    while (start <= arg.size()) {
      auto comma = arg.find(',', start);
      auto name = arg.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!name.empty() && std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return out;
}

// "500ms", "2s", "1000" (milliseconds).
bool parse_interval(const std::string& text, std::chrono::milliseconds& out) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    return false;
  }
  std::string unit = text.substr(used);
  double ms = unit == "ms" || unit.empty() ? value : unit == "s" ? value * 1000 : -1;
  if (ms < 10 || ms > 3600e3) return false;
  out = std::chrono::milliseconds(static_cast<long long>(ms));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("nvqos-agent options");
  std::vector<std::string> interfaces;
  std::string pin_dir, admin_address, admin_token_file;
  std::string config, metrics_address, admin_socket, interval_text, xdp_mode_text, log_level_text, log_format_text;
  opts.add_options()
      ("help,h", "show this help")
      ("version", "print the version")
      ("interface,i", po::value(&interfaces)->composing(), "interface(s) to attach to: IF[,IF...] (repeatable)")
      ("config,c", po::value(&config), "policy file (JSON, see docs/config.md); default: observe only, "
                                       "every NVMe/TCP flow under tenant \"default\"")
      ("validate", "check the config file and exit (0: valid, 2: invalid)")
      ("metrics-address", po::value(&metrics_address)->default_value("0.0.0.0:9465"),
       "HTTP listen address for /metrics, /healthz, /readyz")
      ("admin-socket", po::value(&admin_socket)->default_value("/run/nvqos/agent.sock"),
       "unix socket (mode 0600) of the admin API used by nvqosctl; empty to disable")
      ("admin-address", po::value(&admin_address),
       "also serve the admin API on this TCP address (HOST:PORT); every request needs the bearer token of "
       "--admin-token-file")
      ("admin-token-file", po::value(&admin_token_file),
       "file holding the admin API's bearer token (mode 0600, owned by the agent's user or root)")
      ("no-watch-config", "do not reload when the config file changes (SIGHUP still reloads)")
      ("pin-dir", po::value(&pin_dir)->default_value(kDefaultPinRoot),
       "bpffs directory where each interface's maps and programs are pinned, so a restarted agent adopts them "
       "(counters continue); empty: no pinning")
      ("keep-on-exit", "on SIGTERM/SIGINT leave programs, filters and pins in place for the next agent "
                       "(rolling update); default: remove everything nvqos attached")
      ("cleanup", "remove everything nvqos installed on this host (pins, tc filters, clsact it created, XDP) and exit")
      ("replace-root-qdisc", "let a QoS policy replace a root qdisc another tool installed (default: refuse)")
      ("telemetry-interval", po::value(&interval_text)->default_value("1s"),
       "how often the kernel maps are read: e.g. 500ms, 1s")
      ("xdp-mode", po::value(&xdp_mode_text)->default_value("best"),
       "XDP attach mode when a policy needs early drop: native, generic, best (native, else generic)")
      ("log-level", po::value(&log_level_text)->default_value("info"), "debug, info, warn, error")
      ("log-format", po::value(&log_format_text)->default_value("logfmt"), "logfmt or json");

  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "nvqos-agent: " << e.what() << "\n\n" << opts;
    return kExitUsage;
  }
  if (vm.count("help")) {
    std::cout << "Usage: nvqos-agent --interface IF[,IF...] [--config FILE] [options]\n\n" << opts;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "nvqos-agent " << kVersion << "\n";
    return 0;
  }

  log::Level level;
  log::Format format;
  if (!log::parse_level(log_level_text, level)) {
    std::cerr << "nvqos-agent: --log-level \"" << log_level_text << "\": use debug, info, warn or error\n";
    return kExitUsage;
  }
  if (!log::parse_format(log_format_text, format)) {
    std::cerr << "nvqos-agent: --log-format \"" << log_format_text << "\": use logfmt or json\n";
    return kExitUsage;
  }
  log::configure(level, format);

  if (vm.count("validate")) {
    if (config.empty()) {
      std::cerr << "nvqos-agent: --validate needs --config FILE\n";
      return kExitUsage;
    }
    try {
      auto policy = load_policy_file(config);
      std::cout << config << ": valid (" << policy.tenants.size() << " tenants, " << policy.classes.size()
                << " QoS classes)\n";
      return 0;
    } catch (const ConfigError& e) {
      std::cerr << "nvqos-agent: invalid config: " << e.what() << "\n";
      return kExitUsage;
    }
  }

  if (vm.count("cleanup")) {
    // Querying interfaces without a clsact qdisc makes libbpf print the
    // kernel's complaint; the cleanup's own lines say what was found.
    libbpf_set_print(nullptr);
    auto report = cleanup_host(pin_dir, std::cout);
    return report.errors ? kExitRuntime : 0;
  }

  AgentOptions options;
  options.datapath.pin_root = pin_dir;
  options.keep_on_exit = vm.count("keep-on-exit") > 0;
  options.interfaces = split_interfaces(interfaces);
  if (options.interfaces.empty()) {
    std::cerr << "nvqos-agent: --interface is required (e.g. --interface eth0)\n";
    return kExitUsage;
  }
  if (!config.empty()) options.config_path = config;
  options.metrics_address = metrics_address;
  options.admin_socket = admin_socket;
  options.admin_address = admin_address;
  options.admin_token_file = admin_token_file;
  options.watch_config = !vm.count("no-watch-config");
  options.datapath.shaper.replace_foreign_root = vm.count("replace-root-qdisc") > 0;
  if (!parse_interval(interval_text, options.telemetry_interval)) {
    std::cerr << "nvqos-agent: --telemetry-interval \"" << interval_text << "\": use e.g. 500ms or 1s (10ms..1h)\n";
    return kExitUsage;
  }
  if (!parse_xdp_mode(xdp_mode_text, options.datapath.xdp_mode)) {
    std::cerr << "nvqos-agent: --xdp-mode \"" << xdp_mode_text << "\": use native, generic or best\n";
    return kExitUsage;
  }

  boost::asio::io_context io;
  Agent agent(io, options);
  if (auto s = agent.start(); !s) {
    log::error("start failed", {{"error", s.error().message}});
    return s.error().code == EINVAL && s.error().message.rfind("invalid config", 0) == 0 ? kExitUsage : kExitRuntime;
  }
  io.run();
  return 0;
}
