// Kernel-timestamped clocks for NVMe/TCP endpoints: nvqos-load times each command from
// the kernel's software TX timestamp of its capsule to the RX timestamp of its completion, and
// nvqos-target its service from the capsule's RX timestamp to the completion's TX timestamp.
// Those are the moments the packets pass the network stack's device layer, where nvqos-agent's
// tc programs see them, so both measure the same span without the processes' own wake-up and
// syscall time (docs/design.md, "Accuracy against nvqos-load").
//
// Mechanism (Documentation/networking/timestamping.rst):
//  - TX: SOF_TIMESTAMPING_TX_SCHED, requested per send call with an SO_TIMESTAMPING control
//    message, so only the sends that end a timed PDU header produce one. The stamp is taken in
//    __dev_queue_xmit just before the tc egress hook. OPT_ID keys it by the stream offset of
//    the send call's last byte; OPT_TSONLY returns it without the payload. Every timed send is
//    made a TCP record end (MSG_EOR, or MSG_MORE then a data send ending with MSG_EOR) so a later
//    send cannot join its skb and overwrite the key.
//  - RX: SOF_TIMESTAMPING_RX_SOFTWARE. TCP's recvmsg reports the stamp of the last skb it copied
//    from, so the reader takes each PDU's 8-byte common header in a read of its own: the stamp
//    is that of the skb that carried the header (the kernel clock). TCP may have merged later
//    segments into that skb and moved its stamp; the wire clock takes the RX side from a packet
//    tap instead (packet_tap.h).
// Stamps are CLOCK_REALTIME (the kernel's choice); only their differences are used.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>

namespace nvqos::wireclock {

// kWire: TX stamps as kKernel, RX stamps from a packet tap (packet_tap.h); the kernel clock is
// kept beside it.
enum class LatencyClock { kApp, kKernel, kWire };
// "app" | "kernel" | "wire"; throws std::invalid_argument naming the text otherwise.
LatencyClock parse_latency_clock(std::string_view text);
const char* latency_clock_name(LatencyClock c);

// Turns on RX software stamps for every read and keyed TX stamps for sends that ask (see
// above) on a connected TCP socket. Must run before the first byte is sent: keys count from
// the send queue's position at this call. Throws std::system_error naming the step.
// The first socket on a host to ask makes the kernel switch RX stamping on from a work item:
// segments received in the next moment carry none (counted as missing; the tools' connection
// setup takes longer than that before the first timed command).
void enable_timestamping(int fd);

// One non-blocking sendmsg (MSG_DONTWAIT | MSG_NOSIGNAL | `flags`), asking for a TX SCHED
// stamp when `stamp`. Returns what sendmsg returns (errno set on -1).
ssize_t send_stamped(int fd, const iovec* iov, int iovcnt, int flags, bool stamp);

// One non-blocking recvmsg of at most `len` bytes. `*rx_ns` gets the software RX stamp of the
// last skb read from, or 0 when the kernel reported none. Returns what recvmsg returns.
ssize_t recv_stamped(int fd, void* buf, size_t len, uint64_t* rx_ns);

struct TxStamp {
  uint32_t key;  // stream offset of the stamped send's last byte (mod 2^32)
  uint64_t ns;   // CLOCK_REALTIME
};
// Reads every TX stamp queued on the socket's error queue (non-blocking) and passes the SCHED
// ones to `sink`; returns how many it read. Other error-queue messages are skipped.
template <class Sink>
size_t drain_tx_stamps(int fd, Sink&& sink);
// Reads one error-queue message: 1 and `*out` set for a SCHED stamp, 0 for another message,
// -1 when the queue is empty (or on error).
int read_tx_stamp(int fd, TxStamp* out);

template <class Sink>
size_t drain_tx_stamps(int fd, Sink&& sink) {
  size_t n = 0;
  TxStamp s{};
  for (int r; (r = read_tx_stamp(fd, &s)) >= 0;) {
    if (r == 1) {
      sink(s);
      ++n;
    }
  }
  return n;
}

// Matches TX stamps to timed units. A unit is registered with the key of its last stamped
// byte and an opaque token; stamps arrive in key order (the kernel transmits a stream in
// order), so a stamp for key K settles every earlier unit still waiting: those will never get
// one (the error queue overflowed, or the kernel merged their skb) and are reported as missed,
// never given a guessed time. Stamps for keys that are not a unit's (the head of a partial
// send, a retransmission's repeat) are ignored.
class TxKeyQueue {
 public:
  void expect(uint32_t key, uint64_t token) { waiting_.push_back({key, token}); }

  struct Match {
    std::optional<uint64_t> token;  // the unit this stamp belongs to, if any
    size_t missed = 0;              // units before it that got no stamp (passed to on_missed)
  };
  template <class OnMissed>
  Match match(uint32_t key, OnMissed&& on_missed) {
    Match m;
    while (!waiting_.empty() && before(waiting_.front().key, key)) {
      on_missed(waiting_.front().token);
      waiting_.pop_front();
      ++m.missed;
    }
    if (!waiting_.empty() && waiting_.front().key == key) {
      m.token = waiting_.front().token;
      waiting_.pop_front();
    }
    return m;
  }
  size_t waiting() const { return waiting_.size(); }

  // a < b in a 32-bit stream offset space that wraps every 4 GiB.
  static bool before(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }

 private:
  struct Entry {
    uint32_t key;
    uint64_t token;
  };
  std::deque<Entry> waiting_;
};

// Splits a received NVMe/TCP byte stream into reads that end at PDU boundaries and take each
// PDU's common header alone, so the header's RX stamp is its own skb's.
class PduFramer {
 public:
  // Bytes the next read may take (`room`: the buffer's free space, > 0).
  size_t want(size_t room) const;
  // `bytes` were read with stamp `rx_ns` (0 = none).
  void consumed(std::span<const uint8_t> bytes, uint64_t rx_ns);
  // RX stamp of the PDU whose common header was read last (0 = the kernel gave none).
  uint64_t pdu_rx_ns() const { return pdu_rx_ns_; }
  // A PLEN shorter than the common header: the stream cannot be framed (the decoder reports it).
  bool broken() const { return broken_; }
  // Common headers completed so far, and bytes of the current PDU still to read.
  uint64_t headers() const { return headers_; }
  uint64_t pdu_left() const { return pdu_left_; }
  // Stream offset of the last byte of the PDU header (HLEN bytes) whose common header was read
  // last: the byte that makes the header parseable on the wire (the wire clock's RX point).
  uint64_t header_last_byte() const { return header_last_byte_; }

 private:
  uint8_t header_[8] = {};
  size_t header_have_ = 0;
  uint64_t pdu_left_ = 0;  // bytes of the current PDU after its common header
  uint64_t pdu_rx_ns_ = 0;
  uint64_t headers_ = 0;
  uint64_t offset_ = 0;  // stream bytes consumed
  uint64_t header_last_byte_ = 0;
  bool broken_ = false;
};

// Whether more than `pdu_left` bytes were queued on the socket when a PDU's header was read: a
// later segment had arrived, and TCP may have merged it into the header's skb (receive-queue
// coalescing moves the skb's stamp to the newest segment), so the header's RX stamp can be
// late by up to the reader's lag. Counted in the reports as `rx_behind`; -1 on error.
int later_data_queued(int fd, uint64_t pdu_left);

}  // namespace nvqos::wireclock
