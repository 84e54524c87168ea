#include "table_fill.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <vector>

namespace nvqos::agent {
namespace {

// Entries per batched lookup: a hash bucket holding more than this fails the
// batch with ENOSPC, which never happens with buckets this large.
constexpr std::uint32_t kBatch = 4096;

std::uint64_t walk_keys(int fd, std::uint32_t key_size) {
  std::vector<std::uint8_t> key(key_size), next(key_size);
  const void* prev = nullptr;
  std::uint64_t n = 0;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    key.swap(next);
    prev = key.data();
    ++n;
  }
  return n;
}

}  // namespace

std::uint64_t count_map_entries(const bpf_map* map) {
  const int fd = bpf_map__fd(map);
  const std::uint32_t key_size = bpf_map__key_size(map);
  std::uint32_t value_size = bpf_map__value_size(map);
  if (fd < 0) return 0;
  if (bpf_map__type(map) == BPF_MAP_TYPE_PERCPU_HASH || bpf_map__type(map) == BPF_MAP_TYPE_LRU_PERCPU_HASH)
    value_size = ((value_size + 7) & ~7u) * static_cast<std::uint32_t>(libbpf_num_possible_cpus());
  std::vector<std::uint8_t> keys(std::size_t{kBatch} * key_size), values(std::size_t{kBatch} * value_size);
  std::uint64_t total = 0;
  std::uint64_t in_batch = 0, out_batch = 0;  // opaque cursor: large enough for any map's
  void* in = nullptr;
  for (;;) {
    std::uint32_t count = kBatch;
    const int err = bpf_map_lookup_batch(fd, in, &out_batch, keys.data(), values.data(), &count, nullptr);
    total += count;
    if (err == 0) {
      in_batch = out_batch;
      in = &in_batch;
      continue;
    }
    if (errno == ENOENT) return total;  // the last batch
    return walk_keys(fd, key_size);     // no batch support (or a bucket too large): walk instead
  }
}

std::uint64_t resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace nvqos::agent
