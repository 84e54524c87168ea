#include "identity.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "nvqos/abi.h"

namespace nvqos::agent {
namespace {

using json = nlohmann::json;

std::string at(const std::string& base, const std::string& key) { return base + "/" + key; }
std::string at(const std::string& base, std::size_t i) { return base + "/" + std::to_string(i); }

std::string get_nqn(const json& j, const std::string& where, bool glob_ok) {
  if (!j.is_string()) throw ConfigError(where, glob_ok ? "must be an NQN or an NQN pattern (string)" : "must be an NQN (string)");
  std::string s = j.get<std::string>();
  if (auto why = nqn_pattern_error(s, glob_ok)) throw ConfigError(where, *why);
  return s;
}

void reject_unknown(const json& obj, const std::string& where, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : obj.items())
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      throw ConfigError(at(where, key), "unknown field (known here: " + list + ")");
    }
}

bool has(const std::vector<std::uint16_t>& v, std::uint16_t p) { return std::find(v.begin(), v.end(), p) != v.end(); }

}  // namespace

bool nqn_is_glob(std::string_view p) { return p.find_first_of("*?[") != std::string_view::npos; }

bool nqn_matches(const std::string& pattern, const std::string& nqn) {
  if (!nqn_is_glob(pattern)) return pattern == nqn;
  return fnmatch(pattern.c_str(), nqn.c_str(), 0) == 0;
}

std::optional<std::string> nqn_pattern_error(std::string_view p, bool glob_ok) {
  if (p.empty()) return "must not be empty";
  if (p.size() > kMaxNqnLength)
    return "\"" + std::string(p.substr(0, 40)) + "...\" is " + std::to_string(p.size()) + " bytes; an NQN has at most " +
           std::to_string(kMaxNqnLength);
  for (unsigned char c : p)
    if (c < 0x20 || c == 0x7f) return "\"" + std::string(p) + "\" contains a control character";
  if (!glob_ok && nqn_is_glob(p))
    return "\"" + std::string(p) + "\": only exact NQNs here (the kernel compares them byte for byte)";
  return std::nullopt;
}

void parse_nqn_match(const json& rule, const std::string& where, MatchRule& out) {
  if (rule.contains("host_nqn")) out.host_nqn = get_nqn(rule["host_nqn"], at(where, "host_nqn"), true);
  if (rule.contains("subsystem_nqn"))
    out.subsystem_nqn = get_nqn(rule["subsystem_nqn"], at(where, "subsystem_nqn"), true);
  if (out.is_nqn_rule() && (out.remote || out.port))
    throw ConfigError(where, "a rule matches NQNs (host_nqn, subsystem_nqn) or addresses (remote, port), not both; "
                             "write two rules");
}

namespace {

AccessRefuse parse_refuse(const json& v, const std::string& where) {
  if (!v.is_string() || (v != "reset" && v != "drop"))
    throw ConfigError(where, "must be \"reset\" (RSTs to both ends) or \"drop\" (drop in XDP)");
  return v == "reset" ? AccessRefuse::reset : AccessRefuse::drop;
}

}  // namespace

AccessPolicy parse_access_control(const json& j, const std::string& where) {
  if (!j.is_object()) throw ConfigError(where, "must be an object");
  reject_unknown(j, where, {"subsystems", "connect_timeout_s", "refuse"});
  AccessPolicy a;
  if (j.contains("refuse")) a.refuse = parse_refuse(j["refuse"], at(where, "refuse"));
  if (j.contains("connect_timeout_s")) {
    const auto& t = j["connect_timeout_s"];
    if (!t.is_number_unsigned() || t.get<std::uint64_t>() < 1 || t.get<std::uint64_t>() > 3600)
      throw ConfigError(at(where, "connect_timeout_s"), "must be a whole number of seconds from 1 to 3600");
    a.connect_timeout_s = t.get<std::uint32_t>();
  }
  if (!j.contains("subsystems")) return a;
  const auto& list = j["subsystems"];
  const std::string lw = at(where, "subsystems");
  if (!list.is_array()) throw ConfigError(lw, "must be a list of subsystems");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string w = at(lw, i);
    const auto& e = list[i];
    if (!e.is_object()) throw ConfigError(w, "must be an object");
    reject_unknown(e, w, {"nqn", "mode", "refuse", "ports", "hosts", "initiators"});
    AccessSubsystem s;
    if (!e.contains("nqn")) throw ConfigError(at(w, "nqn"), "required: the subsystem's NQN");
    s.nqn = get_nqn(e["nqn"], at(w, "nqn"), false);
    if (!seen.insert(s.nqn).second) throw ConfigError(at(w, "nqn"), "subsystem " + s.nqn + " is listed twice");
    if (e.contains("mode")) {
      const auto& m = e["mode"];
      if (!m.is_string() || (m != "enforce" && m != "dry_run"))
        throw ConfigError(at(w, "mode"), "must be \"enforce\" or \"dry_run\"");
      s.enforce = m == "enforce";
    }
    if (e.contains("refuse")) s.refuse = parse_refuse(e["refuse"], at(w, "refuse"));
    if (e.contains("ports")) {
      if (!e["ports"].is_array() || e["ports"].empty()) throw ConfigError(at(w, "ports"), "must be a non-empty list of TCP ports");
      for (std::size_t p = 0; p < e["ports"].size(); ++p) {
        const auto& v = e["ports"][p];
        if (!v.is_number_unsigned() || v.get<std::uint64_t>() < 1 || v.get<std::uint64_t>() > 65535)
          throw ConfigError(at(at(w, "ports"), p), "must be a TCP port (1..65535)");
        s.ports.push_back(v.get<std::uint16_t>());
      }
    }
    if (e.contains("hosts")) {
      if (!e["hosts"].is_array()) throw ConfigError(at(w, "hosts"), "must be a list of host NQNs");
      for (std::size_t h = 0; h < e["hosts"].size(); ++h)
        s.hosts.push_back(get_nqn(e["hosts"][h], at(at(w, "hosts"), h), false));
    }
    if (e.contains("initiators")) {
      if (!e["initiators"].is_array()) throw ConfigError(at(w, "initiators"), "must be a list of addresses or prefixes");
      for (std::size_t p = 0; p < e["initiators"].size(); ++p) {
        const auto& v = e["initiators"][p];
        std::string why = "must be an address or prefix string";
        std::optional<Prefix> prefix = v.is_string() ? parse_prefix(v.get<std::string>(), &why) : std::nullopt;
        if (!prefix) throw ConfigError(at(at(w, "initiators"), p), why);
        s.initiators.push_back(*prefix);
      }
    }
    if (s.hosts.empty() && s.initiators.empty())
      throw ConfigError(w, "list \"hosts\", \"initiators\" or both: who may connect to " + s.nqn);
    a.subsystems.push_back(std::move(s));
  }
  if (a.subsystems.size() >= NVQOS_MAX_ACCESS_SUBSYS)
    throw ConfigError(lw, "at most " + std::to_string(NVQOS_MAX_ACCESS_SUBSYS - 1) + " protected subsystems");
  return a;
}

void check_identity(const Policy& p) {
  std::map<std::pair<std::string, std::string>, std::string> owners;
  for (std::size_t i = 0; i < p.tenants.size(); ++i)
    for (std::size_t r = 0; r < p.tenants[i].match.size(); ++r) {
      const MatchRule& rule = p.tenants[i].match[r];
      if (!rule.is_nqn_rule()) continue;
      auto [it, fresh] = owners.emplace(std::make_pair(rule.host_nqn, rule.subsystem_nqn), p.tenants[i].name);
      if (!fresh)
        throw ConfigError("/tenants/" + std::to_string(i) + "/match/" + std::to_string(r),
                          "the same NQN rule already belongs to tenant \"" + it->second + "\"");
    }
  std::size_t hosts = 0, cidrs = 0;
  for (std::size_t i = 0; i < p.access.subsystems.size(); ++i) {
    const auto& s = p.access.subsystems[i];
    for (std::size_t k = 0; k < s.ports.size(); ++k)
      if (!has(p.io_ports, s.ports[k]) && !has(p.discovery_ports, s.ports[k]))
        throw ConfigError("/access_control/subsystems/" + std::to_string(i) + "/ports/" + std::to_string(k),
                          "port " + std::to_string(s.ports[k]) + " is not an NVMe/TCP port under /nvme_ports");
    hosts += s.hosts.size();
    cidrs += s.initiators.size();
  }
  if (hosts > NVQOS_MAX_ACCESS_HOSTS || cidrs > NVQOS_MAX_ACCESS_CIDRS)
    throw ConfigError("/access_control", "at most " + std::to_string(NVQOS_MAX_ACCESS_HOSTS) + " hosts and " +
                                             std::to_string(NVQOS_MAX_ACCESS_CIDRS) + " initiator prefixes in all");
}

bool NqnRule::matches(const std::string& hostnqn, const std::string& subnqn) const {
  return (host.empty() || nqn_matches(host, hostnqn)) && (sub.empty() || nqn_matches(sub, subnqn));
}

std::optional<std::uint32_t> IdentityState::resolve(const std::string& hostnqn, const std::string& subnqn) const {
  for (const auto& r : rules)
    if (r.matches(hostnqn, subnqn)) return r.tenant_id;
  return std::nullopt;
}

IdentityState compile_identity(const Policy& policy, const std::map<std::string, std::uint32_t>& tenant_ids) {
  IdentityState st;
  st.connect_timeout_s = policy.access.connect_timeout_s;
  std::size_t order = 0;
  for (const auto& t : policy.tenants)
    for (const auto& m : t.match) {
      if (!m.is_nqn_rule()) continue;
      NqnRule r;
      r.host = m.host_nqn;
      r.sub = m.subsystem_nqn;
      r.tenant_id = tenant_ids.at(t.name);
      r.kind = (!r.host.empty() && !r.sub.empty()) ? 2 : !r.sub.empty() ? 1 : 0;
      r.exact = (!r.host.empty() && !nqn_is_glob(r.host)) + (!r.sub.empty() && !nqn_is_glob(r.sub));
      r.order = order++;
      st.rules.push_back(r);
    }
  std::stable_sort(st.rules.begin(), st.rules.end(), [](const NqnRule& a, const NqnRule& b) {
    if (a.kind != b.kind) return a.kind > b.kind;
    if (a.exact != b.exact) return a.exact > b.exact;
    return a.order < b.order;
  });

  // What the kernel may decide alone without ever disagreeing with resolve():
  // its lookups are pair, then subsystem, then host, exact bytes only.
  const bool any_sub_only = std::any_of(st.rules.begin(), st.rules.end(), [](auto& r) { return r.kind == 1; });
  for (const auto& r : st.rules) {
    if (r.kind == 2 && r.exact == 2) {
      st.pairs.emplace(std::make_pair(r.host, r.sub), r.tenant_id);
    } else if (r.kind == 1 && r.exact == 1) {
      const bool shadowed = std::any_of(st.rules.begin(), st.rules.end(), [&](const NqnRule& o) {
        return o.kind == 2 && nqn_matches(o.sub, r.sub);
      });
      if (!shadowed) st.subs.emplace(r.sub, r.tenant_id);
    } else if (r.kind == 0 && r.exact == 1 && !any_sub_only) {
      const bool shadowed = std::any_of(st.rules.begin(), st.rules.end(), [&](const NqnRule& o) {
        return o.kind == 2 && nqn_matches(o.host, r.host);
      });
      if (!shadowed) st.hosts.emplace(r.host, r.tenant_id);
    }
  }

  std::set<std::uint16_t> drop_ports;  // ports with an enforcing subsystem refusing by "drop"
  for (const auto& s : policy.access.subsystems) {
    const bool reset = s.refuse.value_or(policy.access.refuse) == AccessRefuse::reset;
    AccessEntry e{s.nqn, s.ports.empty() ? policy.io_ports : s.ports, s.enforce, s.hosts, s.initiators, reset};
    for (auto port : e.ports) {
      st.access_ports[port] |= s.enforce ? NVQOS_ACCESS_F_ENFORCE : 0u;
      if (s.enforce && !reset) drop_ports.insert(port);
    }
    st.xdp_refusal |= s.enforce && !reset;
    st.access.push_back(std::move(e));
  }
  // What the port does with a connection refused before its subsystem is
  // known (no Connect in time, unreadable): drop if any subsystem there drops.
  for (auto& [port, flags] : st.access_ports)
    if (!drop_ports.count(port)) flags |= NVQOS_ACCESS_F_RESET;
  return st;
}

}  // namespace nvqos::agent
