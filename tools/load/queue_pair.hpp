// One NVMe/TCP queue pair seen from the host: a TCP connection, its ICReq/ICResp
// exchange, and the commands outstanding on it. Used for the admin queue and for
// every I/O queue.
//
// Hot path: submit() encodes the capsule into a pending send buffer; one write is
// in flight at a time and everything queued meanwhile goes out in the next write,
// so a busy queue makes one send() per batch. Reads decode whole PDUs with the
// codec's StreamDecoder. Buffers are sized at connect time; after that the
// steady state allocates nothing.
//
// With the kernel clock (QueueConfig::kernel_clock) the same loop also keeps the
// wire times of each command: every capsule header ends a send call that asks for
// a TX stamp (wireclock::StampedWriter), reads go PDU by PDU so each completion
// carries its own skb's RX stamp, and the socket's error queue is drained in the
// read handler before completions are matched. With the wire clock (QueueConfig::wire_clock)
// a packet tap opened before connect() also stamps each completion header by the packet that
// carried it (wireclock::PacketTap).
#pragma once

#include <nvqos/nvmf/decoder.h>
#include <nvqos/nvmf/nvme.h>
#include <nvqos/nvmf/pdu.h>
#include <nvqos/wireclock/packet_tap.h>
#include <nvqos/wireclock/stamped_writer.h>
#include <nvqos/wireclock/wire_clock.h>

#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace nvqos::load {

// Monotonic clock in ns (CLOCK_MONOTONIC); all latencies are differences of it.
uint64_t monotonic_ns();

class QueuePair;

// Receives the completions of commands submitted with submit() (not execute()).
class QueueEvents {
 public:
  virtual ~QueueEvents() = default;
  // `cqe` is synthesised with status 0 when a C2HData PDU carried the SUCCESS flag.
  virtual void on_complete(QueuePair& queue, uint16_t cid, const nvmf::Cqe& cqe, uint64_t now_ns) = 0;
  // The connection failed; every outstanding command is lost. Called once.
  virtual void on_queue_failed(QueuePair& queue, const std::string& what) = 0;
};

struct QueueConfig {
  uint16_t qid = 0;
  uint16_t depth = 32;  // commands outstanding at most (CIDs 0..depth-1)
  bool header_digest = false;
  bool data_digest = false;
  uint32_t max_io_bytes = 4096;  // largest data transfer of one command
  bool kernel_clock = false;     // keep kernel TX/RX stamps of every command (wire_times())
  bool wire_clock = false;       // and the packet tap's RX stamps (needs kernel_clock)
  std::string name;              // "job0 q1" in error messages
};

class QueuePair {
 public:
  QueuePair(boost::asio::io_context& io, QueueConfig config, QueueEvents* events);
  QueuePair(const QueuePair&) = delete;
  QueuePair& operator=(const QueuePair&) = delete;

  // TCP connect (from `source` when it is not unspecified) + ICReq/ICResp;
  // throws std::runtime_error with context.
  boost::asio::awaitable<void> connect(const boost::asio::ip::tcp::endpoint& endpoint,
                                       std::chrono::milliseconds timeout,
                                       const boost::asio::ip::address& source = {});

  // Submits a command whose completion goes to QueueEvents. `out` is the
  // write data (in the capsule when `in_capsule`, else sent on R2T); `in`
  // receives read data (may be empty to discard it; the length still counts).
  // The caller picks a free CID (< depth) and keeps out/in alive until completion.
  void submit(uint16_t cid, const nvmf::Sqe& sqe, std::span<const uint8_t> out, bool in_capsule,
              std::span<uint8_t> in, uint32_t in_len);

  // Runs one command to completion (setup and admin commands). Takes a free
  // CID itself. Throws std::runtime_error on timeout or connection failure.
  boost::asio::awaitable<nvmf::Cqe> execute(nvmf::Sqe sqe, std::span<const uint8_t> out,
                                            std::span<uint8_t> in, std::chrono::milliseconds timeout);

  // Between cork() and uncork() submissions only queue up; uncork() sends them
  // in one write. Completions handled in one read are corked implicitly.
  void cork() { ++corked_; }
  void uncork() {
    if (--corked_ == 0) flush();
  }

  // Closes the connection without reporting a failure.
  void close();
  // Closes the connection and reports `what` as its failure (e.g. a command timed out).
  void abort_with(const std::string& what) { fail(what); }

  bool failed() const { return failed_; }
  const std::string& failure() const { return failure_; }
  uint16_t qid() const { return config_.qid; }
  uint16_t local_port() const { return local_port_; }
  const QueueConfig& config() const { return config_; }
  const nvmf::IcResp& ic_resp() const { return ic_resp_; }
  // When the capsule of `cid` was handed to the socket (ns, monotonic_ns());
  // 0 while it still waits for the write in flight.
  uint64_t submit_time(uint16_t cid) const { return slots_[cid].submit_ns; }
  bool cid_busy(uint16_t cid) const { return slots_[cid].busy; }
  // Kernel stamps (CLOCK_REALTIME ns) of the command in `cid`: its capsule header's TX,
  // its completion's RX from the socket and from the tap; 0 where there is none. Valid inside
  // on_complete().
  struct WireTimes {
    uint64_t tx_ns = 0;
    uint64_t rx_ns = 0;
    bool rx_behind = false;  // later data was queued when the completion's header was read
    uint64_t tap_rx_ns = 0;
  };
  WireTimes wire_times(uint16_t cid) const {
    const Slot& s = slots_[cid];
    return {s.tx_ns, s.rx_ns, s.rx_behind, s.tap_rx_ns};
  }
  // The packet tap's counts (all zero without the wire clock).
  wireclock::TapCounts tap_counts() { return tap_ ? tap_->counts() : wireclock::TapCounts{}; }

 private:
  struct Slot {
    bool busy = false;
    bool awaited = false;  // execute(): result goes to `result`, not QueueEvents
    bool done = false;
    bool ddgst_error = false;
    std::span<const uint8_t> out;
    std::span<uint8_t> in;
    uint32_t in_len = 0;
    uint32_t received = 0;
    uint64_t submit_ns = 0;
    uint32_t generation = 0;  // which use of the slot a TX stamp's token names
    uint64_t tx_ns = 0, rx_ns = 0, tap_rx_ns = 0;
    bool rx_behind = false;
    nvmf::Cqe result;
    boost::asio::steady_timer* waiter = nullptr;
  };

  // Returns the bytes of the PDU's header region (header, digest, padding).
  size_t append(const nvmf::Pdu& pdu, std::span<const uint8_t> data);
  void flush();
  void on_written(const boost::system::error_code& ec);
  void start_read();
  void on_read(const boost::system::error_code& ec, size_t n);
  void read_stamped();  // kernel clock: PDU-by-PDU reads with RX stamps
  void drain_tx_stamps();
  bool consume(std::span<const uint8_t> in);  // false: connection failed or closing
  bool handle_pdu();  // false: connection failed
  bool handle_r2t(const nvmf::R2T& r2t);
  bool handle_c2h_data(const nvmf::C2HData& d);
  void complete(uint16_t cid, const nvmf::Cqe& cqe);
  void fail(const std::string& what);

  boost::asio::io_context& io_;
  QueueConfig config_;
  QueueEvents* events_;
  boost::asio::ip::tcp::socket socket_;
  nvmf::StreamDecoder decoder_;
  nvmf::LinkParams link_;
  nvmf::IcResp ic_resp_;
  bool ic_done_ = false;
  boost::asio::steady_timer* ic_waiter_ = nullptr;
  std::vector<Slot> slots_;
  std::vector<uint8_t> pending_;   // PDUs queued while a write is in flight
  std::vector<uint8_t> writing_;   // the buffer of the write in flight
  std::vector<uint16_t> pending_cids_;  // capsules in `pending_`, stamped when handed to the socket
  // Kernel clock: where send calls must end in `pending_` / `writing_`.
  std::vector<wireclock::Cut> pending_cuts_, writing_cuts_;
  boost::asio::const_buffer writing_buffer_;
  std::optional<wireclock::StampedWriter> writer_;
  wireclock::TxKeyQueue tx_keys_;
  wireclock::PduFramer framer_;
  uint64_t pdu_rx_ns_ = 0;  // RX stamp of the PDU being handled
  bool header_rx_behind_ = false, pdu_rx_behind_ = false;  // see wireclock::later_data_queued
  // Wire clock: opened before the handshake, which anchors the stream (flow_) on the SYN-ACK.
  std::unique_ptr<wireclock::PacketTap> tap_;
  wireclock::Flow flow_;
  uint64_t pdu_tap_rx_ns_ = 0;  // the tap's stamp of the PDU being handled
  bool write_in_flight_ = false;
  int corked_ = 0;
  bool closing_ = false;
  std::vector<uint8_t> read_buf_;
  bool failed_ = false;
  std::string failure_;
  uint16_t local_port_ = 0;
};

}  // namespace nvqos::load
