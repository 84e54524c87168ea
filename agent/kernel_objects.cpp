#include "kernel_objects.hpp"

#include <bpf/bpf.h>
#include <xdp/libxdp.h>

#include "log.hpp"

namespace nvqos::agent {
namespace {

// Our filters' identity on the clsact hook. A fixed handle/priority lets a
// restarted agent replace its own filter instead of stacking a second one.
constexpr __u32 kTcHandle = 0x4e51;  // "NQ"
constexpr __u32 kTcPriority = 0x4e51;

bpf_tc_attach_point attach_point(TcDirection d) {
  return d == TcDirection::ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}

}  // namespace

const char* to_string(TcDirection d) { return d == TcDirection::ingress ? "ingress" : "egress"; }

const char* to_string(XdpMode m) {
  switch (m) {
    case XdpMode::native: return "native";
    case XdpMode::generic: return "generic";
    case XdpMode::best: return "best";
  }
  return "best";
}

bool parse_xdp_mode(const std::string& text, XdpMode& out) {
  for (XdpMode m : {XdpMode::native, XdpMode::generic, XdpMode::best})
    if (text == to_string(m)) {
      out = m;
      return true;
    }
  return false;
}

Result<std::unique_ptr<ClsactQdisc>> ClsactQdisc::ensure(int ifindex, const std::string& ifname) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, qdisc, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&qdisc);
  if (err && err != -EEXIST) {
    const char* what = err == -EOPNOTSUPP || err == -ENOENT
                           ? "create clsact qdisc (kernel needs CONFIG_NET_SCH_INGRESS)"
                           : "create clsact qdisc";
    return Error::from_errno(err, std::string(what) + " on " + ifname, "CAP_NET_ADMIN");
  }
  return std::unique_ptr<ClsactQdisc>(new ClsactQdisc(ifindex, ifname, err == 0));
}

ClsactQdisc::ClsactQdisc(int ifindex, std::string ifname, bool created)
    : ifindex_(ifindex), ifname_(std::move(ifname)), created_(created) {}

ClsactQdisc::~ClsactQdisc() {
  if (!created_) return;
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, qdisc, .ifindex = ifindex_,
                      .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  int err = bpf_tc_hook_destroy(&qdisc);
  if (err && err != -ENODEV && err != -ENOENT && err != -EINVAL)
    log::warn("remove clsact qdisc failed", {{"interface", ifname_}, {"error", std::strerror(-err)}});
}

Result<std::unique_ptr<TcFilter>> TcFilter::attach(int ifindex, const std::string& ifname, TcDirection direction,
                                                   int prog_fd) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = attach_point(direction));
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
                      .priority = kTcPriority);
  if (int err = bpf_tc_attach(&hook, &opts))
    return Error::from_errno(err, std::string("attach tc ") + to_string(direction) + " program to " + ifname,
                             "CAP_NET_ADMIN");
  log::info("attached tc program", {{"interface", ifname}, {"hook", std::string("tc_") + to_string(direction)}});
  return std::unique_ptr<TcFilter>(new TcFilter(ifindex, ifname, direction));
}

TcFilter::TcFilter(int ifindex, std::string ifname, TcDirection direction)
    : ifindex_(ifindex), ifname_(std::move(ifname)), direction_(direction) {}

TcFilter::~TcFilter() {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex_, .attach_point = attach_point(direction_));
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  int err = bpf_tc_detach(&hook, &opts);
  // ENODEV/ENOENT/EINVAL: the interface, and with it the filter, is gone already.
  if (err && err != -ENODEV && err != -ENOENT && err != -EINVAL)
    log::warn("detach tc program failed", {{"interface", ifname_}, {"hook", std::string("tc_") + to_string(direction_)},
                                           {"error", std::strerror(-err)}});
  else
    log::info("detached tc program", {{"interface", ifname_}, {"hook", std::string("tc_") + to_string(direction_)}});
}

Result<std::unique_ptr<XdpAttachment>> XdpAttachment::attach(bpf_object* obj, const char* prog_name, int ifindex,
                                                             const std::string& ifname, XdpMode mode) {
  DECLARE_LIBXDP_OPTS(xdp_program_opts, opts, .obj = obj, .prog_name = prog_name);
  xdp_program* prog = xdp_program__create(&opts);
  if (long err = libxdp_get_error(prog); err || !prog) {
    bpf_object__close(obj);
    return Error::from_errno(err ? static_cast<int>(err) : EINVAL, "prepare XDP program for " + ifname);
  }
  auto try_mode = [&](XdpMode m) {
    return xdp_program__attach(prog, ifindex, m == XdpMode::native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0);
  };
  XdpMode used = mode == XdpMode::generic ? XdpMode::generic : XdpMode::native;
  int err = try_mode(used);
  if (err && mode == XdpMode::best && err != -EPERM && err != -EACCES) {
    log::warn("native XDP unavailable, falling back to generic (skb) mode",
              {{"interface", ifname}, {"error", std::strerror(-err)}});
    used = XdpMode::generic;
    err = try_mode(used);
  }
  if (err) {
    xdp_program__close(prog);
    bpf_object__close(obj);
    return Error::from_errno(err, std::string("attach XDP (") + to_string(used) + ") to " + ifname, "CAP_NET_ADMIN");
  }
  bool dispatcher = false;
  if (xdp_multiprog* mp = xdp_multiprog__get_from_ifindex(ifindex); mp && !libxdp_get_error(mp)) {
    dispatcher = !xdp_multiprog__is_legacy(mp);
    xdp_multiprog__close(mp);
  }
  if (dispatcher)
    log::info("attached XDP program", {{"interface", ifname}, {"mode", to_string(used)}, {"dispatcher", "libxdp"}});
  else
    log::warn("attached XDP program without libxdp's dispatcher: other XDP programs cannot share this interface "
              "while nvqos is attached",
              {{"interface", ifname}, {"mode", to_string(used)}});
  return std::unique_ptr<XdpAttachment>(new XdpAttachment(prog, obj, ifindex, ifname, used, dispatcher));
}

XdpAttachment::XdpAttachment(xdp_program* prog, bpf_object* obj, int ifindex, std::string ifname, XdpMode mode,
                             bool dispatcher)
    : prog_(prog), obj_(obj), ifindex_(ifindex), ifname_(std::move(ifname)), mode_(mode), dispatcher_(dispatcher) {}

XdpAttachment::~XdpAttachment() {
  int err = xdp_program__detach(prog_, ifindex_, mode_ == XdpMode::native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0);
  if (err && err != -ENODEV && err != -ENOENT)
    log::warn("detach XDP program failed", {{"interface", ifname_}, {"error", std::strerror(-err)}});
  else
    log::info("detached XDP program", {{"interface", ifname_}});
  xdp_program__close(prog_);
  bpf_object__close(obj_);
}

}  // namespace nvqos::agent
