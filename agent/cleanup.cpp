#include "cleanup.hpp"

#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <vector>

#include "kernel_objects.hpp"
#include "pinning.hpp"
#include "shaper.hpp"

namespace nvqos::agent {
namespace {

struct InterfaceCleanup {
  std::vector<std::string> removed;
  std::vector<std::string> errors;
};

void detach_attachments(int ifindex, const std::string& ifname, InterfaceCleanup& c) {
  for (TcDirection d : {TcDirection::ingress, TcDirection::egress}) {
    auto r = TcFilter::detach(ifindex, ifname, d);
    if (!r) c.errors.push_back(r.error().message);
    else if (r.value()) c.removed.push_back(std::string("tc ") + to_string(d) + " filter");
  }
  auto x = XdpAttachment::detach_ours(ifindex, ifname);
  if (!x) c.errors.push_back(x.error().message);
  else if (x.value()) c.removed.push_back("XDP program");
  // The HTB tree is found by its handle, so a root qdisc of another tool stays.
  auto h = remove_our_htb_root(ifindex, ifname);
  if (!h) c.errors.push_back(h.error().message);
  else if (h.value()) c.removed.push_back("HTB root qdisc 4e56:");
}

void report(std::ostream& out, const std::string& ifname, const InterfaceCleanup& c, CleanupReport& total) {
  if (!c.removed.empty()) ++total.interfaces_cleaned;
  total.errors += static_cast<int>(c.errors.size());
  if (c.removed.empty() && c.errors.empty()) return;
  out << "cleanup: " << ifname << ": ";
  std::string sep;
  for (const auto& r : c.removed) {
    out << sep << "removed " << r;
    sep = ", ";
  }
  for (const auto& e : c.errors) {
    out << sep << "FAILED: " << e;
    sep = ", ";
  }
  out << "\n";
}

}  // namespace

CleanupReport cleanup_host(const std::string& pin_root, std::ostream& out) {
  CleanupReport total;
  std::set<std::string> done;
  std::error_code ec;
  // First what the pins describe: they also tell which clsact qdiscs are ours.
  if (std::filesystem::is_directory(pin_root, ec)) {
    out << "cleanup: pinned data paths under " << pin_root << "\n";
    for (const auto& entry : std::filesystem::directory_iterator(pin_root, ec)) {
      if (!entry.is_directory()) continue;
      const std::string ifname = entry.path().filename().string();
      InterfaceCleanup c;
      const auto state = peek_persisted_state(pin_root, ifname);
      if (const int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()))) {
        detach_attachments(ifindex, ifname, c);
        if (state && state->created_clsact) {
          if (auto s = ClsactQdisc::remove(ifindex, ifname); !s) c.errors.push_back(s.error().message);
          else c.removed.push_back("clsact qdisc");
        }
        done.insert(ifname);
      }
      int pins = 0;
      for (const auto& pin : std::filesystem::directory_iterator(entry.path(), ec))
        if (::unlink(pin.path().c_str()) == 0) ++pins;
      if (::rmdir(entry.path().c_str()) != 0) c.errors.push_back("remove " + entry.path().string() + ": " + std::strerror(errno));
      if (pins) c.removed.push_back(std::to_string(pins) + " pins");
      report(out, ifname, c, total);
    }
    if (::rmdir(pin_root.c_str()) != 0 && errno != ENOENT) {
      out << "cleanup: FAILED to remove " << pin_root << ": " << std::strerror(errno) << "\n";
      ++total.errors;
    }
  }
  // Then every interface: a killed agent whose pins were lost still left its
  // filters (found by our handle/priority and program names) and XDP program.
  out << "cleanup: scanning interfaces for nvqos filters and XDP programs\n";
  if (struct if_nameindex* list = if_nameindex()) {
    for (struct if_nameindex* i = list; i->if_index != 0; ++i) {
      if (done.count(i->if_name)) continue;
      InterfaceCleanup c;
      detach_attachments(static_cast<int>(i->if_index), i->if_name, c);
      report(out, i->if_name, c, total);
    }
    if_freenameindex(list);
  }
  out << "cleanup: done: " << total.interfaces_cleaned << " interface(s) cleaned, " << total.errors << " error(s)\n";
  return total;
}

}  // namespace nvqos::agent
