// Crafted frames for the BPF program tests and benchmarks: Ethernet, VLAN
// tags, IPv4 (options) or IPv6 (extension headers), TCP (options, flags),
// payload; lengths filled in unless a test overrides them to build a
// malformed frame. Checksums stay zero: the data path does not check them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace nvqos::testing {

using Bytes = std::vector<std::uint8_t>;
using Addr16 = std::array<std::uint8_t, 16>;  // network order, v4-mapped for IPv4

// The one's-complement sum of big-endian 16-bit words (IP and TCP checksums), unfolded.
std::uint32_t ones_sum(const std::uint8_t *p, std::size_t n, std::uint32_t sum = 0);
// The sum folded to 16 bits; a region holding its own valid checksum folds to 0xffff.
std::uint16_t ones_fold(std::uint32_t sum);

// Parses "10.0.0.1" (returned v4-mapped) or "fd00::1"; throws on bad input.
Addr16 parse_addr(std::string_view text);
bool is_v4_mapped(const Addr16 &addr);

inline constexpr std::uint16_t kEtherTypeVlan = 0x8100;
inline constexpr std::uint16_t kEtherTypeQinQ = 0x88a8;
inline constexpr std::uint16_t kEtherTypeArp = 0x0806;

inline constexpr std::uint8_t kIpProtoTcp = 6;
inline constexpr std::uint8_t kIpProtoUdp = 17;
inline constexpr std::uint8_t kIpv6HopByHop = 0;
inline constexpr std::uint8_t kIpv6Routing = 43;
inline constexpr std::uint8_t kIpv6Fragment = 44;
inline constexpr std::uint8_t kIpv6DestOptions = 60;

inline constexpr std::uint8_t kTcpFin = 0x01;
inline constexpr std::uint8_t kTcpSyn = 0x02;
inline constexpr std::uint8_t kTcpRst = 0x04;
inline constexpr std::uint8_t kTcpPsh = 0x08;
inline constexpr std::uint8_t kTcpAck = 0x10;

class PacketBuilder {
 public:
  PacketBuilder &vlan(std::uint16_t vid, std::uint16_t tpid = kEtherTypeVlan);
  PacketBuilder &ether_type(std::uint16_t type);  // replaces the IP ethertype

  // The address family follows from the text ("10.0.0.1" or "fd00::1").
  PacketBuilder &ip(std::string_view src, std::string_view dst);
  PacketBuilder &ipv4_options(std::size_t bytes);  // multiple of 4, up to 40
  PacketBuilder &ipv4_fragment(std::uint16_t offset_8byte_units, bool more_fragments);
  PacketBuilder &ipv6_ext(std::uint8_t type, std::size_t bytes = 8);  // hbh/routing/dstopts
  PacketBuilder &ipv6_fragment(std::uint16_t offset_8byte_units, bool more_fragments);
  PacketBuilder &ip_protocol(std::uint8_t proto);  // the L4 bytes stay a TCP header

  PacketBuilder &tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags = kTcpAck,
                     std::uint32_t seq = 1);
  PacketBuilder &tcp_options(std::size_t bytes);  // multiple of 4, up to 40
  PacketBuilder &ack_seq(std::uint32_t ack);      // the acknowledgment number (default 0)
  PacketBuilder &payload(std::size_t bytes);  // bytes 0, 1, 2, ... (mod 256)
  PacketBuilder &payload(const Bytes &data);   // these bytes

  // Malformations: raw header field values instead of the computed ones.
  PacketBuilder &raw_ihl(std::uint8_t words);
  PacketBuilder &raw_ip_version(std::uint8_t version);
  PacketBuilder &raw_ip_length(std::uint16_t length);  // IPv4 tot_len / IPv6 payload_len
  PacketBuilder &raw_doff(std::uint8_t words);
  PacketBuilder &trailer(std::size_t bytes);  // bytes after the IP packet (Ethernet padding)

  Bytes build() const;

  std::size_t l3_offset() const { return 14 + 4 * vlans_.size(); }
  std::size_t ip_header_length() const;   // incl. options / extension headers
  std::size_t tcp_header_length() const { return 20 + tcp_options_; }
  std::size_t ip_length() const { return ip_header_length() + tcp_header_length() + payload_; }
  std::size_t payload_length() const { return payload_; }
  const Addr16 &src() const { return src_; }
  const Addr16 &dst() const { return dst_; }
  bool ipv4() const { return ipv4_; }

 private:
  struct Vlan {
    std::uint16_t tpid;
    std::uint16_t vid;
  };
  struct Ext {
    std::uint8_t type;
    std::size_t bytes;
    std::uint16_t frag_word;  // fragment header: offset << 3 | M
  };

  std::vector<Vlan> vlans_;
  std::optional<std::uint16_t> ether_type_;
  bool ipv4_ = true;
  Addr16 src_{};
  Addr16 dst_{};
  std::size_t ipv4_options_ = 0;
  std::uint16_t ipv4_frag_word_ = 0x4000;  // DF
  std::vector<Ext> exts_;
  std::uint8_t protocol_ = kIpProtoTcp;
  std::uint16_t sport_ = 0;
  std::uint16_t dport_ = 0;
  std::uint8_t flags_ = kTcpAck;
  std::uint32_t seq_ = 1;
  std::uint32_t ack_ = 0;
  std::size_t tcp_options_ = 0;
  std::size_t payload_ = 0;
  std::optional<Bytes> payload_data_;
  std::size_t trailer_ = 0;
  std::optional<std::uint8_t> raw_ihl_;
  std::optional<std::uint8_t> raw_version_;
  std::optional<std::uint16_t> raw_ip_length_;
  std::optional<std::uint8_t> raw_doff_;
};

}  // namespace nvqos::testing
