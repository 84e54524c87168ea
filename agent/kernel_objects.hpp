// RAII owners of the kernel objects the agent creates: a loaded skeleton, a tc
// clsact hook and filter, an XDP attachment. Destruction undoes exactly what
// construction did, nothing more: a clsact qdisc that existed before us stays.
#pragma once

#include <bpf/libbpf.h>

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
  static Result<std::unique_ptr<ClsactQdisc>> ensure(int ifindex, const std::string& ifname);
  ~ClsactQdisc();
  ClsactQdisc(const ClsactQdisc&) = delete;
  ClsactQdisc& operator=(const ClsactQdisc&) = delete;

 private:
  ClsactQdisc(int ifindex, std::string ifname, bool created);
  int ifindex_;
  std::string ifname_;
  bool created_;
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

 private:
  TcFilter(int ifindex, std::string ifname, TcDirection direction);
  int ifindex_;
  std::string ifname_;
  TcDirection direction_;
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
};

}  // namespace nvqos::agent
