// nvqos-bench-bpf: per-packet cost of the data path's BPF programs under
// BPF_PROG_TEST_RUN, against the floor of an empty program of the same type.
// Prints a table; --json FILE also writes the figures for the benchmark report.
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_empty.skel.h"
#include "datapath_harness.hpp"
#include "nvqos/nvmf/nvme.h"
#include "nvqos/nvmf/pdu.h"
#include "packet_builder.hpp"

namespace {

using nvqos::testing::Bytes;
using nvqos::testing::Datapath;
using nvqos::testing::PacketBuilder;
using nvqos::testing::RunResult;

constexpr std::uint16_t kNvmePort = NVQOS_PORT_NVME_IO;
constexpr std::uint16_t kLocalPort = 40000;
constexpr double kGoalNonNvmeNs = 20;    // above the floor
constexpr double kGoalKnownFlowNs = 60;  // above the floor

// A bad command line: reported with the usage text.
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct Options {
  std::uint32_t repeat = 1000000;
  std::uint32_t runs = 7;
  std::uint32_t single_shots = 20000;
  std::string json_path;
};

void usage(std::FILE *out) {
  std::fprintf(out,
               "usage: nvqos-bench-bpf [--repeat N] [--runs N] [--single-shots N] [--json FILE]\n"
               "  --repeat N        program runs per measurement (default 1000000)\n"
               "  --runs N          measurements per figure; the median is reported (default 7)\n"
               "  --single-shots N  distinct packets per new-flow measurement (default 20000)\n"
               "  --json FILE       also write the figures as JSON to FILE\n"
               "Needs root (loads BPF programs).\n");
}

std::uint32_t parse_count(const std::string &opt, const char *text) {
  char *end = nullptr;
  errno = 0;
  const unsigned long v = std::strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v == 0 || v > 100000000)
    throw UsageError(opt + ": expected a count from 1 to 100000000, got '" + text + "'");
  return static_cast<std::uint32_t>(v);
}

Options parse_options(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) throw UsageError(arg + ": unknown option or missing value");
    const char *value = argv[++i];
    if (arg == "--repeat")
      o.repeat = parse_count(arg, value);
    else if (arg == "--runs")
      o.runs = parse_count(arg, value);
    else if (arg == "--single-shots")
      o.single_shots = parse_count(arg, value);
    else if (arg == "--json")
      o.json_path = value;
    else
      throw UsageError(arg + ": unknown option");
  }
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Row {
  std::string program;
  std::string packet;
  std::string method;  // "repeat" or "single-shot"
  std::string ports;   // how NVMe/TCP ports were looked up: "hash", "bitmap", or "-"
  double ns_per_pkt;
  double floor_ns;
  std::optional<double> goal_ns;  // above the floor

  double above() const { return ns_per_pkt - floor_ns; }
  std::optional<bool> pass() const {
    if (!goal_ns) return std::nullopt;
    return above() <= *goal_ns;
  }
};

class Bench {
 public:
  explicit Bench(const Options &o) : opts_(o) {}

  // Median over runs of the kernel's mean per repeat.
  double repeated(const std::string &what, const std::function<RunResult(std::uint32_t)> &run) {
    std::fprintf(stderr, "measuring %s (%u runs x %u packets)...\n", what.c_str(), opts_.runs,
                 opts_.repeat);
    std::vector<double> per_run;
    for (std::uint32_t r = 0; r < opts_.runs; ++r) per_run.push_back(run(opts_.repeat).duration_ns);
    return median(per_run);
  }

  // Median over runs of the median single-run cost over distinct packets:
  // for paths that a repeated packet would not take twice (a flow insert).
  double single_shot(const std::string &what,
                     const std::function<RunResult(std::uint32_t run, std::uint32_t i)> &run) {
    std::fprintf(stderr, "measuring %s (%u runs x %u distinct packets, one run each)...\n",
                 what.c_str(), opts_.runs, opts_.single_shots);
    std::vector<double> per_run;
    for (std::uint32_t r = 0; r < opts_.runs; ++r) {
      std::vector<double> shots;
      shots.reserve(opts_.single_shots);
      for (std::uint32_t i = 0; i < opts_.single_shots; ++i) shots.push_back(run(r, i).duration_ns);
      per_run.push_back(median(shots));
    }
    return median(per_run);
  }

 private:
  const Options &opts_;
};

std::string kernel_release() {
  utsname u{};
  return uname(&u) == 0 ? u.release : "unknown";
}

void print_table(const std::vector<Row> &rows) {
  std::printf("\n%-22s %-34s %-7s %-11s %7s %9s %8s %5s\n", "program", "packet", "ports",
              "method", "ns/pkt", "ns>floor", "goal ns", "");
  for (const Row &r : rows) {
    const auto pass = r.pass();
    std::printf("%-22s %-34s %-7s %-11s %7.0f %9.0f %8s %5s\n", r.program.c_str(),
                r.packet.c_str(), r.ports.c_str(), r.method.c_str(), r.ns_per_pkt, r.above(),
                r.goal_ns ? ("<= " + std::to_string(static_cast<int>(*r.goal_ns))).c_str() : "-",
                pass ? (*pass ? "PASS" : "MISS") : "");
  }
  std::printf("\nns/pkt: kernel-measured time per program run (BPF_PROG_TEST_RUN), median of runs.\n"
              "ns>floor: above the empty program of the same type measured the same way.\n");
}

void write_json(const std::string &path, const Options &o, const std::vector<Row> &rows) {
  nlohmann::json j;
  j["benchmark"] = "nvqos-bench-bpf";
  j["kernel"] = kernel_release();
  j["repeat"] = o.repeat;
  j["runs"] = o.runs;
  j["single_shots"] = o.single_shots;
  j["unit"] = "ns";
  for (const Row &r : rows) {
    nlohmann::json row{{"program", r.program},         {"packet", r.packet},
                       {"method", r.method}, {"ports", r.ports}, {"ns_per_pkt", r.ns_per_pkt},
                       {"floor_ns", r.floor_ns},       {"ns_above_floor", r.above()}};
    row["goal_ns_above_floor"] = r.goal_ns ? nlohmann::json(*r.goal_ns) : nlohmann::json(nullptr);
    row["pass"] = r.pass() ? nlohmann::json(*r.pass()) : nlohmann::json(nullptr);
    j["rows"].push_back(row);
  }
  std::ofstream out(path);
  out << j.dump(2) << '\n';
  if (!out) throw std::runtime_error("write " + path + ": " + std::strerror(errno));
}

struct EmptyDeleter {
  void operator()(bench_empty *s) const { bench_empty__destroy(s); }
};

int run_bench(const Options &o) {
  if (const std::string why = nvqos::testing::bpf_unavailable_reason(); !why.empty()) {
    std::fprintf(stderr, "nvqos-bench-bpf: %s\n", why.c_str());
    return 1;
  }
  std::unique_ptr<bench_empty, EmptyDeleter> empty(bench_empty__open_and_load());
  if (!empty) throw std::runtime_error(std::string("load bench_empty: ") + std::strerror(errno));
  Datapath dp;
  dp.add_nvme_port(kNvmePort);
  dp.add_nvme_port(NVQOS_PORT_NVME_DISCOVERY, NVQOS_PORT_KIND_DISCOVERY);
  dp.set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT);
  // A policy of realistic size: the flow miss path walks a populated trie.
  for (std::uint32_t t = 1; t <= 256; ++t)
    dp.add_rule(t % 2 ? kNvmePort : 0, "10.100." + std::to_string(t - 1) + ".0", 24, t);

  const Bytes other_in = PacketBuilder().ip("10.0.0.2", "10.0.0.1").tcp(443, kLocalPort).payload(100).build();
  const Bytes other_out = PacketBuilder().ip("10.0.0.1", "10.0.0.2").tcp(kLocalPort, 443).payload(100).build();
  const Bytes nvme_in = PacketBuilder().ip("10.0.0.2", "10.0.0.1").tcp(kNvmePort, kLocalPort).payload(100).build();
  const Bytes nvme_out = PacketBuilder().ip("10.0.0.1", "10.0.0.2").tcp(kLocalPort, kNvmePort).payload(100).build();
  const Bytes nvme_unknown_in = PacketBuilder().ip("10.9.9.9", "10.0.0.1").tcp(kNvmePort, 50000).payload(100).build();
  dp.ingress(nvme_in);  // opens the known flow

  Bench bench(o);
  auto *tc_empty = empty->progs.bench_tc_empty;
  auto *xdp_prog = dp.skel().progs.nvqos_xdp_ingress;
  auto *tc_in = dp.skel().progs.nvqos_tc_ingress;
  auto *tc_out = dp.skel().progs.nvqos_tc_egress;
  using nvqos::testing::run_tc;
  using nvqos::testing::run_xdp;

  const double tc_floor = bench.repeated("empty tc", [&](std::uint32_t n) { return run_tc(tc_empty, nvme_in, {}, n); });
  const double xdp_floor = bench.repeated("empty XDP", [&](std::uint32_t n) { return run_xdp(empty->progs.bench_xdp_empty, nvme_in, n); });

  std::vector<Row> rows;
  rows.push_back({"bench_tc_empty", "NVMe/TCP", "repeat", "-", tc_floor, tc_floor, std::nullopt});
  rows.push_back({"bench_xdp_empty", "NVMe/TCP", "repeat", "-", xdp_floor, xdp_floor, std::nullopt});
  rows.push_back({"bench_tc_ktime", "(bpf_ktime_get_ns)", "repeat", "-",
                  bench.repeated("bpf_ktime_get_ns", [&](std::uint32_t n) { return run_tc(empty->progs.bench_tc_ktime, nvme_in, {}, n); }),
                  tc_floor, std::nullopt});
  rows.push_back({"bench_tc_ktime_coarse", "(bpf_ktime_get_coarse_ns)", "repeat", "-",
                  bench.repeated("bpf_ktime_get_coarse_ns", [&](std::uint32_t n) { return run_tc(empty->progs.bench_tc_ktime_coarse, nvme_in, {}, n); }),
                  tc_floor, std::nullopt});

  struct Case {
    const char *program;
    const bpf_program *prog;
    bool xdp;
    const char *packet;
    const Bytes *frame;
    std::optional<double> goal;
  };
  const Case cases[] = {
      {"nvqos_tc_ingress", tc_in, false, "non-NVMe TCP", &other_in, kGoalNonNvmeNs},
      {"nvqos_tc_egress", tc_out, false, "non-NVMe TCP", &other_out, kGoalNonNvmeNs},
      {"nvqos_tc_ingress", tc_in, false, "NVMe/TCP, known flow", &nvme_in, kGoalKnownFlowNs},
      {"nvqos_tc_egress", tc_out, false, "NVMe/TCP, known flow", &nvme_out, kGoalKnownFlowNs},
      {"nvqos_xdp_ingress", xdp_prog, true, "non-NVMe TCP", &other_in, kGoalNonNvmeNs},
      {"nvqos_xdp_ingress", xdp_prog, true, "NVMe/TCP, known flow", &nvme_in, kGoalKnownFlowNs},
      {"nvqos_xdp_ingress", xdp_prog, true, "NVMe/TCP, no flow (rule lookup)", &nvme_unknown_in, std::nullopt},
  };
  auto run_cases = [&](const char *ports) {
    for (const Case &c : cases) {
      const std::string what = std::string(c.program) + " on " + c.packet + ", ports by " + ports;
      const double ns = bench.repeated(what, [&](std::uint32_t n) {
        return c.xdp ? run_xdp(c.prog, *c.frame, n) : run_tc(c.prog, *c.frame, {}, n);
      });
      rows.push_back({c.program, c.packet, "repeat", ports, ns, c.xdp ? xdp_floor : tc_floor, c.goal});
    }
  };
  run_cases("hash");
  dp.set_port_bitmap({kNvmePort, NVQOS_PORT_NVME_DISCOVERY});
  dp.set_settings(NVQOS_SETTINGS_F_DEFAULT_TENANT | NVQOS_SETTINGS_F_PORT_BITMAP);
  run_cases("bitmap");

  // QoS on tc egress, the known flow (tenant 0, bitmap ports): without QoS flags, then with
  // priority + DSCP + EDT on the real clock, within the limiter's rate (no stamp) and far
  // above it (every packet stamped). A repeated skb keeps the DSCP its first run wrote, so the
  // rewrite (un-cloned test skbs: no header copy) is measured in single shots, where every
  // run gets a fresh copy of the frame.
  const std::uint32_t all_qos =
      NVQOS_TENANT_F_SET_PRIORITY | NVQOS_TENANT_F_MARK_DSCP | NVQOS_TENANT_F_EDT;
  auto qos = [&](std::uint32_t flags, std::uint64_t bytes_per_sec) {
    nvqos_tenant_config c{};
    c.flags = NVQOS_TENANT_F_ACTIVE | flags;
    c.limiter_id = 0;
    c.classid[NVQOS_ROLE_INITIATOR] = c.classid[NVQOS_ROLE_TARGET] = 0x10010;
    c.dscp = 46;
    dp.set_tenant_config(NVQOS_TENANT_DEFAULT, c);
    nvqos_limiter_config l{};
    l.limit[NVQOS_LIMIT_EGRESS_BYTES] = {bytes_per_sec, bytes_per_sec / 1000};
    dp.set_limiter(0, l);
  };
  constexpr std::uint64_t kFastBytes = 100000000000ull / 8;  // 100 Gbit/s: never reached here
  constexpr std::uint64_t kSlowBytes = 1000000;               // 8 Mbit/s: always in debt
  struct QosCase {
    const char *packet;
    std::uint32_t flags;
    std::uint64_t rate;
  };
  const QosCase qos_cases[] = {
      {"NVMe/TCP known flow, QoS off", 0, kFastBytes},
      {"... QoS prio+DSCP+EDT, within rate", all_qos, kFastBytes},
      {"... QoS prio+DSCP+EDT, throttled", all_qos, kSlowBytes},
  };
  for (const QosCase &c : qos_cases) {
    qos(c.flags, c.rate);
    rows.push_back({"nvqos_tc_egress", c.packet, "repeat", "bitmap",
                    bench.repeated(std::string("nvqos_tc_egress, ") + c.packet,
                                   [&](std::uint32_t n) { return run_tc(tc_out, nvme_out, {}, n); }),
                    tc_floor, std::nullopt});
  }
  const double qos_shot_floor = bench.single_shot("empty tc, single shots of one frame", [&](std::uint32_t, std::uint32_t) {
    return run_tc(tc_empty, nvme_out);
  });
  rows.push_back({"bench_tc_empty", "NVMe/TCP, one frame", "single-shot", "-", qos_shot_floor, qos_shot_floor, std::nullopt});
  const QosCase qos_shots[] = {
      {"NVMe/TCP known flow, QoS off", 0, kFastBytes},
      {"... QoS DSCP (rewritten every skb)", NVQOS_TENANT_F_MARK_DSCP, kFastBytes},
      {"... QoS prio+DSCP+EDT, throttled", all_qos, kSlowBytes},
  };
  for (const QosCase &c : qos_shots) {
    qos(c.flags, c.rate);
    rows.push_back({"nvqos_tc_egress", c.packet, "single-shot", "bitmap",
                    bench.single_shot(std::string("nvqos_tc_egress, ") + c.packet + ", single shots",
                                      [&](std::uint32_t, std::uint32_t) { return run_tc(tc_out, nvme_out); }),
                    qos_shot_floor, std::nullopt});
  }
  qos(0, kFastBytes);  // the PDU walk figures below are without QoS

  // A repeated packet inserts its flow once; a new flow needs a new packet each run.
  auto new_flow_packet = [](std::uint32_t run, std::uint32_t i) {
    const std::string remote = "10.200." + std::to_string(run % 250) + "." + std::to_string(i % 250 + 1);
    return PacketBuilder().ip(remote, "10.0.0.1").tcp(kNvmePort, 1024 + i / 250).payload(100).build();
  };
  const double shot_floor = bench.single_shot("empty tc, single shots", [&](std::uint32_t r, std::uint32_t i) {
    return run_tc(tc_empty, new_flow_packet(r, i));
  });
  const double shot_new = bench.single_shot("nvqos_tc_ingress on new flows", [&](std::uint32_t r, std::uint32_t i) {
    return run_tc(tc_in, new_flow_packet(r + 1000, i));
  });
  rows.push_back({"bench_tc_empty", "distinct packets", "single-shot", "-", shot_floor, shot_floor, std::nullopt});
  rows.push_back({"nvqos_tc_ingress", "NVMe/TCP, new flow (LRU insert)", "single-shot", "bitmap", shot_new, shot_floor, std::nullopt});

  // The NVMe/TCP PDU walk. A repeated packet would be walked once and then skipped as a
  // retransmission, so each single shot is the next segment of the stream (distinct
  // sequence numbers; commands with distinct CIDs). BPF_PROG_TEST_RUN takes frames up to
  // about a page: the "4 KiB data PDU" is the first 3 KiB segment of one (the walk reads the
  // header and jumps over the data by PLEN whatever its length), and the 16 PDUs of a
  // 64 KiB super-packet are 16 C2HData PDUs of 128 bytes (the same 16 header reads).
  namespace nvmf = nvqos::nvmf;
  const std::uint32_t h2c_isn = 1000, c2h_isn = 5000;
  dp.egress(PacketBuilder().ip("10.0.0.1", "10.0.0.2").tcp(kLocalPort, kNvmePort, 0x02, h2c_isn).build());
  dp.ingress(PacketBuilder().ip("10.0.0.2", "10.0.0.1").tcp(kNvmePort, kLocalPort, 0x12, c2h_isn).build());
  const std::vector<std::uint8_t> data(4096, 0x5a);
  std::uint32_t h2c_seq = h2c_isn + 1, c2h_seq = c2h_isn + 1;
  auto command = [&](std::uint32_t cid) {
    const Bytes pdu = nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_read(cid, 1, 0, 7, 4096), {}});
    Bytes frame = PacketBuilder().ip("10.0.0.1", "10.0.0.2").tcp(kLocalPort, kNvmePort, 0x18, h2c_seq).payload(pdu).build();
    h2c_seq += pdu.size();
    return frame;
  };
  auto data_pdu = [&]() {
    nvmf::C2HData d;
    d.datal = 4096;
    d.data = std::span<const std::uint8_t>(data.data(), 4096);
    const Bytes pdu = nvmf::encode_pdu(d);
    Bytes frame = PacketBuilder().ip("10.0.0.2", "10.0.0.1").tcp(kNvmePort, kLocalPort, 0x18, c2h_seq)
                      .payload(Bytes(pdu.begin(), pdu.begin() + 3072)).build();
    c2h_seq += pdu.size();
    return frame;
  };
  auto sixteen_pdus = [&]() {
    Bytes pdus;
    for (int i = 0; i < 16; ++i) {
      nvmf::C2HData d;
      d.datal = 128;
      d.data = std::span<const std::uint8_t>(data.data(), 128);
      const Bytes pdu = nvmf::encode_pdu(d);
      pdus.insert(pdus.end(), pdu.begin(), pdu.end());
    }
    Bytes frame = PacketBuilder().ip("10.0.0.2", "10.0.0.1").tcp(kNvmePort, kLocalPort, 0x18, c2h_seq).payload(pdus).build();
    c2h_seq += pdus.size();
    return frame;
  };
  const std::uint32_t c2h_before_floor = c2h_seq;
  const double walk_floor = bench.single_shot("empty tc on NVMe/TCP segments, single shots", [&](std::uint32_t, std::uint32_t) {
    return run_tc(tc_empty, sixteen_pdus());
  });
  c2h_seq = c2h_before_floor;  // the empty program's segments were not part of the stream
  rows.push_back({"bench_tc_empty", "NVMe/TCP segments", "single-shot", "-", walk_floor, walk_floor, std::nullopt});
  rows.push_back({"nvqos_tc_egress", "PDU walk: 72-byte command capsule (in-flight insert)", "single-shot", "bitmap",
                  bench.single_shot("nvqos_tc_egress on command capsules", [&](std::uint32_t, std::uint32_t i) {
                    const auto cid = static_cast<std::uint16_t>(i);
                    const RunResult shot = run_tc(tc_out, command(cid));
                    // Completed (untimed) so the in-flight table stays as small as in real use.
                    nvmf::Cqe cqe;
                    cqe.cid = cid;
                    const Bytes rsp = nvmf::encode_pdu(nvmf::CapsuleResp{cqe});
                    run_tc(tc_in, PacketBuilder().ip("10.0.0.2", "10.0.0.1").tcp(kNvmePort, kLocalPort, 0x18, c2h_seq).payload(rsp).build());
                    c2h_seq += rsp.size();
                    return shot;
                  }),
                  walk_floor, std::nullopt});
  rows.push_back({"nvqos_tc_ingress", "PDU walk: 4 KiB C2HData PDU (first segment)", "single-shot", "bitmap",
                  bench.single_shot("nvqos_tc_ingress on data PDUs", [&](std::uint32_t, std::uint32_t) { return run_tc(tc_in, data_pdu()); }),
                  walk_floor, std::nullopt});
  rows.push_back({"nvqos_tc_ingress", "PDU walk: 16 PDUs in one skb", "single-shot", "bitmap",
                  bench.single_shot("nvqos_tc_ingress on 16-PDU skbs", [&](std::uint32_t, std::uint32_t) { return run_tc(tc_in, sixteen_pdus()); }),
                  walk_floor, std::nullopt});
  const Bytes mid_pdu = PacketBuilder().ip("10.0.0.2", "10.0.0.1").tcp(kNvmePort, kLocalPort, 0x10, c2h_seq - 100).payload(64).build();
  rows.push_back({"nvqos_tc_ingress", "PDU walk: segment inside a PDU's data (skipped)", "repeat", "bitmap",
                  bench.repeated("nvqos_tc_ingress on data-only segments", [&](std::uint32_t n) { return run_tc(tc_in, mid_pdu, {}, n); }),
                  tc_floor, std::nullopt});
  const nvqos_nvme_stats walk = dp.nvme_stats();
  if (walk.desync != 0) throw std::runtime_error("benchmark PDU streams desynchronised");

  if (dp.datapath_stats().parse_errors != 0) throw std::runtime_error("benchmark packets produced parse errors");
  print_table(rows);
  if (!o.json_path.empty()) {
    write_json(o.json_path, o, rows);
    std::printf("figures written to %s\n", o.json_path.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  try {
    return run_bench(parse_options(argc, argv));
  } catch (const UsageError &e) {
    std::fprintf(stderr, "nvqos-bench-bpf: %s\n", e.what());
    usage(stderr);
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "nvqos-bench-bpf: %s\n", e.what());
    return 1;
  }
}
