// Writes the fuzzer's seed corpus: valid PDU streams of every type for both sides, with and
// without digests, each prefixed by the fuzzer's two mode bytes.
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "nvqos/nvmf/decoder.h"

using namespace nvqos::nvmf;
using Bytes = std::vector<std::uint8_t>;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  int count = 0;
  auto write = [&](std::uint8_t mode, std::uint8_t shape, const Bytes& stream) {
    Bytes file(2 + stream.size());
    file[0] = mode;
    file[1] = shape;
    std::copy(stream.begin(), stream.end(), file.begin() + 2);
    std::ofstream(dir / ("seed-" + std::to_string(count++)), std::ios::binary)
        .write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size()));
  };
  Bytes data(4096);
  std::iota(data.begin(), data.end(), 0);
  for (std::uint8_t dg = 0; dg < 4; ++dg) {
    LinkParams link{(dg & 1) != 0, (dg & 2) != 0, 0};
    std::uint8_t mode_digests = static_cast<std::uint8_t>(dg << 1);
    // Controller side, from the IC exchange on.
    Bytes host;
    encode_pdu(IcReq{.hdgst = link.header_digest, .ddgst = link.data_digest}, {}, host);
    write(mode_digests, 0xe0, host);
    Bytes h2c;
    encode_pdu(CapsuleCmd{make_write(1, 1, 0, 8, 4096, true), data}, link, h2c);
    encode_pdu(CapsuleCmd{make_read(2, 1, 0, 8, 4096), {}}, link, h2c);
    encode_pdu(CapsuleCmd{make_write(3, 1, 8, 8, 4096, false), {}}, link, h2c);
    encode_pdu(H2CData{.cccid = 3, .ttag = 0, .datao = 0, .datal = 4096, .last = true, .data = data}, link, h2c);
    encode_pdu(make_term_req(Side::host, FatalErrorStatus::pdu_sequence_error, 0, std::span(data).first(24)), link, h2c);
    write(static_cast<std::uint8_t>(16 | mode_digests), 0x40, h2c);
    // Host side.
    Bytes ctrl;
    encode_pdu(IcResp{.hdgst = link.header_digest, .ddgst = link.data_digest}, {}, ctrl);
    write(static_cast<std::uint8_t>(1 | mode_digests), 0x20, ctrl);
    Bytes c2h;
    encode_pdu(R2T{.cccid = 3, .ttag = 0, .r2to = 0, .r2tl = 4096}, link, c2h);
    encode_pdu(C2HData{.cccid = 2, .datao = 0, .datal = 4096, .last = true, .success = false, .data = data}, link, c2h);
    encode_pdu(CapsuleResp{Cqe{.sqhd = 1, .cid = 2}}, link, c2h);
    encode_pdu(C2HData{.cccid = 4, .datao = 0, .datal = 512, .last = true, .success = true,
                       .data = std::span(data).first(512)}, link, c2h);
    encode_pdu(make_term_req(Side::controller, FatalErrorStatus::invalid_header_field, 2, std::span(data).first(24)),
               link, c2h);
    write(static_cast<std::uint8_t>(17 | mode_digests), 0x60, c2h);
  }
  std::printf("wrote %d seeds to %s\n", count, dir.c_str());
  return 0;
}
