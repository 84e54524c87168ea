// QoS classes -> what the kernel must hold: per tenant the HTB leaf its egress
// goes to (skb->priority), its DSCP and its limiter; per interface an HTB tree
// sized to the link. Pure values, unit-tested without a kernel; the shaper
// (shaper.cpp) and the data path (datapath.cpp) apply them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "nvqos/abi.h"

namespace nvqos::agent {

// HTB handles of the tree the agent owns: major kHtbMajor ("NV"), the root
// class :1 at link capacity, the default class (everything that is not the
// NVMe/TCP traffic of a tenant with a class) and one unit per tenant of a
// per-tenant class or per aggregate class.
inline constexpr std::uint16_t kHtbMajor = 0x4e56;
inline constexpr std::uint16_t kHtbRootMinor = 0x1;
inline constexpr std::uint16_t kHtbDefaultMinor = 0xfffe;
inline constexpr std::uint16_t kHtbUnitMinorBase = 0x10;
inline constexpr std::uint32_t htb_classid(std::uint16_t minor) {
  return (static_cast<std::uint32_t>(kHtbMajor) << 16) | minor;
}

// One shaped unit: a tenant of a per-tenant class, or an aggregate class (all
// its tenants together). Its HTB minors are derived from a tenant id (the
// tenant's, or the smallest of the aggregate's members), so they stay the same
// across reloads that change rates, and a rate change is applied in place.
struct ShapingUnit {
  std::string name;        // tenant name, or class name for an aggregate
  std::string class_name;
  std::uint16_t minor = 0;  // the unit's HTB class
  // With a read or write ceiling the unit is an inner class with two leaves,
  // minor + 1 for egress as initiator (writes) and minor + 2 as target (reads).
  bool split_roles = false;
  unsigned priority = kLowestClassPriority;
  std::uint64_t guaranteed_bps = 0;
  std::uint64_t ceiling_bps = 0;        // 0: the link capacity
  std::uint64_t read_ceiling_bps = 0;   // 0: none beyond ceiling_bps
  std::uint64_t write_ceiling_bps = 0;
  std::uint64_t burst_bytes = 0;        // class burst_bytes; 0: sized from the rate

  std::uint32_t classid_for(nvqos_role role) const;
  bool operator==(const ShapingUnit&) const = default;
};

// A limit the host cannot enforce with what its kernel offers; logged and
// exported (nvqos_qos_unenforced_limits).
struct UnenforcedLimit {
  std::string class_name;
  std::string limit;   // config key, e.g. "ceiling_iops"
  std::string reason;
  bool operator==(const UnenforcedLimit&) const = default;
};

inline constexpr const char* kNoSchFqReason =
    "IOPS ceilings are paced with EDT, which needs sch_fq; the kernel has none";

struct QosState {
  std::vector<ShapingUnit> units;  // by minor; empty: no HTB needed
  std::map<std::uint32_t, nvqos_limiter_config> limiters;  // limiter id -> rates
  std::uint64_t guaranteed_sum_bps = 0;
  bool needs_edt = false;      // some limiter paces egress (bytes or IOPS)
  bool has_bandwidth = false;  // some unit has a guarantee or ceiling: the link capacity must be known
  std::map<std::string, std::uint64_t> link_capacity_bps;  // interface -> capacity from /links
  std::map<std::string, EgressMechanism> egress_mechanism;  // interface -> as chosen in /links
  std::vector<ClassSpec> classes;  // as configured, for metrics
  std::map<std::string, std::string> tenant_class;  // tenant -> class ("" none), default tenant included
};

// Per-tenant QoS fields of tenant_config.
struct TenantQos {
  std::uint32_t flags = 0;  // NVQOS_TENANT_F_SET_PRIORITY | MARK_DSCP | EDT | INGRESS_LIMIT
  std::uint32_t limiter_id = NVQOS_LIMITER_NONE;
  std::uint32_t classid[NVQOS_ROLE_MAX] = {0, 0};
  std::uint8_t dscp = 0;
  bool operator==(const TenantQos&) const = default;
};

// Fills `out` (tenant id -> fields) and returns the QoS state of `policy`.
// `tenant_ids` must hold every tenant of the policy and "default".
QosState compile_qos(const Policy& policy, const std::map<std::string, std::uint32_t>& tenant_ids,
                     std::map<std::uint32_t, TenantQos>& out);

// The egress mechanism /links asks for on `ifname` (automatic when not listed).
EgressMechanism egress_mechanism_of(const QosState& qos, const std::string& ifname);

// Limits of classes in use that `ifname`'s mechanisms cannot enforce: with
// `htb` false no HTB tree is installed, with `edt` false no EDT pacing, for
// `no_edt_reason` (no sch_fq, or the link's egress_mechanism is "htb").
std::vector<UnenforcedLimit> unenforced_limits(const QosState& qos, bool htb, bool edt,
                                               const std::string& no_edt_reason = kNoSchFqReason);

// A limiter's burst balance over kinds [first, last] with a rate, in their units at
// `now_ns` (the data path's clock), as include/nvqos/abi.h defines it: the smallest
// min(burst, max(0, now - next_ns) * per_sec / 10^9); nullopt when none has a rate.
std::optional<std::uint64_t> burst_balance(const nvqos_limiter_config& config, const nvqos_limiter_state& state,
                                           std::uint64_t now_ns, nvqos_limit_kind first, nvqos_limit_kind last);

// Default burst of a token bucket: 10 ms at the rate, at least one 64 KiB
// GSO packet (bytes) or 1 command.
std::uint64_t default_burst_bytes(std::uint64_t bytes_per_sec);
std::uint64_t default_burst_ios(std::uint64_t iops);

// One HTB class as the shaper installs it.
struct HtbClass {
  std::uint32_t classid = 0;
  std::uint32_t parent = 0;  // classid of the parent class, or the qdisc handle for the root class
  std::uint64_t rate_bps = 0;
  std::uint64_t ceil_bps = 0;
  std::uint32_t burst_bytes = 0;
  std::uint32_t cburst_bytes = 0;
  std::uint32_t quantum_bytes = 0;
  unsigned priority = 0;
  bool leaf = true;
  std::string label;  // "root", "default", "tenant gold", "class bulk (initiator)"
  bool operator==(const HtbClass&) const = default;
};

// The HTB tree of one interface of capacity `capacity_bps`, parents before
// children. Ceilings and guarantees above the capacity are capped to it.
std::vector<HtbClass> plan_htb(const QosState& qos, std::uint64_t capacity_bps);

// HTB burst for a rate: 1 ms at the rate (a 125 KB burst reached 99.5% of
// 1 Gbit/s here; HTB's own default, about one MTU above rate/HZ, only ~70% of
// 10 Gbit/s), at least one 64 KiB GSO packet.
std::uint32_t htb_burst_bytes(std::uint64_t rate_bps);

}  // namespace nvqos::agent
