// The daemon: config -> policy -> per-interface data paths -> telemetry ->
// /metrics, all on one io_context (no threads: every task is short and the
// kernel does the per-packet work).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "config_watch.hpp"
#include "datapath.hpp"
#include "host.hpp"
#include "http_server.hpp"
#include "metrics.hpp"
#include "policy.hpp"

namespace nvqos::agent {

struct AgentOptions {
  std::optional<std::string> config_path;  // none: the built-in observe-only default
  std::vector<std::string> interfaces;
  std::string metrics_address = "0.0.0.0:9465";
  std::string admin_socket = "/run/nvqos/agent.sock";  // empty: no admin API
  bool watch_config = true;  // reload when the config file changes
  std::chrono::milliseconds telemetry_interval{1000};
  DatapathOptions datapath;
};

class Agent {
 public:
  Agent(boost::asio::io_context& io, AgentOptions options);
  ~Agent();

  // Everything or nothing: on error whatever was attached is detached again.
  Status start();
  // Re-reads the config; a bad one is refused and the running policy stays.
  Status reload();
  void stop();

 private:
  Result<Policy> read_policy() const;
  void wait_for_signal();
  void schedule_telemetry();
  void take_snapshot();
  HttpResponse handle_http(const HttpRequest& req, const HttpPeer& peer);
  HttpResponse handle_admin(const HttpRequest& req);
  std::string readiness_json(bool& ready) const;
  nlohmann::json status_json() const;
  nlohmann::json tenants_json() const;

  boost::asio::io_context& io_;
  AgentOptions options_;
  HostFeatures host_;
  Policy policy_;
  DesiredState state_;
  std::vector<std::unique_ptr<InterfaceDatapath>> datapaths_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<HttpServer> admin_;
  std::unique_ptr<ConfigWatch> config_watch_;
  boost::asio::steady_timer telemetry_timer_;
  boost::asio::signal_set signals_;
  std::shared_ptr<const Snapshot> snapshot_;
  AgentStatus status_;
  std::string last_reload_error_;
  bool stopping_ = false;
};

}  // namespace nvqos::agent
