#include "tcp_sink.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "netns.hpp"

namespace nvqos::test {

TcpSink::TcpSink(const std::string& netns, const std::string& addr, const std::vector<int>& ports) {
  for (int port : ports) {
    const int before = listening_;
    threads_.emplace_back([this, netns, addr, port] { in_netns(netns, [&] { serve(addr, port); }); });
    while (listening_ == before && !failed_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

TcpSink::~TcpSink() {
  stop_ = true;
  for (auto& t : threads_) t.join();
}

void TcpSink::serve(const std::string& addr, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // Accept and receive time out so that stop_ is seen.
  timeval tv{0, 100000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) || listen(fd, 16)) {
    failed_ = true;
    close(fd);
    return;
  }
  ++listening_;
  std::vector<std::thread> readers;
  while (!stop_) {
    int c = accept(fd, nullptr, nullptr);
    if (c < 0) continue;
    readers.emplace_back([this, c, tv] {
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::vector<char> buf(256 * 1024);
      while (!stop_) {
        ssize_t n = recv(c, buf.data(), buf.size(), 0);
        if (n == 0) break;
        if (n > 0) received_ += n;
      }
      close(c);
    });
  }
  for (auto& r : readers) r.join();
  close(fd);
}

}  // namespace nvqos::test
