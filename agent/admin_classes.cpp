// GET /v1/classes and the temporary class overrides of tenants
// (GET/PUT/DELETE /v1/tenants/<name>/class): docs/operations.md, "Admin API".
#include "admin_classes.hpp"

#include <algorithm>
#include <cstdio>

#include "agent.hpp"
#include "log.hpp"

namespace nvqos::agent {
namespace http = boost::beast::http;
using nlohmann::json;

namespace {

double unix_time(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

std::string classid_text(std::uint32_t classid) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%x:%x", classid >> 16, classid & 0xffff);
  return buf;
}

json rate_or_null(std::uint64_t v) { return v ? json(v) : json(nullptr); }

// Configured limits only: an op without a ceiling is absent.
json by_op(std::uint64_t any, std::uint64_t read, std::uint64_t write) {
  json j = json::object();
  if (any) j["any"] = any;
  if (read) j["read"] = read;
  if (write) j["write"] = write;
  return j;
}

json ratio_or_null(double used, std::uint64_t limit) { return limit ? json(used / double(limit)) : json(nullptr); }

}  // namespace

std::map<std::pair<std::string, std::string>, ClassUsage> class_usage(const Snapshot& prev, const Snapshot& cur) {
  std::map<std::pair<std::string, std::string>, ClassUsage> out;
  const double dt = std::chrono::duration<double>(cur.taken - prev.taken).count();
  if (dt <= 0) return out;
  auto delta = [](std::uint64_t now, std::uint64_t before) { return now > before ? double(now - before) : 0.0; };
  for (const auto& ifc : cur.interfaces) {
    auto was = std::find_if(prev.interfaces.begin(), prev.interfaces.end(),
                            [&](const InterfaceCounters& p) { return p.interface == ifc.interface; });
    if (was == prev.interfaces.end()) continue;
    std::map<std::uint32_t, const TenantCounters*> before;
    for (const auto& t : was->tenants) before[t.id] = &t;
    std::map<std::uint32_t, std::string> class_of;
    for (const auto& t : ifc.tenants) {
      if (t.class_name.empty()) continue;
      class_of[t.id] = t.class_name;
      auto& u = out[{ifc.interface, t.class_name}];
      auto b = before.find(t.id);
      // A slot that changed hands between the readings has no rate yet.
      if (b == before.end() || b->second->name != t.name) continue;
      const double egress = delta(t.stats.bytes[NVQOS_DIR_EGRESS], b->second->stats.bytes[NVQOS_DIR_EGRESS]) * 8 / dt;
      u.egress_bits_per_second += egress;
      u.ingress_bits_per_second +=
          delta(t.stats.bytes[NVQOS_DIR_INGRESS], b->second->stats.bytes[NVQOS_DIR_INGRESS]) * 8 / dt;
      if (u.busiest_tenant.empty() || egress > u.busiest_tenant_egress_bits_per_second) {
        u.busiest_tenant = t.name;
        u.busiest_tenant_egress_bits_per_second = egress;
      }
    }
    std::map<CommandKey, std::uint64_t> completed_before;
    for (const auto& c : was->commands) completed_before[c.key] = c.stats.completed;
    for (const auto& c : ifc.commands) {
      auto cls = class_of.find(c.key.tenant_id);
      auto b = completed_before.find(c.key);
      if (cls == class_of.end() || b == completed_before.end()) continue;
      const double iops = delta(c.stats.completed, b->second) / dt;
      auto& u = out[{ifc.interface, cls->second}];
      u.iops += iops;
      if (c.key.op == NVQOS_CMD_OP_READ) u.read_iops += iops;
      if (c.key.op == NVQOS_CMD_OP_WRITE) u.write_iops += iops;
    }
  }
  for (auto& [key, u] : out) u.interval_seconds = dt;
  return out;
}

void class_override_families(std::vector<prometheus::MetricFamily>& out, const Snapshot& s) {
  // By index: the second family may reallocate `out`.
  auto family = [&](const char* name, const char* help) {
    auto& f = out.emplace_back();
    f.name = name;
    f.help = help;
    f.type = prometheus::MetricType::Gauge;
    return out.size() - 1;
  };
  auto add = [&](std::size_t family, std::vector<prometheus::ClientMetric::Label> labels, double v) {
    prometheus::ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = v;
    out[family].metric.push_back(std::move(m));
  };
  const auto info = family("nvqos_tenant_class_override_info",
                           "1 per tenant whose QoS class is temporarily overridden (PUT /v1/tenants/<name>/class): "
                           "the class in force and the configured one (\"\" none).");
  const auto expiry = family("nvqos_tenant_class_override_expiry_timestamp_seconds",
                             "When the tenant's class override ends, since the Unix epoch; absent for an override "
                             "without a TTL.");
  for (const auto& o : s.class_overrides) {
    add(info, {{"tenant", o.tenant}, {"class", o.class_name}, {"configured_class", o.configured_class}}, 1);
    if (o.expires_at) add(expiry, {{"tenant", o.tenant}}, unix_time(*o.expires_at));
  }
}

json Agent::override_json(const ClassOverride& o) const {
  json j{{"tenant", o.tenant},
         {"class", o.class_name},
         {"configured_class", o.configured_class},
         {"set_at_seconds", unix_time(o.set_at)},
         {"expires_at_seconds", nullptr},
         {"remaining_seconds", nullptr}};
  if (o.expires_at && o.deadline) {
    j["expires_at_seconds"] = unix_time(*o.expires_at);
    j["remaining_seconds"] =
        std::max(0.0, std::chrono::duration<double>(*o.deadline - std::chrono::steady_clock::now()).count());
  }
  return j;
}

json Agent::classes_json() const {
  std::map<std::pair<std::string, std::string>, ClassUsage> usage;
  if (snapshot_ && !recent_snapshots_.empty()) usage = class_usage(*recent_snapshots_.front(), *snapshot_);
  const QosState& q = state_.qos;
  json classes = json::array();
  for (const auto& c : q.classes) {
    json j{{"name", c.name},
           {"priority", c.priority},
           {"scope", to_string(c.scope)},
           {"dscp", c.dscp ? json(*c.dscp) : json(nullptr)},
           {"configured",
            {{"guaranteed_bits_per_second", rate_or_null(c.guaranteed_bps)},
             {"ceiling_bits_per_second", by_op(c.ceiling_bps, c.read_ceiling_bps, c.write_ceiling_bps)},
             {"ceiling_iops", by_op(c.ceiling_iops, c.read_ceiling_iops, c.write_ceiling_iops)},
             {"ingress_ceiling_bits_per_second", rate_or_null(c.ingress_ceiling_bps)},
             {"burst_bytes", rate_or_null(c.burst_bytes)},
             {"burst_ios", rate_or_null(c.burst_ios)}}},
           {"tenants", json::array()},
           {"overridden_tenants", json::array()},
           {"interfaces", json::object()}};
    for (const auto& [tenant, cls] : q.tenant_class)
      if (cls == c.name) j["tenants"].push_back(tenant);
    for (const auto& [tenant, o] : class_overrides_.all())
      if (o.class_name == c.name) j["overridden_tenants"].push_back(tenant);
    for (const auto& dp : datapaths_) {
      const QosCounters qs = dp->qos_status();
      const bool htb = std::find(qs.egress_mechanisms.begin(), qs.egress_mechanisms.end(), "htb") !=
                       qs.egress_mechanisms.end();
      json ifc{{"mechanisms", {{"egress", qs.egress_mechanisms}, {"ingress", qs.ingress_mechanisms}}},
               {"htb", json::array()},
               {"unenforced", json::array()},
               {"usage", nullptr},
               // What the data path enforces now. The configured ceilings
               // until something adapts them (the SLO controller sets
               // "source" and its own figures here).
               {"effective",
                {{"source", "configured"},
                 {"ceiling_bits_per_second", rate_or_null(c.ceiling_bps)},
                 {"ceiling_iops", rate_or_null(c.ceiling_iops)}}}};
      const std::vector<HtbClassStats>* stats = nullptr;
      if (snapshot_)
        for (const auto& s : snapshot_->interfaces)
          if (s.interface == dp->interface()) stats = &s.qos.classes;
      auto htb_json = [&](std::uint32_t classid) {
        json h{{"classid", classid_text(classid)}};
        if (stats)
          for (const auto& s : *stats)
            if (s.classid == classid) {
              h["sent_bytes"] = s.bytes;
              h["sent_packets"] = s.packets;
              h["overlimits"] = s.overlimits;
            }
        return h;
      };
      if (htb)
        for (const auto& u : q.units) {
          if (u.class_name != c.name) continue;
          json unit = htb_json(htb_classid(u.minor));
          unit["unit"] = u.name;
          if (u.split_roles)
            unit["leaves"] = {{"initiator", htb_json(u.classid_for(NVQOS_ROLE_INITIATOR))},
                              {"target", htb_json(u.classid_for(NVQOS_ROLE_TARGET))}};
          ifc["htb"].push_back(unit);
        }
      for (const auto& l : qs.unenforced)
        if (l.class_name == c.name) ifc["unenforced"].push_back({{"limit", l.limit}, {"reason", l.reason}});
      if (auto it = usage.find({dp->interface(), c.name}); it != usage.end()) {
        const ClassUsage& u = it->second;
        // Per-tenant limits bind each tenant: compare the busiest one.
        const bool aggregate = c.scope == ClassScope::aggregate;
        const double bound = aggregate ? u.egress_bits_per_second : u.busiest_tenant_egress_bits_per_second;
        ifc["usage"] = {{"interval_seconds", u.interval_seconds},
                        {"egress_bits_per_second", u.egress_bits_per_second},
                        {"ingress_bits_per_second", u.ingress_bits_per_second},
                        {"iops", {{"any", u.iops}, {"read", u.read_iops}, {"write", u.write_iops}}},
                        {"compared", aggregate ? "class" : "busiest_tenant"},
                        {"busiest_tenant", u.busiest_tenant.empty() ? json(nullptr) : json(u.busiest_tenant)},
                        {"of_guarantee", ratio_or_null(bound, c.guaranteed_bps)},
                        {"of_ceiling", ratio_or_null(bound, c.ceiling_bps)}};
      }
      j["interfaces"][dp->interface()] = ifc;
    }
    classes.push_back(j);
  }
  return {{"snapshot_timestamp_seconds", snapshot_ ? unix_time(snapshot_->taken) : 0.0}, {"classes", classes}};
}

HttpResponse Agent::handle_class_override(const HttpRequest& req, const std::string& tenant) {
  auto reply = [&](http::status st, const json& j) {
    return make_response(req, st, j.dump(2, ' ', false, json::error_handler_t::replace) + "\n", "application/json");
  };
  auto error = [&](http::status st, const std::string& why) { return reply(st, {{"error", why}}); };
  const auto method = req.method();
  if (method != http::verb::get && method != http::verb::put && method != http::verb::delete_) {
    auto res = error(http::status::method_not_allowed, "method not allowed; use GET, PUT or DELETE");
    res.set(http::field::allow, "GET, PUT, DELETE");
    return res;
  }
  if (!ClassOverrides::has_tenant(policy_, tenant))
    return error(http::status::not_found, "unknown tenant \"" + tenant + "\"");
  const ClassOverride* current = class_overrides_.find(tenant);
  auto state_json = [&] {
    auto cls = state_.qos.tenant_class.find(tenant);
    return json{{"tenant", tenant},
                {"class", cls == state_.qos.tenant_class.end() ? "" : cls->second},
                {"configured_class", policy_.class_of(tenant)},
                {"override", current ? override_json(*current) : json(nullptr)}};
  };
  if (method == http::verb::get) return reply(http::status::ok, state_json());

  ClassOverrides next = class_overrides_;
  std::optional<ClassOverride> ended;
  if (method == http::verb::put) {
    const json body = json::parse(req.body(), nullptr, false);
    const char* shape = "the body must be a JSON object {\"class\": NAME, \"ttl_s\": SECONDS (optional)}";
    if (body.is_discarded() || !body.is_object()) return error(http::status::bad_request, shape);
    for (const auto& [key, v] : body.items())
      if (key != "class" && key != "ttl_s")
        return error(http::status::bad_request, "unknown key \"" + key + "\": " + shape);
    if (!body.contains("class") || !body["class"].is_string())
      return error(http::status::bad_request, "\"class\" is required: the name of a configured class");
    std::optional<std::chrono::seconds> ttl;
    if (body.contains("ttl_s") && !body["ttl_s"].is_null()) {
      if (!body["ttl_s"].is_number_integer())
        return error(http::status::bad_request, "\"ttl_s\" must be a whole number of seconds");
      ttl = std::chrono::seconds(body["ttl_s"].get<std::int64_t>());
    }
    const std::string cls = body["class"].get<std::string>();
    if (auto s = ClassOverrides::check(policy_, tenant, cls, ttl); !s)
      return error(s.error().code == ENOENT ? http::status::not_found : http::status::unprocessable_entity,
                   s.error().message);
    next.set(ClassOverrides::make(policy_, tenant, cls, ttl, std::chrono::system_clock::now(),
                                  std::chrono::steady_clock::now()));
  } else {
    ended = next.clear(tenant);
    if (!ended) return error(http::status::not_found, "tenant \"" + tenant + "\" has no class override");
  }
  if (auto s = apply_policy(policy_, next); !s) {
    log::warn("tenant class override refused", {{"tenant", tenant}, {"error", s.error().message}});
    return error(http::status::conflict, s.error().message);
  }
  class_overrides_ = std::move(next);
  schedule_override_expiry();
  current = class_overrides_.find(tenant);
  if (current)
    log::info("tenant class override set",
              {{"tenant", tenant}, {"class", current->class_name}, {"configured_class", current->configured_class},
               {"ttl_s", current->deadline ? std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                               *current->expires_at - current->set_at)
                                                               .count())
                                           : "none"}});
  else
    log::info("tenant class override cleared",
              {{"tenant", tenant}, {"class", ended->class_name}, {"configured_class", ended->configured_class}});
  return reply(http::status::ok, state_json());
}

void Agent::schedule_override_expiry() {
  override_timer_.cancel();
  const auto next = class_overrides_.next_deadline();
  if (!next || stopping_) return;
  override_timer_.expires_at(*next);
  override_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    expire_overrides();
  });
}

void Agent::expire_overrides() {
  ClassOverrides next = class_overrides_;
  const auto expired = next.take_expired(std::chrono::steady_clock::now());
  if (!expired.empty()) {
    if (auto s = apply_policy(policy_, next); !s) {
      log::error("could not return tenants to their configured class; retrying in 1 s",
                 {{"error", s.error().message}});
      override_timer_.expires_after(std::chrono::seconds(1));
      override_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec && !stopping_) expire_overrides();
      });
      return;
    }
    class_overrides_ = std::move(next);
    for (const auto& o : expired)
      log::info("tenant class override expired",
                {{"tenant", o.tenant}, {"class", o.class_name}, {"configured_class", o.configured_class}});
  }
  schedule_override_expiry();
}

}  // namespace nvqos::agent
