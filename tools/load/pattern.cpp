#include "pattern.hpp"

#include <cstring>

namespace nvqos::load {
namespace {

struct ChunkHeader {
  uint32_t magic;
  uint32_t generation;
  uint64_t offset;
};
static_assert(sizeof(ChunkHeader) == 16);

uint64_t seed_of(uint64_t offset, uint32_t generation) {
  uint64_t x = offset * 0x9e3779b97f4a7c15ull ^ (uint64_t{generation} << 32 | generation);
  return x ? x : 1;
}

// xorshift64: cheap and good enough to make misplaced data differ.
void fill_chunk(uint8_t* chunk, uint64_t offset, uint32_t generation) {
  ChunkHeader h{kPatternMagic, generation, offset};
  std::memcpy(chunk, &h, sizeof h);
  uint64_t x = seed_of(offset, generation);
  for (uint32_t i = sizeof h; i < kPatternChunk; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(chunk + i, &x, 8);
  }
}

}  // namespace

void fill_pattern(std::span<uint8_t> buf, uint64_t offset, uint32_t generation) {
  for (size_t i = 0; i + kPatternChunk <= buf.size(); i += kPatternChunk)
    fill_chunk(buf.data() + i, offset + i, generation);
}

PatternCheck check_pattern(std::span<const uint8_t> buf, uint64_t offset, uint32_t expected_generation) {
  PatternCheck result;
  uint8_t want[kPatternChunk];
  for (size_t i = 0; i + kPatternChunk <= buf.size(); i += kPatternChunk) {
    const uint8_t* chunk = buf.data() + i;
    ChunkHeader h;
    std::memcpy(&h, chunk, sizeof h);
    bool ok = false;
    if (h.magic != kPatternMagic) {
      // Never written with a pattern: fine unless this run wrote it.
      if (expected_generation == 0) {
        ++result.unwritten;
        continue;
      }
    } else if (h.offset == offset + i && (expected_generation == 0 || h.generation == expected_generation)) {
      fill_chunk(want, offset + i, h.generation);
      ok = std::memcmp(want, chunk, kPatternChunk) == 0;
    }
    if (ok) {
      ++result.matched;
    } else {
      if (result.mismatched++ == 0) result.first_bad_offset = offset + i;
    }
  }
  return result;
}

}  // namespace nvqos::load
