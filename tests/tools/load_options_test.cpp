// nvqos-load: option parsing, job files, verify pattern, trace format.
#include "options.hpp"
#include "pattern.hpp"
#include "stats.hpp"
#include "trace.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace {

using namespace nvqos::load;
using namespace std::chrono_literals;

TEST(LoadOptions, SizesTakeBinarySuffixes) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("4k"), 4096u);
  EXPECT_EQ(parse_size("128K"), 131072u);
  EXPECT_EQ(parse_size("1m"), 1048576u);
  EXPECT_EQ(parse_size("2g"), 2147483648u);
  EXPECT_EQ(parse_size("1.5k"), 1536u);
  EXPECT_THROW(parse_size("4x"), std::invalid_argument);
  EXPECT_THROW(parse_size("k"), std::invalid_argument);
  EXPECT_THROW(parse_size(""), std::invalid_argument);
}

TEST(LoadOptions, DurationsTakeUnits) {
  EXPECT_EQ(parse_duration("10s"), 10s);
  EXPECT_EQ(parse_duration("10"), 10s);
  EXPECT_EQ(parse_duration("250ms"), 250ms);
  EXPECT_EQ(parse_duration("50us"), 50us);
  EXPECT_EQ(parse_duration("2m"), 120s);
  EXPECT_THROW(parse_duration("10 parsecs"), std::invalid_argument);
}

TEST(LoadOptions, TargetParsesHostPortAndV6) {
  JobSpec j;
  apply_target(j, "10.0.0.5:4421");
  EXPECT_EQ(j.host, "10.0.0.5");
  EXPECT_EQ(j.port, 4421);
  apply_target(j, "[fd00::1]:8009");
  EXPECT_EQ(j.host, "fd00::1");
  EXPECT_EQ(j.port, 8009);
  apply_target(j, "storage.example");
  EXPECT_EQ(j.host, "storage.example");
  EXPECT_THROW(apply_target(j, "h:99999"), std::invalid_argument);
}

TEST(LoadOptions, SingleJobFlags) {
  const char* argv[] = {"nvqos-load", "--target", "127.0.0.1:4420", "--subnqn", "nqn.x:y", "--rw", "randrw",
                        "--rwmix-read", "70", "--bs", "128k", "--qd", "32", "--queues", "2", "--runtime", "5s",
                        "--digest", "header,data", "--rate-iops", "1000", "--name", "tenant-a", "--verify"};
  auto opts = parse_command_line(static_cast<int>(std::size(argv)), argv);
  ASSERT_TRUE(opts);
  ASSERT_EQ(opts->jobs.size(), 1u);
  const JobSpec& j = opts->jobs[0];
  EXPECT_EQ(j.name, "tenant-a");
  EXPECT_EQ(j.read_percent, 70u);
  EXPECT_EQ(j.access, Access::kRandom);
  EXPECT_EQ(j.block_size, 131072u);
  EXPECT_EQ(j.qd, 32u);
  EXPECT_EQ(j.queues, 2u);
  EXPECT_EQ(j.runtime, 5s);
  EXPECT_TRUE(j.header_digest);
  EXPECT_TRUE(j.data_digest);
  EXPECT_EQ(j.rate_iops, 1000u);
  EXPECT_TRUE(j.verify);
}

TEST(LoadOptions, LatencyClockIsAppUnlessAskedAndBadNamesAreErrors) {
  const char* plain[] = {"nvqos-load", "--target", "127.0.0.1:4420", "--subnqn", "nqn.x:y", "--ios", "1"};
  auto opts = parse_command_line(static_cast<int>(std::size(plain)), plain);
  ASSERT_TRUE(opts);
  EXPECT_EQ(opts->jobs[0].latency_clock, nvqos::wireclock::LatencyClock::kApp);
  const char* kernel[] = {"nvqos-load", "--target", "127.0.0.1:4420", "--subnqn", "nqn.x:y", "--ios", "1",
                          "--latency-clock", "kernel"};
  opts = parse_command_line(static_cast<int>(std::size(kernel)), kernel);
  ASSERT_TRUE(opts);
  EXPECT_EQ(opts->jobs[0].latency_clock, nvqos::wireclock::LatencyClock::kKernel);
  const char* wire[] = {"nvqos-load", "--target", "127.0.0.1:4420", "--subnqn", "nqn.x:y", "--ios", "1",
                        "--latency-clock", "wire"};
  opts = parse_command_line(static_cast<int>(std::size(wire)), wire);
  ASSERT_TRUE(opts);
  EXPECT_EQ(opts->jobs[0].latency_clock, nvqos::wireclock::LatencyClock::kWire);
  const char* bad[] = {"nvqos-load", "--target", "127.0.0.1:4420", "--subnqn", "nqn.x:y", "--ios", "1",
                       "--latency-clock", "wall"};
  try {
    parse_command_line(static_cast<int>(std::size(bad)), bad);
    FAIL() << "accepted --latency-clock wall";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'wall'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("wire"), std::string::npos) << "names the valid clocks: " << e.what();
  }
  auto jobs = parse_job_json(R"([{"target": "10.0.0.1", "subnqn": "nqn.x:y", "latency-clock": "kernel"},
                                 {"target": "10.0.0.2", "subnqn": "nqn.x:y"}])",
                             JobSpec{});
  EXPECT_EQ(jobs[0].latency_clock, nvqos::wireclock::LatencyClock::kKernel);
  EXPECT_EQ(jobs[1].latency_clock, nvqos::wireclock::LatencyClock::kApp);
}

TEST(LoadOptions, MissingPiecesAreNamed) {
  const char* no_nqn[] = {"nvqos-load", "--target", "127.0.0.1:4420", "--ios", "10"};
  try {
    parse_command_line(5, no_nqn);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("subnqn"), std::string::npos) << e.what();
  }
  const char* no_stop[] = {"nvqos-load", "--target", "127.0.0.1", "--subnqn", "nqn.x:y"};
  EXPECT_THROW(parse_command_line(5, no_stop), std::invalid_argument);
  const char* bad_rw[] = {"nvqos-load", "--target", "127.0.0.1", "--subnqn", "n", "--ios", "1", "--rw", "trim"};
  EXPECT_THROW(parse_command_line(9, bad_rw), std::invalid_argument);
}

TEST(LoadOptions, JobFileInheritsDefaultsAndNamesJobs) {
  JobSpec defaults;
  defaults.subnqn = "nqn.x:default";
  defaults.runtime = 3s;
  auto jobs = parse_job_json(R"({"jobs": [
      {"name": "latency", "rw": "randread", "bs": "4k", "qd": 1},
      {"name": "bulk", "rw": "write", "bs": "128k", "qd": 32, "digest": "data", "target": "10.1.1.1:4421"},
      {"name": "mixed", "rw": "randrw", "rwmix-read": 70, "runtime": "500ms", "source": "10.0.0.9",
       "io-timeout": "5s", "kato": "2s"}]})",
                             defaults);
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].name, "latency");
  EXPECT_EQ(jobs[0].qd, 1u);
  EXPECT_EQ(jobs[0].subnqn, "nqn.x:default");
  EXPECT_EQ(jobs[1].block_size, 131072u);
  EXPECT_EQ(jobs[1].read_percent, 0u);
  EXPECT_EQ(jobs[1].access, Access::kSequential);
  EXPECT_TRUE(jobs[1].data_digest);
  EXPECT_FALSE(jobs[1].header_digest);
  EXPECT_EQ(jobs[1].port, 4421);
  EXPECT_EQ(jobs[2].read_percent, 70u);
  EXPECT_EQ(jobs[2].runtime, 500ms);
  EXPECT_EQ(jobs[0].runtime, 3s);
  EXPECT_EQ(jobs[2].source, "10.0.0.9");
  EXPECT_EQ(jobs[2].io_timeout, 5s);
  EXPECT_EQ(jobs[2].kato, 2s);
  EXPECT_EQ(jobs[0].io_timeout, 30s);
}

TEST(LoadOptions, JobFileErrorsNameTheJob) {
  JobSpec d;
  EXPECT_THROW(parse_job_json("[{\"qd\": 1}, {\"rw\": \"bogus\"}]", d), std::invalid_argument);
  EXPECT_THROW(parse_job_json("[{\"name\": \"a\"}, {\"name\": \"a\"}]", d), std::invalid_argument);
  EXPECT_THROW(parse_job_json("[{\"queue-depth\": 4}]", d), std::invalid_argument);
  EXPECT_THROW(parse_job_json("{not json", d), std::invalid_argument);
  try {
    parse_job_json("[{\"qd\": 1}, {\"rw\": \"bogus\"}]", d);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("job 1"), std::string::npos) << e.what();
  }
}

TEST(VerifyPattern, RoundTripsAndCatchesCorruption) {
  std::vector<uint8_t> buf(4096);
  fill_pattern(buf, 8192, 3);
  auto ok = check_pattern(buf, 8192, 3);
  EXPECT_EQ(ok.matched, 8u);
  EXPECT_EQ(ok.mismatched, 0u);
  EXPECT_EQ(check_pattern(buf, 8192, 0).matched, 8u);  // any generation

  EXPECT_EQ(check_pattern(buf, 8192, 4).mismatched, 8u);  // stale generation
  EXPECT_EQ(check_pattern(buf, 4096, 3).mismatched, 8u);  // misplaced block

  buf[1000] ^= 1;
  auto bad = check_pattern(buf, 8192, 3);
  EXPECT_EQ(bad.mismatched, 1u);
  EXPECT_EQ(bad.first_bad_offset, 8192u + 512);

  std::vector<uint8_t> zeros(1024, 0);
  EXPECT_EQ(check_pattern(zeros, 0, 0).unwritten, 2u);
  EXPECT_EQ(check_pattern(zeros, 0, 1).mismatched, 2u);  // we wrote it: zeros are wrong
}

TEST(VerifyPattern, ReadableWithAnotherBlockSize) {
  std::vector<uint8_t> big(8192);
  fill_pattern(big, 0, 7);
  std::span<const uint8_t> second_half(big.data() + 4096, 4096);
  EXPECT_EQ(check_pattern(second_half, 4096, 7).matched, 8u);
}

TEST(Trace, WritesTheDocumentedColumns) {
  std::string path = ::testing::TempDir() + "/nvqos_trace_test.csv";
  {
    TraceWriter t(path);
    t.write("tenant-a", {1000, 2500, 900, 1, 40000, 7, Op::kRead, 4096, 0, 1500});
    t.write("tenant-a", {3000, 4000, 3000, 2, 40001, 8, Op::kWrite, 512, 0x0281, 0});
  }
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, TraceWriter::kHeader);
  std::getline(in, line);
  EXPECT_EQ(line, "1000,2500,900,tenant-a,1,40000,7,read,4096,0x0000,1500");
  std::getline(in, line);
  EXPECT_EQ(line, "3000,4000,3000,tenant-a,2,40001,8,write,512,0x0281,0");
  std::remove(path.c_str());
}

TEST(Report, TextNamesUnitsAndErrors) {
  JobSpec spec;
  spec.name = "t1";
  JobStats stats;
  stats.elapsed = 2s;
  for (int i = 1; i <= 1000; ++i) {
    stats.op(Op::kRead).latency.record(i * 1000);
    stats.op(Op::kRead).ios++;
    stats.op(Op::kRead).bytes += 4096;
  }
  stats.op(Op::kRead).errors["LBA Out of Range"] = 2;
  std::ostringstream out;
  print_text_report(out, {{&spec, &stats}});
  std::string text = out.str();
  EXPECT_NE(text.find("microseconds"), std::string::npos);
  EXPECT_NE(text.find("MiB/s"), std::string::npos);
  EXPECT_NE(text.find("2 x LBA Out of Range"), std::string::npos);
  EXPECT_NE(text.find(" 500 "), std::string::npos) << text;  // IOPS = 1000 / 2 s

  std::ostringstream js;
  print_json_report(js, {{&spec, &stats}});
  auto doc = nlohmann::json::parse(js.str());
  EXPECT_DOUBLE_EQ(doc["jobs"][0]["ops"]["read"]["iops"].get<double>(), 500.0);
  EXPECT_NEAR(doc["jobs"][0]["ops"]["read"]["latency_us"]["p99"].get<double>(), 990.0, 990.0 * 0.01);
}

}  // namespace
