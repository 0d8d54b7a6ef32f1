#include "service/shm_control_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "samplerd/v1/sampler.pb.h"
#include "service/logging.h"
#include "service/request_wire.h"
#include "service/seed_table.h"
#include "service/step_codec.h"
#include "service/unix_socket_path.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

constexpr int kMaxFdsPerPacket = ShmControlServer::kMaxDescriptorsReceived;

// Held from a packet's recvmsg until every descriptor it carried is closed (or, for a register, handed to the
// registry), so that all connections together hold at most kMaxDescriptorsReceived of their clients' descriptors
// at once: 253 per packet on every connection thread would take the descriptors gRPC's listener needs.
std::mutex& ReceiveWindow() {
  static std::mutex* const window = new std::mutex;
  return *window;
}

// A descriptor ReceivePacket took and its caller already closed.
constexpr int kClosed = -2;

// Closes a descriptor a client sent. The last close of a TCP socket that its sender set to linger with data
// unsent waits out the linger time, which the sender chose, in close(): made abortive (linger 0), it returns at
// once.
void CloseReceived(int fd) {
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
    const struct linger abortive = {1, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
  }
  close(fd);
}

// What an answer's message may quote of a status: an answer without `sample` stays far below kMaxPacketBytes.
constexpr size_t kMaxMessageBytes = 1024;

// The parsed request and answer, and the answer's wire form, that a connection keeps between packets for reuse, at
// most. With --max_steps_per_request raised, a packet parses to up to ~70 times its bytes (65,000 empty steps in
// 128 KiB: 8.8 MB), its answer is serialized before it can be refused as too large, and a connection may be idle for
// good.
constexpr size_t kScratchKeepBytes = 256 << 10;

// Receives one packet into `buffer` (ShmControlServer::kMaxPacketBytes) and its descriptors into `fds`, blocking;
// its length (kMaxPacketBytes + 1 when it was longer; 0 for an empty packet), -1 at end of stream or on error.
//
// On SOCK_SEQPACKET, recvmsg returns 0 both for a zero-length packet (a valid, empty ShmControlRequest) and at
// end of stream, with the same msg_flags. The connection has SO_PASSCRED set (Accept), and unix(7) gives an
// SCM_CREDENTIALS control message with each received message: a packet, even empty, comes with one, the end of
// stream with none. Polling for POLLRDHUP instead would misread an empty packet sent just before a half-close
// (shutdown(SHUT_WR), the client still reading its answer) as the end.
ssize_t ReceivePacket(int fd, char* buffer, std::vector<int>* fds, int flags = 0) {
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)];
  struct iovec iov = {buffer, ShmControlServer::kMaxPacketBytes};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  bool credentials = false;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    credentials = credentials || c->cmsg_type == SCM_CREDENTIALS;
    if (c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds->push_back(received);
    }
  }
  if (n == 0 && !credentials) return -1;
  if ((msg.msg_flags & MSG_TRUNC) != 0) n = static_cast<ssize_t>(ShmControlServer::kMaxPacketBytes) + 1;
  if ((msg.msg_flags & MSG_CTRUNC) != 0) fds->push_back(-1);  // reported as too many
  return n;
}

void Reply(v1::ShmControlResponse* response, const absl::Status& status) {
  response->set_code(static_cast<int32_t>(status.code()));
  response->set_message(Excerpt(status.message(), kMaxMessageBytes));
}

// Takes the packets queued on `fd` without waiting, once no more can come (after shutdown SHUT_RD), and closes the
// descriptors they carry with CloseReceived: closing a socket with packets queued would have the kernel close
// those on this thread, unguarded.
void DropQueuedPackets(int fd) {
  static thread_local std::unique_ptr<char[]> sink(new char[ShmControlServer::kMaxPacketBytes]);
  std::vector<int> fds;
  for (;;) {
    std::lock_guard<std::mutex> window(ReceiveWindow());
    if (ReceivePacket(fd, sink.get(), &fds, MSG_DONTWAIT) < 0) return;
    for (int f : fds)
      if (f >= 0) CloseReceived(f);
    fds.clear();
  }
}

void Refuse(int fd, const absl::Status& why) {
  // Told why, then closed: the client sees the message in the answer to its first packet's read.
  v1::ShmControlResponse response;
  Reply(&response, why);
  const std::string wire = response.SerializeAsString();
  (void)send(fd, wire.data(), wire.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  // A socket closed with packets still queued resets its peer, whose read then fails instead of returning this
  // answer: the client's first packet (usually already sent) is taken first.
  shutdown(fd, SHUT_RD);
  DropQueuedPackets(fd);
  close(fd);
  spdlog::warn("shared-memory client refused: {}", std::string(why.message()));
}

// StartRequest's answer, waited for on the connection's thread (it runs there outright for a lone step when a
// worker is idle).
absl::Status RunRequest(const SamplerService& service, const v1::SampleRequest& request, SeedTable* seeds,
                        v1::SampleResponse* response, absl::string_view session, int fd) {
  std::mutex mu;
  std::condition_variable answered;
  bool done = false;
  absl::Status status;
  service.StartRequest(
      request, seeds, response,
      [&](absl::Status s) {
        std::lock_guard<std::mutex> lock(mu);
        status = std::move(s);
        done = true;
        answered.notify_one();
      },
      session,
      // A client that hangs up waits for no answer: the steps not yet started are not run (a negative fd, as in
      // the fuzz target, is never polled). Gone means both directions shut (POLLHUP: closed, or shutdown
      // SHUT_RDWR) or broken; a client that only shut its writing side (POLLRDHUP) still reads the answer.
      [fd] {
        struct pollfd polled = {fd, 0, 0};
        return poll(&polled, 1, 0) > 0 && (polled.revents & (POLLHUP | POLLERR)) != 0;
      });
  std::unique_lock<std::mutex> lock(mu);
  answered.wait(lock, [&] { return done; });
  return status;
}

// Sends `wire` as one packet, waiting while the socket's buffer is full of answers the client has not read yet
// (it may send its next requests before reading: docs/shm.md), for at most kAnswerSendTimeout in all. False when
// the peer is gone, or has not made room for that long (then logged: it is disconnected).
bool SendAnswer(int fd, const std::string& wire) {
  const auto deadline = std::chrono::steady_clock::now() + ShmControlServer::kAnswerSendTimeout;
  for (;;) {
    const ssize_t sent = send(fd, wire.data(), wire.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(wire.size())) return true;
    if (sent < 0 && errno == EINTR) continue;
    if (sent >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return false;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      spdlog::warn("shared-memory client has not read its answers for {} ms; disconnected",
                   std::chrono::milliseconds(ShmControlServer::kAnswerSendTimeout).count());
      return false;
    }
    // Polled rather than a blocking send with SO_SNDTIMEO: shutdown() of the socket, as the server stopping does,
    // wakes a poll (POLLHUP) but not a send waiting for room.
    struct pollfd polled = {fd, POLLOUT, 0};
    if (poll(&polled, 1, static_cast<int>(left.count())) > 0 && (polled.revents & (POLLHUP | POLLERR)) != 0) {
      return false;
    }
  }
}

absl::Status Unauthenticated(absl::string_view reason) {
  return absl::UnauthenticatedError(absl::StrCat(
      reason, ": expected ShmControlRequest.authorization \"Bearer <token>\" with a token of --auth_token_file"));
}

// Whether `state`'s connection may register or run steps: with tokens, the token it presented must still be one
// in force. Checked at every such request (BearerTokens::Accepts reads the set a reload swapped in), so a token
// removed from the file stops working at the connection's next request, as at the next gRPC call.
absl::Status CheckAuthorized(const ShmControlServer::Options& options, const ShmControlServer::ConnectionState& state) {
  if (options.tokens == nullptr) return absl::OkStatus();
  if (!state.authenticated) return Unauthenticated("this connection has presented no bearer token");
  if (options.tokens->Accepts(state.authorization)) return absl::OkStatus();
  const absl::Status refused = Unauthenticated("the bearer token this connection presented is no longer accepted");
  if (const int64_t held = CallProblemLogBudget().Admit(); held >= 0) {
    spdlog::warn("shared-memory control packet refused: {}{}", std::string(refused.message()), HeldBackNote(held));
  }
  return refused;
}

// Gives `state`'s connection its session, on its first accepted token.
absl::Status Authenticate(const ShmControlServer::Options& options, ShmControlServer::ConnectionState* state) {
  using AuthState = ShmControlServer::AuthState;
  AuthState pending = AuthState::kPending;
  if (state->auth != nullptr && !state->auth->compare_exchange_strong(pending, AuthState::kAuthenticated)) {
    // Accept closed it meanwhile to make room for newer connections: the answer goes nowhere.
    state->close = true;
    return absl::UnavailableError("the connection was closed to make room for newer unauthenticated ones");
  }
  absl::StatusOr<std::string> session = options.registry->OpenSession();
  if (!session.ok()) {
    // Over --shm_max_clients: told so and closed, as a connection over it is at accept without tokens.
    state->close = true;
    return session.status();
  }
  state->session = *std::move(session);
  state->authenticated = true;
  return absl::OkStatus();
}

// Waits until `fd` has a packet (or is shut) or `deadline` passes; false on the deadline.
bool AwaitPacket(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    struct pollfd polled = {fd, POLLIN, 0};
    const int ready = poll(&polled, 1, static_cast<int>(left.count()));
    if (ready > 0 || (ready < 0 && errno != EINTR)) return true;  // ReceivePacket then sees what it is
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShmControlServer>> ShmControlServer::Start(Options options) {
  if (options.registry == nullptr || options.service == nullptr) {
    return absl::InvalidArgumentError("the shared-memory control socket needs a registry and a service");
  }
  const std::string& path = options.path;
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shm_socket \"", path, "\" must be a path of 1..", sizeof(address.sun_path) - 1, " bytes"));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket(AF_UNIX): ", std::strerror(errno)));
  if (absl::Status claimed = ClaimUnixSocketPath(path, "--shm_socket"); !claimed.ok()) {
    close(fd);
    return claimed;
  }
  if (bind(fd, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address)) != 0 || listen(fd, 64) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on --shm_socket ", path, ": ", std::strerror(error)));
  }
  const int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  std::unique_ptr<ShmControlServer> server(new ShmControlServer(std::move(options), fd, wake));
  try {
    server->accept_thread_ = std::thread([s = server.get()] { s->Accept(); });
  } catch (const std::system_error& e) {
    return absl::UnavailableError(absl::StrCat("no thread for --shm_socket ", path, ": ", e.what()));
  }
  return server;
}

ShmControlServer::ShmControlServer(Options options, int listen_fd, int wake_fd)
    : options_(std::move(options)), listen_fd_(listen_fd), wake_fd_(wake_fd) {}

ShmControlServer::~ShmControlServer() {
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) != sizeof(one)) spdlog::error("cannot wake the shm control thread");
  if (accept_thread_.joinable()) accept_thread_.join();
  Reap(/*all=*/true);
  close(listen_fd_);
  close(wake_fd_);
  unlink(options_.path.c_str());
}

size_t ShmControlServer::MaxConnections(int max_clients, int max_unauthenticated) {
  // Each client holding a session, as many waiting to present a token (the oldest evicted past them), and as many
  // again ended or evicted whose threads are still finishing.
  return static_cast<size_t>(max_clients) + 2 * static_cast<size_t>(max_unauthenticated);
}

size_t ShmControlServer::MaxConnections() const {
  return MaxConnections(options_.registry->limits().max_clients, options_.max_unauthenticated);
}

size_t ShmControlServer::Reap(bool all) {
  std::list<std::unique_ptr<Connection>> ended;
  size_t left = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (all || (*it)->done.load()) {
        if (all) shutdown((*it)->fd, SHUT_RDWR);  // wakes its thread's recv; a step in flight finishes first
        ended.push_back(std::move(*it));
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
    left = connections_.size();
  }
  for (std::unique_ptr<Connection>& c : ended) {
    c->thread.join();
    close(c->fd);
  }
  return left;
}

bool ShmControlServer::WaitUntilIdle(std::chrono::system_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(requests_mu_);
  return no_requests_.wait_until(lock, deadline, [this] { return requests_in_flight_ == 0; });
}

void ShmControlServer::BeginRequest() {
  // Counted before HandlePacket asks SamplerService::AdmitCall, under the mutex WaitUntilIdle takes after
  // StopAdmitting: so a request either sees the drain (and is refused) or is waited for.
  std::lock_guard<std::mutex> lock(requests_mu_);
  ++requests_in_flight_;
}

void ShmControlServer::EndRequest() {
  std::lock_guard<std::mutex> lock(requests_mu_);
  if (--requests_in_flight_ == 0) no_requests_.notify_all();
}

void ShmControlServer::Accept() {
  // Out of file descriptors, the pending connection stays in the backlog and the listening socket stays readable:
  // polling it again at once would spin a core until a descriptor frees, so it waits this long first.
  constexpr int kOutOfDescriptorsPauseMs = 100;
  bool out_of_descriptors = false;
  for (;;) {
    struct pollfd polled[2] = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    const int ready = out_of_descriptors ? poll(polled, 1, kOutOfDescriptorsPauseMs) : poll(polled, 2, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      spdlog::error("shm control socket: poll: {}", std::strerror(errno));
      return;
    }
    if (polled[0].revents != 0) return;
    for (;;) {
      // Before each accept, not once per wake-up: while clients connect and hang up faster than this loop empties
      // the backlog, ended connections would otherwise keep their descriptors and threads (and fill the process's
      // descriptors, which stops gRPC's listener for good).
      const size_t held = Reap(/*all=*/false);
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        const bool exhausted = errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM;
        if (exhausted && !out_of_descriptors) {
          spdlog::error("shm control socket: accept: {}; new shared-memory clients wait until descriptors free",
                        std::strerror(errno));
        }
        out_of_descriptors = exhausted;
        break;
      }
      out_of_descriptors = false;
      const int on = 1;
      if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) != 0) {
        // Without it an empty packet cannot be told from the end of the stream (ReceivePacket).
        spdlog::error("shm control socket: setsockopt(SO_PASSCRED): {}; client closed", std::strerror(errno));
        shutdown(fd, SHUT_RD);
        DropQueuedPackets(fd);
        close(fd);
        continue;
      }
      if (held >= MaxConnections()) {
        Refuse(fd, absl::ResourceExhaustedError(absl::StrCat(
                       "the shared-memory socket already has ", held,
                       " connections (--shm_max_clients, and as many waiting for a token or ending); retry later")));
        continue;
      }
      auto connection = std::make_unique<Connection>();
      connection->fd = fd;
      if (options_.tokens == nullptr) {
        // Nothing to present: the connection is authenticated, and takes its --shm_max_clients slot, at once.
        absl::StatusOr<std::string> session = options_.registry->OpenSession();
        if (!session.ok()) {
          Refuse(fd, session.status());
          continue;
        }
        connection->session = *std::move(session);
        connection->auth.store(AuthState::kAuthenticated);
      }
      Connection* c = connection.get();
      std::lock_guard<std::mutex> lock(mu_);
      if (options_.tokens != nullptr) MakeRoomForAnUnauthenticatedLocked();
      try {
        c->thread = std::thread([this, c] { Serve(c); });
      } catch (const std::system_error& e) {
        // Out of threads (a pids limit): this client is refused, the server and the other clients go on.
        if (!c->session.empty()) options_.registry->CloseSession(c->session);
        Refuse(fd,
               absl::ResourceExhaustedError(absl::StrCat("no thread for another shared-memory client: ", e.what())));
        continue;
      }
      connections_.push_back(std::move(connection));
    }
  }
}

void ShmControlServer::MakeRoomForAnUnauthenticatedLocked() {
  int pending = 0;
  for (const std::unique_ptr<Connection>& c : connections_) {
    if (!c->done.load() && c->auth.load() == AuthState::kPending) ++pending;
  }
  // connections_ is in accept order: the first pending one is the oldest.
  for (auto it = connections_.begin(); it != connections_.end() && pending >= options_.max_unauthenticated; ++it) {
    Connection& c = **it;
    AuthState expected = AuthState::kPending;
    if (c.done.load() || c.auth.load() != expected) continue;
    --pending;  // evicted below, or authenticated since it was counted
    if (!c.auth.compare_exchange_strong(expected, AuthState::kEvicted)) continue;
    shutdown(c.fd, SHUT_RDWR);  // its thread sees the end and leaves; Reap joins it
    if (const int64_t held = CallProblemLogBudget().Admit(); held >= 0) {
      spdlog::warn("shared-memory client closed before it presented a token: {} connections wait to authenticate{}",
                   options_.max_unauthenticated, HeldBackNote(held));
    }
  }
}

void ShmControlServer::HandlePacket(const Options& options, ConnectionState* state, const char* packet, size_t length,
                                    const std::vector<int>& fds, v1::ShmControlResponse* response) {
  v1::ShmControlRequest& request = state->request;
  response->Clear();
  response->set_session(state->session);
  state->ran_steps = false;
  if (length > kMaxPacketBytes) {
    Reply(response, absl::ResourceExhaustedError(
                        absl::StrCat("a control packet is at most ", kMaxPacketBytes,
                                     " bytes; send fewer steps per request (or send them on the Sample RPC)")));
    return;
  }
  google::protobuf::io::ArrayInputStream wire(packet, static_cast<int>(length));
  if (absl::Status refused =
          CheckRequestWire(*v1::ShmControlRequest::descriptor(), &wire, options.max_steps_per_request);
      !refused.ok()) {
    Reply(response, refused);
    return;
  }
  if (!request.ParseFromArray(packet, static_cast<int>(length))) {
    Reply(response, absl::InvalidArgumentError("the packet is not a samplerd.v1.ShmControlRequest"));
    return;
  }
  if (!request.authorization().empty() && options.tokens != nullptr) {
    if (!options.tokens->Accepts(request.authorization())) {
      const absl::Status refused = Unauthenticated("the bearer token is not accepted");
      if (const int64_t held = CallProblemLogBudget().Admit(); held >= 0) {
        spdlog::warn("shared-memory control packet refused: {}{}", std::string(refused.message()), HeldBackNote(held));
      }
      Reply(response, refused);
      return;
    }
    if (!state->authenticated) {
      if (absl::Status authenticated = Authenticate(options, state); !authenticated.ok()) {
        Reply(response, authenticated);
        return;
      }
      response->set_session(state->session);
    }
    state->authorization = request.authorization();
  }
  switch (request.kind_case()) {
    case v1::ShmControlRequest::kRegister: {
      if (fds.size() != 1 || fds[0] < 0) {
        // A -1 stands for descriptors the kernel dropped, uncounted, past the control buffer's room.
        const bool dropped = std::find(fds.begin(), fds.end(), -1) != fds.end();
        const size_t received = fds.size() - (dropped ? 1 : 0);
        Reply(response,
              absl::InvalidArgumentError(absl::StrCat("a register packet carries exactly one memfd (SCM_RIGHTS), got ",
                                                      dropped ? "more than " : "", received)));
        return;
      }
      if (absl::Status authorized = CheckAuthorized(options, *state); !authorized.ok()) {
        Reply(response, authorized);
        return;
      }
      if (absl::Status admitted = options.service->AdmitCall(); !admitted.ok()) {
        Reply(response, admitted);
        return;
      }
      absl::StatusOr<ShmRegistry::Registered> registered =
          options.registry->Register(state->session, fds[0], request.register_().name());
      if (!registered.ok()) {
        Reply(response, registered.status());
        return;
      }
      response->set_region(registered->region);
      response->set_size(registered->size);
      return;
    }
    case v1::ShmControlRequest::kUnregister:
      if (!fds.empty()) {
        Reply(response, absl::InvalidArgumentError("an unregister packet carries no file descriptor"));
        return;
      }
      // Only frees: a connection whose token was revoked since may still let its regions go.
      if (!state->authenticated) {
        Reply(response, Unauthenticated("this connection has presented no bearer token"));
        return;
      }
      Reply(response, options.registry->Unregister(state->session, request.unregister().region()));
      return;
    case v1::ShmControlRequest::kSample: {
      if (!fds.empty()) {
        Reply(response, absl::InvalidArgumentError("a sample packet carries no file descriptor"));
        return;
      }
      if (absl::Status authorized = CheckAuthorized(options, *state); !authorized.ok()) {
        Reply(response, authorized);
        return;
      }
      if (static_cast<int64_t>(length) > options.max_message_bytes) {
        Reply(response,
              absl::ResourceExhaustedError(absl::StrCat("the request is ", length, " bytes, over --max_message_bytes ",
                                                        options.max_message_bytes)));
        return;
      }
      // Draining: a request not started yet is refused, also on a connection that already holds its stream.
      if (absl::Status admitted = options.service->AdmitCall(); !admitted.ok()) {
        Reply(response, admitted);
        return;
      }
      if (!state->admitted) {
        if (absl::Status admitted = options.service->AdmitStream(); !admitted.ok()) {
          Reply(response, admitted);
          return;
        }
        state->admitted = true;
      }
      state->ran_steps = true;
      const absl::Status status = RunRequest(*options.service, request.sample(), &state->seeds,
                                             response->mutable_sample(), state->session, state->fd);
      if (!status.ok()) {
        response->clear_sample();
        Reply(response, status);
      }
      return;
    }
    default:
      Reply(response, absl::InvalidArgumentError("the request names no operation (register, unregister or sample)"));
      return;
  }
}

bool ShmControlServer::AwaitPacketWhileAuthorized(int fd, const std::string& authorization) const {
  std::optional<std::chrono::steady_clock::time_point> reauthenticate_by;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (options_.tokens->Accepts(authorization)) {
      reauthenticate_by.reset();
    } else if (!reauthenticate_by.has_value()) {
      reauthenticate_by = now + kAuthenticateWithin;
    }
    const auto until = reauthenticate_by.value_or(now + kTokenRecheckInterval);
    if (AwaitPacket(fd, std::min(until, now + kTokenRecheckInterval))) return true;
    if (reauthenticate_by.has_value() && std::chrono::steady_clock::now() >= *reauthenticate_by) return false;
  }
}

void ShmControlServer::Serve(Connection* connection) {
  ConnectionState state;
  state.session = connection->session;
  state.fd = connection->fd;
  state.authenticated = options_.tokens == nullptr;
  state.auth = &connection->auth;
  const auto authenticate_by = std::chrono::steady_clock::now() + kAuthenticateWithin;
  const std::unique_ptr<char[]> buffer(new char[kMaxPacketBytes]);
  std::vector<int> fds;
  v1::ShmControlResponse response;
  std::string wire;

  for (;;) {
    std::optional<absl::Status> late;
    if (!state.authenticated) {
      if (!AwaitPacket(connection->fd, authenticate_by)) {
        late = Unauthenticated(
            absl::StrCat("no accepted bearer token within ", kAuthenticateWithin.count(), " ms of connecting"));
      }
    } else if (options_.tokens != nullptr && !AwaitPacketWhileAuthorized(connection->fd, state.authorization)) {
      late =
          Unauthenticated(absl::StrCat("the bearer token this connection presented is no longer accepted, and no "
                                       "accepted one came within ",
                                       kAuthenticateWithin.count(), " ms"));
    }
    if (late.has_value()) {
      response.Clear();
      Reply(&response, *late);
      response.SerializeToString(&wire);
      (void)send(connection->fd, wire.data(), wire.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (const int64_t held = CallProblemLogBudget().Admit(); held >= 0) {
        spdlog::warn("shared-memory client closed: {}{}", std::string(late->message()), HeldBackNote(held));
      }
      break;
    }
    if (state.authenticated && options_.tokens == nullptr) {
      struct pollfd polled = {connection->fd, POLLIN, 0};
      if (poll(&polled, 1, -1) < 0 && errno == EINTR) continue;
    }
    fds.clear();
    std::unique_lock<std::mutex> window(ReceiveWindow());
    const ssize_t n = ReceivePacket(connection->fd, buffer.get(), &fds, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;  // woken for nothing
    // Past the first, a packet's descriptors serve nothing; without one the window is not needed further (a
    // request's steps run outside it).
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i] >= 0) CloseReceived(std::exchange(fds[i], kClosed));
    }
    if (fds.empty()) window.unlock();
    bool in_drain = false;  // the drain waits for this packet's answer
    if (n >= 0) {
      BeginRequest();
      HandlePacket(options_, &state, buffer.get(), static_cast<size_t>(n), fds, &response);
      // Only a request that ran steps is a call of the drain: a refusal or a registration is not waited for, so
      // peers that send packets (a token or not) cannot hold the drain open.
      in_drain = state.ran_steps;
      if (!in_drain) EndRequest();
    }
    for (int f : fds)
      if (f >= 0) CloseReceived(f);  // a registered region keeps its own reference (the mapping)
    if (window.owns_lock()) window.unlock();
    if (n < 0) break;  // end of stream, a broken connection, or the server stopping
    response.SerializeToString(&wire);
    if (response.has_sample() &&
        (wire.size() > kMaxPacketBytes || static_cast<int64_t>(wire.size()) > options_.max_message_bytes)) {
      const size_t bytes = wire.size();
      response.clear_sample();
      Reply(&response,
            absl::ResourceExhaustedError(absl::StrCat("the answer is ", bytes, " bytes, over the control socket's ",
                                                      kMaxPacketBytes, "-byte packets or --max_message_bytes ",
                                                      options_.max_message_bytes, "; send fewer steps per request")));
      response.SerializeToString(&wire);
    }
    const bool sent = SendAnswer(connection->fd, wire);
    if (in_drain) EndRequest();  // answered, or the client is gone: the drain need not wait for it
    if (state.request.SpaceUsedLong() > kScratchKeepBytes) state.request = v1::ShmControlRequest();
    if (response.SpaceUsedLong() > kScratchKeepBytes) response = v1::ShmControlResponse();
    if (wire.capacity() > kScratchKeepBytes) std::string().swap(wire);  // an answer refused as too large was serialized
    if (!sent || state.close) break;
  }
  if (!state.session.empty()) options_.registry->CloseSession(state.session);
  if (state.admitted) options_.service->ReleaseStream();
  shutdown(connection->fd, SHUT_RDWR);  // the peer sees the end now; the descriptor is closed by Reap
  DropQueuedPackets(connection->fd);
  spdlog::debug("shared-memory client disconnected; its regions are unregistered");
  connection->done.store(true);
}

}  // namespace samplerd
