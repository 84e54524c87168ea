#include "log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>

namespace nvqos::log {
namespace {

Level g_min_level = Level::info;
Format g_format = Format::logfmt;

const char* level_name(Level level) {
  switch (level) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "info";
}

std::string timestamp() {
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t secs = system_clock::to_time_t(now);
  auto millis = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(millis));
  return buf;
}

// logfmt quotes values with spaces, quotes or '='; escapes quotes and newlines.
void append_logfmt_value(std::string& out, std::string_view value) {
  bool needs_quotes = value.empty();
  for (char c : value)
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\\') needs_quotes = true;
  if (!needs_quotes) {
    out.append(value);
    return;
  }
  out.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out.append("\\n");
      continue;
    }
    out.push_back(c);
  }
  out.push_back('"');
}

}  // namespace

void configure(Level min_level, Format format) {
  g_min_level = min_level;
  g_format = format;
}

bool parse_level(std::string_view text, Level& out) {
  for (Level l : {Level::debug, Level::info, Level::warn, Level::error})
    if (text == level_name(l)) {
      out = l;
      return true;
    }
  return false;
}

bool parse_format(std::string_view text, Format& out) {
  if (text == "logfmt") out = Format::logfmt;
  else if (text == "json") out = Format::json;
  else return false;
  return true;
}

bool enabled(Level level) { return level >= g_min_level; }

void write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  if (!enabled(level)) return;
  std::string line;
  if (g_format == Format::json) {
    nlohmann::json j;
    j["ts"] = timestamp();
    j["level"] = level_name(level);
    j["msg"] = std::string(message);
    for (const auto& [k, v] : fields) j[std::string(k)] = v;
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = "ts=" + timestamp() + " level=" + level_name(level) + " msg=";
    append_logfmt_value(line, message);
    for (const auto& [k, v] : fields) {
      line.push_back(' ');
      line.append(k);
      line.push_back('=');
      append_logfmt_value(line, v);
    }
  }
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace nvqos::log
