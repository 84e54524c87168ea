// Who may use the admin API: the bearer token of the optional TCP listener
// (read from a file that must be private, like ssh's keys) and the checks on
// the unix socket (mode 0600, owned by us, in a directory others cannot
// write). Pure helpers, unit-tested with files in a temporary directory.
#pragma once

#include <string>
#include <string_view>

#include "result.hpp"

namespace nvqos::agent {

inline constexpr std::size_t kMinTokenLength = 16;

// Reads the token (surrounding whitespace trimmed). Refuses a file that is
// not a regular file, is accessible by group or others, is owned by another
// user than us or root, or holds fewer than kMinTokenLength characters.
Result<std::string> read_token_file(const std::string& path);

// Compares in time independent of where the strings differ.
bool token_matches(std::string_view expected, std::string_view presented);

// The token of an "Authorization: Bearer TOKEN" header value; empty if the
// value is not a bearer credential.
std::string_view bearer_token(std::string_view authorization);

// Empty when `path` is a unix socket with mode 0600 (no group/other bits)
// owned by our effective user in a directory group and others cannot write
// (or that is sticky); otherwise why it is not.
std::string unsafe_socket_reason(const std::string& path);

}  // namespace nvqos::agent
