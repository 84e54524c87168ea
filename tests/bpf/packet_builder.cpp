#include "packet_builder.hpp"

#include <arpa/inet.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace nvqos::testing {
namespace {

void put16(Bytes &out, std::uint16_t v) {
  out.push_back(v >> 8);
  out.push_back(v & 0xff);
}

void put32(Bytes &out, std::uint32_t v) {
  put16(out, v >> 16);
  put16(out, v & 0xffff);
}

void put_addr(Bytes &out, const Addr16 &addr, bool ipv4) {
  out.insert(out.end(), addr.begin() + (ipv4 ? 12 : 0), addr.end());
}

void require_words(std::size_t bytes, const char *what) {
  if (bytes % 4 != 0 || bytes > 40)
    throw std::invalid_argument(std::string(what) + ": need a multiple of 4 up to 40 bytes");
}

}  // namespace

Addr16 parse_addr(std::string_view text) {
  std::string s(text);
  Addr16 out{};
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    out[10] = 0xff;
    out[11] = 0xff;
    std::memcpy(&out[12], &v4, 4);
    return out;
  }
  if (inet_pton(AF_INET6, s.c_str(), out.data()) == 1) return out;
  throw std::invalid_argument("not an IP address: " + s);
}

bool is_v4_mapped(const Addr16 &addr) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(addr.data(), kPrefix, sizeof(kPrefix)) == 0;
}

std::uint32_t ones_sum(const std::uint8_t *p, std::size_t n, std::uint32_t sum) {
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += std::uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) sum += std::uint32_t(p[n - 1]) << 8;
  return sum;
}

std::uint16_t ones_fold(std::uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

PacketBuilder &PacketBuilder::vlan(std::uint16_t vid, std::uint16_t tpid) {
  vlans_.push_back({tpid, vid});
  return *this;
}

PacketBuilder &PacketBuilder::ether_type(std::uint16_t type) {
  ether_type_ = type;
  return *this;
}

PacketBuilder &PacketBuilder::ip(std::string_view src, std::string_view dst) {
  src_ = parse_addr(src);
  dst_ = parse_addr(dst);
  ipv4_ = is_v4_mapped(src_);
  if (ipv4_ != is_v4_mapped(dst_)) throw std::invalid_argument("mixed address families");
  return *this;
}

PacketBuilder &PacketBuilder::ipv4_options(std::size_t bytes) {
  require_words(bytes, "IPv4 options");
  ipv4_options_ = bytes;
  return *this;
}

PacketBuilder &PacketBuilder::ipv4_fragment(std::uint16_t offset, bool more) {
  ipv4_frag_word_ = (offset & 0x1fff) | (more ? 0x2000 : 0);
  return *this;
}

PacketBuilder &PacketBuilder::ipv6_ext(std::uint8_t type, std::size_t bytes) {
  if (bytes < 8 || bytes % 8 != 0 || bytes > 2048)
    throw std::invalid_argument("IPv6 extension header: need a multiple of 8 bytes, 8..2048");
  exts_.push_back({type, bytes, 0});
  return *this;
}

PacketBuilder &PacketBuilder::ipv6_fragment(std::uint16_t offset, bool more) {
  exts_.push_back({kIpv6Fragment, 8, static_cast<std::uint16_t>((offset << 3) | (more ? 1 : 0))});
  return *this;
}

PacketBuilder &PacketBuilder::ip_protocol(std::uint8_t proto) {
  protocol_ = proto;
  return *this;
}

PacketBuilder &PacketBuilder::tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags,
                                  std::uint32_t seq) {
  sport_ = sport;
  dport_ = dport;
  flags_ = flags;
  seq_ = seq;
  return *this;
}

PacketBuilder &PacketBuilder::tcp_options(std::size_t bytes) {
  require_words(bytes, "TCP options");
  tcp_options_ = bytes;
  return *this;
}

PacketBuilder &PacketBuilder::payload(std::size_t bytes) {
  payload_ = bytes;
  payload_data_.reset();
  return *this;
}

PacketBuilder &PacketBuilder::payload(const Bytes &data) {
  payload_ = data.size();
  payload_data_ = data;
  return *this;
}

PacketBuilder &PacketBuilder::raw_ihl(std::uint8_t words) {
  raw_ihl_ = words;
  return *this;
}

PacketBuilder &PacketBuilder::raw_ip_version(std::uint8_t version) {
  raw_version_ = version;
  return *this;
}

PacketBuilder &PacketBuilder::raw_ip_length(std::uint16_t length) {
  raw_ip_length_ = length;
  return *this;
}

PacketBuilder &PacketBuilder::raw_doff(std::uint8_t words) {
  raw_doff_ = words;
  return *this;
}

PacketBuilder &PacketBuilder::ack_seq(std::uint32_t ack) {
  ack_ = ack;
  return *this;
}

PacketBuilder &PacketBuilder::trailer(std::size_t bytes) {
  trailer_ = bytes;
  return *this;
}

std::size_t PacketBuilder::ip_header_length() const {
  if (ipv4_) return 20 + ipv4_options_;
  std::size_t len = 40;
  for (const Ext &ext : exts_) len += ext.bytes;
  return len;
}

Bytes PacketBuilder::build() const {
  Bytes out;
  static constexpr std::uint8_t kDstMac[6] = {0x02, 0, 0, 0, 0, 0x01};
  static constexpr std::uint8_t kSrcMac[6] = {0x02, 0, 0, 0, 0, 0x02};
  out.insert(out.end(), kDstMac, kDstMac + 6);
  out.insert(out.end(), kSrcMac, kSrcMac + 6);
  for (const Vlan &v : vlans_) {
    put16(out, v.tpid);
    put16(out, v.vid & 0x0fff);  // TCI: PCP 0, DEI 0
  }
  put16(out, ether_type_.value_or(ipv4_ ? 0x0800 : 0x86dd));

  const std::size_t l4_len = tcp_header_length() + payload_;
  if (ipv4_) {
    const std::size_t hdr = ip_header_length();
    out.push_back(static_cast<std::uint8_t>((raw_version_.value_or(4) << 4) |
                                            raw_ihl_.value_or(hdr / 4)));
    out.push_back(0);  // DSCP/ECN
    put16(out, raw_ip_length_.value_or(static_cast<std::uint16_t>(hdr + l4_len)));
    put16(out, 0x1234);  // identification
    put16(out, ipv4_frag_word_);
    out.push_back(64);  // TTL
    out.push_back(protocol_);
    put16(out, 0);  // checksum
    put_addr(out, src_, true);
    put_addr(out, dst_, true);
    out.insert(out.end(), ipv4_options_, 0x01);  // NOP
  } else {
    std::size_t ext_len = ip_header_length() - 40;
    put32(out, static_cast<std::uint32_t>(raw_version_.value_or(6)) << 28);
    put16(out, raw_ip_length_.value_or(static_cast<std::uint16_t>(ext_len + l4_len)));
    out.push_back(exts_.empty() ? protocol_ : exts_.front().type);
    out.push_back(64);  // hop limit
    put_addr(out, src_, false);
    put_addr(out, dst_, false);
    for (std::size_t i = 0; i < exts_.size(); ++i) {
      const Ext &ext = exts_[i];
      out.push_back(i + 1 < exts_.size() ? exts_[i + 1].type : protocol_);
      if (ext.type == kIpv6Fragment) {
        out.push_back(0);
        put16(out, ext.frag_word);
        put32(out, 0xabcd);
      } else {
        out.push_back(static_cast<std::uint8_t>(ext.bytes / 8 - 1));
        out.insert(out.end(), ext.bytes - 2, 0);  // Pad1 options
      }
    }
  }

  put16(out, sport_);
  put16(out, dport_);
  put32(out, seq_);
  put32(out, ack_);
  out.push_back(static_cast<std::uint8_t>(raw_doff_.value_or(tcp_header_length() / 4) << 4));
  out.push_back(flags_);
  put16(out, 65535);  // window
  put16(out, 0);      // checksum
  put16(out, 0);      // urgent pointer
  out.insert(out.end(), tcp_options_, 0x01);  // NOP
  if (payload_data_)
    out.insert(out.end(), payload_data_->begin(), payload_data_->end());
  else
    for (std::size_t i = 0; i < payload_; ++i) out.push_back(static_cast<std::uint8_t>(i));
  out.insert(out.end(), trailer_, 0);
  return out;
}

}  // namespace nvqos::testing
