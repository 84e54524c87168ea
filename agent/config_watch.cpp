#include "config_watch.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "log.hpp"

namespace nvqos::agent {
namespace {

constexpr auto kDebounce = std::chrono::milliseconds(200);

std::string read_content(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<std::unique_ptr<ConfigWatch>> ConfigWatch::start(boost::asio::io_context& io, const std::string& path,
                                                        std::function<void()> on_change) {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return Error::from_errno(errno, "inotify_init1 to watch " + path);
  auto dir = std::filesystem::absolute(path).parent_path().string();
  if (inotify_add_watch(fd, dir.c_str(),
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB) < 0) {
    int err = errno;
    close(fd);
    return Error::from_errno(err, "watch directory " + dir + " of the config");
  }
  return std::unique_ptr<ConfigWatch>(new ConfigWatch(io, path, fd, std::move(on_change)));
}

ConfigWatch::ConfigWatch(boost::asio::io_context& io, std::string path, int fd, std::function<void()> on_change)
    : path_(std::move(path)),
      last_content_(read_content(path_)),
      inotify_(io, fd),
      debounce_(io),
      on_change_(std::move(on_change)) {
  do_read();
}

ConfigWatch::~ConfigWatch() {
  boost::system::error_code ignored;
  debounce_.cancel();
  inotify_.close(ignored);
}

void ConfigWatch::do_read() {
  inotify_.async_read_some(boost::asio::buffer(buffer_), [this](const boost::system::error_code& ec, std::size_t) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (ec) {
      log::error("config watch stopped; reload with SIGHUP", {{"path", path_}, {"error", ec.message()}});
      return;
    }
    // Any event in the directory may be ours (symlink swaps rename other
    // names); the content comparison after the debounce decides.
    settle();
    do_read();
  });
}

void ConfigWatch::settle() {
  debounce_.expires_after(kDebounce);
  debounce_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    std::string content = read_content(path_);
    if (content == last_content_) return;
    last_content_ = std::move(content);
    log::info("config file changed", {{"path", path_}});
    on_change_();
  });
}

}  // namespace nvqos::agent
