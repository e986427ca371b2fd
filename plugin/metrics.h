// Prometheus metrics of the daemon (DESIGN.md §7): counts of gRPC calls by
// method and result, and a tiny HTTP endpoint serving the text format
// (version 0.0.4) at GET /metrics on a local address.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs::plugin {

// Calls served, by method and status code, with their total duration.
// Thread-safe; Record() costs one short critical section.
class CallMetrics {
 public:
  void Record(const std::string& method, Code code, double seconds);
  // evs_grpc_calls_total{method,code} and evs_grpc_call_seconds_total{method}.
  std::string Render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, Code>, int64_t> calls_;
  std::map<std::string, double> seconds_;
};

// Serves GET /metrics with whatever `render` returns; anything else is 404.
// One thread; each request is answered and the connection closed, so a slow
// or hostile client holds it for at most 2 s.
class MetricsServer {
 public:
  // `address` is "host:port" with a numeric IPv4 host (keep it local:
  // "127.0.0.1:9650"); port 0 picks a free one. InvalidArgument for a bad
  // address; errors from bind name it.
  static Result<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                      std::function<std::string()> render);
  ~MetricsServer();
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  void Serve();
  UniqueFd listener_;
  UniqueFd stop_;  // eventfd
  int port_ = 0;
  std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace evs::plugin
