// Hitless restart: the kernel objects of one interface pinned in bpffs
// (<pin root>/<ifname>/: every map of the BPF object by name, the attached
// programs, and `agent_state`, the agent's own bookkeeping), so that a
// restarted agent adopts the maps (counters, flows, commands in flight) and
// swaps in its programs without a gap. A map whose layout differs from what
// the new build expects is migrated (zero-extended values, resized table) or
// replaced, each logged with its reason.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "result.hpp"

struct btf;

namespace nvqos::agent {

inline constexpr const char* kDefaultPinRoot = "/sys/fs/bpf/nvqos";
// The agent's own state kept with the pins: JSON in a one-entry array map,
// because bpffs holds only BPF objects.
inline constexpr const char* kAgentStateMap = "agent_state";
inline constexpr std::uint32_t kAgentStateBytes = 256 * 1024;
inline constexpr int kAgentStateFormat = 1;

// What must agree for programs of one build to use a map made by another.
struct MapShape {
  std::uint32_t type = 0;
  std::uint32_t key_size = 0;
  std::uint32_t value_size = 0;
  std::uint32_t max_entries = 0;
  std::uint32_t flags = 0;
  // BTF layouts (see btf_layout()); empty when the map carries no BTF.
  std::vector<std::string> key_layout;
  std::vector<std::string> value_layout;
};

enum class MapAction { create, reuse, migrate, replace };
const char* to_string(MapAction a);

struct MapDecision {
  MapAction action = MapAction::reuse;
  std::string reason;  // empty for reuse
};

// Pure: what to do with a pinned map of shape `pinned` when this build's
// programs expect `wanted`. Migration copies every entry into a new map with
// values zero-extended; it is chosen only when every member of the old value
// keeps its name, offset and size (fields appended or the table resized), so
// no value is reinterpreted. Anything else is replaced (starts empty).
MapDecision decide_map_adoption(const MapShape& pinned, const MapShape& wanted);

// Flattened layout of BTF type `type_id`: one "path@bit_offset:bits" entry per
// scalar member (arrays as "path[N]"), typedefs and qualifiers resolved.
std::vector<std::string> btf_layout(const btf* btf, std::uint32_t type_id);

// The agent's bookkeeping that must outlive the process for counters to
// continue: what it created, its own counters, and the tenant ids whose
// kernel counters the maps hold.
struct PersistedState {
  std::string agent_version;
  bool created_clsact = false;
  std::uint64_t adoptions = 0;  // agent starts that adopted this interface's pins
  std::uint64_t slow_commands_received = 0;
  std::uint64_t reattachments = 0;
  std::map<std::string, std::uint32_t> tenant_ids;
  std::map<CommandKey, std::uint64_t> timeouts;

  nlohmann::json to_json() const;
  // Refuses a document of another format with the reason in `why`.
  static std::optional<PersistedState> from_json(const nlohmann::json& j, std::string& why);
};

// What happened to each map at this start.
struct MapOutcome {
  std::string map;
  MapAction action = MapAction::create;
  std::string reason;
  std::uint64_t migrated_entries = 0;
  std::uint64_t dropped_entries = 0;  // did not fit the new map
};

// The pin directory of one interface.
class InterfacePins {
 public:
  // Creates <root>/<ifname> (root must be on bpffs).
  static Result<InterfacePins> open(const std::string& root, const std::string& ifname);
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  bool has(const std::string& name) const;
  // True when a previous agent left maps here.
  bool adoptable() const { return has(kAgentStateMap); }

  // Before the object is loaded: reuses every compatible pinned map
  // (bpf_map__reuse_fd) and remembers the others for after the load.
  Status plan(bpf_object* obj);
  // After the load: migrates or replaces what plan() set aside, then pins
  // every map and program of `obj` that is not pinned yet.
  Status pin_after_load(bpf_object* obj);
  // Pins (or re-pins) one program, e.g. the XDP program once attached.
  Status pin_program(const std::string& name, int prog_fd);
  void unpin(const std::string& name);

  const std::vector<MapOutcome>& outcomes() const { return outcomes_; }
  // Every map was reused: programs bound to the old maps (an attached XDP
  // program) still see the same maps.
  bool all_reused() const;

  // The agent's state map: read the previous run's, write the current.
  Result<std::optional<PersistedState>> read_state() const;
  Status write_state(const PersistedState& state);

  // Removes every pin and the directory (and the root when empty).
  void remove_all();

 private:
  explicit InterfacePins(std::string root, std::string dir) : root_(std::move(root)), dir_(std::move(dir)) {}
  Status ensure_state_map();
  friend std::optional<PersistedState> peek_persisted_state(const std::string& root, const std::string& ifname);

  struct SetAside {
    std::string map;
    int old_fd = -1;
    MapShape old_shape;
    MapDecision decision;
  };
  std::string root_;
  std::string dir_;
  std::vector<SetAside> set_aside_;
  std::vector<MapOutcome> outcomes_;
  int state_fd_ = -1;
  std::string last_state_written_;

 public:
  InterfacePins(InterfacePins&& other) noexcept;
  InterfacePins& operator=(InterfacePins&&) = delete;
  InterfacePins(const InterfacePins&) = delete;
  ~InterfacePins();
};

// Reads the persisted state of <root>/<ifname> without creating anything;
// nullopt when there is none (or it cannot be read: logged).
std::optional<PersistedState> peek_persisted_state(const std::string& root, const std::string& ifname);

}  // namespace nvqos::agent
