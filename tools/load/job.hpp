// One nvqos-load job (tenant): an NVMe-oF controller association (admin queue
// + I/O queues) and the workload run over it.
#pragma once

#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "options.hpp"
#include "queue_pair.hpp"
#include "stats.hpp"
#include "trace.hpp"

namespace nvqos::load {

// What the controller told us during setup.
struct ControllerInfo {
  uint16_t cntlid = 0;
  uint64_t cap = 0;
  uint32_t in_capsule_data = 0;  // bytes of write data that fit in a command capsule
  uint32_t max_transfer = 0;     // bytes, from MDTS; 0 = no limit
  uint32_t kato_ms = 0;
  uint64_t ns_blocks = 0;
  uint32_t lba_size = 512;
  std::string model, serial;
};

// Wall clock = realtime at start + monotonic offset, so trace timestamps are
// comparable with packet captures and still differ exactly by the latency.
struct Clock {
  uint64_t mono_base = 0;
  uint64_t real_base = 0;
  static Clock now();
  uint64_t wall(uint64_t mono_ns) const { return real_base + (mono_ns - mono_base); }
};

class Job : public QueueEvents {
 public:
  Job(boost::asio::io_context& io, JobSpec spec, TraceWriter* trace, const Clock& clock);
  ~Job() override;

  // Connects and configures the controller and all I/O queues. Throws
  // std::runtime_error naming the step that failed.
  boost::asio::awaitable<void> setup();
  // Starts issuing I/O; `on_done` runs once every I/O has completed (or the job failed).
  void start(uint64_t start_ns, std::function<void()> on_done);
  // Stops issuing new I/O (e.g. SIGINT); outstanding I/O still completes.
  void stop_issuing();
  // Normal shutdown of the controller (CC.SHN) and closing of every queue.
  boost::asio::awaitable<void> shutdown();
  void abort();  // close everything now

  const JobSpec& spec() const { return spec_; }
  const JobStats& stats() const { return stats_; }
  JobStats& stats() { return stats_; }
  const ControllerInfo& controller() const { return info_; }
  bool in_capsule_writes() const { return spec_.block_size <= info_.in_capsule_data; }
  uint64_t completed() const { return completed_; }
  uint64_t completed_bytes() const { return completed_bytes_; }
  bool done() const { return done_; }

  // QueueEvents
  void on_complete(QueuePair& queue, uint16_t cid, const nvmf::Cqe& cqe, uint64_t now_ns) override;
  void on_queue_failed(QueuePair& queue, const std::string& what) override;

 private:
  struct IoSlot {
    Op op = Op::kRead;
    uint64_t block = 0;       // index in the job's range
    uint32_t generation = 0;  // written (writes) or expected (reads), 0 = any
    uint64_t scheduled_ns = 0;
    std::span<uint8_t> buffer;
  };
  struct IoQueue {
    std::unique_ptr<QueuePair> qp;
    std::vector<IoSlot> slots;
    std::vector<uint16_t> free_cids;
  };

  boost::asio::awaitable<void> setup_admin();
  boost::asio::awaitable<void> setup_io_queue(size_t index);
  boost::asio::awaitable<nvmf::Cqe> admin(const nvmf::Sqe& sqe, std::span<const uint8_t> out,
                                          std::span<uint8_t> in, const char* step);
  boost::asio::awaitable<void> keep_alive_loop();
  bool may_issue(uint64_t now_ns) const;
  bool issue(IoQueue& q, uint64_t scheduled_ns);  // false: nothing to issue now
  bool pick_block(uint64_t& block);
  void pace();
  void schedule_pacer(uint64_t at_ns);
  void record_error(Op op, const std::string& name);
  void check_done();
  void arm_watchdog();
  void fail_job(const std::string& what);

  boost::asio::io_context& io_;
  JobSpec spec_;
  TraceWriter* trace_;
  Clock clock_;
  JobStats stats_;
  ControllerInfo info_;
  std::array<uint8_t, 16> hostid_{};
  boost::asio::ip::tcp::endpoint endpoint_;
  boost::asio::ip::address source_;
  std::unique_ptr<QueuePair> admin_;
  std::vector<IoQueue> queues_;
  std::vector<uint8_t> data_;  // one block-size buffer per I/O slot

  // Workload state.
  uint64_t first_byte_ = 0;     // namespace byte offset of the range
  uint64_t range_blocks_ = 0;   // blocks of block_size in the range
  uint32_t lbas_per_block_ = 1;
  uint64_t next_sequential_ = 0;
  std::mt19937_64 rng_;
  std::vector<uint32_t> generation_;  // verify: last generation written per block (0 = unknown)
  std::vector<uint8_t> block_busy_;   // verify: a command on the block is outstanding
  uint32_t next_generation_ = 1;

  uint64_t start_ns_ = 0;
  uint64_t end_ns_ = 0;  // 0 = no time limit
  uint64_t issued_ = 0;
  uint64_t completed_ = 0;
  uint64_t completed_bytes_ = 0;
  uint64_t inflight_ = 0;
  uint64_t last_complete_ns_ = 0;
  bool issuing_ = false;
  bool started_ = false;
  bool done_ = false;
  size_t next_queue_ = 0;
  std::function<void()> on_done_;

  // Open-loop pacing: I/O k is due at start + k * period.
  uint64_t period_ns_ = 0;
  uint64_t paced_sent_ = 0;
  boost::asio::steady_timer pacer_;
  bool pacer_armed_ = false;
  boost::asio::steady_timer keep_alive_timer_;
  boost::asio::steady_timer watchdog_;
  bool keep_alive_running_ = false;
};

}  // namespace nvqos::load
