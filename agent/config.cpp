#include "config.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "identity.hpp"
#include "nvqos/abi.h"

namespace nvqos::agent {
namespace {

using json = nlohmann::json;

constexpr std::uint32_t kMinFlows = 1024;
constexpr std::uint32_t kMaxFlows = 16u << 20;
constexpr std::size_t kMaxTenantNameLength = 63;

std::string ptr(const std::string& base, const std::string& key) { return base + "/" + key; }
std::string ptr(const std::string& base, std::size_t index) {
  return base + "/" + std::to_string(index);
}

void reject_unknown_keys(const json& obj, const std::string& where,
                         std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : obj.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      throw ConfigError(ptr(where, key), "unknown field (known here: " + list + ")");
    }
  }
}

const json& require_object(const json& j, const std::string& where) {
  if (!j.is_object()) throw ConfigError(where, "must be an object");
  return j;
}

bool get_bool(const json& j, const std::string& where) {
  if (!j.is_boolean()) throw ConfigError(where, "must be true or false");
  return j.get<bool>();
}

std::uint64_t get_uint(const json& j, const std::string& where, std::uint64_t lo, std::uint64_t hi) {
  if (!j.is_number_integer() || (!j.is_number_unsigned() && j.get<std::int64_t>() < 0))
    throw ConfigError(where, "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
  auto v = j.get<std::uint64_t>();
  if (v < lo || v > hi)
    throw ConfigError(where, std::to_string(v) + " is out of range " + std::to_string(lo) + ".." +
                                 std::to_string(hi));
  return v;
}

std::vector<std::uint16_t> get_ports(const json& j, const std::string& where) {
  if (!j.is_array()) throw ConfigError(where, "must be a list of TCP ports");
  std::vector<std::uint16_t> ports;
  for (std::size_t i = 0; i < j.size(); ++i) {
    auto p = static_cast<std::uint16_t>(get_uint(j[i], ptr(where, i), 1, 65535));
    if (std::find(ports.begin(), ports.end(), p) != ports.end())
      throw ConfigError(ptr(where, i), "port " + std::to_string(p) + " is listed twice");
    ports.push_back(p);
  }
  return ports;
}

// Slow-command threshold in microseconds (1 us .. 1 h), stored in ns.
std::uint64_t get_slow_threshold(const json& j, const std::string& where) {
  return get_uint(j, where, 1, 3600ull * 1000 * 1000) * 1000;
}

bool valid_tenant_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxTenantNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

MatchRule parse_match_rule(const json& j, const std::string& where) {
  require_object(j, where);
  reject_unknown_keys(j, where, {"remote", "port", "host_nqn", "subsystem_nqn"});
  MatchRule rule;
  if (j.contains("remote")) {
    const auto& r = j["remote"];
    if (!r.is_string()) throw ConfigError(ptr(where, "remote"), "must be an address or prefix string");
    std::string why;
    auto prefix = parse_prefix(r.get<std::string>(), &why);
    if (!prefix) throw ConfigError(ptr(where, "remote"), why);
    rule.remote = *prefix;
  }
  if (j.contains("port"))
    rule.port = static_cast<std::uint16_t>(get_uint(j["port"], ptr(where, "port"), 1, 65535));
  parse_nqn_match(j, where, rule);
  if (!rule.remote && rule.port == 0 && !rule.is_nqn_rule())
    throw ConfigError(where, "a match rule needs \"remote\", \"port\", \"host_nqn\" or \"subsystem_nqn\" "
                             "(unmatched traffic goes to the default tenant)");
  return rule;
}

TenantSpec parse_tenant(const json& j, const std::string& where) {
  require_object(j, where);
  reject_unknown_keys(j, where, {"name", "class", "match", "quarantine", "slow_command_threshold_us"});
  TenantSpec t;
  if (!j.contains("name") || !j["name"].is_string())
    throw ConfigError(ptr(where, "name"), "required: the tenant's name (string)");
  t.name = j["name"].get<std::string>();
  if (!valid_tenant_name(t.name))
    throw ConfigError(ptr(where, "name"), "\"" + t.name + "\" is not a valid tenant name (1-63 of A-Z a-z 0-9 _ - .)");
  if (t.name == kDefaultTenantName)
    throw ConfigError(ptr(where, "name"), "\"default\" is the built-in tenant of unmatched traffic; "
                                          "configure it under /default_tenant");
  if (!j.contains("match") || !j["match"].is_array() || j["match"].empty())
    throw ConfigError(ptr(where, "match"), "required: a non-empty list of match rules");
  for (std::size_t i = 0; i < j["match"].size(); ++i)
    t.match.push_back(parse_match_rule(j["match"][i], ptr(ptr(where, "match"), i)));
  if (j.contains("class")) {
    if (!j["class"].is_string()) throw ConfigError(ptr(where, "class"), "must be the name of a class under /classes");
    t.class_name = j["class"].get<std::string>();
  }
  if (j.contains("quarantine")) t.quarantine = get_bool(j["quarantine"], ptr(where, "quarantine"));
  if (j.contains("slow_command_threshold_us"))
    t.slow_command_ns = get_slow_threshold(j["slow_command_threshold_us"], ptr(where, "slow_command_threshold_us"));
  return t;
}

std::string describe_rule(const MatchRule& r) {
  std::string s = r.remote ? r.remote->text : "any address";
  if (r.port) s += " port " + std::to_string(r.port);
  return s;
}

void check_cross_references(const Policy& p) {
  for (auto port : p.io_ports)
    if (std::find(p.discovery_ports.begin(), p.discovery_ports.end(), port) != p.discovery_ports.end())
      throw ConfigError("/nvme_ports/discovery", "port " + std::to_string(port) +
                                                     " is also listed under /nvme_ports/io");
  if (p.io_ports.size() + p.discovery_ports.size() > NVQOS_MAX_NVME_PORTS)
    throw ConfigError("/nvme_ports", "at most " + std::to_string(NVQOS_MAX_NVME_PORTS) + " ports in all");
  if (p.tenants.size() + 1 > NVQOS_MAX_TENANTS)
    throw ConfigError("/tenants", "at most " + std::to_string(NVQOS_MAX_TENANTS - 1) + " tenants");

  std::map<std::string, std::size_t> names;
  // A (prefix, port) pair may belong to one tenant only, or attribution would
  // depend on insertion order.
  std::map<std::pair<std::array<std::uint8_t, 17>, std::uint16_t>, std::string> owners;
  std::size_t rule_count = 0;
  for (std::size_t i = 0; i < p.tenants.size(); ++i) {
    const auto& t = p.tenants[i];
    std::string where = ptr("/tenants", i);
    if (auto [it, fresh] = names.emplace(t.name, i); !fresh)
      throw ConfigError(ptr(where, "name"), "tenant \"" + t.name + "\" is already defined at /tenants/" +
                                                std::to_string(it->second));
    for (std::size_t r = 0; r < t.match.size(); ++r) {
      const auto& rule = t.match[r];
      if (rule.is_nqn_rule()) continue;  // check_identity() owns these
      std::array<std::uint8_t, 17> k{};
      if (rule.remote) {
        std::copy(rule.remote->addr.begin(), rule.remote->addr.end(), k.begin());
        k[16] = static_cast<std::uint8_t>(rule.remote->length);
      }
      auto [it, fresh] = owners.emplace(std::make_pair(k, rule.port), t.name);
      if (!fresh)
        throw ConfigError(ptr(ptr(where, "match"), r),
                          describe_rule(rule) + " already belongs to tenant \"" + it->second + "\"");
      if (rule.port && std::find(p.io_ports.begin(), p.io_ports.end(), rule.port) == p.io_ports.end() &&
          std::find(p.discovery_ports.begin(), p.discovery_ports.end(), rule.port) == p.discovery_ports.end())
        throw ConfigError(ptr(ptr(ptr(where, "match"), r), "port"),
                          "port " + std::to_string(rule.port) + " is not an NVMe/TCP port under /nvme_ports");
      ++rule_count;
    }
  }
  if (rule_count > NVQOS_MAX_TENANT_RULES)
    throw ConfigError("/tenants", "at most " + std::to_string(NVQOS_MAX_TENANT_RULES) + " match rules in all");
}

// ---- QoS: links and classes ----

constexpr double kMaxMbitPerSecond = 10'000'000;  // 10 Tbit/s
constexpr std::uint64_t kMaxIops = 100'000'000;
constexpr std::uint64_t kMaxBurstBytes = 1ull << 30;
constexpr std::uint64_t kMaxBurstIos = 1'000'000;
constexpr std::size_t kMaxClasses = 256;

// Mbit/s (whole or fractional, > 0) -> bits per second.
std::uint64_t get_mbit(const json& j, const std::string& where) {
  if (!j.is_number() || j.get<double>() <= 0 || j.get<double>() > kMaxMbitPerSecond)
    throw ConfigError(where, "must be a rate in Mbit/s above 0 and at most " +
                                 std::to_string(static_cast<std::uint64_t>(kMaxMbitPerSecond)));
  auto bps = static_cast<std::uint64_t>(j.get<double>() * 1e6 + 0.5);
  if (bps < 1000) throw ConfigError(where, "must be at least 0.001 Mbit/s (1 kbit/s)");
  return bps;
}

std::string mbit_text(std::uint64_t bps) {
  std::ostringstream s;
  s << static_cast<double>(bps) / 1e6 << " Mbit/s";
  return s.str();
}

LinkSpec parse_link(const json& j, const std::string& where) {
  require_object(j, where);
  reject_unknown_keys(j, where, {"interface", "capacity_mbit_s", "egress_mechanism"});
  LinkSpec l;
  if (!j.contains("interface") || !j["interface"].is_string() || j["interface"].get<std::string>().empty() ||
      j["interface"].get<std::string>().size() >= 16)
    throw ConfigError(ptr(where, "interface"), "required: an interface name (1-15 characters)");
  l.interface = j["interface"].get<std::string>();
  if (!j.contains("capacity_mbit_s"))
    throw ConfigError(ptr(where, "capacity_mbit_s"), "required: the link's capacity in Mbit/s");
  l.capacity_bps = get_mbit(j["capacity_mbit_s"], ptr(where, "capacity_mbit_s"));
  if (j.contains("egress_mechanism")) {
    const auto& m = j["egress_mechanism"];
    if (m == "auto") l.egress_mechanism = EgressMechanism::automatic;
    else if (m == "htb") l.egress_mechanism = EgressMechanism::htb;
    else if (m == "edt") l.egress_mechanism = EgressMechanism::edt;
    else throw ConfigError(ptr(where, "egress_mechanism"), "must be \"auto\", \"htb\" or \"edt\"");
  }
  return l;
}

ClassSpec parse_class(const json& j, const std::string& where) {
  require_object(j, where);
  reject_unknown_keys(j, where,
                      {"name", "priority", "dscp", "scope", "guaranteed_mbit_s", "ceiling_mbit_s", "read_ceiling_mbit_s",
                       "write_ceiling_mbit_s", "ceiling_iops", "read_ceiling_iops", "write_ceiling_iops",
                       "ingress_ceiling_mbit_s", "burst_bytes", "burst_ios", "objectives", "slo"});
  ClassSpec c;
  if (!j.contains("name") || !j["name"].is_string())
    throw ConfigError(ptr(where, "name"), "required: the class's name (string)");
  c.name = j["name"].get<std::string>();
  if (!valid_tenant_name(c.name))
    throw ConfigError(ptr(where, "name"), "\"" + c.name + "\" is not a valid class name (1-63 of A-Z a-z 0-9 _ - .)");
  if (j.contains("priority"))
    c.priority = static_cast<unsigned>(get_uint(j["priority"], ptr(where, "priority"), 0, kLowestClassPriority));
  if (j.contains("dscp")) c.dscp = static_cast<std::uint8_t>(get_uint(j["dscp"], ptr(where, "dscp"), 0, 63));
  if (j.contains("scope")) {
    const auto& s = j["scope"];
    if (s == "per_tenant") c.scope = ClassScope::per_tenant;
    else if (s == "aggregate") c.scope = ClassScope::aggregate;
    else throw ConfigError(ptr(where, "scope"), "must be \"per_tenant\" or \"aggregate\"");
  }
  auto mbit = [&](const char* key, std::uint64_t& out) {
    if (j.contains(key)) out = get_mbit(j[key], ptr(where, key));
  };
  auto iops = [&](const char* key, std::uint64_t& out) {
    if (j.contains(key)) out = get_uint(j[key], ptr(where, key), 1, kMaxIops);
  };
  mbit("guaranteed_mbit_s", c.guaranteed_bps);
  mbit("ceiling_mbit_s", c.ceiling_bps);
  mbit("read_ceiling_mbit_s", c.read_ceiling_bps);
  mbit("write_ceiling_mbit_s", c.write_ceiling_bps);
  mbit("ingress_ceiling_mbit_s", c.ingress_ceiling_bps);
  iops("ceiling_iops", c.ceiling_iops);
  iops("read_ceiling_iops", c.read_ceiling_iops);
  iops("write_ceiling_iops", c.write_ceiling_iops);
  if (j.contains("burst_bytes")) c.burst_bytes = get_uint(j["burst_bytes"], ptr(where, "burst_bytes"), 1, kMaxBurstBytes);
  if (j.contains("burst_ios")) c.burst_ios = get_uint(j["burst_ios"], ptr(where, "burst_ios"), 1, kMaxBurstIos);
  c.slo = parse_class_slo(j, where);

  if (c.ceiling_bps && c.guaranteed_bps > c.ceiling_bps)
    throw ConfigError(ptr(where, "ceiling_mbit_s"), "ceiling " + mbit_text(c.ceiling_bps) + " is below the guarantee " +
                                                        mbit_text(c.guaranteed_bps));
  // A read or write ceiling above the total one could never be reached: most
  // likely a unit mistake, so it is refused rather than silently capped.
  for (auto [key, value] : {std::pair{"read_ceiling_mbit_s", c.read_ceiling_bps},
                            std::pair{"write_ceiling_mbit_s", c.write_ceiling_bps}})
    if (c.ceiling_bps && value > c.ceiling_bps)
      throw ConfigError(ptr(where, key), mbit_text(value) + " is above ceiling_mbit_s (" + mbit_text(c.ceiling_bps) +
                                             ") and could never be reached");
  for (auto [key, value] : {std::pair{"read_ceiling_iops", c.read_ceiling_iops},
                            std::pair{"write_ceiling_iops", c.write_ceiling_iops}})
    if (c.ceiling_iops && value > c.ceiling_iops)
      throw ConfigError(ptr(where, key), std::to_string(value) + " IOPS is above ceiling_iops (" +
                                             std::to_string(c.ceiling_iops) + ") and could never be reached");
  if (c.burst_ios && !c.has_iops())
    throw ConfigError(ptr(where, "burst_ios"), "needs an IOPS ceiling in the class (ceiling_iops, read_ceiling_iops or "
                                               "write_ceiling_iops)");
  if (c.burst_bytes && !c.ceiling_bps && !c.read_ceiling_bps && !c.write_ceiling_bps && !c.ingress_ceiling_bps)
    throw ConfigError(ptr(where, "burst_bytes"), "needs a bandwidth ceiling in the class");
  return c;
}

void check_qos_references(const Policy& p) {
  std::map<std::string, std::size_t> classes;
  for (std::size_t i = 0; i < p.classes.size(); ++i)
    if (auto [it, fresh] = classes.emplace(p.classes[i].name, i); !fresh)
      throw ConfigError(ptr(ptr("/classes", i), "name"), "class \"" + p.classes[i].name +
                                                             "\" is already defined at /classes/" +
                                                             std::to_string(it->second));
  auto known = [&](const std::string& name, const std::string& where) {
    if (classes.count(name)) return;
    std::string list;
    for (const auto& c : p.classes) list += (list.empty() ? "" : ", ") + c.name;
    throw ConfigError(where, "unknown class \"" + name + "\" (" +
                                 (list.empty() ? std::string("no classes are defined under /classes")
                                               : "defined: " + list) +
                                 ")");
  };
  if (!p.default_class.empty()) known(p.default_class, "/default_class");
  for (std::size_t i = 0; i < p.tenants.size(); ++i)
    if (!p.tenants[i].class_name.empty()) known(p.tenants[i].class_name, ptr(ptr("/tenants", i), "class"));
  std::set<std::string> interfaces;
  for (std::size_t i = 0; i < p.links.size(); ++i) {
    const auto& l = p.links[i];
    if (!interfaces.insert(l.interface).second)
      throw ConfigError(ptr(ptr("/links", i), "interface"), "interface " + l.interface + " is listed twice");
    if (auto sum = p.guaranteed_sum_bps(); sum > l.capacity_bps)
      throw ConfigError(ptr(ptr("/links", i), "capacity_mbit_s"),
                        "the classes' guarantees sum to " + mbit_text(sum) + ", above the link's capacity of " +
                            mbit_text(l.capacity_bps) + " (per-tenant guarantees count once per tenant)");
  }
}

std::string line_column(std::string_view text, std::size_t byte) {
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

}  // namespace

std::optional<Prefix> parse_prefix(std::string_view text, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<Prefix> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  std::string s(text);
  std::string addr_part = s;
  std::optional<unsigned> length;
  if (auto slash = s.find('/'); slash != std::string::npos) {
    addr_part = s.substr(0, slash);
    std::string len_part = s.substr(slash + 1);
    if (len_part.empty() || len_part.size() > 3 ||
        !std::all_of(len_part.begin(), len_part.end(), [](unsigned char c) { return std::isdigit(c); }))
      return fail("\"" + s + "\": prefix length after '/' must be a number");
    length = static_cast<unsigned>(std::stoul(len_part));
  }
  Prefix p;
  in_addr v4{};
  in6_addr v6{};
  unsigned max_len;
  if (inet_pton(AF_INET, addr_part.c_str(), &v4) == 1) {
    p.ipv4 = true;
    max_len = 32;
    p.addr[10] = 0xff;
    p.addr[11] = 0xff;
    std::memcpy(&p.addr[12], &v4, 4);
  } else if (inet_pton(AF_INET6, addr_part.c_str(), &v6) == 1) {
    max_len = 128;
    std::memcpy(p.addr.data(), &v6, 16);
  } else {
    return fail("\"" + s + "\" is not an IPv4 or IPv6 address or prefix");
  }
  unsigned len = length.value_or(max_len);
  if (len > max_len)
    return fail("\"" + s + "\": prefix length " + std::to_string(len) + " exceeds " + std::to_string(max_len));
  p.length = p.ipv4 ? 96 + len : len;
  for (unsigned bit = p.length; bit < 128; ++bit) p.addr[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  char buf[INET6_ADDRSTRLEN];
  if (p.ipv4) {
    std::memcpy(&v4, &p.addr[12], 4);
    inet_ntop(AF_INET, &v4, buf, sizeof buf);
  } else {
    std::memcpy(&v6, p.addr.data(), 16);
    inet_ntop(AF_INET6, &v6, buf, sizeof buf);
  }
  p.text = std::string(buf) + "/" + std::to_string(len);
  return p;
}

Policy default_policy() { return Policy{}; }

const char* to_string(ClassScope scope) { return scope == ClassScope::aggregate ? "aggregate" : "per_tenant"; }

const char* to_string(EgressMechanism m) {
  switch (m) {
    case EgressMechanism::htb: return "htb";
    case EgressMechanism::edt: return "edt";
    case EgressMechanism::automatic: break;
  }
  return "auto";
}

const ClassSpec* Policy::find_class(const std::string& name) const {
  for (const auto& c : classes)
    if (c.name == name) return &c;
  return nullptr;
}

const LinkSpec* Policy::find_link(const std::string& interface) const {
  for (const auto& l : links)
    if (l.interface == interface) return &l;
  return nullptr;
}

std::string Policy::class_of(const std::string& tenant) const {
  if (tenant == kDefaultTenantName)
    return default_tenant_enabled ? default_tenant_class.value_or(default_class) : std::string();
  for (const auto& t : tenants)
    if (t.name == tenant) return t.class_name.empty() ? default_class : t.class_name;
  return {};
}

std::uint64_t Policy::guaranteed_sum_bps() const {
  std::map<std::string, std::uint64_t> members;
  ++members[class_of(std::string(kDefaultTenantName))];
  for (const auto& t : tenants) ++members[class_of(t.name)];
  std::uint64_t sum = 0;
  for (const auto& c : classes) {
    auto n = members.count(c.name) ? members[c.name] : 0;
    if (n == 0) continue;
    sum += c.scope == ClassScope::aggregate ? c.guaranteed_bps : c.guaranteed_bps * n;
  }
  return sum;
}

Policy parse_policy(std::string_view text) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    std::string msg = e.what();
    if (auto pos = msg.find(": "); pos != std::string::npos) msg = msg.substr(pos + 2);
    throw ConfigError("", "not valid JSON at " + line_column(text, e.byte ? e.byte - 1 : 0) + ": " + msg);
  } catch (const json::exception& e) {
    // e.g. out_of_range for a number beyond a double ("1e309"): found by nvqos_config_fuzz.
    std::string msg = e.what();
    if (auto pos = msg.find("] "); pos != std::string::npos) msg = msg.substr(pos + 2);
    throw ConfigError("", "not valid JSON: " + msg);
  }
  require_object(root, "");
  reject_unknown_keys(root, "",
                      {"version", "nvme_ports", "default_tenant", "tenants", "limits", "access_control", "links",
                       "classes", "default_class", "slo_controller"});

  Policy p;
  if (root.contains("version")) {
    p.version = static_cast<unsigned>(get_uint(root["version"], "/version", 0, 1u << 30));
    if (p.version != kConfigVersion)
      throw ConfigError("/version", "unsupported config version " + std::to_string(p.version) +
                                        "; this agent understands version " + std::to_string(kConfigVersion));
  }
  if (root.contains("nvme_ports")) {
    const auto& ports = require_object(root["nvme_ports"], "/nvme_ports");
    reject_unknown_keys(ports, "/nvme_ports", {"io", "discovery"});
    if (ports.contains("io")) p.io_ports = get_ports(ports["io"], "/nvme_ports/io");
    if (ports.contains("discovery")) p.discovery_ports = get_ports(ports["discovery"], "/nvme_ports/discovery");
    if (p.io_ports.empty() && p.discovery_ports.empty())
      throw ConfigError("/nvme_ports", "no NVMe/TCP ports: nothing would be accounted");
  }
  if (root.contains("default_tenant")) {
    const auto& d = require_object(root["default_tenant"], "/default_tenant");
    reject_unknown_keys(d, "/default_tenant", {"enabled", "slow_command_threshold_us"});
    if (d.contains("enabled")) p.default_tenant_enabled = get_bool(d["enabled"], "/default_tenant/enabled");
    if (d.contains("slow_command_threshold_us"))
      p.default_tenant_slow_command_ns =
          get_slow_threshold(d["slow_command_threshold_us"], "/default_tenant/slow_command_threshold_us");
  }
  if (root.contains("tenants")) {
    if (!root["tenants"].is_array()) throw ConfigError("/tenants", "must be a list of tenants");
    for (std::size_t i = 0; i < root["tenants"].size(); ++i)
      p.tenants.push_back(parse_tenant(root["tenants"][i], ptr("/tenants", i)));
  }
  if (root.contains("limits")) {
    const auto& l = require_object(root["limits"], "/limits");
    reject_unknown_keys(l, "/limits", {"max_flows"});
    if (l.contains("max_flows"))
      p.max_flows = static_cast<std::uint32_t>(get_uint(l["max_flows"], "/limits/max_flows", kMinFlows, kMaxFlows));
  }
  if (root.contains("links")) {
    if (!root["links"].is_array()) throw ConfigError("/links", "must be a list of links");
    for (std::size_t i = 0; i < root["links"].size(); ++i)
      p.links.push_back(parse_link(root["links"][i], ptr("/links", i)));
  }
  if (root.contains("classes")) {
    if (!root["classes"].is_array()) throw ConfigError("/classes", "must be a list of QoS classes");
    if (root["classes"].size() > kMaxClasses)
      throw ConfigError("/classes", "at most " + std::to_string(kMaxClasses) + " classes");
    for (std::size_t i = 0; i < root["classes"].size(); ++i)
      p.classes.push_back(parse_class(root["classes"][i], ptr("/classes", i)));
  }
  if (root.contains("default_class")) {
    if (!root["default_class"].is_string()) throw ConfigError("/default_class", "must be the name of a class");
    p.default_class = root["default_class"].get<std::string>();
  }
  if (root.contains("access_control")) p.access = parse_access_control(root["access_control"], "/access_control");
  if (root.contains("slo_controller")) p.slo_controller = parse_slo_controller(root["slo_controller"], "/slo_controller");
  check_cross_references(p);
  check_identity(p);
  check_qos_references(p);
  return p;
}

Policy load_policy_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("", "cannot read config file " + path + ": " + std::strerror(errno));
  std::stringstream buf;
  buf << in.rdbuf();
  try {
    return parse_policy(buf.str());
  } catch (const ConfigError& e) {
    throw ConfigError(e.pointer(), e.reason() + " (in " + path + ")");
  }
}

}  // namespace nvqos::agent
