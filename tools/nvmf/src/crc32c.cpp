#include "nvqos/nvmf/crc32c.h"

#include <boost/crc.hpp>
#include <cstring>
#include <nmmintrin.h>

namespace nvqos::nvmf {

namespace detail {

namespace {
std::uint32_t bit_reverse(std::uint32_t v) {
  std::uint32_t r = 0;
  for (int i = 0; i < 32; ++i, v >>= 1) r = (r << 1) | (v & 1);
  return r;
}
}  // namespace

std::uint32_t crc32c_update_portable(std::uint32_t state, std::span<const std::uint8_t> bytes) {
  // CRC-32C without init/final XOR so `state` carries the running register. Boost keeps the
  // register unreflected internally and reflects it on output, so it is seeded reflected.
  boost::crc_optimal<32, 0x1EDC6F41, 0, 0, true, true> crc(bit_reverse(state));
  crc.process_bytes(bytes.data(), bytes.size());
  return crc.checksum();
}

__attribute__((target("sse4.2"))) std::uint32_t crc32c_update_sse42(
    std::uint32_t state, std::span<const std::uint8_t> bytes) {
  const std::uint8_t* p = bytes.data();
  std::size_t n = bytes.size();
  std::uint64_t crc = state;
  while (n >= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    crc = _mm_crc32_u64(crc, word);
    p += 8;
    n -= 8;
  }
  auto crc32 = static_cast<std::uint32_t>(crc);
  while (n > 0) {
    crc32 = _mm_crc32_u8(crc32, *p++);
    --n;
  }
  return crc32;
}

bool cpu_has_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}

}  // namespace detail

void Crc32c::update(std::span<const std::uint8_t> bytes) {
  state_ = detail::cpu_has_sse42() ? detail::crc32c_update_sse42(state_, bytes)
                                   : detail::crc32c_update_portable(state_, bytes);
}

std::uint32_t crc32c(std::span<const std::uint8_t> bytes) {
  Crc32c crc;
  crc.update(bytes);
  return crc.value();
}

}  // namespace nvqos::nvmf
