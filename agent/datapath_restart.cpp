// Hitless restart and interface faults of InterfaceDatapath: pinning its maps
// and programs, adopting what a previous agent left, leaving everything in
// place on --keep-on-exit, and attaching again to an interface that was
// re-created. The design is in docs/design.md ("Hitless restart").
#include <bpf/bpf.h>
#include <net/if.h>

#include <algorithm>

#include "datapath.hpp"
#include "log.hpp"
#include "nvqos_datapath.skel.h"
#include "version.hpp"

namespace nvqos::agent {

Status InterfaceDatapath::plan_pins() {
  if (options_.pin_root.empty()) return ok_status();
  auto pins = InterfacePins::open(options_.pin_root, ifname_);
  if (!pins) return pins.error();
  pins_.emplace(std::move(pins).value());
  auto previous = pins_->read_state();
  if (!previous)
    log::warn("previous agent state unreadable: its maps are adopted, its own counters start from zero",
              {{"interface", ifname_}, {"error", previous.error().message}});
  else if (previous.value())
    persisted_ = *previous.value();
  return pins_->plan(skel_->obj);
}

Status InterfaceDatapath::pin_loaded() {
  if (!pins_) return ok_status();
  if (auto s = pins_->pin_after_load(skel_->obj); !s) return s;
  restart_.maps = pins_->outcomes();
  restart_.adopted = std::any_of(restart_.maps.begin(), restart_.maps.end(),
                                 [](const MapOutcome& m) { return m.action != MapAction::create; });
  return ok_status();
}

// Rebuilds current_ from what the adopted maps hold, so that apply() moves
// them to the new policy by difference (deleting stale rules and ports,
// zeroing counters of a tenant slot that changed hands, re-attributing flows)
// instead of rewriting them blindly.
Status InterfaceDatapath::adopt_previous() {
  XdpMode xdp_mode = XdpMode::native;
  const std::uint32_t our_xdp = XdpAttachment::find_ours(ifindex_, xdp_mode);
  const bool xdp_usable = restart_.adopted && pins_ && pins_->all_reused();
  if (our_xdp && xdp_usable) {
    auto adopted = XdpAttachment::adopt(our_xdp, ifindex_, ifname_);
    if (adopted) xdp_ = std::move(adopted).value();
    else log::warn("cannot adopt the attached XDP program", {{"interface", ifname_}, {"error", adopted.error().message}});
  }
  if (our_xdp && !xdp_) {
    // Bound to maps this agent does not use (replaced, migrated, or unpinned
    // by hand): it must go; apply() attaches a new one if the policy needs it.
    auto detached = XdpAttachment::detach_ours(ifindex_, ifname_);
    log::warn("detached a stale nvqos XDP program (bound to maps not adopted)",
              {{"interface", ifname_}, {"error", detached ? "" : detached.error().message}});
  }
  if (!restart_.adopted) return ok_status();

  restart_.adoptions = ++persisted_.adoptions;
  restart_.reattachments = persisted_.reattachments;
  timeouts_ = persisted_.timeouts;
  slow_received_ = persisted_.slow_commands_received;

  DesiredState cur;
  cur.max_flows = bpf_map__max_entries(skel_->maps.flow_table);
  cur.tenant_ids = persisted_.tenant_ids;
  for (const auto& [name, id] : persisted_.tenant_ids) {
    nvqos_tenant_config config{};
    if (bpf_map__lookup_elem(skel_->maps.tenant_config, &id, sizeof id, &config, sizeof config, 0)) continue;
    cur.tenants.push_back({id, name, config.flags, config.slow_cmd_ns});
  }
  std::sort(cur.tenants.begin(), cur.tenants.end(), [](const TenantSlot& a, const TenantSlot& b) { return a.id < b.id; });
  {
    nvqos_tenant_rule_key key{}, next{};
    const void* prev = nullptr;
    while (bpf_map__get_next_key(skel_->maps.tenant_rules, prev, &next, sizeof next) == 0) {
      key = next;
      prev = &key;
      nvqos_tenant_rule_value v{};
      if (bpf_map__lookup_elem(skel_->maps.tenant_rules, &key, sizeof key, &v, sizeof v, 0)) continue;
      RuleKey rk;
      rk.port_be = key.port;
      std::copy(std::begin(key.addr), std::end(key.addr), rk.addr.begin());
      rk.addr_length = key.prefixlen >= NVQOS_RULE_PORT_BITS ? key.prefixlen - NVQOS_RULE_PORT_BITS : 0;
      cur.rules[rk] = v.tenant_id;
    }
  }
  {
    __u16 key = 0, next = 0;
    const void* prev = nullptr;
    while (bpf_map__get_next_key(skel_->maps.nvme_ports, prev, &next, sizeof next) == 0) {
      key = next;
      prev = &key;
      nvqos_port_value v{};
      if (bpf_map__lookup_elem(skel_->maps.nvme_ports, &key, sizeof key, &v, sizeof v, 0) == 0) cur.ports[key] = v.kind;
    }
  }
  __u32 zero = 0;
  nvqos_settings settings{};
  if (bpf_map__lookup_elem(skel_->maps.settings, &zero, sizeof zero, &settings, sizeof settings, 0) == 0)
    cur.settings_flags = settings.flags;
  cur.needs_xdp = xdp_ != nullptr;
  current_ = std::move(cur);
  has_current_ = true;

  std::map<std::string, int> by_action;
  for (const auto& m : restart_.maps) ++by_action[to_string(m.action)];
  log::info("adopted the pinned data path of a previous agent",
            {{"interface", ifname_},
             {"dir", pins_->dir()},
             {"previous_version", persisted_.agent_version.empty() ? "unknown" : persisted_.agent_version},
             {"maps_reused", std::to_string(by_action["reused"])},
             {"maps_migrated", std::to_string(by_action["migrated"])},
             {"maps_replaced", std::to_string(by_action["replaced"])},
             {"maps_created", std::to_string(by_action["created"])},
             {"xdp", xdp_ ? "adopted" : "none"}});
  return ok_status();
}

void InterfaceDatapath::persist_state() {
  if (!pins_) return;
  persisted_.agent_version = kVersion;
  persisted_.created_clsact = clsact_ && clsact_->created();
  persisted_.slow_commands_received = slow_received_;
  persisted_.timeouts = timeouts_;
  persisted_.tenant_ids = current_.tenant_ids;
  persisted_.adoptions = restart_.adoptions;
  persisted_.reattachments = restart_.reattachments;
  if (auto s = pins_->write_state(persisted_); !s)
    log::warn("cannot save agent state with the pins: a restart would not continue the agent's own counters",
              {{"interface", ifname_}, {"error", s.error().message}});
}

void InterfaceDatapath::release_attachments() {
  if (xdp_) xdp_->release();
  for (auto& f : tc_filters_) f->release();
  if (clsact_) clsact_->release();
}

void InterfaceDatapath::check_attachment() {
  const int now = static_cast<int>(if_nametoindex(ifname_.c_str()));
  if (now == 0) {
    if (restart_.present) {
      restart_.present = false;
      // The filters and XDP went with the device: forget them without detaching.
      release_attachments();
      xdp_.reset();
      tc_filters_.clear();
      clsact_.reset();
      log::warn("interface disappeared: waiting for it to come back", {{"interface", ifname_}});
    }
    return;
  }
  bool intact = now == ifindex_ && restart_.present;
  if (intact) {
    // Someone may have deleted the qdisc or our filters under us.
    for (auto [dir, prog] : {std::pair{TcDirection::ingress, skel_->progs.nvqos_tc_ingress},
                             std::pair{TcDirection::egress, skel_->progs.nvqos_tc_egress}}) {
      bpf_prog_info info{};
      __u32 len = sizeof info;
      if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0 && TcFilter::query(ifindex_, dir) != info.id)
        intact = false;
    }
  }
  if (intact) return;
  if (auto s = reattach(now); !s) {
    restart_.present = false;
    log::error("re-attaching failed; retried on the next link event or telemetry interval",
               {{"interface", ifname_}, {"error", s.error().message}});
  }
}

Status InterfaceDatapath::reattach(int ifindex) {
  const bool recreated = ifindex != ifindex_;
  // What was attached went with the old device (or was removed by hand):
  // nothing is left to detach.
  release_attachments();
  xdp_.reset();
  tc_filters_.clear();
  clsact_.reset();
  ifindex_ = ifindex;
  if (auto s = attach_tc(); !s) return s;
  if (auto s = sync_xdp(current_.needs_xdp); !s) return s;
  restart_.present = true;
  ++restart_.reattachments;
  log::warn(recreated ? "interface re-created: programs attached again" : "nvqos filters were missing: attached again",
            {{"interface", ifname_}, {"ifindex", std::to_string(ifindex)},
             {"reattachments", std::to_string(restart_.reattachments)}});
  persist_state();
  return ok_status();
}

}  // namespace nvqos::agent
