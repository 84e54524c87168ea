// A TCP receiver for traffic tests: accepts connections on ports of an address
// inside a network namespace, reads each on its own thread and counts the bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace nvqos::test {

class TcpSink {
 public:
  // Listening on every port once constructed (or failed()).
  TcpSink(const std::string& netns, const std::string& addr, const std::vector<int>& ports);
  ~TcpSink();
  TcpSink(const TcpSink&) = delete;
  TcpSink& operator=(const TcpSink&) = delete;
  std::uint64_t received() const { return received_; }
  bool failed() const { return failed_; }

 private:
  void serve(const std::string& addr, int port);

  std::vector<std::thread> threads_;
  std::atomic<int> listening_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<std::uint64_t> received_{0};
};

}  // namespace nvqos::test
