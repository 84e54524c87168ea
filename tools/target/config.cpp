#include "config.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace nvqos::target {

namespace {

// "100us" / "1.5ms" / "2s" / "500ns" -> nanoseconds.
double parse_duration_ns(const std::string& s, const std::string& what) {
  std::size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (const std::exception&) {
    throw ConfigError(what + ": '" + s + "' is not a duration (e.g. 100us, 1ms)");
  }
  std::string unit = s.substr(pos);
  double mult = 0;
  if (unit == "ns") mult = 1;
  else if (unit == "us" || unit == "µs") mult = 1e3;
  else if (unit == "ms") mult = 1e6;
  else if (unit == "s") mult = 1e9;
  else throw ConfigError(what + ": '" + s + "' needs a unit (ns, us, ms, s)");
  if (!(v >= 0) || !std::isfinite(v)) throw ConfigError(what + ": '" + s + "' must be >= 0");
  return v * mult;
}

std::string format_ns(double ns) {
  char buf[32];
  if (ns >= 1e6) std::snprintf(buf, sizeof buf, "%gms", ns / 1e6);
  else if (ns >= 1e3) std::snprintf(buf, sizeof buf, "%gus", ns / 1e3);
  else std::snprintf(buf, sizeof buf, "%gns", ns);
  return buf;
}

// NQN: "nqn.yyyy-mm.reverse.domain:..." or the UUID form, at most 223 bytes (NVMe Base 4.5).
void check_nqn(const std::string& nqn, const std::string& what) {
  if (nqn.empty()) throw ConfigError(what + ": NQN is empty");
  if (nqn.size() > 223) throw ConfigError(what + ": NQN '" + nqn + "' is longer than 223 bytes");
  if (nqn.rfind("nqn.", 0) != 0) throw ConfigError(what + ": '" + nqn + "' is not an NQN (must start with \"nqn.\")");
}

}  // namespace

ServiceTime ServiceTime::parse(const std::string& spec) {
  const std::string what = "--service-time";
  ServiceTime st;
  if (spec.empty() || spec == "none" || spec == "0") return st;
  auto colon = spec.find(':');
  if (colon == std::string::npos)
    throw ConfigError(what + ": '" + spec + "' must be fixed:DUR, exp:mean=DUR or pct:p50=DUR,p99=DUR");
  std::string kind = spec.substr(0, colon), args = spec.substr(colon + 1);
  if (kind == "fixed") {
    st.kind_ = Kind::fixed;
    st.a_ns_ = parse_duration_ns(args, what);
  } else if (kind == "exp") {
    if (args.rfind("mean=", 0) != 0) throw ConfigError(what + ": exp needs mean=DUR, got '" + args + "'");
    st.kind_ = Kind::exponential;
    st.a_ns_ = parse_duration_ns(args.substr(5), what);
  } else if (kind == "pct") {
    double p50 = -1, p99 = -1;
    std::stringstream ss(args);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.rfind("p50=", 0) == 0) p50 = parse_duration_ns(item.substr(4), what);
      else if (item.rfind("p99=", 0) == 0) p99 = parse_duration_ns(item.substr(4), what);
      else throw ConfigError(what + ": unknown percentile '" + item + "' (use p50= and p99=)");
    }
    if (p50 <= 0 || p99 <= 0) throw ConfigError(what + ": pct needs both p50=DUR and p99=DUR, > 0");
    if (p99 < p50) throw ConfigError(what + ": p99 must be >= p50");
    // Log-normal with median p50; z(0.99) = 2.3263.
    st.kind_ = Kind::percentile;
    st.a_ns_ = p50;
    st.sigma_ = std::log(p99 / p50) / 2.3263478740408408;
  } else {
    throw ConfigError(what + ": unknown kind '" + kind + "' (fixed, exp, pct)");
  }
  return st;
}

std::chrono::nanoseconds ServiceTime::sample(std::mt19937_64& rng) const {
  double ns = 0;
  switch (kind_) {
    case Kind::none: return std::chrono::nanoseconds(0);
    case Kind::fixed: ns = a_ns_; break;
    case Kind::exponential: ns = std::exponential_distribution<double>(1.0 / a_ns_)(rng); break;
    case Kind::percentile: ns = std::lognormal_distribution<double>(std::log(a_ns_), sigma_)(rng); break;
  }
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

std::string ServiceTime::describe() const {
  switch (kind_) {
    case Kind::none: return "none";
    case Kind::fixed: return "fixed " + format_ns(a_ns_);
    case Kind::exponential: return "exponential, mean " + format_ns(a_ns_);
    case Kind::percentile:
      return "log-normal, p50 " + format_ns(a_ns_) + ", p99 " + format_ns(a_ns_ * std::exp(2.3263478740408408 * sigma_));
  }
  return "none";
}

ListenAddress parse_listen(const std::string& s) {
  const std::string what = "--listen '" + s + "'";
  std::string host, port;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      throw ConfigError(what + ": IPv6 form is [ADDR]:PORT");
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else if (auto colon = s.rfind(':'); colon != std::string::npos) {
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string::npos) throw ConfigError(what + ": write IPv6 addresses as [ADDR]:PORT");
  } else {
    host = "0.0.0.0";
    port = s;
  }
  if (host.empty()) host = "0.0.0.0";
  char* end = nullptr;
  unsigned long p = std::strtoul(port.c_str(), &end, 10);
  if (port.empty() || *end != 0 || p > 65535) throw ConfigError(what + ": port must be 0..65535");
  return {host, static_cast<std::uint16_t>(p)};
}

std::uint64_t parse_size(const std::string& s) {
  std::size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (const std::exception&) {
    throw ConfigError("size '" + s + "' is not a number (e.g. 1G, 512M, 4096)");
  }
  std::string unit = s.substr(pos);
  std::uint64_t mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "k" || unit == "KiB") mult = 1ull << 10;
  else if (unit == "M" || unit == "m" || unit == "MiB") mult = 1ull << 20;
  else if (unit == "G" || unit == "g" || unit == "GiB") mult = 1ull << 30;
  else if (unit == "T" || unit == "t" || unit == "TiB") mult = 1ull << 40;
  else throw ConfigError("size '" + s + "': unknown unit '" + unit + "' (K, M, G, T; binary)");
  return v * mult;
}

NamespaceConfig parse_namespace(const std::string& s) {
  NamespaceConfig ns;
  auto colon = s.find(':');
  try {
    ns.size_bytes = parse_size(s.substr(0, colon));
    if (colon != std::string::npos) ns.block_size = static_cast<std::uint32_t>(parse_size(s.substr(colon + 1)));
  } catch (const ConfigError& e) {
    throw ConfigError("--namespace '" + s + "': " + e.what());
  }
  return ns;
}

void load_config_json(const std::string& text, TargetConfig& cfg) {
  using nlohmann::json;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw ConfigError(std::string("config is not valid JSON: ") + e.what());
  }
  auto fail = [](const std::string& ptr, const std::string& msg) { throw ConfigError(ptr + ": " + msg); };
  if (!j.is_object()) fail("/", "expected an object");
  static const std::set<std::string> kTop = {"listen", "subsystems", "service_time", "inline_data_size",
                                             "max_h2c_data", "maxr2t", "r2t_size", "c2h_success", "threads",
                                             "allow_digests", "max_io_queues", "max_queue_size", "mdts"};
  for (auto& [k, v] : j.items())
    if (!kTop.count(k)) fail("/" + k, "unknown key");
  auto get_uint = [&](const json& v, const std::string& ptr, std::uint64_t lo, std::uint64_t hi) -> std::uint64_t {
    std::uint64_t x = 0;
    if (v.is_number_unsigned()) x = v.get<std::uint64_t>();
    else if (v.is_string()) {
      try {
        x = parse_size(v.get<std::string>());
      } catch (const ConfigError& e) {
        fail(ptr, e.what());
      }
    } else fail(ptr, "expected a non-negative number or a size string like \"16K\"");
    if (x < lo || x > hi) fail(ptr, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    return x;
  };
  auto get_string = [&](const json& v, const std::string& ptr) {
    if (!v.is_string()) fail(ptr, "expected a string");
    return v.get<std::string>();
  };
  auto get_bool = [&](const json& v, const std::string& ptr) {
    if (!v.is_boolean()) fail(ptr, "expected true or false");
    return v.get<bool>();
  };
  if (j.contains("listen")) {
    const json& l = j["listen"];
    if (l.is_string()) cfg.listen.push_back(l.get<std::string>());
    else if (l.is_array()) {
      for (std::size_t i = 0; i < l.size(); ++i) cfg.listen.push_back(get_string(l[i], "/listen/" + std::to_string(i)));
    } else fail("/listen", "expected \"ADDR:PORT\" or a list of them");
    for (std::size_t i = 0; i < cfg.listen.size(); ++i) {
      try {
        parse_listen(cfg.listen[i]);
      } catch (const ConfigError& e) {
        fail("/listen", e.what());
      }
    }
  }
  if (j.contains("service_time")) {
    try {
      cfg.service_time = ServiceTime::parse(get_string(j["service_time"], "/service_time"));
    } catch (const ConfigError& e) {
      fail("/service_time", e.what());
    }
  }
  if (j.contains("inline_data_size"))
    cfg.inline_data_size = static_cast<std::uint32_t>(get_uint(j["inline_data_size"], "/inline_data_size", 0, 1u << 20));
  if (j.contains("max_h2c_data"))
    cfg.max_h2c_data = static_cast<std::uint32_t>(get_uint(j["max_h2c_data"], "/max_h2c_data", 4096, 16u << 20));
  if (j.contains("maxr2t")) cfg.maxr2t = static_cast<std::uint32_t>(get_uint(j["maxr2t"], "/maxr2t", 1, 65536));
  if (j.contains("r2t_size")) cfg.r2t_size = static_cast<std::uint32_t>(get_uint(j["r2t_size"], "/r2t_size", 0, 1u << 30));
  if (j.contains("mdts")) cfg.mdts_bytes = static_cast<std::uint32_t>(get_uint(j["mdts"], "/mdts", 4096, 2u << 20));
  if (j.contains("threads")) cfg.threads = static_cast<unsigned>(get_uint(j["threads"], "/threads", 1, 256));
  if (j.contains("max_io_queues"))
    cfg.max_io_queues = static_cast<std::uint16_t>(get_uint(j["max_io_queues"], "/max_io_queues", 1, 65535));
  if (j.contains("max_queue_size"))
    cfg.max_queue_size = static_cast<std::uint16_t>(get_uint(j["max_queue_size"], "/max_queue_size", 2, 65535));
  if (j.contains("c2h_success")) cfg.c2h_success = get_bool(j["c2h_success"], "/c2h_success");
  if (j.contains("allow_digests")) cfg.allow_digests = get_bool(j["allow_digests"], "/allow_digests");
  if (j.contains("subsystems")) {
    const json& subs = j["subsystems"];
    if (!subs.is_array()) fail("/subsystems", "expected a list of subsystems");
    for (std::size_t i = 0; i < subs.size(); ++i) {
      const std::string p = "/subsystems/" + std::to_string(i);
      const json& s = subs[i];
      if (!s.is_object()) fail(p, "expected an object");
      static const std::set<std::string> kSub = {"nqn", "allow_any_host", "hosts", "namespaces"};
      for (auto& [k, v] : s.items())
        if (!kSub.count(k)) fail(p + "/" + k, "unknown key");
      SubsystemConfig sc;
      if (!s.contains("nqn")) fail(p + "/nqn", "missing");
      sc.nqn = get_string(s["nqn"], p + "/nqn");
      try {
        check_nqn(sc.nqn, p + "/nqn");
      } catch (const ConfigError& e) {
        throw;
      }
      if (s.contains("allow_any_host")) sc.allow_any_host = get_bool(s["allow_any_host"], p + "/allow_any_host");
      if (s.contains("hosts")) {
        if (!s["hosts"].is_array()) fail(p + "/hosts", "expected a list of host NQNs");
        for (std::size_t h = 0; h < s["hosts"].size(); ++h) {
          std::string hp = p + "/hosts/" + std::to_string(h);
          sc.hosts.push_back(get_string(s["hosts"][h], hp));
          check_nqn(sc.hosts.back(), hp);
        }
      }
      if (s.contains("namespaces")) {
        if (!s["namespaces"].is_array()) fail(p + "/namespaces", "expected a list of namespaces");
        for (std::size_t n = 0; n < s["namespaces"].size(); ++n) {
          std::string np = p + "/namespaces/" + std::to_string(n);
          const json& ns = s["namespaces"][n];
          NamespaceConfig nc;
          if (ns.is_string()) {
            try {
              nc = parse_namespace(ns.get<std::string>());
            } catch (const ConfigError& e) {
              fail(np, e.what());
            }
          } else if (ns.is_object()) {
            for (auto& [k, v] : ns.items())
              if (k != "nsid" && k != "size" && k != "block_size") fail(np + "/" + k, "unknown key");
            if (!ns.contains("size")) fail(np + "/size", "missing (e.g. \"1G\")");
            nc.size_bytes = get_uint(ns["size"], np + "/size", 1, 1ull << 50);
            if (ns.contains("block_size"))
              nc.block_size = static_cast<std::uint32_t>(get_uint(ns["block_size"], np + "/block_size", 512, 65536));
            if (ns.contains("nsid")) nc.nsid = static_cast<std::uint32_t>(get_uint(ns["nsid"], np + "/nsid", 1, 1024));
          } else {
            fail(np, "expected \"SIZE[:BLOCK]\" or {\"size\": ..., \"block_size\": ..., \"nsid\": ...}");
          }
          sc.namespaces.push_back(nc);
        }
      }
      cfg.subsystems.push_back(std::move(sc));
    }
  }
}

void load_config_file(const std::string& path, TargetConfig& cfg) {
  std::ifstream in(path);
  if (!in) throw ConfigError("--config " + path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    load_config_json(ss.str(), cfg);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

void validate(TargetConfig& cfg) {
  if (cfg.listen.empty()) cfg.listen.push_back("0.0.0.0:4420");
  for (const auto& l : cfg.listen) parse_listen(l);
  if (cfg.subsystems.empty()) throw ConfigError("no subsystem configured (use --subsystem NQN --namespace SIZE, or --config)");
  if (cfg.max_h2c_data < 4096 || cfg.max_h2c_data % 4 != 0)
    throw ConfigError("--max-h2c-data " + std::to_string(cfg.max_h2c_data) + ": must be >= 4096 and a multiple of 4");
  if (cfg.inline_data_size % 16 != 0)
    throw ConfigError("--inline-data-size " + std::to_string(cfg.inline_data_size) + ": must be a multiple of 16 bytes");
  // A read is sent as one C2HData from at most 3 pieces of 1 MiB namespace chunks.
  if (cfg.mdts_bytes < 4096 || cfg.mdts_bytes > (2u << 20) || (cfg.mdts_bytes & (cfg.mdts_bytes - 1)) != 0)
    throw ConfigError("--mdts " + std::to_string(cfg.mdts_bytes) + ": must be a power of two in 4 KiB..2 MiB");
  if (cfg.maxr2t == 0) throw ConfigError("--maxr2t must be >= 1");
  if (cfg.threads == 0) throw ConfigError("--threads must be >= 1");
  std::set<std::string> nqns;
  for (std::size_t i = 0; i < cfg.subsystems.size(); ++i) {
    auto& s = cfg.subsystems[i];
    const std::string where = "subsystem " + s.nqn;
    check_nqn(s.nqn, "subsystem #" + std::to_string(i + 1));
    if (!nqns.insert(s.nqn).second) throw ConfigError(where + ": defined twice");
    if (!s.allow_any_host && s.hosts.empty())
      throw ConfigError(where + ": no host may connect (add --allow-host NQN or --allow-any-host)");
    for (const auto& h : s.hosts) check_nqn(h, where + " allowed host");
    std::set<std::uint32_t> used;
    for (auto& ns : s.namespaces)
      if (ns.nsid != 0 && !used.insert(ns.nsid).second)
        throw ConfigError(where + ": NSID " + std::to_string(ns.nsid) + " used twice");
    std::uint32_t next = 1;
    for (auto& ns : s.namespaces) {
      if (ns.nsid == 0) {
        while (used.count(next)) ++next;
        ns.nsid = next;
        used.insert(next);
      }
      if (ns.block_size < 512 || ns.block_size > 65536 || (ns.block_size & (ns.block_size - 1)) != 0)
        throw ConfigError(where + " namespace " + std::to_string(ns.nsid) + ": block size " +
                          std::to_string(ns.block_size) + " must be a power of two in 512..65536");
      if (ns.size_bytes == 0 || ns.size_bytes % ns.block_size != 0)
        throw ConfigError(where + " namespace " + std::to_string(ns.nsid) + ": size " + std::to_string(ns.size_bytes) +
                          " bytes must be a non-zero multiple of the " + std::to_string(ns.block_size) + "-byte block");
      if (ns.nsid > 1024) throw ConfigError(where + ": NSID " + std::to_string(ns.nsid) + " > 1024");
    }
  }
}

}  // namespace nvqos::target
