// libFuzzer target: HTTP request parsing and routing of the agent's servers
// (the admin API on the unix socket, /metrics, /healthz, /readyz on TCP),
// without sockets or a kernel: bytes go through the request parser with the
// server's limits, then to the agent's request handler, as a session would
// hand them. The agent is constructed but not started (no data path), with a
// config file to reload from.
//
// Input: byte 0 says which listener the request came through (bit 0: the admin
// socket, bit 1: the token-protected admin TCP listener, neither: metrics); the rest is the byte stream of the connection. Every request
// in it is handled, as on a keep-alive connection.
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "agent.hpp"
#include "http_server.hpp"

using namespace nvqos::agent;
namespace http = boost::beast::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// A valid policy to reload from: POST /v1/reload works like on a real agent, and
// PUT /v1/tenants/gold/class has a class to move to.
std::string config_file() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/nvqos-admin-fuzz-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    check(fd >= 0);
    static const char kPolicy[] =
        R"({"version": 1, "classes": [{"name": "bronze", "priority": 6}, {"name": "gold", "priority": 0}],
            "tenants": [{"name": "gold", "class": "gold", "match": [{"remote": "10.10.0.0/24"}]}]})";
    check(::write(fd, kPolicy, sizeof kPolicy - 1) == static_cast<ssize_t>(sizeof kPolicy - 1));
    ::close(fd);
    std::atexit([] { ::unlink(path.c_str()); });
    return std::string(tmpl);
  }();
  return path;
}

Agent& agent() {
  static boost::asio::io_context io;
  static Agent* a = [] {
    AgentOptions options;
    options.config_path = config_file();
    options.admin_socket.clear();
    options.watch_config = false;
    return new Agent(io, options);
  }();
  return *a;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  HttpPeer peer;
  peer.admin_socket = (data[0] & 1) != 0;
  peer.admin_tcp = (data[0] & 2) != 0;
  boost::asio::const_buffer in(data + 1, size - 1);
  for (int requests = 0; requests < 8 && in.size() > 0; ++requests) {
    HttpRequestParser parser;
    limit_request_parser(parser);
    parser.eager(true);
    boost::beast::error_code ec;
    const std::size_t used = parser.put(in, ec);
    if (ec == http::error::need_more) parser.put_eof(ec);  // the connection ends here
    if (ec || !parser.is_done()) return 0;
    check(used <= in.size());
    in += used;
    HttpRequest req = parser.release();
    HttpResponse res = agent().handle_http(req, peer);
    const unsigned status = static_cast<unsigned>(res.result_int());
    check(status >= 200 && status < 600);
    std::string_view target(req.target().data(), req.target().size());
    // State-changing endpoints are never reachable from the metrics listener.
    if (!peer.admin_socket && !peer.admin_tcp && target.rfind("/v1/", 0) == 0)
      check(res.result() == http::status::forbidden);
    res.prepare_payload();
    if (!res.keep_alive()) break;
  }
  return 0;
}
