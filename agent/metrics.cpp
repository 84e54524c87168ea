#include "metrics.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <functional>
#include <map>
#include <iterator>
#include <limits>
#include <sstream>

#include "admin_classes.hpp"
#include "identity_metrics.hpp"

namespace nvqos::agent {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

class FamilyBuilder {
 public:
  FamilyBuilder(std::vector<MetricFamily>& out, std::string name, std::string help, MetricType type)
      : out_(out), index_(out.size()) {
    auto& f = out.emplace_back();
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
  }
  void add(std::vector<prometheus::ClientMetric::Label> labels, double value) {
    auto& f = out_[index_];  // by index: later families may reallocate `out`
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter) m.counter.value = value;
    else m.gauge.value = value;
    f.metric.push_back(std::move(m));
  }

 private:
  std::vector<MetricFamily>& out_;
  std::size_t index_;
};

const char* kDirections[NVQOS_DIR_MAX] = {"ingress", "egress"};

void tenant_families(std::vector<MetricFamily>& out, const Snapshot& s) {
  struct PerDirection {
    const char* name;
    const char* help;
    std::function<double(const nvqos_tenant_stats&, int)> get;
  };
  const PerDirection per_direction[] = {
      {"nvqos_tenant_bytes_total", "NVMe/TCP bytes of the tenant on the wire (IP header onwards), by direction.",
       [](const nvqos_tenant_stats& t, int d) { return double(t.bytes[d]); }},
      {"nvqos_tenant_payload_bytes_total", "NVMe/TCP bytes of the tenant in TCP payloads, by direction.",
       [](const nvqos_tenant_stats& t, int d) { return double(t.payload_bytes[d]); }},
      {"nvqos_tenant_packets_total", "NVMe/TCP packets of the tenant on the wire (segments of GSO/GRO packets count one each).",
       [](const nvqos_tenant_stats& t, int d) { return double(t.packets[d]); }},
  };
  for (const auto& f : per_direction) {
    FamilyBuilder b(out, f.name, f.help, MetricType::Counter);
    for (const auto& ifc : s.interfaces)
      for (const auto& t : ifc.tenants)
        for (int d = 0; d < NVQOS_DIR_MAX; ++d)
          b.add({{"interface", ifc.interface}, {"tenant", t.name}, {"direction", kDirections[d]}}, f.get(t.stats, d));
  }
  struct PerTenant {
    const char* name;
    const char* help;
    MetricType type;
    std::function<double(const nvqos_tenant_stats&)> get;
  };
  const PerTenant per_tenant[] = {
      {"nvqos_tenant_flows_opened_total", "NVMe/TCP connections of the tenant first seen (or reopened by SYN).",
       MetricType::Counter, [](const nvqos_tenant_stats& t) { return double(t.flows_opened); }},
      {"nvqos_tenant_flows_closed_total", "NVMe/TCP connections of the tenant closed (first FIN or RST seen).",
       MetricType::Counter, [](const nvqos_tenant_stats& t) { return double(t.flows_closed); }},
      {"nvqos_tenant_flows_active", "NVMe/TCP connections of the tenant opened and not yet closed.",
       MetricType::Gauge,
       [](const nvqos_tenant_stats& t) {
         return t.flows_opened > t.flows_closed ? double(t.flows_opened - t.flows_closed) : 0.0;
       }},
  };
  for (const auto& f : per_tenant) {
    FamilyBuilder b(out, f.name, f.help, f.type);
    for (const auto& ifc : s.interfaces)
      for (const auto& t : ifc.tenants) b.add({{"interface", ifc.interface}, {"tenant", t.name}}, f.get(t.stats));
  }
  FamilyBuilder dropped(out, "nvqos_tenant_dropped_total",
                        "Ingress packets of the tenant dropped by policy, by reason: quarantine (XDP), ingress_ceiling "
                        "(XDP token bucket), access_denied (refused NVMe/TCP connections, tc).",
                        MetricType::Counter);
  FamilyBuilder dropped_bytes(out, "nvqos_tenant_dropped_bytes_total",
                              "IP bytes of the packets in nvqos_tenant_dropped_total, by reason.", MetricType::Counter);
  for (const auto& ifc : s.interfaces)
    for (const auto& t : ifc.tenants) {
      auto access = ifc.identity.tenant_drops.find(t.id);
      const std::pair<const char*, std::pair<double, double>> reasons[] = {
          {"quarantine", {double(t.stats.dropped_packets), double(t.stats.dropped_bytes)}},
          {"ingress_ceiling",
           {double(t.stats.ingress_limit_dropped_packets), double(t.stats.ingress_limit_dropped_bytes)}},
          {"access_denied", access == ifc.identity.tenant_drops.end()
                                ? std::pair{0.0, 0.0}
                                : std::pair{double(access->second.packets), double(access->second.bytes)}}};
      for (const auto& [reason, v] : reasons) {
        dropped.add({{"interface", ifc.interface}, {"tenant", t.name}, {"reason", reason}}, v.first);
        dropped_bytes.add({{"interface", ifc.interface}, {"tenant", t.name}, {"reason", reason}}, v.second);
      }
    }
}

void datapath_families(std::vector<MetricFamily>& out, const Snapshot& s) {
  struct PerInterface {
    const char* name;
    const char* help;
    std::function<double(const nvqos_datapath_stats&)> get;
  };
  const PerInterface counters[] = {
      {"nvqos_datapath_packets_total", "Packets the nvqos programs ran on.",
       [](const nvqos_datapath_stats& d) { return double(d.packets_seen); }},
      {"nvqos_datapath_nvme_packets_total", "NVMe/TCP packets accounted to a tenant.",
       [](const nvqos_datapath_stats& d) { return double(d.packets_nvme); }},
      {"nvqos_datapath_parse_errors_total", "Packets with truncated or malformed headers, passed untouched.",
       [](const nvqos_datapath_stats& d) { return double(d.parse_errors); }},
      {"nvqos_datapath_flow_insert_failures_total", "Flows that could not be added to the flow table.",
       [](const nvqos_datapath_stats& d) { return double(d.flow_insert_failed); }},
      {"nvqos_datapath_unclassified_packets_total",
       "NVMe/TCP packets that matched no tenant while the default tenant is disabled.",
       [](const nvqos_datapath_stats& d) { return double(d.unclassified); }},
  };
  for (const auto& f : counters) {
    FamilyBuilder b(out, f.name, f.help, MetricType::Counter);
    for (const auto& ifc : s.interfaces) b.add({{"interface", ifc.interface}}, f.get(ifc.datapath));
  }
  FamilyBuilder cap(out, "nvqos_flow_table_capacity_entries", "Size of the flow table (LRU: oldest flows are evicted).",
                    MetricType::Gauge);
  for (const auto& ifc : s.interfaces) cap.add({{"interface", ifc.interface}}, ifc.flow_capacity);
  FamilyBuilder fill(out, "nvqos_datapath_table_entries",
                     "Entries in a bounded data path table (flow_table, handshakes, inflight_cmds, access_conns).",
                     MetricType::Gauge);
  FamilyBuilder fill_cap(out, "nvqos_datapath_table_capacity_entries",
                         "Size of a bounded data path table; when full, LRU tables evict their least recently used "
                         "entries and access_conns refuses new connections to protected ports.",
                         MetricType::Gauge);
  for (const auto& ifc : s.interfaces)
    for (const auto& t : ifc.tables) {
      fill.add({{"interface", ifc.interface}, {"table", t.table}}, double(t.entries));
      fill_cap.add({{"interface", ifc.interface}, {"table", t.table}}, t.capacity);
    }
  FamilyBuilder att(out, "nvqos_datapath_attached_info",
                    "Programs attached by nvqos: hook (tc_ingress, tc_egress, xdp), mode (clsact, native, generic) "
                    "and whether nvqos holds the hook alone (exclusive).",
                    MetricType::Gauge);
  for (const auto& ifc : s.interfaces)
    for (const auto& a : ifc.attachments) att.add({{"interface", ifc.interface}, {"hook", a.hook}, {"mode", a.mode},
                                                   {"exclusive", a.exclusive ? "true" : "false"}},
                                                  1);
  FamilyBuilder run_time(out, "nvqos_bpf_program_run_time_seconds_total",
                         "Kernel time spent in each nvqos program (0 unless sysctl kernel.bpf_stats_enabled=1).",
                         MetricType::Counter);
  FamilyBuilder runs(out, "nvqos_bpf_program_runs_total",
                     "Runs of each nvqos program (0 unless sysctl kernel.bpf_stats_enabled=1).", MetricType::Counter);
  for (const auto& ifc : s.interfaces)
    for (const auto& p : ifc.programs) {
      run_time.add({{"interface", ifc.interface}, {"program", p.program}}, double(p.run_time_ns) / 1e9);
      runs.add({{"interface", ifc.interface}, {"program", p.program}}, double(p.runs));
    }
}

std::string quantile_text(double q) {
  std::ostringstream text;
  text << q;  // 0.5, 0.99, 0.999
  return text.str();
}

prometheus::ClientMetric::Label label(const char* name, std::string value) { return {name, std::move(value)}; }

void command_families(std::vector<MetricFamily>& out, const Snapshot& s) {
  auto labels = [](const InterfaceCounters& ifc, const CommandCounters& c) {
    return std::vector<prometheus::ClientMetric::Label>{label("interface", ifc.interface), label("tenant", c.tenant),
                                                        label("op", cmd_op_name(c.key.op)),
                                                        label("role", cmd_role_name(c.key.role))};
  };
  {
    auto& f = out.emplace_back();
    f.name = "nvqos_nvme_command_latency_seconds";
    f.help = "NVMe command latency from capsule to completion as seen on this host's wire, since the data path "
             "was loaded. Buckets are summed from the kernel's fine histogram (each fine bucket at its midpoint).";
    f.type = MetricType::Histogram;
    for (const auto& ifc : s.interfaces)
      for (const auto& c : ifc.commands) {
        const CoarseHistogram h = coarse_latency_histogram(c.latency);
        ClientMetric m;
        m.label = labels(ifc, c);
        m.histogram.sample_count = h.count;
        m.histogram.sample_sum = h.sum_seconds;
        for (std::size_t b = 0; b < h.cumulative.size(); ++b)
          m.histogram.bucket.push_back({h.cumulative[b], kLatencyBucketBoundsSeconds[b]});
        m.histogram.bucket.push_back({h.count, std::numeric_limits<double>::infinity()});
        f.metric.push_back(std::move(m));
      }
  }
  FamilyBuilder quantiles(out, "nvqos_nvme_command_latency_quantile_seconds",
                          "NVMe command latency quantiles over the agent's sliding window, from the kernel's fine "
                          "histogram (<= 1.6% error); absent while the window holds no completion.",
                          MetricType::Gauge);
  FamilyBuilder window_count(out, "nvqos_nvme_command_latency_window_commands",
                             "NVMe commands completed in the latency quantiles' sliding window.", MetricType::Gauge);
  for (const auto& ifc : s.interfaces)
    for (const auto& c : ifc.commands) {
      window_count.add(labels(ifc, c), double(c.window_count));
      for (const auto& [q, seconds] : c.window_quantiles) {
        auto l = labels(ifc, c);
        l.push_back(label("quantile", quantile_text(q)));
        quantiles.add(std::move(l), seconds);
      }
    }
  struct PerCommand {
    const char* name;
    const char* help;
    MetricType type;
    std::function<double(const CommandCounters&)> get;
  };
  const PerCommand per_command[] = {
      {"nvqos_nvme_commands_total", "NVMe commands completed (latency samples).", MetricType::Counter,
       [](const CommandCounters& c) { return double(c.stats.completed); }},
      {"nvqos_nvme_commands_submitted_total", "NVMe command capsules seen and tracked.", MetricType::Counter,
       [](const CommandCounters& c) { return double(c.stats.submitted); }},
      {"nvqos_nvme_bytes_total", "Data bytes (SGL length) of completed NVMe commands.", MetricType::Counter,
       [](const CommandCounters& c) { return double(c.stats.bytes); }},
      {"nvqos_nvme_commands_aborted_total", "NVMe commands in flight when their connection closed (FIN/RST).",
       MetricType::Counter, [](const CommandCounters& c) { return double(c.stats.aborted); }},
      {"nvqos_nvme_commands_lost_total",
       "NVMe commands whose completion the walk never saw (their CID was reused by a later capsule).",
       MetricType::Counter, [](const CommandCounters& c) { return double(c.stats.lost); }},
      {"nvqos_nvme_command_timeouts_total", "NVMe commands without a completion within the command timeout.",
       MetricType::Counter, [](const CommandCounters& c) { return double(c.timeouts); }},
      {"nvqos_nvme_commands_in_flight", "NVMe commands tracked and not yet completed, aborted, lost or timed out.",
       MetricType::Gauge, [](const CommandCounters& c) { return double(c.in_flight()); }},
  };
  for (const auto& f : per_command) {
    FamilyBuilder b(out, f.name, f.help, f.type);
    for (const auto& ifc : s.interfaces)
      for (const auto& c : ifc.commands) b.add(labels(ifc, c), f.get(c));
  }
  FamilyBuilder errors(out, "nvqos_nvme_command_errors_total",
                       "NVMe commands completed with an error, by status code type (status).", MetricType::Counter);
  for (const auto& ifc : s.interfaces)
    for (const auto& c : ifc.commands)
      for (std::uint32_t sc = 0; sc < NVQOS_STATUS_CLASS_MAX; ++sc) {
        auto l = labels(ifc, c);
        l.push_back(label("status", status_class_name(sc)));
        errors.add(std::move(l), double(c.stats.errors[sc]));
      }
  struct PerInterface {
    const char* name;
    const char* help;
    std::function<double(const nvqos_nvme_stats&)> get;
  };
  const PerInterface walk[] = {
      {"nvqos_nvme_pdus_total", "NVMe/TCP PDU headers parsed.", [](const nvqos_nvme_stats& n) { return double(n.pdus); }},
      {"nvqos_nvme_desync_total",
       "Times a connection's PDU walk lost track of PDU boundaries (bytes not seen, a malformed header, too many "
       "PDUs in one packet); commands in between are not timed.",
       [](const nvqos_nvme_stats& n) { return double(n.desync); }},
      {"nvqos_nvme_resync_total", "Times a lost or newly joined PDU walk found a PDU boundary again.",
       [](const nvqos_nvme_stats& n) { return double(n.resync); }},
      {"nvqos_nvme_unmatched_completions_total", "NVMe completions whose command was not tracked.",
       [](const nvqos_nvme_stats& n) { return double(n.unmatched_resp); }},
      {"nvqos_nvme_inflight_insert_failures_total", "NVMe commands that could not be tracked (map full).",
       [](const nvqos_nvme_stats& n) { return double(n.inflight_insert_failed); }},
      {"nvqos_nvme_cid_reused_total", "NVMe capsules that reused the CID of a tracked command (completion lost).",
       [](const nvqos_nvme_stats& n) { return double(n.cid_reused); }},
      {"nvqos_nvme_tls_flows_total", "NVMe/TCP connections that started with TLS: flow accounting only.",
       [](const nvqos_nvme_stats& n) { return double(n.tls_flows); }},
      {"nvqos_nvme_slow_command_events_total", "Slow-command records sent to the agent.",
       [](const nvqos_nvme_stats& n) { return double(n.slow_cmd_events); }},
      {"nvqos_nvme_slow_command_events_dropped_total", "Slow-command records suppressed by the rate limit or a full ring.",
       [](const nvqos_nvme_stats& n) { return double(n.slow_cmd_dropped); }},
  };
  for (const auto& f : walk) {
    FamilyBuilder b(out, f.name, f.help, MetricType::Counter);
    for (const auto& ifc : s.interfaces) b.add({{"interface", ifc.interface}}, f.get(ifc.nvme));
  }
  FamilyBuilder slow(out, "nvqos_nvme_slow_commands_received_total",
                     "Slow-command records the agent read from the kernel (logged at most 10 per second).",
                     MetricType::Counter);
  for (const auto& ifc : s.interfaces) slow.add({{"interface", ifc.interface}}, double(ifc.slow_commands_received));
}

void qos_families(std::vector<MetricFamily>& out, const Snapshot& s) {
  FamilyBuilder mech(out, "nvqos_qos_mechanism_info",
                     "QoS mechanisms enforcing classes on the interface, by direction: htb (egress shaping), edt "
                     "(egress pacing with sch_fq), xdp (ingress ceilings, quarantine), none.",
                     MetricType::Gauge);
  for (const auto& ifc : s.interfaces)
    for (auto [direction, list] : {std::pair{"egress", &ifc.qos.egress_mechanisms},
                                   std::pair{"ingress", &ifc.qos.ingress_mechanisms}}) {
      if (list->empty()) mech.add({{"interface", ifc.interface}, {"direction", direction}, {"mechanism", "none"}}, 1);
      for (const auto& m : *list)
        mech.add({{"interface", ifc.interface}, {"direction", direction}, {"mechanism", m}}, 1);
    }
  FamilyBuilder unenforced(out, "nvqos_qos_unenforced_limits",
                           "1 for each configured class limit the interface's kernel cannot enforce (e.g. IOPS "
                           "ceilings without sch_fq); absent when everything is enforced.",
                           MetricType::Gauge);
  for (const auto& ifc : s.interfaces)
    for (const auto& u : ifc.qos.unenforced)
      unenforced.add({{"interface", ifc.interface}, {"class", u.class_name}, {"limit", u.limit}}, 1);
  FamilyBuilder info(out, "nvqos_tenant_info", "1 per configured tenant, naming its QoS class (\"\" when none).",
                     MetricType::Gauge);
  for (const auto& [tenant, cls] : s.qos.tenant_class) info.add({{"tenant", tenant}, {"class", cls}}, 1);
  FamilyBuilder guaranteed(out, "nvqos_class_guaranteed_bits_per_second",
                           "Egress bandwidth guaranteed to the class (to each tenant of a per-tenant class).",
                           MetricType::Gauge);
  FamilyBuilder ceiling(out, "nvqos_class_ceiling_bits_per_second",
                        "Configured egress bandwidth ceilings of the class, by op (any, read, write).",
                        MetricType::Gauge);
  FamilyBuilder iops(out, "nvqos_class_ceiling_iops", "Configured IOPS ceilings of the class, by op (any, read, write).",
                     MetricType::Gauge);
  for (const auto& c : s.qos.classes) {
    if (c.guaranteed_bps) guaranteed.add({{"class", c.name}}, double(c.guaranteed_bps));
    for (auto [op, v] : {std::pair{"any", c.ceiling_bps}, std::pair{"read", c.read_ceiling_bps},
                         std::pair{"write", c.write_ceiling_bps}})
      if (v) ceiling.add({{"class", c.name}, {"op", op}}, double(v));
    for (auto [op, v] : {std::pair{"any", c.ceiling_iops}, std::pair{"read", c.read_ceiling_iops},
                         std::pair{"write", c.write_ceiling_iops}})
      if (v) iops.add({{"class", c.name}, {"op", op}}, double(v));
  }
  FamilyBuilder class_bytes(out, "nvqos_class_bytes_total",
                            "NVMe/TCP wire bytes of the class's tenants (the sum of their nvqos_tenant_bytes_total).",
                            MetricType::Counter);
  for (const auto& ifc : s.interfaces) {
    std::map<std::string, std::array<double, NVQOS_DIR_MAX>> sums;
    for (const auto& t : ifc.tenants)
      if (!t.class_name.empty())
        for (int d = 0; d < NVQOS_DIR_MAX; ++d) sums[t.class_name][d] += double(t.stats.bytes[d]);
    for (const auto& [cls, v] : sums)
      for (int d = 0; d < NVQOS_DIR_MAX; ++d)
        class_bytes.add({{"interface", ifc.interface}, {"class", cls}, {"direction", kDirections[d]}}, v[d]);
  }
  FamilyBuilder throttled(out, "nvqos_tenant_throttled_total",
                          "Egress packets of the tenant held back by its ceiling: delayed by EDT pacing, or HTB "
                          "overlimits of its leaf (for an aggregate class the class's count, under each of its tenants).",
                          MetricType::Counter);
  FamilyBuilder balance(out, "nvqos_tenant_burst_balance_bytes",
                        "Credit the tenant may still send above its ceiling's rate (HTB ctokens of its class, in "
                        "bytes; negative while in debt).",
                        MetricType::Gauge);
  FamilyBuilder io_balance(out, "nvqos_tenant_burst_balance_ios",
                           "Commands the tenant may still send above its IOPS ceiling's rate (EDT limiter credit; "
                           "0 while commands are being delayed).",
                           MetricType::Gauge);
  for (const auto& ifc : s.interfaces) {
    // EDT delays (the kernel's count) and HTB overlimits (the leaf's) are both packets held back.
    std::map<std::string, double> held;
    for (const auto& t : ifc.tenants)
      if (t.stats.throttled_packets) held[t.name] += double(t.stats.throttled_packets);
    for (const auto& t : ifc.qos.tenants)
      if (t.throttled) held[t.tenant] += double(*t.throttled);
    for (const auto& [tenant, v] : held) throttled.add({{"interface", ifc.interface}, {"tenant", tenant}}, v);
    for (const auto& t : ifc.qos.tenants) {
      if (t.burst_balance_bytes)
        balance.add({{"interface", ifc.interface}, {"tenant", t.tenant}}, double(*t.burst_balance_bytes));
      if (t.burst_balance_ios)
        io_balance.add({{"interface", ifc.interface}, {"tenant", t.tenant}}, double(*t.burst_balance_ios));
    }
  }
}

void agent_families(std::vector<MetricFamily>& out, const Snapshot& s, const AgentStatus& st) {
  FamilyBuilder(out, "nvqos_build_info", "Version of the running agent.", MetricType::Gauge)
      .add({{"version", st.version}}, 1);
  FamilyBuilder(out, "nvqos_agent_start_time_seconds", "Start time of the agent since the Unix epoch.",
                MetricType::Gauge)
      .add({}, st.start_time_seconds);
  FamilyBuilder(out, "nvqos_config_reload_success", "1 if the last configuration load succeeded, else 0.",
                MetricType::Gauge)
      .add({}, st.last_reload_success ? 1 : 0);
  FamilyBuilder(out, "nvqos_config_last_reload_timestamp_seconds",
                "Time of the last successful configuration load since the Unix epoch.", MetricType::Gauge)
      .add({}, st.last_reload_timestamp_seconds);
  FamilyBuilder(out, "nvqos_config_reloads_total", "Configuration reloads attempted after start.", MetricType::Counter)
      .add({}, double(st.reloads_total));
  FamilyBuilder(out, "nvqos_config_reload_failures_total", "Configuration reloads refused (the last good one stays).",
                MetricType::Counter)
      .add({}, double(st.reload_failures_total));
  FamilyBuilder(out, "nvqos_config_tenants", "Tenants in force, the default tenant included.", MetricType::Gauge)
      .add({}, double(st.tenants_configured));
  FamilyBuilder feat(out, "nvqos_kernel_feature_available", "1 if the kernel offers the feature nvqos can use, else 0.",
                     MetricType::Gauge);
  for (const auto& f : st.kernel_features) feat.add({{"feature", f.name}}, f.available ? 1 : 0);
  FamilyBuilder(out, "nvqos_agent_resident_memory_bytes", "Resident memory of the agent process (RSS).",
                MetricType::Gauge)
      .add({}, double(s.resident_memory_bytes));
  FamilyBuilder(out, "nvqos_telemetry_read_duration_seconds", "Time the last read of the kernel maps took.",
                MetricType::Gauge)
      .add({}, s.read_seconds);
  FamilyBuilder(out, "nvqos_telemetry_last_read_timestamp_seconds",
                "Time of the last read of the kernel maps since the Unix epoch.", MetricType::Gauge)
      .add({}, std::chrono::duration<double>(s.taken.time_since_epoch()).count());
}

// Hitless restart and interface faults (docs/design.md, "Hitless restart").
void restart_families(std::vector<MetricFamily>& out, const Snapshot& s) {
  FamilyBuilder adopted(out, "nvqos_restart_adopted_total",
                        "Agent starts that adopted the interface's pinned data path from a previous agent "
                        "(counters continued), over the pins' lifetime.",
                        MetricType::Counter);
  FamilyBuilder maps(out, "nvqos_pinned_maps",
                     "Maps of the interface's data path by what this start did with the previous agent's pin: "
                     "created (none), reused, migrated (layout changed, entries copied), replaced (started empty).",
                     MetricType::Gauge);
  FamilyBuilder present(out, "nvqos_interface_present",
                        "1 while the interface exists and the programs are attached to it, else 0.", MetricType::Gauge);
  FamilyBuilder reattached(out, "nvqos_interface_reattached_total",
                           "Times the programs were attached again after the interface was re-created or the "
                           "filters vanished.",
                           MetricType::Counter);
  for (const auto& ifc : s.interfaces) {
    adopted.add({{"interface", ifc.interface}}, double(ifc.restart.adoptions));
    for (const char* action : {"created", "reused", "migrated", "replaced"}) {
      double n = 0;
      for (const auto& m : ifc.restart.maps) n += std::string(to_string(m.action)) == action;
      maps.add({{"interface", ifc.interface}, {"action", action}}, n);
    }
    present.add({{"interface", ifc.interface}}, ifc.restart.present ? 1 : 0);
    reattached.add({{"interface", ifc.interface}}, double(ifc.restart.reattachments));
  }
}

}  // namespace

std::string render_metrics(const Snapshot& snapshot, const AgentStatus& status) {
  std::vector<MetricFamily> families;
  tenant_families(families, snapshot);
  datapath_families(families, snapshot);
  command_families(families, snapshot);
  identity_families(families, snapshot);
  qos_families(families, snapshot);
  class_override_families(families, snapshot);
  agent_families(families, snapshot, status);
  restart_families(families, snapshot);
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace nvqos::agent
