// nvqos-load: runs NVMe/TCP workloads (jobs) against a target and reports
// IOPS, throughput and latency per job and operation.
//
// Exit status: 0 all I/O succeeded; 1 a job could not run or lost its
// connection; 2 bad command line or job file; 3 some I/O failed or verify
// found a mismatch.
//
// One thread, one io_context: every job and queue is driven by the same event
// loop, so nothing is locked and the measurements cost no cross-thread
// hand-off. One core sustains well over 100k IOPS of 4 KiB reads (see
// tests/bench), which leaves the other core of a 2-core host to the target.
#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "job.hpp"
#include "options.hpp"
#include "stats.hpp"
#include "trace.hpp"

namespace asio = boost::asio;
using namespace nvqos::load;

namespace {

constexpr auto kAutoProgressThreshold = std::chrono::seconds(2);

struct Run {
  asio::io_context io;
  Options opts;
  std::unique_ptr<TraceWriter> trace;
  std::vector<std::unique_ptr<Job>> jobs;
  Clock clock;
  bool setup_failed = false;
  size_t jobs_running = 0;
  uint64_t start_ns = 0;
  asio::steady_timer progress_timer{io};
  asio::signal_set signals{io, SIGINT, SIGTERM};
  std::vector<uint64_t> last_ios, last_bytes;
  bool show_progress = false;

  std::chrono::nanoseconds longest_runtime() const {
    std::chrono::nanoseconds r{0};
    for (const auto& j : opts.jobs) r = std::max(r, j.runtime);
    return r;
  }

  void print_progress() {
    double elapsed = static_cast<double>(monotonic_ns() - start_ns) / 1e9;
    std::string line;
    char buf[256];
    auto total = longest_runtime();
    if (total.count())
      std::snprintf(buf, sizeof buf, "[%5.1f s / %.1f s]", elapsed, std::chrono::duration<double>(total).count());
    else
      std::snprintf(buf, sizeof buf, "[%5.1f s]", elapsed);
    line += buf;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const Job& j = *jobs[i];
      double ios = static_cast<double>(j.completed() - last_ios[i]);
      double bytes = static_cast<double>(j.completed_bytes() - last_bytes[i]);
      last_ios[i] = j.completed();
      last_bytes[i] = j.completed_bytes();
      std::snprintf(buf, sizeof buf, " %s: %.0f IOPS %.1f MiB/s", j.spec().name.c_str(), ios,
                    bytes / (1024.0 * 1024.0));
      line += buf;
      if (j.spec().ios) {
        std::snprintf(buf, sizeof buf, " (%llu/%llu IOs)", static_cast<unsigned long long>(j.completed()),
                      static_cast<unsigned long long>(j.spec().ios));
        line += buf;
      }
      if (j.stats().total_errors()) {
        std::snprintf(buf, sizeof buf, " %llu errors", static_cast<unsigned long long>(j.stats().total_errors()));
        line += buf;
      }
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }

  void arm_progress() {
    progress_timer.expires_after(std::chrono::seconds(1));
    progress_timer.async_wait([this](const boost::system::error_code& ec) {
      if (ec || jobs_running == 0) return;
      print_progress();
      arm_progress();
    });
  }

  asio::awaitable<void> main() {
    for (auto& job : jobs) {
      try {
        co_await job->setup();
      } catch (const std::exception& e) {
        job->stats().fatal_error = e.what();
        std::fprintf(stderr, "nvqos-load: job %s: %s\n", job->spec().name.c_str(), e.what());
        setup_failed = true;
      }
      if (setup_failed) break;
    }
    if (setup_failed) {
      for (auto& job : jobs) job->abort();
      co_return;
    }
    for (auto& job : jobs) {
      const auto& c = job->controller();
      std::fprintf(stderr,
                   "nvqos-load: job %s: %s:%u %s ctrl %u (%s), ns %u: %llu x %u B blocks; %s bs %u qd %u x %u "
                   "queues, writes %s%s%s\n",
                   job->spec().name.c_str(), job->spec().host.c_str(), job->spec().port, job->spec().subnqn.c_str(),
                   c.cntlid, c.model.c_str(), job->spec().nsid, static_cast<unsigned long long>(c.ns_blocks),
                   c.lba_size, describe_rw(job->spec()).c_str(), job->spec().block_size, job->spec().qd,
                   job->spec().queues, job->in_capsule_writes() ? "in-capsule" : "by R2T",
                   job->spec().header_digest ? ", header digest" : "", job->spec().data_digest ? ", data digest" : "");
    }

    show_progress = opts.progress.value_or(longest_runtime() > kAutoProgressThreshold);
    last_ios.assign(jobs.size(), 0);
    last_bytes.assign(jobs.size(), 0);
    signals.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      std::fprintf(stderr, "nvqos-load: interrupted, finishing outstanding I/O\n");
      for (auto& job : jobs) job->stop_issuing();
    });
    start_ns = monotonic_ns();
    jobs_running = jobs.size();
    auto all_done = std::make_shared<asio::steady_timer>(io, std::chrono::hours(24 * 365));
    for (auto& job : jobs)
      job->start(start_ns, [this, all_done] {
        if (--jobs_running == 0) all_done->cancel();
      });
    if (show_progress) arm_progress();
    if (jobs_running) {
      boost::system::error_code ec;
      co_await all_done->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    progress_timer.cancel();
    signals.cancel();
    for (auto& job : jobs) co_await job->shutdown();
  }
};

}  // namespace

int main(int argc, char** argv) {
  auto run = std::make_unique<Run>();
  try {
    auto opts = parse_command_line(argc, argv);
    if (!opts) return 0;
    run->opts = std::move(*opts);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nvqos-load: %s\n(see nvqos-load --help)\n", e.what());
    return 2;
  }
  try {
    if (!run->opts.trace_path.empty()) run->trace = std::make_unique<TraceWriter>(run->opts.trace_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nvqos-load: %s\n", e.what());
    return 2;
  }
  run->clock = Clock::now();
  for (const auto& spec : run->opts.jobs)
    run->jobs.push_back(std::make_unique<Job>(run->io, spec, run->trace.get(), run->clock));

  std::string fatal;
  asio::co_spawn(run->io, run->main(), [&](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      fatal = ex.what();
    }
  });
  run->io.run();
  if (!fatal.empty()) {
    std::fprintf(stderr, "nvqos-load: %s\n", fatal.c_str());
    return 1;
  }
  try {
    if (run->trace) run->trace->flush();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nvqos-load: %s\n", e.what());
    return 1;
  }

  std::vector<JobReport> reports;
  for (const auto& job : run->jobs) reports.push_back({&job->spec(), &job->stats()});
  if (run->opts.json) print_json_report(std::cout, reports);
  else if (!run->setup_failed) print_text_report(std::cout, reports);
  std::cout.flush();

  int status = 0;
  for (const auto& job : run->jobs) {
    if (!job->stats().fatal_error.empty()) {
      if (!run->setup_failed)
        std::fprintf(stderr, "nvqos-load: job %s failed: %s\n", job->spec().name.c_str(),
                     job->stats().fatal_error.c_str());
      status = 1;
    } else if (job->stats().total_errors() && status == 0) {
      status = 3;
    }
  }
  return status;
}
