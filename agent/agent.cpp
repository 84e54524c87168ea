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
    if (auto s = datapaths_.back()->watch_slow_commands(io_); !s)
      log::warn("slow-command events unavailable", {{"interface", ifname}, {"error", s.error().message}});
  }
  status_.kernel_features = {{"btf", host_.kernel_btf}, {"clsact", true}, {"bpffs", true}};
  status_.last_reload_timestamp_seconds = unix_seconds(std::chrono::system_clock::now());
  status_.tenants_configured = state_.tenants.size();

  auto handler = [this](const HttpRequest& req, const HttpPeer& peer) { return handle_http(req, peer); };
  auto server = HttpServer::listen_tcp(io_, options_.metrics_address, handler);
  if (!server) {
    datapaths_.clear();
    return server.error().with_context("metrics");
  }
  http_ = std::move(server).value();
  log::info("serving metrics", {{"address", http_->local_address()}});
  if (!options_.admin_socket.empty()) {
    auto admin = HttpServer::listen_unix(io_, options_.admin_socket, handler);
    if (!admin) {
      datapaths_.clear();
      return admin.error().with_context("admin API");
    }
    admin_ = std::move(admin).value();
    log::info("serving admin API", {{"socket", options_.admin_socket}, {"mode", "0600"}});
  }
  if (options_.config_path && options_.watch_config) {
    auto watch = ConfigWatch::start(io_, *options_.config_path, [this] { (void)reload(); });
    if (watch) config_watch_ = std::move(watch).value();
    else log::warn("config file not watched; reload with SIGHUP", {{"error", watch.error().message}});
  }

  wait_for_signal();
  take_snapshot();
  schedule_telemetry();
  return ok_status();
}

Status Agent::reload() {
  ++status_.reloads_total;
  auto policy = read_policy();
  if (!policy) {
    ++status_.reload_failures_total;
    status_.last_reload_success = false;
    last_reload_error_ = policy.error().message;
    log::error("config reload refused, the running policy stays", {{"error", last_reload_error_}});
    return policy.error();
  }
  DesiredState next = compile_policy(policy.value(), state_.tenant_ids);
  for (auto& dp : datapaths_) {
    if (auto s = dp->apply(next); !s) {
      ++status_.reload_failures_total;
      status_.last_reload_success = false;
      last_reload_error_ = s.error().message;
      log::error("config reload failed while applying", {{"interface", dp->interface()}, {"error", last_reload_error_}});
      return s.error();
    }
  }
  policy_ = std::move(policy).value();
  state_ = std::move(next);
  status_.last_reload_success = true;
  status_.last_reload_timestamp_seconds = unix_seconds(std::chrono::system_clock::now());
  status_.tenants_configured = state_.tenants.size();
  last_reload_error_.clear();
  log::info("config reloaded", {{"tenants", std::to_string(state_.tenants.size())}});
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
  signals_.cancel();
  config_watch_.reset();
  if (http_) http_->stop();
  if (admin_) admin_->stop();
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

HttpResponse Agent::handle_http(const HttpRequest& req, const HttpPeer& peer) {
  std::string_view path(req.target().data(), req.target().size());
  path = path.substr(0, path.find('?'));
  if (path.rfind("/v1/", 0) == 0) {
    if (!peer.admin_socket)
      return make_response(req, http::status::forbidden,
                           "the admin API is served on the agent's unix socket (--admin-socket)\n");
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

nlohmann::json Agent::status_json() const {
  nlohmann::json j;
  j["version"] = kVersion;
  j["kernel"] = host_.kernel_release;
  for (const auto& f : status_.kernel_features) j["kernel_features"][f.name] = f.available;
  j["config"] = {{"source", status_.config_source},
                 {"version", policy_.version},
                 {"last_reload_success", status_.last_reload_success},
                 {"last_reload_timestamp_seconds", status_.last_reload_timestamp_seconds},
                 {"reloads_total", status_.reloads_total},
                 {"reload_failures_total", status_.reload_failures_total}};
  if (!last_reload_error_.empty()) j["config"]["last_reload_error"] = last_reload_error_;
  j["tenants"] = state_.tenants.size();
  j["interfaces"] = nlohmann::json::array();
  for (const auto& dp : datapaths_) {
    nlohmann::json ifc{{"name", dp->interface()}, {"attached", nlohmann::json::array()}};
    for (const auto& a : dp->attachments())
      ifc["attached"].push_back({{"hook", a.hook}, {"mode", a.mode}, {"exclusive", a.exclusive}});
    if (snapshot_)
      for (const auto& c : snapshot_->interfaces)
        if (c.interface == dp->interface()) {
          ifc["flow_table_capacity"] = c.flow_capacity;
          ifc["packets_total"] = c.datapath.packets_seen;
          ifc["nvme_packets_total"] = c.datapath.packets_nvme;
          ifc["parse_errors_total"] = c.datapath.parse_errors;
        }
    j["interfaces"].push_back(ifc);
  }
  return j;
}

nlohmann::json Agent::tenants_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& slot : state_.tenants) {
    nlohmann::json t{{"name", slot.name},
                     {"id", slot.id},
                     {"active", (slot.flags & NVQOS_TENANT_F_ACTIVE) != 0},
                     {"quarantine", (slot.flags & NVQOS_TENANT_F_DROP_INGRESS) != 0},
                     {"match", nlohmann::json::array()}};
    for (const auto& spec : policy_.tenants)
      if (spec.name == slot.name)
        for (const auto& rule : spec.match) {
          nlohmann::json r;
          if (rule.remote) r["remote"] = rule.remote->text;
          if (rule.port) r["port"] = rule.port;
          t["match"].push_back(r);
        }
    if (snapshot_)
      for (const auto& ifc : snapshot_->interfaces)
        for (const auto& c : ifc.tenants)
          if (c.id == slot.id) {
            const auto& s = c.stats;
            t["interfaces"][ifc.interface] = {
                {"ingress_bytes", s.bytes[NVQOS_DIR_INGRESS]},     {"egress_bytes", s.bytes[NVQOS_DIR_EGRESS]},
                {"ingress_packets", s.packets[NVQOS_DIR_INGRESS]}, {"egress_packets", s.packets[NVQOS_DIR_EGRESS]},
                {"flows_opened", s.flows_opened},                  {"flows_closed", s.flows_closed},
                {"dropped_packets", s.dropped_packets}};
          }
    out.push_back(t);
  }
  return {{"snapshot_timestamp_seconds", snapshot_ ? unix_seconds(snapshot_->taken) : 0.0}, {"tenants", out}};
}

HttpResponse Agent::handle_admin(const HttpRequest& req) {
  std::string_view path(req.target().data(), req.target().size());
  path = path.substr(0, path.find('?'));
  auto json_response = [&](http::status st, const nlohmann::json& j) {
    return make_response(req, st, j.dump(2) + "\n", "application/json");
  };
  auto wrong_method = [&](const char* allowed) {
    auto res = json_response(http::status::method_not_allowed,
                             {{"error", std::string("method not allowed; use ") + allowed}});
    res.set(http::field::allow, allowed);
    return res;
  };
  if (path == "/v1/status") {
    if (req.method() != http::verb::get) return wrong_method("GET");
    return json_response(http::status::ok, status_json());
  }
  if (path == "/v1/tenants") {
    if (req.method() != http::verb::get) return wrong_method("GET");
    return json_response(http::status::ok, tenants_json());
  }
  if (path == "/v1/reload") {
    if (req.method() != http::verb::post) return wrong_method("POST");
    if (auto s = reload(); !s)
      return json_response(http::status::unprocessable_entity, {{"reloaded", false}, {"error", s.error().message}});
    return json_response(http::status::ok, {{"reloaded", true}, {"tenants", state_.tenants.size()}});
  }
  return json_response(http::status::not_found,
                       {{"error", "unknown endpoint " + std::string(path)},
                        {"endpoints", {"GET /v1/status", "GET /v1/tenants", "POST /v1/reload"}}});
}

}  // namespace nvqos::agent
