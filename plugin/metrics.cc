#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace evs::plugin {

void CallMetrics::Record(const std::string& method, Code code, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++calls_[{method, code}];
  seconds_[method] += seconds;
}

std::string CallMetrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  out << "# HELP evs_grpc_calls_total Snapshots API calls served, by method and result.\n"
         "# TYPE evs_grpc_calls_total counter\n";
  for (const auto& [key, n] : calls_) {
    out << "evs_grpc_calls_total{method=\"" << key.first << "\",code=\"" << CodeName(key.second)
        << "\"} " << n << "\n";
  }
  out << "# HELP evs_grpc_call_seconds_total Time spent serving calls, by method.\n"
         "# TYPE evs_grpc_call_seconds_total counter\n";
  for (const auto& [method, s] : seconds_) {
    out << "evs_grpc_call_seconds_total{method=\"" << method << "\"} " << s << "\n";
  }
  return out.str();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                            std::function<std::string()> render) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgumentError("metrics address \"", address, "\": want host:port");
  }
  std::string host = address.substr(0, colon);
  char* end = nullptr;
  long port = std::strtol(address.c_str() + colon + 1, &end, 10);
  struct sockaddr_in addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  if (*end != '\0' || port < 0 || port > 65535 || colon + 1 == address.size() ||
      ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return InvalidArgumentError("metrics address \"", address,
                                "\": want a numeric IPv4 host and a port");
  }
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->render_ = std::move(render);
  s->listener_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s->listener_) return ErrnoError(errno, "metrics socket");
  int one = 1;
  ::setsockopt(s->listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(s->listener_.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
    return ErrnoError(errno, StrCat("bind metrics address ", address));
  }
  if (::listen(s->listener_.get(), 16) != 0) return ErrnoError(errno, "listen (metrics)");
  socklen_t len = sizeof addr;
  ::getsockname(s->listener_.get(), reinterpret_cast<struct sockaddr*>(&addr), &len);
  s->port_ = ntohs(addr.sin_port);
  s->stop_.Reset(::eventfd(0, EFD_CLOEXEC));
  if (!s->stop_) return ErrnoError(errno, "eventfd (metrics)");
  s->thread_ = std::thread([p = s.get()] { p->Serve(); });
  return s;
}

MetricsServer::~MetricsServer() {
  uint64_t one = 1;
  ssize_t ignored = ::write(stop_.get(), &one, sizeof one);
  (void)ignored;
  if (thread_.joinable()) thread_.join();
}

void MetricsServer::Serve() {
  for (;;) {
    struct pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) continue;
    // Read the request head (bounded in size and time).
    std::string request;
    char buf[1024];
    while (request.size() < 8192 && request.find("\r\n\r\n") == std::string::npos) {
      struct pollfd p = {conn.get(), POLLIN, 0};
      if (::poll(&p, 1, 2000) != 1) break;
      ssize_t n = ::read(conn.get(), buf, sizeof buf);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string body, status;
    if (request.rfind("GET /metrics ", 0) == 0 || request.rfind("GET /metrics?", 0) == 0) {
      status = "200 OK";
      body = render_();
    } else {
      status = "404 Not Found";
      body = "only GET /metrics is served here\n";
    }
    std::string response =
        StrCat("HTTP/1.0 ", status,
               "\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: ", body.size(),
               "\r\nConnection: close\r\n\r\n", body);
    (void)WriteAll(conn.get(), response.data(), response.size(), "metrics response");
  }
}

}  // namespace evs::plugin
