// Policy -> DesiredState: the exact map entries the data path should hold.
// Pure (no kernel), so reloads are computed and tested as plain values and the
// data path applies only the difference.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config.hpp"
#include "identity.hpp"
#include "nvqos/abi.h"
#include "qos.hpp"

namespace nvqos::agent {

// Tenant ids are stable across reloads: a tenant keeps its id (and so its
// counters) while it exists; ids of removed tenants are reused last.
using TenantIds = std::map<std::string, std::uint32_t>;

struct TenantSlot {
  std::uint32_t id = 0;
  std::string name;
  std::uint32_t flags = 0;  // NVQOS_TENANT_F_*
  std::uint64_t slow_command_ns = 0;
  std::string class_name;  // "" when the tenant has no QoS class
  TenantQos qos;           // QoS fields of tenant_config (flags here are NVQOS_TENANT_F_* QoS flags)
};

struct RuleKey {
  std::uint16_t port_be = 0;  // network byte order, 0 = any
  std::array<std::uint8_t, 16> addr{};
  unsigned addr_length = 0;  // 0..128 in the v4-mapped space
  auto operator<=>(const RuleKey&) const = default;
  nvqos_tenant_rule_key to_kernel() const;
};

struct DesiredState {
  TenantIds tenant_ids;             // includes "default" -> 0
  std::vector<TenantSlot> tenants;  // by ascending id
  std::map<RuleKey, std::uint32_t> rules;
  std::map<std::uint16_t, std::uint32_t> ports;  // host order -> nvqos_port_kind
  std::uint32_t settings_flags = 0;              // NVQOS_SETTINGS_F_*
  std::uint32_t max_flows = NVQOS_DEFAULT_MAX_FLOWS;
  bool needs_xdp = false;  // early drop (quarantine, access refuse "drop") or an ingress ceiling
  IdentityState identity;  // NQN rules and access control
  QosState qos;

  const TenantSlot* tenant(std::uint32_t id) const;
};

DesiredState compile_policy(const Policy& policy, const TenantIds& previous = {});

}  // namespace nvqos::agent
