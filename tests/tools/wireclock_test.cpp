// The wire clock's bookkeeping: TX stamp keys to timed units (in order, wrap-around, missed
// units counted and never given a time), PDU framing of stamped reads, the target's pending
// completions, the packet tap's sequence-to-offset mapping, and the whole path on a real
// loopback TCP connection.
#include <gtest/gtest.h>
#include <nvqos/wireclock/packet_tap.h>
#include <nvqos/wireclock/stamped_writer.h>
#include <nvqos/wireclock/wire_clock.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>

#include "service_time.hpp"

namespace nvqos::wireclock {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

TEST(TxKeyQueue, MatchesStampsToUnitsInOrder) {
  TxKeyQueue q;
  q.expect(71, 1);
  q.expect(143, 2);
  std::vector<uint64_t> missed;
  auto on_missed = [&](uint64_t t) { missed.push_back(t); };
  auto m = q.match(71, on_missed);
  ASSERT_TRUE(m.token);
  EXPECT_EQ(*m.token, 1u);
  EXPECT_EQ(m.missed, 0u);
  m = q.match(143, on_missed);
  ASSERT_TRUE(m.token);
  EXPECT_EQ(*m.token, 2u);
  EXPECT_TRUE(missed.empty());
  EXPECT_EQ(q.waiting(), 0u);
}

TEST(TxKeyQueue, IgnoresKeysThatAreNoUnitsAndRepeats) {
  TxKeyQueue q;
  q.expect(100, 7);
  std::vector<uint64_t> missed;
  auto on_missed = [&](uint64_t t) { missed.push_back(t); };
  // The head of a partial send of the unit: not its key, and nothing before it waits.
  auto m = q.match(40, on_missed);
  EXPECT_FALSE(m.token);
  EXPECT_EQ(q.waiting(), 1u);
  m = q.match(100, on_missed);
  ASSERT_TRUE(m.token);
  EXPECT_EQ(*m.token, 7u);
  // A retransmission stamps the same key again: nothing waits for it any more.
  m = q.match(100, on_missed);
  EXPECT_FALSE(m.token);
  EXPECT_TRUE(missed.empty());
}

TEST(TxKeyQueue, UnitsSkippedByALaterStampAreMissedNotGuessed) {
  TxKeyQueue q;
  q.expect(10, 1);
  q.expect(20, 2);
  q.expect(30, 3);
  std::vector<uint64_t> missed;
  auto m = q.match(30, [&](uint64_t t) { missed.push_back(t); });
  ASSERT_TRUE(m.token);
  EXPECT_EQ(*m.token, 3u);
  EXPECT_EQ(m.missed, 2u);
  EXPECT_EQ(missed, (std::vector<uint64_t>{1, 2}));
}

TEST(TxKeyQueue, KeysWrapAtFourGibibytes) {
  TxKeyQueue q;
  q.expect(0xffffff00u, 1);
  q.expect(0x10u, 2);  // 0x110 bytes later, after the wrap
  EXPECT_TRUE(TxKeyQueue::before(0xffffff00u, 0x10u));
  std::vector<uint64_t> missed;
  auto m = q.match(0x10u, [&](uint64_t t) { missed.push_back(t); });
  ASSERT_TRUE(m.token);
  EXPECT_EQ(*m.token, 2u);
  EXPECT_EQ(missed, (std::vector<uint64_t>{1}));
}

std::vector<uint8_t> pdu(uint8_t type, uint32_t plen) {
  std::vector<uint8_t> b(plen, 0xab);
  b[0] = type;
  b[1] = 0;
  b[2] = 24;
  b[3] = 0;
  for (int i = 0; i < 4; ++i) b[4 + i] = static_cast<uint8_t>(plen >> (8 * i));
  return b;
}

TEST(PduFramer, ReadsEachCommonHeaderAloneAndStopsAtPduEnds) {
  PduFramer f;
  EXPECT_EQ(f.want(4096), 8u);
  auto a = pdu(0x05, 24);
  f.consumed({a.data(), 3}, 111);  // a header split across reads: the read completing it counts
  EXPECT_EQ(f.want(4096), 5u);
  f.consumed({a.data() + 3, 5}, 222);
  EXPECT_EQ(f.pdu_rx_ns(), 222u);
  EXPECT_EQ(f.want(4096), 16u);
  EXPECT_EQ(f.want(10), 10u);
  f.consumed({a.data() + 8, 16}, 333);
  EXPECT_EQ(f.pdu_rx_ns(), 222u) << "the PDU's stamp is its header's, not its tail's";
  EXPECT_EQ(f.want(4096), 8u);
  auto b = pdu(0x07, 24 + 4096);
  f.consumed({b.data(), 8}, 444);
  EXPECT_EQ(f.pdu_rx_ns(), 444u);
  EXPECT_EQ(f.want(1 << 20), 24u + 4096 - 8);
  EXPECT_FALSE(f.broken());
}

TEST(PduFramer, MissingStampIsZeroAndAShortPlenBreaksFraming) {
  PduFramer f;
  auto a = pdu(0x05, 24);
  f.consumed({a.data(), 8}, 0);
  EXPECT_EQ(f.pdu_rx_ns(), 0u);
  f.consumed({a.data() + 8, 16}, 5);
  auto bad = pdu(0x05, 8);
  bad[4] = 3;  // PLEN 3 < common header
  f.consumed({bad.data(), 8}, 9);
  EXPECT_TRUE(f.broken());
  EXPECT_EQ(f.want(100), 100u) << "the decoder reports the bad PDU; the framer only stops shaping reads";
}

TEST(PendingCompletions, SettlesInSendOrderAndCountsTheRestMissing) {
  target::PendingCompletions p;
  const uint64_t t1 = p.add({target::ServiceOp::kRead, {.rx_ns = 10}});
  const uint64_t t2 = p.add({target::ServiceOp::kWrite, {.rx_ns = 20}});
  const uint64_t t3 = p.add({target::ServiceOp::kRead, {.rx_ns = 30}});
  std::vector<uint64_t> stamped, missed;
  auto on_stamped = [&](const auto& e) { stamped.push_back(e.stamps.rx_ns); };
  auto on_missed = [&](const auto& e) { missed.push_back(e.stamps.rx_ns); };
  p.settle(t2, on_stamped, on_missed);
  EXPECT_EQ(stamped, (std::vector<uint64_t>{20}));
  EXPECT_EQ(missed, (std::vector<uint64_t>{10}));
  (void)t1;
  p.drop_all(on_missed);
  EXPECT_EQ(missed, (std::vector<uint64_t>{10, 30}));
  p.settle(t3, on_stamped, on_missed);
  EXPECT_EQ(stamped.size(), 1u);
}

TEST(ServiceTimes, ReportCountsMissingStampsBesideTheKernelHistogram) {
  target::ServiceTimes t(LatencyClock::kKernel);
  t.record_app("nqn.host:a", target::ServiceOp::kRead, 80'000);
  t.record_stamps("nqn.host:a", target::ServiceOp::kRead, {.rx_ns = 1'000'000, .tx_ns = 1'050'000});
  t.record_app("nqn.host:a", target::ServiceOp::kRead, 90'000);
  t.record_stamps("nqn.host:a", target::ServiceOp::kRead, {.rx_ns = 0, .tx_ns = 2'000'000});
  auto r = t.report();
  EXPECT_EQ(r["latency_clock"], "kernel");
  const auto& read = r["hosts"]["nqn.host:a"]["ops"]["read"];
  EXPECT_EQ(read["ios"], 2);
  EXPECT_EQ(read["kernel_clock"]["timed"], 1);
  EXPECT_EQ(read["kernel_clock"]["missing_rx_stamp"], 1);
  EXPECT_NEAR(read["latency_us"]["p50"].get<double>(), 50.0, 1.0);
  EXPECT_NEAR(read["app_latency_us"]["max"].get<double>(), 90.0, 2.0);
}

TEST(ServiceTimes, WireClockReportsTheTapsSpanBesideTheKernelClock) {
  target::ServiceTimes t(LatencyClock::kWire);
  t.record_app("h", target::ServiceOp::kWrite, 10'000);
  // Coalescing moved the socket's stamp 30 us later than the capsule's packet.
  t.record_stamps("h", target::ServiceOp::kWrite, {.rx_ns = 1'030'000, .tap_rx_ns = 1'000'000, .tx_ns = 1'100'000});
  t.record_app("h", target::ServiceOp::kWrite, 10'000);
  t.record_stamps("h", target::ServiceOp::kWrite, {.rx_ns = 2'000'000, .tap_rx_ns = 0, .tx_ns = 2'100'000});
  auto r = t.report();
  EXPECT_EQ(r["latency_clock"], "wire");
  const auto& w = r["hosts"]["h"]["ops"]["write"];
  EXPECT_EQ(w["wire_clock"]["timed"], 1);
  EXPECT_EQ(w["wire_clock"]["missing_rx_stamp"], 1) << "no tap stamp: missing, not the socket's";
  EXPECT_EQ(w["kernel_clock"]["timed"], 2);
  EXPECT_NEAR(w["latency_us"]["max"].get<double>(), 100.0, 1.0);
  EXPECT_NEAR(w["kernel_latency_us"]["min"].get<double>(), 70.0, 1.0);
}

// The kernel turns RX stamping on for the whole stack by a static key flipped from a work
// item after the first socket asks (net_enable_timestamp): segments received in between carry
// no stamp. Waits until a loopback read is stamped (at most 2 s).
bool wait_for_rx_stamping(asio::io_context& io) {
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket a(io), b(io);
  a.connect(acceptor.local_endpoint());
  acceptor.accept(b);
  enable_timestamping(b.native_handle());
  for (int i = 0; i < 200; ++i) {
    asio::write(a, asio::buffer("x", 1));
    uint8_t c;
    uint64_t ns = 0;
    for (int tries = 0; tries < 100 && recv_stamped(b.native_handle(), &c, 1, &ns) < 0; ++tries)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (ns) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Loopback: every timed header gets exactly its own TX stamp, in order, and the receiver's
// per-PDU reads carry RX stamps no earlier than the matching TX stamps.
TEST(StampedWriter, KeysEveryTimedHeaderOnARealSocket) {
  asio::io_context io;
  ASSERT_TRUE(wait_for_rx_stamping(io)) << "the kernel never stamped a received segment";
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client(io), server(io);
  client.connect(acceptor.local_endpoint());
  acceptor.accept(server);
  client.set_option(tcp::no_delay(true));
  enable_timestamping(client.native_handle());
  enable_timestamping(server.native_handle());

  // Three "capsules" (72-byte header; the second with 4 KiB of in-capsule data) and an
  // untimed 1 KiB data PDU in between, in one batch.
  std::vector<uint8_t> bytes;
  std::vector<Cut> cuts;
  auto add = [&](uint32_t header, uint32_t data, bool timed, uint64_t token) {
    auto p = pdu(0x04, header + data);
    const size_t start = bytes.size();
    bytes.insert(bytes.end(), p.begin(), p.end());
    if (!timed) return;
    cuts.push_back({.end = start + header, .stamp = true, .more = data > 0, .token = token});
    if (data) cuts.push_back({.end = bytes.size()});
  };
  add(72, 0, true, 1);
  add(72, 4096, true, 2);
  add(24, 1024, false, 0);
  add(72, 0, true, 3);
  TxKeyQueue keys;
  StampedWriter writer(client, keys);
  asio::const_buffer buf = asio::buffer(bytes);
  bool written = false;
  writer.write({&buf, 1}, cuts, [&](const boost::system::error_code& ec) {
    EXPECT_FALSE(ec) << ec.message();
    written = true;
  });
  io.run();
  ASSERT_TRUE(written);
  EXPECT_EQ(writer.stream_offset(), bytes.size());
  EXPECT_EQ(keys.waiting(), 3u);

  std::vector<uint64_t> tx(4, 0);
  size_t missed = 0;
  for (int tries = 0; tries < 100 && keys.waiting(); ++tries) {
    drain_tx_stamps(client.native_handle(), [&](const TxStamp& s) {
      auto m = keys.match(s.key, [&](uint64_t) { ++missed; });
      if (m.token) tx[*m.token] = s.ns;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(missed, 0u);
  EXPECT_GT(tx[1], 0u);
  EXPECT_GT(tx[2], 0u);
  EXPECT_GT(tx[3], 0u);
  EXPECT_LE(tx[1], tx[2]);
  EXPECT_LE(tx[2], tx[3]);

  // The receiver frames the same stream: four PDUs, each header's read with an RX stamp.
  const std::vector<size_t> starts{0, 72, 72 + 72 + 4096, 72 + 72 + 4096 + 24 + 1024};
  PduFramer framer;
  std::vector<uint8_t> in(8192);
  std::vector<uint64_t> rx;
  size_t got = 0;
  for (int tries = 0; tries < 1000 && got < bytes.size(); ++tries) {
    uint64_t ns = 0;
    ssize_t n = recv_stamped(server.native_handle(), in.data(), framer.want(in.size()), &ns);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    ASSERT_GT(n, 0);
    framer.consumed({in.data(), static_cast<size_t>(n)}, ns);
    got += static_cast<size_t>(n);
    if (rx.size() < starts.size() && got == starts[rx.size()] + 8) rx.push_back(framer.pdu_rx_ns());
  }
  ASSERT_EQ(got, bytes.size());
  ASSERT_EQ(rx.size(), starts.size()) << "a read crossed a common header";
  for (uint64_t r : rx) EXPECT_GT(r, 0u) << "a header read without an RX stamp";
  EXPECT_GE(rx[0], tx[1]);
  EXPECT_GE(rx[3], tx[3]) << "the last PDU cannot arrive before it was sent";
}


// ---- The packet tap (--latency-clock wire) ----

TEST(StreamClock, MapsSequenceNumbersFromTheSynAcrossTheWrap) {
  StreamClock c;
  c.segment(100, 50, 7, true);
  EXPECT_EQ(c.stamp(0), 0u) << "nothing is mapped before the peer's SYN";
  const uint32_t isn = 0xffffff00u;
  c.syn(isn);
  // Stream byte 0 is ISN + 1; this segment's sequence numbers wrap inside it.
  c.segment(isn + 1, 0x200, 10, true);
  EXPECT_EQ(c.stamp(0), 10u);
  EXPECT_EQ(c.stamp(0xff), 10u);
  EXPECT_EQ(c.stamp(0x100), 10u) << "byte at sequence number 0";
  EXPECT_EQ(c.stamp(0x1ff), 10u);
  EXPECT_EQ(c.stamp(0x200), 0u);
  // Past 4 GiB of stream the 32-bit sequence numbers repeat; offsets keep counting.
  uint64_t off = 0x200;
  for (uint64_t ns = 11; off < (uint64_t{5} << 30); ++ns) {
    c.segment(isn + 1 + static_cast<uint32_t>(off), 1u << 30, ns, true);
    off += 1u << 30;
  }
  EXPECT_EQ(c.frontier(), off);
  EXPECT_EQ(c.stamp((uint64_t{4} << 30) + 0x300), 15u) << "the 5th GiB segment";
  EXPECT_EQ(c.stamp(0x100), 10u) << "same sequence number 4 GiB earlier";
}

TEST(StreamClock, FirstCaptureOfAByteKeepsItsStampAndGapsHaveNone) {
  StreamClock c;
  c.syn(1000);
  const uint32_t base = 1001;
  // Two 24-byte headers in one segment: both take its stamp.
  c.segment(base, 48, 100, true);
  EXPECT_EQ(c.stamp(23), 100u);
  EXPECT_EQ(c.stamp(47), 100u);
  // A header split over two segments becomes whole with the second.
  c.segment(base + 48, 10, 200, true);
  c.segment(base + 58, 14, 300, true);
  EXPECT_EQ(c.stamp(48 + 9), 200u);
  EXPECT_EQ(c.stamp(48 + 23), 300u);
  // A retransmission of seen bytes (and beyond) moves nothing it repeats.
  c.segment(base + 40, 40, 400, true);
  EXPECT_EQ(c.stamp(47), 100u);
  EXPECT_EQ(c.stamp(71), 300u);
  EXPECT_EQ(c.stamp(79), 400u) << "its new bytes take its stamp";
  // A gap: bytes 80..99 were never captured; 100.. were.
  c.segment(base + 100, 20, 500, true);
  EXPECT_EQ(c.stamp(90), 0u) << "missing, never guessed";
  EXPECT_EQ(c.stamp(110), 500u);
  // The gap filled later (reordering or a loss before the tap): its own arrival time...
  c.segment(base + 80, 10, 600, true);
  EXPECT_EQ(c.stamp(85), 600u);
  // ...unless the tap itself lost packets meanwhile: one of those may have carried it first.
  c.segment(base + 90, 10, 700, false);
  EXPECT_EQ(c.stamp(95), 0u);
  // Read bytes are forgotten; a late repeat of them changes nothing.
  c.release_below(100);
  c.segment(base, 120, 800, true);
  EXPECT_EQ(c.stamp(110), 500u);
  EXPECT_LE(c.spans(), 2u);
  // A new SYN with another ISN is a new connection on the same 4-tuple.
  c.syn(5000);
  EXPECT_EQ(c.stamp(110), 0u);
  c.segment(5001, 10, 900, true);
  EXPECT_EQ(c.stamp(0), 900u);
}

TEST(PduFramer, KnowsTheStreamOffsetOfEachHeadersLastByte) {
  PduFramer f;
  auto a = pdu(0x05, 24 + 100);  // HLEN 24
  f.consumed({a.data(), 8}, 1);
  EXPECT_EQ(f.header_last_byte(), 23u);
  f.consumed({a.data() + 8, a.size() - 8}, 1);
  auto b = pdu(0x04, 72);
  b[2] = 72;
  f.consumed({b.data(), 5}, 1);
  f.consumed({b.data() + 5, 3}, 1);
  EXPECT_EQ(f.header_last_byte(), a.size() + 71);
}

uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// A real connection on loopback, tapped on the receiving side. The sender writes PDUs one send
// call at a time, 2 ms apart (a 24-byte header split over two sends, two PDUs in one send);
// the receiver sleeps first, so TCP coalesces the queued segments, then reads PDU by PDU with
// the kernel clock's RX stamps and asks the tap for each header's wire stamp.
class PacketTapOnLoopback : public ::testing::TestWithParam<const char*> {};

TEST_P(PacketTapOnLoopback, StampsEveryHeaderByItsOwnPacketWhenTheReaderLags) {
  if (geteuid() != 0) GTEST_SKIP() << "an AF_PACKET tap needs CAP_NET_RAW";
  asio::io_context io;
  ASSERT_TRUE(wait_for_rx_stamping(io)) << "the kernel never stamped a received segment";
  const auto addr = asio::ip::make_address(GetParam());
  tcp::acceptor acceptor(io, tcp::endpoint(addr, 0));
  tcp::socket reader(io), sender(io);
  // The tap must be open before the handshake: it anchors the stream on the SYN-ACK.
  reader.open(addr.is_v4() ? tcp::v4() : tcp::v6());
  reader.bind(tcp::endpoint(addr, 0));
  PacketTap tap(reader.local_endpoint().port(), acceptor.local_endpoint().port());
  reader.connect(acceptor.local_endpoint());
  acceptor.accept(sender);
  sender.set_option(tcp::no_delay(true));
  enable_timestamping(reader.native_handle());
  const Flow flow = receiving_flow(reader.native_handle());

  // sends[i]: the realtime window of the send call that completed header i.
  struct Window {
    uint64_t before, after;
  };
  std::vector<Window> sends;
  auto send_bytes = [&](std::span<const uint8_t> b) -> Window {
    Window w{realtime_ns(), 0};
    EXPECT_EQ(::send(sender.native_handle(), b.data(), b.size(), 0), static_cast<ssize_t>(b.size()));
    w.after = realtime_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return w;
  };
  constexpr int kSingles = 12;
  for (int i = 0; i < kSingles; ++i) {
    auto p = pdu(0x05, 24 + 64);
    sends.push_back(send_bytes(p));
  }
  {
    auto p = pdu(0x07, 24 + 512);
    send_bytes({p.data(), 10});
    sends.push_back(send_bytes({p.data() + 10, p.size() - 10}));
  }
  {
    auto p = pdu(0x05, 24), q = pdu(0x05, 24 + 8);
    p.insert(p.end(), q.begin(), q.end());
    Window w = send_bytes(p);
    sends.push_back(w);
    sends.push_back(w);
  }
  const size_t total_pdus = sends.size();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the reader lags

  PduFramer framer;
  std::vector<uint8_t> in(4096);
  std::vector<uint64_t> kernel, wire;
  for (int tries = 0; tries < 1000 && wire.size() < total_pdus;) {
    uint64_t ns = 0;
    ssize_t n = recv_stamped(reader.native_handle(), in.data(), framer.want(in.size()), &ns);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      ++tries;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    ASSERT_GT(n, 0);
    const uint64_t headers = framer.headers();
    framer.consumed({in.data(), static_cast<size_t>(n)}, ns);
    if (framer.headers() != headers) kernel.push_back(framer.pdu_rx_ns());
    // Asked once the whole PDU was read, as the tools do: its header's last byte was read.
    if (framer.pdu_left() == 0 && wire.size() < kernel.size())
      wire.push_back(tap.stamp(flow, framer.header_last_byte()));
  }
  ASSERT_EQ(wire.size(), total_pdus);
  const TapCounts counts = tap.counts();
  EXPECT_EQ(counts.drops, 0u);
  size_t moved = 0;  // kernel stamps that coalescing moved to a later send's packet
  for (size_t i = 0; i < total_pdus; ++i) {
    ASSERT_GT(wire[i], 0u) << "header " << i << " has no wire stamp";
    EXPECT_GE(wire[i], sends[i].before) << "header " << i << " captured before it was sent";
    if (i + 1 < total_pdus && sends[i + 1].before != sends[i].before) {
      EXPECT_LT(wire[i], sends[i + 1].before) << "header " << i << " took a later packet's stamp";
    }
    EXPECT_LE(wire[i], kernel[i]) << "header " << i;
    moved += i + 1 < total_pdus && kernel[i] >= sends[i + 1].before && sends[i + 1].before != sends[i].before;
  }
  EXPECT_EQ(wire[total_pdus - 1], wire[total_pdus - 2]) << "two headers in one segment";
  EXPECT_GT(moved, 0u) << "the lagging reader's kernel stamps never moved: the test shows nothing";
  std::printf("%zu of %zu kernel RX stamps moved to a later packet by coalescing; %llu frames, %llu stamped at the tap\n",
              moved, total_pdus, static_cast<unsigned long long>(counts.packets),
              static_cast<unsigned long long>(counts.stamped_at_tap));
}

INSTANTIATE_TEST_SUITE_P(Families, PacketTapOnLoopback, ::testing::Values("127.0.0.1", "::1"),
                         [](const auto& info) { return std::string(info.param[0] == ':' ? "IPv6" : "IPv4"); });

}  // namespace
}  // namespace nvqos::wireclock
