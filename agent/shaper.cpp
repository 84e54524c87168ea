#include "shaper.hpp"

#include <linux/gen_stats.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/class.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/htb.h>
#include <netlink/route/tc.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "log.hpp"

namespace nvqos::agent {
namespace {

constexpr std::uint32_t kRootHandle = static_cast<std::uint32_t>(kHtbMajor) << 16;
// PSCHED ticks (HTB's token unit in its xstats) are 64 ns.
constexpr std::int64_t kPschedTickNs = 64;

int errno_of(int nlerr) {
  switch (nlerr < 0 ? -nlerr : nlerr) {
    case NLE_PERM:
    case NLE_NOACCESS: return EPERM;
    case NLE_EXIST: return EEXIST;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_BUSY: return EBUSY;
    case NLE_NODEV: return ENODEV;
    case NLE_OPNOTSUPP: return EOPNOTSUPP;
    case NLE_NOMEM: return ENOMEM;
    case NLE_RANGE: return ERANGE;
    default: return EINVAL;
  }
}

Error nl_error(int nlerr, const std::string& context) {
  int err = errno_of(nlerr);
  std::string msg = context + ": " + nl_geterror(nlerr < 0 ? nlerr : -nlerr);
  if (err == EPERM) msg += " (need CAP_NET_ADMIN)";
  return Error{err, msg};
}

std::string handle_text(std::uint32_t h) {
  char buf[32];
  return rtnl_tc_handle2str(h, buf, sizeof buf);
}

std::string rate_text(std::uint64_t bps) {
  std::ostringstream s;
  s << static_cast<double>(bps) / 1e6 << " Mbit/s";
  return s.str();
}

struct QdiscDeleter {
  void operator()(rtnl_qdisc* q) const { rtnl_qdisc_put(q); }
};
struct ClassDeleter {
  void operator()(rtnl_class* c) const { rtnl_class_put(c); }
};
struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using QdiscPtr = std::unique_ptr<rtnl_qdisc, QdiscDeleter>;
using ClassPtr = std::unique_ptr<rtnl_class, ClassDeleter>;
using CachePtr = std::unique_ptr<nl_cache, CacheDeleter>;

// The root qdisc of an interface as the kernel reports it.
struct RootQdisc {
  std::uint32_t handle = 0;  // 0: the kernel's default qdisc (noqueue, pfifo_fast, mq, ...)
  std::string kind;
};

Result<RootQdisc> read_root(nl_sock* sk, int ifindex, const std::string& ifname) {
  nl_cache* raw = nullptr;
  if (int err = rtnl_qdisc_alloc_cache(sk, &raw); err < 0) return nl_error(err, "list qdiscs of " + ifname);
  CachePtr cache(raw);
  RootQdisc root;
  if (rtnl_qdisc* q = rtnl_qdisc_get_by_parent(cache.get(), ifindex, TC_H_ROOT)) {
    QdiscPtr held(q);
    root.handle = rtnl_tc_get_handle(TC_CAST(q));
    if (const char* kind = rtnl_tc_get_kind(TC_CAST(q))) root.kind = kind;
  }
  return root;
}

// Deletes the root qdisc kRootHandle of `ifindex`; NLE_OBJ_NOTFOUND when there is none.
int delete_our_root(nl_sock* sk, int ifindex) {
  QdiscPtr q(rtnl_qdisc_alloc());
  if (!q) return -NLE_NOMEM;
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_ROOT);
  rtnl_tc_set_handle(TC_CAST(q.get()), kRootHandle);
  return rtnl_qdisc_delete(sk, q.get());
}

struct DumpState {
  int ifindex;
  std::map<std::uint32_t, HtbClassStats>* out;
};

// One RTM_NEWTCLASS of the dump: basic and queue stats plus HTB's xstats
// (tokens), which libnl's class objects do not expose.
int on_class_message(nl_msg* msg, void* arg) {
  auto* state = static_cast<DumpState*>(arg);
  nlmsghdr* hdr = nlmsg_hdr(msg);
  auto* tcm = static_cast<tcmsg*>(nlmsg_data(hdr));
  if (tcm->tcm_ifindex != state->ifindex || TC_H_MAJ(tcm->tcm_handle) != kRootHandle) return NL_OK;
  nlattr* tb[TCA_MAX + 1] = {};
  if (nlmsg_parse(hdr, sizeof(tcmsg), tb, TCA_MAX, nullptr) < 0) return NL_OK;
  HtbClassStats s;
  s.classid = tcm->tcm_handle;
  if (tb[TCA_STATS2]) {
    nlattr* st[TCA_STATS_MAX + 1] = {};
    if (nla_parse_nested(st, TCA_STATS_MAX, tb[TCA_STATS2], nullptr) == 0) {
      if (st[TCA_STATS_BASIC] && nla_len(st[TCA_STATS_BASIC]) >= static_cast<int>(sizeof(gnet_stats_basic))) {
        gnet_stats_basic b;
        std::memcpy(&b, nla_data(st[TCA_STATS_BASIC]), sizeof b);
        s.bytes = b.bytes;
        s.packets = b.packets;
      }
      if (st[TCA_STATS_QUEUE] && nla_len(st[TCA_STATS_QUEUE]) >= static_cast<int>(sizeof(gnet_stats_queue))) {
        gnet_stats_queue q;
        std::memcpy(&q, nla_data(st[TCA_STATS_QUEUE]), sizeof q);
        s.overlimits = q.overlimits;
        s.drops = q.drops;
      }
      if (st[TCA_STATS_APP] && nla_len(st[TCA_STATS_APP]) >= static_cast<int>(sizeof(tc_htb_xstats))) {
        tc_htb_xstats x;
        std::memcpy(&x, nla_data(st[TCA_STATS_APP]), sizeof x);
        s.ctokens_bytes = x.ctokens;  // ticks for now; converted with the class's ceil by the caller
        s.has_tokens = true;
      }
    }
  }
  (*state->out)[s.classid] = s;
  return NL_OK;
}

}  // namespace

void Shaper::SocketDeleter::operator()(nl_sock* sk) const { nl_socket_free(sk); }

std::optional<std::uint64_t> link_capacity_bps(const QosState& qos, const std::string& ifname) {
  if (auto it = qos.link_capacity_bps.find(ifname); it != qos.link_capacity_bps.end()) return it->second;
  std::ifstream in("/sys/class/net/" + ifname + "/speed");
  long long mbit = -1;
  // Reading fails with EINVAL for devices without a speed (tun, some virtual NICs); they
  // report -1 or nothing.
  if (in && (in >> mbit) && mbit > 0) return static_cast<std::uint64_t>(mbit) * 1'000'000;
  return std::nullopt;
}

Status check_link_fits(const QosState& qos, const std::string& ifname) {
  if (qos.units.empty()) return ok_status();
  auto capacity = link_capacity_bps(qos, ifname);
  if (!capacity) {
    if (!qos.has_bandwidth) return ok_status();  // priorities only: logged as not enforced
    return Error{EINVAL, "interface " + ifname + ": link speed unknown (no /sys/class/net/" + ifname +
                             "/speed), but classes have guarantees or ceilings; add {\"interface\": \"" + ifname +
                             "\", \"capacity_mbit_s\": N} under /links"};
  }
  if (qos.guaranteed_sum_bps > *capacity)
    return Error{EINVAL, "interface " + ifname + ": the classes' guarantees sum to " +
                             rate_text(qos.guaranteed_sum_bps) + ", above the link's capacity of " +
                             rate_text(*capacity)};
  return ok_status();
}

Shaper::Shaper(int ifindex, std::string ifname, ShaperOptions options)
    : ifindex_(ifindex), ifname_(std::move(ifname)), options_(options) {}

Result<std::unique_ptr<Shaper>> Shaper::create(int ifindex, const std::string& ifname,
                                               const std::vector<HtbClass>& tree, LeafFq fq,
                                               const ShaperOptions& options) {
  std::unique_ptr<Shaper> s(new Shaper(ifindex, ifname, options));
  s->leaf_fq_ = fq;
  s->sock_.reset(nl_socket_alloc());
  if (!s->sock_) return Error{ENOMEM, "allocate a netlink socket"};
  if (int err = nl_connect(s->sock_.get(), NETLINK_ROUTE); err < 0) return nl_error(err, "connect to rtnetlink");
  if (auto st = s->install_root(); !st) return st.error();
  if (auto st = s->apply(tree); !st) return st.error();  // the destructor removes the root again
  return s;
}

Shaper::~Shaper() {
  if (keep_) {
    log::info("HTB tree kept for the next agent", {{"interface", ifname_}, {"handle", handle_text(kRootHandle)}});
    return;
  }
  remove_root();
}

Result<bool> remove_our_htb_root(int ifindex, const std::string& ifname) {
  std::unique_ptr<nl_sock, decltype(&nl_socket_free)> sk(nl_socket_alloc(), &nl_socket_free);
  if (!sk) return Error{ENOMEM, "allocate a netlink socket"};
  if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0) return nl_error(err, "connect to rtnetlink");
  auto root = read_root(sk.get(), ifindex, ifname);
  if (!root) return root.error();
  if (root->handle != kRootHandle || root->kind != "htb") return false;
  if (int err = delete_our_root(sk.get(), ifindex); err < 0 && -err != NLE_OBJ_NOTFOUND)
    return nl_error(err, "remove the HTB root qdisc " + handle_text(kRootHandle) + " of " + ifname);
  return true;
}

void Shaper::remove_root() {
  if (!sock_) return;
  if (int err = delete_our_root(sock_.get(), ifindex_); err < 0 && -err != NLE_OBJ_NOTFOUND)
    log::warn("could not remove the HTB tree", {{"interface", ifname_}, {"error", nl_geterror(err)}});
  else
    log::info("HTB tree removed", {{"interface", ifname_}});
}

Status Shaper::install_root() {
  auto root = read_root(sock_.get(), ifindex_, ifname_);
  if (!root) return root.error();
  int flags = NLM_F_CREATE;
  if (root->handle == kRootHandle && root->kind == "htb") {
    adopted_ = true;
    log::info("adopting the HTB tree a previous agent left", {{"interface", ifname_}, {"handle", handle_text(kRootHandle)}});
    return ok_status();
  }
  if (root->handle != 0) {
    if (!options_.replace_foreign_root)
      return Error{EEXIST, "interface " + ifname_ + " already has a root qdisc " + root->kind + " " +
                               handle_text(root->handle) +
                               " that nvqos did not install; refusing to replace it (remove it, or start the agent "
                               "with --replace-root-qdisc)"};
    log::warn("replacing a foreign root qdisc (--replace-root-qdisc)",
              {{"interface", ifname_}, {"kind", root->kind}, {"handle", handle_text(root->handle)}});
    flags |= NLM_F_REPLACE;
  }
  QdiscPtr q(rtnl_qdisc_alloc());
  if (!q) return Error{ENOMEM, "allocate a qdisc"};
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex_);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_ROOT);
  rtnl_tc_set_handle(TC_CAST(q.get()), kRootHandle);
  if (int err = rtnl_tc_set_kind(TC_CAST(q.get()), "htb"); err < 0) return nl_error(err, "select HTB in libnl");
  rtnl_htb_set_defcls(q.get(), kHtbDefaultMinor);
  if (int err = rtnl_qdisc_add(sock_.get(), q.get(), flags); err < 0)
    return nl_error(err, "install the HTB root qdisc on " + ifname_);
  log::info("HTB root qdisc installed", {{"interface", ifname_}, {"handle", handle_text(kRootHandle)}});
  return ok_status();
}

Status Shaper::put_class(const HtbClass& c, bool fresh) {
  ClassPtr cls(rtnl_class_alloc());
  if (!cls) return Error{ENOMEM, "allocate a class"};
  rtnl_tc_set_ifindex(TC_CAST(cls.get()), ifindex_);
  rtnl_tc_set_parent(TC_CAST(cls.get()), c.parent);
  rtnl_tc_set_handle(TC_CAST(cls.get()), c.classid);
  if (int err = rtnl_tc_set_kind(TC_CAST(cls.get()), "htb"); err < 0) return nl_error(err, "select HTB in libnl");
  rtnl_htb_set_rate64(cls.get(), c.rate_bps / 8);
  rtnl_htb_set_ceil64(cls.get(), c.ceil_bps / 8);
  rtnl_htb_set_rbuffer(cls.get(), c.burst_bytes);
  rtnl_htb_set_cbuffer(cls.get(), c.cburst_bytes);
  rtnl_htb_set_quantum(cls.get(), c.quantum_bytes);
  rtnl_htb_set_prio(cls.get(), c.priority);
  if (int err = rtnl_class_add(sock_.get(), cls.get(), NLM_F_CREATE); err < 0)
    return nl_error(err, std::string(fresh ? "add" : "change") + " HTB class " + handle_text(c.classid) + " (" +
                             c.label + ") on " + ifname_);
  return ok_status();
}

Status Shaper::delete_class(std::uint32_t classid) {
  ClassPtr cls(rtnl_class_alloc());
  if (!cls) return Error{ENOMEM, "allocate a class"};
  rtnl_tc_set_ifindex(TC_CAST(cls.get()), ifindex_);
  rtnl_tc_set_handle(TC_CAST(cls.get()), classid);
  if (int err = rtnl_class_delete(sock_.get(), cls.get()); err < 0 && -err != NLE_OBJ_NOTFOUND)
    return nl_error(err, "delete HTB class " + handle_text(classid) + " on " + ifname_);
  return ok_status();
}

Error Shaper::no_fq_error(const std::string& why) const {
  return Error{EOPNOTSUPP, "interface " + ifname_ +
                               ": links[].egress_mechanism is \"edt\", but the kernel cannot attach sch_fq (" + why +
                               "); use \"auto\" or \"htb\" on this host, or load sch_fq"};
}

Status Shaper::sync_leaf_qdisc(std::uint32_t classid, bool fresh) {
  QdiscPtr q(rtnl_qdisc_alloc());
  if (!q) return Error{ENOMEM, "allocate a qdisc"};
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex_);
  rtnl_tc_set_parent(TC_CAST(q.get()), classid);
  if (leaf_fq_ == LeafFq::none) {
    if (fresh) return ok_status();
    // Without a handle the kernel picks the leaf's qdisc; HTB's own default
    // one (handle 0) cannot be deleted and answers ENOENT: nothing to remove.
    if (int err = rtnl_qdisc_delete(sock_.get(), q.get()); err < 0 && -err != NLE_OBJ_NOTFOUND)
      return nl_error(err, "remove sch_fq below HTB class " + handle_text(classid) + " on " + ifname_);
    return ok_status();
  }
  if (fq_probed_ && !fq_available_)
    return leaf_fq_ == LeafFq::required ? no_fq_error("no sch_fq in this kernel") : ok_status();
  if (int err = rtnl_tc_set_kind(TC_CAST(q.get()), "fq"); err < 0) return nl_error(err, "select fq in libnl");
  int err = rtnl_qdisc_add(sock_.get(), q.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (!fq_probed_) {
    fq_probed_ = true;
    fq_available_ = err >= 0;
    if (!fq_available_) {
      if (leaf_fq_ == LeafFq::required) return no_fq_error(nl_geterror(err));
      log::warn("sch_fq unavailable: no EDT pacing, HTB only", {{"interface", ifname_}, {"error", nl_geterror(err)}});
      return ok_status();
    }
  }
  if (err < 0) return nl_error(err, "attach fq below HTB class " + handle_text(classid) + " on " + ifname_);
  return ok_status();
}

Status Shaper::set_leaf_fq(LeafFq fq) {
  if (fq == leaf_fq_) return ok_status();
  const LeafFq before = leaf_fq_;
  leaf_fq_ = fq;
  // Refused before anything changes when the kernel is already known to lack sch_fq.
  if (fq == LeafFq::required && fq_probed_ && !fq_available_) {
    leaf_fq_ = before;
    return no_fq_error("no sch_fq in this kernel");
  }
  auto sync_all = [&]() -> Status {
    for (const auto& c : installed_)
      if (c.leaf && c.classid != htb_classid(kHtbDefaultMinor))
        if (auto s = sync_leaf_qdisc(c.classid, false); !s) return s;
    return ok_status();
  };
  if (auto s = sync_all(); !s) {
    // Leaves changed before the failure go back (best effort: the kernel refused something already).
    leaf_fq_ = before;
    (void)sync_all();
    return s.error();
  }
  log::info("HTB leaves' qdisc changed", {{"interface", ifname_}, {"leaf_qdisc", edt() ? "fq" : "pfifo"}});
  return ok_status();
}

Result<std::map<std::uint32_t, std::uint32_t>> Shaper::kernel_classes() const {
  nl_cache* raw = nullptr;
  if (int err = rtnl_class_alloc_cache(sock_.get(), ifindex_, &raw); err < 0)
    return nl_error(err, "list HTB classes of " + ifname_);
  CachePtr cache(raw);
  std::map<std::uint32_t, std::uint32_t> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* c = reinterpret_cast<rtnl_class*>(o);
    std::uint32_t h = rtnl_tc_get_handle(TC_CAST(c));
    if (TC_H_MAJ(h) == kRootHandle) out[h] = rtnl_tc_get_parent(TC_CAST(c));
  }
  return out;
}

Status Shaper::apply(const std::vector<HtbClass>& tree) {
  std::map<std::uint32_t, const HtbClass*> have;
  for (const auto& c : installed_) have[c.classid] = &c;
  std::set<std::uint32_t> wanted;
  for (const auto& c : tree) wanted.insert(c.classid);

  // Stale classes go first, children before their parents: HTB refuses to
  // delete a class with children, and a unit that stops splitting by role
  // must lose its children before it can be a leaf again.
  auto existing = kernel_classes();
  if (!existing) return existing.error();
  std::map<std::uint32_t, std::uint32_t> stale;  // classid -> parent
  for (const auto& [id, parent] : existing.value())
    if (!wanted.count(id)) stale[id] = parent;
  while (!stale.empty()) {
    std::vector<std::uint32_t> childless;
    for (const auto& [id, parent] : stale)
      if (std::none_of(stale.begin(), stale.end(), [&](const auto& other) { return other.second == id; }))
        childless.push_back(id);
    if (childless.empty()) return Error{EINVAL, "HTB classes of " + ifname_ + " do not form a tree"};
    for (auto id : childless) {
      if (auto s = delete_class(id); !s) return s.error();
      stale.erase(id);
    }
  }

  std::vector<HtbClass> now;
  for (const auto& c : tree) {
    auto it = have.find(c.classid);
    bool fresh = !existing.value().count(c.classid);
    // Unchanged classes are not touched; an adopted tree is rewritten once.
    if (fresh || it == have.end() || !(*it->second == c)) {
      if (auto s = put_class(c, fresh); !s) return s.error();
      if (!fresh && it != have.end())
        log::info("HTB class changed in place",
                  {{"interface", ifname_}, {"class", handle_text(c.classid)}, {"what", c.label},
                   {"rate", rate_text(c.rate_bps)}, {"ceil", rate_text(c.ceil_bps)},
                   {"prio", std::to_string(c.priority)}});
    }
    bool was_leaf = it != have.end() && it->second->leaf;
    if (c.leaf && (fresh || !was_leaf) && c.classid != htb_classid(kHtbDefaultMinor))
      if (auto s = sync_leaf_qdisc(c.classid, fresh); !s) return s.error();
    now.push_back(c);
  }
  installed_ = std::move(now);
  return ok_status();
}

Result<std::vector<HtbClassStats>> Shaper::read_stats() const {
  // A raw dump through libnl's message API: libnl's rtnl_class objects carry
  // bytes and overlimits but not HTB's xstats (the ctokens burst balance).
  std::map<std::uint32_t, HtbClassStats> found;
  DumpState state{ifindex_, &found};
  nl_sock* sk = nl_socket_alloc();
  if (!sk) return Error{ENOMEM, "allocate a netlink socket"};
  std::unique_ptr<nl_sock, SocketDeleter> held(sk);
  if (int err = nl_connect(sk, NETLINK_ROUTE); err < 0) return nl_error(err, "connect to rtnetlink");
  nl_socket_modify_cb(sk, NL_CB_VALID, NL_CB_CUSTOM, on_class_message, &state);
  tcmsg req{};
  req.tcm_family = AF_UNSPEC;
  req.tcm_ifindex = ifindex_;
  if (int err = nl_send_simple(sk, RTM_GETTCLASS, NLM_F_DUMP, &req, sizeof req); err < 0)
    return nl_error(err, "dump HTB classes of " + ifname_);
  if (int err = nl_recvmsgs_default(sk); err < 0) return nl_error(err, "read HTB classes of " + ifname_);
  std::vector<HtbClassStats> out;
  for (const auto& c : installed_) {
    auto it = found.find(c.classid);
    if (it == found.end()) continue;
    HtbClassStats s = it->second;
    if (s.has_tokens) {
      // ctokens: time (PSCHED ticks) the class may still send at its ceil.
      long double ns = static_cast<long double>(s.ctokens_bytes) * kPschedTickNs;
      s.ctokens_bytes = static_cast<std::int64_t>(ns * (c.ceil_bps / 8) / 1e9L);
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace nvqos::agent
