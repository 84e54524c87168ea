// The admin API (docs/operations.md, "Admin API"): read endpoints for status,
// tenants, flows and slow commands, write endpoints for reload (classes and
// class overrides: admin_classes.cpp). Served on the
// 0600 unix socket, and on an optional TCP listener where every request needs
// the bearer token.
#include "admin_api.hpp"

#include <time.h>

#include <algorithm>

#include "admin_auth.hpp"
#include "agent.hpp"
#include "flows.hpp"
#include "log.hpp"
#include "version.hpp"

namespace nvqos::agent {
namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

constexpr std::size_t kDefaultFlowLimit = 1000;
constexpr std::size_t kMaxFlowLimit = 100000;
constexpr std::size_t kSlowEventsPerReply = 1000;
constexpr std::chrono::seconds kMaxSlowWait{25};  // below the HTTP session timeout

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::optional<std::uint64_t> uint_param(std::string_view target, std::string_view name, std::string& error) {
  auto text = query_param(target, name);
  if (!text) return std::nullopt;
  try {
    std::size_t used = 0;
    const unsigned long long v = std::stoull(*text, &used);
    if (used == text->size()) return v;
  } catch (const std::exception&) {
  }
  error = "query parameter " + std::string(name) + "=\"" + *text + "\" is not a non-negative integer";
  return std::nullopt;
}

}  // namespace

std::optional<std::string> query_param(std::string_view target, std::string_view name) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

void SlowEventLog::push(nlohmann::json event) {
  event["seq"] = next_seq_++;
  events_.push_back(std::move(event));
  while (events_.size() > capacity_) events_.pop_front();
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    it->second.timer->cancel();
    it->second.reply(since(it->second.after, it->second.limit));
    it = waiters_.erase(it);
  }
}

nlohmann::json SlowEventLog::since(std::uint64_t after, std::size_t limit) const {
  nlohmann::json out{{"events", nlohmann::json::array()}, {"next", after}, {"missed", 0}};
  const std::uint64_t oldest = events_.empty() ? next_seq_ : events_.front()["seq"].get<std::uint64_t>();
  if (after + 1 < oldest && after < next_seq_ - 1) out["missed"] = oldest - after - 1;
  for (const auto& e : events_) {
    const auto seq = e["seq"].get<std::uint64_t>();
    if (seq <= after) continue;
    if (out["events"].size() >= limit) break;
    out["events"].push_back(e);
    out["next"] = seq;
  }
  if (after > last()) out["next"] = last();  // a reader from before an agent restart starts over
  return out;
}

void SlowEventLog::wait(std::uint64_t after, std::size_t limit, std::chrono::milliseconds wait, Reply reply) {
  if (last() > after || wait.count() <= 0) {
    reply(since(after, limit));
    return;
  }
  const std::uint64_t id = next_waiter_++;
  auto timer = std::make_shared<asio::steady_timer>(io_, wait);
  waiters_.emplace(id, Waiter{after, limit, std::move(reply), timer});
  timer->async_wait([this, id](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: already answered
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return;
    it->second.reply(since(it->second.after, it->second.limit));
    waiters_.erase(it);
  });
}

void SlowEventLog::release_waiters() {
  for (auto& [id, w] : waiters_) {
    w.timer->cancel();
    w.reply(since(w.after, w.limit));
  }
  waiters_.clear();
}

Status Agent::load_admin_token() {
  if (options_.admin_address.empty()) return ok_status();
  if (options_.admin_token_file.empty())
    return Error{EINVAL, "--admin-address needs --admin-token-file (the bearer token every request must carry)"};
  auto token = read_token_file(options_.admin_token_file);
  if (!token) return token.error();
  admin_token_ = std::move(token).value();
  return ok_status();
}

Status Agent::start_admin() {
  auto handler = [this](const HttpRequest& req, const HttpPeer& peer) { return handle_http(req, peer); };
  auto deferred = [this](const HttpRequest& req, const HttpPeer& peer, HttpReply reply) {
    return handle_deferred(req, peer, std::move(reply));
  };
  if (!options_.admin_socket.empty()) {
    auto admin = HttpServer::listen_unix(io_, options_.admin_socket, handler);
    if (!admin) return admin.error();
    admin_ = std::move(admin).value();
    // The socket is created 0600; if it, or its directory, is not private
    // (another user could connect or swap it), refuse to serve at all.
    if (std::string why = unsafe_socket_reason(options_.admin_socket); !why.empty())
      return Error{EACCES, "refusing to serve the admin API: " + why};
    const std::string path = options_.admin_socket;
    admin_->set_guard([path] { return unsafe_socket_reason(path); });
    admin_->set_deferred_handler(deferred);
    log::info("serving admin API", {{"socket", options_.admin_socket}, {"mode", "0600"}});
  }
  if (!options_.admin_address.empty()) {
    auto tcp = HttpServer::listen_tcp(io_, options_.admin_address, handler, HttpPeer{false, true});
    if (!tcp) return tcp.error();
    admin_tcp_ = std::move(tcp).value();
    admin_tcp_->set_deferred_handler(deferred);
    log::info("serving admin API with bearer token", {{"address", admin_tcp_->local_address()},
                                                      {"token_file", options_.admin_token_file}});
  }
  return ok_status();
}

std::optional<HttpResponse> Agent::refuse_unauthorized(const HttpRequest& req) const {
  static LogRateLimiter log_limit(5);
  const auto header = req[http::field::authorization];
  const std::string_view presented = bearer_token(std::string_view(header.data(), header.size()));
  if (!presented.empty() && token_matches(admin_token_, presented)) return std::nullopt;
  const char* why = presented.empty() ? "missing bearer token" : "wrong bearer token";
  if (log_limit.allow(std::chrono::steady_clock::now()))
    log::warn("admin API request refused", {{"reason", why}, {"target", std::string(req.target())}});
  auto res = make_response(req, http::status::unauthorized,
                           nlohmann::json{{"error", std::string(why) + ": send Authorization: Bearer <token from "
                                                                       "the agent's --admin-token-file>"}}
                                   .dump() +
                               "\n",
                           "application/json");
  res.set(http::field::www_authenticate, "Bearer realm=\"nvqos-agent\"");
  return res;
}

bool Agent::handle_deferred(const HttpRequest& req, const HttpPeer& peer, HttpReply reply) {
  std::string_view target(req.target().data(), req.target().size());
  if (target.substr(0, target.find('?')) != "/v1/slow" || req.method() != http::verb::get) return false;
  if (peer.admin_tcp && refuse_unauthorized(req)) return false;  // answered by handle_http
  std::string error;
  const auto after = uint_param(target, "after", error);
  const auto wait_s = uint_param(target, "wait", error);
  const auto limit = uint_param(target, "limit", error);
  if (!error.empty()) {
    reply(make_response(req, http::status::bad_request, nlohmann::json{{"error", error}}.dump() + "\n",
                        "application/json"));
    return true;
  }
  // Without `after`, a reader gets what is kept and then follows from there.
  const std::uint64_t from = after.value_or(0);
  const auto wait = std::min<std::chrono::milliseconds>(std::chrono::seconds(wait_s.value_or(0)), kMaxSlowWait);
  const HttpRequest copy = req;
  slow_events_.wait(from, std::min<std::size_t>(limit.value_or(kSlowEventsPerReply), kSlowEventsPerReply), wait,
                    [copy, reply](nlohmann::json body) {
                      reply(make_response(copy, http::status::ok, body.dump() + "\n", "application/json"));
                    });
  return true;
}

void Agent::on_slow_command(const std::string& ifname, const nvqos_slow_cmd_event& e, const std::string& tenant) {
  slow_events_.push({{"time", unix_now()},
                     {"interface", ifname},
                     {"tenant", tenant},
                     {"op", cmd_op_name(e.op)},
                     {"role", cmd_role_name(e.role)},
                     {"cid", e.cid},
                     {"opcode", e.opcode},
                     {"status", e.status},
                     {"latency_seconds", double(e.latency_ns) / 1e9},
                     {"bytes", e.bytes},
                     {"local", format_endpoint(e.flow.local_addr, e.flow.local_port)},
                     {"remote", format_endpoint(e.flow.remote_addr, e.flow.remote_port)}});
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
  j["admin"] = {{"socket", options_.admin_socket}, {"tcp", admin_tcp_ ? admin_tcp_->local_address() : ""}};
  j["interfaces"] = nlohmann::json::array();
  for (const auto& dp : datapaths_) {
    const RestartInfo& r = dp->restart_info();
    nlohmann::json ifc{{"name", dp->interface()},
                       {"present", r.present},
                       {"attached", nlohmann::json::array()},
                       {"programs", nlohmann::json::array()},
                       {"maps", nlohmann::json::array()},
                       {"restart",
                        {{"pin_dir", dp->pin_dir()},
                         {"adopted", r.adopted},
                         {"adoptions", r.adoptions},
                         {"reattachments", r.reattachments},
                         {"maps", nlohmann::json::object()}}}};
    for (const auto& a : dp->attachments())
      ifc["attached"].push_back({{"hook", a.hook}, {"mode", a.mode}, {"exclusive", a.exclusive}});
    for (const auto& p : dp->programs()) ifc["programs"].push_back({{"name", p.name}, {"id", p.id}, {"hook", p.hook}});
    auto qos = dp->qos_status();
    ifc["qos"] = {{"egress", qos.egress_mechanisms}, {"ingress", qos.ingress_mechanisms},
                  {"unenforced", nlohmann::json::array()}};
    for (const auto& u : qos.unenforced)
      ifc["qos"]["unenforced"].push_back({{"class", u.class_name}, {"limit", u.limit}, {"reason", u.reason}});
    for (const auto& m : dp->map_fill()) {
      nlohmann::json map{{"name", m.name}, {"type", m.type}, {"capacity", m.capacity}};
      if (m.entries) {
        map["entries"] = *m.entries;
        map["fill_ratio"] = m.capacity ? double(*m.entries) / m.capacity : 0.0;
      }
      ifc["maps"].push_back(map);
    }
    for (const auto& m : r.maps) {
      nlohmann::json outcome{{"action", to_string(m.action)}};
      if (!m.reason.empty()) outcome["reason"] = m.reason;
      if (m.action == MapAction::migrate) outcome["entries_copied"] = m.migrated_entries;
      ifc["restart"]["maps"][m.map] = outcome;
    }
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
                     {"class", slot.class_name},
                     {"configured_class", policy_.class_of(slot.name)},
                     {"class_override", nullptr},
                     {"match", nlohmann::json::array()}};
    if (const auto* o = class_overrides_.find(slot.name)) t["class_override"] = override_json(*o);
    for (const auto& spec : policy_.tenants)
      if (spec.name == slot.name)
        for (const auto& rule : spec.match) {
          nlohmann::json r;
          if (rule.remote) r["remote"] = rule.remote->text;
          if (rule.port) r["port"] = rule.port;
          t["match"].push_back(r);
        }
    if (snapshot_)
      for (const auto& ifc : snapshot_->interfaces) {
        for (const auto& c : ifc.tenants)
          if (c.id == slot.id) {
            const auto& s = c.stats;
            t["interfaces"][ifc.interface] = {
                {"ingress_bytes", s.bytes[NVQOS_DIR_INGRESS]},     {"egress_bytes", s.bytes[NVQOS_DIR_EGRESS]},
                {"ingress_packets", s.packets[NVQOS_DIR_INGRESS]}, {"egress_packets", s.packets[NVQOS_DIR_EGRESS]},
                {"flows_opened", s.flows_opened},                  {"flows_closed", s.flows_closed},
                {"dropped_packets", s.dropped_packets},            {"throttled_packets", s.throttled_packets},
                {"commands", nlohmann::json::array()}};
          }
        // NVMe commands by op and role, for `nvqosctl top`: counters (rates
        // come from two readings) and the quantiles of the latency window.
        for (const auto& c : ifc.commands) {
          if (c.key.tenant_id != slot.id || !t.contains("interfaces") || !t["interfaces"].contains(ifc.interface))
            continue;
          nlohmann::json cmd{{"op", cmd_op_name(c.key.op)},
                             {"role", cmd_role_name(c.key.role)},
                             {"completed", c.stats.completed},
                             {"bytes", c.stats.bytes},
                             {"in_flight", c.in_flight()},
                             {"window_commands", c.window_count},
                             {"latency_seconds", nlohmann::json::object()}};
          for (const auto& [q, seconds] : c.window_quantiles) {
            std::string name = std::to_string(q);
            name.erase(name.find_last_not_of('0') + 1);
            cmd["latency_seconds"][name] = seconds;
          }
          t["interfaces"][ifc.interface]["commands"].push_back(cmd);
        }
      }
    out.push_back(t);
  }
  return {{"snapshot_timestamp_seconds",
           snapshot_ ? std::chrono::duration<double>(snapshot_->taken.time_since_epoch()).count() : 0.0},
          {"latency_window_seconds", options_.datapath.latency_window.count()},
          {"tenants", out}};
}

nlohmann::json Agent::flows_json(const HttpRequest& req) {
  std::string_view target(req.target().data(), req.target().size());
  std::vector<FlowRow> rows;
  for (const auto& dp : datapaths_) {
    auto more = dp->flows();
    rows.insert(rows.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  // Rates over all flows (the tracker forgets flows it does not see), filters after.
  flow_rates_.update(FlowRateTracker::Clock::now(), rows);
  const auto tenant = query_param(target, "tenant");
  const auto interface = query_param(target, "interface");
  std::erase_if(rows, [&](const FlowRow& r) {
    return (tenant && r.tenant != *tenant) || (interface && r.interface != *interface);
  });
  std::sort(rows.begin(), rows.end(), [](const FlowRow& a, const FlowRow& b) {
    return a.rate_bytes_per_second[0] + a.rate_bytes_per_second[1] > b.rate_bytes_per_second[0] + b.rate_bytes_per_second[1];
  });
  std::string error;
  std::size_t limit = std::min<std::size_t>(uint_param(target, "limit", error).value_or(kDefaultFlowLimit), kMaxFlowLimit);
  nlohmann::json out{{"total", rows.size()}, {"flows", nlohmann::json::array()}};
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i) out["flows"].push_back(flow_to_json(rows[i]));
  out["shown"] = out["flows"].size();
  return out;
}

HttpResponse Agent::handle_admin(const HttpRequest& req) {
  std::string_view path(req.target().data(), req.target().size());
  path = path.substr(0, path.find('?'));
  auto json_response = [&](http::status st, const nlohmann::json& j) {
    // Replace, not throw on, bytes that are not UTF-8: an unknown path is echoed back
    // (found by nvqos_admin_api_fuzz).
    return make_response(req, st, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                         "application/json");
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
  if (path == "/v1/classes") {
    if (req.method() != http::verb::get) return wrong_method("GET");
    return json_response(http::status::ok, classes_json());
  }
  if (constexpr std::string_view prefix = "/v1/tenants/", suffix = "/class";
      path.size() > prefix.size() + suffix.size() && path.starts_with(prefix) && path.ends_with(suffix)) {
    const std::string_view tenant = path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
    if (tenant.find('/') == std::string_view::npos) return handle_class_override(req, std::string(tenant));
  }
  if (path == "/v1/flows") {
    if (req.method() != http::verb::get) return wrong_method("GET");
    return json_response(http::status::ok, flows_json(req));
  }
  if (path == "/v1/slow") return wrong_method("GET");  // GET is answered by handle_deferred
  if (path == "/v1/slo") {
    if (req.method() != http::verb::get) return wrong_method("GET");
    return json_response(http::status::ok, slo_ ? slo_->state_json() : nlohmann::json{{"mode", "off"}});
  }
  if (path == "/v1/reload") {
    if (req.method() != http::verb::post) return wrong_method("POST");
    if (auto s = reload(); !s)
      return json_response(http::status::unprocessable_entity, {{"reloaded", false}, {"error", s.error().message}});
    return json_response(http::status::ok, {{"reloaded", true}, {"tenants", state_.tenants.size()}});
  }
  return json_response(http::status::not_found,
                       {{"error", "unknown endpoint " + std::string(path)},
                        {"endpoints", {"GET /v1/status", "GET /v1/tenants", "GET /v1/classes", "GET /v1/flows",
                                       "GET /v1/slow", "GET /v1/slo", "POST /v1/reload",
                                       "GET|PUT|DELETE /v1/tenants/NAME/class"}}});
}

}  // namespace nvqos::agent
