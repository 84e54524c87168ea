// libFuzzer target: config parsing (agent/config.cpp) and its compilation into
// map entries (agent/policy.cpp). Any text either becomes a Policy that compiles
// into entries the maps can hold, or is refused with a ConfigError naming what
// was wrong. Any other exception, a crash or a sanitizer report is a bug: the
// agent only catches ConfigError when it (re)loads a config.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config.hpp"
#include "nvqos/abi.h"
#include "policy.hpp"

using namespace nvqos::agent;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Policy policy;
  try {
    policy = parse_policy(text);
  } catch (const ConfigError& e) {
    check(!e.reason().empty());
    return 0;
  }
  check(policy.version == kConfigVersion);
  check(!policy.io_ports.empty() || !policy.discovery_ports.empty());
  const DesiredState state = compile_policy(policy);
  check(!state.tenants.empty() && state.tenants.size() <= NVQOS_MAX_TENANTS);
  check(state.rules.size() <= NVQOS_MAX_TENANT_RULES);
  check(!state.ports.empty() && state.ports.size() <= NVQOS_MAX_NVME_PORTS);
  for (const auto& [key, tenant] : state.rules) {
    check(key.addr_length <= NVQOS_RULE_ADDR_BITS);
    check(state.tenant(tenant) != nullptr);
    check(key.to_kernel().prefixlen <= NVQOS_RULE_PORT_BITS + NVQOS_RULE_ADDR_BITS);
  }
  for (const auto& [port, kind] : state.ports)
    check(port != 0 && (kind == NVQOS_PORT_KIND_IO || kind == NVQOS_PORT_KIND_DISCOVERY));
  // A reload keeps every surviving tenant's id.
  const DesiredState again = compile_policy(policy, state.tenant_ids);
  check(again.tenant_ids == state.tenant_ids);
  return 0;
}
