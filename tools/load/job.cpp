#include "job.hpp"

#include "pattern.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace nvqos::load {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr auto kSetupTimeout = 10s;
constexpr uint16_t kAdminQueueDepth = 32;
constexpr uint64_t kCapMqesMask = 0xffff;

std::string hex_uuid(const std::array<uint8_t, 16>& id) {
  char s[37];
  std::snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0], id[1],
                id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13], id[14],
                id[15]);
  return s;
}

std::string connect_error(const nvmf::Cqe& cqe, const JobSpec& spec) {
  std::string msg = nvmf::status_to_string(cqe.status);
  if (nvmf::status_code(cqe.status) == nvmf::status::kConnectInvalidParameters) {
    auto p = nvmf::parse_connect_invalid_param(cqe.dw0);
    if (p.in_data && p.ipo == nvmf::kConnectDataSubnqnOffset)
      msg += ": the target has no subsystem '" + spec.subnqn + "'";
    else if (p.in_data && p.ipo == nvmf::kConnectDataHostnqnOffset)
      msg += ": host NQN '" + spec.hostnqn + "' rejected";
    else if (p.in_data && p.ipo == nvmf::kConnectDataCntlidOffset)
      msg += ": controller ID rejected";
    else
      msg += std::string(": invalid parameter at ") + (p.in_data ? "data" : "command") + " offset " +
             std::to_string(p.ipo);
  } else if (nvmf::status_code(cqe.status) == nvmf::status::kConnectInvalidHost) {
    msg += ": host NQN '" + spec.hostnqn + "' is not allowed to access '" + spec.subnqn + "'";
  }
  return msg;
}

}  // namespace

Clock Clock::now() {
  timespec rt;
  Clock c;
  c.mono_base = monotonic_ns();
  clock_gettime(CLOCK_REALTIME, &rt);
  c.real_base = static_cast<uint64_t>(rt.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(rt.tv_nsec);
  return c;
}

Job::Job(asio::io_context& io, JobSpec spec, TraceWriter* trace, const Clock& clock)
    : io_(io),
      spec_(std::move(spec)),
      trace_(trace),
      clock_(clock),
      rng_(std::random_device{}()),
      pacer_(io),
      keep_alive_timer_(io),
      watchdog_(io) {
  std::random_device rd;
  for (auto& b : hostid_) b = static_cast<uint8_t>(rd());
  hostid_[6] = static_cast<uint8_t>((hostid_[6] & 0x0f) | 0x40);  // UUID version 4
  hostid_[8] = static_cast<uint8_t>((hostid_[8] & 0x3f) | 0x80);
  if (spec_.hostnqn.empty()) spec_.hostnqn = "nqn.2014-08.org.nvmexpress:uuid:" + hex_uuid(hostid_);
}

Job::~Job() { abort(); }

asio::awaitable<nvmf::Cqe> Job::admin(const nvmf::Sqe& sqe, std::span<const uint8_t> out, std::span<uint8_t> in,
                                      const char* step) {
  nvmf::Cqe cqe = co_await admin_->execute(sqe, out, in, kSetupTimeout);
  if (!cqe.ok())
    throw std::runtime_error(std::string(step) + " failed: " + nvmf::status_to_string(cqe.status));
  co_return cqe;
}

asio::awaitable<void> Job::setup() {
  tcp::resolver resolver(io_);
  boost::system::error_code ec;
  auto results = co_await resolver.async_resolve(spec_.host, std::to_string(spec_.port),
                                                 asio::redirect_error(asio::use_awaitable, ec));
  if (ec || results.empty())
    throw std::runtime_error("resolve '" + spec_.host + "': " + (ec ? ec.message() : "no address"));
  endpoint_ = results.begin()->endpoint();
  if (!spec_.source.empty()) source_ = asio::ip::make_address(spec_.source);
  co_await setup_admin();
  for (size_t i = 0; i < spec_.queues; ++i) co_await setup_io_queue(i);
  auto& summary = stats_.controller;
  summary.connected = true;
  summary.cntlid = info_.cntlid;
  summary.model = info_.model;
  summary.in_capsule_data = info_.in_capsule_data;
  summary.lba_size = info_.lba_size;
  summary.namespace_blocks = info_.ns_blocks;
  summary.in_capsule_writes = in_capsule_writes();
  for (const auto& q : queues_) summary.local_ports.push_back(q.qp->local_port());
  if (info_.kato_ms) {
    keep_alive_running_ = true;
    asio::co_spawn(io_, keep_alive_loop(), asio::detached);
  }
}

asio::awaitable<void> Job::setup_admin() {
  admin_ = std::make_unique<QueuePair>(
      io_,
      QueueConfig{.qid = 0,
                  .depth = kAdminQueueDepth,
                  .header_digest = spec_.header_digest,
                  .data_digest = spec_.data_digest,
                  .max_io_bytes = static_cast<uint32_t>(nvmf::kIdentifySize),
                  .name = spec_.name + " admin queue"},
      this);
  co_await admin_->connect(endpoint_, kSetupTimeout, source_);

  // Connect the admin queue to a new (dynamic) controller.
  nvmf::ConnectCommand cc{.qid = 0, .sqsize = kAdminQueueDepth - 1,
                          .kato_ms = static_cast<uint32_t>(spec_.kato.count())};
  nvmf::ConnectData cd{.hostid = hostid_, .cntlid = 0xffff, .subnqn = spec_.subnqn, .hostnqn = spec_.hostnqn};
  std::array<uint8_t, nvmf::kConnectDataSize> connect_data;
  cd.encode(connect_data);
  nvmf::Cqe cqe = co_await admin_->execute(nvmf::make_connect(0, cc), connect_data, {}, kSetupTimeout);
  if (!cqe.ok()) throw std::runtime_error("Connect to '" + spec_.subnqn + "' rejected: " + connect_error(cqe, spec_));
  info_.cntlid = static_cast<uint16_t>(cqe.dw0);
  info_.kato_ms = cc.kato_ms;

  // Enable the controller: CC.EN = 1 with 64-byte SQEs and 16-byte CQEs, then wait for CSTS.RDY.
  cqe = co_await admin(nvmf::make_property_get(0, nvmf::property::kCap, 8), {}, {}, "Property Get CAP");
  info_.cap = nvmf::property_value(cqe);
  uint32_t cc_value = nvmf::property::kCcEnable | (6u << 16) | (4u << 20);
  co_await admin(nvmf::make_property_set(0, nvmf::property::kCc, cc_value, 4), {}, {}, "Property Set CC.EN=1");
  auto ready_timeout = std::chrono::milliseconds(std::max<uint64_t>(((info_.cap >> 24) & 0xff) * 500, 500));
  auto deadline = std::chrono::steady_clock::now() + ready_timeout;
  asio::steady_timer poll(io_);
  for (;;) {
    cqe = co_await admin(nvmf::make_property_get(0, nvmf::property::kCsts, 4), {}, {}, "Property Get CSTS");
    uint64_t csts = nvmf::property_value(cqe);
    if (csts & nvmf::property::kCstsFatal) throw std::runtime_error("controller reports a fatal status (CSTS.CFS)");
    if (csts & nvmf::property::kCstsReady) break;
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("controller not ready (CSTS.RDY) within " + std::to_string(ready_timeout.count()) +
                               " ms of CC.EN=1");
    poll.expires_after(10ms);
    co_await poll.async_wait(asio::use_awaitable);
  }

  std::array<uint8_t, nvmf::kIdentifySize> id;
  co_await admin(nvmf::make_identify(0, nvmf::cns::kController), {}, id, "Identify Controller");
  auto ctrl = nvmf::IdentifyController::decode(id);
  info_.in_capsule_data = ctrl.in_capsule_data_size();
  info_.max_transfer = ctrl.mdts ? (4096u << ctrl.mdts) : 0;
  info_.model = ctrl.model;
  info_.serial = ctrl.serial;

  std::string identify_ns = "Identify Namespace " + std::to_string(spec_.nsid);
  co_await admin(nvmf::make_identify(0, nvmf::cns::kNamespace, spec_.nsid), {}, id, identify_ns.c_str());
  auto ns = nvmf::IdentifyNamespace::decode(id);
  if (ns.nsze == 0)
    throw std::runtime_error("namespace " + std::to_string(spec_.nsid) + " of '" + spec_.subnqn +
                             "' is not active (Identify Namespace reports size 0)");
  info_.ns_blocks = ns.nsze;
  info_.lba_size = ns.block_size();

  cqe = co_await admin(nvmf::make_set_number_of_queues(0, static_cast<uint16_t>(spec_.queues),
                                                        static_cast<uint16_t>(spec_.queues)),
                       {}, {}, "Set Features Number of Queues");
  auto granted = nvmf::parse_number_of_queues(cqe.dw0);
  if (granted.sq_count < spec_.queues || granted.cq_count < spec_.queues)
    throw std::runtime_error("controller granted only " + std::to_string(std::min(granted.sq_count, granted.cq_count)) +
                             " I/O queues, " + std::to_string(spec_.queues) + " requested");

  // Check the workload against what the controller and namespace allow.
  if (spec_.block_size % info_.lba_size)
    throw std::runtime_error("block size " + std::to_string(spec_.block_size) +
                             " is not a multiple of the namespace's LBA size " + std::to_string(info_.lba_size));
  if (info_.max_transfer && spec_.block_size > info_.max_transfer)
    throw std::runtime_error("block size " + std::to_string(spec_.block_size) +
                             " exceeds the controller's maximum transfer (MDTS) of " +
                             std::to_string(info_.max_transfer) + " bytes");
  uint64_t mqes = (info_.cap & kCapMqesMask) + 1;
  if (spec_.qd + 1 > mqes)
    throw std::runtime_error("queue depth " + std::to_string(spec_.qd) + " exceeds the controller's maximum of " +
                             std::to_string(mqes - 1) + " (CAP.MQES)");
  uint64_t ns_bytes = info_.ns_blocks * info_.lba_size;
  if (spec_.offset >= ns_bytes || spec_.offset % info_.lba_size)
    throw std::runtime_error("offset " + std::to_string(spec_.offset) + " is outside the namespace (" +
                             std::to_string(ns_bytes) + " bytes) or not LBA aligned");
  uint64_t range = spec_.size ? std::min(spec_.size, ns_bytes - spec_.offset) : ns_bytes - spec_.offset;
  first_byte_ = spec_.offset;
  range_blocks_ = range / spec_.block_size;
  lbas_per_block_ = spec_.block_size / info_.lba_size;
  if (range_blocks_ == 0)
    throw std::runtime_error("the job's range (" + std::to_string(range) + " bytes) holds no " +
                             std::to_string(spec_.block_size) + "-byte block");
  if (spec_.verify && range_blocks_ < 2ull * spec_.qd * spec_.queues)
    throw std::runtime_error("--verify needs at least 2 x qd x queues blocks in the range (" +
                             std::to_string(range_blocks_) + " available)");
}

asio::awaitable<void> Job::setup_io_queue(size_t index) {
  auto qid = static_cast<uint16_t>(index + 1);
  IoQueue q;
  q.qp = std::make_unique<QueuePair>(io_,
                                     QueueConfig{.qid = qid,
                                                 .depth = static_cast<uint16_t>(spec_.qd),
                                                 .header_digest = spec_.header_digest,
                                                 .data_digest = spec_.data_digest,
                                                 .max_io_bytes = spec_.block_size,
                                                 .kernel_clock = spec_.latency_clock !=
                                                                 wireclock::LatencyClock::kApp,
                                                 .wire_clock = spec_.latency_clock ==
                                                               wireclock::LatencyClock::kWire,
                                                 .name = spec_.name + " I/O queue " + std::to_string(qid)},
                                     this);
  co_await q.qp->connect(endpoint_, kSetupTimeout, source_);
  // SQSIZE is 0's based: qd + 1 entries leave room for qd commands outstanding.
  nvmf::ConnectCommand cc{.qid = qid, .sqsize = static_cast<uint16_t>(spec_.qd)};
  nvmf::ConnectData cd{.hostid = hostid_, .cntlid = info_.cntlid, .subnqn = spec_.subnqn, .hostnqn = spec_.hostnqn};
  std::array<uint8_t, nvmf::kConnectDataSize> connect_data;
  cd.encode(connect_data);
  nvmf::Cqe cqe = co_await q.qp->execute(nvmf::make_connect(0, cc), connect_data, {}, kSetupTimeout);
  if (!cqe.ok())
    throw std::runtime_error("Connect of I/O queue " + std::to_string(qid) + " rejected: " + connect_error(cqe, spec_));
  queues_.push_back(std::move(q));
}

asio::awaitable<void> Job::keep_alive_loop() {
  // Keep Alive at KATO/2, as the Linux host does, so one lost round trip does not expire the controller.
  auto interval = std::chrono::milliseconds(std::max<uint32_t>(info_.kato_ms / 2, 100));
  while (keep_alive_running_ && admin_ && !admin_->failed()) {
    keep_alive_timer_.expires_after(interval);
    boost::system::error_code ec;
    co_await keep_alive_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!keep_alive_running_ || admin_->failed()) break;
    try {
      nvmf::Cqe cqe = co_await admin_->execute(nvmf::make_keep_alive(0), {}, {}, kSetupTimeout);
      if (!cqe.ok()) fail_job("Keep Alive failed: " + nvmf::status_to_string(cqe.status));
    } catch (const std::exception& e) {
      if (keep_alive_running_) fail_job(e.what());
      break;
    }
  }
}

void Job::start(uint64_t start_ns, std::function<void()> on_done) {
  on_done_ = std::move(on_done);
  start_ns_ = start_ns;
  end_ns_ = spec_.runtime.count() ? start_ns + static_cast<uint64_t>(spec_.runtime.count()) : 0;
  last_complete_ns_ = start_ns;
  issuing_ = true;
  started_ = true;

  // Buffers: one block per I/O slot. Without --verify writes carry non-zero
  // filler that is deliberately not the verify pattern, so a later verifying
  // run counts those chunks as unwritten rather than as corrupt.
  size_t slots = static_cast<size_t>(spec_.queues) * spec_.qd;
  data_.resize(slots * spec_.block_size);
  for (size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<uint8_t>(0xa5 ^ (i * 31));
  if (spec_.verify) {
    generation_.assign(range_blocks_, 0);
    block_busy_.assign(range_blocks_, 0);
  }
  size_t slot_index = 0;
  for (auto& q : queues_) {
    q.slots.resize(spec_.qd);
    q.free_cids.clear();
    for (uint16_t cid = 0; cid < spec_.qd; ++cid) {
      q.slots[cid].buffer = std::span<uint8_t>(data_.data() + slot_index++ * spec_.block_size, spec_.block_size);
      q.free_cids.push_back(static_cast<uint16_t>(spec_.qd - 1 - cid));
    }
  }
  for (auto& q : queues_)
    if (q.qp->failed()) return fail_job(q.qp->failure());

  arm_watchdog();
  if (spec_.rate_iops) {
    period_ns_ = std::max<uint64_t>(1'000'000'000ull / spec_.rate_iops, 1);
    pace();
  } else {
    for (auto& q : queues_) {
      q.qp->cork();
      while (issue(q, 0)) {
      }
      q.qp->uncork();
    }
  }
  check_done();
}

bool Job::may_issue(uint64_t now_ns) const {
  if (!issuing_) return false;
  if (spec_.ios && issued_ >= spec_.ios) return false;
  if (end_ns_ && now_ns >= end_ns_) return false;
  return true;
}

bool Job::pick_block(uint64_t& block) {
  auto usable = [&](uint64_t b) { return !spec_.verify || !block_busy_[b]; };
  if (spec_.access == Access::kSequential) {
    for (uint64_t tries = 0; tries < range_blocks_; ++tries) {
      uint64_t b = next_sequential_;
      next_sequential_ = (next_sequential_ + 1) % range_blocks_;
      if (usable(b)) return block = b, true;
    }
    return false;
  }
  for (int tries = 0; tries < 16; ++tries) {
    uint64_t b = rng_() % range_blocks_;
    if (usable(b)) return block = b, true;
  }
  uint64_t start = rng_() % range_blocks_;
  for (uint64_t i = 0; i < range_blocks_; ++i) {
    uint64_t b = (start + i) % range_blocks_;
    if (usable(b)) return block = b, true;
  }
  return false;
}

bool Job::issue(IoQueue& q, uint64_t scheduled_ns) {
  if (q.free_cids.empty() || q.qp->failed()) return false;
  uint64_t now = monotonic_ns();
  if (!may_issue(now)) return false;
  uint64_t block;
  if (!pick_block(block)) return false;
  uint16_t cid = q.free_cids.back();
  q.free_cids.pop_back();
  IoSlot& s = q.slots[cid];
  s.block = block;
  s.scheduled_ns = scheduled_ns ? scheduled_ns : now;
  s.op = spec_.read_percent == 100 ? Op::kRead
         : spec_.read_percent == 0 ? Op::kWrite
         : (rng_() % 100 < spec_.read_percent ? Op::kRead : Op::kWrite);
  uint64_t byte_offset = first_byte_ + block * spec_.block_size;
  uint64_t slba = byte_offset / info_.lba_size;
  if (spec_.verify) {
    block_busy_[block] = 1;
    if (s.op == Op::kWrite) {
      s.generation = next_generation_++;
      if (next_generation_ == 0) next_generation_ = 1;
      fill_pattern(s.buffer, byte_offset, s.generation);
    } else {
      s.generation = generation_[block];
    }
  }
  if (s.op == Op::kRead) {
    nvmf::Sqe sqe = nvmf::make_read(cid, spec_.nsid, slba, lbas_per_block_, spec_.block_size);
    // Without verify the data is only counted, not copied.
    q.qp->submit(cid, sqe, {}, false, spec_.verify ? s.buffer : std::span<uint8_t>{}, spec_.block_size);
  } else {
    bool in_capsule = in_capsule_writes();
    nvmf::Sqe sqe = nvmf::make_write(cid, spec_.nsid, slba, lbas_per_block_, spec_.block_size, in_capsule);
    q.qp->submit(cid, sqe, s.buffer, in_capsule, {}, 0);
  }
  ++issued_;
  ++inflight_;
  return true;
}

void Job::on_complete(QueuePair& qp, uint16_t cid, const nvmf::Cqe& cqe, uint64_t now_ns) {
  if (qp.qid() == 0) return;  // admin commands all go through execute()
  IoQueue& q = queues_[qp.qid() - 1];
  IoSlot& s = q.slots[cid];
  OpStats& st = stats_.op(s.op);
  uint64_t submit_ns = qp.submit_time(cid);
  st.ios++;
  st.latency.record(now_ns - submit_ns);
  // The trace's latency by the job's clock; 0 where the kernel left a stamp out (never guessed).
  uint64_t clock_latency_ns = now_ns - submit_ns;
  if (spec_.latency_clock != wireclock::LatencyClock::kApp) {
    const QueuePair::WireTimes w = qp.wire_times(cid);
    st.kernel_clock.record(w.tx_ns, w.rx_ns, true, w.rx_behind);
    if (spec_.latency_clock == wireclock::LatencyClock::kWire) st.wire_clock.record(w.tx_ns, w.tap_rx_ns, true);
    const uint64_t rx_ns = spec_.latency_clock == wireclock::LatencyClock::kWire ? w.tap_rx_ns : w.rx_ns;
    clock_latency_ns = w.tx_ns && rx_ns >= w.tx_ns ? rx_ns - w.tx_ns : 0;
  }
  if (spec_.rate_iops) st.intended_latency.record(now_ns - s.scheduled_ns);
  bool ok = cqe.ok();
  if (ok) {
    st.bytes += spec_.block_size;
    completed_bytes_ += spec_.block_size;
  } else {
    record_error(s.op, nvmf::status_to_string(cqe.status));
  }
  if (spec_.verify) {
    uint64_t byte_offset = first_byte_ + s.block * spec_.block_size;
    if (s.op == Op::kWrite) {
      generation_[s.block] = ok ? s.generation : 0;  // a failed write leaves the block unknown
    } else if (ok) {
      PatternCheck c = check_pattern(s.buffer, byte_offset, s.generation);
      stats_.verified_blocks += c.matched;
      stats_.unwritten_blocks += c.unwritten;
      if (c.mismatched) {
        record_error(Op::kRead, "verify mismatch");
        if (st.errors["verify mismatch"] <= 5)
          std::fprintf(stderr, "nvqos-load: job %s: verify mismatch at byte offset %llu (block at %llu, gen %u)\n",
                       spec_.name.c_str(), static_cast<unsigned long long>(c.first_bad_offset),
                       static_cast<unsigned long long>(byte_offset), s.generation);
      }
    }
    block_busy_[s.block] = 0;
  }
  if (trace_)
    trace_->write(spec_.name, TraceRecord{clock_.wall(submit_ns), clock_.wall(now_ns),
                                          clock_.wall(spec_.rate_iops ? s.scheduled_ns : submit_ns),
                                          qp.qid(), qp.local_port(), cid, s.op, spec_.block_size, cqe.status,
                                          clock_latency_ns});
  ++completed_;
  --inflight_;
  last_complete_ns_ = now_ns;
  q.free_cids.push_back(cid);

  if (spec_.rate_iops) {
    pace();
  } else {
    issue(q, 0);
  }
  check_done();
}

void Job::pace() {
  if (!issuing_) return;
  uint64_t now = monotonic_ns();
  // I/Os due by now that have not been sent yet wait for a free slot; their
  // latency still counts from when they were due (no coordinated omission).
  uint64_t due = (now - start_ns_) / period_ns_ + 1;
  if (spec_.ios) due = std::min(due, spec_.ios);
  while (paced_sent_ < due) {
    uint64_t scheduled = start_ns_ + paced_sent_ * period_ns_;
    if (end_ns_ && scheduled >= end_ns_) break;
    bool sent = false;
    for (size_t i = 0; i < queues_.size() && !sent; ++i) {
      IoQueue& q = queues_[(next_queue_ + i) % queues_.size()];
      if (issue(q, scheduled)) {
        sent = true;
        next_queue_ = (next_queue_ + i + 1) % queues_.size();
      }
    }
    if (!sent) break;  // all slots busy: the next completion resumes here
    ++paced_sent_;
  }
  if (paced_sent_ == due) schedule_pacer(start_ns_ + paced_sent_ * period_ns_);
}

void Job::schedule_pacer(uint64_t at_ns) {
  if (pacer_armed_ || !issuing_) return;
  if ((end_ns_ && at_ns >= end_ns_) || (spec_.ios && paced_sent_ >= spec_.ios)) {
    issuing_ = false;  // nothing more is due: finish when the last I/O completes
    return;
  }
  pacer_armed_ = true;
  uint64_t now = monotonic_ns();
  pacer_.expires_after(std::chrono::nanoseconds(at_ns > now ? at_ns - now : 0));
  pacer_.async_wait([this](const boost::system::error_code& ec) {
    pacer_armed_ = false;
    if (ec) return;
    pace();
    check_done();
  });
}

// Once a second: a command outstanding longer than --io-timeout fails its
// queue, so a stuck target ends the run with an error instead of hanging it.
void Job::arm_watchdog() {
  watchdog_.expires_after(std::chrono::seconds(1));
  watchdog_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || done_) return;
    uint64_t now = monotonic_ns();
    auto limit = static_cast<uint64_t>(std::chrono::nanoseconds(spec_.io_timeout).count());
    for (auto& q : queues_) {
      if (q.qp->failed()) continue;
      for (uint16_t cid = 0; cid < spec_.qd; ++cid) {
        uint64_t sent = q.qp->submit_time(cid);
        if (!q.qp->cid_busy(cid) || sent == 0 || now - sent <= limit) continue;
        q.qp->abort_with(std::string(op_name(q.slots[cid].op)) + " CID " + std::to_string(cid) +
                         " got no completion within " + std::to_string(spec_.io_timeout.count()) + " ms");
        break;
      }
    }
    if (!done_) arm_watchdog();
  });
}

void Job::record_error(Op op, const std::string& name) { stats_.op(op).errors[name]++; }

void Job::stop_issuing() {
  issuing_ = false;
  pacer_.cancel();
  check_done();
}

void Job::check_done() {
  if (done_ || !started_) return;
  bool more = issuing_ && may_issue(monotonic_ns());
  if (!more) {
    issuing_ = false;
    pacer_.cancel();
  }
  if (inflight_ > 0 || more) return;
  done_ = true;
  watchdog_.cancel();
  stats_.elapsed = std::chrono::nanoseconds(last_complete_ns_ - start_ns_);
  if (on_done_) {
    auto cb = std::move(on_done_);
    on_done_ = nullptr;
    cb();
  }
}

void Job::fail_job(const std::string& what) {
  if (stats_.fatal_error.empty()) stats_.fatal_error = what;
  issuing_ = false;
  pacer_.cancel();
  keep_alive_running_ = false;
  keep_alive_timer_.cancel();
  if (!started_) return;
  last_complete_ns_ = monotonic_ns();  // the run ends here
  // Whatever was outstanding is lost with the connection.
  for (auto& q : queues_) {
    if (!q.qp->failed()) continue;
    uint64_t lost = spec_.qd - q.free_cids.size();
    for (uint16_t cid = 0; cid < spec_.qd; ++cid) {
      bool is_free = std::find(q.free_cids.begin(), q.free_cids.end(), cid) != q.free_cids.end();
      if (is_free) continue;
      record_error(q.slots[cid].op, "transport error");
      if (spec_.verify) block_busy_[q.slots[cid].block] = 0;
      q.free_cids.push_back(cid);
    }
    inflight_ -= std::min(inflight_, lost);
  }
  check_done();
}

void Job::on_queue_failed(QueuePair&, const std::string& what) {
  if (done_) return;
  fail_job(what);
}

asio::awaitable<void> Job::shutdown() {
  keep_alive_running_ = false;
  keep_alive_timer_.cancel();
  for (auto& q : queues_) {
    stats_.wire_tap += q.qp->tap_counts();
    q.qp->close();
  }
  if (admin_ && !admin_->failed()) {
    // Normal shutdown (CC.SHN = 01b) so the target can tear down at once
    // instead of waiting for the keep-alive timeout.
    try {
      uint32_t cc_value = nvmf::property::kCcEnable | (6u << 16) | (4u << 20) | (1u << 14);
      co_await admin_->execute(nvmf::make_property_set(0, nvmf::property::kCc, cc_value, 4), {}, {}, 2000ms);
      asio::steady_timer poll(io_);
      for (int i = 0; i < 100; ++i) {
        nvmf::Cqe cqe =
            co_await admin_->execute(nvmf::make_property_get(0, nvmf::property::kCsts, 4), {}, {}, 2000ms);
        if ((nvmf::property_value(cqe) & (0x3u << 2)) == nvmf::property::kCstsShstComplete) break;
        poll.expires_after(10ms);
        co_await poll.async_wait(asio::use_awaitable);
      }
    } catch (const std::exception&) {
      // Best effort: the connection closes below either way.
    }
  }
  if (admin_) admin_->close();
}

void Job::abort() {
  keep_alive_running_ = false;
  keep_alive_timer_.cancel();
  watchdog_.cancel();
  pacer_.cancel();
  for (auto& q : queues_)
    if (q.qp) q.qp->close();
  if (admin_) admin_->close();
}

}  // namespace nvqos::load
