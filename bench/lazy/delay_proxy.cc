// lazy_delay_proxy: a TCP proxy that holds every byte for a fixed time in
// each direction, so a registry behind it is `2 × delay` further away in
// round-trip time. The kernel here has tbf/htb but no netem (DESIGN.md §8),
// so bench/lazy/shaped-link.sh puts the registry behind a veth pair with
// tbf for the bandwidth and this proxy in front of it for the latency.
//
//   lazy_delay_proxy --listen 127.0.0.1:5099 --upstream 10.231.0.2:5000 --delay-ms 10
//
// Each accepted connection gets an upstream connection and, per direction,
// a reader that stamps what it reads with "due = now + delay" and a writer
// that sends it when due: a delay line, so throughput is not cut by the
// delay (only the link's tbf limits it) while every request and response
// arrives `delay` later than it would.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

bool ParseAddress(const std::string& text, sockaddr_in* out) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons(static_cast<uint16_t>(std::atoi(text.c_str() + colon + 1)));
  return ::inet_pton(AF_INET, text.substr(0, colon).c_str(), &out->sin_addr) == 1;
}

// One direction of a connection.
class DelayLine {
 public:
  DelayLine(int from, int to, std::chrono::microseconds delay)
      : from_(from), to_(to), delay_(delay) {}

  void Run() {
    std::thread writer([this] { Write(); });
    std::vector<char> buf(64 << 10);
    for (;;) {
      ssize_t n = ::read(from_, buf.data(), buf.size());
      if (n <= 0) break;
      Push(std::string(buf.data(), static_cast<size_t>(n)));
    }
    Push(std::string());  // end of stream
    writer.join();
  }

 private:
  struct Item {
    Clock::time_point due;
    std::string data;  // empty: end of stream
  };
  void Push(std::string data) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({Clock::now() + delay_, std::move(data)});
    cv_.notify_one();
  }
  void Write() {
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      std::this_thread::sleep_until(item.due);
      if (item.data.empty()) {
        ::shutdown(to_, SHUT_WR);
        return;
      }
      size_t off = 0;
      while (off < item.data.size()) {
        ssize_t w = ::write(to_, item.data.data() + off, item.data.size() - off);
        if (w <= 0) {
          ::shutdown(from_, SHUT_RD);  // the peer is gone: stop reading too
          return;
        }
        off += static_cast<size_t>(w);
      }
    }
  }

  int from_, to_;
  std::chrono::microseconds delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
};

void Serve(int client, sockaddr_in upstream, std::chrono::microseconds delay) {
  int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(server, reinterpret_cast<sockaddr*>(&upstream), sizeof upstream) != 0) {
    ::close(client);
    ::close(server);
    return;
  }
  int one = 1;
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  DelayLine up(client, server, delay), down(server, client, delay);
  std::thread t([&] { up.Run(); });
  down.Run();
  t.join();
  ::close(client);
  ::close(server);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen_at = "127.0.0.1:5099", upstream_at;
  int delay_ms = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--listen")
      listen_at = argv[i + 1];
    else if (flag == "--upstream")
      upstream_at = argv[i + 1];
    else if (flag == "--delay-ms")
      delay_ms = std::atoi(argv[i + 1]);
  }
  sockaddr_in listen_addr, upstream;
  if (!ParseAddress(listen_at, &listen_addr) || !ParseAddress(upstream_at, &upstream)) {
    std::fprintf(stderr, "usage: %s --listen IP:PORT --upstream IP:PORT [--delay-ms N]\n", argv[0]);
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&listen_addr), sizeof listen_addr) != 0 ||
      ::listen(fd, 128) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  const auto delay = std::chrono::microseconds(delay_ms * 1000);
  for (;;) {
    int client = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    std::thread(Serve, client, upstream, delay).detach();
  }
}
