// nvqosctl: the operator's view of a running agent, over the agent's admin
// API (HTTP on a unix socket). It never touches BPF itself; `validate` runs
// the agent's own config code offline.
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/program_options.hpp>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "config.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace po = boost::program_options;
using nlohmann::json;

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

struct ApiError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

json call(const std::string& socket_path, http::verb verb, const std::string& target) {
  asio::io_context io;
  asio::local::stream_protocol::socket sock(io);
  beast::error_code ec;
  sock.connect(asio::local::stream_protocol::endpoint(socket_path), ec);
  if (ec) {
    namespace errc = boost::system::errc;
    std::string hint = ec == errc::permission_denied ? " (the socket is 0600: run as the agent's user, e.g. root)"
                       : ec == errc::no_such_file_or_directory || ec == errc::connection_refused
                           ? " (is nvqos-agent running? see --socket)"
                           : "";
    throw ApiError("connect to " + socket_path + ": " + ec.message() + hint);
  }
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "nvqos-agent");
  req.set(http::field::user_agent, "nvqosctl");
  req.prepare_payload();
  http::write(sock, req, ec);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  if (!ec) http::read(sock, buf, res, ec);
  if (ec) throw ApiError(target + ": " + ec.message());
  json body = json::parse(res.body(), nullptr, false);
  if (body.is_discarded()) throw ApiError(target + ": not JSON (HTTP " + std::to_string(res.result_int()) + ")");
  if (res.result_int() >= 400)
    throw ApiError(target + ": " + body.value("error", "HTTP " + std::to_string(res.result_int())));
  return body;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  std::ostringstream os;
  os << std::fixed << std::setprecision(u ? 1 : 0) << b << " " << units[u];
  return os.str();
}

void print_status(const json& s) {
  std::cout << "agent      nvqos-agent " << s.value("version", "?") << " on kernel " << s.value("kernel", "?") << "\n";
  const auto& c = s["config"];
  std::cout << "config     " << c.value("source", "?") << " (version " << c.value("version", 0) << "), "
            << s.value("tenants", 0) << " tenants incl. default, last reload "
            << (c.value("last_reload_success", false) ? "ok" : "FAILED") << "\n";
  if (c.contains("last_reload_error")) std::cout << "           " << c["last_reload_error"].get<std::string>() << "\n";
  std::cout << "features  ";
  for (const auto& [name, on] : s["kernel_features"].items()) std::cout << " " << name << "=" << (on ? "yes" : "no");
  std::cout << "\n\n";
  std::printf("%-16s %-40s %12s %14s %14s %8s\n", "interface", "attached", "flow table", "packets", "nvme packets",
              "errors");
  for (const auto& ifc : s["interfaces"]) {
    std::string attached;
    for (const auto& a : ifc["attached"]) {
      attached += (attached.empty() ? "" : ", ") + a["hook"].get<std::string>() + "/" + a["mode"].get<std::string>();
      if (a.value("exclusive", false)) attached += "(excl)";
    }
    std::printf("%-16s %-40s %12llu %14llu %14llu %8llu\n", ifc.value("name", "?").c_str(), attached.c_str(),
                ifc.value("flow_table_capacity", 0ull), ifc.value("packets_total", 0ull),
                ifc.value("nvme_packets_total", 0ull), ifc.value("parse_errors_total", 0ull));
  }
}

void print_tenants(const json& t) {
  std::printf("%-20s %-10s %-36s %12s %12s %6s %9s\n", "tenant", "state", "match", "in", "out", "flows", "dropped");
  for (const auto& tenant : t["tenants"]) {
    std::string match;
    for (const auto& r : tenant["match"]) {
      std::string one = r.contains("remote") ? r["remote"].get<std::string>() : "any";
      if (r.contains("port")) one += " port " + std::to_string(r["port"].get<int>());
      match += (match.empty() ? "" : ", ") + one;
    }
    if (match.empty()) match = tenant["name"] == "default" ? "(unmatched NVMe/TCP)" : "-";
    double in = 0, out = 0;
    unsigned long long active = 0, dropped = 0;
    if (tenant.contains("interfaces"))
      for (const auto& [ifname, c] : tenant["interfaces"].items()) {
        in += c.value("ingress_bytes", 0.0);
        out += c.value("egress_bytes", 0.0);
        auto opened = c.value("flows_opened", 0ull), closed = c.value("flows_closed", 0ull);
        active += opened > closed ? opened - closed : 0;
        dropped += c.value("dropped_packets", 0ull);
      }
    std::string state = !tenant.value("active", false) ? "off" : tenant.value("quarantine", false) ? "quarantine" : "on";
    std::printf("%-20s %-10s %-36s %12s %12s %6llu %9llu\n", tenant.value("name", "?").c_str(), state.c_str(),
                match.c_str(), human_bytes(in).c_str(), human_bytes(out).c_str(), active, dropped);
  }
  std::cout << "\nin/out: bytes on the wire arriving at / leaving this host; flows: open connections; "
               "dropped: packets\n";
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("nvqosctl options");
  std::string socket_path;
  opts.add_options()("help,h", "show this help")(
      "socket,s", po::value(&socket_path)->default_value("/run/nvqos/agent.sock"), "the agent's admin socket")(
      "json", "print the agent's JSON instead of a table");
  po::options_description hidden;
  std::vector<std::string> words;
  hidden.add_options()("words", po::value(&words));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("words", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "nvqosctl: " << e.what() << "\n";
    return kExitUsage;
  }
  const char* usage =
      "Usage: nvqosctl [--socket PATH] [--json] COMMAND\n\n"
      "Commands:\n"
      "  status          agent, kernel features, interfaces and what is attached\n"
      "  tenants         tenants, their match rules and traffic\n"
      "  reload          make the agent re-read its config (refused configs leave the running one)\n"
      "  validate FILE   check a config file offline with the agent's own code\n"
      "  version         nvqosctl's version\n\n";
  if (vm.count("help") || words.empty()) {
    std::cout << usage << opts;
    return words.empty() && !vm.count("help") ? kExitUsage : 0;
  }
  bool as_json = vm.count("json") > 0;
  const std::string& cmd = words[0];
  try {
    if (cmd == "version") {
      std::cout << "nvqosctl " << NVQOS_VERSION << "\n";
      return 0;
    }
    if (cmd == "validate") {
      if (words.size() != 2) {
        std::cerr << "nvqosctl: validate takes one FILE\n";
        return kExitUsage;
      }
      try {
        auto policy = nvqos::agent::load_policy_file(words[1]);
        if (as_json) std::cout << json{{"valid", true}, {"tenants", policy.tenants.size()}}.dump() << "\n";
        else std::cout << words[1] << ": valid (" << policy.tenants.size() << " tenants)\n";
        return 0;
      } catch (const nvqos::agent::ConfigError& e) {
        if (as_json) std::cout << json{{"valid", false}, {"pointer", e.pointer()}, {"error", e.what()}}.dump() << "\n";
        else std::cerr << "nvqosctl: invalid config: " << e.what() << "\n";
        return kExitError;
      }
    }
    if (cmd == "status" || cmd == "tenants") {
      json j = call(socket_path, http::verb::get, "/v1/" + cmd);
      if (as_json) std::cout << j.dump(2) << "\n";
      else if (cmd == "status") print_status(j);
      else print_tenants(j);
      return 0;
    }
    if (cmd == "reload") {
      json j = call(socket_path, http::verb::post, "/v1/reload");
      if (as_json) std::cout << j.dump(2) << "\n";
      else std::cout << "reloaded: " << j.value("tenants", 0) << " tenants in force\n";
      return 0;
    }
    std::cerr << "nvqosctl: unknown command \"" << cmd << "\"\n\n" << usage;
    return kExitUsage;
  } catch (const ApiError& e) {
    std::cerr << "nvqosctl: " << e.what() << "\n";
    return kExitError;
  }
}
