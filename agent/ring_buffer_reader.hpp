// A BPF ring buffer read on the agent's io_context: libbpf's ring buffer, its
// epoll fd watched by Asio, each record handed over as soon as the kernel
// signals it. The data path's slow-command and Connect events both use it.
#pragma once

#include <bpf/libbpf.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "result.hpp"

namespace nvqos::agent {

class RingBufferReader {
 public:
  using Handler = std::function<void(const void* data, std::size_t size)>;

  // `events` names the records in logs ("Connect events"); `ifname` is the
  // interface whose data path owns `map`.
  Status open(boost::asio::io_context& io, bpf_map* map, std::string events, std::string ifname,
              Handler on_record);

  // open() for records of type Record: shorter records are ignored, and each is
  // copied out (the ring gives 8-byte alignment only).
  template <typename Record, typename F>
  Status open_records(boost::asio::io_context& io, bpf_map* map, std::string events, std::string ifname, F on_record) {
    return open(io, map, std::move(events), std::move(ifname),
                [on_record = std::move(on_record)](const void* data, std::size_t size) {
                  if (size < sizeof(Record)) return;
                  Record r;
                  std::memcpy(&r, data, sizeof r);
                  on_record(r);
                });
  }

 private:
  static int on_record(void* ctx, void* data, std::size_t size);
  void wait();

  struct RingBufferDeleter {
    void operator()(ring_buffer* rb) const { ring_buffer__free(rb); }
  };
  std::string map_name_, events_, ifname_;
  Handler handler_;
  // The descriptor is declared last so it closes (cancelling the wait) first.
  std::unique_ptr<ring_buffer, RingBufferDeleter> ring_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> fd_;
};

}  // namespace nvqos::agent
