#include "stats.hpp"

#include <nlohmann/json.hpp>
#include <nvqos/wireclock/latency_json.h>

#include <cstdio>
#include <iomanip>

namespace nvqos::load {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;
using wireclock::kReportQuantiles;
using wireclock::latency_json;

double seconds(const JobStats& s) { return std::chrono::duration<double>(s.elapsed).count(); }
double us(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

std::string fmt(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

bool stamped(const JobSpec& spec) { return spec.latency_clock != wireclock::LatencyClock::kApp; }
bool wire(const JobSpec& spec) { return spec.latency_clock == wireclock::LatencyClock::kWire; }

const wireclock::StampedClock& selected_clock(const JobSpec& spec, const OpStats& st) {
  return wire(spec) ? st.wire_clock : st.kernel_clock;
}

}  // namespace

const LogLinearHistogram& selected_latency(const JobSpec& spec, const OpStats& st) {
  return stamped(spec) ? selected_clock(spec, st).latency : st.latency;
}

void print_text_report(std::ostream& out, const std::vector<JobReport>& jobs) {
  const char* header[] = {"job", "op", "IOs", "IOPS", "MiB/s", "min", "p50", "p90", "p99",
                          "p99.9", "p99.99", "max", "errors"};
  std::vector<std::vector<std::string>> rows;
  rows.emplace_back(std::begin(header), std::end(header));
  std::vector<std::string> notes;
  for (const auto& jr : jobs) {
    const auto& s = *jr.stats;
    if (!s.fatal_error.empty()) {
      notes.push_back("job " + jr.spec->name + " failed: " + s.fatal_error);
      continue;
    }
    double secs = seconds(s);
    for (int o = 0; o < kOpCount; ++o) {
      const OpStats& st = s.ops[o];
      if (st.ios == 0 && st.errors.empty()) continue;
      bool paced = jr.spec->rate_iops > 0;
      const LogLinearHistogram& h = paced ? st.intended_latency : selected_latency(*jr.spec, st);
      std::vector<std::string> row{jr.spec->name, op_name(static_cast<Op>(o)), std::to_string(st.ios),
                                   fmt(secs > 0 ? st.ios / secs : 0, 0),
                                   fmt(secs > 0 ? st.bytes / kMiB / secs : 0, 1), fmt(us(h.min()), 1)};
      for (const auto& q : kReportQuantiles) row.push_back(fmt(us(h.quantile(q.q)), 1));
      row.push_back(fmt(us(h.max()), 1));
      row.push_back(std::to_string(st.error_count()));
      rows.push_back(std::move(row));
      for (const auto& [name, count] : st.errors)
        notes.push_back("job " + jr.spec->name + " " + op_name(static_cast<Op>(o)) + ": " +
                        std::to_string(count) + " x " + name);
      if (stamped(*jr.spec) && !paced)
        notes.push_back("job " + jr.spec->name + " " + op_name(static_cast<Op>(o)) + ": " +
                        wireclock::latency_clock_name(jr.spec->latency_clock) + " clock (" +
                        std::to_string(selected_clock(*jr.spec, st).latency.count()) + " timed, " +
                        std::to_string(selected_clock(*jr.spec, st).untimed()) +
                        " without stamps); app clock: p50 " + fmt(us(st.latency.quantile(0.5)), 1) +
                        " us, p99 " + fmt(us(st.latency.quantile(0.99)), 1) + " us, p99.9 " +
                        fmt(us(st.latency.quantile(0.999)), 1) + " us");
      if (paced)
        notes.push_back("job " + jr.spec->name + " " + op_name(static_cast<Op>(o)) +
                        ": paced at " + std::to_string(jr.spec->rate_iops) +
                        " IOPS; latency is from the scheduled send time (open loop); from the actual send: p50 " +
                        fmt(us(st.latency.quantile(0.5)), 1) + " us, p99 " +
                        fmt(us(st.latency.quantile(0.99)), 1) + " us");
    }
    if (jr.spec->verify)
      notes.push_back("job " + jr.spec->name + ": verify checked " + std::to_string(s.verified_blocks) +
                      " x 512 B chunks, " + std::to_string(s.unwritten_blocks) + " never written");
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  // The header names the most precise clock any job used (the enum runs app < kernel < wire).
  wireclock::LatencyClock clock = wireclock::LatencyClock::kApp;
  for (const auto& jr : jobs) clock = std::max(clock, jr.spec->latency_clock);
  out << "latency in microseconds (us), throughput in MiB/s (1 MiB = 2^20 bytes); latency clock: "
      << (clock == wireclock::LatencyClock::kWire     ? "wire (capsule's TX stamp to the completion's packet)"
          : clock == wireclock::LatencyClock::kKernel ? "kernel (capsule's TX stamp to the completion's RX stamp)"
                                                      : "app (send call to completion parsed)")
      << "\n";
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (i < 2) out << std::left << std::setw(static_cast<int>(width[i])) << r[i] << "  ";
      else out << std::right << std::setw(static_cast<int>(width[i])) << r[i] << (i + 1 < r.size() ? "  " : "");
    }
    out << '\n';
  }
  for (const auto& n : notes) out << n << '\n';
}

void print_json_report(std::ostream& out, const std::vector<JobReport>& jobs) {
  nlohmann::json doc;
  doc["units"] = {{"latency", "us"}, {"throughput", "MiB/s"}, {"bytes", "bytes"}, {"elapsed", "s"}};
  doc["jobs"] = nlohmann::json::array();
  for (const auto& jr : jobs) {
    const auto& spec = *jr.spec;
    const auto& s = *jr.stats;
    nlohmann::json j;
    j["name"] = spec.name;
    j["target"] = spec.host + ":" + std::to_string(spec.port);
    j["subnqn"] = spec.subnqn;
    if (!spec.source.empty()) j["source"] = spec.source;
    j["rw"] = describe_rw(spec);
    j["bs"] = spec.block_size;
    j["qd"] = spec.qd;
    j["queues"] = spec.queues;
    j["header_digest"] = spec.header_digest;
    j["data_digest"] = spec.data_digest;
    j["rate_iops"] = spec.rate_iops;
    j["latency_clock"] = wireclock::latency_clock_name(spec.latency_clock);
    j["elapsed_s"] = seconds(s);
    if (!s.fatal_error.empty()) j["error"] = s.fatal_error;
    if (s.controller.connected) {
      const auto& c = s.controller;
      j["controller"] = {{"cntlid", c.cntlid},
                         {"model", c.model},
                         {"in_capsule_data_bytes", c.in_capsule_data},
                         {"lba_size", c.lba_size},
                         {"namespace_blocks", c.namespace_blocks}};
      j["writes"] = c.in_capsule_writes ? "in-capsule" : "r2t";
      j["local_ports"] = c.local_ports;
    }
    double secs = seconds(s);
    nlohmann::json ops = nlohmann::json::object();
    for (int o = 0; o < kOpCount; ++o) {
      const OpStats& st = s.ops[o];
      if (st.ios == 0 && st.errors.empty()) continue;
      nlohmann::json oj;
      oj["ios"] = st.ios;
      oj["bytes"] = st.bytes;
      oj["iops"] = secs > 0 ? st.ios / secs : 0;
      oj["mib_per_s"] = secs > 0 ? st.bytes / kMiB / secs : 0;
      oj["latency_us"] = latency_json(selected_latency(spec, st));
      if (stamped(spec)) {
        oj["app_latency_us"] = latency_json(st.latency);
        oj["kernel_latency_us"] = latency_json(st.kernel_clock.latency);
        oj["kernel_clock"] = st.kernel_clock.counts_json(true);
      }
      if (wire(spec)) {
        oj["wire_latency_us"] = latency_json(st.wire_clock.latency);
        oj["wire_clock"] = st.wire_clock.counts_json(false);
      }
      if (spec.rate_iops) oj["intended_latency_us"] = latency_json(st.intended_latency);
      oj["errors"] = st.errors;
      ops[op_name(static_cast<Op>(o))] = oj;
    }
    j["ops"] = ops;
    if (wire(spec))
      j["wire_tap"] = {{"packets", s.wire_tap.packets},
                       {"drops", s.wire_tap.drops},
                       {"stamped_at_tap", s.wire_tap.stamped_at_tap}};
    if (spec.verify) j["verify"] = {{"checked_chunks", s.verified_blocks}, {"unwritten_chunks", s.unwritten_blocks}};
    doc["jobs"].push_back(j);
  }
  out << doc.dump(2) << '\n';
}

}  // namespace nvqos::load
