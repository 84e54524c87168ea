#include "target.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <nvqos/nvmf/crc32c.h>
#include <nvqos/nvmf/decoder.h>
#include <nvqos/nvmf/nvme.h>
#include <nvqos/nvmf/pdu.h>
#include <nvqos/wireclock/packet_tap.h>
#include <nvqos/wireclock/stamped_writer.h>
#include <nvqos/wireclock/wire_clock.h>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <system_error>
#include <sys/mman.h>
#include <sys/socket.h>

#include "service_time.hpp"

namespace nvqos::target {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace nvqos::nvmf;

LogSink stderr_log_sink() {
  return [](std::string_view line) {
    static std::mutex mu;
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t;
    gmtime_r(&ts.tv_sec, &t);
    char stamp[64];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900, t.tm_mon + 1,
                  t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000);
    std::lock_guard lock(mu);
    std::fprintf(stderr, "%s %.*s\n", stamp, static_cast<int>(line.size()), line.data());
  };
}

namespace {

constexpr std::uint16_t kAdminQueueMaxEntries = 32;  // NVMF_AQ_DEPTH; CAP.MQES bounds I/O queues
constexpr std::size_t kRxBufferSize = 64 * 1024;
constexpr std::uint8_t kMaxHeldAers = 4;             // AERL + 1
constexpr std::uint8_t kConnectCattrDisableSqFlow = 0x04;

// ---- Namespaces: sparse RAM, allocated 1 MiB at a time on first write ----------------------------
constexpr std::size_t kChunkSize = 1u << 20;
alignas(4096) const std::uint8_t kZeroChunk[kChunkSize] = {};

class Namespace {
 public:
  Namespace(const NamespaceConfig& cfg, std::uint32_t subsystem_hash)
      : nsid_(cfg.nsid), block_size_(cfg.block_size), size_(cfg.size_bytes),
        chunks_((cfg.size_bytes + kChunkSize - 1) / kChunkSize) {
    for (auto& c : chunks_) c.store(nullptr, std::memory_order_relaxed);
    for (int i = 0; i < 4; ++i) nguid_[i] = static_cast<std::uint8_t>(subsystem_hash >> (8 * i));
    for (int i = 0; i < 4; ++i) nguid_[12 + i] = static_cast<std::uint8_t>(nsid_ >> (8 * i));
    nguid_[8] = 'n'; nguid_[9] = 'v'; nguid_[10] = 'q'; nguid_[11] = 's';
  }
  ~Namespace() {
    for (auto& c : chunks_)
      if (std::uint8_t* p = c.load()) munmap(p, kChunkSize);
  }
  std::uint32_t nsid() const { return nsid_; }
  std::uint32_t block_size() const { return block_size_; }
  std::uint64_t blocks() const { return size_ / block_size_; }
  std::uint8_t lbads() const { return static_cast<std::uint8_t>(__builtin_ctz(block_size_)); }
  const std::array<std::uint8_t, 16>& nguid() const { return nguid_; }

  void write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    while (!data.empty()) {
      std::size_t idx = offset / kChunkSize, in = offset % kChunkSize;
      std::size_t n = std::min(data.size(), kChunkSize - in);
      std::memcpy(chunk_for_write(idx) + in, data.data(), n);
      data = data.subspan(n);
      offset += n;
    }
  }
  void zero(std::uint64_t offset, std::uint64_t len) {
    while (len > 0) {
      std::size_t idx = offset / kChunkSize, in = offset % kChunkSize;
      std::size_t n = std::min<std::uint64_t>(len, kChunkSize - in);
      if (std::uint8_t* c = chunks_[idx].load(std::memory_order_acquire)) std::memset(c + in, 0, n);
      len -= n;
      offset += n;
    }
  }
  // Calls fn(span) for each contiguous piece of [offset, offset+len); unwritten chunks read as zeros.
  template <typename Fn>
  void read(std::uint64_t offset, std::uint64_t len, Fn&& fn) const {
    while (len > 0) {
      std::size_t idx = offset / kChunkSize, in = offset % kChunkSize;
      std::size_t n = std::min<std::uint64_t>(len, kChunkSize - in);
      const std::uint8_t* c = chunks_[idx].load(std::memory_order_acquire);
      fn(std::span<const std::uint8_t>((c ? c : kZeroChunk) + in, n));
      len -= n;
      offset += n;
    }
  }

 private:
  std::uint8_t* chunk_for_write(std::size_t idx) {
    std::uint8_t* c = chunks_[idx].load(std::memory_order_acquire);
    if (c) return c;
    // Populated up front: one fault-in of the whole chunk instead of a page fault per 4 KiB on
    // first touch, which halved random-write IOPS on a fresh 1 GiB namespace.
    void* mem = mmap(nullptr, kChunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) throw std::bad_alloc();
    auto* fresh = static_cast<std::uint8_t*>(mem);
    if (chunks_[idx].compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) return fresh;
    munmap(fresh, kChunkSize);
    return c;
  }

  std::uint32_t nsid_;
  std::uint32_t block_size_;
  std::uint64_t size_;
  std::vector<std::atomic<std::uint8_t*>> chunks_;
  std::array<std::uint8_t, 16> nguid_{};
};

class Connection;

struct Controller;

struct Subsystem {
  SubsystemConfig cfg;
  bool discovery = false;  // the well-known discovery subsystem: admin queue only, log page 70h
  std::string serial;
  std::map<std::uint32_t, std::unique_ptr<Namespace>> namespaces;
  std::vector<std::uint32_t> nsids;  // ascending
  std::set<std::string> hosts;

  bool host_allowed(const std::string& hostnqn) const { return cfg.allow_any_host || hosts.count(hostnqn) != 0; }
  Namespace* find(std::uint32_t nsid) const {
    auto it = namespaces.find(nsid);
    return it == namespaces.end() ? nullptr : it->second.get();
  }
};

// One controller = one admin queue connection plus its I/O queue connections.
struct Controller {
  std::uint16_t cntlid = 0;
  Subsystem* subsystem = nullptr;
  std::string hostnqn;
  std::array<std::uint8_t, 16> hostid{};
  std::uint32_t kato_ms = 0;
  std::atomic<std::uint32_t> cc{0};
  std::atomic<std::uint32_t> csts{0};
  std::atomic<std::uint16_t> io_queues{0};  // granted by Set Features Number of Queues

  std::mutex mu;  // guards the members below
  std::weak_ptr<Connection> admin;
  std::map<std::uint16_t, std::weak_ptr<Connection>> io;  // by QID
  bool dead = false;

  bool ready() const { return (csts.load() & property::kCstsReady) != 0; }
};

}  // namespace

// ---- Shared target state ----------------------------------------------------------------------------
struct Target::Impl : std::enable_shared_from_this<Target::Impl> {
  asio::io_context& io;
  TargetConfig cfg;
  LogSink log;
  std::vector<std::unique_ptr<Subsystem>> subsystems;
  Subsystem discovery;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  // --latency-clock wire: one packet tap per listening port, opened before its first listener
  // listens (a connection's stream is anchored on its SYN), shared by the connections to that
  // port and keyed by their flows. Per port, not per listener: listeners on one port would each
  // capture the others' connections and keep streams nobody reads or forgets.
  struct ListenerTap {
    explicit ListenerTap(std::uint16_t p) : port(p), tap(p, 0) {}
    const std::uint16_t port;
    std::mutex mu;
    wireclock::PacketTap tap;
  };
  std::vector<std::unique_ptr<ListenerTap>> taps;

  std::mutex mu;  // guards controllers, next_cntlid, connections
  std::map<std::uint16_t, std::shared_ptr<Controller>> controllers;
  std::uint16_t next_cntlid = 1;
  std::vector<std::weak_ptr<Connection>> connections;
  bool stopped = false;

  std::atomic<std::uint64_t> open_connections{0}, commands{0}, read_ops{0}, write_ops{0}, read_bytes{0},
      write_bytes{0}, fatal_errors{0};
  ServiceTimes service;

  Impl(asio::io_context& i, TargetConfig c, LogSink l)
      : io(i), cfg(std::move(c)), log(std::move(l)), service(cfg.latency_clock) {
    // Every listener also serves the discovery controller, as Linux nvmet does; any host may ask
    // and sees only the subsystems it may connect to.
    discovery.discovery = true;
    discovery.cfg.nqn = std::string(kDiscoveryNqn);
    discovery.cfg.allow_any_host = true;
    discovery.serial = "NVQOSDISCOVERY";
  }

  Subsystem* find_subsystem(const std::string& nqn) {
    if (nqn == kDiscoveryNqn) return &discovery;
    for (auto& s : subsystems)
      if (s->cfg.nqn == nqn) return s.get();
    return nullptr;
  }
  std::shared_ptr<Controller> new_controller(Subsystem* subsys, const ConnectData& data, std::uint32_t kato);
  std::shared_ptr<Controller> find_controller(std::uint16_t cntlid) {
    std::lock_guard lock(mu);
    auto it = controllers.find(cntlid);
    return it == controllers.end() ? nullptr : it->second;
  }
  void remove_controller(const std::shared_ptr<Controller>& ctrl);
  void accept(tcp::acceptor& acceptor, ListenerTap* tap);
};

namespace {

// Kernel clock: reads per handler turn before yielding to other connections.
constexpr int kStampedReadsPerTurn = 64;

std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

std::string endpoint_string(const tcp::endpoint& ep) {
  auto addr = ep.address();
  return addr.is_v6() ? "[" + addr.to_string() + "]:" + std::to_string(ep.port())
                      : addr.to_string() + ":" + std::to_string(ep.port());
}

// ---- Connection: one TCP connection = one NVMe queue pair -------------------------------------------
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Target::Impl> target, tcp::socket socket, Target::Impl::ListenerTap* tap)
      : t_(std::move(target)),
        socket_(std::move(socket)),
        decoder_(Side::controller),
        rx_(kRxBufferSize),
        tap_(tap),
        keep_alive_(socket_.get_executor()),
        linger_(socket_.get_executor()),
        rng_(std::random_device{}()) {
    boost::system::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    peer_ = ec ? "unknown peer" : endpoint_string(ep);
    socket_.set_option(tcp::no_delay(true), ec);
    tx_pending_.reserve(64);
    tx_inflight_.reserve(64);
    tx_buffers_.reserve(256);
  }

  void start() {
    ++t_->open_connections;
    if (t_->cfg.latency_clock != wireclock::LatencyClock::kApp) {
      try {
        wireclock::enable_timestamping(socket_.native_handle());
        if (tap_) flow_ = wireclock::receiving_flow(socket_.native_handle());
        writer_.emplace(socket_, tx_keys_);
      } catch (const std::system_error& e) {
        // The connection still serves; its commands count as missing kernel stamps.
        t_->log("connection from " + peer_ + ": " + e.what() + "; its service times have no kernel clock");
      }
    }
    read();
  }

  asio::any_io_executor executor() { return socket_.get_executor(); }

  // Safe from any thread.
  void close_async(std::string reason) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), reason = std::move(reason)] { self->close(reason); });
  }

 private:
  struct Slot {
    explicit Slot(const asio::any_io_executor& ex) : timer(ex) {}
    bool busy = false;
    std::uint16_t index = 0;
    std::uint16_t cid = 0;
    std::uint8_t opcode = 0;
    Namespace* ns = nullptr;
    std::uint64_t offset = 0;  // bytes into the namespace
    std::uint32_t len = 0;     // data bytes
    std::uint32_t received = 0;
    std::uint32_t r2t_end = 0;
    std::uint32_t r2t_outstanding = 0;
    Status status = status::kSuccess;
    std::uint64_t rx_ns = 0;         // kernel RX stamp of the capsule header
    bool rx_behind = false;          // see wireclock::later_data_queued
    std::uint64_t tap_rx_ns = 0;     // the packet tap's stamp of the capsule header
    std::uint64_t parsed_ns = 0;     // steady clock when the capsule was parsed
    asio::steady_timer timer;
  };

  // What a completion carries for the service-time report.
  struct Timing {
    ServiceOp op = ServiceOp::kOther;
    std::uint64_t rx_ns = 0;
    bool rx_behind = false;
    std::uint64_t parsed_ns = 0;
    std::uint64_t tap_rx_ns = 0;
  };

  struct TxItem {
    EncodedHeader header;
    std::array<asio::const_buffer, 3> data{};
    std::uint8_t data_count = 0;
    std::array<std::uint8_t, kDigestSize> ddgst{};
    std::vector<std::uint8_t> owned;  // admin payloads (Identify, log pages)
    bool close_after = false;
    std::optional<Timing> timing;  // an I/O command's completion: its header is timed
  };

  // ---- I/O plumbing ----
  void read() {
    if (closed_ || closing_) return;
    if (writer_) {
      // Data may be queued already: read until the socket is empty before waiting.
      asio::post(socket_.get_executor(), [self = shared_from_this()] { self->read_stamped(); });
      return;
    }
    socket_.async_read_some(asio::buffer(rx_), [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
      self->on_read(ec, n);
    });
  }

  void on_read(boost::system::error_code ec, std::size_t n) {
    if (closed_) return;
    if (ec) {
      close(ec == asio::error::eof ? "host closed the connection" : "read: " + ec.message());
      return;
    }
    consume({rx_.data(), n});
    read();
  }

  // Kernel clock: PDU-by-PDU reads, so each capsule carries its own skb's RX stamp.
  void read_stamped() {
    if (closed_ || closing_) return;
    drain_tx_stamps();
    for (int i = 0; i < kStampedReadsPerTurn && !closed_ && !closing_; ++i) {
      std::uint64_t rx_ns = 0;
      ssize_t n = wireclock::recv_stamped(socket_.native_handle(), rx_.data(), framer_.want(rx_.size()), &rx_ns);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // Edge-triggered: waiting is only safe once a read came back empty.
        socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
          if (self->closed_) return;
          if (ec) self->close("read: " + ec.message());
          else self->read_stamped();
        });
        return;
      }
      if (n <= 0) {
        close(n == 0 ? std::string("host closed the connection") : "read: " + std::string(std::strerror(errno)));
        return;
      }
      std::span<const std::uint8_t> got(rx_.data(), static_cast<std::size_t>(n));
      const std::uint64_t headers = framer_.headers();
      framer_.consumed(got, rx_ns);
      if (framer_.headers() != headers)
        header_rx_behind_ = wireclock::later_data_queued(socket_.native_handle(), framer_.pdu_left()) == 1;
      consume(got);
    }
    read();
  }

  void consume(std::span<const std::uint8_t> in) {
    while (!in.empty() && !closing_ && !closed_) {
      FeedResult r = decoder_.feed(in);
      in = in.subspan(r.consumed);
      if (r.state == DecodeState::pdu_ready) {
        // A stamped read never crosses a PDU's end: the PDU just completed is the one whose
        // common header the framer saw last.
        pdu_rx_ns_ = framer_.pdu_rx_ns();
        pdu_rx_behind_ = header_rx_behind_;
        if (tap_ && writer_) {
          // The whole PDU was read, so the tap has seen the packets that carried its header.
          std::lock_guard lock(tap_->mu);
          pdu_tap_rx_ns_ = tap_->tap.stamp(flow_, framer_.header_last_byte());
        }
        handle_pdu();
      } else if (r.state == DecodeState::failed) {
        const DecodeError& e = decoder_.error();
        fatal(e.fes, e.fei, decoder_.error_header(), std::string(decode_fault_name(e.fault)) + ": " + e.detail);
      }
    }
  }

  // Matches queued TX stamps to the completions waiting for them.
  void drain_tx_stamps() {
    if (!writer_ || !ctrl_) return;
    const std::string& host = ctrl_->hostnqn;
    wireclock::drain_tx_stamps(socket_.native_handle(), [&](const wireclock::TxStamp& st) {
      auto m = tx_keys_.match(st.key, [](std::uint64_t) {});
      if (!m.token) return;
      pending_stamps_.settle(
          *m.token,
          [&](const PendingCompletions::Entry& e) {
            CompletionStamps s = e.stamps;
            s.tx_ns = st.ns;
            t_->service.record_stamps(host, e.op, s);
          },
          [&](const PendingCompletions::Entry& e) { t_->service.record_stamps(host, e.op, e.stamps); });
    });
  }

  void push(TxItem&& item) {
    tx_pending_.push_back(std::move(item));
    if (!writing_) flush_tx();
  }

  void flush_tx() {
    if (tx_pending_.empty() || closed_) return;
    std::swap(tx_pending_, tx_inflight_);
    tx_buffers_.clear();
    tx_cuts_.clear();
    const std::uint64_t now = steady_ns();
    std::size_t offset = 0;
    for (TxItem& it : tx_inflight_) {
      const std::size_t first = tx_buffers_.size();
      tx_buffers_.push_back(asio::buffer(it.header.bytes.data(), it.header.size));
      for (std::uint8_t i = 0; i < it.data_count; ++i) tx_buffers_.push_back(it.data[i]);
      if (it.header.data_digest) tx_buffers_.push_back(asio::buffer(it.ddgst));
      const std::size_t header_end = offset + it.header.size;
      offset += asio::buffer_size(std::span(tx_buffers_).subspan(first));
      if (!it.timing || !ctrl_) continue;
      t_->service.record_app(ctrl_->hostnqn, it.timing->op, now - it.timing->parsed_ns);
      if (t_->cfg.latency_clock == wireclock::LatencyClock::kApp) continue;
      if (!writer_) {
        t_->service.record_stamps(ctrl_->hostnqn, it.timing->op, {});
        continue;
      }
      // The completion's header ends a stamped send; its data (C2HData) follows in a send
      // of its own that ends the TCP record, so no later completion shares the skb's key.
      const std::uint64_t token = pending_stamps_.add(
          {it.timing->op,
           {.rx_ns = it.timing->rx_ns, .tap_rx_ns = it.timing->tap_rx_ns, .rx_behind = it.timing->rx_behind}});
      const bool more = offset > header_end;
      tx_cuts_.push_back({.end = header_end, .stamp = true, .more = more, .token = token});
      if (more) tx_cuts_.push_back({.end = offset});
    }
    writing_ = true;
    if (writer_) {
      writer_->write(tx_buffers_, tx_cuts_, [self = shared_from_this()](const boost::system::error_code& ec) {
        self->on_written(ec);
      });
      return;
    }
    asio::async_write(socket_, tx_buffers_, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      self->on_written(ec);
    });
  }

  void on_written(boost::system::error_code ec) {
    writing_ = false;
    drain_tx_stamps();  // a send's stamp is usually queued by the time it returns
    bool close_now = false;
    for (const TxItem& it : tx_inflight_) close_now |= it.close_after;
    tx_inflight_.clear();
    if (ec) {
      close("write: " + ec.message());
      return;
    }
    if (close_now) {
      close(close_reason_);
      return;
    }
    flush_tx();
  }

  void close(const std::string& reason) {
    if (closed_) return;
    closed_ = true;
    drain_tx_stamps();
    if (ctrl_) {
      const std::string& host = ctrl_->hostnqn;
      pending_stamps_.drop_all(
          [&](const PendingCompletions::Entry& e) { t_->service.record_stamps(host, e.op, e.stamps); });
    }
    if (tap_) {
      std::lock_guard lock(tap_->mu);
      tap_->tap.forget(flow_);
    }
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    keep_alive_.cancel();
    linger_.cancel();
    for (auto& s : slots_) s->timer.cancel();
    --t_->open_connections;
    if (ctrl_) {
      log(std::string("disconnect ") + (qid_ == 0 ? "admin" : "I/O") + " queue " + std::to_string(qid_) + ": " + reason);
      if (qid_ == 0) {
        t_->remove_controller(ctrl_);
      } else {
        std::lock_guard lock(ctrl_->mu);
        auto it = ctrl_->io.find(qid_);
        if (it != ctrl_->io.end() && it->second.lock().get() == this) ctrl_->io.erase(it);
      }
    } else {
      t_->log("disconnect " + peer_ + " (no controller): " + reason);
    }
  }

  void log(const std::string& what) {
    std::string who = peer_;
    if (ctrl_)
      who += " host " + ctrl_->hostnqn + " subsystem " + ctrl_->subsystem->cfg.nqn + " cntlid " +
             std::to_string(ctrl_->cntlid);
    t_->log(what + " [" + who + "]");
  }

  // Sends a C2HTermReq and closes once it is written; reading stops now.
  void fatal(FatalErrorStatus fes, std::uint32_t fei, std::span<const std::uint8_t> header, const std::string& why) {
    if (closing_) return;
    closing_ = true;
    ++t_->fatal_errors;
    close_reason_ = "fatal transport error: " + std::string(fatal_error_name(fes)) + " (FEI " + std::to_string(fei) + ")";
    log("error: " + why + "; sending C2HTermReq " + std::string(fatal_error_name(fes)) + " FEI " +
        std::to_string(fei) + " and closing");
    TxItem item;
    item.owned.assign(header.begin(), header.end());
    item.header = encode_header(make_term_req(Side::controller, fes, fei, item.owned), link_);
    item.data[0] = asio::buffer(item.owned.data(), item.header.data_len);
    item.data_count = 1;
    item.close_after = true;
    push(std::move(item));
    // A host that stops reading must not keep the connection open forever.
    linger_.expires_after(std::chrono::seconds(2));
    linger_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->close(self->close_reason_ + " (C2HTermReq not taken within 2 s)");
    });
  }

  // ---- Sending responses ----
  void send_resp(std::uint16_t cid, Status status, std::uint32_t dw0 = 0, std::uint32_t dw1 = 0,
                 bool close_after = false, std::optional<Timing> timing = std::nullopt) {
    Cqe cqe{.dw0 = dw0, .dw1 = dw1, .sqhd = sqhd_, .sqid = qid_, .cid = cid, .status = status};
    TxItem item;
    item.header = encode_header(CapsuleResp{cqe}, link_);
    item.close_after = close_after;
    item.timing = timing;
    push(std::move(item));
    ++t_->commands;
  }

  // C2HData with admin payload `data` (moved into the tx item), then a CapsuleResp.
  void send_admin_data(std::uint16_t cid, std::vector<std::uint8_t> data) {
    TxItem item;
    item.owned = std::move(data);
    C2HData c2h{.cccid = cid, .datao = 0, .datal = static_cast<std::uint32_t>(item.owned.size()), .last = true, .success = false, .data = {}};
    item.header = encode_header(c2h, link_);
    item.data[0] = asio::buffer(item.owned);
    item.data_count = 1;
    if (item.header.data_digest) item.ddgst = data_digest_bytes(item.owned);
    push(std::move(item));
    send_resp(cid, status::kSuccess);
  }

  // ---- PDU dispatch ----
  void handle_pdu() {
    const Pdu& pdu = decoder_.pdu();
    if (auto* ic = std::get_if<IcReq>(&pdu)) return on_icreq(*ic);
    if (auto* cmd = std::get_if<CapsuleCmd>(&pdu)) return on_command(*cmd);
    if (auto* h2c = std::get_if<H2CData>(&pdu)) return on_h2c_data(*h2c);
    if (auto* term = std::get_if<H2CTermReq>(&pdu)) {
      closing_ = true;
      log("host sent H2CTermReq: " + std::string(fatal_error_name(term->fes)) + " FEI " + std::to_string(term->fei));
      close("host terminated the connection");
    }
  }

  void on_icreq(const IcReq& req) {
    link_.header_digest = req.hdgst && t_->cfg.allow_digests;
    link_.data_digest = req.ddgst && t_->cfg.allow_digests;
    link_.peer_pda = req.hpda;
    host_maxr2t_ = req.maxr2t + 1;
    IcResp resp{.pfv = kPfv10, .cpda = 0, .hdgst = link_.header_digest, .ddgst = link_.data_digest,
                .maxh2cdata = t_->cfg.max_h2c_data};
    TxItem item;
    item.header = encode_header(resp);
    push(std::move(item));
    decoder_.configure({.header_digest = link_.header_digest,
                        .data_digest = link_.data_digest,
                        .local_pda = 0,
                        .max_data = std::max({t_->cfg.inline_data_size, t_->cfg.max_h2c_data, kAdminInCapsuleDataSize})});
  }

  void on_command(const CapsuleCmd& cmd) {
    const Sqe& sqe = cmd.sqe;
    if (queue_entries_ != 0) sqhd_ = static_cast<std::uint16_t>((sqhd_ + 1) % queue_entries_);
    if (!ctrl_) {
      if (sqe.is_fabrics() && sqe.fctype() == fabrics_type::kConnect) return on_connect(cmd);
      return send_resp(sqe.cid, status::kCommandSequenceError | status::kDnr);
    }
    if (sqe.is_fabrics()) return on_fabrics(cmd);
    if (qid_ == 0) return on_admin(cmd);
    return on_io(cmd);
  }

  // ---- Fabrics ----
  void reject_connect(std::uint16_t cid, Status status, std::uint32_t dw0, const std::string& why) {
    t_->log("connect rejected [" + peer_ + "]: " + why + " -> " + status_to_string(status));
    send_resp(cid, status | status::kDnr, dw0);
  }

  void on_connect(const CapsuleCmd& cmd) {
    const Sqe& sqe = cmd.sqe;
    ConnectCommand c = parse_connect(sqe);
    if (c.recfmt != 0)
      return reject_connect(sqe.cid, status::kConnectIncompatibleFormat, 0, "RECFMT " + std::to_string(c.recfmt));
    if (!sqe.sgl1.in_capsule() || sqe.sgl1.length != kConnectDataSize || cmd.data.size() != kConnectDataSize)
      return reject_connect(sqe.cid, status::kSglInvalidDataLength, 0,
                            "Connect data must be 1024 bytes in the capsule, got " + std::to_string(cmd.data.size()));
    ConnectData data = ConnectData::decode(std::span<const std::uint8_t, kConnectDataSize>(cmd.data.data(), kConnectDataSize));
    const std::string who = "host " + data.hostnqn + " subsystem " + data.subnqn + " qid " + std::to_string(c.qid);
    Subsystem* subsys = t_->find_subsystem(data.subnqn);
    if (!subsys)
      return reject_connect(sqe.cid, status::kConnectInvalidParameters,
                            connect_invalid_param_dw0(kConnectDataSubnqnOffset, true), who + ": unknown subsystem");
    if (!subsys->host_allowed(data.hostnqn))
      return reject_connect(sqe.cid, status::kConnectInvalidHost,
                            connect_invalid_param_dw0(kConnectDataHostnqnOffset, true), who + ": host not allowed");
    if (subsys->discovery && c.qid != 0)
      return reject_connect(sqe.cid, status::kConnectInvalidParameters, connect_invalid_param_dw0(42, false),
                            who + ": the discovery controller has no I/O queues");
    const std::uint32_t entries = static_cast<std::uint32_t>(c.sqsize) + 1;
    const std::uint32_t max_entries = c.qid == 0 ? kAdminQueueMaxEntries : t_->cfg.max_queue_size;
    if (c.sqsize == 0 || entries > max_entries)
      return reject_connect(sqe.cid, status::kConnectInvalidParameters, connect_invalid_param_dw0(44, false),
                            who + ": SQSIZE " + std::to_string(c.sqsize) + " (0's based) outside 1.." +
                                std::to_string(max_entries - 1));
    std::shared_ptr<Controller> ctrl;
    if (c.qid == 0) {
      if (data.cntlid != 0xffff && data.cntlid != 0xfffe)
        return reject_connect(sqe.cid, status::kConnectInvalidParameters,
                              connect_invalid_param_dw0(kConnectDataCntlidOffset, true),
                              who + ": CNTLID " + std::to_string(data.cntlid) + " (only the dynamic model, 0xffff)");
      ctrl = t_->new_controller(subsys, data, c.kato_ms);
      if (!ctrl) return reject_connect(sqe.cid, status::kConnectControllerBusy, 0, who + ": no controller ID left");
      std::lock_guard lock(ctrl->mu);
      ctrl->admin = weak_from_this();
    } else {
      ctrl = t_->find_controller(data.cntlid);
      if (!ctrl || ctrl->subsystem != subsys || ctrl->hostnqn != data.hostnqn)
        return reject_connect(sqe.cid, status::kConnectInvalidParameters,
                              connect_invalid_param_dw0(kConnectDataCntlidOffset, true),
                              who + ": no controller " + std::to_string(data.cntlid) + " for this host and subsystem");
      if (!ctrl->ready())
        return reject_connect(sqe.cid, status::kCommandSequenceError, 0, who + ": controller not enabled (CC.EN)");
      std::uint16_t allowed = ctrl->io_queues.load();
      if (c.qid > allowed)
        return reject_connect(sqe.cid, status::kConnectInvalidParameters, connect_invalid_param_dw0(42, false),
                              who + ": QID beyond the " + std::to_string(allowed) + " I/O queues granted");
      std::lock_guard lock(ctrl->mu);
      if (ctrl->dead) return reject_connect(sqe.cid, status::kConnectInvalidParameters,
                                            connect_invalid_param_dw0(kConnectDataCntlidOffset, true),
                                            who + ": controller is going away");
      auto it = ctrl->io.find(c.qid);
      if (it != ctrl->io.end() && !it->second.expired())
        return reject_connect(sqe.cid, status::kCommandSequenceError, 0, who + ": QID already connected");
      ctrl->io[c.qid] = weak_from_this();
    }
    ctrl_ = ctrl;
    qid_ = c.qid;
    queue_entries_ = static_cast<std::uint16_t>(entries);
    sqhd_ = 1 % queue_entries_;
    sq_flow_disabled_ = (c.cattr & kConnectCattrDisableSqFlow) != 0;
    slots_.reserve(entries);
    free_slots_.reserve(entries);
    for (std::uint32_t i = 0; i < entries; ++i) {
      slots_.push_back(std::make_unique<Slot>(socket_.get_executor()));
      slots_.back()->index = static_cast<std::uint16_t>(i);
      free_slots_.push_back(static_cast<std::uint16_t>(entries - 1 - i));
    }
    log(std::string("connect ") + (qid_ == 0 ? "admin" : "I/O") + " queue " + std::to_string(qid_) + ", " +
        std::to_string(entries) + " entries" + (link_.header_digest ? ", header digest" : "") +
        (link_.data_digest ? ", data digest" : ""));
    if (qid_ == 0 && ctrl_->kato_ms) arm_keep_alive();
    send_resp(sqe.cid, status::kSuccess, connect_success_dw0(ctrl_->cntlid));
  }

  void on_fabrics(const CapsuleCmd& cmd) {
    const Sqe& sqe = cmd.sqe;
    switch (sqe.fctype()) {
      case fabrics_type::kConnect:
        return send_resp(sqe.cid, status::kCommandSequenceError | status::kDnr);  // already connected
      case fabrics_type::kPropertyGet:
      case fabrics_type::kPropertySet:
        if (qid_ != 0) return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
        return on_property(sqe);
      case fabrics_type::kDisconnect:
        closing_ = true;
        close_reason_ = "Fabrics Disconnect";
        return send_resp(sqe.cid, status::kSuccess, 0, 0, true);
      default: return send_resp(sqe.cid, status::kInvalidOpcode | status::kDnr);
    }
  }

  std::uint64_t cap() const {
    std::uint64_t mqes = t_->cfg.max_queue_size - 1u;
    return mqes | (1ull << 16) /*CQR*/ | (30ull << 24) /*TO: 15 s*/ | (1ull << 37) /*CSS: NVM*/;
  }

  void on_property(const Sqe& sqe) {
    PropertyCommand p = parse_property(sqe);
    Controller& c = *ctrl_;
    if (!p.set) {
      if (p.size == 8) {
        if (p.offset != property::kCap) return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
        std::uint64_t v = cap();
        return send_resp(sqe.cid, status::kSuccess, static_cast<std::uint32_t>(v), static_cast<std::uint32_t>(v >> 32));
      }
      switch (p.offset) {
        case property::kCap: return send_resp(sqe.cid, status::kSuccess, static_cast<std::uint32_t>(cap()));
        case property::kCap + 4: return send_resp(sqe.cid, status::kSuccess, static_cast<std::uint32_t>(cap() >> 32));
        case property::kVs: return send_resp(sqe.cid, status::kSuccess, 0x00010400);
        case property::kCc: return send_resp(sqe.cid, status::kSuccess, c.cc.load());
        case property::kCsts: return send_resp(sqe.cid, status::kSuccess, c.csts.load());
        default: return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
      }
    }
    if (p.size != 4 || p.offset != property::kCc) return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
    std::uint32_t old = c.cc.exchange(static_cast<std::uint32_t>(p.value));
    std::uint32_t now = static_cast<std::uint32_t>(p.value);
    if ((now & property::kCcEnable) && !(old & property::kCcEnable)) {
      c.csts.store(property::kCstsReady);
      log("controller enabled (CC.EN=1, CSTS.RDY=1)");
    } else if (!(now & property::kCcEnable) && (old & property::kCcEnable)) {
      c.csts.store(0);
      log("controller reset (CC.EN=0): closing its I/O queues");
      close_io_queues("controller reset");
    }
    if ((now & property::kCcShnMask) && !(old & property::kCcShnMask)) {
      c.csts.store((c.csts.load() & ~0xcu) | property::kCstsShstComplete);
      log("controller shutdown (CC.SHN), CSTS.SHST complete");
    }
    send_resp(sqe.cid, status::kSuccess);
  }

  void close_io_queues(const std::string& reason) {
    std::vector<std::shared_ptr<Connection>> victims;
    {
      std::lock_guard lock(ctrl_->mu);
      for (auto& [qid, w] : ctrl_->io)
        if (auto conn = w.lock()) victims.push_back(conn);
      ctrl_->io.clear();
    }
    for (auto& v : victims) v->close_async(reason);
  }

  // ---- Keep alive ----
  void arm_keep_alive() {
    keep_alive_.expires_after(std::chrono::milliseconds(ctrl_->kato_ms));
    keep_alive_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->closed_) return;
      self->log("keep alive timeout: no Keep Alive within KATO " + std::to_string(self->ctrl_->kato_ms) + " ms");
      self->close("keep alive timeout");
    });
  }

  // ---- Admin ----
  void on_admin(const CapsuleCmd& cmd) {
    const Sqe& sqe = cmd.sqe;
    if (!ctrl_->ready() && sqe.opcode != admin_opcode::kKeepAlive)
      return send_resp(sqe.cid, status::kCommandSequenceError | status::kDnr);
    switch (sqe.opcode) {
      case admin_opcode::kIdentify: return on_identify(sqe);
      case admin_opcode::kSetFeatures:
      case admin_opcode::kGetFeatures: return on_features(sqe);
      case admin_opcode::kKeepAlive:
        if (ctrl_->kato_ms) arm_keep_alive();
        return send_resp(sqe.cid, status::kSuccess);
      case admin_opcode::kAsyncEventRequest:
        // Held until an event occurs; nvqos-target raises none, so they stay outstanding.
        if (held_aers_ >= kMaxHeldAers) return send_resp(sqe.cid, status::kAsyncEventLimitExceeded | status::kDnr);
        ++held_aers_;
        return;
      case admin_opcode::kGetLogPage: return on_get_log_page(sqe);
      default: return send_resp(sqe.cid, status::kInvalidOpcode | status::kDnr);
    }
  }

  bool check_transfer(const Sqe& sqe, std::uint32_t len) {
    if (!sqe.sgl1.transport() || sqe.sgl1.length != len) {
      send_resp(sqe.cid, status::kSglInvalidDataLength | status::kDnr);
      return false;
    }
    return true;
  }

  void on_identify(const Sqe& sqe) {
    IdentifyCommand id = parse_identify(sqe);
    Subsystem& s = *ctrl_->subsystem;
    std::vector<std::uint8_t> out(kIdentifySize, 0);
    std::span<std::uint8_t, kIdentifySize> buf(out.data(), kIdentifySize);
    switch (id.cns) {
      case cns::kController: {
        IdentifyController c;
        c.vid = 0x1d1d;
        c.ssvid = 0x1d1d;
        c.serial = s.serial;
        c.model = "nvqos-target";
        c.firmware = "0.1";
        c.mdts = static_cast<std::uint8_t>(__builtin_ctz(t_->cfg.mdts_bytes) - 12);
        c.cntlid = ctrl_->cntlid;
        c.ver = 0x00010400;
        c.aerl = kMaxHeldAers - 1;
        c.kas = 10;  // 1 s granularity
        c.maxcmd = t_->cfg.max_queue_size;
        c.nn = s.nsids.empty() ? 0 : s.nsids.back();
        c.oncs = 1u << 3;  // Write Zeroes
        c.sgls = 1u | (1u << 20);  // SGLs supported; Data Block Offset (in-capsule) supported
        c.subnqn = s.cfg.nqn;
        c.ioccsz = (64 + t_->cfg.inline_data_size) / 16;
        c.iorcsz = 1;
        c.msdbd = 1;
        if (s.discovery) {
          c.cntrltype = kCntrltypeDiscovery;
          c.lpa = 1u << 2;  // extended data for Get Log Page (offsets)
          c.oncs = 0;
        }
        c.encode(buf);
        break;
      }
      case cns::kNamespace: {
        if (id.nsid == 0 || id.nsid == 0xffffffffu) return send_resp(sqe.cid, status::kInvalidNamespace | status::kDnr);
        if (Namespace* ns = s.find(id.nsid)) {
          IdentifyNamespace n;
          n.nsze = n.ncap = n.nuse = ns->blocks();
          n.nguid = ns->nguid();
          n.lbads = ns->lbads();
          n.encode(buf);
        }  // an inactive NSID gets a zeroed structure (NVMe Base: Identify CNS 00h)
        break;
      }
      case cns::kActiveNamespaces: {
        if (id.nsid >= 0xfffffffeu) return send_resp(sqe.cid, status::kInvalidNamespace | status::kDnr);
        std::vector<std::uint32_t> ids;
        for (std::uint32_t n : s.nsids)
          if (n > id.nsid) ids.push_back(n);
        encode_active_namespace_list(ids, buf);
        break;
      }
      case cns::kNamespaceDescriptors: {
        Namespace* ns = s.find(id.nsid);
        if (!ns) return send_resp(sqe.cid, status::kInvalidNamespace | status::kDnr);
        out[0] = 0x02;  // NIDT: NGUID
        out[1] = 16;
        std::memcpy(out.data() + 4, ns->nguid().data(), 16);
        break;
      }
      default: return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
    }
    if (!check_transfer(sqe, kIdentifySize)) return;
    send_admin_data(sqe.cid, std::move(out));
  }

  void on_features(const Sqe& sqe) {
    FeaturesCommand f = parse_features(sqe);
    const bool set = sqe.opcode == admin_opcode::kSetFeatures;
    switch (f.fid) {
      case feature::kNumberOfQueues: {
        std::uint16_t granted = ctrl_->io_queues.load();
        if (set) {
          QueueCounts want = parse_number_of_queues(f.cdw11);
          if ((f.cdw11 & 0xffff) == 0xffff || (f.cdw11 >> 16) == 0xffff)
            return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
          granted = std::min<std::uint16_t>(std::min(want.sq_count, want.cq_count), t_->cfg.max_io_queues);
          ctrl_->io_queues.store(granted);
        }
        return send_resp(sqe.cid, status::kSuccess, number_of_queues_dw(granted, granted));
      }
      case feature::kKeepAliveTimer:
        if (set) {
          ctrl_->kato_ms = f.cdw11;
          if (ctrl_->kato_ms) arm_keep_alive(); else keep_alive_.cancel();
        }
        return send_resp(sqe.cid, status::kSuccess, set ? 0 : ctrl_->kato_ms);
      case feature::kAsyncEventConfig:
        if (set) aen_config_ = f.cdw11;
        return send_resp(sqe.cid, status::kSuccess, set ? 0 : aen_config_);
      default: return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
    }
  }

  void on_get_log_page(const Sqe& sqe) {
    GetLogPageCommand g = parse_get_log_page(sqe);
    if (ctrl_->subsystem->discovery) return on_discovery_log(sqe, g);
    // Error Information, SMART / Health, Firmware Slot: nothing to report, so zeros.
    if (g.lid != 0x01 && g.lid != 0x02 && g.lid != 0x03) return send_resp(sqe.cid, status::kInvalidLogPage | status::kDnr);
    if (g.bytes() > 64 * 1024) return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
    if (!check_transfer(sqe, g.bytes())) return;
    send_admin_data(sqe.cid, std::vector<std::uint8_t>(g.bytes(), 0));
  }

  void on_discovery_log(const Sqe& sqe, const GetLogPageCommand& g) {
    if (g.lid != kLogDiscovery) return send_resp(sqe.cid, status::kInvalidLogPage | status::kDnr);
    if (g.bytes() > 1024 * 1024) return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
    if (!check_transfer(sqe, g.bytes())) return;
    boost::system::error_code ec;
    tcp::endpoint local = socket_.local_endpoint(ec);
    std::vector<DiscoveryLogEntry> entries;
    for (const auto& sub : t_->subsystems) {
      if (!sub->host_allowed(ctrl_->hostnqn)) continue;
      DiscoveryLogEntry e;
      e.adrfam = local.address().is_v6() ? 2 : 1;
      e.subtype = 2;
      e.portid = 1;
      e.trsvcid = std::to_string(local.port());
      e.traddr = local.address().to_string();
      e.subnqn = sub->cfg.nqn;
      entries.push_back(std::move(e));
    }
    std::vector<std::uint8_t> log = encode_discovery_log(1, entries);
    std::vector<std::uint8_t> out(g.bytes(), 0);
    if (g.offset < log.size())
      std::copy_n(log.begin() + static_cast<std::ptrdiff_t>(g.offset),
                  std::min<std::uint64_t>(out.size(), log.size() - g.offset), out.begin());
    send_admin_data(sqe.cid, std::move(out));
  }

  // ---- NVM I/O ----
  Slot* take_slot(std::uint16_t cid) {
    if (free_slots_.empty()) return nullptr;
    Slot* s = slots_[free_slots_.back()].get();
    free_slots_.pop_back();
    s->busy = true;
    s->cid = cid;
    s->ns = nullptr;
    s->offset = s->len = 0;
    s->received = s->r2t_end = s->r2t_outstanding = 0;
    s->status = status::kSuccess;
    return s;
  }
  void release(Slot* s) {
    s->busy = false;
    free_slots_.push_back(s->index);
  }

  void on_io(const CapsuleCmd& cmd) {
    const Sqe& sqe = cmd.sqe;
    if (!ctrl_->ready()) return send_resp(sqe.cid, status::kCommandSequenceError | status::kDnr);
    const std::uint8_t op = sqe.opcode;
    if (op != nvm_opcode::kRead && op != nvm_opcode::kWrite && op != nvm_opcode::kFlush &&
        op != nvm_opcode::kWriteZeroes)
      return send_resp(sqe.cid, status::kInvalidOpcode | status::kDnr);
    Namespace* ns = ctrl_->subsystem->find(sqe.nsid);
    if (!ns) return send_resp(sqe.cid, status::kInvalidNamespace | status::kDnr);
    Slot* slot = take_slot(sqe.cid);
    if (!slot) return send_resp(sqe.cid, status::kCommandSequenceError | status::kDnr);  // SQ overrun
    slot->opcode = op;
    slot->ns = ns;
    slot->rx_ns = pdu_rx_ns_;
    slot->rx_behind = pdu_rx_behind_;
    slot->tap_rx_ns = pdu_tap_rx_ns_;
    slot->parsed_ns = steady_ns();
    if (op == nvm_opcode::kFlush) return execute(slot);

    RwCommand rw = parse_rw(sqe);
    if (rw.slba >= ns->blocks() || rw.nlb > ns->blocks() - rw.slba) {
      release(slot);
      return send_resp(sqe.cid, status::kLbaOutOfRange | status::kDnr);
    }
    slot->offset = rw.slba * ns->block_size();
    const std::uint64_t len = static_cast<std::uint64_t>(rw.nlb) * ns->block_size();
    if (op == nvm_opcode::kWriteZeroes) {
      slot->len = static_cast<std::uint32_t>(std::min<std::uint64_t>(len, UINT32_MAX));
      ns->zero(slot->offset, len);
      return execute(slot);
    }
    if (len > t_->cfg.mdts_bytes) {
      release(slot);
      return send_resp(sqe.cid, status::kInvalidField | status::kDnr);
    }
    slot->len = static_cast<std::uint32_t>(len);
    if (op == nvm_opcode::kRead) {
      if (!sqe.sgl1.transport() || sqe.sgl1.length != len) {
        release(slot);
        return send_resp(sqe.cid, status::kSglInvalidDataLength | status::kDnr);
      }
      return execute(slot);
    }
    // Write
    if (sqe.sgl1.in_capsule()) {
      Status st = status::kSuccess;
      if (sqe.sgl1.address != 0) st = status::kSglInvalidOffset | status::kDnr;
      else if (sqe.sgl1.length != len || cmd.data.size() != len || len > t_->cfg.inline_data_size)
        st = status::kSglInvalidDataLength | status::kDnr;
      else if (!decoder_.data_digest_ok()) st = status::kTransientTransportError;
      if (st != status::kSuccess) {
        release(slot);
        return send_resp(sqe.cid, st);
      }
      ns->write(slot->offset, cmd.data);
      return execute(slot);
    }
    if (!sqe.sgl1.transport()) {
      release(slot);
      return send_resp(sqe.cid, status::kSglInvalidType | status::kDnr);
    }
    if (sqe.sgl1.length != len || !cmd.data.empty()) {
      release(slot);
      return send_resp(sqe.cid, status::kSglInvalidDataLength | status::kDnr);
    }
    send_r2ts(slot);
  }

  void send_r2ts(Slot* s) {
    const std::uint32_t max_outstanding = std::min(t_->cfg.maxr2t, host_maxr2t_);
    while (s->r2t_outstanding < max_outstanding && s->r2t_end < s->len) {
      std::uint32_t left = s->len - s->r2t_end;
      std::uint32_t n = t_->cfg.r2t_size ? std::min(left, t_->cfg.r2t_size) : left;
      TxItem item;
      item.header = encode_header(R2T{.cccid = s->cid, .ttag = s->index, .r2to = s->r2t_end, .r2tl = n}, link_);
      push(std::move(item));
      s->r2t_end += n;
      ++s->r2t_outstanding;
    }
  }

  void on_h2c_data(const H2CData& d) {
    // The decoder still holds this PDU; its first HLEN bytes are what a TermReq echoes.
    std::span<const std::uint8_t> hdr_bytes = decoder_.error_header();
    if (d.ttag >= slots_.size() || !slots_[d.ttag]->busy || slots_[d.ttag]->opcode != nvm_opcode::kWrite ||
        slots_[d.ttag]->r2t_end == 0)
      return fatal(FatalErrorStatus::invalid_header_field, 10, hdr_bytes,
                   "H2CData TTAG " + std::to_string(d.ttag) + " matches no outstanding R2T");
    Slot* s = slots_[d.ttag].get();
    if (d.cccid != s->cid)
      return fatal(FatalErrorStatus::invalid_header_field, 8, hdr_bytes,
                   "H2CData CCCID " + std::to_string(d.cccid) + " != command " + std::to_string(s->cid) + " of TTAG");
    if (d.datal > t_->cfg.max_h2c_data)
      return fatal(FatalErrorStatus::data_limit_exceeded, 0, hdr_bytes,
                   "H2CData DATAL " + std::to_string(d.datal) + " > MAXH2CDATA " + std::to_string(t_->cfg.max_h2c_data));
    if (d.datao != s->received || static_cast<std::uint64_t>(d.datao) + d.datal > s->r2t_end)
      return fatal(FatalErrorStatus::data_out_of_range, 0, hdr_bytes,
                   "H2CData DATAO " + std::to_string(d.datao) + " DATAL " + std::to_string(d.datal) +
                       " outside the requested range (next expected offset " + std::to_string(s->received) +
                       ", R2T end " + std::to_string(s->r2t_end) + ")");
    if (!decoder_.data_digest_ok()) s->status = status::kTransientTransportError;
    if (s->status == status::kSuccess) s->ns->write(s->offset + d.datao, d.data);
    s->received += d.datal;
    if (d.last || s->received == s->r2t_end) s->r2t_outstanding = s->r2t_outstanding ? s->r2t_outstanding - 1 : 0;
    if (s->received == s->len) return execute(s);
    send_r2ts(s);
  }

  // Emulated device service time, then completion.
  void execute(Slot* s) {
    auto delay = t_->cfg.service_time.sample(rng_);
    if (delay.count() <= 0) return complete(s);
    s->timer.expires_after(delay);
    s->timer.async_wait([self = shared_from_this(), s](boost::system::error_code ec) {
      if (ec || self->closed_) return;
      self->complete(s);
    });
  }

  void complete(Slot* s) {
    if (closing_ || closed_) return;
    const std::uint16_t cid = s->cid;
    const Status st = s->status;
    const Timing timing{service_op_of(s->opcode), s->rx_ns, s->rx_behind, s->parsed_ns, s->tap_rx_ns};
    if (s->opcode == nvm_opcode::kRead && st == status::kSuccess) {
      ++t_->read_ops;
      t_->read_bytes += s->len;
      const bool success_flag = t_->cfg.c2h_success && sq_flow_disabled_;
      TxItem item;
      C2HData c2h{.cccid = cid, .datao = 0, .datal = s->len, .last = true, .success = success_flag, .data = {}};
      item.header = encode_header(c2h, link_);
      Crc32c crc;
      s->ns->read(s->offset, s->len, [&](std::span<const std::uint8_t> piece) {
        item.data[item.data_count++] = asio::buffer(piece.data(), piece.size());
        if (item.header.data_digest) crc.update(piece);
      });
      if (item.header.data_digest) {
        std::uint32_t v = crc.value();
        for (int i = 0; i < 4; ++i) item.ddgst[i] = static_cast<std::uint8_t>(v >> (8 * i));
      }
      release(s);
      if (success_flag) item.timing = timing;
      push(std::move(item));
      if (success_flag) {
        ++t_->commands;
        return;
      }
      return send_resp(cid, status::kSuccess, 0, 0, false, timing);
    }
    if (s->opcode == nvm_opcode::kWrite && st == status::kSuccess) {
      ++t_->write_ops;
      t_->write_bytes += s->len;
    }
    release(s);
    send_resp(cid, st, 0, 0, false, timing);
  }

  std::shared_ptr<Target::Impl> t_;
  tcp::socket socket_;
  StreamDecoder decoder_;
  std::vector<std::uint8_t> rx_;
  std::vector<TxItem> tx_pending_, tx_inflight_;
  std::vector<asio::const_buffer> tx_buffers_;
  // Kernel clock (--latency-clock kernel): set once timestamps are on.
  std::optional<wireclock::StampedWriter> writer_;
  std::vector<wireclock::Cut> tx_cuts_;
  wireclock::TxKeyQueue tx_keys_;
  wireclock::PduFramer framer_;
  PendingCompletions pending_stamps_;
  std::uint64_t pdu_rx_ns_ = 0;  // RX stamp of the PDU being handled
  bool header_rx_behind_ = false, pdu_rx_behind_ = false;  // see wireclock::later_data_queued
  Target::Impl::ListenerTap* tap_;  // wire clock: the listener's tap (outlives the connection)
  wireclock::Flow flow_;
  std::uint64_t pdu_tap_rx_ns_ = 0;  // the tap's stamp of the PDU being handled
  bool writing_ = false;
  bool closing_ = false;  // no more PDUs are processed
  bool closed_ = false;
  std::string close_reason_;
  std::string peer_;
  LinkParams link_;
  std::uint32_t host_maxr2t_ = 1;
  std::shared_ptr<Controller> ctrl_;
  std::uint16_t qid_ = 0;
  std::uint16_t queue_entries_ = 0;
  std::uint16_t sqhd_ = 0;
  bool sq_flow_disabled_ = false;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::uint16_t> free_slots_;
  std::uint8_t held_aers_ = 0;
  std::uint32_t aen_config_ = 0;
  asio::steady_timer keep_alive_;
  asio::steady_timer linger_;  // bounds the wait for a TermReq to be written
  std::mt19937_64 rng_;
};

}  // namespace

std::shared_ptr<Controller> Target::Impl::new_controller(Subsystem* subsys, const ConnectData& data, std::uint32_t kato) {
  auto ctrl = std::make_shared<Controller>();
  ctrl->subsystem = subsys;
  ctrl->hostnqn = data.hostnqn;
  ctrl->hostid = data.hostid;
  ctrl->kato_ms = kato;
  ctrl->io_queues = cfg.max_io_queues;
  std::lock_guard lock(mu);
  for (int tries = 0; tries < 0xffef; ++tries) {
    std::uint16_t id = next_cntlid;
    next_cntlid = static_cast<std::uint16_t>(next_cntlid >= 0xffef ? 1 : next_cntlid + 1);
    if (!controllers.count(id)) {
      ctrl->cntlid = id;
      controllers[id] = ctrl;
      return ctrl;
    }
  }
  return nullptr;
}

void Target::Impl::remove_controller(const std::shared_ptr<Controller>& ctrl) {
  std::vector<std::shared_ptr<Connection>> victims;
  {
    std::lock_guard lock(ctrl->mu);
    ctrl->dead = true;
    for (auto& [qid, w] : ctrl->io)
      if (auto c = w.lock()) victims.push_back(c);
    ctrl->io.clear();
  }
  {
    std::lock_guard lock(mu);
    controllers.erase(ctrl->cntlid);
  }
  for (auto& v : victims) v->close_async("admin queue closed");
}

void Target::Impl::accept(tcp::acceptor& acceptor, ListenerTap* tap) {
  acceptor.async_accept(asio::make_strand(io), [self = shared_from_this(), &acceptor, tap](boost::system::error_code ec,
                                                                                             tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      auto conn = std::make_shared<Connection>(self, std::move(socket), tap);
      {
        std::lock_guard lock(self->mu);
        if (self->stopped) return;
        std::erase_if(self->connections, [](auto& w) { return w.expired(); });
        self->connections.push_back(conn);
      }
      asio::post(conn->executor(), [conn] { conn->start(); });
    } else {
      self->log("accept: " + ec.message());
    }
    self->accept(acceptor, tap);
  });
}

Target::Target(asio::io_context& io, TargetConfig config, LogSink log)
    : impl_(std::make_shared<Impl>(io, std::move(config), std::move(log))) {
  validate(impl_->cfg);
  std::uint32_t hash = 2166136261u;
  for (const auto& sc : impl_->cfg.subsystems) {
    auto s = std::make_unique<Subsystem>();
    s->cfg = sc;
    for (char ch : sc.nqn) hash = (hash ^ static_cast<std::uint8_t>(ch)) * 16777619u;
    char serial[21];
    std::snprintf(serial, sizeof serial, "NVQOS%08X", hash);
    s->serial = serial;
    s->hosts.insert(sc.hosts.begin(), sc.hosts.end());
    for (const auto& nc : sc.namespaces) {
      s->namespaces[nc.nsid] = std::make_unique<Namespace>(nc, hash);
      s->nsids.push_back(nc.nsid);
    }
    std::sort(s->nsids.begin(), s->nsids.end());
    impl_->subsystems.push_back(std::move(s));
  }
}

Target::~Target() { stop(); }

std::vector<tcp::endpoint> Target::start() {
  std::vector<tcp::endpoint> bound;
  for (const auto& l : impl_->cfg.listen) {
    ListenAddress la = parse_listen(l);
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(la.host, ec);
    if (ec) throw std::system_error(ec, "--listen " + l + ": '" + la.host + "' is not an IP address");
    tcp::endpoint ep(addr, la.port);
    auto acc = std::make_unique<tcp::acceptor>(impl_->io);
    acc->open(ep.protocol(), ec);
    if (ec) throw std::system_error(ec, "listen on " + l + ": open");
    acc->set_option(asio::socket_base::reuse_address(true));
    if (addr.is_v6()) acc->set_option(asio::ip::v6_only(true), ec);
    acc->bind(ep, ec);
    if (ec) throw std::system_error(ec, "listen on " + l + ": bind");
    Impl::ListenerTap* tap = nullptr;
    if (impl_->cfg.latency_clock == wireclock::LatencyClock::kWire) {
      const std::uint16_t port = acc->local_endpoint().port();
      for (auto& t : impl_->taps)
        if (t->port == port) tap = t.get();
      if (!tap) {
        try {
          impl_->taps.push_back(std::make_unique<Impl::ListenerTap>(port));
        } catch (const std::system_error& e) {
          throw std::runtime_error("listen on " + l + ": --latency-clock wire: " + e.what());
        }
        tap = impl_->taps.back().get();
      }
    }
    acc->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::system_error(ec, "listen on " + l + ": listen");
    bound.push_back(acc->local_endpoint());
    impl_->log("listening on " + endpoint_string(bound.back()));
    impl_->accept(*acc, tap);
    impl_->acceptors.push_back(std::move(acc));
  }
  for (const auto& s : impl_->subsystems) {
    std::string line = "subsystem " + s->cfg.nqn + ": ";
    for (std::uint32_t n : s->nsids) {
      Namespace* ns = s->find(n);
      line += "nsid " + std::to_string(n) + " " + std::to_string(ns->blocks() * ns->block_size() >> 20) + " MiB (" +
              std::to_string(ns->block_size()) + " B blocks), ";
    }
    line += s->cfg.allow_any_host ? "any host" : std::to_string(s->hosts.size()) + " allowed host(s)";
    impl_->log(line);
  }
  impl_->log("service time: " + impl_->cfg.service_time.describe());
  return bound;
}

void Target::stop() {
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
    for (auto& w : impl_->connections)
      if (auto c = w.lock()) conns.push_back(c);
  }
  for (auto& a : impl_->acceptors) {
    boost::system::error_code ec;
    a->close(ec);
  }
  for (auto& c : conns) c->close_async("target stopping");
}

nlohmann::json Target::service_report() const {
  nlohmann::json doc = impl_->service.report();
  if (impl_->cfg.latency_clock == wireclock::LatencyClock::kWire) {
    wireclock::TapCounts c;
    for (auto& t : impl_->taps) {
      std::lock_guard lock(t->mu);
      c += t->tap.counts();
    }
    doc["wire_tap"] = {{"packets", c.packets}, {"drops", c.drops}, {"stamped_at_tap", c.stamped_at_tap}};
  }
  return doc;
}

TargetStats Target::stats() const {
  const Impl& i = *impl_;
  return {i.open_connections.load(), i.commands.load(),    i.read_ops.load(),     i.write_ops.load(),
          i.read_bytes.load(),       i.write_bytes.load(), i.fatal_errors.load()};
}

}  // namespace nvqos::target
