#include "identity_metrics.hpp"

#include <string>

#include "metrics.hpp"

namespace nvqos::agent {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily& family(std::vector<MetricFamily>& out, std::string name, std::string help, MetricType type) {
  auto& f = out.emplace_back();
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void add(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

}  // namespace

void identity_families(std::vector<MetricFamily>& out, const Snapshot& s) {
  struct ConnectCounter {
    const char* name;
    const char* help;
    __u64 nvqos_connect_stats::*field;
  };
  const ConnectCounter connect[] = {
      {"nvqos_nvme_connects_total", "Fabrics Connect capsules the PDU walk parsed (admin and I/O queues).",
       &nvqos_connect_stats::connects},
      {"nvqos_nvme_connect_unparsed_total",
       "Connects whose NQNs were not in the capsule's segment: tenant by address, refused on a protected port.",
       &nvqos_connect_stats::unparsed},
      {"nvqos_nvme_connect_events_dropped_total", "Connect records lost to a full ring buffer.",
       &nvqos_connect_stats::events_dropped},
      {"nvqos_nvme_connect_tenant_by_kernel_total",
       "Connections the data path moved to a tenant from its NQN maps at the Connect.",
       &nvqos_connect_stats::tenant_set},
      {"nvqos_access_gate_refused_total",
       "Connections to a protected port refused before a checkable Connect (protocol, lost boundaries, TLS, split "
       "Connect).",
       &nvqos_connect_stats::gate_refused},
      {"nvqos_access_table_full_total", "SYNs to an enforcing port dropped because access_conns was full.",
       &nvqos_connect_stats::conns_full},
  };
  for (const auto& c : connect) {
    auto& f = family(out, c.name, c.help, MetricType::Counter);
    for (const auto& ifc : s.interfaces) add(f, {{"interface", ifc.interface}}, double(ifc.identity.connect.*c.field));
  }
  auto& moved = family(out, "nvqos_nvme_connect_tenant_by_agent_total",
                       "Connections the agent moved to a tenant of a glob NQN rule after their Connect.",
                       MetricType::Counter);
  auto& timeouts = family(out, "nvqos_access_connect_timeouts_total",
                          "Connections to a protected port that sent no Connect within connect_timeout_s.",
                          MetricType::Counter);
  auto& freed = family(out, "nvqos_access_refusals_freed_total",
                       "Refused connections no packet hit for connect_timeout_s, freed from access_conns.",
                       MetricType::Counter);
  auto& gated = family(out, "nvqos_access_gated_connections",
                       "Connections to protected ports awaiting their Connect or refused (access_conns entries).",
                       MetricType::Gauge);
  for (const auto& ifc : s.interfaces) {
    add(moved, {{"interface", ifc.interface}}, double(ifc.identity.moved_by_agent));
    add(timeouts, {{"interface", ifc.interface}}, double(ifc.identity.connect_timeouts));
    add(freed, {{"interface", ifc.interface}}, double(ifc.identity.refusals_freed));
    add(gated, {{"interface", ifc.interface}}, double(ifc.identity.gated_connections));
  }

  struct AccessCounter {
    const char* name;
    const char* help;
    __u64 nvqos_access_stats::*field;
  };
  const AccessCounter access[] = {
      {"nvqos_access_denied_total", "Connections refused by access control (reset or dropped, per refuse).",
       &nvqos_access_stats::denied},
      {"nvqos_access_resets_total",
       "Refused segments tc turned into a TCP RST to the target with a copy to the initiator (refuse \"reset\").",
       &nvqos_access_stats::resets},
      {"nvqos_access_dry_run_denied_total", "Connections a dry-run access rule would have refused (let through).",
       &nvqos_access_stats::dry_run_denied},
      {"nvqos_access_allowed_total", "Connects access control checked and allowed.", &nvqos_access_stats::allowed},
      {"nvqos_access_dropped_packets_total",
       "Ingress packets of refused connections kept from the target (dropped, or turned into RSTs).",
       &nvqos_access_stats::dropped_packets},
      {"nvqos_access_dropped_bytes_total", "IP bytes of the ingress packets kept from the target on refused connections.",
       &nvqos_access_stats::dropped_bytes},
  };
  for (const auto& c : access) {
    auto& f = family(out, c.name, c.help, MetricType::Counter);
    for (const auto& ifc : s.interfaces)
      for (const auto& a : ifc.identity.access)
        add(f, {{"interface", ifc.interface}, {"subsystem", a.subsystem}}, double(a.stats.*c.field));
  }
}

}  // namespace nvqos::agent
