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

void ServiceTimes::record_kernel(const std::string& hostnqn, ServiceOp op, std::uint64_t rx_ns, std::uint64_t tx_ns,
                                 bool rx_behind) {
  std::lock_guard lock(mu_);
  OpServiceTimes& t = hosts_[hostnqn][static_cast<int>(op)];
  if (rx_ns == 0) ++t.missing_rx;
  else if (tx_ns == 0) ++t.missing_tx;
  else if (tx_ns < rx_ns) ++t.reversed;
  else t.kernel.record(tx_ns - rx_ns);
  if (rx_ns && tx_ns && rx_behind) ++t.rx_behind;
}

nlohmann::json ServiceTimes::report() const {
  const bool kernel = clock_ == wireclock::LatencyClock::kKernel;
  nlohmann::json doc;
  doc["units"] = {{"latency", "us"}};
  doc["latency_clock"] = wireclock::latency_clock_name(clock_);
  doc["span"] = kernel ? "capsule header's RX stamp to the completion header's TX stamp"
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
      j["latency_us"] = wireclock::latency_json(kernel ? t.kernel : t.app);
      if (kernel) {
        j["app_latency_us"] = wireclock::latency_json(t.app);
        j["kernel_latency_us"] = wireclock::latency_json(t.kernel);
        j["kernel_clock"] = {{"timed", t.kernel.count()},
                             {"missing_rx_stamp", t.missing_rx},
                             {"missing_tx_stamp", t.missing_tx},
                             {"reversed", t.reversed},
                             {"rx_behind", t.rx_behind}};
      }
      oj[service_op_name(static_cast<ServiceOp>(o))] = j;
    }
    doc["hosts"][host] = {{"ops", oj}};
  }
  return doc;
}

}  // namespace nvqos::target
