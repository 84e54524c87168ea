// Test hosts for integration tests: network namespaces, veth pairs and child
// processes, each owned by an RAII object so a failing test still removes
// what it made. Traffic only ever flows between namespaces the test created.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace nvqos::test {

// Runs a shell command; returns its exit status and, if asked, its stdout.
int run(const std::string& command, std::string* output = nullptr);
// Like run(), but throws std::runtime_error naming the command on failure.
void must(const std::string& command);

// A short name unique to this process, for namespaces and links (IFNAMSIZ 16).
std::string unique_name(const std::string& prefix);

class Netns {
 public:
  explicit Netns(std::string name);
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  const std::string& name() const { return name_; }
  // "ip netns exec NAME " prefix for commands.
  std::string exec() const { return "ip netns exec " + name_ + " "; }

 private:
  std::string name_;
};

// A veth pair with each end moved into a namespace, addresses added, and up.
class VethPair {
 public:
  VethPair(const Netns& a, std::string a_name, const std::vector<std::string>& a_addrs, const Netns& b,
           std::string b_name, const std::vector<std::string>& b_addrs);
  ~VethPair();
  VethPair(const VethPair&) = delete;
  VethPair& operator=(const VethPair&) = delete;
  const std::string& a_name() const { return a_name_; }
  const std::string& b_name() const { return b_name_; }

 private:
  std::string a_ns_, a_name_, b_name_;
};

// Runs `fn` on a thread whose network namespace is `netns`, and waits for it.
void in_netns(const std::string& netns, const std::function<void()>& fn);

class ChildProcess {
 public:
  // argv[0] is the program path. stdout+stderr go to `log_path`.
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Waits for exit; returns the exit status, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

std::string read_file(const std::string& path);

// A plain HTTP/1.0 GET to host:port from the caller's network namespace.
// Returns the status code and fills body; -1 if the connection failed.
int http_get(const std::string& host, int port, const std::string& path, std::string* body);

// http_get() from inside network namespace `netns`.
int http_get_in(const std::string& netns, const std::string& host, int port, const std::string& path,
                std::string* body);

// Waits until an agent started in `netns` answers 200 on /readyz at
// 127.0.0.1:port; false if it exited first or the timeout passed.
bool wait_agent_ready(ChildProcess& agent, const std::string& netns, int port, std::chrono::milliseconds timeout);

// Value of the sample `name{labels}` in Prometheus text, labels given as
// {"key", "value"} pairs that must all match; nullopt if absent.
std::optional<double> metric_value(const std::string& text, const std::string& name,
                                   const std::map<std::string, std::string>& labels);

// Polls `ready` every 50 ms until it returns true or the timeout passes.
bool wait_until(const std::function<bool()>& ready, std::chrono::milliseconds timeout);

bool is_root();

}  // namespace nvqos::test
