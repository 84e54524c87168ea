// The integration tests' lab: a storage target's and an initiator's network
// namespace joined by a veth pair, a scratch directory, and the programs the
// tests run there (nvqos-agent, nvqos-target, nvqos-load). Every piece is an
// RAII object; declare programs after the lab so they stop before it goes.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "netns.hpp"

namespace nvqos::test {

// The programs under test (paths from the build).
std::string agent_program();
std::string ctl_program();
std::string target_program();
std::string load_program();

// `argv` run inside network namespace `netns` (ip netns exec).
std::vector<std::string> in_netns_argv(const std::string& netns, std::vector<std::string> argv);

struct LabSpec {
  // At most 5 characters: names the namespaces, the veth ends and the directory.
  std::string prefix;
  std::vector<std::string> target_addrs, initiator_addrs;  // "10.0.0.1/24"
};

// Target and initiator namespaces, a veth between them (target end "a",
// initiator end "b") and a scratch directory; all removed on destruction.
class TwoHostLab {
 public:
  explicit TwoHostLab(const LabSpec& spec);
  ~TwoHostLab();
  TwoHostLab(const TwoHostLab&) = delete;
  TwoHostLab& operator=(const TwoHostLab&) = delete;

  const Netns& target() const { return target_; }
  const Netns& initiator() const { return initiator_; }
  const std::string& target_if() const { return veth_.a_name(); }
  const std::string& initiator_if() const { return veth_.b_name(); }
  const std::filesystem::path& dir() const { return scratch_.path; }
  // A file in the scratch directory.
  std::string path(const std::string& name) const { return (scratch_.path / name).string(); }
  // Writes `text` to a scratch file by renaming over it (as editors and
  // ConfigMap volumes replace a file); returns its path.
  std::string write_file(const std::string& name, const std::string& text) const;

  // The initiator reaches `target_addr` from its own address `source_addr`, so
  // each tenant's connections leave from the address its policy matches.
  void route_from(const std::string& target_addr, const std::string& source_addr) const;
  // RPS: each flow's receive on one CPU. Without it a veth receives on the sending
  // CPU's backlog, and a sender whose segments leave from two CPUs reaches tc out
  // of order, which loses PDUs (docs/design.md); a NIC's RSS orders per flow too.
  void receive_each_flow_on_one_cpu(bool target_side, bool initiator_side) const;

 private:
  // Declared in creation order: destroyed veth first, directory last.
  struct ScratchDir {
    explicit ScratchDir(std::filesystem::path p);
    ~ScratchDir();
    std::filesystem::path path;
  } scratch_;
  Netns target_, initiator_;
  VethPair veth_;
};

// A bpffs mounted on `path` for a test's pins, unmounted on destruction (an
// agent under `ip netns exec` gets its own /sys, so the host's /sys/fs/bpf is
// not visible to it).
class BpffsMount {
 public:
  explicit BpffsMount(std::filesystem::path path);
  ~BpffsMount();
  BpffsMount(const BpffsMount&) = delete;
  BpffsMount& operator=(const BpffsMount&) = delete;

 private:
  std::filesystem::path path_;
};

struct AgentSpec {
  AgentSpec(std::string netns, std::string interface, int metrics_port)
      : netns(std::move(netns)), interface(std::move(interface)), metrics_port(metrics_port) {}
  std::string netns, interface;
  int metrics_port;
  std::optional<std::string> config;         // --config; none: observe only
  std::string telemetry_interval = "100ms";
  std::string admin_socket;                  // "" disables the admin socket
  std::optional<std::string> pin_dir;        // --pin-dir; "" disables pinning
  bool watch_config = true;
  std::vector<std::string> extra;            // further options
};

// The agent's command line for `spec`, under ip netns exec.
std::vector<std::string> agent_argv(const AgentSpec& spec);

// A running nvqos-agent and its metrics endpoint in its namespace.
class AgentProcess {
 public:
  AgentProcess(AgentSpec spec, std::string log_path);
  // /readyz answers 200 within `timeout`; the failure carries the agent's log.
  ::testing::AssertionResult ready(std::chrono::milliseconds timeout);

  // The body of /metrics ("" if the agent did not answer).
  std::string metrics() const;
  // Waits until `name{labels}` reaches at least `want` (telemetry is periodic);
  // returns the last value seen, -1 if absent.
  double metric_at_least(const std::string& name, const std::map<std::string, std::string>& labels, double want,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
  // nvqosctl against this agent's admin socket, inside its namespace; stdout and stderr.
  std::string nvqosctl(const std::string& args, int* rc = nullptr) const;

  void signal(int sig) { process_.signal(sig); }
  std::optional<int> wait(std::chrono::milliseconds timeout) { return process_.wait(timeout); }
  bool running() { return process_.running(); }
  const AgentSpec& spec() const { return spec_; }
  const std::string& log_path() const { return log_path_; }
  std::string log() const { return read_file(log_path_); }

 private:
  AgentSpec spec_;
  std::string log_path_;
  ChildProcess process_;
};

// A fixture for tests in a TwoHostLab: a derived SetUp skips without root and
// emplaces lab_; the agent stops in TearDown, before anything the test owns.
class AgentLabTest : public ::testing::Test {
 protected:
  void TearDown() override { agent_.reset(); }

  const Netns& target() const { return lab_->target(); }
  const Netns& initiator() const { return lab_->initiator(); }
  const std::string& target_if() const { return lab_->target_if(); }
  const std::string& initiator_if() const { return lab_->initiator_if(); }

  // Starts the agent (log in the scratch directory) and waits for /readyz.
  void start_agent(AgentSpec spec, std::chrono::milliseconds timeout, const std::string& log_name = "agent.log") {
    agent_.emplace(std::move(spec), lab_->path(log_name));
    ASSERT_TRUE(agent_->ready(timeout));
  }
  std::string metrics() const { return agent_->metrics(); }

  std::optional<TwoHostLab> lab_;
  std::optional<AgentProcess> agent_;
};

// nvqos-target in `ns` serving `subnqn` to any host on each of `listen`
// (addr:port), one namespace of `namespace_spec` (size:block), fixed 50 us
// service time.
std::unique_ptr<ChildProcess> start_target(const Netns& ns, const std::vector<std::string>& listen,
                                           const std::string& subnqn, const std::string& namespace_spec,
                                           const std::string& log_path,
                                           const std::vector<std::string>& extra_args = {});

// nvqos-load in `ns` with `args`, output to `log_path`, in the background.
std::unique_ptr<ChildProcess> start_load(const Netns& ns, const std::vector<std::string>& args,
                                         const std::string& log_path);

// The report `nvqos-load --json` prints last (progress may come before it);
// discarded if there is none.
nlohmann::json load_report(const std::string& output);

struct LoadResult {
  int status = -1;  // -1: still running at the timeout
  nlohmann::json report;
  std::string output;
};
// Runs `nvqos-load --json args` in `ns` to completion (at most `timeout`).
LoadResult run_load(const Netns& ns, const std::vector<std::string>& args, const std::string& log_path,
                    std::chrono::milliseconds timeout);

}  // namespace nvqos::test
