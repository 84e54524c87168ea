// End-to-end over loopback: the real nvqos-target and nvqos-load binaries.
// Reads and writes with verify, with and without digests, in-capsule and R2T
// writes, several queues and jobs, open-loop pacing, trace, and a bad SUBNQN.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "process_util.hpp"

namespace {

using nvqos::test::Process;
using nlohmann::json;

constexpr const char* kSubnqn = "nqn.2024-01.io.nvqos:e2e";
// The target's in-capsule data size in these tests: 4 KiB writes fit, 16 KiB
// and larger go by R2T, and MAXH2CDATA 16 KiB splits a 64 KiB R2T into 4 H2CData PDUs.
constexpr int kInlineDataSize = 8192;
constexpr int kMaxH2CData = 16384;

class LoadE2E : public ::testing::Test {
 protected:
  void SetUp() override { start_target(false); }

  void start_target(bool c2h_success, const std::string& service_time = "",
                    const std::vector<std::string>& extra_args = {}) {
    target_.reset();
    port_ = nvqos::test::free_port();
    dir_ = ::testing::TempDir();
    std::string cfg_path = dir_ + "/nvqos_e2e_target_" + std::to_string(port_) + ".json";
    json cfg = {{"listen", "127.0.0.1:" + std::to_string(port_)},
                {"inline_data_size", kInlineDataSize},
                {"max_h2c_data", kMaxH2CData},
                {"c2h_success", c2h_success},
                {"subsystems",
                 {{{"nqn", kSubnqn},
                   {"allow_any_host", true},
                   {"namespaces", {{{"size", "64M"}, {"block_size", 512}}, {{"size", "16M"}, {"block_size", 4096}}}}}}}};
    if (!service_time.empty()) cfg["service_time"] = service_time;
    std::ofstream(cfg_path) << cfg.dump();
    std::vector<std::string> argv{NVQOS_TARGET_BIN, "--config", cfg_path};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    target_ = std::make_unique<Process>(argv, dir_ + "/nvqos_e2e_target_" + std::to_string(port_));
    for (int i = 0; i < 250 && !nvqos::test::port_accepts(port_); ++i) {
      ASSERT_FALSE(target_->try_wait()) << "nvqos-target exited: " << target_->err();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(nvqos::test::port_accepts(port_)) << "nvqos-target did not listen: " << target_->err();
  }

  void TearDown() override {
    if (target_) {
      target_->terminate();
      target_->wait_for(std::chrono::seconds(5));
    }
  }

  struct Result {
    int status;
    std::string out, err;
    json report;
  };

  Result load(std::vector<std::string> args) {
    std::vector<std::string> argv{NVQOS_LOAD_BIN, "--target", "127.0.0.1:" + std::to_string(port_), "--subnqn",
                                  kSubnqn, "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    Process p(argv, dir_ + "/nvqos_e2e_load_" + std::to_string(++runs_));
    Result r;
    r.status = p.wait_for(std::chrono::seconds(60));
    r.out = p.out();
    r.err = p.err();
    try {
      r.report = json::parse(r.out);
    } catch (const json::exception&) {
    }
    return r;
  }

  static const json& op(const Result& r, size_t job, const char* name) { return r.report["jobs"][job]["ops"][name]; }

  // Stops nvqos-target and reads the service-time report it writes on exit (empty if none).
  json target_report_on_exit(const std::string& path) {
    target_->terminate();
    EXPECT_GE(target_->wait_for(std::chrono::seconds(5)), 0);
    std::ifstream in(path);
    EXPECT_TRUE(in) << "no report at " << path;
    return in ? json::parse(in) : json::object();
  }

  // A stamped clock's counts of `n` commands: each timed or counted as untimed, at most 1% untimed.
  static void expect_stamped(const json& counts, uint64_t n) {
    EXPECT_EQ(counts["timed"].get<uint64_t>() + counts["missing_tx_stamp"].get<uint64_t>() +
                  counts["missing_rx_stamp"].get<uint64_t>() + counts["reversed"].get<uint64_t>(),
              n);
    EXPECT_GE(counts["timed"].get<double>(), 0.99 * static_cast<double>(n)) << counts.dump();
  }

  static void expect_clean(const Result& r) {
    ASSERT_EQ(r.status, 0) << r.err << r.out;
    ASSERT_TRUE(r.report.contains("jobs")) << r.out;
    for (const auto& job : r.report["jobs"]) {
      EXPECT_FALSE(job.contains("error")) << job.dump();
      for (const auto& [name, o] : job["ops"].items()) EXPECT_TRUE(o["errors"].empty()) << name << ": " << o.dump();
    }
  }

  std::unique_ptr<Process> target_;
  uint16_t port_ = 0;
  std::string dir_;
  int runs_ = 0;
};

TEST_F(LoadE2E, RandomReadWriteVerifyInCapsuleTwoQueues) {
  auto r = load({"--rw", "randrw", "--rwmix-read", "50", "--bs", "4k", "--qd", "8", "--queues", "2", "--ios",
                 "6000", "--verify", "--size", "1m"});
  expect_clean(r);
  EXPECT_EQ(op(r, 0, "read")["ios"].get<uint64_t>() + op(r, 0, "write")["ios"].get<uint64_t>(), 6000u);
  EXPECT_GT(op(r, 0, "write")["ios"].get<uint64_t>(), 1000u);
  // 256 blocks, 3000 writes: almost every read finds data this run wrote.
  EXPECT_GT(r.report["jobs"][0]["verify"]["checked_chunks"].get<uint64_t>(), 1000u * 8);
  EXPECT_NE(r.err.find("writes in-capsule"), std::string::npos) << r.err;
  EXPECT_EQ(r.report["jobs"][0]["writes"], "in-capsule");
  EXPECT_EQ(r.report["jobs"][0]["controller"]["in_capsule_data_bytes"].get<int>(), kInlineDataSize);
  EXPECT_EQ(r.report["jobs"][0]["local_ports"].size(), 2u);
}

TEST_F(LoadE2E, R2TWritesSplitByMaxH2CDataVerify) {
  auto r = load({"--rw", "randrw", "--bs", "64k", "--qd", "4", "--queues", "2", "--ios", "800", "--verify", "--size",
                 "4m"});
  expect_clean(r);
  EXPECT_NE(r.err.find("writes by R2T"), std::string::npos) << r.err;
  EXPECT_EQ(r.report["jobs"][0]["writes"], "r2t");
  EXPECT_GT(r.report["jobs"][0]["verify"]["checked_chunks"].get<uint64_t>(), 0u);
}

TEST_F(LoadE2E, DigestsHeaderAndDataWithVerify) {
  for (const char* bs : {"4k", "32k"}) {
    auto r = load({"--rw", "randrw", "--bs", bs, "--qd", "4", "--queues", "2", "--ios", "1000", "--verify", "--digest",
                   "header,data", "--size", "2m"});
    expect_clean(r);
    EXPECT_TRUE(r.report["jobs"][0]["header_digest"].get<bool>());
    EXPECT_TRUE(r.report["jobs"][0]["data_digest"].get<bool>());
    EXPECT_GT(r.report["jobs"][0]["verify"]["checked_chunks"].get<uint64_t>(), 0u) << bs;
  }
}

TEST_F(LoadE2E, WrittenDataReadsBackInALaterRun) {
  // Sequential fill of 1 MiB, then a separate run reads it all back: every
  // chunk must carry this fill's pattern, none may be unwritten.
  auto w = load({"--rw", "write", "--bs", "16k", "--qd", "4", "--ios", "64", "--verify", "--size", "1m"});
  expect_clean(w);
  auto r = load({"--rw", "read", "--bs", "4k", "--qd", "4", "--queues", "2", "--ios", "256", "--verify", "--size",
                 "1m"});
  expect_clean(r);
  EXPECT_EQ(r.report["jobs"][0]["verify"]["checked_chunks"].get<uint64_t>(), 2048u);
  EXPECT_EQ(r.report["jobs"][0]["verify"]["unwritten_chunks"].get<uint64_t>(), 0u);
}

TEST_F(LoadE2E, ReadsCompletedByC2HDataSuccessFlag) {
  start_target(true);
  auto w = load({"--rw", "write", "--bs", "4k", "--qd", "4", "--ios", "128", "--verify", "--size", "512k"});
  expect_clean(w);
  auto r = load({"--rw", "randread", "--bs", "4k", "--qd", "4", "--ios", "2000", "--verify", "--size", "512k"});
  expect_clean(r);
  EXPECT_EQ(op(r, 0, "read")["ios"].get<uint64_t>(), 2000u);
  EXPECT_EQ(r.report["jobs"][0]["verify"]["checked_chunks"].get<uint64_t>(), 2000u * 8);
}

TEST_F(LoadE2E, FourKiBLbaNamespace) {
  auto r = load({"--nsid", "2", "--rw", "randrw", "--bs", "8k", "--qd", "8", "--ios", "1000", "--verify"});
  expect_clean(r);
}

// --latency-clock kernel on both tools, with in-capsule writes (header, then data, in sends of
// their own), R2T writes split into H2CData and digests: every command kernel-timed, the kernel
// span inside the app span, and the target's service inside the host's wire span.
TEST_F(LoadE2E, KernelClockTimesEveryCommandOnBothSides) {
  const std::string report = dir_ + "/nvqos_e2e_service_" + std::to_string(port_) + ".json";
  start_target(false, "fixed:200us", {"--latency-clock", "kernel", "--report", report});
  const std::string host = "nqn.2026-11.io.nvqos:e2e-kernel-clock";
  uint64_t ios[2] = {0, 0};  // read, write over both runs
  json load_kernel_p50;
  for (const char* bs : {"4k", "64k"}) {
    SCOPED_TRACE(bs);
    auto r = load({"--rw", "randrw", "--bs", bs, "--qd", "4", "--ios", "1500", "--verify", "--size", "4m",
                   "--digest", "header,data", "--latency-clock", "kernel", "--hostnqn", host});
    expect_clean(r);
    ASSERT_EQ(r.report["jobs"][0]["latency_clock"], "kernel");
    for (const char* name : {"read", "write"}) {
      SCOPED_TRACE(name);
      const json& o = op(r, 0, name);
      const uint64_t n = o["ios"].get<uint64_t>();
      ios[std::string(name) == "read" ? 0 : 1] += n;
      expect_stamped(o["kernel_clock"], n);
      EXPECT_EQ(o["latency_us"], o["kernel_latency_us"]);
      // The stamps lie between the send call and the completion parsed (0.4% histogram error).
      EXPECT_LE(o["kernel_latency_us"]["p50"].get<double>(), o["app_latency_us"]["p50"].get<double>() * 1.01);
      EXPECT_LE(o["kernel_latency_us"]["min"].get<double>(), o["app_latency_us"]["min"].get<double>() * 1.01);
      EXPECT_GE(o["kernel_latency_us"]["min"].get<double>(), 200.0) << "faster than the device time";
      load_kernel_p50[bs][name] = o["kernel_latency_us"]["p50"];
    }
  }
  const json service = target_report_on_exit(report);
  ASSERT_FALSE(service.empty());
  EXPECT_EQ(service["latency_clock"], "kernel");
  const json& ops = service["hosts"][host]["ops"];
  EXPECT_EQ(ops["read"]["ios"].get<uint64_t>(), ios[0]);
  EXPECT_EQ(ops["write"]["ios"].get<uint64_t>(), ios[1]);
  for (const char* name : {"read", "write"}) {
    SCOPED_TRACE(name);
    const json& o = ops[name];
    EXPECT_GE(o["kernel_clock"]["timed"].get<double>(), 0.99 * o["ios"].get<double>()) << o.dump();
    EXPECT_GE(o["latency_us"]["min"].get<double>(), 200.0) << "shorter than the device time";
    // The target's service lies inside the host's wire span of the same commands.
    EXPECT_LE(o["latency_us"]["p50"].get<double>(),
              std::max(load_kernel_p50["4k"][name].get<double>(), load_kernel_p50["64k"][name].get<double>()));
  }
  target_.reset();
}

// --latency-clock wire on both tools over two queues, in-capsule and R2T writes, digests: every
// command wire-timed from its own packets, the tap's RX point never after the socket's (so the
// host's span is not longer and the target's not shorter than the kernel clock's), and the
// target's service inside the host's span.
TEST_F(LoadE2E, WireClockTimesEveryCommandFromItsPackets) {
  if (geteuid() != 0) GTEST_SKIP() << "the packet tap needs CAP_NET_RAW";
  const std::string report = dir_ + "/nvqos_e2e_wire_" + std::to_string(port_) + ".json";
  start_target(false, "fixed:200us", {"--latency-clock", "wire", "--report", report});
  const std::string host = "nqn.2026-11.io.nvqos:e2e-wire-clock";
  auto r = load({"--rw", "randrw", "--bs", "64k", "--qd", "8", "--queues", "2", "--ios", "3000", "--verify", "--size",
                 "8m", "--digest", "header,data", "--latency-clock", "wire", "--hostnqn", host});
  expect_clean(r);
  const json& job = r.report["jobs"][0];
  ASSERT_EQ(job["latency_clock"], "wire");
  EXPECT_EQ(job["wire_tap"]["drops"], 0) << job["wire_tap"].dump();
  EXPECT_GT(job["wire_tap"]["packets"].get<double>(), 0.0);
  json host_wire_p50;
  uint64_t ios[2] = {0, 0};
  for (const char* name : {"read", "write"}) {
    SCOPED_TRACE(name);
    const json& o = op(r, 0, name);
    const uint64_t n = o["ios"].get<uint64_t>();
    ios[std::string(name) == "read" ? 0 : 1] = n;
    expect_stamped(o["wire_clock"], n);
    EXPECT_EQ(o["latency_us"], o["wire_latency_us"]);
    for (const char* q : {"min", "p50", "p99"})
      EXPECT_LE(o["wire_latency_us"][q].get<double>(), o["kernel_latency_us"][q].get<double>() * 1.01) << q;
    EXPECT_GE(o["wire_latency_us"]["min"].get<double>(), 200.0) << "faster than the device time";
    host_wire_p50[name] = o["wire_latency_us"]["p50"];
  }
  const json service = target_report_on_exit(report);
  ASSERT_FALSE(service.empty());
  EXPECT_EQ(service["latency_clock"], "wire");
  EXPECT_EQ(service["wire_tap"]["drops"], 0) << service["wire_tap"].dump();
  const json& ops = service["hosts"][host]["ops"];
  for (const char* name : {"read", "write"}) {
    SCOPED_TRACE(name);
    const json& o = ops[name];
    EXPECT_EQ(o["ios"].get<uint64_t>(), ios[std::string(name) == "read" ? 0 : 1]);
    EXPECT_GE(o["wire_clock"]["timed"].get<double>(), 0.99 * o["ios"].get<double>()) << o.dump();
    EXPECT_GE(o["latency_us"]["min"].get<double>(), 200.0) << "shorter than the device time";
    for (const char* q : {"min", "p50", "p99"})
      EXPECT_GE(o["wire_latency_us"][q].get<double>() * 1.01, o["kernel_latency_us"][q].get<double>()) << q;
    EXPECT_LE(o["wire_latency_us"]["p50"].get<double>(), host_wire_p50[name].get<double>() * 1.01);
  }
  target_.reset();
}

TEST_F(LoadE2E, SeveralJobsRunConcurrently) {
  std::string path = dir_ + "/nvqos_e2e_jobs_" + std::to_string(port_) + ".json";
  json jobs = {{"jobs",
                {{{"name", "latency"}, {"rw", "randread"}, {"bs", "4k"}, {"qd", 1}, {"runtime", "1s"}},
                 {{"name", "bulk"},
                  {"rw", "randwrite"},
                  {"bs", "128k"},
                  {"qd", 8},
                  {"queues", 2},
                  {"runtime", "1s"},
                  {"verify", true},
                  {"offset", "16m"},
                  {"size", "16m"}},
                 {{"name", "mixed"},
                  {"rw", "randrw"},
                  {"rwmix-read", 70},
                  {"bs", "8k"},
                  {"qd", 4},
                  {"digest", "header,data"},
                  {"ios", 2000},
                  {"verify", true},
                  {"offset", "32m"},
                  {"size", "4m"}}}}};
  std::ofstream(path) << jobs.dump();
  auto r = load({"--job-file", path});
  expect_clean(r);
  ASSERT_EQ(r.report["jobs"].size(), 3u);
  EXPECT_EQ(r.report["jobs"][0]["name"], "latency");
  EXPECT_GT(op(r, 0, "read")["ios"].get<uint64_t>(), 100u);
  EXPECT_FALSE(r.report["jobs"][0]["ops"].contains("write"));
  EXPECT_GT(op(r, 1, "write")["ios"].get<uint64_t>(), 100u);
  EXPECT_EQ(op(r, 2, "read")["ios"].get<uint64_t>() + op(r, 2, "write")["ios"].get<uint64_t>(), 2000u);
  double read_share = op(r, 2, "read")["ios"].get<double>() / 2000.0;
  EXPECT_NEAR(read_share, 0.7, 0.05);
  // Both timed jobs ran for about their runtime, side by side.
  EXPECT_NEAR(r.report["jobs"][0]["elapsed_s"].get<double>(), 1.0, 0.2);
  EXPECT_NEAR(r.report["jobs"][1]["elapsed_s"].get<double>(), 1.0, 0.2);
}

TEST_F(LoadE2E, OpenLoopPacingHoldsTheRate) {
  auto r = load({"--rw", "randread", "--bs", "4k", "--qd", "4", "--rate-iops", "2000", "--runtime", "2s"});
  expect_clean(r);
  EXPECT_NEAR(op(r, 0, "read")["iops"].get<double>(), 2000.0, 100.0);
  ASSERT_TRUE(op(r, 0, "read").contains("intended_latency_us"));
  // Latency from the scheduled time can only be longer than from the actual send.
  EXPECT_GE(op(r, 0, "read")["intended_latency_us"]["p50"].get<double>(),
            op(r, 0, "read")["latency_us"]["p50"].get<double>() * 0.99);
}

TEST_F(LoadE2E, KeepAliveHoldsTheControllerPastKato) {
  // nvqos-target tears a controller down when no Keep Alive arrives within
  // KATO (I/O traffic does not count), so a 3 s run with KATO 1 s only
  // succeeds if Keep Alive goes out on the admin queue every KATO/2.
  auto r = load({"--rw", "randread", "--qd", "1", "--rate-iops", "50", "--runtime", "3s", "--kato", "1s"});
  expect_clean(r);
  EXPECT_NEAR(r.report["jobs"][0]["elapsed_s"].get<double>(), 3.0, 0.2);
}

TEST_F(LoadE2E, SourceAddressPicksTheInitiatorAddress) {
  // Tenants are told apart by initiator address: --source lets one host be several.
  auto r = load({"--source", "127.0.0.2", "--rw", "randread", "--qd", "2", "--queues", "2", "--ios", "100"});
  expect_clean(r);
  target_->terminate();
  target_->wait_for(std::chrono::seconds(5));
  std::string log = target_->err() + target_->out();
  EXPECT_NE(log.find("127.0.0.2:" + std::to_string(r.report["jobs"][0]["local_ports"][0].get<int>())),
            std::string::npos)
      << log;
  auto bad = load({"--source", "not-an-address", "--ios", "1"});
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("not an IP address"), std::string::npos) << bad.err;
}

TEST_F(LoadE2E, StuckCommandsTimeOutInsteadOfHanging) {
  start_target(false, "fixed:5s");  // every command takes 5 s on the target
  auto r = load({"--rw", "randread", "--qd", "2", "--ios", "10", "--io-timeout", "1s"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("got no completion within 1000 ms"), std::string::npos) << r.err;
  ASSERT_TRUE(r.report.contains("jobs")) << r.out;
  EXPECT_NE(r.report["jobs"][0]["error"].get<std::string>().find("no completion"), std::string::npos);
  EXPECT_EQ(op(r, 0, "read")["ios"].get<int>(), 0);
  EXPECT_EQ(op(r, 0, "read")["errors"]["transport error"].get<int>(), 2);  // both outstanding reads lost
}

TEST_F(LoadE2E, TraceHasOneLinePerIo) {
  std::string path = dir_ + "/nvqos_e2e_trace_" + std::to_string(port_) + ".csv";
  auto r = load({"--rw", "randrw", "--bs", "4k", "--qd", "2", "--queues", "2", "--ios", "500", "--trace", path,
                 "--name", "tenant-a"});
  expect_clean(r);
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "submit_ns,complete_ns,scheduled_ns,job,queue,local_port,cid,op,bytes,status,latency_ns");
  int lines = 0, reads = 0;
  while (std::getline(in, line)) {
    ++lines;
    std::stringstream ss(line);
    std::vector<std::string> f;
    std::string c;
    while (std::getline(ss, c, ',')) f.push_back(c);
    ASSERT_EQ(f.size(), 11u) << line;
    EXPECT_LT(std::stoull(f[0]), std::stoull(f[1])) << line;
    // The app clock (the default): latency_ns is exactly complete_ns - submit_ns.
    EXPECT_EQ(std::stoull(f[10]), std::stoull(f[1]) - std::stoull(f[0])) << line;
    EXPECT_EQ(f[3], "tenant-a");
    EXPECT_TRUE(f[4] == "1" || f[4] == "2") << line;
    EXPECT_GT(std::stoul(f[5]), 0u);
    EXPECT_LT(std::stoul(f[6]), 2u);  // qd 2: CIDs 0 and 1
    EXPECT_EQ(f[8], "4096");
    EXPECT_EQ(f[9], "0x0000");
    reads += f[7] == "read";
  }
  EXPECT_EQ(lines, 500);
  EXPECT_EQ(reads, op(r, 0, "read")["ios"].get<int>());
}

TEST_F(LoadE2E, WrongSubnqnNamesTheConnectErrorAndFails) {
  std::vector<std::string> argv{NVQOS_LOAD_BIN, "--target", "127.0.0.1:" + std::to_string(port_), "--subnqn",
                                "nqn.2024-01.io.nvqos:no-such-subsystem", "--ios", "10"};
  Process p(argv, dir_ + "/nvqos_e2e_badnqn");
  int status = p.wait_for(std::chrono::seconds(20));
  EXPECT_EQ(status, 1);
  std::string err = p.err();
  EXPECT_NE(err.find("Connect"), std::string::npos) << err;
  EXPECT_NE(err.find("nqn.2024-01.io.nvqos:no-such-subsystem"), std::string::npos) << err;
}

TEST_F(LoadE2E, UnreachableTargetFailsClearly) {
  std::vector<std::string> argv{NVQOS_LOAD_BIN, "--target", "127.0.0.1:" + std::to_string(nvqos::test::free_port()),
                                "--subnqn", kSubnqn, "--ios", "10"};
  Process p(argv, dir_ + "/nvqos_e2e_unreachable");
  EXPECT_EQ(p.wait_for(std::chrono::seconds(20)), 1);
  EXPECT_NE(p.err().find("Connection refused"), std::string::npos) << p.err();
}

TEST_F(LoadE2E, OutOfRangeNamespaceFails) {
  auto r = load({"--nsid", "7", "--ios", "10"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("namespace 7"), std::string::npos) << r.err;
}

}  // namespace
