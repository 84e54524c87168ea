// One Beast HTTP/1.1 server implementation on the agent's io_context, bound to
// TCP (/metrics, /healthz, /readyz for Prometheus and kubelet) and to a unix
// socket (the admin API for nvqosctl). Every stream has a timeout, so a stuck
// client cannot pin a session.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <string>

#include "result.hpp"

namespace nvqos::agent {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using HttpRequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// The limits every session's request parser has (body size); the admin API
// fuzzer parses with the same.
void limit_request_parser(HttpRequestParser& parser);

struct HttpPeer {
  bool admin_socket = false;  // came through the 0600 unix socket: may change state
  bool admin_tcp = false;     // came through the admin TCP listener: needs the bearer token
};
using HttpHandler = std::function<HttpResponse(const HttpRequest&, const HttpPeer&)>;
// Answers later (long-poll): takes the request and returns true, then calls
// the reply function once, on the io_context; false leaves it to HttpHandler.
using HttpReply = std::function<void(HttpResponse)>;
using HttpDeferredHandler = std::function<bool(const HttpRequest&, const HttpPeer&, HttpReply)>;
// Checked before each connection is served: empty to serve, else why not.
using HttpGuard = std::function<std::string()>;

class HttpServer {
 public:
  // `address`: "127.0.0.1:9465", "[::]:9465", ":9465" (all IPv4).
  static Result<std::unique_ptr<HttpServer>> listen_tcp(boost::asio::io_context& io, const std::string& address,
                                                        HttpHandler handler, HttpPeer peer = {});
  // A unix socket with mode 0600, replacing a stale socket file of a previous run.
  static Result<std::unique_ptr<HttpServer>> listen_unix(boost::asio::io_context& io, const std::string& path,
                                                         HttpHandler handler);
  virtual ~HttpServer() = default;
  virtual void set_deferred_handler(HttpDeferredHandler handler) = 0;
  virtual void set_guard(HttpGuard guard) = 0;
  virtual void stop() = 0;
  virtual std::string local_address() const = 0;
};

HttpResponse make_response(const HttpRequest& req, boost::beast::http::status status, std::string body,
                           std::string content_type = "text/plain; charset=utf-8");

// Splits "host:port" / "[v6]:port" / ":port"; false with a reason if malformed.
bool parse_listen_address(const std::string& text, std::string& host, unsigned short& port, std::string& why);

}  // namespace nvqos::agent
