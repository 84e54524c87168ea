#include "slo_config.hpp"

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "config.hpp"
#include "nvqos/abi.h"

namespace nvqos::agent {
namespace {

using json = nlohmann::json;

constexpr double kMaxObjectiveUs = 60.0 * 1000 * 1000;  // a minute: beyond it a command counts as timed out

std::string at(const std::string& base, const std::string& key) { return base + "/" + key; }
std::string at(const std::string& base, std::size_t index) { return base + "/" + std::to_string(index); }

void only_keys(const json& obj, const std::string& where, std::initializer_list<const char*> known) {
  if (!obj.is_object()) throw ConfigError(where, "must be an object");
  for (const auto& [key, value] : obj.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (ok) continue;
    std::string list;
    for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    throw ConfigError(at(where, key), "unknown field (known here: " + list + ")");
  }
}

bool get_bool(const json& j, const std::string& where) {
  if (!j.is_boolean()) throw ConfigError(where, "must be true or false");
  return j.get<bool>();
}

SloObjectiveSpec parse_objective(const json& j, const std::string& where) {
  only_keys(j, where, {"op", "quantile", "max_latency_us"});
  SloObjectiveSpec o;
  if (!j.contains("op") || !j["op"].is_string())
    throw ConfigError(at(where, "op"), "required: \"read\", \"write\", \"flush\", \"admin\" or \"other\"");
  bool ok = false;
  o.op = slo_op_from_name(j["op"].get<std::string>(), ok);
  if (!ok)
    throw ConfigError(at(where, "op"), "\"" + j["op"].get<std::string>() +
                                           "\" is not an op (\"read\", \"write\", \"flush\", \"admin\" or \"other\")");
  if (!j.contains("quantile")) throw ConfigError(at(where, "quantile"), "required: e.g. 0.99 for p99");
  if (!j["quantile"].is_number() || !(j["quantile"].get<double>() >= 0.5) || !(j["quantile"].get<double>() < 1))
    throw ConfigError(at(where, "quantile"), "must be a number from 0.5 up to (not including) 1, e.g. 0.99");
  o.quantile = j["quantile"].get<double>();
  if (!j.contains("max_latency_us")) throw ConfigError(at(where, "max_latency_us"), "required: the target in microseconds");
  const json& max = j["max_latency_us"];
  if (!max.is_number() || !(max.get<double>() >= 1) || max.get<double>() > kMaxObjectiveUs)
    throw ConfigError(at(where, "max_latency_us"), "must be a latency in microseconds from 1 to 60000000 (60 s)");
  o.max_latency_ns = static_cast<std::uint64_t>(std::llround(max.get<double>() * 1000));
  return o;
}

}  // namespace

std::uint8_t slo_op_from_name(const std::string& name, bool& ok) {
  static const std::pair<const char*, std::uint8_t> kOps[] = {{"read", NVQOS_CMD_OP_READ},
                                                              {"write", NVQOS_CMD_OP_WRITE},
                                                              {"flush", NVQOS_CMD_OP_FLUSH},
                                                              {"admin", NVQOS_CMD_OP_ADMIN},
                                                              {"other", NVQOS_CMD_OP_OTHER}};
  for (auto [n, op] : kOps)
    if (name == n) {
      ok = true;
      return op;
    }
  ok = false;
  return 0;
}

ClassSloSpec parse_class_slo(const json& class_json, const std::string& where) {
  ClassSloSpec s;
  if (class_json.contains("objectives")) {
    const std::string list = at(where, "objectives");
    const json& objectives = class_json["objectives"];
    if (!objectives.is_array()) throw ConfigError(list, "must be a list of latency objectives");
    if (objectives.size() > 16) throw ConfigError(list, "at most 16 objectives per class");
    std::set<std::pair<std::uint8_t, double>> seen;
    for (std::size_t i = 0; i < objectives.size(); ++i) {
      SloObjectiveSpec o = parse_objective(objectives[i], at(list, i));
      if (!seen.emplace(o.op, o.quantile).second)
        throw ConfigError(at(list, i), "a second objective for the same op and quantile");
      s.objectives.push_back(o);
    }
  }
  if (class_json.contains("slo")) {
    const std::string slo = at(where, "slo");
    only_keys(class_json["slo"], slo, {"enabled", "min_share"});
    const json& j = class_json["slo"];
    if (j.contains("enabled")) s.enabled = get_bool(j["enabled"], at(slo, "enabled"));
    if (j.contains("min_share")) {
      if (!j["min_share"].is_number() || !(j["min_share"].get<double>() >= 0) || j["min_share"].get<double>() > 1)
        throw ConfigError(at(slo, "min_share"), "must be a share of the link from 0 to 1 (e.g. 0.1 for 10%)");
      s.min_share = j["min_share"].get<double>();
    }
  }
  return s;
}

SloControllerSpec parse_slo_controller(const json& j, const std::string& where) {
  only_keys(j, where, {"enabled", "dry_run", "interval_ms"});
  SloControllerSpec c;
  if (j.contains("enabled")) c.enabled = get_bool(j["enabled"], at(where, "enabled"));
  if (j.contains("dry_run")) c.dry_run = get_bool(j["dry_run"], at(where, "dry_run"));
  if (j.contains("interval_ms")) {
    const json& v = j["interval_ms"];
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() < static_cast<std::uint64_t>(kSloMinInterval.count()) ||
        v.get<std::uint64_t>() > static_cast<std::uint64_t>(kSloMaxInterval.count()))
      throw ConfigError(at(where, "interval_ms"), "must be a whole number of milliseconds from " +
                                                      std::to_string(kSloMinInterval.count()) + " to " +
                                                      std::to_string(kSloMaxInterval.count()));
    c.interval = std::chrono::milliseconds(v.get<std::uint64_t>());
  }
  return c;
}

}  // namespace nvqos::agent
