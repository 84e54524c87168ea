// What the admin API shows of one interface's data path: its flows, how full
// its maps are, its programs. Read on demand (an operator asks), never on the
// telemetry path.
#include <bpf/bpf.h>
#include <time.h>

#include <array>
#include <cstring>
#include <map>

#include "datapath.hpp"
#include "nvqos_datapath.skel.h"

namespace nvqos::agent {
namespace {

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the clock of bpf_ktime_get_coarse_ns()
  return std::uint64_t(ts.tv_sec) * 1000000000ull + std::uint64_t(ts.tv_nsec);
}

const char* map_type_name(std::uint32_t type) {
  const char* name = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type));
  return name ? name : "unknown";
}

bool countable(std::uint32_t type) {
  return type != BPF_MAP_TYPE_ARRAY && type != BPF_MAP_TYPE_PERCPU_ARRAY && type != BPF_MAP_TYPE_RINGBUF &&
         type != BPF_MAP_TYPE_PROG_ARRAY;
}

}  // namespace

std::vector<FlowRow> InterfaceDatapath::flows() const {
  // NQNs and queue of connections whose Connect the data path parsed.
  std::map<std::array<std::uint8_t, sizeof(nvqos_flow_key)>, FlowIdentity> identities;
  for (auto& id : flow_identities()) {
    std::array<std::uint8_t, sizeof(nvqos_flow_key)> k;
    std::memcpy(k.data(), &id.flow, k.size());
    identities.emplace(k, std::move(id));
  }
  std::vector<FlowRow> rows;
  bpf_map* map = skel_->maps.flow_table;
  const std::uint64_t now = monotonic_ns();
  nvqos_flow_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map__get_next_key(map, prev, &next, sizeof next) == 0) {
    key = next;
    prev = &key;
    FlowRow row;
    if (bpf_map__lookup_elem(map, &key, sizeof key, &row.value, sizeof row.value, 0)) continue;  // evicted meanwhile
    if (key.ifindex != static_cast<std::uint32_t>(ifindex_)) continue;  // left by a deleted incarnation
    row.interface = ifname_;
    row.key = key;
    const TenantSlot* tenant = current_.tenant(row.value.tenant_id);
    row.tenant = tenant ? tenant->name : "id:" + std::to_string(row.value.tenant_id);
    row.age_seconds = now > row.value.first_seen_ns ? double(now - row.value.first_seen_ns) / 1e9 : 0;
    row.idle_seconds = now > row.value.last_seen_ns ? double(now - row.value.last_seen_ns) / 1e9 : 0;
    std::array<std::uint8_t, sizeof(nvqos_flow_key)> k;
    std::memcpy(k.data(), &key, k.size());
    if (auto it = identities.find(k); it != identities.end()) {
      row.attributes["host_nqn"] = it->second.hostnqn;
      row.attributes["subsystem_nqn"] = it->second.subnqn;
      row.attributes["queue"] = it->second.qid == 0 ? "admin" : "io " + std::to_string(it->second.qid);
    }
    rows.push_back(std::move(row));
  }
  identity_->annotate(rows);
  return rows;
}

std::vector<InterfaceDatapath::MapFill> InterfaceDatapath::map_fill() const {
  std::vector<MapFill> out;
  bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) {
    if (bpf_map__is_internal(map)) continue;
    MapFill f{bpf_map__name(map), map_type_name(bpf_map__type(map)), bpf_map__max_entries(map), std::nullopt};
    if (countable(bpf_map__type(map))) {
      std::vector<std::uint8_t> key(bpf_map__key_size(map)), next(bpf_map__key_size(map));
      std::uint64_t n = 0;
      const void* prev = nullptr;
      while (bpf_map__get_next_key(map, prev, next.data(), next.size()) == 0) {
        key = next;
        prev = key.data();
        ++n;
      }
      f.entries = n;
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<InterfaceDatapath::ProgramInfo> InterfaceDatapath::programs() const {
  std::vector<ProgramInfo> out;
  auto info_of = [](int fd, const std::string& name, const std::string& hook) {
    bpf_prog_info info{};
    __u32 len = sizeof info;
    ProgramInfo p{name, 0, hook};
    if (fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0) p.id = info.id;
    return p;
  };
  out.push_back(info_of(bpf_program__fd(skel_->progs.nvqos_tc_ingress), "nvqos_tc_ingress", "tc_ingress"));
  out.push_back(info_of(bpf_program__fd(skel_->progs.nvqos_tc_egress), "nvqos_tc_egress", "tc_egress"));
  if (xdp_) out.push_back(info_of(xdp_->prog_fd(), "nvqos_xdp_ingress", "xdp"));
  return out;
}

}  // namespace nvqos::agent
