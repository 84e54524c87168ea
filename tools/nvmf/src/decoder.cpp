#include "nvqos/nvmf/decoder.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "bytes.h"
#include "nvqos/nvmf/crc32c.h"

namespace nvqos::nvmf {

using namespace wire;

std::string_view decode_fault_name(DecodeFault fault) {
  switch (fault) {
    case DecodeFault::unexpected_type: return "unexpected PDU type";
    case DecodeFault::out_of_sequence: return "PDU out of sequence";
    case DecodeFault::bad_flags: return "invalid flags";
    case DecodeFault::bad_hlen: return "invalid HLEN";
    case DecodeFault::bad_pdo: return "invalid PDO";
    case DecodeFault::bad_plen: return "invalid PLEN";
    case DecodeFault::bad_field: return "invalid header field";
    case DecodeFault::header_digest_mismatch: return "header digest mismatch";
    case DecodeFault::data_limit_exceeded: return "data limit exceeded";
    case DecodeFault::unsupported_parameter: return "unsupported parameter";
  }
  return "unknown fault";
}

namespace {

FatalErrorStatus fes_for(DecodeFault fault) {
  switch (fault) {
    case DecodeFault::out_of_sequence: return FatalErrorStatus::pdu_sequence_error;
    case DecodeFault::header_digest_mismatch: return FatalErrorStatus::header_digest_error;
    case DecodeFault::data_limit_exceeded: return FatalErrorStatus::data_limit_exceeded;
    case DecodeFault::unsupported_parameter: return FatalErrorStatus::unsupported_parameter;
    default: return FatalErrorStatus::invalid_header_field;
  }
}

bool known_type(std::uint8_t t) { return t <= 0x07 || t == 0x09; }

bool received_by(Side side, PduType t) {
  switch (t) {
    case PduType::ic_req:
    case PduType::h2c_term_req:
    case PduType::capsule_cmd:
    case PduType::h2c_data: return side == Side::controller;
    case PduType::ic_resp:
    case PduType::c2h_term_req:
    case PduType::capsule_resp:
    case PduType::c2h_data:
    case PduType::r2t: return side == Side::host;
  }
  return false;
}

std::uint8_t fixed_hlen(PduType t) {
  switch (t) {
    case PduType::ic_req: return kIcReqHlen;
    case PduType::ic_resp: return kIcRespHlen;
    case PduType::h2c_term_req:
    case PduType::c2h_term_req: return kTermReqHlen;
    case PduType::capsule_cmd: return kCapsuleCmdHlen;
    case PduType::capsule_resp: return kCapsuleRespHlen;
    case PduType::h2c_data:
    case PduType::c2h_data: return kDataPduHlen;
    case PduType::r2t: return kR2tHlen;
  }
  return 0;
}

bool is_ic(PduType t) { return t == PduType::ic_req || t == PduType::ic_resp; }
bool is_term(PduType t) { return t == PduType::h2c_term_req || t == PduType::c2h_term_req; }

std::string str(std::string_view s) { return std::string(s); }

}  // namespace

StreamDecoder::StreamDecoder(Side side, DecoderConfig config)
    : side_(side), config_(config), pending_config_(config) {
  buffer_.resize(kMaxHeaderRegion + config_.max_data + kDigestSize);
}

void StreamDecoder::configure(const DecoderConfig& config) {
  pending_config_ = config;
  if (stage_ == Stage::common_header && filled_ == 0) config_ = config;
  if (state_ != DecodeState::pdu_ready && buffer_.size() < kMaxHeaderRegion + config_.max_data + kDigestSize)
    buffer_.resize(kMaxHeaderRegion + config_.max_data + kDigestSize);
}

void StreamDecoder::reset_for_next_pdu() {
  stage_ = Stage::common_header;
  state_ = DecodeState::need_more;
  filled_ = 0;
  header_region_ = 0;
  header_end_ = 0;
  data_len_ = 0;
  has_ddgst_ = false;
  data_digest_ok_ = true;
  config_ = pending_config_;
  if (buffer_.size() < kMaxHeaderRegion + config_.max_data + kDigestSize)
    buffer_.resize(kMaxHeaderRegion + config_.max_data + kDigestSize);
}

std::size_t StreamDecoder::stage_target() const {
  switch (stage_) {
    case Stage::common_header: return kCommonHeaderSize;
    case Stage::rest_of_header: return header_region_;
    case Stage::data: return header_region_ + data_len_ + (has_ddgst_ ? kDigestSize : 0);
  }
  return kCommonHeaderSize;
}

std::size_t StreamDecoder::bytes_needed() const {
  if (state_ == DecodeState::failed) return 0;
  if (state_ == DecodeState::pdu_ready) return kCommonHeaderSize;
  return stage_target() - filled_;
}

std::span<const std::uint8_t> StreamDecoder::error_header() const {
  std::size_t n = filled_;
  if (header_.hlen >= kCommonHeaderSize && n > header_.hlen) n = header_.hlen;
  return {buffer_.data(), std::min(n, kMaxTermReqData)};
}

bool StreamDecoder::fail(DecodeFault fault, std::uint32_t fei, std::string detail) {
  error_.fault = fault;
  error_.fes = fes_for(fault);
  error_.fei = fei;
  error_.detail = std::move(detail);
  state_ = DecodeState::failed;
  return false;
}

FeedResult StreamDecoder::feed(std::span<const std::uint8_t> bytes) {
  if (state_ == DecodeState::failed) return {0, state_};
  if (state_ == DecodeState::pdu_ready) reset_for_next_pdu();
  if (stage_ == Stage::common_header && filled_ == 0) config_ = pending_config_;
  std::size_t consumed = 0;
  for (;;) {
    std::size_t target = stage_target();
    std::size_t n = std::min(target - filled_, bytes.size() - consumed);
    if (n > 0) {
      std::memcpy(buffer_.data() + filled_, bytes.data() + consumed, n);
      filled_ += n;
      consumed += n;
    }
    if (filled_ < target) return {consumed, state_};
    switch (stage_) {
      case Stage::common_header:
        if (!check_common_header()) return {consumed, state_};
        stage_ = Stage::rest_of_header;
        break;
      case Stage::rest_of_header:
        if (!check_header()) return {consumed, state_};
        if (data_len_ == 0) {
          finish_pdu();
          return {consumed, state_};
        }
        stage_ = Stage::data;
        break;
      case Stage::data:
        finish_pdu();
        return {consumed, state_};
    }
  }
}

bool StreamDecoder::check_common_header() {
  const std::uint8_t* p = buffer_.data();
  if (!known_type(p[0]))
    return fail(DecodeFault::unexpected_type, kFieldOffsetType, "unknown PDU type " + std::to_string(p[0]));
  header_ = CommonHeader::decode(std::span<const std::uint8_t, kCommonHeaderSize>(p, kCommonHeaderSize));
  const PduType type = header_.type;
  const std::string name = str(pdu_type_name(type));
  if (!received_by(side_, type))
    return fail(DecodeFault::unexpected_type, kFieldOffsetType,
                name + " is never sent to a " + (side_ == Side::host ? "host" : "controller"));
  if (!is_term(type) && is_ic(type) == ic_done_)
    return fail(DecodeFault::out_of_sequence, 0,
                ic_done_ ? name + " after the connection was initialized"
                         : name + " before connection initialization (ICReq/ICResp)");
  if (header_.hlen != fixed_hlen(type))
    return fail(DecodeFault::bad_hlen, kFieldOffsetHlen,
                name + " HLEN " + std::to_string(header_.hlen) + " != " + std::to_string(fixed_hlen(type)));

  const std::uint32_t plen = header_.plen;
  const std::uint8_t flags = header_.flags;
  if (is_ic(type) || is_term(type)) {
    // No digests exist before negotiation, and a TermReq never carries them.
    if (is_ic(type) && (flags & (pdu_flag::kHdgst | pdu_flag::kDdgst)))
      return fail(DecodeFault::bad_flags, kFieldOffsetFlags, name + " with digest flags set");
    if (is_ic(type)) {
      if (plen != header_.hlen)
        return fail(DecodeFault::bad_plen, kFieldOffsetPlen, name + " PLEN " + std::to_string(plen) + " != 128");
      if (header_.pdo != 0) return fail(DecodeFault::bad_pdo, kFieldOffsetPdo, name + " PDO must be 0");
      header_end_ = header_region_ = header_.hlen;
      data_len_ = 0;
      return true;
    }
    if (plen < kTermReqHlen || plen > kTermReqHlen + kMaxTermReqData)
      return fail(DecodeFault::bad_plen, kFieldOffsetPlen, name + " PLEN " + std::to_string(plen) + " outside 24..176");
    header_end_ = header_region_ = kTermReqHlen;
    data_len_ = plen - kTermReqHlen;
    return true;
  }

  const bool hdgst = config_.header_digest;
  if (((flags & pdu_flag::kHdgst) != 0) != hdgst)
    return fail(DecodeFault::bad_flags, kFieldOffsetFlags,
                name + (hdgst ? " without HDGSTF although header digests were negotiated"
                              : " with HDGSTF although header digests were not negotiated"));
  if ((flags & pdu_flag::kSuccess) &&
      (type != PduType::c2h_data || !(flags & pdu_flag::kLastPdu)))
    return fail(DecodeFault::bad_flags, kFieldOffsetFlags,
                name + " with SUCCESS flag" + (type == PduType::c2h_data ? " but without LAST_PDU" : ""));
  header_end_ = header_.hlen + (hdgst ? kDigestSize : 0);

  const bool may_have_data = type == PduType::capsule_cmd || type == PduType::h2c_data || type == PduType::c2h_data;
  const bool has_data = may_have_data && (type != PduType::capsule_cmd || plen > header_end_);
  const bool ddgst = config_.data_digest && has_data;
  if (((flags & pdu_flag::kDdgst) != 0) != ddgst)
    return fail(DecodeFault::bad_flags, kFieldOffsetFlags,
                name + (ddgst ? " without DDGSTF although data digests were negotiated"
                              : " with DDGSTF on a PDU that carries no digested data"));
  has_ddgst_ = ddgst;

  if (!has_data) {
    if (plen != header_end_)
      return fail(DecodeFault::bad_plen, kFieldOffsetPlen,
                  name + " PLEN " + std::to_string(plen) + " != " + std::to_string(header_end_));
    if (header_.pdo != 0) return fail(DecodeFault::bad_pdo, kFieldOffsetPdo, name + " without data has PDO != 0");
    header_region_ = header_end_;
    data_len_ = 0;
    return true;
  }

  const std::size_t align = (static_cast<std::size_t>(config_.local_pda & 0x1f) + 1) * 4;
  const std::size_t pdo = header_.pdo;
  if (pdo < header_end_)
    return fail(DecodeFault::bad_pdo, kFieldOffsetPdo,
                name + " PDO " + std::to_string(pdo) + " inside the header (" + std::to_string(header_end_) + " bytes)");
  if (pdo % align != 0)
    return fail(DecodeFault::bad_pdo, kFieldOffsetPdo,
                name + " PDO " + std::to_string(pdo) + " not a multiple of the " + std::to_string(align) + "-byte PDA");
  const std::size_t tail = ddgst ? kDigestSize : 0;
  if (plen <= pdo + tail)
    return fail(DecodeFault::bad_plen, kFieldOffsetPlen,
                name + " PLEN " + std::to_string(plen) + " leaves no data after PDO " + std::to_string(pdo));
  const std::size_t data_len = plen - pdo - tail;
  if (data_len > config_.max_data)
    return fail(DecodeFault::data_limit_exceeded, 0,
                name + " carries " + std::to_string(data_len) + " data bytes, limit " + std::to_string(config_.max_data));
  header_region_ = pdo;
  data_len_ = data_len;
  return true;
}

bool StreamDecoder::check_header() {
  const std::uint8_t* p = buffer_.data();
  const PduType type = header_.type;
  const std::string name = str(pdu_type_name(type));
  if (header_end_ > header_.hlen) {
    std::uint32_t expected = crc32c({p, header_.hlen});
    std::uint32_t got = get32(p + header_.hlen);
    if (expected != got) return fail(DecodeFault::header_digest_mismatch, 0, name + " header digest mismatch");
  }
  switch (type) {
    case PduType::ic_req:
    case PduType::ic_resp: {
      std::uint16_t pfv = get16(p + 8);
      if (pfv != kPfv10)
        return fail(DecodeFault::unsupported_parameter, 8, name + " PFV " + std::to_string(pfv) + " (only 1.0 = 0)");
      if (p[10] > 31)
        return fail(DecodeFault::bad_field, 10,
                    name + (type == PduType::ic_req ? " HPDA " : " CPDA ") + std::to_string(p[10]) + " > 31");
      if (type == PduType::ic_resp) {
        std::uint32_t maxh2c = get32(p + 12);
        if (maxh2c < kMinMaxH2CData || maxh2c % 4 != 0)
          return fail(DecodeFault::bad_field, 12, "ICResp MAXH2CDATA " + std::to_string(maxh2c) +
                                                      " (must be >= 4096 and a multiple of 4)");
      }
      break;
    }
    case PduType::h2c_data:
    case PduType::c2h_data: {
      std::uint32_t datal = get32(p + 16);
      if (datal != data_len_)
        return fail(DecodeFault::bad_plen, kFieldOffsetPlen,
                    name + " PLEN " + std::to_string(header_.plen) + " != PDO " + std::to_string(header_.pdo) +
                        " + DATAL " + std::to_string(datal) + (has_ddgst_ ? " + DDGST 4" : ""));
      break;
    }
    default: break;
  }
  return true;
}

bool StreamDecoder::finish_pdu() {
  const std::uint8_t* p = buffer_.data();
  std::span<const std::uint8_t> data(p + header_region_, data_len_);
  if (has_ddgst_) data_digest_ok_ = crc32c(data) == get32(p + header_region_ + data_len_);
  const std::uint8_t flags = header_.flags;
  switch (header_.type) {
    case PduType::ic_req: {
      IcReq r;
      r.pfv = get16(p + 8);
      r.hpda = p[10];
      r.hdgst = (p[11] & 1) != 0;
      r.ddgst = (p[11] & 2) != 0;
      r.maxr2t = get32(p + 12);
      pdu_ = r;
      break;
    }
    case PduType::ic_resp: {
      IcResp r;
      r.pfv = get16(p + 8);
      r.cpda = p[10];
      r.hdgst = (p[11] & 1) != 0;
      r.ddgst = (p[11] & 2) != 0;
      r.maxh2cdata = get32(p + 12);
      pdu_ = r;
      break;
    }
    case PduType::h2c_term_req:
    case PduType::c2h_term_req: {
      TermReq t;
      t.fes = static_cast<FatalErrorStatus>(get16(p + 8));
      t.fei = get32(p + 10);
      t.pdu_header = data;
      if (header_.type == PduType::h2c_term_req)
        pdu_ = H2CTermReq{t};
      else
        pdu_ = C2HTermReq{t};
      break;
    }
    case PduType::capsule_cmd:
      pdu_ = CapsuleCmd{Sqe::decode(std::span<const std::uint8_t, kSqeSize>(p + 8, kSqeSize)), data};
      break;
    case PduType::capsule_resp:
      pdu_ = CapsuleResp{Cqe::decode(std::span<const std::uint8_t, kCqeSize>(p + 8, kCqeSize))};
      break;
    case PduType::h2c_data: {
      H2CData d;
      d.cccid = get16(p + 8);
      d.ttag = get16(p + 10);
      d.datao = get32(p + 12);
      d.datal = get32(p + 16);
      d.last = (flags & pdu_flag::kLastPdu) != 0;
      d.data = data;
      pdu_ = d;
      break;
    }
    case PduType::c2h_data: {
      C2HData d;
      d.cccid = get16(p + 8);
      d.datao = get32(p + 12);
      d.datal = get32(p + 16);
      d.last = (flags & pdu_flag::kLastPdu) != 0;
      d.success = (flags & pdu_flag::kSuccess) != 0;
      d.data = data;
      pdu_ = d;
      break;
    }
    case PduType::r2t: {
      R2T r;
      r.cccid = get16(p + 8);
      r.ttag = get16(p + 10);
      r.r2to = get32(p + 12);
      r.r2tl = get32(p + 16);
      pdu_ = r;
      break;
    }
  }
  if (is_ic(header_.type)) ic_done_ = true;
  state_ = DecodeState::pdu_ready;
  ++pdus_decoded_;
  return true;
}

Pdu make_term_req(Side sender, FatalErrorStatus fes, std::uint32_t fei, std::span<const std::uint8_t> pdu_header) {
  TermReq t{fes, fei, pdu_header.first(std::min(pdu_header.size(), kMaxTermReqData))};
  if (sender == Side::host) return H2CTermReq{t};
  return C2HTermReq{t};
}

Pdu make_term_req(Side sender, const DecodeError& error, std::span<const std::uint8_t> pdu_header) {
  return make_term_req(sender, error.fes, error.fei, pdu_header);
}

}  // namespace nvqos::nvmf
