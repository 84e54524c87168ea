#include "host.hpp"

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "log.hpp"

namespace nvqos::agent {
namespace {

constexpr int kCapNetAdmin = 12;
constexpr int kCapSysAdmin = 21;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

std::uint64_t effective_capabilities() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  return 0;
}

bool is_bpffs(const std::string& path) {
  struct statfs fs {};
  return statfs(path.c_str(), &fs) == 0 && static_cast<unsigned long>(fs.f_type) == BPF_FS_MAGIC;
}

}  // namespace

HostFeatures probe_host() {
  HostFeatures h;
  utsname u{};
  if (uname(&u) == 0) h.kernel_release = u.release;
  struct stat st {};
  h.kernel_btf = stat("/sys/kernel/btf/vmlinux", &st) == 0;
  h.bpffs_mounted = is_bpffs("/sys/fs/bpf");

  auto caps = effective_capabilities();
  auto has = [&](int cap) { return (caps >> cap) & 1; };
  bool sys_admin = has(kCapSysAdmin);
  if (!has(kCapBpf) && !sys_admin) h.missing_capabilities.push_back("CAP_BPF");
  if (!has(kCapPerfmon) && !sys_admin) h.missing_capabilities.push_back("CAP_PERFMON");
  if (!has(kCapNetAdmin)) h.missing_capabilities.push_back("CAP_NET_ADMIN");
  return h;
}

Status check_capabilities(const HostFeatures& host) {
  if (host.missing_capabilities.empty()) return ok_status();
  std::string list;
  for (const auto& c : host.missing_capabilities) list += (list.empty() ? "" : ", ") + c;
  return Error{EPERM, "missing capabilities " + list +
                          ": run as root or grant them (e.g. setcap or the DaemonSet's securityContext)"};
}

Status ensure_bpffs(const std::string& path) {
  if (is_bpffs(path)) return ok_status();
  ::mkdir(path.c_str(), 0700);
  if (::mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0)
    return Error::from_errno(errno, "mount bpffs at " + path, "CAP_SYS_ADMIN");
  log::info("mounted bpffs", {{"path", path}});
  return ok_status();
}

}  // namespace nvqos::agent
