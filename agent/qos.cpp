#include "qos.hpp"

#include <algorithm>
#include <set>

namespace nvqos::agent {
namespace {

constexpr std::uint64_t kGsoBytes = 64 * 1024;
constexpr std::uint64_t kBurstWindowMs = 10;  // token buckets of limiters
// HTB quantum (bytes a class may send per DRR round when borrowing): rate / 10
// like tc's r2q default, within the kernel's accepted range.
constexpr std::uint64_t kMinQuantum = 16 * 1024;
constexpr std::uint64_t kMaxQuantum = 200'000;

std::uint32_t htb_quantum(std::uint64_t rate_bps) {
  return static_cast<std::uint32_t>(std::clamp<std::uint64_t>(rate_bps / 8 / 10, kMinQuantum, kMaxQuantum));
}

nvqos_rate bytes_rate(std::uint64_t bps, std::uint64_t burst_bytes) {
  nvqos_rate r{};
  if (!bps) return r;
  r.per_sec = bps / 8;
  r.burst = burst_bytes ? burst_bytes : default_burst_bytes(r.per_sec);
  return r;
}

nvqos_rate ios_rate(std::uint64_t iops, std::uint64_t burst_ios) {
  nvqos_rate r{};
  if (!iops) return r;
  r.per_sec = iops;
  r.burst = burst_ios ? burst_ios : default_burst_ios(iops);
  return r;
}

nvqos_limiter_config limiter_for(const ClassSpec& c) {
  nvqos_limiter_config l{};
  l.limit[NVQOS_LIMIT_EGRESS_BYTES] = bytes_rate(c.ceiling_bps, c.burst_bytes);
  l.limit[NVQOS_LIMIT_READ_BYTES] = bytes_rate(c.read_ceiling_bps, c.burst_bytes);
  l.limit[NVQOS_LIMIT_WRITE_BYTES] = bytes_rate(c.write_ceiling_bps, c.burst_bytes);
  l.limit[NVQOS_LIMIT_IOPS] = ios_rate(c.ceiling_iops, c.burst_ios);
  l.limit[NVQOS_LIMIT_READ_IOPS] = ios_rate(c.read_ceiling_iops, c.burst_ios);
  l.limit[NVQOS_LIMIT_WRITE_IOPS] = ios_rate(c.write_ceiling_iops, c.burst_ios);
  l.limit[NVQOS_LIMIT_INGRESS_BYTES] = bytes_rate(c.ingress_ceiling_bps, c.burst_bytes);
  return l;
}

bool limits_egress(const ClassSpec& c) {
  return c.ceiling_bps || c.read_ceiling_bps || c.write_ceiling_bps || c.has_iops();
}

}  // namespace

std::uint64_t default_burst_bytes(std::uint64_t bytes_per_sec) {
  return std::max(bytes_per_sec * kBurstWindowMs / 1000, kGsoBytes);
}

std::optional<std::uint64_t> burst_balance(const nvqos_limiter_config& config, const nvqos_limiter_state& state,
                                           std::uint64_t now_ns, nvqos_limit_kind first, nvqos_limit_kind last) {
  std::optional<std::uint64_t> out;
  for (int k = first; k <= last; ++k) {
    const nvqos_rate& r = config.limit[k];
    if (!r.per_sec) continue;
    const std::uint64_t burst = std::min<std::uint64_t>(r.burst, NVQOS_LIMITER_MAX_BURST);
    // The IOPS kinds have a clock per role; the busier one binds.
    std::uint64_t next = state.next_ns[k];
    if (k >= NVQOS_LIMIT_IOPS && k < NVQOS_LIMIT_IOPS + NVQOS_LIMIT_IOPS_KINDS)
      next = std::max<std::uint64_t>(next, state.target_iops_next_ns[k - NVQOS_LIMIT_IOPS]);
    const std::uint64_t idle_ns = now_ns > next ? now_ns - next : 0;
    // 128 bits: an idle limiter's lag (since boot) times a rate overflows 64.
    const auto earned = static_cast<std::uint64_t>(
        std::min<unsigned __int128>(static_cast<unsigned __int128>(idle_ns) * r.per_sec / 1'000'000'000u, burst));
    out = out ? std::min(*out, earned) : earned;
  }
  return out;
}

std::uint64_t default_burst_ios(std::uint64_t iops) { return std::max<std::uint64_t>(iops * kBurstWindowMs / 1000, 1); }

std::uint32_t htb_burst_bytes(std::uint64_t rate_bps) {
  return static_cast<std::uint32_t>(std::max(rate_bps / 8 / 1000, kGsoBytes));
}

std::uint32_t ShapingUnit::classid_for(nvqos_role role) const {
  if (!split_roles) return htb_classid(minor);
  return htb_classid(static_cast<std::uint16_t>(minor + (role == NVQOS_ROLE_INITIATOR ? 1 : 2)));
}

QosState compile_qos(const Policy& policy, const std::map<std::string, std::uint32_t>& tenant_ids,
                     std::map<std::uint32_t, TenantQos>& out) {
  QosState q;
  q.classes = policy.classes;
  q.guaranteed_sum_bps = policy.guaranteed_sum_bps();
  for (const auto& l : policy.links) {
    q.link_capacity_bps[l.interface] = l.capacity_bps;
    q.egress_mechanism[l.interface] = l.egress_mechanism;
  }

  std::map<std::string, std::vector<std::pair<std::uint32_t, std::string>>> members;  // class -> (id, tenant)
  auto enrol = [&](const std::string& tenant) {
    std::string cls = policy.class_of(tenant);
    q.tenant_class[tenant] = cls;
    if (!cls.empty()) members[cls].emplace_back(tenant_ids.at(tenant), tenant);
  };
  enrol(std::string(kDefaultTenantName));
  for (const auto& t : policy.tenants) enrol(t.name);

  // HTB priority only means something between classes of different priority:
  // classes that differ in nothing else need no tree.
  std::set<unsigned> priorities;
  for (const auto& [name, m] : members) priorities.insert(policy.find_class(name)->priority);
  const bool priority_matters = priorities.size() > 1;

  for (const auto& c : policy.classes) {
    auto it = members.find(c.name);
    if (it == members.end()) continue;
    auto tenants = it->second;
    std::sort(tenants.begin(), tenants.end());
    // IOPS ceilings alone need a tree too: EDT pacing takes effect in the sch_fq of an HTB leaf.
    const bool shaped = c.has_egress_bandwidth() || priority_matters || c.has_iops();
    const nvqos_limiter_config limiter = limiter_for(c);
    const bool has_limiter = limits_egress(c) || c.ingress_ceiling_bps;
    q.has_bandwidth |= c.has_egress_bandwidth();
    q.needs_edt |= limits_egress(c);

    // Per-tenant: one unit per tenant; aggregate: one for all, named after
    // the class and keyed by its smallest member id.
    std::vector<std::pair<std::uint32_t, std::vector<std::uint32_t>>> units;  // unit id -> tenant ids
    std::vector<std::string> unit_names;
    if (c.scope == ClassScope::aggregate) {
      std::vector<std::uint32_t> ids;
      for (const auto& [id, name] : tenants) ids.push_back(id);
      units.emplace_back(tenants.front().first, ids);
      unit_names.push_back(c.name);
    } else {
      for (const auto& [id, name] : tenants) {
        units.emplace_back(id, std::vector<std::uint32_t>{id});
        unit_names.push_back(name);
      }
    }
    for (std::size_t u = 0; u < units.size(); ++u) {
      const auto& [unit_id, ids] = units[u];
      ShapingUnit unit;
      unit.name = unit_names[u];
      unit.class_name = c.name;
      unit.minor = static_cast<std::uint16_t>(kHtbUnitMinorBase + unit_id * 3);
      unit.split_roles = c.read_ceiling_bps || c.write_ceiling_bps;
      unit.priority = c.priority;
      unit.guaranteed_bps = c.guaranteed_bps;
      unit.ceiling_bps = c.ceiling_bps;
      unit.read_ceiling_bps = c.read_ceiling_bps;
      unit.write_ceiling_bps = c.write_ceiling_bps;
      unit.burst_bytes = c.burst_bytes;
      if (shaped) q.units.push_back(unit);
      if (has_limiter) q.limiters[unit_id] = limiter;
      for (auto id : ids) {
        TenantQos t;
        if (shaped) {
          t.flags |= NVQOS_TENANT_F_SET_PRIORITY;
          t.classid[NVQOS_ROLE_INITIATOR] = unit.classid_for(NVQOS_ROLE_INITIATOR);
          t.classid[NVQOS_ROLE_TARGET] = unit.classid_for(NVQOS_ROLE_TARGET);
        }
        if (c.dscp) {
          t.flags |= NVQOS_TENANT_F_MARK_DSCP;
          t.dscp = *c.dscp;
        }
        if (has_limiter) t.limiter_id = unit_id;
        if (limits_egress(c)) t.flags |= NVQOS_TENANT_F_EDT;
        if (c.ingress_ceiling_bps) t.flags |= NVQOS_TENANT_F_INGRESS_LIMIT;
        out[id] = t;
      }
    }
  }
  std::sort(q.units.begin(), q.units.end(), [](const auto& a, const auto& b) { return a.minor < b.minor; });
  return q;
}

EgressMechanism egress_mechanism_of(const QosState& qos, const std::string& ifname) {
  auto it = qos.egress_mechanism.find(ifname);
  return it == qos.egress_mechanism.end() ? EgressMechanism::automatic : it->second;
}

std::vector<UnenforcedLimit> unenforced_limits(const QosState& qos, bool htb, bool edt,
                                               const std::string& no_edt_reason) {
  std::set<std::string> in_use;
  for (const auto& [tenant, cls] : qos.tenant_class)
    if (!cls.empty()) in_use.insert(cls);
  std::vector<UnenforcedLimit> out;
  for (const auto& c : qos.classes) {
    if (!in_use.count(c.name)) continue;
    if (!edt) {
      const std::string& why = no_edt_reason;
      if (c.ceiling_iops) out.push_back({c.name, "ceiling_iops", why});
      if (c.read_ceiling_iops) out.push_back({c.name, "read_ceiling_iops", why});
      if (c.write_ceiling_iops) out.push_back({c.name, "write_ceiling_iops", why});
      if (c.burst_ios) out.push_back({c.name, "burst_ios", why});
    }
    if (!htb) {
      const char* why = "no HTB tree on this interface (link capacity unknown: add it under /links)";
      bool units = std::any_of(qos.units.begin(), qos.units.end(), [&](const auto& u) { return u.class_name == c.name; });
      if (units) out.push_back({c.name, "priority", why});
      if (c.guaranteed_bps) out.push_back({c.name, "guaranteed_mbit_s", why});
      if (c.ceiling_bps) out.push_back({c.name, "ceiling_mbit_s", why});
      if (c.read_ceiling_bps) out.push_back({c.name, "read_ceiling_mbit_s", why});
      if (c.write_ceiling_bps) out.push_back({c.name, "write_ceiling_mbit_s", why});
    }
  }
  return out;
}

std::vector<HtbClass> plan_htb(const QosState& qos, std::uint64_t capacity_bps) {
  std::vector<HtbClass> out;
  if (qos.units.empty() || capacity_bps == 0) return out;
  // A unit without a guarantee still needs a rate: a sliver, so that the
  // guarantees of others hold; it borrows everything else up to its ceiling.
  const std::uint64_t min_rate = std::max<std::uint64_t>(capacity_bps / 1000, 8000);
  auto make = [&](std::uint16_t minor, std::uint32_t parent, std::uint64_t rate, std::uint64_t ceil, unsigned prio,
                  bool leaf, std::uint64_t burst_extra, std::string label) {
    HtbClass c;
    c.classid = htb_classid(minor);
    c.parent = parent;
    c.rate_bps = std::min(rate, capacity_bps);
    c.ceil_bps = std::max(std::min(ceil, capacity_bps), c.rate_bps);
    c.burst_bytes = htb_burst_bytes(c.rate_bps);
    c.cburst_bytes = std::max<std::uint32_t>(htb_burst_bytes(c.ceil_bps), static_cast<std::uint32_t>(burst_extra));
    c.quantum_bytes = htb_quantum(c.rate_bps);
    c.priority = prio;
    c.leaf = leaf;
    c.label = std::move(label);
    return c;
  };
  const std::uint32_t root = htb_classid(kHtbRootMinor);
  out.push_back(make(kHtbRootMinor, static_cast<std::uint32_t>(kHtbMajor) << 16, capacity_bps, capacity_bps, 0, false,
                     0, "root"));
  std::uint64_t reserved = 0;
  for (const auto& u : qos.units) {
    std::uint64_t rate = u.guaranteed_bps ? u.guaranteed_bps : min_rate;
    std::uint64_t ceil = u.ceiling_bps ? u.ceiling_bps : capacity_bps;
    std::string what = (u.name == u.class_name ? "class " : "tenant ") + u.name;
    if (!u.split_roles) {
      out.push_back(make(u.minor, root, rate, ceil, u.priority, true, u.burst_bytes, what));
    } else {
      out.push_back(make(u.minor, root, rate, ceil, u.priority, false, u.burst_bytes, what));
      // Each role is guaranteed half of the unit's rate and borrows the rest
      // of it (and up to the ceilings) while the other role is idle.
      std::uint64_t half = std::max(rate / 2, min_rate);
      std::uint64_t write_ceil = u.write_ceiling_bps ? std::min(u.write_ceiling_bps, ceil) : ceil;
      std::uint64_t read_ceil = u.read_ceiling_bps ? std::min(u.read_ceiling_bps, ceil) : ceil;
      out.push_back(make(static_cast<std::uint16_t>(u.minor + 1), htb_classid(u.minor), half, write_ceil, u.priority,
                         true, u.burst_bytes, what + " (initiator: writes)"));
      out.push_back(make(static_cast<std::uint16_t>(u.minor + 2), htb_classid(u.minor), half, read_ceil, u.priority,
                         true, u.burst_bytes, what + " (target: reads)"));
    }
    reserved += std::min(rate, capacity_bps);
  }
  // Everything else (other protocols, tenants without a class): what the
  // guarantees leave, at least 1% of the link, so it never starves.
  std::uint64_t rest = reserved < capacity_bps ? capacity_bps - reserved : 0;
  out.push_back(make(kHtbDefaultMinor, root, std::max(rest, capacity_bps / 100), capacity_bps, kLowestClassPriority,
                     true, 0, "default"));
  return out;
}

}  // namespace nvqos::agent
