// nvqosctl: the operator's view of a running agent, over the agent's admin
// API (HTTP on its unix socket, or on its TCP listener with the bearer
// token). It never touches BPF itself; `validate` runs the agent's own config
// code offline. Tables for people, --json for scripts.
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "config.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace po = boost::program_options;
using nlohmann::json;

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

struct ApiError : std::runtime_error {
  using std::runtime_error::runtime_error;
  bool unreachable = false;
};

// Where the agent's admin API is: its unix socket, or HOST:PORT with a token.
struct Endpoint {
  std::string socket_path;
  std::string address;  // non-empty: TCP
  std::string token;
};

template <typename Stream>
json exchange(Stream& stream, const Endpoint& ep, http::verb verb, const std::string& target, const json* body) {
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "nvqos-agent");
  req.set(http::field::user_agent, "nvqosctl");
  if (!ep.token.empty()) req.set(http::field::authorization, "Bearer " + ep.token);
  if (body) {
    req.set(http::field::content_type, "application/json");
    req.body() = body->dump();
  }
  req.prepare_payload();
  beast::error_code ec;
  http::write(stream, req, ec);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buf, res, ec);
  if (ec) throw ApiError(target + ": " + ec.message());
  json reply = json::parse(res.body(), nullptr, false);
  if (reply.is_discarded()) {
    std::string text = res.body();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    throw ApiError(target + ": HTTP " + std::to_string(res.result_int()) + ": " + text);
  }
  if (res.result_int() >= 400)
    throw ApiError(target + ": " + reply.value("error", "HTTP " + std::to_string(res.result_int())));
  return reply;
}

json call(const Endpoint& ep, http::verb verb, const std::string& target, const json* body = nullptr) {
  asio::io_context io;
  beast::error_code ec;
  namespace errc = boost::system::errc;
  if (!ep.address.empty()) {
    const auto colon = ep.address.rfind(':');
    if (colon == std::string::npos) throw ApiError("--address " + ep.address + ": use HOST:PORT");
    std::string host = ep.address.substr(0, colon);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    asio::ip::tcp::resolver resolver(io);
    auto results = resolver.resolve(host, ep.address.substr(colon + 1), ec);
    asio::ip::tcp::socket sock(io);
    if (!ec) asio::connect(sock, results, ec);
    if (ec) {
      ApiError e("connect to " + ep.address + ": " + ec.message() + " (is the agent's --admin-address set?)");
      e.unreachable = true;
      throw e;
    }
    return exchange(sock, ep, verb, target, body);
  }
  asio::local::stream_protocol::socket sock(io);
  sock.connect(asio::local::stream_protocol::endpoint(ep.socket_path), ec);
  if (ec) {
    std::string hint = ec == errc::permission_denied ? " (the socket is 0600: run as the agent's user, e.g. root)"
                       : ec == errc::no_such_file_or_directory || ec == errc::connection_refused
                           ? " (is nvqos-agent running? see --socket)"
                           : "";
    ApiError e("connect to " + ep.socket_path + ": " + ec.message() + hint);
    e.unreachable = true;
    throw e;
  }
  return exchange(sock, ep, verb, target, body);
}

std::string fixed(double v, int decimals) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << v;
  return os.str();
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return fixed(b, u ? 1 : 0) + " " + units[u];
}

std::string human_rate(double bytes_per_second) { return human_bytes(bytes_per_second) + "/s"; }

std::string human_seconds(double s) {
  if (s < 1e-3) return fixed(s * 1e6, 0) + " us";
  if (s < 1) return fixed(s * 1e3, s < 10e-3 ? 2 : 1) + " ms";
  if (s < 120) return fixed(s, 1) + " s";
  if (s < 7200) return fixed(s / 60, 0) + " min";
  return fixed(s / 3600, 1) + " h";
}

// A text table: columns sized to their widest cell; numeric columns right-aligned.
class Table {
 public:
  Table(std::vector<std::string> header, std::set<std::size_t> right = {})
      : header_(std::move(header)), right_(std::move(right)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  void print(std::ostream& os) const {
    std::vector<std::size_t> width(header_.size(), 0);
    for (std::size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
    for (const auto& r : rows_)
      for (std::size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
    auto line = [&](const std::vector<std::string>& r) {
      std::string out;
      for (std::size_t c = 0; c < header_.size(); ++c) {
        const std::string cell = c < r.size() ? r[c] : "";
        const std::string pad(width[c] - std::min(width[c], cell.size()), ' ');
        out += right_.count(c) ? pad + cell : cell + (c + 1 < header_.size() ? pad : "");
        if (c + 1 < header_.size()) out += "  ";
      }
      while (!out.empty() && out.back() == ' ') out.pop_back();
      os << out << "\n";
    };
    line(header_);
    for (const auto& r : rows_) line(r);
  }

 private:
  std::vector<std::string> header_;
  std::set<std::size_t> right_;
  std::vector<std::vector<std::string>> rows_;
};

void print_status(const json& s) {
  std::cout << "agent      nvqos-agent " << s.value("version", "?") << " on kernel " << s.value("kernel", "?") << "\n";
  const auto& c = s["config"];
  std::cout << "config     " << c.value("source", "?") << " (version " << c.value("version", 0) << "), "
            << s.value("tenants", 0) << " tenants incl. default, last reload "
            << (c.value("last_reload_success", false) ? "ok" : "FAILED") << "\n";
  if (c.contains("last_reload_error")) std::cout << "           " << c["last_reload_error"].get<std::string>() << "\n";
  std::cout << "features  ";
  for (const auto& [name, on] : s["kernel_features"].items()) std::cout << " " << name << "=" << (on ? "yes" : "no");
  std::cout << "\n\n";
  Table ifs({"interface", "state", "attached", "flow table", "packets", "nvme packets", "parse errors", "restarts adopted"},
            {3, 4, 5, 6, 7});
  for (const auto& ifc : s["interfaces"]) {
    std::string attached;
    for (const auto& a : ifc["attached"]) {
      attached += (attached.empty() ? "" : ", ") + a["hook"].get<std::string>() + "/" + a["mode"].get<std::string>();
      if (a.value("exclusive", false)) attached += "(excl)";
    }
    ifs.add({ifc.value("name", "?"), ifc.value("present", true) ? "up" : "MISSING", attached.empty() ? "-" : attached,
             std::to_string(ifc.value("flow_table_capacity", 0ull)) + " entries",
             std::to_string(ifc.value("packets_total", 0ull)), std::to_string(ifc.value("nvme_packets_total", 0ull)),
             std::to_string(ifc.value("parse_errors_total", 0ull)),
             std::to_string(ifc.contains("restart") ? ifc["restart"].value("adoptions", 0ull) : 0ull)});
  }
  ifs.print(std::cout);
  for (const auto& ifc : s["interfaces"]) {
    if (!ifc.contains("maps") || ifc["maps"].empty()) continue;
    std::cout << "\n" << ifc.value("name", "?") << ": programs";
    for (const auto& p : ifc["programs"])
      std::cout << " " << p.value("name", "?") << " (id " << p.value("id", 0) << ", " << p.value("hook", "?") << ")";
    const std::string pin_dir = ifc.contains("restart") ? ifc["restart"].value("pin_dir", "") : "";
    std::cout << "\n" << ifc.value("name", "?") << ": pinned under " << (pin_dir.empty() ? "(not pinned)" : pin_dir)
              << "\n";
    Table maps({"map", "type", "entries", "capacity", "fill", "at start"}, {2, 3, 4});
    for (const auto& m : ifc["maps"]) {
      std::string at_start = "-";
      if (ifc.contains("restart") && ifc["restart"]["maps"].contains(m.value("name", "")))
        at_start = ifc["restart"]["maps"][m.value("name", "")].value("action", "-");
      maps.add({m.value("name", "?"), m.value("type", "?"),
                m.contains("entries") ? std::to_string(m["entries"].get<std::uint64_t>()) : "-",
                std::to_string(m.value("capacity", 0u)),
                m.contains("fill_ratio") ? fixed(m["fill_ratio"].get<double>() * 100, 1) + " %" : "-", at_start});
    }
    maps.print(std::cout);
  }
}

void print_tenants(const json& t) {
  Table table({"tenant", "class", "state", "match", "in", "out", "flows", "dropped"}, {4, 5, 6, 7});
  for (const auto& tenant : t["tenants"]) {
    std::string match;
    for (const auto& r : tenant["match"]) {
      std::string one = r.contains("remote") ? r["remote"].get<std::string>() : "any";
      if (r.contains("port")) one += " port " + std::to_string(r["port"].get<int>());
      match += (match.empty() ? "" : ", ") + one;
    }
    if (match.empty()) match = tenant["name"] == "default" ? "(unmatched NVMe/TCP)" : "-";
    double in = 0, out = 0;
    unsigned long long active = 0, dropped = 0;
    if (tenant.contains("interfaces"))
      for (const auto& [ifname, c] : tenant["interfaces"].items()) {
        in += c.value("ingress_bytes", 0.0);
        out += c.value("egress_bytes", 0.0);
        auto opened = c.value("flows_opened", 0ull), closed = c.value("flows_closed", 0ull);
        active += opened > closed ? opened - closed : 0;
        dropped += c.value("dropped_packets", 0ull);
      }
    std::string state = !tenant.value("active", false) ? "off" : tenant.value("quarantine", false) ? "quarantine" : "on";
    std::string cls = tenant.value("class", "");
    if (cls.empty()) cls = "-";
    if (tenant.contains("class_override") && tenant["class_override"].is_object()) {
      const auto& o = tenant["class_override"];
      const std::string configured = o.value("configured_class", "");
      cls += " (override; configured " + (configured.empty() ? std::string("none") : configured);
      if (o["remaining_seconds"].is_number()) cls += ", " + human_seconds(o["remaining_seconds"].get<double>()) + " left";
      cls += ")";
    }
    table.add({tenant.value("name", "?"), cls, state, match, human_bytes(in), human_bytes(out),
               std::to_string(active), std::to_string(dropped) + " pkts"});
  }
  table.print(std::cout);
  std::cout << "\nclass: QoS class (- none); in/out: bytes on the wire arriving at / leaving this host; flows: open "
               "connections\n";
}

std::string human_bits(double bps) {
  if (bps >= 1e9) return fixed(bps / 1e9, bps >= 1e10 ? 0 : 1) + " Gbit/s";
  if (bps >= 1e6) return fixed(bps / 1e6, bps >= 1e7 ? 0 : 1) + " Mbit/s";
  return fixed(bps / 1e3, 0) + " kbit/s";
}

// "1 Gbit/s (read 800 Mbit/s)" from {"any": .., "read": .., "write": ..}; "-" when empty.
std::string limits_text(const json& by_op, const std::function<std::string(double)>& fmt) {
  std::string out = by_op.contains("any") ? fmt(by_op["any"].get<double>()) : "";
  std::string ops;
  for (const char* op : {"read", "write"})
    if (by_op.contains(op)) ops += (ops.empty() ? "" : ", ") + std::string(op) + " " + fmt(by_op[op].get<double>());
  if (!ops.empty()) out += (out.empty() ? "" : " ") + std::string("(") + ops + ")";
  return out.empty() ? "-" : out;
}

void print_classes(const json& j) {
  Table table({"class", "prio", "scope", "dscp", "guaranteed", "ceiling", "IOPS ceiling", "tenants", "interface",
               "mechanism", "HTB class", "egress now", "of guar.", "of ceiling"},
              {1, 3, 4, 11, 12, 13});
  auto percent = [](const json& v) { return v.is_number() ? fixed(v.get<double>() * 100, 0) + " %" : "-"; };
  bool overridden = false;
  for (const auto& c : j["classes"]) {
    const auto& conf = c["configured"];
    std::string tenants;
    for (const auto& t : c["tenants"]) {
      const std::string name = t.get<std::string>();
      const bool by_override = std::find(c["overridden_tenants"].begin(), c["overridden_tenants"].end(), t) !=
                               c["overridden_tenants"].end();
      overridden |= by_override;
      tenants += (tenants.empty() ? "" : ", ") + name + (by_override ? "*" : "");
    }
    std::vector<std::string> head{
        c.value("name", "?"), std::to_string(c.value("priority", 0)), c.value("scope", "?"),
        c["dscp"].is_number() ? std::to_string(c["dscp"].get<int>()) : "-",
        conf["guaranteed_bits_per_second"].is_number() ? human_bits(conf["guaranteed_bits_per_second"].get<double>())
                                                       : "-",
        limits_text(conf["ceiling_bits_per_second"], human_bits),
        limits_text(conf["ceiling_iops"], [](double v) { return fixed(v, 0); }), tenants.empty() ? "-" : tenants};
    bool first = true;
    for (const auto& [ifname, ifc] : c["interfaces"].items()) {
      std::vector<std::string> row = first ? head : std::vector<std::string>(head.size());
      first = false;
      std::string mech;
      for (const auto& m : ifc["mechanisms"]["egress"]) mech += (mech.empty() ? "" : "+") + m.get<std::string>();
      std::string htb;
      for (const auto& u : ifc["htb"]) htb += (htb.empty() ? "" : " ") + u.value("classid", "?");
      const auto& usage = ifc["usage"];
      row.insert(row.end(),
                 {ifname, mech.empty() ? "none" : mech, htb.empty() ? "-" : htb,
                  usage.is_object() ? human_bits(usage.value("egress_bits_per_second", 0.0)) : "-",
                  usage.is_object() ? percent(usage["of_guarantee"]) : "-",
                  usage.is_object() ? percent(usage["of_ceiling"]) : "-"});
      table.add(std::move(row));
    }
    if (first) table.add(head);
  }
  if (table.empty()) {
    std::cout << "(no QoS classes configured: the agent observes only)\n";
    return;
  }
  table.print(std::cout);
  std::cout << "\nguaranteed/ceiling: configured egress bandwidth (per tenant for scope per_tenant); egress now: the "
               "class's wire bytes leaving this host over the last second; of guar./of ceiling: that rate "
               "(the busiest tenant's for per_tenant) against the limit";
  if (overridden) std::cout << "; *: in the class by a temporary override (nvqosctl set-class)";
  std::cout << "\n";
}

// "600", "600s", "10m", "2h", "1d" -> seconds; nullopt when not a positive duration.
std::optional<long long> parse_ttl(const std::string& text) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const std::string unit = text.substr(used);
  const long long scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
  if (!scale || v <= 0) return std::nullopt;
  return v * scale;
}

void print_class_change(const json& j) {
  const std::string cls = j.value("class", ""), configured = j.value("configured_class", "");
  std::cout << j.value("tenant", "?") << ": class " << (cls.empty() ? "none" : cls);
  if (j["override"].is_object()) {
    std::cout << " (override of the configured " << (configured.empty() ? "none" : configured);
    if (j["override"]["remaining_seconds"].is_number())
      std::cout << " for " << human_seconds(j["override"]["remaining_seconds"].get<double>());
    else std::cout << " until cleared";
    std::cout << ")";
  } else {
    std::cout << " (configured)";
  }
  std::cout << "\n";
}

// Fields of a flow printed in fixed columns; any other field (added by newer
// agents, e.g. NQNs) becomes an extra column.
const std::set<std::string> kFlowFields = {
    "interface",        "local",           "remote",        "role",          "tenant",
    "tenant_id",        "state",           "ingress_bytes", "egress_bytes",  "ingress_packets",
    "egress_packets",   "ingress_bytes_per_second",         "egress_bytes_per_second",
    "rate",             "age_seconds",     "idle_seconds"};

void print_flows(const json& j) {
  std::vector<std::string> extra;
  for (const auto& f : j["flows"])
    for (const auto& [k, v] : f.items())
      if (!kFlowFields.count(k) && std::find(extra.begin(), extra.end(), k) == extra.end()) extra.push_back(k);
  std::vector<std::string> header{"interface", "local", "remote", "role", "tenant", "state", "in/s", "out/s", "in", "out", "age"};
  header.insert(header.end(), extra.begin(), extra.end());
  Table table(header, {6, 7, 8, 9, 10});
  bool averaged = false;
  for (const auto& f : j["flows"]) {
    const bool live = f.value("rate", "") == "live";
    averaged |= !live;
    const std::string mark = live ? "" : "~";
    std::vector<std::string> row{f.value("interface", "?"), f.value("local", "?"), f.value("remote", "?"),
                                 f.value("role", "?"), f.value("tenant", "?"), f.value("state", "?"),
                                 mark + human_rate(f.value("ingress_bytes_per_second", 0.0)),
                                 mark + human_rate(f.value("egress_bytes_per_second", 0.0)),
                                 human_bytes(f.value("ingress_bytes", 0.0)), human_bytes(f.value("egress_bytes", 0.0)),
                                 human_seconds(f.value("age_seconds", 0.0))};
    for (const auto& k : extra) row.push_back(f.contains(k) ? (f[k].is_string() ? f[k].get<std::string>() : f[k].dump()) : "-");
    table.add(std::move(row));
  }
  table.print(std::cout);
  std::cout << "\n" << j.value("shown", 0) << " of " << j.value("total", 0)
            << " connections (busiest first); in/out: wire bytes arriving at / leaving this host";
  if (averaged) std::cout << "; ~: average over the connection's life (no earlier reading)";
  std::cout << "\n";
}

// One row of `top`: a tenant's commands of one op and role, over all interfaces.
struct TopRow {
  double completed = 0, bytes = 0;
  std::map<std::string, double> latency;  // quantile -> seconds (worst interface)
};
using TopKey = std::tuple<std::string, std::string, std::string>;  // tenant, op, role

// Egress packets the tenant's limits delayed, over all interfaces.
std::map<std::string, double> throttled_by_tenant(const json& t) {
  std::map<std::string, double> out;
  for (const auto& tenant : t["tenants"])
    if (tenant.contains("interfaces"))
      for (const auto& [ifname, c] : tenant["interfaces"].items())
        out[tenant.value("name", "?")] += c.value("throttled_packets", 0.0);
  return out;
}

std::map<TopKey, TopRow> top_rows(const json& t) {
  std::map<TopKey, TopRow> rows;
  for (const auto& tenant : t["tenants"]) {
    if (!tenant.contains("interfaces")) continue;
    for (const auto& [ifname, c] : tenant["interfaces"].items()) {
      if (!c.contains("commands")) continue;
      for (const auto& cmd : c["commands"]) {
        auto& row = rows[{tenant.value("name", "?"), cmd.value("op", "?"), cmd.value("role", "?")}];
        row.completed += cmd.value("completed", 0.0);
        row.bytes += cmd.value("bytes", 0.0);
        for (const auto& [q, s] : cmd["latency_seconds"].items()) row.latency[q] = std::max(row.latency[q], s.get<double>());
      }
    }
  }
  return rows;
}

int run_top(const Endpoint& ep, double interval_s, int count, bool as_json) {
  json prev = call(ep, http::verb::get, "/v1/tenants");
  auto prev_at = std::chrono::steady_clock::now();
  const bool tty = isatty(STDOUT_FILENO);
  for (int i = 0; count <= 0 || i < count; ++i) {
    std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
    json cur = call(ep, http::verb::get, "/v1/tenants");
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - prev_at).count();
    const auto before = top_rows(prev), after = top_rows(cur);
    const auto throttled_before = throttled_by_tenant(prev), throttled_after = throttled_by_tenant(cur);
    json out = json::array();
    Table table({"tenant", "op", "role", "IOPS", "MB/s", "p50", "p99", "p99.9", "throttled"}, {3, 4, 5, 6, 7, 8});
    std::string last_tenant;
    for (const auto& [key, row] : after) {
      const auto it = before.find(key);
      const double dc = row.completed - (it == before.end() ? 0 : it->second.completed);
      const double db = row.bytes - (it == before.end() ? 0 : it->second.bytes);
      const double iops = dc > 0 ? dc / dt : 0, mbps = db > 0 ? db / dt / 1e6 : 0;
      auto q = [&](const char* name) { auto f = row.latency.find(name); return f == row.latency.end() ? -1.0 : f->second; };
      const std::string& name = std::get<0>(key);
      const double dthrottled = throttled_after.count(name) && throttled_before.count(name)
                                    ? throttled_after.at(name) - throttled_before.at(name)
                                    : 0;
      const double throttled = dthrottled > 0 ? dthrottled / dt : 0;
      out.push_back({{"tenant", name}, {"op", std::get<1>(key)}, {"role", std::get<2>(key)},
                     {"iops", iops}, {"megabytes_per_second", mbps}, {"p50_seconds", q("0.5")},
                     {"p99_seconds", q("0.99")}, {"p999_seconds", q("0.999")},
                     {"throttled_packets_per_second", throttled}});
      auto lat = [&](double s) { return s < 0 ? std::string("-") : human_seconds(s); };
      // Throttling is the tenant's, not an op's: shown once per tenant.
      table.add({name, std::get<1>(key), std::get<2>(key), fixed(iops, 0), fixed(mbps, 1), lat(q("0.5")),
                 lat(q("0.99")), lat(q("0.999")), name == last_tenant ? "" : fixed(throttled, 0) + " pkt/s"});
      last_tenant = name;
    }
    if (as_json) {
      std::cout << json{{"interval_seconds", dt}, {"rows", out}}.dump() << std::endl;
    } else {
      if (tty) std::cout << "\033[H\033[2J";
      const std::time_t wall = std::time(nullptr);
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&wall));
      std::cout << "nvqos top  " << stamp << "  rates over the last " << fixed(dt, 1) << " s, latency over the last "
                << cur.value("latency_window_seconds", 0)
                << " s (kernel-timed, capsule to completion); MB/s: command data (1 MB = 10^6 bytes); "
                   "throttled: egress packets delayed by the tenant's limits\n\n";
      if (table.empty()) std::cout << "(no NVMe commands seen yet)\n";
      else table.print(std::cout);
      std::cout << std::flush;
    }
    prev = std::move(cur);
    prev_at = now;
  }
  return 0;
}

int run_slow(const Endpoint& ep, bool follow, bool as_json) {
  std::uint64_t after = 0;
  bool warned = false;
  if (!as_json) std::cout << "time          interface  tenant  op  role  latency  bytes  cid  status  remote\n";
  for (;;) {
    json j;
    try {
      j = call(ep, http::verb::get, "/v1/slow?after=" + std::to_string(after) + "&wait=" + (follow ? "20" : "0"));
      warned = false;
    } catch (const ApiError& e) {
      if (!follow || !e.unreachable) throw;
      if (!warned) std::cerr << "nvqosctl: " << e.what() << "; retrying every second\n";
      warned = true;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (j.value("missed", 0ull) && !as_json)
      std::cout << "(" << j["missed"].get<std::uint64_t>() << " older events were no longer kept)\n";
    for (const auto& e : j["events"]) {
      if (as_json) {
        std::cout << e.dump() << "\n";
        continue;
      }
      const double t = e.value("time", 0.0);
      const std::time_t secs = static_cast<std::time_t>(t);
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&secs));
      char ms[8];
      std::snprintf(ms, sizeof ms, ".%03d", static_cast<int>((t - std::floor(t)) * 1000));
      std::cout << stamp << ms << "  " << e.value("interface", "?") << "  " << e.value("tenant", "?") << "  "
                << e.value("op", "?") << "  " << e.value("role", "?") << "  "
                << human_seconds(e.value("latency_seconds", 0.0)) << "  " << human_bytes(e.value("bytes", 0.0)) << "  "
                << e.value("cid", 0) << "  0x" << std::hex << e.value("status", 0) << std::dec << "  "
                << e.value("remote", "?") << "\n";
    }
    std::cout << std::flush;
    after = j.value("next", after);
    if (!follow) return 0;
  }
}

}  // namespace

void print_slo(const json& s);  // nvqosctl_slo.cpp

int main(int argc, char** argv) {
  po::options_description opts("nvqosctl options");
  std::string socket_path, address, token_file, interval_text;
  int count = 0;
  opts.add_options()("help,h", "show this help")(
      "socket,s", po::value(&socket_path)->default_value("/run/nvqos/agent.sock"), "the agent's admin socket")(
      "address", po::value(&address), "use the agent's admin TCP listener HOST:PORT instead of the socket")(
      "token-file", po::value(&token_file), "file with the bearer token for --address")(
      "json", "print JSON instead of a table (top and slow: one JSON document per line)")(
      "interval", po::value(&interval_text)->default_value("1"), "top: seconds between refreshes")(
      "count", po::value(&count)->default_value(0), "top: stop after this many refreshes (0: until interrupted)")(
      "no-follow", "slow: print the events the agent kept and exit instead of streaming")(
      "ttl", po::value<std::string>(), "set-class: how long the override lasts (600, 600s, 10m, 2h, 1d; default: until "
                                       "clear-class)");
  po::options_description hidden;
  std::vector<std::string> words;
  hidden.add_options()("words", po::value(&words));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("words", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "nvqosctl: " << e.what() << "\n";
    return kExitUsage;
  }
  const char* usage =
      "Usage: nvqosctl [--socket PATH | --address HOST:PORT --token-file FILE] [--json] COMMAND\n\n"
      "Commands:\n"
      "  status          agent, kernel features, interfaces, programs, map fill levels, restarts\n"
      "  tenants         tenants, their match rules and traffic\n"
      "  classes         QoS classes: limits, tenants, HTB classes and mechanism per interface, rate in use\n"
      "  set-class TENANT CLASS [--ttl 10m]   move a tenant into another class for a while\n"
      "  clear-class TENANT                   end the override: back to the configured class\n"
      "  flows           connections: addresses, tenant, role, live rates (busiest first)\n"
      "  top             live per-tenant view: IOPS, MB/s, p50/p99/p99.9 latency, throttled (--interval, --count)\n"
      "  slow            stream slow-command events (--no-follow: print the kept ones and exit)\n"
      "  slo             latency objectives, effective ceilings and the SLO controller's latest adjustments\n"
      "  reload          make the agent re-read its config (refused configs leave the running one)\n"
      "  validate FILE   check a config file offline with the agent's own code\n"
      "  version         nvqosctl's version\n\n";
  if (vm.count("help") || words.empty()) {
    std::cout << usage << opts;
    return words.empty() && !vm.count("help") ? kExitUsage : 0;
  }
  bool as_json = vm.count("json") > 0;
  const std::string& cmd = words[0];
  Endpoint ep{socket_path, address, ""};
  try {
    if (cmd == "version") {
      std::cout << "nvqosctl " << NVQOS_VERSION << "\n";
      return 0;
    }
    if (cmd == "validate") {
      if (words.size() != 2) {
        std::cerr << "nvqosctl: validate takes one FILE\n";
        return kExitUsage;
      }
      try {
        auto policy = nvqos::agent::load_policy_file(words[1]);
        if (as_json) std::cout << json{{"valid", true}, {"tenants", policy.tenants.size()}}.dump() << "\n";
        else std::cout << words[1] << ": valid (" << policy.tenants.size() << " tenants)\n";
        return 0;
      } catch (const nvqos::agent::ConfigError& e) {
        if (as_json) std::cout << json{{"valid", false}, {"pointer", e.pointer()}, {"error", e.what()}}.dump() << "\n";
        else std::cerr << "nvqosctl: invalid config: " << e.what() << "\n";
        return kExitError;
      }
    }
    if (!token_file.empty()) {
      std::ifstream in(token_file);
      if (!in) {
        std::cerr << "nvqosctl: cannot read token file " << token_file << "\n";
        return kExitUsage;
      }
      std::getline(in, ep.token);
      while (!ep.token.empty() && std::isspace(static_cast<unsigned char>(ep.token.back()))) ep.token.pop_back();
    }
    if (cmd == "set-class" || cmd == "clear-class") {
      const std::size_t args = cmd == "set-class" ? 3 : 2;
      if (words.size() != args) {
        std::cerr << "nvqosctl: " << (args == 3 ? "set-class takes TENANT CLASS" : "clear-class takes TENANT") << "\n";
        return kExitUsage;
      }
      json j;
      if (cmd == "set-class") {
        json body{{"class", words[2]}};
        if (vm.count("ttl")) {
          const auto ttl = parse_ttl(vm["ttl"].as<std::string>());
          if (!ttl) {
            std::cerr << "nvqosctl: --ttl \"" << vm["ttl"].as<std::string>() << "\": a positive duration (600, 10m, 2h, 1d)\n";
            return kExitUsage;
          }
          body["ttl_s"] = *ttl;
        }
        j = call(ep, http::verb::put, "/v1/tenants/" + words[1] + "/class", &body);
      } else {
        j = call(ep, http::verb::delete_, "/v1/tenants/" + words[1] + "/class");
      }
      if (as_json) std::cout << j.dump(2) << "\n";
      else print_class_change(j);
      return 0;
    }
    if (cmd == "status" || cmd == "tenants" || cmd == "flows" || cmd == "classes") {
      json j = call(ep, http::verb::get, "/v1/" + cmd);
      if (cmd == "flows" && j.contains("flows") && !j["flows"].empty()) {
        // Live rates need two readings: the agent keeps the previous one.
        std::this_thread::sleep_for(std::chrono::seconds(1));
        j = call(ep, http::verb::get, "/v1/flows");
      }
      if (as_json) std::cout << j.dump(2) << "\n";
      else if (cmd == "status") print_status(j);
      else if (cmd == "tenants") print_tenants(j);
      else if (cmd == "classes") print_classes(j);
      else print_flows(j);
      return 0;
    }
    if (cmd == "top") {
      double interval = 0;
      try {
        interval = std::stod(interval_text);
      } catch (const std::exception&) {
      }
      if (interval < 0.1 || interval > 3600) {
        std::cerr << "nvqosctl: --interval \"" << interval_text << "\": seconds between 0.1 and 3600\n";
        return kExitUsage;
      }
      return run_top(ep, interval, count, as_json);
    }
    if (cmd == "slow") return run_slow(ep, !vm.count("no-follow"), as_json);
    if (cmd == "slo") {
      json j = call(ep, http::verb::get, "/v1/slo");
      if (as_json) std::cout << j.dump(2) << "\n";
      else print_slo(j);
      return 0;
    }
    if (cmd == "reload") {
      json j = call(ep, http::verb::post, "/v1/reload");
      if (as_json) std::cout << j.dump(2) << "\n";
      else std::cout << "reloaded: " << j.value("tenants", 0) << " tenants in force\n";
      return 0;
    }
    std::cerr << "nvqosctl: unknown command \"" << cmd << "\"\n\n" << usage;
    return kExitUsage;
  } catch (const ApiError& e) {
    std::cerr << "nvqosctl: " << e.what() << "\n";
    return kExitError;
  }
}
