// Tenants by NVMe identity and target-side access control, the pure part: NQN
// patterns in match rules, the "access_control" config section, which tenant
// a (host NQN, subsystem NQN) pair belongs to, and what the kernel maps hold
// (exact rules only where they are decisive). No kernel here: unit-tested as
// plain values. The data path side is agent/identity_datapath.*.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "config.hpp"

namespace nvqos::agent {

inline constexpr std::size_t kMaxNqnLength = 223;  // NVMe Base: NQNs are at most 223 bytes

// True when the pattern uses fnmatch syntax (* ? [).
bool nqn_is_glob(std::string_view pattern);
// fnmatch(3) without flags: '*' also matches ':' and '.'.
bool nqn_matches(const std::string& pattern, const std::string& nqn);
// Why an NQN pattern (or exact NQN when glob_ok is false) is unusable, or nullopt.
std::optional<std::string> nqn_pattern_error(std::string_view pattern, bool glob_ok);

// Config parsing helpers called by config.cpp; they throw ConfigError.
void parse_nqn_match(const nlohmann::json& rule, const std::string& where, MatchRule& out);
AccessPolicy parse_access_control(const nlohmann::json& j, const std::string& where);
// Cross-checks: NQN rules owned twice, access ports that are not NVMe/TCP ports.
void check_identity(const Policy& policy);

// One NQN rule of a tenant, ranked: host+subsystem > subsystem only > host
// only; within a kind, exact patterns before globs; then configuration order.
struct NqnRule {
  std::string host;  // "" = any
  std::string sub;   // "" = any
  std::uint32_t tenant_id = 0;
  int kind = 0;      // 2: both, 1: subsystem only, 0: host only
  int exact = 0;     // patterns given without glob characters
  std::size_t order = 0;
  bool matches(const std::string& hostnqn, const std::string& subnqn) const;
  auto operator<=>(const NqnRule&) const = default;
};

struct AccessEntry {
  std::string nqn;
  std::vector<std::uint16_t> ports;  // resolved: the ports it protects
  bool enforce = true;
  std::vector<std::string> hosts;
  std::vector<Prefix> initiators;
  bool reset = true;  // refuse by RSTs (else drop, in XDP)
  bool operator==(const AccessEntry&) const = default;
};

struct IdentityState {
  std::vector<NqnRule> rules;  // in precedence order
  // Exact rules the kernel may apply on its own (decisive).
  std::map<std::pair<std::string, std::string>, std::uint32_t> pairs;  // (host, sub)
  std::map<std::string, std::uint32_t> subs;
  std::map<std::string, std::uint32_t> hosts;
  std::vector<AccessEntry> access;
  std::map<std::uint16_t, std::uint32_t> access_ports;  // host order -> NVQOS_ACCESS_F_ENFORCE | _RESET
  bool xdp_refusal = false;  // an enforcing subsystem refuses by "drop": XDP is needed
  std::uint32_t connect_timeout_s = 60;

  // The tenant id of the first rule matching, or nullopt: keep the address tenant.
  std::optional<std::uint32_t> resolve(const std::string& hostnqn, const std::string& subnqn) const;
  bool operator==(const IdentityState&) const = default;
};

IdentityState compile_identity(const Policy& policy, const std::map<std::string, std::uint32_t>& tenant_ids);

}  // namespace nvqos::agent
