// The QoS part of InterfaceDatapath: the HTB tree of the interface, the
// tenant_config fields that depend on what this kernel offers (a classid only
// where our HTB tree is installed, EDT only where leaves have sch_fq), and the
// mechanisms and unenforced limits reported in logs and /metrics.
#include <algorithm>
#include <cstring>
#include <ctime>

#include "datapath.hpp"
#include "log.hpp"
#include "nvqos_datapath.skel.h"

namespace nvqos::agent {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : "+") + s;
  return out.empty() ? "none" : out;
}

}  // namespace

Status InterfaceDatapath::sync_shaper(const DesiredState& next, bool log_mechanisms) {
  if (auto s = check_link_fits(next.qos, ifname_); !s) return s.error();
  auto capacity = link_capacity_bps(next.qos, ifname_);
  std::vector<HtbClass> tree = capacity ? plan_htb(next.qos, *capacity) : std::vector<HtbClass>{};
  const EgressMechanism mechanism = egress_mechanism_of(next.qos, ifname_);
  const LeafFq fq = mechanism == EgressMechanism::edt ? LeafFq::required
                    : mechanism == EgressMechanism::htb || !next.qos.needs_edt ? LeafFq::none
                                                                                : LeafFq::if_available;
  if (tree.empty()) {
    shaper_.reset();
  } else if (!shaper_) {
    auto shaper = Shaper::create(ifindex_, ifname_, tree, fq, options_.shaper);
    if (!shaper) return shaper.error();
    shaper_ = std::move(shaper).value();
  } else {
    std::vector<HtbClass> previous = shaper_->tree();
    const LeafFq previous_fq = shaper_->leaf_fq();
    // The leaves' qdisc first: "edt" without sch_fq is refused before the tree changes.
    if (auto s = shaper_->set_leaf_fq(fq); !s) return s.error();
    if (auto s = shaper_->apply(tree); !s) {
      // Put back what ran before, as far as the kernel lets us.
      auto back = shaper_->apply(previous);
      if (back) back = shaper_->set_leaf_fq(previous_fq);
      if (!back)
        log::error("could not restore the previous HTB tree", {{"interface", ifname_}, {"error", back.error().message}});
      return s.error();
    }
  }
  auto unenforced = unenforced_limits(next.qos, shaper_ != nullptr, shaper_ && shaper_->edt(),
                                      mechanism == EgressMechanism::htb
                                          ? "IOPS ceilings are paced with EDT; links[].egress_mechanism is \"htb\""
                                          : kNoSchFqReason);
  if (unenforced != unenforced_ || !has_current_) {
    for (const auto& u : unenforced)
      log::warn("QoS limit not enforced on this interface",
                {{"interface", ifname_}, {"class", u.class_name}, {"limit", u.limit}, {"reason", u.reason}});
    unenforced_ = std::move(unenforced);
  }
  if (log_mechanisms && (!next.qos.classes.empty() || shaper_)) {
    auto q = qos_status();
    log::info("QoS mechanisms", {{"interface", ifname_}, {"egress", join(q.egress_mechanisms)},
                                 {"egress_mechanism_configured", to_string(mechanism)},
                                 {"ingress", join(q.ingress_mechanisms)},
                                 {"capacity_mbit_s", capacity ? std::to_string(*capacity / 1'000'000) : "unknown"},
                                 {"htb_classes", std::to_string(tree.size())}});
  }
  return ok_status();
}

// The rates of each limiter (EDT pacing, XDP ingress buckets). A limiter whose
// rates change starts from a fresh state: clocks pushed ahead by an old, lower
// rate would otherwise hold packets back for up to the EDT horizon. Limiters
// no longer in the policy are zeroed (a zero rate limits nothing).
Status InterfaceDatapath::update_limiters(const DesiredState& next, bool keep_clocks) {
  const auto& before = has_current_ ? current_.qos.limiters : decltype(next.qos.limiters){};
  const nvqos_limiter_state fresh{};
  for (const auto& [id, rates] : next.qos.limiters) {
    auto old = before.find(id);
    if (old != before.end() && std::memcmp(&old->second, &rates, sizeof rates) == 0) continue;
    const bool reset = !(keep_clocks && old != before.end());
    if (int err = reset ? bpf_map__update_elem(skel_->maps.limiter_state, &id, sizeof id, &fresh, sizeof fresh, BPF_ANY) : 0)
      return Error::from_errno(err, "reset limiter_state entry " + std::to_string(id));
    if (int err = bpf_map__update_elem(skel_->maps.limiter_config, &id, sizeof id, &rates, sizeof rates, BPF_ANY))
      return Error::from_errno(err, "write limiter_config entry " + std::to_string(id));
  }
  const nvqos_limiter_config none{};
  for (const auto& [id, rates] : before) {
    if (next.qos.limiters.count(id)) continue;
    if (int err = bpf_map__update_elem(skel_->maps.limiter_config, &id, sizeof id, &none, sizeof none, BPF_ANY))
      return Error::from_errno(err, "clear limiter_config entry " + std::to_string(id));
  }
  return ok_status();
}

nvqos_tenant_config InterfaceDatapath::tenant_config_for(const TenantSlot& t) const {
  nvqos_tenant_config v{};
  std::uint32_t qos_flags = t.qos.flags;
  // skb->priority is only meaningful to our HTB tree: elsewhere it would pick
  // a pfifo_fast band or a VLAN priority.
  if (!shaper_) qos_flags &= ~NVQOS_TENANT_F_SET_PRIORITY;
  // A future skb->tstamp is honoured only by sch_fq.
  if (!shaper_ || !shaper_->edt()) qos_flags &= ~NVQOS_TENANT_F_EDT;
  v.flags = t.flags | qos_flags;
  v.limiter_id = t.qos.limiter_id;
  v.slow_cmd_ns = t.slow_command_ns;
  if (qos_flags & NVQOS_TENANT_F_SET_PRIORITY)
    for (int r = 0; r < NVQOS_ROLE_MAX; ++r) v.classid[r] = t.qos.classid[r];
  v.dscp = t.qos.dscp;
  return v;
}

QosCounters InterfaceDatapath::qos_status() const {
  QosCounters q;
  if (shaper_) q.egress_mechanisms.push_back("htb");
  if (shaper_ && shaper_->edt()) q.egress_mechanisms.push_back("edt");
  if (xdp_) q.ingress_mechanisms.push_back("xdp");
  q.unenforced = unenforced_;
  return q;
}

std::optional<std::uint64_t> InterfaceDatapath::edt_io_balance(const TenantSlot& t) const {
  if (!shaper_->edt() || !(t.qos.flags & NVQOS_TENANT_F_EDT)) return std::nullopt;
  auto config = current_.qos.limiters.find(t.qos.limiter_id);
  if (config == current_.qos.limiters.end()) return std::nullopt;
  nvqos_limiter_state state{};
  std::uint32_t id = t.qos.limiter_id;
  if (bpf_map__lookup_elem(skel_->maps.limiter_state, &id, sizeof id, &state, sizeof state, 0)) return std::nullopt;
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // bpf_ktime_get_ns()'s clock
  const std::uint64_t now_ns = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u + now.tv_nsec;
  return burst_balance(config->second, state, now_ns, NVQOS_LIMIT_IOPS, NVQOS_LIMIT_WRITE_IOPS);
}

void InterfaceDatapath::read_qos(InterfaceCounters& out) const {
  out.qos = qos_status();
  if (!shaper_) return;
  auto stats = shaper_->read_stats();
  if (!stats) {
    log::warn("HTB class stats unavailable", {{"interface", ifname_}, {"error", stats.error().message}});
    return;
  }
  out.qos.classes = stats.value();
  auto find = [&](std::uint32_t classid) -> const HtbClassStats* {
    for (const auto& s : out.qos.classes)
      if (s.classid == classid) return &s;
    return nullptr;
  };
  for (const auto& t : current_.tenants) {
    if (!(t.flags & NVQOS_TENANT_F_ACTIVE) || !(t.qos.flags & NVQOS_TENANT_F_SET_PRIORITY)) continue;
    TenantQosCounters c;
    c.id = t.id;
    c.tenant = t.name;
    c.class_name = t.class_name;
    std::uint64_t throttled = 0;
    bool any = false;
    // Leaves of the tenant: one, or one per role when split.
    std::vector<std::uint32_t> leaves{t.qos.classid[NVQOS_ROLE_INITIATOR]};
    if (t.qos.classid[NVQOS_ROLE_TARGET] != leaves[0]) leaves.push_back(t.qos.classid[NVQOS_ROLE_TARGET]);
    for (auto classid : leaves)
      if (const auto* s = find(classid)) {
        throttled += s->overlimits;
        any = true;
      }
    if (any) c.throttled = throttled;
    // The unit's own class (inner when split) holds the ceiling's bucket.
    std::uint32_t unit = t.qos.classid[NVQOS_ROLE_INITIATOR] == t.qos.classid[NVQOS_ROLE_TARGET]
                             ? t.qos.classid[NVQOS_ROLE_INITIATOR]
                             : t.qos.classid[NVQOS_ROLE_INITIATOR] - 1;
    if (const auto* s = find(unit); s && s->has_tokens) c.burst_balance_bytes = s->ctokens_bytes;
    c.burst_balance_ios = edt_io_balance(t);
    out.qos.tenants.push_back(c);
  }
}

}  // namespace nvqos::agent
