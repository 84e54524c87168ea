// Shared by the config unit tests: a refused config must name where and why.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "config.hpp"

namespace nvqos::agent {

// Asserts the config is refused, naming `pointer` and a reason containing `reason`.
inline void expect_refused(const std::string& text, const std::string& pointer, const std::string& reason) {
  try {
    parse_policy(text);
    ADD_FAILURE() << "accepted: " << text;
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.pointer(), pointer) << e.what();
    EXPECT_NE(e.reason().find(reason), std::string::npos) << "reason \"" << e.reason() << "\" lacks \"" << reason << "\"";
  }
}

}  // namespace nvqos::agent
