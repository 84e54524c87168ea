// The wire clock's RX side (--latency-clock wire): a packet tap that stamps each PDU header by
// the first captured packet that carried its last byte.
//
// Why not the TCP socket's RX stamp (the kernel clock)? When the reader lags, TCP merges newly
// arrived segments into the unread tail skb of the receive queue and moves that skb's stamp to
// the newest arrival, so a header read later carries a later segment's stamp. The tap sees
// every packet before TCP touches it: an AF_PACKET socket (TPACKET_V2 ring, cooked so that
// frames start at the IP header on any link type) with a classic BPF filter on the
// connection's ports. Each frame keeps only the IP and TCP headers; TCP sequence numbers are
// mapped to offsets of the received byte stream by anchoring on the peer's SYN (or SYN-ACK):
// stream byte 0 is its sequence number + 1. Stamps are the kernel's CLOCK_REALTIME software
// stamps (the skb's own, else read as the tap gets the packet), the clock of the TX stamps
// (wire_clock.h).
//
// Never guessed: a header whose last byte no captured packet carried, or whose first capture
// the tap may have lost (ring overflow), has no stamp and is counted as missing.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>

namespace nvqos::wireclock {

// One direction of a TCP connection as the receiver sees it: packets from `peer` to `local`.
struct Flow {
  std::array<uint8_t, 16> local_addr{}, peer_addr{};  // IPv4 in the first 4 bytes
  uint16_t local_port = 0, peer_port = 0;
  uint8_t family = 0;  // AF_INET or AF_INET6
  auto operator<=>(const Flow&) const = default;
};

// The flow a connected TCP socket receives on. Throws std::system_error naming the call.
Flow receiving_flow(int fd);

// Byte coverage of one received stream: which captured packet first carried each byte.
class StreamClock {
 public:
  // The peer's SYN (or SYN-ACK) with sequence number `isn`: stream byte 0 is isn + 1. A new
  // SYN with another ISN starts a new stream (the 4-tuple was reused).
  void syn(uint32_t isn);
  bool anchored() const { return anchored_; }

  // A captured packet whose TCP payload is [seq, seq + len), stamped `ns` (0: the tap cannot
  // vouch for it being the first arrival of these bytes). Bytes covered before keep their
  // stamp (a retransmission does not move it). `late_fill_ok`: whether bytes below the highest
  // byte seen so far may take this stamp; false once the tap has lost packets, because one of
  // those may have carried them first.
  void segment(uint32_t seq, uint32_t len, uint64_t ns, bool late_fill_ok);

  // Stamp of the first captured packet that carried stream byte `offset`; 0 when none did.
  uint64_t stamp(uint64_t offset) const;
  // Every byte below `offset` has been read: its coverage can go.
  void release_below(uint64_t offset);
  // Highest stream offset + 1 any captured packet reached.
  uint64_t frontier() const { return frontier_; }
  size_t spans() const { return covered_.size(); }

 private:
  struct Span {
    uint64_t end;
    uint64_t ns;
  };
  void cover(uint64_t start, uint64_t end, uint64_t ns);

  bool anchored_ = false;
  uint32_t isn_ = 0;
  uint64_t frontier_ = 0;
  uint64_t floor_ = 0;                 // bytes below are read and forgotten
  std::map<uint64_t, Span> covered_;  // disjoint [start, end) -> first stamp
};

// What one captured frame says about a TCP segment, parsed from its IP and TCP headers.
struct TcpSegment {
  Flow flow;  // local = destination
  uint32_t seq = 0;
  uint32_t payload = 0;
  bool syn = false;
};
// Parses a frame that starts at the IP header (`wire_len`: the packet's length from there, for
// a GSO packet whose IPv4 total length is 0). False for anything but an unfragmented TCP
// segment with whole headers in `bytes`.
bool parse_tcp_segment(std::span<const uint8_t> bytes, uint32_t wire_len, TcpSegment* out);

struct TapCounts {
  uint64_t packets = 0;  // frames read with a TCP segment of ours
  uint64_t drops = 0;    // packets the ring had no room for
  // Frames whose skb carried no realtime stamp, so the kernel read CLOCK_REALTIME as it handed
  // the packet to the tap (in __netif_receive_skb_core, right before tc ingress). On Linux 6.x
  // that is every packet of a local TCP sender on veth and loopback: its skb keeps TCP's
  // monotonic departure time, which the receive path does not overwrite.
  uint64_t stamped_at_tap = 0;
  TapCounts& operator+=(const TapCounts& o) {
    packets += o.packets;
    drops += o.drops;
    stamped_at_tap += o.stamped_at_tap;
    return *this;
  }
};

// The AF_PACKET tap. Not thread-safe: one owner drains it (nvqos-target guards a port's tap
// with a lock). Needs CAP_NET_RAW.
class PacketTap {
 public:
  // Captures TCP packets sent to `local_port` (from `peer_port` unless 0) on every interface of
  // the caller's network namespace, except the outgoing copies a tap also sees (on loopback
  // every packet passes twice). Throws std::system_error naming the step that failed.
  PacketTap(uint16_t local_port, uint16_t peer_port);

  // Stamp of the first captured packet of `flow` that carried stream byte `offset` (the
  // caller read it already), 0 if none did; drains first when the byte is past what was seen.
  // Bytes below `offset` are forgotten: ask in ascending order.
  uint64_t stamp(const Flow& flow, uint64_t offset);
  // The connection of `flow` closed.
  void forget(const Flow& flow) { streams_.erase(flow); }

  // The counts so far (asks the kernel for drops not yet seen in the ring).
  TapCounts counts();

 private:
  // Reads every frame the kernel has filled. A frame is filled before TCP sees the packet, so
  // after a byte was read from a socket, drain() has seen the packets that carried it.
  void drain();
  void read_drops();

  struct Socket {  // the AF_PACKET socket, closed with the tap
    int fd = -1;
    Socket() = default;
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    ~Socket();
  };
  struct Ring {  // the frames mapped from the socket, unmapped before it closes
    uint8_t* base = nullptr;
    size_t bytes = 0;
    Ring() = default;
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;
    ~Ring();
  };
  Socket socket_;  // declared before ring_: destroyed after it
  Ring ring_;
  unsigned frames_ = 0, next_ = 0;
  std::map<Flow, StreamClock> streams_;
  uint64_t packets_ = 0, drops_ = 0, at_tap_ = 0;
};

}  // namespace nvqos::wireclock
