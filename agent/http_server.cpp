#include "http_server.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <filesystem>
#include <optional>
#include <vector>

#include "log.hpp"

namespace nvqos::agent {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using unix_stream = asio::local::stream_protocol;

namespace {

constexpr auto kSessionTimeout = std::chrono::seconds(30);
constexpr std::size_t kMaxRequestBodyBytes = 1 << 20;
constexpr std::uint32_t kMaxRequestHeaderBytes = 8 << 10;  // Beast's default, made explicit

template <typename Protocol>
class Session : public std::enable_shared_from_this<Session<Protocol>> {
 public:
  Session(typename Protocol::socket socket, std::shared_ptr<HttpHandler> handler,
          std::shared_ptr<HttpDeferredHandler> deferred, HttpPeer peer, std::string refusal)
      : stream_(std::move(socket)),
        handler_(std::move(handler)),
        deferred_(std::move(deferred)),
        peer_(peer),
        refusal_(std::move(refusal)) {}

  void start() { do_read(); }

  // Ends the session at once, also while it waits for a keep-alive client's next request (up to
  // kSessionTimeout): the agent's event loop only returns, and the agent only exits, when no
  // session is left, and Prometheus keeps its scrape connection open between scrapes.
  void abort() {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->stream_.close(); });
  }

 private:
  void do_read() {
    parser_.emplace();
    limit_request_parser(*parser_);
    stream_.expires_after(kSessionTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted) {
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
    if (!refusal_.empty()) {
      response_ = make_response(req, http::status::forbidden, "{\"error\": \"refusing to serve: " + refusal_ + "\"}\n",
                                "application/json");
      response_.keep_alive(false);
      do_write();
      return;
    }
    try {
      if (deferred_ && *deferred_) {
        auto self = this->shared_from_this();
        HttpReply reply = [self, version = req.version(), keep = req.keep_alive()](HttpResponse res) {
          asio::post(self->stream_.get_executor(), [self, res = std::move(res), version, keep]() mutable {
            res.version(version);
            res.keep_alive(keep);
            self->response_ = std::move(res);
            self->do_write();
          });
        };
        if ((*deferred_)(req, peer_, std::move(reply))) return;
      }
      response_ = (*handler_)(req, peer_);
    } catch (const std::exception& e) {
      log::error("HTTP handler failed", {{"target", std::string(req.target())}, {"error", e.what()}});
      response_ = make_response(req, http::status::internal_server_error, "internal error\n");
    }
    do_write();
  }

  void do_write() {
    response_.prepare_payload();
    stream_.expires_after(kSessionTimeout);
    http::async_write(stream_, response_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec || !self->response_.keep_alive()) {
        self->close();
        return;
      }
      self->do_read();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(Protocol::socket::shutdown_send, ignored);
  }

  beast::basic_stream<Protocol> stream_;
  beast::flat_buffer buffer_;
  std::optional<HttpRequestParser> parser_;
  HttpResponse response_;
  std::shared_ptr<HttpHandler> handler_;
  std::shared_ptr<HttpDeferredHandler> deferred_;
  HttpPeer peer_;
  std::string refusal_;  // non-empty: answer every request with this refusal
};

template <typename Protocol>
class Listener final : public HttpServer {
 public:
  Listener(asio::io_context& io, HttpHandler handler, HttpPeer peer, std::string unlink_on_stop = {})
      : io_(io),
        acceptor_(io),
        handler_(std::make_shared<HttpHandler>(std::move(handler))),
        peer_(peer),
        unlink_on_stop_(std::move(unlink_on_stop)) {}
  ~Listener() override { stop(); }

  beast::error_code open(const typename Protocol::endpoint& ep, bool reuse_address) {
    beast::error_code ec;
    acceptor_.open(ep.protocol(), ec);
    if (!ec && reuse_address) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    return ec;
  }

  void accept() {
    acceptor_.async_accept(asio::make_strand(io_), [this](beast::error_code ec, typename Protocol::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        std::string refusal = guard_ ? guard_() : "";
        if (!refusal.empty()) log::error("admin API refused a connection", {{"reason", refusal}});
        auto session =
            std::make_shared<Session<Protocol>>(std::move(socket), handler_, deferred_, peer_, std::move(refusal));
        std::erase_if(sessions_, [](const auto& s) { return s.expired(); });
        sessions_.push_back(session);
        session->start();
      } else {
        log::warn("accept failed", {{"error", ec.message()}});
      }
      if (acceptor_.is_open()) accept();
    });
  }

  void set_deferred_handler(HttpDeferredHandler handler) override {
    deferred_ = std::make_shared<HttpDeferredHandler>(std::move(handler));
  }
  void set_guard(HttpGuard guard) override { guard_ = std::move(guard); }

  void stop() override {
    if (!acceptor_.is_open()) return;
    beast::error_code ignored;
    acceptor_.close(ignored);
    if (!unlink_on_stop_.empty()) ::unlink(unlink_on_stop_.c_str());
    for (const auto& s : sessions_)
      if (auto session = s.lock()) session->abort();
    sessions_.clear();
  }

  std::string local_address() const override {
    beast::error_code ec;
    auto ep = acceptor_.local_endpoint(ec);
    if constexpr (std::is_same_v<Protocol, tcp>)
      return ep.address().to_string() + ":" + std::to_string(ep.port());
    else
      return ep.path();
  }

 private:
  asio::io_context& io_;
  typename Protocol::acceptor acceptor_;
  std::shared_ptr<HttpHandler> handler_;
  std::shared_ptr<HttpDeferredHandler> deferred_;
  HttpGuard guard_;
  HttpPeer peer_;
  std::string unlink_on_stop_;
  std::vector<std::weak_ptr<Session<Protocol>>> sessions_;  // open connections, for stop()
};

}  // namespace

void limit_request_parser(HttpRequestParser& parser) {
  parser.body_limit(kMaxRequestBodyBytes);
  parser.header_limit(kMaxRequestHeaderBytes);
}

bool parse_listen_address(const std::string& text, std::string& host, unsigned short& port, std::string& why) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) {
    why = "\"" + text + "\" needs a port (HOST:PORT, [V6]:PORT or :PORT)";
    return false;
  }
  host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  try {
    std::size_t used = 0;
    unsigned long p = std::stoul(port_text, &used);
    if (used != port_text.size() || p > 65535) throw std::out_of_range("port");
    port = static_cast<unsigned short>(p);
  } catch (const std::exception&) {
    why = "\"" + port_text + "\" is not a TCP port (0-65535)";
    return false;
  }
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

Result<std::unique_ptr<HttpServer>> HttpServer::listen_tcp(asio::io_context& io, const std::string& address,
                                                           HttpHandler handler, HttpPeer peer) {
  std::string host, why;
  unsigned short port = 0;
  if (!parse_listen_address(address, host, port, why)) return Error{EINVAL, "listen address: " + why};
  beast::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Error{EINVAL, "listen address: \"" + host + "\" is not an IP address"};
  auto server = std::make_unique<Listener<tcp>>(io, std::move(handler), peer);
  if (auto err = server->open(tcp::endpoint(addr, port), true))
    return Error{err.value(), "listen on " + address + ": " + err.message()};
  server->accept();
  return std::unique_ptr<HttpServer>(std::move(server));
}

Result<std::unique_ptr<HttpServer>> HttpServer::listen_unix(asio::io_context& io, const std::string& path,
                                                            HttpHandler handler) {
  std::error_code fs_ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, fs_ec);
  ::unlink(path.c_str());  // a socket file left by a killed agent
  auto server = std::make_unique<Listener<unix_stream>>(io, std::move(handler), HttpPeer{true, false}, path);
  // The socket is created 0600 (umask), not chmod-ed after bind, so it is
  // never reachable by others even for an instant.
  mode_t old_umask = ::umask(0177);
  auto err = server->open(unix_stream::endpoint(path), false);
  ::umask(old_umask);
  if (err) return Error{err.value(), "listen on unix socket " + path + ": " + err.message()};
  server->accept();
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace nvqos::agent
