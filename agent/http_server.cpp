#include "http_server.hpp"

#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>

#include "log.hpp"

namespace nvqos::agent {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kSessionTimeout = std::chrono::seconds(30);
constexpr std::size_t kMaxRequestBodyBytes = 1 << 20;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<HttpHandler> handler)
      : stream_(std::move(socket)), handler_(std::move(handler)) {}

  void start() { do_read(); }

 private:
  void do_read() {
    parser_.emplace();
    parser_->body_limit(kMaxRequestBodyBytes);
    stream_.expires_after(kSessionTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::connection_reset) {
      close();
      return;
    }
    if (ec) {
      HttpRequest bad;
      bad.version(11);
      response_ = make_response(bad, http::status::bad_request, std::string("bad request: ") + ec.message() + "\n");
      response_.keep_alive(false);
      do_write();
      return;
    }
    HttpRequest req = parser_->release();
    try {
      response_ = (*handler_)(req);
    } catch (const std::exception& e) {
      log::error("HTTP handler failed", {{"target", std::string(req.target())}, {"error", e.what()}});
      response_ = make_response(req, http::status::internal_server_error, "internal error\n");
    }
    do_write();
  }

  void do_write() {
    response_.prepare_payload();
    stream_.expires_after(kSessionTimeout);
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec || !self->response_.keep_alive()) {
        self->close();
        return;
      }
      self->do_read();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpResponse response_;
  std::shared_ptr<HttpHandler> handler_;
};

}  // namespace

bool parse_listen_address(const std::string& text, tcp::endpoint& out, std::string& why) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) {
    why = "\"" + text + "\" needs a port (HOST:PORT, [V6]:PORT or :PORT)";
    return false;
  }
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(port_text, &used);
    if (used != port_text.size() || port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    why = "\"" + port_text + "\" is not a TCP port (0-65535)";
    return false;
  }
  beast::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) {
    why = "\"" + host + "\" is not an IP address";
    return false;
  }
  out = tcp::endpoint(addr, static_cast<unsigned short>(port));
  return true;
}

HttpResponse make_response(const HttpRequest& req, http::status status, std::string body, std::string content_type) {
  HttpResponse res{status, req.version()};
  res.set(http::field::server, "nvqos-agent");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  return res;
}

HttpServer::HttpServer(asio::io_context& io, HttpHandler handler)
    : io_(io), acceptor_(io), handler_(std::make_shared<HttpHandler>(std::move(handler))) {}

HttpServer::~HttpServer() { stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::listen(asio::io_context& io, const std::string& address,
                                                       HttpHandler handler) {
  tcp::endpoint ep;
  std::string why;
  if (!parse_listen_address(address, ep, why)) return Error{EINVAL, "metrics address: " + why};
  std::unique_ptr<HttpServer> server(new HttpServer(io, std::move(handler)));
  beast::error_code ec;
  server->acceptor_.open(ep.protocol(), ec);
  if (!ec) server->acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) server->acceptor_.bind(ep, ec);
  if (!ec) server->acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Error{ec.value(), "listen on " + address + ": " + ec.message()};
  server->do_accept();
  return server;
}

tcp::endpoint HttpServer::local_endpoint() const { return acceptor_.local_endpoint(); }

void HttpServer::stop() {
  beast::error_code ignored;
  acceptor_.close(ignored);
}

void HttpServer::do_accept() {
  acceptor_.async_accept(asio::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) std::make_shared<Session>(std::move(socket), handler_)->start();
    else log::warn("accept failed", {{"error", ec.message()}});
    if (acceptor_.is_open()) do_accept();
  });
}

}  // namespace nvqos::agent
