// libFuzzer target: the NVMe/TCP stream decoder must survive any byte stream, on either side,
// with any negotiated digests/alignment and any fragmentation, and keep its invariants.
//
// Input layout: byte 0 selects side/digests/IC state, byte 1 the PDA and chunking seed, the rest
// is the stream.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <variant>
#include <vector>
#include <algorithm>

#include "nvqos/nvmf/decoder.h"

using namespace nvqos::nvmf;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void inspect(const StreamDecoder& d) {
  const Pdu& pdu = d.pdu();
  // Touch every data byte so ASan sees any span that points outside the buffer.
  auto touch = [](std::span<const std::uint8_t> s) {
    unsigned sum = 0;
    for (auto b : s) sum += b;
    return sum;
  };
  if (auto* c = std::get_if<CapsuleCmd>(&pdu)) {
    touch(c->data);
    check(c->data.size() <= d.config().max_data);
  } else if (auto* h = std::get_if<H2CData>(&pdu)) {
    touch(h->data);
    check(h->data.size() == h->datal);
  } else if (auto* c2h = std::get_if<C2HData>(&pdu)) {
    touch(c2h->data);
    check(c2h->data.size() == c2h->datal);
    check(!c2h->success || c2h->last);
  } else if (auto* t = std::get_if<H2CTermReq>(&pdu)) {
    check(t->pdu_header.size() <= kMaxTermReqData);
    touch(t->pdu_header);
  } else if (auto* t2 = std::get_if<C2HTermReq>(&pdu)) {
    check(t2->pdu_header.size() <= kMaxTermReqData);
    touch(t2->pdu_header);
  }
  // Whatever decoded must encode again without trouble.
  std::vector<std::uint8_t> out;
  encode_pdu(pdu, {d.config().header_digest, d.config().data_digest, 0}, out);
  check(out.size() >= kCommonHeaderSize);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t mode = data[0];
  const std::uint8_t shape = data[1];
  std::span<const std::uint8_t> in(data + 2, size - 2);

  const Side side = (mode & 1) ? Side::host : Side::controller;
  DecoderConfig cfg;
  cfg.header_digest = (mode & 2) != 0;
  cfg.data_digest = (mode & 4) != 0;
  cfg.local_pda = shape & 0x1f;
  cfg.max_data = (mode & 8) ? 65536 : 8192;
  const bool start_after_ic = (mode & 16) != 0;

  StreamDecoder d(side, start_after_ic ? DecoderConfig{} : cfg);
  if (start_after_ic) {
    auto ic = side == Side::controller ? encode_pdu(IcReq{}) : encode_pdu(IcResp{});
    check(d.feed(ic).state == DecodeState::pdu_ready);
    d.configure(cfg);
  }
  // Chunk sizes cycle through 1..(shape>>5)*37+1 so fragmentation varies with the input.
  const std::size_t max_chunk = static_cast<std::size_t>(shape >> 5) * 37 + 1;
  std::size_t chunk = 1;
  while (!in.empty()) {
    std::size_t n = std::min(chunk, in.size());
    FeedResult r = d.feed(in.first(n));
    check(r.consumed <= n);
    if (r.state == DecodeState::failed) {
      check(d.error_header().size() <= kMaxTermReqData);
      check(!d.error().detail.empty());
      check(d.feed(in).consumed == 0);
      break;
    }
    if (r.state == DecodeState::need_more) {
      check(r.consumed == n);
      check(d.bytes_needed() >= 1);
    } else {
      inspect(d);
    }
    in = in.subspan(r.consumed);
    chunk = chunk % max_chunk + 1;
  }
  return 0;
}
