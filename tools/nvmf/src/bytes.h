// Little-endian field access for wire formats (NVMe and NVMe/TCP are little-endian throughout).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace nvqos::nvmf::wire {

inline std::uint16_t get16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t get32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::uint64_t get64(const std::uint8_t* p) {
  return get32(p) | (static_cast<std::uint64_t>(get32(p + 4)) << 32);
}
inline void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}
inline void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline void put64(std::uint8_t* p, std::uint64_t v) {
  put32(p, static_cast<std::uint32_t>(v));
  put32(p + 4, static_cast<std::uint32_t>(v >> 32));
}

// Fixed-size ASCII field, padded with `pad` (spaces for SN/MN/FR, NULs for NQNs).
inline void put_string(std::uint8_t* p, std::size_t field, std::string_view s, char pad) {
  std::memset(p, pad, field);
  std::memcpy(p, s.data(), s.size() < field ? s.size() : field);
}
// Reads up to the first NUL, dropping trailing spaces.
inline std::string get_string(const std::uint8_t* p, std::size_t field) {
  std::size_t n = 0;
  while (n < field && p[n] != 0) ++n;
  while (n > 0 && p[n - 1] == ' ') --n;
  return std::string(reinterpret_cast<const char*>(p), n);
}

}  // namespace nvqos::nvmf::wire
