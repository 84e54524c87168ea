#include "datapath.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <net/if.h>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>

#include "log.hpp"
#include "nvqos_datapath.skel.h"
#include "table_fill.hpp"

namespace nvqos::agent {
namespace {

constexpr const char* kXdpProgramName = "nvqos_xdp_ingress";

template <typename T>
std::size_t percpu_stride() {
  return (sizeof(T) + 7) & ~std::size_t{7};
}

// Sums a per-CPU value of u64 counters, CPU by CPU, field by field. Copied,
// not cast: the fields are __u64, which std::uint64_t may not alias (the
// optimiser then returns the zeros it initialised).
template <typename T>
T sum_percpu(const std::vector<std::uint8_t>& raw, int cpus) {
  static_assert(sizeof(T) % sizeof(__u64) == 0);
  __u64 sum[sizeof(T) / sizeof(__u64)] = {};
  for (int cpu = 0; cpu < cpus; ++cpu)
    for (std::size_t i = 0; i < std::size(sum); ++i) {
      __u64 v;
      std::memcpy(&v, raw.data() + cpu * percpu_stride<T>() + i * sizeof v, sizeof v);
      sum[i] += v;
    }
  T total;
  std::memcpy(&total, sum, sizeof total);
  return total;
}

Status map_error(int err, const char* what, const char* map) {
  return Error::from_errno(err, std::string(what) + " in map " + map, "CAP_BPF");
}

}  // namespace

void InterfaceDatapath::SkeletonDeleter::operator()(nvqos_datapath* skel) const { nvqos_datapath__destroy(skel); }

InterfaceDatapath::InterfaceDatapath(std::string ifname, int ifindex, DatapathOptions options)
    : ifname_(std::move(ifname)), ifindex_(ifindex), options_(options), possible_cpus_(libbpf_num_possible_cpus()) {}

InterfaceDatapath::~InterfaceDatapath() {
  if (keep_) {
    persist_state();
    release_attachments();
    // The HTB tree stays too: the next agent adopts it (same handle) and
    // updates it in place, so shaping never lapses.
    if (shaper_) shaper_->keep_on_exit();
    log::info("left attached and pinned for the next agent", {{"interface", ifname_}});
  }
  shaper_.reset();
  xdp_.reset();
  tc_filters_.clear();
  clsact_.reset();
  if (!keep_ && pins_) pins_->remove_all();
}

Result<std::unique_ptr<InterfaceDatapath>> InterfaceDatapath::create(const std::string& ifname,
                                                                     const DesiredState& state,
                                                                     const DatapathOptions& options) {
  unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return Error{ENODEV, "interface " + ifname + " does not exist"};
  std::unique_ptr<InterfaceDatapath> dp(new InterfaceDatapath(ifname, static_cast<int>(ifindex), options));
  if (dp->possible_cpus_ <= 0) return Error::from_errno(dp->possible_cpus_, "count possible CPUs");
  if (auto s = dp->load(state.max_flows); !s) return s.error();
  if (auto s = dp->adopt_previous(); !s) return s.error();
  if (auto s = dp->apply(state); !s) return s.error();
  if (auto s = dp->attach_tc(); !s) return s.error();
  dp->persist_state();
  return dp;
}

Status InterfaceDatapath::load(std::uint32_t max_flows) {
  nvqos_datapath* raw = nvqos_datapath__open();
  if (!raw) return Error::from_errno(errno, "open BPF object for " + ifname_);
  skel_.reset(raw);
  // XDP is loaded separately through libxdp, only when a policy needs it.
  bpf_program__set_autoload(skel_->progs.nvqos_xdp_ingress, false);
  if (int err = bpf_map__set_max_entries(skel_->maps.flow_table, max_flows))
    return Error::from_errno(err, "size flow_table to " + std::to_string(max_flows) + " entries");
  if (auto s = plan_pins(); !s) return s;
  if (int err = nvqos_datapath__load(skel_.get()))
    return Error::from_errno(err, "load BPF programs for " + ifname_ +
                                      " (the verifier log above says why; kernel needs BPF, BTF and clsact support)",
                             "CAP_BPF and CAP_PERFMON");
  identity_ = std::make_unique<IdentityDatapath>(ifname_, skel_.get(), possible_cpus_);
  return pin_loaded();
}

Status InterfaceDatapath::attach_tc() {
  auto qdisc = ClsactQdisc::ensure(ifindex_, ifname_, persisted_.created_clsact, restart_.adopted);
  if (!qdisc) return qdisc.error();
  clsact_ = std::move(qdisc).value();
  for (auto [dir, prog] : {std::pair{TcDirection::ingress, skel_->progs.nvqos_tc_ingress},
                           std::pair{TcDirection::egress, skel_->progs.nvqos_tc_egress}}) {
    auto filter = TcFilter::attach(ifindex_, ifname_, dir, bpf_program__fd(prog));
    if (!filter) return filter.error();
    tc_filters_.push_back(std::move(filter).value());
  }
  return ok_status();
}

Status InterfaceDatapath::sync_xdp(bool wanted) {
  if (!wanted) {
    xdp_.reset();
    if (pins_) pins_->unpin(kXdpProgramName);
    return ok_status();
  }
  if (xdp_) return ok_status();
  // A second instance of the same ELF whose maps are the skeleton's maps: libxdp
  // loads it as a dispatcher extension, the tc programs stay where they are.
  std::size_t size = 0;
  const void* elf = nvqos_datapath__elf_bytes(&size);
  DECLARE_LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "nvqos_xdp");
  bpf_object* obj = bpf_object__open_mem(elf, size, &open_opts);
  if (!obj) return Error::from_errno(errno, "open XDP object for " + ifname_);
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    bpf_program__set_autoload(prog, std::strcmp(bpf_program__name(prog), kXdpProgramName) == 0);
  }
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    // Internal maps (.rodata of string constants) are recreated from the same
    // ELF bytes, so both instances hold identical copies; only real maps are
    // shared. Matched by name by hand: libbpf 1.1's find_map_by_name crashes
    // on this object's internal maps.
    if (bpf_map__is_internal(map)) continue;
    bpf_map* shared = nullptr;
    bpf_map* candidate;
    bpf_object__for_each_map(candidate, skel_->obj) {
      if (!bpf_map__is_internal(candidate) && std::strcmp(bpf_map__name(candidate), bpf_map__name(map)) == 0)
        shared = candidate;
    }
    int err = shared ? bpf_map__reuse_fd(map, bpf_map__fd(shared)) : -ENOENT;
    if (err) {
      bpf_object__close(obj);
      return Error::from_errno(err, std::string("share map ") + bpf_map__name(map) + " with the XDP program");
    }
  }
  auto attached = XdpAttachment::attach(obj, kXdpProgramName, ifindex_, ifname_, options_.xdp_mode);
  if (!attached) return attached.error();
  xdp_ = std::move(attached).value();
  if (pins_) return pins_->pin_program(kXdpProgramName, xdp_->prog_fd());
  return ok_status();
}

Status InterfaceDatapath::apply(const DesiredState& next) {
  if (has_current_ && next.max_flows != current_.max_flows)
    log::warn("limits.max_flows changes only when the agent restarts",
              {{"interface", ifname_}, {"current", std::to_string(current_.max_flows)},
               {"requested", std::to_string(next.max_flows)}});
  // Order matters: HTB classes and limiter rates exist before tenants point
  // at them, tenants before rules point at them, rules before ports make new traffic NVMe/TCP,
  // and flows are re-attributed last.
  // The NQN and access maps are complete before settings turns access checks on.
  if (auto s = sync_shaper(next); !s) return s.error().with_context("apply QoS to " + ifname_);
  for (auto step : {&InterfaceDatapath::write_limiters, &InterfaceDatapath::write_tenants, &InterfaceDatapath::write_rules,
                    &InterfaceDatapath::write_ports, &InterfaceDatapath::write_identity,
                    &InterfaceDatapath::write_settings})
    if (auto s = (this->*step)(next); !s) return s.error().with_context("apply policy to " + ifname_);
  if (has_current_) {
    if (auto s = reclassify_flows(next); !s) return s.error().with_context("apply policy to " + ifname_);
    if (auto s = identity_->reattribute(next); !s) return s.error().with_context("apply policy to " + ifname_);
  }
  if (auto s = sync_xdp(next.needs_xdp); !s) {
    // Quarantine and ingress ceilings exist only in XDP; access refusals by
    // "drop" have tc drop the same packets, later in the stack.
    const bool required = std::any_of(next.tenants.begin(), next.tenants.end(), [](const TenantSlot& t) {
      return (t.flags & NVQOS_TENANT_F_DROP_INGRESS) || (t.qos.flags & NVQOS_TENANT_F_INGRESS_LIMIT);
    });
    if (required) return s.error();
    log::warn("XDP not attached: access refusals by \"drop\" are dropped in tc instead",
              {{"interface", ifname_}, {"error", s.error().message}});
  }
  std::uint32_t loaded_max_flows = has_current_ ? current_.max_flows : next.max_flows;
  current_ = next;
  current_.max_flows = loaded_max_flows;
  has_current_ = true;
  return ok_status();
}

Status InterfaceDatapath::write_tenants(const DesiredState& next) {
  bpf_map* config = skel_->maps.tenant_config;
  bpf_map* stats = skel_->maps.tenant_stats;
  std::vector<std::uint8_t> zero_stats(percpu_stride<nvqos_tenant_stats>() * possible_cpus_, 0);
  for (const auto& t : next.tenants) {
    const TenantSlot* old = has_current_ ? current_.tenant(t.id) : nullptr;
    // A slot that changes hands starts its counters from zero: Prometheus must
    // never see one tenant's counter continue another's.
    if (has_current_ && (!old || old->name != t.name)) {
      if (int err = bpf_map__update_elem(stats, &t.id, sizeof t.id, zero_stats.data(), zero_stats.size(), BPF_ANY))
        return map_error(err, "reset tenant counters", "tenant_stats");
    }
    nvqos_tenant_config value = tenant_config_for(t);
    if (int err = bpf_map__update_elem(config, &t.id, sizeof t.id, &value, sizeof value, BPF_ANY))
      return map_error(err, "write tenant", "tenant_config");
  }
  if (has_current_)
    for (const auto& t : current_.tenants)
      if (!next.tenant(t.id)) {
        nvqos_tenant_config value{};
        value.limiter_id = NVQOS_LIMITER_NONE;
        if (int err = bpf_map__update_elem(config, &t.id, sizeof t.id, &value, sizeof value, BPF_ANY))
          return map_error(err, "clear tenant", "tenant_config");
      }
  return ok_status();
}

Status InterfaceDatapath::write_rules(const DesiredState& next) {
  bpf_map* rules = skel_->maps.tenant_rules;
  for (const auto& [key, tenant] : next.rules) {
    auto it = current_.rules.find(key);
    if (has_current_ && it != current_.rules.end() && it->second == tenant) continue;
    auto k = key.to_kernel();
    nvqos_tenant_rule_value v{tenant};
    if (int err = bpf_map__update_elem(rules, &k, sizeof k, &v, sizeof v, BPF_ANY))
      return map_error(err, "write rule", "tenant_rules");
  }
  if (has_current_)
    for (const auto& [key, tenant] : current_.rules)
      if (!next.rules.count(key)) {
        auto k = key.to_kernel();
        if (int err = bpf_map__delete_elem(rules, &k, sizeof k, 0); err && err != -ENOENT)
          return map_error(err, "delete rule", "tenant_rules");
      }
  return ok_status();
}

Status InterfaceDatapath::write_ports(const DesiredState& next) {
  bpf_map* ports = skel_->maps.nvme_ports;
  for (const auto& [port, kind] : next.ports) {
    __u16 key = port;
    nvqos_port_value v{kind};
    if (int err = bpf_map__update_elem(ports, &key, sizeof key, &v, sizeof v, BPF_ANY))
      return map_error(err, "write port", "nvme_ports");
  }
  if (has_current_)
    for (const auto& [port, kind] : current_.ports)
      if (!next.ports.count(port)) {
        __u16 key = port;
        if (int err = bpf_map__delete_elem(ports, &key, sizeof key, 0); err && err != -ENOENT)
          return map_error(err, "delete port", "nvme_ports");
      }
  // The bitmap is the fast path's copy of the same set; settings enables it
  // only after this write (write_settings runs last).
  auto bitmap = std::make_unique<nvqos_port_bitmap>();
  for (const auto& [port, kind] : next.ports) bitmap->bits[port / 64] |= 1ull << (port % 64);
  __u32 zero = 0;
  if (int err = bpf_map__update_elem(skel_->maps.nvme_port_bitmap, &zero, sizeof zero, bitmap.get(), sizeof *bitmap,
                                     BPF_ANY))
    return map_error(err, "write port bitmap", "nvme_port_bitmap");
  return ok_status();
}

Status InterfaceDatapath::write_identity(const DesiredState& next) { return identity_->apply(next); }

Status InterfaceDatapath::write_settings(const DesiredState& next) {
  __u32 key = 0;
  nvqos_settings v{};
  v.flags = next.settings_flags;
  if (int err = bpf_map__update_elem(skel_->maps.settings, &key, sizeof key, &v, sizeof v, BPF_ANY))
    return map_error(err, "write settings", "settings");
  return ok_status();
}

// Flows cache their tenant; after rules change, each flow is looked up again
// through the kernel's own LPM trie (so user space cannot disagree with the
// data path) and re-attributed, or forgotten when no tenant takes it any more.
Status InterfaceDatapath::reclassify_flows(const DesiredState& next) {
  if (next.rules == current_.rules && next.ports == current_.ports && next.settings_flags == current_.settings_flags)
    return ok_status();
  bpf_map* flows = skel_->maps.flow_table;
  bpf_map* rules = skel_->maps.tenant_rules;
  auto lookup_tenant = [&](const nvqos_flow_key& fk, __u16 service_port_be) -> std::uint32_t {
    for (__u16 port : {service_port_be, static_cast<__u16>(0)}) {
      nvqos_tenant_rule_key rk{};
      rk.prefixlen = NVQOS_RULE_PORT_BITS + NVQOS_RULE_ADDR_BITS;
      rk.port = port;
      std::memcpy(rk.addr, fk.remote_addr, sizeof rk.addr);
      nvqos_tenant_rule_value v{};
      if (bpf_map__lookup_elem(rules, &rk, sizeof rk, &v, sizeof v, 0) == 0) return v.tenant_id;
    }
    return (next.settings_flags & NVQOS_SETTINGS_F_DEFAULT_TENANT) ? NVQOS_TENANT_DEFAULT : NVQOS_TENANT_NONE;
  };
  std::vector<nvqos_flow_key> keys;
  nvqos_flow_key key{}, next_key{};
  const void* prev = nullptr;
  while (bpf_map__get_next_key(flows, prev, &next_key, sizeof next_key) == 0) {
    keys.push_back(next_key);
    key = next_key;
    prev = &key;
  }
  std::size_t moved = 0, dropped = 0;
  for (const auto& fk : keys) {
    nvqos_flow_value fv{};
    if (bpf_map__lookup_elem(flows, &fk, sizeof fk, &fv, sizeof fv, 0)) continue;  // evicted meanwhile
    __u16 service_port_be = fv.role == NVQOS_ROLE_TARGET ? fk.local_port : fk.remote_port;
    bool still_nvme = next.ports.count(ntohs(service_port_be)) > 0;
    std::uint32_t tenant = still_nvme ? lookup_tenant(fk, service_port_be) : NVQOS_TENANT_NONE;
    if (tenant == fv.tenant_id) continue;
    if (tenant == NVQOS_TENANT_NONE) {
      bpf_map__delete_elem(flows, &fk, sizeof fk, 0);
      ++dropped;
      continue;
    }
    fv.tenant_id = tenant;
    if (bpf_map__update_elem(flows, &fk, sizeof fk, &fv, sizeof fv, BPF_EXIST) == 0) ++moved;
  }
  if (moved || dropped)
    log::info("re-attributed flows after policy change",
              {{"interface", ifname_}, {"moved", std::to_string(moved)}, {"forgotten", std::to_string(dropped)}});
  return ok_status();
}

Result<InterfaceCounters> InterfaceDatapath::read_counters() const {
  InterfaceCounters out;
  out.interface = ifname_;
  out.flow_capacity = bpf_map__max_entries(skel_->maps.flow_table);
  out.attachments = attachments();
  out.restart = restart_;

  std::vector<std::uint8_t> raw(percpu_stride<nvqos_tenant_stats>() * possible_cpus_);
  for (const auto& t : current_.tenants) {
    if (!(t.flags & NVQOS_TENANT_F_ACTIVE)) continue;
    if (int err = bpf_map__lookup_elem(skel_->maps.tenant_stats, &t.id, sizeof t.id, raw.data(), raw.size(), 0))
      return Error::from_errno(err, "read tenant_stats of " + ifname_);
    out.tenants.push_back({t.id, t.name, sum_percpu<nvqos_tenant_stats>(raw, possible_cpus_), t.class_name});
  }
  read_qos(out);
  std::vector<std::uint8_t> dp_raw(percpu_stride<nvqos_datapath_stats>() * possible_cpus_);
  __u32 zero = 0;
  if (int err = bpf_map__lookup_elem(skel_->maps.datapath_stats, &zero, sizeof zero, dp_raw.data(), dp_raw.size(), 0))
    return Error::from_errno(err, "read datapath_stats of " + ifname_);
  out.datapath = sum_percpu<nvqos_datapath_stats>(dp_raw, possible_cpus_);
  for (auto [name, prog] : {std::pair{"tc_ingress", skel_->progs.nvqos_tc_ingress},
                            std::pair{"tc_egress", skel_->progs.nvqos_tc_egress}}) {
    bpf_prog_info info{};
    __u32 len = sizeof info;
    if (int err = bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len))
      return Error::from_errno(err, std::string("read program info of ") + name + " on " + ifname_);
    out.programs.push_back({name, info.run_time_ns, info.run_cnt});
  }
  if (auto st = read_commands(out); !st) return st.error();
  if (auto st = identity_->read(out.identity); !st) return st.error();
  // nvme_conns follows flow_table; its values are too large to count every interval.
  out.tables = {
      {"flow_table", count_map_entries(skel_->maps.flow_table), bpf_map__max_entries(skel_->maps.flow_table)},
      {"handshakes", count_map_entries(skel_->maps.handshakes), bpf_map__max_entries(skel_->maps.handshakes)},
      {"inflight_cmds", out.inflight_entries, bpf_map__max_entries(skel_->maps.inflight_cmds)},
      {"access_conns", out.identity.gated_connections, bpf_map__max_entries(skel_->maps.access_conns)}};
  return out;
}

Status InterfaceDatapath::watch_slow_commands(boost::asio::io_context& io) {
  return slow_events_.open_records<nvqos_slow_cmd_event>(
      io, skel_->maps.slow_cmd_events, "slow-command events", ifname_,
      [this](const nvqos_slow_cmd_event& e) { on_slow_command(e); });
}

Status InterfaceDatapath::watch_connects(boost::asio::io_context& io) { return identity_->watch(io); }

std::vector<FlowIdentity> InterfaceDatapath::flow_identities() const { return identity_->flows(); }

void InterfaceDatapath::on_slow_command(const nvqos_slow_cmd_event& e) {
  ++slow_received_;
  const TenantSlot* tenant = current_.tenant(e.tenant_id);
  if (options_.slow_command_sink)
    options_.slow_command_sink(ifname_, e, tenant ? tenant->name : "id:" + std::to_string(e.tenant_id));
  if (!slow_log_limit_.allow(std::chrono::steady_clock::now())) return;
  char local[INET6_ADDRSTRLEN] = "", remote[INET6_ADDRSTRLEN] = "";
  inet_ntop(AF_INET6, e.flow.local_addr, local, sizeof local);
  inet_ntop(AF_INET6, e.flow.remote_addr, remote, sizeof remote);
  log::info("slow NVMe command",
            {{"interface", ifname_},
             {"tenant", tenant ? tenant->name : "id:" + std::to_string(e.tenant_id)},
             {"op", cmd_op_name(e.op)},
             {"role", cmd_role_name(e.role)},
             {"cid", std::to_string(e.cid)},
             {"opcode", std::to_string(e.opcode)},
             {"latency_us", std::to_string(e.latency_ns / 1000)},
             {"bytes", std::to_string(e.bytes)},
             {"status", std::to_string(e.status)},
             {"local", std::string(local) + "." + std::to_string(ntohs(e.flow.local_port))},
             {"remote", std::string(remote) + "." + std::to_string(ntohs(e.flow.remote_port))}});
}

std::uint64_t CommandCounters::in_flight() const {
  const std::uint64_t done = stats.completed + stats.aborted + stats.lost + timeouts;
  return stats.submitted > done ? stats.submitted - done : 0;
}

// Deletes commands older than the command timeout and counts them per key:
// whoever deletes an entry (tc on completion, or this sweep) owns it.
Status InterfaceDatapath::sweep_inflight(std::uint64_t& remaining) const {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the clock of bpf_ktime_get_ns()
  const std::uint64_t now_ns = std::uint64_t(ts.tv_sec) * 1000000000ull + std::uint64_t(ts.tv_nsec);
  const std::uint64_t timeout_ns = std::chrono::nanoseconds(options_.command_timeout).count();
  bpf_map* map = skel_->maps.inflight_cmds;
  std::vector<nvqos_inflight_key> expired;
  nvqos_inflight_key key{}, next{};
  const nvqos_inflight_key* prev = nullptr;
  remaining = 0;
  while (bpf_map__get_next_key(map, prev, &next, sizeof next) == 0) {
    key = next;
    prev = &key;
    nvqos_inflight_value value{};
    if (bpf_map__lookup_elem(map, &key, sizeof key, &value, sizeof value, 0) != 0) continue;  // completed meanwhile
    if (now_ns > value.submit_ns && now_ns - value.submit_ns > timeout_ns)
      expired.push_back(key);
    else
      ++remaining;
  }
  for (const auto& k : expired) {
    nvqos_inflight_value value{};
    if (bpf_map__lookup_elem(map, &k, sizeof k, &value, sizeof value, 0) != 0) continue;
    if (bpf_map__delete_elem(map, &k, sizeof k, 0) != 0) continue;  // tc completed it first
    ++timeouts_[CommandKey{value.tenant_id, value.op, value.role}];
  }
  return ok_status();
}

Status InterfaceDatapath::read_commands(InterfaceCounters& out) const {
  __u32 zero = 0;
  std::vector<std::uint8_t> nvme_raw(percpu_stride<nvqos_nvme_stats>() * possible_cpus_);
  if (int err = bpf_map__lookup_elem(skel_->maps.nvme_stats, &zero, sizeof zero, nvme_raw.data(), nvme_raw.size(), 0))
    return Error::from_errno(err, "read nvme_stats of " + ifname_);
  out.nvme = sum_percpu<nvqos_nvme_stats>(nvme_raw, possible_cpus_);
  out.slow_commands_received = slow_received_;
  if (auto st = sweep_inflight(out.inflight_entries); !st) return st;

  const auto now = LatencyWindow::Clock::now();
  std::vector<std::uint8_t> raw(percpu_stride<nvqos_cmd_stats>() * possible_cpus_);
  auto hist = std::make_unique<nvqos_cmd_hist>();
  nvqos_cmd_key key{}, next{};
  const nvqos_cmd_key* prev = nullptr;
  while (bpf_map__get_next_key(skel_->maps.cmd_stats, prev, &next, sizeof next) == 0) {
    key = next;
    prev = &key;
    if (bpf_map__lookup_elem(skel_->maps.cmd_stats, &key, sizeof key, raw.data(), raw.size(), 0) != 0) continue;
    CommandCounters c;
    c.key = CommandKey{key.tenant_id, key.op, key.role};
    const TenantSlot* tenant = current_.tenant(key.tenant_id);
    c.tenant = tenant ? tenant->name : "id:" + std::to_string(key.tenant_id);
    c.stats = sum_percpu<nvqos_cmd_stats>(raw, possible_cpus_);
    if (auto it = timeouts_.find(c.key); it != timeouts_.end()) c.timeouts = it->second;
    if (bpf_map__lookup_elem(skel_->maps.cmd_latency, &key, sizeof key, hist.get(), sizeof *hist, 0) == 0) {
      c.latency.assign(std::begin(hist->buckets), std::end(hist->buckets));
      auto [it, inserted] = latency_windows_.try_emplace(c.key, options_.latency_window);
      // Adopted histograms hold a previous agent's history: the window starts now.
      if (inserted && restart_.adopted) it->second.prime(c.latency);
      else it->second.update(now, c.latency);
      const LogLinearHistogram window = it->second.histogram();
      c.window_count = window.count();
      if (!window.empty())
        for (double q : kLatencyQuantiles) c.window_quantiles.emplace_back(q, double(window.quantile(q)) / 1e9);
    }
    out.commands.push_back(std::move(c));
  }
  return ok_status();
}

std::vector<Attachment> InterfaceDatapath::attachments() const {
  std::vector<Attachment> out;
  for (const auto& f : tc_filters_) out.push_back({std::string("tc_") + to_string(f->direction()), "clsact", false});
  if (xdp_) out.push_back({"xdp", to_string(xdp_->mode()), !xdp_->shared_via_dispatcher()});
  return out;
}

}  // namespace nvqos::agent
