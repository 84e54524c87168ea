#include "policy.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <set>

namespace nvqos::agent {

nvqos_tenant_rule_key RuleKey::to_kernel() const {
  nvqos_tenant_rule_key k{};
  k.prefixlen = NVQOS_RULE_PORT_BITS + addr_length;
  k.port = port_be;
  std::memcpy(k.addr, addr.data(), sizeof k.addr);
  return k;
}

const TenantSlot* DesiredState::tenant(std::uint32_t id) const {
  auto it = std::lower_bound(tenants.begin(), tenants.end(), id,
                             [](const TenantSlot& t, std::uint32_t v) { return t.id < v; });
  return it != tenants.end() && it->id == id ? &*it : nullptr;
}

DesiredState compile_policy(const Policy& policy, const TenantIds& previous) {
  DesiredState st;
  st.max_flows = policy.max_flows;
  st.tenant_ids[std::string(kDefaultTenantName)] = NVQOS_TENANT_DEFAULT;

  std::set<std::uint32_t> used{NVQOS_TENANT_DEFAULT};
  for (const auto& t : policy.tenants) {
    if (auto it = previous.find(t.name); it != previous.end() && it->second != NVQOS_TENANT_DEFAULT) {
      st.tenant_ids[t.name] = it->second;
      used.insert(it->second);
    }
  }
  // New tenants take ids never handed out before where possible, so a tenant
  // removed in this reload does not pass its counters to a newcomer at once.
  std::set<std::uint32_t> previously_used;
  for (const auto& [name, id] : previous) previously_used.insert(id);
  std::uint32_t next_fresh = 1;
  auto take_id = [&]() {
    for (std::uint32_t id = next_fresh; id < NVQOS_MAX_TENANTS; ++id)
      if (!used.count(id) && !previously_used.count(id)) {
        next_fresh = id + 1;
        return id;
      }
    for (std::uint32_t id = 1; id < NVQOS_MAX_TENANTS; ++id)
      if (!used.count(id)) return id;
    return NVQOS_TENANT_NONE;  // unreachable: config caps the tenant count
  };
  for (const auto& t : policy.tenants) {
    if (st.tenant_ids.count(t.name)) continue;
    auto id = take_id();
    used.insert(id);
    st.tenant_ids[t.name] = id;
  }

  st.tenants.push_back({NVQOS_TENANT_DEFAULT, std::string(kDefaultTenantName),
                        policy.default_tenant_enabled ? NVQOS_TENANT_F_ACTIVE : 0u,
                        policy.default_tenant_slow_command_ns});
  for (const auto& t : policy.tenants) {
    std::uint32_t id = st.tenant_ids.at(t.name);
    std::uint32_t flags = NVQOS_TENANT_F_ACTIVE;
    if (t.quarantine) {
      flags |= NVQOS_TENANT_F_DROP_INGRESS;
      st.needs_xdp = true;
    }
    st.tenants.push_back({id, t.name, flags, t.slow_command_ns});
    for (const auto& rule : t.match) {
      RuleKey key;
      key.port_be = htons(rule.port);
      if (rule.remote) {
        key.addr = rule.remote->addr;
        key.addr_length = rule.remote->length;
      }
      st.rules[key] = id;
    }
  }
  std::sort(st.tenants.begin(), st.tenants.end(), [](auto& a, auto& b) { return a.id < b.id; });

  std::map<std::uint32_t, TenantQos> qos;
  st.qos = compile_qos(policy, st.tenant_ids, qos);
  for (auto& slot : st.tenants) {
    slot.class_name = st.qos.tenant_class[slot.name];
    if (auto it = qos.find(slot.id); it != qos.end()) slot.qos = it->second;
    if (slot.qos.flags & NVQOS_TENANT_F_INGRESS_LIMIT) st.needs_xdp = true;
  }

  for (auto p : policy.io_ports) st.ports[p] = NVQOS_PORT_KIND_IO;
  for (auto p : policy.discovery_ports) st.ports[p] = NVQOS_PORT_KIND_DISCOVERY;
  st.settings_flags |= NVQOS_SETTINGS_F_PORT_BITMAP;
  if (policy.default_tenant_enabled) st.settings_flags |= NVQOS_SETTINGS_F_DEFAULT_TENANT;
  st.identity = compile_identity(policy, st.tenant_ids);
  if (!st.identity.access_ports.empty()) st.settings_flags |= NVQOS_SETTINGS_F_ACCESS;
  if (st.identity.xdp_refusal) {
    st.settings_flags |= NVQOS_SETTINGS_F_ACCESS_XDP;
    st.needs_xdp = true;
  }
  return st;
}

}  // namespace nvqos::agent
