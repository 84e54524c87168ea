// What the host offers nvqos: capabilities, kernel features, bpffs. Checked at
// start so a missing piece is named up front instead of surfacing as a bare
// EPERM from the middle of a load.
#pragma once

#include <string>
#include <vector>

#include "result.hpp"

namespace nvqos::agent {

struct HostFeatures {
  std::string kernel_release;
  bool kernel_btf = false;  // /sys/kernel/btf/vmlinux
  bool bpffs_mounted = false;
  std::vector<std::string> missing_capabilities;  // e.g. "CAP_BPF"
};

HostFeatures probe_host();

// Capabilities the agent needs to load and attach programs (CAP_SYS_ADMIN
// stands in for CAP_BPF/CAP_PERFMON on kernels before 5.8).
Status check_capabilities(const HostFeatures& host);

// Mounts bpffs at /sys/fs/bpf unless one is mounted there already.
Status ensure_bpffs(const std::string& path = "/sys/fs/bpf");

}  // namespace nvqos::agent
