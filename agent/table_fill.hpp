// How full the data path's bounded tables are, and how much memory the agent
// holds: what an operator watches under a connection flood.
#pragma once

#include <cstdint>
#include <string>

struct bpf_map;

namespace nvqos::agent {

// One bounded (LRU) table of an interface's data path.
struct TableFill {
  std::string table;  // the map's name: flow_table, handshakes, inflight_cmds
  std::uint64_t entries = 0;
  std::uint32_t capacity = 0;
};

// Entries in a hash map, counted with batched lookups (a few syscalls for the
// whole table rather than one per entry); falls back to walking the keys when
// the kernel has no batch operations for the map.
std::uint64_t count_map_entries(const bpf_map* map);

// The agent's resident set size (/proc/self/statm), 0 if unreadable.
std::uint64_t resident_memory_bytes();

}  // namespace nvqos::agent
