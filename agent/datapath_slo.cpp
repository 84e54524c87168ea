// The SLO controller's way into the data path: new rates for the classes the
// current state already has, without touching tenants, rules or flows.
#include "datapath.hpp"

namespace nvqos::agent {

Status InterfaceDatapath::apply_rates(const DesiredState& next) {
  if (auto s = sync_shaper(next, false); !s) return s.error().with_context("apply effective ceilings to " + ifname_);
  // IOPS ceilings (and byte rates paced with EDT) live in the limiters, not in HTB.
  if (auto s = update_limiters(next, true); !s) return s.error().with_context("apply effective ceilings to " + ifname_);
  current_.qos = next.qos;
  return ok_status();
}

}  // namespace nvqos::agent
