// `nvqosctl slo`: the SLO controller's state from GET /v1/slo as tables —
// objectives against their targets, the adapted classes' effective ceilings,
// and the latest adjustments.
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

using nlohmann::json;

namespace {

std::string mbit(double bps) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", bps / 1e6);
  return buf;
}

std::string quantile_name(double q) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "p%g", q * 100);
  return buf;
}

}  // namespace

void print_slo(const json& s) {
  const std::string mode = s.value("mode", "off");
  std::cout << "SLO controller: " << mode;
  if (mode != "off") std::cout << ", interval " << s.value("interval_ms", 0) << " ms";
  std::cout << "\n";
  if (mode == "off") {
    std::cout << "(no class declares objectives, slo_controller.enabled is false, or no interface has a known "
                 "capacity)\n";
    return;
  }
  for (const auto& ifc : s["interfaces"]) {
    std::cout << "\ninterface " << ifc.value("name", "?") << " (capacity " << mbit(ifc.value("capacity_bps", 0.0))
              << " Mbit/s)\n";
    std::printf("  %-28s %12s %12s %-11s %9s %11s\n", "objective", "last (us)", "target (us)", "verdict", "commands",
                "compliance");
    bool any_exhausted = false;
    for (const auto& o : ifc["objectives"]) {
      const std::string name =
          o.value("class", "?") + " " + o.value("op", "?") + " " + quantile_name(o.value("quantile", 0.0));
      const bool exhausted = o.value("exhausted", false);
      any_exhausted = any_exhausted || exhausted;
      std::string compliance = "-";
      if (o.contains("compliance_ratio")) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.1f%%", 100 * o["compliance_ratio"].get<double>());
        compliance = buf;
      }
      std::printf("  %-28s %12.0f %12.0f %-11s %9llu %11s\n", name.c_str(), o.value("last_latency_us", 0.0),
                  o.value("max_latency_us", 0.0), (o.value("verdict", "?") + (exhausted ? "*" : "")).c_str(),
                  o.value("last_commands", 0ull), compliance.c_str());
    }
    if (any_exhausted)
      std::cout << "  * missed with every lower class at its floor: nothing is left to cut; the latency is not (only) "
                   "the neighbours' (docs/operations.md, NvqosSloMissedAtFloors)\n";
    std::printf("\n  %-16s %4s %-10s %14s %12s %12s %-10s %6s %6s  %s\n", "class", "prio", "adapted", "effective Mb/s",
                "floor Mb/s", "max Mb/s", "verdict", "cuts", "raises", "last reason");
    for (const auto& c : ifc["classes"]) {
      std::printf("  %-16s %4u %-10s %14s %12s %12s %-10s %6llu %6llu  %s\n", c.value("name", "?").c_str(),
                  c.value("priority", 0u), c.value("controlled", false) ? "yes" : "no",
                  mbit(c.value("effective_bps", 0.0)).c_str(), mbit(c.value("floor_bps", 0.0)).c_str(),
                  mbit(c.value("max_bps", 0.0)).c_str(), c.value("verdict", "?").c_str(), c.value("cuts", 0ull),
                  c.value("raises", 0ull), c.value("last_reason", "").c_str());
      if (c.contains("iops"))
        std::printf("  %-16s %4s %-10s %9.0f IOPS %7.0f IOPS %7.0f IOPS\n", "", "", "", c["iops"].value("effective", 0.0),
                    c["iops"].value("floor", 0.0), c["iops"].value("max", 0.0));
    }
  }
  if (!s["events"].empty()) std::cout << "\nlatest adjustments (" << (mode == "dry_run" ? "not applied: dry run" : "applied")
                                      << ")\n";
  for (const auto& e : s["events"]) {
    const std::time_t t = static_cast<std::time_t>(e.value("time_unix_seconds", 0.0));
    char when[32];
    std::strftime(when, sizeof when, "%H:%M:%S", std::localtime(&t));
    std::printf("  %s %-10s %-16s %9s -> %9s Mbit/s  %s%s\n", when, e.value("interface", "?").c_str(),
                e.value("class", "?").c_str(), mbit(e.value("from_bps", 0.0)).c_str(),
                mbit(e.value("to_bps", 0.0)).c_str(), e.value("reason", "").c_str(),
                e.value("applied", false) || mode == "dry_run" ? "" : " (NOT APPLIED: see the agent's log)");
  }
}
