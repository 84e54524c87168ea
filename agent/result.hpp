// Error values for kernel- and OS-facing code: an errno plus the context that
// makes it actionable ("attach XDP to eth0: Operation not permitted (need
// CAP_NET_ADMIN)"). Exceptions are kept for configuration parsing only.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace nvqos {

struct Error {
  int code = 0;  // positive errno, 0 when not an OS error
  std::string message;

  // `capability` names what would have allowed it, added on EPERM/EACCES.
  static Error from_errno(int err, std::string context, const char* capability = nullptr) {
    if (err < 0) err = -err;
    std::string msg = std::move(context) + ": " + std::strerror(err);
    if (capability && (err == EPERM || err == EACCES)) msg += std::string(" (need ") + capability + ")";
    return Error{err, std::move(msg)};
  }
  Error with_context(const std::string& outer) const {
    return Error{code, outer + ": " + message};
  }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  const T& value() const& { return std::get<0>(state_); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok_status() { return Ok{}; }

}  // namespace nvqos
