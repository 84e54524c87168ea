// nvqos-load's host side (QueuePair) against a scripted NVMe/TCP target on
// loopback: PDU sequences a well-behaved target may legally send (split
// C2HData, C2HData SUCCESS, R2T split by MAXH2CDATA) and ones it must not
// (unknown CIDs, out-of-range R2T, TermReq, refused digests).
#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <thread>

#include <nvqos/nvmf/decoder.h>
#include <nvqos/nvmf/pdu.h>

#include "queue_pair.hpp"

namespace {

namespace asio = boost::asio;
namespace nvmf = nvqos::nvmf;
using asio::ip::tcp;
using nvqos::load::QueueConfig;
using nvqos::load::QueueEvents;
using nvqos::load::QueuePair;
using namespace std::chrono_literals;

// The target side of one connection, driven by blocking calls from a thread.
class ScriptedTarget {
 public:
  ScriptedTarget() : acceptor_(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)), socket_(io_) {}
  tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }

  void accept() { acceptor_.accept(socket_); }

  // Reads until one whole PDU from the host is decoded.
  nvmf::Pdu receive() {
    for (;;) {
      if (pending_.empty()) {
        uint8_t buf[65536];
        size_t n = socket_.read_some(asio::buffer(buf));
        pending_.assign(buf, buf + n);
      }
      auto r = decoder_.feed(pending_);
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(r.consumed));
      if (r.state == nvmf::DecodeState::pdu_ready) {
        last_header_ = decoder_.header();
        nvmf::Pdu pdu = decoder_.pdu();
        // Keep the data alive past the next feed().
        if (auto* c = std::get_if<nvmf::CapsuleCmd>(&pdu)) {
          data_.assign(c->data.begin(), c->data.end());
          c->data = data_;
        } else if (auto* h = std::get_if<nvmf::H2CData>(&pdu)) {
          data_.assign(h->data.begin(), h->data.end());
          h->data = data_;
        }
        return pdu;
      }
      if (r.state == nvmf::DecodeState::failed) throw std::runtime_error(decoder_.error().detail);
    }
  }

  void send(const nvmf::Pdu& pdu) { asio::write(socket_, asio::buffer(nvmf::encode_pdu(pdu, link_))); }

  // ICReq -> ICResp with the given parameters.
  nvmf::IcReq handshake(nvmf::IcResp resp) {
    auto req = std::get<nvmf::IcReq>(receive());
    send(resp);
    link_.header_digest = resp.hdgst;
    link_.data_digest = resp.ddgst;
    decoder_.configure({.header_digest = resp.hdgst, .data_digest = resp.ddgst, .max_data = 1 << 20});
    return req;
  }

  void respond(uint16_t cid, nvmf::Status status = 0) {
    nvmf::Cqe cqe;
    cqe.cid = cid;
    cqe.status = status;
    send(nvmf::CapsuleResp{cqe});
  }

  const nvmf::CommonHeader& last_header() const { return last_header_; }
  void close() { socket_.close(); }

 private:
  asio::io_context io_;
  tcp::acceptor acceptor_;
  tcp::socket socket_;
  nvmf::StreamDecoder decoder_{nvmf::Side::controller, {.max_data = 1 << 20}};
  nvmf::LinkParams link_;
  std::vector<uint8_t> pending_;
  std::vector<uint8_t> data_;
  nvmf::CommonHeader last_header_;
};

struct Recorder : QueueEvents {
  std::vector<std::pair<uint16_t, nvmf::Status>> completions;
  std::string failure;
  std::function<void()> on_event;
  void on_complete(QueuePair&, uint16_t cid, const nvmf::Cqe& cqe, uint64_t) override {
    completions.emplace_back(cid, cqe.status);
    if (on_event) on_event();
  }
  void on_queue_failed(QueuePair&, const std::string& what) override {
    failure = what;
    if (on_event) on_event();
  }
};

// Runs the host side: connect, then `host(queue)`, until `done()` or 5 s.
struct Harness {
  asio::io_context io;
  Recorder events;
  std::unique_ptr<QueuePair> queue;
  std::string connect_error;

  void run(const tcp::endpoint& ep, QueueConfig cfg, std::function<void(QueuePair&)> host,
           std::function<bool()> done) {
    queue = std::make_unique<QueuePair>(io, cfg, &events);
    events.on_event = [&] {
      if (done()) io.stop();
    };
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await queue->connect(ep, 2000ms);
          host(*queue);
        },
        [&](std::exception_ptr e) {
          if (!e) return;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            connect_error = ex.what();
          }
          io.stop();
        });
    io.run_for(5s);
  }
};

QueueConfig config(uint32_t max_io = 65536, bool hdgst = false, bool ddgst = false) {
  return QueueConfig{.qid = 1, .depth = 4, .header_digest = hdgst, .data_digest = ddgst, .max_io_bytes = max_io,
                     .name = "test queue"};
}

TEST(LoadHostProtocol, ReadAssembledFromSeveralC2HDataWithSuccessFlag) {
  ScriptedTarget target;
  std::vector<uint8_t> expected(12288);
  std::iota(expected.begin(), expected.end(), 0);
  std::thread t([&] {
    target.accept();
    target.handshake({});
    auto cmd = std::get<nvmf::CapsuleCmd>(target.receive());
    EXPECT_EQ(cmd.sqe.opcode, nvmf::nvm_opcode::kRead);
    EXPECT_TRUE(cmd.sqe.sgl1.transport());
    EXPECT_EQ(cmd.sqe.sgl1.length, 12288u);
    // Three PDUs, out of order; the last carries SUCCESS: no CapsuleResp follows.
    for (uint32_t off : {4096u, 0u, 8192u}) {
      nvmf::C2HData d{.cccid = cmd.sqe.cid, .datao = off, .datal = 4096, .last = off == 8192,
                      .success = off == 8192, .data = std::span(expected).subspan(off, 4096)};
      target.send(d);
    }
  });
  std::vector<uint8_t> buf(12288);
  Harness h;
  h.run(target.endpoint(), config(),
        [&](QueuePair& q) { q.submit(2, nvmf::make_read(2, 1, 0, 24, 12288), {}, false, buf, 12288); },
        [&] { return !h.events.completions.empty() || !h.events.failure.empty(); });
  t.join();
  ASSERT_EQ(h.connect_error, "");
  ASSERT_EQ(h.events.failure, "");
  ASSERT_EQ(h.events.completions.size(), 1u);
  EXPECT_EQ(h.events.completions[0], std::make_pair(uint16_t{2}, nvmf::Status{0}));
  EXPECT_EQ(buf, expected);
}

TEST(LoadHostProtocol, R2TAnsweredWithH2CDataSplitByMaxH2CData) {
  ScriptedTarget target;
  std::vector<uint8_t> data(65536);
  std::iota(data.begin(), data.end(), 7);
  std::vector<uint8_t> received(65536);
  std::vector<std::pair<uint32_t, bool>> pdus;  // (datao, last)
  std::thread t([&] {
    target.accept();
    target.handshake({.hdgst = true, .ddgst = true, .maxh2cdata = 16384});
    auto cmd = std::get<nvmf::CapsuleCmd>(target.receive());
    EXPECT_TRUE(cmd.data.empty());
    EXPECT_TRUE(cmd.sqe.sgl1.transport());
    // Two R2Ts of 32 KiB each, as a target with a 32 KiB R2T size sends them.
    for (uint32_t r2to : {0u, 32768u}) {
      target.send(nvmf::R2T{.cccid = cmd.sqe.cid, .ttag = 9, .r2to = r2to, .r2tl = 32768});
      for (int i = 0; i < 2; ++i) {
        auto h2c = std::get<nvmf::H2CData>(target.receive());
        EXPECT_EQ(h2c.ttag, 9);
        EXPECT_TRUE(target.last_header().flags & nvmf::pdu_flag::kHdgst);
        EXPECT_TRUE(target.last_header().flags & nvmf::pdu_flag::kDdgst);
        pdus.emplace_back(h2c.datao, h2c.last);
        std::copy(h2c.data.begin(), h2c.data.end(), received.begin() + h2c.datao);
      }
    }
    target.respond(cmd.sqe.cid);
  });
  Harness h;
  h.run(target.endpoint(), config(65536, true, true),
        [&](QueuePair& q) { q.submit(1, nvmf::make_write(1, 1, 0, 128, 65536, false), data, false, {}, 0); },
        [&] { return !h.events.completions.empty() || !h.events.failure.empty(); });
  t.join();
  ASSERT_EQ(h.connect_error, "");
  ASSERT_EQ(h.events.failure, "");
  ASSERT_EQ(h.events.completions.size(), 1u);
  std::vector<std::pair<uint32_t, bool>> want{{0, false}, {16384, true}, {32768, false}, {49152, true}};
  EXPECT_EQ(pdus, want);  // LAST_PDU on the final H2CData of each R2T
  EXPECT_EQ(received, data);
}

TEST(LoadHostProtocol, InCapsuleWriteCarriesItsData) {
  ScriptedTarget target;
  std::vector<uint8_t> data(4096, 0x3c);
  std::vector<uint8_t> got;
  std::thread t([&] {
    target.accept();
    target.handshake({});
    auto cmd = std::get<nvmf::CapsuleCmd>(target.receive());
    EXPECT_TRUE(cmd.sqe.sgl1.in_capsule());
    got.assign(cmd.data.begin(), cmd.data.end());
    target.respond(cmd.sqe.cid, nvmf::status::kLbaOutOfRange);
  });
  Harness h;
  h.run(target.endpoint(), config(),
        [&](QueuePair& q) { q.submit(0, nvmf::make_write(0, 1, 0, 8, 4096, true), data, true, {}, 0); },
        [&] { return !h.events.completions.empty() || !h.events.failure.empty(); });
  t.join();
  EXPECT_EQ(got, data);
  ASSERT_EQ(h.events.completions.size(), 1u);
  EXPECT_EQ(nvmf::status_code(h.events.completions[0].second), nvmf::status::kLbaOutOfRange);
}

struct BadTargetCase {
  const char* description;
  std::function<void(ScriptedTarget&, const nvmf::CapsuleCmd&)> misbehave;
  const char* expected_error;
};

class LoadHostProtocolErrors : public ::testing::TestWithParam<BadTargetCase> {};

TEST_P(LoadHostProtocolErrors, FailTheQueueWithAClearMessage) {
  const auto& tc = GetParam();
  ScriptedTarget target;
  std::thread t([&] {
    target.accept();
    target.handshake({});
    auto cmd = std::get<nvmf::CapsuleCmd>(target.receive());
    tc.misbehave(target, cmd);
    // Give the host time to see it before the socket closes.
    std::this_thread::sleep_for(200ms);
  });
  std::vector<uint8_t> buf(4096), data(8192);
  Harness h;
  h.run(target.endpoint(), config(),
        [&](QueuePair& q) { q.submit(3, nvmf::make_write(3, 1, 0, 16, 8192, false), data, false, {}, 0); },
        [&] { return !h.events.failure.empty() || !h.events.completions.empty(); });
  t.join();
  EXPECT_TRUE(h.events.completions.empty());
  EXPECT_NE(h.events.failure.find(tc.expected_error), std::string::npos)
      << tc.description << ": got '" << h.events.failure << "'";
  EXPECT_NE(h.events.failure.find("test queue"), std::string::npos) << h.events.failure;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LoadHostProtocolErrors,
    ::testing::Values(
        BadTargetCase{"CapsuleResp for a CID with nothing outstanding",
                      [](ScriptedTarget& t, const nvmf::CapsuleCmd&) { t.respond(2); },
                      "CapsuleResp for CID 2 which has no command outstanding"},
        BadTargetCase{"R2T beyond the command's data",
                      [](ScriptedTarget& t, const nvmf::CapsuleCmd& c) {
                        t.send(nvmf::R2T{.cccid = c.sqe.cid, .ttag = 1, .r2to = 4096, .r2tl = 8192});
                      },
                      "outside the command's 8192 bytes"},
        BadTargetCase{"C2HData for a write (no read buffer)",
                      [](ScriptedTarget& t, const nvmf::CapsuleCmd& c) {
                        std::vector<uint8_t> d(512);
                        t.send(nvmf::C2HData{.cccid = c.sqe.cid, .datao = 0, .datal = 512, .last = true, .data = d});
                      },
                      "exceeds the command's 0 bytes"},
        BadTargetCase{"C2HTermReq",
                      [](ScriptedTarget& t, const nvmf::CapsuleCmd&) {
                        std::vector<uint8_t> hdr(8);
                        t.send(nvmf::make_term_req(nvmf::Side::controller, nvmf::FatalErrorStatus::pdu_sequence_error,
                                                   0, hdr));
                      },
                      "PDU Sequence Error"},
        BadTargetCase{"connection closed with a command outstanding",
                      [](ScriptedTarget& t, const nvmf::CapsuleCmd&) { t.close(); }, "connection closed by the target"}),
    [](const auto& info) { return std::to_string(info.index); });

TEST(LoadHostProtocol, RefusedDigestFailsTheConnect) {
  ScriptedTarget target;
  std::thread t([&] {
    target.accept();
    auto req = target.handshake({.hdgst = false, .ddgst = true});
    EXPECT_TRUE(req.hdgst);
    EXPECT_TRUE(req.ddgst);
    std::this_thread::sleep_for(200ms);
  });
  Harness h;
  h.run(target.endpoint(), config(4096, true, true), [](QueuePair&) {}, [] { return false; });
  t.join();
  EXPECT_NE(h.connect_error.find("did not enable the requested header digest"), std::string::npos)
      << h.connect_error;
}

}  // namespace
