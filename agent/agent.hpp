// The daemon: config -> policy -> per-interface data paths -> telemetry ->
// /metrics, all on one io_context (no threads: every task is short and the
// kernel does the per-packet work).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "admin_api.hpp"
#include "class_override.hpp"
#include "config.hpp"
#include "config_watch.hpp"
#include "datapath.hpp"
#include "host.hpp"
#include "http_server.hpp"
#include "metrics.hpp"
#include "policy.hpp"
#include "slo_loop.hpp"

namespace nvqos::agent {

struct AgentOptions {
  std::optional<std::string> config_path;  // none: the built-in observe-only default
  std::vector<std::string> interfaces;
  std::string metrics_address = "0.0.0.0:9465";
  std::string admin_socket = "/run/nvqos/agent.sock";  // empty: no admin API
  // Optional TCP listener of the admin API; every request needs the bearer
  // token read from admin_token_file (a private file, like ssh's keys).
  std::string admin_address;
  std::string admin_token_file;
  bool watch_config = true;  // reload when the config file changes
  // On SIGTERM/SIGINT leave programs, filters, qdiscs and pins for the next
  // agent (rolling update) instead of removing them.
  bool keep_on_exit = false;
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
  // Answers one request of either listener; public so that the admin API
  // fuzzer can drive parsing and routing without sockets.
  HttpResponse handle_http(const HttpRequest& req, const HttpPeer& peer);

 private:
  Result<Policy> read_policy() const;
  // Compiles `configured` with `overrides` in force and applies it to every
  // interface by difference (reloads and class overrides); state_ follows.
  Status apply_policy(const Policy& configured, const ClassOverrides& overrides);
  void wait_for_signal();
  void schedule_telemetry();
  void take_snapshot();
  // Start failed: tear down what this start made, but leave a data path it
  // adopted from a previous agent running.
  void abandon_datapaths();
  HttpResponse handle_admin(const HttpRequest& req);
  // Admin API (admin_api.cpp).
  Status load_admin_token();  // before anything is attached: a bad token file changes nothing
  Status start_admin();
  std::optional<HttpResponse> refuse_unauthorized(const HttpRequest& req) const;
  bool handle_deferred(const HttpRequest& req, const HttpPeer& peer, HttpReply reply);
  nlohmann::json flows_json(const HttpRequest& req);
  void on_slow_command(const std::string& ifname, const nvqos_slow_cmd_event& event, const std::string& tenant);
  std::string readiness_json(bool& ready) const;
  nlohmann::json status_json() const;
  nlohmann::json tenants_json() const;
  // Classes and temporary class overrides (admin_classes.cpp).
  nlohmann::json classes_json() const;
  nlohmann::json override_json(const ClassOverride& o) const;
  HttpResponse handle_class_override(const HttpRequest& req, const std::string& tenant);
  void schedule_override_expiry();
  void expire_overrides();

  boost::asio::io_context& io_;
  AgentOptions options_;
  HostFeatures host_;
  Policy policy_;
  DesiredState state_;
  std::vector<std::unique_ptr<InterfaceDatapath>> datapaths_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<HttpServer> admin_;
  std::unique_ptr<HttpServer> admin_tcp_;
  std::string admin_token_;
  SlowEventLog slow_events_;
  FlowRateTracker flow_rates_;
  std::unique_ptr<ConfigWatch> config_watch_;
  std::unique_ptr<SloLoop> slo_;
  std::vector<InterfaceDatapath*> datapath_ptrs() const;
  boost::asio::steady_timer telemetry_timer_;
  boost::asio::steady_timer override_timer_;  // the next class override expiry
  boost::asio::signal_set signals_;
  std::shared_ptr<const Snapshot> snapshot_;
  // Recent snapshots, the oldest at least kUsageWindow old when there is one:
  // the base of the rates /v1/classes reports.
  std::deque<std::shared_ptr<const Snapshot>> recent_snapshots_;
  ClassOverrides class_overrides_;
  AgentStatus status_;
  std::string last_reload_error_;
  bool stopping_ = false;
};

}  // namespace nvqos::agent
