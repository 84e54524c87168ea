// The egress HTB tree of one interface, built over netlink with libnl-route-3
// (not by running tc): a root qdisc at link capacity, a class per shaped unit,
// a default class for everything else. RAII: the destructor removes the tree
// unless keep_on_exit() was called (hitless restart: the next agent adopts it).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qos.hpp"
#include "result.hpp"

struct nl_sock;

namespace nvqos::agent {

// sch_fq under the HTB leaves (EDT pacing): none, where the kernel has it, or
// required (links[].egress_mechanism "edt": refused without sch_fq).
enum class LeafFq { none, if_available, required };

struct ShaperOptions {
  // Replace a root qdisc another tool installed (--replace-root-qdisc); without
  // it such a root is left alone and the policy is refused.
  bool replace_foreign_root = false;
};

// Counters of one HTB class, read from the kernel.
struct HtbClassStats {
  std::uint32_t classid = 0;
  std::uint64_t bytes = 0;
  std::uint64_t packets = 0;
  std::uint64_t overlimits = 0;  // dequeue attempts the class's rate/ceil held back
  std::uint64_t drops = 0;
  std::int64_t ctokens_bytes = 0;  // burst balance at the ceiling; negative when in debt
  bool has_tokens = false;
};

// QoS state of one interface for telemetry.
struct TenantQosCounters {
  std::uint32_t id = 0;
  std::string tenant;
  std::string class_name;
  // Egress packets HTB held back at the tenant's leaf (its overlimits); for an
  // aggregate class, the class's counter, repeated for each of its tenants.
  std::optional<std::uint64_t> throttled;
  std::optional<std::int64_t> burst_balance_bytes;  // HTB ctokens of the tenant's unit, in bytes
  std::optional<std::uint64_t> burst_balance_ios;   // EDT: the IOPS kinds' smallest balance (abi.h), commands
};

struct QosCounters {
  std::vector<std::string> egress_mechanisms;   // "htb", "edt"; empty: nothing enforced
  std::vector<std::string> ingress_mechanisms;  // "xdp"
  std::vector<UnenforcedLimit> unenforced;
  std::vector<TenantQosCounters> tenants;
  std::vector<HtbClassStats> classes;
};

// The capacity to shape `ifname` to: the policy's link entry, else the
// interface's speed from sysfs; nullopt when neither is known (veth, tun).
std::optional<std::uint64_t> link_capacity_bps(const QosState& qos, const std::string& ifname);

// Refuses a QoS state that cannot be installed on `ifname` (capacity unknown
// while guarantees or ceilings need it, guarantees above capacity), before
// anything is touched.
Status check_link_fits(const QosState& qos, const std::string& ifname);

// nvqos-agent --cleanup: removes the HTB root qdisc nvqos installs (handle
// 4e56:, kind htb) from the interface, never another root. True when one was
// removed.
Result<bool> remove_our_htb_root(int ifindex, const std::string& ifname);

class Shaper {
 public:
  // Installs `tree` (from plan_htb) on the interface, or adopts and updates
  // our own tree left by a previous agent; its leaves get sch_fq as `fq` says
  // (edt() tells whether they have it).
  static Result<std::unique_ptr<Shaper>> create(int ifindex, const std::string& ifname, const std::vector<HtbClass>& tree,
                                                LeafFq fq, const ShaperOptions& options);
  ~Shaper();
  Shaper(const Shaper&) = delete;
  Shaper& operator=(const Shaper&) = delete;

  // Moves the tree to `tree` by difference: changed classes are changed in
  // place (no reset of queues or connections), stale ones deleted leaves
  // first, new ones added parents first.
  Status apply(const std::vector<HtbClass>& tree);
  // Puts sch_fq under every leaf, or takes it away, as `fq` says (a reload
  // that changes the egress mechanism). On error nothing was changed.
  Status set_leaf_fq(LeafFq fq);
  LeafFq leaf_fq() const { return leaf_fq_; }
  // Leave the tree installed when this object goes (a restarting agent adopts it).
  void keep_on_exit() { keep_ = true; }
  bool edt() const { return leaf_fq_ != LeafFq::none && fq_probed_ && fq_available_; }
  // Whether the kernel has sch_fq (known after the first leaf was installed).
  bool fq_available() const { return fq_available_; }
  bool adopted() const { return adopted_; }
  const std::vector<HtbClass>& tree() const { return installed_; }
  Result<std::vector<HtbClassStats>> read_stats() const;

 private:
  Shaper(int ifindex, std::string ifname, ShaperOptions options);
  Status install_root();
  Status put_class(const HtbClass& c, bool fresh);
  Status delete_class(std::uint32_t classid);
  // sch_fq under a leaf, or (without fq wanted) whatever a previous
  // configuration put there removed; `fresh` leaves have nothing to remove.
  Status sync_leaf_qdisc(std::uint32_t classid, bool fresh);
  Error no_fq_error(const std::string& why) const;
  Result<std::map<std::uint32_t, std::uint32_t>> kernel_classes() const;  // our classids -> parents
  void remove_root();

  struct SocketDeleter {
    void operator()(nl_sock* sk) const;
  };
  int ifindex_;
  std::string ifname_;
  ShaperOptions options_;
  std::unique_ptr<nl_sock, SocketDeleter> sock_;
  std::vector<HtbClass> installed_;
  LeafFq leaf_fq_ = LeafFq::none;
  bool fq_probed_ = false;
  bool fq_available_ = false;
  bool adopted_ = false;
  bool keep_ = false;
};

}  // namespace nvqos::agent
