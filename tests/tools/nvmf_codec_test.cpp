// NVMe/TCP codec: golden bytes for every PDU type (laid out by hand from the NVMe/TCP transport
// binding's field tables), CRC32C vectors, stream decoder fragmentation and every error class.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "nvqos/nvmf/crc32c.h"
#include "nvqos/nvmf/decoder.h"
#include "nvqos/nvmf/nvme.h"
#include "nvqos/nvmf/pdu.h"

namespace nvqos::nvmf {
namespace {

using Bytes = std::vector<std::uint8_t>;

std::span<const std::uint8_t> as_bytes(const char* s) {
  return {reinterpret_cast<const std::uint8_t*>(s), std::strlen(s)};
}

void put32(Bytes& b, std::size_t off, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put16(Bytes& b, std::size_t off, std::uint16_t v) {
  b[off] = static_cast<std::uint8_t>(v);
  b[off + 1] = static_cast<std::uint8_t>(v >> 8);
}

// Decodes `bytes` completely (one PDU expected) on `side`, already past the IC exchange unless the
// PDU is an IC PDU.
struct Decoded {
  Pdu pdu;
  CommonHeader header;
  bool ddgst_ok;
  Bytes data;  // copy of the data span
};

StreamDecoder past_ic(Side side, DecoderConfig cfg = {}) {
  StreamDecoder d(side, cfg);
  Bytes ic = side == Side::controller ? encode_pdu(IcReq{}) : encode_pdu(IcResp{});
  auto r = d.feed(ic);
  EXPECT_EQ(r.state, DecodeState::pdu_ready);
  d.configure(cfg);
  return d;
}

// ---- CRC32C ------------------------------------------------------------------------------------

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c(as_bytes("123456789")), 0xe3069283u);
  EXPECT_EQ(crc32c({}), 0x00000000u);
  Bytes zeros(32, 0x00), ones(32, 0xff), inc(32);
  std::iota(inc.begin(), inc.end(), 0);
  // RFC 3720 B.4 test vectors.
  EXPECT_EQ(crc32c(zeros), 0x8a9136aau);
  EXPECT_EQ(crc32c(ones), 0x62a8ab43u);
  EXPECT_EQ(crc32c(inc), 0x46dd794eu);
}

TEST(Crc32c, ImplementationsAgreeAndAreIncremental) {
  std::mt19937 rng(7);
  Bytes buf(10000);
  for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
  const std::uint32_t whole = crc32c(buf);
  EXPECT_EQ(~detail::crc32c_update_portable(~0u, buf), whole);
  if (detail::cpu_has_sse42()) {
    EXPECT_EQ(~detail::crc32c_update_sse42(~0u, buf), whole);
  }
  for (std::size_t split : {0u, 1u, 7u, 8u, 9u, 4095u, 9999u}) {
    Crc32c c;
    c.update(std::span(buf).first(split));
    c.update(std::span(buf).subspan(split));
    EXPECT_EQ(c.value(), whole) << "split at " << split;
    std::uint32_t s = detail::crc32c_update_portable(~0u, std::span(buf).first(split));
    s = detail::crc32c_update_portable(s, std::span(buf).subspan(split));
    EXPECT_EQ(~s, whole) << "portable split at " << split;
  }
}

// ---- Golden bytes --------------------------------------------------------------------------------

TEST(PduGolden, IcReq) {
  Bytes g(128, 0);
  g[0] = 0x00; g[2] = 128; put32(g, 4, 128);
  put16(g, 8, 0); g[10] = 3; g[11] = 0x03; put32(g, 12, 15);
  IcReq req{.pfv = 0, .hpda = 3, .hdgst = true, .ddgst = true, .maxr2t = 15};
  EXPECT_EQ(encode_pdu(req), g);
  StreamDecoder d(Side::controller);
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  EXPECT_EQ(std::get<IcReq>(d.pdu()), req);
}

TEST(PduGolden, IcResp) {
  Bytes g(128, 0);
  g[0] = 0x01; g[2] = 128; put32(g, 4, 128);
  g[10] = 0; g[11] = 0x01; put32(g, 12, 0x20000);
  IcResp resp{.pfv = 0, .cpda = 0, .hdgst = true, .ddgst = false, .maxh2cdata = 0x20000};
  EXPECT_EQ(encode_pdu(resp, {.header_digest = true}), g) << "IC PDUs never carry digests";
  StreamDecoder d(Side::host);
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  EXPECT_EQ(std::get<IcResp>(d.pdu()), resp);
}

TEST(PduGolden, TermReqs) {
  Bytes bad_header(24, 0xee);
  Bytes g(24 + 24, 0);
  g[0] = 0x03; g[2] = 24; put32(g, 4, 48);
  put16(g, 8, 0x0001); put32(g, 10, 2);
  std::memcpy(g.data() + 24, bad_header.data(), 24);
  Pdu t = make_term_req(Side::controller, FatalErrorStatus::invalid_header_field, 2, bad_header);
  EXPECT_EQ(encode_pdu(t, {.header_digest = true, .data_digest = true}), g);
  StreamDecoder d = past_ic(Side::host);
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  auto& c2h = std::get<C2HTermReq>(d.pdu());
  EXPECT_EQ(c2h.fes, FatalErrorStatus::invalid_header_field);
  EXPECT_EQ(c2h.fei, 2u);
  EXPECT_EQ(Bytes(c2h.pdu_header.begin(), c2h.pdu_header.end()), bad_header);

  g[0] = 0x02;
  Pdu h = make_term_req(Side::host, FatalErrorStatus::header_digest_error, 0, bad_header);
  put16(g, 8, 0x0003); put32(g, 10, 0);
  EXPECT_EQ(encode_pdu(h), g);
  // Truncated to 152 bytes of offending header.
  Bytes huge(300, 1);
  EXPECT_EQ(encode_pdu(make_term_req(Side::host, FatalErrorStatus::pdu_sequence_error, 0, huge)).size(), 24u + 152u);
  // A TermReq is accepted even before the IC exchange (a controller may refuse an ICReq).
  StreamDecoder fresh(Side::controller);
  ASSERT_EQ(fresh.feed(g).state, DecodeState::pdu_ready);
  EXPECT_TRUE(std::holds_alternative<H2CTermReq>(fresh.pdu()));
}

TEST(PduGolden, CapsuleCmdWithInCapsuleDataAndDigests) {
  Bytes data(512);
  std::iota(data.begin(), data.end(), 0);
  Sqe sqe = make_write(0x1234, 1, 0x0102030405ull, 1, 512, true);
  // Layout: CH(8) SQE(64) HDGST(4) data(512) DDGST(4)
  Bytes g(8 + 64 + 4 + 512 + 4, 0);
  g[0] = 0x04; g[1] = 0x03; g[2] = 72; g[3] = 76; put32(g, 4, static_cast<std::uint32_t>(g.size()));
  g[8] = 0x01; g[9] = 0x40; put16(g, 10, 0x1234); put32(g, 12, 1);
  put32(g, 8 + 32, 512); g[8 + 39] = 0x01;  // SGL: in-capsule Data Block, offset subtype
  put32(g, 8 + 40, 0x02030405); put32(g, 8 + 44, 0x01); put32(g, 8 + 48, 0);  // SLBA, NLB-1 = 0
  put32(g, 72, crc32c(std::span(g).first(72)));
  std::memcpy(g.data() + 76, data.data(), 512);
  put32(g, 76 + 512, crc32c(data));
  LinkParams link{.header_digest = true, .data_digest = true};
  EXPECT_EQ(encode_pdu(CapsuleCmd{sqe, data}, link), g);
  EncodedHeader h = encode_header(CapsuleCmd{sqe, data}, link);
  EXPECT_EQ(h.size, 76);
  EXPECT_EQ(h.data_len, 512u);
  EXPECT_TRUE(h.data_digest);

  StreamDecoder d = past_ic(Side::controller, {.header_digest = true, .data_digest = true});
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  auto& cmd = std::get<CapsuleCmd>(d.pdu());
  EXPECT_EQ(cmd.sqe, sqe);
  EXPECT_EQ(Bytes(cmd.data.begin(), cmd.data.end()), data);
  EXPECT_TRUE(d.data_digest_ok());
  RwCommand rw = parse_rw(cmd.sqe);
  EXPECT_EQ(rw.slba, 0x0102030405ull);
  EXPECT_EQ(rw.nlb, 1u);
}

TEST(PduGolden, CapsuleCmdWithoutDataAndPdaPadding) {
  Sqe sqe = make_read(7, 1, 0, 8, 4096);
  Bytes g(72, 0);
  g[0] = 0x04; g[2] = 72; g[3] = 0; put32(g, 4, 72);
  g[8] = 0x02; g[9] = 0x40; put16(g, 10, 7); put32(g, 12, 1);
  put32(g, 8 + 32, 4096); g[8 + 39] = 0x5a; put32(g, 8 + 48, 7);
  EXPECT_EQ(encode_pdu(CapsuleCmd{sqe, {}}, {.peer_pda = 31}), g) << "PDA only matters with data";

  // With data and CPDA = 3 (16-byte alignment) the data starts at 80, not 72.
  Bytes data(16, 0x5a);
  Bytes padded = encode_pdu(CapsuleCmd{make_write(7, 1, 0, 1, 16, true), data}, {.peer_pda = 3});
  EXPECT_EQ(padded[3], 80);
  EXPECT_EQ(padded.size(), 96u);
  StreamDecoder d = past_ic(Side::controller, {.local_pda = 3});
  ASSERT_EQ(d.feed(padded).state, DecodeState::pdu_ready);
  auto& cmd = std::get<CapsuleCmd>(d.pdu());
  EXPECT_EQ(Bytes(cmd.data.begin(), cmd.data.end()), data);
}

TEST(PduGolden, CapsuleResp) {
  Cqe cqe{.dw0 = 0x11223344, .dw1 = 0x55667788, .sqhd = 9, .sqid = 2, .cid = 0xbeef,
          .status = status::kLbaOutOfRange | status::kDnr};
  Bytes g(24 + 4, 0);
  g[0] = 0x05; g[1] = 0x01; g[2] = 24; put32(g, 4, 28);
  put32(g, 8, 0x11223344); put32(g, 12, 0x55667788); put16(g, 16, 9); put16(g, 18, 2);
  put16(g, 20, 0xbeef); put16(g, 22, static_cast<std::uint16_t>((0x080 | 0x4000) << 1));
  put32(g, 24, crc32c(std::span(g).first(24)));
  EXPECT_EQ(encode_pdu(CapsuleResp{cqe}, {.header_digest = true, .data_digest = true}), g);
  StreamDecoder d = past_ic(Side::host, {.header_digest = true, .data_digest = true});
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  EXPECT_EQ(std::get<CapsuleResp>(d.pdu()).cqe, cqe);
  EXPECT_EQ(status_sct(cqe.status), StatusCodeType::generic);
  EXPECT_EQ(status_sc(cqe.status), 0x80);
  EXPECT_TRUE(status_dnr(cqe.status));
  EXPECT_EQ(status_to_string(cqe.status), "LBA Out of Range (SCT 0h SC 80h) DNR");
}

TEST(PduGolden, H2CData) {
  Bytes data(8, 0xcd);
  Bytes g(24 + 8, 0);
  g[0] = 0x06; g[1] = 0x04; g[2] = 24; g[3] = 24; put32(g, 4, 32);
  put16(g, 8, 0x0a0b); put16(g, 10, 0x0c0d); put32(g, 12, 4096); put32(g, 16, 8);
  std::memcpy(g.data() + 24, data.data(), 8);
  H2CData pdu{.cccid = 0x0a0b, .ttag = 0x0c0d, .datao = 4096, .datal = 8, .last = true, .data = data};
  EXPECT_EQ(encode_pdu(pdu), g);
  StreamDecoder d = past_ic(Side::controller);
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  auto& got = std::get<H2CData>(d.pdu());
  EXPECT_EQ(got.cccid, 0x0a0b);
  EXPECT_EQ(got.ttag, 0x0c0d);
  EXPECT_EQ(got.datao, 4096u);
  EXPECT_EQ(got.datal, 8u);
  EXPECT_TRUE(got.last);
  EXPECT_EQ(Bytes(got.data.begin(), got.data.end()), data);
}

TEST(PduGolden, C2HDataWithSuccess) {
  Bytes data(4, 0x77);
  Bytes g(24 + 4 + 4 + 4, 0);
  g[0] = 0x07; g[1] = 0x0f; g[2] = 24; g[3] = 28; put32(g, 4, 36);
  put16(g, 8, 3); put32(g, 12, 0); put32(g, 16, 4);
  put32(g, 24, crc32c(std::span(g).first(24)));
  std::memcpy(g.data() + 28, data.data(), 4);
  put32(g, 32, crc32c(data));
  C2HData pdu{.cccid = 3, .datao = 0, .datal = 4, .last = true, .success = true, .data = data};
  EXPECT_EQ(encode_pdu(pdu, {.header_digest = true, .data_digest = true}), g);
  StreamDecoder d = past_ic(Side::host, {.header_digest = true, .data_digest = true});
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  auto& got = std::get<C2HData>(d.pdu());
  EXPECT_TRUE(got.success);
  EXPECT_TRUE(got.last);
  EXPECT_TRUE(d.data_digest_ok());
}

TEST(PduGolden, R2T) {
  Bytes g(24, 0);
  g[0] = 0x09; g[2] = 24; put32(g, 4, 24);
  put16(g, 8, 5); put16(g, 10, 6); put32(g, 12, 8192); put32(g, 16, 65536);
  R2T r2t{.cccid = 5, .ttag = 6, .r2to = 8192, .r2tl = 65536};
  EXPECT_EQ(encode_pdu(r2t, {.data_digest = true}), g) << "no data, so no DDGST";
  StreamDecoder d = past_ic(Side::host, {.data_digest = true});
  ASSERT_EQ(d.feed(g).state, DecodeState::pdu_ready);
  EXPECT_EQ(std::get<R2T>(d.pdu()), r2t);
}

// ---- NVMe / Fabrics layouts -----------------------------------------------------------------------

TEST(NvmeLayout, ConnectCommandAndData) {
  Sqe s = make_connect(1, {.qid = 3, .sqsize = 127, .kato_ms = 0});
  std::array<std::uint8_t, 64> b;
  s.encode(b);
  EXPECT_EQ(b[0], 0x7f);
  EXPECT_EQ(b[4], 0x01);  // FCTYPE Connect
  EXPECT_EQ(b[39], 0x01); // in-capsule
  EXPECT_EQ(b[32] | (b[33] << 8), 1024);
  EXPECT_EQ(b[42] | (b[43] << 8), 3);    // QID
  EXPECT_EQ(b[44] | (b[45] << 8), 127);  // SQSIZE
  ConnectCommand c = parse_connect(Sqe::decode(b));
  EXPECT_EQ(c.qid, 3);
  EXPECT_EQ(c.sqsize, 127);

  ConnectData d;
  d.hostid[0] = 0xaa;
  d.cntlid = 0xffff;
  d.subnqn = "nqn.2024-01.io.nvqos:sub";
  d.hostnqn = "nqn.2014-08.org.nvmexpress:uuid:1";
  std::array<std::uint8_t, kConnectDataSize> db;
  d.encode(db);
  EXPECT_EQ(db[0], 0xaa);
  EXPECT_EQ(db[16], 0xff);
  EXPECT_EQ(std::memcmp(db.data() + 256, "nqn.2024-01.io.nvqos:sub", 24), 0);
  EXPECT_EQ(db[256 + 24], 0);
  EXPECT_EQ(std::memcmp(db.data() + 512, "nqn.2014-08", 11), 0);
  ConnectData back = ConnectData::decode(db);
  EXPECT_EQ(back.subnqn, d.subnqn);
  EXPECT_EQ(back.hostnqn, d.hostnqn);
  EXPECT_EQ(back.cntlid, 0xffff);

  auto ip = parse_connect_invalid_param(connect_invalid_param_dw0(kConnectDataSubnqnOffset, true));
  EXPECT_EQ(ip.ipo, 256);
  EXPECT_TRUE(ip.in_data);
}

TEST(NvmeLayout, PropertyAndIdentifyAndFeatures) {
  std::array<std::uint8_t, 64> b;
  make_property_set(2, property::kCc, 0x460001, 4).encode(b);
  EXPECT_EQ(b[4], 0x00);
  EXPECT_EQ(b[40], 0);                       // ATTRIB: 4 bytes
  EXPECT_EQ(b[44], 0x14);                    // OFST
  EXPECT_EQ(b[48] | (b[49] << 8) | (b[50] << 16), 0x460001);  // VALUE
  PropertyCommand p = parse_property(Sqe::decode(b));
  EXPECT_TRUE(p.set);
  EXPECT_EQ(p.offset, property::kCc);
  EXPECT_EQ(p.value, 0x460001u);
  make_property_get(3, property::kCap, 8).encode(b);
  EXPECT_EQ(b[4], 0x04);
  EXPECT_EQ(b[40], 1);
  p = parse_property(Sqe::decode(b));
  EXPECT_FALSE(p.set);
  EXPECT_EQ(p.size, 8);

  make_identify(4, cns::kActiveNamespaces, 0).encode(b);
  EXPECT_EQ(b[0], 0x06);
  EXPECT_EQ(b[40], 0x02);
  EXPECT_EQ(b[39], 0x5a);

  make_set_number_of_queues(5, 4, 4).encode(b);
  EXPECT_EQ(b[0], 0x09);
  EXPECT_EQ(b[40], 0x07);
  Sqe nq = Sqe::decode(b);
  EXPECT_EQ(nq.cdw11, 0x00030003u);
  EXPECT_EQ(parse_number_of_queues(nq.cdw11).sq_count, 4);

  Sqe lp = make_get_log_page(6, 0x70, 4096, 0, 0);
  GetLogPageCommand g = parse_get_log_page(lp);
  EXPECT_EQ(g.lid, 0x70);
  EXPECT_EQ(g.bytes(), 4096u);
}

TEST(NvmeLayout, IdentifyStructures) {
  IdentifyController c;
  c.serial = "SN1";
  c.model = "nvqos-target";
  c.firmware = "0.1";
  c.cntlid = 7;
  c.nn = 2;
  c.sgls = 0x100001;
  c.subnqn = "nqn.x";
  c.ioccsz = (64 + 8192) / 16;
  std::array<std::uint8_t, kIdentifySize> b;
  c.encode(b);
  EXPECT_EQ(b[4], 'S');
  EXPECT_EQ(b[23], ' ');  // space padded
  EXPECT_EQ(b[78], 7);
  EXPECT_EQ(b[516], 2);
  EXPECT_EQ(b[kIdCtrlIoccszOffset], (64 + 8192) / 16 & 0xff);
  IdentifyController back = IdentifyController::decode(b);
  EXPECT_EQ(back.model, "nvqos-target");
  EXPECT_EQ(back.in_capsule_data_size(), 8192u);
  EXPECT_EQ(back.subnqn, "nqn.x");

  IdentifyNamespace ns{.nsze = 1000, .ncap = 1000, .nuse = 1000, .lbads = 12};
  ns.encode(b);
  EXPECT_EQ(b[130], 12);
  EXPECT_EQ(IdentifyNamespace::decode(b).block_size(), 4096u);

  std::uint32_t ids[] = {1, 3, 9};
  encode_active_namespace_list(ids, b);
  std::uint32_t out[8];
  ASSERT_EQ(decode_active_namespace_list(b, out), 3u);
  EXPECT_EQ(out[2], 9u);
}

TEST(NvmeLayout, DiscoveryLog) {
  DiscoveryLogEntry e;
  e.subnqn = "nqn.2024-01.io.nvqos:a";
  e.traddr = "10.0.0.1";
  e.trsvcid = "4420";
  e.portid = 7;
  DiscoveryLogEntry entries[] = {e};
  Bytes log = encode_discovery_log(5, entries);
  ASSERT_EQ(log.size(), 2048u);
  EXPECT_EQ(log[0], 5);   // GENCTR
  EXPECT_EQ(log[8], 1);   // NUMREC
  EXPECT_EQ(log[1024], 3);  // TRTYPE TCP
  EXPECT_EQ(log[1025], 1);  // ADRFAM IPv4
  EXPECT_EQ(log[1026], 2);  // SUBTYPE NVM
  EXPECT_EQ(log[1028], 7);  // PORTID
  EXPECT_EQ(std::memcmp(log.data() + 1024 + 32, "4420 ", 5), 0);  // TRSVCID, space padded
  EXPECT_EQ(std::memcmp(log.data() + 1024 + 256, "nqn.2024-01.io.nvqos:a", 22), 0);
  EXPECT_EQ(std::memcmp(log.data() + 1024 + 512, "10.0.0.1 ", 9), 0);
  DiscoveryLog back = decode_discovery_log(log);
  ASSERT_EQ(back.entries.size(), 1u);
  EXPECT_EQ(back.entries[0].traddr, "10.0.0.1");
  EXPECT_EQ(back.entries[0].trsvcid, "4420");
  EXPECT_EQ(back.entries[0].subnqn, e.subnqn);
}

// ---- Stream decoder --------------------------------------------------------------------------------

Bytes stream_of_all_host_pdus(const LinkParams& link) {
  Bytes out;
  Bytes data(6000);
  std::iota(data.begin(), data.end(), 0);
  encode_pdu(CapsuleCmd{make_write(1, 1, 0, 2, 1024, true), std::span(data).first(1024)}, link, out);
  encode_pdu(CapsuleCmd{make_read(2, 1, 0, 8, 4096), {}}, link, out);
  encode_pdu(H2CData{.cccid = 3, .ttag = 1, .datao = 0, .datal = 6000, .last = true, .data = data}, link, out);
  encode_pdu(make_term_req(Side::host, FatalErrorStatus::pdu_sequence_error, 0, std::span(data).first(24)), link, out);
  return out;
}

TEST(StreamDecoder, ByteByByteEqualsWhole) {
  for (bool digests : {false, true}) {
    LinkParams link{.header_digest = digests, .data_digest = digests};
    DecoderConfig cfg{.header_digest = digests, .data_digest = digests, .max_data = 8192};
    Bytes stream = stream_of_all_host_pdus(link);
    std::vector<PduType> whole_types, byte_types;
    StreamDecoder whole = past_ic(Side::controller, cfg);
    std::span<const std::uint8_t> in(stream);
    while (!in.empty()) {
      auto r = whole.feed(in);
      in = in.subspan(r.consumed);
      ASSERT_NE(r.state, DecodeState::failed) << whole.error().detail;
      if (r.state == DecodeState::pdu_ready) whole_types.push_back(pdu_type(whole.pdu()));
    }
    StreamDecoder bytewise = past_ic(Side::controller, cfg);
    std::uint64_t data_sum = 0;
    for (std::size_t i = 0; i < stream.size(); ++i) {
      ASSERT_GE(bytewise.bytes_needed(), 1u);
      auto r = bytewise.feed(std::span(stream).subspan(i, 1));
      ASSERT_EQ(r.consumed, 1u);
      ASSERT_NE(r.state, DecodeState::failed) << bytewise.error().detail;
      if (r.state == DecodeState::pdu_ready) {
        byte_types.push_back(pdu_type(bytewise.pdu()));
        if (auto* h = std::get_if<H2CData>(&bytewise.pdu()))
          for (auto b : h->data) data_sum += b;
        EXPECT_TRUE(bytewise.data_digest_ok());
      }
    }
    EXPECT_EQ(whole_types, byte_types);
    EXPECT_EQ(whole_types.size(), 4u);
    std::uint64_t expect_sum = 0;
    for (int i = 0; i < 6000; ++i) expect_sum += static_cast<std::uint8_t>(i);
    EXPECT_EQ(data_sum, expect_sum);
  }
}

TEST(StreamDecoder, RandomFragmentation) {
  LinkParams link{.header_digest = true, .data_digest = true};
  Bytes stream;
  for (int i = 0; i < 20; ++i) {
    Bytes s = stream_of_all_host_pdus(link);
    stream.insert(stream.end(), s.begin(), s.end() - (24 + 24));  // drop the TermReq
  }
  std::mt19937 rng(1);
  StreamDecoder d = past_ic(Side::controller, {.header_digest = true, .data_digest = true, .max_data = 8192});
  std::size_t pos = 0, pdus = 0;
  while (pos < stream.size()) {
    std::size_t n = std::min<std::size_t>(1 + rng() % 700, stream.size() - pos);
    std::span<const std::uint8_t> chunk(stream.data() + pos, n);
    while (!chunk.empty()) {
      auto r = d.feed(chunk);
      chunk = chunk.subspan(r.consumed);
      ASSERT_NE(r.state, DecodeState::failed) << d.error().detail;
      if (r.state == DecodeState::pdu_ready) ++pdus;
    }
    pos += n;
  }
  EXPECT_EQ(pdus, 60u);
}

TEST(StreamDecoder, DataDigestMismatchFailsOnlyThePdu) {
  Bytes data(64, 1);
  Bytes pdu = encode_pdu(CapsuleCmd{make_write(1, 1, 0, 1, 64, true), data}, {.data_digest = true});
  pdu[80] ^= 0xff;  // corrupt data
  StreamDecoder d = past_ic(Side::controller, {.data_digest = true});
  ASSERT_EQ(d.feed(pdu).state, DecodeState::pdu_ready);
  EXPECT_FALSE(d.data_digest_ok());
  Bytes next = encode_pdu(CapsuleCmd{make_flush(2, 1), {}}, {.data_digest = true});
  ASSERT_EQ(d.feed(next).state, DecodeState::pdu_ready);
  EXPECT_TRUE(d.data_digest_ok());
}

struct ErrorCase {
  const char* name;
  Side side;
  DecoderConfig cfg;
  bool do_ic;
  Bytes bytes;
  DecodeFault fault;
  FatalErrorStatus fes;
  std::uint32_t fei;
};

Bytes mutate(Bytes b, std::size_t off, std::uint8_t v) {
  b[off] = v;
  return b;
}
Bytes mutate32(Bytes b, std::size_t off, std::uint32_t v) {
  put32(b, off, v);
  return b;
}

std::vector<ErrorCase> error_cases() {
  Bytes cmd = encode_pdu(CapsuleCmd{make_read(1, 1, 0, 1, 512), {}});
  Bytes data(100, 9);
  Bytes h2c = encode_pdu(H2CData{.cccid = 1, .ttag = 0, .datao = 0, .datal = 100, .last = true, .data = data});
  Bytes cmd_hd = encode_pdu(CapsuleCmd{make_read(1, 1, 0, 1, 512), {}}, {.header_digest = true});
  Bytes big(9000, 0);
  Bytes big_cmd = encode_pdu(CapsuleCmd{make_write(1, 1, 0, 18, 9000, true), big});
  Bytes icreq = encode_pdu(IcReq{});
  Bytes icresp = encode_pdu(IcResp{});
  const FatalErrorStatus ihf = FatalErrorStatus::invalid_header_field;
  return {
      {"unknown type", Side::controller, {}, true, mutate(cmd, 0, 0x08), DecodeFault::unexpected_type, ihf, 0},
      {"R2T sent to a controller", Side::controller, {}, true, encode_pdu(R2T{}), DecodeFault::unexpected_type, ihf, 0},
      {"CapsuleCmd sent to a host", Side::host, {}, true, cmd, DecodeFault::unexpected_type, ihf, 0},
      {"CapsuleCmd before ICReq", Side::controller, {}, false, cmd, DecodeFault::out_of_sequence,
       FatalErrorStatus::pdu_sequence_error, 0},
      {"second ICReq", Side::controller, {}, true, icreq, DecodeFault::out_of_sequence,
       FatalErrorStatus::pdu_sequence_error, 0},
      {"bad HLEN", Side::controller, {}, true, mutate(cmd, 2, 64), DecodeFault::bad_hlen, ihf, 2},
      {"HDGSTF without negotiation", Side::controller, {}, true, cmd_hd, DecodeFault::bad_flags, ihf, 1},
      {"missing HDGSTF", Side::controller, {.header_digest = true}, true, cmd, DecodeFault::bad_flags, ihf, 1},
      {"SUCCESS on H2CData", Side::controller, {}, true, mutate(h2c, 1, 0x0c), DecodeFault::bad_flags, ihf, 1},
      {"bad PLEN (capsule)", Side::controller, {}, true, mutate32(cmd, 4, 71), DecodeFault::bad_plen, ihf, 4},
      {"PDO inside header", Side::controller, {}, true, mutate(h2c, 3, 16), DecodeFault::bad_pdo, ihf, 3},
      {"PDO without data", Side::controller, {}, true, mutate(cmd, 3, 72), DecodeFault::bad_pdo, ihf, 3},
      {"PDO misaligned for CPDA", Side::controller, {.local_pda = 3}, true, h2c, DecodeFault::bad_pdo, ihf, 3},
      {"DATAL disagrees with PLEN", Side::controller, {}, true, mutate32(h2c, 16, 99), DecodeFault::bad_plen, ihf, 4},
      {"IC PLEN", Side::controller, {}, false, mutate32(icreq, 4, 129), DecodeFault::bad_plen, ihf, 4},
      {"header digest", Side::controller, {.header_digest = true}, true, mutate(cmd_hd, 72, cmd_hd[72] ^ 1),
       DecodeFault::header_digest_mismatch, FatalErrorStatus::header_digest_error, 0},
      {"in-capsule data over limit", Side::controller, {.max_data = 8192}, true, big_cmd,
       DecodeFault::data_limit_exceeded, FatalErrorStatus::data_limit_exceeded, 0},
      {"ICReq PFV 1", Side::controller, {}, false, mutate(icreq, 8, 1), DecodeFault::unsupported_parameter,
       FatalErrorStatus::unsupported_parameter, 8},
      {"ICReq HPDA 32", Side::controller, {}, false, mutate(icreq, 10, 32), DecodeFault::bad_field, ihf, 10},
      {"ICResp MAXH2CDATA 512", Side::host, {}, false, mutate32(icresp, 12, 512), DecodeFault::bad_field, ihf, 12},
      {"TermReq PLEN 200", Side::host, {}, true,
       mutate32(encode_pdu(make_term_req(Side::controller, ihf, 0, {})), 4, 200), DecodeFault::bad_plen, ihf, 4},
  };
}

TEST(StreamDecoder, EveryErrorClass) {
  for (const ErrorCase& c : error_cases()) {
    SCOPED_TRACE(c.name);
    StreamDecoder d = c.do_ic ? past_ic(c.side, c.cfg) : StreamDecoder(c.side, c.cfg);
    // Byte by byte: the error must be found at the same point as with the whole buffer.
    FeedResult r;
    for (std::size_t i = 0; i < c.bytes.size(); ++i) {
      r = d.feed(std::span(c.bytes).subspan(i, 1));
      if (r.state != DecodeState::need_more) break;
    }
    ASSERT_EQ(r.state, DecodeState::failed);
    EXPECT_EQ(d.error().fault, c.fault) << decode_fault_name(d.error().fault) << ": " << d.error().detail;
    EXPECT_EQ(d.error().fes, c.fes);
    EXPECT_EQ(d.error().fei, c.fei);
    EXPECT_FALSE(d.error().detail.empty());
    EXPECT_GE(d.error_header().size(), kCommonHeaderSize);
    EXPECT_EQ(d.feed(c.bytes).consumed, 0u) << "a failed decoder consumes nothing";
    EXPECT_EQ(d.bytes_needed(), 0u);
    // The TermReq built from it echoes the header in error.
    Pdu term = make_term_req(c.side == Side::controller ? Side::controller : Side::host, d.error(), d.error_header());
    Bytes enc = encode_pdu(term);
    EXPECT_EQ(enc[0], c.side == Side::controller ? 0x03 : 0x02);
    EXPECT_EQ(enc[8], static_cast<std::uint8_t>(c.fes));
    EXPECT_EQ(std::memcmp(enc.data() + 24, c.bytes.data(), d.error_header().size()), 0);
  }
}

TEST(StreamDecoder, ConfigureAppliesFromNextPdu) {
  StreamDecoder d(Side::controller);
  Bytes ic = encode_pdu(IcReq{.hdgst = true});
  Bytes cmd = encode_pdu(CapsuleCmd{make_flush(1, 1), {}}, {.header_digest = true});
  Bytes both = ic;
  both.insert(both.end(), cmd.begin(), cmd.end());
  auto r = d.feed(both);
  ASSERT_EQ(r.state, DecodeState::pdu_ready);
  EXPECT_EQ(r.consumed, 128u) << "stops at the PDU boundary";
  d.configure({.header_digest = true});
  r = d.feed(std::span(both).subspan(128));
  ASSERT_EQ(r.state, DecodeState::pdu_ready) << d.error().detail;
  EXPECT_EQ(d.pdus_decoded(), 2u);
}

}  // namespace
}  // namespace nvqos::nvmf
