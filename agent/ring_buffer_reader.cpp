#include "ring_buffer_reader.hpp"

#include <unistd.h>

#include "log.hpp"

namespace nvqos::agent {

Status RingBufferReader::open(boost::asio::io_context& io, bpf_map* map, std::string events, std::string ifname,
                              Handler on_record) {
  map_name_ = bpf_map__name(map);
  events_ = std::move(events);
  ifname_ = std::move(ifname);
  handler_ = std::move(on_record);
  ring_.reset(ring_buffer__new(bpf_map__fd(map), &RingBufferReader::on_record, this, nullptr));
  if (!ring_) return Error::from_errno(errno, "open ring buffer " + map_name_ + " of " + ifname_);
  const int fd = dup(ring_buffer__epoll_fd(ring_.get()));
  if (fd < 0) return Error::from_errno(errno, "dup the epoll fd of " + map_name_);
  fd_ = std::make_unique<boost::asio::posix::stream_descriptor>(io, fd);
  wait();
  return ok_status();
}

int RingBufferReader::on_record(void* ctx, void* data, std::size_t size) {
  static_cast<RingBufferReader*>(ctx)->handler_(data, size);
  return 0;
}

void RingBufferReader::wait() {
  fd_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec == boost::asio::error::operation_aborted) return;  // closing: `this` may be gone
    if (ec) {
      log::warn(events_ + " stopped", {{"interface", ifname_}, {"error", ec.message()}});
      return;
    }
    if (int err = ring_buffer__consume(ring_.get()); err < 0)
      log::warn("read " + map_name_, {{"interface", ifname_}, {"error", std::strerror(-err)}});
    wait();
  });
}

}  // namespace nvqos::agent
