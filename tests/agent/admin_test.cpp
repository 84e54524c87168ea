// Admin API helpers without a kernel: token file checks, token comparison,
// socket checks, query strings, the slow-event long poll, flow rates.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>

#include "admin_api.hpp"
#include "admin_auth.hpp"
#include "flows.hpp"

namespace nvqos::agent {
namespace {

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("nvqos-admin-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    ::chmod(dir_.c_str(), 0700);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name, const std::string& text, mode_t mode) {
    const auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::filesystem::path dir_;
};

using TokenFile = TempDir;

TEST_F(TokenFile, PrivateFileIsReadAndTrimmed) {
  auto token = read_token_file(file("t", "  0123456789abcdef0123\n", 0600));
  ASSERT_TRUE(token) << token.error().message;
  EXPECT_EQ(token.value(), "0123456789abcdef0123");
}

TEST_F(TokenFile, GroupOrWorldAccessIsRefused) {
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    auto token = read_token_file(file("t", "0123456789abcdef0123\n", mode));
    ASSERT_FALSE(token) << std::oct << mode;
    EXPECT_NE(token.error().message.find("accessible by group or others"), std::string::npos) << token.error().message;
    EXPECT_NE(token.error().message.find("chmod 600"), std::string::npos);
  }
}

TEST_F(TokenFile, ShortEmptyOrSymlinkedTokensAreRefused) {
  EXPECT_FALSE(read_token_file(file("short", "abc\n", 0600)));
  EXPECT_FALSE(read_token_file(file("empty", "", 0600)));
  EXPECT_FALSE(read_token_file(file("two", "0123456789abcdef 0123456789abcdef\n", 0600)));
  const auto target = file("real", "0123456789abcdef0123\n", 0600);
  const auto link = (dir_ / "link").string();
  ::symlink(target.c_str(), link.c_str());
  EXPECT_FALSE(read_token_file(link)) << "the mode checked must be the file's, not a link's";
  EXPECT_FALSE(read_token_file((dir_ / "missing").string()));
}

TEST(Token, ComparesWholeTokens) {
  const std::string t = "0123456789abcdef0123456789abcdef";
  EXPECT_TRUE(token_matches(t, t));
  EXPECT_FALSE(token_matches(t, t + "x"));
  EXPECT_FALSE(token_matches(t, t.substr(0, t.size() - 1)));
  EXPECT_FALSE(token_matches(t, "1123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(token_matches(t, ""));
  EXPECT_FALSE(token_matches("", ""));
}

TEST(Token, ParsesBearerHeader) {
  EXPECT_EQ(bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(bearer_token("bearer   abc "), "abc");
  EXPECT_EQ(bearer_token("Basic abc"), "");
  EXPECT_EQ(bearer_token("Bearer "), "");
  EXPECT_EQ(bearer_token(""), "");
}

using SocketCheck = TempDir;

TEST_F(SocketCheck, OnlyAPrivateSocketInAPrivateDirectoryPasses) {
  const auto path = (dir_ / "s.sock").string();
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  const mode_t old = ::umask(0177);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ::umask(old);
  EXPECT_EQ(unsafe_socket_reason(path), "");
  ::chmod(path.c_str(), 0666);
  EXPECT_NE(unsafe_socket_reason(path).find("mode 0666, not 0600"), std::string::npos);
  ::chmod(path.c_str(), 0600);
  ::chmod(dir_.c_str(), 0777);
  EXPECT_NE(unsafe_socket_reason(path).find("writable by group or others"), std::string::npos);
  ::chmod(dir_.c_str(), 01777);
  EXPECT_EQ(unsafe_socket_reason(path), "") << "a sticky directory (like /tmp) is fine";
  ::chmod(dir_.c_str(), 0700);
  EXPECT_NE(unsafe_socket_reason(file("plain", "x", 0600)).find("not a unix socket"), std::string::npos);
  ::close(fd);
}

TEST(QueryParam, FindsValues) {
  EXPECT_EQ(query_param("/v1/flows?limit=5&tenant=gold", "tenant"), "gold");
  EXPECT_EQ(query_param("/v1/flows?limit=5&tenant=gold", "limit"), "5");
  EXPECT_EQ(query_param("/v1/flows?limit", "limit"), "");
  EXPECT_FALSE(query_param("/v1/flows?limit=5", "tenant"));
  EXPECT_FALSE(query_param("/v1/flows", "limit"));
}

TEST(SlowEventLog, ReadersContinueWhereTheyStoppedAndLearnWhatTheyMissed) {
  boost::asio::io_context io;
  SlowEventLog log(io, 3);
  for (int i = 0; i < 5; ++i) log.push({{"cid", i}});
  auto all = log.since(0, 100);
  ASSERT_EQ(all["events"].size(), 3u) << "only the last 3 are kept";
  EXPECT_EQ(all["missed"], 2);
  EXPECT_EQ(all["events"][0]["cid"], 2);
  EXPECT_EQ(all["next"], 5);
  EXPECT_TRUE(log.since(5, 100)["events"].empty());
  EXPECT_EQ(log.since(3, 1)["events"].size(), 1u);
  EXPECT_EQ(log.since(3, 1)["next"], 4);
  EXPECT_EQ(log.since(99, 100)["next"], 5) << "a reader from before an agent restart starts over";
}

TEST(SlowEventLog, LongPollAnswersOnTheNextEventOrAfterTheWait) {
  boost::asio::io_context io;
  SlowEventLog log(io, 10);
  nlohmann::json got;
  int replies = 0;
  log.wait(0, 100, std::chrono::seconds(10), [&](nlohmann::json j) { got = std::move(j), ++replies; });
  io.poll();
  EXPECT_EQ(replies, 0) << "nothing yet: the reply waits";
  log.push({{"cid", 7}});
  EXPECT_EQ(replies, 1);
  EXPECT_EQ(got["events"][0]["cid"], 7);
  log.wait(1, 100, std::chrono::milliseconds(20), [&](nlohmann::json j) { got = std::move(j), ++replies; });
  io.run_for(std::chrono::milliseconds(200));
  EXPECT_EQ(replies, 2) << "the wait ended without events";
  EXPECT_TRUE(got["events"].empty());
}

FlowRow flow(std::uint64_t in, std::uint64_t out, double age) {
  FlowRow r;
  r.key.local_port = htons(40000);
  r.key.remote_port = htons(4420);
  r.value.first_seen_ns = 1000;
  r.value.bytes[NVQOS_DIR_INGRESS] = in;
  r.value.bytes[NVQOS_DIR_EGRESS] = out;
  r.age_seconds = age;
  return r;
}

TEST(FlowRates, LiveFromTwoReadingsElseLifetimeAverage) {
  FlowRateTracker tracker;
  const auto t0 = FlowRateTracker::Clock::now();
  std::vector<FlowRow> rows{flow(1000, 100, 10)};
  tracker.update(t0, rows);
  EXPECT_TRUE(rows[0].rate_is_lifetime_average);
  EXPECT_DOUBLE_EQ(rows[0].rate_bytes_per_second[NVQOS_DIR_INGRESS], 100);
  rows = {flow(3000, 100, 12)};
  tracker.update(t0 + std::chrono::seconds(2), rows);
  EXPECT_FALSE(rows[0].rate_is_lifetime_average);
  EXPECT_DOUBLE_EQ(rows[0].rate_bytes_per_second[NVQOS_DIR_INGRESS], 1000);
  EXPECT_DOUBLE_EQ(rows[0].rate_bytes_per_second[NVQOS_DIR_EGRESS], 0);
  // The 5-tuple reused by a new connection (counters went back): no live rate.
  rows = {flow(10, 10, 1)};
  tracker.update(t0 + std::chrono::seconds(3), rows);
  EXPECT_TRUE(rows[0].rate_is_lifetime_average);
}

TEST(FlowJson, PrintsEndpointsAndExtraAttributes) {
  FlowRow r = flow(1, 2, 1);
  const std::uint8_t v4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1};
  std::memcpy(r.key.remote_addr, v4, 16);
  inet_pton(AF_INET6, "2001:db8::1", r.key.local_addr);
  r.tenant = "gold";
  r.attributes["host_nqn"] = "nqn.2014-08.org.nvmexpress:uuid:1";
  const auto j = flow_to_json(r);
  EXPECT_EQ(j["remote"], "10.0.0.1:4420");
  EXPECT_EQ(j["local"], "[2001:db8::1]:40000");
  EXPECT_EQ(j["tenant"], "gold");
  EXPECT_EQ(j["host_nqn"], "nqn.2014-08.org.nvmexpress:uuid:1");
}

}  // namespace
}  // namespace nvqos::agent
