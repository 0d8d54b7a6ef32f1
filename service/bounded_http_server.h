// BoundedHttpServer: a cpp-httplib server whose requests are bounded in bytes and in time, so that one client can
// neither make it hold unbounded memory nor hold one of its threads for longer than a fixed time.
//
//   BoundedHttpServer http(BoundedHttpServer::Limits{});  // 32 KB and 2 s per request, 10 s per answer
//   http.Get("/metrics", handler);
//   http.bind_to_port("0.0.0.0", 9464);
//   http.listen_after_bind();
//
// cpp-httplib 0.11 (Debian 12) reads a request head of any length: its request line and each header line grow
// without a bound, and so does the number of header lines; a chunked body ignores set_payload_max_length. Its read
// timeout bounds each wait for bytes, not the request, so a client sending one byte a second holds a thread for as
// long as it likes. Here every connection carries one request, read through a stream that fails a read once the
// request has sent max_request_bytes or request_seconds have passed since the connection was taken up; the
// library then drops the connection. Only GET and HEAD are served: any other method is answered 405 before its body
// is read, by the server's own pre-routing handler (which also drops Range headers; do not replace it).
//
// The library queues every accepted connection for its threads without a bound, and a queued connection's time
// starts only when a thread takes it up, so a flood of connections could hold every descriptor of the process
// (and gRPC 1.51's listener stops for good once an accept fails for lack of one). Here at most max_connections
// are open at once, served or waiting for a thread; one past them is answered 503 and closed as it is accepted.
// The server sets its own task queue: do not replace new_task_queue.
#ifndef SAMPLERD_SERVICE_BOUNDED_HTTP_SERVER_H_
#define SAMPLERD_SERVICE_BOUNDED_HTTP_SERVER_H_

#include <cstddef>

#include "httplib.h"

namespace samplerd {

class BoundedHttpServer : public httplib::Server {
 public:
  struct Limits {
    // Bytes a request may send, request line, headers and body together.
    size_t max_request_bytes = 32768;
    // Seconds from the connection being taken up by a thread to the last byte of its request.
    int request_seconds = 2;
    // Seconds each write of the answer may wait for the client.
    int write_seconds = 10;
    // Threads serving connections, and connections open at once (served or waiting for a thread).
    int threads = 16;
    int max_connections = 64;
  };

  explicit BoundedHttpServer(Limits limits);

 private:
  bool process_and_close_socket(socket_t sock) override;

  const Limits limits_;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_BOUNDED_HTTP_SERVER_H_
