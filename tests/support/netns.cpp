#include "netns.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace nvqos::test {

int run(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf{};
  std::string out;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  int status = pclose(pipe);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void must(const std::string& command) {
  std::string out;
  if (int rc = run(command, &out); rc != 0)
    throw std::runtime_error("`" + command + "` failed (exit " + std::to_string(rc) + "): " + out);
}

std::string unique_name(const std::string& prefix) {
  static int counter = 0;
  return prefix + std::to_string(getpid() % 100000) + "x" + std::to_string(counter++);
}

namespace {

// Each test namespace names its creator's pid in a file here, so a later test can remove the
// namespaces of a run that was killed (a ctest timeout's SIGKILL runs no destructor).
const std::filesystem::path kOwners = "/run/nvqos-test-netns";

void remove_namespaces_of_dead_runs() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kOwners, ec)) {
    pid_t owner = 0;
    std::ifstream(entry.path()) >> owner;
    if (owner > 0 && (kill(owner, 0) == 0 || errno != ESRCH)) continue;
    run("ip netns del " + entry.path().filename().string());
    std::filesystem::remove(entry.path(), ec);
  }
}

}  // namespace

Netns::Netns(std::string name) : name_(std::move(name)) {
  remove_namespaces_of_dead_runs();
  run("ip netns del " + name_);  // a leftover of a killed run
  must("ip netns add " + name_);
  std::error_code ec;
  std::filesystem::create_directories(kOwners, ec);
  std::ofstream(kOwners / name_) << getpid();
  must(exec() + "ip link set lo up");
}

Netns::~Netns() {
  run("ip netns del " + name_);
  std::error_code ec;
  std::filesystem::remove(kOwners / name_, ec);
}

VethPair::VethPair(const Netns& a, std::string a_name, const std::vector<std::string>& a_addrs, const Netns& b,
                   std::string b_name, const std::vector<std::string>& b_addrs)
    : a_ns_(a.name()), a_name_(std::move(a_name)), b_name_(std::move(b_name)) {
  must("ip link add " + a_name_ + " netns " + a.name() + " type veth peer name " + b_name_ + " netns " + b.name());
  for (const auto& addr : a_addrs) must(a.exec() + "ip addr add " + addr + " dev " + a_name_);
  for (const auto& addr : b_addrs) must(b.exec() + "ip addr add " + addr + " dev " + b_name_);
  must(a.exec() + "ip link set " + a_name_ + " up");
  must(b.exec() + "ip link set " + b_name_ + " up");
}

VethPair::~VethPair() { run("ip -n " + a_ns_ + " link del " + a_name_); }

void in_netns(const std::string& netns, const std::function<void()>& fn) {
  std::exception_ptr error;
  std::thread t([&] {
    try {
      int fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw std::runtime_error("open netns " + netns + ": " + std::strerror(errno));
      int rc = setns(fd, CLONE_NEWNET);
      close(fd);
      if (rc != 0) throw std::runtime_error("setns " + netns + ": " + std::strerror(errno));
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::string& log_path) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
}

ChildProcess::~ChildProcess() {
  if (running()) {
    signal(SIGTERM);
    if (!wait(std::chrono::seconds(5))) {
      signal(SIGKILL);
      wait(std::chrono::seconds(5));
    }
  }
}

void ChildProcess::signal(int sig) {
  if (pid_ > 0 && !status_) kill(pid_, sig);
}

bool ChildProcess::running() {
  if (pid_ <= 0 || status_) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status_;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int http_get(const std::string& host, int port, const std::string& path, std::string* body) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return -1;
  }
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, n);
  close(fd);
  int status = -1;
  if (std::sscanf(resp.c_str(), "HTTP/%*s %d", &status) != 1) return -1;
  if (body) {
    auto pos = resp.find("\r\n\r\n");
    *body = pos == std::string::npos ? "" : resp.substr(pos + 4);
  }
  return status;
}

int http_get_in(const std::string& netns, const std::string& host, int port, const std::string& path,
                std::string* body) {
  int status = -1;
  in_netns(netns, [&] { status = http_get(host, port, path, body); });
  return status;
}

bool wait_agent_ready(ChildProcess& agent, const std::string& netns, int port, std::chrono::milliseconds timeout) {
  wait_until([&] { return !agent.running() || http_get_in(netns, "127.0.0.1", port, "/readyz", nullptr) == 200; },
             timeout);
  return agent.running() && http_get_in(netns, "127.0.0.1", port, "/readyz", nullptr) == 200;
}

std::optional<double> metric_value(const std::string& text, const std::string& name,
                                   const std::map<std::string, std::string>& labels) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool all = true;
    for (const auto& [k, v] : labels)
      if (line.find(k + "=\"" + v + "\"") == std::string::npos) all = false;
    if (!all) continue;
    auto space = line.rfind(' ');
    return std::stod(line.substr(space + 1));
  }
  return std::nullopt;
}

bool wait_until(const std::function<bool()>& ready, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ready();
}

bool is_root() { return geteuid() == 0; }

}  // namespace nvqos::test
