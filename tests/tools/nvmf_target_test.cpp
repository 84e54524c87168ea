// nvqos-target protocol tests: an in-process target on loopback and a raw-socket host built from
// the nvmf codec, checking what the NVMe/TCP binding and NVMe-oF require on the wire.
#include <gtest/gtest.h>
#include <poll.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include "config.hpp"
#include "nvqos/nvmf/decoder.h"
#include "target.hpp"

namespace nvqos::target {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace nvqos::nvmf;
using Bytes = std::vector<std::uint8_t>;

const std::string kSub = "nqn.2024-01.io.nvqos:test";
const std::string kHost = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
const std::string kOtherHost = "nqn.2014-08.org.nvmexpress:uuid:99999999-0000-0000-0000-000000000000";

TargetConfig base_config() {
  TargetConfig cfg;
  cfg.listen = {"127.0.0.1:0"};
  SubsystemConfig s;
  s.nqn = kSub;
  s.hosts = {kHost};
  s.namespaces = {{1, 64ull << 20, 512}, {2, 16ull << 20, 4096}};
  cfg.subsystems = {s};
  cfg.inline_data_size = 8192;
  cfg.max_h2c_data = 16384;
  return cfg;
}

// The target running on its own io_context thread(s) for one test.
class RunningTarget {
 public:
  explicit RunningTarget(TargetConfig cfg, unsigned threads = 1)
      : target_(io_, std::move(cfg), [this](std::string_view l) {
          std::lock_guard lock(mu_);
          log_.emplace_back(l);
        }) {
    port_ = target_.start().front().port();
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~RunningTarget() {
    target_.stop();
    for (auto& t : threads_) t.join();
  }
  std::uint16_t port() const { return port_; }
  TargetStats stats() const { return target_.stats(); }
  bool logged(const std::string& needle) {
    std::lock_guard lock(mu_);
    for (auto& l : log_)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }

 private:
  asio::io_context io_;
  std::mutex mu_;
  std::vector<std::string> log_;
  Target target_;
  std::uint16_t port_ = 0;
  std::vector<std::thread> threads_;
};

struct Received {
  PduType type;
  Pdu pdu;
  Bytes data;  // owned copy of data / TermReq header
  bool ddgst_ok = true;
};

struct Result {
  Cqe cqe;
  Bytes read;
  std::vector<R2T> r2ts;
};

// A minimal synchronous NVMe/TCP host for tests.
class TestHost {
 public:
  explicit TestHost(std::uint16_t port) : socket_(io_), decoder_(Side::host, {.max_data = 2u << 20}) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }

  void send_raw(std::span<const std::uint8_t> bytes) { asio::write(socket_, asio::buffer(bytes.data(), bytes.size())); }
  void send(const Pdu& pdu) { send_raw(encode_pdu(pdu, link_)); }

  // Next PDU, or nullopt when the target closed the connection.
  std::optional<Received> next() {
    for (;;) {
      if (!pending_.empty()) {
        FeedResult r = decoder_.feed(pending_);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(r.consumed));
        if (r.state == DecodeState::failed) {
          ADD_FAILURE() << "host decoder: " << decoder_.error().detail;
          return std::nullopt;
        }
        if (r.state == DecodeState::pdu_ready) {
          Received rx{pdu_type(decoder_.pdu()), decoder_.pdu(), {}, decoder_.data_digest_ok()};
          if (auto* c = std::get_if<C2HData>(&rx.pdu)) rx.data.assign(c->data.begin(), c->data.end());
          if (auto* t = std::get_if<C2HTermReq>(&rx.pdu)) rx.data.assign(t->pdu_header.begin(), t->pdu_header.end());
          return rx;
        }
      }
      // Asio's blocking read would wait forever; a test must fail instead of hanging.
      pollfd pfd{socket_.native_handle(), POLLIN, 0};
      if (poll(&pfd, 1, 5000) != 1) {
        ADD_FAILURE() << "no PDU from the target within 5 s";
        return std::nullopt;
      }
      std::uint8_t buf[65536];
      boost::system::error_code ec;
      std::size_t n = socket_.read_some(asio::buffer(buf), ec);
      if (ec) return std::nullopt;
      pending_.insert(pending_.end(), buf, buf + n);
    }
  }

  IcResp ic(bool hdgst = false, bool ddgst = false, std::uint32_t maxr2t = 0) {
    send(IcReq{.pfv = 0, .hpda = 0, .hdgst = hdgst, .ddgst = ddgst, .maxr2t = maxr2t});
    auto rx = next();
    EXPECT_TRUE(rx && rx->type == PduType::ic_resp);
    IcResp resp = std::get<IcResp>(rx->pdu);
    link_ = {resp.hdgst, resp.ddgst, resp.cpda};
    maxh2c_ = resp.maxh2cdata;
    decoder_.configure({.header_digest = resp.hdgst, .data_digest = resp.ddgst, .max_data = 2u << 20});
    return resp;
  }

  // Sends a command and runs it to its CapsuleResp: answers R2Ts from `write_data`, collects C2HData.
  Result run(const Sqe& sqe, std::span<const std::uint8_t> in_capsule = {}, std::span<const std::uint8_t> write_data = {}) {
    send(CapsuleCmd{sqe, in_capsule});
    Result res;
    for (;;) {
      auto rx = next();
      if (!rx) {
        ADD_FAILURE() << "connection closed while waiting for CID " << sqe.cid;
        return res;
      }
      if (auto* c2h = std::get_if<C2HData>(&rx->pdu)) {
        EXPECT_EQ(c2h->cccid, sqe.cid);
        EXPECT_EQ(c2h->datao, res.read.size());
        EXPECT_TRUE(rx->ddgst_ok);
        res.read.insert(res.read.end(), rx->data.begin(), rx->data.end());
        if (c2h->success) {
          res.cqe = Cqe{.cid = sqe.cid};
          return res;
        }
      } else if (auto* r2t = std::get_if<R2T>(&rx->pdu)) {
        res.r2ts.push_back(*r2t);
        std::uint32_t off = r2t->r2to;
        while (off < r2t->r2to + r2t->r2tl) {
          std::uint32_t n = std::min(maxh2c_, r2t->r2to + r2t->r2tl - off);
          H2CData d{.cccid = r2t->cccid, .ttag = r2t->ttag, .datao = off, .datal = n,
                    .last = off + n == r2t->r2to + r2t->r2tl, .data = write_data.subspan(off, n)};
          send(d);
          off += n;
        }
      } else if (auto* resp = std::get_if<CapsuleResp>(&rx->pdu)) {
        res.cqe = resp->cqe;
        EXPECT_EQ(res.cqe.cid, sqe.cid);
        return res;
      } else {
        ADD_FAILURE() << "unexpected " << pdu_type_name(rx->type);
        return res;
      }
    }
  }

  Cqe connect(std::uint16_t qid, std::uint16_t sqsize, const std::string& subnqn, const std::string& hostnqn,
              std::uint16_t cntlid = 0xffff, std::uint8_t cattr = 0, std::uint32_t kato_ms = 0) {
    ConnectData d;
    d.cntlid = cntlid;
    d.subnqn = subnqn;
    d.hostnqn = hostnqn;
    d.hostid[0] = 1;
    Bytes data(kConnectDataSize);
    d.encode(std::span<std::uint8_t, kConnectDataSize>(data.data(), kConnectDataSize));
    Sqe sqe = make_connect(next_cid(), {.qid = qid, .sqsize = sqsize, .cattr = cattr, .kato_ms = kato_ms});
    return run(sqe, data).cqe;
  }

  // ICReq, admin Connect, CC.EN=1, wait for CSTS.RDY. Returns the controller ID.
  std::uint16_t bring_up_admin(bool digests = false) {
    ic(digests, digests);
    Cqe c = connect(0, 31, kSub, kHost);
    EXPECT_TRUE(c.ok()) << status_to_string(c.status);
    EXPECT_TRUE(run(make_property_set(next_cid(), property::kCc, 0x460001, 4)).cqe.ok());
    Cqe csts = run(make_property_get(next_cid(), property::kCsts, 4)).cqe;
    EXPECT_EQ(csts.dw0 & property::kCstsReady, 1u);
    return static_cast<std::uint16_t>(c.dw0);
  }

  void bring_up_io(std::uint16_t cntlid, std::uint16_t sqsize = 127, bool digests = false, std::uint8_t cattr = 0,
                   std::uint32_t maxr2t = 0) {
    ic(digests, digests, maxr2t);
    Cqe c = connect(1, sqsize, kSub, kHost, cntlid, cattr);
    ASSERT_TRUE(c.ok()) << status_to_string(c.status);
  }

  std::uint16_t next_cid() { return cid_++; }
  const LinkParams& link() const { return link_; }
  tcp::socket& socket() { return socket_; }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  StreamDecoder decoder_;
  Bytes pending_;
  LinkParams link_;
  std::uint32_t maxh2c_ = 4096;
  std::uint16_t cid_ = 1;
};

Bytes pattern(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 7 + (i >> 9));
  return b;
}

// ---- Admin queue ------------------------------------------------------------------------------------

TEST(TargetAdmin, EnableIdentifyFeatures) {
  RunningTarget t(base_config());
  TestHost h(t.port());
  IcResp ic = h.ic();
  EXPECT_EQ(ic.pfv, 0);
  EXPECT_EQ(ic.maxh2cdata, 16384u);
  EXPECT_FALSE(ic.hdgst);

  // Before Connect nothing else is accepted.
  Cqe early = h.run(make_property_get(h.next_cid(), property::kCap, 8)).cqe;
  EXPECT_EQ(status_code(early.status), status::kCommandSequenceError);

  Cqe c = h.connect(0, 31, kSub, kHost);
  ASSERT_TRUE(c.ok()) << status_to_string(c.status);
  const std::uint16_t cntlid = static_cast<std::uint16_t>(c.dw0);
  EXPECT_GE(cntlid, 1);
  EXPECT_EQ(c.sqhd, 1);

  Cqe cap = h.run(make_property_get(h.next_cid(), property::kCap, 8)).cqe;
  ASSERT_TRUE(cap.ok());
  EXPECT_EQ(property_value(cap) & 0xffff, 1023u);        // MQES
  EXPECT_TRUE(property_value(cap) & (1ull << 37));        // NVM command set
  EXPECT_EQ(h.run(make_property_get(h.next_cid(), property::kVs, 4)).cqe.dw0, 0x00010400u);
  // Identify before CC.EN is a sequence error.
  Cqe idle = h.run(make_identify(h.next_cid(), cns::kController)).cqe;
  EXPECT_EQ(status_code(idle.status), status::kCommandSequenceError);
  EXPECT_EQ(h.run(make_property_get(h.next_cid(), property::kCsts, 4)).cqe.dw0 & 1, 0u);
  ASSERT_TRUE(h.run(make_property_set(h.next_cid(), property::kCc, 0x460001, 4)).cqe.ok());
  EXPECT_EQ(h.run(make_property_get(h.next_cid(), property::kCsts, 4)).cqe.dw0 & 1, 1u);
  EXPECT_EQ(h.run(make_property_get(h.next_cid(), property::kCc, 4)).cqe.dw0, 0x460001u);
  // Unknown property offset.
  EXPECT_EQ(status_code(h.run(make_property_get(h.next_cid(), 0x100, 4)).cqe.status), status::kInvalidField);

  Result ctrl = h.run(make_identify(h.next_cid(), cns::kController));
  ASSERT_TRUE(ctrl.cqe.ok());
  ASSERT_EQ(ctrl.read.size(), kIdentifySize);
  auto id = IdentifyController::decode(std::span<const std::uint8_t, kIdentifySize>(ctrl.read.data(), kIdentifySize));
  EXPECT_EQ(id.subnqn, kSub);
  EXPECT_EQ(id.cntlid, cntlid);
  EXPECT_EQ(id.nn, 2u);
  EXPECT_EQ(id.in_capsule_data_size(), 8192u);
  EXPECT_EQ(id.icdoff, 0);
  EXPECT_EQ(id.sgls & 3, 1u);
  EXPECT_EQ(id.model, "nvqos-target");

  Result ns = h.run(make_identify(h.next_cid(), cns::kNamespace, 2));
  auto idns = IdentifyNamespace::decode(std::span<const std::uint8_t, kIdentifySize>(ns.read.data(), kIdentifySize));
  EXPECT_EQ(idns.nsze, (16ull << 20) / 4096);
  EXPECT_EQ(idns.block_size(), 4096u);

  Result list = h.run(make_identify(h.next_cid(), cns::kActiveNamespaces, 1));
  std::uint32_t ids[4];
  ASSERT_EQ(decode_active_namespace_list(std::span<const std::uint8_t, kIdentifySize>(list.read.data(), kIdentifySize), ids), 1u);
  EXPECT_EQ(ids[0], 2u);

  Result desc = h.run(make_identify(h.next_cid(), cns::kNamespaceDescriptors, 1));
  ASSERT_TRUE(desc.cqe.ok());
  EXPECT_EQ(desc.read[0], 0x02);  // NGUID
  EXPECT_EQ(status_code(h.run(make_identify(h.next_cid(), 0x55)).cqe.status), status::kInvalidField);

  Cqe nq = h.run(make_set_number_of_queues(h.next_cid(), 4, 4)).cqe;
  ASSERT_TRUE(nq.ok());
  EXPECT_EQ(parse_number_of_queues(nq.dw0).sq_count, 4);

  // AERs are held: the next command's response is the next PDU.
  h.send(CapsuleCmd{make_async_event_request(h.next_cid()), {}});
  Cqe ka = h.run(make_keep_alive(h.next_cid())).cqe;
  EXPECT_TRUE(ka.ok());
  EXPECT_EQ(status_code(h.run([&] { Sqe s; s.opcode = 0xc5; s.cid = h.next_cid(); return s; }()).cqe.status), status::kInvalidOpcode);
  EXPECT_TRUE(t.logged("connect admin queue 0"));
  EXPECT_TRUE(t.logged(kHost));
}

TEST(TargetAdmin, ConnectRejections) {
  RunningTarget t(base_config());
  {
    TestHost h(t.port());
    h.ic();
    Cqe c = h.connect(0, 31, "nqn.2024-01.io.nvqos:nope", kHost);
    EXPECT_EQ(status_code(c.status), status::kConnectInvalidParameters);
    EXPECT_TRUE(status_dnr(c.status));
    auto ip = parse_connect_invalid_param(c.dw0);
    EXPECT_EQ(ip.ipo, kConnectDataSubnqnOffset);
    EXPECT_TRUE(ip.in_data);
    Cqe host = h.connect(0, 31, kSub, kOtherHost);
    EXPECT_EQ(status_code(host.status), status::kConnectInvalidHost);
    EXPECT_EQ(parse_connect_invalid_param(host.dw0).ipo, kConnectDataHostnqnOffset);
    Cqe big = h.connect(0, 64, kSub, kHost);
    EXPECT_EQ(status_code(big.status), status::kConnectInvalidParameters);
    EXPECT_FALSE(parse_connect_invalid_param(big.dw0).in_data);
  }
  {
    TestHost h(t.port());
    h.ic();
    Cqe c = h.connect(1, 31, kSub, kHost, 0x1234);
    EXPECT_EQ(status_code(c.status), status::kConnectInvalidParameters);
    EXPECT_EQ(parse_connect_invalid_param(c.dw0).ipo, kConnectDataCntlidOffset);
  }
  EXPECT_TRUE(t.logged("connect rejected"));
  EXPECT_TRUE(t.logged("unknown subsystem"));
}

TEST(TargetAdmin, DiscoveryLogListsAllowedSubsystems) {
  TargetConfig cfg = base_config();
  SubsystemConfig open;
  open.nqn = "nqn.2024-01.io.nvqos:open";
  open.allow_any_host = true;
  open.namespaces = {{1, 1 << 20, 512}};
  cfg.subsystems.push_back(open);
  RunningTarget t(cfg);
  auto discover = [&](const std::string& hostnqn) {
    TestHost h(t.port());
    h.ic();
    Cqe c = h.connect(0, 31, std::string(kDiscoveryNqn), hostnqn);
    EXPECT_TRUE(c.ok()) << status_to_string(c.status);
    EXPECT_TRUE(h.run(make_property_set(h.next_cid(), property::kCc, 0x460001, 4)).cqe.ok());
    Result id = h.run(make_identify(h.next_cid(), cns::kController));
    EXPECT_EQ(IdentifyController::decode(std::span<const std::uint8_t, kIdentifySize>(id.read.data(), kIdentifySize)).cntrltype,
              kCntrltypeDiscovery);
    // As Linux does: the header first, then the whole page.
    Result head = h.run(make_get_log_page(h.next_cid(), kLogDiscovery, 16, 0, 0));
    EXPECT_TRUE(head.cqe.ok());
    std::uint64_t numrec = decode_discovery_log(head.read).numrec;
    Result page = h.run(make_get_log_page(h.next_cid(), kLogDiscovery,
                                          static_cast<std::uint32_t>(1024 + numrec * 1024), 0, 0));
    DiscoveryLog log = decode_discovery_log(page.read);
    EXPECT_EQ(log.entries.size(), numrec);
    // An I/O queue on the discovery subsystem is refused.
    TestHost io(t.port());
    io.ic();
    EXPECT_EQ(status_code(io.connect(1, 31, std::string(kDiscoveryNqn), hostnqn, static_cast<std::uint16_t>(c.dw0)).status),
              status::kConnectInvalidParameters);
    return log;
  };
  DiscoveryLog mine = discover(kHost);
  ASSERT_EQ(mine.entries.size(), 2u);
  EXPECT_EQ(mine.entries[0].subnqn, kSub);
  EXPECT_EQ(mine.entries[0].traddr, "127.0.0.1");
  EXPECT_EQ(mine.entries[0].trsvcid, std::to_string(t.port()));
  EXPECT_EQ(mine.entries[0].trtype, 3);
  EXPECT_EQ(mine.entries[0].adrfam, 1);
  DiscoveryLog other = discover(kOtherHost);
  ASSERT_EQ(other.entries.size(), 1u);
  EXPECT_EQ(other.entries[0].subnqn, "nqn.2024-01.io.nvqos:open");
}

// ---- I/O queue --------------------------------------------------------------------------------------

void exercise_io(RunningTarget& t, bool digests, std::uint8_t cattr = 0) {
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin(digests);
  TestHost io(t.port());
  io.bring_up_io(cntlid, 127, digests, cattr);

  // In-capsule write (4 KiB <= 8 KiB inline), read back.
  Bytes w1 = pattern(4096, 1);
  Result wr = io.run(make_write(io.next_cid(), 1, 8, 8, 4096, true), w1);
  ASSERT_TRUE(wr.cqe.ok()) << status_to_string(wr.cqe.status);
  EXPECT_TRUE(wr.r2ts.empty());
  Result rd = io.run(make_read(io.next_cid(), 1, 8, 8, 4096));
  ASSERT_TRUE(rd.cqe.ok());
  EXPECT_EQ(rd.read, w1);

  // 64 KiB write via R2T/H2CData (beyond the in-capsule size), split by MAXH2CDATA 16 KiB.
  Bytes w2 = pattern(65536, 9);
  Result big = io.run(make_write(io.next_cid(), 1, 1000, 128, 65536, false), {}, w2);
  ASSERT_TRUE(big.cqe.ok()) << status_to_string(big.cqe.status);
  ASSERT_EQ(big.r2ts.size(), 1u);
  EXPECT_EQ(big.r2ts[0].r2tl, 65536u);
  Result back = io.run(make_read(io.next_cid(), 1, 1000, 128, 65536));
  EXPECT_EQ(back.read, w2);

  // Unwritten blocks read as zeros (sparse namespace); 4 KiB-block namespace 2.
  Result zeros = io.run(make_read(io.next_cid(), 2, 100, 2, 8192));
  ASSERT_TRUE(zeros.cqe.ok());
  EXPECT_EQ(zeros.read, Bytes(8192, 0));

  EXPECT_TRUE(io.run(make_flush(io.next_cid(), 1)).cqe.ok());

  // Errors: out-of-range LBA, unknown namespace, unsupported opcode, SGL length mismatch.
  const std::uint64_t blocks = (64ull << 20) / 512;
  Cqe oor = io.run(make_read(io.next_cid(), 1, blocks - 1, 2, 1024)).cqe;
  EXPECT_EQ(status_code(oor.status), status::kLbaOutOfRange);
  EXPECT_TRUE(status_dnr(oor.status));
  Cqe badns = io.run(make_read(io.next_cid(), 7, 0, 1, 512)).cqe;
  EXPECT_EQ(status_code(badns.status), status::kInvalidNamespace);
  Sqe odd = make_flush(io.next_cid(), 1);
  odd.opcode = 0x7c;  // not an NVM command set opcode
  EXPECT_EQ(status_code(io.run(odd).cqe.status), status::kInvalidOpcode);
  EXPECT_EQ(status_code(io.run(make_read(io.next_cid(), 1, 0, 1, 4096)).cqe.status), status::kSglInvalidDataLength);
}

TEST(TargetIo, ReadWriteFlushAndErrors) {
  RunningTarget t(base_config());
  exercise_io(t, false);
  TargetStats s = t.stats();
  EXPECT_GE(s.write_ops, 2u);
  EXPECT_GE(s.read_bytes, 4096u + 65536u);
}

TEST(TargetIo, WithDigests) {
  RunningTarget t(base_config());
  exercise_io(t, true);
}

TEST(TargetIo, TwoEventLoopThreads) {
  RunningTarget t(base_config(), 2);
  exercise_io(t, false);
}

TEST(TargetIo, SqheadWrapsAtQueueSize) {
  RunningTarget t(base_config());
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin();
  TestHost io(t.port());
  io.ic();
  Cqe c = io.connect(1, 3, kSub, kHost, cntlid);  // 4 entries
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.sqhd, 1);
  std::vector<std::uint16_t> heads;
  for (int i = 0; i < 6; ++i) heads.push_back(io.run(make_flush(io.next_cid(), 1)).cqe.sqhd);
  EXPECT_EQ(heads, (std::vector<std::uint16_t>{2, 3, 0, 1, 2, 3}));
}

TEST(TargetIo, DataDigestErrorFailsOnlyTheCommand) {
  RunningTarget t(base_config());
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin(true);
  TestHost io(t.port());
  io.bring_up_io(cntlid, 127, true);
  Bytes data = pattern(1024, 3);
  Bytes pdu = encode_pdu(CapsuleCmd{make_write(42, 1, 0, 2, 1024, true), data}, io.link());
  pdu[pdu.size() - 1] ^= 0x5a;  // break DDGST
  io.send_raw(pdu);
  auto rx = io.next();
  ASSERT_TRUE(rx && rx->type == PduType::capsule_resp);
  EXPECT_EQ(status_code(std::get<CapsuleResp>(rx->pdu).cqe.status), status::kTransientTransportError);
  EXPECT_TRUE(io.run(make_flush(io.next_cid(), 1)).cqe.ok()) << "connection still usable";
}

TEST(TargetIo, R2tSplitHonoursMaxr2t) {
  TargetConfig cfg = base_config();
  cfg.r2t_size = 8192;
  cfg.maxr2t = 4;
  RunningTarget t(cfg);
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin();
  TestHost io(t.port());
  io.bring_up_io(cntlid, 127, false, 0, /*maxr2t 0's based*/ 1);  // host allows 2 outstanding
  Bytes w = pattern(65536, 5);
  io.send(CapsuleCmd{make_write(77, 1, 0, 128, 65536, false), {}});
  std::vector<R2T> first;
  for (int i = 0; i < 2; ++i) {
    auto rx = io.next();
    ASSERT_TRUE(rx && rx->type == PduType::r2t);
    first.push_back(std::get<R2T>(rx->pdu));
  }
  EXPECT_EQ(first[0].r2to, 0u);
  EXPECT_EQ(first[1].r2to, 8192u);
  EXPECT_EQ(first[1].r2tl, 8192u);
  // Answer them and then the rest via the helper loop.
  // Each answered R2T frees one of the two slots, so exactly one new R2T follows until all
  // 64 KiB have been requested.
  std::uint32_t requested = 16384;
  std::vector<R2T> queue = first;
  while (!queue.empty()) {
    R2T r = queue.front();
    queue.erase(queue.begin());
    io.send(H2CData{.cccid = 77, .ttag = r.ttag, .datao = r.r2to, .datal = r.r2tl, .last = true,
                    .data = std::span(w).subspan(r.r2to, r.r2tl)});
    if (requested == 65536) continue;
    auto rx = io.next();
    ASSERT_TRUE(rx && rx->type == PduType::r2t);
    R2T next = std::get<R2T>(rx->pdu);
    EXPECT_EQ(next.r2to, requested);
    requested += next.r2tl;
    queue.push_back(next);
  }
  auto rx = io.next();
  ASSERT_TRUE(rx && rx->type == PduType::capsule_resp);
  EXPECT_TRUE(std::get<CapsuleResp>(rx->pdu).cqe.ok());
  EXPECT_EQ(io.run(make_read(io.next_cid(), 1, 0, 128, 65536)).read, w);
}

TEST(TargetIo, C2hSuccessOnlyWithSqFlowControlDisabled) {
  TargetConfig cfg = base_config();
  cfg.c2h_success = true;
  RunningTarget t(cfg);
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin();
  {
    TestHost io(t.port());
    io.bring_up_io(cntlid, 127, false, /*CATTR: disable SQ flow control*/ 0x04);
    io.send(CapsuleCmd{make_read(5, 1, 0, 1, 512), {}});
    auto rx = io.next();
    ASSERT_TRUE(rx && rx->type == PduType::c2h_data);
    EXPECT_TRUE(std::get<C2HData>(rx->pdu).success);
    EXPECT_TRUE(io.run(make_flush(io.next_cid(), 1)).cqe.ok()) << "no CapsuleResp was pending for CID 5";
  }
}

TEST(TargetIo, ServiceTimeDelaysCompletion) {
  TargetConfig cfg = base_config();
  cfg.service_time = ServiceTime::parse("fixed:30ms");
  RunningTarget t(cfg);
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin();
  TestHost io(t.port());
  io.bring_up_io(cntlid);
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(io.run(make_read(io.next_cid(), 1, 0, 1, 512)).cqe.ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(30));
}

// ---- Fatal errors --------------------------------------------------------------------------------------

// Reads until the target's C2HTermReq and then EOF.
C2HTermReq expect_term_req(TestHost& h, Bytes& echoed) {
  for (;;) {
    auto rx = h.next();
    if (!rx) {
      ADD_FAILURE() << "connection closed without C2HTermReq";
      return {};
    }
    if (rx->type == PduType::c2h_term_req) {
      echoed = rx->data;
      C2HTermReq t = std::get<C2HTermReq>(rx->pdu);
      EXPECT_FALSE(h.next().has_value()) << "target must close after C2HTermReq";
      return t;
    }
  }
}

TEST(TargetFatal, MalformedPduClosesOnlyThatConnection) {
  RunningTarget t(base_config());
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin();
  TestHost good(t.port());
  good.bring_up_io(cntlid);

  TestHost bad(t.port());
  bad.ic();
  Bytes pdu = encode_pdu(CapsuleCmd{make_flush(1, 1), {}});
  pdu[2] = 60;  // HLEN
  bad.send_raw(pdu);
  Bytes echoed;
  C2HTermReq term = expect_term_req(bad, echoed);
  EXPECT_EQ(term.fes, FatalErrorStatus::invalid_header_field);
  EXPECT_EQ(term.fei, 2u);
  ASSERT_GE(echoed.size(), 8u);
  EXPECT_TRUE(std::equal(echoed.begin(), echoed.begin() + 8, pdu.begin()));

  // The other connections keep working.
  EXPECT_TRUE(good.run(make_flush(good.next_cid(), 1)).cqe.ok());
  EXPECT_TRUE(admin.run(make_keep_alive(admin.next_cid())).cqe.ok());
  EXPECT_EQ(t.stats().fatal_errors, 1u);
  EXPECT_TRUE(t.logged("C2HTermReq"));
}

TEST(TargetFatal, SequenceAndDigestAndDataErrors) {
  RunningTarget t(base_config());
  {  // CapsuleCmd before ICReq
    TestHost h(t.port());
    h.send_raw(encode_pdu(CapsuleCmd{make_flush(1, 1), {}}));
    Bytes e;
    EXPECT_EQ(expect_term_req(h, e).fes, FatalErrorStatus::pdu_sequence_error);
  }
  {  // header digest mismatch
    TestHost h(t.port());
    h.ic(true, false);
    Bytes pdu = encode_pdu(CapsuleCmd{make_flush(1, 1), {}}, h.link());
    pdu[72] ^= 1;
    h.send_raw(pdu);
    Bytes e;
    EXPECT_EQ(expect_term_req(h, e).fes, FatalErrorStatus::header_digest_error);
  }
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin();
  {  // H2CData for no R2T
    TestHost h(t.port());
    h.bring_up_io(cntlid);
    Bytes d(512, 1);
    h.send(H2CData{.cccid = 1, .ttag = 3, .datao = 0, .datal = 512, .last = true, .data = d});
    Bytes e;
    C2HTermReq term = expect_term_req(h, e);
    EXPECT_EQ(term.fes, FatalErrorStatus::invalid_header_field);
    EXPECT_EQ(term.fei, 10u);  // TTAG
  }
  {  // H2CData beyond the R2T
    TestHost h(t.port());
    h.bring_up_io(cntlid);
    h.send(CapsuleCmd{make_write(9, 1, 0, 32, 16384, false), {}});
    auto rx = h.next();
    ASSERT_TRUE(rx && rx->type == PduType::r2t);
    R2T r = std::get<R2T>(rx->pdu);
    Bytes d(4096, 1);
    h.send(H2CData{.cccid = 9, .ttag = r.ttag, .datao = 16384 - 2048, .datal = 4096, .last = true, .data = d});
    Bytes e;
    EXPECT_EQ(expect_term_req(h, e).fes, FatalErrorStatus::data_out_of_range);
  }
  {  // H2CData larger than MAXH2CDATA
    TestHost h(t.port());
    h.bring_up_io(cntlid);
    h.send(CapsuleCmd{make_write(9, 1, 0, 64, 32768, false), {}});
    auto rx = h.next();
    ASSERT_TRUE(rx && rx->type == PduType::r2t);
    R2T r = std::get<R2T>(rx->pdu);
    Bytes d(32768, 1);
    h.send(H2CData{.cccid = 9, .ttag = r.ttag, .datao = 0, .datal = 32768, .last = true, .data = d});
    Bytes e;
    EXPECT_EQ(expect_term_req(h, e).fes, FatalErrorStatus::data_limit_exceeded);
  }
  EXPECT_TRUE(admin.run(make_keep_alive(admin.next_cid())).cqe.ok());
}

// Mutated but mostly plausible PDU streams on many connections: the target must answer or close
// each one and keep serving a well-behaved connection (run under ASan to catch memory errors).
TEST(TargetFatal, SurvivesMutatedStreams) {
  RunningTarget t(base_config());
  TestHost admin(t.port());
  std::uint16_t cntlid = admin.bring_up_admin();
  std::mt19937 rng(42);
  for (int round = 0; round < 150; ++round) {
    asio::io_context io;
    tcp::socket s(io);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), t.port()));
    Bytes stream = encode_pdu(IcReq{.hdgst = (round & 1) != 0});
    LinkParams link{(round & 1) != 0, false, 0};
    ConnectData cd;
    cd.cntlid = (round & 2) ? cntlid : 0xffff;
    cd.subnqn = kSub;
    cd.hostnqn = kHost;
    Bytes data(kConnectDataSize);
    cd.encode(std::span<std::uint8_t, kConnectDataSize>(data.data(), kConnectDataSize));
    encode_pdu(CapsuleCmd{make_connect(1, {.qid = static_cast<std::uint16_t>((round & 2) ? 1 + round % 4 : 0),
                                           .sqsize = 15}), data}, link, stream);
    Bytes payload = pattern(8192, static_cast<std::uint8_t>(round));
    encode_pdu(CapsuleCmd{make_write(2, 1, rng() % 100, 2, 1024, true), std::span(payload).first(1024)}, link, stream);
    encode_pdu(CapsuleCmd{make_write(3, 1, 0, 16, 8192, false), {}}, link, stream);
    encode_pdu(H2CData{.cccid = 3, .ttag = static_cast<std::uint16_t>(rng() % 20), .datao = 0, .datal = 8192,
                       .last = true, .data = std::span(payload).first(8192)}, link, stream);
    encode_pdu(CapsuleCmd{make_read(4, 1 + rng() % 3, rng() % 200000, 1 + rng() % 64, 512 * 64), {}}, link, stream);
    // Flip a few bytes past the ICReq (sometimes none: then the stream is valid).
    for (unsigned n = rng() % 4; n > 0; --n) stream[128 + rng() % (stream.size() - 128)] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    boost::system::error_code ec;
    asio::write(s, asio::buffer(stream), ec);
    s.shutdown(tcp::socket::shutdown_send, ec);
    // Drain until the target closes or goes quiet.
    std::uint8_t buf[65536];
    for (;;) {
      pollfd pfd{s.native_handle(), POLLIN, 0};
      if (poll(&pfd, 1, 200) != 1) break;
      if (s.read_some(asio::buffer(buf), ec) == 0 || ec) break;
    }
  }
  // Both outcomes happened: some streams were rejected with a TermReq, many commands completed.
  EXPECT_GT(t.stats().fatal_errors, 10u);
  EXPECT_GT(t.stats().commands, 300u);
  TestHost io(t.port());
  io.bring_up_io(cntlid, 127, false);
  Bytes w = pattern(4096, 77);
  ASSERT_TRUE(io.run(make_write(io.next_cid(), 1, 0, 8, 4096, true), w).cqe.ok());
  EXPECT_EQ(io.run(make_read(io.next_cid(), 1, 0, 8, 4096)).read, w);
  EXPECT_TRUE(admin.run(make_keep_alive(admin.next_cid())).cqe.ok());
}

TEST(TargetLifecycle, AdminDisconnectClosesIoQueues) {
  RunningTarget t(base_config());
  auto admin = std::make_unique<TestHost>(t.port());
  std::uint16_t cntlid = admin->bring_up_admin();
  TestHost io(t.port());
  io.bring_up_io(cntlid);
  admin.reset();
  EXPECT_FALSE(io.next().has_value()) << "I/O queue must close with its controller";
  TestHost again(t.port());
  again.ic();
  Cqe c = again.connect(1, 31, kSub, kHost, cntlid);
  EXPECT_EQ(status_code(c.status), status::kConnectInvalidParameters) << "controller is gone";
}

TEST(TargetLifecycle, KeepAliveTimeoutTearsDownTheController) {
  RunningTarget t(base_config());
  TestHost h(t.port());
  h.ic();
  Cqe c = h.connect(0, 31, kSub, kHost, 0xffff, 0, /*KATO*/ 300);
  ASSERT_TRUE(c.ok());
  // Keep Alives within KATO keep it up...
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    ASSERT_TRUE(h.run(make_keep_alive(h.next_cid())).cqe.ok());
  }
  // ...silence for longer than KATO closes it.
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(h.next().has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
  EXPECT_TRUE(t.logged("keep alive timeout"));
}

// ---- Configuration --------------------------------------------------------------------------------------

TEST(TargetConfigTest, JsonErrorsNameTheJsonPointer) {
  TargetConfig cfg;
  auto err = [&](const std::string& json) {
    try {
      TargetConfig c;
      load_config_json(json, c);
      validate(c);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"subsystems":[{"nqn":"nqn.a","allow_any_host":true,"namespaces":[{"size":"1X"}]}]})")
                .find("/subsystems/0/namespaces/0/size"),
            std::string::npos);
  EXPECT_NE(err(R"({"subsystems":[{"nqn":"bad"}]})").find("/subsystems/0/nqn"), std::string::npos);
  EXPECT_NE(err(R"({"bogus":1})").find("/bogus"), std::string::npos);
  EXPECT_NE(err(R"({"service_time":"fixed:10"})").find("/service_time"), std::string::npos);
  EXPECT_NE(err(R"({"subsystems":[{"nqn":"nqn.a","namespaces":["1M"]}]})").find("no host may connect"), std::string::npos);
  load_config_json(R"({"listen":["[::1]:4420"],"service_time":"pct:p50=100us,p99=1ms","inline_data_size":"16K",
                       "subsystems":[{"nqn":"nqn.a","hosts":["nqn.h"],"namespaces":["1G:4096",{"size":"1M","nsid":7}]}]})",
                   cfg);
  validate(cfg);
  ASSERT_EQ(cfg.subsystems.size(), 1u);
  EXPECT_EQ(cfg.subsystems[0].namespaces[0].nsid, 1u);
  EXPECT_EQ(cfg.subsystems[0].namespaces[0].block_size, 4096u);
  EXPECT_EQ(cfg.subsystems[0].namespaces[1].nsid, 7u);
  EXPECT_EQ(cfg.inline_data_size, 16384u);
  EXPECT_EQ(cfg.service_time.kind(), ServiceTime::Kind::percentile);
}

TEST(TargetConfigTest, ServiceTimeShapes) {
  std::mt19937_64 rng(1);
  EXPECT_EQ(ServiceTime::parse("fixed:100us").sample(rng), std::chrono::microseconds(100));
  ServiceTime exp = ServiceTime::parse("exp:mean=200us");
  double sum = 0;
  for (int i = 0; i < 20000; ++i) sum += static_cast<double>(exp.sample(rng).count());
  EXPECT_NEAR(sum / 20000, 200e3, 10e3);
  ServiceTime pct = ServiceTime::parse("pct:p50=100us,p99=1ms");
  std::vector<double> v;
  for (int i = 0; i < 20000; ++i) v.push_back(static_cast<double>(pct.sample(rng).count()));
  std::sort(v.begin(), v.end());
  EXPECT_NEAR(v[10000], 100e3, 10e3);
  EXPECT_NEAR(v[19800], 1e6, 150e3);
  EXPECT_THROW(ServiceTime::parse("pct:p50=1ms,p99=100us"), ConfigError);
  EXPECT_THROW(ServiceTime::parse("gauss:1ms"), ConfigError);
  EXPECT_EQ(parse_listen("[::1]:4420").host, "::1");
  EXPECT_EQ(parse_listen("127.0.0.1:8009").port, 8009);
  EXPECT_THROW(parse_listen("::1:4420"), ConfigError);
  EXPECT_EQ(parse_size("1G"), 1ull << 30);
}

TEST(TargetListen, Ipv6Loopback) {
  TargetConfig cfg = base_config();
  cfg.listen = {"[::1]:0"};
  asio::io_context io;
  Target target(io, cfg, [](std::string_view) {});
  std::vector<tcp::endpoint> eps;
  try {
    eps = target.start();
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_TRUE(eps[0].address().is_v6());
  std::thread th([&] { io.run(); });
  {
    asio::io_context cio;
    tcp::socket s(cio);
    s.connect(eps[0]);
    asio::write(s, asio::buffer(encode_pdu(IcReq{})));
    std::uint8_t buf[128];
    asio::read(s, asio::buffer(buf));
    EXPECT_EQ(buf[0], 0x01);
  }
  target.stop();
  th.join();
}

}  // namespace
}  // namespace nvqos::target
