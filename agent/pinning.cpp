#include "pinning.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "log.hpp"

namespace nvqos::agent {
namespace {

bool on_bpffs(const std::string& path) {
  struct statfs fs {};
  return statfs(path.c_str(), &fs) == 0 && static_cast<unsigned long>(fs.f_type) == BPF_FS_MAGIC;
}

bool is_percpu(std::uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

// Maps whose entries are plain data that can be copied key by key.
bool migratable(std::uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_ARRAY:
    case BPF_MAP_TYPE_HASH:
    case BPF_MAP_TYPE_LRU_HASH:
    case BPF_MAP_TYPE_LPM_TRIE:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
      return true;
    default:
      return false;
  }
}

bool is_array(std::uint32_t type) { return type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY; }

void flatten(const btf* b, std::uint32_t id, const std::string& path, std::uint64_t bit_offset,
             std::vector<std::string>& out, int depth) {
  if (depth > 16) return;  // BTF of maps is never this deep; guards against a cycle
  id = btf__resolve_type(b, id);
  const btf_type* t = btf__type_by_id(b, id);
  if (!t) return;
  if (btf_is_struct(t) || btf_is_union(t)) {
    const btf_member* m = btf_members(t);
    for (std::uint16_t i = 0; i < btf_vlen(t); ++i, ++m) {
      const char* name = btf__name_by_offset(b, m->name_off);
      std::string member = path.empty() ? std::string(name ? name : "") : path + "." + (name ? name : "");
      flatten(b, m->type, member, bit_offset + btf_member_bit_offset(t, i), out, depth + 1);
    }
    return;
  }
  if (btf_is_array(t)) {
    const struct btf_array* a = btf_array(t);
    const std::string element = path + "[" + std::to_string(a->nelems) + "]";
    const long long elem_size = btf__resolve_size(b, a->type);
    out.push_back(element + "@" + std::to_string(bit_offset) + ":" + std::to_string(elem_size * 8));
    const btf_type* et = btf__type_by_id(b, btf__resolve_type(b, a->type));
    if (et && (btf_is_struct(et) || btf_is_union(et))) flatten(b, a->type, element, bit_offset, out, depth + 1);
    return;
  }
  const long long size = btf__resolve_size(b, id);
  out.push_back(path + "@" + std::to_string(bit_offset) + ":" + std::to_string(size < 0 ? 0 : size * 8));
}

MapShape shape_of_object_map(const bpf_map* map, const bpf_object* obj) {
  MapShape s;
  s.type = bpf_map__type(map);
  s.key_size = bpf_map__key_size(map);
  s.value_size = bpf_map__value_size(map);
  s.max_entries = bpf_map__max_entries(map);
  s.flags = bpf_map__map_flags(map);
  if (const btf* b = bpf_object__btf(obj)) {
    if (auto k = bpf_map__btf_key_type_id(map)) s.key_layout = btf_layout(b, k);
    if (auto v = bpf_map__btf_value_type_id(map)) s.value_layout = btf_layout(b, v);
  }
  return s;
}

Result<MapShape> shape_of_pinned_map(int fd) {
  bpf_map_info info{};
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len)) return Error::from_errno(errno, "read map info");
  MapShape s;
  s.type = info.type;
  s.key_size = info.key_size;
  s.value_size = info.value_size;
  s.max_entries = info.max_entries;
  s.flags = info.map_flags;
  if (info.btf_id) {
    std::unique_ptr<btf, void (*)(btf*)> b(btf__load_from_kernel_by_id(info.btf_id), btf__free);
    if (b && !libbpf_get_error(b.get())) {
      if (info.btf_key_type_id) s.key_layout = btf_layout(b.get(), info.btf_key_type_id);
      if (info.btf_value_type_id) s.value_layout = btf_layout(b.get(), info.btf_value_type_id);
    } else {
      b.release();
    }
  }
  return s;
}

std::size_t value_buffer_size(std::uint32_t type, std::uint32_t value_size, int cpus) {
  if (!is_percpu(type)) return value_size;
  return ((value_size + 7) & ~std::size_t{7}) * static_cast<std::size_t>(cpus);
}

// Copies every entry of `old_fd` into `new_fd`, values zero-extended (per CPU
// for per-CPU maps). Entries that do not fit the new map are counted.
void migrate_entries(int old_fd, const MapShape& old_shape, int new_fd, const MapShape& new_shape, MapOutcome& out) {
  const int cpus = libbpf_num_possible_cpus();
  const std::size_t old_stride = is_percpu(old_shape.type) ? (old_shape.value_size + 7) & ~std::size_t{7} : old_shape.value_size;
  const std::size_t new_stride = is_percpu(new_shape.type) ? (new_shape.value_size + 7) & ~std::size_t{7} : new_shape.value_size;
  const int copies = is_percpu(old_shape.type) ? cpus : 1;
  std::vector<std::uint8_t> old_value(value_buffer_size(old_shape.type, old_shape.value_size, cpus));
  std::vector<std::uint8_t> new_value(value_buffer_size(new_shape.type, new_shape.value_size, cpus));
  std::vector<std::uint8_t> key(old_shape.key_size), next(old_shape.key_size);
  auto copy_one = [&](const void* k) {
    if (bpf_map_lookup_elem(old_fd, k, old_value.data())) return;
    std::fill(new_value.begin(), new_value.end(), 0);
    for (int c = 0; c < copies; ++c)
      std::memcpy(new_value.data() + c * new_stride, old_value.data() + c * old_stride, old_shape.value_size);
    if (bpf_map_update_elem(new_fd, k, new_value.data(), BPF_ANY) == 0) ++out.migrated_entries;
    else ++out.dropped_entries;
  };
  if (is_array(old_shape.type)) {
    for (std::uint32_t i = 0; i < old_shape.max_entries; ++i) {
      if (i >= new_shape.max_entries) {
        ++out.dropped_entries;
        continue;
      }
      copy_one(&i);
    }
    return;
  }
  const void* prev = nullptr;
  while (bpf_map_get_next_key(old_fd, prev, next.data()) == 0) {
    key = next;
    prev = key.data();
    copy_one(key.data());
  }
}

}  // namespace

const char* to_string(MapAction a) {
  switch (a) {
    case MapAction::create: return "created";
    case MapAction::reuse: return "reused";
    case MapAction::migrate: return "migrated";
    case MapAction::replace: return "replaced";
  }
  return "created";
}

std::vector<std::string> btf_layout(const btf* b, std::uint32_t type_id) {
  std::vector<std::string> out;
  flatten(b, type_id, "", 0, out, 0);
  return out;
}

MapDecision decide_map_adoption(const MapShape& pinned, const MapShape& wanted) {
  if (pinned.type != wanted.type)
    return {MapAction::replace, "map type changed (" + std::to_string(pinned.type) + " -> " +
                                    std::to_string(wanted.type) + ")"};
  if (pinned.key_size != wanted.key_size)
    return {MapAction::replace, "key size changed (" + std::to_string(pinned.key_size) + " -> " +
                                    std::to_string(wanted.key_size) + " bytes)"};
  if (!pinned.key_layout.empty() && !wanted.key_layout.empty() && pinned.key_layout != wanted.key_layout)
    return {MapAction::replace, "key layout changed"};
  const bool layouts_known = !pinned.value_layout.empty() && !wanted.value_layout.empty();
  const bool same_value = pinned.value_size == wanted.value_size && (!layouts_known || pinned.value_layout == wanted.value_layout);
  if (same_value && pinned.max_entries == wanted.max_entries && pinned.flags == wanted.flags) return {MapAction::reuse, ""};

  std::string what;
  if (pinned.max_entries != wanted.max_entries)
    what = "max_entries " + std::to_string(pinned.max_entries) + " -> " + std::to_string(wanted.max_entries);
  if (pinned.flags != wanted.flags) what += (what.empty() ? "" : ", ") + std::string("map flags changed");
  if (!same_value)
    what += (what.empty() ? "" : ", ") + std::string("value ") + std::to_string(pinned.value_size) + " -> " +
            std::to_string(wanted.value_size) + " bytes";
  if (!migratable(pinned.type)) return {MapAction::replace, what + " (entries of this map type are not copied)"};
  if (same_value) return {MapAction::migrate, what};
  if (!layouts_known) return {MapAction::replace, what + " without BTF to prove the old fields unchanged"};
  if (wanted.value_size < pinned.value_size) return {MapAction::replace, what + " (value shrank)"};
  const std::set<std::string> now(wanted.value_layout.begin(), wanted.value_layout.end());
  for (const auto& member : pinned.value_layout)
    if (!now.count(member)) return {MapAction::replace, what + ": member " + member + " moved, resized or removed"};
  return {MapAction::migrate, what + " (fields appended)"};
}

nlohmann::json PersistedState::to_json() const {
  nlohmann::json j{{"format", kAgentStateFormat},
                   {"agent_version", agent_version},
                   {"created_clsact", created_clsact},
                   {"adoptions", adoptions},
                   {"slow_commands_received", slow_commands_received},
                   {"reattachments", reattachments},
                   {"tenant_ids", tenant_ids},
                   {"timeouts", nlohmann::json::array()}};
  for (const auto& [k, n] : timeouts) j["timeouts"].push_back({k.tenant_id, k.op, k.role, n});
  return j;
}

std::optional<PersistedState> PersistedState::from_json(const nlohmann::json& j, std::string& why) {
  try {
    if (j.value("format", 0) != kAgentStateFormat) {
      why = "agent_state format " + std::to_string(j.value("format", 0)) + ", this agent reads " +
            std::to_string(kAgentStateFormat);
      return std::nullopt;
    }
    PersistedState s;
    s.agent_version = j.value("agent_version", "");
    s.created_clsact = j.value("created_clsact", false);
    s.adoptions = j.value("adoptions", std::uint64_t{0});
    s.slow_commands_received = j.value("slow_commands_received", std::uint64_t{0});
    s.reattachments = j.value("reattachments", std::uint64_t{0});
    if (j.contains("tenant_ids")) s.tenant_ids = j.at("tenant_ids").get<std::map<std::string, std::uint32_t>>();
    if (j.contains("timeouts"))
      for (const auto& t : j.at("timeouts"))
        s.timeouts[CommandKey{t.at(0).get<std::uint32_t>(), t.at(1).get<std::uint8_t>(), t.at(2).get<std::uint8_t>()}] =
            t.at(3).get<std::uint64_t>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    why = std::string("agent_state unreadable: ") + e.what();
    return std::nullopt;
  }
}

Result<InterfacePins> InterfacePins::open(const std::string& root, const std::string& ifname) {
  std::error_code ec;
  std::filesystem::path r(root);
  if (!std::filesystem::is_directory(r, ec)) {
    if (!on_bpffs(r.parent_path().string()))
      return Error{ENOTSUP, "pin directory " + root + " is not on bpffs (" + r.parent_path().string() +
                                " is not a bpf filesystem; mount one or use --pin-dir)"};
    if (::mkdir(root.c_str(), 0700) && errno != EEXIST) return Error::from_errno(errno, "create pin directory " + root);
  }
  if (!on_bpffs(root)) return Error{ENOTSUP, "pin directory " + root + " is not on bpffs"};
  const std::string dir = root + "/" + ifname;
  if (::mkdir(dir.c_str(), 0700) && errno != EEXIST) return Error::from_errno(errno, "create pin directory " + dir);
  return InterfacePins(root, dir);
}

InterfacePins::InterfacePins(InterfacePins&& o) noexcept
    : root_(std::move(o.root_)),
      dir_(std::move(o.dir_)),
      set_aside_(std::move(o.set_aside_)),
      outcomes_(std::move(o.outcomes_)),
      state_fd_(o.state_fd_),
      last_state_written_(std::move(o.last_state_written_)) {
  o.state_fd_ = -1;
  o.set_aside_.clear();
}

InterfacePins::~InterfacePins() {
  for (auto& s : set_aside_)
    if (s.old_fd >= 0) ::close(s.old_fd);
  if (state_fd_ >= 0) ::close(state_fd_);
}

bool InterfacePins::has(const std::string& name) const {
  struct stat st {};
  return ::stat(path(name).c_str(), &st) == 0;
}

Status InterfacePins::plan(bpf_object* obj) {
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    const std::string name = bpf_map__name(map);
    if (!has(name)) {
      outcomes_.push_back({name, MapAction::create, "", 0, 0});
      continue;
    }
    int fd = bpf_obj_get(path(name).c_str());
    if (fd < 0) return Error::from_errno(errno, "open pinned map " + path(name), "CAP_BPF");
    auto pinned = shape_of_pinned_map(fd);
    if (!pinned) {
      ::close(fd);
      return pinned.error().with_context("pinned map " + path(name));
    }
    const MapShape wanted = shape_of_object_map(map, obj);
    MapDecision d = decide_map_adoption(pinned.value(), wanted);
    if (d.action == MapAction::reuse) {
      int err = bpf_map__reuse_fd(map, fd);
      ::close(fd);  // reuse_fd dups it
      if (err) return Error::from_errno(err, "adopt pinned map " + path(name));
      outcomes_.push_back({name, MapAction::reuse, "", 0, 0});
      continue;
    }
    set_aside_.push_back({name, fd, pinned.value(), d});
  }
  return ok_status();
}

Status InterfacePins::pin_after_load(bpf_object* obj) {
  for (auto& s : set_aside_) {
    bpf_map* map = bpf_object__find_map_by_name(obj, s.map.c_str());
    MapOutcome out{s.map, s.decision.action, s.decision.reason, 0, 0};
    if (map && s.decision.action == MapAction::migrate)
      migrate_entries(s.old_fd, s.old_shape, bpf_map__fd(map), shape_of_object_map(map, obj), out);
    ::close(s.old_fd);
    s.old_fd = -1;
    unpin(s.map);  // the programs still attached hold the old map until they are swapped
    auto level = out.action == MapAction::migrate ? log::Level::info : log::Level::warn;
    log::write(level, out.action == MapAction::migrate ? "pinned map migrated to the new layout"
                                                        : "pinned map replaced: its entries start from empty",
               {{"dir", dir_}, {"map", s.map}, {"reason", s.decision.reason},
                {"entries_copied", std::to_string(out.migrated_entries)},
                {"entries_dropped", std::to_string(out.dropped_entries)}});
    outcomes_.push_back(std::move(out));
  }
  set_aside_.clear();
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    const std::string name = bpf_map__name(map);
    if (has(name)) continue;  // reused: already pinned
    if (bpf_obj_pin(bpf_map__fd(map), path(name).c_str()))
      return Error::from_errno(errno, "pin map " + path(name), "CAP_BPF");
  }
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    if (bpf_program__fd(prog) < 0) continue;  // not loaded (XDP goes through libxdp)
    if (auto s = pin_program(bpf_program__name(prog), bpf_program__fd(prog)); !s) return s;
  }
  return ensure_state_map();
}

Status InterfacePins::pin_program(const std::string& name, int prog_fd) {
  unpin(name);
  if (bpf_obj_pin(prog_fd, path(name).c_str())) return Error::from_errno(errno, "pin program " + path(name), "CAP_BPF");
  return ok_status();
}

void InterfacePins::unpin(const std::string& name) { ::unlink(path(name).c_str()); }

bool InterfacePins::all_reused() const {
  return std::all_of(outcomes_.begin(), outcomes_.end(), [](const MapOutcome& o) { return o.action == MapAction::reuse; });
}

Status InterfacePins::ensure_state_map() {
  if (state_fd_ >= 0) return ok_status();
  if (has(kAgentStateMap)) {
    state_fd_ = bpf_obj_get(path(kAgentStateMap).c_str());
    if (state_fd_ >= 0) {
      bpf_map_info info{};
      __u32 len = sizeof info;
      if (bpf_obj_get_info_by_fd(state_fd_, &info, &len) == 0 && info.type == BPF_MAP_TYPE_ARRAY &&
          info.value_size == kAgentStateBytes)
        return ok_status();
      ::close(state_fd_);
      state_fd_ = -1;
    }
    unpin(kAgentStateMap);
  }
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  state_fd_ = bpf_map_create(BPF_MAP_TYPE_ARRAY, kAgentStateMap, sizeof(__u32), kAgentStateBytes, 1, &opts);
  if (state_fd_ < 0) return Error::from_errno(errno, "create map agent_state", "CAP_BPF");
  if (bpf_obj_pin(state_fd_, path(kAgentStateMap).c_str()))
    return Error::from_errno(errno, "pin map " + path(kAgentStateMap), "CAP_BPF");
  return ok_status();
}

Result<std::optional<PersistedState>> InterfacePins::read_state() const {
  if (!has(kAgentStateMap)) return std::optional<PersistedState>{};
  int fd = bpf_obj_get(path(kAgentStateMap).c_str());
  if (fd < 0) return Error::from_errno(errno, "open " + path(kAgentStateMap), "CAP_BPF");
  std::vector<char> buf(kAgentStateBytes + 1, 0);
  __u32 zero = 0;
  bpf_map_info info{};
  __u32 len = sizeof info;
  int err = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (!err && info.value_size != kAgentStateBytes) err = -EINVAL;
  if (!err) err = bpf_map_lookup_elem(fd, &zero, buf.data()) ? -errno : 0;
  ::close(fd);
  if (err) return Error::from_errno(err, "read " + path(kAgentStateMap));
  auto j = nlohmann::json::parse(buf.data(), nullptr, false);
  if (j.is_discarded()) return std::optional<PersistedState>{};  // created but never written
  std::string why;
  auto state = PersistedState::from_json(j, why);
  if (!state) return Error{EINVAL, path(kAgentStateMap) + ": " + why};
  return state;
}

Status InterfacePins::write_state(const PersistedState& state) {
  if (auto s = ensure_state_map(); !s) return s;
  const std::string full = state.to_json().dump();
  if (full == last_state_written_) return ok_status();
  std::string text = full;
  if (text.size() >= kAgentStateBytes) {
    // Thousands of tenants: keep what the restart needs most (ownership and counters).
    PersistedState trimmed = state;
    trimmed.tenant_ids.clear();
    text = trimmed.to_json().dump();
    log::warn("agent_state too large for the tenant list: tenant ids are not kept across a restart",
              {{"dir", dir_}, {"tenants", std::to_string(state.tenant_ids.size())}});
  }
  std::vector<char> buf(kAgentStateBytes, 0);
  std::memcpy(buf.data(), text.data(), std::min<std::size_t>(text.size(), kAgentStateBytes - 1));
  __u32 zero = 0;
  if (bpf_map_update_elem(state_fd_, &zero, buf.data(), BPF_ANY))
    return Error::from_errno(errno, "write " + path(kAgentStateMap));
  last_state_written_ = full;
  return ok_status();
}

void InterfacePins::remove_all() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) ::unlink(entry.path().c_str());
  ::rmdir(dir_.c_str());
  ::rmdir(root_.c_str());  // fails (and stays) while other interfaces are pinned
}

std::optional<PersistedState> peek_persisted_state(const std::string& root, const std::string& ifname) {
  const std::string dir = root + "/" + ifname;
  struct stat st {};
  if (::stat((dir + "/" + kAgentStateMap).c_str(), &st) != 0) return std::nullopt;
  InterfacePins pins(root, dir);
  auto state = pins.read_state();
  if (!state) {
    log::warn("previous agent state unreadable, starting fresh", {{"error", state.error().message}});
    return std::nullopt;
  }
  return state.value();
}

}  // namespace nvqos::agent
