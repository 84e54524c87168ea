// NVMe/TCP PDUs (NVMe-oF TCP Transport Binding, TP 8000 / NVMe/TCP Transport Spec 1.0).
//
// Every PDU = common header (8 B) + PDU specific header, [HDGST 4 B], [padding up to PDO],
// [data], [DDGST 4 B]. The structs below hold the decoded fields; encode_header() produces the
// bytes up to PDO (header, digest, padding) so a sender can scatter/gather-write header, data and
// data digest without copying data, and encode_pdu() produces a whole PDU for simple callers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "nvqos/nvmf/nvme.h"

namespace nvqos::nvmf {

enum class PduType : std::uint8_t {
  ic_req = 0x00,
  ic_resp = 0x01,
  h2c_term_req = 0x02,
  c2h_term_req = 0x03,
  capsule_cmd = 0x04,
  capsule_resp = 0x05,
  h2c_data = 0x06,
  c2h_data = 0x07,
  r2t = 0x09,
};
std::string_view pdu_type_name(PduType type);  // "ICReq", "CapsuleCmd", ...

namespace pdu_flag {
inline constexpr std::uint8_t kHdgst = 0x01;    // HDGSTF: header digest present
inline constexpr std::uint8_t kDdgst = 0x02;    // DDGSTF: data digest present
inline constexpr std::uint8_t kLastPdu = 0x04;  // H2CData/C2HData: last PDU of this transfer
inline constexpr std::uint8_t kSuccess = 0x08;  // C2HData: command succeeded, no CapsuleResp follows
}  // namespace pdu_flag

inline constexpr std::size_t kCommonHeaderSize = 8;
inline constexpr std::size_t kDigestSize = 4;
// HLEN of each PDU type (common header + PDU specific header).
inline constexpr std::uint8_t kIcReqHlen = 128;
inline constexpr std::uint8_t kIcRespHlen = 128;
inline constexpr std::uint8_t kTermReqHlen = 24;
inline constexpr std::uint8_t kCapsuleCmdHlen = 72;  // 8 + 64-byte SQE
inline constexpr std::uint8_t kCapsuleRespHlen = 24; // 8 + 16-byte CQE
inline constexpr std::uint8_t kDataPduHlen = 24;     // H2CData, C2HData
inline constexpr std::uint8_t kR2tHlen = 24;
// A TermReq carries (up to) the header of the PDU in error.
inline constexpr std::size_t kMaxTermReqData = 152;
// Header + header digest + padding to PDO never exceed this (PDO is one byte).
inline constexpr std::size_t kMaxHeaderRegion = 256;
// ICResp MAXH2CDATA: the spec's minimum.
inline constexpr std::uint32_t kMinMaxH2CData = 4096;
// Admin queue in-capsule data size fixed by NVMe-oF (Connect data travels in the capsule).
inline constexpr std::uint32_t kAdminInCapsuleDataSize = 8192;

// Common header (bytes 0..7).
struct CommonHeader {
  PduType type = PduType::ic_req;
  std::uint8_t flags = 0;
  std::uint8_t hlen = 0;
  std::uint8_t pdo = 0;
  std::uint32_t plen = 0;

  void encode(std::span<std::uint8_t, kCommonHeaderSize> out) const;
  static CommonHeader decode(std::span<const std::uint8_t, kCommonHeaderSize> in);
  friend bool operator==(const CommonHeader&, const CommonHeader&) = default;
};

// Fatal Error Status carried by H2CTermReq/C2HTermReq.
enum class FatalErrorStatus : std::uint16_t {
  invalid_header_field = 0x01,   // FEI = byte offset of the bad field in the PDU header
  pdu_sequence_error = 0x02,
  header_digest_error = 0x03,
  data_out_of_range = 0x04,      // H2CData/C2HData outside the command's data
  data_limit_exceeded = 0x05,    // "R2T Limit Exceeded" in TCP transport 1.0
  unsupported_parameter = 0x06,  // FEI = byte offset of the unsupported parameter
};
std::string_view fatal_error_name(FatalErrorStatus fes);

// ---- PDU bodies ---------------------------------------------------------------------------------
inline constexpr std::uint16_t kPfv10 = 0;  // PDU format version 1.0

struct IcReq {
  std::uint16_t pfv = kPfv10;
  std::uint8_t hpda = 0;  // host PDU data alignment, 0's based dwords (0..31)
  bool hdgst = false;     // host asks for header digests
  bool ddgst = false;     // host asks for data digests
  std::uint32_t maxr2t = 0;  // max outstanding R2Ts per command, 0's based
  friend bool operator==(const IcReq&, const IcReq&) = default;
};

struct IcResp {
  std::uint16_t pfv = kPfv10;
  std::uint8_t cpda = 0;  // controller PDU data alignment, 0's based dwords (0..31)
  bool hdgst = false;     // header digests enabled
  bool ddgst = false;     // data digests enabled
  std::uint32_t maxh2cdata = 131072;  // max data bytes in one H2CData PDU (>= 4096, dword multiple)
  friend bool operator==(const IcResp&, const IcResp&) = default;
};

struct TermReq {
  FatalErrorStatus fes = FatalErrorStatus::invalid_header_field;
  std::uint32_t fei = 0;                      // field error information
  std::span<const std::uint8_t> pdu_header;  // header of the PDU in error (<= 152 bytes sent)
};
struct H2CTermReq : TermReq {};
struct C2HTermReq : TermReq {};

struct CapsuleCmd {
  Sqe sqe;
  std::span<const std::uint8_t> data;  // in-capsule data (may be empty)
};

struct CapsuleResp {
  Cqe cqe;
};

struct H2CData {
  std::uint16_t cccid = 0;  // command capsule CID
  std::uint16_t ttag = 0;   // transfer tag from the R2T
  std::uint32_t datao = 0;  // offset in the command's data
  std::uint32_t datal = 0;  // data bytes in this PDU
  bool last = false;
  std::span<const std::uint8_t> data;  // datal bytes (encode_header() needs only datal)
};

struct C2HData {
  std::uint16_t cccid = 0;
  std::uint32_t datao = 0;
  std::uint32_t datal = 0;
  bool last = false;
  bool success = false;  // requires last; the host then sees no CapsuleResp
  std::span<const std::uint8_t> data;
};

struct R2T {
  std::uint16_t cccid = 0;
  std::uint16_t ttag = 0;
  std::uint32_t r2to = 0;  // offset of the requested data
  std::uint32_t r2tl = 0;  // length of the requested data
  friend bool operator==(const R2T&, const R2T&) = default;
};

using Pdu = std::variant<IcReq, IcResp, H2CTermReq, C2HTermReq, CapsuleCmd, CapsuleResp, H2CData,
                         C2HData, R2T>;
PduType pdu_type(const Pdu& pdu);

// ---- Encoding -----------------------------------------------------------------------------------
// What the connection negotiated, seen from the sender.
struct LinkParams {
  bool header_digest = false;
  bool data_digest = false;
  std::uint8_t peer_pda = 0;  // the RECEIVER's PDU data alignment (HPDA when sending C2H, CPDA H2C)
};

// Bytes of one PDU up to its data: header, HDGST, padding to PDO.
struct EncodedHeader {
  std::array<std::uint8_t, kMaxHeaderRegion> bytes{};
  std::uint16_t size = 0;      // bytes to send before the data
  std::uint32_t plen = 0;      // whole PDU length
  std::uint32_t data_len = 0;  // data bytes that must follow
  bool data_digest = false;    // a 4-byte DDGST (crc32c of the data, little-endian) must follow them

  std::span<const std::uint8_t> span() const { return {bytes.data(), size}; }
};

// IC PDUs and TermReqs never carry digests whatever `link` says. CapsuleCmd data length comes
// from .data, H2CData/C2HData from .datal, TermReq from .pdu_header (truncated to 152 bytes).
EncodedHeader encode_header(const Pdu& pdu, const LinkParams& link = {});
// Appends the whole PDU (header, data, digests) to `out`.
void encode_pdu(const Pdu& pdu, const LinkParams& link, std::vector<std::uint8_t>& out);
std::vector<std::uint8_t> encode_pdu(const Pdu& pdu, const LinkParams& link = {});
// DDGST bytes for `data` (little-endian CRC32C).
std::array<std::uint8_t, kDigestSize> data_digest_bytes(std::span<const std::uint8_t> data);

// Offsets of common header fields (FEI of Invalid PDU Header Field).
inline constexpr std::uint32_t kFieldOffsetType = 0;
inline constexpr std::uint32_t kFieldOffsetFlags = 1;
inline constexpr std::uint32_t kFieldOffsetHlen = 2;
inline constexpr std::uint32_t kFieldOffsetPdo = 3;
inline constexpr std::uint32_t kFieldOffsetPlen = 4;

}  // namespace nvqos::nvmf
