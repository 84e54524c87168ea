#include "nvqos/wireclock/wire_clock.h"

#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace nvqos::wireclock {
namespace {

constexpr size_t kCommonHeaderSize = 8;  // NVMe/TCP common header: type, flags, hlen, pdo, plen

// Reported on every socket; the TX flag itself goes with each timed send.
constexpr unsigned kSocketFlags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
                                  SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY;

uint64_t ns_of(const timespec& ts) {
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The software stamp of an SCM_TIMESTAMPING message (ts[0]; ts[2] is the hardware one).
uint64_t software_stamp(const cmsghdr* c) {
  scm_timestamping tss;
  std::memcpy(&tss, CMSG_DATA(c), sizeof tss);
  return ns_of(tss.ts[0]);
}

}  // namespace

LatencyClock parse_latency_clock(std::string_view text) {
  if (text == "app") return LatencyClock::kApp;
  if (text == "kernel") return LatencyClock::kKernel;
  if (text == "wire") return LatencyClock::kWire;
  throw std::invalid_argument("latency clock '" + std::string(text) + "': expected app, kernel or wire");
}

const char* latency_clock_name(LatencyClock c) {
  switch (c) {
    case LatencyClock::kKernel: return "kernel";
    case LatencyClock::kWire: return "wire";
    case LatencyClock::kApp: break;
  }
  return "app";
}

void enable_timestamping(int fd) {
  // OPT_ID keys count from the send queue's position now (snd_una; equal to write_seq
  // because nothing has been sent yet, so OPT_ID_TCP is not needed).
  unsigned flags = kSocketFlags;
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof flags) != 0)
    throw std::system_error(errno, std::generic_category(),
                            "enable kernel timestamps (SO_TIMESTAMPING software RX/TX with OPT_ID)");
}

ssize_t send_stamped(int fd, const iovec* iov, int iovcnt, int flags, bool stamp) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(iovcnt);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint32_t))] = {};
  if (stamp) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SO_TIMESTAMPING;
    c->cmsg_len = CMSG_LEN(sizeof(uint32_t));
    const uint32_t tx = SOF_TIMESTAMPING_TX_SCHED;
    std::memcpy(CMSG_DATA(c), &tx, sizeof tx);
  }
  return sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL | flags);
}

ssize_t recv_stamped(int fd, void* buf, size_t len, uint64_t* rx_ns) {
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(scm_timestamping))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  *rx_ns = 0;
  ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
  if (n <= 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING) *rx_ns = software_stamp(c);
  return n;
}

int read_tx_stamp(int fd, TxStamp* out) {
  msghdr msg{};
  alignas(cmsghdr) char control[512];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return -1;
  uint64_t ns = 0;
  const sock_extended_err* err = nullptr;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING) ns = software_stamp(c);
    else if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
             (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR))
      err = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
  }
  if (!err || err->ee_origin != SO_EE_ORIGIN_TIMESTAMPING || err->ee_info != SCM_TSTAMP_SCHED || ns == 0) return 0;
  *out = {err->ee_data, ns};
  return 1;
}

int later_data_queued(int fd, uint64_t pdu_left) {
  int queued = 0;
  if (ioctl(fd, FIONREAD, &queued) != 0) return -1;
  return static_cast<uint64_t>(queued) > pdu_left ? 1 : 0;
}

size_t PduFramer::want(size_t room) const {
  if (broken_) return room;
  if (header_have_ < kCommonHeaderSize) return std::min(room, kCommonHeaderSize - header_have_);
  return static_cast<size_t>(std::min<uint64_t>(room, pdu_left_));
}

void PduFramer::consumed(std::span<const uint8_t> bytes, uint64_t rx_ns) {
  while (!bytes.empty() && !broken_) {
    if (header_have_ < kCommonHeaderSize) {
      size_t n = std::min(bytes.size(), kCommonHeaderSize - header_have_);
      std::memcpy(header_ + header_have_, bytes.data(), n);
      header_have_ += n;
      offset_ += n;
      bytes = bytes.subspan(n);
      if (header_have_ < kCommonHeaderSize) return;
      pdu_rx_ns_ = rx_ns;
      ++headers_;
      const uint64_t hlen = std::max<uint64_t>(header_[2], kCommonHeaderSize);
      header_last_byte_ = offset_ - kCommonHeaderSize + hlen - 1;
      uint32_t plen = static_cast<uint32_t>(header_[4]) | static_cast<uint32_t>(header_[5]) << 8 |
                      static_cast<uint32_t>(header_[6]) << 16 | static_cast<uint32_t>(header_[7]) << 24;
      if (plen < kCommonHeaderSize) {
        broken_ = true;
        return;
      }
      pdu_left_ = plen - kCommonHeaderSize;
    } else {
      size_t n = static_cast<size_t>(std::min<uint64_t>(bytes.size(), pdu_left_));
      pdu_left_ -= n;
      offset_ += n;
      bytes = bytes.subspan(n);
    }
    if (header_have_ == kCommonHeaderSize && pdu_left_ == 0) header_have_ = 0;
  }
}

}  // namespace nvqos::wireclock
