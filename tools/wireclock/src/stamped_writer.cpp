#include "nvqos/wireclock/stamped_writer.h"

#include <boost/asio/post.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>

namespace nvqos::wireclock {

namespace asio = boost::asio;

namespace {
constexpr size_t kMaxIov = 64;  // per send call; a longer run continues in the next call
}

void StampedWriter::write(std::span<const asio::const_buffer> buffers, std::span<const Cut> cuts,
                          std::function<void(const boost::system::error_code&)> done) {
  buffers_ = buffers;
  cuts_ = cuts;
  done_ = std::move(done);
  total_ = asio::buffer_size(buffers);
  pos_ = buf_index_ = buf_off_ = next_cut_ = 0;
  pump();
}

void StampedWriter::pump() {
  const int fd = socket_.native_handle();
  while (pos_ < total_) {
    const Cut* cut = next_cut_ < cuts_.size() ? &cuts_[next_cut_] : nullptr;
    const size_t end = cut ? cut->end : total_;
    std::array<iovec, kMaxIov> iov;
    int iovcnt = 0;
    size_t len = 0;
    for (size_t i = buf_index_, off = buf_off_; i < buffers_.size() && iovcnt < static_cast<int>(kMaxIov) &&
                                                pos_ + len < end;
         ++i, off = 0) {
      size_t n = std::min(buffers_[i].size() - off, end - pos_ - len);
      if (n == 0) continue;
      iov[iovcnt++] = {const_cast<char*>(static_cast<const char*>(buffers_[i].data())) + off, n};
      len += n;
    }
    const bool at_cut = cut && pos_ + len == cut->end;
    const int flags = at_cut ? (cut->more ? MSG_MORE : MSG_EOR) : 0;
    ssize_t sent = send_stamped(fd, iov.data(), iovcnt, flags, at_cut && cut->stamp);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        socket_.async_wait(asio::socket_base::wait_write, [this](const boost::system::error_code& ec) {
          if (ec) finish(ec);
          else pump();
        });
        return;
      }
      finish(boost::system::error_code(errno, boost::system::system_category()));
      return;
    }
    size_t n = static_cast<size_t>(sent);
    pos_ += n;
    stream_offset_ += static_cast<uint32_t>(n);
    while (n) {
      size_t step = std::min(n, buffers_[buf_index_].size() - buf_off_);
      buf_off_ += step;
      n -= step;
      if (buf_off_ == buffers_[buf_index_].size()) {
        ++buf_index_;
        buf_off_ = 0;
      }
    }
    while (buf_index_ < buffers_.size() && buffers_[buf_index_].size() == 0) ++buf_index_;
    if (cut && pos_ == cut->end) {
      if (cut->stamp) keys_.expect(stream_offset_ - 1, cut->token);
      ++next_cut_;
    }
  }
  finish({});
}

void StampedWriter::finish(const boost::system::error_code& ec) {
  auto done = std::move(done_);
  done_ = nullptr;
  asio::post(socket_.get_executor(), [done = std::move(done), ec] { done(ec); });
}

}  // namespace nvqos::wireclock
