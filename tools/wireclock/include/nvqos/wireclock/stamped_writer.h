// Writes a batch of NVMe/TCP PDUs so that every timed PDU header ends a send call of its own
// (the kernel keys a TX stamp by the last byte of a send call) and is a TCP record end, asking
// for a TX stamp on exactly those sends. Everything between cuts goes out in as few send calls
// as the socket takes. Drop-in for asio::async_write in the tools' write loops.
#pragma once

#include <utility>  // Boost 1.74's headers use std::exchange without including it

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "nvqos/wireclock/wire_clock.h"

namespace nvqos::wireclock {

struct Cut {
  size_t end = 0;      // byte offset in the batch where a send call must end
  bool stamp = false;  // ask for a TX stamp of byte end-1 and register it under `token`
  bool more = false;   // the unit's data follows (MSG_MORE); otherwise the record ends (MSG_EOR)
  uint64_t token = 0;
};

class StampedWriter {
 public:
  StampedWriter(boost::asio::ip::tcp::socket& socket, TxKeyQueue& keys) : socket_(socket), keys_(keys) {}

  // Sends `buffers` in order, ending a send call at each of `cuts` (ascending `end`). Both spans
  // must stay valid until `done` runs; `done` is always posted to the socket's executor, never
  // called from inside write(). One write at a time.
  void write(std::span<const boost::asio::const_buffer> buffers, std::span<const Cut> cuts,
             std::function<void(const boost::system::error_code&)> done);

  // Bytes sent since timestamps were enabled (mod 2^32): the key space of TX stamps.
  uint32_t stream_offset() const { return stream_offset_; }

 private:
  void pump();
  void finish(const boost::system::error_code& ec);

  boost::asio::ip::tcp::socket& socket_;
  TxKeyQueue& keys_;
  std::span<const boost::asio::const_buffer> buffers_;
  std::span<const Cut> cuts_;
  std::function<void(const boost::system::error_code&)> done_;
  size_t total_ = 0, pos_ = 0;       // bytes of this batch, bytes sent
  size_t buf_index_ = 0, buf_off_ = 0;  // where pos_ is in buffers_
  size_t next_cut_ = 0;
  uint32_t stream_offset_ = 0;
};

}  // namespace nvqos::wireclock
