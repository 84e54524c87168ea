#include "kernel_objects.hpp"

#include <bpf/bpf.h>
#include <unistd.h>
#include <xdp/libxdp.h>

#include "log.hpp"

namespace nvqos::agent {
namespace {

// Our filters' identity on the clsact hook. A fixed handle/priority lets a
// restarted agent replace its own filter instead of stacking a second one.
constexpr __u32 kTcHandle = 0x4e51;  // "NQ"
constexpr __u32 kTcPriority = 0x4e51;
// Names of our programs as the kernel knows them (truncated to 15 characters).
constexpr const char* kTcProgramPrefix = "nvqos_tc_";
constexpr const char* kXdpProgramPrefix = "nvqos_xdp";

std::string program_name(std::uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return "";
  bpf_prog_info info{};
  __u32 len = sizeof info;
  std::string name = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.name : "";
  ::close(fd);
  return name;
}

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

Result<std::unique_ptr<ClsactQdisc>> ClsactQdisc::ensure(int ifindex, const std::string& ifname, bool ours,
                                                         bool expect_ours_attached) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, qdisc, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int err = expect_ours_attached && TcFilter::query(ifindex, TcDirection::ingress) ? -EEXIST
                                                                                   : bpf_tc_hook_create(&qdisc);
  if (err && err != -EEXIST) {
    const char* what = err == -EOPNOTSUPP || err == -ENOENT
                           ? "create clsact qdisc (kernel needs CONFIG_NET_SCH_INGRESS)"
                           : "create clsact qdisc";
    return Error::from_errno(err, std::string(what) + " on " + ifname, "CAP_NET_ADMIN");
  }
  return std::unique_ptr<ClsactQdisc>(new ClsactQdisc(ifindex, ifname, err == 0 || ours));
}

ClsactQdisc::ClsactQdisc(int ifindex, std::string ifname, bool created)
    : ifindex_(ifindex), ifname_(std::move(ifname)), created_(created) {}

ClsactQdisc::~ClsactQdisc() {
  if (!created_ || released_) return;
  if (auto s = remove(ifindex_, ifname_); !s) log::warn("remove clsact qdisc failed", {{"error", s.error().message}});
}

Status ClsactQdisc::remove(int ifindex, const std::string& ifname) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, qdisc, .ifindex = ifindex,
                      .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  int err = bpf_tc_hook_destroy(&qdisc);
  // ENODEV/ENOENT/EINVAL: the interface, and with it the qdisc, is gone already.
  if (err && err != -ENODEV && err != -ENOENT && err != -EINVAL)
    return Error::from_errno(err, "remove clsact qdisc of " + ifname, "CAP_NET_ADMIN");
  return ok_status();
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
  if (released_) return;
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

std::uint32_t TcFilter::query(int ifindex, TcDirection direction) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = attach_point(direction));
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  if (bpf_tc_query(&hook, &opts)) return 0;
  return opts.prog_id;
}

Result<bool> TcFilter::detach(int ifindex, const std::string& ifname, TcDirection direction) {
  const std::uint32_t id = query(ifindex, direction);
  if (!id) return false;
  // Our handle/priority with someone else's program: not ours to remove.
  if (program_name(id).rfind(kTcProgramPrefix, 0) != 0) {
    log::warn("a tc filter at nvqos's handle/priority runs another program; left in place",
              {{"interface", ifname}, {"hook", std::string("tc_") + to_string(direction)},
               {"program", program_name(id)}});
    return false;
  }
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = attach_point(direction));
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  if (int err = bpf_tc_detach(&hook, &opts); err && err != -ENOENT)
    return Error::from_errno(err, std::string("detach tc ") + to_string(direction) + " program from " + ifname,
                             "CAP_NET_ADMIN");
  return true;
}

namespace {

bool is_our_xdp(xdp_program* p) {
  const char* name = p ? xdp_program__name(p) : nullptr;
  return name && std::string(name).rfind(kXdpProgramPrefix, 0) == 0;
}

}  // namespace

std::uint32_t XdpAttachment::find_ours(int ifindex, XdpMode& mode) {
  xdp_multiprog* mp = xdp_multiprog__get_from_ifindex(ifindex);
  if (!mp || libxdp_get_error(mp)) return 0;
  std::uint32_t id = 0;
  if (xdp_multiprog__is_legacy(mp)) {
    if (xdp_program* main = xdp_multiprog__main_prog(mp); is_our_xdp(main)) id = xdp_program__id(main);
  } else {
    for (xdp_program* p = xdp_multiprog__next_prog(nullptr, mp); p && !id; p = xdp_multiprog__next_prog(p, mp))
      if (is_our_xdp(p)) id = xdp_program__id(p);
  }
  mode = xdp_multiprog__attach_mode(mp) == XDP_MODE_SKB ? XdpMode::generic : XdpMode::native;
  xdp_multiprog__close(mp);
  return id;
}

Result<std::unique_ptr<XdpAttachment>> XdpAttachment::adopt(std::uint32_t prog_id, int ifindex,
                                                            const std::string& ifname) {
  XdpMode mode = XdpMode::native;
  if (find_ours(ifindex, mode) != prog_id) return Error{ENOENT, "XDP program " + std::to_string(prog_id) +
                                                                    " is no longer attached to " + ifname};
  xdp_program* prog = xdp_program__from_id(prog_id);
  if (long err = libxdp_get_error(prog); err || !prog)
    return Error::from_errno(err ? static_cast<int>(err) : ENOENT, "open XDP program of " + ifname);
  bool dispatcher = false;
  if (xdp_multiprog* mp = xdp_multiprog__get_from_ifindex(ifindex); mp && !libxdp_get_error(mp)) {
    dispatcher = !xdp_multiprog__is_legacy(mp);
    xdp_multiprog__close(mp);
  }
  log::info("adopted the attached XDP program", {{"interface", ifname}, {"mode", to_string(mode)}});
  return std::unique_ptr<XdpAttachment>(new XdpAttachment(prog, nullptr, ifindex, ifname, mode, dispatcher));
}

Result<bool> XdpAttachment::detach_ours(int ifindex, const std::string& ifname) {
  XdpMode mode = XdpMode::native;
  const std::uint32_t id = find_ours(ifindex, mode);
  if (!id) return false;
  xdp_program* prog = xdp_program__from_id(id);
  if (long err = libxdp_get_error(prog); err || !prog)
    return Error::from_errno(err ? static_cast<int>(err) : ENOENT, "open XDP program of " + ifname);
  int err = xdp_program__detach(prog, ifindex, mode == XdpMode::native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0);
  xdp_program__close(prog);
  if (err && err != -ENOENT) return Error::from_errno(err, "detach XDP program from " + ifname, "CAP_NET_ADMIN");
  return true;
}

int XdpAttachment::prog_fd() const { return xdp_program__fd(prog_); }

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
  if (released_) {
    xdp_program__close(prog_);
    bpf_object__close(obj_);
    return;
  }
  int err = xdp_program__detach(prog_, ifindex_, mode_ == XdpMode::native ? XDP_MODE_NATIVE : XDP_MODE_SKB, 0);
  if (err && err != -ENODEV && err != -ENOENT)
    log::warn("detach XDP program failed", {{"interface", ifname_}, {"error", std::strerror(-err)}});
  else
    log::info("detached XDP program", {{"interface", ifname_}});
  xdp_program__close(prog_);
  bpf_object__close(obj_);
}

}  // namespace nvqos::agent
