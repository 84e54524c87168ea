#include "nvqos/wireclock/packet_tap.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <string>
#include <system_error>

namespace nvqos::wireclock {
namespace {

// Frames keep the IP and TCP headers with their longest options (60 + 60 bytes) and no
// payload: the filter's return value is the snap length. A TPACKET_V2 frame of 256 bytes holds
// its 80-byte header area plus 176 bytes of packet.
constexpr uint32_t kSnapLen = 128;
constexpr unsigned kFrameSize = 256;
constexpr unsigned kBlockSize = 64 * 1024;
// 16384 frames: the reader drains the ring every time it reads past what the tap has seen, so
// the ring only has to hold what arrives while the process is not running (seconds of a busy
// bulk connection's packets; GSO makes them few).
constexpr unsigned kBlocks = 64;

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}

[[noreturn]] void fail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

}  // namespace

Flow receiving_flow(int fd) {
  sockaddr_storage local{}, peer{};
  socklen_t llen = sizeof local, plen = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) != 0) fail("getsockname of a tapped connection");
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) fail("getpeername of a tapped connection");
  Flow f;
  f.family = static_cast<uint8_t>(local.ss_family);
  if (local.ss_family == AF_INET) {
    const auto& l = reinterpret_cast<const sockaddr_in&>(local);
    const auto& p = reinterpret_cast<const sockaddr_in&>(peer);
    std::memcpy(f.local_addr.data(), &l.sin_addr, 4);
    std::memcpy(f.peer_addr.data(), &p.sin_addr, 4);
    f.local_port = ntohs(l.sin_port);
    f.peer_port = ntohs(p.sin_port);
  } else {
    const auto& l = reinterpret_cast<const sockaddr_in6&>(local);
    const auto& p = reinterpret_cast<const sockaddr_in6&>(peer);
    std::memcpy(f.local_addr.data(), &l.sin6_addr, 16);
    std::memcpy(f.peer_addr.data(), &p.sin6_addr, 16);
    f.local_port = ntohs(l.sin6_port);
    f.peer_port = ntohs(p.sin6_port);
  }
  return f;
}

void StreamClock::syn(uint32_t isn) {
  if (anchored_ && isn == isn_) return;  // a retransmitted SYN
  anchored_ = true;
  isn_ = isn;
  frontier_ = floor_ = 0;
  covered_.clear();
}

void StreamClock::segment(uint32_t seq, uint32_t len, uint64_t ns, bool late_fill_ok) {
  if (!anchored_ || len == 0) return;
  // Unwrapped next to the highest byte seen: TCP never has 2 GiB in flight.
  const uint32_t rel = seq - (isn_ + 1);
  int64_t start = static_cast<int64_t>(frontier_) + static_cast<int32_t>(rel - static_cast<uint32_t>(frontier_));
  int64_t end = start + len;
  start = std::max<int64_t>(start, static_cast<int64_t>(floor_));
  if (end <= start) return;
  const auto s = static_cast<uint64_t>(start), e = static_cast<uint64_t>(end);
  if (s < frontier_) cover(s, std::min(e, frontier_), late_fill_ok ? ns : 0);
  if (e > frontier_) {
    cover(std::max(s, frontier_), e, ns);
    frontier_ = e;
  }
}

void StreamClock::cover(uint64_t start, uint64_t end, uint64_t ns) {
  while (start < end) {
    auto next = covered_.upper_bound(start);
    if (next != covered_.begin()) {
      auto prev = std::prev(next);
      if (prev->second.end > start) {  // covered already: the earlier packet keeps it
        start = prev->second.end;
        continue;
      }
    }
    const uint64_t stop = next == covered_.end() ? end : std::min(end, next->first);
    if (next != covered_.begin()) {
      auto prev = std::prev(next);
      if (prev->second.end == start && prev->second.ns == ns) {
        prev->second.end = stop;
        start = stop;
        continue;
      }
    }
    covered_.emplace(start, Span{stop, ns});
    start = stop;
  }
}

uint64_t StreamClock::stamp(uint64_t offset) const {
  auto it = covered_.upper_bound(offset);
  if (it == covered_.begin()) return 0;
  --it;
  return offset < it->second.end ? it->second.ns : 0;
}

void StreamClock::release_below(uint64_t offset) {
  floor_ = std::max(floor_, offset);
  while (!covered_.empty() && covered_.begin()->second.end <= floor_) covered_.erase(covered_.begin());
}

bool parse_tcp_segment(std::span<const uint8_t> b, uint32_t wire_len, TcpSegment* out) {
  if (b.empty()) return false;
  const uint8_t* p = b.data();
  const uint8_t* tcp = nullptr;
  uint32_t ip_payload = 0;  // TCP header + data
  TcpSegment seg;
  if (p[0] >> 4 == 4) {
    const size_t ihl = (p[0] & 0x0f) * 4u;
    if (ihl < 20 || b.size() < ihl + 20 || p[9] != IPPROTO_TCP || (be16(p + 6) & 0x3fff) != 0) return false;
    uint32_t total = be16(p + 2);
    if (total == 0) total = wire_len;  // a GSO packet past 64 KiB
    if (total < ihl) return false;
    ip_payload = total - static_cast<uint32_t>(ihl);
    tcp = p + ihl;
    seg.flow.family = AF_INET;
    std::memcpy(seg.flow.peer_addr.data(), p + 12, 4);
    std::memcpy(seg.flow.local_addr.data(), p + 16, 4);
  } else if (p[0] >> 4 == 6) {
    if (b.size() < 40 + 20 || p[6] != IPPROTO_TCP) return false;
    ip_payload = be16(p + 4);
    if (ip_payload == 0 && wire_len >= 40) ip_payload = wire_len - 40;
    tcp = p + 40;
    seg.flow.family = AF_INET6;
    std::memcpy(seg.flow.peer_addr.data(), p + 8, 16);
    std::memcpy(seg.flow.local_addr.data(), p + 24, 16);
  } else {
    return false;
  }
  const uint32_t doff = (tcp[12] >> 4) * 4u;
  if (doff < 20 || ip_payload < doff) return false;
  seg.flow.peer_port = be16(tcp);
  seg.flow.local_port = be16(tcp + 2);
  seg.seq = be32(tcp + 4);
  seg.syn = (tcp[13] & 0x02) != 0;
  seg.payload = ip_payload - doff;
  *out = seg;
  return true;
}

PacketTap::Socket::~Socket() {
  if (fd >= 0) ::close(fd);
}

PacketTap::Ring::~Ring() {
  if (base) ::munmap(base, bytes);
}

PacketTap::PacketTap(uint16_t local_port, uint16_t peer_port) {
  const std::string what = "packet tap for TCP port " + std::to_string(local_port) +
                           (peer_port ? " from port " + std::to_string(peer_port) : std::string());
  // Protocol 0 until bind(): no packet is queued before the filter is in place.
  socket_.fd = ::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (socket_.fd < 0) fail(what + ": AF_PACKET socket (needs CAP_NET_RAW)");
  const int fd = socket_.fd;

  // Frames start at the IP header (cooked socket). The outgoing copy of a packet is dropped by
  // its packet type, which libpcap's compiler cannot test on a raw-IP link type; the program
  // is small enough to write out (it is exercised on real packets by nvqos_wireclock_test).
  constexpr uint32_t kDrop = 20;
  auto jump_to_drop = [](uint32_t at) { return static_cast<uint8_t>(kDrop - (at + 1)); };
  sock_filter code[] = {
      /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_PKTTYPE)),
      /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, jump_to_drop(1), 0),
      /* 2 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
      /* 3 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
      /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 4, 1, 0),
      /* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 6, jump_to_drop(5)),
      // IPv4: TCP, not a fragment; X = header length.
      /* 6 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
      /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, jump_to_drop(7)),
      /* 8 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 6),
      /* 9 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, jump_to_drop(9), 0),
      /* 10 */ BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),
      /* 11 */ BPF_STMT(BPF_JMP | BPF_JA, 3),
      // IPv6: TCP right after the fixed header.
      /* 12 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),
      /* 13 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, jump_to_drop(13)),
      /* 14 */ BPF_STMT(BPF_LDX | BPF_W | BPF_IMM, 40),
      // Ports.
      /* 15 */ BPF_STMT(BPF_LD | BPF_H | BPF_IND, 0),
      /* 16 */ peer_port ? sock_filter BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, peer_port, 0, jump_to_drop(16))
                         : sock_filter BPF_STMT(BPF_JMP | BPF_JA, 0),
      /* 17 */ BPF_STMT(BPF_LD | BPF_H | BPF_IND, 2),
      /* 18 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, local_port, 0, jump_to_drop(18)),
      /* 19 */ BPF_STMT(BPF_RET | BPF_K, kSnapLen),
      /* 20 */ BPF_STMT(BPF_RET | BPF_K, 0),
  };
  static_assert(std::size(code) == kDrop + 1);
  sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) fail(what + ": attach BPF filter");

  // Asking for stamps on any socket makes the kernel stamp received skbs as they enter the
  // stack; the tap reports that stamp (TP_STATUS_TS_SOFTWARE) or, for an skb that carries a
  // departure time instead, reads the realtime clock itself.
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) fail(what + ": SO_TIMESTAMPNS");
  int version = TPACKET_V2;
  if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version) != 0) fail(what + ": TPACKET_V2");
  tpacket_req req{};
  req.tp_block_size = kBlockSize;
  req.tp_block_nr = kBlocks;
  req.tp_frame_size = kFrameSize;
  req.tp_frame_nr = kBlockSize / kFrameSize * kBlocks;
  if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0) fail(what + ": PACKET_RX_RING");
  ring_.bytes = size_t{kBlockSize} * kBlocks;
  void* base = ::mmap(nullptr, ring_.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) fail(what + ": mmap the ring");
  ring_.base = static_cast<uint8_t*>(base);
  frames_ = req.tp_frame_nr;

  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = 0;  // every interface
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) fail(what + ": bind to all interfaces");
}

void PacketTap::drain() {
  bool losing = false;
  for (;;) {
    auto* h = reinterpret_cast<tpacket2_hdr*>(ring_.base + size_t{next_} * kFrameSize);
    const uint32_t status = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
    if (!(status & TP_STATUS_USER)) break;
    // Frames filled after a drop carry LOSING until the drop is read below: a packet lost
    // before one of them may have carried its bytes first.
    losing |= (status & TP_STATUS_LOSING) != 0;
    TcpSegment seg;
    if (parse_tcp_segment({reinterpret_cast<const uint8_t*>(h) + h->tp_net, h->tp_snaplen}, h->tp_len, &seg)) {
      ++packets_;
      uint64_t ns = uint64_t{h->tp_sec} * 1'000'000'000ull + h->tp_nsec;
      if (!(status & TP_STATUS_TS_SOFTWARE)) ++at_tap_;
      if (status & TP_STATUS_LOSING) ns = 0;
      if (seg.syn) {
        StreamClock& s = streams_[seg.flow];
        s.syn(seg.seq);
        s.segment(seg.seq + 1, seg.payload, ns, drops_ == 0);
      } else if (auto it = streams_.find(seg.flow); it != streams_.end()) {
        it->second.segment(seg.seq, seg.payload, ns, drops_ == 0 && !losing);
      }
    }
    __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    next_ = (next_ + 1) % frames_;
  }
  if (losing) {
    read_drops();
    drops_ = std::max<uint64_t>(drops_, 1);  // LOSING was seen: something was dropped
  }
}

void PacketTap::read_drops() {
  // Reading the statistics resets them, which ends the LOSING marks.
  tpacket_stats st{};
  socklen_t len = sizeof st;
  if (getsockopt(socket_.fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) drops_ += st.tp_drops;
}

TapCounts PacketTap::counts() {
  read_drops();
  return {packets_, drops_, at_tap_};
}

uint64_t PacketTap::stamp(const Flow& flow, uint64_t offset) {
  auto it = streams_.find(flow);
  if (it == streams_.end() || it->second.frontier() <= offset) {
    drain();
    it = streams_.find(flow);
    if (it == streams_.end()) return 0;
  }
  const uint64_t ns = it->second.stamp(offset);
  it->second.release_below(offset + 1);
  return ns;
}

}  // namespace nvqos::wireclock
