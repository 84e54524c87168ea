// Watches the config file for changes and calls back once per change, on the
// agent's io_context. Watches the directory, not the file: editors replace
// files by rename, and a Kubernetes ConfigMap volume swaps a `..data` symlink,
// neither of which an inotify watch on the file itself would see.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <string>

#include "result.hpp"

namespace nvqos::agent {

class ConfigWatch {
 public:
  // `on_change` runs after the directory settles for a short debounce, and
  // only if the file's content differs from the last content it reported.
  static Result<std::unique_ptr<ConfigWatch>> start(boost::asio::io_context& io, const std::string& path,
                                                    std::function<void()> on_change);
  ~ConfigWatch();
  ConfigWatch(const ConfigWatch&) = delete;
  ConfigWatch& operator=(const ConfigWatch&) = delete;

 private:
  ConfigWatch(boost::asio::io_context& io, std::string path, int fd, std::function<void()> on_change);
  void do_read();
  void settle();

  std::string path_;
  std::string last_content_;
  boost::asio::posix::stream_descriptor inotify_;
  boost::asio::steady_timer debounce_;
  std::function<void()> on_change_;
  char buffer_[4096];
};

}  // namespace nvqos::agent
