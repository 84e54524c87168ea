// One Beast HTTP/1.1 server on the agent's io_context: /metrics, /healthz,
// /readyz (and later the admin API). Every stream has a timeout, so a stuck
// scraper cannot pin a session.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <string>

#include "result.hpp"

namespace nvqos::agent {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  // Binds `address` ("127.0.0.1:9465", "[::]:9465", ":9465" for all IPv4).
  static Result<std::unique_ptr<HttpServer>> listen(boost::asio::io_context& io, const std::string& address,
                                                    HttpHandler handler);
  ~HttpServer();
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  void stop();

 private:
  HttpServer(boost::asio::io_context& io, HttpHandler handler);
  void do_accept();

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<HttpHandler> handler_;
};

HttpResponse make_response(const HttpRequest& req, boost::beast::http::status status, std::string body,
                           std::string content_type = "text/plain; charset=utf-8");

// Splits "host:port" / "[v6]:port" / ":port"; false with a reason if malformed.
bool parse_listen_address(const std::string& text, boost::asio::ip::tcp::endpoint& out, std::string& why);

}  // namespace nvqos::agent
