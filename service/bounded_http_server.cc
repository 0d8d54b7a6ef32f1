#include "service/bounded_http_server.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

namespace samplerd {
namespace {

using Clock = std::chrono::steady_clock;

// Waits until `sock` is ready for `events` or `deadline` passes; false on the deadline, an error or a hang-up with
// nothing left to read.
bool WaitUntil(int sock, short events, Clock::time_point deadline) {
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{sock, events, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready > 0) return (p.revents & events) != 0;
    if (ready < 0 && errno != EINTR) return false;
  }
}

void AddressOf(int sock, bool peer, std::string& ip, int& port) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  const int got = peer ? getpeername(sock, reinterpret_cast<sockaddr*>(&address), &length)
                       : getsockname(sock, reinterpret_cast<sockaddr*>(&address), &length);
  char host[NI_MAXHOST], service[NI_MAXSERV];
  if (got != 0 || getnameinfo(reinterpret_cast<sockaddr*>(&address), length, host, sizeof(host), service,
                              sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return;
  }
  ip = host;
  port = std::atoi(service);
}

// One request's connection: reads fail once the request has sent `max_read` bytes or `read_deadline` has passed,
// and the whole answer must be taken by the client within `write_seconds` of its first byte. Reads are buffered:
// the library reads a request head one byte at a time.
class BoundedSocketStream final : public httplib::Stream {
 public:
  BoundedSocketStream(int sock, Clock::time_point read_deadline, size_t max_read, int write_seconds)
      : sock_(sock), read_deadline_(read_deadline), max_read_(max_read), write_seconds_(write_seconds) {}

  bool is_readable() const override { return begin_ < end_ || WaitUntil(sock_, POLLIN, read_deadline_); }

  bool is_writable() const override {
    if (!write_deadline_) write_deadline_ = Clock::now() + std::chrono::seconds(write_seconds_);
    return WaitUntil(sock_, POLLOUT, *write_deadline_);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (begin_ == end_) {
      const size_t room = std::min(sizeof(buffer_), max_read_ - taken_);
      if (room == 0 || !WaitUntil(sock_, POLLIN, read_deadline_)) return -1;
      ssize_t n;
      do {
        n = recv(sock_, buffer_, room, 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      taken_ += static_cast<size_t>(n);
      begin_ = 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, end_ - begin_);
    std::memcpy(ptr, buffer_ + begin_, n);
    begin_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do {
      n = send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { AddressOf(sock_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { AddressOf(sock_, false, ip, port); }
  socket_t socket() const override { return sock_; }

 private:
  const int sock_;
  const Clock::time_point read_deadline_;
  const size_t max_read_;
  const int write_seconds_;
  mutable std::optional<Clock::time_point> write_deadline_;
  size_t taken_ = 0;  // bytes received from the socket
  char buffer_[4096];
  size_t begin_ = 0, end_ = 0;
};

// Set on the accepting thread while it runs the task of a connection past Limits::max_connections, which
// process_and_close_socket then closes at once.
thread_local bool t_shedding = false;

// cpp-httplib's thread pool, counting the connections handed to it until their task ends. The library calls
// enqueue from its one accepting thread only.
class SheddingQueue final : public httplib::TaskQueue {
 public:
  SheddingQueue(int threads, int max_connections) : pool_(static_cast<size_t>(threads)), max_(max_connections) {}

  void enqueue(std::function<void()> fn) override {
    if (open_.load(std::memory_order_relaxed) >= max_) {
      t_shedding = true;
      fn();
      t_shedding = false;
      return;
    }
    open_.fetch_add(1, std::memory_order_relaxed);
    pool_.enqueue([this, fn = std::move(fn)] {
      fn();
      open_.fetch_sub(1, std::memory_order_relaxed);
    });
  }

  void shutdown() override { pool_.shutdown(); }

 private:
  httplib::ThreadPool pool_;
  const int max_;
  std::atomic<int> open_{0};
};

}  // namespace

BoundedHttpServer::BoundedHttpServer(Limits limits) : limits_(limits) {
  new_task_queue = [threads = limits_.threads, max = limits_.max_connections] {
    return new SheddingQueue(threads, max);
  };
  set_payload_max_length(limits_.max_request_bytes);
  set_pre_routing_handler([](const httplib::Request& request, httplib::Response& response) {
    if (request.method != "GET" && request.method != "HEAD") {
      response.status = 405;
      response.set_header("Allow", "GET, HEAD");
      return HandlerResponse::Handled;
    }
    // The library answers a Range header with every range listed, overlaps included, built in memory: a few
    // thousand "0-" ranges made a reply of 150 MB. Dropped, the whole answer is served, as HTTP lets a server do.
    // The Request is the library's own non-const object (handlers see it const); only its parsed ranges change.
    const_cast<httplib::Request&>(request).ranges.clear();
    return HandlerResponse::Unhandled;
  });
}

bool BoundedHttpServer::process_and_close_socket(socket_t sock) {
  if (t_shedding) {
    static constexpr char kBusy[] =
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    (void)send(sock, kBusy, sizeof(kBusy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(sock);
    return false;
  }
  BoundedSocketStream stream(sock, Clock::now() + std::chrono::seconds(limits_.request_seconds),
                             limits_.max_request_bytes, limits_.write_seconds);
  bool connection_closed = false;
  const bool served = process_request(stream, /*close_connection=*/true, connection_closed, nullptr);
  shutdown(sock, SHUT_RDWR);
  close(sock);
  return served;
}

}  // namespace samplerd
