#include "agent.hpp"

#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include <cstdarg>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "log.hpp"
#include "version.hpp"

namespace nvqos::agent {
namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// libbpf and libxdp print through here, one log line per line they emit.
int forward_library_log(log::Level level, const char* library, const char* fmt, va_list ap) {
  if (!log::enabled(level)) return 0;
  char buf[2048];
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string text(buf, n > 0 ? std::min<std::size_t>(n, sizeof buf - 1) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (!text.empty()) log::write(level, text, {{"source", library}});
  return n;
}

int libbpf_log(enum libbpf_print_level level, const char* fmt, va_list ap) {
  auto l = level == LIBBPF_WARN ? log::Level::warn : level == LIBBPF_INFO ? log::Level::info : log::Level::debug;
  return forward_library_log(l, "libbpf", fmt, ap);
}

int libxdp_log(enum libxdp_print_level level, const char* fmt, va_list ap) {
  auto l = level == LIBXDP_WARN ? log::Level::warn : level == LIBXDP_INFO ? log::Level::info : log::Level::debug;
  return forward_library_log(l, "libxdp", fmt, ap);
}

}  // namespace

Agent::Agent(asio::io_context& io, AgentOptions options)
    : io_(io), options_(std::move(options)), telemetry_timer_(io), signals_(io, SIGINT, SIGTERM, SIGHUP) {
  libbpf_set_print(libbpf_log);
  libxdp_set_print(libxdp_log);
  status_.version = kVersion;
  status_.config_source = options_.config_path.value_or("built-in default");
  status_.start_time_seconds = unix_seconds(std::chrono::system_clock::now());
}

Agent::~Agent() = default;

Result<Policy> Agent::read_policy() const {
  if (!options_.config_path) return default_policy();
  try {
    return load_policy_file(*options_.config_path);
  } catch (const ConfigError& e) {
    return Error{EINVAL, std::string("invalid config: ") + e.what()};
  }
}

Status Agent::start() {
  auto policy = read_policy();
  if (!policy) return policy.error();
  policy_ = std::move(policy).value();
  state_ = compile_policy(policy_);

  host_ = probe_host();
  log::info("starting", {{"version", kVersion}, {"kernel", host_.kernel_release},
                         {"btf", host_.kernel_btf ? "yes" : "no"}, {"config", status_.config_source},
                         {"tenants", std::to_string(state_.tenants.size())}});
  if (auto s = check_capabilities(host_); !s) return s.error();
  if (!host_.kernel_btf)
    log::warn("kernel has no BTF (/sys/kernel/btf/vmlinux): XDP falls back to a single program without libxdp's "
              "dispatcher");
  // libxdp keeps its dispatcher state in bpffs; mount it up front so the
  // first policy that needs XDP does not fail on a fresh host.
  if (auto s = ensure_bpffs(); !s) return s.error();

  for (const auto& ifname : options_.interfaces) {
    auto dp = InterfaceDatapath::create(ifname, state_, options_.datapath);
    if (!dp) {
      datapaths_.clear();
      return dp.error();
    }
    datapaths_.push_back(std::move(dp).value());
  }
  status_.kernel_features = {{"btf", host_.kernel_btf}, {"clsact", true}, {"bpffs", true}};
  status_.last_reload_timestamp_seconds = unix_seconds(std::chrono::system_clock::now());
  status_.tenants_configured = state_.tenants.size();

  auto server = HttpServer::listen(io_, options_.metrics_address,
                                   [this](const HttpRequest& req) { return handle_http(req); });
  if (!server) {
    datapaths_.clear();
    return server.error();
  }
  http_ = std::move(server).value();
  log::info("serving metrics", {{"address", options_.metrics_address}});

  wait_for_signal();
  take_snapshot();
  schedule_telemetry();
  return ok_status();
}

void Agent::reload() {
  ++status_.reloads_total;
  auto policy = read_policy();
  if (!policy) {
    ++status_.reload_failures_total;
    status_.last_reload_success = false;
    last_reload_error_ = policy.error().message;
    log::error("config reload refused, the running policy stays", {{"error", last_reload_error_}});
    return;
  }
  DesiredState next = compile_policy(policy.value(), state_.tenant_ids);
  for (auto& dp : datapaths_) {
    if (auto s = dp->apply(next); !s) {
      ++status_.reload_failures_total;
      status_.last_reload_success = false;
      last_reload_error_ = s.error().message;
      log::error("config reload failed while applying", {{"interface", dp->interface()}, {"error", last_reload_error_}});
      return;
    }
  }
  policy_ = std::move(policy).value();
  state_ = std::move(next);
  status_.last_reload_success = true;
  status_.last_reload_timestamp_seconds = unix_seconds(std::chrono::system_clock::now());
  status_.tenants_configured = state_.tenants.size();
  last_reload_error_.clear();
  log::info("config reloaded", {{"tenants", std::to_string(state_.tenants.size())}});
}

void Agent::wait_for_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec || stopping_) return;
    if (sig == SIGHUP) {
      log::info("SIGHUP received, reloading config");
      reload();
      wait_for_signal();
      return;
    }
    log::info("signal received, detaching", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
    stop();
  });
}

void Agent::stop() {
  if (stopping_) return;
  stopping_ = true;
  telemetry_timer_.cancel();
  signals_.cancel();
  if (http_) http_->stop();
  datapaths_.clear();
  log::info("stopped");
}

void Agent::schedule_telemetry() {
  telemetry_timer_.expires_after(options_.telemetry_interval);
  telemetry_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    take_snapshot();
    schedule_telemetry();
  });
}

void Agent::take_snapshot() {
  auto started = std::chrono::steady_clock::now();
  auto snap = std::make_shared<Snapshot>();
  snap->taken = std::chrono::system_clock::now();
  for (const auto& dp : datapaths_) {
    auto counters = dp->read_counters();
    if (!counters) {
      log::warn("telemetry read failed", {{"interface", dp->interface()}, {"error", counters.error().message}});
      continue;
    }
    snap->interfaces.push_back(std::move(counters).value());
  }
  snap->read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  snapshot_ = std::move(snap);
}

std::string Agent::readiness_json(bool& ready) const {
  nlohmann::json j;
  ready = snapshot_ && !datapaths_.empty() && !stopping_;
  j["ready"] = ready;
  j["version"] = kVersion;
  for (const auto& dp : datapaths_) {
    nlohmann::json ifc;
    ifc["name"] = dp->interface();
    for (const auto& a : dp->attachments()) ifc["attached"].push_back({{"hook", a.hook}, {"mode", a.mode}, {"exclusive", a.exclusive}});
    j["interfaces"].push_back(ifc);
  }
  j["config"]["source"] = status_.config_source;
  j["config"]["last_reload_success"] = status_.last_reload_success;
  if (!last_reload_error_.empty()) j["config"]["last_reload_error"] = last_reload_error_;
  return j.dump(2) + "\n";
}

HttpResponse Agent::handle_http(const HttpRequest& req) {
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    auto res = make_response(req, http::status::method_not_allowed, "only GET and HEAD are served here\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  std::string_view target(req.target().data(), req.target().size());
  target = target.substr(0, target.find('?'));
  if (target == "/metrics") {
    static const Snapshot kEmpty;
    return make_response(req, http::status::ok, render_metrics(snapshot_ ? *snapshot_ : kEmpty, status_),
                         "text/plain; version=0.0.4; charset=utf-8");
  }
  if (target == "/healthz") return make_response(req, http::status::ok, "ok\n");
  if (target == "/readyz") {
    bool ready = false;
    std::string body = readiness_json(ready);
    return make_response(req, ready ? http::status::ok : http::status::service_unavailable, body, "application/json");
  }
  return make_response(req, http::status::not_found, "not found: try /metrics, /healthz or /readyz\n");
}

}  // namespace nvqos::agent
