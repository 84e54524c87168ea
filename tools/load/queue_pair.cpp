#include "queue_pair.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>
#include <time.h>

#include <cerrno>

#include <cstring>
#include <stdexcept>

namespace nvqos::load {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
constexpr size_t kReadBufferBytes = 256 * 1024;
// Kernel clock: reads per handler turn before yielding to other queues' handlers.
constexpr int kStampedReadsPerTurn = 64;
}

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

QueuePair::QueuePair(asio::io_context& io, QueueConfig config, QueueEvents* events)
    : io_(io),
      config_(std::move(config)),
      events_(events),
      socket_(io),
      decoder_(nvmf::Side::host,
               nvmf::DecoderConfig{.max_data = std::max<uint32_t>(
                                       {config_.max_io_bytes, static_cast<uint32_t>(nvmf::kIdentifySize),
                                        nvmf::kAdminInCapsuleDataSize})}),
      slots_(config_.depth),
      read_buf_(kReadBufferBytes) {
  // Enough for every slot's capsule with in-capsule data, or the H2CData of a
  // whole transfer, without growing in the steady state.
  size_t per_command = nvmf::kMaxHeaderRegion + config_.max_io_bytes + 2 * nvmf::kDigestSize;
  pending_.reserve(per_command * config_.depth + 64 * 1024);
  writing_.reserve(pending_.capacity());
  pending_cids_.reserve(config_.depth);
  if (config_.kernel_clock) {
    pending_cuts_.reserve(2 * config_.depth);
    writing_cuts_.reserve(2 * config_.depth);
  }
}

asio::awaitable<void> QueuePair::connect(const tcp::endpoint& endpoint, std::chrono::milliseconds timeout,
                                         const asio::ip::address& source) {
  std::string where = config_.name + " (" + endpoint.address().to_string() + ":" +
                      std::to_string(endpoint.port()) + ")";
  if (!source.is_unspecified() || config_.wire_clock) {
    // The wire clock's tap filters on the local port, so it is chosen before connecting.
    boost::system::error_code bind_ec;
    socket_.open(endpoint.protocol());
    const asio::ip::address local = source.is_unspecified() && endpoint.address().is_v6() ? asio::ip::address_v6::any()
                                    : source.is_unspecified()                             ? asio::ip::address_v4::any()
                                                                                          : source;
    socket_.bind(tcp::endpoint(local, 0), bind_ec);
    if (bind_ec)
      throw std::runtime_error("connect " + where + ": bind to source " + local.to_string() + ": " +
                               bind_ec.message());
  }
  if (config_.wire_clock) {
    try {
      tap_ = std::make_unique<wireclock::PacketTap>(socket_.local_endpoint().port(), endpoint.port());
    } catch (const std::system_error& e) {
      throw std::runtime_error("connect " + where + ": --latency-clock wire: " + e.what());
    }
  }
  asio::steady_timer guard(io_, timeout);
  bool timed_out = false;
  guard.async_wait([this, &timed_out](const boost::system::error_code& ec) {
    if (ec) return;
    timed_out = true;
    boost::system::error_code ignored;
    socket_.close(ignored);
  });
  boost::system::error_code ec;
  co_await socket_.async_connect(endpoint, asio::redirect_error(asio::use_awaitable, ec));
  guard.cancel();
  if (timed_out) throw std::runtime_error("connect " + where + ": timed out");
  if (ec) throw std::runtime_error("connect " + where + ": " + ec.message());
  socket_.set_option(tcp::no_delay(true));
  local_port_ = socket_.local_endpoint().port();
  if (config_.kernel_clock) {
    try {
      wireclock::enable_timestamping(socket_.native_handle());
      if (tap_) flow_ = wireclock::receiving_flow(socket_.native_handle());
    } catch (const std::system_error& e) {
      throw std::runtime_error("connect " + where + ": " + e.what());
    }
    writer_.emplace(socket_, tx_keys_);
  }

  nvmf::IcReq req;
  req.hdgst = config_.header_digest;
  req.ddgst = config_.data_digest;
  req.maxr2t = 0;  // one outstanding R2T per command
  append(req, {});
  flush();
  start_read();

  asio::steady_timer waiter(io_, timeout);
  ic_waiter_ = &waiter;
  if (!ic_done_ && !failed_) co_await waiter.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  ic_waiter_ = nullptr;
  if (failed_) throw std::runtime_error("NVMe/TCP connection setup " + failure_);
  if (!ic_done_) throw std::runtime_error("NVMe/TCP connection setup " + where + ": no ICResp within " +
                                          std::to_string(timeout.count()) + " ms");
  if (config_.header_digest && !ic_resp_.hdgst)
    throw std::runtime_error(where + ": target did not enable the requested header digest");
  if (config_.data_digest && !ic_resp_.ddgst)
    throw std::runtime_error(where + ": target did not enable the requested data digest");
}

void QueuePair::submit(uint16_t cid, const nvmf::Sqe& sqe, std::span<const uint8_t> out, bool in_capsule,
                       std::span<uint8_t> in, uint32_t in_len) {
  Slot& s = slots_[cid];
  s.busy = true;
  s.awaited = false;
  s.done = false;
  s.ddgst_error = false;
  s.out = out;
  s.in = in;
  s.in_len = in_len;
  s.received = 0;
  s.submit_ns = 0;  // stamped when handed to the socket
  s.tx_ns = s.rx_ns = s.tap_rx_ns = 0;
  ++s.generation;
  nvmf::CapsuleCmd cmd{sqe, in_capsule ? out : std::span<const uint8_t>{}};
  const size_t start = pending_.size();
  const size_t header = append(cmd, cmd.data);
  if (config_.kernel_clock) {
    // The capsule header ends a stamped send; in-capsule data follows in a send of its own
    // that ends the TCP record, so no later capsule shares the header's skb (and its key).
    const uint64_t token = uint64_t{s.generation} << 16 | cid;
    const bool more = pending_.size() > start + header;
    pending_cuts_.push_back({.end = start + header, .stamp = true, .more = more, .token = token});
    if (more) pending_cuts_.push_back({.end = pending_.size()});
  }
  pending_cids_.push_back(cid);
  flush();
}

asio::awaitable<nvmf::Cqe> QueuePair::execute(nvmf::Sqe sqe, std::span<const uint8_t> out,
                                              std::span<uint8_t> in, std::chrono::milliseconds timeout) {
  std::string what(nvmf::command_name(sqe, config_.qid == 0));
  if (failed_) throw std::runtime_error(what + " on " + failure_);
  uint16_t cid = 0;
  while (cid < slots_.size() && slots_[cid].busy) ++cid;
  if (cid == slots_.size()) throw std::runtime_error(what + " on " + config_.name + ": no free command slot");
  sqe.cid = cid;
  bool in_capsule = sqe.sgl1.in_capsule();
  submit(cid, sqe, out, in_capsule, in, static_cast<uint32_t>(in.size()));
  Slot& s = slots_[cid];
  s.awaited = true;
  asio::steady_timer waiter(io_, timeout);
  s.waiter = &waiter;
  boost::system::error_code ec;
  if (!s.done && !failed_) co_await waiter.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  s.waiter = nullptr;
  if (failed_ && !s.done) throw std::runtime_error(what + " on " + failure_);
  if (!s.done)
    throw std::runtime_error(what + " on " + config_.name + ": no completion within " +
                             std::to_string(timeout.count()) + " ms");
  co_return s.result;
}

void QueuePair::close() {
  closing_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

size_t QueuePair::append(const nvmf::Pdu& pdu, std::span<const uint8_t> data) {
  nvmf::EncodedHeader h = nvmf::encode_header(pdu, link_);
  auto header = h.span();
  pending_.insert(pending_.end(), header.begin(), header.end());
  if (h.data_len) {
    pending_.insert(pending_.end(), data.begin(), data.begin() + h.data_len);
    if (h.data_digest) {
      auto digest = nvmf::data_digest_bytes(data.first(h.data_len));
      pending_.insert(pending_.end(), digest.begin(), digest.end());
    }
  }
  return header.size();
}

void QueuePair::flush() {
  if (write_in_flight_ || corked_ || pending_.empty() || failed_ || closing_) return;
  uint64_t now = monotonic_ns();
  for (uint16_t cid : pending_cids_) slots_[cid].submit_ns = now;
  pending_cids_.clear();
  std::swap(pending_, writing_);
  write_in_flight_ = true;
  if (writer_) {
    std::swap(pending_cuts_, writing_cuts_);
    writing_buffer_ = asio::buffer(writing_);
    writer_->write({&writing_buffer_, 1}, writing_cuts_,
                   [this](const boost::system::error_code& ec) { on_written(ec); });
    return;
  }
  asio::async_write(socket_, asio::buffer(writing_),
                    [this](const boost::system::error_code& ec, size_t) { on_written(ec); });
}

void QueuePair::on_written(const boost::system::error_code& ec) {
  write_in_flight_ = false;
  writing_.clear();
  writing_cuts_.clear();
  if (ec) {
    if (!closing_) fail("send: " + ec.message());
    return;
  }
  flush();
}

void QueuePair::start_read() {
  if (writer_) {
    // The ICResp may be queued already: read until the socket is empty before waiting.
    asio::post(io_, [this] {
      if (!failed_ && !closing_) read_stamped();
    });
    return;
  }
  socket_.async_read_some(asio::buffer(read_buf_),
                          [this](const boost::system::error_code& ec, size_t n) { on_read(ec, n); });
}

void QueuePair::on_read(const boost::system::error_code& ec, size_t n) {
  if (closing_) return;
  if (ec) {
    fail(ec == asio::error::eof ? std::string("connection closed by the target") : "receive: " + ec.message());
    return;
  }
  if (consume({read_buf_.data(), n})) start_read();
}

void QueuePair::read_stamped() {
  // TX stamps first: a completion read below must find its capsule's stamp.
  drain_tx_stamps();
  for (int i = 0; i < kStampedReadsPerTurn; ++i) {
    uint64_t rx_ns = 0;
    ssize_t n = wireclock::recv_stamped(socket_.native_handle(), read_buf_.data(), framer_.want(read_buf_.size()),
                                        &rx_ns);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Edge-triggered: waiting is only safe once a read came back empty.
      socket_.async_wait(tcp::socket::wait_read, [this](const boost::system::error_code& ec) {
        if (closing_ || failed_) return;
        if (ec) fail("receive: " + ec.message());
        else read_stamped();
      });
      return;
    }
    if (n <= 0) {
      fail(n == 0 ? std::string("connection closed by the target") : "receive: " + std::string(strerror(errno)));
      return;
    }
    std::span<const uint8_t> got(read_buf_.data(), static_cast<size_t>(n));
    const uint64_t headers = framer_.headers();
    framer_.consumed(got, rx_ns);
    if (framer_.headers() != headers)
      header_rx_behind_ = wireclock::later_data_queued(socket_.native_handle(), framer_.pdu_left()) == 1;
    if (!consume(got)) return;
  }
  start_read();
}

void QueuePair::drain_tx_stamps() {
  wireclock::drain_tx_stamps(socket_.native_handle(), [this](const wireclock::TxStamp& st) {
    // Units that missed their stamp keep tx_ns 0 and are counted at completion.
    auto m = tx_keys_.match(st.key, [](uint64_t) {});
    if (!m.token) return;
    const uint16_t cid = static_cast<uint16_t>(*m.token & 0xffff);
    if (cid < slots_.size() && slots_[cid].generation == static_cast<uint32_t>(*m.token >> 16))
      slots_[cid].tx_ns = st.ns;
  });
}

bool QueuePair::consume(std::span<const uint8_t> in) {
  cork();
  while (!in.empty() && !failed_ && !closing_) {
    nvmf::FeedResult r = decoder_.feed(in);
    in = in.subspan(r.consumed);
    if (r.state == nvmf::DecodeState::pdu_ready) {
      // A stamped read never crosses a PDU's end, so the PDU just completed is the one
      // whose common header the framer saw last.
      pdu_rx_ns_ = framer_.pdu_rx_ns();
      pdu_rx_behind_ = header_rx_behind_;
      // The whole PDU was read, so the tap has seen the packets that carried its header.
      if (tap_) pdu_tap_rx_ns_ = tap_->stamp(flow_, framer_.header_last_byte());
      if (!handle_pdu()) break;
    } else if (r.state == nvmf::DecodeState::failed) {
      const nvmf::DecodeError& err = decoder_.error();
      // Tell the target why before closing, as the spec asks (H2CTermReq).
      append(nvmf::make_term_req(nvmf::Side::host, err, decoder_.error_header()), {});
      --corked_;
      flush();
      fail("bad PDU from the target: " + std::string(nvmf::decode_fault_name(err.fault)) + ": " + err.detail);
      return false;
    }
  }
  uncork();
  return !failed_ && !closing_;
}

bool QueuePair::handle_pdu() {
  const nvmf::Pdu& pdu = decoder_.pdu();
  if (auto* resp = std::get_if<nvmf::CapsuleResp>(&pdu)) {
    uint16_t cid = resp->cqe.cid;
    if (cid >= slots_.size() || !slots_[cid].busy) {
      fail("CapsuleResp for CID " + std::to_string(cid) + " which has no command outstanding");
      return false;
    }
    nvmf::Cqe cqe = resp->cqe;
    if (slots_[cid].ddgst_error && cqe.ok()) cqe.status = nvmf::status::kTransientTransportError;
    complete(cid, cqe);
    return true;
  }
  if (auto* d = std::get_if<nvmf::C2HData>(&pdu)) return handle_c2h_data(*d);
  if (auto* r2t = std::get_if<nvmf::R2T>(&pdu)) return handle_r2t(*r2t);
  if (auto* ic = std::get_if<nvmf::IcResp>(&pdu)) {
    ic_resp_ = *ic;
    link_.header_digest = ic->hdgst;
    link_.data_digest = ic->ddgst;
    link_.peer_pda = ic->cpda;
    decoder_.configure({.header_digest = ic->hdgst,
                        .data_digest = ic->ddgst,
                        .local_pda = 0,
                        .max_data = decoder_.config().max_data});
    ic_done_ = true;
    if (ic_waiter_) ic_waiter_->cancel();
    return true;
  }
  if (auto* term = std::get_if<nvmf::C2HTermReq>(&pdu)) {
    fail("target terminated the connection (C2HTermReq): " + std::string(nvmf::fatal_error_name(term->fes)) +
         ", FEI " + std::to_string(term->fei));
    return false;
  }
  fail("unexpected " + std::string(nvmf::pdu_type_name(nvmf::pdu_type(pdu))) + " PDU from the target");
  return false;
}

bool QueuePair::handle_c2h_data(const nvmf::C2HData& d) {
  if (d.cccid >= slots_.size() || !slots_[d.cccid].busy) {
    fail("C2HData for CID " + std::to_string(d.cccid) + " which has no command outstanding");
    return false;
  }
  Slot& s = slots_[d.cccid];
  if (uint64_t{d.datao} + d.datal > s.in_len) {
    fail("C2HData for CID " + std::to_string(d.cccid) + " at offset " + std::to_string(d.datao) + " length " +
         std::to_string(d.datal) + " exceeds the command's " + std::to_string(s.in_len) + " bytes");
    return false;
  }
  if (s.in.size() >= d.datao + d.datal) std::memcpy(s.in.data() + d.datao, d.data.data(), d.datal);
  s.received += d.datal;
  if (!decoder_.data_digest_ok()) s.ddgst_error = true;
  if (d.success) {
    nvmf::Cqe cqe;
    cqe.cid = d.cccid;
    cqe.sqid = config_.qid;
    if (s.ddgst_error) cqe.status = nvmf::status::kTransientTransportError;
    else if (s.received != s.in_len) cqe.status = nvmf::status::kDataTransferError;
    complete(d.cccid, cqe);
  }
  return true;
}

bool QueuePair::handle_r2t(const nvmf::R2T& r2t) {
  if (r2t.cccid >= slots_.size() || !slots_[r2t.cccid].busy) {
    fail("R2T for CID " + std::to_string(r2t.cccid) + " which has no command outstanding");
    return false;
  }
  Slot& s = slots_[r2t.cccid];
  if (r2t.r2tl == 0 || uint64_t{r2t.r2to} + r2t.r2tl > s.out.size()) {
    fail("R2T for CID " + std::to_string(r2t.cccid) + " asks for offset " + std::to_string(r2t.r2to) +
         " length " + std::to_string(r2t.r2tl) + " outside the command's " + std::to_string(s.out.size()) +
         " bytes");
    return false;
  }
  uint32_t max_pdu = std::max<uint32_t>(ic_resp_.maxh2cdata, nvmf::kMinMaxH2CData);
  uint32_t end = r2t.r2to + r2t.r2tl;
  for (uint32_t off = r2t.r2to; off < end;) {
    uint32_t len = std::min(max_pdu, end - off);
    nvmf::H2CData h2c;
    h2c.cccid = r2t.cccid;
    h2c.ttag = r2t.ttag;
    h2c.datao = off;
    h2c.datal = len;
    h2c.last = off + len == end;
    h2c.data = s.out.subspan(off, len);
    append(h2c, h2c.data);
    off += len;
  }
  flush();
  return true;
}

void QueuePair::complete(uint16_t cid, const nvmf::Cqe& cqe) {
  Slot& s = slots_[cid];
  s.busy = false;
  if (writer_) {
    if (s.tx_ns == 0) drain_tx_stamps();  // queued after this read turn began
    s.rx_ns = pdu_rx_ns_;
    s.rx_behind = pdu_rx_behind_;
    s.tap_rx_ns = pdu_tap_rx_ns_;
  }
  if (s.awaited) {
    s.result = cqe;
    s.done = true;
    if (s.waiter) s.waiter->cancel();
    return;
  }
  events_->on_complete(*this, cid, cqe, monotonic_ns());
}

void QueuePair::fail(const std::string& what) {
  if (failed_ || closing_) return;
  failed_ = true;
  failure_ = config_.name + ": " + what;
  boost::system::error_code ignored;
  socket_.close(ignored);
  if (ic_waiter_) ic_waiter_->cancel();
  for (auto& s : slots_)
    if (s.busy && s.awaited && s.waiter) s.waiter->cancel();
  if (events_) events_->on_queue_failed(*this, failure_);
}

}  // namespace nvqos::load
