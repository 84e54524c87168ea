#include "slo_loop.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "log.hpp"

namespace nvqos::agent {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kEventsKept = 50;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string quantile_text(double q) {
  std::ostringstream text;
  text << q;
  return text.str();
}

std::string mbit(double bps) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", bps / 1e6);
  return buf;
}

std::uint64_t delta(std::uint64_t now, std::uint64_t before) { return now >= before ? now - before : now; }

bool same_classes(const std::vector<SloClass>& a, const std::vector<SloClass>& b) {
  auto key = [](const SloClass& c) {
    std::ostringstream s;
    s << c.name << '|' << c.priority << '|' << c.enabled << '|' << c.floor_bps << '|' << c.max_bps << '|'
      << c.floor_iops << '|' << c.max_iops;
    for (const auto& o : c.objectives) s << '|' << int(o.op) << ':' << o.quantile << ':' << o.max_latency_seconds;
    return s.str();
  };
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (key(a[i]) != key(b[i])) return false;
  return true;
}

}  // namespace

std::vector<SloClass> slo_classes(const Policy& policy, std::uint64_t capacity_bps) {
  std::vector<SloClass> out;
  const double capacity = static_cast<double>(capacity_bps);
  for (const ClassSpec& c : policy.classes) {
    SloClass s;
    s.name = c.name;
    s.priority = c.priority;
    s.enabled = c.slo.enabled;
    for (const auto& o : c.slo.objectives)
      s.objectives.push_back({o.op, o.quantile, static_cast<double>(o.max_latency_ns) / 1e9});
    s.max_bps = c.ceiling_bps ? std::min(capacity, static_cast<double>(c.ceiling_bps)) : capacity;
    s.floor_bps = std::min(s.max_bps, std::max(static_cast<double>(c.guaranteed_bps), c.slo.min_share * capacity));
    if (c.ceiling_iops) {
      s.max_iops = static_cast<double>(c.ceiling_iops);
      s.floor_iops = c.slo.min_share * s.max_iops;
    }
    out.push_back(std::move(s));
  }
  return out;
}

SloReading slo_reading(const InterfaceCounters& counters, Clock::time_point at) {
  SloReading r;
  r.at = at;
  for (const auto& t : counters.tenants) r.egress_bytes[t.name] = t.stats.bytes[NVQOS_DIR_EGRESS];
  for (const auto& c : counters.commands) {
    r.commands[c.tenant] += c.stats.completed;
    if (c.latency.empty()) continue;
    auto& h = r.latency[{c.tenant, c.key.op}];
    if (h.size() < c.latency.size()) h.resize(c.latency.size(), 0);
    for (std::size_t i = 0; i < c.latency.size(); ++i) h[i] += c.latency[i];
  }
  return r;
}

SloObservation slo_observation(const SloReading& before, const SloReading& now, const Policy& policy) {
  SloObservation obs;
  const double seconds = std::chrono::duration<double>(now.at - before.at).count();
  if (seconds <= 0) return obs;

  for (const auto& [key, counts] : now.latency) {
    const std::string cls = policy.class_of(key.first);
    if (cls.empty()) continue;
    std::vector<std::uint64_t> d(counts);
    if (auto prev = before.latency.find(key); prev != before.latency.end() && prev->second.size() == counts.size()) {
      // A bucket below its previous reading: the map was recreated, count from zero.
      bool reset = false;
      for (std::size_t i = 0; i < counts.size() && !reset; ++i) reset = counts[i] < prev->second[i];
      if (!reset)
        for (std::size_t i = 0; i < counts.size(); ++i) d[i] -= prev->second[i];
    }
    LogLinearHistogram h = kernel_latency_histogram(d);
    if (h.empty()) continue;
    auto [it, fresh] = obs.latency.try_emplace({cls, key.second}, h);
    if (!fresh) it->second.merge(h);
  }

  auto tenant_rate = [&](const std::map<std::string, std::uint64_t>& n, const std::map<std::string, std::uint64_t>& b,
                         const std::string& tenant) {
    auto it = n.find(tenant);
    if (it == n.end()) return 0.0;
    auto prev = b.find(tenant);
    return static_cast<double>(delta(it->second, prev == b.end() ? 0 : prev->second)) / seconds;
  };
  for (const auto& [tenant, bytes] : now.egress_bytes) {
    const std::string cls = policy.class_of(tenant);
    const ClassSpec* spec = cls.empty() ? nullptr : policy.find_class(cls);
    if (!spec) continue;
    const double bps = tenant_rate(now.egress_bytes, before.egress_bytes, tenant);
    const double iops = tenant_rate(now.commands, before.commands, tenant);
    auto& load = obs.load[cls];
    if (spec->scope == ClassScope::aggregate) {
      load.bytes_per_second += bps;
      load.iops += iops;
    } else {
      load.bytes_per_second = std::max(load.bytes_per_second, bps);
      load.iops = std::max(load.iops, iops);
    }
  }
  return obs;
}

DesiredState with_effective_ceilings(DesiredState state, const std::map<std::string, EffectiveCeiling>& ceilings) {
  for (ShapingUnit& u : state.qos.units) {
    auto it = ceilings.find(u.class_name);
    if (it == ceilings.end()) continue;
    const auto bps = std::max(static_cast<std::uint64_t>(it->second.bps), u.guaranteed_bps);
    u.ceiling_bps = u.ceiling_bps ? std::min(u.ceiling_bps, bps) : bps;
    for (std::uint64_t* role : {&u.read_ceiling_bps, &u.write_ceiling_bps})
      if (*role) *role = std::min(*role, bps);
  }
  std::map<std::uint32_t, const EffectiveCeiling*> limiters;
  for (const TenantSlot& t : state.tenants)
    if (t.qos.limiter_id != NVQOS_LIMITER_NONE)
      if (auto it = ceilings.find(t.class_name); it != ceilings.end()) limiters[t.qos.limiter_id] = &it->second;
  for (auto [id, c] : limiters) {
    auto l = state.qos.limiters.find(id);
    if (l == state.qos.limiters.end()) continue;
    // Only limits the class has: without a static one HTB's ceil does the work.
    for (int kind : {NVQOS_LIMIT_EGRESS_BYTES, NVQOS_LIMIT_READ_BYTES, NVQOS_LIMIT_WRITE_BYTES})
      if (auto& r = l->second.limit[kind]; r.per_sec) r.per_sec = std::min<std::uint64_t>(r.per_sec, c->bps / 8);
    if (c->iops > 0)
      for (int kind : {NVQOS_LIMIT_IOPS, NVQOS_LIMIT_READ_IOPS, NVQOS_LIMIT_WRITE_IOPS})
        if (auto& r = l->second.limit[kind]; r.per_sec)
          r.per_sec = std::max<std::uint64_t>(1, std::min<std::uint64_t>(r.per_sec, c->iops));
  }
  return state;
}

SloLoop::SloLoop(boost::asio::io_context& io) : timer_(io) {}
SloLoop::~SloLoop() { stop(); }

const char* SloLoop::mode() const {
  if (links_.empty()) return "off";
  return policy_.slo_controller.dry_run ? "dry_run" : "on";
}

void SloLoop::configure(const Policy& policy, const DesiredState& state, const std::vector<InterfaceDatapath*>& datapaths) {
  const bool interval_changed = policy.slo_controller.interval != policy_.slo_controller.interval;
  const bool was_dry = policy_.slo_controller.dry_run;
  policy_ = policy;
  state_ = state;
  const bool wanted = policy.slo_controller.enabled &&
                      std::any_of(policy.classes.begin(), policy.classes.end(),
                                  [](const ClassSpec& c) { return !c.slo.objectives.empty(); });
  std::map<std::string, Link> next;
  for (InterfaceDatapath* dp : wanted ? datapaths : std::vector<InterfaceDatapath*>{}) {
    const std::string& ifname = dp->interface();
    auto capacity = link_capacity_bps(state.qos, ifname);
    if (!capacity) {
      log::warn("SLO controller off on this interface: its capacity is unknown (add it under /links)",
                {{"interface", ifname}});
      continue;
    }
    Link l;
    l.datapath = dp;
    l.capacity_bps = *capacity;
    l.classes = slo_classes(policy, *capacity);
    auto old = links_.find(ifname);
    if (old != links_.end() && !interval_changed && same_classes(old->second.classes, l.classes)) {
      l.controller = std::move(old->second.controller);
      l.last = std::move(old->second.last);
    } else {
      SloTuning tuning;
      tuning.interval = policy.slo_controller.interval;
      l.controller = std::make_unique<SloController>(l.classes, tuning);
    }
    next.emplace(ifname, std::move(l));
  }
  links_ = std::move(next);
  // The agent has just applied the static ceilings: put the effective ones back.
  for (auto& [ifname, link] : links_) {
    std::map<std::string, EffectiveCeiling> ceilings;
    for (const auto& c : link.controller->classes())
      if (c.controlled && (c.bps.effective < c.bps.max || (c.iops.adapted() && c.iops.effective < c.iops.max)))
        ceilings[c.spec.name] = {c.bps.effective, c.iops.adapted() ? c.iops.effective : 0};
    if (!policy_.slo_controller.dry_run && !ceilings.empty())
      if (auto s = apply(link, ceilings); !s)
        log::error("SLO controller could not restore its effective ceilings",
                   {{"interface", ifname}, {"error", s.error().message}});
  }
  if (was_dry != policy_.slo_controller.dry_run || !links_.empty())
    log::info("SLO controller", {{"mode", mode()}, {"interval_ms", std::to_string(policy_.slo_controller.interval.count())},
                                 {"interfaces", std::to_string(links_.size())}});
  if (links_.empty()) {
    timer_.cancel();
    running_ = false;
  } else if (!running_) {
    running_ = true;
    schedule();
  }
}

void SloLoop::stop() {
  running_ = false;
  timer_.cancel();
  links_.clear();
}

void SloLoop::schedule() {
  timer_.expires_after(policy_.slo_controller.interval);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || !running_) return;
    tick();
    if (running_) schedule();
  });
}

void SloLoop::tick() {
  const auto now = Clock::now();
  for (auto& [ifname, link] : links_) step(link, now);
}

void SloLoop::step(Link& link, Clock::time_point now) {
  auto counters = link.datapath->read_counters();
  if (!counters) {
    if (log_limit_.allow(now))
      log::warn("SLO controller skipped an interval: counters unreadable",
                {{"interface", link.datapath->interface()}, {"error", counters.error().message}});
    return;
  }
  SloReading reading = slo_reading(counters.value(), now);
  if (!link.last) {
    link.last = std::move(reading);
    return;
  }
  const SloObservation obs = slo_observation(*link.last, reading, policy_);
  link.last = std::move(reading);
  const auto adjustments = link.controller->step(obs);
  log_exhaustion(link);
  if (adjustments.empty()) return;

  std::map<std::string, EffectiveCeiling> ceilings;
  for (const auto& c : link.controller->classes())
    if (c.controlled) ceilings[c.spec.name] = {c.bps.effective, c.iops.adapted() ? c.iops.effective : 0};
  bool applied = false;
  std::string error;
  if (!policy_.slo_controller.dry_run) {
    if (auto s = apply(link, ceilings); s) applied = true;
    else error = s.error().message;
  }
  for (const auto& a : adjustments) {
    log_adjustment(link.datapath->interface(), a, applied, error);
    events_.push_back({unix_now(), link.datapath->interface(), a, applied});
    while (events_.size() > kEventsKept) events_.pop_front();
  }
}

Status SloLoop::apply(Link& link, const std::map<std::string, EffectiveCeiling>& ceilings) {
  if (auto s = link.datapath->apply_rates(with_effective_ceilings(state_, ceilings)); !s) {
    ++apply_failures_;
    return s;
  }
  link.applied = ceilings;
  return ok_status();
}

void SloLoop::log_adjustment(const std::string& ifname, const SloAdjustment& a, bool applied, const std::string& error) {
  if (!log_limit_.allow(Clock::now())) return;
  const char* outcome = applied ? "applied" : policy_.slo_controller.dry_run ? "dry_run" : "failed";
  const bool down = a.to_bps < a.from_bps || a.to_iops < a.from_iops;
  auto level = error.empty() ? log::Level::info : log::Level::error;
  if (a.to_iops > 0 || a.from_iops > 0)
    log::write(level, down ? "SLO: ceiling lowered" : "SLO: ceiling raised",
               {{"interface", ifname}, {"class", a.class_name}, {"from_mbit_s", mbit(a.from_bps)},
                {"to_mbit_s", mbit(a.to_bps)}, {"from_iops", std::to_string(std::llround(a.from_iops))},
                {"to_iops", std::to_string(std::llround(a.to_iops))}, {"verdict", to_string(a.verdict)},
                {"reason", a.reason}, {"outcome", outcome}, {"error", error},
                {"suppressed", std::to_string(log_limit_.suppressed())}});
  else
    log::write(level, down ? "SLO: ceiling lowered" : "SLO: ceiling raised",
               {{"interface", ifname}, {"class", a.class_name}, {"from_mbit_s", mbit(a.from_bps)},
                {"to_mbit_s", mbit(a.to_bps)}, {"verdict", to_string(a.verdict)}, {"reason", a.reason},
                {"outcome", outcome}, {"error", error}, {"suppressed", std::to_string(log_limit_.suppressed())}});
}

// Edges only: near the floors an objective may go from missed to met and back every window; the
// rate is in nvqos_slo_windows_total{outcome="missed_at_floor"}.
void SloLoop::log_exhaustion(Link& link) {
  const auto& objectives = link.controller->objectives();
  link.exhausted.resize(objectives.size(), false);
  for (std::size_t i = 0; i < objectives.size(); ++i) {
    const auto& o = objectives[i];
    if (o.exhausted == link.exhausted[i]) continue;
    link.exhausted[i] = o.exhausted;
    if (!log_limit_.allow(Clock::now())) continue;
    log::write(o.exhausted ? log::Level::warn : log::Level::info,
               o.exhausted ? "SLO: objective missed with every lower class at its floor: nothing is left to cut, the "
                             "latency is not (only) the neighbours' (host CPU, the target, a queue beyond this link)"
                           : "SLO: objective no longer missed at the floors",
               {{"interface", link.datapath->interface()},
                {"class", o.class_name},
                {"op", cmd_op_name(o.objective.op)},
                {"quantile", quantile_text(o.objective.quantile)},
                {"latency_us", std::to_string(std::llround(o.last_latency_seconds * 1e6))},
                {"objective_us", std::to_string(std::llround(o.objective.max_latency_seconds * 1e6))},
                {"suppressed", std::to_string(log_limit_.suppressed())}});
  }
}

std::string SloLoop::metrics_text() const {
  using prometheus::ClientMetric;
  using prometheus::MetricFamily;
  using prometheus::MetricType;
  std::vector<MetricFamily> families;
  families.reserve(16);  // family() hands out references: no reallocation
  auto family = [&](const char* name, const char* help, MetricType type) -> MetricFamily& {
    auto& f = families.emplace_back();
    f.name = name;
    f.help = help;
    f.type = type;
    return f;
  };
  auto add = [](MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter) m.counter.value = value;
    else m.gauge.value = value;
    f.metric.push_back(std::move(m));
  };

  auto& info = family("nvqos_slo_controller_info",
                      "The latency-SLO controller's mode: on, dry_run (decides and reports, never applies) or off.",
                      MetricType::Gauge);
  add(info, {{"mode", mode()}}, 1);

  auto& objective = family("nvqos_slo_objective_seconds", "Latency objective of a class: the quantile's target.",
                           MetricType::Gauge);
  for (const ClassSpec& c : policy_.classes)
    for (const auto& o : c.slo.objectives)
      add(objective, {{"class", c.name}, {"op", cmd_op_name(o.op)}, {"quantile", quantile_text(o.quantile)}},
          static_cast<double>(o.max_latency_ns) / 1e9);

  // Compliance over all interfaces: judged windows that met the objective.
  struct Tally {
    std::size_t met = 0, judged = 0;
  };
  std::map<std::tuple<std::string, std::uint8_t, double>, Tally> tally;
  for (const auto& [ifname, link] : links_)
    for (const auto& o : link.controller->objectives()) {
      auto& t = tally[{o.class_name, o.objective.op, o.objective.quantile}];
      t.judged += o.recent.size();
      t.met += static_cast<std::size_t>(std::count(o.recent.begin(), o.recent.end(), true));
    }
  auto& compliance = family("nvqos_slo_compliance_ratio",
                            "Share of the controller's judged windows (over the last 5 minutes) in which the class met "
                            "the objective; absent before the first window with commands.",
                            MetricType::Gauge);
  for (const auto& [key, t] : tally)
    if (t.judged)
      add(compliance,
          {{"class", std::get<0>(key)}, {"op", cmd_op_name(std::get<1>(key))}, {"quantile", quantile_text(std::get<2>(key))}},
          static_cast<double>(t.met) / static_cast<double>(t.judged));

  auto& windows = family("nvqos_slo_windows_total",
                         "Control intervals judged against an objective, by outcome: met, missed, or missed_at_floor "
                         "(missed with every lower class already at its floor: nothing left to cut).",
                         MetricType::Counter);
  for (const auto& [ifname, link] : links_)
    for (const auto& o : link.controller->objectives()) {
      auto labels = [&, &o = o](const char* outcome) -> std::vector<ClientMetric::Label> {
        return {{"interface", ifname}, {"class", o.class_name}, {"op", cmd_op_name(o.objective.op)},
                {"quantile", quantile_text(o.objective.quantile)}, {"outcome", outcome}};
      };
      add(windows, labels("met"), double(o.windows_met));
      add(windows, labels("missed"), double(o.windows_missed - o.windows_missed_at_floor));
      add(windows, labels("missed_at_floor"), double(o.windows_missed_at_floor));
    }

  auto& bps = family("nvqos_class_effective_ceiling_bits_per_second",
                     "Egress ceiling in force for a class the SLO controller adapts (in dry_run: what it would set).",
                     MetricType::Gauge);
  auto& iops = family("nvqos_class_effective_ceiling_iops",
                      "IOPS ceiling in force for a class the SLO controller adapts (in dry_run: what it would set).",
                      MetricType::Gauge);
  auto& adjustments = family("nvqos_slo_adjustments_total",
                             "Changes of a class's effective ceilings by the SLO controller, by direction.",
                             MetricType::Counter);
  for (const auto& [ifname, link] : links_)
    for (const auto& c : link.controller->classes()) {
      if (!c.controlled) continue;
      add(bps, {{"interface", ifname}, {"class", c.spec.name}}, c.bps.effective);
      if (c.iops.adapted()) add(iops, {{"interface", ifname}, {"class", c.spec.name}}, c.iops.effective);
      add(adjustments, {{"interface", ifname}, {"class", c.spec.name}, {"direction", "down"}}, double(c.cuts));
      add(adjustments, {{"interface", ifname}, {"class", c.spec.name}, {"direction", "up"}}, double(c.raises));
    }
  auto& failures = family("nvqos_slo_apply_failures_total",
                          "Effective ceilings the data path refused (the previous ones stay).", MetricType::Counter);
  add(failures, {}, double(apply_failures_));
  return prometheus::TextSerializer().Serialize(families);
}

nlohmann::json SloLoop::state_json() const {
  nlohmann::json j;
  j["mode"] = mode();
  j["enabled"] = policy_.slo_controller.enabled;
  j["dry_run"] = policy_.slo_controller.dry_run;
  j["interval_ms"] = policy_.slo_controller.interval.count();
  j["interfaces"] = nlohmann::json::array();
  for (const auto& [ifname, link] : links_) {
    nlohmann::json ifc{{"name", ifname}, {"capacity_bps", link.capacity_bps}};
    ifc["classes"] = nlohmann::json::array();
    for (const auto& c : link.controller->classes()) {
      nlohmann::json cj{{"name", c.spec.name},
                        {"priority", c.spec.priority},
                        {"controlled", c.controlled},
                        {"verdict", to_string(c.verdict)},
                        {"effective_bps", c.bps.effective},
                        {"floor_bps", c.bps.floor},
                        {"max_bps", c.bps.max},
                        {"cuts", c.cuts},
                        {"raises", c.raises},
                        {"last_reason", c.last_reason}};
      if (c.bps.safe) cj["safe_bps"] = *c.bps.safe;
      if (c.bps.bad) cj["bad_bps"] = *c.bps.bad;
      if (c.iops.adapted())
        cj["iops"] = {{"effective", c.iops.effective}, {"floor", c.iops.floor}, {"max", c.iops.max}};
      ifc["classes"].push_back(cj);
    }
    ifc["objectives"] = nlohmann::json::array();
    for (const auto& o : link.controller->objectives()) {
      nlohmann::json oj{{"class", o.class_name},
                        {"op", cmd_op_name(o.objective.op)},
                        {"quantile", o.objective.quantile},
                        {"max_latency_us", o.objective.max_latency_seconds * 1e6},
                        {"verdict", to_string(o.verdict)},
                        {"last_latency_us", o.last_latency_seconds * 1e6},
                        {"last_commands", o.last_count},
                        {"windows_met", o.windows_met},
                        {"windows_missed", o.windows_missed},
                        {"windows_missed_at_floor", o.windows_missed_at_floor},
                        {"exhausted", o.exhausted}};
      if (auto r = o.compliance_ratio()) oj["compliance_ratio"] = *r;
      ifc["objectives"].push_back(oj);
    }
    j["interfaces"].push_back(ifc);
  }
  j["events"] = nlohmann::json::array();
  for (const auto& e : events_)
    j["events"].push_back({{"time_unix_seconds", e.unix_seconds},
                           {"interface", e.interface},
                           {"class", e.adjustment.class_name},
                           {"verdict", to_string(e.adjustment.verdict)},
                           {"from_bps", e.adjustment.from_bps},
                           {"to_bps", e.adjustment.to_bps},
                           {"from_iops", e.adjustment.from_iops},
                           {"to_iops", e.adjustment.to_iops},
                           {"reason", e.adjustment.reason},
                           {"applied", e.applied}});
  return j;
}

}  // namespace nvqos::agent
