// Pinned-map adoption decisions and the agent's persisted state: pure
// functions, no kernel (the BTF is built in memory with libbpf).
#include <bpf/btf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>

#include <memory>

#include "pinning.hpp"

namespace nvqos::agent {
namespace {

MapShape stats_shape(std::vector<std::string> layout, std::uint32_t value_size = 16, std::uint32_t max = 64) {
  MapShape s;
  s.type = BPF_MAP_TYPE_PERCPU_ARRAY;
  s.key_size = 4;
  s.value_size = value_size;
  s.max_entries = max;
  s.key_layout = {"@0:32"};
  s.value_layout = std::move(layout);
  return s;
}

TEST(MapAdoption, IdenticalShapeIsReused) {
  const auto s = stats_shape({"bytes@0:64", "packets@64:64"});
  const auto d = decide_map_adoption(s, s);
  EXPECT_EQ(d.action, MapAction::reuse);
  EXPECT_TRUE(d.reason.empty());
}

TEST(MapAdoption, AppendedFieldsAreMigrated) {
  const auto old_shape = stats_shape({"bytes@0:64", "packets@64:64"});
  const auto new_shape = stats_shape({"bytes@0:64", "packets@64:64", "dropped@128:64"}, 24);
  const auto d = decide_map_adoption(old_shape, new_shape);
  EXPECT_EQ(d.action, MapAction::migrate);
  EXPECT_NE(d.reason.find("16 -> 24 bytes"), std::string::npos) << d.reason;
}

TEST(MapAdoption, ResizedTableIsMigrated) {
  auto old_shape = stats_shape({"bytes@0:64"}, 8, 1024);
  auto new_shape = stats_shape({"bytes@0:64"}, 8, 4096);
  old_shape.type = new_shape.type = BPF_MAP_TYPE_LRU_HASH;
  const auto d = decide_map_adoption(old_shape, new_shape);
  EXPECT_EQ(d.action, MapAction::migrate);
  EXPECT_NE(d.reason.find("max_entries 1024 -> 4096"), std::string::npos) << d.reason;
}

TEST(MapAdoption, MovedFieldIsReplacedNotReinterpreted) {
  // Same size, but `packets` now sits where `bytes` was: copying would mix them up.
  const auto old_shape = stats_shape({"bytes@0:64", "packets@64:64"});
  const auto new_shape = stats_shape({"packets@0:64", "bytes@64:64"});
  const auto d = decide_map_adoption(old_shape, new_shape);
  EXPECT_EQ(d.action, MapAction::replace);
  EXPECT_NE(d.reason.find("bytes@0:64"), std::string::npos) << d.reason;
}

TEST(MapAdoption, ShrunkValueIsReplaced) {
  const auto d = decide_map_adoption(stats_shape({"a@0:64", "b@64:64"}), stats_shape({"a@0:64"}, 8));
  EXPECT_EQ(d.action, MapAction::replace);
}

TEST(MapAdoption, TypeOrKeyChangeIsReplaced) {
  auto old_shape = stats_shape({"a@0:64"}, 8);
  auto new_shape = old_shape;
  new_shape.type = BPF_MAP_TYPE_PERCPU_HASH;
  EXPECT_EQ(decide_map_adoption(old_shape, new_shape).action, MapAction::replace);
  new_shape = old_shape;
  new_shape.key_size = 8;
  new_shape.key_layout = {"@0:64"};
  EXPECT_EQ(decide_map_adoption(old_shape, new_shape).action, MapAction::replace);
}

TEST(MapAdoption, WithoutBtfOnlyEqualSizesAreTrusted) {
  auto old_shape = stats_shape({}, 8);
  auto same = old_shape;
  EXPECT_EQ(decide_map_adoption(old_shape, same).action, MapAction::reuse);
  auto grown = stats_shape({"a@0:64", "b@64:64"});
  EXPECT_EQ(decide_map_adoption(old_shape, grown).action, MapAction::replace);
}

TEST(MapAdoption, RingBufferOfAnotherSizeIsReplaced) {
  MapShape a;
  a.type = BPF_MAP_TYPE_RINGBUF;
  a.max_entries = 1 << 18;
  MapShape b = a;
  b.max_entries = 1 << 20;
  const auto d = decide_map_adoption(a, b);
  EXPECT_EQ(d.action, MapAction::replace);
  EXPECT_EQ(decide_map_adoption(a, a).action, MapAction::reuse);
}

TEST(BtfLayout, FlattensNestedStructsAndArrays) {
  std::unique_ptr<btf, void (*)(btf*)> b(btf__new_empty(), btf__free);
  ASSERT_TRUE(b);
  const int u64 = btf__add_int(b.get(), "u64", 8, 0);
  const int u32 = btf__add_int(b.get(), "u32", 4, 0);
  const int arr = btf__add_array(b.get(), u32, u64, 2);  // index type, element type, count
  const int inner = btf__add_struct(b.get(), "inner", 8);
  btf__add_field(b.get(), "x", u32, 0, 0);
  btf__add_field(b.get(), "y", u32, 32, 0);
  const int outer = btf__add_struct(b.get(), "outer", 32);
  btf__add_field(b.get(), "bytes", arr, 0, 0);
  btf__add_field(b.get(), "in", inner, 128, 0);
  btf__add_field(b.get(), "flags", u64, 192, 0);
  ASSERT_GT(outer, 0);
  const auto layout = btf_layout(b.get(), outer);
  const std::vector<std::string> expected{"bytes[2]@0:64", "in.x@128:32", "in.y@160:32", "flags@192:64"};
  EXPECT_EQ(layout, expected);
}

TEST(PersistedState, RoundTripsThroughJson) {
  PersistedState s;
  s.agent_version = "0.1.0";
  s.created_clsact = true;
  s.adoptions = 3;
  s.slow_commands_received = 42;
  s.reattachments = 1;
  s.tenant_ids = {{"default", 0}, {"gold", 1}};
  s.timeouts[CommandKey{1, 2, 0}] = 7;
  std::string why;
  auto back = PersistedState::from_json(s.to_json(), why);
  ASSERT_TRUE(back) << why;
  EXPECT_EQ(back->to_json(), s.to_json());
  EXPECT_EQ(back->timeouts.at(CommandKey{1, 2, 0}), 7u);
}

TEST(PersistedState, RefusesAnotherFormat) {
  auto j = PersistedState{}.to_json();
  j["format"] = kAgentStateFormat + 1;
  std::string why;
  EXPECT_FALSE(PersistedState::from_json(j, why));
  EXPECT_NE(why.find("format"), std::string::npos);
}

}  // namespace
}  // namespace nvqos::agent
