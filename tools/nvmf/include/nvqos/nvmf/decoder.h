// Incremental NVMe/TCP stream decoder: takes bytes as they arrive, in any fragmentation, and yields
// whole PDUs or one precise error naming the fault and the TermReq it calls for.
//
//   StreamDecoder dec(Side::controller, {.max_data = 131072});
//   std::span<const std::uint8_t> in = bytes_read;
//   while (!in.empty()) {
//     auto r = dec.feed(in);
//     in = in.subspan(r.consumed);
//     if (r.state == DecodeState::pdu_ready) handle(dec.pdu());    // valid until the next feed()
//     else if (r.state == DecodeState::failed) send_term_req(dec.error()), close();
//   }
//
// The decoder validates what a receiver can judge from the PDU alone: direction (a controller
// accepts only host-to-controller PDUs), ICReq/ICResp first and only once, HLEN per type, PDO against
// HLEN/digest/alignment, PLEN against the type and the data limits, digest flags against the
// negotiated digests, the header digest, and the ICReq/ICResp parameters. Whether an H2CData
// matches an R2T, or a C2HData a command, is the session's to judge (FatalErrorStatus
// data_out_of_range / data_limit_exceeded, see make_term_req()).
//
// Memory: one buffer of kMaxHeaderRegion + max_data + 4 bytes, allocated at construction and when
// configure() raises max_data; feed() never allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nvqos/nvmf/pdu.h"

namespace nvqos::nvmf {

// The side this decoder runs on; it decodes what the OTHER side sends.
enum class Side : std::uint8_t {
  host,        // decodes ICResp, C2HTermReq, CapsuleResp, C2HData, R2T
  controller,  // decodes ICReq, H2CTermReq, CapsuleCmd, H2CData
};

struct DecoderConfig {
  bool header_digest = false;  // negotiated HDGST: every PDU but IC/TermReq must carry one
  bool data_digest = false;    // negotiated DDGST: every PDU with data but TermReq must carry one
  std::uint8_t local_pda = 0;  // our PDA (CPDA on a controller, HPDA on a host), 0's based dwords
  std::uint32_t max_data = kAdminInCapsuleDataSize;  // most data bytes accepted in one PDU
};

enum class DecodeState : std::uint8_t { need_more, pdu_ready, failed };

enum class DecodeFault : std::uint8_t {
  unexpected_type,         // unknown PDU type or one this side never receives
  out_of_sequence,         // IC PDU missing before others, or repeated
  bad_flags,               // digest flags disagree with negotiation, or flags invalid for the type
  bad_hlen,                // HLEN not the type's fixed size
  bad_pdo,                 // PDO inside the header, past PLEN, misaligned, or set without data
  bad_plen,                // PLEN inconsistent with HLEN/PDO/DATAL/digests
  bad_field,               // a PDU-specific field is invalid (FEI names it)
  header_digest_mismatch,  // HDGST does not match the header
  data_limit_exceeded,     // more data in one PDU than this connection accepts
  unsupported_parameter,   // e.g. ICReq PFV other than 1.0
};
std::string_view decode_fault_name(DecodeFault fault);

struct DecodeError {
  DecodeFault fault = DecodeFault::bad_field;
  FatalErrorStatus fes = FatalErrorStatus::invalid_header_field;
  std::uint32_t fei = 0;  // byte offset of the bad field for invalid_header_field/unsupported_parameter
  std::string detail;     // "H2CData PLEN 4124 != PDO 24 + DATAL 4096 + DDGST 4"
};

struct FeedResult {
  std::size_t consumed = 0;
  DecodeState state = DecodeState::need_more;
};

class StreamDecoder {
 public:
  explicit StreamDecoder(Side side, DecoderConfig config = {});

  // Takes effect from the next PDU (call it right after the IC exchange).
  void configure(const DecoderConfig& config);
  const DecoderConfig& config() const { return config_; }

  // Consumes bytes until one PDU is complete, an error is found, or `bytes` is exhausted.
  // After pdu_ready, the next feed() starts a new PDU. After failed, feed() consumes nothing.
  FeedResult feed(std::span<const std::uint8_t> bytes);
  // Bytes still missing before the decoder can make its next decision (8 right after a PDU, 0 once
  // failed): a lower bound for the next read, e.g. asio::transfer_at_least(bytes_needed()).
  std::size_t bytes_needed() const;
  DecodeState state() const { return state_; }

  // The PDU just completed (state pdu_ready). Spans inside point into the decoder's buffer.
  const Pdu& pdu() const { return pdu_; }
  const CommonHeader& header() const { return header_; }
  // False when DDGST was present and did not match: per the spec this fails only the command
  // (Transient Transport Error), not the connection.
  bool data_digest_ok() const { return data_digest_ok_; }

  const DecodeError& error() const { return error_; }
  // The header bytes of the PDU in error (what a TermReq echoes back).
  std::span<const std::uint8_t> error_header() const;

  // Bytes and PDUs decoded so far (for statistics).
  std::uint64_t pdus_decoded() const { return pdus_decoded_; }

 private:
  enum class Stage : std::uint8_t { common_header, rest_of_header, data };

  bool fail(DecodeFault fault, std::uint32_t fei, std::string detail);
  bool check_common_header();
  bool check_header();
  bool finish_pdu();
  std::size_t stage_target() const;
  void reset_for_next_pdu();

  Side side_;
  DecoderConfig config_;
  DecoderConfig pending_config_;
  bool ic_done_ = false;
  Stage stage_ = Stage::common_header;
  DecodeState state_ = DecodeState::need_more;
  std::vector<std::uint8_t> buffer_;
  std::size_t filled_ = 0;
  std::size_t header_region_ = 0;  // HLEN + HDGST + padding = where data starts
  std::size_t header_end_ = 0;     // HLEN + HDGST
  std::size_t data_len_ = 0;
  bool has_ddgst_ = false;
  CommonHeader header_;
  Pdu pdu_;
  bool data_digest_ok_ = true;
  DecodeError error_;
  std::uint64_t pdus_decoded_ = 0;
};

// Builds the TermReq a side sends for `error`: H2CTermReq from a host, C2HTermReq from a controller.
// `pdu_header` must outlive the returned Pdu (pass decoder.error_header()).
Pdu make_term_req(Side sender, FatalErrorStatus fes, std::uint32_t fei,
                  std::span<const std::uint8_t> pdu_header);
Pdu make_term_req(Side sender, const DecodeError& error, std::span<const std::uint8_t> pdu_header);

}  // namespace nvqos::nvmf
