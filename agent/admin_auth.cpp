#include "admin_auth.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

namespace nvqos::agent {
namespace {

std::string octal_mode(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

}  // namespace

Result<std::string> read_token_file(const std::string& path) {
  // O_NOFOLLOW: the checks below must be about the file we read, not a link.
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Error::from_errno(errno, "admin token file " + path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Error::from_errno(err, "admin token file " + path);
  }
  auto refuse = [&](std::string why) {
    ::close(fd);
    return Error{EACCES, "admin token file " + path + ": " + why};
  };
  if (!S_ISREG(st.st_mode)) return refuse("not a regular file");
  if (st.st_mode & 077)
    return refuse("accessible by group or others (mode " + octal_mode(st.st_mode) + "); run chmod 600 " + path);
  if (st.st_uid != ::geteuid() && st.st_uid != 0)
    return refuse("owned by uid " + std::to_string(st.st_uid) + ", neither this user nor root");
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0 && text.size() < 65536;) text.append(buf, n);
  ::close(fd);
  const auto first = text.find_first_not_of(" \t\r\n");
  const auto last = text.find_last_not_of(" \t\r\n");
  text = first == std::string::npos ? "" : text.substr(first, last - first + 1);
  if (text.size() < kMinTokenLength)
    return Error{EINVAL, "admin token file " + path + ": the token must have at least " +
                             std::to_string(kMinTokenLength) + " characters (e.g. openssl rand -hex 32)"};
  if (text.find_first_of(" \t\r\n") != std::string::npos)
    return Error{EINVAL, "admin token file " + path + ": the token must be one word"};
  return text;
}

bool token_matches(std::string_view expected, std::string_view presented) {
  // Every byte of the presented token is compared, whatever matched before;
  // only the length (not secret enough to matter: tokens are long) leaks.
  unsigned diff = expected.size() != presented.size();
  if (expected.empty()) return false;
  for (std::size_t i = 0; i < presented.size(); ++i)
    diff |= static_cast<unsigned char>(expected[i % expected.size()]) ^ static_cast<unsigned char>(presented[i]);
  return diff == 0;
}

std::string_view bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "Bearer ";
  if (authorization.size() <= kScheme.size()) return {};
  for (std::size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != std::tolower(static_cast<unsigned char>(kScheme[i])))
      return {};
  authorization.remove_prefix(kScheme.size());
  while (!authorization.empty() && authorization.front() == ' ') authorization.remove_prefix(1);
  while (!authorization.empty() && authorization.back() == ' ') authorization.remove_suffix(1);
  return authorization;
}

std::string unsafe_socket_reason(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return path + ": " + std::strerror(errno);
  if (!S_ISSOCK(st.st_mode)) return path + " is not a unix socket";
  if (st.st_mode & 077) return path + " has mode " + octal_mode(st.st_mode) + ", not 0600";
  if (st.st_uid != ::geteuid()) return path + " is owned by uid " + std::to_string(st.st_uid) + ", not by the agent";
  const std::string dir = std::filesystem::path(path).parent_path().string();
  struct stat ds {};
  if (::stat(dir.empty() ? "." : dir.c_str(), &ds) != 0) return dir + ": " + std::strerror(errno);
  if ((ds.st_mode & 022) && !(ds.st_mode & S_ISVTX))
    return "directory " + dir + " is writable by group or others (mode " + octal_mode(ds.st_mode) +
           "): the socket could be replaced";
  return "";
}

}  // namespace nvqos::agent
