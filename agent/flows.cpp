#include "flows.hpp"

#include <arpa/inet.h>

#include <cstring>

#include "commands.hpp"

namespace nvqos::agent {

void FlowRateTracker::update(Clock::time_point now, std::vector<FlowRow>& rows) {
  std::map<Key, Reading> next;
  for (auto& row : rows) {
    Key key;
    std::memcpy(key.data(), &row.key, key.size());
    Reading reading{now, {row.value.bytes[0], row.value.bytes[1]}, row.value.first_seen_ns};
    auto it = last_.find(key);
    const bool comparable = it != last_.end() && now - it->second.at <= max_gap_ && now > it->second.at &&
                            it->second.first_seen_ns == reading.first_seen_ns &&
                            reading.bytes[0] >= it->second.bytes[0] && reading.bytes[1] >= it->second.bytes[1];
    if (comparable) {
      const double seconds = std::chrono::duration<double>(now - it->second.at).count();
      for (int d = 0; d < NVQOS_DIR_MAX; ++d)
        row.rate_bytes_per_second[d] = double(reading.bytes[d] - it->second.bytes[d]) / seconds;
      row.rate_is_lifetime_average = false;
    } else {
      const double life = row.age_seconds > 0 ? row.age_seconds : 0;
      for (int d = 0; d < NVQOS_DIR_MAX; ++d)
        row.rate_bytes_per_second[d] = life > 0 ? double(row.value.bytes[d]) / life : 0;
      row.rate_is_lifetime_average = true;
    }
    next.emplace(key, reading);
  }
  last_ = std::move(next);
}

std::string format_endpoint(const std::uint8_t addr[16], std::uint16_t port_be) {
  static const std::uint8_t kV4Mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char text[INET6_ADDRSTRLEN] = "";
  const std::string port = std::to_string(ntohs(port_be));
  if (std::memcmp(addr, kV4Mapped, sizeof kV4Mapped) == 0) {
    inet_ntop(AF_INET, addr + 12, text, sizeof text);
    return std::string(text) + ":" + port;
  }
  inet_ntop(AF_INET6, addr, text, sizeof text);
  return "[" + std::string(text) + "]:" + port;
}

nlohmann::json flow_to_json(const FlowRow& row) {
  nlohmann::json j{
      {"interface", row.interface},
      {"local", format_endpoint(row.key.local_addr, row.key.local_port)},
      {"remote", format_endpoint(row.key.remote_addr, row.key.remote_port)},
      {"role", cmd_role_name(row.value.role)},
      {"tenant", row.tenant},
      {"tenant_id", row.value.tenant_id},
      {"state", (row.value.flags & NVQOS_FLOW_F_CLOSED) ? "closed" : "open"},
      {"ingress_bytes", row.value.bytes[NVQOS_DIR_INGRESS]},
      {"egress_bytes", row.value.bytes[NVQOS_DIR_EGRESS]},
      {"ingress_packets", row.value.packets[NVQOS_DIR_INGRESS]},
      {"egress_packets", row.value.packets[NVQOS_DIR_EGRESS]},
      {"ingress_bytes_per_second", row.rate_bytes_per_second[NVQOS_DIR_INGRESS]},
      {"egress_bytes_per_second", row.rate_bytes_per_second[NVQOS_DIR_EGRESS]},
      {"rate", row.rate_is_lifetime_average ? "lifetime_average" : "live"},
      {"age_seconds", row.age_seconds},
      {"idle_seconds", row.idle_seconds},
  };
  for (const auto& [name, value] : row.attributes) j[name] = value;
  return j;
}

}  // namespace nvqos::agent
