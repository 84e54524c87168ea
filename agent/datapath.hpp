// The data path of one interface: its own instance of the BPF object (so every
// counter carries its interface), its tc and XDP attachments, and the map
// contents. apply() moves the maps from the current to a new DesiredState by
// difference, without detaching anything.
#pragma once

#include <bpf/libbpf.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "flows.hpp"
#include "identity_datapath.hpp"
#include "kernel_objects.hpp"
#include "nvqos/abi.h"
#include "pinning.hpp"
#include "policy.hpp"
#include "result.hpp"
#include "ring_buffer_reader.hpp"
#include "table_fill.hpp"
#include "shaper.hpp"

struct nvqos_datapath;  // generated skeleton

namespace nvqos::agent {

struct DatapathOptions {
  XdpMode xdp_mode = XdpMode::best;
  // A tracked NVMe command older than this is deleted and counted as a timeout.
  std::chrono::seconds command_timeout{60};
  // Window of the command latency quantiles.
  std::chrono::seconds latency_window{60};
  ShaperOptions shaper;
  // bpffs directory under which each interface's maps and programs are
  // pinned for a hitless restart (docs/operations.md); empty: no pinning.
  std::string pin_root;
  // Receives every slow-command record (the log keeps only a few per second).
  std::function<void(const std::string& ifname, const nvqos_slow_cmd_event&, const std::string& tenant)>
      slow_command_sink;
};

// How this interface's data path came to be, for /metrics and the admin API.
struct RestartInfo {
  bool adopted = false;           // this start took over a previous agent's pins
  std::uint64_t adoptions = 0;    // starts that adopted, over the pins' lifetime
  std::uint64_t reattachments = 0;  // the interface came back and was attached again
  bool present = true;            // the interface exists (and the programs are attached)
  std::vector<MapOutcome> maps;
};

struct Attachment {
  std::string hook;  // "tc_ingress", "tc_egress", "xdp"
  std::string mode;  // "clsact", "native", "generic"
  bool exclusive = false;  // holds the hook alone (XDP without libxdp's dispatcher)
};

struct TenantCounters {
  std::uint32_t id = 0;
  std::string name;
  nvqos_tenant_stats stats{};  // summed over CPUs
  std::string class_name;      // QoS class, "" when none
};

// NVMe commands of one (tenant, op, role): counters since the programs were loaded.
struct CommandCounters {
  CommandKey key;
  std::string tenant;
  nvqos_cmd_stats stats{};                 // summed over CPUs
  std::uint64_t timeouts = 0;              // swept by the agent
  std::vector<std::uint64_t> latency;      // fine kernel histogram (ns buckets), cumulative
  std::uint64_t window_count = 0;          // completions in the latency window
  std::vector<std::pair<double, double>> window_quantiles;  // (quantile, seconds); empty if none

  // Commands tracked and not yet completed, aborted, lost or timed out.
  std::uint64_t in_flight() const;
};

// Kernel run statistics of one attached program; zero unless the host enables them
// (sysctl kernel.bpf_stats_enabled=1: they cost ~20 ns per run, so they are off by default).
struct ProgramStats {
  std::string program;  // "tc_ingress", "tc_egress"
  std::uint64_t run_time_ns = 0;
  std::uint64_t runs = 0;
};

struct InterfaceCounters {
  std::string interface;
  std::vector<TenantCounters> tenants;
  std::vector<CommandCounters> commands;
  nvqos_nvme_stats nvme{};           // summed over CPUs
  std::uint64_t inflight_entries = 0;  // entries of inflight_cmds after the sweep
  std::uint64_t slow_commands_received = 0;  // records read from slow_cmd_events
  nvqos_datapath_stats datapath{};  // summed over CPUs
  IdentityCounters identity;        // Connect inspection and access control
  std::uint32_t flow_capacity = 0;
  std::vector<TableFill> tables;  // fill of the bounded (LRU) tables
  std::vector<Attachment> attachments;
  std::vector<ProgramStats> programs;
  RestartInfo restart;
  QosCounters qos;
};

class InterfaceDatapath {
 public:
  static Result<std::unique_ptr<InterfaceDatapath>> create(const std::string& ifname, const DesiredState& state,
                                                           const DatapathOptions& options);
  ~InterfaceDatapath();
  InterfaceDatapath(const InterfaceDatapath&) = delete;
  InterfaceDatapath& operator=(const InterfaceDatapath&) = delete;

  // Moves the maps (and the XDP attachment) to `next`. On error the data path
  // is left as consistent as the kernel allows and the error says what failed.
  Status apply(const DesiredState& next);
  // Also sweeps timed-out commands and advances the latency windows: call it
  // once per telemetry interval.
  Result<InterfaceCounters> read_counters() const;

  // Reads slow_cmd_events on `io` from now on: every record is counted and
  // logged, at most kSlowCommandLogsPerSecond per second (the kernel already
  // rate-limits what it sends).
  Status watch_slow_commands(boost::asio::io_context& io);
  // Reads connect_events on `io` from now on (agent/identity_datapath.hpp).
  Status watch_connects(boost::asio::io_context& io);
  // The NQNs, queue and tenant of every open connection whose Connect was seen.
  std::vector<FlowIdentity> flow_identities() const;

  const std::string& interface() const { return ifname_; }
  std::vector<Attachment> attachments() const;

  // Hitless restart (datapath_restart.cpp). keep_on_exit(): the destructor
  // leaves programs, filters, qdiscs and pins in place for the next agent.
  void keep_on_exit() { keep_ = true; }
  // Saves what the next agent needs (tenant ids, the agent's own counters).
  void persist_state();
  const RestartInfo& restart_info() const { return restart_; }
  // Re-attaches when the interface was re-created or our filters vanished;
  // called on link events and every telemetry interval.
  void check_attachment();

  // Inspection for the admin API (datapath_inspect.cpp): every flow_table
  // entry, the fill level of every map, the loaded programs.
  std::vector<FlowRow> flows() const;
  struct MapFill {
    std::string name;
    std::string type;
    std::uint32_t capacity = 0;
    std::optional<std::uint64_t> entries;  // counted for hash-like maps; arrays are always full
  };
  std::vector<MapFill> map_fill() const;
  struct ProgramInfo {
    std::string name;
    std::uint32_t id = 0;
    std::string hook;  // "tc_ingress", "tc_egress", "xdp"
  };
  std::vector<ProgramInfo> programs() const;
  std::string pin_dir() const { return pins_ ? pins_->dir() : ""; }
  // Egress/ingress mechanisms in force and limits they cannot enforce.
  QosCounters qos_status() const;
  // Only the QoS rates of `next`, whose tenants, rules and classes are the
  // current ones: the HTB classes and the limiters' rates, by difference
  // (datapath_slo.cpp). For the SLO controller's effective ceilings, several
  // times a second.
  Status apply_rates(const DesiredState& next);

 private:
  InterfaceDatapath(std::string ifname, int ifindex, DatapathOptions options);
  Status load(std::uint32_t max_flows);
  Status attach_tc();
  Status sync_xdp(bool wanted);
  Status write_ports(const DesiredState& next);
  Status write_rules(const DesiredState& next);
  Status write_tenants(const DesiredState& next);
  Status write_limiters(const DesiredState& next) { return update_limiters(next, false); }
  // A limiter whose rates change starts afresh on a reload; the SLO controller's
  // changes (several a second) keep its clocks (`keep_clocks`), or each would
  // hand the class a fresh burst just when a protected class is at risk.
  Status update_limiters(const DesiredState& next, bool keep_clocks);
  // QoS (datapath_qos.cpp): the HTB tree, and the tenant_config fields that
  // depend on what this interface's kernel offers.
  Status sync_shaper(const DesiredState& next, bool log_mechanisms = true);
  nvqos_tenant_config tenant_config_for(const TenantSlot& t) const;
  void read_qos(InterfaceCounters& out) const;
  // The tenant's EDT IOPS burst balance (commands); nullopt without EDT or an IOPS ceiling.
  std::optional<std::uint64_t> edt_io_balance(const TenantSlot& t) const;
  Status write_settings(const DesiredState& next);
  Status write_identity(const DesiredState& next);
  Status reclassify_flows(const DesiredState& next);
  Status read_commands(InterfaceCounters& out) const;
  void on_slow_command(const nvqos_slow_cmd_event& event);
  Status sweep_inflight(std::uint64_t& remaining) const;
  Status plan_pins();
  Status pin_loaded();
  Status adopt_previous();
  void release_attachments();
  Status reattach(int ifindex);

  struct SkeletonDeleter {
    void operator()(nvqos_datapath* skel) const;
  };

  std::string ifname_;
  int ifindex_;
  DatapathOptions options_;
  std::unique_ptr<nvqos_datapath, SkeletonDeleter> skel_;
  // Declared after skel_ so they detach before the programs are unloaded, and
  // the filters after the qdisc so they go first.
  std::unique_ptr<ClsactQdisc> clsact_;
  std::vector<std::unique_ptr<TcFilter>> tc_filters_;
  std::unique_ptr<XdpAttachment> xdp_;
  std::unique_ptr<IdentityDatapath> identity_;
  std::unique_ptr<Shaper> shaper_;
  std::vector<UnenforcedLimit> unenforced_;
  DesiredState current_;
  bool has_current_ = false;
  int possible_cpus_;
  // Telemetry state that read_counters() advances (hence mutable).
  mutable std::map<CommandKey, LatencyWindow> latency_windows_;
  mutable std::map<CommandKey, std::uint64_t> timeouts_;
  RingBufferReader slow_events_;
  std::uint64_t slow_received_ = 0;
  LogRateLimiter slow_log_limit_{kSlowCommandLogsPerSecond};
  std::optional<InterfacePins> pins_;
  PersistedState persisted_;
  RestartInfo restart_;
  bool keep_ = false;
};

}  // namespace nvqos::agent
