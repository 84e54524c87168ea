// One line per event, logfmt (default) or JSON, at libbpf-compatible levels.
// Never log per packet: the data path reports through counters.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace nvqos::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };
enum class Format { logfmt, json };

void configure(Level min_level, Format format);
bool parse_level(std::string_view text, Level& out);
bool parse_format(std::string_view text, Format& out);
bool enabled(Level level);

using Field = std::pair<std::string_view, std::string>;
void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

inline void debug(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::debug, m, f); }
inline void info(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::info, m, f); }
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::warn, m, f); }
inline void error(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::error, m, f); }

}  // namespace nvqos::log
