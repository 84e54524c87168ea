#include "agent.hpp"

#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include <cstdarg>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "admin_classes.hpp"
#include "log.hpp"
#include "version.hpp"

namespace nvqos::agent {
namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// A verifier log can run to megabytes; its verdict is at the end, its start says which function.
constexpr std::size_t kLibraryLogHead = 4 * 1024;
constexpr std::size_t kLibraryLogTail = 60 * 1024;

// libbpf and libxdp print through here, one log line per line they emit.
int forward_library_log(log::Level level, const char* library, const char* fmt, va_list ap) {
  if (!log::enabled(level)) return 0;
  va_list measure;
  va_copy(measure, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, measure);
  va_end(measure);
  if (n <= 0) return n;
  std::string text(static_cast<std::size_t>(n) + 1, '\0');
  std::vsnprintf(text.data(), text.size(), fmt, ap);
  text.pop_back();
  if (text.size() > kLibraryLogHead + kLibraryLogTail) {
    const std::size_t cut = text.size() - kLibraryLogHead - kLibraryLogTail;
    text = text.substr(0, kLibraryLogHead) + "\n[... " + std::to_string(cut) + " bytes left out ...]\n" +
           text.substr(text.size() - kLibraryLogTail);
  }
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
    : io_(io),
      options_(std::move(options)),
      slow_events_(io, kSlowEventsKept),
      telemetry_timer_(io),
      override_timer_(io),
      signals_(io, SIGINT, SIGTERM, SIGHUP) {
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
  // Tenant ids of a previous agent whose pinned maps we are about to adopt:
  // kept, so each tenant's kernel counters continue under its own name.
  TenantIds previous_ids;
  if (!options_.datapath.pin_root.empty())
    for (const auto& ifname : options_.interfaces)
      if (auto st = peek_persisted_state(options_.datapath.pin_root, ifname); st && !st->tenant_ids.empty()) {
        previous_ids = st->tenant_ids;
        break;
      }
  state_ = compile_policy(policy_, previous_ids);

  host_ = probe_host();
  log::info("starting", {{"version", kVersion}, {"kernel", host_.kernel_release},
                         {"btf", host_.kernel_btf ? "yes" : "no"}, {"config", status_.config_source},
                         {"tenants", std::to_string(state_.tenants.size())}});
  if (auto s = check_capabilities(host_); !s) return s.error();
  if (auto s = load_admin_token(); !s) return s.error();
  if (!host_.kernel_btf)
    log::warn("kernel has no BTF (/sys/kernel/btf/vmlinux): XDP falls back to a single program without libxdp's "
              "dispatcher");
  // libxdp keeps its dispatcher state in bpffs; mount it up front so the
  // first policy that needs XDP does not fail on a fresh host.
  if (auto s = ensure_bpffs(); !s) return s.error();
  options_.datapath.slow_command_sink = [this](const std::string& ifname, const nvqos_slow_cmd_event& e,
                                               const std::string& tenant) { on_slow_command(ifname, e, tenant); };

  for (const auto& ifname : options_.interfaces)
    if (auto s = check_link_fits(state_.qos, ifname); !s)
      return Error{EINVAL, "invalid config: " + s.error().message};
  for (const auto& ifname : options_.interfaces) {
    auto dp = InterfaceDatapath::create(ifname, state_, options_.datapath);
    if (!dp) {
      abandon_datapaths();
      return dp.error();
    }
    datapaths_.push_back(std::move(dp).value());
    if (auto s = datapaths_.back()->watch_slow_commands(io_); !s)
      log::warn("slow-command events unavailable", {{"interface", ifname}, {"error", s.error().message}});
    if (auto s = datapaths_.back()->watch_connects(io_); !s)
      log::warn("Connect events unavailable: NQN glob rules and Connect logs are off",
                {{"interface", ifname}, {"error", s.error().message}});
  }
  status_.kernel_features = {{"btf", host_.kernel_btf}, {"clsact", true}, {"bpffs", true}};
  status_.last_reload_timestamp_seconds = unix_seconds(std::chrono::system_clock::now());
  status_.tenants_configured = state_.tenants.size();

  auto handler = [this](const HttpRequest& req, const HttpPeer& peer) { return handle_http(req, peer); };
  auto server = HttpServer::listen_tcp(io_, options_.metrics_address, handler);
  if (!server) {
    abandon_datapaths();
    return server.error().with_context("metrics");
  }
  http_ = std::move(server).value();
  log::info("serving metrics", {{"address", http_->local_address()}});
  if (auto s = start_admin(); !s) {
    abandon_datapaths();
    return s.error().with_context("admin API");
  }
  if (options_.config_path && options_.watch_config) {
    auto watch = ConfigWatch::start(io_, *options_.config_path, [this] { (void)reload(); });
    if (watch) config_watch_ = std::move(watch).value();
    else log::warn("config file not watched; reload with SIGHUP", {{"error", watch.error().message}});
  }

  slo_ = std::make_unique<SloLoop>(io_);
  slo_->configure(policy_, state_, datapath_ptrs());
  wait_for_signal();
  take_snapshot();
  schedule_telemetry();
  return ok_status();
}

Status Agent::reload() {
  ++status_.reloads_total;
  auto policy = read_policy();
  Status applied = ok_status();
  // Overrides of tenants and classes still configured outlive the reload.
  ClassOverrides overrides = class_overrides_;
  std::vector<std::pair<ClassOverride, std::string>> ended;
  if (policy) {
    ended = overrides.prune(policy.value());
    applied = apply_policy(policy.value(), overrides);
  }
  if (!policy || !applied) {
    ++status_.reload_failures_total;
    status_.last_reload_success = false;
    last_reload_error_ = (policy ? applied : Status(policy.error())).error().message;
    log::error("config reload refused, the running policy stays", {{"error", last_reload_error_}});
    return Error{EINVAL, last_reload_error_};
  }
  for (const auto& [o, why] : ended)
    log::info("tenant class override ended by the reload",
              {{"tenant", o.tenant}, {"class", o.class_name}, {"reason", why}});
  class_overrides_ = std::move(overrides);
  schedule_override_expiry();
  policy_ = std::move(policy).value();
  status_.last_reload_success = true;
  status_.last_reload_timestamp_seconds = unix_seconds(std::chrono::system_clock::now());
  status_.tenants_configured = state_.tenants.size();
  last_reload_error_.clear();
  log::info("config reloaded", {{"tenants", std::to_string(state_.tenants.size())}});
  return ok_status();
}

Status Agent::apply_policy(const Policy& configured, const ClassOverrides& overrides) {
  const Policy effective = overrides.apply_to(configured);
  DesiredState next = compile_policy(effective, state_.tenant_ids);
  const std::string with =
      overrides.empty() ? "" : " (with the class overrides in force: " + overrides.describe() + ")";
  // QoS that cannot fit a link is refused before any interface changes.
  for (const auto& dp : datapaths_)
    if (auto s = check_link_fits(next.qos, dp->interface()); !s)
      return Error{EINVAL, "invalid config: " + s.error().message + with};
  for (auto& dp : datapaths_)
    if (auto s = dp->apply(next); !s) return Error{s.error().code, s.error().message + with};
  state_ = std::move(next);
  // The controller protects and cuts classes as tenants are placed now, overrides included.
  if (slo_) slo_->configure(effective, state_, datapath_ptrs());
  return ok_status();
}

void Agent::wait_for_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec || stopping_) return;
    if (sig == SIGHUP) {
      log::info("SIGHUP received, reloading config");
      (void)reload();
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
  override_timer_.cancel();
  signals_.cancel();
  config_watch_.reset();
  if (http_) http_->stop();
  if (admin_) admin_->stop();
  if (admin_tcp_) admin_tcp_->stop();
  slow_events_.release_waiters();
  if (slo_) slo_->stop();
  if (options_.keep_on_exit)
    for (auto& dp : datapaths_) dp->keep_on_exit();
  datapaths_.clear();
  log::info(options_.keep_on_exit ? "stopped; the data path keeps running for the next agent (--keep-on-exit)"
                                  : "stopped");
}

void Agent::abandon_datapaths() {
  for (auto& dp : datapaths_)
    if (dp->restart_info().adopted) dp->keep_on_exit();
  datapaths_.clear();
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
    dp->check_attachment();
    dp->persist_state();
    auto counters = dp->read_counters();
    if (!counters) {
      log::warn("telemetry read failed", {{"interface", dp->interface()}, {"error", counters.error().message}});
      continue;
    }
    snap->interfaces.push_back(std::move(counters).value());
  }
  snap->qos = state_.qos;
  for (const auto& [tenant, o] : class_overrides_.all()) snap->class_overrides.push_back(o);
  snap->read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  snap->resident_memory_bytes = resident_memory_bytes();
  recent_snapshots_.push_back(snap);
  while (recent_snapshots_.size() > 2 && recent_snapshots_[1]->taken <= snap->taken - kUsageWindow)
    recent_snapshots_.pop_front();
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
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

HttpResponse Agent::handle_http(const HttpRequest& req, const HttpPeer& peer) {
  std::string_view path(req.target().data(), req.target().size());
  path = path.substr(0, path.find('?'));
  if (peer.admin_tcp)
    if (auto refused = refuse_unauthorized(req)) return *refused;
  if (path.rfind("/v1/", 0) == 0) {
    if (!peer.admin_socket && !peer.admin_tcp)
      return make_response(req, http::status::forbidden,
                           "the admin API is served on the agent's unix socket (--admin-socket) or its token-protected "
                           "listener (--admin-address)\n");
    return handle_admin(req);
  }
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    auto res = make_response(req, http::status::method_not_allowed, "only GET and HEAD are served here\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  std::string_view target(req.target().data(), req.target().size());
  target = target.substr(0, target.find('?'));
  if (target == "/metrics") {
    static const Snapshot kEmpty;
    return make_response(req, http::status::ok,
                         render_metrics(snapshot_ ? *snapshot_ : kEmpty, status_) + (slo_ ? slo_->metrics_text() : ""),
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

std::vector<InterfaceDatapath*> Agent::datapath_ptrs() const {
  std::vector<InterfaceDatapath*> out;
  for (const auto& dp : datapaths_) out.push_back(dp.get());
  return out;
}

}  // namespace nvqos::agent
