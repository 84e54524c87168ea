// The --verify data pattern. Every 512-byte chunk is self-describing: a header
// (magic, generation, byte offset in the namespace) followed by a pseudo-random
// fill seeded from (offset, generation). A read can therefore be checked on its
// own - misplaced, stale or corrupted data all fail - whatever block size wrote it.
#pragma once

#include <cstdint>
#include <span>

namespace nvqos::load {

inline constexpr uint32_t kPatternChunk = 512;
inline constexpr uint32_t kPatternMagic = 0x4c51564e;  // "NVQL"

// Fills `buf` (a multiple of 512 bytes) for namespace byte offset `offset`.
void fill_pattern(std::span<uint8_t> buf, uint64_t offset, uint32_t generation);

enum class ChunkCheck { kMatch, kUnwritten, kMismatch };
struct PatternCheck {
  uint32_t matched = 0;
  uint32_t unwritten = 0;
  uint32_t mismatched = 0;
  uint64_t first_bad_offset = 0;
};

// Checks `buf` read from `offset`. expected_generation 0 accepts any
// generation (the block was written before this run or by another job).
PatternCheck check_pattern(std::span<const uint8_t> buf, uint64_t offset, uint32_t expected_generation);

}  // namespace nvqos::load
