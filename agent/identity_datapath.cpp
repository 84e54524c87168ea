#include "identity_datapath.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "log.hpp"
#include "nvqos_datapath.skel.h"
#include "policy.hpp"

namespace nvqos::agent {
namespace {

template <typename T>
std::string bytes_of(const T& v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}

nvqos_nqn make_nqn(const std::string& s) {
  nvqos_nqn n{};
  std::memcpy(n.name, s.data(), std::min<std::size_t>(s.size(), NVQOS_NQN_LEN - 1));
  return n;
}

std::array<std::uint8_t, sizeof(nvqos_flow_key)> flow_id(const nvqos_flow_key& k) {
  std::array<std::uint8_t, sizeof(nvqos_flow_key)> a{};
  std::memcpy(a.data(), &k, sizeof k);
  return a;
}

std::uint64_t coarse_now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // the clock of bpf_ktime_get_coarse_ns()
  return std::uint64_t(ts.tv_sec) * 1000000000ull + std::uint64_t(ts.tv_nsec);
}

const char* verdict_name(std::uint8_t v) {
  switch (v) {
    case NVQOS_ACCESS_UNPROTECTED: return "unprotected";
    case NVQOS_ACCESS_ALLOWED: return "allowed";
    case NVQOS_ACCESS_DENIED: return "denied";
    case NVQOS_ACCESS_DRY_RUN_DENIED: return "dry_run_denied";
    default: return "not_checked";
  }
}

constexpr const char* kUnknownSubsystem = "(unknown)";

}  // namespace

std::string nqn_to_string(const nvqos_nqn& nqn) {
  const char* p = reinterpret_cast<const char*>(nqn.name);
  return std::string(p, strnlen(p, NVQOS_NQN_LEN));
}

std::string flow_endpoint(const std::uint8_t addr[16], std::uint16_t port_be) {
  char buf[INET6_ADDRSTRLEN] = "";
  static const std::uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(addr, v4_prefix, 12) == 0) {
    inet_ntop(AF_INET, addr + 12, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(port_be));
  }
  inet_ntop(AF_INET6, addr, buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(ntohs(port_be));
}

IdentityDatapath::IdentityDatapath(std::string ifname, nvqos_datapath* skel, int possible_cpus)
    : ifname_(std::move(ifname)), skel_(skel), possible_cpus_(possible_cpus) {}

IdentityDatapath::~IdentityDatapath() = default;

std::uint32_t IdentityDatapath::subsys_id(const std::string& nqn) {
  auto it = subsys_ids_.find(nqn);
  if (it != subsys_ids_.end()) return it->second;
  std::uint32_t id = NVQOS_ACCESS_SUBSYS_UNKNOWN + 1;  // 0 = unknown subsystem
  for (const auto& [name, used] : subsys_ids_) id = std::max(id, used + 1);
  subsys_ids_[nqn] = id;
  return id;
}

std::map<IdentityDatapath::KeyBytes, std::string> IdentityDatapath::nqn_entries(
    const std::map<std::string, std::uint32_t>& m) const {
  std::map<KeyBytes, std::string> out;
  for (const auto& [nqn, tenant] : m) out[bytes_of(make_nqn(nqn))] = bytes_of(nvqos_nqn_tenant{tenant});
  return out;
}

void IdentityDatapath::access_entries(const IdentityState& st, std::map<KeyBytes, std::string>& subsystems,
                                      std::map<KeyBytes, std::string>& hosts, std::map<KeyBytes, std::string>& cidrs,
                                      std::map<KeyBytes, std::string>& ports) {
  const std::uint32_t one = 1;
  for (const auto& a : st.access) {
    const std::uint32_t id = subsys_id(a.nqn);
    nvqos_access_subsys v{id, (a.enforce ? NVQOS_ACCESS_F_ENFORCE : 0u) | (a.hosts.empty() ? 0u : NVQOS_ACCESS_F_HOSTS) |
                                  (a.initiators.empty() ? 0u : NVQOS_ACCESS_F_CIDRS) |
                                  (a.reset ? NVQOS_ACCESS_F_RESET : 0u)};
    for (auto port : a.ports) {
      nvqos_access_subsys_key k{};
      k.sub = make_nqn(a.nqn);
      k.port = port;
      subsystems[bytes_of(k)] = bytes_of(v);
    }
    for (const auto& h : a.hosts) {
      nvqos_access_host_key k{};
      k.subsys_id = id;
      k.host = make_nqn(h);
      hosts[bytes_of(k)] = bytes_of(one);
    }
    for (const auto& p : a.initiators) {
      nvqos_access_cidr_key k{};
      k.prefixlen = NVQOS_ACCESS_CIDR_ID_BITS + p.length;
      k.subsys_id = htonl(id);
      std::memcpy(k.addr, p.addr.data(), sizeof k.addr);
      cidrs[bytes_of(k)] = bytes_of(one);
    }
  }
  for (const auto& [port, flags] : st.access_ports) {
    const __u16 key = port;
    ports[bytes_of(key)] = bytes_of(nvqos_access_port{flags});
  }
}

Status IdentityDatapath::sync_map(bpf_map* map, const std::map<KeyBytes, std::string>& old_entries,
                                  const std::map<KeyBytes, std::string>& new_entries, const char* name) {
  for (const auto& [k, v] : new_entries) {
    auto it = old_entries.find(k);
    if (it != old_entries.end() && it->second == v) continue;
    if (int err = bpf_map__update_elem(map, k.data(), k.size(), v.data(), v.size(), BPF_ANY))
      return Error::from_errno(err, std::string("write map ") + name + " of " + ifname_, "CAP_BPF");
  }
  for (const auto& [k, v] : old_entries)
    if (!new_entries.count(k))
      if (int err = bpf_map__delete_elem(map, k.data(), k.size(), 0); err && err != -ENOENT)
        return Error::from_errno(err, std::string("delete from map ") + name + " of " + ifname_, "CAP_BPF");
  return ok_status();
}

Status IdentityDatapath::clear_pair_cache() {
  bpf_map* map = skel_->maps.nqn_pair_tenants;
  std::vector<nvqos_nqn_pair> keys;
  auto key = std::make_unique<nvqos_nqn_pair>();
  auto next = std::make_unique<nvqos_nqn_pair>();
  const void* prev = nullptr;
  while (bpf_map__get_next_key(map, prev, next.get(), sizeof *next) == 0) {
    keys.push_back(*next);
    *key = *next;
    prev = key.get();
  }
  for (const auto& k : keys) bpf_map__delete_elem(map, &k, sizeof k, 0);
  return ok_status();
}

// Every key a map holds, with empty values: what a previous agent left in
// adopted (pinned) maps is compared with the new policy like our own writes.
std::map<IdentityDatapath::KeyBytes, std::string> IdentityDatapath::kernel_keys(bpf_map* map) const {
  std::map<KeyBytes, std::string> out;
  const std::size_t size = bpf_map__key_size(map);
  std::string key(size, '\0'), next(size, '\0');
  const void* prev = nullptr;
  while (bpf_map__get_next_key(map, prev, next.data(), size) == 0) {
    out.emplace(next, std::string());
    key = next;
    prev = key.data();
  }
  return out;
}

Status IdentityDatapath::apply(const DesiredState& next) {
  const IdentityState& st = next.identity;
  tenant_names_.clear();
  for (const auto& t : next.tenants) tenant_names_[t.id] = t.name;
  settings_flags_ = next.settings_flags;

  std::map<KeyBytes, std::string> old_sub, old_host, old_cidr, old_port, new_sub, new_host, new_cidr, new_port;
  std::map<KeyBytes, std::string> old_subs, old_hosts;
  if (!applied_) {
    // Keep the subsystem ids of adopted maps, so their counters stay theirs.
    for (const auto& [k, v] : kernel_keys(skel_->maps.access_subsystems)) {
      nvqos_access_subsys_key key{};
      nvqos_access_subsys value{};
      std::memcpy(&key, k.data(), sizeof key);
      if (bpf_map__lookup_elem(skel_->maps.access_subsystems, &key, sizeof key, &value, sizeof value, 0) == 0 &&
          value.subsys_id > NVQOS_ACCESS_SUBSYS_UNKNOWN && value.subsys_id < NVQOS_MAX_ACCESS_SUBSYS)
        subsys_ids_[nqn_to_string(key.sub)] = value.subsys_id;
    }
    old_sub = kernel_keys(skel_->maps.access_subsystems);
    old_host = kernel_keys(skel_->maps.access_hosts);
    old_cidr = kernel_keys(skel_->maps.access_cidrs);
    old_port = kernel_keys(skel_->maps.access_ports);
    old_subs = kernel_keys(skel_->maps.sub_nqn_tenants);
    old_hosts = kernel_keys(skel_->maps.host_nqn_tenants);
  } else {
    access_entries(current_, old_sub, old_host, old_cidr, old_port);
    old_subs = nqn_entries(current_.subs);
    old_hosts = nqn_entries(current_.hosts);
  }
  access_entries(st, new_sub, new_host, new_cidr, new_port);
  // Lists before the subsystems that point at them, ports last: a port is
  // gated only once its rules are complete.
  if (auto s = sync_map(skel_->maps.access_hosts, old_host, new_host, "access_hosts"); !s) return s;
  if (auto s = sync_map(skel_->maps.access_cidrs, old_cidr, new_cidr, "access_cidrs"); !s) return s;
  if (auto s = sync_map(skel_->maps.access_subsystems, old_sub, new_sub, "access_subsystems"); !s) return s;
  if (auto s = sync_map(skel_->maps.access_ports, old_port, new_port, "access_ports"); !s) return s;

  if (auto s = sync_map(skel_->maps.sub_nqn_tenants, old_subs, nqn_entries(st.subs), "sub_nqn_tenants"); !s) return s;
  if (auto s = sync_map(skel_->maps.host_nqn_tenants, old_hosts, nqn_entries(st.hosts), "host_nqn_tenants"); !s)
    return s;
  // Cached resolutions may be wrong under new rules: start over from the exact pairs.
  if (!applied_ || st.rules != current_.rules || st.pairs != current_.pairs) {
    if (auto s = clear_pair_cache(); !s) return s;
    for (const auto& [pair, tenant] : st.pairs) {
      nvqos_nqn_pair k{make_nqn(pair.first), make_nqn(pair.second)};
      nvqos_nqn_tenant v{tenant};
      if (int err = bpf_map__update_elem(skel_->maps.nqn_pair_tenants, &k, sizeof k, &v, sizeof v, BPF_ANY))
        return Error::from_errno(err, "write map nqn_pair_tenants of " + ifname_, "CAP_BPF");
    }
  }
  current_ = st;
  applied_ = true;
  return ok_status();
}

// The tenant the address rules give a flow, looked up through the kernel's own trie.
std::uint32_t IdentityDatapath::address_tenant(const nvqos_flow_key& fk, std::uint8_t role) const {
  const __u16 service_port_be = role == NVQOS_ROLE_TARGET ? fk.local_port : fk.remote_port;
  for (__u16 port : {service_port_be, static_cast<__u16>(0)}) {
    nvqos_tenant_rule_key rk{};
    rk.prefixlen = NVQOS_RULE_PORT_BITS + NVQOS_RULE_ADDR_BITS;
    rk.port = port;
    std::memcpy(rk.addr, fk.remote_addr, sizeof rk.addr);
    nvqos_tenant_rule_value v{};
    if (bpf_map__lookup_elem(skel_->maps.tenant_rules, &rk, sizeof rk, &v, sizeof v, 0) == 0) return v.tenant_id;
  }
  return (settings_flags_ & NVQOS_SETTINGS_F_DEFAULT_TENANT) ? NVQOS_TENANT_DEFAULT : NVQOS_TENANT_NONE;
}

Status IdentityDatapath::reattribute(const DesiredState& next) {
  std::size_t moved = 0;
  for (auto& [id, fi] : flows_) {
    nvqos_flow_value fv{};
    if (bpf_map__lookup_elem(skel_->maps.flow_table, &fi.flow, sizeof fi.flow, &fv, sizeof fv, 0)) continue;
    auto by_nqn = fi.hostnqn.empty() ? std::nullopt : next.identity.resolve(fi.hostnqn, fi.subnqn);
    const std::uint32_t tenant = by_nqn ? *by_nqn : address_tenant(fi.flow, fv.role);
    fi.tenant_by_nqn = by_nqn.has_value();
    if (tenant == NVQOS_TENANT_NONE || tenant == fv.tenant_id) continue;
    fv.tenant_id = tenant;
    if (bpf_map__update_elem(skel_->maps.flow_table, &fi.flow, sizeof fi.flow, &fv, sizeof fv, BPF_EXIST) == 0) {
      fi.tenant_id = tenant;
      auto it = tenant_names_.find(tenant);
      fi.tenant = it != tenant_names_.end() ? it->second : "id:" + std::to_string(tenant);
      ++moved;
    }
  }
  if (moved)
    log::info("re-attributed connections by NQN after policy change",
              {{"interface", ifname_}, {"moved", std::to_string(moved)}});
  return ok_status();
}

Status IdentityDatapath::watch(boost::asio::io_context& io) {
  return events_.open_records<nvqos_connect_event>(io, skel_->maps.connect_events, "Connect events", ifname_,
                                                    [this](const nvqos_connect_event& e) { on_event(e); });
}

void IdentityDatapath::on_event(const nvqos_connect_event& e) {
  ++events_received_;
  FlowIdentity fi;
  fi.flow = e.flow;
  fi.qid = e.qid;
  fi.cntlid = e.cntlid;
  fi.role = e.role;
  fi.verdict = e.verdict;
  fi.tenant_id = e.tenant_id;
  fi.tenant_by_nqn = e.flags & NVQOS_CONNECT_F_TENANT_SET;
  fi.connected = std::chrono::system_clock::now();
  const bool parsed = !(e.flags & NVQOS_CONNECT_F_UNPARSED);
  if (parsed) {
    fi.hostnqn = nqn_to_string(e.hostnqn);
    fi.subnqn = nqn_to_string(e.subnqn);
  }
  // The kernel had no decisive entry: resolve (globs included), move the flow
  // and cache the answer so the pair's next connections are resolved in the kernel.
  if (parsed && !fi.tenant_by_nqn && !current_.rules.empty()) {
    const auto tenant = current_.resolve(fi.hostnqn, fi.subnqn);
    nvqos_nqn_pair k{e.hostnqn, e.subnqn};
    nvqos_nqn_tenant v{tenant.value_or(NVQOS_TENANT_NONE)};
    bpf_map__update_elem(skel_->maps.nqn_pair_tenants, &k, sizeof k, &v, sizeof v, BPF_ANY);
    if (tenant && *tenant != e.tenant_id) {
      nvqos_flow_value fv{};
      if (bpf_map__lookup_elem(skel_->maps.flow_table, &e.flow, sizeof e.flow, &fv, sizeof fv, 0) == 0) {
        fv.tenant_id = *tenant;
        if (bpf_map__update_elem(skel_->maps.flow_table, &e.flow, sizeof e.flow, &fv, sizeof fv, BPF_EXIST) == 0) {
          fi.tenant_id = *tenant;
          ++moved_by_agent_;
        }
      }
    }
    fi.tenant_by_nqn = tenant.has_value();
  }
  auto name = tenant_names_.find(fi.tenant_id);
  fi.tenant = name != tenant_names_.end() ? name->second : "id:" + std::to_string(fi.tenant_id);

  const bool refused = e.verdict == NVQOS_ACCESS_DENIED || e.verdict == NVQOS_ACCESS_DRY_RUN_DENIED;
  const bool loggable = refused || !parsed;
  if (loggable && log_limit_.allow(std::chrono::steady_clock::now())) {
    const std::string unread = "(not in the capsule's segment)";
    const auto level = e.verdict == NVQOS_ACCESS_DENIED || e.verdict == NVQOS_ACCESS_DRY_RUN_DENIED ? log::Level::warn
                                                                                                     : log::Level::info;
    const char* message = e.verdict == NVQOS_ACCESS_DENIED ? "NVMe/TCP Connect refused by access control"
                          : e.verdict == NVQOS_ACCESS_DRY_RUN_DENIED
                              ? "NVMe/TCP Connect would be refused (dry run)"
                              : "NVMe/TCP Connect without readable NQNs (split across segments): tenant by address";
    log::write(level, message,
               {{"interface", ifname_},
                {"verdict", verdict_name(e.verdict)},
                {"hostnqn", parsed ? fi.hostnqn : unread},
                {"subnqn", parsed ? fi.subnqn : unread},
                {"initiator", flow_endpoint(e.flow.remote_addr, e.flow.remote_port)},
                {"target", flow_endpoint(e.flow.local_addr, e.flow.local_port)},
                {"qid", std::to_string(e.qid)},
                {"tenant", fi.tenant},
                {"refuse", e.verdict == NVQOS_ACCESS_DENIED ? refuse_mode(e.port, parsed ? fi.subnqn : "") : "-"}});
  }
  flows_[flow_id(e.flow)] = std::move(fi);
}

// How a refusal on `port` of subsystem `subnqn` ("" = unknown) was carried out, as the kernel maps say.
const char* IdentityDatapath::refuse_mode(std::uint16_t port, const std::string& subnqn) const {
  for (const auto& a : current_.access)
    if (a.nqn == subnqn && std::find(a.ports.begin(), a.ports.end(), port) != a.ports.end())
      return a.reset ? "reset" : "drop";
  auto it = current_.access_ports.find(port);
  return it != current_.access_ports.end() && (it->second & NVQOS_ACCESS_F_RESET) ? "reset" : "drop";
}

void IdentityDatapath::expire_gated(IdentityCounters& out) {
  bpf_map* map = skel_->maps.access_conns;
  const std::uint64_t now = coarse_now_ns();
  const std::uint64_t timeout = std::uint64_t(current_.connect_timeout_s) * 1000000000ull;
  std::vector<nvqos_flow_key> expired, idle;
  nvqos_flow_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map__get_next_key(map, prev, &next, sizeof next) == 0) {
    key = next;
    prev = &key;
    ++out.gated_connections;
    nvqos_access_conn v{};
    if (bpf_map__lookup_elem(map, &key, sizeof key, &v, sizeof v, 0)) continue;
    if (now <= v.since_ns || now - v.since_ns <= timeout) continue;
    (v.state == NVQOS_ACCESS_CONN_PENDING ? expired : idle).push_back(key);
  }
  // A refusal no packet has hit for the timeout: the initiator gave up (or
  // was reset). Freed, so refusals cannot fill the table; should the
  // connection come back, its Connect is checked again in the kernel.
  for (const auto& k : idle) {
    nvqos_access_conn v{};
    if (bpf_map__lookup_elem(map, &k, sizeof k, &v, sizeof v, 0) || v.state != NVQOS_ACCESS_CONN_REFUSED ||
        now <= v.since_ns || now - v.since_ns <= timeout)
      continue;
    if (bpf_map__delete_elem(map, &k, sizeof k, 0) == 0) {
      ++refusals_freed_;
      --out.gated_connections;
    }
  }
  for (const auto& k : expired) {
    nvqos_access_conn v{};
    if (bpf_map__lookup_elem(map, &k, sizeof k, &v, sizeof v, 0) || v.state != NVQOS_ACCESS_CONN_PENDING) continue;
    const bool enforce = v.flags & NVQOS_ACCESS_F_ENFORCE;
    if (enforce) {
      v.state = NVQOS_ACCESS_CONN_REFUSED;
      v.since_ns = now;
      bpf_map__update_elem(map, &k, sizeof k, &v, sizeof v, BPF_EXIST);
    } else {
      bpf_map__delete_elem(map, &k, sizeof k, 0);
    }
    ++connect_timeouts_;
    if (log_limit_.allow(std::chrono::steady_clock::now()))
      log::warn(enforce ? "NVMe/TCP connection refused: no Connect within the timeout"
                        : "NVMe/TCP connection sent no Connect within the timeout (dry run)",
                {{"interface", ifname_},
                 {"initiator", flow_endpoint(k.remote_addr, k.remote_port)},
                 {"target", flow_endpoint(k.local_addr, k.local_port)},
                 {"timeout_s", std::to_string(current_.connect_timeout_s)}});
  }
}

Status IdentityDatapath::read(IdentityCounters& out) {
  auto sum = [this](bpf_map* map, __u32 key, auto& value) -> int {
    using T = std::remove_reference_t<decltype(value)>;
    const std::size_t stride = (sizeof(T) + 7) & ~std::size_t{7};
    std::vector<std::uint8_t> raw(stride * possible_cpus_);
    if (int err = bpf_map__lookup_elem(map, &key, sizeof key, raw.data(), raw.size(), 0)) return err;
    // Copied, not cast: the fields are __u64, which std::uint64_t may not alias.
    __u64 total[sizeof(T) / sizeof(__u64)] = {};
    for (int c = 0; c < possible_cpus_; ++c)
      for (std::size_t i = 0; i < std::size(total); ++i) {
        __u64 v;
        std::memcpy(&v, raw.data() + c * stride + i * sizeof v, sizeof v);
        total[i] += v;
      }
    std::memcpy(&value, total, sizeof value);
    return 0;
  };
  if (int err = sum(skel_->maps.connect_stats, 0, out.connect))
    return Error::from_errno(err, "read connect_stats of " + ifname_);
  std::map<std::uint32_t, std::string> names{{NVQOS_ACCESS_SUBSYS_UNKNOWN, kUnknownSubsystem}};
  for (const auto& [nqn, id] : subsys_ids_) names[id] = nqn;
  for (const auto& [id, nqn] : names) {
    AccessCounters c{nqn, {}};
    if (sum(skel_->maps.access_stats, id, c.stats) == 0 &&
        (id != NVQOS_ACCESS_SUBSYS_UNKNOWN || c.stats.denied || c.stats.dry_run_denied || !current_.access.empty()))
      out.access.push_back(c);
  }
  for (const auto& [id, name] : tenant_names_) {
    nvqos_access_drops d{};
    if (sum(skel_->maps.access_tenant_drops, id, d) == 0 && (d.packets || !current_.access.empty()))
      out.tenant_drops[id] = d;
  }
  expire_gated(out);
  // Forget connections that closed or left the flow table.
  for (auto it = flows_.begin(); it != flows_.end();) {
    nvqos_flow_value fv{};
    if (bpf_map__lookup_elem(skel_->maps.flow_table, &it->second.flow, sizeof it->second.flow, &fv, sizeof fv, 0) ||
        (fv.flags & NVQOS_FLOW_F_CLOSED))
      it = flows_.erase(it);
    else
      ++it;
  }
  out.events_received = events_received_;
  out.moved_by_agent = moved_by_agent_;
  out.connect_timeouts = connect_timeouts_;
  out.refusals_freed = refusals_freed_;
  return ok_status();
}

void IdentityDatapath::annotate(std::vector<FlowRow>& rows) const {
  for (auto& row : rows) {
    auto it = flows_.find(flow_id(row.key));
    if (it == flows_.end()) continue;
    row.attributes["access"] = verdict_name(it->second.verdict);
  }
}

std::vector<FlowIdentity> IdentityDatapath::flows() const {
  std::vector<FlowIdentity> out;
  out.reserve(flows_.size());
  for (const auto& [id, fi] : flows_) out.push_back(fi);
  return out;
}

}  // namespace nvqos::agent
