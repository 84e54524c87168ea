#include "service_time.hpp"

#include <nvqos/nvmf/nvme.h>
#include <nvqos/wireclock/latency_json.h>

namespace nvqos::target {

const char* service_op_name(ServiceOp op) {
  switch (op) {
    case ServiceOp::kRead: return "read";
    case ServiceOp::kWrite: return "write";
    case ServiceOp::kFlush: return "flush";
    case ServiceOp::kOther: break;
  }
  return "other";
}

ServiceOp service_op_of(std::uint8_t opcode) {
  switch (opcode) {
    case nvmf::nvm_opcode::kRead: return ServiceOp::kRead;
    case nvmf::nvm_opcode::kWrite: return ServiceOp::kWrite;
    case nvmf::nvm_opcode::kFlush: return ServiceOp::kFlush;
    default: return ServiceOp::kOther;
  }
}

void ServiceTimes::record_app(const std::string& hostnqn, ServiceOp op, std::uint64_t ns) {
  std::lock_guard lock(mu_);
  OpServiceTimes& t = hosts_[hostnqn][static_cast<int>(op)];
  ++t.ios;
  t.app.record(ns);
}

void ServiceTimes::record_stamps(const std::string& hostnqn, ServiceOp op, const CompletionStamps& s) {
  std::lock_guard lock(mu_);
  OpServiceTimes& t = hosts_[hostnqn][static_cast<int>(op)];
  t.kernel.record(s.tx_ns, s.rx_ns, false, s.rx_behind);
  if (clock_ == wireclock::LatencyClock::kWire) t.wire.record(s.tx_ns, s.tap_rx_ns, false);
}

nlohmann::json ServiceTimes::report() const {
  const bool stamped = clock_ != wireclock::LatencyClock::kApp, wire = clock_ == wireclock::LatencyClock::kWire;
  nlohmann::json doc;
  doc["units"] = {{"latency", "us"}};
  doc["latency_clock"] = wireclock::latency_clock_name(clock_);
  doc["span"] = wire      ? "capsule header's packet to the completion header's TX stamp"
                : stamped ? "capsule header's RX stamp to the completion header's TX stamp"
                          : "capsule parsed to the completion handed to the socket";
  doc["hosts"] = nlohmann::json::object();
  std::lock_guard lock(mu_);
  for (const auto& [host, ops] : hosts_) {
    nlohmann::json oj = nlohmann::json::object();
    for (int o = 0; o < kServiceOpCount; ++o) {
      const OpServiceTimes& t = ops[o];
      if (t.ios == 0) continue;
      nlohmann::json j;
      j["ios"] = t.ios;
      j["latency_us"] = wireclock::latency_json(wire ? t.wire.latency : stamped ? t.kernel.latency : t.app);
      if (stamped) {
        j["app_latency_us"] = wireclock::latency_json(t.app);
        j["kernel_latency_us"] = wireclock::latency_json(t.kernel.latency);
        j["kernel_clock"] = t.kernel.counts_json(true);
      }
      if (wire) {
        j["wire_latency_us"] = wireclock::latency_json(t.wire.latency);
        j["wire_clock"] = t.wire.counts_json(false);
      }
      oj[service_op_name(static_cast<ServiceOp>(o))] = j;
    }
    doc["hosts"][host] = {{"ops", oj}};
  }
  return doc;
}

}  // namespace nvqos::target
