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

#include "slo_config.hpp"

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
// How a refused connection is refused: "reset" (tc turns the refused segment
// into RSTs to both ends) or "drop" (its packets are dropped, in XDP).
enum class AccessRefuse { reset, drop };

struct AccessSubsystem {
  std::string nqn;                   // exact SUBNQN
  bool enforce = true;               // false: dry run, refusals are only counted
  std::optional<AccessRefuse> refuse;  // unset: AccessPolicy::refuse
  std::vector<std::uint16_t> ports;  // target ports; empty = every NVMe/TCP I/O port
  std::vector<std::string> hosts;    // exact host NQNs allowed; empty = any host
  std::vector<Prefix> initiators;    // initiator prefixes allowed; empty = any address
};

struct AccessPolicy {
  std::vector<AccessSubsystem> subsystems;
  std::uint32_t connect_timeout_s = 60;  // a gated connection must send its Connect within this
  AccessRefuse refuse = AccessRefuse::reset;  // XDP is attached only when asked for
};

struct TenantSpec {
  std::string name;
  std::string class_name;  // empty: Policy::default_class (which may be empty: no QoS)
  std::vector<MatchRule> match;
  bool quarantine = false;  // drop all of the tenant's NVMe/TCP ingress (XDP)
  std::uint64_t slow_command_ns = 0;  // report commands slower than this; 0 = off
};

inline constexpr unsigned kLowestClassPriority = 7;  // HTB priorities 0..7

// A QoS class (docs/config.md, "QoS classes"). Rates are stored in bits or
// commands per second; 0 means "not configured".
enum class ClassScope { per_tenant, aggregate };
const char* to_string(ClassScope scope);

struct ClassSpec {
  std::string name;
  unsigned priority = kLowestClassPriority;  // 0 = highest
  std::optional<std::uint8_t> dscp;
  ClassScope scope = ClassScope::per_tenant;
  std::uint64_t guaranteed_bps = 0;
  std::uint64_t ceiling_bps = 0;
  std::uint64_t read_ceiling_bps = 0;
  std::uint64_t write_ceiling_bps = 0;
  std::uint64_t ceiling_iops = 0;
  std::uint64_t read_ceiling_iops = 0;
  std::uint64_t write_ceiling_iops = 0;
  std::uint64_t ingress_ceiling_bps = 0;
  std::uint64_t burst_bytes = 0;  // 0: sized from the rate
  std::uint64_t burst_ios = 0;    // 0: sized from the rate
  ClassSloSpec slo;               // latency objectives and the SLO controller's options

  bool has_egress_bandwidth() const {
    return guaranteed_bps || ceiling_bps || read_ceiling_bps || write_ceiling_bps;
  }
  bool has_iops() const { return ceiling_iops || read_ceiling_iops || write_ceiling_iops; }
};

// How a link's egress limits are enforced: automatic = EDT pacing (sch_fq leaves under HTB) where the
// kernel has sch_fq, else HTB alone; htb = HTB alone even with sch_fq; edt = EDT, refused without sch_fq.
enum class EgressMechanism { automatic, htb, edt };
const char* to_string(EgressMechanism m);

struct LinkSpec {
  std::string interface;
  std::uint64_t capacity_bps = 0;
  EgressMechanism egress_mechanism = EgressMechanism::automatic;
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
  std::vector<LinkSpec> links;
  std::vector<ClassSpec> classes;
  std::string default_class;  // class of the default tenant and of tenants naming none; empty: none
  SloControllerSpec slo_controller;
  // The default tenant's class when a class override (agent/class_override.hpp)
  // moves it; never read from the config file.
  std::optional<std::string> default_tenant_class;

  const ClassSpec* find_class(const std::string& name) const;
  const LinkSpec* find_link(const std::string& interface) const;
  // The class a tenant is in ("" = none); kDefaultTenantName asks for the default tenant's.
  std::string class_of(const std::string& tenant) const;
  // Guaranteed bits per second the policy reserves on every interface it
  // shapes: per-tenant classes once per tenant, aggregate classes once.
  std::uint64_t guaranteed_sum_bps() const;
};

inline constexpr unsigned kConfigVersion = 1;
inline constexpr std::string_view kDefaultTenantName = "default";

// The built-in policy used without --config: observe only, every NVMe/TCP flow
// on the standard ports accounted under tenant "default".
Policy default_policy();

Policy parse_policy(std::string_view json_text);
Policy load_policy_file(const std::string& path);

}  // namespace nvqos::agent
