// Pieces of the admin API that hold state between requests: the recent
// slow-command events with their long-poll waiters (GET /v1/slow), and query
// string parsing. The endpoints themselves are Agent members (admin_api.cpp).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nvqos::agent {

// Slow-command events the agent keeps for GET /v1/slow readers.
inline constexpr std::size_t kSlowEventsKept = 4096;

// The value of `name` in the query string of `target` ("/v1/flows?limit=5").
std::optional<std::string> query_param(std::string_view target, std::string_view name);

// The last `capacity` slow-command events, numbered from 1. A reader asks for
// the events after the last number it saw, and may wait for new ones.
class SlowEventLog {
 public:
  using Reply = std::function<void(nlohmann::json)>;
  SlowEventLog(boost::asio::io_context& io, std::size_t capacity) : io_(io), capacity_(capacity) {}

  void push(nlohmann::json event);
  // {"events": [...], "next": N, "missed": M}: events numbered above `after`
  // (at most `limit`), the number to ask after next time, and how many events
  // after `after` were already overwritten.
  nlohmann::json since(std::uint64_t after, std::size_t limit) const;
  std::uint64_t last() const { return next_seq_ - 1; }
  // Replies at once if events after `after` exist, else when one arrives or
  // `wait` has passed (then with none).
  void wait(std::uint64_t after, std::size_t limit, std::chrono::milliseconds wait, Reply reply);
  // Answers every waiter (the agent is stopping).
  void release_waiters();

 private:
  struct Waiter {
    std::uint64_t after;
    std::size_t limit;
    Reply reply;
    std::shared_ptr<boost::asio::steady_timer> timer;
  };
  boost::asio::io_context& io_;
  std::size_t capacity_;
  std::deque<nlohmann::json> events_;
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, Waiter> waiters_;
  std::uint64_t next_waiter_ = 0;
};

}  // namespace nvqos::agent
