// Configuration: JSON text -> Policy, a plain value. Everything the operator can
// get wrong is caught here, with the JSON pointer of the offending field, so the
// agent never starts (or reloads into) a half-valid state.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace nvqos::agent {

class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string pointer, std::string reason)
      : std::runtime_error(pointer.empty() ? reason : pointer + ": " + reason),
        pointer_(std::move(pointer)),
        reason_(std::move(reason)) {}
  const std::string& pointer() const { return pointer_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string pointer_;
  std::string reason_;
};

// An address prefix in the v4-mapped IPv6 space: IPv4 a.b.c.d/n is stored as
// ::ffff:a.b.c.d/(96+n), so one LPM trie serves both families.
struct Prefix {
  std::array<std::uint8_t, 16> addr{};  // bits past `length` are zero
  unsigned length = 0;                  // 0..128 in the mapped space
  bool ipv4 = false;
  std::string text;  // as canonicalised for logs: "10.0.0.0/24"

  bool operator==(const Prefix& o) const { return addr == o.addr && length == o.length; }
};

// Parses "10.0.0.0/24", "10.0.0.1", "fd00::/64", "::1". Host bits are cleared.
std::optional<Prefix> parse_prefix(std::string_view text, std::string* why = nullptr);

struct MatchRule {
  std::optional<Prefix> remote;  // remote address of the connection
  std::uint16_t port = 0;        // NVMe/TCP service port; 0 = any
  // NQN rules (agent/identity.hpp): exact or fnmatch glob; "" = any. A rule has
  // NQN patterns or address/port, not both.
  std::string host_nqn;
  std::string subsystem_nqn;
  bool is_nqn_rule() const { return !host_nqn.empty() || !subsystem_nqn.empty(); }
};

// Target-side access control (issue 10): who may connect to a subsystem.
struct AccessSubsystem {
  std::string nqn;                   // exact SUBNQN
  bool enforce = true;               // false: dry run, refusals are only counted
  std::vector<std::uint16_t> ports;  // target ports; empty = every NVMe/TCP I/O port
  std::vector<std::string> hosts;    // exact host NQNs allowed; empty = any host
  std::vector<Prefix> initiators;    // initiator prefixes allowed; empty = any address
};

struct AccessPolicy {
  std::vector<AccessSubsystem> subsystems;
  std::uint32_t connect_timeout_s = 60;  // a gated connection must send its Connect within this
};

struct TenantSpec {
  std::string name;
  std::vector<MatchRule> match;
  bool quarantine = false;  // drop all of the tenant's NVMe/TCP ingress (XDP)
  std::uint64_t slow_command_ns = 0;  // report commands slower than this; 0 = off
};

struct Policy {
  unsigned version = 1;
  std::vector<std::uint16_t> io_ports{4420};
  std::vector<std::uint16_t> discovery_ports{8009};
  bool default_tenant_enabled = true;
  std::uint64_t default_tenant_slow_command_ns = 0;
  std::vector<TenantSpec> tenants;
  std::uint32_t max_flows = 131072;
  AccessPolicy access;
};

inline constexpr unsigned kConfigVersion = 1;
inline constexpr std::string_view kDefaultTenantName = "default";

// The built-in policy used without --config: observe only, every NVMe/TCP flow
// on the standard ports accounted under tenant "default".
Policy default_policy();

Policy parse_policy(std::string_view json_text);
Policy load_policy_file(const std::string& path);

}  // namespace nvqos::agent
