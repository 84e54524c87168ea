#include "nvqos/nvmf/pdu.h"

#include <cstring>

#include "bytes.h"
#include "nvqos/nvmf/crc32c.h"

namespace nvqos::nvmf {

using namespace wire;

std::string_view pdu_type_name(PduType type) {
  switch (type) {
    case PduType::ic_req: return "ICReq";
    case PduType::ic_resp: return "ICResp";
    case PduType::h2c_term_req: return "H2CTermReq";
    case PduType::c2h_term_req: return "C2HTermReq";
    case PduType::capsule_cmd: return "CapsuleCmd";
    case PduType::capsule_resp: return "CapsuleResp";
    case PduType::h2c_data: return "H2CData";
    case PduType::c2h_data: return "C2HData";
    case PduType::r2t: return "R2T";
  }
  return "unknown PDU";
}

std::string_view fatal_error_name(FatalErrorStatus fes) {
  switch (fes) {
    case FatalErrorStatus::invalid_header_field: return "Invalid PDU Header Field";
    case FatalErrorStatus::pdu_sequence_error: return "PDU Sequence Error";
    case FatalErrorStatus::header_digest_error: return "Header Digest Error";
    case FatalErrorStatus::data_out_of_range: return "Data Transfer Out of Range";
    case FatalErrorStatus::data_limit_exceeded: return "Data Transfer Limit Exceeded";
    case FatalErrorStatus::unsupported_parameter: return "Unsupported Parameter";
  }
  return "unknown fatal error status";
}

void CommonHeader::encode(std::span<std::uint8_t, kCommonHeaderSize> out) const {
  out[0] = static_cast<std::uint8_t>(type);
  out[1] = flags;
  out[2] = hlen;
  out[3] = pdo;
  put32(out.data() + 4, plen);
}

CommonHeader CommonHeader::decode(std::span<const std::uint8_t, kCommonHeaderSize> in) {
  return {static_cast<PduType>(in[0]), in[1], in[2], in[3], get32(in.data() + 4)};
}

PduType pdu_type(const Pdu& pdu) {
  static constexpr PduType kTypes[] = {PduType::ic_req,      PduType::ic_resp,     PduType::h2c_term_req,
                                       PduType::c2h_term_req, PduType::capsule_cmd, PduType::capsule_resp,
                                       PduType::h2c_data,     PduType::c2h_data,    PduType::r2t};
  return kTypes[pdu.index()];
}

namespace {

struct Layout {
  std::uint8_t hlen;
  std::uint8_t flags;
  std::uint32_t data_len;
  bool digests_allowed;  // IC PDUs and TermReqs never carry digests
};

Layout layout_of(const Pdu& pdu) {
  struct Visitor {
    Layout operator()(const IcReq&) const { return {kIcReqHlen, 0, 0, false}; }
    Layout operator()(const IcResp&) const { return {kIcRespHlen, 0, 0, false}; }
    Layout operator()(const H2CTermReq& t) const { return term(t); }
    Layout operator()(const C2HTermReq& t) const { return term(t); }
    Layout operator()(const CapsuleCmd& c) const {
      return {kCapsuleCmdHlen, 0, static_cast<std::uint32_t>(c.data.size()), true};
    }
    Layout operator()(const CapsuleResp&) const { return {kCapsuleRespHlen, 0, 0, true}; }
    Layout operator()(const H2CData& d) const {
      return {kDataPduHlen, static_cast<std::uint8_t>(d.last ? pdu_flag::kLastPdu : 0), d.datal, true};
    }
    Layout operator()(const C2HData& d) const {
      std::uint8_t f = (d.last ? pdu_flag::kLastPdu : 0) | (d.success ? pdu_flag::kSuccess : 0);
      return {kDataPduHlen, f, d.datal, true};
    }
    Layout operator()(const R2T&) const { return {kR2tHlen, 0, 0, true}; }
    static Layout term(const TermReq& t) {
      std::size_t n = t.pdu_header.size() < kMaxTermReqData ? t.pdu_header.size() : kMaxTermReqData;
      return {kTermReqHlen, 0, static_cast<std::uint32_t>(n), false};
    }
  };
  return std::visit(Visitor{}, pdu);
}

void encode_body(const Pdu& pdu, std::uint8_t* p) {
  struct Visitor {
    std::uint8_t* p;
    void operator()(const IcReq& r) const {
      put16(p + 8, r.pfv);
      p[10] = r.hpda;
      p[11] = static_cast<std::uint8_t>((r.hdgst ? 1 : 0) | (r.ddgst ? 2 : 0));
      put32(p + 12, r.maxr2t);
    }
    void operator()(const IcResp& r) const {
      put16(p + 8, r.pfv);
      p[10] = r.cpda;
      p[11] = static_cast<std::uint8_t>((r.hdgst ? 1 : 0) | (r.ddgst ? 2 : 0));
      put32(p + 12, r.maxh2cdata);
    }
    void operator()(const H2CTermReq& t) const { term(t); }
    void operator()(const C2HTermReq& t) const { term(t); }
    void term(const TermReq& t) const {
      put16(p + 8, static_cast<std::uint16_t>(t.fes));
      put32(p + 10, t.fei);
    }
    void operator()(const CapsuleCmd& c) const { c.sqe.encode(std::span<std::uint8_t, kSqeSize>(p + 8, kSqeSize)); }
    void operator()(const CapsuleResp& r) const { r.cqe.encode(std::span<std::uint8_t, kCqeSize>(p + 8, kCqeSize)); }
    void operator()(const H2CData& d) const {
      put16(p + 8, d.cccid);
      put16(p + 10, d.ttag);
      put32(p + 12, d.datao);
      put32(p + 16, d.datal);
    }
    void operator()(const C2HData& d) const {
      put16(p + 8, d.cccid);
      put32(p + 12, d.datao);
      put32(p + 16, d.datal);
    }
    void operator()(const R2T& r) const {
      put16(p + 8, r.cccid);
      put16(p + 10, r.ttag);
      put32(p + 12, r.r2to);
      put32(p + 16, r.r2tl);
    }
  };
  std::visit(Visitor{p}, pdu);
}

std::span<const std::uint8_t> data_of(const Pdu& pdu) {
  if (auto* c = std::get_if<CapsuleCmd>(&pdu)) return c->data;
  if (auto* d = std::get_if<H2CData>(&pdu)) return d->data;
  if (auto* d = std::get_if<C2HData>(&pdu)) return d->data;
  if (auto* t = std::get_if<H2CTermReq>(&pdu)) return t->pdu_header;
  if (auto* t = std::get_if<C2HTermReq>(&pdu)) return t->pdu_header;
  return {};
}

bool is_term_req(const Pdu& pdu) {
  return std::holds_alternative<H2CTermReq>(pdu) || std::holds_alternative<C2HTermReq>(pdu);
}

}  // namespace

EncodedHeader encode_header(const Pdu& pdu, const LinkParams& link) {
  EncodedHeader out;
  Layout l = layout_of(pdu);
  bool hdgst = l.digests_allowed && link.header_digest;
  bool ddgst = l.digests_allowed && link.data_digest && l.data_len > 0;
  std::size_t header_end = l.hlen + (hdgst ? kDigestSize : 0);
  std::size_t pdo = 0;
  std::size_t region = header_end;
  if (l.data_len > 0 && !is_term_req(pdu)) {
    std::size_t align = (static_cast<std::size_t>(link.peer_pda & 0x1f) + 1) * 4;
    pdo = (header_end + align - 1) / align * align;
    region = pdo;
  }
  CommonHeader ch;
  ch.type = pdu_type(pdu);
  ch.flags = static_cast<std::uint8_t>(l.flags | (hdgst ? pdu_flag::kHdgst : 0) | (ddgst ? pdu_flag::kDdgst : 0));
  ch.hlen = l.hlen;
  ch.pdo = static_cast<std::uint8_t>(pdo);
  ch.plen = static_cast<std::uint32_t>(region + l.data_len + (ddgst ? kDigestSize : 0));
  std::uint8_t* p = out.bytes.data();
  ch.encode(std::span<std::uint8_t, kCommonHeaderSize>(p, kCommonHeaderSize));
  encode_body(pdu, p);
  if (hdgst) put32(p + l.hlen, crc32c({p, l.hlen}));
  out.size = static_cast<std::uint16_t>(region);
  out.plen = ch.plen;
  out.data_len = l.data_len;
  out.data_digest = ddgst;
  return out;
}

std::array<std::uint8_t, kDigestSize> data_digest_bytes(std::span<const std::uint8_t> data) {
  std::array<std::uint8_t, kDigestSize> d;
  put32(d.data(), crc32c(data));
  return d;
}

void encode_pdu(const Pdu& pdu, const LinkParams& link, std::vector<std::uint8_t>& out) {
  EncodedHeader h = encode_header(pdu, link);
  auto header = h.span();
  out.insert(out.end(), header.begin(), header.end());
  std::span<const std::uint8_t> data = data_of(pdu).first(h.data_len <= data_of(pdu).size() ? h.data_len : data_of(pdu).size());
  out.insert(out.end(), data.begin(), data.end());
  // A caller that set datal without data gets zeros rather than a short PDU.
  out.resize(out.size() + (h.data_len - data.size()), 0);
  if (h.data_digest) {
    std::span<const std::uint8_t> all(out.data() + out.size() - h.data_len, h.data_len);
    auto d = data_digest_bytes(all);
    out.insert(out.end(), d.begin(), d.end());
  }
}

std::vector<std::uint8_t> encode_pdu(const Pdu& pdu, const LinkParams& link) {
  std::vector<std::uint8_t> out;
  encode_pdu(pdu, link, out);
  return out;
}

}  // namespace nvqos::nvmf
