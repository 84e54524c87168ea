// RAII owners of the kernel objects the agent creates: a loaded skeleton, a tc
// clsact hook and filter, an XDP attachment. Destruction undoes exactly what
// construction did, nothing more: a clsact qdisc that existed before us stays.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <memory>
#include <string>

#include "result.hpp"

struct xdp_program;

namespace nvqos::agent {

enum class TcDirection { ingress, egress };
const char* to_string(TcDirection d);

// The clsact qdisc that carries both tc hooks. Removed on destruction only if
// we created it: one that existed before us may carry others' filters.
class ClsactQdisc {
 public:
  // `ours`: a previous agent created the qdisc that exists now (from its
  // pinned state), so it is ours to remove. `expect_ours_attached`: our
  // filters are probably there (adopting); checked first, which spares the
  // kernel's "exclusivity flag" complaint about creating an existing qdisc.
  static Result<std::unique_ptr<ClsactQdisc>> ensure(int ifindex, const std::string& ifname, bool ours = false,
                                                     bool expect_ours_attached = false);
  ~ClsactQdisc();
  ClsactQdisc(const ClsactQdisc&) = delete;
  ClsactQdisc& operator=(const ClsactQdisc&) = delete;

  bool created() const { return created_; }
  // Leaves the qdisc in place on destruction (restart with --keep-on-exit).
  void release() { released_ = true; }
  // Removes a clsact qdisc (with every filter on it) from an interface.
  static Status remove(int ifindex, const std::string& ifname);

 private:
  ClsactQdisc(int ifindex, std::string ifname, bool created);
  int ifindex_;
  std::string ifname_;
  bool created_;
  bool released_ = false;
};

class TcFilter {
 public:
  // Attaches prog_fd as a direct-action filter at our own handle/priority,
  // replacing a stale filter of ours (e.g. left by a killed agent).
  static Result<std::unique_ptr<TcFilter>> attach(int ifindex, const std::string& ifname,
                                                  TcDirection direction, int prog_fd);
  ~TcFilter();
  TcFilter(const TcFilter&) = delete;
  TcFilter& operator=(const TcFilter&) = delete;

  TcDirection direction() const { return direction_; }
  // Leaves the filter attached on destruction (restart with --keep-on-exit).
  void release() { released_ = true; }

  // The program id of the filter at our handle/priority, 0 if there is none.
  static std::uint32_t query(int ifindex, TcDirection direction);
  // Detaches the filter at our handle/priority; false if there was none.
  static Result<bool> detach(int ifindex, const std::string& ifname, TcDirection direction);

 private:
  TcFilter(int ifindex, std::string ifname, TcDirection direction);
  int ifindex_;
  std::string ifname_;
  TcDirection direction_;
  bool released_ = false;
};

enum class XdpMode { native, generic, best };  // best: native, generic as a logged fallback
const char* to_string(XdpMode m);
bool parse_xdp_mode(const std::string& text, XdpMode& out);

class XdpAttachment {
 public:
  // Attaches program `prog_name` of an opened, not yet loaded object through
  // libxdp, which then owns loading it (as a dispatcher extension, so other XDP
  // programs on the interface keep running).
  static Result<std::unique_ptr<XdpAttachment>> attach(bpf_object* obj, const char* prog_name,
                                                       int ifindex, const std::string& ifname,
                                                       XdpMode mode);
  ~XdpAttachment();
  XdpAttachment(const XdpAttachment&) = delete;
  XdpAttachment& operator=(const XdpAttachment&) = delete;

  // Takes over the XDP program `prog_id` a previous agent left attached.
  static Result<std::unique_ptr<XdpAttachment>> adopt(std::uint32_t prog_id, int ifindex, const std::string& ifname);
  // The id and mode of the nvqos XDP program attached to the interface (0 if none).
  static std::uint32_t find_ours(int ifindex, XdpMode& mode);
  // Detaches the nvqos XDP program from the interface; false if there was none.
  static Result<bool> detach_ours(int ifindex, const std::string& ifname);

  // Leaves the program attached on destruction (restart with --keep-on-exit).
  void release() { released_ = true; }
  int prog_fd() const;

  XdpMode mode() const { return mode_; }
  // False when libxdp fell back to owning the hook alone (no dispatcher): then
  // no other XDP program can share the interface while we are attached.
  bool shared_via_dispatcher() const { return dispatcher_; }

 private:
  XdpAttachment(xdp_program* prog, bpf_object* obj, int ifindex, std::string ifname, XdpMode mode, bool dispatcher);
  xdp_program* prog_;
  bpf_object* obj_;
  int ifindex_;
  std::string ifname_;
  XdpMode mode_;  // native or generic, as attached
  bool dispatcher_;
  bool released_ = false;
};

}  // namespace nvqos::agent
