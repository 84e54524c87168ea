// Verifier headroom: every program of the data path must verify in well under
// the kernel's 1M-instruction budget. The count is deterministic for a kernel and
// object, and it grows with the states the verifier explores, not with code size:
// the tc programs once went past 1M on a 6.18 kernel that had accepted them on an
// earlier build (docs/design.md, "Walking the stream"). Half the budget leaves room
// for other kernels' verifiers and the next change to the walk.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "nvqos_datapath.skel.h"

namespace {

constexpr unsigned long kVerifierBudget = 1'000'000;
constexpr unsigned long kHeadroomLimit = kVerifierBudget / 2;
// Verifier statistics only (BPF_LOG_STATS): the last lines of the log.
constexpr unsigned kLogStats = 4;

struct SkelDeleter {
  void operator()(nvqos_datapath *skel) const { nvqos_datapath__destroy(skel); }
};

TEST(VerifierBudget, EveryProgramVerifiesInUnderHalfTheBudget) {
  if (geteuid() != 0) GTEST_SKIP() << "loading BPF programs needs root (CAP_BPF)";
  std::unique_ptr<nvqos_datapath, SkelDeleter> skel(nvqos_datapath__open());
  ASSERT_TRUE(skel) << "open nvqos_datapath";

  std::map<std::string, std::vector<char>> logs;
  bpf_program *prog = nullptr;
  bpf_object__for_each_program(prog, skel->obj) {
    auto &log = logs[bpf_program__name(prog)];
    log.assign(64 * 1024, '\0');
    ASSERT_EQ(bpf_program__set_log_buf(prog, log.data(), log.size()), 0);
    ASSERT_EQ(bpf_program__set_log_level(prog, kLogStats), 0);
  }
  ASSERT_EQ(nvqos_datapath__load(skel.get()), 0) << "load nvqos_datapath: " << std::strerror(errno);

  const std::regex processed(R"(processed (\d+) insns)");
  for (const auto &[name, log] : logs) {
    const std::string text(log.data());
    std::smatch m;
    ASSERT_TRUE(std::regex_search(text, m, processed)) << name << ": no verifier statistics in\n" << text;
    const unsigned long insns = std::stoul(m[1]);
    std::printf("%-24s %7lu instructions processed by the verifier (%.1f%% of the budget)\n", name.c_str(),
                insns, 100.0 * insns / kVerifierBudget);
    EXPECT_LT(insns, kHeadroomLimit) << name << " verified with " << insns
                                     << " instructions processed, too close to the verifier's budget of "
                                     << kVerifierBudget;
  }
  EXPECT_GE(logs.size(), 3u) << "tc ingress, tc egress and XDP";
}

}  // namespace
