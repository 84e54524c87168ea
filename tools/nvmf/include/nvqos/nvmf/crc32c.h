// CRC32C (Castagnoli), the header and data digest of NVMe/TCP (HDGST/DDGST).
//
// Digests go on the wire little-endian. The SSE4.2 crc32 instruction is used when the CPU has it
// (a 4 KiB digest costs ~0.3 µs instead of ~4 µs); otherwise Boost.CRC computes it. Debian 12 ships
// no C/C++ CRC32C library (only Python and npm bindings), and Boost is already a dependency.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace nvqos::nvmf {

// Incremental CRC32C: update() any number of times, then value().
class Crc32c {
 public:
  void update(std::span<const std::uint8_t> bytes);
  void update(const void* data, std::size_t size) {
    update({static_cast<const std::uint8_t*>(data), size});
  }
  std::uint32_t value() const { return ~state_; }

 private:
  std::uint32_t state_ = 0xffffffffu;
};

// CRC32C of one buffer: crc32c("123456789") == 0xe3069283.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes);

namespace detail {
// The two implementations behind Crc32c, exposed so tests can check they agree.
// `state` is the running (pre-inverted) register.
std::uint32_t crc32c_update_portable(std::uint32_t state, std::span<const std::uint8_t> bytes);
std::uint32_t crc32c_update_sse42(std::uint32_t state, std::span<const std::uint8_t> bytes);
bool cpu_has_sse42();
}  // namespace detail

}  // namespace nvqos::nvmf
