// BPF program tests of NVMe/TCP command tracking (bpf/lib/nvme_pdu.h): PDU
// streams built with the tools/nvmf codec run through the real tc programs as
// TCP segments, in both roles, and the command maps are checked.
#include <gtest/gtest.h>
#include <net/if.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "datapath_harness.hpp"
#include "nvqos/histogram.h"
#include "nvqos/nvmf/nvme.h"
#include "nvqos/nvmf/pdu.h"
#include "packet_builder.hpp"

namespace nvqos::testing {
namespace {

namespace nvmf = nvqos::nvmf;

constexpr std::uint16_t kNvmePort = NVQOS_PORT_NVME_IO;
constexpr std::uint16_t kHostPort = 40000;
constexpr const char *kHost = "10.0.0.1";
constexpr const char *kTarget = "10.0.0.2";

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes &p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes read_cmd(std::uint16_t cid, std::uint32_t len, const nvmf::LinkParams &link = {}) {
  return nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_read(cid, 1, 0, len / 512 - 1, len), {}},
                          link);
}

Bytes response(std::uint16_t cid, nvmf::Status status = 0, const nvmf::LinkParams &link = {}) {
  nvmf::Cqe cqe;
  cqe.cid = cid;
  cqe.status = status;
  return nvmf::encode_pdu(nvmf::CapsuleResp{cqe}, link);
}

Bytes c2h_data(std::uint16_t cid, std::uint32_t len, bool success,
               const nvmf::LinkParams &link = {}) {
  static const std::vector<std::uint8_t> kData(1 << 20, 0xab);
  nvmf::C2HData d;
  d.cccid = cid;
  d.datal = len;
  d.last = true;
  d.success = success;
  d.data = std::span<const std::uint8_t>(kData.data(), len);
  return nvmf::encode_pdu(d, link);
}

nvqos_cmd_key cmd_key(std::uint8_t op, std::uint8_t role, std::uint32_t tenant = 0) {
  nvqos_cmd_key key{};
  key.tenant_id = tenant;
  key.op = op;
  key.role = role;
  return key;
}

std::uint64_t total(const std::vector<std::uint64_t> &hist) {
  return std::accumulate(hist.begin(), hist.end(), std::uint64_t{0});
}

// One NVMe/TCP connection seen by the data path, as a host (initiator) or as
// a target: sends the two byte streams as TCP segments through tc in the
// direction our role implies, tracking sequence numbers like TCP would.
class Connection {
 public:
  Connection(Datapath &dp, std::uint8_t role) : dp_(dp), role_(role) {}

  void handshake() {
    segment_h2c_at(h2c_seq_ - 1, {}, kTcpSyn);
    segment_c2h_at(c2h_seq_ - 1, {}, kTcpSyn | kTcpAck);
  }

  // Host-to-controller / controller-to-host bytes as one segment (skb).
  void h2c(const Bytes &bytes, std::uint8_t flags = kTcpAck | kTcpPsh) {
    segment_h2c_at(h2c_seq_, bytes, flags);
    h2c_seq_ += bytes.size();
  }
  void c2h(const Bytes &bytes, std::uint8_t flags = kTcpAck | kTcpPsh) {
    segment_c2h_at(c2h_seq_, bytes, flags);
    c2h_seq_ += bytes.size();
  }
  // Bytes as segments of at most mss bytes.
  void c2h_segmented(const Bytes &bytes, std::size_t mss) {
    for (std::size_t off = 0; off < bytes.size(); off += mss)
      c2h(Bytes(bytes.begin() + off, bytes.begin() + std::min(bytes.size(), off + mss)));
  }
  void h2c_segmented(const Bytes &bytes, std::size_t mss) {
    for (std::size_t off = 0; off < bytes.size(); off += mss)
      h2c(Bytes(bytes.begin() + off, bytes.begin() + std::min(bytes.size(), off + mss)));
  }

  void segment_h2c_at(std::uint32_t seq, const Bytes &bytes, std::uint8_t flags = kTcpAck) {
    const bool egress = role_ == NVQOS_ROLE_INITIATOR;
    send(egress, seq, bytes, flags, /*to_target=*/true);
  }
  void segment_c2h_at(std::uint32_t seq, const Bytes &bytes, std::uint8_t flags = kTcpAck) {
    const bool egress = role_ == NVQOS_ROLE_TARGET;
    send(egress, seq, bytes, flags, /*to_target=*/false);
  }

  std::uint32_t h2c_seq() const { return h2c_seq_; }
  std::uint32_t c2h_seq() const { return c2h_seq_; }
  void skip_h2c(std::size_t n) { h2c_seq_ += n; }  // bytes lost before our hook

 private:
  void send(bool egress, std::uint32_t seq, const Bytes &bytes, std::uint8_t flags, bool to_target) {
    PacketBuilder pkt;
    if (to_target)
      pkt.ip(kHost, kTarget).tcp(kHostPort, kNvmePort, flags, seq);
    else
      pkt.ip(kTarget, kHost).tcp(kNvmePort, kHostPort, flags, seq);
    pkt.payload(bytes);
    const SkbContext ctx{if_nametoindex("lo"), 0, 0};
    if (egress)
      dp_.egress(pkt.build(), ctx);
    else
      dp_.ingress(pkt.build(), ctx);
  }

  Datapath &dp_;
  std::uint8_t role_;
  // Near the wrap, so every test also crosses it.
  std::uint32_t h2c_seq_ = 0xfffff000u;
  std::uint32_t c2h_seq_ = 0x7ffffff0u;
};

class NvmeTrackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = bpf_unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
    dp_ = observe_only_datapath();
  }

  void expect_clean_walk() {
    const nvqos_nvme_stats ns = dp_->nvme_stats();
    EXPECT_EQ(ns.desync, 0u);
    EXPECT_EQ(ns.unmatched_resp, 0u);
  }

  std::unique_ptr<Datapath> dp_;
};

TEST_F(NvmeTrackTest, InitiatorTimesAReadCompletedByDataAndResponseInOneSkb) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  conn.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  conn.c2h(nvmf::encode_pdu(nvmf::IcResp{}));

  // BPF_PROG_TEST_RUN takes frames up to about a page: 2 KiB of data.
  const std::uint64_t before = monotonic_ns();
  conn.h2c(read_cmd(7, 2048));
  conn.c2h(cat({c2h_data(7, 2048, false), response(7)}));
  const std::uint64_t elapsed = monotonic_ns() - before;

  const nvqos_cmd_key key = cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR);
  const nvqos_cmd_stats s = dp_->cmd_stats(key);
  EXPECT_EQ(s.submitted, 1u);
  EXPECT_EQ(s.completed, 1u);
  EXPECT_EQ(s.bytes, 2048u);
  const auto hist = dp_->cmd_latency(key);
  ASSERT_EQ(total(hist), 1u);
  const auto bucket = std::find(hist.begin(), hist.end(), 1u) - hist.begin();
  // The sample lies between the two runs: its bucket cannot be above the elapsed time's.
  EXPECT_LE(static_cast<std::uint32_t>(bucket),
            nvqos_hist_index(elapsed, NVQOS_HIST_KERNEL_SUB_BITS));
  EXPECT_EQ(dp_->inflight_count(), 0u);
  EXPECT_EQ(dp_->nvme_stats().pdus, 5u);  // ICReq, ICResp, capsule, C2HData, CapsuleResp
  expect_clean_walk();
}

TEST_F(NvmeTrackTest, TargetTimesCommandsAndCountsErrorsByStatusClass) {
  Connection conn(*dp_, NVQOS_ROLE_TARGET);
  conn.handshake();
  conn.h2c(nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_flush(3, 1), {}}));
  conn.c2h(response(3, nvmf::status::kInvalidField));
  conn.h2c(read_cmd(4, 2048));
  conn.c2h(c2h_data(4, 2048, /*success=*/true));

  const nvqos_cmd_stats flush = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_FLUSH, NVQOS_ROLE_TARGET));
  EXPECT_EQ(flush.completed, 1u);
  EXPECT_EQ(flush.errors[NVQOS_STATUS_GENERIC], 1u);
  const nvqos_cmd_stats read = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_TARGET));
  EXPECT_EQ(read.completed, 1u) << "C2HData with SUCCESS completes the read";
  EXPECT_EQ(read.bytes, 2048u);
  EXPECT_EQ(std::accumulate(std::begin(read.errors), std::end(read.errors), 0ull), 0u);
  EXPECT_EQ(dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR)).submitted, 0u);
  expect_clean_walk();
}

TEST_F(NvmeTrackTest, HeadersSplitAcrossSegments) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  // 72-byte capsules cut inside the common header and inside the SQE.
  const Bytes cmds = cat({read_cmd(1, 4096), read_cmd(2, 4096), read_cmd(3, 4096)});
  conn.h2c_segmented(cmds, 5);
  const Bytes rsps = cat({response(1), c2h_data(2, 4096, false), response(2), response(3)});
  conn.c2h_segmented(rsps, 13);

  const nvqos_cmd_stats s = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(s.submitted, 3u);
  EXPECT_EQ(s.completed, 3u);
  EXPECT_EQ(dp_->inflight_count(), 0u);
  expect_clean_walk();
}

TEST_F(NvmeTrackTest, DigestsAndPduDataAlignment) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  nvmf::LinkParams h2c_link{true, true, 7};  // CPDA 7: capsule data at a 32-byte boundary
  nvmf::LinkParams c2h_link{true, true, 3};
  conn.handshake();
  nvmf::IcResp icresp;
  icresp.hdgst = icresp.ddgst = true;
  icresp.cpda = 7;
  conn.h2c(nvmf::encode_pdu(nvmf::IcReq{}));
  conn.c2h(nvmf::encode_pdu(icresp));

  const std::vector<std::uint8_t> data(512, 0x5a);
  const Bytes write = nvmf::encode_pdu(
      nvmf::CapsuleCmd{nvmf::make_write(9, 1, 0, 0, 512, /*in_capsule=*/true), data}, h2c_link);
  ASSERT_GT(write[3], nvmf::kCapsuleCmdHlen + 4) << "PDO padded past the header digest";
  conn.h2c(cat({write, read_cmd(10, 2048, h2c_link)}));
  conn.c2h(cat({response(9, 0, c2h_link), c2h_data(10, 2048, false, c2h_link),
                response(10, 0, c2h_link)}));

  EXPECT_EQ(dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_WRITE, NVQOS_ROLE_INITIATOR)).completed, 1u);
  EXPECT_EQ(dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR)).completed, 1u);
  expect_clean_walk();
}

TEST_F(NvmeTrackTest, SixteenPdusPerSkbAndTheWalkLimit) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  Bytes cmds, rsps;
  for (std::uint16_t cid = 0; cid < 16; ++cid) {
    cmds = cat({cmds, read_cmd(cid, 4096)});
    rsps = cat({rsps, response(cid)});
  }
  conn.h2c(cmds);
  conn.c2h(rsps);
  nvqos_cmd_stats s = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(s.completed, 16u);
  expect_clean_walk();

  // More completions in one skb than the walk parses (NVQOS_PDU_MAX_PER_SKB): it counts the
  // loss as a desync and leaves the rest in flight.
  constexpr unsigned kLimit = 128, kMore = 8;
  rsps.clear();
  for (unsigned i = 0; i < kLimit + kMore; ++i) {
    const auto cid = static_cast<std::uint16_t>(1000 + i);
    cmds = read_cmd(cid, 4096);
    conn.h2c(cmds);
    rsps = cat({rsps, response(cid)});
  }
  conn.c2h(rsps);
  s = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(s.submitted, 16u + kLimit + kMore);
  EXPECT_EQ(s.completed, 16u + kLimit);
  EXPECT_EQ(dp_->nvme_stats().desync, 1u);
  EXPECT_EQ(dp_->inflight_count(), kMore);
}

TEST_F(NvmeTrackTest, GarbageAfterAValidHeaderDesyncsWithoutASample) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  conn.h2c(cat({read_cmd(1, 4096), read_cmd(2, 4096)}));
  Bytes garbage = response(2);
  garbage[2] = 0x30;  // HLEN of a CapsuleResp is 24
  conn.c2h(cat({response(1), garbage}));

  const nvqos_cmd_key key = cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR);
  EXPECT_EQ(dp_->cmd_stats(key).completed, 1u);
  EXPECT_EQ(total(dp_->cmd_latency(key)), 1u);
  EXPECT_EQ(dp_->nvme_stats().desync, 1u);
  EXPECT_EQ(dp_->inflight_count(), 1u);

  // Bytes in the middle of a data PDU do not pass for a header: the stream stays lost.
  conn.c2h(Bytes(100, 0xab));
  EXPECT_EQ(dp_->nvme_stats().resync, 0u);
  // A segment that starts with a plausible header resynchronises the stream.
  conn.c2h(response(2));
  EXPECT_EQ(dp_->nvme_stats().resync, 1u);
  EXPECT_EQ(dp_->cmd_stats(key).completed, 2u);
}

TEST_F(NvmeTrackTest, RetransmittedSegmentsCountOnce) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  const std::uint32_t cmd_seq = conn.h2c_seq();
  const Bytes cmd = read_cmd(5, 4096);
  conn.h2c(cmd);
  conn.segment_h2c_at(cmd_seq, cmd);  // retransmission of the capsule
  const std::uint32_t rsp_seq = conn.c2h_seq();
  const Bytes rsp = response(5);
  conn.c2h(rsp);
  conn.segment_c2h_at(rsp_seq, rsp);  // duplicate completion
  conn.h2c(read_cmd(5, 4096));        // the CID reused by a new command
  conn.segment_h2c_at(cmd_seq, cmd);  // a late duplicate of the old capsule

  const nvqos_cmd_stats s = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(s.submitted, 2u);
  EXPECT_EQ(s.completed, 1u);
  EXPECT_EQ(dp_->nvme_stats().cid_reused, 0u);
  EXPECT_EQ(dp_->inflight_count(), 1u);
  expect_clean_walk();
}

TEST_F(NvmeTrackTest, ACidReusedWhileTrackedCountsTheOldCommandLost) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  conn.h2c(read_cmd(6, 4096));
  conn.h2c(nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_flush(6, 1), {}}));  // CID 6 again
  conn.c2h(response(6));
  const nvqos_cmd_stats read = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(read.lost, 1u);
  EXPECT_EQ(read.completed, 0u);
  EXPECT_EQ(dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_FLUSH, NVQOS_ROLE_INITIATOR)).completed, 1u)
      << "the completion belongs to the newer command";
  EXPECT_EQ(dp_->nvme_stats().cid_reused, 1u);
}

TEST_F(NvmeTrackTest, LostHeaderDesyncsAndRetransmissionNeverResyncs) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  const std::uint32_t lost_seq = conn.h2c_seq();
  const Bytes lost = read_cmd(1, 4096);
  conn.skip_h2c(lost.size());  // dropped before tc saw it
  conn.h2c(read_cmd(2, 4096));
  EXPECT_EQ(dp_->nvme_stats().desync, 1u);
  EXPECT_EQ(dp_->nvme_stats().resync, 1u) << "the next segment starts with a capsule";
  conn.segment_h2c_at(lost_seq, lost);  // the retransmission arrives late: not parsed
  const nvqos_cmd_stats s = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(s.submitted, 1u);
  conn.c2h(cat({response(1), response(2)}));
  EXPECT_EQ(dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR)).completed, 1u);
  EXPECT_EQ(dp_->nvme_stats().unmatched_resp, 1u) << "CID 1 was never tracked";
}

TEST_F(NvmeTrackTest, FinAbortsTheConnectionsCommands) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  conn.h2c(cat({read_cmd(1, 4096), read_cmd(2, 4096)}));
  ASSERT_EQ(dp_->inflight_count(), 2u);
  conn.h2c({}, kTcpAck | kTcpFin);
  EXPECT_EQ(dp_->inflight_count(), 0u);
  const nvqos_cmd_stats s = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(s.aborted, 2u);
  EXPECT_EQ(s.completed, 0u);
  EXPECT_EQ(total(dp_->cmd_latency(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR))), 0u);
}

TEST_F(NvmeTrackTest, AdminQueueFromConnectAndNoAsyncEventTiming) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  nvmf::ConnectCommand connect;  // QID 0: the admin queue
  std::vector<std::uint8_t> connect_data(nvmf::kConnectDataSize, 0);
  conn.h2c(nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_connect(1, connect), connect_data}));
  conn.c2h(response(1));
  conn.h2c(nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_async_event_request(2), {}}));
  conn.h2c(nvmf::encode_pdu(nvmf::CapsuleCmd{nvmf::make_keep_alive(3), {}}));
  conn.c2h(response(3));

  const nvqos_cmd_stats admin = dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_ADMIN, NVQOS_ROLE_INITIATOR));
  EXPECT_EQ(admin.submitted, 2u) << "Connect and Keep Alive; the AER is not timed";
  EXPECT_EQ(admin.completed, 2u);
  EXPECT_EQ(dp_->inflight_count(), 0u);
}

TEST_F(NvmeTrackTest, TlsConnectionIsDetectedAndNotParsed) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  conn.h2c(Bytes{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03});
  conn.c2h(response(1));
  const nvqos_nvme_stats ns = dp_->nvme_stats();
  EXPECT_EQ(ns.tls_flows, 1u);
  EXPECT_EQ(ns.pdus, 0u);
  EXPECT_EQ(ns.desync, 0u);
  EXPECT_EQ(dp_->tenant_stats(NVQOS_TENANT_DEFAULT).packets[NVQOS_DIR_EGRESS], 2u)
      << "flow-level accounting goes on";
}

TEST_F(NvmeTrackTest, SlowCommandsReachTheRingBuffer) {
  dp_->set_tenant_slow_cmd_ns(NVQOS_TENANT_DEFAULT, 1);
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  conn.h2c(read_cmd(42, 65536));
  conn.c2h(response(42, nvmf::status::kLbaOutOfRange));
  const auto events = dp_->drain_slow_cmd_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].cid, 42u);
  EXPECT_EQ(events[0].op, NVQOS_CMD_OP_READ);
  EXPECT_EQ(events[0].role, NVQOS_ROLE_INITIATOR);
  EXPECT_EQ(events[0].bytes, 65536u);
  EXPECT_EQ(events[0].status, nvmf::status::kLbaOutOfRange);
  EXPECT_GT(events[0].latency_ns, 0u);
  EXPECT_EQ(dp_->nvme_stats().slow_cmd_events, 1u);
}

TEST_F(NvmeTrackTest, SlowCommandStormIsRateLimited) {
  dp_->set_tenant_slow_cmd_ns(NVQOS_TENANT_DEFAULT, 1);
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);
  conn.handshake();
  constexpr unsigned kCommands = NVQOS_SLOW_CMD_BURST + 100;
  for (unsigned i = 0; i < kCommands; ++i) {
    conn.h2c(read_cmd(static_cast<std::uint16_t>(i), 4096));
    conn.c2h(response(static_cast<std::uint16_t>(i)));
  }
  const nvqos_nvme_stats ns = dp_->nvme_stats();
  EXPECT_EQ(ns.slow_cmd_events + ns.slow_cmd_dropped, kCommands);
  EXPECT_GE(ns.slow_cmd_dropped, 1u);
  EXPECT_LE(ns.slow_cmd_events, NVQOS_SLOW_CMD_BURST + 100u);
  EXPECT_EQ(dp_->drain_slow_cmd_events().size(), ns.slow_cmd_events);
}

TEST_F(NvmeTrackTest, JoinMidStreamResyncsOnAPlausibleHeader) {
  Connection conn(*dp_, NVQOS_ROLE_INITIATOR);  // no handshake: the agent started late
  conn.h2c(Bytes(300, 0x00));                   // the tail of some write data
  conn.h2c(read_cmd(8, 4096));
  conn.c2h(response(8));
  EXPECT_EQ(dp_->cmd_stats(cmd_key(NVQOS_CMD_OP_READ, NVQOS_ROLE_INITIATOR)).completed, 1u);
  EXPECT_EQ(dp_->nvme_stats().resync, 2u);  // one per direction
}

}  // namespace
}  // namespace nvqos::testing
