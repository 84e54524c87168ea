// nvqos-agent --cleanup: removes everything nvqos installed on a host, from
// its pins (which also say which clsact qdiscs it created) and by scanning
// every interface of the network namespace for its filters and XDP program.
#pragma once

#include <ostream>
#include <string>

namespace nvqos::agent {

struct CleanupReport {
  int interfaces_cleaned = 0;  // interfaces where something of ours was removed
  int errors = 0;
};

// Progress and what was removed go to `out`, one line per interface.
CleanupReport cleanup_host(const std::string& pin_root, std::ostream& out);

}  // namespace nvqos::agent
