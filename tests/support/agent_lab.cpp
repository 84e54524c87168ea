#include "agent_lab.hpp"

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace nvqos::test {

std::string agent_program() { return NVQOS_AGENT_PATH; }
std::string ctl_program() { return NVQOS_CTL_PATH; }
std::string target_program() { return NVQOS_TARGET_PATH; }
std::string load_program() { return NVQOS_LOAD_PATH; }

std::vector<std::string> in_netns_argv(const std::string& netns, std::vector<std::string> argv) {
  argv.insert(argv.begin(), {"ip", "netns", "exec", netns});
  return argv;
}

TwoHostLab::ScratchDir::ScratchDir(std::filesystem::path p) : path(std::move(p)) {
  std::filesystem::create_directories(path);
}

TwoHostLab::ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path, ignored);
}

TwoHostLab::TwoHostLab(const LabSpec& spec)
    : scratch_(std::filesystem::temp_directory_path() / unique_name(spec.prefix + "-dir")),
      target_(unique_name(spec.prefix + "-t")),
      initiator_(unique_name(spec.prefix + "-i")),
      veth_(target_, unique_name(spec.prefix + "t"), spec.target_addrs, initiator_, unique_name(spec.prefix + "i"),
            spec.initiator_addrs) {}

TwoHostLab::~TwoHostLab() = default;

std::string TwoHostLab::write_file(const std::string& name, const std::string& text) const {
  const std::string file = path(name);
  std::ofstream(file + ".tmp") << text;
  std::filesystem::rename(file + ".tmp", file);
  return file;
}

void TwoHostLab::route_from(const std::string& target_addr, const std::string& source_addr) const {
  must(initiator_.exec() + "ip route add " + target_addr + "/32 dev " + initiator_if() + " src " + source_addr);
}

void TwoHostLab::receive_each_flow_on_one_cpu(bool target_side, bool initiator_side) const {
  const auto rps = [](const Netns& ns, const std::string& ifname) {
    must(ns.exec() + "sh -c 'echo 1 > /sys/class/net/" + ifname + "/queues/rx-0/rps_cpus'");
  };
  if (target_side) rps(target_, target_if());
  if (initiator_side) rps(initiator_, initiator_if());
}

BpffsMount::BpffsMount(std::filesystem::path path) : path_(std::move(path)) {
  std::filesystem::create_directories(path_);
  if (mount("bpf", path_.c_str(), "bpf", 0, "mode=0700") != 0)
    throw std::runtime_error("mount bpffs on " + path_.string() + ": " + std::strerror(errno));
}

BpffsMount::~BpffsMount() { umount2(path_.c_str(), MNT_DETACH); }

std::vector<std::string> agent_argv(const AgentSpec& spec) {
  std::vector<std::string> argv{agent_program(),
                                "--interface",
                                spec.interface,
                                "--metrics-address",
                                "127.0.0.1:" + std::to_string(spec.metrics_port),
                                "--telemetry-interval",
                                spec.telemetry_interval,
                                "--admin-socket",
                                spec.admin_socket};
  if (spec.config) argv.insert(argv.end(), {"--config", *spec.config});
  if (spec.pin_dir) argv.insert(argv.end(), {"--pin-dir", *spec.pin_dir});
  if (!spec.watch_config) argv.push_back("--no-watch-config");
  argv.insert(argv.end(), spec.extra.begin(), spec.extra.end());
  return in_netns_argv(spec.netns, std::move(argv));
}

AgentProcess::AgentProcess(AgentSpec spec, std::string log_path)
    : spec_(std::move(spec)), log_path_(std::move(log_path)), process_(agent_argv(spec_), log_path_) {}

::testing::AssertionResult AgentProcess::ready(std::chrono::milliseconds timeout) {
  if (wait_agent_ready(process_, spec_.netns, spec_.metrics_port, timeout)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "agent not ready within " << timeout.count() << " ms:\n" << log();
}

std::string AgentProcess::metrics() const {
  std::string body;
  http_get_in(spec_.netns, "127.0.0.1", spec_.metrics_port, "/metrics", &body);
  return body;
}

double AgentProcess::metric_at_least(const std::string& name, const std::map<std::string, std::string>& labels,
                                     double want, std::chrono::milliseconds timeout) const {
  double seen = -1;
  wait_until(
      [&] {
        seen = metric_value(metrics(), name, labels).value_or(-1);
        return seen >= want;
      },
      timeout);
  return seen;
}

std::string AgentProcess::nvqosctl(const std::string& args, int* rc) const {
  std::string out;
  const int status =
      run("ip netns exec " + spec_.netns + " " + ctl_program() + " --socket " + spec_.admin_socket + " " + args, &out);
  if (rc) *rc = status;
  return out;
}

std::unique_ptr<ChildProcess> start_target(const Netns& ns, const std::vector<std::string>& listen,
                                           const std::string& subnqn, const std::string& namespace_spec,
                                           const std::string& log_path, const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv{target_program()};
  for (const auto& addr : listen) argv.insert(argv.end(), {"--listen", addr});
  argv.insert(argv.end(), {"--subsystem", subnqn, "--namespace", namespace_spec, "--allow-any-host", "--service-time",
                           "fixed:50us"});
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return std::make_unique<ChildProcess>(in_netns_argv(ns.name(), std::move(argv)), log_path);
}

std::unique_ptr<ChildProcess> start_load(const Netns& ns, const std::vector<std::string>& args,
                                         const std::string& log_path) {
  std::vector<std::string> argv{load_program()};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<ChildProcess>(in_netns_argv(ns.name(), std::move(argv)), log_path);
}

nlohmann::json load_report(const std::string& output) {
  const auto start = output.find("{\n");
  return nlohmann::json::parse(start == std::string::npos ? output : output.substr(start), nullptr, false);
}

LoadResult run_load(const Netns& ns, const std::vector<std::string>& args, const std::string& log_path,
                    std::chrono::milliseconds timeout) {
  std::vector<std::string> json_args{"--json"};
  json_args.insert(json_args.end(), args.begin(), args.end());
  auto load = start_load(ns, json_args, log_path);
  LoadResult result;
  result.status = load->wait(timeout).value_or(-1);
  result.output = read_file(log_path);
  result.report = load_report(result.output);
  return result;
}

}  // namespace nvqos::test
