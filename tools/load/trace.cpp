#include "trace.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace nvqos::load {
namespace {
constexpr size_t kBufferBytes = 1 << 20;
constexpr size_t kMaxLine = 256;
}  // namespace

TraceWriter::TraceWriter(const std::string& path) : path_(path), buf_(kBufferBytes) {
  file_ = std::fopen(path.c_str(), "w");
  if (!file_) throw std::runtime_error("open trace file '" + path + "': " + std::strerror(errno));
  std::fprintf(file_, "%s\n", kHeader);
}

TraceWriter::~TraceWriter() {
  flush();
  if (file_) std::fclose(file_);
}

void TraceWriter::write(std::string_view job, const TraceRecord& r) {
  if (used_ + kMaxLine + job.size() > buf_.size()) flush();
  char* p = buf_.data() + used_;
  char* end = buf_.data() + buf_.size();
  auto num = [&](uint64_t v) {
    p = std::to_chars(p, end, v).ptr;
    *p++ = ',';
  };
  num(r.submit_ns);
  num(r.complete_ns);
  num(r.scheduled_ns);
  std::memcpy(p, job.data(), job.size());
  p += job.size();
  *p++ = ',';
  num(r.queue);
  num(r.local_port);
  num(r.cid);
  const char* op = op_name(r.op);
  size_t op_len = std::strlen(op);
  std::memcpy(p, op, op_len);
  p += op_len;
  *p++ = ',';
  num(r.bytes);
  static constexpr char kHex[] = "0123456789abcdef";
  *p++ = '0';
  *p++ = 'x';
  for (int shift = 12; shift >= 0; shift -= 4) *p++ = kHex[(r.status >> shift) & 0xf];
  *p++ = ',';
  p = std::to_chars(p, end, r.latency_ns).ptr;
  *p++ = '\n';
  used_ = static_cast<size_t>(p - buf_.data());
}

void TraceWriter::flush() {
  if (!file_ || used_ == 0) return;
  if (std::fwrite(buf_.data(), 1, used_, file_) != used_)
    throw std::runtime_error("write trace file '" + path_ + "': " + std::strerror(errno));
  used_ = 0;
  std::fflush(file_);
}

}  // namespace nvqos::load
